//! Which run of each job a node's agent took the start of, and which runs a controller gave
//! up on before their starts reached the node.
//!
//! A controller restarted, or a standby that took over, finds jobs the store has running on a
//! node whose runners the node does not list: their start requests, sent by the controller
//! before, may never have reached the node, or may be on their way still (held up in a
//! stalled agent or a network that is cut off, and delivered later). Queuing such a job
//! again is safe only once its start cannot run any more: the controller asks the agent to
//! *void* that run (a job's runs are numbered by its restarts), and queues the job again only
//! once the agent confirmed it. The agent confirms only a run whose start it has not taken,
//! and refuses that run's start if it comes later, so no job runs twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a void is kept: a start held up longer than this is not refused.
const VOID_KEPT: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub struct Runs {
    /// The run of each job whose start this agent took, until the run is forgotten.
    taken: HashMap<u64, u32>,
    /// The latest run of each job a controller voided, and when.
    void: HashMap<u64, (u32, Instant)>,
}

impl Runs {
    /// Takes the start of run `run` of job `id`: refused where a controller voided that run
    /// (or a later one), or the start of a later run was taken (this one was held up).
    pub fn take(&mut self, id: u64, run: u32) -> Result<(), String> {
        if let Some(&(voided, _)) = self.void.get(&id).filter(|(v, _)| *v >= run) {
            return Err(format!(
                "job {id}'s run {run} reached this node after the controller gave it up \
                 (run {voided} voided: the job was queued again); it does not start"
            ));
        }
        if let Some(&later) = self.taken.get(&id).filter(|&&t| t > run) {
            return Err(format!(
                "job {id}'s run {run} reached this node after run {later}; it does not start"
            ));
        }
        self.taken.insert(id, run);
        Ok(())
    }

    /// Voids run `run` of job `id`, whose start the controller found lost, unless its start
    /// (or a later run's) was taken here. Whether it was voided now (not before, nor taken).
    pub fn void(&mut self, id: u64, run: u32, now: Instant) -> bool {
        if self.taken.get(&id).is_some_and(|&t| t >= run)
            || self.void.get(&id).is_some_and(|&(v, _)| v >= run)
        {
            return false;
        }
        self.void.insert(id, (run, now));
        true
    }

    /// The runs voided here (in the last [`VOID_KEPT`]), `(job, run)`, for the controller.
    pub fn voided(&mut self, now: Instant) -> Vec<(u64, u32)> {
        self.void
            .retain(|_, (_, when)| now.saturating_duration_since(*when) < VOID_KEPT);
        let mut voided: Vec<(u64, u32)> =
            self.void.iter().map(|(&id, &(run, _))| (id, run)).collect();
        voided.sort_unstable();
        voided
    }

    /// Run `run` of job `id` is over here (reported, or its start failed before anything
    /// ran): a controller may void it again.
    pub fn forget(&mut self, id: u64, run: u32) {
        if self.taken.get(&id) == Some(&run) {
            self.taken.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voided_run_does_not_start_and_a_taken_one_is_not_voided() {
        let (mut runs, now) = (Runs::default(), Instant::now());
        assert!(runs.void(7, 0, now));
        assert!(!runs.void(7, 0, now), "voided already");
        assert!(runs.take(7, 0).unwrap_err().contains("run 0 voided"));
        assert_eq!(runs.voided(now), [(7, 0)]);
        // The job queued again: its next run starts.
        runs.take(7, 1).unwrap();
        assert!(!runs.void(7, 1, now));
        assert!(!runs.void(7, 0, now));
        runs.forget(7, 1);
        assert!(runs.void(7, 1, now));
        assert_eq!(runs.voided(now), [(7, 1)]);
        // Voids are kept an hour.
        assert!(runs.voided(now + VOID_KEPT).is_empty());
        runs.take(7, 1).unwrap();
    }

    #[test]
    fn a_start_held_up_behind_a_later_run_does_not_start() {
        let mut runs = Runs::default();
        runs.take(3, 2).unwrap();
        assert!(runs.take(3, 1).unwrap_err().contains("after run 2"));
        // The same start twice is taken (the node's start replaces an earlier runner).
        runs.take(3, 2).unwrap();
        // Forgetting another run leaves the taken one.
        runs.forget(3, 1);
        assert!(!runs.void(3, 2, Instant::now()));
    }
}
