//! A PMI-1 and PMI-2 process manager for a step's tasks, so that MPI programs built for
//! them (MPICH and its kin) start without mpiexec: `berth step -n 4 ./mpi_app`, as srun
//! does with --mpi=pmi1 (here the default) or --mpi=pmi2. Each connection speaks the wire
//! protocol it starts with; both share the key-value space and the barriers.
//!
//! A step on one node has its server in a helper of its step process ([`Helper`]), on
//! loopback, so that it goes on while the node's agent restarts; for a step across nodes, the
//! agent that takes it listens on TCP. Each task gets its own connection to it in
//! `PMI_FD` (as hydra and slurmstepd give one), opened by the node's step process, which first
//! sends the step's secret (`cmd=berth_secret secret=S`, [`Contact`]): the server closes any
//! connection that does not begin so, so that nobody else on the network can abort a step,
//! read its key-value space or upset its barriers. `PMI_RANK` and `PMI_SIZE` say the task's
//! rank and the step's size (`PMI_ID` the rank too, for PMI-1's initack). The task talks the
//! "simple" PMI-1 wire protocol: newline-terminated lines of `key=value` fields separated
//! by single spaces, `cmd=` first:
//!
//! ```text
//! cmd=initack pmiid=R           cmd=initack, cmd=set size=N, cmd=set rank=R, cmd=set debug=0
//! cmd=init pmi_version=1 ...    cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0
//! cmd=get_maxes                 cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024
//! cmd=get_appnum                cmd=appnum appnum=0
//! cmd=get_my_kvsname            cmd=my_kvsname kvsname=K
//! cmd=get_universe_size         cmd=universe_size size=N
//! cmd=put kvsname=K key=k value=v   cmd=put_result rc=0 msg=success
//! cmd=get kvsname=K key=k       cmd=get_result rc=0 msg=success value=v
//!                               (or rc=-1 msg=key_k_not_found: `get` never waits)
//! cmd=barrier_in                cmd=barrier_out, to every task once all N arrived
//! cmd=finalize                  cmd=finalize_ack
//! cmd=abort exitcode=E          (no answer: the step is killed and ends with E)
//! ```
//!
//! `value=` is always the last field and runs to the end of the line: values may hold
//! spaces (Open MPI's base64 pads with them). The key-value space starts with
//! `PMI_process_mapping`, which tells MPICH which ranks share a node (and so shared memory).
//!
//! PMI-2 (MPICH's `MPIR_CVAR_PMI_VERSION=2`, libpmi2 clients) starts with the same `cmd=init`
//! line (`pmi_version=2`), then talks in messages of a 6-character decimal length (padded
//! with spaces) and that many bytes of `key=value;` fields, `cmd=` first, no newline:
//!
//! ```text
//! cmd=fullinit;pmirank=R;          cmd=fullinit-response;rc=0;...;rank=R;size=N;appnum=0;...;
//! cmd=job-getid;                   cmd=job-getid-response;rc=0;jobid=K;
//! cmd=info-getjobattr;key=k;       cmd=info-getjobattr-response;rc=0;found=TRUE;value=v;
//! cmd=kvs-put;key=k;value=v;       cmd=kvs-put-response;rc=0;
//! cmd=kvs-get;jobid=K;srcid=S;key=k;   cmd=kvs-get-response;rc=0;found=TRUE;value=v;
//! cmd=kvs-fence;                   cmd=kvs-fence-response;rc=0; once all N arrived
//! cmd=info-putnodeattr;key=k;value=v;  cmd=info-putnodeattr-response;rc=0;
//! cmd=info-getnodeattr;key=k;wait=TRUE;  ...-response;rc=0;found=TRUE;value=v; (waits for
//!                                   a task of its node to put it when wait=TRUE)
//! cmd=finalize;                    cmd=finalize-response;rc=0;
//! cmd=abort;exitcode=E;...         (no answer: the step ends with E)
//! ```
//!
//! A field `thrid` (a threaded client's) comes back in the answer.
//!
//! A PMIx step's servers (one on each node, `pmix.rs`) each keep a connection here, on which
//! they gather their fences and ask each other for a rank's data (PMIx's direct modex), in
//! PMI-1 lines, those with `size=` followed by that many bytes of data:
//!
//! ```text
//! cmd=pmix_node node=I                 (no answer: node I's server is on this connection)
//! cmd=allgather key=K parts=P size=S   cmd=allgather_out size=T, and T bytes: the data of
//!   (S bytes)                          all P parts under K, once all of them sent theirs
//! cmd=dmodex_req id=M node=J rank=R    cmd=dmodex_out id=M status=E size=T, and T bytes:
//!                                      rank R's data, as node J's server answered
//!           node J's connection gets:  cmd=dmodex id=G rank=R, and answers
//!                                      cmd=dmodex_out id=G status=E size=T, and T bytes
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The longest line taken: a value of up to `vallen_max` bytes and its key and command.
const LINE_LIMIT: usize = 4096;

/// The most data one part may bring to an allgather (a node's PMIx modex).
const GATHER_LIMIT: usize = 64 << 20;

/// `PMI_process_mapping` for ranks numbered node by node, `counts` per node:
/// `(vector,(first_node,nodes,ranks_per_node),...)`, consecutive nodes with the same count
/// in one block, as MPICH's process managers write it.
pub fn process_mapping(counts: &[u32]) -> String {
    let mut blocks: Vec<(usize, usize, u32)> = Vec::new();
    for (node, &c) in counts.iter().enumerate() {
        match blocks.last_mut() {
            Some((_, n, per)) if *per == c => *n += 1,
            _ => blocks.push((node, 1, c)),
        }
    }
    let inner: Vec<String> = blocks
        .iter()
        .map(|(first, n, per)| format!("({first},{n},{per})"))
        .collect();
    format!("(vector,{})", inner.join(","))
}

