//! Batch jobs as users ask for them: directives and submit options, parsed and validated into
//! a [`JobRequest`] the controller can store.
//!
//! Two levels, as ripgrep's low and high arguments:
//!
//! 1. [`JobOptions`]: what was written, every field optional, one struct for all spellings.
//!    [`parse_script`] fills it from the `#SBATCH`, `#BSUB`, `#PBS` and `#BERTH` directives of
//!    a batch script (and the `APPLICATION=` line naming the image); [`parse_args`] fills it
//!    from `berth submit` flags, which are `#BERTH`'s options. [`JobOptions::merge`] lays the
//!    flags over the directives, field by field, as sbatch lets its command line override
//!    the script.
//! 2. [`JobRequest`]: the defaults resolved (1 node, 1 task, 1 CPU per task) and the whole
//!    checked for sense (tasks against nodes, memory, arrays, dependencies).
//!
//! Everything here is pure: the caller reads the script and knows the user, the job id and
//! the partitions; [`pattern`] expands output names once those are known.

mod array;
mod begin;
mod dependency;
mod directives;
mod mail;
mod multiprog;
pub mod pattern;
mod tasks;
mod time;

pub use array::{ArrayRange, ArraySpec, Shape, MAX_ARRAY_LEN};
pub use begin::{
    civil_from_days, parse_lsf_begin, parse_pbs_begin, parse_slurm_begin, parse_slurm_deadline,
    slurm_report_time, unit_seconds, BeginTime,
};
pub use dependency::{
    parse_job_id, ArrayCount, Condition, CountOp, Counted, Dependencies, DependencyKind,
    JobDependency,
};
pub use directives::{
    leading_options, licenses, parse_args, parse_args_as, parse_env, parse_script,
    parse_script_with, parse_slurm_size, pyxis_image, pyxis_mounts, shifter_image, shifter_volumes,
    ContainerName, Family, NameMode, ParsedScript,
};
pub use mail::{parse_addresses, MailEvents};
pub use multiprog::MultiProg;
pub use pattern::{
    default_output, expand_job_part, expand_pattern, expand_task_pattern, has_job_id, is_per_task,
    pbs_default_name, slurm_default_output, PatternContext, TaskContext,
};
pub use tasks::{block_layout, expand_hostlist, hostlist, node_order, per_node};
pub use time::{format_duration, parse_lsf_time, parse_pbs_time, parse_slurm_time};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Everything that can be wrong with a job's directives, flags or request. Value errors
/// (`Invalid`, `Unsupported`, ...) are wrapped in `Directive` with the script line, or in
/// `Argument` with the flag, so the user sees where the bad value came from.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JobError {
    #[error("invalid {what} '{value}': expected {expected}")]
    Invalid {
        what: &'static str,
        value: String,
        expected: String,
    },
    #[error("'{value}' is not supported: {reason}")]
    Unsupported { value: String, reason: String },
    #[error("unknown {family} option '{option}'")]
    UnknownOption {
        family: &'static str,
        option: String,
    },
    #[error("option '{0}' needs a value")]
    MissingValue(String),
    #[error("option '{0}' takes no value")]
    UnexpectedValue(String),
    #[error("unexpected argument '{0}': directives hold only options")]
    UnexpectedArgument(String),
    #[error("unterminated quote")]
    UnterminatedQuote,
    #[error("line {line}: {directive}: {reason}")]
    Directive {
        line: usize,
        directive: String,
        reason: Box<JobError>,
    },
    #[error("{arg}: {reason}")]
    Argument { arg: String, reason: Box<JobError> },
    #[error("invalid job: {0}")]
    Request(String),
}

