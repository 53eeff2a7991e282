//! Resource limits for one container through Linux cgroups, v1 and v2 behind one type.
//!
//! Owns every cgroup file berth touches: detecting the layout from mountinfo, creating one
//! container's directories under a shared parent (such as `berth`), writing the cpu, cpuset,
//! memory and pids limits, moving processes in, freezing, reading accounting and OOM kills, and
//! tearing down, including the leftovers of crashed runs. It is plain file I/O below the mount
//! points the [`Layout`] names, so unit tests point it at a directory tree that mimics the kernel's.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use thiserror::Error;

mod step;
pub use step::{step_name, StepAccounting, StepCgroup};

/// CFS period in microseconds; a limit of `cpus` CPUs is a quota of `cpus * CPU_PERIOD_US`.
const CPU_PERIOD_US: u64 = 100_000;
/// kernel/sched/core.c rejects quotas below 1 ms (`min_cfs_quota_period`) with EINVAL.
const CPU_MIN_QUOTA_US: u64 = 1_000;
/// How many times `destroy` retries an rmdir answered EBUSY (about 3 s in all).
const RMDIR_TRIES: u32 = 20;
/// Controller names a v1 `cgroup` mount can list among its super options; anything else there
/// (`rw`, `name=systemd`, `clone_children`, ...) is an option, not a controller.
const V1_CONTROLLERS: &str = "blkio cpu cpuacct cpuset devices freezer hugetlb memory misc net_cls net_prio perf_event pids rdma";

/// The least memory limit a container gets. Below it its programs cannot keep their own
/// pages resident: a job asking for `--mem=1M` reclaimed its shell's page cache at full CPU
/// for ever, and a container's set-up ran out before it could say why. A job's limit is
/// raised to it, as Slurm raises one to its MinRAMSpace; `berth exec --memory` refuses less,
/// as docker does.
pub const MIN_MEMORY: u64 = 6 << 20;

/// The limits of one container; `None` leaves the resource unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// CPU time as a number of CPUs (1.5 = 150 ms every 100 ms), enforced by the CFS quota.
    pub cpus: Option<f64>,
    /// CPUs the container may run on, in the kernel's list format ("0-3,8").
    pub cpuset: Option<String>,
    /// Memory in bytes; swap is not allowed on top of it.
    pub memory: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
}

/// What the kernel accounted to a container; `None` where the kernel does not provide it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usec: Option<u64>,
    /// The CPU time in user and in kernel mode (sacct's UserCPU and SystemCPU).
    pub user_usec: Option<u64>,
    pub system_usec: Option<u64>,
    pub max_rss_bytes: Option<u64>,
    /// Memory charged now (page cache included, as the limit counts it).
    pub memory_bytes: Option<u64>,
}

impl Usage {
    /// Read from a cgroup's files, `at(controller, file)` their paths.
    fn read(v2: bool, at: impl Fn(&str, &str) -> Option<PathBuf>) -> Usage {
        let read = |controller: &str, file: &str| fs::read_to_string(at(controller, file)?).ok();
        let number = |controller, file| read(controller, file)?.trim().parse().ok();
        let cpu = CpuTime::read(v2, read);
        let (peak, now) = match v2 {
            true => ("memory.peak", "memory.current"),
            false => ("memory.max_usage_in_bytes", "memory.usage_in_bytes"),
        };
        Usage {
            cpu_usec: cpu.total_usec,
            user_usec: cpu.user_usec,
            system_usec: cpu.system_usec,
            max_rss_bytes: number("memory", peak),
            memory_bytes: number("memory", now),
        }
    }
}

/// The CPU time a cgroup accounted, microseconds: in all, in user and in kernel mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuTime {
    pub total_usec: Option<u64>,
    pub user_usec: Option<u64>,
    pub system_usec: Option<u64>,
}

impl CpuTime {
    /// From a cgroup's files, `read(controller, file)` their text: v2's cpu.stat, v1's
    /// cpuacct counters (nanoseconds).
    pub(crate) fn read(v2: bool, read: impl Fn(&str, &str) -> Option<String>) -> CpuTime {
        if v2 {
            let stat = read("cpu", "cpu.stat");
            let stat = |key| stat.as_deref().and_then(|t| keyed(t, key));
            return CpuTime {
                total_usec: stat("usage_usec"),
                user_usec: stat("user_usec"),
                system_usec: stat("system_usec"),
            };
        }
        let usec = |file| {
            let ns: u64 = read("cpuacct", file)?.trim().parse().ok()?;
            Some(ns / 1000)
        };
        CpuTime {
            total_usec: usec("cpuacct.usage"),
            user_usec: usec("cpuacct.usage_user"),
            system_usec: usec("cpuacct.usage_sys"),
        }
    }
}

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("cannot read {}: {source}; mount /proc so berth can find the cgroup filesystems", .path.display())]
    Mountinfo { path: PathBuf, source: io::Error },
    #[error("no cgroup filesystem is mounted: mount cgroup2 at /sys/fs/cgroup, or the v1 controllers below it")]
    NotMounted,
    #[error("invalid cgroup name '{value}': expected a non-empty relative path without '.' or '..' components")]
    InvalidName { value: String },
    #[error("invalid cpu limit {value}: expected a finite number of cpus of at least 0.01")]
    InvalidCpus { value: f64 },
    #[error("cgroup {name} is gone: has its job ended?")]
    JobGone { name: String },
    #[error("cgroup v1 controller '{controller}' is not mounted: mount it (mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}) or drop the limit that needs it")]
    NotMountedV1 { controller: String },
    #[error("cgroup controller '{controller}' is not available in {}: enable it in the parent's cgroup.subtree_control or drop the limit that needs it", .path.display())]
    Unavailable { controller: String, path: PathBuf },
    #[error("cgroup {} already exists: another container uses this name or a crashed run left it; rmdir it once its cgroup.procs is empty", .path.display())]
    Exists { path: PathBuf },
    #[error("cannot create cgroup {}: {source}; berth must run as root or own a delegated cgroup", .path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}; check that the cgroup exists and its controller is enabled", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write '{value}' to {}: {source}; check that the controller is enabled and the value fits within the parent cgroup's limits", .path.display())]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cannot remove cgroup {}: {source}; processes may still be in it, see its cgroup.procs", .path.display())]
    Remove { path: PathBuf, source: io::Error },
    #[error("--cpus, --cpuset-cpus, --memory and --pids-limit need root, or a cgroup v2 delegated to you: {why}; run berth in a delegated scope of its own (systemd-run --user --scope -p Delegate=yes berth ...), as root, or submit a job to berth")]
    NotDelegated { why: String },
    #[error("--cpus, --cpuset-cpus, --memory and --pids-limit need root on this machine: its cgroups are v1, whose limits a user cannot set; run them as root, or submit a job to berth")]
    V1Unprivileged,
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One hierarchy per v1 mount; co-mounted controllers ("cpu,cpuacct") share a mount point.
    V1 { mounts: BTreeMap<String, PathBuf> },
    /// The unified hierarchy mounted at `root`.
    V2 { root: PathBuf },
}

