//! `berth agent`: a node's agent in a process of its own, on its own host, for a controller
//! elsewhere (`berth controller --listen`). Both sides speak HTTP with short-lived credentials
//! signed with the cluster key they share ([`crate::auth`]): a process that does not hold the
//! key can neither register as a node nor start anything on an agent.
//!
//! ```text
//! agent ──POST /v1/agents/register (every few seconds: the heartbeat)──► controller
//! controller ──POST /v1/agent/start (JobStart) | /signal | /freeze──► agent
//! agent ──POST /v1/agents/ended (JobEnded), until the controller takes it──► controller
//! ```

use crate::auth::{self, Key};
use crate::node::{JobStart, NodeAgent, Resources};
use crate::runner::JobResult;
use crate::runs::Refused;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `POST /v1/agents/register` (controller): this node, and where its agent listens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// `https://HOST:PORT`, as the controller reaches the agent.
    pub url: String,
    pub resources: Resources,
    /// The jobs whose runners run here now, `(job, runner)`.
    #[serde(default)]
    pub running: Vec<(u64, u32)>,
    /// How busy the machine is now.
    #[serde(default)]
    pub health: Option<crate::node::Health>,
    /// The id of the node's job files ([`NodeAgent::files_id`]): runs recorded with another
    /// one are gone. `None` from an agent before 2026-12-04, and in the store's record.
    #[serde(default)]
    pub files_id: Option<String>,
    /// The runs, `(job, run)`, a controller asked this agent to void and whose starts it had
    /// not taken: they never run here ([`crate::runs`]). `None` from an agent before
    /// 2026-12-06, and in the store's record.
    #[serde(default)]
    pub voided: Option<Vec<(u64, u32)>>,
    /// The images in the node's cache, by their squashfs files' SHA-256 (hex): other nodes
    /// may fetch them from its agent.
    #[serde(default)]
    pub images: Vec<String>,
    /// The steps, `(job, step)`, this agent's step socket runs now: a step of this node the
    /// controller has running and this agent does not (it was restarted) has ended. `None`
    /// from an agent before 2026-12-06, and in the store's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<(u64, u32)>>,
}

/// The controller's answer to a registration: the runners this node must stop, those of jobs
/// the controller no longer has running here (it ended them while the node was silent).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RegistrationAnswer {
    pub stop: Vec<(u64, u32)>,
    /// Images of the node's cache (their files' SHA-256) that the cluster's store no longer
    /// has: the agent deletes their files (a job that still runs in one keeps its mount).
    #[serde(default)]
    pub forget: Vec<String>,
    /// Seconds until the next registration: the controller's node timeout, a third of it.
    pub beat: u64,
    /// Runs, `(job, run)`, the controller has running on this node with no runner here:
    /// the agent voids those whose starts it has not taken, and says so in its next
    /// registration, after which the controller queues their jobs again.
    #[serde(default)]
    pub void: Vec<(u64, u32)>,
    /// The controller's node timeout, seconds: it takes a node it has not heard from for that
    /// long for down. `None` from a controller before 2026-12-06.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// `POST /v1/agents/ended` (controller): a runner ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobEnded {
    pub job: u64,
    pub runner: u32,
    /// Which run of the job it was ([`crate::JobLaunch::run`]); `None` where the agent does
    /// not know (one before 2026-12-06, or a run an earlier agent process started before
    /// then).
    #[serde(default)]
    pub run: Option<u32>,
    /// What the runner wrote; `None`: it wrote nothing (it was killed).
    pub result: Option<JobResult>,
    /// How the runner process ended, in words.
    pub status: String,
}

/// The answer to `POST /v1/agent/start`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StartAnswer {
    pub runner: u32,
    /// The id of the node's job files the run's are among ([`NodeAgent::files_id`]).
    #[serde(default)]
    pub files_id: Option<String>,
}

/// `POST /v1/agent/signal`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunnerSignal {
    pub job: u64,
    pub runner: u32,
    pub signal: i32,
    /// Which of the job's processes here (`None`: its runner's, which passes it to the
    /// batch shell).
    #[serde(default)]
    pub target: Option<berth_api::SignalTarget>,
    /// The job is being cancelled (`Some`), and why, after slurmstepd's `CANCELLED AT
    /// TIME` (`""`, or ` DUE TO JOB REQUEUE`): its runner says so in the job's error file
    /// ([`NodeAgent::cancel`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<String>,
}

