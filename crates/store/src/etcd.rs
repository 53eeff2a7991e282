//! The cluster store: etcd (v3 API), spoken through etcd's JSON gateway (`POST /v3/kv/range`,
//! `/v3/kv/txn`, `/v3/lease/...`: the same API as its gRPC one, with base64 keys and values)
//! over HTTP/1.1, plain (`etcd://`) or in TLS (`etcds://`, with the client configuration the
//! caller makes: CAs, a client certificate for etcd's `--client-cert-auth`), with a small
//! blocking client of our own. No gRPC stack, no protoc: on two cores tonic and prost would
//! cost more build time than all of this.
//!
//! Layout, under one prefix (`/berth/`):
//!
//! ```text
//! /berth/counters/job_id    the next job id, 20 digits (so that etcd can compare it as bytes)
//! /berth/jobs/<id, 20 digits>  one job: its index fields and its document (JSON)
//! /berth/kv/<key>           the named values (`nodes/<name>`, ...)
//! /berth/leader             the controller that leads, under its lease (see `campaign`)
//! ```
//!
//! Leadership: controllers campaign for `/berth/leader` with a transaction that creates it
//! only if it does not exist, under a lease the leader keeps alive. Every write of a leader's
//! store is a transaction that also compares `/berth/leader` with its own value: a controller
//! that lost its lease (partitioned, paused) can no longer change anything.

use crate::{JobFilter, JobRow, Store, StoreError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const COUNTER: &str = "/berth/counters/job_id";
const JOBS: &str = "/berth/jobs/";
const KV: &str = "/berth/kv/";
const LEADER: &str = "/berth/leader";
/// etcd's default limit on the operations of one transaction (`--max-txn-ops`).
const TXN_OPS: usize = 128;
/// How long a call keeps trying the endpoints (an election among etcd's members takes a
/// few seconds).
const PATIENCE: Duration = Duration::from_secs(15);
/// How long a member may take to answer a call (a transaction of a big array's jobs included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a member may take to renew a lease: a leader's lease (5 s) must be renewed
/// through another member in time where one does not answer (cut off: no reset comes).
const RENEW_TIMEOUT: Duration = Duration::from_secs(1);

/// An etcd cluster as berth's store.
pub struct EtcdStore {
    /// `HOST:PORT` of each member.
    endpoints: Vec<String>,
    /// The member that answered last, tried first.
    preferred: Mutex<usize>,
    /// While this process leads: the value of `/berth/leader` its writes require.
    fence: Mutex<Option<Vec<u8>>>,
    /// The leases of the keys kept alive by [`Store::heartbeat`], with the values put.
    heartbeats: Mutex<std::collections::HashMap<String, (i64, Vec<u8>)>>,
    /// TLS to every member (`etcds://`): one configuration, whose session cache makes each
    /// call's handshake after the first a resumption.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// How long a call keeps trying: [`PATIENCE`] (shorter in tests of what fails).
    patience: Duration,
    /// Connections that carried a call and may carry another, with their member's index.
    idle: Mutex<Vec<(usize, Connection)>>,
    url: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("url", &self.url).finish()
    }
}

fn pad(id: u64) -> String {
    format!("{id:020}")
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

/// The key after every key that starts with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    let last = end.last_mut().expect("a non-empty prefix");
    *last += 1;
    String::from_utf8(end).expect("ASCII prefixes")
}

fn range(key: &str) -> Value {
    json!({"request_range": {"key": b64(key)}})
}

fn put(key: &str, value: impl AsRef<[u8]>) -> Value {
    json!({"request_put": {"key": b64(key), "value": b64(value)}})
}

fn delete(key: &str) -> Value {
    json!({"request_delete_range": {"key": b64(key)}})
}

/// The kvs of a range answer: (key, value, mod_revision).
fn kvs(answer: &Value) -> Vec<(String, Vec<u8>, i64)> {
    answer["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| {
                    let key = B64.decode(kv["key"].as_str()?).ok()?;
                    let value = kv["value"]
                        .as_str()
                        .map_or(Ok(Vec::new()), |v| B64.decode(v))
                        .ok()?;
                    let rev = kv["mod_revision"].as_str()?.parse().ok()?;
                    Some((String::from_utf8_lossy(&key).into_owned(), value, rev))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn row_doc(row: &JobRow) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "state": row.state,
        "user": row.user,
        "partition": row.partition,
        "submit_time": row.submit_time,
        "end_time": row.end_time,
        "doc": b64(&row.doc),
    }))
    .expect("rows serialise")
}

fn row_from(key: &str, bytes: &[u8]) -> Option<JobRow> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    Some(JobRow {
        id: key.strip_prefix(JOBS)?.parse().ok()?,
        state: v["state"].as_str()?.to_string(),
        user: v["user"].as_str()?.to_string(),
        partition: v["partition"].as_str()?.to_string(),
        submit_time: v["submit_time"].as_u64()?,
        end_time: v["end_time"].as_u64(),
        doc: B64.decode(v["doc"].as_str()?).ok()?,
    })
}

