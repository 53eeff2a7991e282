//! Real MPI programs across test hosts, in the job's containers, started by the MPI
//! libraries' own launchers through `berth rsh` (no sshd in the image): Open MPI's mpirun
//! and MPICH's mpiexec.hydra; and started by `berth step` alone, with berth's PMI (MPICH)
//! and PMIx (Open MPI). The image is made of the files of Debian's MPI packages
//! (tests/cluster/mpi/image.sh), with tests/cluster/mpi/check.c built against each.

use crate::hosts::{job_cgroups, output, TestCluster};
use crate::support::*;
use std::path::Path;

/// A cluster of `n` hosts with the `mpi` image.
fn mpi_cluster(number: u8, n: usize) -> Option<TestCluster> {
    let t = TestCluster::start(number, n, None)?;
    let rootfs = t.c.f.path("mpi-rootfs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/mpi/image.sh");
    let out = std::process::Command::new(script)
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "image.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.c.f
        .berth(
            Mode::Root,
            &["image", "import", rootfs.to_str().unwrap(), "--name", "mpi"],
        )
        .ok();
    Some(t)
}

/// Runs `command` as a job on all `nodes` hosts, one task each; checks that every rank ran
/// on a host of its own and the allreduce held, and that nothing is left of the job.
fn run_mpi(t: &TestCluster, nodes: usize, command: &str) -> String {
    let script = format!(
        "#!/bin/sh\n#SBATCH -N {nodes} --ntasks-per-node=1 -t 2\n#BERTH --image mpi\n{command}\n"
    );
    let id = t.c.submit(Mode::Rootless, "mpi.sh", &script, &[]);
    let runners = t.runners(id);
    let job = t.c.wait_for(
        id,
        &["COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED", "TIMEOUT"],
    );
    let out = output(t, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}\n{}", t.logs());
    let mut hosts: Vec<&str> = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("rank ")?
                .split_once(" host ")
                .map(|(_, h)| h)
        })
        .collect();
    hosts.sort();
    let mut expected: Vec<String> = t.hosts.names().into_iter().take(nodes).collect();
    expected.sort();
    assert_eq!(hosts, expected, "one rank per host: {out}");
    assert!(out.contains(&format!("size {nodes}\n")), "{out}");
    assert!(
        out.contains("allreduce ok\n") && out.contains("done\n"),
        "{out}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !job_cgroups(id, &runners).is_empty() {
        assert!(std::time::Instant::now() < deadline, "containers left");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    out
}

#[test]
fn open_mpi_runs_across_three_hosts_through_berth_rsh() {
    let Some(t) = mpi_cluster(6, 3) else {
        return;
    };
    // No host list and no -np: mpirun reads the allocation from SLURM_NODELIST and
    // SLURM_TASKS_PER_NODE, and starts its daemons with berth rsh (OMPI_MCA_plm_rsh_agent).
    // Every "host" shares this machine's cores: no binding (see NETNS-MPI-ETCD.md).
    run_mpi(
        &t,
        3,
        "mpirun.openmpi --bind-to none --mca btl tcp,self --mca btl_tcp_if_include eth0 \
         --mca oob_tcp_if_include eth0 /opt/berth-test/check.openmpi 200 10",
    );
    // And with the LSF hostfile, as an LSF script would.
    run_mpi(
        &t,
        2,
        "mpirun.openmpi --bind-to none --mca btl tcp,self --mca btl_tcp_if_include eth0 \
         --mca oob_tcp_if_include eth0 -np 2 --hostfile \"$LSB_DJOB_HOSTFILE\" \
         /opt/berth-test/check.openmpi 200 10",
    );
}

#[test]
fn mpich_hydra_runs_across_two_hosts_through_berth_rsh() {
    let Some(t) = mpi_cluster(7, 2) else {
        return;
    };
    // Debian's hydra takes the allocation from SLURM_NODELIST and launches its proxies with
    // berth rsh (HYDRA_LAUNCHER_EXEC). The ranks are MPICH 5's (PMI-1 is the same): Debian's
    // MPICH 4.0.2 can hang in MPI_Finalize over TCP, one rank spinning in UCX's disconnect
    // while the other waits in the PMI barrier (NETNS-MPI-ETCD.md: with three ranks or more
    // on a quiet machine; here, with two, under the test suite's load, in 2 runs of 6).
    run_mpi(
        &t,
        2,
        "mpiexec.hydra -n 2 /opt/berth-test/check.mpich5 200 10",
    );
}

