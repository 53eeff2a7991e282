//! A minimal, blocking HTTP/1.1 client: one request per connection, read to the end. What the
//! CLI (on the controller's Unix socket, or TCP) and the daemons (controller and agents, over
//! TLS with credentials) need, without an async runtime or a client library's build cost.

use crate::auth::Key;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};
use std::time::Duration;

/// An answer: the status and the body (de-chunked).
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as `T` for a 2xx answer; otherwise the error message the API sent.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        if !(200..300).contains(&self.status) {
            return Err(serde_json::from_slice::<berth_api::ErrorBody>(&self.body)
                .map(|e| e.error)
                .unwrap_or_else(|_| {
                    format!(
                        "HTTP {}: {}",
                        self.status,
                        String::from_utf8_lossy(&self.body)
                    )
                }));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            format!("the answer is not what this berth expects ({e}): are both the same version?")
        })
    }
}

/// Sends one request on `stream` (`token`: an `Authorization: Bearer` credential) and reads the
/// answer to its end.
pub fn exchange(
    stream: &mut (impl Read + Write),
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<Answer> {
    let body = Body {
        content_type: "application/json",
        length: body.len() as u64,
        data: &mut &body[..],
        upload: false,
    };
    exchange_body(stream, method, path, token, body)
}

/// A request's body: `length` bytes of `content_type` read from `data` as they are sent.
pub struct Body<'a> {
    pub content_type: &'a str,
    pub length: u64,
    pub data: &'a mut dyn Read,
    /// An upload: sent only once the server has said to go on (`Expect: 100-continue`), so
    /// that a refusal comes back before any of it is sent.
    pub upload: bool,
}

/// [`exchange`] with a body sent as it is read (an upload).
pub fn exchange_body(
    stream: &mut (impl Read + Write),
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> std::io::Result<Answer> {
    let head = head(method, path, token, &body);
    stream.write_all(head.as_bytes())?;
    let mut response = Vec::new();
    let go_on = !body.upload || {
        // The server's interim answer, or its final one (a refusal: the body is not sent).
        let mut byte = [0u8; 1];
        while !response.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte)? {
                0 => break,
                _ => response.push(byte[0]),
            }
        }
        response.starts_with(b"HTTP/1.1 100")
    };
    if go_on {
        response.clear();
        let sent = std::io::copy(&mut body.data.take(body.length), stream)?;
        if sent < body.length {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the body ended after {sent} of its {} bytes", body.length),
            ));
        }
    }
    read_answer(stream, response)
}

/// A request's head, for `body`.
fn head(method: &str, path: &str, token: Option<&str>, body: &Body) -> String {
    let auth = token.map_or(String::new(), |t| {
        format!("Authorization: Bearer {}\r\n", t.trim())
    });
    let expect = if body.upload {
        "Expect: 100-continue\r\n"
    } else {
        ""
    };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: berth\r\n{auth}{expect}Content-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.content_type, body.length
    )
}

/// Reads an answer to its end, after what was read of it already (`response`).
fn read_answer(stream: &mut impl Read, mut response: Vec<u8>) -> std::io::Result<Answer> {
    stream.read_to_end(&mut response)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("a malformed HTTP answer"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let mut payload = response[split + 4..].to_vec();
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        payload = berth_core::http::dechunk(&payload)
            .ok_or_else(|| bad("a malformed chunked HTTP answer"))?;
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Answer {
        status,
        body: payload,
    })
}

/// `POST base/path` with `body` as JSON over TLS, for the daemons: `base` is
/// `https://HOST:PORT`, the credential names `principal`, signed with `key`. Gives up after
/// `timeout` without an answer.
pub fn post<T: Serialize, R: DeserializeOwned>(
    base: &str,
    path: &str,
    (key, principal): (&Key, &str),
    body: &T,
    timeout: Duration,
) -> Result<R, String> {
    let body = serde_json::to_vec(body).expect("requests serialise");
    request(base, "POST", path, (key, principal), &body, timeout)?.json()
}

/// `GET base/path` over TLS, for the daemons, as [`post`]: the answer, whatever its status.
pub fn get(
    base: &str,
    path: &str,
    from: (&Key, &str),
    timeout: Duration,
) -> Result<Answer, String> {
    request(base, "GET", path, from, &[], timeout)
}

/// A TLS connection to the daemon at `base` (`https://HOST:PORT`) of the cluster `key`
/// belongs to, that gives up on reading or writing after `timeout`.
pub fn connect(base: &str, key: &Key, timeout: Duration) -> Result<crate::tls::Stream, String> {
    let stream = crate::tls::dial(base, timeout, timeout)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    crate::tls::connect(stream, &key.tls().client).map_err(|e| format!("{base}: {e}"))
}

fn request(
    base: &str,
    method: &str,
    path: &str,
    from: (&Key, &str),
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, String> {
    deliver(base, method, path, from, body, timeout).map_err(|f| f.message)
}

/// Why a request to a daemon got no answer.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// The request was sent whole, and no answer came (in time): the daemon may have
    /// acted on it. Otherwise it cannot have (it was not reached, or not all sent).
    pub unanswered: bool,
}

/// [`post`] that tells a request the daemon may have acted on (sent, no answer) from one it
/// cannot have; an error the daemon answered is a failure of the second kind.
pub fn post_once<T: Serialize, R: DeserializeOwned>(
    base: &str,
    path: &str,
    from: (&Key, &str),
    body: &T,
    timeout: Duration,
) -> Result<R, Failure> {
    let body = serde_json::to_vec(body).expect("requests serialise");
    deliver(base, "POST", path, from, &body, timeout)?
        .json()
        .map_err(|message| Failure {
            message,
            unanswered: false,
        })
}

fn deliver(
    base: &str,
    method: &str,
    path: &str,
    (key, principal): (&Key, &str),
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, Failure> {
    let failed = |unanswered: bool| {
        move |e: std::io::Error| Failure {
            message: format!("{base}{path}: {e}"),
            unanswered,
        }
    };
    let mut stream = connect(base, key, timeout).map_err(|message| Failure {
        message,
        unanswered: false,
    })?;
    let whole = Body {
        content_type: "application/json",
        length: body.len() as u64,
        data: &mut &body[..],
        upload: false,
    };
    let head = head(method, path, Some(&key.credential(principal)), &whole);
    // Written whole (one TLS record, as a small request is), and flushed: an error in
    // sending it is seen here.
    stream
        .write_all(&[head.as_bytes(), body].concat())
        .and_then(|()| stream.flush())
        .map_err(failed(false))?;
    read_answer(&mut stream, Vec::new()).map_err(failed(true))
}
