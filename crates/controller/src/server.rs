//! The HTTP API on a Unix socket. Each connection's peer credentials (SO_PEERCRED) say who
//! is asking: that identity, not anything in the request, is who a job is submitted as.
//! Handlers only translate between HTTP and [`Controller`] calls (as Firecracker's API does).

use crate::{ApiError, Caller, Shared};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use berth_api::{CancelRequest, ErrorBody, SubmitRequest, UpdateRequest};
use berth_store::JobFilter;
use serde::Deserialize;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy)]
struct Peer(Caller);

impl Peer {
    /// The peer of a connection to a Unix socket; one whose credentials cannot be read is
    /// nobody (65534).
    fn of(stream: &tokio::net::UnixStream) -> Option<Peer> {
        let cred = stream.peer_cred().ok();
        Some(Peer(Caller {
            uid: cred.as_ref().map_or(65534, |c| c.uid()),
            gid: cred.as_ref().map_or(65534, |c| c.gid()),
        }))
    }

    /// Whose a connection to a Unix socket is, for the server's limit on one user's idle
    /// connections: its user's.
    fn key(stream: &tokio::net::UnixStream, _: &tokio::net::unix::SocketAddr) -> Option<u128> {
        Peer::of(stream).map(|p| u128::from(p.0.uid))
    }
}

/// How a request reached the API: the Unix socket (the caller is its peer) or TCP (the
/// caller is whoever its token names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Local,
    Network,
}

/// Unix socket: the caller is the connection's peer (SO_PEERCRED).
async fn local_caller(
    ConnectInfo(Peer(caller)): ConnectInfo<Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(Transport::Local);
    next.run(request).await
}

/// TCP: the caller is the user a valid token names (`Authorization: Bearer TOKEN`); no
/// token, no answer.
async fn token_caller(
    State(key): State<std::sync::Arc<crate::auth::Key>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let claims = match token.map(|t| key.verify(t, crate::now())) {
        None => Err("the API over TCP needs a token: send `Authorization: Bearer TOKEN`, with a token from `berth token` on the controller's machine".to_string()),
        Some(verified) => verified.map_err(|e| e.to_string()),
    };
    // A daemon (a node's agent; '@' is never in a user name): for the agents' part of the
    // API, and nothing else.
    if let Some(daemon) = claims.as_ref().ok().and_then(|c| c.user.strip_prefix('@')) {
        // Another controller (a standby copying this one's images): its part only.
        if daemon == "controller" && request.uri().path().starts_with("/v1/controllers/") {
            request.extensions_mut().insert(PeerController);
            return next.run(request).await;
        }
        let node = daemon
            .strip_prefix("node:")
            .filter(|_| request.uri().path().starts_with("/v1/agents/"))
            .map(str::to_string);
        let Some(node) = node else {
            return ApiError::forbidden(
                "a daemon's credential is for the agents' part of the API only",
            )
            .into_response();
        };
        request.extensions_mut().insert(NodePrincipal(node));
        return next.run(request).await;
    }
    // The user must still exist, with the uid the token was made for.
    let caller = claims.and_then(|claims| {
        berth_runtime::Identity::lookup(&claims.user, false)
            .ok()
            .filter(|id| id.uid == claims.uid)
            .map(|id| Caller {
                uid: id.uid,
                gid: id.gid,
            })
            .ok_or_else(|| {
                format!(
                    "the token's user {} (uid {}) is no longer in the user database",
                    claims.user, claims.uid
                )
            })
    });
    match caller {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            request.extensions_mut().insert(Transport::Network);
            next.run(request).await
        }
        Err(message) => ApiError {
            status: 401,
            message,
        }
        .into_response(),
    }
}

/// A request from node `.0`'s agent (its credential says so).
#[derive(Debug, Clone)]
struct NodePrincipal(String);

fn node_of(principal: Option<Extension<NodePrincipal>>) -> Result<String, ApiError> {
    principal
        .map(|Extension(NodePrincipal(n))| n)
        .ok_or_else(|| {
            ApiError::forbidden("this part of the API is for node agents, with their credentials")
        })
}

/// Another controller of the cluster (its credential says so).
#[derive(Debug, Clone, Copy)]
struct PeerController;

fn controller_only(principal: Option<Extension<PeerController>>) -> Result<(), ApiError> {
    principal.map(drop).ok_or_else(|| {
        ApiError::forbidden("this part of the API is for the cluster's other controllers")
    })
}

/// An image's squashfs file, streamed, for a node fetching it (`GET /v1/agents/images/{id}`)
/// or a standby controller copying it (`GET /v1/controllers/images/{id}`).
async fn daemon_image(
    State(c): State<Shared>,
    node: Option<Extension<NodePrincipal>>,
    peer: Option<Extension<PeerController>>,
    Path(hex): Path<String>,
) -> Response {
    if node.is_none() && peer.is_none() {
        return ApiError::forbidden(
            "this part of the API is for berth's daemons (nodes' agents, the other controllers), with their credentials",
        )
        .into_response();
    }
    // A standby's copy under way: an import waits for it.
    let copying = match peer {
        Some(_) => Some(c.lock().await.standbys().fetch(&hex)),
        None => None,
    };
    image_file(c, &hex, copying).await
}

/// A standby controller looking at this one's images to copy them
/// (`POST /v1/controllers/images`): the answer is held while the standby has copied them all
/// and they do not change, up to the seconds it asks for ([`crate::mirror`]).
async fn controller_images(
    State(c): State<Shared>,
    principal: Option<Extension<PeerController>>,
    Json(look): Json<crate::mirror::Look>,
) -> ApiResult<crate::mirror::Listing> {
    controller_only(principal)?;
    let standbys = c.lock().await.standbys();
    let _looking = standbys.look(&look);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(look.wait.min(60));
    loop {
        // Asked for before listing: a change after the listing still ends the wait.
        let changed = standbys.changes().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let gateway = c.lock().await.gateway();
        let mut listing = crate::mirror::Listing::of(blocking(move || gateway.records()).await?.0);
        let now = tokio::time::Instant::now();
        if look.copied.as_ref() != Some(&listing.version) || now >= deadline {
            listing.removed = c.lock().await.image_removals();
            return Ok(Json(listing));
        }
        let again = now + std::time::Duration::from_secs(1);
        let _ = tokio::time::timeout_at(deadline.min(again), changed).await;
    }
}

