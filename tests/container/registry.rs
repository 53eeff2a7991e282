//! `berth image pull` and `berth image login` against a real registry: Debian's
//! `docker-registry` (distribution 2.8) started per test in the test's tempdir, filled by
//! skopeo, spoken to over plain HTTP and HTTPS, anonymously, with basic authentication and
//! with bearer tokens from a small token server (`token_server.py`). `stub_registry.py` gives
//! the answers this registry will not (403) and plays the CDN that blob requests are
//! redirected to. Every server is started by the test that uses it and killed by its pid.

use crate::support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "pw-for-berth";
const SERVICE: &str = "berth-test";
const ISSUER: &str = "berth-test-issuer";
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// Debian's python, with python3-jwt, python3-cryptography and python3-bcrypt (a `python3`
/// earlier on PATH may be another build without them).
const PYTHON: &str = "/usr/bin/python3";
const HELLO: &str = r#"{"Cmd":["/bin/echo","hi"]}"#;

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn check(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A port nothing listens on now (bound, then closed).
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// This host's address on its default route, when it has one that is not loopback.
fn host_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    // Connecting a UDP socket sends nothing; it only picks the route and the source address.
    socket.connect("203.0.113.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A server this test started: killed (by its pid) and reaped when dropped, so a failing test
/// leaves nothing running. It also gets SIGKILL if the thread that started it dies.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    fn spawn(cmd: &mut Command) -> Process {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Process(cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}")))
    }
}

/// Starts a helper script that prints its port on its first line of output.
fn spawn_with_port(cmd: &mut Command, stderr: &Path) -> (Process, u16) {
    let mut child = Process::spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap()),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    match line.trim().parse() {
        Ok(port) => (child, port),
        Err(_) => {
            drop(child);
            panic!(
                "{cmd:?} printed no port: {line:?}\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            )
        }
    }
}

/// Waits until `server` accepts connections on `addr` and, if `ready` is given, has written
/// it to its `log` (so that another server on a reused port cannot pass for it). Fails with
/// the log if the server exits or is not ready in time.
fn wait_for_listener(
    server: &mut Process,
    addr: SocketAddr,
    log: &Path,
    ready: Option<&str>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            return Err(format!(
                "the server for {addr} exited ({status}):\n{}",
                log_text()
            ));
        }
        if ready.is_none_or(|r| log_text().contains(r))
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{addr} not ready after 15s:\n{}", log_text()));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One plain-HTTP request to `addr`: the status, the response's head and its body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes())?;
    s.write_all(body)?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of the response head"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok((status, head, response[split + 4..].to_vec()))
}

/// The value of `name` in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The status code of a plain-HTTP `GET path` on `addr`.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http(addr, "GET", path, &[], b"")
        .ok()
        .map(|(status, _, _)| status)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Anonymous,
    /// htpasswd (bcrypt) with USER:PASSWORD.
    Basic,
    /// distribution's token scheme, tokens from token_server.py for USER:PASSWORD.
    Token,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// Plain HTTP.
    Off,
    /// HTTPS with a certificate issued by a private CA (a CA certificate and a server
    /// certificate with CA:FALSE and serverAuth, as an organisation's PKI issues them).
    PrivateCa,
    /// HTTPS with a self-signed certificate made by `openssl req -x509` (CA:TRUE), the
    /// recipe of docker's documentation for a registry's own certificate.
    SelfSigned,
}

#[derive(Debug, Clone)]
struct Options {
    /// The registry's directory in the test's tempdir.
    name: &'static str,
    ip: IpAddr,
    tls: Tls,
    auth: Auth,
    /// Serve blobs by redirecting to this base URL (distribution's `redirect` storage
    /// middleware), as registries send clients to a CDN.
    blob_redirect: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            name: "registry",
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tls: Tls::Off,
            auth: Auth::Anonymous,
            blob_redirect: None,
        }
    }
}

/// What skopeo pushed: the manifest's and the config's digests (`sha256:...`).
struct Pushed {
    manifest: String,
    config: String,
}

/// A running docker-registry (and its token server), stopped by the pids held here.
struct Registry {
    /// `IP:PORT`, the registry part of image references.
    host: String,
    dir: PathBuf,
    auth: Auth,
    log: PathBuf,
    /// The servers, stopped when the registry is dropped.
    _registry: Process,
    _token_server: Option<Process>,
}