/// The index of the node of rank `rank`, ranks numbered node by node, `counts` tasks per
/// node (the last node for a rank past them all).
pub(super) fn node_of(counts: impl IntoIterator<Item = u32>, rank: u32) -> usize {
    let (mut first, mut last) = (0u32, 0);
    for (node, n) in counts.into_iter().enumerate() {
        first += n;
        if rank < first {
            return node;
        }
        last = node;
    }
    last
}

/// One request line: its fields, `value` (if any) the rest of the line.
pub(super) fn fields(line: &str) -> HashMap<&str, &str> {
    let mut map = HashMap::new();
    let (head, value) = match line.find(" value=") {
        Some(i) => (&line[..i], Some(&line[i + " value=".len()..])),
        None => (line, None),
    };
    for field in head.split(' ') {
        if let Some((k, v)) = field.split_once('=') {
            map.insert(k, v);
        }
    }
    if let Some(v) = value {
        map.insert("value", v);
    }
    map
}

struct State {
    kvs: HashMap<String, String>,
    /// The tasks waiting in the current barrier (PMI-1's barrier, PMI-2's fence), each with
    /// its answer, in the wire protocol it speaks.
    barrier: Vec<Waiting>,
    /// PMI-2's node attributes, by node index and key.
    node_attrs: HashMap<(usize, String), String>,
    /// Tasks waiting for a node attribute (`wait=TRUE`).
    attr_waiters: Vec<AttrWaiter>,
    /// The allgathers under way, by key: the parts in so far, each with its data.
    gathers: HashMap<String, Vec<Waiting>>,
    /// The PMIx servers' connections, by node index.
    pmix_nodes: HashMap<usize, mpsc::UnboundedSender<Vec<u8>>>,
    /// Requests for a node whose server has not said it is there yet.
    pmix_queued: HashMap<usize, Vec<Vec<u8>>>,
    /// Direct modex requests sent on, by their id here: who asked, and its own id.
    dmodex: HashMap<u64, (mpsc::UnboundedSender<Vec<u8>>, u64)>,
    next_dmodex: u64,
}

/// A connection waiting in a barrier or an allgather, with its answer or its data.
type Waiting = (mpsc::UnboundedSender<Vec<u8>>, Vec<u8>);

impl State {
    /// A step's state before any task came: the key-value space starts with `kvs`.
    fn new(kvs: HashMap<String, String>) -> State {
        State {
            kvs,
            barrier: Vec::new(),
            node_attrs: HashMap::new(),
            attr_waiters: Vec::new(),
            gathers: HashMap::new(),
            pmix_nodes: HashMap::new(),
            pmix_queued: HashMap::new(),
            dmodex: HashMap::new(),
            next_dmodex: 0,
        }
    }
}

/// A task waiting for a node attribute: its node, the key, where to answer, its thrid.
type AttrWaiter = (
    usize,
    String,
    mpsc::UnboundedSender<Vec<u8>>,
    Option<String>,
);

/// How the step's processes reach its PMI server: on `node`, at `host`:`port` from the
/// others, and the secret each connection starts with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub node: String,
    pub host: String,
    pub port: u16,
    pub secret: String,
}

impl Contact {
    /// The server's address from node `here`: loopback on its own node, else its host's,
    /// resolved (on the host: inside a container, name resolution would load the image's
    /// libraries).
    pub fn resolve(&self, here: &str) -> std::io::Result<Coordinator> {
        let addr = match here == self.node {
            true => std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            false => std::net::ToSocketAddrs::to_socket_addrs(&(self.host.as_str(), self.port))
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.host)))?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{} has no address", self.host)))?,
        };
        Ok(Coordinator {
            addr,
            secret: self.secret.clone(),
        })
    }
}

/// A resolved [`Contact`].
#[derive(Debug, Clone)]
pub struct Coordinator {
    pub addr: std::net::SocketAddr,
    secret: String,
}

impl Coordinator {
    /// A connection to the server, its secret sent.
    pub fn connect(&self) -> std::io::Result<std::net::TcpStream> {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(self.addr)?;
        let _ = stream.set_nodelay(true);
        writeln!(stream, "cmd=berth_secret secret={}", self.secret)?;
        Ok(stream)
    }
}

/// A running PMI server for one step.
pub struct Server {
    /// The port it listens on.
    pub port: u16,
    /// What each connection must begin with ([`Contact`]).
    pub secret: String,
    /// A task's `cmd=abort exitcode=E`: the step must end with E.
    pub aborts: mpsc::UnboundedReceiver<i32>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Server {
    /// Listens (on every address: the tasks on other nodes connect too) for a step of
    /// `counts` tasks per node, whose key-value space is named `kvsname`.
    pub async fn start(counts: &[u32], kvsname: String) -> std::io::Result<Server> {
        let listener = TcpListener::bind(("0.0.0.0", 0)).await?;
        let secret = crate::runner::random_hex().map_err(std::io::Error::other)?;
        Server::serve(listener, counts, kvsname, secret)
    }

    /// Serves the step on `listener`, each connection beginning with `secret`.
    pub(super) fn serve(
        listener: TcpListener,
        counts: &[u32],
        kvsname: String,
        secret: String,
    ) -> std::io::Result<Server> {
        let port = listener.local_addr()?.port();
        let expected: Arc<str> = secret.as_str().into();
        let size: u32 = counts.iter().sum();
        let mut kvs = HashMap::new();
        kvs.insert("PMI_process_mapping".to_string(), process_mapping(counts));
        let state = Arc::new(Mutex::new(State::new(kvs)));
        let counts: Arc<[u32]> = counts.into();
        let (abort_tx, aborts) = mpsc::unbounded_channel();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let step = Step {
                    secret: expected.clone(),
                    counts: counts.clone(),
                    size,
                    kvsname: kvsname.clone(),
                    state: state.clone(),
                    abort: abort_tx.clone(),
                };
                tokio::spawn(async move {
                    let _ = serve(stream, &step).await;
                });
            }
        });
        Ok(Server {
            port,
            secret,
            aborts,
            accept,
        })
    }
}

