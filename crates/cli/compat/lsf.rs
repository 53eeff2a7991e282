//! LSF's commands: bsub, bjobs, bkill, bstop, bresume, brequeue, bqueues, bhosts, lshosts,
//! with LSF's messages, columns and states (PEND, PSUSP, RUN, USUSP, DONE, EXIT).

use super::*;
use crate::batch::{self, Submission};
use berth_api::{OptionSyntax, PartitionInfo};
use berth_core::job::{leading_options, DependencyKind};
use berth_sched::{DepStatus, TermState};
use std::io::Write;

const BSUB_USAGE: &str = "bsub [options] command [arguments]   (the command is the job)
       bsub [options] < job.sh               (the script's #BSUB lines are read)
       bsub -Is|-Ip|-I [options] command     (an interactive job on this terminal)
options: bsub's (-n -W -J -o -oo -e -eo -i -q -R -M -w -m -P -cwd -gpu -x -r -H -b -K
-wa -wt ...); the image comes from the script (#BERTH --image, APPLICATION=) or $BERTH_IMAGE";

/// How long LSF keeps showing finished jobs (its CLEAN_PERIOD default), in seconds.
const CLEAN_PERIOD: u64 = 3600;

pub fn bsub(words: Vec<String>) -> Result<i32> {
    if matches!(words.first().map(String::as_str), Some("-h" | "--help")) {
        println!("usage: {BSUB_USAGE}");
        return Ok(0);
    }
    let (options, end) =
        leading_options(Family::Lsf, &words).map_err(|e| super::usage_error(e, BSUB_USAGE))?;
    let mut interactive = None;
    let mut args = Vec::new();
    for (name, taken) in options {
        match name {
            "I" | "Is" | "Ip" => interactive = Some(name),
            // The input file must be there, as bsub checks (one named by %J or %I is a
            // file per job or element, there by the time each starts).
            "i" => {
                let file = match &taken[..] {
                    [_, file] => file.clone(),
                    [joined] => joined.trim_start_matches("-i").into(),
                    _ => String::new(),
                };
                if !file.contains('%') && !std::path::Path::new(&file).exists() {
                    return Err(not_submitted(anyhow::anyhow!(
                        "{file}: No such file or directory"
                    )));
                }
                args.extend(taken)
            }
            _ => args.extend(taken),
        }
    }
    let command = &words[end..];
    if let Some(mode) = interactive {
        if command.is_empty() {
            bail!("bsub -{mode}: name the command to run, e.g. bsub -{mode} bash");
        }
        // Through the shell, as a batch job's words are (`bsub -I "a | b"`, `exit 4`, $VARS).
        let line = vec!["/bin/sh".into(), "-c".into(), command.join(" ")];
        return interactive_job(OptionSyntax::Bsub, args, line, mode != "I", None);
    }
    let (script, name) = match command.first() {
        None => (script_from_stdin("bsub")?, "stdin".to_string()),
        Some(program) => {
            let directives = std::fs::read_to_string(program)
                .is_ok_and(|t| t.lines().any(|l| l.starts_with("#BSUB")));
            if directives {
                berth_core::say!("bsub: warning: {program} runs as the job's command, so its #BSUB lines are not read; bsub reads them from a script on standard input (bsub < {program})");
            }
            // LSF's way: the words joined, for the shell to read (`bsub "a | b"`, `bsub a \|
            // b`); the job named by the whole line.
            let line = command.join(" ");
            (format!("#!/bin/sh\n{line}\n"), line)
        }
    };
    let resp = batch::send(Submission {
        script,
        name,
        options: args,
        syntax: OptionSyntax::Bsub,
        script_args: Vec::new(),
        path: None,
    })
    .map_err(not_submitted)?;
    let queue = match resp.default_partition {
        true => "default queue",
        false => "queue",
    };
    println!(
        "Job <{}> is submitted to {queue} <{}>.",
        resp.job_id, resp.partition
    );
    if !resp.wait {
        return Ok(0);
    }
    println!("<<Waiting for dispatch ...>>");
    let _ = std::io::stdout().flush();
    let code = batch::wait_for_jobs_as(resp.job_id, resp.jobs, true)?;
    println!("<<Job is finished>>");
    Ok(code)
}

/// A submission refused, as bsub says it: `WHY. Job not submitted.`
fn not_submitted(e: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "{}. Job not submitted.",
        format!("{e:#}").trim_end_matches('.')
    )
}

/// bjobs -A: a line for each array among `jobs`, how many of its elements are in each
/// state, all of them (those ended too), as LSF counts them.
fn array_summary(out: &mut impl Write, jobs: &[JobInfo], wide: bool, noheader: bool) -> Result<()> {
    // Each column and its width (negative: aligned left); the states' from the fifth on.
    const COLUMNS: [(&str, isize); 11] = [
        ("JOBID", -7),
        ("ARRAY_SPEC", -11),
        ("OWNER", -7),
        ("NJOBS", 5),
        ("PEND", 4),
        ("DONE", 4),
        ("RUN", 4),
        ("EXIT", 4),
        ("SSUSP", 5),
        ("USUSP", 5),
        ("PSUSP", 5),
    ];
    let line = |values: Vec<String>| -> String {
        let cells = values.iter().zip(COLUMNS).map(|(v, (_, w))| match w {
            w if w < 0 => format!("{v:<0$}", w.unsigned_abs()),
            w => format!("{v:>0$}", w.unsigned_abs()),
        });
        cells.collect::<Vec<_>>().join(" ")
    };
    let fit = |v: String, w: usize| if wide { v } else { cut(&v, w) };
    if !noheader {
        writeln!(
            out,
            "{}",
            line(COLUMNS.map(|(name, _)| name.to_string()).to_vec())
        )?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for j in jobs {
        let Some(array) = j.array_job_id.filter(|a| seen.insert(*a)) else {
            continue;
        };
        let elements = batch::array_tasks(array)?;
        // As bsub -J took it: NAME[INDICES]%LIMIT.
        let submitted = j.array_spec.as_deref().unwrap_or_default();
        let spec = match submitted.split_once('%') {
            Some((indices, limit)) => format!("{}[{indices}]%{limit}", j.name),
            None => format!("{}[{submitted}]", j.name),
        };
        let mut values = vec![
            array.to_string(),
            fit(spec, 11),
            fit(j.user.clone(), 7),
            elements.len().to_string(),
        ];
        values.extend(COLUMNS[4..].iter().map(|(state, _)| {
            let n = elements.iter().filter(|e| stat(e) == *state).count();
            n.to_string()
        }));
        writeln!(out, "{}", line(values))?;
    }
    Ok(())
}

/// LSF's state of a job.
fn stat(j: &JobInfo) -> &'static str {
    match j.state.as_str() {
        "PENDING" if j.held => "PSUSP",
        "PENDING" => "PEND",
        "RUNNING" => "RUN",
        "SUSPENDED" => "USUSP",
        "COMPLETED" => "DONE",
        _ => "EXIT",
    }
}

/// The job's id as LSF shows it (an array's id; its index goes with the name).
fn lsf_id(j: &JobInfo) -> u64 {
    j.array_job_id.unwrap_or(j.id)
}

/// The job's name as LSF shows it: an array task's as `NAME[INDEX]`.
fn lsf_name(j: &JobInfo) -> String {
    match j.array_task_id {
        Some(i) => format!("{}[{i}]", j.name),
        None => j.name.clone(),
    }
}

/// The job's id in LSF's words, with its index: `42`, `42[3]`.
fn lsf_spec(j: &JobInfo) -> String {
    match j.array_task_id {
        Some(i) => format!("{}[{i}]", lsf_id(j)),
        None => j.id.to_string(),
    }
}

/// `Dec  3 10:00`, as bjobs prints times.
fn short_time(t: u64) -> String {
    let (_, mo, d, h, mi, _, _) = local(t);
    format!("{} {d:>2} {h:02}:{mi:02}", MONTHS[mo as usize - 1])
}

/// The hosts a job runs on, as bjobs' EXEC_HOST lists them: `4*host` for 4 slots.
fn exec_hosts(j: &JobInfo) -> Vec<String> {
    let per = cpus_per_node(j).unwrap_or(1);
    j.nodes
        .iter()
        .map(|n| match per {
            1 => n.clone(),
            k => format!("{k}*{n}"),
        })
        .collect()
}

