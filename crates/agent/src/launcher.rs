//! The node's runner launcher: a small single-threaded `berth internal launcher` process
//! the agent starts once, which forks a job's runner on request, so that a job costs a fork
//! of an initialised berth instead of an exec (loading, relocating and starting an 80 MB
//! executable: over a millisecond of CPU each). The agent itself is multi-threaded and must
//! never fork without exec (DESIGN.md); the launcher is single-threaded, so it may.
//!
//! Job steps' processes (`berth internal step`, see `step`) are forked the same way.
//!
//! Protocol over the launcher's stdin (a socket): the agent sends a line with a launch file's
//! path (a runner), or `step <length>` followed by that many bytes of a step's launch (JSON),
//! with the client's stdin, stdout and stderr attached to the line's first byte (SCM_RIGHTS).
//! The launcher answers `S <pid> <start time>` (forked; the start time from /proc/PID/stat,
//! which tells the process from a later one with its pid; a runner is recorded so beside its
//! launch file before it takes the job, see `runner::record_runner`) or `F <error>`, and,
//! whenever one of the processes it forked ends, `E <pid> <wait status>`. A step's process
//! writes `U <pid> <user usec> <system usec> <max RSS bytes>` on that socket just before it
//! exits, what its tasks used (so it comes before its `E`). A runner says `R <pid>` on the
//! launcher's stdout, a socket of the agent's, once its job's result is written, before it
//! removes the job's cgroup and exits: the agent takes that for the runner's end, so that
//! the job's CPUs go to the next job a little sooner. At end of input (the agent is gone)
//! the launcher exits: its runners go on, as exec'd runners do without their agent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

/// A process forked by the launcher: its pid and its start time (clock ticks after boot, as
/// /proc/PID/stat has it), which together tell it from a later process with its pid.
#[derive(Debug)]
pub struct Forked {
    pub pid: u32,
    pub start: u64,
    /// Where its end comes: `Some`, or `None` if the launcher went away first.
    end: Receiver<Option<Ended>>,
}

/// How a process the launcher forked ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    /// Its wait status (0 for a runner that reported its job's result).
    pub status: i32,
    /// What a step's tasks used, as its process said before it exited.
    pub usage: Option<berth_api::StepUsage>,
}

impl Forked {
    /// Blocks until the process has ended (or, a runner, reported its job's result: then
    /// status 0); how, or `None` if its launcher went away first (its end is then seen in
    /// /proc only, by pid and start time).
    pub fn wait(self) -> Option<Ended> {
        if let Ok(Some(ended)) = self.end.recv() {
            return Some(ended);
        }
        while start_time(self.pid) == Some(self.start) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }
}

/// The agent's side: starts the launcher when first needed, and again if it died. The
/// launcher ends with the agent's process: its socket's other end closes then.
pub struct Launcher {
    berth: PathBuf,
    launcher: Mutex<Option<Running>>,
}

struct Running {
    process: std::process::Child,
    requests: UnixStream,
    answers: Receiver<Result<Forked, String>>,
}

impl Launcher {
    pub fn new(berth: PathBuf) -> Launcher {
        Launcher {
            berth,
            launcher: Mutex::new(None),
        }
    }

    /// The berth executable the launcher runs (and the agent runs its processes with where
    /// the launcher cannot).
    pub fn berth(&self) -> &Path {
        &self.berth
    }

    /// Forks a runner of the launch file `launch`. An error means no runner was started
    /// (the caller may start one itself).
    pub fn fork(&self, launch: &Path) -> Result<Forked, String> {
        let path = launch
            .to_str()
            .filter(|p| !p.contains('\n') && !p.starts_with("step "))
            .ok_or_else(|| format!("{}: not a path the launcher takes", launch.display()))?;
        self.request(format!("{path}\n").as_bytes(), &[])
    }

    /// Forks a job step's process (`berth internal step` without the exec) for `launch`,
    /// with `stdio` as its stdin, stdout and stderr. It leads a session and process group of
    /// its own by the time this returns. An error means it was not started.
    pub fn fork_step(
        &self,
        launch: &crate::step::StepLaunch,
        stdio: [std::os::fd::RawFd; 3],
    ) -> Result<Forked, String> {
        let json = serde_json::to_vec(launch).expect("launches serialise");
        let mut request = format!("step {}\n", json.len()).into_bytes();
        request.extend_from_slice(&json);
        self.request(&request, &stdio)
    }