impl Registry {
    fn start(f: &Fixture, options: Options) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: run scripts/setup (Debian's docker-registry)"
        );
        let dir = f.path(options.name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let san = format!("subjectAltName=IP:{}", options.ip);
        let openssl = |args: &[&str]| {
            check(Command::new("openssl").args(args).current_dir(&dir));
        };
        let self_signed = |name: &str, cn: &str, extensions: &[&str]| {
            let mut args = vec![
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ];
            let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
            let subject = format!("/CN={cn}");
            args.extend(["-subj", &subject, "-keyout", &key, "-out", &cert]);
            for e in extensions {
                args.extend(["-addext", e]);
            }
            openssl(&args);
        };
        // The server's certificate and key: server.pem, server.key; what clients trust: ca.pem.
        match options.tls {
            Tls::Off => {}
            Tls::SelfSigned => {
                self_signed("server", &options.ip.to_string(), &[&san]);
                std::fs::copy(dir.join("server.pem"), dir.join("ca.pem")).unwrap();
            }
            Tls::PrivateCa => {
                self_signed("ca", "berth test CA", &[]);
                let cn = format!("/CN={}", options.ip);
                openssl(&[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &cn,
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                ]);
                std::fs::write(
                    dir.join("server.ext"),
                    format!(
                        "{san}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
                    ),
                )
                .unwrap();
                openssl(&[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    "2",
                    "-days",
                    "2",
                    "-extfile",
                    "server.ext",
                    "-out",
                    "server.pem",
                ]);
            }
        }
        if options.tls != Tls::Off {
            std::fs::set_permissions(dir.join("ca.pem"), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let mut token_server = None;
        let auth = match options.auth {
            Auth::Anonymous => String::new(),
            Auth::Basic => {
                let line = check(Command::new(PYTHON).args([
                    "-c",
                    "import bcrypt, sys; u, p = sys.argv[1:3]; \
                     print(u + ':' + bcrypt.hashpw(p.encode(), bcrypt.gensalt(5)).decode())",
                    USER,
                    PASSWORD,
                ]));
                let htpasswd = dir.join("htpasswd");
                std::fs::write(&htpasswd, line).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: {SERVICE}\n    path: {}\n",
                    htpasswd.display()
                )
            }
            Auth::Token => {
                // The token signing certificate: distribution checks the token's x5c chain
                // against it (its `rootcertbundle`).
                self_signed("token", ISSUER, &[]);
                let (cert, key) = (dir.join("token.pem"), dir.join("token.key"));
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/container/token_server.py");
                let (child, port) = spawn_with_port(
                    Command::new(PYTHON)
                        .arg(script)
                        .args([&cert, &key])
                        .args([USER, PASSWORD])
                        .arg(dir.join("token.log")),
                    &dir.join("token.err"),
                );
                token_server = Some(child);
                format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    \
                     service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    cert.display()
                )
            }
        };
        let tls = if options.tls != Tls::Off {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            )
        } else {
            String::new()
        };
        let redirect = match &options.blob_redirect {
            Some(url) => format!(
                "middleware:\n  storage:\n    - name: redirect\n      options:\n        \
                 baseurl: {url}\n"
            ),
            None => String::new(),
        };
        let config = dir.join("config.yml");
        let log = dir.join("registry.log");
        // The port was free when picked; should another test's server take it meanwhile,
        // this one fails to listen: try another.
        let mut attempt = 0;
        let (registry, addr) = loop {
            attempt += 1;
            let addr = SocketAddr::new(options.ip, free_port(options.ip));
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    \
                     rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  \
                     addr: {addr}\n  secret: berth-test-secret\n{tls}{auth}{redirect}",
                    dir.join("data").display()
                ),
            )
            .unwrap();
            let out = std::fs::File::create(&log).unwrap();
            let mut registry = Process::spawn(
                Command::new(REGISTRY_BIN)
                    .arg("serve")
                    .arg(&config)
                    .env_clear()
                    .env("PATH", "/usr/bin:/bin")
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().unwrap())
                    .stderr(out),
            );
            let ready = format!("listening on {addr}");
            match wait_for_listener(&mut registry, addr, &log, Some(&ready)) {
                Ok(()) => break (registry, addr),
                Err(e) if attempt < 5 && e.contains("address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        };
        let r = Registry {
            host: addr.to_string(),
            dir,
            auth: options.auth,
            log,
            _registry: registry,
            _token_server: token_server,
        };
        if options.tls == Tls::Off {
            let status = http_status(addr, "/v2/");
            if !matches!(status, Some(200 | 401)) {
                panic!(
                    "GET /v2/ on {addr} answered {status:?}:\n{}",
                    std::fs::read_to_string(&r.log).unwrap_or_default()
                );
            }
        }
        r
    }

    /// The storage (the `filesystem` driver's root directory) of the registry `name`.
    fn data(f: &Fixture, name: &str) -> PathBuf {
        f.path(name).join("data")
    }

    /// The certificate that clients must trust (PEM).
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn skopeo(&self) -> Command {
        let policy = self.dir.join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy")
            .arg(policy)
            // No credentials but those given here.
            .env("REGISTRY_AUTH_FILE", self.dir.join("skopeo-auth.json"));
        cmd
    }

    fn creds(&self) -> Option<String> {
        (self.auth != Auth::Anonymous).then(|| format!("{USER}:{PASSWORD}"))
    }

    /// Pushes `source` (a skopeo transport:path, e.g. `docker-archive:/x.tar`) to `target`
    /// (`repo:tag`), with `--all` for an image index.
    fn push_source(&self, source: &str, target: &str, all: bool) -> Pushed {
        let mut cmd = self.skopeo();
        cmd.args(["copy", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        if let Some(c) = self.creds() {
            cmd.arg("--dest-creds").arg(c);
        }
        check(
            cmd.arg(source)
                .arg(format!("docker://{}/{target}", self.host)),
        );
        let raw = self.manifest(target);
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        Pushed {
            manifest: format!("sha256:{}", sha256_hex(&raw)),
            config: manifest["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }

    fn push(&self, archive: &Path, target: &str) -> Pushed {
        self.push_source(
            &format!("docker-archive:{}", archive.display()),
            target,
            false,
        )
    }

    /// Uploads the one image of the OCI layout `layout` to `target` (`repo:tag`) with the
    /// registry API itself, blobs as they are (skopeo compresses uncompressed layers).
    /// Anonymous, plain-HTTP registries only.
    fn upload_layout(&self, layout: &Path, target: &str) {
        let addr: SocketAddr = self.host.parse().unwrap();
        let (repo, tag) = target.split_once(':').unwrap();
        let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let manifest_bytes = blob(index["manifests"][0]["digest"].as_str().unwrap());
        let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let mut digests = vec![manifest["config"]["digest"].as_str().unwrap()];
        for l in manifest["layers"].as_array().unwrap() {
            digests.push(l["digest"].as_str().unwrap());
        }
        for digest in digests {
            let (status, head, _) = http(
                addr,
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                b"",
            )
            .unwrap();
            assert_eq!(status, 202, "{head}");
            let location = header(&head, "Location").unwrap();
            let path = match location.find("/v2/") {
                Some(at) => &location[at..],
                None => location,
            };
            let sep = if path.contains('?') { '&' } else { '?' };
            let (status, head, body) = http(
                addr,
                "PUT",
                &format!("{path}{sep}digest={digest}"),
                &[("Content-Type", "application/octet-stream")],
                &blob(digest),
            )
            .unwrap();
            assert_eq!(status, 201, "{head}\n{}", String::from_utf8_lossy(&body));
        }
        let (status, head, body) = http(
            addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", manifest["mediaType"].as_str().unwrap())],
            &manifest_bytes,
        )
        .unwrap();
        assert_eq!(status, 201, "{head}\n{}", String::from_utf8_lossy(&body));
    }

    /// The manifest (or index) `reference` (`repo:tag` or `repo@digest`) as stored.
    fn manifest(&self, reference: &str) -> Vec<u8> {
        let mut cmd = self.skopeo();
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(c) = self.creds() {
            cmd.arg("--creds").arg(c);
        }
        check(cmd.arg(format!("docker://{}/{reference}", self.host)))
    }

    /// Where the registry keeps the blob `digest` (filesystem storage driver layout).
    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The token server's requests so far, one JSON object each.
    fn token_requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("token.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A stub_registry.py in MODE, stopped by its pid on drop.
struct Stub {
    host: String,
    log: PathBuf,
    _server: Process,
}

impl Stub {
    /// `args` follow MODE and LOG on the script's command line.
    fn start(f: &Fixture, mode: &str, args: &[&Path]) -> Stub {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/container/stub_registry.py");
        let log = f.path(&format!("stub-{mode}.log"));
        let err = f.path(&format!("stub-{mode}.err"));
        let (mut child, port) = spawn_with_port(
            Command::new(PYTHON)
                .arg(script)
                .arg(mode)
                .arg(&log)
                .args(args),
            &err,
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_listener(&mut child, addr, &err, None).unwrap();
        Stub {
            host: addr.to_string(),
            log,
            _server: child,
        }
    }

    /// The requests so far, one JSON object each.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The store directory of `mode` (as support.rs sets BERTH_STORE).
fn store_dir(f: &Fixture, mode: Mode) -> PathBuf {
    f.path(if mode == Mode::Rootless {
        "store-user"
    } else {
        "store-root"
    })
}

/// The auth file berth uses in `mode` unless a test says otherwise (never the real one).
fn auth_file(f: &Fixture, mode: Mode) -> PathBuf {
    f.cwd(mode).join("auth.json")
}

/// `berth ARGS` in `mode` with BERTH_AUTH_FILE set to the test's own, then `env` applied
/// (an empty value removes the variable), with `stdin` as standard input.
fn berth_with(
    f: &Fixture,
    mode: Mode,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Out {
    let mut cmd = f.cmd(mode, args);
    cmd.env("BERTH_AUTH_FILE", auth_file(f, mode));
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    run_with_stdin(&mut cmd, stdin.unwrap_or_default())
}

fn berth(f: &Fixture, mode: Mode, args: &[&str]) -> Out {
    berth_with(f, mode, args, &[], None)
}

fn pull(f: &Fixture, mode: Mode, args: &[&str]) -> Out {
    let mut all = vec!["image", "pull"];
    all.extend_from_slice(args);
    berth(f, mode, &all)
}

/// Asserts that `out` is berth's own one-line error (exit 125) containing one of `any`.
fn assert_error(out: &Out, any: &[&str], what: &str) {
    assert_eq!(
        out.code, 125,
        "{what}: stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.starts_with("berth: ") && out.stderr.lines().count() == 1,
        "{what}: not one line starting `berth: `: {}",
        out.stderr
    );
    assert!(
        any.iter().any(|s| out.stderr.contains(s)),
        "{what}: expected one of {any:?} in: {}",
        out.stderr
    );
}

/// Asserts a successful pull of `name` whose image id is `config` (the config digest).
fn assert_pulled(out: &Out, name: &str, config: &str) {
    let expected = format!("Pulled {name} (id {}, ", &config[7..19]);
    assert!(
        out.ok().starts_with(&expected) && out.stdout.trim_end().ends_with(')'),
        "expected `{expected}...)`, got: {}",
        out.stdout
    );
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
}

fn image_id(f: &Fixture, mode: Mode, image: &str) -> String {
    let out = berth(f, mode, &["image", "inspect", image, "--json"]);
    let json: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    json["id"].as_str().unwrap().to_string()
}

fn images(f: &Fixture, mode: Mode) -> Vec<serde_json::Value> {
    let out = berth(f, mode, &["image", "ls", "--json"]);
    serde_json::from_str(out.ok()).unwrap()
}

/// An anonymous pull of `name` is refused with 401, the message says how to log in, and
/// nothing is left in the store.
fn assert_needs_login(f: &Fixture, mode: Mode, reg: &Registry, name: &str, what: &str) {
    let out = pull(f, mode, &[name]);
    assert_error(&out, &["401"], what);
    assert!(
        out.stderr
            .contains(&format!("berth image login {}", reg.host)),
        "{}",
        out.stderr
    );
    assert_store_empty(f, mode, what);
}

/// Nothing in the store of `mode`: no image, no name, no staging left in tmp/.
fn assert_store_empty(f: &Fixture, mode: Mode, what: &str) {
    assert_eq!(
        berth(f, mode, &["image", "ls", "--json"]).ok().trim(),
        "[]",
        "{what}"
    );
    let tmp = store_dir(f, mode).join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "{what}: left in {}: {left:?}",
        tmp.display()
    );
}

/// Pulls `name` in `mode`, checks the id, and runs the image's CMD, which says hi.
fn pull_and_run(f: &Fixture, mode: Mode, name: &str, config: &str) {
    let out = pull(f, mode, &[name]);
    assert_pulled(&out, name, config);
    assert_eq!(image_id(f, mode, name), config, "{mode:?}");
    assert_eq!(berth(f, mode, &["run", name]).ok(), "hi\n", "{mode:?}");
}

#[test]
fn anonymous_pull_over_plain_http_then_run_and_exec() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(&f, Options::default());
    let archive = docker_archive_of(&f, HELLO);
    let pushed = reg.push(&archive, "lab/app:1");
    // The config skopeo stored is the one the archive holds, byte for byte.
    assert_eq!(
        pushed.config,
        format!(
            "sha256:{}",
            sha256_hex(&std::fs::read(reg.blob(&pushed.config)).unwrap())
        )
    );
    let name = format!("{}/lab/app:1", reg.host);
    for mode in [Mode::Root, Mode::Rootless] {
        pull_and_run(&f, mode, &name, &pushed.config);
        let ls = images(&f, mode);
        assert_eq!(ls.len(), 1, "{mode:?}: {ls:?}");
        assert_eq!(ls[0]["id"], pushed.config.as_str());
        assert!(
            ls[0]["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == name.as_str()),
            "{ls:?}"
        );
        let out = berth(
            &f,
            mode,
            &["exec", &name, "sh", "-c", "echo $((6 * 7)); ls /bin/probe"],
        );
        assert_eq!(out.ok(), "42\n/bin/probe\n", "{mode:?}");
    }
    // Apptainer's docker:// before it: the same pull.
    let out = pull(&f, Mode::Root, &[&format!("docker://{name}")]);
    assert!(
        out.ok().starts_with(&format!("Pulled {name} ")),
        "{}",
        out.stdout
    );
    // Root acting for the user runs the image root pulled.
    assert_eq!(berth(&f, Mode::RootAsUser, &["run", &name]).ok(), "hi\n");
    let id = berth(&f, Mode::RootAsUser, &["exec", &name, "id", "-u"]);
    assert_eq!(id.ok().trim(), f.user.uid.to_string());
}

#[test]
fn pull_by_digest() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(&f, Options::default());
    let pushed = reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    let by_digest = format!("{}/lab/app@{}", reg.host, pushed.manifest);
    for mode in [Mode::Root, Mode::Rootless] {
        let out = pull(&f, mode, &[&by_digest]);
        assert_eq!(out.code, 0, "{mode:?}: {}", out.stderr);
        assert!(
            out.stdout
                .starts_with(&format!("Pulled {}/lab/app", reg.host))
                && out
                    .stdout
                    .contains(&format!("(id {}, ", &pushed.config[7..19])),
            "{}",
            out.stdout
        );
        let ls = images(&f, mode);
        assert_eq!(ls.len(), 1, "{ls:?}");
        assert_eq!(ls[0]["id"], pushed.config.as_str());
        // Named by the digest, and found by it, as Docker keeps it: no tag of its own
        // (a tag given beside the digest is not the image's), no pull again.
        assert_eq!(ls[0]["names"], serde_json::json!([by_digest]), "{mode:?}");
        assert_eq!(berth(&f, mode, &["run", &by_digest]).ok(), "hi\n");
        let again = berth(&f, mode, &["run", &format!("docker://{by_digest}")]);
        assert_eq!(again.ok(), "hi\n");
        assert!(!again.stderr.contains("pulling"), "{}", again.stderr);
        let tagged = format!("{}/lab/app:other@{}", reg.host, pushed.manifest);
        pull(&f, mode, &[&tagged]).ok();
        assert_eq!(images(&f, mode)[0]["names"], serde_json::json!([by_digest]));
        // A digest the registry does not have.
        let missing = format!("{}/lab/app@sha256:{}", reg.host, "0".repeat(64));
        assert_error(
            &pull(&f, mode, &[&missing]),
            &["404", "not found"],
            &missing,
        );
    }
}

/// With the registry's CA in the config's [registry] ca_certs, the pull goes over HTTPS.
fn https_pull(tls: Tls) {
    let Some(mut f) = Fixture::new() else { return };
    let reg = Registry::start(
        &f,
        Options {
            tls,
            ..Default::default()
        },
    );
    let pushed = reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    let name = format!("{}/lab/app:1", reg.host);
    let before = std::fs::read_to_string(&reg.log).unwrap().len();
    f.write_config(&format!(
        "[registry]\nca_certs = [\"{}\"]\n",
        reg.ca().display()
    ));
    for mode in [Mode::Root, Mode::Rootless] {
        pull_and_run(&f, mode, &name, &pushed.config);
    }
    // Over TLS: the registry saw berth's requests and no plain-HTTP attempt.
    let log = std::fs::read_to_string(&reg.log).unwrap()[before..].to_string();
    assert!(log.contains("berth/"), "{log}");
    assert!(!log.contains("HTTP request to an HTTPS server"), "{log}");
}

#[test]
fn https_with_a_private_ca_from_the_config() {
    https_pull(Tls::PrivateCa);
}

#[test]
fn https_with_a_self_signed_certificate_from_the_config() {
    https_pull(Tls::SelfSigned);
}

/// Without the registry's CA berth refuses it with a message about the certificate, also on
/// loopback, where it may try plain HTTP (which an HTTPS server answers with 400).
#[test]
fn https_with_an_unknown_ca_fails_with_a_certificate_error() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(
        &f,
        Options {
            tls: Tls::PrivateCa,
            ..Default::default()
        },
    );
    reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    let name = format!("{}/lab/app:1", reg.host);
    for mode in [Mode::Root, Mode::Rootless] {
        let out = pull(&f, mode, &[&name]);
        assert_error(
            &out,
            &["certificate is signed by a CA berth does not trust: add the CA's certificate"],
            "untrusted CA",
        );
        assert_store_empty(&f, mode, "after the TLS failure");
    }
}

#[test]
fn plain_http_to_another_host_only_when_the_config_says_insecure() {
    let Some(mut f) = Fixture::new() else { return };
    let Some(ip) = host_address() else {
        eprintln!("skipped: this host has no address but loopback");
        return;
    };
    let reg = Registry::start(
        &f,
        Options {
            ip,
            ..Options::default()
        },
    );
    let pushed = reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    let name = format!("{}/lab/app:1", reg.host);
    let before = std::fs::read_to_string(&reg.log).unwrap().len();
    let out = pull(&f, Mode::Root, &[&name]);
    assert_eq!(out.code, 125, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.starts_with("berth: ") && out.stderr.lines().count() == 1,
        "{}",
        out.stderr
    );
    assert_store_empty(&f, Mode::Root, "HTTPS only");
    // berth asked nothing over plain HTTP.
    let log = std::fs::read_to_string(&reg.log).unwrap()[before..].to_string();
    assert!(
        !log.lines().any(|l| l.contains("berth/")),
        "plain HTTP was used: {log}"
    );
    f.write_config(&format!("[registry]\ninsecure = [\"{}\"]\n", reg.host));
    for mode in [Mode::Root, Mode::Rootless] {
        pull_and_run(&f, mode, &name, &pushed.config);
    }
}

#[test]
fn basic_auth_needs_credentials_from_the_command_line_or_login() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(
        &f,
        Options {
            auth: Auth::Basic,
            ..Options::default()
        },
    );
    let pushed = reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    let name = format!("{}/lab/app:1", reg.host);
    let good = format!("{USER}:{PASSWORD}");
    let bad = format!("{USER}:not-{PASSWORD}");
    for mode in [Mode::Root, Mode::Rootless] {
        assert_needs_login(&f, mode, &reg, &name, "no credentials");
        assert_error(&pull(&f, mode, &["--creds", &bad, &name]), &["401"], "bad");
        assert_store_empty(&f, mode, "after 401 with bad credentials");

        let out = pull(&f, mode, &["--creds", &good, &name]);
        assert_pulled(&out, &name, &pushed.config);
        berth(&f, mode, &["image", "rm", &name]).ok();

        // `berth image login`: root into BERTH_AUTH_FILE, the user into the default place
        // under XDG_CONFIG_HOME (a trailing newline on stdin is not part of the password).
        let xdg = f.cwd(mode).join("xdg");
        let xdg_env = xdg.to_str().unwrap();
        let (env, file): (Vec<(&str, &str)>, PathBuf) = if mode == Mode::Root {
            (vec![], auth_file(&f, mode))
        } else {
            (
                vec![("BERTH_AUTH_FILE", ""), ("XDG_CONFIG_HOME", xdg_env)],
                xdg.join("berth/auth.json"),
            )
        };
        let login_args = [
            "image",
            "login",
            &reg.host,
            "--username",
            USER,
            "--password-stdin",
        ];
        // The credentials are checked before they are saved.
        let login = berth_with(&f, mode, &login_args, &env, Some("not-the-password\n"));
        assert_error(&login, &["401"], "login with a wrong password");
        let saved = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(!saved.contains(&reg.host), "{saved}");
        let login = berth_with(&f, mode, &login_args, &env, Some(&format!("{PASSWORD}\n")));
        assert_eq!(login.code, 0, "{mode:?}: {}{}", login.stdout, login.stderr);
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(
            saved["auths"][reg.host.as_str()]["auth"],
            base64(good.as_bytes()).as_str(),
            "{saved}"
        );
        let file_mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(file_mode & 0o077, 0, "{} is {file_mode:o}", file.display());
        let out = berth_with(&f, mode, &["image", "pull", &name], &env, None);
        assert_pulled(&out, &name, &pushed.config);
        assert_eq!(
            berth_with(&f, mode, &["run", &name], &env, None).ok(),
            "hi\n"
        );
        // --creds wins over the saved credentials.
        let out = berth_with(
            &f,
            mode,
            &["image", "pull", "--creds", &bad, &name],
            &env,
            None,
        );
        assert_error(&out, &["401"], "--creds over the auth file");
    }
}

#[test]
fn bearer_tokens_from_the_registrys_token_service() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(
        &f,
        Options {
            auth: Auth::Token,
            ..Options::default()
        },
    );
    let pushed = reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    let name = format!("{}/lab/app:1", reg.host);
    let good = format!("{USER}:{PASSWORD}");
    for mode in [Mode::Root, Mode::Rootless] {
        assert_needs_login(&f, mode, &reg, &name, "anonymous");
        let out = pull(&f, mode, &["--creds", &format!("{USER}:wrong"), &name]);
        assert_error(&out, &["401"], "refused by the token service");
        assert_store_empty(&f, mode, "after the token service's 401");

        let before = reg.token_requests().len();
        let out = pull(&f, mode, &["--creds", &good, &name]);
        assert_pulled(&out, &name, &pushed.config);
        assert_eq!(berth(&f, mode, &["run", &name]).ok(), "hi\n");
        // The client asked for a pull token for this repository, with the credentials, and
        // for nothing more.
        let asked = &reg.token_requests()[before..];
        assert!(!asked.is_empty());
        for r in asked {
            assert_eq!(r["user"], USER, "{r}");
            assert_eq!(
                r["scopes"],
                serde_json::json!(["repository:lab/app:pull"]),
                "{r}"
            );
        }
        berth(&f, mode, &["image", "rm", &name]).ok();
        // Saved by login, the credentials get the token.
        let login = berth_with(
            &f,
            mode,
            &["image", "login", &reg.host, "-u", USER, "--password-stdin"],
            &[],
            Some(PASSWORD),
        );
        assert_eq!(login.code, 0, "{mode:?}: {}{}", login.stdout, login.stderr);
        assert_pulled(&pull(&f, mode, &[&name]), &name, &pushed.config);
    }
}

#[test]
fn redirected_blobs_are_fetched_without_the_registrys_credentials() {
    let Some(f) = Fixture::new() else { return };
    let cdn = Stub::start(&f, "files", &[&Registry::data(&f, "registry")]);
    let reg = Registry::start(
        &f,
        Options {
            auth: Auth::Token,
            blob_redirect: Some(format!("http://{}/", cdn.host)),
            ..Default::default()
        },
    );
    let pushed = reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    let name = format!("{}/lab/app:1", reg.host);
    let before = cdn.requests().len();
    let out = pull(
        &f,
        Mode::Root,
        &["--creds", &format!("{USER}:{PASSWORD}"), &name],
    );
    assert_pulled(&out, &name, &pushed.config);
    assert_eq!(berth(&f, Mode::Root, &["run", &name]).ok(), "hi\n");
    let fetched = &cdn.requests()[before..];
    // The config and the layer came from the other server, which saw no credentials.
    let blobs: Vec<_> = fetched
        .iter()
        .filter(|r| r["method"] == "GET" && r["path"].as_str().unwrap().contains("/blobs/"))
        .collect();
    assert!(blobs.len() >= 2, "{fetched:?}");
    for r in fetched {
        assert!(r["authorization"].is_null(), "credentials leaked: {r}");
    }
}

#[test]
fn unknown_names_and_unreachable_registries_fail_cleanly() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(&f, Options::default());
    reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    let dead = format!("127.0.0.1:{}", free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let cases = [
        (format!("{}/lab/app:nosuchtag", reg.host), "404"),
        (format!("{}/lab/nosuchrepo:1", reg.host), "404"),
        (format!("{dead}/lab/app:1"), "cannot reach"),
    ];
    for mode in [Mode::Root, Mode::Rootless] {
        for (reference, expected) in &cases {
            let out = pull(&f, mode, &[reference]);
            let any: &[&str] = if *expected == "404" {
                &["404", "not found"]
            } else {
                &[expected]
            };
            assert_error(&out, any, reference);
            assert_store_empty(&f, mode, reference);
        }
    }
}

#[test]
fn forbidden_is_403() {
    let Some(f) = Fixture::new() else { return };
    let stub = Stub::start(&f, "deny", &[]);
    let name = format!("{}/lab/secret:1", stub.host);
    let out = pull(
        &f,
        Mode::Root,
        &["--creds", &format!("{USER}:{PASSWORD}"), &name],
    );
    assert_error(&out, &["403"], "denied");
    assert_store_empty(&f, Mode::Root, "after 403");
}

#[test]
fn tampered_blobs_are_refused() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(&f, Options::default());
    let pushed = reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    let manifest: serde_json::Value = serde_json::from_slice(&reg.manifest("lab/app:1")).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let name = format!("{}/lab/app:1", reg.host);
    let by_digest = format!("{}/lab/app@{}", reg.host, pushed.manifest);

    // Each tampering keeps the blob's meaning (and but for the manifest its size), so only
    // its digest tells.
    type Tamper = fn(&[u8]) -> Vec<u8>;
    fn config(b: &[u8]) -> Vec<u8> {
        // "hi" becomes "ho".
        let at = b.windows(4).position(|w| w == b"\"hi\"").unwrap();
        [&b[..at], b"\"ho\"", &b[at + 4..]].concat()
    }
    fn layer_mtime(b: &[u8]) -> Vec<u8> {
        // The gzip header's MTIME, which decompressing ignores.
        assert_eq!(&b[..2], b"\x1f\x8b", "a gzip layer");
        [&b[..4], b"\x12\x34\x56\x78", &b[8..]].concat()
    }
    fn manifest_space(b: &[u8]) -> Vec<u8> {
        // The same JSON with one more space (pulled by its digest).
        [&b[..1], b" ", &b[1..]].concat()
    }
    let tamper = |digest: &str, change: Tamper| {
        let path = reg.blob(digest);
        let original = std::fs::read(&path).unwrap();
        let changed = change(&original);
        assert_ne!(changed, original);
        std::fs::write(&path, &changed).unwrap();
        original
    };
    let restore = |digest: &str, original: Vec<u8>| {
        std::fs::write(reg.blob(digest), original).unwrap();
    };
    let cases: [(&str, &str, Tamper); 3] = [
        ("config", &pushed.config, config),
        ("layer", &layer, layer_mtime),
        ("manifest", &pushed.manifest, manifest_space),
    ];
    for (what, digest, change) in &cases {
        let original = tamper(digest, *change);
        let reference = if *what == "manifest" {
            &by_digest
        } else {
            &name
        };
        for mode in [Mode::Root, Mode::Rootless] {
            let out = pull(&f, mode, &[reference]);
            assert_error(&out, &["digest mismatch"], what);
            assert_store_empty(&f, mode, what);
        }
        restore(digest, original);
    }
    // Untampered, it pulls.
    pull_and_run(&f, Mode::Root, &name, &pushed.config);
}

#[test]
fn pulling_one_image_twice_or_concurrently_stores_it_once() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(&f, Options::default());
    let archive = docker_archive_of(&f, HELLO);
    let pushed = reg.push(&archive, "lab/app:1");
    let latest = reg.push(&archive, "lab/app:latest");
    assert_eq!(latest.config, pushed.config);
    let name = format!("{}/lab/app:1", reg.host);
    for mode in [Mode::Root, Mode::Rootless] {
        let children: Vec<_> = (0..2)
            .map(|_| {
                let mut cmd = f.cmd(mode, &["image", "pull", &name]);
                cmd.env("BERTH_AUTH_FILE", auth_file(&f, mode))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = Out::from_output(child.wait_with_output().unwrap());
            assert_pulled(&out, &name, &pushed.config);
        }
        let out = pull(&f, mode, &[&name]);
        assert_pulled(&out, &name, &pushed.config);
        // The same image under its other tag (an implicit `latest`).
        let implicit = format!("{}/lab/app", reg.host);
        let out = pull(&f, mode, &[&implicit]);
        assert_pulled(&out, &format!("{implicit}:latest"), &pushed.config);
        let ls = images(&f, mode);
        assert_eq!(ls.len(), 1, "{mode:?}: {ls:?}");
        let mut names: Vec<_> = ls[0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, [name.clone(), format!("{implicit}:latest")]);
        let tmp = store_dir(&f, mode).join("tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
        assert_eq!(berth(&f, mode, &["run", &name]).ok(), "hi\n");
    }
}

/// An OCI image layout holding an index of two images: one for another architecture first,
/// then one for this host's. Returns the layout's directory and this host's config digest.
fn multi_platform_layout(f: &Fixture) -> (PathBuf, String) {
    let dir = f.path("layout");
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer.append_dir_all(".", &f.rootfs).unwrap();
    let layer = layer.into_inner().unwrap();
    let (layer_digest, layer_size) = put(&layer);
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other = if host == "amd64" { "arm64" } else { "amd64" };
    let mut manifests = Vec::new();
    let mut host_config = String::new();
    for (arch, word) in [(other, "wrong"), (host, "hi")] {
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Cmd":["/bin/echo","{word}"]}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
        );
        let (config_digest, config_size) = put(config.as_bytes());
        if arch == host {
            host_config = config_digest.clone();
        }
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{layer_size}}}]}}"#
        );
        let (digest, size) = put(manifest.as_bytes());
        manifests.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
        ));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        manifests.join(",")
    );
    let (index_digest, index_size) = put(index.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{index_digest}","size":{index_size},"annotations":{{"org.opencontainers.image.ref.name":"multi"}}}}]}}"#
        ),
    )
    .unwrap();
    (dir, host_config)
}

