//! The controller and node agents as separate processes (`berth controller`, `berth agent`),
//! talking over TCP with credentials signed with the cluster key.

use crate::cluster::{first_line, free_port, terminate, Cluster};
use crate::support::*;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `berth agent` process; stopped when dropped.
struct Agent {
    child: Child,
    log: std::path::PathBuf,
    /// The test's berth and its controller's socket: to end the jobs of a failed test.
    controller: (std::path::PathBuf, std::path::PathBuf),
}

impl Agent {
    fn start(c: &Cluster, name: &str, controller: u16, key: &std::path::Path) -> Agent {
        Agent::start_with(c, name, controller, key, &[])
    }

    /// With `extra` arguments (`--features`).
    fn start_with(
        c: &Cluster,
        name: &str,
        controller: u16,
        key: &std::path::Path,
        extra: &[&str],
    ) -> Agent {
        Agent::start_at(c, name, controller, key, free_port(), extra)
    }

    /// Listening on `port`.
    fn start_at(
        c: &Cluster,
        name: &str,
        controller: u16,
        key: &std::path::Path,
        port: u16,
        extra: &[&str],
    ) -> Agent {
        let log = c.f.path(&format!("{name}.log"));
        let child = Command::new(&c.f.bin)
            .args([
                "agent",
                "--controller",
                &format!("https://127.0.0.1:{controller}"),
            ])
            .arg("--key-file")
            .arg(key)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--name", name])
            .arg("--state-dir")
            .arg(c.f.path(&format!("{name}-state")))
            .args(extra)
            .env("BERTH_STORE", c.f.path("store-root"))
            .env_remove("BERTH_CONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent {
            child,
            log,
            controller: (c.f.bin.clone(), c.socket.clone()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Agent {
    /// One the controller reaches through a [`Relay`], which can hold its requests up, and
    /// which reaches the controller through another: `cut` cuts both ways.
    fn behind_relay(c: &Cluster, name: &str, controller: u16) -> (Agent, Relay) {
        let port = free_port();
        let relay = Relay::to(port, Arc::default());
        let uplink = Relay::to(controller, relay.cut.clone());
        let advertise = format!("https://127.0.0.1:{}", relay.port);
        let key = c.state.join("cluster.key");
        let agent = Agent::start_at(
            c,
            name,
            uplink.port,
            &key,
            port,
            &["--advertise", &advertise],
        );
        (agent, relay)
    }

    /// SIGKILLs the agent, as a crash would (its jobs' runners go on).
    fn kill(mut self) {
        let _ = self.child.kill();
    }
}

impl Drop for Agent {
    /// Stops the agent as an init system would (SIGTERM): it unmounts the node's image
    /// mounts no job uses. SIGKILL if it has not stopped after 10 s. A test that failed
    /// half-way ends its jobs first, while the agent can still end those on its node (the
    /// cluster's own cleanup comes after the agents are gone).
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::cluster::end_jobs(&self.controller.0, &self.controller.1);
        }
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

fn node_names(c: &Cluster) -> Vec<String> {
    let nodes: serde_json::Value =
        serde_json::from_str(c.berth(Mode::Root, &["nodes", "--json"]).ok()).unwrap();
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn jobs_run_on_a_node_whose_agent_is_a_process_of_its_own() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Some(c) = Cluster::start_controller(None, &["--listen", &listen]) else {
        return;
    };
    // The controller alone has no node: jobs wait.
    assert!(node_names(&c).is_empty());
    let key = c.state.join("cluster.key");
    let agent = Agent::start(&c, "node-a", port, &key);
    let deadline = Instant::now() + Duration::from_secs(20);
    while node_names(&c) != ["node-a"] {
        assert!(
            Instant::now() < deadline,
            "no node registered: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let hello = "#!/bin/sh\n#BERTH --image busybox\necho \"on $SLURM_JOB_NODELIST as $(id -un)\"\n";
    let id = c.submit(Mode::Rootless, "remote.sh", hello, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", agent.log());
    assert_eq!(job["nodes"], serde_json::json!(["node-a"]));
    let out = c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out"));
    assert_eq!(
        std::fs::read_to_string(out).unwrap(),
        format!("on node-a as {TEST_USER}\n")
    );

    // Suspend, resume and cancel reach the job through its agent.
    let sleeper = c.submit_holding("sleeper.sh", "", &[]);
    let s = sleeper.to_string();
    c.berth(Mode::Rootless, &["suspend", &s]).ok();
    assert_eq!(c.show(sleeper)["state"], "SUSPENDED");
    c.berth(Mode::Rootless, &["resume", &s]).ok();
    c.berth(Mode::Rootless, &["cancel", &s]).ok();
    let job = c.wait_for(sleeper, &["CANCELLED", "FAILED", "COMPLETED"]);
    assert_eq!(job["state"], "CANCELLED", "{job}");

    // A step in a remote node's job runs there, through that node's agent, whether it starts
    // in the job or on the controller's host.
    let stepping = c.submit(
        Mode::Rootless,
        "stepping.sh",
        "#!/bin/sh\n#BERTH --image busybox\nberth step -n 1 sh -c 'echo step $SLURM_PROCID on $SLURM_STEP_NODELIST as $(id -un)'\nexec sleep 300\n",
        &[],
    );
    c.wait_for_output(stepping, "step 0 on node-a as berthtest");
    // Its end is recorded once its tasks have written their output.
    eventually("the step's end is recorded", || {
        !c.show(stepping)["steps"][0]["exit_code"].is_null()
    });
    assert_eq!(c.show(stepping)["steps"][0]["exit_code"], 0);
    // From the controller's host, the step's tasks are relayed to the job's node.
    let step = c.berth(
        Mode::Rootless,
        &[
            "step",
            "--job",
            &stepping.to_string(),
            "sh",
            "-c",
            "echo $(id -un)",
        ],
    );
    assert_eq!(step.ok(), format!("{TEST_USER}\n"));
    c.berth(Mode::Rootless, &["cancel", &stepping.to_string()])
        .ok();
    c.wait_for(stepping, &["CANCELLED"]);

    // Without the cluster key, no process can join as a node.
    let forged = c.f.path("other.key");
    std::fs::write(&forged, [9u8; 32]).unwrap();
    let intruder = Agent::start(&c, "intruder", port, &forged);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !intruder.log().contains("cannot register") {
        assert!(Instant::now() < deadline, "{}", intruder.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // It does not trust the controller (whose TLS certificate comes from the key)...
    assert!(
        intruder.log().contains("not this berth cluster's"),
        "{}",
        intruder.log()
    );
    // ... and one that trusts it anyway has its credential refused.
    let cluster = berth_agent::auth::Key::from_bytes(&std::fs::read(&key).unwrap());
    let base = format!("https://127.0.0.1:{port}");
    let mut s = berth_agent::http::connect(&base, &cluster, Duration::from_secs(10)).unwrap();
    let forged_key = berth_agent::auth::Key::from_bytes(&[9; 32]);
    let credential = forged_key.credential(&berth_agent::auth::node_principal("intruder"));
    let answer = berth_agent::http::exchange(
        &mut s,
        "POST",
        "/v1/agents/register",
        Some(&credential),
        b"{}",
    )
    .unwrap();
    assert_eq!(answer.status, 401);
    assert!(
        String::from_utf8_lossy(&answer.body).contains("signature does not match"),
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(node_names(&c), ["node-a"]);
    // %N in an output name is the node the job runs on: here the second node, node-a being
    // drained.
    let second = Agent::start(&c, "node-z", port, &key);
    eventually("node-z registers", || {
        node_names(&c) == ["node-a", "node-z"]
    });
    c.berth(Mode::Root, &["node", "drain", "node-a", "--reason", "test"])
        .ok();
    let named = c.submit(
        Mode::Rootless,
        "named.sh",
        hello,
        &["-o", "named-%N-%j.out"],
    );
    let job = c.wait_for(named, &["COMPLETED", "FAILED"]);
    assert_eq!(
        job["nodes"],
        serde_json::json!(["node-z"]),
        "{job}\n{}",
        second.log()
    );
    let file =
        c.f.cwd(Mode::Rootless)
            .join(format!("named-node-z-{named}.out"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("on node-z as {TEST_USER}\n")
    );
    assert_eq!(job["stdout"], file.to_str().unwrap());

    // A job asking for more nodes than there are is refused, not run on fewer.
    let wide = c.try_submit(Mode::Rootless, "wide.sh", hello, &["-N", "3"]);
    assert_eq!(wide.code, 125);
    assert!(
        wide.stderr.contains("can never run here")
            && wide.stderr.contains("it asks for 3 nodes with 1 CPU each")
            && wide.stderr.contains("has 2 nodes,"),
        "{}",
        wide.stderr
    );

    // A node's credential opens the agents' part of the API, nothing else.
    let node_key = cluster;
    let credential = node_key.credential(&berth_agent::auth::node_principal("node-a"));
    let timeout = Duration::from_secs(10);
    let mut s = berth_agent::http::connect(&base, &node_key, timeout).unwrap();
    let answer =
        berth_agent::http::exchange(&mut s, "GET", "/v1/jobs", Some(&credential), b"").unwrap();
    assert_eq!(
        answer.status,
        403,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    // The controllers' part (a standby copying the images) is another controller's only; a
    // controller's credential opens nothing else.
    let get = |path: &str, principal: &str| {
        berth_agent::http::get(&base, path, (&node_key, principal), timeout).unwrap()
    };
    // A standby's look at the images ([`berth_controller::mirror::Look`]).
    let look = |principal: &str, look: serde_json::Value| {
        let mut s = berth_agent::http::connect(&base, &node_key, timeout).unwrap();
        berth_agent::http::exchange(
            &mut s,
            "POST",
            "/v1/controllers/images",
            Some(&node_key.credential(principal)),
            look.to_string().as_bytes(),
        )
        .unwrap()
    };
    let node_a = berth_agent::auth::node_principal("node-a");
    let controller = berth_agent::auth::CONTROLLER;
    let standby = "standby https://127.0.0.1:1";
    assert_eq!(
        look(&node_a, serde_json::json!({ "standby": standby })).status,
        403
    );
    assert_eq!(get("/v1/jobs", controller).status, 403);
    // A standby that has copied nothing is answered at once, whatever it may wait.
    let listing: berth_controller::mirror::Listing = look(
        controller,
        serde_json::json!({ "standby": standby, "wait": 60 }),
    )
    .json()
    .unwrap();
    let images = &listing.images;
    let busybox = images
        .iter()
        .find(|i| i.names.iter().any(|n| n == "busybox:latest"))
        .expect("busybox is listed");
    let hex = busybox.id.hex();
    let config = get(&format!("/v1/controllers/images/{hex}/config"), controller);
    assert_eq!(berth_image::Digest::of(&config.body), busybox.id);
    let file = get(&format!("/v1/controllers/images/{hex}"), controller);
    assert_eq!(
        Some(berth_image::Digest::of(&file.body)),
        busybox.squashfs_digest
    );
    assert_eq!(
        get(
            &format!("/v1/controllers/images/{}", &hex[..12]),
            controller
        )
        .status,
        404
    );
    // One that has copied the listing is held until the images change: an import answers
    // it, and the import waits for that standby's copy, or for why it has none.
    let have: Vec<String> = images.iter().map(|i| i.id.hex().to_string()).collect();
    let held = std::thread::scope(|scope| {
        let held = scope.spawn(|| {
            let body = serde_json::json!({ "standby": standby, "wait": 60, "copied": listing.version, "have": have });
            let answer: berth_controller::mirror::Listing = look(controller, body).json().unwrap();
            let new: Vec<String> = answer
                .images
                .iter()
                .map(|i| i.id.hex().to_string())
                .filter(|id| !have.contains(id))
                .collect();
            let failed: serde_json::Map<String, serde_json::Value> = new
                .iter()
                .map(|id| (id.clone(), "no room left (the test's)".into()))
                .collect();
            let body = serde_json::json!({ "standby": standby, "have": have, "failed": failed });
            assert_eq!(look(controller, body).status, 200);
            answer
        });
        let tree = c.f.copy_rootfs("tree-new");
        std::fs::write(tree.join("marker"), "new").unwrap();
        let tarball = c.f.path("new.tar");
        c.f.tarball_of(&tree, &tarball);
        let imported = c.berth(
            Mode::Root,
            &[
                "image",
                "import",
                "--cluster",
                tarball.to_str().unwrap(),
                "--name",
                "new:1",
            ],
        );
        assert_eq!(imported.code, 0, "{}", imported.stderr);
        assert!(
            imported.stderr.contains(&format!(
                "berth: warning: the standby controller {standby} could not copy it: no room left (the test's)"
            )),
            "{}",
            imported.stderr
        );
        held.join().unwrap()
    });
    assert!(held
        .images
        .iter()
        .any(|i| i.names.iter().any(|n| n == "new:1")));
    assert_ne!(held.version, listing.version);
}

#[test]
fn jobs_outlive_a_restart_of_the_controller_or_of_their_agent() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Some(mut c) = Cluster::start_controller(None, &["--listen", &listen]) else {
        return;
    };
    let agent = Agent::start(&c, "node-b", port, &c.state.join("cluster.key"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while node_names(&c) != ["node-b"] {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A first job brings the image to the node (from the controller).
    let warm = c.submit(
        Mode::Rootless,
        "warm.sh",
        "#!/bin/sh\n#BERTH --image busybox\ntrue\n",
        &[],
    );
    c.wait_for(warm, &["COMPLETED"]);
    let script = "#!/bin/sh\n#BERTH --image busybox\necho started\nsleep 2\necho done\n";
    let id = c.submit(Mode::Rootless, "while-down.sh", script, &[]);
    c.wait_for_output(id, "started");
    // The job ends while no controller runs: its agent keeps the report until one takes it.
    c.kill();
    std::thread::sleep(Duration::from_secs(4));
    c.up();
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", agent.log());
    assert!(
        agent.log().contains("cannot report the end of job"),
        "{}",
        agent.log()
    );

    // The agent killed while its job runs: the job goes on, and the agent started again
    // takes it up and reports its end.
    let id = c.submit(Mode::Rootless, "agent-gone.sh", script, &[]);
    c.wait_for_output(id, "started");
    agent.kill();
    let agent = Agent::start(&c, "node-b", port, &c.state.join("cluster.key"));
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", agent.log());
    assert!(
        agent.log().contains(&format!("taking up job {id}")),
        "{}",
        agent.log()
    );

    // A start lost with the controller: it dies while its start request waits on a stopped
    // agent, which is killed before it reads it. Nothing of the job ran: the controller
    // started again queues it again (the agent has no files of it), and it runs.
    // SAFETY: a signal to the agent this test started.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGSTOP) };
    let lost = "#!/bin/sh\n#BERTH --image busybox\necho \"run $SLURM_RESTART_COUNT\"\n";
    let id = c.submit(Mode::Rootless, "lost.sh", lost, &[]);
    c.wait_for(id, &["RUNNING"]);
    c.kill();
    agent.kill();
    c.up();
    let agent = Agent::start(&c, "node-b", port, &c.state.join("cluster.key"));
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", c.log());
    assert_eq!(job["restarts"], 1, "{job}");
    assert!(
        c.log().contains(&format!(
            "job {id}: its start on node node-b never reached the node; it is queued again"
        )),
        "{}",
        c.log()
    );
    assert_eq!(
        std::fs::read_to_string(c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out"))).unwrap(),
        "run 1\n",
        "{}",
        agent.log()
    );
}

/// A cancel sent while the job's node agent is down is sent again when the agent is back
/// (its first heartbeat), as slurmctld repeats its terminate requests: the job does not run
/// on.
#[test]
fn a_cancel_while_the_agent_is_down_reaches_the_job_when_it_is_back() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Some(c) = Cluster::start_controller(None, &["--listen", &listen]) else {
        return;
    };
    let agent = Agent::start(&c, "node-c", port, &c.state.join("cluster.key"));
    eventually("the node registers", || node_names(&c) == ["node-c"]);
    let id = c.submit_holding("cancelled.sh", "", &[]);
    agent.kill();
    c.berth(Mode::Rootless, &["cancel", &id.to_string()]).ok();
    eventually("the cancel refused by the agent's absence", || {
        c.log().contains(&format!("cannot signal job {id}"))
    });
    let agent = Agent::start(&c, "node-c", port, &c.state.join("cluster.key"));
    let job = c.wait_for(id, &["CANCELLED", "COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(
        job["state"],
        "CANCELLED",
        "{job}\n{}\n{}",
        c.log(),
        agent.log()
    );
    assert!(
        c.log()
            .contains(&format!("job {id}: sending its cancel again")),
        "{}",
        c.log()
    );
}

/// A start request held up on its way to the node until after the controller that sent it
/// was restarted (as by a stalled agent, or a network cut off): the restarted controller has
/// the agent void that run before it queues the job again, and the late start is refused
/// when it comes: the job runs once.
#[test]
fn a_start_that_reaches_its_node_after_a_restart_does_not_run_the_job_twice() {
    let Some((mut c, agent, relay)) = relayed("node-e", None) else {
        return;
    };
    let (runs, script) = counting_runs(&c, "runs");
    let id = relay.submit_held(&c, "late.sh", &script);
    c.kill();
    c.up();
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", c.log());
    assert_eq!(job["restarts"], 1, "{job}");
    ran_once_the_late_start_refused(&agent, &relay, id, &runs);
}

/// A script that appends `run N` (its restarts) to the file `name` of the test user's
/// directory: that file, and the script.
fn counting_runs(c: &Cluster, name: &str) -> (std::path::PathBuf, String) {
    let runs = c.f.cwd(Mode::Rootless).join(name);
    let script = format!(
        "#!/bin/sh\n#BERTH --image busybox\necho \"run $SLURM_RESTART_COUNT\" >> {}\n",
        runs.display()
    );
    (runs, script)
}

/// Releases the start `relay` held up (job `id`'s first run): the agent refuses it, and the
/// job ran once, its second run ([`counting_runs`]'s file `runs`).
fn ran_once_the_late_start_refused(agent: &Agent, relay: &Relay, id: u64, runs: &std::path::Path) {
    relay.release.store(true, SeqCst);
    eventually("the late start is refused", || {
        agent.log().contains(&format!(
            "job {id}'s run 0 reached this node after the controller gave it up"
        ))
    });
    assert_eq!(
        std::fs::read_to_string(runs).unwrap(),
        "run 1\n",
        "{}",
        agent.log()
    );
}

/// A start request its node does not answer in time (held up on its way, the node up): the
/// node's next registration voids the run, whose start had not come, and the job is queued
/// again and runs there; the start, when it comes, is refused. The job ran once, and did
/// not fail.
#[test]
fn a_start_its_node_does_not_answer_is_voided_and_its_job_queued_again() {
    let Some((c, agent, relay)) = relayed("node-i", Some("[batch]\nnode_timeout = 3\n")) else {
        return;
    };
    let (runs, script) = counting_runs(&c, "runs-i");
    let id = relay.submit_held(&c, "unanswered.sh", &script);
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", c.log());
    assert_eq!(job["restarts"], 1, "{job}");
    assert!(
        c.log()
            .contains(&format!("job {id}: node node-i did not answer its start")),
        "{}",
        c.log()
    );
    ran_once_the_late_start_refused(&agent, &relay, id, &runs);
}

/// The same for a job on two nodes whose other node, its batch host, started its script: the
/// run voided on the silent one, the job ends NODE_FAIL (as a node lost mid-job would end
/// it), not queued again: its script ran once.
#[test]
fn a_start_not_answered_beside_a_running_batch_script_fails_the_job() {
    let Some((c, _relayed, relay)) = relayed(
        "node-l",
        Some("[batch]\nnode_timeout = 3\nrequeue = false\n"),
    ) else {
        return;
    };
    // The controller's port, from its --listen.
    let port = c.up_args[1].rsplit(':').next().unwrap().parse().unwrap();
    let key = c.state.join("cluster.key");
    let batch_host = Agent::start(&c, "node-k", port, &key);
    eventually("both nodes register", || node_names(&c).len() == 2);
    let runs = c.f.cwd(Mode::Rootless).join("runs-kl");
    let script = format!(
        "#!/bin/sh\n#BERTH --image busybox -N 2 -w node-k,node-l\n\
         echo \"ran ${{SLURM_RESTART_COUNT:-0}} on $SLURMD_NODENAME\" >> {}\nsleep 60\n",
        runs.display()
    );
    let id = relay.submit_held(&c, "two.sh", &script);
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL", "PENDING"]);
    assert_eq!(job["state"], "NODE_FAIL", "{job}\n{}", c.log());
    assert_eq!(job["nodes"][0], "node-k", "{job}");
    assert!(
        job["reason"]
            .as_str()
            .is_some_and(|r| r.contains("its start on node node-l never reached the node")),
        "{job}"
    );
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "ran 0 on node-k\n",
        "{}",
        batch_host.log()
    );
}

/// A start request held up on its way to a node that went down meanwhile (the job ended
/// NODE_FAIL): back, the node voids that run, and the start is refused when it comes.
#[test]
fn a_start_held_up_while_its_node_was_down_never_runs() {
    let Some((c, agent, relay)) = relayed(
        "node-g",
        Some("[batch]\nnode_timeout = 3\nrequeue = false\n"),
    ) else {
        return;
    };
    let ran = c.f.cwd(Mode::Rootless).join("ran-g");
    let script = format!(
        "#!/bin/sh\n#BERTH --image busybox\necho ran >> {}\n",
        ran.display()
    );
    let id = relay.submit_held(&c, "held.sh", &script);
    // The node goes silent: down, and the job with it.
    // SAFETY: signals to the agent this test started.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGSTOP) };
    let job = c.wait_for(id, &["NODE_FAIL", "COMPLETED", "FAILED"]);
    assert_eq!(job["state"], "NODE_FAIL", "{job}");
    // SAFETY: as above.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGCONT) };
    eventually("the node voids the run", || {
        agent.log().contains(&format!("job {id}'s run 0 voided"))
    });
    relay.release.store(true, SeqCst);
    eventually("the late start is refused", || {
        agent.log().contains(&format!(
            "job {id}'s run 0 reached this node after the controller gave it up"
        ))
    });
    assert!(!ran.exists(), "{}", agent.log());
}

/// A start request held up on its way to a node cut off from its controller, which took the
/// node for down meanwhile (the job ended NODE_FAIL), reaches the node before the node could
/// register again: not heard from the controller lately, the agent must register before it
/// takes a start; it cannot, and refuses it. Back in touch, it voids the run.
#[test]
fn a_start_that_reaches_a_node_cut_off_from_its_controller_never_runs() {
    let Some((c, agent, relay)) = relayed(
        "node-h",
        Some("[batch]\nnode_timeout = 3\nrequeue = false\n"),
    ) else {
        return;
    };
    let ran = c.f.cwd(Mode::Rootless).join("ran-h");
    let script = format!(
        "#!/bin/sh\n#BERTH --image busybox\necho ran >> {}\n",
        ran.display()
    );
    let id = relay.submit_held(&c, "cut.sh", &script);
    relay.cut.store(true, SeqCst);
    let job = c.wait_for(id, &["NODE_FAIL", "COMPLETED", "FAILED"]);
    assert_eq!(job["state"], "NODE_FAIL", "{job}");
    // The start comes through (its connection was open), the network still cut.
    relay.release.store(true, SeqCst);
    eventually("the start is refused", || {
        agent.log().contains(&format!(
            "job {id}'s run 0 does not start: this node has not heard"
        ))
    });
    relay.cut.store(false, SeqCst);
    eventually("the node voids the run", || {
        agent.log().contains(&format!("job {id}'s run 0 voided"))
    });
    assert!(!ran.exists(), "{}", agent.log());
}

/// The end of an earlier run of a job, reported by a node that was silent while the job was
/// queued again, is taken (the node forgets that run) and ends nothing: not the job waiting
/// to run again, nor its next run while that run's start is on its way.
#[test]
fn the_end_of_an_earlier_run_ends_nothing() {
    let Some((c, agent, relay)) = relayed("node-f", Some("[batch]\nnode_timeout = 3\n")) else {
        return;
    };
    // A first run ends only once told to (its GO file), after a SIGTERM; a second exits 3.
    let job = |name: &str| -> (u64, std::path::PathBuf, std::path::PathBuf) {
        let (runs, go) = (
            c.f.cwd(Mode::Rootless).join(format!("runs-{name}")),
            c.f.cwd(Mode::Rootless).join(format!("go-{name}")),
        );
        let script = format!(
            "#!/bin/sh\n#BERTH --image busybox --requeue\necho \"run ${{SLURM_RESTART_COUNT:-0}}\" >> {runs}\n\
             [ \"${{SLURM_RESTART_COUNT:-0}}\" = 0 ] || exit 3\n\
             trap 'while [ ! -e {go} ]; do sleep 0.1; done; exit 0' TERM\n\
             echo started\nwhile :; do sleep 0.1; done\n",
            runs = runs.display(),
            go = go.display()
        );
        let id = c.submit(Mode::Rootless, &format!("{name}.sh"), &script, &[]);
        c.wait_for_output(id, "started");
        (id, runs, go)
    };
    let (waiting, starting) = (job("waiting"), job("starting"));
    // The agent goes silent: the node goes down and the jobs back to the queue, held there.
    // SAFETY: signals to the agent this test started.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGSTOP) };
    for (id, _, _) in [&waiting, &starting] {
        eventually("the job is queued again", || {
            c.show(*id)["state"] == "PENDING"
        });
        c.berth(Mode::Rootless, &["hold", &id.to_string()]).ok();
    }
    // SAFETY: as above.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGCONT) };
    eventually("the node is back", || node_state(&c, "node-f").0 != "down");
    // The first runs are stopped. One ends while its job waits: the node forgets it once
    // the controller took its end.
    let forgotten = |id: u64| {
        !c.f.path(&format!("node-f-state/jobs/{id}/launch.json"))
            .exists()
    };
    std::fs::write(&waiting.2, "").unwrap();
    eventually("the node forgets the first run", || forgotten(waiting.0));
    // The other's job is released, and its next start held up on its way: it ends then.
    relay.hold.store(true, SeqCst);
    c.berth(Mode::Rootless, &["release", &starting.0.to_string()])
        .ok();
    eventually("the next start is on its way", || {
        relay.waiting.load(SeqCst) == 1
    });
    std::fs::write(&starting.2, "").unwrap();
    eventually("the node forgets the first run", || forgotten(starting.0));
    relay.hold.store(false, SeqCst);
    relay.release.store(true, SeqCst);
    c.berth(Mode::Rootless, &["release", &waiting.0.to_string()])
        .ok();
    for (id, runs, _) in [&waiting, &starting] {
        let job = c.wait_for(*id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
        assert_eq!(
            job["state"],
            "FAILED",
            "{job}\n{}\n{}",
            c.log(),
            agent.log()
        );
        assert_eq!(job["exit_code"], 3, "{job}");
        assert_eq!(job["restarts"], 1, "{job}");
        assert_eq!(std::fs::read_to_string(runs).unwrap(), "run 0\nrun 1\n");
    }
    assert!(
        !agent.log().contains("cannot report the end"),
        "{}",
        agent.log()
    );
}

/// A controller (with `config`) and one agent, `name`, that the controller reaches through
/// a [`Relay`]: registered, and holding the busybox image (a first job brought it).
fn relayed(name: &str, config: Option<&str>) -> Option<(Cluster, Agent, Relay)> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let c = Cluster::start_controller(config, &["--listen", &listen])?;
    let (agent, relay) = Agent::behind_relay(&c, name, port);
    eventually("the node registers", || node_names(&c) == [name]);
    let warm = c.submit(
        Mode::Rootless,
        "warm.sh",
        "#!/bin/sh\n#BERTH --image busybox\ntrue\n",
        &[],
    );
    c.wait_for(warm, &["COMPLETED"]);
    Some((c, agent, relay))
}

/// A TCP relay to a daemon's TLS port that can hold requests up: a connection taken while
/// `hold` is set goes through its TLS handshake, and then its request (the client's second
/// application-data record: TLS 1.3 sends the client's Finished as the first) waits until
/// `release` is set (`waiting` counts those that wait). While `cut` is set, connections are
/// closed as they come (those under way go on).
struct Relay {
    port: u16,
    hold: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    waiting: Arc<AtomicUsize>,
    cut: Arc<AtomicBool>,
}

impl Relay {
    /// Submits `script` (as `name`), the job's start held up here on its way to the node.
    fn submit_held(&self, c: &Cluster, name: &str, script: &str) -> u64 {
        self.hold.store(true, SeqCst);
        let id = c.submit(Mode::Rootless, name, script, &[]);
        eventually("the start is held up", || self.waiting.load(SeqCst) == 1);
        self.hold.store(false, SeqCst);
        id
    }

    fn to(daemon: u16, cut: Arc<AtomicBool>) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            hold: Arc::default(),
            release: Arc::default(),
            waiting: Arc::default(),
            cut,
        };
        let (hold, release, waiting, cut) = (
            relay.hold.clone(),
            relay.release.clone(),
            relay.waiting.clone(),
            relay.cut.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut.load(SeqCst) {
                    continue;
                }
                let held = hold
                    .load(SeqCst)
                    .then(|| (release.clone(), waiting.clone()));
                std::thread::spawn(move || relay_one(client, daemon, held));
            }
        });
        relay
    }
}

fn relay_one(
    mut client: std::net::TcpStream,
    daemon: u16,
    held: Option<(Arc<AtomicBool>, Arc<AtomicUsize>)>,
) {
    use std::io::{Read, Write};
    let Ok(mut to) = std::net::TcpStream::connect(("127.0.0.1", daemon)) else {
        return;
    };
    let (mut back, mut back_to) = (to.try_clone().unwrap(), client.try_clone().unwrap());
    std::thread::spawn(move || std::io::copy(&mut back, &mut back_to));
    let mut application = 0;
    loop {
        let mut header = [0u8; 5];
        if client.read_exact(&mut header).is_err() {
            break;
        }
        let mut record = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        if client.read_exact(&mut record).is_err() {
            break;
        }
        application += usize::from(header[0] == 23);
        if let Some((release, waiting)) = held.as_ref().filter(|_| application == 2) {
            waiting.fetch_add(1, SeqCst);
            while !release.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if to
            .write_all(&header)
            .and_then(|()| to.write_all(&record))
            .is_err()
        {
            break;
        }
    }
    // The client left (or was killed): the daemon has a while to answer into the void.
    std::thread::sleep(Duration::from_secs(5));
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// A job's end that the store refused (another process holds its lock) is written once it
/// takes writes again, and only then does the job's node forget the run: a controller
/// restarted after that has the job's end, not a job it takes for running. A start the
/// store refused waits for it.
#[test]
fn an_end_the_store_refused_is_recorded_once_it_takes_writes() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Some(mut c) = Cluster::start_controller(None, &["--listen", &listen]) else {
        return;
    };
    let agent = Agent::start(&c, "node-d", port, &c.state.join("cluster.key"));
    eventually("the node registers", || node_names(&c) == ["node-d"]);
    let go = c.f.cwd(Mode::Rootless).join("go-d");
    let script = format!(
        "#!/bin/sh\n#BERTH --image busybox\necho started\nwhile [ ! -e {} ]; do sleep 0.1; done\n",
        go.display()
    );
    let id = c.submit(Mode::Rootless, "refused.sh", &script, &[]);
    c.wait_for_output(id, "started");
    let later = c.submit(
        Mode::Rootless,
        "later.sh",
        "#!/bin/sh\n#BERTH --image busybox\ntrue\n",
        &["--hold"],
    );
    // Another process takes the store's write lock (as a backup tool might).
    let mut lock = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.read()",
        ])
        .arg(c.state.join("state.db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut lock), "locked\n");
    std::fs::write(&go, "").unwrap();
    // The end is refused, and refused again when the agent reports it again.
    let refusals = || {
        agent
            .log()
            .matches(&format!("cannot report the end of job {id}"))
            .count()
    };
    eventually("the agent's report refused twice", || refusals() >= 2);
    // A job whose start cannot be recorded waits, and starts once it can. (Slowly: each
    // write the controller tries meanwhile waits out SQLite's busy timeout, 5 s.)
    // (Its answer is an error: the release's own record waits for the store too; the
    // release holds in the controller, which is what starts the job.)
    c.berth(Mode::Rootless, &["release", &later.to_string()]);
    let refused = format!("job {later}: cannot record its start in the store");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !c.log().contains(&refused) {
        assert!(Instant::now() < deadline, "never refused: {}", c.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.show(later)["state"], "PENDING", "{}", c.log());
    drop(lock.stdin.take());
    lock.wait().unwrap();
    let job = c.wait_for(later, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", c.log());
    // Taken once the store takes writes: the agent forgets the run.
    let dir = c.f.path("node-d-state").join("jobs").join(id.to_string());
    eventually("the node forgets the run", || {
        !dir.join("launch.json").exists()
    });
    c.kill();
    c.up();
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL", "PENDING"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", c.log());
    assert_eq!(job["restarts"], 0, "{job}");
}

/// A small tmpfs mounted on a directory for a test; unmounted (lazily: mounts a test left
/// inside go with it) when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let options = format!("size={size},mode=0755");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "berth-test-disk"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(mounted.success());
        SmallDisk(dir.to_path_buf())
    }

    /// Writes zeros to `name` on it until it is full.
    fn fill(&self, name: &str) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.0.join(name)).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while file.write_all(&chunk).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A job that ends while its node's disk (the state directory's) is full is recorded as it
/// ended, not NODE_FAIL: its runner wrote its result over room it took at the start; the
/// store cannot take the end, which the controller holds (shown, in the history too) and
/// writes once it can, so a restart finds it.
#[test]
fn a_job_ends_as_it_did_while_the_disk_is_full() {
    let Some(mut c) = Cluster::prepare(None, &[]) else {
        return;
    };
    let disk = SmallDisk::mount(&c.state, "32m");
    c.up();
    let go = c.f.cwd(Mode::Rootless).join("go-full");
    let script = format!(
        "#!/bin/sh\n#BERTH --image busybox\necho started\nwhile [ ! -e {} ]; do sleep 0.1; done\necho done\n",
        go.display()
    );
    let id = c.submit(Mode::Rootless, "full.sh", &script, &[]);
    c.wait_for_output(id, "started");
    disk.fill("filler");
    std::fs::write(&go, "").unwrap();
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", c.log());
    assert!(
        c.log()
            .contains(&format!("cannot record the jobs [{id}] (yet)")),
        "{}",
        c.log()
    );
    let history = c.berth(
        Mode::Rootless,
        &[
            "history",
            "-j",
            &id.to_string(),
            "-n",
            "-P",
            "-X",
            "-o",
            "State",
        ],
    );
    assert_eq!(history.ok(), "COMPLETED\n");
    std::fs::remove_file(c.state.join("filler")).unwrap();
    eventually("the held-back end written", || {
        c.log().contains("takes writes again")
    });
    c.kill();
    c.up();
    assert_eq!(c.show(id)["state"], "COMPLETED", "{}", c.log());
    c.stop();
    drop(disk);
}

/// Waits until `what` holds, for up to 30 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn node_state(c: &Cluster, name: &str) -> (String, String) {
    let nodes: serde_json::Value =
        serde_json::from_str(c.berth(Mode::Root, &["nodes", "--json"]).ok()).unwrap();
    let n = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .cloned()
        .unwrap_or_default();
    (
        n["state"].as_str().unwrap_or("").to_string(),
        n["reason"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn a_silent_node_goes_down_and_a_drained_one_takes_no_jobs() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = "[batch]\nnode_timeout = 3\nrequeue = false\n";
    let Some(c) = Cluster::start_controller(Some(config), &["--listen", &listen]) else {
        return;
    };
    let key = c.state.join("cluster.key");
    let agent = Agent::start(&c, "node-c", port, &key);
    eventually("node-c registers", || node_names(&c) == ["node-c"]);
    let plain = c.submit_holding("plain.sh", "", &[]);
    let again = c.submit_holding("again.sh", "", &["--requeue"]);

    // The agent goes silent: after the timeout its node is down, a job ends NODE_FAIL, and
    // one submitted with --requeue waits to run again.
    let first_run = |id: u64| -> u32 {
        let recorded = c.f.path(&format!("node-c-state/jobs/{id}/runner.pid"));
        std::fs::read_to_string(recorded)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let old_runners = [first_run(plain), first_run(again)];
    agent.kill();
    let job = c.wait_for(plain, &["NODE_FAIL", "COMPLETED", "FAILED"]);
    assert_eq!(job["state"], "NODE_FAIL", "{job}");
    let (state, reason) = node_state(&c, "node-c");
    assert_eq!(state, "down");
    assert!(reason.contains("not responding"), "{reason}");
    let job = c.show(again);
    assert_eq!(job["state"], "PENDING", "{job}");
    assert_eq!(job["restarts"], 1, "{job}");

    // Back, it takes jobs again, and stops what it still ran of the jobs ended meanwhile.
    let agent = Agent::start(&c, "node-c", port, &key);
    c.wait_for(again, &["RUNNING"]);
    eventually("the old runners are stopped", || {
        agent.log().contains(&format!("stopping job {plain}"))
    });
    // Both: the requeued job's first runner too, which its second run replaces on the node.
    let ended = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
    };
    eventually("the earlier runs' runners ended", || {
        old_runners.iter().all(|&r| ended(r))
    });
    assert_ne!(node_state(&c, "node-c").0, "down");

    // Drained, it takes no new job until resumed; root only.
    let refused = c.berth(
        Mode::Rootless,
        &["node", "drain", "node-c", "--reason", "x"],
    );
    assert!(refused.stderr.contains("only root"), "{}", refused.stderr);
    c.berth(
        Mode::Root,
        &["node", "drain", "node-c", "--reason", "new disks"],
    )
    .ok();
    let (state, reason) = node_state(&c, "node-c");
    assert_eq!((state.as_str(), reason.as_str()), ("draining", "new disks"));
    let waiting = c.submit(
        Mode::Rootless,
        "waiting.sh",
        "#!/bin/sh\n#BERTH --image busybox\nexec sleep 300\n",
        &[],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.show(waiting)["state"], "PENDING");
    c.berth(Mode::Root, &["node", "resume", "node-c"]).ok();
    c.berth(Mode::Rootless, &["cancel", &again.to_string()])
        .ok();
    c.wait_for(waiting, &["RUNNING"]);
    c.berth(Mode::Rootless, &["cancel", &waiting.to_string()])
        .ok();
    c.wait_for(waiting, &["CANCELLED"]);
    // Nothing of the test's jobs runs on after it.
    c.wait_for(again, &["CANCELLED"]);
}

/// Node features (`berth agent --features`) and a job's say in its nodes: `--constraint`,
/// `--nodelist` and `--exclude` pick among the agents' nodes, and what no node can satisfy
/// is refused at submission, saying which nodes have what.
#[test]
fn constraints_and_node_lists_choose_the_node() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Some(c) = Cluster::start_controller(None, &["--listen", &listen]) else {
        return;
    };
    let key = c.state.join("cluster.key");
    let a = Agent::start_with(&c, "node-a", port, &key, &["--features", "intel,ib"]);
    let b = Agent::start_with(&c, "node-b", port, &key, &["--features=amd"]);
    eventually("both nodes register", || node_names(&c).len() == 2);
    let nodes = c.berth(Mode::Rootless, &["nodes"]);
    assert!(
        nodes
            .ok()
            .lines()
            .any(|l| l.starts_with("node-a") && l.contains("intel,ib")),
        "{}",
        nodes.stdout
    );
    let hello = "#!/bin/sh\n#BERTH --image busybox\necho \"on $SLURMD_NODENAME\"\n";
    for (args, node) in [
        (&["-C", "intel&ib"][..], "node-a"),
        (&["--constraint=amd|gpu"], "node-b"),
        (&["-w", "node-b"], "node-b"),
        (&["--exclude=node-a"], "node-b"),
        (&["-w", "node-a,node-b", "-n", "2"], "node-a"),
    ] {
        let id = c.submit(Mode::Rootless, "where.sh", hello, args);
        let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
        assert_eq!(
            job["state"],
            "COMPLETED",
            "{args:?}: {job}\n{}\n{}",
            a.log(),
            b.log()
        );
        assert_eq!(job["nodes"][0], node, "{args:?}: {job}");
        if args == ["-C", "intel&ib"] {
            let shown = c.berth(Mode::Rootless, &["show", &id.to_string()]);
            assert!(
                shown
                    .ok()
                    .contains("Features=intel&ib ReqNodeList=- ExcNodeList=-"),
                "{}",
                shown.stdout
            );
        }
        if args.contains(&"-n") {
            assert_eq!(
                job["nodes"],
                serde_json::json!(["node-a", "node-b"]),
                "{job}"
            );
        }
    }
    for (args, why) in [
        (
            &["-C", "gpu"][..],
            "no node of partition normal is left to the job",
        ),
        (
            &["-w", "node-c"],
            "node node-c (--nodelist) is not in partition",
        ),
        (
            &["-w", "node-a", "-C", "amd"],
            "node node-a is named (--nodelist) but",
        ),
        (
            &["-x", "node-z"],
            "node node-z (--exclude) is no node of this cluster",
        ),
    ] {
        let out = c.try_submit(Mode::Rootless, "never.sh", hello, args);
        assert_eq!(out.code, 125, "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains(why), "{args:?}: {}", out.stderr);
    }
    // What there is, so that the user can choose.
    let out = c.try_submit(Mode::Rootless, "never.sh", hello, &["-C", "gpu"]);
    assert!(
        out.stderr.contains("node-a [intel,ib], node-b [amd]"),
        "{}",
        out.stderr
    );
}
