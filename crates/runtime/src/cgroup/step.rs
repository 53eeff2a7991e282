//! A job step's own cgroup below its job's, as Slurm gives each step one: its tasks are held
//! to the step's limits within the job's (`srun --mem`), the kernel's OOM kills among them
//! are the step's alone to count, and what they leave behind is found and killed when the
//! step ends.
//!
//! The step's process makes it on the host, then enters the job's container, where the
//! cgroup file systems are out of reach: so everything done with the cgroup afterwards (its
//! tasks join it, the step's process reads its OOM kills and removes it) goes through
//! descriptors opened here. The step's process itself stays in the job's cgroup: in the
//! step's, the OOM killer could pick it (it is bigger than a small task) and leave its
//! tasks unwatched.

use super::{existing_dirs, keyed, sigkill, Cgroup, CgroupError, CpuTime, Layout, Limits};
use crate::sys;
use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

/// How long [`StepCgroup::finish`] tries to remove the cgroup while what its tasks left
/// behind dies (it is not this process's to reap); then the job's end removes it.
const REMOVE_TRIES: u32 = 12;

/// What the kernel accounted to a step's cgroup by its end: its OOM kills, and the CPU time
/// of every process that was in it (those its tasks left behind and did not wait for too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepAccounting {
    pub oom_kills: u64,
    pub user_usec: Option<u64>,
    pub system_usec: Option<u64>,
}

/// A step's cgroup, `<parent>/<job>/step_<N>`, in every hierarchy its limits need.
#[derive(Debug)]
pub struct StepCgroup {
    name: String,
    v2: bool,
    parts: Vec<Part>,
}

/// The step's cgroup in one hierarchy.
#[derive(Debug)]
struct Part {
    /// The job's directory, where the step's is removed from.
    job: OwnedFd,
    /// The step's directory.
    own: OwnedFd,
    /// Writing "0" moves the writing process into the step's cgroup (v1: its thread).
    into: fs::File,
    /// Whether the hierarchy has the memory controller.
    memory: bool,
    /// Whether it accounts CPU time (v1's cpuacct; every v2 cgroup's cpu.stat).
    cpu: bool,
}

impl StepCgroup {
    /// Creates the cgroup of step `step` below the job's `<parent>/<job>` (which must exist:
    /// an ended job's steps get none) with `limits`, and opens its files.
    pub fn create(
        layout: &Layout,
        parent: &str,
        job: &str,
        step: u32,
        limits: &Limits,
    ) -> Result<StepCgroup, CgroupError> {
        let gone = || CgroupError::JobGone {
            name: format!("{parent}/{job}"),
        };
        let jobs = existing_dirs(layout, parent, job);
        if jobs.is_empty() {
            return Err(gone());
        }
        let name = step_name(step);
        let cgroup = Cgroup::make(layout, &format!("{parent}/{job}"), &name, limits, false)?;
        // In a hierarchy the job's cgroup is not in (yet: its runner makes it), the step's
        // would have made it, and the job could not: both go.
        let strays: Vec<std::path::PathBuf> = (cgroup.dirs.iter())
            .filter_map(|(dir, _)| dir.parent())
            .filter(|job_dir| !jobs.iter().any(|j| j == job_dir))
            .map(Path::to_path_buf)
            .collect();
        if !strays.is_empty() {
            let _ = cgroup.destroy();
            for stray in strays {
                let _ = fs::remove_dir(stray);
            }
            return Err(gone());
        }
        let v2 = cgroup.v2;
        let opened: Result<Vec<Part>, CgroupError> = cgroup
            .dirs
            .iter()
            .map(|(dir, cs)| Part::open(dir, cs, v2))
            .collect();
        match opened {
            Ok(parts) => Ok(StepCgroup { name, v2, parts }),
            Err(e) => {
                let _ = cgroup.destroy();
                Err(e)
            }
        }
    }

    /// The files a task writes "0" to, as its first act after its fork, to join the step's
    /// cgroup (`enter::Task::cgroup`): kept open across the fork, closed at its exec.
    pub fn task_files(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.parts.iter().map(|p| p.into.as_raw_fd()).collect()
    }