/// The PMI server of a step whose tasks all run on one node, served by a helper process
/// that the node's step process forks (as the PMIx helper, see `pmix`): it lives as long as
/// the step's tasks do, not as long as the agent that took the step, so that an MPI step goes
/// on across a restart of its agent (the next one adopts its step process). The helper
/// becomes the job's user, listens on loopback and writes each task's `cmd=abort
/// exitcode=E` to its link, as E in four bytes; it is killed once the tasks have ended (and
/// ends by itself if the step process goes first).
pub struct Helper {
    pid: libc::pid_t,
    link: std::os::unix::net::UnixStream,
    /// How the step process reaches it (each task's connection, the PMIx helper's).
    pub coordinator: Coordinator,
}

impl Helper {
    /// Forks the helper for `launch`'s tasks (this node's, the whole step). The calling
    /// process must be single-threaded.
    pub fn start(
        launch: &super::StepLaunch,
        id: &berth_runtime::Identity,
    ) -> Result<Helper, super::StepError> {
        use super::io_err;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(io_err("listening for the step's PMI connections"))?;
        let addr = listener
            .local_addr()
            .map_err(io_err("listening for the step's PMI connections"))?;
        let secret = crate::runner::random_hex().map_err(super::StepError::Launch)?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(io_err("creating the PMI helper's socket"))?;
        let counts = [launch.tasks.len() as u32];
        let kvsname = format!("kvs_{}_{}", launch.job_id, launch.step_id);
        // SAFETY: this process is single-threaded: the child may run anything.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(ours);
            let served = super::become_user(id, "the PMI helper").and_then(|()| {
                helper(listener, theirs, &counts, kvsname, secret.clone())
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = served {
                berth_core::say!("berth step: {e}");
            }
            // SAFETY: the child ends here without running the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            return Err(io_err("forking the PMI helper")(
                std::io::Error::last_os_error(),
            ));
        }
        ours.set_nonblocking(true)
            .map_err(io_err("creating the PMI helper's socket"))?;
        Ok(Helper {
            pid,
            link: ours,
            coordinator: Coordinator { addr, secret },
        })
    }

    /// Where the helper says a task aborted the step: readable then.
    pub fn aborts(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.link)
    }

    /// The exit code a task aborted the step with, once [`Helper::aborts`] is readable.
    pub fn aborted(&self) -> Option<i32> {
        let mut code = [0u8; 4];
        std::io::Read::read_exact(&mut &self.link, &mut code).ok()?;
        Some(i32::from_le_bytes(code))
    }
}

impl Drop for Helper {
    /// The tasks have ended: the helper has nothing left to do or to leave tidy, and the
    /// step process, which ends next, need not wait for it (init reaps it).
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child, not reaped yet.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }
}

/// The helper's server on `listener` until `link` ends, each abort written to it.
fn helper(
    listener: std::net::TcpListener,
    link: std::os::unix::net::UnixStream,
    counts: &[u32],
    kvsname: String,
    secret: String,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    link.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let mut server = Server::serve(TcpListener::from_std(listener)?, counts, kvsname, secret)?;
        let mut link = tokio::net::UnixStream::from_std(link)?;
        let mut byte = [0u8; 1];
        loop {
            tokio::select! {
                Some(code) = server.aborts.recv() => link.write_all(&code.to_le_bytes()).await?,
                _ = link.read(&mut byte) => return Ok(()),
            }
        }
    })
}

/// What every connection of a step shares.
struct Step {
    /// What a connection must begin with (`cmd=berth_secret secret=S`).
    secret: Arc<str>,
    /// Tasks per node, ranks numbered node by node.
    counts: Arc<[u32]>,
    size: u32,
    kvsname: String,
    state: Arc<Mutex<State>>,
    abort: mpsc::UnboundedSender<i32>,
}

impl Step {
    /// The index of the node of rank `rank`.
    fn node_of(&self, rank: u32) -> usize {
        node_of(self.counts.iter().copied(), rank)
    }

    /// Adds a task to the current barrier with its `answer`; once all are in, answers them.
    fn arrive(&self, tx: &mpsc::UnboundedSender<Vec<u8>>, answer: Vec<u8>) {
        let mut s = self.state.lock().expect("not poisoned");
        s.barrier.push((tx.clone(), answer));
        if s.barrier.len() as u32 >= self.size {
            for (waiting, answer) in s.barrier.drain(..) {
                let _ = waiting.send(answer);
            }
        }
    }

    /// Adds a part's `data` to the allgather `key` of `parts` parts; once all are in, sends
    /// each of them everybody's data (in the order they came).
    fn gather(
        &self,
        tx: &mpsc::UnboundedSender<Vec<u8>>,
        key: String,
        parts: usize,
        data: Vec<u8>,
    ) {
        let mut s = self.state.lock().expect("not poisoned");
        let arrived = s.gathers.entry(key.clone()).or_default();
        arrived.push((tx.clone(), data));
        if arrived.len() >= parts {
            let arrived = s.gathers.remove(&key).unwrap_or_default();
            let size: usize = arrived.iter().map(|(_, d)| d.len()).sum();
            let mut answer = format!("cmd=allgather_out size={size}\n").into_bytes();
            for (_, data) in &arrived {
                answer.extend_from_slice(data);
            }
            for (waiting, _) in arrived {
                let _ = waiting.send(answer.clone());
            }
        }
    }
}

/// A message as it came: a PMI-1 line (without its newline), a PMI-2 message's fields, or
/// a PMIx server's line with the bytes its `size=` announced.
enum Message {
    V1(String),
    V2(String),
    Data(String, Vec<u8>),
}

