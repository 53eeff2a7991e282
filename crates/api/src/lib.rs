//! The controller's HTTP API: request and response types shared by the CLI, the controller
//! and (later) remote agents. JSON over HTTP/1.1, on a Unix socket (the caller's identity comes
//! from SO_PEERCRED) or TCP with a token.
//!
//! Owns: the wire format. Must not: hold logic; the CLI sends what the user typed (the script
//! and the flags) and the controller parses and validates it, so there is one parser.

use serde::{Deserialize, Serialize};

/// `POST /v1/jobs`
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The batch script's text.
    pub script: String,
    /// Its file name, for the default job name (as sbatch names jobs after the script).
    pub script_name: String,
    /// `berth submit` flags as typed (they override the script's directives).
    #[serde(default)]
    pub args: Vec<String>,
    /// Whose options `args` are: berth's (sbatch's), or bsub's or qsub's when berth runs
    /// as those commands.
    #[serde(default)]
    pub syntax: OptionSyntax,
    /// The script's own arguments ($1, $2, ...): the words after it, as sbatch passes them.
    #[serde(default)]
    pub script_args: Vec<String>,
    /// The script's file, absolute, where it came from one (scontrol's Command=).
    #[serde(default)]
    pub script_path: Option<String>,
    /// The directory `berth submit` ran in.
    pub cwd: String,
    /// The name of the machine it ran on (SLURM_SUBMIT_HOST, PBS_O_HOST, LSB_SUB_HOST).
    #[serde(default)]
    pub host: String,
    /// The submitter's environment (exported to the job as `--export` says): NAME, VALUE pairs.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<String>>)]
    pub env: Vec<(String, String)>,
    /// Image files the job names (as written: `./app.sqsh`), each with the cluster's name of
    /// the submitter's upload of it (`POST /v1/images/import`; berth's commands upload a
    /// file the job names as they submit it).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub image_files: std::collections::BTreeMap<String, String>,
    /// The submitter's file creation mask (sbatch's SLURM_UMASK): the job creates its files,
    /// its output's first, under it. `None`: the node's (022).
    #[serde(default)]
    pub umask: Option<u32>,
    /// The variables of the file sbatch's `--export-file` names (a file on the submitting
    /// machine, which its client reads), NAME, VALUE pairs: the job gets them whatever
    /// `--export` says. Required where the options name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<String>>>)]
    pub export_env: Option<Vec<(String, String)>>,
}

/// The words a submission's options are in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OptionSyntax {
    /// `berth submit`'s: sbatch's options plus `--image` and `--bind`.
    #[default]
    Berth,
    /// The same typed as `sbatch` (berth answering to that name): Slurm's default output
    /// file, `slurm-%j.out`, instead of berth's.
    Sbatch,
    /// bsub's command line (`-n 4 -W 10 -q short`).
    Bsub,
    /// qsub's command line (`-l nodes=2:ppn=4 -N name`).
    Qsub,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SubmitResponse {
    pub job_id: u64,
    /// The partition the job was queued in (bsub and qsub name it).
    #[serde(default)]
    pub partition: String,
    /// It is the default partition, the submission naming none (bsub's "default queue").
    #[serde(default)]
    pub default_partition: bool,
    /// Number of jobs created (array tasks), 1 for a plain job.
    pub jobs: u64,
    /// It is an array job (of one task, or more).
    #[serde(default)]
    pub array: bool,
    /// Directives accepted but ignored, and other things the user should know.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The submission asked to wait for the job's end (sbatch `--wait`, bsub `-K`).
    #[serde(default)]
    pub wait: bool,
    /// sbatch `--test-only`: nothing was queued (`jobs` is 0; `job_id` is the id the job
    /// would have had), and this is when it would start.
    #[serde(default)]
    pub estimate: Option<StartEstimate>,
}

/// When and where a job would start if it were queued now (sbatch `--test-only`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StartEstimate {
    /// Now if it could start at once, the start the scheduler plans for it otherwise;
    /// `None`: none can be given (it would wait for something other than resources).
    pub start: Option<u64>,
    /// CPUs on all its nodes together.
    pub cpus: u64,
    /// Its nodes (those planned for it, if it would wait; none without a plan).
    pub nodes: Vec<String>,
    /// Why it would wait (Slurm's reason names); `None`: it would start at once.
    pub reason: Option<String>,
}

/// A spell of a job in one condition (suspended, held): from `start` until `end` (none: it
/// still is), seconds since the epoch.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Spell {
    pub start: u64,
    pub end: Option<u64>,
}

/// What a running job has used so far (`GET /v1/jobs/{id}/usage`, `berth usage`, sstat),
/// from its cgroup on each of its nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobUsage {
    pub job: u64,
    /// The array it is a task of, and its index there (sstat's `42_7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_job_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_task_id: Option<u32>,
    /// Seconds since it started, suspended time included.
    pub elapsed_seconds: u64,
    /// Its nodes, the batch host first.
    pub nodes: Vec<NodeUsage>,
}

impl JobUsage {
    /// CPU seconds on all its nodes.
    pub fn cpu_seconds(&self) -> f64 {
        // (+ 0.0: an empty sum is -0.0.)
        self.nodes.iter().filter_map(|n| n.cpu_seconds).sum::<f64>() + 0.0
    }

    /// Memory charged now on all its nodes.
    pub fn memory_bytes(&self) -> u64 {
        self.nodes.iter().filter_map(|n| n.memory_bytes).sum()
    }

    /// The most charged at once on each node, added up (an upper bound of the job's peak).
    pub fn max_memory_bytes(&self) -> u64 {
        self.nodes.iter().filter_map(|n| n.max_memory_bytes).sum()
    }
}

