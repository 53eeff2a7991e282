//! One scheduling pass: `schedule(cluster, jobs, now, config) -> Plan`.
//!
//! Owns: the order of the checks and the bookkeeping between jobs. Pending jobs are taken
//! in priority order ([`crate::priority::compare`]); for each, the feasibility checks run
//! cheapest first and the first that fails is the job's reason (Nomad's feasibility chain,
//! with Slurm's reason names): held, begin time, dependencies, singleton, partition state
//! and limits, array `%N`, licenses (the cluster's, free now: a job short of them waits as
//! `Licenses` and holds back no other), request shape against the hardware, then resources
//! now. A job that cannot start for resources is the partition's `Resources` job if it is
//! the first such, else it waits for `Priority`; the first `Config::reservations` of them
//! get a backfill reservation and an expected start.
//!
//! Cost: sorting is O(J log J). A job that starts costs O(log N) per index touched; one that
//! cannot costs O(1) once its request shape is known not to fit: within a pass capacity only
//! shrinks and reservations only grow, so if a shape found no nodes for a job ending at `e`,
//! it finds none for any later job of that shape ending at or after `e` (Slurm keeps the same
//! kind of per-pass cache of failed request shapes). The other checks are hash look-ups.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::deps::{delayed, job_dependency_status, DepStatus};
use crate::feasible::{partition_limits, Classes, Shape};
use crate::hash::{FxMap, FxSet};
use crate::model::{
    ClusterView, Dependency, JobId, JobRequest, JobState, JobView, NodeChoice, PartitionView,
    ReservationView,
};
use crate::plan::{Decision, Outcome, Plan, Start};
use crate::priority::{Config, PriorityContext};
use crate::reason::Reason;
use crate::state::{Eligible, State};

/// The time limit a job is planned with: its own, else the partition's default (unless it
/// asked for no limit), else the partition's maximum, else "unlimited" (at least one second,
/// so every job occupies time).
pub fn planned_time(req: &JobRequest, part: &PartitionView, config: &Config) -> u64 {
    req.time_limit
        .or(part.default_time.filter(|_| !req.no_time_limit))
        .or(part.max_time)
        .unwrap_or(config.unlimited_time)
        .max(1)
}

/// Runs one pass over `jobs` (pending ones are scheduled; running and finished ones are read
/// for dependencies, singletons and array limits) on `cluster` at `now`. Pure: the same
/// inputs give the same plan.
pub fn schedule(cluster: &ClusterView, jobs: &[JobView], now: u64, config: &Config) -> Plan {
    let mut pass = Pass::new(cluster, jobs, now, config);
    let ctx = PriorityContext::new(cluster);
    let pending: Vec<_> = jobs
        .iter()
        .filter(|j| j.state == JobState::Pending)
        .map(|j| {
            let p = pass
                .state
                .part_by_name
                .get(j.request.partition.as_str())
                .copied();
            let prio = ctx.priority(j, p.map(|p| pass.state.parts[p].view), now, config);
            (prio, j, p)
        })
        .collect();
    // The order of `priority::compare`, as compact precomputed keys (sorting them rather than
    // the jobs moves a fifth of the bytes); the position last, so even duplicate ids sort
    // deterministically with an unstable sort.
    let mut order: Vec<OrderKey> = pending
        .iter()
        .enumerate()
        .map(|(i, (prio, j, _))| {
            (
                Reverse(prio.tier),
                Reverse(prio.total),
                j.submit_time,
                j.id,
                i,
            )
        })
        .collect();
    order.sort_unstable();
    let decisions = order
        .into_iter()
        .map(|(.., i)| {
            let (priority, job, p) = pending[i];
            Decision {
                job: job.id,
                priority,
                outcome: pass.decide(job, p),
            }
        })
        .collect();
    Plan { now, decisions }
}

/// What a pass learnt about one request shape in one partition.
struct ShapeMemo {
    /// The hardware check's answer.
    fit: Result<(), Reason>,
    /// The earliest end of a job of this shape that found no nodes now.
    failed_end: Option<u64>,
}