impl Layout {
    /// Detects the layout from the text of /proc/self/mountinfo (proc(5)): fields are separated
    /// by spaces, the mount point is the fifth, and after the " - " separator come the fstype,
    /// the source and the super options. Pure v2 is cgroup2 at /sys/fs/cgroup itself (the last
    /// mount there wins, as later mounts hide earlier ones). In hybrid mode a cgroup2 mount
    /// elsewhere (/sys/fs/cgroup/unified, holding no controllers) is ignored: the limits live in
    /// the v1 hierarchies, which is where crun gives up and berth must not.
    pub fn from_mountinfo(text: &str) -> Option<Layout> {
        let mut v2_on_top = false;
        let mut mounts = BTreeMap::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or_default();
            let options = right.nth(1).unwrap_or_default();
            let mount_point = unescape(mount_point);
            if mount_point == Path::new("/sys/fs/cgroup") {
                v2_on_top = fstype == "cgroup2";
            }
            if fstype == "cgroup" {
                for controller in options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.split(' ').any(|c| c == *o))
                {
                    mounts
                        .entry(controller.to_string())
                        .or_insert_with(|| mount_point.clone());
                }
            }
        }
        if v2_on_top {
            Some(Layout::V2 {
                root: PathBuf::from("/sys/fs/cgroup"),
            })
        } else if !mounts.is_empty() {
            Some(Layout::V1 { mounts })
        } else {
            None
        }
    }

    /// Reads /proc/self/mountinfo and detects the layout, once per process: the hierarchies
    /// are mounted at boot and stay, and a process that forks many containers (the node's
    /// runner launcher) detects them before its first fork, for all of its children.
    pub fn detect() -> Result<Layout, CgroupError> {
        static DETECTED: std::sync::OnceLock<Layout> = std::sync::OnceLock::new();
        if let Some(layout) = DETECTED.get() {
            return Ok(layout.clone());
        }
        let path = PathBuf::from("/proc/self/mountinfo");
        let text =
            fs::read_to_string(&path).map_err(|source| CgroupError::Mountinfo { path, source })?;
        let layout = Layout::from_mountinfo(&text).ok_or(CgroupError::NotMounted)?;
        Ok(DETECTED.get_or_init(|| layout).clone())
    }

    /// The root directory of every hierarchy, each once.
    pub fn hierarchies(&self) -> Vec<PathBuf> {
        match self {
            Layout::V1 { mounts } => mounts
                .values()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            Layout::V2 { root } => vec![root.clone()],
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space; fs/proc_namespace.c escapes " \t\n\\").
pub(crate) fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Where a job's processes are on v2, below its cgroup (see [`Cgroup::with_leaf`]).
pub const PROCESS_LEAF: &str = "job";

/// One container's cgroup: the leaf directories it created, one per hierarchy.
#[derive(Debug)]
pub struct Cgroup {
    v2: bool,
    /// Each leaf with the v1 controllers mounted in its hierarchy (empty on v2, where the one
    /// directory has them all).
    dirs: Vec<(PathBuf, Vec<String>)>,
    /// On v2, where its processes are, if not in it: see [`Cgroup::with_leaf`].
    leaf: Option<PathBuf>,
}

impl Cgroup {
    /// Creates `<parent>/<name>` in every hierarchy `limits` needs and writes the limits; on any
    /// failure removes every directory it created. `parent` is created if missing and kept.
    /// v1 always also creates cpuset (so affinity can be set later), cpuacct and memory (for
    /// [`Cgroup::usage`] and [`Cgroup::oom_killed`]) and freezer (for [`Cgroup::freeze`]) where
    /// mounted; v2 likewise enables memory whenever the root offers it.
    pub fn create(
        layout: &Layout,
        parent: &str,
        name: &str,
        limits: &Limits,
    ) -> Result<Cgroup, CgroupError> {
        Cgroup::make(layout, parent, name, limits, true)
    }

    /// As [`Cgroup::create`]; `whole`: a container's, in the hierarchies above; else a job
    /// step's within its job's, whose cpuset and freezer are its job's (v1: where the
    /// step's processes stay, frozen and pinned with the job's), so in v1's cpuacct and
    /// memory (its accounting and OOM kills) and those its limits need alone.
    fn make(
        layout: &Layout,
        parent: &str,
        name: &str,
        limits: &Limits,
        whole: bool,
    ) -> Result<Cgroup, CgroupError> {
        let mut parts: Vec<&str> = parent.split('/').collect();
        parts.push(name);
        if name.contains('/')
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(CgroupError::InvalidName {
                value: format!("{parent}/{name}"),
            });
        }
        if let Some(cpus) = limits.cpus {
            cpu_quota(cpus)?;
        }
        let mut cgroup = Cgroup {
            v2: matches!(layout, Layout::V2 { .. }),
            dirs: Vec::new(),
            leaf: None,
        };
        let mut created = Vec::new();
        let made = match layout {
            Layout::V1 { mounts } => cgroup.make_v1(mounts, &parts, limits, whole, &mut created),
            Layout::V2 { root } => cgroup.make_v2(root, &parts, limits, &mut created),
        };
        match made.and_then(|()| cgroup.apply(limits)) {
            Ok(()) => Ok(cgroup),
            Err(e) => {
                // Nothing was added yet, so a plain rmdir suffices; a shared parent that another
                // container has just entered is busy and rightly stays.
                for dir in created.iter().rev() {
                    let _ = rmdir(dir, false);
                }
                Err(e)
            }
        }
    }

    /// A job's cgroup, which may get cgroups of its steps' own below it ([`StepCgroup`]):
    /// on v2 its processes go in a leaf of its ([`PROCESS_LEAF`]), as a cgroup with
    /// processes of its own cannot give its children controllers (cgroup-v2.rst, "No
    /// Internal Process Constraint"); its limits, accounting, freezer and kill hold for the
    /// whole tree; the leaf gets the memory controller, for its own OOM kills
    /// ([`Cgroup::oom_killed`]). On v1 nothing changes: a v1 cgroup's processes and children
    /// may mix. Removes the cgroup if the leaf cannot be made.
    pub fn with_leaf(mut self) -> Result<Cgroup, CgroupError> {
        if !self.v2 {
            return Ok(self);
        }
        let dir = &self.dirs[0].0;
        let leaf = dir.join(PROCESS_LEAF);
        let offered = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let memory = match offered.split_whitespace().any(|c| c == "memory") {
            true => enable_controllers(dir, &["memory"]),
            false => Ok(()),
        };
        match memory.and_then(|()| make_dir(&leaf, true, &mut Vec::new())) {
            Ok(_) => {
                self.leaf = Some(leaf);
                Ok(self)
            }
            Err(e) => {
                let _ = self.destroy();
                Err(e)
            }
        }
    }

    fn make_v1(
        &mut self,
        mounts: &BTreeMap<String, PathBuf>,
        parts: &[&str],
        limits: &Limits,
        whole: bool,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), CgroupError> {
        let wanted = [
            ("cpu", limits.cpus.is_some(), limits.cpus.is_some()),
            ("cpuacct", false, true),
            (
                "cpuset",
                limits.cpuset.is_some(),
                whole || limits.cpuset.is_some(),
            ),
            ("freezer", false, whole),
            ("memory", limits.memory.is_some(), true),
            ("pids", limits.pids.is_some(), limits.pids.is_some()),
        ];
        let mut hierarchies: BTreeMap<&Path, Vec<String>> = BTreeMap::new();
        for (controller, required, wanted) in wanted {
            match mounts.get(controller) {
                Some(mount) if wanted => {
                    let comounted = || {
                        mounts
                            .iter()
                            .filter(|(_, m)| *m == mount)
                            .map(|(c, _)| c.clone())
                            .collect()
                    };
                    hierarchies.entry(mount).or_insert_with(comounted);
                }
                None if required => {
                    return Err(CgroupError::NotMountedV1 {
                        controller: controller.to_string(),
                    })
                }
                _ => {}
            }
        }
        for (mount, controllers) in hierarchies {
            let cpuset = controllers.iter().any(|c| c == "cpuset");
            let mut dir = mount.to_path_buf();
            let mut above = None;
            for (i, part) in parts.iter().enumerate() {
                dir.push(part);
                let fresh = make_dir(&dir, i + 1 == parts.len(), created)?;
                if cpuset {
                    above = Some(inherit_cpuset(&dir, fresh, above.take())?);
                }
            }
            self.dirs.push((dir, controllers));
        }
        Ok(())
    }

    fn make_v2(
        &mut self,
        root: &Path,
        parts: &[&str],
        limits: &Limits,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), CgroupError> {
        let list = root.join("cgroup.controllers");
        let available = read(&list)?;
        let available: BTreeSet<&str> = available.split_whitespace().collect();
        let wanted = v2_controllers(limits, &available);
        if let Some(missing) = wanted.iter().find(|c| !available.contains(*c)) {
            return Err(CgroupError::Unavailable {
                controller: missing.to_string(),
                path: list,
            });
        }
        // cgroup-v2.rst "Enabling and Disabling": a controller is usable in a cgroup only if
        // every ancestor lists it in cgroup.subtree_control, so enable it top-down.
        let mut dir = root.to_path_buf();
        for (i, part) in parts.iter().enumerate() {
            enable_controllers(&dir, &wanted)?;
            dir.push(part);
            make_dir(&dir, i + 1 == parts.len(), created)?;
        }
        self.dirs.push((dir, Vec::new()));
        Ok(())
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let Some(cpus) = limits.cpus {
            let (quota, dir) = (cpu_quota(cpus)?, self.need("cpu")?);
            if self.v2 {
                write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        if let Some(cpus) = &limits.cpuset {
            write(&self.need("cpuset")?.join("cpuset.cpus"), cpus)?;
        }
        if let Some(bytes) = limits.memory {
            let (dir, bytes) = (self.need("memory")?, bytes.max(MIN_MEMORY).to_string());
            // Without the swap limit a container could dodge its memory limit by swapping.
            let (limit, swap, swap_value) = if self.v2 {
                ("memory.max", "memory.swap.max", "0")
            } else {
                // cgroup-v1/memory.rst: memsw.limit_in_bytes must stay >= limit_in_bytes, so
                // on this fresh (unlimited) cgroup the memory limit goes first.
                (
                    "memory.limit_in_bytes",
                    "memory.memsw.limit_in_bytes",
                    bytes.as_str(),
                )
            };
            write(&dir.join(limit), &bytes)?;
            if dir.join(swap).exists() {
                write(&dir.join(swap), swap_value)?;
            }
        }
        if let Some(pids) = limits.pids {
            write(&self.need("pids")?.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    /// The `tasks` file of each of this cgroup's v1 hierarchies, open for writing (none on
    /// v2). A single-threaded process moves itself in by writing "0" to each: the kernel then
    /// skips its threadgroup lock, which moving another process (or a whole process, through
    /// cgroup.procs) takes for writing, at the cost of an RCU grace period: 5 to 15 ms when
    /// the machine was idle, paid by every job start and step launch that is not one of a
    /// quick succession. Opened before the process enters a container, where the cgroup
    /// file systems are out of reach.
    pub fn tasks_files(&self) -> Result<Vec<fs::File>, CgroupError> {
        match self.v2 {
            true => Ok(Vec::new()),
            false => self.dirs.iter().map(|(dir, _)| tasks_file(dir)).collect(),
        }
    }

    /// This cgroup's directory on v2, open, for a child to be born in (CLONE_INTO_CGROUP:
    /// `sys::clone_into`); `None` on v1.
    pub fn v2_dir(&self) -> Result<Option<std::os::fd::OwnedFd>, CgroupError> {
        let Some((dir, _)) = self.dirs.first().filter(|_| self.v2) else {
            return Ok(None);
        };
        let dir = self.leaf.as_ref().unwrap_or(dir);
        fs::File::open(dir)
            .map(|f| Some(f.into()))
            .map_err(|source| CgroupError::Read {
                path: dir.clone(),
                source,
            })
    }

    /// Moves `pid` (and on v2 its whole process) into the cgroup in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        self.dirs.iter().try_for_each(|(dir, _)| {
            let dir = self.leaf.as_ref().unwrap_or(dir);
            write(&dir.join("cgroup.procs"), &pid.to_string())
        })
    }

    /// Whether the kernel's OOM killer killed a process of this cgroup ("oom_kill N" in
    /// v2 memory.events, v1 memory.oom_control since Linux 4.13): one of its own, not of a
    /// cgroup of a step's below it ([`StepCgroup`]), whose kills are the step's. (v1 counts
    /// a cgroup's own; v2 counts its children's too, but its processes are in its leaf.)
    pub fn oom_killed(&self) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.leaf
            .as_deref()
            .or(self.dir("memory"))
            .and_then(|dir| fs::read_to_string(dir.join(file)).ok())
            .and_then(|text| keyed(&text, "oom_kill"))
            .is_some_and(|n| n > 0)
    }

    /// CPU time and peak memory so far (v2 memory.peak needs Linux 5.19), and memory now.
    pub fn usage(&self) -> Usage {
        Usage::read(self.v2, |controller, file| {
            self.dir(controller).map(|d| d.join(file))
        })
    }

    /// Suspends (`true`) or resumes every process of the cgroup. The kernel completes a freeze
    /// asynchronously (v1 freezer.state reads FREEZING, v2 cgroup.events "frozen 0" meanwhile).
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let (file, value) = match (self.v2, frozen) {
            (true, _) => ("cgroup.freeze", if frozen { "1" } else { "0" }),
            (false, true) => ("freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED"),
        };
        write(&self.need("freezer")?.join(file), value)
    }

    /// The file that says whether the cgroup is frozen (v1 freezer.state, v2 cgroup.freeze),
    /// read with [`frozen`]; `None` without a freezer.
    pub fn freezer_state(&self) -> Option<PathBuf> {
        let file = if self.v2 {
            "cgroup.freeze"
        } else {
            "freezer.state"
        };
        self.need("freezer").ok().map(|dir| dir.join(file))
    }

    /// Kills what is left in the cgroup and removes its directories, children first. The shared
    /// parent stays. Killed processes that are berth's children must still be reaped by it.
    pub fn destroy(self) -> Result<(), CgroupError> {
        // Most often every process has ended and no cgroup was made below: then an rmdir per
        // hierarchy is all it takes (the kernel refuses it, EBUSY, while a process or a child
        // cgroup is left, and the full way below takes over).
        let gone = |dir: &PathBuf| match fs::remove_dir(dir) {
            Ok(()) => true,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if self
            .leaf
            .iter()
            .chain(self.dirs.iter().map(|(d, _)| d))
            .all(gone)
        {
            return Ok(());
        }
        self.kill_all();
        let mut result = Ok(());
        for (dir, _) in &self.dirs {
            if let Err(e) = remove_tree(dir, true) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Every process in the cgroup and its descendants, in any hierarchy.
    pub fn pids(&self) -> BTreeSet<libc::pid_t> {
        pids_in(self.dirs.iter().map(|(dir, _)| dir.as_path()))
    }

    /// The leaf directories, one per hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(dir, _)| dir.clone()).collect()
    }

    fn kill_all(&self) {
        if self.v2 {
            // cgroup-v2.rst: writing "1" to cgroup.kill (Linux 5.14) kills the whole subtree
            // atomically, with no fork race.
            let kill = self.dirs.first().map(|(dir, _)| dir.join("cgroup.kill"));
            if kill.is_some_and(|kill| kill.exists() && write(&kill, "1").is_ok()) {
                return;
            }
        }
        let pids = self.pids();
        if pids.is_empty() {
            return;
        }
        // v1 tasks fork while being killed one by one; freezing first stops that, and the
        // pending SIGKILL takes effect on thaw (cgroup-v1/freezer-subsystem.rst; runc does
        // the same). v2 needs no thaw: frozen processes die of fatal signals (cgroup-v2.rst).
        let state = self
            .dir("freezer")
            .filter(|_| !self.v2)
            .map(|d| d.join("freezer.state"));
        if let Some(state) = &state {
            let _ = write(state, "FROZEN");
        }
        pids.into_iter().for_each(sigkill);
        if let Some(state) = &state {
            let _ = write(state, "THAWED");
        }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        let found = self
            .dirs
            .iter()
            .find(|(_, cs)| self.v2 || cs.iter().any(|c| c == controller));
        found.map(|(dir, _)| dir.as_path())
    }

    fn need(&self, controller: &str) -> Result<&Path, CgroupError> {
        self.dir(controller)
            .ok_or_else(|| CgroupError::NotMountedV1 {
                controller: controller.to_string(),
            })
    }
}

/// Freezes or thaws `<parent>/<name>`, a cgroup another process created and still owns
/// (`berth suspend` and `resume` on a job's cgroup): the freezer stops every process in it
/// at once, so the job's CPU time stops too.
pub fn freeze_existing(
    layout: &Layout,
    parent: &str,
    name: &str,
    frozen: bool,
) -> Result<(), CgroupError> {
    let (path, value) = match layout {
        Layout::V2 { root } => (
            root.join(parent).join(name).join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        ),
        Layout::V1 { mounts } => {
            let mount = mounts
                .get("freezer")
                .ok_or_else(|| CgroupError::NotMountedV1 {
                    controller: "freezer".into(),
                })?;
            (
                mount.join(parent).join(name).join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            )
        }
    };
    write(&path, value)
}

/// What the kernel has accounted so far to `<parent>/<name>`, a cgroup another process
/// created and still owns (a running job's); `None` if it is not there.
pub fn usage_existing(layout: &Layout, parent: &str, name: &str) -> Option<Usage> {
    let (v2, dir) = match layout {
        Layout::V2 { root } => (true, root.join(parent).join(name)),
        // Any of its hierarchies tells whether it is there; cpuacct holds its CPU time.
        Layout::V1 { mounts } => (false, mounts.get("cpuacct")?.join(parent).join(name)),
    };
    if !dir.is_dir() {
        return None;
    }
    Some(Usage::read(v2, |controller, file| match layout {
        Layout::V2 { .. } => Some(dir.join(file)),
        Layout::V1 { mounts } => Some(mounts.get(controller)?.join(parent).join(name).join(file)),
    }))
}

/// How many processes the kernel's OOM killer has killed in `<parent>/<name>`, a cgroup
/// another process created (a running job's): below it too on v2, whose memory.events
/// counts its descendants; its own on v1. 0 if it is not there.
pub fn oom_kills_existing(layout: &Layout, parent: &str, name: &str) -> u64 {
    let file = match layout {
        Layout::V2 { root } => root.join(parent).join(name).join("memory.events"),
        Layout::V1 { mounts } => match mounts.get("memory") {
            Some(memory) => memory.join(parent).join(name).join("memory.oom_control"),
            None => return 0,
        },
    };
    fs::read_to_string(file)
        .ok()
        .and_then(|text| keyed(&text, "oom_kill"))
        .unwrap_or(0)
}

/// Whether the contents of a [`Cgroup::freezer_state`] file say frozen (or freezing: asked
/// to be). Allocation-free, so a signal handler may call it.
pub fn frozen(state: &[u8]) -> bool {
    state.starts_with(b"FROZEN") || state.starts_with(b"FREEZING") || state.starts_with(b"1")
}

/// Every process in `dirs` (a cgroup's, one per hierarchy: [`existing_dirs`]) and their
/// descendants.
pub fn pids_in<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> BTreeSet<libc::pid_t> {
    let mut pids = BTreeSet::new();
    dirs.into_iter().for_each(|dir| tree_pids(dir, &mut pids));
    pids
}

/// Where processes join the cgroup `dir`: its [`PROCESS_LEAF`] if it has one (a job's on
/// v2), else itself.
pub fn joinable(dir: &Path) -> PathBuf {
    let leaf = dir.join(PROCESS_LEAF);
    match leaf.is_dir() {
        true => leaf,
        false => dir.to_path_buf(),
    }
}

/// The directories of `<parent>/<name>`, a cgroup another process created, in every
/// hierarchy that has it (one on v2): where a job step's processes join the job's cgroup.
pub fn existing_dirs(layout: &Layout, parent: &str, name: &str) -> Vec<PathBuf> {
    layout
        .hierarchies()
        .into_iter()
        .map(|base| base.join(parent).join(name))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// A cgroup v2 delegated to the user, entered by [`enter_delegated`] and left when this is
/// dropped (once the container's cgroup in it is gone).
#[derive(Debug)]
pub struct Delegation {
    /// Its path below the root: the parent to create containers' cgroups under.
    pub parent: String,
    dir: PathBuf,
    /// The leaf this process moved into.
    leaf: PathBuf,
    /// The controllers this process enabled in it.
    enabled: Vec<String>,
}

impl Drop for Delegation {
    /// Undoes [`enter_delegated`] if no other cgroup is left beside this process's leaf (no
    /// other run of berth uses the cgroup): the controllers it enabled are cleared, this
    /// process moves back and its leaf goes. Best effort: a leaf that stays is swept by the
    /// next run there, or goes with the scope.
    fn drop(&mut self) {
        let alone = fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries
                .flatten()
                .all(|e| e.path() == self.leaf || !e.file_type().is_ok_and(|t| t.is_dir()))
        });
        if !alone {
            return;
        }
        let clear: Vec<String> = self.enabled.iter().map(|c| format!("-{c}")).collect();
        if (clear.is_empty()
            || write(&self.dir.join("cgroup.subtree_control"), &clear.join(" ")).is_ok())
            && write(&self.dir.join("cgroup.procs"), "0").is_ok()
        {
            let _ = rmdir(&self.leaf, false);
        }
    }
}

/// For a user without root: makes this process's own cgroup (v2) ready to hold containers'
/// cgroups, the parent to create them under ([`Delegation::parent`]), until the returned
/// [`Delegation`] is dropped. The cgroup
/// must be delegated to the user (theirs, as systemd's `Delegate=yes` makes a scope) and offer
/// the controllers `limits` needs. As cgroup v2 lets only a cgroup without processes of its
/// own hand controllers to its children, this process moves into a leaf of its own there
/// (`<pid>-berth`, swept like a container's once this process is gone) before the controllers
/// are enabled; any other process in the cgroup makes that impossible, and this process moves
/// back and says so.
pub fn enter_delegated(layout: &Layout, limits: &Limits) -> Result<Delegation, CgroupError> {
    let refuse = |why: String| CgroupError::NotDelegated { why };
    let Layout::V2 { root } = layout else {
        return Err(CgroupError::V1Unprivileged);
    };
    let own = fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .ok_or_else(|| refuse("this process is in no cgroup v2 (/proc/self/cgroup)".into()))?;
    let own = own.trim_matches('/').to_string();
    let dir = root.join(&own);
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let ours = |file: &str| {
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(dir.join(file)).ok()?)
            .eq(&uid)
            .then_some(())
    };
    if own.is_empty()
        || ours(".")
            .and(ours("cgroup.procs"))
            .and(ours("cgroup.subtree_control"))
            .is_none()
    {
        return Err(refuse(format!(
            "this process's cgroup {} is not yours",
            dir.display()
        )));
    }
    let offered = read(&dir.join("cgroup.controllers"))?;
    let offered: BTreeSet<&str> = offered.split_whitespace().collect();
    let wanted = v2_controllers(limits, &offered);
    if let Some(missing) = wanted.iter().find(|c| !offered.contains(*c)) {
        return Err(refuse(format!(
            "the {missing} controller is not delegated to {} (its parent's cgroup.subtree_control)",
            dir.display()
        )));
    }
    let before = read(&dir.join("cgroup.subtree_control"))?;
    let enabled: Vec<String> = wanted
        .iter()
        .filter(|c| !before.split_whitespace().any(|b| b == **c))
        .map(|c| c.to_string())
        .collect();
    let leaf = dir.join(format!("{}-berth", std::process::id()));
    let mut created = Vec::new();
    make_dir(&leaf, true, &mut created)?;
    write(&leaf.join("cgroup.procs"), "0")?;
    if let Err(e) = enable_controllers(&dir, &wanted) {
        let _ = write(&dir.join("cgroup.procs"), "0");
        let _ = rmdir(&leaf, false);
        return Err(match e {
            CgroupError::Write { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
                refuse(format!("{} holds other processes", dir.display()))
            }
            e => e,
        });
    }
    Ok(Delegation {
        parent: own,
        dir,
        leaf,
        enabled,
    })
}

