//! The scheduler's output: one decision per pending job, in the order they were considered.
//!
//! Owns: the plan's shape. The controller applies it (launches the starts, records reasons
//! and expected start times, cancels jobs whose dependencies can never be satisfied); the
//! plan itself changes nothing.

use serde::{Deserialize, Serialize};

use crate::model::JobId;
use crate::priority::Priority;
use crate::reason::Reason;

/// What one job gets on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAlloc {
    /// The node.
    pub node: String,
    /// CPUs allocated (tasks x CPUs per task; the whole node for exclusive jobs).
    pub cpus: u32,
    /// Memory allocated, bytes.
    pub memory: u64,
    /// GPUs allocated.
    pub gpus: u32,
    /// Tasks to launch there.
    pub tasks: u32,
}

/// A job to start now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// When it must end (now plus its time limit, as planned); what the controller records
    /// as the allocations' `end`.
    pub end: u64,
    /// Its nodes, in the order chosen (best fit first); the first is the batch host.
    pub nodes: Vec<NodeAlloc>,
}

/// What happens to one pending job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Start it now.
    Start(Start),
    /// Leave it pending.
    Wait {
        /// Why.
        reason: Reason,
        /// When it is expected to start, for jobs holding a backfill reservation
        /// (`squeue --start`).
        expected_start: Option<u64>,
        /// The nodes reserved for it from then (Slurm's `SchedNodes`); empty without a
        /// reservation.
        planned_nodes: Vec<String>,
    },
}

/// One pending job's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The job.
    pub job: JobId,
    /// Its priority, with components.
    pub priority: Priority,
    /// Start or wait.
    pub outcome: Outcome,
}

impl Decision {
    /// Why it waits, if it does.
    pub fn reason(&self) -> Option<Reason> {
        match self.outcome {
            Outcome::Wait { reason, .. } => Some(reason),
            Outcome::Start(_) => None,
        }
    }

    /// Its allocation, if it starts.
    pub fn start(&self) -> Option<&Start> {
        match &self.outcome {
            Outcome::Start(s) => Some(s),
            Outcome::Wait { .. } => None,
        }
    }

    /// Its expected start: now if it starts, the reservation's start if it holds one.
    pub fn expected_start(&self, now: u64) -> Option<u64> {
        match self.outcome {
            Outcome::Start(_) => Some(now),
            Outcome::Wait { expected_start, .. } => expected_start,
        }
    }
}

/// The result of one pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The time the pass planned for.
    pub now: u64,
    /// One per pending job, in the order considered (tier, priority, submission, id).
    pub decisions: Vec<Decision>,
}

impl Plan {
    /// The decision about `job` (a linear search; index the decisions for many look-ups).
    pub fn get(&self, job: JobId) -> Option<&Decision> {
        self.decisions.iter().find(|d| d.job == job)
    }

    /// The jobs to start now, with their allocations, in priority order.
    pub fn starts(&self) -> impl Iterator<Item = (JobId, &Start)> + '_ {
        self.decisions
            .iter()
            .filter_map(|d| d.start().map(|s| (d.job, s)))
    }

    /// The jobs whose dependencies can never be satisfied: the controller cancels them.
    pub fn never_satisfied(&self) -> impl Iterator<Item = JobId> + '_ {
        self.waiting_for(Reason::DependencyNeverSatisfied)
    }

    /// The jobs that can no longer end by their deadlines: the controller ends them.
    pub fn past_deadline(&self) -> impl Iterator<Item = JobId> + '_ {
        self.waiting_for(Reason::DeadLine)
    }

    fn waiting_for(&self, reason: Reason) -> impl Iterator<Item = JobId> + '_ {
        self.decisions
            .iter()
            .filter(move |d| d.reason() == Some(reason))
            .map(|d| d.job)
    }
}