impl JobError {
    pub(crate) fn invalid(what: &'static str, value: &str, expected: &str) -> JobError {
        JobError::Invalid {
            what,
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    pub(crate) fn unsupported(value: &str, reason: &str) -> JobError {
        JobError::Unsupported {
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Minimum and maximum node count (`--nodes=2-4`); `--nodes=2` is `2-2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRange {
    pub min: u32,
    pub max: u32,
}

impl Default for NodeRange {
    /// One node, sbatch's default.
    fn default() -> Self {
        NodeRange { min: 1, max: 1 }
    }
}

/// How much memory, and per what. Bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Memory {
    /// Slurm `--mem`, a PBS Pro select chunk's `mem`.
    PerNode(u64),
    /// Slurm `--mem-per-cpu`, LSF `-M` and `rusage[mem=]` (per slot, one CPU each), PBS `pmem`.
    PerCpu(u64),
    /// PBS `-l mem=`: the whole job.
    PerJob(u64),
    /// Slurm `--mem-per-gpu`: for each GPU the job has on a node.
    PerGpu(u64),
    /// Slurm `--mem=0`: all of each of its nodes' memory (as much as the node has).
    WholeNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuScope {
    Job,
    Node,
    Task,
}

/// GPUs: `count` per `scope`, optionally of one model (`--gres=gpu:a100:2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRequest {
    pub count: u32,
    pub scope: GpuScope,
    pub model: Option<String>,
}

/// Which of the submitter's environment variables the job sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// The whole environment (sbatch's default, `--export=ALL`, PBS `-V`).
    pub all: bool,
    /// Named variables, with a value when one is given (`VAR=value`) instead of taken from
    /// the submitter's environment.
    pub vars: Vec<EnvVar>,
    /// Variables the whole environment goes without (bsub `-env "all, ~NAME"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

impl Default for Export {
    /// sbatch's default, for every family: PBS exports only what `-V`/`-v` name, but a
    /// berth job runs in a container whose own environment would otherwise be all it sees.
    fn default() -> Self {
        Export {
            all: true,
            vars: Vec::new(),
            except: Vec::new(),
        }
    }
}

impl Export {
    /// None of the environment, but for variables named afterwards (`--export=NONE`).
    pub fn none() -> Export {
        Export {
            all: false,
            ..Export::default()
        }
    }

    /// As sbatch's --export takes it (and SLURM_EXPORT_ENV says it): `ALL`, `NONE`, or the
    /// variables, `NAME` or `NAME=VALUE`, after `ALL,` where all go too.
    pub fn slurm_form(&self) -> String {
        let vars: Vec<String> = self
            .vars
            .iter()
            .map(|v| match &v.value {
                Some(value) => format!("{}={value}", v.name),
                None => v.name.clone(),
            })
            .collect();
        match (self.all, vars.is_empty()) {
            (true, true) => "ALL".into(),
            (false, true) => "NONE".into(),
            (true, false) => format!("ALL,{}", vars.join(",")),
            (false, false) => vars.join(","),
        }
    }

    /// The variables of `env` this exports: all of them, or only those `kept` keeps (and
    /// the named ones); a named variable takes its given value, else `env`'s, and replaces
    /// any earlier one.
    pub fn select(
        &self,
        env: &[(String, String)],
        kept: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| (self.all && !self.except.contains(k)) || kept(k))
            .cloned()
            .collect();
        for var in &self.vars {
            let value = var.value.clone().or_else(|| {
                env.iter()
                    .find(|(k, _)| *k == var.name)
                    .map(|(_, v)| v.clone())
            });
            if let Some(v) = value {
                out.retain(|(k, _)| *k != var.name);
                out.push((var.name.clone(), v));
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
}

/// Output files are truncated (sbatch, qsub) or appended to (bsub `-o`) when they exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenMode {
    #[default]
    Truncate,
    Append,
}

/// The image a job runs in, and where that was said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub name: String,
    pub origin: ImageOrigin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum ImageOrigin {
    /// `#BERTH --image` on this line.
    Directive { line: usize },
    /// `berth submit --image`.
    Cli,
    /// `export APPLICATION=...` on this line (the convention of the thesis' middleware).
    Application { line: usize },
    /// `$BERTH_IMAGE` in the submitter's environment, for a job that names none: inside a
    /// job, that job's own image.
    Environment,
}

/// Whether an image a job or container names is meant as an image file (or directory): it
/// starts like a path, ends like an image file, or ends with `/` (a directory: `sandbox/`);
/// no image name in a store or registry does any of these.
pub fn image_is_file(image: &str) -> bool {
    const FILES: [&str; 16] = [
        ".sif",
        ".simg",
        ".img",
        ".sqsh",
        ".sqfs",
        ".squashfs",
        ".tar",
        ".tar.gz",
        ".tgz",
        ".tar.zst",
        ".tar.xz",
        ".txz",
        ".tar.bz2",
        ".tbz2",
        ".tbz",
        ".oci",
    ];
    image.starts_with(['/', '.'])
        || image.ends_with('/')
        || FILES.iter().any(|x| image.ends_with(x))
}

/// Who gets a job's warning signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalTarget {
    /// sbatch `--signal=B:...`: the batch script's shell alone (its children are not
    /// signalled, so that a `trap` in the script decides what to do).
    Batch,
    /// sbatch `--signal=...` without `B:`: the processes of the job's steps (`berth step`,
    /// srun), not the batch shell and what it started itself.
    Steps,
    /// bsub `-wa`: every process of the job.
    Job,
}

/// A signal sent `before` seconds ahead of the job's time limit (sbatch `--signal`, bsub
/// `-wa`/`-wt`), so that the job can save its state; time suspended does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarnSignal {
    pub signal: i32,
    pub before: u64,
    pub target: SignalTarget,
}

/// An option berth accepted without acting on it, so the caller can warn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredOption {
    /// Script line; `None` for a command-line flag.
    pub line: Option<usize>,
    pub option: String,
    pub reason: String,
}

/// `time_limit` of [`JobOptions`] for sbatch's no limit (`-t 0`, `UNLIMITED`, `INFINITE`):
/// the job asks for none of its own, so that its partition's `max_time` binds it and never
/// its `default_time`, which would end it sooner than asked ([`JobRequest::no_time_limit`]).
pub const UNLIMITED_TIME: u64 = u64::MAX;

/// PBS's `place`: where a job's chunks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Place {
    /// `pack`: all on one node.
    Pack,
    /// `scatter`: each on a node of its own (Torque's `nodes=`, unless `place` says else).
    Scatter,
    /// `free` (PBS Pro's `select`, unless `place` says else): anywhere, several on one
    /// node where they fit.
    Free,
}

/// PBS's `-j`: the job's output and error streams, joined or apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Join {
    /// `n`: each to its own file.
    Apart,
    /// `oe`: stderr into the output file.
    IntoOutput,
    /// `eo`: stdout into the error file.
    IntoError,
}

/// Submit options as written, each optional so that flags can override directives field by
/// field. Sizes are bytes and times seconds, whatever unit the family used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOptions {
    pub name: Option<String>,
    pub ntasks: Option<u32>,
    pub ntasks_per_node: Option<u32>,
    pub cpus_per_task: Option<u32>,
    pub nodes: Option<NodeRange>,
    pub memory: Option<Memory>,
    pub time_limit: Option<u64>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub input: Option<String>,
    pub open_mode: Option<OpenMode>,
    /// The error file's own (LSF's `-e` appends, `-eo` overwrites, whatever `-o` does).
    pub error_open_mode: Option<OpenMode>,
    /// PBS `-j oe`: stderr goes to the output file; `-j eo`: stdout to the error file;
    /// `-j n`: each to its own.
    pub join: Option<Join>,
    pub partition: Option<String>,
    pub array: Option<ArraySpec>,
    pub dependencies: Option<Dependencies>,
    pub hold: Option<bool>,
    /// `--reservation`: the administrator's reservation it runs in.
    pub reservation: Option<String>,
    /// `-L/--licenses`: the cluster's licenses it holds while it runs.
    pub licenses: Option<Vec<(String, u32)>>,
    /// sbatch `--test-only`: the submission is checked and its start estimated, not queued.
    pub test_only: Option<bool>,
    pub export: Option<Export>,
    /// sbatch `--export-file`: a file (or a descriptor's number) on the submitting machine
    /// whose variables the job gets, read by the submitting client.
    pub export_file: Option<String>,
    pub workdir: Option<String>,
    /// bsub -cwd with LSF's patterns (%J, %I, %U): each job's own, made at its start.
    pub workdir_pattern: Option<bool>,
    pub gpus: Option<GpuRequest>,
    pub image: Option<ImageRef>,
    /// `SRC[:DST[:ro|rw]]`, checked for syntax here and against the policy by the runtime.
    pub binds: Vec<String>,
    /// The working directory in the image (pyxis's --container-workdir).
    pub container_workdir: Option<String>,
    /// The job's container by a name its steps use (pyxis's --container-name).
    pub container_name: Option<ContainerName>,
    /// Run the script through the image's ENTRYPOINT (pyxis's --container-entrypoint).
    pub container_entrypoint: Option<bool>,
    /// Root inside the job's container, the user outside (pyxis's --container-remap-root).
    pub container_remap_root: Option<bool>,
    /// Where to save the job's container once its script ends (pyxis's --container-save).
    pub container_save: Option<String>,
    /// Leave the user's home out of the container (pyxis's --no-container-mount-home).
    pub no_home: Option<bool>,
    /// Variables whose submission values win over the image's, PATH included (pyxis's
    /// --container-env).
    pub host_env: Vec<String>,
    pub nice: Option<i32>,
    pub account: Option<String>,
    /// Free text kept with the job (`--comment`, bsub `-Jd`).
    pub comment: Option<String>,
    /// Mail events and addresses (`--mail-type`, `--mail-user`; bsub -B -N -u; qsub -m -M).
    pub mail: Option<MailEvents>,
    pub mail_to: Option<Vec<String>>,
    pub exclusive: Option<bool>,
    /// sbatch `-O`: the job holds one task's CPUs on each node, whatever its task count.
    pub overcommit: Option<bool>,
    /// sbatch `--mincpus`: at least this many CPUs on each of its nodes.
    pub min_cpus: Option<u32>,
    /// PBS Pro's OMP_NUM_THREADS for the job (`ompthreads`, else each rank's CPUs).
    pub omp_threads: Option<u32>,
    /// NCI's `-l wd`: a PBS job starts in its submission directory (PBS's start in their
    /// user's home).
    pub start_in_submit_dir: Option<bool>,
    /// The job's umask (PBS's `-W umask=077`), instead of its submitter's.
    pub umask: Option<u32>,
    /// Its nodes were asked for as PBS's chunks (`-l select=...`, Torque's `-l nodes=...`).
    pub chunks: Option<bool>,
    /// PBS's `place`: where the chunks go.
    pub place: Option<Place>,
    /// PBS's `-S SHELL`: the shell the script runs with.
    pub shell: Option<String>,
    /// sbatch `--ignore-pbs` on its command line (a script's own is read with it).
    pub ignore_pbs: Option<bool>,
    /// sbatch `--uid`: the user (name or uid) root submits the job as.
    pub uid: Option<String>,
    pub requeue: Option<bool>,
    /// sbatch `--kill-on-invalid-dep`.
    pub kill_on_invalid_dep: Option<bool>,
    /// The warning signal (sbatch `--signal`, bsub `-wa`), its time before the limit in
    /// seconds (sbatch `--signal=...@TIME`, bsub `-wt`) and who gets it: apart, because bsub
    /// names the signal and the time in two options.
    pub signal: Option<i32>,
    pub signal_before: Option<u64>,
    pub signal_target: Option<SignalTarget>,
    pub begin: Option<BeginTime>,
    /// sbatch `--deadline`: the time it must end by.
    pub deadline: Option<BeginTime>,
    /// sbatch `--wait`, bsub `-K`, qsub `-W block=true`: the submitting command waits for
    /// the job's end and exits with its status.
    pub wait: Option<bool>,
    /// sbatch `--constraint`: features each node must have, as any one of these sets.
    pub constraint: Option<Vec<Vec<String>>>,
    /// sbatch `--nodelist`: nodes the job must have, every one.
    pub nodelist: Option<Vec<String>>,
    /// sbatch `--exclude`: nodes it must not have.
    pub exclude: Option<Vec<String>>,
    /// bsub `-m`: the nodes it may have (any of them), and no others.
    pub candidates: Option<Vec<String>>,
    /// bsub `-m HOST+N`: nodes it prefers, the higher N the more.
    pub preferred: Option<Vec<(String, u32)>>,
    pub ignored: Vec<IgnoredOption>,
}

