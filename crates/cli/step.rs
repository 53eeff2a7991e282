//! `berth step` (also `berth srun`): run tasks of a command in a running job's container,
//! as srun does inside an allocation.

use anyhow::{bail, Result};
use berth_api::{OptionSyntax, StepEvent, StepRequest, TaskFiles};
use clap::Args;

#[derive(Args, Debug)]
pub struct StepArgs {
    /// Number of tasks [default: the job's, SLURM_NTASKS]
    #[arg(short = 'n', long, value_name = "N")]
    ntasks: Option<u32>,
    /// How many of the job's nodes the tasks spread over [default: as many as there are
    /// tasks, up to all]
    #[arg(short = 'N', long, value_name = "N")]
    nodes: Option<u32>,
    /// These of the job's nodes (comma-separated), the tasks spread over them in order
    /// (with -N more: the job's others after them)
    #[arg(short = 'w', long, value_name = "NODE,...", value_delimiter = ',')]
    nodelist: Vec<String>,
    /// None of these nodes (comma-separated): of the job's, inside one; outside, the
    /// allocation's
    #[arg(short = 'x', long, value_name = "NODE,...", value_delimiter = ',')]
    exclude: Vec<String>,
    /// CPUs per task [default: the job's]
    #[arg(short = 'c', long, value_name = "N")]
    cpus_per_task: Option<u32>,
    /// At most N tasks on each node: -n tasks over ceil(n/N) nodes, or N on each of -N nodes
    /// (of the job's, inside one)
    #[arg(long, value_name = "N")]
    ntasks_per_node: Option<u32>,
    /// The tasks' environment: ALL (the default), NONE (only the job's SLURM_* and BERTH_*),
    /// or [ALL,]VAR[=VALUE],... as srun takes it
    #[arg(long, value_name = "ALL|NONE|VARS")]
    export: Option<String>,
    /// The tasks' working directory [default: this one]
    #[arg(short = 'D', long, value_name = "DIR")]
    chdir: Option<std::path::PathBuf>,
    /// The tasks' standard output into FILE: the job's patterns (%j, %A, %a, %x, %u) make
    /// one file for all; a task's (%t rank, %n node index, %s step, %N node) one per task;
    /// none: nowhere
    #[arg(short = 'o', long, value_name = "FILE|none")]
    output: Option<String>,
    /// The tasks' standard error into FILE (the same patterns; none: nowhere) [default: with
    /// the output]
    #[arg(short = 'e', long, value_name = "FILE|none")]
    error: Option<String>,
    /// The tasks' standard input: all (the default: each task gets all of this command's
    /// input), none, N (task N alone reads it), or FILE (the same patterns)
    #[arg(short = 'i', long, value_name = "all|none|N|FILE")]
    input: Option<String>,
    /// Whether --output and --error files are appended to or truncated (the default)
    #[arg(long, value_name = "append|truncate")]
    open_mode: Option<String>,
    /// Accepted as srun takes it: berth hands the tasks this command's own descriptors, so
    /// their output is never held back by berth
    #[arg(short = 'u', long)]
    unbuffered: bool,
    /// Share CPUs with the job's other steps: start at once, even when they hold all the
    /// job's CPUs (without it, a step waits for CPUs of its own, as Slurm's do) [default:
    /// set if $SLURM_OVERLAP is]
    #[arg(long)]
    overlap: bool,
    /// Accepted as srun takes it: a step gets the CPUs it asks for anyway (not all the
    /// job's), so that as many steps run at once as the job has CPUs for
    #[arg(long)]
    exact: bool,
    /// The job to run in [default: $BERTH_JOB_ID, else $SLURM_JOB_ID, inside a job]
    #[arg(long, visible_alias = "jobid", value_name = "JOB")]
    job: Option<u64>,
    /// Prefix each line of output with the task's rank
    #[arg(short, long)]
    label: bool,
    /// Kill the other tasks as soon as one exits non-zero (1) or not (0, the default, as
    /// Slurm's: the step's status is its worst task's) [default: $SLURM_KILL_BAD_EXIT]
    #[arg(short = 'K', long, value_name = "0|1", num_args = 0..=1, require_equals = true, default_missing_value = "1")]
    kill_on_bad_exit: Option<u8>,
    /// Pin each task to its own share of the job's CPUs (cores, the default; threads, rank,
    /// sockets and ldoms do the same here) or not (none); srun's verbose, prefix is accepted
    #[arg(long, value_name = "cores|none", alias = "cpu_bind")]
    cpu_bind: Option<String>,
    /// Allow more tasks than the job has CPUs for
    #[arg(short = 'O', long)]
    overcommit: bool,
    /// Serve the tasks PMI-1 and PMI-2 (pmi1, the default, or pmi2), or PMIx (pmix: Open
    /// MPI's), so that MPI programs start without mpiexec; or none; `list` lists them
    /// [default: $SLURM_MPI_TYPE, else pmi1]
    #[arg(long, value_name = "pmi1|pmi2|pmix|none|list")]
    mpi: Option<String>,
    /// Run the task on a pseudo-terminal of its own, relayed to this one: an interactive
    /// shell in the job's container (`berth step --image IMAGE --pty bash`, like srun --pty)
    #[arg(long)]
    pty: bool,
    /// GPUs of its own for each task, out of the job's on its node (CUDA_VISIBLE_DEVICES)
    #[arg(long, value_name = "N")]
    gpus_per_task: Option<u32>,
    /// The image (Shifter's docker:NAME too): outside a job the new allocation's; in one,
    /// the step's own containers' (one on each of its nodes, in the job's allocation),
    /// unless it is the job's
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// Memory per node: in a job, the step's own out of the job's (its tasks are held to
    /// it; the job's other steps wait for what it holds; 0: all of the job's, shared, as
    /// without it); outside one, the new allocation's. Megabytes, or K, M, G, T
    #[arg(long, value_name = "SIZE")]
    mem: Option<String>,
    /// Memory per CPU: in a job, the step's own, as --mem per CPU of the step on each node
    #[arg(long, value_name = "SIZE", conflicts_with = "mem")]
    mem_per_cpu: Option<String>,
    /// The step's time limit, in a job (its tasks are ended then, the job going on);
    /// outside one, the new allocation's
    #[arg(short = 't', long, value_name = "TIME")]
    time: Option<String>,
    /// Outside a job: the new allocation's partition
    #[arg(short, long, value_name = "PARTITION")]
    partition: Option<String>,
    /// Outside a job: the cluster's licenses the new allocation holds while it runs
    #[arg(short = 'L', long, value_name = "NAME[:N],...")]
    licenses: Option<String>,
    /// Outside a job: the new allocation's name [default: the command's]
    #[arg(short = 'J', long, value_name = "NAME")]
    job_name: Option<String>,
    /// Bind a host path into the new allocation's container, or (in a job) the step's own
    #[arg(long, value_name = "SRC[:DST[:ro]]")]
    bind: Vec<String>,
    /// COMMAND is a file giving each task its own program (srun's MPMD configuration): lines
    /// `RANKS PROGRAM ARGS...`, RANKS as 0,2-3 or * (the rest), %t the rank, %o its offset
    #[arg(long)]
    multi_prog: bool,
    /// srun's: a first SIGINT (Ctrl-C) ends the step's tasks at once, instead of saying how
    /// they are (a second within a second passes it on)
    #[arg(short = 'q', long)]
    quit_on_interrupt: bool,
    #[command(flatten)]
    pyxis: PyxisArgs,
    #[command(flatten)]
    accepted: SrunAccepted,
    /// The command and its arguments (none with --mpi=list)
    #[arg(
        required_unless_present = "mpi",
        trailing_var_arg = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

/// srun's options that scripts pass and berth has no use for, accepted (with a warning) so
/// that their lines run: placement and binding hints berth's own pinning decides, memory
/// binding, accounting and verbosity. (A comment, not a doc comment: clap would take it for
/// the group's help.)
#[derive(Args, Debug, Default)]
struct SrunAccepted {
    // What berth's steps get anyway (CPUs of their own, while the job has them free), so
    // not warned of.
    #[arg(long, hide = true)]
    #[allow(dead_code)]
    exclusive: bool,
    #[arg(short = 'Q', long, hide = true)]
    quiet: bool,
    #[arg(short = 'v', long, hide = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[arg(long, hide = true)]
    hint: Option<String>,
    #[arg(short = 'm', long, hide = true)]
    distribution: Option<String>,
    #[arg(long, hide = true)]
    ntasks_per_core: Option<String>,
    #[arg(long, hide = true)]
    threads_per_core: Option<String>,
    #[arg(long, hide = true)]
    mem_bind: Option<String>,
    #[arg(long, hide = true)]
    gres: Option<String>,
    #[arg(short = 'W', long, hide = true)]
    wait: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "ALL")]
    propagate: Option<String>,
    #[arg(long, hide = true)]
    acctg_freq: Option<String>,
    #[arg(long, hide = true)]
    network: Option<String>,
    #[arg(short = 'r', long, hide = true)]
    relative: Option<String>,
}