/// A running job's use of one node; `None` where the kernel does not account it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NodeUsage {
    pub node: String,
    /// CPU time of all its processes there, user and system.
    pub cpu_seconds: Option<f64>,
    /// Memory charged to it now (page cache included, as its limit counts it).
    pub memory_bytes: Option<u64>,
    /// The most it has had charged at once.
    pub max_memory_bytes: Option<u64>,
    /// The job's tasks there (sstat's averages are per task).
    #[serde(default)]
    pub tasks: u32,
    /// Its steps running there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepNodeUsage>,
}

/// What a running step's processes on one node have used so far (`sstat -j JOB.STEP`): its
/// tasks and their children, found by their process group, read from /proc (as Slurm's
/// jobacct_gather/linux reads them), berth's own step process left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StepNodeUsage {
    pub step: u32,
    /// Seconds since it started there.
    pub elapsed_seconds: u64,
    /// CPU time of its processes, user and system, those ended included.
    pub cpu_seconds: f64,
    /// Their resident memory now.
    pub memory_bytes: u64,
    /// The largest task's peak, as far as /proc tells it: what its processes hold now, or
    /// the most one of them has held (a process that ended or exec'd took its own peak).
    pub max_memory_bytes: u64,
    /// Its tasks there.
    pub tasks: u32,
}

/// The answer to a wait for jobs' end (`GET /v1/jobs/{id}/wait`: sbatch `--wait`, bsub
/// `-K`, qsub `-W block=true`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WaitResponse {
    /// All of them have ended (`until=started`: started, or ended without starting);
    /// `false`: the wait's time ran out first (ask again).
    pub reached: bool,
    /// How each ended, by id (empty until all have, and for `until=started`).
    pub jobs: Vec<JobEnd>,
}

/// How a job ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobEnd {
    pub id: u64,
    /// COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, DEADLINE.
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// It ended before it ran (cancelled while pending, its dependency never met).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub never_ran: bool,
}

/// A job as `berth queue`, `show` and `history` report it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobInfo {
    pub id: u64,
    /// The array's first job id and this task's index, for array tasks.
    pub array_job_id: Option<u64>,
    pub array_task_id: Option<u32>,
    /// An entry that stands for several pending tasks of an array that wait alike (`GET
    /// /v1/jobs?collapse=true`): their indices, `3-10,12` (squeue's `42_[3-10,12]`); its
    /// other fields are the first one's.
    #[serde(default)]
    pub array_tasks: Option<String>,
    /// An array task's array, as submitted (`1-10%2`).
    #[serde(default)]
    pub array_spec: Option<String>,
    pub name: String,
    pub user: String,
    pub partition: String,
    /// The account it is charged to (`--account`, bsub `-P`, qsub `-A`), as given.
    #[serde(default)]
    pub account: Option<String>,
    /// Its comment (`--comment`, bsub `-Jd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// PENDING, RUNNING, SUSPENDED, COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY,
    /// NODE_FAIL, DEADLINE.
    pub state: String,
    /// The uid of whoever cancelled it (`berth cancel`, scancel, bkill, qdel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<u32>,
    /// Why it is pending (Slurm's reason names), or how it failed.
    pub reason: Option<String>,
    pub submit_time: u64,
    /// The machine it was submitted from.
    #[serde(default)]
    pub submit_host: String,
    /// Not started before this time (`--begin`).
    #[serde(default)]
    pub begin_time: Option<u64>,
    /// To end by this time (`--deadline`): not started once it could not.
    #[serde(default)]
    pub deadline: Option<u64>,
    pub start_time: Option<u64>,
    pub end_time: Option<u64>,
    /// Seconds; `None` is the partition's limit.
    pub time_limit: Option<u64>,
    pub nodes: Vec<String>,
    /// What it holds on each of its nodes, in their order: CPUs (its cpuset's), memory and
    /// GPUs (`scontrol show job -d`'s CPU_IDs, pbsnodes' jobs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_ids: Vec<NodeCpus>,
    /// The nodes it asked for (at least), its tasks and CPUs per task.
    #[serde(default)]
    pub min_nodes: u32,
    #[serde(default)]
    pub ntasks: u32,
    #[serde(default)]
    pub cpus_per_task: u32,
    pub cpus: u64,
    pub memory: Option<u64>,
    /// The memory it asked for each CPU (`--mem-per-cpu`), bytes; `memory` is its node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_per_cpu: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// CPU time (all of it, in user mode and in the kernel) and peak memory from the job's
    /// cgroup.
    pub cpu_usec: Option<u64>,
    #[serde(default)]
    pub user_cpu_usec: Option<u64>,
    #[serde(default)]
    pub system_cpu_usec: Option<u64>,
    pub max_rss_bytes: Option<u64>,
    pub image: Option<String>,
    /// The script's arguments, as submitted.
    #[serde(default)]
    pub script_args: Vec<String>,
    /// The script's file, where it came from one.
    #[serde(default)]
    pub script_path: Option<String>,
    pub workdir: String,
    /// The directory it was submitted from, where it is not `workdir` (`--chdir`, qsub
    /// `-d`): SLURM_SUBMIT_DIR, PBS_O_WORKDIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_dir: Option<String>,
    pub stdout: String,
    pub stderr: Option<String>,
    /// The file the script reads as its standard input (`--input`), if one; /dev/null
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    pub priority: Option<f64>,
    /// How a pending job's priority is made, weighted (sprio's columns).
    #[serde(default)]
    pub priority_factors: Option<PriorityFactors>,
    pub held: bool,
    /// Its owner's hold is among its holds (JobHeldUser; with the reason JobHeldAdmin, it
    /// has both: PBS's `uo`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owner_hold: bool,
    /// Seconds it has spent suspended (`berth suspend`), and held while pending.
    #[serde(default)]
    pub suspended_seconds: u64,
    #[serde(default)]
    pub held_seconds: u64,
    /// Each time it was suspended, and held (LSF's bhist -l lists them).
    #[serde(default)]
    pub suspensions: Vec<Spell>,
    #[serde(default)]
    pub holds: Vec<Spell>,
    /// A pending job's expected start, and the nodes it is planned on, where the scheduler
    /// holds a backfill reservation for it (`squeue --start`).
    #[serde(default)]
    pub expected_start: Option<u64>,
    #[serde(default)]
    pub planned_nodes: Vec<String>,
    /// Times the job was requeued.
    #[serde(default)]
    pub restarts: u32,
    /// The job's steps (`berth step` inside it), in the order they started.
    #[serde(default)]
    pub steps: Vec<StepInfo>,
    /// Whether it may be queued again (`--requeue`, `--no-requeue`; `None`: the default,
    /// yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeue: Option<bool>,
    /// A requeued job's earlier runs, oldest first (sacct -D).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_runs: Vec<JobRun>,
    /// `--constraint`, as berth reads it (`a&b|c`); `None`: any node.
    #[serde(default)]
    pub constraint: Option<String>,
    /// `--nodelist`: nodes the job must have.
    #[serde(default)]
    pub required_nodes: Vec<String>,
    /// `--exclude`: nodes it must not have.
    #[serde(default)]
    pub excluded_nodes: Vec<String>,
    /// The only nodes it may have (bsub `-m`); empty: any.
    #[serde(default)]
    pub candidate_nodes: Vec<String>,
    /// Nodes it prefers, `NODE+N` (bsub `-m`): the higher N, the sooner taken.
    #[serde(default)]
    pub preferred_nodes: Vec<String>,
    /// The submitter's uid.
    #[serde(default)]
    pub uid: u32,
    /// A pending job's dependencies not yet satisfied, as Slurm shows them:
    /// `afterok:12(unfulfilled),afterany:7_*(unfulfilled)`, `afterok:9(failed)` for one that
    /// never will be, `singleton(unfulfilled)`.
    #[serde(default)]
    pub dependency: Option<String>,
    /// The cluster's licenses it holds while it runs, as Slurm writes them: `matlab:2,ansys:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licenses: Option<String>,
    /// The jobs it depends on, all of them, in LSF's words (bjobs' Dependency Condition):
    /// `done(12) && (exit(13[2]) || numdone(14, >= 5))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency_condition: Option<String>,
    /// The reservation it runs in (`--reservation`).
    #[serde(default)]
    pub reservation: Option<String>,
    /// Its nice value (`--nice`): subtracted from its priority.
    #[serde(default)]
    pub nice: i32,
    /// An allocation (salloc's, srun's own, an interactive job): no batch script runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allocation: bool,
    /// Its nodes are its alone (`--exclusive`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive: bool,
    /// The umask it asked for (PBS's `-W umask=077`), where it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// The GPUs it asked for (`--gpus`, `--gres=gpu:N`, `--gpus-per-task`, ...), where it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_asked: Option<GpuAsk>,
    /// The GPUs it has (had), all its nodes' together: a job that ran's.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub gpus: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// GPUs as a job asks for them: `count` for each `per`, of one `model` where it names one
