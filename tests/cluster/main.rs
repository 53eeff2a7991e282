//! End-to-end tests of berth across several nodes: test hosts made by `tests/cluster/up.sh`
//! (network namespaces with their own hostnames on a bridge), a `berth controller` on the
//! bridge and a `berth agent` on each host. They need root and skip themselves otherwise.

#[path = "../container/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../batch/cluster.rs"]
#[allow(dead_code)]
mod controller;

mod ha;
mod hosts;
mod jobs;
mod mpi;
mod steps;
