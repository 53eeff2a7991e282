//! Submitting, running, watching and cancelling jobs.

use crate::cluster::Cluster;
use crate::support::*;

const HELLO: &str = "#!/bin/sh\n#SBATCH -J hello -n 1\n#BERTH --image busybox\necho \"job $SLURM_JOB_ID $SLURM_JOB_NAME as $(id -un) in $PWD with $SLURM_NTASKS task(s)\"\n";

#[test]
fn a_users_batch_script_runs_in_its_image_as_that_user() {
    let Some(c) = Cluster::start() else { return };
    let id = c.submit(Mode::Rootless, "hello.sh", HELLO, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(job["user"], TEST_USER);
    assert_eq!(job["exit_code"], 0);
    let cwd = c.f.cwd(Mode::Rootless);
    let out = cwd.join(format!("berth-{id}.out"));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!(
            "job {id} hello as {TEST_USER} in {} with 1 task(s)\n",
            cwd.display()
        )
    );
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&out).unwrap()),
        c.f.user.uid
    );
    let history = c.berth(Mode::Rootless, &["history"]);
    assert!(
        history
            .ok()
            .lines()
            .any(|l| l.contains(&id.to_string()) && l.contains("COMPLETED")),
        "{}",
        history.stdout
    );
    let plain = c.berth(
        Mode::Rootless,
        &["submit", cwd.join("hello.sh").to_str().unwrap()],
    );
    assert!(
        plain.ok().starts_with("Submitted batch job "),
        "{}",
        plain.stdout
    );
}

