//! Dependencies, singletons and array task limits: the checks that depend on other jobs.
//!
//! Owns: Slurm's `--dependency` semantics (`after`, `afterany`, `afterok`, `afternotok`,
//! `singleton`) and `%N` counting. The controller uses these helpers too (to cancel jobs whose
//! dependencies can never be satisfied, to show why a job waits).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{DepKind, Dependency, JobId, JobState, JobView};

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

/// Evaluates all of a job's terms (they are ANDed): never satisfied if any term is, else
/// waiting if any term waits.
pub fn dependency_status(
    deps: impl IntoIterator<Item = impl std::borrow::Borrow<Dependency>>,
    state_of: impl Fn(JobId) -> Option<JobState>,
) -> DepStatus {
    let mut status = DepStatus::Satisfied;
    for dep in deps {
        let dep = dep.borrow();
        match dependency_status_of(dep, state_of(dep.job)) {
            DepStatus::NeverSatisfied => return DepStatus::NeverSatisfied,
            DepStatus::Waiting => status = DepStatus::Waiting,
            DepStatus::Satisfied => {}
        }
    }
    status
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
        dependency_status_of(&Dependency { kind, job: 1 }, s)
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
                kind: DepKind::AfterOk,
                job: 1,
            },
            Dependency {
                kind: DepKind::AfterOk,
                job: 2,
            },
        ];
        let states = |a, b| move |id| Some(if id == 1 { a } else { b });
        assert_eq!(
            dependency_status(deps.iter(), states(Completed, Completed)),
            Satisfied
        );
        assert_eq!(
            dependency_status(deps.iter(), states(Completed, Running)),
            Waiting
        );
        assert_eq!(
            dependency_status(deps.iter(), states(Running, Failed)),
            NeverSatisfied
        );
        assert_eq!(
            dependency_status([] as [Dependency; 0], |_| None),
            Satisfied
        );
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
