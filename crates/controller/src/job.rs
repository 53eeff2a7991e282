//! A job as the controller keeps it: the validated request plus everything that happens to
//! it. Persisted as a JSON document in the store; `berth queue/show/history` see its
//! [`JobInfo`] view.

use berth_api::JobInfo;
use berth_core::job::{DependencyKind, JobRequest};
use serde::{Deserialize, Serialize};

/// What an array's tasks have alike and in bulk, their script, their submitter's
/// environment and their request: one copy in memory for all of them, and in the store only
/// in the record of the array's first task (the others' records leave it out: `elsewhere`;
/// they get it back from that one when read, [`Job::share_with`]). So that a 100,000-task
/// array is not 100,000 copies of an environment and of a request. A task whose copy
/// changes ([`Part::make_mut`]) gets its own, kept in its own record from then on.
#[derive(Debug, Clone)]
pub struct Part<T> {
    value: std::sync::Arc<T>,
    elsewhere: bool,
}

impl<T: Default> Default for Part<T> {
    /// What a record that leaves the value out reads as: kept elsewhere, to be filled in
    /// ([`Job::share_with`]).
    fn default() -> Part<T> {
        Part {
            value: Default::default(),
            elsewhere: true,
        }
    }
}

impl<T> Part<T> {
    pub fn new(value: T) -> Part<T> {
        Part {
            value: std::sync::Arc::new(value),
            elsewhere: false,
        }
    }

    /// The same value, kept in another job's record.
    pub fn kept_elsewhere(&self) -> Part<T> {
        Part {
            value: self.value.clone(),
            elsewhere: true,
        }
    }

    /// The value to change: this holder's own from now on (copied if shared), kept in its
    /// own record.
    pub fn make_mut(&mut self) -> &mut T
    where
        T: Clone,
    {
        self.elsewhere = false;
        std::sync::Arc::make_mut(&mut self.value)
    }

    /// Whether `other` is this very copy.
    pub fn same(&self, other: &Part<T>) -> bool {
        std::sync::Arc::ptr_eq(&self.value, &other.value)
    }

    fn elsewhere(&self) -> bool {
        self.elsewhere
    }
}

