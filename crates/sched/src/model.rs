//! The scheduler's input: a read-only view of the cluster (nodes, partitions, the states of
//! finished jobs) and of the jobs (pending and running), as the controller hands them over.
//!
//! Owns: the shape of that view and the small derivations on it (a node's derived state, a
//! request's per-node layout). Must not: validate against policy (that is `feasible`), or hold
//! anything mutable; the pass copies what it needs into its own working state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A job's id, as the controller numbers them (Slurm's job id).
pub type JobId = u64;

/// What an administrator (or the node agent's health) says about a node. The rest of a node's
/// state (idle, mixed, allocated) is derived from its allocations: see [`node_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdminState {
    /// Schedulable.
    Up,
    /// Not responding or taken out of service: nothing runs there and nothing is planned there.
    Down,
    /// No new jobs; running ones finish (`scontrol update state=drain`).
    Drain,
}

/// A node's state as `sinfo` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Up, nothing allocated.
    Idle,
    /// Up, some but not all CPUs allocated.
    Mixed,
    /// Up, every CPU allocated.
    Allocated,
    /// Down.
    Down,
    /// Draining: no new jobs, jobs still running (Slurm's `drng`).
    Draining,
    /// Drained: no new jobs and none left running (Slurm's `drain`).
    Drained,
}

/// Resources one running job holds on one node, and when it is expected to release them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The running job.
    pub job: JobId,
    /// CPUs held.
    pub cpus: u32,
    /// Memory held, bytes.
    pub memory: u64,
    /// GPUs held.
    pub gpus: u32,
    /// Expected end: the job's start plus its time limit. Backfill plans with it; a job that
    /// has run past it is planned as ending in the next second (Slurm's backfill does the same:
    /// an overrunning job is about to be killed).
    pub end: u64,
}

/// One compute node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Unique name; ties between equally good nodes are broken by it.
    pub name: String,
    /// What the administrator says.
    pub state: AdminState,
    /// Total CPUs.
    pub cpus: u32,
    /// Total memory, bytes.
    pub memory: u64,
    /// Total GPUs (a count; GPU types are not modelled yet).
    pub gpus: u32,
    /// What running jobs hold on it.
    pub allocations: Vec<Allocation>,
    /// What the administrator says it has (Slurm's node `Features`), for `--constraint`.
    #[serde(default)]
    pub features: Vec<String>,
}

/// A job's say in which nodes of its partition it gets (sbatch `--constraint`,
/// `--nodelist`, `--exclude`). Empty: any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeChoice {
    /// Each node must have every feature of one of these sets (`a&b|c`: `[[a, b], [c]]`;
    /// nodes may differ in which); empty: no constraint.
    #[serde(default)]
    pub features: Vec<Vec<String>>,
    /// Nodes the job must have, every one of them.
    #[serde(default)]
    pub required: Vec<String>,
    /// Nodes it must not have.
    #[serde(default)]
    pub excluded: Vec<String>,
    /// The only nodes it may have (any of them); empty: any.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Nodes it prefers, with how much (bsub `-m HOST+N`): of the nodes that fit, the most
    /// preferred are taken first, best fit among equals.
    #[serde(default)]
    pub preferred: Vec<(String, u32)>,
}

impl NodeChoice {
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
            && self.required.is_empty()
            && self.excluded.is_empty()
            && self.candidates.is_empty()
            && self.preferred.is_empty()
    }

    /// Whether `node` may be one of the job's, by its features, the exclusions and the
    /// candidates (required nodes are counted by the caller).
    pub fn allows(&self, node: &NodeView) -> bool {
        let has = |f: &String| node.features.contains(f);
        !self.excluded.contains(&node.name)
            && (self.candidates.is_empty() || self.candidates.contains(&node.name))
            && (self.features.is_empty() || self.features.iter().any(|all| all.iter().all(has)))
    }
}

