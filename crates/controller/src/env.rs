//! The environment a job sees: the submitter's (as --export says) plus what Slurm, LSF and
//! PBS scripts expect (SLURM_*, LSB_*, PBS_*) and berth's own BERTH_* equivalents.

use crate::job::Job;

/// One line per slot (task) on each node, as LSF's LSB_DJOB_HOSTFILE and PBS's PBS_NODEFILE
/// list them and `mpirun --hostfile` reads them (the node agent saves it and names it in those
/// variables).
pub fn hostfile(job: &Job) -> String {
    slots(job).map(|n| format!("{n}\n")).collect()
}

/// The job's task slots, a node name each, node by node.
fn slots(job: &Job) -> impl Iterator<Item = &str> + '_ {
    job.shares
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.node.as_str(), s.tasks.max(1) as usize))
}

/// What the command of a held allocation (`berth alloc`, salloc) gets on top of its own
/// environment: the job's variables as its batch host's script has them, but for those of
/// one node (the command runs on the host it was typed on).
pub fn allocation_environment(job: &Job, cluster: &str) -> Vec<(String, String)> {
    const OF_A_NODE: &[&str] = &[
        "SLURM_NODEID",
        "SLURMD_NODENAME",
        "SLURM_CPUS_ON_NODE",
        "SLURM_GPUS_ON_NODE",
        "PBS_NUM_PPN",
        "NCPUS",
        "BERTH_NODE",
        "BERTH_CPUS_ON_NODE",
    ];
    let mut env = job_environment(job, 0, cluster);
    env.retain(|(k, _)| {
        ["SLURM_", "LSB_", "PBS_", "BERTH_"]
            .iter()
            .any(|p| k.starts_with(p))
            && !OF_A_NODE.contains(&k.as_str())
    });
    env
}

