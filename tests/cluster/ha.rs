//! Controllers that fail over, with their state in etcd (Debian's etcd-server): one leads,
//! the others stand by; kill the leader and another takes over, with no job lost or run
//! twice; kill etcd's leader and the cluster carries on.

use crate::hosts::{output, Hosts, TestCluster};
use crate::support::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An etcd member; killed when dropped.
struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd members, each on test host `i` at `addr` (:2379 for clients, :2380 for peers), their
/// data and logs under `dir`. With `certs` (made by [`etcd_certs`]), they speak TLS to their
/// clients and to each other, and take only those with a certificate of their CA.
fn etcd_cluster(
    hosts: &Hosts,
    members: &[(usize, String)],
    dir: &std::path::Path,
    certs: Option<&std::path::Path>,
) -> Vec<Etcd> {
    let scheme = if certs.is_some() { "https" } else { "http" };
    let initial: Vec<String> = members
        .iter()
        .map(|(i, addr)| format!("m{i}={scheme}://{addr}:2380"))
        .collect();
    members
        .iter()
        .map(|(i, addr)| {
            let log = std::fs::File::create(dir.join(format!("etcd-m{i}.log"))).unwrap();
            let mut etcd = hosts.on(*i, std::path::Path::new("/usr/bin/etcd"));
            if let Some(certs) = certs {
                for peer in ["", "peer-"] {
                    etcd.arg(format!("--{peer}cert-file"))
                        .arg(certs.join("etcd.pem"))
                        .arg(format!("--{peer}key-file"))
                        .arg(certs.join("etcd.key"))
                        .arg(format!("--{peer}trusted-ca-file"))
                        .arg(certs.join("ca.pem"))
                        .arg(format!("--{peer}client-cert-auth"));
                }
            }
            let child = etcd
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("etcd-m{i}")))
                .arg(format!("--listen-client-urls={scheme}://{addr}:2379"))
                .arg(format!("--advertise-client-urls={scheme}://{addr}:2379"))
                .arg(format!("--listen-peer-urls={scheme}://{addr}:2380"))
                .arg(format!(
                    "--initial-advertise-peer-urls={scheme}://{addr}:2380"
                ))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .args(["--initial-cluster-token", "berth-test", "--pre-vote"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            Etcd(child)
        })
        .collect()
}

