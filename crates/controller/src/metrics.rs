//! `GET /metrics`: the controller's view of the cluster in Prometheus' text format, for an
//! administrator's Prometheus to scrape (over TCP with a token, as the rest of the API):
//! the jobs by partition, state and waiting reason, each node's state, size, allocation and
//! health (what its agent reported at its last heartbeat), and what this controller counted
//! since it started (submissions, ends by state, scheduling passes and their time).

use crate::Controller;
use berth_api::NodeInfo;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What the controller counts from its start (Prometheus' counters: a restart starts them
/// again, which `rate()` takes in its stride).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Jobs submitted (each of an array's tasks).
    submitted: u64,
    /// Jobs ended, by their final state.
    ended: BTreeMap<&'static str, u64>,
    /// Scheduling passes, and the seconds they took in all.
    passes: u64,
    pass_seconds: f64,
}

impl Counters {
    pub(crate) fn submitted(&mut self, jobs: u64) {
        self.submitted += jobs;
    }

    pub(crate) fn ended(&mut self, state: crate::job::State) {
        *self.ended.entry(state.name()).or_default() += 1;
    }

    pub(crate) fn pass(&mut self, took: std::time::Duration) {
        self.passes += 1;
        self.pass_seconds += took.as_secs_f64();
    }
}

/// A sample's labels: names and values.
type Labels = Vec<(&'static str, String)>;

/// Prometheus' text exposition format (version 0.0.4), written family by family.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    /// A metric family's HELP and TYPE lines, then its samples: each its labels and value.
    fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.0.push_str(name);
            if !labels.is_empty() {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = write!(self.0, "{{{}}}", labels.join(","));
            }
            let _ = writeln!(self.0, " {value}");
        }
    }
}

/// A label's value as the format takes it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A gauge of each node: its name, its help, and its value for a node (none: not known).
type NodeGauge = (&'static str, &'static str, fn(&NodeInfo) -> Option<f64>);

const NODE_GAUGES: [NodeGauge; 10] = [
    ("berth_node_cpus", "CPUs a node offers to jobs.", |n| Some(n.cpus.into())),
    ("berth_node_cpus_allocated", "CPUs of a node allocated to jobs.", |n| {
        Some(n.cpus_allocated.into())
    }),
    ("berth_node_memory_bytes", "Memory a node offers to jobs, in bytes.", |n| {
        Some(n.memory as f64)
    }),
    (
        "berth_node_memory_allocated_bytes",
        "Memory of a node allocated to jobs, in bytes.",
        |n| Some(n.memory_allocated as f64),
    ),
    ("berth_node_gpus", "GPUs a node offers to jobs.", |n| Some(n.gpus.into())),
    (
        "berth_node_load1",
        "A node's load average over 1 minute, as its agent last reported it.",
        NodeInfo::cpu_load,
    ),
    (
        "berth_node_load5",
        "A node's load average over 5 minutes, as its agent last reported it.",
        |n| n.load.as_ref()?.get(1).copied(),
    ),
    (
        "berth_node_load15",
        "A node's load average over 15 minutes, as its agent last reported it.",
        |n| n.load.as_ref()?.get(2).copied(),
    ),
    (
        "berth_node_memory_available_bytes",
        "A node's memory available for new work (MemAvailable), as its agent last reported it, in bytes.",
        |n| n.memory_available.map(|m| m as f64),
    ),
    (
        "berth_node_heartbeat_age_seconds",
        "Seconds since a remote node's agent last reported (its heartbeat).",
        |n| n.heard.map(|s| s as f64),
    ),
];

