//! The pass's working copy of the cluster: free capacity per node, indexed per partition, and
//! the backfill reservations laid on the nodes.
//!
//! Owns: resource matching ("which nodes can take this job now") and committing a placement.
//! Node selection is best fit, as Slurm's `select/cons_tres` packs jobs: among the nodes that
//! can take the job, the ones with the fewest free CPUs first (so the least is left over),
//! ties by node name, so a pass is deterministic.
//!
//! Why an index: with 10,000 nodes and 100,000 jobs, scanning every node for every job is
//! 10^9 steps. Each partition keeps its schedulable nodes in a `BTreeSet` ordered by
//! (free CPUs, name rank), so a job looks only at nodes with at least the CPUs it needs, best
//! fit first, and stops at the first `nodes_max` that fit. Full nodes leave the index, so a
//! full cluster answers "no" in O(log n).

use std::collections::BTreeSet;

use crate::feasible::{members, Classes, Shape};
use crate::hash::FxMap;
use crate::model::{AdminState, ClusterView, JobRequest, NodeChoice, NodeView, PartitionView, Res};
use crate::plan::NodeAlloc;
use crate::reason::Reason;

/// Resources reserved on one node for a blocked job, from `start` to `end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub start: u64,
    pub end: u64,
    /// What the reserved job takes on this node.
    pub amount: Res,
    /// What else the node can still give anyone who runs at some point of `[start, end)`:
    /// its free capacity at `start` (running jobs that end by then released) minus every
    /// reservation overlapping this one. Free capacity only grows between reservation
    /// starts, so this bounds the headroom over the whole slot, and a job that would still
    /// run at `start` may take at most this much (see [`NodeRt::allows`]).
    pub slack: Res,
    /// The administrator's reservation it stands for (its index), which holds the whole
    /// node with no slack; `None`: a blocked job's.
    pub owner: Option<usize>,
}

impl Slot {
    /// Whether the slot overlaps `[from, to)`.
    pub fn overlaps(&self, from: u64, to: u64) -> bool {
        self.start < to && self.end > from
    }
}

/// One node during the pass.
#[derive(Debug)]
pub(crate) struct NodeRt<'a> {
    pub name: &'a str,
    pub view: &'a NodeView,
    pub total: Res,
    /// Free now: total minus running jobs minus jobs started in this pass.
    pub free: Res,
    pub up: bool,
    /// Something runs or was started here: not available to exclusive jobs.
    pub busy: bool,
    /// (time, resources) released then: running jobs' expected ends and this pass's starts.
    pub releases: Vec<(u64, Res)>,
    /// Reservations on this node (a handful at most: one per reserved job).
    pub slots: Vec<Slot>,
    /// The partitions it belongs to (indices into `State::parts`).
    pub parts: Vec<usize>,
}

impl NodeRt<'_> {
    /// Whether a job ending at `end` may take `want` here now without delaying any
    /// reservation: it must fit the free capacity, and the slack of every reservation that
    /// starts before it ends (a job ending by a reservation's start is backfill that delays
    /// nothing: Slurm's rule). A job in administrator's reservation `member` is not held
    /// back by that one.
    pub fn allows(&self, want: &Res, end: u64, member: Option<usize>) -> bool {
        self.free.covers(want)
            && self
                .slots_against(member)
                .all(|s| s.start >= end || s.slack.covers(want))
    }

    /// The slots that hold back a job in administrator's reservation `member` (or none).
    pub fn slots_against(&self, member: Option<usize>) -> impl Iterator<Item = &Slot> {
        self.slots
            .iter()
            .filter(move |s| s.owner.is_none() || s.owner != member)
    }
}

/// The nodes a job with a say in them may have (`ok`, by node index) and must have, and how
/// much it prefers each (empty: none more than another).
#[derive(Debug)]
pub(crate) struct Eligible {
    pub ok: Vec<bool>,
    pub required: Vec<usize>,
    pub preference: Vec<u32>,
    /// The administrator's reservation the job runs in, if it does.
    pub member: Option<usize>,
}