/// An image's OCI config, byte for byte, for a standby controller.
async fn controller_image_config(
    State(c): State<Shared>,
    principal: Option<Extension<PeerController>>,
    Path(hex): Path<String>,
) -> Response {
    if let Err(e) = controller_only(principal) {
        return e.into_response();
    }
    let gateway = c.lock().await.gateway();
    match tokio::task::spawn_blocking(move || gateway.config(&hex)).await {
        Ok(Ok(config)) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            config,
        )
            .into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// The squashfs file of the image whose id is `hex`, streamed.
async fn image_file(c: Shared, hex: &str, copying: Option<crate::mirror::Fetching>) -> Response {
    match c.lock().await.image_file(hex) {
        Ok(path) => berth_agent::daemon::file_response(&path, copying).await,
        Err(e) => e.into_response(),
    }
}

/// A node's agent asking for an allocation for a `berth step` on its node (its client's
/// identity from its step socket's peer credentials: the node is trusted with it, as with
/// its API proxy).
async fn agent_allocate(
    State(c): State<Shared>,
    principal: Option<Extension<NodePrincipal>>,
    Json(request): Json<berth_api::AllocationRequest>,
) -> ApiResult<berth_api::SubmitResponse> {
    node_of(principal)?;
    c.lock()
        .await
        .allocate(request)
        .map(Json)
        .map_err(ApiError::bad)
}

/// A node's allocation's variables once it runs (`null` while it waits); how it ended, as
/// an error, once it has. Asked to wait, the answer comes once that holds (or after a few
/// seconds, as it stands then).
async fn agent_allocation_state(
    State(c): State<Shared>,
    principal: Option<Extension<NodePrincipal>>,
    Json(update): Json<berth_api::AllocationUpdate>,
) -> ApiResult<Option<Vec<(String, String)>>> {
    node_of(principal)?;
    let id = update.job;
    let wait = std::time::Duration::from_millis(berth_api::ALLOCATION_WAIT_MS);
    let deadline = Some(tokio::time::Instant::now() + wait);
    let state = match update.wait {
        None => c.lock().await.allocation_state(id),
        Some(berth_api::AllocationWait::Running) => {
            let moved = c.lock().await.job_moved();
            let running = |c: &crate::Controller| c.allocation_state(id).transpose();
            let state = crate::watch(&c, &moved, deadline, running).await;
            state.transpose()
        }
        Some(berth_api::AllocationWait::Ended) => {
            let left = c.lock().await.job_left();
            let ended = |c: &crate::Controller| c.allocation_ended(id).err();
            crate::watch(&c, &left, deadline, ended)
                .await
                .map_or(Ok(None), Err)
        }
    };
    state.map(Json).map_err(ApiError::bad)
}

/// A node's allocation ends with its step (or is cancelled).
async fn agent_release(
    State(c): State<Shared>,
    principal: Option<Extension<NodePrincipal>>,
    Json(update): Json<berth_api::AllocationUpdate>,
) -> ApiResult<()> {
    node_of(principal)?;
    let mut c = c.lock().await;
    if !c.job(update.job)?.allocation {
        return Err(ApiError::forbidden(format!(
            "job {} is not an allocation of a step",
            update.job
        )));
    }
    c.release(update.job, update.code);
    Ok(Json(()))
}

/// `berth agent` registering, and its heartbeat.
async fn agent_register(
    State(c): State<Shared>,
    principal: Option<Extension<NodePrincipal>>,
    Json(reg): Json<berth_agent::daemon::Registration>,
) -> ApiResult<berth_agent::daemon::RegistrationAnswer> {
    let node = node_of(principal)?;
    if node != reg.resources.name {
        return Err(ApiError::forbidden(format!(
            "the credential is node {node}'s, not {}'s",
            reg.resources.name
        )));
    }
    c.lock().await.register(reg).map(Json)
}

/// A `berth step` in a job on the asking agent's node.
async fn agent_step_begin(
    State(c): State<Shared>,
    principal: Option<Extension<NodePrincipal>>,
    Json(b): Json<berth_agent::daemon::StepBegin>,
) -> ApiResult<berth_agent::step::server::StepStart> {
    let node = node_of(principal)?;
    c.lock()
        .await
        .begin_step(Some(&node), b.uid, b.job, &b.request)
        .map(Json)
        .map_err(ApiError::bad)
}

async fn agent_step_end(
    State(c): State<Shared>,
    principal: Option<Extension<NodePrincipal>>,
    Json(e): Json<berth_agent::daemon::StepEnd>,
) -> ApiResult<()> {
    let node = node_of(principal)?;
    c.lock().await.end_step_from(&node, e).map(Json)
}

#[utoipa::path(post, path = "/v1/nodes/{name}/drain", params(("name" = String, Path, description = "node name")), request_body = berth_api::DrainRequest, tag = "cluster", responses((status = 200, description = "drained: no new jobs there"), (status = 403, description = "not root", body = ErrorBody), (status = 404, description = "no such node", body = ErrorBody)))]
async fn drain(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<berth_api::DrainRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<()> {
    let Json(req) = body.map_err(rejected)?;
    c.lock()
        .await
        .drain(caller, &name, Some(req.reason))
        .map(Json)
}

#[utoipa::path(post, path = "/v1/nodes/{name}/resume", params(("name" = String, Path, description = "node name")), tag = "cluster", responses((status = 200, description = "takes jobs again"), (status = 403, description = "not root", body = ErrorBody), (status = 404, description = "no such node", body = ErrorBody)))]
async fn resume_node(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<()> {
    c.lock().await.drain(caller, &name, None).map(Json)
}

/// A remote agent's runner ended.
async fn agent_ended(
    State(c): State<Shared>,
    principal: Option<Extension<NodePrincipal>>,
    Json(end): Json<berth_agent::daemon::JobEnded>,
) -> ApiResult<()> {
    let node = node_of(principal)?;
    c.lock().await.ended(&node, end).map(Json)
}

/// `berth token`: a token for the caller, or (root) for any user. Only on the Unix socket,
/// so that a token can never be stretched into a longer-lived one.
#[utoipa::path(post, path = "/v1/tokens", request_body = berth_api::TokenRequest, tag = "auth", responses((status = 200, description = "a token for the API over TCP", body = berth_api::TokenResponse), (status = 403, description = "over TCP, or for another user", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn token(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Extension(transport): Extension<Transport>,
    body: Result<Json<berth_api::TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<berth_api::TokenResponse> {
    if transport != Transport::Local {
        return Err(ApiError::forbidden(
            "tokens are made on the controller's machine only: run `berth token` there",
        ));
    }
    let Json(req) = body.map_err(rejected)?;
    c.lock().await.token(caller, req).map(Json)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

#[utoipa::path(post, path = "/v1/jobs", request_body = SubmitRequest, tag = "jobs", responses((status = 200, description = "submitted", body = berth_api::SubmitResponse), (status = 403, description = "refused by policy", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn submit(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<SubmitRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<berth_api::SubmitResponse> {
    let Json(req) = body.map_err(rejected)?;
    c.lock().await.submit(caller, req).map(Json)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct QueueQuery {
    /// Only the tasks of this array job (or this job, if it is no array's).
    array: Option<u64>,
    /// An array's pending tasks that wait alike as one entry, whose `array_tasks` lists
    /// their indices (squeue's `42_[3-10]`).
    #[serde(default)]
    collapse: bool,
}

#[utoipa::path(get, path = "/v1/jobs", params(QueueQuery), tag = "jobs", responses((status = 200, description = "pending and running jobs", body = Vec<berth_api::JobInfo>), (status = 404, description = "no such array job", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn queue(
    State(c): State<Shared>,
    query: Result<Query<QueueQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<berth_api::JobInfo>> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    c.lock().await.queue(q.array, q.collapse).map(Json)
}

#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = u64, Path, description = "job id")), tag = "jobs", responses((status = 200, description = "the job", body = berth_api::JobInfo), (status = 404, description = "no such job", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn show(State(c): State<Shared>, Path(id): Path<u64>) -> ApiResult<berth_api::JobInfo> {
    let c = c.lock().await;
    c.job(id).map(|j| Json(c.info(&j)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WaitQuery {
    /// How many jobs from this id on to wait for (an array's tasks); 1 if not given.
    count: Option<u64>,
    /// Seconds to wait at most (60 if not given, up to 3600); then the answer says the jobs
    /// have not all ended, and the client asks again.
    timeout: Option<u64>,
    /// `ended` (if not given), or `started`: until each has started (or ended without
    /// starting), as LSF's `bwait -w 'started(42)'`.
    until: Option<String>,
}

/// Waits until jobs `id` .. `id + count - 1` have all ended (sbatch `--wait`, bsub `-K`,
/// qsub `-W block=true`, bwait), and says how each ended: one request that answers as the
/// last of them ends, instead of a client asking again and again. Or until they have all
/// started (`until=started`).
#[utoipa::path(get, path = "/v1/jobs/{id}/wait", params(("id" = u64, Path, description = "the first job's id"), WaitQuery), tag = "jobs", responses((status = 200, description = "they have all ended, or the time ran out first", body = berth_api::WaitResponse), (status = 404, description = "no such job", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn wait(
    State(c): State<Shared>,
    Path(id): Path<u64>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<berth_api::WaitResponse> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    let count = q.count.unwrap_or(1);
    let last = (count.checked_sub(1))
        .ok_or_else(|| ApiError::bad("count must be at least 1"))?
        .checked_add(id)
        .ok_or_else(|| {
            ApiError::bad(format!(
                "count={count} from job {id} goes past the last job id there can be"
            ))
        })?;
    let timeout = std::time::Duration::from_secs(q.timeout.unwrap_or(60).min(3600));
    let deadline = Some(tokio::time::Instant::now() + timeout);
    let started = match q.until.as_deref() {
        None | Some("ended") => false,
        Some("started") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "until={other}: expected ended or started"
            )))
        }
    };
    let (left, moved) = {
        let c = c.lock().await;
        c.job(id)?;
        c.job(last)?;
        (c.job_left(), c.job_moved())
    };
    if started {
        // The lowest id that may still wait: those below it have started or ended.
        let mut next = id;
        let look = |c: &crate::Controller| match c.first_pending(next..=last) {
            Some(pending) => {
                next = pending;
                None
            }
            None => Some(()),
        };
        let reached = crate::watch(&c, &moved, deadline, look).await.is_some();
        let jobs = Vec::new();
        return Ok(Json(berth_api::WaitResponse { reached, jobs }));
    }
    // The lowest id not looked at yet: those below it have ended, and how is read as they
    // do (a few at each look, not a whole array's records at once under the lock).
    let mut next = id;
    let mut ended = Vec::new();
    let ends = crate::watch(&c, &left, deadline, |c| {
        let unfinished = c.first_unfinished(next..=last);
        let upto = unfinished.map_or(Some(last), |u| u.checked_sub(1));
        if let Some(upto) = upto.filter(|&upto| upto >= next) {
            match c.ends(next, upto) {
                Ok(jobs) => ended.extend(jobs),
                Err(e) => return Some(Err(e)),
            }
            next = upto + 1;
        }
        unfinished.is_none().then(|| Ok(std::mem::take(&mut ended)))
    });
    let answer = match ends.await {
        Some(jobs) => berth_api::WaitResponse {
            reached: true,
            jobs: jobs?,
        },
        None => berth_api::WaitResponse {
            reached: false,
            jobs: Vec::new(),
        },
    };
    Ok(Json(answer))
}

