//! The node agent's step socket: takes `berth step` requests, asks the [`StepAuthority`] (the
//! controller) for a grant, and has the node's launcher fork the step's process (`berth
//! internal step`, exec'd where the launcher cannot) with the client's descriptors as its
//! stdio. It passes the client's signals on to the step's process group, and kills the
//! group if the client goes away (as srun's death ends its step).

use super::wire::{recv_line_with_fds, STDIO_FDS};
use super::{relay, PartEnd, StepLaunch};
use crate::daemon::StepEnd;
use crate::launcher::Launcher;
use berth_api::{AllocationExit, StepEvent, StepRequest, StepSignal};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

/// The longest request line taken (the client's environment travels in it).
const REQUEST_LIMIT: usize = 4 << 20;

/// The steps this process runs, by (job, step), each with the way to end it early or
/// signal its tasks ([`signal_step`]): 0 ends it, another number is a signal.
type Running = std::collections::HashMap<(u64, u32), tokio::sync::mpsc::UnboundedSender<i32>>;
static RUNNING: std::sync::LazyLock<std::sync::Mutex<Running>> =
    std::sync::LazyLock::new(Default::default);

/// Sends `signal` to every task of step `step` of job `job`, which this process runs
/// (`scancel -s SIG JOB.STEP`; 0 ends it, `berth cancel JOB.STEP`: SIGTERM, then the end
/// signal, as when its client goes; the job goes on). One not running here yet (the
/// controller granted it, and the grant is on its way here) gets it once it runs, if that
/// is soon ([`EARLY`]). Whether it runs here, or may be about to.
pub fn signal_step(job: u64, step: u32, signal: i32) -> bool {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(end) = running.get(&(job, step)) {
        return end.send(signal).is_ok();
    }
    let mut early = EARLY.lock().unwrap_or_else(|e| e.into_inner());
    early.retain(|_, (at, _)| at.elapsed() < EARLY_KEPT);
    let (_, signals) = early
        .entry((job, step))
        .or_insert_with(|| (std::time::Instant::now(), Vec::new()));
    signals.push(signal);
    true
}

/// Signals for steps this process did not run yet when they came, by (job, step), with
/// when the first came: a step's cancel may come before its grant reaches its agent.
type Early = std::collections::HashMap<(u64, u32), (std::time::Instant, Vec<i32>)>;
static EARLY: std::sync::LazyLock<std::sync::Mutex<Early>> =
    std::sync::LazyLock::new(Default::default);

/// How long a signal for a step not running here yet waits for it.
const EARLY_KEPT: std::time::Duration = std::time::Duration::from_secs(30);

/// The steps this process runs now, `(job, step)`.
pub fn running_steps() -> Vec<(u64, u32)> {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    running.keys().copied().collect()
}

/// A step's place in [`RUNNING`], for as long as it runs.
struct Registered((u64, u32));

impl Drop for Registered {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        running.remove(&self.0);
    }
}

/// A step this process adopted ([`adopt`]): its process (0: none, it had ended), the job's
/// cgroup (whose processes may reattach to it) and its exit status once it has ended.
struct Adopted {
    pid: u32,
    cgroup: String,
    end: tokio::sync::watch::Receiver<Option<i32>>,
}

/// The steps this process adopted, by (job, step); kept once they end, for a client that
/// reattaches late.
static ADOPTED: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<(u64, u32), Adopted>>,
> = std::sync::LazyLock::new(Default::default);

/// Adopts the steps that the agent before this process started on this node and left (it
/// was restarted): the step processes registered in `jobs`' directories (id, directory).
/// One that is its whole step ([`super::StepLaunch::alone`]) goes on: this process records
/// its end with `authority` and tells it to a client that reattaches
/// ([`StepRequest::attach`]); one that ended meanwhile is recorded from its end record. A
/// part this node ran for another node's agent is kept for that agent to take back
/// ([`keep_part`]). Any other (the local part of a step across nodes, whose relays went
/// with the agent, or one whose client is outside the job, with an allocation the agent
/// held for it) cannot go on without what went with the agent: it is ended, and the
/// controller records its step as lost. Registered in [`RUNNING`] at once: call it before
/// the step socket serves and the controller reconciles its steps.
pub fn adopt<A: StepAuthority>(jobs: Vec<(u64, PathBuf)>, authority: &Arc<A>) {
    for (job, dir) in jobs {
        let dir = dir.join(super::STEPS_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut records = std::collections::BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".end")?.parse().ok())
            else {
                continue;
            };
            let text = std::fs::read(entry.path()).unwrap_or_default();
            if let Ok(r) = serde_json::from_slice::<super::PartRecord>(&text) {
                records.insert(pid, r);
            }
        }
        for (pid, r) in super::registrations(&dir) {
            if r.alive(pid) {
                if r.adoptable {
                    berth_core::say!("berth: step {job}.{}: adopted (its process {pid} went on while the node agent restarted)", r.step);
                    watch(authority, job, pid, dir.clone(), r);
                } else if let Some(spool) = r.spool.clone() {
                    berth_core::say!("berth: step {job}.{}: its part here adopted (its process {pid} went on while the node agent restarted), for the node that runs the step to take back", r.step);
                    let record = dir.join(super::end_record(pid));
                    keep_part(job, r.step, record, spool, Kept::Running(pid, r));
                } else {
                    berth_core::say!("berth: step {job}.{}: ended (it cannot go on without the node agent that served it)", r.step);
                    // SAFETY: kill(2) of the step process, its start time checked.
                    unsafe { libc::kill(pid as libc::pid_t, super::end_signal()) };
                }
                continue;
            }
            // Killed before it could say how it ended.
            let _ = std::fs::remove_file(dir.join(pid.to_string()));
            if r.adoptable && !records.contains_key(&pid) {
                report(authority, StepEnd::failed(job, r.step), r.cgroup, None);
            }
        }
        for (pid, r) in records {
            let record = dir.join(super::end_record(pid));
            if let (false, Some(spool)) = (r.adoptable, r.spool.clone()) {
                let end = PartEnd {
                    code: r.code,
                    signal: r.signal,
                    usage: r.usage,
                };
                keep_part(job, r.step, record, spool, Kept::Ended(end));
                continue;
            }
            if !r.adoptable {
                let _ = std::fs::remove_file(record);
                continue;
            }
            let end = StepEnd {
                code: r.code,
                signal: r.signal,
                usage: r.usage,
                end_time: Some(r.ended).filter(|&t| t > 0),
                ..StepEnd::failed(job, r.step)
            };
            report(authority, end, r.cgroup, Some(record));
        }
    }
}

