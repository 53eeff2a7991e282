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
//! A runs its own (`berth internal step` in the job's container on B, its own process group),
//! its input a pipe, its output FIFOs that outlive B's agent (`StepLaunch::spool`). A
//! connection that A's side breaks kills the part, as a client that goes away kills its
//! step; one that B's side breaks (its agent restarting) has A take the part back from B's
//! next agent (`RemotePart::take_back`), which kept it (`server::keep_part`).

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

/// Makes the credentials this agent shows the others (each lives a minute: a part taken
/// back later needs a fresh one).
pub type Callers = Arc<dyn Fn() -> Caller + Send + Sync>;

/// What a step's leader (`lead`) makes its credentials with: the cluster key and whom it
/// calls as (the node of the agent that took the step, or the controller). It travels in
/// the leader's launch, which only root's processes see (the launcher's socket, or root's
/// environment), as the key itself is root's on every node.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signer {
    key: Vec<u8>,
    principal: String,
}

impl std::fmt::Debug for Signer {
    /// Without the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.principal)
    }
}

impl Signer {
    pub fn new(key: &crate::auth::Key, principal: &str) -> Signer {
        Signer {
            key: key.bytes().to_vec(),
            principal: principal.to_string(),
        }
    }

    /// Fresh credentials of its principal, on each call.
    pub fn callers(&self) -> Callers {
        let (key, principal) = (
            crate::auth::Key::from_bytes(&self.key),
            self.principal.clone(),
        );
        Arc::new(move || Caller::new(&key, &principal))
    }
}

/// The first line of a connection that takes back a part the node's agent adopted (it was
/// restarted while the part ran), instead of a [`StepLaunch`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TakeBack {
    take_back: (u64, u32),
}

/// How long the agent that took a step tries to take back a part whose node's agent went
/// away (restarted), as long as a client waits for an agent that went away.
const PART_GONE_LIMIT: Duration = Duration::from_secs(600);

/// A remote part's connection, which signals and input go through: replaced when the
/// part is taken back from its node's next agent; and whether the step was ended since
/// (then it is not taken back).
#[derive(Clone)]
struct Link(Arc<std::sync::Mutex<Duplex>>, Arc<AtomicBool>);

impl Link {
    fn current(&self) -> Duplex {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        self.current().write_all(frame)
    }

    fn ended(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }
}

/// A part of a step running on another node, as the agent that took the step sees it.
pub struct RemotePart {
    node: String,
    link: Link,
    /// Its agent's address, and the step's (job, step): to take it back from there.
    url: String,
    id: (u64, u32),
    callers: Callers,
}

/// Why a connection to a node's agent for a part failed.
enum Dialed {
    /// It did not answer (restarting, or down).
    Unreachable(String),
    /// It answered, and refused.
    Refused(String),
}

impl Dialed {
    fn message(self) -> String {
        match self {
            Dialed::Unreachable(m) | Dialed::Refused(m) => m,
        }
    }
}

impl RemotePart {
    /// Connects to the agent at `url` (`https://HOST:PORT`) and hands it `launch`. Blocking.
    pub fn start(url: &str, callers: Callers, launch: &StepLaunch) -> Result<RemotePart, String> {
        let mut line = serde_json::to_vec(launch).expect("launches serialise");
        line.push(b'\n');
        let stream = dial(url, &callers(), &launch.node, &line).map_err(Dialed::message)?;
        Ok(RemotePart {
            node: launch.node.clone(),
            link: Link(Arc::new(std::sync::Mutex::new(stream)), Arc::default()),
            url: url.to_string(),
            id: (launch.job_id, launch.step_id),
            callers,
        })
    }

    /// Takes the part back from its node's agent, which went away while it ran: tries
    /// again as long as that agent does not answer, for [`PART_GONE_LIMIT`]. The new
    /// connection (also the [`Link`]'s), or why not.
    fn take_back(&self, broke: &std::io::Error) -> Result<Duplex, String> {
        let mut line = serde_json::to_vec(&TakeBack { take_back: self.id }).expect("serialises");
        line.push(b'\n');
        let deadline = std::time::Instant::now() + PART_GONE_LIMIT;
        let mut pause = Duration::from_millis(200);
        loop {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
            if self.link.ended() {
                return Err(format!(
                    "the connection to its agent broke ({broke}), and the step ended before it came back"
                ));
            }
            match dial(&self.url, &(self.callers)(), &self.node, &line) {
                Ok(stream) => {
                    *self.link.0.lock().unwrap_or_else(|e| e.into_inner()) = stream.clone();
                    return Ok(stream);
                }
                Err(Dialed::Refused(why)) => return Err(why),
                Err(Dialed::Unreachable(_)) if std::time::Instant::now() < deadline => {}
                Err(Dialed::Unreachable(why)) => {
                    return Err(format!(
                        "the connection to its agent broke ({broke}), which did not come back in {} minutes: {why}",
                        PART_GONE_LIMIT.as_secs() / 60
                    ))
                }
            }
        }
    }
}