impl<T> std::ops::Deref for Part<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Equal values, the very copy first (an array's tasks that share theirs).
impl<T: PartialEq> PartialEq for Part<T> {
    fn eq(&self, other: &Part<T>) -> bool {
        self.same(other) || *self.value == *other.value
    }
}

impl<T: Serialize> Serialize for Part<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Part<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Part::new)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Pending,
    Running,
    /// Running, but frozen by `berth suspend`.
    Suspended,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    OutOfMemory,
    NodeFail,
    /// It could no longer end by its `--deadline`, so it was never started.
    Deadline,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Running => "RUNNING",
            State::Suspended => "SUSPENDED",
            State::Completed => "COMPLETED",
            State::Failed => "FAILED",
            State::Cancelled => "CANCELLED",
            State::Timeout => "TIMEOUT",
            State::OutOfMemory => "OUT_OF_MEMORY",
            State::NodeFail => "NODE_FAIL",
            State::Deadline => "DEADLINE",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, State::Pending | State::Running | State::Suspended)
    }

    /// The state [`State::name`] calls `name` (`RUNNING`): its serialised name.
    pub fn named(name: &str) -> Option<State> {
        use serde::de::{value::Error, IntoDeserializer};
        State::deserialize(IntoDeserializer::<Error>::into_deserializer(name)).ok()
    }

    /// The scheduler's coarser view (dependencies only care whether it succeeded).
    pub fn for_scheduler(self) -> berth_sched::JobState {
        match self {
            State::Pending => berth_sched::JobState::Pending,
            State::Running | State::Suspended => berth_sched::JobState::Running,
            State::Completed => berth_sched::JobState::Completed,
            State::Cancelled => berth_sched::JobState::Cancelled,
            _ => berth_sched::JobState::Failed,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub array_job_id: Option<u64>,
    pub array_task_id: Option<u32>,
    pub user: String,
    pub uid: u32,
    pub partition: String,
    /// Shared by an array's tasks until one's changes (see [`Part`]).
    #[serde(default, skip_serializing_if = "Part::elsewhere")]
    pub request: Part<JobRequest>,
    /// In an array's first task's record: the request its tasks share, where the first
    /// task's own has changed since (`berth update`); else its own is theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_request: Option<Part<JobRequest>>,
    /// The time limit it started under where it named none: its partition's then
    /// (DefaultTime, else MaxTime), as in Slurm. See [`Job::time_limit`].
    #[serde(default)]
    pub default_limit: Option<u64>,
    /// The jobs it waits for, resolved at submission, as ranges of ids (an array's tasks
    /// have consecutive ids): an array job named whole stands for all of its tasks, `42_7`
    /// for that task, `aftercorr` for the task with this one's index (as `afterok`). Empty
    /// in records from before: the request's ids then.
    #[serde(default)]
    pub depends_on: Vec<(DependencyKind, u64, u64)>,
    /// Shared by an array's tasks (see [`Part`]).
    #[serde(default, skip_serializing_if = "Part::elsewhere")]
    pub script: Part<String>,
    /// The script's arguments ($1, $2, ...).
    #[serde(default)]
    pub script_args: Vec<String>,
    /// The script's file, where it came from one (scontrol's Command=).
    #[serde(default)]
    pub script_path: Option<String>,
    pub workdir: String,
    #[serde(default, skip_serializing_if = "Part::elsewhere")]
    pub submit_env: Part<Vec<(String, String)>>,
    /// The machine it was submitted from (empty in records from before).
    #[serde(default)]
    pub submit_host: String,
    /// The directory it was submitted from (`None` in records from before 2026-12-06: its
    /// working directory, which it was unless `--chdir` said otherwise).
    #[serde(default)]
    pub submit_dir: Option<String>,
    /// Its submitter's file creation mask ([`berth_api::SubmitRequest::umask`]).
    #[serde(default)]
    pub umask: Option<u32>,
    /// `None`: a job on the host (where the configuration allows it).
    pub image: Option<String>,
    pub image_squashfs: Option<String>,
    pub image_env: Vec<String>,
    /// What the script runs through: the image's ENTRYPOINT (`--container-entrypoint`),
    /// and berth's `shifter` for a script whose `#!` line names Shifter's; empty: the
    /// script runs by itself.
    #[serde(default)]
    pub image_entrypoint: Vec<String>,
    pub state: State,
    pub reason: Option<String>,
    /// Held: by its owner, or an administrator, or both (see [`Job::holds`]).
    pub held: bool,
    /// Held by root (Slurm's JobHeldAdmin): only root releases it.
    #[serde(default)]
    pub admin_hold: bool,
    /// Held by its owner (JobHeldUser), which they may release, also under root's hold
    /// (PBS's `u` and `o` holds, lifted one at a time).
    #[serde(default)]
    pub owner_hold: bool,
    /// Suspended by root: only root resumes it.
    #[serde(default)]
    pub admin_suspend: bool,
    pub submit_time: u64,
    /// `--begin`, resolved at submission: not started before.
    #[serde(default)]
    pub begin_time: Option<u64>,
    /// `--deadline`, resolved at submission: ended, not started, once it could not end by
    /// then.
    #[serde(default)]
    pub deadline: Option<u64>,
    pub start_time: Option<u64>,
    pub end_time: Option<u64>,
    /// Where it runs, one share per node; the first node is the batch host, where the
    /// script runs (the others hold the job's containers for its steps).
    #[serde(default)]
    pub shares: Vec<Share>,
    /// CPUs allocated on all its nodes together.
    pub cpus: u64,
    /// Memory allocated on each node.
    pub memory: Option<u64>,
    /// GPUs allocated on each node.
    #[serde(default)]
    pub gpus: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub cpu_usec: Option<u64>,
    #[serde(default)]
    pub user_cpu_usec: Option<u64>,
    #[serde(default)]
    pub system_cpu_usec: Option<u64>,
    pub max_rss_bytes: Option<u64>,
    pub stdout: String,
    pub stderr: Option<String>,
    pub priority: Option<f64>,
    /// The shares of its time limit it was mailed about (`--mail-type=TIME_LIMIT_80`, ...).
    #[serde(default)]
    pub mailed_limits: Vec<u32>,
    /// How the last pass made its priority (not stored: each pass makes it anew).
    #[serde(skip)]
    pub priority_factors: Option<berth_api::PriorityFactors>,
    /// Set by `berth cancel`: when the runner ends, the job is CANCELLED, whatever its status.
    pub cancel_requested: bool,
    /// When this controller last sent its cancel or requeue to its nodes (not kept: a
    /// restarted controller sends it again at the nodes' next heartbeats).
    #[serde(skip)]
    pub stop_sent: Option<std::time::Instant>,
    /// Who cancelled it (sacct's `CANCELLED by UID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<u32>,
    /// Held once queued again (`berth requeue --hold`, scontrol requeuehold): whether by an
    /// administrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeue_held: Option<bool>,
    /// Set by `berth requeue` on a running job: when the runner ends, it is pending again.
    #[serde(default)]
    pub requeue_requested: bool,
    /// How many times the job was requeued (Slurm's Restarts).
    #[serde(default)]
    pub restarts: u32,
    /// Its steps (`berth step`), numbered from 0 in the order they started.
    #[serde(default)]
    pub steps: Vec<berth_api::StepInfo>,
    /// Its runs before it was requeued, oldest first (sacct -D).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_runs: Vec<berth_api::JobRun>,
    /// Its named containers (`srun --container-name`), each with the image it was
    /// created of, for the steps that name it again; they end with the run.
    #[serde(default)]
    pub containers: std::collections::BTreeMap<String, String>,
    /// An allocation: a job whose script only holds its nodes ([`crate::HOLD_SCRIPT`]) for
    /// commands from outside it (salloc's; srun's own, which ends with its one step).
    #[serde(default)]
    pub allocation: bool,
    /// The exit status of an allocation's step, once it ended: the job's own.
    #[serde(default)]
    pub allocation_exit: Option<i32>,
    /// Its time suspended (`berth suspend`), and held while pending (LSF's USUSP and PSUSP).
    #[serde(default)]
    pub suspended: Stopwatch,
    #[serde(default)]
    pub held_time: Stopwatch,
    /// While pending: when the scheduler's last pass expects it to start (a backfill
    /// reservation holds its place), and on which nodes. Not kept: the next pass says.
    #[serde(skip)]
    pub expected_start: Option<u64>,
    #[serde(skip)]
    pub planned_nodes: Vec<String>,
}

/// What fair share reads of a stored job: only these fields of its record are decoded (a
/// controller reads every job of weeks past when it starts).
#[derive(Debug, Deserialize)]
pub struct Charged {
    pub user: String,
    cpus: u64,
    start_time: Option<u64>,
    #[serde(default)]
    suspended: Stopwatch,
}

impl Charged {
    /// What it used of the cluster by `end`, for fair share.
    pub fn charge(&self, end: u64) -> f64 {
        charge(self.cpus, self.start_time, &self.suspended, end)
    }
}

/// A job's usage by `end`: its CPUs times the time it ran, suspended time left out (Slurm's
/// fair-share usage is allocated CPU-seconds too); none if it never started.
fn charge(cpus: u64, start: Option<u64>, suspended: &Stopwatch, end: u64) -> f64 {
    let Some(start) = start else {
        return 0.0;
    };
    let ran = end
        .saturating_sub(start)
        .saturating_sub(suspended.read(end));
    cpus as f64 * ran as f64
}

/// Each user's usage by the jobs of theirs that ran (CPUs x run time, CPU-seconds), decayed
/// with `[priority] decay_half_life` as of `at`; running jobs are added as they are read.
#[derive(Default)]
pub struct Usage {
    by_user: std::collections::BTreeMap<String, f64>,
    at: u64,
}

impl Usage {
    /// Adds `cpu_seconds` of `user`'s, used up to `end`.
    pub fn charge(&mut self, user: &str, cpu_seconds: f64, end: u64, half_life: u64) {
        if end > self.at {
            for v in self.by_user.values_mut() {
                *v = berth_sched::fairshare::decay(*v, end - self.at, half_life);
            }
            self.at = end;
        }
        *self.by_user.entry(user.to_string()).or_default() +=
            berth_sched::fairshare::decay(cpu_seconds, self.at - end, half_life);
    }

    /// Each user's usage at `now`, whole CPU-seconds.
    pub fn at(&self, now: u64, half_life: u64) -> std::collections::BTreeMap<String, u64> {
        let elapsed = now.saturating_sub(self.at);
        self.by_user
            .iter()
            .map(|(u, v)| {
                (
                    u.clone(),
                    berth_sched::fairshare::decay(*v, elapsed, half_life) as u64,
                )
            })
            .collect()
    }
}

/// Time a job spends in one condition (suspended, held): what has passed in it before, and
/// since when it is in it now; and each spell, start and end (none in records from before).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopwatch {
    pub seconds: u64,
    pub since: Option<u64>,
    #[serde(default)]
    pub spells: Vec<(u64, u64)>,
}

