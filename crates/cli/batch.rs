//! The batch system's commands: `berth up`, `submit`, `queue`, `show`, `cancel`, `history`.

use crate::client::request;
use crate::settings::{is_root, Settings};
use anyhow::{bail, Context, Result};
use berth_api::{
    CancelRequest, JobInfo, JobUsage, OptionSyntax, SignalTarget, SubmitRequest, SubmitResponse,
};
use clap::Args;
use std::collections::hash_map::{Entry, HashMap};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where jobs and the state database live [default: the image store's directory]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The API socket [default: $BERTH_SOCKET, else /run/berth/berth.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Run in the background: log to STATE_DIR/berth.log, pid in STATE_DIR/berth.pid
    #[arg(long)]
    detach: bool,
    /// Also serve the API on this TCP address (e.g. 0.0.0.0:6817); every request there
    /// needs a token from `berth token`
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// This machine's node features, which jobs ask for with --constraint (berth up only)
    #[arg(long, value_name = "FEATURE,...", value_delimiter = ',')]
    features: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Whose token [default: yours; root may name any user]
    #[arg(short, long)]
    user: Option<String>,
    /// How long it works, in Slurm's time format (MM, HH:MM:SS, D-HH) [default: 1 day]
    #[arg(long, value_name = "TIME")]
    lifetime: Option<String>,
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Print only the job id
    #[arg(long)]
    parsable: bool,
    /// (berth answering as sbatch: Slurm's default output file, slurm-%j.out)
    #[arg(long, hide = true)]
    sbatch: bool,
    /// [OPTIONS] SCRIPT [ARGS]: options as in #SBATCH/#BERTH directives (-n, -N, --mem, -t,
    /// -J, -o, -e, -p, --array, --dependency, --image, --bind, --export, --chdir, --hold, ...),
    /// which override the script's own; the words after the script are its arguments.
    /// Without a script, it is read from standard input (`berth submit < job.sh`, as sbatch
    /// and bsub read it)
    #[arg(
        allow_hyphen_values = true,
        trailing_var_arg = true,
        value_name = "[OPTIONS] SCRIPT [ARGS]"
    )]
    words: Vec<String>,
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[arg(long)]
    json: bool,
    /// Only jobs of these users (comma-separated names or uids)
    #[arg(
        short = 'u',
        long = "user",
        value_name = "USER,...",
        value_delimiter = ','
    )]
    users: Vec<String>,
    /// Only jobs in these states (comma-separated: pending,running or PD,R, as squeue)
    #[arg(short = 't', long, visible_alias = "states")]
    state: Option<String>,
    /// Only jobs in these partitions (comma-separated)
    #[arg(
        short = 'p',
        long = "partition",
        value_name = "PART,...",
        value_delimiter = ','
    )]
    partitions: Vec<String>,
    /// Only jobs charged to these accounts (comma-separated)
    #[arg(short = 'A', long = "account", value_delimiter = ',')]
    accounts: Vec<String>,
    /// Only jobs with these names (comma-separated)
    #[arg(short = 'n', long = "name", value_delimiter = ',')]
    names: Vec<String>,
    /// Only jobs on these nodes (comma-separated, or a host list: n[1-3])
    #[arg(short = 'w', long = "nodelist", value_name = "NODES")]
    nodelist: Option<String>,
    /// A line for each pending task of an array (squeue -r); otherwise those that wait
    /// alike are one line, 42_[3-10]
    #[arg(short = 'r', long = "array")]
    array: bool,
    /// squeue's long format (its TIME_LIMIT column too)
    #[arg(short = 'l', long)]
    long: bool,
    /// Only your own jobs
    #[arg(long)]
    me: bool,
    /// Only these jobs (comma-separated ids; an array's id lists its tasks, 42_7 and
    /// 42_[1-3] some of them)
    #[arg(short, long, value_delimiter = ',')]
    jobs: Vec<String>,
    /// No header line (as squeue -h)
    #[arg(short = 'h', long)]
    noheader: bool,
    /// The columns, as squeue's --format: %i %A (its own id) %F %K (array job and index) %a
    /// (account) %j %u %P %T %t %M %l %L %D %C %m %R %r %N %V %S (a pending job's expected
    /// start) %Y (its planned nodes) %Q ..., each with an optional width (%.10i right-aligned,
    /// %-10i or %10i left)
    #[arg(short = 'o', long, value_name = "FORMAT")]
    format: Option<String>,
    /// The columns by name, as squeue's --Format: JobID, Name, UserName, Partition, State,
    /// StateCompact, TimeUsed, TimeLimit, TimeLeft, NumNodes, NumCPUs, MinMemory, Reason,
    /// ReasonList, NodeList, SubmitTime, StartTime, EndTime, WorkDir, Command, Account,
    /// Comment, ArrayJobID, ArrayTaskID, Priority, each with an optional :[.]SIZE (20)
    #[arg(
        short = 'O',
        long = "Format",
        value_name = "FIELD[:[.]SIZE],...",
        conflicts_with = "format"
    )]
    named_format: Option<String>,
    /// The order of the lines, as squeue's --sort: fields by their --format letters
    /// (`-S P,-Q`), each ascending or, with `-`, descending
    #[arg(
        short = 'S',
        long,
        value_name = "FIELD,...",
        allow_hyphen_values = true
    )]
    sort: Option<String>,
    /// Pending jobs with when they are expected to start and on which nodes, where the
    /// scheduler holds a place for them (squeue --start)
    #[arg(long)]
    start: bool,
    /// Clusters to ask (as squeue -M): berth's is one, which answers for any name
    #[arg(short = 'M', long, value_name = "CLUSTERS")]
    clusters: Option<String>,
    /// The running steps instead of the jobs (squeue -s): of every running job (their batch
    /// scripts' too, `ID.batch`), or only these (comma-separated JOB.STEP); --format's
    /// letters for steps: %i (JOB.STEP) %j %P %u %U %M %l %N %D %S %A (its tasks)
    #[arg(short = 's', long, value_name = "JOB.STEP,...", num_args = 0..=1, default_missing_value = "")]
    steps: Option<String>,
    /// Again every SECONDS seconds, each time after the time, until interrupted (squeue -i)
    #[arg(short = 'i', long, value_name = "SECONDS")]
    iterate: Option<u64>,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The job's id, or ID_INDEX for an array's task [default: every unfinished job, as
    /// scontrol's]
    job: Option<String>,
    #[arg(long)]
    json: bool,
    /// Each job on one line (scontrol -o)
    #[arg(short = 'o', long)]
    oneliner: bool,
    /// What each job holds on each of its nodes: CPUs by id, memory and GPUs (scontrol -d)
    #[arg(short = 'd', long)]
    details: bool,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// Job ids; an array job's id stands for all of its tasks, ID_INDEX for one
    #[arg(value_name = "JOB")]
    jobs: Vec<String>,
    /// Send this signal to the job instead of ending it: to its steps' tasks, on all its
    /// nodes (as scancel sends it)
    #[arg(short, long, value_name = "SIG")]
    signal: Option<String>,
    /// With --signal: to the batch script's shell alone (scancel -b)
    #[arg(short, long, conflicts_with = "full")]
    batch: bool,
    /// With --signal: to every process of the job, the batch shell's too (scancel -f)
    #[arg(short, long)]
    full: bool,
    /// Only jobs of these users (comma-separated); without job ids, all of them (scancel -u)
    #[arg(
        short = 'u',
        long = "user",
        value_name = "USER,...",
        value_delimiter = ','
    )]
    users: Vec<String>,
    /// Only the caller's jobs (scancel --me)
    #[arg(long)]
    me: bool,
    /// Only jobs of these names (comma-separated)
    #[arg(
        short = 'n',
        long = "name",
        value_name = "NAME,...",
        value_delimiter = ','
    )]
    names: Vec<String>,
    /// Only jobs in these states: PENDING (PD), RUNNING (R), SUSPENDED (S)
    #[arg(
        short = 't',
        long = "state",
        value_name = "STATE,...",
        value_delimiter = ','
    )]
    states: Vec<String>,
    /// Only jobs in these partitions (comma-separated)
    #[arg(
        short = 'p',
        long = "partition",
        value_name = "PART,...",
        value_delimiter = ','
    )]
    partitions: Vec<String>,
    /// Say each job as it is cancelled or signalled (scancel -v)
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Running jobs; an array job's id stands for its running tasks, ID_INDEX for one
    #[arg(value_name = "JOB")]
    jobs: Vec<String>,
    /// The same, comma-separated (as sstat -j)
    #[arg(
        short = 'j',
        long = "jobs",
        value_delimiter = ',',
        value_name = "JOB,..."
    )]
    listed: Vec<String>,
    #[arg(long)]
    json: bool,
    /// The columns: names among JobID, Node, Elapsed, TotalCPU (CPU time), AveCPU (its CPU
    /// time per task), Memory (charged now, page cache included), AveRSS (that per task),
    /// MaxRSS (the most at once), MaxRSSNode, NTasks, each with an optional %WIDTH
    #[arg(short = 'o', long, value_name = "FIELD,...", value_delimiter = ',')]
    format: Vec<String>,
    /// No header line (as sstat -n)
    #[arg(short, long)]
    noheader: bool,
    /// Fields separated by '|', not padded (as sstat -P)
    #[arg(short = 'P', long)]
    parsable2: bool,
    /// The same, each line ending in '|' too (as sstat -p)
    #[arg(short = 'p', long, conflicts_with = "parsable2")]
    parsable: bool,
    /// Each running step's lines too, after its job's (JOB.STEP names one step; JOB.batch
    /// the job's whole cgroup, its steps included)
    #[arg(short = 'a', long)]
    allsteps: bool,
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Job ids; an array job's id stands for all of its tasks, ID_INDEX for one
    #[arg(required = true, value_name = "JOB")]
    jobs: Vec<String>,
}

#[derive(Args, Debug)]
pub struct HoldArgs {
    #[command(flatten)]
    jobs: JobsArgs,
    /// The owner's hold, which they may release, even asked by root (scontrol uhold)
    #[arg(long)]
    owner: bool,
}

#[derive(Args, Debug)]
pub struct RequeueArgs {
    #[command(flatten)]
    jobs: JobsArgs,
    /// Held once queued again, until released (scontrol requeuehold)
    #[arg(long)]
    hold: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[arg(long)]
    json: bool,
    /// Only these users' jobs, comma-separated (by default your own, as sacct's; root's:
    /// everyone's)
    #[arg(
        short = 'u',
        long = "user",
        value_name = "USER,...",
        value_delimiter = ','
    )]
    users: Vec<String>,
    /// Every user's jobs, not only your own (as sacct -a)
    #[arg(short = 'a', long = "allusers")]
    all_users: bool,
    /// Only jobs in these states (comma-separated) during the window -S and -E give (as
    /// sacct's: from now to now unless they say; running or suspended at some time in it,
    /// pending at some time in it, or having ended in it so); with -j, their states now
    #[arg(short = 's', short_alias = 't', long)]
    state: Option<String>,
    /// Only jobs of these names (comma-separated), as sacct's --name
    #[arg(long = "name", value_name = "NAME,...", value_delimiter = ',')]
    names: Vec<String>,
    /// Only jobs charged to these accounts (comma-separated), as sacct's -A
    #[arg(short = 'A', long = "accounts", value_delimiter = ',')]
    accounts: Vec<String>,
    /// Only jobs in these partitions (comma-separated), as sacct's -r
    #[arg(short = 'r', long = "partition", value_delimiter = ',')]
    partitions: Vec<String>,
    /// Only jobs in any state at or after this time (not ended before it; by default
    /// today's midnight unless jobs are named, as sacct's), as sacct takes it: HH:MM[:SS]
    /// [AM|PM], MMDD[YY], MM/DD[/YY], MM.DD[.YY], YYYY-MM-DD[THH:MM[:SS]], midnight, noon,
    /// today, now[{+|-}N[seconds|minutes|hours|days|weeks]] (a date or time not given is
    /// the latest one), or seconds since the epoch
    #[arg(short = 'S', long = "starttime", visible_alias = "since", value_name = "TIME", value_parser = parse_time)]
    since: Option<u64>,
    /// Only jobs in any state before this time: submitted before it (the same forms as
    /// --starttime)
    #[arg(short = 'E', long = "endtime", visible_alias = "until", value_name = "TIME", value_parser = parse_time)]
    until: Option<u64>,
    /// Times cut to the window: a start before --starttime is shown as it, an end after
    /// --endtime (or none yet) as that, and the elapsed time between them (as sacct -T)
    #[arg(short = 'T', long)]
    truncate: bool,
    /// These jobs, ended or not (comma-separated ids; an array's id stands for its tasks,
    /// ID_INDEX for one)
    #[arg(short, long, value_delimiter = ',')]
    jobs: Vec<String>,
    /// The columns, as sacct's --format: names among JobID, JobIDRaw, JobName, User,
    /// Partition, State, ExitCode, Elapsed, TotalCPU, MaxRSS, NNodes, NCPUS, NodeList,
    /// Timelimit, Submit, Start, End, Reason, ... (all of them: --helpformat, or ALL), each
    /// with an optional %WIDTH
    #[arg(short = 'o', long, value_name = "FIELD,...", value_delimiter = ',')]
    format: Vec<String>,
    /// No header line (as sacct -n)
    #[arg(short, long)]
    noheader: bool,
    /// Fields separated by '|', not padded (as sacct -P)
    #[arg(short = 'P', long)]
    parsable2: bool,
    /// The same, each line ending in '|' too (as sacct -p)
    #[arg(short = 'p', long, conflicts_with = "parsable2")]
    parsable: bool,
    /// The fields' separator with -p or -P, instead of '|'
    #[arg(long, value_name = "CHARS", default_value = "|")]
    delimiter: String,
    /// JobID, State and ExitCode alone (as sacct -b)
    #[arg(short = 'b', long, conflicts_with = "format")]
    brief: bool,
    /// sacct's long format: of its fields, those berth records (as sacct -l)
    #[arg(short = 'l', long, conflicts_with_all = ["format", "brief"])]
    long: bool,
    /// The fields --format takes, and nothing else (as sacct -e)
    #[arg(short = 'e', long)]
    helpformat: bool,
    /// Only jobs that ran on these nodes (comma-separated, or a host list: n[1-3]; as
    /// sacct -N)
    #[arg(short = 'N', long = "nodelist", value_name = "NODES")]
    nodelist: Option<String>,
    /// Jobs alone, without a line for each of their steps (as sacct -X)
    #[arg(short = 'X', long)]
    allocations: bool,
    /// A requeued job's earlier runs too, a line each before its last (as sacct -D)
    #[arg(short = 'D', long)]
    duplicates: bool,
    /// Each job's batch script, as it was submitted, instead of the columns (as sacct -B)
    #[arg(short = 'B', long, conflicts_with_all = ["json", "format", "brief", "long"])]
    batch_script: bool,
    /// Sizes (MaxRSS, ReqMem) in this unit: K, M, G, T or P (as sacct --units)
    #[arg(long, value_name = "K|M|G|T|P", value_parser = ["K", "M", "G", "T", "P", "k", "m", "g", "t", "p"])]
    units: Option<String>,
    /// Sizes as recorded, in KiB, not in the unit that suits them (as sacct --noconvert)
    #[arg(long, conflicts_with = "units")]
    noconvert: bool,
    /// Clusters to ask (as sacct -M): berth's is one, which answers for any name
    #[arg(short = 'M', long, value_name = "CLUSTERS")]
    clusters: Option<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// JOB then the new values as berth submit flags (`42 --time=30 -p debug`), or scontrol's
    /// words (`JobId=42 TimeLimit=30 Partition=debug`)
    #[arg(
        required = true,
        allow_hyphen_values = true,
        trailing_var_arg = true,
        value_name = "JOB [VALUES]"
    )]
    words: Vec<String>,
}

/// scontrol update's keys, and the submit flag each stands for.
const UPDATE_KEYS: &[(&str, &str)] = &[
    ("timelimit", "--time"),
    ("partition", "--partition"),
    ("name", "--job-name"),
    ("jobname", "--job-name"),
    ("nice", "--nice"),
    ("starttime", "--begin"),
    ("begintime", "--begin"),
    ("dependency", "--dependency"),
    ("account", "--account"),
    ("comment", "--comment"),
    ("features", "--constraint"),
    ("reqnodelist", "--nodelist"),
    ("excnodelist", "--exclude"),
    ("licenses", "--licenses"),
    ("numtasks", "--ntasks"),
    ("numnodes", "--nodes"),
    ("taskspernode", "--ntasks-per-node"),
    ("cpuspertask", "--cpus-per-task"),
    ("mincpusnode", "--mincpus"),
    ("minmemorynode", "--mem"),
    ("minmemorycpu", "--mem-per-cpu"),
    ("gres", "--gres"),
    ("nodelist", "--nodelist"),
    ("stdout", "--output"),
    ("stderr", "--error"),
    ("stdin", "--input"),
    ("mailtype", "--mail-type"),
    ("mailuser", "--mail-user"),
];