/// The v2 controllers a container with `limits` needs, and memory for its accounting where
/// `offered` has it.
fn v2_controllers<'a>(limits: &Limits, offered: &BTreeSet<&str>) -> Vec<&'a str> {
    [
        ("cpu", limits.cpus.is_some()),
        ("cpuset", limits.cpuset.is_some()),
        ("memory", limits.memory.is_some()),
        ("pids", limits.pids.is_some()),
    ]
    .into_iter()
    .filter(|(c, required)| *required || (*c == "memory" && offered.contains(c)))
    .map(|(c, _)| c)
    .collect()
}

/// Removes leftovers of crashed runs: each directory directly under `<parent>` in every
/// hierarchy whose name is "<pid>-<suffix>" with `pid` no longer alive. The processes still
/// inside (a killed `berth exec`'s container without a pid namespace of its own: only its
/// first process dies with berth) are killed first, and waited for a little; a cgroup they
/// still hold then goes at the next sweep. Errors are ignored: a sweep is best effort and
/// must not stop a new run.
pub fn sweep_stale(layout: &Layout, parent: &str) {
    for base in layout.hierarchies() {
        let Ok(entries) = fs::read_dir(base.join(parent)) else {
            continue;
        };
        for entry in entries.flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok());
            let Some(pid) = pid.filter(|p| *p > 0) else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || alive(pid) {
                continue;
            }
            let mut pids = BTreeSet::new();
            tree_pids(&entry.path(), &mut pids);
            for &p in &pids {
                // SAFETY: kill(2) of a process left in a berth cgroup whose owner is dead.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
            while pids.iter().any(|&p| alive(p)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let _ = remove_tree(&entry.path(), false);
        }
    }
}

