//! A controller (`berth up`) for one test: its own state directory, socket and image store.

use crate::support::*;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (the kernel's pick, released for a daemon to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops a daemon as an init system would: SIGTERM, then SIGKILL if it has not ended after
/// `grace`. Whether it ended on SIGTERM.
pub fn terminate(child: &mut std::process::Child, grace: std::time::Duration) -> bool {
    // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + grace;
    while matches!(child.try_wait(), Ok(None)) {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

pub struct Cluster {
    pub f: Fixture,
    pub socket: PathBuf,
    pub state: PathBuf,
    /// More `berth up` arguments (`--listen ...`).
    pub up_args: Vec<String>,
    /// `up` (controller and local agent), or `controller` (the controller alone).
    pub command: &'static str,
    controller: Option<Child>,
}

impl Cluster {
    pub fn start() -> Option<Cluster> {
        Cluster::start_with_config(None)
    }

    /// A cluster whose controller reads `config` (berth.toml text).
    pub fn start_with_config(config: Option<&str>) -> Option<Cluster> {
        Cluster::start_with(config, &[])
    }

    /// `berth controller` alone (no local node), with `up_args` (its --listen).
    pub fn start_controller(config: Option<&str>, up_args: &[&str]) -> Option<Cluster> {
        let mut c = Cluster::prepare(config, up_args)?;
        c.command = "controller";
        c.up();
        Some(c)
    }

    /// A cluster whose `berth up` gets `up_args` too.
    pub fn start_with(config: Option<&str>, up_args: &[&str]) -> Option<Cluster> {
        let mut c = Cluster::prepare(config, up_args)?;
        c.up();
        Some(c)
    }

    /// A cluster's files and image, its controller not started yet ([`Cluster::up`]).
    pub fn prepare(config: Option<&str>, up_args: &[&str]) -> Option<Cluster> {
        let mut f = Fixture::new()?;
        if let Some(text) = config {
            f.write_config(text);
        }
        f.import(Mode::Root);
        let socket = f.path("berth.sock");
        let state = f.path("state");
        let c = Cluster {
            f,
            socket,
            state,
            up_args: up_args.iter().map(|a| a.to_string()).collect(),
            command: "up",
            controller: None,
        };
        Some(c)
    }

    /// Starts the controller and waits until it answers.
    pub fn up(&mut self) {
        self.spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "berth up did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the controller (which may stand by, answering nothing, where another leads).
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.f.path("controller.log")).unwrap();
        let mut cmd = Command::new(&self.f.bin);
        match &self.f.config {
            Some(config) => cmd.env("BERTH_CONFIG", config),
            None => cmd.env_remove("BERTH_CONFIG"),
        };
        let child = cmd
            .args([self.command, "--state-dir"])
            .arg(&self.state)
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.up_args)
            .env("BERTH_STORE", self.f.path("store-root"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.controller = Some(child);
    }

    /// Stops the controller as `berth down` or an init system would (SIGTERM), and waits
    /// for it: it unmounts the node's shared image mounts no job uses (jobs keep running).
    pub fn stop(&mut self) {
        let Some(mut child) = self.controller.take() else {
            return;
        };
        let stopped = terminate(&mut child, Duration::from_secs(20));
        assert!(
            stopped,
            "berth {} did not stop on SIGTERM: {}",
            self.command,
            self.log()
        );
    }

    /// The pid of `berth up` (or `berth controller`).
    /// The node's runner launcher (`berth internal launcher`, a child of `berth up`), if one
    /// runs.
    pub fn launcher(&self) -> Option<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let parent = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').nth(1)?.parse::<u32>().ok());
                parent == Some(self.pid())
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|cmd| cmd.ends_with(b"internal\0launcher\0"))
            })
    }

    pub fn pid(&self) -> u32 {
        self.controller.as_ref().expect("running").id()
    }

    /// SIGKILLs the controller (jobs keep running).
    pub fn kill(&mut self) {
        let mut child = self.controller.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.f.path("controller.log")).unwrap_or_default()
    }

    /// A token for the API over TCP for `mode`'s user (`berth token`, good for ten minutes).
    pub fn token(&self, mode: Mode) -> String {
        let made = self.berth(mode, &["token", "--lifetime", "0:10"]);
        let token = made
            .ok()
            .trim()
            .strip_prefix("BERTH_TOKEN=")
            .map(String::from);
        token.unwrap_or_else(|| panic!("berth token said: {}", made.stdout))
    }

    /// A berth client command as `mode`'s user (Root or Rootless = the test user).
    pub fn berth(&self, mode: Mode, args: &[&str]) -> Out {
        self.berth_with(mode, args, &[])
    }

    /// [`Cluster::berth`] with `env` added to the command's environment.
    pub fn berth_with(&self, mode: Mode, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = self.f.cmd(mode, args);
        cmd.env("BERTH_SOCKET", &self.socket)
            .envs(env.iter().copied());
        Out::from_output(cmd.stdin(Stdio::null()).output().unwrap())
    }

    /// Writes `script` into `mode`'s working directory and submits it; returns the job id.
    pub fn submit(&self, mode: Mode, name: &str, script: &str, options: &[&str]) -> u64 {
        let out = self.try_submit(mode, name, script, options);
        out.ok()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a job id: {}", out.stdout))
    }

    /// Submits, as the test user, a job in the busybox image (`directives` on its #BERTH line)
    /// that holds its place (`exec sleep 300`), and waits until its script has started.
    pub fn submit_holding(&self, name: &str, directives: &str, options: &[&str]) -> u64 {
        let script = format!(
            "#!/bin/sh\n#BERTH --image busybox {directives}\necho started\nexec sleep 300\n"
        );
        let id = self.submit(Mode::Rootless, name, &script, options);
        self.wait_for_output(id, "started");
        id
    }

    pub fn try_submit(&self, mode: Mode, name: &str, script: &str, options: &[&str]) -> Out {
        self.try_submit_with(mode, name, script, options, &[])
    }

    /// [`Cluster::try_submit`] with `env` in the submitting command's environment.
    pub fn try_submit_with(
        &self,
        mode: Mode,
        name: &str,
        script: &str,
        options: &[&str],
        env: &[(&str, &str)],
    ) -> Out {
        let path = self.f.cwd(mode).join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let mut args = vec!["submit", "--parsable"];
        args.extend_from_slice(options);
        args.push(path.to_str().unwrap());
        self.berth_with(mode, &args, env)
    }

    /// Imports a second image into the cluster's store, `name`: the busybox tree with
    /// /etc/marker saying `name`, /etc/secret, which only root may read, and /opt/shared,
    /// which every user may write to (with /opt/shared/old, the test user's).
    pub fn import_marked(&self, name: &str) {
        let tree = self.f.copy_rootfs(name);
        std::fs::write(tree.join("etc/marker"), format!("{name}\n")).unwrap();
        // A file only root may read, and a directory every user may write to, as images
        // make one for their users' tools.
        let secret = tree.join("etc/secret");
        std::fs::write(&secret, "root's\n").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let shared = tree.join("opt/shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(
            &shared,
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        // One of the test user's there, which its containers may remove.
        std::fs::write(shared.join("old"), "old\n").unwrap();
        let user = &self.f.user;
        std::os::unix::fs::chown(shared.join("old"), Some(user.uid), Some(user.gid)).unwrap();
        self.f
            .berth(
                Mode::Root,
                &["image", "import", tree.to_str().unwrap(), "--name", name],
            )
            .ok();
    }

    /// `berth show JOB --json`: a job's id, or `ID_INDEX` for an array's task.
    pub fn show(&self, job: impl std::fmt::Display) -> serde_json::Value {
        serde_json::from_str(
            self.berth(Mode::Root, &["show", &job.to_string(), "--json"])
                .ok(),
        )
        .unwrap()
    }

    /// Job `id`'s record once a scheduling pass has looked at it (the pass its submission
    /// asked for runs after the answer): its reason is no longer None, or 4 s have passed.
    pub fn show_looked_at(&self, id: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(4);
        loop {
            let job = self.show(id);
            if job["reason"] != "None" || Instant::now() > deadline {
                return job;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until job `id` is in one of `states`; returns its record.
    pub fn wait_for(&self, id: u64, states: &[&str]) -> serde_json::Value {
        let deadline = Instant::now() + patience(30);
        loop {
            let job = self.show(id);
            if states.contains(&job["state"].as_str().unwrap()) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never reached {states:?}: {job}\ncontroller log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until job `id` has ended, asserts that it completed, and returns its record.
    pub fn completed(&self, id: u64) -> serde_json::Value {
        let job = self.wait_for(
            id,
            &[
                "COMPLETED",
                "FAILED",
                "CANCELLED",
                "TIMEOUT",
                "OUT_OF_MEMORY",
                "NODE_FAIL",
            ],
        );
        assert_eq!(
            job["state"],
            "COMPLETED",
            "{job}\ncontroller log: {}",
            self.log()
        );
        job
    }

    /// Waits until job `id`'s output file (berth-ID.out of the test user) contains `text`:
    /// the script runs, not just its container being set up.
    pub fn wait_for_output(&self, id: u64, text: &str) {
        let out = self.f.cwd(Mode::Rootless).join(format!("berth-{id}.out"));
        let deadline = Instant::now() + patience(30);
        while !std::fs::read_to_string(&out).is_ok_and(|o| o.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in its output: {:?}\n{}",
                std::fs::read_to_string(&out),
                self.show(id)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What `GET /metrics` answers (its body), and each sample of it by its name and
    /// labels as written (`berth_node_cpus{node="n1"}`).
    pub fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let answer = self.raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        let lint = promtool(&["check", "metrics"], Some(body));
        assert!(
            lint.status.success(),
            "promtool check metrics: {lint:?}\n{body}"
        );
        samples(body)
    }

    /// Sends raw bytes to the API and returns the raw answer.
    pub fn raw(&self, request: &[u8]) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.controller.is_some() {
            // Jobs outlive their controller by design: end this test's own, so that a test
            // that failed half-way leaves nothing running.
            end_jobs(&self.f.bin, &self.socket);
        }
        if !std::thread::panicking() {
            self.stop();
        }
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Cancels every job of the controller on `socket` (as root, with the test's `bin`) and
/// waits up to 10 s for them to end.
pub fn end_jobs(bin: &std::path::Path, socket: &std::path::Path) {
    let berth = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .env("BERTH_SOCKET", socket)
            .stdin(Stdio::null())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let ids: Vec<String> =
        serde_json::from_str::<serde_json::Value>(&berth(&["queue", "--json", "-r"]))
            .ok()
            .and_then(|q| q.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|j| j["id"].as_u64().map(|id| id.to_string()))
            .collect();
    if ids.is_empty() {
        return;
    }
    let mut args = vec!["cancel"];
    args.extend(ids.iter().map(String::as_str));
    berth(&args);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && berth(&["queue", "--json"]).trim() != "[]" {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The samples of a Prometheus text exposition, by name and labels; every line that is not
/// a comment must be one.
pub fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            (
                key.to_string(),
                value.parse().unwrap_or_else(|_| panic!("{l}")),
            )
        })
        .collect()
}

/// Runs Prometheus's promtool (unpacked by scripts/setup) with `input` on its stdin.
/// Prometheus's promtool (Debian's, unpacked by scripts/setup).
pub const PROMTOOL: &str = "/opt/berth-test/prometheus/promtool";

pub fn promtool(args: &[&str], input: Option<&str>) -> std::process::Output {
    let tool = PROMTOOL;
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e} (scripts/setup unpacks it)"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The job of a `berth alloc` allocation, from what it said (`Granted job allocation 42`).
pub fn granted(stderr: &str) -> u64 {
    stderr
        .split("Granted job allocation ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no allocation granted: {stderr}"))
}

/// The first line `child` writes on its (piped) standard output.
pub fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    let out = child.stdout.as_mut().expect("standard output piped");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    line
}
