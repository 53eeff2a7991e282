//! A step's tasks on other nodes: the agent that took the step (where `berth step` runs)
//! asks each other node's agent to run its part, and relays the part's output to the
//! client and the client's signals to the part.
//!
//! ```text
//! agent A ──POST /v1/agent/step over TLS (Upgrade: berth-step; a credential signed with the
//!           cluster key)──► agent B ──101──► A sends the part's StepLaunch as one JSON line, then
//! frames both ways:   A ──► B: stdin, end of stdin, signal
//!                     B ──► A: stdout, stderr, exit status and usage (last), error
//!                              (refused)
//! ```
//!
//! A frame is a kind byte, a big-endian u32 length and that many bytes (the exit frame: the
//! status as an i32, then, where the part's process said, its tasks' user and system CPU
//! microseconds and largest peak RSS in bytes as three u64s). B runs its part as
//! A runs its own (`berth internal step` in the job's container on B, its own process group)
//! with pipes for its stdio; a connection that breaks kills the part, as a client that goes
//! away kills its step.

use super::{PartEnd, StepLaunch};
use crate::launcher::Launcher;
use crate::node::NodeAgent;
use crate::tls::Duplex;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The path the agents serve parts of steps on.
pub const PATH: &str = "/v1/agent/step";
/// The protocol named in the Upgrade header.
pub const PROTOCOL: &str = "berth-step";

const STDIN: u8 = 0;
const STDIN_END: u8 = 1;
const SIGNAL: u8 = 2;
const STDOUT: u8 = 3;
const STDERR: u8 = 4;
const EXIT: u8 = 5;
const ERROR: u8 = 6;

/// The largest frame taken (a step launch line is read separately).
const FRAME_LIMIT: usize = 1 << 20;
/// The longest step launch line taken (the client's environment travels in it).
const LAUNCH_LIMIT: usize = 4 << 20;

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + payload.len());
    f.push(kind);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The exit frame's payload for `end`: its status, what it used (four numbers) if it can
/// say, the signal that gave the status if one did.
fn exit_payload(end: PartEnd) -> Vec<u8> {
    let mut payload = end.code.to_be_bytes().to_vec();
    if let Some(u) = end.usage {
        for n in [u.user_usec, u.system_usec, u.max_rss_bytes, u.oom_kills] {
            payload.extend_from_slice(&n.to_be_bytes());
        }
    }
    if let Some(signal) = end.signal {
        payload.extend_from_slice(&signal.to_be_bytes());
    }
    payload
}

/// The part's end from an exit frame's payload; `None` if it is not one.
fn parse_exit(payload: &[u8]) -> Option<PartEnd> {
    let code = i32::from_be_bytes(payload.get(..4)?.try_into().ok()?);
    // (The signal, last, since 2026-12-07: 4 bytes past no usage or a whole usage.)
    let (rest, signal) = match &payload[4..] {
        rest if rest.len() == 4 || rest.len() == 36 => {
            let (rest, signal) = rest.split_at(rest.len() - 4);
            (rest, Some(i32::from_be_bytes(signal.try_into().ok()?)))
        }
        rest => (rest, None),
    };
    let usage = match rest {
        [] => None,
        // (Without the OOM kills, the fourth, before 2026-12-06.)
        rest if rest.len() == 24 || rest.len() == 32 => {
            let n = |i: usize| u64::from_be_bytes(rest[i * 8..i * 8 + 8].try_into().expect("8"));
            Some(berth_api::StepUsage {
                user_usec: n(0),
                system_usec: n(1),
                max_rss_bytes: n(2),
                oom_kills: if rest.len() == 32 { n(3) } else { 0 },
            })
        }
        _ => return None,
    };
    Some(PartEnd {
        code,
        signal,
        usage,
    })
}

/// A frame's kind and an empty payload of its length, from its head.
fn frame_head(head: [u8; 5]) -> std::io::Result<(u8, Vec<u8>)> {
    let len = u32::from_be_bytes(head[1..].try_into().expect("four bytes")) as usize;
    if len > FRAME_LIMIT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a step frame of {len} bytes"),
        ));
    }
    Ok((head[0], vec![0; len]))
}

fn read_frame(r: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head)?;
    let (kind, mut payload) = frame_head(head)?;
    r.read_exact(&mut payload)?;
    Ok((kind, payload))
}

