//! The `berth` command: argument parsing, output formatting and exit codes. Everything else
//! lives in the library crates (see docs/ARCHITECTURE.md).

mod batch;
mod client;
mod container;
mod image;
mod settings;
mod step;

use clap::{Parser, Subcommand};
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Container-native HPC batch system: run Docker/OCI images as yourself"
)]
struct Cli {
    /// Image store directory [default: /var/lib/berth as root, $XDG_DATA_HOME/berth otherwise]
    #[arg(long, global = true, env = "BERTH_STORE", value_name = "DIR")]
    store: Option<PathBuf>,
    /// Configuration file [default: /etc/berth/berth.toml if it exists]
    #[arg(long, global = true, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
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
    /// Stop the controller started by `berth up` (running jobs keep running)
    Down,
    /// Make a token for the API over TCP (berth up --listen), like scontrol token
    Token(batch::TokenArgs),
    /// Submit a batch script (#SBATCH, #BSUB, #PBS or #BERTH directives)
    Submit(batch::SubmitArgs),
    /// List pending and running jobs, like squeue
    Queue(batch::QueueArgs),
    /// Show everything about a job
    Show(batch::ShowArgs),
    /// Cancel jobs, or send them a signal
    Cancel(batch::CancelArgs),
    /// Finished jobs with their accounting, like sacct
    History(batch::HistoryArgs),
    /// Keep pending jobs from starting
    Hold(batch::JobsArgs),
    /// Let held jobs start
    Release(batch::JobsArgs),
    /// Freeze running jobs (every process stops; CPU time stops)
    Suspend(batch::JobsArgs),
    /// Thaw suspended jobs
    Resume(batch::JobsArgs),
    /// Stop running jobs and queue them again (or queue finished ones again), same ids
    Requeue(batch::JobsArgs),
    /// Run tasks of a command in a running job's container, like srun inside an allocation
    #[command(visible_alias = "srun")]
    Step(step::StepArgs),
    /// Run a shell command on one of the job's nodes, in its container there, as ssh would:
    /// the remote launcher of mpirun and mpiexec.hydra (berth rsh [-n] NODE COMMAND...)
    Rsh(step::RshArgs),
    /// List the cluster's nodes, like sinfo -N
    Nodes(batch::ListArgs),
    /// Drain a node or resume it (root)
    #[command(subcommand)]
    Node(batch::NodeCommand),
    /// List the partitions, like sinfo
    Partitions(batch::ListArgs),
    /// berth's own internal entry points (the processes its daemons start)
    #[command(subcommand, hide = true)]
    Internal(Internal),
}

#[derive(Subcommand)]
enum Internal {
    /// Run one job from a launch file written by the controller; writes LAUNCH.result.json
    RunJob { launch: PathBuf },
    /// Run a job step's tasks in the job's container (the launch comes in $BERTH_STEP_LAUNCH)
    Step,
    /// Hold an allocation until SIGTERM: the program of a `berth step` allocation's container
    Hold,
    /// Fork the runners of a node agent's jobs on request (its stdin is the agent's socket)
    Launcher,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        // Steps often run inside a job's container, where the host's configuration file
        // (which $BERTH_CONFIG may name) is not: they need none. Neither do the controller's
        // clients (its API is all they use), nor berth's internal entry points.
        Command::Step(args) => step::step(args),
        Command::Rsh(args) => step::rsh(args),
        Command::Internal(Internal::Step) => berth_agent::step::run().map_err(Into::into),
        Command::Internal(Internal::Hold) => Ok(berth_agent::step::hold()),
        Command::Internal(Internal::Launcher) => Ok(berth_agent::launcher::serve()),
        Command::Internal(Internal::RunJob { launch }) => berth_agent::runner::run(&launch, None)
            .map(|_| 0)
            .map_err(Into::into),
        Command::Down => batch::down(),
        Command::Token(args) => batch::token(args),
        Command::Submit(args) => batch::submit(args),
        Command::Queue(args) => batch::queue(args),
        Command::Show(args) => batch::show(args),
        Command::Cancel(args) => batch::cancel(args),
        Command::History(args) => batch::history(args),
        Command::Hold(args) => batch::act("hold", args),
        Command::Release(args) => batch::act("release", args),
        Command::Suspend(args) => batch::act("suspend", args),
        Command::Resume(args) => batch::act("resume", args),
        Command::Requeue(args) => batch::act("requeue", args),
        Command::Nodes(args) => batch::nodes(args),
        Command::Partitions(args) => batch::partitions(args),
        Command::Node(cmd) => batch::node(cmd),
        command => {
            settings::Settings::load(cli.store, cli.config).and_then(|settings| match command {
                Command::Image(cmd) => image::run(&settings, cmd).map(|()| 0),
                Command::Run(args) => container::run(&settings, args),
                Command::Exec(args) => container::exec(&settings, args),
                Command::Shell(args) => container::shell(&settings, args),
                Command::Up(args) => batch::up(&settings, args),
                Command::Controller(args) => batch::controller(&settings, args),
                Command::Agent(args) => batch::agent(&settings, args),
                _ => unreachable!("handled above"),
            })
        }
    };
    let code = match result {
        Ok(code) => code,
        Err(err) => report(&err),
    };
    let _ = io::stdout().flush();
    std::process::exit(code);
}

/// Prints the whole error chain on one line and picks the exit status: the container's own
/// code where it reported one (126/127 for exec failures), 125 for berth's own errors, and 0
/// for a closed stdout (`berth image ls | head`), as ripgrep does.
fn report(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }) {
        return 0;
    }
    let mut line = format!("berth: {err}");
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    eprintln!("{line}");
    err.downcast_ref::<berth_runtime::RuntimeError>()
        .map_or(125, |e| e.exit_code())
}
