//! Building the squashfs file with tar2sqfs (Debian's squashfs-tools-ng), fed a tar stream;
//! and reading one (an image imported as a squashfs file) with its sqfs2tar and rdsquashfs.

use crate::ImageError;
use berth_core::shell;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// lz4: decompression is several times faster than gzip or xz, which is what container
/// start-up pays for on every first read; the kernel and squashfuse both read it.
const COMPRESSOR: &str = "lz4";

/// Where berth's containers mount things, relative to the image's root (`true`: a
/// directory): /proc, /sys, /dev and /tmp, the files bound over the image's (/etc/hosts,
/// /etc/resolv.conf), and berth's own directory in a job's container, /.berth (its tools,
/// the job's files, the step sockets, berth's executable and libraries, GPU libraries and
/// tools). An image's squashfs file gets those the image lacks ([`append_mount_points`]),
/// as Apptainer's and Charliecloud's images get theirs at build, so that a container's start
/// creates none in its writable overlay: each create there is an overlay copy-up, some 7 %
/// of the CPU of a trivial batch job (measured over 1000-task arrays).
pub const MOUNT_POINTS: &[(&str, bool)] = &[
    ("proc", true),
    ("sys", true),
    ("dev", true),
    ("tmp", true),
    ("etc", true),
    ("etc/hosts", false),
    ("etc/resolv.conf", false),
    (".berth", true),
    (".berth/bin", true),
    (".berth/job", true),
    (".berth/run", true),
    (".berth/libexec", true),
    (".berth/libexec/berth", false),
    (".berth/lib", true),
    (".berth/lib/0", true),
    (".berth/lib/1", true),
    (".berth/gpu", true),
    (".berth/gpu/lib", true),
    (".berth/gpu/bin", true),
];

