//! A minimal, blocking HTTP/1.1 client for the controller's Unix socket (or TCP, with a token). The CLI makes one
//! request per command, so a connection, a request and a read to the end is all it needs,
//! and it keeps `berth submit` free of an async runtime (its round trip is a goal: < 2 ms).

use anyhow::{anyhow, bail, Context, Result};
pub use berth_agent::http::Body;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The controller's socket: $BERTH_SOCKET, else /run/berth/berth.sock.
pub fn socket() -> PathBuf {
    std::env::var_os("BERTH_SOCKET")
        .map_or_else(|| PathBuf::from("/run/berth/berth.sock"), PathBuf::from)
}

/// A connection to the controller: its Unix socket, or TLS where $BERTH_API names its
/// address (`https://HOST:PORT`), or those of the controllers that fail over, separated by
/// commas (the first that answers: standbys listen on nothing), with the token in
/// $BERTH_TOKEN (which also names the certificate the controller must show).
enum Connection {
    Local(UnixStream),
    Network(Box<berth_agent::tls::Stream>, String),
}

/// How long a connection to one of $BERTH_API's controllers may take (a host that is down
/// answers nothing at all).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Connection {
    fn open() -> Result<Connection> {
        let Some(api) = std::env::var_os("BERTH_API") else {
            let socket = socket();
            let stream = UnixStream::connect(&socket).with_context(|| {
                format!("cannot reach the berth controller at {}: is it running (`berth up`)? BERTH_SOCKET names another socket", socket.display())
            })?;
            return Ok(Connection::Local(stream));
        };
        let api = api.to_string_lossy().into_owned();
        let addrs = addresses(&api).map_err(|e| anyhow!("BERTH_API is '{api}': {e}"))?;
        let token = std::env::var("BERTH_TOKEN").map_err(|_| {
            anyhow!("BERTH_API names a controller over TCP: set BERTH_TOKEN too, to a token from `berth token` on its machine")
        })?;
        let fingerprint = berth_agent::auth::Claims::unverified(&token)
            .and_then(|c| c.tls)
            .ok_or_else(|| anyhow!("BERTH_TOKEN is not a token from `berth token` that names the controller's certificate (a malformed or an older token): get a new one with `berth token` on its machine"))?;
        let tls = berth_agent::tls::client_config(&fingerprint).map_err(|e| anyhow!(e))?;
        // Several that fail over: asked again until one has taken over.
        let connected = berth_agent::failing_over(addrs.len(), || {
            let mut failed = Vec::new();
            for addr in &addrs {
                match connect(addr).and_then(|tcp| berth_agent::tls::connect(tcp, &tls)) {
                    Ok(stream) => return Ok(stream),
                    Err(e) => failed.push(format!("{addr}: {e}")),
                }
            }
            Err(failed.join("; "))
        });
        match connected {
            Ok(stream) => Ok(Connection::Network(Box::new(stream), token)),
            Err(failed) => bail!("cannot reach the berth controller (BERTH_API): {failed}"),
        }
    }
}

