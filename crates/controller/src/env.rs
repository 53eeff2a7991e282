//! The environment a job sees: the submitter's (as --export says) plus what Slurm, LSF and
//! PBS scripts expect (SLURM_*, LSB_*, PBS_*) and berth's own BERTH_* equivalents.

use crate::job::Job;

/// One line per slot, as LSF's LSB_DJOB_HOSTFILE and PBS's PBS_NODEFILE list them (the node
/// agent saves it and names it in those variables).
pub fn hostfile(node: &str, slots: u64) -> String {
    (0..slots.max(1)).map(|_| format!("{node}\n")).collect()
}

pub fn job_environment(job: &Job, node: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let export = &job.request.export;
    if export.all {
        env.extend(job.submit_env.iter().cloned());
    }
    for var in &export.vars {
        let value = var.value.clone().or_else(|| {
            job.submit_env
                .iter()
                .find(|(k, _)| *k == var.name)
                .map(|(_, v)| v.clone())
        });
        if let Some(v) = value {
            env.retain(|(k, _)| *k != var.name);
            env.push((var.name.clone(), v));
        }
    }
    // A host PATH means nothing in the image: the image's PATH applies (berth-runtime).
    env.retain(|(k, _)| {
        k != "PATH" && !k.starts_with("SLURM_") && !k.starts_with("LSB_") && !k.starts_with("PBS_")
    });
    let id = job.id.to_string();
    let name = job.request.name.clone();
    let cpus = job.cpus.to_string();
    let ntasks = job.request.ntasks.to_string();
    let hosts = std::iter::repeat_n(node, job.cpus.max(1) as usize)
        .collect::<Vec<_>>()
        .join(" ");
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));
    for (prefix, value) in [
        ("SLURM_JOB_ID", &id),
        ("SLURM_JOBID", &id),
        ("LSB_JOBID", &id),
        ("PBS_JOBID", &id),
        ("BERTH_JOB_ID", &id),
    ] {
        set(prefix, value.clone());
    }
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
    set("SLURM_CPUS_PER_TASK", job.request.cpus_per_task.to_string());
    set("SLURM_JOB_NODELIST", node.to_string());
    set("SLURM_NODELIST", node.to_string());
    set("SLURM_JOB_NUM_NODES", "1".into());
    set("SLURM_NNODES", "1".into());
    set("SLURM_SUBMIT_DIR", job.workdir.clone());
    set("SLURM_JOB_PARTITION", job.partition.clone());
    set("SLURM_JOB_USER", job.user.clone());
    if !job.gpu_ids.is_empty() {
        // The host's numbers of the job's GPUs, as Slurm gives them (inside, CUDA numbers
        // them from 0: berth-runtime sets CUDA_VISIBLE_DEVICES).
        let gpus = job
            .gpu_ids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        set("SLURM_JOB_GPUS", gpus.clone());
        set("BERTH_GPUS", gpus);
    }
    set("LSB_HOSTS", hosts);
    set("LSB_MCPU_HOSTS", format!("{node} {cpus}"));
    set("LSB_DJOB_NUMPROC", cpus.clone());
    set("LSB_QUEUE", job.partition.clone());
    set("PBS_O_WORKDIR", job.workdir.clone());
    set("PBS_QUEUE", job.partition.clone());
    set("BERTH_NODELIST", node.to_string());
    set("BERTH_NTASKS", ntasks);
    set("BERTH_CPUS_ON_NODE", cpus);
    set("BERTH_SUBMIT_DIR", job.workdir.clone());
    if let (Some(master), Some(index)) = (job.array_job_id, job.array_task_id) {
        let (master, index) = (master.to_string(), index.to_string());
        for k in ["SLURM_ARRAY_JOB_ID", "BERTH_ARRAY_JOB_ID"] {
            set(k, master.clone());
        }
        for k in [
            "SLURM_ARRAY_TASK_ID",
            "LSB_JOBINDEX",
            "PBS_ARRAYID",
            "BERTH_ARRAY_TASK_ID",
        ] {
            set(k, index.clone());
        }
    }
    env
}
