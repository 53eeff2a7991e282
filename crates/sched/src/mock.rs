//! Fixture builders for tests and benchmarks, in the spirit of Nomad's `mock.Node()` and
//! `mock.Job()`: a plausible default, then one chained call per detail that matters.
//!
//! ```
//! use berth_sched::mock::{cluster, job, node, GIB};
//! let c = cluster(vec![node("n1", 8, 32 * GIB), node("n2", 8, 32 * GIB).gpus(2)]);
//! let j = job(7).cpus(4).mem(8 * GIB).time(3600);
//! assert_eq!(berth_sched::fits_ever(&c, &j.request), Ok(()));
//! ```
//!
//! Owns nothing the scheduler relies on; the builders only fill in the public model types.

use crate::model::{
    AdminState, Allocation, ArrayTask, ClusterView, DepKind, Dependency, JobId, JobRequest,
    JobState, JobView, NodeChoice, NodeView, PartitionView,
};

/// One gibibyte, for memory sizes.
pub const GIB: u64 = 1 << 30;

/// An up node with `cpus` CPUs, `memory` bytes, no GPUs and nothing running.
pub fn node(name: &str, cpus: u32, memory: u64) -> NodeView {
    NodeView {
        name: name.to_owned(),
        state: AdminState::Up,
        cpus,
        memory,
        gpus: 0,
        allocations: Vec::new(),
        features: Vec::new(),
    }
}

impl NodeView {
    /// With these features.
    pub fn features(mut self, features: &[&str]) -> Self {
        self.features = features.iter().map(|f| f.to_string()).collect();
        self
    }

    /// With `n` GPUs.
    pub fn gpus(mut self, n: u32) -> Self {
        self.gpus = n;
        self
    }

    /// Down.
    pub fn down(mut self) -> Self {
        self.state = AdminState::Down;
        self
    }

    /// Drained.
    pub fn drain(mut self) -> Self {
        self.state = AdminState::Drain;
        self
    }

    /// Running `job` on `cpus` CPUs and `memory` bytes until `end`.
    pub fn running(self, job: JobId, cpus: u32, memory: u64, end: u64) -> Self {
        self.alloc(Allocation {
            job,
            cpus,
            memory,
            gpus: 0,
            end,
        })
    }

    /// With this allocation.
    pub fn alloc(mut self, a: Allocation) -> Self {
        self.allocations.push(a);
        self
    }
}

/// A partition named `name` over `nodes`: tier 0, factor 1, no limits, up.
pub fn partition(name: &str, nodes: &[&str]) -> PartitionView {
    PartitionView {
        name: name.to_owned(),
        nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
        tier: 0,
        priority_factor: 1,
        max_time: None,
        default_time: None,
        default: false,
        max_nodes: None,
        down: false,
        max_cpus_per_user: None,
    }
}

impl PartitionView {
    /// `PriorityTier`.
    pub fn tier(mut self, t: u32) -> Self {
        self.tier = t;
        self
    }

    /// `PriorityJobFactor`.
    pub fn factor(mut self, f: u32) -> Self {
        self.priority_factor = f;
        self
    }

    /// `MaxTime`, seconds.
    pub fn max_time(mut self, s: u64) -> Self {
        self.max_time = Some(s);
        self
    }

    /// `DefaultTime`, seconds.
    pub fn default_time(mut self, s: u64) -> Self {
        self.default_time = Some(s);
        self
    }

    /// The most CPUs one user's jobs hold at once.
    pub fn max_cpus_per_user(mut self, n: u64) -> Self {
        self.max_cpus_per_user = Some(n);
        self
    }

    /// `MaxNodes`.
    pub fn max_nodes(mut self, n: u32) -> Self {
        self.max_nodes = Some(n);
        self
    }

    /// `State=DOWN`.
    pub fn down(mut self) -> Self {
        self.down = true;
        self
    }
}

/// A cluster of `nodes` with one default partition, `batch`, holding all of them.
pub fn cluster(nodes: Vec<NodeView>) -> ClusterView {
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let mut batch = partition("batch", &names);
    batch.default = true;
    ClusterView {
        partitions: vec![batch],
        nodes,
        ..ClusterView::default()
    }
}

impl ClusterView {
    /// With another partition.
    pub fn with(mut self, p: PartitionView) -> Self {
        self.partitions.push(p);
        self
    }

    /// Remembering that finished job `id` ended in `state`.
    pub fn finished(mut self, id: JobId, state: JobState) -> Self {
        self.history.insert(id, state);
        self
    }

    /// With an administrator's reservation of `nodes` from `start` to `end`.
    pub fn reserved(mut self, name: &str, nodes: &[&str], start: u64, end: u64) -> Self {
        self.reservations.push(crate::model::ReservationView {
            name: name.to_owned(),
            start,
            end,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        });
        self
    }
}

/// A pending job of user `user` named `job` in `batch`, submitted at 0: one node, one task,
/// one CPU, no memory, GPUs or time limit.
pub fn job(id: JobId) -> JobView {
    JobView {
        id,
        name: "job".to_owned(),
        user: "user".to_owned(),
        state: JobState::Pending,
        submit_time: 0,
        request: JobRequest {
            partition: "batch".to_owned(),
            ..JobRequest::default()
        },
        nice: 0,
        held: false,
        begin: None,
        dependencies: Vec::new(),
        dependencies_any: false,
        dependency_condition: None,
        singleton: false,
        array: None,
        reservation: None,
        deadline: None,
    }
}