/// Records `end`, of a step of the job with `cgroup` that ended while the node agent was
/// away, as [`adopt`]ed; then removes its `record`.
fn report<A: StepAuthority>(
    authority: &Arc<A>,
    end: StepEnd,
    cgroup: String,
    record: Option<PathBuf>,
) {
    let (job, step) = (end.job, end.step);
    berth_core::say!(
        "berth: step {job}.{step}: ended with {} while the node agent restarted",
        end.code
    );
    let (ended, end_read) = tokio::sync::watch::channel(Some(end.code));
    adopted(job, step, 0, cgroup, end_read);
    // Listed as running until the controller has its end, so that it is not ended as lost.
    let (signals, _) = tokio::sync::mpsc::unbounded_channel();
    let listed = list(job, step, signals);
    let authority = authority.clone();
    tokio::spawn(async move {
        authority.end(end).await;
        if let Some(record) = record {
            let _ = std::fs::remove_file(record);
        }
        drop((listed, ended));
    });
}

/// Puts step `step` of `job` among the [`ADOPTED`].
fn adopted(
    job: u64,
    step: u32,
    pid: u32,
    cgroup: String,
    end: tokio::sync::watch::Receiver<Option<i32>>,
) {
    let mut all = ADOPTED.lock().unwrap_or_else(|e| e.into_inner());
    all.insert((job, step), Adopted { pid, cgroup, end });
}

/// Puts step `step` of `job` in [`RUNNING`], with `signals` the way to it, until the
/// returned entry is dropped.
fn list(job: u64, step: u32, signals: tokio::sync::mpsc::UnboundedSender<i32>) -> Registered {
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    let early = EARLY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(job, step));
    for signal in early.map(|(_, s)| s).unwrap_or_default() {
        let _ = signals.send(signal);
    }
    running.insert((job, step), signals);
    Registered((job, step))
}

/// A part of a step across nodes that this process adopted ([`adopt`]): its process went
/// on while the node's agent restarted, its output held in its spool's FIFOs, for the agent
/// that took the step to take it back ([`take_part`]) and relay the rest and its end.
pub(crate) struct AdoptedPart {
    /// Its step process (0: it had ended).
    pub pid: u32,
    pub spool: PathBuf,
    /// Its end, once it has ended.
    pub end: tokio::sync::watch::Receiver<Option<PartEnd>>,
    /// Its end record, for whoever relays its end to remove.
    pub record: PathBuf,
    /// Readers of its FIFOs (`out`, `err`), opened as it was adopted: what its tasks wrote
    /// stays in them until it is taken back.
    pub output: Option<[OwnedFd; 2]>,
    /// Among the [`RUNNING`] steps (signals reach it) until it goes.
    _listed: Registered,
}

/// The parts this process adopted and no agent has taken back yet, by (job, step).
static ADOPTED_PARTS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<(u64, u32), AdoptedPart>>,
> = std::sync::LazyLock::new(Default::default);

/// How long an adopted part waits to be taken back: then it is ended (the step's client
/// and its agent have stopped waiting for it by then).
const TAKE_BACK_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Part `step` of `job` that this process adopted, for the agent that took the step to
/// relay the rest of: taken out of [`ADOPTED_PARTS`] (once).
pub(crate) fn take_part(job: u64, step: u32) -> Option<AdoptedPart> {
    let mut parts = ADOPTED_PARTS.lock().unwrap_or_else(|e| e.into_inner());
    parts.remove(&(job, step))
}

/// An adopted part, as [`keep_part`] finds it.
enum Kept {
    /// Its step process still runs (pid, its registration).
    Running(u32, super::Registration),
    /// It ended while no agent was there.
    Ended(PartEnd),
}