/// `berth update JOB VALUES...` (or scontrol's `JobId=JOB KEY=VALUE...`).
pub fn update(args: UpdateArgs) -> Result<i32> {
    let mut job = None;
    let mut flags = Vec::new();
    // scontrol's TimeLimit=+TIME or -TIME: more or less than the job has.
    let mut relative = None;
    let mut throttle = None;
    for word in &args.words {
        match word.split_once('=') {
            _ if word.starts_with('-') => flags.push(word.clone()),
            Some((key, value)) => {
                let key = key.to_ascii_lowercase();
                // Keys shortened as scontrol takes them (`Job=`, `TimeLim=`), JobId first.
                let is = |full: &str| full.starts_with(&key) && key.len() >= full.len().min(3);
                if is("jobid") {
                    job = Some(value.to_string());
                } else if is("timelimit") && (value.starts_with('+') || value.starts_with('-')) {
                    relative = Some(value.to_string());
                } else if is("arraytaskthrottle") {
                    throttle = Some(
                        value
                            .parse::<u32>()
                            .with_context(|| format!("{word}: a number of tasks (0: no limit)"))?,
                    );
                } else if is("requeue") {
                    flags.push(
                        if value == "0" {
                            "--no-requeue"
                        } else {
                            "--requeue"
                        }
                        .into(),
                    );
                } else {
                    let flag = UPDATE_KEYS.iter().find(|(k, _)| is(k)).map(|(_, f)| f);
                    let flag = flag.with_context(|| {
                        format!(
                            "{word}: berth update takes {}, Requeue, ArrayTaskThrottle (or berth submit's flags)",
                            UPDATE_KEYS
                                .iter()
                                .map(|(k, _)| *k)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?;
                    flags.push(format!("{flag}={value}"));
                }
            }
            None if job.is_none() => job = Some(word.clone()),
            None => flags.push(word.clone()),
        }
    }
    let job = job.context("berth update needs the job: JOB or JobId=JOB")?;
    if let Some(change) = relative {
        let (sign, amount) = change.split_at(1);
        let amount = berth_core::job::parse_slurm_time(amount)
            .with_context(|| format!("TimeLimit={change}"))?;
        let current = named_jobs(std::slice::from_ref(&job))?
            .first()
            .and_then(|j| j.time_limit)
            .with_context(|| {
                format!("TimeLimit={change}: job {job} has no time limit to change")
            })?;
        let limit = match sign {
            "+" => current.saturating_add(amount),
            _ => current
                .checked_sub(amount)
                .filter(|l| *l > 0)
                .with_context(|| {
                    format!(
                        "TimeLimit={change}: job {job}'s limit is {}",
                        berth_core::job::format_duration(current)
                    )
                })?,
        };
        flags.push(format!(
            "--time={}",
            berth_core::job::format_duration(limit)
        ));
    }
    let n = update_job(&job, flags, OptionSyntax::Berth, throttle)?;
    // (scontrol says nothing of it.)
    if n > 1 && crate::compat::invoked_as().is_none() {
        berth_core::say!("berth: updated {n} tasks of array job {job}");
    }
    Ok(0)
}

/// Sends job `job`'s new values (`JOBID` or `JOBID_INDEX`), `args` in `syntax`'s words; how
/// many jobs changed. An array job's id goes as it is: the controller updates its pending
/// tasks.
pub fn update_job(
    job: &str,
    args: Vec<String>,
    syntax: OptionSyntax,
    array_throttle: Option<u32>,
) -> Result<u64> {
    let id = match job_spec(job)? {
        (_, Some(_)) => job_ids(&[job.to_string()], |_| true)?[0],
        (id, None) => id,
    };
    let body = berth_api::UpdateRequest {
        args,
        syntax,
        array_throttle,
    };
    request("POST", &format!("/v1/jobs/{id}/update"), Some(&body))
}

#[derive(Args, Debug)]
pub struct HostnamesArgs {
    /// The list [default: $SLURM_JOB_NODELIST]
    list: Option<String>,
}

#[derive(Args, Debug)]
pub struct HostlistArgs {
    /// Node names, each a word or comma-separated (a hostlist among them is expanded first)
    #[arg(required = true)]
    names: Vec<String>,
}

/// `berth hostnames [LIST]`: scontrol show hostnames.
pub fn hostnames(args: HostnamesArgs) -> Result<i32> {
    let list = match args.list {
        Some(l) => l,
        None => std::env::var("SLURM_JOB_NODELIST")
            .context("no node list given, and no $SLURM_JOB_NODELIST (outside a job?)")?,
    };
    let names = node_names(&list)?;
    let mut out = std::io::stdout().lock();
    for n in names {
        writeln!(out, "{n}")?;
    }
    Ok(0)
}

/// The nodes a list names (`n[1-3],gpu1`).
/// Whether job `j` runs (ran) on one of `nodes`; any job where none are named.
fn ran_on(j: &JobInfo, nodes: Option<&[String]>) -> bool {
    nodes.is_none_or(|wanted| j.nodes.iter().any(|n| wanted.contains(n)))
}

fn node_names(list: &str) -> Result<Vec<String>> {
    berth_core::job::expand_hostlist(list)
        .with_context(|| format!("{list}: not a node list (NAME[,NAME...], e.g. n[1-3],gpu1)"))
}

/// `berth hostlist NAMES...`: scontrol show hostlist.
pub fn hostlist(args: HostlistArgs) -> Result<i32> {
    let mut names = Vec::new();
    for word in args.names.iter().flat_map(|w| w.split_whitespace()) {
        names.extend(
            berth_core::job::expand_hostlist(word)
                .with_context(|| format!("{word}: not a node name or list"))?,
        );
    }
    writeln!(std::io::stdout(), "{}", berth_core::job::hostlist(&names))?;
    Ok(0)
}

/// A time as sacct's -S and -E take it, in seconds since the epoch: sacct's forms
/// ([`berth_core::job::slurm_report_time`]: `HH:MM[:SS][AM|PM]`, `MMDD[YY]`, `MM/DD[/YY]`,
/// `YYYY-MM-DD[THH:MM[:SS]]`, `midnight`, `now-N[UNIT]`, ..., the date parts not given
/// taken from the latest occurrence), or seconds since the epoch (digits, but four or six:
/// MMDD and MMDDYY).
pub fn parse_time(text: &str) -> Result<u64, String> {
    let digits = text.bytes().all(|b| b.is_ascii_digit());
    if digits && !text.is_empty() && text.len() != 4 && text.len() != 6 {
        return text.parse().map_err(|_| format!("{text}: too large"));
    }
    berth_core::job::slurm_report_time(
        text,
        berth_agent::runner::now(),
        berth_controller::utc_offset,
    )
    .map_err(|e| e.to_string())
}

/// The local midnight that began today (seconds since the epoch).
fn midnight() -> u64 {
    parse_time("midnight").expect("midnight is a report time")
}

pub fn up(settings: &Settings, args: UpArgs) -> Result<i32> {
    serve(settings, args, true)
}

/// `berth controller`: the controller alone; jobs run on the nodes whose agents register.
pub fn controller(settings: &Settings, args: UpArgs) -> Result<i32> {
    if args.listen.is_none() {
        bail!("berth controller needs --listen ADDR:PORT: the agents reach it there (berth agent --controller https://ADDR:PORT)");
    }
    serve(settings, args, false)
}

fn serve(settings: &Settings, args: UpArgs, local_node: bool) -> Result<i32> {
    if !local_node && !args.features.is_empty() {
        bail!("--features names what a node has: give it to each `berth agent`, not to the controller");
    }
    check_features(&args.features)?;
    if !is_root() {
        bail!("the controller must run as root: it runs every job as the user who submitted it");
    }
    let state_dir = args.state_dir.unwrap_or_else(|| settings.store.clone());
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let socket = args.socket.unwrap_or_else(crate::client::socket);
    if args.detach {
        return detach(&state_dir, &socket);
    }
    // One daemon per state directory and per socket, refused before anything is set up
    // (the node's job files' tmpfs included). The lock lasts as long as this process.
    let _lock = lock_state_dir(&state_dir)?;
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        bail!(
            "a berth controller is already serving {}: stop it with `berth down`, or pass --socket",
            socket.display()
        );
    }
    // Written once this process holds the state directory: a daemon refused here leaves
    // the running one's pid file as it is.
    let pid_path = state_dir.join("berth.pid");
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", pid_path.display()))?;
    let store: Box<dyn berth_store::Store> = match &settings.state_store {
        None => Box::new(berth_store::SqliteStore::open(state_dir.join("state.db"))?),
        Some(_) if local_node => bail!(
            "berth up keeps its state in SQLite; --store etcd://... is for `berth controller`, whose controllers can fail over"
        ),
        Some(url) => {
            let tls = settings.etcd_tls()?;
            let open = || berth_store::EtcdStore::open(url, tls.clone());
            Box::new(lead(url, &open, args.listen, &settings.store, &state_dir)?)
        }
    };
    let controller_settings = berth_controller::Settings {
        socket,
        image_store: settings.store.clone(),
        partitions: settings.config.partitions.clone(),
        berth: std::env::current_exe().context("cannot find the berth executable")?,
        kill_wait: settings.config.batch.kill_wait,
        binds: settings.config.binds.clone(),
        host_jobs: settings.config.batch.host_jobs,
        listen: args.listen,
        local_node,
        node_timeout: settings.config.batch.node_timeout,
        requeue: settings.config.batch.requeue,
        oversubscribe: settings.config.batch.oversubscribe,
        features: args.features,
        priority: settings.config.priority.clone(),
        mail_program: Some(&settings.config.batch.mail_program)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
        max_array_size: Some(settings.config.batch.max_array_size),
        max_job_count: settings.config.batch.max_job_count,
        cluster_name: settings.config.batch.cluster_name.clone(),
        licenses: settings.config.licenses.clone(),
        registry: settings.config.registry.clone(),
        registry_auth_file: Some(crate::settings::auth_file()),
        state_dir,
    };
    berth_core::say!(
        "berth: controller{} serving {}",
        if local_node { " and local agent" } else { "" },
        controller_settings.socket.display()
    );
    let pid_file = controller_settings.state_dir.join("berth.pid");
    let controller = berth_controller::Controller::open(controller_settings, store)
        .map_err(anyhow::Error::msg)?;
    let result = berth_controller::run(controller).map_err(anyhow::Error::msg);
    // The pid file this process wrote.
    if std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == std::process::id().to_string())
    {
        let _ = std::fs::remove_file(&pid_file);
    }
    result.map(|()| 0)
}

/// Takes the state directory's lock (`STATE_DIR/berth.lock`, flock(2)), which one daemon
/// holds while it runs; refused if another has it.
fn lock_state_dir(state_dir: &std::path::Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = state_dir.join("berth.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another berth daemon uses the state directory {} (its pid is in berth.pid there): stop it with `berth down`, or give --state-dir",
            state_dir.display()
        );
    }
    Ok(file)
}

/// How long the leading controller's lease on etcd lasts without renewal: a standby takes
/// over within about this long after the leader dies.
const LEADER_TTL: u64 = 5;

/// Waits until this controller leads the ones that share the etcd store at `url` (the others
/// stand by, not listening, copying the leader's images into theirs, `images`), then keeps
/// its lease alive from a thread of its own; a controller whose lease ends (paused, cut off
/// from etcd) exits at once: another leads by then, and its store no longer takes this
/// one's writes anyway.
fn lead(
    url: &str,
    open: &dyn Fn() -> Result<berth_store::EtcdStore, berth_store::StoreError>,
    listen: Option<std::net::SocketAddr>,
    images: &std::path::Path,
    state_dir: &std::path::Path,
) -> Result<berth_store::EtcdStore> {
    let (store, renewer) = (open()?, open()?);
    // Where the others reach this one: as the agents do.
    let reach = berth_controller::reach(listen).unwrap_or_else(|| "-".into());
    let who = format!("{} {reach}", berth_agent::node::hostname());
    let key = berth_agent::auth::Key::load_or_create(&state_dir.join("cluster.key"))
        .map_err(anyhow::Error::msg)?;
    let leading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mirror = {
        let (leading, images, watcher, standby) =
            (leading.clone(), images.to_owned(), open()?, who.clone());
        std::thread::spawn(move || {
            // The leader's address: the second word of what it wrote ("HOST URL lease=N").
            let leader = || {
                let value = watcher.leader().ok().flatten()?;
                let url = value.split_whitespace().nth(1)?;
                (url.starts_with("https://") && url != reach).then(|| url.to_string())
            };
            berth_controller::mirror::run(&images, &key, &standby, leader, &leading)
        })
    };
    berth_core::say!("berth: campaigning to lead the controllers of {url}");
    let lease = store.campaign(&who, LEADER_TTL)?;
    leading.store(true, std::sync::atomic::Ordering::Relaxed);
    // Not joined: a copy under way ends with its transfer (the old leader is gone).
    drop(mirror);
    berth_core::say!("berth: leading the controllers of {url} as {who}");
    std::thread::spawn(move || {
        let mut renewed = std::time::Instant::now();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(LEADER_TTL * 1000 / 3));
            match renewer.renew(lease) {
                Ok(true) => renewed = std::time::Instant::now(),
                Ok(false) => {
                    berth_core::say!(
                        "berth: this controller's lease ended: another leads now; exiting"
                    );
                    std::process::exit(1);
                }
                Err(e) if renewed.elapsed().as_secs() >= LEADER_TTL => {
                    berth_core::say!("berth: cannot renew this controller's lease ({e}): exiting");
                    std::process::exit(1);
                }
                Err(e) => berth_core::say!("berth: cannot renew this controller's lease yet: {e}"),
            }
        }
    });
    Ok(store)
}

/// Starts `berth up` again in the background, in a session of its own, and waits until it
/// answers on its socket.
fn detach(state_dir: &std::path::Path, socket: &std::path::Path) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let log_path = state_dir.join("berth.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(
        std::env::current_exe().context("cannot find the berth executable")?,
    );
    // This command line as it was given (--config, --store and the rest with it), without
    // --detach: the same state directory and socket, in the same environment.
    cmd.args(std::env::args_os().skip(1).filter(|a| a != "--detach"));
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe; it detaches the daemon from our terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
    let mut child = cmd.spawn().context("cannot start the controller")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Until it serves the socket itself (another daemon answering there is not it).
    let pid = child.id();
    let serving = || {
        let Ok(stream) = std::os::unix::net::UnixStream::connect(socket) else {
            return false;
        };
        peer_pid(&stream) == Some(pid)
    };
    while !serving() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the controller stopped ({status}); see {}",
                log_path.display()
            );
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the controller did not start in 20 s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!(
        "berth: controller running (pid {}), serving {}; log {}",
        child.id(),
        socket.display(),
        log_path.display()
    );
    Ok(0)
}

/// The process at the other end of a Unix socket's connection (SO_PEERCRED).
fn peer_pid(stream: &std::os::unix::net::UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(2) fills `cred`, of the size `len` says, on a socket we own.
    let got = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (got == 0).then_some(cred.pid as u32)
}

#[derive(Args, Debug)]
pub struct DownArgs {
    /// The API socket of the `berth up` to stop, as it was started with [default:
    /// $BERTH_SOCKET, else /run/berth/berth.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

/// `berth down`: asks the controller to stop. Jobs keep running; `berth up` picks them up,
/// and the steps its own node serves for clients in their jobs, whose clients wait for it;
/// said first.
pub fn down(args: DownArgs) -> Result<i32> {
    if let Some(socket) = args.socket {
        // (Before any thread: every request of this process goes there.)
        std::env::set_var("BERTH_SOCKET", socket);
    }
    let steps: usize = active_jobs(None, false)
        .unwrap_or_default()
        .iter()
        .map(|j| j.steps.iter().filter(|s| s.end_time.is_none()).count())
        .sum();
    if steps > 0 {
        berth_core::say!(
            "berth: warning: {steps} step(s) run (srun, berth step): the jobs keep running; the steps this controller's own node serves go on if they run on it alone for a client in their job, which waits up to 10 minutes for `berth up`; the others end"
        );
    }
    let _: () = request("POST", "/v1/shutdown", None::<&()>)?;
    let socket = crate::client::socket();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(0)
}

/// Splits `[OPTIONS] SCRIPT [ARGS]` into the script's path, the options before it and the
/// script's own arguments after it: the script is the first word naming a file that starts
/// with `#!`, as sbatch takes the first non-option word.
fn split_script(words: &[String]) -> Result<(PathBuf, Vec<String>, Vec<String>)> {
    for (i, w) in words.iter().enumerate() {
        if w.starts_with('-') {
            continue;
        }
        let looks_like_script = std::fs::read(w).is_ok_and(|b| b.starts_with(b"#!"));
        if looks_like_script {
            return Ok((
                PathBuf::from(w),
                words[..i].to_vec(),
                words[i + 1..].to_vec(),
            ));
        }
    }
    let Some(last) = words.last() else {
        bail!("no batch script: name one, or give it on standard input (berth submit < job.sh)");
    };
    match std::fs::read(last) {
        // (Its byte-order mark said as such.)
        Ok(bytes) if bytes.starts_with(BOM) => Err(byte_order_mark(last)),
        Ok(_) => bail!("{last}: not a batch script: its first line must be #! and an interpreter, e.g. #!/bin/sh"),
        Err(e) => bail!("cannot read the batch script {last}: {e}"),
    }
}

/// A batch script on standard input (`berth submit < job.sh`): `None` if standard input is
/// a terminal or holds no script.
fn script_on_stdin() -> Result<Option<String>> {
    use std::io::{IsTerminal, Read};
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    if stdin.read_to_end(&mut bytes).is_err() || bytes.is_empty() {
        return Ok(None);
    }
    let script = script_text(bytes, "stdin")?;
    Ok(script.starts_with("#!").then_some(script))
}

/// UTF-8's byte-order mark, which some editors put first.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// The refusal of script `name` that starts with a byte-order mark.
fn byte_order_mark(name: &str) -> anyhow::Error {
    anyhow::anyhow!("{name}: it starts with a byte-order mark (EF BB BF), which hides its first line: remove it (sed -i '1s/^\\xEF\\xBB\\xBF//' {name}) and submit it again")
}

/// A script's bytes as the text berth sends: refused, saying where and what to do, where
/// it is no UTF-8 (a Latin-1 comment) or hides its first line behind a byte-order mark.
pub fn script_text(bytes: Vec<u8>, name: &str) -> Result<String> {
    if bytes.starts_with(BOM) {
        return Err(byte_order_mark(name));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow::anyhow!(
            "{name}: line {line} is not UTF-8 text (byte 0x{:02x}): berth takes scripts in UTF-8: convert it (iconv -f latin1 -t utf-8) and submit that",
            bytes[at]
        )
    })
}

/// sbatch `--wrap=COMMAND` (or `--wrap COMMAND`) among `words`: the command, and the other
/// words (all options: there is no script then).
fn wrapped(words: &[String]) -> Result<Option<(String, Vec<String>)>> {
    let Some(at) = words
        .iter()
        .position(|w| w == "--wrap" || w.starts_with("--wrap="))
    else {
        return Ok(None);
    };
    let (command, taken) = match words[at].strip_prefix("--wrap=") {
        Some(c) => (c.to_string(), 1),
        None => match words.get(at + 1) {
            Some(c) => (c.clone(), 2),
            None => bail!("--wrap needs the command to run as the job: --wrap='COMMAND ARGS'"),
        },
    };
    let mut rest = words.to_vec();
    rest.drain(at..at + taken);
    // (An option's value may follow it; a script cannot: the wrapped command is the job.)
    let is_script = |w: &&String| std::fs::read(w).is_ok_and(|text| text.starts_with(b"#!"));
    if let Some(script) = rest.last().filter(is_script) {
        bail!("{script}: a job is a script or a wrapped command (--wrap), not both: put the command's arguments inside --wrap's quotes");
    }
    // Words after the options: the command's, outside its quotes (`--wrap echo hi`).
    use berth_core::job::JobError;
    if let Err(JobError::Argument { arg: word, reason }) = berth_core::job::parse_args(&rest) {
        if matches!(*reason, JobError::UnexpectedArgument(_)) {
            bail!("script arguments ({word}) are not permitted with --wrap: put them inside its quotes (--wrap='{command} {word} ...')");
        }
    }
    Ok(Some((command, rest)))
}

/// What a submit command sends, less what every submission carries (the submitter's
/// directory and environment).
pub struct Submission {
    pub script: String,
    /// The script's file name (the job's default name).
    pub name: String,
    pub options: Vec<String>,
    pub syntax: OptionSyntax,
    pub script_args: Vec<String>,
    /// The script's file, where it is one (scontrol's Command=).
    pub path: Option<PathBuf>,
}

/// This process's file creation mask.
fn umask() -> u32 {
    // SAFETY: umask(2) cannot fail; the mask is put back at once (this client has no other
    // thread that could create a file meanwhile).
    unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask
    }
}

/// Submits from this directory with this environment; prints the controller's warnings.
pub fn send(s: Submission) -> Result<SubmitResponse> {
    let cwd = PathBuf::from(crate::step::current_dir()?);
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let mut req = SubmitRequest {
        script: s.script,
        script_name: s.name,
        args: s.options,
        syntax: s.syntax,
        script_args: s.script_args,
        script_path: s
            .path
            .map(|p| std::path::absolute(cwd.join(p)).map(|p| p.to_string_lossy().into_owned()))
            .transpose()
            .context("cannot make the script's path absolute")?,
        cwd: cwd.display().to_string(),
        host: berth_agent::node::hostname(),
        env,
        image_files: Default::default(),
        umask: Some(umask()),
        export_env: None,
    };
    // (A submission the controller would refuse is left for it to say why.)
    let parsed = berth_controller::parse_submission(&req).ok();
    if let Some(file) = parsed.as_ref().and_then(|r| r.export_file.as_deref()) {
        req.export_env = Some(export_file(file, &cwd)?);
    }
    req.image_files = image_files(parsed.as_ref())?;
    let resp: SubmitResponse = request("POST", "/v1/jobs", Some(&req))?;
    for w in &resp.warnings {
        berth_core::say!("{}: warning: {w}", crate::compat::name());
    }
    Ok(resp)
}

/// The variables of sbatch's `--export-file`: `file` (relative to `cwd`), or the descriptor
/// of that number (3 and up), whose entries are NAME=VALUE each ended by a NUL (or, in a
/// file without one, by a line break), as sbatch reads them.
fn export_file(file: &str, cwd: &std::path::Path) -> Result<Vec<(String, String)>> {
    let path = match file.parse::<u32>() {
        Ok(fd) if fd >= 3 => PathBuf::from(format!("/proc/self/fd/{fd}")),
        Ok(_) => anyhow::bail!("--export-file={file}: a file, or a descriptor from 3 up (not standard input, output or error)"),
        Err(_) => cwd.join(file),
    };
    let text =
        std::fs::read(&path).with_context(|| format!("--export-file={file}: cannot read it"))?;
    let text = String::from_utf8(text).with_context(|| format!("--export-file={file}"))?;
    let end = if text.contains('\0') { '\0' } else { '\n' };
    let mut vars = Vec::new();
    for entry in text.split(end).filter(|e| !e.is_empty()) {
        let (name, value) = entry
            .split_once('=')
            .filter(|(n, _)| berth_core::shell::is_name(n))
            .with_context(|| format!("--export-file={file}: {entry:?} is not NAME=VALUE"))?;
        vars.push((name.to_string(), value.to_string()));
    }
    Ok(vars)
}