    /// Sends one request (with `fds` on its first byte) and waits for its answer.
    fn request(&self, request: &[u8], fds: &[std::os::fd::RawFd]) -> Result<Forked, String> {
        let mut launcher = self.launcher.lock().expect("not poisoned");
        // Once more with a new launcher, if the one there was has died.
        for _ in 0..2 {
            if launcher.is_none() {
                *launcher = Some(self.start()?);
            }
            let running = launcher.as_mut().expect("just started");
            let sent = match fds {
                [] => running.requests.write_all(request),
                fds => crate::step::wire::send_with_fds(&running.requests, request, fds),
            };
            if sent.is_ok() {
                if let Ok(answer) = running.answers.recv() {
                    return answer;
                }
            }
            let mut dead = launcher.take().expect("there");
            let _ = dead.process.kill();
            let _ = dead.process.wait();
        }
        Err("the runner launcher keeps dying".into())
    }

    fn start(&self) -> Result<Running, String> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| e.to_string())?;
        // The runners' reports come on a socket of their own, the launcher's stdout: the
        // runners' copies of it must not keep the launcher's socket open once it is gone.
        let (reports, report) = UnixStream::pair().map_err(|e| e.to_string())?;
        let process = std::process::Command::new(&self.berth)
            .args(["internal", "launcher"])
            .stdin(OwnedFd::from(theirs))
            .stdout(OwnedFd::from(report))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.berth.display()))?;
        let reader = ours.try_clone().map_err(|e| e.to_string())?;
        let (to_fork, answers) = channel();
        let waiters = Waiters::default();
        let reported = waiters.clone();
        std::thread::spawn(move || read_answers(reader, to_fork, waiters));
        std::thread::spawn(move || read_reports(reports, reported));
        Ok(Running {
            process,
            requests: ours,
            answers,
        })
    }
}

/// Who waits for the end of each process a launcher forked, by pid: fed by the launcher's
/// answers and by the runners' reports.
#[derive(Clone, Default)]
struct Waiters(std::sync::Arc<Mutex<WaitersInner>>);

#[derive(Default)]
struct WaitersInner {
    waiting: BTreeMap<u32, Sender<Option<Ended>>>,
    /// What steps' processes said their tasks used, until they end.
    usage: BTreeMap<u32, berth_api::StepUsage>,
}

impl Waiters {
    /// Where the end of `pid` will come.
    fn add(&self, pid: u32) -> Receiver<Option<Ended>> {
        let (tx, end) = channel();
        self.0.lock().expect("not poisoned").waiting.insert(pid, tx);
        end
    }

    /// Step process `pid` is about to end, its tasks having used `usage`: kept for its end,
    /// which comes after it (the process may say it before the launcher's `S` for it is read:
    /// a quick step can end before the launcher, descheduled, answers its request).
    fn used(&self, pid: u32, usage: berth_api::StepUsage) {
        self.0
            .lock()
            .expect("not poisoned")
            .usage
            .insert(pid, usage);
    }

    /// `pid` ended with wait status `status`; nothing if nobody waits for it (any more).
    fn end(&self, pid: u32, status: i32) {
        let mut inner = self.0.lock().expect("not poisoned");
        let usage = inner.usage.remove(&pid);
        if let Some(waiter) = inner.waiting.remove(&pid) {
            let _ = waiter.send(Some(Ended { status, usage }));
        }
    }

    /// The launcher is gone: no end will come its way.
    fn end_all(&self) {
        let gone = std::mem::take(&mut *self.0.lock().expect("not poisoned"));
        for (_, waiter) in gone.waiting {
            let _ = waiter.send(None);
        }
    }
}

