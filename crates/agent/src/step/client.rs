//! `berth step`'s side of the step socket: send the request with this process's stdin,
//! stdout and stderr, pass on the signals it gets, and return the step's exit status. It runs
//! in the single-threaded CLI, often inside the job's container (statically linked, it needs
//! nothing from the image).

use super::wire::send_with_fds;
use super::{io_err, StepError};
use berth_api::{AllocationExit, StepEvent, StepRequest, StepSignal};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// How long a step's client in a job waits for its node agent to be back (its `berth up`
/// restarting) before it gives up.
const AGENT_GONE_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The write end of the self-pipe the signal handler writes signal numbers into.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; one byte from a local.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Runs the step and returns the worst of its tasks' exit statuses. A new allocation's
/// progress (submitted, queued, running) goes to `tell`, which says it to the user.
/// `sigint_twice`: once the step runs, a SIGINT to this process says how its tasks are
/// (srun's `interrupt (one more within 1 sec to abort)`), and only a second within a
/// second is passed on, as srun's Ctrl-C.
pub fn run(
    socket: &Path,
    request: &StepRequest,
    tell: &mut dyn FnMut(&StepEvent),
    sigint_twice: bool,
) -> Result<i32, StepError> {
    let mut answers = Answers::send(socket, request)?;
    let signals = Signals::catch(request.pty)?;
    // With a terminal, keys go to the task's terminal as they are typed (^C included), and
    // window size changes follow, once the step runs: until then ^C gives it up, as srun's.
    let mut raw = None;
    // Signalled before the step started: an error then is the step's cancelling.
    let (mut interrupted, mut started) = (false, false);
    // The step, once started: a client in a job's container asks the node's next agent for
    // it if this one goes away (its `berth up` restarting), the step going on meanwhile; one
    // still waiting for CPUs asks again.
    let (mut step, mut waiting) = (None, false);
    // The step's job, step and tasks once it runs; the last SIGINT that was not passed on.
    let (mut running, mut job) = (None, request.job);
    let mut interrupt: Option<std::time::Instant> = None;
    loop {
        let [answer, signalled] = crate::launcher::readable([answers.fd(), signals.fd()])
            .map_err(io_err("waiting for the step"))?;
        if signalled {
            for sig in signals.take() {
                if let (libc::SIGINT, true, Some((step, ntasks))) = (sig, sigint_twice, running) {
                    let id = job.map_or(format!("step {step}"), |j| format!("StepId={j}.{step}"));
                    let again = interrupt.is_some_and(|at| at.elapsed().as_secs_f64() < 1.0);
                    if !again {
                        interrupt = Some(std::time::Instant::now());
                        let tasks = match ntasks {
                            1 => "task 0".to_string(),
                            n => format!("tasks 0-{}", n - 1),
                        };
                        berth_core::say!("srun: interrupt (one more within 1 sec to abort)");
                        berth_core::say!("srun: {id} {tasks}: running");
                        continue;
                    }
                    berth_core::say!("srun: sending Ctrl-C to {id}");
                }
                // The agent may have finished already; its last answer is still to come.
                answers.say(&StepSignal { signal: sig });
                interrupted |= !started;
            }
        }
        if !answer {
            continue;
        }
        if !answers.read()? {
            let again = match step {
                Some(step) => StepRequest {
                    attach: Some(step),
                    ..request.clone()
                },
                None if waiting => request.clone(),
                None => return Err(StepError::Lost),
            };
            if !in_job(socket) {
                return Err(StepError::Lost);
            }
            // (Its end is seen before its listener goes: a moment for that.)
            std::thread::sleep(std::time::Duration::from_millis(100));
            answers = Answers::send(socket, &again)?;
            continue;
        }
        while let Some(event) = answers.next() {
            match event? {
                StepEvent::Exited { code } => return Ok(code),
                StepEvent::Error(message) if interrupted => {
                    return Err(StepError::Cancelled(message))
                }
                StepEvent::Error(message) => return Err(StepError::Refused(message)),
                other => {
                    match other {
                        StepEvent::Started { step: s, ntasks } => {
                            (started, step) = (true, Some(s).filter(|_| request.job.is_some()));
                            running = Some((s, ntasks));
                            if request.pty && raw.is_none() {
                                raw = RawTerminal::enter();
                            }
                        }
                        StepEvent::Submitted(ref submitted) => job = Some(submitted.job_id),
                        StepEvent::Busy { .. } => waiting = request.job.is_some(),
                        _ => {}
                    }
                    tell(&other)
                }
            }
        }
    }
}

/// An allocation held for a command of the client's (`berth alloc`, salloc): its job and
/// variables, and the connection that holds it (the allocation ends when it closes).
pub struct Held {
    answers: Answers,
    signals: Signals,
    /// Who tells the user what happens (`berth alloc`, `salloc`).
    who: String,
    pub job: u64,
    pub env: Vec<(String, String)>,
}