/// One partition during the pass.
#[derive(Debug)]
pub(crate) struct PartRt<'a> {
    pub view: &'a PartitionView,
    /// Member nodes (indices, ascending = by name), whatever their state.
    pub members: Vec<usize>,
    /// Members grouped by hardware, for the "could it ever fit" checks.
    pub classes: Classes,
    /// Up members with free CPUs, by (free CPUs, node index).
    pub free_index: BTreeSet<(u64, usize)>,
    /// Up members nothing runs on, by (CPUs, node index): where exclusive jobs go.
    pub idle_index: BTreeSet<(u64, usize)>,
    /// A job of this partition is already blocked for resources this pass: later blocked
    /// jobs wait for `Priority`, not `Resources`.
    pub blocked: bool,
}

/// The pass's working state.
#[derive(Debug)]
pub(crate) struct State<'a> {
    pub now: u64,
    /// Sorted by name: an index is a name rank, so index order breaks ties by name.
    pub nodes: Vec<NodeRt<'a>>,
    pub parts: Vec<PartRt<'a>>,
    pub part_by_name: FxMap<&'a str, usize>,
}

impl<'a> State<'a> {
    pub fn new(cluster: &'a ClusterView, now: u64) -> Self {
        let mut order: Vec<usize> = (0..cluster.nodes.len()).collect();
        order.sort_by(|&a, &b| cluster.nodes[a].name.cmp(&cluster.nodes[b].name));
        // Names are unique; if not, the first of a name wins (deterministically).
        order.dedup_by(|a, b| cluster.nodes[*a].name == cluster.nodes[*b].name);
        let mut nodes: Vec<NodeRt<'a>> = order
            .iter()
            .map(|&i| {
                let v = &cluster.nodes[i];
                let total = Res::new(v.cpus, v.memory, v.gpus);
                let mut used = Res::default();
                let releases = v
                    .allocations
                    .iter()
                    .map(|a| {
                        let r = Res::new(a.cpus, a.memory, a.gpus);
                        used = used.add(&r);
                        (a.end.max(now.saturating_add(1)), r)
                    })
                    .collect();
                NodeRt {
                    name: &v.name,
                    view: v,
                    total,
                    free: total.sub(&used),
                    up: v.state == AdminState::Up,
                    busy: !v.allocations.is_empty(),
                    releases,
                    slots: Vec::new(),
                    parts: Vec::new(),
                }
            })
            .collect();
        let node_by_name: FxMap<&str, usize> =
            nodes.iter().enumerate().map(|(i, n)| (n.name, i)).collect();
        // Administrators' reservations hold their nodes whole, with no slack, for their time.
        for (i, r) in cluster.reservations.iter().enumerate() {
            if r.end <= now {
                continue;
            }
            for n in r.nodes.iter().filter_map(|n| node_by_name.get(n.as_str())) {
                let node = &mut nodes[*n];
                node.slots.push(Slot {
                    start: r.start,
                    end: r.end,
                    amount: node.total,
                    slack: Res::default(),
                    owner: Some(i),
                });
            }
        }

        let mut parts = Vec::with_capacity(cluster.partitions.len());
        let mut part_by_name = FxMap::default();
        for view in &cluster.partitions {
            if part_by_name.contains_key(view.name.as_str()) {
                continue;
            }
            let p = parts.len();
            part_by_name.insert(view.name.as_str(), p);
            let mut idx: Vec<usize> = view
                .nodes
                .iter()
                .filter_map(|n| node_by_name.get(n.as_str()).copied())
                .collect();
            idx.sort_unstable();
            idx.dedup();
            let mut part = PartRt {
                view,
                members: idx.clone(),
                classes: Classes::new(members(cluster, view)),
                free_index: BTreeSet::new(),
                idle_index: BTreeSet::new(),
                blocked: false,
            };
            for &n in &idx {
                let node = &mut nodes[n];
                node.parts.push(p);
                if node.up && node.free.cpus > 0 {
                    part.free_index.insert((node.free.cpus, n));
                }
                if node.up && !node.busy {
                    part.idle_index.insert((node.total.cpus, n));
                }
            }
            parts.push(part);
        }
        Self {
            now,
            nodes,
            parts,
            part_by_name,
        }
    }

