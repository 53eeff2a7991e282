//! berth as the commands of the batch systems its users come from: Slurm's (sbatch, srun,
//! salloc, squeue, scancel, sacct, sstat, sinfo, scontrol), LSF's (bsub, bjobs, bhist,
//! bacct, bkill, bstop, bresume, brequeue, bmod, bpeek, bqueues, bhosts, lshosts) and PBS's
//! (qsub, qstat, qdel, qhold, qrls, qsig, qrerun, qalter, pbsnodes), and Shifter's `shifter`
//! and `shifterimg` ([`shifter`]). berth acts as one when
//! started under its name (an administrator links them, `berth as --link /usr/local/bin`),
//! and as `berth as NAME ARGS`; jobs have them on their PATH. Users keep their commands and
//! the scripts and pipelines built on their output (`Job <42> is submitted to queue
//! <normal>.`, `42.server`).
//!
//! Slurm's commands are berth's own subcommands under other names, so they are translated
//! into berth's command line ([`translate`]) before it is parsed. LSF's and PBS's take their
//! own options and print their own formats ([`lsf`], [`pbs`]); the options of bsub and qsub
//! go to the controller as they are, which reads them with the same parser as `#BSUB` and
//! `#PBS` directives.

mod lsf;
mod pbs;
pub(crate) mod sbcast;
mod shifter;
mod slurm;

use anyhow::{bail, Context, Result};
use berth_api::JobInfo;
use berth_core::job::Family;
use clap::Args;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use berth_core::commands::COMMANDS;

#[derive(Args, Debug)]
pub struct AsArgs {
    /// Link each command into DIR (DIR/bsub -> this berth), as an administrator installs
    /// them; an existing file there that is not a link to berth is left alone and reported
    #[arg(long, value_name = "DIR")]
    link: Option<PathBuf>,
    /// The command to act as and its arguments; without one, the list of commands
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND [ARGS]"
    )]
    command: Vec<String>,
}

/// Slurm's commands whose failures exit with status 1 (berth's own, 125); srun's and
/// salloc's do too, but their other statuses are their programs' (a container's 125 to 127
/// among them).
/// The Slurm release berth's commands behave as (its words, columns and states).
const SLURM_VERSION: &str = "22.05.8";

const SLURM_COMMANDS: &[&str] = &[
    "sbatch", "squeue", "scancel", "sacct", "sstat", "sinfo", "scontrol", "seff", "sprio",
    "sshare", "sbcast",
];

/// Whether `name` is one of Slurm's commands, its client ones (srun, salloc) too.
fn is_slurms(name: &str) -> bool {
    SLURM_COMMANDS.contains(&name) || ["srun", "salloc"].contains(&name)
}

/// Whether berth runs as one of Slurm's commands (set by [`translate`]).
static AS_SLURM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether berth runs as one of Slurm's commands, whose failures (berth's own 125, a
/// command line it cannot take) exit with status 1, as theirs do.
pub fn as_slurm() -> bool {
    AS_SLURM.load(std::sync::atomic::Ordering::Relaxed)
}

/// The command berth runs as (set by [`translate`]), as it names itself in what it says.
static INVOKED_AS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The command berth runs as (`srun`, `bsub`, ...), if it runs as one.
pub fn invoked_as() -> Option<&'static str> {
    INVOKED_AS.get().map(String::as_str)
}

/// The name berth says things under: the command it runs as (`sbatch: warning: ...`), else
/// its own.
pub fn name() -> &'static str {
    invoked_as().unwrap_or("berth")
}

/// What a Slurm command berth runs as says of an option it does not know, in getopt's
/// words as Slurm's commands say it (`squeue: unrecognized option '--colour'`, `...: invalid
/// option -- 'Z'`), rather than berth's own subcommand's usage; `None` for another error,
/// or where berth does not run as one.
pub fn unknown_option(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let name = invoked_as().filter(|n| is_slurms(n))?;
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(option)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let said = match option.strip_prefix("--") {
        Some(_) => format!("{name}: unrecognized option '{option}'"),
        None => {
            let letter = option.trim_start_matches('-').chars().next()?;
            format!("{name}: invalid option -- '{letter}'")
        }
    };
    Some(format!(
        "{said}\nTry \"{name} --help\" for more information"
    ))
}

