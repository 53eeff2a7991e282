//! Joining a running container, as `docker exec` and nsenter(1) do: the tasks of a job step
//! (`berth step`) run in the job's own container (its mount namespace and root, so they see
//! the same overlay and binds; its cgroup, so they are limited, accounted, frozen and killed
//! with the job) as the job's user, with the same privileges as the job's script: none.
//!
//! The calling process must be root and single-threaded: setns(2) refuses to move a process
//! that shares its filesystem attributes with other threads into a mount namespace, and
//! [`spawn`] forks. [`find`] the container, then [`Container::enter`] it, then [`spawn`] tasks.

use crate::cgroup::{self, Layout};
use crate::container::{self, Failure};
use crate::sys;
use crate::{Identity, RuntimeError, CGROUP_PARENT};
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

/// The namespace identity of a process's namespace of `kind` (mnt, pid): its inode.
fn namespace_of(pid: &str, kind: &str) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))?;
    Ok((m.dev(), m.ino()))
}

/// A running container found by its cgroup, ready to [`Container::enter`]: one of its
/// processes, pinned by a pidfd, and the cgroup's files, opened while they can be (inside
/// the container /sys and the cgroup file systems are read-only).
pub struct Container {
    pid: libc::pid_t,
    pidfd: std::os::fd::OwnedFd,
    root: std::os::fd::OwnedFd,
    pidns: (u64, u64),
    /// Its processes' user namespace, where it is not the caller's: a remapped root's.
    userns: Option<std::os::fd::OwnedFd>,
    /// The files to write to to join the cgroup: v1's `tasks` (this thread, "0"), or v2's
    /// cgroup.procs (this process, by pid).
    procs: Vec<(std::fs::File, std::path::PathBuf)>,
    /// Which of the two `procs` holds (v1's `tasks` files, or v2's cgroup.procs).
    v1: bool,
}

/// Finds the container whose processes are in the cgroup `berth/<cgroup_name>` (a job's,
/// named by its runner). A container still being built is waited for, a while.
pub fn find(cgroup_name: &str) -> Result<Container, RuntimeError> {
    let gone = || {
        RuntimeError::NoContainer(format!(
            "no running container in cgroup {CGROUP_PARENT}/{cgroup_name}: has the job ended?"
        ))
    };
    let layout = Layout::detect()?;
    // A job that has just started may still be building its container (and even its
    // cgroup): wait for it, a while.
    let deadline = std::time::Instant::now() + READY_WAIT;
    // Looked at again soon at first (a container is built in a few milliseconds), then less
    // and less often.
    let mut pause = std::time::Duration::from_micros(500);
    let mut wait = || {
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(10));
    };
    let dirs = loop {
        let dirs = cgroup::existing_dirs(&layout, CGROUP_PARENT, cgroup_name);
        if !dirs.is_empty() {
            break dirs;
        }
        if std::time::Instant::now() > deadline {
            return Err(gone());
        }
        wait();
    };
    let own_mnt = own_namespace()?;
    let needle = needle(cgroup_name);
    loop {
        // (Where its processes are, looked up each time: on v2 a leaf its runner makes
        // just after the cgroup.)
        let first = cgroup::joinable(&dirs[0]);
        let members = std::fs::read_to_string(first.join("cgroup.procs")).unwrap_or_default();
        if let Some(member) = ready_member(&members, &needle, own_mnt, None) {
            return Ok(Container::of(member, joining_files(&layout, dirs)?));
        }
        if std::time::Instant::now() > deadline || !dirs[0].is_dir() {
            return Err(gone());
        }
        wait();
    }
}

/// The container whose mount namespace is `mnt` (a named container a step built with
/// [`new`]), if a process of the cgroup `berth/<cgroup_name>` or one below it (a step's
/// tasks are in their step's) is still in it.
pub fn find_namespace(
    cgroup_name: &str,
    mnt: (u64, u64),
) -> Result<Option<Container>, RuntimeError> {
    let layout = Layout::detect()?;
    let dirs = cgroup::existing_dirs(&layout, CGROUP_PARENT, cgroup_name);
    let Some(first) = dirs.first() else {
        return Ok(None);
    };
    let members = cgroup::pids_in([first.as_path()])
        .iter()
        .map(|pid| format!("{pid}\n"))
        .collect::<String>();
    let Some(member) = ready_member(&members, &needle(cgroup_name), own_namespace()?, Some(mnt))
    else {
        return Ok(None);
    };
    Ok(Some(Container::of(member, joining_files(&layout, dirs)?)))
}

