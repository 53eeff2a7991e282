//! The node agent's side of a batch job: the job's directory on this node (its script,
//! hostfile, launch file and result), its runner process, and signals and freezing through
//! that runner. The controller decides what runs where; the agent carries out on its own
//! node what the controller sends as a [`JobStart`]. In the all-in-one cluster (`berth up`)
//! the controller holds the agent in its own process.

use crate::runner::{self, JobLaunch, JobResult, JobTools};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A job the controller placed on this node, with everything the node needs to start it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobStart {
    /// The script's text, saved as the user's own.
    pub script: String,
    pub uid: u32,
    pub gid: u32,
    /// The job's hostfile: one line per slot (LSB_DJOB_HOSTFILE, PBS_NODEFILE).
    pub hostfile: String,
    /// The rest. The agent fills in what is the node's own: the script's path, berth's tools
    /// and step socket, and the hostfile variables.
    pub launch: JobLaunch,
}

/// The user and group this daemon runs as (root, usually), who owns what no job's user may
/// touch.
fn daemon_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Under the state directory: the temporary directories of jobs in containers (their
/// /tmp), and of jobs on the host (their TMPDIR); see [`NodeAgent::tmp_roots`].
const TMP_DIRS: &str = "tmp";
const HOST_TMP_DIRS: &str = "host-tmp";

/// What a node has for jobs: its CPUs (this process's affinity), memory and NVIDIA GPUs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub name: String,
    pub cpus: Vec<u32>,
    pub memory: u64,
    /// Device minors of /dev/nvidiaN.
    pub gpus: Vec<u32>,
    /// What the administrator says it has (`--features`), for jobs' `--constraint`.
    #[serde(default)]
    pub features: Vec<String>,
    /// What kind of machine it is.
    #[serde(default)]
    pub machine: Machine,
}

/// What kind of machine a node is (LSF's lshosts shows it): its architecture (uname's),
/// its CPUs' model, its swap space, and how its CPUs are laid out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub arch: String,
    pub model: String,
    pub swap: u64,
    #[serde(default)]
    pub topology: Topology,
}

impl Machine {
    /// This machine, its topology that of `cpus` (the node's).
    pub fn discover(cpus: &[u32]) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            arch: std::env::consts::ARCH.to_string(),
            model: proc_field(&cpuinfo, "model name").unwrap_or_default(),
            swap: meminfo("SwapTotal"),
            topology: Topology::discover(cpus),
        }
    }
}

/// How a node's CPUs are laid out, as Slurm describes a node (sinfo's S:C:T): sockets,
/// cores in each, hardware threads in each core. All 0: not known (a record from before).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Topology {
    pub sockets: u32,
    pub cores_per_socket: u32,
    pub threads_per_core: u32,
}

impl Topology {
    /// The layout of `cpus`, from the kernel's topology files; where it has none, each
    /// CPU a core of one socket.
    fn discover(cpus: &[u32]) -> Topology {
        let read = |cpu: u32, name: &str| {
            let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/{name}");
            std::fs::read_to_string(path)
                .ok()?
                .trim()
                .parse::<i64>()
                .ok()
        };
        let places: Option<Vec<(i64, i64)>> = cpus
            .iter()
            .map(|&c| Some((read(c, "physical_package_id")?, read(c, "core_id")?)))
            .collect();
        Topology::of(&places.unwrap_or_else(|| (0..cpus.len() as i64).map(|c| (0, c)).collect()))
    }

    /// The layout of CPUs at these (socket, core) places.
    fn of(places: &[(i64, i64)]) -> Topology {
        let sockets: BTreeSet<i64> = places.iter().map(|(s, _)| *s).collect();
        let cores: BTreeSet<(i64, i64)> = places.iter().copied().collect();
        let (n_sockets, n_cores) = (sockets.len().max(1) as u32, cores.len().max(1) as u32);
        Topology {
            sockets: n_sockets,
            cores_per_socket: n_cores.div_ceil(n_sockets),
            threads_per_core: (places.len().max(1) as u32).div_ceil(n_cores),
        }
    }
}

/// The value of `name` in a /proc file of `name: value` lines (cpuinfo, meminfo).
fn proc_field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_string())
    })
}

/// The size /proc/meminfo gives for `name` (`MemTotal`, `SwapTotal`), in bytes; 0 if it
/// gives none.
fn meminfo(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo_bytes(&text, name).unwrap_or(0)
}

/// The size `name` has in the text of /proc/meminfo, in bytes.
fn meminfo_bytes(text: &str, name: &str) -> Option<u64> {
    proc_field(text, name)
        .and_then(|kb| kb.trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// How busy a node's machine is, as its agent finds it at each heartbeat: what sinfo's
/// CPU_LOAD and FREE_MEM, `scontrol show node` and the controller's metrics show.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Health {
    /// The load averages over 1, 5 and 15 minutes (/proc/loadavg).
    pub load: [f64; 3],
    /// The memory available for new work without swapping, in bytes (MemAvailable).
    pub memory_available: u64,
}

impl Health {
    /// This machine's, now; `None` where /proc does not say.
    pub fn sample() -> Option<Health> {
        let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        Health::parse(&loadavg, &meminfo)
    }

    fn parse(loadavg: &str, meminfo: &str) -> Option<Health> {
        let mut averages = loadavg.split_whitespace().map(str::parse::<f64>);
        let mut next = || averages.next()?.ok().filter(|v| v.is_finite() && *v >= 0.0);
        Some(Health {
            load: [next()?, next()?, next()?],
            memory_available: meminfo_bytes(meminfo, "MemAvailable")?,
        })
    }
}

/// The CPUs this process may run on (its affinity), in order: what a node offers to jobs.
pub fn usable_cpus() -> Vec<u32> {
    let mut ids = BTreeSet::new();
    // SAFETY: sched_getaffinity fills the zeroed cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            for cpu in 0..libc::CPU_SETSIZE as usize {
                if libc::CPU_ISSET(cpu, &set) {
                    ids.insert(cpu as u32);
                }
            }
        }
    }
    if ids.is_empty() {
        ids.insert(0);
    }
    ids.into_iter().collect()
}

