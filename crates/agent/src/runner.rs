//! Running one job: the `berth internal run-job LAUNCH.json` process.
//!
//! It runs as root, single-threaded, and:
//! 1. opens the job's output, error and input files *as the job's user* (setfsuid/setfsgid
//!    and the user's groups), so a symlink planted in the user's directory can never make
//!    root write somewhere the user could not (the classic spooler attack);
//! 2. makes them the container's stdin, stdout and stderr;
//! 3. runs the job script in its image through `berth-runtime`, as the user, in a cgroup named
//!    `berth/<runner pid>-job<id>` sized to the allocation, with the time limit enforced (SIGTERM, grace,
//!    SIGKILL);
//! 4. writes a [`JobResult`] next to the launch file, atomically, as soon as the job has ended
//!    (and, forked by the node's launcher, says so to the agent: see `launcher`), then removes
//!    the job's cgroup and exits 0; a non-zero exit of the runner itself means berth failed,
//!    not the job.

use berth_core::job::SignalTarget;
use berth_runtime::cgroup::Limits;
use berth_runtime::{
    Action, ImageDefaults, Options, Rootfs, TimeLimit, BERTH_IN_CONTAINER, BERTH_LOADERS,
};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the job's directory (its script, its hostfile) appears inside the container.
pub const JOB_DIR_IN_CONTAINER: &str = "/.berth/job";
/// The script, in that directory, under the name the controller saves it with.
pub const SCRIPT_IN_CONTAINER: &str = "/.berth/job/script";
/// Where berth's own executable appears in a job's container (on its PATH), for `berth step`.
pub const TOOLS_IN_CONTAINER: &str = "/.berth/bin";

/// How a job's record begins to say where its output went instead of the file it named.
pub const UNDELIVERED: &str = "output undelivered";

/// Everything needed to run one job on this node, resolved by the controller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobLaunch {
    pub job_id: u64,
    /// Which run of the job this is: its restarts so far. A start of a run the controller
    /// gave up on is refused ([`crate::runs`]), and the run's end is reported with it.
    #[serde(default)]
    pub run: u32,
    pub user: String,
    /// The image's squashfs file; `None` runs the script on the host, as the user, with the
    /// same limits (the controller sends that only where the configuration allows it).
    pub image: Option<PathBuf>,
    /// The image's environment (its ENV), applied under the job's own.
    #[serde(default)]
    pub image_env: Vec<String>,
    /// The image's ENTRYPOINT, which the script runs through (`--container-entrypoint`).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// A job submitted with qsub: its output and error files' names as PBS gives them, for a
    /// `stdout` or `stderr` that is a directory (PBS writes them in it); its time limit's
    /// end is said in PBS's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pbs_names: Option<(String, String)>,
    /// A job submitted with bsub: its run limit's end is said in LSF's words, and its
    /// output and error files' directories are made where missing (`-o DIR/`), as LSF does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lsf: bool,
    /// When the job was submitted (LSF's job report says it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_time: Option<u64>,
    /// Make `workdir` (and the directories above it) where missing, as the user (bsub -cwd
    /// with a pattern, as LSF makes it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_workdir: bool,
    /// Where to fetch the image's squashfs file from when `image` is not on this node yet
    /// (a node with a store of its own: the controller serves its images to its nodes).
    #[serde(default)]
    pub image_source: Option<ImageSource>,
    /// The job script, saved by the controller as `script` (owned by the user, mode 0700) in
    /// the job's directory, which appears read-only at [`JOB_DIR_IN_CONTAINER`].
    pub script: PathBuf,
    /// The script's arguments ($1, $2, ...).
    #[serde(default)]
    pub script_args: Vec<String>,
    /// The job's working directory on the host.
    pub workdir: PathBuf,
    pub stdout: PathBuf,
    /// `None`: stderr goes to the stdout file.
    pub stderr: Option<PathBuf>,
    pub stdin: Option<PathBuf>,
    /// Append to the output files instead of truncating them.
    #[serde(default)]
    pub append: bool,
    /// The error file's own, where it differs (LSF's `-e` and `-eo`); `None`: `append`.
    #[serde(default)]
    pub error_append: Option<bool>,
    /// The file creation mask the job's processes and output files get (its submitter's);
    /// `None`: 022.
    #[serde(default)]
    pub umask: Option<u32>,
    /// The job's complete environment (SLURM_*, LSB_*, PBS_*, BERTH_*, exported variables).
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub binds: Vec<String>,
    /// The administrator's bind policy, which the job's binds must satisfy.
    #[serde(default)]
    pub bind_policy: berth_core::BindPolicy,
    /// Where the script starts in the image; `None`: `workdir`, bound in.
    #[serde(default)]
    pub container_workdir: Option<String>,
    /// The script starts in its user's home (PBS's jobs without `qsub -d`), its working
    /// directory still bound in (PBS_O_WORKDIR), unless the home is left out.
    #[serde(default)]
    pub start_in_home: bool,
    /// Leave the user's home out of the container.
    #[serde(default)]
    pub no_home: bool,
    /// Root inside the container, the user outside (pyxis's `--container-remap-root`).
    #[serde(default)]
    pub remap_root: bool,
    /// Once the script ends, save its container to this squashfs file, as the user
    /// (pyxis's `--container-save`), before the job's end is recorded.
    #[serde(default)]
    pub save: Option<PathBuf>,
    /// The job's own directory for temporary files on this node's disk, which its
    /// container gets at /tmp, or a job on the host in TMPDIR (the node makes it, and
    /// empties it when it forgets the job: [`crate::node::NodeAgent::start`]); `None`: a
    /// tmpfs.
    #[serde(default)]
    pub tmp: Option<PathBuf>,
    pub cpuset: Option<String>,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    /// How many NVIDIA GPUs to make available...
    #[serde(default)]
    pub gpus: Option<u32>,
    /// ... and which, by device minor (the job's own); empty: the node's first `gpus`.
    #[serde(default)]
    pub gpu_ids: Vec<u32>,
    /// Seconds; `None` for no limit.
    pub time_limit: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL at the time limit.
    #[serde(default = "default_grace")]
    pub grace: u64,
    /// A signal before the time limit (sbatch `--signal`), for this node's processes.
    #[serde(default)]
    pub warning: Option<LaunchWarning>,
    /// berth's own (static) executable, bound into the container at [`TOOLS_IN_CONTAINER`], and
    /// the directory of the node agent's step socket: the script's `berth step` needs both.
    #[serde(default)]
    pub tools: Option<JobTools>,
}

/// A job's warning signal: `signal` to `target` once `after` seconds of its time limit have
/// run (time suspended does not count).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LaunchWarning {
    pub signal: i32,
    pub after: u64,
    pub target: berth_core::job::SignalTarget,
}

/// The limit of a job without one, in seconds: about 136 years, the most the runtime's
/// alarm counts (also what a running job's removed limit becomes).
pub const NO_LIMIT: u64 = u32::MAX as u64;

/// An image's squashfs file as the controller serves it to its nodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    /// `/v1/agents/images/<id>` on the controller.
    pub path: String,
    /// The controllers to ask, `https://HOST:PORT` each, in turn (the node's agent fills
    /// them in: the one it talks to first).
    #[serde(default)]
    pub from: Vec<String>,
    /// Other nodes' agents whose caches hold the file (`https://HOST:PORT` each), asked
    /// first, in turn (`GET /v1/agent/images/<sha256>`), so that the controller does not
    /// serve every node: one that fails is passed over.
    #[serde(default)]
    pub peers: Vec<String>,
    /// The file's SHA-256, hex: what is fetched must have it.
    pub sha256: String,
    /// A credential for the fetch, signed by the controller.
    pub token: String,
    /// The SHA-256 of the cluster's TLS certificate, hex ([`crate::tls`]): what the daemons
    /// asked must show.
    pub tls: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobTools {
    pub berth: PathBuf,
    pub step_dir: PathBuf,
    /// Where the node mounts each image once for all its jobs ([`berth_runtime::shared`]).
    pub image_mounts: PathBuf,
    /// Where the node keeps the wrapper scripts of berth's tools ([`node_tools`]).
    pub wrappers: PathBuf,
}