impl JobOptions {
    /// Lays `cli` over `directives`: every field the command line set wins, as sbatch's
    /// command line beats `#SBATCH`. Binds and ignored options accumulate (the script's
    /// binds first), as repeated `--bind` flags do.
    pub fn merge(directives: JobOptions, cli: JobOptions) -> JobOptions {
        let d = directives;
        let c = cli;
        JobOptions {
            name: c.name.or(d.name),
            ntasks: c.ntasks.or(d.ntasks),
            ntasks_per_node: c.ntasks_per_node.or(d.ntasks_per_node),
            cpus_per_task: c.cpus_per_task.or(d.cpus_per_task),
            nodes: c.nodes.or(d.nodes),
            memory: c.memory.or(d.memory),
            time_limit: c.time_limit.or(d.time_limit),
            output: c.output.or(d.output),
            error: c.error.or(d.error),
            input: c.input.or(d.input),
            open_mode: c.open_mode.or(d.open_mode),
            error_open_mode: c.error_open_mode.or(d.error_open_mode),
            join: c.join.or(d.join),
            partition: c.partition.or(d.partition),
            array: c.array.or(d.array),
            dependencies: c.dependencies.or(d.dependencies),
            hold: c.hold.or(d.hold),
            reservation: c.reservation.or(d.reservation),
            licenses: c.licenses.or(d.licenses),
            test_only: c.test_only.or(d.test_only),
            export: c.export.or(d.export),
            export_file: c.export_file.or(d.export_file),
            workdir: c.workdir.or(d.workdir),
            workdir_pattern: c.workdir_pattern.or(d.workdir_pattern),
            gpus: c.gpus.or(d.gpus),
            image: c.image.or(d.image),
            binds: d.binds.into_iter().chain(c.binds).collect(),
            container_workdir: c.container_workdir.or(d.container_workdir),
            container_name: c.container_name.or(d.container_name),
            container_entrypoint: c.container_entrypoint.or(d.container_entrypoint),
            container_remap_root: c.container_remap_root.or(d.container_remap_root),
            container_save: c.container_save.or(d.container_save),
            no_home: c.no_home.or(d.no_home),
            host_env: d.host_env.into_iter().chain(c.host_env).collect(),
            nice: c.nice.or(d.nice),
            account: c.account.or(d.account),
            comment: c.comment.or(d.comment),
            mail: c.mail.or(d.mail),
            mail_to: c.mail_to.or(d.mail_to),
            exclusive: c.exclusive.or(d.exclusive),
            overcommit: c.overcommit.or(d.overcommit),
            min_cpus: c.min_cpus.or(d.min_cpus),
            omp_threads: c.omp_threads.or(d.omp_threads),
            start_in_submit_dir: c.start_in_submit_dir.or(d.start_in_submit_dir),
            umask: c.umask.or(d.umask),
            chunks: c.chunks.or(d.chunks),
            place: c.place.or(d.place),
            shell: c.shell.or(d.shell),
            ignore_pbs: c.ignore_pbs.or(d.ignore_pbs),
            uid: c.uid.or(d.uid),
            requeue: c.requeue.or(d.requeue),
            kill_on_invalid_dep: c.kill_on_invalid_dep.or(d.kill_on_invalid_dep),
            signal: c.signal.or(d.signal),
            signal_before: c.signal_before.or(d.signal_before),
            signal_target: c.signal_target.or(d.signal_target),
            begin: c.begin.or(d.begin),
            deadline: c.deadline.or(d.deadline),
            wait: c.wait.or(d.wait),
            constraint: c.constraint.or(d.constraint),
            nodelist: c.nodelist.or(d.nodelist),
            exclude: c.exclude.or(d.exclude),
            candidates: c.candidates.or(d.candidates),
            preferred: c.preferred.or(d.preferred),
            ignored: d.ignored.into_iter().chain(c.ignored).collect(),
        }
    }
}

/// A validated job, defaults resolved: what the controller stores and the scheduler places.
/// (`Default`: an empty one, standing in for a request a record keeps elsewhere until it
/// is filled in; a submission's comes from [`JobRequest::from_options`].)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequest {
    pub name: String,
    /// The scheduler picks a count in this range; unset by the user it is `1..=ntasks`
    /// (as few nodes as fit, as sbatch does), or exactly what `ntasks_per_node` needs.
    pub nodes: NodeRange,
    pub ntasks: u32,
    /// At most this many tasks per node.
    pub ntasks_per_node: Option<u32>,
    pub cpus_per_task: u32,
    /// `-c` was given (SLURM_CPUS_PER_TASK is set then, 1 too, as sbatch sets it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cpus_per_task_given: bool,
    pub memory: Option<Memory>,
    /// Seconds; `None` means the partition's default.
    pub time_limit: Option<u64>,
    /// No limit was asked for (`-t UNLIMITED`): none of its own, and not the partition's
    /// default either, only its maximum.
    #[serde(default)]
    pub no_time_limit: bool,
    /// Output file pattern (see [`pattern`]); defaults to [`default_output`].
    pub output: String,
    /// Error file pattern; `None`: stderr goes to the output file (sbatch's default).
    pub error: Option<String>,
    pub input: Option<String>,
    pub open_mode: OpenMode,
    /// The error file's, where it has one of its own (LSF's `-e`, `-eo`); `None`:
    /// `open_mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_open_mode: Option<OpenMode>,
    pub partition: Option<String>,
    pub array: Option<ArraySpec>,
    pub dependencies: Dependencies,
    pub hold: bool,
    /// The administrator's reservation it runs in (`--reservation`): only on its nodes,
    /// from its start, ending by its end.
    #[serde(default)]
    pub reservation: Option<String>,
    /// Submitted with qsub: its files named as PBS names them (also in a directory that
    /// `-o` or `-e` names: `pbs_default_name`), and the end of its time limit said in PBS's
    /// words.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pbs: bool,
    /// Submitted with bsub: its end said in LSF's words (no slurmstepd line when it is
    /// killed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lsf: bool,
    /// Its script starts in its user's home, as PBS's do without `qsub -d` (or NCI's `-l
    /// wd`); else in its working directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_in_home: bool,
    /// The shell the script runs with (PBS's `-S`), whatever its `#!` line says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Its umask (PBS's `-W umask=`); `None`: its submitter's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// The cluster's licenses it holds while it runs (`-L matlab:2,ansys`), each name
    /// once: it starts only when that many of each are free ([licenses] in the config).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<(String, u32)>,
    /// Checked and its start estimated, not queued (sbatch `--test-only`).
    #[serde(default)]
    pub test_only: bool,
    pub export: Export,
    /// See [`JobOptions::export_file`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_file: Option<String>,
    /// Its variables, as the submitting client read them: the job's over what `export`
    /// gives it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_file_env: Vec<(String, String)>,
    /// `None`: the directory `berth submit` ran in (the caller resolves it).
    pub workdir: Option<String>,
    /// `workdir` is a pattern (bsub -cwd's %J, %I, %U): expanded for each job, and the
    /// directory made at its start, as LSF does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workdir_pattern: bool,
    pub gpus: Option<GpuRequest>,
    /// `None`: no image named; the controller applies its policy (refuse, or a default).
    pub image: Option<ImageRef>,
    pub binds: Vec<String>,
    /// Where the script starts in the image; `None`: the working directory (bound in).
    #[serde(default)]
    pub container_workdir: Option<String>,
    /// The job's container by a name: a step naming it (`srun --container-name`) runs in it.
    #[serde(default)]
    pub container_name: Option<ContainerName>,
    /// The script runs as the argument of the image's ENTRYPOINT, as `docker run` would run
    /// it (pyxis's --container-entrypoint), not by itself.
    #[serde(default)]
    pub container_entrypoint: bool,
    /// The script and the job's steps are root inside its container, the user outside, in
    /// a user namespace of their own (pyxis's --container-remap-root): they may change the
    /// image's files in the job's layer, nothing the user could not.
    #[serde(default)]
    pub container_remap_root: bool,
    /// Once the script ends, its container (the image with what the job changed in it) is
    /// saved to this squashfs file, the user's, on the batch host (pyxis's
    /// --container-save); relative to the working directory.
    #[serde(default)]
    pub container_save: Option<String>,
    /// The user's home is not bound into the container.
    #[serde(default)]
    pub no_home: bool,
    /// Variables whose submission values win over the image's, PATH included.
    #[serde(default)]
    pub host_env: Vec<String>,
    pub nice: i32,
    pub account: Option<String>,
    /// Free text kept with the job (sbatch's `--comment`, bsub's `-Jd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When its owner hears of it by mail, and at which addresses (none: the owner's name).
    #[serde(default)]
    pub mail: MailEvents,
    #[serde(default)]
    pub mail_to: Vec<String>,
    pub exclusive: bool,
    /// Overcommitted (sbatch `-O`): one task's CPUs on each node, shared by all its tasks
    /// there (the job's steps overcommit too).
    #[serde(default)]
    pub overcommit: bool,
    /// At least this many CPUs on each node (sbatch `--mincpus`).
    #[serde(default)]
    pub min_cpus: Option<u32>,
    /// OMP_NUM_THREADS where the job's environment has none of its own (PBS Pro's, from
    /// `ompthreads` or each rank's CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omp_threads: Option<u32>,
    /// The user root submits it as (sbatch `--uid`: a name or a uid), checked by the
    /// controller.
    #[serde(default)]
    pub uid: Option<String>,
    /// `None`: the site's default.
    pub requeue: Option<bool>,
    /// sbatch `--kill-on-invalid-dep=no`: a dependency that can never be satisfied leaves
    /// the job pending (DependencyNeverSatisfied) instead of cancelling it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_invalid_dep: bool,
    #[serde(default)]
    pub signal: Option<WarnSignal>,
    /// The earliest start, as written: the controller resolves it at submission.
    #[serde(default)]
    pub begin: Option<BeginTime>,
    /// The time it must end by, as written (`--deadline`): resolved at submission; a job
    /// that could no longer end by then is not started, and ends DEADLINE.
    #[serde(default)]
    pub deadline: Option<BeginTime>,
    /// The submitting command waits for the job's end (see [`JobOptions::wait`]).
    #[serde(default)]
    pub wait: bool,
    /// Features each node must have: every one of any of these sets (`a&b|c`); empty: any node.
    #[serde(default)]
    pub constraint: Vec<Vec<String>>,
    /// Nodes the job must have, every one (each counts toward its nodes).
    #[serde(default)]
    pub nodelist: Vec<String>,
    /// Nodes it must not have.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The nodes it may have (bsub `-m`); empty: any.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Nodes it prefers, with how much (bsub `-m HOST+N`): the higher, the sooner taken.
    #[serde(default)]
    pub preferred: Vec<(String, u32)>,
    pub ignored: Vec<IgnoredOption>,
}

