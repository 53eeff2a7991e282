//! Who is calling over TCP: signed, short-lived tokens. Users get theirs from `berth token`
//! (as Slurm's `scontrol token` gives slurmrestd's users), minted only on the controller's
//! Unix socket, where the caller is known from its peer credentials; nodes and the controller
//! mint their own for each other from the cluster key they share (as MUNGE credentials).
//!
//! A token is `berth1.<payload>.<signature>`: the payload is base64url JSON naming the user,
//! its uid and an expiry; the signature is HMAC-SHA256 over `berth1.<payload>` with the
//! cluster key (32 random bytes in the state directory, root's eyes only). Whoever holds the
//! key can mint tokens for anyone, so it never leaves the controller's machine.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::path::Path;

const PREFIX: &str = "berth1";
/// How long a token lives unless asked otherwise, and at most.
pub const DEFAULT_LIFETIME: u64 = 86_400;
pub const MAX_LIFETIME: u64 = 30 * 86_400;

/// The principal berth's own daemons put in their credentials instead of a user name (a ':'
/// is never part of a Unix user name, so none can be mistaken for a user's).
pub const CONTROLLER: &str = "@controller";

/// The principal of node `name`'s agent.
pub fn node_principal(name: &str) -> String {
    format!("@node:{name}")
}

/// How long a daemon's credential is good for: one request's worth, as MUNGE's are.
pub const CREDENTIAL_LIFETIME: u64 = 60;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("malformed token: expected berth1.PAYLOAD.SIGNATURE, from `berth token`")]
    Malformed,
    #[error(
        "the token's signature does not match this cluster's key: get a new one with `berth token`"
    )]
    BadSignature,
    #[error("the token expired: get a new one with `berth token`")]
    Expired,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub user: String,
    pub uid: u32,
    /// Seconds since the epoch after which the token is refused.
    pub exp: u64,
    /// In a token `berth token` gave: the SHA-256 of the cluster's TLS certificate, which
    /// the user's CLI pins ([`crate::tls`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
}

impl Claims {
    /// What `token` claims, unchecked: for its holder, who cannot check the signature (the
    /// controller checks it).
    pub fn unverified(token: &str) -> Option<Claims> {
        let mut parts = token.trim().split('.');
        let payload = match (parts.next(), parts.next()) {
            (Some(PREFIX), Some(payload)) => payload,
            _ => return None,
        };
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

/// The cluster key: signs and checks tokens, and gives the cluster's TLS identity.
pub struct Key {
    mac: hmac::Key,
    tls: crate::tls::Tls,
    /// The key itself, for a step's leader to make its own credentials with
    /// (`relay::Signer`).
    bytes: Vec<u8>,
}

impl Key {
    pub fn from_bytes(bytes: &[u8]) -> Key {
        let mac = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let seed = hmac::sign(&mac, b"berth tls ed25519 v1");
        let seed: &[u8; 32] = seed
            .as_ref()
            .try_into()
            .expect("HMAC-SHA256 gives 32 bytes");
        Key {
            tls: crate::tls::Tls::from_seed(seed),
            mac,
            bytes: bytes.to_vec(),
        }
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The cluster's TLS identity.
    pub fn tls(&self) -> &crate::tls::Tls {
        &self.tls
    }

    /// Reads the key at `path`, or makes one (32 random bytes, mode 0600) where there is
    /// none yet, atomically, so two controllers starting at once end up with the same key.
    pub fn load_or_create(path: &Path) -> Result<Key, String> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() >= 32 => return Ok(Key::from_bytes(&bytes)),
            Ok(_) => {
                return Err(format!(
                    "{}: a cluster key must be at least 32 bytes; remove it to have a new one made",
                    path.display()
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| "the system's random number generator failed".to_string())?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            // Never replaces a key another controller made meanwhile.
            std::fs::hard_link(&tmp, path)
        };
        let made = write();
        let _ = std::fs::remove_file(&tmp);
        match made {
            Ok(()) => Ok(Key::from_bytes(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Key::load_or_create(path),
            Err(e) => Err(format!("cannot write {}: {e}", path.display())),
        }
    }

    pub fn mint(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let signed = format!("{PREFIX}.{payload}");
        let tag = hmac::sign(&self.mac, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// A short-lived credential for one of berth's daemons (`principal`: [`CONTROLLER`] or a
    /// [`node_principal`]).
    pub fn credential(&self, principal: &str) -> String {
        self.mint(&Claims {
            user: principal.to_string(),
            uid: 0,
            exp: crate::runner::now() + CREDENTIAL_LIFETIME,
            tls: None,
        })
    }

    /// The claims of a token this key signed and that has not expired at `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let (signed, signature) = token.trim().rsplit_once('.').ok_or(TokenError::Malformed)?;
        let payload = signed
            .strip_prefix(PREFIX)
            .and_then(|p| p.strip_prefix('.'))
            .ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        // Constant-time comparison (ring), before anything of the payload is believed.
        hmac::verify(&self.mac, signed.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            user: "alice".into(),
            uid: 1001,
            exp,
            tls: Some("f1".into()),
        }
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let key = Key::from_bytes(&[7; 32]);
        let token = key.mint(&claims(1000));
        assert!(token.starts_with("berth1."));
        assert_eq!(key.verify(&token, 999), Ok(claims(1000)));
        assert_eq!(key.verify(&token, 1000), Err(TokenError::Expired));
        // What its holder reads of it.
        assert_eq!(Claims::unverified(&token), Some(claims(1000)));
        assert_eq!(Claims::unverified("other.x.y"), None);
    }

    #[test]
    fn forged_or_altered_tokens_are_refused() {
        let key = Key::from_bytes(&[7; 32]);
        let token = key.mint(&claims(1000));
        // Another cluster's key.
        assert_eq!(
            Key::from_bytes(&[8; 32]).verify(&token, 0),
            Err(TokenError::BadSignature)
        );
        // A payload swapped for root's, keeping the signature.
        let (_, signature) = token.rsplit_once('.').unwrap();
        let root = URL_SAFE_NO_PAD.encode(br#"{"user":"root","uid":0,"exp":1000}"#);
        assert_eq!(
            key.verify(&format!("berth1.{root}.{signature}"), 0),
            Err(TokenError::BadSignature)
        );
        for bad in ["", "berth1", "berth1.x", "other.x.y", "berth1.x.!!!"] {
            assert_eq!(key.verify(bad, 0), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let a = Key::load_or_create(&path).unwrap();
        let b = Key::load_or_create(&path).unwrap();
        let token = a.mint(&claims(10));
        assert!(b.verify(&token, 0).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").unwrap();
        assert!(Key::load_or_create(&path).is_err());
    }
}