    /// Best-fit nodes of partition `p` that can take the job now, for a job ending at `end`:
    /// between `k_min` and `k_max` of them, or `None`.
    pub fn find_now(&self, p: usize, shape: &Shape, end: u64) -> Option<Vec<usize>> {
        let part = &self.parts[p];
        let k_max = usize::try_from(shape.k_max).unwrap_or(usize::MAX);
        let k_min = usize::try_from(shape.k_min).unwrap_or(usize::MAX);
        let mut chosen = Vec::new();
        // An exclusive job takes whole idle nodes; the smallest that will do first, which is
        // best fit for the partition's remaining jobs.
        let index = if shape.exclusive {
            &part.idle_index
        } else {
            &part.free_index
        };
        for &(_, n) in index.range((shape.need.cpus, 0)..) {
            let node = &self.nodes[n];
            let Some(want) = shape.want(&node.total) else {
                continue;
            };
            if node.allows(&want, end, None) {
                chosen.push(n);
                if chosen.len() >= k_max {
                    break;
                }
            }
        }
        if chosen.len() >= k_min || !shape.uneven() {
            return (chosen.len() >= k_min).then_some(chosen);
        }
        // Too few nodes for the most tasks on each: `k_min` nodes, some of them for fewer.
        let lesser = shape.lesser();
        let mut fitting = Vec::new();
        for &(_, n) in index.range((lesser.need.cpus, 0)..) {
            let node = &self.nodes[n];
            let fits = |s: &Shape| {
                s.want(&node.total)
                    .is_some_and(|w| node.allows(&w, end, None))
            };
            if fits(shape) {
                fitting.push((n, true));
            } else if fits(&lesser) {
                fitting.push((n, false));
            }
        }
        pick(&fitting, 0, shape)
    }

    /// The members of partition `p` a job with this `choice` may have, and the ones it must:
    /// `BadConstraints` if a required node is not a member, or is one it may not have.
    pub fn eligible(&self, p: usize, choice: &NodeChoice) -> Result<Eligible, Reason> {
        let part = &self.parts[p];
        let mut ok = vec![false; self.nodes.len()];
        for &n in &part.members {
            ok[n] = choice.allows(self.nodes[n].view);
        }
        let required = choice
            .required
            .iter()
            .map(|name| {
                self.nodes
                    .binary_search_by(|n| n.name.cmp(name))
                    .ok()
                    .filter(|&n| ok[n])
                    .ok_or(Reason::BadConstraints)
            })
            .collect::<Result<Vec<usize>, Reason>>()?;
        let mut preference = Vec::new();
        if !choice.preferred.is_empty() {
            preference = vec![0; self.nodes.len()];
            for (name, level) in &choice.preferred {
                if let Ok(n) = self.nodes.binary_search_by(|n| n.name.cmp(name)) {
                    preference[n] = *level;
                }
            }
        }
        Ok(Eligible {
            ok,
            required,
            preference,
            member: None,
        })
    }