#[test]
fn an_image_index_gives_the_hosts_platform() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(&f, Options::default());
    let (layout, host_config) = multi_platform_layout(&f);
    reg.push_source(
        &format!("oci:{}:multi", layout.display()),
        "lab/multi:1",
        true,
    );
    let index: serde_json::Value = serde_json::from_slice(&reg.manifest("lab/multi:1")).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    let name = format!("{}/lab/multi:1", reg.host);
    for mode in [Mode::Root, Mode::Rootless] {
        pull_and_run(&f, mode, &name, &host_config);
    }
}

/// A layout whose own index.json lists one manifest per platform, unnamed, gives this
/// host's; one whose entries are named by a tag alone is chosen by that name, as written.
#[test]
fn a_layouts_own_index_gives_the_hosts_platform_or_the_named_image() {
    let Some(f) = Fixture::new() else { return };
    let (layout, host_config) = multi_platform_layout(&f);
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let nested = top["manifests"][0]["digest"].as_str().unwrap();
    let nested = layout
        .join("blobs/sha256")
        .join(nested.trim_start_matches("sha256:"));
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(nested).unwrap()).unwrap();
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    let import = |mode, name: &str| {
        let layout = layout.to_str().unwrap();
        berth(&f, mode, &["image", "import", layout, "--name", name])
    };
    for mode in [Mode::Root, Mode::Rootless] {
        import(mode, "plat:1").ok();
        assert_eq!(image_id(&f, mode, "plat:1"), host_config, "{mode:?}");
        assert_eq!(berth(&f, mode, &["run", "plat:1"]).ok(), "hi\n", "{mode:?}");
    }
    // Named by tags: the host's as `v1`, the other as `extra0`.
    let manifests = index["manifests"].as_array_mut().unwrap();
    for (m, name) in manifests.iter_mut().zip(["extra0", "v1"]) {
        m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
    }
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    let mode = Mode::Rootless;
    let out = import(mode, "v1");
    assert!(out.code == 0, "{}", out.stderr);
    assert_eq!(image_id(&f, mode, "v1"), host_config);
}