fn default_grace() -> u64 {
    DEFAULT_KILL_WAIT
}

/// Seconds between a job's SIGTERM and its SIGKILL where its launch does not say (Slurm's
/// KillWait's default).
pub const DEFAULT_KILL_WAIT: u64 = 30;

/// Seconds a job has to end once its time limit's signal came, before it is killed: the
/// cluster's KillWait (`kill_wait`), or LSF's ten minutes after its run limit's SIGUSR2
/// for a job submitted through bsub (`lsf`).
pub fn limit_grace(lsf: bool, kill_wait: u64) -> u64 {
    match lsf {
        true => 600,
        false => kill_wait,
    }
}

/// How a job ended, as the agent reports it to the controller.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobResult {
    /// The script's exit code, or 128 + signal.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub cpu_usec: Option<u64>,
    #[serde(default)]
    pub user_cpu_usec: Option<u64>,
    #[serde(default)]
    pub system_cpu_usec: Option<u64>,
    pub max_rss_bytes: Option<u64>,
    pub started: u64,
    pub ended: u64,
    /// berth could not start the job (bad image, unwritable output file, ...): the message.
    pub error: Option<String>,
    /// What its user should know of a job that ran: where its output went instead of the
    /// file it named (a PBS or LSF job's, which runs all the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot read the job launch {path}: {reason}")]
    Launch { path: PathBuf, reason: String },
    #[error("cannot write the job result {path}: {source}")]
    Result {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Seconds since the epoch: the clock of job records, results and credentials.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Local time of `t` (Unix seconds): year, month (1-12), day, hour, minute, second,
/// weekday (0 = Sunday).
pub fn local(t: u64) -> (i32, u32, u32, u32, u32, u32, u32) {
    let time = t as libc::time_t;
    // SAFETY: localtime_r fills the zeroed struct it is given.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&time, &mut tm);
        tm
    };
    (
        tm.tm_year + 1900,
        tm.tm_mon as u32 + 1,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
        tm.tm_wday as u32,
    )
}

/// The months' names as C's time functions and the batch systems write them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Wed Dec  3 10:00:00 2026`, local time, as ctime(3), LSF's job report and PBS's qstat -f
/// print times.
pub fn ctime(t: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let (y, mo, d, h, mi, s, wd) = local(t);
    format!(
        "{} {} {d:>2} {h:02}:{mi:02}:{s:02} {y}",
        DAYS[wd as usize],
        MONTHS[mo as usize - 1]
    )
}

/// The hosts of LSB_MCPU_HOSTS (`n1 2 n2 1`) as LSF's job report names them: `<2*n1>`,
/// `<n2>`.
fn executed_on(mcpu_hosts: &str) -> Vec<String> {
    let words: Vec<&str> = mcpu_hosts.split_whitespace().collect();
    words
        .chunks(2)
        .map(|pair| match pair {
            [host, "1"] | [host] => format!("<{host}>"),
            [host, slots, ..] => format!("<{slots}*{host}>"),
            [] => String::new(),
        })
        .collect()
}

/// The job report LSF appends to a job's output file at its end (with its output written
/// there directly, LSB_STDOUT_DIRECT's way): who ran what where and when, how it ended in
/// LSF's words, and what it used. `env` is the job's (LSB_JOBNAME, LSB_QUEUE, ...).
fn lsf_report(
    launch: &JobLaunch,
    outcome: &berth_runtime::Outcome,
    (started, ended): (u64, u64),
    home: &str,
    cancelled: Option<&str>,
) -> String {
    let var = |name: &str| {
        (launch.env.iter())
            .find(|(k, _)| k == name)
            .map_or(String::new(), |(_, v)| v.clone())
    };
    let (name, queue, cluster) = (
        var("LSB_JOBNAME"),
        var("LSB_QUEUE"),
        var("SLURM_CLUSTER_NAME"),
    );
    let (user, host, id) = (&launch.user, crate::node::hostname(), var("LSB_JOBID"));
    let id = match var("LSB_JOBINDEX").as_str() {
        "" | "0" => id,
        index => format!("{id}[{index}]"),
    };
    let submitted = launch.submit_time.unwrap_or(started);
    let done = outcome.code == 0 && !outcome.timed_out;
    let ending = match (outcome.timed_out, outcome.oom_killed, outcome.signal) {
        _ if done => "Successfully completed.".to_string(),
        _ if cancelled.is_some() => format!(
            "{}\n{}",
            match cancelled.is_some_and(|why| why.contains("REQUEUE")) {
                true => "TERM_REQUEUE_OWNER: job killed and requeued by owner.",
                false => "TERM_OWNER: job killed by owner.",
            },
            match outcome.signal {
                Some(sig) => format!("Exited with signal termination: {}.", crate::step::signal_words(sig)),
                None => format!("Exited with exit code {}.", outcome.code),
            }
        ),
        (true, ..) => format!(
            "TERM_RUNLIMIT: job killed after reaching LSF run time limit.\nExited with exit code {}.",
            outcome.code
        ),
        (_, true, _) => format!(
            "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit.\nExited with exit code {}.",
            outcome.code
        ),
        (_, _, Some(sig)) => format!(
            "Exited with signal termination: {}.",
            crate::step::signal_words(sig)
        ),
        _ => format!("Exited with exit code {}.", outcome.code),
    };
    let script = std::fs::read_to_string(&launch.script).unwrap_or_default();
    let line = "-".repeat(60);
    let usage = |what: &str, value: String| format!("    {what:<45}{value}\n");
    let cpu = outcome
        .usage
        .cpu_usec
        .map_or("-".into(), |us| format!("{:.2} sec.", us as f64 / 1e6));
    let memory =
        (outcome.usage.max_rss_bytes).map_or("-".into(), |b| format!("{} MB", b.div_ceil(1 << 20)));
    let mut report = format!(
        "\n{line}\nSender: LSF System <lsfadmin@{host}>\nSubject: Job {id}: <{name}> in cluster <{cluster}> {}\n\n",
        if done { "Done" } else { "Exited" }
    );
    report += &format!(
        "Job <{name}> was submitted from host <{}> by user <{user}> in cluster <{cluster}> at {}\n",
        var("LSB_SUB_HOST"),
        ctime(submitted)
    );
    let mut hosts = executed_on(&var("LSB_MCPU_HOSTS")).into_iter();
    report += &format!(
        "Job was executed on host(s) {}, in queue <{queue}>, as user <{user}> in cluster <{cluster}> at {}\n",
        hosts.next().unwrap_or_else(|| format!("<{host}>")),
        ctime(started)
    );
    for other in hosts {
        report += &format!("{:28}{other}\n", "");
    }
    report += &format!("<{home}> was used as the home directory.\n");
    report += &format!(
        "<{}> was used as the working directory.\n",
        launch.workdir.display()
    );
    report += &format!(
        "Started at {}\nTerminated at {}\nResults reported at {}\n\n",
        ctime(started),
        ctime(ended),
        ctime(ended)
    );
    report += &format!(
        "Your job looked like:\n\n{line}\n# LSBATCH: User input\n{}",
        script
    );
    if !script.ends_with('\n') {
        report.push('\n');
    }
    report += &format!("{line}\n\n{ending}\n\nResource usage summary:\n\n");
    report += &usage("CPU time :", cpu);
    report += &usage("Max Memory :", memory);
    report += &usage(
        "Run time :",
        format!("{} sec.", ended.saturating_sub(started)),
    );
    report += &usage(
        "Turnaround time :",
        format!("{} sec.", ended.saturating_sub(submitted)),
    );
    report += "\nThe output (if any) is above this job summary.\n\n";
    if let Some(err) = launch.stderr.as_ref().filter(|e| **e != launch.stdout) {
        report += &format!(
            "\n\nPS:\n\nRead file <{}> for stderr output of this job.\n\n",
            err.display()
        );
    }
    report
}