/// One partition (queue). Membership is declared here, as in `slurm.conf`'s
/// `PartitionName=... Nodes=...`; a node may belong to several partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionView {
    /// Unique name.
    pub name: String,
    /// Member node names; unknown names are ignored.
    pub nodes: Vec<String>,
    /// Slurm's `PriorityTier`: jobs of a higher tier are considered first, whatever their
    /// priority.
    pub tier: u32,
    /// Slurm's `PriorityJobFactor`: feeds the partition component of the priority,
    /// normalised by the largest factor of any partition.
    pub priority_factor: u32,
    /// `MaxTime`, seconds; `None` is unlimited.
    pub max_time: Option<u64>,
    /// `DefaultTime`, seconds, for jobs that ask for none; `None` falls back to `max_time`.
    pub default_time: Option<u64>,
    /// `Default=YES`: where jobs that name no partition go (see [`ClusterView::default_partition`]).
    pub default: bool,
    /// `MaxNodes`: the most nodes one job may ask for.
    pub max_nodes: Option<u32>,
    /// `State=DOWN`: jobs may queue but none start.
    pub down: bool,
    /// The most CPUs one user's running jobs of the partition hold at once (a QOS's
    /// `MaxTRESPerUser=cpu=N`): a job that would pass it waits as `QOSMaxCpuPerUserLimit`,
    /// holding nothing back.
    #[serde(default)]
    pub max_cpus_per_user: Option<u64>,
}

/// What the scheduler may read about the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Every node.
    pub nodes: Vec<NodeView>,
    /// Every partition.
    pub partitions: Vec<PartitionView>,
    /// States of jobs that dependencies refer to and that the job list does not hold
    /// (finished ones, and those waiting that a pass is not given: an array's tasks beyond
    /// those it looks at). Jobs in the list passed to [`crate::schedule`] take precedence.
    pub history: BTreeMap<JobId, JobState>,
    /// When each job that dependencies refer to began to count for a delayed `after`
    /// ([`Dependency::delay`]): its start, or its end where it ended without one.
    #[serde(default)]
    pub since: BTreeMap<JobId, u64>,
    /// Each user's recent usage, CPU-seconds decayed with the controller's half-life, for
    /// the fair-share factor ([`crate::fairshare`]).
    #[serde(default)]
    pub usage: BTreeMap<String, u64>,
    /// Users' configured shares (RawShares); a user not named has 1.
    #[serde(default)]
    pub shares: BTreeMap<String, u32>,
    /// Administrators' reservations of nodes (Slurm's `scontrol create reservation`).
    #[serde(default)]
    pub reservations: Vec<ReservationView>,
    /// The cluster's licenses, how many of each (Slurm's Licenses=); running jobs hold
    /// those they asked for ([`JobRequest::licenses`]).
    #[serde(default)]
    pub licenses: BTreeMap<String, u32>,
}

/// Nodes kept from `start` to `end` for the jobs that name the reservation: any other job
/// there must end before it starts (a maintenance window, a course's machines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationView {
    pub name: String,
    pub start: u64,
    pub end: u64,
    pub nodes: Vec<String>,
}

impl ClusterView {
    /// The partition jobs go to when they name none: the first marked default, else the
    /// first partition (Slurm picks the first `Default=YES` one).
    pub fn default_partition(&self) -> Option<&PartitionView> {
        self.partitions
            .iter()
            .find(|p| p.default)
            .or_else(|| self.partitions.first())
    }

    /// The partition of that name.
    pub fn partition(&self, name: &str) -> Option<&PartitionView> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// A job's life cycle, as far as the scheduler cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting to start.
    Pending,
    /// Started, not finished.
    Running,
    /// Finished with exit status 0.
    Completed,
    /// Finished otherwise: non-zero exit, signal, time limit, out of memory, node failure.
    Failed,
    /// [`JobState::Failed`] with the exit status it ended with (LSF's `exit(42, > 1)` asks
    /// about it).
    Exited(i32),
    /// Cancelled by a user or administrator (whether or not it had started).
    Cancelled,
}

impl JobState {
    /// A failure with the exit status `code` the job ended with, where it has one.
    pub fn with_exit_code(self, code: Option<i32>) -> JobState {
        match (self, code) {
            (JobState::Failed, Some(code)) => JobState::Exited(code),
            (state, _) => state,
        }
    }

    /// Whether the job has terminated, one way or another.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Exited(_) | Self::Cancelled
        )
    }
}

/// The kinds of `--dependency`, with Slurm's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DepKind {
    /// `after`: the other job has started (or was cancelled).
    After,
    /// `afterany`: the other job has terminated, however.
    AfterAny,
    /// `afterok`: the other job completed successfully.
    AfterOk,
    /// `afternotok`: the other job terminated unsuccessfully (failed or cancelled).
    AfterNotOk,
}

/// How a job's dependency terms combine where it is more than all of them or any one:
/// LSF's expressions with parentheses, a mix of `&&` and `||`, or `!`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Condition {
    /// The term with this number ([`Dependency::term`]); one the job has none of holds.
    Term(u32),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    /// Holds while the condition does not (LSF's `!`, over the jobs as they are now): for
    /// good where the condition's standing is settled (see `deps::Truth`).
    Not(Box<Condition>),
    /// How many of the term's jobs (an array's elements) are in some state, compared
    /// (LSF's `numdone(42, >= 5)`).
    Count(u32, Count),
}

