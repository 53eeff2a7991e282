//! The controller (`berth up`, with this machine's node agent in the same process, or
//! `berth controller`, with agents elsewhere): the HTTP API on a Unix socket and TCP, the job
//! table (persisted in the store after every change), the node table (what each node has and
//! holds, and how its agent is reached), the scheduler loop, and sending started jobs to
//! their nodes' agents and collecting how they ended.
//!
//! Owns: the job state machine and its persistence, submit-time validation (script,
//! directives, partition, image, sizes), the job environment (SLURM_*, LSB_*, PBS_*, BERTH_*).
//! Must not: make namespace or mount calls (the runner process does, via berth-runtime),
//! parse directives itself (berth-core does), decide placements (berth-sched does).
//!
//! Concurrency: one `Mutex<Controller>`; every handler and the scheduler take it briefly.
//! Store writes happen under it (SQLite in WAL mode: tens of microseconds), which keeps the
//! in-memory table and the database in the same order of changes.

pub use berth_agent::auth;
mod active;
mod env;
mod images;
pub mod job;
mod mail;
mod metrics;
pub mod mirror;
mod node;
mod server;

use berth_agent::node::NodeAgent;
use berth_agent::step::server::StepStart;
use berth_api::{JobInfo, SignalTarget, SubmitRequest, SubmitResponse};
use berth_core::job::{
    parse_args_as, Condition, Dependencies, Family, JobDependency, JobOptions, JobRequest,
};
use berth_sched as sched;
use berth_store::{JobFilter, Store};
use job::{Job, State};
use node::LocalNode;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{Mutex, Notify};

pub use server::{run, serve};

/// What `berth up` was told.
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub image_store: PathBuf,
    pub partitions: Vec<berth_core::PartitionConfig>,
    /// The `berth` executable, run as `berth internal run-job` for each job.
    pub berth: PathBuf,
    /// Seconds between SIGTERM and SIGKILL at a job's time limit (Slurm's KillWait).
    pub kill_wait: u64,
    /// The administrator's bind policy, applied to every job's binds.
    pub binds: berth_core::BindPolicy,
    /// Whether jobs that name no image may run on the host.
    pub host_jobs: bool,
    /// Also serve the API on this TCP address, each request with a token (`berth token`).
    pub listen: Option<std::net::SocketAddr>,
    /// This machine is a node, its agent in this process (`berth up`); `false`: only agents
    /// that register run jobs (`berth controller`).
    pub local_node: bool,
    /// Seconds without a heartbeat after which a remote node is down.
    pub node_timeout: u64,
    /// Batch jobs a node failed go back to the queue unless --no-requeue (`[batch] requeue`).
    pub requeue: bool,
    /// How many jobs may share each core of every node (`[batch] oversubscribe`).
    pub oversubscribe: u32,
    /// This machine's node features (`berth up --features`), for jobs' `--constraint`.
    pub features: Vec<String>,
    /// How pending jobs are ordered (`[priority]`: weights, fair share).
    pub priority: berth_core::PriorityConfig,
    /// What jobs' mail goes through (`[batch] mail_program`); `None`: none is sent.
    pub mail_program: Option<PathBuf>,
    /// Array indices must be below this (`[batch] max_array_size`).
    pub max_array_size: Option<u32>,
    /// The most unfinished jobs the controller holds (`[batch] max_job_count`).
    pub max_job_count: Option<u64>,
    /// The cluster's name (`[batch] cluster_name`).
    pub cluster_name: String,
    /// The cluster's licenses, how many of each (`[licenses]`).
    pub licenses: BTreeMap<String, u32>,
    /// How the controller reaches registries for users' pulls, and what they may pull
    /// (`[registry]`).
    pub registry: berth_core::RegistryConfig,
    /// The controller's own registry credentials (podman's auth.json), if any.
    pub registry_auth_file: Option<PathBuf>,
}

impl Settings {
    /// The configuration of the partition named `name`.
    pub fn partition(&self, name: &str) -> Option<&berth_core::PartitionConfig> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// An error for the API: HTTP status and the message the user sees.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }
    fn not_found(id: u64) -> ApiError {
        ApiError {
            status: 404,
            message: format!("no job {id}: see `berth queue` and `berth history`"),
        }
    }
    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 403,
            message: message.into(),
        }
    }
    fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: 500,
            message: message.to_string(),
        }
    }
}

pub use berth_agent::runner::now;

/// The caller of an API request, from the Unix socket's peer credentials.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Which of a job's holds a hold or release is for (see [`Controller::hold`]): its owner's,
/// an administrator's, both; neither named: the caller's own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Holds {
    pub owner: bool,
    pub admin: bool,
}

pub struct Controller {
    settings: Settings,
    store: Box<dyn Store>,
    images: berth_image::Store,
    /// The nodes: this machine's (`berth up`, its agent in this process) and the ones whose
    /// agents registered over TCP (`berth agent`).
    nodes: BTreeMap<String, NodeEntry>,
    /// Signs the controller's credentials to agents and checks theirs (and users' tokens).
    key: Arc<auth::Key>,
    /// Unfinished jobs (finished ones live in the store only).
    active: active::Jobs,
    /// States of finished jobs that dependencies of active jobs refer to, each with when it
    /// began (see [`Job::began`]).
    finished: BTreeMap<u64, (sched::JobState, u64)>,
    pub wake: Arc<Notify>,
    /// Something a scheduling pass must see happened since the last pass (set with every
    /// `wake`): a pass made meanwhile (by the thread that saw a job's end) makes the
    /// scheduler loop's own needless.
    due: bool,
    /// Starts on this process's own node that scheduling passes decided and nobody has made
    /// yet (see [`Controller::take_starts`]).
    local_starts: Vec<LocalStart>,
    /// Signalled by `berth down` (and SIGTERM): the API stops serving.
    pub stop: Arc<Notify>,
    /// Jobs being suspended or resumed now (their agents called without the lock).
    freezing: BTreeSet<u64>,
    /// Job records held back to be written in one transaction (see `in_one_write`); `None`:
    /// each is written as it changes.
    /// (By id: a job changed again replaces its row.)
    deferred: std::cell::RefCell<Option<BTreeMap<u64, berth_store::JobRow>>>,
    /// Job records whose write failed (the latest of each), written with the next write
    /// (where that job's newer record replaces its own): the store comes to hold what the
    /// controller did while it refused writes (full, locked by another process).
    unwritten: std::cell::RefCell<BTreeMap<u64, berth_store::JobRow>>,
    /// Runs `(job, run)` sent to a node that never confirmed their starts, of jobs ended or
    /// queued again meanwhile (the node went down, or did not answer the start), by node,
    /// with when: their starts may still reach the node, so it is asked to void them at its
    /// registrations until it says it did ([`berth_agent::runs`]).
    unconfirmed: BTreeMap<String, BTreeMap<(u64, u32), std::time::Instant>>,
    /// Users' usage by the jobs that ran, for fair share.
    usage: job::Usage,
    /// Private image names shared with other users and groups, by name (kept in the store
    /// under `image-shares/`).
    image_shares: images::Shares,
    /// The standby controllers copying this one's images ([`mirror`]).
    standbys: Arc<mirror::Standbys>,
    /// The SHA-256 of each image file in the store, and when they were read
    /// ([`Controller::unknown_images`]); `None` once an image is removed.
    image_files: Option<(std::time::Instant, BTreeSet<String>)>,
    /// Administrators' reservations, by name (kept in the store under `reservations/`).
    reservations: BTreeMap<String, berth_api::Reservation>,
    /// What this controller counted since it started, for its metrics.
    counters: metrics::Counters,
    /// What the waiting tasks of each array that the last pass did not look at wait for.
    leads: BTreeMap<u64, Lead>,
    /// When this controller started: the steps begun before (by the process before a
    /// restart, or the leader before a failover) hold none of their jobs' CPUs against the
    /// next steps, since their ends may never be heard.
    since: u64,
    /// How many steps have ended since it started, and the signal that one has: steps that
    /// wait for CPUs look again then.
    steps_ended: u64,
    step_ended: Arc<Notify>,
}

/// What an array's waiting tasks after `after` wait for: the last one a pass looked at
/// waits so, and they all wait as it does (they are alike but for their index, and start
/// in index order). Their records are not written with it: a 100,000-task array would
/// otherwise have every task's priority changed at every pass.
struct Lead {
    after: u64,
    priority: f64,
    factors: berth_api::PriorityFactors,
    reason: String,
}

/// A priority's weighted factors, as the API reports them.
fn factors(p: &sched::Priority) -> berth_api::PriorityFactors {
    berth_api::PriorityFactors {
        age: p.age,
        fairshare: p.fairshare,
        job_size: p.job_size,
        partition: p.partition,
        nice: p.nice,
    }
}

/// A job's start on this process's own node: its files written and its runner forked
/// outside the controller's lock (the next job's start and other jobs' ends need it
/// meanwhile), by a thread that then waits for the runner's end ([`run_local`]).
pub struct LocalStart {
    id: u64,
    node: String,
    agent: Arc<NodeAgent>,
    start: berth_agent::node::JobStart,
}

pub type Shared = Arc<Mutex<Controller>>;

/// A node: what it has and holds, and how its agent is reached.
struct NodeEntry {
    res: LocalNode,
    link: Link,
    /// When a remote node's agent last registered (its heartbeat).
    last_seen: std::time::Instant,
    /// Why the node is down (its agent stopped answering), if it is.
    down: Option<NodeReason>,
    /// Why an administrator drained it (`berth node drain`), if one did; kept in the store
    /// under `drains/NODE`, so that a drained node stays drained when a controller starts.
    drain: Option<NodeReason>,
    /// How busy a remote node's machine was at its last heartbeat.
    health: Option<berth_agent::node::Health>,
    /// The images in a remote node's cache at its last heartbeat (their files' SHA-256):
    /// other nodes fetch them from it.
    images: BTreeSet<String>,
}

/// Why a node is out of service, who said so and when (sinfo -R's lines).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct NodeReason {
    reason: String,
    user: String,
    time: u64,
}

const DRAINS_PREFIX: &str = "drains/";
const RESERVATIONS_PREFIX: &str = "reservations/";
const IMAGE_SHARES_PREFIX: &str = "image-shares/";
/// The names removed from the cluster's store, with when, for standbys that led before
/// ([`mirror::Listing::removed`]); each kept [`REMOVALS_KEPT`] seconds.
const IMAGE_REMOVALS_PREFIX: &str = "image-removals/";
const REMOVALS_KEPT: u64 = 30 * 86400;

/// How long the scheduler takes a running job without a time limit to run (a year): a
/// start planned after its end is no estimate to give ([`told_start`]).
const UNLIMITED_RUN: u64 = 365 * 86400;

/// A pending job's planned start as it is told (squeue --start, sbatch --test-only, qstat
/// -f): none where it comes after a job without a time limit, whose end is not known.
fn told_start(planned: Option<u64>) -> Option<u64> {
    planned.filter(|&t| t < now() + UNLIMITED_RUN / 2)
}

/// How long squeue still shows a job that ended (Slurm's MinJobAge default), seconds.
pub const MIN_JOB_AGE: u64 = 300;

/// How old a step must be, seconds, before a heartbeat of its node that does not list it
/// ends it (`Controller::end_lost_steps`): one just begun may not be listed yet.
const LOST_STEP_AFTER: u64 = 10;

/// How many other nodes a node that lacks a job's image is told to ask for it, before the
/// controller.
const IMAGE_PEERS: usize = 3;

/// How long the digests of the store's image files are taken as they were read
/// ([`Controller::unknown_images`]).
const IMAGE_FILES_FRESH: std::time::Duration = std::time::Duration::from_secs(60);

impl NodeEntry {
    fn new(res: LocalNode, link: Link) -> NodeEntry {
        NodeEntry {
            res,
            link,
            last_seen: std::time::Instant::now(),
            down: None,
            drain: None,
            health: None,
            images: BTreeSet::new(),
        }
    }

    fn state(&self) -> sched::AdminState {
        match (&self.down, &self.drain) {
            (Some(_), _) => sched::AdminState::Down,
            (None, Some(_)) => sched::AdminState::Drain,
            (None, None) => sched::AdminState::Up,
        }
    }
}

#[derive(Clone)]
enum Link {
    /// The agent in this process (`berth up`).
    Local(Arc<NodeAgent>),
    /// A `berth agent` at this URL (`https://HOST:PORT`).
    Remote(String),
}

/// The remote nodes the controller knows, in its store: `nodes/<name>`, a registration each.
const NODES_PREFIX: &str = "nodes/";

