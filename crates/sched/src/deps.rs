//! Dependencies, singletons and array task limits: the checks that depend on other jobs.
//!
//! Owns: Slurm's `--dependency` semantics (`after`, `afterany`, `afterok`, `afternotok`,
//! `singleton`), LSF's conditions over them (`&&`, `||`, `!`, counts of an array's
//! elements), and `%N` counting. The controller uses these helpers too (to cancel jobs
//! whose dependencies can never be satisfied, to show why a job waits).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{
    Condition, Count, CountOp, Counted, DepKind, Dependency, JobId, JobState, JobView,
};

/// Where a job's dependencies stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DepStatus {
    /// Every term is satisfied: the job may start.
    Satisfied,
    /// Some term may still be satisfied later.
    Waiting,
    /// Some term can never be satisfied (`afterok` on a failed job): the job never starts.
    NeverSatisfied,
}

/// Evaluates one term against the state of the job it names (`None`: not known).
///
/// Unknown jobs: Slurm forgets finished jobs after `MinJobAge`, so an unknown id is a job long
/// gone. `after` and `afterany` only need it to have started or ended, so they are satisfied;
/// `afterok`/`afternotok` cannot tell how it ended, and are never satisfied rather than
/// waiting forever (the controller refuses unknown ids at submission).
pub fn dependency_status_of(dep: &Dependency, state: Option<JobState>) -> DepStatus {
    use DepStatus::{NeverSatisfied, Satisfied, Waiting};
    let Some(state) = state else {
        return match dep.kind {
            DepKind::After | DepKind::AfterAny => Satisfied,
            DepKind::AfterOk | DepKind::AfterNotOk => NeverSatisfied,
        };
    };
    match (dep.kind, state) {
        (_, JobState::Pending) => Waiting,
        // An exit status asked for: the job failed with one that passes the test, and no
        // other end of it will do.
        (DepKind::AfterNotOk, JobState::Exited(code))
            if dep.exit.is_some_and(|test| test.holds(code)) =>
        {
            Satisfied
        }
        (DepKind::AfterNotOk, JobState::Exited(_) | JobState::Failed | JobState::Cancelled)
            if dep.exit.is_some() =>
        {
            NeverSatisfied
        }
        // `after`: "begun execution or been cancelled".
        (DepKind::After, _) => Satisfied,
        (_, JobState::Running) => Waiting,
        (DepKind::AfterAny, _) => Satisfied,
        (DepKind::AfterOk, JobState::Completed) => Satisfied,
        (DepKind::AfterOk, _) => NeverSatisfied,
        (DepKind::AfterNotOk, JobState::Completed) => NeverSatisfied,
        (DepKind::AfterNotOk, _) => Satisfied,
    }
}

/// The state `dep` sees of its job, `state` (`None`: not known), where it asks for a delay
/// once that job began (`after:42+5`): still pending to it until `since` (when the job
/// started, or ended without starting; looked up only for such a dependency) plus the
/// delay has come, at `now`.
pub fn delayed(
    dep: &Dependency,
    state: Option<JobState>,
    since: impl FnOnce() -> Option<u64>,
    now: u64,
) -> Option<JobState> {
    let begun = state.filter(|&s| dep.delay > 0 && s != JobState::Pending);
    match begun.is_some() && since().is_some_and(|t| now < t.saturating_add(dep.delay)) {
        true => Some(JobState::Pending),
        false => state,
    }
}

/// Evaluates a job's dependencies: all of them (`any` false; never satisfied if one is
/// not, else waiting if one waits), or any one term of them (`any`: satisfied once one term
/// is, each term's dependencies all required; never satisfied once none can be).
pub fn dependency_status(
    deps: impl IntoIterator<Item = impl std::borrow::Borrow<Dependency>>,
    any: bool,
    state_of: impl Fn(&Dependency) -> Option<JobState>,
) -> DepStatus {
    use DepStatus::{NeverSatisfied, Satisfied};
    // Each term's dependencies all required (a term's are consecutive); the terms all, or
    // any one of them.
    let combine = |a, b| if any { either(a, b) } else { both(a, b) };
    let mut overall: Option<DepStatus> = None;
    let mut term: Option<(u32, DepStatus)> = None;
    for dep in deps {
        let dep = dep.borrow();
        let status = dependency_status_of(dep, state_of(dep));
        if !any && !dep.any_failed && status == NeverSatisfied {
            return NeverSatisfied;
        }
        term = match term {
            Some((t, so_far)) if t == dep.term => Some((t, within(dep)(so_far, status))),
            done => {
                if let Some((_, of_term)) = done {
                    overall = Some(overall.map_or(of_term, |o| combine(o, of_term)));
                }
                Some((dep.term, status))
            }
        };
    }
    if let Some((_, of_term)) = term {
        overall = Some(overall.map_or(of_term, |o| combine(o, of_term)));
    }
    overall.unwrap_or(Satisfied)
}

