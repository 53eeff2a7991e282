//! `srun --container-save=PATH` (pyxis's): once a step's tasks have ended, the files of its
//! own container (its image with the container's writable layer over it, without the binds
//! and mounts berth or the tasks made) go into a squashfs file at PATH, on each node of the
//! step. The step process reads them as the container's user and tar2sqfs writes the file as
//! that user, next to PATH first, then renamed: what the user may not read is left out (and
//! said), and a save that fails leaves no file behind.

use super::StepError;
use std::path::{Path, PathBuf};

/// `f` run as `id` ([`berth_runtime::enter::as_user`]), its failure and the identity
/// switch's as one message.
fn as_user<T>(
    id: &berth_runtime::Identity,
    f: impl FnOnce() -> std::io::Result<T>,
) -> Result<T, String> {
    berth_runtime::enter::as_user(id, f)
        .map_err(|e| e.to_string())
        .and_then(|done| done.map_err(|e| e.to_string()))
}

/// A layer on disk for a container without a name, only so that it can be saved
/// (`containers/<name>` in the job's directory: `.step<ID>` for a step's, `.job` for the
/// job's own; a container's name never starts with '.'); [`save`]'s caller removes it.
pub(crate) fn unnamed_layer(job_dir: &Path, name: &str) -> Result<PathBuf, StepError> {
    let dir = super::named::containers(job_dir)?.join(name);
    std::fs::create_dir(&dir).map_err(super::io_err(format!("creating {}", dir.display())))?;
    super::named::make_layer(&dir)?;
    Ok(dir)
}

/// Saves the container whose layer is `layer` over the image tree `image` to `path`, as
/// `id`, from `host`'s mount namespace (which this process enters, leaving the container's).
/// What is left out is said on stderr, after `tool`'s name.
pub(crate) fn save(
    host: &berth_runtime::enter::HostNamespace,
    layer: &Path,
    image: &Path,
    id: &berth_runtime::Identity,
    path: &Path,
    tool: &str,
) -> Result<(), StepError> {
    let failed = |why: String| {
        StepError::Save(format!(
            "cannot save the container to {}: {why}",
            path.display()
        ))
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(failed("not a file's path".into()));
    };
    host.back()?;
    let view = layer.join("view");
    if let Err(e) = std::fs::create_dir(&view) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(failed(format!("creating {}: {e}", view.display())));
        }
    }
    let files = berth_runtime::enter::ContainerFiles::mount(&layer.join("upper"), image, &view)?;
    // Read from inside, by relative paths: the user may not pass the job's directory.
    std::env::set_current_dir(&view).map_err(|e| failed(e.to_string()))?;
    let partial = dir.join(format!(
        ".{}.berth-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // Made first as the user, for a plain answer when they may not write there.
    as_user(id, || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
    })
    .map_err(|e| failed(format!("{} may not write there ({e})", id.user)))?;
    let owner = berth_image::Owner {
        uid: id.uid,
        gid: id.gid,
        groups: id.groups.clone(),
    };
    let mut unreadable = Vec::new();
    let built = berth_image::build_squashfs(&partial, dir, Some(&owner), |out| {
        as_user(id, || {
            Ok(berth_image::tar_directory(
                Path::new("."),
                out,
                Some(&mut unreadable),
            ))
        })
        .unwrap_or_else(|message| {
            Err(berth_image::ImageError::ToolFailed {
                tool: "berth",
                message,
            })
        })
    });
    let _ = std::env::set_current_dir("/");
    drop(files);
    if let Err(e) = built {
        let _ = as_user(id, || std::fs::remove_file(&partial));
        return Err(failed(match e {
            berth_image::ImageError::NoSpace(_) => {
                format!("no space left on the device of {}", dir.display())
            }
            e => e.to_string(),
        }));
    }
    as_user(id, || std::fs::rename(&partial, path)).map_err(failed)?;
    if !unreadable.is_empty() {
        let shown: Vec<String> = unreadable
            .iter()
            .take(5)
            .map(|p| format!("/{}", p.display()))
            .collect();
        berth_core::say!(
            "{tool}: the container saved to {} leaves out {} file(s) {} may not read: {}{}",
            path.display(),
            unreadable.len(),
            id.user,
            shown.join(", "),
            if unreadable.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        );
    }
    Ok(())
}