fn cpu_quota(cpus: f64) -> Result<u64, CgroupError> {
    let quota = (cpus * CPU_PERIOD_US as f64).round();
    if !quota.is_finite() || quota < CPU_MIN_QUOTA_US as f64 || quota > u64::MAX as f64 {
        return Err(CgroupError::InvalidCpus { value: cpus });
    }
    Ok(quota as u64)
}

/// Creates the cgroup directory `path` (an existing one is fine unless it is the `leaf`);
/// true if it was created.
fn make_dir(path: &Path, leaf: bool, created: &mut Vec<PathBuf>) -> Result<bool, CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => {
            created.push(path.to_path_buf());
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !leaf => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CgroupError::Exists {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// cgroup-v1/cpusets.rst: a new cpuset has empty cpuset.cpus and cpuset.mems, and tasks cannot
/// attach until both are set, so an empty one gets its parent's (which we filled first).
/// Returns the values `dir` has then. A cpuset just created (`fresh`) is known to be empty,
/// and its parent's values may be known already (`above`): neither is read again.
fn inherit_cpuset(
    dir: &Path,
    fresh: bool,
    above: Option<[String; 2]>,
) -> Result<[String; 2], CgroupError> {
    let parent = dir
        .parent()
        .expect("a cgroup directory lies below its mount point");
    let mut values = [String::new(), String::new()];
    for (i, file) in ["cpuset.cpus", "cpuset.mems"].into_iter().enumerate() {
        if !fresh {
            let own = fs::read_to_string(dir.join(file)).unwrap_or_default();
            if !own.trim().is_empty() {
                values[i] = own.trim().to_owned();
                continue;
            }
        }
        let value = match &above {
            Some(known) => known[i].clone(),
            None => read(&parent.join(file))?.trim().to_string(),
        };
        write(&dir.join(file), &value)?;
        values[i] = value;
    }
    Ok(values)
}

fn enable_controllers(dir: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&file).unwrap_or_default();
    let enabled: BTreeSet<&str> = current
        .split_whitespace()
        .map(|c| c.trim_start_matches('+'))
        .collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| !enabled.contains(*c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&file, &missing.join(" "))
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The value of `key` in a "key value" per line file (memory.events, cpu.stat, ...).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.split_once(' ')
            .filter(|(k, _)| *k == key)
            .and_then(|(_, v)| v.trim().parse().ok())
    })
}