/// How a held allocation ended.
#[derive(Debug, PartialEq)]
pub enum Release {
    /// With the command's exit status, which is now the job's.
    Ended(i32),
    /// The job ended first (its time limit, cancelled: why): the command was hung up on,
    /// and ended with this status.
    Revoked(String, i32),
    /// The node agent went away (its cluster restarting): the command ended with this
    /// status; the job may still hold its nodes.
    Lost(i32),
}

/// Asks the node agent for an allocation to hold (`request.hold`) and returns once it runs,
/// its progress to `tell`; `who` speaks of it later. ^C while it waits gives it up.
pub fn allocate(
    socket: &Path,
    request: &StepRequest,
    who: &str,
    tell: &mut dyn FnMut(&StepEvent),
) -> Result<Held, StepError> {
    let mut answers = Answers::send(socket, request)?;
    let signals = Signals::catch(false)?;
    loop {
        let [answer, signalled] = crate::launcher::readable([answers.fd(), signals.fd()])
            .map_err(io_err("waiting for the allocation"))?;
        if signalled && !signals.take().is_empty() {
            // Any line while it waits gives the allocation up; the agent answers why.
            answers.say(&StepSignal {
                signal: libc::SIGINT,
            });
        }
        if !answer {
            continue;
        }
        if !answers.read()? {
            return Err(StepError::Refused(
                "the node agent closed the step socket before the allocation ran (was the controller stopped?)".into(),
            ));
        }
        while let Some(event) = answers.next() {
            match event? {
                StepEvent::Granted { job, env } => {
                    return Ok(Held {
                        answers,
                        signals,
                        who: who.to_string(),
                        job,
                        env,
                    })
                }
                StepEvent::Error(message) => return Err(StepError::Refused(message)),
                other => tell(&other),
            }
        }
    }
}

impl Held {
    /// Holds the allocation while `command` runs, passing SIGTERM and SIGHUP on to it (the
    /// terminal's ^C and ^\ reach it by themselves). The allocation ends with its exit
    /// status; a job that ends first has the command hung up on (SIGHUP, SIGKILL after
    /// [`HANG_UP_GRACE`]).
    pub fn wait(mut self, command: &mut std::process::Child) -> Result<Release, StepError> {
        let pid = command.id() as libc::pid_t;
        let pidfd = berth_runtime::enter::pidfd(pid).map_err(io_err("watching the command"))?;
        let (mut revoked, mut lost) = (None, false);
        let mut hung_up = None;
        loop {
            let timeout =
                hung_up.map(|at: std::time::Instant| HANG_UP_GRACE.saturating_sub(at.elapsed()));
            // A lost agent's socket stays readable: poll(2) skips a negative descriptor.
            let answers = if lost { -1 } else { self.answers.fd() };
            let fds = [pidfd.as_raw_fd(), self.signals.fd(), answers];
            let ready = crate::launcher::readable_within(fds, timeout)
                .map_err(io_err("waiting for the command"))?;
            if ready[0] {
                break;
            }
            if hung_up.is_some_and(|at| at.elapsed() >= HANG_UP_GRACE) {
                // SAFETY: kill(2) on our own child, not yet reaped (its pidfd is not readable).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                // Once: then its end is waited for without a deadline.
                hung_up = None;
            }
            if ready[1] {
                for sig in self.signals.take() {
                    if matches!(sig, libc::SIGTERM | libc::SIGHUP) {
                        // SAFETY: as above.
                        unsafe { libc::kill(pid, sig) };
                    }
                }
            }
            if !ready[2] || lost {
                continue;
            }
            if !self.answers.read()? {
                lost = true;
                continue;
            }
            while let Some(event) = self.answers.next() {
                if let StepEvent::Error(why) = event? {
                    berth_core::say!(
                        "{}: job allocation {} has been revoked: {why}",
                        self.who,
                        self.job
                    );
                    revoked = Some(why);
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGHUP) };
                    hung_up = Some(std::time::Instant::now());
                }
            }
        }
        let status = command.wait().map_err(io_err("waiting for the command"))?;
        let code = std::os::unix::process::ExitStatusExt::signal(&status)
            .map_or(status.code().unwrap_or(125), |sig| 128 + sig);
        if let Some(why) = revoked {
            return Ok(Release::Revoked(why, code));
        }
        if lost {
            return Ok(Release::Lost(code));
        }
        self.end(code)
    }

    /// Ends the allocation with `code` (its command's exit status, or why it could not
    /// run), once the job has it.
    pub fn end(mut self, code: i32) -> Result<Release, StepError> {
        self.answers.say(&AllocationExit { exit: code });
        // The agent answers once the job has its status: until then it is not ended.
        loop {
            if !self.answers.read()? {
                return Ok(Release::Lost(code));
            }
            while let Some(event) = self.answers.next() {
                if let StepEvent::Exited { .. } = event? {
                    return Ok(Release::Ended(code));
                }
            }
        }
    }
}