impl SrunAccepted {
    /// The options given, as typed, for the warning.
    fn given(&self) -> Vec<&'static str> {
        [
            ("--hint", self.hint.is_some()),
            ("--distribution", self.distribution.is_some()),
            ("--ntasks-per-core", self.ntasks_per_core.is_some()),
            ("--threads-per-core", self.threads_per_core.is_some()),
            ("--mem-bind", self.mem_bind.is_some()),
            ("--gres", self.gres.is_some()),
            ("--propagate", self.propagate.is_some()),
            ("--acctg-freq", self.acctg_freq.is_some()),
            ("--network", self.network.is_some()),
            ("--relative", self.relative.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

// enroot+pyxis's options of srun, so that its users' command lines run as they are: outside
// a job they are the new allocation's (as sbatch's); inside one, an image other than the
// job's runs the step in containers of its own, as pyxis runs each step. (A comment, not a
// doc comment: clap would take that as `berth step`'s description.)
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "enroot/pyxis options")]
struct PyxisArgs {
    /// The image ([docker://]REGISTRY#IMAGE[:TAG] as enroot writes it, or berth's name):
    /// outside a job the new allocation's; in one, the step's own containers' (one on each
    /// of its nodes, in the job's allocation), unless it is the job's
    #[arg(long, value_name = "IMAGE")]
    container_image: Option<String>,
    /// Binds SRC[:DST[:FLAGS]],... (FLAGS: ro, rw, ...) into the new allocation's container,
    /// or (in a job) the step's own
    #[arg(long, value_name = "SRC:DST[:FLAGS],...")]
    container_mounts: Vec<String>,
    /// The tasks' working directory in the image
    #[arg(long, value_name = "DIR")]
    container_workdir: Option<String>,
    /// Outside a job: variables whose values here win over the image's, PATH included
    #[arg(long, value_name = "NAME,...")]
    container_env: Option<String>,
    /// A container of the job that keeps its files from one step to the next on each node
    /// (created of --container-image, then joined while it runs, or started again), or
    /// the job's own by its name; FLAG: auto, create, exec (join it), no_exec
    #[arg(long, value_name = "NAME[:FLAG]")]
    container_name: Option<String>,
    /// Outside a job: bind the user's home (the default)
    #[arg(long)]
    container_mount_home: bool,
    /// Outside a job: leave the user's home out of the new allocation's container
    #[arg(long)]
    no_container_mount_home: bool,
    /// Accepted: a job's root is writable (a layer of its own over the image)
    #[arg(long)]
    container_writable: bool,
    /// Accepted: the image itself never changes
    #[arg(long)]
    container_readonly: bool,
    /// Accepted: berth runs no entrypoint
    #[arg(long)]
    no_container_entrypoint: bool,
    /// Accepted: tasks run as their user
    #[arg(long)]
    no_container_remap_root: bool,
    /// Run the command through the image's ENTRYPOINT, in the step's own container
    #[arg(long)]
    container_entrypoint: bool,
    /// The tasks are root inside the step's own container and the user outside: they may
    /// change the image's files (installing packages), nothing else
    #[arg(long)]
    container_remap_root: bool,
    /// Save the step's own container (its image and what the tasks changed in it) to this
    /// squashfs file once the tasks end, on each of its nodes
    #[arg(long, value_name = "PATH")]
    container_save: Option<String>,
}

impl PyxisArgs {
    /// pyxis's variables for what the command line does not say (`PYXIS_CONTAINER_IMAGE`,
    /// `_MOUNTS`, `_WORKDIR`, `_NAME`, `_SAVE`, `_ENV`, and the yes/no ones `_MOUNT_HOME`,
    /// `_REMAP_ROOT`, `_ENTRYPOINT`, `_WRITABLE`, `_READONLY`), as pyxis reads them: a script
    /// that exports PYXIS_CONTAINER_IMAGE runs every srun in that image. `var` looks one up.
    fn defaults_from(mut self, var: impl Fn(&str) -> Option<String>) -> Result<PyxisArgs> {
        let get = |name: &str| var(&format!("PYXIS_CONTAINER_{name}")).filter(|v| !v.is_empty());
        let yes_no = |name: &str| -> Result<Option<bool>> {
            get(name)
                .map(|v| match v.to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "y" => Ok(true),
                    "0" | "false" | "no" | "n" => Ok(false),
                    _ => bail!("PYXIS_CONTAINER_{name}={v}: expected yes or no (1, true, yes, y; 0, false, no, n)"),
                })
                .transpose()
        };
        for (field, name) in [
            (&mut self.container_image, "IMAGE"),
            (&mut self.container_workdir, "WORKDIR"),
            (&mut self.container_name, "NAME"),
            (&mut self.container_save, "SAVE"),
            (&mut self.container_env, "ENV"),
        ] {
            if field.is_none() {
                *field = get(name);
            }
        }
        if self.container_mounts.is_empty() {
            self.container_mounts.extend(get("MOUNTS"));
        }
        let pairs = [
            (
                "MOUNT_HOME",
                [
                    &mut self.container_mount_home,
                    &mut self.no_container_mount_home,
                ],
            ),
            (
                "REMAP_ROOT",
                [
                    &mut self.container_remap_root,
                    &mut self.no_container_remap_root,
                ],
            ),
            (
                "ENTRYPOINT",
                [
                    &mut self.container_entrypoint,
                    &mut self.no_container_entrypoint,
                ],
            ),
            (
                "WRITABLE",
                [&mut self.container_writable, &mut self.container_readonly],
            ),
        ];
        for (name, [yes, no]) in pairs {
            if !*yes && !*no {
                match yes_no(name)? {
                    Some(true) => *yes = true,
                    Some(false) => *no = true,
                    None => {}
                }
            }
        }
        // READONLY says the other way round what WRITABLE says.
        if !self.container_writable && !self.container_readonly {
            self.container_readonly = yes_no("READONLY")? == Some(true);
        }
        Ok(self)
    }

