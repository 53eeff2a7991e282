//! The node agent's step socket: takes `berth step` requests, asks the [`StepAuthority`] (the
//! controller) for a grant, and runs `berth internal step` with the client's descriptors as
//! its stdio. It passes the client's signals on to the step's process group, and kills the
//! group if the client goes away (as srun's death ends its step).

use super::wire::{recv_line_with_fds, STDIO_FDS};
use super::StepLaunch;
use berth_api::{StepEvent, StepRequest, StepSignal};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

/// The longest request line taken (the client's environment travels in it).
const REQUEST_LIMIT: usize = 4 << 20;

/// What the controller decided about a step.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepGrant {
    pub step: u32,
    pub user: String,
    /// The job's cgroup under `berth/`.
    pub cgroup: String,
    /// The job's directory on this node.
    pub job_dir: PathBuf,
    pub node: String,
    /// CPUs per task; the length is the number of tasks.
    pub tasks: Vec<Vec<u32>>,
}

/// Who may start steps in which job, and where steps are recorded: the controller.
pub trait StepAuthority: Send + Sync + 'static {
    /// Checks that `uid` may start `request` in `job` (it runs here, is theirs, has the
    /// CPUs) and records the step as started.
    fn begin(
        &self,
        uid: u32,
        job: u64,
        request: &StepRequest,
    ) -> impl Future<Output = Result<StepGrant, String>> + Send;
    /// Submits a job that only holds an allocation for one step (`berth step` outside a
    /// job, as srun gets one): `args` are the submit flags as typed, `argv` names it.
    fn allocate(
        &self,
        uid: u32,
        gid: u32,
        argv: &[String],
        args: &[String],
        env: &[(String, String)],
        cwd: &str,
    ) -> impl Future<Output = Result<u64, String>> + Send;
    /// Returns once `job` runs; an error if it ended without running.
    fn wait_running(&self, job: u64) -> impl Future<Output = Result<(), String>> + Send;
    /// Ends an allocation: with its step's exit status, or cancelled (`None`: its client
    /// went away).
    fn release(&self, job: u64, code: Option<i32>) -> impl Future<Output = ()> + Send;
    /// Records the step's end with the worst of its tasks' exit statuses.
    fn end(&self, job: u64, step: u32, code: i32) -> impl Future<Output = ()> + Send;
}

/// Serves the step socket until the listener fails. `berth` is the executable to run as
/// `berth internal step`.
pub async fn serve<A: StepAuthority>(listener: UnixListener, authority: Arc<A>, berth: PathBuf) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (authority, berth) = (authority.clone(), berth.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &*authority, &berth).await {
                eprintln!("berth: step socket: {e}");
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
    authority: &A,
    berth: &std::path::Path,
) -> std::io::Result<()> {
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
            if request.argv.is_empty() {
                return Err(
                    "nothing to run: name a command, e.g. `berth step -n 2 hostname`".into(),
                );
            }
            Ok((request, stdio))
        });
    let (request, stdio) = match request {
        Ok(r) => r,
        Err(e) => return send(&mut write, &StepEvent::Error(e)).await,
    };
    let (job, allocated) = match (request.job, &request.allocate) {
        (Some(job), None) => (job, false),
        (None, Some(args)) => {
            let cwd = request.cwd.clone();
            let job = match authority
                .allocate(
                    cred.uid(),
                    cred.gid(),
                    &request.argv,
                    args,
                    &request.env,
                    &cwd,
                )
                .await
            {
                Ok(job) => job,
                Err(e) => return send(&mut write, &StepEvent::Error(e)).await,
            };
            match wait_for_allocation(authority, job, &mut lines, &mut write).await {
                Ok(true) => (job, true),
                // The client went away (or asked to stop) before the job started.
                Ok(false) => {
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
        authority,
        berth,
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

/// Waits until the allocation `job` runs, telling the client if that takes a while.
/// `Ok(false)`: the client closed the connection or sent a signal (^C) first.
async fn wait_for_allocation<A: StepAuthority>(
    authority: &A,
    job: u64,
    lines: &mut Lines,
    write: &mut OwnedWriteHalf,
) -> Result<bool, String> {
    let running = authority.wait_running(job);
    tokio::pin!(running);
    let mut queued = false;
    loop {
        tokio::select! {
            r = &mut running => {
                r?;
                if queued {
                    let _ = send(write, &StepEvent::Allocated { job }).await;
                }
                return Ok(true);
            }
            _ = lines.next_line() => return Ok(false),
            _ = tokio::time::sleep(QUEUED_AFTER), if !queued => {
                queued = true;
                let _ = send(write, &StepEvent::Queued { job }).await;
            }
        }
    }
}

/// How long an allocation may take before the client hears that it is queued (as srun says
/// "job N queued and waiting for resources").
const QUEUED_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the step's process in `job` and waits for it, passing the client's signals on.
/// Returns the worst exit status of the tasks, or why the step could not start.
#[allow(clippy::too_many_arguments)]
async fn run_step<A: StepAuthority>(
    authority: &A,
    berth: &std::path::Path,
    (uid, client_pid): (u32, Option<i32>),
    job: u64,
    request: &StepRequest,
    [stdin, stdout, stderr]: [OwnedFd; STDIO_FDS],
    lines: &mut Lines,
    write: &mut OwnedWriteHalf,
) -> Result<i32, String> {
    let grant = authority.begin(uid, job, request).await?;
    let launch = StepLaunch {
        job_id: job,
        step_id: grant.step,
        user: grant.user.clone(),
        cgroup: grant.cgroup.clone(),
        job_dir: grant.job_dir.clone(),
        argv: request.argv.clone(),
        env: request.env.clone(),
        cwd: request.cwd.clone(),
        node: grant.node.clone(),
        tasks: grant.tasks.clone(),
        label: request.label,
        kill_on_bad_exit: request.kill_on_bad_exit,
        pty: request.pty,
        client_pid,
    };
    let mut command = tokio::process::Command::new(berth);
    command
        .args(["internal", "step"])
        .env(
            super::LAUNCH_VAR,
            serde_json::to_string(&launch).expect("launch serialises"),
        )
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(false);
    // SAFETY: setsid(2) is async-signal-safe; it makes the step process lead a new session
    // and process group (no controlling terminal of the agent's), which its tasks join.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            authority.end(job, grant.step, 125).await;
            return Err(format!("cannot run {} internal step: {e}", berth.display()));
        }
    };
    let group = child.id().expect("a child just spawned has a pid") as libc::pid_t;
    let ntasks = grant.tasks.len() as u32;
    let _ = send(
        write,
        &StepEvent::Started {
            step: grant.step,
            ntasks,
        },
    )
    .await;
    let signal_group = |sig: i32| {
        // SAFETY: kill(2) on the process group led by the step process we started.
        unsafe { libc::kill(-group, sig) };
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            line = lines.next_line() => match line {
                Ok(Some(l)) => {
                    if let Ok(StepSignal { signal }) = serde_json::from_str(&l) {
                        if (1..65).contains(&signal) {
                            signal_group(signal);
                        }
                    }
                }
                // The client is gone: the step goes with it.
                _ => {
                    signal_group(libc::SIGKILL);
                    break child.wait().await;
                }
            }
        }
    };
    let code = match status {
        Ok(s) => std::os::unix::process::ExitStatusExt::signal(&s)
            .map_or_else(|| s.code().unwrap_or(125), |sig| 128 + sig),
        Err(_) => 125,
    };
    authority.end(job, grant.step, code).await;
    Ok(code)
}
