//! End-to-end tests of images and containers: they drive the real `berth` binary, as root,
//! as root acting for the unprivileged `berthtest` user, and as that user itself (the rootless
//! path). They need root (CI runs as root) and skip themselves otherwise.

mod cgroups;
#[path = "../batch/cluster.rs"]
#[allow(dead_code)]
mod cluster;
mod exec;
mod image;
mod jobs;
mod registry;
mod security;
mod support;