    /// [`Self::find_now`] for a job with a say in its nodes: its required nodes first (each
    /// must take it now), then the best-fit others it may have, the ones it prefers most
    /// first.
    pub fn find_among(
        &self,
        p: usize,
        shape: &Shape,
        end: u64,
        among: &Eligible,
    ) -> Option<Vec<usize>> {
        let part = &self.parts[p];
        let fits = |shape: &Shape, n: usize| -> bool {
            let node = &self.nodes[n];
            if shape.exclusive && node.busy {
                return false;
            }
            let Some(want) = shape.want(&node.total) else {
                return false;
            };
            node.up && node.allows(&want, end, among.member)
        };
        let first_try = self.find_among_even(p, shape, among, |n| fits(shape, n));
        if first_try.is_some() || !shape.uneven() {
            return first_try;
        }
        // Too few nodes for the most tasks on each: `k_min` nodes, some of them for fewer.
        let lesser = shape.lesser();
        let mut fitting = Vec::new();
        let index = match shape.exclusive {
            true => &part.idle_index,
            false => &part.free_index,
        };
        let others = index
            .range((lesser.need.cpus, 0)..)
            .map(|&(_, n)| n)
            .filter(|&n| among.ok[n] && !among.required.contains(&n));
        let mut others: Vec<usize> = others.collect();
        if !among.preference.is_empty() {
            others.sort_by_key(|&n| std::cmp::Reverse(among.preference[n]));
        }
        for n in among.required.iter().copied().chain(others) {
            if fits(shape, n) {
                fitting.push((n, true));
            } else if fits(&lesser, n) {
                fitting.push((n, false));
            } else if among.required.contains(&n) {
                return None;
            }
        }
        pick(&fitting, among.required.len(), shape)
    }

    /// [`Self::find_among`] with the most tasks' CPUs on every node (`fits`).
    fn find_among_even(
        &self,
        p: usize,
        shape: &Shape,
        among: &Eligible,
        fits: impl Fn(usize) -> bool,
    ) -> Option<Vec<usize>> {
        let part = &self.parts[p];
        let k_max = usize::try_from(shape.k_max).unwrap_or(usize::MAX);
        let k_min = usize::try_from(shape.k_min).unwrap_or(usize::MAX);
        let mut chosen = Vec::new();
        for &n in &among.required {
            if !fits(n) {
                return None;
            }
            chosen.push(n);
        }
        let index = if shape.exclusive {
            &part.idle_index
        } else {
            &part.free_index
        };
        // With preferences every node that fits is a choice (the index's order is best fit);
        // without, the first that fit.
        let preferring = !among.preference.is_empty();
        let mut fitting = Vec::new();
        for &(_, n) in index.range((shape.need.cpus, 0)..) {
            if chosen.len() + fitting.len() >= k_max && !preferring {
                break;
            }
            if among.ok[n] && !among.required.contains(&n) && fits(n) {
                fitting.push(n);
            }
        }
        if preferring {
            fitting.sort_by_key(|&n| std::cmp::Reverse(among.preference[n]));
        }
        chosen.extend(fitting.into_iter().take(k_max.saturating_sub(chosen.len())));
        (chosen.len() >= k_min).then_some(chosen)
    }

    /// The fewest CPUs a job could take in partition `p`: its fewest nodes' tasks', or for
    /// an exclusive job the smallest of its members, whole.
    pub fn least_cpus(&self, p: usize, req: &JobRequest) -> u64 {
        let k = req.nodes_min.max(1);
        match req.exclusive {
            true => {
                let mut sizes: Vec<u64> = (self.parts[p].members.iter())
                    .map(|&n| self.nodes[n].total.cpus)
                    .collect();
                sizes.sort_unstable();
                sizes.iter().take(k as usize).sum()
            }
            false => (0..k).map(|i| req.cpus_for(req.tasks_on(k, i))).sum(),
        }
    }

