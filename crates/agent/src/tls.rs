//! TLS on berth's own TCP connections: the controller's API and the agents'. Without it a
//! credential seen on the network could be replayed (for its minute) and every job's script,
//! environment and output would cross the network readable.
//!
//! The cluster's certificate is derived from the cluster key: an Ed25519 key pair whose seed
//! is an HMAC of the key, in a self-signed certificate made here byte for byte the same on
//! every host that holds the key. Each controller and agent serves it; a daemon accepts a
//! server only if it shows exactly that certificate (so only a holder of the cluster key can
//! be a server), and then proves who it is itself with its credential inside the encrypted
//! connection. A user's CLI pins the certificate's SHA-256, which `berth token` puts in the
//! token it gives. TLS 1.3 only: both ends are berth.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, SignatureScheme,
};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

/// The name every client asks for (the certificate names no host: it is pinned instead).
const SERVER_NAME: &str = "berth";

/// The cluster's TLS identity, derived from its key (see the module's comment).
pub struct Tls {
    /// The certificate (DER).
    certificate: Vec<u8>,
    /// The SHA-256 of the certificate, hex: what clients pin.
    pub fingerprint: String,
    pub server: Arc<ServerConfig>,
    /// For berth's daemons: pins the cluster's certificate.
    pub client: Arc<ClientConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// The identity of the cluster whose key gives `seed` (32 bytes).
    pub fn from_seed(seed: &[u8; 32]) -> Tls {
        use ring::signature::KeyPair;
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .expect("any 32 bytes are an Ed25519 seed");
        let cert = certificate(pair.public_key().as_ref(), |tbs| {
            pair.sign(tbs).as_ref().to_vec()
        });
        // PKCS#8 v1 (RFC 8410): the algorithm and the seed.
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(seed);
        let fingerprint = sha256_hex(&cert);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8));
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("ring does TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.clone())], key)
            .expect("the derived certificate fits its key");
        // One request per connection: nothing to resume.
        server.send_tls13_tickets = 0;
        let client = client_config(&fingerprint).expect("a fingerprint made here is well-formed");
        Tls {
            certificate: cert,
            fingerprint,
            server: Arc::new(server),
            client,
        }
    }
}

impl Tls {
    /// The certificate in PEM, for other TLS clients (Prometheus, curl): it names the host
    /// `berth` (ask for that name, e.g. Prometheus's `tls_config: server_name`).
    pub fn pem(&self) -> String {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&self.certificate);
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    /// Writes [`Tls::pem`] to `path` (mode 0644: it is no secret) unless it is there already,
    /// whole or not at all.
    pub fn write_pem(&self, path: &std::path::Path) -> Result<(), String> {
        let pem = self.pem();
        if std::fs::read_to_string(path).is_ok_and(|old| old == pem) {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &pem)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
            })
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("cannot write {}: {e}", path.display())
            })
    }
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One DER element: `tag`, the length, `content`.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

const SEQUENCE: u8 = 0x30;

/// A self-signed X.509 v3 certificate for the Ed25519 `public` key, `sign` making the
/// signature: subject and issuer `CN=berth cluster`, valid from 1970 with no end (RFC 5280's
/// 99991231235959Z), for the host name `berth` (the one extension, subjectAltName, which
/// other clients check). The same key gives the same bytes (Ed25519 signatures are
/// deterministic).
fn certificate(public: &[u8], sign: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let ed25519 = der(SEQUENCE, &der(0x06, &[0x2b, 0x65, 0x70]));
    let common_name = [der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, b"berth cluster")].concat();
    let name = der(SEQUENCE, &der(0x31, &der(SEQUENCE, &common_name)));
    let validity = [der(0x17, b"700101000000Z"), der(0x18, b"99991231235959Z")].concat();
    let key = [ed25519.clone(), der(0x03, &[&[0u8][..], public].concat())].concat();
    let alt_name = der(SEQUENCE, &der(0x82, SERVER_NAME.as_bytes()));
    let alt_name = der(
        SEQUENCE,
        &[der(0x06, &[0x55, 0x1d, 0x11]), der(0x04, &alt_name)].concat(),
    );
    let tbs = der(
        SEQUENCE,
        &[
            der(0xa0, &der(0x02, &[2])), // version 3
            der(0x02, &[1]),             // serial number
            ed25519.clone(),
            name.clone(),
            der(SEQUENCE, &validity),
            name,
            der(SEQUENCE, &key),
            der(0xa3, &der(SEQUENCE, &alt_name)),
        ]
        .concat(),
    );
    let signature = der(0x03, &[&[0u8][..], &sign(&tbs)].concat());
    der(SEQUENCE, &[tbs, ed25519, signature].concat())
}