/// The calling process's mount namespace.
pub fn own_namespace() -> Result<(u64, u64), RuntimeError> {
    namespace_of("self", "mnt").map_err(RuntimeError::setup("reading /proc/self/ns"))
}

/// The files through which a process joins the cgroup directories `dirs`, opened while
/// they can be; and whether they are v1's. The step process moves itself in
/// (single-threaded, through v1's `tasks` files: see Cgroup::tasks_files); on v2 by its
/// pid, through cgroup.procs.
fn joining_files(layout: &Layout, dirs: Vec<std::path::PathBuf>) -> Result<Joining, RuntimeError> {
    let v1 = matches!(layout, Layout::V1 { .. });
    let mut procs = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let dir = cgroup::joinable(&dir);
        let file = match v1 {
            true => cgroup::tasks_file(&dir)?,
            false => {
                let path = dir.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(RuntimeError::setup(format!("opening {}", path.display())))?
            }
        };
        procs.push((file, dir));
    }
    Ok((procs, v1))
}

/// How long [`find`] waits for a job's container to finish its setup.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The files through which a process joins a cgroup's directories, and whether they are
/// v1's (see [`joining_files`]).
type Joining = (Vec<(std::fs::File, std::path::PathBuf)>, bool);

type Member = (
    libc::pid_t,
    std::os::fd::OwnedFd,
    std::os::fd::OwnedFd,
    (u64, u64),
    Option<std::os::fd::OwnedFd>,
);

/// Moves the calling process into the cgroup `berth/<cgroup_name>`, another's (a job's), in
/// every hierarchy that has it: a step that runs in a container of its own (see [`new`])
/// still runs in its job's cgroup, its allocation. Single-threaded callers only (on v1 the
/// `tasks` file moves the calling thread).
pub fn join_cgroup(cgroup_name: &str) -> Result<(), RuntimeError> {
    let layout = Layout::detect()?;
    let dirs = cgroup::existing_dirs(&layout, CGROUP_PARENT, cgroup_name);
    if dirs.is_empty() {
        return Err(RuntimeError::NoContainer(format!(
            "no cgroup {CGROUP_PARENT}/{cgroup_name}: has the job ended?"
        )));
    }
    join(joining_files(&layout, dirs)?)
}

/// Gives the calling process a container of its own, `spec`'s: a new mount namespace whose
/// root is built as a container's first process builds it, the process otherwise as it was
/// (root, with its capabilities: a job step's process, which then starts its tasks as the
/// user with [`spawn`], as it does in the job's own container). With `remap`, root inside
/// is the user outside (pyxis's `--container-remap-root`): the user namespace of its tasks
/// ([`remapped_root`], [`Task::remap`]), through which the image's tree is mounted
/// idmapped (what root owns in it, the user owns); the writable layer's root is the
/// user's. The tasks may change the image's files, and nothing else the user could not.
/// Single-threaded callers only.
pub fn new(
    spec: &crate::ContainerSpec,
    remap: Option<std::os::fd::BorrowedFd>,
) -> Result<(), RuntimeError> {
    let image = crate::launch::open_image(spec)?;
    if spec.hostname.is_some() || spec.net_namespace {
        return Err(RuntimeError::NotPermitted(
            "a job's container shares its node's network and host name".into(),
        ));
    }
    unshare_mounts()?;
    crate::container::build_root(spec, &image, remap).map_err(|f| RuntimeError::Container {
        code: f.code,
        message: f.message,
    })
}

/// A mount namespace of the calling process's own, a copy of the one it was in.
/// Single-threaded callers only.
fn unshare_mounts() -> Result<(), RuntimeError> {
    // SAFETY: unshare(2) of the mount namespace; the caller is single-threaded.
    match unsafe { libc::unshare(libc::CLONE_NEWNS) } {
        0 => Ok(()),
        _ => Err(RuntimeError::setup("creating a mount namespace (unshare)")(
            std::io::Error::last_os_error(),
        )),
    }
}

/// The mount namespace a process started in (the host's), to come back to from a container
/// it built or entered ([`HostNamespace::back`]).
pub struct HostNamespace(std::os::fd::OwnedFd);