#[test]
fn lsf_and_pbs_scripts_run_unchanged() {
    let Some(c) = Cluster::start() else { return };
    let lsf = "#!/bin/sh\n#BSUB -n 1\n#BSUB -W 00:05\n#BSUB -J lsfjob\n#BSUB -o job-%J.out\n#BSUB -e job-%J.err\nexport APPLICATION=busybox\necho \"$LSB_JOBNAME $LSB_JOBID $LSB_DJOB_NUMPROC\"\necho to-stderr >&2\n";
    let id = c.submit(Mode::Rootless, "lsf.sh", lsf, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    assert_eq!(job["state"], "COMPLETED", "{job}");
    let cwd = c.f.cwd(Mode::Rootless);
    assert_eq!(
        std::fs::read_to_string(cwd.join(format!("job-{id}.out"))).unwrap(),
        format!("lsfjob {id} 1\n")
    );
    assert_eq!(
        std::fs::read_to_string(cwd.join(format!("job-{id}.err"))).unwrap(),
        "to-stderr\n"
    );
    let pbs = "#!/bin/sh\n#PBS -N pbsjob\n#PBS -l walltime=00:05:00\n#PBS -o pbs.out\nexport APPLICATION=busybox\necho \"$PBS_JOBNAME $PBS_O_WORKDIR\"; wc -l < $PBS_NODEFILE\n";
    let id = c.submit(Mode::Rootless, "pbs.sh", pbs, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(
        std::fs::read_to_string(cwd.join("pbs.out")).unwrap(),
        format!("pbsjob {}\n1\n", cwd.display())
    );
}

#[test]
fn bad_submissions_are_refused_with_the_reason() {
    let Some(c) = Cluster::start() else { return };
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "#!/bin/sh\n#SBATCH --time=abc\n#BERTH --image busybox\ntrue\n",
            &[],
            "line 2: #SBATCH --time=abc: invalid time limit 'abc'",
        ),
        (
            "#!/bin/sh\n#SBATCH -p nosuch\n#BERTH --image busybox\ntrue\n",
            &[],
            "unknown partition 'nosuch'",
        ),
        (
            "#!/bin/sh\n#BERTH --image nosuchimage\ntrue\n",
            &[],
            "image 'nosuchimage' not found",
        ),
        ("#!/bin/sh\ntrue\n", &[], "the job names no image"),
        (
            "#!/bin/sh\n#BERTH --image busybox\ntrue\n",
            &["-n", "100000"],
            "can never run here",
        ),
    ];
    for (script, options, message) in cases {
        let out = c.try_submit(Mode::Rootless, "bad.sh", script, options);
        assert_eq!(out.code, 125, "{script}: {}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "expected '{message}' in: {}",
            out.stderr
        );
    }
    assert_eq!(c.berth(Mode::Root, &["queue", "--json"]).ok().trim(), "[]");
    // Malformed API requests get a JSON 4xx, and the controller stays up.
    let answer = c.raw(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{\"nope\":1");
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("\"error\""),
        "{answer}"
    );
    let answer = c.raw(b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(c.berth(Mode::Root, &["queue", "--json"]).ok().trim(), "[]");
}

#[test]
fn cancel_time_limit_and_memory_end_jobs_in_their_states() {
    let Some(c) = Cluster::start() else { return };
    let sleeper = "#!/bin/sh\n#BERTH --image busybox\necho started\nexec sleep 600\n";
    let id = c.submit(Mode::Rootless, "sleep.sh", sleeper, &[]);
    c.wait_for(id, &["RUNNING"]);
    // Only the owner (or root) may cancel.
    let other = c.submit(Mode::Root, "other.sh", sleeper, &[]);
    let denied = c.berth(Mode::Rootless, &["cancel", &other.to_string()]);
    assert_eq!(denied.code, 125);
    assert!(
        denied.stderr.contains("only its owner or root"),
        "{}",
        denied.stderr
    );
    c.berth(Mode::Rootless, &["cancel", &id.to_string()]).ok();
    c.berth(Mode::Root, &["cancel", &other.to_string()]).ok();
    assert_eq!(
        c.wait_for(id, &["CANCELLED", "FAILED", "COMPLETED"])["state"],
        "CANCELLED"
    );
    assert_eq!(
        c.wait_for(other, &["CANCELLED", "FAILED", "COMPLETED"])["state"],
        "CANCELLED"
    );

    let limited = c.submit(Mode::Rootless, "limited.sh", sleeper, &["--time=0:02"]);
    let job = c.wait_for(limited, &["TIMEOUT", "FAILED", "COMPLETED", "CANCELLED"]);
    assert_eq!(job["state"], "TIMEOUT", "{job}");

    let hog = "#!/bin/sh\n#SBATCH --mem=32M\n#BERTH --image busybox\n/bin/probe hog 256\n";
    let oom = c.submit(Mode::Rootless, "hog.sh", hog, &[]);
    let job = c.wait_for(oom, &["OUT_OF_MEMORY", "FAILED", "COMPLETED"]);
    assert_eq!(job["state"], "OUT_OF_MEMORY", "{job}");
}

#[test]
fn dependencies_and_arrays() {
    let Some(c) = Cluster::start() else { return };
    let first = c.submit(
        Mode::Rootless,
        "first.sh",
        "#!/bin/sh\n#BERTH --image busybox\nsleep 1; echo first > order.txt\n",
        &[],
    );
    let dep = format!("--dependency=afterok:{first}");
    let second = c.submit(
        Mode::Rootless,
        "second.sh",
        "#!/bin/sh\n#BERTH --image busybox\necho second >> order.txt\n",
        &[&dep],
    );
    let pending = c.show(second);
    assert!(
        pending["state"] == "PENDING" && pending["reason"] == "Dependency",
        "{pending}"
    );
    assert_eq!(
        c.wait_for(second, &["COMPLETED", "FAILED", "CANCELLED"])["state"],
        "COMPLETED"
    );
    assert_eq!(
        std::fs::read_to_string(c.f.cwd(Mode::Rootless).join("order.txt")).unwrap(),
        "first\nsecond\n"
    );

    let array = c.submit(Mode::Rootless, "array.sh", "#!/bin/sh\n#SBATCH --array=1-3%1\n#BERTH --image busybox\necho \"task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID\"\n", &[]);
    for (n, index) in (1..=3).enumerate() {
        let id = array + n as u64;
        let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
        assert_eq!(job["state"], "COMPLETED", "{job}");
        let out = std::fs::read_to_string(
            c.f.cwd(Mode::Rootless)
                .join(format!("berth-{array}_{index}.out")),
        )
        .unwrap();
        assert_eq!(out, format!("task {index} of {array}\n"));
    }
}

#[test]
fn killing_the_controller_loses_nothing() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let done = c.submit(Mode::Rootless, "done.sh", HELLO, &[]);
    c.wait_for(done, &["COMPLETED"]);
    let running = c.submit(
        Mode::Rootless,
        "run.sh",
        "#!/bin/sh\n#BERTH --image busybox\nsleep 2; echo survived\n",
        &[],
    );
    c.wait_for(running, &["RUNNING"]);
    let held = c.submit(Mode::Rootless, "held.sh", HELLO, &["--hold"]);
    c.kill();
    c.up();
    assert_eq!(c.show(held)["state"], "PENDING");
    assert_eq!(c.show(done)["state"], "COMPLETED");
    let job = c.wait_for(running, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(
        std::fs::read_to_string(c.f.cwd(Mode::Rootless).join(format!("berth-{running}.out")))
            .unwrap(),
        "survived\n"
    );
}
