//! The embedded store: one SQLite file in WAL mode.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::{JobFilter, JobRow, Store, StoreError};

/// Marks the file as berth's in the SQLite header (`PRAGMA application_id`): ASCII "bert".
const APPLICATION_ID: i64 = 0x6265_7274;

/// How long a statement waits for another process's lock before failing with
/// [`StoreError::Busy`]. One controller owns the file, so waiting at all means a second
/// process (a stray controller, a backup tool) is holding it.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one migration per version: `MIGRATIONS[v]` takes a database from
/// `user_version` v to v + 1. Append only; never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, the job id counter, named values.
    "
    -- The next job id lives in its own row rather than being derived from max(id), so ids are
    -- never handed out again after the newest jobs are deleted.
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        next INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO counters (name, next) VALUES ('job_id', 1);

    -- id is the rowid itself (INTEGER PRIMARY KEY), so lookups by id need no second index
    -- and every secondary index below is ordered by id within equal keys.
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        user_name TEXT NOT NULL,
        partition_name TEXT NOT NULL,
        submit_time INTEGER NOT NULL,
        end_time INTEGER,
        doc BLOB NOT NULL
    ) STRICT;
    CREATE INDEX jobs_state ON jobs (state);
    CREATE INDEX jobs_user ON jobs (user_name);
    CREATE INDEX jobs_submit_time ON jobs (submit_time);
    CREATE INDEX jobs_end_time ON jobs (end_time);

    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT, WITHOUT ROWID;
    ",
];

/// The job columns, in the order [`job_from_row`] reads them.
const JOB_COLUMNS: &str = "id, state, user_name, partition_name, submit_time, end_time, doc";

/// [`Store`] on an SQLite database file.
///
/// Durability: the database runs in WAL mode with `synchronous=NORMAL`. A transaction is
/// durable against a crash of the process (kill -9, panic, OOM kill) as soon as its call
/// returns, because the commit has been written to the WAL file, that is to the kernel, before
/// it returns; that is the requirement berth has. Only a crash of the whole machine (power
/// loss, kernel panic) can lose the last transactions before the next checkpoint, and even
/// then the database stays consistent. `synchronous=FULL` would also survive that, at the
/// price of an fsync per commit, which would cap single-job submits at the disk's fsync rate.
///
/// Threads: one connection behind a mutex, so calls are serialised; each is short
/// (microseconds for a single row). Async callers: see the crate documentation.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The file, or `:memory:`; for error messages.
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The schema version this build writes and understands (`PRAGMA user_version`).
    pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

    /// Opens the database at `path`, creating the file (mode 0600: job documents hold users'
    /// environments) and the schema if needed, and migrating an older schema. The directory
    /// must exist. SQLite keeps two companion files beside it, `<path>-wal` and `<path>-shm`,
    /// with the same permissions.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        // Create the file ourselves so that its mode does not depend on the umask's leniency
        // (SQLite would create it 0644); an existing file keeps its mode.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                source: Box::new(e),
            })?;
        // No SQLITE_OPEN_URI: the path is a path, even if it starts with "file:".
        // NO_MUTEX: the connection is only ever used under our own mutex.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|e| open_error(&path, e))?;
        Self::setup(conn, path, true)
    }

    /// A private database in memory, gone when dropped: for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| open_error(&path, e))?;
        Self::setup(conn, path, false)
    }

    /// The database file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn setup(mut conn: Connection, path: PathBuf, wal: bool) -> Result<Self, StoreError> {
        let err = |e| open_error(&path, e);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;

        // Look before changing anything: this is the first read of the file, so a file that is
        // not a database fails here (SQLITE_NOTADB), and a database of another program is left
        // untouched.
        let app_id: i64 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(err)?;
        if app_id != 0 && app_id != APPLICATION_ID {
            return Err(StoreError::ForeignDatabase {
                path,
                found: app_id,
            });
        }
        // A database without berth's application_id is only adopted while it is empty: an
        // older SQLite file of some other program must not get berth's tables added to it.
        if app_id == 0 {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(err)?;
            if tables > 0 {
                return Err(StoreError::ForeignDatabase { path, found: 0 });
            }
        }
        check_version(&conn, &path)?;

        if wal {
            // WAL: readers never block the writer, and a commit is one append to the WAL file.
            // The mode is persistent, stored in the file.
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                .map_err(err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Open {
                    path,
                    source: format!("SQLite kept journal_mode={mode} instead of WAL").into(),
                });
            }
        }
        // Per connection, not stored in the file. See the type's documentation for why NORMAL.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;

        // Migrate under the write lock, re-reading the version inside it: two processes
        // opening a fresh file at once must not both create the schema.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let version = check_version(&tx, &path)?;
        for (v, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql).map_err(|e| StoreError::Open {
                path: path.clone(),
                source: format!("migration to schema version {}: {e}", v + 1).into(),
            })?;
        }
        if version < Self::SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", Self::SCHEMA_VERSION)
                .map_err(err)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;

        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The connection. A panic while it was held cannot have left a transaction open (the
    /// transaction's drop rolled it back), so a poisoned lock is still usable.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Maps an SQLite error of operation `op` to a [`StoreError`].
    fn error(&self, op: &'static str, e: rusqlite::Error) -> StoreError {
        match sqlite_code(&e) {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
                path: self.path.clone(),
                source: Box::new(e),
            },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
                path: self.path.clone(),
                timeout: BUSY_TIMEOUT,
            },
            _ => StoreError::Backend {
                op,
                path: self.path.clone(),
                source: Box::new(e),
            },
        }
    }
}

