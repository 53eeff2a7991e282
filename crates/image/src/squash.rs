//! Building the squashfs file with tar2sqfs (Debian's squashfs-tools-ng), fed a tar stream.

use crate::ImageError;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// lz4: decompression is several times faster than gzip or xz, which is what container
/// start-up pays for on every first read; the kernel and squashfuse both read it.
const COMPRESSOR: &str = "lz4";

/// Runs tar2sqfs writing `out`, and calls `produce` with a writer connected to its stdin.
pub fn build<T>(
    out: &Path,
    store: &Path,
    produce: impl FnOnce(&mut dyn Write) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut child = Command::new("tar2sqfs")
        .args([
            "--quiet",
            "--force",
            "--no-xattr",
            "--no-skip",
            "--compressor",
            COMPRESSOR,
        ])
        .args(["--num-jobs", &threads.to_string()])
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::ToolMissing {
                tool: "tar2sqfs",
                package: "squashfs-tools-ng",
            },
            _ => ImageError::ToolFailed {
                tool: "tar2sqfs",
                message: e.to_string(),
            },
        })?;
    let mut stderr = child.stderr.take().expect("stderr was piped");
    // Drained on a thread so that a chatty tar2sqfs can never block on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let produced = {
        let mut stdin =
            BufWriter::with_capacity(1 << 20, child.stdin.take().expect("stdin was piped"));
        produce(&mut stdin).and_then(|v| {
            stdin
                .flush()
                .map(|_| v)
                .map_err(ImageError::io("cannot write to tar2sqfs for", out))
        })
    };
    let status = child
        .wait()
        .map_err(ImageError::io("cannot wait for tar2sqfs writing", out))?;
    let message = drain.join().unwrap_or_default();
    let failed = |message: String| {
        if message.contains("No space left") || no_space(store) {
            ImageError::NoSpace(store.to_path_buf())
        } else {
            ImageError::ToolFailed {
                tool: "tar2sqfs",
                message,
            }
        }
    };
    match produced {
        // A broken pipe means tar2sqfs stopped reading: its own message says why.
        Err(ImageError::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            Err(failed(message.trim().to_string()))
        }
        Err(ImageError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC) => {
            Err(ImageError::NoSpace(store.to_path_buf()))
        }
        Err(e) => Err(e),
        Ok(_) if !status.success() => Err(failed(format!("{status}: {}", message.trim()))),
        Ok(v) => Ok(v),
    }
}

/// Less than 1 MiB free where the store lives.
fn no_space(store: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(store.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut s) == 0
            && (s.f_bavail as u64).saturating_mul(s.f_frsize as u64) < (1 << 20)
    }
}
