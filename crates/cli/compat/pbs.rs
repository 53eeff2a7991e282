//! PBS's commands (Torque's and PBS Pro's common ground): qsub, qstat, qdel, qhold, qrls,
//! qrerun, qsig, pbsnodes, with PBS's job ids (`42.server`, `42[3].server`), columns and
//! states (Q, H, W, R, S, F).

use super::*;
use crate::batch::{self, Submission};
use berth_api::{OptionSyntax, PartitionInfo};
use berth_core::job::leading_options;
use std::collections::BTreeSet;
use std::io::Write;

const QSUB_USAGE: &str =
    "qsub [options] [script]        (no script: it is read from standard input)
       qsub [options] -- command [args]
       qsub -I [-X] [options] [-- command]  (an interactive job on this terminal)
options: qsub's (-N -l -o -e -j -q -J -t -W depend=|block= -h -V -v -d -A -r -a -F -z ...);
the image comes from the script (#BERTH --image, APPLICATION=) or $BERTH_IMAGE";

/// How long PBS keeps finished jobs for `qstat -x` (its job_history_duration default).
const HISTORY: u64 = 14 * 86400;

/// PBS's exit status for an unknown job id.
const UNKNOWN_JOB: i32 = 153;

/// PBS Pro's status for a job that has finished, named without -x (PBSE_HISTJOBID).
const JOB_FINISHED: i32 = 35;

/// A job's id as PBS prints it: `42.server`, `42[3].server` for an array's task.
fn pbs_id(j: &JobInfo, server: &str) -> String {
    match (j.array_job_id, j.array_task_id) {
        (Some(a), Some(i)) => format!("{a}[{i}].{server}"),
        (Some(a), None) => format!("{a}[].{server}"),
        _ => format!("{}.{server}", j.id),
    }
}

/// The state qstat shows of an array job one of whose subjobs has begun (PBS's `B`).
const BEGUN: &str = "BEGUN";

/// What PBS Pro says of an array job on its own line (`42[].server`) beyond its first
/// subjob's attributes: its indices as submitted, those still queued, and how many of its
/// subjobs are in each state (qstat -f's array attributes).
#[derive(Debug, Clone, Default, PartialEq)]
struct ArrayState {
    submitted: String,
    queued: Vec<u32>,
    running: usize,
    expired: usize,
    /// Once all its subjobs have ended: when the last did, and the array's exit status as
    /// PBS Pro gives it (0: all exited 0; 1: one did not; 2: one was deleted).
    ended: Option<(u64, i32)>,
}

/// A line of qstat: a job, or an array job's own line with its state.
type Line = (JobInfo, Option<ArrayState>);

/// qstat's lines of `jobs` (in id order): the arrays in `parents` (whose subjobs are all
/// among `jobs`) are one line each, `42[].server`, where their first subjob is, as PBS
/// lists them: `B` once one of its subjobs has begun and some are left, else as its first
/// subjob (`Q`, `H`, `W`; `F` once all have ended); with `subjobs` (-t), its subjobs follow
/// it, those ended as `X`, as do those in `named` (`qstat 42[] 42[2]`). Other jobs, an
/// array's subjob named alone among them, are lines of their own.
fn with_array_parents(
    jobs: Vec<JobInfo>,
    parents: &BTreeSet<u64>,
    subjobs: bool,
    named: &BTreeSet<u64>,
) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    // Each array's line, and whether one of its subjobs has begun, and one is left.
    let mut at: std::collections::HashMap<u64, (usize, bool, bool)> = Default::default();
    // Each array's last end and exit status so far.
    let mut ends: std::collections::HashMap<u64, (u64, i32)> = Default::default();
    for j in jobs {
        let Some(array) = j.array_job_id.filter(|a| parents.contains(a)) else {
            lines.push((j, None));
            continue;
        };
        let (line, begun, left) = at.entry(array).or_insert_with(|| {
            let mut parent = j.clone();
            parent.id = array;
            parent.array_task_id = None;
            let submitted = j.array_spec.as_deref().unwrap_or_default();
            let submitted = submitted.split('%').next().unwrap_or_default().to_string();
            let state = ArrayState {
                submitted,
                ..Default::default()
            };
            lines.push((parent, Some(state)));
            (lines.len() - 1, false, false)
        });
        let state = lines[*line].1.as_mut().expect("an array's line");
        match j.state.as_str() {
            "PENDING" => state.queued.extend(j.array_task_id),
            "RUNNING" | "SUSPENDED" => state.running += 1,
            ended => {
                state.expired += 1;
                let (last, status) = ends.entry(array).or_default();
                *last = (*last).max(j.end_time.unwrap_or(0));
                let own = match (ended, j.exit_code) {
                    ("CANCELLED", _) => 2,
                    ("COMPLETED", Some(0)) => 0,
                    _ => 1,
                };
                *status = (*status).max(own);
            }
        }
        *begun |= j.state != "PENDING";
        *left |= matches!(j.state.as_str(), "PENDING" | "RUNNING" | "SUSPENDED");
        if subjobs || named.contains(&j.id) {
            lines.push((j, None));
        }
    }
    for (array, (line, begun, left)) in at {
        if begun && left {
            lines[line].0.state = BEGUN.into();
        }
        if !left {
            lines[line].1.as_mut().expect("an array's line").ended = ends.get(&array).copied();
        }
    }
    lines
}

pub fn qsub(words: Vec<String>) -> Result<i32> {
    if matches!(words.first().map(String::as_str), Some("--help")) {
        println!("usage: {QSUB_USAGE}");
        return Ok(0);
    }
    let (options, end) =
        leading_options(Family::Pbs, &words).map_err(|e| super::usage_error(e, QSUB_USAGE))?;
    let command_mode = end > 0 && words[end - 1] == "--";
    let (mut interactive, mut quiet, mut x11) = (false, false, false);
    let (mut args, mut script_args) = (Vec::new(), Vec::new());
    for (name, taken) in options {
        match name {
            "I" => interactive = true,
            "X" => x11 = true,
            "z" => quiet = true,
            // Torque's -F "ARGS": the script's arguments.
            "F" => {
                let text = taken.last().cloned().unwrap_or_default();
                script_args = text.split_whitespace().map(String::from).collect();
            }
            _ => args.extend(taken),
        }
    }
    let rest = &words[end..];
    match (x11, interactive) {
        (true, false) => bail!("-X forwards X11 to an interactive job: give it with -I"),
        (true, true) => berth_core::say!(
            "qsub: warning: -X ignored: berth forwards no X11 display; the job has none"
        ),
        _ => {}
    }
    if interactive {
        let argv = match rest.is_empty() {
            // The user's login shell, as PBS starts it: bash where the image has it.
            true => vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                "command -v bash >/dev/null && exec bash -l; exec sh -l".to_string(),
            ],
            false => rest.to_vec(),
        };
        let cwd = interactive_dir(&args)?;
        return interactive_job(OptionSyntax::Qsub, args, argv, true, cwd);
    }
    let (script, name, path) = match (command_mode, rest) {
        (true, []) => bail!("qsub --: name the command to run, e.g. qsub -- /bin/hostname"),
        (true, command) => (command_script(command), base_name(&command[0]), None),
        (false, []) => (script_from_stdin("qsub")?, "STDIN".to_string(), None),
        (false, [path]) => (
            batch::script_text(
                std::fs::read(path).with_context(|| format!("cannot read {path}"))?,
                path,
            )?,
            base_name(path),
            Some(path.into()),
        ),
        (false, [path, ..]) => bail!(
            "qsub {path}: qsub takes one script; give its arguments with -F \"ARGS\", or run a command with qsub -- COMMAND ARGS"
        ),
    };
    let resp = batch::send(Submission {
        script,
        name,
        options: args,
        syntax: OptionSyntax::Qsub,
        script_args,
        path,
    })?;
    if !quiet {
        let array = if resp.array { "[]" } else { "" };
        println!(
            "{}{array}.{}",
            resp.job_id,
            crate::client::controller_host()
        );
    }
    match resp.wait {
        true => batch::wait_for_jobs(resp.job_id, resp.jobs),
        false => Ok(0),
    }
}

