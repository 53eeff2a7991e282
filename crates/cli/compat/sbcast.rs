//! `sbcast SOURCE DEST`: a file copied to every node of a job, as Slurm's sbcast does (to
//! put a program or its input on each node's local storage before the steps read it). In
//! berth the copy lands in the job's container on each node (its /tmp is the container's
//! own), through a step with one task on each node: the file is the step's input, which
//! every task gets whole, and each task (`berth internal receive-file`, as the user)
//! writes it beside its destination and renames it into place once it has all of it, so a
//! node has the whole file or none.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// sbcast's options.
#[derive(Parser, Debug)]
#[command(name = "sbcast", disable_version_flag = true)]
struct Sbcast {
    /// Replace DEST where it exists already
    #[arg(short, long)]
    force: bool,
    /// Keep SOURCE's modification and access times (its mode is kept anyway)
    #[arg(short, long)]
    preserve: bool,
    /// The job [default: the one this runs in, $SLURM_JOB_ID]
    #[arg(short, long = "jobid", value_name = "JOB")]
    jobid: Option<String>,
    /// Accepted as sbcast takes it: berth sends the file as it is
    #[arg(short = 'C', long, value_name = "LIB", num_args = 0..=1, require_equals = true)]
    compress: Option<Option<String>>,
    /// Accepted as sbcast takes it: berth sends the file to every node at once
    #[arg(short = 'F', long, value_name = "N")]
    fanout: Option<u32>,
    /// The file to copy
    source: PathBuf,
    /// Where each node gets it: a path in the job's container there (relative: to this
    /// directory), or a directory there, which gets it under SOURCE's name
    dest: String,
}

/// `berth internal receive-file`: one node's end of sbcast.
#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// How many bytes the file has: fewer on the input is a copy cut short
    #[arg(long)]
    size: u64,
    /// Its mode (octal)
    #[arg(long)]
    mode: String,
    /// Its modification and access times (seconds since the epoch), with sbcast -p
    #[arg(long, num_args = 2, value_names = ["MTIME", "ATIME"])]
    times: Option<Vec<i64>>,
    /// Replace DEST where it exists
    #[arg(long)]
    force: bool,
    /// The destination
    dest: PathBuf,
    /// The file's name, for a destination that is a directory
    name: String,
}