/// The agent's reader of the launcher's answers: forks to the waiting [`Launcher::fork`],
/// ends to each runner's waiter (registered here, before the fork's answer goes out, so that
/// no end can come before its waiter).
fn read_answers(socket: UnixStream, to_fork: Sender<Result<Forked, String>>, waiters: Waiters) {
    for line in BufReader::new(socket).lines() {
        let Ok(line) = line else { break };
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("S"), Some(pid), Some(start)) => {
                let (Ok(pid), Ok(start)) = (pid.parse(), start.parse()) else {
                    break;
                };
                let end = waiters.add(pid);
                let _ = to_fork.send(Ok(Forked { pid, start, end }));
            }
            (Some("F"), _, _) => {
                let _ = to_fork.send(Err(line[2..].to_string()));
            }
            (Some("E"), Some(pid), Some(status)) => {
                let (Ok(pid), Ok(status)) = (pid.parse::<u32>(), status.parse::<i32>()) else {
                    break;
                };
                waiters.end(pid, status);
            }
            (Some("U"), Some(pid), Some(usage)) => {
                // (The OOM kills, the fourth, since 2026-12-06.)
                let numbers: Result<Vec<u64>, _> = usage.split(' ').map(str::parse).collect();
                let usage = match numbers.as_deref() {
                    Ok(&[user_usec, system_usec, max_rss_bytes, ref oom @ ..]) if oom.len() < 2 => {
                        Some(berth_api::StepUsage {
                            user_usec,
                            system_usec,
                            max_rss_bytes,
                            oom_kills: oom.first().copied().unwrap_or(0),
                        })
                    }
                    _ => None,
                };
                if let (Ok(pid), Some(usage)) = (pid.parse::<u32>(), usage) {
                    waiters.used(pid, usage);
                }
            }
            _ => break,
        }
    }
    // The launcher is gone: its runners' ends will not come this way.
    waiters.end_all();
}

/// The agent's reader of the runners' reports, `R <pid>` once a runner has written its job's
/// result: as good as its exit 0 (which follows once it has cleaned up, and finds no waiter
/// then). Ends when the launcher and all its runners are gone.
fn read_reports(socket: UnixStream, waiters: Waiters) {
    for line in BufReader::new(socket).lines() {
        let Ok(line) = line else { break };
        if let Some(Ok(pid)) = line.strip_prefix("R ").map(str::parse::<u32>) {
            waiters.end(pid, 0);
        }
    }
}

/// The start time of process `pid` (field 22 of /proc/PID/stat), if it exists and has not
/// ended (a zombie waiting for its parent's wait has ended).
pub fn start_time(pid: u32) -> Option<u64> {
    proc_stat(
        pid,
        |state, field| if state == "Z" { None } else { field(22) },
    )
}

/// What `read` makes of process `pid`'s /proc/PID/stat, given its state (field 3) and its
/// numeric fields by their numbers in proc(5) (`None` for one that is not a number).
pub(crate) fn proc_stat<T>(
    pid: u32,
    read: impl FnOnce(&str, &dyn Fn(usize) -> Option<u64>) -> Option<T>,
) -> Option<T> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')';
    // the first field after it is the third (the state).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    read(fields.first()?, &|n: usize| {
        fields.get(n.checked_sub(3)?)?.parse().ok()
    })
}

/// `berth internal launcher`: serves the agent on stdin until it closes. Must be called in a
/// single-threaded process.
pub fn serve() -> i32 {
    // The runners it forks must outlive a change of their job's time limit at any moment.
    berth_runtime::catch_limit_updates();
    // SAFETY: the agent gave us stdin; owned here for the process's life.
    let socket = unsafe { UnixStream::from_raw_fd(0) };
    match serve_on(&socket) {
        Ok(()) => 0,
        Err(e) => {
            berth_core::say!("berth: the runner launcher: {e}");
            1
        }
    }
}

