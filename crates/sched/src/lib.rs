//! berth's scheduler, as a pure library: (read-only cluster view, jobs, now) -> plan.
//!
//! Owns: job priority (Slurm's multifactor), the feasibility checks and the reasons they
//! record (Slurm's reason names), resource matching with best-fit node selection, backfill
//! with reservations, and the helpers the controller needs around them (dependency status,
//! array `%N` counting, node states, the submission-time check [`fits_ever`]).
//! Must not: do I/O, read clocks, spawn threads or hold state between passes. The controller
//! builds a [`ClusterView`] and the job list, calls [`schedule`] and applies the [`Plan`];
//! "now" is an argument, so every decision can be replayed in a unit test.
//!
//! ```text
//! schedule(cluster, jobs, now, config)
//!   priority::PriorityContext ── priority per pending job ── sort (tier, priority, FIFO, id)
//!   for each job, cheapest check first (the first failure is its Reason):
//!     held → begin time → dependencies → singleton → partition down / MaxTime / MaxNodes
//!     → array %N → shape vs hardware (feasible) → free nodes now (state, best fit;
//!       among its own eligible nodes, named ones first, for a job with a NodeChoice)
//!     → blocked: Resources (first of its partition) or Priority,
//!                and for the first K blocked, a backfill reservation (backfill)
//!   ─► Plan { decisions: [Decision { job, priority, outcome: Start | Wait }] }
//! ```
//!
//! Modules: `model` (the input view), `priority` (with `fairshare`), `deps`, `feasible`, `state` (working copy
//! and node selection), `backfill` (reservations), `pass` (the loop), `plan` (the output),
//! `reason`, and `mock` (fixture builders for tests and benchmarks).

mod backfill;
pub mod deps;
pub mod fairshare;
mod feasible;
mod hash;
pub mod mock;
pub mod model;
mod pass;
pub mod plan;
pub mod priority;
pub mod reason;
mod state;

#[cfg(test)]
mod tests;

pub use deps::{
    condition_status, delayed, dependency_status, dependency_status_of, job_dependency_status,
    running_array_tasks, running_names, term_statuses, DepStatus, TermState, Truth,
};
pub use fairshare::Share;
pub use feasible::fits_ever;
pub use model::{
    node_state, AdminState, Allocation, ArrayTask, ClusterView, Condition, Count, CountOp, Counted,
    DepKind, Dependency, ExitTest, JobId, JobRequest, JobState, JobView, NodeChoice, NodeState,
    NodeView, PartitionView, ReservationView,
};
pub use pass::{planned_time, schedule};
pub use plan::{Decision, NodeAlloc, Outcome, Plan, Start};
pub use priority::{Config, Priority, PriorityContext};
pub use reason::Reason;
