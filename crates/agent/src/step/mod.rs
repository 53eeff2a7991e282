//! Job steps: `berth step` (srun) runs N tasks of a command in a running job's container.
//!
//! ```text
//! berth step (client, in the job or on the host) ──step socket: request + its stdio fds──►
//!   node agent (server.rs): who asks (SO_PEERCRED), the controller grants a step id ──►
//!   the node's launcher forks `berth internal step` (this module's [`run_forked`];
//!   [`run`] where the agent execs it), single-threaded, root:
//!   enter the job's container and cgroup, fork the tasks as the job's user ──►
//!   tasks write to the client's own stdout/stderr; the worst exit status goes back
//! ```
//!
//! The step process and its tasks form one process group (the step process leads it), so
//! the agent passes a signal on to every task, and their children, with one kill(2).

pub mod client;
pub(crate) mod lead;
mod named;
pub mod pmi;
mod pmix;
mod pty;
pub mod relay;
pub(crate) mod save;
pub mod server;
pub mod wire;

use berth_runtime::cgroup::StepAccounting;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The environment variable that carries the [`StepLaunch`] to `berth internal step`
/// (an environment only root can read: the step process is root's until its tasks fork).
pub const LAUNCH_VAR: &str = "BERTH_STEP_LAUNCH";

/// Everything `berth internal step` needs, resolved by the agent and the controller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepLaunch {
    pub job_id: u64,
    pub step_id: u32,
    pub user: String,
    /// The job's cgroup under `berth/` (its runner names it).
    pub cgroup: String,
    /// The job's directory, where its runner left the container's environment.
    pub job_dir: std::path::PathBuf,
    pub argv: Vec<String>,
    /// The client's environment; each task adds its own rank variables.
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub node: String,
    /// CPUs for each of this node's tasks (empty: not pinned); its length is the number of
    /// tasks here.
    pub tasks: Vec<Vec<u32>>,
    /// The whole step: each of its nodes with its number of tasks, in rank order (tasks are
    /// numbered node by node); empty: this node alone.
    #[serde(default)]
    pub layout: Vec<(String, u32)>,
    /// This node's place in `layout`.
    #[serde(default)]
    pub node_index: usize,
    /// The step's PMI server, if it has one: each task gets a connection to it (PMI_FD).
    #[serde(default)]
    pub pmi: Option<pmi::Contact>,
    /// The whole step runs here: its PMI server is this node's step process's own
    /// ([`pmi::Helper`]), not the agent's (`pmi` is `None`).
    #[serde(default)]
    pub pmi_here: bool,
    /// Serve the tasks PMIx (`--mpi=pmix`) from this node, the PMI server above gathering
    /// fences across nodes.
    #[serde(default)]
    pub pmix: bool,
    /// Without `client_pid` (a part on another node): whether the client runs outside the
    /// job (on a host), so that the tasks get the job's environment under the client's.
    #[serde(default)]
    pub outside: bool,
    pub label: bool,
    /// Its client is srun, whose words its tasks' failures are said in.
    #[serde(default)]
    pub srun: bool,
    /// Its tasks' failures are not said ([`berth_api::StepRequest::quiet`]).
    #[serde(default)]
    pub quiet: bool,
    pub kill_on_bad_exit: bool,
    /// Each task's PBS slot, by rank ([`berth_api::StepRequest::pbs_slots`]).
    #[serde(default)]
    pub pbs_slots: Vec<berth_api::PbsSlot>,
    /// Give the first task a pseudo-terminal, relayed to the client's terminal (the others
    /// have no input or output).
    #[serde(default)]
    pub pty: bool,
    /// The `berth step` process (from the step socket's peer credentials), to tell whether
    /// it runs inside the job's container.
    pub client_pid: Option<i32>,
    /// Files of each task, named by patterns (`srun -o out-%t`).
    #[serde(default)]
    pub task_files: Option<berth_api::TaskFiles>,
    /// Only the task of this rank reads the client's input; `None`: every task gets all of
    /// it (this process's stdin copied to each).
    #[serde(default)]
    pub input_task: Option<u32>,
    /// GPUs of its own for each task, out of the job's on this node.
    #[serde(default)]
    pub gpus_per_task: Option<u32>,
    /// srun's `--multi-prog` configuration: each task's own program (instead of `argv`).
    #[serde(default)]
    pub multi_prog: Option<String>,
    /// Run the tasks in a container of this image of their own, not in the job's.
    #[serde(default)]
    pub image: Option<StepImage>,
    /// This node's tools for that container (berth, its wrappers, the step socket).
    #[serde(default)]
    pub tools: Option<crate::runner::JobTools>,
    /// The job's GPUs on this node (device minors), which that container gets.
    #[serde(default)]
    pub gpu_ids: Vec<u32>,
    /// Where to fetch that image from when it is not on this node yet.
    #[serde(default)]
    pub image_source: Option<crate::runner::ImageSource>,
    /// That container is the job's container of this name, kept on this node from one
    /// step to the next (see `named`).
    #[serde(default)]
    pub container: Option<berth_core::job::ContainerName>,
    /// Save that container's files to this squashfs file once the tasks end (see `save`).
    #[serde(default)]
    pub save: Option<std::path::PathBuf>,
    /// The step's own time limit, seconds (`srun -t`), which its agent enforces.
    #[serde(default)]
    pub time_limit: Option<u64>,
    /// The step's own memory limit here, bytes (`srun --mem`): a cgroup of its own below
    /// the job's; `None`: the job's limit alone.
    #[serde(default)]
    pub memory: Option<u64>,
    /// Seconds between the SIGTERM of a step cancelled or at its time limit and its end.
    #[serde(default)]
    pub kill_wait: u64,
    /// A part relayed for the agent of another node: its output goes through the FIFOs
    /// `SPOOL.out` and `SPOOL.err` ([`spool_fifo`]), which this node's agent reads and the
    /// step process holds open too, so that the tasks go on writing while that agent
    /// restarts (the next one takes the part back: `server::adopt`, `relay::serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<std::path::PathBuf>,
    /// This process leads a step across nodes (see `lead`): this node's part is the
    /// launch's (if [`lead::Lead::here`]), the others are the lead's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<lead::Lead>,
}

/// The FIFO of a relayed part's stream `which` (`out`, `err`), by its spool prefix.
pub(crate) fn spool_fifo(spool: &std::path::Path, which: &str) -> std::path::PathBuf {
    let mut name = spool.as_os_str().to_owned();
    name.push(".");
    name.push(which);
    std::path::PathBuf::from(name)
}

/// How long a relayed part's step process waits, its tasks ended, for an agent to read
/// what they wrote (one restarting, and the agent that took the step to take the part back).
const SPOOL_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Waits until nothing is left unread in the FIFOs `held` (see [`hold_spool`]), or for
/// [`SPOOL_DRAIN_LIMIT`]: a FIFO's content goes when its last descriptor closes, and this
/// process's are the last once its tasks have ended.
fn drain_spool(held: &[std::fs::File]) {
    let deadline = std::time::Instant::now() + SPOOL_DRAIN_LIMIT;
    for file in held {
        loop {
            let mut unread: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int, the bytes the pipe holds, into ours.
            let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::FIONREAD, &mut unread) };
            if r != 0 || unread == 0 || std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The step process's own hold on its spool's FIFOs (a reader of each, which never reads):
/// with it, a task's write while no agent reads them waits for the next agent instead of
/// failing (EPIPE, SIGPIPE). Closed as the step process exits, once they are read
/// ([`drain_spool`]).
fn hold_spool(launch: &StepLaunch) -> Vec<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(spool) = &launch.spool else {
        return Vec::new();
    };
    ["out", "err"]
        .iter()
        .filter_map(|which| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(spool_fifo(spool, which))
                .ok()
        })
        .collect()
}

impl StepLaunch {
    /// Whether this process is its whole step, or leads it, for a client in the job: then
    /// the step goes on when the agent that served it goes away; the agent that follows
    /// adopts it (`server::adopt`).
    fn alone(&self) -> bool {
        (self.layout.len() <= 1 || self.lead.is_some())
            && self.client_pid.is_some()
            && !self.outside
    }
}

/// The image of a step that runs in a container of its own (`srun --container-image`), as
/// the controller resolved it from its store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepImage {
    /// As the user named it (BERTH_CONTAINER in the container).
    pub name: String,
    /// Its squashfs file.
    pub squashfs: std::path::PathBuf,
    /// Its ENV, under the step's own variables.
    pub env: Vec<String>,
    /// The step's binds, `SRC[:DST[:ro|rw]]`.
    pub binds: Vec<String>,
    /// The user's home stays out.
    #[serde(default)]
    pub no_home: bool,
    /// Variables whose values from the job and the client win over the image's, PATH and
    /// the library path included.
    #[serde(default)]
    pub host_env: Vec<String>,
    /// The administrator's bind policy, which they must satisfy.
    pub bind_policy: berth_core::BindPolicy,
    /// The image's ENTRYPOINT, which the tasks run their command through
    /// (`--container-entrypoint`); empty: the command alone.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// The tasks are root inside, the user outside (`--container-remap-root`).
    #[serde(default)]
    pub remap_root: bool,
}

impl StepLaunch {
    /// The step's nodes and their numbers of tasks.
    fn layout(&self) -> Vec<(String, u32)> {
        if self.layout.is_empty() {
            vec![(self.node.clone(), self.tasks.len() as u32)]
        } else {
            self.layout.clone()
        }
    }

