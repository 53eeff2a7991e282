//! `SqliteStore` through the `Store` trait: round trips, filters, id allocation, atomicity,
//! persistence across reopen and across a kill -9 of the writing process, error messages, and
//! a throughput figure (printed, not asserted: run with `--nocapture` to see it).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_store::{JobFilter, JobRow, SqliteStore, Store, StoreError};

fn job(id: u64, state: &str, user: &str, partition: &str, submit: u64, end: Option<u64>) -> JobRow {
    JobRow {
        id,
        state: state.into(),
        user: user.into(),
        partition: partition.into(),
        submit_time: submit,
        end_time: end,
        doc: format!(r##"{{"id":{id},"script":"#!/bin/sh\necho {id}"}}"##).into_bytes(),
    }
}

/// A store holding `rows`, after allocating enough ids for them.
fn store_with(rows: &[JobRow]) -> SqliteStore {
    let store = SqliteStore::open_in_memory().expect("in-memory store");
    let max = rows.iter().map(|r| r.id).max().unwrap_or(0);
    if max > 0 {
        store.allocate_ids(max).expect("allocate");
    }
    store.put_jobs(rows).expect("put");
    store
}

fn ids(rows: &[JobRow]) -> Vec<u64> {
    rows.iter().map(|r| r.id).collect()
}

// ---- round trips ----

#[test]
fn job_round_trip_and_replace() {
    let store = SqliteStore::open_in_memory().unwrap();
    let first = store.allocate_ids(2).unwrap();
    assert_eq!(first, 1);
    let mut a = job(1, "pending", "alice", "cpu", 100, None);
    a.doc = Vec::new(); // empty documents are kept as such
    let b = job(2, "completed", "bob", "gpu", 101, Some(200));
    store.put_jobs(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(store.get_job(1).unwrap(), Some(a.clone()));
    assert_eq!(store.get_job(2).unwrap(), Some(b));
    assert_eq!(store.get_job(3).unwrap(), None);
    assert_eq!(store.get_job(u64::MAX).unwrap(), None);

    // Replacing changes every field, index fields included.
    let a2 = JobRow {
        state: "running".into(),
        partition: "gpu".into(),
        end_time: Some(150),
        doc: b"{\"new\":true}".to_vec(),
        ..a
    };
    store.put_jobs(std::slice::from_ref(&a2)).unwrap();
    assert_eq!(store.get_job(1).unwrap(), Some(a2));
    let running = JobFilter {
        states: vec!["running".into()],
        ..JobFilter::default()
    };
    assert_eq!(ids(&store.query_jobs(&running).unwrap()), [1]);
    let pending = JobFilter {
        states: vec!["pending".into()],
        ..JobFilter::default()
    };
    assert!(store.query_jobs(&pending).unwrap().is_empty());

    store.put_jobs(&[]).unwrap();
}

#[test]
fn delete_jobs_counts_and_ids_are_not_reused() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.allocate_ids(3).unwrap();
    store
        .put_jobs(&[
            job(1, "done", "a", "p", 1, Some(2)),
            job(3, "done", "a", "p", 1, Some(2)),
        ])
        .unwrap();
    assert_eq!(store.delete_jobs(&[1, 2, 3, u64::MAX]).unwrap(), 2);
    assert_eq!(store.get_job(3).unwrap(), None);
    assert_eq!(store.delete_jobs(&[]).unwrap(), 0);
    // The newest jobs are gone; their ids still are not handed out again (a peek takes none).
    assert_eq!(store.peek_id().unwrap(), 4);
    assert_eq!(store.peek_id().unwrap(), 4);
    assert_eq!(store.allocate_ids(1).unwrap(), 4);
}

#[test]
fn named_values_round_trip_and_prefix_listing() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert_eq!(store.get("nodes/n1").unwrap(), None);
    for (k, v) in [
        ("nodes/n2", "two"),
        ("nodes/n1", "one"),
        ("nodes2", "not a node"),
        ("nodes", "bare"),
        ("settings/fairshare", "on"),
        ("nodes/ü", "unicode"),
    ] {
        store.put(k, v.as_bytes()).unwrap();
    }
    store.put("nodes/n1", b"one again").unwrap();
    assert_eq!(
        store.get("nodes/n1").unwrap().as_deref(),
        Some(&b"one again"[..])
    );

    let keys = |prefix| -> Vec<String> {
        store
            .list(prefix)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(keys("nodes/"), ["nodes/n1", "nodes/n2", "nodes/ü"]);
    assert_eq!(
        keys("nodes"),
        ["nodes", "nodes/n1", "nodes/n2", "nodes/ü", "nodes2"]
    );
    assert_eq!(keys("settings/"), ["settings/fairshare"]);
    assert!(keys("zzz").is_empty());
    assert_eq!(keys("").len(), 6);
    assert_eq!(
        store.list("nodes/n2").unwrap(),
        [("nodes/n2".to_string(), b"two".to_vec())]
    );

    store.delete("nodes/n1").unwrap();
    store.delete("nodes/n1").unwrap(); // absent: not an error
    assert_eq!(store.get("nodes/n1").unwrap(), None);
    assert_eq!(keys("nodes/"), ["nodes/n2", "nodes/ü"]);
}

// ---- filters ----

/// Ten jobs, stored out of id order, with a mix of users, states, partitions and times.
fn fixture() -> SqliteStore {
    store_with(&[
        job(7, "completed", "carol", "gpu", 170, Some(300)),
        job(1, "completed", "alice", "cpu", 100, Some(200)),
        job(2, "failed", "bob", "cpu", 110, Some(210)),
        job(3, "running", "alice", "gpu", 120, None),
        job(4, "pending", "bob", "cpu", 130, None),
        job(5, "cancelled", "alice", "cpu", 140, Some(250)),
        job(6, "pending", "carol", "debug", 150, None),
        job(10, "completed", "alice", "gpu", 200, Some(400)),
        job(9, "failed", "bob", "gpu", 190, Some(350)),
        job(8, "running", "bob", "debug", 180, None),
    ])
}

#[test]
fn filter_default_matches_all_in_id_order() {
    let store = fixture();
    assert_eq!(
        ids(&store.query_jobs(&JobFilter::default()).unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
}

#[test]
fn filter_each_field() {
    let store = fixture();
    let q = |f: JobFilter| ids(&store.query_jobs(&f).unwrap());
    let d = JobFilter::default;

    assert_eq!(
        q(JobFilter {
            ids: vec![9, 2, 42, 5],
            ..d()
        }),
        [2, 5, 9]
    );
    assert_eq!(
        q(JobFilter {
            users: vec!["alice".into()],
            ..d()
        }),
        [1, 3, 5, 10]
    );
    assert_eq!(
        q(JobFilter {
            users: vec!["carol".into(), "bob".into()],
            ..d()
        }),
        [2, 4, 6, 7, 8, 9]
    );
    assert_eq!(
        q(JobFilter {
            users: vec!["nobody".into()],
            ..d()
        }),
        Vec::<u64>::new()
    );
    assert_eq!(
        q(JobFilter {
            states: vec!["pending".into(), "running".into()],
            ..d()
        }),
        [3, 4, 6, 8]
    );
    assert_eq!(
        q(JobFilter {
            partitions: vec!["debug".into()],
            ..d()
        }),
        [6, 8]
    );
    // Half-open time windows; jobs that have not ended never match an end bound.
    assert_eq!(
        q(JobFilter {
            ended_after: Some(250),
            ..d()
        }),
        [5, 7, 9, 10]
    );
    // Submitted before 150: in any state before it.
    assert_eq!(
        q(JobFilter {
            submitted_before: Some(150),
            ..d()
        }),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        q(JobFilter {
            ended_after: Some(0),
            ..d()
        }),
        [1, 2, 5, 7, 9, 10]
    );
    // Not ended before 300: ended at or after it, or still going.
    assert_eq!(
        q(JobFilter {
            active_after: Some(300),
            ..d()
        }),
        [3, 4, 6, 7, 8, 9, 10]
    );
    assert_eq!(
        q(JobFilter {
            after_id: Some(7),
            ..d()
        }),
        [8, 9, 10]
    );
    assert_eq!(
        q(JobFilter {
            limit: Some(3),
            ..d()
        }),
        [1, 2, 3]
    );
    assert_eq!(
        q(JobFilter {
            limit: Some(0),
            ..d()
        }),
        Vec::<u64>::new()
    );
    // Bounds beyond SQLite's integers do not fail.
    assert_eq!(
        q(JobFilter {
            submitted_before: Some(u64::MAX),
            ..d()
        })
        .len(),
        10
    );
    assert_eq!(
        q(JobFilter {
            ended_after: Some(u64::MAX),
            ..d()
        }),
        Vec::<u64>::new()
    );
    assert_eq!(
        q(JobFilter {
            ids: vec![u64::MAX, 1],
            ..d()
        }),
        [1]
    );
    assert_eq!(
        q(JobFilter {
            after_id: Some(u64::MAX),
            ..d()
        }),
        Vec::<u64>::new()
    );
}

#[test]
fn filter_combinations() {
    let store = fixture();
    let q = |f: JobFilter| ids(&store.query_jobs(&f).unwrap());
    let d = JobFilter::default;

    // `sacct -S 200 -E 190`-like: one user's jobs in any state in a window (not ended
    // before its start, submitted before its end).
    assert_eq!(
        q(JobFilter {
            users: vec!["alice".into()],
            active_after: Some(200),
            submitted_before: Some(190),
            ..d()
        }),
        [1, 3, 5]
    );
    // The queue of one partition.
    assert_eq!(
        q(JobFilter {
            states: vec!["pending".into(), "running".into()],
            partitions: vec!["gpu".into(), "debug".into()],
            ..d()
        }),
        [3, 6, 8]
    );
    // Everything at once.
    assert_eq!(
        q(JobFilter {
            ids: vec![1, 2, 9, 10],
            users: vec!["bob".into(), "alice".into()],
            states: vec!["failed".into(), "completed".into()],
            partitions: vec!["gpu".into()],
            ended_after: Some(300),
            submitted_before: Some(191),
            active_after: Some(350),
            after_id: Some(1),
            limit: Some(1),
        }),
        [9]
    );
    // An empty window.
    assert_eq!(
        q(JobFilter {
            active_after: Some(300),
            submitted_before: Some(100),
            ..d()
        }),
        Vec::<u64>::new()
    );
}

#[test]
fn filter_limit_and_after_id_page_through_everything() {
    let store = fixture();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .query_jobs(&JobFilter {
                after_id: after,
                limit: Some(3),
                ..JobFilter::default()
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(ids(&page));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
}

#[test]
fn filter_with_many_ids_uses_one_parameter() {
    // More ids than SQLite allows parameters in one statement (32766).
    let n = 40_000;
    let store = SqliteStore::open_in_memory().unwrap();
    store.allocate_ids(n).unwrap();
    let rows: Vec<JobRow> = (1..=n)
        .map(|i| job(i, "pending", "u", "p", i, None))
        .collect();
    store.put_jobs(&rows).unwrap();
    let wanted: Vec<u64> = (1..=n).rev().collect();
    let got = store
        .query_jobs(&JobFilter {
            ids: wanted,
            ..JobFilter::default()
        })
        .unwrap();
    assert_eq!(got.len() as u64, n);
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
}

// ---- id allocation ----

#[test]
fn ids_start_at_one_and_come_in_consecutive_blocks() {
    let store = SqliteStore::open_in_memory().unwrap();
    assert_eq!(store.allocate_ids(1).unwrap(), 1);
    assert_eq!(store.allocate_ids(100).unwrap(), 2);
    assert_eq!(store.allocate_ids(1).unwrap(), 102);
    assert!(matches!(
        store.allocate_ids(0),
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(store.allocate_ids(1).unwrap(), 103);
}

#[test]
fn ids_are_atomic_across_threads() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| {
                        let n = 1 + (t + i) % 5;
                        (store.allocate_ids(n).unwrap(), n)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut blocks: Vec<(u64, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    blocks.sort();
    // The blocks tile 1..=total with no gap and no overlap.
    let mut next = 1;
    for (first, n) in &blocks {
        assert_eq!(*first, next);
        next += n;
    }
    assert_eq!(store.allocate_ids(1).unwrap(), next);
}

#[test]
fn ids_exhausted_is_an_error_not_a_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteStore::open(&path).unwrap());
    raw(&path)
        .execute(
            "UPDATE counters SET next = ?1 WHERE name = 'job_id'",
            [i64::MAX - 2],
        )
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let err = store.allocate_ids(3).unwrap_err();
    assert!(
        matches!(err, StoreError::OutOfRange { what: "job id", .. }),
        "{err}"
    );
    assert_eq!(store.allocate_ids(2).unwrap(), i64::MAX as u64 - 2);
    assert!(store.allocate_ids(1).is_err());
}

// ---- atomicity of put_jobs ----

#[test]
fn put_jobs_is_all_or_nothing() {
    let store = SqliteStore::open_in_memory().unwrap();
    store.allocate_ids(3).unwrap();
    let old = job(1, "pending", "alice", "cpu", 100, None);
    store.put_jobs(std::slice::from_ref(&old)).unwrap();

    // Rows are written in order, so the failing last row comes after two rows already
    // written inside the transaction: one replacing job 1, one new.
    let batch = [
        job(1, "running", "alice", "cpu", 100, None),
        job(2, "pending", "bob", "cpu", 101, None),
        job(4, "pending", "bob", "cpu", 102, None), // never allocated
    ];
    let err = store.put_jobs(&batch).unwrap_err();
    assert!(
        matches!(err, StoreError::UnallocatedId { id: 4, next: 4 }),
        "{err}"
    );
    assert!(
        err.to_string().contains("job id 4 was never allocated"),
        "{err}"
    );
    assert_eq!(store.get_job(1).unwrap(), Some(old.clone()));
    assert_eq!(store.get_job(2).unwrap(), None);

    // A value out of range in the middle of a batch: same.
    let mut bad = job(3, "pending", "bob", "cpu", 0, None);
    bad.end_time = Some(u64::MAX);
    let err = store
        .put_jobs(&[job(2, "pending", "bob", "cpu", 101, None), bad])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::OutOfRange {
                what: "end time",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.get_job(2).unwrap(), None);
    assert!(store
        .put_jobs(&[job(0, "pending", "bob", "cpu", 1, None)])
        .is_err());

    // And the store is usable afterwards: the failed transactions left no lock behind.
    assert_eq!(ids(&store.query_jobs(&JobFilter::default()).unwrap()), [1]);
    store.put_jobs(&batch[..2]).unwrap();
    assert_eq!(
        ids(&store.query_jobs(&JobFilter::default()).unwrap()),
        [1, 2]
    );
}

// ---- files ----

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("raw connection")
}

#[test]
fn file_store_persists_across_reopen_with_private_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let rows = [
        job(1, "pending", "alice", "cpu", 1, None),
        job(2, "completed", "bob", "gpu", 2, Some(3)),
    ];
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.path(), path);
        assert_eq!(store.allocate_ids(2).unwrap(), 1);
        store.put_jobs(&rows).unwrap();
        store.put("nodes/n1", b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        // SQLite gives its companion files the database file's permissions.
        assert_eq!(mode(&dir.path().join("state.db-wal")), 0o600);
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.query_jobs(&JobFilter::default()).unwrap(), rows);
    assert_eq!(store.get("nodes/n1").unwrap().as_deref(), Some(&b"{}"[..]));
    assert_eq!(store.allocate_ids(1).unwrap(), 3);

    let db = raw(&path);
    let pragma = |name: &str| -> String {
        db.query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| format!("{v:?}"))
        .unwrap()
    };
    assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
    assert_eq!(
        pragma("user_version"),
        format!("Integer({})", SqliteStore::SCHEMA_VERSION)
    );
}

#[test]
fn two_stores_on_one_file_share_the_id_counter() {
    // Not how berth runs (one controller per file), but the counter must not hand out an id
    // twice even then.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    assert_eq!(a.allocate_ids(5).unwrap(), 1);
    assert_eq!(b.allocate_ids(5).unwrap(), 6);
    assert_eq!(a.allocate_ids(1).unwrap(), 11);
}

#[test]
fn error_for_a_missing_directory_names_the_path_and_the_remedy() {
    let err = SqliteStore::open("/nonexistent-berth-dir/state.db").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{msg}");
    assert!(
        msg.contains("cannot open the state database /nonexistent-berth-dir/state.db"),
        "{msg}"
    );
    assert!(msg.contains("--state-dir"), "{msg}");
}

#[test]
fn error_for_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("is corrupt or not a database"), "{msg}");
    assert!(msg.contains("restore it from a backup"), "{msg}");
    // Nothing was written over it.
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 8192]);
}