impl Stopwatch {
    /// Running from `at`.
    pub fn started(at: u64) -> Stopwatch {
        Stopwatch {
            since: Some(at),
            ..Stopwatch::default()
        }
    }

    pub fn start(&mut self, at: u64) {
        self.since.get_or_insert(at);
    }

    pub fn stop(&mut self, at: u64) {
        if let Some(since) = self.since.take() {
            self.seconds += at.saturating_sub(since);
            self.spells.push((since, at));
        }
    }

    /// Its spells, the running one last (without an end).
    pub fn spells(&self) -> Vec<berth_api::Spell> {
        self.spells
            .iter()
            .map(|&(start, end)| (start, Some(end)))
            .chain(self.since.map(|s| (s, None)))
            .map(|(start, end)| berth_api::Spell { start, end })
            .collect()
    }

    /// The time so far, as of `now`.
    pub fn read(&self, now: u64) -> u64 {
        self.seconds + self.since.map_or(0, |s| now.saturating_sub(s))
    }
}

/// What a job holds on one of its nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub node: String,
    /// Its cores there (a cpuset of their own).
    pub cpu_ids: Vec<u32>,
    /// Its GPUs there, by device minor (/dev/nvidiaN).
    pub gpu_ids: Vec<u32>,
    /// How many of its tasks the node gets (the slots of the hostfile).
    pub tasks: u32,
    /// The node's runner process (`berth internal run-job`), once its agent started it.
    pub runner: Option<u32>,
    /// The id of the node's job files the runner's are among (a remote agent's answer): a
    /// registration with another one says they are gone, and the runner with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_id: Option<String>,
    /// Its start is on the way to the node's agent (this controller sent it; not kept).
    #[serde(skip)]
    pub starting: bool,
    /// Its runner ended, and the controller took its end (not kept).
    #[serde(skip)]
    pub ended: bool,
}