/// An OCI image layout `name` holding one image of two uncompressed layers: the fixture's
/// root filesystem with /etc/motd "first", then a layer that replaces /etc/motd, adds
/// /etc/added and deletes /bin/notexec (a whiteout). Returns the config's digest.
fn layered_layout(f: &Fixture, name: &str) -> String {
    let dir = f.path(name);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, data).unwrap();
    };
    let mut first = tar::Builder::new(Vec::new());
    first.follow_symlinks(false);
    first.append_dir_all(".", &f.rootfs).unwrap();
    file(&mut first, "etc/motd", b"first\n");
    let mut second = tar::Builder::new(Vec::new());
    file(&mut second, "etc/motd", b"second\n");
    file(&mut second, "etc/added", b"added\n");
    file(&mut second, "bin/.wh.notexec", b"");
    let layers: Vec<(String, usize)> = [first, second]
        .into_iter()
        .map(|b| put(&b.into_inner().unwrap()))
        .collect();
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","config":{{"Cmd":["/bin/cat","/etc/motd"]}},"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        },
        layers[0].0,
        layers[1].0
    );
    let (config_digest, config_size) = put(config.as_bytes());
    let layer_descriptors: Vec<String> = layers
        .iter()
        .map(|(d, s)| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{s}}}"#
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{}]}}"#,
        layer_descriptors.join(",")
    );
    let (digest, size) = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"annotations":{{"org.opencontainers.image.ref.name":"layered"}}}}]}}"#
        ),
    )
    .unwrap();
    config_digest
}