#[test]
fn error_for_a_database_from_a_newer_berth() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteStore::open(&path).unwrap());
    let newer = SqliteStore::SCHEMA_VERSION + 1;
    raw(&path)
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::NewerSchema { found, .. } if found == newer),
        "{msg}"
    );
    assert!(msg.contains("written by a newer berth"), "{msg}");
}

#[test]
fn error_for_another_programs_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let other = raw(&path);
    other
        .execute_batch("PRAGMA application_id = 42; CREATE TABLE t (x);")
        .unwrap();
    drop(other);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::ForeignDatabase { found: 42, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("another program"), "{err}");

    // Without an application_id, a database that already has tables is not berth's either.
    let plain = dir.path().join("plain.db");
    raw(&plain).execute_batch("CREATE TABLE jobs (x);").unwrap();
    let err = SqliteStore::open(&plain).unwrap_err();
    assert!(
        matches!(err, StoreError::ForeignDatabase { found: 0, .. }),
        "{err}"
    );
    // Left as it was: not switched to WAL, no berth tables.
    let db = raw(&path);
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
}

// ---- crash safety ----

/// Env var that turns [`crash_writer_child`] into the writer of [`commits_survive_kill_9`].
const CRASH_WRITER: &str = "BERTH_STORE_CRASH_WRITER";