/// `sbcast [-f] [-p] [-j JOB] SOURCE DEST`.
pub fn sbcast(words: Vec<String>) -> Result<i32> {
    let args = Sbcast::try_parse_from(std::iter::once("sbcast".to_string()).chain(words))
        .unwrap_or_else(|e| e.exit());
    let job = match &args.jobid {
        // (sbcast's JOB.STEP names a step to copy for: the job's nodes are the same.)
        Some(spec) => spec
            .split('.')
            .next()
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("--jobid={spec}: expected a job id"))?,
        None => crate::step::job_id_from_env()?.ok_or_else(|| {
            anyhow::anyhow!("sbcast copies a file to the nodes of a job: run it inside one, or name it with -j JOB")
        })?,
    };
    let info: berth_api::JobInfo =
        crate::client::request("GET", &format!("/v1/jobs/{job}"), None::<&()>)?;
    if info.state != "RUNNING" || info.nodes.is_empty() {
        bail!(
            "job {job} is {}: sbcast copies to the nodes of a running job",
            info.state
        );
    }
    let file = std::fs::File::open(&args.source)
        .with_context(|| format!("cannot open {}", args.source.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("{}: not a regular file", args.source.display());
    }
    let name = args
        .source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Run in the job's container where it has one, wherever this client runs.
    let berth = match info.image {
        Some(_) => format!("{}/berth", berth_agent::runner::TOOLS_IN_CONTAINER),
        None => own_berth(),
    };
    let mut argv = vec![
        berth,
        "internal".to_string(),
        "receive-file".to_string(),
        "--size".to_string(),
        meta.len().to_string(),
        "--mode".to_string(),
        format!("{:o}", meta.permissions().mode() & 0o777),
    ];
    if args.preserve {
        argv.extend([
            "--times".to_string(),
            meta.mtime().to_string(),
            meta.atime().to_string(),
        ]);
    }
    if args.force {
        argv.push("--force".to_string());
    }
    argv.extend(["--".to_string(), args.dest, name]);
    // The file is the step's input, which each task gets whole (stdin: the file).
    {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2(2) of a file this process opened onto its own stdin.
        if unsafe { libc::dup2(file.as_raw_fd(), 0) } < 0 {
            bail!(
                "cannot read {}: {}",
                args.source.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    let nodes = info.nodes.len() as u32;
    let mut request = berth_api::StepRequest::new(
        argv,
        crate::step::environment(),
        std::env::current_dir()?.to_string_lossy().into_owned(),
    );
    request.job = Some(job);
    // One task on each node, on none of the job's CPUs of its own (the copy is not the
    // job's work), and each node's end says for itself how it went.
    request.ntasks = Some(nodes);
    request.nodes = Some(nodes);
    request.cpus_per_task = Some(1);
    request.overcommit = true;
    request.overlap = true;
    request.kill_on_bad_exit = false;
    // Each node's end says what failed there; sbcast fails with 1, as Slurm's.
    request.quiet = true;
    Ok(match crate::step::run(request)? {
        0 => 0,
        _ => 1,
    })
}

/// This berth as a job's tasks reach it: inside a container, the node's wrapper at
/// /.berth/bin (the host's berth with the host's libraries); on a host, this executable.
pub(super) fn own_berth() -> String {
    let inside = format!("{}/berth", berth_agent::runner::TOOLS_IN_CONTAINER);
    match Path::new(&inside).exists() {
        true => inside,
        false => std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "berth".to_string()),
    }
}

/// One node's end of sbcast: writes its input (the file, `size` bytes) beside the
/// destination, gives it its mode (and times), and renames it into place. The node's name
/// is in every error, as the step prints each node's.
pub fn receive(args: ReceiveArgs) -> Result<i32> {
    let node = std::env::var("SLURMD_NODENAME").unwrap_or_default();
    received(&args).with_context(|| format!("sbcast: {node}"))?;
    Ok(0)
}

fn received(args: &ReceiveArgs) -> Result<()> {
    use std::io::Write;
    let dest = match args.dest.is_dir() {
        true => args.dest.join(&args.name),
        // A directory that is not there (`/scratch/new/`) is not a file's name.
        false if args.dest.as_os_str().as_encoded_bytes().ends_with(b"/") => {
            bail!("{}: no such directory", args.dest.display())
        }
        false => args.dest.clone(),
    };
    let exists = || anyhow::anyhow!("{} exists already (sbcast -f replaces it)", dest.display());
    if !args.force && dest.symlink_metadata().is_ok() {
        return Err(exists());
    }
    let mode =
        u32::from_str_radix(&args.mode, 8).with_context(|| format!("--mode={}", args.mode))?;
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = dest
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{}: names no file", dest.display()))?;
    let tmp = dir.join(format!(
        ".{}.sbcast-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("cannot write into {}", dir.display()))?;
    let written = (|| -> Result<()> {
        let got = std::io::copy(&mut std::io::stdin().lock(), &mut out)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        if got != args.size {
            bail!(
                "got {got} of the file's {} bytes: the copy was cut short",
                args.size
            );
        }
        out.flush()?;
        out.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some([mtime, atime]) = args
            .times
            .as_deref()
            .and_then(|t| <[i64; 2]>::try_from(t).ok())
        {
            let at = |s: i64| libc::timespec {
                tv_sec: s,
                tv_nsec: 0,
            };
            let times = [at(atime), at(mtime)];
            use std::os::fd::AsRawFd;
            // SAFETY: futimens(2) on the file we own, with two timespecs.
            if unsafe { libc::futimens(out.as_raw_fd(), times.as_ptr()) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        place(&tmp, &dest, args.force).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => exists(),
            _ => anyhow::anyhow!("cannot put it at {}: {e}", dest.display()),
        })
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Renames `from` to `to`: over a file there with `force`, else only where there is none.
fn place(from: &Path, to: &Path, force: bool) -> std::io::Result<()> {
    if force {
        return std::fs::rename(from, to);
    }
    use std::os::unix::ffi::OsStrExt;
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: renameat2(2) with two NUL-terminated paths.
    let renamed = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    match renamed {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}
