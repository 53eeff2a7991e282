//! Job steps: `berth step` (srun) inside a job's script and from the host, into the job's
//! own container.

use crate::cluster::{granted, Cluster};
use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A job whose script runs `body` in the busybox image with `options`.
fn script(options: &str, body: &str) -> String {
    format!("#!/bin/sh\n#SBATCH {options}\n#BERTH --image busybox\n{body}\n")
}

fn output(c: &Cluster, id: u64) -> String {
    std::fs::read_to_string(c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out"))).unwrap()
}

/// sacct's lines for `jobs` (`42`, `42.0`, ...), `fields` of each, parsable, no header.
fn sacct(c: &Cluster, jobs: &str, fields: &str) -> String {
    let args = ["as", "sacct", "-j", jobs, "-n", "-P", "-o", fields];
    c.berth(Mode::Rootless, &args).ok().to_string()
}

/// Kills the all-in-one cluster (`kill -9`) and starts it again on its state, its jobs and
/// steps going on meanwhile.
fn restart(c: &mut Cluster) {
    c.kill();
    std::thread::sleep(Duration::from_millis(500));
    c.up();
}

/// The lines of `text` that start with `prefix`, sorted (tasks print in any order).
fn lines_with(text: &str, prefix: &str) -> Vec<String> {
    let mut l: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect();
    l.sort();
    l
}

/// Steps started together (`srun -n1 ... &` in a loop, task farming) each get CPUs of their
/// own, as Slurm's steps do: as many run at once as the job has CPUs for, and the others
/// wait for theirs (saying so, as srun does), but a step that overlaps (`--overlap`), which
/// starts at once.
#[test]
fn concurrent_steps_get_cpus_of_their_own_or_wait_for_them() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"for i in 1 2 3 4; do
  srun -n 1 sh -c 'touch "on.$SLURM_STEP_ID"; echo "cpus $(grep Cpus_allowed_list /proc/self/status | cut -f2) with $(ls on.* | wc -l)"; while [ ! -e release ]; do sleep 0.1; done; rm "on.$SLURM_STEP_ID"' 2> "err.$i" &
done
until [ "$(cat err.* | grep -c 'temporarily disabled')" = 2 ]; do sleep 0.1; done
srun -n 1 --overlap sh -c 'echo "overlapping $(ls on.* | wc -l)"'
srun -n 1 true 2> interrupted.err &
p=$!
until grep -q 'temporarily disabled' interrupted.err; do sleep 0.1; done
kill -INT $p
wait $p
echo "interrupted $?"
touch release
wait
cat err.*
srun -n 1 sh -c 'echo "alone $(grep Cpus_allowed_list /proc/self/status | cut -f2)"'"#;
    let id = c.submit(Mode::Rootless, "farm.sh", &script("-n 2", body), &[]);
    c.completed(id);
    let out = output(&c, id);
    // Never more than two at once, on both CPUs.
    let cpus = lines_with(&out, "cpus ");
    assert_eq!(cpus.len(), 4, "{out}");
    let mut used = Vec::new();
    for line in &cpus {
        let (cpu, with) = line["cpus ".len()..].split_once(" with ").unwrap();
        assert!(with == "1" || with == "2", "{out}");
        used.push(cpu.to_string());
    }
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 2, "{out}");
    assert!(out.contains("overlapping 2\n"), "{out}");
    // A waiting srun interrupted (Ctrl-C): no step, and srun's status for it.
    assert!(out.contains("interrupted 1\n"), "{out}");
    let waited = lines_with(&out, "srun: Job ");
    assert_eq!(
        waited,
        vec![
            format!(
            "srun: Job {id} step creation temporarily disabled, retrying (Requested nodes are busy)"
        );
            2
        ],
        "{out}"
    );
    assert_eq!(
        lines_with(&out, "srun: Step created for StepId=").len(),
        2,
        "{out}"
    );
    // Once they ended, their CPUs are free again: the next step gets the first.
    assert_eq!(
        lines_with(&out, "alone "),
        [format!("alone {}", used[0])],
        "{out}"
    );
}

/// A step's own memory (`srun --mem`, `--mem-per-cpu`), out of the job's: its tasks are
/// held to it in a cgroup of the step's, where the kernel's OOM kills are the step's alone
/// (OUT_OF_MEMORY in sacct, the job going on); more than the job has is refused; what a
/// running step holds, the job's next steps wait for, as Slurm's do. Every step has a
/// cgroup of its own, which goes with what its tasks left in it when it ends.
#[test]
fn a_steps_own_memory_holds_its_tasks_and_is_held_against_the_others() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"srun -n 1 --mem=32M /bin/probe hog 128; echo "hog $?"
srun -n 1 --mem-per-cpu=64M /bin/probe hog 16 && echo fits
srun -n 1 --mem=1G true; echo "too much $?"
srun -n 1 --mem=200M sh -c 'touch held; while [ ! -e release ]; do sleep 0.1; done' &
until [ -e held ]; do sleep 0.1; done
srun -n 1 --mem=100M sh -c 'echo "second ran"' 2> second.err &
p=$!
until grep -q 'temporarily disabled' second.err; do sleep 0.1; done
srun -n 1 --overlap --mem=100M sh -c 'echo "overlapping ran"'
srun -n 1 /bin/probe hog 16 && echo "shared ran"
touch release
wait $p
wait
srun -n 1 sh -c 'setsid sleep 300 & echo $! > left.pid'
# (Gone, or a zombie its new parent has not reaped.)
case "$(grep State: "/proc/$(cat left.pid)/status" 2>/dev/null)" in
  ""|*zombie*) echo "left gone";;
  *) echo "left alive";;
esac
srun -n 1 /bin/probe hog 512; echo "over the job's $?"
srun -n 1 --mem-per-cpu=0 /bin/probe hog 16 && echo "per-cpu 0 shares"
# The job's cgroup (v1's memory hierarchy, or v2's, above the job's own leaf): no step's left.
cg=$(sed -n 's/^[0-9]*:memory:\(.*\)/\1/p' /proc/self/cgroup)
case "$cg" in
  "") dir=/sys/fs/cgroup$(sed -n 's/^0::\(.*\)\/job$/\1/p' /proc/self/cgroup);;
  *) dir=/sys/fs/cgroup/memory$cg;;
esac
[ -d "$dir" ] || echo "no cgroup at $dir"
echo "steps while one runs $(srun -n 1 ls "$dir" | grep -c '^step_')"
echo "steps left $(ls "$dir" | grep -c '^step_')"
cat second.err"#;
    let id = c.submit(
        Mode::Rootless,
        "mem.sh",
        &script("-n 2 --mem=256M", body),
        &[],
    );
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "OUT_OF_MEMORY"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{out}");
    assert!(out.contains("hog 137\n"), "{out}");
    assert!(
        out.contains(&format!(
            "berth step: error: Detected 1 oom_kill event in step {id}.0 on "
        )),
        "{out}"
    );
    assert!(out.contains("\nfits\n"), "{out}");
    assert!(
        out.contains("asks for 1024M of memory on node ") && out.contains("more than job "),
        "{out}"
    );
    assert!(out.contains("too much 1\n"), "{out}");
    assert!(
        out.contains("overlapping ran\n") && out.contains("shared ran\n"),
        "{out}"
    );
    // The second waited for the memory the first held (saying so), until it was released,
    // after the steps that hold none.
    let waited = format!("srun: Job {id} step creation temporarily disabled, retrying (Memory required by task is not available)");
    assert!(out.contains(&waited), "{out}");
    let shared = out.find("shared ran").unwrap_or(usize::MAX);
    assert!(
        out.find("second ran").is_some_and(|at| at > shared),
        "{out}"
    );
    let steps = sacct(&c, &id.to_string(), "JobID,State,ExitCode");
    assert!(
        steps.contains(&format!("{id}.0|OUT_OF_MEMORY|0:125\n")),
        "{steps}"
    );
    assert!(
        steps.contains(&format!("{id}.1|COMPLETED|0:0\n")),
        "{steps}"
    );
    assert!(steps.contains(&format!("{id}|COMPLETED|0:0\n")), "{steps}");
    // What a step leaves behind (a process in a session of its own) goes with it; a step
    // over the job's memory, without a limit of its own, is that step's OOM kill too, not
    // the job's; --mem-per-cpu=0 shares the job's memory, as --mem=0 does.
    assert!(out.contains("left gone\n"), "{out}");
    assert!(out.contains("over the job's 137\n"), "{out}");
    assert!(out.contains("went over its job's memory limit"), "{out}");
    assert!(out.contains("per-cpu 0 shares\n"), "{out}");
    assert_eq!(steps.matches("|OUT_OF_MEMORY|0:125").count(), 2, "{steps}");
    // No step's cgroup is left once the steps have ended.
    assert!(
        out.contains("steps while one runs 1\nsteps left 0\n"),
        "{out}"
    );
}

/// squeue -s: the running steps of running jobs (the batch script's as `ID.batch`), in
/// squeue's columns or those asked for, one step or all; and sacct's NodeList of a step.
#[test]
fn squeue_lists_running_steps() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"srun -n 1 -J worker sh -c 'echo up; while [ ! -e stop ]; do sleep 0.1; done'"#;
    let id = c.submit(Mode::Rootless, "steps.sh", &script("-n 2", body), &[]);
    c.wait_for_output(id, "up");
    let node = c.show(id)["nodes"][0].as_str().unwrap().to_string();
    let ask = |args: &[&str]| c.berth(Mode::Rootless, args).ok().to_string();
    let all = ask(&["as", "squeue", "-s"]);
    let lines: Vec<Vec<&str>> = all
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["STEPID", "NAME", "PARTITION", "USER", "TIME", "NODELIST"],
        "{all}"
    );
    // (Cut to its column's eight characters, as squeue cuts it.)
    let user = &TEST_USER[..8];
    let batch = format!("{id}.batch");
    let step = format!("{id}.0");
    assert_eq!(lines.len(), 3, "{all}");
    assert_eq!(
        lines[1][..4],
        [batch.as_str(), "batch", "normal", user],
        "{all}"
    );
    assert_eq!(
        lines[2][..4],
        [step.as_str(), "worker", "normal", user],
        "{all}"
    );
    assert_eq!(lines[2][5], node, "{all}");
    let one = ask(&[
        "as",
        "squeue",
        &format!("--steps={step}"),
        "-h",
        "-o",
        "%i|%j|%A|%D|%N",
    ]);
    assert_eq!(one, format!("{step}|worker|1|1|{node}\n"));
    // scontrol's block of the step.
    let shown = ask(&["as", "scontrol", "show", "step", &step]);
    assert!(
        shown.starts_with(&format!("StepId={step} UserId={} StartTime=", c.f.user.uid))
            && shown.contains(&format!("\n   State=RUNNING Partition=normal NodeList={node}\n   Nodes=1 CPUs=1 Tasks=1 Name=worker Network=(null)\n")),
        "{shown}"
    );
    // All of them: the batch script's (ID.batch) first.
    let batch_block = ask(&["as", "scontrol", "show", "step", &batch]);
    assert!(
        batch_block.starts_with(&format!("StepId={batch} ")),
        "{batch_block}"
    );
    assert!(batch_block.contains(" Name=batch "), "{batch_block}");
    assert_eq!(
        ask(&["as", "scontrol", "show", "step"]),
        format!("{batch_block}{shown}")
    );
    // -i: again every second, each time after the time, until stopped.
    let mut every =
        c.f.cmd(Mode::Rootless, &["as", "squeue", "-i", "1", "-h", "-s"]);
    every.env("BERTH_SOCKET", &c.socket);
    let mut child = every
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut rounds: Vec<Vec<String>> = vec![Vec::new()];
    while rounds.len() < 3 {
        let line = lines.next().unwrap().unwrap();
        match line.is_empty() {
            true => rounds.push(Vec::new()),
            false => rounds.last_mut().unwrap().push(line),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for round in &rounds[..2] {
        // `Sun Dec  6 09:10:11 2026`, then its lines.
        assert_eq!(round.len(), 3, "{rounds:?}");
        let words: Vec<&str> = round[0].split_whitespace().collect();
        assert!(words.len() == 5 && words[3].contains(':'), "{rounds:?}");
        assert!(
            words[4].parse::<u32>().is_ok_and(|y| y >= 2024),
            "{rounds:?}"
        );
        assert!(
            round[1].trim_start().starts_with(&batch) && round[2].trim_start().starts_with(&step),
            "{rounds:?}"
        );
    }
    let bad = c.berth(Mode::Rootless, &["as", "squeue", "--steps=42"]);
    assert!(bad.stderr.contains("expected JOB.STEP"), "{}", bad.stderr);
    // A suspended job's steps are listed, suspended with it; its time suspended is not
    // theirs.
    c.berth(Mode::Root, &["suspend", &id.to_string()]).ok();
    assert_eq!(ask(&["as", "squeue", "-s", "-h"]).lines().count(), 2);
    let shown = ask(&["as", "scontrol", "show", "step", &step]);
    assert!(shown.contains("\n   State=SUSPENDED "), "{shown}");
    let states = sacct(&c, &step, "JobID,State");
    assert_eq!(states, format!("{step}|SUSPENDED\n"));
    std::thread::sleep(Duration::from_secs(3));
    c.berth(Mode::Root, &["resume", &id.to_string()]).ok();
    std::fs::write(c.f.cwd(Mode::Rootless).join("stop"), "").unwrap();
    c.completed(id);
    let times = sacct(&c, &id.to_string(), "JobID,ElapsedRaw");
    let seconds = |which: &str| -> u64 {
        let line = times.lines().find(|l| l.starts_with(&format!("{which}|")));
        line.and_then(|l| l.split('|').nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("{which}: {times}"))
    };
    assert!(seconds(&step) <= seconds(&id.to_string()), "{times}");
    assert_eq!(ask(&["as", "squeue", "-s", "-h"]), "");
    assert_eq!(
        ask(&["as", "scontrol", "show", "step"]),
        "No job steps in the system\n"
    );
    let acct = sacct(&c, &step, "JobID,NNodes,NodeList");
    assert_eq!(acct, format!("{step}|1|{node}\n"));
}

/// `srun -t` in a job: the step's own time limit, at which its tasks are ended (as
/// slurmstepd says), the job going on; sacct shows the step TIMEOUT with its limit. A step
/// within its limit completes; a limit berth cannot read is refused.
#[test]
fn a_step_ends_at_its_own_time_limit() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"srun -n 1 -t 0:02 sh -c 'trap "echo got-term; exit 7" TERM; echo begun; while :; do sleep 0.1; done; echo never'
echo "srun $?"
srun -n 1 --time=1 true && echo "in time"
srun -n 1 -t UNLIMITED true && echo "unlimited"
srun -n 1 -t soon true || echo "refused $?""#;
    let id = c.submit(Mode::Rootless, "limit.sh", &script("-n 1", body), &[]);
    c.completed(id);
    let out = output(&c, id);
    let node = c.show(id)["nodes"][0].as_str().unwrap().to_string();
    let said = format!("slurmstepd: error: *** STEP {id}.0 ON {node} CANCELLED AT ");
    assert!(
        out.contains(&said) && out.contains(" DUE TO TIME LIMIT ***\n"),
        "{out}"
    );
    // SIGTERM first, which its trap caught (the job's KillWait before the end signal).
    assert!(out.contains("begun\n") && !out.contains("never"), "{out}");
    assert!(
        out.contains("got-term\n") && out.contains("srun 7\n"),
        "{out}"
    );
    assert!(out.contains("in time\n"), "{out}");
    assert!(out.contains("unlimited\n"), "{out}");
    assert!(out.contains("--time: invalid time limit 'soon'"), "{out}");
    let acct = sacct(&c, &id.to_string(), "JobID,State,Timelimit");
    let lines: Vec<&str> = acct.lines().collect();
    assert!(
        lines.contains(&format!("{id}.0|TIMEOUT|00:00:02").as_str()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&format!("{id}.1|COMPLETED|00:01:00").as_str()),
        "{lines:?}"
    );
}

