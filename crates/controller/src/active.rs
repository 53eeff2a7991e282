//! The unfinished jobs, with the indexes a scheduling pass reads instead of looking at every
//! job: which run, which wait (an array's waiting tasks apart, by array), which are held and
//! which ranges of jobs others depend on. A pass then costs what it looks at, so that a
//! queue of a 100,000-task array costs it no more than one of a hundred.
//!
//! Every change to a job goes through [`Jobs::get_mut`], whose guard files the job again
//! under what it has become when it is dropped (or through [`Jobs::share_mut`], for its
//! shares, which its filing does not read): the indexes cannot fall behind the jobs.

use crate::job::{Job, State};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Jobs {
    all: BTreeMap<u64, Job>,
    index: Index,
    /// Told of every job that leaves (it ended, or ends a run to be queued again): waits for
    /// jobs' ends ([`Jobs::first_in`]) look again.
    left: Arc<Notify>,
    /// Told of every job that leaves or is filed anew (it started, was held, ...): waits for
    /// a job to start look again.
    moved: Arc<Notify>,
}

/// Where a job is filed.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Key {
    class: Class,
    /// The ranges of job ids it depends on (`first`, `last`).
    depends: Vec<(u64, u64)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// Running or suspended: it holds resources.
    Running,
    /// Pending and not held, not an array's task.
    Queued,
    /// Pending and not held, a task of this array.
    Task(u64),
    /// Pending and held.
    Held,
    /// Ended, on its way out.
    Other,
}

impl Key {
    fn of(job: &Job) -> Key {
        let class = match job.state {
            State::Running | State::Suspended => Class::Running,
            State::Pending if job.held => Class::Held,
            State::Pending => job.array_job_id.map_or(Class::Queued, Class::Task),
            _ => Class::Other,
        };
        Key {
            class,
            depends: job
                .dependency_ranges()
                .map(|(_, first, last)| (first, last))
                .collect(),
        }
    }
}

#[derive(Default)]
struct Index {
    running: BTreeSet<u64>,
    queued: BTreeSet<u64>,
    /// Each array's pending tasks that are not held, in index order (their ids').
    queued_tasks: BTreeMap<u64, BTreeSet<u64>>,
    held: BTreeSet<u64>,
    /// How many jobs depend on each range of ids.
    depended: BTreeMap<(u64, u64), usize>,
}

impl Index {
    fn add(&mut self, id: u64, key: &Key) {
        match key.class {
            Class::Running => {
                self.running.insert(id);
            }
            Class::Queued => {
                self.queued.insert(id);
            }
            Class::Task(array) => {
                self.queued_tasks.entry(array).or_default().insert(id);
            }
            Class::Held => {
                self.held.insert(id);
            }
            Class::Other => {}
        }
        for range in &key.depends {
            *self.depended.entry(*range).or_default() += 1;
        }
    }

    fn remove(&mut self, id: u64, key: &Key) {
        match key.class {
            Class::Running => {
                self.running.remove(&id);
            }
            Class::Queued => {
                self.queued.remove(&id);
            }
            Class::Task(array) => {
                if let Some(tasks) = self.queued_tasks.get_mut(&array) {
                    tasks.remove(&id);
                    if tasks.is_empty() {
                        self.queued_tasks.remove(&array);
                    }
                }
            }
            Class::Held => {
                self.held.remove(&id);
            }
            Class::Other => {}
        }
        for range in &key.depends {
            if let Some(n) = self.depended.get_mut(range) {
                *n -= 1;
                if *n == 0 {
                    self.depended.remove(range);
                }
            }
        }
    }
}

/// A job borrowed to be changed: filed again as what it has become when dropped.
pub struct JobMut<'a> {
    job: &'a mut Job,
    index: &'a mut Index,
    moved: &'a Notify,
    before: Key,
}

impl Deref for JobMut<'_> {
    type Target = Job;
    fn deref(&self) -> &Job {
        self.job
    }
}

impl DerefMut for JobMut<'_> {
    fn deref_mut(&mut self) -> &mut Job {
        self.job
    }
}

impl JobMut<'_> {
    /// A copy of the job as changed (to write it), its borrow ended.
    pub fn cloned(self) -> Job {
        self.job.clone()
    }
}

impl Drop for JobMut<'_> {
    fn drop(&mut self) {
        let after = Key::of(self.job);
        if after != self.before {
            self.index.remove(self.job.id, &self.before);
            self.index.add(self.job.id, &after);
            if after.class != self.before.class {
                self.moved.notify_waiters();
            }
        }
    }
}

impl std::ops::Index<&u64> for Jobs {
    type Output = Job;
    fn index(&self, id: &u64) -> &Job {
        &self.all[id]
    }
}

impl Jobs {
    pub fn get(&self, id: &u64) -> Option<&Job> {
        self.all.get(id)
    }

