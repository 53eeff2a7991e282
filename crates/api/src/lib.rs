//! The controller's HTTP API: request and response types shared by the CLI, the controller
//! and (later) remote agents. JSON over HTTP/1.1, on a Unix socket (the caller's identity comes
//! from SO_PEERCRED) or TCP with a token.
//!
//! Owns: the wire format. Must not: hold logic; the CLI sends what the user typed (the script
//! and the flags) and the controller parses and validates it, so there is one parser.

use serde::{Deserialize, Serialize};

/// `POST /v1/jobs`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The batch script's text.
    pub script: String,
    /// Its file name, for the default job name (as sbatch names jobs after the script).
    pub script_name: String,
    /// `berth submit` flags as typed (they override the script's directives).
    #[serde(default)]
    pub args: Vec<String>,
    /// The directory `berth submit` ran in.
    pub cwd: String,
    /// The submitter's environment (exported to the job as `--export` says).
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub job_id: u64,
    /// Number of jobs created (array tasks), 1 for a plain job.
    pub jobs: u64,
    /// Directives accepted but ignored, and other things the user should know.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A job as `berth queue`, `show` and `history` report it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobInfo {
    pub id: u64,
    /// The array's first job id and this task's index, for array tasks.
    pub array_job_id: Option<u64>,
    pub array_task_id: Option<u32>,
    pub name: String,
    pub user: String,
    pub partition: String,
    /// PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL.
    pub state: String,
    /// Why it is pending (Slurm's reason names), or how it failed.
    pub reason: Option<String>,
    pub submit_time: u64,
    pub start_time: Option<u64>,
    pub end_time: Option<u64>,
    /// Seconds; `None` is the partition's limit.
    pub time_limit: Option<u64>,
    pub nodes: Vec<String>,
    pub cpus: u64,
    pub memory: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// CPU time and peak memory from the job's cgroup.
    pub cpu_usec: Option<u64>,
    pub max_rss_bytes: Option<u64>,
    pub image: Option<String>,
    pub workdir: String,
    pub stdout: String,
    pub stderr: Option<String>,
    pub priority: Option<f64>,
    pub held: bool,
    /// Times the job was requeued.
    #[serde(default)]
    pub restarts: u32,
}

/// `POST /v1/jobs/{id}/cancel`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Signal name or number to send instead of ending the job (`berth cancel --signal`).
    pub signal: Option<String>,
}

/// A node as `berth nodes` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
}

/// A partition as `berth partitions` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionInfo {
    pub name: String,
    pub default: bool,
    pub nodes: Vec<String>,
    pub max_time: Option<u64>,
    pub state: String,
}

/// Every error: the HTTP status says what kind, `error` says what and what to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