/// Where one term stands: its status (its dependencies all required), and how many of
/// its jobs are in each state (for [`Condition::Count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermState {
    pub status: DepStatus,
    pub pending: u32,
    pub running: u32,
    pub done: u32,
    /// Ended otherwise: failed, cancelled.
    pub exit: u32,
    /// Not known any more (ended long ago, however).
    pub gone: u32,
}

impl TermState {
    /// A term decided as a whole, its jobs not counted (as a client that waits for it
    /// sees it).
    pub fn of(status: DepStatus) -> TermState {
        TermState {
            status,
            pending: 0,
            running: 0,
            done: 0,
            exit: 0,
            gone: 0,
        }
    }

    /// Where `count` of its jobs stands: whether the count compares as asked now, and
    /// whether that is settled, the same for every count its jobs can still come to (the
    /// ended ones only grow; any number of those not ended may be running some time).
    pub fn count(&self, count: &Count) -> Truth {
        let open = self.pending + self.running;
        let total = open + self.done + self.exit + self.gone;
        let n = count.n.unwrap_or(total);
        let (now, reachable) = match count.of {
            Counted::Done => (self.done, self.done..=self.done + open),
            Counted::Exit => (self.exit, self.exit..=self.exit + open),
            Counted::Ended => {
                let ended = self.done + self.exit + self.gone;
                (ended, ended..=ended + open)
            }
            Counted::Started | Counted::Running => (self.running, 0..=open),
            Counted::Pending => (self.pending, 0..=self.pending),
        };
        // (A comparison holds alike over a range of counts where it does at both ends, and
        // for == and !=, where the range is one count or does not hold n.)
        let (low, high) = reachable.into_inner();
        let settled = match count.op {
            CountOp::Eq | CountOp::Ne => low == high || !(low..=high).contains(&n),
            op => op.holds(low, n) == op.holds(high, n),
        };
        Truth {
            holds: count.op.holds(now, n),
            settled,
        }
    }
}

/// Whether a condition holds now, and whether that is settled (it can no longer change):
/// LSF starts a job once its condition holds, and gives up on it once it can never hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truth {
    pub holds: bool,
    pub settled: bool,
}

impl Truth {
    /// A term's: satisfied (for good: the states it waits for are final), never to be,
    /// or not yet.
    fn of(status: DepStatus) -> Truth {
        Truth {
            holds: status == DepStatus::Satisfied,
            settled: status != DepStatus::Waiting,
        }
    }

    fn status(self) -> DepStatus {
        match (self.holds, self.settled) {
            (true, _) => DepStatus::Satisfied,
            (false, true) => DepStatus::NeverSatisfied,
            (false, false) => DepStatus::Waiting,
        }
    }
}

/// Each term's state, by its number: its dependencies all required (an array's tasks).
pub fn term_statuses(
    deps: impl IntoIterator<Item = impl std::borrow::Borrow<Dependency>>,
    state_of: impl Fn(&Dependency) -> Option<JobState>,
) -> BTreeMap<u32, TermState> {
    let mut terms = BTreeMap::new();
    for dep in deps {
        let dep = dep.borrow();
        let state = state_of(dep);
        let status = dependency_status_of(dep, state);
        // (Each term starts from what its combination leaves as it is.)
        let term = terms.entry(dep.term).or_insert_with(|| {
            TermState::of(match dep.any_failed {
                true => DepStatus::NeverSatisfied,
                false => DepStatus::Satisfied,
            })
        });
        term.status = within(dep)(term.status, status);
        *match state {
            Some(JobState::Pending) => &mut term.pending,
            Some(JobState::Running) => &mut term.running,
            Some(JobState::Completed) => &mut term.done,
            Some(JobState::Failed | JobState::Exited(_) | JobState::Cancelled) => &mut term.exit,
            None => &mut term.gone,
        } += 1;
    }
    terms
}