/// `POST /v1/agent/steps/cancel`: one step this node's agent runs, to end (`berth cancel
/// JOB.STEP`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepCancel {
    pub job: u64,
    pub step: u32,
    /// A signal for its tasks instead of its end (`scancel -s SIG JOB.STEP`).
    #[serde(default)]
    pub signal: Option<i32>,
}

/// `POST /v1/agent/limit`: a running job's new time limit, seconds from its start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunnerLimit {
    pub job: u64,
    pub runner: u32,
    pub seconds: u64,
}

/// `POST /v1/agent/usage`: what a running job has used on this node so far.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunnerUsage {
    pub job: u64,
    pub runner: u32,
}

/// `POST /v1/agent/freeze`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunnerFreeze {
    pub job: u64,
    pub runner: u32,
    pub frozen: bool,
}

/// `POST /v1/agents/steps/begin` (controller): a `berth step` in a job on this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepBegin {
    pub uid: u32,
    pub job: u64,
    pub request: berth_api::StepRequest,
}

/// `POST /v1/agents/steps/end` (controller).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepEnd {
    pub job: u64,
    pub step: u32,
    pub code: i32,
    /// The signal that gave `code` (128 + N), where one did.
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub usage: Option<berth_api::StepUsage>,
    /// It was ended at its time limit.
    #[serde(default)]
    pub timed_out: bool,
    /// It was still running when its job's script ended, whose end ended it (CANCELLED, as
    /// Slurm's steps are then).
    #[serde(default)]
    pub job_ended: bool,
    /// When it ended (seconds since the epoch), where that was before its end is recorded
    /// (it ended while its node's agent was away); `None`: now.
    #[serde(default)]
    pub end_time: Option<u64>,
}

impl StepEnd {
    /// The end of a step berth could not run to its end (it could not start, or its agent
    /// lost it): status 125, berth's own, nothing used.
    pub fn failed(job: u64, step: u32) -> StepEnd {
        StepEnd {
            job,
            step,
            code: 125,
            signal: None,
            usage: None,
            timed_out: false,
            job_ended: false,
            end_time: None,
        }
    }

    /// This end, marked as the job's end's doing where `node` has seen the job's script
    /// end and the step failed. A step killed by a signal is given a moment for the mark:
    /// its tasks may die with the job's container (its pid namespace) before the runner,
    /// which learns of the script's end at that same moment, has made it.
    pub async fn seen_from(mut self, node: &crate::node::NodeAgent) -> StepEnd {
        let deadline = tokio::time::Instant::now() + SCRIPT_END_MARK_WAIT;
        self.job_ended = loop {
            let seen = self.code != 0 && node.script_ended(self.job);
            if seen || self.signal.is_none() || tokio::time::Instant::now() >= deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self
    }
}

/// How long a step killed by a signal waits for its job's script-ended mark
/// ([`StepEnd::seen_from`]), and for why its job ended (`step::server::job_ending`).
pub(crate) const SCRIPT_END_MARK_WAIT: Duration = Duration::from_millis(500);

/// The controller, asked over HTTP, as the step authority of this node's step socket.
struct RemoteAuthority(Shared);

impl RemoteAuthority {
    async fn post<
        T: Serialize + Send + 'static,
        R: serde::de::DeserializeOwned + Send + 'static,
    >(
        &self,
        path: &'static str,
        body: T,
    ) -> Result<R, String> {
        let a = self.0.clone();
        tokio::task::spawn_blocking(move || a.ask(path, &body))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Allocation `job`'s variables once it runs (`None`: it waits), or how it ended: once
    /// `wait` holds or a few seconds have passed (the controller answers then).
    async fn allocation_state(
        &self,
        job: u64,
        wait: berth_api::AllocationWait,
    ) -> Result<Option<Vec<(String, String)>>, String> {
        let state = berth_api::AllocationUpdate {
            job,
            code: None,
            wait: Some(wait),
        };
        self.post("/v1/agents/allocations/state", state).await
    }
}

impl crate::step::server::StepAuthority for RemoteAuthority {
    async fn begin(
        &self,
        uid: u32,
        job: u64,
        request: &berth_api::StepRequest,
    ) -> Result<crate::step::server::StepStart, String> {
        use crate::step::server::StepStart;
        self.0.node.check_not_ending(job)?;
        let begin = StepBegin {
            uid,
            job,
            request: request.clone(),
        };
        let mut grant = match self.post("/v1/agents/steps/begin", begin).await? {
            StepStart::Granted(grant) => *grant,
            busy => return Ok(busy),
        };
        grant.job_dir = self.0.node.job_dir(job);
        self.0.node.complete_grant(job, &mut grant).await?;
        Ok(StepStart::Granted(Box::new(grant)))
    }