/// `2026-12-03T10:00:00`, local time, as Slurm's commands print times (its "standard"
/// SLURM_TIME_FORMAT).
pub fn slurm_timestamp(t: u64) -> String {
    let (y, mo, d, h, mi, s, _) = local(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
}

/// The result file written next to a launch file.
pub fn result_path(launch: &Path) -> PathBuf {
    launch.with_extension("result.json")
}

/// The record of the runner of a launch file, next to it: `<pid> [<start time>]` (a forked
/// runner's start time tells it from a later process with its pid). A restarted agent or
/// controller finds the job's runner by it; a job without one never had a runner.
pub fn runner_record(launch: &Path) -> PathBuf {
    launch.with_file_name("runner.pid")
}

/// Records `pid` (started at `start`, if forked) as the runner of `launch`, whole or not at
/// all (renamed into place): written before the runner takes its job, so that no runner
/// ever runs unrecorded, whenever its agent dies.
pub fn record_runner(launch: &Path, pid: u32, start: Option<u64>) -> std::io::Result<()> {
    let record = runner_record(launch);
    let partial = record.with_extension("pid.new");
    let text = match start {
        Some(start) => format!("{pid} {start}\n"),
        None => format!("{pid}\n"),
    };
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, &record)
}

/// Runs `f` with the file-system identity of `id` (so permission checks, and who owns what
/// it creates, are the user's), then returns to root.
fn as_user<T>(
    id: &berth_runtime::Identity,
    f: impl FnOnce() -> std::io::Result<T>,
) -> Result<std::io::Result<T>, String> {
    let groups: Vec<libc::gid_t> = if id.groups.is_empty() {
        vec![id.gid]
    } else {
        id.groups.clone()
    };
    // SAFETY: the runner is single-threaded, so changing the process's groups and file-system
    // ids affects only `f`; every call is checked or restored below.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            return Err(format!(
                "cannot take the groups of {}: {}",
                id.user,
                std::io::Error::last_os_error()
            ));
        }
        libc::setfsgid(id.gid);
        libc::setfsuid(id.uid);
        let done = f();
        libc::setfsuid(0);
        libc::setfsgid(0);
        libc::setgroups(1, [0].as_ptr());
        Ok(done)
    }
}

/// Opens `path` as the user `id` ([`as_user`]).
fn open_as(
    id: &berth_runtime::Identity,
    path: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, String> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: bad path", path.display()))?;
    let opened = as_user(id, || {
        // SAFETY: open(2) of a NUL-terminated path; the descriptor, if any, owned at once.
        unsafe {
            match libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) {
                fd if fd >= 0 => Ok(OwnedFd::from_raw_fd(fd)),
                _ => Err(std::io::Error::last_os_error()),
            }
        }
    })?;
    opened.map_err(|err| format!("cannot open {} as {}: {err}", path.display(), id.user))
}

/// Makes directory `dir` and those above it that are missing, as the user `id`
/// ([`as_user`]), under the job's file creation mask `umask`.
fn mkdir_as(id: &berth_runtime::Identity, dir: &Path, umask: u32) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let made = as_user(id, || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o777 & !umask)
            .create(dir)
    })?;
    made.map_err(|err| format!("cannot make {} as {}: {err}", dir.display(), id.user))
}

