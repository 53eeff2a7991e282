//! The node agent: starts and watches the job containers on one node.
//!
//! Owns: turning a job the controller placed on this node into a running container (its
//! files and runner process: [`node`]; the [`runner`], a single-threaded process forked by
//! the node's [`launcher`] (`berth internal launcher`, started once by the agent), per
//! DESIGN.md: the daemons never clone themselves), reporting how it ended, and the job steps started in running jobs ([`step`]: the step socket, the
//! `berth internal step` process that enters a job's container, and `berth step`'s client).
//! Must not: schedule, keep the cluster's state, or parse batch scripts; the controller sends
//! a fully resolved [`JobLaunch`] and grants each step.

pub mod auth;
pub mod daemon;
pub mod http;
pub mod launcher;
pub mod node;
pub mod runner;
pub mod runs;
pub mod serve;
pub mod step;
pub mod tls;

pub use runner::{JobLaunch, JobResult};

/// How long a request waits for a controller where several fail over and none answers
/// (the leader gone, another taking over once its lease of a few seconds has run out),
/// asking again every [`FAILOVER_PAUSE`], as Slurm's clients wait for a backup controller.
pub const FAILOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// See [`FAILOVER_WAIT`].
pub const FAILOVER_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a request to `controllers` controllers waits for one to answer: none where
/// there is one, [`FAILOVER_WAIT`] where several fail over.
pub fn failover_wait(controllers: usize) -> std::time::Duration {
    match controllers {
        0 | 1 => std::time::Duration::ZERO,
        _ => FAILOVER_WAIT,
    }
}

/// `attempt`, again every [`FAILOVER_PAUSE`] while it finds no controller (`Err`) for up to
/// [`failover_wait`] of `controllers`; its last answer.
pub fn failing_over<T, E>(
    controllers: usize,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + failover_wait(controllers);
    loop {
        match attempt() {
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(FAILOVER_PAUSE),
            done => return done,
        }
    }
}