    /// A look again a little later: the steps that end are the controller's to count.
    async fn room(&self, _ended: u64) {
        tokio::time::sleep(Duration::from_millis(200)).await
    }

    async fn end(&self, end: StepEnd) {
        let (job, step) = (end.job, end.step);
        let end = end.seen_from(&self.0.node).await;
        if let Err(e) = self.post::<_, ()>("/v1/agents/steps/end", end).await {
            berth_core::say!("berth agent: cannot record the end of step {job}.{step}: {e}");
        }
    }

    async fn allocate(
        &self,
        request: berth_api::AllocationRequest,
    ) -> Result<berth_api::SubmitResponse, String> {
        self.post("/v1/agents/allocations", request).await
    }

    async fn wait_running(&self, job: u64) -> Result<Vec<(String, String)>, String> {
        loop {
            let state = self.allocation_state(job, berth_api::AllocationWait::Running);
            if let Some(env) = state.await? {
                return Ok(env);
            }
        }
    }

    async fn wait_ended(&self, job: u64) -> String {
        loop {
            match self
                .allocation_state(job, berth_api::AllocationWait::Ended)
                .await
            {
                // A controller out of reach (restarting, failing over) ended nothing.
                Err(e) if e.starts_with("cannot reach") => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Err(e) => return e,
                Ok(_) => {}
            }
        }
    }

    async fn release(&self, job: u64, code: Option<i32>) {
        let update = berth_api::AllocationUpdate {
            job,
            code,
            wait: None,
        };
        if let Err(e) = self
            .post::<_, ()>("/v1/agents/allocations/release", update)
            .await
        {
            berth_core::say!("berth agent: cannot end allocation {job}: {e}");
        }
    }

    fn signer(&self) -> crate::step::relay::Signer {
        crate::step::relay::Signer::new(&self.0.key, &auth::node_principal(&self.0.name))
    }