impl HostNamespace {
    /// The calling process's mount namespace, now.
    pub fn here() -> Result<HostNamespace, RuntimeError> {
        sys::open("/proc/self/ns/mnt", libc::O_RDONLY)
            .map(HostNamespace)
            .map_err(RuntimeError::setup("opening /proc/self/ns/mnt"))
    }

    /// Moves the calling process (root, single-threaded) back into that namespace, its root
    /// and working directory the namespace's, in a private copy of it: what it mounts
    /// afterwards is its own, and goes with it.
    pub fn back(&self) -> Result<(), RuntimeError> {
        sys::setns(&self.0, libc::CLONE_NEWNS)
            .map_err(RuntimeError::setup("entering the host's mount namespace"))?;
        unshare_mounts()?;
        sys::mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)
            .map_err(RuntimeError::setup("making mounts private"))
    }
}

/// A container's files as they are, without the mounts berth or its tasks made in it: its
/// layer's `upper` directory over its image's tree `image`, mounted read-only at `at` (an
/// existing directory) in the calling process's mount namespace (see
/// [`HostNamespace::back`]). overlayfs reads the layer as a lower layer: its whiteouts hide
/// what the container removed from the image.
pub struct ContainerFiles(String);

impl ContainerFiles {
    pub fn mount(
        upper: &std::path::Path,
        image: &std::path::Path,
        at: &std::path::Path,
    ) -> Result<ContainerFiles, RuntimeError> {
        let target = at.to_string_lossy().into_owned();
        let options = format!("lowerdir={}:{}", upper.display(), image.display());
        sys::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            Some(&options),
        )
        .map_err(RuntimeError::setup(format!(
            "mounting the container's files at {target}"
        )))?;
        Ok(ContainerFiles(target))
    }
}

impl Drop for ContainerFiles {
    fn drop(&mut self) {
        let _ = sys::umount_detach(&self.0);
    }
}

/// Whether process `pid` is in the cgroup `berth/<cgroup_name>` or below it (a job's: its
/// container's processes and its steps', some in cgroups of their own).
pub fn is_member(pid: libc::pid_t, cgroup_name: &str) -> bool {
    member(&pid.to_string(), &needle(cgroup_name))
}

/// When process `pid` started (clock ticks since boot: /proc/PID/stat's 22nd field, counted
/// after the command's closing parenthesis, which may hold spaces).
fn start_time(pid: libc::pid_t) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// What a member's /proc/PID/cgroup holds: the cgroup's path, then a line's end or a
/// cgroup below it.
fn needle(cgroup_name: &str) -> String {
    format!("/{CGROUP_PARENT}/{cgroup_name}")
}

fn member(pid: &str, needle: &str) -> bool {
    let Ok(lines) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    lines
        .match_indices(needle)
        .any(|(at, _)| matches!(lines.as_bytes().get(at + needle.len()), Some(b'\n' | b'/')))
}

/// A member of the cgroup whose container is complete: one with no_new_privs set, which
/// berth sets after the last mount and pivot_root, just before exec. So never a container
/// still being built, nor a step process that has not entered yet (it is root, without it).
/// The oldest such: the job's own container's first process (its script, or the holder),
/// not a task of a step in a container of its own (see [`new`]), which is in the cgroup too.
/// With `mnt`, the oldest member in that mount namespace instead (a named container's, whose
/// builder completed it before anyone could look for it), or one of its tasks if they are
/// root in a user namespace of their own (a remapped root's: its builder is not in it).
fn ready_member(
    members: &str,
    needle: &str,
    own_mnt: (u64, u64),
    mnt_wanted: Option<(u64, u64)>,
) -> Option<Member> {
    let mut pids: Vec<(u64, libc::pid_t)> = members
        .lines()
        .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
        .filter_map(|pid| Some((start_time(pid)?, pid)))
        .collect();
    pids.sort_unstable();
    let own_userns = namespace_of("self", "user").ok();
    let mut oldest = None;
    for (_, pid) in pids {
        let Ok(pidfd) = sys::pidfd_open(pid) else {
            continue;
        };
        let p = pid.to_string();
        let Ok(root) = sys::open(format!("/proc/{p}/root"), libc::O_PATH | libc::O_DIRECTORY)
        else {
            continue;
        };
        let (Ok(mnt), Ok(pidns)) = (namespace_of(&p, "mnt"), namespace_of(&p, "pid")) else {
            continue;
        };
        // A remapped root's container: its processes' user namespace, for its tasks.
        let userns = match namespace_of(&p, "user") {
            Ok(theirs) if Some(theirs) != own_userns => {
                match sys::open(format!("/proc/{p}/ns/user"), libc::O_RDONLY) {
                    Ok(fd) => Some(fd),
                    Err(_) => continue,
                }
            }
            Ok(_) => None,
            Err(_) => continue,
        };
        let inside = member(&p, needle);
        let ready = match mnt_wanted {
            Some(wanted) => mnt == wanted,
            None => std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                s.lines()
                    .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"]))
            }),
        };
        // Alive now means the pid was not reused since the pidfd was opened: what was read
        // through /proc/<pid> was about this process.
        if inside && ready && mnt != own_mnt && sys::pidfd_alive(&pidfd) {
            if mnt_wanted.is_none() || userns.is_some() {
                return Some((pid, pidfd, root, pidns, userns));
            }
            oldest.get_or_insert((pid, pidfd, root, pidns, userns));
        }
    }
    oldest
}