impl Controller {
    /// The text `GET /metrics` answers.
    pub fn metrics(&self) -> String {
        let mut out = Exposition::default();
        // Unfinished jobs, counted by partition and state, by waiting reason and by user.
        let mut by_state: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let mut waiting: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let mut by_user: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for job in self.active.values() {
            let state = job.state.name();
            *by_state.entry((&job.partition, state)).or_default() += 1;
            *by_user.entry((&job.user, state)).or_default() += 1;
            if job.state == crate::job::State::Pending {
                let reason = match self.lead_of(job) {
                    Some(lead) => &lead.reason,
                    None => job.reason.as_deref().unwrap_or("None"),
                };
                *waiting.entry((&job.partition, reason)).or_default() += 1;
            }
        }
        let counts = |map: BTreeMap<(&str, &str), u64>, a: &'static str, b: &'static str| {
            map.into_iter()
                .map(|((x, y), n)| (vec![(a, x.to_string()), (b, y.to_string())], n as f64))
                .collect::<Vec<_>>()
        };
        let (by_state, waiting, by_user) = (
            counts(by_state, "partition", "state"),
            counts(waiting, "partition", "reason"),
            counts(by_user, "user", "state"),
        );
        out.family(
            "berth_jobs",
            "gauge",
            "Unfinished jobs (pending, running, suspended), by partition and state.",
            by_state,
        );
        out.family(
            "berth_jobs_pending",
            "gauge",
            "Pending jobs, by partition and the reason they wait.",
            waiting,
        );
        out.family(
            "berth_user_jobs",
            "gauge",
            "Unfinished jobs, by user and state.",
            by_user,
        );
        let c = &self.counters;
        out.family(
            "berth_jobs_submitted_total",
            "counter",
            "Jobs submitted since this controller started (each array task counts).",
            [(vec![], c.submitted as f64)],
        );
        out.family(
            "berth_jobs_ended_total",
            "counter",
            "Jobs ended since this controller started, by final state.",
            c.ended
                .iter()
                .map(|(s, n)| (vec![("state", s.to_string())], *n as f64)),
        );
        out.family(
            "berth_scheduler_passes_total",
            "counter",
            "Scheduling passes since this controller started.",
            [(vec![], c.passes as f64)],
        );
        out.family(
            "berth_scheduler_pass_seconds_total",
            "counter",
            "Time spent in scheduling passes since this controller started, in seconds.",
            [(vec![], c.pass_seconds)],
        );
        let licenses = self.licenses();
        let each = |n: fn(&berth_api::LicenseInfo) -> u32| {
            (licenses.iter())
                .map(move |l| (vec![("license", l.name.clone())], f64::from(n(l))))
                .collect::<Vec<_>>()
        };
        out.family(
            "berth_licenses",
            "gauge",
            "The cluster's licenses ([licenses]), by name.",
            each(|l| l.total),
        );
        out.family(
            "berth_licenses_used",
            "gauge",
            "Licenses held by running jobs, by name.",
            each(|l| l.used),
        );
        self.node_metrics(&mut out);
        out.0
    }

    fn node_metrics(&self, out: &mut Exposition) {
        let nodes = self.nodes();
        out.family(
            "berth_node_state",
            "gauge",
            "Each node's state (idle, mixed, allocated, down, draining, drained): 1 for the state it is in.",
            nodes.iter().map(|n| {
                (
                    vec![("node", n.name.clone()), ("state", n.state.clone())],
                    1.0,
                )
            }),
        );
        for (name, help, value) in NODE_GAUGES {
            let samples = nodes
                .iter()
                .filter_map(|n| Some((vec![("node", n.name.clone())], value(n)?)));
            out.family(name, "gauge", help, samples);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Exposition;

    #[test]
    fn families_are_written_in_prometheus_text_format() {
        let mut out = Exposition::default();
        out.family(
            "berth_jobs",
            "gauge",
            "Unfinished jobs.",
            [
                (vec![("partition", "a\"b\\c\nd".to_string())], 2.0),
                (vec![], 0.5),
            ],
        );
        out.family("berth_empty", "counter", "None yet.", []);
        assert_eq!(
            out.0,
            "# HELP berth_jobs Unfinished jobs.\n# TYPE berth_jobs gauge\n\
             berth_jobs{partition=\"a\\\"b\\\\c\\nd\"} 2\nberth_jobs 0.5\n\
             # HELP berth_empty None yet.\n# TYPE berth_empty counter\n"
        );
    }
}
