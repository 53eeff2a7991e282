//! Times one scheduling pass over a synthetic cluster.
//!
//! ```text
//! cargo run --release -p berth-sched --example pass -- JOBS NODES
//! cargo run --release -p berth-sched --example pass            # 1k/10k/100k x 100/1k/10k
//! ```
//!
//! The cluster: three node types (64 CPUs/256 GiB, 128 CPUs/512 GiB, 64 CPUs/512 GiB with 4
//! GPUs), 1% down or drained, about 70% of nodes partly or wholly busy with running jobs
//! ending over the next two days; four partitions (`batch` default, `long`, `gpu`, and a
//! higher-tier `debug` overlapping `batch`). The queue: mostly single-node jobs of 1-32 CPUs,
//! 15% multi-node, 5% exclusive, time limits from ten minutes to a week (some none), 10%
//! array tasks with `%10`, 5% `afterok` dependencies, a few held. Deterministic (fixed seed).

use std::time::Instant;

use berth_sched::mock::{cluster, job, node, partition, GIB};
use berth_sched::{
    schedule, Allocation, ClusterView, Config, DepKind, JobState, JobView, NodeView,
};

const NOW: u64 = 10_000_000;

/// xorshift64*: a small deterministic generator, so the benchmark needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn refs(xs: &[String]) -> Vec<&str> {
    xs.iter().map(String::as_str).collect()
}

fn build_cluster(n: usize, rng: &mut Rng) -> ClusterView {
    let mut nodes: Vec<NodeView> = Vec::with_capacity(n);
    let (mut plain, mut gpu) = (Vec::new(), Vec::new());
    let mut job_id = 1_000_000_000;
    for i in 0..n {
        let name = format!("n{i:05}");
        let kind = rng.below(100);
        let mut v = if kind < 60 {
            node(&name, 64, 256 * GIB)
        } else if kind < 85 {
            node(&name, 128, 512 * GIB)
        } else {
            node(&name, 64, 512 * GIB).gpus(4)
        };
        if v.gpus > 0 {
            gpu.push(name.clone());
        } else {
            plain.push(name.clone());
        }
        match rng.below(100) {
            0 => v = v.down(),
            1 => v = v.drain(),
            _ => {}
        }
        if rng.chance(70) {
            let (mut cpus, mut mem, mut gpus) = (v.cpus, v.memory, v.gpus);
            for _ in 0..1 + rng.below(4) {
                if cpus == 0 {
                    break;
                }
                let c = 1 + rng.below(u64::from(cpus)) as u32;
                let m = rng.below(mem / GIB + 1) * GIB / 2;
                let g = rng.below(u64::from(gpus) + 1) as u32;
                job_id += 1;
                v = v.alloc(Allocation {
                    job: job_id,
                    cpus: c,
                    memory: m,
                    gpus: g,
                    end: NOW + 60 + rng.below(2 * 86_400),
                });
                cpus -= c;
                mem -= m;
                gpus -= g;
            }
        }
        nodes.push(v);
    }
    let all: Vec<&str> = nodes.iter().map(|v| v.name.as_str()).collect();
    let mut c = cluster(nodes.clone());
    c.partitions[0].nodes = plain.clone();
    c.partitions[0].max_time = Some(2 * 86_400);
    c.partitions[0].default_time = Some(3600);
    let long_from = plain.len() * 7 / 10;
    c.with(partition("long", &refs(&plain[long_from..])).max_time(7 * 86_400))
        .with(partition("gpu", &refs(&gpu)).factor(2).max_time(2 * 86_400))
        .with(
            partition("debug", &all[..(n / 20).max(1)])
                .tier(1)
                .max_time(3600)
                .max_nodes(4),
        )
        .finished(1, JobState::Completed)
}

fn build_jobs(j: usize, rng: &mut Rng) -> Vec<JobView> {
    let mut jobs = Vec::with_capacity(j);
    let mut array_master = 0;
    for i in 0..j {
        let id = i as u64 + 10;
        let part = match rng.below(100) {
            0..70 => "batch",
            70..80 => "long",
            80..90 => "gpu",
            _ => "debug",
        };
        let mut v = job(id)
            .partition(part)
            .user(&format!("u{}", rng.below(200)))
            .submit(NOW - rng.below(14 * 86_400))
            .mem(rng.below(64) * GIB);
        let max_time = match part {
            "long" => 7 * 86_400,
            "debug" => 3600,
            _ => 2 * 86_400,
        };
        if !rng.chance(5) {
            v = v.time(
                rng.pick(&[600, 3600, 4 * 3600, 12 * 3600, 86_400, 7 * 86_400])
                    .min(max_time),
            );
        }
        v = match rng.below(100) {
            0..80 => v.cpus(rng.pick(&[1, 2, 4, 8, 16, 32])),
            80..95 => {
                let nodes = rng
                    .pick(&[2, 2, 4, 8, 16])
                    .min(if part == "debug" { 4 } else { 16 });
                v.nodes(nodes)
                    .per_node(rng.pick(&[1, 4, 16]))
                    .cpus(rng.pick(&[1, 2, 4]))
            }
            _ => v
                .exclusive()
                .nodes(1 + rng.below(if part == "debug" { 4 } else { 8 }) as u32),
        };
        if part == "gpu" {
            v = v.gpus(1 + rng.below(4) as u32);
        }
        if rng.chance(10) {
            if array_master == 0 || rng.chance(2) {
                array_master = id;
            }
            v = v.array(array_master, (id - array_master) as u32, Some(10));
        }
        if rng.chance(5) && i > 0 {
            v = v.dep(DepKind::AfterOk, 10 + rng.below(i as u64));
        }
        if rng.chance(1) {
            v = v.held();
        }
        jobs.push(v);
    }
    jobs
}

fn bench(jobs: usize, nodes: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (jobs as u64) << 20 ^ nodes as u64);
    let c = build_cluster(nodes, &mut rng);
    let js = build_jobs(jobs, &mut rng);
    let config = Config::default();
    let mut best = f64::INFINITY;
    let mut plan = None;
    for _ in 0..5 {
        let t = Instant::now();
        let p = schedule(&c, &js, NOW, &config);
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        plan = Some(p);
    }
    let plan = plan.expect("five passes ran");
    let started = plan.starts().count();
    let planned = plan
        .decisions
        .iter()
        .filter(|d| d.expected_start(NOW).is_some_and(|t| t > NOW))
        .count();
    println!(
        "{jobs:>7} jobs {nodes:>6} nodes  started {started:>6}  reserved {planned:>2}  {best:>8.2} ms"
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: pass [JOBS NODES]"))
        .collect();
    match args[..] {
        [jobs, nodes] => bench(jobs, nodes),
        [] => {
            for jobs in [1_000, 10_000, 100_000] {
                for nodes in [100, 1_000, 10_000] {
                    bench(jobs, nodes);
                }
            }
        }
        _ => panic!("usage: pass [JOBS NODES]"),
    }
}