/// Where qsub -I's shell starts: its user's home, as PBS's jobs do, unless `-d DIR` (there)
/// or `-l wd` (here) says otherwise; `None`: here. (Options in error are the controller's
/// to refuse.)
fn interactive_dir(args: &[String]) -> Result<Option<String>> {
    let Ok(options) = berth_core::job::parse_args_as(berth_core::job::Family::Pbs, args) else {
        return Ok(None);
    };
    Ok(match (options.workdir, options.start_in_submit_dir) {
        (Some(dir), _) if dir.starts_with('/') => Some(dir),
        (Some(dir), _) => Some(format!("{}/{dir}", crate::step::current_dir()?)),
        (None, Some(true)) => None,
        (None, _) => Some(berth_runtime::Identity::current()?.home),
    })
}

/// PBS's one-letter state of a job.
fn state(j: &JobInfo) -> char {
    match j.state.as_str() {
        "PENDING" if j.held || j.reason.as_deref() == Some("Dependency") => 'H',
        "PENDING" if j.reason.as_deref() == Some("BeginTime") => 'W',
        "PENDING" => 'Q',
        "RUNNING" => 'R',
        "SUSPENDED" => 'S',
        BEGUN => 'B',
        // An array's subjob that has ended (expired), PBS Pro's X.
        _ if j.array_task_id.is_some() => 'X',
        _ => 'F',
    }
}

/// CPU time used, `HH:MM:SS`; `--` while berth does not know it (it is measured at the end).
fn time_use(j: &JobInfo) -> String {
    match (j.cpu_usec, j.state.as_str()) {
        (Some(u), _) => batch::duration(u / 1_000_000),
        (None, "PENDING") => "0".into(),
        (None, _) => "--".into(),
    }
}

/// A column cut to `width` as PBS cuts it, with `*` as its last character.
fn cut(v: &str, width: usize) -> String {
    match v.chars().count() > width {
        true => format!("{}*", v.chars().take(width - 1).collect::<String>()),
        false => v.to_string(),
    }
}

/// `host1/0*2+host2/0*2`: a job's nodes and CPUs on each, as qstat -n and exec_host list them.
fn exec_host(j: &JobInfo) -> String {
    let per = cpus_per_node(j).unwrap_or(1);
    j.nodes
        .iter()
        .map(|n| format!("{n}/0*{per}"))
        .collect::<Vec<_>>()
        .join("+")
}

const QSTAT_USAGE: &str = "qstat [-a|-r|-i] [-s] [-n [-1]] [-x|-H] [-w] [-t] [-J] [-u USER[,USER]] [JOBID ...] | qstat -f [-F json] [-x|-H] [JOBID ...] | qstat -Q [-f] [QUEUE ...] | qstat -q | qstat -B [-f]";

pub fn qstat(words: Vec<String>) -> Result<i32> {
    // Options together, as getopt takes them (`-fx`, `-nu USER`, `-uUSER`, `-fFjson`); an
    // array's subjobs in a range (`42[1-3]`) each.
    let words = getopt_words(words, "fxHnwtaJQqBsri1", "uF", &[]);
    let mut words = element_lists(words)?;
    if flag(&mut words, "--help") {
        println!("usage: {QSTAT_USAGE}");
        return Ok(0);
    }
    let queues = flag(&mut words, "-Q");
    // Torque's -q: the queues' limits.
    let queue_limits = flag(&mut words, "-q");
    let server_status = flag(&mut words, "-B");
    // -s: the alternate form, each job with the scheduler's comment under it.
    let comments = flag(&mut words, "-s");
    let full = flag(&mut words, "-f");
    // PBS Pro's -F json: -f's attributes as JSON.
    let json = match value(&mut words, "-F")?.as_deref() {
        None => false,
        Some("json") if full => true,
        Some(other) => {
            bail!("qstat -F {other}: berth writes -f's attributes as json (-f -F json) only")
        }
    };
    // -x: finished jobs too; -H: those alone; -r: running (and suspended) jobs alone, -i:
    // those not running (queued, held, waiting), each in the alternate form.
    let history = flag(&mut words, "-H");
    let finished = flag(&mut words, "-x") || history;
    let running_only = flag(&mut words, "-r");
    let waiting_only = flag(&mut words, "-i");
    let nodes = flag(&mut words, "-n");
    // -1 (with -n): the nodes on the job's own line.
    let one_line = flag(&mut words, "-1");
    let wide = flag(&mut words, "-w");
    // An array job is one line unless its subjobs are asked for; -J: array jobs alone.
    let subjobs = flag(&mut words, "-t");
    let arrays_only = flag(&mut words, "-J");
    let users = value(&mut words, "-u")?;
    let alternate = flag(&mut words, "-a")
        || users.is_some()
        || nodes
        || comments
        || running_only
        || waiting_only;
    no_other_options("qstat", &words, QSTAT_USAGE)?;
    if queues || queue_limits {
        return qstat_queues(&words, full, queue_limits);
    }
    if server_status {
        return qstat_server(full);
    }
    let server = crate::client::controller_host();
    // The jobs, and the arrays shown as one line each: every array among all jobs, or those
    // named by their own id (not a subjob's).
    let (mut jobs, parents, mut status) = if words.is_empty() {
        let mut jobs = active_jobs()?;
        if finished {
            jobs.extend(ended_since(
                berth_controller::now().saturating_sub(HISTORY),
            )?);
        }
        let parents: BTreeSet<u64> = jobs.iter().filter_map(|j| j.array_job_id).collect();
        (jobs, parents, 0)
    } else {
        let (jobs, all_found) = named(&words, |spec| {
            berth_core::say!("qstat: Unknown Job Id {spec}")
        })?;
        let arrays: BTreeSet<u64> = (words.iter())
            .filter_map(|w| match batch::job_spec(w) {
                Ok((id, None)) => Some(id),
                _ => None,
            })
            .collect();
        let parents = (jobs.iter())
            .filter_map(|j| j.array_job_id)
            .filter(|a| arrays.contains(a))
            .collect();
        (jobs, parents, if all_found { 0 } else { UNKNOWN_JOB })
    };
    if let Some(users) = &users {
        let users: Vec<&str> = users
            .split(',')
            .map(|u| u.split('@').next().unwrap_or(u))
            .collect();
        jobs.retain(|j| users.contains(&j.user.as_str()));
    }
    // An array on one line: with all its subjobs, those ended too (their count, their X).
    let shown: BTreeSet<u64> = (parents.iter().copied())
        .filter(|&a| jobs.iter().any(|j| j.array_job_id == Some(a)))
        .collect();
    jobs.retain(|j| !j.array_job_id.is_some_and(|a| shown.contains(&a)));
    for &array in &shown {
        jobs.extend(batch::array_tasks(array)?);
    }
    jobs.sort_by_key(|j| j.id);
    jobs.dedup_by_key(|j| j.id);
    // (Its subjobs named too, each on its line under the array's.)
    let named_subjobs: BTreeSet<u64> = (words.iter())
        .filter_map(|w| match batch::job_spec(w) {
            Ok((array, Some(index))) => jobs
                .iter()
                .find(|j| j.array_job_id == Some(array) && j.array_task_id == Some(index))
                .map(|j| j.id),
            _ => None,
        })
        .collect();
    let mut lines = with_array_parents(jobs, &shown, subjobs, &named_subjobs);
    // A job that has finished is history, shown with -x only, as PBS Pro's (whose status,
    // 35, ends a `while qstat $JOB` loop); an array's ended subjobs are its own (X) while it
    // has some left.
    if !finished && !words.is_empty() {
        let over = |j: &JobInfo| {
            !matches!(
                j.state.as_str(),
                "PENDING" | "RUNNING" | "SUSPENDED" | BEGUN
            )
        };
        let ended: BTreeSet<u64> = (lines.iter())
            .filter(|(j, array)| array.is_some() && over(j))
            .map(|(j, _)| j.id)
            .collect();
        // A subjob named alone that has ended is its array's (X) while the array runs.
        let mut live = BTreeSet::new();
        for (j, _) in lines.iter().filter(|(j, array)| array.is_none() && over(j)) {
            if let Some(a) = j.array_job_id.filter(|a| !shown.contains(a)) {
                if batch::array_tasks(a)?.iter().any(|t| !over(t)) {
                    live.insert(a);
                }
            }
        }
        lines.retain(|(j, array)| {
            if let Some(a) = j
                .array_job_id
                .filter(|a| shown.contains(a) && array.is_none())
            {
                return !ended.contains(&a);
            }
            if j.array_job_id.is_some_and(|a| live.contains(&a)) {
                return true;
            }
            if over(j) {
                berth_core::say!(
                    "qstat: {} Job has finished, use -x or -H to obtain historical job information",
                    pbs_id(j, &server)
                );
                status = JOB_FINISHED;
            }
            !over(j)
        });
    }
    if arrays_only {
        lines.retain(|(j, _)| j.array_job_id.is_some());
    }
    let live = |j: &JobInfo| {
        matches!(
            j.state.as_str(),
            "PENDING" | "RUNNING" | "SUSPENDED" | BEGUN
        )
    };
    if history {
        lines.retain(|(j, _)| !live(j));
    }
    if running_only {
        lines.retain(|(j, _)| matches!(j.state.as_str(), "RUNNING" | "SUSPENDED" | BEGUN));
    }
    if waiting_only {
        lines.retain(|(j, _)| j.state == "PENDING");
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", full_json(&lines, &server))?;
        return Ok(status);
    }
    if full {
        for (j, array) in &lines {
            full_form(&mut out, j, array.as_ref(), &server)?;
        }
        return Ok(status);
    }
    if lines.is_empty() {
        return Ok(status);
    }
    let fit = |v: String, w: usize| if wide { v } else { cut(&v, w) };
    if alternate {
        writeln!(out, "\n{}:", server)?;
        writeln!(
            out,
            "{:<60}Req'd  Req'd   Elap\n{:<15} {:<8} {:<8} {:<10} {:>6} {:>3} {:>3} {:>6} {:>5} S {:>5}",
            "", "Job ID", "Username", "Queue", "Jobname", "SessID", "NDS", "TSK", "Memory", "Time", "Time"
        )?;
        writeln!(out, "{}", "-".repeat(79))?;
        for (j, _) in &lines {
            let hm = |secs: u64| format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60);
            let elapsed = match j.start_time {
                Some(_) => hm(batch::elapsed(j)),
                None => "--".into(),
            };
            write!(
                out,
                "{:<15} {:<8} {:<8} {:<10} {:>6} {:>3} {:>3} {:>6} {:>5} {} {:>5}",
                fit(pbs_id(j, &server), 15),
                fit(j.user.clone(), 8),
                fit(j.partition.clone(), 8),
                fit(j.name.clone(), 10),
                "--",
                j.nodes.len().max(1),
                j.cpus,
                j.memory.map_or("--".into(), short_size),
                j.time_limit.map_or("--".into(), hm),
                state(j),
                elapsed
            )?;
            if nodes && !j.nodes.is_empty() {
                match one_line {
                    true => writeln!(out, " {}", exec_host(j))?,
                    false => writeln!(out, "\n   {}", exec_host(j))?,
                }
            } else {
                writeln!(out)?;
            }
            if let Some(comment) = comment(j).filter(|_| comments) {
                writeln!(out, "   {comment}")?;
            }
        }
        return Ok(status);
    }
    writeln!(
        out,
        "{:<17} {:<16} {:<16}  {:>8} S Queue",
        "Job id", "Name", "User", "Time Use"
    )?;
    writeln!(
        out,
        "{} {} {}  {} - -----",
        "-".repeat(17),
        "-".repeat(16),
        "-".repeat(16),
        "-".repeat(8)
    )?;
    for (j, _) in &lines {
        writeln!(
            out,
            "{:<17} {:<16} {:<16}  {:>8} {} {}",
            fit(pbs_id(j, &server), 17),
            fit(j.name.clone(), 16),
            fit(j.user.clone(), 16),
            time_use(j),
            state(j),
            j.partition
        )?;
    }
    Ok(status)
}