    /// The options as sbatch's, for a new allocation (the controller reads them).
    fn allocation_flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = [
            ("--container-image", &self.container_image),
            ("--container-workdir", &self.container_workdir),
            ("--container-env", &self.container_env),
            ("--container-name", &self.container_name),
        ]
        .into_iter()
        .filter_map(|(flag, v)| v.as_ref().map(|v| format!("{flag}={v}")))
        .collect();
        flags.extend(
            self.container_mounts
                .iter()
                .map(|m| format!("--container-mounts={m}")),
        );
        for (flag, set) in [
            ("--container-mount-home", self.container_mount_home),
            ("--no-container-mount-home", self.no_container_mount_home),
            ("--container-readonly", self.container_readonly),
        ] {
            if set {
                flags.push(flag.to_string());
            }
        }
        flags
    }

    /// Inside job `id` (whose image is $BERTH_IMAGE): the image the step's own containers
    /// run (`--container-image`, `--image`), if not the job's, and what else they get
    /// (`--container-mounts`, `--bind`, `--container-env`, `--no-container-mount-home`);
    /// those are refused for a step in the job's container, which has the job's.
    fn in_job(&self, id: u64, image: Option<&str>, binds: &[String]) -> Result<OwnImage> {
        use berth_image::Reference;
        let wanted = match (&self.container_image, image) {
            (Some(pyxis), _) => {
                Some(berth_core::job::pyxis_image(pyxis).map_err(|e| anyhow::anyhow!("{e}"))?)
            }
            (None, image) => image
                .map(berth_core::job::shifter_image)
                .transpose()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        // An image file: the cluster's copy of it (uploaded now if it has none).
        let wanted = match wanted {
            Some(file) if berth_core::job::image_is_file(&file) => {
                Some(crate::image::uploaded(&file)?)
            }
            other => other,
        };
        let job_image = std::env::var("BERTH_IMAGE").unwrap_or_default();
        if let Some(name) = &self.container_name {
            berth_core::job::ContainerName::parse(name).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        // A named container, one to save and one through the image's entrypoint are the
        // step's own even of the job's image (a named one by the job's container's name is
        // the job's: the controller knows).
        let own_anyway = self.container_name.is_some()
            || self.container_save.is_some()
            || self.container_entrypoint
            || self.container_remap_root;
        let own = wanted.filter(|w| {
            own_anyway
                || job_image.is_empty()
                || Reference::full_name(w) != Reference::full_name(&job_image)
        });
        let mut all_binds = binds.to_vec();
        for mounts in &self.container_mounts {
            all_binds
                .extend(berth_core::job::pyxis_mounts(mounts).map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        let host_env: Vec<String> = self
            .container_env
            .iter()
            .flat_map(|names| names.split(',').map(String::from))
            .collect();
        // What only a container of the step's own has.
        let own_only = [
            ("--container-mounts, --bind", !all_binds.is_empty()),
            ("--container-env", !host_env.is_empty()),
            ("--no-container-mount-home", self.no_container_mount_home),
            ("--container-save", self.container_save.is_some()),
            ("--container-entrypoint", self.container_entrypoint),
            ("--container-remap-root", self.container_remap_root),
        ];
        let own_container = own.is_some() || self.container_name.is_some();
        if let Some((flags, _)) = own_only.iter().find(|(_, set)| *set && !own_container) {
            bail!("{flags}: for a step's own container (--container-image or --container-name); this step runs in job {id}'s container, as the job made it");
        }
        Ok(OwnImage {
            image: own,
            binds: all_binds,
            no_home: self.no_container_mount_home,
            host_env,
            container_name: self.container_name.clone(),
        })
    }
}

/// A step's own container inside a job (none: the job's container), as [`StepRequest`]
/// carries it.
#[derive(Default)]
struct OwnImage {
    image: Option<String>,
    binds: Vec<String>,
    no_home: bool,
    host_env: Vec<String>,
    container_name: Option<String>,
}

/// The job this step belongs to: --job, or the job the caller runs in; `None`: outside any
/// job, where the step gets an allocation of its own.
fn job_id(args: &StepArgs) -> Result<Option<u64>> {
    match args.job {
        Some(id) => Ok(Some(id)),
        None => job_id_from_env(),
    }
}

/// The job the caller runs in, from its environment.
pub(crate) fn job_id_from_env() -> Result<Option<u64>> {
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
    add(
        "--exclude",
        (!args.exclude.is_empty()).then(|| args.exclude.join(",")),
    );
    add("--cpus-per-task", args.cpus_per_task.map(|n| n.to_string()));
    add("--image", args.image.clone());
    add("--mem", args.mem.clone());
    add("--mem-per-cpu", args.mem_per_cpu.clone());
    add("--time", args.time.clone());
    add("--partition", args.partition.clone());
    add("--licenses", args.licenses.clone());
    add("--job-name", args.job_name.clone());
    for b in &args.bind {
        add("--bind", Some(b.clone()));
    }
    // Its output is the step's, on this terminal: the allocation's own script prints nothing.
    add("--output", Some("/dev/null".into()));
    flags.extend(args.pyxis.allocation_flags());
    flags
}

pub fn step(mut args: StepArgs) -> Result<i32> {
    // srun --mpi=list: the types there are, in srun's words.
    if args.mpi.as_deref() == Some("list") {
        println!("MPI plugin types are...\n\tnone\n\tpmi1\n\tpmi2\n\tpmix\nspecific pmix plugin versions available: pmix_v3,pmix_v4,pmix_v5");
        return Ok(0);
    }
    if args.command.is_empty() {
        bail!("no command to run: berth step [OPTIONS] COMMAND [ARGS...]");
    }
    args.pyxis = std::mem::take(&mut args.pyxis).defaults_from(|name| std::env::var(name).ok())?;
    let bind = args.cpu_bind.as_deref().map(|b| {
        let b = b
            .strip_prefix("verbose,")
            .or(b.strip_prefix("v,"))
            .unwrap_or(b);
        b.strip_prefix("quiet,")
            .or(b.strip_prefix("q,"))
            .unwrap_or(b)
    });
    let cpu_bind = match bind {
        None | Some("cores" | "threads" | "rank" | "sockets" | "ldoms") => true,
        Some("none" | "no") => false,
        Some(other) => bail!(
            "--cpu-bind={other}: berth pins each task to its own share of the job's CPUs (cores, threads, rank, sockets, ldoms) or not (none); it takes no CPU maps or masks"
        ),
    };
    // srun's default type comes from SLURM_MPI_TYPE, as Slurm's does.
    let (pmi, pmix) = mpi_kind(
        args.mpi
            .clone()
            .or_else(|| std::env::var("SLURM_MPI_TYPE").ok())
            .as_deref(),
    )?;
    let from_env = || std::env::var("SLURM_KILL_BAD_EXIT").ok()?.parse().ok();
    let kill_on_bad_exit = match args.kill_on_bad_exit.or_else(from_env) {
        Some(1) => true,
        None | Some(0) => false,
        Some(n) => bail!("--kill-on-bad-exit={n}: expected 0 or 1"),
    };
    if args.ntasks == Some(0) || args.cpus_per_task == Some(0) || args.gpus_per_task == Some(0) {
        bail!("-n, -c and --gpus-per-task take at least 1");
    }
    if args.pty && args.label {
        bail!("--pty and --label do not go together: a terminal's output has no lines to label");
    }
    let accepted = args.accepted.given();
    if !accepted.is_empty() && !args.accepted.quiet {
        berth_core::say!(
            "berth step: ignored {}: berth places and binds each task itself",
            accepted.join(", ")
        );
    }
    if args.accepted.wait.is_some() && !args.accepted.quiet {
        berth_core::say!("berth step: ignored --wait: the other tasks run on when one ends (-K ends them when one fails)");
    }
    let mut args = args;
    tasks_per_node(&mut args)?;
    let task_files = redirect(&args)?;
    let input_task = args.input.as_deref().and_then(|i| i.parse().ok());
    if args.pty && args.ntasks.is_none() {
        // One interactive task unless asked otherwise (srun --pty gives task 0 the terminal).
        args.ntasks = Some(1);
    }
    let job = job_id(&args)?;
    let (allocate, own) = match job {
        None => (Some(allocation_flags(&args)), OwnImage::default()),
        Some(id) => {
            let given = [
                ("--partition", args.partition.is_some()),
                ("--licenses", args.licenses.is_some()),
            ];
            // Slurm's step limits: the step runs within the job's (warned, not refused, so
            // that the script's line runs).
            let within: Vec<&str> = given
                .iter()
                .filter_map(|(flag, set)| set.then_some(*flag))
                .collect();
            if !within.is_empty() {
                berth_core::say!(
                    "berth step: ignored {}: this step runs in job {id}, within its limits",
                    within.join(", ")
                );
            }
            (
                None,
                args.pyxis.in_job(id, args.image.as_deref(), &args.bind)?,
            )
        }
    };
    if job.is_none() && !args.nodelist.is_empty() {
        bail!("-w names nodes of a job: outside one, ask for a number of nodes with -N");
    }
    let multi_prog = match (args.multi_prog, args.command.as_slice()) {
        (false, _) => None,
        (true, [file]) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("--multi-prog: cannot read {file}: {e}"))?;
            berth_core::job::MultiProg::parse(&text)?;
            Some(text)
        }
        (true, _) => bail!("--multi-prog takes one file, which gives each task its program"),
    };
    if multi_prog.is_some() && args.pyxis.container_entrypoint {
        bail!(
            "--multi-prog gives each task its program: it does not go with --container-entrypoint"
        );
    }
    // In a job, the step's own time limit (outside one, the allocation's, above).
    // (0, UNLIMITED and INFINITE: none, as srun takes them.)
    let unlimited =
        |t: &str| ["0", "UNLIMITED", "INFINITE"].contains(&t.to_ascii_uppercase().as_str());
    let time_limit = match (&job, &args.time) {
        (Some(_), Some(t)) if unlimited(t) => None,
        (Some(_), Some(t)) => {
            Some(berth_core::job::parse_slurm_time(t).map_err(|e| anyhow::anyhow!("--time: {e}"))?)
        }
        _ => None,
    };
    let request = StepRequest {
        job,
        time_limit,
        allocate,
        allocate_syntax: berth_api::OptionSyntax::Berth,
        // Filled in by `run`, for an allocation's image file.
        image_files: Default::default(),
        hold: false,
        attach: None,
        image: own.image,
        binds: own.binds,
        no_home: own.no_home,
        host_env: own.host_env,
        container_name: own.container_name,
        container_save: match &args.pyxis.container_save {
            Some(path) if path.ends_with('/') => {
                bail!("--container-save={path}: expected a file's path, not a directory's")
            }
            Some(path) => Some(std::path::absolute(path)?.to_string_lossy().into_owned()),
            None => None,
        },
        container_entrypoint: args.pyxis.container_entrypoint,
        container_remap_root: args.pyxis.container_remap_root,
        ntasks: args.ntasks,
        nodes: args.nodes,
        nodelist: (!args.nodelist.is_empty()).then_some(args.nodelist),
        exclude: args.exclude,
        cpus_per_task: args.cpus_per_task,
        argv: args.command,
        env: {
            let mut env = exported(environment(), args.export.as_deref())?;
            // srun's own -c is its tasks' SLURM_CPUS_PER_TASK (else the job's), as srun
            // sets it.
            if let Some(n) = args.cpus_per_task {
                env.retain(|(k, _)| k != "SLURM_CPUS_PER_TASK");
                env.push(("SLURM_CPUS_PER_TASK".into(), n.to_string()));
            }
            env
        },
        container_workdir: match (&args.chdir, args.pyxis.container_workdir) {
            (None, Some(dir)) if !dir.starts_with('/') => {
                bail!("--container-workdir={dir}: expected an absolute path in the image")
            }
            (None, dir) => dir,
            (Some(_), _) => None,
        },
        cwd: match args.chdir {
            Some(dir) => std::path::absolute(dir)?,
            None => std::env::current_dir()?,
        }
        .to_string_lossy()
        .into_owned(),
        label: args.label,
        srun: crate::compat::invoked_as() == Some("srun"),
        quiet: false,
        kill_on_bad_exit,
        pbs_slots: Vec::new(),
        cpu_bind,
        // In a job submitted with -O, its steps overcommit too (as srun reads it there).
        overcommit: args.overcommit
            || std::env::var_os("SLURM_OVERCOMMIT").is_some_and(|v| v == "1"),
        // In a job, the step's own memory (outside one, the allocation's, above).
        memory: step_memory(job, "--mem", args.mem.as_deref())?,
        memory_per_cpu: step_memory(job, "--mem-per-cpu", args.mem_per_cpu.as_deref())?,
        overlap: args.overlap || std::env::var_os("SLURM_OVERLAP").is_some(),
        pty: args.pty,
        pmi,
        pmix,
        task_files,
        input_task,
        gpus_per_task: args.gpus_per_task,
        multi_prog,
        // In a job, the step's name (outside one, the allocation's, above).
        name: job.and(args.job_name.clone()),
    };
    // srun's Ctrl-C: the first says how the tasks are, a second within a second passes it
    // on (-q: the first does).
    let srun = crate::compat::invoked_as() == Some("srun");
    run_with(request, srun && !args.quit_on_interrupt && !args.pty)
}

/// The step's own memory, bytes, where it runs in a job and `value` gives one for `flag`.
fn step_memory(job: Option<u64>, flag: &str, value: Option<&str>) -> Result<Option<u64>> {
    match (job, value) {
        (Some(_), Some(v)) => berth_core::job::parse_slurm_size(v)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{flag}: {e}")),
        _ => Ok(None),
    }
}

/// What `--mpi=TYPE` asks the agent to serve: PMI-1 and PMI-2 (`pmi1`, the default, and
/// `pmi2`: one server speaks both, each task with its connection in PMI_FD), PMIx (`pmix`
/// and its versioned names, Slurm's), or nothing (`none`).
fn mpi_kind(kind: Option<&str>) -> Result<(bool, bool)> {
    Ok(match kind {
        None | Some("pmi1" | "pmi" | "pmi2") => (true, false),
        Some("pmix" | "pmix_v3" | "pmix_v4" | "pmix_v5") => (false, true),
        Some("none") => (false, false),
        Some(other) => bail!(
            "--mpi={other}: berth serves pmi1 (the default), pmi2, pmix (pmix_v3, pmix_v4, pmix_v5) or none"
        ),
    })
}

/// `--ntasks-per-node`: the task count, or the node count, from the other. Inside a job
/// without -N or -w, its node count (SLURM_JOB_NUM_NODES) is the nodes to fill.
fn tasks_per_node(args: &mut StepArgs) -> Result<()> {
    let Some(per) = args.ntasks_per_node else {
        return Ok(());
    };
    if per == 0 {
        bail!("--ntasks-per-node takes at least 1");
    }
    let nodes = args
        .nodes
        .or((!args.nodelist.is_empty()).then_some(args.nodelist.len() as u32));
    match (args.ntasks, nodes) {
        (Some(n), Some(k)) if n > per.saturating_mul(k) => {
            bail!("-n {n} does not fit on {k} node(s) at --ntasks-per-node={per}")
        }
        (Some(_), Some(_)) => {}
        (Some(n), None) => args.nodes = Some(n.div_ceil(per)),
        (None, k) => {
            let job_nodes = std::env::var("SLURM_JOB_NUM_NODES")
                .ok()
                .and_then(|v| v.parse().ok());
            let k = k.or(job_nodes).unwrap_or(1);
            args.ntasks = Some(per.saturating_mul(k));
            if args.nodelist.is_empty() {
                args.nodes = Some(k);
            }
        }
    }
    Ok(())
}

/// `--output`, `--error`, `--input`: this command's own descriptors, which the tasks get,
/// made the files named with the job's patterns (%j, %A, %a, %x, %u); names with a task's
/// (%t, %n, %s, %N) are files of each task, which each node opens for its tasks (returned,
/// the job's symbols expanded). As srun: errors go where the output goes unless `--error`
/// says otherwise.
fn redirect(args: &StepArgs) -> Result<Option<TaskFiles>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let append = match args.open_mode.as_deref() {
        None | Some("truncate") => false,
        Some("append") => true,
        Some(other) => bail!("--open-mode={other}: expected append or truncate"),
    };
    let (name, user) = (var("SLURM_JOB_NAME"), var("USER"));
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let ctx = berth_core::job::PatternContext {
        job_id: number("SLURM_JOB_ID").unwrap_or(0),
        array_job_id: number("SLURM_ARRAY_JOB_ID"),
        array_index: number("SLURM_ARRAY_TASK_ID").and_then(|i| u32::try_from(i).ok()),
        job_name: &name,
        user: &user,
        first_node: "",
    };
    let mut per_task = TaskFiles {
        append,
        ..TaskFiles::default()
    };
    let error = args.error.as_ref().or(args.output.as_ref());
    let mut opened: Option<(&String, std::fs::File)> = None;
    for (pattern, fd) in [(args.output.as_ref(), 1), (error, 2)] {
        let Some(pattern) = pattern else { continue };
        // Outside a job the allocation's id is known on its nodes only.
        let no_id_yet = ctx.job_id == 0 && berth_core::job::has_job_id(pattern);
        if berth_core::job::is_per_task(pattern) || no_id_yet {
            let names = berth_core::job::expand_job_part(pattern, &ctx);
            match fd {
                1 => per_task.output = Some(names),
                _ => per_task.error = Some(names),
            }
            continue;
        }
        if pattern.parse::<u32>().is_ok() {
            bail!("--output={pattern}, --error={pattern}: berth passes on every task's output, not one task's: label it with -l, or give each task a file of its own (-o out-%t.txt)");
        }
        if opened.as_ref().is_none_or(|(p, _)| *p != pattern) {
            let path = match pattern.as_str() {
                "none" => "/dev/null".to_string(),
                pattern => berth_core::job::expand_pattern(pattern, &ctx),
            };
            // O_APPEND even when truncated: the tasks share it, and each adds to it whole
            // (a shared offset is not updated atomically by sendfile(2), which cat uses).
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(if append { 0 } else { libc::O_TRUNC })
                .open(&path)
                .map_err(|e| anyhow::anyhow!("cannot open {path}: {e}"))?;
            opened = Some((pattern, file));
        }
        let (_, file) = opened.as_ref().expect("opened above");
        // SAFETY: dup2(2) of a file this process opened onto its own stdout or stderr.
        unsafe { libc::dup2(file.as_raw_fd(), fd) };
    }
    // srun's modes first: every task gets this command's input (all, the default), none
    // does, or task N alone (the request's `input_task`).
    match args.input.as_deref() {
        None | Some("all") => {}
        Some(n) if n.parse::<u32>().is_ok() => {}
        Some(p)
            if berth_core::job::is_per_task(p)
                || (ctx.job_id == 0 && berth_core::job::has_job_id(p)) =>
        {
            per_task.input = Some(berth_core::job::expand_job_part(p, &ctx));
        }
        Some(p) => {
            let path = match p {
                "none" => "/dev/null".to_string(),
                p => berth_core::job::expand_pattern(p, &ctx),
            };
            let file = std::fs::File::open(&path)
                .map_err(|e| anyhow::anyhow!("cannot open {path}: {e}"))?;
            // SAFETY: as above, onto its own stdin.
            unsafe { libc::dup2(file.as_raw_fd(), 0) };
        }
    }
    let any = per_task.output.is_some() || per_task.error.is_some() || per_task.input.is_some();
    if any && args.pty {
        bail!("files of each task (%t, %n, %s, %N; outside a job, names with the new job's id, %j, %A) do not go with --pty, whose terminal is this command's");
    }
    Ok(any.then_some(per_task))
}