/// The first whole message at the start of `buf`, taken out of it; `None` until one is
/// there. A PMI-1 line begins with `cmd=` (or `mcmd=`), a PMI-2 message with its length.
fn take_message(buf: &mut Vec<u8>) -> std::io::Result<Option<Message>> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0].is_ascii_alphabetic() {
        let Some(end) = buf.iter().position(|&b| b == b'\n') else {
            return match buf.len() > LINE_LIMIT {
                true => Err(bad("a PMI line too long")),
                false => Ok(None),
            };
        };
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        if text.starts_with("cmd=allgather ") || text.starts_with("cmd=dmodex_out ") {
            let size: usize = fields(&text)
                .get("size")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad("PMIx data without its size"))?;
            if size > GATHER_LIMIT {
                return Err(bad("PMIx data too large"));
            }
            if buf.len() < end + 1 + size {
                return Ok(None);
            }
            buf.drain(..=end);
            let data = buf.drain(..size).collect();
            return Ok(Some(Message::Data(text, data)));
        }
        buf.drain(..=end);
        return Ok(Some(Message::V1(text.trim_end_matches('\r').to_string())));
    }
    if buf.len() < 6 {
        return Ok(None);
    }
    let len: usize = std::str::from_utf8(&buf[..6])
        .ok()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| bad("a PMI-2 message without its length"))?;
    if len > LINE_LIMIT {
        return Err(bad("a PMI-2 message too long"));
    }
    if buf.len() < 6 + len {
        return Ok(None);
    }
    let message: Vec<u8> = buf.drain(..6 + len).collect();
    Ok(Some(Message::V2(
        String::from_utf8_lossy(&message[6..]).into_owned(),
    )))
}

/// A PMI-2 message's fields, in order (`cmd` among them).
fn fields_v2(text: &str) -> Vec<(&str, &str)> {
    text.split(';')
        .filter(|f| !f.is_empty())
        .map(|f| f.split_once('=').unwrap_or((f, "")))
        .collect()
}

/// A PMI-2 answer: `cmd` and `fields`, `thrid` echoed if the request had one, framed with
/// its length.
fn answer_v2(cmd: &str, fields: &[(&str, &str)], thrid: Option<&str>) -> Vec<u8> {
    let mut text = format!("cmd={cmd};");
    for (k, v) in fields.iter().copied().chain(thrid.map(|t| ("thrid", t))) {
        text.push_str(&format!("{k}={v};"));
    }
    let mut framed = format!("{:6}", text.len()).into_bytes();
    framed.extend_from_slice(text.as_bytes());
    framed
}

/// One task's connection, until it finalizes or goes.
async fn serve(stream: TcpStream, step: &Step) -> std::io::Result<()> {
    let (mut read, mut write) = stream.into_split();
    // Answers come from this task's own requests and from others' (a barrier's last
    // arrival, a node attribute put).
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    // What was read and is not a whole message yet.
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    // The task's rank, once it said it (PMI-2's fullinit).
    let mut rank = None;
    let mut trusted = false;
    loop {
        let message = match take_message(&mut pending)? {
            // The first line is the step's secret, or the connection ends.
            Some(Message::V1(line)) if !trusted => match secret_matches(&line, &step.secret) {
                true => {
                    trusted = true;
                    continue;
                }
                false => return Ok(()),
            },
            Some(_) if !trusted => return Ok(()),
            Some(m) => m,
            None => {
                tokio::select! {
                    n = read.read(&mut chunk) => match n? {
                        0 => return Ok(()),
                        n => pending.extend_from_slice(&chunk[..n]),
                    },
                    Some(answer) = rx.recv() => write.write_all(&answer).await?,
                }
                continue;
            }
        };
        let answer = match message {
            Message::V1(line) => serve_v1(&line, step, &tx),
            Message::V2(text) => serve_v2(&text, step, &tx, &mut rank),
            Message::Data(line, data) => serve_pmix(&line, data, step, &tx),
        };
        match answer {
            Reply::Now(bytes) => write.write_all(&bytes).await?,
            Reply::Later => {}
            Reply::End(bytes) => {
                write.write_all(&bytes).await?;
                return Ok(());
            }
        }
    }
}

