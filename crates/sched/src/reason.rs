//! Why a job is not running: the REASON column of `berth queue` and the detail of `berth show`.
//!
//! Owns: the closed list of reasons, named as Slurm names them (`squeue -o %r`), so that
//! users and scripts moving from Slurm read the same words.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a pending job did not start in a pass. Variants serialise, and display, as Slurm's
/// reason names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reason {
    /// Held by a user or administrator.
    JobHeld,
    /// Its `--begin` time has not come yet.
    BeginTime,
    /// Waiting for its dependencies (or for a singleton of the same name to finish).
    Dependency,
    /// A dependency can never be satisfied (`afterok` on a job that failed): the controller
    /// should cancel the job, as Slurm does with `kill_invalid_depend`.
    DependencyNeverSatisfied,
    /// Its partition is down.
    PartitionDown,
    /// Its time limit exceeds the partition's `MaxTime`.
    PartitionTimeLimit,
    /// It asks for more nodes than the partition allows (`MaxNodes`) or has.
    PartitionNodeLimit,
    /// Its array already runs as many tasks as its `%N` allows.
    JobArrayTaskLimit,
    /// It could never run: no node of its partition has what one node must give it (or the
    /// request is malformed, or names no partition). Refused at submission by
    /// [`crate::fits_ever`]; shown if the cluster shrank since.
    BadConstraints,
    /// It fits the partition's hardware, but not enough of those nodes are up.
    ReqNodeNotAvail,
    /// The highest-priority blocked job of its partition: waiting for resources to free up.
    Resources,
    /// Behind a higher-priority job of its partition that is waiting for resources.
    Priority,
    /// Its reservation has not started yet, or would end before its time limit.
    Reservation,
    /// The reservation it names is gone (ended or deleted).
    ReservationDeleted,
    /// It could no longer end by its `--deadline`: the controller ends it, as Slurm does.
    DeadLine,
    /// Not enough of the licenses it asks for (`-L`) are free.
    Licenses,
    /// Its user's running jobs of the partition hold as many CPUs as it lets one user
    /// have, or would with it (`PartitionView::max_cpus_per_user`).
    QOSMaxCpuPerUserLimit,
}

impl Reason {
    /// Slurm's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobHeld => "JobHeld",
            Self::BeginTime => "BeginTime",
            Self::Dependency => "Dependency",
            Self::DependencyNeverSatisfied => "DependencyNeverSatisfied",
            Self::PartitionDown => "PartitionDown",
            Self::PartitionTimeLimit => "PartitionTimeLimit",
            Self::PartitionNodeLimit => "PartitionNodeLimit",
            Self::JobArrayTaskLimit => "JobArrayTaskLimit",
            Self::BadConstraints => "BadConstraints",
            Self::DeadLine => "DeadLine",
            Self::ReqNodeNotAvail => "ReqNodeNotAvail",
            Self::Resources => "Resources",
            Self::Priority => "Priority",
            Self::Reservation => "Reservation",
            Self::ReservationDeleted => "ReservationDeleted",
            Self::Licenses => "Licenses",
            Self::QOSMaxCpuPerUserLimit => "QOSMaxCpuPerUserLimit",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
