//! `berth step` (also `berth srun`): run tasks of a command in a running job's container,
//! as srun does inside an allocation.

use anyhow::{bail, Result};
use berth_api::StepRequest;
use clap::Args;

#[derive(Args)]
pub struct StepArgs {
    /// Number of tasks [default: the job's, SLURM_NTASKS]
    #[arg(short = 'n', long, value_name = "N")]
    ntasks: Option<u32>,
    /// Nodes to run on (a job on one node: 1)
    #[arg(short = 'N', long, value_name = "N")]
    nodes: Option<u32>,
    /// CPUs per task [default: the job's]
    #[arg(short = 'c', long, value_name = "N")]
    cpus_per_task: Option<u32>,
    /// The job to run in [default: $BERTH_JOB_ID, else $SLURM_JOB_ID, inside a job]
    #[arg(long, visible_alias = "jobid", value_name = "JOB")]
    job: Option<u64>,
    /// Prefix each line of output with the task's rank
    #[arg(short, long)]
    label: bool,
    /// Kill the other tasks as soon as one exits non-zero (1, the default) or not (0)
    #[arg(short = 'K', long, value_name = "0|1", num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    kill_on_bad_exit: Option<u8>,
    /// Pin each task to its own share of the job's CPUs (cores, the default) or not (none)
    #[arg(long, value_name = "cores|none")]
    cpu_bind: Option<String>,
    /// Allow more tasks than the job has CPUs for
    #[arg(short = 'O', long)]
    overcommit: bool,
    /// The command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

/// The job this step belongs to: --job, or the job the caller runs in.
fn job_id(args: &StepArgs) -> Result<u64> {
    if let Some(id) = args.job {
        return Ok(id);
    }
    for var in ["BERTH_JOB_ID", "SLURM_JOB_ID"] {
        if let Some(v) = std::env::var_os(var) {
            let v = v.to_string_lossy();
            return v
                .parse()
                .map_err(|_| anyhow::anyhow!("${var} is '{v}', not a job id: pass --job JOB"));
        }
    }
    bail!("berth step runs inside a job (its script, or `--job JOB`); getting a new allocation for it is not built yet: submit a job with `berth submit`")
}

pub fn step(args: StepArgs) -> Result<i32> {
    if args.nodes.is_some_and(|n| n != 1) {
        bail!("-N: jobs run on one node here, so steps do too (multi-node steps come with berth's cluster mode)");
    }
    let cpu_bind = match args.cpu_bind.as_deref() {
        None | Some("cores") => true,
        Some("none") => false,
        Some(other) => bail!("--cpu-bind={other}: expected cores or none"),
    };
    let kill_on_bad_exit = match args.kill_on_bad_exit {
        None | Some(1) => true,
        Some(0) => false,
        Some(n) => bail!("--kill-on-bad-exit={n}: expected 0 or 1"),
    };
    if args.ntasks == Some(0) || args.cpus_per_task == Some(0) {
        bail!("-n and -c take at least 1");
    }
    let request = StepRequest {
        job: job_id(&args)?,
        ntasks: args.ntasks,
        cpus_per_task: args.cpus_per_task,
        argv: args.command,
        env: std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect(),
        cwd: std::env::current_dir()?.to_string_lossy().into_owned(),
        label: args.label,
        kill_on_bad_exit,
        cpu_bind,
        overcommit: args.overcommit,
    };
    let socket = std::env::var_os("BERTH_STEP_SOCKET").map_or_else(
        || berth_api::step_socket(&crate::client::socket()),
        std::path::PathBuf::from,
    );
    Ok(berth_agent::step::client::run(&socket, &request)?)
}