/// A command line that the batch system's command berth runs as cannot take, said with
/// that command's usage: it exits with that command's status for one ([`usage_status`]),
/// not berth's 125.
#[derive(Debug)]
pub struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`]: `why`, then the command's `usage`.
pub(crate) fn usage_error(why: impl std::fmt::Display, usage: &str) -> anyhow::Error {
    anyhow::Error::new(UsageError(format!("{why}\nusage: {usage}")))
}

/// The status a [`UsageError`] exits with: PBS's commands' 2, LSF's 255, Slurm's 1.
pub fn usage_status() -> i32 {
    match invoked_as() {
        _ if pbs_ids() => 2,
        Some(n) if n.starts_with('b') || n == "lshosts" => 255,
        _ => 1,
    }
}

/// Whether berth runs as one of PBS's commands, whose job ids may name their server
/// (`42.server`, `42[].server`).
pub fn pbs_ids() -> bool {
    invoked_as().is_some_and(|n| n.starts_with('q') || n.starts_with("pbs"))
}

/// Whether `args` give one of `options`: as it is, with `=VALUE`, or (a short one) with its
/// value or other flags after it (`-oJobID`, `-lX`).
fn given(args: &[OsString], options: &[&str]) -> bool {
    args.iter().any(|a| {
        let a = a.to_string_lossy();
        options.iter().any(|f| {
            a == *f || a.starts_with(&format!("{f}=")) || (f.len() == 2 && a.starts_with(f))
        })
    })
}

/// berth's own command line for `args`, a command line as typed: when started under one
/// of [`COMMANDS`]' names (or as `berth as NAME`), Slurm's become the berth subcommands
/// they are, the others `berth as NAME ...`; anything else is left as it is.
pub fn translate(args: Vec<OsString>) -> Vec<OsString> {
    let program = args
        .first()
        .map(|a| Path::new(a).file_name().unwrap_or(a.as_os_str()).to_owned());
    let (name, rest) = match program {
        Some(p) if p != "berth" && COMMANDS.iter().any(|(n, _)| p == *n) => (p, &args[1..]),
        _ => match args.get(1).zip(args.get(2)) {
            Some((a, name)) if a == "as" => (name.clone(), &args[3..]),
            _ => return args,
        },
    };
    let Some(name) = name.to_str() else {
        return args;
    };
    if SLURM_COMMANDS.contains(&name) {
        AS_SLURM.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // The Slurm whose commands berth's are (scripts that check it read `slurm X.Y.Z`).
    let slurm = is_slurms(name);
    let version =
        |a: &str| ["--version", "-V"].contains(&a) || (name, a) == ("scontrol", "version");
    if slurm && rest.len() == 1 && rest[0].to_str().is_some_and(version) {
        println!(
            "slurm {SLURM_VERSION} (berth {})",
            env!("CARGO_PKG_VERSION")
        );
        std::process::exit(0);
    }
    let _ = INVOKED_AS.set(name.to_string());
    let mut rest = rest.to_vec();
    let words = |w: &[&str]| -> Vec<OsString> { w.iter().map(OsString::from).collect() };
    let head = match name {
        "sbatch" => words(&["berth", "submit", "--sbatch"]),
        "srun" => {
            // -K's value attached, as getopt takes an optional one (-K0, -K1).
            for word in rest.iter_mut() {
                if let Some(v @ ("0" | "1")) = word.to_str().and_then(|w| w.strip_prefix("-K")) {
                    *word = format!("--kill-on-bad-exit={v}").into();
                }
            }
            words(&["berth", "step"])
        }
        "salloc" => words(&["berth", "alloc"]),
        "squeue" => {
            // squeue's own columns unless it was told others ($SQUEUE_FORMAT, as squeue
            // reads it; -l and --start have theirs): ST as R and PD, as scripts reading its
            // default output expect.
            let formatted = given(
                &rest,
                &[
                    "-o", "--format", "-O", "--Format", "--json", "-l", "--long", "--start", "-s",
                    "--steps",
                ],
            );
            let format = std::env::var("SQUEUE_FORMAT")
                .unwrap_or_else(|_| "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R".into());
            match formatted {
                true => words(&["berth", "queue"]),
                false => words(&["berth", "queue", &format!("--format={format}")]),
            }
        }
        "scancel" => words(&["berth", "cancel"]),
        "sacct" => {
            // sacct's own columns unless told others ($SACCT_FORMAT, as sacct reads it).
            let formatted = given(
                &rest,
                &[
                    "-o",
                    "--format",
                    "-b",
                    "--brief",
                    "-l",
                    "--long",
                    "-e",
                    "--helpformat",
                    "--json",
                    "-B",
                    "--batch-script",
                ],
            );
            let format = std::env::var("SACCT_FORMAT").unwrap_or_else(|_| {
                "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode".into()
            });
            match formatted {
                true => words(&["berth", "history"]),
                false => words(&["berth", "history", &format!("--format={format}")]),
            }
        }
        "sstat" => words(&["berth", "usage"]),
        "apptainer" | "singularity" => {
            // Their global options (messages' verbosity) mean nothing to berth.
            let quiet = [
                "-q",
                "--quiet",
                "-s",
                "--silent",
                "-d",
                "--debug",
                "-v",
                "--verbose",
            ];
            let skip = rest
                .iter()
                .take_while(|a| quiet.iter().any(|q| a.as_os_str() == *q))
                .count();
            rest.drain(..skip);
            let text: Vec<&str> = rest.iter().filter_map(|a| a.to_str()).collect();
            // An image of the store: docker://NAME is NAME.
            let image = |w: &str| OsString::from(w.trim_start_matches("docker://"));
            // The berth command line's head, and the image word that is all its rest.
            let (head, only): (&[&str], Option<OsString>) = match text.as_slice() {
                ["exec" | "run" | "shell", ..] => (&["berth"], None),
                // No image file is written: the image goes into berth's store.
                ["pull", words @ ..] => match words.iter().find(|w| w.starts_with("docker://")) {
                    Some(w) => (&["berth", "image", "pull"], Some(image(w))),
                    None => (&["berth", "as", name], None),
                },
                ["inspect", one] => (&["berth", "image", "inspect"], Some(image(one))),
                _ => (&["berth", "as", name], None),
            };
            let head = words(head);
            if let Some(only) = only {
                rest = vec![only];
            }
            if head.len() == 1 {
                apptainer_options(&mut rest, 1);
            }
            head
        }
        "scontrol" => {
            // Its options, wherever they are: -o (a line per record) is berth's
            // --oneliner; -d (details) its --details, for a job (berth shows the rest of
            // what it adds anyway).
            let (mut oneliner, mut details) = (false, false);
            rest.retain(|a| match a.to_str() {
                Some("-o" | "--oneliner") => {
                    oneliner = true;
                    false
                }
                Some("-d" | "--details" | "-dd") => {
                    details = true;
                    false
                }
                _ => true,
            });
            // (Only what shows records has lines to join.)
            if oneliner && rest.first().is_some_and(|w| w == "show") {
                rest.insert(rest.len().min(2), "--oneliner".into());
            }
            let job = |w: &OsString| {
                (w.to_str()).is_some_and(|w| w.to_ascii_lowercase().starts_with("job"))
            };
            if details && rest.first().is_some_and(|w| w == "show") && rest.get(1).is_some_and(job)
            {
                rest.insert(2, "--details".into());
            }
            let word = |i: usize| {
                rest.get(i)
                    .and_then(|a| a.to_str())
                    .unwrap_or("")
                    .to_string()
            };
            let (first, mut second) = (word(0), word(1));
            // `show job=ID` (or jobid=ID): `show job ID`.
            let lower = second.to_ascii_lowercase();
            if let (true, Some(id)) = (
                first == "show",
                lower.strip_prefix("job=").or(lower.strip_prefix("jobid=")),
            ) {
                rest.splice(1..2, [OsString::from("job"), OsString::from(id)]);
                second = "job".into();
            }
            // `update NodeName=...`: a node's state, scontrol's own (below), not a job's.
            let node = second.to_ascii_lowercase().starts_with("nodename=");
            let (sub, drop) = match (first.as_str(), second.as_str()) {
                ("update", _) if node => {
                    return words(&["berth", "as", "scontrol"])
                        .into_iter()
                        .chain(rest)
                        .collect()
                }
                ("show", "hostnames" | "hostname") => ("hostnames", 2),
                ("show", "hostlist") => ("hostlist", 2),
                ("show", "job" | "jobs") => ("show", 2),
                // The owner's hold (root's too); a requeue that holds the job.
                ("uhold" | "requeuehold", _) => {
                    let flagged = match first.as_str() {
                        "uhold" => ["berth", "hold", "--owner"],
                        _ => ["berth", "requeue", "--hold"],
                    };
                    // requeuehold's State=SpecialExit: held all the same (berth has no
                    // SPECIAL_EXIT state of its own).
                    let special = |a: &OsString| {
                        a.to_str()
                            .is_some_and(|a| a.eq_ignore_ascii_case("state=specialexit"))
                    };
                    rest.retain(|a| !special(a));
                    return words(&flagged).into_iter().chain(rest.drain(1..)).collect();
                }
                ("hold" | "release" | "requeue" | "suspend" | "resume" | "update", _) => {
                    (first.as_str(), 1)
                }
                _ => {
                    return words(&["berth", "as", "scontrol"])
                        .into_iter()
                        .chain(rest)
                        .collect()
                }
            };
            rest.drain(..drop.min(rest.len()));
            words(&["berth", sub])
        }
        _ => words(&["berth", "as", name]),
    };
    head.into_iter().chain(rest).collect()
}

/// `berth as`: the list, `--link`, or one of the LSF and PBS commands (Slurm's, and
/// scontrol's known verbs, were translated before).
pub fn run(args: AsArgs) -> Result<i32> {
    if let Some(dir) = args.link {
        if !args.command.is_empty() {
            bail!("--link makes links; it runs no command");
        }
        return link(&dir);
    }
    let Some((name, rest)) = args.command.split_first() else {
        for (name, what) in COMMANDS {
            println!("{name:<10} {what}");
        }
        return Ok(0);
    };
    let rest = rest.to_vec();
    match name.as_str() {
        "bsub" => lsf::bsub(rest),
        "bjobs" => lsf::bjobs(rest),
        "bhist" => lsf::bhist(rest),
        "bacct" => lsf::bacct(rest),
        "bkill" => lsf::bkill(rest),
        "bstop" => lsf::verb("suspend", "stopped", rest),
        "bresume" => lsf::verb("resume", "resumed", rest),
        "brequeue" => lsf::verb("requeue", "requeued", rest),
        "bmod" => lsf::bmod(rest),
        "bpeek" => lsf::bpeek(rest),
        "bwait" => lsf::bwait(rest),
        "bqueues" => lsf::bqueues(rest),
        "bhosts" => lsf::bhosts(rest),
        "lshosts" => lsf::lshosts(rest),
        "blaunch" => lsf::blaunch(rest),
        "qsub" => pbs::qsub(rest),
        "qstat" => pbs::qstat(rest),
        "qdel" => pbs::verb("cancel", rest),
        "qhold" => pbs::verb("hold", rest),
        "qrls" => pbs::verb("release", rest),
        "qrerun" => pbs::verb("requeue", rest),
        "qalter" => pbs::qalter(rest),
        "qsig" => pbs::qsig(rest),
        "pbsnodes" => pbs::pbsnodes(rest),
        "pbsdsh" => pbs::pbsdsh(rest),
        "sinfo" => slurm::sinfo(rest),
        "scontrol" => slurm::scontrol(rest),
        "seff" => slurm::seff(rest),
        "sprio" => slurm::sprio(rest),
        "sshare" => slurm::sshare(rest),
        "sbcast" => sbcast::sbcast(rest),
        "shifter" => shifter::shifter(rest),
        "shifterimg" => shifter::shifterimg(rest),
        "apptainer" | "singularity" => apptainer(name, rest),
        other => bail!(
            "berth does not act as '{other}': it acts as {}",
            COMMANDS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Apptainer's short options where berth's differ, before the image (from `words[from]`):
/// `-e` is its --cleanenv (berth's --env, docker's), `-H` its --home, and `-u` its
/// --userns, which berth's containers always have (dropped).
fn apptainer_options(words: &mut Vec<OsString>, from: usize) {
    const VALUED: [&str; 17] = [
        "-B",
        "--bind",
        "--env",
        "--env-file",
        "--pwd",
        "--home",
        "--cpus",
        "--cpuset-cpus",
        "--memory",
        "--pids-limit",
        "--gpus",
        "--network",
        "--user",
        "--hostname",
        "--cwd",
        "--shell",
        "-s",
    ];
    let mut i = from;
    while let Some(word) = words.get_mut(i) {
        match word.to_str() {
            Some("-e") => *word = "--cleanenv".into(),
            Some("-H") => *word = "--home".into(),
            Some("-u" | "--userns") => {
                words.remove(i);
                continue;
            }
            Some(w) if VALUED.contains(&w) => i += 1,
            Some(w) if w.starts_with('-') => {}
            // The image.
            _ => return,
        }
        i += 1;
    }
}

/// Apptainer's (and Singularity's) commands berth's own do not stand for (those were
/// translated before): version, and what berth does not do, refused with what it does.
fn apptainer(name: &str, words: Vec<String>) -> Result<i32> {
    match words.first().map(String::as_str) {
        Some("version" | "--version") => {
            println!("berth {} (as {name})", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Some("pull") => bail!("{name} pull: berth pulls docker://REGISTRY/REPO:TAG into its store (no image file is written); run it as docker://REGISTRY/REPO:TAG afterwards"),
        Some("inspect") => bail!("{name} inspect: berth shows an image of its store as it has it: {name} inspect IMAGE"),
        Some(other) => bail!("berth acts as {name} exec, run, shell, pull (docker://), inspect and version; not {name} {other}"),
        None => bail!("usage: {name} exec|run|shell [OPTIONS] IMAGE [COMMAND ARGS...]"),
    }
}

/// `berth as --link DIR`: DIR/NAME -> this berth for each command, as `ln -s` would.
fn link(dir: &Path) -> Result<i32> {
    let berth = std::env::current_exe().context("cannot find this berth's own path")?;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => anyhow::bail!("--link {}: not a directory", dir.display()),
        Err(e) => anyhow::bail!(
            "--link {}: {e}: name a directory that exists (one on the users' PATH, /usr/local/bin say)",
            dir.display()
        ),
    }
    let mut skipped = 0;
    for (name, _) in COMMANDS {
        let path = dir.join(name);
        match std::fs::read_link(&path) {
            Ok(target) if target == berth => continue,
            Ok(_) | Err(_) if path.symlink_metadata().is_ok() => {
                berth_core::say!(
                    "berth: {} exists and is not a link to {}: left alone",
                    path.display(),
                    berth.display()
                );
                skipped += 1;
                continue;
            }
            _ => {}
        }
        std::os::unix::fs::symlink(&berth, &path)
            .with_context(|| format!("cannot link {} to {}", path.display(), berth.display()))?;
        println!("{} -> {}", path.display(), berth.display());
    }
    Ok(if skipped > 0 { 1 } else { 0 })
}

/// Takes the flag `name` (a word of its own) out of `words`; whether it was there.
fn flag(words: &mut Vec<String>, name: &str) -> bool {
    let before = words.len();
    words.retain(|w| w != name);
    words.len() != before
}

/// Takes `name VALUE` out of `words`: the value, if the flag was there.
fn value(words: &mut Vec<String>, name: &str) -> Result<Option<String>> {
    let Some(at) = words.iter().position(|w| w == name) else {
        return Ok(None);
    };
    if at + 1 >= words.len() {
        bail!("{name} needs a value");
    }
    let v = words.remove(at + 1);
    words.remove(at);
    Ok(Some(v))
}

/// `words` with short options split as getopt(3) reads them, as LSF's commands take them:
/// `-aw` is `-a -w`, `-uall` and `-sKILL` are `-u all` and `-s KILL`. `flags` are the
/// command's one-letter flags, `valued` its one-letter options that take a value. A word
/// that does not split that way wholly (`-noheader`, an option of its own) is kept, as are
/// `whole`'s (LSF's longer options that would split into letters the command knows: bjobs
/// `-sum` is no `-s -u m`), and the value of an option given apart (`-J -x`).
fn getopt_words(words: Vec<String>, flags: &str, valued: &str, whole: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    for word in words {
        if whole.contains(&word.as_str()) {
            out.push(word);
            continue;
        }
        let value_of_previous = out
            .last()
            .is_some_and(|p| p.len() == 2 && p.starts_with('-') && valued.contains(&p[1..]));
        let Some(letters) = word.strip_prefix('-').filter(|l| l.len() > 1) else {
            out.push(word);
            continue;
        };
        if value_of_previous || letters.starts_with('-') {
            out.push(word);
            continue;
        }
        let mut split = Vec::new();
        for (at, c) in letters.char_indices() {
            if flags.contains(c) {
                split.push(format!("-{c}"));
            } else if valued.contains(c) {
                split.push(format!("-{c}"));
                let rest = &letters[at + c.len_utf8()..];
                if !rest.is_empty() {
                    split.push(rest.to_string());
                }
                break;
            } else {
                split.clear();
                break;
            }
        }
        match split.is_empty() {
            true => out.push(word),
            false => out.extend(split),
        }
    }
    out
}

/// Lists of an array's elements in one id, as LSF and PBS Pro write them (`42[1-3,7]`,
/// `42[2-10:2].server`), each element on its own (`42[1]`, `42[2]`, ...; the server kept
/// on each); other words as they are.
fn element_lists(words: Vec<String>) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(words.len());
    for word in words {
        let list = word
            .split_once('[')
            .and_then(|(id, rest)| Some((id, rest.split_once(']')?)))
            .filter(|(id, (list, suffix))| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_digit())
                    && list.contains([',', '-'])
                    && (suffix.is_empty() || suffix.starts_with('.'))
            });
        let Some((id, (list, suffix))) = list else {
            out.push(word);
            continue;
        };
        let spec =
            berth_core::job::ArraySpec::parse(list).map_err(|e| anyhow::anyhow!("{word}: {e}"))?;
        out.extend((spec.indices().into_iter()).map(|i| format!("{id}[{i}]{suffix}")));
    }
    Ok(out)
}

/// Fails on any option left in `words` (after the command took its own).
fn no_other_options(command: &str, words: &[String], usage: &str) -> Result<()> {
    if let Some(w) = words.iter().find(|w| w.starts_with('-') && w.len() > 1) {
        return Err(usage_error(
            format!("{command}: berth does not know the option {w}"),
            usage,
        ));
    }
    Ok(())
}

/// The job script on standard input (`bsub < job.sh`, `qsub < job.sh`).
fn script_from_stdin(command: &str) -> Result<String> {
    use std::io::{IsTerminal, Read};
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("{command}: no job: name a script or command, or give a script on standard input ({command} < job.sh)");
    }
    let mut bytes = Vec::new();
    stdin
        .read_to_end(&mut bytes)
        .context("cannot read the job script from standard input")?;
    let script = crate::batch::script_text(bytes, "stdin")?;
    if script.trim().is_empty() {
        bail!("standard input holds no job script");
    }
    Ok(script)
}

/// A script running `command` as the shell would run it typed (each word quoted), in the
/// shell's place (`exec`): the job's signals (qdel's SIGTERM, qsig's) are the program's, as
/// an executable job's are in PBS.
fn command_script(command: &[String]) -> String {
    let quoted: Vec<String> = command
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            match plain {
                true => w.clone(),
                false => format!("'{}'", w.replace('\'', r"'\''")),
            }
        })
        .collect();
    format!("#!/bin/sh\nexec {}\n", quoted.join(" "))
}

/// The jobs the controller has now (pending, running, suspended).
fn active_jobs() -> Result<Vec<JobInfo>> {
    crate::batch::active_jobs(None, false)
}

/// Jobs that had not ended by `since` (Unix seconds): those that ended since, and the
/// unfinished ones (which the callers also have from the queue).
fn ended_since(since: u64) -> Result<Vec<JobInfo>> {
    crate::client::request("GET", &format!("/v1/history?since={since}"), None::<&()>)
}

/// The calling user's name.
fn me() -> Result<String> {
    Ok(berth_runtime::Identity::current()?.user)
}

pub(crate) use berth_agent::runner::{local, slurm_timestamp, MONTHS};

/// A record of `Key=Value` lines on one line, as scontrol -o prints it.
pub(crate) fn one_line(block: &str) -> String {
    block.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) use berth_agent::runner::ctime;

/// The jobs `specs` name (ids as LSF and PBS write them: an array's id for all its tasks),
/// ended or not; `unknown` reports each the controller never had. Also whether it had all.
fn named(specs: &[String], unknown: impl Fn(&str)) -> Result<(Vec<JobInfo>, bool)> {
    let (mut jobs, mut all) = (Vec::new(), true);
    for spec in specs {
        match crate::batch::named_jobs(std::slice::from_ref(spec)) {
            Ok(found) => jobs.extend(found),
            Err(e) if crate::client::is_not_found(&e) => {
                unknown(spec);
                all = false;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((jobs, all))
}

/// bmod and qalter: `[options] JOBID`, the options in `family`'s words, checked here for
/// their shape and by the controller for the rest. The job, as typed.
fn alter(family: Family, words: Vec<String>) -> Result<String> {
    let command = family.command();
    let Some((spec, options)) = words.split_last() else {
        bail!("name the job: [options] JOBID");
    };
    let (_, end) = berth_core::job::leading_options(family, options)?;
    if end != options.len() || spec.starts_with('-') {
        bail!("{command}'s options come first, then the job: [options] JOBID");
    }
    let syntax = match family {
        Family::Lsf => berth_api::OptionSyntax::Bsub,
        _ => berth_api::OptionSyntax::Qsub,
    };
    crate::batch::update_job(spec, options.to_vec(), syntax, None)?;
    Ok(spec.clone())
}

/// Whose jobs `-u USER` asks for: `all` (everyone's), a user, or, without one, the caller.
fn whose(user: Option<&str>) -> Result<Option<String>> {
    Ok(match user {
        Some("all") => None,
        Some(u) => Some(u.to_string()),
        None => Some(me()?),
    })
}

/// The file name of `path`, which names a job after its script or command (and a step in
/// sacct after its program).
pub(crate) fn base_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or(path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// An interactive job (`bsub -Is`, `qsub -I`): an allocation with the command's options
/// and one task of `argv` on this terminal (`pty`) or on its standard streams, as
/// `berth step` outside a job runs it, in `cwd` (`None`: this client's). The task gets all
/// the job's CPUs on its node.
fn interactive_job(
    syntax: berth_api::OptionSyntax,
    mut options: Vec<String>,
    argv: Vec<String>,
    pty: bool,
    cwd: Option<String>,
) -> Result<i32> {
    // The allocation's own script prints nothing: the job's output is this terminal's (no
    // file of its own for either stream: PBS's jobs have two by default).
    options.extend(["-o", "/dev/null", "-e", "/dev/null"].map(String::from));
    let request = berth_api::StepRequest {
        allocate: Some(options),
        allocate_syntax: syntax,
        cpu_bind: false,
        pty,
        quiet: true,
        ..berth_api::StepRequest::new(
            argv,
            crate::step::environment(),
            cwd.map_or_else(crate::step::current_dir, Ok)?,
        )
    };
    crate::step::run(request)
}

/// The cluster's nodes, or those named (each must exist).
fn nodes_named(names: &[String]) -> Result<Vec<berth_api::NodeInfo>> {
    let mut nodes: Vec<berth_api::NodeInfo> =
        crate::client::request("GET", "/v1/nodes", None::<&()>)?;
    if let Some(missing) = names
        .iter()
        .find(|n| !nodes.iter().any(|node| node.name == **n))
    {
        bail!(
            "{missing}: no such host; the hosts are {}",
            nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    nodes.retain(|n| names.is_empty() || names.contains(&n.name));
    Ok(nodes)
}

/// The CPUs job `j` has on each of its nodes, when they are the same on all of them.
fn cpus_per_node(j: &JobInfo) -> Option<u64> {
    let nodes = j.nodes.len() as u64;
    (nodes > 0 && j.cpus % nodes == 0).then(|| j.cpus / nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_elements_are_each_element() {
        let words = ["42[1-3,7]", "5", "6[2]", "0", "9[2-6:2].srv", "8[]"];
        assert_eq!(
            element_lists(words.map(String::from).to_vec()).unwrap(),
            [
                "42[1]", "42[2]", "42[3]", "42[7]", "5", "6[2]", "0", "9[2].srv", "9[4].srv",
                "9[6].srv", "8[]"
            ]
        );
        assert!(element_lists(vec!["42[x-y]".into()]).is_err());
    }

    fn translated(line: &str) -> String {
        let args = line.split(' ').map(OsString::from).collect();
        translate(args)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn short_options_split_as_getopt_reads_them() {
        let split = |line: &str| {
            let words = line.split(' ').map(String::from).collect();
            getopt_words(words, "adlw", "uJs", &["-sum"]).join(" ")
        };
        assert_eq!(split("-aw 12"), "-a -w 12");
        assert_eq!(split("-uall -al"), "-u all -a -l");
        assert_eq!(split("-sKILL 3"), "-s KILL 3");
        assert_eq!(split("-Jsleep* -d"), "-J sleep* -d");
        // Options of their own, values given apart, and what does not split wholly stay.
        assert_eq!(split("-noheader -J -aw -x -ax"), "-noheader -J -aw -x -ax");
        assert_eq!(split("-u -w --all"), "-u -w --all");
        assert_eq!(split("-sum -al"), "-sum -a -l");
    }

    #[test]
    fn commands_become_berth_command_lines() {
        for (typed, berth) in [
            (
                "/usr/local/bin/sbatch -n 2 job.sh",
                "berth submit --sbatch -n 2 job.sh",
            ),
            ("srun -n1 true", "berth step -n1 true"),
            (
                "srun -K0 -n2 true",
                "berth step --kill-on-bad-exit=0 -n2 true",
            ),
            ("salloc -N 2 bash", "berth alloc -N 2 bash"),
            ("sstat -j 42 -P", "berth usage -j 42 -P"),
            (
                "berth as squeue --me",
                "berth queue --format=%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R --me",
            ),
            ("squeue -h -o %i", "berth queue -h -o %i"),
            ("squeue --format=%T", "berth queue --format=%T"),
            ("squeue -l", "berth queue -l"),
            ("squeue --start", "berth queue --start"),
            ("sinfo", "berth as sinfo"),
            ("sinfo -N --json", "berth as sinfo -N --json"),
            ("scontrol show node n1", "berth as scontrol show node n1"),
            ("scontrol show hostnames n[1-2]", "berth hostnames n[1-2]"),
            ("scontrol show job 4", "berth show 4"),
            (
                "scontrol update JobId=4 TimeLimit=5",
                "berth update JobId=4 TimeLimit=5",
            ),
            ("scontrol ping", "berth as scontrol ping"),
            (
                "scontrol -o show job 4 -d",
                "berth show --details --oneliner 4",
            ),
            ("scontrol -d show JobId=4", "berth show 4 --details"),
            ("scontrol -d show node n1", "berth as scontrol show node n1"),
            ("scontrol -o hold 4", "berth hold 4"),
            (
                "scontrol requeuehold State=SpecialExit 4",
                "berth requeue --hold 4",
            ),
            (
                "scontrol -o show node",
                "berth as scontrol show node --oneliner",
            ),
            ("bsub -n 2 sleep 1", "berth as bsub -n 2 sleep 1"),
            ("berth as qstat -f 4", "berth as qstat -f 4"),
            ("berth submit job.sh", "berth submit job.sh"),
            ("berth as", "berth as"),
            ("berth as --link /tmp/x", "berth as --link /tmp/x"),
            ("./berth queue", "./berth queue"),
            (
                "apptainer exec -B /data app.sif python x.py",
                "berth exec -B /data app.sif python x.py",
            ),
            ("singularity -s run app.sif a", "berth run app.sif a"),
            (
                "apptainer exec -B /a -e -H /h:/home/me app.sif env -e",
                "berth exec -B /a --cleanenv --home /h:/home/me app.sif env -e",
            ),
            (
                "apptainer shell --env A=1 -e x",
                "berth shell --env A=1 --cleanenv x",
            ),
            (
                "apptainer exec -u --hostname h --cwd /etc -e --userns x -u",
                "berth exec --hostname h --cwd /etc --cleanenv x -u",
            ),
            (
                "apptainer shell -s /bin/sh -e x",
                "berth shell -s /bin/sh --cleanenv x",
            ),
            ("berth as apptainer --debug shell x", "berth shell x"),
            (
                "apptainer pull --force x.sif docker://lab/x:1",
                "berth image pull lab/x:1",
            ),
            ("apptainer pull x.sif", "berth as apptainer pull x.sif"),
            ("singularity inspect docker://x", "berth image inspect x"),
            ("apptainer version", "berth as apptainer version"),
            ("shifter --image=x true", "berth as shifter --image=x true"),
        ] {
            assert_eq!(translated(typed), berth, "{typed}");
        }
    }

    #[test]
    fn commands_are_quoted_as_typed() {
        let words: Vec<String> = ["echo", "a b", "it's", "$HOME", "x=1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            command_script(&words),
            "#!/bin/sh\nexec echo 'a b' 'it'\\''s' '$HOME' x=1\n"
        );
    }
}