fn serve_on(socket: &UnixStream) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SIGCHLD through a signalfd, blocked otherwise: an end is never missed between polls.
    // SAFETY: a zeroed sigset_t is valid input to sigemptyset, which initialises it.
    let mut chld: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset pointers; no old mask is asked for.
    check(unsafe { libc::sigemptyset(&mut chld) })?;
    // SAFETY: as above.
    check(unsafe { libc::sigaddset(&mut chld, libc::SIGCHLD) })?;
    // SAFETY: as above.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut()) })?;
    // SAFETY: creates a new descriptor, owned right away.
    let signals = unsafe {
        OwnedFd::from_raw_fd(check(libc::signalfd(
            -1,
            &chld,
            libc::SFD_CLOEXEC | libc::SFD_NONBLOCK,
        ))?)
    };
    // What every runner would otherwise do again, done once for all of them: glibc loads
    // the NSS modules nsswitch.conf names (libnss_systemd and what it links) at the first
    // user lookup; the cgroup layout, berth's own libraries and the host's squashfs tools
    // are found once per process.
    let _ = berth_runtime::Identity::lookup("root", true);
    let _ = berth_runtime::cgroup::Layout::detect();
    let _ = crate::runner::own_libraries();
    let _ = crate::runner::squashfs_tools();
    let mut answers = socket.try_clone()?;
    let inherited = Inherited {
        chld,
        own: [signals.as_raw_fd(), answers.as_raw_fd()],
    };
    // What has come of the requests and not been served yet, and the descriptors that came
    // with it. The agent sends a request only once the one before is answered, so these
    // hold at most one request, and its descriptors.
    let (mut pending, mut fds) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 64 * 1024];
    // The next job's runner, forked ahead of its request (see `Spare`).
    let mut spare: Option<Spare> = None;
    loop {
        let [request_ready, ended] = readable([socket.as_raw_fd(), signals.as_raw_fd()])?;
        if ended {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            // SAFETY: reads into a buffer we own, of its size (drains the queued signals).
            while unsafe { libc::read(signals.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) }
                > 0
            {}
            let mut ends = String::new();
            loop {
                let mut status = 0;
                // SAFETY: waitpid with a valid status pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if spare.as_ref().is_some_and(|s| s.pid == pid) {
                    spare = None;
                }
                ends.push_str(&format!("E {pid} {status}\n"));
            }
            answers.write_all(ends.as_bytes())?;
        }
        if !request_ready {
            continue;
        }
        let n = crate::step::wire::recv_with_fds(socket, &mut buf, &mut fds)?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending.drain(..=end);
            let stdio = std::mem::take(&mut fds);
            let (forked, runner) = match line.strip_prefix("step ") {
                Some(length) => (
                    fork_step(socket, &mut pending, length, stdio, &inherited, &spare)
                        .map(|pid| (pid, start_time(pid as u32).unwrap_or(0))),
                    false,
                ),
                None => {
                    drop(stdio);
                    (run_spare(&mut spare, &line, &inherited), true)
                }
            };
            let answer = match forked {
                Ok((pid, start)) => format!("S {pid} {start}\n"),
                Err(e) => format!("F {}\n", e.replace('\n', " ")),
            };
            answers.write_all(answer.as_bytes())?;
            if runner && spare.is_none() {
                // The runner just released goes first, on this CPU if it was woken here.
                // SAFETY: sched_yield(2) has no arguments.
                unsafe { libc::sched_yield() };
                spare = Spare::fork(&inherited).ok();
            }
        }
    }
}

/// What a child of the launcher sheds of it: the SIGCHLD the launcher blocks (its children
/// get the empty mask an exec'd process has: a container's end is its runner's own SIGCHLD)
/// and the launcher's own descriptors (its signalfd and its copy of the agent's socket).
struct Inherited {
    chld: libc::sigset_t,
    own: [std::os::fd::RawFd; 2],
}

impl Inherited {
    /// In a child just forked.
    fn shed(&self) {
        // SAFETY: unblocks a signal in this (single-threaded) child, and closes descriptors
        // it never uses; the launcher's objects that own them are never dropped here (the
        // child ends with process::exit).
        unsafe {
            libc::sigprocmask(libc::SIG_UNBLOCK, &self.chld, std::ptr::null_mut());
            for fd in self.own {
                libc::close(fd);
            }
        }
    }
}

/// A runner forked ahead of its job: it waits for its launch file's path on a pipe, so that
/// the fork (and the wake of a new process) is not between a job's request and its start.
/// It has given up the launcher's descriptors and signal mask already; it reports its job's
/// end on its own copy of the launcher's stdout, the agent's report socket (close-on-exec:
/// the job's processes never have it). The launcher's end (its exit included) closes the
/// pipe (which a step's process, forked meanwhile, does not keep): a spare that gets no
/// path exits.
struct Spare {
    pid: libc::pid_t,
    start: u64,
    go: std::fs::File,
}

impl Spare {
    fn fork(inherited: &Inherited) -> Result<Spare, String> {
        let (wait, go) = crate::step::pipe(0).map_err(|e| e.to_string())?;
        // SAFETY: this process is single-threaded; the child only runs the runner and exits.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error().to_string()),
            0 => {
                drop(go);
                // SAFETY: duplicates this process's stdout; the copy is owned right away.
                let report = match unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) } {
                    -1 => None,
                    // SAFETY: a new descriptor of our own.
                    fd => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
                };
                inherited.shed();
                let code = spare_runner(wait, report);
                // Nothing is left to flush or release: _exit skips the C library's exit
                // handlers and destructors, code this process would otherwise fault in (its
                // text is the launcher's, mapped afresh in each fork) only to run it once.
                // SAFETY: ends this process; everything it wrote has been written.
                unsafe { libc::_exit(code) }
            }
            pid => Ok(Spare {
                pid,
                start: start_time(pid as u32).unwrap_or(0),
                go: go.into(),
            }),
        }
    }
}