impl Container {
    /// The container of `member`, joined through `joining` (see [`joining_files`]).
    fn of((pid, pidfd, root, pidns, userns): Member, (procs, v1): Joining) -> Container {
        Container {
            pid,
            pidfd,
            root,
            pidns,
            userns,
            procs,
            v1,
        }
    }

    /// Whether process `pid` is inside this container (shares its mount namespace).
    pub fn holds(&self, pid: libc::pid_t) -> bool {
        let theirs = namespace_of(&pid.to_string(), "mnt");
        theirs.is_ok() && theirs.ok() == namespace_of(&self.pid.to_string(), "mnt").ok()
    }

    /// Enters the container's mount namespace (and pid namespace, if it has its own), its
    /// root directory and its cgroup: everything the calling process forks afterwards is
    /// inside. Returns the user namespace its processes are root in, if it is a remapped
    /// root's: its tasks enter it too ([`Task::remap`]), and are root there as they are.
    pub fn enter(self) -> Result<Option<std::os::fd::OwnedFd>, RuntimeError> {
        let own_pid =
            namespace_of("self", "pid").map_err(RuntimeError::setup("reading /proc/self/ns"))?;
        let mut flags = libc::CLONE_NEWNS;
        if self.pidns != own_pid {
            flags |= libc::CLONE_NEWPID;
        }
        sys::setns(&self.pidfd, flags)
            .map_err(RuntimeError::setup("entering the job's namespaces"))?;
        sys::chroot_to(&self.root).map_err(RuntimeError::setup("entering the job's root"))?;
        join((self.procs, self.v1))?;
        Ok(self.userns)
    }

    /// Whether the container's processes are root in a user namespace of their own (a
    /// remapped root's: see [`new`]).
    pub fn remapped(&self) -> bool {
        self.userns.is_some()
    }
}

/// Moves the calling process into a cgroup through its `joining` files: v1's `tasks` take
/// this thread ("0"), v2's cgroup.procs this process (its pid).
fn join((procs, v1): Joining) -> Result<(), RuntimeError> {
    let me = match v1 {
        true => "0".to_string(),
        false => std::process::id().to_string(),
    };
    for (mut file, dir) in procs {
        file.write_all(me.as_bytes())
            .map_err(RuntimeError::setup(format!(
                "joining the cgroup {}",
                dir.display()
            )))?;
    }
    Ok(())
}

/// One task of a step, as [`spawn`] starts it.
pub struct Task<'a> {
    pub argv: &'a [String],
    /// The complete environment, `NAME=VALUE`.
    pub env: &'a [String],
    /// A variable added to it that holds the task's own pid (Slurm's SLURM_TASK_PID).
    pub pid_variable: Option<&'a str>,
    /// The working directory inside the container; it must exist.
    pub cwd: &'a str,
    /// CPUs to pin the task to; empty: no pinning.
    pub cpus: &'a [u32],
    /// Descriptors to make the task's stdin, stdout and stderr; `None` keeps the caller's.
    pub stdin: Option<RawFd>,
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
    /// A pseudo-terminal's slave side: the task leads a new session with it as its
    /// controlling terminal, on stdin, stdout and stderr (`berth step --pty`).
    pub pty: Option<RawFd>,
    /// Root inside, the user outside: the task enters this user namespace (see
    /// [`remapped_root`]) and is its root, without capabilities, in a container built with
    /// it ([`new`]).
    pub remap: Option<std::os::fd::BorrowedFd<'a>>,
    /// A descriptor the task keeps open across its exec (its PMI connection, named in
    /// its PMI_FD); the caller's others close.
    pub inherit: Option<RawFd>,
    /// Files the task writes "0" to first, joining its step's own cgroup (v1 `tasks`, v2
    /// cgroup.procs: [`crate::cgroup::StepCgroup::task_files`]); the caller stays out of it.
    pub cgroup: &'a [RawFd],
}