    /// What a job takes of the `i`-th of its `k` nodes, node `n`, and its tasks there: the
    /// whole node (exclusive), or its tasks' CPUs, its memory (all of it with `--mem=0`)
    /// and GPUs.
    fn share_of(&self, req: &JobRequest, n: usize, (k, i): (usize, usize)) -> (Res, u32) {
        let tasks = req.tasks_on(
            u32::try_from(k).unwrap_or(u32::MAX),
            u32::try_from(i).unwrap_or(u32::MAX),
        );
        let node = &self.nodes[n];
        let take = match req.exclusive {
            true => node.total,
            false => Res {
                cpus: req.cpus_for(tasks),
                mem: match req.whole_memory {
                    true => node.total.mem,
                    false => req.memory_per_node,
                },
                gpus: u64::from(req.gpus_per_node),
            },
        };
        (take, tasks)
    }

    /// The CPUs a job would take on `chosen` ([`Self::commit`] takes them).
    pub fn cpus_of(&self, req: &JobRequest, chosen: &[usize]) -> u64 {
        let k = chosen.len();
        (chosen.iter().enumerate())
            .map(|(i, &n)| self.share_of(req, n, (k, i)).0.cpus)
            .sum()
    }

    /// Starts a job on `chosen` (from [`Self::find_now`]) until `end`: takes the resources,
    /// charges the reservations it overlaps, and says what it got where.
    pub fn commit(&mut self, req: &JobRequest, chosen: &[usize], end: u64) -> Vec<NodeAlloc> {
        let mut allocs = Vec::with_capacity(chosen.len());
        for (i, &n) in chosen.iter().enumerate() {
            let (take, tasks) = self.share_of(req, n, (chosen.len(), i));
            allocs.push(NodeAlloc {
                node: self.nodes[n].name.to_owned(),
                cpus: u32::try_from(take.cpus).unwrap_or(u32::MAX),
                memory: take.mem,
                gpus: u32::try_from(take.gpus).unwrap_or(u32::MAX),
                tasks,
            });
            self.take(n, take, end);
        }
        allocs
    }

    fn take(&mut self, n: usize, take: Res, end: u64) {
        let node = &mut self.nodes[n];
        let (before, was_idle) = (node.free.cpus, !node.busy);
        node.free = node.free.sub(&take);
        node.busy = true;
        node.releases.push((end, take));
        for s in node.slots.iter_mut().filter(|s| s.start < end) {
            s.slack = s.slack.sub(&take);
        }
        for &p in &node.parts {
            let part = &mut self.parts[p];
            part.free_index.remove(&(before, n));
            if node.free.cpus > 0 {
                part.free_index.insert((node.free.cpus, n));
            }
            if was_idle {
                part.idle_index.remove(&(node.total.cpus, n));
            }
        }
    }
}

/// `shape.k_min` nodes out of `fitting` (in order of preference, the `required` first: each
/// with whether it can take the most tasks, or only one fewer): the required ones, the first
/// others that can take the most tasks until `shape.most_nodes` of them are, then the first
/// of the rest. Those for the most tasks come first in the answer, as
/// [`State::commit`] gives the first nodes the most; `None` if there are too few.
pub(crate) fn pick(
    fitting: &[(usize, bool)],
    required: usize,
    shape: &Shape,
) -> Option<Vec<usize>> {
    let k = usize::try_from(shape.k_min).unwrap_or(usize::MAX);
    let first = usize::try_from(shape.most_nodes).unwrap_or(usize::MAX);
    let (must, others) = fitting.split_at(required.min(fitting.len()));
    let mut taken: Vec<(usize, bool)> = must.to_vec();
    let mut most = taken.iter().filter(|(_, m)| *m).count();
    let mut rest = Vec::new();
    for &(n, m) in others {
        if m && most < first && taken.len() < k {
            taken.push((n, m));
            most += 1;
        } else {
            rest.push((n, m));
        }
    }
    for &(n, m) in &rest {
        if taken.len() >= k {
            break;
        }
        taken.push((n, m));
        most += usize::from(m);
    }
    if taken.len() < k || most < first {
        return None;
    }
    taken.sort_by_key(|&(_, m)| !m);
    Some(taken.into_iter().map(|(n, _)| n).collect())
}
