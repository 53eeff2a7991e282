//! berth's persistent state, behind one trait.
//!
//! Owns: keeping the controller's state across restarts and crashes: job records, the job id
//! counter, and small named values (node registrations, settings). [`Store`] is the whole
//! interface; [`SqliteStore`] is the embedded implementation (one SQLite file in WAL mode, the
//! default for `berth up` and single-controller clusters); [`EtcdStore`] keeps the same in an
//! etcd cluster, for controllers that fail over (it also elects their leader). Only this
//! crate knows SQLite or etcd.
//!
//! Must not: interpret job documents (they are opaque bytes the caller serialised, usually
//! JSON; the store sees only the few fields in [`JobRow`] it indexes), make scheduling or
//! policy decisions, or do network I/O of its own (the etcd client is the only exception,
//! and only towards etcd).
//!
//! Everything here is synchronous and short: [`SqliteStore`] serialises calls on one
//! connection behind a mutex, and a single-row write takes tens of microseconds (no fsync per
//! commit; see [`SqliteStore`] for the durability this gives). Async callers (the tokio
//! controller) should call it from `tokio::task::spawn_blocking` for bulk work, or accept the
//! short blocking for single-row writes.
//!
//! The shape is kept key-value friendly on purpose, so that etcd maps onto it directly: a job
//! is one key holding its document plus index fields, [`Store::allocate_ids`] is a counter
//! bumped in a transaction, and the named values are a flat, prefix-listable key space.

mod error;
mod etcd;
mod sqlite;

pub use error::StoreError;
pub use etcd::EtcdStore;
pub use sqlite::SqliteStore;

/// One job as the store keeps it: a document the caller serialised, plus the fields the store
/// indexes so that queries need not open the documents.
///
/// The index fields must agree with the document; keeping them in step is the caller's job
/// (write both from the same job value in one [`Store::put_jobs`] call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// The job id, from [`Store::allocate_ids`]; below `i64::MAX` (SQLite's integers).
    pub id: u64,
    /// The job's state as the caller names it (`"pending"`, `"running"`, ...).
    pub state: String,
    /// The user who owns the job.
    pub user: String,
    /// The partition the job was submitted to.
    pub partition: String,
    /// When the job was submitted, in seconds since the Unix epoch by berth's convention.
    pub submit_time: u64,
    /// When the job ended (completed, failed, cancelled); `None` while it has not.
    pub end_time: Option<u64>,
    /// The caller's serialised job, returned byte for byte.
    pub doc: Vec<u8>,
}

/// Which jobs [`Store::query_jobs`] returns. Every constraint that is set must hold (AND);
/// within one list any value may match (OR); an empty list or `None` does not constrain.
/// `JobFilter::default()` matches every job. Results are always in ascending id order.
///
/// Time bounds are half-open, `[after, before)`, so consecutive windows neither overlap nor
/// leave gaps; a job that has not ended (`end_time: None`) never matches `ended_after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only these job ids.
    pub ids: Vec<u64>,
    /// Only jobs of these users.
    pub users: Vec<String>,
    /// Only jobs in these states.
    pub states: Vec<String>,
    /// Only jobs in these partitions.
    pub partitions: Vec<String>,
    /// Only jobs with `end_time >= ended_after`.
    pub ended_after: Option<u64>,
    /// Only jobs with `submit_time < submitted_before` (sacct's `--endtime`: jobs in any
    /// state before it).
    pub submitted_before: Option<u64>,
    /// Only jobs that had not ended before this time: `end_time >= active_after`, or not
    /// ended (sacct's `--starttime`: jobs in any state after it).
    pub active_after: Option<u64>,
    /// Only jobs with `id > after_id`: paging through a large result with `limit`, by passing
    /// the last id of the previous page.
    pub after_id: Option<u64>,
    /// At most this many jobs (the lowest ids that match).
    pub limit: Option<usize>,
}

/// berth's persistent state. Implementations are shared between threads (`Arc<dyn Store>`)
/// and every method is one atomic operation: it happens entirely or not at all, and once it
/// returns `Ok` it survives a crash of the process.
pub trait Store: Send + Sync {
    /// Allocates `n` consecutive job ids atomically (a job array takes one block) and returns
    /// the first. Ids start at 1, only grow, and are never handed out twice, even after the
    /// jobs are deleted or the process restarts. `n` must be at least 1.
    fn allocate_ids(&self, n: u64) -> Result<u64, StoreError>;

    /// The id [`Store::allocate_ids`] would hand out next, without taking it (sbatch
    /// `--test-only` names the job it would have been).
    fn peek_id(&self) -> Result<u64, StoreError>;

    /// Inserts or replaces these jobs in one transaction: all are written or none is. Every id
    /// must have come from [`Store::allocate_ids`]; an id never allocated is refused
    /// ([`StoreError::UnallocatedId`]), so a stray write cannot collide with a future job.
    fn put_jobs(&self, rows: &[JobRow]) -> Result<(), StoreError>;

    /// The job with this id, if stored.
    fn get_job(&self, id: u64) -> Result<Option<JobRow>, StoreError>;

    /// The jobs that match `filter`, in ascending id order.
    fn query_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError>;

    /// Deletes these jobs in one transaction (history retention) and returns how many existed.
    /// Their ids are not reused.
    fn delete_jobs(&self, ids: &[u64]) -> Result<u64, StoreError>;

    /// The value stored under `key`, if any. Keys are a flat space of names, conventionally
    /// `/`-separated (`nodes/n001`, `settings/fairshare`).
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `value` under `key`, replacing any previous value.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Removes `key`; removing a key that does not exist is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Every key that starts with `prefix` (all keys for `""`) with its value, in byte order of
    /// the keys.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Tells whoever else reads the store that `key` (a node) is alive, with `value`, for the
    /// next `ttl` seconds: a heartbeat. etcd keeps the key under a lease that ends unless the
    /// next heartbeat comes in time, so that other controllers and tools watching the prefix
    /// see a node come and go. The embedded store has no other reader (one controller, which
    /// tracks its nodes' heartbeats itself) and keeps nothing.
    fn heartbeat(&self, key: &str, value: &[u8], ttl: u64) -> Result<(), StoreError> {
        let _ = (key, value, ttl);
        Ok(())
    }
}
