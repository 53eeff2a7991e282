//! End-to-end tests of the batch system on one machine: `berth up` started by each test,
//! jobs submitted with the real CLI (as root and as the `berthtest` user), run in containers.
//! They need root and skip themselves otherwise.

#[path = "../container/support.rs"]
#[allow(dead_code)]
mod support;

mod agents;
mod api;
mod cluster;
mod commands;
mod jobs;
mod steps;