/// Writes `value` in one write(2): cgroupfs takes each write as one command. Creating the file
/// is harmless there (control files exist or the open fails) and lets tests use plain trees.
/// `dir`'s v1 `tasks` file, open for writing (see [`Cgroup::tasks_files`]).
pub fn tasks_file(dir: &Path) -> Result<fs::File, CgroupError> {
    let path = dir.join("tasks");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|source| CgroupError::Write {
            path,
            value: "0".into(),
            source,
        })
}

/// Moves the calling thread (the whole process, if it has no other) into the cgroup of
/// each `tasks` file (see [`Cgroup::tasks_files`]).
pub fn join_self(tasks: &[fs::File]) -> io::Result<()> {
    tasks.iter().try_for_each(|mut file| file.write_all(b"0"))
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

/// Every pid listed in cgroup.procs of `dir` and its descendants.
fn tree_pids(dir: &Path, out: &mut BTreeSet<libc::pid_t>) {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    out.extend(
        procs
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok()),
    );
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            tree_pids(&entry.path(), out);
        }
    }
}

fn sigkill(pid: libc::pid_t) {
    // Never berth itself, should a caller have added it; pid <= 0 would mean a process group.
    if pid <= 0 || u32::try_from(pid).is_ok_and(|p| p == std::process::id()) {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches none of our memory; a process that has
    // already exited yields ESRCH, which is ignored on purpose.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists (kill(2)); no memory is touched.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes `dir` and the cgroups below it, children first.
fn remove_tree(dir: &Path, retry: bool) -> Result<(), CgroupError> {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path(), retry)?;
        }
    }
    rmdir(dir, retry)
}