/// What the writer prints once its commits returned. libtest has already printed
/// "test crash_writer_child ... " without a newline, so the parent looks for a line ending
/// with this, not equal to it.
const COMMITTED: &str = "berth-store-crash-writer: committed";

/// Not a test on its own: passes at once, unless [`commits_survive_kill_9`] runs this binary
/// with `BERTH_STORE_CRASH_WRITER=<db path>`. Then it commits jobs and a value, leaves one more
/// write uncommitted, prints [`COMMITTED`] and blocks until killed (at most a minute, so that
/// nothing is left behind if the parent dies first).
#[test]
fn crash_writer_child() {
    let Some(path) = std::env::var_os(CRASH_WRITER) else {
        return;
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.allocate_ids(3).unwrap(), 1);
    store
        .put_jobs(&[
            job(1, "pending", "alice", "cpu", 1, None),
            job(2, "pending", "alice", "cpu", 2, None),
        ])
        .unwrap();
    store
        .put_jobs(&[job(3, "running", "bob", "gpu", 3, None)])
        .unwrap();
    store.put("nodes/n1", b"up").unwrap();
    // A transaction in flight when the process dies must vanish.
    let open_tx = raw(Path::new(&path));
    open_tx
        .execute_batch(
            "BEGIN IMMEDIATE;
             UPDATE counters SET next = 100 WHERE name = 'job_id';
             INSERT INTO jobs VALUES (50, 'pending', 'eve', 'cpu', 5, NULL, x'00');",
        )
        .unwrap();
    println!("{COMMITTED}");
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(1); // never killed: the parent is gone
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn commits_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_WRITER, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // Read on a thread, so that a writer that hangs fails the test instead of hanging it.
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim_end().ends_with(COMMITTED) {
                let _ = tx.send(());
                return;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the writer should print that it committed within 30 s");

    // Child::kill sends SIGKILL to the child's pid: no destructor, no checkpoint, no close.
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "SIGKILL expected: {status:?}");
    // The commits are still only in the WAL (no checkpoint ran), so this really tests
    // recovery from the WAL, not reading a checkpointed file.
    let wal = std::fs::metadata(dir.path().join("state.db-wal")).unwrap();
    assert!(wal.len() > 0);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        ids(&store.query_jobs(&JobFilter::default()).unwrap()),
        [1, 2, 3]
    );
    assert_eq!(store.get_job(3).unwrap().unwrap().state, "running");
    assert_eq!(store.get("nodes/n1").unwrap().as_deref(), Some(&b"up"[..]));
    // The uncommitted transaction is gone, counter bump included.
    assert_eq!(store.get_job(50).unwrap(), None);
    assert_eq!(store.allocate_ids(1).unwrap(), 4);
}

