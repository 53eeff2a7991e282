//! The `berth` command: argument parsing, output formatting and exit codes. Everything else
//! lives in the library crates (see docs/ARCHITECTURE.md).

// The C runtime calls berth's entry point directly (`entry` below); tests keep the harness's.
#![cfg_attr(not(test), no_main)]

mod batch;
mod client;
mod compat;
mod container;
mod image;
mod settings;
mod step;

use clap::{Args, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    // A repeated option: its last value, as getopt's commands take it (wrappers add flags
    // their users may give too).
    args_override_self = true,
    about = "Container-native HPC batch system: run Docker/OCI images as yourself"
)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// The options every subcommand takes.
#[derive(Args, Debug)]
struct Globals {
    /// Image store directory [default: /var/lib/berth as root, $XDG_DATA_HOME/berth otherwise]
    #[arg(long, global = true, env = "BERTH_STORE", value_name = "DIR")]
    store: Option<PathBuf>,
    /// Configuration file [default: /etc/berth/berth.toml if it exists]
    #[arg(long, global = true, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl Cli {
    /// Parses berth's command line. The subcommands that start containers, jobs and steps,
    /// where berth's own start-up is part of what users wait for, are first tried with a
    /// parser of that subcommand alone (from the same definitions): building clap's
    /// description of all of berth's subcommands costs more than setting up a container's
    /// /dev (0.18 ms and 64 page faults of `berth exec`'s start). Anything it does not take
    /// (help, a version request, options before the subcommand, an error) goes through the
    /// full parser, so what users see is the same.
    fn parse_args() -> Cli {
        // Started as sbatch, bsub, qstat, ... (a link of that name), or `berth as NAME`.
        let args = compat::translate(std::env::args_os().collect());
        Cli::quick(&args).unwrap_or_else(|| {
            Cli::try_parse_from(&args).unwrap_or_else(|e| {
                // A container's command line that berth cannot take: 125, as docker's and
                // podman's (the program's own statuses keep the others).
                let container = args
                    .get(1)
                    .is_some_and(|a| ["exec", "run", "shell"].iter().any(|c| a == *c));
                if let Some(said) = compat::unknown_option(&e) {
                    berth_core::say!("{said}");
                    std::process::exit(1);
                }
                let _ = e.print();
                std::process::exit(match (e.use_stderr(), container, compat::as_slurm()) {
                    (true, true, _) => 125,
                    (true, false, true) => 1,
                    _ => e.exit_code(),
                })
            })
        })
    }

    fn quick(args: &[OsString]) -> Option<Cli> {
        match args.get(1)?.to_str()? {
            "exec" => Cli::one(args, Command::Exec),
            "run" => Cli::one(args, Command::Run),
            "shell" => Cli::one(args, Command::Shell),
            "submit" => Cli::one(args, Command::Submit),
            "step" | "srun" => Cli::one(args, |a: step::StepArgs| Command::Step(Box::new(a))),
            _ => None,
        }
    }