/// Connects to `addr` (`HOST:PORT`): each of its addresses in turn, for up to
/// [`CONNECT_TIMEOUT`] each.
fn connect(addr: &str) -> std::io::Result<std::net::TcpStream> {
    let mut last = std::io::Error::other("the name has no address");
    for target in std::net::ToSocketAddrs::to_socket_addrs(addr)? {
        match std::net::TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The `HOST:PORT` of each `https://HOST:PORT` in $BERTH_API's comma-separated list.
fn addresses(api: &str) -> Result<Vec<&str>, String> {
    api.split(',')
        .map(|a| berth_agent::tls::address(a.trim()))
        .collect()
}

/// The controller's host: the first that $BERTH_API names, else this one (where its
/// socket is).
pub fn controller_host() -> String {
    controller_hosts().swap_remove(0)
}

/// The hosts of the controllers $BERTH_API names, else this one (where its socket is).
pub fn controller_hosts() -> Vec<String> {
    let api = std::env::var("BERTH_API").ok();
    match api.as_deref().and_then(|api| addresses(api).ok()) {
        Some(addrs) => addrs
            .iter()
            .map(|addr| {
                addr.rsplit_once(':')
                    .map_or(*addr, |(host, _)| host)
                    .to_string()
            })
            .collect(),
        None => vec![berth_agent::node::hostname()],
    }
}

pub fn request<T: DeserializeOwned>(
    method: &str,
    path: &str,
    body: Option<&impl Serialize>,
) -> Result<T> {
    let body = body
        .map(|b| serde_json::to_vec(b).expect("request serialises"))
        .unwrap_or_default();
    let body = Body {
        content_type: "application/json",
        length: body.len() as u64,
        data: &mut &body[..],
        upload: false,
    };
    request_body(method, path, body)
}

/// [`request`] with a body of any kind, sent as it is read (an upload).
pub fn request_body<T: DeserializeOwned>(method: &str, path: &str, body: Body) -> Result<T> {
    let answer = exchange(method, path, body)?;
    answer.json().map_err(|e| failure(&answer, e))
}

/// A GET whose answer is text (a job's batch script), as it came.
pub fn text(path: &str) -> Result<String> {
    let body = Body {
        content_type: "application/json",
        length: 0,
        data: &mut &[][..],
        upload: false,
    };
    let answer = exchange("GET", path, body)?;
    match (200..300).contains(&answer.status) {
        true => Ok(String::from_utf8_lossy(&answer.body).into_owned()),
        false => Err(failure(&answer, answer.json::<()>().unwrap_err())),
    }
}

/// The error of a failed answer: its message (a 404's as [`Failure::NotFound`], a 403's as
/// [`Failure::Forbidden`]).
fn failure(answer: &berth_agent::http::Answer, message: String) -> anyhow::Error {
    match answer.status {
        404 => anyhow::Error::new(Failure::NotFound(message)),
        403 => anyhow::Error::new(Failure::Forbidden(message)),
        _ => anyhow!("{message}"),
    }
}

/// One request to the controller, and its answer.
fn exchange(method: &str, path: &str, body: Body) -> Result<berth_agent::http::Answer> {
    let unreachable = |e: anyhow::Error| anyhow::Error::new(Failure::Unreachable(format!("{e:#}")));
    let answer = match Connection::open().map_err(unreachable)? {
        Connection::Local(mut s) => {
            berth_agent::http::exchange_body(&mut s, method, path, None, body)
        }
        Connection::Network(mut s, token) => {
            berth_agent::http::exchange_body(&mut s, method, path, Some(&token), body)
        }
    }
    .context("cannot talk to the controller")
    .map_err(unreachable)?;
    Ok(answer)
}

/// What callers may tell from other failures of a request (`downcast_ref`): each says why.
#[derive(Debug)]
pub enum Failure {
    /// The controller's answer to a request for something it does not have (HTTP 404).
    NotFound(String),
    /// Its answer to a request the caller may not make (HTTP 403: another's job).
    Forbidden(String),
    /// The controller could not be reached, or the connection to it broke before its
    /// answer (it may be restarting): nothing was said about the request.
    Unreachable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotFound(message)
            | Failure::Forbidden(message)
            | Failure::Unreachable(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Failure {}

/// Whether `e` is the controller saying it has no such thing.
pub fn is_not_found(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<Failure>(), Some(Failure::NotFound(_)))
}

/// Whether `e` is the controller refusing the caller ([`Failure::Forbidden`]).
pub fn is_forbidden(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<Failure>(), Some(Failure::Forbidden(_)))
}

/// Whether `e` is the controller out of reach ([`Failure::Unreachable`]).
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<Failure>(), Some(Failure::Unreachable(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berth_api_names_one_controller_or_several() {
        assert_eq!(addresses("https://c1:6817"), Ok(vec!["c1:6817"]));
        assert_eq!(
            addresses("https://c1:6817/, https://10.0.0.2:6817"),
            Ok(vec!["c1:6817", "10.0.0.2:6817"])
        );
        for bad in [
            "c1:6817",
            "https://",
            "https://c1:6817/v1",
            "https://c1:6817,",
        ] {
            assert!(addresses(bad).is_err(), "{bad}");
        }
        // The API is TLS only: a plain http:// address says what to write.
        let e = addresses("http://c1:6817").unwrap_err();
        assert!(e.contains("https://c1:6817"), "{e}");
    }
}
