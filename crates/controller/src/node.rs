//! A node as the controller keeps it: its size, and which CPUs and GPUs its jobs hold (each
//! job gets cores of its own through a cpuset, or shares them with `[batch] oversubscribe`,
//! and GPUs of its own).

use berth_sched as sched;
use std::collections::BTreeSet;

/// A job's CPUs are slots: slot `k` of core `c` is `c + k * SLOT_STRIDE` (core ids are below
/// it: Linux counts at most 8192 CPUs), so with one slot per core (the default) a slot is
/// its core's own id, and a slot's core is known without its node.
const SLOT_STRIDE: u32 = 1 << 16;

/// The cores under CPU slots, each once and in order: a job's cpuset.
pub fn cores(slots: &[u32]) -> Vec<u32> {
    let cores: BTreeSet<u32> = slots.iter().map(|s| s % SLOT_STRIDE).collect();
    cores.into_iter().collect()
}

pub struct LocalNode {
    pub name: String,
    pub memory: u64,
    /// CPU slots on the cores of the agent's affinity, `oversubscribe` per core (see
    /// [`cores`]); the lowest free are taken first, so a job's slots lie on distinct cores
    /// before any core is shared.
    pub cpus: Pool,
    /// NVIDIA GPU minors (/dev/nvidiaN): each job gets GPUs of its own.
    pub gpus: Pool,
    /// What its administrator says it has, for jobs' `--constraint`.
    pub features: Vec<String>,
    pub machine: berth_agent::node::Machine,
}

/// Ids of one kind of device (CPUs, GPUs): all the node has, and those no job holds.
pub struct Pool {
    all: BTreeSet<u32>,
    free: BTreeSet<u32>,
}

impl Pool {
    fn new(all: impl IntoIterator<Item = u32>) -> Pool {
        let all: BTreeSet<u32> = all.into_iter().collect();
        Pool {
            free: all.clone(),
            all,
        }
    }

    pub fn count(&self) -> u32 {
        self.all.len() as u32
    }

    /// The lowest `n` free ids, now held; `None` (and nothing taken) if fewer are free.
    pub fn take(&mut self, n: u32) -> Option<Vec<u32>> {
        if self.free.len() < n as usize {
            return None;
        }
        let ids: Vec<u32> = self.free.iter().take(n as usize).copied().collect();
        for id in &ids {
            self.free.remove(id);
        }
        Some(ids)
    }

    /// Gives ids back; those the node does not have (a job's record from before a change of
    /// `[batch] oversubscribe`) are not added.
    pub fn release(&mut self, ids: &[u32]) {
        let known = ids.iter().filter(|id| self.all.contains(id));
        self.free.extend(known);
    }

    /// Marks ids as held by a job found running (a restarted controller, a node back).
    pub fn reserve(&mut self, ids: &[u32]) {
        for id in ids {
            self.free.remove(id);
        }
    }
}

impl LocalNode {
    /// This machine, as its agent finds it, each core shared by up to `oversubscribe` jobs.
    pub fn discover(oversubscribe: u32, features: Vec<String>) -> LocalNode {
        let resources = berth_agent::node::Resources {
            features,
            ..berth_agent::node::Resources::discover()
        };
        LocalNode::from(resources, oversubscribe)
    }

    /// The node its agent reported, each core shared by up to `oversubscribe` jobs.
    pub fn from(r: berth_agent::node::Resources, oversubscribe: u32) -> LocalNode {
        let slots =
            (0..oversubscribe.max(1)).flat_map(|k| r.cpus.iter().map(move |c| c + k * SLOT_STRIDE));
        LocalNode {
            name: r.name,
            memory: r.memory,
            cpus: Pool::new(slots),
            gpus: Pool::new(r.gpus),
            features: r.features,
            machine: r.machine,
        }
    }

    /// What the node has, as its agent reported it.
    pub fn resources(&self) -> berth_agent::node::Resources {
        let all: Vec<u32> = self.cpus.all.iter().copied().collect();
        berth_agent::node::Resources {
            name: self.name.clone(),
            cpus: cores(&all),
            memory: self.memory,
            gpus: self.gpus.all.iter().copied().collect(),
            features: self.features.clone(),
            machine: self.machine.clone(),
        }
    }

    pub fn view(
        &self,
        allocations: Vec<sched::Allocation>,
        state: sched::AdminState,
    ) -> sched::NodeView {
        sched::NodeView {
            name: self.name.clone(),
            state,
            cpus: self.cpus.count(),
            memory: self.memory,
            gpus: self.gpus.count(),
            allocations,
            features: self.features.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_get_gpus_of_their_own() {
        let mut node = LocalNode::from(
            berth_agent::node::Resources {
                name: "n".into(),
                cpus: (0..4).collect(),
                memory: 1 << 30,
                gpus: vec![0, 1, 3],
                features: vec!["a100".into()],
                machine: Default::default(),
            },
            1,
        );
        assert_eq!(node.gpus.count(), 3);
        let a = node.gpus.take(2).unwrap();
        assert_eq!(a, [0, 1]);
        assert_eq!(node.gpus.take(2), None, "one is left, and none is taken");
        assert_eq!(node.gpus.take(1).unwrap(), [3]);
        node.gpus.release(&a);
        assert_eq!(node.gpus.take(2).unwrap(), [0, 1]);
        node.gpus.reserve(&[3]);
        assert_eq!(node.gpus.take(1), None);
        assert_eq!(node.cpus.take(3).unwrap(), [0, 1, 2]);
        assert_eq!(
            node.resources().gpus,
            [0, 1, 3],
            "what it has stays what it reported"
        );
        assert_eq!(
            node.view(Vec::new(), sched::AdminState::Up).features,
            ["a100"]
        );
    }

    #[test]
    fn oversubscribed_cores_are_shared_only_once_each_has_a_job() {
        let r = berth_agent::node::Resources {
            name: "n".into(),
            cpus: vec![2, 3],
            memory: 1 << 30,
            gpus: Vec::new(),
            features: Vec::new(),
            machine: Default::default(),
        };
        let mut shared = LocalNode::from(r.clone(), 3);
        assert_eq!(shared.cpus.count(), 6, "each core counts three times");
        let a = shared.cpus.take(1).unwrap();
        let b = shared.cpus.take(2).unwrap();
        assert_eq!((cores(&a), cores(&b)), (vec![2], vec![2, 3]));
        let c = shared.cpus.take(3).unwrap();
        assert_eq!(
            cores(&c),
            [2, 3],
            "slots on the same core are one cpuset entry"
        );
        assert_eq!(shared.cpus.take(1), None, "six slots, six taken");
        shared.cpus.release(&b);
        assert_eq!(shared.cpus.take(2).unwrap(), b);
        assert_eq!(
            shared.resources(),
            r,
            "it reports the cores its agent reported"
        );
        shared.cpus.release(&[2 + 3 * SLOT_STRIDE]);
        assert_eq!(
            shared.cpus.take(1),
            None,
            "a slot it does not have is not taken back"
        );
        // One slot per core: a slot is the core itself, as before oversubscription.
        let mut own = LocalNode::from(r, 1);
        assert_eq!(own.cpus.take(2).unwrap(), [2, 3]);
    }
}
