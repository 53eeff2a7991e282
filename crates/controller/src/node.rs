//! This machine as the all-in-one cluster's one node: its size, and which CPUs jobs hold
//! (each job gets its own cores through a cpuset).

use berth_sched as sched;
use std::collections::BTreeSet;

pub struct LocalNode {
    pub name: String,
    pub cpus: u32,
    pub memory: u64,
    /// NVIDIA GPUs (/dev/nvidiaN).
    pub gpus: u32,
    /// CPU ids this process may use (its affinity), and those not held by a job.
    free: BTreeSet<u32>,
    /// Minor numbers of the GPUs not held by a job: each job gets GPUs of its own.
    free_gpus: BTreeSet<u32>,
}

impl LocalNode {
    pub fn discover() -> LocalNode {
        let mut ids = BTreeSet::new();
        // SAFETY: sched_getaffinity fills the zeroed cpu_set_t we own.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                for cpu in 0..libc::CPU_SETSIZE as usize {
                    if libc::CPU_ISSET(cpu, &set) {
                        ids.insert(cpu as u32);
                    }
                }
            }
        }
        if ids.is_empty() {
            ids.insert(0);
        }
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("MemTotal:")
                        .map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                })
            })
            .flatten()
            .map_or(0, |kb| kb * 1024);
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "localhost".into(), |h| h.trim().to_string());
        // NVIDIA GPUs: /dev/nvidia0, /dev/nvidia1, ... (not nvidiactl or nvidia-uvm).
        let gpus: BTreeSet<u32> = std::fs::read_dir("/dev").map_or_else(
            |_| BTreeSet::new(),
            |d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name();
                        let digits = name.to_str()?.strip_prefix("nvidia")?;
                        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                            .then(|| digits.parse().ok())
                            .flatten()
                    })
                    .collect()
            },
        );
        LocalNode::new(name, ids, memory, gpus)
    }

    fn new(name: String, cpus: BTreeSet<u32>, memory: u64, gpus: BTreeSet<u32>) -> LocalNode {
        LocalNode {
            name,
            cpus: cpus.len() as u32,
            memory,
            gpus: gpus.len() as u32,
            free: cpus,
            free_gpus: gpus,
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

    pub fn view(&self, allocations: Vec<sched::Allocation>) -> sched::NodeView {
        sched::NodeView {
            name: self.name.clone(),
            state: sched::AdminState::Up,
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