impl Resources {
    pub fn discover() -> Resources {
        let memory = meminfo("MemTotal");
        let name = hostname();
        // NVIDIA GPUs: /dev/nvidia0, /dev/nvidia1, ... (not nvidiactl or nvidia-uvm).
        let gpus: BTreeSet<u32> = std::fs::read_dir("/dev").map_or_else(
            |_| BTreeSet::new(),
            |d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name();
                        let digits = name.to_str()?.strip_prefix("nvidia")?;
                        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                            .then(|| digits.parse().ok())
                            .flatten()
                    })
                    .collect()
            },
        );
        let cpus = usable_cpus();
        Resources {
            name,
            machine: Machine::discover(&cpus),
            cpus,
            memory,
            gpus: gpus.into_iter().collect(),
            features: Vec::new(),
        }
    }
}

/// This host's name (the default name of its node), or `localhost`.
pub fn hostname() -> String {
    // SAFETY: uname fills the zeroed struct it is given; its nodename is NUL-terminated.
    let name = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        match libc::uname(&mut u) {
            0 => std::ffi::CStr::from_ptr(u.nodename.as_ptr())
                .to_string_lossy()
                .into_owned(),
            _ => String::new(),
        }
    };
    match name.is_empty() {
        true => "localhost".into(),
        false => name,
    }
}

/// A job's runner, as the agent started it.
#[derive(Debug)]
pub struct Started {
    pub pid: u32,
    ended: Ended,
}

#[derive(Debug)]
enum Ended {
    /// Forked by the launcher, which tells its end.
    Forked(crate::launcher::Forked),
    /// Started by the agent itself (the launcher could not be used).
    Child(std::process::Child),
}

impl Started {
    /// Waits until the runner has ended, or (forked by the launcher) reported its job's result
    /// before its clean-up (blocking); how it ended, in words.
    pub fn wait(self) -> String {
        use std::os::unix::process::ExitStatusExt;
        match self.ended {
            Ended::Child(mut child) => child
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string()),
            Ended::Forked(forked) => forked.wait().map_or_else(
                || "ended (its launcher had gone before: no exit status)".into(),
                |ended| std::process::ExitStatus::from_raw(ended.status).to_string(),
            ),
        }
    }
}