/// (`--gres=gpu:a100:2`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct GpuAsk {
    pub count: u32,
    pub per: GpuPer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// What a job's GPU count is for: all its nodes together, each node, each task.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GpuPer {
    Job,
    Node,
    Task,
}

impl GpuAsk {
    /// As Slurm writes a TRES of GPUs per something: `gres:gpu:2`, `gres:gpu:a100:2`.
    pub fn tres(&self) -> String {
        match &self.model {
            Some(model) => format!("gres:gpu:{model}:{}", self.count),
            None => format!("gres:gpu:{}", self.count),
        }
    }
}

/// One of a requeued job's earlier runs, as sacct -D lists them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct JobRun {
    pub start_time: u64,
    pub end_time: u64,
    pub nodes: Vec<String>,
    pub cpus: u64,
    /// How it ended: REQUEUED where it was requeued while it ran, else its state then
    /// (NODE_FAIL where its node's failure requeued it, COMPLETED for an ended job queued
    /// again, ...).
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub cpu_usec: Option<u64>,
    pub max_rss_bytes: Option<u64>,
}

/// One job step, as `berth show` and `history` report it (sacct's JOBID.STEP lines).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StepInfo {
    pub id: u32,
    pub ntasks: u32,
    /// The command, its words joined by spaces.
    pub command: String,
    pub start_time: u64,
    pub end_time: Option<u64>,
    /// The worst of the tasks' exit statuses (128 + N for a signal).
    pub exit_code: Option<i32>,
    /// The signal that gave `exit_code` (128 + N), where one did: a task killed by it, not
    /// one that exited with that status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// What its tasks used, once it has ended (none where a node could not say).
    #[serde(default)]
    pub usage: Option<StepUsage>,
    /// The node whose agent runs it (its client's), which can end it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// It was cancelled (`berth cancel JOB.STEP`, scancel's), its job going on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// Its name (srun's `-J`), where it was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its own time limit, seconds (`srun -t`), if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<u64>,
    /// It was ended at that limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The nodes its tasks run on, in rank order (empty in records before 2026-12-06).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// The job's CPUs (ids of its shares) the step holds, node by node: the next steps get
    /// others, or wait for them, while it runs, as Slurm's steps get CPUs of their own
    /// (none for a step that overlaps the others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_ids: Vec<NodeCpus>,
}

/// What a job holds on one node, or a step of its job's there: CPUs, memory where it asked
/// for some, and (a job's) GPUs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NodeCpus {
    pub node: String,
    /// A job's: its cpuset there; a step's: the job's CPUs (slots, see `[batch]
    /// oversubscribe`) it holds.
    pub cpu_ids: Vec<u32>,
    /// Bytes of the job's memory there (`srun --mem`, `--mem-per-cpu`), which the job's
    /// other steps cannot have meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// A job's GPUs there, by device minor (/dev/nvidiaN).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_ids: Vec<u32>,
}

