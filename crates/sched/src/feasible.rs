//! Feasibility that does not depend on what is running: is the request well formed, within
//! its partition's limits, and could the partition's hardware ever hold it?
//!
//! Owns: the request's per-node shape ([`Shape`]), the partition limit checks and
//! [`fits_ever`], which the controller calls at submission so that impossible jobs are
//! refused there (as Slurm refuses them with "Requested node configuration is not
//! available") instead of waiting forever. The pass runs the same checks, because the
//! cluster may have changed since.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{AdminState, ClusterView, JobRequest, NodeChoice, NodeView, PartitionView, Res};
use crate::reason::Reason;

/// What a request needs from each node, and how many nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    /// The most one node must give (the node with the most tasks, at `k_min` nodes). For an
    /// exclusive job the whole node is taken, but this is still what it must at least have.
    pub need: Res,
    pub k_min: u32,
    /// Never more nodes than tasks: a node without a task would idle.
    pub k_max: u32,
    pub exclusive: bool,
    /// All of each node's memory (`--mem=0`), whatever `need` says.
    pub whole_memory: bool,
    /// How many of the `k_min` nodes get the most tasks, and the CPUs each of the others
    /// must give (one task fewer): `-N 2 -n 3` needs one node with two tasks' CPUs and one
    /// with one task's, not two of the first (Slurm places it so).
    pub most_nodes: u32,
    pub lesser_cpus: u64,
}

impl Shape {
    /// The shape of a request, or `BadConstraints` if it is malformed.
    pub fn of(req: &JobRequest) -> Result<Self, Reason> {
        let malformed = req.nodes_min == 0
            || req.nodes_max < req.nodes_min
            || req.cpus_per_task == 0
            || req.tasks_per_node == Some(0)
            || req.tasks.is_some_and(|t| t < req.nodes_min);
        if malformed {
            return Err(Reason::BadConstraints);
        }
        let k_max = match req.tasks {
            Some(t) => req.nodes_max.min(t),
            None => req.nodes_max,
        };
        // No node with more tasks than `tasks_per_node` allows.
        let k_min = match (req.tasks_per_node, req.tasks) {
            (Some(per), Some(t)) => req.nodes_min.max(t.div_ceil(per)),
            _ => req.nodes_min,
        };
        if k_min > k_max {
            return Err(Reason::BadConstraints);
        }
        let (most, most_nodes) = req.layout(k_min);
        let lesser_cpus = match most_nodes < k_min {
            true => req.cpus_for(most - 1),
            false => req.cpus_for(most),
        };
        Ok(Self {
            need: Res {
                cpus: req.cpus_for(most),
                mem: req.memory_per_node,
                gpus: u64::from(req.gpus_per_node),
            },
            k_min,
            k_max,
            exclusive: req.exclusive,
            whole_memory: req.whole_memory,
            most_nodes,
            lesser_cpus,
        })
    }

    /// Whether some of its `k_min` nodes need fewer CPUs than the others.
    pub fn uneven(&self) -> bool {
        self.lesser_cpus < self.need.cpus
    }

    /// The shape the nodes with fewer tasks must fit (itself where all get as many).
    pub fn lesser(&self) -> Shape {
        Shape {
            need: Res {
                cpus: self.lesser_cpus,
                ..self.need
            },
            most_nodes: self.k_min,
            ..*self
        }
    }

    /// What the job takes of a node of `total` resources: the whole node (exclusive), its
    /// whole memory (`--mem=0`), or its need; `None` where the node is too small.
    pub fn want(&self, total: &Res) -> Option<Res> {
        if !total.covers(&self.need) {
            return None;
        }
        Some(match (self.exclusive, self.whole_memory) {
            (true, _) => *total,
            (false, true) => Res {
                mem: total.mem,
                ..self.need
            },
            (false, false) => self.need,
        })
    }
}

/// The partition's own limits: `MaxTime` and `MaxNodes` (and no more nodes than it has).
pub(crate) fn partition_limits(
    part: &PartitionView,
    req: &JobRequest,
    members: usize,
) -> Result<(), Reason> {
    if let (Some(max), Some(t)) = (part.max_time, req.time_limit) {
        if t > max {
            return Err(Reason::PartitionTimeLimit);
        }
    }
    let too_many = part.max_nodes.is_some_and(|m| req.nodes_min > m)
        || usize::try_from(req.nodes_min).map_or(true, |n| n > members);
    if too_many {
        return Err(Reason::PartitionNodeLimit);
    }
    Ok(())
}

/// A partition's nodes grouped by hardware: clusters have a handful of node types, so
/// "how many nodes could hold this" is a walk over a few classes, not over every node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Classes {
    /// (hardware, nodes, of which up)
    classes: Vec<(Res, usize, usize)>,
}