/// Keeps part `step` of `job`, whose end `record` its process writes, among the
/// [`ADOPTED_PARTS`]: waits for its end if it runs (signalled as asked, at its time limit,
/// and ended if nobody took it back within [`TAKE_BACK_LIMIT`]), then forgets it if still
/// nobody did.
fn keep_part(job: u64, step: u32, record: PathBuf, spool: PathBuf, kept: Kept) {
    let (pid, running, ended) = match kept {
        Kept::Running(pid, r) => (pid, Some(r), None),
        Kept::Ended(end) => (0, None, Some(end)),
    };
    let (tell, end) = tokio::sync::watch::channel(ended);
    let (signals, asked) = tokio::sync::mpsc::unbounded_channel();
    let reader = |which| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(super::spool_fifo(&spool, which))
            .ok()
            .map(OwnedFd::from)
    };
    let part = AdoptedPart {
        pid,
        spool: spool.clone(),
        end,
        record: record.clone(),
        output: reader("out").zip(reader("err")).map(|(o, e)| [o, e]),
        _listed: list(job, step, signals),
    };
    let kept = move || {
        let parts = ADOPTED_PARTS.lock().unwrap_or_else(|e| e.into_inner());
        parts.contains_key(&(job, step))
    };
    ADOPTED_PARTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((job, step), part);
    let give_up = tokio::time::Instant::now() + TAKE_BACK_LIMIT;
    tokio::spawn(async move {
        if let Some(r) = running {
            let waited = wait_adopted(pid, &r, asked, Some((give_up, Box::new(kept)))).await;
            let end = match read_record(&record) {
                Some(said) => PartEnd {
                    code: said.code,
                    signal: said.signal,
                    usage: said.usage,
                },
                None => {
                    let (code, signal) = waited.unsaid();
                    PartEnd {
                        code,
                        signal,
                        usage: None,
                    }
                }
            };
            let _ = tell.send(Some(end));
        }
        tokio::time::sleep_until(give_up).await;
        if take_part(job, step).is_some() {
            berth_core::say!(
                "berth: step {job}.{step}: its part here was not taken back: forgotten"
            );
            let _ = std::fs::remove_file(&record);
            for which in ["out", "err"] {
                let _ = std::fs::remove_file(super::spool_fifo(&spool, which));
            }
        }
    });
}

/// A step process's end record, if it wrote one.
fn read_record(record: &std::path::Path) -> Option<super::PartRecord> {
    let text = std::fs::read(record).ok()?;
    serde_json::from_slice(&text).ok()
}

/// How [`wait_adopted`] saw an adopted step process end.
struct Waited {
    /// Its time limit ended it.
    timed_out: bool,
    /// It was ended with the step's end signal (after a SIGTERM), not on its own.
    killed: bool,
}

impl Waited {
    /// How a step process that left no end record ended, as far as is known: killed at the
    /// end of its KillWait (SIGKILL), else not known (125).
    fn unsaid(&self) -> (i32, Option<i32>) {
        match self.killed {
            true => (128 + libc::SIGKILL, Some(libc::SIGKILL)),
            false => (125, None),
        }
    }
}

/// A signal for a step: for its process's whole `group`, but the step's end signal, which
/// is for the step's process alone (a leader passes each on to the other nodes), and a
/// SIGSTOP for a step that process `leads` across nodes, which it gets as
/// [`super::stop_signal`] (stopped, it could not pass SIGSTOP on).
fn signal_group(group: libc::pid_t, sig: i32, leads: bool) {
    let (whom, sig) = match sig {
        libc::SIGSTOP if leads => (group, super::stop_signal()),
        _ if sig == super::end_signal() => (group, sig),
        _ => (-group, sig),
    };
    // SAFETY: kill(2) on a step process this process started or adopted (not reaped by
    // it), or the group it leads.
    unsafe { libc::kill(whom, sig) };
}

/// How a step process is ended early, by [`run_step`] and [`wait_adopted`] alike: cancelled
/// or at its time limit, its tasks get SIGTERM, and at the end of the job's KillWait the
/// step's end signal (its process kills its tasks and says what they used); one still there
/// [`END_GRACE`] later is killed whole.
struct Ending<S: Fn(i32)> {
    /// Signals the step process (see [`signal_group`]).
    signal: S,
    kill_wait: std::time::Duration,
    /// Its time limit.
    limit: Option<tokio::time::Instant>,
    /// When a step that had SIGTERM gets its end signal.
    terminating: Option<tokio::time::Instant>,
    /// When a step that had its end signal is killed whole.
    grace: Option<tokio::time::Instant>,
    /// Its time limit came.
    timed_out: bool,
    /// It had its end signal at the end of its KillWait.
    killed: bool,
}

/// What came at [`Ending::next_due`].
#[derive(PartialEq)]
enum Due {
    TimeLimit,
    Other,
}

impl<S: Fn(i32)> Ending<S> {
    fn new(signal: S, kill_wait: u64, limit: Option<tokio::time::Instant>) -> Self {
        Ending {
            signal,
            kill_wait: std::time::Duration::from_secs(kill_wait),
            limit,
            terminating: None,
            grace: None,
            timed_out: false,
            killed: false,
        }
    }

    /// Ends it as a cancelled step: SIGTERM now, the end signal at the end of its KillWait.
    /// False (and nothing done) when it is being ended so already.
    fn terminate(&mut self) -> bool {
        if self.terminating.is_some() {
            return false;
        }
        (self.signal)(libc::SIGTERM);
        self.terminating = Some(tokio::time::Instant::now() + self.kill_wait);
        true
    }

    /// Ends it now (its client gone): the end signal, and killed whole if still there later.
    fn end_now(&mut self) {
        (self.signal)(super::end_signal());
        self.grace
            .get_or_insert(tokio::time::Instant::now() + END_GRACE);
    }

    /// Waits for the next of its times (forever without one) and does what is due then.
    async fn next_due(&mut self) -> Due {
        let limit = self.limit.filter(|_| !self.timed_out && !self.killed);
        let terminating = self.terminating.filter(|_| !self.killed);
        let Some(at) = [limit, terminating, self.grace].into_iter().flatten().min() else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(at).await;
        if limit == Some(at) {
            self.timed_out = true;
            self.terminate();
            return Due::TimeLimit;
        }
        if terminating == Some(at) {
            self.killed = true;
            self.end_now();
        } else {
            self.grace = None;
            (self.signal)(libc::SIGKILL);
        }
        Due::Other
    }
}