/// What a step's tasks used, as the kernel accounts it to each node's step process for the
/// tasks it waited for (and what they waited for): CPU time summed over the nodes, and the
/// largest peak resident size of any one task (sacct's TotalCPU, UserCPU, SystemCPU and
/// MaxRSS of a step).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StepUsage {
    pub user_usec: u64,
    pub system_usec: u64,
    pub max_rss_bytes: u64,
    /// Processes of its tasks the kernel's OOM killer killed at the step's own memory limit
    /// (`srun --mem`): sacct's OUT_OF_MEMORY.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub oom_kills: u64,
}

/// The usage of a step whose parts used `self` and `other`.
impl std::ops::Add for StepUsage {
    type Output = StepUsage;

    fn add(self, other: StepUsage) -> StepUsage {
        StepUsage {
            user_usec: self.user_usec + other.user_usec,
            system_usec: self.system_usec + other.system_usec,
            max_rss_bytes: self.max_rss_bytes.max(other.max_rss_bytes),
            oom_kills: self.oom_kills + other.oom_kills,
        }
    }
}

/// `POST /v1/jobs/{id}/cancel`
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Signal name or number to send instead of ending the job (`berth cancel --signal`).
    pub signal: Option<String>,
    /// Which of the job's processes get the signal (`None`: its steps', as scancel's).
    #[serde(default)]
    pub target: Option<SignalTarget>,
    /// The id is an array job's: each of its tasks still pending or running, in one request
    /// (`scancel ARRAY`); without it, the one job of that id (the array's first task).
    #[serde(default)]
    pub array: bool,
    /// One running step of the job to end (`scancel JOB.STEP`), the job going on.
    #[serde(default)]
    pub step: Option<u32>,
}

/// Which of a running job's processes a signal is for, as scancel has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignalTarget {
    /// The batch script's shell alone (`scancel -b`).
    Batch,
    /// The job's steps' tasks on all its nodes, not the batch shell (scancel's default).
    #[default]
    Steps,
    /// Every process of the job on all its nodes (`scancel -f`; bkill -s).
    Full,
}

/// `POST /v1/jobs/{id}/update`: new values for a pending job (an array job's id: each of its
/// pending tasks) or a running job's time limit, as `berth submit` flags (`--time=30`,
/// `--partition=debug`, ...), or bmod's or qalter's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    pub args: Vec<String>,
    /// Whose options `args` are (bsub's for bmod, qsub's for qalter).
    #[serde(default)]
    pub syntax: OptionSyntax,
    /// An array's new limit of tasks running at once (scontrol's ArrayTaskThrottle; 0: none),
    /// for its tasks still pending.
    #[serde(default)]
    pub array_throttle: Option<u32>,
}

/// A controller as `berth controllers` (and `scontrol ping`) reports it: the one that
/// answers, which leads, and the standbys that copy its images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ControllerInfo {
    /// Its host.
    pub host: String,
    /// Where it serves the API over TLS (`https://HOST:PORT`), or takes over there.
    #[serde(default)]
    pub url: Option<String>,
    /// leader or standby.
    pub role: String,
    /// up, or down: a standby not heard from for longer than the leader holds its looks.
    pub state: String,
    /// Seconds since a standby last looked at the leader's images (0: it looks now).
    #[serde(default)]
    pub heard: Option<u64>,
    /// The leader's images it holds (for the leader: all of them).
    pub images: u64,
    /// The leader's images a standby could not copy, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// How a node's reason begins where the controller took it down for not answering
/// (`not responding: no heartbeat for 60 s`).
pub const NOT_RESPONDING: &str = "not responding";

/// A node as `berth nodes` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NodeInfo {
    pub name: String,
    /// idle, mixed, allocated, down, drain.
    pub state: String,
    pub partitions: Vec<String>,
    pub cpus: u32,
    pub cpus_allocated: u32,
    pub memory: u64,
    pub memory_allocated: u64,
    pub gpus: u32,
    /// What its administrator says it has (`--features`), for jobs' `--constraint`.
    #[serde(default)]
    pub features: Vec<String>,
    /// Why it is down or drained.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who put it out of service (`berth` for a node that stopped answering), and when.
    #[serde(default)]
    pub reason_user: Option<String>,
    #[serde(default)]
    pub reason_time: Option<u64>,
    /// Its architecture (`x86_64`), CPU model and swap space, as its agent found them.
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub cpu_model: String,
    #[serde(default)]
    pub swap: u64,
    /// How its CPUs are laid out, as its agent found them (sinfo's S:C:T): sockets, cores
    /// in each, threads in each core; 0 where its agent did not say.
    #[serde(default)]
    pub sockets: u32,
    #[serde(default)]
    pub cores_per_socket: u32,
    #[serde(default)]
    pub threads_per_core: u32,
    /// Its load averages over 1, 5 and 15 minutes, as its agent last reported them (the
    /// controller's own node: now); none before its first report.
    #[serde(default)]
    pub load: Option<Vec<f64>>,
    /// Its memory available for new work (MemAvailable), bytes, reported likewise.
    #[serde(default)]
    pub memory_available: Option<u64>,
    /// Seconds since its agent last reported (its heartbeat); none for the controller's own
    /// node.
    #[serde(default)]
    pub heard: Option<u64>,
    /// The images in a remote node's cache, by their squashfs files' SHA-256, as its agent
    /// last reported them: nodes that lack one fetch it from those that have it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

impl NodeInfo {
    /// Its load average over the last minute, as its agent last reported it: what Slurm
    /// calls its CPU load.
    pub fn cpu_load(&self) -> Option<f64> {
        self.load.as_ref()?.first().copied()
    }