/// An environment variable's value, or nothing.
fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// `--export`: the environment the tasks get from this one's. NONE keeps only the job's
/// SLURM_* and BERTH_* variables (and those named); ALL (the default) all of it.
fn exported(env: Vec<(String, String)>, export: Option<&str>) -> Result<Vec<(String, String)>> {
    let Some(export) = export else {
        return Ok(env);
    };
    let parsed = berth_core::job::parse_args(&[format!("--export={export}")])
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .export
        .unwrap_or_default();
    Ok(parsed.select(&env, |k| k.starts_with("SLURM_") || k.starts_with("BERTH_")))
}

/// A new allocation's image file (its options name one), uploaded into the cluster's store
/// first, as a submission's ([`crate::batch::image_files`]).
fn upload_image_file(request: &mut StepRequest) -> Result<()> {
    if let Some(allocation) = request.allocation(0, 0) {
        let submission = berth_controller::allocation_submission(allocation);
        let parsed = berth_controller::parse_submission(&submission).ok();
        request.image_files = crate::batch::image_files(parsed.as_ref())?;
    }
    Ok(())
}

/// Sends `request` to the node agent's step socket and waits for the step.
pub fn run(request: StepRequest) -> Result<i32> {
    run_with(request, false)
}

/// [`run`]; `sigint_twice`: a first SIGINT to this process says how the step's tasks are,
/// a second within a second is passed on, as srun's Ctrl-C.
fn run_with(mut request: StepRequest, sigint_twice: bool) -> Result<i32> {
    upload_image_file(&mut request)?;
    let request = &request;
    let who = crate::compat::invoked_as().filter(|n| *n == "srun");
    let who = who.unwrap_or("berth step");
    // A new allocation's job, once submitted.
    let allocated = std::cell::Cell::new(None);
    let mut tell = {
        let mut progress = progress(who, request.allocate_syntax);
        let allocated = &allocated;
        move |event: &StepEvent| {
            if let StepEvent::Submitted(submitted) = event {
                allocated.set(Some(submitted.job_id));
            }
            progress(event)
        }
    };
    let ran = berth_agent::step::client::run(&step_socket(), request, &mut tell, sigint_twice);
    match (ran, allocated.get()) {
        // Its node agent went (the cluster restarting), its own allocation with it: ended,
        // not left to hold its CPUs for nobody.
        (Err(berth_agent::step::StepError::Lost), Some(job)) => {
            berth_core::say!(
                "{who}: lost the node agent; ending job allocation {job} (its tasks' status is lost)"
            );
            crate::batch::end_allocation(job, 125)?;
            bail!(berth_agent::step::StepError::Lost)
        }
        // PBS's last word on an interactive job.
        (Ok(code), Some(job)) if request.allocate_syntax == OptionSyntax::Qsub => {
            let server = crate::client::controller_host();
            berth_core::say!("qsub: job {job}.{server} completed");
            Ok(code)
        }
        (ran, _) => Ok(ran?),
    }
}

