//! The node's runner launcher: a small single-threaded `berth internal launcher` process
//! the agent starts once, which forks a job's runner on request, so that a job costs a fork
//! of an initialised berth instead of an exec (loading, relocating and starting an 80 MB
//! executable: over a millisecond of CPU each). The agent itself is multi-threaded and must
//! never fork without exec (DESIGN.md); the launcher is single-threaded, so it may.
//!
//! Protocol, one line each, over the launcher's stdin (a socket): the agent sends a launch
//! file's path; the launcher answers `S <pid> <start time>` (forked; the start time from
//! /proc/PID/stat, which tells the runner from a later process with its pid) or `F <error>`,
//! and, whenever one of its runners ends, `E <pid> <wait status>`. At end of input (the agent
//! is gone) it exits: its runners go on, as exec'd runners do without their agent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

/// A runner forked by the launcher: its pid, its start time (clock ticks after boot, as
/// /proc/PID/stat has it), and where its end comes: `Some(how it ended)`, or `None` if the
/// launcher went away first (then only its pid tells whether it still runs).
pub type Forked = (u32, u64, Receiver<Option<String>>);

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

    /// Forks a runner of the launch file `launch`. An error means no runner was started
    /// (the caller may start one itself).
    pub fn fork(&self, launch: &Path) -> Result<Forked, String> {
        let path = launch
            .to_str()
            .filter(|p| !p.contains('\n'))
            .ok_or_else(|| format!("{}: not a path the launcher takes", launch.display()))?;
        let mut launcher = self.launcher.lock().expect("not poisoned");
        // Once more with a new launcher, if the one there was has died.
        for _ in 0..2 {
            if launcher.is_none() {
                *launcher = Some(self.start()?);
            }
            let running = launcher.as_mut().expect("just started");
            if writeln!(running.requests, "{path}").is_ok() {
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
        let process = std::process::Command::new(&self.berth)
            .args(["internal", "launcher"])
            .stdin(OwnedFd::from(theirs))
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.berth.display()))?;
        let reader = ours.try_clone().map_err(|e| e.to_string())?;
        let (to_fork, answers) = channel();
        std::thread::spawn(move || read_answers(reader, to_fork));
        Ok(Running {
            process,
            requests: ours,
            answers,
        })
    }
}

/// The agent's reader of the launcher's answers: forks to the waiting [`Launcher::fork`],
/// ends to each runner's waiter (registered here, before the fork's answer goes out, so that
/// no end can come before its waiter).
fn read_answers(socket: UnixStream, to_fork: Sender<Result<Forked, String>>) {
    let mut waiters: BTreeMap<u32, Sender<Option<String>>> = BTreeMap::new();
    for line in BufReader::new(socket).lines() {
        let Ok(line) = line else { break };
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("S"), Some(pid), Some(start)) => {
                let (Ok(pid), Ok(start)) = (pid.parse(), start.parse()) else {
                    break;
                };
                let (tx, rx) = channel();
                waiters.insert(pid, tx);
                let _ = to_fork.send(Ok((pid, start, rx)));
            }
            (Some("F"), _, _) => {
                let _ = to_fork.send(Err(line[2..].to_string()));
            }
            (Some("E"), Some(pid), Some(status)) => {
                let (Ok(pid), Ok(status)) = (pid.parse::<u32>(), status.parse::<i32>()) else {
                    break;
                };
                if let Some(waiter) = waiters.remove(&pid) {
                    let status = std::process::ExitStatus::from_raw(status).to_string();
                    let _ = waiter.send(Some(status));
                }
            }
            _ => break,
        }
    }
    // The launcher is gone: its runners' ends will not come this way.
    for (_, waiter) in waiters {
        let _ = waiter.send(None);
    }
}

/// The start time of process `pid` (field 22 of /proc/PID/stat), if it exists and has not
/// ended (a zombie waiting for its parent's wait has ended).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// `berth internal launcher`: serves the agent on stdin until it closes. Must be called in a
/// single-threaded process.
pub fn serve() -> i32 {
    // SAFETY: the agent gave us stdin; owned here for the process's life.
    let socket = unsafe { UnixStream::from_raw_fd(0) };
    match serve_on(&socket) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth: the runner launcher: {e}");
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
    // user lookup, and the cgroup layout is detected once per process.
    let _ = berth_runtime::Identity::lookup("root", true);
    let _ = berth_runtime::cgroup::Layout::detect();
    let mut answers = socket.try_clone()?;
    let mut request = Vec::new();
    loop {
        let [request_ready, ended] = readable([socket.as_raw_fd(), signals.as_raw_fd()])?;
        if ended {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            // SAFETY: reads into a buffer we own, of its size (drains the queued signals).
            while unsafe { libc::read(signals.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) }
                > 0
            {}
            loop {
                let mut status = 0;
                // SAFETY: waitpid with a valid status pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                writeln!(answers, "E {pid} {status}")?;
            }
        }
        if !request_ready {
            continue;
        }
        let mut byte = [0u8; 1];
        // One byte at a time: a request is a short line, and nothing is left buffered
        // behind the poll.
        // SAFETY: reads into a one-byte buffer we own.
        match unsafe { libc::read(socket.as_raw_fd(), byte.as_mut_ptr().cast(), 1) } {
            0 => return Ok(()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            _ if byte[0] != b'\n' => {
                request.push(byte[0]);
                continue;
            }
            _ => {}
        }
        let launch = PathBuf::from(String::from_utf8_lossy(&request).into_owned());
        request.clear();
        // SAFETY: this process is single-threaded; the child only runs the runner and exits.
        match unsafe { libc::fork() } {
            -1 => writeln!(answers, "F {}", std::io::Error::last_os_error())?,
            0 => {
                // SAFETY: unblocks SIGCHLD again: the runner gets the empty mask an exec'd
                // one has (its container's end is its own SIGCHLD).
                unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &chld, std::ptr::null_mut()) };
                std::process::exit(run_forked(&launch, [signals, OwnedFd::from(answers)]));
            }
            pid => {
                let start = start_time(pid as u32).unwrap_or(0);
                writeln!(answers, "S {pid} {start}")?;
            }
        }
    }
}

/// Waits until either descriptor is readable (or closed); which are. Retries when a signal
/// interrupts the wait.
pub(crate) fn readable(fds: [std::os::fd::RawFd; 2]) -> std::io::Result<[bool; 2]> {
    let mut polled = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        // SAFETY: poll(2) on two valid pollfd structs we own.
        if unsafe { libc::poll(polled.as_mut_ptr(), 2, -1) } >= 0 {
            return Ok(polled.map(|p| p.revents != 0));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// In the forked child: becomes the job's runner, with stdin and stdout on /dev/null (the
/// launcher's stderr, the agent's, stays) and none of the launcher's descriptors, as an
/// exec'd one would have.
fn run_forked(launch: &Path, launchers: [OwnedFd; 2]) -> i32 {
    drop(launchers);
    let null = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("berth: /dev/null: {e}");
            return 125;
        }
    };
    // SAFETY: dup2 onto the standard descriptors of this process (the socket's 0 included).
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
    }
    match crate::runner::run(launch) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("berth: {e}");
            125
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