/// A `berth controller` that stands by; killed when dropped.
struct Standby {
    child: Option<Child>,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Standby {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts a second controller on the same etcd store (the first's cluster key copied to it),
/// with an image store of its own (`store-b`), as on a host of its own.
fn standby(t: &TestCluster, store: &str, port: u16) -> Standby {
    let state = t.c.f.path("state-b");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::copy(t.c.state.join("cluster.key"), state.join("cluster.key")).unwrap();
    let socket = t.c.f.path("berth-b.sock");
    let log = t.c.f.path("controller-b.log");
    let child = Command::new(&t.c.f.bin)
        .args(["controller", "--store", store, "--state-dir"])
        .arg(&state)
        .arg("--socket")
        .arg(&socket)
        .args(["--listen", &t.hosts.bridge(port)])
        .env("BERTH_STORE", t.c.f.path("store-b"))
        .env_remove("BERTH_CONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Standby {
        child: Some(child),
        socket,
        log,
    }
}

fn wait_until(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    crate::support::wait_until(limit.as_secs(), cond, || {
        format!("timed out waiting: {what}")
    });
}

#[test]
fn a_standby_controller_takes_over_with_no_job_lost_or_run_twice() {
    if !is_root() {
        return;
    }
    // etcd on the first test host; the controllers on the bridge, an agent on each host.
    let hosts = Hosts::up(10, 3);
    let dir = tempfile::tempdir().unwrap();
    let _etcd = etcd_cluster(&hosts, &[(1, hosts.addr(1))], dir.path(), None);
    let store = format!("etcd://{}:2379", hosts.addr(1));
    let controllers = format!(
        "https://{},https://{}",
        hosts.controller(),
        hosts.bridge(6819)
    );
    let Some(mut t) = TestCluster::on(hosts, None, &["--store", &store], Some(&controllers)) else {
        return;
    };
    let b = standby(&t, &store, 6819);
    wait_until(
        "the second controller stands by",
        Duration::from_secs(20),
        || b.log().contains("standing by"),
    );
    assert!(!b.socket.exists(), "a standby serves nothing");
    // The standby copies the images the leader had; then those that come into the leader's
    // store after it started, each before its import answers (a failover right after one
    // would lose none); and what the leader removes goes from its copy too.
    let store_b = t.c.f.path("store-b");
    let copied = || names_in(&store_b);
    wait_until(
        "the standby copies the leader's images",
        Duration::from_secs(30),
        || copied()["busybox:latest"].is_string(),
    );
    let tools = image_tarball(&t, "tools");
    let gone = image_tarball(&t, "gone");
    let late = image_tarball(&t, "late");
    for (file, name) in [(&tools, "tools:1"), (&gone, "gone:1"), (&late, "late:1")] {
        import(&t, file, name);
        assert!(copied()[name].is_string(), "{name}\n{}", b.log());
    }
    // The leader lists itself and the standby that follows it, with what each holds.
    let listed: serde_json::Value =
        serde_json::from_str(t.c.berth(Mode::Rootless, &["controllers", "--json"]).ok()).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        (listed[0]["role"].as_str(), listed[0]["images"].as_u64()),
        (Some("leader"), Some(4)),
        "{listed:?}"
    );
    assert_eq!(
        (
            listed[1]["role"].as_str(),
            listed[1]["state"].as_str(),
            listed[1]["url"].as_str(),
            listed[1]["images"].as_u64()
        ),
        (
            Some("standby"),
            Some("up"),
            Some(format!("https://{}", t.hosts.bridge(6819)).as_str()),
            Some(4)
        ),
        "{listed:?}"
    );
    let ping = t.c.berth(Mode::Rootless, &["as", "scontrol", "ping"]);
    let lines: Vec<&str> = ping.ok().lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("Slurmctld(primary) at ") && lines[0].ends_with(" is UP"));
    assert!(lines[1].starts_with("Slurmctld(backup) at ") && lines[1].ends_with(" is UP"));
    let gone_id = copied()["gone:1"].as_str().unwrap().to_string();
    let gone_dir =
        t.c.f
            .path("store-b/images")
            .join(gone_id.trim_start_matches("sha256:"));
    assert!(gone_dir.join("image.sqfs").is_file());
    t.c.berth(Mode::Root, &["image", "rm", "--cluster", "gone:1"])
        .ok();
    wait_until(
        "the standby drops a removed image",
        Duration::from_secs(30),
        || copied()["gone:1"].is_null() && !gone_dir.exists(),
    );
    assert!(b.log().contains("copied image"), "{}", b.log());
    let go = t.c.f.cwd(Mode::Rootless).join("go");
    let long = format!(
        "#!/bin/sh\n#SBATCH -N 2\n#BERTH --image busybox\necho started\nwhile [ ! -e {} ]; do srun -n 1 true || echo srun failed; sleep 0.2; done\necho finished\n",
        go.display()
    );
    let quick = t.c.submit(
        Mode::Rootless,
        "quick.sh",
        "#!/bin/sh\n#BERTH --image busybox\necho quick\n",
        &[],
    );
    t.c.wait_for(quick, &["COMPLETED"]);
    let running = t.c.submit(Mode::Rootless, "long.sh", &long, &[]);
    t.c.wait_for_output(running, "started");
    // Its image is one no node has fetched yet: after the takeover they fetch it from the
    // standby's copy.
    let held = t.c.submit(
        Mode::Rootless,
        "held.sh",
        "#!/bin/sh\n#BERTH --image tools:1\necho held ran in $(cat /marker)\n",
        &["--hold"],
    );
    // And one whose image the standby will have lost (as if it had not copied it yet).
    let lost = t.c.submit(
        Mode::Rootless,
        "lost.sh",
        "#!/bin/sh\n#BERTH --image late:1\necho lost ran in $(cat /marker)\n",
        &["--hold"],
    );

    // The leader dies. The standby leads within a few seconds, with every job.
    let first_socket = t.c.socket.clone();
    t.c.kill();
    let killed = Instant::now();
    wait_until("the standby takes over", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&b.socket).is_ok()
    });
    eprintln!("took over in {:?}", killed.elapsed());
    t.c.socket = b.socket.clone();
    assert_eq!(t.c.show(quick)["state"], "COMPLETED");
    let listed: serde_json::Value =
        serde_json::from_str(t.c.berth(Mode::Rootless, &["controllers", "--json"]).ok()).unwrap();
    assert_eq!(listed[0]["role"], "leader", "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    // A client over TCP that names both controllers asks the one that leads now, with a
    // token of the cluster's key (made by the new leader; the first one's would do too).
    let token = t.c.token(Mode::Rootless);
    let queue =
        t.c.f
            .cmd(Mode::Rootless, &["show", &quick.to_string(), "--json"])
            .env("BERTH_API", &controllers)
            .env("BERTH_TOKEN", &token)
            .output()
            .unwrap();
    assert!(
        queue.status.success(),
        "{}",
        String::from_utf8_lossy(&queue.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&queue.stdout).unwrap();
    assert_eq!(shown["state"], "COMPLETED");
    // Named alone, the dead one is down, as Slurm's ping says it.
    let first = format!("https://{}", t.hosts.controller());
    let ping =
        t.c.f
            .cmd(Mode::Rootless, &["as", "scontrol", "ping"])
            .env("BERTH_API", &first)
            .env("BERTH_TOKEN", &token)
            .output()
            .unwrap();
    let host = t.hosts.controller().rsplit_once(':').unwrap().0.to_string();
    assert_eq!(
        (
            ping.status.code(),
            String::from_utf8_lossy(&ping.stdout).to_string()
        ),
        (Some(1), format!("Slurmctld(primary) at {host} is DOWN\n"))
    );
    assert_eq!(t.c.show(running)["state"], "RUNNING");
    assert_eq!(t.c.show(held)["state"], "PENDING");
    // The agents find the new leader; the running job's end reaches it.
    t.wait_for_nodes(&t.hosts.names());
    t.c.berth(Mode::Rootless, &["release", &held.to_string()])
        .ok();
    let job = t.c.wait_for(held, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", b.log());
    assert_eq!(output(&t, held), "held ran in tools\n");
    // A job whose image the new leader lacks is held again, not failed, with the reason;
    // once the image is back, it runs.
    let late_id = copied()["late:1"].as_str().unwrap().to_string();
    let late_dir =
        t.c.f
            .path("store-b/images")
            .join(late_id.trim_start_matches("sha256:"));
    std::fs::remove_dir_all(&late_dir).unwrap();
    t.c.berth(Mode::Rootless, &["release", &lost.to_string()])
        .ok();
    wait_until("the job is held again", Duration::from_secs(20), || {
        let job = t.c.show(lost);
        job["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("launch_failed_requeued_held: its image"))
    });
    assert_eq!(t.c.show(lost)["state"], "PENDING");
    import(&t, &late, "late:1");
    t.c.berth(Mode::Rootless, &["release", &lost.to_string()])
        .ok();
    let job = t.c.wait_for(lost, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", b.log());
    assert_eq!(output(&t, lost), "lost ran in late\n");
    // The first controller comes back and stands by. An image it took in itself while it
    // led, which the new leader removed meanwhile, goes from its store too.
    t.c.berth(Mode::Root, &["image", "rm", "--cluster", "tools:1"])
        .ok();
    assert!(copied()["tools:1"].is_null());
    let store_a = t.c.f.path("store-root");
    let names_a = || names_in(&store_a);
    assert!(names_a()["tools:1"].is_string());
    let new_socket = std::mem::replace(&mut t.c.socket, first_socket);
    t.c.spawn();
    t.c.socket = new_socket;
    wait_until(
        "the first controller drops what the leader removed while it was away",
        Duration::from_secs(30),
        || names_a()["tools:1"].is_null() && names_a()["late:1"].is_string(),
    );
    std::fs::write(&go, "").unwrap();
    let job = t.c.wait_for(running, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(
        job["state"],
        "COMPLETED",
        "{job}\n{}\n{}",
        b.log(),
        t.logs()
    );
    // Run once: its output holds one start; its steps, one every 0.2 s, waited through the
    // takeover (none failed).
    let out = output(&t, running);
    assert_eq!(out, "started\nfinished\n");
}

/// Imports `file` into the cluster's store as `name`, as root, with nothing to warn of (a
/// standby that has not copied it).
/// The names an image store holds (its refs.json: name to id), as read now.
fn names_in(store: &std::path::Path) -> serde_json::Value {
    std::fs::read(store.join("refs.json"))
        .ok()
        .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r).ok())
        .unwrap_or_default()
}

fn import(t: &TestCluster, file: &std::path::Path, name: &str) {
    let out = t.c.berth(
        Mode::Root,
        &[
            "image",
            "import",
            "--cluster",
            &file.to_string_lossy(),
            "--name",
            name,
        ],
    );
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    out.ok();
}

/// A root filesystem tarball of the test's busybox with `/marker` saying `marker`.
fn image_tarball(t: &TestCluster, marker: &str) -> std::path::PathBuf {
    let tree = t.c.f.copy_rootfs(&format!("tree-{marker}"));
    std::fs::write(tree.join("marker"), marker).unwrap();
    let tarball = t.c.f.path(&format!("{marker}.tar"));
    t.c.f.tarball_of(&tree, &tarball);
    tarball
}

/// Certificates for etcd members at `addrs` and their clients, made in `dir` as a site
/// would (tests/cluster/etcd-certs.sh, with openssl).
fn etcd_certs(dir: &std::path::Path, addrs: &[String]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/etcd-certs.sh");
    let made = Command::new(script).arg(dir).args(addrs).status().unwrap();
    assert!(made.success(), "etcd-certs.sh made no certificates");
}

/// `POST path` with a JSON body to an etcd member's JSON gateway, in TLS with the client
/// certificate in `certs` (curl, as an administrator would look); the answer's body.
fn etcd_post(
    certs: &std::path::Path,
    addr: &str,
    path: &str,
    body: &str,
) -> Option<serde_json::Value> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join("client.pem"))
        .arg("--key")
        .arg(certs.join("client.key"))
        .args(["-d", body, &format!("https://{addr}{path}")])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn the_cluster_carries_on_when_etcds_leader_dies() {
    if !is_root() {
        return;
    }
    let hosts = Hosts::up(11, 3);
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<(usize, String)> = (1..=3).map(|i| (i, hosts.addr(i))).collect();
    // etcd in TLS, between its members and to the controller, which shows a certificate of
    // etcd's CA (as `[etcd]` says).
    let certs = dir.path().join("certs");
    let addrs: Vec<String> = members.iter().map(|(_, a)| a.clone()).collect();
    etcd_certs(&certs, &addrs);
    let mut etcd = etcd_cluster(&hosts, &members, dir.path(), Some(&certs));
    let clients: Vec<String> = members.iter().map(|(_, a)| format!("{a}:2379")).collect();
    let store = format!("etcds://{}", clients.join(","));
    let config = format!(
        "[batch]\nnode_timeout = 3\n[etcd]\nca_certs = [\"{0}/ca.pem\"]\ncert = \"{0}/client.pem\"\nkey = \"{0}/client.key\"\n",
        certs.display()
    );
    let config = config.as_str();
    let Some(mut t) = TestCluster::on(hosts, Some(config), &["--store", &store], None) else {
        return;
    };
    let script = "#!/bin/sh\n#SBATCH -N 2\n#BERTH --image busybox\nberth step -N 2 hostname\n";
    let first = t.c.submit(Mode::Rootless, "before.sh", script, &[]);
    assert_eq!(
        t.c.wait_for(first, &["COMPLETED", "FAILED"])["state"],
        "COMPLETED"
    );
    // etcd's leader: the member whose own id is the leader its status names.
    let leader = clients
        .iter()
        .position(|c| {
            etcd_post(&certs, c, "/v3/maintenance/status", "{}")
                .is_some_and(|s| s["leader"].is_string() && s["leader"] == s["header"]["member_id"])
        })
        .expect("etcd has a leader");
    // Dropped: killed.
    drop(etcd.remove(leader));
    // Two members of three still make a quorum: jobs go on being taken, run and recorded.
    let second = t.c.submit(Mode::Rootless, "after.sh", script, &[]);
    let job = t.c.wait_for(second, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", t.logs());
    let history = t.c.berth(Mode::Root, &["history", "--json"]);
    let ids: Vec<u64> = serde_json::from_str::<serde_json::Value>(history.ok())
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [first, second]);

    // Each node is alive in etcd under a lease its heartbeats keep: a node whose agent stops
    // disappears from there by itself.
    let alive = || -> Vec<String> {
        let prefix = "/berth/kv/alive/";
        let b64 = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let body = format!(
            "{{\"key\":\"{}\",\"range_end\":\"{}\",\"keys_only\":true}}",
            b64(prefix),
            b64("/berth/kv/alive0")
        );
        let answer = clients
            .iter()
            .find_map(|c| etcd_post(&certs, c, "/v3/kv/range", &body))
            .unwrap();
        answer["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        use base64::Engine as _;
                        let key = base64::engine::general_purpose::STANDARD
                            .decode(kv["key"].as_str().unwrap())
                            .unwrap();
                        String::from_utf8(key).unwrap()[prefix.len()..].to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(alive(), t.hosts.names());
    t.agents[2].kill();
    wait_until(
        "the stopped node's lease ends",
        Duration::from_secs(20),
        || alive() == t.hosts.names()[..2],
    );
}
