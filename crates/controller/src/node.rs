//! A node as the controller keeps it: its size, and which CPUs and GPUs its jobs hold (each
//! job gets cores of its own through a cpuset, and GPUs of its own).

use berth_sched as sched;
use std::collections::BTreeSet;

pub struct LocalNode {
    pub name: String,
    pub cpus: u32,
    pub memory: u64,
    /// NVIDIA GPUs (/dev/nvidiaN).
    pub gpus: u32,
    /// Every CPU id and GPU minor, held or not.
    cpu_ids: BTreeSet<u32>,
    gpu_ids: BTreeSet<u32>,
    /// CPU ids this process may use (its affinity), and those not held by a job.
    free: BTreeSet<u32>,
    /// Minor numbers of the GPUs not held by a job: each job gets GPUs of its own.
    free_gpus: BTreeSet<u32>,
}

impl LocalNode {
    /// This machine, as its agent finds it.
    pub fn discover() -> LocalNode {
        LocalNode::from(berth_agent::node::Resources::discover())
    }

    pub fn from(r: berth_agent::node::Resources) -> LocalNode {
        LocalNode::new(
            r.name,
            r.cpus.into_iter().collect(),
            r.memory,
            r.gpus.into_iter().collect(),
        )
    }

    fn new(name: String, cpus: BTreeSet<u32>, memory: u64, gpus: BTreeSet<u32>) -> LocalNode {
        LocalNode {
            name,
            cpus: cpus.len() as u32,
            memory,
            gpus: gpus.len() as u32,
            cpu_ids: cpus.clone(),
            gpu_ids: gpus.clone(),
            free: cpus,
            free_gpus: gpus,
        }
    }

    /// What the node has, as its agent reported it.
    pub fn resources(&self) -> berth_agent::node::Resources {
        berth_agent::node::Resources {
            name: self.name.clone(),
            cpus: self.cpu_ids.iter().copied().collect(),
            memory: self.memory,
            gpus: self.gpu_ids.iter().copied().collect(),
        }
    }

    /// The lowest `n` free GPU minors, now held; `None` if fewer are free.
    pub fn take_gpus(&mut self, n: u32) -> Option<Vec<u32>> {
        take(&mut self.free_gpus, n)
    }

    pub fn release_gpus(&mut self, ids: &[u32]) {
        self.free_gpus.extend(ids.iter().copied());
    }

    /// Marks GPUs as held by a job found running at start-up.
    pub fn reserve_gpus(&mut self, ids: &[u32]) {
        for id in ids {
            self.free_gpus.remove(id);
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
            cpus: self.cpus,
            memory: self.memory,
            gpus: self.gpus,
            allocations,
        }
    }

    /// The lowest `n` free CPU ids, now held; `None` if fewer are free.
    pub fn take_cpus(&mut self, n: u32) -> Option<Vec<u32>> {
        take(&mut self.free, n)
    }

    pub fn release_cpus(&mut self, ids: &[u32]) {
        self.free.extend(ids.iter().copied());
    }

    /// Marks CPUs as held by a job found running at start-up.
    pub fn reserve_cpus(&mut self, ids: &[u32]) {
        for id in ids {
            self.free.remove(id);
        }
    }
}

/// The lowest `n` ids of `free`, taken out of it; `None` (and nothing taken) if fewer are there.
fn take(free: &mut BTreeSet<u32>, n: u32) -> Option<Vec<u32>> {
    if free.len() < n as usize {
        return None;
    }
    let ids: Vec<u32> = free.iter().take(n as usize).copied().collect();
    for id in &ids {
        free.remove(id);
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_get_gpus_of_their_own() {
        let mut node = LocalNode::new(
            "n".into(),
            (0..4).collect(),
            1 << 30,
            [0, 1, 3].into_iter().collect(),
        );
        assert_eq!(node.gpus, 3);
        let a = node.take_gpus(2).unwrap();
        assert_eq!(a, [0, 1]);
        assert_eq!(node.take_gpus(2), None, "one is left, and none is taken");
        assert_eq!(node.take_gpus(1).unwrap(), [3]);
        node.release_gpus(&a);
        assert_eq!(node.take_gpus(2).unwrap(), [0, 1]);
        node.reserve_gpus(&[3]);
        assert_eq!(node.take_gpus(1), None);
        assert_eq!(node.take_cpus(3).unwrap(), [0, 1, 2]);
    }
}