const PBSDSH_USAGE: &str =
    "pbsdsh [-c COPIES | -n NODE | -h HOST] [-u] [-o] [-v] PROGRAM [ARGS ...]";

/// Torque's and PBS Pro's pbsdsh, in a job: PROGRAM on each of the job's slots (its
/// PBS_NODEFILE's lines) at once, as one step of the job (`berth step`); with `-u` once on
/// each of its nodes, `-c N` on its first N slots, `-n I` on slot I's host, `-h HOST` on
/// that host. Each task has PBS_NODENUM (its node's index) and PBS_VNODENUM (its slot: with
/// -u and -h its host's first); none reads pbsdsh's input.
/// Its output is pbsdsh's
/// (-o, which asks for that, changes nothing); -s (one slot after another) is refused.
pub fn pbsdsh(words: Vec<String>) -> Result<i32> {
    let usage = |why: String| super::usage_error(format!("pbsdsh: {why}"), PBSDSH_USAGE);
    let Some(job) = crate::step::job_id_from_env()? else {
        bail!("pbsdsh runs a program on the nodes of the job it is called in: call it from a job's script");
    };
    let mut i = 0;
    let (mut copies, mut slot, mut host, mut unique) = (None, None, None, false);
    while let Some(w) = words.get(i).filter(|w| w.starts_with('-')) {
        let mut value = || {
            i += 1;
            (words.get(i).cloned()).ok_or_else(|| usage(format!("{w} takes a value")))
        };
        let number =
            |v: String| (v.parse::<u32>()).map_err(|_| usage(format!("{w} {v}: not a number")));
        match w.as_str() {
            "-c" => copies = Some(number(value()?)?),
            "-n" => slot = Some(number(value()?)?),
            "-h" => host = Some(value()?),
            "-u" => unique = true,
            "-o" | "-v" => {}
            "-s" => bail!("pbsdsh -s: berth starts the tasks together, not one after another; run pbsdsh -n I for each slot in a loop instead"),
            "--" => {
                i += 1;
                break;
            }
            other => return Err(usage(format!("unknown option {other}"))),
        }
        i += 1;
    }
    let argv = words[i..].to_vec();
    if argv.is_empty() {
        return Err(usage("name the program to run".into()));
    }
    let ways = [copies.is_some(), slot.is_some(), host.is_some(), unique];
    if ways.iter().filter(|&&x| x).count() > 1 {
        let e = "-c, -n, -h and -u are each a way to choose where: give one";
        return Err(usage(e.into()));
    }
    // The job's slots, one line (a host) each, as PBS_NODEFILE lists them.
    let nodefile = std::env::var("PBS_NODEFILE")
        .context("$PBS_NODEFILE is not set: pbsdsh runs in a job's script")?;
    let slots: Vec<String> = std::fs::read_to_string(&nodefile)
        .with_context(|| format!("reading $PBS_NODEFILE ({nodefile})"))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let mut hosts = slots.clone();
    hosts.dedup();
    // A slot's host's index and its own, as Torque numbers them.
    let slot_of = |vnode: u32| berth_api::PbsSlot {
        node: (hosts.iter().position(|h| *h == slots[vnode as usize])).unwrap_or(0) as u32,
        vnode,
    };
    let first_slot = |host: &str| slot_of(slots.iter().position(|s| s == host).unwrap_or(0) as u32);
    // Each task runs to its end whatever the others do, as pbsdsh waits for them all.
    let mut request = berth_api::StepRequest {
        job: Some(job),
        ntasks: None,
        kill_on_bad_exit: false,
        ..berth_api::StepRequest::new(
            argv,
            crate::step::environment(),
            crate::step::current_dir()?,
        )
    };
    if let Some(n) = copies {
        if n == 0 || n as usize > slots.len() {
            bail!("pbsdsh -c {n}: the job has {} slots", slots.len());
        }
        request.ntasks = Some(n);
    } else if let Some(n) = slot {
        let Some(on) = slots.get(n as usize) else {
            bail!(
                "pbsdsh -n {n}: the job's slots are 0 to {}",
                slots.len().saturating_sub(1)
            );
        };
        (request.ntasks, request.nodelist) = (Some(1), Some(vec![on.clone()]));
        request.pbs_slots = vec![slot_of(n)];
    } else if let Some(h) = host {
        if !hosts.contains(&h) {
            bail!(
                "pbsdsh -h {h}: not a host of the job (its hosts: {})",
                hosts.join(" ")
            );
        }
        request.pbs_slots = vec![first_slot(&h)];
        (request.ntasks, request.nodelist) = (Some(1), Some(vec![h]));
    } else if unique {
        let n = hosts.len() as u32;
        (request.ntasks, request.nodes) = (Some(n), Some(n));
        request.pbs_slots = hosts.iter().map(|h| first_slot(h)).collect();
    }
    // Its tasks read no input, as those Torque's pbsdsh spawns (not the script's).
    crate::step::input_from_null();
    crate::step::run(request)
}

