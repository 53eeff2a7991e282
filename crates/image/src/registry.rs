//! Pulling from an OCI distribution registry (the Docker Registry HTTP API V2): manifests,
//! image indexes, configs and layers, anonymous or with basic or bearer-token authentication,
//! every byte checked against its digest.
//!
//! The conversation follows the distribution spec and what docker does: ping `/v2/`; on a
//! 401 read the `WWW-Authenticate` challenge; for `Bearer` fetch a token from the realm
//! (with the user's credentials, if any) for `repository:NAME:pull` and retry; for `Basic`
//! retry with the credentials. HTTPS first; plain HTTP only for registries the administrator
//! marked insecure, or on loopback, and only after HTTPS failed.

use crate::archive::{pick_platform, Descriptor, OciIndex, OciManifest};
use crate::digest::{Digest, HashingReader};
use crate::ImageError;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Manifests and configs are small; a registry sending more is broken or hostile.
const MAX_DOCUMENT: u64 = 8 << 20;

/// How to reach registries: from the administrator's config and the user's credentials.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Extra CA certificates (PEM files) trusted for HTTPS.
    pub ca_certs: Vec<PathBuf>,
    /// Registries (`host:port`) that may be spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Credentials given on the command line, overriding the auth file.
    pub creds: Option<(String, String)>,
    /// The auth file (podman's `auth.json` format) to read credentials from.
    pub auth_file: Option<PathBuf>,
}

/// `registry.local:5000/lab/openfoam:2.3.0` or `...@sha256:...`, split for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReference {
    /// `host[:port]` as the user wrote it.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl PullReference {
    pub fn parse(text: &str) -> Result<PullReference, ImageError> {
        let invalid = |why| ImageError::InvalidName {
            name: text.to_string(),
            why,
        };
        let (name, digest) = match text.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d)?)),
            None => (text, None),
        };
        let reference = crate::Reference::parse(name)?;
        let (first, rest) = reference
            .repository
            .split_once('/')
            .unwrap_or(("", &reference.repository));
        let (registry, repository) =
            if first.contains('.') || first.contains(':') || first == "localhost" {
                (first.to_string(), rest.to_string())
            } else {
                // Docker Hub's conventions: no host means docker.io, one component means library/.
                let repo = if reference.repository.contains('/') {
                    reference.repository.clone()
                } else {
                    format!("library/{}", reference.repository)
                };
                ("docker.io".to_string(), repo)
            };
        if repository.is_empty() {
            return Err(invalid("the repository is missing after the registry host"));
        }
        let tagged = name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'));
        let tag = if digest.is_some() && !tagged {
            None
        } else {
            Some(reference.tag)
        };
        Ok(PullReference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The name the image gets in the store: Docker Hub's in their familiar form
    /// (`busybox:latest`), one pulled by digest as `NAME@DIGEST` (its tag, if given too,
    /// is not the image's: Docker pulls by the digest alone).
    pub fn name(&self) -> String {
        crate::Reference::full_name(&self.qualified())
    }

    /// [`PullReference::name`] with its registry written out (`docker.io/library/busybox:
    /// latest`), as an administrator's patterns may name it.
    pub fn qualified(&self) -> String {
        let base = format!("{}/{}", self.registry, self.repository);
        match (&self.tag, &self.digest) {
            (_, Some(d)) => format!("{base}@{d}"),
            (Some(t), None) => format!("{base}:{t}"),
            (None, None) => format!("{base}:latest"),
        }
    }

    fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}

fn loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.")
}

/// Credentials for `registry` from an auth file (`{"auths": {"host": {"auth": base64}}}`).
pub fn credentials_from(auth_file: &Path, registry: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(auth_file).ok()?;
    let file: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auth = file["auths"][registry]["auth"].as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let (user, pass) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some((user, pass))
}

/// Stores credentials for `registry` in the auth file (mode 0600, replaced atomically).
pub fn store_credentials(
    auth_file: &Path,
    registry: &str,
    user: &str,
    password: &str,
) -> Result<(), ImageError> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    edit_auths(auth_file, |auths| {
        auths.insert(registry.to_string(), serde_json::json!({ "auth": auth }));
        true
    })
    .map(|_| ())
}

/// Removes the credentials saved for `registry` from the auth file; whether it had any.
pub fn remove_credentials(auth_file: &Path, registry: &str) -> Result<bool, ImageError> {
    edit_auths(auth_file, |auths| auths.remove(registry).is_some())
}

