//! The other batch systems' commands berth answers to (as `berth as NAME`, under a link of
//! that name, and on the PATH of every job's container), and what each does.

/// The commands berth answers to, and what each does.
pub const COMMANDS: &[(&str, &str)] = &[
    ("sbatch", "submit a batch script (berth submit)"),
    ("srun", "run tasks in a job, or in an allocation of their own (berth step)"),
    ("salloc", "get an allocation and run a command (a shell) while holding it (berth alloc)"),
    ("squeue", "pending and running jobs (berth queue)"),
    ("scancel", "cancel or signal jobs (berth cancel)"),
    ("sacct", "jobs' accounting (berth history)"),
    ("sinfo", "partitions (berth partitions); -N: nodes (berth nodes)"),
    ("scontrol", "show job|hostnames|hostlist|nodes|partitions; hold, release, requeue, suspend, resume, update"),
    ("bsub", "submit a command, a script on standard input, or an interactive job (-I, -Is)"),
    ("bjobs", "jobs, LSF's columns and states (-a -d -p -r -s -u -q -J -w -noheader -o -l)"),
    ("bkill", "cancel or signal jobs (-s SIG; 0: all yours)"),
    ("bstop", "suspend jobs"),
    ("bresume", "resume suspended jobs"),
    ("brequeue", "queue jobs again"),
    ("bmod", "change a pending job with bsub's options (-W, -q, -J, -w, -b, ...; a running one's -W)"),
    ("bpeek", "a job's output so far (-f: followed until the job ends)"),
    ("bqueues", "queues (partitions) with their job counts"),
    ("bhosts", "hosts (nodes) with their job slots"),
    ("lshosts", "hosts (nodes) with their CPUs, memory and resources"),
    ("qsub", "submit a script, a command (-- CMD) or an interactive job (-I)"),
    ("qstat", "jobs, PBS's columns and states (-a -f -x -n -u; -Q: queues)"),
    ("qdel", "cancel jobs"),
    ("qhold", "hold pending jobs"),
    ("qrls", "release held jobs"),
    ("qsig", "signal jobs (-s SIG)"),
    ("qrerun", "queue running jobs again"),
    ("qalter", "change a pending job with qsub's options (-l walltime=, -N, -q, -W depend=, -a, ...)"),
    ("pbsnodes", "nodes, PBS's way (-a; -l: those down or offline)"),
];
