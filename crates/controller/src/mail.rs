//! Jobs' mail (sbatch `--mail-type`, bsub `-B`/`-N`, qsub `-m`): a subject line in Slurm's
//! words, sent through the site's mail program (`[batch] mail_program`, Slurm's MailProg)
//! as `PROGRAM -s SUBJECT ADDRESS...`, run as the job's user, never waited for by the caller.

use crate::job::{Job, State};
use berth_core::job::format_duration as duration;
use std::path::Path;

/// What a mail says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Began,
    /// It ended: COMPLETED, or not (`Failed` when the job asked for FAIL mail).
    Ended,
    Failed,
    Requeued,
    /// Its dependency can never be satisfied: it was cancelled.
    InvalidDependency,
    /// It has run this share of its time limit, in percent.
    TimeLimit(u32),
}

impl Event {
    fn word(self) -> String {
        match self {
            Event::Began => "Began".into(),
            Event::Ended => "Ended".into(),
            Event::Failed => "Failed".into(),
            Event::Requeued => "Requeued".into(),
            Event::InvalidDependency => "Invalid dependency".into(),
            Event::TimeLimit(100) => "Reached time limit".into(),
            Event::TimeLimit(p) => format!("Reached {p}% of time limit"),
        }
    }
}

/// The event a job that ended in `state` mails about, if it asked for one: FAIL's for a job
/// that did not complete (when it asked for it), else END's.
pub fn end_event(job: &Job, state: State) -> Option<Event> {
    let mail = &job.request.mail;
    match state {
        State::Completed if mail.end => Some(Event::Ended),
        State::Completed => None,
        _ if mail.fail => Some(Event::Failed),
        _ if mail.end => Some(Event::Ended),
        _ => None,
    }
}

/// The subject of `job`'s mail about `event`, as Slurm words it (`Slurm Job_id=42 Name=sim
/// Ended, Run time 00:10:00, COMPLETED, ExitCode 0`); an array's task names its array.
pub fn subject(job: &Job, event: Event, now: u64) -> String {
    let who = match (job.array_job_id, job.array_task_id) {
        (Some(array), Some(task)) => {
            format!("Slurm Array Task Job_id={array}_{task} ({})", job.id)
        }
        _ => format!("Slurm Job_id={}", job.id),
    };
    let name = &job.request.name;
    let what = event.word();
    let ran = match job.start_time {
        Some(start) => duration(
            job.end_time
                .unwrap_or(now)
                .saturating_sub(start)
                .saturating_sub(job.suspended.read(now)),
        ),
        None => duration(0),
    };
    match event {
        Event::Began => {
            let queued = job
                .start_time
                .unwrap_or(now)
                .saturating_sub(job.submit_time);
            format!("{who} Name={name} {what}, Queued time {}", duration(queued))
        }
        Event::InvalidDependency => format!("{who} Name={name} {what}, CANCELLED"),
        Event::Requeued | Event::TimeLimit(_) => {
            format!("{who} Name={name} {what}, Run time {ran}")
        }
        _ => format!(
            "{who} Name={name} {what}, Run time {ran}, {}, ExitCode {}",
            job.state.name(),
            job.exit_code.unwrap_or(0)
        ),
    }
}

/// The subject of an array's mail once its last task ended (or about its first one's start):
/// `Slurm Array Summary Job_id=42_* (42) Name=sim Ended, COMPLETED, ExitCode 0`, Mixed where
/// its tasks ended differently, the exit codes' range where they differ.
pub fn array_subject(first: &Job, event: Event, tasks: &[(State, i32)]) -> String {
    let array = first.array_job_id.unwrap_or(first.id);
    let head = format!(
        "Slurm Array Summary Job_id={array}_* ({array}) Name={} {}",
        first.request.name,
        event.word()
    );
    if event == Event::Began {
        return head;
    }
    let state = match tasks.first() {
        Some((s, _)) if tasks.iter().all(|(t, _)| t == s) => s.name(),
        _ => "Mixed",
    };
    let low = tasks.iter().map(|(_, c)| *c).min().unwrap_or(0);
    let high = tasks.iter().map(|(_, c)| *c).max().unwrap_or(0);
    let codes = match low == high {
        true => low.to_string(),
        false => format!("[{low}-{high}]"),
    };
    format!("{head}, {state}, ExitCode {codes}")
}

/// Sends `subject` to `job`'s addresses (its user's name without any) through `program`, as
/// the job's user, with Slurm's variables about it; a thread reaps the program. A failure
/// goes to the log: a job is never held up by its mail.
pub fn send(program: &Path, job: &Job, event: Event, subject: String) {
    use std::os::unix::process::CommandExt;
    let id = match berth_runtime::Identity::lookup(&job.user, false) {
        Ok(id) => id,
        Err(e) => {
            berth_core::say!("berth: job {}: no mail sent: {e}", job.id);
            return;
        }
    };
    let to = match job.request.mail_to.as_slice() {
        [] => vec![job.user.clone()],
        some => some.to_vec(),
    };
    let spawned = std::process::Command::new(program)
        .arg("-s")
        .arg(&subject)
        .args(&to)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &id.home)
        .env("USER", &job.user)
        .env("SLURM_JOB_ID", job.id.to_string())
        .env("SLURM_JOB_NAME", &job.request.name)
        .env("SLURM_JOB_USER", &job.user)
        .env("SLURM_JOB_STATE", job.state.name())
        .env("SLURM_JOB_MAIL_TYPE", event.word())
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .uid(id.uid)
        .gid(id.gid)
        .spawn();
    match spawned {
        Ok(mut child) => {
            let (job_id, program) = (job.id, program.display().to_string());
            std::thread::spawn(move || match child.wait() {
                Ok(s) if s.success() => {}
                Ok(s) => berth_core::say!("berth: job {job_id}: {program} {s} sending its mail"),
                Err(e) => berth_core::say!("berth: job {job_id}: {program}: {e}"),
            });
        }
        Err(e) => berth_core::say!(
            "berth: job {}: cannot run the mail program {}: {e} ([batch] mail_program)",
            job.id,
            program.display()
        ),
    }
}