impl Condition {
    /// Whether it can hold only once its terms do (no `!`, no count): while one waits, so
    /// does it.
    pub fn needs_its_terms(&self) -> bool {
        match self {
            Condition::Term(_) => true,
            Condition::All(cs) | Condition::Any(cs) => cs.iter().all(Condition::needs_its_terms),
            Condition::Not(_) | Condition::Count(..) => false,
        }
    }
}

/// LSF's count of an array's elements: `numdone(42, >= 5)`, `numended(42, == *)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Count {
    pub of: Counted,
    pub op: CountOp,
    /// The number compared with; `None`: all of the term's jobs (LSF's `*`).
    pub n: Option<u32>,
}

/// Which elements a [`Count`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Counted {
    /// Completed with exit code 0 (LSF's DONE).
    Done,
    /// Ended otherwise (LSF's EXIT).
    Exit,
    /// Ended, however (DONE and EXIT).
    Ended,
    /// Running, suspended or not (LSF's RUN, SSUSP and USUSP: `numstart`).
    Started,
    /// Running (LSF's `numrun`: RUN; a suspended element counts too, as the scheduler
    /// sees it running).
    Running,
    /// Waiting to start (LSF's `numpend`: PEND and PSUSP).
    Pending,
}

/// A [`Count`]'s comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CountOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CountOp {
    pub fn holds<T: Ord>(self, value: T, n: T) -> bool {
        match self {
            CountOp::Eq => value == n,
            CountOp::Ne => value != n,
            CountOp::Lt => value < n,
            CountOp::Le => value <= n,
            CountOp::Gt => value > n,
            CountOp::Ge => value >= n,
        }
    }
}

/// One `KIND:JOBID` of a dependency: a job's are all required (Slurm's `,`), or any one
/// term of them ([`JobView::dependencies_any`], Slurm's `?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dependency {
    /// What must happen to the other job.
    pub kind: DepKind,
    /// The other job.
    pub job: JobId,
    /// The term it belongs to: the dependencies of one term (an array's tasks, where the
    /// dependency names a whole array) are consecutive and all required for it.
    #[serde(default)]
    pub term: u32,
    /// With [`DepKind::AfterNotOk`]: the exit status it must have ended with, compared
    /// (LSF's `exit(42, > 1)`, `exit(42, 3)`); `None`: any failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitTest>,
    /// With [`DepKind::After`]: seconds to wait once the other job started, or was
    /// cancelled (Slurm's `after:42+5`, in minutes there); see [`ClusterView::since`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay: u64,
    /// Its term (an array's tasks, all with this set) holds once they have all ended and
    /// any one failed, instead of each failing (Slurm's afternotok on a whole array).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_failed: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A comparison of a job's exit status: LSF's `exit(42, OP CODE)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitTest {
    pub op: CountOp,
    pub code: i32,
}

impl ExitTest {
    /// Whether a job that ended with status `code` passes.
    pub fn holds(self, code: i32) -> bool {
        self.op.holds(code, self.code)
    }
}

/// A job's place in an array (`--array=0-99%8`): tasks are separate jobs sharing a master id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArrayTask {
    /// The array's job id (Slurm's `ArrayJobId`).
    pub master: JobId,
    /// This task's index (`ArrayTaskId`).
    pub index: u32,
    /// `%N`: at most N tasks of this array run at once.
    pub limit: Option<u32>,
}