    /// The rank of this node's first task.
    fn first_rank(&self) -> usize {
        self.layout
            .iter()
            .take(self.node_index)
            .map(|(_, t)| *t as usize)
            .sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("the step's launch is missing or unreadable: {0}")]
    Launch(String),
    #[error(transparent)]
    Runtime(#[from] berth_runtime::RuntimeError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The agent refused the step, or could not start it.
    #[error("{0}")]
    Refused(String),
    /// The client was signalled (Ctrl-C) while its step waited to start: it never did.
    #[error("{0}")]
    Cancelled(String),
    /// The node agent's end of the connection went before the step ended (its process
    /// stopped: `berth up`'s, restarting).
    #[error(
        "the node agent closed the step socket before the step ended (was the controller stopped?)"
    )]
    Lost,
    /// Its container could not be saved (`--container-save`).
    #[error("{0}")]
    Save(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StepError {
    let what = what.into();
    move |source| StepError::Io { what, source }
}

/// The GPUs (CUDA's numbers in the container) of this node's task `local` with `per_task`
/// each: the job's GPUs here are numbered from 0, and the tasks take them in order.
fn task_gpus(per_task: u32, local: usize) -> String {
    let first = local as u64 * u64::from(per_task);
    (first..first + u64::from(per_task))
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// How many GPUs the job's container (entered) has: its /dev/nvidiaN devices.
fn gpus_in_container() -> usize {
    std::fs::read_dir("/dev").map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.strip_prefix("nvidia")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count()
    })
}

/// The variables one task sees on top of the client's: Slurm's step and rank variables
/// (what MPI libraries and scripts read) and berth's own.
fn task_env(launch: &StepLaunch, base: &[String], local: usize) -> Vec<String> {
    let gpus = launch.gpus_per_task.map(|n| task_gpus(n, local));
    let layout = launch.layout();
    let n = layout.iter().map(|(_, t)| t).sum::<u32>().to_string();
    let rank = launch.first_rank() + local;
    let slot = launch
        .pbs_slots
        .get(rank)
        .copied()
        .unwrap_or(berth_api::PbsSlot {
            node: launch.node_index as u32,
            vnode: rank as u32,
        });
    let (pbs_node, vnode) = (slot.node.to_string(), slot.vnode.to_string());
    let rank = rank.to_string();
    let local = local.to_string();
    let step = launch.step_id.to_string();
    let node_id = launch.node_index.to_string();
    let nnodes = layout.len().to_string();
    let nodes: Vec<&str> = layout.iter().map(|(n, _)| n.as_str()).collect();
    let nodelist = berth_core::job::hostlist(&nodes);
    let berth_nodelist = nodes.join(",");
    let per_node = berth_core::job::per_node(layout.iter().map(|&(_, t)| u64::from(t)));
    // The ranks of this node's tasks.
    let first = launch.first_rank();
    let gtids = (first..first + launch.tasks.len())
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let ours: [(&str, &str); 21] = [
        ("SLURM_STEP_ID", &step),
        ("SLURM_STEPID", &step),
        ("SLURM_PROCID", &rank),
        ("SLURM_LOCALID", &local),
        ("SLURM_NODEID", &node_id),
        ("SLURMD_NODENAME", &launch.node),
        ("SLURM_NTASKS", &n),
        ("SLURM_NPROCS", &n),
        ("SLURM_STEP_NUM_TASKS", &n),
        ("SLURM_STEP_NUM_NODES", &nnodes),
        ("SLURM_STEP_NODELIST", &nodelist),
        ("SLURM_STEP_TASKS_PER_NODE", &per_node),
        ("SLURM_TASKS_PER_NODE", &per_node),
        ("SLURM_GTIDS", &gtids),
        ("BERTH_STEP_ID", &step),
        ("BERTH_TASK_RANK", &rank),
        ("BERTH_STEP_NTASKS", &n),
        ("BERTH_NODE", &launch.node),
        ("BERTH_STEP_NODELIST", &berth_nodelist),
        // Torque's (pbsdsh's tasks): the node's index, the task's virtual node (its slot).
        ("PBS_NODENUM", &pbs_node),
        ("PBS_VNODENUM", &vnode),
    ];
    // A PMI client uses the connection PMI_FD names (see run_tasks), its rank and size in
    // PMI_RANK and PMI_SIZE (MPICH's clients, Slurm's libpmi2; PMI_ID for PMI-1's initack),
    // as hydra and slurmstepd give them. No PMI_PORT: only the step's own processes, which
    // know its secret, may connect.
    // (A PMIx step's tasks find its server in the PMIX_* variables instead.)
    let pmi: Vec<(&str, &str)> = match (launch.pmi.is_some() || launch.pmi_here) && !launch.pmix {
        true => vec![("PMI_ID", &rank), ("PMI_RANK", &rank), ("PMI_SIZE", &n)],
        false => Vec::new(),
    };
    let pmi_vars = ["PMI_PORT", "PMI_ID", "PMI_FD", "PMI_RANK", "PMI_SIZE"];
    let gpu: Vec<(&str, &str)> = match &gpus {
        Some(list) => vec![("CUDA_VISIBLE_DEVICES", list)],
        None => Vec::new(),
    };
    base.iter()
        .filter(|kv| {
            let name = name_of(kv);
            !ours.iter().chain(&gpu).any(|(o, _)| *o == name) && !pmi_vars.contains(&name)
        })
        .cloned()
        .chain(
            ours.iter()
                .chain(&pmi)
                .chain(&gpu)
                .map(|(k, v)| format!("{k}={v}")),
        )
        .collect()
}

/// `berth internal step` for `launch`, leading a session and process group of its own (no
/// controlling terminal of the agent's), which its tasks join: one kill(2) of the group
/// reaches them all. Its stdio is the caller's to set.
pub(crate) fn step_command(
    berth: &std::path::Path,
    launch: &StepLaunch,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(berth);
    command
        .args(["internal", "step"])
        .env(
            LAUNCH_VAR,
            serde_json::to_string(launch).expect("launches serialise"),
        )
        .kill_on_drop(false);
    // SAFETY: setsid(2) is async-signal-safe and touches nothing of the parent's.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            block_end(true);
            Ok(())
        });
    }
    command
}

/// A node's part of a step: its process (`berth internal step`), which leads a process group
/// of its own (its tasks join it), and its exit status once it ends, with what its tasks
/// used where its process could say.
pub(crate) struct Part {
    pub group: libc::pid_t,
    pub end: std::pin::Pin<Box<dyn std::future::Future<Output = PartEnd> + Send>>,
}

/// How a node's part of a step ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartEnd {
    /// The worst of its tasks' exit statuses (125: berth's own failure).
    pub code: i32,
    /// The signal that gave `code` (128 + N), where one did.
    pub signal: Option<i32>,
    pub usage: Option<berth_api::StepUsage>,
}

impl PartEnd {
    /// An end without usage (the part did not run, or its process could not say).
    pub fn without_usage(code: i32) -> PartEnd {
        PartEnd {
            code,
            signal: None,
            usage: None,
        }
    }

    /// The end of a part's process whose wait(2) status is `status`.
    fn of(status: std::process::ExitStatus, usage: Option<berth_api::StepUsage>) -> PartEnd {
        PartEnd {
            code: exit_code(status),
            signal: std::os::unix::process::ExitStatusExt::signal(&status),
            usage,
        }
    }
}

/// The worse of two ends, each an exit status as a shell has it (128 + N for signal N) and
/// the signal that gave it, where one did: the higher status; a signal over an exit status
/// of the same number.
pub(crate) fn worse(a: (i32, Option<i32>), b: (i32, Option<i32>)) -> (i32, Option<i32>) {
    match a.0.cmp(&b.0) {
        std::cmp::Ordering::Greater => a,
        std::cmp::Ordering::Less => b,
        std::cmp::Ordering::Equal if a.1.is_some() => a,
        std::cmp::Ordering::Equal => b,
    }
}