/// The image file a submission (its request, `parsed`) names, uploaded into the cluster's
/// store first, with the name of its upload: the request's `image_files` (empty where it
/// names none).
pub fn image_files(
    parsed: Option<&berth_core::job::JobRequest>,
) -> Result<std::collections::BTreeMap<String, String>> {
    let image = parsed
        .and_then(|r| r.image.clone())
        .filter(|i| berth_core::job::image_is_file(&i.name));
    let mut files = std::collections::BTreeMap::new();
    if let Some(image) = image {
        let name = crate::image::uploaded(&image.name)?;
        files.insert(image.name, name);
    }
    Ok(files)
}

pub fn submit(args: SubmitArgs) -> Result<i32> {
    // (The script's name, and its file if it is one.)
    let ((script_name, path), mut options, script_args, script) = match wrapped(&args.words)? {
        // The command as the script, as sbatch wraps it (its job is named "wrap").
        Some((command, options)) => (
            (PathBuf::from("wrap"), None),
            options,
            Vec::new(),
            format!("#!/bin/sh\n# sbatch --wrap\n{command}\n"),
        ),
        None => match split_script(&args.words) {
            Ok((path, options, script_args)) => {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let script = script_text(bytes, &path.display().to_string())?;
                ((path.clone(), Some(path)), options, script_args, script)
            }
            // No file names the script: it may be on standard input, every word an option.
            Err(e) => match script_on_stdin()? {
                Some(script) => (
                    (PathBuf::from("stdin"), None),
                    args.words.clone(),
                    Vec::new(),
                    script,
                ),
                None => return Err(e),
            },
        },
    };
    // Anywhere before the script, as sbatch takes it (clap sees it only as the first option).
    let parsable = args.parsable || options.iter().any(|o| o == "--parsable");
    options.retain(|o| o != "--parsable");
    let resp = send(Submission {
        script,
        name: script_name.to_string_lossy().into_owned(),
        options,
        syntax: match args.sbatch {
            true => OptionSyntax::Sbatch,
            false => OptionSyntax::Berth,
        },
        script_args,
        path,
    })?;
    if let Some(estimate) = &resp.estimate {
        berth_core::say!(
            "{}: {}",
            crate::compat::name(),
            estimate_line(&resp, estimate)
        );
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    if parsable {
        writeln!(out, "{}", resp.job_id)?;
    } else {
        writeln!(out, "Submitted batch job {}", resp.job_id)?;
    }
    drop(out);
    if resp.wait {
        return wait_for_jobs(resp.job_id, resp.jobs);
    }
    Ok(0)
}

/// sbatch `--test-only`'s answer, in its words (`Job 5 to start at 2026-12-03T10:00:00 using 2
/// processors on nodes n1 in partition normal`).
fn estimate_line(resp: &SubmitResponse, e: &berth_api::StartEstimate) -> String {
    let id = resp.job_id;
    match e.start {
        Some(start) => {
            let nodes = match e.nodes.as_slice() {
                [] => String::new(),
                nodes => format!(" on nodes {}", berth_core::job::hostlist(nodes)),
            };
            format!(
                "Job {id} to start at {} using {} processors{nodes} in partition {}",
                crate::compat::slurm_timestamp(start),
                e.cpus,
                resp.partition
            )
        }
        None => format!(
            "Job {id} would wait in partition {} ({}): no start time can be given for it now",
            resp.partition,
            e.reason.as_deref().unwrap_or("None")
        ),
    }
}

/// sbatch `--wait`: waits until the `count` jobs from `first` (an array's tasks) have ended;
/// the status is the highest of their exit codes (1 for one killed by a signal or ended
/// without running, as sbatch reports them).
pub fn wait_for_jobs(first: u64, count: u64) -> Result<i32> {
    wait_for_jobs_as(first, count, false)
}

/// [`wait_for_jobs`]; with `lsf`, bsub -K's statuses, LSF's: a job killed by signal N
/// gives 128 + N, not 1, and one ended before it ran (killed while pending) 126.
pub fn wait_for_jobs_as(first: u64, count: u64, lsf: bool) -> Result<i32> {
    let ends = wait_on_controller(first, count, "ended", None)?.unwrap_or_default();
    // A job that did not complete is never 0 (one killed for its memory, or its time,
    // may have a status of 0 of its own).
    let status = |j: &berth_api::JobEnd| match (j.state.as_str(), j.exit_code, j.signal) {
        ("COMPLETED", _, _) => 0,
        _ if lsf && j.never_ran => 126,
        (_, Some(code), None) if code != 0 => code,
        (_, _, Some(signal)) if lsf => 128 + signal,
        _ => 1,
    };
    Ok(ends.iter().map(status).max().unwrap_or(0))
}

/// Waits until the `count` jobs from `first` have all ended (`until` "ended": how each
/// ended) or started ("started": nothing), or `deadline` has passed (`None`). The controller
/// answers as that happens (`GET /v1/jobs/{id}/wait`). A controller out of reach
/// (restarting, failing over) is waited for, up to [`CONTROLLER_GONE_LIMIT`]: the jobs go
/// on without it, and a workflow that took the wait's failure for the jobs' would run them
/// again.
pub fn wait_on_controller(
    first: u64,
    count: u64,
    until: &str,
    deadline: Option<std::time::Instant>,
) -> Result<Option<Vec<berth_api::JobEnd>>> {
    let hint = format!(": see `berth show {first}` for the job's state");
    let mut outage = Outage::default();
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Ok(None);
        }
        let timeout = left.map_or(60, |l| l.as_secs().clamp(1, 60));
        let path = format!("/v1/jobs/{first}/wait?count={count}&until={until}&timeout={timeout}");
        match request::<berth_api::WaitResponse>("GET", &path, None::<&()>) {
            Ok(answer) if answer.reached => return Ok(Some(answer.jobs)),
            Ok(_) => outage = Outage::default(),
            Err(e) if crate::client::is_unreachable(&e) => outage.wait(e, &hint)?,
            Err(e) => return Err(e),
        }
    }
}

/// A controller out of reach (restarting, failing over), waited for: said once, each try
/// a second after the last, up to [`CONTROLLER_GONE_LIMIT`].
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
}