/// Whether `line` is `cmd=berth_secret secret=S` with the step's secret (compared in
/// constant time).
fn secret_matches(line: &str, secret: &str) -> bool {
    let f = fields(line);
    let given = match (f.get("cmd").copied(), f.get("secret")) {
        (Some("berth_secret"), Some(given)) => given.as_bytes(),
        _ => return false,
    };
    given.len() == secret.len()
        && given
            .iter()
            .zip(secret.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What a request gets: an answer now, one later (through the connection's channel), or
/// an answer and the connection's end.
enum Reply {
    Now(Vec<u8>),
    Later,
    End(Vec<u8>),
}

/// A PMIx server's message with data: its part of an allgather, or its answer to a direct
/// modex request, passed on to the server that asked.
fn serve_pmix(
    line: &str,
    data: Vec<u8>,
    step: &Step,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
) -> Reply {
    let f = fields(line);
    let number = |name: &str| f.get(name).and_then(|v| v.parse::<u64>().ok());
    match f.get("cmd").copied() {
        Some("allgather") => {
            let key = f.get("key").copied().unwrap_or_default().to_string();
            let parts = number("parts").unwrap_or(1) as usize;
            step.gather(tx, key, parts, data);
        }
        _ => {
            let asked = number("id").and_then(|id| {
                let mut s = step.state.lock().expect("not poisoned");
                s.dmodex.remove(&id)
            });
            if let Some((asker, their_id)) = asked {
                let status = f.get("status").copied().unwrap_or("-1");
                let mut answer = format!(
                    "cmd=dmodex_out id={their_id} status={status} size={}\n",
                    data.len()
                )
                .into_bytes();
                answer.extend_from_slice(&data);
                let _ = asker.send(answer);
            }
        }
    }
    Reply::Later
}

/// A PMIx server's lines without data: the node it serves, and its requests for another
/// node's rank's data (sent on to that node's server, or kept until it is there).
fn serve_pmix_line(
    f: &HashMap<&str, &str>,
    step: &Step,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
) -> Reply {
    let number = |name: &str| f.get(name).and_then(|v| v.parse::<u64>().ok());
    let mut s = step.state.lock().expect("not poisoned");
    match (f.get("cmd").copied(), number("node")) {
        (Some("pmix_node"), Some(node)) => {
            let node = node as usize;
            for request in s.pmix_queued.remove(&node).unwrap_or_default() {
                let _ = tx.send(request);
            }
            s.pmix_nodes.insert(node, tx.clone());
        }
        (Some("dmodex_req"), Some(node)) => {
            let (Some(id), Some(rank)) = (number("id"), number("rank")) else {
                return Reply::Later;
            };
            let ours = s.next_dmodex;
            s.next_dmodex += 1;
            s.dmodex.insert(ours, (tx.clone(), id));
            let request = format!("cmd=dmodex id={ours} rank={rank}\n").into_bytes();
            match s.pmix_nodes.get(&(node as usize)) {
                Some(to) => {
                    let _ = to.send(request);
                }
                None => s
                    .pmix_queued
                    .entry(node as usize)
                    .or_default()
                    .push(request),
            }
        }
        _ => {}
    }
    Reply::Later
}

fn serve_v1(request: &str, step: &Step, tx: &mpsc::UnboundedSender<Vec<u8>>) -> Reply {
    let (size, kvsname) = (step.size, step.kvsname.as_str());
    let f = fields(request);
    let now = |text: String| Reply::Now(text.into_bytes());
    match f.get("cmd").copied().unwrap_or("") {
        "initack" => {
            let rank: u32 = f.get("pmiid").and_then(|r| r.parse().ok()).unwrap_or(0);
            now(format!(
                "cmd=initack\ncmd=set size={size}\ncmd=set rank={rank}\ncmd=set debug=0\n"
            ))
        }
        // The version the client asked for (PMI-2's clients say 2, then speak it).
        "init" => {
            let version = f.get("pmi_version").copied().unwrap_or("1");
            let sub = f.get("pmi_subversion").copied().unwrap_or("1");
            now(format!(
                "cmd=response_to_init pmi_version={version} pmi_subversion={sub} rc=0\n"
            ))
        }
        "get_maxes" => now("cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024\n".into()),
        "get_appnum" => now("cmd=appnum appnum=0\n".into()),
        "get_my_kvsname" => now(format!("cmd=my_kvsname kvsname={kvsname}\n")),
        "get_universe_size" => now(format!("cmd=universe_size size={size}\n")),
        "put" => match (f.get("key").copied(), f.get("value").copied()) {
            (Some(k), Some(v)) => {
                let mut s = step.state.lock().expect("not poisoned");
                s.kvs.insert(k.to_string(), v.to_string());
                now("cmd=put_result rc=0 msg=success\n".into())
            }
            _ => now("cmd=put_result rc=-1 msg=key_or_value_missing\n".into()),
        },
        "get" => {
            let key = f.get("key").copied().unwrap_or("");
            let s = step.state.lock().expect("not poisoned");
            match s.kvs.get(key) {
                Some(v) => now(format!("cmd=get_result rc=0 msg=success value={v}\n")),
                None => now(format!("cmd=get_result rc=-1 msg=key_{key}_not_found\n")),
            }
        }
        "barrier_in" => {
            step.arrive(tx, b"cmd=barrier_out\n".to_vec());
            Reply::Later
        }
        "pmix_node" | "dmodex_req" => serve_pmix_line(&f, step, tx),
        "finalize" => Reply::End(b"cmd=finalize_ack\n".to_vec()),
        "abort" => {
            let code = f.get("exitcode").and_then(|c| c.parse().ok()).unwrap_or(1);
            let _ = step.abort.send(code);
            Reply::End(Vec::new())
        }
        other => now(format!(
            "cmd={other}_result rc=-1 msg=unsupported_by_berth\n"
        )),
    }
}

fn serve_v2(
    text: &str,
    step: &Step,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
    rank: &mut Option<u32>,
) -> Reply {
    let f = fields_v2(text);
    let get = |key: &str| f.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let thrid = get("thrid");
    let ok = |cmd: &str, fields: &[(&str, &str)]| {
        let mut all = vec![("rc", "0")];
        all.extend_from_slice(fields);
        Reply::Now(answer_v2(cmd, &all, thrid))
    };
    let failed =
        |cmd: &str, why: &str| Reply::Now(answer_v2(cmd, &[("rc", "-1"), ("errmsg", why)], thrid));
    let found = |cmd: &str, value: Option<&str>| match value {
        Some(v) => ok(cmd, &[("found", "TRUE"), ("value", v)]),
        None => ok(cmd, &[("found", "FALSE")]),
    };
    match get("cmd").unwrap_or("") {
        "fullinit" => {
            // The rank as the client knows it: MPICH's says pmirank, Slurm's libpmi2 srcid
            // (from PMI_ID) or pmirank (from PMI_RANK).
            let r: u32 = ["pmirank", "srcid", "pmiid"]
                .iter()
                .find_map(|k| get(k)?.parse().ok())
                .unwrap_or(0);
            *rank = Some(r);
            let (r, size) = (r.to_string(), step.size.to_string());
            ok(
                "fullinit-response",
                &[
                    ("pmi-version", "2"),
                    ("pmi-subversion", "0"),
                    ("rank", &r),
                    ("size", &size),
                    ("appnum", "0"),
                    ("debugged", "FALSE"),
                    ("pmiverbose", "FALSE"),
                ],
            )
        }
        "job-getid" => ok("job-getid-response", &[("jobid", &step.kvsname)]),
        "info-getjobattr" => {
            let key = get("key").unwrap_or("");
            let size = step.size.to_string();
            let s = step.state.lock().expect("not poisoned");
            let value = match key {
                "universeSize" => Some(size.as_str()),
                _ => s.kvs.get(key).map(String::as_str),
            };
            found("info-getjobattr-response", value)
        }
        "kvs-put" => match (get("key"), get("value")) {
            (Some(k), Some(v)) => {
                let mut s = step.state.lock().expect("not poisoned");
                s.kvs.insert(k.to_string(), v.to_string());
                ok("kvs-put-response", &[])
            }
            _ => failed("kvs-put-response", "key_or_value_missing"),
        },
        "kvs-get" => {
            let s = step.state.lock().expect("not poisoned");
            found(
                "kvs-get-response",
                s.kvs.get(get("key").unwrap_or("")).map(String::as_str),
            )
        }
        "kvs-fence" => {
            step.arrive(tx, answer_v2("kvs-fence-response", &[("rc", "0")], thrid));
            Reply::Later
        }
        "info-putnodeattr" => {
            let (Some(key), Some(value)) = (get("key"), get("value")) else {
                return failed("info-putnodeattr-response", "key_or_value_missing");
            };
            let node = step.node_of(rank.unwrap_or(0));
            let mut s = step.state.lock().expect("not poisoned");
            s.node_attrs
                .insert((node, key.to_string()), value.to_string());
            // Those waiting for it on this node have it now.
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut s.attr_waiters)
                .into_iter()
                .partition(|(n, k, _, _)| *n == node && k == key);
            s.attr_waiters = waiting;
            for (_, _, waiter, their_thrid) in ready {
                let fields = [("rc", "0"), ("found", "TRUE"), ("value", value)];
                let _ = waiter.send(answer_v2(
                    "info-getnodeattr-response",
                    &fields,
                    their_thrid.as_deref(),
                ));
            }
            ok("info-putnodeattr-response", &[])
        }
        "info-getnodeattr" => {
            let key = get("key").unwrap_or("");
            let node = step.node_of(rank.unwrap_or(0));
            let mut s = step.state.lock().expect("not poisoned");
            match s.node_attrs.get(&(node, key.to_string())) {
                Some(v) => found("info-getnodeattr-response", Some(v)),
                None if get("wait") == Some("TRUE") => {
                    s.attr_waiters.push((
                        node,
                        key.to_string(),
                        tx.clone(),
                        thrid.map(str::to_string),
                    ));
                    Reply::Later
                }
                None => found("info-getnodeattr-response", None),
            }
        }
        "finalize" => Reply::End(answer_v2("finalize-response", &[("rc", "0")], thrid)),
        "abort" => {
            let code = get("exitcode").and_then(|c| c.parse().ok()).unwrap_or(1);
            let _ = step.abort.send(code);
            Reply::End(Vec::new())
        }
        other => failed(&format!("{other}-response"), "unsupported_by_berth"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    #[test]
    fn the_mapping_groups_nodes_with_as_many_ranks() {
        assert_eq!(process_mapping(&[2]), "(vector,(0,1,2))");
        assert_eq!(process_mapping(&[1, 1]), "(vector,(0,2,1))");
        assert_eq!(process_mapping(&[3, 1]), "(vector,(0,1,3),(1,1,1))");
        assert_eq!(process_mapping(&[2, 2, 1]), "(vector,(0,2,2),(2,1,1))");
    }

    #[test]
    fn values_run_to_the_end_of_the_line() {
        let f = fields("cmd=put kvsname=kvs_1 key=42-0-key0 value=abc d==  -");
        assert_eq!(f["cmd"], "put");
        assert_eq!(f["key"], "42-0-key0");
        assert_eq!(f["value"], "abc d==  -");
    }

    struct Task {
        read: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
        write: tokio::net::tcp::OwnedWriteHalf,
    }

    /// A connection to `server`, its secret sent (as the step's processes open them).
    async fn open(server: &Server) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let hello = format!("cmd=berth_secret secret={}\n", server.secret);
        stream.write_all(hello.as_bytes()).await.unwrap();
        stream
    }

    impl Task {
        async fn connect(server: &Server) -> Task {
            let (r, w) = open(server).await.into_split();
            Task {
                read: BufReader::new(r).lines(),
                write: w,
            }
        }

        async fn send(&mut self, line: &str) {
            self.write
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
        }

        async fn answer(&mut self) -> String {
            self.read.next_line().await.unwrap().unwrap()
        }
    }

    /// A PMIx server's connection: its reading end, buffered, and its writing end.
    async fn pmix_node(
        server: &Server,
    ) -> (
        BufReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
        let (r, w) = open(server).await.into_split();
        (BufReader::new(r), w)
    }

    #[tokio::test]
    async fn parts_gather_their_data_under_each_key() {
        let server = Server::start(&[2, 1], "kvs_7_0".into()).await.unwrap();
        let connect = || pmix_node(&server);
        async fn answer(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Vec<u8> {
            let mut line = String::new();
            read.read_line(&mut line).await.unwrap();
            let size: usize = line
                .trim_end()
                .strip_prefix("cmd=allgather_out size=")
                .unwrap()
                .parse()
                .unwrap();
            let mut data = vec![0; size];
            read.read_exact(&mut data).await.unwrap();
            data
        }
        let (mut ra, mut a) = connect().await;
        let (mut rb, mut b) = connect().await;
        // Data with newlines in it, the header and data in pieces; a second key (fences
        // over other parts) meanwhile.
        a.write_all(b"cmd=allgather key=0,1#1 parts=2 size=5\nA\n")
            .await
            .unwrap();
        b.write_all(b"cmd=allgather key=0,1#1 parts=2 si")
            .await
            .unwrap();
        a.write_all(b"a\na").await.unwrap();
        a.write_all(b"cmd=allgather key=0#1 parts=1 size=1\nx")
            .await
            .unwrap();
        assert_eq!(answer(&mut ra).await, b"x");
        b.write_all(b"ze=2\nB\n").await.unwrap();
        let all = answer(&mut ra).await;
        assert_eq!(all, answer(&mut rb).await);
        assert!(all == b"A\na\naB\n" || all == b"B\nA\na\na", "{all:?}");
        // A size over the limit ends the connection.
        a.write_all(format!("cmd=allgather key=k parts=2 size={}\n", GATHER_LIMIT + 1).as_bytes())
            .await
            .unwrap();
        let mut rest = Vec::new();
        assert_eq!(ra.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_nodes_request_for_a_ranks_data_goes_to_its_nodes_server_and_back() {
        let server = Server::start(&[2, 2], "kvs_7_0".into()).await.unwrap();
        let connect = || pmix_node(&server);
        let (mut ra, mut a) = connect().await;
        let (mut rb, mut b) = connect().await;
        a.write_all(b"cmd=pmix_node node=0\n").await.unwrap();
        // Asked before node 1's server is there: it gets the request once it is.
        a.write_all(b"cmd=dmodex_req id=5 node=1 rank=3\n")
            .await
            .unwrap();
        b.write_all(b"cmd=pmix_node node=1\n").await.unwrap();
        let mut line = String::new();
        rb.read_line(&mut line).await.unwrap();
        let id = line
            .trim_end()
            .strip_prefix("cmd=dmodex id=")
            .and_then(|rest| rest.strip_suffix(" rank=3"))
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        b.write_all(format!("cmd=dmodex_out id={id} status=0 size=4\nab\nc").as_bytes())
            .await
            .unwrap();
        line.clear();
        ra.read_line(&mut line).await.unwrap();
        assert_eq!(line, "cmd=dmodex_out id=5 status=0 size=4\n");
        let mut data = [0u8; 4];
        ra.read_exact(&mut data).await.unwrap();
        assert_eq!(&data, b"ab\nc");
    }

    #[tokio::test]
    async fn two_tasks_talk_as_mpich_does() {
        let mut server = Server::start(&[1, 1], "kvs_7_0".into()).await.unwrap();
        let mut a = Task::connect(&server).await;
        let mut b = Task::connect(&server).await;
        for (t, rank) in [(&mut a, 0), (&mut b, 1)] {
            t.send(&format!("cmd=initack pmiid={rank}")).await;
            assert_eq!(t.answer().await, "cmd=initack");
            assert_eq!(t.answer().await, "cmd=set size=2");
            assert_eq!(t.answer().await, format!("cmd=set rank={rank}"));
            assert_eq!(t.answer().await, "cmd=set debug=0");
            t.send("cmd=init pmi_version=1 pmi_subversion=1").await;
            assert_eq!(
                t.answer().await,
                "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0"
            );
            t.send("cmd=get_my_kvsname").await;
            assert_eq!(t.answer().await, "cmd=my_kvsname kvsname=kvs_7_0");
            t.send("cmd=get kvsname=kvs_7_0 key=PMI_process_mapping")
                .await;
            assert_eq!(
                t.answer().await,
                "cmd=get_result rc=0 msg=success value=(vector,(0,2,1))"
            );
        }
        // A key nobody put yet: not found at once, never a wait.
        a.send("cmd=get kvsname=kvs_7_0 key=addr-1").await;
        assert_eq!(
            a.answer().await,
            "cmd=get_result rc=-1 msg=key_addr-1_not_found"
        );
        a.send("cmd=put kvsname=kvs_7_0 key=addr-0 value=tcp 10.0.0.1  -")
            .await;
        assert_eq!(a.answer().await, "cmd=put_result rc=0 msg=success");
        b.send("cmd=put kvsname=kvs_7_0 key=addr-1 value=x").await;
        assert_eq!(b.answer().await, "cmd=put_result rc=0 msg=success");
        // The barrier answers nobody until everybody is in.
        a.send("cmd=barrier_in").await;
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), a.answer()).await;
        assert!(early.is_err(), "released before the second task arrived");
        b.send("cmd=barrier_in").await;
        assert_eq!(a.answer().await, "cmd=barrier_out");
        assert_eq!(b.answer().await, "cmd=barrier_out");
        b.send("cmd=get kvsname=kvs_7_0 key=addr-0").await;
        assert_eq!(
            b.answer().await,
            "cmd=get_result rc=0 msg=success value=tcp 10.0.0.1  -"
        );
        a.send("cmd=finalize").await;
        assert_eq!(a.answer().await, "cmd=finalize_ack");
        // An abort ends the step with its code.
        b.send("cmd=abort exitcode=9").await;
        assert_eq!(server.aborts.recv().await, Some(9));
    }

    #[tokio::test]
    async fn a_connection_without_the_steps_secret_is_closed_unheard() {
        let mut server = Server::start(&[1], "kvs_8_0".into()).await.unwrap();
        let wrong = "0".repeat(server.secret.len());
        for first in [
            String::new(),
            format!("cmd=berth_secret secret={wrong}\n"),
            format!("cmd=berth_secret secret={}x\n", server.secret),
        ] {
            let mut stranger = TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap();
            let hello = format!("{first}cmd=abort exitcode=9\n");
            stranger.write_all(hello.as_bytes()).await.unwrap();
            let mut rest = Vec::new();
            let _ = stranger.read_to_end(&mut rest).await;
            assert!(rest.is_empty(), "{first:?}: {rest:?}");
        }
        // No abort came through; a task of the step is heard.
        assert!(server.aborts.try_recv().is_err());
        let mut task = Task::connect(&server).await;
        task.send("cmd=abort exitcode=7").await;
        assert_eq!(server.aborts.recv().await, Some(7));
    }

    /// A PMI-2 message as MPICH frames one.
    fn framed(text: &str) -> Vec<u8> {
        let mut m = format!("{:6}", text.len()).into_bytes();
        m.extend_from_slice(text.as_bytes());
        m
    }

    /// The next PMI-2 answer on `read`.
    async fn answer_v2(read: &mut tokio::net::tcp::OwnedReadHalf) -> String {
        let mut len = [0u8; 6];
        read.read_exact(&mut len).await.unwrap();
        let len: usize = std::str::from_utf8(&len).unwrap().trim().parse().unwrap();
        let mut text = vec![0u8; len];
        read.read_exact(&mut text).await.unwrap();
        String::from_utf8(text).unwrap()
    }

    #[tokio::test]
    async fn two_tasks_on_one_node_talk_pmi_2_as_mpich_does() {
        let server = Server::start(&[2], "kvs_9_0".into()).await.unwrap();
        let mut tasks = Vec::new();
        for rank in 0..2 {
            let (mut r, mut w) = open(&server).await.into_split();
            // The PMI-1 line first, asking for version 2; then PMI-2's messages.
            w.write_all(b"cmd=init pmi_version=2 pmi_subversion=0\n")
                .await
                .unwrap();
            let mut line = String::new();
            let mut reader = BufReader::new(&mut r);
            reader.read_line(&mut line).await.unwrap();
            assert_eq!(
                line,
                "cmd=response_to_init pmi_version=2 pmi_subversion=0 rc=0\n"
            );
            w.write_all(&framed(&format!(
                "cmd=fullinit;pmirank={rank};threaded=FALSE;"
            )))
            .await
            .unwrap();
            assert_eq!(
                answer_v2(&mut r).await,
                format!("cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank={rank};size=2;appnum=0;debugged=FALSE;pmiverbose=FALSE;")
            );
            tasks.push((r, w));
        }
        let [(r0, w0), (r1, w1)] = &mut tasks[..] else {
            unreachable!()
        };
        w0.write_all(&framed("cmd=job-getid;thrid=0x1;"))
            .await
            .unwrap();
        assert_eq!(
            answer_v2(r0).await,
            "cmd=job-getid-response;rc=0;jobid=kvs_9_0;thrid=0x1;"
        );
        w0.write_all(&framed("cmd=info-getjobattr;key=PMI_process_mapping;"))
            .await
            .unwrap();
        assert_eq!(
            answer_v2(r0).await,
            "cmd=info-getjobattr-response;rc=0;found=TRUE;value=(vector,(0,1,2));"
        );
        // A node attribute: rank 1 waits for it until rank 0, on its node, puts it.
        w1.write_all(&framed("cmd=info-getnodeattr;key=shm;wait=TRUE;"))
            .await
            .unwrap();
        w0.write_all(&framed("cmd=info-getnodeattr;key=shm;wait=FALSE;"))
            .await
            .unwrap();
        assert_eq!(
            answer_v2(r0).await,
            "cmd=info-getnodeattr-response;rc=0;found=FALSE;"
        );
        w0.write_all(&framed("cmd=info-putnodeattr;key=shm;value=seg0;"))
            .await
            .unwrap();
        assert_eq!(answer_v2(r0).await, "cmd=info-putnodeattr-response;rc=0;");
        assert_eq!(
            answer_v2(r1).await,
            "cmd=info-getnodeattr-response;rc=0;found=TRUE;value=seg0;"
        );
        // Put, fence (nobody leaves until both are in), get.
        w0.write_all(&framed("cmd=kvs-put;key=addr-0;value=tcp://a b;"))
            .await
            .unwrap();
        assert_eq!(answer_v2(r0).await, "cmd=kvs-put-response;rc=0;");
        w0.write_all(&framed("cmd=kvs-fence;")).await.unwrap();
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(100), answer_v2(r0)).await;
        assert!(early.is_err(), "the fence let rank 0 out alone");
        w1.write_all(&framed("cmd=kvs-fence;")).await.unwrap();
        assert_eq!(answer_v2(r1).await, "cmd=kvs-fence-response;rc=0;");
        w1.write_all(&framed("cmd=kvs-get;jobid=kvs_9_0;srcid=0;key=addr-0;"))
            .await
            .unwrap();
        assert_eq!(
            answer_v2(r1).await,
            "cmd=kvs-get-response;rc=0;found=TRUE;value=tcp://a b;"
        );
        w1.write_all(&framed("cmd=kvs-get;jobid=kvs_9_0;srcid=0;key=nothing;"))
            .await
            .unwrap();
        assert_eq!(
            answer_v2(r1).await,
            "cmd=kvs-get-response;rc=0;found=FALSE;"
        );
        w1.write_all(&framed("cmd=finalize;")).await.unwrap();
        assert_eq!(answer_v2(r1).await, "cmd=finalize-response;rc=0;");
    }

    #[test]
    fn ranks_are_on_the_nodes_the_counts_say() {
        let (abort, _) = mpsc::unbounded_channel();
        let step = Step {
            secret: "s".into(),
            counts: [2, 1, 3].into(),
            size: 6,
            kvsname: "k".into(),
            state: Arc::new(Mutex::new(State::new(HashMap::new()))),
            abort,
        };
        let nodes: Vec<usize> = (0..6).map(|r| step.node_of(r)).collect();
        assert_eq!(nodes, [0, 0, 1, 2, 2, 2]);
    }

    #[test]
    fn messages_are_taken_whole_in_either_protocol() {
        let mut buf = b"cmd=get_maxes\n    14cmd=kvs-fence;    5".to_vec();
        assert!(
            matches!(take_message(&mut buf).unwrap(), Some(Message::V1(l)) if l == "cmd=get_maxes")
        );
        assert!(
            matches!(take_message(&mut buf).unwrap(), Some(Message::V2(m)) if m == "cmd=kvs-fence;")
        );
        assert!(
            take_message(&mut buf).unwrap().is_none(),
            "a message still coming"
        );
        assert!(take_message(&mut b"  x   cmd=".to_vec()).is_err());
    }
}