/// What a job asks for (`sbatch -p -N -n --ntasks-per-node -c --mem --gpus-per-node -t
/// --exclusive`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobRequest {
    /// The partition (already defaulted by the controller).
    pub partition: String,
    /// `-N min-max`: fewest nodes.
    pub nodes_min: u32,
    /// `-N min-max`: most nodes; the pass gives up to this many when they are free.
    pub nodes_max: u32,
    /// `-n`: total tasks, spread over the nodes as evenly as possible (block distribution:
    /// the first nodes get one more). `None`: one task per node.
    pub tasks: Option<u32>,
    /// `--ntasks-per-node`: with `tasks`, the most on any node (as sbatch's `-n` wins over
    /// it, and LSF's `span[ptile=P]` spreads `-n` slots P to a host); without, each node's.
    pub tasks_per_node: Option<u32>,
    /// `-c`: CPUs per task.
    pub cpus_per_task: u32,
    /// `--mem`: memory per node, bytes (0: none asked for; the controller applies defaults).
    pub memory_per_node: u64,
    /// `--gpus-per-node`.
    pub gpus_per_node: u32,
    /// `-t`, seconds; `None`: the partition's default, else its maximum, else
    /// [`crate::Config::unlimited_time`] for planning.
    pub time_limit: Option<u64>,
    /// `-t UNLIMITED`: without a limit of its own, the partition's maximum, never its default.
    #[serde(default)]
    pub no_time_limit: bool,
    /// `--exclusive`: whole nodes, shared with no other job.
    pub exclusive: bool,
    /// `--mem=0`: all of each node's memory (`memory_per_node` is then 0).
    #[serde(default)]
    pub whole_memory: bool,
    /// `-O`: one task's CPUs on each node, whatever its tasks there.
    #[serde(default)]
    pub overcommit: bool,
    /// `--mincpus`: at least this many CPUs on each node (0: none asked for).
    #[serde(default)]
    pub min_cpus: u32,
    /// `--constraint`, `--nodelist`, `--exclude`; boxed, so that the jobs without one (most)
    /// stay small: a pass walks them all.
    #[serde(default)]
    pub choice: Option<Box<NodeChoice>>,
    /// `-L`: licenses of the cluster's it holds while it runs, how many of each.
    #[serde(default)]
    pub licenses: Vec<(String, u32)>,
}

impl Default for JobRequest {
    fn default() -> Self {
        Self {
            partition: String::new(),
            nodes_min: 1,
            nodes_max: 1,
            tasks: None,
            tasks_per_node: None,
            cpus_per_task: 1,
            memory_per_node: 0,
            gpus_per_node: 0,
            time_limit: None,
            no_time_limit: false,
            exclusive: false,
            whole_memory: false,
            overcommit: false,
            min_cpus: 0,
            choice: None,
            licenses: Vec::new(),
        }
    }
}

impl JobRequest {
    /// Tasks on each of `k` nodes: `(most, how_many_get_most)`. With `tasks`, `q = tasks /
    /// k` each and the first `tasks % k` nodes one more (Slurm's block distribution;
    /// `tasks_per_node` bounds `k` from below, see [`crate::feasible::Shape`]); without,
    /// `tasks_per_node` on every node, or one.
    pub fn layout(&self, k: u32) -> (u32, u32) {
        let k = k.max(1);
        match (self.tasks_per_node, self.tasks) {
            (_, Some(n)) if n % k == 0 => (n / k, k),
            (_, Some(n)) => (n / k + 1, n % k),
            (Some(t), None) => (t, k),
            (None, None) => (1, k),
        }
    }

    /// Tasks on the `i`-th of `k` nodes, following [`Self::layout`].
    pub fn tasks_on(&self, k: u32, i: u32) -> u32 {
        let (most, first) = self.layout(k);
        if i < first {
            most
        } else {
            most.saturating_sub(1)
        }
    }

    /// CPUs the job holds on its fewest nodes (for the job-size priority factor).
    pub fn total_cpus(&self) -> u64 {
        let k = self.nodes_min.max(1);
        (0..k).map(|i| self.cpus_for(self.tasks_on(k, i))).sum()
    }

    /// CPUs a node running `tasks` of the job's tasks gives it: one task's overcommitted,
    /// and at least `min_cpus`.
    pub fn cpus_for(&self, tasks: u32) -> u64 {
        let tasks = match self.overcommit {
            true => 1,
            false => tasks,
        };
        (u64::from(tasks) * u64::from(self.cpus_per_task)).max(u64::from(self.min_cpus))
    }
}

/// One job as the scheduler sees it: pending ones are scheduled, the others are read for
/// dependencies, singletons and array limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    /// Id.
    pub id: JobId,
    /// `--job-name` (singleton dependencies are per user and name).
    pub name: String,
    /// Owner.
    pub user: String,
    /// Where it is in its life.
    pub state: JobState,
    /// Submission time, seconds.
    pub submit_time: u64,
    /// What it asks for.
    pub request: JobRequest,
    /// `--nice`: subtracted from the priority (negative values, administrators only, add).
    pub nice: i32,
    /// `scontrol hold`: never started until released.
    pub held: bool,
    /// `--begin`: not started before this time, seconds.
    pub begin: Option<u64>,
    /// `--dependency` terms, all required unless `dependencies_any`.
    pub dependencies: Vec<Dependency>,
    /// Any one term of `dependencies` is enough (Slurm's `?`, LSF's `||`).
    #[serde(default)]
    pub dependencies_any: bool,
    /// How the terms combine instead, where it is more than all or any one.
    #[serde(default)]
    pub dependency_condition: Option<Condition>,
    /// `--dependency=singleton`: not while another job of the same user and name runs.
    pub singleton: bool,
    /// Its place in an array, if any.
    pub array: Option<ArrayTask>,
    /// The reservation it runs in (`--reservation`): only on its nodes, from its start.
    #[serde(default)]
    pub reservation: Option<String>,
    /// `--deadline`: it must end by then, seconds; once it could not (now plus its time
    /// limit is later), it is not started, and the controller ends it (DEADLINE).
    #[serde(default)]
    pub deadline: Option<u64>,
}