    /// The host of the address the controller reaches this agent at.
    fn address(&self) -> String {
        host_of(&self.0.registration.url)
    }
}

/// What `berth agent` was told.
pub struct Settings {
    /// The controllers' TCP APIs, `https://HOST:PORT` each: the one that leads answers (the
    /// others stand by, not listening).
    pub controllers: Vec<String>,
    pub key: Key,
    pub listen: std::net::SocketAddr,
    /// How the controller reaches this agent, `https://HOST:PORT`.
    pub advertise: String,
    pub resources: Resources,
    pub state_dir: PathBuf,
    pub berth: PathBuf,
    /// Also serve the controller's API to this host's users on this Unix socket.
    pub socket: Option<PathBuf>,
}

/// How often the agent retries a report, or registering before the controller said how often.
const BEAT: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(5);

struct Agent {
    node: NodeAgent,
    key: Key,
    controllers: Vec<String>,
    /// The controller that answered last, asked first.
    leader: std::sync::atomic::AtomicUsize,
    name: String,
    /// The runners this agent watches, by job.
    running: std::sync::Mutex<std::collections::BTreeMap<u64, u32>>,
    /// The runs whose starts this agent took, and those it voided.
    runs: std::sync::Mutex<crate::runs::Runs>,
    /// The id of the node's job files ([`NodeAgent::files_id`]).
    files_id: String,
    /// This node, as it registers (what changes is filled in at each registration); its
    /// `url` is how the controller (and other nodes) reach this agent.
    registration: Registration,
    /// Wakes the heartbeat: a registration voided runs, which the controller waits to hear.
    beat_now: tokio::sync::Notify,
}

type Shared = Arc<Agent>;

fn error(status: u16, message: impl Into<String>) -> Response {
    let status = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(berth_api::ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Passes on a request whose credential (signed with the cluster key) names a principal
/// `allowed` takes; answers 401 or 403 (`refusal`) otherwise.
async fn check_credential(
    a: &Agent,
    request: Request,
    next: Next,
    allowed: fn(&str) -> bool,
    refusal: &str,
) -> Response {
    let credential = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match credential.map(|c| a.key.verify(c, crate::runner::now())) {
        Some(Ok(claims)) if allowed(&claims.user) => next.run(request).await,
        Some(Ok(_)) => error(403, refusal),
        Some(Err(e)) => error(401, e.to_string()),
        None => error(
            401,
            "this agent answers credentials signed with the cluster key only",
        ),
    }
}

/// Only the controller (a credential signed with the cluster key, naming it) is answered.
async fn controller_only(State(a): State<Shared>, request: Request, next: Next) -> Response {
    let refusal = "only the controller may ask this agent";
    check_credential(&a, request, next, |p| p == auth::CONTROLLER, refusal).await
}

/// The parts of steps are asked for by the agent that took the step, or by the controller
/// (for its own node): either credential is taken.
async fn cluster_only(State(a): State<Shared>, request: Request, next: Next) -> Response {
    let daemon = |p: &str| p == auth::CONTROLLER || p.starts_with("@node:");
    let refusal = "only berth's daemons may start parts of steps";
    check_credential(&a, request, next, daemon, refusal).await
}

/// An image's squashfs file in this node's cache, for another node that runs a job in it
/// (`GET /v1/agent/images/{sha256}`, with a daemon's credential).
async fn cached_image(State(a): State<Shared>, Path(sha256): Path<String>) -> Response {
    if !berth_image::is_sha256_hex(&sha256) {
        return error(400, format!("{sha256}: not the SHA-256 of an image's file"));
    }
    let path = a.node.image_cache(&sha256);
    if !path.exists() {
        return error(404, format!("no image file {sha256} on node {}", a.name));
    }
    berth_core::say!(
        "berth agent: serving the image file {} to another node",
        &sha256[..12]
    );
    file_response(&path, ()).await
}

/// The file at `path`, streamed; `guard` is kept until its last chunk is sent (or the
/// caller has left).
pub async fn file_response<G: Send + 'static>(path: &std::path::Path, guard: G) -> Response {
    use tokio::io::AsyncReadExt;
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return error(500, format!("{}: {e}", path.display())),
    };
    let length = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return error(500, format!("{}: {e}", path.display())),
    };
    let chunks = futures_util::stream::unfold((file, guard), |(mut file, guard)| async move {
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                let chunk = bytes::Bytes::from(buf);
                Some((Ok::<_, std::io::Error>(chunk), (file, guard)))
            }
            Err(e) => Some((Err(e), (file, guard))),
        }
    });
    Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
        .header(axum::http::header::CONTENT_LENGTH, length)
        .body(axum::body::Body::from_stream(chunks))
        .expect("a valid response")
}

/// `POST /v1/agent/step` with `Upgrade: berth-step`: this node's part of a step that another
/// node's agent took; the connection becomes the part's ([`crate::step::relay`]).
async fn step_part(State(a): State<Shared>, mut request: Request) -> Response {
    let upgrade = hyper::upgrade::on(&mut request);
    let node = a.node.clone();
    let controllers = a.controllers().map(|(_, url)| url.clone()).collect();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => {
                crate::step::relay::serve(hyper_util::rt::TokioIo::new(io), node, controllers).await
            }
            Err(e) => berth_core::say!("berth agent: a step's connection failed: {e}"),
        }
    });
    Response::builder()
        .status(axum::http::StatusCode::SWITCHING_PROTOCOLS)
        .header(axum::http::header::CONNECTION, "upgrade")
        .header(axum::http::header::UPGRADE, crate::step::relay::PROTOCOL)
        .body(axum::body::Body::empty())
        .expect("a valid response")
}