/// (higher tier, higher priority, earlier submission, lower id, position in the input).
type OrderKey = (Reverse<u32>, Reverse<u64>, u64, JobId, usize);

/// The bookkeeping of one pass.
struct Pass<'a> {
    config: &'a Config,
    state: State<'a>,
    /// States of the jobs some pending job depends on (the job list wins over history).
    dep_states: FxMap<JobId, JobState>,
    /// When each of them began, for a delayed `after` ([`ClusterView::since`]).
    since: &'a BTreeMap<JobId, u64>,
    /// (user, name) of singleton jobs that already have a job running.
    singleton_running: FxSet<(&'a str, &'a str)>,
    /// (user, name) pairs some pending singleton job has: starting any job with one of them
    /// blocks those singletons for the rest of the pass.
    singleton_names: FxSet<(&'a str, &'a str)>,
    /// Running tasks per array, including this pass's starts.
    array_running: FxMap<JobId, u32>,
    /// What is known about a request shape in a partition.
    shapes: FxMap<(usize, Shape), ShapeMemo>,
    /// Reservations attempted so far.
    reservations: usize,
    /// The administrators' reservations.
    admin: &'a [ReservationView],
    /// How many of each license are free: the cluster's less those running jobs and this
    /// pass's starts hold.
    licenses_free: FxMap<&'a str, u32>,
    /// CPUs each (user, partition) holds, running jobs' and this pass's starts', where a
    /// partition limits them (`max_cpus_per_user`).
    user_cpus: FxMap<(&'a str, &'a str), u64>,
}

impl<'a> Pass<'a> {
    fn new(cluster: &'a ClusterView, jobs: &'a [JobView], now: u64, config: &'a Config) -> Self {
        let pending = || jobs.iter().filter(|j| j.state == JobState::Pending);
        let referenced: FxSet<JobId> = pending()
            .flat_map(|j| j.dependencies.iter().map(|d| d.job))
            .collect();
        let mut dep_states = FxMap::default();
        if !referenced.is_empty() {
            for (id, s) in &cluster.history {
                if referenced.contains(id) {
                    dep_states.insert(*id, *s);
                }
            }
            for j in jobs.iter().filter(|j| referenced.contains(&j.id)) {
                dep_states.insert(j.id, j.state);
            }
        }
        let singleton_names: FxSet<(&str, &str)> = pending()
            .filter(|j| j.singleton)
            .map(|j| (j.user.as_str(), j.name.as_str()))
            .collect();
        let mut singleton_running = FxSet::default();
        let mut array_running = FxMap::default();
        let mut licenses_free: FxMap<&str, u32> = cluster
            .licenses
            .iter()
            .map(|(name, n)| (name.as_str(), *n))
            .collect();
        for j in jobs.iter().filter(|j| j.state == JobState::Running) {
            for (name, n) in &j.request.licenses {
                if let Some(free) = licenses_free.get_mut(name.as_str()) {
                    *free = free.saturating_sub(*n);
                }
            }
            let key = (j.user.as_str(), j.name.as_str());
            if singleton_names.contains(&key) {
                singleton_running.insert(key);
            }
            if let Some(a) = j.array {
                *array_running.entry(a.master).or_insert(0) += 1;
            }
        }
        let mut user_cpus = FxMap::default();
        if cluster
            .partitions
            .iter()
            .any(|p| p.max_cpus_per_user.is_some())
        {
            let owners: FxMap<JobId, (&str, &str)> = jobs
                .iter()
                .map(|j| (j.id, (j.user.as_str(), j.request.partition.as_str())))
                .collect();
            let held = cluster.nodes.iter().flat_map(|n| &n.allocations);
            for a in held {
                if let Some(&owner) = owners.get(&a.job) {
                    *user_cpus.entry(owner).or_default() += u64::from(a.cpus);
                }
            }
        }
        Self {
            config,
            state: State::new(cluster, now),
            dep_states,
            since: &cluster.since,
            singleton_running,
            singleton_names,
            array_running,
            shapes: FxMap::default(),
            reservations: 0,
            admin: &cluster.reservations,
            licenses_free,
            user_cpus,
        }
    }