fn request_err(msg: String) -> JobError {
    JobError::Request(msg)
}

/// PBS's chunks where `place` puts them (see [`Place`]).
fn place_chunks(o: &mut JobOptions) {
    match o.place {
        Some(Place::Free) | None if o.chunks == Some(true) => free_chunks(o),
        // The chunks all on one node, with what each asked of its node.
        Some(Place::Pack) => {
            let chunks = o.nodes.map_or(1, |r| r.min);
            if let Some(t) = o.ntasks_per_node.take() {
                o.ntasks = Some(o.ntasks.unwrap_or(t.saturating_mul(chunks)));
            }
            if let Some(Memory::PerNode(m)) = o.memory {
                o.memory = Some(Memory::PerNode(m.saturating_mul(u64::from(chunks))));
            }
            if let Some(g) = o.gpus.as_mut().filter(|g| g.scope == GpuScope::Node) {
                g.count = g.count.saturating_mul(chunks);
            }
            o.nodes = Some(NodeRange { min: 1, max: 1 });
        }
        _ => {}
    }
}

/// PBS's chunks placed freely (PBS Pro's default for `select`): several on one node where
/// they fit, so the job asks for 1 to N nodes and what a chunk asked of its node is asked
/// per CPU (memory) or per rank (GPUs). Chunks whose CPUs do not divide among their ranks
/// (`--mincpus`, overcommitted), or whose GPUs do not, keep a node each.
fn free_chunks(o: &mut JobOptions) {
    let (Some(chunks), Some(ranks)) = (o.nodes.map(|r| r.min), o.ntasks_per_node) else {
        return;
    };
    let node_gpus = o.gpus.as_ref().filter(|g| g.scope == GpuScope::Node);
    if chunks == 1
        || o.min_cpus.is_some()
        || o.overcommit == Some(true)
        || node_gpus.is_some_and(|g| g.count % ranks != 0)
    {
        return;
    }
    if let Some(g) = o.gpus.as_mut().filter(|g| g.scope == GpuScope::Node) {
        (g.count, g.scope) = (g.count / ranks, GpuScope::Task);
    }
    if let Some(Memory::PerNode(m)) = o.memory {
        let cpus = u64::from(ranks) * u64::from(o.cpus_per_task.unwrap_or(1));
        o.memory = Some(Memory::PerCpu(m.div_ceil(cpus)));
    }
    o.ntasks_per_node = None;
    o.nodes = Some(NodeRange {
        min: 1,
        max: chunks,
    });
}

/// Refuses a count of 0 (`what`: the count's name in the message).
fn positive(what: &str, v: Option<u32>) -> Result<(), JobError> {
    match v {
        Some(0) => Err(request_err(format!("{what} must be at least 1"))),
        _ => Ok(()),
    }
}

/// The task count and node range that these options ask for, with sbatch's defaults for
/// what they leave out (one task per node, or ntasks-per-node on each of the nodes; as
/// few nodes as fit), checked to make sense together.
fn task_shape(
    ntasks: Option<u32>,
    tpn: Option<u32>,
    nodes: Option<NodeRange>,
) -> Result<(u32, NodeRange), JobError> {
    positive("the task count", ntasks)?;
    positive("the tasks per node", tpn)?;
    if let Some(r) = nodes {
        positive("the node count", Some(r.min))?;
        if r.max < r.min {
            return Err(request_err(format!(
                "the node range {}-{} goes down",
                r.min, r.max
            )));
        }
    }
    let ntasks = match (ntasks, tpn, nodes) {
        (Some(n), _, _) => n,
        (None, Some(t), Some(r)) => t.checked_mul(r.min).ok_or_else(|| {
            request_err(format!("{} nodes of {t} tasks are too many tasks", r.min))
        })?,
        (None, Some(t), None) => t,
        (None, None, Some(r)) => r.min,
        (None, None, None) => 1,
    };
    let nodes = match (nodes, tpn) {
        (Some(r), _) => r,
        (None, Some(t)) => {
            let n = ntasks.div_ceil(t);
            NodeRange { min: n, max: n }
        }
        (None, None) => NodeRange {
            min: 1,
            max: ntasks,
        },
    };
    if ntasks < nodes.min {
        return Err(request_err(format!(
            "{ntasks} task(s) cannot fill {} nodes: each node runs at least one task (ask for more tasks or fewer nodes)",
            nodes.min
        )));
    }
    if let Some(t) = tpn {
        if u64::from(ntasks) > u64::from(t) * u64::from(nodes.max) {
            return Err(request_err(format!(
                "{ntasks} tasks do not fit on {} node(s) at {t} tasks per node",
                nodes.max
            )));
        }
    }
    Ok((ntasks, nodes))
}

/// Refuses a memory size of 0, memory per GPU without GPUs, and a GPU count of 0.
fn check_memory(memory: Option<Memory>, gpus: Option<&GpuRequest>) -> Result<(), JobError> {
    if let Some(Memory::PerNode(0) | Memory::PerCpu(0) | Memory::PerJob(0) | Memory::PerGpu(0)) =
        memory
    {
        return Err(request_err("the memory size must be positive".into()));
    }
    if matches!(memory, Some(Memory::PerGpu(_))) && gpus.is_none() {
        return Err(request_err(
            "--mem-per-gpu needs GPUs: ask for them with --gpus, --gpus-per-node, --gpus-per-task or --gres=gpu:N".into(),
        ));
    }
    if gpus.is_some_and(|g| g.count == 0) {
        return Err(request_err("the GPU count must be at least 1".into()));
    }
    Ok(())
}

/// A script's directives with the command line's options over them (`cli` wins).
fn merged(script: &str, cli: JobOptions) -> Result<JobOptions, JobError> {
    let parsed = parse_script_with(script, cli.ignore_pbs == Some(true))?;
    Ok(JobOptions::merge(parsed.options, cli))
}

impl JobRequest {
    /// Its licenses as Slurm writes them (`matlab:2,ansys:1`); `None` without any.
    pub fn licenses_text(&self) -> Option<String> {
        let each: Vec<String> = (self.licenses.iter())
            .map(|(name, n)| format!("{name}:{n}"))
            .collect();
        (!each.is_empty()).then(|| each.join(","))
    }

    /// Sets the limit the job asked for, as [`JobOptions::time_limit`] holds it:
    /// [`UNLIMITED_TIME`] is none of its own and [`Self::no_time_limit`].
    pub fn ask_time_limit(&mut self, asked: Option<u64>) {
        self.no_time_limit = asked == Some(UNLIMITED_TIME);
        self.time_limit = asked.filter(|_| !self.no_time_limit);
    }