/// Starts a node's part of a step with `stdio` as its stdin, stdout and stderr: forked by
/// the node's launcher, or exec'd by the agent if the launcher cannot.
pub(crate) async fn start_part(
    launcher: &std::sync::Arc<crate::launcher::Launcher>,
    launch: &StepLaunch,
    stdio: [OwnedFd; 3],
) -> Result<Part, String> {
    let (launcher, launch) = (launcher.clone(), launch.clone());
    tokio::task::spawn_blocking(move || {
        match launcher.fork_step(&launch, stdio.each_ref().map(|fd| fd.as_raw_fd())) {
            Ok(forked) => Ok(Part {
                group: forked.pid as libc::pid_t,
                end: Box::pin(async move {
                    match tokio::task::spawn_blocking(move || forked.wait()).await {
                        Ok(Some(ended)) => PartEnd::of(
                            std::os::unix::process::ExitStatusExt::from_raw(ended.status),
                            ended.usage,
                        ),
                        // Its status went with the launcher.
                        _ => PartEnd::without_usage(125),
                    }
                }),
            }),
            Err(e) => {
                berth_core::say!(
                    "berth agent: {e}: starting the step's process without the launcher"
                );
                let berth = launcher.berth();
                let [stdin, stdout, stderr] = stdio;
                let mut child = step_command(berth, &launch)
                    .stdin(stdin)
                    .stdout(stdout)
                    .stderr(stderr)
                    .spawn()
                    .map_err(|e| format!("cannot run {} internal step: {e}", berth.display()))?;
                Ok(Part {
                    group: child.id().expect("a child just spawned has a pid") as libc::pid_t,
                    // (Exec'd, it has no way to say what its tasks used.)
                    end: Box::pin(async move {
                        match child.wait().await {
                            Ok(status) => PartEnd::of(status, None),
                            Err(_) => PartEnd::without_usage(125),
                        }
                    }),
                })
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A step process's exit status as a shell reports it: its code, or 128 + the signal that
/// killed it.
pub(crate) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .signal()
        .map_or_else(|| status.code().unwrap_or(125), |sig| 128 + sig)
}

/// The NAME of a `NAME=VALUE` entry.
fn name_of(kv: &str) -> &str {
    kv.split_once('=').map_or(kv, |(k, _)| k)
}

/// The job's environment with the client's variables on top, except the host's search
/// paths (PATH, LD_LIBRARY_PATH), which mean nothing in the image.
fn overlay(job: Vec<String>, client: &[(String, String)]) -> Vec<String> {
    let kept = |k: &str| !matches!(k, "PATH" | "LD_LIBRARY_PATH");
    let mut env: Vec<String> = job
        .into_iter()
        .filter(|kv| !client.iter().any(|(c, _)| c == name_of(kv) && kept(c)))
        .collect();
    env.extend(
        client
            .iter()
            .filter(|(k, _)| kept(k))
            .map(|(k, v)| format!("{k}={v}")),
    );
    env
}

/// The tasks' environment: the job's with the client's variables on top (a client outside
/// the job), or the client's (one inside, whose environment is the script's).
fn step_env(launch: &StepLaunch, outside: bool) -> Result<Vec<String>, StepError> {
    Ok(match outside {
        true => {
            let path = crate::runner::environment_path(&launch.job_dir.join("script"));
            let job =
                std::fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
            let job = job
                .split(|&b| b == 0)
                .filter(|kv| !kv.is_empty())
                .map(|kv| String::from_utf8_lossy(kv).into_owned())
                .collect();
            overlay(job, &launch.env)
        }
        false => launch.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    })
}

/// The container of a step in an image of its own (`srun --container-image`): the image
/// (mounted once on the node, held as long as the returned handle), the step's binds, the
/// user's home and the step's directory, berth's tools, the job's GPUs on this node; its
/// environment the image's under `env` (the job's and the client's, but for their PATH and
/// library path, which are another image's or the host's).
fn own_container(
    launch: &StepLaunch,
    image: &StepImage,
    id: &berth_runtime::Identity,
    mut env: Vec<String>,
) -> Result<
    (
        berth_runtime::ContainerSpec,
        berth_runtime::shared::SharedImage,
    ),
    StepError,
> {
    let tools = launch.tools.as_ref().ok_or_else(|| {
        StepError::Launch("a step in an image of its own without its node's tools".into())
    })?;
    if let (Some(source), false) = (&launch.image_source, image.squashfs.exists()) {
        crate::runner::fetch_image(source, &image.squashfs).map_err(StepError::Launch)?;
    }
    let mounted = berth_runtime::shared::mount_image(&tools.image_mounts, &image.squashfs)
        .map_err(io_err(format!("mounting the image {}", image.name)))?;
    env.retain(|kv| {
        let name = name_of(kv);
        !matches!(name, "PATH" | "LD_LIBRARY_PATH") || image.host_env.iter().any(|h| h == name)
    });
    // The job's own MPI launcher settings stay, but for berth's (another container's path).
    let own: Vec<String> = env
        .iter()
        .filter(|kv| !kv.ends_with("-rsh"))
        .map(|kv| name_of(kv).to_string())
        .collect();
    let (system_binds, path_append) =
        crate::runner::berth_inside(tools, &launch.job_dir, &mut env, |var| {
            own.iter().any(|o| o == var)
        })
        .map_err(StepError::Launch)?;
    let cwd = std::path::Path::new(&launch.cwd);
    let options = berth_runtime::Options {
        binds: image.binds.clone(),
        env,
        cleanenv: true,
        pwd: Some(launch.cwd.clone()),
        no_home: image.no_home,
        user: Some(id.clone()),
        gpus: (!launch.gpu_ids.is_empty())
            .then(|| berth_runtime::gpu::GpuRequest::Devices(launch.gpu_ids.clone())),
        system_binds,
        path_append,
        ..Default::default()
    };
    let defaults = berth_runtime::ImageDefaults {
        name: image.name.clone(),
        env: image.env.clone(),
        ..Default::default()
    };
    let spec = berth_runtime::plan(
        &defaults,
        berth_runtime::Rootfs::Directory(mounted.path.clone()),
        &berth_runtime::Action::Exec(launch.argv.clone()),
        &options,
        &image.bind_policy,
        &[],
        // The client's directory, bound where it is if the host has it (a host's, or the
        // job's submission directory); else only a directory in the image.
        if cwd.is_dir() {
            cwd
        } else {
            std::path::Path::new("/")
        },
    )?;
    Ok((spec, mounted))
}

/// One running task, as the step process watches it.
struct Running {
    rank: usize,
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    status: Option<i32>,
    /// The signal that killed it, if one did.
    signal: Option<i32>,
    /// Killed by berth (--kill-on-bad-exit), so its status says nothing about the program.
    killed: bool,
}

/// `--label`: one task's output pipe, where its labelled lines go (this process's stdout
/// or stderr, the client's; or the task's own file, `-o out-%t`), and the part of a line not
/// yet written.
struct Labelled {
    rank: usize,
    read: Option<OwnedFd>,
    to: std::os::fd::RawFd,
    partial: Vec<u8>,
}

impl Labelled {
    /// Writes the complete lines in `partial` (all of it at EOF) with the rank in front.
    fn flush(&mut self, all: bool) {
        use std::io::Write;
        let mut out: Vec<u8> = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(format!("{}: ", self.rank).as_bytes());
            out.extend(self.partial.drain(..=end));
        }
        if all && !self.partial.is_empty() {
            out.extend_from_slice(format!("{}: ", self.rank).as_bytes());
            out.append(&mut self.partial);
            out.push(b'\n');
        }
        if !out.is_empty() {
            use std::os::fd::FromRawFd;
            // SAFETY: a descriptor open for the life of the step's tasks (this process's
            // own, or a task file `OpenTaskFiles` holds), borrowed: never closed here.
            let mut to =
                std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(self.to) });
            let _ = to.write_all(&out);
        }
    }
}

/// Makes a helper the step process forked (the PMI server, PMIx's) its own: out of the
/// step's process group, whose processes are its tasks (their usage, the signals they are
/// given), as the job's user (`helper` names it in the error; nothing to do where berth runs
/// as that user), killed when the step process dies.
fn become_user(id: &berth_runtime::Identity, helper: &str) -> Result<(), String> {
    // SAFETY: plain system calls with integer arguments and a live slice.
    unsafe {
        libc::setpgid(0, 0);
        if libc::geteuid() == 0 {
            let groups = match id.groups.is_empty() {
                true => vec![id.gid],
                false => id.groups.clone(),
            };
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(id.gid, id.gid, id.gid) != 0
                || libc::setresuid(id.uid, id.uid, id.uid) != 0
            {
                return Err(format!(
                    "{helper} cannot become {}: {}",
                    id.user,
                    std::io::Error::last_os_error()
                ));
            }
        }
        // (After the change of credentials, which clears it.)
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    Ok(())
}

/// A pipe, close-on-exec, with `flags` (O_NONBLOCK) besides.
pub(crate) fn pipe(flags: libc::c_int) -> Result<(OwnedFd, OwnedFd), StepError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | flags) } != 0 {
        return Err(io_err("creating a pipe")(std::io::Error::last_os_error()));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// How far a reader of [`tee`] may fall behind the others before the input waits for it.
const TEE_BEHIND: usize = 1 << 20;

/// Copies what `from` gives to each of `to` (the tasks' stdin pipes, or the pipes to a
/// step's parts on its nodes), in a thread of its own: srun's input to every task. A reader
/// whose end is closed (its task ended, or never reads) is dropped; one that reads slowly
/// holds the input back once it is [`TEE_BEHIND`] bytes behind, as tee(1) would at once. When
/// `from` ends, each of `to` is closed once it has all of it; the thread ends when none is
/// left.
pub(crate) fn tee(from: OwnedFd, to: Vec<OwnedFd>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut sinks: Vec<(OwnedFd, Vec<u8>)> = to
            .into_iter()
            .filter(|fd| {
                // SAFETY: fcntl(2) on a descriptor we own: the writes must not block the
                // thread on one reader while the others wait.
                unsafe {
                    let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                    flags >= 0
                        && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
                }
            })
            .map(|fd| (fd, Vec::new()))
            .collect();
        let mut input = Some(std::fs::File::from(from));
        let mut buf = vec![0u8; 64 * 1024];
        // Writes what `pending` holds to `fd` as far as it takes it now; false once the
        // reader is gone.
        let flush = |fd: &OwnedFd, pending: &mut Vec<u8>| -> bool {
            while !pending.is_empty() {
                // SAFETY: write(2) from a buffer we own to a descriptor we own.
                let n =
                    unsafe { libc::write(fd.as_raw_fd(), pending.as_ptr().cast(), pending.len()) };
                if n < 0 {
                    return std::io::Error::last_os_error().kind()
                        == std::io::ErrorKind::WouldBlock;
                }
                pending.drain(..n as usize);
            }
            true
        };
        loop {
            if input.is_none() {
                sinks.retain(|(_, pending)| !pending.is_empty());
            }
            if sinks.is_empty() {
                return;
            }
            let reading = input
                .as_ref()
                .filter(|_| sinks.iter().all(|(_, p)| p.len() < TEE_BEHIND));
            let mut polled: Vec<libc::pollfd> = sinks
                .iter()
                .map(|(fd, pending)| libc::pollfd {
                    fd: fd.as_raw_fd(),
                    // (Always told of a reader gone: POLLERR.)
                    events: if pending.is_empty() { 0 } else { libc::POLLOUT },
                    revents: 0,
                })
                .chain(reading.map(|f| libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }))
                .collect();
            // SAFETY: poll(2) on descriptors we own, the array's length given.
            if unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) } < 0 {
                continue;
            }
            let mut gone = polled.iter().map(|p| p.revents & libc::POLLERR != 0);
            sinks.retain_mut(|(fd, pending)| !gone.next().unwrap_or(false) && flush(fd, pending));
            let input_ready = reading.is_some() && polled.last().is_some_and(|p| p.revents != 0);
            if input_ready {
                match input.as_mut().map(|f| std::io::Read::read(f, &mut buf)) {
                    Some(Ok(n)) if n > 0 => {
                        sinks.retain_mut(|(fd, pending)| {
                            pending.extend_from_slice(&buf[..n]);
                            flush(fd, pending)
                        });
                    }
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    _ => input = None,
                }
            }
        }
    })
}