// ---- throughput ----

#[test]
fn throughput_single_row_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db")).unwrap();
    let doc = vec![b'x'; 1024]; // about the size of a job document with a short script
    let row = |id| JobRow {
        id,
        state: "pending".into(),
        user: "alice".into(),
        partition: "cpu".into(),
        submit_time: 1_700_000_000 + id,
        end_time: None,
        doc: doc.clone(),
    };
    let n = 5_000;

    // A submit: allocate an id, store the job (two transactions, as the controller will do).
    let start = Instant::now();
    for _ in 0..n {
        let id = store.allocate_ids(1).unwrap();
        store.put_jobs(&[row(id)]).unwrap();
    }
    let submits = n as f64 / start.elapsed().as_secs_f64();

    // A state change: one single-row put_jobs transaction.
    let start = Instant::now();
    for id in 1..=n {
        let mut r = row(id);
        r.state = "running".into();
        store.put_jobs(&[r]).unwrap();
    }
    let updates = n as f64 / start.elapsed().as_secs_f64();

    // Batched: 500 jobs per transaction.
    let first = store.allocate_ids(n).unwrap();
    let rows: Vec<JobRow> = (first..first + n).map(row).collect();
    let start = Instant::now();
    for chunk in rows.chunks(500) {
        store.put_jobs(chunk).unwrap();
    }
    let batched = n as f64 / start.elapsed().as_secs_f64();

    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "berth-store throughput ({profile} build, 1 KiB documents, file in {}): \
         {submits:.0} submits/s (allocate_ids + single-row put_jobs), \
         {updates:.0} single-row put_jobs/s, {batched:.0} jobs/s in 500-row put_jobs",
        dir.path().display()
    );
}