/// Changes the auth file's `auths` as `edit` says, where it says it changed them (mode 0600,
/// replaced atomically); whether it did.
fn edit_auths(
    auth_file: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>) -> bool,
) -> Result<bool, ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file: serde_json::Value = std::fs::read_to_string(auth_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| serde_json::json!({"auths": {}}));
    if !file["auths"].is_object() {
        file["auths"] = serde_json::json!({});
    }
    let auths = file["auths"].as_object_mut().expect("made an object above");
    if !edit(auths) {
        return Ok(false);
    }
    if let Some(dir) = auth_file.parent() {
        std::fs::create_dir_all(dir).map_err(ImageError::io("cannot create", dir))?;
    }
    let tmp = auth_file.with_extension(format!("tmp{}", std::process::id()));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(ImageError::io("cannot write", &tmp))?;
    io::Write::write_all(
        &mut out,
        serde_json::to_string_pretty(&file)
            .expect("json")
            .as_bytes(),
    )
    .map_err(ImageError::io("cannot write", &tmp))?;
    std::fs::rename(&tmp, auth_file).map_err(ImageError::io("cannot write", auth_file))?;
    Ok(true)
}

/// One registry conversation: the HTTP client, the scheme that worked, and the token.
pub(crate) struct Client {
    http: reqwest::blocking::Client,
    registry: String,
    host: String,
    base: String,
    creds: Option<(String, String)>,
    authorization: Option<String>,
    scope: String,
}

enum Challenge {
    Bearer(BTreeMap<String, String>),
    Basic,
}

/// Parses `Bearer realm="https://auth",service="reg",scope="repository:a:pull"`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut map = BTreeMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(',').map_or((after, ""), |(v, a)| (v, a))
        };
        map.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = after.trim_start_matches([',', ' ']);
    }
    Some(Challenge::Bearer(map))
}

/// The challenge of a 401 answer's `WWW-Authenticate` header.
fn challenge_of(response: &reqwest::blocking::Response) -> Option<Challenge> {
    let header = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)?
        .to_str()
        .ok()?;
    parse_challenge(header)
}