/// Tells the user how a new allocation gets on, in the words of the command it stands for:
/// srun's and salloc's (as `who`), bsub's (`Job <42> is submitted to default queue
/// <normal>.`, `<<Waiting for dispatch ...>>`, `<<Starting on node1>>`) or qsub's (`qsub:
/// waiting for job 42.server to start`, `qsub: job 42.server ready`); and that a step waits
/// for CPUs the job's other steps hold, in srun's; on stderr, since stdout is the job's.
fn progress(who: &str, syntax: OptionSyntax) -> impl FnMut(&StepEvent) {
    let who = who.to_string();
    let server = match syntax {
        OptionSyntax::Qsub => crate::client::controller_host(),
        _ => String::new(),
    };
    let mut queued = false;
    let mut busy = None;
    move |event| match (syntax, event) {
        (_, StepEvent::Notice(text)) => berth_core::say!("{text}"),
        (_, StepEvent::Busy { job, reason }) => {
            busy = Some(*job);
            let reason = match reason.is_empty() {
                true => berth_agent::step::server::NODES_BUSY,
                false => reason,
            };
            berth_core::say!(
                "{who}: Job {job} step creation temporarily disabled, retrying ({reason})"
            )
        }
        (_, StepEvent::Started { step, .. }) if busy.is_some() => {
            let job = busy.take().unwrap_or_default();
            berth_core::say!("{who}: Step created for StepId={job}.{step}")
        }
        (_, StepEvent::Submitted(submitted)) => {
            for w in &submitted.warnings {
                berth_core::say!("{who}: warning: {w}");
            }
            let job = submitted.job_id;
            match syntax {
                OptionSyntax::Bsub => {
                    let default = if submitted.default_partition {
                        "default "
                    } else {
                        ""
                    };
                    berth_core::say!(
                        "Job <{job}> is submitted to {default}queue <{}>.",
                        submitted.partition
                    );
                    berth_core::say!("<<Waiting for dispatch ...>>");
                }
                OptionSyntax::Qsub => {
                    berth_core::say!("qsub: waiting for job {job}.{server} to start")
                }
                OptionSyntax::Berth | OptionSyntax::Sbatch => {}
            }
        }
        (OptionSyntax::Bsub, StepEvent::Allocated { host, .. }) => {
            berth_core::say!("<<Starting on {host}>>")
        }
        (OptionSyntax::Qsub, StepEvent::Allocated { job, .. }) => {
            berth_core::say!("qsub: job {job}.{server} ready")
        }
        (OptionSyntax::Berth | OptionSyntax::Sbatch, StepEvent::Queued { job }) => {
            queued = true;
            berth_core::say!("{who}: job {job} queued and waiting for resources")
        }
        (OptionSyntax::Berth | OptionSyntax::Sbatch, StepEvent::Allocated { job, .. })
            if queued =>
        {
            berth_core::say!("{who}: job {job} has been allocated resources")
        }
        _ => {}
    }
}