/// Reads `user_version`, refusing a schema newer than this build's.
fn check_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    if version > SqliteStore::SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SqliteStore::SCHEMA_VERSION,
        });
    }
    // A negative user_version is nothing berth wrote.
    if version < 0 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            source: format!("negative schema version {version}").into(),
        });
    }
    Ok(version)
}

fn sqlite_code(e: &rusqlite::Error) -> Option<ErrorCode> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    }
}

/// Maps an SQLite error while opening to a [`StoreError`].
fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match sqlite_code(&e) {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            path,
            source: Box::new(e),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
            path,
            timeout: BUSY_TIMEOUT,
        },
        _ => StoreError::Open {
            path,
            source: Box::new(e),
        },
    }
}

/// SQLite integers are signed 64-bit; the store's ids and times are unsigned.
fn to_sql_int(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    // Every integer was checked non-negative on the way in; a negative one read back means
    // someone else wrote the file, and is reported rather than wrapped around.
    let unsigned = |idx: usize| -> rusqlite::Result<u64> {
        let v: i64 = r.get(idx)?;
        u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v))
    };
    let end_time = match r.get::<_, Option<i64>>(5)? {
        None => None,
        Some(_) => Some(unsigned(5)?),
    };
    Ok(JobRow {
        id: unsigned(0)?,
        state: r.get(1)?,
        user: r.get(2)?,
        partition: r.get(3)?,
        submit_time: unsigned(4)?,
        end_time,
        doc: r.get(6)?,
    })
}

/// A list filter as one SQL parameter: a JSON array, expanded by `json_each`. One parameter
/// whatever the length, so a 100 000-id query stays within SQLite's limit on parameters,
/// and the statement text (hence the statement cache) does not depend on the length.
fn json_array<T: AsRef<str>>(items: &[T]) -> Value {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    Value::Text(serde_json::to_string(&items).expect("a list of strings always serialises"))
}

fn json_ids(ids: &[u64]) -> Value {
    Value::Text(serde_json::to_string(ids).expect("a list of integers always serialises"))
}