/// A step waiting for CPUs starts only in a running job: not once the job's script has
/// ended (whose end frees the CPUs of the steps it kills), nor in a cancelled job; in a
/// suspended one it waits on, and starts after the resume.
#[test]
fn a_waiting_step_starts_only_in_a_running_job() {
    let Some(c) = Cluster::start() else { return };
    let waiting = |end: &str| {
        format!(
            r#"rm -f up0 ghost waiter.err
srun -n 1 sh -c 'touch up0; exec sleep 100' &
while [ ! -e up0 ]; do sleep 0.1; done
srun -n 1 sh -c 'touch ghost; echo ran' 2> waiter.err &
until grep -q "temporarily disabled" waiter.err 2>/dev/null; do sleep 0.1; done
echo waiting
{end}"#
        )
    };
    let cwd = c.f.cwd(Mode::Rootless);
    let steps = |id: u64| c.show(id)["steps"].as_array().unwrap().len();
    // The script ends while the step waits.
    let id = c.submit(
        Mode::Rootless,
        "ends.sh",
        &script("-n 1", &waiting("exit 0")),
        &[],
    );
    c.completed(id);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!cwd.join("ghost").exists(), "{}", output(&c, id));
    assert_eq!(steps(id), 1, "{}", c.show(id));
    // The job is cancelled while the step waits.
    let id = c.submit(
        Mode::Rootless,
        "cancelled.sh",
        &script("-n 1", &waiting("wait")),
        &[],
    );
    c.wait_for_output(id, "waiting\n");
    c.berth(Mode::Rootless, &["cancel", &id.to_string()]).ok();
    c.wait_for(id, &["CANCELLED"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!cwd.join("ghost").exists(), "{}", output(&c, id));
    assert_eq!(steps(id), 1, "{}", c.show(id));
    // Suspended while the step waits: it starts once resumed and the CPU is free.
    let body = waiting("wait").replace("exec sleep 100", "sleep 2");
    let id = c.submit(Mode::Rootless, "suspended.sh", &script("-n 1", &body), &[]);
    c.wait_for_output(id, "waiting\n");
    c.berth(Mode::Root, &["suspend", &id.to_string()]).ok();
    std::thread::sleep(Duration::from_secs(3));
    c.berth(Mode::Root, &["resume", &id.to_string()]).ok();
    c.completed(id);
    assert!(output(&c, id).contains("ran\n"), "{}", output(&c, id));
    assert!(cwd.join("ghost").exists());
}