/// Stops the runner `pid` while `alive` says it is still that runner: SIGTERM, then SIGKILL
/// after [`STOP_GRACE`].
fn stop(pid: u32, alive: impl Fn() -> bool) {
    for (sig, wait) in [
        (libc::SIGTERM, STOP_GRACE),
        (libc::SIGKILL, std::time::Duration::ZERO),
    ] {
        if !alive() {
            return;
        }
        // SAFETY: kill(2) on a runner this agent started (checked just above).
        unsafe { libc::kill(pid as i32, sig) };
        let deadline = std::time::Instant::now() + wait;
        while alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// The file in a job's directory with its new time limit (seconds from its start), when
/// one was set while it ran.
pub const TIME_LIMIT_FILE: &str = "time_limit";

/// How often a node looks for the mounts of images removed from the store and for the
/// cgroups of runners that died without removing theirs.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a runner told to stop has before it is killed.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How many empty job directories a node keeps for its next jobs.
const SPARE_DIRS: usize = 64;

/// The name of the tmpfs a node's job files are on ([`NodeAgent::mount_jobs`]).
const JOBS_TMPFS: &str = "berth-jobs";

#[derive(Clone)]
pub struct NodeAgent {
    /// `jobs/<id>/` lives here.
    state_dir: PathBuf,
    /// The berth executable, run as `berth internal run-job` and bound into containers.
    berth: PathBuf,
    /// The directory of this node's step socket, which every job's container gets.
    step_dir: PathBuf,
    /// Forks the runners.
    launcher: std::sync::Arc<crate::launcher::Launcher>,
    /// Told of every runner started here (see [`NodeAgent::wait_runner`]).
    started: std::sync::Arc<tokio::sync::Notify>,
}

impl NodeAgent {
    pub fn new(state_dir: PathBuf, berth: PathBuf, step_dir: PathBuf) -> NodeAgent {
        NodeAgent {
            launcher: std::sync::Arc::new(crate::launcher::Launcher::new(berth.clone())),
            started: Default::default(),
            state_dir,
            berth,
            step_dir,
        }
    }

    pub fn step_dir(&self) -> &Path {
        &self.step_dir
    }

    /// What this node's containers get of berth: itself and its wrappers, the step socket,
    /// and where images are mounted.
    pub fn tools(&self) -> JobTools {
        JobTools {
            berth: self.berth.clone(),
            step_dir: self.step_dir.clone(),
            image_mounts: self.image_mounts(),
            wrappers: self.state_dir.join("tools"),
        }
    }

    /// Where this node keeps an image's squashfs file fetched from the controller, named by
    /// its SHA-256.
    pub fn image_cache(&self, sha256: &str) -> PathBuf {
        self.state_dir.join("images").join(format!("{sha256}.sqfs"))
    }

    /// The images in this node's cache ([`NodeAgent::image_cache`]), by their files' SHA-256.
    pub fn cached_images(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.state_dir.join("images")) else {
            return Vec::new();
        };
        let mut images: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let sha256 = name.strip_suffix(".sqfs")?;
                berth_image::is_sha256_hex(sha256).then(|| sha256.to_string())
            })
            .collect();
        images.sort();
        images
    }

    /// Deletes the file of the image `sha256` (a SHA-256, hex) from this node's cache, which
    /// the cluster's store no longer has. A job that runs in it keeps its mount; the upkeep
    /// unmounts it once none does, and the space is freed then.
    pub fn forget_image(&self, sha256: &str) {
        if !berth_image::is_sha256_hex(sha256) {
            return;
        }
        match std::fs::remove_file(self.image_cache(sha256)) {
            Ok(()) => berth_core::say!(
                "berth agent: removed the image file {} from this node's cache: the cluster's store no longer has it",
                &sha256[..12]
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => berth_core::say!("berth agent: cannot remove the image file {sha256}: {e}"),
        }
    }

    /// Where this node mounts each image once for all its jobs ([`berth_runtime::shared`]).
    pub fn image_mounts(&self) -> PathBuf {
        self.state_dir.join("mnt")
    }

    /// Unmounts the node's shared image mounts (at the daemon's start and stop): running
    /// jobs keep theirs, the next job of an image mounts it again.
    pub fn release_images(&self) {
        berth_runtime::shared::release_all(&self.image_mounts());
    }

    /// Every [`UPKEEP`], for as long as the daemon runs: unmounts the node's mounts of images
    /// removed from the store that no job uses any more (their space is held until then),
    /// removes the cgroups of runners that are gone (killed before they could) and the
    /// partial image files of fetches whose runners are gone. Spawn it on the daemon's
    /// runtime.
    pub async fn upkeep(self) {
        let mounts = self.image_mounts();
        let cache = self.state_dir.join("images");
        loop {
            let (mounts, cache) = (mounts.clone(), cache.clone());
            let _ = tokio::task::spawn_blocking(move || {
                runner::sweep_fetches(&cache);
                berth_runtime::shared::release_deleted(&mounts);
                if let Ok(layout) = berth_runtime::cgroup::Layout::detect() {
                    berth_runtime::cgroup::sweep_stale(&layout, berth_runtime::CGROUP_PARENT);
                }
            })
            .await;
            tokio::time::sleep(UPKEEP).await;
        }
    }

    /// The node's runner launcher, which forks its steps' processes too.
    pub fn launcher(&self) -> std::sync::Arc<crate::launcher::Launcher> {
        self.launcher.clone()
    }

    pub fn job_dir(&self, id: u64) -> PathBuf {
        self.jobs_dir().join(id.to_string())
    }

    /// Where the jobs' directories are: `jobs/` in the state directory.
    fn jobs_dir(&self) -> PathBuf {
        self.state_dir.join("jobs")
    }

    /// The empty directories of finished jobs, kept for the next ones ([`Self::forget`]), in
    /// the jobs' directory (so on the same file system, whichever that is).
    fn spare_dirs(&self) -> PathBuf {
        self.jobs_dir().join(".spare")
    }

    /// Puts the node's job files on a tmpfs of their own (at the daemon's start). Each job
    /// makes and removes half a dozen small files (its script, hostfile, launch file, runner
    /// record, environment and result): on a disk file system each new inode costs a search
    /// of its block group, and ext4 without a journal also skips every inode freed in the
    /// last half minute, one by one, so that at hundreds of jobs a second the files cost
    /// more than the containers. The files need not outlive the machine (its jobs do not).
    ///
    /// Mounted only in the machine's first mount namespace, where it stays for the next
    /// daemon, which finds the files of the jobs still running there (a tmpfs mounted in a
    /// namespace of the daemon's own, under `unshare -m` or a service's private one, would
    /// be out of the next daemon's sight, and those files with it: there they stay on disk).
    /// Left as it is where it is on a tmpfs already (an earlier daemon's, or a state
    /// directory on one), or where an earlier berth's job files are on the disk (a tmpfs
    /// would hide them: mounted at a later start).
    pub fn mount_jobs(&self) {
        let jobs = self.jobs_dir();
        // Where finished jobs' directories were kept before they moved beside them.
        let _ = std::fs::remove_dir_all(self.state_dir.join("spare"));
        if let Err(e) = std::fs::create_dir_all(&jobs) {
            berth_core::say!("berth: cannot create {}: {e}", jobs.display());
            return;
        }
        use berth_runtime::tmpfs;
        if tmpfs::on_tmpfs(&jobs) || !tmpfs::in_first_mount_namespace() {
            return;
        }
        if !self.job_ids().is_empty() {
            berth_core::say!(
                "berth: the files of jobs started by an earlier berth are in {}: they stay on disk until none is left there",
                jobs.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(self.spare_dirs());
        if let Err(e) = tmpfs::mount(&jobs, JOBS_TMPFS) {
            berth_core::say!(
                "berth: cannot mount a tmpfs on {} ({e}): the jobs' files stay on disk",
                jobs.display()
            );
        }
    }

    /// An id of this node's job files, made with them (`jobs/.id`, read at the daemon's
    /// start): a run recorded with another one is gone with its files (the machine
    /// restarted, and the tmpfs with it), which the controller then ends
    /// (`Controller::register`).
    pub fn files_id(&self) -> Result<String, String> {
        let path = self.jobs_dir().join(".id");
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        let id = runner::random_hex()?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, format!("{id}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(id)
    }

    /// At the daemon's clean stop: unmounts the jobs' tmpfs ([`Self::mount_jobs`]) unless it
    /// holds the files of jobs (still running, or whose end the controller has not taken):
    /// then it stays, for the next daemon.
    pub fn unmount_jobs(&self) {
        let Ok(jobs) = std::fs::canonicalize(self.jobs_dir()) else {
            return;
        };
        if !berth_runtime::tmpfs::mounted_at(&jobs, JOBS_TMPFS) {
            return;
        }
        let left = self.job_ids().len();
        if left > 0 {
            berth_core::say!(
                "berth: {} stays mounted: it holds the files of {left} job(s), for the next berth",
                jobs.display()
            );
        } else if let Err(e) = berth_runtime::tmpfs::unmount(&jobs) {
            berth_core::say!("berth: cannot unmount {}: {e}", jobs.display());
        }
    }

    fn launch_path(&self, id: u64) -> PathBuf {
        self.job_dir(id).join("launch.json")
    }

    /// The cgroup of a running job, under `berth/`: its runner names it `<pid>-job<id>`, so
    /// that a crashed runner's is swept like every berth cgroup (by [`NodeAgent::upkeep`]).
    pub fn cgroup_name(id: u64, runner: u32) -> String {
        format!("{runner}-job{id}")
    }

    /// Writes the job's files (the directory 0711, the script the user's and 0700, the launch
    /// file root's: it holds the user's environment) and starts its runner.
    pub fn start(&self, job: JobStart) -> Result<Started, String> {
        let id = job.launch.job_id;
        let dir = self.job_dir(id);
        // A runner of an earlier run of this job, still here (its node was cut off and the
        // job requeued meanwhile): it must not outlive its run, nor share the new one's files.
        if let Some(old) = self.runner_of(id) {
            berth_core::say!(
                "berth agent: stopping job {id}'s runner {old}, of an earlier run of it"
            );
            // Known by what its directory says now, before the new run's runner replaces it.
            let alive = self.liveness(id, old);
            std::thread::spawn(move || stop(old, alive));
        }
        fn at(p: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
            move |e| format!("{}: {e}", p.display())
        }
        NodeAgent::new_dir(&dir, &self.spare_dirs()).map_err(at(&dir))?;
        // Others may reach the files they know (the script, the hostfile), not list them.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(at(&dir))?;
        let mut launch = job.launch;
        // A job gets a directory for its temporary files on the node's disk, which goes when
        // the job is forgotten: in an image, its /tmp (as Slurm's job_container/tmpfs makes
        // one: what it writes there is not held in its memory), everyone's, sticky, as /tmp
        // is; on the host, its user's alone, in TMPDIR (as PBS's and LSF's jobs get one).
        // Either kind under a root of its own that no other user can reach into or list
        // (`Self::tmp_roots`); a spare one (root's, empty: `Self::forget`) given to its owner.
        let in_image = launch.image.is_some() || launch.image_source.is_some();
        let (root, owner, mode) = match in_image {
            true => (TMP_DIRS, daemon_ids(), 0o1777),
            false => (HOST_TMP_DIRS, (job.uid, job.gid), 0o700),
        };
        let tmp = self.tmp_dir(root, id);
        NodeAgent::new_dir(&tmp, &self.spare_tmp_dirs(root))
            .and_then(|()| std::os::unix::fs::chown(&tmp, Some(owner.0), Some(owner.1)))
            .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
            .map_err(at(&tmp))?;
        launch.tmp = Some(tmp);
        let script = dir.join("script");
        std::fs::write(&script, &job.script).map_err(at(&script))?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))
            .and_then(|_| std::os::unix::fs::chown(&script, Some(job.uid), Some(job.gid)))
            .map_err(at(&script))?;
        let hostfile = dir.join("hostfile");
        std::fs::write(&hostfile, &job.hostfile).map_err(at(&hostfile))?;
        // An image the controller serves: this node's copy, in its cache (the runner fetches
        // it if it is not there yet).
        if let Some(source) = &launch.image_source {
            launch.image = Some(self.image_cache(&source.sha256));
        }
        let hostfile_seen = match launch.image {
            Some(_) => format!("{}/hostfile", runner::JOB_DIR_IN_CONTAINER),
            None => hostfile.to_string_lossy().into_owned(),
        };
        for var in ["LSB_DJOB_HOSTFILE", "PBS_NODEFILE", "BERTH_HOSTFILE"] {
            launch.env.push((var.to_string(), hostfile_seen.clone()));
        }
        launch.script = script;
        launch.tools = Some(self.tools());
        let launch_path = self.launch_path(id);
        write_private(
            &launch_path,
            &serde_json::to_vec_pretty(&launch).expect("launch serialises"),
        )?;
        let (pid, start, ended) = match self.launcher.fork(&launch_path) {
            Ok(forked) => (forked.pid, Some(forked.start), Ended::Forked(forked)),
            Err(e) => {
                berth_core::say!(
                    "berth agent: {e}: starting job {id}'s runner without the launcher"
                );
                let child = std::process::Command::new(&self.berth)
                    .args(["internal", "run-job"])
                    .arg(&launch_path)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    // Its complaints (until it takes the job's output files) go to the
                    // agent's log.
                    .stderr(std::process::Stdio::inherit())
                    .spawn()
                    .map_err(|e| format!("cannot run {}: {e}", self.berth.display()))?;
                (child.id(), None, Ended::Child(child))
            }
        };
        // For a restarted agent, which must find its runners again (see `left`), and tell
        // them from later processes with their pids: a forked runner by its start time (the
        // launcher recorded it), one the agent exec'd by its command line.
        if start.is_none() {
            if let Err(e) = runner::record_runner(&launch_path, pid, None) {
                berth_core::say!(
                    "berth agent: job {id}: {e}: a restarted agent will not find its runner"
                );
            }
        }
        self.started.notify_waiters();
        Ok(Started { pid, ended })
    }

    /// The jobs an earlier agent process started here, found from their directories: each
    /// with its runner's pid and whether that runner still runs. A restarted `berth agent`
    /// watches the live ones and reports the others' ends (again: the controller ignores the
    /// ends of jobs it has already finished).
    pub fn left(&self) -> Vec<(u64, u32, bool)> {
        let mut found: Vec<(u64, u32, bool)> = self
            .job_ids()
            .into_iter()
            .filter_map(|id| {
                let pid = self.recorded_runner(id)?;
                Some((id, pid, self.runner_alive(id, pid)))
            })
            .collect();
        found.sort_unstable();
        found
    }

    /// Which run of job `id` its files here are of (its launch file says; `None` for one
    /// written before 2026-12-06).
    pub fn run_of(&self, id: u64) -> Option<u32> {
        #[derive(Deserialize)]
        struct Run {
            run: Option<u32>,
        }
        let text = std::fs::read(self.launch_path(id)).ok()?;
        serde_json::from_slice::<Run>(&text).ok()?.run
    }

    /// The jobs with a directory here, and their directories.
    pub fn job_dirs(&self) -> Vec<(u64, PathBuf)> {
        let ids = self.job_ids().into_iter();
        ids.map(|id| (id, self.job_dir(id))).collect()
    }

    /// The jobs that have a directory here.
    pub fn job_ids(&self) -> Vec<u64> {
        std::fs::read_dir(self.jobs_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The runner this node started for job `id`, as its directory records it (alive or
    /// not): none, and the job never had one here.
    pub fn recorded_runner(&self, id: u64) -> Option<u32> {
        self.recorded(id).map(|(pid, _)| pid)
    }

    /// `runner.pid`: the runner's pid and, for a forked one, its start time.
    fn recorded(&self, id: u64) -> Option<(u32, Option<u64>)> {
        let text = std::fs::read_to_string(runner::runner_record(&self.launch_path(id))).ok()?;
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        Some((pid, words.next().and_then(|w| w.parse().ok())))
    }

    /// The runner of job `id` on this node, if it runs here.
    pub fn runner_of(&self, id: u64) -> Option<u32> {
        self.recorded_runner(id)
            .filter(|&pid| self.runner_alive(id, pid))
    }

    /// Whether job `id`'s script has ended here (its runner is ending it: its steps are being
    /// killed), so that no step may start in it any more.
    pub fn script_ended(&self, id: u64) -> bool {
        self.recorded_runner(id)
            .is_some_and(|pid| runner::script_ended_path(&self.job_dir(id), pid).exists())
    }

    /// Refuses a step in job `id` once its script has ended here, as Slurm refuses steps in a
    /// completing job.
    pub fn check_not_ending(&self, id: u64) -> Result<(), String> {
        match self.script_ended(id) {
            true => Err(format!(
                "job {id} is completing (its script has ended): no step starts in it"
            )),
            false => Ok(()),
        }
    }

    /// Fills in the cgroup of a step's grant where the controller could not: the job's
    /// runner here was still starting when it granted the step (the node knows it, soon).
    pub async fn complete_grant(
        &self,
        job: u64,
        grant: &mut crate::step::server::StepGrant,
    ) -> Result<(), String> {
        if grant.cgroup.is_empty() && grant.parts.iter().any(|p| p.url.is_none()) {
            let runner = self
                .wait_runner(job)
                .await
                .ok_or_else(|| format!("job {job} has no container on node {}", grant.node))?;
            grant.cgroup = NodeAgent::cgroup_name(job, runner);
        }
        if grant.image.is_some() {
            grant.tools = Some(self.tools());
        }
        Ok(())
    }

    /// The runner of job `id` on this node, waited for a while if its start is still on
    /// its way (a step may come as soon as the job's script runs on another node).
    pub async fn wait_runner(&self, id: u64) -> Option<u32> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            // Asked for before looking: a runner started after the look still wakes this.
            let started = self.started.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            if let Some(pid) = self.runner_of(id) {
                return Some(pid);
            }
            if tokio::time::timeout_at(deadline, started).await.is_err() {
                return self.runner_of(id);
            }
        }
    }

    /// Forgets the run of job `id` whose runner was `runner`, once the controller has its
    /// end: unless the job runs here again (that was an earlier run's runner, and the files
    /// are the new run's).
    pub fn forget_run(&self, id: u64, runner: u32) {
        match self.recorded_runner(id) {
            Some(pid) if pid != runner && self.runner_alive(id, pid) => {}
            _ => self.forget(id),
        }
    }

    /// Forgets a job whose end the controller has: its files go (its output files are the
    /// user's, elsewhere), and its directory and its /tmp, emptied, are kept for next jobs.
    pub fn forget(&self, id: u64) {
        let tmp = |root| (self.tmp_dir(root, id), self.spare_tmp_dirs(root), true);
        let (uid, gid) = daemon_ids();
        for (dir, spare, locked) in [
            (self.job_dir(id), self.spare_dirs(), false),
            tmp(TMP_DIRS),
            tmp(HOST_TMP_DIRS),
        ] {
            // A job's temporary directory is made the daemon's alone before it is emptied:
            // nothing another process of its user's adds meanwhile reaches the next job.
            let lock = || {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .and_then(|()| std::os::unix::fs::chown(&dir, Some(uid), Some(gid)))
            };
            if locked && lock().is_err() {
                continue;
            }
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
            }
            let _ = std::fs::create_dir_all(&spare);
            let kept = std::fs::read_dir(&spare).map_or(SPARE_DIRS, |e| e.count());
            if kept >= SPARE_DIRS || std::fs::rename(&dir, spare.join(id.to_string())).is_err() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    /// A job's directory `dir`: an empty one a finished job left in `spare` (renamed), or a
    /// new one. Making a directory costs far more than renaming one on some file systems
    /// (ext4 looks through its block groups for where to put it; without a journal it also
    /// skips every inode freed in the last half minute, one by one: a millisecond here at
    /// 100 jobs/s).
    fn new_dir(dir: &Path, spare: &Path) -> std::io::Result<()> {
        let spare = std::fs::read_dir(spare)
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(Result::ok);
        if let Some(spare) = spare {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Another job may have taken it meanwhile: then a new one.
            if std::fs::rename(spare.path(), dir).is_ok() {
                return Ok(());
            }
        }
        std::fs::create_dir_all(dir)
    }

    /// A job's own directory for temporary files under `root` ([`TMP_DIRS`] or
    /// [`HOST_TMP_DIRS`]): in the state directory, on its disk (the jobs' directories are on
    /// a tmpfs, whose files would be held in memory: [`Self::mount_jobs`]).
    fn tmp_dir(&self, root: &str, id: u64) -> PathBuf {
        self.state_dir.join(root).join(id.to_string())
    }

    /// The emptied temporary directories of finished jobs under `root`, kept for the next
    /// ones.
    fn spare_tmp_dirs(&self, root: &str) -> PathBuf {
        self.state_dir.join(root).join(".spare")
    }

    /// Makes the roots of jobs' temporary directories (at the daemon's start), so that no
    /// other user reaches one: containers' (bound at /tmp, sticky and everyone's inside)
    /// under a root only root may enter; host jobs' (each its user's alone, named in
    /// TMPDIR) under one anybody may pass through but not list; the spare ones root's
    /// alone.
    pub fn tmp_roots(&self) {
        for (root, mode) in [(TMP_DIRS, 0o700), (HOST_TMP_DIRS, 0o711)] {
            let spare = self.spare_tmp_dirs(root);
            let made = std::fs::create_dir_all(&spare)
                .and_then(|()| {
                    std::fs::set_permissions(&spare, std::fs::Permissions::from_mode(0o700))
                })
                .and_then(|()| {
                    std::fs::set_permissions(
                        self.state_dir.join(root),
                        std::fs::Permissions::from_mode(mode),
                    )
                });
            if let Err(e) = made {
                berth_core::say!(
                    "berth: cannot prepare {}: {e}",
                    self.state_dir.join(root).display()
                );
            }
        }
    }

    /// How the job ended, as its runner wrote it; `None` if it wrote nothing (it was killed,
    /// or never started the job). A file that is there but cannot be read for now (the
    /// process out of descriptors) is tried again for a second: a job's result is not to be
    /// lost to a passing shortage.
    pub fn result(&self, id: u64) -> Option<JobResult> {
        let path = runner::result_path(&self.launch_path(id));
        let mut tries = 0;
        let text = loop {
            match std::fs::read(&path) {
                Ok(text) => break text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(_) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => {
                    berth_core::say!("berth: cannot read {}: {e}", path.display());
                    return None;
                }
            }
        };
        serde_json::from_slice(&text).ok()
    }

    /// Whether `pid` is still job `id`'s runner (not a reused pid).
    pub fn runner_alive(&self, id: u64, pid: u32) -> bool {
        self.liveness(id, pid)()
    }

    /// Whether `pid` is still job `id`'s runner, as a check that holds whatever the job's
    /// directory says later: a forked runner is known by the start time `runner.pid` records
    /// for it now, one the agent exec'd by its command line.
    fn liveness(&self, id: u64, pid: u32) -> impl Fn() -> bool + Send + 'static {
        enum Known {
            /// Another run's forked runner is recorded: `pid` is not this job's runner.
            NotRecorded,
            /// Forked by the launcher at this start time.
            Forked(u64),
            /// Exec'd by the agent: its command line names the launch file.
            Execd(String),
        }
        let known = match self.recorded(id) {
            Some((recorded, Some(start))) if recorded == pid => Known::Forked(start),
            Some((_, Some(_))) => Known::NotRecorded,
            _ => Known::Execd(self.launch_path(id).to_string_lossy().into_owned()),
        };
        move || match &known {
            Known::NotRecorded => false,
            Known::Forked(start) => crate::launcher::start_time(pid) == Some(*start),
            Known::Execd(launch) => std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(launch)),
        }
    }

    /// Sends `sig` to job `id` through its runner, which forwards it to the job (a SIGKILL of
    /// the runner takes the job with it).
    pub fn signal(&self, id: u64, runner: u32, sig: i32) {
        if self.runner_alive(id, runner) {
            // SAFETY: kill(2) on the runner process this agent started (checked just above).
            unsafe { libc::kill(runner as i32, sig) };
        }
    }

    /// Cancels job `id` here: its runner gets SIGTERM, which it passes on to the batch
    /// shell, and says in the job's error file, once the shell has ended, that the job was
    /// cancelled now, `why` after that (slurmstepd's `*** JOB 42 ON n1 CANCELLED AT TIME
    /// ***`), from what this leaves in the job's directory ([`runner::CANCELLED_FILE`]).
    /// A batch shell still there at the end of the job's KillWait is killed (SIGKILL, as
    /// Slurm's): one that ignores or traps SIGTERM does not keep the job running; its
    /// runner then ends the job's steps and what is left in its cgroup.
    pub fn cancel(&self, id: u64, runner: u32, why: &str) {
        let said = format!("{}\n{why}", runner::now());
        let _ = std::fs::write(self.job_dir(id).join(runner::CANCELLED_FILE), said);
        // Slurm's: SIGTERM, SIGKILL after KillWait; LSF's (bkill): SIGINT, SIGTERM, SIGKILL,
        // each ten seconds after the one before.
        let gap = runner::LSF_KILL_GAP;
        let (first, then, last) = match self.kill_wait_of(id) {
            (_, true) => (libc::SIGINT, Some(libc::SIGTERM), gap),
            (grace, false) => (libc::SIGTERM, None, std::time::Duration::from_secs(grace)),
        };
        self.signal(id, runner, first);
        let alive = self.liveness(id, runner);
        let agent = self.clone();
        std::thread::spawn(move || {
            if let Some(sig) = then {
                std::thread::sleep(gap);
                if alive() {
                    agent.signal(id, runner, sig);
                }
            }
            std::thread::sleep(last);
            if alive() {
                kill_batch_shell(runner, libc::SIGKILL);
            }
        });
    }

    /// Job `id`'s KillWait, seconds, and whether it is an LSF job, as its launch file says.
    fn kill_wait_of(&self, id: u64) -> (u64, bool) {
        #[derive(Deserialize)]
        struct Grace {
            grace: u64,
            #[serde(default)]
            lsf: bool,
        }
        let text = std::fs::read(self.launch_path(id)).unwrap_or_default();
        serde_json::from_slice::<Grace>(&text)
            .map_or((runner::DEFAULT_KILL_WAIT, false), |g| (g.grace, g.lsf))
    }

    /// Sends `sig` to job `id`'s processes here that `target` names: the batch shell (its
    /// runner passes it on; also `None`), its steps' (those outside the batch shell's process
    /// group, or the container's holder's on another node), or all of them (`Full`);
    /// berth's own step processes pass it on to their tasks themselves.
    pub fn signal_to(
        &self,
        id: u64,
        runner: u32,
        sig: i32,
        target: Option<berth_api::SignalTarget>,
    ) {
        use berth_api::SignalTarget;
        use berth_runtime::{cgroup, WarnTo};
        let uncatchable = matches!(sig, libc::SIGSTOP | libc::SIGKILL);
        let to = match target {
            // The runner passes a signal on to the batch shell; one it cannot catch goes
            // to the shell itself (else it would stop or kill the runner, not the job).
            None | Some(SignalTarget::Batch) if !uncatchable => {
                return self.signal(id, runner, sig)
            }
            None | Some(SignalTarget::Batch) => None,
            Some(SignalTarget::Steps) => Some(WarnTo::OthersInCgroup),
            Some(SignalTarget::Full) => Some(WarnTo::Cgroup),
        };
        if !self.runner_alive(id, runner) {
            return;
        }
        let program = batch_shell(runner);
        let Some(to) = to else {
            return kill_batch_shell(runner, sig);
        };
        let Ok(layout) = cgroup::Layout::detect() else {
            return;
        };
        let dirs = cgroup::existing_dirs(
            &layout,
            berth_runtime::CGROUP_PARENT,
            &NodeAgent::cgroup_name(id, runner),
        );
        berth_runtime::signal_processes(
            cgroup::pids_in(dirs.iter().map(PathBuf::as_path)),
            program,
            sig,
            to,
        );
    }

    /// Gives running job `id` a new time limit, `seconds` from its start: written into its
    /// directory's [`TIME_LIMIT_FILE`], which its runner reads on [`berth_runtime::limit_signal`].
    pub fn set_limit(&self, id: u64, runner: u32, seconds: u64) -> Result<(), String> {
        let dir = self.job_dir(id);
        let path = dir.join(TIME_LIMIT_FILE);
        let tmp = dir.join(format!("{TIME_LIMIT_FILE}.new"));
        std::fs::write(&tmp, format!("{seconds}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if !self.runner_alive(id, runner) {
            return Err(format!("job {id}'s runner {runner} is not running here"));
        }
        self.signal(id, runner, berth_runtime::limit_signal());
        Ok(())
    }

    /// Stops job `id`'s runner: SIGTERM, which it passes on to the job before removing the
    /// job's container and cgroup, and SIGKILL if it is still there after [`STOP_GRACE`].
    /// Blocks until then.
    pub fn stop_runner(&self, id: u64, runner: u32) {
        stop(runner, self.liveness(id, runner));
    }

    /// What running job `id` has used here so far, from its cgroup (`node` and `tasks` left
    /// for the controller).
    pub fn usage(&self, id: u64, runner: u32) -> Result<berth_api::NodeUsage, String> {
        use berth_runtime::cgroup;
        let layout = cgroup::Layout::detect().map_err(|e| e.to_string())?;
        let name = NodeAgent::cgroup_name(id, runner);
        let usage = cgroup::usage_existing(&layout, berth_runtime::CGROUP_PARENT, &name)
            .ok_or_else(|| format!("job {id} has no cgroup here ({name}): has it just ended?"))?;
        Ok(berth_api::NodeUsage {
            node: String::new(),
            cpu_seconds: usage.cpu_usec.map(|us| us as f64 / 1e6),
            memory_bytes: usage.memory_bytes,
            max_memory_bytes: usage.max_rss_bytes,
            tasks: 0,
            steps: crate::step::running_usage(&self.job_dir(id)),
        })
    }

    /// Freezes or thaws every process of job `id` at once (its cgroup's freezer). A job
    /// whose runner is still making its cgroup (it has just started: on v1 its hierarchies'
    /// directories come one after another, the freezer's among the last) is waited for, a
    /// while.
    pub fn freeze(&self, id: u64, runner: u32, frozen: bool) -> Result<(), String> {
        use berth_runtime::cgroup;
        let layout = cgroup::Layout::detect().map_err(|e| e.to_string())?;
        let name = NodeAgent::cgroup_name(id, runner);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let done =
                cgroup::freeze_existing(&layout, berth_runtime::CGROUP_PARENT, &name, frozen);
            let missing = matches!(&done, Err(cgroup::CgroupError::Write { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound);
            if !missing || std::time::Instant::now() > deadline || !self.runner_alive(id, runner) {
                return done.map_err(|e| e.to_string());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A new file only root may read (mode 0600).
fn private_file(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    private_file(path)?
        .write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The batch shell of job runner `runner` (the container's program, its child), or 0.
fn batch_shell(runner: u32) -> libc::pid_t {
    std::fs::read_to_string(format!("/proc/{runner}/task/{runner}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Sends `sig` to the batch shell of job runner `runner` itself (one the runner would not
/// pass on: it cannot catch it), which the caller knows to be alive.
fn kill_batch_shell(runner: u32, sig: i32) {
    let program = batch_shell(runner);
    if program > 0 {
        // SAFETY: kill(2) of the runner's child, not reaped while the runner lives.
        unsafe { libc::kill(program, sig) };
    }
}

#[cfg(test)]
mod tests {
    use super::{usable_cpus, Health, Topology};

    #[test]
    fn a_machines_layout_is_counted_from_its_cpus_places() {
        let t = |places: &[(i64, i64)]| {
            let t = Topology::of(places);
            [t.sockets, t.cores_per_socket, t.threads_per_core]
        };
        // Two sockets of two cores with two threads each; one core of one socket alone;
        // none known.
        let eight = [
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
        ];
        assert_eq!(t(&eight), [2, 2, 2]);
        assert_eq!(t(&[(0, 3)]), [1, 1, 1]);
        assert_eq!(t(&[]), [1, 1, 1]);
        // This machine's CPUs: room for all of them in its layout.
        let cpus = usable_cpus();
        let here = Topology::discover(&cpus);
        assert!(here.sockets * here.cores_per_socket * here.threads_per_core >= cpus.len() as u32);
    }

    #[test]
    fn health_is_read_from_loadavg_and_meminfo() {
        let meminfo = "MemTotal:       24674428 kB\nMemFree:        20000000 kB\nMemAvailable:   22000000 kB\n";
        let health = Health::parse("0.52 1.07 2.50 3/245 12345\n", meminfo).unwrap();
        assert_eq!(health.load, [0.52, 1.07, 2.5]);
        assert_eq!(health.memory_available, 22_000_000 * 1024);
        // A kernel that says less (before MemAvailable, 3.14), or a file cut short: none.
        assert_eq!(
            Health::parse("0.52 1.07 2.50 3/245 12345\n", "MemTotal: 1 kB\n"),
            None
        );
        assert_eq!(Health::parse("0.52 1.07\n", meminfo), None);
        assert_eq!(Health::parse("0.52 x 2.50\n", meminfo), None);
    }
}