async fn read_frame_async(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    let (kind, mut payload) = frame_head(head)?;
    r.read_exact(&mut payload).await?;
    Ok((kind, payload))
}

/// What the agent that took a step shows the others: a credential they take, and the
/// cluster's TLS (see [`crate::tls`]).
pub struct Caller {
    pub credential: String,
    pub tls: Arc<rustls::ClientConfig>,
}

impl Caller {
    /// `principal`'s credential, signed with the cluster key `key`, and its TLS.
    pub fn new(key: &crate::auth::Key, principal: &str) -> Caller {
        Caller {
            credential: key.credential(principal),
            tls: key.tls().client.clone(),
        }
    }
}

/// A part of a step running on another node, as the agent that took the step sees it.
pub struct RemotePart {
    node: String,
    stream: Duplex,
}

impl RemotePart {
    /// Connects to the agent at `url` (`https://HOST:PORT`) and hands it `launch`. Blocking.
    pub fn start(url: &str, caller: &Caller, launch: &StepLaunch) -> Result<RemotePart, String> {
        let node = launch.node.clone();
        let fail = |e: std::io::Error| format!("node {node}: {e}");
        // The answer's head is read within 10 s; what follows it is the part's frames.
        let tcp = crate::tls::dial(url, Duration::from_secs(5), Duration::from_secs(10))
            .map_err(|e| format!("node {node}: {e}"))?;
        let mut stream = Duplex::connect(tcp, &caller.tls).map_err(fail)?;
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nHost: berth\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: {PROTOCOL}\r\nContent-Length: 0\r\n\r\n",
            caller.credential
        );
        stream.write_all(head.as_bytes()).map_err(fail)?;
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() > 64 * 1024 || stream.read(&mut byte).map_err(fail)? == 0 {
                return Err(format!("node {node}: the agent's answer broke off"));
            }
            answer.push(byte[0]);
        }
        let answer = String::from_utf8_lossy(&answer);
        if answer.split_whitespace().nth(1) != Some("101") {
            // A refusal: its body, as long as it says (the connection may stay open).
            let length = answer
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; length.min(64 * 1024)];
            let _ = stream.read_exact(&mut body);
            let why = serde_json::from_slice::<berth_api::ErrorBody>(&body).map_or_else(
                |_| answer.lines().next().unwrap_or("").to_string(),
                |e| e.error,
            );
            return Err(format!("node {node}: {why}"));
        }
        stream.tcp().set_read_timeout(None).map_err(fail)?;
        let mut line = serde_json::to_vec(launch).expect("launches serialise");
        line.push(b'\n');
        stream.write_all(&line).map_err(fail)?;
        Ok(RemotePart { node, stream })
    }

    /// Something to signal the part with while [`RemotePart::relay`] runs.
    pub fn signaller(&self) -> Signaller {
        Signaller(self.stream.clone())
    }

    /// Relays the part's output to `stdout` and `stderr` (and, with `stdin`, the client's
    /// input to the part) until it ends; returns how (the worst of its tasks' statuses).
    /// Blocking.
    pub fn relay(mut self, stdin: Option<OwnedFd>, stdout: OwnedFd, stderr: OwnedFd) -> PartEnd {
        let (mut out, mut err) = (std::fs::File::from(stdout), std::fs::File::from(stderr));
        let done = Arc::new(AtomicBool::new(false));
        let feeding = match stdin {
            Some(fd) => Some(feed_stdin(fd, self.stream.clone(), done.clone())),
            None => {
                let _ = self.stream.write_all(&frame(STDIN_END, &[]));
                None
            }
        };
        let end = loop {
            match read_frame(&mut self.stream) {
                Ok((STDOUT, data)) => {
                    let _ = out.write_all(&data);
                }
                Ok((STDERR, data)) => {
                    let _ = err.write_all(&data);
                }
                Ok((EXIT, data)) => match parse_exit(&data) {
                    Some(end) => break end,
                    None => {
                        let _ = writeln!(
                            err,
                            "berth step: node {}: a malformed exit frame",
                            self.node
                        );
                        break PartEnd::without_usage(125);
                    }
                },
                Ok((ERROR, data)) => {
                    let _ = writeln!(
                        err,
                        "berth step: node {}: {}",
                        self.node,
                        String::from_utf8_lossy(&data)
                    );
                    break PartEnd::without_usage(125);
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = writeln!(
                        err,
                        "berth step: node {}: the connection to its agent broke: {e}",
                        self.node
                    );
                    break PartEnd::without_usage(125);
                }
            }
        };
        done.store(true, Ordering::Relaxed);
        let _ = self.stream.tcp().shutdown(std::net::Shutdown::Both);
        if let Some(f) = feeding {
            let _ = f.join();
        }
        end
    }
}