    pub fn get_mut(&mut self, id: &u64) -> Option<JobMut<'_>> {
        let job = self.all.get_mut(id)?;
        Some(JobMut {
            before: Key::of(job),
            job,
            index: &mut self.index,
            moved: &self.moved,
        })
    }

    /// `job`'s share on `node`, to change (its shares do not change where it is filed).
    pub fn share_mut(&mut self, id: u64, node: &str) -> Option<&mut crate::job::Share> {
        self.all.get_mut(&id)?.share_mut(node)
    }

    /// How many unfinished jobs there are.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn contains_key(&self, id: &u64) -> bool {
        self.all.contains_key(id)
    }

    pub fn insert(&mut self, id: u64, job: Job) {
        let key = Key::of(&job);
        if let Some(old) = self.all.insert(id, job) {
            self.index.remove(id, &Key::of(&old));
        }
        self.index.add(id, &key);
        self.moved.notify_waiters();
    }

    pub fn remove(&mut self, id: &u64) -> Option<Job> {
        let job = self.all.remove(id)?;
        self.index.remove(*id, &Key::of(&job));
        self.left.notify_waiters();
        self.moved.notify_waiters();
        Some(job)
    }

    /// The lowest id of an unfinished job in `ids`.
    pub fn first_in(&self, ids: std::ops::RangeInclusive<u64>) -> Option<u64> {
        self.all.range(ids).next().map(|(id, _)| *id)
    }

    /// The lowest id of a pending job in `ids`.
    pub fn first_pending_in(&self, ids: std::ops::RangeInclusive<u64>) -> Option<u64> {
        let mut jobs = self.all.range(ids);
        jobs.find(|(_, job)| job.state == State::Pending)
            .map(|(id, _)| *id)
    }

    /// Notified whenever a job leaves: whoever waits for jobs to end, having asked for a
    /// notification ([`Notify::notified`]) before looking, looks again then.
    pub fn left(&self) -> Arc<Notify> {
        self.left.clone()
    }

    /// Notified whenever a job leaves or is filed anew (it started, was held, released,
    /// suspended, ...).
    pub fn moved(&self) -> Arc<Notify> {
        self.moved.clone()
    }

    /// Every unfinished job, in id order.
    pub fn values(&self) -> impl Iterator<Item = &Job> {
        self.all.values()
    }

    fn pick<'a>(&'a self, ids: &'a BTreeSet<u64>) -> impl Iterator<Item = &'a Job> {
        ids.iter().filter_map(|id| self.all.get(id))
    }

    /// The running and suspended jobs.
    pub fn running(&self) -> impl Iterator<Item = &Job> {
        self.pick(&self.index.running)
    }

    /// The pending jobs that are not held, array tasks left out (see [`Jobs::arrays`]).
    pub fn queued(&self) -> impl Iterator<Item = &Job> {
        self.pick(&self.index.queued)
    }

    /// Each array with pending tasks that are not held: its id, and those tasks in index
    /// order.
    pub fn arrays(&self) -> impl Iterator<Item = (u64, impl Iterator<Item = &Job>)> {
        self.index
            .queued_tasks
            .iter()
            .map(|(&array, ids)| (array, self.pick(ids)))
    }

    /// The held jobs whose ids lie in `first..=last`.
    pub fn held_in(&self, first: u64, last: u64) -> impl Iterator<Item = &Job> {
        self.index
            .held
            .range(first..=last)
            .filter_map(|id| self.all.get(id))
    }

    /// The ranges of job ids that unfinished jobs depend on.
    pub fn depended(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.index.depended.keys().copied()
    }

    /// The unfinished tasks of array `array` (its first task's id) of `len` tasks: its
    /// tasks' ids follow its own.
    pub fn tasks(&self, array: u64, len: usize) -> impl Iterator<Item = &Job> {
        self.all
            .range(array..array.saturating_add(len as u64))
            .map(|(_, j)| j)
            .filter(move |j| j.array_job_id == Some(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::tests::sample as job;

    fn ids<'a>(jobs: impl Iterator<Item = &'a Job>) -> Vec<u64> {
        jobs.map(|j| j.id).collect()
    }

    #[test]
    fn a_job_is_filed_again_as_it_changes() {
        let mut jobs = Jobs::default();
        jobs.insert(1, job(1, None));
        for id in 2..=4 {
            jobs.insert(id, job(id, Some(2)));
        }
        assert_eq!(ids(jobs.queued()), [1]);
        let arrays: Vec<(u64, Vec<u64>)> = jobs.arrays().map(|(a, t)| (a, ids(t))).collect();
        assert_eq!(arrays, [(2, vec![2, 3, 4])]);

        jobs.get_mut(&2).unwrap().state = State::Running;
        jobs.get_mut(&3).unwrap().held = true;
        assert_eq!(ids(jobs.running()), [2]);
        assert_eq!(ids(jobs.held_in(0, 10)), [3]);
        assert_eq!(ids(jobs.held_in(4, 10)), Vec::<u64>::new());
        let arrays: Vec<(u64, Vec<u64>)> = jobs.arrays().map(|(a, t)| (a, ids(t))).collect();
        assert_eq!(arrays, [(2, vec![4])]);
        assert_eq!(ids(jobs.tasks(2, 3)), [2, 3, 4]);

        jobs.get_mut(&1)
            .unwrap()
            .depends_on
            .push((berth_core::job::DependencyKind::AfterOk, 2, 2));
        assert_eq!(jobs.depended().collect::<Vec<_>>(), [(2, 2)]);

        // Put back as it was: filed once, as it is now.
        let again = jobs.get(&3).unwrap().clone();
        jobs.insert(3, again);
        assert_eq!(ids(jobs.held_in(0, 10)), [3]);

        jobs.remove(&4);
        jobs.remove(&1);
        assert_eq!(jobs.arrays().count(), 0);
        assert_eq!(jobs.depended().count(), 0);
        assert_eq!(ids(jobs.tasks(2, 3)), [2, 3]);
    }
}