/// An array's indices as PBS Pro writes a range list: runs of one step as `A-B:S` (`:1`
/// left out), the rest one by one (`3-9:2,12`).
fn stepped_list(indices: &[u32]) -> String {
    let mut v = indices.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        // The longest run of one step from here; two indices more than one apart are two.
        let mut end = i;
        if let Some(step) = v.get(i + 1).map(|next| next - v[i]) {
            while v.get(end + 1).is_some_and(|&next| next - v[end] == step) {
                end += 1;
            }
            if end == i + 1 && step > 1 {
                end = i;
            }
        }
        parts.push(match end - i {
            0 => v[i].to_string(),
            _ => match v[i + 1] - v[i] {
                1 => format!("{}-{}", v[i], v[end]),
                step => format!("{}-{}:{step}", v[i], v[end]),
            },
        });
        i = end + 1;
    }
    parts.join(",")
}

/// `48:00:00`: a time as PBS writes it, hours past a day and all.
fn walltime(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    format!("{h:02}:{m:02}:{s:02}")
}

/// `4gb`, `512mb`: a size as PBS writes it.
fn short_size(bytes: u64) -> String {
    const GB: u64 = 1 << 30;
    const MB: u64 = 1 << 20;
    match bytes {
        b if b >= GB && b % GB == 0 => format!("{}gb", b / GB),
        b if b >= MB => format!("{}mb", b / MB),
        b => format!("{}kb", b.div_ceil(1024)),
    }
}

/// qstat -f: a job's attributes, PBS's names.
fn full_form(
    out: &mut impl Write,
    j: &JobInfo,
    array: Option<&ArrayState>,
    server: &str,
) -> Result<()> {
    writeln!(out, "Job Id: {}", pbs_id(j, server))?;
    for (k, v) in full_attributes(j, array, server) {
        writeln!(out, "    {k} = {v}")?;
    }
    writeln!(out)?;
    Ok(())
}

/// `qstat -f -F json`: PBS Pro's document, each job's attributes under its id, an
/// attribute `A.B` as B of object A (`Resource_List`), whole numbers as numbers.
fn full_json(lines: &[Line], server: &str) -> String {
    let mut all = serde_json::Map::new();
    for (j, array) in lines {
        let mut attrs = serde_json::Map::new();
        for (key, text) in full_attributes(j, array.as_ref(), server) {
            let value = match text.parse::<i64>() {
                Ok(n) => serde_json::Value::from(n),
                Err(_) => serde_json::Value::from(text),
            };
            match key.split_once('.') {
                Some((outer, inner)) => {
                    let object = attrs
                        .entry(outer)
                        .or_insert_with(|| serde_json::Value::Object(Default::default()));
                    if let Some(object) = object.as_object_mut() {
                        object.insert(inner.to_string(), value);
                    }
                }
                None => {
                    attrs.insert(key.to_string(), value);
                }
            }
        }
        all.insert(pbs_id(j, server), serde_json::Value::Object(attrs));
    }
    serde_json::json!({
        "timestamp": berth_controller::now(),
        "pbs_version": "berth",
        "pbs_server": server,
        "Jobs": all,
    })
    .to_string()
}

/// `qstat -f`'s attributes of job `j` (an array's own line with `array`), in PBS's order.
fn full_attributes(
    j: &JobInfo,
    array: Option<&ArrayState>,
    server: &str,
) -> Vec<(&'static str, String)> {
    let host = match j.submit_host.as_str() {
        "" => server,
        h => h,
    };
    let mut attrs: Vec<(&str, String)> = vec![
        ("Job_Name", j.name.clone()),
        (
            "Job_Owner",
            match j.submit_host.as_str() {
                "" => j.user.clone(),
                h => format!("{}@{h}", j.user),
            },
        ),
        ("job_state", state(j).to_string()),
        ("queue", j.partition.clone()),
        ("server", server.to_string()),
        ("ctime", ctime(j.submit_time)),
        ("qtime", ctime(j.submit_time)),
        // (On the host it was submitted from, as PBS writes them.)
        ("Output_Path", format!("{host}:{}", j.stdout)),
        (
            "Error_Path",
            format!("{host}:{}", j.stderr.as_ref().unwrap_or(&j.stdout)),
        ),
        (
            "Join_Path",
            if j.stderr.is_none() { "oe" } else { "n" }.to_string(),
        ),
        (
            "Hold_Types",
            match (j.held, j.reason.as_deref()) {
                // A dependency's wait is PBS's system hold.
                (false, Some(r)) if r.starts_with("Dependency") && j.start_time.is_none() => "s",
                (false, _) => "n",
                (true, Some("JobHeldAdmin")) if j.owner_hold => "uo",
                (true, Some("JobHeldAdmin")) => "o",
                (true, _) => "u",
            }
            .to_string(),
        ),
        ("Resource_List.ncpus", j.cpus.to_string()),
        ("Resource_List.nodect", j.nodes.len().max(1).to_string()),
    ];
    if let Some(m) = j.memory {
        attrs.push(("Resource_List.mem", short_size(m)));
    }
    attrs.push(("Resource_List.select", select(j)));
    if let Some(mask) = j.umask {
        attrs.push(("umask", format!("{mask:o}")));
    }
    if let Some(t) = j.time_limit {
        attrs.push(("Resource_List.walltime", walltime(t)));
    }
    if let Some(t) = j.begin_time {
        attrs.push(("Execution_Time", ctime(t)));
    }
    if let Some(dependency) = &j.dependency {
        attrs.push(("depend", pbs_dependency(dependency, server)));
    }
    if let Some(account) = &j.account {
        attrs.push(("Account_Name", account.clone()));
    }
    // How many times it has run (its runs before a qrerun too).
    let runs = j.restarts + u32::from(j.start_time.is_some());
    if runs > 0 {
        attrs.push(("run_count", runs.to_string()));
    }
    // Where the scheduler holds a place for it (PBS Pro's estimates).
    if let Some(t) = j.expected_start {
        attrs.push(("estimated.start_time", ctime(t)));
        attrs.push(("estimated.exec_vnode", j.planned_nodes.join("+")));
    }
    if let Some(start) = j.start_time {
        attrs.push(("stime", ctime(start)));
        attrs.push(("exec_host", exec_host(j)));
        attrs.push(("resources_used.walltime", walltime(batch::elapsed(j))));
    }
    // A running job's so far (read from its nodes), an ended one's in the end.
    let running = batch::running_usage(j);
    let used = match &running {
        Some(u) => (Some(u.cpu_seconds() as u64), Some(u.memory_bytes())),
        None => (j.cpu_usec.map(|u| u / 1_000_000), j.max_rss_bytes),
    };
    if let Some(cpu) = used.0 {
        attrs.push(("resources_used.cput", walltime(cpu)));
    }
    if let Some(mem) = used.1 {
        attrs.push(("resources_used.mem", short_size(mem)));
    }
    if let Some(image) = &j.image {
        attrs.push(("berth_image", image.clone()));
    }
    if let Some(end) = j.end_time {
        attrs.push(("mtime", ctime(end)));
        let code = match (j.exit_code, j.signal) {
            (_, Some(sig)) => 256 + sig,
            (Some(code), None) => code,
            _ => -1,
        };
        attrs.push(("Exit_status", code.to_string()));
    }
    if let Some(comment) = comment(j) {
        attrs.push(("comment", comment));
    }
    if let Some(a) = array {
        // Its own, not its first subjob's: how it ended, once all its subjobs have.
        let own = [
            "exec_host",
            "resources_used.walltime",
            "resources_used.cput",
            "resources_used.mem",
            "mtime",
            "Exit_status",
        ];
        attrs.retain(|(k, _)| !own.contains(k));
        if let Some((end, status)) = a.ended {
            attrs.push(("mtime", ctime(end)));
            attrs.push(("Exit_status", status.to_string()));
        }
        let remaining = match a.queued.is_empty() {
            true => "-".to_string(),
            false => stepped_list(&a.queued),
        };
        attrs.extend([
            ("array", "True".to_string()),
            (
                "array_state_count",
                format!(
                    "Queued:{} Running:{} Exiting:0 Expired:{}",
                    a.queued.len(),
                    a.running,
                    a.expired
                ),
            ),
            ("array_indices_submitted", a.submitted.clone()),
            ("array_indices_remaining", remaining),
        ]);
    } else if let (Some(a), Some(i)) = (j.array_job_id, j.array_task_id) {
        attrs.push(("array_id", format!("{a}[].{server}")));
        attrs.push(("array_index", i.to_string()));
    }
    let rerunable = match j.requeue {
        Some(false) => "False",
        _ => "True",
    };
    attrs.push(("Rerunable", rerunable.to_string()));
    attrs.push((
        "PBS_O_WORKDIR",
        j.submit_dir.clone().unwrap_or_else(|| j.workdir.clone()),
    ));
    attrs
}