/// Evaluates `condition` over its terms' states (see [`term_statuses`]); a term not among
/// them holds. `!` follows LSF, which looks at the jobs as they are now: `!done(42)` holds
/// while job 42 is not done (waiting, or never to be), and can never hold once it is;
/// `!numstart(42, > 0)` holds whenever none of array 42's elements runs.
pub fn condition_status(condition: &Condition, terms: &BTreeMap<u32, TermState>) -> DepStatus {
    truth(condition, terms).status()
}

fn truth(condition: &Condition, terms: &BTreeMap<u32, TermState>) -> Truth {
    let settled = |holds| Truth {
        holds,
        settled: true,
    };
    match condition {
        Condition::Term(t) => terms.get(t).map_or(settled(true), |t| Truth::of(t.status)),
        Condition::Count(t, count) => terms.get(t).map_or(settled(true), |t| t.count(count)),
        // All of them: not while one does not hold, for good once one never will; any one:
        // the same with holding and not swapped.
        Condition::All(cs) | Condition::Any(cs) => {
            let all = matches!(condition, Condition::All(_));
            let each: Vec<Truth> = cs.iter().map(|c| truth(c, terms)).collect();
            if each.iter().any(|t| t.holds != all && t.settled) {
                settled(!all)
            } else {
                let holds = match all {
                    true => each.iter().all(|t| t.holds),
                    false => each.iter().any(|t| t.holds),
                };
                Truth {
                    holds,
                    settled: each.iter().all(|t| t.settled),
                }
            }
        }
        Condition::Not(c) => {
            let inner = truth(c, terms);
            Truth {
                holds: !inner.holds,
                ..inner
            }
        }
    }
}

/// Where `job`'s dependencies stand: its condition's status where it has one, else its
/// terms' all together or any one (see [`dependency_status`]).
pub fn job_dependency_status(
    job: &JobView,
    state_of: impl Fn(&Dependency) -> Option<JobState>,
) -> DepStatus {
    match &job.dependency_condition {
        Some(c) => condition_status(c, &term_statuses(&job.dependencies, state_of)),
        None => dependency_status(&job.dependencies, job.dependencies_any, state_of),
    }
}

/// How the statuses of a term's dependencies combine: all must hold ([`both`]), or, where
/// the term asks that any one of them failed ([`Dependency::any_failed`]), [`settled_any`].
fn within(dep: &Dependency) -> fn(DepStatus, DepStatus) -> DepStatus {
    match dep.any_failed {
        true => settled_any,
        false => both,
    }
}

/// Once none waits, one is enough: waiting while one waits, else satisfied once one is.
fn settled_any(a: DepStatus, b: DepStatus) -> DepStatus {
    use DepStatus::{NeverSatisfied, Satisfied, Waiting};
    match (a, b) {
        (Waiting, _) | (_, Waiting) => Waiting,
        (Satisfied, _) | (_, Satisfied) => Satisfied,
        _ => NeverSatisfied,
    }
}

/// Both must hold: never once one cannot, else waiting while one waits.
fn both(a: DepStatus, b: DepStatus) -> DepStatus {
    use DepStatus::{NeverSatisfied, Satisfied, Waiting};
    match (a, b) {
        (NeverSatisfied, _) | (_, NeverSatisfied) => NeverSatisfied,
        (Waiting, _) | (_, Waiting) => Waiting,
        _ => Satisfied,
    }
}

/// One is enough: satisfied once one is, else waiting while one waits.
fn either(a: DepStatus, b: DepStatus) -> DepStatus {
    use DepStatus::{NeverSatisfied, Satisfied, Waiting};
    match (a, b) {
        (Satisfied, _) | (_, Satisfied) => Satisfied,
        (Waiting, _) | (_, Waiting) => Waiting,
        _ => NeverSatisfied,
    }
}

/// Per array, how many of its tasks are running (what `%N` is compared against).
pub fn running_array_tasks(jobs: &[JobView]) -> BTreeMap<JobId, u32> {
    let mut counts = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.state == JobState::Running) {
        if let Some(a) = j.array {
            *counts.entry(a.master).or_insert(0) += 1;
        }
    }
    counts
}

