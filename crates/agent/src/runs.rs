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
//!
//! A controller also gives runs up without asking: those it was starting on a node that went
//! silent for its node timeout (taken for down), whose starts may come later still. It asks
//! the node to void them in its answer to the node's next registration, so the agent takes
//! a start only while it has heard from a controller lately (a registration answered within
//! most of the node timeout: no controller can have taken the node for down since), and
//! registers first otherwise.

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
    /// Until when no controller can have taken this node for down: the sending of the last
    /// registration a controller answered, plus most of its node timeout.
    heard_until: Option<Instant>,
}

/// Why a start is not taken.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// No registration was answered lately: the controller may have taken the node for down
    /// and given the run up. The agent registers, and tries again.
    Unheard,
    /// The run was voided, or a later one taken: it never starts here.
    Late(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Unheard => f.write_str(
                "this node has not heard from the controller in time (it may have taken the \
                 node for down and given the run up)",
            ),
            Refused::Late(why) => f.write_str(why),
        }
    }
}

impl Runs {
    /// Takes the start of run `run` of job `id`: refused where a controller voided that run
    /// (or a later one), or the start of a later run was taken (this one was held up), and
    /// for now where no registration was answered lately (`now`).
    pub fn take(&mut self, id: u64, run: u32, now: Instant) -> Result<(), Refused> {
        if let Some(&(voided, _)) = self.void.get(&id).filter(|(v, _)| *v >= run) {
            return Err(Refused::Late(format!(
                "job {id}'s run {run} reached this node after the controller gave it up \
                 (run {voided} voided: the job was queued again); it does not start"
            )));
        }
        if let Some(&later) = self.taken.get(&id).filter(|&&t| t > run) {
            return Err(Refused::Late(format!(
                "job {id}'s run {run} reached this node after run {later}; it does not start"
            )));
        }
        if self.heard_until.is_none_or(|until| now >= until) {
            return Err(Refused::Unheard);
        }
        self.taken.insert(id, run);
        Ok(())
    }

    /// A controller answered the registration sent at `sent`, its voids done: it takes a
    /// node for down once it has heard nothing from it for `timeout` since it got that
    /// registration (after `sent`). Three quarters of it are counted, for the clocks' drift.
    pub fn heard(&mut self, sent: Instant, timeout: Duration) {
        let until = sent + timeout * 3 / 4;
        self.heard_until = self.heard_until.max(Some(until));
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
        let (mut runs, now) = (heard(), Instant::now());
        assert!(runs.void(7, 0, now));
        assert!(!runs.void(7, 0, now), "voided already");
        assert!(runs
            .take(7, 0, now)
            .unwrap_err()
            .to_string()
            .contains("run 0 voided"));
        assert_eq!(runs.voided(now), [(7, 0)]);
        // The job queued again: its next run starts.
        runs.take(7, 1, now).unwrap();
        assert!(!runs.void(7, 1, now));
        assert!(!runs.void(7, 0, now));
        runs.forget(7, 1);
        assert!(runs.void(7, 1, now));
        assert_eq!(runs.voided(now), [(7, 1)]);
        // Voids are kept an hour.
        assert!(runs.voided(now + VOID_KEPT).is_empty());
        runs.take(7, 1, now).unwrap();
    }

    #[test]
    fn a_start_held_up_behind_a_later_run_does_not_start() {
        let (mut runs, now) = (heard(), Instant::now());
        runs.take(3, 2, now).unwrap();
        assert!(runs
            .take(3, 1, now)
            .unwrap_err()
            .to_string()
            .contains("after run 2"));
        // The same start twice is taken (the node's start replaces an earlier runner).
        runs.take(3, 2, now).unwrap();
        // Forgetting another run leaves the taken one.
        runs.forget(3, 1);
        assert!(!runs.void(3, 2, Instant::now()));
    }

    /// Runs of an agent that heard from its controller a moment ago (timeout 60 s).
    fn heard() -> Runs {
        let mut runs = Runs::default();
        runs.heard(Instant::now(), Duration::from_secs(60));
        runs
    }

    #[test]
    fn no_start_is_taken_until_a_registration_was_answered_lately() {
        let (mut runs, sent) = (Runs::default(), Instant::now());
        assert_eq!(runs.take(5, 0, sent), Err(Refused::Unheard));
        runs.heard(sent, Duration::from_secs(8));
        runs.take(5, 0, sent + Duration::from_secs(5)).unwrap();
        // Past three quarters of the timeout since the registration was sent: not taken,
        // unless a later registration was answered.
        let late = sent + Duration::from_secs(6);
        assert_eq!(runs.take(6, 0, late), Err(Refused::Unheard));
        // An answer to an earlier registration, come late, changes nothing.
        runs.heard(sent - Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(runs.take(6, 0, late), Err(Refused::Unheard));
        runs.heard(sent + Duration::from_secs(3), Duration::from_secs(8));
        runs.take(6, 0, late).unwrap();
        // A voided run is refused for good, heard or not.
        assert!(runs.void(7, 0, late));
        assert!(matches!(runs.take(7, 0, late), Err(Refused::Late(_))));
    }
}
