//! The store's one error type. Messages name the database and say what the operator can do;
//! the backend's own error (SQLite's, later etcd's) is kept as the source, boxed, so that the
//! type does not tie callers to one backend.

use std::path::PathBuf;
use std::time::Duration;

/// The backend's error, kept as the source of a [`StoreError`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be created, opened or set up.
    #[error(
        "cannot open the state database {}: {source}; check the directory's permissions or \
         move it with --state-dir",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: BackendError,
    },

    /// The file is not an SQLite database, or SQLite found it damaged.
    #[error(
        "the state database {} is corrupt or not a database: {source}; restore it from a \
         backup, or move it aside to start with empty state",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: BackendError,
    },

    /// The file is an SQLite database of some other program.
    #[error(
        "{} is an SQLite database of another program (application_id {found:#x}), not berth's \
         state; point berth at its own state directory with --state-dir",
        path.display()
    )]
    ForeignDatabase { path: PathBuf, found: i64 },

    /// The database was written by a newer berth, whose schema this one does not know.
    #[error(
        "the state database {} has schema version {found}, newer than the {supported} this \
         berth understands: it was written by a newer berth; run that version, or restore a \
         backup taken before the upgrade",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// Another process held the database's write lock for longer than the busy timeout.
    #[error(
        "the state database {} stayed locked by another process for {timeout:?}; check that \
         only one controller uses this state directory",
        path.display()
    )]
    Busy { path: PathBuf, timeout: Duration },

    /// An operation failed for a reason not covered above (disk full, I/O error, ...).
    #[error("{op} failed on the state database {}: {source}", path.display())]
    Backend {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: BackendError,
    },

    /// `put_jobs` was given an id that `allocate_ids` never returned.
    #[error(
        "job id {id} was never allocated (the next id is {next}); allocate ids with \
         allocate_ids before storing jobs"
    )]
    UnallocatedId { id: u64, next: u64 },

    /// A value does not fit the store's integers (SQLite's, signed 64-bit).
    #[error(
        "{what} {value} is out of range: the store keeps integers up to {}",
        i64::MAX
    )]
    OutOfRange { what: &'static str, value: u64 },

    /// A caller passed an argument the operation cannot take.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