/// The client's working directory, where the tasks start.
pub fn current_dir() -> Result<String> {
    let dir = anyhow::Context::context(
        std::env::current_dir(),
        "cannot determine the current directory",
    )?;
    dir.into_os_string().into_string().map_err(|dir| {
        anyhow::anyhow!(
            "the current directory {} is no UTF-8 path, which berth's jobs and steps need to start in: run this from another directory",
            std::path::Path::new(&dir).display()
        )
    })
}

/// The client's environment, as the tasks get it.
pub fn environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

#[derive(Args, Debug)]
pub struct AllocArgs {
    /// `berth submit`'s (sbatch's) options for the allocation (-n, -N, -c, --mem, -t, -p,
    /// -J, -C, -w, --gpus, --image, --bind, ...), then the command to run while it is held,
    /// on this host with the job's variables (SLURM_JOB_ID, SLURM_JOB_NODELIST, ...), so
    /// that `berth step` (srun) in it runs in the job; default: $SHELL. With --no-shell, no
    /// command: the allocation stays until its time limit or `berth cancel`, and steps
    /// reach it with `berth step --job ID`
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    words: Vec<String>,
}

/// `berth alloc` (salloc): gets an allocation, runs a command on this host while holding
/// it, and ends it with the command's exit status.
pub fn alloc(mut args: AllocArgs) -> Result<i32> {
    let no_shell = match args.words.iter().position(|w| w == "--no-shell") {
        Some(at) => {
            args.words.remove(at);
            true
        }
        None => false,
    };
    let (options, at) =
        berth_core::job::leading_options(berth_core::job::Family::Berth, &args.words)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut options: Vec<String> = options.into_iter().flat_map(|(_, words)| words).collect();
    // The allocation's own script prints nothing.
    options.push("--output=/dev/null".into());
    if no_shell {
        if at < args.words.len() {
            bail!(
                "--no-shell runs no command: drop {:?}, or --no-shell",
                args.words[at]
            );
        }
        return allocate_only(options);
    }
    let argv = match &args.words[at..] {
        [] => vec![std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into())],
        command => command.to_vec(),
    };
    let mut request = StepRequest {
        allocate: Some(options),
        hold: true,
        ntasks: None,
        ..StepRequest::new(argv.clone(), environment(), current_dir()?)
    };
    upload_image_file(&mut request)?;
    let who = match crate::compat::invoked_as() {
        Some("salloc") => "salloc",
        _ => "berth alloc",
    };
    let mut tell = progress(who, OptionSyntax::Berth);
    let held = berth_agent::step::client::allocate(&step_socket(), &request, who, &mut tell)?;
    let job = held.job;
    berth_core::say!("{who}: Granted job allocation {job}");
    let spawned = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .envs(held.env.iter().map(|(k, v)| (k, v)))
        .spawn();
    use berth_agent::step::client::Release;
    let release = match spawned {
        Ok(mut command) => held.wait(&mut command)?,
        Err(e) => {
            berth_core::say!("{who}: cannot run {}: {e}", argv[0]);
            held.end(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })?
        }
    };
    Ok(match release {
        Release::Ended(code) => {
            berth_core::say!("{who}: Relinquishing job allocation {job}");
            code
        }
        Release::Revoked(_, code) => code,
        Release::Lost(code) => {
            // Its node agent's end of the connection went (the cluster restarted): the job
            // is no longer held by it, and is ended here with the command's status, once
            // the controller answers (waited for, as `--wait` waits).
            berth_core::say!("{who}: lost the node agent; ending job allocation {job}");
            if let Err(e) = crate::batch::end_allocation(job, code) {
                berth_core::say!("{who}: cannot end job {job}: {e:#}");
            }
            code
        }
    })
}

