//! The leader of a step across nodes: the step process that the agent which took the step
//! starts on its own node (`berth internal step` with a [`Lead`]), as slurmstepd leads a
//! step under srun. It starts the other nodes' parts through their agents and relays them
//! (`relay`), forks this node's part (the step process it would otherwise be), serves the
//! tasks' PMI (PMI-1/PMI-2, and the fences of each node's PMIx server), and ends as the
//! worst of its parts, having written what they used together. Being a process of its own,
//! not a task of the agent, it goes on while that agent restarts: the next one adopts it as
//! it adopts a step on one node (`server::adopt`).
//!
//! Its signals are a step process's: the agent signals its process group (which this node's
//! part and its tasks are in too) and sends the step's end signal to the leader alone. The
//! leader passes each signal on to the other nodes' parts, and the end signal to this
//! node's part as well; it ends the step itself when a task aborts it (PMI) or a part fails
//! with `--kill-on-bad-exit`.

use super::{pmi, relay, PartEnd, StepLaunch};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What makes a step process the leader of a step across nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lead {
    /// The other nodes' parts: each one's agent (`https://HOST:PORT`) and launch.
    pub parts: Vec<(String, StepLaunch)>,
    /// What it makes its credentials for those agents with.
    pub signer: relay::Signer,
    /// Serve the tasks PMI, at this host of this node's (the other nodes' tasks connect to
    /// it); `None`: no PMI.
    pub pmi_host: Option<String>,
    /// Whether a part of the step runs on this node (the launch's); else the leader only
    /// leads.
    pub here: bool,
}

/// How long after the step's end signal a part that has not ended is killed (SIGKILL):
/// before the agent's own grace (`server`'s 15 s) ends the leader.
const LEAD_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How a step ended: the worst of its tasks' statuses and the signal that gave it, where
/// one did; what its tasks used, where all could say.
pub(super) type Ended = ((i32, Option<i32>), Option<berth_api::StepUsage>);

/// Leads the step of `launch` (its [`Lead`] taken out): how it ended. One that could not
/// start (a part refused, or its node unreachable) ends 125, having said why on the
/// client's stderr. Single-threaded until it has forked this node's part; the client's
/// stdio on 0, 1, 2.
pub(super) fn lead(launch: StepLaunch, lead: Lead) -> Ended {
    let who = if launch.srun {
        "srun: error"
    } else {
        "berth step"
    };
    try_lead(launch, lead).unwrap_or_else(|e| {
        berth_core::say!("{who}: {e}");
        ((125, None), None)
    })
}