/// A job's chunks as PBS Pro's Resource_List.select says them: each node's CPUs, ranks and
/// memory (`2:ncpus=4:mpiprocs=4:mem=8gb`).
fn select(j: &JobInfo) -> String {
    let chunks = match j.nodes.len() {
        0 => j.min_nodes.max(1) as u64,
        n => n as u64,
    };
    let mut select = format!(
        "{chunks}:ncpus={}:mpiprocs={}",
        j.cpus / chunks,
        (u64::from(j.ntasks) / chunks).max(1)
    );
    if let Some(m) = j.memory {
        select += &format!(":mem={}", short_size(m));
    }
    select
}

/// A job's dependency (Slurm's `afterok:42:43,afterany:44`, berth's form) as PBS writes
/// it: each job id with its server (`afterok:42.server:43.server`), where PBS's form can
/// say it: all of a list of terms. Any one of them (`?`), a delay (`+5`), an LSF condition
/// (`done(42) || exit(43)`) are shown as berth has them, not as a list PBS would read as
/// all of them.
fn pbs_dependency(dependency: &str, server: &str) -> String {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // (An array's whole, Slurm's 42_*, is PBS's 42[]; its subjob 42_3, 42[3].)
    let with_server = |id: &str| match id.split_once('_') {
        _ if digits(id) => Some(format!("{id}.{server}")),
        Some((array, "*")) if digits(array) => Some(format!("{array}[].{server}")),
        Some((array, i)) if digits(array) && digits(i) => Some(format!("{array}[{i}].{server}")),
        _ => None,
    };
    let term = |term: &str| -> Option<String> {
        // (Without Slurm's `(unfulfilled)`.)
        let term = match term.split_once('(') {
            Some((term, status)) if status.ends_with(')') && !status.contains('(') => term,
            Some(_) => return None,
            None => term,
        };
        if term == "singleton" {
            return Some(term.to_string());
        }
        let (kind, ids) = term.split_once(':')?;
        let known = ["after", "afterok", "afternotok", "afterany", "aftercorr"];
        let ids: Vec<String> = ids.split(':').map(with_server).collect::<Option<_>>()?;
        known
            .contains(&kind)
            .then(|| format!("{kind}:{}", ids.join(":")))
    };
    let terms: Option<Vec<String>> = match dependency.contains('?') {
        true => None,
        false => dependency.split(',').map(term).collect(),
    };
    terms.map_or_else(|| dependency.to_string(), |t| t.join(","))
}

/// The scheduler's comment on job `j`, as PBS Pro's qstat -s and -f show it: why it does
/// not run, or where and since when it does.
fn comment(j: &JobInfo) -> Option<String> {
    let ran = || {
        let start = j.start_time?;
        let per = cpus_per_node(j).unwrap_or(1);
        let chunks: Vec<String> = (j.nodes.iter())
            .map(|n| format!("({n}:ncpus={per})"))
            .collect();
        Some(format!(
            "Job run at {} on {}",
            ctime(start),
            chunks.join("+")
        ))
    };
    match (j.state.as_str(), &j.reason) {
        ("PENDING", reason) => reason.as_ref().map(|r| format!("Not Running: {r}")),
        ("RUNNING" | "SUSPENDED", _) => ran(),
        // An array some of whose subjobs have run and some not yet.
        (BEGUN, _) => j
            .start_time
            .map(|start| format!("Job Array Began at {}", ctime(start))),
        // Why it ended where berth knows more than its status (a file it could not open),
        // as PBS's comment says why a job did not run.
        (_, Some(why)) if why.starts_with(berth_agent::runner::UNDELIVERED) => {
            ran().map(|ran| format!("{ran} and finished; {why}"))
        }
        (_, Some(why)) if !why.starts_with("NonZeroExitCode") => Some(format!("Job failed: {why}")),
        _ => ran().map(|ran| format!("{ran} and finished")),
    }
}

/// qstat -B's and -Q's counts of `jobs`: Tot, Que, Run (suspended ones too), Hld, Wat.
fn by_state<'a>(jobs: impl Iterator<Item = &'a JobInfo>) -> [usize; 5] {
    let mut n = [0; 5];
    for j in jobs {
        n[0] += 1;
        match state(j) {
            'Q' => n[1] += 1,
            'R' | 'S' => n[2] += 1,
            'H' => n[3] += 1,
            'W' => n[4] += 1,
            _ => {}
        }
    }
    n
}

/// The `total_jobs` and `state_count` attributes of a queue's or the server's jobs, counted
/// by [`by_state`], as qstat -Qf and -Bf list them.
fn counts([tot, que, run, hld, wat]: [usize; 5]) -> String {
    format!(
        "    total_jobs = {tot}\n    state_count = Transit:0 Queued:{que} Held:{hld} Waiting:{wat} Running:{run} Exiting:0 Begun:0"
    )
}

/// qstat -B: the server (the controller) with its jobs by state; -Bf its attributes, as
/// PBS lists a server's.
fn qstat_server(full: bool) -> Result<i32> {
    let counted = by_state(active_jobs()?.iter());
    let mut out = std::io::stdout().lock();
    if full {
        let parts: Vec<PartitionInfo> =
            crate::client::request("GET", "/v1/partitions", None::<&()>)?;
        let server = crate::client::controller_host();
        writeln!(out, "Server: {server}")?;
        writeln!(out, "    server_state = Active")?;
        writeln!(out, "    server_host = {server}")?;
        writeln!(out, "    scheduling = True")?;
        writeln!(out, "{}", counts(counted))?;
        if let Some(default) = parts.iter().find(|p| p.default) {
            writeln!(out, "    default_queue = {}", default.name)?;
        }
        writeln!(out, "    pbs_version = berth {}", env!("CARGO_PKG_VERSION"))?;
        writeln!(out)?;
        return Ok(0);
    }
    let [tot, que, run, hld, wat] = counted;
    writeln!(
        out,
        "{:<16} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} Status",
        "Server", "Max", "Tot", "Que", "Run", "Hld", "Wat", "Trn", "Ext"
    )?;
    writeln!(
        out,
        "{} ----- ----- ----- ----- ----- ----- ----- ----- -----------",
        "-".repeat(16)
    )?;
    let server = cut(&crate::client::controller_host(), 16);
    writeln!(
        out,
        "{server:<16} {:>5} {tot:>5} {que:>5} {run:>5} {hld:>5} {wat:>5} {:>5} {:>5} Active",
        0, 0, 0
    )?;
    Ok(0)
}