fn describe(e: &reqwest::Error) -> String {
    if let Some(problem) = crate::tls::certificate_problem(e) {
        return format!("HTTPS: {problem}");
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// How long a registry may keep berth waiting for its next bytes.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// How long its first answer (`/v2/`, over HTTPS, then HTTP where allowed) may take.
const PING_LIMIT: Duration = Duration::from_secs(15);

impl Client {
    /// Connects to the registry of `reference` (pinging `/v2/`), choosing the scheme.
    pub(crate) fn connect(
        reference: &PullReference,
        options: &RegistryOptions,
    ) -> Result<Client, ImageError> {
        // The blocking client's limit is on each wait: for an answer's head, and for each
        // read of its body (a large layer, read as it comes, takes what it takes), so that a
        // registry that stops answering is given up.
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(STALL_LIMIT)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        let tls = crate::tls::client_config(&options.ca_certs).map_err(|message| {
            ImageError::Registry {
                registry: reference.registry.clone(),
                message,
            }
        })?;
        builder = builder.use_preconfigured_tls(tls);
        let http = builder.build().map_err(|e| ImageError::Registry {
            registry: reference.registry.clone(),
            message: describe(&e),
        })?;
        let creds = options.creds.clone().or_else(|| {
            options
                .auth_file
                .as_deref()
                .and_then(|f| credentials_from(f, &reference.registry))
        });
        let host = reference.api_host().to_string();
        let mut client = Client {
            http,
            registry: reference.registry.clone(),
            base: format!("https://{host}"),
            host,
            creds,
            authorization: None,
            scope: format!("repository:{}:pull", reference.repository),
        };
        let may_use_http =
            loopback(&reference.registry) || options.insecure.contains(&reference.registry);
        match client
            .http
            .get(format!("{}/v2/", client.base))
            .timeout(PING_LIMIT)
            .send()
        {
            Ok(_) => Ok(client),
            // A server that answered TLS with a certificate we do not trust does speak HTTPS:
            // falling back to plain HTTP would only hide the real problem.
            Err(https_err)
                if may_use_http
                    && (https_err.is_connect() || https_err.is_request())
                    && !crate::tls::is_certificate_error(&https_err) =>
            {
                client.base = format!("http://{}", client.host);
                match client
                    .http
                    .get(format!("{}/v2/", client.base))
                    .timeout(PING_LIMIT)
                    .send()
                {
                    Ok(_) => Ok(client),
                    Err(e) => Err(client.unreachable(&format!(
                        "over HTTPS: {}; over HTTP: {}",
                        describe(&https_err),
                        describe(&e)
                    ))),
                }
            }
            Err(e) => Err(client.unreachable(&describe(&e))),
        }
    }

    fn unreachable(&self, why: &str) -> ImageError {
        ImageError::Registry {
            registry: self.registry.clone(),
            message: format!(
                "cannot reach the registry: {why}; check its name and port and that it is running; for a private CA add it to [registry] ca_certs, for plain HTTP to [registry] insecure in the configuration"
            ),
        }
    }

    fn fetch_token(&mut self, params: &BTreeMap<String, String>) -> Result<(), ImageError> {
        let realm = params.get("realm").ok_or_else(|| ImageError::Registry {
            registry: self.registry.clone(),
            message: "the registry's Bearer challenge names no realm".into(),
        })?;
        let mut request = self
            .http
            .get(realm)
            .query(&[("scope", self.scope.as_str())]);
        if let Some(service) = params.get("service") {
            request = request.query(&[("service", service.as_str())]);
        }
        if let Some((user, pass)) = &self.creds {
            request = request.basic_auth(user, Some(pass));
        }
        let response = request
            .send()
            .map_err(|e| self.unreachable(&format!("token service {realm}: {}", describe(&e))))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(self.denied(status.as_u16()));
        }
        if !status.is_success() {
            return Err(ImageError::Registry {
                registry: self.registry.clone(),
                message: format!("token service {realm} answered {status}"),
            });
        }
        let mut text = String::new();
        response
            .take(MAX_DOCUMENT)
            .read_to_string(&mut text)
            .map_err(|e| self.bad(format!("token service {realm}: {e}")))?;
        let body: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| self.bad(format!("token service {realm} sent no token: {e}")))?;
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .ok_or_else(|| ImageError::Registry {
                registry: self.registry.clone(),
                message: format!("token service {realm} sent no token"),
            })?;
        self.authorization = Some(format!("Bearer {token}"));
        Ok(())
    }

    fn denied(&self, status: u16) -> ImageError {
        let repo = self
            .scope
            .trim_start_matches("repository:")
            .trim_end_matches(":pull");
        let message = match (status, &self.creds) {
            (401, None) => format!("pulling {repo} needs credentials (401 Unauthorized): log in with `berth image login {}` or pass --creds USER:PASSWORD", self.registry),
            (401, Some((user, _))) => format!("the registry refused the credentials of {user} (401 Unauthorized): log in again with `berth image login {}`", self.registry),
            _ => format!("not allowed to pull {repo} ({status} Forbidden): ask the registry's administrator for read access"),
        };
        ImageError::Registry {
            registry: self.registry.clone(),
            message,
        }
    }

    /// GET `path` under /v2/, authenticating as the registry asks.
    fn get(
        &mut self,
        path: &str,
        accept: &[&str],
    ) -> Result<reqwest::blocking::Response, ImageError> {
        let url = format!("{}/v2/{path}", self.base);
        for attempt in 0..2 {
            let mut request = self.http.get(&url);
            if !accept.is_empty() {
                request = request.header(reqwest::header::ACCEPT, accept.join(", "));
            }
            if let Some(auth) = &self.authorization {
                request = request.header(reqwest::header::AUTHORIZATION, auth);
            }
            let response = request
                .send()
                .map_err(|e| self.unreachable(&describe(&e)))?;
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                match challenge_of(&response) {
                    Some(Challenge::Bearer(params)) => self.fetch_token(&params)?,
                    Some(Challenge::Basic) => match &self.creds {
                        Some((user, pass)) => {
                            let encoded = base64::engine::general_purpose::STANDARD
                                .encode(format!("{user}:{pass}"));
                            self.authorization = Some(format!("Basic {encoded}"));
                        }
                        None => return Err(self.denied(401)),
                    },
                    None => return Err(self.denied(401)),
                }
                continue;
            }
            return match status.as_u16() {
                200..=299 => Ok(response),
                401 | 403 => Err(self.denied(status.as_u16())),
                404 => {
                    let what = match path.split_once("/manifests/") {
                        Some((repo, reference)) if reference.starts_with("sha256:") => {
                            format!("{repo}@{reference}")
                        }
                        Some((repo, reference)) => format!("{repo}:{reference}"),
                        None => path.replacen("/blobs/", " blob ", 1),
                    };
                    Err(self.bad(format!(
                        "{what} not found (404): check the repository name and the tag or digest"
                    )))
                }
                _ => Err(ImageError::Registry {
                    registry: self.registry.clone(),
                    message: format!("GET {path} answered {status}"),
                }),
            };
        }
        Err(self.denied(401))
    }

    /// A JSON document, its media type, and the digest the registry says it has.
    fn document(
        &mut self,
        path: &str,
        accept: &[&str],
    ) -> Result<(Vec<u8>, String, Option<Digest>), ImageError> {
        let response = self.get(path, accept)?;
        let claimed = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut bytes = Vec::new();
        response
            .take(MAX_DOCUMENT)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::Registry {
                registry: self.registry.clone(),
                message: format!("reading {path}: {e}"),
            })?;
        Ok((bytes, media_type, claimed))
    }

    /// The image manifest for this machine's platform, and the config it names.
    pub(crate) fn manifest(
        &mut self,
        reference: &PullReference,
    ) -> Result<(OciManifest, Vec<u8>, Digest), ImageError> {
        let repo = &reference.repository;
        let mut target = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        let mut expected = reference.digest.clone();
        for _ in 0..3 {
            let (bytes, media_type, claimed) = self.document(
                &format!("{repo}/manifests/{target}"),
                &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST],
            )?;
            // By digest, the manifest must have that digest; by tag, the one the registry
            // claims for it (Docker-Content-Digest), so that a corrupted copy is caught too.
            let actual = Digest::of(&bytes);
            for d in expected.iter().chain(claimed.iter()) {
                d.verify(
                    &actual,
                    format_args!("the manifest of {}", reference.name()),
                )?;
            }
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| self.bad(format!("invalid manifest: {e}")))?;
            let kind = value["mediaType"]
                .as_str()
                .unwrap_or(&media_type)
                .to_string();
            if value["schemaVersion"] == 1 {
                return Err(self.bad("the image uses the obsolete schema 1 manifest, which berth does not read; push it again with a current tool".into()));
            }
            if kind.contains("index")
                || kind.contains("manifest.list")
                || value.get("manifests").is_some()
            {
                let index: OciIndex = serde_json::from_value(value)
                    .map_err(|e| self.bad(format!("invalid image index: {e}")))?;
                let chosen: &Descriptor = pick_platform(&index).ok_or_else(|| {
                    self.bad(format!(
                        "the image has no variant for linux/{}",
                        crate::archive::host_arch()
                    ))
                })?;
                let digest = Digest::parse(&chosen.digest)?;
                target = digest.to_string();
                expected = Some(digest);
                continue;
            }
            let manifest: OciManifest = serde_json::from_value(value)
                .map_err(|e| self.bad(format!("invalid manifest: {e}")))?;
            let config_digest = Digest::parse(&manifest.config.digest)?;
            let (config, _, _) = self.document(&format!("{repo}/blobs/{config_digest}"), &[])?;
            config_digest.verify(&Digest::of(&config), "the image config")?;
            return Ok((manifest, config, config_digest));
        }
        Err(self.bad("image indexes nest too deeply".into()))
    }

    fn bad(&self, message: String) -> ImageError {
        ImageError::Registry {
            registry: self.registry.clone(),
            message,
        }
    }

    /// Downloads a blob into `path`, verifying its digest as it streams.
    pub(crate) fn download(
        &mut self,
        repository: &str,
        digest: &Digest,
        path: &Path,
    ) -> Result<(), ImageError> {
        let response = self.get(&format!("{repository}/blobs/{digest}"), &[])?;
        let mut reader = HashingReader::new(response);
        let mut file = std::fs::File::create(path).map_err(ImageError::io("cannot write", path))?;
        io::copy(&mut reader, &mut file).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) => ImageError::NoSpace(path.to_path_buf()),
            _ => self.bad(format!("downloading {digest}: {e}")),
        })?;
        let actual = reader
            .finish()
            .map_err(|e| self.bad(format!("downloading {digest}: {e}")))?;
        digest.verify(&actual, format_args!("layer {digest}"))
    }

    /// Checks that the credentials are accepted (for `berth image login`).
    pub(crate) fn check_login(&mut self) -> Result<(), ImageError> {
        self.scope = "registry:catalog:*".into();
        let response = self
            .http
            .get(format!("{}/v2/", self.base))
            .send()
            .map_err(|e| self.unreachable(&describe(&e)))?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        match challenge_of(&response) {
            Some(Challenge::Bearer(params)) => self.fetch_token(&params),
            _ => {
                let (user, pass) = self.creds.clone().unwrap_or_default();
                let status = self
                    .http
                    .get(format!("{}/v2/", self.base))
                    .basic_auth(user, Some(pass))
                    .send()
                    .map_err(|e| self.unreachable(&describe(&e)))?
                    .status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(self.denied(status.as_u16()))
                }
            }
        }
    }
}