/// Names as LSF's long forms list them: `<a> <b>`.
fn bracketed(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("<{n}>"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// ` from host <H>` where the job's submitting host is known, as `Submitted` lines say it.
fn from_host(j: &JobInfo) -> String {
    match j.submit_host.as_str() {
        "" => String::new(),
        h => format!(" from host <{h}>"),
    }
}

/// A column cut to `width` as LSF cuts it, with `*` in front of what is left.
fn cut(v: &str, width: usize) -> String {
    let n = v.chars().count();
    match n > width {
        true => format!("*{}", v.chars().skip(n - width + 1).collect::<String>()),
        false => v.to_string(),
    }
}

/// One bjobs `-o` field of a job.
fn field(name: &str, j: &JobInfo) -> Option<String> {
    let dash = || "-".to_string();
    Some(match name {
        "jobid" | "id" => lsf_id(j).to_string(),
        "jobindex" => j.array_task_id.unwrap_or(0).to_string(),
        "stat" => stat(j).to_string(),
        "user" => j.user.clone(),
        "queue" => j.partition.clone(),
        "job_name" | "name" => lsf_name(j),
        "from_host" => match j.submit_host.as_str() {
            "" => dash(),
            h => h.to_string(),
        },
        "exec_host" => match exec_hosts(j).join(":") {
            h if h.is_empty() => dash(),
            h => h,
        },
        "nexec_host" => j.nodes.len().to_string(),
        "slots" | "nalloc_slot" => j.cpus.to_string(),
        "submit_time" => short_time(j.submit_time),
        "start_time" => j.start_time.map_or_else(dash, short_time),
        "finish_time" => j.end_time.map_or_else(dash, short_time),
        "run_time" => format!("{} second(s)", batch::elapsed(j)),
        "cpu_used" => j
            .cpu_usec
            .map_or_else(dash, |u| format!("{:.1} second(s)", u as f64 / 1e6)),
        "max_mem" => j.max_rss_bytes.map_or_else(dash, crate::image::human_size),
        "exit_code" => match (j.exit_code, j.signal) {
            (_, Some(sig)) => (128 + sig).to_string(),
            (Some(code), None) => code.to_string(),
            _ => dash(),
        },
        "dependency" => j.dependency_condition.clone().unwrap_or_else(dash),
        "pend_reason" => match j.state.as_str() {
            "PENDING" => j.reason.as_deref().map_or_else(dash, pending_reason),
            _ => dash(),
        },
        "time_left" => match (j.time_limit, j.start_time, j.end_time) {
            (Some(limit), Some(_), None) => {
                batch::duration(limit.saturating_sub(batch::elapsed(j)))
            }
            _ => dash(),
        },
        _ => return None,
    })
}

/// The fields `-o` takes, LSF's aliases too: the names [`field`] answers.
const FIELDS: &[&str] = &[
    "jobid",
    "id",
    "jobindex",
    "stat",
    "user",
    "queue",
    "job_name",
    "name",
    "from_host",
    "exec_host",
    "nexec_host",
    "slots",
    "nalloc_slot",
    "submit_time",
    "start_time",
    "finish_time",
    "run_time",
    "cpu_used",
    "max_mem",
    "exit_code",
    "dependency",
    "pend_reason",
    "time_left",
];

/// bjobs `-o`: the fields, each with its width if given (and whether it is aligned right),
/// and what goes between them.
#[derive(Debug, PartialEq)]
struct Format {
    columns: Vec<(String, Option<(usize, bool)>)>,
    delimiter: String,
}

/// bjobs `-o "FIELD[:[-]WIDTH] ... [delimiter='C']"` (`-`: aligned right).
fn parse_format(text: &str) -> Result<Format> {
    let mut columns = Vec::new();
    let mut delimiter = " ".to_string();
    for word in text.split_whitespace() {
        if let Some(d) = word.strip_prefix("delimiter=") {
            delimiter = d.trim_matches(|c| c == '\'' || c == '"').to_string();
            continue;
        }
        let (name, width) = match word.split_once(':') {
            Some((n, w)) => {
                let (w, right) = match w.strip_prefix('-') {
                    Some(w) => (w, true),
                    None => (w, false),
                };
                // (A unit for the time fields: S, M, H or D.)
                let w = w.trim_end_matches(['S', 'M', 'H', 'D']);
                let width = w.parse::<usize>().with_context(|| {
                    format!("-o {word}: the width is a number, after a - to align it right")
                })?;
                (n, Some((width, right)))
            }
            None => (word, None),
        };
        let name = name.to_ascii_lowercase();
        if !FIELDS.contains(&name.as_str()) {
            bail!(
                "bjobs -o: berth knows the fields {}, not '{name}'",
                FIELDS.join(" ")
            );
        }
        columns.push((name, width));
    }
    if columns.is_empty() {
        bail!("bjobs -o: name the fields, e.g. -o \"jobid stat job_name\"");
    }
    Ok(Format { columns, delimiter })
}

/// LSF's longer options that a command's one-letter ones would spell (`-sum`, `-app`,
/// `-stat`): kept whole, and refused as unknown, rather than split (see `getopt_words`).
const LONGER: &[&str] = &[
    "-sum", "-psum", "-sla", "-ss", "-app", "-aps", "-rusage", "-stat",
];

const BJOBS_USAGE: &str = "bjobs [-a] [-d] [-p] [-r] [-s] [-u USER|all] [-q QUEUE] [-J NAME] [-A] [-w] [-l] [-noheader] [-o \"FIELDS\"] [JOBID|JOBID[INDEX] ...]";

pub fn bjobs(words: Vec<String>) -> Result<i32> {
    let mut words = getopt_words(words, "adprsAwlh", "uqJo", LONGER);
    if flag(&mut words, "-h") {
        println!("usage: {BJOBS_USAGE}");
        return Ok(0);
    }
    let select = Selection::take(&mut words)?;
    let arrays = flag(&mut words, "-A");
    let wide = flag(&mut words, "-w");
    let long = flag(&mut words, "-l");
    let noheader = flag(&mut words, "-noheader");
    let format = value(&mut words, "-o")?
        .map(|f| parse_format(&f))
        .transpose()?;
    no_other_options("bjobs", &words, BJOBS_USAGE)?;
    let since = berth_controller::now().saturating_sub(CLEAN_PERIOD);
    let (jobs, status) = select.jobs(&element_lists(words)?, since)?;
    if jobs.is_empty() {
        return Ok(status);
    }
    let mut out = std::io::stdout().lock();
    if arrays {
        array_summary(&mut out, &jobs, wide, noheader)?;
        return Ok(status);
    }
    if long {
        for j in &jobs {
            long_form(&mut out, j)?;
        }
        return Ok(status);
    }
    if let Some(Format { columns, delimiter }) = format {
        let line = |value: &dyn Fn(&str) -> String| {
            columns
                .iter()
                .map(|(name, width)| {
                    let v = value(name);
                    match *width {
                        Some((w, false)) => format!("{:<w$}", cut(&v, w)),
                        Some((w, true)) => format!("{:>w$}", cut(&v, w)),
                        None => v,
                    }
                })
                .collect::<Vec<_>>()
                .join(&delimiter)
        };
        if !noheader {
            writeln!(out, "{}", line(&|n| n.to_ascii_uppercase()))?;
        }
        for j in &jobs {
            writeln!(out, "{}", line(&|n| field(n, j).unwrap_or_default()))?;
        }
        return Ok(status);
    }
    let fit = |v: String, w: usize| if wide { v } else { cut(&v, w) };
    if !noheader {
        writeln!(
            out,
            "{:<7} {:<7} {:<5} {:<10} {:<11} {:<11} {:<10} SUBMIT_TIME",
            "JOBID", "USER", "STAT", "QUEUE", "FROM_HOST", "EXEC_HOST", "JOB_NAME"
        )?;
    }
    for j in &jobs {
        let f = |n: &str| field(n, j).unwrap_or_default();
        let hosts = exec_hosts(j);
        writeln!(
            out,
            "{:<7} {:<7} {:<5} {:<10} {:<11} {:<11} {:<10} {}",
            f("jobid"),
            fit(f("user"), 7),
            f("stat"),
            fit(f("queue"), 10),
            fit(f("from_host"), 11),
            fit(hosts.first().cloned().unwrap_or_default(), 11),
            fit(f("job_name"), 10),
            f("submit_time")
        )?;
        // Each further host on a line of its own, under EXEC_HOST.
        for host in hosts.iter().skip(1) {
            writeln!(out, "{:44}{}", "", fit(host.clone(), 11))?;
        }
        // -p: why a pending job waits, under it.
        if select.pending && matches!(f("stat").as_str(), "PEND" | "PSUSP") {
            let reason = j.reason.as_deref().map_or("None".into(), pending_reason);
            writeln!(out, " {reason};")?;
        }
    }
    Ok(status)
}

/// The jobs bjobs and bhist list: the user's unfinished ones, or those their `-a` (with
/// those ended since a time), `-d`, `-p`, `-r`, `-s`, `-u USER|all`, `-q QUEUE`, `-J NAME`
/// and ids ask for.
struct Selection {
    all: bool,
    done: bool,
    pending: bool,
    running: bool,
    suspended: bool,
    user: Option<String>,
    queue: Option<String>,
    name: Option<String>,
}

impl Selection {
    /// Takes its options out of `words`.
    fn take(words: &mut Vec<String>) -> Result<Selection> {
        Ok(Selection {
            all: flag(words, "-a"),
            done: flag(words, "-d"),
            pending: flag(words, "-p"),
            running: flag(words, "-r"),
            suspended: flag(words, "-s"),
            user: value(words, "-u")?,
            queue: value(words, "-q")?,
            name: value(words, "-J")?,
        })
    }

    /// The jobs, running first, then suspended, pending and finished (those ended since
    /// `since`), as LSF orders them, and the status to exit with (255: an id not found).
    /// Says so when none is.
    fn jobs(&self, ids: &[String], since: u64) -> Result<(Vec<JobInfo>, i32)> {
        let (mut jobs, status) = if ids.is_empty() {
            let mut jobs = active_jobs()?;
            if self.all || self.done {
                jobs.extend(ended_since(since)?);
            }
            let user = whose(self.user.as_deref())?;
            jobs.retain(|j| user.as_ref().is_none_or(|u| *u == j.user));
            (jobs, 0)
        } else {
            let (mut jobs, all_found) =
                named(ids, |spec| berth_core::say!("Job <{spec}> is not found"))?;
            if let Some(u) = self.user.as_deref().filter(|u| *u != "all") {
                jobs.retain(|j| j.user == u);
            }
            (jobs, if all_found { 0 } else { 255 })
        };
        jobs.retain(|j| {
            let s = stat(j);
            let wanted = match (self.done, self.pending, self.running, self.suspended) {
                (false, false, false, false) => {
                    self.all || !ids.is_empty() || !matches!(s, "DONE" | "EXIT")
                }
                _ => {
                    (self.done && matches!(s, "DONE" | "EXIT"))
                        || (self.pending && matches!(s, "PEND" | "PSUSP"))
                        || (self.running && s == "RUN")
                        || (self.suspended && matches!(s, "USUSP" | "PSUSP"))
                }
            };
            wanted
                && self.queue.as_ref().is_none_or(|q| *q == j.partition)
                && self.name.as_ref().is_none_or(|n| named_as(j, n))
        });
        let rank = |j: &JobInfo| match stat(j) {
            "RUN" => 0,
            "USUSP" => 1,
            "PEND" | "PSUSP" => 2,
            _ => 3,
        };
        jobs.sort_by_key(|j| (rank(j), j.id));
        jobs.dedup_by_key(|j| j.id);
        if jobs.is_empty() && ids.is_empty() {
            // In the words of the one state asked for (`-p`: No pending job found).
            let one = match (self.done, self.pending, self.running, self.suspended) {
                (true, false, false, false) => Some("done"),
                (false, true, false, false) => Some("pending"),
                (false, false, true, false) => Some("running"),
                (false, false, false, true) => Some("suspended"),
                _ => None,
            };
            let what = match one {
                Some(state) => format!("{state} job"),
                None if self.all || self.done => "job".into(),
                None => "unfinished job".into(),
            };
            berth_core::say!("No {what} found");
        }
        Ok((jobs, status))
    }
}

/// Seconds job `j` spent in each of LSF's states, as bhist sums them: PEND, PSUSP (held),
/// RUN, USUSP (suspended), SSUSP, UNKWN (berth has neither), up to its end or now.
fn state_times(j: &JobInfo) -> [u64; 6] {
    let until = j.end_time.unwrap_or_else(berth_controller::now);
    let pend = j
        .start_time
        .unwrap_or(until)
        .saturating_sub(j.submit_time)
        .saturating_sub(j.held_seconds);
    let run = j.start_time.map_or(0, |s| {
        until.saturating_sub(s).saturating_sub(j.suspended_seconds)
    });
    // A requeued job's earlier runs ran, in the time before its last start.
    let earlier: u64 = (j.earlier_runs.iter())
        .map(|r| r.end_time.saturating_sub(r.start_time))
        .sum();
    let pend = pend.saturating_sub(earlier);
    [
        pend,
        j.held_seconds,
        run + earlier,
        j.suspended_seconds,
        0,
        0,
    ]
}

const BHIST_USAGE: &str = "bhist [-a] [-d] [-p] [-r] [-s] [-u USER|all] [-q QUEUE] [-J NAME] [-l] [-w] [JOBID|JOBID[INDEX] ...]";

/// bhist: the time jobs spent in each state (`-l`: their history, event by event); the
/// user's unfinished jobs, or as `-a`, `-d`, ... choose (all of berth's history).
pub fn bhist(words: Vec<String>) -> Result<i32> {
    let mut words = getopt_words(words, "adprslwh", "uqJ", LONGER);
    if flag(&mut words, "-h") {
        println!("usage: {BHIST_USAGE}");
        return Ok(0);
    }
    let select = Selection::take(&mut words)?;
    let long = flag(&mut words, "-l");
    let wide = flag(&mut words, "-w");
    no_other_options("bhist", &words, BHIST_USAGE)?;
    let (jobs, status) = select.jobs(&element_lists(words)?, 0)?;
    if jobs.is_empty() {
        return Ok(status);
    }
    let mut out = std::io::stdout().lock();
    if long {
        for j in &jobs {
            history_form(&mut out, j)?;
        }
        return Ok(status);
    }
    writeln!(out, "Summary of time in seconds spent in various states:")?;
    writeln!(
        out,
        "{:<7} {:<7} {:<9} {:<7} {:<7} {:<7} {:<7} {:<7} {:<7} TOTAL",
        "JOBID", "USER", "JOB_NAME", "PEND", "PSUSP", "RUN", "USUSP", "SSUSP", "UNKWN"
    )?;
    for j in &jobs {
        let times = state_times(j);
        let fit = |v: String, w: usize| if wide { v } else { cut(&v, w) };
        write!(
            out,
            "{:<7} {:<7} {:<9} ",
            lsf_spec(j),
            fit(j.user.clone(), 7),
            fit(lsf_name(j), 9)
        )?;
        for t in times {
            write!(out, "{t:<7} ")?;
        }
        writeln!(out, "{}", times.iter().sum::<u64>())?;
    }
    Ok(status)
}

/// A job's project (`bsub -P`, berth's account), LSF's `default` without one.
fn project(j: &JobInfo) -> &str {
    j.account.as_deref().unwrap_or("default")
}

/// bhist -l: a job's history in LSF's words, then the time it spent in each state.
fn history_form(out: &mut impl Write, j: &JobInfo) -> Result<()> {
    writeln!(
        out,
        "\nJob <{}>, Job Name <{}>, User <{}>, Project <{}>",
        lsf_spec(j),
        lsf_name(j),
        j.user,
        project(j)
    )?;
    // Its events in order of time (and, at one time, of how a job goes).
    let mut events: Vec<(u64, u8, String)> = vec![(
        j.submit_time,
        0,
        format!(
            "Submitted{}, to Queue <{}>, CWD <{}>, Output File <{}>;",
            from_host(j),
            j.partition,
            j.workdir,
            j.stdout
        ),
    )];
    let mut spells = |list: &[berth_api::Spell], order: u8| {
        for spell in list {
            events.push((
                spell.start,
                order,
                "Suspended by the user or administrator;".into(),
            ));
            // (A spell that ended as the job was cancelled was no resume: it was killed
            // as it was.)
            let killed = |end: u64| j.state == "CANCELLED" && Some(end) == j.end_time;
            if let Some(end) = spell.end.filter(|&end| !killed(end)) {
                events.push((end, order, "Resumed by the user or administrator;".into()));
            }
        }
    };
    spells(&j.holds, 1);
    spells(&j.suspensions, 3);
    // A requeued job's earlier runs, each from its dispatch to its requeue.
    for run in &j.earlier_runs {
        let hosts = bracketed(&run.nodes);
        let dispatched = format!("Dispatched {} Task(s) on Host(s) {hosts};", run.cpus);
        events.push((run.start_time, 2, dispatched));
        events.push((run.start_time, 2, "Starting;".into()));
        let done = run.state == "COMPLETED";
        let ended = ended_as(done, run.exit_code, run.signal, &run.state);
        // (Before the next run's dispatch in the same second: a stable sort keeps this
        // order among events of one kind and time.)
        events.push((run.end_time, 2, ended));
        events.push((run.end_time, 2, "Pending: Job has been requeued;".into()));
    }
    if let Some(start) = j.start_time {
        let hosts = bracketed(&exec_hosts(j));
        events.push((
            start,
            2,
            format!("Dispatched {} Task(s) on Host(s) {hosts};", j.cpus),
        ));
        events.push((start, 2, "Starting;".into()));
    }
    if let Some(end) = j.end_time {
        let cpu = j.cpu_usec.map_or(String::new(), |c| {
            format!(" The CPU time used is {:.1} seconds;", c as f64 / 1e6)
        });
        events.push((end, 4, format!("{}{cpu}", ending(j))));
        if let Some(why) = termination(j) {
            events.push((end, 5, format!("{};", completed(j, &why))));
        }
    }
    events.sort_by_key(|(at, order, _)| (*at, *order));
    for (at, _, what) in &events {
        writeln!(out, "{}: {what}", ctime(*at))?;
    }
    // Records from before spells were kept: their sum.
    if j.suspensions.is_empty() && j.suspended_seconds > 0 {
        writeln!(
            out,
            "                     Suspended by the user or administrator for {} seconds in all;",
            j.suspended_seconds
        )?;
    }
    let times = state_times(j);
    writeln!(
        out,
        "\nSummary of time in seconds spent in various states by  {}",
        ctime(j.end_time.unwrap_or_else(berth_controller::now))
    )?;
    writeln!(
        out,
        "  {:<8} {:<8} {:<8} {:<8} {:<8} {:<8} TOTAL",
        "PEND", "PSUSP", "RUN", "USUSP", "SSUSP", "UNKWN"
    )?;
    write!(out, " ")?;
    for t in times {
        write!(out, " {t:<8}")?;
    }
    writeln!(out, " {}", times.iter().sum::<u64>())?;
    Ok(())
}

/// How job `j` ended, in LSF's words.
fn ending(j: &JobInfo) -> String {
    ended_as(stat(j) == "DONE", j.exit_code, j.signal, &j.state)
}

/// How a job, or a run of one, ended in LSF's words: done, or exited by a signal or with a
/// status, or else berth's state.
fn ended_as(done: bool, code: Option<i32>, signal: Option<i32>, state: &str) -> String {
    match (done, code, signal) {
        (true, _, _) => "Done successfully.".to_string(),
        (_, _, Some(sig)) => format!("Exited by signal {sig}."),
        (_, Some(code), None) => format!("Exited with exit code {code}."),
        _ => format!("Exited: {state}."),
    }
}

/// bjobs -l's and bhist -l's line of why job `j` ended (its [`termination`]).
fn completed(j: &JobInfo, why: &str) -> String {
    let how = if stat(j) == "DONE" { "done" } else { "exit" };
    format!("Completed <{how}>; {why}")
}

/// Why a job ended, LSF's TERM_ reasons where it has its own (a time or memory limit, a
/// kill by its owner or by root), else berth's reason (a file it could not open, where its
/// output went instead of its file, ...); `None` for one that ended of itself.
fn termination(j: &JobInfo) -> Option<String> {
    let ours = || {
        j.reason
            .clone()
            .filter(|r| !r.starts_with("NonZeroExitCode") && r != "None")
    };
    Some(match j.state.as_str() {
        "TIMEOUT" => "TERM_RUNLIMIT: job killed after reaching LSF run time limit".into(),
        "OUT_OF_MEMORY" => "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit".into(),
        "CANCELLED" => match j.cancelled_by {
            Some(uid) if uid == j.uid => "TERM_OWNER: job killed by owner".into(),
            Some(_) => "TERM_ADMIN: job killed by root or LSF administrator".into(),
            None => ours()?,
        },
        "RUNNING" | "PENDING" | "SUSPENDED" => return None,
        _ => ours()?,
    })
}

const BACCT_USAGE: &str =
    "bacct [-d] [-e] [-l] [-u USER|all] [-q QUEUE] [-C TIME0,TIME1] [JOBID|JOBID[INDEX] ...]";

/// bacct: accounting of finished jobs (the user's, or `-u`'s; `-d` done, `-e` exited;
/// `-C` ended between two times, as sacct's), summed up as LSF does: CPU time, wait,
/// turnaround, hog factor; `-l` each job's first.
pub fn bacct(words: Vec<String>) -> Result<i32> {
    let mut words = getopt_words(words, "delh", "uqC", LONGER);
    if flag(&mut words, "-h") {
        println!("usage: {BACCT_USAGE}");
        return Ok(0);
    }
    let done = flag(&mut words, "-d");
    let exited = flag(&mut words, "-e");
    let long = flag(&mut words, "-l");
    let user = value(&mut words, "-u")?;
    let queue = value(&mut words, "-q")?;
    let window = value(&mut words, "-C")?
        .map(|w| {
            let (from, to) = w.split_once(',').unwrap_or((w.as_str(), "now"));
            let time =
                |t: &str| batch::parse_time(t).map_err(|e| anyhow::anyhow!("bacct -C {w}: {e}"));
            Ok::<_, anyhow::Error>((time(from)?, time(to)?))
        })
        .transpose()?;
    no_other_options("bacct", &words, BACCT_USAGE)?;
    let mut jobs = match words.is_empty() {
        true => ended_since(window.map_or(0, |(from, _)| from))?,
        false => named(&words, |spec| berth_core::say!("Job <{spec}> is not found"))?.0,
    };
    let who = match words.is_empty() {
        true => whose(user.as_deref())?,
        false => user.filter(|u| u != "all"),
    };
    jobs.retain(|j| {
        let s = stat(j);
        matches!(s, "DONE" | "EXIT")
            && (!done || s == "DONE")
            && (!exited || s == "EXIT")
            && who.as_ref().is_none_or(|u| *u == j.user)
            && queue.as_ref().is_none_or(|q| *q == j.partition)
            && window.is_none_or(|(from, to)| j.end_time.is_some_and(|e| (from..=to).contains(&e)))
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "Accounting information about jobs that are: ")?;
    match &who {
        Some(u) => writeln!(out, "  - submitted by users {u}, ")?,
        None => writeln!(out, "  - submitted by all users.")?,
    }
    writeln!(out, "  - accounted on all projects.")?;
    writeln!(
        out,
        "  - {}",
        match (done, exited) {
            (true, false) => "completed normally.",
            (false, true) => "exited.",
            _ => "completed normally or exited",
        }
    )?;
    writeln!(out, "  - executed on all hosts.")?;
    match &queue {
        Some(q) => writeln!(out, "  - submitted to queue {q}.")?,
        None => writeln!(out, "  - submitted to all queues.")?,
    }
    writeln!(out, "  - accounted on all service classes.")?;
    let rule = "-".repeat(78);
    writeln!(out, "{rule}")?;
    let cpu = |j: &JobInfo| j.cpu_usec.unwrap_or(0) as f64 / 1e6;
    let turnaround = |j: &JobInfo| {
        j.end_time
            .unwrap_or(j.submit_time)
            .saturating_sub(j.submit_time)
    };
    let wait = |j: &JobInfo| j.start_time.map(|s| s.saturating_sub(j.submit_time));
    let hog = |j: &JobInfo| cpu(j) / turnaround(j).max(1) as f64;
    if long {
        for j in &jobs {
            writeln!(
                out,
                "\nJob <{}>, User <{}>, Project <{}>, Status <{}>, Queue <{}>",
                lsf_spec(j),
                j.user,
                project(j),
                stat(j),
                j.partition
            )?;
            writeln!(
                out,
                "{}: Submitted, CWD <{}>;",
                ctime(j.submit_time),
                j.workdir
            )?;
            if let Some(start) = j.start_time {
                let hosts = bracketed(&exec_hosts(j));
                writeln!(out, "{}: Dispatched to {};", ctime(start), hosts)?;
            }
            if let Some(end) = j.end_time {
                writeln!(out, "{}: {}", ctime(end), ending(j))?;
            }
            writeln!(out, "\nAccounting information about this job:")?;
            writeln!(
                out,
                "     CPU_T     WAIT     TURNAROUND   STATUS     HOG_FACTOR    MEM    SWAP"
            )?;
            writeln!(
                out,
                "{:>10.2} {:>8} {:>14} {:>8} {:>14.4} {:>6} {:>7}",
                cpu(j),
                wait(j).map_or("-".into(), |w| w.to_string()),
                turnaround(j),
                stat(j).to_lowercase(),
                hog(j),
                j.max_rss_bytes
                    .map_or("-".into(), |b| format!("{}M", b.div_ceil(1 << 20))),
                // berth does not account swap apart.
                "-"
            )?;
            writeln!(out, "{rule}")?;
        }
    }
    let n = jobs.len();
    let count = |s: &str| jobs.iter().filter(|j| stat(j) == s).count();
    let stats = |values: Vec<f64>| -> (f64, f64, f64, f64) {
        // (+ 0.0: an empty sum is -0.0, which would print as such.)
        let total: f64 = values.iter().sum::<f64>() + 0.0;
        let max = values.iter().copied().fold(0.0, f64::max);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let avg = if values.is_empty() {
            0.0
        } else {
            total / values.len() as f64
        };
        (total, avg, max, if min.is_finite() { min } else { 0.0 })
    };
    let (cpu_total, cpu_avg, cpu_max, cpu_min) = stats(jobs.iter().map(cpu).collect());
    let (wait_total, wait_avg, wait_max, wait_min) =
        stats(jobs.iter().filter_map(wait).map(|w| w as f64).collect());
    let (_, turn_avg, turn_max, turn_min) =
        stats(jobs.iter().map(|j| turnaround(j) as f64).collect());
    let (_, hog_avg, hog_max, hog_min) = stats(jobs.iter().map(hog).collect());
    writeln!(out, "\nSUMMARY:      ( time unit: second ) ")?;
    writeln!(
        out,
        " Total number of done jobs: {:>7}      Total number of exited jobs: {:>5}",
        count("DONE"),
        count("EXIT")
    )?;
    writeln!(
        out,
        " Total CPU time consumed: {cpu_total:>9.1}      Average CPU time consumed: {cpu_avg:>7.1}"
    )?;
    writeln!(
        out,
        " Maximum CPU time of a job: {cpu_max:>7.1}      Minimum CPU time of a job: {cpu_min:>7.1}"
    )?;
    writeln!(out, " Total wait time in queues: {wait_total:>7.1}")?;
    writeln!(out, " Average wait time in queue: {wait_avg:>6.1}")?;
    writeln!(
        out,
        " Maximum wait time in queue: {wait_max:>6.1}      Minimum wait time in queue: {wait_min:>6.1}"
    )?;
    writeln!(
        out,
        " Average turnaround time: {turn_avg:>9.0} (seconds/job)"
    )?;
    writeln!(
        out,
        " Maximum turnaround time: {turn_max:>9.0}      Minimum turnaround time: {turn_min:>9.0}"
    )?;
    writeln!(
        out,
        " Average hog factor of a job: {hog_avg:>5.2} ( cpu time / turnaround time )"
    )?;
    writeln!(
        out,
        " Maximum hog factor of a job: {hog_max:>5.2}      Minimum hog factor of a job: {hog_min:>5.2}"
    )?;
    if n == 0 {
        berth_core::say!("No matching job found");
    }
    Ok(0)
}

/// bjobs -l: a job's record in LSF's long form.
fn long_form(out: &mut impl Write, j: &JobInfo) -> Result<()> {
    writeln!(
        out,
        "\nJob <{}>, Job Name <{}>, User <{}>, Project <{}>, Status <{}>, Queue <{}>",
        lsf_spec(j),
        lsf_name(j),
        j.user,
        project(j),
        stat(j),
        j.partition
    )?;
    let from = from_host(j);
    writeln!(
        out,
        "{}: Submitted{from}, CWD <{}>, Output File <{}>{}{}, {} Task(s);",
        ctime(j.submit_time),
        j.workdir,
        j.stdout,
        j.stderr
            .as_ref()
            .map_or(String::new(), |e| format!(", Error File <{e}>")),
        j.dependency_condition
            .as_ref()
            .map_or(String::new(), |d| format!(", Dependency Condition <{d}>")),
        j.cpus
    )?;
    if !j.candidate_nodes.is_empty() || !j.preferred_nodes.is_empty() {
        // Each as bsub -m named it: preferred ones with their +N, `others` for the rest.
        let level = |h: &String| {
            j.preferred_nodes
                .iter()
                .find(|p| p.rsplit_once('+').is_some_and(|(n, _)| n == h))
        };
        let mut hosts: Vec<String> = j
            .candidate_nodes
            .iter()
            .map(|h| format!("<{}>", level(h).unwrap_or(h)))
            .collect();
        if j.candidate_nodes.is_empty() {
            hosts.extend(j.preferred_nodes.iter().map(|p| format!("<{p}>")));
            hosts.push("<others>".into());
        }
        writeln!(out, " Specified Hosts {};", hosts.join(", "))?;
    }
    if let Some(limit) = j.time_limit {
        writeln!(out, " RUNLIMIT\n {:.1} min", limit as f64 / 60.0)?;
    }
    // bsub -M's, each slot's (a process's), in MB as LSF_UNIT_FOR_LIMITS=MB says it.
    if let Some(bytes) = j.memory_per_cpu {
        let mb = bytes as f64 / f64::from(1 << 20);
        match mb.fract() == 0.0 {
            true => writeln!(out, " MEMLIMIT\n    {mb:.0} M")?,
            false => writeln!(out, " MEMLIMIT\n    {mb:.1} M")?,
        }
    }
    if let Some(start) = j.start_time {
        let hosts = bracketed(&exec_hosts(j));
        writeln!(
            out,
            "{}: Started {} Task(s) on Host(s) {}, Execution CWD <{}>;",
            ctime(start),
            j.cpus,
            hosts,
            j.workdir
        )?;
    }
    if let Some(u) = batch::running_usage(j) {
        let mb = |b: u64| b.div_ceil(1 << 20);
        writeln!(
            out,
            "{}: Resource usage collected.\n                     The CPU time used is {:.1} seconds.\n                     MEM: {} Mbytes",
            ctime(berth_controller::now()),
            u.cpu_seconds(),
            mb(u.memory_bytes())
        )?;
        writeln!(
            out,
            "\n MEMORY USAGE:\n MAX MEM: {} Mbytes",
            mb(u.max_memory_bytes())
        )?;
    }
    if let Some(end) = j.end_time {
        writeln!(out, "{}: {}", ctime(end), ending(j))?;
        if let Some(why) = termination(j) {
            writeln!(out, "{}: {}.", ctime(end), completed(j, &why))?;
        }
        if let Some(cpu) = j.cpu_usec {
            writeln!(
                out,
                "{}: The CPU time used is {:.1} seconds.",
                ctime(end),
                cpu as f64 / 1e6
            )?;
        }
    }
    if j.state == "PENDING" {
        writeln!(
            out,
            " PENDING REASONS:\n {};",
            j.reason.as_deref().map_or("None".into(), pending_reason)
        )?;
    }
    Ok(())
}

/// Why a job waits, in LSF's words where it has its own (`Job dependency condition not
/// satisfied`), else berth's reason as it is.
fn pending_reason(reason: &str) -> String {
    match reason {
        "Dependency" => "Job dependency condition not satisfied",
        "DependencyNeverSatisfied" => "Dependency condition invalid or never satisfied",
        "BeginTime" => "The job has a specified start time",
        "JobHeldUser" => "The job was suspended by the user while pending",
        "JobHeldAdmin" => "The job was suspended by LSF admin or root while pending",
        "None" => "New job is waiting for scheduling",
        other => other,
    }
    .to_string()
}

const BKILL_USAGE: &str =
    "bkill [-s SIGNAL] [-u USER|all] [-J NAME] JOBID|JOBID[INDEX]|0 ...   (-J alone: every job of that name)";

/// bkill: cancels (or signals, `-s`) jobs; `0` stands for all of the user's jobs.
pub fn bkill(words: Vec<String>) -> Result<i32> {
    let mut words = getopt_words(words, "", "suJ", LONGER);
    let signal = value(&mut words, "-s")?;
    let user = value(&mut words, "-u")?;
    let name = value(&mut words, "-J")?;
    no_other_options("bkill", &words, BKILL_USAGE)?;
    if words.is_empty() && name.is_none() {
        return Err(super::usage_error(
            "bkill: name the jobs (0: all of yours)",
            BKILL_USAGE,
        ));
    }
    let what = if signal.is_some() {
        "signaled"
    } else {
        "terminated"
    };
    let applies = batch::applies("cancel");
    each_job(&words, (user, name), applies, |job, shown| {
        // (LSF signals every process of the job.)
        job.cancel(signal.clone(), berth_api::SignalTarget::Full)?;
        if let Some(shown) = shown {
            println!("Job <{shown}> is being {what}");
        }
        Ok(())
    })
}

/// Whether job `j` is named `pattern` as LSF's `-J` takes a name: the job's name (`run*`:
/// any that starts so), or an element's `name[INDEX]`.
fn named_as(j: &JobInfo, pattern: &str) -> bool {
    berth_core::job::Dependencies::name_matches(pattern, &j.name) || lsf_name(j) == pattern
}

/// bstop, bresume, brequeue: berth's `verb` on each job named (an array's tasks it applies
/// to), `Job <42> is being PAST`.
pub fn verb(verb: &str, past: &str, words: Vec<String>) -> Result<i32> {
    let mut words = getopt_words(words, "", "uJ", LONGER);
    let user = value(&mut words, "-u")?;
    let name = value(&mut words, "-J")?;
    // (bstop, bresume, brequeue: the command's own name.)
    let command = super::name();
    let usage = format!("{command} [-u USER|all] [-J NAME] JOBID|JOBID[INDEX]|0 ...");
    no_other_options(command, &words, &usage)?;
    if words.is_empty() && name.is_none() {
        return Err(super::usage_error(
            format!("{command}: name the jobs (0: all of yours; -J NAME: those of that name)"),
            &usage,
        ));
    }
    // bstop holds a pending job (PSUSP) and bresume releases it, as LSF's do: a held job
    // has no other way out with LSF's commands.
    let pending = match verb {
        "suspend" => Some(("hold", false)),
        "resume" => Some(("release", true)),
        _ => None,
    };
    let applies = |j: &JobInfo| {
        batch::applies(verb)(j)
            || pending.is_some_and(|(_, held)| j.state == "PENDING" && j.held == held)
    };
    each_job(&words, (user, name), applies, |job, shown| {
        match (job, pending) {
            (batch::Target::Job(id), Some((instead, held))) => {
                let j: JobInfo =
                    crate::client::request("GET", &format!("/v1/jobs/{id}"), None::<&()>)?;
                match j.state == "PENDING" && j.held == held {
                    true => job.act(instead, None)?,
                    false => job.act(verb, None)?,
                }
            }
            // An array's running elements, and its pending ones.
            (batch::Target::Array(_), Some((instead, _))) => {
                job.act(verb, None)?;
                job.act(instead, None)?;
            }
            _ => job.act(verb, None)?,
        }
        if let Some(shown) = shown {
            println!("Job <{shown}> is being {past}");
        }
        Ok(())
    })
}

/// Calls `act` with each job that `specs` name, and the name to report: an array's id for
/// the array whole (the verb takes its tasks it acts on in one request), `42[3]` for one
/// task, `0` (or no spec with `-J NAME`) for every active job of `user` that `applies` to
/// (yourself by default, `all`: everyone's), of that name if one is given. A spec that
/// fails is reported and the rest go on, as LSF's commands do; the status is then 255, as
/// it is when `0` finds no job.
fn each_job(
    specs: &[String],
    (user, name): (Option<String>, Option<String>),
    applies: impl Fn(&JobInfo) -> bool,
    mut act: impl FnMut(batch::Target, Option<&str>) -> Result<()>,
) -> Result<i32> {
    let mut status = 0;
    let mut fail = |shown: &str, e: anyhow::Error| {
        match crate::client::is_not_found(&e) {
            true => berth_core::say!("Job <{shown}>: No matching job found"),
            false => berth_core::say!("Job <{shown}>: {e}"),
        }
        status = 255;
    };
    for spec in element_lists(specs.to_vec())?.iter().filter(|s| *s != "0") {
        let acted = batch::target_as(spec, true).and_then(|job| act(job, Some(spec)));
        if let Err(e) = acted {
            fail(spec, e);
        }
    }
    if specs.iter().any(|s| s == "0") || specs.is_empty() {
        let user = whose(user.as_deref())?;
        let named = |j: &JobInfo| name.as_deref().is_none_or(|n| named_as(j, n));
        let mine: Vec<JobInfo> = active_jobs()?
            .into_iter()
            .filter(|j| user.as_ref().is_none_or(|u| *u == j.user) && applies(j) && named(j))
            .collect();
        let found = !mine.is_empty();
        for j in mine {
            let shown = lsf_spec(&j);
            if let Err(e) = act(batch::Target::Job(j.id), Some(&shown)) {
                fail(&shown, e);
            }
        }
        if !found {
            berth_core::say!("No unfinished job found");
            status = 255;
        }
    }
    Ok(status)
}

/// bmod: `[options] JOBID` in bsub's words.
pub fn bmod(mut words: Vec<String>) -> Result<i32> {
    // -J "%N" changes an array's limit of elements running at once, not its name (0: none).
    let limit = (words.iter().position(|w| w == "-J")).and_then(|at| {
        let n = words.get(at + 1)?.strip_prefix('%')?.parse::<u32>().ok()?;
        Some((at, n))
    });
    let job = match limit {
        Some((at, n)) => {
            words.drain(at..at + 2);
            let Some(job) = words.last().cloned() else {
                bail!("bmod: name the job: bmod -J \"%LIMIT\" JOBID");
            };
            let options = words[..words.len() - 1].to_vec();
            crate::batch::update_job(&job, options, berth_api::OptionSyntax::Bsub, Some(n))?;
            job
        }
        None => alter(Family::Lsf, words)?,
    };
    println!("Parameters of job <{job}> are being changed");
    Ok(0)
}

const BWAIT_USAGE: &str = "bwait -w 'CONDITION(JOBID) && ...' [-t MINUTES]   (CONDITION: done, exit, ended or started; JOBID: an array whole, JOBID[INDEX], or a job name; joined by && and ||, grouped by ( ), negated by !)";

/// bwait -w 'done(42) && ended(43[2])' [-t MINUTES]: returns once the condition holds,
/// waited for on the controller (one held request per job, not bjobs in a loop); 1 with
/// LSF's words when it never can (a job `done` waits for exited) or the time runs out.
/// Several terms open: each looked at in turn for a second.
pub fn bwait(words: Vec<String>) -> Result<i32> {
    let mut words = getopt_words(words, "", "wtr", LONGER);
    let condition = value(&mut words, "-w")?;
    let minutes = value(&mut words, "-t")?;
    // LSF's re-registration interval: berth's wait is one request, held until it answers.
    value(&mut words, "-r")?;
    no_other_options("bwait", &words, BWAIT_USAGE)?;
    let (Some(condition), []) = (condition, words.as_slice()) else {
        return Err(super::usage_error(
            "bwait: give the wait condition, and nothing else",
            BWAIT_USAGE,
        ));
    };
    let deps = berth_core::job::Dependencies::parse_lsf(&condition)
        .map_err(|e| anyhow::anyhow!("bwait: {e}"))?;
    let deadline = match &minutes {
        None => None,
        Some(m) => match m.parse::<u64>() {
            Ok(m @ 1..=525_600) => {
                Some(std::time::Instant::now() + std::time::Duration::from_secs(m * 60))
            }
            _ => bail!("bwait: -t {m}: expected whole minutes from 1 to 525600"),
        },
    };
    // Each term: how, and the ids it waits for (a job, an array's tasks, a name's jobs).
    let mut terms: Vec<(DependencyKind, std::ops::Range<u64>)> = Vec::new();
    for dep in &deps.jobs {
        let job: JobInfo =
            crate::client::request("GET", &format!("/v1/jobs/{}", dep.job), None::<&()>)
                .map_err(|e| anyhow::anyhow!("bwait: job <{}>: {e}", dep.job))?;
        let ids = batch::task_range(&job, dep.array_index)
            .map_err(|e| anyhow::anyhow!("bwait: {e:#}"))?;
        terms.push((dep.kind, ids));
    }
    let mut named = Vec::new();
    for (kind, pattern) in &deps.named {
        let first = terms.len() as u32;
        for id in jobs_named(pattern)? {
            terms.push((*kind, id..id + 1));
        }
        named.push((first..terms.len() as u32).collect());
    }
    let mut deps = deps;
    deps.settle_names(deps.jobs.len() as u32, &named);
    let condition =
        berth_controller::sched_condition(&deps.combined(terms.len() as u32), &deps.jobs);
    let counts: Vec<bool> = (0..terms.len())
        .map(|t| deps.jobs.get(t).is_some_and(|j| j.count.is_some()))
        .collect();
    // Where each term stands once looked at (a condition with `!` holds while a term
    // waits, so it is decided only once each has been), and the end that decided one.
    let mut status = std::collections::BTreeMap::new();
    let overall = |status: &std::collections::BTreeMap<u32, TermState>| match status.len() {
        n if n == terms.len() => berth_sched::condition_status(&condition, status),
        _ => DepStatus::Waiting,
    };
    let mut decided = None;
    let slice = std::time::Duration::from_secs(1);
    loop {
        match overall(&status) {
            DepStatus::Satisfied => return Ok(0),
            DepStatus::NeverSatisfied => {
                // The job that decided it, as LSF names it (`75[3]`).
                let path = |id| format!("/v1/jobs/{id}");
                let job = decided.and_then(|id| {
                    crate::client::request::<JobInfo>("GET", &path(id), None::<&()>).ok()
                });
                let why = job.map_or(String::new(), |j| {
                    format!(": job <{}> is {}", lsf_spec(&j), lsf_end_state(&j.state))
                });
                berth_core::say!("bwait: the wait condition is never satisfied{why}");
                return Ok(1);
            }
            DepStatus::Waiting => {}
        }
        // (Counts are looked at again each round: what runs changes both ways.)
        let open: Vec<u32> = (0..terms.len() as u32)
            .filter(|&t| {
                counts[t as usize]
                    || status
                        .get(&t)
                        .is_none_or(|s: &TermState| s.status == DepStatus::Waiting)
            })
            .collect();
        let blocking = open.iter().filter(|&&t| !counts[t as usize]).count();
        if blocking == 0 {
            std::thread::sleep(slice);
        }
        for &t in &open {
            let (kind, ids) = &terms[t as usize];
            let exit = deps.jobs.get(t as usize).and_then(|j| j.exit_code);
            if counts[t as usize] {
                let tasks = batch::array_tasks(ids.start)?;
                let tasks = tasks.iter().map(|j| (j.id, &j.state, j.exit_code));
                status.insert(t, term_of(*kind, exit, tasks).0);
                continue;
            }
            let until = match kind {
                DependencyKind::After => "started",
                _ => "ended",
            };
            // (Where several terms are open, or the condition may hold while one waits,
            // each looked at for a moment in turn.)
            let now = std::time::Instant::now();
            let wait_until = match open.len() == 1 && condition.needs_its_terms() {
                true => deadline,
                false => Some(deadline.map_or(now + slice, |d| d.min(now + slice))),
            };
            let ends =
                batch::wait_on_controller(ids.start, ids.end - ids.start, until, wait_until)?;
            let Some(ends) = ends else {
                status.insert(t, TermState::of(DepStatus::Waiting));
                continue;
            };
            let ended = ends.iter().map(|j| (j.id, &j.state, j.exit_code));
            let (term, failed) = term_of(*kind, exit, ended);
            status.insert(t, term);
            decided = failed.or(ends.last().map(|j| j.id));
            // Decided now, perhaps.
            if overall(&status) != DepStatus::Waiting {
                break;
            }
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d)
            && overall(&status) == DepStatus::Waiting
        {
            berth_core::say!(
                "bwait: the wait condition was not satisfied in {} minute(s)",
                minutes.as_deref().unwrap_or("?")
            );
            return Ok(1);
        }
    }
}

/// Where a term that asks `kind` (and `exit`, an exit status) of the jobs `jobs` (id,
/// state, exit status) stands, as the scheduler takes it (their states counted too, for
/// LSF's `numdone` and its kin), and one of them that keeps it from holding, if any.
fn term_of<'a>(
    kind: DependencyKind,
    exit: Option<berth_sched::ExitTest>,
    jobs: impl Iterator<Item = (u64, &'a String, Option<i32>)>,
) -> (TermState, Option<u64>) {
    use berth_controller::job::State;
    let states: std::collections::BTreeMap<u64, berth_sched::JobState> = jobs
        .map(|(id, name, code)| {
            let state = State::named(name).unwrap_or(State::Failed).for_scheduler();
            (id, state.with_exit_code(code))
        })
        .collect();
    let dep = |job| berth_sched::Dependency {
        delay: 0,
        any_failed: false,
        kind: berth_controller::sched_kind(kind),
        job,
        term: 0,
        exit,
    };
    let failed = (states.iter())
        .find(|(id, s)| {
            berth_sched::dependency_status_of(&dep(**id), Some(**s)) != DepStatus::Satisfied
        })
        .map(|(id, _)| *id);
    let state = berth_sched::term_statuses(states.keys().map(|&id| dep(id)), |d| {
        states.get(&d.job).copied()
    })
    .remove(&0)
    .unwrap_or(TermState::of(DepStatus::Satisfied));
    (state, failed)
}

/// The ids of the caller's jobs that LSF's job name `pattern` means (`run*`: any name that
/// starts so), unfinished or ended within the hour (LSF's CLEAN_PERIOD); none is an error,
/// as LSF's.
fn jobs_named(pattern: &str) -> Result<Vec<u64>> {
    let me = me()?;
    let since = berth_controller::now().saturating_sub(3600);
    let mut jobs = batch::active_jobs(None, false)?;
    let ended: Vec<JobInfo> = crate::client::request(
        "GET",
        &format!("/v1/history?mine=true&since={since}"),
        None::<&()>,
    )?;
    jobs.extend(ended);
    // (`run[3]`: that element of the array named run; `run[*]`: all of it.)
    let (name, index) = berth_core::job::Dependencies::name_and_index(pattern);
    let mut ids: Vec<u64> = jobs
        .iter()
        .filter(|j| j.user == me && berth_core::job::Dependencies::name_matches(name, &j.name))
        .filter(|j| index.is_none_or(|i| j.array_task_id == Some(i)))
        .map(|j| j.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        bail!("bwait: no job of yours is named {pattern} (unfinished, or ended within the hour)");
    }
    Ok(ids)
}

/// LSF's word for how a job ended: DONE, or EXIT.
fn lsf_end_state(state: &str) -> &'static str {
    match state {
        "COMPLETED" => "DONE",
        _ => "EXIT",
    }
}

/// bpeek [-f] JOBID: the job's output so far, from its file; `-f` follows it until the job
/// ends, as `tail -f` would.
pub fn bpeek(words: Vec<String>) -> Result<i32> {
    const USAGE: &str = "bpeek [-f] JOBID | bpeek [-f] -J NAME";
    let mut words = getopt_words(words, "f", "J", LONGER);
    let follow = flag(&mut words, "-f");
    let name = value(&mut words, "-J")?;
    no_other_options("bpeek", &words, USAGE)?;
    // -J: the newest of the user's unfinished jobs of that name, as LSF's.
    let newest = match (&name, words.as_slice()) {
        (Some(name), []) => {
            let me = whose(None)?;
            let named = active_jobs()?
                .into_iter()
                .filter(|j| me.as_ref().is_none_or(|u| *u == j.user) && named_as(j, name));
            match named.max_by_key(|j| (j.submit_time, j.id)) {
                Some(j) => lsf_spec(&j),
                None => bail!("bpeek: no unfinished job of yours is named {name}"),
            }
        }
        _ => String::new(),
    };
    let spec = match (words.as_slice(), name.is_some()) {
        ([], true) => &newest,
        ([spec], false) => spec,
        _ => bail!("bpeek: name one job: {USAGE}"),
    };
    let (mut jobs, found) = named(std::slice::from_ref(spec), |_| {})?;
    let first = match (found, jobs.len()) {
        (true, 1) => jobs.remove(0),
        (true, _) => bail!("bpeek: {spec} is an array: name one of its tasks, {spec}[INDEX]"),
        (false, _) => bail!("Job <{spec}> is not found"),
    };
    if first.start_time.is_none() {
        berth_core::say!("Job <{spec}> : Not yet started.");
        return Ok(255);
    }
    println!("<< output from stdout >>");
    let mut out = std::io::stdout().lock();
    let mut file = std::fs::File::open(&first.stdout)
        .with_context(|| format!("cannot read the job's output, {}", first.stdout))?;
    loop {
        std::io::copy(&mut file, &mut out)?;
        out.flush()?;
        let now: JobInfo =
            crate::client::request("GET", &format!("/v1/jobs/{}", first.id), None::<&()>)?;
        if !follow || now.end_time.is_some() {
            // What it wrote before its end.
            std::io::copy(&mut file, &mut out)?;
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The slots (CPUs) of the active jobs on each node, by state: (running, suspended).
fn slots_by_node(jobs: &[JobInfo]) -> std::collections::BTreeMap<&str, (u64, u64)> {
    let mut slots = std::collections::BTreeMap::new();
    for j in jobs {
        let per = j.cpus / (j.nodes.len().max(1) as u64);
        for n in &j.nodes {
            let e: &mut (u64, u64) = slots.entry(n.as_str()).or_default();
            match j.state.as_str() {
                "SUSPENDED" => e.1 += per,
                _ => e.0 += per,
            }
        }
    }
    slots
}

fn number_or_dash(v: Option<impl ToString>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

pub fn bqueues(mut words: Vec<String>) -> Result<i32> {
    flag(&mut words, "-w");
    no_other_options("bqueues", &words, "bqueues [-w] [QUEUE ...]")?;
    let parts: Vec<PartitionInfo> = crate::client::request("GET", "/v1/partitions", None::<&()>)?;
    // (Those it does not know are said first, as LSF says them; none known, no table.)
    let unknown: Vec<&String> = words
        .iter()
        .filter(|w| !parts.iter().any(|p| p.name == **w))
        .collect();
    for queue in &unknown {
        berth_core::say!("{queue}: No such queue");
    }
    if !words.is_empty() && unknown.len() == words.len() {
        return Ok(255);
    }
    let jobs = active_jobs()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<15} {:>4}  {:<14} {:>4} {:>4} {:>4} {:>4} {:>5} {:>5} {:>5} {:>5}",
        "QUEUE_NAME",
        "PRIO",
        "STATUS",
        "MAX",
        "JL/U",
        "JL/P",
        "JL/H",
        "NJOBS",
        "PEND",
        "RUN",
        "SUSP"
    )?;
    for p in parts
        .iter()
        .filter(|p| words.is_empty() || words.contains(&p.name))
    {
        let slots = |state: &str| -> u64 {
            jobs.iter()
                .filter(|j| j.partition == p.name && j.state == state)
                .map(|j| j.cpus)
                .sum()
        };
        let (pend, run, susp) = (slots("PENDING"), slots("RUNNING"), slots("SUSPENDED"));
        let status = if p.state == "up" {
            "Open:Active"
        } else {
            "Closed:Inact"
        };
        writeln!(
            out,
            "{:<15} {:>4}  {:<14} {:>4} {:>4} {:>4} {:>4} {:>5} {:>5} {:>5} {:>5}",
            p.name,
            p.priority,
            status,
            "-",
            // (JL/U: the slots one user's running jobs may hold.)
            number_or_dash(p.max_cpus_per_user),
            "-",
            "-",
            pend + run + susp,
            pend,
            run,
            susp
        )?;
    }
    Ok(if unknown.is_empty() { 0 } else { 255 })
}

pub fn bhosts(mut words: Vec<String>) -> Result<i32> {
    let wide = flag(&mut words, "-w");
    no_other_options("bhosts", &words, "bhosts [-w] [HOST ...]")?;
    let nodes = nodes_named(&words)?;
    let jobs = active_jobs()?;
    let slots = slots_by_node(&jobs);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<18} {:<12} {:>4} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "HOST_NAME", "STATUS", "JL/U", "MAX", "NJOBS", "RUN", "SSUSP", "USUSP", "RSV"
    )?;
    for n in &nodes {
        let status = match (n.state.as_str(), wide) {
            ("idle" | "mixed", _) => "ok",
            ("down", _) => "unavail",
            (_, false) => "closed",
            ("allocated", true) => "closed_Full",
            (_, true) => "closed_Adm",
        };
        let (run, susp) = slots.get(n.name.as_str()).copied().unwrap_or_default();
        writeln!(
            out,
            "{:<18} {:<12} {:>4} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            n.name,
            status,
            "-",
            n.cpus,
            run + susp,
            run,
            0,
            susp,
            0
        )?;
    }
    Ok(0)
}

/// lshosts: the hosts' static resources. berth does not know LSF's host type, model or CPU
/// factor, so those columns are not shown.
pub fn lshosts(mut words: Vec<String>) -> Result<i32> {
    let wide = flag(&mut words, "-w");
    no_other_options("lshosts", &words, "lshosts [-w] [HOST ...]")?;
    let nodes = nodes_named(&words)?;
    let width = |w: usize| if wide { usize::MAX } else { w };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<15} {:>10} {:>12} {:>5} {:>5} {:>6} {:>6} {:>6} RESOURCES",
        "HOST_NAME", "type", "model", "cpuf", "ncpus", "maxmem", "maxswp", "server"
    )?;
    for n in &nodes {
        // Numeric resources after the administrator's features, as LSF lists them.
        let mut resources = n.features.clone();
        if n.gpus > 0 {
            resources.push(format!("ngpus={}", n.gpus));
        }
        writeln!(
            out,
            "{:<15} {:>10} {:>12} {:>5} {:>5} {:>6} {:>6} {:>6} ({})",
            cut(&n.name, width(15)),
            cut(&host_type(&n.arch), width(10)),
            cut(&host_model(&n.cpu_model), width(12)),
            "1.0",
            n.cpus,
            lsf_size(n.memory),
            match n.swap {
                0 => "-".to_string(),
                swap => lsf_size(swap),
            },
            if n.state == "down" { "Dyn" } else { "Yes" },
            resources.join(" ")
        )?;
    }
    Ok(0)
}

