use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong with images. Each message names the problem and, where the
/// user can do something about it, what to do.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("image '{0}' not found in the store: list images with `berth image ls`, or import one with `berth image import`")]
    NotFound(String),
    #[error(
        "image '{image}' is in use by a running container ({by}): stop it, then remove the image"
    )]
    InUse { image: String, by: String },
    #[error("image reference '{0}' is ambiguous: it matches {1} images; give more of the id")]
    Ambiguous(String, usize),
    #[error("invalid image name '{name}': {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("{path}: {why}")]
    BadArchive { path: PathBuf, why: String },
    /// An archive of several images, none of them named as asked.
    #[error("{path}: no image named {wanted} in the archive; it holds: {}", holds.join(", "))]
    NotInArchive {
        path: PathBuf,
        wanted: String,
        holds: Vec<String>,
    },
    #[error("malicious or corrupt layer {layer}: entry '{entry}' {why}; refusing to import it")]
    BadLayer {
        layer: usize,
        entry: String,
        why: &'static str,
    },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; the file is corrupt or was tampered with")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("invalid digest '{0}': expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    #[error("{tool} not found: install it (Debian: apt-get install {package})")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{tool} failed: {message}")]
    ToolFailed { tool: &'static str, message: String },
    #[error("no space left on the device holding the image store {0}: free some space (`berth image prune`, `berth image rm`) or move the store")]
    NoSpace(PathBuf),
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    /// Copying an image from another store (a standby controller's mirror of the leader's).
    #[error("{from}: {message}")]
    Copy { from: String, message: String },
    /// Internal: the single-read fast path of flattening met a layer that contradicts itself.
    #[error("the top layer writes a path twice: it needs the two-pass flattening")]
    NeedsTwoPasses,
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io {
            context,
            path,
            source,
        }
    }

    /// What is wrong with an archive, on one line: a damaged archive's bytes can reach the
    /// reason (a tar header's name, quoted by the tar reader), and they are shown as text.
    pub(crate) fn archive(path: impl Into<PathBuf>, why: impl Into<String>) -> ImageError {
        let why: String = why.into();
        ImageError::BadArchive {
            path: path.into(),
            why: why
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        }
    }
}