/// Accepts the server whose certificate has this SHA-256, and no other.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match sha256_hex(end_entity) == self.fingerprint {
            true => Ok(ServerCertVerified::assertion()),
            false => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("berth speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client configuration that trusts only the server whose certificate's SHA-256 (hex) is
/// `fingerprint`.
pub fn client_config(fingerprint: &str) -> Result<Arc<ClientConfig>, String> {
    if !berth_image::is_sha256_hex(fingerprint) {
        return Err(format!(
            "'{fingerprint}' is not the SHA-256 of a certificate (64 hex digits)"
        ));
    }
    let provider = provider();
    let pinned = Pinned {
        fingerprint: fingerprint.to_ascii_lowercase(),
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring does TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `HOST:PORT` of a daemon's `https://HOST:PORT` URL (a trailing '/' taken).
pub fn address(url: &str) -> Result<&str, String> {
    match url
        .strip_prefix("https://")
        .map(|a| a.trim_end_matches('/'))
    {
        Some(a) if !a.is_empty() && !a.contains('/') => Ok(a),
        _ if url.starts_with("http://") => Err(format!(
            "{url}: berth's daemons speak TLS only: write https://{}",
            &url["http://".len()..]
        )),
        _ => Err(format!("{url}: expected https://HOST:PORT")),
    }
}

/// A TCP connection to the daemon at `url` (`https://HOST:PORT`), its TLS handshake the
/// caller's to make: given up on after `connect` (a host that is down answers nothing), its
/// reads after `read`.
pub fn dial(
    url: &str,
    connect: std::time::Duration,
    read: std::time::Duration,
) -> Result<TcpStream, String> {
    let addr = address(url)?;
    let target = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let tcp = TcpStream::connect_timeout(&target, connect)
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    tcp.set_read_timeout(Some(read))
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(tcp)
}

/// Explains a failed handshake: the usual cause is a server of another cluster.
fn handshake_error(e: io::Error) -> io::Error {
    let foreign = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
    match foreign {
        true => io::Error::new(
            io::ErrorKind::PermissionDenied,
            "its TLS certificate is not this berth cluster's (another cluster key, or a token from another cluster)",
        ),
        false => io::Error::new(e.kind(), format!("TLS handshake: {e}")),
    }
}

/// A TLS connection over a blocking TCP stream.
pub type Stream = rustls::StreamOwned<ClientConnection, TcpStream>;

/// How long a server may take over its part of the handshake, where the socket has no
/// timeout of its own (something else listening there may never answer).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn handshake(tcp: &mut TcpStream, config: &Arc<ClientConfig>) -> io::Result<ClientConnection> {
    let name = ServerName::try_from(SERVER_NAME).expect("a valid name");
    let mut conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    // The request follows the client's last handshake message at once: not held back until
    // that one is acknowledged (Nagle's algorithm against the server's delayed ACK).
    tcp.set_nodelay(true)?;
    let unlimited = tcp.read_timeout()?.is_none();
    if unlimited {
        tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    }
    while conn.is_handshaking() {
        conn.complete_io(tcp).map_err(handshake_error)?;
    }
    if unlimited {
        tcp.set_read_timeout(None)?;
    }
    Ok(conn)
}

/// Completes a TLS handshake on `tcp` with a server `config` trusts.
pub fn connect(mut tcp: TcpStream, config: &Arc<ClientConfig>) -> io::Result<Stream> {
    let conn = handshake(&mut tcp, config)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// [`connect`] on tokio.
pub async fn connect_async(
    tcp: tokio::net::TcpStream,
    config: &Arc<ClientConfig>,
) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = ServerName::try_from(SERVER_NAME).expect("a valid name");
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(handshake_error)
}

/// A blocking TLS connection that one thread reads while others write (a step's part on
/// another node: its output read, the client's input and signals written). Clones share it.
#[derive(Clone)]
pub struct Duplex(Arc<DuplexInner>);

struct DuplexInner {
    state: Mutex<DuplexState>,
    tcp: TcpStream,
}

struct DuplexState {
    conn: ClientConnection,
    /// What was read off the socket and rustls has not taken yet.
    received: Vec<u8>,
}

impl Duplex {
    pub fn connect(mut tcp: TcpStream, config: &Arc<ClientConfig>) -> io::Result<Duplex> {
        let conn = handshake(&mut tcp, config)?;
        let state = DuplexState {
            conn,
            received: Vec::new(),
        };
        Ok(Duplex(Arc::new(DuplexInner {
            state: Mutex::new(state),
            tcp,
        })))
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.0.tcp
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DuplexState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what the connection has to send (data, alerts), with its lock held.
    fn flush_tls(&self, conn: &mut ClientConnection) -> io::Result<()> {
        while conn.wants_write() {
            conn.write_tls(&mut &self.0.tcp)?;
        }
        Ok(())
    }
}

impl Read for Duplex {
    /// Reads what the server sent: 0 at its end. Only one thread reads; the socket is read
    /// without the lock, so that writers go on meanwhile.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut record = vec![0u8; 16 * 1024];
        loop {
            {
                let mut state = self.lock();
                let DuplexState { conn, received } = &mut *state;
                loop {
                    match conn.reader().read(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        other => return other,
                    }
                    if received.is_empty() {
                        break;
                    }
                    // Fed only while no plaintext waits: rustls takes no more once its
                    // buffer of it is full.
                    let taken = conn.read_tls(&mut &received[..])?;
                    if taken == 0 {
                        return Err(io::Error::other("TLS records the connection cannot take"));
                    }
                    received.drain(..taken);
                    conn.process_new_packets().map_err(io::Error::other)?;
                    self.flush_tls(conn)?;
                }
            }
            let n = (&self.0.tcp).read(&mut record)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection ended without TLS's close",
                ));
            }
            self.lock().received.extend_from_slice(&record[..n]);
        }
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let conn = &mut self.lock().conn;
        let n = conn.writer().write(buf)?;
        self.flush_tls(conn)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls(&mut self.lock().conn)
    }
}