    /// The feasibility chain for one pending job, cheapest check first; commits a start.
    fn decide(&mut self, job: &'a JobView, p: Option<usize>) -> Outcome {
        let wait = |reason| Outcome::Wait {
            reason,
            expected_start: None,
            planned_nodes: Vec::new(),
        };
        // Past its deadline whatever else it waits for: it could not end by then if it
        // started now.
        if let (Some(deadline), Some(p)) = (job.deadline, p) {
            let limit = planned_time(&job.request, self.state.parts[p].view, self.config);
            if self.state.now.saturating_add(limit) > deadline {
                return wait(Reason::DeadLine);
            }
        }
        if job.held {
            return wait(Reason::JobHeld);
        }
        // (Expected to start then at the earliest, as Slurm shows it.)
        let wait_until = |reason, t: u64| Outcome::Wait {
            reason,
            expected_start: Some(t),
            planned_nodes: Vec::new(),
        };
        if let Some(t) = job.begin.filter(|&t| t > self.state.now) {
            return wait_until(Reason::BeginTime, t);
        }
        if !job.dependencies.is_empty() {
            let state_of = |d: &Dependency| {
                let since = || self.since.get(&d.job).copied();
                delayed(
                    d,
                    self.dep_states.get(&d.job).copied(),
                    since,
                    self.state.now,
                )
            };
            match job_dependency_status(job, state_of) {
                DepStatus::Satisfied => {}
                DepStatus::Waiting => return wait(Reason::Dependency),
                DepStatus::NeverSatisfied => return wait(Reason::DependencyNeverSatisfied),
            }
        }
        let name = (job.user.as_str(), job.name.as_str());
        if job.singleton && self.singleton_running.contains(&name) {
            return wait(Reason::Dependency);
        }
        let Some(p) = p else {
            return wait(Reason::BadConstraints);
        };
        // A job in an administrator's reservation: only its nodes, only from its start.
        let member = match job.reservation.as_deref() {
            None => None,
            Some(name) => match self.admin.iter().position(|r| r.name == name) {
                None => return wait(Reason::ReservationDeleted),
                Some(i) if self.admin[i].start > self.state.now => {
                    return wait_until(Reason::Reservation, self.admin[i].start)
                }
                Some(i) => Some(i),
            },
        };
        let in_reservation;
        let choice = match member {
            Some(i) => {
                let nodes = &self.admin[i].nodes;
                let mut choice: NodeChoice =
                    job.request.choice.as_deref().cloned().unwrap_or_default();
                choice.candidates = match choice.candidates.is_empty() {
                    true => nodes.clone(),
                    false => choice
                        .candidates
                        .into_iter()
                        .filter(|n| nodes.contains(n))
                        .collect(),
                };
                if choice.candidates.is_empty() {
                    return wait(Reason::BadConstraints);
                }
                in_reservation = choice;
                Some(&in_reservation)
            }
            None => job.request.choice.as_deref(),
        };
        // A job with a say in its nodes: those it may have, and those it must (each counts
        // toward its nodes).
        let among = match choice {
            None => None,
            Some(choice) => match self.state.eligible(p, choice) {
                Ok(among) => Some(Eligible { member, ..among }),
                Err(r) => return wait(r),
            },
        };
        let widened;
        let req = match among.as_ref().map(|a| a.required.len() as u32) {
            Some(must) if must > job.request.nodes_max => return wait(Reason::BadConstraints),
            Some(must) if must > job.request.nodes_min => {
                widened = JobRequest {
                    nodes_min: must,
                    ..job.request.clone()
                };
                &widened
            }
            _ => &job.request,
        };
        let part = &self.state.parts[p];
        if part.view.down {
            return wait(Reason::PartitionDown);
        }
        if let Err(r) = partition_limits(part.view, req, part.members.len()) {
            return wait(r);
        }
        if let Some(a) = job.array {
            let running = self.array_running.get(&a.master).copied().unwrap_or(0);
            if a.limit.is_some_and(|limit| running >= limit) {
                return wait(Reason::JobArrayTaskLimit);
            }
        }
        // Licenses are the cluster's, not a node's: free now, or it waits without holding
        // back the jobs behind it (as Slurm's main scheduler).
        let free = |(name, n): &(String, u32)| {
            self.licenses_free
                .get(name.as_str())
                .is_some_and(|f| f >= n)
        };
        if !job.request.licenses.iter().all(free) {
            return wait(Reason::Licenses);
        }
        let shape = match Shape::of(req) {
            Ok(s) => s,
            Err(r) => return wait(r),
        };
        // Its user's CPUs in the partition, with the fewest it could take: past its limit,
        // it waits, planned nowhere (as Slurm's limits are checked before resources).
        let capped = |pass: &Self, cpus: u64| {
            let view = pass.state.parts[p].view;
            let held = || pass.user_cpus.get(&(job.user.as_str(), view.name.as_str()));
            view.max_cpus_per_user
                .is_some_and(|cap| held().copied().unwrap_or(0) + cpus > cap)
        };
        if capped(self, self.state.least_cpus(p, req)) {
            return wait(Reason::QOSMaxCpuPerUserLimit);
        }
        let d = planned_time(req, part.view, self.config);
        let end = self.state.now.saturating_add(d);
        // It must end by its reservation's end.
        if member.is_some_and(|i| end > self.admin[i].end) {
            return wait(Reason::Reservation);
        }
        // What the pass learnt of this shape holds for the partition as a whole; a job with
        // a say in its nodes is checked against its own.
        let memo = match &among {
            None => Some(self.shapes.entry((p, shape)).or_insert_with(|| ShapeMemo {
                fit: part.classes.fit(&shape),
                failed_end: None,
            })),
            Some(a) => {
                let nodes = part.members.iter().filter(|&&n| a.ok[n]);
                let classes = Classes::new(nodes.map(|&n| self.state.nodes[n].view));
                if let Err(r) = classes.fit(&shape) {
                    return wait(r);
                }
                None
            }
        };
        if let Some(Err(r)) = memo.as_ref().map(|m| m.fit) {
            return wait(r);
        }
        let known_failed = memo
            .as_ref()
            .is_some_and(|m| m.failed_end.is_some_and(|e| end >= e));
        let chosen = match (&among, known_failed) {
            (_, true) => None,
            (None, false) => self.state.find_now(p, &shape, end),
            (Some(a), false) => self.state.find_among(p, &shape, end, a),
        };
        if let Some(chosen) = chosen {
            // ... and with those it would take there (more nodes, or larger ones, than the
            // fewest): past its limit, it waits and holds nothing back.
            let view = self.state.parts[p].view;
            if view.max_cpus_per_user.is_some() {
                let cpus = self.state.cpus_of(req, &chosen);
                if capped(self, cpus) {
                    return wait(Reason::QOSMaxCpuPerUserLimit);
                }
                let key = (job.user.as_str(), view.name.as_str());
                *self.user_cpus.entry(key).or_default() += cpus;
            }
            let nodes = self.state.commit(req, &chosen, end);
            if self.singleton_names.contains(&name) {
                self.singleton_running.insert(name);
            }
            if let Some(a) = job.array {
                *self.array_running.entry(a.master).or_insert(0) += 1;
            }
            for (name, n) in &job.request.licenses {
                if let Some(free) = self.licenses_free.get_mut(name.as_str()) {
                    *free -= n;
                }
            }
            return Outcome::Start(Start { end, nodes });
        }
        if let (Some(memo), false) = (memo, known_failed) {
            memo.failed_end = Some(memo.failed_end.map_or(end, |e| e.min(end)));
        }

        let part = &mut self.state.parts[p];
        let reason = if part.blocked {
            Reason::Priority
        } else {
            Reason::Resources
        };
        part.blocked = true;
        let reservation = if self.reservations < self.config.reservations {
            self.reservations += 1;
            self.state.reserve(p, &shape, d, among.as_ref())
        } else {
            None
        };
        let (expected_start, planned_nodes) = match reservation {
            Some((t, nodes)) => (
                Some(t),
                nodes
                    .iter()
                    .map(|&n| self.state.nodes[n].name.to_owned())
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        Outcome::Wait {
            reason,
            expected_start,
            planned_nodes,
        }
    }
}