fn matches(row: &JobRow, f: &JobFilter) -> bool {
    let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
    any(&f.users, &row.user)
        && any(&f.states, &row.state)
        && any(&f.partitions, &row.partition)
        && (f.ids.is_empty() || f.ids.contains(&row.id))
        && f.after_id.is_none_or(|a| row.id > a)
        && f.active_after
            .is_none_or(|t| row.end_time.is_none_or(|e| e >= t))
        && f.ended_after
            .is_none_or(|t| row.end_time.is_some_and(|e| e >= t))
        && f.submitted_before.is_none_or(|t| row.submit_time < t)
}

impl EtcdStore {
    /// The etcd cluster at `url`: `etcd://HOST:PORT[,HOST:PORT...]` (plain HTTP to its
    /// client port) or `etcds://...` (TLS, configured by `tls`). Checks that a member
    /// answers.
    pub fn open(
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<EtcdStore, StoreError> {
        EtcdStore::open_with(url, tls, PATIENCE)
    }

    fn open_with(
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        patience: Duration,
    ) -> Result<EtcdStore, StoreError> {
        let (members, tls) = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
            (Some(members), _) => (members, None),
            (_, Some(members)) => (
                members,
                Some(tls.ok_or_else(|| {
                    StoreError::InvalidArgument(format!("{url}: etcds:// needs TLS settings"))
                })?),
            ),
            _ => {
                return Err(StoreError::InvalidArgument(format!(
                "{url}: an etcd store is named etcd://HOST:PORT[,HOST:PORT...], or etcds://... where etcd speaks TLS"
            )))
            }
        };
        let endpoints: Vec<String> = members
            .split(',')
            .map(|m| m.trim().trim_end_matches('/').to_string())
            .filter(|m| !m.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::InvalidArgument(format!(
                "{url}: name at least one etcd member, etcd://HOST:PORT"
            )));
        }
        let store = EtcdStore {
            endpoints,
            preferred: Mutex::new(0),
            fence: Mutex::new(None),
            heartbeats: Mutex::new(std::collections::HashMap::new()),
            tls,
            patience,
            idle: Mutex::new(Vec::new()),
            url: url.to_string(),
        };
        store.call("open", "/v3/kv/range", &json!({"key": b64(COUNTER)}))?;
        Ok(store)
    }

    fn error(&self, op: &'static str, message: String) -> StoreError {
        StoreError::Backend {
            op,
            path: self.url.clone().into(),
            source: message.into(),
        }
    }

    /// POSTs `body` to `path` on a member: the one that answered last, else the others in
    /// turn, for up to its patience (members down, or no leader while etcd elects one).
    fn call(&self, op: &'static str, path: &str, body: &Value) -> Result<Value, StoreError> {
        self.call_within(op, path, body, ANSWER_TIMEOUT)
    }

    /// [`EtcdStore::call`] where a member must answer within `wait`.
    fn call_within(
        &self,
        op: &'static str,
        path: &str,
        body: &Value,
        wait: Duration,
    ) -> Result<Value, StoreError> {
        let body = serde_json::to_vec(body).expect("requests serialise");
        let deadline = Instant::now() + self.patience;
        let mut last = String::new();
        let first = *self.preferred.lock().expect("not poisoned");
        for attempt in 0.. {
            let i = (first + attempt) % self.endpoints.len();
            match self.post(i, path, &body, wait) {
                Ok((200, answer)) => {
                    *self.preferred.lock().expect("not poisoned") = i;
                    return serde_json::from_slice(&answer).map_err(|e| {
                        self.error(op, format!("{}: not etcd's answer: {e}", self.endpoints[i]))
                    });
                }
                Ok((status, answer)) => {
                    let message = serde_json::from_slice::<Value>(&answer)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_string))
                        .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
                    last = format!("{}: HTTP {status}: {message}", self.endpoints[i]);
                    // A request etcd refuses as such will not do better elsewhere.
                    if status == 400 {
                        break;
                    }
                }
                Err(e) => {
                    last = format!("{}: {e}", self.endpoints[i]);
                    // TLS set up wrong will not do better by trying again.
                    if let Some(hint) = tls_hint(&e) {
                        last.push_str(hint);
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                break;
            }
            if (attempt + 1) % self.endpoints.len() == 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Err(self.error(
            op,
            format!(
                "no etcd member answered ({last}); check that etcd runs at {}",
                self.url
            ),
        ))
    }

    /// POSTs `body` to `path` on member `i`, which must answer within `wait`: on a
    /// connection an earlier call left open, or a new one (also where the member closed the
    /// one it found while it was idle).
    fn post(
        &self,
        i: usize,
        path: &str,
        body: &[u8],
        wait: Duration,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let endpoint = &self.endpoints[i];
        let kept = {
            let mut idle = self.idle.lock().expect("not poisoned");
            let found = idle.iter().position(|(member, _)| *member == i);
            found.map(|at| idle.swap_remove(at).1)
        };
        let answer = match kept {
            Some(mut connection) => match exchange(&mut connection, endpoint, path, body, wait) {
                Ok(answer) => Ok((answer, connection)),
                // Closed while idle (before it read the request): once more on a new one.
                Err(e) if is_closed(&e) => self.post_anew(endpoint, path, body, wait),
                Err(e) => Err(e),
            },
            None => self.post_anew(endpoint, path, body, wait),
        };
        let ((status, payload, reusable), connection) = answer?;
        if reusable {
            let mut idle = self.idle.lock().expect("not poisoned");
            idle.push((i, connection));
        }
        Ok((status, payload))
    }

    /// [`EtcdStore::post`] on a new connection.
    #[allow(clippy::type_complexity)]
    fn post_anew(
        &self,
        endpoint: &str,
        path: &str,
        body: &[u8],
        wait: Duration,
    ) -> std::io::Result<((u16, Vec<u8>, bool), Connection)> {
        let mut connection = connect(endpoint, self.tls.as_ref())?;
        match exchange(&mut connection, endpoint, path, body, wait) {
            Ok(answer) => Ok((answer, connection)),
            // What etcd does with plain HTTP to its TLS port, and, in TLS 1.3 (where a
            // client's certificate is checked after its side of the handshake), with a
            // client certificate it refuses or none where it wants one.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {
                let hint = match self.tls {
                    None => "where etcd speaks TLS, name the store etcds://",
                    Some(_) => "etcd does so where it refuses this controller's client certificate, or wants one: set [etcd] cert and key",
                };
                Err(std::io::Error::new(e.kind(), format!("{e} ({hint})")))
            }
            Err(e) => Err(e),
        }
    }

    /// A transaction: `success` if every comparison holds (with this process's fence, if
    /// it leads), else `failure`. Returns whether it succeeded and the answer.
    fn txn(
        &self,
        op: &'static str,
        mut compare: Vec<Value>,
        success: Vec<Value>,
        failure: Vec<Value>,
    ) -> Result<(bool, Value), StoreError> {
        if let Some(value) = self.fence.lock().expect("not poisoned").as_ref() {
            compare.push(json!({
                "key": b64(LEADER), "target": "VALUE", "result": "EQUAL", "value": b64(value)
            }));
        }
        let answer = self.call(
            op,
            "/v3/kv/txn",
            &json!({"compare": compare, "success": success, "failure": failure}),
        )?;
        Ok((answer["succeeded"].as_bool().unwrap_or(false), answer))
    }

    /// A failed fenced write: this process no longer leads.
    fn deposed(&self, op: &'static str) -> StoreError {
        self.error(
            op,
            "this controller is no longer the leader (its lease on /berth/leader ended): it must not write".into(),
        )
    }

    fn get_raw(&self, op: &'static str, key: &str) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        let answer = self.call(op, "/v3/kv/range", &json!({"key": b64(key)}))?;
        Ok(kvs(&answer).into_iter().next().map(|(_, v, rev)| (v, rev)))
    }

    fn list_raw(
        &self,
        op: &'static str,
        from: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>, i64)>, StoreError> {
        let answer = self.call(
            op,
            "/v3/kv/range",
            &json!({"key": b64(from), "range_end": b64(prefix_end(prefix))}),
        )?;
        Ok(kvs(&answer))
    }

    /// The next id to allocate (1 for a new store).
    fn next_id(&self) -> Result<(u64, Option<i64>), StoreError> {
        Ok(match self.get_raw("allocate_ids", COUNTER)? {
            Some((v, rev)) => (String::from_utf8_lossy(&v).parse().unwrap_or(1), Some(rev)),
            None => (1, None),
        })
    }

    /// Waits until this process leads: creates `/berth/leader` (holding `who`) under a lease
    /// of `ttl` seconds, or waits while another controller holds it. From then on, this
    /// store's writes require that it still leads. Returns the lease, to keep alive with
    /// [`EtcdStore::renew`].
    pub fn campaign(&self, who: &str, ttl: u64) -> Result<i64, StoreError> {
        let mut announced = false;
        loop {
            let grant = self.call("campaign", "/v3/lease/grant", &json!({"TTL": ttl}))?;
            let lease: i64 = grant["ID"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| self.error("campaign", format!("no lease in {grant}")))?;
            let value = format!("{who} lease={lease}");
            let create = json!({"request_put": {"key": b64(LEADER), "value": b64(&value), "lease": lease.to_string()}});
            let compare = json!({"key": b64(LEADER), "target": "CREATE", "result": "EQUAL", "create_revision": "0"});
            let answer = self.call(
                "campaign",
                "/v3/kv/txn",
                &json!({"compare": [compare], "success": [create], "failure": [range(LEADER)]}),
            )?;
            if answer["succeeded"].as_bool().unwrap_or(false) {
                *self.fence.lock().expect("not poisoned") = Some(value.into_bytes());
                return Ok(lease);
            }
            let _ = self.call(
                "campaign",
                "/v3/lease/revoke",
                &json!({"ID": lease.to_string()}),
            );
            if !announced {
                let holder = self.leader()?.unwrap_or_default();
                berth_core::say!("berth: standing by: {holder} leads");
                announced = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Keeps the leader's lease alive; `false` once it has ended (this process no longer
    /// leads and must stop).
    pub fn renew(&self, lease: i64) -> Result<bool, StoreError> {
        let answer = self.call_within(
            "renew",
            "/v3/lease/keepalive",
            &json!({"ID": lease.to_string()}),
            RENEW_TIMEOUT,
        )?;
        let ttl: i64 = answer["result"]["TTL"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        Ok(ttl > 0)
    }

    /// Who leads now (the value of `/berth/leader`), if anybody.
    pub fn leader(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_raw("leader", LEADER)?
            .map(|(v, _)| String::from_utf8_lossy(&v).into_owned()))
    }
}

/// A connection to a member, kept open between calls (HTTP/1.1 keep-alive): a call then
/// costs no new TCP connection, nor, in TLS, a new handshake.
enum Connection {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Connection::Plain(s) => s.read(buf),
            // A close without TLS's close_notify ends the data as a plain close does: what
            // came is whole only where its length says so (see `read_answer`).
            Connection::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Connection {
    fn tcp(&self) -> &std::net::TcpStream {
        match self {
            Connection::Plain(s) => s,
            Connection::Tls(s) => s.get_ref(),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Connection::Plain(s) => s.write(buf),
            Connection::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Connection::Plain(s) => s.flush(),
            Connection::Tls(s) => s.flush(),
        }
    }
}

/// Connects to `endpoint` (`HOST:PORT`), in TLS if `tls` (the handshake made here, so that
/// its failures say what they mean).
fn connect(endpoint: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> std::io::Result<Connection> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(endpoint)?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{endpoint} has no address")))?;
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    let Some(config) = tls else {
        return Ok(Connection::Plain(tcp));
    };
    // The certificate must name the host as the store's URL does (a name or an address),
    // as etcdctl checks it.
    let host = endpoint
        .rsplit_once(':')
        .map_or(endpoint, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::other(format!("{host}: {e}")))?;
    let mut connection =
        rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    while connection.is_handshaking() {
        match connection.complete_io(&mut tcp) {
            // (Reset rather than closed where the server closes with the handshake's bytes
            // unread, as a busy machine's may.)
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Err(std::io::Error::other("the connection was closed in the TLS handshake (where etcd speaks plain HTTP, name the store etcd://)"));
            }
            other => other?,
        };
    }
    Ok(Connection::Tls(Box::new(rustls::StreamOwned::new(
        connection, tcp,
    ))))
}

/// One HTTP/1.1 POST with a JSON body on `connection`, answered within `wait`: the status
/// and body of the answer, and whether the connection may carry another request. An error
/// of kind `ConnectionAborted` is a connection closed before any of the answer came.
fn exchange(
    connection: &mut Connection,
    endpoint: &str,
    path: &str,
    body: &[u8],
    wait: Duration,
) -> std::io::Result<(u16, Vec<u8>, bool)> {
    connection.tcp().set_read_timeout(Some(wait))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    connection.write_all(&request)?;
    read_answer(connection)
}

/// An HTTP/1.1 answer, as long as its head says (Content-Length, chunks), or to the end of
/// the connection where it says neither: its status, its body, and whether the connection
/// may carry another request.
fn read_answer(from: &mut impl Read) -> std::io::Result<(u16, Vec<u8>, bool)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut more = |data: &mut Vec<u8>| -> std::io::Result<bool> {
        let n = from.read(&mut buf)?;
        data.extend_from_slice(&buf[..n]);
        Ok(n > 0)
    };
    let split = loop {
        if let Some(split) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break split;
        }
        if !more(&mut data)? {
            return Err(match data.is_empty() {
                true => std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the connection was closed without an answer",
                ),
                false => std::io::Error::other("a malformed HTTP answer"),
            });
        }
    };
    let head = String::from_utf8_lossy(&data[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let length = header("content-length:").and_then(|n| n.parse::<usize>().ok());
    let chunked = header("transfer-encoding:") == Some("chunked");
    let closes = header("connection:") == Some("close") || !head.starts_with("http/1.1");
    data.drain(..split + 4);
    let cut_short = || std::io::Error::other("an HTTP answer cut short");
    let body = if chunked {
        loop {
            if let Some(body) = berth_core::http::dechunk(&data) {
                break body;
            }
            if !more(&mut data)? {
                return Err(cut_short());
            }
        }
    } else if let Some(length) = length {
        while data.len() < length {
            if !more(&mut data)? {
                return Err(cut_short());
            }
        }
        data.truncate(length);
        data
    } else {
        while more(&mut data)? {}
        return Ok((status, data, false));
    };
    Ok((status, body, !closes))
}

/// Whether `e` is a connection closed (or reset) before any of the answer came.
fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(e.kind(), BrokenPipe | ConnectionAborted | ConnectionReset)
}