/// The environment of the job's container on its `index`th node (0: the batch host), in
/// cluster `cluster`.
pub fn job_environment(job: &Job, index: usize, cluster: &str) -> Vec<(String, String)> {
    let mut env = job.request.export.select(&job.submit_env, |_| false);
    // --export-file's variables, whatever --export says.
    for (name, value) in &job.request.export_file_env {
        env.retain(|(k, _)| k != name);
        env.push((name.clone(), value.clone()));
    }
    // PBS Pro's OMP_NUM_THREADS, unless the job's environment has its own (-v, -V).
    if let Some(n) = job.request.omp_threads {
        if !env.iter().any(|(k, _)| k == "OMP_NUM_THREADS") {
            env.push(("OMP_NUM_THREADS".into(), n.to_string()));
        }
    }
    // A host PATH means nothing in the image: the image's PATH applies (berth-runtime),
    // unless the job asked for the submission's (pyxis's --container-env=PATH), or runs on
    // the host, without an image (where it means what it meant to the submitter).
    let host_path = job.image.is_none() || job.request.host_env.iter().any(|n| n == "PATH");
    env.retain(|(k, _)| {
        (k != "PATH" || host_path)
            && !k.starts_with("SLURM_")
            && !k.starts_with("LSB_")
            && !k.starts_with("PBS_")
    });
    let id = job.id.to_string();
    let name = job.request.name.clone();
    let share = &job.shares[index];
    let node = share.node.as_str();
    let cpus = share.cpu_ids.len().max(1).to_string();
    let ntasks = job.request.ntasks.to_string();
    let nodes: Vec<&str> = job.nodes().collect();
    let nodelist = nodes.join(",");
    let nnodes = nodes.len().to_string();
    // One entry per slot, as LSF lists them.
    let hosts = slots(job).collect::<Vec<_>>().join(" ");
    let mcpu_hosts = job
        .shares
        .iter()
        .map(|s| format!("{} {}", s.node, s.tasks.max(1)))
        .collect::<Vec<_>>()
        .join(" ");
    let tasks_per_node =
        berth_core::job::per_node(job.shares.iter().map(|s| u64::from(s.tasks.max(1))));
    let cpus_per_node =
        berth_core::job::per_node(job.shares.iter().map(|s| s.cpu_ids.len().max(1) as u64));
    let nslots = slots(job).count();
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));
    // LSF numbers an array's elements by the array's id (and LSB_JOBINDEX); PBS names a
    // job `ID.SERVER`, a subjob `ID[INDEX].SERVER`, as qsub printed it.
    let server = berth_agent::node::hostname();
    let (lsf_id, pbs_id) = match (job.array_job_id, job.array_task_id) {
        (Some(master), Some(index)) => (master.to_string(), format!("{master}[{index}].{server}")),
        _ => (id.clone(), format!("{id}.{server}")),
    };
    for (prefix, value) in [
        ("SLURM_JOB_ID", &id),
        ("SLURM_JOBID", &id),
        ("LSB_JOBID", &lsf_id),
        ("PBS_JOBID", &pbs_id),
        ("BERTH_JOB_ID", &id),
    ] {
        set(prefix, value.clone());
    }
    // LSF's batch job id: an array's element's `ID[INDEX]`.
    set(
        "LSB_BATCH_JID",
        match (job.array_job_id, job.array_task_id) {
            (Some(master), Some(index)) => format!("{master}[{index}]"),
            _ => id.clone(),
        },
    );
    if job.array_job_id.is_none() {
        set("LSB_JOBINDEX", "0".into());
    }
    // (qsub -I's: an interactive job.)
    let environment = match job.allocation {
        true => "PBS_INTERACTIVE",
        false => "PBS_BATCH",
    };
    set("PBS_ENVIRONMENT", environment.into());
    for k in [
        "SLURM_JOB_NAME",
        "LSB_JOBNAME",
        "PBS_JOBNAME",
        "BERTH_JOB_NAME",
    ] {
        set(k, name.clone());
    }
    set("SLURM_NTASKS", ntasks.clone());
    set("SLURM_NPROCS", ntasks.clone());
    set("SLURM_CPUS_ON_NODE", cpus.clone());
    set("SLURM_JOB_CPUS_PER_NODE", cpus_per_node);
    set("SLURM_TASKS_PER_NODE", tasks_per_node);
    set("SLURM_NODEID", index.to_string());
    if index == 0 {
        // The batch script is the batch step's one task, as Slurm numbers it.
        set("SLURM_PROCID", "0".into());
        set("SLURM_LOCALID", "0".into());
        set("SLURM_GTIDS", "0".into());
    }
    set("SLURMD_NODENAME", node.to_string());
    // Where CPUs per task were asked for (sbatch sets it only with -c, `-c 1` too; one is
    // what a script takes it to be without).
    if job.request.cpus_per_task > 1 || job.request.cpus_per_task_given {
        set("SLURM_CPUS_PER_TASK", job.request.cpus_per_task.to_string());
    }
    if job.request.overcommit {
        set("SLURM_OVERCOMMIT", "1".to_string());
    }
    // Slurm's form (n[1-3]) for what reads it as Slurm writes it; berth's own, comma-separated.
    let hostlist = berth_core::job::hostlist(&nodes);
    set("SLURM_JOB_NODELIST", hostlist.clone());
    set("SLURM_NODELIST", hostlist);
    set("SLURM_JOB_NUM_NODES", nnodes.clone());
    set("SLURM_NNODES", nnodes.clone());
    // Where it was submitted from (--chdir moves only where it runs).
    let submit_dir = job
        .submit_dir
        .clone()
        .unwrap_or_else(|| job.workdir.clone());
    set("SLURM_SUBMIT_DIR", submit_dir.clone());
    if let Some(mask) = job.umask {
        set("SLURM_UMASK", format!("{mask:04o}"));
    }
    set("SLURM_JOB_PARTITION", job.partition.clone());
    if let Some(licenses) = job.request.licenses_text() {
        set("SLURM_JOB_LICENSES", licenses);
    }
    set("SLURM_CLUSTER_NAME", cluster.to_string());
    // berth's one quality of service, as Slurm names its default.
    set("SLURM_JOB_QOS", "normal".into());
    // As sbatch passes them on, where the submission gave them.
    let export = &job.request.export;
    if *export != berth_core::job::Export::default() {
        set("SLURM_EXPORT_ENV", export.slurm_form());
    }
    if job.request.open_mode == berth_core::job::OpenMode::Append {
        set("SLURM_OPEN_MODE", "a".into());
    }
    set("SLURM_JOB_USER", job.user.clone());
    set("SLURM_JOB_UID", job.uid.to_string());
    if let Some(account) = &job.request.account {
        set("SLURM_JOB_ACCOUNT", account.clone());
    }
    if let Some(t) = job.request.ntasks_per_node {
        set("SLURM_NTASKS_PER_NODE", t.to_string());
    }
    // In MB, as sbatch sets them: per CPU when that is how it was asked, else per node.
    match (job.request.memory, job.memory) {
        (Some(berth_core::job::Memory::PerCpu(b)), _) => {
            set("SLURM_MEM_PER_CPU", (b >> 20).to_string())
        }
        (Some(berth_core::job::Memory::PerGpu(b)), _) => {
            set("SLURM_MEM_PER_GPU", (b >> 20).to_string())
        }
        // (As asked for: not the node's whole memory an --exclusive job has.)
        (Some(_), Some(b)) => set("SLURM_MEM_PER_NODE", (b >> 20).to_string()),
        _ => {}
    }
    if let Some(start) = job.start_time {
        // Scripts that save their state before the limit read these (Slurm 23.02+).
        set("SLURM_JOB_START_TIME", start.to_string());
        if let Some(limit) = job.time_limit() {
            set("SLURM_JOB_END_TIME", (start + limit).to_string());
        }
    }
    if job.restarts > 0 {
        set("SLURM_RESTART_COUNT", job.restarts.to_string());
    }
    set("SLURM_GPUS_ON_NODE", share.gpu_ids.len().to_string());
    if !share.gpu_ids.is_empty() {
        // The host's numbers of the job's GPUs, as Slurm gives them (inside, CUDA numbers
        // them from 0: berth-runtime sets CUDA_VISIBLE_DEVICES).
        let gpus = share
            .gpu_ids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        set("SLURM_JOB_GPUS", gpus.clone());
        set("BERTH_GPUS", gpus);
    }
    set("LSB_HOSTS", hosts);
    set("LSB_MCPU_HOSTS", mcpu_hosts);
    set("LSB_DJOB_NUMPROC", nslots.to_string());
    set("LSB_QUEUE", job.partition.clone());
    set("PBS_O_WORKDIR", submit_dir.clone());
    set("LS_SUBCWD", submit_dir.clone());
    // LSF's names of the job's output files (the batch host's, as bsub -o/-e gave them).
    set("LSB_OUTPUTFILE", job.stdout.clone());
    if let Some(stderr) = &job.stderr {
        set("LSB_ERRORFILE", stderr.clone());
    }
    if let Some(account) = &job.request.account {
        set("PBS_ACCOUNT", account.clone());
    }
    if !job.submit_host.is_empty() {
        for k in ["SLURM_SUBMIT_HOST", "PBS_O_HOST", "LSB_SUB_HOST"] {
            set(k, job.submit_host.clone());
        }
    }
    set("PBS_QUEUE", job.partition.clone());
    set("PBS_O_QUEUE", job.partition.clone());
    set("PBS_SERVER", server.clone());
    // Torque's: the job's time limit, seconds.
    if let Some(limit) = job.time_limit() {
        set("PBS_WALLTIME", limit.to_string());
    }
    // The submitter's, as qsub passes them.
    for (k, from) in [
        ("PBS_O_HOME", "HOME"),
        ("PBS_O_PATH", "PATH"),
        ("PBS_O_SHELL", "SHELL"),
        ("PBS_O_LOGNAME", "LOGNAME"),
        ("PBS_O_LANG", "LANG"),
        ("PBS_O_MAIL", "MAIL"),
        ("PBS_O_TZ", "TZ"),
    ] {
        if let Some((_, v)) = job.submit_env.iter().find(|(name, _)| name == from) {
            set(k, v.clone());
        }
    }
    // Torque's: the node's index, and the batch script as the job's first task.
    set("PBS_NODENUM", index.to_string());
    if index == 0 {
        set("PBS_TASKNUM", "1".into());
        set("PBS_VNODENUM", "0".into());
    }
    if let Some(dir) = &job.request.workdir {
        set("PBS_O_INITDIR", dir.clone());
    }
    set("PBS_NUM_NODES", nnodes.clone());
    set("PBS_NP", nslots.to_string());
    set("PBS_NUM_PPN", share.tasks.max(1).to_string());
    // PBS Pro's: the CPUs on this node.
    set("NCPUS", cpus.clone());
    set("LSB_MAX_NUM_PROCESSORS", nslots.to_string());
    set("BERTH_NODELIST", nodelist);
    set("BERTH_NNODES", nnodes);
    set("BERTH_NODE", node.to_string());
    set("BERTH_NTASKS", ntasks);
    set("BERTH_CPUS_ON_NODE", cpus);
    set("BERTH_SUBMIT_DIR", submit_dir);
    // The image jobs submitted from this one run in when they name none.
    if let Some(image) = &job.image {
        set("BERTH_IMAGE", image.clone());
    }
    if let (Some(master), Some(index)) = (job.array_job_id, job.array_task_id) {
        let (master, index) = (master.to_string(), index.to_string());
        for k in ["SLURM_ARRAY_JOB_ID", "BERTH_ARRAY_JOB_ID"] {
            set(k, master.clone());
        }
        if let Some(array) = &job.request.array {
            let shape = array.shape();
            set("SLURM_ARRAY_TASK_COUNT", shape.count.to_string());
            if let (Some(min), Some(max)) = (shape.min, shape.max) {
                set("SLURM_ARRAY_TASK_MIN", min.to_string());
                set("SLURM_ARRAY_TASK_MAX", max.to_string());
            }
            // Its indices' step, where they have one (1-9:2), as sbatch sets it.
            if let Some(step) = shape.step {
                set("SLURM_ARRAY_TASK_STEP", step.to_string());
            }
            // LSF's: the array's last index, and its step.
            if let Some(max) = shape.max {
                set("LSB_JOBINDEX_END", max.to_string());
            }
            set("LSB_JOBINDEX_STEP", array.step().to_string());
        }
        for k in [
            "SLURM_ARRAY_TASK_ID",
            "LSB_JOBINDEX",
            // Torque's, and PBS Pro's (with its array's id).
            "PBS_ARRAYID",
            "PBS_ARRAY_INDEX",
            "BERTH_ARRAY_TASK_ID",
        ] {
            set(k, index.clone());
        }
        set("PBS_ARRAY_ID", format!("{master}[].{server}"));
    }
    env
}