/// The daemons' TCP listener for `axum::serve`: each connection's TLS handshake is done by
/// the connection's own task ([`Accepting`]), so a slow client holds up no other.
pub struct Listener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Listener {
    pub fn new(tcp: tokio::net::TcpListener, tls: &Tls) -> Listener {
        Listener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(tls.server.clone()),
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Accepting;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Accepting, std::net::SocketAddr) {
        loop {
            match self.tcp.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    let accept = Box::new(self.acceptor.accept(tcp));
                    return (Accepting::Handshake(accept), addr);
                }
                // Out of descriptors, most likely: as axum's own listener, wait and go on.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A server connection: its handshake first, done as it is first read or written.
pub enum Accepting {
    Handshake(Box<tokio_rustls::Accept<tokio::net::TcpStream>>),
    Ready(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
    Failed,
}

impl Accepting {
    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
        if let Accepting::Handshake(accept) = self {
            match ready!(Pin::new(&mut **accept).poll(cx)) {
                Ok(stream) => *self = Accepting::Ready(Box::new(stream)),
                Err(e) => {
                    *self = Accepting::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match self {
            Accepting::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

impl AsyncRead for Accepting {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepting {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_ready(cx))?;
        Pin::new(stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_the_same_wherever_the_key_is_and_differs_between_keys() {
        let (a, b, other) = (
            Tls::from_seed(&[1; 32]),
            Tls::from_seed(&[1; 32]),
            Tls::from_seed(&[2; 32]),
        );
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, other.fingerprint);
        assert_eq!(a.fingerprint.len(), 64);
    }

    /// A blocking server on loopback: answers one line with its reverse, then closes.
    fn serve_once(
        tls: &Tls,
    ) -> (
        std::net::SocketAddr,
        std::thread::JoinHandle<io::Result<()>>,
    ) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let config = tls.server.clone();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept()?;
            let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while !line.ends_with(b"\n") {
                stream.read_exact(&mut byte)?;
                line.push(byte[0]);
            }
            line.pop();
            line.reverse();
            // In whole records and small ones between them, as a step's output comes.
            let mut rest = &line[..];
            for size in [16_384, 10].into_iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, next) = rest.split_at(size.min(rest.len()));
                stream.write_all(piece)?;
                stream.flush()?;
                rest = next;
            }
            stream.conn.send_close_notify();
            stream.flush()
        });
        (addr, server)
    }

    #[test]
    fn a_client_talks_to_its_own_cluster() {
        let tls = Tls::from_seed(&[3; 32]);
        let (addr, server) = serve_once(&tls);
        let mut stream = connect(TcpStream::connect(addr).unwrap(), &tls.client).unwrap();
        stream.write_all(b"berth\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "htreb");
        server.join().unwrap().unwrap();
    }

    #[test]
    fn a_server_of_another_cluster_is_refused_and_says_why() {
        let (ours, theirs) = (Tls::from_seed(&[4; 32]), Tls::from_seed(&[5; 32]));
        let (addr, server) = serve_once(&theirs);
        let e = connect(TcpStream::connect(addr).unwrap(), &ours.client).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("not this berth cluster's"), "{e}");
        assert!(server.join().unwrap().is_err());
    }

    #[test]
    fn a_duplex_is_written_by_one_thread_while_another_reads() {
        let tls = Tls::from_seed(&[6; 32]);
        let (addr, server) = serve_once(&tls);
        let mut reader = Duplex::connect(TcpStream::connect(addr).unwrap(), &tls.client).unwrap();
        let mut writer = reader.clone();
        // Many records' worth, read a few bytes at a time (as frames are): what rustls has
        // not taken yet waits for the next read.
        let line: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let sent = line.clone();
        let writing = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            writer.write_all(&[&sent[..], b"\n"].concat())
        });
        let mut answer = Vec::new();
        let mut small = [0u8; 5];
        loop {
            match reader.read(&mut small).unwrap() {
                0 => break,
                n => answer.extend_from_slice(&small[..n]),
            }
        }
        answer.reverse();
        assert!(answer == line, "{} bytes back", answer.len());
        writing.join().unwrap().unwrap();
        server.join().unwrap().unwrap();
    }

    #[test]
    fn daemon_urls_are_https() {
        assert_eq!(address("https://n1:6818/"), Ok("n1:6818"));
        let e = address("http://n1:6818").unwrap_err();
        assert!(e.contains("https://n1:6818"), "{e}");
        for bad in ["n1:6818", "https://", "https://n1:6818/v1"] {
            assert!(address(bad).is_err(), "{bad}");
        }
        assert!(client_config("abc").is_err());
    }
}