/// Opens the part's connection to the agent at `url`: the upgrade, then `line` (a launch, or
/// a part to take back). Blocking.
fn dial(url: &str, caller: &Caller, node: &str, line: &[u8]) -> Result<Duplex, Dialed> {
    let fail = |e: std::io::Error| Dialed::Unreachable(format!("node {node}: {e}"));
    // The answer's head is read within 10 s; what follows it is the part's frames.
    let tcp = crate::tls::dial(url, Duration::from_secs(5), Duration::from_secs(10))
        .map_err(|e| Dialed::Unreachable(format!("node {node}: {e}")))?;
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
            return Err(Dialed::Unreachable(format!(
                "node {node}: the agent's answer broke off"
            )));
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
        return Err(Dialed::Refused(format!("node {node}: {why}")));
    }
    stream.tcp().set_read_timeout(None).map_err(fail)?;
    stream.write_all(line).map_err(fail)?;
    Ok(stream)
}

impl RemotePart {
    /// Something to signal the part with while [`RemotePart::relay`] runs.
    pub fn signaller(&self) -> Signaller {
        Signaller(self.link.clone())
    }

    /// Relays the part's output to `stdout` and `stderr` (and, with `stdin`, the client's
    /// input to the part) until it ends; returns how (the worst of its tasks' statuses).
    /// Blocking.
    pub fn relay(self, stdin: Option<OwnedFd>, stdout: OwnedFd, stderr: OwnedFd) -> PartEnd {
        let (mut out, mut err) = (std::fs::File::from(stdout), std::fs::File::from(stderr));
        let done = Arc::new(AtomicBool::new(false));
        let feeding = match stdin {
            Some(fd) => Some(feed_stdin(fd, self.link.clone(), done.clone())),
            None => {
                let _ = self.link.send(&frame(STDIN_END, &[]));
                None
            }
        };
        let mut stream = self.link.current();
        let end = loop {
            match read_frame(&mut stream) {
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
                // Its agent went away (restarted?): the part goes on there, and is taken
                // back from the next one, its output from where it was.
                Err(e) => match self.take_back(&e) {
                    Ok(again) => stream = again,
                    Err(why) => {
                        let _ = writeln!(err, "berth step: node {}: {why}", self.node);
                        break PartEnd::without_usage(125);
                    }
                },
            }
        };
        done.store(true, Ordering::Relaxed);
        let _ = stream.tcp().shutdown(std::net::Shutdown::Both);
        if let Some(f) = feeding {
            let _ = f.join();
        }
        end
    }
}

/// Signals a remote part (through its connection, whichever it is by then).
pub struct Signaller(Link);

impl Signaller {
    pub fn signal(&mut self, sig: i32) {
        // (Ending the part: not taken back if its agent is away.)
        if sig == super::end_signal() || sig == libc::SIGKILL {
            self.0 .1.store(true, Ordering::Relaxed);
        }
        let _ = self.0.send(&frame(SIGNAL, &sig.to_be_bytes()));
    }
}

/// Passes the client's input on to a part until it ends, or the part does (`done`).
fn feed_stdin(fd: OwnedFd, to: Link, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
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
                    let _ = to.send(&frame(STDIN_END, &[]));
                    return;
                }
                Ok(n) => {
                    if to.send(&frame(STDIN, &buf[..n])).is_err() {
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
    if let Ok(TakeBack {
        take_back: (job, step),
    }) = serde_json::from_slice(&line)
    {
        let end = match super::server::take_part(job, step) {
            Some(part) => relay_adopted(part, read, &mut write).await,
            None => Err(format!("step {job}.{step} has no part here to take back: it ended with the node's agent, which was restarted")),
        };
        let last = match end {
            Ok(end) => frame(EXIT, &exit_payload(end)),
            Err(e) => frame(ERROR, e.as_bytes()),
        };
        let _ = write.write_all(&last).await;
        let _ = write.shutdown().await;
        return;
    }
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
    let spool = launch
        .job_dir
        .join(SPOOL_DIR)
        .join(launch.step_id.to_string());
    launch.spool = Some(spool);
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

/// Where a node keeps the FIFOs of the parts it runs for other nodes' agents, in a job's
/// directory (see [`StepLaunch::spool`]).
const SPOOL_DIR: &str = "spool";

/// Makes the FIFO of a part's stream `which` and opens both its ends: this agent's reader
/// (non-blocking) and the part's writer (blocking: the tasks' stdio, which programs expect
/// to block).
fn make_fifo(spool: &std::path::Path, which: &str) -> Result<(OwnedFd, OwnedFd), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = super::spool_fifo(spool, which);
    let fail = |e: std::io::Error| format!("the part's FIFO {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)
            .map_err(fail)?;
    }
    let _ = std::fs::remove_file(&path);
    let name =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: mkfifo(3) of a NUL-terminated path.
    if unsafe { libc::mkfifo(name.as_ptr(), 0o600) } != 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    let reader = open_fifo(&path)?;
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(fail)?;
    Ok((reader, writer.into()))
}

/// This agent's reader of a part's FIFO.
fn open_fifo(path: &std::path::Path) -> Result<OwnedFd, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| format!("the part's FIFO {}: {e}", path.display()))
}