    /// Parses `args[1..]` (the subcommand's name and its arguments) with a parser of `A`'s
    /// arguments and the global options.
    fn one<A: Args + FromArgMatches>(args: &[OsString], wrap: fn(A) -> Command) -> Option<Cli> {
        let parser = Globals::augment_args(A::augment_args(
            clap::Command::new("berth").args_override_self(true),
        ));
        let mut matches = parser.try_get_matches_from(&args[1..]).ok()?;
        let globals = Globals::from_arg_matches_mut(&mut matches).ok()?;
        let args = A::from_arg_matches_mut(&mut matches).ok()?;
        Some(Cli {
            globals,
            command: wrap(args),
        })
    }
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum Command {
    /// Manage the image store: import, pull, list, inspect, remove
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Run the image's ENTRYPOINT/CMD (with ARGS replacing CMD), like `apptainer run`
    Run(container::RunArgs),
    /// Run COMMAND in the image, like `apptainer exec`
    Exec(container::ExecArgs),
    /// Start an interactive shell in the image, like `apptainer shell`
    Shell(container::ShellArgs),
    /// Start the all-in-one cluster: controller, local agent and embedded store (root)
    Up(batch::UpArgs),
    /// Start the controller alone (root); jobs run on the nodes whose agents register
    Controller(batch::UpArgs),
    /// Run this host as a node of a controller elsewhere (root)
    Agent(batch::AgentArgs),
    /// Stop the controller started by `berth up` (running jobs keep running; the steps its
    /// own node serves end, their clients with an error)
    Down(batch::DownArgs),
    /// Make a token for the API over TCP (berth up --listen), like scontrol token
    Token(batch::TokenArgs),
    /// Submit a batch script (#SBATCH, #BSUB, #PBS or #BERTH directives)
    Submit(batch::SubmitArgs),
    /// List pending and running jobs, like squeue
    #[command(disable_help_flag = true)]
    Queue(batch::QueueArgs),
    /// Show everything about a job
    Show(batch::ShowArgs),
    /// One node name per line from a node list in Slurm's form (n[1-3]; default
    /// $SLURM_JOB_NODELIST), like scontrol show hostnames
    Hostnames(batch::HostnamesArgs),
    /// Node names in Slurm's compact form (n[1-3]), like scontrol show hostlist
    Hostlist(batch::HostlistArgs),
    /// Cancel jobs, or send them a signal
    Cancel(batch::CancelArgs),
    /// Finished jobs with their accounting, like sacct
    History(batch::HistoryArgs),
    /// What running jobs have used so far on each node (CPU time, memory), like sstat
    Usage(batch::UsageArgs),
    /// Keep pending jobs from starting
    Hold(batch::HoldArgs),
    /// Change a pending job (an array job's id: each of its pending tasks): --time,
    /// --partition, --job-name, --nice, --begin, --dependency, --account, --constraint,
    /// --nodelist, --exclude, --requeue; or a running job's --time (lower it; root: raise
    /// it); also as scontrol's KEY=VALUE words
    Update(batch::UpdateArgs),
    /// Let held jobs start
    Release(batch::JobsArgs),
    /// Freeze running jobs (every process stops; CPU time stops)
    Suspend(batch::JobsArgs),
    /// Thaw suspended jobs
    Resume(batch::JobsArgs),
    /// Stop running jobs and queue them again (or queue finished ones again), same ids
    Requeue(batch::RequeueArgs),
    /// Run tasks of a command in a running job's container, like srun inside an allocation
    #[command(visible_alias = "srun")]
    Step(Box<step::StepArgs>),
    /// Get an allocation and run a command on this host while holding it (default: $SHELL),
    /// like salloc: `berth step` (srun) in it runs tasks in the job
    #[command(override_usage = "berth alloc [OPTIONS] [--] [COMMAND [ARGS]...]")]
    Alloc(step::AllocArgs),
    /// Run a shell command on one of the job's nodes, in its container there, as ssh would:
    /// the remote launcher of mpirun and mpiexec.hydra (berth rsh [-n] NODE COMMAND...)
    Rsh(step::RshArgs),
    /// List the cluster's nodes, like sinfo -N
    Nodes(batch::ListArgs),
    /// List the controllers: the one that leads and the standbys that copy its images, like
    /// scontrol ping
    Controllers(batch::ListArgs),
    /// Drain a node or resume it (root)
    #[command(subcommand)]
    Node(batch::NodeCommand),
    /// List the partitions, like sinfo
    Partitions(batch::ListArgs),
    /// Act as another batch system's command: bsub, bjobs, qsub, qstat, sbatch, ...
    ///
    /// Slurm's sbatch, srun, salloc, squeue, scancel, sacct, sstat, sinfo, scontrol; LSF's
    /// bsub, bjobs, bhist, bacct, bkill, bstop, bresume, brequeue, bmod, bpeek, bqueues,
    /// bhosts, lshosts; PBS's qsub, qstat, qdel, qhold, qrls, qsig, qrerun, qalter, pbsnodes
    /// (without COMMAND: the list). berth started under one of those names (a link, see
    /// --link) acts as it.
    As(compat::AsArgs),
    /// berth's own internal entry points (the processes its daemons start)
    #[command(subcommand, hide = true)]
    Internal(Internal),
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// Run one job from a launch file written by the controller; writes LAUNCH.result.json
    RunJob { launch: PathBuf },
    /// Run a job step's tasks in the job's container (the launch comes in $BERTH_STEP_LAUNCH)
    Step,
    /// Hold an allocation until SIGTERM: the program of a `berth step` allocation's container
    Hold,
    /// Fork the runners of a node agent's jobs on request (its stdin is the agent's socket)
    Launcher,
    /// One node's end of sbcast: write stdin to a file, whole or not at all
    ReceiveFile(compat::sbcast::ReceiveArgs),
}

/// berth's entry point, called by the C runtime: Rust's own start-up code is skipped, as it
/// reads /proc/self/maps (to find the main thread's stack guard for its stack-overflow
/// message) and costs 70-90 us of each start, a sixth of what `berth exec` adds to `true`'s
/// own start. What of it berth needs is done here: SIGPIPE ignored (a write to a closed
/// pipe fails with EPIPE, which berth reports), descriptors 0-2 opened on /dev/null when
/// closed (so that no file berth opens becomes one of them), and a panic ends berth with
/// status 101, as it would from Rust's `main`. A stack overflow is a plain SIGSEGV.
#[cfg_attr(not(test), export_name = "main")]
#[cfg_attr(test, allow(dead_code))]
extern "C" fn entry(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll with a timeout of 0 on an array we own.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0 {
        for fd in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
            // The lowest free descriptor is the closed one (they are opened in order).
            // SAFETY: open with a NUL-terminated path; the descriptor stays open for good.
            let opened = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            debug_assert!(opened == -1 || opened == fd.fd);
        }
    }
    // A println! to a stdout closed early (`squeue -i 5 | head`) panics: quietly ends berth
    // instead, as a write that fails with EPIPE does (see `report`).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !printing_to_closed_stdout(info.payload()) {
            default_hook(info);
        }
    }));
    std::panic::catch_unwind(run).unwrap_or_else(|payload| {
        match printing_to_closed_stdout(payload.as_ref()) {
            true => 0,
            false => 101,
        }
    })
}