/// What to do about a call that failed for TLS's sake (set up wrong on one side).
fn tls_hint(e: &std::io::Error) -> Option<&'static str> {
    let hint = match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(_) => {
            ": etcd's certificate is not trusted (for its name): give its CA in [etcd] ca_certs"
        }
        rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA,
        ) => ": etcd refused this controller's client certificate, or wants one: set [etcd] cert and key",
        _ => return None,
    };
    Some(hint)
}

impl Store for EtcdStore {
    fn peek_id(&self) -> Result<u64, StoreError> {
        self.next_id().map(|(next, _)| next)
    }

    fn allocate_ids(&self, n: u64) -> Result<u64, StoreError> {
        if n == 0 {
            return Err(StoreError::InvalidArgument(
                "allocate_ids needs n of at least 1".into(),
            ));
        }
        // Compare-and-swap on the counter, retried when another writer came first.
        loop {
            let (next, rev) = self.next_id()?;
            let compare = match rev {
                Some(rev) => {
                    json!({"key": b64(COUNTER), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()})
                }
                None => {
                    json!({"key": b64(COUNTER), "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
                }
            };
            let fenced = self.fence.lock().expect("not poisoned").is_some();
            let (ok, _) = self.txn(
                "allocate_ids",
                vec![compare],
                vec![put(COUNTER, pad(next + n))],
                vec![range(LEADER)],
            )?;
            if ok {
                return Ok(next);
            }
            if fenced && !self.still_leads()? {
                return Err(self.deposed("allocate_ids"));
            }
        }
    }

    fn put_jobs(&self, rows: &[JobRow]) -> Result<(), StoreError> {
        let Some(max) = rows.iter().map(|r| r.id).max() else {
            return Ok(());
        };
        // Ids must have been allocated: the counter is past them (compared as 20-digit
        // strings). Transactions hold at most TXN_OPS operations: a larger array is
        // written in several.
        for chunk in rows.chunks(TXN_OPS - 1) {
            let compare = json!({"key": b64(COUNTER), "target": "VALUE", "result": "GREATER", "value": b64(pad(max))});
            let ops = chunk
                .iter()
                .map(|r| put(&format!("{JOBS}{}", pad(r.id)), row_doc(r)))
                .collect();
            let (ok, _) = self.txn("put_jobs", vec![compare], ops, vec![])?;
            if !ok {
                if self.fence.lock().expect("not poisoned").is_some() && !self.still_leads()? {
                    return Err(self.deposed("put_jobs"));
                }
                let (next, _) = self.next_id()?;
                return Err(StoreError::UnallocatedId { id: max, next });
            }
        }
        Ok(())
    }

    fn get_job(&self, id: u64) -> Result<Option<JobRow>, StoreError> {
        let key = format!("{JOBS}{}", pad(id));
        Ok(self
            .get_raw("get_job", &key)?
            .and_then(|(v, _)| row_from(&key, &v)))
    }

    fn query_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        let mut rows: Vec<JobRow> = if filter.ids.is_empty() {
            let from = format!("{JOBS}{}", pad(filter.after_id.map_or(0, |a| a + 1)));
            self.list_raw("query_jobs", &from, JOBS)?
                .into_iter()
                .filter_map(|(k, v, _)| row_from(&k, &v))
                .collect()
        } else {
            let mut ids = filter.ids.clone();
            ids.sort_unstable();
            ids.dedup();
            let mut found = Vec::new();
            for id in ids {
                found.extend(self.get_job(id)?);
            }
            found
        };
        rows.retain(|r| matches(r, filter));
        if let Some(limit) = filter.limit {
            rows.truncate(limit);
        }
        Ok(rows)
    }

    fn delete_jobs(&self, ids: &[u64]) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for chunk in ids.chunks(TXN_OPS - 1) {
            let ops = chunk
                .iter()
                .map(|id| delete(&format!("{JOBS}{}", pad(*id))))
                .collect();
            let (ok, answer) = self.txn("delete_jobs", vec![], ops, vec![])?;
            if !ok {
                return Err(self.deposed("delete_jobs"));
            }
            deleted += answer["responses"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|r| {
                            r["response_delete_range"]["deleted"]
                                .as_str()?
                                .parse::<u64>()
                                .ok()
                        })
                        .sum::<u64>()
                })
                .unwrap_or(0);
        }
        Ok(deleted)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_raw("get", &format!("{KV}{key}"))?.map(|(v, _)| v))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (ok, _) = self.txn(
            "put",
            vec![],
            vec![put(&format!("{KV}{key}"), value)],
            vec![],
        )?;
        if !ok {
            return Err(self.deposed("put"));
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (ok, _) = self.txn(
            "delete",
            vec![],
            vec![delete(&format!("{KV}{key}"))],
            vec![],
        )?;
        if !ok {
            return Err(self.deposed("delete"));
        }
        Ok(())
    }

    fn heartbeat(&self, key: &str, value: &[u8], ttl: u64) -> Result<(), StoreError> {
        let known = self
            .heartbeats
            .lock()
            .expect("not poisoned")
            .get(key)
            .cloned();
        // The lease goes on as long as the heartbeats come; the key is put anew only with a
        // new lease or a new value.
        if let Some((lease, put_value)) = known {
            if self.renew(lease)? && put_value == value {
                return Ok(());
            }
        }
        let grant = self.call("heartbeat", "/v3/lease/grant", &json!({"TTL": ttl.max(1)}))?;
        let lease: i64 = grant["ID"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| self.error("heartbeat", format!("no lease in {grant}")))?;
        let leased = json!({"request_put": {
            "key": b64(format!("{KV}{key}")), "value": b64(value), "lease": lease.to_string()
        }});
        let (ok, _) = self.txn("heartbeat", vec![], vec![leased], vec![])?;
        if !ok {
            return Err(self.deposed("heartbeat"));
        }
        self.heartbeats
            .lock()
            .expect("not poisoned")
            .insert(key.to_string(), (lease, value.to_vec()));
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let full = format!("{KV}{prefix}");
        Ok(self
            .list_raw("list", &full, &full)?
            .into_iter()
            .filter_map(|(k, v, _)| Some((k.strip_prefix(KV)?.to_string(), v)))
            .collect())
    }
}