/// Appends to `tar` the [`MOUNT_POINTS`] an image lacks, empty and root's: `has(path)` says
/// what the image holds at a path (`Some(true)`: a directory, `Some(false)`: anything
/// else). One whose parent the image holds as anything but a directory is left out.
pub fn append_mount_points<W: Write>(
    tar: &mut tar::Builder<W>,
    has: impl Fn(&str) -> Option<bool>,
) -> io::Result<()> {
    let mut made: Vec<&str> = Vec::new();
    for &(path, dir) in MOUNT_POINTS {
        let parent_is_dir = path
            .rsplit_once('/')
            .is_none_or(|(parent, _)| made.contains(&parent) || has(parent) == Some(true));
        if has(path).is_some() || !parent_is_dir {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        let (kind, mode) = match (dir, path) {
            (true, "tmp") => (tar::EntryType::Directory, 0o1777),
            (true, _) => (tar::EntryType::Directory, 0o755),
            (false, _) => (tar::EntryType::Regular, 0o644),
        };
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(0);
        header.set_mtime(0);
        tar.append_data(&mut header, path, io::empty())?;
        made.push(path);
    }
    Ok(())
}

/// Holds back the end of a tar stream (its two zero blocks) that passes through it, so that
/// entries can be added after those of a producer that ended the stream itself: [`EndHeld::end`].
pub struct EndHeld<W: Write> {
    inner: W,
    held: Vec<u8>,
}

/// The end of a tar stream: two blocks of zeros.
const TAR_END: usize = 1024;

impl<W: Write> EndHeld<W> {
    pub fn new(inner: W) -> EndHeld<W> {
        EndHeld {
            inner,
            held: Vec::with_capacity(2 * TAR_END),
        }
    }

    /// Appends the [`MOUNT_POINTS`] the stream's tree lacks ([`append_mount_points`]), then
    /// the end of the stream.
    pub fn end(mut self, has: impl Fn(&str) -> Option<bool>) -> io::Result<()> {
        if self.held != [0; TAR_END] {
            return Err(io::Error::other(
                "the tar stream did not end as a tar stream does",
            ));
        }
        let mut tar = tar::Builder::new(&mut self.inner);
        append_mount_points(&mut tar, has)?;
        tar.into_inner()?.flush()
    }
}

impl<W: Write> Write for EndHeld<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // All but the last TAR_END bytes so far go through.
        let pass = (self.held.len() + buf.len()).saturating_sub(TAR_END);
        let from_held = pass.min(self.held.len());
        self.inner.write_all(&self.held[..from_held])?;
        self.held.drain(..from_held);
        let from_buf = pass - from_held;
        self.inner.write_all(&buf[..from_buf])?;
        self.held.extend_from_slice(&buf[from_buf..]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whose a squashfs file is: tar2sqfs runs as this user, so that it writes only where the
/// user may, and the file is theirs (a container saved for its user).
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Runs tar2sqfs writing `out` (as `owner`, if given; `store` is where its space is
/// checked when it fails), and calls `produce` with a writer connected to its stdin.
pub fn build<T>(
    out: &Path,
    store: &Path,
    owner: Option<&Owner>,
    produce: impl FnOnce(&mut dyn Write) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut command = Command::new("tar2sqfs");
    if let Some(owner) = owner {
        let (uid, gid, groups) = (owner.uid, owner.gid, owner.groups.clone());
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the child only makes system calls on memory it
        // owns (the groups were copied before the fork).
        unsafe {
            command.pre_exec(move || {
                let done = libc::setgroups(groups.len(), groups.as_ptr()) == 0
                    && libc::setgid(gid) == 0
                    && libc::setuid(uid) == 0;
                match done {
                    true => Ok(()),
                    false => Err(io::Error::last_os_error()),
                }
            });
        }
    }
    let mut child = command
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
        .map_err(|e| tool_error("tar2sqfs", e))?;
    let mut stderr = child.stderr.take().expect("stderr was piped");
    // Drained on a thread so that a chatty tar2sqfs can never block on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut fed = Counted {
        inner: child.stdin.take().expect("stdin was piped"),
        bytes: 0,
    };
    let produced = {
        let mut stdin = BufWriter::with_capacity(1 << 20, &mut fed);
        produce(&mut stdin).and_then(|v| {
            stdin
                .flush()
                .map(|_| v)
                .map_err(ImageError::io("cannot write to tar2sqfs for", out))
        })
    };
    drop(fed.inner);
    let status = child
        .wait()
        .map_err(ImageError::io("cannot wait for tar2sqfs writing", out))?;
    let message = drain.join().unwrap_or_default();
    // tar2sqfs says only "I/O error" when a write fails for want of space, and removes what
    // it wrote: the disk ran out if it has less room now than the file could have taken
    // (squashfs is no bigger than its tar stream, give or take its tables).
    let room_for = |bytes: u64| free_space(store).is_none_or(|free| free >= bytes);
    let failed = |message: String| {
        let short = !room_for(1 << 20)
            || (message.contains("I/O error") && !room_for(fed.bytes + fed.bytes / 8 + (1 << 20)));
        if message.contains("No space left") || short {
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

/// Bytes free for unprivileged use where the store lives.
fn free_space(store: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(store.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut s) == 0)
            .then(|| (s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
}

/// A writer that counts what went through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Unpacks the squashfs file `image` into the tar file `tar` (sqfs2tar), for the flattener
/// to read as any root filesystem tarball.
pub fn unpack(image: &Path, tar: &Path) -> Result<(), ImageError> {
    let out = std::fs::File::create(tar).map_err(ImageError::io("cannot write", tar))?;
    let done = Command::new("sqfs2tar")
        .args(["--no-xattr", "--no-skip"])
        .arg(image)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| tool_error("sqfs2tar", e))?;
    if !done.status.success() {
        let why = String::from_utf8_lossy(&done.stderr);
        return Err(ImageError::archive(
            image,
            format!("not a squashfs file berth can read: {}", why.trim()),
        ));
    }
    Ok(())
}

/// Where root filesystems keep their variables: enroot's file, then Apptainer's (those of
/// the Docker image it was built from, then the definition file's `%environment`); a later
/// value wins.
const ENVIRONMENT_FILES: [&str; 3] = [
    "/etc/environment",
    "/.singularity.d/env/10-docker2singularity.sh",
    "/.singularity.d/env/90-environment.sh",
];

/// Apptainer's runscript, what `apptainer run` runs.
const RUNSCRIPT: &str = "/.singularity.d/runscript";

/// What the squashfs image `image` says of how it runs: its variables, as enroot and
/// Apptainer keep them, and Apptainer's runscript as its entrypoint.
pub(crate) fn settings(image: &Path) -> Result<crate::archive::RootfsSettings, ImageError> {
    let cat = |file: &str| -> Result<Option<String>, ImageError> {
        let done = Command::new("rdsquashfs")
            .args(["--cat", file])
            .arg(image)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| tool_error("rdsquashfs", e))?;
        Ok(done
            .status
            .success()
            .then(|| String::from_utf8_lossy(&done.stdout).into_owned()))
    };
    let mut env: Vec<String> = Vec::new();
    for file in ENVIRONMENT_FILES {
        read_environment(&cat(file)?.unwrap_or_default(), &mut env);
    }
    let entrypoint = cat(RUNSCRIPT)?.map(|_| vec![RUNSCRIPT.to_string()]);
    Ok(crate::archive::RootfsSettings { env, entrypoint })
}

/// The variables an environment file sets (an /etc/environment, enroot's or pam_env's
/// simple `NAME=VALUE` lines, or a script of Apptainer's: `export NAME="${NAME:-"value"}"`),
/// evaluated as a shell sourcing it in turn after the files before would ([`berth_core::shell`]):
/// each value in `env` (`NAME=VALUE`) replaced or added. PATH is docker's default until a file
/// sets it. What sets no variable is left out, and so is a value berth cannot evaluate (a
/// command's output).
pub fn read_environment(text: &str, env: &mut Vec<String>) {
    for line in text.lines() {
        let known = |name: &str| {
            let value = env
                .iter()
                .rev()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string));
            value.or_else(|| (name == "PATH").then(|| shell::DEFAULT_PATH.to_string()))
        };
        let Some(Ok(set)) = shell::assignments(line, &known) else {
            continue;
        };
        for (name, value) in set {
            env.retain(|kv| kv.split('=').next() != Some(name.as_str()));
            env.push(format!("{name}={value}"));
        }
    }
}

/// The hard links of squashfs file `image`, `(path, its target)`: what an unpacking with
/// rdsquashfs (which writes each path as a file of its own) must link again. Where the image
/// has none (its paths are no more than its inodes: rdsquashfs's listing of its tables), its
/// data is not read; otherwise sqfs2tar's stream of it says which paths are links.
pub(crate) fn hard_links(image: &Path) -> Result<Vec<(String, String)>, ImageError> {
    let mut superblock = [0u8; 8];
    std::fs::File::open(image)
        .and_then(|mut f| f.read_exact(&mut superblock))
        .map_err(ImageError::io("cannot read", image))?;
    let inodes = u32::from_le_bytes(superblock[4..8].try_into().expect("4 bytes"));
    let listing = Command::new("rdsquashfs")
        .arg("--describe")
        .arg(image)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| tool_error("rdsquashfs", e))?;
    // (The root is an inode the listing leaves out.)
    let paths = listing.stdout.iter().filter(|&&b| b == b'\n').count() + 1;
    if !listing.status.success() || paths <= inodes as usize {
        return Ok(Vec::new());
    }
    let mut stream = Command::new("sqfs2tar")
        .arg("--no-xattr")
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| tool_error("sqfs2tar", e))?;
    let mut links = Vec::new();
    let mut tar = tar::Archive::new(stream.stdout.take().expect("piped"));
    let bad = |e: io::Error| ImageError::ToolFailed {
        tool: "sqfs2tar",
        message: e.to_string(),
    };
    for entry in tar.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        if entry.header().entry_type() != tar::EntryType::Link {
            continue;
        }
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        if let Some(target) = entry.link_name().map_err(bad)? {
            links.push((path, target.to_string_lossy().into_owned()));
        }
    }
    match stream.wait() {
        Ok(status) if status.success() => Ok(links),
        Ok(status) => Err(ImageError::ToolFailed {
            tool: "sqfs2tar",
            message: format!("{status} reading {}", image.display()),
        }),
        Err(e) => Err(bad(e)),
    }
}