/// Whether a panic is print!'s failure to write to a stdout that is closed.
fn printing_to_closed_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let message = (payload.downcast_ref::<String>().map(String::as_str))
        .or_else(|| payload.downcast_ref::<&str>().copied());
    message.is_some_and(|m| m.starts_with("failed printing to stdout")) && stdout_closed()
}

fn run() -> i32 {
    let cli = Cli::parse_args();
    let result = match cli.command {
        // Steps often run inside a job's container, where the host's configuration file
        // (which $BERTH_CONFIG may name) is not: they need none. Neither do the controller's
        // clients (its API is all they use), nor berth's internal entry points.
        Command::Step(args) => step::step(*args),
        Command::Rsh(args) => step::rsh(args),
        Command::Alloc(args) => step::alloc(args),
        Command::Internal(Internal::Step) => berth_agent::step::run().map_err(Into::into),
        Command::Internal(Internal::Hold) => Ok(berth_agent::step::hold()),
        Command::Internal(Internal::Launcher) => Ok(berth_agent::launcher::serve()),
        Command::Internal(Internal::ReceiveFile(args)) => compat::sbcast::receive(args),
        Command::Internal(Internal::RunJob { launch }) => berth_agent::runner::run(&launch, None)
            .map(|_| 0)
            .map_err(Into::into),
        Command::Down(args) => batch::down(args),
        Command::Token(args) => batch::token(args),
        Command::Submit(args) => batch::submit(args),
        Command::Queue(args) => batch::queue(args),
        Command::Hostnames(args) => batch::hostnames(args),
        Command::Hostlist(args) => batch::hostlist(args),
        Command::Show(args) => batch::show(args),
        Command::Cancel(args) => batch::cancel(args),
        Command::History(args) => batch::history(args),
        Command::Usage(args) => batch::usage(args),
        Command::Hold(args) => batch::hold(args),
        Command::Update(args) => batch::update(args),
        Command::Release(args) => batch::act("release", args),
        Command::Suspend(args) => batch::act("suspend", args),
        Command::Resume(args) => batch::act("resume", args),
        Command::Requeue(args) => batch::requeue(args),
        Command::Nodes(args) => batch::nodes(args),
        Command::Controllers(args) => batch::controllers(args),
        Command::Partitions(args) => batch::partitions(args),
        Command::Node(cmd) => batch::node(cmd),
        Command::As(args) => compat::run(args),
        command => {
            settings::Settings::load(cli.globals.store, cli.globals.config).and_then(|settings| {
                match command {
                    Command::Image(cmd) => image::run(&settings, cmd).map(|()| 0),
                    Command::Run(args) => container::run(&settings, args),
                    Command::Exec(args) => container::exec(&settings, args),
                    Command::Shell(args) => container::shell(&settings, args),
                    Command::Up(args) => batch::up(&settings, args),
                    Command::Controller(args) => batch::controller(&settings, args),
                    Command::Agent(args) => batch::agent(&settings, args),
                    _ => unreachable!("handled above"),
                }
            })
        }
    };
    let code = match result {
        Ok(code) => code,
        Err(err) => report(&err),
    };
    let _ = io::stdout().flush();
    std::process::exit(code)
}