    /// A pending job's new shape and files (`scontrol update NumTasks=8`, `qalter -l
    /// select=2:ncpus=4`, `bmod -n 4 -o out`): what `o` names replaces the request's, and
    /// what follows from it is derived again as at a submission. Node counts the request
    /// had by default, and a task count it had from its nodes, follow the new counts
    /// (`-N 2` updated to 4 nodes runs 4 tasks); a new PBS chunk statement replaces the old
    /// one whole. Only these fields are read; the caller refuses the others.
    pub fn reshape(&mut self, o: &JobOptions) -> Result<(), JobError> {
        if o.place.is_some() && o.chunks.is_none() {
            return Err(request_err(
                "a job's chunks are placed as they were asked for (place=pack, scatter, free): change its placement with its chunks (-l select=...)".into(),
            ));
        }
        let mut o = o.clone();
        place_chunks(&mut o);
        if o.chunks == Some(true) {
            self.min_cpus = None;
            self.overcommit = false;
            self.omp_threads = None;
            if matches!(self.memory, Some(Memory::PerNode(_))) {
                self.memory = None;
            }
            if self
                .gpus
                .as_ref()
                .is_some_and(|g| g.scope == GpuScope::Node)
            {
                self.gpus = None;
            }
        }
        if o.ntasks.is_some() || o.ntasks_per_node.is_some() || o.nodes.is_some() {
            let tpn = o.ntasks_per_node.or(self.ntasks_per_node);
            let defaults = |ntasks, nodes| task_shape(ntasks, self.ntasks_per_node, nodes).ok();
            // What the request had of its own, as against what followed from the rest.
            let nodes = match defaults(Some(self.ntasks), None) {
                Some((_, derived)) if derived == self.nodes => None,
                _ => Some(self.nodes),
            };
            let ntasks = match defaults(None, Some(self.nodes)) {
                Some((derived, _)) if derived == self.ntasks => None,
                _ => Some(self.ntasks),
            };
            (self.ntasks, self.nodes) = task_shape(o.ntasks.or(ntasks), tpn, o.nodes.or(nodes))?;
            self.ntasks_per_node = tpn;
        }
        positive("the CPUs per task", o.cpus_per_task)?;
        self.cpus_per_task = o.cpus_per_task.unwrap_or(self.cpus_per_task);
        self.cpus_per_task_given |= o.cpus_per_task.is_some();
        self.memory = o.memory.or(self.memory);
        self.gpus = o.gpus.clone().or(self.gpus.take());
        check_memory(self.memory, self.gpus.as_ref())?;
        self.min_cpus = o.min_cpus.or(self.min_cpus);
        self.omp_threads = o.omp_threads.or(self.omp_threads);
        self.overcommit = o.overcommit.unwrap_or(self.overcommit);
        self.exclusive = o.exclusive.unwrap_or(self.exclusive);
        // Its files: PBS's default names where a directory is named (`-o logs/`).
        let array = self.array.is_some();
        let pbs_file = |path: &str, stream| match path.ends_with('/') && self.pbs {
            true => path.to_string() + &pattern::pbs_default_name(&self.name, stream, array),
            false => path.to_string(),
        };
        let output = o.output.as_deref().map(|p| pbs_file(p, 'o'));
        let error = o.error.as_deref().map(|p| pbs_file(p, 'e'));
        let default_error = || pattern::pbs_default_name(&self.name, 'e', array);
        self.output = output.unwrap_or(std::mem::take(&mut self.output));
        self.error = error.or(self.error.take());
        match o.join {
            Some(Join::IntoOutput) => self.error = None,
            // Both into the error file, which is then the job's only one.
            Some(Join::IntoError) => {
                self.output = self.error.take().unwrap_or_else(default_error);
            }
            Some(Join::Apart) if self.error.is_none() && self.pbs => {
                self.error = Some(default_error());
            }
            _ => {}
        }
        self.input = o.input.clone().or(self.input.take());
        self.open_mode = o.open_mode.unwrap_or(self.open_mode);
        self.error_open_mode = o.error_open_mode.or(self.error_open_mode);
        self.mail = o.mail.clone().unwrap_or(std::mem::take(&mut self.mail));
        self.mail_to = o
            .mail_to
            .clone()
            .unwrap_or(std::mem::take(&mut self.mail_to));
        self.shell = o.shell.clone().or(self.shell.take());
        Ok(())
    }

    /// Parses `script`, lays the command-line options over its directives and validates.
    /// `default_name` names the job when nothing else does (sbatch uses the script's name).
    pub fn from_script(
        script: &str,
        cli: JobOptions,
        default_name: &str,
    ) -> Result<JobRequest, JobError> {
        JobRequest::from_options(merged(script, cli)?, default_name)
    }

    /// As [`JobRequest::from_script`], with sbatch's own output file where neither names
    /// one ([`slurm_default_output`]): a job typed as sbatch.
    pub fn from_sbatch_script(
        script: &str,
        cli: JobOptions,
        default_name: &str,
    ) -> Result<JobRequest, JobError> {
        let mut o = merged(script, cli)?;
        let array = o.array.is_some();
        o.output
            .get_or_insert_with(|| slurm_default_output(array).into());
        JobRequest::from_options(o, default_name)
    }

    /// As [`JobRequest::from_script`], with qsub's defaults for what neither names: the
    /// output in `NAME.oJOBID` and the errors in `NAME.eJOBID` (unless `-j oe` joins them),
    /// where sbatch's would put both into `berth-JOBID.out`; those names too in a directory
    /// named with a trailing `/`.
    pub fn from_qsub_script(
        script: &str,
        cli: JobOptions,
        default_name: &str,
    ) -> Result<JobRequest, JobError> {
        let mut script = parse_script_with(script, cli.ignore_pbs == Some(true))?.options;
        let mut cli = cli;
        // qsub's -V and -v are options of their own: the command line's add to the
        // script's (its -v VAR=VALUE winning), where sbatch's --export replaces.
        // (Taken from the script only where the line has its own: otherwise the script's
        // is the job's, below.)
        if let Some(line) = cli.export.as_mut() {
            if let Some(script) = script.export.take() {
                line.all |= script.all;
                let named: Vec<String> = line.vars.iter().map(|v| v.name.clone()).collect();
                line.vars
                    .extend(script.vars.into_iter().filter(|v| !named.contains(&v.name)));
            }
        }
        // qsub's -l select= (or nodes=) replaces the script's whole chunk statement: what
        // only a chunk says (its node's CPUs, memory and GPUs) is not kept from the script's.
        if cli.chunks == Some(true) && script.chunks == Some(true) {
            (script.min_cpus, script.overcommit) = (None, None);
            if matches!(script.memory, Some(Memory::PerNode(_))) {
                script.memory = None;
            }
            if script
                .gpus
                .as_ref()
                .is_some_and(|g| g.scope == GpuScope::Node)
            {
                script.gpus = None;
            }
        }
        let mut o = JobOptions::merge(script, cli);
        let name = o.name.clone().unwrap_or_else(|| default_name.to_string());
        let array = o.array.is_some();
        // None named, or a directory (a path ending in `/`): the default name, there.
        let file = |path: Option<String>, stream| match path {
            Some(p) if !p.ends_with('/') => p,
            dir => dir.unwrap_or_default() + &pbs_default_name(&name, stream, array),
        };
        match o.join {
            // Both streams into the error file, which the job's output then is.
            Some(Join::IntoError) => o.output = Some(file(o.error.take(), 'e')),
            Some(Join::IntoOutput) => o.output = Some(file(o.output.take(), 'o')),
            _ => {
                o.output = Some(file(o.output.take(), 'o'));
                o.error = Some(file(o.error.take(), 'e'));
            }
        }
        let start_in_home = o.workdir.is_none() && o.start_in_submit_dir != Some(true);
        Ok(JobRequest {
            pbs: true,
            start_in_home,
            ..JobRequest::from_options(o, default_name)?
        })
    }