async fn start(State(a): State<Shared>, Json(mut job): Json<JobStart>) -> Response {
    let (id, run) = (job.launch.job_id, job.launch.run);
    let take = |a: &Agent| {
        a.runs
            .lock()
            .expect("not poisoned")
            .take(id, run, Instant::now())
    };
    let mut taken = take(&a);
    // Not heard from a controller lately (this node was silent, or its agent just started):
    // this run may have been given up with the node; the answer to a registration says.
    if taken == Err(Refused::Unheard) {
        let agent = a.clone();
        let heard = tokio::task::spawn_blocking(move || agent.register())
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = heard {
            let e = format!(
                "job {id}'s run {run} does not start: {}, and cannot reach it now: {e}",
                Refused::Unheard
            );
            berth_core::say!("berth agent: {e}");
            return error(503, e);
        }
        taken = take(&a);
    }
    if let Err(e) = taken {
        let (status, e) = match e {
            Refused::Unheard => (503, format!("job {id}'s run {run} does not start: {e}")),
            Refused::Late(e) => (409, e),
        };
        berth_core::say!("berth agent: {e}");
        return error(status, e);
    }
    // The image comes from a controller: the one this agent talks to, else the others.
    if let Some(source) = job.launch.image_source.as_mut() {
        source.from = a.controllers().map(|(_, url)| url.clone()).collect();
    }
    let started = match a.node.start(job) {
        Ok(s) => s,
        Err(e) => {
            a.runs.lock().expect("not poisoned").forget(id, run);
            return error(500, format!("cannot start job {id}: {e}"));
        }
    };
    let runner = started.pid;
    a.running.lock().expect("not poisoned").insert(id, runner);
    let agent = a.clone();
    tokio::task::spawn_blocking(move || {
        let status = started.wait();
        agent.report(id, runner, Some(run), status);
        agent.runs.lock().expect("not poisoned").forget(id, run);
    });
    Json(StartAnswer {
        runner,
        files_id: Some(a.files_id.clone()),
    })
    .into_response()
}

impl Agent {
    /// The controllers, by index, in the order to ask them: the one that answered last
    /// (which leads, most likely), then the others (those that stand by do not listen).
    fn controllers(&self) -> impl Iterator<Item = (usize, &String)> {
        let first = self.leader.load(std::sync::atomic::Ordering::Relaxed);
        let n = self.controllers.len();
        (0..n).map(move |k| {
            let i = (first + k) % n;
            (i, &self.controllers[i])
        })
    }

    /// POSTs `body` to the controller with this node's credential: to the one that answered
    /// last, else to the others in turn; where several fail over and none answers, again
    /// until one has taken over ([`crate::failing_over`]).
    fn ask<T: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R, String> {
        let answered = crate::failing_over(self.controllers.len(), || {
            let mut unreachable = Vec::new();
            for (i, url) in self.controllers() {
                let from = (&self.key, auth::node_principal(&self.name));
                match crate::http::post(url, path, (from.0, &from.1), body, TIMEOUT) {
                    Err(e) if e.starts_with("cannot reach") => unreachable.push(e),
                    answer => {
                        self.leader.store(i, std::sync::atomic::Ordering::Relaxed);
                        return Ok(answer);
                    }
                }
            }
            Err(unreachable.join("; "))
        });
        answered?
    }