/// What a running job has used so far on each of its nodes (`berth usage`, sstat), read
/// from its cgroups without holding the controller's lock.
#[utoipa::path(get, path = "/v1/jobs/{id}/usage", params(("id" = u64, Path, description = "job id")), tag = "jobs", responses((status = 200, description = "its usage so far", body = berth_api::JobUsage), (status = 403, description = "not the owner", body = ErrorBody), (status = 404, description = "no such job", body = ErrorBody), (status = 400, description = "not running", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn usage(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
) -> ApiResult<berth_api::JobUsage> {
    let query = c.lock().await.usage(caller, id)?;
    query.read().await.map(Json)
}

/// A job's batch script as it was submitted (`scontrol write batch_script`, `sacct -B`).
#[utoipa::path(get, path = "/v1/jobs/{id}/script", params(("id" = u64, Path, description = "job id")), tag = "jobs", responses((status = 200, description = "its batch script", body = String, content_type = "text/plain"), (status = 403, description = "not the owner", body = ErrorBody), (status = 404, description = "no such job, or one with no batch script (an allocation)", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn script(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let text = c.lock().await.script(caller, id)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Only these users' jobs (comma-separated).
    user: Option<String>,
    /// Only jobs that ended in these states (comma-separated).
    state: Option<String>,
    /// Only jobs in any state at or after this time, not ended before it (seconds since
    /// the epoch; sacct's --starttime).
    since: Option<u64>,
    /// Only jobs in any state before this time: submitted before it (seconds since the
    /// epoch; sacct's --endtime).
    until: Option<u64>,
    /// Only the tasks of this array job.
    array: Option<u64>,
    /// Only the caller's own jobs (sacct's default for a user; with `user`, none unless it
    /// is the caller).
    #[serde(default)]
    mine: bool,
}