    /// Resolves defaults and checks the options make sense together.
    pub fn from_options(mut o: JobOptions, default_name: &str) -> Result<JobRequest, JobError> {
        place_chunks(&mut o);
        let tpn = o.ntasks_per_node;
        let (ntasks, nodes) = task_shape(o.ntasks, tpn, o.nodes)?;
        positive("the CPUs per task", o.cpus_per_task)?;
        let cpus_per_task = o.cpus_per_task.unwrap_or(1);
        check_memory(o.memory, o.gpus.as_ref())?;
        if o.time_limit == Some(0) {
            return Err(request_err("the time limit must be positive".into()));
        }
        if let Some(a) = &o.array {
            a.validate()
                .map_err(|why| request_err(format!("array {a}: expected {why}")))?;
        }
        let dependencies = o.dependencies.unwrap_or_default();
        if dependencies.jobs.iter().any(|d| d.job == 0) {
            return Err(request_err("dependency job ids start at 1".into()));
        }
        for d in &dependencies.jobs {
            match (d.kind, d.array_index) {
                (DependencyKind::AfterCorr, _) if o.array.is_none() => {
                    return Err(request_err(format!(
                        "aftercorr:{} is for an array job (--array): each task waits for the task of job {} with its index",
                        d.job, d.job
                    )))
                }
                (DependencyKind::AfterCorr, Some(i)) => {
                    return Err(request_err(format!(
                        "aftercorr names a whole array job, not its task {}_{i}",
                        d.job
                    )))
                }
                _ => {}
            }
        }
        let name = o
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| match default_name {
                "" => "berth".to_string(),
                n => n.to_string(),
            });
        if name.chars().any(char::is_control) {
            return Err(request_err(format!(
                "the job name {name:?} holds control characters"
            )));
        }
        let signal = match (o.signal, o.signal_before) {
            (None, None) => None,
            (Some(signal), Some(before)) => Some(WarnSignal {
                signal,
                before,
                target: o.signal_target.unwrap_or(SignalTarget::Steps),
            }),
            (Some(_), None) => {
                return Err(request_err(
                    "a warning signal needs its time before the time limit (bsub -wt)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(request_err(
                    "a warning time needs the signal to send (bsub -wa)".into(),
                ))
            }
        };
        let join = matches!(o.join, Some(Join::IntoOutput | Join::IntoError));
        let mut request = JobRequest {
            name,
            nodes,
            ntasks,
            ntasks_per_node: tpn,
            cpus_per_task,
            cpus_per_task_given: o.cpus_per_task.is_some(),
            memory: o.memory,
            time_limit: None,
            no_time_limit: false,
            output: o
                .output
                .unwrap_or_else(|| default_output(o.array.is_some()).to_string()),
            error: if join { None } else { o.error },
            input: o.input,
            open_mode: o.open_mode.unwrap_or(OpenMode::Truncate),
            error_open_mode: o.error_open_mode,
            partition: o.partition,
            array: o.array,
            dependencies,
            hold: o.hold.unwrap_or(false),
            reservation: o.reservation,
            licenses: o.licenses.unwrap_or_default(),
            shell: o.shell,
            umask: o.umask,
            pbs: false,
            lsf: false,
            start_in_home: false,
            test_only: o.test_only.unwrap_or(false),
            export: o.export.unwrap_or_default(),
            export_file: o.export_file,
            export_file_env: Vec::new(),
            workdir: o.workdir,
            workdir_pattern: o.workdir_pattern.unwrap_or(false),
            gpus: o.gpus,
            image: o.image,
            binds: o.binds,
            container_workdir: o.container_workdir,
            container_name: o.container_name,
            container_entrypoint: o.container_entrypoint.unwrap_or(false),
            container_remap_root: o.container_remap_root.unwrap_or(false),
            container_save: o.container_save,
            no_home: o.no_home.unwrap_or(false),
            host_env: o.host_env,
            nice: o.nice.unwrap_or(0),
            account: o.account,
            comment: o.comment,
            mail: o.mail.unwrap_or_default(),
            mail_to: o.mail_to.unwrap_or_default(),
            exclusive: o.exclusive.unwrap_or(false),
            overcommit: o.overcommit.unwrap_or(false),
            min_cpus: o.min_cpus,
            omp_threads: o.omp_threads,
            uid: o.uid,
            requeue: o.requeue,
            keep_invalid_dep: o.kill_on_invalid_dep == Some(false),
            signal,
            begin: o.begin,
            deadline: o.deadline,
            wait: o.wait.unwrap_or(false),
            constraint: o.constraint.unwrap_or_default(),
            nodelist: o.nodelist.unwrap_or_default(),
            exclude: o.exclude.unwrap_or_default(),
            candidates: o.candidates.unwrap_or_default(),
            preferred: o.preferred.unwrap_or_default(),
            ignored: o.ignored,
        };
        request.ask_time_limit(o.time_limit);
        request.check_nodelist()?;
        Ok(request)
    }

    /// Every node `--nodelist` names counts toward the job's nodes: no more than it may have.
    pub fn check_nodelist(&self) -> Result<(), JobError> {
        let named = self.nodelist.len();
        if named > self.nodes.max as usize {
            return Err(request_err(format!(
                "{named} nodes are named (--nodelist) but the job runs on at most {} (ask for -N {named} or more tasks)",
                self.nodes.max
            )));
        }
        Ok(())
    }

    /// CPUs of the whole job (of one element, for an array), on its fewest nodes.
    pub fn total_cpus(&self) -> u64 {
        match self.tasks_per_node(self.nodes.min) {
            Some(layout) => layout.iter().map(|&t| self.cpus_on_node(t)).sum(),
            None => u64::from(self.ntasks) * u64::from(self.cpus_per_task),
        }
    }

    /// Number of array elements; 1 for a plain job.
    pub fn array_len(&self) -> usize {
        self.array.as_ref().map_or(1, ArraySpec::len)
    }

    /// How the tasks spread over `nodes` nodes, as evenly as they go (sbatch's block
    /// distribution, first nodes fuller); `None` if the request cannot run on that many.
    pub fn tasks_per_node(&self, nodes: u32) -> Option<Vec<u32>> {
        if nodes < self.nodes.min || nodes > self.nodes.max || nodes > self.ntasks {
            return None;
        }
        let (base, extra) = (self.ntasks / nodes, self.ntasks % nodes);
        let layout: Vec<u32> = (0..nodes).map(|i| base + u32::from(i < extra)).collect();
        let fits = self
            .ntasks_per_node
            .is_none_or(|t| layout.iter().all(|n| *n <= t));
        fits.then_some(layout)
    }

    /// CPUs a node running `tasks` of this job's tasks needs: one task's when the job is
    /// overcommitted (sbatch -O: its tasks share them), and at least `--mincpus`.
    pub fn cpus_on_node(&self, tasks: u32) -> u64 {
        let tasks = match self.overcommit {
            true => 1,
            false => tasks,
        };
        (u64::from(tasks) * u64::from(self.cpus_per_task)).max(self.min_cpus.map_or(0, u64::from))
    }

    /// Bytes of memory a node running `tasks` of this job's tasks needs; a per-job size is
    /// shared out in proportion to tasks, rounded up; a per-GPU one counts the GPUs the node
    /// gives the job on its fewest nodes. `None`: none asked for, or all of the node's.
    pub fn memory_on_node(&self, tasks: u32) -> Option<u64> {
        Some(match self.memory? {
            Memory::WholeNode => return None,
            Memory::PerNode(b) => b,
            Memory::PerGpu(b) => {
                b.saturating_mul(u64::from(self.gpus_on_node(tasks, self.nodes.min)))
            }
            Memory::PerCpu(b) => b.saturating_mul(self.cpus_on_node(tasks)),
            Memory::PerJob(b) => {
                let share = u128::from(b) * u128::from(tasks);
                u64::try_from(share.div_ceil(u128::from(self.ntasks))).unwrap_or(u64::MAX)
            }
        })
    }

    /// GPUs a node running `tasks` tasks needs, when the job runs on `nodes` nodes; a
    /// per-job count is shared out evenly, rounded up.
    pub fn gpus_on_node(&self, tasks: u32, nodes: u32) -> u32 {
        match &self.gpus {
            None => 0,
            Some(g) => match g.scope {
                GpuScope::Node => g.count,
                GpuScope::Task => g.count.saturating_mul(tasks),
                GpuScope::Job => g.count.div_ceil(nodes.max(1)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request submitted with `args` (sbatch's), then updated with `update` in `family`'s words.
    fn reshaped(args: &[&str], family: Family, update: &[&str]) -> Result<JobRequest, JobError> {
        let mut r = JobRequest::from_options(parse_args(args).unwrap(), "job").unwrap();
        r.reshape(&parse_args_as(family, update).unwrap())?;
        Ok(r)
    }

    #[test]
    fn a_pending_jobs_shape_changes_as_a_submission_would_have_it() {
        let shape = |r: JobRequest| (r.ntasks, r.nodes.min, r.nodes.max, r.cpus_per_task);
        let slurm = |args: &[&str], update: &[&str]| reshaped(args, Family::Slurm, update);
        // Nodes it had by default follow the new task count; its own stay.
        assert_eq!(
            shape(slurm(&["-n", "2"], &["-n", "8"]).unwrap()),
            (8, 1, 8, 1)
        );
        assert_eq!(
            shape(slurm(&["-n", "4", "-N", "2"], &["-n", "8"]).unwrap()),
            (8, 2, 2, 1)
        );
        // A task count it had from its nodes follows them (sbatch -N 2: two tasks).
        assert_eq!(
            shape(slurm(&["-N", "2"], &["-N", "3"]).unwrap()),
            (3, 3, 3, 1)
        );
        assert_eq!(
            shape(slurm(&["-n", "1"], &["-N", "2"]).unwrap()),
            (2, 2, 2, 1)
        );
        assert_eq!(
            shape(slurm(&["-n", "4", "--ntasks-per-node", "2"], &["-n", "6"]).unwrap()),
            (6, 3, 3, 1)
        );
        assert_eq!(
            shape(slurm(&["-n", "2"], &["-c", "4"]).unwrap()),
            (2, 1, 2, 4)
        );
        // Refused as at a submission.
        let refused = |args: &[&str], update: &[&str]| slurm(args, update).unwrap_err().to_string();
        assert!(refused(&["-n", "4"], &["-N", "5"]).contains("4 task(s) cannot fill 5 nodes"));
        assert!(refused(&[], &["--mem-per-gpu", "1G"]).contains("needs GPUs"));
        // Its memory and GPUs replace the old; what was not named stays.
        let r = slurm(
            &["--mem", "1G", "--gpus-per-node", "1"],
            &["--mem-per-cpu", "2G"],
        )
        .unwrap();
        assert_eq!(r.memory, Some(Memory::PerCpu(2 << 30)));
        assert_eq!(r.gpus.map(|g| g.count), Some(1));
    }

    #[test]
    fn a_new_pbs_chunk_statement_replaces_the_old_one_whole() {
        let mut r = JobRequest::from_qsub_script(
            "#!/bin/sh\n#PBS -l select=2:ncpus=6:mpiprocs=4:mem=2gb:ngpus=1\n",
            JobOptions::default(),
            "job",
        )
        .unwrap();
        assert_eq!((r.ntasks, r.min_cpus, r.overcommit), (8, Some(6), false));
        let update = parse_args_as(Family::Pbs, &["-l", "select=3:ncpus=2:mpiprocs=2"]).unwrap();
        r.reshape(&update).unwrap();
        // (Placed freely, as PBS Pro's select is by default.)
        assert_eq!(
            (r.ntasks, r.nodes.min, r.nodes.max, r.cpus_per_task),
            (6, 1, 3, 1)
        );
        assert_eq!((r.min_cpus, r.memory, &r.gpus), (None, None, &None));
        let pack = parse_args_as(Family::Pbs, &["-l", "place=pack"]).unwrap();
        let refused = r.reshape(&pack).unwrap_err().to_string();
        assert!(refused.contains("with its chunks"), "{refused}");
        let pack = parse_args_as(Family::Pbs, &["-l", "select=2:ncpus=1,place=pack"]).unwrap();
        r.reshape(&pack).unwrap();
        assert_eq!((r.ntasks, r.nodes.min, r.nodes.max), (2, 1, 1));
    }

    #[test]
    fn a_pending_jobs_files_change_with_pbs_names_in_a_directory() {
        let mut r = JobRequest::from_qsub_script(
            "#!/bin/sh\n#PBS -N sim\n#PBS -j oe\n",
            JobOptions::default(),
            "job",
        )
        .unwrap();
        assert_eq!((r.output.as_str(), r.error.as_deref()), ("sim.o%j", None));
        // Apart again: the error file gets PBS's name; a directory gets the name in it.
        let update = parse_args_as(Family::Pbs, &["-j", "n", "-o", "logs/"]).unwrap();
        r.reshape(&update).unwrap();
        assert_eq!(
            (r.output.as_str(), r.error.as_deref()),
            ("logs/sim.o%j", Some("sim.e%j"))
        );
        // Both into the error file.
        r.reshape(&parse_args_as(Family::Pbs, &["-j", "eo"]).unwrap())
            .unwrap();
        assert_eq!((r.output.as_str(), r.error.as_deref()), ("sim.e%j", None));
        // sbatch's words: a file of its own for the errors, and mail.
        let r = reshaped(&[], Family::Slurm, &["-e", "err-%j", "--mail-user", "a@b"]).unwrap();
        assert_eq!(
            (r.output.as_str(), r.error.as_deref()),
            ("berth-%j.out", Some("err-%j"))
        );
        assert_eq!(r.mail_to, ["a@b"]);
    }

    #[test]
    fn qsubs_v_and_capital_v_add_up() {
        let script = "#!/bin/sh\n#PBS -v FOO=bar,KEEP=script\n";
        let cli = parse_args_as(Family::Pbs, &["-V", "-v", "KEEP=line"]).unwrap();
        let r = JobRequest::from_qsub_script(script, cli, "x.sh").unwrap();
        assert!(r.export.all);
        let vars: Vec<(&str, Option<&str>)> = r
            .export
            .vars
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_deref()))
            .collect();
        assert_eq!(vars, [("KEEP", Some("line")), ("FOO", Some("bar"))]);
        // A line without -v or -V: the script's are the job's.
        let r = JobRequest::from_qsub_script(script, JobOptions::default(), "x.sh").unwrap();
        assert!(!r.export.all);
        assert_eq!(r.export.vars.len(), 2);
    }

    /// A PBS job starts in its user's home, unless -d says where or NCI's -l wd has it
    /// start where it was submitted; -j eo joins both streams into the error file.
    #[test]
    fn qsubs_jobs_start_in_home_and_join_as_asked() {
        let qsub = |script: &str, args: &[&str]| {
            let cli = parse_args_as(Family::Pbs, args).unwrap();
            JobRequest::from_qsub_script(script, cli, "x.sh").unwrap()
        };
        assert!(qsub("#PBS -N run\n", &[]).start_in_home);
        assert!(!qsub("#PBS -l wd\n", &[]).start_in_home);
        assert!(!qsub("", &["-d", "/scratch"]).start_in_home);
        let joined = qsub("#PBS -N run -j eo\n", &[]);
        assert_eq!((joined.output.as_str(), joined.error), ("run.e%j", None));
        let bad = parse_args_as(Family::Pbs, &["-W", "umask=0999"]).unwrap_err();
        assert!(bad.to_string().contains("an octal mask"), "{bad}");
    }

    /// qsub's line over its script: its umask, and its select, which replaces the script's
    /// whole select.
    #[test]
    fn qsubs_line_wins_over_its_script() {
        let qsub = |script: &str, args: &[&str]| {
            let cli = parse_args_as(Family::Pbs, args).unwrap();
            JobRequest::from_qsub_script(script, cli, "x.sh").unwrap()
        };
        // -W umask=: the job's own, the command line's over the script's.
        assert_eq!(qsub("#PBS -W umask=077\n", &[]).umask, Some(0o77));
        assert_eq!(
            qsub("#PBS -W umask=077\n", &["-W", "umask=027"]).umask,
            Some(0o27)
        );
        assert_eq!(qsub("", &[]).umask, None);
        // The line's select replaces the script's whole select, its memory and GPUs too;
        // a job-wide -l mem stays.
        let script = "#PBS -l select=2:ncpus=4:mem=8gb:ngpus=1\n";
        let line = qsub(script, &["-l", "select=1:ncpus=2"]);
        assert_eq!(
            (line.nodes.min, line.ntasks, line.memory, line.gpus),
            (1, 1, None, None)
        );
        let kept = qsub("#PBS -l mem=2gb\n", &["-l", "select=1:ncpus=2"]);
        assert_eq!(kept.memory, Some(Memory::PerJob(2 << 30)));
        let own = qsub(script, &["-l", "select=1:ncpus=2:mem=1gb"]);
        assert_eq!(own.memory, Some(Memory::PerNode(1 << 30)));
        let uneven = "#PBS -l select=1:ncpus=3:mpiprocs=2\n";
        assert_eq!(qsub(uneven, &["-l", "select=1:ncpus=2"]).min_cpus, None);
    }

    #[test]
    fn qsub_names_its_files_in_a_directory_and_by_default() {
        let qsub = |script: &str, args: &[&str]| {
            let cli = parse_args_as(Family::Pbs, args).unwrap();
            let r = JobRequest::from_qsub_script(script, cli, "x.sh").unwrap();
            (Some(r.output), r.error)
        };
        let out = |s: &str| Some(s.to_string());
        assert_eq!(qsub("#PBS -N run\n", &[]), (out("run.o%j"), out("run.e%j")));
        assert_eq!(
            qsub("#PBS -o logs/ -e /tmp/err/\n", &["-J", "1-3"]),
            (out("logs/x.sh.o%A.%a"), out("/tmp/err/x.sh.e%A.%a"))
        );
        assert_eq!(
            qsub("#PBS -j oe -o out/\n", &[]),
            (out("out/x.sh.o%j"), None)
        );
        assert_eq!(
            qsub("#PBS -o here.log\n", &[]),
            (out("here.log"), out("x.sh.e%j"))
        );
        // PBS has no patterns: a '%' is written as it is; PBS Pro's ^array_index^ is the
        // task's index.
        assert_eq!(
            qsub(
                "#PBS -o o_%j_%%.txt -e host:e^array_index^\n",
                &["-J", "1-2"]
            ),
            (out("o_%%j_%%%%.txt"), out("e%a"))
        );
    }

    #[test]
    fn paths_are_told_from_names() {
        for path in [
            "app.sif",
            "./busybox",
            "/data/app.sqsh",
            "../x",
            "lab/app.tar.gz",
            "x.img",
        ] {
            assert!(image_is_file(path), "{path}");
        }
        for name in [
            "busybox",
            "lab/app:1",
            "registry.local:5000/lab/app:2.3",
            "sha256:ab12",
        ] {
            assert!(!image_is_file(name), "{name}");
        }
    }

    fn opts() -> JobOptions {
        JobOptions::default()
    }

    #[test]
    fn defaults() {
        let r = JobRequest::from_options(opts(), "job.sh").unwrap();
        assert_eq!(r.name, "job.sh");
        assert_eq!((r.ntasks, r.cpus_per_task), (1, 1));
        assert_eq!(r.nodes, NodeRange { min: 1, max: 1 });
        assert_eq!(r.output, "berth-%j.out");
        assert_eq!(r.error, None);
        assert_eq!(r.time_limit, None);
        assert_eq!(r.export, Export::default());
        assert_eq!(r.open_mode, OpenMode::Truncate);
        assert_eq!(r.total_cpus(), 1);
        assert_eq!(r.array_len(), 1);
        assert_eq!(JobRequest::from_options(opts(), "").unwrap().name, "berth");
    }

    /// Typed as sbatch: Slurm's own file, but one the script or the line names, berth's
    /// default name included.
    #[test]
    fn sbatch_names_its_own_output_file() {
        let sbatch = |script: &str, line: &[&str]| {
            let cli = parse_args(line).unwrap();
            JobRequest::from_sbatch_script(script, cli, "j")
                .unwrap()
                .output
        };
        assert_eq!(sbatch("#!/bin/sh\n", &[]), "slurm-%j.out");
        assert_eq!(sbatch("#!/bin/sh\n", &["--array=1-2"]), "slurm-%A_%a.out");
        assert_eq!(
            sbatch("#!/bin/sh\n#SBATCH -o berth-%j.out\n", &[]),
            "berth-%j.out"
        );
        assert_eq!(
            sbatch("#!/bin/sh\n", &["-o", "berth-%j.out"]),
            "berth-%j.out"
        );
    }

    #[test]
    fn task_geometry() {
        let geo = |ntasks, tpn, nodes: Option<(u32, u32)>| {
            JobRequest::from_options(
                JobOptions {
                    ntasks,
                    ntasks_per_node: tpn,
                    nodes: nodes.map(|(min, max)| NodeRange { min, max }),
                    ..opts()
                },
                "j",
            )
        };
        // -N 2 --ntasks-per-node=4: 8 tasks on exactly 2 nodes.
        let r = geo(None, Some(4), Some((2, 2))).unwrap();
        assert_eq!((r.ntasks, r.nodes.min, r.nodes.max), (8, 2, 2));
        assert_eq!(r.tasks_per_node(2), Some(vec![4, 4]));
        // -N 3: one task per node.
        assert_eq!(geo(None, None, Some((3, 3))).unwrap().ntasks, 3);
        // -n 8 alone: anywhere from 1 to 8 nodes.
        let r = geo(Some(8), None, None).unwrap();
        assert_eq!(r.nodes, NodeRange { min: 1, max: 8 });
        assert_eq!(r.tasks_per_node(3), Some(vec![3, 3, 2]));
        assert_eq!(r.tasks_per_node(9), None);
        // -n 10 --ntasks-per-node=4: 3 nodes.
        let r = geo(Some(10), Some(4), None).unwrap();
        assert_eq!(r.nodes, NodeRange { min: 3, max: 3 });
        assert_eq!(r.tasks_per_node(3), Some(vec![4, 3, 3]));

        let err = |e: Result<JobRequest, JobError>| e.unwrap_err().to_string();
        assert!(err(geo(Some(2), None, Some((4, 4)))).contains("cannot fill 4 nodes"));
        assert!(err(geo(Some(9), Some(4), Some((2, 2)))).contains("do not fit on 2 node(s)"));
        assert!(err(geo(Some(0), None, None)).contains("task count must be at least 1"));
        assert!(err(geo(None, None, Some((3, 2)))).contains("goes down"));
    }

    #[test]
    fn per_node_views() {
        let r = JobRequest::from_options(
            JobOptions {
                ntasks: Some(8),
                cpus_per_task: Some(2),
                memory: Some(Memory::PerCpu(1 << 30)),
                gpus: Some(GpuRequest {
                    count: 3,
                    scope: GpuScope::Job,
                    model: None,
                }),
                ..opts()
            },
            "j",
        )
        .unwrap();
        assert_eq!(r.total_cpus(), 16);
        assert_eq!(r.cpus_on_node(4), 8);
        assert_eq!(r.memory_on_node(4), Some(8 << 30));
        assert_eq!(r.gpus_on_node(4, 2), 2);
        let r = JobRequest {
            memory: Some(Memory::PerJob(10)),
            ..r
        };
        assert_eq!(r.memory_on_node(3), Some(4));
        // Overcommitted: one task's CPUs on a node, and per-CPU memory for those.
        let r = JobRequest {
            overcommit: true,
            memory: Some(Memory::PerCpu(1 << 30)),
            nodes: NodeRange { min: 2, max: 2 },
            ..r
        };
        assert_eq!((r.cpus_on_node(4), r.total_cpus()), (2, 4));
        assert_eq!(r.memory_on_node(4), Some(2 << 30));
    }

    #[test]
    fn cli_overrides_directives() {
        let dir = JobOptions {
            name: Some("script".into()),
            ntasks: Some(8),
            time_limit: Some(300),
            binds: vec!["/data".into()],
            ..opts()
        };
        let cli = JobOptions {
            name: Some("cli".into()),
            binds: vec!["/scratch".into()],
            ..opts()
        };
        let m = JobOptions::merge(dir, cli);
        assert_eq!(m.name.as_deref(), Some("cli"));
        assert_eq!(m.ntasks, Some(8));
        assert_eq!(m.time_limit, Some(300));
        assert_eq!(m.binds, vec!["/data", "/scratch"]);
    }

    #[test]
    fn rejects_nonsense_built_in_code() {
        let bad = [
            JobOptions {
                memory: Some(Memory::PerNode(0)),
                ..opts()
            },
            JobOptions {
                time_limit: Some(0),
                ..opts()
            },
            JobOptions {
                array: Some(ArraySpec {
                    ranges: vec![ArrayRange {
                        start: 5,
                        end: 1,
                        step: 1,
                    }],
                    max_running: None,
                }),
                ..opts()
            },
            JobOptions {
                dependencies: Some(Dependencies {
                    jobs: vec![JobDependency {
                        delay: None,
                        kind: DependencyKind::AfterOk,
                        job: 0,
                        array_index: None,
                        each: false,
                        count: None,
                        exit_code: None,
                    }],
                    ..Default::default()
                }),
                ..opts()
            },
            JobOptions {
                name: Some("a\nb".into()),
                ..opts()
            },
        ];
        for o in bad {
            assert!(JobRequest::from_options(o.clone(), "j").is_err(), "{o:?}");
        }
    }
}