    /// Its sockets, cores per socket and threads per core; where its agent did not say,
    /// each CPU a core of one socket.
    pub fn topology(&self) -> [u32; 3] {
        match self.sockets {
            0 => [1, self.cpus, 1],
            s => [s, self.cores_per_socket, self.threads_per_core],
        }
    }
}

/// An administrator's reservation of nodes (`scontrol create reservation`): from its start
/// to its end, they run only jobs that name it (`--reservation`), of its users; any other
/// job there must end before it starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub name: String,
    /// Seconds since the epoch.
    pub start_time: u64,
    pub end_time: u64,
    /// Its nodes; empty in a request: every node.
    pub nodes: Vec<String>,
    /// Who may run jobs in it (root may anyway).
    pub users: Vec<String>,
    /// Slurm's flags (MAINT, ...), kept and shown as given: berth's reservations behave
    /// the same whatever they are.
    #[serde(default)]
    pub flags: Vec<String>,
}

/// An image in the cluster's store (the controller's), which jobs run in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ImageInfo {
    /// `sha256:` and the hex digest of its config.
    pub id: String,
    /// Its names (`registry.local:5000/lab/app:1`).
    pub names: Vec<String>,
    /// Bytes of its squashfs file.
    pub size: u64,
    /// When it came into the store, seconds since the epoch.
    pub imported: u64,
    pub architecture: String,
    /// Who else its private names (`users/USER/...`) are shared with, for their owner and
    /// root ([`ImageShare`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ImageShare>,
    /// What went wrong beside an import or a pull that came through (a standby controller
    /// that has not copied the image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A private image name (`users/OWNER/...`) shared with other users and the members of
/// groups (`berth image share`), as Shifter's image ACLs: their jobs may run it, and they
/// see it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ImageShare {
    pub name: String,
    /// User names.
    #[serde(default)]
    pub users: Vec<String>,
    /// Group names: their members (primary or supplementary, on the controller's host).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `POST /v1/images/share`: shares a private image name with users and groups, or (with
/// `remove`) no longer with them. Its owner or root only.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// The name, `users/OWNER/REPO:TAG`.
    pub name: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// These users and groups no longer share it.
    #[serde(default)]
    pub remove: bool,
}

/// `POST /v1/images/pull`: the controller pulls an image from a registry into the cluster's
/// store, as Shifter's image gateway does, for any user where the administrator allows it
/// (`[registry] user_pulls`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// `HOST[:PORT]/REPO[:TAG|@DIGEST]`.
    pub reference: String,
}

/// `POST /v1/images/pull/private`: the controller pulls with the caller's own credentials
/// for the registry, which it does not keep, or anonymously; a user's image pulled so is
/// theirs alone (to share with whom they choose), named `users/USER/HOST[-PORT]/REPO:TAG`
/// (as Shifter keeps an image pulled with a user's credentials, or with ACLs, to them).
/// Over TCP too: the API there is TLS only, to the controller whose certificate the token
/// names.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivatePullRequest {
    /// `HOST[:PORT]/REPO[:TAG|@DIGEST]`.
    pub reference: String,
    /// None: the registry is asked anonymously (a public image, kept the caller's own).
    #[serde(default)]
    pub credentials: Option<RegistryCredentials>,
}

/// A user name and password for a registry.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryCredentials({}, <password>)", self.username)
    }
}

/// `POST /v1/images/remove`: a name of an image in the cluster's store, or an image by its
/// id (root); users remove their own uploads (`users/USER/...`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveImageRequest {
    pub reference: String,
}

/// What a removal did, as `berth image rm` says it: a name taken off (`untagged`: the
/// image kept, or it had other names), and the ids of images deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RemovedImage {
    pub untagged: bool,
    pub deleted: Vec<String>,
}

/// `POST /v1/nodes/{name}/drain` (root): no new jobs on the node until it is resumed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Why (shown by `berth nodes`).
    pub reason: String,
}

/// A pending job's priority, factor by factor, each weighted: their sum less nice is the
/// priority (Slurm's multifactor, as sprio shows it).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PriorityFactors {
    pub age: f64,
    pub fairshare: f64,
    pub job_size: f64,
    pub partition: f64,
    pub nice: i32,
}

/// A user's fair share, as sshare reports it (`GET /v1/shares`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ShareInfo {
    pub user: String,
    /// Their shares as configured (`[priority.shares]`; 1 unless named): RawShares.
    pub raw_shares: u32,
    /// Their part of all users' shares: NormShares.
    pub norm_shares: f64,
    /// Their usage, CPU-seconds (CPUs x run time of their jobs, decayed with the half-life,
    /// running jobs' so far): RawUsage.
    pub raw_usage: u64,
    /// Their part of all users' usage: EffectvUsage.
    pub effective_usage: f64,
    /// 2^(-effective usage / normalised shares), the priority's fair-share factor: FairShare.
    pub fairshare: f64,
}

/// The controller's settings that users and administrators ask about (`GET /v1/config`:
/// scontrol show config, sprio -w).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ConfigInfo {
    /// `[batch] cluster_name`: ClusterName.
    pub cluster_name: String,
    /// berth's version.
    pub version: String,
    /// The controller's state directory: StateSaveLocation.
    pub state_dir: String,
    /// Seconds between SIGTERM and SIGKILL at a job's end: KillWait.
    pub kill_wait: u64,
    /// Seconds without a heartbeat before a node is down: SlurmdTimeout.
    pub node_timeout: u64,
    /// Batch jobs a node failed go back to the queue: JobRequeue.
    pub requeue: bool,
    /// Jobs per core of every node: OverSubscribe=FORCE:N (1: none).
    pub oversubscribe: u32,
    /// Jobs without an image may run on the host (`[batch] host_jobs`).
    pub host_jobs: bool,
    /// Array indices below it: MaxArraySize.
    pub max_array_size: Option<u32>,
    /// The most unfinished jobs: MaxJobCount.
    pub max_job_count: Option<u64>,
    /// Seconds an ended job stays in squeue: MinJobAge.
    pub min_job_age: u64,
    /// What jobs' mail goes through: MailProg.
    pub mail_program: Option<String>,
    /// The cluster's licenses, how many of each: Licenses.
    pub licenses: std::collections::BTreeMap<String, u32>,
    /// How pending jobs are ordered: PriorityWeight* and the rest.
    pub priority: PriorityWeights,
    /// How many blocked jobs get a backfill reservation each pass: bf_max_job_test's part.
    pub backfill_reservations: usize,
}