#[utoipa::path(get, path = "/v1/history", params(HistoryQuery), tag = "jobs", responses((status = 200, description = "finished jobs with their accounting", body = Vec<berth_api::JobInfo>), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn history(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<berth_api::JobInfo>> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    let mine = match q.mine {
        true => Some(crate::user_of(caller.uid)?.user),
        false => None,
    };
    // (`user` may list several, comma-separated.)
    let named: Option<Vec<String>> = q.user.map(|u| u.split(',').map(str::to_string).collect());
    let users = match (named, mine) {
        (Some(named), Some(me)) if !named.contains(&me) => return Ok(Json(Vec::new())),
        (named, me) => me.map(|m| vec![m]).or(named).unwrap_or_default(),
    };
    let mut filter = JobFilter {
        users,
        states: q
            .state
            .map(|s| s.split(',').map(|s| s.to_ascii_uppercase()).collect())
            .unwrap_or_default(),
        active_after: q.since,
        submitted_before: q.until,
        ..Default::default()
    };
    let c = c.lock().await;
    if let Some(array) = q.array {
        filter.ids = c.array_ids(array)?;
    }
    c.history(&filter).map(Json)
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", params(("id" = u64, Path, description = "job id")), request_body(content = Option<CancelRequest>, description = "a signal to send instead of ending the job; whether the id is an array job's"), tag = "jobs", responses((status = 200, description = "cancelled or signalled"), (status = 403, description = "not the owner", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn cancel(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
    body: Option<Json<CancelRequest>>,
) -> ApiResult<()> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let target = body.target.unwrap_or_default();
    let signal = match body.signal {
        None => None,
        Some(s) => Some(berth_core::signal::number(&s).ok_or_else(|| {
            ApiError::bad(format!(
                "unknown signal '{s}': use a name such as USR1 or a number"
            ))
        })?),
    };
    let mut c = c.lock().await;
    match (body.array, body.step) {
        (false, Some(step)) => c.cancel_step(caller, id, step, signal),
        (true, Some(_)) => Err(ApiError::bad(
            "a step is cancelled or signalled alone: name the array's task (ID_INDEX.STEP)",
        )),
        (true, None) => c.cancel_array(caller, id, signal, target),
        (false, None) => c.cancel(caller, id, signal, target),
    }
    .map(Json)
}

#[utoipa::path(post, path = "/v1/jobs/{id}/update", params(("id" = u64, Path, description = "job id (an array job's: each of its pending tasks)")), request_body(content = UpdateRequest, description = "the new values, as berth submit flags"), tag = "jobs", responses((status = 200, description = "the number of jobs updated", body = u64), (status = 403, description = "not the owner", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn update(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
    Json(body): Json<UpdateRequest>,
) -> ApiResult<u64> {
    c.lock()
        .await
        .update(caller, id, &body.args, body.syntax, body.array_throttle)
        .map(Json)
}

#[utoipa::path(post, path = "/v1/jobs/{id}/hold", params(("id" = u64, Path, description = "job id"), HoldQuery), tag = "jobs", responses((status = 200, description = "held"), (status = 403, description = "not the owner", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn hold(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
    query: QueryParam<HoldQuery>,
) -> ApiResult<()> {
    hold_or_release(c, caller, id, query, true).await
}

/// [`hold`] and [`release`]: the holds the query names, root's alone for an
/// administrator's.
async fn hold_or_release(
    c: Shared,
    caller: Caller,
    id: u64,
    query: QueryParam<HoldQuery>,
    held: bool,
) -> ApiResult<()> {
    let q = query_of(query)?;
    if q.admin && caller.uid != 0 {
        let verb = if held { "hold" } else { "release" };
        return Err(ApiError::forbidden(format!(
            "only root may {verb} job {id} as an administrator (JobHeldAdmin; PBS's -h o, -h s)"
        )));
    }
    let which = crate::Holds {
        owner: q.owners,
        admin: q.admin,
    };
    let mut c = c.lock().await;
    match q.array {
        true => c.hold_array(caller, id, held, which),
        false => c.hold(caller, id, held, which),
    }
    .map(Json)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HoldQuery {
    /// The id is an array job's: each of its pending tasks.
    #[serde(default)]
    array: bool,
    /// The owner's hold (JobHeldUser, which they may release), also when root asks
    /// (scontrol uhold).
    #[serde(default)]
    owners: bool,
    /// An administrator's hold (JobHeldAdmin), root's alone: refused (403) to anyone else
    /// (PBS's operator and system holds, `qhold -h o`). With `owners`: both holds. Neither:
    /// the caller's (root's release: both).
    #[serde(default)]
    admin: bool,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RequeueQuery {
    /// The id is an array job's: each of its running and suspended tasks is queued again.
    #[serde(default)]
    array: bool,
    /// Held once queued again (scontrol requeuehold); root's hold is an administrator's.
    #[serde(default)]
    hold: bool,
}

#[utoipa::path(post, path = "/v1/jobs/{id}/release", params(("id" = u64, Path, description = "job id"), HoldQuery), tag = "jobs", responses((status = 200, description = "released"), (status = 403, description = "not the owner", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn release(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
    query: QueryParam<HoldQuery>,
) -> ApiResult<()> {
    hold_or_release(c, caller, id, query, false).await
}

#[utoipa::path(post, path = "/v1/jobs/{id}/suspend", params(("id" = u64, Path, description = "job id"), ArrayQuery), tag = "jobs", responses((status = 200, description = "frozen"), (status = 403, description = "not the owner", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn suspend(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
    query: ArrayParam,
) -> ApiResult<()> {
    freeze_or_thaw(c, caller, id, query, true).await
}

#[utoipa::path(post, path = "/v1/jobs/{id}/resume", params(("id" = u64, Path, description = "job id"), ArrayQuery), tag = "jobs", responses((status = 200, description = "thawed"), (status = 403, description = "not the owner", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn resume(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
    query: ArrayParam,
) -> ApiResult<()> {
    freeze_or_thaw(c, caller, id, query, false).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ArrayQuery {
    /// The id is an array job's: each of its tasks the verb acts on, in one request (a
    /// hold or release: the pending ones; a suspend: the running ones; a resume: the
    /// suspended ones; a requeue: both).
    #[serde(default)]
    array: bool,
}

/// [`ArrayQuery`] as a handler gets it (a malformed one refused by [`array_query`]).
type ArrayParam = QueryParam<ArrayQuery>;

fn array_query(query: ArrayParam) -> Result<bool, ApiError> {
    Ok(query_of(query)?.array)
}

/// A verb's query, as a handler gets it; a malformed one refused.
type QueryParam<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query_of<T>(query: QueryParam<T>) -> Result<T, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    Ok(q)
}

