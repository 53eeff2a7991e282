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
    /// Run the task on a pseudo-terminal of its own, relayed to this one: an interactive
    /// shell in the job's container (`berth step --image IMAGE --pty bash`, like srun --pty)
    #[arg(long)]
    pty: bool,
    /// Outside a job: the image of the new allocation's container
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// Outside a job: memory per node of the new allocation
    #[arg(long, value_name = "SIZE")]
    mem: Option<String>,
    /// Outside a job: the new allocation's time limit
    #[arg(short = 't', long, value_name = "TIME")]
    time: Option<String>,
    /// Outside a job: the new allocation's partition
    #[arg(short, long, value_name = "PARTITION")]
    partition: Option<String>,
    /// Outside a job: the new allocation's name [default: the command's]
    #[arg(short = 'J', long, value_name = "NAME")]
    job_name: Option<String>,
    /// Outside a job: bind a host path into the new allocation's container
    #[arg(long, value_name = "SRC[:DST[:ro]]")]
    bind: Vec<String>,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The job this step belongs to: --job, or the job the caller runs in; `None`: outside any
/// job, where the step gets an allocation of its own.
fn job_id(args: &StepArgs) -> Result<Option<u64>> {
    if let Some(id) = args.job {
        return Ok(Some(id));
    }
    for var in ["BERTH_JOB_ID", "SLURM_JOB_ID"] {
        if let Some(v) = std::env::var_os(var) {
            let v = v.to_string_lossy();
            return v
                .parse()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("${var} is '{v}', not a job id: pass --job JOB"));
        }
    }
    Ok(None)
}

/// The submit flags of a new allocation, as `berth submit` takes them.
fn allocation_flags(args: &StepArgs) -> Vec<String> {
    let mut flags = Vec::new();
    let mut add = |flag: &str, value: Option<String>| {
        if let Some(v) = value {
            flags.push(format!("{flag}={v}"));
        }
    };
    add("--ntasks", args.ntasks.map(|n| n.to_string()));
    add("--nodes", args.nodes.map(|n| n.to_string()));
    add("--cpus-per-task", args.cpus_per_task.map(|n| n.to_string()));
    add("--image", args.image.clone());
    add("--mem", args.mem.clone());
    add("--time", args.time.clone());
    add("--partition", args.partition.clone());
    add("--job-name", args.job_name.clone());
    for b in &args.bind {
        add("--bind", Some(b.clone()));
    }
    // Its output is the step's, on this terminal: the allocation's own script prints nothing.
    add("--output", Some("/dev/null".into()));
    flags
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
    if args.pty && args.label {
        bail!("--pty and --label do not go together: a terminal's output has no lines to label");
    }
    let mut args = args;
    if args.pty && args.ntasks.is_none() {
        // One interactive task unless asked otherwise (srun --pty gives task 0 the terminal).
        args.ntasks = Some(1);
    }
    let job = job_id(&args)?;
    let allocate = match job {
        None => Some(allocation_flags(&args)),
        Some(id) => {
            let given = [
                ("--image", args.image.is_some()),
                ("--mem", args.mem.is_some()),
                ("--time", args.time.is_some()),
                ("--partition", args.partition.is_some()),
                ("--job-name", args.job_name.is_some()),
                ("--bind", !args.bind.is_empty()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                bail!("{flag} is for a new allocation: this step runs in job {id}, with its image, binds and limits");
            }
            None
        }
    };
    let request = StepRequest {
        job,
        allocate,
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
        pty: args.pty,
    };
    let socket = std::env::var_os("BERTH_STEP_SOCKET").map_or_else(
        || berth_api::step_socket(&crate::client::socket()),
        std::path::PathBuf::from,
    );
    Ok(berth_agent::step::client::run(&socket, &request)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: StepArgs,
    }

    fn parse(words: &[&str]) -> StepArgs {
        Cmd::try_parse_from(std::iter::once("step").chain(words.iter().copied()))
            .unwrap_or_else(|e| panic!("{words:?}: {e}"))
            .args
    }

    #[test]
    fn flags_as_srun_takes_them_then_the_command() {
        for words in [
            &["--job", "4", "-n1", "true"][..],
            &["-n", "1", "--job=4", "true"],
            &["--ntasks=1", "--jobid", "4", "true"],
        ] {
            let a = parse(words);
            assert_eq!((a.job, a.ntasks), (Some(4), Some(1)), "{words:?}");
            assert_eq!(a.command, ["true"], "{words:?}");
        }
        let a = parse(&["-K=0", "-l", "sh", "-c", "echo -n x"]);
        assert_eq!(a.kill_on_bad_exit, Some(0));
        assert!(a.label);
        assert_eq!(a.command, ["sh", "-c", "echo -n x"]);
        // The command's own flags stay the command's.
        let a = parse(&["-n", "2", "ls", "-l", "-n"]);
        assert_eq!(a.command, ["ls", "-l", "-n"]);
        assert!(!a.label);
        assert_eq!(parse(&["-K", "true"]).kill_on_bad_exit, Some(1));
    }
}