    /// Registers (the heartbeat): the node's runners and the runs it voided, to the controller,
    /// which answers with the runners to stop, the cached images to delete and the runs to
    /// void, done here. The pause until the next registration.
    fn register(&self) -> Result<Duration, String> {
        let mut reg = self.registration.clone();
        reg.running = self
            .running
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(&j, &r)| (j, r))
            .collect();
        reg.voided = Some(
            self.runs
                .lock()
                .expect("not poisoned")
                .voided(Instant::now()),
        );
        reg.health = crate::node::Health::sample();
        reg.images = self.node.cached_images();
        reg.steps = Some(crate::step::server::running_steps());
        let sent = Instant::now();
        let answer: RegistrationAnswer = self.ask("/v1/agents/register", &reg)?;
        for &(job, runner) in &answer.stop {
            self.stop(job, runner);
        }
        for sha256 in &answer.forget {
            self.node.forget_image(sha256);
        }
        let (mut runs, now) = (self.runs.lock().expect("not poisoned"), Instant::now());
        for &(job, run) in &answer.void {
            if runs.void(job, run, now) {
                berth_core::say!("berth agent: job {job}'s run {run} voided: the controller gave it up, and its start had not come");
                // Told at once: the job waits for it to run again.
                self.beat_now.notify_one();
            }
        }
        // From a controller before `timeout` was sent: its beat, a third of it.
        runs.heard(
            sent,
            Duration::from_secs(answer.timeout.unwrap_or(answer.beat)),
        );
        Ok(Duration::from_secs(answer.beat.clamp(1, 30)))
    }

    /// Stops the runner of a job the controller no longer has running here: SIGTERM, which it
    /// passes on to the job before removing the job's container and cgroup, and SIGKILL if it
    /// is still there after a while.
    fn stop(&self, job: u64, runner: u32) {
        berth_core::say!(
            "berth agent: stopping job {job}: the controller ended it while this node was silent"
        );
        let node = self.node.clone();
        std::thread::spawn(move || node.stop_runner(job, runner));
    }

    /// Tells the controller that job `id`'s runner ended, until it has heard (it may be
    /// restarting), then forgets the job.
    fn report(&self, id: u64, runner: u32, run: Option<u32>, status: String) {
        let end = JobEnded {
            job: id,
            runner,
            run,
            result: self.node.result(id),
            status,
        };
        loop {
            let sent: Result<(), String> = self.ask("/v1/agents/ended", &end);
            match sent {
                Ok(()) => {
                    let mut running = self.running.lock().expect("not poisoned");
                    if running.get(&id) == Some(&runner) {
                        running.remove(&id);
                    }
                    drop(running);
                    return self.node.forget_run(id, runner);
                }
                Err(e) => {
                    berth_core::say!("berth agent: cannot report the end of job {id}: {e}");
                    std::thread::sleep(BEAT);
                }
            }
        }
    }

    /// What an earlier agent process left: runners still running are watched (they are not
    /// this process's children: polled), ended ones reported.
    fn take_up(self: &Arc<Self>) {
        for (id, runner, alive) in self.node.left() {
            let run = self.node.run_of(id);
            self.running
                .lock()
                .expect("not poisoned")
                .insert(id, runner);
            let agent = self.clone();
            berth_core::say!("berth agent: taking up job {id} (runner {runner})");
            std::thread::spawn(move || {
                if alive {
                    while agent.node.runner_alive(id, runner) {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                agent.report(id, runner, run, "ended while no agent watched it".into());
            });
        }
    }
}

async fn signal(State(a): State<Shared>, Json(s): Json<RunnerSignal>) -> Response {
    match &s.cancel {
        Some(why) => a.node.cancel(s.job, s.runner, why),
        None => a.node.signal_to(s.job, s.runner, s.signal, s.target),
    }
    Json(()).into_response()
}

async fn cancel_step(Json(s): Json<StepCancel>) -> Response {
    match crate::step::server::signal_step(s.job, s.step, s.signal.unwrap_or(0)) {
        true => Json(()).into_response(),
        false => error(
            404,
            format!("step {}.{} is not running from this node", s.job, s.step),
        ),
    }
}

async fn limit(State(a): State<Shared>, Json(l): Json<RunnerLimit>) -> Response {
    match a.node.set_limit(l.job, l.runner, l.seconds) {
        Ok(()) => Json(()).into_response(),
        Err(e) => error(500, e),
    }
}

async fn usage(State(a): State<Shared>, Json(u): Json<RunnerUsage>) -> Response {
    match a.node.usage(u.job, u.runner) {
        Ok(usage) => Json(usage).into_response(),
        Err(e) => error(500, e),
    }
}

async fn freeze(State(a): State<Shared>, Json(f): Json<RunnerFreeze>) -> Response {
    let node = a.node.clone();
    // It may wait for a job that has just started to have its cgroup.
    match tokio::task::spawn_blocking(move || node.freeze(f.job, f.runner, f.frozen)).await {
        Ok(Ok(())) => Json(()).into_response(),
        Ok(Err(e)) => error(500, e),
        Err(e) => error(500, e.to_string()),
    }
}

/// The host of `https://HOST:PORT`.
fn host_of(url: &str) -> String {
    let addr = url.trim_start_matches("https://");
    let addr = addr.split('/').next().unwrap_or(addr);
    match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_string(),
        _ => addr.to_string(),
    }
}

/// A Unix socket everyone may connect to (its server checks each caller's peer credentials),
/// its directory made if need be. It is bound under a name of its own and renamed into
/// place once open to all: a client retrying its connection (a job's `srun` while `berth up`
/// restarts) never meets it bound but not yet writable by others, which would refuse it
/// (EACCES) for good rather than for a moment.
pub fn listen_for_everyone(path: &std::path::Path) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(".new");
    let fresh = std::path::PathBuf::from(fresh);
    let _ = std::fs::remove_file(&fresh);
    let listener = tokio::net::UnixListener::bind(&fresh)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o666))
        .and_then(|_| std::fs::rename(&fresh, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&fresh);
            format!("cannot listen on {}: {e}", path.display())
        })?;
    Ok(listener)
}