/// Prints the whole error chain on one line and picks the exit status: the container's own
/// code where it reported one (126/127 for exec failures), 125 for berth's own errors, and 0
/// for a closed stdout (`berth image ls | head`), as ripgrep does. A broken pipe elsewhere
/// (the controller's connection, gone mid-request) is an error like any other.
fn report(err: &anyhow::Error) -> i32 {
    // (serde_json's error hides the io::Error it wraps from the chain.)
    let broken_pipe = err.chain().any(|e| {
        let kind = match e.downcast_ref::<serde_json::Error>() {
            Some(e) => e.io_error_kind(),
            None => e.downcast_ref::<io::Error>().map(io::Error::kind),
        };
        kind == Some(io::ErrorKind::BrokenPipe)
    });
    if broken_pipe && stdout_closed() {
        return 0;
    }
    // In the words of the Slurm command berth runs as, where that one says `NAME: error:`;
    // under LSF's and PBS's, their names.
    let lsf = compat::usage_status() == 255;
    let mut line = match compat::invoked_as() {
        Some(name @ ("srun" | "salloc" | "sbatch")) => format!("{name}: error: {err}"),
        Some(name) if lsf || compat::pbs_ids() => format!("{name}: {err}"),
        _ => format!("berth: {err}"),
    };
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    berth_core::say!("{line}");
    if err.downcast_ref::<compat::UsageError>().is_some() {
        return compat::usage_status();
    }
    let code = err
        .downcast_ref::<berth_runtime::RuntimeError>()
        .map_or(125, |e| e.exit_code());
    // srun's and salloc's own failures (a step refused, or interrupted while it waited to
    // start) are status 1 too; their commands' statuses are not errors here.
    // LSF's commands fail with 255.
    let client = matches!(compat::invoked_as(), Some("srun" | "salloc"));
    match code == 125 {
        true if compat::as_slurm() || client => 1,
        true if lsf => 255,
        _ => code,
    }
}

/// Whether standard output is a pipe whose reader has gone.
fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: 1,
        events: 0,
        revents: 0,
    };
    // SAFETY: polls one descriptor of this process without waiting, into a struct we own.
    unsafe { libc::poll(&mut fd, 1, 0) == 1 && fd.revents & libc::POLLERR != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to the controller broken mid-request is an error, not the quiet
    /// success of a closed stdout (the test's stdout is open).
    #[test]
    fn a_broken_pipe_elsewhere_than_stdout_is_an_error() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("cannot talk to the controller");
        assert!(!stdout_closed());
        assert_eq!(report(&err), 125);
    }

    fn argv(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn the_quick_parser_agrees_with_the_full_one() {
        for line in [
            "berth exec busybox true",
            "berth exec -B /tmp:/data:ro --bind /a -e A=1 --env B=2 --cleanenv --pwd /data \
             --no-home --cpus 2 --cpuset-cpus 0-1 --memory 1g --pids-limit 10 --gpus all --pid \
             busybox sh -c exit",
            "berth exec busybox ls -l --store /x",
            "berth exec --store /s --config /c busybox id",
            "berth exec busybox --store /s id",
            "berth run busybox",
            "berth run --no-home busybox -x --y z",
            "berth shell --user alice busybox",
            "berth submit job.sh",
            "berth submit --parsable -N 2 -t 5 job.sh a -b",
            "berth step -n1 true",
            "berth step -n 2 -N 1 -w a,b -c 2 --job 7 -l -K --cpu-bind none -O --mpi none hostname",
            "berth step --jobid=7 -K=0 --pty bash",
            "berth step -K 1 true",
            // A repeated option takes its last value, as getopt's commands do.
            "berth step -n1 -n 2 -l -l true",
            "berth srun --image busybox --mem 1g -t 10 -p debug -J name --bind /tmp ls -la",
        ] {
            let args = argv(line);
            let quick = Cli::quick(&args).unwrap_or_else(|| panic!("{line}: refused"));
            let full = Cli::try_parse_from(&args).unwrap();
            assert_eq!(format!("{quick:?}"), format!("{full:?}"), "{line}");
        }
    }

    #[test]
    fn the_full_parser_takes_what_the_quick_one_does_not() {
        for line in [
            "berth exec --help",
            "berth exec",
            "berth exec --bogus busybox true",
            "berth exec --pids-limit many busybox true",
            "berth --store /s exec busybox true",
            "berth submit --help",
            "berth queue",
            "berth --version",
        ] {
            assert!(Cli::quick(&argv(line)).is_none(), "{line}");
        }
    }

    #[test]
    fn a_repeated_option_takes_its_last_value() {
        let queue = Cli::try_parse_from(argv("berth queue -h -h")).unwrap();
        assert!(format!("{queue:?}").contains("noheader: true"), "{queue:?}");
        let step = Cli::quick(&argv("berth step -n1 -n2 true")).unwrap();
        assert!(format!("{step:?}").contains("ntasks: Some(2)"), "{step:?}");
    }
}
