//! The job runner (`berth internal run-job`), which the node agent starts for every job.

use crate::support::*;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

struct Job {
    launch: PathBuf,
}

impl Job {
    /// Writes a script and a launch file for job `id` of the test user, in the user's directory.
    fn new(f: &Fixture, id: u64, script: &str, extra: serde_json::Value) -> Job {
        f.import(Mode::Root);
        let dir = f.path(&format!("job-{id}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        let script_path = dir.join("script");
        std::fs::write(&script_path, script).unwrap();
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown(&script_path, Some(f.user.uid), Some(f.user.gid)).unwrap();
        let record: serde_json::Value = serde_json::from_str(
            f.berth(Mode::Root, &["image", "inspect", "busybox", "--json"])
                .ok(),
        )
        .unwrap();
        let cwd = f.cwd(Mode::Rootless);
        let mut launch = serde_json::json!({
            "job_id": id,
            "user": TEST_USER,
            "image": record["squashfs"],
            "script": script_path,
            "workdir": cwd,
            "stdout": cwd.join(format!("job-{id}.out")),
            "stderr": cwd.join(format!("job-{id}.err")),
            "stdin": null,
            "env": [["SLURM_JOB_ID", id.to_string()], ["BERTH_JOB_ID", id.to_string()]],
            "cpuset": null,
            "memory": 268435456u64,
            "pids": 512,
            "time_limit": null,
        });
        for (k, v) in extra.as_object().unwrap() {
            launch[k] = v.clone();
        }
        let path = dir.join("launch.json");
        std::fs::write(&path, serde_json::to_vec(&launch).unwrap()).unwrap();
        Job { launch: path }
    }

    fn run(&self, f: &Fixture) -> serde_json::Value {
        let out = f.berth(
            Mode::Root,
            &["internal", "run-job", self.launch.to_str().unwrap()],
        );
        assert_eq!(out.code, 0, "the runner itself failed: {}", out.stderr);
        serde_json::from_slice(&std::fs::read(self.launch.with_extension("result.json")).unwrap())
            .unwrap()
    }
}

fn owner(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().uid()
}

#[test]
fn job_runs_as_its_user_with_its_files_and_environment() {
    let Some(f) = Fixture::new() else { return };
    let job = Job::new(
        &f,
        900041,
        "#!/bin/sh\necho \"job $SLURM_JOB_ID as $(id -un) in $PWD\"\necho oops >&2\nexit 3\n",
        serde_json::json!({}),
    );
    let result = job.run(&f);
    assert_eq!(result["exit_code"], 3, "{result}");
    assert_eq!(result["error"], serde_json::Value::Null);
    let cwd = f.cwd(Mode::Rootless);
    let out = cwd.join("job-900041.out");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("job 900041 as {TEST_USER} in {}\n", cwd.display())
    );
    assert_eq!(
        std::fs::read_to_string(cwd.join("job-900041.err")).unwrap(),
        "oops\n"
    );
    assert_eq!(owner(&out), f.user.uid, "output files belong to the user");
    assert!(
        result["cpu_usec"].as_u64() > Some(0) && result["max_rss_bytes"].as_u64() > Some(0),
        "accounting from the cgroup: {result}"
    );
}

#[test]
fn time_limit_stops_the_job() {
    let Some(f) = Fixture::new() else { return };
    let script =
        "#!/bin/sh\ntrap 'echo caught TERM; exit 9' TERM\necho started\nsleep 30 &\nwait\n";
    let job = Job::new(
        &f,
        900042,
        script,
        serde_json::json!({"time_limit": 1, "grace": 1}),
    );
    let result = job.run(&f);
    assert_eq!(result["timed_out"], true, "{result}");
    assert_eq!(
        result["exit_code"], 9,
        "the script's own TERM handler ran: {result}"
    );
    let out = std::fs::read_to_string(f.cwd(Mode::Rootless).join("job-900042.out")).unwrap();
    assert_eq!(out, "started\ncaught TERM\n");
    assert!(
        cgroups_named("-job900042").is_empty(),
        "{:?}",
        cgroups_named("-job900042")
    );
}

#[test]
fn output_symlink_cannot_make_root_write_elsewhere() {
    let Some(f) = Fixture::new() else { return };
    // A root-owned file the user may not write, and a symlink to it where the output goes.
    let target = f.path("root-only");
    std::fs::write(&target, "precious\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&target, f.cwd(Mode::Rootless).join("job-900043.out")).unwrap();
    let job = Job::new(
        &f,
        900043,
        "#!/bin/sh\necho overwritten\n",
        serde_json::json!({}),
    );
    let result = job.run(&f);
    assert_eq!(result["exit_code"], 125, "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{result}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
}

/// Cgroup directories whose name ends with `suffix` under berth's parent, in any hierarchy.
fn cgroups_named(suffix: &str) -> Vec<PathBuf> {
    [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/cpuset",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/freezer",
    ]
    .iter()
    .filter_map(|root| std::fs::read_dir(Path::new(root).join("berth")).ok())
    .flat_map(|entries| entries.flatten().map(|e| e.path()))
    .filter(|p| p.to_string_lossy().ends_with(suffix))
    .collect()
}