/// `berth internal step`: starts the tasks in the job's container, waits for all of them,
/// and returns the worst exit status. Must run as root, single-threaded, in the process group
/// the agent made for it.
pub fn run() -> Result<i32, StepError> {
    let text = std::env::var(LAUNCH_VAR).map_err(|e| StepError::Launch(e.to_string()))?;
    std::env::remove_var(LAUNCH_VAR);
    let launch: StepLaunch =
        serde_json::from_str(&text).map_err(|e| StepError::Launch(e.to_string()))?;
    let held = hold_spool(&launch);
    let registered = Registered::new(&launch);
    let ((code, signal), used) = run_part(launch)?;
    drain_spool(&held);
    if let Some(r) = registered {
        r.ended((code, signal), used);
    }
    Ok(end_as(code, signal))
}

/// Runs `launch` here: as the leader of its step where it leads one across nodes (`lead`),
/// else its tasks. How they ended and what they used.
fn run_part(mut launch: StepLaunch) -> Result<lead::Ended, StepError> {
    match launch.lead.take() {
        Some(lead) => Ok(lead::lead(launch, lead)),
        None => run_launch(launch).map(|(worst, cgroup)| (worst, usage(cgroup))),
    }
}

/// The step process as the node's launcher forks it (see `launcher`): `launch` is the
/// step's launch (JSON), the client's stdio is on 0, 1 and 2 already; what its tasks used
/// goes to `report` (the agent's socket) at the end. Its exit status.
pub fn run_forked(launch: &[u8], report: Option<OwnedFd>) -> i32 {
    let launch: Result<StepLaunch, _> =
        serde_json::from_slice(launch).map_err(|e| StepError::Launch(e.to_string()));
    let held = launch.as_ref().map(hold_spool).unwrap_or_default();
    let registered = launch.as_ref().ok().and_then(Registered::new);
    let ((code, signal), used) = match launch.and_then(run_part) {
        Ok(ended) => ended,
        Err(e) => {
            berth_core::say!("berth: {e}");
            ((125, None), usage(StepAccounting::default()))
        }
    };
    drain_spool(&held);
    if let (Some(report), Some(used)) = (report, &used) {
        report_usage(&report, used);
    }
    // (Once its usage is out: the job's runner waits for this.)
    if let Some(r) = registered {
        r.ended((code, signal), used);
    }
    end_as(code, signal)
}

/// Ends this step process as its worst task ended where a signal killed that task: by the
/// same signal (without a core dump), so that whoever waits for it tells the signal from
/// an exit status of 128 + N. Else (or where the signal does not end it) returns `code`,
/// the status to exit with.
fn end_as(code: i32, signal: Option<i32>) -> i32 {
    let Some(signal) = signal else {
        return code;
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: setrlimit(2) of a struct we own; the signal's default action restored and
    // the signal unblocked (plain calls), then raised at this process, which it ends.
    unsafe {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    code
}

/// What a step's client says of its tasks of `ranks` that failed with `status`, or were
/// killed by `signal`: in srun's words (`srun: error: n1: task 0: Exited with exit code 7`,
/// `...: tasks 0-3: Killed`) where it is srun, else berth's.
fn task_failed(srun: bool, node: &str, ranks: &[u32], status: i32, signal: Option<i32>) -> String {
    let tasks = match ranks {
        [one] => format!("task {one}"),
        _ => format!("tasks {}", berth_core::quantity::number_list(ranks)),
    };
    match (srun, signal) {
        (false, Some(n)) => format!("berth step: {node}: {tasks}: killed by signal {n}"),
        (false, None) => format!("berth step: {node}: {tasks}: exited with exit code {status}"),
        (true, Some(n)) => format!("srun: error: {node}: {tasks}: {}", signal_words(n)),
        (true, None) => format!("srun: error: {node}: {tasks}: Exited with exit code {status}"),
    }
}

/// A signal's description, as strsignal(3) gives it (`Killed`, `Terminated`).
pub(crate) fn signal_words(n: i32) -> String {
    // SAFETY: strsignal(3) returns a string that stays valid until its next call, which no
    // other thread of the step process makes; it is copied at once.
    let text = unsafe { libc::strsignal(n) };
    match text.is_null() {
        true => format!("Signal {n}"),
        // SAFETY: a NUL-terminated string strsignal(3) returned.
        false => unsafe { std::ffi::CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned(),
    }
}

/// The directory of a job's directory where its step processes on the node say they run,
/// so that the job's end lets each end its tasks and say what they used (see
/// `runner::end_steps`) before the job's cgroup is killed whole.
pub(crate) const STEPS_DIR: &str = "steps";

/// What a step process's entry in [`STEPS_DIR`] holds while it runs: enough for an agent
/// that did not start it (one restarted meanwhile) to tell it from a later process with its
/// pid, and to adopt it if it is [`StepLaunch::alone`] (`server::adopt`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Registration {
    pub step: u32,
    /// Its start time, as /proc/PID/stat has it.
    pub start: u64,
    pub adoptable: bool,
    /// The job's cgroup, whose processes may reattach to it.
    pub cgroup: String,
    /// When its time limit ends it (seconds since the epoch), if it has one.
    pub deadline: Option<u64>,
    pub kill_wait: u64,
    /// Its tasks on this node.
    #[serde(default)]
    pub tasks: u32,
    /// A part relayed for another node's agent, with its spool ([`StepLaunch::spool`]):
    /// the agent that follows keeps it for that agent to take back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<std::path::PathBuf>,
    /// It leads a step across nodes (`lead`): a SIGSTOP for the step is [`stop_signal`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leads: bool,
}

/// What a step process writes beside its entry as it ends (`PID.end`): its exit status
/// and what its tasks used, for an agent that did not start it. The agent that did removes
/// it once it has recorded the step's end ([`forget_record`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PartRecord {
    pub step: u32,
    pub code: i32,
    /// The signal that gave `code`, where one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub usage: Option<berth_api::StepUsage>,
    pub adoptable: bool,
    pub cgroup: String,
    /// When it ended, seconds since the epoch.
    #[serde(default)]
    pub ended: u64,
    /// See [`Registration::spool`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<std::path::PathBuf>,
}

/// The step processes registered in `steps` (a job's [`STEPS_DIR`]), by pid, alive or not.
pub(crate) fn registrations(steps: &std::path::Path) -> Vec<(u32, Registration)> {
    let Ok(entries) = std::fs::read_dir(steps) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let r: Registration = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((pid, r))
        })
        .collect()
}

impl Registration {
    /// Whether process `pid` is the one registered (not a later one with its pid).
    pub(crate) fn alive(&self, pid: u32) -> bool {
        crate::launcher::start_time(pid) == Some(self.start)
    }
}

/// What the steps running in the job of `job_dir` have used so far on this node: the
/// processes of each step process's group (its tasks join it) as /proc has them, the step
/// process's own time and memory left out but for the tasks it has reaped; the CPU time the
/// step's own cgroup accounted instead where it has one.
pub fn running_usage(job_dir: &std::path::Path) -> Vec<berth_api::StepNodeUsage> {
    let mut steps = registrations(&job_dir.join(STEPS_DIR));
    steps.retain(|(pid, r)| r.alive(*pid));
    if steps.is_empty() {
        return Vec::new();
    }
    // SAFETY: sysconf(3) with valid names.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let mut usage: Vec<berth_api::StepNodeUsage> = steps
        .iter()
        .map(|(_, r)| berth_api::StepNodeUsage {
            step: r.step,
            elapsed_seconds: (uptime - r.start as f64 / ticks).max(0.0) as u64,
            tasks: r.tasks,
            ..Default::default()
        })
        .collect();
    // The steps' processes, each with what /proc says of it.
    let mut members: Vec<(usize, u32, ProcStat)> = Vec::new();
    let processes = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for entry in processes {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(stat) = ProcStat::read(pid) else {
            continue;
        };
        if let Some(i) = steps.iter().position(|(leader, _)| *leader == stat.group) {
            members.push((i, pid, stat));
        }
    }
    // Each task (a child of its step's process) with what its processes hold now and the
    // largest one of them ever held: a task's peak is at least either, as sstat's MaxRSS
    // (the largest task's) is.
    let mut tasks: std::collections::HashMap<u32, (usize, u64, u64)> = Default::default();
    let parent: std::collections::HashMap<u32, u32> =
        members.iter().map(|(_, pid, s)| (*pid, s.parent)).collect();
    for (i, pid, stat) in &members {
        let u = &mut usage[*i];
        let leader = steps[*i].0;
        if *pid == leader {
            u.cpu_seconds += stat.children_ticks as f64 / ticks;
            continue;
        }
        u.cpu_seconds += (stat.own_ticks + stat.children_ticks) as f64 / ticks;
        let rss = stat.rss_pages * page;
        u.memory_bytes += rss;
        let mut task = *pid;
        while let Some(&up) = parent.get(&task).filter(|&&up| up != leader) {
            task = up;
        }
        let (_, now, most) = tasks.entry(task).or_insert((*i, 0, 0));
        *now += rss;
        *most = (*most).max(peak_rss(*pid).unwrap_or(0));
    }
    for (i, now, most) in tasks.into_values() {
        let peak = now.max(most);
        usage[i].max_memory_bytes = usage[i].max_memory_bytes.max(peak);
    }
    // CPU time as the step's own cgroup has it, where it has one: every process that was in
    // it, those that left the step's process group (setsid) and those that have ended too.
    if let Ok(layout) = berth_runtime::cgroup::Layout::detect() {
        for ((_, r), u) in steps.iter().zip(&mut usage) {
            let name = format!("{}/{}", r.cgroup, berth_runtime::cgroup::step_name(r.step));
            let used =
                berth_runtime::cgroup::usage_existing(&layout, berth_runtime::CGROUP_PARENT, &name);
            if let Some(usec) = used.and_then(|used| used.cpu_usec) {
                u.cpu_seconds = usec as f64 / 1e6;
            }
        }
    }
    usage
}