/// Hands the launch file `launch` to the spare runner (forked now if there is none, or if
/// the one there was cannot take it): its pid and start time.
fn run_spare(
    spare: &mut Option<Spare>,
    launch: &str,
    inherited: &Inherited,
) -> Result<(libc::pid_t, u64), String> {
    for _ in 0..2 {
        let mut runner = match spare.take() {
            Some(s) => s,
            None => Spare::fork(inherited)?,
        };
        // Recorded before it has its job: whenever the agent dies, a runner that runs is
        // found again (it goes on without the agent), and a job without one never ran.
        let recorded =
            crate::runner::record_runner(Path::new(launch), runner.pid as u32, Some(runner.start));
        if let Err(e) = recorded {
            *spare = Some(runner);
            return Err(format!(
                "cannot record the job's runner beside {launch}: {e}"
            ));
        }
        // A line (a path the agent sends has no newline), then the pipe closes. A spare that
        // died meanwhile (EPIPE) is reaped as any child is.
        if runner
            .go
            .write_all(format!("{launch}\n").as_bytes())
            .is_ok()
        {
            return Ok((runner.pid, runner.start));
        }
    }
    Err("the runners forked for the job died before they could take it".into())
}

/// Forks a step's process: reads its launch (`length` bytes after the request line, the first
/// of them perhaps already in `pending`), forks,
/// and returns once the child leads a session of its own (so that the agent's kill(2) of its
/// process group reaches it from the start), with `stdio` as its stdin, stdout and stderr.
fn fork_step(
    socket: &UnixStream,
    pending: &mut Vec<u8>,
    length: &str,
    stdio: Vec<OwnedFd>,
    inherited: &Inherited,
    spare: &Option<Spare>,
) -> Result<libc::pid_t, String> {
    let length: usize = length
        .parse()
        .map_err(|_| format!("bad step request: length {length}"))?;
    // What came with the request line, then the rest from the socket.
    let mut launch: Vec<u8> = pending.drain(..length.min(pending.len())).collect();
    let have = launch.len();
    launch.resize(length, 0);
    std::io::Read::read_exact(&mut &*socket, &mut launch[have..]).map_err(|e| e.to_string())?;
    let stdio: [OwnedFd; 3] = stdio
        .try_into()
        .map_err(|_| "bad step request: it must carry stdin, stdout and stderr".to_string())?;
    let (ready, led) = crate::step::pipe(0).map_err(|e| e.to_string())?;
    // The child starts with the step's end signal blocked, until it catches it.
    crate::step::block_end(true);
    // SAFETY: this process is single-threaded; the child only runs the step and exits.
    let forked = unsafe { libc::fork() };
    if forked != 0 {
        crate::step::block_end(false);
    }
    match forked {
        -1 => Err(std::io::Error::last_os_error().to_string()),
        0 => {
            // SAFETY: setsid(2) in the new child (not a group leader yet, so it cannot fail
            // but for a pid collision with a group, which the kernel rules out).
            unsafe { libc::setsid() };
            drop((ready, led));
            // Where it says what its tasks used: a copy of the agent's socket, close-on-exec
            // (its tasks never have it).
            // SAFETY: duplicates the socket's descriptor; the copy is owned right away.
            let report = match unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) }
            {
                -1 => None,
                // SAFETY: a new descriptor of our own.
                fd => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            };
            inherited.shed();
            if let Some(spare) = spare {
                // SAFETY: the launcher's end of the spare's pipe, never used here (the
                // launcher's File that owns it is never dropped in this child).
                unsafe { libc::close(spare.go.as_raw_fd()) };
            }
            for (fd, target) in stdio.iter().zip(0..) {
                // SAFETY: dup2 onto this process's standard descriptors (clearing their
                // close-on-exec flag, as an exec'd step's stdio has none).
                unsafe { libc::dup2(fd.as_raw_fd(), target) };
            }
            drop(stdio);
            std::process::exit(crate::step::run_forked(&launch, report));
        }
        pid => {
            drop(led);
            // The child's end of the pipe closes with its setsid done (or with its end).
            let mut byte = [0u8; 1];
            let _ = std::io::Read::read(&mut std::fs::File::from(ready), &mut byte);
            Ok(pid)
        }
    }
}

/// Waits until any of the descriptors is readable (or closed); which are. Retries when a
/// signal interrupts the wait.
pub(crate) fn readable<const N: usize>(fds: [std::os::fd::RawFd; N]) -> std::io::Result<[bool; N]> {
    readable_within(fds, None)
}