fn remove_spool(spool: &std::path::Path) {
    for which in ["out", "err"] {
        let _ = std::fs::remove_file(super::spool_fifo(spool, which));
    }
}

/// Runs the part (its input a pipe from this process, its output FIFOs it reads: see
/// [`StepLaunch::spool`]) and relays until it ends; how it ended.
async fn run_part<R, W>(
    launcher: &Arc<Launcher>,
    launch: &StepLaunch,
    read: R,
    write: &mut W,
) -> Result<PartEnd, String>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    use tokio::net::unix::pipe;
    let spool = launch.spool.as_deref().ok_or("the part has no spool")?;
    // Blocking: the part's end is its tasks' stdin, which programs expect to block (tokio
    // makes this process's end non-blocking, each end being a file of its own).
    let (stdin_read, stdin_write) = super::pipe(0).map_err(|e| format!("a pipe: {e}"))?;
    let (stdout_read, stdout_write) = make_fifo(spool, "out")?;
    let (stderr_read, stderr_write) = make_fifo(spool, "err")?;
    let part = super::start_part(launcher, launch, [stdin_read, stdout_write, stderr_write]).await;
    let part = part.inspect_err(|_| remove_spool(spool))?;
    let stdin = pipe::Sender::from_owned_fd(stdin_write).map_err(|e| format!("a pipe: {e}"))?;
    let group = part.group;
    let end = relay_part(
        group,
        part.end,
        Some(stdin),
        [stdout_read, stderr_read],
        read,
        write,
    )
    .await;
    super::forget_record(&launch.job_dir, group);
    remove_spool(spool);
    end
}

/// Relays part `adopted`, which this agent's predecessor started, from where that one left
/// it: its output from its FIFOs, until it ends; how it ended.
async fn relay_adopted<R, W>(
    mut adopted: super::server::AdoptedPart,
    read: R,
    write: &mut W,
) -> Result<PartEnd, String>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let output = match adopted.output.take() {
        Some(output) => output,
        None => [
            open_fifo(&super::spool_fifo(&adopted.spool, "out"))?,
            open_fifo(&super::spool_fifo(&adopted.spool, "err"))?,
        ],
    };
    let mut ended = adopted.end.clone();
    let end = Box::pin(async move {
        loop {
            if let Some(end) = *ended.borrow_and_update() {
                return end;
            }
            if ended.changed().await.is_err() {
                return PartEnd::without_usage(125);
            }
        }
    });
    let group = adopted.pid as libc::pid_t;
    let relayed = relay_part(group, end, None, output, read, write).await;
    let _ = std::fs::remove_file(&adopted.record);
    remove_spool(&adopted.spool);
    relayed
}

/// Relays a part of process group `group` until `end` and its output (`[stdout, stderr]`,
/// this agent's readers) have ended: its output to the peer, the peer's input (to `stdin`)
/// and signals to it.
async fn relay_part<R, W>(
    group: libc::pid_t,
    mut end: std::pin::Pin<Box<dyn std::future::Future<Output = PartEnd> + Send>>,
    mut stdin: Option<tokio::net::unix::pipe::Sender>,
    [stdout, stderr]: [OwnedFd; 2],
    mut read: R,
    write: &mut W,
) -> Result<PartEnd, String>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    use tokio::net::unix::pipe;
    let signal_group = |sig: i32| {
        // (None for a part that ended before it was taken back: -0 would be this agent's.)
        if group > 0 {
            // SAFETY: kill(2) on the process group led by the part's process.
            unsafe { libc::kill(-group, sig) };
        }
    };
    let piped = |e: std::io::Error| format!("the part's output: {e}");
    let mut stdout = pipe::Receiver::from_owned_fd(stdout).map_err(piped)?;
    let mut stderr = pipe::Receiver::from_owned_fd(stderr).map_err(piped)?;
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
                    if sig == super::end_signal() && group > 0 {
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
            code = &mut end, if status.is_none() => {
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
