//! The daemons' HTTP server: `axum::serve`'s work, with the limits a caller must not be able
//! to get round. Without them one user's half-sent requests held the controller's
//! descriptors until a job's result file could not be opened (its job was recorded lost),
//! and held `berth down` for as long as they stayed open.
//!
//! - At most [`MAX_CONNECTIONS`] connections at once on a listener: more wait in its
//!   backlog, leaving the process's descriptors to its jobs.
//! - A request's header must arrive within the time its server gives (hyper's own timer:
//!   [`HEADER_TIMEOUT`] on the controller's sockets, where any user may connect), or the
//!   connection is closed; so must the next one on a kept-alive connection.
//! - A stop lets open requests finish for at most [`STOP_GRACE`], then returns (the
//!   connections' tasks go with the daemon's runtime).
//!
//! Each connection is a task of its own, as axum's are (a `JoinSet` of them, polled by the
//! accept loop, slowed the controller's answers to its agents by seconds while its store was
//! locked: measured, not kept).

use axum::extract::connect_info::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::time::Duration;
use tokio::sync::watch;

/// Connections a listener serves at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a request's header may take to arrive at the controller (the whole of it:
/// berth's clients send it at once).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The same at a node agent, whose callers are controllers (a start held up on its way must
/// still reach it, to be refused as late, not lost).
pub const AGENT_HEADER_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a stop waits for open requests (a long poll's, a half-sent one) before it drops
/// them.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` turns true, each request's header within
/// `header_timeout`; each request carries `ConnectInfo(tag(io))` where `tag` gives one (a
/// Unix socket's peer credentials).
pub async fn serve<L, T>(
    mut listener: L,
    app: axum::Router,
    tag: impl Fn(&L::Io) -> Option<T> + Send + 'static,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    L: axum::serve::Listener,
    T: Clone + Send + Sync + 'static,
{
    // (Each connection holds a permit: when all are back, no connection is left.)
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = async {
                let permit = permits.clone().acquire_owned().await.expect("never closed");
                (permit, listener.accept().await)
            } => accepted,
            () = stopped(&mut stop) => break,
        };
        let (permit, (io, _)) = accepted;
        let tag = tag(&io);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            if let Some(tag) = &tag {
                request.extensions_mut().insert(ConnectInfo(tag.clone()));
            }
            // (A Router is always ready: no poll_ready needed.)
            tower_service::Service::call(&mut app.clone(), request)
        });
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    // Stopped: open requests get their grace, then go with the runtime.
    let drained = permits.acquire_many(MAX_CONNECTIONS as u32);
    let _ = tokio::time::timeout(STOP_GRACE, drained).await;
}

/// Returns once `stop` is true (or its sender gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // (The guard wait_for returns is dropped here: it may not be held across an await.)
    let _ = stop.wait_for(|stopped| *stopped).await.map(drop);
}

/// A stop signal for [`serve`]: the receiver turns true once `stopped` completes.
pub fn stop_on(
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        stopped.await;
        let _ = tx.send(true);
    });
    rx
}
