//! Images mounted once per node and shared by the containers that use them, as Shifter and
//! enroot do: the first container of an image mounts its squashfs file (through a loop
//! device) under a directory of the node's daemon, and every container of that image binds
//! that tree as its read-only lower layer ([`crate::Rootfs::Directory`]) instead of mounting
//! the file again. The file is then decompressed once into the page cache for all of them,
//! and a container's start and end cost no loop device and no squashfs superblock.
//!
//! A shared mount is only a handle: each container's mount namespace holds its own bind of
//! the tree, so unmounting the shared one never disturbs a running container; the
//! superblock, and the loop device (attached with autoclear), go when the last container of
//! the image has ended. [`release_all`] unmounts only those no container is starting with.

use crate::sys;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An image's shared mount, in use: the holder's lock on it keeps [`release_all`] from
/// unmounting it until dropped (held for the container's whole life, it counts the users).
#[derive(Debug)]
pub struct SharedImage {
    pub path: PathBuf,
    _users: File,
}

fn lock(file: &File, operation: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor the caller owns; released when it is closed.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The mounted tree of the squashfs file `sqfs` under `dir`, mounted first if it is not.
/// Mounting and releasing take turns on a lock of `dir`; each user holds a shared lock on
/// the image's own lock file. A mount whose file has been deleted since (the image was
/// removed, or replaced) is detached and the current file mounted in its place (its users
/// keep the old tree).
pub fn mount_image(dir: &Path, sqfs: &Path) -> io::Result<SharedImage> {
    let file = sys::open(sqfs, libc::O_RDONLY)
        .map_err(context(format!("opening the image {}", sqfs.display())))?;
    // As the loop device names it, to compare with.
    let sqfs =
        &sys::fd_target(&file).map_err(context(format!("opening the image {}", sqfs.display())))?;
    std::fs::create_dir_all(dir).map_err(context(format!("creating {}", dir.display())))?;
    let guard = File::open(dir).map_err(context(format!("opening {}", dir.display())))?;
    lock(&guard, libc::LOCK_EX).map_err(context(format!("locking {}", dir.display())))?;
    let key = key(sqfs);
    let target = dir.join(&key);
    let users = File::create(dir.join(format!("{key}.lock")))
        .map_err(context(format!("creating a lock in {}", dir.display())))?;
    lock(&users, libc::LOCK_SH).map_err(context(format!("locking {}", dir.display())))?;
    let shared = SharedImage {
        path: target.clone(),
        _users: users,
    };
    let target_str = target.to_string_lossy().into_owned();
    match mounted(dir, &target) {
        Some((file, false)) if file == *sqfs => return Ok(shared),
        Some(_) => sys::umount_detach(&target_str)
            .map_err(context(format!("detaching the stale mount {target_str}")))?,
        None => {}
    }
    match std::fs::create_dir(&target) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(context(format!("creating {target_str}"))(e))
        }
        _ => {}
    }
    // The loop device detaches itself (autoclear) when the last mount of it goes.
    let (_device_fd, device) = sys::attach_loop(&file).map_err(context(format!(
        "attaching {} to a loop device",
        sqfs.display()
    )))?;
    sys::mount(
        Some(&device),
        &target_str,
        Some("squashfs"),
        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(context(format!("mounting {}", sqfs.display())))?;
    Ok(shared)
}

/// Unmounts the shared image mounts under `dir` that no container is starting or running
/// with, and removes what held them (at a daemon's start and stop). Those in use stay
/// mounted, for the next daemon.
pub fn release_all(dir: &Path) {
    release(dir, false)
}

/// Unmounts, as [`release_all`] does, only the free mounts whose file has been deleted (an
/// image removed from the store): its space is freed as soon as no container uses it.
pub fn release_deleted(dir: &Path) {
    release(dir, true)
}

fn release(dir: &Path, only_deleted: bool) {
    let Ok(guard) = File::open(dir) else {
        return;
    };
    if lock(&guard, libc::LOCK_EX).is_err() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let target = entry.path();
        if target.extension().is_some()
            || only_deleted && !mounted(dir, &target).is_some_and(|(_, deleted)| deleted)
        {
            continue;
        }
        let lock_path = target.with_extension("lock");
        let free = File::open(&lock_path)
            .map(|users| lock(&users, libc::LOCK_EX | libc::LOCK_NB).is_ok())
            .unwrap_or(true);
        if !free {
            continue;
        }
        if mounted(dir, &target).is_some() {
            let _ = sys::umount_detach(&target.to_string_lossy());
        }
        let _ = std::fs::remove_dir(&target);
        let _ = std::fs::remove_file(&lock_path);
    }
}

/// The name of the mount of `sqfs`: a hash of its path (image files are named by the image's
/// id, and a file is only ever replaced by one of the same content). SipHash with fixed keys:
/// the same binary names the same path alike in every process.
fn key(sqfs: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    sqfs.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// What a loop device mounted on `target` reads, and whether that file has been deleted;
/// `None` if no loop device is mounted there (`target` is on `dir`'s own device).
fn mounted(dir: &Path, target: &Path) -> Option<(PathBuf, bool)> {
    let (outer, inner) = (
        std::fs::metadata(dir).ok()?,
        std::fs::metadata(target).ok()?,
    );
    if outer.dev() == inner.dev() {
        return None;
    }
    let (major, minor) = (libc::major(inner.dev()), libc::minor(inner.dev()));
    let text = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/loop/backing_file"))
        .unwrap_or_default();
    let name = text.trim_end_matches('\n');
    Some(match name.strip_suffix(" (deleted)") {
        Some(name) => (PathBuf::from(name), true),
        None => (PathBuf::from(name), false),
    })
}