/// How long the controller waits for an agent's answer.
const AGENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a node is asked to void a run whose start it never confirmed (see
/// `Controller::unconfirmed`).
const UNCONFIRMED_KEPT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The records the store keeps under `prefix` (reservations, image shares), each that reads.
fn stored<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<T>, String> {
    let values = store.list(prefix).map_err(|e| e.to_string())?;
    Ok(values
        .iter()
        .filter_map(|(_, value)| serde_json::from_slice(value).ok())
        .collect())
}

/// The submitter's user name and primary group, from the host's user database.
fn user_of(uid: u32) -> Result<berth_runtime::Identity, ApiError> {
    berth_runtime::Identity::lookup(&uid.to_string(), false)
        .ok()
        .filter(|id| id.user != uid.to_string())
        .ok_or_else(|| {
            ApiError::forbidden(format!(
                "uid {uid} has no entry in the user database: jobs run as named users"
            ))
        })
}

impl Controller {
    /// Opens the state, reconciles jobs left running by an earlier controller, and returns
    /// the controller ready to serve.
    pub fn open(settings: Settings, store: Box<dyn Store>) -> Result<Shared, String> {
        let images = berth_image::Store::open(&settings.image_store).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(settings.state_dir.join("jobs"))
            .map_err(|e| format!("cannot create {}: {e}", settings.state_dir.display()))?;
        let mut nodes = BTreeMap::new();
        if settings.local_node {
            let step_dir = berth_api::step_dir(&settings.socket);
            let agent = Arc::new(NodeAgent::new(
                settings.state_dir.clone(),
                settings.berth.clone(),
                step_dir,
            ));
            // Image mounts an earlier process left (it was killed): mounted again as needed.
            agent.release_images();
            agent.mount_jobs();
            agent.tmp_roots();
            let res = LocalNode::discover(settings.oversubscribe, settings.features.clone());
            nodes.insert(res.name.clone(), NodeEntry::new(res, Link::Local(agent)));
        }
        // Nodes whose agents registered before (with this controller, or with another that
        // led before it): known again at once, so that what fits them is accepted before
        // they register anew.
        let known: Vec<berth_agent::daemon::Registration> = store
            .list(NODES_PREFIX)
            .map_err(|e| e.to_string())?
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice(v).ok())
            .collect();
        for reg in known {
            if !nodes.contains_key(&reg.resources.name) {
                let res = LocalNode::from(reg.resources, settings.oversubscribe);
                nodes.insert(res.name.clone(), NodeEntry::new(res, Link::Remote(reg.url)));
            }
        }
        // Drains an administrator made before (of nodes known, or to register later).
        for (key, value) in store.list(DRAINS_PREFIX).map_err(|e| e.to_string())? {
            let name = &key[DRAINS_PREFIX.len()..];
            if let (Some(node), Ok(drain)) = (nodes.get_mut(name), serde_json::from_slice(&value)) {
                node.drain = Some(drain);
            }
        }
        let key = Arc::new(auth::Key::load_or_create(
            &settings.state_dir.join("cluster.key"),
        )?);
        // For other TLS clients of the API (Prometheus, curl).
        key.tls()
            .write_pem(&settings.state_dir.join("cluster.crt"))?;
        let mut controller = Controller {
            settings,
            store,
            images,
            nodes,
            key,
            active: active::Jobs::default(),
            finished: BTreeMap::new(),
            freezing: Default::default(),
            deferred: Default::default(),
            unwritten: Default::default(),
            unconfirmed: Default::default(),
            wake: Arc::new(Notify::new()),
            due: true,
            local_starts: Vec::new(),
            stop: Arc::new(Notify::new()),
            usage: job::Usage::default(),
            reservations: BTreeMap::new(),
            image_shares: images::Shares::new(),
            standbys: Arc::default(),
            image_files: None,
            counters: metrics::Counters::default(),
            leads: BTreeMap::new(),
            since: now(),
            steps_ended: 0,
            step_ended: Arc::new(Notify::new()),
        };
        for r in stored::<berth_api::Reservation>(&*controller.store, RESERVATIONS_PREFIX)? {
            controller.reservations.insert(r.name.clone(), r);
        }
        for share in stored::<berth_api::ImageShare>(&*controller.store, IMAGE_SHARES_PREFIX)? {
            controller.image_shares.insert(share.name.clone(), share);
        }
        // Fair share's memory: the jobs that ended within the last 20 half-lives (what is
        // older counts for less than a millionth).
        let half_life = controller.settings.priority.decay_half_life;
        let ended = JobFilter {
            ended_after: Some(now().saturating_sub(half_life.saturating_mul(20))),
            ..Default::default()
        };
        for row in controller
            .store
            .query_jobs(&ended)
            .map_err(|e| e.to_string())?
        {
            let charged = serde_json::from_slice::<job::Charged>(&row.doc);
            if let (Ok(job), Some(end)) = (charged, row.end_time) {
                controller
                    .usage
                    .charge(&job.user, job.charge(end), end, half_life);
            }
        }
        let filter = JobFilter {
            states: ["PENDING", "RUNNING", "SUSPENDED"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        };
        let mut firsts = BTreeMap::new();
        for row in controller
            .store
            .query_jobs(&filter)
            .map_err(|e| e.to_string())?
        {
            let mut job = controller
                .read_record(&row, &mut firsts)
                .map_err(|e| e.message)?;
            // A stop asked before the restart: sent again if it has not worked by its kill
            // wait from now (`stop_again`).
            if job.cancel_requested || job.requeue_requested {
                job.stop_sent = Some(std::time::Instant::now());
            }
            controller.active.insert(job.id, job);
        }
        controller.fail_unrunnable();
        Ok(Arc::new(Mutex::new(controller)))
    }

    /// Ends the pending jobs a changed configuration leaves no way to run, as Slurm's
    /// controller does at its start: those of partitions it no longer has (PartitionDown),
    /// and those asking for more of a license than it has now (Licenses).
    fn fail_unrunnable(&mut self) {
        let names: BTreeSet<String> = self.partition_views().into_iter().map(|p| p.name).collect();
        let orphans: Vec<(u64, String)> = (self.active.values())
            .filter(|j| j.state == State::Pending)
            .filter_map(|j| {
                let why = match names.contains(&j.partition) {
                    false => format!(
                        "PartitionDown: partition {} is no longer in the configuration; submit the job again to one of {}",
                        j.partition,
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    true => {
                        let (name, n, total) = self.licenses_short(&j.request)?;
                        format!(
                            "Licenses: the job asks for {n} {name} license(s), and the configuration now has {}; submit it again asking for what [licenses] has",
                            total.unwrap_or(0)
                        )
                    }
                };
                Some((j.id, why))
            })
            .collect();
        for (id, why) in orphans {
            berth_core::say!("berth: job {id} fails: {why}");
            self.finish(id, State::Failed, Some(why), None);
        }
    }

    fn persist(&self, job: &Job) -> Result<(), ApiError> {
        if let Some(rows) = self.deferred.borrow_mut().as_mut() {
            rows.insert(job.id, job.row());
            return Ok(());
        }
        self.write_rows(vec![job.row()]).map_err(ApiError::internal)
    }

    /// Writes `rows` in one transaction, after the records whose write failed before (which
    /// they replace, by id); where it fails, all of them wait for the next write.
    fn write_rows(&self, rows: Vec<berth_store::JobRow>) -> Result<(), berth_store::StoreError> {
        let mut unwritten = self.unwritten.borrow_mut();
        let held_back = unwritten.len();
        let rows = if unwritten.is_empty() {
            rows
        } else {
            let mut all = std::mem::take(&mut *unwritten);
            all.extend(rows.into_iter().map(|r| (r.id, r)));
            all.into_values().collect()
        };
        match self.store.put_jobs(&rows) {
            Ok(()) if held_back > 0 => {
                berth_core::say!("berth: the state database takes writes again: the {held_back} job record(s) held back are in it");
                Ok(())
            }
            Ok(()) => Ok(()),
            Err(e) => {
                unwritten.extend(rows.into_iter().map(|r| (r.id, r)));
                Err(e)
            }
        }
    }

    /// The store's job records that `filter` selects, each as this controller last made it:
    /// one whose write is held back (for one write, or because the store failed it) is read
    /// from memory, and with `filter.ids`, those of them the store has no row of yet too.
    fn query_rows(&self, filter: &JobFilter) -> Result<Vec<berth_store::JobRow>, ApiError> {
        let mut rows = self.store.query_jobs(filter).map_err(ApiError::internal)?;
        let (unwritten, deferred) = (self.unwritten.borrow(), self.deferred.borrow());
        let newer = |id: &u64| {
            let held = deferred.as_ref().and_then(|d| d.get(id));
            held.or_else(|| unwritten.get(id))
        };
        if unwritten.is_empty() && deferred.as_ref().is_none_or(|d| d.is_empty()) {
            return Ok(rows);
        }
        for row in &mut rows {
            if let Some(newer) = newer(&row.id) {
                *row = newer.clone();
            }
        }
        let missing: Vec<u64> = (filter.ids.iter())
            .filter(|id| !rows.iter().any(|r| r.id == **id))
            .copied()
            .collect();
        rows.extend(missing.iter().filter_map(|id| newer(id).cloned()));
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// [`Controller::persist`], now, with what is held back (in one transaction): for a
    /// change that must be in the store before anyone acts on it.
    fn persist_now(&self, job: &Job) -> Result<(), ApiError> {
        let held = self.deferred.borrow_mut().as_mut().map(std::mem::take);
        let mut rows = held.unwrap_or_default();
        rows.insert(job.id, job.row());
        // What fails waits for the next write (the job's, failed for it, replaces its own).
        self.write_rows(rows.into_values().collect())
            .map_err(ApiError::internal)
    }

    /// Runs `f` with the job records it changes held back, then writes them in one
    /// transaction (a start's record, which must be in the store before its node hears of
    /// it, goes at once with what is held back by then: `persist_now`), so that a job's end
    /// and the start it makes room for, or a pass's waiting reasons, are one write. Whether
    /// all of it is in the store. What a thread that panicked in here left held back goes
    /// first (a pass a second at least comes here: never a record lost).
    fn in_one_write(&mut self, f: impl FnOnce(&mut Self)) -> bool {
        if self.deferred.borrow().is_some() {
            self.write_deferred();
        }
        *self.deferred.borrow_mut() = Some(BTreeMap::new());
        f(self);
        self.write_deferred()
    }

    /// Writes what is held back, and goes back to writing each change as it comes.
    fn write_deferred(&self) -> bool {
        let held = self.deferred.borrow_mut().take().unwrap_or_default();
        let ids: Vec<u64> = held.keys().copied().collect();
        let failing = !self.unwritten.borrow().is_empty();
        match self.write_rows(held.into_values().collect()) {
            Ok(()) => true,
            // Said once as the store fails, then for each job whose change it holds back
            // (what is held back is tried again at each write, a pass a second at least).
            Err(_) if ids.is_empty() && failing => false,
            Err(e) => {
                berth_core::say!("berth: cannot record the jobs {ids:?} (yet): {e}");
                false
            }
        }
    }

    fn partition_views(&self) -> Vec<sched::PartitionView> {
        let mut parts: Vec<sched::PartitionView> = self
            .settings
            .partitions
            .iter()
            .map(|p| sched::PartitionView {
                name: p.name.clone(),
                nodes: self.nodes.keys().cloned().collect(),
                tier: 0,
                priority_factor: p.priority,
                max_time: p.max_time,
                default_time: p.default_time,
                default: p.default,
                max_nodes: None,
                down: false,
                max_cpus_per_user: p.max_cpus_per_user.map(u64::from),
            })
            .collect();
        if parts.is_empty() {
            parts.push(sched::PartitionView {
                name: "normal".into(),
                nodes: self.nodes.keys().cloned().collect(),
                tier: 0,
                priority_factor: 1,
                max_time: None,
                default_time: None,
                default: true,
                max_nodes: None,
                down: false,
                max_cpus_per_user: None,
            });
        }
        parts
    }

    fn cluster(&self) -> sched::ClusterView {
        // One pass over the jobs, whatever the number of nodes (this runs in every
        // scheduling pass).
        let mut allocations: BTreeMap<&str, Vec<sched::Allocation>> = BTreeMap::new();
        for j in self.active.running() {
            for share in &j.shares {
                allocations
                    .entry(&share.node)
                    .or_default()
                    .push(sched::Allocation {
                        job: j.id,
                        cpus: share.cpu_ids.len() as u32,
                        memory: j.memory.unwrap_or(0),
                        gpus: share.gpu_ids.len() as u32,
                        end: j.start_time.unwrap_or(0) + j.time_limit().unwrap_or(UNLIMITED_RUN),
                    });
            }
        }
        // Also those still waiting that a pass is not given (an array's tasks past those it
        // looks at, see `views`): a dependency on them waits. With when each began, for a
        // delayed `after`.
        let (mut history, mut since) = (BTreeMap::new(), BTreeMap::new());
        for id in self
            .active
            .depended()
            .flat_map(|(first, last)| first..=last)
        {
            if let Some((state, began)) = self.dependency_state(id) {
                history.insert(id, state);
                since.extend(began.map(|t| (id, t)));
            }
        }
        sched::ClusterView {
            nodes: self
                .nodes
                .values()
                .map(|n| {
                    let held = allocations.remove(n.res.name.as_str()).unwrap_or_default();
                    n.res.view(held, n.state())
                })
                .collect(),
            partitions: self.partition_views(),
            history,
            since,
            // (Only a pass reads them: see `scheduling_view`.)
            usage: BTreeMap::new(),
            shares: BTreeMap::new(),
            reservations: self
                .reservations
                .values()
                .map(|r| sched::ReservationView {
                    name: r.name.clone(),
                    start: r.start_time,
                    end: r.end_time,
                    nodes: r.nodes.clone(),
                })
                .collect(),
            licenses: self.settings.licenses.clone(),
        }
    }

    /// `scontrol create reservation` (root): checked, kept in the store, in force from the
    /// next pass.
    pub fn create_reservation(
        &mut self,
        caller: Caller,
        mut r: berth_api::Reservation,
    ) -> Result<(), ApiError> {
        if caller.uid != 0 {
            return Err(ApiError::forbidden(
                "only root may make or delete reservations",
            ));
        }
        if r.name.is_empty()
            || !r
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(ApiError::bad(format!(
                "reservation name {:?}: give letters, digits, '.', '_' or '-'",
                r.name
            )));
        }
        if self.reservations.contains_key(&r.name) {
            return Err(ApiError {
                status: 409,
                message: format!(
                    "reservation {} exists: delete it first, or choose another name",
                    r.name
                ),
            });
        }
        if r.end_time <= r.start_time || r.end_time <= now() {
            return Err(ApiError::bad(format!(
                "reservation {}: it must end after it starts, and in the future",
                r.name
            )));
        }
        // (The year 3000: later is no date anyone means, nor one a date shows.)
        if r.end_time > 32_503_680_000 {
            return Err(ApiError::bad(format!(
                "reservation {}: it ends after the year 3000: give an earlier EndTime or a shorter Duration (UNLIMITED is a year)",
                r.name
            )));
        }
        if r.users.is_empty() {
            return Err(ApiError::bad(format!(
                "reservation {}: name the users whose jobs may run in it (Users=)",
                r.name
            )));
        }
        if let Some(unknown) =
            (r.users.iter()).find(|u| berth_runtime::Identity::lookup(u, false).is_err())
        {
            return Err(ApiError::bad(format!(
                "reservation {}: Users={unknown}: no such user here",
                r.name
            )));
        }
        if r.nodes.is_empty() {
            r.nodes = self.nodes.keys().cloned().collect();
        }
        if let Some(unknown) = r.nodes.iter().find(|n| !self.nodes.contains_key(*n)) {
            return Err(ApiError::bad(format!(
                "reservation {}: no node {unknown}: see `berth nodes`",
                r.name
            )));
        }
        let overlapping = self.reservations.values().find(|o| {
            o.start_time < r.end_time
                && r.start_time < o.end_time
                && o.nodes.iter().any(|n| r.nodes.contains(n))
        });
        if let Some(o) = overlapping {
            return Err(ApiError::bad(format!(
                "reservation {} would share nodes with reservation {} at the same time",
                r.name, o.name
            )));
        }
        // As Slurm's: not over a running job that may still run at its start (by its time
        // limit), unless told to (IGNORE_JOBS, for maintenance of every node).
        let ignore_jobs = r
            .flags
            .iter()
            .any(|f| f.eq_ignore_ascii_case("IGNORE_JOBS"));
        let busy = self.active.running().find(|j| {
            let end = j.time_limit().map(|t| j.start_time.unwrap_or(0) + t);
            end.is_none_or(|end| end > r.start_time)
                && j.nodes().any(|n| r.nodes.iter().any(|m| m == n))
        });
        if let (Some(j), false) = (busy, ignore_jobs) {
            let until = match j.time_limit() {
                Some(t) => {
                    let end = j.start_time.unwrap_or(0) + t;
                    let left = end.saturating_sub(now());
                    format!("for up to {} more", berth_core::job::format_duration(left))
                }
                None => "without a time limit".into(),
            };
            return Err(ApiError::bad(format!(
                "reservation {}: the nodes are busy: job {} runs on {} {until}: start it later, on other nodes, or give Flags=IGNORE_JOBS",
                r.name,
                j.id,
                j.nodes().collect::<Vec<_>>().join(",")
            )));
        }
        let value = serde_json::to_vec(&r).expect("reservations serialise");
        self.store
            .put(&format!("{RESERVATIONS_PREFIX}{}", r.name), &value)
            .map_err(ApiError::internal)?;
        self.reservations.insert(r.name.clone(), r);
        self.wake();
        Ok(())
    }

    /// `scontrol delete ReservationName=NAME` (root): its nodes take any job again; its
    /// pending jobs wait with ReservationDeleted.
    pub fn delete_reservation(&mut self, caller: Caller, name: &str) -> Result<(), ApiError> {
        if caller.uid != 0 {
            return Err(ApiError::forbidden(
                "only root may make or delete reservations",
            ));
        }
        if !self.reservations.contains_key(name) {
            return Err(ApiError {
                status: 404,
                message: format!("no reservation {name}: see `scontrol show reservation`"),
            });
        }
        self.store
            .delete(&format!("{RESERVATIONS_PREFIX}{name}"))
            .map_err(ApiError::internal)?;
        self.reservations.remove(name);
        self.wake();
        Ok(())
    }

    /// The reservations in force or to come.
    pub fn reservations(&self) -> Vec<berth_api::Reservation> {
        self.reservations.values().cloned().collect()
    }

    /// Reservations that have ended go (from the store too).
    fn expire_reservations(&mut self) {
        let now = now();
        let ended: Vec<String> = self
            .reservations
            .values()
            .filter(|r| r.end_time <= now)
            .map(|r| r.name.clone())
            .collect();
        for name in ended {
            if self
                .store
                .delete(&format!("{RESERVATIONS_PREFIX}{name}"))
                .is_ok()
            {
                self.reservations.remove(&name);
            }
        }
    }

    /// [`Controller::cluster`] with what only a scheduling pass reads: users' usage and
    /// shares for fair share (not worked out for a submission's or a listing's checks).
    fn scheduling_view(&self) -> sched::ClusterView {
        sched::ClusterView {
            usage: self.usage_now(),
            shares: self.settings.priority.shares.clone(),
            ..self.cluster()
        }
    }

    /// Each user's usage now: the decayed usage of jobs that ended, and running jobs' so far.
    fn usage_now(&self) -> BTreeMap<String, u64> {
        let now = now();
        let mut usage = self.usage.at(now, self.settings.priority.decay_half_life);
        for j in self.active.running() {
            *usage.entry(j.user.clone()).or_default() += j.charge(now) as u64;
        }
        usage
    }

    /// The scheduler's weights, from `[priority]`.
    fn sched_config(&self) -> sched::Config {
        let p = &self.settings.priority;
        sched::Config {
            weight_age: p.weight_age,
            weight_job_size: p.weight_job_size,
            weight_partition: p.weight_partition,
            weight_fairshare: p.weight_fairshare,
            max_age: p.max_age,
            favor_small: p.favor_small,
            ..sched::Config::default()
        }
    }

    /// `GET /v1/config` (scontrol show config, sprio -w): the settings users ask about.
    pub fn config(&self) -> berth_api::ConfigInfo {
        let (s, p) = (&self.settings, &self.settings.priority);
        berth_api::ConfigInfo {
            cluster_name: s.cluster_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            state_dir: s.state_dir.display().to_string(),
            kill_wait: s.kill_wait,
            node_timeout: s.node_timeout,
            requeue: s.requeue,
            oversubscribe: s.oversubscribe,
            host_jobs: s.host_jobs,
            max_array_size: s.max_array_size,
            max_job_count: s.max_job_count,
            min_job_age: MIN_JOB_AGE,
            mail_program: s.mail_program.as_ref().map(|m| m.display().to_string()),
            licenses: s.licenses.clone(),
            priority: berth_api::PriorityWeights {
                weight_age: p.weight_age,
                weight_job_size: p.weight_job_size,
                weight_partition: p.weight_partition,
                weight_fairshare: p.weight_fairshare,
                max_age: p.max_age,
                decay_half_life: p.decay_half_life,
                favor_small: p.favor_small,
            },
            backfill_reservations: self.sched_config().reservations,
        }
    }

    /// `GET /v1/shares` (sshare): each user's shares, usage and fair-share factor.
    pub fn shares(&self) -> Vec<sched::Share> {
        sched::fairshare::shares(&self.usage_now(), &self.settings.priority.shares)
    }

    /// Job `id`'s state as dependencies on it see it, and when it began, where it is known.
    fn dependency_state(&self, id: u64) -> Option<(sched::JobState, Option<u64>)> {
        match self.active.get(&id) {
            Some(job) => Some((job.scheduler_state(), job.began())),
            None => self
                .finished
                .get(&id)
                .map(|&(state, since)| (state, Some(since))),
        }
    }

    /// Ids of jobs that active jobs depend on and that are no longer active.
    fn referenced_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.active
            .depended()
            .flat_map(|(first, last)| first..=last)
            .filter(|id| !self.active.contains_key(id))
    }

    /// Keeps `finished` to the states dependencies need: loads those it lacks from the store
    /// (jobs that ended before this controller started) and forgets the rest, so that a pass
    /// costs what the queue holds, not every job ever run.
    fn refresh_history(&mut self) {
        let wanted: BTreeSet<u64> = self.referenced_ids().collect();
        self.finished.retain(|id, _| wanted.contains(id));
        for id in wanted {
            if self.finished.contains_key(&id) {
                continue;
            }
            if let Ok(job) = self.job(id) {
                self.finished
                    .insert(id, (job.scheduler_state(), job.began().unwrap_or(0)));
            }
        }
    }

    fn sched_request(&self, partition: &str, r: &JobRequest) -> sched::JobRequest {
        use berth_core::job::Memory;
        // The most on a node, on its fewest nodes.
        let per_node_tasks = r.ntasks.div_ceil(r.nodes.min.max(1));
        let gpus_per_node = r.gpus_on_node(per_node_tasks, r.nodes.min);
        let memory_per_node = memory_per_node(r);
        sched::JobRequest {
            partition: partition.to_string(),
            nodes_min: r.nodes.min,
            nodes_max: r.nodes.max,
            tasks: Some(r.ntasks),
            tasks_per_node: r.ntasks_per_node,
            cpus_per_task: r.cpus_per_task,
            memory_per_node,
            gpus_per_node,
            time_limit: r.time_limit,
            no_time_limit: r.no_time_limit,
            exclusive: r.exclusive,
            whole_memory: r.memory == Some(Memory::WholeNode),
            overcommit: r.overcommit,
            min_cpus: r.min_cpus.unwrap_or(0),
            choice: Some(Box::new(sched::NodeChoice {
                features: r.constraint.clone(),
                required: r.nodelist.clone(),
                excluded: r.exclude.clone(),
                candidates: r.candidates.clone(),
                preferred: r.preferred.clone(),
            }))
            .filter(|c| !c.is_empty()),
            licenses: r.licenses.clone(),
        }
    }

    /// `job`'s dependencies not yet satisfied, as Slurm shows them (see
    /// [`JobInfo::dependency`]): each term with the state of the job (or the array, `ID_*`)
    /// it names as this controller knows it; of alternatives (`?`), none once one holds;
    /// an LSF condition whole, each term with its state, until it holds.
    fn unmet_dependencies(&self, job: &Job) -> Option<String> {
        let now = now();
        let state_of = |d: &sched::Dependency| {
            let (state, since) = self.dependency_state(d.job).unzip();
            sched::delayed(d, state, || since.flatten(), now)
        };
        let deps = &job.request.dependencies;
        // Each term: what it asks, of which job (or array), and where it stands.
        let terms: Vec<(berth_core::job::DependencyKind, String, sched::TermState)> = job
            .dependency_ranges()
            .zip(0..)
            .map(|((kind, first, last), term)| {
                let (exit, delay) = (job.exit_test(term), job.delay(term));
                let any_failed = job.any_failed(kind, first, last);
                let range = (first..=last).map(|id| sched::Dependency {
                    delay,
                    any_failed,
                    kind: sched_kind(kind),
                    job: id,
                    term: 0,
                    exit,
                });
                let state = sched::term_statuses(range, state_of)
                    .remove(&0)
                    .unwrap_or(sched::TermState::of(sched::DepStatus::Satisfied));
                // One array task by its index (`7_1`), as Slurm shows it: as it was asked
                // for, or where it is still known here; a whole array as `7_*`, and so
                // aftercorr's (each task's own).
                let asked = deps.jobs.get(term as usize).filter(|d| d.kind == kind);
                let one = || {
                    (asked.and_then(|d| Some(format!("{}_{}", d.job, d.array_index?))))
                        .or_else(|| self.active.get(&first).map(Job::shown_id))
                        .unwrap_or_else(|| first.to_string())
                };
                let named = match (kind, first == last) {
                    (berth_core::job::DependencyKind::AfterCorr, _) => {
                        format!("{}_*", asked.map_or(first, |d| d.job))
                    }
                    (_, true) => one(),
                    (_, false) => format!("{first}_*"),
                };
                // Its delay as it was asked for (`after:7+5`).
                let named = match delay {
                    0 => named,
                    seconds => format!("{named}+{}", seconds / 60),
                };
                (kind, named, state)
            })
            .collect();
        let how = |status| match status {
            sched::DepStatus::Satisfied => "satisfied",
            sched::DepStatus::Waiting => "unfulfilled",
            sched::DepStatus::NeverSatisfied => "failed",
        };
        if let Some(condition) = &deps.condition {
            let states = (0..).zip(terms.iter().map(|(_, _, s)| *s)).collect();
            let status_of =
                |c: &Condition| sched::condition_status(&sched_condition(c, &deps.jobs), &states);
            if status_of(condition) == sched::DepStatus::Satisfied {
                return None;
            }
            // Each term with its state; a count as LSF writes it (`numdone(7_*, >= 2)`).
            return Some(condition.render(&mut |leaf| {
                let t = match leaf {
                    Condition::Term(t) => *t as usize,
                    _ => usize::MAX,
                };
                let written = match (terms.get(t), deps.jobs.get(t).and_then(|j| j.count)) {
                    (Some((_, named, _)), Some(count)) => {
                        format!("{}({named}, {count})", count.word())
                    }
                    (Some((kind, named, _)), None) => format!("{}:{named}", kind.word()),
                    (None, _) => String::new(),
                };
                format!("{written}({})", how(status_of(leaf)))
            }));
        }
        let unmet = terms
            .iter()
            .filter(|(_, _, s)| s.status != sched::DepStatus::Satisfied);
        if deps.any && unmet.clone().count() < terms.len() {
            return None;
        }
        let mut unmet: Vec<String> = unmet
            .map(|(kind, named, s)| format!("{}:{named}({})", kind.word(), how(s.status)))
            .collect();
        let running_namesake = || {
            self.active.values().any(|other| {
                other.id != job.id
                    && other.user == job.user
                    && other.request.name == job.request.name
                    && other.state.for_scheduler() == sched::JobState::Running
            })
        };
        if deps.singleton && running_namesake() {
            unmet.push("singleton(unfulfilled)".into());
        }
        (!unmet.is_empty()).then(|| unmet.join(if deps.any { "?" } else { "," }))
    }

    fn view(&self, job: &Job) -> sched::JobView {
        sched::JobView {
            id: job.id,
            name: job.request.name.clone(),
            user: job.user.clone(),
            state: job.scheduler_state(),
            submit_time: job.submit_time,
            request: self.sched_request(&job.partition, &job.request),
            nice: job.request.nice,
            held: job.held,
            begin: job.begin_time,
            // Each range one term (an array's tasks all required for its term), numbered
            // as the request's `jobs` are, which a condition's terms name.
            dependencies: job
                .dependency_ranges()
                .zip(0..)
                .flat_map(|((kind, first, last), term)| {
                    let any_failed = job.any_failed(kind, first, last);
                    let (kind, exit, delay) =
                        (sched_kind(kind), job.exit_test(term), job.delay(term));
                    (first..=last).map(move |job| sched::Dependency {
                        delay,
                        any_failed,
                        kind,
                        job,
                        term,
                        exit,
                    })
                })
                .collect(),
            dependencies_any: job.request.dependencies.any,
            dependency_condition: {
                let deps = &job.request.dependencies;
                let condition = deps.condition.as_ref();
                condition.map(|c| sched_condition(c, &deps.jobs))
            },
            singleton: job.request.dependencies.singleton,
            array: job.array_job_id.map(|master| sched::ArrayTask {
                master,
                index: job.array_task_id.unwrap_or(0),
                limit: job.request.array.as_ref().and_then(|a| a.max_running),
            }),
            reservation: job.request.reservation.clone(),
            deadline: job.deadline,
        }
    }

    /// Refuses `adding` jobs of `user` in image `image`, of `cpus` CPUs each, where partition
    /// `partition`'s rules do not take them: its images, its limit of jobs per user, and its
    /// CPUs per user (a job over it would never start).
    fn partition_rules(
        &self,
        user: &str,
        partition: &str,
        image: Option<&str>,
        adding: usize,
        request: &JobRequest,
    ) -> Result<(), ApiError> {
        // The fewest CPUs it takes: an exclusive job's nodes whole, the smallest ones.
        let (cpus, exclusive) = match request.exclusive {
            true => {
                let mut sizes: Vec<u64> = (self.nodes.values())
                    .map(|n| u64::from(n.res.cpus.count()))
                    .collect();
                sizes.sort_unstable();
                let k = request.nodes.min as usize;
                let least: u64 = sizes.iter().take(k).sum();
                (
                    least.max(request.total_cpus()),
                    Some(format!("{k} node(s)")),
                )
            }
            false => (request.total_cpus(), None),
        };
        let Some(rules) = self.settings.partition(partition) else {
            return Ok(());
        };
        if let Some(max) = rules.max_cpus_per_user.filter(|&m| cpus > u64::from(m)) {
            let cpus = match exclusive {
                Some(nodes) => format!("whole nodes ({cpus} CPUs at least on {nodes})"),
                None => format!("{cpus} CPUs"),
            };
            return Err(ApiError::forbidden(format!(
                "the job asks for {cpus}; partition {partition} gives a user at most {max} CPUs at once (max_cpus_per_user): ask for fewer, or another partition"
            )));
        }
        if let Some(name) = image {
            let full = berth_image::Reference::full_name(name);
            rules.allows_image(&full).map_err(ApiError::forbidden)?;
        }
        if let Some(max) = rules.max_jobs_per_user {
            let have = self
                .active
                .values()
                .filter(|j| j.user == user && j.partition == partition)
                .count();
            if have + adding > max as usize {
                return Err(ApiError::forbidden(format!(
                    "{user} has {have} job(s) in partition {partition}; {adding} more would pass its limit of {max} (max_jobs_per_user)"
                )));
            }
        }
        Ok(())
    }

    /// `berth submit`: validates everything a job can be refused for, stores it, wakes the
    /// scheduler.
    pub fn submit(
        &mut self,
        caller: Caller,
        mut req: SubmitRequest,
    ) -> Result<SubmitResponse, ApiError> {
        let user = user_of(caller.uid)?.user;
        // bsub and qsub run a script without a #! line with /bin/sh (sbatch refuses it).
        let with_sh = !req.script.starts_with("#!")
            && matches!(
                req.syntax,
                berth_api::OptionSyntax::Bsub | berth_api::OptionSyntax::Qsub
            );
        if !req.script.starts_with("#!") && !with_sh {
            return Err(ApiError::bad(format!(
                "{}: line 1: a batch script must start with #! and the path of its interpreter, e.g. #!/bin/sh",
                req.script_name
            )));
        }
        if req.script.len() > berth_api::MAX_SCRIPT_BYTES {
            return Err(ApiError::bad(format!(
                "{}: {} bytes: berth takes batch scripts of up to {} MiB (as Slurm's max_script_size): have the script read its data from a file",
                req.script_name,
                req.script.len(),
                berth_api::MAX_SCRIPT_BYTES >> 20
            )));
        }
        // The interpreter would be "/bin/sh\r": refused here, as sbatch refuses it, rather
        // than failing at the start with "not found".
        if let Some(at) = req.script.find("\r\n") {
            return Err(ApiError::bad(format!(
                "{0}: line {1}: DOS line breaks (\\r\\n) where Unix ones (\\n) are expected: convert the script (dos2unix {0}) and submit it again",
                req.script_name,
                req.script[..at].lines().count()
            )));
        }
        // What berth's clients always send right: refused as the API's caller's mistake,
        // not found out as a job's failure.
        if !req.cwd.starts_with('/') {
            return Err(ApiError::bad(format!(
                "cwd {:?}: the directory the job was submitted from, as an absolute path",
                req.cwd
            )));
        }
        let bad_name = |name: &String| name.is_empty() || name.contains(['=', '\0']);
        let vars = req.env.iter().chain(req.export_env.iter().flatten());
        if let Some((name, _)) = vars.into_iter().find(|(name, _)| bad_name(name)) {
            return Err(ApiError::bad(format!(
                "environment variable {name:?}: a name is not empty and has no '=' in it"
            )));
        }
        let mut request = parse_submission(&req)?;
        if let (Some(file), None) = (&request.export_file, &req.export_env) {
            return Err(ApiError::bad(format!(
                "--export-file={file} names a file on the submitting machine: its client reads it (berth submit, sbatch); send its variables as export_env"
            )));
        }
        if with_sh {
            // (Added once its directives were read, so that their line numbers are as typed.)
            req.script.insert_str(0, "#!/bin/sh\n");
        }
        refuse_negative_nice(&caller, request.nice)?;
        // sbatch --uid: root submits the job as another user, explicitly; it is that user's
        // from here on (partitions' and reservations' rules included).
        let (caller, user) = match &request.uid {
            None => (caller, user),
            Some(target) if caller.uid != 0 => {
                return Err(ApiError::forbidden(format!(
                    "--uid={target}: only root may submit a job as another user"
                )))
            }
            Some(target) => {
                let uid = berth_runtime::Identity::lookup(target, false)
                    .map_err(|e| ApiError::bad(format!("--uid={target}: {e}")))?
                    .uid;
                let id = user_of(uid)?;
                (
                    Caller {
                        uid: id.uid,
                        gid: id.gid,
                    },
                    id.user,
                )
            }
        };
        // A job that names no image takes $BERTH_IMAGE's: from inside a job, its own.
        if request.image.is_none() {
            let inherited = req
                .env
                .iter()
                .find(|(k, v)| k == "BERTH_IMAGE" && !v.is_empty());
            request.image = inherited.map(|(_, name)| berth_core::job::ImageRef {
                name: name.clone(),
                origin: berth_core::job::ImageOrigin::Environment,
            });
        }
        // An image file on the submitting machine: the client's upload of it.
        if let Some(r) = request
            .image
            .as_mut()
            .filter(|r| berth_core::job::image_is_file(&r.name))
        {
            r.name = req.image_files.get(&r.name).cloned().ok_or_else(|| {
                ApiError::bad(format!(
                    "{}: an image file, which the submitting command uploads into the cluster's store (berth submit, sbatch, bsub and qsub do): submit with one of them, or upload it (berth image import --cluster FILE --name NAME) and name what that says",
                    r.name
                ))
            })?;
        }
        let cluster = self.cluster();
        // A list (`-p normal,debug`): the first, in its order, that can hold the job (Slurm
        // takes the one it starts soonest in), else the first's refusal.
        if let Some(list) = request.partition.clone().filter(|p| p.contains(',')) {
            let names: Vec<&str> = list.split(',').filter(|n| !n.is_empty()).collect();
            let fits = names.iter().find(|name| {
                cluster.partition(name).is_some()
                    && self.placeable(&cluster, name, &request).is_ok()
            });
            request.partition = fits.or(names.first()).map(|n| n.to_string());
        }
        let partition = match &request.partition {
            Some(p) => cluster.partition(p).ok_or_else(|| {
                let (place, _) = words_of(&request);
                ApiError::bad(format!(
                    "unknown {place} '{p}': the {place}s are {}",
                    cluster
                        .partitions
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
            None => cluster
                .default_partition()
                .ok_or_else(|| ApiError::bad("no default partition: name one with -p"))?,
        }
        .name
        .clone();
        self.placeable(&cluster, &partition, &request)?;
        if let Some(name) = &request.reservation {
            let r = self.reservations.get(name).ok_or_else(|| {
                ApiError::bad(format!(
                    "no reservation {name}: see `scontrol show reservation`"
                ))
            })?;
            if caller.uid != 0 && !r.users.contains(&user) {
                return Err(ApiError::forbidden(format!(
                    "reservation {name} is for {}: you are not among them",
                    r.users.join(", ")
                )));
            }
        }
        self.resolve_named(&mut request.dependencies, &user)?;
        let dependencies = self.dependency_targets(&request, None)?;
        // The image's name, squashfs file, environment and entrypoint (if the script is to
        // run through it); no name: the job runs on the host, which the administrator must
        // have allowed.
        let (image, image_squashfs, image_env, image_entrypoint) = match &request.image {
            Some(r) => {
                let record = self.cluster_image(&r.name, &user).map_err(ApiError::bad)?;
                (
                    Some(r.name.clone()),
                    Some(self.images.squashfs(&record).to_string_lossy().into_owned()),
                    record.config.env.clone(),
                    entrypoint(&record.config, request.container_entrypoint)
                        .into_iter()
                        .chain(shifter_interpreter(&req.script))
                        .collect(),
                )
            }
            None if self.settings.host_jobs => {
                // What only a container has, refused now rather than when the job starts.
                let container_only = [
                    ("--bind", !request.binds.is_empty()),
                    ("--container-workdir", request.container_workdir.is_some()),
                    ("--container-entrypoint", request.container_entrypoint),
                    ("--container-remap-root", request.container_remap_root),
                    ("--container-save", request.container_save.is_some()),
                ];
                if let Some((option, _)) = container_only.iter().find(|(_, set)| *set) {
                    return Err(ApiError::bad(format!(
                        "{option} is for a job in an image: this one names none and would run on the host"
                    )));
                }
                (None, None, Vec::new(), Vec::new())
            }
            None => {
                // (bsub and qsub have no --image of their own.)
                let option = match req.syntax {
                    berth_api::OptionSyntax::Bsub | berth_api::OptionSyntax::Qsub => "",
                    _ => "--image IMAGE, ",
                };
                return Err(ApiError::bad(format!(
                    "the job names no image: add `#BERTH --image IMAGE` or `export APPLICATION=IMAGE` to the script, or submit it with {option}BERTH_IMAGE=IMAGE in the environment; jobs without an image run on the host only where the administrator allows it ([batch] host_jobs)"
                )));
            }
        };
        self.within_site_limits(&request)?;
        let adding = request.array.as_ref().map_or(1, |a| a.len());
        self.partition_rules(&user, &partition, image.as_deref(), adding, &request)?;
        // Its deadline, resolved once (the job's own is this), needs a time limit to plan
        // with and a begin before it.
        let submit_time = now();
        let deadline = request
            .deadline
            .map(|d| d.resolve_in(submit_time, utc_offset));
        if let Some(deadline) = deadline {
            let part = self.settings.partition(&partition);
            let limit = request
                .time_limit
                .or(part.and_then(|p| p.time_limit_for(request.no_time_limit)));
            if limit.is_none() {
                return Err(ApiError::bad(format!(
                    "--deadline needs a time limit to plan the job with: give it one (-t), as partition {partition} has none"
                )));
            }
            if request
                .begin
                .is_some_and(|b| b.resolve_in(submit_time, utc_offset) >= deadline)
            {
                return Err(ApiError::bad(
                    "--begin is not before --deadline: the job could never run",
                ));
            }
        }
        let in_cwd = |w: &str| match w.starts_with('/') {
            true => w.to_string(),
            false => format!("{}/{w}", req.cwd),
        };
        let workdir = request.workdir.as_deref().map_or(req.cwd.clone(), in_cwd);
        let indices: Vec<Option<u32>> = match &request.array {
            Some(a) => a.indices().into_iter().map(Some).collect(),
            None => vec![None],
        };
        // A test takes no id: it names the one the job would have had.
        let first = match request.test_only {
            true => self.store.peek_id(),
            false => self.store.allocate_ids(indices.len() as u64),
        }
        .map_err(ApiError::internal)?;
        // One copy for all of an array's tasks (see `job::Part`).
        // (An allocation's client submits the script that holds it: salloc's, srun's own.)
        let allocation = req.script == HOLD_SCRIPT;
        let (script, submit_env) = (job::Part::new(req.script), job::Part::new(req.env));
        let shared = job::Part::new(request.clone());
        let mut jobs = Vec::with_capacity(indices.len());
        for (n, index) in indices.iter().enumerate() {
            let id = first + n as u64;
            let array_job_id = index.map(|_| first);
            jobs.push(Job {
                id,
                array_job_id,
                array_task_id: *index,
                depends_on: dependencies
                    .iter()
                    .flat_map(|(d, tasks)| depends_on(d, tasks.as_deref(), *index))
                    .collect(),
                user: user.clone(),
                uid: caller.uid,
                partition: partition.clone(),
                // Until the job starts, %N names the first node there is (see `outputs`).
                stdout: String::new(),
                stderr: None,
                request: match n {
                    0 => shared.clone(),
                    _ => shared.kept_elsewhere(),
                },
                array_request: None,
                default_limit: None,
                script: match n {
                    0 => script.clone(),
                    _ => script.kept_elsewhere(),
                },
                script_args: req.script_args.clone(),
                script_path: req.script_path.clone(),
                // (bsub -cwd's %J, %I, %U: each job's own; the submission's directory as
                // it is, whatever % it has.)
                workdir: match (&request.workdir, request.workdir_pattern) {
                    (Some(pattern), true) => in_cwd(&berth_core::job::expand_pattern(
                        pattern,
                        &berth_core::job::PatternContext {
                            job_id: id,
                            array_job_id,
                            array_index: *index,
                            job_name: &request.name,
                            user: &user,
                            first_node: "",
                        },
                    )),
                    _ => workdir.clone(),
                },
                submit_env: match n {
                    0 => submit_env.clone(),
                    _ => submit_env.kept_elsewhere(),
                },
                submit_host: req.host.clone(),
                submit_dir: Some(req.cwd.clone()),
                umask: request.umask.or(req.umask).map(|m| m & 0o777),
                image: image.clone(),
                image_squashfs: image_squashfs.clone(),
                image_env: image_env.clone(),
                image_entrypoint: image_entrypoint.clone(),
                state: State::Pending,
                reason: Some(if request.hold {
                    "JobHeldUser".into()
                } else {
                    "None".into()
                }),
                held: request.hold,
                admin_hold: false,
                owner_hold: false,
                admin_suspend: false,
                submit_time,
                begin_time: request.begin.map(|b| b.resolve_in(submit_time, utc_offset)),
                deadline,
                start_time: None,
                end_time: None,
                shares: Vec::new(),
                cpus: request.total_cpus(),
                memory: None,
                gpus: 0,
                exit_code: None,
                signal: None,
                cpu_usec: None,
                user_cpu_usec: None,
                system_cpu_usec: None,
                max_rss_bytes: None,
                priority: None,
                priority_factors: None,
                mailed_limits: Vec::new(),
                cancel_requested: false,
                stop_sent: None,
                cancelled_by: None,
                requeue_requested: false,
                requeue_held: None,
                restarts: 0,
                steps: Vec::new(),
                earlier_runs: Vec::new(),
                containers: BTreeMap::new(),
                allocation,
                allocation_exit: None,
                suspended: job::Stopwatch::default(),
                expected_start: None,
                planned_nodes: Vec::new(),
                held_time: match request.hold {
                    true => job::Stopwatch::started(submit_time),
                    false => job::Stopwatch::default(),
                },
            });
        }
        let mut warnings: Vec<String> = request
            .ignored
            .iter()
            .map(|i| format!("ignored {}: {}", i.option, i.reason))
            .collect();
        // Raised to what a job's cgroup can start under, as Slurm raises one to its
        // MinRAMSpace: said, so that nobody wonders.
        let asked = memory_per_node(&request);
        let least = berth_runtime::cgroup::MIN_MEMORY;
        if (1..least).contains(&asked) {
            warnings.push(format!(
                "{} KiB of memory on a node is raised to {} MiB, the least a job runs with",
                asked.div_ceil(1024),
                least >> 20
            ));
        }
        if request.mail.any() {
            match &self.settings.mail_program {
                Some(p) if p.is_file() => {}
                Some(p) => warnings.push(format!(
                    "no mail will be sent: the mail program {} is not installed on the controller's host ([batch] mail_program)",
                    p.display()
                )),
                None => warnings.push(
                    "no mail will be sent: this cluster sends none ([batch] mail_program is empty)".into(),
                ),
            }
        }
        let mut response = SubmitResponse {
            job_id: first,
            jobs: indices.len() as u64,
            array: request.array.is_some(),
            partition,
            default_partition: request.partition.is_none(),
            warnings,
            wait: request.wait,
            estimate: None,
        };
        if request.test_only {
            response.jobs = 0;
            response.wait = false;
            response.estimate = Some(self.estimate(&jobs[0]));
            return Ok(response);
        }
        let first_node = self.nodes.keys().next().cloned().unwrap_or_default();
        for job in &mut jobs {
            (job.stdout, job.stderr) = outputs(job, &first_node);
        }
        let rows: Vec<_> = jobs.iter().map(Job::row).collect();
        self.store.put_jobs(&rows).map_err(ApiError::internal)?;
        // (Written: freed before the queue grows by as much, a large array's peak.)
        drop(rows);
        self.counters.submitted(jobs.len() as u64);
        for job in jobs {
            self.active.insert(job.id, job);
        }
        self.wake();
        Ok(response)
    }

    /// Refuses a submission over the site's limits (`[batch] max_array_size`,
    /// `max_job_count`), saying which.
    fn within_site_limits(&self, request: &JobRequest) -> Result<(), ApiError> {
        let array = request.array.as_ref();
        if let (Some(max), Some(top)) = (
            self.settings.max_array_size,
            array.and_then(|a| a.shape().max),
        ) {
            if top >= max {
                return Err(ApiError::forbidden(format!(
                    "array index {top} is over this site's limit: indices must be below {max} ([batch] max_array_size, Slurm's MaxArraySize)"
                )));
            }
        }
        if let Some(max) = self.settings.max_job_count {
            let (have, adding) = (
                self.active.len() as u64,
                array.map_or(1, |a| a.len()) as u64,
            );
            if have + adding > max {
                return Err(ApiError::forbidden(format!(
                    "the cluster holds {have} unfinished job(s); {adding} more would pass this site's limit of {max} ([batch] max_job_count, Slurm's MaxJobCount): submit again once some have ended"
                )));
            }
        }
        Ok(())
    }

    /// Whether `request` could ever run in `partition` (at submission, and when changed): its
    /// licenses against the cluster's, its choice of nodes, then its size against the
    /// partition's nodes, refused in words.
    fn placeable(
        &self,
        cluster: &sched::ClusterView,
        partition: &str,
        request: &JobRequest,
    ) -> Result<(), ApiError> {
        if let Some((name, n, total)) = self.licenses_short(request) {
            let have = &self.settings.licenses;
            return Err(ApiError::bad(match total {
                Some(total) => format!(
                    "the job asks for {n} {name} license(s), and this cluster has {total}: ask for at most {total}"
                ),
                None if have.is_empty() => format!(
                    "the job asks for license {name}, and this cluster has no licenses ([licenses] in the configuration): ask without -L"
                ),
                None => {
                    let names: Vec<&str> = have.keys().map(String::as_str).collect();
                    format!(
                        "the job asks for license {name}, which this cluster does not have: it has {}",
                        names.join(", ")
                    )
                }
            }));
        }
        let sreq = self.sched_request(partition, request);
        if let Some(choice) = &sreq.choice {
            choice_in(cluster, partition, choice)?;
        }
        sched::fits_ever(cluster, &sreq)
            .map_err(|reason| ApiError::bad(never_fits(cluster, partition, &sreq, reason, request)))
    }

    /// A license `request` asks for more of than the cluster has (none, where it has none
    /// of that name): its name, how many it asks for and how many there are.
    fn licenses_short<'a>(&self, request: &'a JobRequest) -> Option<(&'a str, u32, Option<u32>)> {
        let have = &self.settings.licenses;
        let (name, n) = (request.licenses.iter())
            .find(|(name, n)| have.get(name).is_none_or(|total| n > total))?;
        Some((name, *n, have.get(name).copied()))
    }

    /// The job through which job `id`, waiting for the jobs `ranges` name, would wait for
    /// itself (itself, where it names itself): `None` where it would not.
    fn circle(
        &self,
        id: u64,
        ranges: &[(berth_core::job::DependencyKind, u64, u64)],
    ) -> Option<u64> {
        let mut seen = BTreeSet::new();
        for &(_, through, last) in ranges {
            if (through..=last).contains(&id) {
                return Some(id);
            }
            let mut open = vec![(through, last)];
            while let Some((first, last)) = open.pop() {
                if (first..=last).contains(&id) {
                    return Some(through);
                }
                for other in (first..=last).filter(|o| seen.insert(*o)) {
                    if let Some(j) = self.active.get(&other) {
                        open.extend(j.dependency_ranges().map(|(_, a, b)| (a, b)));
                    }
                }
            }
        }
        None
    }

    /// LSF's dependencies on job names made dependencies on those jobs: `user`'s jobs of
    /// each name (a trailing `*` matching any ending), unfinished or ended within the hour
    /// (LSF's CLEAN_PERIOD), an array's by its id; none of a name is refused, as LSF refuses
    /// a dependency on a job it cannot find.
    fn resolve_named(&self, deps: &mut Dependencies, user: &str) -> Result<(), ApiError> {
        if deps.named.is_empty() {
            return Ok(());
        }
        let recent = JobFilter {
            users: vec![user.to_string()],
            active_after: Some(now().saturating_sub(3600)),
            ..Default::default()
        };
        let rows = self.query_rows(&recent)?;
        let mut firsts = BTreeMap::new();
        let mut theirs = Vec::new();
        for row in &rows {
            let job = match self.active.get(&row.id) {
                Some(j) => j.clone(),
                None => self.read_record(row, &mut firsts)?,
            };
            theirs.push((job.array_job_id.unwrap_or(job.id), job.request.name.clone()));
        }
        // Each name's terms, by its place in `named`.
        let mut terms: Vec<Vec<u32>> = Vec::new();
        let jobs_before = deps.jobs.len() as u32;
        for (kind, named) in deps.named.clone() {
            // (`run[3]`: that element of the array named run; `run[*]`: all of it.)
            let (pattern, array_index) = Dependencies::name_and_index(&named);
            let mut ids: Vec<u64> = theirs
                .iter()
                .filter(|(_, name)| Dependencies::name_matches(pattern, name))
                .map(|(id, _)| *id)
                .collect();
            ids.dedup();
            if ids.is_empty() {
                return Err(ApiError::bad(format!(
                    "the job depends on jobs named {pattern}, and {user} has none (unfinished, or ended within the hour): name a job of yours, or its id"
                )));
            }
            let first = deps.jobs.len() as u32;
            deps.jobs.extend(ids.into_iter().map(|job| JobDependency {
                delay: None,
                kind,
                job,
                array_index,
                each: named.ends_with("[*]"),
                count: None,
                exit_code: None,
            }));
            terms.push((first..deps.jobs.len() as u32).collect());
        }
        deps.settle_names(jobs_before, &terms);
        Ok(())
    }

    /// Each of `request`'s dependencies with, when it names an array job, that array's
    /// tasks (index, id); refuses a job that does not exist, or an array task that does not.
    /// `task`: the array index of the one task they are for (an update's), else all of the
    /// request's array.
    #[allow(clippy::type_complexity)]
    fn dependency_targets(
        &self,
        request: &JobRequest,
        task: Option<u32>,
    ) -> Result<Vec<(berth_core::job::JobDependency, Option<Vec<(u32, u64)>>)>, ApiError> {
        request
            .dependencies
            .jobs
            .iter()
            .map(|d| {
                let target = self.job(d.job).map_err(|e| match e.status {
                    404 => ApiError::bad(format!(
                        "the job depends on job {}, which does not exist",
                        d.job
                    )),
                    _ => e,
                })?;
                // An array job is named by its first task's id, which is its array id.
                let tasks = match (&target.request.array, target.array_job_id) {
                    (Some(array), Some(master)) if master == d.job => Some(
                        array
                            .indices()
                            .into_iter()
                            .zip(master..)
                            .collect::<Vec<(u32, u64)>>(),
                    ),
                    _ => None,
                };
                match (d.array_index, &tasks) {
                    (_, None) if d.count.is_some() => Err(ApiError::bad(format!(
                        "{}({}, ...) counts the elements of an array job, and job {} is not one",
                        d.count.map_or("", |c| c.word()),
                        d.job,
                        d.job
                    ))),
                    (Some(i), None) => Err(ApiError::bad(format!(
                        "the job depends on {}_{i}, but job {} is not an array job",
                        d.job, d.job
                    ))),
                    (Some(i), Some(t)) if !t.iter().any(|(index, _)| *index == i) => Err(
                        ApiError::bad(format!("array job {} has no task {i}", d.job)),
                    ),
                    (None, None) if d.kind == berth_core::job::DependencyKind::AfterCorr => {
                        Err(ApiError::bad(format!(
                            "aftercorr:{}: job {} is not an array job",
                            d.job, d.job
                        )))
                    }
                    // LSF's `42[*]` from an array: element for element, the same indices
                    // (a missing one would leave its term out of the job's condition).
                    (_, Some(t)) if d.each => {
                        let theirs: BTreeSet<u32> = t.iter().map(|(i, _)| *i).collect();
                        let indices = match task {
                            Some(index) => vec![index],
                            None => request.array.as_ref().map(|a| a.indices()).unwrap_or_default(),
                        };
                        match indices.into_iter().find(|i| !theirs.contains(i)) {
                            Some(i) => Err(ApiError::bad(format!(
                                "{}[*] pairs each element of this array with the element of array {} with its index, and array {} has no element {i}: give both arrays the same indices, as LSF requires",
                                d.job, d.job, d.job
                            ))),
                            None => Ok((*d, tasks)),
                        }
                    }
                    _ => Ok((*d, tasks)),
                }
            })
            .collect()
    }

    pub fn job(&self, id: u64) -> Result<Job, ApiError> {
        if let Some(j) = self.active.get(&id) {
            return Ok(j.clone());
        }
        let filter = JobFilter {
            ids: vec![id],
            ..Default::default()
        };
        let row = (self.query_rows(&filter)?.into_iter().next())
            .ok_or_else(|| ApiError::not_found(id))?;
        self.read_record(&row, &mut BTreeMap::new())
    }

    /// The job a stored record holds, with what an array's task shares with its array's
    /// first task filled in from that one's record (`job::Part`); `firsts` keeps the first
    /// tasks read, for the next records.
    fn read_record(
        &self,
        row: &berth_store::JobRow,
        firsts: &mut BTreeMap<u64, Job>,
    ) -> Result<Job, ApiError> {
        let mut job: Job = serde_json::from_slice(&row.doc).map_err(|e| {
            ApiError::internal(format!(
                "job {} in the state database is unreadable: {e}",
                row.id
            ))
        })?;
        if let Some(array) = job.parts_from() {
            let first = match firsts.entry(array) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(self.first_task(array)?),
            };
            job.share_with(first);
        }
        Ok(job)
    }

    /// The first task of array `array`, whose record keeps the script, environment and
    /// request of all of its tasks (`job::Part`).
    fn first_task(&self, array: u64) -> Result<Job, ApiError> {
        self.job(array).map_err(|e| {
            ApiError::internal(format!(
                "array job {array}'s first task, whose record keeps what its tasks share, cannot be read: {}",
                e.message
            ))
        })
    }

    /// What the API shows of `job`. A pending job that named no time limit shows the one it
    /// will start with, its partition's (DefaultTime, else MaxTime), as Slurm's squeue does.
    pub fn info(&self, job: &Job) -> JobInfo {
        let mut info = job.info();
        if let Some(lead) = self.lead_of(job) {
            info.priority = Some(lead.priority);
            info.priority_factors = Some(lead.factors);
            info.reason = Some(lead.reason.clone());
        }
        if job.state == State::Pending {
            info.dependency = self.unmet_dependencies(job);
        }
        if info.time_limit.is_none() && job.state == State::Pending {
            let part = self.settings.partition(&job.partition);
            info.time_limit = part.and_then(|p| p.time_limit_for(job.request.no_time_limit));
        }
        info
    }

    /// `GET /v1/jobs`: the unfinished jobs, in id order; `array`: only the tasks of that array
    /// (or that job, if it is none's). `collapse`: an array's pending tasks that wait alike
    /// are one entry, the first of them, whose `array_tasks` names them all (squeue's
    /// `42_[3-10]`, as Slurm keeps them until they start), instead of an entry each: a
    /// long array's listing is then a few entries, not one per task.
    pub fn queue(&self, array: Option<u64>, collapse: bool) -> Result<Vec<JobInfo>, ApiError> {
        let jobs: Box<dyn Iterator<Item = &Job>> = match array {
            None => Box::new(self.active.values()),
            Some(id) => match self.tasks_of(id)? {
                Some(len) => Box::new(self.active.tasks(id, len)),
                None => Box::new(self.active.get(&id).into_iter()),
            },
        };
        /// An entry for pending tasks of an array: where it is, its first task, the indices
        /// of the tasks it stands for.
        struct Collapsed<'a> {
            at: usize,
            first: &'a Job,
            indices: Vec<u32>,
        }
        let mut entries = Vec::new();
        let mut arrays: HashMap<u64, Vec<Collapsed>> = HashMap::new();
        for job in jobs {
            let task = job.array_job_id.zip(job.array_task_id);
            if let Some((array, index)) = task.filter(|_| collapse && job.state == State::Pending) {
                let collapsed = arrays.entry(array).or_default();
                match collapsed.iter_mut().find(|c| self.wait_alike(c.first, job)) {
                    Some(c) => {
                        c.indices.push(index);
                        continue;
                    }
                    None => collapsed.push(Collapsed {
                        at: entries.len(),
                        first: job,
                        indices: vec![index],
                    }),
                }
            }
            entries.push(self.info(job));
        }
        for c in arrays.into_values().flatten() {
            if c.indices.len() > 1 {
                entries[c.at].array_tasks = Some(berth_core::number_list(&c.indices));
            }
        }
        Ok(entries)
    }

    /// Whether two pending tasks of an array show alike in the queue: what they ask for,
    /// where, held or not, and why they wait.
    fn wait_alike(&self, a: &Job, b: &Job) -> bool {
        a.held == b.held
            && a.partition == b.partition
            && a.begin_time == b.begin_time
            && a.deadline == b.deadline
            && self.reason_of(a) == self.reason_of(b)
            && a.request == b.request
    }

    /// Why `job` waits (or how it failed), as shown: an array's task beyond the pass's
    /// window shows its array's lead's reason.
    fn reason_of<'a>(&'a self, job: &'a Job) -> Option<&'a str> {
        match self.lead_of(job) {
            Some(lead) => Some(&lead.reason),
            None => job.reason.as_deref(),
        }
    }

    pub fn history(&self, filter: &JobFilter) -> Result<Vec<JobInfo>, ApiError> {
        let rows = self.query_rows(filter)?;
        let mut firsts = BTreeMap::new();
        rows.iter()
            .map(|r| self.read_record(r, &mut firsts).map(|j| self.info(&j)))
            .collect()
    }

    /// Notified whenever a job leaves the unfinished ones (see [`watch`]).
    pub fn job_left(&self) -> Arc<Notify> {
        self.active.left()
    }

    /// Notified whenever an unfinished job starts, stops waiting or leaves (see [`watch`]).
    pub fn job_moved(&self) -> Arc<Notify> {
        self.active.moved()
    }

    /// The lowest id of an unfinished job among `ids`.
    pub fn first_unfinished(&self, ids: std::ops::RangeInclusive<u64>) -> Option<u64> {
        self.active.first_in(ids)
    }

    /// The lowest id of a job among `ids` that has not started yet (nor ended).
    pub fn first_pending(&self, ids: std::ops::RangeInclusive<u64>) -> Option<u64> {
        self.active.first_pending_in(ids)
    }

    /// How jobs `first..=last`, all ended, ended.
    pub fn ends(&self, first: u64, last: u64) -> Result<Vec<berth_api::JobEnd>, ApiError> {
        let filter = JobFilter {
            after_id: Some(first.saturating_sub(1)),
            limit: Some((last - first + 1) as usize),
            ..JobFilter::default()
        };
        // Only what a job's end is of its record (an array task's own: the part it shares
        // with its array's first task is not needed).
        #[derive(serde::Deserialize)]
        struct End {
            state: State,
            exit_code: Option<i32>,
            signal: Option<i32>,
            start_time: Option<u64>,
        }
        let rows = self.query_rows(&filter)?;
        rows.iter()
            .filter(|r| r.id <= last)
            .map(|r| {
                let end: End = serde_json::from_slice(&r.doc).map_err(|e| {
                    ApiError::internal(format!(
                        "job {} in the state database is unreadable: {e}",
                        r.id
                    ))
                })?;
                Ok(berth_api::JobEnd {
                    id: r.id,
                    state: end.state.name().to_string(),
                    exit_code: end.exit_code,
                    signal: end.signal,
                    never_ran: end.start_time.is_none(),
                })
            })
            .collect()
    }

    /// `berth cancel`: a pending job ends at once; a running one is signalled, and ends
    /// CANCELLED when its runner reports. Only the owner or root may cancel.
    pub fn cancel(
        &mut self,
        caller: Caller,
        id: u64,
        signal: Option<i32>,
        target: SignalTarget,
    ) -> Result<(), ApiError> {
        let links = self.links_of(id);
        let key = self.key.clone();
        let mut job = self.owned(caller, id, "cancel")?;
        match (job.state, signal) {
            // A signal is for processes, which a pending job has none of (SIGKILL ends it,
            // as Slurm's scancel has it).
            (State::Pending, Some(sig)) if sig != libc::SIGKILL => {
                return Err(ApiError::bad(format!(
                    "job {id} is pending: it has no processes to signal; cancel it without a signal"
                )));
            }
            (State::Pending, _) => {
                job.state = State::Cancelled;
                job.cancelled_by = Some(caller.uid);
                job.end_time = Some(now());
                job.held_time.stop(now());
                job.reason = None;
                drop(job);
                let job = self.active.remove(&id).expect("present");
                self.persist(&job)?;
                self.counters.ended(State::Cancelled);
                self.finished
                    .insert(id, (sched::JobState::Cancelled, now()));
                self.mail_end(&job);
            }
            (State::Running | State::Suspended, sig) => {
                // A SIGKILL for the job (not for its batch shell alone, or every process
                // at once) is its cancel, as scancel's (`scancel -s KILL` is scancel).
                let kill = sig == Some(libc::SIGKILL) && matches!(target, SignalTarget::Steps);
                match sig.filter(|_| !kill) {
                    None => {
                        job.cancel_requested = true;
                        job.cancelled_by = Some(caller.uid);
                        cancel_runner(&links, &mut job, "", &key);
                    }
                    Some(sig) => signal_job(&links, &mut job, sig, Some(target), &key),
                }
                let job = job.cloned();
                self.persist(&job)?;
            }
            _ => drop(job),
        }
        self.wake();
        Ok(())
    }

    /// `berth cancel JOB.STEP` (`scancel JOB.STEP`): ends one running step of a running job,
    /// its tasks on every node, through the agent that runs it (its client's node's); the
    /// job goes on, and the step is recorded CANCELLED.
    pub fn cancel_step(
        &mut self,
        caller: Caller,
        id: u64,
        step: u32,
        signal: Option<i32>,
    ) -> Result<(), ApiError> {
        // (Its client's node: one of the job's, or the one it was asked from outside.)
        let node = self
            .active
            .get(&id)
            .and_then(|j| j.steps.get(step as usize));
        let link = node
            .and_then(|s| self.nodes.get(&s.node))
            .map(|n| n.link.clone());
        let key = self.key.clone();
        let mut job = self.owned(caller, id, "cancel")?;
        let Some(s) = job.steps.get_mut(step as usize) else {
            return Err(ApiError {
                status: 404,
                message: format!("job {id} has no step {step}: its steps are in `berth show {id}`"),
            });
        };
        if s.end_time.is_some() {
            return Err(ApiError::bad(format!("step {id}.{step} has ended")));
        }
        let Some(link) = link else {
            return Err(ApiError::bad(format!(
                "step {id}.{step}: its node {:?} is not known here: cancel the job instead",
                s.node
            )));
        };
        // (0: the end, SIGTERM first.)
        let sent = signal.unwrap_or(0);
        match link {
            Link::Local(_) if !berth_agent::step::server::signal_step(id, step, sent) => {
                return Err(ApiError::bad(format!(
                    "step {id}.{step} is not running (it is ending)"
                )))
            }
            Link::Local(_) => {}
            // (The step's end comes back as its agent reports it.)
            Link::Remote(url) => {
                let request = berth_agent::daemon::StepCancel {
                    job: id,
                    step,
                    signal,
                };
                let what = format!("signal step {id}.{step}");
                post_unawaited(url, "/v1/agent/steps/cancel", key, request, what);
            }
        }
        if signal.is_some() {
            return Ok(());
        }
        s.cancelled = true;
        let job = job.cloned();
        self.persist(&job)
    }

    /// `berth cancel ARRAY` (`scancel ARRAY`): [`Controller::cancel`] for each of the array's
    /// unfinished tasks, written in one transaction.
    pub fn cancel_array(
        &mut self,
        caller: Caller,
        array: u64,
        signal: Option<i32>,
        target: SignalTarget,
    ) -> Result<(), ApiError> {
        let mut tasks = self.array_tasks(caller, array, "cancel")?;
        // A signal goes to the tasks that have processes.
        if signal.is_some_and(|s| s != libc::SIGKILL) {
            tasks.retain(|id| {
                self.active
                    .get(id)
                    .is_some_and(|j| j.state != State::Pending)
            });
        }
        self.each_in_one_write(tasks, |c, id| c.cancel(caller, id, signal, target))
    }

    /// `berth hold|release ARRAY`: each of its pending tasks not held (held), in one store
    /// transaction; refused whole where they are another user's.
    pub fn hold_array(
        &mut self,
        caller: Caller,
        array: u64,
        held: bool,
        which: Holds,
    ) -> Result<(), ApiError> {
        let verb = if held { "hold" } else { "release" };
        let tasks = self.array_tasks_for(caller, array, verb)?;
        self.each_in_one_write(tasks, |c, id| c.hold(caller, id, held, which))
    }

    /// `berth requeue ARRAY`: each of its running or suspended tasks, in one store
    /// transaction (the pending ones are queued already).
    pub fn requeue_array(
        &mut self,
        caller: Caller,
        array: u64,
        hold: bool,
    ) -> Result<(), ApiError> {
        let tasks = self.array_tasks_for(caller, array, "requeue")?;
        // (An array whose tasks all wait is refused as a job that waits is.)
        let ended = self
            .array_ids(array)?
            .iter()
            .any(|id| !self.active.contains_key(id));
        if tasks.is_empty() && !ended {
            return Err(ApiError::bad(format!("job {array} is already pending")));
        }
        self.each_in_one_write(tasks, |c, id| c.requeue(caller, id, hold))
    }

    /// The ids of array job `array`'s tasks that `verb` on the whole array acts on: a hold
    /// the pending ones not held, a release the held ones, a suspend the running ones, a
    /// resume the suspended ones, a requeue both (none is no error: there is nothing to
    /// do). Refused as [`Controller::array_tasks`] refuses.
    pub fn array_tasks_for(
        &mut self,
        caller: Caller,
        array: u64,
        verb: &str,
    ) -> Result<Vec<u64>, ApiError> {
        let acts_on: fn(&Job) -> bool = match verb {
            "hold" => |j| j.state == State::Pending && !j.held,
            "release" => |j| j.state == State::Pending && j.held,
            "suspend" => |j| j.state == State::Running,
            "resume" => |j| j.state == State::Suspended,
            "requeue" => |j| matches!(j.state, State::Running | State::Suspended),
            _ => return Err(ApiError::internal(format!("no array verb {verb}"))),
        };
        let tasks = self.array_tasks(caller, array, verb)?;
        Ok(tasks
            .into_iter()
            .filter(|id| self.active.get(id).is_some_and(acts_on))
            .collect())
    }

    /// The ids of all of array job `array`'s tasks, ended or not (they follow its own).
    pub fn array_ids(&self, array: u64) -> Result<Vec<u64>, ApiError> {
        Ok((array..array + self.array_len(array)? as u64).collect())
    }

    /// How many tasks array job `array` has; refused where it is no array job.
    fn array_len(&self, array: u64) -> Result<usize, ApiError> {
        self.tasks_of(array)?
            .ok_or_else(|| ApiError::bad(format!("job {array} is not an array job")))
    }

    /// How many tasks job `id` has if it is an array job (its first task's id), `None` if
    /// it is another job; an error if there is no such job.
    fn tasks_of(&self, id: u64) -> Result<Option<usize>, ApiError> {
        let job = self.job(id)?;
        let spec = job.request.array.as_ref();
        Ok(spec
            .filter(|_| job.array_job_id == Some(id))
            .map(|a| a.len()))
    }

    /// The ids of array job `array`'s unfinished tasks, for `verb` on the whole array:
    /// refused where `array` is no array job or has none left, and where its tasks are
    /// another user's (one user's all: refused for one, refused for all, before any is
    /// touched).
    fn array_tasks(
        &mut self,
        caller: Caller,
        array: u64,
        verb: &str,
    ) -> Result<Vec<u64>, ApiError> {
        let len = self.array_len(array)?;
        let tasks: Vec<u64> = self.active.tasks(array, len).map(|j| j.id).collect();
        let Some(&first) = tasks.first() else {
            return Err(ApiError::bad(format!(
                "array job {array} has no pending or running task to {verb}"
            )));
        };
        self.owned(caller, first, verb)?;
        Ok(tasks)
    }

    /// `act` on each of `ids`, their changes written in one store transaction; one refused
    /// leaves the others done (as Slurm acts on an array's tasks each), the refusals said
    /// together, with the first one's status.
    fn each_in_one_write(
        &mut self,
        ids: Vec<u64>,
        act: impl Fn(&mut Self, u64) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let mut refused: Vec<ApiError> = Vec::new();
        self.in_one_write(|c| {
            for id in ids {
                if let Err(e) = act(c, id) {
                    refused.push(e);
                }
            }
        });
        let Some(first) = refused.first() else {
            return Ok(());
        };
        let said: Vec<&str> = refused.iter().map(|e| e.message.as_str()).collect();
        Err(ApiError {
            status: first.status,
            message: said.join("; "),
        })
    }

    /// `berth update`: new values for a pending job, or for each pending task of an array
    /// job named by its id, as `berth submit` flags, checked as a submission is (the
    /// partition and its limits, the nodes, the dependencies); a running job's time limit.
    /// Returns how many jobs changed.
    pub fn update(
        &mut self,
        caller: Caller,
        id: u64,
        args: &[String],
        syntax: berth_api::OptionSyntax,
        throttle: Option<u32>,
    ) -> Result<u64, ApiError> {
        let o = parse_args_as(family_of(syntax), args).map_err(|e| ApiError::bad(e.to_string()))?;
        let running = self
            .active
            .get(&id)
            .is_some_and(|j| matches!(j.state, State::Running | State::Suspended));
        let pending_tasks = self
            .active
            .values()
            .any(|j| j.array_job_id == Some(id) && j.state == State::Pending);
        if running && !pending_tasks {
            if throttle.is_some() {
                return Err(ApiError::bad(format!(
                    "job {id} has no pending tasks: an array's throttle holds its tasks yet to start"
                )));
            }
            return self.update_running(caller, id, o);
        }
        // What may change; the rest is the job's shape, fixed at submission.
        let rest = JobOptions {
            time_limit: None,
            partition: None,
            name: None,
            nice: None,
            begin: None,
            dependencies: None,
            kill_on_invalid_dep: None,
            account: None,
            comment: None,
            constraint: None,
            nodelist: None,
            exclude: None,
            candidates: None,
            preferred: None,
            requeue: None,
            licenses: None,
            ignored: Vec::new(),
            // Its shape and files (JobRequest::reshape).
            ntasks: None,
            ntasks_per_node: None,
            cpus_per_task: None,
            nodes: None,
            memory: None,
            gpus: None,
            min_cpus: None,
            omp_threads: None,
            overcommit: None,
            exclusive: None,
            chunks: None,
            place: None,
            output: None,
            error: None,
            join: None,
            input: None,
            open_mode: None,
            error_open_mode: None,
            mail: None,
            mail_to: None,
            shell: None,
            ..o.clone()
        };
        if rest != JobOptions::default() || (o == JobOptions::default() && throttle.is_none()) {
            return Err(ApiError::bad(
                "berth update changes a pending job's --time, --partition, --job-name, --nice, --begin, --dependency, --account, --comment, --constraint, --nodelist, --exclude, --requeue, --licenses and bsub's -m, its size (--ntasks, --nodes, --ntasks-per-node, --cpus-per-task, --mem, --gpus, --mincpus, --exclusive, -O), its files (--output, --error, --input, --open-mode, PBS's -j), its mail (--mail-type, --mail-user) and PBS's -S, and an array's throttle (ArrayTaskThrottle); for anything else (its image, binds, environment, array), cancel it and submit again",
            ));
        }
        let tasks: Vec<u64> = self
            .active
            .values()
            .filter(|j| j.array_job_id == Some(id) && j.state == State::Pending)
            .map(|j| j.id)
            .collect();
        let ids = if tasks.is_empty() { vec![id] } else { tasks };
        let cluster = self.cluster();
        let mut updated: Vec<Job> = Vec::with_capacity(ids.len());
        // The last request changed, and what it became.
        let mut changed: Option<(job::Part<JobRequest>, job::Part<JobRequest>)> = None;
        for id in ids {
            let job = self.owned(caller, id, "update")?.clone();
            if job.state != State::Pending {
                return Err(ApiError::bad(format!(
                    "job {id} is {}: berth update changes pending jobs, and a running job's time limit",
                    job.state.name()
                )));
            }
            let mut job = job;
            let o = o.clone();
            // Changed on a copy: a task whose request stays as it was keeps sharing its
            // array's; tasks whose shared one changes alike share the changed one.
            let mut r = JobRequest::clone(&job.request);
            r.reshape(&o)
                .map_err(|e| ApiError::bad(format!("job {id}: {e}")))?;
            // Only what was given changes (a nice root gave stays, whoever updates).
            if let Some(nice) = o.nice {
                refuse_negative_nice(&caller, nice)?;
                r.nice = nice;
            }
            if let Some(limit) = o.time_limit {
                // (LSF and PBS let a user raise a pending job's: bmod -W, qalter -l.)
                if syntax == berth_api::OptionSyntax::Berth {
                    only_root_raises(caller, id, job.time_limit(), limit)?;
                }
                r.ask_time_limit(o.time_limit);
            }
            r.name = o.name.unwrap_or(std::mem::take(&mut r.name));
            r.account = o.account.or(r.account.take());
            r.comment = o.comment.or(r.comment.take());
            if let Some(licenses) = o.licenses {
                r.licenses = licenses;
            }
            r.constraint = o.constraint.unwrap_or(std::mem::take(&mut r.constraint));
            r.nodelist = o.nodelist.unwrap_or(std::mem::take(&mut r.nodelist));
            r.exclude = o.exclude.unwrap_or(std::mem::take(&mut r.exclude));
            r.candidates = o.candidates.unwrap_or(std::mem::take(&mut r.candidates));
            r.preferred = o.preferred.unwrap_or(std::mem::take(&mut r.preferred));
            r.requeue = o.requeue.or(r.requeue);
            if let Some(n) = throttle {
                let Some(array) = r.array.as_mut() else {
                    return Err(ApiError::bad(format!(
                        "job {id} is not an array's task: it has no throttle (ArrayTaskThrottle)"
                    )));
                };
                array.max_running = (n > 0).then_some(n);
            }
            r.check_nodelist()
                .map_err(|e| ApiError::bad(format!("job {id}: {e}")))?;
            if let Some(p) = o.partition {
                cluster
                    .partition(&p)
                    .ok_or_else(|| ApiError::bad(format!("unknown partition '{p}'")))?;
                // Its rules, as at a submission there (with the jobs this update moved
                // there before it).
                if job.partition != p {
                    let moved = updated.iter().filter(|j| j.partition == p).count();
                    let image = job.image.as_deref();
                    self.partition_rules(&job.user, &p, image, 1 + moved, &r)?;
                }
                r.partition = Some(p.clone());
                job.partition = p;
            } else if r.total_cpus() != job.request.total_cpus() {
                // Its partition's limits on its new size.
                self.partition_rules(&job.user, &job.partition, None, 0, &r)?;
            }
            if let Some(b) = o.begin {
                let now = now();
                job.begin_time = Some(b.resolve_in(now, utc_offset));
            }
            // (bsub's -w keeps a job whose dependency can never be met, as LSF does.)
            if let Some(kill) = o.kill_on_invalid_dep {
                r.keep_invalid_dep = !kill;
            }
            if let Some(mut deps) = o.dependencies {
                self.resolve_named(&mut deps, &job.user)?;
                r.dependencies = deps;
                let targets = self.dependency_targets(&r, job.array_task_id)?;
                job.depends_on = targets
                    .iter()
                    .flat_map(|(d, tasks)| depends_on(d, tasks.as_deref(), job.array_task_id))
                    .collect();
                if let Some(through) = self.circle(id, &job.depends_on) {
                    let how = match through == id {
                        true => "on itself".to_string(),
                        false => format!("on job {through}, which waits for it"),
                    };
                    return Err(ApiError::bad(format!(
                        "job {id} would depend {how}: it could never start (Slurm's 'Job dependency problem'); name other jobs"
                    )));
                }
            }
            self.placeable(&cluster, &job.partition, &r)?;
            if r != *job.request {
                let request = match &changed {
                    Some((from, to)) if from.same(&job.request) => to.clone(),
                    _ => {
                        let to = job::Part::new(r);
                        changed = Some((job.request.clone(), to.clone()));
                        to
                    }
                };
                job.set_request(request);
                job.cpus = job.request.total_cpus();
                // Its files' names as they now are (%x of a new name too).
                let first_node = self.nodes.keys().next().cloned().unwrap_or_default();
                (job.stdout, job.stderr) = outputs(&job, &first_node);
            }
            updated.push(job);
        }
        let rows: Vec<_> = updated.iter().map(Job::row).collect();
        self.store.put_jobs(&rows).map_err(ApiError::internal)?;
        let count = updated.len() as u64;
        for job in updated {
            self.active.insert(job.id, job);
        }
        self.wake();
        Ok(count)
    }

    /// A running (or suspended) job's new time limit, from its start, on each of its nodes at
    /// once. Its owner may lower it; only root may raise it or remove it (`UNLIMITED`: the
    /// job then runs until it ends, planned as one without a limit), as in Slurm.
    fn update_running(&mut self, caller: Caller, id: u64, o: JobOptions) -> Result<u64, ApiError> {
        let rest = JobOptions {
            time_limit: None,
            comment: None,
            ignored: Vec::new(),
            ..o.clone()
        };
        let job = self.owned(caller, id, "update")?.clone();
        if rest != JobOptions::default() || (o.time_limit.is_none() && o.comment.is_none()) {
            return Err(ApiError::bad(format!(
                "job {id} is {}: only its time limit (--time) and comment (--comment) can change while it runs",
                job.state.name()
            )));
        }
        if let Some(limit) = o.time_limit {
            only_root_raises(caller, id, job.time_limit(), limit)?;
            let seconds = match limit == berth_core::job::UNLIMITED_TIME {
                true => berth_agent::runner::NO_LIMIT,
                false => limit,
            };
            set_limit(
                &self.links_of(id),
                &job,
                seconds,
                self.settings.kill_wait,
                &self.key,
            )?;
        }
        let mut job = self.active.get_mut(&id).expect("owned above");
        if let Some(limit) = o.time_limit {
            job.request_mut().ask_time_limit(Some(limit));
            job.default_limit = None;
        }
        if o.comment.is_some() {
            job.request_mut().comment = o.comment;
        }
        let job = job.cloned();
        self.persist(&job)?;
        Ok(1)
    }

    /// The job `id`, if `caller` may act on it (its owner or root).
    fn owned(
        &mut self,
        caller: Caller,
        id: u64,
        verb: &str,
    ) -> Result<active::JobMut<'_>, ApiError> {
        if !self.active.contains_key(&id) {
            // Ended (a 400), or never was (a 404: the id is wrong).
            self.job(id)?;
            return Err(ApiError::bad(format!("job {id} is not pending or running")));
        }
        let job = self.active.get_mut(&id).expect("just looked up");
        if caller.uid != 0 && caller.uid != job.uid {
            return Err(ApiError::forbidden(format!(
                "job {id} belongs to {}: only its owner or root may {verb} it",
                job.user
            )));
        }
        Ok(job)
    }

    /// `berth hold` / `release`: a held job stays pending until released. A job has two
    /// holds, given and lifted apart (PBS's `u` and `o`): its owner's (JobHeldUser), which
    /// they give and lift, and an administrator's (JobHeldAdmin), root's alone. Those asked
    /// (`which`, which the API lets root alone name an administrator's in), else the
    /// caller's: a user's hold is the owner's; root's is an administrator's in place of
    /// the owner's (as Slurm's one hold), and root's release lifts both.
    pub fn hold(
        &mut self,
        caller: Caller,
        id: u64,
        held: bool,
        which: Holds,
    ) -> Result<(), ApiError> {
        let mut job = self.owned(caller, id, if held { "hold" } else { "release" })?;
        if job.state != State::Pending {
            return Err(ApiError::bad(format!(
                "job {} is {}: only pending jobs can be held or released",
                job.shown_id(),
                job.state.name()
            )));
        }
        let (owner, admin) = job.holds();
        // (A user's release of a job that has only root's hold: refused, as Slurm's.)
        if !held && admin && !owner && caller.uid != 0 {
            return Err(ApiError::forbidden(format!(
                "job {} was held by root (JobHeldAdmin): only root may release it",
                job.shown_id()
            )));
        }
        let (owner, admin) = match (held, which.owner, which.admin, caller.uid == 0) {
            // Root's own hold: an administrator's, in place of the owner's (Slurm's one
            // hold); root's release lifts both.
            (true, false, false, true) => (false, true),
            (false, false, false, true) => (false, false),
            // A user's own: their hold, under any of root's.
            (_, false, false, false) => (held, admin),
            (_, asked_owner, asked_admin, _) => (
                if asked_owner { held } else { owner },
                if asked_admin { held } else { admin },
            ),
        };
        let held = owner || admin;
        if held && !job.held {
            job.held_time.start(now());
            // A held job's priority is 0, as Slurm's (made anew at the pass after its
            // release), and it has no expected start.
            (job.priority, job.priority_factors) = (Some(0.0), None);
            (job.expected_start, job.planned_nodes) = (None, Vec::new());
        }
        if !held && job.held {
            job.held_time.stop(now());
        }
        job.set_holds(owner, admin);
        let job = job.cloned();
        self.persist(&job)?;
        self.wake();
        Ok(())
    }

    /// Whether running job `id` is still starting on one of its nodes (its runner's pid
    /// is on its way): what acts on its runners waits for it.
    pub fn starting(&self, id: u64) -> bool {
        self.active.get(&id).is_some_and(|j| {
            j.state == State::Running && j.shares.iter().any(|s| s.runner.is_none())
        })
    }

    /// `berth suspend` / `resume`, first half: checks that the caller may and that the job is
    /// running (suspended), and returns what to freeze (thaw) on which nodes. The calls to
    /// the agents are made without the controller's lock ([`Freeze::apply`]); then
    /// [`Controller::end_freeze`] records the new state. One suspend or resume of a job at
    /// a time.
    pub fn begin_freeze(
        &mut self,
        caller: Caller,
        id: u64,
        suspend: bool,
    ) -> Result<Freeze, ApiError> {
        let links = self.links_of(id);
        let key = self.key.clone();
        let job = self.owned(caller, id, if suspend { "suspend" } else { "resume" })?;
        let from = if suspend {
            State::Running
        } else {
            State::Suspended
        };
        if job.state != from {
            return Err(ApiError::bad(format!(
                "job {id} is {}: only {} jobs can be {}",
                job.state.name(),
                from.name().to_lowercase(),
                Freeze::done(suspend)
            )));
        }
        if !suspend && job.admin_suspend && caller.uid != 0 {
            return Err(ApiError::forbidden(format!(
                "job {id} was suspended by root: only root may resume it"
            )));
        }
        let job = job.cloned();
        if !self.freezing.insert(id) {
            return Err(ApiError::bad(format!(
                "job {id} is being suspended or resumed already: try again in a moment"
            )));
        }
        Ok(Freeze {
            links,
            job,
            suspend,
            by_root: caller.uid == 0,
            key,
        })
    }

    /// `berth suspend` / `resume`, second half: the job's new state, if every node froze
    /// (thawed) it and it has not ended meanwhile. A job may end as soon as it is thawed
    /// (what was left of its work was done but for the thaw): its resume took effect all the
    /// same, and its end is what is recorded.
    pub fn end_freeze(
        &mut self,
        freeze: &Freeze,
        done: Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let id = freeze.job.id;
        self.freezing.remove(&id);
        done?;
        let Some(mut job) = self
            .active
            .get_mut(&id)
            .filter(|j| j.state == freeze.job.state)
        else {
            if freeze.suspend {
                return Err(ApiError::bad(format!(
                    "job {id} ended while it was being suspended"
                )));
            }
            return Ok(());
        };
        job.admin_suspend = freeze.suspend && freeze.by_root;
        job.state = if freeze.suspend {
            job.suspended.start(now());
            State::Suspended
        } else {
            job.suspended.stop(now());
            State::Running
        };
        let job = job.cloned();
        self.persist(&job)
    }

    /// `berth requeue`: a running job is stopped and queued again under the same id (its
    /// runner is signalled; the rest happens when it ends); a finished one is queued again.
    /// `hold`: held once queued again (scontrol requeuehold), root's hold an
    /// administrator's.
    pub fn requeue(&mut self, caller: Caller, id: u64, hold: bool) -> Result<(), ApiError> {
        let held = hold.then_some(caller.uid == 0);
        if !self.active.contains_key(&id) {
            let mut job = self.job(id)?;
            if caller.uid != 0 && caller.uid != job.uid {
                return Err(ApiError::forbidden(format!(
                    "job {id} belongs to {}: only its owner or root may requeue it",
                    job.user
                )));
            }
            no_requeue(&job)?;
            // Back among the user's jobs in its partition: its rules hold, as a submission's.
            let (user, partition, image) = (&job.user, &job.partition, job.image.as_deref());
            self.partition_rules(user, partition, image, 1, &job.request)?;
            job.requeue_held = held;
            job.restart();
            self.persist(&job)?;
            self.finished.remove(&id);
            self.active.insert(id, job);
            self.wake();
            return Ok(());
        }
        let links = self.links_of(id);
        let key = self.key.clone();
        let mut job = self.owned(caller, id, "requeue")?;
        if job.state == State::Pending {
            return Err(ApiError::bad(format!(
                "job {} is already pending",
                job.shown_id()
            )));
        }
        no_requeue(&job)?;
        job.requeue_requested = true;
        job.requeue_held = held;
        cancel_runner(&links, &mut job, " DUE TO JOB REQUEUE", &key);
        let job = job.cloned();
        self.persist(&job)
    }

    /// `berth nodes`.
    pub fn nodes(&self) -> Vec<berth_api::NodeInfo> {
        let cluster = self.cluster();
        cluster
            .nodes
            .iter()
            .map(|n| {
                let entry = self.nodes.get(&n.name);
                let why = entry.and_then(|e| e.down.as_ref().or(e.drain.as_ref()));
                let machine = entry.map(|e| e.res.machine.clone()).unwrap_or_default();
                // This controller's own node is its own machine, seen now.
                let (health, heard) = match entry {
                    Some(
                        e @ NodeEntry {
                            link: Link::Remote(_),
                            ..
                        },
                    ) => (e.health, Some(e.last_seen.elapsed().as_secs())),
                    Some(_) => (berth_agent::node::Health::sample(), None),
                    None => (None, None),
                };
                berth_api::NodeInfo {
                    name: n.name.clone(),
                    state: format!("{:?}", sched::node_state(n)).to_lowercase(),
                    partitions: cluster
                        .partitions
                        .iter()
                        .filter(|p| p.nodes.contains(&n.name))
                        .map(|p| p.name.clone())
                        .collect(),
                    cpus: n.cpus,
                    cpus_allocated: n.allocations.iter().map(|a| a.cpus).sum(),
                    memory: n.memory,
                    memory_allocated: n.allocations.iter().map(|a| a.memory).sum(),
                    gpus: n.gpus,
                    features: n.features.clone(),
                    reason: why.map(|r| r.reason.clone()),
                    reason_user: why.map(|r| r.user.clone()),
                    reason_time: why.map(|r| r.time),
                    arch: machine.arch,
                    cpu_model: machine.model,
                    swap: machine.swap,
                    sockets: machine.topology.sockets,
                    cores_per_socket: machine.topology.cores_per_socket,
                    threads_per_core: machine.topology.threads_per_core,
                    load: health.map(|h| h.load.to_vec()),
                    memory_available: health.map(|h| h.memory_available),
                    heard,
                    images: self
                        .nodes
                        .get(&n.name)
                        .map(|e| e.images.iter().cloned().collect())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The cluster's licenses, and how many running jobs hold (scontrol show licenses).
    pub fn licenses(&self) -> Vec<berth_api::LicenseInfo> {
        let mut used: BTreeMap<&str, u32> = BTreeMap::new();
        for j in self.active.running() {
            for (name, n) in &j.request.licenses {
                *used.entry(name.as_str()).or_default() += n;
            }
        }
        self.settings
            .licenses
            .iter()
            .map(|(name, &total)| {
                let used = used.get(name.as_str()).copied().unwrap_or(0);
                berth_api::LicenseInfo {
                    name: name.clone(),
                    total,
                    used,
                    free: total.saturating_sub(used),
                }
            })
            .collect()
    }

    /// `berth partitions`.
    pub fn partitions(&self) -> Vec<berth_api::PartitionInfo> {
        self.partition_views()
            .into_iter()
            .map(|p| {
                let rules = (self.settings.partitions.iter()).find(|rules| rules.name == p.name);
                (p, rules)
            })
            .map(|(p, rules)| berth_api::PartitionInfo {
                max_jobs_per_user: rules.and_then(|r| r.max_jobs_per_user),
                max_cpus_per_user: rules.and_then(|r| r.max_cpus_per_user),
                name: p.name,
                default: p.default,
                nodes: p.nodes,
                max_time: p.max_time,
                default_time: p.default_time,
                state: if p.down { "down".into() } else { "up".into() },
                priority: p.priority_factor,
            })
            .collect()
    }

    /// One scheduling pass: start what can start, record why the rest waits (in one write:
    /// the waiting reasons of an array's whole queue may change at once).
    pub fn schedule(&mut self, shared: &Shared) {
        self.in_one_write(|c| c.pass(shared));
    }

    /// [`Controller::schedule`] without the write of what it changes.
    fn pass(&mut self, shared: &Shared) {
        let began = std::time::Instant::now();
        self.passing(shared);
        self.counters.pass(began.elapsed());
    }

    /// The pass itself ([`Controller::pass`] times it for the metrics).
    fn passing(&mut self, shared: &Shared) {
        self.due = false;
        self.check_nodes();
        self.refresh_history();
        self.mail_time_limits();
        self.expire_reservations();
        let cluster = self.scheduling_view();
        let (views, last) = self.views(&cluster);
        let plan = sched::schedule(&cluster, &views, now(), &self.sched_config());
        self.follow(&plan, &last);
        // Started jobs that asked for mail at their start.
        let mut began = Vec::new();
        for decision in &plan.decisions {
            let Some(mut job) = self.active.get_mut(&decision.job) else {
                continue;
            };
            job.priority = Some(decision.priority.total as f64);
            job.priority_factors = Some(factors(&decision.priority));
            (job.expected_start, job.planned_nodes) = match &decision.outcome {
                sched::Outcome::Wait {
                    expected_start,
                    planned_nodes,
                    ..
                } => (told_start(*expected_start), planned_nodes.clone()),
                sched::Outcome::Start(_) => (None, Vec::new()),
            };
            match &decision.outcome {
                sched::Outcome::Start(start) => {
                    // Its image is not in this controller's store (a standby that took over
                    // before it had copied it): held, not failed, until it is there again.
                    let missing = job
                        .image_squashfs
                        .as_deref()
                        .and_then(|sqfs| image_id(Path::new(sqfs)))
                        .filter(|id| !self.settings.local_node && !self.images.has(id));
                    if let Some(id) = missing {
                        job.held = true;
                        job.held_time.start(now());
                        job.reason = Some(format!(
                            "launch_failed_requeued_held: its image ({}) is not in this controller's store: pull or import it again (berth image pull|import --cluster), then release the job",
                            id.get(..12).unwrap_or_default()
                        ));
                        let job = job.cloned();
                        let _ = self.persist(&job);
                        continue;
                    }
                    let cpus: u64 = start.nodes.iter().map(|a| u64::from(a.cpus)).sum();
                    // Its nodes in Slurm's order: the first (the batch host) and the job's
                    // node list as Slurm's would be.
                    let mut nodes = start.nodes.clone();
                    nodes.sort_by(|a, b| berth_core::job::node_order(&a.node, &b.node));
                    let Some(shares) = take_shares(&mut self.nodes, &nodes) else {
                        continue;
                    };
                    let first = &nodes[0];
                    job.shares = shares;
                    job.cpus = cpus;
                    job.memory = (first.memory > 0).then_some(first.memory);
                    job.gpus = first.gpus;
                    job.state = State::Running;
                    job.reason = None;
                    job.start_time = Some(now());
                    // A job that named no time limit runs under its partition's (DefaultTime,
                    // else MaxTime), as in Slurm: enforced like its own, and shown.
                    if job.request.time_limit.is_none() {
                        job.default_limit = (self.settings.partition(&job.partition))
                            .and_then(|p| p.time_limit_for(job.request.no_time_limit));
                    }
                    let id = job.id;
                    if job.request.mail.begin {
                        began.push(id);
                    }
                    drop(job);
                    if let Err(e) = self.launch(id, shared) {
                        self.finish(
                            id,
                            State::Failed,
                            Some(format!("cannot start the job: {e}")),
                            None,
                        );
                    }
                }
                sched::Outcome::Wait { reason, .. } => {
                    let mut reason = reason.to_string();
                    // A node it must have (-w) out of service: Slurm's reason names it.
                    if matches!(
                        reason.as_str(),
                        "Resources" | "Priority" | "ReqNodeNotAvail"
                    ) {
                        let out: Vec<&str> = (job.request.nodelist.iter())
                            .filter(|n| {
                                let node = self.nodes.get(*n);
                                node.is_none_or(|e| e.down.is_some() || e.drain.is_some())
                            })
                            .map(String::as_str)
                            .collect();
                        if !out.is_empty() {
                            let out = berth_core::job::hostlist(&out);
                            reason = format!("ReqNodeNotAvail, UnavailableNodes:{out}");
                        }
                    }
                    // (A held job keeps the reason its hold gave: whose hold it is.)
                    if !job.held && job.reason.as_deref() != Some(&reason) {
                        job.reason = Some(reason);
                        let job = job.cloned();
                        let _ = self.persist(&job);
                    }
                }
            }
        }
        for id in began {
            // (One whose start the store refused waits again.)
            if let Some(job) = self.active.get(&id).filter(|j| j.state == State::Running) {
                self.mail(job, mail::Event::Began);
            }
        }
        // (One that asked to stay, --kill-on-invalid-dep=no, waits with the reason.)
        let keeps =
            |c: &Self, id: &u64| c.active.get(id).is_some_and(|j| j.request.keep_invalid_dep);
        let never: Vec<u64> = plan
            .never_satisfied()
            .filter(|id| !keeps(self, id))
            .collect();
        for id in never {
            self.finish(
                id,
                State::Cancelled,
                Some("DependencyNeverSatisfied".into()),
                None,
            );
        }
        for id in plan.past_deadline() {
            self.finish(id, State::Deadline, Some("DeadLine".into()), None);
        }
    }

    /// What a scheduling pass looks at: the running jobs, the waiting ones, the held ones
    /// that others depend on, and of each array's waiting tasks no more than it could
    /// start; with the last task looked at of each such array, which the others follow.
    fn views(&self, cluster: &sched::ClusterView) -> (Vec<sched::JobView>, BTreeMap<u64, u64>) {
        // An array's pending tasks wait in index order, all alike (one request, one priority
        // but for the index, one set of dependencies): a pass need look at no more of them
        // than it could start, one per idle CPU (at least one); the others follow the last
        // one looked at (see `Lead`). So a pass costs what it looks at, however long the
        // array.
        let window = cluster
            .nodes
            .iter()
            .map(|n| {
                let held: u64 = n.allocations.iter().map(|a| u64::from(a.cpus)).sum();
                u64::from(n.cpus).saturating_sub(held)
            })
            .sum::<u64>()
            .max(1);
        let window = usize::try_from(window).unwrap_or(usize::MAX);
        let mut views: Vec<sched::JobView> = self
            .active
            .running()
            .chain(self.active.queued())
            .map(|j| self.view(j))
            .collect();
        // A held job cannot start, and waits as JobHeld (set when it was held): a pass looks
        // at it only if another job depends on it (whose dependency reads its state).
        let mut depended = BTreeSet::new();
        for (first, last) in self.active.depended() {
            for j in self.active.held_in(first, last) {
                if depended.insert(j.id) {
                    views.push(self.view(j));
                }
            }
        }
        let mut last = BTreeMap::new();
        for (array, tasks) in self.active.arrays() {
            for j in tasks.take(window) {
                views.push(self.view(j));
                last.insert(array, j.id);
            }
        }
        (views, last)
    }

    /// Keeps what each array's tasks that the pass did not look at wait for: the values of
    /// the last one it looked at (`last`, from [`Controller::views`]), where that one waits;
    /// where it started, its followers wait as they did.
    fn follow(&mut self, plan: &sched::Plan, last: &BTreeMap<u64, u64>) {
        let lasts: BTreeMap<u64, u64> = last.iter().map(|(&array, &id)| (id, array)).collect();
        self.leads.retain(|array, _| last.contains_key(array));
        for d in &plan.decisions {
            let Some(&array) = lasts.get(&d.job) else {
                continue;
            };
            match (d.reason(), self.leads.get_mut(&array)) {
                (Some(reason), _) => {
                    let lead = Lead {
                        after: d.job,
                        priority: d.priority.total as f64,
                        factors: factors(&d.priority),
                        reason: reason.to_string(),
                    };
                    self.leads.insert(array, lead);
                }
                (None, Some(lead)) => lead.after = d.job,
                (None, None) => {}
            }
        }
    }

    /// What `job` waits for, if it is an array's task that the last pass did not look at.
    fn lead_of(&self, job: &Job) -> Option<&Lead> {
        let array = job
            .array_job_id
            .filter(|_| job.state == State::Pending && !job.held)?;
        self.leads.get(&array).filter(|lead| job.id > lead.after)
    }

    /// sbatch `--test-only`: when and where `job` would start if it were queued now, by a
    /// scheduling pass over the queue with it added (nothing of it is kept).
    fn estimate(&self, job: &Job) -> berth_api::StartEstimate {
        let cluster = self.scheduling_view();
        let (mut views, _) = self.views(&cluster);
        views.push(self.view(job));
        let plan = sched::schedule(&cluster, &views, now(), &self.sched_config());
        let outcome = plan
            .decisions
            .into_iter()
            .find(|d| d.job == job.id)
            .map(|d| d.outcome);
        match outcome {
            Some(sched::Outcome::Start(start)) => berth_api::StartEstimate {
                start: Some(now()),
                cpus: start.nodes.iter().map(|a| u64::from(a.cpus)).sum(),
                nodes: start.nodes.into_iter().map(|a| a.node).collect(),
                reason: None,
            },
            Some(sched::Outcome::Wait {
                reason,
                expected_start,
                planned_nodes,
            }) => berth_api::StartEstimate {
                start: told_start(expected_start),
                cpus: job.cpus,
                nodes: planned_nodes,
                reason: Some(reason.to_string()),
            },
            // (A job the pass did not look at: held, with nothing waiting for it.)
            None => berth_api::StartEstimate {
                start: None,
                cpus: job.cpus,
                nodes: Vec::new(),
                reason: job.reason.clone(),
            },
        }
    }

    /// Sends the job to the agents of its nodes, which write its files and start its
    /// runners: on the batch host the script's, on the others a container that holds the
    /// job's place there for its steps. A task waits for each runner.
    fn launch(&mut self, id: u64, shared: &Shared) -> Result<(), String> {
        let batch = self.active[&id]
            .batch_node()
            .unwrap_or_default()
            .to_string();
        // %N in the output names is the node the script runs on, now that it is known.
        if let Some(mut job) = self.active.get_mut(&id) {
            (job.stdout, job.stderr) = outputs(&job, &batch);
        }
        let job = self.active.get(&id).expect("launching a known job").clone();
        let owner = user_of(job.uid).map_err(|e| e.message)?;
        // A private image shared with the job's user at its submission and no longer (as
        // Shifter checks an image's ACL when the job starts): not theirs to run now. Only a
        // job that named a private name or an id is looked at (a public name stays one, and
        // the store is not read at every start).
        let private = job.image.as_deref().is_some_and(|name| {
            name.starts_with("users/")
                || name.starts_with("sha256:")
                || name.bytes().all(|b| b.is_ascii_hexdigit())
        });
        let image = (job.image_squashfs.as_deref())
            .filter(|_| private && job.uid != 0)
            .and_then(|sqfs| image_id(Path::new(sqfs)));
        if let Some(record) = image.and_then(|hex| self.images.by_id(&hex).ok()) {
            if !images::Viewer::new(&job.user, &self.image_shares).sees(&record) {
                return Err(format!(
                    "image {} is no longer shared with {}",
                    job.image.as_deref().unwrap_or_default(),
                    job.user
                ));
            }
        }
        let links = job
            .nodes()
            .map(|n| {
                self.nodes
                    .get(n)
                    .map(|e| e.link.clone())
                    .ok_or_else(|| format!("node {n} is gone"))
            })
            .collect::<Result<Vec<Link>, String>>()?;
        // Recorded as running before any node hears of it, so that a restarted controller
        // does not start it again (its agents' runners are matched with it then).
        if let Err(e) = self.persist_now(&job) {
            self.unstart(id, &e.message);
            return Ok(());
        }
        let hostfile = env::hostfile(&job);
        for (index, (share, link)) in job.shares.iter().zip(links).enumerate() {
            let batch_host = index == 0;
            // A node elsewhere fetches the image from this controller (once: it keeps it).
            let image_source = match (&link, &job.image_squashfs) {
                (Link::Remote(_), Some(sqfs)) => {
                    Some(self.image_source(Path::new(sqfs), &share.node)?)
                }
                _ => None,
            };
            let launch = berth_agent::JobLaunch {
                job_id: id,
                run: job.restarts,
                user: job.user.clone(),
                image: job.image_squashfs.as_ref().map(PathBuf::from),
                image_env: job.image_env.clone(),
                // The script runs through it; a holder (another node's, an allocation's)
                // does not.
                lsf: job.request.lsf,
                submit_time: Some(job.submit_time),
                create_workdir: job.request.workdir_pattern,
                pbs_names: job.request.pbs.then(|| {
                    let array = job.request.array.is_some();
                    let [output, error] = ['o', 'e'].map(|stream| {
                        let pattern =
                            berth_core::job::pbs_default_name(&job.request.name, stream, array);
                        job_file(&job, &batch, &pattern)
                    });
                    // (Their own names, whatever directory they go in.)
                    let name = |path: String| match Path::new(&path).file_name() {
                        Some(name) => name.to_string_lossy().into_owned(),
                        None => path,
                    };
                    (name(output), name(error))
                }),
                // So does it through its shell, where it named one (PBS's -S).
                entrypoint: match batch_host && !job.allocation {
                    true => (job.image_entrypoint.iter().cloned())
                        .chain(job.request.shell.clone())
                        .collect(),
                    false => Vec::new(),
                },
                image_source,
                // The agent saves the script and puts its path here.
                script: PathBuf::new(),
                script_args: if batch_host {
                    job.script_args.clone()
                } else {
                    Vec::new()
                },
                workdir: PathBuf::from(&job.workdir),
                // Only the script's output goes to the job's files.
                stdout: PathBuf::from(if batch_host { &job.stdout } else { "/dev/null" }),
                stderr: job
                    .stderr
                    .as_ref()
                    .filter(|_| batch_host)
                    .map(PathBuf::from),
                stdin: job
                    .request
                    .input
                    .as_ref()
                    .filter(|_| batch_host)
                    .map(|i| PathBuf::from(job_file(&job, &batch, i))),
                append: job.request.open_mode == berth_core::job::OpenMode::Append,
                error_append: job
                    .request
                    .error_open_mode
                    .map(|m| m == berth_core::job::OpenMode::Append),
                umask: job.umask,
                env: env::job_environment(&job, index, &self.settings.cluster_name),
                binds: job.request.binds.clone(),
                bind_policy: self.settings.binds.clone(),
                container_workdir: job.request.container_workdir.clone(),
                start_in_home: job.request.start_in_home,
                no_home: job.request.no_home,
                remap_root: job.request.container_remap_root,
                // The script's container, saved where it runs.
                save: job
                    .request
                    .container_save
                    .as_ref()
                    .filter(|_| batch_host)
                    .map(|p| Path::new(&job.workdir).join(p)),
                // (The node makes it.)
                tmp: None,
                cpuset: Some(
                    node::cores(&share.cpu_ids)
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                memory: job.memory,
                pids: None,
                gpus: (!share.gpu_ids.is_empty()).then_some(share.gpu_ids.len() as u32),
                gpu_ids: share.gpu_ids.clone(),
                time_limit: job
                    .time_limit()
                    .map(|t| node_limit(t, batch_host, &job, self.settings.kill_wait)),
                grace: self.settings.kill_wait,
                // Counted from the job's own limit on every node (the others' runners have
                // a longer one); the batch shell is only on the batch host.
                warning: job.request.signal.and_then(|w| {
                    let batch_only = w.target == berth_core::job::SignalTarget::Batch;
                    (batch_host || !batch_only).then_some(berth_agent::runner::LaunchWarning {
                        signal: w.signal,
                        after: job.time_limit()?.saturating_sub(w.before),
                        target: w.target,
                    })
                }),
                tools: None,
            };
            let start = berth_agent::node::JobStart {
                script: if batch_host {
                    job.script.to_string()
                } else {
                    HOLD_SCRIPT.into()
                },
                uid: job.uid,
                gid: owner.gid,
                hostfile: hostfile.clone(),
                launch,
            };
            self.start_on(id, share.node.clone(), link, start, shared);
        }
        Ok(())
    }

    /// Puts job `id` back in the queue, whose start the pass decided but could not record in
    /// the store (`why`: it refuses writes for now): no node heard of it, what it was given
    /// is free again, and a later pass starts it (not this one's wake: the store is tried
    /// again at the next pass, a second later at most).
    fn unstart(&mut self, id: u64, why: &str) {
        berth_core::say!("berth: job {id}: cannot record its start in the store ({why}); it waits");
        let Some(mut job) = self.active.get_mut(&id) else {
            return;
        };
        let shares = std::mem::take(&mut job.shares);
        job.state = State::Pending;
        job.reason = Some("StoreUnavailable".into());
        job.start_time = None;
        job.default_limit = None;
        let job = job.cloned();
        for share in shares {
            if let Some(node) = self.nodes.get_mut(&share.node) {
                node.res.cpus.release(&share.cpu_ids);
                node.res.gpus.release(&share.gpu_ids);
            }
        }
        // Its record waits to be written, in place of the start's (not tried now: the store
        // has just refused a write).
        self.unwritten.borrow_mut().insert(id, job.row());
    }

    /// How `node` fetches the image `sqfs`: from other nodes whose caches hold it (up to
    /// [`IMAGE_PEERS`] that are up, a different first one for each node that asks), else
    /// from this controller: its path in the API, the SHA-256 of its file (recorded by the
    /// image store at import) and a credential for the fetch, good for an hour.
    fn image_source(
        &self,
        sqfs: &Path,
        node: &str,
    ) -> Result<berth_agent::runner::ImageSource, String> {
        let hex = image_id(sqfs)
            .ok_or_else(|| format!("{} is not in the image store", sqfs.display()))?;
        let sha256 = self
            .images
            .by_id(&hex)
            .and_then(|record| self.images.squashfs_digest(&record))
            .map_err(|e| format!("image {hex}: {e}"))?
            .hex()
            .to_string();
        let token = self.key.mint(&auth::Claims {
            user: auth::node_principal(node),
            uid: 0,
            exp: now() + 3600,
            tls: None,
        });
        let mut peers: Vec<&str> = self
            .nodes
            .iter()
            .filter(|(name, e)| *name != node && e.down.is_none() && e.images.contains(&sha256))
            .filter_map(|(_, e)| match &e.link {
                Link::Remote(url) => Some(url.as_str()),
                Link::Local(_) => None,
            })
            .collect();
        if !peers.is_empty() {
            let first = node.bytes().map(usize::from).sum::<usize>() % peers.len();
            peers.rotate_left(first);
        }
        peers.truncate(IMAGE_PEERS);
        Ok(berth_agent::runner::ImageSource {
            path: format!("/v1/agents/images/{hex}"),
            from: Vec::new(),
            peers: peers.into_iter().map(String::from).collect(),
            sha256,
            token,
            tls: self.key.tls().fingerprint.clone(),
        })
    }

    /// Records in the store that `names` were removed from the cluster's store now, and
    /// forgets removals older than [`REMOVALS_KEPT`].
    fn note_removals(&self, names: &[String]) {
        let now = now();
        let stale = self
            .image_removals()
            .into_iter()
            .filter(|(_, when)| now.saturating_sub(*when) > REMOVALS_KEPT);
        let written = stale
            .map(|(name, _)| self.store.delete(&format!("{IMAGE_REMOVALS_PREFIX}{name}")))
            .chain(names.iter().map(|name| {
                let value = serde_json::json!({ "name": name, "time": now });
                self.store.put(
                    &format!("{IMAGE_REMOVALS_PREFIX}{name}"),
                    value.to_string().as_bytes(),
                )
            }));
        for result in written {
            if let Err(e) = result {
                berth_core::say!("berth: cannot record an image's removal in the store: {e}");
            }
        }
    }

    /// The names removed from the cluster's store ([`Controller::note_removals`]), with when.
    pub fn image_removals(&self) -> BTreeMap<String, u64> {
        #[derive(serde::Deserialize)]
        struct Removal {
            name: String,
            time: u64,
        }
        stored::<Removal>(&*self.store, IMAGE_REMOVALS_PREFIX)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.name, r.time))
            .collect()
    }

    /// Which of `files` (a node's cached image files, by SHA-256) are of no image in the
    /// store: removed images, whose files the node may delete. The store's files are read
    /// again when a node holds one not among them (an image taken in since the last read is
    /// never taken for a removed one), after a removal through the API, and at least every
    /// [`IMAGE_FILES_FRESH`] (a removal by hand).
    fn unknown_images(&mut self, files: &[String]) -> Vec<String> {
        let unknown = |known: &BTreeSet<String>| -> Vec<String> {
            files
                .iter()
                .filter(|f| !known.contains(*f))
                .cloned()
                .collect()
        };
        if let Some((read, known)) = &self.image_files {
            if read.elapsed() < IMAGE_FILES_FRESH && unknown(known).is_empty() {
                return Vec::new();
            }
        }
        let records = match self.images.list() {
            Ok(records) => records,
            Err(e) => {
                berth_core::say!("berth: cannot list the image store: {e}");
                return Vec::new();
            }
        };
        let mut known = BTreeSet::new();
        for record in &records {
            match self.images.squashfs_digest(record) {
                Ok(digest) => known.insert(digest.hex().to_string()),
                // One unreadable: nothing is said to be unknown this time.
                Err(_) => return Vec::new(),
            };
        }
        let forget = unknown(&known);
        self.image_files = Some((std::time::Instant::now(), known));
        forget
    }

    /// The standby controllers copying this one's images.
    pub fn standbys(&self) -> Arc<mirror::Standbys> {
        self.standbys.clone()
    }

    /// `berth controllers`: this one, which leads (it answers), then the standbys that
    /// copy its images.
    pub fn controllers(&self) -> Result<Vec<berth_api::ControllerInfo>, ApiError> {
        let images: BTreeSet<String> = self
            .images
            .list()
            .map_err(ApiError::internal)?
            .iter()
            .map(|r| r.id.hex().to_string())
            .collect();
        let mut all = vec![berth_api::ControllerInfo {
            host: berth_agent::node::hostname(),
            url: reach(self.settings.listen),
            role: "leader".into(),
            state: "up".into(),
            heard: None,
            images: images.len() as u64,
            failed: Vec::new(),
        }];
        all.extend(self.standbys.report(&images));
        Ok(all)
    }

    /// The squashfs file of the image whose id is `hex`, for a node to fetch.
    pub fn image_file(&self, hex: &str) -> Result<PathBuf, ApiError> {
        images::by_id(&self.images, hex).map(|record| self.images.squashfs(&record))
    }

    /// Asks for a scheduling pass.
    fn wake(&mut self) {
        self.due = true;
        self.wake.notify_one();
    }

    /// Whether something happened that a scheduling pass has not seen yet.
    pub fn due(&self) -> bool {
        self.due
    }

    /// The starts on this process's own node that passes decided since the last call: the
    /// caller makes them (with [`start_local`]) once it has released the lock.
    pub fn take_starts(&mut self) -> Vec<LocalStart> {
        std::mem::take(&mut self.local_starts)
    }

    /// Starts job `id`'s runner on `node` through its agent: this process's own agent once
    /// the lock is released (a thread waits for the runner's end), or a remote one, which
    /// reports the end itself.
    fn start_on(
        &mut self,
        id: u64,
        node: String,
        link: Link,
        start: berth_agent::node::JobStart,
        shared: &Shared,
    ) {
        match link {
            // Made once the lock is released (see `LocalStart`); the runner's pid is
            // recorded then, as a remote agent's answer is.
            Link::Local(agent) => {
                if let Some(share) = self.active.share_mut(id, &node) {
                    share.starting = true;
                }
                self.local_starts.push(LocalStart {
                    id,
                    node,
                    agent,
                    start,
                });
            }
            // The agent answers with its runner's pid, and reports the end when it comes.
            Link::Remote(url) => {
                if let Some(share) = self.active.share_mut(id, &node) {
                    share.starting = true;
                }
                let (shared, key) = (shared.clone(), self.key.clone());
                let run = start.launch.run;
                tokio::task::spawn_blocking(move || {
                    let answer: Result<berth_agent::daemon::StartAnswer, _> =
                        berth_agent::http::post_once(
                            &url,
                            "/v1/agent/start",
                            (&key, auth::CONTROLLER),
                            &start,
                            AGENT_TIMEOUT,
                        );
                    tokio::runtime::Handle::current().block_on(async move {
                        let mut c = shared.lock().await;
                        match answer {
                            Ok(a) => c.started(id, &node, a.runner, a.files_id),
                            Err(f) => c.start_failed(id, &node, run, f),
                        }
                    });
                });
            }
        }
    }

    /// Job `id`'s start (run `run`) on `node` failed. Where the agent may have taken it (the
    /// request went, no answer came) and the job still runs, the node's next registration
    /// says: the runner it lists becomes the share's, or the run is voided there and the job
    /// queued again (`reconcile_runners`), as a start lost in a restart is. Otherwise the
    /// run, perhaps on its way still, is voided on the node once it registers, and the job
    /// ends NODE_FAIL (pending again with --requeue), unless it moved on meanwhile (ended,
    /// cancelled, or queued again: a later run is not this one's to end).
    fn start_failed(&mut self, id: u64, node: &str, run: u32, failure: berth_agent::http::Failure) {
        let share = self
            .active
            .get_mut(&id)
            .filter(|j| j.state == State::Running && j.restarts == run)
            .and_then(|mut j| {
                let share = j.share_mut(node)?;
                (share.runner.is_none() && share.starting).then(|| share.starting = false)
            });
        if failure.unanswered && share.is_some() {
            berth_core::say!(
                "berth: job {id}: node {node} did not answer its start ({}); its next registration says whether it took it",
                failure.message
            );
            return;
        }
        self.unconfirmed_start(node, (id, run));
        // A job that moved on meanwhile (ended, or queued again and perhaps running a
        // later run) is not this run's to end.
        if share.is_none() {
            return;
        }
        let reason = format!(
            "the agent of node {node} did not start the job: {}",
            failure.message
        );
        self.finish(id, State::NodeFail, Some(reason), None);
    }

    /// Records the pid of job `id`'s runner on `node`; a cancel, requeue or allocation's end
    /// asked for meanwhile reaches it now, and so does the end of a job that ended meanwhile (its
    /// script ended before this node's container started, or another node failed).
    fn started(&mut self, id: u64, node: &str, runner: u32, files_id: Option<String>) {
        let link = self.nodes.get(node).map(|n| n.link.clone());
        let key = self.key.clone();
        let Some(mut job) = self
            .active
            .get_mut(&id)
            .filter(|j| matches!(j.state, State::Running | State::Suspended))
        else {
            if let Some(link) = link {
                signal_one(&link, id, runner, libc::SIGTERM, &key);
            }
            return;
        };
        let Some(share) = job.share_mut(node) else {
            return;
        };
        share.runner = Some(runner);
        share.files_id = files_id;
        share.starting = false;
        if job.stop_asked() {
            if let Some(link) = &link {
                signal_one(link, id, runner, libc::SIGTERM, &key);
            }
        }
        // This process's own agent records its runners itself (`runner.pid` in the job's
        // directory), where a restarted controller finds them (`reconcile`).
        if matches!(link, Some(Link::Local(_))) {
            return;
        }
        let job = job.cloned();
        if let Err(e) = self.persist(&job) {
            berth_core::say!("berth: cannot record the runner of job {id}: {}", e.message);
        }
    }

    /// Job `id`'s runner on `node` ended (`status`: how, in words) with `result`, what it
    /// wrote. The batch host's runner ending ends the job; another node's ending while the
    /// job runs fails it (its steps cannot run there any more). Ends of runners the job no
    /// longer counts as its own (stopped at its end, or before a requeue) change nothing.
    pub fn collect(
        &mut self,
        id: u64,
        node: &str,
        runner: u32,
        result: Option<berth_agent::JobResult>,
        status: &str,
    ) {
        let Some(job) = self.active.get(&id) else {
            return;
        };
        // Its runner there, or the one whose start was not answered before a restart.
        if job
            .share(node)
            .is_none_or(|s| s.runner.is_some_and(|r| r != runner))
        {
            return;
        }
        let batch_host = job.batch_node() == Some(node);
        if !batch_host && job.stop_asked() {
            // Stopped with the job, which ends with its script (its runner stays recorded:
            // the node has not lost it, it ended).
            return;
        }
        let (cancelled, allocation_exit) = (job.cancel_requested, job.allocation_exit);
        // Gone: the job's end need not stop it.
        if let Some(share) = self.active.share_mut(id, node) {
            share.runner = None;
            share.ended = true;
        }
        if !batch_host {
            let why = result
                .and_then(|r| r.error)
                .unwrap_or_else(|| status.to_string());
            let reason = format!("the job's container on node {node} ended: {why}");
            return self.finish(id, State::Failed, Some(reason), None);
        }
        // An allocation ended by its step: the step's status is the job's, also when the
        // release stopped its runner before it had the container going.
        let mut result = result;
        if let Some(code) = allocation_exit {
            match result.as_mut() {
                Some(r) if r.error.is_none() && !r.timed_out && !r.oom_killed => {
                    r.exit_code = code;
                    r.signal = None;
                }
                Some(_) => {}
                None => {
                    result = Some(berth_agent::JobResult {
                        exit_code: code,
                        ..Default::default()
                    })
                }
            }
        }
        let (state, reason) = match &result {
            // Cancelled, even if the runner was stopped before it could write a result.
            _ if cancelled => (State::Cancelled, None),
            None => (
                State::NodeFail,
                Some(format!("the job runner ended without a result ({status})")),
            ),
            Some(r) if r.error.is_some() => (State::Failed, r.error.clone()),
            Some(r) if r.timed_out => (State::Timeout, None),
            Some(r) if r.oom_killed => (State::OutOfMemory, None),
            // (Where its output went instead of its file, if it did, is its reason.)
            Some(r) if r.exit_code == 0 => (State::Completed, r.note.clone()),
            Some(r) => (
                State::Failed,
                Some(r.note.clone().unwrap_or_else(|| "NonZeroExitCode".into())),
            ),
        };
        self.finish(id, state, reason, result);
    }

    fn finish(
        &mut self,
        id: u64,
        state: State,
        reason: Option<String>,
        result: Option<berth_agent::JobResult>,
    ) {
        let Some(mut job) = self.active.remove(&id) else {
            return;
        };
        // What it used goes to its user's account (a requeued job's run too).
        let end = match &result {
            Some(r) if r.started > 0 => r.ended,
            _ => now(),
        };
        let half_life = self.settings.priority.decay_half_life;
        self.usage
            .charge(&job.user, job.charge(end), end, half_life);
        // Its containers on every node go (the runner that ended is gone already), and what
        // they held is free. A start a remote node never confirmed may still reach it: the
        // node is asked to void it (one on its way now is seen to by its answer).
        for share in &job.shares {
            let remote = self
                .nodes
                .get(&share.node)
                .is_none_or(|n| matches!(n.link, Link::Remote(_)));
            if remote && share.runner.is_none() && !share.starting && !share.ended {
                self.unconfirmed_start(&share.node, (id, job.restarts));
            }
            let Some(node) = self.nodes.get_mut(&share.node) else {
                continue;
            };
            node.res.cpus.release(&share.cpu_ids);
            node.res.gpus.release(&share.gpu_ids);
            if let (Some(runner), None) = (share.runner, &node.down) {
                signal_one(&node.link, id, runner, libc::SIGTERM, &self.key);
            }
        }
        if job.requeue_requested {
            if job.request.mail.requeue {
                self.mail(&job, mail::Event::Requeued);
            }
            // The run its node failed is NODE_FAIL in its record (sacct -D), as Slurm's.
            if state == State::NodeFail {
                (job.state, job.requeue_requested) = (state, false);
            }
            job.restart();
            if let Err(e) = self.persist(&job) {
                berth_core::say!(
                    "berth: cannot record the requeue of job {id}: {}",
                    e.message
                );
            }
            self.active.insert(id, job);
            self.wake();
            return;
        }
        job.state = state;
        job.reason = reason;
        job.end_time = Some(now());
        for share in &mut job.shares {
            share.runner = None;
        }
        if let Some(r) = result {
            job.exit_code = Some(r.exit_code);
            job.signal = r.signal;
            job.cpu_usec = r.cpu_usec;
            job.user_cpu_usec = r.user_cpu_usec;
            job.system_cpu_usec = r.system_cpu_usec;
            job.max_rss_bytes = r.max_rss_bytes;
            if r.started > 0 {
                job.start_time = Some(r.started);
                job.end_time = Some(r.ended);
            }
        }
        let end = job.end_time.unwrap_or_else(now);
        job.suspended.stop(end);
        // Its steps end with it: one whose end is still on its way has it recorded over
        // this when it comes; one whose process never ran (its agent went first) would
        // otherwise run in the record for ever.
        for step in job.steps.iter_mut().filter(|s| s.end_time.is_none()) {
            step.end_time = Some(end);
            step.exit_code = Some(125);
            step.cancelled = true;
        }
        self.finished
            .insert(id, (job.scheduler_state(), job.began().unwrap_or(end)));
        self.counters.ended(state);
        if let Err(e) = self.persist(&job) {
            berth_core::say!("berth: cannot record the end of job {id}: {}", e.message);
        }
        self.mail_end(&job);
        self.wake();
    }

    /// Mails `job`'s owner about `event`, through the site's mail program (if there is one)
    /// without waiting for it. An array's task (unless it asked for ARRAY_TASKS) mails for
    /// the array: `Began` only as its first task starts (see `mail_end` for its end).
    fn mail(&self, job: &Job, event: mail::Event) {
        let Some(program) = &self.settings.mail_program else {
            return;
        };
        let subject = match job.array_job_id.filter(|_| !job.request.mail.array_tasks) {
            Some(array) if event == mail::Event::Began => {
                let tasks = job.request.array.as_ref().map_or(1, |a| a.len());
                let others_ran = (self.active.tasks(array, tasks))
                    .any(|j| j.id != job.id && j.start_time.is_some());
                if others_ran || self.active.tasks(array, tasks).count() < tasks {
                    return;
                }
                mail::array_subject(job, event, &[])
            }
            _ => mail::subject(job, event, now()),
        };
        mail::send(program, job, event, subject);
    }

    /// Mails running jobs that asked for it (TIME_LIMIT_50/_80/_90, TIME_LIMIT) once they
    /// have run that share of their time limit, suspended time left out; each share once
    /// (`Job::mailed_limits`, kept with the job).
    fn mail_time_limits(&mut self) {
        let now = now();
        let mut due = Vec::new();
        for j in self
            .active
            .running()
            .filter(|j| !j.request.mail.time_limit.is_empty() && j.state == State::Running)
        {
            let (Some(start), Some(limit)) = (j.start_time, j.time_limit()) else {
                continue;
            };
            let ran = now
                .saturating_sub(start)
                .saturating_sub(j.suspended.read(now));
            let reached = j
                .request
                .mail
                .time_limit
                .iter()
                .filter(|&&p| ran * 100 >= limit * u64::from(p) && !j.mailed_limits.contains(&p))
                .max();
            if let Some(&percent) = reached {
                due.push((j.id, percent));
            }
        }
        for (id, percent) in due {
            let Some(mut job) = self.active.get_mut(&id) else {
                continue;
            };
            // The shares below it go unmailed: one mail says the most.
            let shares = job.request.mail.time_limit.clone();
            job.mailed_limits
                .extend(shares.into_iter().filter(|p| *p <= percent));
            let job = job.cloned();
            let _ = self.persist(&job);
            self.mail(&job, mail::Event::TimeLimit(percent));
        }
    }

    /// The mail of `job` that just ended (removed from the active ones), if it asked for one:
    /// its own, or, for an array's task, the array's once its last task has ended.
    fn mail_end(&self, job: &Job) {
        let mail = &job.request.mail;
        let invalid = job.reason.as_deref() == Some("DependencyNeverSatisfied");
        let event = match invalid {
            true if mail.invalid_depend => Some(mail::Event::InvalidDependency),
            _ => mail::end_event(job, job.state),
        };
        let (Some(event), Some(program)) = (event, &self.settings.mail_program) else {
            return;
        };
        let Some(array) = job.array_job_id.filter(|_| !mail.array_tasks) else {
            return self.mail(job, event);
        };
        let tasks = job.request.array.as_ref().map_or(1, |a| a.len());
        if self.active.tasks(array, tasks).next().is_some() {
            return;
        }
        // The last of the array: how each of its tasks ended.
        let filter = JobFilter {
            ids: (array..array + tasks as u64).collect(),
            ..Default::default()
        };
        let rows = self.query_rows(&filter).unwrap_or_default();
        let tasks: Vec<(State, i32)> = rows
            .iter()
            .filter_map(|row| serde_json::from_slice::<Job>(&row.doc).ok())
            .filter(|t| t.array_job_id == Some(array))
            .map(|t| (t.state, t.exit_code.unwrap_or(0)))
            .collect();
        let all_completed = tasks.iter().all(|(s, _)| *s == State::Completed);
        let event = match (all_completed, mail.fail, mail.end) {
            (false, true, _) => mail::Event::Failed,
            (_, _, true) => mail::Event::Ended,
            _ => return,
        };
        mail::send(program, job, event, mail::array_subject(job, event, &tasks));
    }

    /// Jobs an earlier controller left running (or suspended): watch their runners (or
    /// collect results they already wrote), and take them in hand again (a cancel, suspend
    /// or resume reaches their runners). Runners do not depend on the controller staying up.
    pub fn reconcile(&mut self, shared: &Shared) {
        let running: Vec<Job> = self.active.running().cloned().collect();
        for job in running {
            for share in &job.shares {
                // Ended (or queued again) by a share before this one.
                if !self
                    .active
                    .get(&job.id)
                    .is_some_and(|j| matches!(j.state, State::Running | State::Suspended))
                {
                    break;
                }
                // Jobs of nodes that have not registered yet are taken up when they do.
                let Some(node) = self.nodes.get_mut(&share.node) else {
                    continue;
                };
                node.res.cpus.reserve(&share.cpu_ids);
                node.res.gpus.reserve(&share.gpu_ids);
                // A remote agent reports its runners' ends itself, until the controller
                // takes them.
                let Link::Local(agent) = node.link.clone() else {
                    continue;
                };
                let (id, name) = (job.id, share.node.clone());
                let runner = share.runner.or_else(|| agent.recorded_runner(id));
                let Some(pid) = runner.filter(|&pid| agent.runner_alive(id, pid)) else {
                    let result = agent.result(id);
                    if runner.is_none() && result.is_none() {
                        // The earlier controller died between the job's start and its
                        // runner's (which is recorded before it takes the job): nothing of
                        // it ran, it goes back to the queue.
                        self.requeue_lost_start(id, &name);
                        continue;
                    }
                    let runner = runner.unwrap_or(0);
                    let gone = "its runner was gone at the controller's start";
                    self.collect_local(&agent, id, &name, runner, result, gone);
                    continue;
                };
                // (This process's agent records its runners itself: the job's record
                // has none of them.)
                if let Some(mut j) = self.active.get_mut(&id) {
                    if let Some(share) = j.share_mut(&name) {
                        share.runner = Some(pid);
                    }
                }
                let shared = shared.clone();
                tokio::spawn(async move {
                    while agent.runner_alive(id, pid) {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    let result = agent.result(id);
                    shared
                        .lock()
                        .await
                        .collect_local(&agent, id, &name, pid, result, "ended");
                });
            }
        }
        // Steps this process's own agent ran before the restart and did not adopt (see
        // `step::server::adopt`): nothing reports their ends now.
        let local: Vec<String> = (self.nodes.iter())
            .filter(|(_, n)| matches!(n.link, Link::Local(_)))
            .map(|(name, _)| name.clone())
            .collect();
        let adopted = berth_agent::step::server::running_steps();
        for name in local {
            self.end_lost_steps(&name, &adopted, u64::MAX);
        }
        // The files of jobs that are over (left by a berth before 2026-12-02, which kept
        // them all, or by a crash between a job's end and their removal).
        for agent in self.local_agents() {
            for id in agent.job_ids() {
                if !self.active.contains_key(&id) {
                    agent.forget(id);
                }
            }
        }
    }

    /// [`Controller::collect`] for this process's own node, whose agent then forgets the
    /// run's files: its end is in the store by then, and under the controller's lock no
    /// requeued run of it can have started there meanwhile.
    fn collect_local(
        &mut self,
        agent: &NodeAgent,
        id: u64,
        node: &str,
        runner: u32,
        result: Option<berth_agent::JobResult>,
        status: &str,
    ) {
        self.collect(id, node, runner, result, status);
        agent.forget_run(id, runner);
    }

    /// `berth agent` registering (again, every few seconds: its heartbeat): its node joins
    /// the cluster, with the jobs the store says run there holding their CPUs and GPUs.
    pub fn register(
        &mut self,
        reg: berth_agent::daemon::Registration,
    ) -> Result<berth_agent::daemon::RegistrationAnswer, ApiError> {
        let name = reg.resources.name.clone();
        // For whoever else reads the store: this node is alive for another node_timeout (its
        // health changes at every beat: the controller keeps that, the store would be
        // written anew each time).
        let alive = serde_json::to_vec(&berth_agent::daemon::Registration {
            running: Vec::new(),
            health: None,
            voided: None,
            images: Vec::new(),
            steps: None,
            ..reg.clone()
        })
        .expect("registrations serialise");
        if let Err(e) =
            self.store
                .heartbeat(&format!("alive/{name}"), &alive, self.settings.node_timeout)
        {
            berth_core::say!("berth: cannot record node {name}'s heartbeat in the store: {e}");
        }
        let mut answer = berth_agent::daemon::RegistrationAnswer {
            forget: self.unknown_images(&reg.images),
            // Three heartbeats in a timeout: one late or lost one does not take a node down.
            beat: (self.settings.node_timeout / 3).max(1),
            timeout: Some(self.settings.node_timeout.max(1)),
            ..Default::default()
        };
        self.reconcile_runners(&name, &reg, &mut answer);
        self.stop_again(&name);
        self.end_lost_runs(&name, reg.files_id.as_deref());
        if let Some(steps) = &reg.steps {
            self.end_lost_steps(&name, steps, now().saturating_sub(LOST_STEP_AFTER));
        }
        if self
            .nodes
            .get_mut(&name)
            .is_some_and(|node| node.down.take().is_some())
        {
            berth_core::say!("berth: node {name} is back");
            self.wake();
        }
        if let Some(node) = self.nodes.get_mut(&name) {
            node.last_seen = std::time::Instant::now();
            node.health = reg.health;
            node.images = reg.images.into_iter().collect();
            match &mut node.link {
                Link::Remote(url) if *url == reg.url => return Ok(answer),
                Link::Remote(url) => *url = reg.url.clone(),
                Link::Local(_) => {
                    return Err(ApiError::forbidden(format!(
                        "node {name} is this controller's own"
                    )))
                }
            }
            return self.save_node(&name).map(|()| answer);
        }
        let mut res = LocalNode::from(reg.resources, self.settings.oversubscribe);
        for share in self.active.running().filter_map(|j| j.share(&name)) {
            res.cpus.reserve(&share.cpu_ids);
            res.gpus.reserve(&share.gpu_ids);
        }
        berth_core::say!("berth: node {name} registered from {}", reg.url);
        let mut entry = NodeEntry::new(res, Link::Remote(reg.url));
        entry.health = reg.health;
        entry.images = reg.images.into_iter().collect();
        entry.drain = self
            .store
            .get(&format!("{DRAINS_PREFIX}{name}"))
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice(&v).ok());
        self.nodes.insert(name.clone(), entry);
        self.wake();
        self.save_node(&name).map(|()| answer)
    }

    /// Sends again the cancel (or requeue) of each running job of `node` that did not reach
    /// it ([`UNSENT_STOPS`]), or that it has not ended within its kill wait (an LSF job's,
    /// bkill's twenty seconds at least) and ten seconds more (since it was sent, or since
    /// this controller started): one whose node's agent
    /// could not be reached when it was sent would otherwise run on (slurmctld repeats its
    /// terminate requests the same way).
    fn stop_again(&mut self, node: &str) {
        let due = |j: &Job| {
            let lsf = 2 * berth_agent::runner::LSF_KILL_GAP.as_secs();
            let wait = match j.request.lsf {
                true => self.settings.kill_wait.max(lsf),
                false => self.settings.kill_wait,
            };
            std::time::Duration::from_secs(wait + 10)
        };
        let mut unsent = lock(&UNSENT_STOPS);
        let owed: Vec<u64> = (self.active.running())
            .filter(|j| j.cancel_requested || j.requeue_requested)
            .filter(|j| {
                j.share(node)
                    .is_some_and(|s| s.runner.is_some() && !s.ended)
            })
            .filter(|j| unsent.remove(&j.id) || j.stop_sent.is_none_or(|t| t.elapsed() >= due(j)))
            .map(|j| j.id)
            .collect();
        drop(unsent);
        for id in owed {
            let (links, key) = (self.links_of(id), self.key.clone());
            let Some(mut job) = self.active.get_mut(&id) else {
                continue;
            };
            berth_core::say!(
                "berth: job {id}: sending its cancel again (node {node} has not ended it)"
            );
            let why = match job.requeue_requested {
                true => " DUE TO JOB REQUEUE",
                false => "",
            };
            cancel_runner(&links, &mut job, why, &key);
        }
    }

    /// Matches the runners a node's agent has (`(job, runner)`) with the jobs the controller
    /// has there. A runner of a job whose start was sent but not answered (this controller
    /// was restarted meanwhile) becomes that job's. A job with no runner there whose start
    /// was sent by an earlier controller (lost, or on its way still) is voided: the agent is
    /// asked (`answer.void`) not to start that run of it, and once it confirmed that (listed
    /// in `voided`: [`berth_agent::runs`]), the job is queued again, as it never ran. An
    /// agent before 2026-12-06 voids nothing: such a job ends NODE_FAIL, or is queued again
    /// if submitted with --requeue. `answer.stop` gets the runners the agent must stop:
    /// those of jobs the controller no longer counts as running there (it ended them while
    /// the node was silent).
    fn reconcile_runners(
        &mut self,
        node: &str,
        reg: &berth_agent::daemon::Registration,
        answer: &mut berth_agent::daemon::RegistrationAnswer,
    ) {
        let (running, files_id) = (&reg.running, reg.files_id.as_deref());
        for &(id, runner) in running {
            match self.active.share_mut(id, node) {
                Some(share) if share.runner == Some(runner) => {}
                // Its start's answer (with this runner) is on its way: it will tell.
                Some(share) if share.runner.is_none() && share.starting => {}
                Some(share) if share.runner.is_none() => {
                    share.runner = Some(runner);
                    share.files_id = files_id.map(str::to_string);
                    let job = self.active[&id].clone();
                    if let Err(e) = self.persist(&job) {
                        berth_core::say!(
                            "berth: cannot record the runner of job {id}: {}",
                            e.message
                        );
                    }
                }
                _ => answer.stop.push((id, runner)),
            }
        }
        let lost: Vec<(u64, u32)> = self
            .active
            .running()
            .filter(|j| {
                j.share(node)
                    .is_some_and(|s| s.runner.is_none() && !s.starting)
                    && !running.iter().any(|&(id, _)| id == j.id)
            })
            .map(|j| (j.id, j.restarts))
            .collect();
        // Runs whose starts the node never confirmed, of jobs that ended meanwhile: asked to
        // be voided until they are, for an hour at most (an agent too old to void is not
        // asked).
        if let Some(runs) = self.unconfirmed.get_mut(node) {
            runs.retain(|run, since| {
                reg.voided.as_ref().is_some_and(|v| !v.contains(run))
                    && since.elapsed() < UNCONFIRMED_KEPT
            });
            answer.void.extend(runs.keys().copied());
        }
        for lost in lost {
            match &reg.voided {
                Some(voided) if voided.contains(&lost) => self.requeue_lost_start(lost.0, node),
                Some(_) => answer.void.push(lost),
                None => {
                    let reason = format!(
                        "its start on node {node} was never confirmed, and the node's agent is \
                         too old to void it"
                    );
                    self.fail_on_node(lost.0, reason);
                }
            }
        }
    }

    /// Notes `run` (job, run) on `node`, whose start the node never confirmed (it went down,
    /// or did not answer), as its job ends or goes back to the queue: see `unconfirmed`.
    fn unconfirmed_start(&mut self, node: &str, run: (u64, u32)) {
        let runs = self.unconfirmed.entry(node.to_string()).or_default();
        runs.insert(run, std::time::Instant::now());
    }

    /// Job `id`'s start on `node` never ran there (lost with an earlier controller, or
    /// unanswered; voided on the node). Where that was the job's batch host, nothing of
    /// the job ran: it is queued again, to run as it would have (one more restart); where
    /// the batch script may run on another node, the node failed it.
    fn requeue_lost_start(&mut self, id: u64, node: &str) {
        // Only the batch host runs the script (an allocation's client, its step's tasks on
        // every node).
        let ran = self
            .active
            .get(&id)
            .is_some_and(|j| j.shares.len() > 1 && (j.batch_node() != Some(node) || j.allocation));
        if ran {
            let reason = format!("its start on node {node} never reached the node");
            return self.fail_on_node(id, reason);
        }
        berth_core::say!(
            "berth: job {id}: its start on node {node} never reached the node; it is queued again"
        );
        if let Some(mut job) = self.active.get_mut(&id) {
            job.requeue_requested = true;
            // It used nothing: its user's fair share is not charged for it.
            job.start_time = None;
        }
        self.finish(id, State::NodeFail, None, None);
    }

    /// Ends the jobs whose runners on `node` were started among job files other than the
    /// ones its agent has now (`files_id`): those files are gone, and the runners with them
    /// (the machine restarted, its tmpfs with it, faster than the node timeout). Runs
    /// recorded without an id (by a berth before 2026-12-04) are left to the agent's report.
    fn end_lost_runs(&mut self, node: &str, files_id: Option<&str>) {
        let Some(files_id) = files_id else {
            return;
        };
        let lost: Vec<u64> = self
            .active
            .running()
            .filter(|j| {
                j.share(node).is_some_and(|s| {
                    s.runner.is_some() && s.files_id.as_ref().is_some_and(|f| f != files_id)
                })
            })
            .map(|j| j.id)
            .collect();
        for id in lost {
            let reason = format!(
                "node {node} restarted: its agent no longer has the job's files, nor its runner"
            );
            self.fail_on_node(id, reason);
        }
    }

    /// Ends job `id`, whose node failed it: NODE_FAIL, or pending again (see
    /// [`Settings::requeue`]).
    fn fail_on_node(&mut self, id: u64, reason: String) {
        let by_default = self.settings.requeue;
        if let Some(mut job) = self.active.get_mut(&id) {
            if job.request.requeue.unwrap_or(by_default) && !job.allocation {
                job.requeue_requested = true;
            }
        }
        self.finish(id, State::NodeFail, Some(reason), None);
    }

    /// Remote nodes whose agents have not registered within the node timeout are down: their
    /// running jobs end NODE_FAIL, or go back to the queue if submitted with --requeue.
    fn check_nodes(&mut self) {
        let timeout = std::time::Duration::from_secs(self.settings.node_timeout.max(1));
        let silent: Vec<String> = self
            .nodes
            .values_mut()
            .filter(|n| matches!(n.link, Link::Remote(_)) && n.down.is_none())
            .filter(|n| n.last_seen.elapsed() > timeout)
            .map(|n| {
                n.down = Some(NodeReason {
                    reason: format!(
                        "{}: no heartbeat for {} s",
                        berth_api::NOT_RESPONDING,
                        timeout.as_secs()
                    ),
                    user: "berth".into(),
                    time: now(),
                });
                n.res.name.clone()
            })
            .collect();
        for name in silent {
            berth_core::say!("berth: node {name} is down (no heartbeat)");
            let lost: Vec<u64> = self
                .active
                .running()
                .filter(|j| j.share(&name).is_some())
                .map(|j| j.id)
                .collect();
            for id in lost {
                self.fail_on_node(id, format!("node {name} stopped answering"));
            }
        }
    }

    /// `berth node drain` / `resume`: no new jobs on the node (running ones go on), or again.
    pub fn drain(
        &mut self,
        caller: Caller,
        name: &str,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        if caller.uid != 0 {
            return Err(ApiError::forbidden("only root may drain or resume nodes"));
        }
        if !self.nodes.contains_key(name) {
            return Err(ApiError {
                status: 404,
                message: format!("no node {name}: see `berth nodes`"),
            });
        }
        let key = format!("{DRAINS_PREFIX}{name}");
        let drain = match reason {
            Some(reason) => {
                let drain = NodeReason {
                    reason,
                    user: user_of(caller.uid).map_or_else(|_| caller.uid.to_string(), |u| u.user),
                    time: now(),
                };
                let value = serde_json::to_vec(&drain).expect("reasons serialise");
                self.store.put(&key, &value).map_err(ApiError::internal)?;
                Some(drain)
            }
            None => {
                self.store.delete(&key).map_err(ApiError::internal)?;
                None
            }
        };
        self.nodes.get_mut(name).expect("checked").drain = drain;
        self.wake();
        Ok(())
    }

    /// Keeps a remote node (its resources and agent's URL) in the store, for the next
    /// start of this controller or another's taking over.
    fn save_node(&self, name: &str) -> Result<(), ApiError> {
        let Some(NodeEntry {
            res,
            link: Link::Remote(url),
            ..
        }) = self.nodes.get(name)
        else {
            return Ok(());
        };
        let reg = berth_agent::daemon::Registration {
            url: url.clone(),
            resources: res.resources(),
            running: Vec::new(),
            health: None,
            files_id: None,
            voided: None,
            images: Vec::new(),
            steps: None,
        };
        self.store
            .put(
                &format!("{NODES_PREFIX}{name}"),
                &serde_json::to_vec(&reg).expect("registrations serialise"),
            )
            .map_err(ApiError::internal)
    }

    /// A remote agent's runner ended.
    pub fn ended(
        &mut self,
        node: &str,
        end: berth_agent::daemon::JobEnded,
    ) -> Result<(), ApiError> {
        let Some(job) = self.active.get(&end.job) else {
            // Already finished (a report sent twice): taken, once its end is in the store
            // (its write may have failed: the agent then keeps the run's files meanwhile).
            if self.unwritten.borrow().contains_key(&end.job)
                && self.write_rows(Vec::new()).is_err()
            {
                return Err(ApiError::internal(format!(
                    "cannot record the end of job {} in the store yet: report it again",
                    end.job
                )));
            }
            return Ok(());
        };
        let id = end.job;
        // An earlier run's end (the job was queued again meanwhile, its node silent then): the
        // job has nothing of it any more, and the agent may forget the run. (Taken for the
        // current run's, it would have ended a run that had not even started, if its start
        // was on its way.)
        if job.share(node).is_none() || end.run.is_some_and(|run| run != job.restarts) {
            berth_core::say!(
                "berth: node {node} reported the end of an earlier run of job {id} (runner {}): nothing to do",
                end.runner
            );
            return Ok(());
        }
        // Only an end in the store lets the agent forget the run's files: where the write
        // failed (a controller deposed meanwhile), the agent reports it again, to whoever
        // leads by then (one that finds no runner of a job it has running, on a node that
        // forgot the run, would void the run and queue the job again: run twice).
        let recorded =
            self.in_one_write(|c| c.collect(id, node, end.runner, end.result, &end.status));
        if !recorded {
            return Err(ApiError::internal(format!(
                "cannot record the end of job {id} in the store: report it again"
            )));
        }
        Ok(())
    }

    /// The links to the agents of job `id`'s nodes, by node.
    fn links_of(&self, id: u64) -> Links {
        self.active.get(&id).map_or_else(Links::new, |j| {
            j.nodes()
                .filter_map(|n| Some((n.to_string(), self.nodes.get(n)?.link.clone())))
                .collect()
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The agent of this process's own node (`berth up`'s), if it has one.
    pub fn local_agent(&self) -> Option<Arc<NodeAgent>> {
        self.nodes.values().find_map(|entry| match &entry.link {
            Link::Local(agent) => Some(agent.clone()),
            Link::Remote(_) => None,
        })
    }

    /// The agents of this process's own node (`berth up`'s).
    pub fn local_agents(&self) -> Vec<Arc<NodeAgent>> {
        self.nodes
            .values()
            .filter_map(|entry| match &entry.link {
                Link::Local(agent) => Some(agent.clone()),
                Link::Remote(_) => None,
            })
            .collect()
    }

    /// Unmounts this process's own node's shared image mounts, and its jobs' tmpfs if no
    /// job's files are left there (as it stops).
    pub fn release_local_node(&self) {
        for agent in self.local_agents() {
            agent.release_images();
            agent.unmount_jobs();
        }
    }

    /// The cluster key, which signs the API's tokens and the daemons' credentials.
    pub fn key(&self) -> Arc<auth::Key> {
        self.key.clone()
    }

    /// `berth token`: a token for `req.user` (the caller's own unless root asks for another).
    pub fn token(
        &self,
        caller: Caller,
        req: berth_api::TokenRequest,
    ) -> Result<berth_api::TokenResponse, ApiError> {
        let own = user_of(caller.uid)?;
        let user = match req.user {
            Some(u) if u != own.user && caller.uid != 0 => {
                return Err(ApiError::forbidden(format!(
                    "only root may make a token for another user ({u})"
                )))
            }
            Some(u) => berth_runtime::Identity::lookup(&u, false)
                .map_err(|_| ApiError::bad(format!("unknown user '{u}'")))?,
            None => own,
        };
        let lifetime = req.lifetime.unwrap_or(auth::DEFAULT_LIFETIME);
        if lifetime == 0 || lifetime > auth::MAX_LIFETIME {
            return Err(ApiError::bad(format!(
                "a token lives between 1 second and {} days",
                auth::MAX_LIFETIME / 86_400
            )));
        }
        let claims = auth::Claims {
            user: user.user,
            uid: user.uid,
            exp: now() + lifetime,
            tls: Some(self.key.tls().fingerprint.clone()),
        };
        Ok(berth_api::TokenResponse {
            token: self.key.mint(&claims),
            user: claims.user,
            expires: claims.exp,
        })
    }

    /// The directory of the step socket, which every job's container gets.
    pub fn step_dir(&self) -> PathBuf {
        berth_api::step_dir(&self.settings.socket)
    }

    /// A `berth step` in job `id` by `uid`: checks that the job runs and is theirs and that
    /// the tasks fit its CPUs on each node (unless overcommitted), records the step, and says
    /// where its tasks go (which nodes, which CPUs each task gets, how each node's agent is
    /// reached); or that the CPUs it needs are held by the job's other steps now. `from`: the
    /// node whose agent asks (`None`: this controller's own node); its tasks run there, the
    /// others' through their agents.
    pub fn begin_step(
        &mut self,
        from: Option<&str>,
        uid: u32,
        id: u64,
        request: &berth_api::StepRequest,
    ) -> Result<StepStart, String> {
        let job = self
            .active
            .get(&id)
            .ok_or_else(|| format!("job {id} is not running: see `berth queue`"))?;
        // The node asking (none of the job's, possibly: then every part runs elsewhere).
        let here = match from {
            Some(node) => node.to_string(),
            None => self
                .nodes
                .values()
                .find(|n| matches!(n.link, Link::Local(_)))
                .map(|n| n.res.name.clone())
                .unwrap_or_default(),
        };
        if uid != 0 && uid != job.uid {
            return Err(format!(
                "job {id} belongs to {}: only its owner or root may start steps in it",
                job.user
            ));
        }
        match job.state {
            State::Running if job.stop_asked() => {
                return Err(format!(
                "job {id} is completing (cancelled, requeued or given back): no step starts in it"
            ))
            }
            State::Running => {}
            // (As Slurm's: creation is retried, the step waits for the job's resume.)
            State::Suspended => {
                return Ok(StepStart::Busy {
                    ended: self.steps_ended,
                    reason: berth_agent::step::server::JOB_SUSPENDED.into(),
                })
            }
            state => {
                return Err(format!(
                    "job {id} is {}: steps run inside a running job",
                    state.name()
                ))
            }
        }
        // The CPUs the job's running steps hold, how many steps each, and their memory
        // node by node (but the steps begun before this controller started, whose ends it
        // may never hear).
        let mut holding: HashMap<(&str, u32), usize> = HashMap::new();
        let mut holding_memory: HashMap<&str, u64> = HashMap::new();
        let running = job
            .steps
            .iter()
            .filter(|s| s.end_time.is_none() && s.start_time >= self.since);
        for part in running.flat_map(|s| &s.cpu_ids) {
            for &cpu in &part.cpu_ids {
                *holding.entry((&part.node, cpu)).or_default() += 1;
            }
            *holding_memory.entry(&part.node).or_default() += part.memory_bytes.unwrap_or(0);
        }
        // Its nodes: those named (-w, and with -N more the job's others after them), the
        // first k (-N), or as many as it has tasks; never one excluded (-x).
        let usable: Vec<&job::Share> = (job.shares.iter())
            .filter(|s| !request.exclude.contains(&s.node))
            .collect();
        let named: Vec<&job::Share> = (request.nodelist.iter().flatten())
            .map(|n| match job.share(n) {
                Some(s) if usable.iter().any(|u| u.node == s.node) => Ok(s),
                Some(_) => Err(format!("node {n} is both named (-w) and excluded (-x)")),
                None => Err(format!(
                    "node {n} is not one of job {id}'s: it runs on {}",
                    job.nodes().collect::<Vec<_>>().join(",")
                )),
            })
            .collect::<Result<_, _>>()?;
        let shares: Vec<&job::Share> = match (request.nodes, named.len()) {
            (Some(k), n) if (k as usize) < n => {
                return Err(format!(
                    "the step names {n} node(s) (-w) and asks for {k} (-N): name no more than it asks for"
                ))
            }
            (Some(k), _) if k as usize > usable.len() || k == 0 => {
                return Err(format!(
                    "the step asks for {k} node(s), and job {id} has {}{}: ask for at most that many (-N)",
                    usable.len(),
                    if usable.len() < job.shares.len() { " not excluded" } else { "" }
                ))
            }
            (None, 0) if usable.is_empty() => {
                return Err(format!("-x excludes every node of job {id}"));
            }
            (None, n) if n > 0 => named,
            (k, _) => {
                let tasks = request.ntasks.map_or(usable.len(), |n| n as usize);
                let k = k.map_or(tasks.max(1), |k| k as usize);
                let others = usable.iter().filter(|s| !named.contains(s));
                named.iter().chain(others).take(k).copied().collect()
            }
        };
        let per_task = request
            .cpus_per_task
            .unwrap_or(job.request.cpus_per_task)
            .max(1);
        // A step on fewer nodes than the job has goes where it has the CPUs free (as Slurm
        // picks any of the job's nodes with room), the job's first nodes first.
        let shares = match (request.ntasks, request.nodelist.is_none()) {
            (Some(n), true) if shares.len() < usable.len() && !request.overlap && !request.pty => {
                let free = |s: &job::Share| {
                    let held = |cpu: &&u32| holding.contains_key(&(s.node.as_str(), **cpu));
                    s.cpu_ids.iter().filter(|c| !held(c)).count() as u64
                };
                let mut picked: Vec<&job::Share> = Vec::new();
                for need in berth_core::job::block_layout(n, shares.len() as u32) {
                    let room = usable.iter().copied().find(|s| {
                        !picked.iter().any(|p| p.node == s.node)
                            && free(s) >= u64::from(need) * u64::from(per_task)
                    });
                    match room {
                        Some(s) => picked.push(s),
                        None => break,
                    }
                }
                match picked.len() == shares.len() {
                    true => picked,
                    false => shares,
                }
            }
            _ => shares,
        };
        let ntasks = request
            .ntasks
            .unwrap_or_else(|| shares.iter().map(|s| s.tasks.max(1)).sum());
        // The job's own tasks per node where the step has as many on the same nodes (the
        // job's layout may be uneven the other way round: `-N 2 -n 3` two on its second
        // node), else Slurm's block distribution.
        let as_job = shares.iter().map(|s| s.tasks).sum::<u32>() == ntasks;
        let per_node = match as_job {
            true => shares.iter().map(|s| s.tasks).collect(),
            false => berth_core::job::block_layout(ntasks, shares.len() as u32),
        };
        if per_node.contains(&0) {
            return Err(format!(
                "the step asks for {ntasks} task(s) on {} node(s): give each node one at least (-n, -N)",
                shares.len()
            ));
        }
        if request.pty && shares.len() != 1 {
            return Err(format!(
                "--pty gives the first task a terminal, on one node, and the step would have tasks on {} nodes: add -N 1",
                shares.len()
            ));
        }
        if let Some(text) = &request.multi_prog {
            let file = request.argv.first().map_or("", String::as_str);
            let config = berth_core::job::MultiProg::parse(text).map_err(|e| e.to_string())?;
            if let Some(rank) = config.uncovered(ntasks) {
                return Err(format!(
                    "--multi-prog {file} gives task {rank} no program (the step has {ntasks} tasks): add a line for it, or a * line"
                ));
            }
        }
        if request.pty && shares[0].node != here {
            return Err(format!(
                "--pty runs its task on the node it is started from ({here}), not on {}",
                shares[0].node
            ));
        }
        let own_settings =
            !request.binds.is_empty() || request.no_home || !request.host_env.is_empty();
        // What only a container of the step's own does: an allocation's step (srun from
        // outside a job, which the allocation's image would otherwise run) gets one of that
        // image.
        let needs_own = [
            ("--container-save", request.container_save.is_some()),
            ("--container-entrypoint", request.container_entrypoint),
            ("--container-remap-root", request.container_remap_root),
        ];
        // What makes a step's container its own even of the job's image.
        let own_anyway = own_settings || needs_own.iter().any(|(_, set)| *set);
        let in_jobs_container = || -> Result<(), String> {
            match own_settings {
                true => Err("binds, --container-env and --no-container-mount-home are for a step in an image of its own (--container-image): this one runs in the job's container, as the job made it".into()),
                false => Ok(()),
            }
        };
        let named = request
            .container_name
            .as_deref()
            .map(berth_core::job::ContainerName::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        // The job's container; or one of the step's own: an image other than the job's, or
        // a named container of the job's (pyxis's), whose image is the one it was created
        // of, whatever a later step names.
        let (image, container) = match named {
            Some(n) if job.request.container_name.as_ref().map(|j| &j.name) == Some(&n.name) => {
                use berth_core::job::NameMode;
                let why = match n.mode {
                    NameMode::Create => Some("exists ('create' makes a new one only)"),
                    NameMode::NoExec => {
                        Some("runs ('no_exec' would start it a second time over the same files)")
                    }
                    NameMode::Auto | NameMode::Exec => None,
                };
                if let Some(why) = why {
                    return Err(format!("container {} is job {id}'s own, which {why}: drop the flag to run the step in it", n.name));
                }
                in_jobs_container()?;
                (None, None)
            }
            Some(n) => {
                let of = match (job.containers.get(&n.name), &request.image) {
                    (Some(first), _) => first.clone(),
                    (None, Some(image)) => image.clone(),
                    (None, None) => {
                        return Err(format!(
                            "job {id} has no container named {}: create it with --container-image",
                            n.name
                        ))
                    }
                };
                (Some(self.step_image(job, &of, request)?), Some((n, of)))
            }
            // An image of its own, unless it is the job's (then the job's container does).
            None => match &request.image {
                Some(name) => {
                    let image = self.step_image(job, name, request)?;
                    let own = own_anyway
                        || !job
                            .image_squashfs
                            .as_deref()
                            .is_some_and(|f| same_image(Path::new(f), &image.squashfs));
                    (own.then_some(image), None)
                }
                None => {
                    in_jobs_container()?;
                    (None, None)
                }
            },
        };
        let image = match (&image, &job.image) {
            (None, Some(of)) if job.allocation && needs_own.iter().any(|(_, set)| *set) => {
                Some(self.step_image(job, of, request)?)
            }
            _ => image,
        };
        if let (Some((flag, _)), None) = (needs_own.iter().find(|(_, set)| *set), &image) {
            return Err(format!("{flag} is for a step's own container (--container-image or --container-name): this step would run in job {id}'s container, as the job made it"));
        }
        if let Some(path) = &request.container_save {
            if !path.starts_with('/') || path.ends_with('/') {
                return Err(format!(
                    "--container-save={path}: expected the absolute path of a file"
                ));
            }
        }
        let step_nodes: Vec<String> = shares.iter().map(|s| s.node.clone()).collect();
        let mut parts = Vec::with_capacity(shares.len());
        let mut held = Vec::new();
        for (share, &tasks) in shares.iter().zip(&per_node) {
            let cpus = share.cpu_ids.len() as u64;
            let wanted = u64::from(tasks) * u64::from(per_task);
            if wanted > cpus && !request.overcommit {
                return Err(format!(
                    "the step asks for {tasks} task(s) of {per_task} CPU(s) on node {}, more than job {id}'s {cpus} CPU(s) there: ask for fewer (-n, -c), or pass --overcommit",
                    share.node
                ));
            }
            // CPUs of its own, as Slurm's steps get (`srun -n1 ... &` in a loop, task
            // farming: as many run at once as the job has CPUs for, the others wait); a step
            // that overlaps the others takes the least held, and holds none against them.
            let held_by = |cpu: &u32| holding.get(&(share.node.as_str(), *cpu)).copied();
            let taken: Vec<u32> = match request.overlap {
                true => {
                    let mut order = share.cpu_ids.clone();
                    order.sort_by_key(|cpu| held_by(cpu).unwrap_or(0));
                    order
                }
                false => share
                    .cpu_ids
                    .iter()
                    .copied()
                    .filter(|cpu| held_by(cpu).is_none())
                    .collect(),
            };
            // Memory of its own there, out of the job's (`--mem`, `--mem-per-cpu`), held
            // as its CPUs are; none asked for (or 0): all of the job's, shared, none held.
            let memory = match (request.memory, request.memory_per_cpu) {
                (Some(0), _) | (None, None) | (None, Some(0)) => None,
                (Some(bytes), _) => Some(bytes),
                (None, Some(per_cpu)) => Some(per_cpu.saturating_mul(wanted)),
            };
            // (A job without a limit of its own has its node's memory.)
            let node_memory = self.nodes.get(&share.node).map(|n| n.res.memory);
            if let (Some(asked), Some(has)) = (memory, job.memory.or(node_memory)) {
                if asked > has {
                    let whose = match job.memory {
                        Some(_) => format!("job {id}'s"),
                        None => format!("the node's (job {id} asked for no memory)"),
                    };
                    return Err(format!(
                        "the step asks for {} of memory on node {}, more than {whose} {} there: ask for less (--mem, --mem-per-cpu), or leave it out to share the job's",
                        mebibytes(asked), share.node, mebibytes(has)
                    ));
                }
            }
            let memory_free = match (memory, job.memory) {
                (Some(asked), Some(has)) if !request.overlap => {
                    let held = holding_memory.get(share.node.as_str()).copied();
                    asked <= has.saturating_sub(held.unwrap_or(0))
                }
                _ => true,
            };
            let need = wanted.min(cpus) as usize;
            if taken.len() < need || !memory_free {
                use berth_agent::step::server::{MEMORY_BUSY, NODES_BUSY};
                return Ok(StepStart::Busy {
                    ended: self.steps_ended,
                    reason: match memory_free {
                        true => NODES_BUSY,
                        false => MEMORY_BUSY,
                    }
                    .into(),
                });
            }
            let taken = &taken[..need];
            if !request.overlap {
                held.push(berth_api::NodeCpus {
                    node: share.node.clone(),
                    cpu_ids: taken.to_vec(),
                    memory_bytes: memory,
                    gpu_ids: Vec::new(),
                });
            }
            // Each task pinned to its own share of those CPUs, where they divide exactly
            // enough (Slurm's --cpu-bind=cores); otherwise the tasks share the job's cpuset.
            let cpus: Vec<Vec<u32>> = if request.cpu_bind && wanted <= cpus {
                taken.chunks(per_task as usize).map(node::cores).collect()
            } else {
                vec![Vec::new(); tasks as usize]
            };
            let url = match self.nodes.get(&share.node).map(|n| &n.link) {
                _ if share.node == here => None,
                Some(Link::Remote(url)) => Some(url.clone()),
                Some(Link::Local(_)) => {
                    return Err(format!(
                        "node {} is the controller's own: steps reach it from its own step socket only, so start this step there",
                        share.node
                    ))
                }
                None => return Err(format!("node {} is gone", share.node)),
            };
            // A node elsewhere fetches the step's image from this controller (once).
            let image_source = match (&url, &image) {
                (Some(_), Some(image)) => Some(self.image_source(&image.squashfs, &share.node)?),
                _ => None,
            };
            parts.push(berth_agent::step::server::StepPart {
                node: share.node.clone(),
                url,
                tasks: cpus,
                gpus: share.gpu_ids.clone(),
                image_source,
                memory,
            });
        }
        // The job's container here, if it has one here (else all of the step runs elsewhere,
        // relayed by the asking agent); empty while the agent's answer with its runner is on
        // its way (the agent knows its runner).
        let cgroup = job
            .share(&here)
            .and_then(|s| s.runner)
            .map_or_else(String::new, |runner| NodeAgent::cgroup_name(id, runner));
        // The asking agent knows its job directories; this controller's own, too.
        let job_dir = match self.nodes.get(&here).map(|n| &n.link) {
            Some(Link::Local(agent)) => agent.job_dir(id),
            _ => PathBuf::new(),
        };
        let mut job = self.active.get_mut(&id).expect("looked up above");
        let container = container.map(|(named, of)| {
            job.containers.entry(named.name.clone()).or_insert(of);
            named
        });
        let step = job.steps.len() as u32;
        job.steps.push(berth_api::StepInfo {
            id: step,
            ntasks,
            command: request.argv.join(" "),
            start_time: now(),
            end_time: None,
            exit_code: None,
            signal: None,
            usage: None,
            node: here.clone(),
            cancelled: false,
            name: request.name.clone(),
            time_limit: request.time_limit,
            timed_out: false,
            nodes: step_nodes,
            cpu_ids: held,
        });
        let grant = berth_agent::step::server::StepGrant {
            step,
            user: job.user.clone(),
            cgroup,
            job_dir,
            node: here,
            parts,
            image,
            tools: None,
            container,
            kill_wait: self.settings.kill_wait,
        };
        let job = job.cloned();
        self.persist(&job).map_err(|e| e.message)?;
        Ok(StepStart::Granted(Box::new(grant)))
    }

    /// Removes `reference` from the cluster's store for `caller`: root any name or image,
    /// users the names of their own uploads (`users/USER/...`). An image that would go with
    /// it while unfinished jobs use it stays. The names removed are shared no more.
    pub fn remove_image(
        &mut self,
        caller: Caller,
        reference: &str,
    ) -> Result<berth_api::RemovedImage, ApiError> {
        let name = berth_image::Reference::parse(reference).map(|r| r.to_string());
        let user = user_of(caller.uid)?.user;
        let viewer = images::Viewer::new(&user, &self.image_shares);
        if caller.uid != 0 && !name.as_ref().is_ok_and(|n| viewer.owns(n)) {
            return Err(ApiError::forbidden(format!(
                "{reference}: you may remove only your own uploads, named users/{user}/..."
            )));
        }
        let record = self
            .cluster_image(reference, &user)
            .map_err(|message| ApiError {
                status: 404,
                message,
            })?;
        let by_name = name.as_ref().is_ok_and(|n| record.names.contains(n));
        if !by_name || record.names.len() == 1 {
            let file = self.images.squashfs(&record);
            let users: Vec<String> = self
                .active
                .values()
                .filter(|j| {
                    j.image_squashfs
                        .as_deref()
                        .is_some_and(|f| same_image(Path::new(f), &file))
                })
                .map(|j| j.id.to_string())
                .collect();
            if !users.is_empty() {
                return Err(ApiError {
                    status: 409,
                    message: format!(
                        "image {reference} is used by unfinished jobs ({}): remove it once they have ended, or cancel them",
                        users.join(", ")
                    ),
                });
            }
        }
        let deleted = self
            .images
            .remove(reference, |_| None)
            .map_err(ApiError::internal)?;
        berth_core::say!(
            "berth: uid {} removed {reference} from the cluster's store",
            caller.uid
        );
        let gone = match (by_name, name) {
            (true, Ok(name)) => vec![name],
            _ => record.names.clone(),
        };
        self.note_removals(&gone);
        self.image_files = None;
        for name in gone {
            if self.image_shares.contains_key(&name) {
                let unshared = berth_api::ImageShare {
                    name,
                    ..Default::default()
                };
                if let Err(e) = self.keep_share(unshared) {
                    berth_core::say!("berth: {}", e.message);
                }
            }
        }
        Ok(berth_api::RemovedImage {
            // As `berth image rm` says it of the caller's own store.
            untagged: deleted.is_empty() || record.names.len() > 1,
            deleted: deleted.iter().map(|d| d.to_string()).collect(),
        })
    }

    /// `berth image share`: shares the private image name `r.name` with `r.users` and the
    /// members of `r.groups`, or (`r.remove`) no longer with them. Its owner (the user it is
    /// named under) or root only; the users and groups must be in the user database.
    pub fn share_image(
        &mut self,
        caller: Caller,
        r: berth_api::ShareRequest,
    ) -> Result<berth_api::ImageShare, ApiError> {
        let name = berth_image::Reference::parse(&r.name)
            .map_err(|e| ApiError::bad(e.to_string()))?
            .to_string();
        let Some((owner, _)) = name.strip_prefix("users/").and_then(|n| n.split_once('/')) else {
            return Err(ApiError::bad(format!(
                "{name} is not a private image name (users/USER/...): every user may run it already"
            )));
        };
        let caller_name = user_of(caller.uid)?.user;
        if !images::Viewer::new(&caller_name, &self.image_shares).owns(&name) {
            return Err(ApiError::forbidden(format!(
                "{name} is {owner}'s: only they or root may share it"
            )));
        }
        self.images.resolve(&name).map_err(|_| ApiError {
            status: 404,
            message: format!(
                "no image {name} in the cluster's store: `berth image ls --cluster` lists those there"
            ),
        })?;
        for user in &r.users {
            berth_runtime::Identity::lookup(user, false)
                .ok()
                .filter(|id| id.user == *user)
                .ok_or_else(|| ApiError::bad(format!("no user {user} in the user database")))?;
        }
        for group in &r.groups {
            if !berth_runtime::Identity::group_exists(group) {
                return Err(ApiError::bad(format!(
                    "no group {group} in the group database"
                )));
            }
        }
        let mut share =
            self.image_shares
                .get(&name)
                .cloned()
                .unwrap_or_else(|| berth_api::ImageShare {
                    name: name.clone(),
                    ..Default::default()
                });
        if r.remove {
            share.users.retain(|u| !r.users.contains(u));
            share.groups.retain(|g| !r.groups.contains(g));
        } else {
            share.users.extend(r.users);
            share.groups.extend(r.groups);
        }
        for list in [&mut share.users, &mut share.groups] {
            list.sort();
            list.dedup();
        }
        self.keep_share(share.clone())?;
        berth_core::say!(
            "berth: uid {} shares {name} with users [{}] and groups [{}]",
            caller.uid,
            share.users.join(", "),
            share.groups.join(", ")
        );
        Ok(share)
    }

    /// Records whom `share.name` is shared with (with no one: the record goes).
    fn keep_share(&mut self, share: berth_api::ImageShare) -> Result<(), ApiError> {
        let key = format!("{IMAGE_SHARES_PREFIX}{}", share.name);
        if share.users.is_empty() && share.groups.is_empty() {
            self.store.delete(&key).map_err(ApiError::internal)?;
            self.image_shares.remove(&share.name);
        } else {
            let value = serde_json::to_vec(&share).expect("a share serialises");
            self.store.put(&key, &value).map_err(ApiError::internal)?;
            self.image_shares.insert(share.name.clone(), share);
        }
        Ok(())
    }

    /// What a list, pull or upload of the cluster's images needs, to run without the lock.
    pub fn gateway(&self) -> images::Gateway {
        images::Gateway::of(&self.settings, self.image_shares.clone())
    }

    /// The image `name` in the cluster's store that `user` may run ([`images::Viewer`]),
    /// or what is wrong and how users get one there.
    fn cluster_image(&self, name: &str, user: &str) -> Result<berth_image::ImageRecord, String> {
        let viewer = images::Viewer::new(user, &self.image_shares);
        let found = self
            .images
            .resolve(name)
            .and_then(|record| match viewer.sees(&record) {
                true => Ok(record),
                false => Err(berth_image::ImageError::NotFound(name.into())),
            });
        found.map_err(|e| match e {
            berth_image::ImageError::NotFound(_) => format!(
                "image {name} is not in the cluster's store: `berth image ls --cluster` lists those there, and `berth image pull --cluster REGISTRY/REPO:TAG` (or shifterimg pull) has the controller pull one"
            ),
            e => format!("image {name}: {e}"),
        })
    }

    /// The image `name` of a step in a container of its own, in partition `partition`: in the
    /// store, allowed there, with what else `request` gives that container.
    fn step_image(
        &self,
        job: &Job,
        name: &str,
        request: &berth_api::StepRequest,
    ) -> Result<berth_agent::step::StepImage, String> {
        let record = self.cluster_image(name, &job.user)?;
        let partition = &job.partition;
        if let Some(rules) = self.settings.partition(partition) {
            rules.allows_image(&berth_image::Reference::full_name(name))?;
        }
        Ok(berth_agent::step::StepImage {
            name: name.to_string(),
            squashfs: self.images.squashfs(&record),
            env: record.config.env.clone(),
            binds: request.binds.clone(),
            no_home: request.no_home,
            host_env: request.host_env.clone(),
            bind_policy: self.settings.binds.clone(),
            entrypoint: entrypoint(&record.config, request.container_entrypoint),
            remap_root: request.container_remap_root,
        })
    }

    /// The steps that node `node`'s agent ran and runs no more (`running`: those it runs):
    /// its agent was restarted, and their ends will never come. Each is ended, its status
    /// unknown (berth's own 125), so that its CPUs are free for the job's next steps. Only
    /// those begun before `settled`: a remote agent's steps begun within the last few
    /// seconds may not be among `running` yet, and are left for its next beat.
    fn end_lost_steps(&mut self, node: &str, running: &[(u64, u32)], settled: u64) {
        let lost: Vec<(u64, u32)> = self
            .active
            .running()
            .flat_map(|j| j.steps.iter().map(move |s| (j.id, s)))
            .filter(|(id, s)| {
                s.node == node
                    && s.end_time.is_none()
                    && s.start_time < settled
                    && !running.contains(&(*id, s.id))
            })
            .map(|(id, s)| (id, s.id))
            .collect();
        for (id, step) in lost {
            berth_core::say!("berth: step {id}.{step}: node {node}'s agent runs it no more (it was restarted): ended");
            self.end_step(berth_agent::daemon::StepEnd::failed(id, step));
        }
    }

    /// The end of a step a remote node's agent ran.
    pub fn end_step_from(
        &mut self,
        node: &str,
        end: berth_agent::daemon::StepEnd,
    ) -> Result<(), ApiError> {
        let id = end.job;
        let job = self.job(id)?;
        if job.share(node).is_none() {
            return Err(ApiError::forbidden(format!(
                "job {id} does not run on node {node}"
            )));
        }
        self.end_step(end);
        Ok(())
    }

    /// The end of a step: its exit status and usage go into the job's record, also when the
    /// job has ended meanwhile (its end kills the step).
    pub fn end_step(&mut self, end: berth_agent::daemon::StepEnd) {
        let (id, step) = (end.job, end.step);
        let mut job = match self.active.get(&id) {
            Some(j) => j.clone(),
            None => match self.job(id) {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let Some(s) = job.steps.get_mut(step as usize) else {
            return;
        };
        s.end_time = Some(end.end_time.unwrap_or_else(now));
        s.exit_code = Some(end.code);
        s.signal = end.signal;
        s.usage = end.usage;
        s.timed_out = end.timed_out;
        s.cancelled |= end.job_ended;
        self.steps_ended += 1;
        self.step_ended.notify_waiters();
        if let Err(e) = self.persist(&job) {
            berth_core::say!(
                "berth: cannot record the end of step {id}.{step}: {}",
                e.message
            );
        }
        if let Some(mut active) = self.active.get_mut(&id) {
            *active = job;
        }
    }
}

impl Controller {
    /// A job that only holds an allocation for one `berth step` from outside a job (srun's
    /// own allocation), submitted as `request.uid` with the step's flags; it ends with its step.
    pub fn allocate(
        &mut self,
        request: berth_api::AllocationRequest,
    ) -> Result<berth_api::SubmitResponse, String> {
        let caller = Caller {
            uid: request.uid,
            gid: request.gid,
        };
        let submitted = self
            .submit(caller, allocation_submission(request))
            .map_err(|e| e.message)?;
        let id = submitted.job_id;
        if submitted.jobs != 1 {
            for task in id..id + submitted.jobs {
                let _ = self.cancel(Caller { uid: 0, gid: 0 }, task, None, SignalTarget::Steps);
            }
            return Err(
                "an allocation for a step is one job: job arrays are for `berth submit`".into(),
            );
        }
        Ok(submitted)
    }

    /// Allocation `id`'s variables once it runs (`None`: it waits); an error saying how it
    /// ended once it has.
    pub fn allocation_state(&self, id: u64) -> Result<Option<Vec<(String, String)>>, String> {
        self.allocation_ended(id)?;
        Ok(self
            .active
            .get(&id)
            .filter(|j| j.state != State::Pending && !j.shares.is_empty())
            .map(|job| env::allocation_environment(job, &self.settings.cluster_name)))
    }

    /// How allocation `id` ended, as an error; `Ok` while it waits or runs.
    pub fn allocation_ended(&self, id: u64) -> Result<(), String> {
        if self.active.contains_key(&id) {
            return Ok(());
        }
        let job = self.job(id).map_err(|e| e.message)?;
        let reason = job.reason.map_or(String::new(), |r| format!(": {r}"));
        Err(match job.start_time {
            Some(_) => format!("job {id} ended {}{reason}", job.state.name()),
            None => format!(
                "job {id} ended {} before it started{reason}",
                job.state.name()
            ),
        })
    }

    /// Ends allocation `id` with the status of the command it was held for, at its owner's
    /// word: a client whose node agent's connection was lost (the controller restarted)
    /// ends it so, once the controller answers again.
    pub fn end_allocation(&mut self, caller: Caller, id: u64, code: i32) -> Result<(), ApiError> {
        let (allocation, running) = {
            let job = self.owned(caller, id, "end")?;
            let running = matches!(job.state, State::Running | State::Suspended);
            (job.allocation, running)
        };
        if !allocation || !running {
            return Err(ApiError::bad(format!("job {id} is no running allocation")));
        }
        self.release(id, Some(code));
        Ok(())
    }

    /// Ends allocation `id`: with its step's exit status, or cancelled (`None`: its client
    /// went away before the step ran).
    pub fn release(&mut self, id: u64, code: Option<i32>) {
        let root = Caller { uid: 0, gid: 0 };
        let (links, key) = (self.links_of(id), self.key.clone());
        let started = self.active.get(&id).map(|j| j.state != State::Pending);
        match (code, started) {
            (Some(code), Some(true)) => {
                let mut job = self.active.get_mut(&id).expect("looked up above");
                job.allocation_exit = Some(code);
                signal_runner(&links, &mut job, libc::SIGTERM, &key);
                let job = job.cloned();
                let _ = self.persist(&job);
            }
            (_, Some(_)) => {
                let _ = self.cancel(root, id, None, SignalTarget::Steps);
            }
            (_, None) => {}
        }
    }
}

/// Where other hosts reach a controller that listens on `listen`: its address, or its
/// host's name where it listens on every address.
pub fn reach(listen: Option<std::net::SocketAddr>) -> Option<String> {
    let addr = listen?;
    Some(match addr.ip().is_unspecified() {
        true => format!("https://{}:{}", berth_agent::node::hostname(), addr.port()),
        false => format!("https://{addr}"),
    })
}

/// Looks at the controller with `look` until it answers: again each time `signal` (one of
/// [`Controller::job_left`], [`Controller::job_moved`]) tells of a change, and at least
/// every second all the same. `None` once `deadline` has passed.
pub async fn watch<T>(
    shared: &Shared,
    signal: &Notify,
    deadline: Option<tokio::time::Instant>,
    mut look: impl FnMut(&Controller) -> Option<T>,
) -> Option<T> {
    loop {
        // Asked for before looking: a change after the look still wakes this wait.
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(answer) = look(&*shared.lock().await) {
            return Some(answer);
        }
        let again = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        let _ = tokio::time::timeout_at(deadline.map_or(again, |d| d.min(again)), notified).await;
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return None;
        }
    }
}

/// The controller as the local node agent's [`berth_agent::step::server::StepAuthority`].
/// With the cluster key, which signs its credentials to other nodes' agents for the parts of
/// steps, and the address other nodes reach this controller at.
pub struct StepGate(pub Shared, pub Arc<auth::Key>, pub String);

impl berth_agent::step::server::StepAuthority for StepGate {
    async fn begin(
        &self,
        uid: u32,
        job: u64,
        request: &berth_api::StepRequest,
    ) -> Result<StepStart, String> {
        let (mut grant, here) = {
            let mut c = self.0.lock().await;
            if let Some(agent) = c.local_agent() {
                agent.check_not_ending(job)?;
            }
            let grant = match c.begin_step(None, uid, job, request)? {
                StepStart::Granted(grant) => *grant,
                busy => return Ok(busy),
            };
            let here = match c.nodes.get(&grant.node).map(|n| &n.link) {
                Some(Link::Local(agent)) => Some(agent.clone()),
                _ => None,
            };
            (grant, here)
        };
        if let Some(agent) = here {
            agent.complete_grant(job, &mut grant).await?;
        }
        Ok(StepStart::Granted(Box::new(grant)))
    }

    async fn room(&self, ended: u64) {
        let signal = self.0.lock().await.step_ended.clone();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        watch(&self.0, &signal, Some(deadline), |c| {
            (c.steps_ended > ended).then_some(())
        })
        .await;
    }

    async fn end(&self, end: berth_agent::daemon::StepEnd) {
        // (Looked at without the controller's lock: the look may wait a moment.)
        let local = self.0.lock().await.local_agent();
        let end = match local {
            Some(agent) => end.seen_from(&agent).await,
            None => end,
        };
        self.0.lock().await.end_step(end)
    }

    async fn allocate(
        &self,
        request: berth_api::AllocationRequest,
    ) -> Result<berth_api::SubmitResponse, String> {
        self.0.lock().await.allocate(request)
    }

    async fn wait_running(&self, id: u64) -> Result<Vec<(String, String)>, String> {
        let moved = self.0.lock().await.job_moved();
        let state = watch(&self.0, &moved, None, |c| {
            c.allocation_state(id).transpose()
        });
        state.await.expect("no deadline")
    }

    async fn wait_ended(&self, id: u64) -> String {
        let left = self.0.lock().await.job_left();
        let ended = watch(&self.0, &left, None, |c| c.allocation_ended(id).err());
        ended.await.expect("no deadline")
    }

    fn signer(&self) -> berth_agent::step::relay::Signer {
        berth_agent::step::relay::Signer::new(&self.1, auth::CONTROLLER)
    }

    fn address(&self) -> String {
        self.2.clone()
    }

    async fn release(&self, id: u64, code: Option<i32>) {
        self.0.lock().await.release(id, code)
    }
}

/// An image's ENTRYPOINT when a job or step asks to run through it
/// (`--container-entrypoint`), else none.
fn entrypoint(config: &berth_image::ImageConfig, wanted: bool) -> Vec<String> {
    config
        .entrypoint
        .clone()
        .filter(|_| wanted)
        .unwrap_or_default()
}

/// What a script in an image that starts `#!/usr/bin/shifter /bin/bash` (Shifter's way of
/// running a whole script in the job's image) runs through: berth's `shifter` and the
/// words after it, which run the script in place (the image has no Shifter of its own).
/// Words are split at blanks.
fn shifter_interpreter(script: &str) -> Vec<String> {
    let first = script.lines().next().unwrap_or_default();
    let mut words = first
        .strip_prefix("#!")
        .unwrap_or_default()
        .split_whitespace();
    match words.next() {
        Some(w) if Path::new(w).file_name().is_some_and(|n| n == "shifter") => std::iter::once(
            format!("{}/shifter", berth_agent::runner::TOOLS_IN_CONTAINER),
        )
        .chain(words.map(String::from))
        .collect(),
        _ => Vec::new(),
    }
}

/// A script that holds a job's place (berth's own program, on the container's PATH, waits
/// for the SIGTERM that ends it): an allocation's while its one step runs, and a multi-node
/// job's container on each node but the batch host; `salloc --no-shell`'s job.
pub const HOLD_SCRIPT: &str = "#!/bin/sh\nexec berth internal hold\n";

/// Makes `starts` (each in a blocking thread of its own, which then waits for its runner).
pub fn start_local(shared: &Shared, starts: Vec<LocalStart>) {
    for start in starts {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || run_local(&shared, start));
    }
}

/// Starts a job on this process's own node and waits for its runner's end (its report that
/// the job's result is written: see `berth_agent::launcher`), then collects it. The pass
/// that its end calls for is made right here, in the same hold of the lock, and the first
/// of the starts it decides on this node is made by this thread (the others by threads of
/// their own): a job's end and the next job's start are one thread's work, not a chain of
/// threads that each must wait to be woken while the machine is busy running jobs.
fn run_local(shared: &Shared, first: LocalStart) {
    let handle = tokio::runtime::Handle::current();
    let mut next = Some(first);
    while let Some(LocalStart {
        id,
        node,
        agent,
        start,
    }) = next.take()
    {
        let started = match agent.start(start) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("cannot start the job on node {node}: {e}");
                handle.block_on(async {
                    shared
                        .lock()
                        .await
                        .finish(id, State::Failed, Some(reason), None)
                });
                return;
            }
        };
        let runner = started.pid;
        handle.block_on(async { shared.lock().await.started(id, &node, runner, None) });
        let status = started.wait();
        let result = agent.result(id);
        let mut starts = handle.block_on(async {
            let mut c = shared.lock().await;
            let recorded = c.in_one_write(|c| {
                c.collect(id, &node, runner, result, &status);
                if c.due {
                    c.pass(shared);
                }
            });
            // The run's files go once its end is in the store (see `collect_local`).
            if recorded {
                agent.forget_run(id, runner);
            }
            c.take_starts()
        });
        if !starts.is_empty() {
            next = Some(starts.remove(0));
        }
        start_local(shared, starts);
    }
}

/// A job's output and error file names (see [`job_file`]).
fn outputs(job: &Job, first_node: &str) -> (String, Option<String>) {
    (
        job_file(job, first_node, &job.request.output),
        job.request
            .error
            .as_deref()
            .map(|e| job_file(job, first_node, e)),
    )
}

/// One of a job's files (output, error, input), its pattern expanded (%j, %A, %a, %x, %u,
/// and %N as `first_node`) and a relative one taken from its working directory.
pub(crate) fn job_file(job: &Job, first_node: &str, pattern: &str) -> String {
    let ctx = berth_core::job::PatternContext {
        job_id: job.id,
        array_job_id: job.array_job_id,
        array_index: job.array_task_id,
        job_name: &job.request.name,
        user: &job.user,
        first_node,
    };
    let expanded = berth_core::job::expand_pattern(pattern, &ctx);
    match expanded.starts_with('/') {
        true => expanded,
        false => format!("{}/{expanded}", job.workdir),
    }
}

/// An LSF condition over the terms `jobs` as the scheduler takes it (names are resolved at
/// submission): a term that counts an array's elements is a count.
pub fn sched_condition(c: &Condition, jobs: &[JobDependency]) -> sched::Condition {
    let all = |cs: &[Condition]| cs.iter().map(|c| sched_condition(c, jobs)).collect();
    match c {
        Condition::Term(t) => match jobs.get(*t as usize).and_then(|j| j.count) {
            None => sched::Condition::Term(*t),
            Some(c) => sched::Condition::Count(
                *t,
                sched::Count {
                    of: c.of,
                    op: c.op,
                    n: c.n,
                },
            ),
        },
        // (Never left in a stored job: resolve_named makes each the terms of its jobs.)
        Condition::Name(_) => sched::Condition::All(Vec::new()),
        Condition::All(cs) => sched::Condition::All(all(cs)),
        Condition::Any(cs) => sched::Condition::Any(all(cs)),
        Condition::Not(c) => sched::Condition::Not(Box::new(sched_condition(c, jobs))),
    }
}

/// The ids (a range) a task with array index `index` (`None`: not an array) waits for
/// through `d`, whose target array has `tasks` (index, id): every task, one task, or
/// (`aftercorr`, only ever in an array, and LSF's `42[*]` from one) the task with the same
/// index, if it has one.
fn depends_on(
    d: &berth_core::job::JobDependency,
    tasks: Option<&[(u32, u64)]>,
    index: Option<u32>,
) -> Option<(berth_core::job::DependencyKind, u64, u64)> {
    use berth_core::job::DependencyKind::AfterCorr;
    let Some(tasks) = tasks else {
        return Some((d.kind, d.job, d.job));
    };
    let one = match (d.kind, d.each) {
        (AfterCorr, _) | (_, true) => index,
        _ => d.array_index,
    };
    match one {
        None => Some((d.kind, tasks.first()?.1, tasks.last()?.1)),
        Some(i) => tasks
            .iter()
            .find(|(index, _)| *index == i)
            .map(|&(_, id)| (d.kind, id, id)),
    }
}

/// What a submission's command calls a partition and a time limit's option: LSF's and PBS's
/// users name queues, and bsub's -W or qsub's walltime.
fn words_of(request: &JobRequest) -> (&'static str, &'static str) {
    match (request.lsf, request.pbs) {
        (true, _) => ("queue", "-W"),
        (_, true) => ("queue", "-l walltime="),
        _ => ("partition", "--time"),
    }
}

/// Why a job can never run in `partition`, in words: what it asks of each node and the most
/// that any node of the partition has, e.g. "it asks for 1 node with 1 CPU, 2 GPUs each;
/// partition normal has 1 node, with at most 16 CPUs, 135.1 GB of memory and 1 GPU".
/// In the words of the submission's command (`submitted`): a queue and bsub's -W or qsub's
/// walltime for LSF's and PBS's users.
fn never_fits(
    cluster: &sched::ClusterView,
    partition: &str,
    request: &sched::JobRequest,
    reason: sched::Reason,
    submitted: &JobRequest,
) -> String {
    let (place, time) = words_of(submitted);
    // Its time, where that is what does not fit.
    if reason == sched::Reason::PartitionTimeLimit {
        let max = cluster.partition(partition).and_then(|p| p.max_time);
        let asks = request.time_limit.map_or("no time limit".into(), |t| {
            berth_core::job::format_duration(t)
        });
        return format!(
            "the job can never run here (PartitionTimeLimit): it asks for {asks}; {place} {partition} allows {}: give a shorter {time}, or another {place}",
            max.map_or("less".into(), berth_core::job::format_duration)
        );
    }
    let count = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut asks = count(
        u64::from(request.layout(request.nodes_min).0 * request.cpus_per_task),
        "CPU",
    );
    if request.memory_per_node > 0 {
        asks += &format!(
            ", {} of memory",
            berth_core::quantity::human_size(request.memory_per_node)
        );
    }
    if request.gpus_per_node > 0 {
        asks += &format!(", {}", count(request.gpus_per_node.into(), "GPU"));
    }
    let nodes: Vec<&sched::NodeView> = cluster.partition(partition).map_or(Vec::new(), |p| {
        cluster
            .nodes
            .iter()
            .filter(|n| p.nodes.contains(&n.name))
            .collect()
    });
    let most = |f: fn(&sched::NodeView) -> u64| nodes.iter().map(|n| f(n)).max().unwrap_or(0);
    format!(
        "the job can never run here ({reason}): it asks for {} with {asks} each; {place} \
         {partition} has {}, with at most {}, {} of memory and {}",
        count(request.nodes_min.into(), "node"),
        count(nodes.len() as u64, "node"),
        count(most(|n| n.cpus.into()), "CPU"),
        berth_core::quantity::human_size(most(|n| n.memory)),
        count(most(|n| n.gpus.into()), "GPU"),
    )
}

/// What is wrong, in words, with a job's choice of nodes (`--constraint`, `--nodelist`,
/// `--exclude`) in `partition`: a named node that is not there or that the job may not have,
/// or no node left to it at all. (Whether they are big enough is `fits_ever`'s question.)
fn choice_in(
    cluster: &sched::ClusterView,
    partition: &str,
    choice: &sched::NodeChoice,
) -> Result<(), ApiError> {
    let Some(part) = cluster.partition(partition) else {
        return Ok(());
    };
    let members: Vec<&sched::NodeView> = cluster
        .nodes
        .iter()
        .filter(|n| part.nodes.contains(&n.name))
        .collect();
    let described = || {
        members
            .iter()
            .map(|n| format!("{} [{}]", n.name, n.features.join(",")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // (Slurm's "Invalid node name specified": a name no node has is a typo.)
    if let Some(name) =
        (choice.excluded.iter()).find(|x| !cluster.nodes.iter().any(|n| n.name == **x))
    {
        let nodes: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        return Err(ApiError::bad(format!(
            "node {name} (--exclude) is no node of this cluster, whose nodes are {}",
            nodes.join(", ")
        )));
    }
    for name in &choice.required {
        match members.iter().find(|n| n.name == *name) {
            None => {
                return Err(ApiError::bad(format!(
                    "node {name} (--nodelist) is not in partition {partition}, whose nodes (and features) are {}",
                    described()
                )))
            }
            Some(n) if !choice.allows(n) => {
                return Err(ApiError::bad(format!(
                    "node {name} is named (--nodelist) but the job may not have it (--exclude, or --constraint: it has [{}])",
                    n.features.join(",")
                )))
            }
            Some(_) => {}
        }
    }
    if !members.iter().any(|n| choice.allows(n)) {
        let mut by = Vec::new();
        if !choice.features.is_empty() {
            by.push("--constraint".to_string());
        }
        if !choice.excluded.is_empty() {
            by.push(format!("--exclude {}", choice.excluded.join(",")));
        }
        if !choice.candidates.is_empty() {
            by.push(format!("-m {}", choice.candidates.join(",")));
        }
        return Err(ApiError::bad(format!(
            "no node of partition {partition} is left to the job by its {}; its nodes (and features) are {}",
            by.join(" and "),
            described()
        )));
    }
    Ok(())
}

/// The directive family whose options a request's are in.
fn family_of(syntax: berth_api::OptionSyntax) -> Family {
    match syntax {
        berth_api::OptionSyntax::Berth | berth_api::OptionSyntax::Sbatch => Family::Berth,
        berth_api::OptionSyntax::Bsub => Family::Lsf,
        berth_api::OptionSyntax::Qsub => Family::Pbs,
    }
}

/// A negative nice raises a job's priority over others': root's to give (as in Slurm).
fn refuse_negative_nice(caller: &Caller, nice: i32) -> Result<(), ApiError> {
    if nice < 0 && caller.uid != 0 {
        return Err(ApiError::forbidden(format!(
            "--nice={nice}: only root may give a job a negative nice (a higher priority)"
        )));
    }
    Ok(())
}

/// How far this machine's local time is ahead of UTC at `t` (Unix seconds).
pub fn utc_offset(t: u64) -> i64 {
    let t = t as libc::time_t;
    // SAFETY: localtime_r fills the zeroed struct it is given (glibc's reads the time zone
    // once, from TZ or /etc/localtime).
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

/// The links to the agents of a job's nodes, by node.
type Links = BTreeMap<String, Link>;

/// The job a submission asks for: the command line over the submitter's SBATCH_* variables
/// (sbatch's and berth's alone), over the script's directives. (The client reads it too, for
/// the image files it names.)
pub fn parse_submission(req: &SubmitRequest) -> Result<JobRequest, ApiError> {
    use berth_api::OptionSyntax;
    let cli = match req.syntax {
        OptionSyntax::Berth | OptionSyntax::Sbatch => berth_core::job::parse_args(&req.args)
            .and_then(|cli| {
                Ok(JobOptions::merge(
                    berth_core::job::parse_env(&req.env)?,
                    cli,
                ))
            }),
        other => parse_args_as(family_of(other), &req.args),
    }
    .map_err(|e| ApiError::bad(e.to_string()))?;
    // (bsub's is its command line as typed, LSF's default name; the others', their script's
    // file name.)
    let default_name = match req.syntax {
        OptionSyntax::Bsub => req.script_name.clone(),
        _ => Path::new(&req.script_name)
            .file_name()
            .map_or("job".into(), |n| n.to_string_lossy().into_owned()),
    };
    let mut request = match req.syntax {
        OptionSyntax::Qsub => JobRequest::from_qsub_script(&req.script, cli, &default_name),
        OptionSyntax::Sbatch => JobRequest::from_sbatch_script(&req.script, cli, &default_name),
        _ => JobRequest::from_script(&req.script, cli, &default_name),
    }
    .map_err(|e| ApiError::bad(format!("{}: {e}", req.script_name)))?;
    request.lsf = req.syntax == OptionSyntax::Bsub;
    request.export_file_env = req.export_env.clone().unwrap_or_default();
    Ok(request)
}

/// The job an allocation is: one that holds its place ([`HOLD_SCRIPT`]), named after the
/// step's command (as srun names its job), with the step's options.
pub fn allocation_submission(request: berth_api::AllocationRequest) -> SubmitRequest {
    SubmitRequest {
        script: HOLD_SCRIPT.into(),
        // (bsub -I's command is `/bin/sh -c LINE`: named by the line, as LSF names it.)
        script_name: match request.syntax {
            berth_api::OptionSyntax::Bsub => request.argv.last(),
            _ => request.argv.first(),
        }
        .cloned()
        .unwrap_or_else(|| "step".into()),
        args: request.args,
        syntax: request.syntax,
        script_args: Vec::new(),
        script_path: None,
        cwd: request.cwd,
        host: request.host,
        env: request.env,
        image_files: request.image_files,
        umask: None,
        export_env: None,
    }
}

/// Refuses a user's raise (or removal) of job `id`'s time limit `current` to `limit`, as
/// Slurm's does: only root may (a job without one has none to raise: its owner may give it
/// one).
fn only_root_raises(
    caller: Caller,
    id: u64,
    current: Option<u64>,
    limit: u64,
) -> Result<(), ApiError> {
    let removed = limit == berth_core::job::UNLIMITED_TIME;
    match current.filter(|&c| (removed || limit > c) && caller.uid != 0) {
        Some(current) => Err(ApiError::forbidden(format!(
            "job {id}'s time limit is {}: only root may raise it or remove it (you may lower it)",
            berth_core::job::format_duration(current)
        ))),
        None => Ok(()),
    }
}

/// Refuses to requeue a job submitted with `--no-requeue`, as Slurm's does.
fn no_requeue(job: &Job) -> Result<(), ApiError> {
    match job.request.requeue {
        Some(false) => Err(ApiError::bad(format!(
            "job {} was submitted with --no-requeue: it is not requeued (submit it again)",
            job.id
        ))),
        _ => Ok(()),
    }
}

/// The image id (hex) of an image store's squashfs file (`<store>/images/<id>/image.sqfs`).
fn image_id(sqfs: &Path) -> Option<String> {
    sqfs.parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
}

/// A memory size as srun takes it, in MiB (`512M`), rounded up.
fn mebibytes(bytes: u64) -> String {
    format!("{}M", bytes.div_ceil(1 << 20))
}

/// Whether two squashfs files of image stores are one image's: the same id, whichever
/// controller's store a job's path was made in (they fail over).
fn same_image(a: &Path, b: &Path) -> bool {
    image_id(a) == image_id(b)
}

/// The memory `r` asks for on each of its nodes, bytes (0: the node's whole memory, which the
/// pass gives it).
fn memory_per_node(r: &JobRequest) -> u64 {
    use berth_core::job::Memory;
    // The most on a node, on its fewest nodes.
    let per_node_tasks = r.ntasks.div_ceil(r.nodes.min.max(1));
    match r.memory {
        Some(Memory::PerNode(b)) | Some(Memory::PerJob(b)) => b,
        Some(Memory::PerCpu(b)) => b * r.cpus_on_node(per_node_tasks),
        Some(Memory::PerGpu(b)) => b * u64::from(r.gpus_on_node(per_node_tasks, r.nodes.min)),
        Some(Memory::WholeNode) | None => 0,
    }
}

/// Sends `sig` to a running job's script through its runner on the batch host, which
/// forwards it to the job (a SIGKILL of the runner takes the job with it); the job's end
/// stops its containers on the other nodes. A suspended job is thawed first: frozen, it could
/// not act on the signal.
fn signal_runner(links: &Links, job: &mut Job, sig: i32, key: &Arc<auth::Key>) {
    signal_job(links, job, sig, None, key)
}

/// Cancels running job `job`: SIGTERM to its steps' tasks on every node and to its batch
/// shell through the batch host's runner, which says in the job's error file that the job
/// was cancelled, `why` after slurmstepd's `CANCELLED AT TIME` (see [`NodeAgent::cancel`]):
/// not a PBS or LSF job's, whose systems say nothing there. A suspended job is thawed first.
fn cancel_runner(links: &Links, job: &mut Job, why: &str, key: &Arc<auth::Key>) {
    job.stop_sent = Some(std::time::Instant::now());
    // Its steps' tasks get theirs now, on every node at once, as Slurm's do (not once the
    // batch shell has ended, or the step they belong to was ended for it).
    signal_job(links, job, libc::SIGTERM, Some(SignalTarget::Steps), key);
    let batch = job.shares.first();
    if let Some((link, runner)) = batch.and_then(|s| Some((links.get(&s.node)?, s.runner?))) {
        signal_on(link, job.id, runner, libc::SIGTERM, None, Some(why), key);
    }
}

/// A suspended job is thawed before it is signalled (its processes act on it then).
fn thaw_to_signal(links: &Links, job: &mut Job, key: &Arc<auth::Key>) {
    if job.state == State::Suspended {
        let _ = freeze(links, job, false, key);
        job.state = State::Running;
    }
}

/// Sends `sig` to the processes of running job `job` that `target` names (see
/// [`NodeAgent::signal_to`]): the batch shell's, through the batch host's runner (`None`,
/// `Batch`), or its steps' or all on every node. A suspended job is thawed first.
fn signal_job(
    links: &Links,
    job: &mut Job,
    sig: i32,
    target: Option<SignalTarget>,
    key: &Arc<auth::Key>,
) {
    thaw_to_signal(links, job, key);
    let on_every_node = !matches!(target, None | Some(SignalTarget::Batch));
    let shares = match on_every_node {
        true => &job.shares[..],
        false => &job.shares[..job.shares.len().min(1)],
    };
    for share in shares {
        if let (Some(link), Some(runner)) = (links.get(&share.node), share.runner) {
            signal_on(link, job.id, runner, sig, target, None, key);
        }
    }
}

/// Sends `sig` to job `id`'s runner on one node.
fn signal_one(link: &Link, id: u64, runner: u32, sig: i32, key: &Arc<auth::Key>) {
    signal_on(link, id, runner, sig, None, None, key)
}

/// Sends `sig` to job `id`'s processes on one node that `target` names (`None`: to its
/// runner, which passes it to the batch shell); `cancel`: SIGTERM to its runner, cancelling
/// the job, and why (see [`cancel_runner`]).
fn signal_on(
    link: &Link,
    id: u64,
    runner: u32,
    sig: i32,
    target: Option<SignalTarget>,
    cancel: Option<&str>,
    key: &Arc<auth::Key>,
) {
    match (link, cancel) {
        (Link::Local(agent), Some(why)) => agent.cancel(id, runner, why),
        (Link::Local(agent), None) => agent.signal_to(id, runner, sig, target),
        (Link::Remote(url), _) => {
            let request = berth_agent::daemon::RunnerSignal {
                job: id,
                runner,
                signal: sig,
                target,
                cancel: cancel.map(String::from),
            };
            // (The job's end comes back through the agent's report.)
            let what = format!("signal job {id}");
            let stop = cancel.is_some();
            let sent = post_unawaited(
                url.clone(),
                "/v1/agent/signal",
                Arc::clone(key),
                request,
                what,
            );
            // A cancel that did not reach the node goes again at its next heartbeat.
            if stop {
                tokio::spawn(async move {
                    if !sent.await.unwrap_or(false) {
                        lock(&UNSENT_STOPS).insert(id);
                    }
                });
            }
        }
    }
}

/// Posts `request` to the agent at `url` at `path` without waiting for its answer (what it
/// does comes back through the agent's reports); a failure is said as what could not be
/// done, `what`.
fn post_unawaited<T: serde::Serialize + Send + 'static>(
    url: String,
    path: &'static str,
    key: Arc<auth::Key>,
    request: T,
    what: String,
) -> tokio::task::JoinHandle<bool> {
    tokio::task::spawn_blocking(move || {
        let sent: Result<(), String> = berth_agent::http::post(
            &url,
            path,
            (&key, auth::CONTROLLER),
            &request,
            AGENT_TIMEOUT,
        );
        if let Err(e) = &sent {
            berth_core::say!("berth: cannot {what}: {e}");
        }
        sent.is_ok()
    })
}

/// Jobs whose cancel (or requeue) did not reach a node's agent: [`Controller::stop_again`]
/// sends it again at the node's next heartbeat.
static UNSENT_STOPS: std::sync::Mutex<BTreeSet<u64>> = std::sync::Mutex::new(BTreeSet::new());

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running job's usage, to be read from its nodes' agents outside the controller's lock.
pub struct UsageQuery {
    links: Links,
    job: Job,
    key: Arc<auth::Key>,
}

impl Controller {
    /// Job `id`'s batch script, for its owner or root; an allocation (salloc's, srun's) has
    /// none.
    pub fn script(&self, caller: Caller, id: u64) -> Result<String, ApiError> {
        let job = self.job(id)?;
        if caller.uid != 0 && caller.uid != job.uid {
            return Err(ApiError::forbidden(format!(
                "job {id} belongs to {}: only its owner or root may read its script",
                job.user
            )));
        }
        if job.allocation {
            return Err(ApiError {
                status: 404,
                message: format!(
                    "job {id} is an allocation (salloc, srun, an interactive job): it has no batch script"
                ),
            });
        }
        Ok(job.script.to_string())
    }

    /// `berth usage` (sstat): checks that `caller` may see running job `id`'s usage and
    /// says where to read it.
    pub fn usage(&mut self, caller: Caller, id: u64) -> Result<UsageQuery, ApiError> {
        let links = self.links_of(id);
        let key = self.key.clone();
        let job = self.owned(caller, id, "read the usage of")?;
        if !matches!(job.state, State::Running | State::Suspended) {
            return Err(ApiError::bad(format!(
                "job {id} is {}: only a running job's usage is read as it goes (`berth history` has what a job used once it ended)",
                job.state.name()
            )));
        }
        Ok(UsageQuery {
            links,
            job: job.clone(),
            key,
        })
    }
}

impl UsageQuery {
    /// Asks each of the job's nodes (remote ones over HTTP, on a blocking thread).
    pub async fn read(self) -> Result<berth_api::JobUsage, ApiError> {
        tokio::task::spawn_blocking(move || {
            let id = self.job.id;
            let nodes = each_runner(
                &self.links,
                &self.job,
                &self.key,
                |agent, runner, _| agent.usage(id, runner),
                "/v1/agent/usage",
                |runner, _| berth_agent::daemon::RunnerUsage { job: id, runner },
            )?;
            Ok(berth_api::JobUsage {
                job: id,
                array_job_id: self.job.array_job_id,
                array_task_id: self.job.array_task_id,
                elapsed_seconds: now().saturating_sub(self.job.start_time.unwrap_or_else(now)),
                nodes: self
                    .job
                    .shares
                    .iter()
                    .zip(nodes)
                    .map(|(share, usage)| berth_api::NodeUsage {
                        node: share.node.clone(),
                        tasks: share.tasks,
                        ..usage
                    })
                    .collect(),
            })
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    }
}

/// A suspend or resume in progress: the job as it was, and its nodes' links.
pub struct Freeze {
    links: Links,
    job: Job,
    suspend: bool,
    /// Asked by root: an administrator's suspend, which only root resumes.
    by_root: bool,
    key: Arc<auth::Key>,
}

impl Freeze {
    /// What a suspend (resume) makes of a job, in words.
    fn done(suspend: bool) -> &'static str {
        if suspend {
            "suspended"
        } else {
            "resumed"
        }
    }

    /// Freezes (thaws) the job on all its nodes, on a blocking thread (remote nodes are HTTP
    /// calls, a few seconds at most each). Should one node fail, those already done are put
    /// back as they were.
    pub async fn apply(&self) -> Result<(), ApiError> {
        let (links, job, suspend, key) = (
            self.links.clone(),
            self.job.clone(),
            self.suspend,
            self.key.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let done = freeze(&links, &job, suspend, &key);
            if done.is_err() {
                let _ = freeze(&links, &job, !suspend, &key);
            }
            done
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    }
}

/// The time limit of job `job`'s runner on a node: the job's on its batch host; on the
/// others, whose containers end with the script (the controller stops them), a minute after
/// its end (its grace after its limit's signal), for a controller that is gone.
fn node_limit(limit: u64, batch_host: bool, job: &Job, kill_wait: u64) -> u64 {
    match batch_host {
        true => limit,
        false => limit + berth_agent::runner::limit_grace(job.request.lsf, kill_wait) + 60,
    }
}

/// Gives running job `job` the time limit `limit` on each of its nodes, whose runners
/// enforce it (see [`node_limit`]).
fn set_limit(
    links: &Links,
    job: &Job,
    limit: u64,
    kill_wait: u64,
    key: &Arc<auth::Key>,
) -> Result<(), ApiError> {
    each_runner(
        links,
        job,
        key,
        |agent, runner, batch_host| {
            agent.set_limit(
                job.id,
                runner,
                node_limit(limit, batch_host, job, kill_wait),
            )
        },
        "/v1/agent/limit",
        |runner, batch_host| berth_agent::daemon::RunnerLimit {
            job: job.id,
            runner,
            seconds: node_limit(limit, batch_host, job, kill_wait),
        },
    )
    .map(drop)
}

/// Freezes or thaws every process of a running job, on all its nodes.
fn freeze(links: &Links, job: &Job, frozen: bool, key: &Arc<auth::Key>) -> Result<(), ApiError> {
    each_runner(
        links,
        job,
        key,
        |agent, runner, _| agent.freeze(job.id, runner, frozen),
        "/v1/agent/freeze",
        |runner, _| berth_agent::daemon::RunnerFreeze {
            job: job.id,
            runner,
            frozen,
        },
    )
    .map(drop)
}

/// Acts on the runner of running job `job` on each of its nodes: `local` with this
/// process's own agent, else `path` on the node's agent with `body`; each gets the runner
/// and whether its node is the batch host. A short call to each agent, while the job's
/// record waits for the answers, which come back node by node.
fn each_runner<B: serde::Serialize, R: serde::de::DeserializeOwned>(
    links: &Links,
    job: &Job,
    key: &Arc<auth::Key>,
    local: impl Fn(&NodeAgent, u32, bool) -> Result<R, String>,
    path: &str,
    body: impl Fn(u32, bool) -> B,
) -> Result<Vec<R>, ApiError> {
    let mut answers = Vec::with_capacity(job.shares.len());
    for (i, share) in job.shares.iter().enumerate() {
        let batch_host = i == 0;
        let runner = share.runner.ok_or_else(|| {
            ApiError::bad(format!(
                "job {} is still starting on node {}: try again in a moment",
                job.id, share.node
            ))
        })?;
        let answer = match links.get(&share.node) {
            Some(Link::Local(agent)) => local(agent, runner, batch_host),
            Some(Link::Remote(url)) => tokio::task::block_in_place(|| {
                berth_agent::http::post(
                    url,
                    path,
                    (key, auth::CONTROLLER),
                    &body(runner, batch_host),
                    AGENT_TIMEOUT,
                )
            }),
            None => Err(format!("job {}'s node {} is gone", job.id, share.node)),
        }
        .map_err(ApiError::internal)?;
        answers.push(answer);
    }
    Ok(answers)
}

/// Takes the CPUs and GPUs the plan gives a job on each of its nodes: all of them, or none
/// (if a node lacks what the plan counted on).
fn take_shares(
    nodes: &mut BTreeMap<String, NodeEntry>,
    allocs: &[sched::NodeAlloc],
) -> Option<Vec<job::Share>> {
    let mut shares: Vec<job::Share> = Vec::with_capacity(allocs.len());
    for alloc in allocs {
        let taken = nodes.get_mut(&alloc.node).and_then(|n| {
            let cpu_ids = n.res.cpus.take(alloc.cpus)?;
            match n.res.gpus.take(alloc.gpus) {
                Some(gpu_ids) => Some((cpu_ids, gpu_ids)),
                None => {
                    n.res.cpus.release(&cpu_ids);
                    None
                }
            }
        });
        let Some((cpu_ids, gpu_ids)) = taken else {
            for s in &shares {
                let n = nodes.get_mut(&s.node).expect("taken from it just now");
                n.res.cpus.release(&s.cpu_ids);
                n.res.gpus.release(&s.gpu_ids);
            }
            return None;
        };
        shares.push(job::Share {
            node: alloc.node.clone(),
            cpu_ids,
            gpu_ids,
            tasks: alloc.tasks,
            ..Default::default()
        });
    }
    Some(shares)
}

/// What the scheduler makes of a dependency's kind (`aftercorr` is `afterok` on the task of
/// the same index, which the dependency's range names).
pub fn sched_kind(kind: berth_core::job::DependencyKind) -> sched::DepKind {
    use berth_core::job::DependencyKind as K;
    match kind {
        K::After => sched::DepKind::After,
        K::AfterOk | K::AfterCorr => sched::DepKind::AfterOk,
        K::AfterNotOk => sched::DepKind::AfterNotOk,
        K::AfterAny => sched::DepKind::AfterAny,
    }
}