/// A size as lshosts writes it: `512M`, `7.7G` (binary units), one word.
fn lsf_size(bytes: u64) -> String {
    let mib = bytes / (1 << 20);
    match mib < 1024 {
        true => format!("{mib}M"),
        false => {
            let gib = format!("{:.1}", bytes as f64 / f64::from(1u32 << 30));
            format!("{}G", gib.trim_end_matches(".0"))
        }
    }
}

/// A host's type as LSF names it, from its architecture (uname's machine).
fn host_type(arch: &str) -> String {
    match arch {
        "" => "-".into(),
        "x86_64" => "X86_64".into(),
        "aarch64" => "ARM64".into(),
        "powerpc64" => "LINUXPPC64".into(),
        other => other.to_uppercase(),
    }
}

/// A host's model as one word, from its CPUs' model name (`Intel(R) Xeon(R) Platinum 8375C
/// CPU @ 2.90GHz`: `Intel_Xeon_Platinum_8375C`); berth has no CPU factors (cpuf: 1.0).
fn host_model(name: &str) -> String {
    let words: Vec<String> = name
        .split_whitespace()
        .take_while(|w| *w != "@")
        .map(|w| w.replace("(R)", "").replace("(TM)", "").replace("(tm)", ""))
        .filter(|w| !w.is_empty() && !matches!(w.as_str(), "CPU" | "Processor"))
        .collect();
    match words.is_empty() {
        true => "-".into(),
        false => words.join("_"),
    }
}