fn tool_error(tool: &'static str, e: io::Error) -> ImageError {
    match e.kind() {
        io::ErrorKind::NotFound => ImageError::ToolMissing {
            tool,
            package: "squashfs-tools-ng",
        },
        _ => ImageError::ToolFailed {
            tool,
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_go_after_a_finished_stream_and_before_its_end() {
        let mut out = Vec::new();
        let mut ended = EndHeld::new(&mut out);
        // Written in pieces of odd sizes, as a producer's writes come.
        let mut stream = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o700);
        header.set_size(0);
        stream.append_data(&mut header, "tmp", io::empty()).unwrap();
        let data = vec![7u8; 3000];
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        stream.append_data(&mut header, "proc", &data[..]).unwrap();
        let stream = stream.into_inner().unwrap();
        for piece in stream.chunks(333) {
            ended.write_all(piece).unwrap();
        }
        let has = |path: &str| match path {
            "tmp" => Some(true),
            "proc" => Some(false),
            _ => None,
        };
        ended.end(has).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                (
                    path.trim_end_matches('/').to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        let made: Vec<&str> = MOUNT_POINTS
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !["tmp", "proc"].contains(p))
            .collect();
        assert_eq!(
            entries[..2],
            [("tmp".to_string(), 0o700), ("proc".to_string(), 0o644)]
        );
        assert_eq!(
            entries[2..]
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>(),
            made
        );
        assert!(entries.contains(&("sys".to_string(), 0o755)));
        assert!(entries.contains(&("etc/hosts".to_string(), 0o644)));
        // The archive ends where a tar archive does, once.
        assert!(
            out.ends_with(&[0; TAR_END]) && !out[..out.len() - TAR_END].ends_with(&[0; TAR_END])
        );
    }

    #[test]
    fn a_stream_that_did_not_end_is_refused() {
        let mut ended = EndHeld::new(Vec::new());
        ended.write_all(&[1; 2048]).unwrap();
        assert!(ended.end(|_| None).is_err());
    }

    #[test]
    fn an_etc_environment_gives_its_variables() {
        let text = "PATH=/usr/local/bin:/usr/bin\n\
                    export CUDA_HOME=\"/usr/local/cuda\"\n\
                    LANG='C.UTF-8'\n\
                    # a comment\n\
                    \n\
                    EMPTY=\n\
                    1BAD=x\n\
                    not a variable\n\
                    A-B=x\n\
                    QUOTED=\"left open\n\
                    HOST=$(hostname)\n";
        let mut env = Vec::new();
        read_environment(text, &mut env);
        assert_eq!(
            env,
            [
                "PATH=/usr/local/bin:/usr/bin",
                "CUDA_HOME=/usr/local/cuda",
                "LANG=C.UTF-8",
                "EMPTY=",
            ]
        );
    }

    #[test]
    fn apptainers_scripts_are_evaluated_in_turn() {
        let mut env = Vec::new();
        // Apptainer's file for a Docker image's variables, then a definition file's.
        read_environment(
            "#!/bin/sh\nexport CUDA_VERSION=\"${CUDA_VERSION:-\"11.8.0\"}\"\n\
             export LD_LIBRARY_PATH=\"${LD_LIBRARY_PATH:-\"/usr/local/nvidia/lib64\"}\"\n",
            &mut env,
        );
        read_environment(
            "export PATH=\"/opt/conda/bin:$PATH\"\nexport CUDA_VERSION=\"$CUDA_VERSION-x\"\n",
            &mut env,
        );
        assert_eq!(
            env,
            [
                "LD_LIBRARY_PATH=/usr/local/nvidia/lib64".to_string(),
                format!("PATH=/opt/conda/bin:{}", shell::DEFAULT_PATH),
                "CUDA_VERSION=11.8.0-x".to_string(),
            ]
        );
    }
}