/// Suspends or resumes a job, or each of an array's tasks that are running (suspended),
/// all at once; the first refusal or failure is the answer (the others are done).
async fn freeze_or_thaw(
    c: Shared,
    caller: Caller,
    id: u64,
    query: ArrayParam,
    suspend: bool,
) -> ApiResult<()> {
    if !array_query(query)? {
        return freeze(c, caller, id, suspend).await.map(Json);
    }
    let verb = if suspend { "suspend" } else { "resume" };
    let tasks = c.lock().await.array_tasks_for(caller, id, verb)?;
    let mut each = tokio::task::JoinSet::new();
    for task in tasks {
        each.spawn(freeze(c.clone(), caller, task, suspend));
    }
    let mut failed = None;
    while let Some(joined) = each.join_next().await {
        let done = joined.map_err(|e| ApiError::internal(e.to_string()));
        if let Err(e) = done.and_then(|r| r) {
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(Json(())), Err)
}

/// How long a suspend waits for a job that is still starting.
const STARTING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Suspends or resumes a job, calling its agents without holding the controller's lock (a
/// slow or unreachable node stalls only this request), in a task of its own, so that a
/// client that goes away cannot leave the job half done.
async fn freeze(c: Shared, caller: Caller, id: u64, suspend: bool) -> Result<(), ApiError> {
    // A job that has just started (`bstop` right after `bsub`) is waited for, a while.
    let deadline = tokio::time::Instant::now() + STARTING_WAIT;
    while c.lock().await.starting(id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let freeze = c.lock().await.begin_freeze(caller, id, suspend)?;
    tokio::spawn(async move {
        let done = freeze.apply().await;
        c.lock().await.end_freeze(&freeze, done)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// `berth down`: root only. Running jobs keep running (their runners do not depend on the
/// controller); the next `berth up` picks them up again.
#[utoipa::path(post, path = "/v1/shutdown", tag = "cluster", responses((status = 200, description = "the controller stops; jobs keep running"), (status = 403, description = "not root", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn shutdown(State(c): State<Shared>, Extension(caller): Extension<Caller>) -> ApiResult<()> {
    if caller.uid != 0 {
        return Err(ApiError::forbidden("only root may stop the controller"));
    }
    c.lock().await.stop.notify_one();
    Ok(Json(()))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/requeue", params(("id" = u64, Path, description = "job id"), RequeueQuery), tag = "jobs", responses((status = 200, description = "queued again"), (status = 403, description = "not the owner", body = ErrorBody), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn requeue(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
    query: QueryParam<RequeueQuery>,
) -> ApiResult<()> {
    let q = query_of(query)?;
    let mut c = c.lock().await;
    match q.array {
        true => c.requeue_array(caller, id, q.hold),
        false => c.requeue(caller, id, q.hold),
    }
    .map(Json)
}

/// `POST /v1/jobs/{id}/allocation-end`'s query.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AllocationEndQuery {
    /// The exit status of the command the allocation was held for.
    code: i32,
}

#[utoipa::path(post, path = "/v1/jobs/{id}/allocation-end", params(("id" = u64, Path, description = "job id"), AllocationEndQuery), tag = "jobs", responses((status = 200, description = "the allocation ends with that status"), (status = 403, description = "not the owner", body = ErrorBody), (status = 400, description = "no running allocation", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn allocation_end(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
    query: QueryParam<AllocationEndQuery>,
) -> ApiResult<()> {
    let q = query_of(query)?;
    c.lock().await.end_allocation(caller, id, q.code).map(Json)
}

#[utoipa::path(get, path = "/v1/nodes", tag = "cluster", responses((status = 200, description = "the nodes", body = Vec<berth_api::NodeInfo>), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn nodes(State(c): State<Shared>) -> ApiResult<Vec<berth_api::NodeInfo>> {
    Ok(Json(c.lock().await.nodes()))
}

#[utoipa::path(get, path = "/v1/controllers", tag = "cluster", responses((status = 200, description = "the controller that answers, which leads, and the standbys that copy its images (scontrol ping)", body = Vec<berth_api::ControllerInfo>), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn controllers(State(c): State<Shared>) -> ApiResult<Vec<berth_api::ControllerInfo>> {
    c.lock().await.controllers().map(Json)
}

#[utoipa::path(get, path = "/v1/partitions", tag = "cluster", responses((status = 200, description = "the partitions", body = Vec<berth_api::PartitionInfo>), (status = 400, description = "invalid request", body = ErrorBody), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn partitions(State(c): State<Shared>) -> ApiResult<Vec<berth_api::PartitionInfo>> {
    Ok(Json(c.lock().await.partitions()))
}

#[utoipa::path(get, path = "/v1/licenses", tag = "cluster", responses((status = 200, description = "the cluster's licenses ([licenses]), and how many running jobs hold (scontrol show licenses)", body = Vec<berth_api::LicenseInfo>), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn licenses(State(c): State<Shared>) -> ApiResult<Vec<berth_api::LicenseInfo>> {
    Ok(Json(c.lock().await.licenses()))
}

#[utoipa::path(get, path = "/v1/config", tag = "cluster", responses((status = 200, description = "the controller's settings users ask about (scontrol show config, sprio -w)", body = berth_api::ConfigInfo), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn config(State(c): State<Shared>) -> ApiResult<berth_api::ConfigInfo> {
    Ok(Json(c.lock().await.config()))
}

