//! A node as the controller keeps it: its size, and which CPUs and GPUs its jobs hold (each
//! job gets cores of its own through a cpuset, and GPUs of its own).

use berth_sched as sched;
use std::collections::BTreeSet;

pub struct LocalNode {
    pub name: String,
    pub memory: u64,
    /// CPU ids (the agent's affinity): each job gets cores of its own (a cpuset).
    pub cpus: Pool,
    /// NVIDIA GPU minors (/dev/nvidiaN): each job gets GPUs of its own.
    pub gpus: Pool,
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

    pub fn release(&mut self, ids: &[u32]) {
        self.free.extend(ids.iter().copied());
    }

    /// Marks ids as held by a job found running (a restarted controller, a node back).
    pub fn reserve(&mut self, ids: &[u32]) {
        for id in ids {
            self.free.remove(id);
        }
    }
}

impl LocalNode {
    /// This machine, as its agent finds it.
    pub fn discover() -> LocalNode {
        LocalNode::from(berth_agent::node::Resources::discover())
    }

    pub fn from(r: berth_agent::node::Resources) -> LocalNode {
        LocalNode {
            name: r.name,
            memory: r.memory,
            cpus: Pool::new(r.cpus),
            gpus: Pool::new(r.gpus),
        }
    }

    /// What the node has, as its agent reported it.
    pub fn resources(&self) -> berth_agent::node::Resources {
        berth_agent::node::Resources {
            name: self.name.clone(),
            cpus: self.cpus.all.iter().copied().collect(),
            memory: self.memory,
            gpus: self.gpus.all.iter().copied().collect(),
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_get_gpus_of_their_own() {
        let mut node = LocalNode::from(berth_agent::node::Resources {
            name: "n".into(),
            cpus: (0..4).collect(),
            memory: 1 << 30,
            gpus: vec![0, 1, 3],
        });
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
    }
}
