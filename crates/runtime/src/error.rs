use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Errors from preparing or starting a container. [`RuntimeError::exit_code`] maps them to
/// the exit statuses docker and podman use.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("invalid --bind '{spec}': {why}")]
    BindSyntax { spec: String, why: &'static str },
    #[error("cannot bind {path}: {source}")]
    BindSource { path: PathBuf, source: io::Error },
    #[error(
        "bind of {path} refused: {why}; ask your administrator, or bind a path that is allowed"
    )]
    BindRefused { path: PathBuf, why: String },
    #[error("invalid --env '{0}': expected NAME=VALUE")]
    EnvSyntax(String),
    #[error("the image has no ENTRYPOINT or CMD: say what to run with `berth exec IMAGE COMMAND`")]
    NothingToRun,
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    #[error("{0}")]
    NotPermitted(String),
    /// A job step found no container to join: the job has ended, or never started one here.
    #[error("{0}")]
    NoContainer(String),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    #[error("cannot set up the container: {what}: {source}")]
    Setup { what: String, source: io::Error },
    /// Reported by the container process itself (setup inside the namespaces, or exec).
    #[error("{message}")]
    Container { code: i32, message: String },
}

impl RuntimeError {
    pub fn setup(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
        let what = what.into();
        move |source| RuntimeError::Setup { what, source }
    }

    /// 127 command not found, 126 not executable, 125 any other failure of berth's own.
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Container { code, .. } => *code,
            _ => 125,
        }
    }
}
