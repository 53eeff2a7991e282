//! Jobs across nodes: one container per node, the script in the first, the job's end (or
//! cancel, or a node's failure) ending them all.

use crate::hosts::{job_cgroups, nodes_of, output, TestCluster};
use crate::support::*;
use std::io::Write;

/// Waits up to 30 s until `cond` holds, or fails with `what`.
fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    crate::support::wait_until(30, cond, || format!("timed out waiting: {what}"));
}

#[test]
fn a_job_on_three_nodes_has_a_container_on_each_and_leaves_none() {
    let Some(t) = TestCluster::start(1, 3, None) else {
        return;
    };
    let c = &t.c;
    let go = c.f.cwd(Mode::Rootless).join("go");
    let script = format!(
        "#!/bin/sh\n#SBATCH -N 3 --ntasks-per-node=1\n#BERTH --image busybox\n\
         echo \"host=$(hostname) nodes=$SLURM_JOB_NODELIST ($BERTH_NODELIST) n=$SLURM_NNODES id=$SLURM_NODEID tasks=$SLURM_TASKS_PER_NODE\"\n\
         echo \"lsf=$LSB_MCPU_HOSTS\"\n\
         cat \"$LSB_DJOB_HOSTFILE\"\n\
         echo running\n\
         while [ ! -e {} ]; do sleep 0.1; done\n",
        go.display()
    );
    let id = c.submit(Mode::Rootless, "wide.sh", &script, &[]);
    c.wait_for_output(id, "running");
    let job = c.show(id);
    assert_eq!(job["state"], "RUNNING", "{job}");
    let nodes = nodes_of(&job);
    let mut sorted = nodes.clone();
    sorted.sort();
    assert_eq!(sorted, t.hosts.names(), "one share per node: {job}");

    // The script runs on the first node, in its own hostname; every variable lists all.
    let out = output(&t, id);
    let list = nodes.join(",");
    assert!(
        out.starts_with(&format!(
            "host={} nodes={} ({list}) n=3 id=0 tasks=1(x3)\n",
            nodes[0],
            // Slurm's hostlist form: bt1-h[1-3], in the order of the job's nodes.
            berth_core::job::hostlist(&nodes)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "lsf={} 1 {} 1 {} 1\n",
            nodes[0], nodes[1], nodes[2]
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{}\n{}\n{}\nrunning\n",
            nodes[0], nodes[1], nodes[2]
        )),
        "the hostfile, a slot a line: {out}"
    );

    // A container on each node: each agent's runner, with the job's cgroup.
    let runners = t.runners(id);
    wait_until("a cgroup per node", || job_cgroups(id, &runners).len() == 3);

    // The controller's metrics: the job running, a CPU of each node allocated to it, and
    // each node's health as its agent reported it at its last heartbeat.
    let partition = job["partition"].as_str().unwrap();
    let m = c.metrics();
    let running = format!(r#"berth_jobs{{partition="{partition}",state="RUNNING"}}"#);
    assert_eq!(m.get(&running), Some(&1.0), "{m:?}");
    for n in &nodes {
        let on = |metric: &str| m.get(&format!(r#"{metric}{{node="{n}"}}"#)).copied();
        assert_eq!(on("berth_node_cpus_allocated"), Some(1.0), "{n}: {m:?}");
        assert!(
            on("berth_node_load1").is_some_and(|l| l >= 0.0),
            "{n}: {m:?}"
        );
        assert!(
            on("berth_node_memory_available_bytes").is_some_and(|b| b > 0.0),
            "{n}: {m:?}"
        );
        assert!(
            on("berth_node_heartbeat_age_seconds").is_some_and(|s| s < 30.0),
            "{n}: {m:?}"
        );
        let shown = c.berth(Mode::Root, &["as", "scontrol", "show", "node", n]);
        assert!(!shown.ok().contains("N/A"), "{n}: {}", shown.stdout);
    }

    // The script ends: the job completes, and no container is left on any node.
    std::fs::write(&go, "").unwrap();
    let job = c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", t.logs());
    wait_until("no cgroup of the job left", || {
        job_cgroups(id, &runners).is_empty()
    });
    for &r in &runners {
        wait_until("the runners gone", || {
            !std::path::Path::new(&format!("/proc/{r}")).exists()
        });
    }
    for n in &nodes {
        wait_until("the job's directory gone", || {
            t.agent(n).runner(id).is_none()
        });
    }
    // Each node keeps its copy of the image (in its cache) mounted for its next jobs, until
    // its agent stops: then no loop device of the image is left.
    assert_eq!(loop_devices_under(t.c.f.dir.path()).len(), 3);
    let mut t = t;
    for agent in &mut t.agents {
        agent.stop();
        // Nor its sockets for the host's users (--socket, and the step socket beside it).
        let socket = agent.state.join("berth.sock");
        for left in [socket.clone(), socket.with_extension("step")] {
            assert!(!left.exists(), "{} is left", left.display());
        }
    }
    wait_until("no loop device of the job's image left", || {
        loop_devices_under(t.c.f.dir.path()).is_empty()
    });
}

/// Whether the cgroup `berth/<name>` is frozen: cgroup v1's freezer, or v2's cgroup.freeze.
fn frozen(name: &str) -> bool {
    let v1 = format!("/sys/fs/cgroup/freezer/berth/{name}/freezer.state");
    match std::fs::read_to_string(&v1) {
        Ok(state) => state.trim() == "FROZEN",
        Err(_) => {
            let v2 = format!("/sys/fs/cgroup/berth/{name}/cgroup.freeze");
            std::fs::read_to_string(&v2)
                .unwrap_or_else(|e| panic!("{v2}: {e}"))
                .trim()
                == "1"
        }
    }
}

/// Jobs across nodes (a container and cgroup per node, suspend and resume on all, the time
/// limit, a node lost) on a kernel whose cgroup hierarchy is pure v2 (this machine's is v1).
#[test]
fn multi_node_jobs_on_pure_cgroup_v2() {
    again_on_cgroup_v2(&[
        "jobs::multi_node_jobs_on_pure_cgroup_v2",
        "jobs::a_job_on_three_nodes_has_a_container_on_each_and_leaves_none",
        "jobs::cancelling_a_job_on_two_nodes_ends_both_containers",
        "jobs::a_node_lost_mid_job_fails_it_and_the_other_nodes_containers_go",
        "jobs::the_time_limit_ends_a_job_on_all_its_nodes",
    ]);
}

#[test]
fn cancelling_a_job_on_two_nodes_ends_both_containers() {
    let Some(t) = TestCluster::start(2, 2, None) else {
        return;
    };
    let c = &t.c;
    let id = c.submit_holding("sleepy.sh", "-N 2", &[]);
    let runners = t.runners(id);
    wait_until("a cgroup per node", || job_cgroups(id, &runners).len() == 2);
    // Suspend and resume act on both nodes at once.
    let s = id.to_string();
    c.berth(Mode::Rootless, &["suspend", &s]).ok();
    assert_eq!(c.show(id)["state"], "SUSPENDED");
    for cg in job_cgroups(id, &runners) {
        assert!(frozen(&cg), "{cg}");
    }
    c.berth(Mode::Rootless, &["resume", &s]).ok();
    for cg in job_cgroups(id, &runners) {
        assert!(!frozen(&cg), "{cg}");
    }
    // Its usage so far, read from each node's agent.
    let usage = c.berth(Mode::Rootless, &["usage", &s, "-n", "-P", "-o", "Node"]);
    let mut nodes: Vec<&str> = usage.ok().lines().collect();
    nodes.sort();
    assert_eq!(nodes, nodes_of(&c.show(id)));
    c.berth(Mode::Rootless, &["cancel", &s]).ok();
    let job = c.wait_for(id, &["CANCELLED", "FAILED", "COMPLETED", "NODE_FAIL"]);
    assert_eq!(job["state"], "CANCELLED", "{job}\n{}", t.logs());
    wait_until("no cgroup of the job left", || {
        job_cgroups(id, &runners).is_empty()
    });
}

#[test]
fn a_node_lost_mid_job_fails_it_and_the_other_nodes_containers_go() {
    // (Slower in the emulated machine of the cgroup v2 run: a node there once missed 6 s of
    // heartbeats while its job started, and its job failed before it ran.)
    let timeout = patience(6).as_secs();
    let config = format!("[batch]\nnode_timeout = {timeout}\nrequeue = false\n");
    let Some(mut t) = TestCluster::start(3, 2, Some(&config)) else {
        return;
    };
    let id = t.c.submit_holding("lost.sh", "-N 2", &[]);
    let runners = t.runners(id);
    wait_until("a cgroup per node", || job_cgroups(id, &runners).len() == 2);
    let job = t.c.show(id);
    let second = job["nodes"][1].as_str().unwrap().to_string();
    let first = job["nodes"][0].as_str().unwrap().to_string();
    // The second node's agent dies.
    let index = t.agents.iter().position(|a| a.name == second).unwrap();
    t.agents[index].kill();
    let job =
        t.c.wait_for(id, &["NODE_FAIL", "FAILED", "COMPLETED", "CANCELLED"]);
    assert_eq!(job["state"], "NODE_FAIL", "{job}\n{}", t.logs());
    assert!(job["reason"].as_str().unwrap().contains(&second), "{job}");
    // The first node's container is stopped by its agent; the lost node's runner is still
    // there (nothing could reach it) until its agent is back and is told to stop it.
    wait_until("the first node's container gone", || {
        job_cgroups(id, &runners) == [format!("{}-job{id}", runners[1])]
            && t.agent(&first).runner(id).is_none()
    });
    t.agents[index] = crate::hosts::Agent::start(&t.c, &t.hosts, index + 1);
    wait_until(
        "the lost node's container stopped once its agent is back",
        || job_cgroups(id, &runners).is_empty(),
    );
    t.wait_for_nodes(&t.hosts.names());
}

/// A batch job whose node is lost goes back to the queue by default, as Slurm's
/// (JobRequeue=1), and runs again once a node can take it: its first run NODE_FAIL in its
/// record (sacct -D), the second with SLURM_RESTART_COUNT; one submitted with
/// --no-requeue ends NODE_FAIL.
#[test]
fn a_batch_job_whose_node_is_lost_is_queued_again() {
    let config = "[batch]\nnode_timeout = 6\n";
    let Some(mut t) = TestCluster::start(25, 1, Some(config)) else {
        return;
    };
    let script = "#!/bin/sh\n#BERTH --image busybox\necho \"run ${SLURM_RESTART_COUNT:-0}\"\nwhile [ ! -e go ]; do sleep 0.2; done\n";
    let id = t.c.submit(Mode::Rootless, "again.sh", script, &[]);
    let once =
        t.c.submit(Mode::Rootless, "once.sh", script, &["--no-requeue"]);
    t.c.wait_for_output(id, "run 0\n");
    t.c.wait_for_output(once, "run 0\n");
    t.agents[0].kill();
    let job = t.c.wait_for(once, &["NODE_FAIL", "FAILED", "COMPLETED"]);
    assert_eq!(job["state"], "NODE_FAIL", "{job}");
    assert_eq!(t.c.show(id)["state"], "PENDING");
    t.agents[0] = crate::hosts::Agent::start(&t.c, &t.hosts, 1);
    // (Its output file begun anew, as at a first run.)
    t.c.wait_for_output(id, "run 1\n");
    std::fs::write(t.c.f.cwd(Mode::Rootless).join("go"), "").unwrap();
    let job = t.c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(
        (&job["state"], &job["restarts"]),
        (&"COMPLETED".into(), &1.into()),
        "{job}"
    );
    assert_eq!(job["earlier_runs"][0]["state"], "NODE_FAIL", "{job}");
}

/// A step goes on across a restart of its node's agent, which adopts its process: its
/// client in the job asks the new agent for its end. One whose process was killed
/// meanwhile ends with status 125 (berth's own, its end unknown), and the job's next step
/// gets its CPU instead of waiting for it for ever.
#[test]
fn a_step_goes_on_across_its_agents_restart() {
    let config = "[batch]\nnode_timeout = 6\n";
    let Some(mut t) = TestCluster::start(23, 1, Some(config)) else {
        return;
    };
    let script = r#"#!/bin/sh
#SBATCH -n 1
#BERTH --image busybox
srun -n 1 sh -c 'echo started; while [ ! -e go ]; do sleep 0.1; done; exit 4' 2>/dev/null
echo "srun=$?"
srun -n 1 sh -c 'echo again; exec sleep 300' 2>/dev/null
echo "srun=$?"
until srun -n 1 echo second 2>/dev/null; do sleep 1; done
"#;
    let id = t.c.submit(Mode::Rootless, "lost.sh", script, &[]);
    t.c.wait_for_output(id, "started\n");
    t.agents[0].kill();
    t.agents[0] = crate::hosts::Agent::start(&t.c, &t.hosts, 1);
    std::fs::write(t.c.f.cwd(Mode::Rootless).join("go"), "").unwrap();
    t.c.wait_for_output(id, "again\n");
    t.agents[0].kill();
    // The step's process (as it registered in its job's directory) dies too.
    let steps = t.agents[0].state.join(format!("jobs/{id}/steps"));
    for entry in std::fs::read_dir(&steps).unwrap().flatten() {
        if let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() {
            // SAFETY: kill(2) of this test's own job's step process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    t.agents[0] = crate::hosts::Agent::start(&t.c, &t.hosts, 1);
    let job =
        t.c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED"]);
    let out = output(&t, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}\n{}", t.logs());
    assert_eq!(out, "started\nsrun=4\nagain\nsrun=125\nsecond\n");
    assert_eq!(job["steps"][0]["exit_code"], 4, "{job}");
    assert!(job["steps"][0]["usage"]["user_usec"].is_u64(), "{job}");
    assert_eq!(job["steps"][1]["exit_code"], 125, "{job}");
}

/// Lets job `id`'s tasks go on (the `go` file they wait for) and waits for it to complete:
/// its record and output.
fn go_and_complete(t: &TestCluster, id: u64) -> (serde_json::Value, String) {
    std::fs::write(t.c.f.cwd(Mode::Rootless).join("go"), "").unwrap();
    let job =
        t.c.wait_for(id, &["COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED"]);
    let out = output(t, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}\n{}", t.logs());
    (job, out)
}

/// A step across two nodes goes on while the second node's agent restarts: its tasks there
/// write on (into the part's FIFOs, which its step process holds), the next agent adopts
/// the part, and the agent that took the step takes it back, with the rest of its output
/// and its status.
#[test]
fn a_step_across_nodes_goes_on_across_another_nodes_agent_restart() {
    let Some(mut t) = TestCluster::start(27, 2, None) else {
        return;
    };
    let script = r#"#!/bin/sh
#SBATCH -N 2
#BERTH --image busybox
srun -N 2 -n 2 sh -c 'echo "$SLURM_NODEID before"; while [ ! -e go ]; do sleep 0.1; done; seq 1 20000 | wc -l; echo "$SLURM_NODEID after"; exit $((SLURM_NODEID * 3))'
echo "srun=$?"
"#;
    let id = t.c.submit(Mode::Rootless, "across.sh", script, &[]);
    t.c.wait_for_output(id, "1 before\n");
    t.c.wait_for_output(id, "0 before\n");
    let second = nodes_of(&t.c.show(id))[1].clone();
    t.restart_agent(&second);
    let (job, out) = go_and_complete(&t, id);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "0 after",
            "0 before",
            "1 after",
            "1 before",
            "20000",
            "20000",
            &format!("srun: error: {second}: task 1: Exited with exit code 3"),
            "srun=3"
        ],
        "{out}\n{}",
        t.logs()
    );
    assert_eq!(job["steps"][0]["exit_code"], 3, "{job}");
    assert!(
        t.agent(&second).log().contains("its part here adopted"),
        "{}",
        t.logs()
    );
}

/// A step across two nodes goes on while the agent that took it restarts (the first
/// node's, where the job's script runs), and the second node's after it: the step's
/// leader, a process of its own on the first node, keeps relaying the second node's part
/// and serving the tasks' PMI (their barrier and key-value space after both restarts are
/// answered), the next agent adopts it, and the client learns its end from that agent. A
/// task's abort of a step across nodes ends it with its code.
#[test]
fn a_step_across_nodes_goes_on_across_its_own_agents_restart() {
    let Some(mut t) = TestCluster::start(28, 2, None) else {
        return;
    };
    let cwd = t.c.f.cwd(Mode::Rootless);
    let client = format!("{PMI_SHELL_CLIENT}exit $((PMI_RANK * 3))\n");
    std::fs::write(cwd.join("pmi.sh"), client).unwrap();
    let script = r#"#!/bin/sh
#SBATCH -N 2
#BERTH --image busybox
srun -N 2 -n 2 sh pmi.sh
echo "srun=$?"
srun -N 2 -n 2 sh -c 'if [ $PMI_RANK = 1 ]; then echo "cmd=abort exitcode=7" >&$PMI_FD; fi; exec sleep 60'
echo "abort=$?"
"#;
    let id = t.c.submit(Mode::Rootless, "lead.sh", script, &[]);
    wait_until("both tasks past their barrier", || {
        cwd.join("up.0").exists() && cwd.join("up.1").exists()
    });
    let nodes = nodes_of(&t.c.show(id));
    for node in &nodes {
        t.restart_agent(node);
    }
    let (job, out) = go_and_complete(&t, id);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    let mut expected = vec![
        "rank 0 of 2: from-1, cmd=barrier_out, cmd=finalize_ack".to_string(),
        "rank 1 of 2: from-0, cmd=barrier_out, cmd=finalize_ack".into(),
        format!("srun: error: {}: task 1: Exited with exit code 3", nodes[1]),
        "srun=3".into(),
        // The abort: the other tasks are killed, as srun says.
        "berth step: a task aborted the step with exit code 7".into(),
        format!("srun: error: {}: task 0: Killed", nodes[0]),
        format!("srun: error: {}: task 1: Killed", nodes[1]),
        "abort=7".into(),
    ];
    expected.sort_unstable();
    assert_eq!(lines, expected, "{out}\n{}", t.logs());
    assert_eq!(job["steps"][0]["exit_code"], 3, "{job}");
    assert!(job["steps"][0]["usage"]["user_usec"].is_u64(), "{job}");
    assert_eq!(job["steps"][1]["exit_code"], 7, "{job}");
    assert!(t.agent(&nodes[0]).log().contains("adopted"), "{}", t.logs());
}

/// A machine that restarts faster than the node timeout loses its job files (on a tmpfs)
/// and the jobs' processes: its agent, back with job files of another id, has the
/// controller end those jobs NODE_FAIL at once, instead of leaving them running for ever.
#[test]
fn a_node_back_without_its_job_files_ends_their_jobs() {
    let config = "[batch]\nnode_timeout = 600\nrequeue = false\n";
    let Some(mut t) = TestCluster::start(6, 1, Some(config)) else {
        return;
    };
    let id = t.c.submit_holding("restarted.sh", "", &[]);
    let runners = t.runners(id);
    // The "restart": the agent and the job's runner (which takes the job with it) die, and
    // the job files go, as a tmpfs does.
    t.agents[0].kill();
    // SAFETY: kill(2) of this test's own job's runner.
    unsafe { libc::kill(runners[0] as i32, libc::SIGKILL) };
    std::fs::remove_dir_all(t.agents[0].state.join("jobs")).unwrap();
    t.agents[0] = crate::hosts::Agent::start(&t.c, &t.hosts, 1);
    let job =
        t.c.wait_for(id, &["NODE_FAIL", "FAILED", "COMPLETED", "CANCELLED"]);
    assert_eq!(job["state"], "NODE_FAIL", "{job}\n{}", t.logs());
    assert!(
        job["reason"].as_str().unwrap().contains("restarted"),
        "{job}"
    );
    // What the dead runner left (its cgroup) is swept by the agent.
    wait_until("no cgroup of the job left", || {
        job_cgroups(id, &runners).is_empty()
    });
}

#[test]
fn a_host_cut_off_the_network_is_down_and_stops_its_container_when_back() {
    let config = "[batch]\nnode_timeout = 6\nrequeue = false\n";
    let Some(t) = TestCluster::start(4, 2, Some(config)) else {
        return;
    };
    let id = t.c.submit_holding("cut.sh", "-N 2", &[]);
    let runners = t.runners(id);
    let second = t.c.show(id)["nodes"][1].as_str().unwrap().to_string();
    // The link between the host and the bridge goes down: its agent runs on, unheard.
    t.hosts.link(&second, false);
    let job =
        t.c.wait_for(id, &["NODE_FAIL", "FAILED", "COMPLETED", "CANCELLED"]);
    assert_eq!(job["state"], "NODE_FAIL", "{job}\n{}", t.logs());
    assert!(
        t.nodes().contains(&(second.clone(), "down".to_string())),
        "{:?}",
        t.nodes()
    );
    wait_until("the reachable node's container gone", || {
        job_cgroups(id, &runners) == [format!("{}-job{id}", runners[1])]
    });
    // Back on the network, the node is up again and its agent stops the job's container.
    t.hosts.link(&second, true);
    t.wait_for_nodes(&t.hosts.names());
    wait_until("the cut-off node's container stopped", || {
        job_cgroups(id, &runners).is_empty()
    });
    // And it takes jobs again.
    let next = t.c.submit(
        Mode::Rootless,
        "again.sh",
        "#!/bin/sh\n#BERTH --image busybox -N 2\nhostname\n",
        &[],
    );
    let job = t.c.wait_for(next, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", t.logs());
}

/// The time limit, lowered while the job runs (each node's runner gets the new one from its
/// agent), ends the job on all its nodes.
#[test]
fn the_time_limit_ends_a_job_on_all_its_nodes() {
    let Some(t) = TestCluster::start(9, 2, None) else {
        return;
    };
    let id = t.c.submit(
        Mode::Rootless,
        "long.sh",
        "#!/bin/sh\n#SBATCH -N 2 -t 10\n#BERTH --image busybox\necho started\nberth step -N 2 sleep 300\n",
        &[],
    );
    t.c.wait_for_output(id, "started");
    let runners = t.runners(id);
    t.c.berth(Mode::Rootless, &["update", &id.to_string(), "-t", "0:02"])
        .ok();
    let job = t.c.wait_for(
        id,
        &["TIMEOUT", "FAILED", "COMPLETED", "CANCELLED", "NODE_FAIL"],
    );
    assert_eq!(job["state"], "TIMEOUT", "{job}\n{}", t.logs());
    wait_until("no container left on any node", || {
        job_cgroups(id, &runners).is_empty()
    });
}

/// The files in a node's image cache.
fn cached(t: &TestCluster, node: &str) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(t.agent(node).state.join("images"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default()
}

/// The SHA-256 of the first image file in a node's cache (its name, `<sha256>.sqfs`).
fn cached_sha256(t: &TestCluster, node: &str) -> String {
    cached(t, node)[0]
        .file_name()
        .to_string_lossy()
        .trim_end_matches(".sqfs")
        .to_string()
}

#[test]
fn nodes_fetch_images_once_from_each_other_or_the_controller_and_check_them() {
    // Heartbeats every 2 s: the controller soon hears which node holds which image.
    let Some(t) = TestCluster::start(12, 2, Some("[batch]\nnode_timeout = 6\n")) else {
        return;
    };
    let script = "#!/bin/sh\n#SBATCH -N 2\n#BERTH --image busybox\nberth step -N 2 true\n";
    let names = t.hosts.names();
    for n in &names {
        assert!(cached(&t, n).is_empty());
    }
    let first = t.c.submit(Mode::Rootless, "a.sh", script, &[]);
    let job = t.c.wait_for(first, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", t.logs());
    // Each node now has the image, named by its digest, and nothing half-written.
    let inode = |n: &str| {
        use std::os::unix::fs::MetadataExt;
        let files = cached(&t, n);
        assert_eq!(files.len(), 1, "{n}: one cached image");
        let name = files[0].file_name().to_string_lossy().into_owned();
        assert!(name.ends_with(".sqfs") && name.len() == 64 + 5, "{name}");
        files[0].metadata().unwrap().ino()
    };
    let before: Vec<u64> = names.iter().map(|n| inode(n)).collect();
    let second = t.c.submit(Mode::Rootless, "b.sh", script, &[]);
    assert_eq!(
        t.c.wait_for(second, &["COMPLETED", "FAILED"])["state"],
        "COMPLETED"
    );
    let after: Vec<u64> = names.iter().map(|n| inode(n)).collect();
    assert_eq!(before, after, "the second job used the cached copies");

    // The controller's file changes under it (here: damaged). A node that lacks the image
    // gets it from one that has it, and that is what it runs.
    let store = t.c.f.path("store-root/images");
    let image = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("image.sqfs"))
        .find(|p| p.exists())
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&image)
        .unwrap()
        .write_all(b"tampered")
        .unwrap();
    let (holder, fresh) = (&names[0], &names[1]);
    for f in cached(&t, fresh) {
        std::fs::remove_file(f.path()).unwrap();
    }
    let sha256 = cached_sha256(&t, holder);
    wait_until("the controller hears which node holds the image", || {
        let nodes: serde_json::Value =
            serde_json::from_str(t.c.berth(Mode::Root, &["nodes", "--json"]).ok()).unwrap();
        let holds = |n: &str| {
            nodes.as_array().unwrap().iter().any(|node| {
                node["name"] == n
                    && node["images"]
                        .as_array()
                        .is_some_and(|i| i.iter().any(|s| *s == sha256.as_str()))
            })
        };
        holds(holder) && !holds(fresh)
    });
    let third = t.c.submit(Mode::Rootless, "c.sh", script, &[]);
    let job = t.c.wait_for(third, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", t.logs());
    assert_eq!(cached(&t, fresh).len(), 1);
    assert!(
        t.agent(holder).log().contains("serving the image file"),
        "{}",
        t.logs()
    );
    // With no node that has it, a node fetches it from the controller: bytes that do not
    // match the digest announced, of which it keeps none.
    for n in &names {
        for f in cached(&t, n) {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    let fourth = t.c.submit(Mode::Rootless, "d.sh", script, &[]);
    let job = t.c.wait_for(fourth, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "FAILED", "{job}");
    assert!(
        job["reason"].as_str().unwrap().contains("digest mismatch"),
        "{job}"
    );
    // (A runner killed mid-fetch, its job failed on the other node, leaves a partial file
    // that its agent sweeps.)
    wait_until("nothing kept of a bad fetch", || {
        names.iter().all(|n| cached(&t, n).is_empty())
    });

    // An image removed from the cluster's store goes from the nodes' caches too.
    let tree = t.c.f.copy_rootfs("tree-extra");
    let tarball = t.c.f.path("extra.tar");
    t.c.f.tarball_of(&tree, &tarball);
    let tarball = tarball.to_string_lossy();
    let import = [
        "image",
        "import",
        "--cluster",
        &tarball,
        "--name",
        "extra:1",
    ];
    t.c.berth(Mode::Root, &import).ok();
    let extra = "#!/bin/sh\n#SBATCH -N 2\n#BERTH --image extra:1\nberth step -N 2 true\n";
    let fifth = t.c.submit(Mode::Rootless, "e.sh", extra, &[]);
    let job = t.c.wait_for(fifth, &["COMPLETED", "FAILED", "NODE_FAIL"]);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{}", t.logs());
    for n in &names {
        assert_eq!(cached(&t, n).len(), 1, "{n}");
    }
    // Once the controller has heard of both copies (it knows the image then).
    let extra_sha = cached_sha256(&t, holder);
    wait_until("the controller hears both nodes hold the image", || {
        let nodes: serde_json::Value =
            serde_json::from_str(t.c.berth(Mode::Root, &["nodes", "--json"]).ok()).unwrap();
        nodes.as_array().unwrap().iter().all(|node| {
            node["images"]
                .as_array()
                .is_some_and(|i| i.iter().any(|s| *s == extra_sha.as_str()))
        })
    });
    t.c.berth(Mode::Root, &["image", "rm", "--cluster", "extra:1"])
        .ok();
    wait_until("the nodes drop a removed image from their caches", || {
        names.iter().all(|n| cached(&t, n).is_empty())
    });
    assert!(t.agent(holder).log().contains("removed the image file"));
}