fn dup_onto(fd: &OwnedFd, target: libc::c_int) -> Result<(), String> {
    // SAFETY: dup2 onto a standard descriptor; both are valid.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(format!(
            "cannot redirect descriptor {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Runs the job described in `launch_path` and writes its result. Must run as root, in a
/// single-threaded process. With `report`, says `R <pid>` there once the result is written,
/// which is before the job's cgroup has been removed and this process has ended (the node
/// launcher gives its runners the agent's socket for that).
pub fn run(launch_path: &Path, report: Option<OwnedFd>) -> Result<JobResult, RunnerError> {
    let bad = |reason: String| RunnerError::Launch {
        path: launch_path.to_path_buf(),
        reason,
    };
    berth_runtime::catch_limit_updates();
    berth_runtime::follow_limit_file(&launch_path.with_file_name(crate::node::TIME_LIMIT_FILE));
    let text = std::fs::read_to_string(launch_path).map_err(|e| bad(e.to_string()))?;
    let launch: JobLaunch = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let started = now();
    let out = result_path(launch_path);
    let tmp = out.with_extension("tmp");
    // Room for the result, taken now: a job that fills its node's disk still has its end
    // recorded (written over these bytes, which needs no more of it).
    let _ = std::fs::write(&tmp, [b' '; RESULT_ROOM]);
    let report = report.map(std::os::unix::net::UnixStream::from);
    let record = |result: JobResult| -> Result<JobResult, RunnerError> {
        let text = serde_json::to_vec_pretty(&result).expect("result serialises");
        write_result(&tmp, &out, &text).map_err(|source| RunnerError::Result {
            path: out.clone(),
            source,
        })?;
        if let Some(report) = &report {
            // One write, which the socket keeps whole: the other runners report there too.
            let line = format!("R {}\n", std::process::id());
            let _ = std::io::Write::write_all(&mut &*report, line.as_bytes());
        }
        Ok(result)
    };
    let undelivered = RefCell::new(Vec::new());
    let of = |outcome: &berth_runtime::Outcome| JobResult {
        exit_code: outcome.code,
        signal: outcome.signal,
        timed_out: outcome.timed_out,
        oom_killed: outcome.oom_killed,
        cpu_usec: outcome.usage.cpu_usec,
        user_cpu_usec: outcome.usage.user_usec,
        system_cpu_usec: outcome.usage.system_usec,
        max_rss_bytes: outcome.usage.max_rss_bytes,
        started,
        ended: now(),
        error: None,
        note: (!undelivered.borrow().is_empty()).then(|| undelivered.borrow().join("; ")),
    };
    let mut recorded = None;
    let job_dir = launch_path.parent().unwrap_or(Path::new("."));
    // (A run before this one's, of a job requeued.)
    let _ = std::fs::remove_file(job_dir.join(ENDED_FILE));
    let outcome = start(&launch, &undelivered, |outcome| {
        // In the job's error file, where its user looks, as slurmstepd (or PBS's MoM) says it,
        // naming the node as the cluster does (its host's name may differ); its steps'
        // clients are told too, once the steps have ended ([`ENDED_FILE`]).
        let node = (launch.env.iter())
            .find(|(k, _)| k == "SLURMD_NODENAME")
            .map_or_else(crate::node::hostname, |(_, v)| v.clone());
        let stepd = |at: u64, why: &str| {
            berth_core::say!(
                "slurmstepd: error: *** JOB {} ON {node} CANCELLED AT {}{why} ***",
                launch.job_id,
                slurm_timestamp(at)
            );
            let _ = std::fs::write(job_dir.join(ENDED_FILE), format!("{at}\n{why}"));
        };
        // Cancelled, where the agent left the record of it (a job of sbatch's dialect: the
        // controller's choice); gone once said, as a job requeued may run here again.
        let cancelled = std::fs::read_to_string(job_dir.join(CANCELLED_FILE)).ok();
        match (outcome.timed_out, &launch.pbs_names) {
            // (LSF and PBS say nothing of it.)
            (false, None) if !launch.lsf => {
                if let Some((at, why)) = cancelled.as_deref().and_then(|c| c.split_once('\n')) {
                    stepd(at.parse().unwrap_or_else(|_| now()), why);
                }
            }
            (false, _) => {}
            (true, None) if launch.lsf => {
                berth_core::say!("TERM_RUNLIMIT: job killed after reaching LSF run time limit.")
            }
            (true, None) => stepd(
                outcome.timed_out_at.unwrap_or_else(now),
                " DUE TO TIME LIMIT",
            ),
            // (Past the limit, as PBS's check finds it: its first second over it at least.)
            (true, Some(_)) => {
                let limit = launch.time_limit.unwrap_or(0);
                let at = outcome.timed_out_at.unwrap_or_else(now);
                berth_core::say!(
                    "=>> PBS: job killed: walltime {} exceeded limit {limit}",
                    at.saturating_sub(started).max(limit + 1),
                )
            }
        }
        // (Removed once [`ENDED_FILE`] says it, for the steps.)
        if cancelled.is_some() {
            let _ = std::fs::remove_file(job_dir.join(CANCELLED_FILE));
        }
        // LSF's job report, after the output (flushed: the runner ends with _exit).
        if launch.lsf {
            let home = berth_runtime::Identity::lookup(&launch.user, false)
                .map_or(String::new(), |id| id.home);
            let ended = (started, now());
            let report = lsf_report(&launch, outcome, ended, &home, cancelled.as_deref());
            let mut stdout = std::io::stdout();
            let _ = std::io::Write::write_all(&mut stdout, report.as_bytes());
            let _ = std::io::Write::flush(&mut stdout);
        }
        // No new step starts in a job whose script has ended (the steps' ends below free
        // CPUs that waiting steps would otherwise get): `NodeAgent::script_ended`.
        let _ = std::fs::write(script_ended_path(job_dir, std::process::id()), b"");
        // The steps' tasks get a SIGTERM (those of a job at its time limit or cancelled had
        // theirs) and the grace the script had to end on their own, as Slurm's KillWait.
        let grace = std::time::Duration::from_secs(launch.grace);
        let termed = outcome.timed_out || cancelled.is_some();
        end_steps(job_dir, launch.job_id, !termed, grace);
        recorded = Some(record(of(outcome)))
    });
    match (recorded, outcome) {
        (Some(recorded), Ok(_)) => recorded,
        // The job's end is recorded; what failed after it (removing its cgroup, which the
        // node's upkeep sweeps) was said in its error file (see start).
        (Some(recorded), Err(_)) => recorded,
        (None, Ok(outcome)) => record(of(&outcome)),
        (None, Err((code, message))) => record(JobResult {
            exit_code: code,
            started,
            ended: now(),
            error: Some(message),
            ..Default::default()
        }),
    }
}

/// The bytes a runner takes for its job's result as it starts (a result is a few hundred).
const RESULT_ROOM: usize = 4096;

/// Writes a job's result `text` to `out`, through `tmp` (over the room taken there at the
/// job's start, if it still has it). Where the disk is full (or the user's quota over), it
/// says so in the job's error file once and tries again, a little less often each time,
/// until there is room: the job keeps its cgroup and its CPUs meanwhile, and its end is
/// recorded as it was, not lost (it would be NODE_FAIL, "ended without a result").
fn write_result(tmp: &Path, out: &Path, text: &[u8]) -> std::io::Result<()> {
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(tmp)?;
        file.write_all_at(text, 0)?;
        file.set_len(text.len() as u64)?;
        std::fs::rename(tmp, out)
    };
    let mut pause = std::time::Duration::from_millis(100);
    let mut said = false;
    loop {
        match write() {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
                if !said {
                    berth_core::say!(
                        "berth: cannot write the job's result {}: {e}; trying again until there is room",
                        out.display()
                    );
                    said = true;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            done => return done,
        }
    }
}

/// The file a node's agent leaves in a job's directory when the job is cancelled: when
/// (seconds), a newline, and why (see [`crate::node::NodeAgent::cancel`]).
pub const CANCELLED_FILE: &str = "cancelled";

/// The file a runner leaves in its job's directory when the job was cancelled or ran out of
/// time, as [`CANCELLED_FILE`] says it (which goes once this is there), before its steps
/// are ended: their clients are told so in slurmstepd's words (`*** STEP 42.0 ON n1
/// CANCELLED AT ...`).
pub const ENDED_FILE: &str = "ended";

/// The file runner `pid` makes in its job's directory once the job's script has ended.
pub fn script_ended_path(job_dir: &Path, pid: u32) -> PathBuf {
    job_dir.join(format!("script-ended.{pid}"))
}

/// How long the job's end waits for its steps' processes to end their tasks and say what
/// they used, before its cgroup is killed whole.
const STEPS_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Ends the steps of job `job` still running on this node when its script has ended (or
/// was killed, cancelled): the tasks of each step process registered in the job's directory
/// (`step::STEPS_DIR`) and in this runner's cgroup get a SIGTERM (`term`) and `patience` to
/// end (Slurm's KillWait); then each step process still there gets the step's end signal,
/// kills its tasks, reaps them and reports what they used, as a step ended early does;
/// waited for up to [`STEPS_GRACE`].
/// Without this, the cgroup's kill took them with their usage.
fn end_steps(job_dir: &Path, job: u64, term: bool, patience: std::time::Duration) {
    let dir = job_dir.join(crate::step::STEPS_DIR);
    let registered = || -> Vec<libc::pid_t> {
        std::fs::read_dir(&dir).map_or_else(
            |_| Vec::new(),
            |entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            },
        )
    };
    // (A stale entry's pid may be another process's by now: only this job's are signalled.)
    let cgroup = crate::node::NodeAgent::cgroup_name(job, std::process::id());
    let ours = |pid: libc::pid_t| berth_runtime::enter::is_member(pid, &cgroup);
    // Those whose end is recorded but not yet told (ended already: their tasks had the
    // cancel's SIGTERM) are waited for below as the others are: one listing for both.
    let names: Vec<String> = std::fs::read_dir(&dir).map_or_else(
        |_| Vec::new(),
        |entries| {
            (entries.flatten())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        },
    );
    let running: Vec<libc::pid_t> = (names.iter())
        .filter_map(|n| n.parse().ok())
        .filter(|&p| ours(p))
        .collect();
    let told_pending = (names.iter()).filter_map(|n| n.strip_suffix(".end")?.parse().ok());
    let mut ending = running.clone();
    let seen: Vec<libc::pid_t> = running.into_iter().chain(told_pending).collect();
    if term {
        for &pid in &ending {
            // SAFETY: kill(2) of the process group a step process of this job's cgroup
            // leads, its tasks' (the step process itself ignores SIGTERM).
            unsafe { libc::kill(-pid, libc::SIGTERM) };
        }
    }
    // Those that end by themselves within `patience` (their tasks had a SIGTERM) are not
    // ended.
    let deadline = std::time::Instant::now() + patience;
    while !ending.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let left = registered();
        ending.retain(|p| left.contains(p));
    }
    if !ending.is_empty() {
        for &pid in &ending {
            // SAFETY: kill(2) of a process of this job's cgroup.
            unsafe { libc::kill(pid, crate::step::end_signal()) };
        }
        let deadline = std::time::Instant::now() + STEPS_GRACE;
        while registered().iter().any(|p| ending.contains(p))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    // Their ends recorded: the agent removes each one's end record once it has told the
    // controller (a job seen ended before would show them still running).
    let recorded = |pid: &libc::pid_t| !dir.join(crate::step::end_record(*pid as u32)).exists();
    let deadline = std::time::Instant::now() + STEPS_GRACE;
    while !seen.iter().all(recorded) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Starts the container; errors are (exit code, message) as the job's record will show them.
/// `ended` gets the outcome as soon as it is known; `undelivered` what went elsewhere than
/// the job asked (a PBS or LSF job's file it could not write).
fn start(
    launch: &JobLaunch,
    undelivered: &RefCell<Vec<String>>,
    ended: impl FnOnce(&berth_runtime::Outcome),
) -> Result<berth_runtime::Outcome, (i32, String)> {
    let id =
        berth_runtime::Identity::lookup(&launch.user, true).map_err(|e| (125, e.to_string()))?;
    let mode = |append: bool| {
        if append {
            libc::O_APPEND
        } else {
            libc::O_TRUNC
        }
    };
    // Made as the job would make them: under its submitter's mask (the runner's own is 022).
    let perms = 0o666 & !launch.umask.unwrap_or(0o022);
    // (PBS writes a job's files into a directory that -o or -e names, as it names them.)
    let in_dir = |path: &Path, name: Option<&String>| match name {
        Some(name) if path.is_dir() => path.join(name),
        _ => path.to_path_buf(),
    };
    let names = launch.pbs_names.as_ref();
    let out_path = in_dir(&launch.stdout, names.map(|(o, _)| o));
    let err_path = (launch.stderr.as_deref()).map(|p| in_dir(p, names.map(|(_, e)| e)));
    let umask = launch.umask.unwrap_or(0o022);
    if launch.create_workdir {
        mkdir_as(&id, &launch.workdir, umask).map_err(|m| (125, m))?;
    }
    if launch.lsf {
        for dir in std::iter::once(&out_path)
            .chain(&err_path)
            .filter_map(|p| p.parent())
        {
            // (One it cannot make leaves its file unwritable, which goes elsewhere below.)
            let _ = mkdir_as(&id, dir, umask);
        }
    }
    let write = libc::O_WRONLY | libc::O_CREAT;
    let output = |path: &Path, append: bool, (pbs, lsf): (&str, &str)| {
        let flags = write | mode(append);
        let error = match open_as(&id, path, flags, perms) {
            Ok(file) => return Ok(file),
            Err(error) => error,
        };
        // PBS and LSF run a job whose file cannot be written, and keep its output elsewhere
        // (PBS's undelivered files, LSF's mail): here, in its user's home, said in the file
        // and in the job's record. Slurm's job fails (slurmstepd cannot open it).
        let ext = match (&launch.pbs_names, launch.lsf, id.home.starts_with('/')) {
            (Some(_), _, true) => pbs,
            (None, true, true) => lsf,
            _ => return Err((125, error)),
        };
        let kept = Path::new(&id.home).join(format!("{}.{ext}", launch.job_id));
        let file = open_as(&id, &kept, flags, perms)
            .map_err(|again| (125, format!("{error}; and {again}")))?;
        let mut file = std::fs::File::from(file);
        let said = format!("berth: {error}: this job's output is here instead\n");
        let _ = std::io::Write::write_all(&mut file, said.as_bytes());
        (undelivered.borrow_mut()).push(format!(
            "{UNDELIVERED} ({error}): kept in {}",
            kept.display()
        ));
        Ok(OwnedFd::from(file))
    };
    let stdout = output(&out_path, launch.append, ("OU", "out"))?;
    let stderr = match err_path {
        Some(p) if p != out_path => output(
            &p,
            launch.error_append.unwrap_or(launch.append),
            ("ER", "err"),
        )?,
        _ => stdout.try_clone().map_err(|e| (125, e.to_string()))?,
    };
    let stdin = match &launch.stdin {
        Some(p) => open_as(&id, p, libc::O_RDONLY, 0).map_err(|m| (125, m))?,
        None => dev_null().map_err(|m| (125, m))?,
    };
    dup_onto(&stdin, 0)
        .and_then(|_| dup_onto(&stdout, 1))
        .and_then(|_| dup_onto(&stderr, 2))
        .map_err(|m| (125, m))?;
    drop((stdin, stdout, stderr));
    // What keeps the script from running is said in its error file too, where its user
    // looks first (as slurmstepd's errors are), besides the job's reason.
    in_container(launch, id, ended).inspect_err(|(_, message)| berth_core::say!("berth: {message}"))
}

/// [`start`] once the job's files are its stdin, stdout and stderr.
fn in_container(
    launch: &JobLaunch,
    id: berth_runtime::Identity,
    ended: impl FnOnce(&berth_runtime::Outcome),
) -> Result<berth_runtime::Outcome, (i32, String)> {
    if let (Some(sqfs), Some(source)) = (&launch.image, &launch.image_source) {
        if !sqfs.exists() {
            fetch_image(source, sqfs).map_err(|e| (125, e))?;
        }
    }
    // Held until the job ends: the node's mount of its image stays while it is in use.
    let mut shared = None;
    let mounts = launch.tools.as_ref().map(|t| &t.image_mounts);
    let (rootfs, program) = match (&launch.image, mounts) {
        (Some(sqfs), Some(mounts)) => {
            let image = berth_runtime::shared::mount_image(mounts, sqfs)
                .map_err(|e| (125, e.to_string()))?;
            let tree = image.path.clone();
            shared = Some(image);
            (Rootfs::Directory(tree), SCRIPT_IN_CONTAINER.to_string())
        }
        (Some(sqfs), None) => (
            Rootfs::Squashfs(sqfs.clone()),
            SCRIPT_IN_CONTAINER.to_string(),
        ),
        // The controller only sends a job without an image where the configuration allows it.
        (None, _) => (Rootfs::Host, launch.script.to_string_lossy().into_owned()),
    };
    // `berth step` in the script: berth itself on PATH, and where the step socket is.
    let job_dir = launch.script.parent().unwrap_or(Path::new("/"));
    // A container to save once the script ends: its writable layer on disk, in the job's
    // directory, over the node's mount of its image.
    let saving = match (&launch.save, &shared) {
        (Some(path), Some(image)) => Some((
            path,
            image.path.clone(),
            crate::step::save::unnamed_layer(job_dir, ".job").map_err(|e| (125, e.to_string()))?,
        )),
        (Some(_), None) => return Err((
            125,
            "--container-save: only a job in an image on a node agent's mount of it can be saved"
                .into(),
        )),
        (None, _) => None,
    };
    // A working directory this node lacks, or the user may not enter: /tmp instead, said in
    // the job's error file, as slurmstepd does (the script may cd where it means to be).
    let workdir = match (launch.workdir.is_dir(), id.may_enter(&launch.workdir)) {
        (true, true) => launch.workdir.clone(),
        (exists, _) => {
            berth_core::say!(
                "berth: error: couldn't chdir to `{}': {}: going to /tmp instead",
                launch.workdir.display(),
                match exists {
                    true => "Permission denied",
                    false => "No such file or directory",
                }
            );
            PathBuf::from("/tmp")
        }
    };
    let mut env: Vec<String> = launch.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // Where temporary files go, as LSF and PBS say it, unless the submitter's says: the
    // job's own /tmp in its image, its own directory on the host.
    if let Some(tmp) = launch
        .tmp
        .as_ref()
        .filter(|_| !launch.env.iter().any(|(k, _)| k == "TMPDIR"))
    {
        match &launch.image {
            Some(_) => env.push("TMPDIR=/tmp".into()),
            None => env.push(format!("TMPDIR={}", tmp.display())),
        }
    }
    // The job's group, as this node knows its user (the controller knows the uid alone).
    env.push(format!("SLURM_JOB_GID={}", id.gid));
    env.push(format!("SLURM_JOB_GROUP={}", id.group));
    let (system_binds, path_append) = match (&launch.tools, &launch.image) {
        (Some(tools), Some(_)) => berth_inside(tools, job_dir, &mut env, |var| {
            launch.env.iter().any(|(k, _)| k == var)
        })
        .map_err(|e| (125, format!("berth step: {e}")))?,
        (Some(tools), None) => {
            let (wrappers, _) = node_tools(&tools.berth, &tools.wrappers)
                .map_err(|e| (125, format!("berth step: {e}")))?;
            env.extend(berth_sockets(&tools.step_dir));
            let rsh = wrappers.join("host-rsh");
            mpi_launchers(&rsh.to_string_lossy(), &mut env, |var| {
                launch.env.iter().any(|(k, _)| k == var)
            });
            let dirs = tools
                .berth
                .parent()
                .map(|d| d.to_string_lossy().into_owned());
            (Vec::new(), dirs.into_iter().collect())
        }
        (None, _) => (
            vec![(
                job_dir.to_path_buf(),
                JOB_DIR_IN_CONTAINER.to_string(),
                true,
            )],
            Vec::new(),
        ),
    };
    let defaults = ImageDefaults {
        name: format!("job {}", launch.job_id),
        env: launch.image_env.clone(),
        ..Default::default()
    };
    let cgroup_name = format!("{}-job{}", std::process::id(), launch.job_id);
    let options = Options {
        binds: launch.binds.clone(),
        env,
        cleanenv: true,
        pwd: Some(
            (launch.container_workdir.clone())
                // (A home this node lacks: the working directory, as without.)
                .or_else(|| {
                    let home = launch.start_in_home && !launch.no_home;
                    (home && Path::new(&id.home).is_dir()).then(|| id.home.clone())
                })
                .unwrap_or_else(|| workdir.to_string_lossy().into_owned()),
        ),
        no_home: launch.no_home,
        umask: launch.umask,
        limits: Limits {
            cpus: None,
            cpuset: launch.cpuset.clone(),
            memory: launch.memory,
            pids: launch.pids,
        },
        user: Some(id),
        gpus: match (&launch.gpu_ids, launch.gpus) {
            (ids, _) if !ids.is_empty() => {
                Some(berth_runtime::gpu::GpuRequest::Devices(ids.clone()))
            }
            (_, count) => count.map(berth_runtime::gpu::GpuRequest::Count),
        },
        system_binds,
        path_append,
        // A job without a limit has one too far to come, armed all the same, so that one
        // set while it runs (`berth update --time`) is followed.
        time_limit: Some(TimeLimit {
            limit: Duration::from_secs(launch.time_limit.unwrap_or(NO_LIMIT)),
            // LSF's run limit: SIGUSR2, and ten minutes to end (bsub -W).
            signal: match launch.lsf {
                true => libc::SIGUSR2,
                false => libc::SIGTERM,
            },
            grace: Duration::from_secs(limit_grace(launch.lsf, launch.grace)),
            warning: launch.warning.map(|w| berth_runtime::Warning {
                after: Duration::from_secs(w.after),
                signal: w.signal,
                to: match w.target {
                    SignalTarget::Batch => berth_runtime::WarnTo::Program,
                    SignalTarget::Steps => berth_runtime::WarnTo::OthersInCgroup,
                    // (On a node other than the batch script's, the container's first
                    // process is berth's holder, which runs berth's executable: spared.)
                    SignalTarget::Job => berth_runtime::WarnTo::Cgroup,
                },
            }),
        }),
        // `<pid>-<...>` like every berth cgroup, so a crashed runner's is swept (NodeAgent::upkeep);
        // the job id makes it easy to find, and the pid unique across controllers.
        cgroup_name: Some(cgroup_name.clone()),
        remap_root: launch.remap_root,
        layer: saving.as_ref().map(|(_, _, layer)| layer.clone()),
        tmp: launch.tmp.clone(),
        ..Options::default()
    };
    let spec = berth_runtime::plan(
        &defaults,
        rootfs,
        &Action::Exec(
            launch
                .entrypoint
                .iter()
                .cloned()
                .chain(std::iter::once(program))
                .chain(launch.script_args.iter().cloned())
                .collect(),
        ),
        &options,
        &launch.bind_policy,
        &[],
        &workdir,
    )
    .map_err(|e| (e.exit_code(), e.to_string()))?;
    let spec = berth_runtime::ContainerSpec {
        pid_variable: Some("SLURM_TASK_PID"),
        ..spec
    };
    // Steps started from outside the container get the job's environment (step.rs).
    let environment = environment_path(&launch.script);
    let mut text = spec.env.join("\0");
    text.push('\0');
    crate::node::write_private(&environment, text.as_bytes()).map_err(|e| (125, e))?;
    if launch.lsf && launch.memory.is_some() {
        watch_memory_limit(cgroup_name);
    }
    let outcome = match &saving {
        None => berth_runtime::run_then(&spec, ended),
        // Saved before the job's end is recorded: once it has ended, its file is there.
        Some((path, image, layer)) => {
            let outcome = berth_runtime::run(&spec).and_then(|outcome| {
                berth_runtime::enter::HostNamespace::here()
                    .map_err(crate::step::StepError::from)
                    .and_then(|host| {
                        let id = &spec.identity;
                        crate::step::save::save(&host, layer, image, id, path, "berth")
                    })
                    .map(|()| outcome)
                    .map_err(|e| berth_runtime::RuntimeError::Container {
                        code: 125,
                        message: e.to_string(),
                    })
            });
            let _ = std::fs::remove_dir_all(layer);
            outcome
        }
    }
    .map_err(|e| (e.exit_code(), e.to_string()));
    drop(shared);
    outcome
}

/// LSF's memory limit (bsub -M): once the kernel's OOM killer has killed a process of the
/// job's (cgroup `name`, at the limit), the whole job ends, as LSF ends a job over its limit:
/// SIGINT, SIGTERM, then SIGKILL to every process left, [`LSF_KILL_GAP`] apart (bkill's
/// sequence); the job's report says TERM_MEMLIMIT. Watched by a thread of the runner's.
fn watch_memory_limit(name: String) {
    let Ok(layout) = berth_runtime::cgroup::Layout::detect() else {
        return;
    };
    let parent = berth_runtime::CGROUP_PARENT;
    std::thread::spawn(move || {
        let mut seen = false;
        while berth_runtime::cgroup::oom_kills_existing(&layout, parent, &name) == 0 {
            // (Made as the container starts; gone once the job has ended.)
            let there = !berth_runtime::cgroup::existing_dirs(&layout, parent, &name).is_empty();
            if seen && !there {
                return;
            }
            seen |= there;
            std::thread::sleep(Duration::from_millis(500));
        }
        berth_core::say!("berth: the job went over its memory limit (bsub -M): ending it");
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
            let dirs = berth_runtime::cgroup::existing_dirs(&layout, parent, &name);
            let pids = berth_runtime::cgroup::pids_in(dirs.iter().map(PathBuf::as_path));
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill(2) of a process of the job's cgroup.
                unsafe { libc::kill(pid, signal) };
            }
            std::thread::sleep(LSF_KILL_GAP);
        }
    });
}

