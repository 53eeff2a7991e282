//! The daemons' HTTP server: `axum::serve`'s work, with the limits a caller must not be able
//! to get round. Without them one user's half-sent requests held the controller's
//! descriptors until a job's result file could not be opened (its job was recorded lost),
//! and held `berth down` for as long as they stayed open.
//!
//! - At most [`MAX_CONNECTIONS`] connections at once on a listener, and [`ROOT_RESERVE`]
//!   more for root (a Unix socket's peer of uid 0), so that an administrator's `berth
//!   queue` or `berth down` still gets in while users hold every other: once all are taken,
//!   others' new connections are closed as they are accepted (their clients fail at once
//!   instead of waiting unseen), leaving the process's descriptors to its jobs.
//! - At most [`MAX_PER_PEER`] of them from one peer (a Unix socket's user, a TCP address),
//!   in a request or not (a long poll's, a half-sent one's): more are closed as they are
//!   accepted. Without it one user's half-sent requests held every permit and kept
//!   everyone else's requests waiting for as long as they went on.
//! - A request's header must arrive within the time its server gives (hyper's own timer:
//!   [`HEADER_TIMEOUT`] on the controller's sockets, where any user may connect), or the
//!   connection is closed; so must the next one on a kept-alive connection. Its body must
//!   keep coming: nothing of it for [`BODY_IDLE`] once the handler reads it ends the request
//!   (`Paced`).
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

/// Connections a listener serves at once for root beyond [`MAX_CONNECTIONS`].
pub const ROOT_RESERVE: usize = 64;

/// The peer (see [`serve`]) that is root: a Unix socket's peer of uid 0 (no TCP address is 0).
pub const ROOT_PEER: u128 = 0;

/// Connections from one peer a listener holds at once.
pub const MAX_PER_PEER: usize = 256;

/// How long a request's body may send nothing, once its handler reads it.
pub const BODY_IDLE: Duration = Duration::from_secs(60);

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
/// [`MAX_PER_PEER`]).
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
    let reserve = std::sync::Arc::new(tokio::sync::Semaphore::new(ROOT_RESERVE));
    let peers = std::sync::Arc::new(Peers::default());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        let (io, addr) = accepted;
        let peer = peer(&io, &addr);
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) if peer == Some(ROOT_PEER) => match reserve.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => continue,
            },
            Err(_) => continue,
        };
        let Some(counted) = Counted::enter(&peers, peer) else {
            continue;
        };
        let tag = tag(&io);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(|body| axum::body::Body::new(Paced::new(body)));
            if let Some(tag) = &tag {
                request.extensions_mut().insert(ConnectInfo(tag.clone()));
            }
            // (A Router is always ready: no poll_ready needed.)
            tower_service::Service::call(&mut app.clone(), request)
        });
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _held = (permit, counted);
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
    let drained = async {
        let _all = permits.acquire_many(MAX_CONNECTIONS as u32).await;
        let _reserve = reserve.acquire_many(ROOT_RESERVE as u32).await;
    };
    let _ = tokio::time::timeout(STOP_GRACE, drained).await;
}

/// Open connections, by peer.
#[derive(Default)]
struct Peers(std::sync::Mutex<std::collections::HashMap<u128, usize>>);

impl Peers {
    /// Counts one more of `peer`'s; `false` (and not counted) where it has its most.
    fn enter(&self, peer: u128) -> bool {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(peer).or_default();
        if *n >= MAX_PER_PEER {
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

/// A connection's place in [`Peers`], given up when it closes.
struct Counted {
    peers: std::sync::Arc<Peers>,
    peer: Option<u128>,
}

impl Counted {
    /// `peer`'s connection counted, or `None` where it has its most already.
    fn enter(peers: &std::sync::Arc<Peers>, peer: Option<u128>) -> Option<Counted> {
        if peer.is_some_and(|p| !peers.enter(p)) {
            return None;
        }
        Some(Counted {
            peers: peers.clone(),
            peer,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(p) = self.peer {
            self.peers.leave(p);
        }
    }
}

/// A request's body that must keep coming: once its handler reads it, nothing of it for
/// [`BODY_IDLE`] is an error (the request fails, its connection closes), so that a
/// half-sent request does not hold its connection for ever.
struct Paced {
    inner: Incoming,
    idle: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Paced {
    fn new(inner: Incoming) -> Paced {
        Paced { inner, idle: None }
    }
}

impl hyper::body::Body for Paced {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        let deadline = tokio::time::Instant::now() + BODY_IDLE;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                match &mut this.idle {
                    Some(idle) => idle.as_mut().reset(deadline),
                    None => this.idle = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                        "the request's body sent nothing for {} s",
                        BODY_IDLE.as_secs()
                    )
                    .into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
    fn a_peer_holds_at_most_its_share_of_connections() {
        let peers = std::sync::Arc::new(Peers::default());
        let mut held: Vec<Counted> = (0..MAX_PER_PEER)
            .map(|_| Counted::enter(&peers, Some(1000)).expect("room"))
            .collect();
        assert!(Counted::enter(&peers, Some(1000)).is_none(), "one too many");
        assert!(
            Counted::enter(&peers, Some(1001)).is_some(),
            "another user's"
        );
        assert!(Counted::enter(&peers, None).is_some(), "nobody's");
        // One closed, another may come.
        held.pop();
        assert!(Counted::enter(&peers, Some(1000)).is_some());
        assert!(
            Counted::enter(&peers, Some(1000)).is_some(),
            "(the one before it closed)"
        );
        held.push(Counted::enter(&peers, Some(1000)).expect("room"));
        assert!(Counted::enter(&peers, Some(1000)).is_none());
        assert!(peers.0.lock().unwrap().get(&1001).is_none());
    }
}