/// Waits for the end of adopted step process `pid` (registered as `r`) as [`run_step`]
/// waits for a part here ([`Ending`]), signalling it as asked ([`signal_step`]: 0 ends it)
/// and at its time limit; with `give_up`, also at that time if the check still says so.
async fn wait_adopted(
    pid: u32,
    r: &super::Registration,
    mut asked: tokio::sync::mpsc::UnboundedReceiver<i32>,
    give_up: Option<(tokio::time::Instant, Box<dyn Fn() -> bool + Send>)>,
) -> Waited {
    let group = pid as libc::pid_t;
    let exited = berth_runtime::enter::pidfd(group).ok().and_then(|fd| {
        // SAFETY: an owned descriptor, which the AsyncFd keeps open as long as it lives.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .ok()
    });
    // (Its pid may be another's by now: then it has ended.)
    let exited = exited.filter(|_| crate::launcher::start_time(pid) == Some(r.start));
    let now = tokio::time::Instant::now();
    let limit = r
        .deadline
        .map(|at| now + std::time::Duration::from_secs(at.saturating_sub(crate::runner::now())));
    // (Its start time checked above: still the adopted step process, or ended.)
    let mut ending = Ending::new(|sig| signal_group(group, sig, r.leads), r.kill_wait, limit);
    let (mut give_up_at, still) = match give_up {
        Some((at, check)) => (Some(at), check),
        None => (None, Box::new(|| false) as Box<dyn Fn() -> bool + Send>),
    };
    if let Some(exited) = &exited {
        loop {
            tokio::select! {
                _ = exited.readable() => break,
                Some(sig) = asked.recv() => match sig {
                    0 => _ = ending.terminate(),
                    _ => (ending.signal)(sig),
                },
                _ = tokio::time::sleep_until(give_up_at.unwrap_or(now)), if give_up_at.is_some() => {
                    give_up_at = None;
                    if still() {
                        ending.terminate();
                    }
                }
                _ = ending.next_due() => {}
            }
        }
    }
    if ending.killed {
        // What its tasks started, and may have left.
        (ending.signal)(libc::SIGKILL);
    }
    Waited {
        timed_out: ending.timed_out,
        killed: ending.killed,
    }
}

/// Waits for the end of adopted step process `pid` (its entry `r` in `dir`) as
/// [`run_step`] waits for a part here ([`wait_adopted`]); records its end.
fn watch<A: StepAuthority>(
    authority: &Arc<A>,
    job: u64,
    pid: u32,
    dir: PathBuf,
    r: super::Registration,
) {
    let step = r.step;
    let (ended, end_read) = tokio::sync::watch::channel(None);
    adopted(job, step, pid, r.cgroup.clone(), end_read);
    let (signals, asked) = tokio::sync::mpsc::unbounded_channel();
    let listed = list(job, step, signals);
    let authority = authority.clone();
    tokio::spawn(async move {
        let waited = wait_adopted(pid, &r, asked, None).await;
        let record = dir.join(super::end_record(pid));
        let mut end = StepEnd::failed(job, step);
        match read_record(&record) {
            Some(said) => {
                (end.code, end.signal) = (said.code, said.signal);
                end.usage = said.usage;
            }
            None => (end.code, end.signal) = waited.unsaid(),
        }
        end.timed_out = waited.timed_out;
        // Recorded before its client hears of it, as a step this process started.
        let code = end.code;
        authority.end(end).await;
        let _ = std::fs::remove_file(&record);
        let _ = ended.send(Some(code));
        drop(listed);
    });
}

