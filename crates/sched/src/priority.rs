//! Job priority, after Slurm's `priority/multifactor` plugin.
//!
//! Owns: the weights ([`Config`]), the factors and their weighted sum, and the order the pass
//! considers jobs in. Each factor is normalised to 0..=1 and multiplied by its weight, as in
//! Slurm: `priority = w_age * age + w_size * size + w_part * partition + w_fs * fairshare -
//! nice` (fairshare: the job's user's factor, [`crate::fairshare`]). The components
//! are kept so `berth show` can explain a priority, as `sprio` does.

use std::cmp::{Ordering, Reverse};

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::model::{ClusterView, JobView, PartitionView};

/// The scheduler's tunables (Slurm's `PriorityWeight*`, `PriorityMaxAge`,
/// `PriorityFavorSmall` and backfill's reservation depth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// `PriorityWeightAge`.
    pub weight_age: u32,
    /// `PriorityWeightJobSize`.
    pub weight_job_size: u32,
    /// `PriorityWeightPartition`.
    pub weight_partition: u32,
    /// `PriorityWeightFairshare`.
    pub weight_fairshare: u32,
    /// `PriorityMaxAge`, seconds: the age factor reaches 1 at this age (Slurm: 7 days).
    pub max_age: u64,
    /// `PriorityFavorSmall`: smaller jobs get the larger size factor. Slurm's default (false)
    /// favours large jobs, which would otherwise starve behind a stream of small ones.
    pub favor_small: bool,
    /// How many blocked jobs get a reservation (their resources held at their expected start
    /// so lower-priority jobs cannot delay them). 1 is EASY backfill; more is closer to
    /// Slurm's conservative backfill, at one timeline sweep per reservation.
    pub reservations: usize,
    /// The time limit, seconds, planned for a job with none in a partition with neither
    /// `DefaultTime` nor `MaxTime` (Slurm's UNLIMITED); one year.
    pub unlimited_time: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            weight_age: 1000,
            weight_job_size: 1000,
            weight_partition: 1000,
            weight_fairshare: 1000,
            max_age: 7 * 24 * 3600,
            favor_small: false,
            reservations: 8,
            unlimited_time: 365 * 24 * 3600,
        }
    }
}

/// A job's priority and how it was made (what `sprio` prints).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Priority {
    /// The weighted sum minus nice, rounded, floored at 0.
    pub total: u64,
    /// The partition's `PriorityTier`: compared before `total`.
    pub tier: u32,
    /// Weighted age component.
    pub age: f64,
    /// Weighted job-size component.
    pub job_size: f64,
    /// Weighted partition component.
    pub partition: f64,
    /// Weighted fair-share component.
    #[serde(default)]
    pub fairshare: f64,
    /// The nice value subtracted.
    pub nice: i32,
}

/// The cluster-wide numbers factors are normalised by; computed once per pass.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityContext {
    /// CPUs of all nodes (the size factor's denominator).
    pub total_cpus: u64,
    /// The largest partition `PriorityJobFactor`.
    pub max_partition_factor: u32,
    /// Each user's fair-share factor; 1 for a user not there (who has used nothing).
    pub fairshare: BTreeMap<String, f64>,
}

impl PriorityContext {
    /// Normalisers for this cluster.
    pub fn new(cluster: &ClusterView) -> Self {
        Self {
            total_cpus: cluster.nodes.iter().map(|n| u64::from(n.cpus)).sum(),
            max_partition_factor: cluster
                .partitions
                .iter()
                .map(|p| p.priority_factor)
                .max()
                .unwrap_or(0),
            fairshare: crate::fairshare::shares(&cluster.usage, &cluster.shares)
                .into_iter()
                .map(|s| (s.user, s.factor))
                .collect(),
        }
    }

    /// The priority of `job` at `now`; `partition` is the job's, if it exists.
    pub fn priority(
        &self,
        job: &JobView,
        partition: Option<&PartitionView>,
        now: u64,
        config: &Config,
    ) -> Priority {
        // Age counts from submission (Slurm counts from eligibility; the controller can pass
        // the eligible time as the submit time if it wants that).
        let age = if config.max_age == 0 {
            1.0
        } else {
            now.saturating_sub(job.submit_time).min(config.max_age) as f64 / config.max_age as f64
        };
        let share = if self.total_cpus == 0 {
            0.0
        } else {
            (job.request.total_cpus() as f64 / self.total_cpus as f64).min(1.0)
        };
        let size = if config.favor_small {
            1.0 - share
        } else {
            share
        };
        let part = match partition {
            Some(p) if self.max_partition_factor > 0 => {
                f64::from(p.priority_factor) / f64::from(self.max_partition_factor)
            }
            _ => 0.0,
        };
        let age = age * f64::from(config.weight_age);
        let job_size = size * f64::from(config.weight_job_size);
        let partition_c = part * f64::from(config.weight_partition);
        let fairshare = self.fairshare.get(&job.user).copied().unwrap_or(1.0)
            * f64::from(config.weight_fairshare);
        let sum = (age + job_size + partition_c + fairshare).round() as i64 - i64::from(job.nice);
        Priority {
            total: sum.max(0) as u64,
            tier: partition.map_or(0, |p| p.tier),
            age,
            job_size,
            partition: partition_c,
            fairshare,
            nice: job.nice,
        }
    }
}

/// The order jobs are considered in: higher tier, then higher priority, then earlier
/// submission, then lower id (FIFO among equals, deterministic to the last tie).
pub fn compare(a: (&Priority, &JobView), b: (&Priority, &JobView)) -> Ordering {
    let key =
        |(p, j): (&Priority, &JobView)| (Reverse(p.tier), Reverse(p.total), j.submit_time, j.id);
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{cluster, job, node, partition};

    fn prio(c: &ClusterView, j: &JobView, now: u64, cfg: &Config) -> Priority {
        PriorityContext::new(c).priority(j, c.partition(&j.request.partition), now, cfg)
    }

    #[test]
    fn components_are_weighted_and_nice_subtracts() {
        let c = cluster(vec![node("n1", 10, 100)])
            .with(partition("hi", &["n1"]).factor(10))
            .with(partition("lo", &["n1"]).factor(5));
        let cfg = Config {
            weight_age: 100,
            weight_job_size: 10,
            weight_partition: 1000,
            weight_fairshare: 0,
            max_age: 1000,
            ..Config::default()
        };
        let j = job(1).partition("lo").submit(0).cpus(5).nice(7);
        let p = prio(&c, &j, 500, &cfg);
        assert_eq!(p.age, 50.0);
        assert_eq!(p.job_size, 5.0);
        assert_eq!(p.partition, 500.0);
        assert_eq!(p.total, 555 - 7);
        // Age saturates at max_age.
        assert_eq!(prio(&c, &j, 10_000, &cfg).age, 100.0);
        // Favouring small jobs flips the size factor.
        let small = Config {
            favor_small: true,
            ..cfg
        };
        assert_eq!(prio(&c, &j, 500, &small).job_size, 5.0);
        let j1 = job(2).partition("lo").cpus(1);
        assert_eq!(prio(&c, &j1, 0, &small).job_size, 9.0);
        // A large nice floors at zero rather than wrapping.
        assert_eq!(
            prio(&c, &job(3).partition("lo").nice(100_000), 0, &cfg).total,
            0
        );
    }
}