/// Signals a remote part (a clone of its connection).
pub struct Signaller(Duplex);

impl Signaller {
    pub fn signal(&mut self, sig: i32) {
        let _ = self.0.write_all(&frame(SIGNAL, &sig.to_be_bytes()));
    }
}

/// Passes the client's input on to a part until it ends, or the part does (`done`).
fn feed_stdin(fd: OwnedFd, mut to: Duplex, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let mut from = std::fs::File::from(fd);
        let mut buf = vec![0u8; 64 * 1024];
        while !done.load(Ordering::Relaxed) {
            // Polled with a timeout, so that the thread ends with the part even if the input
            // never does (a terminal).
            let mut p = libc::pollfd {
                fd: from.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one descriptor we own.
            if unsafe { libc::poll(&mut p, 1, 200) } <= 0 {
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.write_all(&frame(STDIN_END, &[]));
                    return;
                }
                Ok(n) => {
                    if to.write_all(&frame(STDIN, &buf[..n])).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Serves one part of a step on this node (agent B), on a connection upgraded from
/// `POST /v1/agent/step`: reads the launch, runs `berth internal step` in the job's container
/// here (forked by the node's launcher) with pipes for its stdio, and relays until it ends.
/// `controllers` serve the images this node fetches.
pub async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
    io: S,
    node: NodeAgent,
    controllers: Vec<String>,
) {
    let (read, mut write) = tokio::io::split(io);
    let mut read = tokio::io::BufReader::new(read);
    let mut line = Vec::new();
    let got = (&mut read)
        .take(LAUNCH_LIMIT as u64)
        .read_until(b'\n', &mut line)
        .await;
    let launch = match got {
        Ok(_) => serde_json::from_slice::<StepLaunch>(&line).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
    .map_err(|e| format!("bad step launch: {e}"));
    let launch = match launch {
        Ok(l) => prepare(&node, l, &controllers).await,
        Err(e) => Err(e),
    };
    let launch = match launch {
        Ok(l) => l,
        Err(e) => {
            let _ = write.write_all(&frame(ERROR, e.as_bytes())).await;
            return;
        }
    };
    let end = match run_part(&node.launcher(), &launch, read, &mut write).await {
        Ok(end) => end,
        Err(e) => {
            let _ = write.write_all(&frame(ERROR, e.as_bytes())).await;
            return;
        }
    };
    let _ = write.write_all(&frame(EXIT, &exit_payload(end))).await;
    let _ = write.shutdown().await;
}

/// Fills in what is this node's own: the job's directory and cgroup here, and for a step in
/// an image of its own the node's tools and its copy of the image. The job must run here
/// (its runner alive); a job whose start on this node is still on its way (its script may
/// start a step at once) is waited for, a while.
async fn prepare(
    node: &NodeAgent,
    mut launch: StepLaunch,
    controllers: &[String],
) -> Result<StepLaunch, String> {
    let id = launch.job_id;
    let runner = node
        .wait_runner(id)
        .await
        .ok_or_else(|| format!("job {id} does not run on this node"))?;
    launch.job_dir = node.job_dir(id);
    launch.cgroup = NodeAgent::cgroup_name(id, runner);
    if let Some(image) = launch.image.as_mut() {
        launch.tools = Some(node.tools());
        // An image the controller serves: this node's copy, fetched if it is not there yet.
        if let Some(source) = launch.image_source.as_mut() {
            image.squashfs = node.image_cache(&source.sha256);
            source.from = controllers.to_vec();
        }
    }
    launch.client_pid = None;
    launch.pty = false;
    Ok(launch)
}

/// Runs the part (its stdio pipes to this process) and relays until it ends; how it ended.
async fn run_part<R, W>(
    launcher: &Arc<Launcher>,
    launch: &StepLaunch,
    mut read: R,
    write: &mut W,
) -> Result<PartEnd, String>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    use tokio::net::unix::pipe;
    // Blocking: the part's ends are its tasks' stdio, which programs expect to block (tokio
    // makes this process's ends non-blocking, each end being a file of its own).
    let pipes = || super::pipe(0).map_err(|e| format!("a pipe: {e}"));
    let ((stdin_read, stdin_write), (stdout_read, stdout_write), (stderr_read, stderr_write)) =
        (pipes()?, pipes()?, pipes()?);
    let mut part =
        super::start_part(launcher, launch, [stdin_read, stdout_write, stderr_write]).await?;
    let group = part.group;
    let signal_group = |sig: i32| {
        // SAFETY: kill(2) on the process group led by the part's process.
        unsafe { libc::kill(-group, sig) };
    };
    let piped = |e: std::io::Error| format!("the part's pipes: {e}");
    let mut stdin = Some(pipe::Sender::from_owned_fd(stdin_write).map_err(piped)?);
    let mut stdout = pipe::Receiver::from_owned_fd(stdout_read).map_err(piped)?;
    let mut stderr = pipe::Receiver::from_owned_fd(stderr_read).map_err(piped)?;
    // The peer's frames, read by a task of their own (a frame half read must not be lost
    // when another event wins the select).
    let (tx, mut frames) = tokio::sync::mpsc::channel::<Option<(u8, Vec<u8>)>>(16);
    let reader = tokio::spawn(async move {
        loop {
            let f = read_frame_async(&mut read).await.ok();
            let end = f.is_none();
            if tx.send(f).await.is_err() || end {
                return;
            }
        }
    });
    let (mut out_buf, mut err_buf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let (mut out_open, mut err_open, mut peer) = (true, true, true);
    let mut status = None;
    // Once the part's process ended, its output is drained for a moment more (a task's
    // child may hold the pipes open), then its group goes.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            f = frames.recv(), if peer => match f.flatten() {
                Some((STDIN, data)) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some((STDIN_END, _)) => stdin = None,
                Some((SIGNAL, data)) if data.len() == 4 => {
                    let sig = i32::from_be_bytes(data.try_into().expect("four bytes"));
                    if sig == super::end_signal() {
                        // For the step's process alone, which ends its tasks.
                        // SAFETY: kill(2) on the part's process.
                        unsafe { libc::kill(group, sig) };
                    } else if (1..65).contains(&sig) {
                        signal_group(sig);
                    }
                }
                Some(_) => {}
                // The agent that took the step is gone, and its client with it: so is the part.
                None => {
                    peer = false;
                    signal_group(libc::SIGKILL);
                }
            },
            n = stdout.read(&mut out_buf), if out_open => match n {
                Ok(n) if n > 0 => {
                    if write.write_all(&frame(STDOUT, &out_buf[..n])).await.is_err() {
                        signal_group(libc::SIGKILL);
                    }
                }
                _ => out_open = false,
            },
            n = stderr.read(&mut err_buf), if err_open => match n {
                Ok(n) if n > 0 => {
                    if write.write_all(&frame(STDERR, &err_buf[..n])).await.is_err() {
                        signal_group(libc::SIGKILL);
                    }
                }
                _ => err_open = false,
            },
            code = &mut part.end, if status.is_none() => {
                status = Some(code);
                drain_until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            },
            _ = tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)), if drain_until.is_some() => {
                signal_group(libc::SIGKILL);
                break;
            },
        }
        if status.is_some() && !out_open && !err_open {
            break;
        }
    }
    reader.abort();
    super::forget_record(&launch.job_dir, group);
    Ok(status.expect("the loop ends after the part's process"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_frame_carries_the_status_and_the_usage_if_there_is_one() {
        let usage = berth_api::StepUsage {
            user_usec: 1_500_000,
            system_usec: 20_000,
            max_rss_bytes: 41 << 20,
            oom_kills: 1,
        };
        for end in [
            PartEnd {
                code: 137,
                signal: Some(9),
                usage: Some(usage),
            },
            PartEnd {
                code: 130,
                signal: None,
                usage: Some(usage),
            },
            PartEnd {
                code: 130,
                signal: Some(2),
                usage: None,
            },
            PartEnd::without_usage(3),
        ] {
            assert_eq!(parse_exit(&exit_payload(end)), Some(end));
        }
        // (What an agent without usage sends.)
        assert_eq!(
            parse_exit(&7i32.to_be_bytes()),
            Some(PartEnd::without_usage(7))
        );
        for bad in [&[0u8, 0, 1][..], &[0; 12], &[0; 29], &[0; 44]] {
            assert_eq!(parse_exit(bad), None, "{bad:?}");
        }
    }
}