/// The (user, name) pairs that have a running job: a singleton job with one of them waits
/// (Slurm: "after any previously launched jobs sharing the same job name and user have
/// terminated").
pub fn running_names(jobs: &[JobView]) -> BTreeSet<(&str, &str)> {
    jobs.iter()
        .filter(|j| j.state == JobState::Running)
        .map(|j| (j.user.as_str(), j.name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::job;
    use DepStatus::{NeverSatisfied, Satisfied, Waiting};
    use JobState::{Cancelled, Completed, Failed, Pending, Running};

    fn st(kind: DepKind, s: Option<JobState>) -> DepStatus {
        dependency_status_of(
            &Dependency {
                delay: 0,
                any_failed: false,
                kind,
                job: 1,
                term: 0,
                exit: None,
            },
            s,
        )
    }

    /// LSF's `exit(1, > 1)`: a failure with a status that passes the test, and no other end.
    #[test]
    fn an_exit_status_asked_for_is_one_failure_only() {
        use crate::model::ExitTest;
        let exit = |test: Option<ExitTest>, s| {
            let dep = Dependency {
                delay: 0,
                any_failed: false,
                kind: DepKind::AfterNotOk,
                job: 1,
                term: 0,
                exit: test,
            };
            dependency_status_of(&dep, Some(s))
        };
        let above_one = Some(ExitTest {
            op: CountOp::Gt,
            code: 1,
        });
        assert_eq!(exit(above_one, JobState::Exited(3)), Satisfied);
        for never in [JobState::Exited(1), Completed, Failed, Cancelled] {
            assert_eq!(exit(above_one, never), NeverSatisfied, "{never:?}");
        }
        assert_eq!(exit(above_one, Running), Waiting);
        // Without one, any failure.
        assert_eq!(exit(None, JobState::Exited(1)), Satisfied);
    }

    #[test]
    fn each_kind_follows_slurm() {
        let table = [
            (
                DepKind::After,
                [Waiting, Satisfied, Satisfied, Satisfied, Satisfied],
            ),
            (
                DepKind::AfterAny,
                [Waiting, Waiting, Satisfied, Satisfied, Satisfied],
            ),
            (
                DepKind::AfterOk,
                [Waiting, Waiting, Satisfied, NeverSatisfied, NeverSatisfied],
            ),
            (
                DepKind::AfterNotOk,
                [Waiting, Waiting, NeverSatisfied, Satisfied, Satisfied],
            ),
        ];
        for (kind, want) in table {
            let got = [Pending, Running, Completed, Failed, Cancelled].map(|s| st(kind, Some(s)));
            assert_eq!(got, want, "{kind:?}");
        }
        assert_eq!(st(DepKind::AfterAny, None), Satisfied);
        assert_eq!(st(DepKind::AfterOk, None), NeverSatisfied);
    }

    #[test]
    fn terms_are_anded_and_never_wins() {
        let deps = [
            Dependency {
                delay: 0,
                any_failed: false,
                kind: DepKind::AfterOk,
                job: 1,
                term: 0,
                exit: None,
            },
            Dependency {
                delay: 0,
                any_failed: false,
                kind: DepKind::AfterOk,
                job: 2,
                term: 1,
                exit: None,
            },
        ];
        let states = |a, b| move |d: &Dependency| Some(if d.job == 1 { a } else { b });
        let all = |a, b| dependency_status(deps.iter(), false, states(a, b));
        assert_eq!(all(Completed, Completed), Satisfied);
        assert_eq!(all(Completed, Running), Waiting);
        assert_eq!(all(Running, Failed), NeverSatisfied);
        assert_eq!(
            dependency_status([] as [Dependency; 0], false, |_| None),
            Satisfied
        );
        // Any one term (`?`): satisfied by one, never once none can be.
        let any = |a, b| dependency_status(deps.iter(), true, states(a, b));
        assert_eq!(any(Running, Completed), Satisfied);
        assert_eq!(any(Running, Failed), Waiting);
        assert_eq!(any(Failed, Cancelled), NeverSatisfied);
        assert_eq!(
            dependency_status([] as [Dependency; 0], true, |_| None),
            Satisfied
        );
    }

    /// Slurm's afternotok on a whole array: its term holds once all its tasks have ended
    /// and any one failed, never once all completed; waiting while one has not ended.
    #[test]
    fn an_arrays_afternotok_holds_once_all_ended_and_one_failed() {
        let deps: Vec<Dependency> = (1..=3)
            .map(|job| Dependency {
                delay: 0,
                any_failed: true,
                kind: DepKind::AfterNotOk,
                job,
                term: 0,
                exit: None,
            })
            .collect();
        let status = |states: [JobState; 3]| {
            let state_of = |d: &Dependency| Some(states[d.job as usize - 1]);
            let terms = term_statuses(&deps, state_of);
            let status = dependency_status(&deps, false, state_of);
            assert_eq!(terms[&0].status, status);
            status
        };
        assert_eq!(status([Completed, Failed, Completed]), Satisfied);
        assert_eq!(status([Completed, Running, Failed]), Waiting);
        assert_eq!(status([Completed, Completed, Completed]), NeverSatisfied);
        assert_eq!(status([Cancelled, Completed, Completed]), Satisfied);
    }

    /// A term that names a whole array holds once all its tasks do, also among
    /// alternatives.
    #[test]
    fn an_arrays_term_needs_all_its_tasks() {
        let dep = |job, term| Dependency {
            delay: 0,
            any_failed: false,
            kind: DepKind::AfterOk,
            job,
            term,
            exit: None,
        };
        // Term 0: array tasks 10 and 11; term 1: job 20.
        let deps = [dep(10, 0), dep(11, 0), dep(20, 1)];
        let states = |t10, t11, j20| {
            move |d: &Dependency| {
                Some(match d.job {
                    10 => t10,
                    11 => t11,
                    _ => j20,
                })
            }
        };
        let any = |a, b, c| dependency_status(deps.iter(), true, states(a, b, c));
        assert_eq!(any(Completed, Running, Running), Waiting);
        assert_eq!(any(Completed, Completed, Running), Satisfied);
        assert_eq!(any(Completed, Failed, Running), Waiting);
        assert_eq!(any(Completed, Failed, Failed), NeverSatisfied);
        assert_eq!(any(Completed, Failed, Completed), Satisfied);
    }

    /// LSF's conditions: && and || nested, and ! over what the jobs are now.
    #[test]
    fn conditions_combine_terms() {
        use Condition::{All, Any, Not, Term};
        let dep = |job, term| Dependency {
            delay: 0,
            any_failed: false,
            kind: DepKind::AfterOk,
            job,
            term,
            exit: None,
        };
        // done(1) && (done(2) || !done(3)), job 1 being an array of tasks 1 and 11.
        let deps = [dep(1, 0), dep(11, 0), dep(2, 1), dep(3, 2)];
        let condition = All(vec![Term(0), Any(vec![Term(1), Not(Box::new(Term(2)))])]);
        let status = |s1, s11, s2, s3| {
            let state_of = move |d: &Dependency| {
                Some(match d.job {
                    1 => s1,
                    11 => s11,
                    2 => s2,
                    _ => s3,
                })
            };
            let mut job = job(9);
            job.dependencies = deps.to_vec();
            job.dependency_condition = Some(condition.clone());
            let terms = term_statuses(deps, state_of);
            let status = condition_status(&condition, &terms);
            assert_eq!(job_dependency_status(&job, state_of), status);
            status
        };
        // Job 3 not done (yet, or ever): !done(3) holds, so only the array is waited for.
        assert_eq!(status(Completed, Running, Pending, Running), Waiting);
        assert_eq!(status(Completed, Completed, Pending, Running), Satisfied);
        assert_eq!(status(Completed, Completed, Failed, Failed), Satisfied);
        // Job 3 done: done(2) is the only way left.
        assert_eq!(status(Completed, Completed, Running, Completed), Waiting);
        assert_eq!(
            status(Completed, Completed, Failed, Completed),
            NeverSatisfied
        );
        assert_eq!(
            status(Completed, Completed, Completed, Completed),
            Satisfied
        );
        assert_eq!(
            status(Completed, Cancelled, Completed, Pending),
            NeverSatisfied
        );
        // ! of what holds now but may not later waits: !!done(1) is done(1), and
        // !numstart(1, > 0) holds once none runs.
        let twice = Not(Box::new(Not(Box::new(Term(0)))));
        let started = Condition::Count(
            0,
            Count {
                of: Counted::Started,
                op: CountOp::Gt,
                n: Some(0),
            },
        );
        let idle = Not(Box::new(started));
        for (states, want) in [
            ([Running, Pending], [Waiting, Waiting]),
            ([Completed, Running], [Waiting, Waiting]),
            ([Completed, Pending], [Waiting, Satisfied]),
            ([Completed, Completed], [Satisfied, Satisfied]),
            ([Completed, Failed], [NeverSatisfied, Satisfied]),
        ] {
            let terms = term_statuses(&deps[..2], |d| Some(states[(d.job != 1) as usize]));
            let got = [&twice, &idle].map(|c| condition_status(c, &terms));
            assert_eq!(got, want, "{states:?}");
        }
        // A term the job has none of holds; so does an empty group.
        let none = BTreeMap::new();
        let count = Count {
            of: Counted::Done,
            op: CountOp::Ge,
            n: Some(1),
        };
        assert_eq!(
            condition_status(&Condition::Count(7, count), &none),
            Satisfied
        );
        assert_eq!(condition_status(&Term(7), &none), Satisfied);
        assert_eq!(condition_status(&All(vec![]), &none), Satisfied);
        assert_eq!(condition_status(&Any(vec![]), &none), NeverSatisfied);
        assert_eq!(
            condition_status(&Not(Box::new(Term(7))), &none),
            NeverSatisfied
        );
    }

    /// LSF's numdone, numexit, numended, numstart over an array's elements: holding as the
    /// count compares now, never once no count still to come would.
    #[test]
    fn counts_of_an_arrays_elements() {
        // Five elements: one pending, one running, two done, one exited.
        let deps: Vec<Dependency> = (1..=5)
            .map(|job| Dependency {
                delay: 0,
                any_failed: false,
                kind: DepKind::AfterAny,
                job,
                term: 0,
                exit: None,
            })
            .collect();
        let states = [Pending, Running, Completed, Completed, Failed];
        let terms = term_statuses(&deps, |d| Some(states[d.job as usize - 1]));
        let t = terms[&0];
        assert_eq!(
            (t.status, t.pending, t.running, t.done, t.exit, t.gone),
            (Waiting, 1, 1, 2, 1, 0)
        );
        let count = |of, op, n| condition_status(&Condition::Count(0, Count { of, op, n }), &terms);
        use CountOp::{Eq, Ge, Gt, Le, Lt, Ne};
        use Counted::{Done, Ended, Exit, Started};
        assert_eq!(count(Done, Ge, Some(2)), Satisfied);
        assert_eq!(count(Done, Ge, Some(4)), Waiting);
        assert_eq!(count(Done, Ge, Some(5)), NeverSatisfied);
        assert_eq!(count(Done, Eq, None), NeverSatisfied);
        assert_eq!(count(Done, Lt, Some(2)), NeverSatisfied);
        assert_eq!(count(Done, Le, Some(3)), Satisfied);
        assert_eq!(count(Exit, Gt, Some(1)), Waiting);
        assert_eq!(count(Exit, Ne, Some(1)), Waiting);
        assert_eq!(count(Ended, Eq, Some(3)), Satisfied);
        assert_eq!(count(Ended, Eq, None), Waiting);
        assert_eq!(count(Started, Eq, Some(1)), Satisfied);
        assert_eq!(count(Started, Ge, Some(2)), Waiting);
        assert_eq!(count(Started, Ge, Some(3)), NeverSatisfied);
        // numrun as numstart; numpend: one pending now, none some day, never more.
        assert_eq!(count(Counted::Running, Eq, Some(1)), Satisfied);
        assert_eq!(count(Counted::Pending, Eq, Some(1)), Satisfied);
        assert_eq!(count(Counted::Pending, Eq, Some(0)), Waiting);
        assert_eq!(count(Counted::Pending, Gt, Some(1)), NeverSatisfied);
        // All ended: what is counted now is final.
        let ended = term_statuses(&deps, |d| Some([Completed, Failed][d.job as usize % 2]));
        let count = |of, op, n| condition_status(&Condition::Count(0, Count { of, op, n }), &ended);
        assert_eq!(count(Ended, Eq, None), Satisfied);
        assert_eq!(count(Started, Gt, Some(0)), NeverSatisfied);
        assert_eq!(count(Done, Eq, Some(2)), Satisfied);
        assert_eq!(count(Done, Gt, Some(2)), NeverSatisfied);
    }

    #[test]
    fn counts_running_tasks_and_names() {
        let jobs = vec![
            job(1).array(10, 0, Some(2)).running(),
            job(2).array(10, 1, Some(2)).running(),
            job(3).array(10, 2, Some(2)),
            job(4).array(20, 0, None).running(),
            job(5).name("x").user("u").running(),
        ];
        let counts = running_array_tasks(&jobs);
        assert_eq!(counts.get(&10), Some(&2));
        assert_eq!(counts.get(&20), Some(&1));
        assert!(running_names(&jobs).contains(&("u", "x")));
    }
}