/// Serves a client back for step `step` of `job` ([`StepRequest::attach`]), which this
/// process [`adopt`]ed: passes its signals on, and tells it the step's end. A client that
/// goes away ends the step, as at its start.
async fn attach(
    cred: tokio::net::unix::UCred,
    job: u64,
    step: u32,
    lines: &mut Lines,
    write: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let found = ADOPTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(job, step))
        .map(|a| (a.pid, a.cgroup.clone(), a.end.clone()));
    let Some((pid, cgroup, mut end)) = found else {
        let e = format!("step {job}.{step} did not outlive its node agent's restart (a step across nodes, or one whose client is outside its job, ends with the agent)");
        return send(write, &StepEvent::Error(e)).await;
    };
    let member = cred
        .pid()
        .is_some_and(|p| berth_runtime::enter::is_member(p, &cgroup));
    if cred.uid() != 0 && !member {
        let e = format!("step {job}.{step} is not yours to attach to (its client runs in the job)");
        return send(write, &StepEvent::Error(e)).await;
    }
    loop {
        let ended = *end.borrow_and_update();
        if let Some(code) = ended {
            return send(write, &StepEvent::Exited { code }).await;
        }
        tokio::select! {
            changed = end.changed() => {
                if changed.is_err() {
                    let e = format!("step {job}.{step}: its end was lost");
                    return send(write, &StepEvent::Error(e)).await;
                }
            }
            line = lines.next_line() => match line {
                Ok(Some(l)) => {
                    if let Ok(StepSignal { signal }) = serde_json::from_str(&l) {
                        if (1..65).contains(&signal) {
                            signal_step(job, step, signal);
                        }
                    }
                }
                // The client is gone: the step goes with it.
                _ => {
                    let running = end.borrow().is_none();
                    if running && pid != 0 {
                        // SAFETY: kill(2) on the adopted step process, which has not been
                        // waited for by this process (its end not seen yet).
                        unsafe { libc::kill(pid as libc::pid_t, super::end_signal()) };
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// What the controller decided about a step.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepGrant {
    pub step: u32,
    pub user: String,
    /// The job's cgroup under `berth/`.
    pub cgroup: String,
    /// The job's directory on this node.
    pub job_dir: PathBuf,
    /// This node, where the step was asked for.
    pub node: String,
    /// Every node of the step with its tasks, in rank order.
    pub parts: Vec<StepPart>,
    /// The image of the step's own containers, if it runs in one (not the job's).
    #[serde(default)]
    pub image: Option<super::StepImage>,
    /// This node's tools for such a container (its agent fills them in).
    #[serde(default)]
    pub tools: Option<crate::runner::JobTools>,
    /// That container is the job's of this name, kept on each node (`--container-name`).
    #[serde(default)]
    pub container: Option<berth_core::job::ContainerName>,
    /// Seconds between the SIGTERM of a step cancelled or at its time limit and its end
    /// (the cluster's KillWait).
    #[serde(default)]
    pub kill_wait: u64,
}

/// Why a step waits, in srun's words: CPUs the job's other steps hold.
pub const NODES_BUSY: &str = "Requested nodes are busy";
/// Why a step waits: memory the job's other steps hold.
pub const MEMORY_BUSY: &str = "Memory required by task is not available";
/// Why a step waits: its job is suspended.
pub const JOB_SUSPENDED: &str = "Requested operation is presently disabled";

/// The controller's answer to a step: granted, or to wait for CPUs the job's other running
/// steps hold.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum StepStart {
    Granted(Box<StepGrant>),
    /// How many steps had ended when it looked: a look after more have is worth making
    /// ([`StepAuthority::room`]).
    Busy {
        ended: u64,
        /// Why, in srun's words ("Requested nodes are busy", "Memory required by task is
        /// not available").
        #[serde(default)]
        reason: String,
    },
}

/// The tasks of a step on one node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepPart {
    pub node: String,
    /// Its agent, `https://HOST:PORT`; `None`: this node.
    pub url: Option<String>,
    /// CPUs per task; the length is the number of tasks there.
    pub tasks: Vec<Vec<u32>>,
    /// The job's GPUs there (device minors), for a step in an image of its own.
    #[serde(default)]
    pub gpus: Vec<u32>,
    /// Where that node fetches the step's own image from, if it is not the controller's.
    #[serde(default)]
    pub image_source: Option<crate::runner::ImageSource>,
    /// The step's own memory limit there, bytes (`srun --mem`).
    #[serde(default)]
    pub memory: Option<u64>,
}

/// Who may start steps in which job, and where steps are recorded: the controller.
pub trait StepAuthority: Send + Sync + 'static {
    /// Checks that `uid` may start `request` in `job` (it runs here, is theirs, has the
    /// CPUs) and records the step as started; or says that the CPUs it asks for are held by
    /// the job's other steps now.
    fn begin(
        &self,
        uid: u32,
        job: u64,
        request: &StepRequest,
    ) -> impl Future<Output = Result<StepStart, String>> + Send;
    /// Returns once more than `ended` steps have ended (or after a while: the job may have
    /// ended meanwhile), for a busy step's next look.
    fn room(&self, ended: u64) -> impl Future<Output = ()> + Send;
    /// Submits a job that only holds an allocation for one step (`berth step` outside a
    /// job, as srun gets one), for the client and with the step's submit flags.
    fn allocate(
        &self,
        request: berth_api::AllocationRequest,
    ) -> impl Future<Output = Result<berth_api::SubmitResponse, String>> + Send;
    /// Returns once `job` runs, with its variables for a held allocation's command
    /// ([`StepEvent::Granted`]); an error if it ended without running.
    fn wait_running(
        &self,
        job: u64,
    ) -> impl Future<Output = Result<Vec<(String, String)>, String>> + Send;
    /// Returns once a running `job` has ended (time limit, cancelled, ...), saying how.
    fn wait_ended(&self, job: u64) -> impl Future<Output = String> + Send;
    /// Ends an allocation: with its step's exit status, or cancelled (`None`: its client
    /// went away).
    fn release(&self, job: u64, code: Option<i32>) -> impl Future<Output = ()> + Send;
    /// Records the step's end with the worst of its tasks' exit statuses and, where every
    /// node's part could say, what they used.
    fn end(&self, end: StepEnd) -> impl Future<Output = ()> + Send;
    /// What a step's leader makes the credentials it asks other nodes' agents for the
    /// step's parts with (the cluster key, and this process's principal).
    fn signer(&self) -> relay::Signer;
    /// The host name or address at which the other nodes' tasks reach this node (a step
    /// leader's PMI server).
    fn address(&self) -> String;
}

/// Serves the step socket until the listener fails, starting steps' processes through the
/// node's `launcher`.
pub async fn serve<A: StepAuthority>(
    listener: UnixListener,
    authority: Arc<A>,
    launcher: Arc<Launcher>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (authority, launcher) = (authority.clone(), launcher.clone());
        tokio::spawn(async move {
            match handle(stream, &authority, &launcher).await {
                // (A client gone before its answer: nothing to tell anyone.)
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => berth_core::say!("berth: step socket: {e}"),
                Ok(()) => {}
            }
        });
    }
}

async fn send(to: &mut OwnedWriteHalf, event: &StepEvent) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).expect("events serialise");
    line.push(b'\n');
    to.write_all(&line).await
}

type Lines = tokio::io::Lines<BufReader<OwnedReadHalf>>;