fn try_lead(mut launch: StepLaunch, lead: Lead) -> Result<Ended, String> {
    // In the job's cgroup, as its step processes are: the job's end ends it as it ends them
    // (`runner::end_steps`), and nothing of it outlives the job. (A node that runs no part
    // may have no such cgroup; one whose job has not made it yet has this node's part wait
    // for it.)
    let _ = berth_runtime::enter::join_cgroup(&launch.cgroup);
    let caught = caught_signals();
    // SAFETY: sigprocmask(2) with a set we filled (this process is single-threaded).
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &caught, std::ptr::null_mut()) };
    let mut parts = lead.parts;
    // The step's PMI server: its port and secret go into every part's launch.
    let pmi = match &lead.pmi_host {
        Some(host) => {
            let listener = std::net::TcpListener::bind(("0.0.0.0", 0))
                .map_err(|e| format!("cannot serve PMI to the step's tasks: {e}"))?;
            let port = (listener.local_addr())
                .map_err(|e| format!("cannot serve PMI to the step's tasks: {e}"))?
                .port();
            let secret = crate::runner::random_hex()?;
            let contact = pmi::Contact {
                node: launch.node.clone(),
                host: host.clone(),
                port,
                secret: secret.clone(),
            };
            for (_, part) in &mut parts {
                part.pmi = Some(contact.clone());
            }
            launch.pmi = Some(contact);
            Some((listener, secret))
        }
        None => None,
    };
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("the step's input: {e}"))?;
    let (mut inputs, feeds) = split_input(stdin, &launch.layout, launch.input_task)?;
    let here = launch.node_index;
    // This node's part, forked now (this process is still single-threaded); it waits for
    // the word to go until every other part has started.
    let local = match lead.here {
        true => {
            let input = inputs.get_mut(here).and_then(Option::take);
            let mut leader_only: Vec<RawFd> =
                inputs.iter().flatten().map(|f| f.as_raw_fd()).collect();
            if let Some((from, to)) = &feeds {
                leader_only.extend(to.iter().chain([from]).map(|f| f.as_raw_fd()));
            }
            leader_only.extend(pmi.as_ref().map(|(l, _)| l.as_raw_fd()));
            Some(Local::fork(&launch, input, &caught, &leader_only)?)
        }
        false => None,
    };
    let tee = feeds.map(|(from, to)| super::tee(from, to));
    // Every other part, in order: if one cannot start, nothing runs.
    let callers = lead.signer.callers();
    let mut remote = Vec::new();
    for (url, part) in &parts {
        match relay::RemotePart::start(url, callers.clone(), part) {
            Ok(p) => remote.push((part.node_index, p)),
            Err(e) => {
                for (_, p) in &remote {
                    p.signaller().signal(libc::SIGKILL);
                }
                if let Some(local) = local {
                    local.abandon();
                }
                return Err(e);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot lead the step: {e}"))?;
    let counts: Vec<u32> = launch.layout.iter().map(|(_, n)| *n).collect();
    let kvsname = format!("kvs_{}_{}", launch.job_id, launch.step_id);
    let ended = runtime.block_on(async move {
        let server = match pmi {
            Some((listener, secret)) => {
                let served = listener.set_nonblocking(true).and_then(|()| {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    pmi::Server::serve(listener, &counts, kvsname, secret)
                });
                Some(served.map_err(|e| format!("cannot serve PMI to the step's tasks: {e}"))?)
            }
            None => None,
        };
        Ok::<_, String>(follow(&launch, server, remote, inputs, local, &caught).await)
    });
    drop(tee);
    ended
}

/// The signals the leader takes instead of their default actions, to pass on: any the
/// agent sends a step's process group (`scancel -s`, a cancel's SIGTERM, a job's warning
/// signal) and the step's end signal; not those only the kernel sends for a fault, nor
/// SIGCHLD and SIGPIPE (its own children's ends, a client gone), nor glibc's own.
fn caught_signals() -> libc::sigset_t {
    let kept = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGCHLD,
        libc::SIGPIPE,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGSYS,
    ];
    // SAFETY: a zeroed sigset_t emptied and filled by sigemptyset and sigaddset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in (1..libc::SIGRTMIN()).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
            if !kept.contains(&sig) && !(32..libc::SIGRTMIN()).contains(&sig) {
                libc::sigaddset(&mut set, sig);
            }
        }
        set
    }
}

/// The client's input for each part of a step laid out as `layout` (node, tasks): all of
/// it for each part, or, with `--input=N`, for the part with task N alone (`None`: no
/// input); where more than one part reads it, the input and the pipes to copy it into
/// ([`super::tee`], started once this node's part is forked).
#[allow(clippy::type_complexity)]
fn split_input(
    stdin: OwnedFd,
    layout: &[(String, u32)],
    input_task: Option<u32>,
) -> Result<(Vec<Option<OwnedFd>>, Option<(OwnedFd, Vec<OwnedFd>)>), String> {
    let mut first = 0;
    let readers: Vec<usize> = (layout.iter().enumerate())
        .filter(|(_, (_, tasks))| {
            let ranks = first..first + tasks;
            first += tasks;
            input_task.is_none_or(|n| ranks.contains(&n))
        })
        .map(|(i, _)| i)
        .collect();
    let mut inputs: Vec<Option<OwnedFd>> = layout.iter().map(|_| None).collect();
    match readers.as_slice() {
        [one] => {
            inputs[*one] = Some(stdin);
            Ok((inputs, None))
        }
        many => {
            let mut feeds = Vec::new();
            for &i in many {
                let (read, write) = super::pipe(0).map_err(|e| e.to_string())?;
                inputs[i] = Some(read);
                feeds.push(write);
            }
            Ok((inputs, Some((stdin, feeds))))
        }
    }
}

