//! The step socket's framing: JSON lines, the first of which carries the client's stdin,
//! stdout and stderr as SCM_RIGHTS descriptors (unix(7)), so the tasks write straight to
//! the client's files or terminal and no byte of their output passes through berth.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// How many descriptors a request carries: stdin, stdout, stderr.
pub const STDIO_FDS: usize = 3;

/// Sends `bytes` with `fds` attached to the first byte.
pub fn send_with_fds(socket: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let space = cmsg_space(fds.len());
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is valid; every pointer set below points into buffers that
    // outlive the sendmsg call, with their lengths.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is CMSG_SPACE(len) bytes, so the first header and its data
    // fit; CMSG_FIRSTHDR and CMSG_DATA point into it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            std::mem::size_of_val(fds),
        );
    }
    // SAFETY: msg is fully initialised above.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // The descriptors went with the first byte; the rest of a long request follows plainly.
    let mut stream = socket;
    stream.write_all(&bytes[sent as usize..])
}

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// One recvmsg(2) into `buf`: how many bytes came (0: the peer closed), with the
/// descriptors that came with them added to `fds` (close-on-exec; up to [`STDIO_FDS`] of
/// them, the kernel closes any more). Retries when a signal interrupts it.
pub fn recv_with_fds(
    socket: &impl AsRawFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    // On the stack: nothing allocated per call.
    let mut control = [0u64; 8];
    let space = cmsg_space(STDIO_FDS);
    debug_assert!(space <= std::mem::size_of_val(&control));
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: as in send_with_fds; the kernel writes into buf and control within the
        // lengths given.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg points at live buffers.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: walking the control messages the kernel wrote, with the CMSG macros.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg);
                    let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                        // Owned from here on: closed if the request turns out bad.
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        return Ok(n as usize);
    }
}

/// Reads one line (without its newline) and the descriptors that came with it. At most
/// `limit` bytes: a longer line is refused rather than read without end.
pub fn recv_line_with_fds(
    socket: &impl AsRawFd,
    limit: usize,
) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv_with_fds(socket, &mut buf, &mut fds)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection before its request was complete",
            ));
        }
        let chunk = &buf[..n];
        match chunk.iter().position(|&b| b == b'\n') {
            Some(end) => {
                line.extend_from_slice(&chunk[..end]);
                return Ok((line, fds));
            }
            None => line.extend_from_slice(chunk),
        }
        if line.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the request is longer than {limit} bytes"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn descriptors_travel_with_a_long_line() {
        let (a, b) = UnixStream::pair().unwrap();
        let (w, mut r) = UnixStream::pair().unwrap();
        let long = "x".repeat(300_000);
        let line = format!("{long}\n");
        let sender = std::thread::spawn(move || {
            send_with_fds(&a, line.as_bytes(), &[w.as_raw_fd(), w.as_raw_fd(), 2]).unwrap();
            drop(w);
            a
        });
        let (got, fds) = recv_line_with_fds(&b, 1 << 20).unwrap();
        let _a = sender.join().unwrap();
        assert_eq!(got.len(), long.len());
        assert_eq!(fds.len(), 3);
        // The received descriptor is `w`: what goes in comes out of `r`.
        let mut f = std::fs::File::from(fds.into_iter().next().unwrap());
        f.write_all(b"through").unwrap();
        drop(f);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "through");
    }

    #[test]
    fn an_endless_line_is_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let chunk = vec![b'y'; 64 * 1024];
            while a.write_all(&chunk).is_ok() {}
        });
        let err = recv_line_with_fds(&b, 256 * 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(b);
        writer.join().unwrap();
    }
}
