//! The daemons' HTTP server: `axum::serve`'s work, with the limits a caller must not be able
//! to get round. Without them one user's half-sent requests held the controller's
//! descriptors until a job's result file could not be opened (its job was recorded lost),
//! and held `berth down` for as long as they stayed open.
//!
//! - At most [`MAX_CONNECTIONS`] connections at once on a listener: more wait in its
//!   backlog, leaving the process's descriptors to its jobs.
//! - At most [`MAX_IDLE_PER_PEER`] of them from one peer (a Unix socket's user, a TCP
//!   address) outside a request (before its first, or between two): more are closed as they
//!   are accepted. Without it one user's half-sent requests held every permit and kept
//!   everyone else's requests in the backlog for as long as they went on.
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
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// Connections a listener serves at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Connections from one peer a listener holds at once outside a request.
pub const MAX_IDLE_PER_PEER: usize = 256;

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
/// Unix socket's peer credentials); `peer` says whose a connection is (see
/// [`MAX_IDLE_PER_PEER`]).
pub async fn serve<L, T>(
    mut listener: L,
    app: axum::Router,
    tag: impl Fn(&L::Io) -> Option<T> + Send + 'static,
    peer: impl Fn(&L::Io, &L::Addr) -> Option<u128> + Send + 'static,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    L: axum::serve::Listener,
    T: Clone + Send + Sync + 'static,
{
    // (Each connection holds a permit: when all are back, no connection is left.)
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let idle = std::sync::Arc::new(Idle::default());
    loop {
        let accepted = tokio::select! {
            accepted = async {
                let permit = permits.clone().acquire_owned().await.expect("never closed");
                (permit, listener.accept().await)
            } => accepted,
            () = stopped(&mut stop) => break,
        };
        let (permit, (io, addr)) = accepted;
        let peer = peer(&io, &addr);
        if peer.is_some_and(|p| !idle.enter(p, false)) {
            continue;
        }
        // This connection outside a request: counted in `idle` for its peer.
        let outside = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let tag = tag(&io);
        let app = app.clone();
        let (idle_now, outside_now) = (idle.clone(), outside.clone());
        let idle_at_close = idle.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            if let Some(tag) = &tag {
                request.extensions_mut().insert(ConnectInfo(tag.clone()));
            }
            let peer = peer.filter(|_| outside_now.swap(false, Ordering::SeqCst));
            if let Some(p) = peer {
                idle_now.leave(p);
            }
            // (A Router is always ready: no poll_ready needed.)
            let answer = tower_service::Service::call(&mut app.clone(), request);
            let (idle, outside) = (idle_now.clone(), outside_now.clone());
            async move {
                let answered = answer.await;
                // Between requests again, kept alive.
                if let Some(p) = peer {
                    idle.enter(p, true);
                    outside.store(true, Ordering::SeqCst);
                }
                answered
            }
        });
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _counted = Counted {
                idle: idle_at_close,
                outside,
                peer,
            };
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

/// Connections outside a request, by peer.
#[derive(Default)]
struct Idle(std::sync::Mutex<std::collections::HashMap<u128, usize>>);

impl Idle {
    /// Counts one more of `peer`'s; `false` (and not counted) where it has its most, unless
    /// `always`.
    fn enter(&self, peer: u128, always: bool) -> bool {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(peer).or_default();
        if *n >= MAX_IDLE_PER_PEER && !always {
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self, peer: u128) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&peer);
            }
        }
    }
}

/// A connection's place in [`Idle`], given up when it closes outside a request.
struct Counted {
    idle: std::sync::Arc<Idle>,
    outside: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peer: Option<u128>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(p) = self
            .peer
            .filter(|_| self.outside.swap(false, Ordering::SeqCst))
        {
            self.idle.leave(p);
        }
    }
}

/// A TCP peer's address as [`serve`]'s `peer` takes it.
pub fn ip_peer(addr: &std::net::SocketAddr) -> Option<u128> {
    Some(match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().into(),
        std::net::IpAddr::V6(ip) => ip.into(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_holds_at_most_its_share_of_idle_connections() {
        let idle = Idle::default();
        for _ in 0..MAX_IDLE_PER_PEER {
            assert!(idle.enter(1000, false));
        }
        assert!(!idle.enter(1000, false), "one too many");
        assert!(idle.enter(1001, false), "another user's");
        // One back in a request, another may come; one done with its request always counts.
        idle.leave(1000);
        assert!(idle.enter(1000, false));
        assert!(idle.enter(1000, true));
        assert_eq!(idle.0.lock().unwrap()[&1000], MAX_IDLE_PER_PEER + 1);
    }
}