#[utoipa::path(get, path = "/v1/shares", tag = "cluster", responses((status = 200, description = "each user's shares, usage and fair-share factor (sshare)", body = Vec<berth_api::ShareInfo>), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn shares(State(c): State<Shared>) -> ApiResult<Vec<berth_api::ShareInfo>> {
    let shares = c.lock().await.shares();
    Ok(Json(
        shares
            .into_iter()
            .map(|s| berth_api::ShareInfo {
                user: s.user,
                raw_shares: s.raw_shares,
                norm_shares: s.norm_shares,
                raw_usage: s.raw_usage,
                effective_usage: s.effective_usage,
                fairshare: s.factor,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/reservations", request_body = berth_api::Reservation, tag = "cluster", responses((status = 200, description = "made: its nodes are kept for its jobs from its start"), (status = 400, description = "a bad time, unknown node, no users, or one that overlaps another", body = ErrorBody), (status = 403, description = "not root", body = ErrorBody), (status = 409, description = "one of that name exists", body = ErrorBody)))]
async fn create_reservation(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<berth_api::Reservation>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<()> {
    let Json(r) = body.map_err(rejected)?;
    c.lock().await.create_reservation(caller, r).map(Json)
}

#[utoipa::path(get, path = "/v1/reservations", tag = "cluster", responses((status = 200, description = "the reservations, by name", body = Vec<berth_api::Reservation>), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn reservations(State(c): State<Shared>) -> ApiResult<Vec<berth_api::Reservation>> {
    Ok(Json(c.lock().await.reservations()))
}

#[utoipa::path(delete, path = "/v1/reservations/{name}", params(("name" = String, Path, description = "reservation name")), tag = "cluster", responses((status = 200, description = "deleted: its nodes take any job"), (status = 403, description = "not root", body = ErrorBody), (status = 404, description = "no such reservation", body = ErrorBody)))]
async fn delete_reservation(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<()> {
    c.lock().await.delete_reservation(caller, &name).map(Json)
}

#[utoipa::path(get, path = "/v1/images", tag = "images", responses((status = 200, description = "the images in the cluster's store (the controller's), which jobs run in: those the caller may run (others' users/USER/... are theirs)", body = Vec<berth_api::ImageInfo>), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn images(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<berth_api::ImageInfo>> {
    let gateway = c.lock().await.gateway();
    blocking(move || gateway.list(&crate::user_of(caller.uid)?.user)).await
}

#[utoipa::path(post, path = "/v1/images/pull", request_body = berth_api::PullRequest, tag = "images", responses((status = 200, description = "pulled into the cluster's store (or there already): jobs may name it", body = berth_api::ImageInfo), (status = 400, description = "not a registry reference", body = ErrorBody), (status = 403, description = "not among the images users may have pulled ([registry] user_pulls)", body = ErrorBody), (status = 502, description = "the registry refused or could not be reached, or the image is not there", body = ErrorBody)))]
async fn pull_image(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<berth_api::PullRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<berth_api::ImageInfo> {
    let Json(r) = body.map_err(rejected)?;
    let gateway = c.lock().await.gateway();
    let pulled = blocking(move || gateway.pull(caller, &r.reference, None, false)).await?;
    on_standbys(&c, pulled.0).await
}

/// How long an import or a pull waits for the standby controllers to copy its image.
const STANDBY_COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// `image`, which came into the store, once the standby controllers have copied it (or
/// with why one has not: [`crate::mirror::Standbys::copied`]).
async fn on_standbys(
    c: &Shared,
    mut image: berth_api::ImageInfo,
) -> ApiResult<berth_api::ImageInfo> {
    let standbys = c.lock().await.standbys();
    standbys.changed();
    let hex = image.id.trim_start_matches("sha256:");
    image.warnings = standbys.copied(hex, STANDBY_COPY_WAIT).await;
    for warning in &image.warnings {
        berth_core::say!("berth: image {}: {warning}", &hex[..12.min(hex.len())]);
    }
    Ok(Json(image))
}

#[utoipa::path(post, path = "/v1/images/pull/private", request_body = berth_api::PrivatePullRequest, tag = "images", responses((status = 200, description = "pulled with the caller's credentials (not kept) or anonymously: a user's is theirs alone, users/USER/...", body = berth_api::ImageInfo), (status = 400, description = "not a registry reference", body = ErrorBody), (status = 403, description = "not among the images users may have pulled", body = ErrorBody), (status = 502, description = "the registry refused or could not be reached, or the image is not there", body = ErrorBody)))]
async fn pull_private_image(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<berth_api::PrivatePullRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<berth_api::ImageInfo> {
    let Json(r) = body.map_err(rejected)?;
    let gateway = c.lock().await.gateway();
    let pulled = blocking(move || gateway.pull(caller, &r.reference, r.credentials, true)).await?;
    on_standbys(&c, pulled.0).await
}

#[utoipa::path(post, path = "/v1/images/share", request_body = berth_api::ShareRequest, tag = "images", responses((status = 200, description = "whom the name is shared with now", body = berth_api::ImageShare), (status = 400, description = "not a private name (users/USER/...), or no such user or group", body = ErrorBody), (status = 403, description = "not the name's owner, nor root", body = ErrorBody), (status = 404, description = "no such image in the cluster's store", body = ErrorBody)))]
async fn share_image(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<berth_api::ShareRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<berth_api::ImageShare> {
    let Json(r) = body.map_err(rejected)?;
    c.lock().await.share_image(caller, r).map(Json)
}

#[utoipa::path(post, path = "/v1/images/remove", request_body = berth_api::RemoveImageRequest, tag = "images", responses((status = 200, description = "the name taken off, and the image deleted with its last name", body = berth_api::RemovedImage), (status = 403, description = "not the caller's own upload (users/USER/...)", body = ErrorBody), (status = 404, description = "no such image in the cluster's store", body = ErrorBody), (status = 409, description = "unfinished jobs use the image", body = ErrorBody)))]
async fn remove_image(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<berth_api::RemoveImageRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<berth_api::RemovedImage> {
    let Json(r) = body.map_err(rejected)?;
    let mut c = c.lock().await;
    let removed = c.remove_image(caller, &r.reference)?;
    c.standbys().changed();
    Ok(Json(removed))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    /// The image's name (NAME[:TAG]); a user's upload is named under `users/USER/`.
    name: String,
    /// The file's name where it came from, shown by `berth image inspect` and in errors.
    #[serde(default)]
    file: String,
}

#[utoipa::path(post, path = "/v1/images/import", params(ImportQuery), request_body(content = Vec<u8>, description = "the image file: a docker-archive, OCI archive, root filesystem tarball, squashfs (enroot's) or SIF file", content_type = "application/octet-stream"), tag = "images", responses((status = 200, description = "imported into the cluster's store: jobs may name it", body = berth_api::ImageInfo), (status = 400, description = "not an image file berth reads, a bad name, or the upload broke off", body = ErrorBody), (status = 403, description = "users may not upload ([registry] user_imports = false)", body = ErrorBody)))]
async fn import_image(
    State(c): State<Shared>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> ApiResult<berth_api::ImageInfo> {
    use futures_util::StreamExt;
    let Query(q) = query.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    let gateway = c.lock().await.gateway();
    let name = gateway.upload_name(caller, &q.name)?;
    let file = if q.file.is_empty() {
        q.name.clone()
    } else {
        q.file
    };
    // The body's chunks go to the import on its blocking thread as they come; one that
    // breaks off is an error there, never the end of a shorter file.
    let (chunks, received) = tokio::sync::mpsc::channel(16);
    let import = tokio::task::spawn_blocking(move || {
        gateway.import(caller, name, &file, ChunkReader::new(received))
    });
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let failed = chunk.is_err();
        let chunk = chunk.map_err(|e| std::io::Error::other(format!("the upload broke off: {e}")));
        if chunks.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(chunks);
    let imported = import.await.map_err(ApiError::internal)??;
    on_standbys(&c, imported).await
}

/// A blocking reader of an upload's chunks, as the request's body yields them.
struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl ChunkReader {
    fn new(chunks: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> ChunkReader {
        ChunkReader {
            chunks,
            current: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Runs `work` on a blocking thread (without the controller's lock), as a handler's answer.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
        .map(Json)
}

async fn not_found() -> ApiError {
    ApiError {
        status: 404,
        message: "no such API endpoint".into(),
    }
}

/// The API's OpenAPI document, derived from the handlers and the berth-api types; committed
/// as docs/openapi.json, which a test keeps equal to it.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "berth",
        description = "The berth controller's API: on its Unix socket (the caller from SO_PEERCRED) and, with `berth up --listen`, on TCP in TLS 1.3 (the caller from a token: `Authorization: Bearer TOKEN`)."
    ),
    paths(
        submit,
        queue,
        show,
        script,
        usage,
        wait,
        history,
        cancel,
        hold,
        update,
        release,
        suspend,
        resume,
        requeue,
        allocation_end,
        nodes,
        controllers,
        partitions,
        licenses,
        config,
        shares,
        create_reservation,
        reservations,
        delete_reservation,
        images,
        pull_image,
        pull_private_image,
        import_image,
        remove_image,
        share_image,
        drain,
        resume_node,
        shutdown,
        token,
        metrics
    ),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

/// The cluster in Prometheus' text format (crate::metrics).
#[utoipa::path(get, path = "/metrics", tag = "cluster", responses((status = 200, description = "jobs by partition, state and waiting reason, each node's state, size, allocation and health, and what this controller counted since it started, in Prometheus' text format (version 0.0.4)", body = String, content_type = "text/plain; version=0.0.4"), (status = 401, description = "no valid token (TCP)", body = ErrorBody)))]
async fn metrics(State(c): State<Shared>) -> Response {
    let text = c.lock().await.metrics();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
        .into_response()
}

/// The OpenAPI document as served at /openapi.json and committed as docs/openapi.json.
pub fn openapi_json() -> String {
    let mut text = <ApiDoc as utoipa::OpenApi>::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    text.push('\n');
    text
}

/// The largest submission the API reads, bytes (see [`berth_api::MAX_SCRIPT_BYTES`]).
const SUBMIT_LIMIT: usize = 6 * berth_api::MAX_SCRIPT_BYTES + (8 << 20);

pub fn router(shared: Shared) -> Router {
    Router::new()
        // A submission carries its script (up to MAX_SCRIPT_BYTES, which JSON may write six
        // times longer) and its submitter's environment.
        .route(
            "/v1/jobs",
            post(submit)
                .get(queue)
                .layer(axum::extract::DefaultBodyLimit::max(SUBMIT_LIMIT)),
        )
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/hold", post(hold))
        .route("/v1/jobs/{id}/update", post(update))
        .route("/v1/jobs/{id}/release", post(release))
        .route("/v1/jobs/{id}/suspend", post(suspend))
        .route("/v1/jobs/{id}/resume", post(resume))
        .route("/v1/jobs/{id}/requeue", post(requeue))
        .route("/v1/jobs/{id}/allocation-end", post(allocation_end))
        .route("/v1/jobs/{id}/usage", get(usage))
        .route("/v1/jobs/{id}/script", get(script))
        .route("/v1/jobs/{id}/wait", get(wait))
        .route("/v1/history", get(history))
        .route("/v1/nodes", get(nodes))
        .route("/v1/partitions", get(partitions))
        .route("/v1/licenses", get(licenses))
        .route("/v1/config", get(config))
        .route("/v1/shares", get(shares))
        .route(
            "/v1/reservations",
            post(create_reservation).get(reservations),
        )
        .route("/v1/reservations/{name}", delete(delete_reservation))
        .route("/v1/images", get(images))
        .route("/v1/images/pull", post(pull_image))
        .route("/v1/images/pull/private", post(pull_private_image))
        .route("/v1/images/import", post(import_image))
        .route("/v1/images/remove", post(remove_image))
        .route("/v1/images/share", post(share_image))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/tokens", post(token))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/agents/register", post(agent_register))
        .route("/v1/agents/steps/begin", post(agent_step_begin))
        .route("/v1/agents/steps/end", post(agent_step_end))
        .route("/v1/nodes/{name}/drain", post(drain))
        .route("/v1/nodes/{name}/resume", post(resume_node))
        .route("/v1/agents/ended", post(agent_ended))
        .route("/v1/agents/images/{id}", get(daemon_image))
        .route("/v1/controllers", get(controllers))
        .route("/v1/controllers/images", post(controller_images))
        .route("/v1/controllers/images/{id}", get(daemon_image))
        .route(
            "/v1/controllers/images/{id}/config",
            get(controller_image_config),
        )
        .route("/v1/agents/allocations", post(agent_allocate))
        .route("/v1/agents/allocations/state", post(agent_allocation_state))
        .route("/v1/agents/allocations/release", post(agent_release))
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_errors))
        .with_state(shared)
}

/// axum's own refusals (a path's id that is no number, a body that is no JSON or not the
/// request's, a method the endpoint has not) come as plain text, or nothing: the API's
/// errors are JSON ([`ErrorBody`]), those too, their status kept.
/// A request body the API could not take: 413 where it is over the size the API reads
/// (2 MiB), else 400.
fn rejected(e: axum::extract::rejection::JsonRejection) -> ApiError {
    let status = match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => 413,
        _ => 400,
    };
    ApiError {
        status,
        message: format!("invalid request: {e}"),
    }
}

async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let json = (response.headers().get(axum::http::header::CONTENT_TYPE))
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let mut error = String::from_utf8_lossy(&text).trim().to_string();
    if error.is_empty() {
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        error = match parts.headers.get(axum::http::header::ALLOW) {
            Some(allow) => format!(
                "{reason}: the endpoint takes {}",
                allow.to_str().unwrap_or("")
            ),
            None => reason,
        };
    }
    let mut answer = (status, Json(ErrorBody { error })).into_response();
    if let Some(allow) = parts.headers.get(axum::http::header::ALLOW) {
        answer
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    answer
}

/// Serves the API until the process is stopped; runs the scheduler loop beside it.
pub async fn serve(shared: Shared) -> Result<(), String> {
    let socket = shared.lock().await.settings().socket.clone();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // A socket left by a controller that was killed: nobody answers on it any more.
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(format!(
            "a berth controller is already serving {}: stop it with `berth down`, or pass --socket",
            socket.display()
        ));
    }
    // Everyone may connect: the peer credentials decide what each caller may do.
    let listener = berth_agent::daemon::listen_for_everyone(&socket)?;
    // The step socket, alone in a directory that every job's container gets (berth-api).
    let step_dir = shared.lock().await.step_dir();
    let step_socket = berth_api::step_socket(&socket);
    std::fs::create_dir_all(&step_dir)
        .map_err(|e| format!("cannot create {}: {e}", step_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&step_dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", step_dir.display()))?;
    }
    // Everyone may connect: the agent checks each caller's peer credentials.
    let step_listener = berth_agent::daemon::listen_for_everyone(&step_socket)?;
    // This host's node forks the steps' processes (a controller alone has no node here,
    // so its steps have no part here: its launcher never starts).
    let (agents, berth) = {
        let c = shared.lock().await;
        (c.local_agents(), c.settings().berth.clone())
    };
    let launcher = match agents.first() {
        Some(agent) => agent.launcher(),
        None => std::sync::Arc::new(berth_agent::launcher::Launcher::new(berth)),
    };
    let listen = shared.lock().await.settings().listen;
    let key = shared.lock().await.key();
    // Where the nodes reach this controller: its TCP address, or (listening on every
    // address, or on none) its host name.
    let address = match listen {
        Some(addr) if !addr.ip().is_unspecified() => addr.ip().to_string(),
        _ => berth_agent::node::hostname(),
    };
    let gate = std::sync::Arc::new(crate::StepGate(shared.clone(), key.clone(), address));
    // The steps of the process before this one that went on without it, before the
    // reconciling below ends the others.
    for agent in &agents {
        berth_agent::step::server::adopt(agent.job_dirs(), &gate);
    }
    shared.lock().await.reconcile(&shared);
    // Steps are served once the jobs found are in hand (a job's `srun` that waited for
    // this process connects as soon as the socket is there: it waits in the backlog).
    tokio::spawn(berth_agent::step::server::serve(
        step_listener,
        gate,
        launcher,
    ));
    let scheduler = shared.clone();
    let wake = shared.lock().await.wake.clone();
    for agent in &agents {
        tokio::spawn((**agent).clone().upkeep());
    }
    tokio::spawn(async move {
        let mut timed_out = true;
        loop {
            let starts = {
                let mut c = scheduler.lock().await;
                if timed_out || c.due() {
                    c.schedule(&scheduler);
                }
                c.take_starts()
            };
            crate::start_local(&scheduler, starts);
            // A submission or a job's end wakes the loop (unless the thread that saw the end
            // has made the pass already); otherwise pass once a second so that waiting
            // jobs' reasons and priorities (age) stay current.
            timed_out = tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
                .await
                .is_err();
        }
    });
    let stop = shared.lock().await.stop.clone();
    // SIGTERM and SIGINT stop the controller as `berth down` does (jobs keep running).
    let terminated = berth_agent::daemon::termination()?;
    let on_signal = stop.clone();
    tokio::spawn(async move {
        terminated.await;
        on_signal.notify_one();
    });
    let stopping = berth_agent::serve::stop_on(async move { stop.notified().await });
    use berth_agent::serve::serve as serve_api;
    // TCP, where asked for: the same API over TLS, each request with a token.
    let tcp = match listen {
        Some(addr) => {
            let tcp = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let tcp = berth_agent::tls::Listener::new(tcp, key.tls());
            let app = router(shared.clone())
                .layer(axum::middleware::from_fn_with_state(key, token_caller));
            let no_tag = |_: &_| None::<()>;
            let peer = |_: &_, addr: &_| berth_agent::serve::ip_peer(addr);
            let timeout = berth_agent::serve::HEADER_TIMEOUT;
            Some(tokio::spawn(serve_api(
                tcp,
                app,
                no_tag,
                peer,
                timeout,
                stopping.clone(),
            )))
        }
        None => None,
    };
    // The same API for processes in jobs, in the directory their containers get.
    let job_socket = berth_api::job_api_socket(&socket);
    let jobs_listener = berth_agent::daemon::listen_for_everyone(&job_socket)?;
    let local = |shared: Shared| router(shared).layer(axum::middleware::from_fn(local_caller));
    let jobs_app = local(shared.clone());
    let timeout = berth_agent::serve::HEADER_TIMEOUT;
    let jobs_api = tokio::spawn(serve_api(
        jobs_listener,
        jobs_app,
        Peer::of,
        Peer::key,
        timeout,
        stopping.clone(),
    ));
    let app = local(shared.clone());
    serve_api(listener, app, Peer::of, Peer::key, timeout, stopping).await;
    jobs_api.abort();
    if let Some(tcp) = tcp {
        tcp.abort();
    }
    let _ = std::fs::remove_file(&job_socket);
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&step_socket);
    // Its directory too, unless running jobs' containers have it bound (as /.berth/run):
    // their steps' clients wait there for the socket of the next `berth up`.
    if shared.lock().await.active.running().next().is_none() {
        let _ = std::fs::remove_dir(&step_dir);
    }
    shared.lock().await.release_local_node();
    Ok(())
}

/// Runs the controller on a fresh multi-threaded runtime until it stops.
pub fn run(controller: Shared) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let served = runtime.block_on(serve(controller));
    // Runners of running jobs are waited for on blocking threads, which would hold up the
    // runtime's drop until those jobs end: they go on without the controller (and the next
    // one reconciles them), so the controller does not wait for them.
    runtime.shutdown_background();
    served
}

#[cfg(test)]
mod tests {
    /// docs/openapi.json is the API's document as the code defines it: a change to a handler
    /// or a type that is not also made there fails here. `BERTH_WRITE_OPENAPI=1 cargo test -p
    /// berth-controller openapi` writes it anew.
    #[test]
    fn openapi_document_matches_the_committed_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = super::openapi_json();
        if std::env::var_os("BERTH_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is out of date: run BERTH_WRITE_OPENAPI=1 cargo test -p berth-controller openapi, and commit it"
        );
    }
}