/// What /proc/PID/stat says of a process's parent, group and time.
struct ProcStat {
    parent: u32,
    group: u32,
    /// User and system clock ticks of its own.
    own_ticks: u64,
    /// Of its children it has waited for.
    children_ticks: u64,
    rss_pages: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Option<ProcStat> {
        crate::launcher::proc_stat(pid, |_, field| {
            Some(ProcStat {
                parent: field(4)? as u32,
                group: field(5)? as u32,
                own_ticks: field(14)? + field(15)?,
                children_ticks: field(16)? + field(17)?,
                rss_pages: field(24)?,
            })
        })
    }
}

/// The largest resident set process `pid` has had (VmHWM), bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The name of the end record of step process `pid` in [`STEPS_DIR`].
pub(crate) fn end_record(pid: u32) -> String {
    format!("{pid}.end")
}

/// Removes the end record of step process `group` (see [`PartRecord`]) from the job
/// directory `job_dir`, once the agent that started it has its end, and has told whoever
/// records it: the job's runner waits for that before it ends the job (`runner::end_steps`),
/// so that no job is seen ended with a step still running.
pub(crate) fn forget_record(job_dir: &std::path::Path, group: libc::pid_t) {
    let _ = std::fs::remove_file(job_dir.join(STEPS_DIR).join(end_record(group as u32)));
}

/// This step process's entry in its job's [`STEPS_DIR`] (named by its pid), removed when it
/// ends: through a descriptor of the directory, as the process may be in the container's
/// mounts by then.
struct Registered {
    dir: OwnedFd,
    name: std::ffi::CString,
    /// What the entry says.
    said: Registration,
}

impl Registered {
    /// `None` where the entry cannot be made (the step runs; its usage may be lost at the
    /// job's end, as before).
    fn new(launch: &StepLaunch) -> Option<Registered> {
        use std::os::unix::fs::DirBuilderExt;
        let path = launch.job_dir.join(STEPS_DIR);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(_) => return None,
        }
        let dir: OwnedFd = std::fs::File::open(&path).ok()?.into();
        let pid = std::process::id();
        let registration = Registration {
            step: launch.step_id,
            start: crate::launcher::start_time(pid)?,
            adoptable: launch.alone(),
            cgroup: launch.cgroup.clone(),
            deadline: launch
                .time_limit
                .map(|limit| crate::runner::now().saturating_add(limit)),
            kill_wait: launch.kill_wait,
            tasks: launch.tasks.len() as u32,
            spool: launch.spool.clone(),
            leads: launch.lead.is_some(),
        };
        let text = serde_json::to_vec(&registration).expect("registrations serialise");
        let registered = Registered {
            dir,
            name: std::ffi::CString::new(pid.to_string()).expect("digits"),
            said: registration,
        };
        registered
            .write(&registered.name, &text)
            .then_some(registered)
    }

    /// Writes `name` in the directory, anew; whether it could.
    fn write(&self, name: &std::ffi::CStr, text: &[u8]) -> bool {
        // SAFETY: openat(2) of a name in a directory we hold.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return false;
        }
        use std::os::fd::FromRawFd;
        // SAFETY: the descriptor just opened, owned from here on.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        std::io::Write::write_all(&mut file, text).is_ok()
    }

    /// Records the step process's end (`PID.end`), then removes its entry.
    fn ended(self, (code, signal): (i32, Option<i32>), usage: Option<berth_api::StepUsage>) {
        let record = PartRecord {
            step: self.said.step,
            code,
            signal,
            usage,
            adoptable: self.said.adoptable,
            cgroup: self.said.cgroup.clone(),
            ended: crate::runner::now(),
            spool: self.said.spool.clone(),
        };
        let name = std::ffi::CString::new(end_record(std::process::id())).expect("no NUL");
        self.write(
            &name,
            &serde_json::to_vec(&record).expect("records serialise"),
        );
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // SAFETY: unlinkat(2) of our own entry in a directory we hold.
        unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), 0) };
    }
}

/// What the step's tasks used: the CPU time of every process in the step's own cgroup
/// (`cgroup`, with its OOM kills), else of this process's children (the tasks, and what
/// they waited for); the largest peak of any one of them (as Slurm's MaxRSS is the largest
/// task's, not the step's sum; the cgroup's peak counts page cache too).
fn usage(cgroup: StepAccounting) -> Option<berth_api::StepUsage> {
    // SAFETY: a zeroed rusage is valid for getrusage(2) to fill in.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) into a struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut r) } != 0 {
        return None;
    }
    let usec = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(berth_api::StepUsage {
        user_usec: cgroup.user_usec.unwrap_or_else(|| usec(r.ru_utime)),
        system_usec: cgroup.system_usec.unwrap_or_else(|| usec(r.ru_stime)),
        // (In KiB.)
        max_rss_bytes: r.ru_maxrss as u64 * 1024,
        oom_kills: cgroup.oom_kills,
    })
}

/// Says `used` on `to`: `U <pid> <user usec> <system usec> <max RSS bytes> <OOM kills>`, as
/// the launcher's protocol has it.
fn report_usage(to: &OwnedFd, used: &berth_api::StepUsage) {
    let line = format!(
        "U {} {} {} {} {}\n",
        std::process::id(),
        used.user_usec,
        used.system_usec,
        used.max_rss_bytes,
        used.oom_kills
    );
    // One send of one short line: it cannot interleave with the launcher's own lines on the
    // socket. MSG_NOSIGNAL: an agent gone is no reason to die of SIGPIPE.
    // SAFETY: send(2) of a live buffer of its length.
    unsafe {
        libc::send(
            to.as_raw_fd(),
            line.as_ptr().cast(),
            line.len(),
            libc::MSG_NOSIGNAL,
        )
    };
}