impl Job {
    /// Whether its end was asked for while it runs: cancelled, requeued, or an allocation
    /// its client gave back (`allocation_exit`): its runners are stopped, also one whose
    /// pid comes only afterwards.
    pub fn stop_asked(&self) -> bool {
        self.cancel_requested || self.requeue_requested || self.allocation_exit.is_some()
    }

    /// Its nodes, the batch host first.
    pub fn nodes(&self) -> impl Iterator<Item = &str> + '_ {
        self.shares.iter().map(|s| s.node.as_str())
    }

    /// The node its script runs on.
    pub fn batch_node(&self) -> Option<&str> {
        self.shares.first().map(|s| s.node.as_str())
    }

    /// Its share of `node`, if it runs there.
    pub fn share(&self, node: &str) -> Option<&Share> {
        self.shares.iter().find(|s| s.node == node)
    }

    pub fn share_mut(&mut self, node: &str) -> Option<&mut Share> {
        self.shares.iter_mut().find(|s| s.node == node)
    }

    /// What it used of the cluster by `end`, for fair share (see [`Charged`]).
    pub fn charge(&self, end: u64) -> f64 {
        charge(self.cpus, self.start_time, &self.suspended, end)
    }

    /// Back to pending, as after `scontrol requeue`: same id, one more restart; held if the
    /// requeue said so (`requeue_held`).
    pub fn restart(&mut self) {
        if let Some(start_time) = self.start_time {
            // Requeued while it ran; else it had ended as it did (its node failed, or it
            // was queued again once over).
            let state = match self.requeue_requested {
                true => "REQUEUED",
                false => self.state.name(),
            };
            self.earlier_runs.push(berth_api::JobRun {
                start_time,
                end_time: self.end_time.unwrap_or_else(crate::now),
                nodes: self.nodes().map(str::to_string).collect(),
                cpus: self.cpus,
                state: state.into(),
                exit_code: self.exit_code,
                signal: self.signal,
                cpu_usec: self.cpu_usec,
                max_rss_bytes: self.max_rss_bytes,
            });
        }
        self.state = State::Pending;
        self.reason = Some("Requeued".into());
        self.start_time = None;
        self.end_time = None;
        self.shares.clear();
        self.exit_code = None;
        self.signal = None;
        self.mailed_limits.clear();
        self.cpu_usec = None;
        self.user_cpu_usec = None;
        self.system_cpu_usec = None;
        self.max_rss_bytes = None;
        self.cancel_requested = false;
        self.cancelled_by = None;
        self.requeue_requested = false;
        self.steps.clear();
        self.containers.clear();
        self.allocation_exit = None;
        self.suspended = Stopwatch::default();
        self.held_time = Stopwatch::default();
        self.restarts += 1;
        self.default_limit = None;
        if let Some(admin) = self.requeue_held.take() {
            self.set_holds(!admin, admin);
            self.held_time.start(crate::now());
        }
    }

    /// Its id as its user knows it: an array's task by its array and index (`42_7`).
    pub fn shown_id(&self) -> String {
        match (self.array_job_id, self.array_task_id) {
            (Some(array), Some(task)) => format!("{array}_{task}"),
            _ => self.id.to_string(),
        }
    }

    /// Its holds: its owner's and an administrator's. (A record from before `owner_hold`,
    /// or a job held at its submission or its launch's failure: held, not by root, is held
    /// by its owner.)
    pub fn holds(&self) -> (bool, bool) {
        (
            self.owner_hold || (self.held && !self.admin_hold),
            self.admin_hold,
        )
    }

    /// Gives it these holds, its owner's and an administrator's, and their reason.
    pub fn set_holds(&mut self, owner: bool, admin: bool) {
        (self.owner_hold, self.admin_hold, self.held) = (owner, admin, owner || admin);
        self.reason = Some(hold_reason(self.held, admin).into());
    }

    /// The jobs it waits for, and how, as ranges of ids (see `depends_on`): a whole array
    /// is one range, however many tasks it has, so that the pass's bookkeeping does not
    /// grow with them.
    pub fn dependency_ranges(&self) -> impl Iterator<Item = (DependencyKind, u64, u64)> + '_ {
        let resolved = self.depends_on.iter().copied();
        let before = self.depends_on.is_empty().then(|| {
            let deps = self.request.dependencies.jobs.iter();
            deps.map(|d| (d.kind, d.job, d.job))
        });
        resolved.chain(before.into_iter().flatten())
    }

    /// Its state as dependencies on it weigh it: one that failed with an exit status of its
    /// own carries it (LSF's `exit(42, > 1)`).
    pub fn scheduler_state(&self) -> berth_sched::JobState {
        self.state.for_scheduler().with_exit_code(self.exit_code)
    }

    /// When a delayed `after` on it counts from (Slurm's `after:42+5`): its start, or its
    /// end where it ended without one (cancelled while it waited).
    pub fn began(&self) -> Option<u64> {
        self.start_time.or(self.end_time)
    }

    /// Whether a dependency term of `kind` on jobs `first..=last` (an array's tasks) holds
    /// once they have all ended and any one of them failed: Slurm's and PBS's afternotok on
    /// a whole array (LSF's `exit(array)` needs every element to have failed).
    pub fn any_failed(&self, kind: DependencyKind, first: u64, last: u64) -> bool {
        kind == DependencyKind::AfterNotOk && last > first && !self.request.lsf
    }

    /// The seconds dependency term `term` waits once its job began (`after:42+5`), if any.
    pub fn delay(&self, term: u32) -> u64 {
        let jobs = &self.request.dependencies.jobs;
        jobs.get(term as usize)
            .and_then(|d| d.delay)
            .map_or(0, |minutes| u64::from(minutes) * 60)
    }

    /// The exit status asked of the job of dependency term `term` (see
    /// [`Job::dependency_ranges`]), if any.
    pub fn exit_test(&self, term: u32) -> Option<berth_sched::ExitTest> {
        let jobs = &self.request.dependencies.jobs;
        jobs.get(term as usize).and_then(|d| d.exit_code)
    }

    pub fn info(&self) -> JobInfo {
        JobInfo {
            id: self.id,
            array_job_id: self.array_job_id,
            array_task_id: self.array_task_id,
            array_tasks: None,
            array_spec: self
                .array_job_id
                .and(self.request.array.as_ref())
                .map(|a| a.to_string()),
            name: self.request.name.clone(),
            user: self.user.clone(),
            partition: self.partition.clone(),
            account: self.request.account.clone(),
            comment: self.request.comment.clone(),
            state: self.state.name().to_string(),
            cancelled_by: self.cancelled_by,
            reason: self.reason.clone(),
            submit_time: self.submit_time,
            submit_host: self.submit_host.clone(),
            begin_time: self.begin_time,
            deadline: self.deadline,
            start_time: self.start_time,
            end_time: self.end_time,
            time_limit: self.time_limit(),
            nodes: self.nodes().map(str::to_string).collect(),
            cpu_ids: (self.shares.iter())
                .map(|s| berth_api::NodeCpus {
                    node: s.node.clone(),
                    // (Its cpuset: slots' cores.)
                    cpu_ids: crate::node::cores(&s.cpu_ids),
                    memory_bytes: self.memory,
                    gpu_ids: s.gpu_ids.clone(),
                })
                .collect(),
            min_nodes: self.request.nodes.min,
            ntasks: self.request.ntasks,
            cpus_per_task: self.request.cpus_per_task,
            cpus: self.cpus,
            // A pending job's, what it asks of a node (sacct's ReqMem, squeue's %m).
            memory: match (self.memory, self.state) {
                (None, State::Pending) => {
                    let r = &self.request;
                    r.memory_on_node(r.ntasks.div_ceil(r.nodes.min.max(1)))
                }
                (memory, _) => memory,
            },
            memory_per_cpu: match self.request.memory {
                Some(berth_core::job::Memory::PerCpu(b)) => Some(b),
                _ => None,
            },
            exit_code: self.exit_code,
            signal: self.signal,
            cpu_usec: self.cpu_usec,
            user_cpu_usec: self.user_cpu_usec,
            system_cpu_usec: self.system_cpu_usec,
            max_rss_bytes: self.max_rss_bytes,
            suspended_seconds: self
                .suspended
                .read(self.end_time.unwrap_or_else(crate::now)),
            held_seconds: self
                .held_time
                .read(self.end_time.unwrap_or_else(crate::now)),
            suspensions: self.suspended.spells(),
            holds: self.held_time.spells(),
            expected_start: self.expected_start,
            planned_nodes: self.planned_nodes.clone(),
            image: self.image.clone(),
            script_args: self.script_args.clone(),
            script_path: self.script_path.clone(),
            workdir: self.workdir.clone(),
            submit_dir: self.submit_dir.clone().filter(|d| *d != self.workdir),
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
            stdin: self.request.input.as_deref().map(|pattern| {
                crate::job_file(self, self.batch_node().unwrap_or_default(), pattern)
            }),
            priority: self.priority,
            priority_factors: self.priority_factors,
            held: self.held,
            owner_hold: self.holds().0,
            restarts: self.restarts,
            steps: self.steps.clone(),
            earlier_runs: self.earlier_runs.clone(),
            requeue: self.request.requeue,
            constraint: (!self.request.constraint.is_empty()).then(|| {
                let any: Vec<String> = self
                    .request
                    .constraint
                    .iter()
                    .map(|all| all.join("&"))
                    .collect();
                any.join("|")
            }),
            required_nodes: self.request.nodelist.clone(),
            excluded_nodes: self.request.exclude.clone(),
            candidate_nodes: self.request.candidates.clone(),
            preferred_nodes: self
                .request
                .preferred
                .iter()
                .map(|(node, level)| format!("{node}+{level}"))
                .collect(),
            uid: self.uid,
            dependency: None,
            dependency_condition: self.request.dependencies.lsf_text(),
            licenses: self.request.licenses_text(),
            reservation: self.request.reservation.clone(),
            nice: self.request.nice,
            allocation: self.allocation,
            exclusive: self.request.exclusive,
            umask: self.request.umask,
            gpus_asked: self.request.gpus.as_ref().map(|g| berth_api::GpuAsk {
                count: g.count,
                per: match g.scope {
                    berth_core::job::GpuScope::Job => berth_api::GpuPer::Job,
                    berth_core::job::GpuScope::Node => berth_api::GpuPer::Node,
                    berth_core::job::GpuScope::Task => berth_api::GpuPer::Task,
                },
                model: g.model.clone(),
            }),
            gpus: self.shares.iter().map(|s| s.gpu_ids.len() as u32).sum(),
        }
    }

    /// The array whose first task's record keeps its script, environment and request, for
    /// a task other than the first (its own record leaves them out).
    pub fn parts_from(&self) -> Option<u64> {
        self.array_job_id.filter(|&array| array != self.id)
    }

    /// Takes the script and environment of `first`, its array's first task (shared, and
    /// left out of its own record), and its request unless its record has one of its own.
    pub fn share_with(&mut self, first: &Job) {
        self.script = first.script.kept_elsewhere();
        self.submit_env = first.submit_env.kept_elsewhere();
        if self.request.elsewhere() {
            self.request = first.shared_request().kept_elsewhere();
        }
    }

    /// The request an array's tasks share, kept by its first task.
    fn shared_request(&self) -> &Part<JobRequest> {
        self.array_request.as_ref().unwrap_or(&self.request)
    }

    /// The request, to change: the job's own copy from then on.
    pub fn request_mut(&mut self) -> &mut JobRequest {
        self.keep_shared_request();
        self.request.make_mut()
    }

    /// Gives it `request`, kept in its own record from then on.
    pub fn set_request(&mut self, request: Part<JobRequest>) {
        self.keep_shared_request();
        self.request = Part {
            elsewhere: false,
            ..request
        };
    }

    /// Before an array's first task's request changes: the one its tasks share, kept aside
    /// for them (`array_request`).
    fn keep_shared_request(&mut self) {
        if self.array_job_id == Some(self.id) && self.array_request.is_none() {
            self.array_request = Some(self.request.clone());
        }
    }

    /// The time limit it runs under (seconds): its own, else, once started, the one it
    /// started under.
    pub fn time_limit(&self) -> Option<u64> {
        self.request.time_limit.or(self.default_limit)
    }

    pub fn row(&self) -> berth_store::JobRow {
        berth_store::JobRow {
            id: self.id,
            state: self.state.name().to_string(),
            user: self.user.clone(),
            partition: self.partition.clone(),
            submit_time: self.submit_time,
            end_time: self.end_time,
            doc: serde_json::to_vec(self).expect("a job serialises"),
        }
    }
}

