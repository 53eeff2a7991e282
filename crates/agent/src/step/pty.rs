//! `berth step --pty`: the task's own pseudo-terminal, relayed to the client's terminal (the
//! step process's stdin and stdout are the client's descriptors), as sshd and
//! `docker exec -t` do. The client puts its terminal in raw mode, so keys such as ^C reach
//! the task's terminal, whose line discipline turns them into signals for the task's
//! foreground job; window size changes follow the client's terminal.

use super::{io_err, StepError};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

pub struct Terminal {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Gives `to` the window size of the terminal `from`, if `from` is one.
fn copy_window_size(from: RawFd, to: RawFd) {
    // SAFETY: TIOCGWINSZ and TIOCSWINSZ read and write a winsize we own.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut size) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &size);
        }
    }
}

impl Terminal {
    /// A new pseudo-terminal (in the container's /dev/pts, which is the host's), its slave
    /// side owned by `owner`, as login(1) hands a terminal to its user.
    pub fn open(owner: &berth_runtime::Identity) -> io::Result<Terminal> {
        // SAFETY: posix_openpt returns a fresh descriptor or -1, checked before it is owned.
        let master = unsafe {
            OwnedFd::from_raw_fd(check(libc::posix_openpt(
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            ))?)
        };
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: grantpt and unlockpt on the master we own.
        unsafe {
            check(libc::grantpt(master.as_raw_fd()))?;
            check(libc::unlockpt(master.as_raw_fd()))?;
        }
        // SAFETY: TIOCGPTPEER on the master we own returns a new descriptor or -1; the
        // descriptor is checked before it is owned; fchown/fchmod act on it.
        let slave = unsafe {
            // The slave through its master (Linux 4.13): no path to look up, so no mount of
            // /dev/pts in between can make it another terminal, or none.
            let fd = match libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) {
                -1 => open_by_name(&master, flags)?,
                fd => fd,
            };
            let slave = OwnedFd::from_raw_fd(fd);
            check(libc::fchown(fd, owner.uid, owner.gid))?;
            check(libc::fchmod(fd, 0o620))?;
            slave
        };
        copy_window_size(0, master.as_raw_fd());
        Ok(Terminal { master, slave })
    }
}

/// The slave of `master` opened by its name (ptsname), where TIOCGPTPEER is not known.
fn open_by_name(master: &OwnedFd, flags: libc::c_int) -> io::Result<libc::c_int> {
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r on the master we own writes a NUL-terminated name into our buffer of
    // the given size; open reads that name.
    unsafe {
        if libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0 {
            return Err(io::Error::last_os_error());
        }
        check(libc::open(name.as_ptr(), flags))
    }
}

static RESIZED: AtomicBool = AtomicBool::new(false);
/// The task signals are passed on to: it leads a session of its own, out of the step's
/// process group, which the agent signals.
static TASK: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_winch(_: libc::c_int) {
    RESIZED.store(true, Ordering::SeqCst);
}

extern "C" fn pass_on(sig: libc::c_int) {
    let pid = TASK.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn handle(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: installs a handler that only makes async-signal-safe calls; no SA_RESTART, so
    // poll(2) returns and the loop notices a resize at once.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as *const () as usize;
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

/// Writes all of `bytes` to `fd`, retrying on EINTR.
fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: write(2) from a live buffer of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Reads into `buf`: `Ok(0)` at the end (EIO is how a master reports that every slave
/// descriptor is closed).
fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read(2) into a live buffer of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EIO) => Ok(0),
        _ => Err(e),
    }
}

/// Relays between this process's stdin/stdout (the client's terminal) and `master` until the
/// task `pid` ends; returns its exit status and the signal that killed it, if one did. The
/// step's end signal (the job's end, the client gone) kills the task, and the step's
/// `others` (its tasks without the terminal).
pub fn relay(
    master: &OwnedFd,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    others: &[libc::pid_t],
) -> Result<(i32, Option<i32>), StepError> {
    TASK.store(pid, Ordering::SeqCst);
    handle(libc::SIGWINCH, on_winch);
    for sig in berth_runtime::FORWARDED {
        handle(sig, pass_on);
    }
    let m = master.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut input_open, mut output_open) = (true, true);
    loop {
        if RESIZED.swap(false, Ordering::SeqCst) {
            copy_window_size(0, m);
        }
        let mut fds = vec![
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if output_open { m } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if input_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: super::END_READ.get().map_or(-1, |e| e.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll(2) on descriptors we hold, in a vector that outlives the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io_err("relaying the terminal")(e));
        }
        if fds[1].revents != 0 {
            match read(m, &mut buf) {
                Ok(0) | Err(_) => output_open = false,
                Ok(n) => {
                    if write_all(1, &buf[..n]).is_err() {
                        output_open = false;
                    }
                }
            }
        }
        if fds[2].revents != 0 {
            match read(0, &mut buf) {
                Ok(0) | Err(_) => input_open = false,
                Ok(n) => {
                    let _ = write_all(m, &buf[..n]);
                }
            }
        }
        if fds[3].revents != 0 {
            for task in std::iter::once(&pid).chain(others) {
                // SAFETY: kill(2) of our own child, not reaped yet: the terminal's is reaped
                // below, the others by the caller.
                unsafe { libc::kill(*task, libc::SIGKILL) };
            }
            let _ = read(fds[3].fd, &mut buf);
        }
        if fds[0].revents != 0 {
            let status = berth_runtime::enter::wait_signalled(pid)
                .map_err(io_err("waiting for the task"))?;
            // What the task wrote last may still be in the terminal: pass it on.
            // SAFETY: makes our own master descriptor non-blocking.
            unsafe { libc::fcntl(m, libc::F_SETFL, libc::O_NONBLOCK) };
            while output_open {
                match read(m, &mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = write_all(1, &buf[..n]);
                    }
                    _ => output_open = false,
                }
            }
            return Ok(status);
        }
    }
}
