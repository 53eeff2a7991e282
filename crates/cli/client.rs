//! A minimal, blocking HTTP/1.1 client for the controller's Unix socket (or TCP, with a token). The CLI makes one
//! request per command, so a connection, a request and a read to the end is all it needs,
//! and it keeps `berth submit` free of an async runtime (its round trip is a goal: < 2 ms).

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The controller's socket: $BERTH_SOCKET, else /run/berth/berth.sock.
pub fn socket() -> PathBuf {
    std::env::var_os("BERTH_SOCKET")
        .map_or_else(|| PathBuf::from("/run/berth/berth.sock"), PathBuf::from)
}

/// A connection to the controller: its Unix socket, or TCP where $BERTH_API names an
/// address (`http://HOST:PORT`), with the token in $BERTH_TOKEN.
enum Connection {
    Local(UnixStream),
    Network(std::net::TcpStream, String),
}

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
        let addr = api
            .strip_prefix("http://")
            .map(|a| a.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| anyhow!("BERTH_API is '{api}': expected http://HOST:PORT"))?;
        let token = std::env::var("BERTH_TOKEN").map_err(|_| {
            anyhow!("BERTH_API names a controller over TCP: set BERTH_TOKEN too, to a token from `berth token` on its machine")
        })?;
        let stream = std::net::TcpStream::connect(addr)
            .with_context(|| format!("cannot reach the berth controller at {addr} (BERTH_API)"))?;
        Ok(Connection::Network(stream, token))
    }
}

pub fn request<T: DeserializeOwned>(
    method: &str,
    path: &str,
    body: Option<&impl Serialize>,
) -> Result<T> {
    let connection = Connection::open()?;
    let body = body
        .map(|b| serde_json::to_vec(b).expect("request serialises"))
        .unwrap_or_default();
    let auth = match &connection {
        Connection::Network(_, token) => format!("Authorization: Bearer {}\r\n", token.trim()),
        Connection::Local(_) => String::new(),
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: berth\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut stream: Box<dyn ReadWrite> = match connection {
        Connection::Local(s) => Box::new(s),
        Connection::Network(s, _) => Box::new(s),
    };
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(&body))
        .context("cannot send the request to the controller")?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .context("cannot read the controller's answer")?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("the controller sent a malformed answer"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let mut payload = response[split + 4..].to_vec();
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        payload = dechunk(&payload)?;
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if !(200..300).contains(&status) {
        let message = serde_json::from_slice::<berth_api::ErrorBody>(&payload)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&payload).into_owned());
        bail!("{message}");
    }
    serde_json::from_slice(&payload).context(
        "the controller's answer is not what this berth expects: are they the same version?",
    )
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunked answer"))?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .map_err(|_| anyhow!("bad chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunked answer");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