/// The multifactor priority's settings (`[priority]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PriorityWeights {
    pub weight_age: u32,
    pub weight_job_size: u32,
    pub weight_partition: u32,
    pub weight_fairshare: u32,
    /// Seconds: PriorityMaxAge.
    pub max_age: u64,
    /// Seconds: PriorityDecayHalfLife.
    pub decay_half_life: u64,
    /// PriorityFavorSmall.
    pub favor_small: bool,
}

/// One of the cluster's licenses (`[licenses]`), as scontrol show licenses reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LicenseInfo {
    pub name: String,
    pub total: u32,
    /// Held by running (and suspended) jobs.
    pub used: u32,
    pub free: u32,
}

/// A partition as `berth partitions` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PartitionInfo {
    pub name: String,
    pub default: bool,
    pub nodes: Vec<String>,
    pub max_time: Option<u64>,
    /// The time limit of jobs that ask for none (Slurm's DefaultTime), seconds; `None`:
    /// `max_time`.
    #[serde(default)]
    pub default_time: Option<u64>,
    pub state: String,
    /// Its priority in the configuration (bqueues' PRIO).
    #[serde(default)]
    pub priority: u32,
    /// How many jobs one user may have in it, waiting or running (`max_jobs_per_user`).
    #[serde(default)]
    pub max_jobs_per_user: Option<u32>,
    /// How many CPUs one user's running jobs may hold in it at once (`max_cpus_per_user`).
    #[serde(default)]
    pub max_cpus_per_user: Option<u32>,
}

/// `POST /v1/tokens` (Unix socket only): a token for the API over TCP.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Whose token; only root may name another user than itself.
    pub user: Option<String>,
    /// Seconds it stays valid (default one day, at most 30 days).
    pub lifetime: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub user: String,
    /// Seconds since the epoch when it stops working.
    pub expires: u64,
}

/// Every error: the HTTP status says what kind, `error` says what and what to do.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// The directory that belongs to the API socket `api` (`berth.sock` -> `berth.step/`) and
/// holds the step socket and the API socket for jobs. Every job's container gets it at
/// [`STEP_DIR_IN_CONTAINER`] (a directory rather than the sockets, so that a restarted
/// controller's new sockets are seen by jobs that were already running).
pub fn step_dir(api: &std::path::Path) -> std::path::PathBuf {
    api.with_extension("step")
}

/// The step socket of the API socket `api`: `berth.step/step.sock`.
pub fn step_socket(api: &std::path::Path) -> std::path::PathBuf {
    step_dir(api).join("step.sock")
}

/// The API socket for processes in jobs, beside the step socket (so that a job's container
/// can run `berth queue`, `submit`, `cancel`): `berth.step/berth.sock`.
pub fn job_api_socket(api: &std::path::Path) -> std::path::PathBuf {
    step_dir(api).join("berth.sock")
}

/// Where a job's container sees the step socket's directory.
pub const STEP_DIR_IN_CONTAINER: &str = "/.berth/run";

/// A task's place among a PBS job's slots (Torque's task manager's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PbsSlot {
    /// Its host's index among the job's (PBS_NODENUM).
    pub node: u32,
    /// Its line of PBS_NODEFILE (PBS_VNODENUM).
    pub vnode: u32,
}

/// The largest batch script berth takes, bytes (Slurm's default max_script_size).
pub const MAX_SCRIPT_BYTES: usize = 4 << 20;