    /// Once the step's tasks have ended: kills what they left in the step's cgroup and
    /// removes it (as dropping it does, where the tasks could not be started). Returns how
    /// many of its processes the kernel's OOM killer killed, and their CPU time.
    pub fn finish(mut self) -> StepAccounting {
        let oom_file = match self.v2 {
            true => "memory.events",
            false => "memory.oom_control",
        };
        let oom_kills = self
            .parts
            .iter()
            .find(|p| p.memory)
            .and_then(|p| read_at(&p.own, oom_file))
            .and_then(|text| keyed(&text, "oom_kill"))
            .unwrap_or(0);
        let mut end = StepAccounting {
            oom_kills,
            ..StepAccounting::default()
        };
        self.remove(&mut end);
        end
    }

    /// Removes the cgroup, what is left in it killed; once. Its CPU time goes in `end`, as
    /// read last before it went (once what was left in it had ended).
    fn remove(&mut self, end: &mut StepAccounting) {
        let parts = std::mem::take(&mut self.parts);
        let mut pause = Duration::from_millis(5);
        for _ in 0..REMOVE_TRIES {
            let mut left = 0;
            for p in &parts {
                // (Once it is gone, what was read before stays.)
                if p.cpu {
                    if let (Some(user), Some(system)) = p.cpu_time(self.v2) {
                        (end.user_usec, end.system_usec) = (Some(user), Some(system));
                    }
                }
                match sys::rmdir_at(&p.job, &self.name) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() != Some(libc::EBUSY) => {}
                    Err(_) => {
                        left += 1;
                        p.kill(self.v2);
                    }
                }
            }
            if left == 0 {
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

/// The name of step `step`'s cgroup in its job's.
pub fn step_name(step: u32) -> String {
    format!("step_{step}")
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        self.remove(&mut StepAccounting::default());
    }
}

impl Part {
    fn open(dir: &Path, controllers: &[String], v2: bool) -> Result<Part, CgroupError> {
        let job_dir = dir.parent().expect("a step's cgroup lies below its job's");
        let directory = |path: &Path| {
            sys::open(path, libc::O_PATH | libc::O_DIRECTORY).map_err(|source| CgroupError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        // (v1's `tasks` moves a thread, v2's cgroup.procs a process; creating it is
        // harmless on cgroupfs, where it exists or the open fails, and lets tests use a
        // plain tree.)
        let mover = |dir: &Path| -> Result<fs::File, CgroupError> {
            let path = dir.join(if v2 { "cgroup.procs" } else { "tasks" });
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|source| CgroupError::Write {
                    path,
                    value: "0".into(),
                    source,
                })
        };
        Ok(Part {
            job: directory(job_dir)?,
            own: directory(dir)?,
            into: mover(dir)?,
            memory: v2 || controllers.iter().any(|c| c == "memory"),
            cpu: v2 || controllers.iter().any(|c| c == "cpuacct"),
        })
    }

    /// The CPU time accounted to the cgroup so far, user and system, microseconds.
    fn cpu_time(&self, v2: bool) -> (Option<u64>, Option<u64>) {
        let cpu = CpuTime::read(v2, |_, file| read_at(&self.own, file));
        (cpu.user_usec, cpu.system_usec)
    }

    /// Kills every process left in the step's cgroup here.
    fn kill(&self, v2: bool) {
        if v2 {
            let killed = sys::open_beneath(&self.own, "cgroup.kill", libc::O_WRONLY)
                .map(fs::File::from)
                .and_then(|mut f| f.write_all(b"1"));
            if killed.is_ok() {
                return;
            }
        }
        let procs = read_at(&self.own, "cgroup.procs").unwrap_or_default();
        let pids: BTreeSet<libc::pid_t> = procs
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.into_iter().for_each(sigkill);
    }
}

/// The text of file `name` in directory `dir`.
fn read_at(dir: &OwnedFd, name: &str) -> Option<String> {
    let mut text = String::new();
    let mut file = fs::File::from(sys::open_beneath(dir, name, libc::O_RDONLY).ok()?);
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{v1_tree, v2_tree};
    use super::super::{joinable, PROCESS_LEAF};
    use super::*;

    fn text(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn v1_step_cgroup_lies_below_the_jobs_with_its_limit() {
        let (tmp, layout) = v1_tree();
        let job = Cgroup::create(&layout, "berth", "7-job", &Limits::default()).unwrap();
        let limits = Limits {
            memory: Some(64 << 20),
            ..Limits::default()
        };
        let step = StepCgroup::create(&layout, "berth", "7-job", 3, &limits).unwrap();
        let memory = tmp.path().join("memory/berth/7-job/step_3");
        assert_eq!(text(&memory.join("memory.limit_in_bytes")), "67108864");
        // Its tasks stay in the job's cpuset and freezer cgroups.
        for hierarchy in ["cpuset", "freezer"] {
            let job = tmp.path().join(hierarchy).join("berth/7-job");
            assert!(job.is_dir() && !job.join("step_3").exists());
        }
        // A task joins it by its own write (as here, this test's process).
        for fd in step.task_files() {
            // SAFETY: write(2) of a live one-byte buffer to a descriptor the step holds.
            assert_eq!(unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) }, 1);
        }
        assert_eq!(text(&memory.join("tasks")), "0");
        fs::write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\noom_kill 2\n",
        )
        .unwrap();
        let cpuacct = tmp.path().join("cpu,cpuacct/berth/7-job/step_3");
        fs::write(cpuacct.join("cpuacct.usage_user"), "3000000\n").unwrap();
        fs::write(cpuacct.join("cpuacct.usage_sys"), "1500000\n").unwrap();
        let end = step.finish();
        assert_eq!(
            end,
            StepAccounting {
                oom_kills: 2,
                user_usec: Some(3000),
                system_usec: Some(1500)
            }
        );
        drop(job);
    }

    #[test]
    fn v2_steps_and_the_jobs_processes_are_siblings() {
        let (tmp, layout) = v2_tree();
        let job = Cgroup::create(&layout, "berth", "7-job", &Limits::default())
            .unwrap()
            .with_leaf()
            .unwrap();
        let jobs = tmp.path().join("berth/7-job");
        assert!(jobs.join(PROCESS_LEAF).is_dir());
        assert_eq!(joinable(&jobs), jobs.join(PROCESS_LEAF));
        let limits = Limits {
            memory: Some(64 << 20),
            ..Limits::default()
        };
        let step = StepCgroup::create(&layout, "berth", "7-job", 0, &limits).unwrap();
        assert_eq!(text(&jobs.join("step_0/memory.max")), "67108864");
        assert!(text(&jobs.join("cgroup.subtree_control")).contains("memory"));
        assert_eq!(step.task_files().len(), 1);
        fs::write(
            jobs.join("step_0/cpu.stat"),
            "usage_usec 70\nuser_usec 50\nsystem_usec 20\n",
        )
        .unwrap();
        let end = step.finish();
        assert_eq!(
            (end.oom_kills, end.user_usec, end.system_usec),
            (0, Some(50), Some(20))
        );
        drop(job);
    }

    #[test]
    fn a_step_never_makes_its_jobs_cgroup() {
        let (tmp, layout) = v1_tree();
        // The job's runner has made its cgroup in one hierarchy so far.
        fs::create_dir_all(tmp.path().join("memory/berth/9-job")).unwrap();
        let err = StepCgroup::create(&layout, "berth", "9-job", 0, &Limits::default());
        assert!(matches!(err, Err(CgroupError::JobGone { .. })), "{err:?}");
        assert!(!tmp.path().join("freezer/berth/9-job").exists());
        assert!(tmp.path().join("memory/berth/9-job").exists());
    }

    #[test]
    fn an_ended_jobs_step_gets_no_cgroup() {
        let (tmp, layout) = v1_tree();
        let err = StepCgroup::create(&layout, "berth", "8-job", 0, &Limits::default());
        assert!(matches!(err, Err(CgroupError::JobGone { .. })), "{err:?}");
        assert!(!tmp.path().join("memory/berth/8-job").exists());
    }
}