/// The longest request head passed on.
const HEAD_LIMIT: usize = 64 * 1024;

/// One connection to the node's API socket: its request goes to the controller over TLS
/// with a token for the connection's user (its peer credentials, as on the controller's own
/// socket), signed with the cluster key and good for a minute; whatever the client put in
/// `Authorization` is dropped. The answer comes back as it is.
async fn proxy(a: Shared, mut client: tokio::net::UnixStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let user = client
        .peer_cred()
        .ok()
        .and_then(|c| berth_runtime::Identity::lookup(&c.uid().to_string(), false).ok())
        .filter(|id| id.user != id.uid.to_string());
    let Some(user) = user else {
        let no = "your uid has no entry in this node's user database: jobs run as named users";
        return refuse(client, 403, no.into()).await;
    };
    // The request's head, to put the token in.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > HEAD_LIMIT {
            return refuse(client, 431, "request head too long".into()).await;
        }
    };
    let token = a.key.mint(&auth::Claims {
        user: user.user,
        uid: user.uid,
        exp: crate::runner::now() + auth::CREDENTIAL_LIFETIME,
        tls: None,
    });
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut out = format!(
        "{}\r\nAuthorization: Bearer {token}\r\n",
        lines.next().unwrap_or_default()
    );
    for line in lines.filter(|l| !l.to_ascii_lowercase().starts_with("authorization:")) {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut request = out.into_bytes();
    request.extend_from_slice(&buf[head_end + 4..]);
    // (Several that fail over: one takes over in a few seconds.)
    let deadline = tokio::time::Instant::now() + crate::failover_wait(a.controllers.len());
    let mut upstream = None;
    loop {
        for (_, url) in a.controllers() {
            let Ok(addr) = crate::tls::address(url) else {
                continue;
            };
            let connect = async {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                crate::tls::connect_async(tcp, &a.key.tls().client).await
            };
            if let Ok(Ok(s)) = tokio::time::timeout(TIMEOUT, connect).await {
                upstream = Some(s);
                break;
            }
        }
        if upstream.is_some() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(crate::FAILOVER_PAUSE).await;
    }
    let Some(mut upstream) = upstream else {
        let down = format!(
            "cannot reach the controller ({}): is it running?",
            a.controllers.join(" or ")
        );
        return refuse(client, 502, down).await;
    };
    if upstream.write_all(&request).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// Answers a client of the API proxy with an error of its own, then reads what is left of
/// its request until it hangs up (a few seconds at most): closed at once, the socket would
/// break the client's writing of a request body sent after its head (EPIPE) before it reads
/// the answer.
async fn refuse(mut client: tokio::net::UnixStream, status: u16, message: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body =
        serde_json::to_vec(&berth_api::ErrorBody { error: message }).expect("errors serialise");
    let mut answer = format!(
        "HTTP/1.1 {status} Refused\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend(body);
    if client.write_all(&answer).await.is_err() || client.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

/// Resolves when the process gets SIGTERM or SIGINT: how berth's daemons (controller and
/// agent) are stopped. Must be called inside the tokio runtime.
pub fn termination() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let cannot = |e: std::io::Error| format!("cannot handle signals: {e}");
    let mut term = signal(SignalKind::terminate()).map_err(cannot)?;
    let mut int = signal(SignalKind::interrupt()).map_err(cannot)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Runs the agent until it is stopped (SIGTERM or SIGINT). Jobs keep running without it,
/// as they do without the controller.
pub fn run(settings: Settings) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let served = runtime.block_on(serve(settings));
    // Runners are waited for on blocking threads; they go on without the agent.
    runtime.shutdown_background();
    served
}

async fn serve(settings: Settings) -> Result<(), String> {
    let step_dir = settings.state_dir.join("run");
    std::fs::create_dir_all(&step_dir)
        .map_err(|e| format!("cannot create {}: {e}", step_dir.display()))?;
    let name = settings.resources.name.clone();
    let node = NodeAgent::new(settings.state_dir.clone(), settings.berth.clone(), step_dir);
    // Image mounts an earlier process left (it was killed): mounted again as needed.
    node.release_images();
    node.mount_jobs();
    node.tmp_roots();
    let files_id = node.files_id()?;
    let agent = Arc::new(Agent {
        node,
        key: settings.key,
        controllers: settings.controllers.clone(),
        leader: Default::default(),
        name: name.clone(),
        running: Default::default(),
        runs: Default::default(),
        registration: Registration {
            url: settings.advertise,
            resources: settings.resources,
            running: Vec::new(),
            health: None,
            files_id: Some(files_id.clone()),
            voided: None,
            images: Vec::new(),
            steps: None,
        },
        files_id,
        beat_now: Default::default(),
    });
    tokio::spawn(agent.node.clone().upkeep());
    agent.take_up();
    // The node's step socket, in the directory every job's container gets (/.berth/run).
    let step_socket = agent.node.step_dir().join("step.sock");
    let step_listener = listen_for_everyone(&step_socket)?;
    std::fs::set_permissions(
        agent.node.step_dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;
    // The steps of the agent before this one that went on without it, first.
    let authority = Arc::new(RemoteAuthority(agent.clone()));
    crate::step::server::adopt(agent.node.job_dirs(), &authority);
    tokio::spawn(crate::step::server::serve(
        step_listener,
        authority,
        agent.node.launcher(),
    ));
    // With --socket, the host's users get a step socket too, where berth looks for it
    // beside the API socket (`berth step` on this node's host, allocations included).
    if let Some(socket) = &settings.socket {
        tokio::spawn(crate::step::server::serve(
            listen_for_everyone(&berth_api::step_socket(socket))?,
            Arc::new(RemoteAuthority(agent.clone())),
            agent.node.launcher(),
        ));
    }
    // The controller's API for the node's users and its jobs (beside the step socket, as
    // /.berth/run/berth.sock in their containers), passed on as theirs.
    let mut api_sockets = vec![agent.node.step_dir().join("berth.sock")];
    api_sockets.extend(settings.socket.clone());
    for path in &api_sockets {
        let listener = listen_for_everyone(path)?;
        let agent = agent.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(proxy(agent.clone(), stream));
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let app = Router::new()
        .route("/v1/agent/start", post(start))
        .route("/v1/agent/signal", post(signal))
        .route("/v1/agent/steps/cancel", post(cancel_step))
        .route("/v1/agent/freeze", post(freeze))
        .route("/v1/agent/limit", post(limit))
        .route("/v1/agent/usage", post(usage))
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            controller_only,
        ))
        .merge(
            Router::new()
                .route(crate::step::relay::PATH, post(step_part))
                .route("/v1/agent/images/{sha256}", get(cached_image))
                .layer(axum::middleware::from_fn_with_state(
                    agent.clone(),
                    cluster_only,
                )),
        )
        .with_state(agent.clone());
    // Register, and again every few seconds: the controller learns the node is alive.
    let beat = agent.clone();
    tokio::spawn(async move {
        let mut told = false;
        loop {
            let a = beat.clone();
            let sent = tokio::task::spawn_blocking(move || a.register())
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            let pause = *sent.as_ref().unwrap_or(&BEAT);
            match sent {
                Ok(_) if !told => {
                    let at = beat.leader.load(std::sync::atomic::Ordering::Relaxed);
                    berth_core::say!(
                        "berth agent: node {} registered with {}",
                        beat.name,
                        beat.controllers[at]
                    );
                    told = true;
                }
                Ok(_) => {}
                Err(e) => {
                    berth_core::say!(
                        "berth agent: cannot register with {}: {e}",
                        beat.controllers.join(" or ")
                    );
                    told = false;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = beat.beat_now.notified() => {}
            }
        }
    });
    berth_core::say!("berth agent: node {name} serving {}", settings.listen);
    let stop = termination()?;
    let listener = crate::tls::Listener::new(listener, agent.key.tls());
    let no_tag = |_: &_| None::<()>;
    let stop = crate::serve::stop_on(stop);
    let timeout = crate::serve::AGENT_HEADER_TIMEOUT;
    let peer = |_: &_, addr: &_| crate::serve::ip_peer(addr);
    crate::serve::serve(listener, app, no_tag, peer, timeout, stop).await;
    agent.node.release_images();
    agent.node.unmount_jobs();
    // The host's sockets go with it (those in its state directory are its jobs', which
    // outlive it, and are made anew at its next start).
    if let Some(socket) = &settings.socket {
        let _ = std::fs::remove_file(socket);
        let _ = std::fs::remove_file(berth_api::step_socket(socket));
        let _ = std::fs::remove_dir(berth_api::step_dir(socket));
    }
    Ok(())
}
