//! A container, fully resolved: everything the launcher needs and nothing it must decide.

use crate::cgroup::Limits;
use crate::gpu::GpuInjection;
use crate::Identity;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// A squashfs image, mounted by the kernel through a loop device (needs root).
    Squashfs(PathBuf),
    /// An unpacked directory, bind-mounted (works unprivileged).
    Directory(PathBuf),
    /// No image: the program sees the host's own filesystem (batch jobs without an image,
    /// where the administrator allows them); identity, limits and privileges as in a container.
    Host,
}

impl Rootfs {
    /// The source the container's root shows in mountinfo: `berth:` and the image's absolute
    /// path, by which [`crate::users_of`] finds the containers that use an image.
    pub fn mount_source(&self) -> String {
        match self {
            Rootfs::Squashfs(path) | Rootfs::Directory(path) => {
                let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                format!("berth:{}", path.display())
            }
            Rootfs::Host => "berth".to_string(),
        }
    }
}

/// A host path to bind, already checked against the policy and opened, so that what is
/// mounted is what was checked even if someone swaps a symlink in the meantime.
#[derive(Debug)]
pub struct Bind {
    /// The canonical source path, for messages.
    pub source: PathBuf,
    /// An O_PATH descriptor of the source.
    pub fd: OwnedFd,
    /// Where it appears in the container (absolute).
    pub target: String,
    pub read_only: bool,
    pub is_dir: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    Argv(Vec<String>),
    /// An interactive shell: /bin/bash if the image has one, else /bin/sh.
    Shell,
}

#[derive(Debug)]
pub struct ContainerSpec {
    pub rootfs: Rootfs,
    pub program: Program,
    /// The complete environment, `NAME=VALUE`.
    pub env: Vec<String>,
    /// A variable added to it that holds the program's own pid (a batch script's
    /// SLURM_TASK_PID).
    pub pid_variable: Option<&'static str>,
    pub cwd: String,
    /// Fail if `cwd` does not exist (it was asked for with --pwd), rather than fall back to `/`.
    pub cwd_required: bool,
    pub binds: Vec<Bind>,
    /// Paths in the container, below a bound directory, that the bind policy denies: each
    /// hidden under an empty read-only directory, or an unreadable file (`true`: a
    /// directory).
    pub masks: Vec<(String, bool)>,
    pub identity: Identity,
    /// Run in a user namespace mapping the caller to itself (the unprivileged path); otherwise
    /// berth is root and switches to `identity` after setting the container up.
    pub rootless: bool,
    pub pid_namespace: bool,
    /// A network namespace of its own with only loopback, up (`--network none`), instead of
    /// the host's network.
    pub net_namespace: bool,
    /// A UTS namespace of its own with this host name (Docker's and Apptainer's
    /// `--hostname`), instead of the host's name.
    pub hostname: Option<String>,
    pub limits: Option<Limits>,
    pub gpu: Option<GpuInjection>,
    pub time_limit: Option<TimeLimit>,
    /// The cgroup's name under `berth/` (default `<pid>-<n>`), so that others can find it.
    /// A named cgroup is a daemon's (a job's, `<runner>-job<id>`), which sweeps what dead
    /// runs left itself (the node agent's upkeep); a run with an unnamed one sweeps them at
    /// its start.
    pub cgroup_name: Option<String>,
    /// Root inside, the user outside (pyxis's `--container-remap-root`, for a job's own
    /// container; Apptainer's `--fakeroot`): the program runs as root in a user namespace
    /// mapping root to `identity`; made by root, over the image's tree mounted idmapped (see
    /// `enter::new`: an image's unpacked tree only); rootless, the user's own namespace maps
    /// root to them, over their own unpacked copy.
    pub remap_root: bool,
    /// Its writable layer on disk: this directory's `upper` and `work` (kept after it: a
    /// named container's, for the next container over them, or one to save), rather than
    /// a tmpfs discarded with it.
    pub layer: Option<PathBuf>,
    /// An empty tmpfs at the user's home, theirs, where no home of the host's is bound
    /// (Apptainer's --contain): programs that write there (caches, settings) work, and
    /// leave nothing behind.
    pub empty_home: bool,
    /// The program's file creation mask (a batch job's submitter's); `None`: berth's own.
    pub umask: Option<u32>,
}

/// Stop the program after `limit`: `signal` (SIGTERM; LSF's run limit, SIGUSR2) to its
/// process group, SIGKILL `grace` later (as Slurm does at a job's time limit, with KillWait
/// as the grace). The program then runs in a process group of its own, so the signals
/// reach everything it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimit {
    pub limit: std::time::Duration,
    pub signal: libc::c_int,
    pub grace: std::time::Duration,
    pub warning: Option<Warning>,
}

/// A signal sent once `after` of the limit has run (sbatch `--signal`, bsub `-wa`), so that
/// the program can save its state before the limit stops it. Time frozen does not count,
/// as for the limit. Processes running berth's own executable (a job step's leader, which
/// leaves signals to its tasks) are never sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warning {
    pub after: std::time::Duration,
    pub signal: libc::c_int,
    pub to: WarnTo,
}

/// Who gets a [`Warning`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarnTo {
    /// The program alone, not its children (a batch script's shell, whose `trap` decides).
    Program,
    /// Every process in the container's cgroup outside the program's process group (a
    /// job's steps, which joined it from outside).
    OthersInCgroup,
    /// Every process in the container's cgroup.
    Cgroup,
}