/// This node's part, forked by the leader.
struct Local {
    pid: libc::pid_t,
    /// Written once every other part has started: its tasks may start.
    go: OwnedFd,
    /// What its tasks used, as it says at its end (JSON).
    usage: OwnedFd,
}

impl Local {
    /// Forks this node's part of `launch` with `input` as its stdin (`None`: /dev/null),
    /// in this process's group; the child closes `leader_only` (the leader's own ends of the
    /// step's pipes and sockets) and unblocks `caught`, but the end signal, which it
    /// catches as any step process does. The calling process must be single-threaded.
    fn fork(
        launch: &StepLaunch,
        input: Option<OwnedFd>,
        caught: &libc::sigset_t,
        leader_only: &[RawFd],
    ) -> Result<Local, String> {
        let (wait, go) = super::pipe(0).map_err(|e| e.to_string())?;
        let (usage, said) = super::pipe(0).map_err(|e| e.to_string())?;
        let mut part = launch.clone();
        part.lead = None;
        // SAFETY: this process is single-threaded: the child may run anything.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!(
                "cannot fork the step's part here: {}",
                std::io::Error::last_os_error()
            ));
        }
        if pid > 0 {
            return Ok(Local { pid, go, usage });
        }
        drop((go, usage));
        // SAFETY: in the child, closing descriptors only the leader uses (the child never
        // returns to code that owns them: it exits below), then unblocking the signals the
        // leader blocked, but the end signal (see `block_end`).
        unsafe {
            for fd in leader_only {
                libc::close(*fd);
            }
            let mut unblocked = *caught;
            libc::sigdelset(&mut unblocked, super::end_signal());
            libc::sigprocmask(libc::SIG_UNBLOCK, &unblocked, std::ptr::null_mut());
        }
        let mut byte = [0u8; 1];
        if !matches!(
            std::io::Read::read(&mut std::fs::File::from(wait), &mut byte),
            Ok(1)
        ) {
            // (The step could not start on another node: nothing runs.)
            // SAFETY: the child ends here without running the parent's exit handlers.
            unsafe { libc::_exit(125) };
        }
        if let Some(input) = input {
            // SAFETY: dup2 onto this process's stdin.
            unsafe { libc::dup2(input.as_raw_fd(), 0) };
        } else if let Ok(null) = std::fs::File::open("/dev/null") {
            // SAFETY: as above.
            unsafe { libc::dup2(null.as_raw_fd(), 0) };
        }
        let ((code, signal), cgroup) = match super::run_launch(part) {
            Ok(ended) => ended,
            Err(e) => {
                berth_core::say!("berth: {e}");
                ((125, None), Default::default())
            }
        };
        if let Some(used) = super::usage(cgroup) {
            let text = serde_json::to_vec(&used).expect("usage serialises");
            let _ = std::io::Write::write_all(&mut std::fs::File::from(said), &text);
        }
        std::process::exit(super::end_as(code, signal));
    }

    /// Lets the part start its tasks.
    fn go(&self) {
        // SAFETY: write(2) of one byte from a live buffer to the pipe we hold.
        unsafe { libc::write(self.go.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    /// Ends the part before its tasks start, and waits for it.
    fn abandon(self) {
        drop(self.go);
        let _ = wait_for(self.pid);
    }

    /// Waits for the part's end (blocking): its status, and what its tasks used.
    fn wait(self) -> PartEnd {
        let status = wait_for(self.pid);
        let mut said = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::fs::File::from(self.usage), &mut said);
        match status {
            Some(status) => PartEnd::of(
                std::os::unix::process::ExitStatusExt::from_raw(status),
                serde_json::from_slice(&said).ok(),
            ),
            None => PartEnd::without_usage(125),
        }
    }
}

/// Reaps child `pid`: its wait status.
fn wait_for(pid: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid(2) of our own child into an int we own.
        match unsafe { libc::waitpid(pid, &mut status, 0) } {
            -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            -1 => return None,
            _ => return Some(status),
        }
    }
}