#[test]
fn layers_apply_in_order_gzip_zstd_or_uncompressed() {
    let Some(f) = Fixture::new() else { return };
    let config = layered_layout(&f, "layered");
    let source = format!("oci:{}:layered", f.path("layered").display());
    // One registry for each, or skopeo reuses the blobs it pushed before (it remembers which
    // compressed blob holds an uncompressed layer). It compresses with gzip unless told, and
    // always compresses: the uncompressed layers go up through the registry API by hand.
    let pushes: [(&str, Option<&[&str]>, &str); 3] = [
        ("gzip", Some(&[]), "tar+gzip"),
        (
            "zstd",
            Some(&["--dest-compress-format", "zstd"]),
            "tar+zstd",
        ),
        ("plain", None, "tar"),
    ];
    for (name, flags, media_type) in pushes {
        let reg = Registry::start(
            &f,
            Options {
                name,
                ..Default::default()
            },
        );
        match flags {
            Some(flags) => {
                let mut cmd = reg.skopeo();
                cmd.args(["copy", "--dest-tls-verify=false"]).args(flags);
                check(
                    cmd.arg(&source)
                        .arg(format!("docker://{}/lab/layered:1", reg.host)),
                );
            }
            None => reg.upload_layout(&f.path("layered"), "lab/layered:1"),
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&reg.manifest("lab/layered:1")).unwrap();
        assert_eq!(manifest["config"]["digest"], config.as_str(), "{manifest}");
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(
                layer["mediaType"],
                format!("application/vnd.oci.image.layer.v1.{media_type}"),
                "{name}: {manifest}"
            );
        }
        let image = format!("{}/lab/layered:1", reg.host);
        for mode in [Mode::Root, Mode::Rootless] {
            assert_pulled(&pull(&f, mode, &[&image]), &image, &config);
            assert_eq!(berth(&f, mode, &["run", &image]).ok(), "second\n", "{name}");
            let out = berth(
                &f,
                mode,
                &[
                    "exec",
                    &image,
                    "sh",
                    "-c",
                    "cat /etc/added; ls /bin/notexec",
                ],
            );
            assert_eq!(out.stdout, "added\n", "{name} {mode:?}: {}", out.stderr);
            assert_ne!(out.code, 0);
            berth(&f, mode, &["image", "rm", &image]).ok();
        }
    }
}

