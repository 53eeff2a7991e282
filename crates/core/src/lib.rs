//! berth's domain types, with no I/O.
//!
//! Owns: the administrator's configuration (what it means, not where it is read from), the
//! resource quantities users type (`4G`, `1.5` CPUs), batch jobs as users ask for them
//! (`#SBATCH`/`#BSUB`/`#PBS`/`#BERTH` directives and submit flags, validated into a
//! `JobRequest`) and the validation of all of these.
//! Must not: read files, touch the network, make system calls. Callers read the bytes and hand
//! them over; everything here is a pure function and is unit-tested as such.

pub mod commands;
pub mod config;
pub mod http;
pub mod job;
pub mod quantity;
pub mod shell;
pub mod signal;

pub use config::{
    BatchConfig, BindPolicy, Config, ConfigError, PartitionConfig, PriorityConfig, RegistryConfig,
};
pub use job::{JobError, JobOptions, JobRequest};
pub use quantity::{number_list, number_ranges, parse_cpus, parse_size, QuantityError};

/// As `eprintln!`, in one write(2): a line that another process writing to the same file
/// (a job's output, which its batch shell, srun and its steps' processes share) cannot
/// split, as `eprintln!`'s separate writes of the message and its newline let it be. A
/// failed write is not a panic (a daemon whose log is gone goes on).
#[macro_export]
macro_rules! say {
    () => {
        $crate::say_line(::std::string::String::from("\n"))
    };
    ($($arg:tt)*) => {
        $crate::say_line(::std::format!("{}\n", ::std::format_args!($($arg)*)))
    };
}

/// Writes `line` to standard error at once (see [`say!`]).
pub fn say_line(line: String) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