impl EtcdStore {
    /// Whether `/berth/leader` still holds this process's value.
    fn still_leads(&self) -> Result<bool, StoreError> {
        let mine = self.fence.lock().expect("not poisoned").clone();
        Ok(mine.is_some() && self.get_raw("leader", LEADER)?.map(|(v, _)| v) == mine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    /// A one-member etcd on free loopback ports, in a temporary directory; killed when
    /// dropped.
    struct Etcd {
        child: Child,
        url: String,
        /// Where it speaks TLS: the client configuration it takes (its CA, a client
        /// certificate it signed).
        tls: Option<Arc<rustls::ClientConfig>>,
        dir: tempfile::TempDir,
    }

    /// A client configuration that trusts the CA in `ca` (or none) and shows the
    /// certificate in `client` (a directory's client.pem and client.key), if given: made
    /// with rustls here, as berth makes it from `[etcd]` in the binary's tests.
    fn client_config(ca: Option<&Path>, client: Option<&Path>) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in ca
            .map(|ca| CertificateDer::pem_file_iter(ca).unwrap())
            .into_iter()
            .flatten()
        {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match client {
            Some(dir) => {
                let chain = CertificateDer::pem_file_iter(dir.join("client.pem"))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
                config.with_client_auth_cert(chain, key).unwrap()
            }
            None => config.with_no_client_auth(),
        })
    }

    /// `N` distinct ports free now: each is held until all are chosen, so no two are equal.
    fn free_ports<const N: usize>() -> [u16; N] {
        let held: Vec<_> = (0..N)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        std::array::from_fn(|i| held[i].local_addr().unwrap().port())
    }

    impl Etcd {
        fn start() -> Etcd {
            Etcd::launch(false)
        }

        /// One that speaks TLS to its clients and takes only those with a certificate of
        /// its CA (tests/cluster/etcd-certs.sh makes them, in `dir`/certs).
        fn start_tls() -> Etcd {
            Etcd::launch(true)
        }

        fn launch(tls: bool) -> Etcd {
            let dir = tempfile::tempdir().unwrap();
            let [client, peer] = free_ports();
            let scheme = if tls { "https" } else { "http" };
            let mut etcd = Command::new("etcd");
            let certs = dir.path().join("certs");
            if tls {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cluster/etcd-certs.sh");
                let made = Command::new(script)
                    .arg(&certs)
                    .arg("127.0.0.1")
                    .status()
                    .unwrap();
                assert!(
                    made.success(),
                    "etcd-certs.sh (openssl) made no certificates"
                );
                etcd.arg("--cert-file")
                    .arg(certs.join("etcd.pem"))
                    .arg("--key-file")
                    .arg(certs.join("etcd.key"))
                    .arg("--trusted-ca-file")
                    .arg(certs.join("ca.pem"))
                    .arg("--client-cert-auth");
            }
            let child = etcd
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["--name", "test"])
                .arg(format!(
                    "--listen-client-urls={scheme}://127.0.0.1:{client}"
                ))
                .arg(format!(
                    "--advertise-client-urls={scheme}://127.0.0.1:{client}"
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster=test=http://127.0.0.1:{peer}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd runs (Debian's etcd-server; scripts/setup installs it)");
            let mut etcd = Etcd {
                child,
                url: format!("etcd{}://127.0.0.1:{client}", if tls { "s" } else { "" }),
                tls: tls.then(|| client_config(Some(&certs.join("ca.pem")), Some(&certs))),
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            let endpoint = format!("127.0.0.1:{client}");
            let answers = |tls| {
                let range = b"{\"key\":\"AA==\"}";
                connect(&endpoint, tls)
                    .and_then(|mut c| {
                        exchange(&mut c, &endpoint, "/v3/kv/range", range, ANSWER_TIMEOUT)
                    })
                    .is_ok_and(|(status, _, _)| status == 200)
            };
            while !answers(etcd.tls.as_ref()) {
                if let Ok(Some(status)) = etcd.child.try_wait() {
                    panic!(
                        "etcd exited at its start ({status}): a port of {client} and {peer} taken?"
                    );
                }
                assert!(Instant::now() < deadline, "etcd did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            etcd
        }
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn job(id: u64, state: &str, user: &str) -> JobRow {
        JobRow {
            id,
            state: state.into(),
            user: user.into(),
            partition: "normal".into(),
            submit_time: 100 + id,
            end_time: (state == "COMPLETED").then_some(200 + id),
            doc: format!("{{\"id\":{id}}}").into_bytes(),
        }
    }

    /// A reader that gives `data` a few bytes at a time, as a connection may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn answers_end_where_their_heads_say_and_what_is_cut_short_is_an_error() {
        let read = |text: &str| read_answer(&mut Trickle(text.as_bytes()));
        let ok = |text: &str| {
            let (status, body, reusable) = read(text).unwrap();
            (status, String::from_utf8(body).unwrap(), reusable)
        };
        // Kept open where its length is known.
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}{}"),
            (200, "{}{}".into(), true)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\na;x=y\r\na\":\"bcdef\"\r\n1\r\n}\r\n0\r\n\r\n"),
            (200, "{\"a\":\"bcdef\"}".into(), true)
        );
        // Closed after it.
        assert_eq!(
            ok("HTTP/1.1 400 Bad\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"),
            (400, "x".into(), false)
        );
        assert_eq!(
            ok("HTTP/1.0 400 Bad Request\r\n\r\nClient sent..."),
            (400, "Client sent...".into(), false)
        );
        for short in [
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n",
        ] {
            let e = read(short).unwrap_err();
            assert!(e.to_string().contains("cut short"), "{short:?}: {e}");
        }
        let e = read("HTTP/1.1 200").unwrap_err();
        assert!(e.to_string().contains("malformed"), "{e}");
        assert_eq!(
            read("").unwrap_err().kind(),
            std::io::ErrorKind::ConnectionAborted
        );
    }

    #[test]
    fn etcd_over_tls_with_client_certificates_and_what_is_wrong_when_it_fails() {
        let etcd = Etcd::start_tls();
        let store = EtcdStore::open(&etcd.url, etcd.tls.clone()).unwrap();
        assert_eq!(store.allocate_ids(2).unwrap(), 1);
        store.put("nodes/a", b"x").unwrap();
        assert_eq!(store.get("nodes/a").unwrap().as_deref(), Some(&b"x"[..]));
        let lease = store.campaign("me", 5).unwrap();
        assert!(store.renew(lease).unwrap());
        assert_eq!(store.leader().unwrap(), Some(format!("me lease={lease}")));
        // Each mistake is said with what to do.
        let certs = etcd.dir.path().join("certs");
        let ca = certs.join("ca.pem");
        let refused = |url: &str, tls| {
            let e = EtcdStore::open_with(url, tls, Duration::from_secs(1));
            e.unwrap_err().to_string()
        };
        let e = refused(&etcd.url.replace("etcds://", "etcd://"), None);
        assert!(e.contains("name the store etcds://"), "{e}");
        let e = refused(&etcd.url, Some(client_config(Some(&ca), None)));
        assert!(e.contains("set [etcd] cert and key"), "{e}");
        let e = refused(&etcd.url, Some(client_config(None, Some(&certs))));
        assert!(e.contains("give its CA in [etcd] ca_certs"), "{e}");
        let e = refused(&etcd.url, None);
        assert!(e.contains("etcds:// needs TLS settings"), "{e}");
        // TLS to an etcd that speaks plain HTTP.
        let plain = Etcd::start();
        let e = refused(&plain.url.replace("etcd://", "etcds://"), etcd.tls.clone());
        assert!(e.contains("name the store etcd://"), "{e}");
    }

    #[test]
    fn jobs_ids_and_values_round_trip_through_etcd() {
        let etcd = Etcd::start();
        // A member that is down is passed over.
        let [port] = free_ports();
        let dead = format!("127.0.0.1:{port}");
        let store = EtcdStore::open(
            &etcd.url.replace("etcd://", &format!("etcd://{dead},")),
            None,
        )
        .unwrap();
        assert_eq!(store.peek_id().unwrap(), 1);
        assert_eq!(store.allocate_ids(1).unwrap(), 1);
        assert_eq!(store.peek_id().unwrap(), 2);
        assert_eq!(store.allocate_ids(3).unwrap(), 2);
        assert_eq!(store.allocate_ids(1).unwrap(), 5);
        let rows = [
            job(1, "PENDING", "ana"),
            job(2, "RUNNING", "bo"),
            job(3, "COMPLETED", "ana"),
        ];
        store.put_jobs(&rows).unwrap();
        assert_eq!(store.get_job(2).unwrap().as_ref(), Some(&rows[1]));
        assert_eq!(store.get_job(4).unwrap(), None);
        let active = JobFilter {
            states: vec!["PENDING".into(), "RUNNING".into()],
            ..Default::default()
        };
        let ids = |f: &JobFilter| -> Vec<u64> {
            store.query_jobs(f).unwrap().iter().map(|r| r.id).collect()
        };
        assert_eq!(ids(&active), [1, 2]);
        let anas = JobFilter {
            users: vec!["ana".into()],
            ended_after: Some(0),
            ..Default::default()
        };
        assert_eq!(ids(&anas), [3]);
        // Job 3 ended at 203; the others have not ended.
        let since = |t| JobFilter {
            active_after: Some(t),
            ..Default::default()
        };
        assert_eq!(
            (ids(&since(203)), ids(&since(204))),
            (vec![1, 2, 3], vec![1, 2])
        );
        let page = JobFilter {
            after_id: Some(1),
            limit: Some(1),
            ..Default::default()
        };
        assert_eq!(ids(&page), [2]);
        assert_eq!(
            ids(&JobFilter {
                ids: vec![3, 1, 9],
                ..Default::default()
            }),
            [1, 3]
        );
        // An id never allocated is refused, and nothing of the call is written.
        let err = store
            .put_jobs(&[job(4, "PENDING", "ana"), job(6, "PENDING", "ana")])
            .unwrap_err();
        assert!(
            matches!(err, StoreError::UnallocatedId { id: 6, next: 6 }),
            "{err}"
        );
        assert_eq!(store.get_job(4).unwrap(), None);
        assert_eq!(store.delete_jobs(&[1, 3, 99]).unwrap(), 2);
        assert_eq!(ids(&JobFilter::default()), [2]);

        store.put("nodes/b", b"2").unwrap();
        store.put("nodes/a", b"1").unwrap();
        store.put("other", b"x").unwrap();
        assert_eq!(store.get("nodes/a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            store.list("nodes/").unwrap(),
            [
                ("nodes/a".to_string(), b"1".to_vec()),
                ("nodes/b".to_string(), b"2".to_vec())
            ]
        );
        store.delete("nodes/a").unwrap();
        assert_eq!(store.get("nodes/a").unwrap(), None);
        assert_eq!(store.list("").unwrap().len(), 2);

        // A heartbeat's key lives as long as heartbeats come.
        store.heartbeat("alive/n1", b"r1", 1).unwrap();
        assert_eq!(store.get("alive/n1").unwrap(), Some(b"r1".to_vec()));
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(400));
            store.heartbeat("alive/n1", b"r1", 1).unwrap();
        }
        assert_eq!(store.get("alive/n1").unwrap(), Some(b"r1".to_vec()));
        store.heartbeat("alive/n1", b"r2", 1).unwrap();
        assert_eq!(store.get("alive/n1").unwrap(), Some(b"r2".to_vec()));
        // etcd checks its leases about every half second: give it the TTL and a bit.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.get("alive/n1").unwrap().is_some() {
            assert!(Instant::now() < deadline, "the key outlived its lease");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn ids_are_unique_across_writers() {
        let etcd = Etcd::start();
        let stores: Vec<std::sync::Arc<EtcdStore>> = (0..3)
            .map(|_| std::sync::Arc::new(EtcdStore::open(&etcd.url, None).unwrap()))
            .collect();
        let threads: Vec<_> = stores
            .iter()
            .map(|s| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .map(|_| s.allocate_ids(2).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut firsts: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, (0..60).map(|i| 1 + 2 * i).collect::<Vec<u64>>());
    }

    /// A way to `to` (`HOST:PORT`) that can be cut: from then on, what comes in is read
    /// and dropped, and nothing answers or closes (a member whose host was cut off).
    fn cuttable(to: &str) -> (String, Arc<std::sync::atomic::AtomicBool>) {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (to, cut_too) = (to.to_string(), cut.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = std::net::TcpStream::connect(&to).unwrap();
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let cut = cut_too.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if !cut.load(Ordering::SeqCst) {
                                let _ = into.write_all(&buf[..n]);
                            }
                        }
                        // Left open: a host cut off says nothing.
                        std::mem::forget(into);
                    });
                }
            }
        });
        (addr, cut)
    }

    #[test]
    fn a_member_cut_off_does_not_cost_the_leader_its_lease() {
        let etcd = Etcd::start();
        let member = etcd.url.trim_start_matches("etcd://").to_string();
        let (way, cut) = cuttable(&member);
        // The leader's calls go through the way first (kept open), the member directly next.
        let store = EtcdStore::open(&format!("etcd://{way},{member}"), None).unwrap();
        let lease = store.campaign("leader", 5).unwrap();
        assert!(store.renew(lease).unwrap());
        cut.store(true, std::sync::atomic::Ordering::SeqCst);
        // The renewal on the silent connection gives up in time for the other member's to
        // keep the lease (a call's usual wait for an answer would outlast it).
        assert!(store.renew(lease).unwrap());
        assert!(store.renew(lease).unwrap());
    }

    #[test]
    fn one_controller_leads_and_a_deposed_one_cannot_write() {
        let etcd = Etcd::start();
        let a = EtcdStore::open(&etcd.url, None).unwrap();
        let lease = a.campaign("controller-a", 5).unwrap();
        assert!(a.renew(lease).unwrap());
        assert_eq!(a.allocate_ids(1).unwrap(), 1);
        a.put_jobs(&[job(1, "PENDING", "ana")]).unwrap();
        assert!(a.leader().unwrap().unwrap().starts_with("controller-a "));
        // A second controller stands by while the first leads...
        let (tx, rx) = std::sync::mpsc::channel();
        let url = etcd.url.clone();
        std::thread::spawn(move || {
            let b = EtcdStore::open(&url, None).unwrap();
            let lease = b.campaign("controller-b", 5).unwrap();
            tx.send((b, lease)).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(2)).is_err(),
            "two leaders"
        );
        // ... and takes over once the first's lease ends (here: revoked, as if it expired).
        a.call(
            "test",
            "/v3/lease/revoke",
            &json!({"ID": lease.to_string()}),
        )
        .unwrap();
        let (b, _) = rx.recv_timeout(Duration::from_secs(10)).expect("b leads");
        assert!(!a.renew(lease).unwrap());
        for err in [
            a.put_jobs(&[job(1, "RUNNING", "ana")]).unwrap_err(),
            a.allocate_ids(1).unwrap_err(),
            a.put("k", b"v").unwrap_err(),
        ] {
            assert!(err.to_string().contains("no longer the leader"), "{err}");
        }
        assert_eq!(b.get_job(1).unwrap().unwrap().state, "PENDING");
        assert_eq!(b.allocate_ids(1).unwrap(), 2);
        b.put_jobs(&[job(2, "PENDING", "bo")]).unwrap();
    }
}