#[test]
fn pulling_a_moved_tag_moves_the_name() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(&f, Options::default());
    let name = format!("{}/lab/app:1", reg.host);
    let old = reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    for mode in [Mode::Root, Mode::Rootless] {
        pull_and_run(&f, mode, &name, &old.config);
    }
    // The tag moves to another image: pulling it again moves the name.
    let new = reg.push(
        &docker_archive_of(&f, r#"{"Cmd":["/bin/echo","hello again"]}"#),
        "lab/app:1",
    );
    assert_ne!(old.config, new.config);
    for mode in [Mode::Root, Mode::Rootless] {
        assert_pulled(&pull(&f, mode, &[&name]), &name, &new.config);
        assert_eq!(image_id(&f, mode, &name), new.config);
        assert_eq!(berth(&f, mode, &["run", &name]).ok(), "hello again\n");
    }
}

/// Shifter's image gateway, berth's way: users have the controller pull an image into the
/// cluster's store (`berth image pull --cluster`, `shifterimg pull`), as the administrator's
/// `[registry] user_pulls` allows, and their jobs run in it; the store lists it for them.
#[test]
fn users_have_the_controller_pull_images_their_jobs_run_in() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(&f, Options::default());
    let pushed = reg.push(&docker_archive_of(&f, HELLO), "lab/app:1");
    reg.push(&docker_archive_of(&f, HELLO), "other/app:1");
    let config = format!("[registry]\nuser_pulls = [\"{}/lab/*\"]\n", reg.host);
    let Some(c) = crate::cluster::Cluster::start_with_config(Some(&config)) else {
        return;
    };
    let name = format!("{}/lab/app:1", reg.host);
    let pulled = c.berth(Mode::Rootless, &["image", "pull", "--cluster", &name]);
    assert!(
        pulled
            .ok()
            .starts_with(&format!("Pulled {name} into the cluster's store")),
        "{}",
        pulled.stdout
    );
    // Not in the user's own store: in the controller's.
    assert!(images(&c.f, Mode::Rootless).is_empty());
    let listed: Vec<serde_json::Value> = serde_json::from_str(
        c.berth(Mode::Rootless, &["image", "ls", "--cluster", "--json"])
            .ok(),
    )
    .unwrap();
    let ours = listed
        .iter()
        .find(|i| i["id"] == pushed.config.as_str())
        .unwrap_or_else(|| panic!("{listed:?}"));
    assert!(ours["names"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == name.as_str()));
    let hex = pushed.config.trim_start_matches("sha256:");
    let lookup = c.berth(
        Mode::Rootless,
        &["as", "shifterimg", "lookup", &format!("docker:{name}")],
    );
    assert_eq!(lookup.ok(), format!("{hex}\n"));

    // What the administrator did not allow is refused, with the rule; root may.
    let other = format!("{}/other/app:1", reg.host);
    let refused = c.berth(
        Mode::Rootless,
        &["as", "shifterimg", "pull", &format!("docker:{other}")],
    );
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("user_pulls"), "{}", refused.stderr);
    c.berth(Mode::Root, &["image", "pull", "--cluster", &other])
        .ok();

    // A Shifter script of the user's runs in the image pulled.
    let script = format!("#!/bin/sh\n#SBATCH --image=docker:{name}\nls /bin/probe\n");
    let id = c.submit(Mode::Rootless, "pulled.sh", &script, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = std::fs::read_to_string(c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out")));
    assert_eq!(job["state"], "COMPLETED", "{job} {out:?}");
    assert_eq!(out.unwrap(), "/bin/probe\n");
}

/// A user's own registry credentials: what the controller pulls with them is the user's
/// alone (named under users/USER/), and the controller keeps no credentials.
#[test]
fn users_pull_private_images_with_their_own_credentials() {
    let Some(f) = Fixture::new() else { return };
    let reg = Registry::start(
        &f,
        Options {
            auth: Auth::Basic,
            ..Options::default()
        },
    );
    let pushed = reg.push(&docker_archive_of(&f, HELLO), "lab/secret:1");
    let listen = format!("127.0.0.1:{}", crate::cluster::free_port());
    let Some(c) = crate::cluster::Cluster::start_with(None, &["--listen", &listen]) else {
        return;
    };
    let socket = c.socket.to_str().unwrap();
    let on_cluster = |mode: Mode, args: &[&str], stdin: Option<&str>| {
        berth_with(&c.f, mode, args, &[("BERTH_SOCKET", socket)], stdin)
    };
    let name = format!("{}/lab/secret:1", reg.host);
    let pull = ["image", "pull", "--cluster", name.as_str()];
    // The controller has no credentials for it.
    assert_error(
        &on_cluster(Mode::Root, &pull, None),
        &["401"],
        "root, no credentials",
    );

    // The user's saved login goes with their pull (--private).
    let login = on_cluster(
        Mode::Rootless,
        &[
            "image",
            "login",
            &reg.host,
            "--username",
            USER,
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(login.code, 0, "{}", login.stderr);
    let private = format!(
        "users/{TEST_USER}/{}/lab/secret:1",
        reg.host.replace(':', "-")
    );
    // Without --private the controller pulls with its own credentials (none here).
    assert_error(
        &on_cluster(Mode::Rootless, &pull, None),
        &["401"],
        "the user, public",
    );
    let private_pull = ["image", "pull", "--cluster", "--private", name.as_str()];
    // Over TCP (TLS) as on the controller's socket.
    let (api, token) = (format!("https://{listen}"), c.token(Mode::Rootless));
    let env = [("BERTH_API", api.as_str()), ("BERTH_TOKEN", token.as_str())];
    let pulled = berth_with(&c.f, Mode::Rootless, &private_pull, &env, None);
    assert!(
        pulled
            .ok()
            .starts_with(&format!("Pulled {private} into the cluster's store")),
        "{}",
        pulled.stdout
    );
    for mode in [Mode::Rootless, Mode::Root] {
        let listed: Vec<serde_json::Value> =
            serde_json::from_str(c.berth(mode, &["image", "ls", "--cluster", "--json"]).ok())
                .unwrap();
        let ours = listed.iter().find(|i| i["id"] == pushed.config.as_str());
        assert_eq!(
            ours.map(|i| i["names"].clone()),
            Some(serde_json::json!([private])),
            "{mode:?}: {listed:?}"
        );
    }
    // Another user (nobody) neither sees it nor has a job run in it, by name or by id.
    let as_nobody = |args: &[&str], stdin: &str| {
        run_with_stdin(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(&c.f.bin)
                .args(args)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("BERTH_SOCKET", &c.socket)
                .current_dir("/"),
            stdin,
        )
    };
    let listed = as_nobody(&["image", "ls", "--cluster", "--json"], "");
    assert!(
        !listed.ok().contains(&pushed.config) && !listed.stdout.contains("secret"),
        "{}",
        listed.stdout
    );
    // nobody's held submission of a job in `image` is refused: the image is not theirs to run.
    let refused_to_nobody = |image: &str, what: &str| {
        let script = format!("#!/bin/sh\n#BERTH --image {image}\ntrue\n");
        let refused = as_nobody(&["submit", "--hold", "-o", "/dev/null"], &script);
        assert!(
            refused.stderr.contains("is not in the cluster's store"),
            "{what}: {}{}",
            refused.stdout,
            refused.stderr
        );
    };
    for image in [private.as_str(), pushed.config.as_str()] {
        refused_to_nobody(image, image);
    }
    // Its owner shares it (Shifter's image ACLs): with nobody by name, then with nobody's
    // group; nobody then sees it and has a job accepted in it, and not once it is shared no
    // more. Only its owner or root may share it, and only a private name.
    let held = format!("#!/bin/sh\n#BERTH --image {private}\ntrue\n");
    let nobody_sees = || {
        as_nobody(&["image", "ls", "--cluster", "--json"], "")
            .ok()
            .contains(&private)
    };
    let share = |args: &[&str]| {
        let mut all = vec!["image", "share", private.as_str()];
        all.extend_from_slice(args);
        c.berth(Mode::Rootless, &all)
    };
    let theirs = as_nobody(&["image", "share", &private, "--user", "nobody"], "");
    assert_error(
        &theirs,
        &["only they or root may share it"],
        "nobody's share",
    );
    let public = c.berth(
        Mode::Rootless,
        &["image", "share", name.as_str(), "--user", "nobody"],
    );
    assert_error(&public, &["not a private image name"], "a public name");
    assert_error(
        &share(&["--user", "no-such-user-here"]),
        &["no user no-such-user-here"],
        "an unknown user",
    );
    for whom in [["--user", "nobody"], ["--group", "nogroup"]] {
        let shared = share(&whom);
        assert_eq!(
            shared.ok().trim(),
            format!("{private} is shared with {}s {}", &whom[0][2..], whom[1]),
        );
        let listed = c.berth(Mode::Rootless, &["image", "ls", "--cluster"]);
        assert!(
            listed.ok().contains(shared.stdout.trim()),
            "{}",
            listed.stdout
        );
        assert!(nobody_sees(), "{whom:?}");
        let accepted = as_nobody(
            &["submit", "--parsable", "--hold", "-o", "/dev/null"],
            &held,
        );
        let job = accepted.ok().trim().to_string();
        let mut remove = whom.to_vec();
        remove.push("--remove");
        assert_eq!(
            share(&remove).ok().trim(),
            format!("{private} is shared with no one")
        );
        refused_to_nobody(&private, "shared no more");
        // Its job accepted meanwhile does not start in it now (Shifter checks at the start).
        as_nobody(&["release", &job], "").ok();
        let ended = c.wait_for(job.parse().unwrap(), &["FAILED", "COMPLETED"]);
        assert!(
            ended["state"] == "FAILED"
                && ended["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("is no longer shared with nobody")),
            "{ended}"
        );
    }
    let script = format!("#!/bin/sh\n#BERTH --image {private}\nls /bin/probe\n");
    let id = c.submit(Mode::Rootless, "private.sh", &script, &[]);
    let job = c.wait_for(id, &["COMPLETED", "FAILED"]);
    let out = std::fs::read_to_string(c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out")));
    assert_eq!(job["state"], "COMPLETED", "{job} {out:?}");
    assert_eq!(out.unwrap(), "/bin/probe\n");
    // The registry's own name is not the image's: nobody's pull of it made it public.
    let public = format!("#!/bin/sh\n#BERTH --image {name}\ntrue\n");
    let refused = c.try_submit(Mode::Rootless, "public.sh", &public, &[]);
    assert!(
        refused.stderr.contains("is not in the cluster's store"),
        "{}",
        refused.stderr
    );
    // The user's credentials were not kept: root's pull still needs its own.
    assert_error(
        &on_cluster(Mode::Root, &pull, None),
        &["401"],
        "root, after the user's pull",
    );
    // Root's own with credentials is root's alone too, not everyone's.
    let creds = format!("{USER}:{PASSWORD}");
    let roots = [
        "image",
        "pull",
        "--cluster",
        "--creds",
        &creds,
        name.as_str(),
    ];
    let pulled = on_cluster(Mode::Root, &roots, None);
    let root_private = private.replace(&format!("users/{TEST_USER}/"), "users/root/");
    assert!(
        pulled.ok().starts_with(&format!("Pulled {root_private} ")),
        "{}",
        pulled.stdout
    );
    // Nobody names an image into users/ but privately (a Docker Hub name there, say).
    let into_users = ["image", "pull", "--cluster", "users/nobody/tools:1"];
    for mode in [Mode::Root, Mode::Rootless] {
        assert_error(
            &on_cluster(mode, &into_users, None),
            &["names under users/ are users' private images"],
            "a name under users/",
        );
    }
    // Shifter's pull with ACLs: the image is the user's own (with their saved login), shared
    // with those named at once; nobody sees it.
    let shifter_name = format!("docker:{name}");
    let acl = on_cluster(
        Mode::Rootless,
        &[
            "as",
            "shifterimg",
            "--user",
            "nobody",
            "pull",
            &shifter_name,
        ],
        None,
    );
    assert_eq!(
        acl.ok(),
        format!(
            "Pulled docker:{private}, status: READY (id {})\n{private} is shared with users nobody\n",
            pushed.config
        )
    );
    assert!(nobody_sees(), "shared by shifterimg");
    assert_error(
        &on_cluster(
            Mode::Root,
            &[
                "as",
                "shifterimg",
                "--group",
                "nogroup",
                "pull",
                &shifter_name,
            ],
            None,
        ),
        &["root's pulls are everyone's"],
        "root's pull with ACLs",
    );
    // Without a saved login a private pull asks anonymously (never with the controller's
    // credentials): this registry wants a login.
    let logout = on_cluster(Mode::Rootless, &["image", "logout", &reg.host], None);
    assert_eq!(logout.code, 0, "{}", logout.stderr);
    assert_error(
        &on_cluster(Mode::Rootless, &private_pull, None),
        &["401"],
        "an anonymous private pull",
    );
}