/// The user namespace of a remapped root's tasks: root in it is `identity` outside.
pub fn remapped_root(identity: &Identity) -> Result<std::os::fd::OwnedFd, RuntimeError> {
    sys::user_namespace(identity.uid, identity.gid).map_err(RuntimeError::setup(
        "making a user namespace for the remapped root",
    ))
}

/// Forks one task in the container the calling process has [`join`]ed, as `identity`,
/// without capabilities and with no_new_privs, and returns its pid. A failure to start the
/// program (not found: 127, not executable: 126) is written to the task's stderr and becomes
/// its exit status, as a shell reports it. The task dies with the calling process.
pub fn spawn(task: &Task, identity: &Identity) -> Result<libc::pid_t, RuntimeError> {
    // Blocked across the fork, as in launch: one sent to the step's group meanwhile waits
    // for the task's default action instead of meeting the caller's disposition (ignored).
    let mask = crate::launch::block_forwarded();
    // SAFETY: the caller is single-threaded (see the module docs); the child only makes
    // system calls before exec or _exit.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        let forked = match pid {
            -1 => Err(RuntimeError::setup("forking a task")(
                std::io::Error::last_os_error(),
            )),
            pid => Ok(pid),
        };
        crate::launch::set_mask(&mask);
        return forked;
    }
    let failure = (|| -> Result<Failure, Failure> {
        // Dispositions the caller set (ignored signals survive exec) are not the program's,
        // nor its blocked signals (a step's process holds the forwarded ones until its
        // tasks run).
        crate::launch::default_dispositions();
        crate::launch::set_mask(&mask);
        // SAFETY: sigprocmask(2) with a filled set.
        unsafe {
            let forwarded = crate::launch::forwarded_set();
            libc::sigprocmask(libc::SIG_UNBLOCK, &forwarded, std::ptr::null_mut())
        };
        let io = |what: &'static str| {
            move |e: std::io::Error| Failure {
                code: 125,
                message: format!("cannot start the task: {what}: {e}"),
            }
        };
        for &fd in task.cgroup {
            // SAFETY: write(2) of a live one-byte buffer to a descriptor the caller holds.
            if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io("joining its step's cgroup")(
                    std::io::Error::last_os_error(),
                ));
            }
        }
        if let Some(fd) = task.pty {
            // SAFETY: setsid and the TIOCSCTTY ioctl on a terminal descriptor we hold.
            let ctty = unsafe { libc::setsid() >= 0 && libc::ioctl(fd, libc::TIOCSCTTY, 0) == 0 };
            if !ctty {
                return Err(io("taking the terminal")(std::io::Error::last_os_error()));
            }
            for target in 0..3 {
                sys::dup_onto(fd, target).map_err(io("redirecting to the terminal"))?;
            }
        }
        if let Some(fd) = task.stdin {
            sys::dup_onto(fd, 0).map_err(io("redirecting stdin"))?;
        }
        if let Some(fd) = task.stdout {
            sys::dup_onto(fd, 1).map_err(io("redirecting stdout"))?;
        }
        if let Some(fd) = task.stderr {
            sys::dup_onto(fd, 2).map_err(io("redirecting stderr"))?;
        }
        if !task.cpus.is_empty() {
            sys::set_affinity(task.cpus).map_err(io("binding to its CPUs"))?;
        }
        if let Some(fd) = task.inherit {
            // SAFETY: fcntl(2) on a descriptor of this process, clearing FD_CLOEXEC.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
                return Err(io("keeping its PMI connection")(
                    std::io::Error::last_os_error(),
                ));
            }
        }
        container::become_task(identity, false, task.remap, true)?;
        sys::chdir(task.cwd).map_err(|e| Failure {
            code: 125,
            message: format!(
                "cannot enter the working directory {} in the job's container: {e}",
                task.cwd
            ),
        })?;
        let env = container::with_pid_variable(task.env, task.pid_variable);
        Ok(container::exec(task.argv, &env))
    })()
    .unwrap_or_else(|f| f);
    let line = format!("berth step: {}\n", failure.message);
    // SAFETY: write(2) of a live buffer to our stderr, then _exit, as a failed child must.
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(failure.code)
    }
}