/// `berth alloc --no-shell` (salloc's): a job that only holds its allocation, until its time
/// limit or `berth cancel`; steps reach it with `berth step --job` (srun --jobid). Returns
/// once it runs.
fn allocate_only(options: Vec<String>) -> Result<i32> {
    let who = match crate::compat::invoked_as() {
        Some("salloc") => "salloc",
        _ => "berth alloc",
    };
    let submitted = crate::batch::send(crate::batch::Submission {
        script: berth_controller::HOLD_SCRIPT.into(),
        name: "allocation".into(),
        options,
        syntax: berth_api::OptionSyntax::Berth,
        script_args: Vec::new(),
        path: None,
    })?;
    let job = submitted.job_id;
    if submitted.jobs != 1 {
        for id in job..job + submitted.jobs {
            let _ = crate::batch::cancel_job(id, None, Default::default());
        }
        bail!("an allocation is one job: job arrays are for `berth submit`");
    }
    berth_core::say!("{who}: Pending job allocation {job}");
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        let info: berth_api::JobInfo =
            crate::client::request("GET", &format!("/v1/jobs/{job}"), None::<&()>)?;
        match info.state.as_str() {
            "RUNNING" | "SUSPENDED" => break,
            "PENDING" => std::thread::sleep(pause),
            state => bail!(
                "job {job} ended {state} before it started{}",
                info.reason.map_or(String::new(), |r| format!(": {r}"))
            ),
        }
        pause = (pause * 2).min(std::time::Duration::from_millis(500));
    }
    berth_core::say!("{who}: Granted job allocation {job}");
    Ok(0)
}

/// The node agent's step socket: $BERTH_STEP_SOCKET, or the one beside the controller's.
fn step_socket() -> std::path::PathBuf {
    std::env::var_os("BERTH_STEP_SOCKET").map_or_else(
        || berth_api::step_socket(&crate::client::socket()),
        std::path::PathBuf::from,
    )
}

#[derive(Args, Debug)]
pub struct RshArgs {
    /// [ssh options] NODE COMMAND...: options ssh takes and MPI launchers pass (-x, -n, -q,
    /// -T, -o OPT, -l USER, -p PORT) are accepted; -n reads no input, the others mean nothing
    /// here
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    words: Vec<String>,
}

/// Makes /dev/null this process's stdin: a step's tasks then read nothing.
pub fn input_from_null() {
    // SAFETY: open(2) and dup2(2) onto this single-threaded process's own stdin.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
    }
}