impl Outage {
    /// After `e`, the controller's being out of reach: `Ok` to try again, a second later;
    /// its error, `hint` after what happened, once it has been gone too long.
    fn wait(&mut self, e: anyhow::Error, hint: &str) -> Result<()> {
        let since = *self.since.get_or_insert_with(|| {
            berth_core::say!("berth: {e:#}; waiting for the controller to be back");
            std::time::Instant::now()
        });
        if since.elapsed() > CONTROLLER_GONE_LIMIT {
            return Err(e.context(format!(
                "the controller has been out of reach for {} s{hint}",
                CONTROLLER_GONE_LIMIT.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        Ok(())
    }
}

/// How long `--wait` waits for a controller out of reach before it gives up.
const CONTROLLER_GONE_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `[D-]HH:MM:SS`, as squeue prints times.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// A time as squeue and sinfo print one: `M:SS`, `H:MM:SS`, `D-HH:MM:SS`.
pub fn slurm_time(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h) {
        (0, 0) => format!("{m}:{s:02}"),
        (0, _) => format!("{h}:{m:02}:{s:02}"),
        _ => format!("{d}-{h:02}:{m:02}:{s:02}"),
    }
}

/// CPU time as sacct prints it: `MM:SS.mmm` under an hour, `[D-]HH:MM:SS` from one.
pub fn cpu_time(usec: u64) -> String {
    let secs = usec / 1_000_000;
    match secs < 3600 {
        true => format!(
            "{:02}:{:02}.{:03}",
            secs / 60,
            secs % 60,
            usec % 1_000_000 / 1000
        ),
        false => duration(secs),
    }
}

pub fn job_id(j: &JobInfo) -> String {
    match (j.array_job_id, j.array_task_id) {
        (Some(a), Some(t)) => format!("{a}_{t}"),
        _ => j.id.to_string(),
    }
}

/// The unfinished jobs, from `GET /v1/jobs`: `array`, only that array's tasks (or that job);
/// `collapse`, an array's pending tasks that wait alike as one entry (`array_tasks`). An
/// array or job the controller does not know has none.
pub fn active_jobs(array: Option<u64>, collapse: bool) -> Result<Vec<JobInfo>> {
    let mut path = format!("/v1/jobs?collapse={collapse}");
    if let Some(id) = array {
        path += &format!("&array={id}");
    }
    match request("GET", &path, None::<&()>) {
        Err(e) if array.is_some() && crate::client::is_not_found(&e) => Ok(Vec::new()),
        jobs => jobs,
    }
}

/// The quality of service of every job, as Slurm names its default: berth has one (a
/// job's --qos is warned of and left).
const QOS: &str = "normal";

/// squeue's --format letters berth knows, and (from the Unicode private use area) the
/// fields only --Format names.
const QUEUE_FIELDS: &str =
    "iAFKajuPTtMlLDCmRrNVSYQpeZBcfokEyvUgGnxqWbh\u{E000}\u{E001}\u{E002}\u{E003}\u{E004}\u{E005}";

/// --Format's NumTasks, cpus-per-task, tres-alloc, STDOUT, STDERR and STDIN, which have no
/// --format letter.
const NUM_TASKS: char = '\u{E000}';
const CPUS_PER_TASK: char = '\u{E001}';
const TRES_ALLOC: char = '\u{E002}';
const STDOUT: char = '\u{E003}';
const STDERR: char = '\u{E004}';
const STDIN: char = '\u{E005}';

use berth_controller::MIN_JOB_AGE;

/// squeue's --Format names, and the --format letter each stands for.
const FORMAT_NAMES: &[(&str, char)] = &[
    ("jobid", 'i'),
    ("jobarrayid", 'i'),
    ("arrayjobid", 'F'),
    ("arraytaskid", 'K'),
    ("name", 'j'),
    ("username", 'u'),
    ("partition", 'P'),
    ("state", 'T'),
    ("statecompact", 't'),
    ("timeused", 'M'),
    ("timelimit", 'l'),
    ("timeleft", 'L'),
    ("numnodes", 'D'),
    ("numcpus", 'C'),
    ("minmemory", 'm'),
    ("reason", 'r'),
    ("reasonlist", 'R'),
    ("nodelist", 'N'),
    ("submittime", 'V'),
    ("starttime", 'S'),
    ("endtime", 'e'),
    ("schednodes", 'Y'),
    ("workdir", 'Z'),
    ("command", 'o'),
    ("account", 'a'),
    ("comment", 'k'),
    ("priority", 'p'),
    ("prioritylong", 'Q'),
    ("mincpus", 'c'),
    ("feature", 'f'),
    ("dependency", 'E'),
    ("nice", 'y'),
    ("reservation", 'v'),
    ("userid", 'U'),
    ("groupname", 'g'),
    ("groupid", 'G'),
    ("reqnodes", 'n'),
    ("excnodes", 'x'),
    ("qos", 'q'),
    ("licenses", 'W'),
    ("numtasks", NUM_TASKS),
    ("cpus-per-task", CPUS_PER_TASK),
    ("tres-alloc", TRES_ALLOC),
    ("stdout", STDOUT),
    ("stderr", STDERR),
    ("stdin", STDIN),
    ("tres-per-node", 'b'),
    ("oversubscribe", 'h'),
    ("shared", 'h'),
];

/// squeue's `--Format NAME[:[.]SIZE],...` as the `--format` it stands for: each field as
/// wide as its size (20 when none), right-aligned with `.`, a space after it.
fn named_format(text: &str) -> Result<String> {
    named_as_format(text, FORMAT_NAMES)
}

/// Slurm's `--Format NAME[:[.][SIZE][SUFFIX]],...` (squeue's, sinfo's) as the `--format` it
/// stands for, `names` giving each name's letter: each field as wide as its size (20 when
/// none), right-aligned with `.`, what follows the size after it (a space where nothing does).
pub(crate) fn named_as_format(text: &str, names: &[(&str, char)]) -> Result<String> {
    text.split(',')
        .map(|field| {
            let (name, size) = field.split_once(':').unwrap_or((field, ""));
            let letter = names
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
                .map(|(_, l)| *l)
                .with_context(|| {
                    let names: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                    format!("--Format {field}: berth knows {}", names.join(", "))
                })?;
            let (right, size) = match size.strip_prefix('.') {
                Some(rest) => (".", rest),
                None => ("", size),
            };
            // The size's digits, then what follows the field (a space where nothing does).
            let digits = size
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(size.len());
            let (size, suffix) = size.split_at(digits);
            let size: usize = match size {
                "" => 20,
                s => s
                    .parse()
                    .with_context(|| format!("--Format {field}: a size is a number"))?,
            };
            let suffix = match suffix {
                "" => " ".to_string(),
                s => s.replace('%', "%%"),
            };
            Ok(format!("%{right}{size}{letter}{suffix}"))
        })
        .collect()
}

pub fn queue(mut args: QueueArgs) -> Result<i32> {
    let Some(every) = args.iterate else {
        return queue_once(&mut args);
    };
    if every == 0 {
        bail!("--iterate 0: expected how many seconds apart, 1 at least");
    }
    loop {
        // (A closed stdout ends it: `squeue -i 5 | head`.)
        let now = crate::compat::ctime(berth_controller::now());
        writeln!(std::io::stdout(), "{now}")?;
        let code = queue_once(&mut args)?;
        if code != 0 {
            return Ok(code);
        }
        writeln!(std::io::stdout())?;
        std::thread::sleep(std::time::Duration::from_secs(every));
    }
}

/// squeue's default columns of steps (-s), and with -l.
const STEP_FORMAT: &str = "%.15i %.8j %.9P %.8u %.9M %N";
const STEP_LONG_FORMAT: &str = "%.15i %.8j %.9P %.8u %.9l %.9M %N";

/// A running step as squeue -s and scontrol show step list it: a running job's batch
/// script's (`ID.batch`) or one of its steps' (`ID.N`).
pub(crate) struct RunningStep<'a> {
    /// `batch`, or the step's number.
    pub id: String,
    pub name: String,
    pub start: u64,
    pub nodes: &'a [String],
    pub tasks: u32,
    pub cpus: u64,
    /// Its own, else its job's.
    pub time_limit: Option<u64>,
    /// Seconds it has run, its job's suspended time left out.
    pub elapsed: u64,
    /// RUNNING, or SUSPENDED with its job.
    pub state: &'static str,
}

/// The running steps of job `j` if it runs (or is suspended): its batch script's first
/// (an allocation has none), then its steps'.
pub(crate) fn running_steps(j: &JobInfo) -> Vec<RunningStep<'_>> {
    if j.state != "RUNNING" && j.state != "SUSPENDED" {
        return Vec::new();
    }
    let state = match j.state.as_str() {
        "RUNNING" => "RUNNING",
        _ => "SUSPENDED",
    };
    let batch = RunningStep {
        id: "batch".into(),
        name: "batch".into(),
        start: j.start_time.unwrap_or_default(),
        nodes: j.nodes.first().map_or(&[][..], std::slice::from_ref),
        tasks: 1,
        cpus: j.cpus / j.nodes.len().max(1) as u64,
        time_limit: None,
        elapsed: elapsed(j),
        state,
    };
    let now = berth_controller::now();
    let steps = j.steps.iter().filter(|s| s.end_time.is_none());
    let steps = steps.map(|s| RunningStep {
        id: s.id.to_string(),
        name: step_accounting("JobName", j, s),
        start: s.start_time,
        nodes: step_nodes(j, s),
        tasks: s.ntasks,
        cpus: step_cpus(s) as u64,
        time_limit: s.time_limit.or(j.time_limit),
        elapsed: step_elapsed(j, s, now),
        state,
    });
    let batch = (!j.allocation).then_some(batch);
    batch.into_iter().chain(steps).collect()
}

/// What `squeue -s` prints: the running steps of `jobs` (each running job's batch script
/// as its step `ID.batch`), or those of `only` (`JOB.STEP`, comma-separated; empty: all).
fn queue_steps(args: &QueueArgs, jobs: &[JobInfo], only: &str) -> Result<i32> {
    let only: Vec<&str> = only.split(',').filter(|s| !s.is_empty()).collect();
    if let Some(bad) = only.iter().find(|s| step_spec(s).is_none()) {
        bail!("--steps {bad}: expected JOB.STEP (42.0, 42_3.1, 42.batch)");
    }
    let format = args.format.as_deref().unwrap_or(match args.long {
        true => STEP_LONG_FORMAT,
        false => STEP_FORMAT,
    });
    let columns = parse_format(format, "ijPuUMlNDSA")?;
    let mut out = std::io::stdout().lock();
    if !args.noheader {
        let header = |letter| match letter {
            'i' => "STEPID",
            'j' => "NAME",
            'P' => "PARTITION",
            'u' => "USER",
            'U' => "UID",
            'M' => "TIME",
            'l' => "TIME_LIMIT",
            'N' => "NODELIST",
            'D' => "NODES",
            'S' => "START_TIME",
            _ => "TASKS",
        };
        writeln!(out, "{}", render(&columns, |c| header(c).to_string()))?;
    }
    for j in jobs {
        for s in running_steps(j) {
            let id = format!("{}.{}", job_id(j), s.id);
            if !only.is_empty() && !only.contains(&id.as_str()) {
                continue;
            }
            let value = |letter| match letter {
                'i' => id.clone(),
                'j' => s.name.clone(),
                'P' => j.partition.clone(),
                'u' => j.user.clone(),
                'U' => j.uid.to_string(),
                'M' => slurm_time(s.elapsed),
                'l' => s.time_limit.map_or("UNLIMITED".into(), slurm_time),
                'N' => berth_core::job::hostlist(s.nodes),
                'D' => s.nodes.len().to_string(),
                'S' => crate::compat::slurm_timestamp(s.start),
                _ => s.tasks.to_string(),
            };
            writeln!(out, "{}", render(&columns, value))?;
        }
    }
    Ok(0)
}

fn queue_once(args: &mut QueueArgs) -> Result<i32> {
    if let Some(named) = &args.named_format {
        args.format = Some(named_format(named)?.trim_end().to_string());
    }
    // An array's pending tasks that wait alike are one line (squeue's `42_[3-10]`), unless
    // each is asked for (`-r`); jobs named by id are asked for one by one.
    let collapse = !args.array;
    let mut jobs = Vec::new();
    if args.jobs.is_empty() {
        jobs = active_jobs(None, collapse)?;
    }
    args.jobs = array_ranges(&args.jobs)?;
    args.jobs.sort_unstable();
    args.jobs.dedup();
    let now = berth_controller::now();
    let invalid = |spec: &str| {
        berth_core::say!(
            "{}: error: Invalid job id specified: {spec}",
            crate::compat::name()
        );
        Ok(1)
    };
    for spec in &args.jobs {
        let (id, index) = job_spec(spec)?;
        let before = jobs.len();
        // A job or an array's tasks, as they wait (alike ones as one line) or run.
        if index.is_none() {
            jobs.extend(active_jobs(Some(id), collapse)?);
        }
        // Ended: shown for MinJobAge (five minutes) after, as squeue shows it; never was:
        // an error, as squeue's.
        let named = match named_jobs(std::slice::from_ref(spec)) {
            Ok(named) => named,
            Err(e) if crate::client::is_not_found(&e) => return invalid(spec),
            Err(e) => return Err(e),
        };
        let shown = |j: &JobInfo| match j.end_time {
            Some(end) => now < end + MIN_JOB_AGE,
            None => index.is_some(),
        };
        let gone = named.iter().all(|j| j.end_time.is_some() && !shown(j));
        jobs.extend(named.into_iter().filter(shown));
        // One job asked for that ended longer ago: squeue has purged it, and says so.
        if args.jobs.len() == 1 && gone && jobs.len() == before {
            return invalid(spec);
        }
    }
    if args.start && args.steps.is_none() {
        // squeue --start's columns, of pending jobs.
        args.state.get_or_insert_with(|| "PENDING".into());
        args.format
            .get_or_insert_with(|| "%.18i %.9P %.8j %.8u %.2t %.19S %.6D %20Y %R".into());
    }
    if args.long && args.steps.is_none() {
        args.format
            .get_or_insert_with(|| "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R".into());
    }
    let on_nodes = args.nodelist.as_deref().map(node_names).transpose()?;
    // (`-t all`: every state, as squeue takes it.)
    let all_states = args
        .state
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("all"));
    let states = long_states(args.state.iter().filter(|_| !all_states))?;
    // Where ended states are asked for (`-t all`, `-t CD,F`), the jobs that ended within
    // MinJobAge too, as squeue still has them.
    let ended_too = all_states
        || states
            .iter()
            .any(|s| !["PENDING", "RUNNING", "SUSPENDED"].contains(&s.as_str()));
    if args.jobs.is_empty() && ended_too {
        let since = berth_controller::now().saturating_sub(MIN_JOB_AGE);
        let path = format!("/v1/history?since={since}");
        let ended: Vec<JobInfo> = request("GET", &path, None::<&()>)?;
        jobs.extend(ended.into_iter().filter(|j| j.end_time.is_some()));
    }
    let _ = &args.clusters;
    let mut users = user_names(&args.users)?;
    if args.me {
        users.push(berth_runtime::Identity::current()?.user);
    }
    jobs.retain(|j| {
        selects(j, &users, &args.partitions, &states)
            && charged_to(j, &args.accounts)
            && (args.names.is_empty() || args.names.contains(&j.name))
            && ran_on(j, on_nodes.as_deref())
    });
    if let Some(only) = &args.steps {
        return queue_steps(args, &jobs, only);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        return print_json(&mut out, &jobs);
    }
    let field = |letter, job: &JobInfo| match (&job.array_tasks, letter) {
        // (With its throttle, as squeue's `22_[5-9%2]`.)
        (Some(tasks), 'i') => {
            let spec = job.array_spec.as_deref().unwrap_or_default();
            let throttle = spec.find('%').map_or("", |at| &spec[at..]);
            format!("{}_[{tasks}{throttle}]", job.array_job_id.unwrap_or(0))
        }
        (Some(tasks), 'K') => tasks.clone(),
        _ => field(letter, job),
    };
    // squeue's own order unless told another: by partition, state, then priority, highest
    // first (its steps by id).
    let keys = args.sort.as_deref().unwrap_or("P,t,-p");
    // squeue -S: fields by their letters, each ascending or (-) descending, numbers as
    // numbers, the first that differs deciding.
    let keys: Vec<(char, bool)> = keys
        .split(',')
        .map(|k| {
            let (descending, letter) = match k.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, k.trim_start_matches('+')),
            };
            match letter.chars().collect::<Vec<_>>()[..] {
                [l] if l.is_ascii_alphabetic() && QUEUE_FIELDS.contains(l) => Ok((l, descending)),
                _ => Err(anyhow::anyhow!(
                    "--sort {keys}: {k}: expected a field's letter ({}), - before it to sort down",
                    QUEUE_FIELDS.trim_end_matches(|c: char| !c.is_ascii_alphabetic())
                )),
            }
        })
        .collect::<Result<_>>()?;
    let number = |job: &JobInfo, l: char| match l {
        'i' | 'A' => Some(job.id as f64),
        'Q' | 'p' => job.priority,
        // (Times as seconds.)
        'M' => Some(elapsed(job) as f64),
        'l' => job.time_limit.map(|t| t as f64),
        _ => field(l, job).parse::<f64>().ok(),
    };
    // Each job's keys worked out once (a long queue's sort compares each job many times):
    // each field's number where it is one, and its text.
    type Key = (Option<f64>, String);
    let mut keyed: Vec<(Vec<Key>, JobInfo)> = (jobs.into_iter())
        .map(|j| {
            (
                keys.iter()
                    .map(|&(l, _)| (number(&j, l), field(l, &j)))
                    .collect(),
                j,
            )
        })
        .collect();
    keyed.sort_by(|(a, _), (b, _)| {
        (a.iter().zip(b).zip(&keys))
            .map(|((x, y), &(_, descending))| {
                let order = match (x.0, y.0) {
                    (Some(x), Some(y)) => x.total_cmp(&y),
                    _ => x.1.cmp(&y.1),
                };
                if descending {
                    order.reverse()
                } else {
                    order
                }
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let jobs: Vec<JobInfo> = keyed.into_iter().map(|(_, j)| j).collect();
    if let Some(format) = &args.format {
        // squeue's `%all`: every field it has, a to z then A to Z, each with a bar after it.
        let all = || {
            let letters = ('a'..='z').chain('A'..='Z');
            letters
                .filter(|l| QUEUE_FIELDS.contains(*l))
                .map(|l| format!("%{l}|"))
                .collect()
        };
        let format = match format.eq_ignore_ascii_case("%all") {
            true => all(),
            false => format.clone(),
        };
        let columns = parse_format(&format, QUEUE_FIELDS)?;
        if !args.noheader {
            // (-l: the date first, as squeue's long listing has it.)
            if args.long {
                writeln!(
                    out,
                    "{}",
                    berth_agent::runner::ctime(berth_controller::now())
                )?;
            }
            writeln!(out, "{}", render(&columns, |c| header(c).to_string()))?;
        }
        for job in &jobs {
            writeln!(out, "{}", render(&columns, |c| field(c, job)))?;
        }
        return Ok(0);
    }
    if !args.noheader {
        writeln!(
            out,
            "{:>10} {:<10} {:<16} {:<10} {:<9} {:>10} {:>5}  NODELIST(REASON)",
            "JOBID", "PARTITION", "NAME", "USER", "STATE", "TIME", "NODES"
        )?;
    }
    for job in &jobs {
        // The fields of --format's %i %P %j %u %T %M %D %R, in columns that pad but do not
        // cut (but for the name).
        let f = |letter| field(letter, job);
        writeln!(
            out,
            "{:>10} {:<10} {:<16} {:<10} {:<9} {:>10} {:>5}  {}",
            f('i'),
            f('P'),
            truncate(&f('j'), 16),
            f('u'),
            f('T'),
            f('M'),
            f('D'),
            f('R')
        )?;
    }
    Ok(0)
}

/// The states of berth's jobs, by Slurm's names and their compact forms (`-t PD,R`, `%t`).
const STATES: &[(&str, &str)] = &[
    ("PENDING", "PD"),
    ("RUNNING", "R"),
    ("SUSPENDED", "S"),
    ("COMPLETED", "CD"),
    ("FAILED", "F"),
    ("CANCELLED", "CA"),
    ("TIMEOUT", "TO"),
    ("OUT_OF_MEMORY", "OOM"),
    ("NODE_FAIL", "NF"),
    ("DEADLINE", "DL"),
];

/// Slurm's other job states: taken in filters (a workflow tool's `squeue -t PD,R,CG`), where
/// they match nothing.
const OTHER_SLURM_STATES: &[(&str, &str)] = &[
    ("PREEMPTED", "PR"),
    ("BOOT_FAIL", "BF"),
    ("COMPLETING", "CG"),
    ("CONFIGURING", "CF"),
    ("RESIZING", "RS"),
    ("REQUEUED", "RQ"),
    ("REQUEUE_FED", "RF"),
    ("REQUEUE_HOLD", "RH"),
    ("SPECIAL_EXIT", "SE"),
    ("STOPPED", "ST"),
    ("REVOKED", "RV"),
    ("SIGNALING", "SI"),
    ("STAGE_OUT", "SO"),
    ("RESV_DEL_HOLD", "RD"),
];

/// The states of a filter (`-t`/`-s`: comma-separated, either form, any case), in their long
/// forms; a word that names no state is refused, as squeue and sacct refuse it.
pub fn long_states<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> Result<Vec<String>> {
    let mut states = Vec::new();
    for list in words {
        for word in list
            .as_ref()
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
        {
            let upper = word.to_ascii_uppercase();
            let mut all = STATES.iter().chain(OTHER_SLURM_STATES);
            let Some((long, _)) = all.find(|(l, s)| *l == upper || *s == upper) else {
                let known: Vec<String> = STATES.iter().map(|(l, s)| format!("{l} ({s})")).collect();
                bail!(
                    "invalid job state '{word}': expected {}, or another of Slurm's",
                    known.join(", ")
                );
            };
            states.push(long.to_string());
        }
    }
    Ok(states)
}

/// One column of a `--format` in Slurm's words (squeue's, sinfo's): its letter, its width,
/// and whether it is right-aligned (`%.N`); text between columns is kept as `Text`.
pub enum Column {
    Field(char, Option<usize>, bool),
    Text(String),
}

/// A `--format` whose fields are among `letters`.
pub fn parse_format(format: &str, letters: &str) -> Result<Vec<Column>, anyhow::Error> {
    let mut columns = Vec::new();
    let mut chars = format.chars().peekable();
    let mut text = String::new();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        // (`%%`: a `%`.)
        if chars.next_if_eq(&'%').is_some() {
            text.push('%');
            continue;
        }
        if !text.is_empty() {
            columns.push(Column::Text(std::mem::take(&mut text)));
        }
        let right = chars.next_if_eq(&'.').is_some();
        chars.next_if_eq(&'-');
        let mut digits = String::new();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            digits.push(d);
        }
        match chars.next() {
            Some(letter) if letters.contains(letter) => {
                columns.push(Column::Field(letter, digits.parse().ok(), right))
            }
            other => bail!(
                "--format {format:?}: unknown field %{}: berth knows {}",
                other.map_or(String::new(), String::from),
                letters
                    .chars()
                    .filter(char::is_ascii_alphabetic)
                    .map(|l| format!("%{l}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }
    if !text.is_empty() {
        columns.push(Column::Text(text));
    }
    Ok(columns)
}

/// One line of `columns`, each field's value given by `value`.
pub fn render(columns: &[Column], value: impl Fn(char) -> String) -> String {
    let mut line = String::new();
    for c in columns {
        match c {
            Column::Text(t) => line.push_str(t),
            Column::Field(letter, width, right) => {
                let v = value(*letter);
                // squeue truncates a value to its column's width.
                let v = width.map_or(v.clone(), |w| truncate(&v, w));
                match (width, right) {
                    (Some(w), true) => line.push_str(&format!("{v:>w$}")),
                    (Some(w), false) => line.push_str(&format!("{v:<w$}")),
                    (None, _) => line.push_str(&v),
                }
            }
        }
    }
    line
}

fn header(letter: char) -> &'static str {
    match letter {
        'i' | 'A' => "JOBID",
        'F' => "ARRAY_JOB_ID",
        'K' => "ARRAY_TASK_ID",
        'a' => "ACCOUNT",
        'b' => "TRES_PER_NODE",
        'k' => "COMMENT",
        'j' => "NAME",
        'u' => "USER",
        'P' => "PARTITION",
        'T' => "STATE",
        't' => "ST",
        'M' => "TIME",
        'l' => "TIME_LIMIT",
        'L' => "TIME_LEFT",
        'D' => "NODES",
        'C' => "CPUS",
        'm' => "MIN_MEMORY",
        'R' => "NODELIST(REASON)",
        'r' => "REASON",
        'N' => "NODELIST",
        'V' => "SUBMIT_TIME",
        'S' => "START_TIME",
        'Y' => "SCHEDNODES",
        'e' => "END_TIME",
        'Z' => "WORK_DIR",
        'B' => "EXEC_HOST",
        'c' => "MIN_CPUS",
        'f' => "FEATURES",
        'o' => "COMMAND",
        'E' => "DEPENDENCY",
        'y' => "NICE",
        'v' => "RESERVATION",
        'U' => "UID",
        'g' => "GROUP",
        'G' => "GID",
        'n' => "REQ_NODES",
        'x' => "EXC_NODES",
        'q' => "QOS",
        'W' => "LICENSES",
        'h' => "OVER_SUBSCRIBE",
        NUM_TASKS => "TASKS",
        CPUS_PER_TASK => "CPUS_PER_TASK",
        TRES_ALLOC => "TRES_ALLOC",
        STDOUT => "STDOUT",
        STDERR => "STDERR",
        STDIN => "STDIN",
        _ => "PRIORITY",
    }
}

fn field(letter: char, j: &JobInfo) -> String {
    // (To its end, for one that ended; time suspended does not count, as squeue's TIME.)
    let used = elapsed(j);
    let time = |t: Option<u64>| t.map_or("N/A".to_string(), crate::compat::slurm_timestamp);
    match letter {
        'i' => job_id(j),
        // squeue's: %A the job's own id, %F its array's, %K its index, %a its account.
        'A' => j.id.to_string(),
        'F' => j.array_job_id.unwrap_or(j.id).to_string(),
        'K' => j.array_task_id.map_or("N/A".into(), |t| t.to_string()),
        'a' => j.account.clone().unwrap_or_else(|| "(null)".into()),
        'b' => (j.gpus_asked.as_ref())
            .filter(|g| g.per == berth_api::GpuPer::Node)
            .map_or("N/A".into(), berth_api::GpuAsk::tres),
        'k' => j.comment.clone().unwrap_or_else(|| "(null)".into()),
        'j' => j.name.clone(),
        'u' => j.user.clone(),
        'P' => j.partition.clone(),
        'T' => j.state.clone(),
        't' => STATES
            .iter()
            .find(|(long, _)| *long == j.state)
            .map_or(j.state.clone(), |(_, short)| short.to_string()),
        'M' => slurm_time(used),
        'l' => j.time_limit.map_or("UNLIMITED".into(), slurm_time),
        'L' => j
            .time_limit
            .map_or("UNLIMITED".into(), |l| slurm_time(l.saturating_sub(used))),
        // A pending job's, the nodes it asks for.
        'D' => match j.nodes.len() {
            0 => j.min_nodes.max(1).to_string(),
            n => n.to_string(),
        },
        'C' => j.cpus.to_string(),
        'm' => j.memory.map_or("0".into(), slurm_size),
        'R' if j.state == "PENDING" => format!("({})", j.reason.as_deref().unwrap_or("None")),
        'R' | 'N' => berth_core::job::hostlist(&j.nodes),
        'r' => j.reason.clone().unwrap_or_else(|| "None".into()),
        'V' => time(Some(j.submit_time)),
        'S' => time(j.start_time.or(j.expected_start)),
        'Y' => match j.planned_nodes.as_slice() {
            [] => "(null)".into(),
            nodes => berth_core::job::hostlist(nodes),
        },
        // Its end, or a running job's at its limit.
        'e' => time(j.end_time.or_else(|| Some(j.start_time? + j.time_limit?))),
        'Z' => j.workdir.clone(),
        'B' => j.nodes.first().cloned().unwrap_or_else(|| "n/a".into()),
        // CPUs per node, as asked.
        'c' => (j.cpus / u64::from(j.min_nodes.max(1))).to_string(),
        'f' => j.constraint.clone().unwrap_or_else(|| "(null)".into()),
        // The script's file; (null) for one from --wrap or standard input, as Slurm has it.
        'o' => j.script_path.clone().unwrap_or_else(|| "(null)".into()),
        'E' => j.dependency.clone().unwrap_or_else(|| "(null)".into()),
        'y' => j.nice.to_string(),
        'v' => j.reservation.clone().unwrap_or_else(|| "(null)".into()),
        'W' => j.licenses.clone().unwrap_or_else(|| "(null)".into()),
        'U' => j.uid.to_string(),
        'g' => submitter_group(j).1,
        'G' => submitter_group(j).0.to_string(),
        'n' => berth_core::job::hostlist(&j.required_nodes),
        'x' => berth_core::job::hostlist(&j.excluded_nodes),
        'q' => QOS.into(),
        // May others' jobs share its nodes: squeue's OK, or NO for an exclusive one.
        'h' => match j.exclusive {
            true => "NO".into(),
            false => "OK".into(),
        },
        NUM_TASKS => j.ntasks.max(1).to_string(),
        CPUS_PER_TASK => j.cpus_per_task.max(1).to_string(),
        TRES_ALLOC => accounting("AllocTRES", j),
        // Its files, as scontrol's StdOut=, StdErr=, StdIn= (the output's where joined).
        STDOUT => j.stdout.clone(),
        STDERR => j.stderr.clone().unwrap_or_else(|| j.stdout.clone()),
        STDIN => j.stdin.clone().unwrap_or_else(|| "/dev/null".into()),
        // A fraction of the largest priority there is, as squeue's %p.
        'p' => format!("{:.8}", j.priority.unwrap_or(0.0) / f64::from(u32::MAX)),
        _ => j.priority.map_or("0".into(), |p| format!("{p:.0}")),
    }
}

/// The gid and name of a job's submitter's primary group, from this host's user database
/// (the uid itself where it has no entry).
fn submitter_group(j: &JobInfo) -> (u32, String) {
    match berth_runtime::Identity::lookup(&j.uid.to_string(), false) {
        Ok(id) => (id.gid, id.group),
        Err(_) => (j.uid, j.uid.to_string()),
    }
}

pub fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

pub fn show(args: ShowArgs) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    let Some(spec) = &args.job else {
        let jobs = active_jobs(None, false)?;
        if args.json {
            return print_json(&mut out, &jobs);
        }
        if jobs.is_empty() {
            writeln!(out, "No jobs in the system")?;
        }
        for j in &jobs {
            show_job(&mut out, j, &args)?;
            if !args.oneliner {
                writeln!(out)?;
            }
        }
        return Ok(0);
    };
    let (id, index) = job_spec(spec)?;
    let found = match index {
        Some(_) => named_jobs(std::slice::from_ref(spec)).map(|mut j| j.remove(0)),
        None => request("GET", &format!("/v1/jobs/{id}"), None::<&()>),
    };
    let j: JobInfo = match found {
        // scontrol's words for a job it does not know.
        Err(e)
            if crate::compat::invoked_as() == Some("scontrol")
                && crate::client::is_not_found(&e) =>
        {
            berth_core::say!("slurm_load_jobs error: Invalid job id specified");
            return Ok(1);
        }
        found => found?,
    };
    if args.json {
        return print_json(&mut out, &j);
    }
    // An array's id: each of its tasks, as scontrol shows them.
    let tasks = match index.is_none() && j.array_job_id == Some(id) {
        true => array_tasks(id)?,
        false => vec![j],
    };
    for (n, j) in tasks.iter().enumerate() {
        if n > 0 && !args.oneliner {
            writeln!(out)?;
        }
        show_job(&mut out, j, &args)?;
    }
    Ok(0)
}

/// One job as scontrol shows it, in its `Key=Value` lines, or on one (`oneliner`), with
/// what it holds node by node where asked (`details`).
fn show_job(out: &mut impl Write, j: &JobInfo, args: &ShowArgs) -> Result<()> {
    let mut block = Vec::new();
    job_block(&mut block, j, args.details)?;
    let block = String::from_utf8_lossy(&block);
    match args.oneliner {
        true => writeln!(out, "{}", crate::compat::one_line(&block))?,
        false => write!(out, "{block}")?,
    }
    Ok(())
}

/// What job `j` holds on each node, as `scontrol -d show job` says it: its GPUs in all,
/// then a line a node with its CPUs' ids, memory (MiB) and GPUs' indices.
fn held_on_nodes(out: &mut impl Write, j: &JobInfo) -> Result<()> {
    let gres = |gpus: usize| format!("gpu:{gpus}");
    let gpus: usize = j.cpu_ids.iter().map(|n| n.gpu_ids.len()).sum();
    match gpus {
        0 => writeln!(out, "   JOB_GRES=(null)")?,
        n => writeln!(out, "   JOB_GRES={}", gres(n))?,
    }
    for n in &j.cpu_ids {
        writeln!(
            out,
            "     Nodes={} CPU_IDs={} Mem={} GRES={}",
            n.node,
            berth_core::quantity::number_list(&n.cpu_ids),
            n.memory_bytes.unwrap_or(0) >> 20,
            match n.gpu_ids.as_slice() {
                [] => String::new(),
                ids => format!(
                    "{}(IDX:{})",
                    gres(ids.len()),
                    berth_core::quantity::number_list(ids)
                ),
            }
        )?;
    }
    Ok(())
}

/// [`show_job`]'s lines.
fn job_block(out: &mut impl Write, j: &JobInfo, details: bool) -> Result<()> {
    let opt = |v: Option<u64>| v.map_or("Unknown".to_string(), crate::compat::slurm_timestamp);
    // An array's task by its own id then its array's, as scontrol shows it, with the
    // array's limit of running tasks where it has one.
    let array = match (j.array_job_id, j.array_task_id) {
        (Some(a), Some(t)) => {
            let throttle = j.array_spec.as_deref().and_then(|s| s.split_once('%'));
            let throttle =
                throttle.map_or(String::new(), |(_, n)| format!(" ArrayTaskThrottle={n}"));
            format!(" ArrayJobId={a} ArrayTaskId={t}{throttle}")
        }
        _ => String::new(),
    };
    writeln!(
        out,
        "JobId={}{array} JobName={} User={} Partition={}",
        j.id, j.name, j.user, j.partition
    )?;
    let (gid, group) = submitter_group(j);
    writeln!(
        out,
        "   UserId={}({}) GroupId={group}({gid})",
        j.user, j.uid
    )?;
    writeln!(
        out,
        "   Priority={} Nice={} Account={} QOS={QOS}",
        j.priority.map_or(0.0, |p| p.round()),
        j.nice,
        j.account.as_deref().unwrap_or("(null)")
    )?;
    writeln!(
        out,
        "   JobState={} Reason={} Dependency={}",
        j.state,
        j.reason.as_deref().unwrap_or("None"),
        j.dependency.as_deref().unwrap_or("(null)")
    )?;
    if let Some(reservation) = &j.reservation {
        writeln!(out, "   Reservation={reservation}")?;
    }
    // (BatchFlag: a batch script runs, not an allocation's command.)
    writeln!(
        out,
        "   Requeue={} Restarts={} BatchFlag={} Reboot=0 ExitCode={}",
        u8::from(j.requeue != Some(false)),
        j.restarts,
        u8::from(!j.allocation),
        job_exit_code(j)
    )?;
    // (Eligible from its submission, or its --begin, but not yet while it waits for a
    // dependency; its age accrues from then, but while it is held.)
    let dependent = j.start_time.is_none()
        && (j.reason.as_deref()).is_some_and(|r| r.starts_with("Dependency"));
    let eligible = Some(j.begin_time.unwrap_or(0).max(j.submit_time)).filter(|_| !dependent);
    let accrues = !(dependent || j.start_time.is_none() && j.held);
    writeln!(
        out,
        "   SubmitTime={} EligibleTime={} AccrueTime={}{} StartTime={} EndTime={}",
        opt(Some(j.submit_time)),
        opt(eligible),
        opt(eligible.filter(|_| accrues)),
        j.deadline
            .map_or(String::new(), |t| format!(" Deadline={}", opt(Some(t)))),
        // A pending job's expected start, and a running one's end at its limit, as
        // scontrol shows them.
        opt(j.start_time.or(j.expected_start)),
        opt(j.end_time.or_else(|| Some(j.start_time? + j.time_limit?)))
    )?;
    if !j.planned_nodes.is_empty() {
        writeln!(
            out,
            "   SchedNodeList={}",
            berth_core::job::hostlist(&j.planned_nodes)
        )?;
    }
    writeln!(
        out,
        "   RunTime={} TimeLimit={} TimeMin=N/A NodeList={} NumCPUs={} Memory={}",
        duration(elapsed(j)),
        j.time_limit.map_or("UNLIMITED".into(), duration),
        if j.nodes.is_empty() {
            "-".into()
        } else {
            berth_core::job::hostlist(&j.nodes)
        },
        j.cpus,
        j.memory.map_or("-".into(), slurm_size)
    )?;
    // As scontrol words them, which scripts read (NumNodes: the nodes it has, or asked for).
    writeln!(
        out,
        "   NumNodes={} NumTasks={} CPUs/Task={}",
        match j.nodes.len() {
            0 => j.min_nodes as usize,
            n => n,
        },
        j.ntasks,
        j.cpus_per_task
    )?;
    // What each node must have, as scontrol words it (MinMemoryNode=0: no memory asked;
    // MinMemoryCPU= where it asked by the CPU).
    let nodes = match j.nodes.len() {
        0 => j.min_nodes.max(1) as u64,
        n => n as u64,
    };
    let memory = match j.memory_per_cpu {
        Some(b) => format!("MinMemoryCPU={}", slurm_size(b)),
        None => format!("MinMemoryNode={}", j.memory.map_or("0".into(), slurm_size)),
    };
    writeln!(
        out,
        "   MinCPUsNode={} {memory} MinTmpDiskNode=0",
        (j.cpus / nodes).max(u64::from(j.cpus_per_task)).max(1),
    )?;
    if let Some(host) = j.nodes.first() {
        writeln!(out, "   BatchHost={host}")?;
    }
    // What it has, else (pending) what it asks for, as scontrol's TRES=.
    let tres = match j.start_time {
        Some(_) => accounting("AllocTRES", j),
        None => accounting("ReqTRES", j),
    };
    writeln!(out, "   TRES={tres}")?;
    if details {
        held_on_nodes(out, j)?;
    }
    let chosen = [
        &j.required_nodes,
        &j.excluded_nodes,
        &j.candidate_nodes,
        &j.preferred_nodes,
    ];
    if j.constraint.is_some() || chosen.iter().any(|n| !n.is_empty()) {
        let list = |nodes: &[String]| match nodes {
            [] => "-".to_string(),
            some => berth_core::job::hostlist(some),
        };
        writeln!(
            out,
            "   Features={} ReqNodeList={} ExcNodeList={}{}",
            j.constraint.as_deref().unwrap_or("-"),
            list(&j.required_nodes),
            list(&j.excluded_nodes),
            match j.candidate_nodes.as_slice() {
                [] => String::new(),
                some => format!(" OnlyNodes={}", list(some)),
            } + &match j.preferred_nodes.as_slice() {
                [] => String::new(),
                some => format!(" PreferredNodes={}", some.join(",")),
            }
        )?;
    }
    // (OverSubscribe: OK, its nodes may be shared; NO, they are its alone.)
    writeln!(
        out,
        "   OverSubscribe={} Contiguous=0 Licenses={} Network=(null)",
        if j.exclusive { "NO" } else { "OK" },
        j.licenses.as_deref().unwrap_or("(null)")
    )?;
    // On a line of its own, as scripts read it (`awk -F= '/Command=/{print $2}'`: a job's
    // script runs from a copy, so $0 does not name it); (null) for one from standard input
    // or --wrap, as Slurm has it.
    writeln!(
        out,
        "   Command={}",
        j.script_path.as_deref().unwrap_or("(null)")
    )?;
    // Each on a line of its own too, as Slurm's (`grep StdOut | cut -d= -f2`).
    writeln!(out, "   WorkDir={}", j.workdir)?;
    writeln!(out, "   Image={}", j.image.as_deref().unwrap_or("-"))?;
    if let Some(comment) = &j.comment {
        writeln!(out, "   Comment={comment}")?;
    }
    // A batch script's files (an allocation has none: Slurm shows them for batch jobs).
    if !j.allocation {
        writeln!(
            out,
            "   StdErr={}",
            j.stderr.as_deref().unwrap_or(&j.stdout)
        )?;
        writeln!(
            out,
            "   StdIn={}",
            j.stdin.as_deref().unwrap_or("/dev/null")
        )?;
        writeln!(out, "   StdOut={}", j.stdout)?;
    }
    // Its GPUs as asked for, per what, as Slurm's TresPerNode=gres:gpu:2 (TresPerJob=,
    // TresPerTask=).
    if let Some(gpus) = &j.gpus_asked {
        let per = match gpus.per {
            berth_api::GpuPer::Node => "Node",
            berth_api::GpuPer::Task => "Task",
            berth_api::GpuPer::Job => "Job",
        };
        writeln!(out, "   TresPer{per}={}", gpus.tres())?;
    }
    if let (Some(cpu), Some(rss)) = (j.cpu_usec, j.max_rss_bytes) {
        writeln!(
            out,
            "   CPUTime={} MaxRSS={}",
            duration(cpu / 1_000_000),
            crate::image::human_size(rss)
        )?;
    }
    // Steps as sacct lists them: JOBID.STEP.
    for step in &j.steps {
        let used = step.usage.map_or(String::new(), |u| {
            format!(
                " TotalCPU={} MaxRSS={}",
                cpu_time(u.user_usec + u.system_usec),
                slurm_size(u.max_rss_bytes)
            )
        });
        writeln!(
            out,
            "   Step={}.{} NumTasks={} ExitCode={} Elapsed={}{used} Cmd={}",
            j.id,
            step.id,
            step.ntasks,
            step.exit_code.map_or("-".into(), |_| exit_code_of(step)),
            step.end_time.map_or("-".into(), |_| duration(step_elapsed(
                j,
                step,
                berth_controller::now()
            ))),
            step.command
        )?;
    }
    Ok(())
}

pub fn cancel(args: CancelArgs) -> Result<i32> {
    // scancel -v's words, before each.
    let say = |job: &str| {
        if args.verbose {
            match &args.signal {
                Some(sig) => {
                    berth_core::say!("{}: Signal {sig} to job {job}", crate::compat::name())
                }
                None => berth_core::say!("{}: Terminating job {job}", crate::compat::name()),
            }
        }
    };
    let target = match (args.batch, args.full) {
        (true, _) => SignalTarget::Batch,
        (_, true) => SignalTarget::Full,
        _ => SignalTarget::Steps,
    };
    let filtered = !args.users.is_empty()
        || args.me
        || !args.names.is_empty()
        || !args.states.is_empty()
        || !args.partitions.is_empty();
    if !filtered {
        if args.jobs.is_empty() {
            bail!("name the jobs to cancel, or which: -u USER, --me, -n NAME, -t STATE, -p PARTITION (as scancel takes them)");
        }
        // Each on its own: one that ended meanwhile, or another's, does not spare the rest.
        let mut status = 0;
        for spec in &array_ranges(&args.jobs)? {
            say(spec);
            let cancelled = match step_spec(spec) {
                // One step (JOB.STEP), its job going on.
                Some((job, step)) => cancel_step(job, step, args.signal.clone()),
                None => self::target(spec).and_then(|t| t.cancel(args.signal.clone(), target)),
            };
            if let Err(e) = cancelled {
                // scancel's words for a job it does not know.
                match crate::compat::invoked_as() {
                    Some("scancel") if crate::client::is_not_found(&e) => berth_core::say!(
                        "scancel: error: Kill job error on job id {spec}: Invalid job id specified"
                    ),
                    _ => berth_core::say!("berth: {spec}: {e:#}"),
                }
                status = 1;
            }
        }
        return Ok(status);
    }
    // As scancel filters: among the active jobs (those named, if any), each that matches
    // all the filters; a user's own only, unless root names another.
    let mut jobs = active_jobs(None, false)?;
    if !args.jobs.is_empty() {
        let named = job_ids(&array_ranges(&args.jobs)?, |_| true)?;
        jobs.retain(|j| named.contains(&j.id));
    }
    let users: Vec<String> = match (
        args.users.is_empty(),
        args.me || !crate::settings::is_root(),
    ) {
        (false, _) => user_names(&args.users)?,
        (true, true) => vec![berth_runtime::Identity::current()?.user],
        (true, false) => Vec::new(),
    };
    let states = long_states(&args.states)?;
    jobs.retain(|j| {
        selects(j, &users, &args.partitions, &states)
            && (args.names.is_empty() || args.names.contains(&j.name))
    });
    // Each on its own: one that ended meanwhile, or another's, does not spare the rest.
    let mut status = 0;
    for j in jobs {
        say(&job_id(&j));
        if let Err(e) = cancel_job(j.id, args.signal.clone(), target) {
            berth_core::say!("berth: job {}: {e:#}", job_id(&j));
            status = 1;
        }
    }
    Ok(status)
}

/// Ends step `step` of job `job` (`42.0`, `42_3.1`), as `scancel JOB.STEP` does, or sends
/// its tasks `signal` (`scancel -s SIG JOB.STEP`).
fn cancel_step(job: &str, step: &str, signal: Option<String>) -> Result<()> {
    let Ok(step) = step.parse::<u32>() else {
        bail!("{job}.{step}: its batch script is the job's: cancel job {job} (or signal it: -b)");
    };
    let Target::Job(id) = target(job)? else {
        bail!("{job}.{step}: name the array's task (ID_INDEX.STEP)");
    };
    request(
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(&CancelRequest {
            step: Some(step),
            signal,
            ..Default::default()
        }),
    )
}

/// The user a filter's `-u` names (a name, or a uid, as squeue takes it), by their name;
/// one the system does not know is refused, as squeue refuses it.
fn user_name(user: &str) -> Result<String> {
    berth_runtime::Identity::lookup(user, false)
        .map(|id| id.user)
        .map_err(|_| anyhow::anyhow!("invalid user: {user}"))
}

/// What squeue's and scancel's filters select among the active jobs: every user named (-u,
/// --me) the job's, its partition the one named, its state one of `states` (long forms;
/// none: any).
fn selects(j: &JobInfo, users: &[String], partitions: &[String], states: &[String]) -> bool {
    (users.is_empty() || users.contains(&j.user))
        && (partitions.is_empty() || partitions.contains(&j.partition))
        && (states.is_empty() || states.contains(&j.state))
}

/// The users a filter's `-u` names (each a name or a uid), by their names.
fn user_names(users: &[String]) -> Result<Vec<String>> {
    users.iter().map(|u| user_name(u)).collect()
}

/// Cancels job `id`, or sends `signal` to the processes of it `target` names.
pub fn cancel_job(id: u64, signal: Option<String>, target: SignalTarget) -> Result<()> {
    Target::Job(id).cancel(signal, target)
}

/// Ends allocation `id` with its command's status `code`, waiting for a controller out of
/// reach (restarting) up to [`CONTROLLER_GONE_LIMIT`].
pub fn end_allocation(id: u64, code: i32) -> Result<()> {
    let path = format!("/v1/jobs/{id}/allocation-end?code={code}");
    let hint = format!(": see `berth show {id}` for the job's state");
    let mut outage = Outage::default();
    loop {
        match request("POST", &path, None::<&()>) {
            Err(e) if crate::client::is_unreachable(&e) => outage.wait(e, &hint)?,
            done => return done,
        }
    }
}

pub fn history(args: HistoryArgs) -> Result<i32> {
    if args.helpformat {
        let names: Vec<&str> = ACCOUNTING.iter().map(|(name, _)| *name).collect();
        for row in names.chunks(6) {
            println!(
                "{}",
                row.iter()
                    .map(|n| format!("{n:<19}"))
                    .collect::<String>()
                    .trim_end()
            );
        }
        return Ok(0);
    }
    let mut query = Vec::new();
    if !args.users.is_empty() {
        query.push(format!("user={}", user_names(&args.users)?.join(",")));
    } else if !args.all_users && !is_root() {
        // As sacct: a user's own jobs unless all are asked for; root's, everyone's.
        query.push("mine=true".into());
    }
    let states = long_states(&args.state)?;
    // States are those the jobs were in during the window (sacct's -s), not their last:
    // all jobs of the window are asked for, and looked at here.
    let windowed = !states.is_empty() && args.jobs.is_empty();
    if !states.is_empty() && !windowed {
        query.push(format!("state={}", states.join(",")));
    }
    // As sacct: from today's midnight (with states, from now) unless a start or the jobs
    // are given.
    let now = berth_controller::now();
    let since = match (args.since, args.jobs.is_empty()) {
        (None, true) if windowed => Some(now),
        (None, true) => Some(midnight()),
        (since, _) => since,
    };
    if let Some(s) = since {
        query.push(format!("since={s}"));
    }
    if let Some(u) = args.until {
        // (In a window of states its end is in it: a job submitted then may have run then.)
        query.push(format!("until={}", u + u64::from(windowed)));
    }
    let path = if query.is_empty() {
        "/v1/history".to_string()
    } else {
        format!("/v1/history?{}", query.join("&"))
    };
    // Steps named (`42.0`): their job's line gives way to theirs alone.
    let mut only_steps: HashMap<String, Vec<&str>> = HashMap::new();
    let mut specs: Vec<String> = Vec::new();
    for spec in &args.jobs {
        let job = match step_spec(spec) {
            Some((job, step)) => {
                only_steps.entry(job.to_string()).or_default().push(step);
                job
            }
            None => spec,
        };
        if !specs.iter().any(|s| s == job) {
            specs.push(job.to_string());
        }
    }
    let mut jobs: Vec<JobInfo> = if args.jobs.is_empty() {
        request("GET", &path, None::<&()>)?
    } else {
        // A job there is no record of is left out, as sacct does (its table is empty, its
        // status 0: scripts poll sacct for jobs it may not know yet).
        let mut jobs = Vec::new();
        for spec in &specs {
            match named_jobs(std::slice::from_ref(spec)) {
                Ok(found) => jobs.extend(found),
                Err(e) if crate::client::is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        jobs
    };
    let on_nodes = args.nodelist.as_deref().map(node_names).transpose()?;
    // Each job once, where the specs overlap (`-j 26,26_2`), as sacct lists them.
    let mut seen = std::collections::HashSet::new();
    jobs.retain(|j| {
        seen.insert(j.id)
            && (args.names.is_empty() || args.names.contains(&j.name))
            && ran_on(j, on_nodes.as_deref())
            && charged_to(j, &args.accounts)
            && (args.partitions.is_empty() || args.partitions.contains(&j.partition))
            && match windowed {
                true => (states.iter())
                    .any(|s| was_in(j, s, since.unwrap_or(0), args.until.unwrap_or(now))),
                false => states.is_empty() || states.contains(&j.state),
            }
    });
    if args.truncate {
        for j in jobs.iter_mut().filter(|j| j.start_time.is_some()) {
            j.start_time = j.start_time.max(since);
            if let Some(until) = args.until {
                j.end_time = Some(j.end_time.map_or(until, |end| end.min(until)));
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        return print_json(&mut out, &jobs);
    }
    if args.batch_script {
        // (An array's tasks have its one script: it is shown once.)
        let mut seen = std::collections::BTreeSet::new();
        for j in jobs
            .iter()
            .filter(|j| seen.insert(j.array_job_id.unwrap_or(j.id)))
        {
            let id = job_id(j);
            let script = match crate::client::text(&format!("/v1/jobs/{}/script", j.id)) {
                Ok(text) => text,
                // An allocation has none, as sacct says of it.
                Err(e) if crate::client::is_not_found(&e) => "NONE\n".into(),
                Err(e) => return Err(e),
            };
            write!(out, "Batch Script for {id}\n{}\n{script}", "-".repeat(80))?;
        }
        return Ok(0);
    }
    let default = match (args.brief, args.long) {
        (true, _) => "JobID%12,State%10,ExitCode%8",
        (_, true) => "JobID,JobIDRaw,JobName,Partition,MaxRSS,NTasks,AllocCPUS,Elapsed,State,ExitCode,ReqMem,AllocTRES",
        _ => "JobID%10,JobName%16,User%10,State%13,ExitCode%8,Elapsed%10,TotalCPU%10,MaxRSS%9",
    };
    let mut table = Table::new(&args.format, default, ACCOUNTING, args.parsable2)?
        .separated_by(&args.delimiter);
    if args.parsable {
        table = table.ending_in_bars();
    }
    if !args.noheader {
        writeln!(out, "{}", table.line(|name| name.to_string()))?;
        if let Some(dashes) = table.dashes() {
            writeln!(out, "{dashes}")?;
        }
    }
    // Sizes in the unit asked for, or in KiB as recorded.
    let unit = match (&args.units, args.noconvert) {
        (Some(u), _) => u.to_ascii_uppercase().chars().next(),
        (None, true) => Some('K'),
        (None, false) => None,
    };
    // The cluster's name, asked for once if a line shows it.
    let cluster = std::cell::OnceCell::new();
    let sized = |name: &str, value: String| match (unit, name) {
        (Some(unit), "MaxRSS" | "ReqMem") => in_unit(&value, unit, !args.noconvert),
        (_, "Cluster") => cluster
            .get_or_init(|| {
                let config: Result<berth_api::ConfigInfo> =
                    crate::client::request("GET", "/v1/config", None::<&()>);
                config.map_or(String::new(), |c| c.cluster_name)
            })
            .clone(),
        _ => value,
    };
    let _ = &args.clusters;
    for j in &jobs {
        let named = only_steps
            .get(&job_id(j))
            .or(only_steps.get(&j.id.to_string()));
        let earlier = j.earlier_runs.iter().filter(|_| args.duplicates);
        for run in earlier.filter(|_| named.is_none()) {
            let run = earlier_run(j, run);
            writeln!(
                out,
                "{}",
                table.line(|name| sized(name, accounting(name, &run)))
            )?;
        }
        if named.is_none() {
            writeln!(
                out,
                "{}",
                table.line(|name| sized(name, accounting(name, j)))
            )?;
        }
        // Its batch script's step, `ID.batch`, once it ran, as sacct lists it (with the
        // job's own accounting: the script's container holds the job's processes).
        let batch = match named {
            Some(named) => named.contains(&"batch"),
            None => !args.allocations,
        };
        if batch && j.start_time.is_some() && !j.allocation {
            let line = table.line(|name| sized(name, batch_accounting(name, j)));
            writeln!(out, "{line}")?;
        }
        // Then its steps, `ID.N`, as sacct lists them.
        let steps = j.steps.iter().filter(|step| match named {
            Some(named) => named.contains(&step.id.to_string().as_str()),
            None => !args.allocations,
        });
        for step in steps {
            let line = table.line(|name| sized(name, step_accounting(name, j, step)));
            writeln!(out, "{line}")?;
        }
    }
    Ok(0)
}

/// The most memory job `j` used: its cgroup's peak, or a step's if that says more (a step's
/// tasks' resident sets count the pages they share, which the cgroup charges elsewhere).
pub fn peak_memory(j: &JobInfo) -> Option<u64> {
    let steps = (j.steps.iter()).filter_map(|s| s.usage.map(|u| u.max_rss_bytes));
    j.max_rss_bytes.into_iter().chain(steps).max()
}

/// Whether job `j` was in `state` at some time in `[from, to]`, as sacct's -s with a window
/// asks: running or suspended in it, waiting in it, or having ended in it so.
fn was_in(j: &JobInfo, state: &str, from: u64, to: u64) -> bool {
    let overlaps = |start: u64, end: Option<u64>| start <= to && end.is_none_or(|e| e >= from);
    match state {
        "RUNNING" => j.start_time.is_some_and(|s| overlaps(s, j.end_time)),
        "SUSPENDED" => (j.suspensions.iter()).any(|s| overlaps(s.start, s.end)),
        "PENDING" => overlaps(j.submit_time, j.start_time.or(j.end_time)),
        ended => j.state == ended && j.end_time.is_some_and(|e| from <= e && e <= to),
    }
}

/// Job `j` as it was in an earlier run of its own (before a requeue), for its line.
fn earlier_run(j: &JobInfo, run: &berth_api::JobRun) -> JobInfo {
    JobInfo {
        state: run.state.clone(),
        start_time: Some(run.start_time),
        end_time: Some(run.end_time),
        nodes: run.nodes.clone(),
        cpu_ids: Vec::new(),
        cpus: run.cpus,
        exit_code: run.exit_code,
        signal: run.signal,
        cpu_usec: run.cpu_usec,
        user_cpu_usec: None,
        system_cpu_usec: None,
        max_rss_bytes: run.max_rss_bytes,
        suspended_seconds: 0,
        cancelled_by: None,
        steps: Vec::new(),
        earlier_runs: Vec::new(),
        ..j.clone()
    }
}

/// A job's step as sacct and scancel name it, `JOB.STEP` (`42.0`, `42_3.1`, `42.batch`):
/// the job's part and the step's; `None` for a job (`42`, or PBS's `42.server`).
pub(crate) fn step_spec(spec: &str) -> Option<(&str, &str)> {
    let (job, step) = spec.rsplit_once('.')?;
    let numbered = !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit());
    (numbered || matches!(step, "batch" | "extern" | "interactive")).then_some((job, step))
}

/// The batch step's field as sacct names it: the job's, under the step's own name.
fn batch_accounting(name: &str, j: &JobInfo) -> String {
    match name {
        "JobID" => format!("{}.batch", job_id(j)),
        "JobIDRaw" => format!("{}.batch", j.id),
        "JobName" => "batch".into(),
        "NNodes" | "AllocNodes" => "1".into(),
        "NodeList" => j.nodes.first().cloned().unwrap_or_default(),
        "NTasks" => "1".into(),
        "Partition" | "Account" | "User" | "Timelimit" | "Reason" | "ReqMem" | "ReqCPUS" => {
            String::new()
        }
        // The batch shell's own: what the job used on its batch host, less its steps' there
        // (the job's line is their sum, as sacct's). One task: its own on average.
        "TotalCPU" | "UserCPU" | "SystemCPU" | "AveCPU" => match batch_cpu(j) {
            Some((user, system)) => cpu_time(match name {
                "UserCPU" => user,
                "SystemCPU" => system,
                _ => user + system,
            }),
            None => accounting(if name == "AveCPU" { "TotalCPU" } else { name }, j),
        },
        "AveRSS" => accounting("MaxRSS", j),
        _ => accounting(name, j),
    }
}

/// The batch shell's own user and system CPU time: the job's on its batch host less its
/// steps' that ran there alone; `None` where the job's are not known apart.
fn batch_cpu(j: &JobInfo) -> Option<(u64, u64)> {
    let (user, system) = (j.user_cpu_usec?, j.system_cpu_usec?);
    let batch = j.nodes.first()?;
    let (steps_user, steps_system) = (j.steps.iter())
        .filter(|s| s.nodes.iter().all(|n| n == batch) && (!s.nodes.is_empty() || s.node == *batch))
        .filter_map(|s| s.usage)
        .fold((0, 0), |(u, sy), usage| {
            (u + usage.user_usec, sy + usage.system_usec)
        });
    Some((
        user.saturating_sub(steps_user),
        system.saturating_sub(steps_system),
    ))
}

/// A step's field as sacct names it; empty where berth records nothing of the step's own.
fn step_accounting(name: &str, j: &JobInfo, step: &berth_api::StepInfo) -> String {
    let time = |t: Option<u64>| t.map_or("Unknown".to_string(), crate::compat::slurm_timestamp);
    let oom_killed = step.usage.is_some_and(|u| u.oom_kills > 0);
    match name {
        "JobID" => format!("{}.{}", job_id(j), step.id),
        "JobIDRaw" => format!("{}.{}", j.id, step.id),
        // Its name (srun -J), else its program's, as sacct shows a step's.
        "JobName" => step.name.clone().unwrap_or_else(|| {
            step.command
                .split_whitespace()
                .next()
                .map(crate::compat::base_name)
                .unwrap_or_default()
        }),
        "State" => match (step.exit_code, step.cancelled) {
            _ if step.timed_out => "TIMEOUT",
            (_, true) => "CANCELLED",
            (None, _) if j.state == "SUSPENDED" => "SUSPENDED",
            (None, _) => "RUNNING",
            _ if oom_killed => "OUT_OF_MEMORY",
            (Some(0), _) => "COMPLETED",
            (Some(_), _) => "FAILED",
        }
        .into(),
        // A status of 128 + N was signal N: sacct's 0:N (an OOM kill's, Slurm's 0:125).
        "ExitCode" if oom_killed => "0:125".into(),
        "ExitCode" => exit_code_of(step),
        "Elapsed" => duration(step_elapsed(j, step, berth_controller::now())),
        "ElapsedRaw" => step_elapsed(j, step, berth_controller::now()).to_string(),
        "Submit" | "Start" => time(Some(step.start_time)),
        "End" => time(step.end_time),
        "TotalCPU" => step
            .usage
            .map_or("-".into(), |u| cpu_time(u.user_usec + u.system_usec)),
        "UserCPU" => step.usage.map_or("-".into(), |u| cpu_time(u.user_usec)),
        "SystemCPU" => step.usage.map_or("-".into(), |u| cpu_time(u.system_usec)),
        "MaxRSS" => step
            .usage
            .map_or(String::new(), |u| slurm_size(u.max_rss_bytes)),
        // Each task's on average; its tasks' sizes are known apart only where it has one.
        "AveCPU" => step.usage.map_or(String::new(), |u| {
            cpu_time((u.user_usec + u.system_usec) / u64::from(step.ntasks.max(1)))
        }),
        "AveRSS" if step.ntasks == 1 => step_accounting("MaxRSS", j, step),
        "NTasks" => step.ntasks.to_string(),
        "NNodes" => step_nodes(j, step).len().max(1).to_string(),
        // (Without one of its own, the job's bounds it.)
        "Timelimit" => step
            .time_limit
            .or(j.time_limit)
            .map_or("UNLIMITED".into(), duration),
        "AllocCPUS" | "NCPUS" => step_cpus(step).to_string(),
        "NodeList" => berth_core::job::hostlist(step_nodes(j, step)),
        // What it held: its CPUs, its own memory (else its job's on its nodes), its nodes.
        "AllocTRES" => {
            let nodes = step_nodes(j, step).len().max(1);
            let own: u64 = step.cpu_ids.iter().filter_map(|n| n.memory_bytes).sum();
            let memory = match own {
                0 => j.memory.map(|m| m * nodes as u64),
                own => Some(own),
            };
            let mem = memory.map_or(String::new(), |m| format!(",mem={}", slurm_size(m)));
            format!("cpu={}{mem},node={nodes}", step_cpus(step))
        }
        // Its CPUs times the time it ran.
        "CPUTime" => {
            duration(step_cpus(step) as u64 * step_elapsed(j, step, berth_controller::now()))
        }
        "CPUTimeRAW" => {
            (step_cpus(step) as u64 * step_elapsed(j, step, berth_controller::now())).to_string()
        }
        _ => String::new(),
    }
}

/// The CPUs a step held (one a task where it held none of its own: it overlapped).
fn step_cpus(step: &berth_api::StepInfo) -> usize {
    match step.cpu_ids.iter().map(|n| n.cpu_ids.len()).sum() {
        0 => step.ntasks as usize,
        held => held,
    }
}

/// The nodes a step ran on (its job's, in a record that did not say).
fn step_nodes<'a>(j: &'a JobInfo, step: &'a berth_api::StepInfo) -> &'a [String] {
    match step.nodes.is_empty() {
        true => &j.nodes,
        false => &step.nodes,
    }
}

/// Columns as sacct's and sstat's --format names them (`NAME[%WIDTH]`, among `known`'s
/// names with their default widths), right-aligned and cut to width, or (`parsable`) as
/// they are, separated by '|'. (sshare's too.)
pub(crate) struct Table {
    /// Each column's field, width, and whether it is left-justified (`%-10`).
    columns: Vec<(&'static str, usize, bool)>,
    parsable: bool,
    /// What separates parsable fields: `|`, or sacct's --delimiter.
    delimiter: String,
    /// A delimiter after the last field too (sacct -p).
    trailing: bool,
}

impl Table {
    /// `format`'s columns, or `default`'s where it names none.
    pub(crate) fn new(
        format: &[String],
        default: &str,
        known: &[(&'static str, usize)],
        parsable: bool,
    ) -> Result<Table> {
        // `ALL`: every field known, as sacct and sstat take it.
        let fields: Vec<String> = match format {
            [] => default.split(',').map(String::from).collect(),
            [all] if all.eq_ignore_ascii_case("all") => {
                known.iter().map(|(n, _)| n.to_string()).collect()
            }
            _ => format.to_vec(),
        };
        let columns = fields
            .iter()
            .map(|f| {
                let (name, width) = f.split_once('%').unwrap_or((f, ""));
                // (`%-10`: left-justified.)
                let (left, width) = match width.strip_prefix('-') {
                    Some(w) => (true, w),
                    None => (false, width),
                };
                let found = known.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
                match (found, width.parse::<usize>()) {
                    (Some((name, _)), Ok(width)) => Ok((*name, width.clamp(1, 256), left)),
                    (Some((name, w)), Err(_)) if width.is_empty() => Ok((*name, *w, left)),
                    _ => Err(anyhow::anyhow!(
                        "--format {f:?}: berth knows {}, each with an optional %WIDTH (%-WIDTH: left-justified)",
                        known.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    )),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Table {
            columns,
            parsable,
            delimiter: "|".into(),
            trailing: false,
        })
    }

    /// Parsable fields separated by `delimiter` (sacct's --delimiter).
    pub(crate) fn separated_by(mut self, delimiter: &str) -> Table {
        self.delimiter = delimiter.to_string();
        self
    }

    /// Parsable, each line ending in a `|` too (sacct's -p, where -P has none).
    pub(crate) fn ending_in_bars(mut self) -> Table {
        self.parsable = true;
        self.trailing = true;
        self
    }

    /// One line, `value` giving each column's by its name: padded to the column's width,
    /// and a longer value cut with a `+` at its end, as Slurm's tools cut them.
    pub(crate) fn line(&self, value: impl Fn(&str) -> String) -> String {
        let cells = self.columns.iter().map(|(name, width, left)| {
            let v = value(name);
            match (self.parsable, v.chars().count() > *width) {
                (true, _) => v,
                (false, false) if *left => format!("{v:<width$}"),
                (false, false) => format!("{v:>width$}"),
                (false, true) => format!("{}+", truncate(&v, width - 1)),
            }
        });
        let mut line =
            cells
                .collect::<Vec<_>>()
                .join(if self.parsable { &self.delimiter } else { " " });
        if self.trailing {
            line.push_str(&self.delimiter);
        }
        line
    }

    /// The line of dashes under the header, each column's as wide as it (none where
    /// parsable).
    pub(crate) fn dashes(&self) -> Option<String> {
        let dashes = self.columns.iter().map(|(_, width, _)| "-".repeat(*width));
        (!self.parsable).then(|| dashes.collect::<Vec<_>>().join(" "))
    }
}

/// `berth usage` (sstat): what running jobs, or their steps, have used so far, a line per
/// node.
pub fn usage(args: UsageArgs) -> Result<i32> {
    let specs: Vec<String> = args.jobs.into_iter().chain(args.listed).collect();
    if specs.is_empty() {
        bail!("name the running jobs to read (berth usage JOB..., as sstat -j JOB)");
    }
    // Each job's usage, read once; what each spec asks of it: JOB (with --allsteps its
    // steps too), JOB.batch (the job's whole usage: its batch script's container holds the
    // processes of the steps that run in it), or JOB.STEP.
    let mut usages: Vec<JobUsage> = Vec::new();
    let mut rows: Vec<UsageRow> = Vec::new();
    for spec in &specs {
        let (job, step) = match step_spec(spec) {
            Some((job, "batch")) => (job, Some(None)),
            Some((job, step)) => match step.parse::<u32>() {
                Ok(n) => (job, Some(Some(n))),
                Err(_) => bail!("{spec}: a running job's steps are read by number (JOB.0, JOB.1, ...), or JOB.batch"),
            },
            None => (spec.as_str(), None),
        };
        for id in job_ids(&[job.to_string()], applies("usage"))? {
            let u = match usages.iter().find(|u| u.job == id) {
                Some(u) => u.clone(),
                None => {
                    let u: JobUsage = request("GET", &format!("/v1/jobs/{id}/usage"), None::<&()>)?;
                    usages.push(u.clone());
                    u
                }
            };
            // (An array's task as sstat names it, `42_7`.)
            let name = match (u.array_job_id, u.array_task_id) {
                (Some(array), Some(index)) => format!("{array}_{index}"),
                _ => id.to_string(),
            };
            let whole = |label: String| {
                u.nodes
                    .iter()
                    .map(move |n| UsageRow::of_node(label.clone(), u.elapsed_seconds, n))
            };
            match step {
                None => {
                    rows.extend(whole(name.clone()));
                    if args.allsteps {
                        let mut steps: Vec<UsageRow> = u
                            .nodes
                            .iter()
                            .flat_map(|n| {
                                n.steps.iter().map(|s| UsageRow::of_step(&name, &n.node, s))
                            })
                            .collect();
                        steps.sort_by_key(|r| r.step);
                        rows.extend(steps);
                    }
                }
                Some(None) => rows.extend(whole(format!("{name}.batch"))),
                Some(Some(n)) => {
                    let before = rows.len();
                    for node in &u.nodes {
                        let steps = node.steps.iter().filter(|s| s.step == n);
                        rows.extend(steps.map(|s| UsageRow::of_step(&name, &node.node, s)));
                    }
                    if rows.len() == before {
                        bail!("job {id} runs no step {n} now (`berth history -j {id}` has what an ended step used)");
                    }
                }
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        return print_json(&mut out, &usages);
    }
    let mut table = Table::new(
        &args.format,
        "JobID,Node,Elapsed,TotalCPU,Memory,MaxRSS",
        USAGE,
        args.parsable2 || args.parsable,
    )?;
    if args.parsable {
        table = table.ending_in_bars();
    }
    if !args.noheader {
        writeln!(out, "{}", table.line(|name| name.to_string()))?;
        if let Some(dashes) = table.dashes() {
            writeln!(out, "{dashes}")?;
        }
    }
    let bytes = |b: Option<u64>| b.map_or(String::new(), slurm_size);
    for r in &rows {
        let tasks = u64::from(r.tasks.max(1));
        let line = table.line(|name| match name {
            "JobID" => r.id.clone(),
            "Node" | "MaxRSSNode" => r.node.clone(),
            "Elapsed" => duration(r.elapsed),
            "TotalCPU" => r.cpu.map_or("-".into(), |s| cpu_time((s * 1e6) as u64)),
            // Per task there, as sstat's averages over a step's tasks.
            "AveCPU" => r
                .cpu
                .map_or("-".into(), |s| cpu_time((s * 1e6) as u64 / tasks)),
            "Memory" => bytes(r.memory),
            "AveRSS" => bytes(r.memory.map(|b| b / tasks)),
            "NTasks" => tasks.to_string(),
            "MaxRSS" => bytes(r.max),
            _ => String::new(),
        });
        writeln!(out, "{line}")?;
    }
    Ok(0)
}

/// A line of `berth usage`: a job's or a step's use of one node.
struct UsageRow {
    id: String,
    /// The step's number (a job's line: none).
    step: Option<u32>,
    node: String,
    elapsed: u64,
    cpu: Option<f64>,
    memory: Option<u64>,
    max: Option<u64>,
    tasks: u32,
}

impl UsageRow {
    fn of_node(id: String, elapsed: u64, n: &berth_api::NodeUsage) -> UsageRow {
        UsageRow {
            id,
            step: None,
            node: n.node.clone(),
            elapsed,
            cpu: n.cpu_seconds,
            memory: n.memory_bytes,
            max: n.max_memory_bytes,
            tasks: n.tasks,
        }
    }

    fn of_step(job: &str, node: &str, s: &berth_api::StepNodeUsage) -> UsageRow {
        UsageRow {
            id: format!("{job}.{}", s.step),
            step: Some(s.step),
            node: node.to_string(),
            elapsed: s.elapsed_seconds,
            cpu: Some(s.cpu_seconds),
            memory: Some(s.memory_bytes),
            max: Some(s.max_memory_bytes),
            tasks: s.tasks,
        }
    }
}

/// What job `j` has used so far if it runs (and it can be read: the job may just have
/// ended), for the commands that show it beside a job's record (qstat -f, bjobs -l).
pub fn running_usage(j: &JobInfo) -> Option<JobUsage> {
    matches!(j.state.as_str(), "RUNNING" | "SUSPENDED")
        .then(|| request("GET", &format!("/v1/jobs/{}/usage", j.id), None::<&()>).ok())
        .flatten()
}

/// `berth usage`'s columns, and their default widths.
const USAGE: &[(&str, usize)] = &[
    ("JobID", 10),
    ("Node", 12),
    ("Elapsed", 10),
    ("TotalCPU", 10),
    ("AveCPU", 10),
    ("Memory", 10),
    ("AveRSS", 10),
    ("MaxRSS", 10),
    ("MaxRSSNode", 10),
    ("NTasks", 8),
    // sstat's, which berth does not measure: empty, so that a format naming them still
    // gives the rest.
    ("AveVMSize", 10),
    ("MaxVMSize", 10),
    ("MaxVMSizeNode", 13),
    ("MaxVMSizeTask", 13),
    ("MaxRSSTask", 10),
    ("AvePages", 8),
    ("MaxPages", 8),
    ("MaxPagesNode", 12),
    ("MaxPagesTask", 12),
    ("MinCPU", 10),
    ("MinCPUNode", 10),
    ("MinCPUTask", 10),
    ("AveCPUFreq", 10),
    ("AveDiskRead", 12),
    ("AveDiskWrite", 12),
    ("MaxDiskRead", 12),
    ("MaxDiskWrite", 12),
    ("ConsumedEnergy", 14),
];

/// sacct's field names berth reports, and their default widths.
const ACCOUNTING: &[(&str, usize)] = &[
    ("JobID", 12),
    ("JobIDRaw", 12),
    ("JobName", 10),
    ("User", 9),
    ("Partition", 10),
    ("Account", 10),
    ("State", 10),
    ("ExitCode", 8),
    ("Elapsed", 10),
    ("TotalCPU", 10),
    ("UserCPU", 10),
    ("SystemCPU", 10),
    ("MaxRSS", 10),
    ("AveCPU", 10),
    ("AveRSS", 10),
    ("NNodes", 8),
    ("NTasks", 8),
    ("NCPUS", 10),
    ("NodeList", 15),
    ("Timelimit", 10),
    ("Submit", 19),
    ("Start", 19),
    ("End", 19),
    ("Eligible", 19),
    ("Reason", 20),
    ("AllocCPUS", 10),
    ("ReqCPUS", 8),
    ("ReqMem", 10),
    ("ReqNodes", 8),
    ("AllocNodes", 10),
    ("AllocTRES", 30),
    ("CPUTime", 10),
    ("CPUTimeRAW", 10),
    ("ElapsedRaw", 10),
    ("DerivedExitCode", 15),
    ("Priority", 10),
    ("WorkDir", 30),
    ("Constraints", 19),
    ("Group", 9),
    ("UID", 6),
    ("GID", 6),
    ("Comment", 20),
    ("Suspended", 10),
    ("QOS", 10),
    ("TimelimitRaw", 12),
    ("ReqTRES", 30),
    ("Reserved", 10),
    ("Planned", 10),
    ("Cluster", 10),
    // Slurm's, which berth does not record: empty, so that a SACCT_FORMAT naming them
    // still gives the rest.
    ("MaxVMSize", 10),
    ("MaxVMSizeNode", 13),
    ("MaxVMSizeTask", 13),
    ("AveVMSize", 10),
    ("MaxRSSNode", 10),
    ("MaxRSSTask", 10),
    ("MaxPages", 8),
    ("AvePages", 8),
    ("MaxDiskRead", 12),
    ("MaxDiskWrite", 12),
    ("AveDiskRead", 12),
    ("AveDiskWrite", 12),
    ("ConsumedEnergy", 14),
    ("Layout", 10),
    ("AssocID", 10),
    ("Flags", 10),
    ("SubmitLine", 20),
];

fn accounting(name: &str, j: &JobInfo) -> String {
    let time = |t: Option<u64>| t.map_or("Unknown".to_string(), crate::compat::slurm_timestamp);
    match name {
        "JobID" => job_id(j),
        "JobIDRaw" => j.id.to_string(),
        "JobName" => j.name.clone(),
        "User" => j.user.clone(),
        "Partition" => j.partition.clone(),
        "Account" => j.account.clone().unwrap_or_default(),
        "Comment" => j.comment.clone().unwrap_or_default(),
        "Suspended" => duration(j.suspended_seconds),
        "QOS" => QOS.into(),
        "State" => match j.cancelled_by {
            Some(uid) if j.state == "CANCELLED" => format!("CANCELLED by {uid}"),
            _ => j.state.clone(),
        },
        // sacct's CODE:SIGNAL.
        "ExitCode" => job_exit_code(j),
        "Elapsed" => duration(elapsed(j)),
        // User and system time together where both are known (the cgroup's other counter
        // is counted otherwise, and may disagree with their sum), as sacct's.
        "TotalCPU" => match (j.user_cpu_usec, j.system_cpu_usec) {
            (Some(user), Some(system)) => cpu_time(user + system),
            _ => j.cpu_usec.map_or("-".into(), cpu_time),
        },
        "UserCPU" => j.user_cpu_usec.map_or("-".into(), cpu_time),
        "SystemCPU" => j.system_cpu_usec.map_or("-".into(), cpu_time),
        "MaxRSS" => peak_memory(j).map_or(String::new(), slurm_size),
        // The allocation's line has no tasks of its own to average over, as sacct's.
        "AveCPU" | "AveRSS" => String::new(),
        "NNodes" => j.nodes.len().max(1).to_string(),
        "NTasks" => j.ntasks.max(1).to_string(),
        "NCPUS" => j.cpus.to_string(),
        "NodeList" => match j.nodes.as_slice() {
            [] => "None assigned".into(),
            nodes => berth_core::job::hostlist(nodes),
        },
        "Timelimit" => j.time_limit.map_or("UNLIMITED".into(), duration),
        "Submit" => time(Some(j.submit_time)),
        "Start" => time(j.start_time),
        "End" => time(j.end_time),
        "Eligible" => time(Some(
            j.begin_time.unwrap_or(j.submit_time).max(j.submit_time),
        )),
        "AllocCPUS" => match j.start_time {
            Some(_) => j.cpus.to_string(),
            None => "0".into(),
        },
        "ReqCPUS" => (j.ntasks.max(1) * j.cpus_per_task.max(1)).to_string(),
        // Per node, as sacct has it without its old n/c suffix.
        "ReqMem" => j.memory.map_or("0".into(), slurm_size),
        "ReqNodes" => j.min_nodes.max(1).to_string(),
        "AllocNodes" => j.nodes.len().to_string(),
        "AllocTRES" => match j.start_time {
            Some(_) => {
                let mem = j.memory.map_or(String::new(), |m| {
                    format!(",mem={}", slurm_size(m * j.nodes.len().max(1) as u64))
                });
                format!(
                    "billing={0},cpu={0}{1}{mem},node={2}",
                    j.cpus,
                    gpu_tres(j.gpus),
                    j.nodes.len().max(1)
                )
            }
            None => String::new(),
        },
        // CPUs times the time it ran (what fair share charges).
        "CPUTime" => duration(j.cpus * elapsed(j)),
        "CPUTimeRAW" => (j.cpus * elapsed(j)).to_string(),
        "ElapsedRaw" => elapsed(j).to_string(),
        // The worst of its steps' as wait(2) orders them (Slurm's): any exit status over
        // any signal.
        "DerivedExitCode" => j
            .steps
            .iter()
            .filter(|s| s.exit_code.is_some())
            .max_by_key(|s| match (s.signal, s.exit_code) {
                (Some(signal), _) => signal,
                (None, code) => code.unwrap_or(0) << 8,
            })
            .map_or_else(|| slurm_exit_code(None, None), exit_code_of),
        "Priority" => j.priority.map_or("0".into(), |p| format!("{p:.0}")),
        "WorkDir" => j.workdir.clone(),
        "Constraints" => j.constraint.clone().unwrap_or_default(),
        "Group" | "UID" | "GID" => match berth_runtime::Identity::lookup(&j.user, false) {
            Ok(id) if name == "Group" => id.group,
            Ok(id) if name == "UID" => id.uid.to_string(),
            Ok(id) => id.gid.to_string(),
            Err(_) => String::new(),
        },
        "Reason" => j.reason.clone().unwrap_or_else(|| "None".into()),
        // Its limit in minutes.
        "TimelimitRaw" => j
            .time_limit
            .map_or("UNLIMITED".into(), |t| t.div_ceil(60).to_string()),
        "ReqTRES" => {
            let cpus = j.ntasks.max(1) * j.cpus_per_task.max(1);
            let nodes = j.min_nodes.max(1);
            let mem = j.memory.map_or(String::new(), |m| {
                format!(",mem={}", slurm_size(m * nodes as u64))
            });
            // The GPUs it asks for, all its tasks' or nodes' together.
            let gpus = j.gpus_asked.as_ref().map_or(0, |g| match g.per {
                berth_api::GpuPer::Node => g.count * nodes,
                berth_api::GpuPer::Task => g.count * j.ntasks.max(1),
                berth_api::GpuPer::Job => g.count,
            });
            format!(
                "billing={cpus},cpu={cpus}{}{mem},node={nodes}",
                gpu_tres(gpus)
            )
        }
        // How long it waited once eligible.
        "Reserved" | "Planned" => j.start_time.map_or(String::new(), |start| {
            duration(start.saturating_sub(j.begin_time.unwrap_or(j.submit_time).max(j.submit_time)))
        }),
        _ => String::new(),
    }
}

/// `,gres/gpu=N` in a TRES list, where there are GPUs.
fn gpu_tres(gpus: u32) -> String {
    match gpus {
        0 => String::new(),
        n => format!(",gres/gpu={n}"),
    }
}

/// A step's exit status as sacct's CODE:SIGNAL (`0:N` where signal N killed its worst task).
fn exit_code_of(step: &berth_api::StepInfo) -> String {
    slurm_exit_code(step.exit_code, step.signal)
}

/// A job's ExitCode as sacct and scontrol show it: [`slurm_exit_code`], and `0:125` for
/// one its memory limit ended (OUT_OF_MEMORY), as Slurm shows it.
fn job_exit_code(j: &JobInfo) -> String {
    match j.state.as_str() {
        "OUT_OF_MEMORY" => "0:125".into(),
        _ => slurm_exit_code(j.exit_code, j.signal),
    }
}

/// Slurm's `EXIT:SIGNAL` (sacct's ExitCode, scontrol's): a process killed by a signal shows
/// `0:SIGNAL`, one that exited `CODE:0`.
fn slurm_exit_code(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(s)) => format!("0:{s}"),
        (Some(c), None) => format!("{c}:0"),
        (None, None) => "0:0".into(),
    }
}

/// Whether job `j` is charged to one of `accounts` (none: any job is).
fn charged_to(j: &JobInfo, accounts: &[String]) -> bool {
    accounts.is_empty() || j.account.as_ref().is_some_and(|a| accounts.contains(a))
}

/// A size as sacct prints memory: kibibytes with a `K`, in a larger unit only where it is
/// exact (`5224K`, `2M`, `1G`), as its default (exact) conversion does.
pub fn slurm_size(bytes: u64) -> String {
    let mut value = bytes.div_ceil(1024);
    let mut units = ['K', 'M', 'G', 'T', 'P'].into_iter().peekable();
    let mut unit = units.next().expect("K");
    while value >= 1024 && value % 1024 == 0 && units.peek().is_some() {
        value /= 1024;
        unit = units.next().expect("peeked");
    }
    format!("{value}{unit}")
}

/// A size as [`slurm_size`] writes it (`5224K`, `300M`) in `unit` (K, M, G, T or P): with
/// two decimals (`0.01G`, as sacct --units writes it), or (`decimals` false) whole, as sacct
/// --noconvert does; anything else as it is.
fn in_unit(size: &str, unit: char, decimals: bool) -> String {
    const UNITS: &str = "KMGTP";
    let (Some(from), Some(to)) = (
        size.chars().last().and_then(|u| UNITS.find(u)),
        UNITS.find(unit),
    ) else {
        return size.to_string();
    };
    let Ok(value) = size[..size.len() - 1].parse::<f64>() else {
        return size.to_string();
    };
    let value = value * 1024f64.powi(from as i32 - to as i32);
    match decimals {
        true => format!("{value:.2}{unit}"),
        false => format!("{}{unit}", value.ceil() as u64),
    }
}

/// Seconds job `j` has run: to its end, or to now while it runs; 0 before it starts.
pub fn elapsed(j: &JobInfo) -> u64 {
    // Time suspended does not count, as Slurm's sacct counts it.
    let span = match (j.start_time, j.end_time) {
        (Some(s), Some(e)) => e.saturating_sub(s),
        (Some(s), None) => berth_controller::now().saturating_sub(s),
        _ => 0,
    };
    span.saturating_sub(j.suspended_seconds)
}

/// Seconds step `s` of job `j` has run, to its end or to `now`: its job's suspended time
/// does not count, as Slurm counts a step's.
pub fn step_elapsed(j: &JobInfo, s: &berth_api::StepInfo, now: u64) -> u64 {
    let end = s.end_time.unwrap_or(now);
    let suspended: u64 = (j.suspensions.iter())
        .map(|spell| {
            let to = spell.end.unwrap_or(now).min(end);
            to.saturating_sub(spell.start.max(s.start_time))
        })
        .sum();
    end.saturating_sub(s.start_time).saturating_sub(suspended)
}

/// `42` (a job, or an array job whole) or `42_7` (task 7 of array 42), also as LSF and PBS
/// write them (`42[7]`, `42[]`, `42.server`).
pub fn job_spec(spec: &str) -> Result<(u64, Option<u32>)> {
    // PBS's ids name their server (`42.server`); elsewhere `42.x` is a step mistyped, and
    // must not stand for its whole job (`scancel 42.O` cancelling job 42).
    if spec.contains('.') && !crate::compat::pbs_ids() {
        bail!("{spec}: not a job id (JOBID or JOBID_INDEX; a step is JOBID.STEP, STEP a number or batch)");
    }
    berth_core::job::parse_job_id(spec)
        .with_context(|| format!("{spec}: not a job id (JOBID, JOBID_INDEX or JOBID[INDEX])"))
}

/// Jobs by id, ended or not: `42` is job 42 and, for an array job, each of its tasks
/// (consecutive ids); `42_7` is task 7 of array 42. A few requests however many tasks an
/// array has.
pub fn named_jobs(specs: &[String]) -> Result<Vec<JobInfo>> {
    let mut jobs = Vec::new();
    for spec in specs {
        let (id, index) = job_spec(spec)?;
        let first: JobInfo = request("GET", &format!("/v1/jobs/{id}"), None::<&()>)?;
        no_array_named(spec, &first)?;
        let ids = task_range(&first, index).with_context(|| spec.clone())?;
        if ids == (id..id + 1) {
            jobs.push(first);
        } else if index.is_none() {
            jobs.extend(array_tasks(id)?);
        } else {
            jobs.push(request(
                "GET",
                &format!("/v1/jobs/{}", ids.start),
                None::<&()>,
            )?);
        }
    }
    Ok(jobs)
}

/// The ids that job `first` with `index` names: itself; for an array job (`first` its first
/// task) all its tasks' consecutive ids, or with `index` the one task of that index.
pub fn task_range(first: &JobInfo, index: Option<u32>) -> Result<std::ops::Range<u64>> {
    let id = first.id;
    let array = first
        .array_spec
        .as_deref()
        .filter(|_| first.array_job_id == Some(id))
        .map(berth_core::job::ArraySpec::parse)
        .transpose()
        .context("the controller sent an unreadable array")?;
    // (A task that is not there is not found, as a job that is not.)
    let none = |i| crate::client::Failure::NotFound(format!("job {id} has no array task {i}"));
    Ok(match (index, array) {
        (None, None) => id..id + 1,
        (None, Some(array)) => id..id + array.len() as u64,
        (Some(i), Some(array)) => match array.position(i) {
            Some(n) => id + n as u64..id + n as u64 + 1,
            None => return Err(none(i).into()),
        },
        (Some(i), None) => return Err(none(i).into()),
    })
}

/// Every task of array job `array`, ended or not, in id order: their records in one
/// request, and as the controller has them now, those not ended, in another.
pub fn array_tasks(array: u64) -> Result<Vec<JobInfo>> {
    let mut live: HashMap<u64, JobInfo> = active_jobs(Some(array), false)?
        .into_iter()
        .map(|j| (j.id, j))
        .collect();
    let mut tasks: Vec<JobInfo> =
        request("GET", &format!("/v1/history?array={array}"), None::<&()>)?;
    for task in &mut tasks {
        if let Some(now) = live.remove(&task.id) {
            *task = now;
        }
    }
    // (One whose record the controller has not written yet.)
    tasks.extend(live.into_values());
    tasks.sort_unstable_by_key(|t| t.id);
    Ok(tasks)
}

/// The jobs that `specs` name, as scancel and scontrol read them: `42` is job 42, or, for
/// an array job, each of its tasks still pending or running that `applies` to (a hold, the
/// pending ones); `42_7` is task 7 of array 42.
pub fn job_ids(specs: &[String], applies: impl Fn(&JobInfo) -> bool) -> Result<Vec<u64>> {
    let mut active: HashMap<u64, Vec<JobInfo>> = HashMap::new();
    let mut ids = Vec::new();
    for spec in specs {
        let (id, index) = job_spec(spec)?;
        let jobs = match active.entry(id) {
            Entry::Occupied(jobs) => jobs.into_mut(),
            Entry::Vacant(slot) => slot.insert(active_jobs(Some(id), false)?),
        };
        let tasks = jobs.iter().filter(|j| j.array_job_id == Some(id));
        match index {
            // (One that has ended too: the verb says what it makes of that, a requeue
            // takes it.)
            Some(i) => match tasks.clone().find(|j| j.array_task_id == Some(i)) {
                Some(task) => ids.push(task.id),
                None => match array_tasks(id)?
                    .into_iter()
                    .find(|j| j.array_job_id == Some(id) && j.array_task_id == Some(i))
                {
                    Some(task) => ids.push(task.id),
                    None => bail!("{spec}: array job {id} has no task {i}"),
                },
            },
            None => {
                let tasks: Vec<&JobInfo> = tasks.collect();
                match tasks.is_empty() {
                    true => ids.push(id),
                    false => ids.extend(tasks.iter().filter(|j| applies(j)).map(|j| j.id)),
                }
            }
        }
    }
    Ok(ids)
}

/// Which of an array's active tasks job verb `verb` acts on: a hold or release the pending
/// ones, a suspend the running ones, a resume the suspended ones, a requeue both, the
/// others all.
pub fn applies(verb: &str) -> fn(&JobInfo) -> bool {
    match verb {
        "hold" | "release" => |j| j.state == "PENDING",
        "suspend" | "usage" => |j| j.state == "RUNNING",
        "resume" => |j| j.state == "SUSPENDED",
        "requeue" => |j| matches!(j.state.as_str(), "RUNNING" | "SUSPENDED"),
        _ => |_| true,
    }
}

/// `berth hold|release|suspend|resume|requeue JOB...`: one API call per job, and one for a
/// whole array, however many tasks it has.
pub fn act(verb: &str, args: JobsArgs) -> Result<i32> {
    // Under Slurm's name (scontrol suspend), as Slurm: an administrator's alone, since a
    // suspended job holds its CPUs and its time limit stops (berth's own: the owner's too).
    if matches!(verb, "suspend" | "resume") && crate::compat::as_slurm() && !is_root() {
        bail!("Access/permission denied: only root suspends and resumes jobs (berth {verb} acts on your own)");
    }
    act_with(verb, args, None)
}

/// `berth hold [--owner]`.
pub fn hold(args: HoldArgs) -> Result<i32> {
    act_with("hold", args.jobs, args.owner.then_some("owners=true"))
}

/// `berth requeue [--hold]`.
pub fn requeue(args: RequeueArgs) -> Result<i32> {
    act_with("requeue", args.jobs, args.hold.then_some("hold=true"))
}

/// A job verb on each job `args` names, with `flag` (`NAME=VALUE`) in its query.
fn act_with(verb: &str, args: JobsArgs, flag: Option<&str>) -> Result<i32> {
    for spec in &array_ranges(&args.jobs)? {
        target(spec)?.act(verb, flag)?;
    }
    Ok(0)
}

/// Job specs with Slurm's ranges of an array's tasks (`42_[1-3,7]`) as one spec per task
/// (`42_1`, `42_2`, ...); the others as they are.
pub fn array_ranges(specs: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for spec in specs.iter().flat_map(|s| comma_list(s)) {
        let spec = &spec;
        let ranges = spec.split_once("_[").and_then(|(id, rest)| {
            let list = rest.strip_suffix(']')?;
            id.bytes().all(|b| b.is_ascii_digit()).then_some((id, list))
        });
        let Some((id, list)) = ranges else {
            out.push(spec.clone());
            continue;
        };
        let ranges = berth_core::number_ranges(list).with_context(|| {
            format!("{spec}: expected an array's task indices in brackets, e.g. {id}_[1-3,7]")
        })?;
        for (first, last) in ranges {
            out.extend((first..=last).map(|i| format!("{id}_{i}")));
        }
    }
    Ok(out)
}

/// The items of a comma-separated list of jobs (`42,43`, as scontrol and scancel take
/// them), a comma inside brackets (`42_[1,3]`) not separating.
fn comma_list(list: &str) -> Vec<String> {
    let (mut items, mut item, mut depth) = (Vec::new(), String::new(), 0);
    for c in list.chars() {
        match c {
            ',' if depth == 0 => items.push(std::mem::take(&mut item)),
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if c != ',' || depth > 0 {
            item.push(c);
        }
    }
    items.push(item);
    items.retain(|i| !i.is_empty());
    items
}

/// What a job spec names, for a job verb: a job (or an array's task), or an array whole
/// (`42`), which the verb takes in one request however many tasks it has.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Job(u64),
    Array(u64),
}

impl Target {
    /// `verb` (hold, release, suspend, resume, requeue) with `flag` in its query: on an
    /// array, each of its tasks the controller finds it acts on
    /// (`Controller::array_tasks_for`, as [`applies`] here).
    pub fn act(self, verb: &str, flag: Option<&str>) -> Result<()> {
        let (id, array) = match self {
            Target::Job(id) => (id, None),
            Target::Array(id) => (id, Some("array=true")),
        };
        let query: Vec<&str> = array.into_iter().chain(flag).collect();
        let path = match query.is_empty() {
            true => format!("/v1/jobs/{id}/{verb}"),
            false => format!("/v1/jobs/{id}/{verb}?{}", query.join("&")),
        };
        request("POST", &path, None::<&()>)
    }

    /// Cancels it (each unfinished task of an array), or sends it `signal`.
    pub fn cancel(self, signal: Option<String>, target: SignalTarget) -> Result<()> {
        let (id, array) = match self {
            Target::Job(id) => (id, false),
            Target::Array(id) => (id, true),
        };
        request(
            "POST",
            &format!("/v1/jobs/{id}/cancel"),
            Some(&CancelRequest {
                signal,
                target: Some(target),
                array,
                step: None,
            }),
        )
    }
}

/// What `spec` names for a job verb: an array whole, or a job by its id; an array's
/// pending or running task by `ID_INDEX`.
pub fn target(spec: &str) -> Result<Target> {
    target_as(spec, false)
}

/// [`target`]; `whole_ids`: as LSF's commands take ids, where an array's elements are
/// `ID[INDEX]` only, not found by the ids of their own berth gives them (as Slurm does).
pub fn target_as(spec: &str, whole_ids: bool) -> Result<Target> {
    let (id, index) = job_spec(spec)?;
    if index.is_some() {
        // (One task, or an error saying there is none such.)
        return Ok(Target::Job(job_ids(&[spec.to_string()], |_| true)?[0]));
    }
    let job: JobInfo = request("GET", &format!("/v1/jobs/{id}"), None::<&()>)?;
    no_array_named(spec, &job)?;
    if let Some(array) = job.array_job_id.filter(|a| whole_ids && *a != id) {
        let e = format!("{spec}: an element of array {array}");
        return Err(crate::client::Failure::NotFound(e).into());
    }
    Ok(match job.array_job_id == Some(id) {
        true => Target::Array(id),
        false => Target::Job(id),
    })
}

/// Refuses PBS's `ID[]` (an array as a whole) where `job`, the one of that id, is no array
/// (one of an array's subjobs, by its own id): not found, as PBS says of it.
fn no_array_named(spec: &str, job: &JobInfo) -> Result<()> {
    if spec.contains("[]") && job.array_job_id != Some(job.id) {
        let e = format!("{spec}: job {} is no array", job.id);
        return Err(crate::client::Failure::NotFound(e).into());
    }
    Ok(())
}

/// `berth controllers`: the controller that answers (which leads), and the standbys that
/// copy its images, with how many of them each holds.
pub fn controllers(args: ListArgs) -> Result<i32> {
    let all: Vec<berth_api::ControllerInfo> = request("GET", "/v1/controllers", None::<&()>)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        return print_json(&mut out, &all);
    }
    let images = all.first().map_or(0, |c| c.images);
    writeln!(
        out,
        "{:<16} {:<8} {:<28} {:<6} {:>6} {:>7} PROBLEMS",
        "HOST", "ROLE", "ADDRESS", "STATE", "HEARD", "IMAGES"
    )?;
    for c in &all {
        let problems = match c.failed.join("; ") {
            f if f.is_empty() => "-".to_string(),
            f => f,
        };
        writeln!(
            out,
            "{:<16} {:<8} {:<28} {:<6} {:>6} {:>7} {problems}",
            c.host,
            c.role,
            c.url.as_deref().unwrap_or("-"),
            c.state,
            c.heard.map_or("-".into(), |s| format!("{s}s")),
            format!("{}/{images}", c.images),
        )?;
    }
    Ok(0)
}

pub fn nodes(args: ListArgs) -> Result<i32> {
    let nodes: Vec<berth_api::NodeInfo> = request("GET", "/v1/nodes", None::<&()>)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        return print_json(&mut out, &nodes);
    }
    writeln!(
        out,
        "{:<16} {:<10} {:<16} {:>9} {:>12} {:>5} {:>8} {:>12} {:<16} REASON",
        "NODELIST",
        "STATE",
        "PARTITIONS",
        "CPUS(A/T)",
        "MEMORY",
        "GPUS",
        "CPU_LOAD",
        "FREE_MEM",
        "FEATURES"
    )?;
    for n in &nodes {
        let cpus = format!("{}/{}", n.cpus_allocated, n.cpus);
        let features = match n.features.join(",") {
            f if f.is_empty() => "-".to_string(),
            f => f,
        };
        writeln!(
            out,
            "{:<16} {:<10} {:<16} {:>9} {:>12} {:>5} {:>8} {:>12} {:<16} {}",
            n.name,
            n.state,
            n.partitions.join(","),
            cpus,
            crate::image::human_size(n.memory),
            n.gpus,
            n.cpu_load().map_or("-".into(), |l| format!("{l:.2}")),
            n.memory_available
                .map_or("-".into(), crate::image::human_size),
            features,
            n.reason.as_deref().unwrap_or("-")
        )?;
    }
    Ok(0)
}

pub fn partitions(args: ListArgs) -> Result<i32> {
    let parts: Vec<berth_api::PartitionInfo> = request("GET", "/v1/partitions", None::<&()>)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        return print_json(&mut out, &parts);
    }
    writeln!(
        out,
        "{:<12} {:<6} {:>12} {:>6}  NODELIST",
        "PARTITION", "AVAIL", "TIMELIMIT", "NODES"
    )?;
    for p in &parts {
        let name = if p.default {
            format!("{}*", p.name)
        } else {
            p.name.clone()
        };
        let limit = p.max_time.map_or("infinite".into(), duration);
        writeln!(
            out,
            "{name:<12} {:<6} {limit:>12} {:>6}  {}",
            p.state,
            p.nodes.len(),
            p.nodes.join(",")
        )?;
    }
    Ok(0)
}

/// `--json`: the API's own answer, pretty-printed.
pub fn print_json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<i32> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(0)
}

/// `berth token`: a token for the API over TCP (BERTH_API, BERTH_TOKEN), like Slurm's
/// `scontrol token`.
pub fn token(args: TokenArgs) -> Result<i32> {
    let lifetime = args
        .lifetime
        .map(|t| berth_core::job::parse_slurm_time(&t))
        .transpose()
        .context("--lifetime")?;
    let body = berth_api::TokenRequest {
        user: args.user,
        lifetime,
    };
    let t: berth_api::TokenResponse = request("POST", "/v1/tokens", Some(&body))?;
    println!("BERTH_TOKEN={}", t.token);
    Ok(0)
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The controller's TCP API (berth controller --listen); with controllers that fail
    /// over, each of them, comma-separated
    #[arg(long, value_name = "https://HOST:PORT[,...]")]
    controller: String,
    /// The cluster key: the controller's STATE_DIR/cluster.key, copied to this node (mode 0600)
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// Where this agent listens for its controller
    #[arg(long, value_name = "ADDR:PORT")]
    listen: std::net::SocketAddr,
    /// How the controller reaches this agent [default: https://LISTEN]
    #[arg(long, value_name = "https://HOST:PORT")]
    advertise: Option<String>,
    /// This node's name [default: the host name]
    #[arg(long)]
    name: Option<String>,
    /// What this node has, which jobs ask for with --constraint (e.g. intel,ib,a100)
    #[arg(long, value_name = "FEATURE,...", value_delimiter = ',')]
    features: Vec<String>,
    /// Where the jobs' directories live [default: the image store's directory]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Also serve the controller's API to this host's users here (as the controller's own
    /// socket does: `berth submit`, `queue`, ... on this node), e.g. /run/berth/berth.sock
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

/// Node features are words a job's `--constraint` can name: no blanks, and none of the
/// characters its expressions use.
fn check_features(features: &[String]) -> Result<()> {
    for f in features {
        if f.is_empty() || f.contains(|c: char| c.is_whitespace() || "&|,[]()*!".contains(c)) {
            bail!(
                "--features {f:?}: a feature is a word without blanks or any of & | , [ ] ( ) * !"
            );
        }
    }
    Ok(())
}

/// `berth agent`: this host as a node of a controller elsewhere.
pub fn agent(settings: &Settings, args: AgentArgs) -> Result<i32> {
    if !is_root() {
        bail!("berth agent must run as root: it runs every job as the user who submitted it");
    }
    let bytes = std::fs::read(&args.key_file)
        .with_context(|| format!("cannot read the cluster key {}", args.key_file.display()))?;
    if bytes.len() < 32 {
        bail!(
            "{}: a cluster key has at least 32 bytes: copy the controller's STATE_DIR/cluster.key",
            args.key_file.display()
        );
    }
    if args.listen.ip().is_unspecified() && args.advertise.is_none() {
        bail!("--listen {} names no address the controller could reach: add --advertise https://HOST:PORT", args.listen);
    }
    let state_dir = args.state_dir.unwrap_or_else(|| settings.store.clone());
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    check_features(&args.features)?;
    let mut resources = berth_agent::node::Resources::discover();
    if let Some(name) = args.name {
        resources.name = name;
    }
    resources.features = args.features;
    let controllers: Vec<String> = args
        .controller
        .split(',')
        .map(|c| c.trim().trim_end_matches('/').to_string())
        .filter(|c| !c.is_empty())
        .collect();
    for url in controllers.iter().chain(&args.advertise) {
        berth_agent::tls::address(url).map_err(anyhow::Error::msg)?;
    }
    berth_agent::daemon::run(berth_agent::daemon::Settings {
        controllers,
        key: berth_agent::auth::Key::from_bytes(&bytes),
        listen: args.listen,
        advertise: args
            .advertise
            .unwrap_or_else(|| format!("https://{}", args.listen)),
        resources,
        state_dir,
        berth: std::env::current_exe().context("cannot find the berth executable")?,
        socket: args.socket,
    })
    .map_err(anyhow::Error::msg)?;
    Ok(0)
}

#[derive(clap::Subcommand, Debug)]
pub enum NodeCommand {
    /// Take no new jobs on NODE (running ones go on), like scontrol update state=drain
    Drain {
        node: String,
        /// Why (shown by `berth nodes`)
        #[arg(long, required = true)]
        reason: String,
    },
    /// Let NODE take jobs again
    Resume { node: String },
}

/// `berth node drain|resume` (root).
pub fn node(cmd: NodeCommand) -> Result<i32> {
    match cmd {
        NodeCommand::Drain { node, reason } => request::<()>(
            "POST",
            &format!("/v1/nodes/{node}/drain"),
            Some(&berth_api::DrainRequest { reason }),
        )?,
        NodeCommand::Resume { node } => {
            request::<()>("POST", &format!("/v1/nodes/{node}/resume"), None::<&()>)?
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::{
        accounting, array_ranges, cpu_time, exit_code_of, held_on_nodes, in_unit, named_format,
        parse_time, slurm_size, step_elapsed, wait_on_controller, wrapped,
    };

    /// scontrol -d's lines: GPUs in all, then each node's CPUs, memory (MiB) and GPUs.
    #[test]
    fn what_a_job_holds_reads_as_scontrol_details() {
        let job: berth_api::JobInfo = serde_json::from_value(serde_json::json!({
            "id": 7, "name": "sim", "user": "u", "partition": "batch", "state": "RUNNING",
            "submit_time": 100, "nodes": ["n1", "n2"], "cpus": 6, "workdir": "/w",
            "stdout": "/w/o", "held": false,
            "cpu_ids": [
                {"node": "n1", "cpu_ids": [5, 0, 1, 2], "memory_bytes": 2u64 << 30, "gpu_ids": [3, 1]},
                {"node": "n2", "cpu_ids": [8, 9]},
            ],
        }))
        .unwrap();
        let mut out = Vec::new();
        held_on_nodes(&mut out, &job).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "   JOB_GRES=gpu:2\n     Nodes=n1 CPU_IDs=0-2,5 Mem=2048 GRES=gpu:2(IDX:1,3)\n     Nodes=n2 CPU_IDs=8-9 Mem=0 GRES=\n"
        );
    }

    /// A step's status is its signal's where one gave it, else an exit status (130 too); a
    /// job's DerivedExitCode is its worst step's as wait(2) orders them: an exit status over
    /// any signal.
    #[test]
    fn steps_exit_codes_read_as_sacct_shows_them() {
        let step = |code: i32, signal: Option<i32>| -> berth_api::StepInfo {
            serde_json::from_value(serde_json::json!({
                "id": 0, "ntasks": 1, "command": "x", "start_time": 100, "exit_code": code,
                "signal": signal,
            }))
            .unwrap()
        };
        assert_eq!(exit_code_of(&step(7, None)), "7:0");
        assert_eq!(exit_code_of(&step(137, Some(9))), "0:9");
        assert_eq!(exit_code_of(&step(130, None)), "130:0");
        assert_eq!(exit_code_of(&step(130, Some(2))), "0:2");
        let steps = [(3, None), (137, Some(9)), (5, None), (200, None)]
            .map(|(code, signal)| serde_json::to_value(step(code, signal)).unwrap());
        let j: berth_api::JobInfo = serde_json::from_value(serde_json::json!({
            "id": 7, "name": "sim", "user": "u", "partition": "batch", "state": "COMPLETED",
            "submit_time": 100, "nodes": ["n1"], "cpus": 1, "workdir": "/w", "stdout": "/w/o",
            "held": false, "steps": steps,
        }))
        .unwrap();
        assert_eq!(accounting("DerivedExitCode", &j), "200:0");
    }

    /// squeue's %D: a pending job's, the nodes it asks for; a running one's, those it has.
    #[test]
    fn a_pending_jobs_node_count_is_what_it_asks_for() {
        let job = |nodes: &[&str]| -> berth_api::JobInfo {
            serde_json::from_value(serde_json::json!({
                "id": 7, "name": "sim", "user": "u", "partition": "batch", "state": "PENDING",
                "submit_time": 100, "nodes": nodes, "min_nodes": 3, "cpus": 3,
                "workdir": "/w", "stdout": "/w/o", "held": false,
            }))
            .unwrap()
        };
        assert_eq!(super::field('D', &job(&[])), "3");
        assert_eq!(super::field('D', &job(&["n1", "n2"])), "2");
    }

    /// A step's time leaves out its job's suspensions while it ran, and only those.
    #[test]
    fn a_steps_elapsed_time_leaves_out_its_jobs_suspensions() {
        let j: berth_api::JobInfo = serde_json::from_value(serde_json::json!({
            "id": 7, "name": "sim", "user": "u", "partition": "batch", "state": "SUSPENDED",
            "submit_time": 100, "start_time": 100, "nodes": ["n1"], "cpus": 1,
            "workdir": "/w", "stdout": "/w/o", "held": false, "suspended_seconds": 80,
            "suspensions": [{"start": 110, "end": 130}, {"start": 200, "end": null}],
        }))
        .unwrap();
        let step = |start: u64, end: Option<u64>| -> berth_api::StepInfo {
            serde_json::from_value(serde_json::json!({
                "id": 0, "ntasks": 1, "command": "x", "start_time": start, "end_time": end,
                "exit_code": null,
            }))
            .unwrap()
        };
        // Ran 100-150, the job suspended 110-130: 30 s.
        assert_eq!(step_elapsed(&j, &step(100, Some(150)), 300), 30);
        // Started while the job was suspended (120), ended at 125: none.
        assert_eq!(step_elapsed(&j, &step(120, Some(125)), 300), 0);
        // Runs from 140, the job suspended since 200: 60 s at 260.
        assert_eq!(step_elapsed(&j, &step(140, None), 260), 60);
        // Ran 140-190, before the second suspension: all of it.
        assert_eq!(step_elapsed(&j, &step(140, Some(190)), 300), 50);
    }

    #[test]
    fn squeues_named_fields_are_its_letters() {
        assert_eq!(
            named_format("JobID:10,state,TimeLimit:.8").unwrap(),
            "%10i %20T %.8l "
        );
        assert_eq!(named_format("JobID:10|,Name:.8 ").unwrap(), "%10i|%.8j ");
        let e = named_format("JobID,Colour").unwrap_err().to_string();
        assert!(e.contains("--Format Colour: berth knows jobid"), "{e}");
        // (A suffix alone: the default size.)
        assert_eq!(named_format("JobID:x").unwrap(), "%20ix");
    }

    #[test]
    fn a_wrapped_command_is_the_job() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (command, rest) = wrapped(&words(&["-o", "x", "--wrap", "echo hi"]))
            .unwrap()
            .unwrap();
        assert_eq!((command.as_str(), rest), ("echo hi", words(&["-o", "x"])));
        assert!(wrapped(&words(&["-n", "2"])).unwrap().is_none());
        let e = wrapped(&words(&["-n", "2", "--wrap"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--wrap needs the command"), "{e}");
        let e = wrapped(&words(&["-J", "x", "--wrap", "echo", "hi", "there"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("script arguments (hi) are not permitted with --wrap"),
            "{e}"
        );
    }

    #[test]
    fn slurms_ranges_of_array_tasks_name_each_task() {
        let specs: Vec<String> = ["42_[1-3,7]", "5", "9_2", "8[]", "10,11_[1,2]"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            array_ranges(&specs).unwrap(),
            ["42_1", "42_2", "42_3", "42_7", "5", "9_2", "8[]", "10", "11_1", "11_2"]
        );
        let bad = array_ranges(&["42_[3-1]".to_string()]).unwrap_err();
        assert!(format!("{bad:#}").contains("e.g. 42_[1-3,7]"), "{bad:#}");
    }

    /// bwait -t: a wait's time bounds it, a controller out of reach meanwhile included.
    #[test]
    fn a_wait_ends_when_its_time_runs_out() {
        // No controller at this socket (each test runs in a process of its own).
        std::env::set_var("BERTH_SOCKET", "/nonexistent/berth.sock");
        let now = std::time::Instant::now();
        assert!(wait_on_controller(1, 1, "ended", Some(now))
            .unwrap()
            .is_none());
        let soon = now + std::time::Duration::from_secs(2);
        assert!(wait_on_controller(1, 1, "ended", Some(soon))
            .unwrap()
            .is_none());
        assert!(std::time::Instant::now() >= soon);
    }

    #[test]
    fn sizes_are_printed_as_sacct_prints_them() {
        assert_eq!(slurm_size(5_349_376), "5224K");
        assert_eq!(in_unit("5224K", 'M', true), "5.10M");
        assert_eq!(in_unit("300M", 'G', true), "0.29G");
        assert_eq!(in_unit("2G", 'K', false), "2097152K");
        assert_eq!(in_unit("", 'G', true), "");
        assert_eq!(slurm_size(1000), "1K");
        assert_eq!(slurm_size(0), "0K");
        assert_eq!(slurm_size(2 << 20), "2M");
        assert_eq!(slurm_size(3 << 30), "3G");
        assert_eq!(slurm_size((1 << 30) + 4096), "1048580K");
    }

    #[test]
    fn cpu_time_is_printed_as_sacct_prints_it() {
        assert_eq!(cpu_time(332_655), "00:00.332");
        assert_eq!(cpu_time(61_500_000), "01:01.500");
        assert_eq!(cpu_time(3_723_000_000), "01:02:03");
        assert_eq!(cpu_time(90_061_000_000), "1-01:01:01");
    }

    #[test]
    fn times_are_taken_as_sacct_takes_them() {
        let now = berth_agent::runner::now();
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_time("0"), Ok(0));
        assert!(parse_time("now").is_ok_and(|t| t.abs_diff(now) <= 1));
        assert!(parse_time("now-2hours").is_ok_and(|t| t.abs_diff(now - 7200) <= 1));
        assert!(parse_time("now-90").is_ok_and(|t| t.abs_diff(now - 90) <= 1));
        assert!(parse_time("now-1week").is_ok_and(|t| t.abs_diff(now - 604_800) <= 1));
        // Local dates: one day apart whatever the time zone (none has a jump on these).
        let day = parse_time("2026-03-10").unwrap();
        assert_eq!(parse_time("2026-03-11").unwrap() - day, 86400);
        assert_eq!(parse_time("2026-03-10T01:02:03").unwrap() - day, 3723);
        assert_eq!(parse_time("2026-03-10T01:02").unwrap() - day, 3720);
        // sacct's short forms: a time of day or a date no later than now.
        assert!(parse_time("00:00").is_ok_and(|t| t == parse_time("midnight").unwrap()));
        assert!(parse_time("12/06").is_ok_and(|t| t <= now));
        assert!(parse_time("1206").is_ok_and(|t| t <= now));
        for bad in [
            "yesterday",
            "now-3fortnights",
            "2026-13-01",
            "2026-03-10T25:00",
            "2026-03",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