/// PBS's exit status for an unknown queue (PBSE_UNKQUE).
const UNKNOWN_QUEUE: i32 = 170;

/// qstat -Q: the queues (partitions) with their jobs by state; -Qf each queue's attributes;
/// Torque's -q their limits. A queue not there is said, as PBS says it.
fn qstat_queues(names: &[String], full: bool, limits: bool) -> Result<i32> {
    let parts: Vec<PartitionInfo> = crate::client::request("GET", "/v1/partitions", None::<&()>)?;
    let jobs = active_jobs()?;
    let mut status = 0;
    for name in names
        .iter()
        .filter(|n| !parts.iter().any(|p| &p.name == *n))
    {
        berth_core::say!("qstat: Unknown queue {name}");
        status = UNKNOWN_QUEUE;
    }
    let shown: Vec<&PartitionInfo> = (parts.iter())
        .filter(|p| names.is_empty() || names.contains(&p.name))
        .collect();
    let mut out = std::io::stdout().lock();
    let hms = |t: Option<u64>| t.map_or("--".into(), walltime);
    if limits {
        let server = crate::client::controller_host();
        writeln!(out, "\nserver: {server}\n")?;
        writeln!(
            out,
            "Queue            Memory CPU Time Walltime Node  Run Que Lm  State"
        )?;
        writeln!(
            out,
            "---------------- ------ -------- -------- ----  --- --- --  -----"
        )?;
        let (mut runs, mut queued) = (0, 0);
        for p in &shown {
            let [_, que, run, hld, wat] = by_state(jobs.iter().filter(|j| j.partition == p.name));
            let (que, up) = (que + hld + wat, if p.state == "up" { "E R" } else { "D S" });
            runs += run;
            queued += que;
            writeln!(
                out,
                "{:<16}   --      --   {:>8}   --  {run:>4} {que:>3} --   {up}",
                cut(&p.name, 16),
                hms(p.max_time),
            )?;
        }
        writeln!(out, "{:>52}\n{runs:>48} {queued:>5}", "----- -----")?;
        return Ok(status);
    }
    if full {
        for p in &shown {
            let up = if p.state == "up" { "True" } else { "False" };
            writeln!(out, "Queue: {}", p.name)?;
            writeln!(out, "    queue_type = Execution")?;
            writeln!(out, "    Priority = {}", p.priority)?;
            let here = by_state(jobs.iter().filter(|j| j.partition == p.name));
            writeln!(out, "{}", counts(here))?;
            if let Some(max) = p.max_time {
                writeln!(out, "    resources_max.walltime = {}", walltime(max))?;
            }
            if let Some(default) = p.default_time {
                writeln!(
                    out,
                    "    resources_default.walltime = {}",
                    walltime(default)
                )?;
            }
            // PBS's per-user limits: jobs queued (waiting or running), CPUs running.
            if let Some(n) = p.max_jobs_per_user {
                writeln!(out, "    max_queued = [u:PBS_GENERIC={n}]")?;
            }
            if let Some(n) = p.max_cpus_per_user {
                writeln!(out, "    max_run_res.ncpus = [u:PBS_GENERIC={n}]")?;
            }
            writeln!(out, "    enabled = {up}")?;
            writeln!(out, "    started = {up}\n")?;
        }
        return Ok(status);
    }
    writeln!(
        out,
        "{:<16} {:>5} {:>5} {:>3} {:>3} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} Type",
        "Queue", "Max", "Tot", "Ena", "Str", "Que", "Run", "Hld", "Wat", "Trn", "Ext"
    )?;
    writeln!(
        out,
        "{} ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----",
        "-".repeat(16)
    )?;
    for p in &shown {
        let [tot, que, run, hld, wat] = by_state(jobs.iter().filter(|j| j.partition == p.name));
        let up = if p.state == "up" { "yes" } else { "no" };
        writeln!(
            out,
            "{:<16} {:>5} {tot:>5} {up:>3} {up:>3} {que:>5} {run:>5} {hld:>5} {wat:>5} {:>5} {:>5} Exec",
            p.name, 0, 0, 0
        )?;
    }
    Ok(status)
}

/// PBS's exit status for a request the caller may not make (PBSE_PERM).
const UNAUTHORIZED: i32 = 159;

/// The PBS command standing for berth's `verb`.
fn command_of(verb: &str) -> &'static str {
    match verb {
        "cancel" => "qdel",
        "release" => "qrls",
        "requeue" => "qrerun",
        "signal" => "qsig",
        "alter" => "qalter",
        _ => "qhold",
    }
}

/// qdel, qhold, qrls, qrerun: berth's `verb` on each job (an array's id, or `42[]`: each of
/// its tasks the verb applies to; `42[2-4]`, or Torque's `-t 2-4 42[]`, those subjobs);
/// silent, as PBS's are.
pub fn verb(verb: &str, words: Vec<String>) -> Result<i32> {
    let command = command_of(verb);
    let mut words = getopt_words(words, "", "Wht", &[]);
    // qdel -W force: ended however it goes (berth's cancel is that already).
    if matches!(verb, "cancel" | "requeue") {
        match value(&mut words, "-W")?.as_deref() {
            None | Some("force") => {}
            Some(other) => bail!("{command} -W {other}: berth takes -W force"),
        }
    }
    // qhold/qrls -h: u (the default), the owner's hold, which the owner gives and lifts;
    // o or s, an operator's or the system's, which only root gives and lifts (berth's
    // administrator's hold: one for both), in any combination.
    let holds = match verb {
        "hold" | "release" => match value(&mut words, "-h")? {
            None => Some(hold_query("u")),
            Some(t) if !t.is_empty() && t.chars().all(|c| "uos".contains(c)) => {
                Some(hold_query(&t))
            }
            Some(other) => bail!("{command} -h {other}: hold types are u, o and s"),
        },
        _ => None,
    };
    // Torque's -t RANGE: those subjobs of each array named.
    let words = match value(&mut words, "-t")? {
        Some(range) if verb != "requeue" => (words.iter())
            .map(|w| {
                let (id, server) = w.split_once('.').unwrap_or((w, ""));
                let id = id.strip_suffix("[]").unwrap_or(id);
                let server = if server.is_empty() {
                    String::new()
                } else {
                    format!(".{server}")
                };
                format!("{id}[{range}]{server}")
            })
            .collect(),
        Some(_) => bail!("{command}: berth does not know the option -t"),
        None => words,
    };
    act_on(verb, &element_lists(words)?, |job| match verb {
        "cancel" => job.cancel(None, Default::default()),
        _ => job.act(verb, holds),
    })
}

/// The holds PBS's hold types name (`u`, `o`, `s`), as the API's query: the owner's, an
/// administrator's, or both.
fn hold_query(types: &str) -> &'static str {
    match (types.contains('u'), types.contains(['o', 's'])) {
        (true, false) => "owners=true",
        (false, _) => "admin=true",
        (true, true) => "owners=true&admin=true",
    }
}

/// qalter: `[options] JOBID` in qsub's words (but -h, which takes hold types, as qhold's:
/// `u`, `o`, `s`, or `n` to release it); silent, as PBS's. An unknown or finished job is
/// said as the other commands say it.
pub fn qalter(words: Vec<String>) -> Result<i32> {
    let mut words = getopt_words(words, "", "h", &[]);
    let hold = value(&mut words, "-h")?;
    if let Some(types) = &hold {
        if types.is_empty() || !types.chars().all(|c| "uosn".contains(c)) {
            bail!("qalter -h {types}: hold types are u, o, s and n (none)");
        }
    }
    let Some(spec) = words.last().cloned() else {
        return Err(super::usage_error(
            "qalter: name the job",
            "qalter [options] JOBID",
        ));
    };
    let status = match words.len() {
        1 => 0,
        _ => act_on("alter", std::slice::from_ref(&spec), |_| {
            alter(Family::Pbs, words.clone()).map(|_| ())
        })?,
    };
    let Some(types) = hold.filter(|_| status == 0) else {
        return Ok(status);
    };
    act_on("alter", &[spec], |job| match types.as_str() {
        "n" => job.act("release", None),
        _ => job.act("hold", Some(hold_query(&types))),
    })
}