#[test]
fn steps_run_their_tasks_in_the_jobs_own_container_as_the_user() {
    let Some(c) = Cluster::start() else { return };
    // The script writes into its container's private /tmp; the tasks must see it there, in
    // the job's cgroup, each pinned to its own core.
    let body = r#"echo mine > /tmp/marker
berth step sh -c 'echo "task $SLURM_PROCID/$SLURM_NTASKS ($SLURM_GTIDS) step $SLURM_STEP_ID $(cat /tmp/marker) $(id -un) cgroup=$(grep -c "/berth/.*-job$SLURM_JOB_ID" /proc/self/cgroup) cpus=$(grep Cpus_allowed_list /proc/self/status | cut -f2)"'
echo "first step: $?"
srun_like=$(berth srun -n 1 sh -c 'echo $SLURM_STEP_ID')
echo "second step: $srun_like""#;
    let id = c.submit(Mode::Rootless, "steps.sh", &script("-n 2", body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", output(&c, id));
    let out = output(&c, id);
    let tasks = lines_with(&out, "task ");
    assert_eq!(tasks.len(), 2, "{out}");
    for (rank, line) in tasks.iter().enumerate() {
        assert!(
            line.starts_with(&format!(
                "task {rank}/2 (0,1) step 0 mine {TEST_USER} cgroup="
            )),
            "{line}"
        );
        assert!(
            !line.contains("cgroup=0"),
            "task outside the job's cgroup: {line}"
        );
    }
    // Two tasks of one CPU each on a two-CPU allocation: each has a CPU of its own.
    let cpus: Vec<&str> = tasks
        .iter()
        .map(|l| l.rsplit("cpus=").next().unwrap())
        .collect();
    assert_ne!(cpus[0], cpus[1], "{out}");
    assert!(out.contains("first step: 0\n"), "{out}");
    assert!(out.contains("second step: 1\n"), "{out}");
    let steps = job["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{job}");
    assert_eq!(steps[0]["ntasks"], 2);
    assert_eq!(steps[0]["exit_code"], 0);
    assert_eq!(steps[1]["ntasks"], 1);
    assert!(steps[0]["command"].as_str().unwrap().starts_with("sh -c"));
    let shown = c.berth(Mode::Rootless, &["show", &id.to_string()]);
    assert!(
        shown
            .ok()
            .contains(&format!("Step={id}.0 NumTasks=2 ExitCode=0:0")),
        "{}",
        shown.stdout
    );
}

/// Each step's own CPU time and peak memory (its tasks', summed and the largest), beside the
/// job's from its cgroup, in `berth history --json`, sacct's fields and `berth show`; also
/// of a step still running when the script ends (which the job's end kills).
#[test]
fn steps_record_what_their_tasks_used() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"berth step -n 2 sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'
berth step -n 1 dd if=/dev/zero of=/dev/null bs=32M count=1
berth step -n 1 true
berth step -n 1 sh -c 'dd if=/dev/zero of=/dev/null bs=24M count=1 2>/dev/null; touch running; exec sleep 60' &
berth step --pty sh -c 'dd if=/dev/zero of=/dev/null bs=20M count=1 2>/dev/null; touch pty; exec sleep 60' < /dev/null > /dev/null &
while [ ! -e running ] || [ ! -e pty ]; do sleep 0.1; done
berth step -n 1 --overlap sh -c '(setsid sh -c "i=0; while [ \$i -lt 200000 ]; do i=\$((i+1)); done; touch looped" &); while [ ! -e looped ]; do sleep 0.1; done'"#;
    let id = c.submit(Mode::Rootless, "used.sh", &script("-n 2", body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", output(&c, id));
    let usage: Vec<berth_api::StepUsage> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| serde_json::from_value(s["usage"].clone()).unwrap_or_else(|_| panic!("{job}")))
        .collect();
    let [busy, big, idle, left, pty, orphan] = usage[..] else {
        panic!("{job}")
    };
    // The steps left running (one on a terminal): the job's end had their step processes
    // kill their tasks and say what they used.
    let mut rss = [left.max_rss_bytes, pty.max_rss_bytes];
    rss.sort();
    assert!(rss[0] >= 20 << 20 && rss[1] >= 24 << 20, "{job}");
    for step in [3, 4] {
        // (Its SIGTERM, which sleep dies of, as Slurm's steps get first.)
        assert_eq!(job["steps"][step]["exit_code"], 143, "{job}");
        // Ended by the job's end: CANCELLED, as Slurm's.
        assert_eq!(job["steps"][step]["cancelled"], true, "{job}");
    }
    let cpu = |u: berth_api::StepUsage| u.user_usec + u.system_usec;
    // The loop's two tasks used more CPU than `true`, and less than the job, whose cgroup
    // they were in; dd's 32 MiB buffer is its peak, which the others never reach.
    assert!(cpu(busy) > cpu(idle), "{job}");
    // The loop a task left to itself (setsid, not waited for) is its step's, as its
    // cgroup counts it: about half the two tasks' loops, where their waits saw none.
    assert!(cpu(orphan) * 4 > cpu(busy), "{job}");
    assert!(
        cpu(busy) + cpu(big) + cpu(idle) <= job["cpu_usec"].as_u64().unwrap(),
        "{job}"
    );
    assert!(big.max_rss_bytes >= 32 << 20, "{job}");
    assert!(
        busy.max_rss_bytes < 32 << 20 && idle.max_rss_bytes < 32 << 20,
        "{job}"
    );
    // The job's own CPU time, split as sacct's UserCPU and SystemCPU.
    let (user, system) = (
        job["user_cpu_usec"].as_u64().unwrap(),
        job["system_cpu_usec"].as_u64().unwrap(),
    );
    assert!(user > 0 && user + system > 0, "{job}");
    let sacct = sacct(
        &c,
        &id.to_string(),
        "JobID,NTasks,TotalCPU,UserCPU,MaxRSS,AveCPU,AveRSS",
    );
    let lines: Vec<Vec<&str>> = sacct.lines().map(|l| l.split('|').collect()).collect();
    // The job's, its batch step's, then its steps'.
    assert_eq!(lines.len(), 8, "{sacct}");
    assert_eq!(lines[0][..2], [id.to_string().as_str(), "2"], "{sacct}");
    assert_eq!(
        lines[1][..2],
        [format!("{id}.batch").as_str(), "1"],
        "{sacct}"
    );
    assert_eq!(lines[3][..2], [format!("{id}.1").as_str(), "1"], "{sacct}");
    let dd_rss = berth_size(lines[3][4]);
    assert_eq!(dd_rss, big.max_rss_bytes.div_ceil(1024) * 1024, "{sacct}");
    for line in &lines {
        assert!(line[2] != "-" && line[3] != "-", "{sacct}");
    }
    // The batch step's CPU time is the batch shell's own: the job's, less its steps'.
    let seconds = |t: &str| -> f64 {
        let (days, clock) = t.split_once('-').unwrap_or(("0", t));
        let days: f64 = days.parse().unwrap();
        let clock = (clock.split(':').map(|p| p.parse::<f64>().unwrap()))
            .fold(0.0, |total, part| total * 60.0 + part);
        days * 86_400.0 + clock
    };
    let steps_cpu = (cpu(busy) + cpu(big) + cpu(idle)) as f64 / 1e6;
    assert!(
        seconds(lines[1][2]) <= seconds(lines[0][2]) - steps_cpu + 0.01,
        "{sacct}"
    );
    // Averages over each line's tasks: none on the job's own; a task's own where there is
    // one; CPU only where there are more (their sizes are not known apart).
    assert_eq!(lines[0][5..], ["", ""], "{sacct}");
    for line in &lines[1..] {
        match line[1] {
            "1" => assert_eq!((line[5], line[6]), (line[2], line[4]), "{sacct}"),
            _ => assert!(!line[5].is_empty() && line[6].is_empty(), "{sacct}"),
        }
    }
    let shown = c
        .berth(Mode::Rootless, &["show", &id.to_string()])
        .ok()
        .to_string();
    assert!(
        shown.contains(&format!("Step={id}.1 NumTasks=1 ExitCode=0:0 Elapsed=")),
        "{shown}"
    );
    assert!(
        shown.contains(" MaxRSS=") && shown.contains(" TotalCPU="),
        "{shown}"
    );
    // seff: the job's use of its two cores and of the node's memory (it has no limit).
    let seff = c.berth(Mode::Rootless, &["as", "seff", &id.to_string()]);
    let seff = seff.ok();
    assert!(
        seff.starts_with(&format!(
            "Job ID: {id}\nUser/Group: {TEST_USER}/{TEST_USER}\nState: COMPLETED (exit code 0)\nNodes: 1\nCores per node: 2\nCPU Utilized: "
        )),
        "{seff}"
    );
    assert!(seff.contains("\nMemory Efficiency: "), "{seff}");
}

/// A size as sacct prints one (`5224K`, `32M`), in bytes.
fn berth_size(text: &str) -> u64 {
    let (n, unit) = text.split_at(text.len() - 1);
    let shift = match unit {
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => panic!("{text}: not a size"),
    };
    n.parse::<u64>().unwrap() << shift
}

/// srun --multi-prog: each task runs its own program from the configuration (MPMD), with its
/// rank and its offset among its line's; a task without a program is refused up front.
#[test]
fn multi_prog_gives_each_task_its_own_program() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"printf '%s\n' '# MPMD' "0 sh -c 'echo master %t'" '1-2 echo worker %t %o' > mp.conf
berth step -n 3 --overcommit --multi-prog mp.conf | sort
srun -n 4 --overcommit --multi-prog mp.conf
echo "uncovered: $?""#;
    let id = c.submit(Mode::Rootless, "mpmd.sh", &script("-n 2", body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    assert!(
        out.starts_with("master 0\nworker 1 0\nworker 2 1\n"),
        "{out}"
    );
    assert!(out.contains("gives task 3 no program"), "{out}");
    assert!(!out.contains("uncovered: 0"), "{out}");
}

#[test]
fn a_steps_status_is_its_worst_tasks_and_a_failing_task_ends_the_rest() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"berth step -n 2 --kill-on-bad-exit sh -c '[ $SLURM_PROCID = 1 ] && exit 3; sleep 60'
echo "killed: $?"
berth step -n 2 sh -c '[ $SLURM_PROCID = 1 ] && exit 3; sleep 0.5; echo slow-done; exit 2'
echo "kept: $?"
berth step -n 2 --label sh -c 'echo out; echo err >&2'
berth step -n 1 no-such-program
echo "missing: $?"
berth step -n 1 sh -c 'kill -9 $$'
echo "signalled: $?""#;
    let id = c.submit(Mode::Rootless, "worst.sh", &script("-n 2", body), &[]);
    let started = Instant::now();
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    // The sleeping task was killed, not waited for.
    assert!(started.elapsed() < Duration::from_secs(50), "{job}");
    let out = output(&c, id);
    assert!(out.contains("killed: 3\n"), "{out}");
    assert!(out.contains("killing task 0 (--kill-on-bad-exit)"), "{out}");
    assert!(out.contains("kept: 3\n"), "{out}");
    assert!(out.contains("slow-done\n"), "{out}");
    assert!(out.contains("task 1: exited with exit code 3"), "{out}");
    assert_eq!(
        lines_with(&out, "0: ")
            .into_iter()
            .chain(lines_with(&out, "1: "))
            .collect::<Vec<_>>(),
        ["0: err", "0: out", "1: err", "1: out"],
        "{out}"
    );
    assert!(
        out.contains("no-such-program: command not found in the image"),
        "{out}"
    );
    assert!(out.contains("missing: 127\n"), "{out}");
    assert!(out.contains("signalled: 137\n"), "{out}");
    let codes: Vec<_> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["exit_code"].clone())
        .collect();
    assert_eq!(
        codes,
        [3, 3, 0, 127, 137].map(serde_json::Value::from),
        "{job}"
    );
    // sacct lists the job, then its steps by their programs' names (-X: the job alone).
    let sacct = |x: &[&str]| {
        let id = id.to_string();
        let mut args = vec![
            "as",
            "sacct",
            "-j",
            &id,
            "-n",
            "-P",
            "-o",
            "JobID,JobName,State,ExitCode",
        ];
        args.extend_from_slice(x);
        c.berth(Mode::Rootless, &args).ok().to_string()
    };
    assert_eq!(
        sacct(&[]),
        format!(
            "{id}|worst.sh|COMPLETED|0:0\n{id}.batch|batch|COMPLETED|0:0\n{id}.0|sh|FAILED|3:0\n{id}.1|sh|FAILED|3:0\n{id}.2|sh|COMPLETED|0:0\n{id}.3|no-such-program|FAILED|127:0\n{id}.4|sh|FAILED|0:9\n"
        )
    );
    assert_eq!(sacct(&["-X"]), format!("{id}|worst.sh|COMPLETED|0:0\n"));
    // Steps by name (JOB.STEP): theirs alone.
    let two = format!("{id}.1,{id}.3");
    let named = ["as", "sacct", "-j", &two, "-n", "-P", "-o", "JobID,State"];
    assert_eq!(
        c.berth(Mode::Rootless, &named).ok(),
        format!("{id}.1|FAILED\n{id}.3|FAILED\n")
    );
}

/// `berth cancel JOB.STEP` (scancel's): that step ends, CANCELLED, and its job goes on;
/// a step's name (srun -J) is its own.
#[test]
fn one_step_is_cancelled_and_its_job_goes_on() {
    let Some(c) = Cluster::start() else { return };
    let body = "srun -n 1 sh -c 'trap \"echo got-usr1\" USR1; echo up; while :; do sleep 0.1; done'\necho \"step ended $?\"\nsrun -J second -n 1 true\necho done";
    let id = c.submit(Mode::Rootless, "cancel-step.sh", &script("-n 1", body), &[]);
    c.wait_for_output(id, "up\n");
    // A signal for its tasks alone (scancel -s SIG JOB.STEP).
    c.berth(
        Mode::Rootless,
        &["as", "scancel", "-s", "USR1", &format!("{id}.0")],
    )
    .ok();
    c.wait_for_output(id, "got-usr1\n");
    // Not a step it does not have, nor with a signal.
    let none = c.berth(Mode::Rootless, &["cancel", &format!("{id}.7")]);
    assert!(
        none.code == 1 && none.stderr.contains("has no step 7"),
        "{}",
        none.stderr
    );
    c.berth(Mode::Rootless, &["cancel", &format!("{id}.0")])
        .ok();
    let job = c.completed(id);
    // (After the step's own word of its task's end.) Its tasks had SIGTERM (the shell has
    // no trap for it), as slurmstepd says.
    let out = output(&c, id);
    assert!(out.ends_with("step ended 143\ndone\n"), "{out}\n{job}");
    let said = format!("slurmstepd: error: *** STEP {id}.0 ON ");
    assert!(
        out.contains(&said) && out.contains(" CANCELLED AT "),
        "{out}"
    );
    // (A step named with -J has that name.)
    let two = format!("{id}.0,{id}.1");
    let sacct = ["history", "-j", &two, "-nP", "-o", "JobID,JobName,State"];
    assert_eq!(
        c.berth(Mode::Rootless, &sacct).ok(),
        format!("{id}.0|sh|CANCELLED\n{id}.1|second|COMPLETED\n")
    );
    let ended = c.berth(Mode::Rootless, &["cancel", &format!("{id}.0")]);
    assert!(ended.code == 1, "{}", ended.stderr);
}

#[test]
fn steps_are_refused_with_the_reason() {
    let Some(c) = Cluster::start() else { return };
    let sleeper = script("-n 1", "exec sleep 300");
    let id = c.submit(Mode::Root, "root-sleeps.sh", &sleeper, &[]);
    c.wait_for(id, &["RUNNING"]);
    let job = id.to_string();
    // Someone else's job.
    let other = c.berth(Mode::Rootless, &["step", "--job", &job, "true"]);
    assert_eq!(other.code, 125, "{}", other.stderr);
    assert!(
        other.stderr.contains("only its owner or root"),
        "{}",
        other.stderr
    );
    // More tasks than the job has CPUs, unless overcommitted.
    let many = c.berth(Mode::Root, &["step", "--job", &job, "-n", "3", "true"]);
    assert_eq!(many.code, 125);
    assert!(many.stderr.contains("more than job"), "{}", many.stderr);
    assert!(many.stderr.contains("--overcommit"), "{}", many.stderr);
    let over = c.berth(
        Mode::Root,
        &["step", "--job", &job, "-n", "3", "--overcommit", "true"],
    );
    assert_eq!(over.code, 0, "{}", over.stderr);
    // No job, a job that is not running, no job at all.
    let none = c.berth(Mode::Root, &["step", "--job", "99999", "true"]);
    assert!(
        none.stderr.contains("job 99999 is not running"),
        "{}",
        none.stderr
    );
    let outside = c.berth(Mode::Rootless, &["step", "true"]);
    assert_eq!(outside.code, 125);
    // Outside a job it asks for an allocation, which needs an image here.
    assert!(
        outside.stderr.contains("names no image"),
        "{}",
        outside.stderr
    );
    let nodes = c.berth(Mode::Root, &["step", "--job", &job, "-N", "2", "true"]);
    assert!(nodes.stderr.contains("-N"), "{}", nodes.stderr);
    c.berth(Mode::Root, &["cancel", &job]).ok();
    c.wait_for(id, &["CANCELLED"]);
    let ended = c.berth(Mode::Root, &["step", "--job", &job, "true"]);
    assert!(ended.stderr.contains("is not running"), "{}", ended.stderr);
}

/// A running job of the test user's that holds one CPU for its steps.
fn holder(c: &Cluster) -> u64 {
    let id = c.submit(
        Mode::Rootless,
        "holder.sh",
        &script("-n 1", "exec sleep 300"),
        &[],
    );
    c.wait_for(id, &["RUNNING"]);
    id
}

/// Waits until job `id`'s step `step` has an exit status recorded.
fn wait_step_end(c: &Cluster, id: u64, step: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.show(id)["steps"][step]["exit_code"].is_null() {
        assert!(Instant::now() < deadline, "{}", c.show(id));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `berth step --job ID ARGS` on the host as the test user, and waits until its
/// first line of output is `ready`.
fn step_from_host(
    c: &Cluster,
    id: u64,
    args: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let job = id.to_string();
    let mut all = vec!["step", "--job", job.as_str()];
    all.extend_from_slice(args);
    let mut cmd = c.f.cmd(Mode::Rootless, &all);
    cmd.env("BERTH_SOCKET", &c.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // (A terminal's line ends in \r\n.)
    assert_eq!(line.trim_end(), "ready");
    (child, out)
}

#[test]
fn signals_reach_the_tasks_and_a_dead_client_ends_its_step() {
    let Some(c) = Cluster::start() else { return };
    let id = holder(&c);
    // SIGTERM to the client: the task's trap runs and its status comes back.
    // (The sleep starts before `ready`, so the signal finds it: it holds our stdout too.)
    let trap = r#"trap 'echo got-term; exit 7' TERM; sleep 60 & echo ready; wait"#;
    let (mut client, mut out) = step_from_host(&c, id, &["sh", "-c", trap]);
    // SAFETY: kill(2) on a child this test started.
    unsafe { libc::kill(client.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(client.wait().unwrap().code(), Some(7));

    // SIGKILL of the client: the agent ends the step, and records it; the same on a
    // terminal (--pty), whose process kills the task too.
    for (step, pty) in [(1, &[][..]), (2, &["--pty"][..])] {
        let mut args = pty.to_vec();
        args.extend(["sh", "-c", "echo ready; exec sleep 600"]);
        let (mut client, _out) = step_from_host(&c, id, &args);
        client.kill().unwrap();
        client.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let job = c.show(id);
            if job["steps"][step]["exit_code"] == 137 {
                // Its process killed its task and said what it used.
                assert!(job["steps"][step]["usage"].is_object(), "{job}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the step outlived its client: {job}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Cancelling the job takes a running step with it: nothing is left in the job's cgroup.
    let (_client, mut out) = step_from_host(&c, id, &["sh", "-c", "echo ready; exec sleep 600"]);
    c.berth(Mode::Rootless, &["cancel", &id.to_string()]).ok();
    assert_eq!(
        c.wait_for(id, &["CANCELLED", "FAILED"])["state"],
        "CANCELLED"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    wait_step_end(&c, id, 3);
}

#[test]
fn a_step_outlives_a_killed_launcher() {
    let Some(c) = Cluster::start() else { return };
    let id = holder(&c);
    // The launcher that forked the step's process dies: the step goes on, and its end is
    // still seen (without the launcher, by its pid and start time).
    let go = c.f.cwd(Mode::Rootless).join("go");
    let wait = format!(
        "echo ready; while [ ! -e {} ]; do sleep 0.1; done; exit 4",
        go.display()
    );
    let (mut client, mut out) = step_from_host(&c, id, &["sh", "-c", &wait]);
    let launcher = c.launcher().expect("the node's launcher runs");
    // SAFETY: kill(2) on the launcher of this test's own `berth up`, found just above.
    unsafe { libc::kill(launcher as i32, libc::SIGKILL) };
    std::fs::write(&go, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(client.wait().unwrap().code(), Some(125));
    wait_step_end(&c, id, 0);
    // The next step gets a launcher anew, and its status.
    let (mut client, _out) = step_from_host(&c, id, &["sh", "-c", "echo ready; exit 3"]);
    assert_eq!(client.wait().unwrap().code(), Some(3));
    assert!(c.launcher().is_some_and(|pid| pid != launcher));
}

/// The newest job of the test user, from `berth history`.
fn newest_job(c: &Cluster) -> serde_json::Value {
    let all: serde_json::Value =
        serde_json::from_str(c.berth(Mode::Root, &["history", "--json"]).ok()).unwrap();
    let newest = all
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|j| j["id"].as_u64())
        .cloned()
        .unwrap();
    // The record is complete once the step's end is in.
    c.wait_for(
        newest["id"].as_u64().unwrap(),
        &["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"],
    )
}

#[test]
fn outside_a_job_a_step_gets_an_allocation_of_its_own() {
    let Some(c) = Cluster::start() else { return };
    let probe = r#"echo "$SLURM_PROCID $SLURM_JOB_ID $SLURM_JOB_NAME $(id -un) $MINE""#;
    let mut cmd = c.f.cmd(
        Mode::Rootless,
        &["step", "--image", "busybox", "-n", "2", "sh", "-c", probe],
    );
    cmd.env("BERTH_SOCKET", &c.socket).env("MINE", "passed");
    let out = Out::from_output(cmd.stdin(Stdio::null()).output().unwrap());
    let job = newest_job(&c);
    let id = job["id"].as_u64().unwrap();
    assert_eq!(
        lines_with(out.ok(), ""),
        [0, 1].map(|r| format!("{r} {id} sh {TEST_USER} passed")),
        "{}",
        out.stderr
    );
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(job["user"], TEST_USER);
    assert_eq!(job["steps"][0]["exit_code"], 0, "{job}");

    // Its output file named with its id (known on its node only, once it has one).
    let named = c.berth(
        Mode::Rootless,
        &[
            "step",
            "--image",
            "busybox",
            "-n",
            "2",
            "-o",
            "out-%j-%4A.txt",
            "echo",
            "hi",
        ],
    );
    assert_eq!(named.ok(), "");
    let id = newest_job(&c)["id"].as_u64().unwrap();
    let file =
        c.f.cwd(Mode::Rootless)
            .join(format!("out-{id}-{id:04}.txt"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hi\nhi\n");

    // The job's status is its step's.
    let failed = c.berth(
        Mode::Rootless,
        &["step", "--image", "busybox", "sh", "-c", "exit 4"],
    );
    assert_eq!(failed.code, 4, "{}", failed.stderr);
    let job = newest_job(&c);
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["exit_code"], 4, "{job}");

    // Its time limit: the tasks get SIGTERM first, as Slurm's steps do.
    let limited = c.berth(
        Mode::Rootless,
        &[
            "step",
            "--image",
            "busybox",
            "-t",
            "0:02",
            "sh",
            "-c",
            "trap 'echo terminated; exit 0' TERM; while :; do sleep 0.1; done",
        ],
    );
    assert!(limited.stdout.contains("terminated"), "{}", limited.stderr);
    assert_eq!(newest_job(&c)["state"], "TIMEOUT");
    // Killed by it, as slurmstepd says to srun.
    let killed = c.berth(
        Mode::Rootless,
        &["step", "--image", "busybox", "-t", "0:02", "sleep", "30"],
    );
    let id = newest_job(&c)["id"].as_u64().unwrap();
    let said = format!("slurmstepd: error: *** STEP {id}.0 ON ");
    assert!(
        killed.stderr.contains(&said) && killed.stderr.contains(" DUE TO TIME LIMIT ***\n"),
        "{}",
        killed.stderr
    );

    // Refused as a submission would be, with the reason.
    let unknown = c.berth(
        Mode::Rootless,
        &["step", "--image", "no-such-image", "true"],
    );
    assert_eq!(unknown.code, 125);
    assert!(
        unknown.stderr.contains("no-such-image"),
        "{}",
        unknown.stderr
    );
    // Inside a job, the step runs within the job's limits: allocation flags are ignored,
    // said so (its own memory, --mem, is a step's: see
    // a_steps_own_memory_holds_its_tasks_and_is_held_against_the_others).
    let inside = c.berth(
        Mode::Rootless,
        &["step", "--job", "1", "--partition", "other", "true"],
    );
    assert!(
        inside
            .stderr
            .contains("ignored --partition: this step runs in job 1, within its limits"),
        "{}",
        inside.stderr
    );
}

/// `berth alloc` (salloc): the allocation is held while a command runs on this host with the
/// job's variables; steps from it run in the job's container; the job ends with the
/// command's status, or ends first (its time limit) and the command is hung up on.
#[test]
fn an_allocation_is_held_while_a_command_runs_on_this_host() {
    let Some(c) = Cluster::start() else { return };
    let bin = c.f.bin.to_str().unwrap();
    let command = format!(
        r#"echo "held $SLURM_JOB_ID $SLURM_NTASKS $SLURM_JOB_NAME $MINE"
"{bin}" step sh -c 'echo "task $SLURM_PROCID $(id -un) $MINE $PATH"'
exit 3"#
    );
    let mut cmd = c.f.cmd(
        Mode::Rootless,
        &[
            "as", "salloc", "-n", "2", "-J", "probe", "--image", "busybox", "sh", "-c", &command,
        ],
    );
    cmd.env("BERTH_SOCKET", &c.socket).env("MINE", "passed");
    let out = Out::from_output(cmd.stdin(Stdio::null()).output().unwrap());
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let job = newest_job(&c);
    let id = job["id"].as_u64().unwrap();
    assert!(
        out.stderr
            .contains(&format!("Granted job allocation {id}\n"))
            && out
                .stderr
                .contains(&format!("Relinquishing job allocation {id}\n")),
        "{}",
        out.stderr
    );
    assert_eq!(
        lines_with(&out.stdout, "held"),
        [format!("held {id} 2 probe passed")]
    );
    // The tasks run in the image, with its PATH (not this host's), as the user.
    let tasks = lines_with(&out.stdout, "task");
    assert_eq!(tasks.len(), 2, "{}", out.stdout);
    for (rank, task) in tasks.iter().enumerate() {
        assert!(
            task.starts_with(&format!("task {rank} {TEST_USER} passed ")),
            "{task}"
        );
        assert!(task.contains("/.berth/bin"), "{task}");
    }
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(job["exit_code"], 3, "{job}");
    assert_eq!(job["name"], "probe", "{job}");
    // In Slurm's words an allocation has no batch script: BatchFlag=0, and no ID.batch
    // among its steps.
    let shown = c.berth(
        Mode::Rootless,
        &["as", "scontrol", "show", "job", &id.to_string()],
    );
    assert!(
        shown.ok().contains(" BatchFlag=0 ") && shown.stdout.contains(" OverSubscribe=OK "),
        "{}",
        shown.stdout
    );
    assert_eq!(
        sacct(&c, &id.to_string(), "JobID"),
        format!("{id}\n{id}.0\n")
    );

    // A command that cannot run ends the allocation as a shell would say it.
    let missing = c.berth(
        Mode::Rootless,
        &["alloc", "--image", "busybox", "/no/such/program"],
    );
    assert_eq!(missing.code, 127, "{}", missing.stderr);
    assert_eq!(newest_job(&c)["exit_code"], 127);

    // The job's time limit ends it first: the command is hung up on.
    let limited = c.berth(
        Mode::Rootless,
        &["alloc", "--time=0:02", "--image", "busybox", "sleep", "60"],
    );
    assert_eq!(limited.code, 128 + 1, "{}", limited.stderr);
    assert!(
        limited.stderr.contains("has been revoked"),
        "{}",
        limited.stderr
    );
    let id = granted(&limited.stderr);
    assert_eq!(c.wait_for(id, &["TIMEOUT"])["state"], "TIMEOUT");

    // --no-shell: the job holds its allocation until cancelled; steps reach it by its id.
    let kept = c.berth(
        Mode::Rootless,
        &["as", "salloc", "--no-shell", "--image", "busybox"],
    );
    assert_eq!(kept.code, 0, "{}", kept.stderr);
    let id = granted(&kept.stderr);
    let step = c.berth(
        Mode::Rootless,
        &[
            "step",
            "--job",
            &id.to_string(),
            "sh",
            "-c",
            "echo in $SLURM_JOB_ID",
        ],
    );
    assert_eq!(step.ok(), format!("in {id}\n"));
    // An allocation too: no batch step running, none in its accounting.
    let shown = c.berth(
        Mode::Rootless,
        &["as", "scontrol", "show", "job", &id.to_string()],
    );
    assert!(shown.ok().contains(" BatchFlag=0 "), "{}", shown.stdout);
    // (No batch script, none of its files: Slurm shows them for batch jobs.)
    assert!(!shown.stdout.contains("StdOut="), "{}", shown.stdout);
    let running = c.berth(Mode::Rootless, &["as", "squeue", "-s", "-h", "-o", "%i"]);
    assert!(
        !running.ok().contains(&format!("{id}.batch")),
        "{}",
        running.stdout
    );
    c.berth(Mode::Rootless, &["cancel", &id.to_string()]).ok();
    assert_eq!(c.wait_for(id, &["CANCELLED"])["state"], "CANCELLED");
    assert_eq!(
        sacct(&c, &id.to_string(), "JobID"),
        format!("{id}\n{id}.0\n")
    );

    // Refused as a submission would be, with the reason.
    let unknown = c.berth(
        Mode::Rootless,
        &["alloc", "--image", "no-such-image", "true"],
    );
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("no-such-image"),
        "{}",
        unknown.stderr
    );
}

/// enroot+pyxis's options, as its users write them: the job's image, binds, working
/// directory and PATH from #SBATCH lines; srun's in the job (the job's image) and outside
/// one (a new allocation's).
#[test]
fn pyxis_options_run_the_job_and_its_steps_in_the_image() {
    let Some(c) = Cluster::start() else { return };
    let data = c.f.cwd(Mode::Rootless).join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "from the host\n").unwrap();
    std::os::unix::fs::chown(&data, Some(c.f.user.uid), Some(c.f.user.gid)).unwrap();
    let body = format!(
        r#"#!/bin/sh
#SBATCH --container-image=docker://busybox
#SBATCH --container-mounts={}:/data:ro+rprivate
#SBATCH --container-workdir=/bin --container-env=PATH --container-name=x
echo "pwd=$(pwd) path=$PATH"
cat /data/f
touch /data/g 2>/dev/null || echo read-only
berth step --container-image=busybox --container-workdir=/etc sh -c 'echo "step in $(pwd)"'
berth step --container-image=no-such-image true 2>&1 || echo "unknown image: $?"
"#,
        data.display()
    );
    let id = c.submit(Mode::Rootless, "pyxis.sh", &body, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pwd=/bin path=/usr/bin:/bin:/.berth/bin", "{out}");
    assert_eq!(
        lines[1..4],
        ["from the host", "read-only", "step in /etc"],
        "{out}"
    );
    assert!(lines[4].contains("image no-such-image"), "{out}");
    assert_eq!(lines[5], "unknown image: 125", "{out}");

    // Outside a job: a new allocation's image, binds and working directory.
    let mounts = format!("--container-mounts={}:/d", data.display());
    let step = c.berth(
        Mode::Rootless,
        &[
            "as",
            "srun",
            "--container-image=busybox",
            &mounts,
            "--container-workdir=/d",
            "sh",
            "-c",
            "pwd; cat f",
        ],
    );
    assert_eq!(step.ok(), "/d\nfrom the host\n");
    // Root inside a new allocation's own container (srun --container-remap-root).
    let root = c.berth(
        Mode::Rootless,
        &[
            "step",
            "--container-image=busybox",
            "--container-remap-root",
            "id",
            "-u",
        ],
    );
    assert_eq!(root.ok(), "0\n");
}

/// Shifter's scripts as its users write them: `#SBATCH --image=docker:NAME` and `--volume`,
/// `shifter` (and `srun shifter`) running commands in place in the job's image, a script run
/// whole through `#!/usr/bin/shifter`; and `shifter` outside a job, the image's container.
#[test]
fn shifter_scripts_run_in_the_image() {
    let Some(c) = Cluster::start() else { return };
    let data = c.f.cwd(Mode::Rootless).join("shifter-data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "from the host\n").unwrap();
    let body = format!(
        r#"#!/bin/sh
#SBATCH -n 1 --image=docker:busybox --module=none
#SBATCH --volume="{}:/input:ro"
cat /input/f
shifter sh -c 'echo "runtime=$SHIFTER_RUNTIME"'
srun -n 1 shifter --image=busybox cat /input/f
shifter --image=docker:other true 2>&1 || echo "other image: $?"
"#,
        data.display()
    );
    let id = c.submit(Mode::Rootless, "shifter.sh", &body, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["from the host", "runtime=1", "from the host"],
        "{out}"
    );
    assert!(
        lines[3].contains("cannot change to other inside the job"),
        "{out}"
    );
    assert_eq!(lines[4], "other image: 125", "{out}");

    let whole =
        "#!/usr/bin/shifter /bin/sh\n#SBATCH --image=busybox\necho \"in $SHIFTER_RUNTIME $0\"\n";
    let id = c.submit(Mode::Rootless, "whole.sh", whole, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    assert_eq!(output(&c, id), "in 1 /.berth/job/script\n", "{job}");

    // Outside a job: the image from the user's store, with the volume.
    c.f.import(Mode::Rootless);
    let volume = format!("--volume={}:/in", data.display());
    let outside = c.berth(
        Mode::Rootless,
        &[
            "as",
            "shifter",
            "--image=docker:busybox",
            &volume,
            "cat",
            "/in/f",
        ],
    );
    assert_eq!(outside.ok(), "from the host\n");
}

/// Apptainer's users' scripts call it inside the job: `apptainer exec app.tar CMD` in a job's
/// container imports the file into the user's own store (with the host's squashfs tools,
/// which the job's tools directory carries) and runs CMD in a container of it, nested in
/// the job's, as the user.
#[test]
fn apptainer_runs_an_image_file_inside_a_job() {
    let Some(c) = Cluster::start() else { return };
    let dir = c.f.cwd(Mode::Rootless);
    let tarred = std::process::Command::new("tar")
        .arg("-C")
        .arg(&c.f.rootfs)
        .arg("-cf")
        .arg(dir.join("app.tar"))
        .arg(".")
        .status()
        .unwrap();
    assert!(tarred.success());
    let body = format!(
        "export BERTH_STORE={}/store\napptainer exec app.tar sh -c 'echo \"nested as $(id -un)\"'\nsingularity exec app.tar true && echo again\n",
        dir.display()
    );
    let id = c.submit(Mode::Rootless, "nested.sh", &script("-n 1", &body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("berth: importing"), "{out}");
    assert_eq!(
        lines[1..],
        [format!("nested as {TEST_USER}").as_str(), "again"],
        "{out}"
    );
}

/// `srun --container-remap-root` (pyxis's): the tasks are root in their own container and
/// the user outside, so they change the image's files (root's, in it), which the user's
/// tasks may not; what they make is the user's, and a later step of the named container
/// runs it as the user.
#[test]
fn a_steps_tasks_may_be_root_inside_and_the_user_outside() {
    let Some(c) = Cluster::start() else { return };
    c.import_marked("marked");
    let body = r##"srun -n 1 --container-image=marked --container-remap-root sh -c 'id -u; echo changed >> /etc/marker; tail -1 /etc/marker; mkdir /usr && stat -c "made by %u" /usr'
srun -n 1 --container-image=marked sh -c '(echo x >> /etc/marker) 2>/dev/null || echo "as the user: refused"'
srun -n 1 --container-image=marked --container-name=dev --container-remap-root sh -c 'mkdir -p /usr/local/bin && printf "#!/bin/sh\necho tool runs as \$(id -un)\n" > /usr/local/bin/tool && chmod 755 /usr/local/bin/tool'
srun -n 1 --container-name=dev sh -c 'tool; stat -c "owned by %u" /usr/local/bin/tool'"##;
    let id = c.submit(Mode::Rootless, "remap.sh", &script("-n 1", body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    // A kernel whose squashfs cannot be mounted idmapped (Debian 12's, in the VM) says so.
    if out.contains("mount the image's file system (squashfs) idmapped") {
        assert!(
            out.contains("a remapped root needs a kernel that can"),
            "{out}"
        );
        assert!(out.contains("as the user: refused"), "{out}");
        return;
    }
    assert_eq!(job["state"], "COMPLETED", "{out}");
    let uid = c.f.user.uid;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "0".to_string(),
            "changed".into(),
            "made by 0".into(),
            "as the user: refused".into(),
            format!("tool runs as {TEST_USER}"),
            format!("owned by {uid}"),
        ],
        "{out}"
    );
}

/// `#SBATCH --container-remap-root` (pyxis's, on sbatch): the script is root in the job's own
/// container and the user outside, and so are the job's steps, which join it there: they
/// change the image's files in the job's layer; what they make on the host is the user's.
/// And a running named container started remapped is joined as it runs, root inside.
#[test]
fn a_jobs_own_container_may_be_root_inside_and_the_user_outside() {
    let Some(c) = Cluster::start() else { return };
    c.import_marked("marked");
    let body = r##"echo "script $(id -u) $(id -un)"
echo changed >> /etc/marker && tail -1 /etc/marker
srun -n 1 sh -c 'echo "step $(id -u) $(tail -1 /etc/marker)"'
echo made > made-inside && stat -c "inside owned by %u" made-inside
srun -n 1 --container-image=marked --container-name=run --container-remap-root sh -c 'touch /tmp/in-run started; while [ ! -e joined ]; do sleep 0.1; done' &
while [ ! -e started ]; do sleep 0.1; done
srun -n 1 --overlap --container-name=run --container-remap-root sh -c 'echo "joined $(id -u) $(ls /tmp/in-run)"; touch joined'
wait"##;
    let script = format!(
        "#!/bin/sh
#SBATCH -n 1 --container-image=marked --container-remap-root
{body}
"
    );
    let id = c.submit(Mode::Rootless, "remap-job.sh", &script, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    // A kernel whose squashfs cannot be mounted idmapped (Debian 12's, in the VM) says so,
    // and the job fails at its start.
    let reason = job["reason"].as_str().unwrap_or_default();
    if reason.contains("mount the image's file system (squashfs) idmapped") {
        assert_eq!(job["state"], "FAILED", "{job}");
        assert!(
            reason.contains("a remapped root needs a kernel that can"),
            "{job}"
        );
        // Said in the job's output file too, where its user looks.
        assert_eq!(out, format!("berth: {reason}\n"), "{job}");
        return;
    }
    assert_eq!(
        job["state"], "COMPLETED",
        "{job}
{out}"
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "script 0 root",
            "changed",
            "step 0 changed",
            "inside owned by 0",
            "joined 0 /tmp/in-run",
        ],
        "{out}"
    );
    let made = c.f.cwd(Mode::Rootless).join("made-inside");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&made).unwrap()),
        c.f.user.uid
    );
    // Its output file is the user's as always.
    let file = c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out"));
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(file).unwrap()),
        c.f.user.uid
    );
}

/// A step in an image of its own (`srun --container-image`, as pyxis runs steps): its tasks
/// in a container of that image, with the step's binds, in the job's cgroup and allocation;
/// steps without one still run in the job's own container.
#[test]
fn a_step_runs_in_an_image_of_its_own_within_the_job() {
    let Some(c) = Cluster::start() else { return };
    c.import_marked("marked");
    let data = c.f.cwd(Mode::Rootless).join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "bound\n").unwrap();
    let body = format!(
        r#"echo job > /tmp/in-job
srun --container-image=marked --container-mounts={}:/d:ro sh -c 'echo "$SLURM_PROCID $(cat /etc/marker) $(cat /d/f) $(id -un) $(cat /tmp/in-job 2>/dev/null || echo own-tmp) cgroup=$(grep -cE "/berth/.*-job$SLURM_JOB_ID(/job|/step_[0-9]+)?$" /proc/self/cgroup)"'
srun -n 1 sh -c 'echo "again $(cat /tmp/in-job) $(cat /etc/marker 2>/dev/null || echo no-marker)"'
PATH=/opt/x:$PATH srun -n 1 --container-image=marked --container-env=PATH --no-container-mount-home sh -c 'echo "env $PATH $(test -d $HOME && echo home || echo no-home)"'
srun -n 1 --container-image=marked --container-mounts=/no/such:/x true 2>&1 || echo "refused: $?"
PYXIS_CONTAINER_IMAGE=marked srun -n 1 sh -c 'echo "pyxis variable $(cat /etc/marker)"'"#,
        data.display()
    );
    let id = c.submit(Mode::Rootless, "own.sh", &script("-n 2", &body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    let tasks = lines_with(&out, "");
    for (rank, task) in tasks[..2].iter().enumerate() {
        // In the job's cgroup (in each of its hierarchies), not a container's own.
        let (what, cgroup) = task.split_once(" cgroup=").unwrap();
        assert_eq!(
            what,
            format!("{rank} marked bound {TEST_USER} own-tmp"),
            "{out}"
        );
        assert_ne!(cgroup, "0", "{out}");
    }
    assert_eq!(lines_with(&out, "again"), ["again job no-marker"], "{out}");
    // The client's PATH kept (--container-env), berth's tools on it once; no home.
    assert_eq!(
        lines_with(&out, "env"),
        ["env /opt/x:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/.berth/bin no-home"],
        "{out}"
    );
    assert!(out.contains("/no/such"), "{out}");
    assert_eq!(lines_with(&out, "refused"), ["refused: 125"], "{out}");
    // pyxis's variables for what srun's command line does not say.
    assert_eq!(
        lines_with(&out, "pyxis variable"),
        ["pyxis variable marked"],
        "{out}"
    );
}

/// Named containers (`srun --container-name`, as pyxis has them): what one step leaves in
/// its container, the next step naming it finds, in the image it was created of; a step
/// joins it while it runs (its /tmp, too), or starts it again over its files once none
/// does; the flags refuse what they rule out; the job's own container goes by its name; the
/// files go with the job.
#[test]
fn a_named_container_keeps_its_files_from_one_step_to_the_next() {
    let Some(c) = Cluster::start() else { return };
    c.import_marked("marked");
    let body = r#"srun -n 1 --container-image=marked --container-name=dev sh -c 'echo built > /opt/shared/tool'
srun -n 1 --container-name=dev sh -c 'echo "again $(cat /opt/shared/tool)"'
srun -n 1 --container-image=busybox --container-name=dev sh -c 'echo "image $(cat /etc/marker) $(cat /opt/shared/tool)"'
srun -n 1 --container-image=marked sh -c 'echo "unnamed $(cat /opt/shared/tool 2>/dev/null || echo fresh)"'
srun -n 1 --container-name=dev:create true 2>&1 || echo "create: $?"
srun -n 1 --container-name=dev:exec true 2>&1 || echo "exec: $?"
srun -n 1 --container-name=nosuch true 2>&1 || echo "nosuch: $?"
srun -n 1 --container-name=dev sh -c 'echo here > /tmp/mark; touch started; while [ ! -e done ]; do sleep 0.1; done' &
while [ ! -e started ]; do sleep 0.1; done
srun -n 1 --container-name=dev:exec sh -c 'echo "joined $(cat /tmp/mark)"'
srun -n 1 --container-name=dev:no_exec true 2>&1 || echo "no_exec: $?"
touch done; wait
srun -n 1 --container-name=dev sh -c 'echo "restarted $(cat /tmp/mark 2>/dev/null || echo new-tmp) $(cat /opt/shared/tool)"'
echo job > /tmp/in-job
srun -n 1 --container-name=main sh -c 'echo "own $(cat /tmp/in-job)"'
srun -n 1 --container-name=main:no_exec true 2>&1 || echo "own no_exec: $?""#;
    let options = "-n 2 --container-name=main";
    let id = c.submit(Mode::Rootless, "named.sh", &script(options, body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    for expected in [
        "again built",
        // The image it was created of, whatever a later step names.
        "image marked built",
        "unnamed fresh",
        "joined here",
        "restarted new-tmp built",
        "create: 125",
        "exec: 125",
        "no_exec: 125",
        // The job's own container, by the name it was given.
        "own job",
        "own no_exec: 1",
    ] {
        assert_eq!(lines_with(&out, expected), [expected], "{out}");
    }
    assert!(out.contains("exists already"), "{out}");
    assert!(out.contains("is not running"), "{out}");
    assert!(out.contains("cannot be mounted twice"), "{out}");
    assert!(
        out.contains(&format!("job {id} has no container named nosuch")),
        "{out}"
    );
    // The job's end takes its containers' files.
    let files = c.state.join("jobs").join(id.to_string()).join("containers");
    let deadline = Instant::now() + Duration::from_secs(10);
    while files.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!files.exists(), "{} is left", files.display());
}

/// `srun --container-save` (pyxis's): the step's own container, its image with what the
/// tasks changed (files added and removed), saved as a squashfs file its user owns, which
/// imports and runs as an image; what the user may not read is left out, and said; a step
/// in the job's container has nothing of its own to save.
#[test]
fn a_steps_container_is_saved_to_a_squashfs_file_its_user_owns() {
    let Some(c) = Cluster::start() else { return };
    c.import_marked("marked");
    let body = r#"srun -n 1 --container-image=marked --container-save=saved.sqsh sh -c 'echo made > /opt/shared/tool; rm /opt/shared/old'
srun -n 1 --container-image=marked --container-name=dev sh -c 'echo named > /opt/shared/n'
srun -n 1 --container-name=dev --container-save="$PWD/named.sqsh" true
srun -n 1 --container-save=x.sqsh true 2>&1 || echo "the job's: $?"
srun -n 1 --container-image=marked --container-save=/root/no.sqsh true 2>&1 || echo "no right: $?"
ls -a"#;
    let id = c.submit(Mode::Rootless, "save.sh", &script("-n 1", body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    let cwd = c.f.cwd(Mode::Rootless);
    let cat = |file: &str, path: &str| squashfs_cat(&cwd.join(file), path);
    assert_eq!(
        cat("saved.sqsh", "/opt/shared/tool").as_deref(),
        Some("made\n")
    );
    assert_eq!(
        cat("saved.sqsh", "/etc/marker").as_deref(),
        Some("marked\n")
    );
    assert_eq!(cat("saved.sqsh", "/etc/secret"), None, "left out");
    assert_eq!(cat("saved.sqsh", "/opt/shared/old"), None, "removed");
    assert_eq!(
        cat("named.sqsh", "/opt/shared/old").as_deref(),
        Some("old\n")
    );
    assert_eq!(
        cat("named.sqsh", "/opt/shared/n").as_deref(),
        Some("named\n")
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(cwd.join("saved.sqsh")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (c.f.user.uid, c.f.user.gid));
    assert!(
        out.contains("leaves out 1 file(s) berthtest may not read: /etc/secret"),
        "{out}"
    );
    assert_eq!(lines_with(&out, "the job's"), ["the job's: 1"], "{out}");
    assert!(
        out.contains("--container-save: for a step's own container"),
        "{out}"
    );
    assert_eq!(lines_with(&out, "no right"), ["no right: 125"], "{out}");
    assert!(
        out.contains("cannot save the container to /root/no.sqsh: berthtest may not write there"),
        "{out}"
    );
    // No partial file left.
    assert_eq!(lines_with(&out, "."), [".", ".."], "{out}");
    // It imports and runs as an image, what the step removed gone.
    let saved = cwd.join("saved.sqsh");
    c.f.berth(
        Mode::Root,
        &[
            "image",
            "import",
            saved.to_str().unwrap(),
            "--name",
            "saved",
        ],
    )
    .ok();
    let run = c.f.berth(
        Mode::Root,
        &[
            "exec",
            "saved",
            "sh",
            "-c",
            "cat /opt/shared/tool /etc/marker; ls /opt/shared",
        ],
    );
    assert_eq!(run.ok(), "made\nmarked\ntool\n");
    // From outside a job (srun's own allocation, as pyxis's users save an image they made).
    let step = c.berth(
        Mode::Rootless,
        &[
            "as",
            "srun",
            "--container-image=marked",
            "--container-save=outside.sqsh",
            "sh",
            "-c",
            "echo outside > /opt/shared/tool",
        ],
    );
    assert_eq!(step.code, 0, "{}", step.stderr);
    assert_eq!(
        cat("outside.sqsh", "/opt/shared/tool").as_deref(),
        Some("outside\n")
    );
}

/// The file `path` in the squashfs image `file`, if it holds one.
fn squashfs_cat(file: &std::path::Path, path: &str) -> Option<String> {
    let out = std::process::Command::new("rdsquashfs")
        .args(["--cat", path])
        .arg(file)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `#SBATCH --container-save` (pyxis's, on sbatch): once the script ends, the job's own
/// container, its image with what the job changed, is saved as a squashfs file its user
/// owns, before the job is seen to end; what the user may not read is left out, and said
/// in the job's output; a file the user may not write ends the job FAILED, saying why.
#[test]
fn a_jobs_own_container_is_saved_when_its_script_ends() {
    let Some(c) = Cluster::start() else { return };
    c.import_marked("marked");
    let script = "#!/bin/sh\n#SBATCH -n 1 --container-image=marked --container-save=job.sqsh\n\
                  echo made > /opt/shared/tool && rm /opt/shared/old && exit 3\n";
    let id = c.submit(Mode::Rootless, "save-job.sh", script, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    // The script's own status, and the file there as soon as the job has ended.
    assert_eq!(
        (&job["state"], &job["exit_code"]),
        (&"FAILED".into(), &3.into()),
        "{job}\n{out}"
    );
    let saved = c.f.cwd(Mode::Rootless).join("job.sqsh");
    assert_eq!(
        squashfs_cat(&saved, "/opt/shared/tool").as_deref(),
        Some("made\n")
    );
    assert_eq!(
        squashfs_cat(&saved, "/etc/marker").as_deref(),
        Some("marked\n")
    );
    assert_eq!(squashfs_cat(&saved, "/opt/shared/old"), None, "removed");
    assert_eq!(squashfs_cat(&saved, "/etc/secret"), None, "left out");
    assert!(
        out.contains("berth: the container saved to")
            && out.contains("leaves out 1 file(s) berthtest may not read: /etc/secret"),
        "{out}"
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&saved).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (c.f.user.uid, c.f.user.gid));

    let script =
        "#!/bin/sh\n#SBATCH --container-image=marked --container-save=/root/no.sqsh\ntrue\n";
    let id = c.submit(Mode::Rootless, "save-refused.sh", script, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    assert_eq!(job["state"], "FAILED", "{job}");
    assert!(
        job["reason"].as_str().is_some_and(|r| r
            .contains("cannot save the container to /root/no.sqsh: berthtest may not write there")),
        "{job}"
    );
}

/// pyxis's `--container-entrypoint`: a job's script, and a step's command in its own
/// container, run through the image's ENTRYPOINT; without it, by themselves.
#[test]
fn scripts_and_steps_run_through_the_images_entrypoint_when_asked() {
    let Some(c) = Cluster::start() else { return };
    let archive = docker_archive_of(
        &c.f,
        r#"{"Entrypoint":["/bin/sh","-c","echo \"entry $(basename $1)\"; exec \"$@\"","ep"]}"#,
    );
    c.f.berth(
        Mode::Root,
        &["image", "import", archive.to_str().unwrap(), "--name", "ep"],
    )
    .ok();
    let body = r#"echo script
srun -n 1 --container-image=ep --container-entrypoint echo step
srun -n 1 --container-image=ep echo plain
srun -n 1 --container-entrypoint true 2>&1 || echo "the job's: $?""#;
    let job = |options: &str| {
        let text = format!("#!/bin/sh\n#SBATCH -n 1 {options}\n#BERTH --image ep\n{body}\n");
        let id = c.submit(Mode::Rootless, "ep.sh", &text, &[]);
        let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
        let out = output(&c, id);
        assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
        out
    };
    let through = job("--container-entrypoint");
    let lines: Vec<&str> = through.lines().collect();
    assert_eq!(
        lines[..6],
        [
            "entry script",
            "script",
            "entry echo",
            "step",
            "plain",
            "srun: error: --container-entrypoint: for a step's own container (--container-image or --container-name); this step runs in job 1's container, as the job made it"
        ],
        "{through}"
    );
    assert_eq!(lines_with(&through, "the job's"), ["the job's: 1"]);
    let alone = job("");
    assert_eq!(alone.lines().next(), Some("script"), "{alone}");
    // From outside a job: srun's own allocation, its step through the entrypoint.
    let step = c.berth(
        Mode::Rootless,
        &[
            "as",
            "srun",
            "--container-image=ep",
            "--container-entrypoint",
            "echo",
            "outside",
        ],
    );
    assert_eq!(step.ok(), "entry echo\noutside\n");
}

#[test]
fn an_interactive_step_has_a_terminal_in_the_image() {
    let Some(c) = Cluster::start() else { return };
    let mut script = under_terminal(&c.f.cmd(
        Mode::Rootless,
        &["step", "--image", "busybox", "--pty", "sh"],
    ));
    script.env("BERTH_SOCKET", &c.socket);
    let input = "test -t 0 && tty; stty rows 33 cols 77; stty size; echo \"job=$SLURM_JOB_ID user=$(id -un)\"; exit 6\n";
    let out = run_with_stdin(&mut script, input);
    assert_eq!(out.code, 6, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("/dev/pts/"), "{}", out.stdout);
    assert!(out.stdout.contains("33 77"), "{}", out.stdout);
    let job = newest_job(&c);
    assert!(
        out.stdout
            .contains(&format!("job={} user={TEST_USER}", job["id"])),
        "{}",
        out.stdout
    );
    assert_eq!(job["exit_code"], 6, "{job}");
    // The first of two tasks has the terminal, the other no input (its shell ends at once).
    let mut two = under_terminal(&c.f.cmd(
        Mode::Rootless,
        &["step", "--image", "busybox", "--pty", "-n", "2", "sh"],
    ));
    two.env("BERTH_SOCKET", &c.socket);
    let input = "test -t 0 && echo \"tasks=$SLURM_NTASKS rank=$SLURM_PROCID\"; exit\n";
    let out = run_with_stdin(&mut two, input);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("tasks=2 rank=0"), "{}", out.stdout);
    assert_eq!(newest_job(&c)["state"], "COMPLETED");
}

/// `--signal`: a signal ahead of the time limit, to the batch shell alone (`B:`), whose trap
/// ends the job before its limit (so it completes, where it would time out unwarned), or to
/// the job's steps and not the batch shell.
#[test]
fn warning_signals_reach_the_batch_shell_or_the_steps_ahead_of_the_time_limit() {
    let Some(c) = Cluster::start() else { return };
    let batch = c.submit(
        Mode::Rootless,
        "batch.sh",
        &script(
            "--time=0:12 --signal=B:USR1@8",
            r#"trap 'echo batch-warned; kill $child; exit 0' USR1
sh -c 'trap "echo child-warned" USR1; sleep 30 & wait' &
child=$!
wait
echo not-warned"#,
        ),
        &[],
    );
    let steps = c.submit(
        Mode::Rootless,
        "steps.sh",
        &script(
            // (The step must have started by the warning: 16 s for it, in a slow VM too.)
            "--time=0:24 --signal=USR2@8",
            r#"trap 'echo batch-warned' USR2
berth step sh -c 'trap "echo step-warned; exit 0" USR2; sleep 30 & wait'
echo "step ended: $?""#,
        ),
        &[],
    );
    let job = c.wait_for(batch, &["COMPLETED", "TIMEOUT", "FAILED"]);
    let out = output(&c, batch);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    assert_eq!(out, "batch-warned\n");
    let job = c.wait_for(steps, &["COMPLETED", "TIMEOUT", "FAILED"]);
    let out = output(&c, steps);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    assert_eq!(out, "step-warned\nstep ended: 0\n");
}

/// sbcast -j from outside the job: into the job's container, whatever this client's host
/// has at the path of its berth.
#[test]
fn sbcast_from_outside_a_job_copies_into_its_container() {
    let Some(c) = Cluster::start() else { return };
    let id = c.submit_holding("held.sh", "", &[]).to_string();
    let src = c.f.cwd(Mode::Rootless).join("outside.txt");
    std::fs::write(&src, "from outside\n").unwrap();
    let src = src.to_str().unwrap();
    c.berth(
        Mode::Rootless,
        &["as", "sbcast", "-j", &id, src, "/tmp/copied.txt"],
    )
    .ok();
    let copied = c.berth(
        Mode::Rootless,
        &["step", "--job", &id, "cat", "/tmp/copied.txt"],
    );
    assert_eq!(copied.ok(), "from outside\n");
    c.berth(Mode::Rootless, &["cancel", &id]).ok();
}

/// srun's options as job scripts use them: --ntasks-per-node, --export, -D, -o/-e/-i (one
/// file for the step, or files of each task: %t, %n, %N; -i all, none or a task's rank),
/// and the ones berth accepts for what it does anyway (-u, --exact, --overlap,
/// --cpu-bind=verbose,...); and sbcast.
#[test]
fn srun_options_scripts_use() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"export DROP=me
berth step --ntasks-per-node=2 -l sh -c 'echo task $SLURM_PROCID of $SLURM_NTASKS'
berth step -n 1 -o step-%j.out sh -c 'echo into the file'
echo from-input > in.txt
berth step -n 1 -i in.txt cat
berth step -n 1 --export=NONE,KEEP=yes sh -c 'echo "keep=$KEEP drop=${DROP:-unset} job=$SLURM_JOB_ID"'
berth step -n 1 -D /tmp sh -c 'echo "in $(pwd)"'
srun -n 1 -c 2 sh -c 'echo "cpt=$SLURM_CPUS_PER_TASK"'
berth step -n 1 -u --exact --overlap --cpu-bind=verbose,cores true && echo accepted
srun -n1 --exclusive --mem=10M -J part -t 1 --hint=nomultithread -m block --cpu_bind=cores true && echo slurm-accepted
berth step -n 1 --cpu-bind=map_cpu:1 true || echo refused
berth step -n 1 -o both.out sh -c 'echo o; echo e >&2'
berth step -n 2 -o task-%t.out -e err-%N-%2t.txt sh -c 'echo out $SLURM_PROCID; echo err $SLURM_PROCID >&2'
echo in0 > in-0.txt; echo in1 > in-1.txt
berth step -n 2 -i in-%t.txt -o echoed-%n.out cat
berth step -n 2 -l -i in-%t.txt -o lab-%t.out cat
printf 'a\nb\n' | berth step -l sh -c 'echo "all $(wc -l)"'
printf 'a\nb\n' | berth step -i 1 -l sh -c 'echo "one $(wc -l)"'
printf 'a\nb\n' | berth step -i none -l sh -c 'echo "none $(wc -l)"'
berth step -i 2 true || echo bad-input
berth step -o none sh -c 'echo hidden-output'
berth step -o 1 true || echo numbered-refused
echo payload > src.txt; chmod 640 src.txt
sbcast src.txt /tmp/copy.txt && berth step -l sh -c 'echo "copy $(cat /tmp/copy.txt) $(stat -c %a /tmp/copy.txt)"'
sbcast src.txt /tmp/copy.txt || echo sbcast-refused
sbcast src.txt /tmp/nodir/ || echo nodir-refused
ls -A /tmp | grep -c sbcast || true
srun -n 2 sh -c '[ "$SLURM_TASK_PID" = "$$" ] && echo "task-pid-ok"'
srun -n 1 sh -c 'exit 5' || srun -n 1 sh -c 'kill -9 $$' || srun -n 1 sh -c 'exit 130' || srun -n 2 sh -c 'exit 4' || true
srun --mpi=list | tail -1"#;
    let id = c.submit(Mode::Rootless, "srun.sh", &script("-n 2", body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    // srun's options for placement and binding: accepted, said ignored (a step's own
    // memory is its own: see a_steps_own_memory_holds_its_tasks_and_is_held_against_the_others).
    assert!(out.contains("slurm-accepted"), "{out}");
    // Each task's own pid in SLURM_TASK_PID.
    assert_eq!(out.matches("task-pid-ok\n").count(), 2, "{out}");
    // Its tasks' failures in srun's words.
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("srun: error: "))
        .collect();
    // (A status of 130 that no signal gave is an exit status; tasks that failed alike are
    // said together.)
    assert!(
        failed.len() == 4
            && failed[0].ends_with(": task 0: Exited with exit code 5")
            && failed[1].ends_with(": task 0: Killed")
            && failed[2].ends_with(": task 0: Exited with exit code 130")
            && failed[3].ends_with(": tasks 0-1: Exited with exit code 4"),
        "{out}"
    );
    // ... and recorded so: the signal apart from an exit status of 128 + N (sacct's 0:9 and
    // 130:0).
    let steps = job["steps"].as_array().expect("steps").clone();
    let ended = |command: &str| {
        let s = steps.iter().find(|s| s["command"] == command);
        s.map(|s| (s["exit_code"].clone(), s["signal"].clone()))
    };
    assert_eq!(
        ended("sh -c kill -9 $$"),
        Some((137.into(), 9.into())),
        "{job}"
    );
    assert_eq!(
        ended("sh -c exit 130"),
        Some((130.into(), serde_json::Value::Null)),
        "{job}"
    );
    assert!(
        out.contains("ignored --hint, --distribution: berth places"),
        "{out}"
    );
    assert_eq!(
        lines_with(&out, "0: task").len() + lines_with(&out, "1: task").len(),
        2,
        "{out}"
    );
    assert!(
        out.contains("0: task 0 of 2") && out.contains("1: task 1 of 2"),
        "{out}"
    );
    assert!(out.contains("from-input\n"), "{out}");
    assert!(
        out.ends_with("specific pmix plugin versions available: pmix_v3,pmix_v4,pmix_v5\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("keep=yes drop=unset job={id}\n")),
        "{out}"
    );
    assert!(
        out.contains("in /tmp\n") && out.contains("accepted\n"),
        "{out}"
    );
    // srun's own -c, not the job's (unset here).
    assert!(out.contains("\ncpt=2\n"), "{out}");
    let cwd = c.f.cwd(Mode::Rootless);
    let read = |name: &str| {
        std::fs::read_to_string(cwd.join(name)).unwrap_or_else(|e| panic!("{name}: {e}\n{out}"))
    };
    // Labels with each task's own files: its lines in its file, labelled (as srun -l -o).
    assert_eq!(
        (read("lab-0.out"), read("lab-1.out")),
        ("0: in0\n".into(), "1: in1\n".into())
    );
    // Errors go with the output unless -e says otherwise.
    assert_eq!(read("both.out"), "o\ne\n");
    let node = job["nodes"][0].as_str().unwrap();
    for rank in 0..2 {
        assert_eq!(read(&format!("task-{rank}.out")), format!("out {rank}\n"));
        assert_eq!(
            read(&format!("err-{node}-0{rank}.txt")),
            format!("err {rank}\n")
        );
    }
    // Tasks of one node share a name's file: both inputs in it, in either order.
    let mut echoed: Vec<String> = read("echoed-0.out").lines().map(String::from).collect();
    echoed.sort();
    assert_eq!(echoed, ["in0", "in1"], "{out}");
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(cwd.join("task-1.out")).unwrap());
    assert_eq!(owner, c.f.user.uid, "the task's files are the user's");
    assert!(
        out.contains("refused\n") && out.contains("no CPU maps"),
        "{out}"
    );
    let file = c.f.cwd(Mode::Rootless).join(format!("step-{id}.out"));
    assert_eq!(std::fs::read_to_string(file).unwrap(), "into the file\n");
    // The step's input: every task's whole (srun's default), task N's alone, or none's.
    for line in [
        "0: all 2",
        "1: all 2",
        "0: one 0",
        "1: one 2",
        "0: none 0",
        "1: none 0",
    ] {
        assert!(out.contains(&format!("{line}\n")), "{line}: {out}");
    }
    assert!(
        out.contains("--input=2: the step's tasks are 0 to 1") && out.contains("bad-input\n"),
        "{out}"
    );
    assert!(
        !out.contains("hidden-output") && out.contains("numbered-refused\n"),
        "-o none, -o N: {out}"
    );
    // sbcast: the file in the job's container, with its mode; not over one there already
    // without -f, and nothing of the refused copy left beside it.
    assert!(
        out.contains("0: copy payload 640\n") && out.contains("1: copy payload 640\n"),
        "{out}"
    );
    assert!(
        out.contains("/tmp/copy.txt exists already (sbcast -f replaces it)")
            && out.contains("/tmp/nodir/: no such directory")
            && out.contains("\nsbcast-refused\n")
            && out.contains("\nnodir-refused\n0\n")
            && !out.contains("task 0: exited"),
        "{out}"
    );
}

/// sbatch -O: more tasks than the machine has CPUs, the job holding one task's CPUs, and
/// its steps overcommitted as it is.
#[test]
fn an_overcommitted_job_runs_more_tasks_than_it_has_cpus() {
    let Some(c) = Cluster::start() else { return };
    let tasks = std::thread::available_parallelism().unwrap().get() * 3;
    let body = "echo \"cpus=$SLURM_CPUS_ON_NODE tasks=$SLURM_NTASKS over=$SLURM_OVERCOMMIT\"\n\
                berth step sh -c 'echo task $SLURM_PROCID'";
    let options = format!("-n {tasks} -O");
    let id = c.submit(Mode::Rootless, "over.sh", &script(&options, body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    assert!(
        out.starts_with(&format!("cpus=1 tasks={tasks} over=1\n")),
        "{out}"
    );
    assert_eq!(lines_with(&out, "task ").len(), tasks, "{out}");
    // Without -O, the same job can never run here.
    let refused = c.berth(
        Mode::Rootless,
        &[
            "submit",
            "-n",
            &tasks.to_string(),
            "--image",
            "busybox",
            "--wrap",
            "true",
        ],
    );
    assert!(
        refused.code != 0 && refused.stderr.contains("can never run"),
        "{}",
        refused.stderr
    );
}

/// scancel -s: to the job's steps' tasks, the batch shell spared (which would die of a
/// signal it has no trap for); -b: to the batch shell alone; -f: to both.
#[test]
fn scancel_signals_the_steps_or_the_batch_shell_or_both() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"trap 'echo batch-got-usr1' USR1
berth step -n 1 sh -c 'trap "echo step-got-usr1" USR1; echo step-ready; while :; do sleep 0.2; done' &
while :; do sleep 0.2; done"#;
    let id = c.submit(Mode::Rootless, "sig.sh", &script("-n 1", body), &[]);
    let path = c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out"));
    let count = |what: &str| {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .matches(what)
            .count()
    };
    let wait = |what: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while count(what) < n {
            assert!(
                Instant::now() < deadline,
                "no {what} x{n}: {}",
                output(&c, id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("step-ready", 1);
    let id_text = id.to_string();
    let scancel = |args: &[&str]| {
        let mut all = vec!["as", "scancel"];
        all.extend_from_slice(args);
        all.push(&id_text);
        c.berth(Mode::Rootless, &all).ok();
    };
    scancel(&["-s", "USR1"]);
    wait("step-got-usr1", 1);
    scancel(&["-b", "-s", "USR1"]);
    wait("batch-got-usr1", 1);
    // (-f reaches the step's client in the script too, which passes it on to its task, as
    // srun does: the task may get it twice.)
    scancel(&["-f", "-s", "USR1"]);
    wait("step-got-usr1", 2);
    wait("batch-got-usr1", 2);
    // The batch shell got the two sent to it, not the one for the steps; the step's task,
    // not the one for the batch shell (it had one before -f).
    assert_eq!(count("batch-got-usr1"), 2, "{}", output(&c, id));
    assert!(count("step-got-usr1") <= 3, "{}", output(&c, id));
    assert_eq!(c.show(id)["state"], "RUNNING");
    c.berth(Mode::Rootless, &["cancel", &id_text]).ok();
    c.wait_for(id, &["CANCELLED"]);
}

/// Slurm's own commands inside a job, as existing scripts call them: srun, sbatch (--wrap
/// too), squeue, sacct, scancel, sinfo and what scripts ask of scontrol.
#[test]
fn slurm_commands_work_inside_a_job() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"srun -n 2 -l sh -c 'echo rank $SLURM_PROCID'
scontrol show hostnames $SLURM_JOB_NODELIST
scontrol show hostlist a1,a2,a3
scontrol show node $SLURM_JOB_NODELIST | grep -o 'CPUAlloc=[0-9]*'
sinfo -h -N -o '%N %D %C' -n $SLURM_JOB_NODELIST | cut -d/ -f1
echo "state $(squeue -h -j $SLURM_JOB_ID -o %T) mine $(squeue --me -h -o %i)"
wrapped=$(sbatch --parsable --wrap 'echo wrapped')
echo "wrapped $wrapped"
sacct -X -n -P -j $SLURM_JOB_ID -o JobName,State
sleeper=$(sbatch --parsable --wrap 'sleep 60')
scancel $sleeper && echo cancelled
scontrol frobnicate 2>/dev/null || echo unknown
scontrol show job $SLURM_JOB_ID | grep -o 'NumNodes=[0-9]* NumTasks=[0-9]* CPUs/Task=[0-9]*'
scontrol show job $SLURM_JOB_ID | awk -F= '/Command=/{print $2}'
scontrol show job $wrapped | grep -c 'Command=(null)'
squeue -h -j $SLURM_JOB_ID -o %o
seff $SLURM_JOB_ID | tail -n 1"#;
    let id = c.submit(Mode::Rootless, "slurm.sh", &script("-n 2", body), &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    let host = job["nodes"][0].as_str().unwrap();
    // Where the script came from (it runs from a copy), as scripts look it up.
    let path = c.f.cwd(Mode::Rootless).join("slurm.sh");
    let path = path.display();
    let wrapped: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("wrapped "))
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // The two tasks print in either order.
    let (ranks, rest) = out.split_at(out.match_indices('\n').nth(1).map_or(0, |(i, _)| i + 1));
    assert_eq!(lines_with(ranks, ""), ["0: rank 0", "1: rank 1"], "{out}");
    assert_eq!(
        rest,
        format!(
            "{host}\na[1-3]\nCPUAlloc=2\n{host} 1 2\nstate RUNNING mine {id}\nwrapped {wrapped}\nslurm.sh|RUNNING\ncancelled\nunknown\nNumNodes=1 NumTasks=2 CPUs/Task=1\n{path}\n1\n{path}\nWARNING: Efficiency statistics may be misleading for RUNNING jobs.\n"
        )
    );
    let job = c.completed(wrapped);
    assert_eq!(job["name"], "wrap");
    // (Submitted as sbatch: Slurm's file name.)
    let file = c.f.cwd(Mode::Rootless).join(format!("slurm-{wrapped}.out"));
    assert_eq!(std::fs::read_to_string(file).unwrap(), "wrapped\n");
    assert_eq!(
        c.wait_for(wrapped + 1, &["CANCELLED", "COMPLETED"])["state"],
        "CANCELLED"
    );
}

/// `srun --mpi=pmi2`: a program on Slurm's own PMI-2 client library (libpmi2, as Intel MPI
/// and Open MPI link it under Slurm) starts in a step with its connection in PMI_FD, and its
/// ranks exchange values through berth's PMI server; and `--mpi=pmix`: a program on the
/// PMIx client library (libpmix, as Open MPI's ranks use it) served by berth's PMIx helper.
/// Two tasks each, on the host (a job without an image, where Debian's libraries are;
/// `berth step`: a host may have Slurm's own srun).
#[test]
fn pmi2_and_pmix_clients_talk_to_berths_servers() {
    let Some(c) = Cluster::start_with_config(Some("[batch]\nhost_jobs = true\n")) else {
        return;
    };
    let cwd = c.f.cwd(Mode::Rootless);
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/batch");
    let build = |name: &str, flags: &str| {
        let built = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("gcc -o \"$1\" \"$2\" {flags}"))
            .arg("sh")
            .arg(cwd.join(name))
            .arg(here.join(format!("{name}.c")))
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
    };
    build("pmi2_check", "-lpmi2");
    build("pmix_check", "$(pkg-config --cflags --libs pmix)");
    let script = "#!/bin/sh\n#SBATCH -n 2\nberth step --mpi=pmi2 ./pmi2_check\nberth step --mpi=pmix ./pmix_check\n";
    let id = c.submit(Mode::Rootless, "pmi.sh", script, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    assert_eq!(
        lines_with(&out, "rank "),
        [
            "rank 0 of 2, local 0, from 1: rank 1 was here",
            "rank 0 of 2, mapping (vector,(0,1,2)), from 1: rank 1 was here",
            "rank 1 of 2, local 1, from 0: rank 0 was here",
            "rank 1 of 2, mapping (vector,(0,1,2)), from 0: rank 0 was here",
        ],
        "{out}"
    );
}

/// srun's Ctrl-C: a first SIGINT says how the tasks are and leaves them be; a second within
/// a second is passed on to them (srun -q: the first is).
#[test]
fn srun_passes_on_a_second_sigint_within_a_second() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let body = r#"srun sh -c 'trap "echo task got INT; exit 8" INT; touch up; while :; do sleep 0.1; done' 2> srun.err &
P=$!
until [ -e up ]; do sleep 0.1; done
kill -INT $P
until grep -q "one more" srun.err; do sleep 0.1; done
until grep -q "sending Ctrl-C" srun.err; do kill -INT $P; sleep 0.3; done
wait $P
echo "srun=$?"
srun -q sh -c 'trap "echo quit got INT; exit 9" INT; touch up-q; while :; do sleep 0.1; done' &
P=$!
until [ -e up-q ]; do sleep 0.1; done
kill -INT $P
wait $P
echo "quit=$?""#;
    let id = c.submit(Mode::Rootless, "intr.sh", &script("-n 1", body), &[]);
    let job = c.completed(id);
    let out = output(&c, id);
    let node = job["nodes"][0].as_str().unwrap();
    assert_eq!(
        out,
        format!("task got INT\nsrun=8\nquit got INT\nsrun: error: {node}: task 0: Exited with exit code 9\nquit=9\n"),
        "{job}"
    );
    let err = std::fs::read_to_string(c.f.cwd(Mode::Rootless).join("srun.err")).unwrap();
    assert!(
        err.starts_with(&format!(
            "srun: interrupt (one more within 1 sec to abort)\nsrun: StepId={id}.0 task 0: running\n"
        )) && err.contains(&format!("srun: sending Ctrl-C to StepId={id}.0\n")),
        "{err}"
    );
}

/// A step whose task ignores the SIGTERM of its time limit is killed at the end of the
/// job's KillWait (30 s): its status is the SIGKILL its task died of (137, 0:9 in sacct),
/// as srun says, not the SIGTERM it ignored.
#[test]
fn a_step_killed_after_its_killwait_ends_with_sigkill() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let body = r#"srun -t 0:01 sh -c 'trap "" TERM; exec sleep 100'
echo "srun=$?""#;
    let id = c.submit(Mode::Rootless, "stubborn.sh", &script("-n 1", body), &[]);
    let out = c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out"));
    let said = || std::fs::read_to_string(&out).unwrap_or_default();
    wait_until(60, || said().contains("srun="), said);
    let job = c.completed(id);
    let out = output(&c, id);
    assert!(out.ends_with("srun=137\n"), "{out}");
    assert!(out.contains(": task 0: Killed\n"), "{out}");
    let step = &job["steps"][0];
    assert_eq!(
        (&step["exit_code"], &step["signal"]),
        (&137.into(), &9.into()),
        "{job}"
    );
    assert_eq!(step["timed_out"], true, "{job}");
}

/// A step cancelled before its tasks run (its process still opening its task's output
/// file, `-o out-%t.fifo`, a FIFO nobody reads yet) holds the cancel's SIGTERM for them, pending, instead of losing
/// it: once the file opens, the task starts and gets it at once (not the end of the
/// job's KillWait).
#[test]
fn a_signal_that_comes_before_a_steps_tasks_run_reaches_them() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let body = r#"mkfifo out-0.fifo
srun -o out-%t.fifo sleep 60
echo "srun=$?""#;
    let id = c.submit(Mode::Rootless, "early.sh", &script("-n 1", body), &[]);
    // The step's process, as it registers in the job's directory.
    let steps = c.state.join("jobs").join(id.to_string()).join("steps");
    let mut pid = None;
    wait_until(
        20,
        || {
            pid = std::fs::read_dir(&steps).ok().and_then(|entries| {
                entries
                    .flatten()
                    .find_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            });
            pid.is_some()
        },
        || format!("no step process: {}\n{}", c.show(id), c.log()),
    );
    let pid = pid.unwrap();
    c.berth(Mode::Rootless, &["cancel", &format!("{id}.0")])
        .ok();
    // Held pending by the step process, blocked opening the FIFO.
    let pending = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().any(|l| {
            l.strip_prefix("ShdPnd:")
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
        })
    };
    wait_until(20, pending, || {
        format!(
            "the cancel's SIGTERM is not held for the tasks: {}",
            c.log()
        )
    });
    let fifo = c.f.cwd(Mode::Rootless).join("out-0.fifo");
    assert_eq!(std::fs::read_to_string(fifo).unwrap(), "");
    let job = c.completed(id);
    assert_eq!(
        (&job["steps"][0]["exit_code"], &job["steps"][0]["signal"]),
        (&143.into(), &libc::SIGTERM.into()),
        "{job}"
    );
    assert!(output(&c, id).ends_with("srun=143\n"), "{}", output(&c, id));
}

/// An MPI step goes on across a restart of the all-in-one cluster (`kill -9`): a step on
/// one node has its PMI server in its own step process, so its tasks' barrier after the
/// restart is answered, their key-value space kept. And a task's abort ends such a step at
/// once with its code. The tasks are PMI-1 clients in sh, on the connection in PMI_FD.
#[test]
fn an_mpi_steps_pmi_server_outlives_a_restart() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let cwd = c.f.cwd(Mode::Rootless);
    std::fs::write(cwd.join("pmi.sh"), PMI_SHELL_CLIENT).unwrap();
    let body = r#"srun sh pmi.sh
echo "srun=$?"
srun sh -c 'if [ $PMI_RANK = 1 ]; then echo "cmd=abort exitcode=7" >&$PMI_FD; fi; exec sleep 60'
echo "abort=$?""#;
    let id = c.submit(Mode::Rootless, "mpi.sh", &script("-n 2", body), &[]);
    wait_until(
        20,
        || cwd.join("up.0").exists() && cwd.join("up.1").exists(),
        || format!("no barrier: {}\n{}", c.show(id), c.log()),
    );
    restart(&mut c);
    std::fs::write(cwd.join("go"), "").unwrap();
    let job = c.completed(id);
    let out = output(&c, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}\n{}", c.log());
    assert_eq!(
        lines_with(&out, "rank "),
        [
            "rank 0 of 2: from-1, cmd=barrier_out, cmd=finalize_ack",
            "rank 1 of 2: from-0, cmd=barrier_out, cmd=finalize_ack",
        ],
        "{out}"
    );
    assert!(out.contains("srun=0\n"), "{out}");
    assert!(
        out.contains("a task aborted the step with exit code 7\nabort=7\n"),
        "{out}"
    );
    assert_eq!(job["steps"][1]["exit_code"], 7, "{job}");
}

/// A job cancelled (scancel JOB) or whose script ends while steps run: the steps' tasks get
/// a SIGTERM and the job's KillWait to end on their own, as Slurm's, before they are killed.
#[test]
fn a_cancelled_jobs_steps_get_a_sigterm_first() {
    let Some(c) = Cluster::start() else { return };
    let cwd = c.f.cwd(Mode::Rootless);
    let body = "srun sh -c 'trap \"echo step got TERM; exit 7\" TERM; touch up; while :; do sleep 0.1; done'";
    let id = c.submit(Mode::Rootless, "trap.sh", &script("-n 1", body), &[]);
    wait_until(
        20,
        || cwd.join("up").exists(),
        || format!("no step: {}\n{}", c.show(id), c.log()),
    );
    c.berth(Mode::Rootless, &["cancel", &id.to_string()]).ok();
    let job = c.wait_for(id, &["CANCELLED", "COMPLETED", "FAILED"]);
    assert_eq!(job["state"], "CANCELLED", "{job}");
    let out = output(&c, id);
    assert!(out.contains("step got TERM\n"), "{out}");
    // In slurmstepd's words, as scripts and users look for it.
    let said = format!("slurmstepd: error: *** JOB {id} ON ");
    let line = out
        .lines()
        .find(|l| l.starts_with(&said))
        .unwrap_or_default();
    assert!(
        line.contains(" CANCELLED AT ") && line.ends_with(" ***"),
        "{out}"
    );
    assert_eq!(job["steps"][0]["exit_code"], 7, "{job}");
    // What the step held, as sacct says it of a step.
    let held = sacct(&c, &format!("{id}.0"), "AllocTRES,AllocCPUS");
    assert_eq!(held, "cpu=1,node=1|1\n");
}

/// A step in a job on the host goes on across a restart of the all-in-one cluster, as one in
/// a container does: its client, in the job, waits for the next agent and asks it for the
/// step's end.
#[test]
fn a_host_jobs_step_goes_on_across_a_restart() {
    let Some(mut c) = Cluster::start_with_config(Some("[batch]\nhost_jobs = true\n")) else {
        return;
    };
    let cwd = c.f.cwd(Mode::Rootless);
    let script = "#!/bin/sh\nberth step -n1 sh -c 'touch up; while [ ! -e go ]; do sleep 0.1; done; exit 3'\necho \"step=$?\"\n";
    let id = c.submit(Mode::Rootless, "host.sh", script, &[]);
    wait_until(
        20,
        || cwd.join("up").exists(),
        || format!("no step: {}\n{}", c.show(id), c.log()),
    );
    restart(&mut c);
    std::fs::write(cwd.join("go"), "").unwrap();
    let job = c.completed(id);
    let out = output(&c, id);
    assert!(out.ends_with("step=3\n"), "{out}\n{}", c.log());
    assert_eq!(job["steps"][0]["exit_code"], 3, "{job}");
}