/// Runs the step until every part has ended (see the module): the worst end and what the
/// parts used together.
async fn follow(
    launch: &StepLaunch,
    mut pmi: Option<pmi::Server>,
    remote: Vec<(usize, relay::RemotePart)>,
    mut inputs: Vec<Option<OwnedFd>>,
    local: Option<Local>,
    caught: &libc::sigset_t,
) -> Ended {
    let signals = read_signals(caught);
    // Each part's end, this node's said so.
    let (done, mut ended) = tokio::sync::mpsc::unbounded_channel::<(bool, PartEnd)>();
    let mut signallers = Vec::new();
    let out = |fd: RawFd| {
        // SAFETY: borrowing this process's stdout or stderr, open for its life.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
    };
    let mut left = 0;
    for (i, part) in remote {
        let input = inputs.get_mut(i).and_then(Option::take);
        let (Ok(stdout), Ok(stderr)) = (out(1), out(2)) else {
            part.signaller().signal(libc::SIGKILL);
            let _ = done.send((false, PartEnd::without_usage(125)));
            left += 1;
            continue;
        };
        signallers.push(part.signaller());
        let done = done.clone();
        std::thread::spawn(move || {
            let _ = done.send((false, part.relay(input, stdout, stderr)));
        });
        left += 1;
    }
    drop(inputs);
    let mut child = None;
    if let Some(local) = local {
        local.go();
        child = Some(local.pid);
        let done = done.clone();
        std::thread::spawn(move || {
            let _ = done.send((true, local.wait()));
        });
        left += 1;
    }
    drop(done);
    // (Its pid, for the signals it sends, also after its end.)
    let part_here = child;
    let mut signals = signals;
    // A signal for the other nodes' parts, and with `here` this node's (while it runs).
    let signal_all = |child: Option<libc::pid_t>,
                      signallers: &mut Vec<relay::Signaller>,
                      sig: i32,
                      here: bool| {
        if let (Some(pid), true) = (child, here) {
            // SAFETY: kill(2) of our own child, not reaped yet (its end not in yet).
            unsafe { libc::kill(pid, sig) };
        }
        for s in signallers {
            s.signal(sig);
        }
    };
    let (mut worst, mut killed) = ((0, None), false);
    let mut ending: Option<tokio::time::Instant> = None;
    let mut usage = Some(berth_api::StepUsage::default());
    let now = tokio::time::Instant::now;
    while left > 0 {
        let end = tokio::select! {
            Some((here, end)) = ended.recv() => {
                if here {
                    child = None;
                }
                end
            }
            // A task gave up (MPI_Abort): the step ends with its code, every task killed.
            Some(code) = async { pmi.as_mut().expect("checked").aborts.recv().await }, if pmi.is_some() => {
                berth_core::say!("berth step: a task aborted the step with exit code {code}");
                if !killed {
                    worst = super::worse(worst, (code, None));
                    killed = true;
                    signal_all(child, &mut signallers, super::end_signal(), true);
                    ending = Some(now() + LEAD_GRACE);
                }
                continue;
            }
            Some((sig, from)) = signals.recv() => {
                // (This node's part signals its own group, the leader's, as it ends its
                // tasks: not the step's signal.)
                if part_here.is_some_and(|pid| pid as u32 == from) {
                    continue;
                }
                if sig == super::end_signal() {
                    killed = true;
                    signal_all(child, &mut signallers, sig, true);
                    ending.get_or_insert(now() + LEAD_GRACE);
                } else if sig == super::stop_signal() {
                    // The step's SIGSTOP: the other nodes' first, then this group, the
                    // leader with it.
                    signal_all(child, &mut signallers, libc::SIGSTOP, false);
                    // SAFETY: kill(2) of our own process group.
                    unsafe { libc::kill(0, libc::SIGSTOP) };
                } else {
                    // This node's part has it already: it was sent to the whole group.
                    signal_all(child, &mut signallers, sig, false);
                }
                continue;
            }
            _ = tokio::time::sleep_until(ending.unwrap_or_else(now)), if ending.is_some() => {
                ending = None;
                signal_all(child, &mut signallers, libc::SIGKILL, true);
                continue;
            }
        };
        left -= 1;
        usage = usage.zip(end.usage).map(|(a, b)| a + b);
        // Parts killed because another failed say nothing about their programs.
        if !killed {
            worst = super::worse(worst, (end.code, end.signal));
        }
        if end.code != 0 && launch.kill_on_bad_exit && left > 0 && !killed {
            killed = true;
            signal_all(child, &mut signallers, super::end_signal(), true);
            ending = Some(now() + LEAD_GRACE);
        }
    }
    (worst, usage)
}