const BLAUNCH_USAGE: &str =
    "blaunch [-n] [-u HOST_FILE | -z HOST ... | HOST] [-use-login-shell | -no-shell] COMMAND [ARGUMENT ...]";

/// LSF's blaunch, in a job: COMMAND, through a shell as rsh and ssh run it (not with
/// -no-shell), as the tasks of a step of the job: one on each host named (`-z HOST ...`,
/// a host file's lines, or one HOST as rsh takes it; a host named twice gets two), each
/// with all the job's CPUs there, as the MPI launchers' daemons it starts are; without a
/// host, one on each of the job's slots ($LSB_HOSTS), as its tasks. -n: they read no
/// input. Its status is the worst task's.
pub fn blaunch(words: Vec<String>) -> Result<i32> {
    let usage = |why: String| super::usage_error(why, BLAUNCH_USAGE);
    let Some(job) = crate::step::job_id_from_env()? else {
        bail!("tasks start in the LSF job blaunch is called in: call it from a job's script");
    };
    // The job's slots, a host each, as LSF lists them.
    let slots: Vec<String> = std::env::var("LSB_HOSTS")
        .context("$LSB_HOSTS is not set: blaunch runs in a job's script")?
        .split_whitespace()
        .map(String::from)
        .collect();
    let of_job = |h: &str| slots.iter().any(|s| s == h);
    let (mut i, mut no_input, mut shell) = (0, false, true);
    let mut hosts: Option<Vec<String>> = None;
    while let Some(w) = words.get(i).filter(|w| w.starts_with('-')) {
        match w.as_str() {
            "-n" => no_input = true,
            "-no-shell" => shell = false,
            "-use-login-shell" => {}
            "-u" => {
                i += 1;
                let file = (words.get(i)).ok_or_else(|| usage("-u takes a host file".into()))?;
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("-u {file}: cannot read the host file"))?;
                hosts = Some(text.split_whitespace().map(String::from).collect());
            }
            // The hosts, one word each or several in one: up to the first that is none of
            // the job's (the command).
            "-z" => {
                let mut named = Vec::new();
                while let Some(next) = words.get(i + 1) {
                    let list: Vec<&str> = next.split_whitespace().collect();
                    if list.is_empty() || !list.iter().all(|h| of_job(h)) {
                        break;
                    }
                    named.extend(list.into_iter().map(String::from));
                    i += 1;
                }
                if named.is_empty() {
                    return Err(usage("-z takes the hosts of the job to run on".into()));
                }
                hosts = Some(named);
            }
            other => return Err(usage(format!("unknown option {other}"))),
        }
        i += 1;
    }
    // rsh's and ssh's form: a host, then the command.
    if hosts.is_none() && words.len() > i + 1 && of_job(&words[i]) {
        hosts = Some(vec![words[i].clone()]);
        i += 1;
    }
    let command = words[i..].to_vec();
    if command.is_empty() {
        return Err(usage("name the command to run".into()));
    }
    if let Some(stranger) = hosts.iter().flatten().find(|h| !of_job(h)) {
        let mut own = slots.clone();
        own.dedup();
        bail!(
            "{stranger} is not a host of job {job} (its hosts: {})",
            own.join(" ")
        );
    }
    let argv = match shell {
        true => vec!["/bin/sh".into(), "-c".into(), command.join(" ")],
        false => command,
    };
    if no_input {
        crate::step::input_from_null();
    }
    let request = match hosts {
        Some(hosts) => {
            // Each host's tasks, hosts in the order first named: a step's tasks lie on its
            // nodes in blocks, the first nodes taking one more where they do not divide.
            let mut nodes: Vec<(String, u32)> = Vec::new();
            for h in &hosts {
                match nodes.iter_mut().find(|(n, _)| n == h) {
                    Some((_, count)) => *count += 1,
                    None => nodes.push((h.clone(), 1)),
                }
            }
            let ntasks = hosts.len() as u32;
            let counts: Vec<u32> = nodes.iter().map(|(_, c)| *c).collect();
            if counts != berth_core::job::block_layout(ntasks, counts.len() as u32) {
                bail!(
                    "{ntasks} tasks on {} hosts go in blocks, the first hosts named taking one more where they do not divide evenly; name the hosts so (each as often, or the first more often)",
                    counts.len()
                );
            }
            let nodes = nodes.into_iter().map(|(n, _)| n).collect();
            crate::step::launcher_step(job, nodes, ntasks, argv)?
        }
        None => berth_api::StepRequest {
            job: Some(job),
            ntasks: Some(slots.len() as u32),
            quiet: true,
            ..berth_api::StepRequest::new(
                argv,
                crate::step::environment(),
                crate::step::current_dir()?,
            )
        },
    };
    crate::step::run(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_types_and_models_in_lsfs_words() {
        assert_eq!(host_type("x86_64"), "X86_64");
        assert_eq!(host_type("riscv64"), "RISCV64");
        assert_eq!(host_type(""), "-");
        assert_eq!(
            host_model("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"),
            "Intel_Xeon_Platinum_8375C"
        );
        assert_eq!(
            host_model("AMD EPYC 7B13 64-Core Processor"),
            "AMD_EPYC_7B13_64-Core"
        );
        assert_eq!(host_model(""), "-");
        assert_eq!(lsf_size(512 << 20), "512M");
        assert_eq!(lsf_size(4 << 30), "4G");
        assert_eq!(lsf_size((7 << 30) + (700 << 20)), "7.7G");
    }

    #[test]
    fn columns_are_cut_as_lsf_cuts_them() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("a_long_job_name", 10), "*_job_name");
        assert_eq!(cut("a_long_job_name", 10).chars().count(), 10);
    }

    #[test]
    fn output_formats() {
        let format = parse_format("jobid:-7 stat:5 JOB_NAME delimiter=','").unwrap();
        assert_eq!(format.delimiter, ",");
        assert_eq!(
            format.columns,
            vec![
                ("jobid".to_string(), Some((7, true))),
                ("stat".to_string(), Some((5, false))),
                ("job_name".to_string(), None)
            ]
        );
        assert!(parse_format("jobid frob").is_err());
        assert!(parse_format("").is_err());
    }
}