/// The time between the signals LSF sends a job it ends (bkill's, a limit's).
pub const LSF_KILL_GAP: Duration = Duration::from_secs(10);

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 random bytes from the system's generator, in hex: an id or a secret nobody can guess.
pub(crate) fn random_hex() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    Ok(hex(&bytes))
}

/// Fetches an image's squashfs file from another node that has it, else from the
/// controller, into `dest` (this node's cache):
/// into a file of its own first, checked against its SHA-256, then linked into place, so
/// that `dest` is whole or absent, whatever happens (two jobs fetching at once both write a
/// good copy; the first stays, which the node may have mounted already).
///
/// A controller that cannot be reached (restarting, failing over) is waited for, up to
/// [`FETCH_PATIENCE`]; a file that does not match its digest is not fetched again.
pub(crate) fn fetch_image(source: &ImageSource, dest: &Path) -> Result<(), String> {
    let deadline = std::time::Instant::now() + FETCH_PATIENCE;
    let mut passed_over = Vec::new();
    let from_peer = ImageSource {
        path: format!("/v1/agent/images/{}", source.sha256),
        ..source.clone()
    };
    for peer in &source.peers {
        match fetch_from(peer, &from_peer, dest) {
            Ok(()) => return Ok(()),
            Err(e) => passed_over.push(e),
        }
    }
    loop {
        let mut failures = Vec::new();
        for base in &source.from {
            match fetch_from(base, source, dest) {
                Ok(()) => return Ok(()),
                Err(e) if e.contains("digest mismatch") => failures = vec![e],
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            }
            break;
        }
        let done = failures.iter().any(|e| e.contains("digest mismatch"));
        if done || source.from.is_empty() || std::time::Instant::now() > deadline {
            passed_over.extend(failures);
            return Err(format!(
                "cannot fetch the job's image ({}): {}",
                source.path,
                passed_over.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The partial file of a fetch into `dir` by this process (`.fetch-<pid>`).
fn fetch_file(dir: &Path) -> PathBuf {
    dir.join(format!(".fetch-{}", std::process::id()))
}

/// Removes the partial files in the image cache `dir` of fetches whose processes are gone
/// (a runner killed mid-fetch: its job cancelled, or failed on another node).
pub(crate) fn sweep_fetches(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".fetch-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 sends nothing; it only says whether the pid exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// How long a node waits for a controller to serve it an image.
const FETCH_PATIENCE: Duration = Duration::from_secs(120);

/// Fetches `source` from the daemon at `base` into `dest`, checked as [`fetch_image`] says.
pub fn fetch_from(base: &str, source: &ImageSource, dest: &Path) -> Result<(), String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let what = base.to_string();
    let dir = dest.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let addr = crate::tls::address(base)?;
    let path = &source.path;
    // A host that is down answers nothing: the next source is asked after a few seconds.
    let stream = crate::tls::dial(base, Duration::from_secs(5), Duration::from_secs(60))?;
    let mut stream = crate::tls::client_config(&source.tls)
        .and_then(|config| crate::tls::connect(stream, &config).map_err(|e| e.to_string()))
        .map_err(|e| format!("{what}: {e}"))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        source.token
    )
    .map_err(|e| format!("{what}: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .map_err(|e| format!("{what}: {e}"))?;
    let mut length: Option<u64> = None;
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("{what}: {e}"))?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok();
            }
        }
    }
    if status.split_whitespace().nth(1) != Some("200") {
        let mut body = String::new();
        let _ = reader.take(4096).read_to_string(&mut body);
        return Err(format!("{what}: {} {}", status.trim(), body.trim()));
    }
    let length = length.ok_or_else(|| format!("{what}: the answer has no length"))?;
    let tmp = fetch_file(dir);
    let result = (|| -> Result<(), String> {
        let mut file =
            std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        let mut left = length;
        while left > 0 {
            let n = reader
                .read(&mut buf[..left.min(1 << 20) as usize])
                .map_err(|e| format!("{e}"))?;
            if n == 0 {
                return Err(format!("the transfer broke off {left} bytes short"));
            }
            ctx.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            left -= n as u64;
        }
        let got = hex(ctx.finish().as_ref());
        if got != source.sha256 {
            return Err(format!(
                "digest mismatch: the file has sha256:{got}, the controller announced sha256:{}",
                source.sha256
            ));
        }
        file.sync_all().map_err(|e| e.to_string())?;
        // Linked, not renamed: a copy another job put there first stays (it may be mounted).
        match std::fs::hard_link(&tmp, dest) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(format!("{}: {e}", dest.display()))
            }
            _ => Ok(()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(|e| format!("{what}: {e}"))
}

/// The job's complete container environment, NUL-separated, root's eyes only: in the job's
/// directory, beside its script.
pub fn environment_path(script: &Path) -> PathBuf {
    script.with_file_name("environment")
}

/// The shared libraries this berth has loaded, read from /proc/self/maps once per process
/// (a runner forked by the node's launcher finds the launcher's answer, which is its own).
pub(crate) fn own_libraries() -> Result<&'static [PathBuf], String> {
    static LIBS: std::sync::OnceLock<Result<Vec<PathBuf>, String>> = std::sync::OnceLock::new();
    LIBS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/maps")
            .map(|maps| mapped_libraries(&maps))
            .map_err(|e| format!("cannot read /proc/self/maps: {e}"))
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// The shared objects a process has mapped (its dynamic loader and C library), from its
/// /proc/PID/maps text: each path once.
fn mapped_libraries(maps: &str) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path: the path is the sixth field, if any.
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let name = Path::new(path).file_name().map(|n| n.to_string_lossy());
        let shared = name.is_some_and(|n| n.ends_with(".so") || n.contains(".so."));
        if path.starts_with('/') && shared && !libs.iter().any(|l| l == Path::new(path)) {
            libs.push(PathBuf::from(path));
        }
    }
    libs
}

/// A bind the runner adds to a job's container: host path, where it appears, read-only.
type SystemBind = (PathBuf, String, bool);

/// What a job's container gets of berth, whatever its image (the job's own, or a step's of
/// its own): the job's directory at [`JOB_DIR_IN_CONTAINER`], berth and its wrappers
/// ([`node_tools`]), the step socket's directory and the variables naming them, and `berth
/// rsh` as the MPI launchers' remote shell where `own` (the job's own variables) names none.
/// Returns the binds and the directories for PATH.
pub(crate) fn berth_inside(
    tools: &JobTools,
    job_dir: &Path,
    env: &mut Vec<String>,
    own: impl Fn(&str) -> bool,
) -> Result<(Vec<SystemBind>, Vec<String>), String> {
    let (_, mut binds) = node_tools(&tools.berth, &tools.wrappers)?;
    binds.push((
        job_dir.to_path_buf(),
        JOB_DIR_IN_CONTAINER.to_string(),
        true,
    ));
    binds.push((
        tools.step_dir.clone(),
        berth_api::STEP_DIR_IN_CONTAINER.to_string(),
        true,
    ));
    env.extend(berth_sockets(Path::new(berth_api::STEP_DIR_IN_CONTAINER)));
    mpi_launchers(&format!("{TOOLS_IN_CONTAINER}/berth-rsh"), env, own);
    Ok((binds, vec![TOOLS_IN_CONTAINER.to_string()]))
}

/// The step socket in `dir`, and the API beside it for the script's `berth queue`,
/// `submit`, `cancel`.
fn berth_sockets(dir: &Path) -> [String; 2] {
    [
        format!("BERTH_STEP_SOCKET={}", dir.join("step.sock").display()),
        format!("BERTH_SOCKET={}", dir.join("berth.sock").display()),
    ]
}

/// MPI launchers start their daemons on the job's other nodes through `rsh` (`berth rsh`)
/// instead of ssh, unless `own` says the job set the variable itself: Open MPI's mpirun
/// (which would otherwise see SLURM_JOB_ID and look for srun; it still takes the allocation
/// from the SLURM_* variables), MPICH's and Intel MPI's hydra.
fn mpi_launchers(rsh: &str, env: &mut Vec<String>, own: impl Fn(&str) -> bool) {
    for (var, value) in [
        ("OMPI_MCA_plm", "rsh"),
        ("OMPI_MCA_plm_rsh_agent", rsh),
        ("HYDRA_LAUNCHER", "ssh"),
        ("HYDRA_LAUNCHER_EXEC", rsh),
        ("I_MPI_HYDRA_BOOTSTRAP", "ssh"),
        ("I_MPI_HYDRA_BOOTSTRAP_EXEC", rsh),
    ] {
        if !own(var) {
            env.retain(|kv| !kv.starts_with(&format!("{var}=")));
            env.push(format!("{var}={value}"));
        }
    }
}

/// Binds that make `berth` work inside any image, whatever C library it has or lacks: berth
/// itself at /.berth/libexec/berth, the directories of the host libraries it uses at
/// /.berth/lib/N, and at /.berth/bin the node's wrapper scripts: `berth`, which runs it with
/// the host's dynamic loader and only those libraries, and `berth-rsh` (MPI launchers take
/// one executable as their ssh), which runs `berth rsh`; `host-rsh` is the same for jobs
/// without an image; and the batch commands berth answers to (sbatch, bsub, qstat, ...:
/// `berth as NAME`), and copies of the host's squashfs tools with their wrappers (a job's
/// `berth exec app.sif` imports the file). Nothing of the image is used but /bin/sh, and
/// nothing of the image's own programs changes.
///
/// The scripts are the same for every job of one berth executable: written once, into a
/// directory of `base` named by a hash of their text, and never changed (a job's container
/// binds the directory). Returns that directory and the binds.
fn node_tools(berth: &Path, base: &Path) -> Result<(PathBuf, Vec<SystemBind>), String> {
    let libs = own_libraries()?;
    let loader = libs
        .iter()
        .find(|l| {
            l.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ld-"))
        })
        .ok_or("cannot find this berth's dynamic loader in /proc/self/maps")?;
    let mut dirs: Vec<&Path> = Vec::new();
    for lib in libs {
        let dir = lib.parent().unwrap_or(Path::new("/"));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let index = |dir: &Path| dirs.iter().position(|d| *d == dir).expect("listed");
    let loader_dir = loader.parent().unwrap_or(Path::new("/"));
    let loader_in = format!(
        "{BERTH_LOADERS}/{}/{}",
        index(loader_dir),
        loader.file_name().expect("a file").to_string_lossy()
    );
    let search: Vec<String> = (0..dirs.len())
        .map(|i| format!("{BERTH_LOADERS}/{i}"))
        .collect();
    let mut scripts = vec![
        ("berth", format!(
            "#!/bin/sh\n# berth in a job's container: the host's berth, with the host's loader and C library.\nexec {loader_in} --library-path {} {BERTH_IN_CONTAINER} \"$@\"\n",
            search.join(":")
        )),
        ("berth-rsh", format!("#!/bin/sh\nexec {TOOLS_IN_CONTAINER}/berth rsh \"$@\"\n")),
        ("host-rsh", format!("#!/bin/sh\nexec {} rsh \"$@\"\n", berth.display())),
    ];
    // Slurm's, LSF's and PBS's commands, as job scripts call them (the image's own come
    // first on PATH).
    for (name, _) in berth_core::commands::COMMANDS {
        scripts.push((
            name,
            format!("#!/bin/sh\nexec {TOOLS_IN_CONTAINER}/berth as {name} \"$@\"\n"),
        ));
    }
    // The host's squashfs tools, which berth's image store runs (`berth exec app.sif` in a
    // job imports the file): copies beside the scripts (no more mounts), run through the
    // host's loader as berth is (their libraries lie beside its C library on the
    // distributions berth knows).
    let mut copies = Vec::new();
    for (tool, host, meta) in squashfs_tools() {
        let copy = format!(".{tool}");
        scripts.push((
            tool,
            format!(
                "#!/bin/sh\nexec {loader_in} --library-path {} {TOOLS_IN_CONTAINER}/{copy} \"$@\"\n",
                search.join(":")
            ),
        ));
        copies.push((copy, host, meta));
    }
    let dir = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        scripts.hash(&mut hasher);
        for (copy, host, meta) in &copies {
            use std::os::unix::fs::MetadataExt;
            (copy, host, meta.len(), meta.mtime(), meta.ino()).hash(&mut hasher);
        }
        base.join(format!("{:016x}", hasher.finish()))
    };
    if !dir.exists() {
        write_scripts(base, &dir, &scripts, &copies)
            .map_err(|e| format!("cannot write berth's wrappers into {}: {e}", dir.display()))?;
    }
    let mut binds = vec![(berth.to_path_buf(), BERTH_IN_CONTAINER.to_string(), true)];
    for (i, dir) in dirs.iter().enumerate() {
        binds.push((dir.to_path_buf(), format!("{BERTH_LOADERS}/{i}"), true));
    }
    binds.push((dir.clone(), TOOLS_IN_CONTAINER.to_string(), true));
    Ok((dir, binds))
}

/// The host's tools berth's image store runs, where this process's PATH finds them, and
/// what each is: looked up once per process (the launcher's, before it forks runners).
pub(crate) fn squashfs_tools() -> &'static [(&'static str, PathBuf, std::fs::Metadata)] {
    static TOOLS: std::sync::OnceLock<Vec<(&str, PathBuf, std::fs::Metadata)>> =
        std::sync::OnceLock::new();
    TOOLS.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        ["rdsquashfs", "tar2sqfs"]
            .into_iter()
            .filter_map(|tool| {
                std::env::split_paths(&path).find_map(|dir| {
                    let p = dir.join(tool);
                    let meta = std::fs::metadata(&p).ok().filter(|m| m.is_file())?;
                    Some((tool, p, meta))
                })
            })
            .collect()
    })
}