impl Classes {
    pub fn new<'a>(nodes: impl IntoIterator<Item = &'a NodeView>) -> Self {
        let mut map: BTreeMap<Res, (usize, usize)> = BTreeMap::new();
        for n in nodes {
            let e = map.entry(Res::new(n.cpus, n.memory, n.gpus)).or_default();
            e.0 += 1;
            if n.state == AdminState::Up {
                e.1 += 1;
            }
        }
        Self {
            classes: map.into_iter().map(|(r, (n, up))| (r, n, up)).collect(),
        }
    }

    /// `Ok` if at least `shape.k_min` nodes (up ones only, when `up_only`) are big enough:
    /// `shape.most_nodes` of them for its most tasks, the others for one fewer.
    pub fn fit(&self, shape: &Shape) -> Result<(), Reason> {
        let lesser = shape.lesser();
        // (nodes big enough for the most tasks, of which up; for fewer, of which up)
        let (mut most, mut most_up, mut all, mut up) = (0usize, 0usize, 0usize, 0usize);
        for (hw, n, u) in &self.classes {
            if hw.covers(&shape.need) {
                most += n;
                most_up += u;
            }
            if hw.covers(&lesser.need) {
                all += n;
                up += u;
            }
        }
        let k = usize::try_from(shape.k_min).unwrap_or(usize::MAX);
        let first = usize::try_from(shape.most_nodes).unwrap_or(usize::MAX);
        if all < k || most < first {
            Err(Reason::BadConstraints)
        } else if up < k || most_up < first {
            Err(Reason::ReqNodeNotAvail)
        } else {
            Ok(())
        }
    }
}

/// The distinct known nodes of a partition.
pub(crate) fn members<'a>(cluster: &'a ClusterView, part: &PartitionView) -> Vec<&'a NodeView> {
    let names: BTreeSet<&str> = part.nodes.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    cluster
        .nodes
        .iter()
        .filter(|n| names.contains(n.name.as_str()) && seen.insert(n.name.as_str()))
        .collect()
}

/// Whether `req` could ever run on this cluster, whatever runs now and whatever state the
/// nodes are in: the check the controller makes at submission. `Err` carries the reason to
/// refuse with: `BadConstraints` (malformed, unknown partition, or no `nodes_min` nodes of
/// the partition have enough CPUs, memory and GPUs each), `PartitionTimeLimit` or
/// `PartitionNodeLimit`.
pub fn fits_ever(cluster: &ClusterView, req: &JobRequest) -> Result<(), Reason> {
    let part = cluster
        .partition(&req.partition)
        .ok_or(Reason::BadConstraints)?;
    let members = members(cluster, part);
    let any = NodeChoice::default();
    let choice = req.choice.as_deref().unwrap_or(&any);
    // A job with a say in its nodes: only those it may have count, and each one it must
    // have counts toward its nodes.
    let eligible: Vec<&NodeView> = members
        .iter()
        .copied()
        .filter(|n| choice.allows(n))
        .collect();
    if !choice
        .required
        .iter()
        .all(|r| eligible.iter().any(|n| n.name == *r))
    {
        return Err(Reason::BadConstraints);
    }
    let must = u32::try_from(choice.required.len()).unwrap_or(u32::MAX);
    if must > req.nodes_max {
        return Err(Reason::BadConstraints);
    }
    let widened = JobRequest {
        nodes_min: req.nodes_min.max(must),
        ..req.clone()
    };
    let shape = Shape::of(&widened)?;
    partition_limits(part, &widened, members.len())?;
    match Classes::new(eligible).fit(&shape) {
        // Nodes being down now is no reason to refuse a job: they come back.
        Err(Reason::ReqNodeNotAvail) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{cluster, job, node, partition, GIB};

    #[test]
    fn refuses_what_no_node_could_ever_hold() {
        let c = cluster(vec![
            node("a", 8, 16 * GIB),
            node("b", 16, 64 * GIB).gpus(2),
            node("c", 16, 64 * GIB).down(),
        ])
        .with(partition("small", &["a"]).max_time(3600).max_nodes(1));
        let ok = |j: crate::JobView| fits_ever(&c, &j.request);
        assert_eq!(ok(job(1).cpus(16)), Ok(()));
        assert_eq!(ok(job(1).cpus(17)), Err(Reason::BadConstraints));
        assert_eq!(ok(job(1).mem(65 * GIB)), Err(Reason::BadConstraints));
        assert_eq!(ok(job(1).gpus(3)), Err(Reason::BadConstraints));
        assert_eq!(ok(job(1).gpus(2)), Ok(()));
        // Two nodes with 2 GPUs? only one exists.
        assert_eq!(ok(job(1).gpus(2).nodes(2)), Err(Reason::BadConstraints));
        // A down node still counts: it may come back.
        assert_eq!(ok(job(1).cpus(16).nodes(2)), Ok(()));
        assert_eq!(ok(job(1).nodes(4)), Err(Reason::PartitionNodeLimit));
        assert_eq!(
            ok(job(1).partition("small").nodes(2)),
            Err(Reason::PartitionNodeLimit)
        );
        assert_eq!(
            ok(job(1).partition("small").time(7200)),
            Err(Reason::PartitionTimeLimit)
        );
        assert_eq!(ok(job(1).partition("nope")), Err(Reason::BadConstraints));
        assert_eq!(ok(job(1).tasks(1).nodes(2)), Err(Reason::BadConstraints));
        assert_eq!(ok(job(1).cpus(0)), Err(Reason::BadConstraints));
    }
}