/// `berth image login`: checks the credentials against the registry, then stores them.
pub fn login(
    registry: &str,
    user: &str,
    password: &str,
    options: &RegistryOptions,
    auth_file: &Path,
) -> Result<(), ImageError> {
    let reference = PullReference {
        registry: registry.to_string(),
        repository: String::new(),
        tag: None,
        digest: None,
    };
    let options = RegistryOptions {
        creds: Some((user.to_string(), password.to_string())),
        ..options.clone()
    };
    Client::connect(&reference, &options)?.check_login()?;
    store_credentials(auth_file, registry, user, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = PullReference::parse("registry.local:5000/lab/openfoam:2.3.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("registry.local:5000", "lab/openfoam", Some("2.3.0"))
        );
        assert_eq!(r.name(), "registry.local:5000/lab/openfoam:2.3.0");
        let r = PullReference::parse("busybox").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/busybox")
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.name(), "busybox:latest");
        assert_eq!(r.qualified(), "docker.io/library/busybox:latest");
        let r = PullReference::parse("docker.io/lab/app:2").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.name().as_str()),
            ("lab/app", "lab/app:2")
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = PullReference::parse(&format!("localhost:5000/app@{d}")).unwrap();
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_ref().map(|d| d.as_str())),
            (None, Some(d))
        );
        assert_eq!(r.name(), format!("localhost:5000/app@{d}"));
        let r = PullReference::parse(&format!("localhost:5000/app:v2@{d}")).unwrap();
        assert_eq!(r.name(), format!("localhost:5000/app@{d}"));
        assert!(PullReference::parse("localhost:5000/").is_err());
        assert!(PullReference::parse("host.x/app@sha256:zz").is_err());
    }

    #[test]
    fn challenges() {
        let Some(Challenge::Bearer(p)) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:lab/app:pull""#,
        ) else {
            panic!()
        };
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:lab/app:pull");
        assert!(matches!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        ));
        assert!(parse_challenge("Negotiate").is_none());
    }

    /// A registry that takes the connection and never answers is given up (a pull hung for
    /// hours on one), over HTTPS and then over HTTP.
    #[test]
    fn a_registry_that_never_answers_is_given_up() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepted and held, never answered.
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(2).collect();
            std::thread::sleep(Duration::from_secs(600));
            drop(held);
        });
        let reference = PullReference::parse(&format!("127.0.0.1:{port}/lab/app:1")).unwrap();
        let e = match Client::connect(&reference, &RegistryOptions::default()) {
            Ok(_) => panic!("a silent registry was taken"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("cannot reach the registry") && e.contains("over HTTP"),
            "{e}"
        );
    }

    #[test]
    fn loopback_registries() {
        assert!(loopback("127.0.0.1:5000") && loopback("localhost") && loopback("localhost:443"));
        assert!(!loopback("registry.local:5000"));
    }

    #[test]
    fn auth_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/auth.json");
        store_credentials(&file, "reg:5000", "ann", "s3:cret").unwrap();
        store_credentials(&file, "other", "bob", "x").unwrap();
        assert_eq!(
            credentials_from(&file, "reg:5000"),
            Some(("ann".into(), "s3:cret".into()))
        );
        assert_eq!(
            credentials_from(&file, "other"),
            Some(("bob".into(), "x".into()))
        );
        assert_eq!(credentials_from(&file, "none"), None);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A logout takes one registry's and leaves the others'.
        assert!(remove_credentials(&file, "reg:5000").unwrap());
        assert!(!remove_credentials(&file, "reg:5000").unwrap());
        assert_eq!(credentials_from(&file, "reg:5000"), None);
        assert_eq!(
            credentials_from(&file, "other"),
            Some(("bob".into(), "x".into()))
        );
    }
}
