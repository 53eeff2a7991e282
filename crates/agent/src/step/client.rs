//! `berth step`'s side of the step socket: send the request with this process's stdin,
//! stdout and stderr, pass on the signals it gets, and return the step's exit status. It runs
//! in the single-threaded CLI, often inside the job's container (statically linked, it needs
//! nothing from the image).

use super::wire::send_with_fds;
use super::{io_err, StepError};
use berth_api::{StepEvent, StepRequest, StepSignal};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

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

/// Runs the step and returns the worst of its tasks' exit statuses.
pub fn run(socket: &Path, request: &StepRequest) -> Result<i32, StepError> {
    let mut stream = UnixStream::connect(socket).map_err(io_err(format!(
        "cannot reach the node agent's step socket {} (is the job's cluster up? outside a job, set BERTH_SOCKET)",
        socket.display()
    )))?;
    let mut line = serde_json::to_vec(request).expect("requests serialise");
    line.push(b'\n');
    let stdio: [RawFd; 3] = [0, 1, 2];
    send_with_fds(&stream, &line, &stdio).map_err(io_err("cannot send the step request"))?;

    let (sig_read, sig_write) = super::pipe(libc::O_NONBLOCK)?;
    SIGNAL_PIPE.store(sig_write.as_raw_fd(), Ordering::SeqCst);
    // With a terminal, keys go to the task's terminal as they are typed (^C included), and
    // window size changes follow.
    let _raw = request.pty.then(RawTerminal::enter).flatten();
    let winch = request.pty.then_some(libc::SIGWINCH);
    for sig in berth_runtime::FORWARDED.into_iter().chain(winch) {
        // SAFETY: installs a handler that only calls write(2); SA_RESTART keeps reads going.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let [answer, signalled] =
            crate::launcher::readable([stream.as_raw_fd(), sig_read.as_raw_fd()])
                .map_err(io_err("waiting for the step"))?;
        if signalled {
            let mut sigs = [0u8; 64];
            // SAFETY: read(2) into a live buffer from our non-blocking pipe.
            let n = unsafe { libc::read(sig_read.as_raw_fd(), sigs.as_mut_ptr().cast(), 64) };
            for &sig in sigs.iter().take(n.max(0) as usize) {
                let mut msg = serde_json::to_vec(&StepSignal {
                    signal: i32::from(sig),
                })
                .expect("signals serialise");
                msg.push(b'\n');
                // The agent may have finished already; its last answer is still to come.
                let _ = stream.write_all(&msg);
            }
        }
        if !answer {
            continue;
        }
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading from the node agent")(e)),
        };
        if n == 0 {
            return Err(StepError::Refused(
                "the node agent closed the step socket before the step ended (was the controller stopped?)".into(),
            ));
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            match serde_json::from_slice::<StepEvent>(&line) {
                Ok(StepEvent::Exited { code }) => return Ok(code),
                Ok(StepEvent::Error(message)) => return Err(StepError::Refused(message)),
                Ok(StepEvent::Started { .. }) => {}
                Ok(StepEvent::Queued { job }) => {
                    eprintln!("berth step: job {job} queued and waiting for resources")
                }
                Ok(StepEvent::Allocated { job }) => {
                    eprintln!("berth step: job {job} has been allocated resources")
                }
                Err(e) => {
                    return Err(StepError::Refused(format!(
                        "the node agent sent an answer this berth does not understand ({e}): are they the same version?"
                    )))
                }
            }
        }
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