/// Runs the step's tasks here: their worst exit status, and what their cgroup accounted
/// (OOM kills at the step's own memory limit, CPU time).
fn run_launch(mut launch: StepLaunch) -> Result<((i32, Option<i32>), StepAccounting), StepError> {
    // Looked up on the host, before entering the container, whose passwd berth wrote.
    let id = berth_runtime::Identity::lookup(&launch.user, true)?;
    // The agent's PMI server's address (a step across nodes), resolved on the host too
    // (inside, name resolution would load the image's libraries into this root process).
    // Where the server's host does not resolve here, a step that did not ask for PMIx runs
    // without PMI (an MPI program says so at its start; anything else runs as it would).
    let pmi = match launch.pmi.as_ref().map(|c| c.resolve(&launch.node)) {
        Some(Ok(server)) => Some(server),
        Some(Err(e)) if !launch.pmix => {
            berth_core::say!("berth step: the tasks on {} get no PMI: {e}", launch.node);
            None
        }
        Some(Err(e)) => return Err(io_err("resolving the step's PMI server")(e)),
        None => None,
    };
    // The agent signals the whole group: the tasks act on it, this process carries on
    // collecting their statuses. (spawn restores the defaults in each task.) Blocked too
    // until the tasks run: one that comes before (a cancel as the step starts) waits for
    // them ([`pass_on_early_signals`]); ignored, it would be lost.
    let forwarded = berth_runtime::forwarded_set();
    // SAFETY: sigprocmask(2) with a filled set; ignoring a signal runs no handler code.
    unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &forwarded, std::ptr::null_mut());
        for sig in berth_runtime::FORWARDED {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    catch_end()?;
    // The step's own PMI server where it is all here, then PMIx's, each in a helper forked
    // now: this process is still single-threaded and on the host (see pmi and pmix).
    let helper = match launch.pmi_here {
        true => Some(pmi::Helper::start(&launch, &id)?),
        false => None,
    };
    let pmi = pmi.or_else(|| Some(helper.as_ref()?.coordinator.clone()));
    let pmix = match launch.pmix {
        true => Some(pmix::Server::start(&launch, &id, pmi.clone())?),
        false => None,
    };
    let pmi = Pmi {
        server: pmi.filter(|_| !launch.pmix),
        pmix_env: pmix.as_ref().map_or(&[][..], |p| &p.env[..]),
        aborts: helper.as_ref(),
    };
    // A client inside the job's container passes on its own environment (the script's, as
    // srun does); one outside (on the host, or with an allocation of its own) gets the job's,
    // with its own variables on top but for the host's PATH, meaningless in the image.
    let Some(image) = &launch.image else {
        let container = berth_runtime::enter::find(&launch.cgroup)?;
        let own_cgroup = OwnCgroup::create(&launch)?;
        let outside = match launch.client_pid {
            Some(pid) => !container.holds(pid),
            None => launch.outside,
        };
        let env = step_env(&launch, outside)?;
        // (A job started with --container-remap-root: its tasks are root there too.)
        let remap = container.enter()?;
        let worst = run_tasks(
            &launch,
            &id,
            &env,
            remap.as_ref().map(|r| r.as_fd()),
            &pmi,
            own_cgroup.as_ref(),
        )?;
        return Ok((
            worst,
            own_cgroup.map_or_else(StepAccounting::default, OwnCgroup::finish),
        ));
    };
    // A container of its own, in the job's cgroup (the client is outside that container
    // whatever it is: inside the job's, or in none); the command through the image's
    // entrypoint, if asked for.
    if !image.entrypoint.is_empty() {
        launch.argv = image
            .entrypoint
            .iter()
            .cloned()
            .chain(launch.argv)
            .collect();
    }
    let outside = match launch.client_pid {
        Some(pid) => !berth_runtime::enter::is_member(pid, &launch.cgroup),
        None => launch.outside,
    };
    if outside {
        // The job's environment is complete once its container is (an allocation's step
        // may come as soon as the job runs): waited for, as a step in it waits.
        berth_runtime::enter::find(&launch.cgroup)?;
    }
    let own_cgroup = OwnCgroup::create(&launch)?;
    let env = step_env(&launch, outside)?;
    // Where a saved container's files are read from once its tasks end.
    let host = match launch.save {
        Some(_) => Some(berth_runtime::enter::HostNamespace::here()?),
        None => None,
    };
    // The node's mount of the image, held while the tasks run (and a save reads it).
    let (mut spec, mounted) = own_container(&launch, image, &id, env)?;
    // Root inside, the user outside (`--container-remap-root`): the tasks' user namespace,
    // through which the container's image is idmapped too.
    let mut remap = match image.remap_root {
        true => Some(berth_runtime::enter::remapped_root(&id)?),
        false => None,
    };
    // A named container's hold, kept while the tasks run; its layer, or this step's own on
    // disk when it is to be saved.
    let mut slot = None;
    let layer = match &launch.container {
        Some(named) => {
            let mut held = named::Slot::lock(&launch.job_dir, &named.name)?;
            match held.plan(named, &launch.cgroup, &launch.node)? {
                named::Plan::Join(container) if image.remap_root && !container.remapped() => {
                    return Err(StepError::Refused(format!(
                        "container {} runs already, its tasks as its user: --container-remap-root starts one (wait for the running step, or join it without the flag)",
                        named.name
                    )))
                }
                named::Plan::Join(container) => {
                    if !image.binds.is_empty() || image.no_home {
                        berth_core::say!(
                            "berth step: container {} runs already: it keeps the binds and home it was started with, not this step's",
                            named.name
                        );
                    }
                    // Its tasks are as the container's are: root inside, if it was started
                    // remapped.
                    remap = container.enter()?;
                    held.joined();
                }
                named::Plan::Start => {
                    berth_runtime::enter::join_cgroup(&launch.cgroup)?;
                    spec.layer = Some(held.layer().to_path_buf());
                    berth_runtime::enter::new(&spec, remap.as_ref().map(|r| r.as_fd()))?;
                    held.started()?;
                }
            }
            let layer = held.layer().to_path_buf();
            slot = Some(held);
            Some(layer)
        }
        None => {
            let layer = match launch.save {
                Some(_) => Some(save::unnamed_layer(
                    &launch.job_dir,
                    &format!(".step{}", launch.step_id),
                )?),
                None => None,
            };
            berth_runtime::enter::join_cgroup(&launch.cgroup)?;
            spec.layer = layer.clone();
            berth_runtime::enter::new(&spec, remap.as_ref().map(|r| r.as_fd()))?;
            layer
        }
    };
    let worst = run_tasks(
        &launch,
        &id,
        &spec.env,
        remap.as_ref().map(|r| r.as_fd()),
        &pmi,
        own_cgroup.as_ref(),
    )?;
    let ended = own_cgroup.map_or_else(StepAccounting::default, OwnCgroup::finish);
    if let (Some(path), Some(host), Some(layer)) = (&launch.save, &host, &layer) {
        let saved = save::save(host, layer, &mounted.path, &id, path, "berth step");
        if slot.is_none() {
            let _ = std::fs::remove_dir_all(layer);
        }
        saved?;
    }
    drop(slot);
    Ok((worst, ended))
}

/// The step's own cgroup on this node, below its job's, as Slurm gives each step one: its
/// tasks' memory limit where it asks for one (`srun --mem`), the OOM kills among them, and
/// what they leave behind, killed at its end. Made before the step's process enters the
/// job's container; its tasks join it as they start (the step's process stays in the
/// job's); removed once they have ended.
struct OwnCgroup {
    cgroup: berth_runtime::cgroup::StepCgroup,
    bytes: Option<u64>,
    /// `JOB.STEP on NODE`, for its OOM kills' report.
    step: String,
}

impl OwnCgroup {
    /// Made once the job's container is (so that its cgroup is complete), on the host.
    /// `None` where it cannot be made and the step asks for no memory of its own: it runs
    /// in its job's cgroup then, as steps did before they had their own.
    fn create(launch: &StepLaunch) -> Result<Option<OwnCgroup>, StepError> {
        use berth_runtime::cgroup::{Layout, Limits, StepCgroup};
        let limits = Limits {
            memory: launch.memory,
            ..Limits::default()
        };
        let made = Layout::detect().and_then(|layout| {
            StepCgroup::create(
                &layout,
                berth_runtime::CGROUP_PARENT,
                &launch.cgroup,
                launch.step_id,
                &limits,
            )
        });
        match (made, launch.memory) {
            (Ok(cgroup), bytes) => Ok(Some(OwnCgroup {
                cgroup,
                bytes,
                step: format!("{}.{} on {}", launch.job_id, launch.step_id, launch.node),
            })),
            (Err(_), None) => Ok(None),
            (Err(e), Some(_)) => Err(berth_runtime::RuntimeError::from(e).into()),
        }
    }

    /// Removes the cgroup; what it accounted, its OOM kills said as srun says them.
    fn finish(self) -> StepAccounting {
        let end = self.cgroup.finish();
        let kills = end.oom_kills;
        if kills > 0 {
            let limit = match self.bytes {
                Some(bytes) => format!("its memory limit ({} MiB, --mem)", bytes >> 20),
                None => "its job's memory limit".into(),
            };
            berth_core::say!(
                "berth step: error: Detected {kills} oom_kill event{} in step {}: the step's tasks went over {limit}: ask for more",
                if kills == 1 { "" } else { "s" },
                self.step,
            );
        }
        end
    }
}

/// What a step's tasks get of MPI's process managers.
struct Pmi<'a> {
    /// The PMI server each task gets a connection to (PMI_FD).
    server: Option<pmi::Coordinator>,
    /// Each task's PMIx variables.
    pmix_env: &'a [Vec<String>],
    /// The step's own PMI server, which says when a task aborts the step.
    aborts: Option<&'a pmi::Helper>,
}