impl JobView {
    /// `--reservation`.
    pub fn reservation(mut self, name: &str) -> Self {
        self.reservation = Some(name.to_owned());
        self
    }

    /// `-c`: CPUs per task.
    pub fn cpus(mut self, n: u32) -> Self {
        self.request.cpus_per_task = n;
        self
    }

    /// `-n`: tasks.
    pub fn tasks(mut self, n: u32) -> Self {
        self.request.tasks = Some(n);
        self
    }

    /// `--ntasks-per-node`.
    pub fn per_node(mut self, n: u32) -> Self {
        self.request.tasks_per_node = Some(n);
        self
    }

    /// `-N n`.
    pub fn nodes(self, n: u32) -> Self {
        self.nodes_range(n, n)
    }

    /// `-N min-max`.
    pub fn nodes_range(mut self, min: u32, max: u32) -> Self {
        self.request.nodes_min = min;
        self.request.nodes_max = max;
        self
    }

    /// `--mem`, bytes.
    pub fn mem(mut self, bytes: u64) -> Self {
        self.request.memory_per_node = bytes;
        self
    }

    /// `--mem=0`: all of each node's memory.
    pub fn whole_memory(mut self) -> Self {
        self.request.whole_memory = true;
        self
    }

    /// `--gpus-per-node`.
    pub fn gpus(mut self, n: u32) -> Self {
        self.request.gpus_per_node = n;
        self
    }

    /// `-t`, seconds.
    pub fn time(mut self, s: u64) -> Self {
        self.request.time_limit = Some(s);
        self
    }

    fn choice(&mut self) -> &mut NodeChoice {
        self.request.choice.get_or_insert_with(Default::default)
    }

    /// `--constraint`: any of these feature sets, each in full.
    pub fn constraint(mut self, any: &[&[&str]]) -> Self {
        self.choice().features = any
            .iter()
            .map(|all| all.iter().map(|f| f.to_string()).collect())
            .collect();
        self
    }

    /// `--nodelist`.
    pub fn nodelist(mut self, nodes: &[&str]) -> Self {
        self.choice().required = nodes.iter().map(|n| n.to_string()).collect();
        self
    }

    /// bsub `-m`: the only nodes it may have.
    pub fn candidates(mut self, nodes: &[&str]) -> Self {
        self.choice().candidates = nodes.iter().map(|n| n.to_string()).collect();
        self
    }

    /// bsub `-m HOST+N`: nodes it prefers, with how much.
    pub fn preferred(mut self, nodes: &[(&str, u32)]) -> Self {
        self.choice().preferred = nodes.iter().map(|&(n, l)| (n.to_string(), l)).collect();
        self
    }

    /// `--exclude`.
    pub fn exclude(mut self, nodes: &[&str]) -> Self {
        self.choice().excluded = nodes.iter().map(|n| n.to_string()).collect();
        self
    }

    /// `--exclusive`.
    pub fn exclusive(mut self) -> Self {
        self.request.exclusive = true;
        self
    }

    /// `-O`: one task's CPUs on each node.
    pub fn overcommit(mut self) -> Self {
        self.request.overcommit = true;
        self
    }

    /// `-p`.
    pub fn partition(mut self, p: &str) -> Self {
        self.request.partition = p.to_owned();
        self
    }

    /// Owner.
    pub fn user(mut self, u: &str) -> Self {
        self.user = u.to_owned();
        self
    }

    /// `--job-name`.
    pub fn name(mut self, n: &str) -> Self {
        self.name = n.to_owned();
        self
    }

    /// Submitted at `t`.
    pub fn submit(mut self, t: u64) -> Self {
        self.submit_time = t;
        self
    }

    /// `--nice`.
    pub fn nice(mut self, n: i32) -> Self {
        self.nice = n;
        self
    }

    /// Held.
    pub fn held(mut self) -> Self {
        self.held = true;
        self
    }

    /// `--deadline`, seconds.
    pub fn deadline(mut self, t: u64) -> Self {
        self.deadline = Some(t);
        self
    }

    /// A dependency term.
    pub fn dep(mut self, kind: DepKind, job: JobId) -> Self {
        let term = self.dependencies.len() as u32;
        self.dependencies.push(Dependency {
            delay: 0,
            any_failed: false,
            kind,
            job,
            term,
            exit: None,
        });
        self
    }

    /// Any one of its dependency terms is enough (`?`).
    pub fn any_dependency(mut self) -> Self {
        self.dependencies_any = true;
        self
    }

    /// `--dependency=singleton`.
    pub fn singleton(mut self) -> Self {
        self.singleton = true;
        self
    }

    /// Task `index` of array `master`, `%limit`.
    pub fn array(mut self, master: JobId, index: u32, limit: Option<u32>) -> Self {
        self.array = Some(ArrayTask {
            master,
            index,
            limit,
        });
        self
    }

    /// `-L NAME:N`.
    pub fn license(mut self, name: &str, n: u32) -> Self {
        self.request.licenses.push((name.to_owned(), n));
        self
    }

    /// Running rather than pending.
    pub fn running(mut self) -> Self {
        self.state = JobState::Running;
        self
    }

    /// In that state.
    pub fn state(mut self, s: JobState) -> Self {
        self.state = s;
        self
    }
}
