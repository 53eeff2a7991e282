//! The cluster store: etcd (v3 API), spoken through etcd's JSON gateway (`POST /v3/kv/range`,
//! `/v3/kv/txn`, `/v3/lease/...`: the same API as its gRPC one, with base64 keys and values)
//! over plain HTTP/1.1, with a small blocking client of our own. No gRPC stack, no protoc: on
//! two cores tonic and prost would cost more build time than all of this.
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
use std::sync::Mutex;
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
        && f.ended_before
            .is_none_or(|t| row.end_time.is_some_and(|e| e < t))
}

impl EtcdStore {
    /// The etcd cluster at `url`: `etcd://HOST:PORT[,HOST:PORT...]` (plain HTTP to its
    /// client port). Checks that a member answers.
    pub fn open(url: &str) -> Result<EtcdStore, StoreError> {
        let members = url.strip_prefix("etcd://").ok_or_else(|| {
            StoreError::InvalidArgument(format!(
                "{url}: an etcd store is named etcd://HOST:PORT[,HOST:PORT...]"
            ))
        })?;
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
    /// turn, for up to [`PATIENCE`] (members down, or no leader while etcd elects one).
    fn call(&self, op: &'static str, path: &str, body: &Value) -> Result<Value, StoreError> {
        let body = serde_json::to_vec(body).expect("requests serialise");
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::new();
        let first = *self.preferred.lock().expect("not poisoned");
        for attempt in 0.. {
            let i = (first + attempt) % self.endpoints.len();
            match post(&self.endpoints[i], path, &body) {
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
                Err(e) => last = format!("{}: {e}", self.endpoints[i]),
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
                eprintln!("berth: standing by: {holder} leads");
                announced = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Keeps the leader's lease alive; `false` once it has ended (this process no longer
    /// leads and must stop).
    pub fn renew(&self, lease: i64) -> Result<bool, StoreError> {
        let answer = self.call(
            "renew",
            "/v3/lease/keepalive",
            &json!({"ID": lease.to_string()}),
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

/// One HTTP/1.1 POST with a JSON body; the status and body of the answer.
fn post(endpoint: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(endpoint)?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{endpoint} has no address")))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("a malformed HTTP answer"))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut payload = answer[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload);
    }
    Ok((status, payload))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
    out
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
    use std::process::{Child, Command, Stdio};

    /// A one-member etcd on free loopback ports, in a temporary directory; killed when
    /// dropped.
    struct Etcd {
        child: Child,
        url: String,
        _dir: tempfile::TempDir,
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
            let dir = tempfile::tempdir().unwrap();
            let [client, peer] = free_ports();
            let child = Command::new("etcd")
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(["--name", "test"])
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
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
                url: format!("etcd://127.0.0.1:{client}"),
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while post(
                &format!("127.0.0.1:{client}"),
                "/v3/kv/range",
                b"{\"key\":\"AA==\"}",
            )
            .map_or(true, |(s, _)| s != 200)
            {
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

    #[test]
    fn jobs_ids_and_values_round_trip_through_etcd() {
        let etcd = Etcd::start();
        // A member that is down is passed over.
        let [port] = free_ports();
        let dead = format!("127.0.0.1:{port}");
        let store =
            EtcdStore::open(&etcd.url.replace("etcd://", &format!("etcd://{dead},"))).unwrap();
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
            .map(|_| std::sync::Arc::new(EtcdStore::open(&etcd.url).unwrap()))
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

    #[test]
    fn one_controller_leads_and_a_deposed_one_cannot_write() {
        let etcd = Etcd::start();
        let a = EtcdStore::open(&etcd.url).unwrap();
        let lease = a.campaign("controller-a", 5).unwrap();
        assert!(a.renew(lease).unwrap());
        assert_eq!(a.allocate_ids(1).unwrap(), 1);
        a.put_jobs(&[job(1, "PENDING", "ana")]).unwrap();
        assert!(a.leader().unwrap().unwrap().starts_with("controller-a "));
        // A second controller stands by while the first leads...
        let (tx, rx) = std::sync::mpsc::channel();
        let url = etcd.url.clone();
        std::thread::spawn(move || {
            let b = EtcdStore::open(&url).unwrap();
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