/// How long a command whose allocation ended has after SIGHUP, before SIGKILL.
pub const HANG_UP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `socket` is the step socket of the job this client runs in: its container's, or
/// the one a job on the host is given (BERTH_STEP_SOCKET, with the job's id).
fn in_job(socket: &Path) -> bool {
    let given = std::env::var_os("BERTH_STEP_SOCKET")
        .filter(|_| std::env::var_os("BERTH_JOB_ID").is_some());
    socket.starts_with(berth_api::STEP_DIR_IN_CONTAINER) || given.is_some_and(|s| socket == s)
}

/// The connection to the node agent's step socket: the request sent, its answers read a
/// JSON line each.
struct Answers {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl Answers {
    /// Connects and sends `request` with this process's stdin, stdout and stderr.
    fn send(socket: &Path, request: &StepRequest) -> Result<Answers, StepError> {
        // In a job's container the agent may be away a while (its `berth up` restarting):
        // waited for, as a client waits for its controller.
        let in_job = in_job(socket);
        let deadline = std::time::Instant::now() + AGENT_GONE_LIMIT;
        let mut told = false;
        let mut line = serde_json::to_vec(request).expect("requests serialise");
        line.push(b'\n');
        let stdio: [RawFd; 3] = [0, 1, 2];
        loop {
            // (A connection the dying agent's listener took is reset, or refuses the
            // request: it is not there yet either.)
            let sent = UnixStream::connect(socket).and_then(|stream| {
                send_with_fds(&stream, &line, &stdio)?;
                Ok(stream)
            });
            match sent {
                Ok(stream) => {
                    return Ok(Answers {
                        stream,
                        pending: Vec::new(),
                    })
                }
                Err(e)
                    if in_job
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound
                                | std::io::ErrorKind::ConnectionRefused
                                | std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::BrokenPipe
                        )
                        && std::time::Instant::now() < deadline =>
                {
                    if !std::mem::replace(&mut told, true) {
                        berth_core::say!("berth: the node agent does not answer ({e}); waiting for it to be back");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(io_err(format!(
                        "cannot reach the node agent's step socket {} (is the job's cluster up? outside a job, set BERTH_SOCKET)",
                        socket.display()
                    ))(e))
                }
            }
        }
    }

    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Sends a JSON line to the agent; it may have finished already (its last answer is
    /// still to come), so a failure is no error.
    fn say(&mut self, message: &impl serde::Serialize) {
        let mut line = serde_json::to_vec(message).expect("messages serialise");
        line.push(b'\n');
        let _ = self.stream.write_all(&line);
    }

    /// Reads what has come; `false` at the connection's end (its agent gone, which a
    /// reset says as well as an end does).
    fn read(&mut self) -> Result<bool, StepError> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(false),
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("reading from the node agent")(e)),
            }
        }
    }

    /// The next complete answer read, if any.
    fn next(&mut self) -> Option<Result<StepEvent, StepError>> {
        let end = self.pending.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.pending.drain(..=end).collect();
        Some(serde_json::from_slice(&line).map_err(|e| {
            StepError::Refused(format!(
                "the node agent sent an answer this berth does not understand ({e}): are they the same version?"
            ))
        }))
    }
}

/// The signals the client passes on, caught into a pipe: SIGINT, SIGTERM, SIGHUP, SIGQUIT,
/// SIGUSR1, SIGUSR2 (and SIGWINCH with a terminal).
struct Signals {
    read: OwnedFd,
    /// The handler's end (SIGNAL_PIPE), open as long as this.
    _write: OwnedFd,
}

impl Signals {
    fn catch(winch: bool) -> Result<Signals, StepError> {
        let (read, write) = super::pipe(libc::O_NONBLOCK)?;
        SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
        let winch = winch.then_some(libc::SIGWINCH);
        for sig in berth_runtime::FORWARDED.into_iter().chain(winch) {
            // SAFETY: installs a handler that only calls write(2); SA_RESTART keeps reads
            // going. A program exec'd afterwards gets the default action back.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
        Ok(Signals {
            read,
            _write: write,
        })
    }

    fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The signals caught since the last call.
    fn take(&self) -> Vec<i32> {
        let mut sigs = [0u8; 64];
        // SAFETY: read(2) into a live buffer from our non-blocking pipe.
        let n = unsafe { libc::read(self.read.as_raw_fd(), sigs.as_mut_ptr().cast(), 64) };
        sigs[..n.max(0) as usize]
            .iter()
            .map(|&s| i32::from(s))
            .collect()
    }
}

/// This process's terminal in raw mode, restored when dropped.
struct RawTerminal(libc::termios);

impl RawTerminal {
    /// `None` when stdin is not a terminal.
    fn enter() -> Option<RawTerminal> {
        // SAFETY: tcgetattr fills a termios we own; cfmakeraw and tcsetattr act on copies.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            Some(RawTerminal(saved))
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings saved in `enter`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}
