//! The parent side of a container: clone into new namespaces, map the user namespace, join
//! the cgroup, release the child, forward signals, wait, clean up, report the exit status.

use crate::cgroup::{self, Cgroup, Layout};
use crate::container;
use crate::spec::{ContainerSpec, Rootfs, WarnTo};
use crate::sys;
use crate::RuntimeError;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Signals berth passes on to the container, as `docker run` does with --sig-proxy (and
/// `berth step` to its tasks, as srun does).
pub const FORWARDED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCONT,
];

/// The parent cgroup (under each hierarchy's root) that holds one cgroup per container.
pub const CGROUP_PARENT: &str = "berth";

/// Where forwarded signals go: the container process (in berth's parent process) or the
/// program (in the pid namespace's init). One per process, since each process has its copy.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A signal that arrived before the child's pid was known: delivered as soon as it is.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // A terminal's ^C (SI_KERNEL) reaches the container directly: it is in our process group.
    if code == libc::SI_KERNEL {
        return;
    }
    match CHILD.load(Ordering::SeqCst) {
        // SAFETY: kill(2) is async-signal-safe.
        pid if pid > 0 => unsafe {
            libc::kill(pid, sig);
        },
        _ => PENDING.store(sig, Ordering::SeqCst),
    }
}

/// Gives the signals a program must start with as under any other launcher their default
/// dispositions: the forwarded ones (whose handlers, inherited, would forward to nobody)
/// and SIGPIPE, which berth ignores for itself (an ignored signal stays ignored across
/// exec: `yes | head -1` would never end its `yes`).
pub(crate) fn default_dispositions() {
    for sig in FORWARDED.into_iter().chain([libc::SIGPIPE]) {
        // SAFETY: restores the default disposition; no handler code runs.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Installs [`forward`] for every signal in [`FORWARDED`].
pub(crate) fn install_forwarding() {
    for sig in FORWARDED {
        // SAFETY: installs a handler that only calls async-signal-safe functions.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// The signals in [`FORWARDED`], as a set.
pub fn forwarded_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks the signals in [`FORWARDED`]; the mask there was before.
pub(crate) fn block_forwarded() -> libc::sigset_t {
    let set = forwarded_set();
    // SAFETY: the old mask is written by sigprocmask into a struct we own.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// Sets this thread's signal mask to `mask` (what [`block_forwarded`] returned): signals
/// that came meanwhile are delivered now.
pub(crate) fn set_mask(mask: &libc::sigset_t) {
    // SAFETY: a valid mask; no old one asked for.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
}

/// Forgets the forwarding state this process copied from its parent at clone(2).
pub(crate) fn reset_forwarding() {
    CHILD.store(0, Ordering::SeqCst);
    PENDING.store(0, Ordering::SeqCst);
}

/// From now on, forwarded signals go to `pid`, starting with any that came before.
pub(crate) fn forward_to(pid: libc::pid_t) {
    CHILD.store(pid, Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending != 0 {
        // SAFETY: signalling a child this process just created.
        unsafe { libc::kill(pid, pending) };
    }
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The exit status a shell would report: the program's code, or 128 + signal.
    pub code: i32,
    /// The signal that killed the program, if one did.
    pub signal: Option<i32>,
    /// The time limit ran out and berth stopped the program.
    pub timed_out: bool,
    /// When the time limit ran out (seconds since the epoch), if it did.
    pub timed_out_at: Option<u64>,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    pub usage: cgroup::Usage,
}

/// Maps the user of `spec` in the user namespace of process `pid` ("self": the caller, which
/// may map its own ids into a namespace it has just made): to itself, same uid and gid inside
/// as outside, or to root for a remapped root (`berth exec --fakeroot`). setgroups must be
/// denied before an unprivileged process may write gid_map (user_namespaces(7)).
fn write_maps(pid: impl std::fmt::Display, spec: &ContainerSpec) -> Result<(), RuntimeError> {
    let id = &spec.identity;
    let inside = |own: u32| if spec.remap_root { 0 } else { own };
    let maps = [
        ("setgroups", "deny".to_string()),
        ("uid_map", format!("{} {} 1\n", inside(id.uid), id.uid)),
        ("gid_map", format!("{} {} 1\n", inside(id.gid), id.gid)),
    ];
    for (file, text) in maps {
        let path = format!("/proc/{pid}/{file}");
        sys::write_file(&path, &text).map_err(RuntimeError::setup(format!("writing {path}")))?;
    }
    Ok(())
}

/// Runs the container to completion. The calling process must be single-threaded.
///
/// When the container needs no cgroup, pid namespace or time limit, nothing has to happen
/// after it ends, so the calling process itself becomes the container (as ch-run does):
/// then `run` does not return unless starting the container failed.
pub fn run(spec: &ContainerSpec) -> Result<Outcome, RuntimeError> {
    run_then(spec, |_| ())
}

/// [`run`], calling `ended` with the container's outcome as soon as it is known: before its
/// cgroup is removed, which changes nothing of the outcome but takes a while (a node agent
/// has the next job started meanwhile).
pub fn run_then(
    spec: &ContainerSpec,
    ended: impl FnOnce(&Outcome),
) -> Result<Outcome, RuntimeError> {
    let image = open_image(spec)?;
    // (Root's remapped root needs a user namespace made before the clone: see run_in.)
    let root_remap = spec.remap_root && !spec.rootless;
    if spec.limits.is_none() && !spec.pid_namespace && spec.time_limit.is_none() && !root_remap {
        return Err(become_container(spec, &image));
    }

    // A user's delegated cgroup, entered for the container's and left (dropped) after it,
    // on every way out of this function.
    let mut delegation = None;
    let cgroup = match &spec.limits {
        Some(limits) => {
            let layout = Layout::detect()?;
            // Root's containers go under berth's own cgroup; a user's, under the cgroup
            // delegated to them that this process is in.
            let parent = if spec.rootless {
                delegation
                    .insert(cgroup::enter_delegated(&layout, limits)?)
                    .parent
                    .clone()
            } else {
                CGROUP_PARENT.to_string()
            };
            // What crashed `berth exec`s left behind goes first. A named cgroup is a daemon's
            // (a job's, `<runner>-job<id>`), whose agent sweeps them all now and then: one
            // more job's start is no reason to look at every other.
            if spec.cgroup_name.is_none() {
                cgroup::sweep_stale(&layout, &parent);
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = spec
                .cgroup_name
                .clone()
                .unwrap_or_else(|| format!("{}-{nanos}", std::process::id()));
            let cgroup = Cgroup::create(&layout, &parent, &name, limits)?;
            // A job's: its steps may get cgroups of their own below it.
            Some(match spec.cgroup_name {
                Some(_) => cgroup.with_leaf()?,
                None => cgroup,
            })
        }
        None => None,
    };
    // The container's mount namespace, held open until the outcome is out (see run_in).
    let mut mounts = None;
    let result = run_in(spec, &image, cgroup.as_ref(), &mut mounts);
    let timed_out = TIMEOUT_STAGE.swap(0, Ordering::SeqCst) > 0;
    let timed_out_at = Some(LIMIT_REACHED.load(Ordering::SeqCst) as u64).filter(|_| timed_out);
    let usage = cgroup.as_ref().map(|c| c.usage()).unwrap_or_default();
    let oom = cgroup.as_ref().is_some_and(|c| c.oom_killed());
    let outcome = result.map(|status| Outcome {
        code: sys::exit_code(status),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        timed_out,
        timed_out_at,
        oom_killed: oom,
        usage,
    });
    if let Ok(outcome) = &outcome {
        ended(outcome);
    }
    // Its mounts go now: the last reference to the namespace (see run_in).
    drop(mounts);
    if let Some(c) = cgroup {
        c.destroy()?;
    }
    drop(delegation);
    outcome
}

/// The container's image: its squashfs file, or its tree (the host's for a host container).
pub(crate) fn open_image(spec: &ContainerSpec) -> Result<OwnedFd, RuntimeError> {
    let image_path = match &spec.rootfs {
        Rootfs::Squashfs(p) | Rootfs::Directory(p) => p.as_path(),
        Rootfs::Host => std::path::Path::new("/"),
    };
    let flags = if matches!(spec.rootfs, Rootfs::Squashfs(_)) {
        libc::O_RDONLY
    } else {
        libc::O_PATH | libc::O_DIRECTORY
    };
    sys::open(image_path, flags).map_err(RuntimeError::setup(format!(
        "opening the image {}",
        image_path.display()
    )))
}

/// Unshares this process's namespaces and execs the program in them. Returns the failure.
fn become_container(spec: &ContainerSpec, image: &OwnedFd) -> RuntimeError {
    let flags = namespaces(spec);
    // SAFETY: unshare(2) with namespace flags; the process is single-threaded (see `run`).
    if unsafe { libc::unshare(flags) } != 0 {
        return RuntimeError::setup("creating the namespaces (unshare)")(
            std::io::Error::last_os_error(),
        );
    }
    if spec.rootless {
        if let Err(e) = write_maps("self", spec) {
            return e;
        }
    }
    let failure = container::in_place(spec, image);
    RuntimeError::Container {
        code: failure.code,
        message: failure.message,
    }
}

/// The namespaces a container gets besides a pid namespace: a mount namespace, a user
/// namespace when rootless (made with the others, so it owns them), and network and UTS
/// namespaces when asked for.
fn namespaces(spec: &ContainerSpec) -> libc::c_int {
    let mut flags = libc::CLONE_NEWNS;
    if spec.rootless {
        flags |= libc::CLONE_NEWUSER;
    }
    if spec.net_namespace {
        flags |= libc::CLONE_NEWNET;
    }
    if spec.hostname.is_some() {
        flags |= libc::CLONE_NEWUTS;
    }
    flags
}

/// Runs the container in a child and waits for it. `mounts` is given the child's mount
/// namespace, open: while it is, the container's last process exits without tearing the
/// namespace down (every mount of it unmounted, and an RCU grace period waited for before
/// its exit is signalled: 0.2-1 ms that the job's end waited for), and the caller does that
/// when it closes it, after the outcome is out.
fn run_in(
    spec: &ContainerSpec,
    image: &OwnedFd,
    cgroup: Option<&Cgroup>,
    mounts: &mut Option<std::fs::File>,
) -> Result<libc::c_int, RuntimeError> {
    let (report_read, report_write) =
        sys::pipe().map_err(RuntimeError::setup("creating a pipe"))?;
    // On v1 the child moves itself into the cgroup (see Cgroup::tasks_files); on v2 it is
    // born there (CLONE_INTO_CGROUP), or this process moves it where the kernel cannot.
    let tasks = cgroup
        .map(Cgroup::tasks_files)
        .transpose()?
        .unwrap_or_default();
    let v2_dir = cgroup.map(Cgroup::v2_dir).transpose()?.flatten();
    // A remapped root's user namespace, made before the clone (its maps are written from
    // outside it) and entered by the child once it has built the root through it.
    let userns = match spec.remap_root && !spec.rootless {
        true => Some(crate::enter::remapped_root(&spec.identity)?),
        false => None,
    };
    let remap = userns.as_ref().map(|u| u.as_fd());
    let mut flags = namespaces(spec);
    if spec.pid_namespace {
        flags |= libc::CLONE_NEWPID;
    }
    install_forwarding();
    // The forwarded signals wait, blocked, across the clone: the child unblocks them once it
    // has given them back their default action, this process once it knows the child's pid.
    // (Otherwise one arriving meanwhile, a cancel just after a job's start, was swallowed by
    // the child's copy of the forwarding handler, and the program ran on.)
    let mask = block_forwarded();
    // Nothing to do between the clone and the child's setup when there is no user namespace
    // to map and the child can join its cgroup itself (v1, or none: a node's jobs here):
    // then the child shares this process's memory and runs while this process waits, until
    // it execs (posix_spawn's vfork): no copy of the page tables to make, fault in, write to
    // and tear down at exec. A pid namespace's first process never execs (it stays to reap),
    // and on v2 the child is born in its cgroup by a clone3 of its own: those fork.
    if !spec.pid_namespace && !spec.rootless && v2_dir.is_none() {
        // SAFETY: single-threaded (see `run`); the child ends in exec or _exit, and what it
        // writes to memory (allocations, container::child's documented effects) is harmless
        // to this process, which waits meanwhile.
        let spawned = unsafe {
            sys::clone_vfork(flags, &mut || {
                container::child(spec, image, &tasks, &mask, None, &report_write, remap)
            })
        };
        drop(tasks);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                set_mask(&mask);
                return Err(RuntimeError::setup("creating the namespaces (clone)")(e));
            }
        };
        forward_to(pid);
        set_mask(&mask);
        drop(report_write);
        // The program has started (or setting it up failed): if it has not ended already.
        *mounts = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok();
        return wait_program(spec, cgroup, pid, report_read);
    }
    let cloned = (|| {
        let go = sys::pipe().map_err(RuntimeError::setup("creating a pipe"))?;
        let born_inside = match &v2_dir {
            // SAFETY: berth's container entry points run single-threaded (see the crate docs).
            Some(dir) => unsafe { sys::clone_into(flags, dir.as_fd()) }
                .map_err(RuntimeError::setup("creating the namespaces (clone3)"))?,
            None => None,
        };
        let pid = match born_inside {
            Some(pid) => pid,
            // SAFETY: as above.
            None => unsafe { sys::clone(flags) }
                .map_err(RuntimeError::setup("creating the namespaces (clone)"))?,
        };
        Ok::<_, RuntimeError>((pid, born_inside, go))
    })();
    let (pid, born_inside, (go_read, go_write)) = match cloned {
        Ok(cloned) => cloned,
        Err(e) => {
            set_mask(&mask);
            return Err(e);
        }
    };
    if pid == 0 {
        drop(go_write);
        drop(report_read);
        container::child(
            spec,
            image,
            &tasks,
            &mask,
            Some(go_read),
            &report_write,
            remap,
        );
    }
    // Moved by this process: on v2, where the kernel could not have it born inside.
    let move_in = v2_dir.is_some() && born_inside.is_none();
    drop((tasks, v2_dir));
    forward_to(pid);
    set_mask(&mask);
    drop(go_read);
    drop(report_write);
    // Before the go-ahead: the child cannot have exited yet. Only a speed-up: without it,
    // the namespace goes with the child.
    *mounts = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok();

    let released = (|| {
        if spec.rootless {
            write_maps(pid, spec)?;
        }
        if let Some(c) = cgroup.filter(|_| move_in) {
            c.add_pid(pid)?;
        }
        // SAFETY: writes one byte from a live buffer to our end of the pipe.
        if unsafe { libc::write(go_write.as_raw_fd(), b"g".as_ptr().cast(), 1) } != 1 {
            return Err(RuntimeError::setup("starting the container")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    })();
    drop(go_write);
    if let Err(e) = released {
        // The child sees the pipe close without a byte and exits.
        let _ = sys::wait(pid);
        return Err(e);
    }

    wait_program(spec, cgroup, pid, report_read)
}

/// Arms the time limit, learns whether the program started (the report pipe closes at its
/// exec; anything written to it is a failure), and waits for the container to end.
fn wait_program(
    spec: &ContainerSpec,
    cgroup: Option<&Cgroup>,
    pid: libc::pid_t,
    report_read: OwnedFd,
) -> Result<libc::c_int, RuntimeError> {
    // Kept open while the time limit runs: the alarm handler reads it.
    let freezer = spec
        .time_limit
        .and(cgroup.and_then(|c| c.freezer_state()))
        .and_then(|path| std::fs::File::open(path).ok());
    if let Some(t) = spec.time_limit {
        arm_time_limit(t, freezer.as_ref());
    }
    // The report pipe closes on a successful exec; anything written to it is a failure.
    let mut report = Vec::new();
    let _ = std::fs::File::from(report_read).read_to_end(&mut report);
    // The limit's SIGTERM reaches the steps' tasks too, as Slurm's does every step's (their
    // grace is the program's: see the runner's end of a job's steps).
    let term_steps = || {
        if let (Some(cgroup), true) = (cgroup, TERM_DUE.swap(false, Ordering::SeqCst)) {
            let sig = LIMIT_SIGNAL.load(Ordering::SeqCst);
            signal_processes(cgroup.pids(), pid, sig, WarnTo::OthersInCgroup);
        }
    };
    let status = loop {
        // The alarm handler interrupts the wait (it is installed without SA_RESTART) when a
        // warning is due that it cannot send itself.
        match sys::wait_once(pid).map_err(RuntimeError::setup("waiting for the container"))? {
            Some(status) => break status,
            None => {
                if let (Some(w), true) = (
                    spec.time_limit.and_then(|t| t.warning),
                    WARN_DUE.swap(false, Ordering::SeqCst),
                ) {
                    warn_cgroup(cgroup, pid, w);
                }
                term_steps();
            }
        }
    };
    LIMIT_ARMED.store(false, Ordering::SeqCst);
    // SAFETY: cancels any pending alarm; no arguments to check.
    unsafe { libc::alarm(0) };
    // (The program may have ended at the limit's SIGTERM before this thread saw it due.)
    term_steps();
    FREEZER_FD.store(-1, Ordering::SeqCst);
    drop(freezer);
    CHILD.store(0, Ordering::SeqCst);
    if let Some((&code, message)) = report.split_first() {
        return Err(RuntimeError::Container {
            code: code as i32,
            message: String::from_utf8_lossy(message).into_owned(),
        });
    }
    Ok(status)
}

/// 0: running; 1: the limit's signal sent at the time limit; 2: SIGKILL sent after the
/// grace period.
static TIMEOUT_STAGE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
/// The signal sent at the time limit ([`crate::TimeLimit::signal`]).
static LIMIT_SIGNAL: AtomicI32 = AtomicI32::new(libc::SIGTERM);
/// When it was sent, seconds since the epoch.
static LIMIT_REACHED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
static GRACE_SECS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// Seconds of the time limit still to run, counted down once a second while the cgroup is
/// not frozen: time spent suspended (`berth suspend`) does not count, as in Slurm.
static REMAINING_SECS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// The cgroup's freezer state file, open; -1: no freezer.
static FREEZER_FD: AtomicI32 = AtomicI32::new(-1);
/// Whether the alarm ticks once a second (a freezer or a warning to count toward); if not,
/// one alarm covers the whole limit.
static TICKING: AtomicBool = AtomicBool::new(false);
/// The limit in seconds, and the warning's signal (0: none, or sent) and when it is due, in
/// seconds of the limit run: see [`crate::spec::Warning`].
static LIMIT_SECS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static WARN_SIGNAL: AtomicI32 = AtomicI32::new(0);
static WARN_AFTER_SECS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// The warning goes to the program alone, which the handler does itself; otherwise it sets
/// [`WARN_DUE`] for the waiting thread, which looks through the cgroup.
static WARN_PROGRAM_ONLY: AtomicBool = AtomicBool::new(false);
static WARN_DUE: AtomicBool = AtomicBool::new(false);
/// The time limit's signal went to the program: the waiting thread sends it to the rest of
/// the cgroup (a job's steps).
static TERM_DUE: AtomicBool = AtomicBool::new(false);

/// Whether the cgroup is frozen now (pread(2) is async-signal-safe).
fn frozen_now() -> bool {
    let fd = FREEZER_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 16];
    // SAFETY: pread into a live stack buffer of its length.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    n > 0 && cgroup::frozen(&buf[..n as usize])
}

extern "C" fn on_alarm(_: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid <= 0 {
        return;
    }
    if TIMEOUT_STAGE.load(Ordering::SeqCst) == 0 && TICKING.load(Ordering::SeqCst) {
        // The one-second tick: suspended seconds do not count.
        let frozen = frozen_now();
        let mut left = REMAINING_SECS.load(Ordering::SeqCst);
        if !frozen {
            left = left.saturating_sub(1);
            REMAINING_SECS.store(left, Ordering::SeqCst);
            let run = LIMIT_SECS.load(Ordering::SeqCst) - left;
            let warning = WARN_SIGNAL.load(Ordering::SeqCst);
            if warning != 0 && run >= WARN_AFTER_SECS.load(Ordering::SeqCst) {
                WARN_SIGNAL.store(0, Ordering::SeqCst);
                if WARN_PROGRAM_ONLY.load(Ordering::SeqCst) {
                    // SAFETY: kill(2) is async-signal-safe.
                    unsafe { libc::kill(pid, warning) };
                } else {
                    WARN_DUE.store(true, Ordering::SeqCst);
                }
            }
        }
        if frozen || left > 0 {
            // SAFETY: alarm(2) is async-signal-safe.
            unsafe { libc::alarm(1) };
            return;
        }
    }
    let (sig, next) = match TIMEOUT_STAGE.load(Ordering::SeqCst) {
        0 => (LIMIT_SIGNAL.load(Ordering::SeqCst), 1),
        _ => (libc::SIGKILL, 2),
    };
    TIMEOUT_STAGE.store(next, Ordering::SeqCst);
    // SAFETY: kill(2) and alarm(2) are async-signal-safe. The whole process group first; the
    // process alone if it has not made its group yet.
    unsafe {
        if libc::kill(-pid, sig) != 0 {
            libc::kill(pid, sig);
        }
        if next == 1 {
            // (time(2) is async-signal-safe.)
            LIMIT_REACHED.store(libc::time(std::ptr::null_mut()), Ordering::SeqCst);
            TERM_DUE.store(true, Ordering::SeqCst);
            libc::alarm(GRACE_SECS.load(Ordering::SeqCst).max(1));
        }
    }
}

/// Arms the time limit. With the cgroup's `freezer` state open, it ticks once a second and
/// skips the seconds the cgroup is frozen; without, one alarm covers the whole limit. A new
/// limit already in the file [`follow_limit_file`] named counts instead of `t`'s.
fn arm_time_limit(t: crate::TimeLimit, freezer: Option<&std::fs::File>) {
    TIMEOUT_STAGE.store(0, Ordering::SeqCst);
    LIMIT_SIGNAL.store(t.signal, Ordering::SeqCst);
    GRACE_SECS.store(
        t.grace.as_secs().min(u32::MAX as u64) as u32,
        Ordering::SeqCst,
    );
    let secs = t.limit.as_secs_f64().ceil().max(1.0) as u32;
    REMAINING_SECS.store(secs, Ordering::SeqCst);
    LIMIT_SECS.store(secs, Ordering::SeqCst);
    FREEZER_FD.store(freezer.map_or(-1, |f| f.as_raw_fd()), Ordering::SeqCst);
    let ticking = freezer.is_some() || t.warning.is_some();
    TICKING.store(ticking, Ordering::SeqCst);
    WARN_DUE.store(false, Ordering::SeqCst);
    TERM_DUE.store(false, Ordering::SeqCst);
    if let Some(w) = t.warning {
        let after = w.after.as_secs().min(u64::from(u32::MAX)) as u32;
        WARN_AFTER_SECS.store(after, Ordering::SeqCst);
        WARN_PROGRAM_ONLY.store(w.to == WarnTo::Program, Ordering::SeqCst);
    }
    WARN_SIGNAL.store(t.warning.map_or(0, |w| w.signal), Ordering::SeqCst);
    // SAFETY: installs a handler that only makes async-signal-safe calls, with the limit's
    // update signal blocked while it runs (the two change the same counters). No
    // SA_RESTART: waitpid(2) returns at each tick, so that the waiting thread sends a
    // warning the handler leaves to it (wait_program waits again).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_alarm as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaddset(&mut action.sa_mask, limit_signal());
        libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
        libc::alarm(if ticking { 1 } else { secs });
    }
    LIMIT_ARMED.store(true, Ordering::SeqCst);
    if !LIMIT_PENDING.swap(false, Ordering::SeqCst) {
        return;
    }
    // An update came before the limit was armed: its file holds it. Read as the handler
    // would, with SIGALRM and the update signal blocked meanwhile.
    // SAFETY: pthread_sigmask on sets we own; the handler's code runs as a plain call.
    unsafe {
        let mut alarm: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut alarm);
        libc::sigaddset(&mut alarm, libc::SIGALRM);
        libc::sigaddset(&mut alarm, limit_signal());
        libc::pthread_sigmask(libc::SIG_BLOCK, &alarm, &mut before);
        on_limit_update(0);
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
    }
}

/// The signal that tells a process running a container with a time limit that its limit
/// changed: it reads the new one (seconds, in decimal, counted from the program's start
/// as the first was) from the file [`follow_limit_file`] named. Not one of [`FORWARDED`].
pub fn limit_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

/// The file of the new limit, as a C string of [`follow_limit_file`]'s; null until then.
static LIMIT_FILE: std::sync::atomic::AtomicPtr<libc::c_char> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
/// Whether a limit runs that an update may change.
static LIMIT_ARMED: AtomicBool = AtomicBool::new(false);
/// An update came before the limit was armed (arming reads its file then).
static LIMIT_PENDING: AtomicBool = AtomicBool::new(false);

/// Installs the handler of [`limit_signal`] in this process (and the processes it forks),
/// so that the signal is never this process's end, even before a container with a limit
/// runs. With SA_RESTART: it may come at any time, and nothing it interrupts need know.
pub fn catch_limit_updates() {
    // SAFETY: installs a handler that only makes async-signal-safe calls, SIGALRM blocked
    // while it runs.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_limit_update as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaddset(&mut action.sa_mask, libc::SIGALRM);
        libc::sigaction(limit_signal(), &action, std::ptr::null_mut());
    }
}

/// Names the file a new time limit comes in (see [`limit_signal`]) for the container this
/// process runs next.
pub fn follow_limit_file(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let old = LIMIT_FILE.swap(c.into_raw(), Ordering::SeqCst);
    if !old.is_null() {
        // SAFETY: `old` came from CString::into_raw above; the handler is not running
        // (only a container's run arms it, and none runs while the file is named).
        drop(unsafe { std::ffi::CString::from_raw(old) });
    }
}

extern "C" fn on_limit_update(_: libc::c_int) {
    let path = LIMIT_FILE.load(Ordering::SeqCst);
    if path.is_null() || !LIMIT_ARMED.load(Ordering::SeqCst) || CHILD.load(Ordering::SeqCst) <= 0 {
        LIMIT_PENDING.store(true, Ordering::SeqCst);
        return;
    }
    let mut buf = [0u8; 24];
    // SAFETY: open(2), read(2) and close(2) are async-signal-safe; the path is a live C
    // string and the buffer ours.
    let n = unsafe {
        let fd = libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return;
    }
    if let Some(secs) = parse_seconds(&buf[..n as usize]) {
        set_limit(secs);
    }
}

/// Decimal seconds, surrounding blanks allowed; `None` if anything else is there.
fn parse_seconds(text: &[u8]) -> Option<u32> {
    let digits = text.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().fold(0u64, |v, d| {
        v.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some(value.min(u64::from(u32::MAX)) as u32)
}

/// Makes `secs` the time limit of the running program, counted from its start as the first
/// was: what has run counts against it (an end already past comes at the next second). A
/// warning keeps its distance to the end. Async-signal-safe; called with SIGALRM blocked.
fn set_limit(secs: u32) {
    if TIMEOUT_STAGE.load(Ordering::SeqCst) != 0 {
        return;
    }
    let ticking = TICKING.load(Ordering::SeqCst);
    let old = LIMIT_SECS.load(Ordering::SeqCst);
    let left_before = match ticking {
        true => REMAINING_SECS.load(Ordering::SeqCst),
        // SAFETY: alarm(2) is async-signal-safe; it returns the seconds that were left.
        false => unsafe { libc::alarm(0) },
    };
    let run = old.saturating_sub(left_before);
    let left = secs.saturating_sub(run);
    LIMIT_SECS.store(secs, Ordering::SeqCst);
    REMAINING_SECS.store(left, Ordering::SeqCst);
    let after =
        i64::from(WARN_AFTER_SECS.load(Ordering::SeqCst)) + i64::from(secs) - i64::from(old);
    WARN_AFTER_SECS.store(after.clamp(0, i64::from(u32::MAX)) as u32, Ordering::SeqCst);
    if !ticking {
        // SAFETY: alarm(2) is async-signal-safe. An end already past: in a second.
        unsafe { libc::alarm(left.max(1)) };
    }
}

/// Sends a warning to the processes in the container's cgroup it is for: all of them, or
/// those outside the program's process group. Processes running berth's own executable (a
/// job step's leader, which leaves signals to its tasks) are skipped.
fn warn_cgroup(cgroup: Option<&Cgroup>, program: libc::pid_t, w: crate::spec::Warning) {
    if let Some(cgroup) = cgroup {
        signal_processes(cgroup.pids(), program, w.signal, w.to);
    }
}

/// Sends `signal` to those of a container's processes `pids` (its cgroup's) that `to`
/// names: all of them, or those outside the process group of its program (whose pid is
/// `program`: its steps). Processes running berth's own executable (a job step's leader,
/// which leaves signals to its tasks; the holder of a job's container on a node other than
/// its script's), here or in a container, are skipped. [`WarnTo::Program`] is the caller's.
pub fn signal_processes(
    pids: impl IntoIterator<Item = libc::pid_t>,
    program: libc::pid_t,
    signal: libc::c_int,
    to: WarnTo,
) {
    use std::os::unix::fs::MetadataExt;
    let file = |path: &str| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let ours = file("/proc/self/exe");
    for pid in pids {
        // SAFETY: getpgid(2) only reads; a process that is gone gives -1.
        if to == WarnTo::OthersInCgroup && unsafe { libc::getpgid(pid) } == program {
            continue;
        }
        if ours.is_some() && file(&format!("/proc/{pid}/exe")) == ours || berth_in_container(pid) {
            continue;
        }
        // SAFETY: kill(2) on a process of the container's cgroup.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Whether process `pid` is berth in a job's container: the host's berth run by the host's
/// loader bound in at /.berth/lib (see berth-agent's runner), whose executable is that
/// loader's.
fn berth_in_container(pid: libc::pid_t) -> bool {
    let loader = std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.starts_with(BERTH_LOADERS));
    loader
        && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            c.split(|b| *b == 0)
                .any(|arg| arg == BERTH_IN_CONTAINER.as_bytes())
        })
}

/// Where a job's container has the host's loaders and libraries that berth runs with (the
/// runner of berth-agent binds them there, one directory each: `/.berth/lib/0`, ...).
pub const BERTH_LOADERS: &str = "/.berth/lib";
/// Where a job's container has berth's executable.
pub const BERTH_IN_CONTAINER: &str = "/.berth/libexec/berth";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_limit_is_whole_seconds_in_decimal() {
        assert_eq!(parse_seconds(b"120\n"), Some(120));
        assert_eq!(parse_seconds(b" 7 "), Some(7));
        assert_eq!(parse_seconds(b"99999999999999"), Some(u32::MAX));
        for bad in [&b""[..], b"\n", b"-5", b"1.5", b"12x"] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
    }
}