impl Store for SqliteStore {
    fn peek_id(&self) -> Result<u64, StoreError> {
        let next: i64 = self
            .conn()
            .prepare_cached("SELECT next FROM counters WHERE name = 'job_id'")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.error("reading the job id counter", e))?;
        Ok(next as u64)
    }

    fn allocate_ids(&self, n: u64) -> Result<u64, StoreError> {
        if n == 0 {
            return Err(StoreError::InvalidArgument(
                "allocate_ids needs at least one id (n = 0)".into(),
            ));
        }
        let err = |e| self.error("allocating job ids", e);
        let mut conn = self.conn();
        // IMMEDIATE: take the write lock before reading the counter, so that two processes
        // (should there ever be two) cannot read the same value.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let first: i64 = tx
            .prepare_cached("SELECT next FROM counters WHERE name = 'job_id'")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(err)?;
        // The counter (the id after the last one handed out) must stay a valid SQLite integer,
        // so the largest id is i64::MAX - 1: a limit no cluster reaches.
        let first = u64::try_from(first).map_err(|_| StoreError::Corrupt {
            path: self.path.clone(),
            source: format!("negative job id counter {first}").into(),
        })?;
        let next = first
            .checked_add(n)
            .filter(|&next| next <= i64::MAX as u64)
            .ok_or(StoreError::OutOfRange {
                what: "job id",
                value: first.saturating_add(n - 1),
            })?;
        tx.prepare_cached("UPDATE counters SET next = ?1 WHERE name = 'job_id'")
            .and_then(|mut s| s.execute([next as i64]))
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(first)
    }

    fn put_jobs(&self, rows: &[JobRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let err = |e| self.error("storing jobs", e);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let next: i64 = tx
            .prepare_cached("SELECT next FROM counters WHERE name = 'job_id'")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(err)?;
        {
            // An upsert rather than INSERT OR REPLACE: REPLACE deletes and re-inserts, touching
            // every index, where a state change should touch only the state index.
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO jobs (id, state, user_name, partition_name, submit_time, \
                     end_time, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
                     user_name = excluded.user_name, partition_name = excluded.partition_name, \
                     submit_time = excluded.submit_time, end_time = excluded.end_time, \
                     doc = excluded.doc",
                )
                .map_err(err)?;
            // Rows are checked as they are written: an error returns with the transaction
            // uncommitted, and dropping it rolls back the rows already written.
            for row in rows {
                if row.id == 0 || row.id >= next as u64 {
                    return Err(StoreError::UnallocatedId {
                        id: row.id,
                        next: next as u64,
                    });
                }
                let end_time = row
                    .end_time
                    .map(|t| to_sql_int("end time", t))
                    .transpose()?;
                stmt.execute(params![
                    row.id as i64,
                    row.state,
                    row.user,
                    row.partition,
                    to_sql_int("submit time", row.submit_time)?,
                    end_time,
                    row.doc,
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn get_job(&self, id: u64) -> Result<Option<JobRow>, StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None); // cannot have been stored
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
            .map_err(|e| self.error("reading a job", e))?;
        let mut rows = stmt
            .query_map([id], job_from_row)
            .map_err(|e| self.error("reading a job", e))?;
        rows.next()
            .transpose()
            .map_err(|e| self.error("reading a job", e))
    }

    fn query_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        let err = |e| self.error("querying jobs", e);
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1");
        let mut args: Vec<Value> = Vec::new();
        // `clause` has one `?`, which becomes the next numbered parameter.
        let mut push = |clause: &str, value: Value| {
            args.push(value);
            sql.push_str(" AND ");
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        // `IN (SELECT value FROM json_each(?))` still lets SQLite use the column's index.
        if !filter.ids.is_empty() {
            push(
                "id IN (SELECT value FROM json_each(?))",
                json_ids(&filter.ids),
            );
        }
        for (column, list) in [
            ("user_name", &filter.users),
            ("state", &filter.states),
            ("partition_name", &filter.partitions),
        ] {
            if !list.is_empty() {
                let clause = format!("{column} IN (SELECT value FROM json_each(?))");
                push(&clause, json_array(list));
            }
        }
        // A bound beyond SQLite's integers is kept as a real: comparisons stay correct (every
        // stored value is below it) instead of failing.
        let bound = |v: u64| match i64::try_from(v) {
            Ok(v) => Value::Integer(v),
            Err(_) => Value::Real(v as f64),
        };
        if let Some(t) = filter.ended_after {
            push("end_time >= ?", bound(t));
        }
        if let Some(t) = filter.submitted_before {
            push("submit_time < ?", bound(t));
        }
        if let Some(t) = filter.active_after {
            push("(end_time IS NULL OR end_time >= ?)", bound(t));
        }
        if let Some(id) = filter.after_id {
            push("id > ?", bound(id));
        }
        sql.push_str(" ORDER BY id");
        if let Some(limit) = filter.limit {
            args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
        }

        let conn = self.conn();
        // Cached: the text depends only on which constraints are set, not on their values.
        let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
        let rows = stmt
            .query_map(params_from_iter(args), job_from_row)
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn delete_jobs(&self, ids: &[u64]) -> Result<u64, StoreError> {
        let err = |e| self.error("deleting jobs", e);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut deleted = 0;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM jobs WHERE id = ?1")
                .map_err(err)?;
            // An id beyond SQLite's integers cannot have been stored.
            for id in ids.iter().filter_map(|&id| i64::try_from(id).ok()) {
                deleted += stmt.execute([id]).map_err(err)? as u64;
            }
        }
        tx.commit().map_err(err)?;
        Ok(deleted)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let err = |e| self.error("reading a value", e);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT value FROM kv WHERE key = ?1")
            .map_err(err)?;
        let mut rows = stmt.query_map([key], |r| r.get(0)).map_err(err)?;
        rows.next().transpose().map_err(err)
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let err = |e| self.error("storing a value", e);
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO kv (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut s| s.execute(params![key, value]))
        .map_err(err)?;
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.prepare_cached("DELETE FROM kv WHERE key = ?1")
            .and_then(|mut s| s.execute([key]))
            .map_err(|e| self.error("deleting a value", e))?;
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let err = |e| self.error("listing values", e);
        let conn = self.conn();
        // Keys compare bytewise (SQLite's BINARY collation on UTF-8), so the keys with this
        // prefix are exactly the run that starts at `prefix` in the primary key's order: seek
        // there and stop at the first key without it, instead of scanning the table.
        let mut stmt = conn
            .prepare_cached("SELECT key, value FROM kv WHERE key >= ?1 ORDER BY key")
            .map_err(err)?;
        let rows = stmt
            .query_map([prefix], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (key, value) = row.map_err(err)?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key, value));
        }
        Ok(out)
    }
}