/// [`readable`], for at most `timeout` (`None`: no limit; after it, none is). A negative
/// descriptor is left out.
pub(crate) fn readable_within<const N: usize>(
    fds: [std::os::fd::RawFd; N],
    timeout: Option<std::time::Duration>,
) -> std::io::Result<[bool; N]> {
    let mut polled = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: poll(2) on N valid pollfd structs we own.
        if unsafe { libc::poll(polled.as_mut_ptr(), N as libc::nfds_t, ms) } >= 0 {
            return Ok(polled.map(|p| p.revents != 0));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// In a spare runner: with stdin and stdout on /dev/null (the launcher's stderr, the
/// agent's, stays), as an exec'd runner would have, waits for its launch file's path on
/// `wait`, and becomes its job's runner; exits quietly without one.
fn spare_runner(wait: OwnedFd, report: Option<OwnedFd>) -> i32 {
    let null = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(f) => f,
        Err(e) => {
            berth_core::say!("berth: /dev/null: {e}");
            return 125;
        }
    };
    // SAFETY: dup2 onto the standard descriptors of this process (the socket's 0 included:
    // a spare must not keep the launcher's end of the agent's socket open).
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
    }
    let mut launch = String::new();
    let mut wait = BufReader::new(std::fs::File::from(wait));
    if wait.read_line(&mut launch).is_err() || !launch.ends_with('\n') {
        return 0;
    }
    launch.pop();
    match crate::runner::run(Path::new(&launch), report) {
        Ok(_) => 0,
        Err(e) => {
            berth_core::say!("berth: {e}");
            125
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runners_report_ends_its_wait_and_its_exit_then_finds_no_waiter() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (reports, report) = UnixStream::pair().unwrap();
        let (to_fork, forks) = channel();
        let waiters = Waiters::default();
        let reported = waiters.clone();
        let answers = std::thread::spawn(move || read_answers(ours, to_fork, waiters));
        std::thread::spawn(move || read_reports(reports, reported));
        (&theirs)
            .write_all(b"S 4242 99\nS 4343 99\nS 4444 99\n")
            .unwrap();
        let (first, second, step) = (
            forks.recv().unwrap().unwrap(),
            forks.recv().unwrap().unwrap(),
            forks.recv().unwrap().unwrap(),
        );
        assert_eq!((first.pid, first.start, second.pid), (4242, 99, 4343));
        // Another runner's report, a report that is not one, then the first runner's.
        (&report).write_all(b"R 1\nnonsense\nR 4242\n").unwrap();
        let soon = std::time::Duration::from_secs(10);
        let ended = |status, usage| Ok(Some(Ended { status, usage }));
        assert_eq!(first.end.recv_timeout(soon), ended(0, None));
        // Its exit, with a status of its own, changes nothing; the other's exit ends its wait.
        (&theirs).write_all(b"E 4242 256\nE 4343 512\n").unwrap();
        assert_eq!(second.end.recv_timeout(soon), ended(512, None));
        // A step's process says what its tasks used before its end (and may before its
        // start is answered); a malformed line is nothing.
        (&theirs)
            .write_all(b"U 4545 1500 20 4096\nS 4545 99\nU 4444 12 x 3 4\nE 4545 0\n")
            .unwrap();
        let early = forks.recv().unwrap().unwrap();
        (&theirs)
            .write_all(b"U 4444 1500 20 4096 2\nE 4444 0\n")
            .unwrap();
        let usage = berth_api::StepUsage {
            user_usec: 1500,
            system_usec: 20,
            max_rss_bytes: 4096,
            oom_kills: 0,
        };
        // (Since 2026-12-06 with the OOM kills, a fourth number; not before.)
        let oom = berth_api::StepUsage {
            oom_kills: 2,
            ..usage
        };
        assert_eq!(step.end.recv_timeout(soon), ended(0, Some(oom)));
        assert_eq!(early.end.recv_timeout(soon), ended(0, Some(usage)));
        drop(theirs);
        answers.join().unwrap();
    }

    #[test]
    fn start_time_is_that_of_a_live_process_only() {
        let own = start_time(std::process::id()).expect("this process runs");
        assert_eq!(start_time(std::process::id()), Some(own));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Ended but not waited for yet: a zombie, which runs no more.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(start_time(pid), None);
        child.wait().unwrap();
        assert_eq!(start_time(pid), None);
    }
}