/// Why a job waits, as its hold (or release) leaves it: Slurm's reason names.
pub fn hold_reason(held: bool, admin: bool) -> &'static str {
    match (held, admin) {
        (true, true) => "JobHeldAdmin",
        (true, false) => "JobHeldUser",
        (false, _) => "None",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Job, Part, State, Stopwatch};

    #[test]
    fn a_state_is_found_by_its_name() {
        for state in [
            State::Pending,
            State::Suspended,
            State::OutOfMemory,
            State::NodeFail,
        ] {
            assert_eq!(State::named(state.name()), Some(state));
        }
        assert_eq!(State::named("DONE"), None);
    }

    /// A pending job of one task, `array`'s task if given.
    pub fn sample(id: u64, array: Option<u64>) -> Job {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "id": id, "user": "u", "uid": 1000, "partition": "p", "script": "",
            "workdir": "/", "submit_env": [], "image_env": [], "state": "PENDING",
            "held": false, "submit_time": 0, "cpus": 1, "stdout": "", "cancel_requested": false,
            "request": serde_json::to_value(berth_core::job::JobRequest::from_options(Default::default(), "j").unwrap()).unwrap(),
        }))
        .expect("a job");
        job.array_job_id = array;
        job
    }

    /// A job as read back from the record `job` writes.
    fn stored(job: &Job) -> Job {
        serde_json::from_slice(&job.row().doc).expect("a record reads back")
    }

    fn has_request(job: &Job) -> bool {
        let doc: serde_json::Value = serde_json::from_slice(&job.row().doc).unwrap();
        doc.get("request").is_some()
    }

    #[test]
    fn an_arrays_tasks_keep_one_request_until_one_changes_its_own() {
        // As submitted: the first task's record keeps the request, the others' leave it out.
        let mut tasks: Vec<Job> = (1..=3).map(|id| sample(id, Some(1))).collect();
        let shared = Part::new(berth_core::job::JobRequest::clone(&tasks[0].request));
        for (n, task) in tasks.iter_mut().enumerate() {
            task.request = match n {
                0 => shared.clone(),
                _ => shared.kept_elsewhere(),
            };
        }
        assert!(has_request(&tasks[0]));
        assert!(!has_request(&tasks[1]));
        let mut second = stored(&tasks[1]);
        assert_eq!(second.request.name, "", "left out of its record");
        second.share_with(&stored(&tasks[0]));
        assert_eq!(second.request.name, "j");

        // The first task's own changes (a running one's time limit): its record keeps the
        // shared one aside, which the others still read.
        tasks[0].request_mut().name = "renamed".into();
        assert_eq!(
            tasks[1].request.name, "j",
            "changed on the first task's copy only"
        );
        let first = stored(&tasks[0]);
        assert_eq!(first.request.name, "renamed");
        let mut second = stored(&tasks[1]);
        second.share_with(&first);
        assert_eq!(second.request.name, "j");

        // A task given a request of its own (`berth update`) keeps it in its record.
        let mut own = berth_core::job::JobRequest::clone(&tasks[2].request);
        own.name = "third".into();
        tasks[2].set_request(Part::new(own));
        assert!(has_request(&tasks[2]));
        let mut third = stored(&tasks[2]);
        third.share_with(&first);
        assert_eq!(third.request.name, "third");
    }

    #[test]
    fn a_stopwatch_adds_up_its_spells_and_reads_a_running_one_as_of_now() {
        let mut held = Stopwatch::started(100);
        assert_eq!(held.read(130), 30);
        held.start(110); // Already running: the first start counts.
        held.stop(140);
        assert_eq!(held.read(1000), 40);
        held.stop(150); // Not running: nothing changes.
        held.start(200);
        held.stop(205);
        assert_eq!(held.read(1000), 45);
        // A clock that went back counts nothing, rather than wrapping.
        held.start(300);
        assert_eq!(held.read(250), 45);
        let spells: Vec<(u64, Option<u64>)> =
            held.spells().iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(
            spells,
            [(100, Some(140)), (200, Some(205)), (300, None)],
            "each spell, the running one last"
        );
    }
}