/// Removes one cgroup directory. The kernel answers EBUSY while the cgroup still has processes
/// or children (kernel/cgroup/cgroup.c, cgroup_destroy_locked), and a killed task leaves only
/// once reaped, so with `retry` it kills what is listed and tries again with growing pauses.
/// cgroupfs never answers ENOTEMPTY (control files go with the directory); a plain tree, as in
/// the tests, does, and then its regular files are removed and the rmdir tried once more.
fn rmdir(dir: &Path, retry: bool) -> Result<(), CgroupError> {
    let (mut tries, mut emptied, mut pause) = (0, false, Duration::from_millis(10));
    loop {
        let err = match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => e,
        };
        match err.raw_os_error() {
            Some(libc::ENOTEMPTY) if !emptied => {
                emptied = true;
                for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_file()) {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
            Some(libc::EBUSY) if retry && tries < RMDIR_TRIES => {
                tries += 1;
                let mut pids = BTreeSet::new();
                tree_pids(dir, &mut pids);
                pids.into_iter().for_each(sigkill);
                sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            _ => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source: err,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freezer_states_read_as_frozen_or_not() {
        for state in [&b"FROZEN\n"[..], b"FREEZING\n", b"1\n"] {
            assert!(frozen(state), "{state:?}");
        }
        for state in [&b"THAWED\n"[..], b"0\n", b""] {
            assert!(!frozen(state), "{state:?}");
        }
    }

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PURE_V2: &str = "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
21 22 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn text(path: &Path) -> String {
        fs::read_to_string(path).unwrap().trim().to_string()
    }

    /// A v1 tree with cpu and cpuacct co-mounted and a cpuset root the kernel would have filled.
    pub(super) fn v1_tree() -> (tempfile::TempDir, Layout) {
        let tmp = tempfile::tempdir().unwrap();
        let mut mounts = BTreeMap::new();
        for (dir, controllers) in [
            ("cpu,cpuacct", &["cpu", "cpuacct"][..]),
            ("cpuset", &["cpuset"]),
            ("freezer", &["freezer"]),
            ("memory", &["memory"]),
            ("pids", &["pids"]),
        ] {
            fs::create_dir(tmp.path().join(dir)).unwrap();
            for controller in controllers {
                mounts.insert(controller.to_string(), tmp.path().join(dir));
            }
        }
        fs::write(tmp.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(tmp.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        (tmp, Layout::V1 { mounts })
    }

    pub(super) fn v2_tree() -> (tempfile::TempDir, Layout) {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(tmp.path().join("cgroup.subtree_control"), "").unwrap();
        let root = tmp.path().to_path_buf();
        (tmp, Layout::V2 { root })
    }

    fn full() -> Limits {
        Limits {
            cpus: Some(1.5),
            cpuset: Some("1".into()),
            memory: Some(1 << 30),
            pids: Some(100),
        }
    }

    #[test]
    fn detects_hybrid_v1_ignoring_unified_and_named_hierarchies() {
        let Some(Layout::V1 { mounts }) = Layout::from_mountinfo(HYBRID) else {
            panic!("expected v1")
        };
        let names: Vec<&str> = mounts.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"]
        );
        assert_eq!(mounts["cpu"], Path::new("/sys/fs/cgroup/cpu"));
        let comounted =
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
            33 31 0:30 / /sys/fs/cgroup/my\\040pids rw - cgroup cgroup rw,nosuid,pids\n";
        let layout = Layout::from_mountinfo(comounted).unwrap();
        let expected = ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/my pids"].map(PathBuf::from);
        assert_eq!(layout.hierarchies(), expected);
    }

    #[test]
    fn detects_pure_v2_and_nothing() {
        assert_eq!(
            Layout::from_mountinfo(PURE_V2),
            Some(Layout::V2 {
                root: "/sys/fs/cgroup".into()
            })
        );
        assert_eq!(
            Layout::from_mountinfo("22 1 259:1 / / rw - ext4 /dev/root rw\n"),
            None
        );
        let unified_only = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(Layout::from_mountinfo(unified_only), None);
    }

    #[test]
    fn v1_create_writes_limits_into_each_controller() {
        let (tmp, layout) = v1_tree();
        let cg = Cgroup::create(&layout, "berth", "1-a", &full()).unwrap();
        let leaf = |mount: &str| tmp.path().join(mount).join("berth/1-a");
        assert_eq!(
            cg.paths(),
            ["cpu,cpuacct", "cpuset", "freezer", "memory", "pids"].map(leaf)
        );
        assert_eq!(
            text(&leaf("cpu,cpuacct").join("cpu.cfs_period_us")),
            "100000"
        );
        assert_eq!(
            text(&leaf("cpu,cpuacct").join("cpu.cfs_quota_us")),
            "150000"
        );
        assert_eq!(text(&tmp.path().join("cpuset/berth/cpuset.cpus")), "0-1");
        assert_eq!(text(&tmp.path().join("cpuset/berth/cpuset.mems")), "0");
        assert_eq!(text(&leaf("cpuset").join("cpuset.cpus")), "1");
        assert_eq!(text(&leaf("cpuset").join("cpuset.mems")), "0");
        assert_eq!(
            text(&leaf("memory").join("memory.limit_in_bytes")),
            "1073741824"
        );
        assert_eq!(text(&leaf("pids").join("pids.max")), "100");
        cg.add_pid(4_194_301).unwrap();
        assert_eq!(text(&leaf("freezer").join("cgroup.procs")), "4194301");
        cg.freeze(true).unwrap();
        assert_eq!(text(&leaf("freezer").join("freezer.state")), "FROZEN");
        // A plain file does not empty itself when the process dies, as cgroup.procs would.
        cg.paths()
            .iter()
            .for_each(|p| fs::write(p.join("cgroup.procs"), "").unwrap());
        cg.destroy().unwrap();
        assert!(!leaf("memory").exists() && tmp.path().join("memory/berth").exists());
    }

    #[test]
    fn v1_cpusets_take_the_values_of_the_cpuset_above() {
        let (tmp, layout) = v1_tree();
        let berth = tmp.path().join("cpuset/berth");
        drop(Cgroup::create(&layout, "berth", "1-a", &Limits::default()).unwrap());
        // An existing parent with values of its own: a new cgroup takes those, not the root's.
        fs::write(berth.join("cpuset.cpus"), "1").unwrap();
        drop(Cgroup::create(&layout, "berth", "2-b", &Limits::default()).unwrap());
        assert_eq!(text(&berth.join("2-b/cpuset.cpus")), "1");
        assert_eq!(text(&berth.join("2-b/cpuset.mems")), "0");
        // An existing parent left empty (a crash between its mkdir and its filling) is filled
        // from the root first.
        fs::write(berth.join("cpuset.mems"), "").unwrap();
        drop(Cgroup::create(&layout, "berth", "3-c", &Limits::default()).unwrap());
        assert_eq!(text(&berth.join("cpuset.mems")), "0");
        assert_eq!(text(&berth.join("3-c/cpuset.cpus")), "1");
        assert_eq!(text(&berth.join("3-c/cpuset.mems")), "0");
    }

    #[test]
    fn v1_without_limits_still_makes_accounting_hierarchies() {
        let (tmp, layout) = v1_tree();
        let cg = Cgroup::create(&layout, "berth", "1-a", &Limits::default()).unwrap();
        assert_eq!(cg.paths().len(), 4);
        assert!(!tmp.path().join("pids/berth").exists());
    }

    #[test]
    fn v2_create_enables_controllers_top_down() {
        let (tmp, layout) = v2_tree();
        let cg = Cgroup::create(&layout, "berth", "1-a", &full()).unwrap();
        for dir in [tmp.path().to_path_buf(), tmp.path().join("berth")] {
            assert_eq!(
                text(&dir.join("cgroup.subtree_control")),
                "+cpu +cpuset +memory +pids"
            );
        }
        let leaf = tmp.path().join("berth/1-a");
        assert_eq!(cg.paths(), std::slice::from_ref(&leaf));
        assert!(!leaf.join("cgroup.subtree_control").exists());
        assert_eq!(text(&leaf.join("cpu.max")), "150000 100000");
        assert_eq!(text(&leaf.join("cpuset.cpus")), "1");
        assert_eq!(text(&leaf.join("memory.max")), "1073741824");
        assert_eq!(text(&leaf.join("pids.max")), "100");
        cg.freeze(true).unwrap();
        assert_eq!(text(&leaf.join("cgroup.freeze")), "1");
        cg.destroy().unwrap();
        assert!(!leaf.exists());
        // Less memory than MIN_MEMORY is raised to it.
        let tiny = Limits {
            memory: Some(1 << 20),
            ..Limits::default()
        };
        let cg = Cgroup::create(&layout, "berth", "2-a", &tiny).unwrap();
        assert_eq!(
            text(&tmp.path().join("berth/2-a/memory.max")),
            MIN_MEMORY.to_string()
        );
        cg.destroy().unwrap();
    }

    #[test]
    fn failure_removes_everything_created() {
        let (tmp, layout) = v1_tree();
        // cpu,cpuacct sorts first and is created; cpuset then cannot copy its parent's mems.
        fs::remove_file(tmp.path().join("cpuset/cpuset.mems")).unwrap();
        fs::create_dir(tmp.path().join("cpuset/cpuset.mems")).unwrap();
        let err = Cgroup::create(&layout, "berth", "1-a", &full()).unwrap_err();
        assert!(matches!(err, CgroupError::Read { .. }), "{err}");
        for mount in ["cpu,cpuacct", "cpuset", "freezer", "memory", "pids"] {
            assert!(!tmp.path().join(mount).join("berth").exists(), "{mount}");
        }
    }

    #[test]
    fn existing_leaf_is_an_error_and_is_kept() {
        let (tmp, layout) = v1_tree();
        fs::create_dir_all(tmp.path().join("pids/berth/1-a")).unwrap();
        let err = Cgroup::create(&layout, "berth", "1-a", &full()).unwrap_err();
        assert!(
            err.to_string().contains("pids/berth/1-a already exists"),
            "{err}"
        );
        assert!(tmp.path().join("pids/berth/1-a").exists());
        assert!(!tmp.path().join("memory/berth").exists());
    }

    #[test]
    fn bad_input_is_refused_before_creating_anything() {
        let (tmp, layout) = v2_tree();
        let tiny = Limits {
            cpus: Some(0.001),
            ..Limits::default()
        };
        assert!(matches!(
            Cgroup::create(&layout, "berth", "1-a", &tiny),
            Err(CgroupError::InvalidCpus { .. })
        ));
        assert!(matches!(
            Cgroup::create(&layout, "../x", "1-a", &full()),
            Err(CgroupError::InvalidName { .. })
        ));
        fs::write(tmp.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let err = Cgroup::create(&layout, "berth", "1-a", &full()).unwrap_err();
        assert!(
            matches!(err, CgroupError::Unavailable { ref controller, .. } if controller == "cpuset"),
            "{err}"
        );
        assert!(!tmp.path().join("berth").exists());
        let (_tmp, Layout::V1 { mut mounts }) = v1_tree() else {
            unreachable!()
        };
        mounts.remove("pids");
        let err = Cgroup::create(&Layout::V1 { mounts }, "berth", "1-a", &full()).unwrap_err();
        assert!(err.to_string().contains("'pids' is not mounted"), "{err}");
    }

    #[test]
    fn oom_kills_and_usage_are_parsed() {
        let (_tmp, layout) = v2_tree();
        let cg = Cgroup::create(&layout, "berth", "1-a", &Limits::default()).unwrap();
        let leaf = &cg.paths()[0];
        assert!(!cg.oom_killed());
        fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert!(!cg.oom_killed());
        fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert!(cg.oom_killed());
        fs::write(
            leaf.join("cpu.stat"),
            "usage_usec 12345\nuser_usec 10000\nsystem_usec 2345\n",
        )
        .unwrap();
        assert_eq!(
            cg.usage(),
            Usage {
                cpu_usec: Some(12345),
                user_usec: Some(10000),
                system_usec: Some(2345),
                max_rss_bytes: None,
                memory_bytes: None,
            }
        );
        fs::write(leaf.join("memory.peak"), "4096\n").unwrap();
        fs::write(leaf.join("memory.current"), "2048\n").unwrap();
        assert_eq!(cg.usage().max_rss_bytes, Some(4096));
        // Another process reads a cgroup it did not create by its name.
        assert_eq!(usage_existing(&layout, "berth", "1-a"), Some(cg.usage()));
        assert_eq!(cg.usage().memory_bytes, Some(2048));
        assert_eq!(usage_existing(&layout, "berth", "no-such"), None);

        let (tmp, layout) = v1_tree();
        let cg = Cgroup::create(&layout, "berth", "1-a", &Limits::default()).unwrap();
        let memory = tmp.path().join("memory/berth/1-a");
        fs::write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(cg.oom_killed());
        let cpuacct = tmp.path().join("cpu,cpuacct/berth/1-a");
        fs::write(cpuacct.join("cpuacct.usage"), "5000000\n").unwrap();
        fs::write(cpuacct.join("cpuacct.usage_user"), "4000000\n").unwrap();
        fs::write(cpuacct.join("cpuacct.usage_sys"), "1000000\n").unwrap();
        fs::write(memory.join("memory.max_usage_in_bytes"), "8192\n").unwrap();
        fs::write(memory.join("memory.usage_in_bytes"), "6144\n").unwrap();
        let usage = Usage {
            cpu_usec: Some(5000),
            user_usec: Some(4000),
            system_usec: Some(1000),
            max_rss_bytes: Some(8192),
            memory_bytes: Some(6144),
        };
        assert_eq!(cg.usage(), usage);
        assert_eq!(usage_existing(&layout, "berth", "1-a"), Some(usage));
    }

    #[test]
    fn sweep_removes_dead_owners_cgroups_and_kills_what_is_left_in_them() {
        let dead = 4_194_300;
        if Path::new(&format!("/proc/{dead}")).exists() {
            berth_core::say!("note: pid {dead} exists here, skipping");
            return;
        }
        let (tmp, layout) = v2_tree();
        let berth = tmp.path().join("berth");
        let me = std::process::id();
        for name in [
            format!("{dead}-a"),
            format!("{dead}-busy"),
            format!("{me}-b"),
            "notapid".into(),
        ] {
            fs::create_dir_all(berth.join(&name).join("child")).unwrap();
            fs::write(berth.join(&name).join("cgroup.procs"), "").unwrap();
        }
        // A process its dead owner left there: killed, its cgroup removed.
        let mut left = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs::write(
            berth.join(format!("{dead}-busy/child/cgroup.procs")),
            format!("{}\n", left.id()),
        )
        .unwrap();
        fs::write(
            berth.join(format!("{me}-b/cgroup.procs")),
            format!("{me}\n"),
        )
        .unwrap();
        sweep_stale(&layout, "berth");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(left.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(!berth.join(format!("{dead}-a")).exists());
        assert!(!berth.join(format!("{dead}-busy")).exists());
        assert!(berth.join(format!("{me}-b")).exists());
        assert!(berth.join("notapid").exists());
    }

    /// Needs root and a writable cgroup filesystem; returns early with a note otherwise.
    #[test]
    fn real_kernel_round_trip() {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            berth_core::say!("note: not root, skipping the real cgroup test");
            return;
        }
        let layout = match Layout::detect() {
            Ok(layout) => layout,
            Err(e) => return berth_core::say!("note: {e}, skipping the real cgroup test"),
        };
        let limits = Limits {
            memory: Some(64 << 20),
            pids: Some(10),
            ..Limits::default()
        };
        let name = format!("{}-unit", std::process::id());
        let cg = match Cgroup::create(&layout, "berth-unit-test", &name, &limits) {
            Err(CgroupError::Create { source, .. })
                if source.raw_os_error() == Some(libc::EROFS) =>
            {
                return berth_core::say!(
                    "note: cgroup filesystem is read-only, skipping the real cgroup test"
                );
            }
            other => other.unwrap(),
        };
        let memory = cg.dir("memory").unwrap();
        let limit = if cg.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        assert_eq!(text(&memory.join(limit)), "67108864");
        assert_eq!(text(&cg.dir("pids").unwrap().join("pids.max")), "10");
        assert_eq!(cg.usage().cpu_usec, Some(0));
        let paths = cg.paths();
        cg.destroy().unwrap();
        assert!(paths.iter().all(|p| !p.exists()), "{paths:?}");
        for base in layout.hierarchies() {
            let _ = fs::remove_dir(base.join("berth-unit-test"));
        }
    }
}
