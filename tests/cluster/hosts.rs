//! Test hosts (tests/cluster/up.sh, down.sh) and the berth daemons on them.

use crate::controller::{terminate, Cluster};
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The controller's API port on the bridge, and each agent's on its host.
const CONTROLLER_PORT: u16 = 6817;
const AGENT_PORT: u16 = 6818;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cluster")
        .join(name)
}

/// `n` test hosts of cluster `number` (each test its own, so that tests can run at once);
/// removed when dropped, also when the test fails.
pub struct Hosts {
    number: u8,
    n: usize,
}

impl Hosts {
    pub fn up(number: u8, n: usize) -> Hosts {
        // What a killed earlier run may have left.
        let _ = Command::new(script("down.sh"))
            .arg(number.to_string())
            .status();
        let hosts = Hosts { number, n };
        let out = Command::new(script("up.sh"))
            .args([n.to_string(), number.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "up.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        hosts
    }

    /// Host `i`'s name (1-based), which is its node's name.
    pub fn name(&self, i: usize) -> String {
        format!("bt{}-h{i}", self.number)
    }

    pub fn names(&self) -> Vec<String> {
        (1..=self.n).map(|i| self.name(i)).collect()
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.number, 10 + i)
    }

    /// The controller's address, on the bridge.
    pub fn controller(&self) -> String {
        self.bridge(CONTROLLER_PORT)
    }

    /// `port` on the bridge's address.
    pub fn bridge(&self, port: u16) -> String {
        format!("10.213.{}.1:{port}", self.number)
    }

    /// Puts host `name`'s link to the bridge down (cut off) or up again.
    pub fn link(&self, name: &str, up: bool) {
        let i = name.rsplit_once("-h").unwrap().1;
        let status = Command::new("ip")
            .args(["link", "set", &format!("bt{}-v{i}", self.number)])
            .arg(if up { "up" } else { "down" })
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `program` to be run on host `i`.
    pub fn on(&self, i: usize, program: &Path) -> Command {
        let mut cmd = Command::new(script("exec.sh"));
        cmd.arg(self.name(i)).arg(program);
        cmd
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = Command::new(script("down.sh"))
            .arg(self.number.to_string())
            .status();
    }
}

/// A `berth agent` on a test host; stopped when dropped.
pub struct Agent {
    child: Option<Child>,
    pub name: String,
    pub state: PathBuf,
    log: PathBuf,
}

impl Agent {
    pub fn start(c: &Cluster, hosts: &Hosts, i: usize) -> Agent {
        Agent::start_for(c, hosts, i, &format!("https://{}", hosts.controller()))
    }

    /// An agent of the controllers at `controllers` (`https://HOST:PORT[,...]`).
    pub fn start_for(c: &Cluster, hosts: &Hosts, i: usize, controllers: &str) -> Agent {
        let name = hosts.name(i);
        let log = c.f.path(&format!("{name}.log"));
        let state = c.f.path(&format!("{name}-state"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = hosts
            .on(i, &c.f.bin)
            .args(["agent", "--controller", controllers])
            .arg("--key-file")
            .arg(c.state.join("cluster.key"))
            .arg("--listen")
            .arg(format!("{}:{AGENT_PORT}", hosts.addr(i)))
            .arg("--state-dir")
            .arg(&state)
            // The API (and steps) for the host's users, as on a login node.
            .arg("--socket")
            .arg(state.join("berth.sock"))
            .env("BERTH_STORE", c.f.path("store-root"))
            .env_remove("BERTH_CONFIG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            name,
            state,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the agent with SIGTERM, as an init system would, and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let stopped = terminate(&mut child, Duration::from_secs(20));
            assert!(stopped, "agent {} did not stop on SIGTERM", self.name);
        }
    }

    /// SIGKILLs the agent (its jobs' runners go on).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The runner of job `id` on this node, once the agent has started it.
    pub fn wait_for_runner(&self, id: u64) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self.runner(id) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no runner of job {id} on {}: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The runner of job `id` on this node, as the agent recorded it (`PID [START TIME]`).
    pub fn runner(&self, id: u64) -> Option<u32> {
        std::fs::read_to_string(self.state.join(format!("jobs/{id}/runner.pid")))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A controller on the bridge with an agent on each of `n` test hosts, all registered.
pub struct TestCluster {
    // Dropped in this order: the controller (cancelling the test's jobs), the agents, and
    // the hosts, whose removal stops whatever still runs on them.
    pub c: Cluster,
    pub agents: Vec<Agent>,
    pub hosts: Hosts,
}

impl TestCluster {
    /// `config`: the controller's berth.toml, if any.
    pub fn start(number: u8, n: usize, config: Option<&str>) -> Option<TestCluster> {
        TestCluster::start_with(number, n, config, &[], None)
    }

    /// With more arguments for the controller, and the agents' `--controller` (default:
    /// the controller's address).
    pub fn start_with(
        number: u8,
        n: usize,
        config: Option<&str>,
        controller_args: &[&str],
        controllers: Option<&str>,
    ) -> Option<TestCluster> {
        if !is_root() {
            eprintln!("skipped: this test needs root (CI runs it as root)");
            return None;
        }
        TestCluster::on(Hosts::up(number, n), config, controller_args, controllers)
    }

    /// On hosts already up (with services of the test's on them).
    pub fn on(
        hosts: Hosts,
        config: Option<&str>,
        controller_args: &[&str],
        controllers: Option<&str>,
    ) -> Option<TestCluster> {
        let n = hosts.n;
        let listen = hosts.controller();
        let mut args = vec!["--listen", &listen];
        args.extend_from_slice(controller_args);
        let c = Cluster::start_controller(config, &args)?;
        let url = format!("https://{listen}");
        let agents = (1..=n)
            .map(|i| Agent::start_for(&c, &hosts, i, controllers.unwrap_or(&url)))
            .collect();
        let t = TestCluster { c, agents, hosts };
        t.wait_for_nodes(&t.hosts.names());
        Some(t)
    }

    /// The nodes and their states (`berth nodes`).
    pub fn nodes(&self) -> Vec<(String, String)> {
        let nodes: serde_json::Value =
            serde_json::from_str(self.c.berth(Mode::Root, &["nodes", "--json"]).ok()).unwrap();
        nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap().to_string(),
                    n["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn wait_for_nodes(&self, names: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up: Vec<String> = self
                .nodes()
                .into_iter()
                .filter(|(_, state)| state != "down")
                .map(|(n, _)| n)
                .collect();
            if up == names {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {names:?} did not register: {up:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The controller's and agents' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = format!("controller:\n{}", self.c.log());
        for a in &self.agents {
            all += &format!("\n{}:\n{}", a.name, a.log());
        }
        all
    }

    /// The runners of job `id` on each of its nodes (from `berth show`), once started.
    pub fn runners(&self, id: u64) -> Vec<u32> {
        let job = self.c.show(id);
        job["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| self.agent(n.as_str().unwrap()).wait_for_runner(id))
            .collect()
    }

    /// Kills the agent of `node` (`kill -9`) and starts it again.
    pub fn restart_agent(&mut self, node: &str) {
        let i = (self.agents.iter().position(|a| a.name == node))
            .unwrap_or_else(|| panic!("no agent on {node}"));
        self.agents[i].kill();
        self.agents[i] = Agent::start(&self.c, &self.hosts, i + 1);
    }

    pub fn agent(&self, node: &str) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.name == node)
            .unwrap_or_else(|| panic!("no agent on {node}"))
    }
}

/// A job's nodes, from its record (`berth show --json`), the batch host first.
pub fn nodes_of(job: &serde_json::Value) -> Vec<String> {
    job["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// What job `id` wrote to its output file (berth-ID.out of the test user), or nothing.
pub fn output(t: &TestCluster, id: u64) -> String {
    std::fs::read_to_string(t.c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out")))
        .unwrap_or_default()
}

/// Which of the cgroups of job `id`'s containers with these runners exist (under any
/// controller's `berth/`, named `<runner pid>-job<id>`). Job ids are only unique within one
/// test's controller, so the runners tell this test's containers from others'.
pub fn job_cgroups(id: u64, runners: &[u32]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for runner in runners {
        let name = format!("{runner}-job{id}");
        let exists = [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/cpuset",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/freezer",
            "/sys/fs/cgroup/pids",
            "/sys/fs/cgroup/cpu",
        ]
        .iter()
        .any(|root| Path::new(root).join("berth").join(&name).exists());
        if exists {
            found.push(name);
        }
    }
    found
}