/// qsig [-s SIGNAL] JOBID...: the signal (SIGTERM by default) to each job.
pub fn qsig(words: Vec<String>) -> Result<i32> {
    let mut words = getopt_words(words, "", "s", &[]);
    let signal = value(&mut words, "-s")?.unwrap_or_else(|| "TERM".into());
    act_on("signal", &element_lists(words)?, |job| {
        match signal.as_str() {
            // PBS Pro's special signals: the job's suspension and resumption, a manager's
            // or an operator's alone (berth's own suspend acts on the user's).
            // (Said as PBS says a refusal: Unauthorized Request, 159.)
            "suspend" | "resume" if !crate::settings::is_root() => {
                Err(crate::client::Failure::Forbidden(format!(
                    "only root suspends and resumes jobs (berth {signal} acts on your own)"
                ))
                .into())
            }
            "suspend" | "resume" => job.act(&signal, None),
            // (PBS signals the job's session leader, the batch shell.)
            _ => job.cancel(Some(signal.clone()), berth_api::SignalTarget::Batch),
        }
    })
}

/// Calls `act` with each job `specs` name; an unknown or refused one is reported as PBS
/// reports it, and the others go on.
fn act_on(verb: &str, specs: &[String], act: impl Fn(batch::Target) -> Result<()>) -> Result<i32> {
    let command = command_of(verb);
    no_other_options(command, specs, "JOBID[.SERVER] ...")?;
    if specs.is_empty() {
        return Err(super::usage_error(
            format!("{command}: name the jobs"),
            &format!("{command} JOBID[.SERVER]|JOBID[INDEX]|JOBID[]|JOBID[RANGE] ..."),
        ));
    }
    let server = crate::client::controller_host();
    // The id as PBS says it back: with its server.
    let full = |spec: &str| match spec.contains('.') {
        true => spec.to_string(),
        false => format!("{spec}.{server}"),
    };
    let mut status = 0;
    for spec in specs {
        // A requeue asks first: berth requeues an ended job, as Slurm does; PBS refuses it.
        let ended = match verb {
            "requeue" => finished(spec),
            _ => None,
        };
        let failure = match ended {
            Some(_) => None,
            None => batch::target(spec).and_then(&act).err(),
        };
        let ended = match (&failure, ended) {
            (Some(e), _) if crate::client::is_not_found(e) => {
                berth_core::say!("{command}: Unknown Job Id {}", full(spec));
                status = status.max(UNKNOWN_JOB);
                continue;
            }
            (Some(e), _) if crate::client::is_forbidden(e) => {
                berth_core::say!("{command}: Unauthorized Request  {}", full(spec));
                status = status.max(UNAUTHORIZED);
                continue;
            }
            (Some(_), None) => finished(spec),
            (_, ended) => ended,
        };
        // One that has ended: PBS Pro's "Job has finished" (PBSE_HISTJOBID, 35).
        match (ended, failure) {
            (Some(j), _) => {
                berth_core::say!("{command}: Job has finished {}", pbs_id(&j, &server));
                status = status.max(JOB_FINISHED);
            }
            (None, Some(e)) => {
                berth_core::say!("{command}: {}: {e}", full(spec));
                status = status.max(1);
            }
            (None, None) => {}
        }
    }
    Ok(status)
}

/// Job `spec` if it has ended: a job, a subjob, or an array whose subjobs all have (as
/// its own line: `42[]`).
fn finished(spec: &str) -> Option<JobInfo> {
    let (id, index) = batch::job_spec(spec).ok()?;
    let jobs = batch::named_jobs(&[spec.to_string()]).ok()?;
    let over = |j: &JobInfo| !matches!(j.state.as_str(), "PENDING" | "RUNNING" | "SUSPENDED");
    if !jobs.iter().all(over) {
        return None;
    }
    let mut job = jobs.into_iter().next()?;
    if index.is_none() && job.array_job_id == Some(id) {
        job.array_task_id = None;
    }
    Some(job)
}