/// `berth step` asking the node agent to start a step: one JSON line on the step socket, sent
/// with the client's stdin, stdout and stderr as SCM_RIGHTS descriptors, which the tasks
/// inherit (their output goes straight to the client's files or terminal).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// The job to run in; `None` with [`StepRequest::allocate`].
    pub job: Option<u64>,
    /// Outside a job: get an allocation first, with these submit flags as typed (`-n`, `-c`,
    /// `--mem`, `-t`, `-p`, `--image`, ...); it ends with the step, as srun's does.
    #[serde(default)]
    pub allocate: Option<Vec<String>>,
    /// Whose options `allocate` holds (`bsub -Is`, `qsub -I`: theirs).
    #[serde(default)]
    pub allocate_syntax: OptionSyntax,
    /// With `allocate`: the image file its options name, with the cluster's name of the
    /// client's upload of it (as [`SubmitRequest::image_files`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub image_files: std::collections::BTreeMap<String, String>,
    /// With `allocate`: run no tasks, only hold the allocation for the client (`berth
    /// alloc`, salloc) until it sends [`AllocationExit`] or goes away. `argv` names the job.
    #[serde(default)]
    pub hold: bool,
    /// Not a new step: the client of step N of `job`, running already, back after its node
    /// agent went away (its `berth up` restarted), for the step's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<u32>,
    /// `None`: the job's number of tasks.
    pub ntasks: Option<u32>,
    /// How many of the job's nodes the tasks spread over (`srun -N`); `None`: as many as
    /// there are tasks, up to all of them.
    #[serde(default)]
    pub nodes: Option<u32>,
    /// These of the job's nodes (`srun -w`), the tasks spread over them in order; with
    /// `nodes` more, the job's others after them.
    #[serde(default)]
    pub nodelist: Option<Vec<String>>,
    /// None of these of the job's nodes (`srun -x`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `None`: the job's CPUs per task.
    pub cpus_per_task: Option<u32>,
    pub argv: Vec<String>,
    /// The client's environment, which the tasks get (plus their own SLURM_PROCID, ...).
    pub env: Vec<(String, String)>,
    /// The client's working directory, where the tasks start (and a new allocation's).
    pub cwd: String,
    /// Where the tasks start instead, a directory in the image (`srun --container-workdir`).
    #[serde(default)]
    pub container_workdir: Option<String>,
    /// In a job: run the tasks in a container of this image of their own, on each node, in
    /// the job's cgroup and allocation (`srun --container-image`, as pyxis does), rather than
    /// in the job's container.
    #[serde(default)]
    pub image: Option<String>,
    /// Binds into that container (`SRC[:DST[:ro|rw]]`).
    #[serde(default)]
    pub binds: Vec<String>,
    /// That container leaves the user's home out (`--no-container-mount-home`).
    #[serde(default)]
    pub no_home: bool,
    /// Variables whose client values win over that image's, PATH included
    /// (`--container-env`).
    #[serde(default)]
    pub host_env: Vec<String>,
    /// A named container of the job, `NAME[:auto|create|exec|no_exec]` (`srun
    /// --container-name`, as pyxis has it): on each node, the step joins it while it runs,
    /// or starts it again over the files earlier steps left in it, or creates it of `image`;
    /// it lasts until the job ends. The job's own container if the job has that name.
    #[serde(default)]
    pub container_name: Option<String>,
    /// Save the files of the step's own container (its image and what the tasks changed)
    /// to this squashfs file once its tasks end, on each of its nodes, as the user (`srun
    /// --container-save`, pyxis's); an absolute path.
    #[serde(default)]
    pub container_save: Option<String>,
    /// The tasks run the command through the image's ENTRYPOINT (`srun
    /// --container-entrypoint`, pyxis's), in the step's own container.
    #[serde(default)]
    pub container_entrypoint: bool,
    /// The tasks are root inside their own container and the user outside (`srun
    /// --container-remap-root`, pyxis's): they may change the image's files, nothing else.
    #[serde(default)]
    pub container_remap_root: bool,
    /// Prefix every line of output with the task's rank (`srun --label`).
    #[serde(default)]
    pub label: bool,
    /// The client is srun: the tasks' failures are said in its words (`srun: error: NODE:
    /// task 0: Exited with exit code 7`).
    #[serde(default)]
    pub srun: bool,
    /// Its tasks' failures are not said, only the status (`berth rsh`, as ssh; an
    /// interactive job's command, as bsub -I and qsub -I).
    #[serde(default)]
    pub quiet: bool,
    /// Kill the other tasks as soon as one exits non-zero (`srun --kill-on-bad-exit`).
    #[serde(default = "yes")]
    pub kill_on_bad_exit: bool,
    /// Torque's slot of each task, by rank (pbsdsh -n, -h and -u name the slots they run
    /// on); empty: its rank's slot, on its node of the step.
    #[serde(default)]
    pub pbs_slots: Vec<PbsSlot>,
    /// Pin each task to its own share of the job's CPUs (`srun --cpu-bind=cores`).
    #[serde(default = "yes")]
    pub cpu_bind: bool,
    /// Allow more tasks than the job has CPUs for (`srun --overcommit`).
    #[serde(default)]
    pub overcommit: bool,
    /// Memory of the step's own on each of its nodes, bytes, out of the job's (`srun
    /// --mem` in a job): its tasks are held to it, in a cgroup of the step's below the
    /// job's, and the job's other steps cannot have it meanwhile (they wait, as it waits
    /// for memory they hold). 0, or `None` with no `memory_per_cpu`: all of the job's
    /// memory, shared with the other steps, none held (Slurm's default).
    #[serde(default)]
    pub memory: Option<u64>,
    /// The same per CPU of the step's on each node (`srun --mem-per-cpu`).
    #[serde(default)]
    pub memory_per_cpu: Option<u64>,
    /// Share CPUs with the job's other steps (`srun --overlap`): the step neither waits for
    /// CPUs the others hold nor holds any of its own against them. Without it a step waits
    /// until the job has the CPUs it asks for free of its other running steps, as Slurm's
    /// do.
    #[serde(default)]
    pub overlap: bool,
    /// The step's own time limit, seconds (`srun -t` in a job): its tasks are ended then,
    /// the job going on.
    #[serde(default)]
    pub time_limit: Option<u64>,
    /// Run the first task on a pseudo-terminal of its own, relayed to the client's, the
    /// others without input or output, all on one node (`srun --pty`): an interactive
    /// shell in the job's container.
    #[serde(default)]
    pub pty: bool,
    /// Serve the tasks PMI-1 and PMI-2, each task with its own connection to the server in
    /// PMI_FD as slurmstepd and hydra give one, so that MPI programs start without mpiexec
    /// (`srun --mpi=pmi1` or `pmi2`; `--mpi=none`: not).
    #[serde(default = "yes")]
    pub pmi: bool,
    /// Serve the tasks PMIx from each of their nodes (`srun --mpi=pmix`: what Open MPI's
    /// ranks need to start without mpirun), with the node's PMIx library.
    #[serde(default)]
    pub pmix: bool,
    /// Files of each task (`srun -o out-%t`), opened on its node as the user.
    #[serde(default)]
    pub task_files: Option<TaskFiles>,
    /// Only the task of this rank reads the client's input (`srun --input=N`, the others
    /// read none); `None`: every task gets all of it (srun's default, `--input=all`).
    #[serde(default)]
    pub input_task: Option<u32>,
    /// GPUs of its own for each task (`srun --gpus-per-task`), out of the job's on its node
    /// (CUDA_VISIBLE_DEVICES).
    #[serde(default)]
    pub gpus_per_task: Option<u32>,
    /// srun's `--multi-prog`: the configuration's text, a program per set of ranks (`argv`
    /// names its file).
    #[serde(default)]
    pub multi_prog: Option<String>,
    /// The step's name in a job (srun's `-J`; sacct's JobName of its line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl StepRequest {
    /// `argv` as one task in a job's container with the client's environment and working
    /// directory, and srun's defaults: no allocation of its own, the job's CPUs per task,
    /// no PMI; callers say what else they ask for.
    pub fn new(argv: Vec<String>, env: Vec<(String, String)>, cwd: String) -> StepRequest {
        StepRequest {
            job: None,
            allocate: None,
            allocate_syntax: OptionSyntax::Berth,
            image_files: Default::default(),
            hold: false,
            attach: None,
            ntasks: Some(1),
            nodes: None,
            exclude: Vec::new(),
            nodelist: None,
            cpus_per_task: None,
            argv,
            env,
            cwd,
            container_workdir: None,
            image: None,
            binds: Vec::new(),
            no_home: false,
            host_env: Vec::new(),
            container_name: None,
            container_save: None,
            container_entrypoint: false,
            container_remap_root: false,
            label: false,
            srun: false,
            quiet: false,
            kill_on_bad_exit: true,
            pbs_slots: Vec::new(),
            cpu_bind: true,
            overcommit: false,
            memory: None,
            memory_per_cpu: None,
            overlap: false,
            time_limit: None,
            pty: false,
            pmi: false,
            pmix: false,
            task_files: None,
            input_task: None,
            gpus_per_task: None,
            multi_prog: None,
            name: None,
        }
    }

    /// The allocation a request outside a job asks for first (`None`: it runs in a job), as
    /// the node that got it on its step socket asks the controller: `uid` and `gid` its
    /// client's (the node fills in `host`).
    pub fn allocation(&self, uid: u32, gid: u32) -> Option<AllocationRequest> {
        let args = self.allocate.clone()?;
        Some(AllocationRequest {
            uid,
            gid,
            argv: self.argv.clone(),
            args,
            syntax: self.allocate_syntax,
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            host: String::new(),
            image_files: self.image_files.clone(),
        })
    }
}

