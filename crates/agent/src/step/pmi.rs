//! A PMI-1 process manager for a step's tasks, so that MPI programs built for it (MPICH and
//! its kin) start without mpiexec: `berth step -n 4 ./mpi_app`, as srun does with --mpi=pmi1
//! (here the default).
//!
//! The agent that takes a step listens on TCP; each task gets `PMI_PORT=<node>:<port>` and
//! `PMI_ID=<rank>` and talks the "simple" PMI-1 wire protocol: newline-terminated lines of
//! `key=value` fields separated by single spaces, `cmd=` first:
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The longest line taken: a value of up to `vallen_max` bytes and its key and command.
const LINE_LIMIT: usize = 4096;

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

/// One request line: its fields, `value` (if any) the rest of the line.
fn fields(line: &str) -> HashMap<&str, &str> {
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
    /// The tasks waiting in the current barrier, each to be answered.
    barrier: Vec<mpsc::UnboundedSender<String>>,
}

/// A running PMI server for one step.
pub struct Server {
    /// The port it listens on.
    pub port: u16,
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
        let port = listener.local_addr()?.port();
        let size: u32 = counts.iter().sum();
        let mut kvs = HashMap::new();
        kvs.insert("PMI_process_mapping".to_string(), process_mapping(counts));
        let state = Arc::new(Mutex::new(State {
            kvs,
            barrier: Vec::new(),
        }));
        let (abort_tx, aborts) = mpsc::unbounded_channel();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (state, kvsname, abort) = (state.clone(), kvsname.clone(), abort_tx.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, size, &kvsname, &state, &abort).await;
                });
            }
        });
        Ok(Server {
            port,
            aborts,
            accept,
        })
    }
}

/// One task's connection, until it finalizes or goes.
async fn serve(
    stream: TcpStream,
    size: u32,
    kvsname: &str,
    state: &Mutex<State>,
    abort: &mpsc::UnboundedSender<i32>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    // Answers come from this task's own requests and from other tasks' arrival at a barrier.
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    // A line read in parts stays here while an answer is written (read_until appends).
    let mut line: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            n = read.read_until(b'\n', &mut line) => {
                if n? == 0 {
                    return Ok(());
                }
                if line.len() > LINE_LIMIT {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a PMI line too long"));
                }
                if !line.ends_with(b"\n") {
                    continue;
                }
            }
            Some(answer) = rx.recv() => {
                write.write_all(answer.as_bytes()).await?;
                continue;
            }
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        line.clear();
        let request = text.trim_end_matches(['\n', '\r']);
        let f = fields(request);
        let answer = match f.get("cmd").copied().unwrap_or("") {
            "initack" => {
                let rank: u32 = f.get("pmiid").and_then(|r| r.parse().ok()).unwrap_or(0);
                format!("cmd=initack\ncmd=set size={size}\ncmd=set rank={rank}\ncmd=set debug=0\n")
            }
            "init" => "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n".into(),
            "get_maxes" => "cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024\n".into(),
            "get_appnum" => "cmd=appnum appnum=0\n".into(),
            "get_my_kvsname" => format!("cmd=my_kvsname kvsname={kvsname}\n"),
            "get_universe_size" => format!("cmd=universe_size size={size}\n"),
            "put" => {
                let (key, value) = (f.get("key").copied(), f.get("value").copied());
                match (key, value) {
                    (Some(k), Some(v)) => {
                        let mut s = state.lock().expect("not poisoned");
                        s.kvs.insert(k.to_string(), v.to_string());
                        "cmd=put_result rc=0 msg=success\n".into()
                    }
                    _ => "cmd=put_result rc=-1 msg=key_or_value_missing\n".into(),
                }
            }
            "get" => {
                let key = f.get("key").copied().unwrap_or("");
                let s = state.lock().expect("not poisoned");
                match s.kvs.get(key) {
                    Some(v) => format!("cmd=get_result rc=0 msg=success value={v}\n"),
                    None => format!("cmd=get_result rc=-1 msg=key_{key}_not_found\n"),
                }
            }
            "barrier_in" => {
                let mut s = state.lock().expect("not poisoned");
                s.barrier.push(tx.clone());
                if s.barrier.len() as u32 >= size {
                    for waiting in s.barrier.drain(..) {
                        let _ = waiting.send("cmd=barrier_out\n".into());
                    }
                }
                continue;
            }
            "finalize" => {
                write.write_all(b"cmd=finalize_ack\n").await?;
                return Ok(());
            }
            "abort" => {
                let code = f.get("exitcode").and_then(|c| c.parse().ok()).unwrap_or(1);
                let _ = abort.send(code);
                return Ok(());
            }
            other => format!("cmd={other}_result rc=-1 msg=unsupported_by_berth\n"),
        };
        write.write_all(answer.as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

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

    impl Task {
        async fn connect(port: u16) -> Task {
            let (r, w) = TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap()
                .into_split();
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

    #[tokio::test]
    async fn two_tasks_talk_as_mpich_does() {
        let mut server = Server::start(&[1, 1], "kvs_7_0".into()).await.unwrap();
        let mut a = Task::connect(server.port).await;
        let mut b = Task::connect(server.port).await;
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
}