/// pbsnodes [-a] [NODE...]; -l: the nodes down or offline, one a line.
/// pbsnodes -o NODE... [-N NOTE]: the nodes offline (drained: their jobs finish, no new ones
/// start); -c (Torque's -r too): back in service.
pub fn pbsnodes(words: Vec<String>) -> Result<i32> {
    let mut words = getopt_words(words, "alvocr", "N", &[]);
    flag(&mut words, "-a");
    // -v (Torque's verbose -a): the same attributes.
    flag(&mut words, "-v");
    let list = flag(&mut words, "-l");
    let offline = flag(&mut words, "-o");
    let clear = flag(&mut words, "-c") | flag(&mut words, "-r");
    let note = value(&mut words, "-N")?;
    const USAGE: &str =
        "pbsnodes [-a] [NODE ...] | pbsnodes -l | pbsnodes -o NODE ... [-N NOTE] | pbsnodes -c NODE ...";
    no_other_options("pbsnodes", &words, USAGE)?;
    if offline || clear {
        use crate::batch::NodeCommand;
        if words.is_empty() || (offline && clear) {
            return Err(super::usage_error(
                "pbsnodes: name the nodes to take offline (-o) or back (-c)",
                USAGE,
            ));
        }
        nodes_named(&words)?;
        for node in words {
            crate::batch::node(match offline {
                true => NodeCommand::Drain {
                    node,
                    reason: note
                        .clone()
                        .unwrap_or_else(|| "offline (pbsnodes -o)".into()),
                },
                false => NodeCommand::Resume { node },
            })?;
        }
        return Ok(0);
    }
    let nodes = nodes_named(&words)?;
    let jobs = active_jobs()?;
    let server = crate::client::controller_host();
    let mut out = std::io::stdout().lock();
    let state = |s: &str| match s {
        "idle" | "mixed" => "free",
        "allocated" => "job-exclusive",
        "down" => "down",
        _ => "offline",
    };
    for n in &nodes {
        let st = state(&n.state);
        if list {
            if matches!(st, "down" | "offline") {
                writeln!(
                    out,
                    "{:<20} {:<14} {}",
                    n.name,
                    st,
                    n.reason.as_deref().unwrap_or("")
                )?;
            }
            continue;
        }
        // Each job's CPUs here as Torque's slots: `0-3/12.server, 5/13.server`.
        let here: Vec<String> = (jobs.iter())
            .filter_map(|j| Some((j, j.cpu_ids.iter().find(|c| c.node == n.name)?)))
            .flat_map(|(j, held)| {
                let id = pbs_id(j, &server);
                let slots = berth_core::quantity::number_list(&held.cpu_ids);
                slots
                    .split(',')
                    .map(|s| format!("{s}/{id}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        writeln!(out, "{}", n.name)?;
        writeln!(out, "     state = {st}")?;
        writeln!(out, "     np = {}", n.cpus)?;
        writeln!(out, "     properties = {}", n.features.join(","))?;
        writeln!(out, "     ntype = cluster")?;
        writeln!(out, "     jobs = {}", here.join(", "))?;
        if let Some(status) = torque_status(n, berth_agent::runner::now()) {
            writeln!(out, "     status = {status}")?;
        }
        writeln!(out, "     gpus = {}", n.gpus)?;
        if let Some(reason) = &n.reason {
            writeln!(out, "     note = {reason}")?;
        }
        writeln!(out)?;
    }
    Ok(0)
}

/// Torque's `status` of a node: what its agent last reported (when, its load, its memory),
/// in Torque's keys; `None` before its first report.
fn torque_status(n: &berth_api::NodeInfo, now: u64) -> Option<String> {
    let load = n.cpu_load()?;
    let available = n.memory_available?;
    Some(format!(
        "rectime={},state={},loadave={load:.2},ncpus={},physmem={}kb,availmem={}kb,totmem={}kb,opsys=linux",
        now - n.heard.unwrap_or(0).min(now),
        if n.state == "down" { "down" } else { "free" },
        n.cpus,
        n.memory >> 10,
        available >> 10,
        (n.memory + n.swap) >> 10,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_name_their_jobs_with_the_server() {
        assert_eq!(
            pbs_dependency(
                "afterok:42:43,afterany:44_2(unfulfilled),afterok:38_*",
                "srv"
            ),
            "afterok:42.srv:43.srv,afterany:44[2].srv,afterok:38[].srv"
        );
        assert_eq!(pbs_dependency("singleton", "srv"), "singleton");
        // Not a list of terms all of which must hold: as it is, not misread.
        for other in [
            "afterok:79(unfulfilled)?afternotok:80(unfulfilled)",
            "afterok:79(unfulfilled) && (afternotok:80(unfulfilled) || after:81_*(unfulfilled))",
            "numdone(81, >= 2)",
            "after:79+3(unfulfilled)",
        ] {
            assert_eq!(pbs_dependency(other, "srv"), other);
        }
    }

    /// An array some of whose subjobs have run: begun, not finished.
    #[test]
    fn a_begun_arrays_comment_says_it_began() {
        let j: JobInfo = serde_json::from_value(serde_json::json!({
            "id": 7, "name": "a", "user": "u", "partition": "batch", "state": BEGUN,
            "submit_time": 100, "start_time": 100, "end_time": 200, "nodes": ["n1"],
            "cpus": 1, "workdir": "/w", "stdout": "/w/o", "held": false,
        }))
        .unwrap();
        assert_eq!(
            comment(&j),
            Some(format!("Job Array Began at {}", ctime(100)))
        );
    }

    /// A job waiting for a dependency is on PBS's system hold; one a user holds, a user's.
    #[test]
    fn hold_types_tell_a_dependency_from_a_users_hold() {
        let hold = |held: bool, reason: &str| {
            let j: JobInfo = serde_json::from_value(serde_json::json!({
                "id": 7, "name": "a", "user": "u", "partition": "batch", "state": "PENDING",
                "submit_time": 100, "nodes": [], "cpus": 1, "workdir": "/w", "stdout": "/w/o",
                "held": held, "reason": reason,
            }))
            .unwrap();
            let attrs = full_attributes(&j, None, "srv");
            attrs
                .into_iter()
                .find(|(k, _)| *k == "Hold_Types")
                .unwrap()
                .1
        };
        assert_eq!(hold(false, "Dependency"), "s");
        assert_eq!(hold(false, "Priority"), "n");
        assert_eq!(hold(true, "JobHeldUser"), "u");
        assert_eq!(hold(true, "JobHeldAdmin"), "o");
    }

    #[test]
    fn sizes_and_columns_as_pbs_writes_them() {
        assert_eq!(short_size(4 << 30), "4gb");
        assert_eq!(short_size(1536 << 20), "1536mb");
        assert_eq!(short_size(1000), "1kb");
        assert_eq!(cut("a_long_job_name_here", 16), "a_long_job_name*");
        assert_eq!(cut("short", 16), "short");
    }

    #[test]
    fn remaining_indices_are_written_as_pbs_ranges() {
        assert_eq!(stepped_list(&[3, 5, 7, 9]), "3-9:2");
        assert_eq!(stepped_list(&[1, 2, 3, 7]), "1-3,7");
        assert_eq!(stepped_list(&[2, 9]), "2,9");
        assert_eq!(stepped_list(&[4, 5]), "4-5");
        assert_eq!(stepped_list(&[1, 3, 5, 6, 7, 20]), "1-5:2,6-7,20");
        assert_eq!(stepped_list(&[8]), "8");
    }

    #[test]
    fn an_array_job_is_one_line_unless_its_subjobs_are_asked_for() {
        let job = |id: u64, array: Option<(u64, u32)>, state: &str, held: bool| -> JobInfo {
            serde_json::from_value(serde_json::json!({
                "id": id, "array_job_id": array.map(|a| a.0), "array_task_id": array.map(|a| a.1),
                "name": "j", "user": "u", "partition": "p", "state": state, "submit_time": 0,
                "nodes": [], "cpus": 1, "workdir": "/", "stdout": "o", "held": held,
            }))
            .unwrap()
        };
        let jobs = vec![
            job(5, None, "RUNNING", false),
            // One subjob running: begun.
            job(10, Some((10, 1)), "PENDING", false),
            job(11, Some((10, 2)), "RUNNING", false),
            // All waiting, held: as its first.
            job(20, Some((20, 1)), "PENDING", true),
            job(21, Some((20, 2)), "PENDING", true),
            // Some ended, some waiting: begun; all ended: ended.
            job(30, Some((30, 1)), "COMPLETED", false),
            job(31, Some((30, 2)), "PENDING", false),
            job(40, Some((40, 1)), "COMPLETED", false),
            job(41, Some((40, 2)), "FAILED", false),
        ];
        let arrays: BTreeSet<u64> = [10, 20, 30, 40].into();
        let shown = |subjobs| -> Vec<String> {
            with_array_parents(jobs.clone(), &arrays, subjobs, &BTreeSet::new())
                .iter()
                .map(|(j, _)| format!("{} {}", pbs_id(j, "s"), state(j)))
                .collect()
        };
        assert_eq!(
            shown(false),
            ["5.s R", "10[].s B", "20[].s H", "30[].s B", "40[].s F"]
        );
        assert_eq!(
            shown(true),
            [
                "5.s R",
                "10[].s B",
                "10[1].s Q",
                "10[2].s R",
                "20[].s H",
                "20[1].s H",
                "20[2].s H",
                "30[].s B",
                "30[1].s X",
                "30[2].s Q",
                "40[].s F",
                "40[1].s X",
                "40[2].s X"
            ]
        );
        // The arrays' own counts (qstat -f); an array not shown as one (a subjob named
        // alone) is its subjobs' lines.
        // A subjob named beside its array: its line under the array's.
        let named: Vec<String> =
            with_array_parents(jobs.clone(), &[30].into(), false, &[31].into())
                .iter()
                .map(|(j, _)| format!("{} {}", pbs_id(j, "s"), state(j)))
                .collect();
        let pair = ["30[].s B".to_string(), "30[2].s Q".to_string()];
        assert!(named.windows(2).any(|w| w == pair), "{named:?}");
        let lines = with_array_parents(jobs.clone(), &[30].into(), false, &BTreeSet::new());
        let thirty = lines
            .iter()
            .find_map(|(j, a)| (j.id == 30).then_some(a))
            .unwrap();
        assert_eq!(
            thirty
                .as_ref()
                .map(|a| (a.queued.clone(), a.running, a.expired)),
            Some((vec![2], 0, 1))
        );
        let ids: Vec<String> = lines.iter().map(|(j, _)| pbs_id(j, "s")).collect();
        assert_eq!(
            ids,
            ["5.s", "10[1].s", "10[2].s", "20[1].s", "20[2].s", "30[].s", "40[1].s", "40[2].s"]
        );
    }

    #[test]
    fn a_nodes_status_says_what_its_agent_reported_in_torques_keys() {
        let mut n: berth_api::NodeInfo = serde_json::from_value(serde_json::json!({
            "name": "n1", "state": "mixed", "partitions": [], "cpus": 4, "cpus_allocated": 1,
            "memory": 4u64 << 30, "memory_allocated": 0, "gpus": 0, "swap": 1u64 << 30,
        }))
        .unwrap();
        assert_eq!(torque_status(&n, 1000), None);
        n.load = Some(vec![1.5, 1.0, 0.5]);
        n.memory_available = Some(3 << 30);
        n.heard = Some(4);
        assert_eq!(
            torque_status(&n, 1000).unwrap(),
            "rectime=996,state=free,loadave=1.50,ncpus=4,physmem=4194304kb,availmem=3145728kb,totmem=5242880kb,opsys=linux"
        );
    }
}