/// A step's files of each task, whose names hold a task's symbols (`%t` rank, `%n` node
/// index, `%s` step, `%N` node; the job's already expanded, `%` written `%%`), relative to
/// the step's directory. Tasks whose names are the same share the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskFiles {
    pub output: Option<String>,
    pub error: Option<String>,
    pub input: Option<String>,
    /// Append to the output and error files instead of truncating them.
    #[serde(default)]
    pub append: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn yes() -> bool {
    true
}

/// A node's agent asking, for a `berth step` outside a job on its node, for an allocation of
/// its own (`POST /v1/agents/allocations`): the client's identity (its peer credentials on
/// the agent's step socket) and the step's submit flags as typed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllocationRequest {
    pub uid: u32,
    pub gid: u32,
    /// The step's command, which names the allocation's job.
    pub argv: Vec<String>,
    pub args: Vec<String>,
    #[serde(default)]
    pub syntax: OptionSyntax,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// The node the step was asked on.
    #[serde(default)]
    pub host: String,
    /// As [`SubmitRequest::image_files`].
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub image_files: std::collections::BTreeMap<String, String>,
}

/// The agent asking about its allocation (`POST /v1/agents/allocations/state`), or ending it
/// (`/release`, with its step's status; `None`: cancelled).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllocationUpdate {
    pub job: u64,
    #[serde(default)]
    pub code: Option<i32>,
    /// `/state`: answer once this holds, or after [`ALLOCATION_WAIT_MS`] with how it stands
    /// then (`None`: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<AllocationWait>,
}

/// What a node's agent waits for of its allocation (see [`AllocationUpdate::wait`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AllocationWait {
    /// It runs (or it ended without running).
    Running,
    /// It ended.
    Ended,
}

/// How long the controller holds a node's question about its allocation at most: under the
/// node's own time limit for an answer.
pub const ALLOCATION_WAIT_MS: u64 = 3000;

/// What the node agent sends back on the step socket, one JSON line each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StepEvent {
    /// The step was refused or could not start; the message says why.
    Error(String),
    /// The allocation the client asked for is submitted, as a job.
    Submitted(SubmitResponse),
    /// It waits for resources (said after a second of waiting).
    Queued { job: u64 },
    /// It runs; `host` is its first node.
    Allocated {
        job: u64,
        #[serde(default)]
        host: String,
    },
    /// A held allocation (`StepRequest::hold`) runs: the job's variables (SLURM_JOB_ID,
    /// SLURM_JOB_NODELIST, ...) for the client's command. An `Error` after it: the job ended
    /// (time limit, cancelled) while the client held it.
    Granted {
        job: u64,
        env: Vec<(String, String)>,
    },
    /// Something for the user, said on the client's stderr as it is (a step's end at its
    /// time limit, in slurmstepd's words).
    Notice(String),
    /// The step waits for CPUs or memory the job's other steps hold, or for its job's
    /// resume (said once, as srun says "step creation temporarily disabled, retrying"):
    /// `reason` in srun's words.
    Busy {
        job: u64,
        #[serde(default)]
        reason: String,
    },
    /// The tasks are starting.
    Started { step: u32, ntasks: u32 },
    /// Every task has ended; `code` is the worst of their exit statuses.
    Exited { code: i32 },
}

/// What `berth step` sends after the request: a signal to pass on to every task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepSignal {
    pub signal: i32,
}

/// What `berth alloc` sends when its command has ended: the held allocation ends with the
/// command's exit status, which becomes the job's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllocationExit {
    pub exit: i32,
}