async fn handle<A: StepAuthority>(
    stream: UnixStream,
    shared: &Arc<A>,
    launcher: &Arc<Launcher>,
) -> std::io::Result<()> {
    let authority: &A = shared;
    let cred = stream.peer_cred()?;
    // recvmsg(2) with descriptors is a blocking call here: done on a blocking thread, with a
    // time limit so that a client that never finishes its request cannot hold one.
    let std_stream = stream.into_std()?;
    std_stream.set_nonblocking(false)?;
    std_stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let (std_stream, received) = tokio::task::spawn_blocking(move || {
        let r = recv_line_with_fds(&std_stream, REQUEST_LIMIT);
        (std_stream, r)
    })
    .await
    .map_err(std::io::Error::other)?;
    std_stream.set_read_timeout(None)?;
    std_stream.set_nonblocking(true)?;
    let (read, mut write) = UnixStream::from_std(std_stream)?.into_split();
    let mut lines = BufReader::new(read).lines();
    let request = received
        .map_err(|e| format!("bad step request: {e}"))
        .and_then(|(line, fds)| {
            let request: StepRequest =
                serde_json::from_slice(&line).map_err(|e| format!("bad step request: {e}"))?;
            let stdio: [OwnedFd; STDIO_FDS] = fds.try_into().map_err(|_| {
                "bad step request: it must carry the client's stdin, stdout and stderr".to_string()
            })?;
            if request.argv.is_empty() && request.attach.is_none() {
                return Err(
                    "nothing to run: name a command, e.g. `berth step -n 2 hostname`".into(),
                );
            }
            if request.hold && request.allocate.is_none() {
                return Err("bad step request: only a new allocation is held".into());
            }
            Ok((request, stdio))
        });
    let (request, stdio) = match request {
        Ok(r) => r,
        Err(e) => return send(&mut write, &StepEvent::Error(e)).await,
    };
    if let (Some(job), Some(step)) = (request.job, request.attach) {
        return attach(cred, job, step, &mut lines, &mut write).await;
    }
    let (job, allocated) = match (request.job, request.allocation(cred.uid(), cred.gid())) {
        (Some(job), None) => (job, false),
        (None, Some(mut allocation)) => {
            allocation.host = crate::node::hostname();
            let job = match authority.allocate(allocation).await {
                Ok(submitted) => {
                    let job = submitted.job_id;
                    send(&mut write, &StepEvent::Submitted(submitted)).await?;
                    job
                }
                Err(e) => return send(&mut write, &StepEvent::Error(e)).await,
            };
            match wait_for_allocation(authority, job, &mut lines, &mut write).await {
                Ok(Some(env)) if request.hold => {
                    if let Err(e) = send(&mut write, &StepEvent::Granted { job, env }).await {
                        // The client is gone already: so is its allocation.
                        authority.release(job, None).await;
                        return Err(e);
                    }
                    return hold(authority, job, &mut lines, &mut write).await;
                }
                Ok(Some(_)) => (job, true),
                // The client went away (or asked to stop) before the job started.
                Ok(None) => {
                    authority.release(job, None).await;
                    let e =
                        format!("job {job} cancelled: the step was interrupted before it started");
                    return send(&mut write, &StepEvent::Error(e)).await;
                }
                Err(e) => {
                    authority.release(job, None).await;
                    return send(&mut write, &StepEvent::Error(e)).await;
                }
            }
        }
        _ => {
            let e = "bad step request: name a job, or ask for an allocation (not both)";
            return send(&mut write, &StepEvent::Error(e.into())).await;
        }
    };
    let code = run_step(
        shared,
        launcher,
        (cred.uid(), cred.pid()),
        job,
        &request,
        stdio,
        &mut lines,
        &mut write,
    )
    .await;
    if allocated {
        // The allocation lives as long as its one step, as srun's own allocation does.
        authority
            .release(job, Some(*code.as_ref().unwrap_or(&125)))
            .await;
    }
    match code {
        Ok(code) => send(&mut write, &StepEvent::Exited { code }).await,
        Err(e) => send(&mut write, &StepEvent::Error(e)).await,
    }
}

/// Waits until the allocation `job` runs, telling the client if that takes a while, and
/// returns its variables. `Ok(None)`: the client closed the connection or sent a signal (^C)
/// first.
async fn wait_for_allocation<A: StepAuthority>(
    authority: &A,
    job: u64,
    lines: &mut Lines,
    write: &mut OwnedWriteHalf,
) -> Result<Option<Vec<(String, String)>>, String> {
    let running = authority.wait_running(job);
    tokio::pin!(running);
    let mut queued = false;
    loop {
        tokio::select! {
            r = &mut running => {
                let env = r?;
                // Its batch host: the first of its slots' hosts.
                let host = env
                    .iter()
                    .find(|(k, _)| k == "LSB_HOSTS")
                    .and_then(|(_, hosts)| hosts.split_whitespace().next())
                    .unwrap_or_default()
                    .to_string();
                let _ = send(write, &StepEvent::Allocated { job, host }).await;
                return Ok(Some(env));
            }
            _ = lines.next_line() => return Ok(None),
            _ = tokio::time::sleep(QUEUED_AFTER), if !queued => {
                queued = true;
                let _ = send(write, &StepEvent::Queued { job }).await;
            }
        }
    }
}

/// Holds the running allocation `job` for its client (`berth alloc`) until the client's
/// command ends ([`AllocationExit`]: the job ends with its status), the client goes away
/// (the job is cancelled), or the job ends by itself (the client hears why, as an error).
async fn hold<A: StepAuthority>(
    authority: &A,
    job: u64,
    lines: &mut Lines,
    write: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let ended = authority.wait_ended(job);
    tokio::pin!(ended);
    loop {
        tokio::select! {
            why = &mut ended => return send(write, &StepEvent::Error(why)).await,
            line = lines.next_line() => {
                let exit = match line {
                    Ok(Some(l)) => match serde_json::from_str::<AllocationExit>(&l) {
                        Ok(AllocationExit { exit }) => Some(exit),
                        // Signals mean nothing here: the command is the client's.
                        Err(_) => continue,
                    },
                    _ => None,
                };
                authority.release(job, exit).await;
                return match exit {
                    Some(code) => send(write, &StepEvent::Exited { code }).await,
                    None => Ok(()),
                };
            }
        }
    }
}