#[test]
fn mpich_ranks_start_without_mpiexec_with_berths_pmi() {
    let Some(t) = mpi_cluster(8, 2) else {
        return;
    };
    // berth step starts the ranks itself and serves them PMI-1: one per host (Debian's
    // MPICH 4.0.2 can hang in its MPI_Finalize, see above: MPICH 5's ranks)...
    run_mpi(&t, 2, "berth step /opt/berth-test/check.mpich5 200 10");
    // ... and two on one host, which share memory (PMI_process_mapping says so; they share
    // the job's one core there, so no timing means anything), beside a step without PMI,
    // whose tasks are singletons.
    let script = r#"#!/bin/sh
#SBATCH -N 2 --ntasks-per-node=1 -t 2
#BERTH --image mpi
first=$(echo "$BERTH_NODELIST" | cut -d, -f1)
berth step -w "$first" -n 2 --overcommit /opt/berth-test/check.mpich5 10 2
berth step --mpi=none -n 2 sh -c 'echo "pmi=${PMI_FD:-none}"; /opt/berth-test/check.mpich5 1 1 | head -1'
berth step -n 1 sh -c 'echo "default pmi_fd=${PMI_FD:+yes} pmi_port=${PMI_PORT:-none}"'
"#;
    let id = t.c.submit(Mode::Rootless, "shm.sh", script, &[]);
    let job = t.c.wait_for(
        id,
        &["COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED", "TIMEOUT"],
    );
    let out = output(&t, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}\n{}", t.logs());
    let first = job["nodes"][0].as_str().unwrap();
    assert!(
        out.starts_with(&format!(
            "size 2\nrank 0 host {first}\nrank 1 host {first}\nallreduce ok\n"
        )),
        "{out}"
    );
    assert_eq!(out.matches("pmi=none\n").count(), 2, "{out}");
    // A step's tasks have their connection to its PMI server, and no port anyone could use.
    assert!(out.contains("default pmi_fd=yes pmi_port=none\n"), "{out}");
    assert_eq!(out.matches("size 1\n").count(), 2, "{out}");
}

#[test]
fn mpich_5_runs_across_three_hosts_with_hydra_and_with_berths_pmi() {
    let Some(t) = mpi_cluster(13, 3) else {
        return;
    };
    // MPICH 5 (from PyPI, with its own UCX): hydra from the SLURM_* allocation through
    // berth rsh, then the same ranks started by berth step alone.
    run_mpi(
        &t,
        3,
        "/opt/berth-test/mpich5/bin/mpiexec.hydra -n 3 /opt/berth-test/check.mpich5 200 10",
    );
    run_mpi(&t, 3, "berth step /opt/berth-test/check.mpich5 200 10");
}

#[test]
fn open_mpi_ranks_start_without_mpirun_with_pmix() {
    let Some(t) = mpi_cluster(16, 3) else {
        return;
    };
    // berth step starts Open MPI's ranks itself, each node's PMIx server (the node's
    // libpmix) serving its own, their modex gathered across the nodes: one rank per host...
    let tcp = "export OMPI_MCA_btl=tcp,self,vader OMPI_MCA_btl_tcp_if_include=eth0";
    run_mpi(
        &t,
        3,
        &format!("{tcp}\nberth step --mpi=pmix /opt/berth-test/check.openmpi 200 10"),
    );
    // ... then two on the first host beside one on the second (shared memory between the
    // two: their server says they are peers), SLURM_MPI_TYPE as srun's default; two on one
    // host alone (their fences that host's own); two without a fence at their start (each
    // rank's data asked for); and a rank that aborts ends the step, on every host, with its
    // code.
    let script = format!(
        r#"#!/bin/sh
#SBATCH -N 2 --ntasks-per-node=1 -t 2
#BERTH --image mpi
{tcp}
export SLURM_MPI_TYPE=pmix
berth step -N 2 -n 3 --overcommit /opt/berth-test/check.openmpi 10 2
berth step -N 1 -n 2 --overcommit /opt/berth-test/check.openmpi 0 0
OMPI_MCA_pmix_base_async_modex=1 OMPI_MCA_pmix_base_collect_data=0 berth step -N 2 -n 2 /opt/berth-test/check.openmpi 0 0
berth step -n 2 /opt/berth-test/check.openmpi abort 7
echo "abort status $?"
"#
    );
    let id = t.c.submit(Mode::Rootless, "pmix.sh", &script, &[]);
    let runners = t.runners(id);
    let job = t.c.wait_for(
        id,
        &["COMPLETED", "FAILED", "NODE_FAIL", "CANCELLED", "TIMEOUT"],
    );
    let out = output(&t, id);
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}\n{}", t.logs());
    let (first, second) = (
        job["nodes"][0].as_str().unwrap(),
        job["nodes"][1].as_str().unwrap(),
    );
    assert!(
        out.starts_with(&format!(
            "size 3\nrank 0 host {first}\nrank 1 host {first}\nrank 2 host {second}\nallreduce ok\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "done\nsize 2\nrank 0 host {first}\nrank 1 host {first}\nallreduce ok\ndone\n"
        )),
        "{out}"
    );
    // Open MPI's asynchronous modex without collecting: no fence at its start, each rank's
    // data asked of its node's server when first needed (PMIx's direct modex, through
    // berth's PMI server; without it, MPI_Init fails here).
    assert!(
        out.contains(&format!(
            "done\nsize 2\nrank 0 host {first}\nrank 1 host {second}\nallreduce ok\ndone\n"
        )),
        "{out}"
    );
    assert!(out.contains("\nabort status 7\n"), "{out}");
    // Each node's PMIx helper is gone with its directory.
    for runner in runners {
        let prefix = format!("berth-pmix.{runner}-job{id}.");
        let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