/// Starts the step's tasks in the container this process is in, waits for all of them,
/// and returns the worst exit status and the signal that gave it, where one did (a task's
/// abort's code, where one aborted the step).
/// `own_cgroup`: the step's cgroup, which each task joins as it starts.
fn run_tasks(
    launch: &StepLaunch,
    id: &berth_runtime::Identity,
    env: &[String],
    remap: Option<std::os::fd::BorrowedFd>,
    pmi: &Pmi,
    own_cgroup: Option<&OwnCgroup>,
) -> Result<(i32, Option<i32>), StepError> {
    let cgroup = own_cgroup.map_or_else(Vec::new, |c| c.cgroup.task_files());
    if let Some(per_task) = launch.gpus_per_task {
        let (need, have) = (launch.tasks.len() * per_task as usize, gpus_in_container());
        if need > have {
            return Err(StepError::Refused(format!(
                "--gpus-per-task={per_task}: the {} tasks on {} need {need} GPUs; the job has {have} there",
                launch.tasks.len(),
                launch.node
            )));
        }
    }

    // --pty: the one task gets a terminal of its own, relayed to the client's.
    let terminal = if launch.pty {
        Some(pty::Terminal::open(id).map_err(io_err("opening a pseudo-terminal"))?)
    } else {
        None
    };
    let mut running: Vec<Running> = Vec::new();
    let mut labelled: Vec<Labelled> = Vec::new();
    let mut files = OpenTaskFiles::default();
    let first = launch.first_rank();
    // The client's input (this process's stdin): a copy for each task (srun's default; a
    // pipe each, filled once they all run), or task N's alone (`--input=N`: the others read
    // /dev/null). Files of each task (`--input=in-%t`) come before either.
    let own_files = launch
        .task_files
        .as_ref()
        .is_some_and(|f| f.input.is_some());
    let copies = !own_files && !launch.pty && launch.input_task.is_none() && launch.tasks.len() > 1;
    // --pty: the tasks but the first have no input or output, as srun gives them (a shell
    // there ends at once).
    let quiet = launch.pty && launch.tasks.len() > 1;
    let inputs = launch.input_task.is_some() && !own_files;
    let null = match quiet || inputs {
        true => Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(io_err("opening /dev/null for the tasks"))?,
        ),
        false => None,
    };
    let (mut readers, mut feeds) = (Vec::new(), Vec::new());
    // --multi-prog: each task's own program (the controller checked every rank has one).
    let programs = match &launch.multi_prog {
        Some(text) => Some(
            berth_core::job::MultiProg::parse(text)
                .map_err(|e| StepError::Refused(e.to_string()))?,
        ),
        None => None,
    };
    for (local, cpus) in launch.tasks.iter().enumerate() {
        let mut env = task_env(launch, env, local);
        if let Some(vars) = pmi.pmix_env.get(local) {
            env.retain(|kv| !vars.iter().any(|v| name_of(v) == name_of(kv)));
            env.extend(vars.iter().cloned());
        }
        let rank = first + local;
        let argv = match &programs {
            Some(p) => p.argv(rank as u32).ok_or_else(|| {
                StepError::Refused(format!("--multi-prog gives task {rank} no program"))
            })?,
            None => launch.argv.clone(),
        };
        // The task's own connection to the PMI server, named in PMI_FD (as slurmstepd and
        // hydra give one), its secret sent already.
        let pmi_connection = match &pmi.server {
            Some(server) => {
                let connection = server.connect().map_err(io_err(format!(
                    "connecting to the PMI server {}",
                    server.addr
                )))?;
                env.push(format!("PMI_FD={}", connection.as_raw_fd()));
                Some(connection)
            }
            None => None,
        };
        let pipes = if launch.label {
            Some((pipe(0)?, pipe(0)?))
        } else {
            None
        };
        let [mut stdin, mut stdout, mut stderr] = files.of_task(launch, id, rank)?;
        let null_fd = null.as_ref().map(|n| n.as_raw_fd());
        if quiet && local > 0 {
            [stdin, stdout, stderr] = [null_fd; 3];
        }
        if copies {
            let (read, write) = pipe(0)?;
            stdin = Some(read.as_raw_fd());
            readers.push(read);
            feeds.push(write);
        } else if inputs && launch.input_task != Some(rank as u32) {
            stdin = null_fd;
        }
        let task = berth_runtime::enter::Task {
            argv: &argv,
            env: &env,
            pid_variable: Some("SLURM_TASK_PID"),
            cwd: &launch.cwd,
            cpus,
            stdin,
            stdout: pipes.as_ref().map(|((_, w), _)| w.as_raw_fd()).or(stdout),
            stderr: pipes.as_ref().map(|(_, (_, w))| w.as_raw_fd()).or(stderr),
            pty: (terminal.as_ref())
                .filter(|_| local == 0)
                .map(|t| t.slave.as_raw_fd()),
            remap,
            inherit: pmi_connection.as_ref().map(|c| c.as_raw_fd()),
            cgroup: &cgroup,
        };
        let pid = berth_runtime::enter::spawn(&task, id)?;
        // (The task has its copy.)
        drop(pmi_connection);
        if let Some(((out, _), (err, _))) = pipes {
            labelled.push(Labelled {
                rank,
                read: Some(out),
                to: stdout.unwrap_or(1),
                partial: Vec::new(),
            });
            labelled.push(Labelled {
                rank,
                read: Some(err),
                to: stderr.unwrap_or(2),
                partial: Vec::new(),
            });
        }
        running.push(Running {
            rank,
            pid,
            // A pidfd turns readable when its process ends: one poll(2) loop watches the
            // tasks and their output together.
            pidfd: Some(
                berth_runtime::enter::pidfd(pid).map_err(io_err("watching a task (pidfd)"))?,
            ),
            status: None,
            signal: None,
            killed: false,
        });
    }
    pass_on_early_signals();
    // (The tasks have theirs; this thread is started only now, as the tasks had to be
    // started by a single-threaded process.)
    drop(readers);
    if copies {
        let input = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io_err("taking the step's input"))?;
        tee(input, feeds);
    }
    // The client's terminal is raw until it hears the step's end: lines said until then
    // end as a raw terminal needs.
    let end = if terminal.is_some() { "\r\n" } else { "\n" };
    match terminal {
        Some(t) => {
            drop(t.slave);
            let others: Vec<libc::pid_t> = running[1..].iter().map(|t| t.pid).collect();
            let task = &mut running[0];
            let pidfd = task.pidfd.take().expect("watched");
            let (status, signal) = pty::relay(&t.master, task.pid, pidfd, &others)?;
            (task.status, task.signal) = (Some(status), signal);
            // The others' ends, once the terminal's has ended.
            watch(launch, &mut running, &mut labelled, None)?;
        }
        None => {
            if let Some(code) = watch(launch, &mut running, &mut labelled, pmi.aborts)? {
                berth_core::say!("berth step: a task aborted the step with exit code {code}");
                return Ok((code, None));
            }
        }
    }

    let mut worst = (0, None);
    // The tasks that failed alike, said together (`tasks 0-3: Exited with exit code 1`).
    type How = (i32, Option<i32>);
    let mut failed: Vec<(How, Vec<u32>)> = Vec::new();
    for t in running.iter().filter(|t| !t.killed) {
        let status = t.status.unwrap_or(125);
        if status != 0 {
            let how = (status, t.signal);
            match failed.iter_mut().find(|(h, _)| *h == how) {
                Some((_, ranks)) => ranks.push(t.rank as u32),
                None => failed.push((how, vec![t.rank as u32])),
            }
        }
        worst = worse(worst, (status, t.signal));
    }
    for ((status, signal), ranks) in failed.into_iter().filter(|_| !launch.quiet) {
        let line = task_failed(launch.srun, &launch.node, &ranks, status, signal);
        berth_core::say_line(format!("{line}{end}"));
    }
    Ok(worst)
}

