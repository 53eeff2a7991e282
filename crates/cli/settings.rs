//! Where things are: the configuration file and the image store.

use anyhow::{Context, Result};
use berth_core::Config;
use std::path::{Path, PathBuf};

pub const SYSTEM_CONFIG: &str = "/etc/berth/berth.toml";
pub const SYSTEM_STORE: &str = "/var/lib/berth";

pub struct Settings {
    pub config: Config,
    pub store: PathBuf,
    /// `etcd[s]://HOST:PORT[,...]`: the cluster's state store (`berth controller --store`).
    pub state_store: Option<String>,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Settings {
    pub fn load(store: Option<PathBuf>, config: Option<PathBuf>) -> Result<Settings> {
        let (path, required) = match config {
            Some(p) => (p, true),
            None => (PathBuf::from(SYSTEM_CONFIG), false),
        };
        let config = match std::fs::read_to_string(&path) {
            Ok(text) => {
                Config::from_toml(&text).with_context(|| format!("in {}", path.display()))?
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read the configuration file {}", path.display())
                })
            }
        };
        // `berth controller --store etcd://...` names the cluster's state store: the images
        // are then in $BERTH_STORE, or where the configuration or the default says.
        let etcd = |s: &std::ffi::OsStr| {
            let s = s.to_string_lossy();
            s.starts_with("etcd://") || s.starts_with("etcds://")
        };
        let (store, state_store) = match store {
            Some(s) if etcd(s.as_os_str()) => (
                std::env::var_os("BERTH_STORE")
                    .map(PathBuf::from)
                    .filter(|e| !etcd(e.as_os_str())),
                Some(s.to_string_lossy().into_owned()),
            ),
            other => (other, None),
        };
        let store = store
            .or_else(|| config.store.clone())
            .unwrap_or_else(default_store);
        Ok(Settings {
            config,
            store,
            state_store,
        })
    }

    /// TLS to the state store's etcd where it is `etcds://`, as `[etcd]` configures it.
    pub fn etcd_tls(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        if !self
            .state_store
            .as_ref()
            .is_some_and(|s| s.starts_with("etcds://"))
        {
            return Ok(None);
        }
        let etcd = &self.config.etcd;
        let identity = etcd.cert.as_deref().zip(etcd.key.as_deref());
        berth_image::tls_client_config(&etcd.ca_certs, identity)
            .map(|c| Some(std::sync::Arc::new(c)))
            .map_err(|e| anyhow::anyhow!("[etcd]: {e}"))
    }

    pub fn store(&self) -> Result<berth_image::Store> {
        Ok(berth_image::Store::open(&self.store)?)
    }

    /// Registry settings from the config, with the user's auth file.
    pub fn registry(&self, creds: Option<(String, String)>) -> berth_image::RegistryOptions {
        berth_image::RegistryOptions {
            ca_certs: self.config.registry.ca_certs.clone(),
            insecure: self.config.registry.insecure.clone(),
            creds,
            auth_file: Some(auth_file()),
        }
    }
}

/// Where registry credentials live: $BERTH_AUTH_FILE, else $XDG_CONFIG_HOME/berth/auth.json
/// (~/.config/berth/auth.json), in podman's format.
pub fn auth_file() -> PathBuf {
    if let Some(f) = std::env::var_os("BERTH_AUTH_FILE") {
        return PathBuf::from(f);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| Path::new(v).is_absolute())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".config")
        });
    config.join("berth/auth.json")
}

/// /var/lib/berth for root; $XDG_DATA_HOME/berth (~/.local/share/berth) for everyone else.
fn default_store() -> PathBuf {
    if is_root() {
        return PathBuf::from(SYSTEM_STORE);
    }
    match std::env::var_os("XDG_DATA_HOME").filter(|v| Path::new(v).is_absolute()) {
        Some(dir) => PathBuf::from(dir).join("berth"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
            .join(".local/share/berth"),
    }
}
