//! The node agent's step socket: takes `berth step` requests, asks the [`StepAuthority`] (the
//! controller) for a grant, and runs `berth internal step` with the client's descriptors as
//! its stdio. It passes the client's signals on to the step's process group, and kills the
//! group if the client goes away (as srun's death ends its step).

use super::wire::{recv_line_with_fds, STDIO_FDS};
use super::StepLaunch;
use berth_api::{StepEvent, StepRequest, StepSignal};
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The longest request line taken (the client's environment travels in it).
const REQUEST_LIMIT: usize = 4 << 20;

/// What the controller decided about a step.
#[derive(Debug, Clone)]
pub struct StepGrant {
    pub step: u32,
    pub user: String,
    /// The job's cgroup under `berth/`.
    pub cgroup: String,
    pub node: String,
    /// CPUs per task; the length is the number of tasks.
    pub tasks: Vec<Vec<u32>>,
}

/// Who may start steps in which job, and where steps are recorded: the controller.
pub trait StepAuthority: Send + Sync + 'static {
    /// Checks that `uid` may start `request` (the job runs here, is theirs, has the CPUs) and
    /// records the step as started.
    fn begin(
        &self,
        uid: u32,
        request: &StepRequest,
    ) -> impl Future<Output = Result<StepGrant, String>> + Send;
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

async fn send(stream: &mut UnixStream, event: &StepEvent) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).expect("events serialise");
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn handle<A: StepAuthority>(
    stream: UnixStream,
    authority: &A,
    berth: &std::path::Path,
) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
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
    let mut stream = UnixStream::from_std(std_stream)?;
    let (line, fds) = match received {
        Ok(r) => r,
        Err(e) => {
            return send(
                &mut stream,
                &StepEvent::Error(format!("bad step request: {e}")),
            )
            .await
        }
    };
    let request: StepRequest = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => {
            return send(
                &mut stream,
                &StepEvent::Error(format!("bad step request: {e}")),
            )
            .await
        }
    };
    let Ok::<[_; STDIO_FDS], _>([stdin, stdout, stderr]) = fds.try_into() else {
        let e = "bad step request: it must carry the client's stdin, stdout and stderr";
        return send(&mut stream, &StepEvent::Error(e.into())).await;
    };
    if request.argv.is_empty() {
        let e = "nothing to run: name a command, e.g. `berth step -n 2 hostname`";
        return send(&mut stream, &StepEvent::Error(e.into())).await;
    }
    let grant = match authority.begin(uid, &request).await {
        Ok(g) => g,
        Err(e) => return send(&mut stream, &StepEvent::Error(e)).await,
    };
    let launch = StepLaunch {
        job_id: request.job,
        step_id: grant.step,
        user: grant.user.clone(),
        cgroup: grant.cgroup.clone(),
        argv: request.argv.clone(),
        env: request.env.clone(),
        cwd: request.cwd.clone(),
        node: grant.node.clone(),
        tasks: grant.tasks.clone(),
        label: request.label,
        kill_on_bad_exit: request.kill_on_bad_exit,
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
            authority.end(request.job, grant.step, 125).await;
            let e = format!("cannot run {} internal step: {e}", berth.display());
            return send(&mut stream, &StepEvent::Error(e)).await;
        }
    };
    let group = child.id().expect("a child just spawned has a pid") as libc::pid_t;
    let ntasks = grant.tasks.len() as u32;
    let _ = send(
        &mut stream,
        &StepEvent::Started {
            step: grant.step,
            ntasks,
        },
    )
    .await;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
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
    authority.end(request.job, grant.step, code).await;
    let mut line = serde_json::to_vec(&StepEvent::Exited { code }).expect("events serialise");
    line.push(b'\n');
    let _ = write.write_all(&line).await;
    Ok(())
}