/// Opens `path` as `identity` would (its uid, gid and groups decide what it may open and
/// own what it creates), from the process that entered a container as root: its effective
/// ids change for the call and back (the caller must be single-threaded). For writing
/// (created with mode 0666 less the umask; truncated first unless `append`; always opened
/// O_APPEND, so that processes sharing it add to it whole, even with sendfile(2)), or for
/// reading.
pub fn open_as(
    identity: &Identity,
    path: &std::path::Path,
    write: Option<bool>,
) -> Result<std::fs::File, RuntimeError> {
    let mut options = std::fs::OpenOptions::new();
    match write {
        // (std refuses append with truncate; the flag goes as it is.)
        Some(append) => {
            options
                .create(true)
                .append(true)
                .custom_flags(if append { 0 } else { libc::O_TRUNC })
        }
        None => options.read(true),
    };
    as_user(identity, || options.open(path)).and_then(|opened| {
        opened.map_err(RuntimeError::setup(format!(
            "cannot open {}",
            path.display()
        )))
    })
}

/// Runs `f` with `identity`'s groups, gid and uid as the effective ones, then takes root's
/// back (the caller must be single-threaded; its saved uid is 0); a process that has the
/// user's ids already just runs it. What `f` opens, the user could have opened.
pub fn as_user<T>(
    identity: &Identity,
    f: impl FnOnce() -> std::io::Result<T>,
) -> Result<std::io::Result<T>, RuntimeError> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == identity.uid {
        return Ok(f());
    }
    // What to come back to.
    // SAFETY: getgroups with a size of 0 only counts; then it fills at most the buffer's
    // length; getegid cannot fail.
    let (own_groups, own_gid) = unsafe {
        let count = libc::getgroups(0, std::ptr::null_mut()).max(0);
        let mut groups: Vec<libc::gid_t> = vec![0; count as usize];
        let n = libc::getgroups(count, groups.as_mut_ptr());
        groups.truncate(n.max(0) as usize);
        (groups, libc::getegid())
    };
    let restore = || {
        // SAFETY: back to the ids this process had (its saved uid is 0: the way is open).
        unsafe {
            libc::seteuid(0) == 0
                && libc::setegid(own_gid) == 0
                && libc::setgroups(own_groups.len(), own_groups.as_ptr()) == 0
        }
    };
    // SAFETY: setgroups/setegid/seteuid on this single-threaded process, undone by
    // `restore`.
    let became = unsafe {
        libc::setgroups(identity.groups.len(), identity.groups.as_ptr()) == 0
            && libc::setegid(identity.gid) == 0
            && libc::seteuid(identity.uid) == 0
    };
    if !became {
        let e = std::io::Error::last_os_error();
        restore();
        return Err(RuntimeError::setup("cannot take the user's identity")(e));
    }
    let done = f();
    if !restore() {
        return Err(RuntimeError::setup("cannot take root's identity back")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(done)
}

/// A pidfd for a task [`spawn`] started: it turns readable when the task ends.
pub fn pidfd(pid: libc::pid_t) -> std::io::Result<std::os::fd::OwnedFd> {
    sys::pidfd_open(pid)
}

/// Reaps an ended task; its exit status as a shell reports it (128 + N for signal N).
pub fn wait(pid: libc::pid_t) -> std::io::Result<i32> {
    wait_signalled(pid).map(|(code, _)| code)
}

/// Reaps an ended task: its exit status as a shell reports it, and the signal that killed
/// it, if one did (which tells a status of 130 from SIGINT's).
pub fn wait_signalled(pid: libc::pid_t) -> std::io::Result<(i32, Option<i32>)> {
    let status = sys::wait(pid)?;
    let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    Ok((sys::exit_code(status), signal))
}
