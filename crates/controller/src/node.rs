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
        let gpus = std::fs::read_dir("/dev").map_or(0, |d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("nvidia"))
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count() as u32
        });
        LocalNode {
            name,
            cpus: ids.len() as u32,
            memory,
            gpus,
            free: ids,
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
        if self.free.len() < n as usize {
            return None;
        }
        let ids: Vec<u32> = self.free.iter().take(n as usize).copied().collect();
        for id in &ids {
            self.free.remove(id);
        }
        Some(ids)
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