/// The signals this process gets (of `caught`, blocked: read from a signalfd by a thread
/// of its own), each with the pid of its sender.
fn read_signals(caught: &libc::sigset_t) -> tokio::sync::mpsc::UnboundedReceiver<(i32, u32)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    // SAFETY: signalfd(2) of a set we filled; the descriptor is owned at once.
    let fd = unsafe { libc::signalfd(-1, caught, libc::SFD_CLOEXEC) };
    if fd < 0 {
        berth_core::say!(
            "berth step: cannot take the step's signals: {}",
            std::io::Error::last_os_error()
        );
        return rx;
    }
    // SAFETY: a fresh descriptor, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::thread::spawn(move || loop {
        // SAFETY: a zeroed signalfd_siginfo is valid for read(2) to fill in.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: read(2) of one record into a struct of its size.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n == size as isize {
            if tx.send((info.ssi_signo as i32, info.ssi_pid)).is_err() {
                return;
            }
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        } else {
            return;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_goes_to_every_part_or_to_the_one_with_its_task() {
        let layout = vec![("a".to_string(), 2), ("b".to_string(), 3)];
        let input = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let given = |input_task, layout: &[(String, u32)]| {
            let (inputs, feeds) = split_input(input(), layout, input_task).unwrap();
            let given: Vec<bool> = inputs.iter().map(Option::is_some).collect();
            (given, feeds.map(|(_, to)| to.len()))
        };
        assert_eq!(given(None, &layout), (vec![true, true], Some(2)));
        assert_eq!(given(Some(1), &layout), (vec![true, false], None));
        assert_eq!(given(Some(2), &layout), (vec![false, true], None));
        assert_eq!(given(None, &layout[..1]), (vec![true], None));
    }

    #[test]
    fn the_leader_takes_the_signals_it_passes_on_not_the_faults() {
        let set = caught_signals();
        // SAFETY: sigismember(3) of a filled set.
        let has = |sig| unsafe { libc::sigismember(&set, sig) } == 1;
        for sig in [
            libc::SIGTERM,
            libc::SIGUSR1,
            libc::SIGINT,
            libc::SIGCONT,
            super::super::end_signal(),
        ] {
            assert!(has(sig), "{sig}");
        }
        for sig in [libc::SIGKILL, libc::SIGCHLD, libc::SIGPIPE, libc::SIGSEGV] {
            assert!(!has(sig), "{sig}");
        }
    }
}