/// How long an allocation may take before the client hears that it is queued (as srun says
/// "job N queued and waiting for resources").
const QUEUED_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The step's grant, once the CPUs it asks for are free of the job's other steps (the
/// client hears once that it waits, as srun's "step creation temporarily disabled"); an
/// error if it is refused, or if the client goes away or is signalled meanwhile (nothing
/// was started).
async fn begin_when_free<A: StepAuthority>(
    authority: &A,
    uid: u32,
    job: u64,
    request: &StepRequest,
    lines: &mut Lines,
    write: &mut OwnedWriteHalf,
) -> Result<StepGrant, String> {
    let mut told = false;
    loop {
        let (ended, reason) = match authority.begin(uid, job, request).await? {
            StepStart::Granted(grant) => return Ok(*grant),
            StepStart::Busy { ended, reason } => (ended, reason),
        };
        if !told {
            told = true;
            let _ = send(write, &StepEvent::Busy { job, reason }).await;
        }
        tokio::select! {
            () = authority.room(ended) => {}
            line = lines.next_line() => {
                return Err(match line {
                    Ok(Some(_)) => format!("the step waiting for CPUs in job {job} was signalled: it did not start"),
                    _ => format!("the step's client went away while it waited for CPUs in job {job}"),
                });
            }
        }
    }
}

/// Starts the step in `job`: its tasks on this node (`berth internal step`, with the
/// client's descriptors as its stdio) and its parts on other nodes (through their agents,
/// their output relayed to the client's descriptors), and waits for all of them, passing the
/// client's signals on. The client's input goes to every part, or the one with the task
/// that reads it (see [`distribute`]). Returns the worst exit status of the tasks, or why
/// the step could not start.
#[allow(clippy::too_many_arguments)]
async fn run_step<A: StepAuthority>(
    shared: &Arc<A>,
    launcher: &Arc<Launcher>,
    (uid, client_pid): (u32, Option<i32>),
    job: u64,
    request: &StepRequest,
    [stdin, stdout, stderr]: [OwnedFd; STDIO_FDS],
    lines: &mut Lines,
    write: &mut OwnedWriteHalf,
) -> Result<i32, String> {
    let authority: &A = shared;
    let grant = begin_when_free(authority, uid, job, request, lines, write).await?;
    let (end, mut cancelled) = tokio::sync::mpsc::unbounded_channel();
    let _registered = list(job, grant.step, end);
    let layout: Vec<(String, u32)> = grant
        .parts
        .iter()
        .map(|p| (p.node.clone(), p.tasks.len() as u32))
        .collect();
    let ntasks: u32 = layout.iter().map(|(_, t)| t).sum();
    if let Some(n) = request.input_task.filter(|&n| n >= ntasks) {
        authority.end(StepEnd::failed(job, grant.step)).await;
        return Err(format!(
            "--input={n}: the step's tasks are 0 to {}",
            ntasks.saturating_sub(1)
        ));
    }
    // A step across nodes is led by a process of this node's (`lead`): it starts the other
    // nodes' parts and relays them, runs this node's part, and serves the tasks' PMI
    // (PMIx's servers, one on each node, gather their fences through it); a step on one
    // node has its PMI server in its step process's helper. Either outlives this agent.
    let across = grant.parts.len() > 1 || grant.parts.iter().any(|p| p.url.is_some());
    let wants_pmi = (request.pmi || request.pmix) && !request.pty;
    // A client in the job (a process of its cgroup) passes the job's variables on (its own
    // environment is the script's); one on a host, even with the job's variables (`berth
    // alloc`'s command), gets the job's environment under its own, on every node.
    let in_job = client_pid.is_some_and(|pid| berth_runtime::enter::is_member(pid, &grant.cgroup));
    let launch = |node_index: usize| {
        let part = &grant.parts[node_index];
        StepLaunch {
            job_id: job,
            step_id: grant.step,
            user: grant.user.clone(),
            cgroup: grant.cgroup.clone(),
            job_dir: grant.job_dir.clone(),
            argv: request.argv.clone(),
            env: request.env.clone(),
            cwd: request
                .container_workdir
                .clone()
                .unwrap_or_else(|| request.cwd.clone()),
            node: part.node.clone(),
            tasks: part.tasks.clone(),
            layout: layout.clone(),
            node_index,
            pmi: None,
            pmi_here: wants_pmi && !across,
            pmix: request.pmix,
            outside: !in_job,
            label: request.label,
            srun: request.srun,
            quiet: request.quiet,
            kill_on_bad_exit: request.kill_on_bad_exit,
            pbs_slots: request.pbs_slots.clone(),
            pty: request.pty,
            client_pid,
            task_files: request.task_files.clone(),
            input_task: request.input_task,
            gpus_per_task: request.gpus_per_task,
            multi_prog: request.multi_prog.clone(),
            image: grant.image.clone(),
            tools: grant.tools.clone(),
            gpu_ids: part.gpus.clone(),
            image_source: part.image_source.clone(),
            container: grant.container.clone(),
            save: request.container_save.as_ref().map(PathBuf::from),
            time_limit: request.time_limit,
            memory: part.memory,
            kill_wait: grant.kill_wait,
            spool: None,
            lead: None,
        }
    };
    let here = grant.parts.iter().position(|p| p.url.is_none());
    let mut first = launch(here.unwrap_or(0));
    if across {
        if here.is_none() {
            // Led from here, run elsewhere: no tasks here.
            (first.node, first.tasks, first.gpu_ids) = (grant.node.clone(), Vec::new(), Vec::new());
        }
        let parts = (grant.parts.iter().enumerate())
            .filter_map(|(i, p)| Some((p.url.clone()?, launch(i))))
            .collect();
        first.lead = Some(super::lead::Lead {
            parts,
            signer: authority.signer(),
            pmi_host: wants_pmi.then(|| authority.address()),
            here: here.is_some(),
        });
    }
    // Said before the step's process starts: a client whose agent goes away from here on
    // knows its step, and asks the next agent for its end (the step process it forks is
    // adopted; one that never forked is ended by the controller's reconciling).
    let _ = send(
        write,
        &StepEvent::Started {
            step: grant.step,
            ntasks,
        },
    )
    .await;
    let mut part = match super::start_part(launcher, &first, [stdin, stdout, stderr]).await {
        Ok(part) => part,
        Err(e) => {
            authority.end(StepEnd::failed(job, grant.step)).await;
            return Err(e);
        }
    };
    let group = part.group;
    // Its own time limit (`srun -t`): then it is ended as a cancelled one is.
    let limit = request
        .time_limit
        .map(|secs| tokio::time::Instant::now() + std::time::Duration::from_secs(secs));
    let mut ending = Ending::new(
        |sig| signal_group(group, sig, across),
        grant.kill_wait,
        limit,
    );
    let said_at = |at: u64, why: &str| {
        format!(
            "slurmstepd: error: *** STEP {job}.{} ON {} CANCELLED AT {}{why} ***",
            grant.step,
            grant.node,
            crate::runner::slurm_timestamp(at)
        )
    };
    let said = |why: &str| said_at(crate::runner::now(), why);
    let mut client = true;
    let end = loop {
        tokio::select! {
            end = &mut part.end => break end,
            // A signal for its tasks (`scancel -s SIG JOB.STEP`), or (0) cancelled (`berth
            // cancel JOB.STEP`).
            Some(sig) = cancelled.recv() => {
                if sig != 0 {
                    (ending.signal)(sig);
                } else if ending.terminate() {
                    let _ = send(write, &StepEvent::Notice(said(""))).await;
                }
            }
            due = ending.next_due() => {
                if due == Due::TimeLimit {
                    let _ = send(write, &StepEvent::Notice(said(" DUE TO TIME LIMIT"))).await;
                }
            }
            line = lines.next_line(), if client => {
                match line {
                    Ok(Some(l)) => {
                        if let Ok(StepSignal { signal: sig }) = serde_json::from_str(&l) {
                            if (1..65).contains(&sig) {
                                (ending.signal)(sig);
                            }
                        }
                    }
                    // The client is gone: the step goes with it (a terminal's too: its
                    // process kills the task at the end signal).
                    _ => {
                        client = false;
                        ending.end_now();
                    }
                }
            }
        }
    };
    // Its tasks killed with its job (cancelled, or out of time: SIGTERM, or SIGKILL after
    // the KillWait or with the job's container): said to the client too, as slurmstepd
    // says it to srun.
    let with_job = matches!(end.signal, Some(libc::SIGTERM | libc::SIGKILL));
    if client && ending.terminating.is_none() && with_job {
        if let Some((at, why)) = job_ending(&grant.job_dir).await {
            let _ = send(write, &StepEvent::Notice(said_at(at, &why))).await;
        }
    }
    // (Killed at the end of its KillWait: its tasks' SIGKILL, as they ended.)
    let worst = (end.code, end.signal);
    // What the tasks of a step ended early started, and may have left here.
    if ending.killed || !client {
        (ending.signal)(libc::SIGKILL);
    }
    let end = StepEnd {
        job,
        step: grant.step,
        code: worst.0,
        signal: worst.1,
        usage: end.usage,
        timed_out: ending.timed_out,
        job_ended: false,
        end_time: None,
    };
    authority.end(end).await;
    super::forget_record(&grant.job_dir, group);
    Ok(worst.0)
}

/// Why the job of directory `job_dir` is ending, if it is cancelled or out of time: when,
/// and slurmstepd's words for why (` DUE TO TIME LIMIT`), as its node's agent and then its
/// runner leave it there ([`crate::runner::CANCELLED_FILE`], then
/// [`crate::runner::ENDED_FILE`]). Waited for as the script-ended mark is
/// ([`crate::daemon::SCRIPT_END_MARK_WAIT`]): the job's script, which had its signal with
/// its steps' tasks, may still be ending.
async fn job_ending(job_dir: &std::path::Path) -> Option<(u64, String)> {
    let deadline = tokio::time::Instant::now() + crate::daemon::SCRIPT_END_MARK_WAIT;
    let said = loop {
        let said = [crate::runner::ENDED_FILE, crate::runner::CANCELLED_FILE]
            .into_iter()
            .find_map(|name| std::fs::read_to_string(job_dir.join(name)).ok());
        if said.is_some() || tokio::time::Instant::now() >= deadline {
            break said?;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let (at, why) = said.split_once('\n')?;
    Some((at.parse().ok()?, why.to_string()))
}

/// How long a step's parts have to end their tasks and say what they used, once it is
/// ended early, before each is killed whole (its usage then unknown). Generous, as
/// Slurm's KillWait (30 s): a part on a loaded node took more than 5 s to say.
const END_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_for_a_step_not_running_yet_reaches_it_once_it_runs() {
        // (A job and step no other test uses: the tables are the process's.)
        assert!(signal_step(u64::MAX, 7, 0));
        assert!(signal_step(u64::MAX, 7, libc::SIGUSR1));
        let (signals, mut got) = tokio::sync::mpsc::unbounded_channel();
        let listed = list(u64::MAX, 7, signals);
        assert_eq!((got.try_recv(), got.try_recv()), (Ok(0), Ok(libc::SIGUSR1)));
        assert!(signal_step(u64::MAX, 7, libc::SIGUSR2));
        assert_eq!(got.try_recv(), Ok(libc::SIGUSR2));
        drop(listed);
        assert!(!running_steps().contains(&(u64::MAX, 7)));
    }
}