/// Passes on to the tasks, all running now, the signals for them that came before (held
/// pending: see `run_launch`), and from now on lets this process ignore them as they come:
/// to its process group, the tasks' (a step's leader, in it too, knows them by their
/// sender).
fn pass_on_early_signals() {
    let forwarded = berth_runtime::forwarded_set();
    let mut early = Vec::new();
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: sigtimedwait(2) of a filled set, without waiting, no siginfo asked for.
        match unsafe { libc::sigtimedwait(&forwarded, std::ptr::null_mut(), &now) } {
            sig if sig > 0 => early.push(sig),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    // SAFETY: sigprocmask(2) with a filled set; kill(2) of our own process group.
    unsafe {
        libc::sigprocmask(libc::SIG_UNBLOCK, &forwarded, std::ptr::null_mut());
        for sig in early {
            libc::kill(0, sig);
        }
    }
}

/// The files of this node's tasks (`srun -o out-%t`), each name opened once, as the user,
/// and shared by the tasks it names.
#[derive(Default)]
struct OpenTaskFiles {
    opened: Vec<(std::path::PathBuf, std::fs::File)>,
}

impl OpenTaskFiles {
    /// The stdin, stdout and stderr of the task of `rank`, where the step names files of
    /// its own (`None`: the client's).
    fn of_task(
        &mut self,
        launch: &StepLaunch,
        id: &berth_runtime::Identity,
        rank: usize,
    ) -> Result<[Option<std::os::fd::RawFd>; 3], StepError> {
        let Some(names) = &launch.task_files else {
            return Ok([None; 3]);
        };
        let task = berth_core::job::TaskContext {
            job_id: launch.job_id,
            step_id: launch.step_id,
            rank: rank as u32,
            node_index: launch.node_index as u32,
            node: &launch.node,
        };
        let mut open = |pattern: &Option<String>, write: Option<bool>| {
            let Some(pattern) = pattern else {
                return Ok(None);
            };
            let name = berth_core::job::expand_task_pattern(pattern, &task);
            let path = std::path::Path::new(&launch.cwd).join(name);
            if let Some((_, file)) = self.opened.iter().find(|(p, _)| *p == path) {
                return Ok(Some(file.as_raw_fd()));
            }
            let file = berth_runtime::enter::open_as(id, &path, write)?;
            let fd = file.as_raw_fd();
            self.opened.push((path, file));
            Ok::<_, StepError>(Some(fd))
        };
        Ok([
            open(&names.input, None)?,
            open(&names.output, Some(names.append))?,
            open(&names.error, Some(names.append))?,
        ])
    }
}

/// The signal the agent sends a step's process (not its group) to end the step: the
/// process kills its tasks, collects their statuses and what they used, and exits, so that
/// a step ended early (a failed task elsewhere, `--kill-on-bad-exit`; an MPI abort; its
/// client gone) still says what its tasks used.
pub(crate) fn end_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// The signal the agent sends a step's leader (`lead`), not its group, for a SIGSTOP of the
/// step, which the leader could not pass on once stopped: it passes SIGSTOP on to the other
/// nodes' parts, then stops its own group, itself with it (SIGCONT resumes it, and it passes
/// that on as any signal).
pub(crate) fn stop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

/// The read end of the pipe [`end_signal`]'s handler writes a byte into, which [`watch`]
/// polls.
static END_READ: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();

/// The write end of that pipe, for the handler (which may not lock or allocate); open for
/// the life of the process.
static END_WRITE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_end(_: libc::c_int) {
    let fd = END_WRITE.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; one byte from a static, to a non-blocking
        // pipe (a full pipe has the news already).
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// Catches [`end_signal`], and unblocks it: one the agent sent already is handled then.
/// A task's disposition of it is the default again once it execs.
fn catch_end() -> Result<(), StepError> {
    let (read, write) = pipe(libc::O_NONBLOCK)?;
    if END_READ.set(read).is_ok() {
        use std::os::fd::IntoRawFd;
        END_WRITE.store(write.into_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: a handler that only writes to a pipe (async-signal-safe), installed with
    // sigaction and an empty mask.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_end as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(end_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(io_err("catching the step's end signal")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    block_end(false);
    Ok(())
}

/// Blocks (`true`) or unblocks [`end_signal`] in this thread. A step process starts with it
/// blocked (see `launcher` and [`step_command`]): the agent may send it as soon as the
/// process exists, and its default action would kill the process before [`catch_end`],
/// its tasks' usage unsaid.
pub(crate) fn block_end(block: bool) {
    // SAFETY: a set filled by sigemptyset and sigaddset, given to sigprocmask (a plain
    // call, async-signal-safe: also fit for a child between fork and exec).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, end_signal());
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::sigprocmask(how, &set, std::ptr::null_mut());
    }
}

/// Kills the tasks still running (SIGKILL), and what they started (SIGTERM to this
/// process's group, which this process ignores); `say` tells of each. `excused`: their
/// statuses say nothing of their programs (another task failed), and count for nothing.
fn kill_tasks(running: &mut [Running], excused: bool, say: impl Fn(usize)) {
    for other in running
        .iter_mut()
        .filter(|o| o.status.is_none() && !o.killed)
    {
        say(other.rank);
        other.killed = excused;
        // SAFETY: kill(2) on a task this process forked and has not reaped.
        unsafe { libc::kill(other.pid, libc::SIGKILL) };
    }
    // SAFETY: kill(2) on our own process group.
    unsafe { libc::kill(0, libc::SIGTERM) };
}

/// Waits until every task has ended and, with `--label`, all their output is printed; ends
/// them all on [`end_signal`], or when one aborts the step through `aborts`: its code then.
fn watch(
    launch: &StepLaunch,
    running: &mut [Running],
    labelled: &mut [Labelled],
    aborts: Option<&pmi::Helper>,
) -> Result<Option<i32>, StepError> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut aborts, mut aborted) = (aborts, None);
    loop {
        // (is a task's pidfd, index) of each descriptor polled: the tasks' pidfds, then the
        // --label pipes still open.
        let (owners, mut polled): (Vec<(bool, usize)>, Vec<libc::pollfd>) = running
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some(((true, i), t.pidfd.as_ref()?)))
            .chain(
                labelled
                    .iter()
                    .enumerate()
                    .filter_map(|(i, l)| Some(((false, i), l.read.as_ref()?))),
            )
            .map(|(owner, fd)| {
                let poll = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                (owner, poll)
            })
            .unzip();
        if polled.is_empty() {
            return Ok(aborted);
        }
        let end = END_READ.get();
        for fd in [end.map(|r| r.as_fd()), aborts.map(|h| h.aborts())]
            .into_iter()
            .flatten()
        {
            polled.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: poll(2) on descriptors we own, in a vector that outlives the call.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io_err("waiting for the tasks")(e));
        }
        if let Some(h) = aborts.filter(|_| polled.pop().is_some_and(|p| p.revents != 0)) {
            // Heard once: an abort, or the helper gone (the tasks go on without it).
            aborts = None;
            aborted = h.aborted();
            if aborted.is_some() {
                kill_tasks(running, true, |_| {});
            }
        }
        if let Some(read) = end.filter(|_| polled.last().is_some_and(|p| p.revents != 0)) {
            let mut drained = [0u8; 16];
            // SAFETY: read(2) from the non-blocking pipe into a buffer of its length.
            while unsafe { libc::read(read.as_raw_fd(), drained.as_mut_ptr().cast(), 16) } > 0 {}
            // (Killed, so the step's status says so: 137.)
            kill_tasks(running, false, |_| {});
        }
        for (p, (is_task, i)) in polled.iter().zip(owners) {
            if p.revents == 0 {
                continue;
            }
            if !is_task {
                let l = &mut labelled[i];
                let fd = l.read.as_ref().expect("polled").as_raw_fd();
                // SAFETY: read(2) into a live buffer of its length.
                let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if got > 0 {
                    l.partial.extend_from_slice(&buf[..got as usize]);
                    l.flush(false);
                } else if got == 0
                    || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    l.flush(true);
                    l.read = None;
                }
                continue;
            }
            let t = &mut running[i];
            let (status, signal) = berth_runtime::enter::wait_signalled(t.pid)
                .map_err(io_err("waiting for a task"))?;
            (t.status, t.signal) = (Some(status), signal);
            t.pidfd = None;
            let failed = t.status != Some(0);
            let rank = t.rank;
            if failed && launch.kill_on_bad_exit {
                kill_tasks(running, true, |other| {
                    berth_core::say!(
                        "berth step: task {rank} failed: killing task {other} (--kill-on-bad-exit)"
                    )
                });
            }
        }
    }
}

/// `berth internal hold`: the program of an allocation's container (its job's script execs
/// it), holding the allocation until the controller ends it with SIGTERM (or the time
/// limit does). Exits 0: the job's status is its step's.
pub fn hold() -> i32 {
    // SAFETY: an empty signal set filled with sigaddset, blocked, then waited for: no handler
    // runs, the signals are only collected by sigwait.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut got = 0;
        libc::sigwait(&set, &mut got);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_task_is_said_in_its_clients_words() {
        assert_eq!(
            task_failed(true, "n1", &[0], 7, None),
            "srun: error: n1: task 0: Exited with exit code 7"
        );
        assert_eq!(
            task_failed(true, "n1", &[2], 137, Some(9)),
            "srun: error: n1: task 2: Killed"
        );
        assert_eq!(
            task_failed(false, "n1", &[1], 143, Some(15)),
            "berth step: n1: task 1: killed by signal 15"
        );
        // Tasks that failed alike, together.
        assert_eq!(
            task_failed(true, "n1", &[0, 1, 3], 3, None),
            "srun: error: n1: tasks 0-1,3: Exited with exit code 3"
        );
        // An exit status past 128 that no signal gave is an exit status.
        assert_eq!(
            task_failed(true, "n1", &[0], 200, None),
            "srun: error: n1: task 0: Exited with exit code 200"
        );
    }

    #[test]
    fn a_running_steps_usage_is_its_process_groups_but_its_leaders() {
        // A "step process" leading a group of its own, with one "task" in it.
        use std::os::unix::process::CommandExt;
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = leader.id();
        let job = tempfile::tempdir().unwrap();
        std::fs::create_dir(job.path().join(STEPS_DIR)).unwrap();
        let registration = Registration {
            step: 3,
            start: crate::launcher::start_time(pid).unwrap(),
            adoptable: true,
            cgroup: "job".into(),
            deadline: None,
            kill_wait: 0,
            tasks: 2,
            spool: None,
            leads: false,
        };
        let entry = job.path().join(STEPS_DIR).join(pid.to_string());
        std::fs::write(&entry, serde_json::to_vec(&registration).unwrap()).unwrap();
        // A registration whose process is gone (its pid another's, or none's) counts not.
        let gone = Registration {
            start: 1,
            ..registration
        };
        let other = job
            .path()
            .join(STEPS_DIR)
            .join(std::process::id().to_string());
        std::fs::write(other, serde_json::to_vec(&gone).unwrap()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let usage = loop {
            let usage = running_usage(job.path());
            if usage.first().is_some_and(|u| u.memory_bytes > 0)
                || std::time::Instant::now() > deadline
            {
                break usage;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // SAFETY: kill(2) of the group this test started.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        leader.wait().unwrap();
        assert_eq!(usage.len(), 1, "{usage:?}");
        let u = &usage[0];
        assert_eq!((u.step, u.tasks), (3, 2));
        // The task's memory (sleep's; the leader's own is left out, as berth's own is).
        assert!(
            u.memory_bytes > 0 && u.max_memory_bytes >= u.memory_bytes,
            "{u:?}"
        );
        assert!(running_usage(&job.path().join("none")).is_empty());
    }

    #[test]
    fn tee_gives_each_reader_all_of_the_input_and_drops_one_gone() {
        use std::io::{Read, Write};
        let (input, writer) = pipe(0).unwrap();
        let ends: Vec<(OwnedFd, OwnedFd)> = (0..3).map(|_| pipe(0).unwrap()).collect();
        let (readers, feeds): (Vec<OwnedFd>, Vec<OwnedFd>) = ends.into_iter().unzip();
        let mut readers = readers.into_iter();
        // The first reader is gone before anything comes: the others still get it all.
        drop(readers.next());
        let copying = tee(input, feeds);
        // More than a pipe holds and more than a reader may fall behind, read by two
        // readers at once while it is written.
        let data: Vec<u8> = (0..3 * TEE_BEHIND as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let reading: Vec<_> = readers
            .map(|r| {
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    std::fs::File::from(r).read_to_end(&mut got).unwrap();
                    got
                })
            })
            .collect();
        let mut w = std::fs::File::from(writer.try_clone().unwrap());
        w.write_all(&data).unwrap();
        drop((w, writer));
        for r in reading {
            assert!(r.join().unwrap() == data, "a reader got other bytes");
        }
        copying.join().unwrap();
        // And with its readers gone, the input left unread, the copy ends too.
        let (input, _writer) = pipe(0).unwrap();
        let (reader, feed) = pipe(0).unwrap();
        let copying = tee(input, vec![feed]);
        drop(reader);
        copying.join().unwrap();
    }

    #[test]
    fn each_task_takes_its_own_gpus_in_order() {
        assert_eq!(task_gpus(1, 0), "0");
        assert_eq!(task_gpus(1, 3), "3");
        assert_eq!(task_gpus(2, 1), "2,3");
    }
}
