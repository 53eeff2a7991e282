//! Named containers of a job (`srun --container-name=NAME[:FLAG]`, as pyxis has them): on
//! each node, the job's directory keeps `containers/NAME` (root's alone), whose `upper` and
//! `work` directories are the container's writable layer over its image, from one step to
//! the next until the job ends and its files go. While a step runs in it, the next ones join
//! it (its mount namespace) instead of mounting that layer a second time.
//!
//! Two locks, both flock(2): the directory itself serializes the steps that decide what to
//! do with the container (and the one that builds it, until it is built); its `namespace`
//! file, which records the running container's mount namespace, is held shared by every step
//! process in that container for as long as it runs, so that an exclusive lock on it says
//! that none does.

use super::{io_err as io, StepError};
use berth_core::job::{ContainerName, NameMode};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

/// One step's hold on a named container of its job on this node.
pub(super) struct Slot {
    name: String,
    dir: PathBuf,
    /// The directory, locked: held while this step decides and builds.
    deciding: Option<File>,
    /// The `namespace` file: held shared while this step runs in the container.
    namespace: File,
}

/// What a step does with its named container.
pub(super) enum Plan {
    /// Joins it: it runs.
    Join(berth_runtime::enter::Container),
    /// Starts it over its layer ([`Slot::layer`], made now if the container is new).
    Start,
}

fn flock(file: &File, how: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock(2) on a descriptor we own.
    match unsafe { libc::flock(file.as_raw_fd(), how) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The job's directory of containers on this node (root's alone): made if need be.
pub(super) fn containers(job_dir: &Path) -> Result<PathBuf, StepError> {
    let dir = job_dir.join("containers");
    make_dir(&dir, 0o700)?;
    Ok(dir)
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), StepError> {
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(io(format!("creating {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Makes a layer's `upper` (the container's root: the image's root's mode) and `work` in
/// `dir`, unless they are there.
pub(super) fn make_layer(dir: &Path) -> Result<(), StepError> {
    make_dir(&dir.join("upper"), 0o755)?;
    make_dir(&dir.join("work"), 0o700)
}

/// How long a step waits for a container whose last step is ending, at most.
const ENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Slot {
    /// The container `name` of the job whose directory on this node is `job_dir`, locked
    /// for this step's decision (waiting for another step's).
    pub(super) fn lock(job_dir: &Path, name: &str) -> Result<Slot, StepError> {
        let dir = containers(job_dir)?.join(name);
        make_dir(&dir, 0o700)?;
        let deciding = File::open(&dir).map_err(io(format!("opening {}", dir.display())))?;
        flock(&deciding, libc::LOCK_EX).map_err(io(format!("locking {}", dir.display())))?;
        let path = dir.join("namespace");
        let namespace = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        Ok(Slot {
            name: name.to_string(),
            dir,
            deciding: Some(deciding),
            namespace,
        })
    }

    /// The container's layer: the directory of its `upper` and `work`.
    pub(super) fn layer(&self) -> &Path {
        &self.dir
    }

    /// Decides, by `named`'s flag, whether the step joins the container, starts it again
    /// over its layer or creates it; refuses what the flag rules out. `cgroup` is the
    /// job's, where the container's processes are.
    pub(super) fn plan(
        &mut self,
        named: &ContainerName,
        cgroup: &str,
        node: &str,
    ) -> Result<Plan, StepError> {
        let name = &self.name;
        let exists = self.dir.join("upper").is_dir();
        let deadline = std::time::Instant::now() + ENDING_WAIT;
        loop {
            let running = match flock(&self.namespace, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => false,
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => true,
                Err(e) => return Err(io(format!("locking container {name}"))(e)),
            };
            match (named.mode, exists, running) {
                (NameMode::Create, true, _) => {
                    return Err(StepError::Refused(format!(
                        "container {name} exists already on {node} ('create' makes a new one only): name another, or drop the flag to use it"
                    )))
                }
                (NameMode::Exec, _, false) => {
                    return Err(StepError::Refused(format!(
                        "container {name} is not running on {node} ('exec' joins a running one only): drop the flag to start it"
                    )))
                }
                (NameMode::NoExec, _, true) => {
                    return Err(StepError::Refused(format!(
                        "container {name} runs in another step on {node}, and its files cannot be mounted twice at once: join it (drop 'no_exec'), or start this step after that one"
                    )))
                }
                (_, _, true) => {
                    if let Some(c) = self.running(cgroup)? {
                        flock(&self.namespace, libc::LOCK_SH | libc::LOCK_NB)
                            .map_err(io(format!("locking container {name}")))?;
                        return Ok(Plan::Join(c));
                    }
                    // Its last step is ending (its lock goes before its namespace does).
                    if std::time::Instant::now() > deadline {
                        return Err(StepError::Refused(format!(
                            "container {name} on {node} is held, and no process of the job is in it"
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                (_, _, false) => {
                    make_layer(&self.dir)?;
                    return Ok(Plan::Start);
                }
            }
        }
    }

    /// The running container: a process of the job in the mount namespace its builder
    /// recorded (which lives: its builder or a step that joined holds the lock).
    fn running(&self, cgroup: &str) -> Result<Option<berth_runtime::enter::Container>, StepError> {
        let mut text = [0u8; 64];
        let n = self
            .namespace
            .read_at(&mut text, 0)
            .map_err(io(format!("reading container {}'s namespace", self.name)))?;
        let recorded = std::str::from_utf8(&text[..n])
            .ok()
            .and_then(|t| t.trim().split_once(' '))
            .and_then(|(dev, ino)| Some((dev.parse().ok()?, ino.parse().ok()?)));
        match recorded {
            Some(ns) => Ok(berth_runtime::enter::find_namespace(cgroup, ns)?),
            None => Ok(None),
        }
    }

    /// The container is built, in this process's mount namespace: records it for the steps
    /// that come while it runs, and lets them decide.
    pub(super) fn started(&mut self) -> Result<(), StepError> {
        let (dev, ino) = berth_runtime::enter::own_namespace()?;
        let text = format!("{dev} {ino}\n");
        self.namespace
            .set_len(0)
            .and_then(|()| self.namespace.write_all_at(text.as_bytes(), 0))
            .map_err(io(format!("recording container {}'s namespace", self.name)))?;
        // From exclusive to shared: not atomic, but no other step looks while this one
        // decides.
        flock(&self.namespace, libc::LOCK_SH)
            .map_err(io(format!("locking container {}", self.name)))?;
        self.deciding = None;
        Ok(())
    }

    /// This step has joined the container: the next may decide.
    pub(super) fn joined(&mut self) {
        self.deciding = None;
    }
}