/// Writes `scripts` (mode 0755) and copies of the files `copies` name into a directory of
/// their own under `base`, renamed into place as `dir` whole: a runner that finds `dir`
/// finds all of them. Another runner that got there first wins (its files are the same).
fn write_scripts(
    base: &Path,
    dir: &Path,
    scripts: &[(&str, String)],
    copies: &[(String, &PathBuf, &std::fs::Metadata)],
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = base.join(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    let written = scripts.iter().try_for_each(|(name, text)| {
        let path = tmp.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
    });
    let written = written.and_then(|_| {
        copies.iter().try_for_each(|(name, host, _)| {
            let path = tmp.join(name);
            std::fs::copy(host, &path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        })
    });
    let placed = written.and_then(|_| match std::fs::rename(&tmp, dir) {
        Err(_) if dir.exists() => Ok(()),
        other => other,
    });
    let _ = std::fs::remove_dir_all(&tmp);
    placed
}

fn dev_null() -> Result<OwnedFd, String> {
    let fd = std::fs::File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
    Ok(OwnedFd::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsf_reports_name_the_hosts_with_their_slots() {
        assert_eq!(executed_on("vm 2"), ["<2*vm>"]);
        assert_eq!(executed_on("n1 4 n2 1"), ["<4*n1>", "<n2>"]);
        assert!(executed_on("").is_empty());
    }

    #[test]
    fn partial_fetches_of_gone_processes_are_swept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        let names = [
            format!(".fetch-{gone_pid}"),
            format!(".fetch-{}", std::process::id()),
            format!("{}.sqfs", "a".repeat(64)),
            ".fetch-notapid".to_string(),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        sweep_fetches(dir.path());
        for (i, name) in names.iter().enumerate() {
            assert_eq!(dir.path().join(name).exists(), i != 0, "{name}");
        }
    }

    #[test]
    fn every_image_holds_the_mount_points_of_a_jobs_container() {
        for path in [
            JOB_DIR_IN_CONTAINER,
            TOOLS_IN_CONTAINER,
            berth_api::STEP_DIR_IN_CONTAINER,
            "/.berth/libexec/berth",
            "/.berth/lib/0",
            berth_runtime::plan::GPU_LIB_DIR,
            berth_runtime::plan::GPU_BIN_DIR,
            "/etc/hosts",
            "/etc/resolv.conf",
        ] {
            let relative = path.trim_start_matches('/');
            assert!(
                berth_image::MOUNT_POINTS
                    .iter()
                    .any(|(p, _)| *p == relative),
                "{path} is not among the mount points made in images"
            );
        }
    }

    #[test]
    fn mapped_libraries_are_the_shared_objects_each_once() {
        let maps = "\
5581c0a00000-5581c0b00000 r--p 00000000 08:01 131 /usr/local/bin/berth
7f0000000000-7f0000001000 r--p 00000000 08:01 200 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000001000-7f0000002000 r-xp 00001000 08:01 200 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000003000-7f0000004000 r--p 00000000 08:01 201 /lib64/libgcc_s-8-20210514.so.1
7f0000005000-7f0000006000 rw-p 00000000 00:00 0
7f0000007000-7f0000008000 r--p 00000000 08:01 202 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0 [vdso]
";
        assert_eq!(
            mapped_libraries(maps),
            [
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/libgcc_s-8-20210514.so.1",
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }
}