/// `berth rsh NODE COMMAND...`: COMMAND (a shell command line, as ssh runs it) on NODE, one
/// of the job's nodes, in the job's container there: the remote launcher that Open MPI's
/// mpirun and MPICH's hydra use instead of ssh (OMPI_MCA_plm_rsh_agent,
/// HYDRA_LAUNCHER_EXEC), so that images need no sshd.
pub fn rsh(args: RshArgs) -> Result<i32> {
    let (no_input, node, command) = rsh_words(&args.words)?;
    let Some(job) = job_id_from_env()? else {
        bail!("berth rsh runs commands on the nodes of the job it is called in: call it from a job's script or step");
    };
    if no_input {
        input_from_null();
    }
    let argv = vec!["/bin/sh".into(), "-c".into(), command];
    run(launcher_step(job, vec![node], 1, argv)?)
}

/// A step of `job` that starts an MPI launcher's daemons (`berth rsh`, LSF's blaunch), the
/// `ntasks` tasks spread over `nodes` in order: each gets all the job's CPUs of its node
/// and is not counted against them (it starts the ranks there), and its failures are not
/// said (its status is, as ssh's).
pub(crate) fn launcher_step(
    job: u64,
    nodes: Vec<String>,
    ntasks: u32,
    argv: Vec<String>,
) -> Result<StepRequest> {
    Ok(StepRequest {
        job: Some(job),
        ntasks: Some(ntasks),
        nodelist: Some(nodes),
        cpus_per_task: Some(1),
        cpu_bind: false,
        overcommit: true,
        overlap: true,
        quiet: true,
        ..StepRequest::new(argv, environment(), current_dir()?)
    })
}

/// The node and command line of `berth rsh`'s words, after any ssh options; and whether
/// input is to be read (-n: not).
fn rsh_words(words: &[String]) -> Result<(bool, String, String)> {
    let mut no_input = false;
    let mut i = 0;
    while let Some(w) = words.get(i).filter(|w| w.starts_with('-')) {
        match w.as_str() {
            "-n" => no_input = true,
            "-x" | "-q" | "-T" | "-t" | "-a" | "-4" | "-6" => {}
            "-o" | "-l" | "-p" => i += 1,
            w if ["-o", "-l", "-p"].iter().any(|f| w.starts_with(f)) => {}
            other => {
                bail!("berth rsh: unknown option {other}: usage: berth rsh [-n] NODE COMMAND...")
            }
        }
        i += 1;
    }
    let Some(host) = words.get(i) else {
        bail!("berth rsh: no node: usage: berth rsh [-n] NODE COMMAND...");
    };
    // user@host as ssh takes it; a node's own name without a domain.
    let host = host.rsplit_once('@').map_or(host.as_str(), |(_, h)| h);
    let node = host.split('.').next().unwrap_or(host).to_string();
    if node.parse::<std::net::IpAddr>().is_ok() || host.parse::<std::net::IpAddr>().is_ok() {
        bail!("berth rsh {host}: name the node (as the job's hostfile does), not its address");
    }
    let command = words[i + 1..].join(" ");
    if command.is_empty() {
        bail!("berth rsh {node}: no command: an interactive login is not what rsh is for here (use `berth step --pty`)");
    }
    Ok((no_input, node, command))
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// An environment of `pairs`, as a lookup of a variable by name.
    pub(crate) fn env(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn pyxis_variables_fill_in_what_the_command_line_leaves_out() {
        let vars: &[(&str, &str)] = &[
            ("PYXIS_CONTAINER_IMAGE", "nvcr.io#nvidia/pytorch:23.10-py3"),
            ("PYXIS_CONTAINER_MOUNTS", "/data:/data:ro"),
            ("PYXIS_CONTAINER_NAME", ""),
            ("PYXIS_CONTAINER_REMAP_ROOT", "yes"),
            ("PYXIS_CONTAINER_MOUNT_HOME", "0"),
        ];
        let a = parse(&["true"]).pyxis.defaults_from(env(vars)).unwrap();
        assert_eq!(
            a.container_image.as_deref(),
            Some("nvcr.io#nvidia/pytorch:23.10-py3")
        );
        assert_eq!(a.container_mounts, ["/data:/data:ro"]);
        assert_eq!(a.container_name, None, "empty: not set");
        assert!(a.container_remap_root && a.no_container_mount_home);
        // The command line wins.
        let a = parse(&[
            "--container-image=busybox",
            "--no-container-remap-root",
            "true",
        ])
        .pyxis
        .defaults_from(env(vars))
        .unwrap();
        assert_eq!(a.container_image.as_deref(), Some("busybox"));
        assert!(!a.container_remap_root);
        let bad: &[(&str, &str)] = &[("PYXIS_CONTAINER_ENTRYPOINT", "maybe")];
        let e = parse(&["true"]).pyxis.defaults_from(env(bad)).unwrap_err();
        assert!(
            e.to_string()
                .contains("PYXIS_CONTAINER_ENTRYPOINT=maybe: expected yes or no"),
            "{e}"
        );
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
        let a = parse(&["-w", "h1,h3", "-N2", "hostname"]);
        assert_eq!(
            (a.nodelist, a.nodes),
            (vec!["h1".into(), "h3".into()], Some(2))
        );
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mpi_types_are_slurms() {
        assert_eq!(mpi_kind(None).unwrap(), (true, false));
        assert_eq!(mpi_kind(Some("pmi2")).unwrap(), (true, false));
        assert_eq!(mpi_kind(Some("pmix_v4")).unwrap(), (false, true));
        assert_eq!(mpi_kind(Some("none")).unwrap(), (false, false));
        let e = mpi_kind(Some("openmpi")).unwrap_err().to_string();
        assert!(e.contains("--mpi=openmpi") && e.contains("pmix"), "{e}");
    }

    #[test]
    fn rsh_takes_what_mpi_launchers_pass_as_ssh_would() {
        // Open MPI: the agent, the host, then orted's words (with their own quoting).
        let (no_input, node, cmd) =
            rsh_words(&words(&["bt0-h2", "orted", "-mca", "ess", "\"env\""])).unwrap();
        assert_eq!((no_input, node.as_str()), (false, "bt0-h2"));
        assert_eq!(cmd, "orted -mca ess \"env\"");
        // Hydra's ssh launcher puts -x first; ssh options with values are skipped.
        let (no_input, node, cmd) = rsh_words(&words(&[
            "-x",
            "-n",
            "-o",
            "StrictHostKeyChecking=no",
            "user@h3.cluster",
            "/usr/bin/hydra_pmi_proxy",
            "--control-port",
            "h1:4000",
        ]))
        .unwrap();
        assert_eq!((no_input, node.as_str()), (true, "h3"));
        assert_eq!(cmd, "/usr/bin/hydra_pmi_proxy --control-port h1:4000");
        for bad in [&["-Z", "h", "true"][..], &["h"], &[], &["10.0.0.2", "true"]] {
            assert!(rsh_words(&words(bad)).is_err(), "{bad:?}");
        }
    }
}
