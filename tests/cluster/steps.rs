//! Steps across nodes (`berth step -N`, `-w`) and `berth rsh`, the remote launcher of MPI.

use crate::hosts::{nodes_of, output, TestCluster};
use crate::support::*;

#[test]
fn a_step_runs_its_tasks_on_every_node_of_the_job() {
    let Some(t) = TestCluster::start(5, 3, None) else {
        return;
    };
    let c = &t.c;
    let script = r#"#!/bin/sh
#SBATCH -N 3 --ntasks-per-node=2
#BERTH --image busybox
second=$(echo "$BERTH_NODELIST" | cut -d, -f2)
third=$(echo "$BERTH_NODELIST" | cut -d, -f3)
echo "all:"
berth step sh -c 'echo "$SLURM_PROCID/$SLURM_NTASKS $SLURM_LOCALID $SLURM_NODEID $(hostname) $SLURMD_NODENAME"' | sort -n
echo "labelled:"
berth step -l -N 3 -n 3 sh -c 'echo "$(hostname) $SLURM_STEP_NODELIST $SLURM_STEP_TASKS_PER_NODE"' | sort
echo "named:"
berth step -w "$third" sh -c 'exit 3'
echo "code=$?"
echo "placed:"
srun -N 1 -w "$third" hostname
srun -x "$second" -N 2 -n 2 hostname | sort | tr '\n' ' '
echo
berth step -n 3 --kill-on-bad-exit sh -c 'if [ "$SLURM_PROCID" = 2 ]; then exit 7; fi; exec sleep 30'
echo "bad=$?"
echo "rsh:"
berth rsh "$second" 'echo "on $(hostname) as $(id -un) in $PWD"'
echo piped | berth rsh "$third" cat
berth rsh "$third" 'head -c 1048576 /dev/zero' | wc -c | tr -d ' '
berth-rsh -x "$third" exit 5
echo "rsh code=$?"
echo "input:"
printf 'x\ny\nz\n' | berth step -l -N 3 -n 3 sh -c 'echo "$(hostname) $(wc -l)"' | sort
printf 'x\n' | berth step -l -N 3 -n 3 -i 2 sh -c 'wc -l' | sort
head -c 3000000 /dev/urandom > big.bin
sbcast big.bin /tmp/big.bin && berth step -l -N 3 -n 3 sh -c 'cmp /tmp/big.bin big.bin && echo same' | sort
pbsdsh -u sh -c 'echo "dsh $PBS_NODENUM $PBS_VNODENUM $(hostname)"' | sort
pbsdsh -n 3 sh -c 'echo "vnode $PBS_VNODENUM $PBS_NODENUM $(hostname)"'
echo "$OMPI_MCA_plm_rsh_agent $HYDRA_LAUNCHER_EXEC"
berth step -o 'task-%n-%N-%t.out' sh -c 'echo "$SLURM_PROCID on $(hostname)"'
berth step -N 3 -n 3 sh -c '[ $SLURM_NODEID = 2 ] && dd if=/dev/zero of=/dev/null bs=24M count=1 2>/dev/null; exit 0'
berth step -l -N 3 -n 3 --mem=40M sh -c 'echo "memstep $(grep -c "/step_[0-9]*$" /proc/self/cgroup)"' | sort
berth step -N 3 -n 3 sh -c '[ $SLURM_NODEID = 1 ] && dd if=/dev/zero of=/dev/null bs=20M count=1 2>/dev/null; touch "left-$SLURM_NODEID"; exec sleep 60' 2>/dev/null &
while [ ! -e left-0 ] || [ ! -e left-1 ] || [ ! -e left-2 ]; do sleep 0.1; done
"#;
    let id = c.submit(Mode::Rootless, "steps.sh", script, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED"]);
    let out = output(&t, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}\n{}", t.logs());
    let nodes = nodes_of(&job);
    let (a, b, c3) = (&nodes[0], &nodes[1], &nodes[2]);
    let l = berth_core::job::hostlist(&nodes);
    let cwd = t.c.f.cwd(Mode::Rootless);
    let expected = format!(
        "all:\n\
         0/6 0 0 {a} {a}\n1/6 1 0 {a} {a}\n2/6 0 1 {b} {b}\n3/6 1 1 {b} {b}\n4/6 0 2 {c3} {c3}\n5/6 1 2 {c3} {c3}\n\
         labelled:\n\
         0: {a} {l} 1(x3)\n1: {b} {l} 1(x3)\n2: {c3} {l} 1(x3)\n\
         named:\n"
    );
    assert!(out.starts_with(&expected), "{out}");
    assert!(out.contains("\ncode=3\n"), "{out}");
    // -N with -w: those named (the job's two tasks there); -x: the others.
    let mut others = [a.clone(), c3.clone()];
    others.sort();
    let placed = format!("\nplaced:\n{c3}\n{c3}\n{} {} \n", others[0], others[1]);
    assert!(out.contains(&placed), "{out}");
    // A step's own memory on every node: its tasks in a cgroup of the step's there.
    let in_step: Vec<&str> = out.lines().filter(|l| l.contains(": memstep ")).collect();
    assert_eq!(in_step.len(), 3, "{out}");
    assert!(in_step.iter().all(|l| !l.ends_with(" 0")), "{out}");
    assert!(
        out.contains("\nbad=7\n"),
        "with --kill-on-bad-exit, a failing task ends the others: {out}"
    );
    assert!(
        out.contains(&format!(
            "rsh:\non {b} as {TEST_USER} in {}\npiped\n1048576\n",
            cwd.display()
        )),
        "{out}"
    );
    assert!(out.contains("\nrsh code=5\n"), "{out}");
    // The step's input reaches every node's task (or task 2's alone, on the third node);
    // sbcast's file every node's container.
    assert!(
        out.contains(&format!(
            "input:\n0: {a} 3\n1: {b} 3\n2: {c3} 3\n0: 0\n1: 0\n2: 1\n0: same\n1: same\n2: same\n\
             dsh 0 0 {a}\ndsh 1 2 {b}\ndsh 2 4 {c3}\nvnode 3 1 {b}\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("\n/.berth/bin/berth-rsh /.berth/bin/berth-rsh\n"),
        "{out}"
    );
    // Files of each task, opened on its node (%n its index, %N its name).
    for (rank, node) in [a, a, b, b, c3, c3].iter().enumerate() {
        let name = format!("task-{}-{node}-{rank}.out", rank / 2);
        let text =
            std::fs::read_to_string(cwd.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(text, format!("{rank} on {node}\n"));
    }
    // The step still running when the script ended is ended by the job's end on each node,
    // whose step process reports what its tasks used after the job has ended: wait for it.
    let all_said = |job: &serde_json::Value| {
        job["steps"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| !s["usage"].is_null()))
    };
    wait_until(30, || all_said(&c.show(id)), || format!("{}", c.show(id)));
    let job = c.show(id);
    let steps = job["steps"].as_array().unwrap();
    assert_eq!(steps[0]["ntasks"], 6, "{job}");
    assert_eq!(steps[2]["exit_code"], 3, "{job}");
    // What the tasks used comes back from every node: the largest task ran on the third.
    let dd = steps
        .iter()
        .find(|s| s["command"].as_str().unwrap().contains("dd if"))
        .unwrap();
    let rss = dd["usage"]["max_rss_bytes"].as_u64().unwrap();
    assert!(rss >= 24 << 20, "{dd}");
    // Every step's usage came (waited for above), the one whose failing task had the other
    // nodes' tasks killed too (their step processes killed their tasks and said what they
    // used), and the one still running on all three nodes when the script ended (the job's
    // end had each node's step process kill its task and say what it used).
    assert_eq!(steps[5]["exit_code"], 7, "{job}");
    let left = steps.last().unwrap();
    assert!(
        left["command"].as_str().unwrap().contains("left-"),
        "{left}"
    );
    assert!(
        left["usage"]["max_rss_bytes"].as_u64().unwrap() >= 20 << 20,
        "{left}"
    );
}

/// `berth cancel JOB.STEP` of a step across two nodes, run from the batch host's agent (one
/// of its own, not the controller's): its tasks end on both nodes, the job goes on.
#[test]
fn a_step_across_nodes_is_cancelled_alone() {
    let Some(t) = TestCluster::start(17, 2, None) else {
        return;
    };
    let c = &t.c;
    // A one-task step goes to the node whose CPU is free (the first one's is busy), at once.
    let script = r#"#!/bin/sh
#SBATCH -N 2
#BERTH --image busybox
berth step -n 1 sh -c 'touch busy; exec sleep 3' &
while [ ! -e busy ]; do sleep 0.1; done
echo "free: $(berth step -n 1 hostname 2>&1)"
wait
berth step -N 2 -n 2 sleep 300 2>/dev/null
echo "step ended $?"
"#;
    let id = c.submit(Mode::Rootless, "cancel.sh", script, &[]);
    wait_until(
        60,
        || c.show(id)["steps"][2]["start_time"].is_u64(),
        || format!("no step started: {}\n{}", c.show(id), t.logs()),
    );
    c.berth(Mode::Rootless, &["cancel", &format!("{id}.2")])
        .ok();
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED"]);
    let out = output(&t, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}\n{}", t.logs());
    let second = &nodes_of(&job)[1];
    assert_eq!(out, format!("free: {second}\nstep ended 143\n"));
    assert_eq!(job["steps"][2]["cancelled"], true, "{job}");
}

/// Tasks that do not divide evenly over the nodes: `-N 2 -n 3` starts beside a job that
/// holds one of the first node's two CPUs (two tasks on the second node, one on the
/// first), and a step of the job's tasks runs them where the job has them.
#[test]
fn uneven_tasks_start_where_each_node_has_room() {
    let Some(t) = TestCluster::start(26, 2, None) else {
        return;
    };
    let c = &t.c;
    let names = t.hosts.names();
    let busy = c.submit_holding("one.sh", &format!("-n 1 -w {}", names[0]), &[]);
    let script = r#"#!/bin/sh
#SBATCH -N 2 -n 3
#BERTH --image busybox
echo "tasks=$SLURM_TASKS_PER_NODE cpus=$SLURM_JOB_CPUS_PER_NODE"
berth step -l sh -c 'echo "$(hostname) $SLURM_STEP_TASKS_PER_NODE"' | sort
"#;
    let id = c.submit(Mode::Rootless, "uneven.sh", script, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED"]);
    let out = output(&t, id);
    assert_eq!(
        job["state"],
        "COMPLETED",
        "{job}
{out}
{}",
        t.logs()
    );
    assert_eq!(nodes_of(&job), names, "{job}");
    let (a, b) = (&names[0], &names[1]);
    assert_eq!(
        out,
        format!(
            "tasks=1,2 cpus=1,2
0: {a} 1,2
1: {b} 1,2
2: {b} 1,2
"
        ),
        "{job}"
    );
    c.berth(Mode::Rootless, &["cancel", &busy.to_string()]).ok();
}

/// A signal to all of a job's processes on two nodes (`scancel -f -s USR1`) reaches the
/// batch shell and every task, and the job goes on (the container holding its place on
/// the second node, and berth's own step processes, are spared); its cancel then gives
/// every task a SIGTERM, the second node's too, before anything is killed.
#[test]
fn signals_reach_every_task_of_a_job_across_nodes() {
    let Some(t) = TestCluster::start(24, 2, None) else {
        return;
    };
    let c = &t.c;
    let cwd = c.f.cwd(Mode::Rootless);
    // (The step's tasks carry this test's mark, to be told from other tests' on this host.)
    let mark = format!("STOPMARK={}", cwd.display());
    let script = format!(
        r#"#!/bin/sh
#SBATCH -N 2
#BERTH --image busybox
trap 'echo batch USR1' USR1
export {mark}
berth step -N 2 -n 2 sh -c 'trap "echo task $SLURM_PROCID USR1" USR1; trap "echo task $SLURM_PROCID TERM; exit 0" TERM; touch ready.$SLURM_PROCID; while :; do sleep 1; done' &
while :; do sleep 1; done
"#
    );
    let id = c.submit(Mode::Rootless, "signals.sh", &script, &[]);
    wait_until(
        60,
        || cwd.join("ready.0").exists() && cwd.join("ready.1").exists(),
        || format!("no step started: {}\n{}", c.show(id), t.logs()),
    );
    let usr1 = ["cancel", "--signal", "USR1", "-f", &id.to_string()];
    c.berth(Mode::Rootless, &usr1).ok();
    let said = |what: &[&str]| {
        let out = output(&t, id);
        what.iter().all(|line| out.lines().any(|l| l == *line))
    };
    wait_until(
        30,
        || said(&["batch USR1", "task 0 USR1", "task 1 USR1"]),
        || format!("{}\n{}", output(&t, id), c.show(id)),
    );
    assert_eq!(c.show(id)["state"], "RUNNING", "{}", output(&t, id));
    // The step's SIGSTOP stops its tasks on both nodes (its leader on the first passes it on
    // before it stops), and SIGCONT has them go on.
    let states = || {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
            if !vars.contains(&mark.as_bytes()) || !vars.contains(&&b"SLURM_STEP_ID=0"[..]) {
                continue;
            }
            let rank = vars
                .iter()
                .find_map(|v| v.strip_prefix(b"SLURM_PROCID="))
                .map(<[u8]>::to_vec);
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if let (Some(rank), Some((_, rest))) = (rank, stat.rsplit_once(") ")) {
                found.push((rank, rest.chars().next().unwrap_or(' ')));
            }
        }
        found
    };
    let all = |state: char| {
        let found = states();
        let ranks: std::collections::BTreeSet<_> = found.iter().map(|(r, _)| r.clone()).collect();
        ranks.len() == 2 && found.iter().all(|(_, s)| (*s == 'T') == (state == 'T'))
    };
    let step = format!("{id}.0");
    for (signal, state) in [("STOP", 'T'), ("CONT", 'S')] {
        c.berth(Mode::Rootless, &["cancel", "--signal", signal, &step])
            .ok();
        wait_until(
            30,
            || all(state),
            || format!("{signal}: {:?}\n{}", states(), t.logs()),
        );
    }
    c.berth(Mode::Rootless, &["cancel", &id.to_string()]).ok();
    let job = c.wait_for(id, &["CANCELLED", "FAILED", "COMPLETED"]);
    assert_eq!(job["state"], "CANCELLED", "{job}");
    let out = output(&t, id);
    assert!(said(&["task 0 TERM", "task 1 TERM"]), "{out}");
}

#[test]
fn berth_works_in_a_job_on_any_node_and_on_a_node_through_its_agent() {
    let Some(t) = TestCluster::start(14, 2, None) else {
        return;
    };
    let c = &t.c;
    std::fs::write(
        c.f.cwd(Mode::Rootless).join("next.sh"),
        "#!/bin/sh\n#BERTH --image busybox\necho \"next ran as $(id -un)\"\n",
    )
    .unwrap();
    // In the job's container, on a node whose agent runs elsewhere than the controller:
    // berth reaches the controller through that agent, as the job's user.
    let script = r#"#!/bin/sh
#SBATCH -N 2
#BERTH --image busybox
berth queue | grep -q " $SLURM_JOB_ID " && echo "sees itself"
echo "next=$(berth submit --parsable --dependency=afterok:$SLURM_JOB_ID next.sh)"
"#;
    let id = c.submit(Mode::Rootless, "first.sh", script, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    let out = output(&t, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}\n{}", t.logs());
    assert!(out.starts_with("sees itself\nnext="), "{out}");
    let next: u64 = out.trim().rsplit('=').next().unwrap().parse().unwrap();
    let job = c.wait_for(next, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(job["user"], TEST_USER);
    assert_eq!(output(&t, next), format!("next ran as {TEST_USER}\n"));

    // On a node's host, through its agent's socket (`berth agent --socket`): the caller is
    // who connects.
    let socket = t.agents[1].state.join("berth.sock");
    let through = |mode: Mode, args: &[&str]| {
        let mut cmd = c.f.cmd(mode, args);
        cmd.env("BERTH_SOCKET", &socket);
        Out::from_output(cmd.output().unwrap())
    };
    let history = through(Mode::Rootless, &["history", "--json"]);
    let users: Vec<String> = serde_json::from_str::<serde_json::Value>(history.ok())
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["user"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(users, [TEST_USER, TEST_USER]);
    // Someone else's job is not the caller's to cancel; a token is not minted here.
    let mine = c.submit(
        Mode::Root,
        "root.sh",
        "#!/bin/sh\n#BERTH --image busybox\nsleep 30\n",
        &[],
    );
    let cancel = through(Mode::Rootless, &["cancel", &mine.to_string()]);
    assert!(
        cancel.stderr.contains("only its owner or root"),
        "{}",
        cancel.stderr
    );
    let token = through(Mode::Rootless, &["token"]);
    assert_eq!(token.code, 125, "{}", token.stdout);
    assert!(
        token
            .stderr
            .contains("tokens are made on the controller's machine only"),
        "{}",
        token.stderr
    );
    c.berth(Mode::Root, &["cancel", &mine.to_string()]).ok();
    // A user's registry credentials go on to the controller (in TLS), which pulls with them.
    let private = through(
        Mode::Rootless,
        &[
            "image",
            "pull",
            "--cluster",
            "--creds",
            "u:p",
            "127.0.0.1:9/x:1",
        ],
    );
    assert_eq!(private.code, 125, "{}{}", private.stdout, private.stderr);
    assert!(
        private.stderr.contains("127.0.0.1:9") && !private.stderr.contains("cross the network"),
        "{}",
        private.stderr
    );
    // A step with an allocation of its own, from that node's host, across both nodes.
    let alloc = through(
        Mode::Rootless,
        &[
            "step",
            "--image",
            "busybox",
            "-N",
            "2",
            "-l",
            "sh",
            "-c",
            "echo $(id -un)",
        ],
    );
    let mut lines: Vec<&str> = alloc.ok().lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [format!("0: {TEST_USER}"), format!("1: {TEST_USER}")]
    );
    // An allocation held through that agent hears its job's end (its time limit) while its
    // command still runs: the agent waits on the controller for it.
    let limited = through(
        Mode::Rootless,
        &["alloc", "--time=0:02", "--image", "busybox", "sleep", "60"],
    );
    assert_eq!(limited.code, 128 + 1, "{}", limited.stderr);
    assert!(
        limited.stderr.contains("has been revoked"),
        "{}",
        limited.stderr
    );
}

#[test]
fn steps_and_allocations_from_the_controllers_host_run_on_the_nodes() {
    let Some(t) = TestCluster::start(15, 2, None) else {
        return;
    };
    let c = &t.c;
    // Into a running job, from a host that is none of its nodes (the controller's, here):
    // every task is relayed, and gets the job's environment under the client's.
    let id = c.submit_holding("holder.sh", "-N 2", &[]);
    let job = id.to_string();
    let step = c.berth(
        Mode::Rootless,
        &[
            "step",
            "--job",
            &job,
            "-l",
            "sh",
            "-c",
            "echo $(hostname) $SLURM_JOB_ID $(id -un)",
        ],
    );
    let mut lines: Vec<&str> = step.ok().lines().collect();
    lines.sort();
    let nodes = nodes_of(&c.show(id));
    assert_eq!(
        lines,
        [
            format!("0: {} {id} {TEST_USER}", nodes[0]),
            format!("1: {} {id} {TEST_USER}", nodes[1])
        ]
    );
    // In an image of its own on both nodes (which fetch it from the controller).
    c.import_marked("marked");
    let own = c.berth(
        Mode::Rootless,
        &[
            "step",
            "--job",
            &job,
            "--container-image=marked",
            "-l",
            "sh",
            "-c",
            "echo $(hostname) $(cat /etc/marker)",
        ],
    );
    let mut lines: Vec<&str> = own.ok().lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("0: {} marked", nodes[0]),
            format!("1: {} marked", nodes[1])
        ]
    );
    // A named container on each node: what a step left in it there, the next finds.
    let named = |flags: &[&str], command: &str| {
        let mut args = vec!["step", "--job", &job, "--container-name=dev", "-l"];
        args.extend(flags);
        args.extend(["sh", "-c", command]);
        c.berth(Mode::Rootless, &args).ok().to_string()
    };
    named(&["--container-image=marked"], "hostname > /opt/shared/host");
    let mut lines: Vec<String> = named(&[], "echo $(hostname) $(cat /opt/shared/host)")
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("0: {0} {0}", nodes[0]),
            format!("1: {0} {0}", nodes[1])
        ]
    );
    c.berth(Mode::Rootless, &["cancel", &job]).ok();
    c.wait_for(id, &["CANCELLED"]);
    // An allocation of its own on two nodes, as srun -N 2 gets one.
    let alloc = c.berth(
        Mode::Rootless,
        &[
            "step", "--image", "busybox", "-N", "2", "-n", "2", "-l", "hostname",
        ],
    );
    let mut lines: Vec<&str> = alloc.ok().lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{}", alloc.stdout);
    assert!(lines[0].starts_with("0: bt15-h") && lines[1].starts_with("1: bt15-h"));
    assert_ne!(lines[0][3..], lines[1][3..], "one task per node");
    // An allocation held while a command runs here (salloc -N 2): its steps run on both
    // nodes, with the job's environment under the command's.
    let bin = c.f.bin.to_str().unwrap();
    let held = c.berth(
        Mode::Rootless,
        &[
            "alloc",
            "--image",
            "busybox",
            "-N",
            "2",
            "sh",
            "-c",
            &format!(r#"echo "nodes $SLURM_JOB_NODELIST"; "{bin}" step -l sh -c 'echo $(hostname) $SLURMD_NODENAME $SLURM_JOB_ID'"#),
        ],
    );
    let mut lines: Vec<&str> = held.ok().lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 3, "{}", held.stdout);
    let id = crate::controller::granted(&held.stderr);
    let nodes = nodes_of(&c.show(id));
    for (rank, line) in lines[..2].iter().enumerate() {
        let node = &nodes[rank];
        assert_eq!(*line, format!("{rank}: {node} {node} {id}"));
    }
    assert!(lines[2].starts_with("nodes bt15-h"), "{}", lines[2]);
    // scancel -s reaches a step's tasks on every node (through each node's agent), the batch
    // shell spared.
    let script = r#"#!/bin/sh
#SBATCH -N 2
#BERTH --image busybox
trap 'echo batch-got-usr1' USR1
berth step -l sh -c 'trap "echo got-usr1 \$(hostname)" USR1; echo ready; while :; do sleep 0.2; done' &
while :; do sleep 0.2; done
"#;
    let id = c.submit(Mode::Rootless, "sig.sh", script, &[]);
    c.wait_for_output(id, "0: ready");
    c.wait_for_output(id, "1: ready");
    let job = id.to_string();
    c.berth(Mode::Rootless, &["as", "scancel", "-s", "USR1", &job])
        .ok();
    let nodes = nodes_of(&c.show(id));
    c.wait_for_output(id, &format!("0: got-usr1 {}", nodes[0]));
    c.wait_for_output(id, &format!("1: got-usr1 {}", nodes[1]));
    c.berth(Mode::Rootless, &["cancel", &job]).ok();
    c.wait_for(id, &["CANCELLED"]);
    let out = output(&t, id);
    assert!(!out.contains("batch-got-usr1"), "{out}");
}