/// A node's derived state: the administrator's word first, then how much of it is allocated
/// (Slurm calls a node whose CPUs are partly allocated MIXED).
pub fn node_state(node: &NodeView) -> NodeState {
    let used: u64 = node.allocations.iter().map(|a| u64::from(a.cpus)).sum();
    match node.state {
        AdminState::Down => NodeState::Down,
        AdminState::Drain if node.allocations.is_empty() => NodeState::Drained,
        AdminState::Drain => NodeState::Draining,
        AdminState::Up if node.allocations.is_empty() => NodeState::Idle,
        AdminState::Up if used >= u64::from(node.cpus) => NodeState::Allocated,
        AdminState::Up => NodeState::Mixed,
    }
}

/// An amount of the three schedulable resources; all `u64` so sums never overflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Res {
    pub cpus: u64,
    pub mem: u64,
    pub gpus: u64,
}

impl Res {
    pub fn new(cpus: u32, mem: u64, gpus: u32) -> Self {
        Self {
            cpus: u64::from(cpus),
            mem,
            gpus: u64::from(gpus),
        }
    }

    /// Whether `self` holds at least `need` of every resource.
    pub fn covers(&self, need: &Res) -> bool {
        self.cpus >= need.cpus && self.mem >= need.mem && self.gpus >= need.gpus
    }

    pub fn add(&self, o: &Res) -> Res {
        Res {
            cpus: self.cpus.saturating_add(o.cpus),
            mem: self.mem.saturating_add(o.mem),
            gpus: self.gpus.saturating_add(o.gpus),
        }
    }

    /// `self - o`, floored at zero per resource.
    pub fn sub(&self, o: &Res) -> Res {
        Res {
            cpus: self.cpus.saturating_sub(o.cpus),
            mem: self.mem.saturating_sub(o.mem),
            gpus: self.gpus.saturating_sub(o.gpus),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{job, node};

    #[test]
    fn layout_spreads_tasks_block_wise() {
        let r = job(1).tasks(5).nodes(2).request;
        assert_eq!(r.layout(2), (3, 1));
        assert_eq!((r.tasks_on(2, 0), r.tasks_on(2, 1)), (3, 2));
        let r = job(1).tasks(4).nodes(2).request;
        assert_eq!((r.tasks_on(2, 0), r.tasks_on(2, 1)), (2, 2));
        let r = job(1).per_node(3).nodes(2).request;
        assert_eq!(r.layout(2), (3, 2));
        // With a task count, the most per node: the tasks spread as without it.
        let r = job(1).tasks(3).per_node(2).nodes(2).request;
        assert_eq!((r.tasks_on(2, 0), r.tasks_on(2, 1)), (2, 1));
        assert_eq!(job(1).tasks(1).per_node(2).request.total_cpus(), 1);
        assert_eq!(job(1).nodes(3).request.layout(3), (1, 3));
        assert_eq!(job(1).tasks(5).nodes(2).cpus(2).request.total_cpus(), 10);
    }

    #[test]
    fn node_states_are_derived_from_admin_state_and_allocations() {
        assert_eq!(node_state(&node("n", 4, 8)), NodeState::Idle);
        assert_eq!(
            node_state(&node("n", 4, 8).running(1, 2, 0, 100)),
            NodeState::Mixed
        );
        assert_eq!(
            node_state(&node("n", 4, 8).running(1, 4, 0, 100)),
            NodeState::Allocated
        );
        assert_eq!(node_state(&node("n", 4, 8).down()), NodeState::Down);
        assert_eq!(node_state(&node("n", 4, 8).drain()), NodeState::Drained);
        assert_eq!(
            node_state(&node("n", 4, 8).drain().running(1, 1, 0, 100)),
            NodeState::Draining
        );
    }
}
