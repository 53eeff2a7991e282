//! The node agent: starts and watches the job containers on one node.
//!
//! Owns: turning a job the controller placed on this node into a running container (the
//! [`runner`], a small single-threaded process the agent forks and execs as
//! `berth internal run-job`, per DESIGN.md: the daemons never clone themselves) and
//! reporting how it ended.
//! Must not: schedule, keep the cluster's state, or parse batch scripts; the controller sends
//! a fully resolved [`JobLaunch`].

pub mod runner;

pub use runner::{JobLaunch, JobResult};
