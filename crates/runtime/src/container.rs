//! The container process: everything that happens inside the new namespaces, from the first
//! mount to execve(2). Runs in the child of a clone(2) from a single-threaded process.
//!
//! The root filesystem is assembled under a private tmpfs ("the stage") mounted over /tmp in
//! the new mount namespace (nothing there is visible to the host):
//!
//! ```text
//! stage/lower   the image: squashfs through a loop device (root) or a bind of the
//!               unpacked directory (rootless), read-only
//! stage/upper   tmpfs-backed writable layer, discarded with the namespace
//! stage/root    overlayfs of the two: the container's /
//! ```
//!
//! Every mount target inside the image is opened with openat2(RESOLVE_IN_ROOT), so a symlink
//! in the image (say /home -> /etc) resolves inside the image and can never make berth mount
//! or create anything on the host. Then pivot_root, drop privileges, exec.

use crate::plan::{GPU_BIN_DIR, GPU_LIB_DIR};
use crate::spec::{ContainerSpec, Program, Rootfs};
use crate::sys::{self, fd_path};
use crate::{identity, Identity};
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

const STAGE: &str = "/tmp";

/// A failure inside the container, with the exit status it maps to.
pub(crate) struct Failure {
    pub code: i32,
    pub message: String,
}

fn fail(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Failure {
    let what = what.to_string();
    move |e| Failure {
        code: 125,
        message: format!("cannot set up the container: {what}: {e}"),
    }
}

/// Mount flags of the filesystems berth mounts itself (the stage, the overlay, /tmp): no
/// set-uid, no devices (the security model relies on it).
const SAFE: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

/// The flags a bind gets: no set-uid, no devices (the security model relies on it), and
/// maybe read-only, on the bound mount and every mount below it.
fn attrs(access: Access) -> u64 {
    match access {
        Access::ReadWrite => sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
        Access::ReadOnly => sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_RDONLY,
        // Device nodes bound from the host must stay usable: nosuid, but not nodev.
        Access::Device => sys::MOUNT_ATTR_NOSUID,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadWrite,
    ReadOnly,
    Device,
}

impl Access {
    fn from_read_only(read_only: bool) -> Access {
        if read_only {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        }
    }
}

/// Binds the host's `source` onto `path` inside the container root, creating the mount point.
fn bind(
    root: &OwnedFd,
    source: &str,
    path: &str,
    dir: bool,
    access: Access,
    what: &str,
) -> Result<(), Failure> {
    let source = sys::open(source, libc::O_PATH).map_err(fail(format!("opening {what}")))?;
    bind_fd(root, &source, path, dir, access, what, None)
}

/// [`bind`] from a descriptor opened in this mount namespace; a mount point it must make is
/// made only on one of the mounts `own` lists (see [`ensure`]).
fn bind_fd(
    root: &OwnedFd,
    source: &OwnedFd,
    path: &str,
    dir: bool,
    access: Access,
    what: &str,
    own: Option<&Own>,
) -> Result<(), Failure> {
    let target = ensure(root, path, dir, own)?;
    attach(source, &target, access, what).map_err(|failure| {
        // A file onto a directory of the image: the kernel's EINVAL says nothing more.
        let onto_dir = std::fs::File::from(target)
            .metadata()
            .is_ok_and(|m| m.is_dir());
        match !dir && onto_dir {
            true => Failure {
                code: 125,
                message: format!(
                    "cannot bind a file onto {path}: it is a directory in the image; name the file's place in it (such as {}/NAME)",
                    path.trim_end_matches('/')
                ),
            },
            false => failure,
        }
    })
}

/// Binds `source` onto the mount point `target`, restricted as `access` says.
fn attach(source: &OwnedFd, target: &OwnedFd, access: Access, what: &str) -> Result<(), Failure> {
    sys::bind_tree(source.as_fd(), target.as_fd(), attrs(access))
        .map_err(fail(format!("binding {what}")))
}

/// Opens (creating if missing) `path` inside the container root, as a directory or a file.
/// With `own` (the mounts berth made for the container: its overlay, its tmpfs /dev, /tmp
/// (or a job's own /tmp) and home), what is missing is made only on one of them, never in
/// a host directory bound into the container, which it would outlive.
fn ensure(root: &OwnedFd, path: &str, dir: bool, own: Option<&Own>) -> Result<OwnedFd, Failure> {
    let flags = libc::O_PATH | if dir { libc::O_DIRECTORY } else { 0 };
    // Most mount points exist in the image: one lookup; the rest mostly lack only their
    // last component: one more.
    let missing = match sys::open_in_root(root, path, flags, 0) {
        Ok(fd) => return Ok(fd),
        Err(e) => e.raw_os_error() == Some(libc::ENOENT),
    };
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let Some((last, dirs)) = comps.split_last() else {
        return Err(Failure {
            code: 125,
            message: format!("cannot mount on {path}: it is the image's root"),
        });
    };
    let dir_flags = libc::O_PATH | libc::O_DIRECTORY;
    if missing {
        if let Ok(parent) = sys::open_in_root(root, &format!("/{}", dirs.join("/")), dir_flags, 0) {
            return create_in(&parent, last, dir, path, own);
        }
    }
    let mut parent =
        sys::open_in_root(root, ".", dir_flags, 0).map_err(fail("opening the image root"))?;
    for (i, comp) in comps.iter().enumerate() {
        let sub = comps[..=i].join("/");
        let want_dir = i + 1 < comps.len() || dir;
        let flags = libc::O_PATH | if want_dir { libc::O_DIRECTORY } else { 0 };
        parent = match sys::open_in_root(root, &sub, flags, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                create_in(&parent, comp, want_dir, path, own)?
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(Failure {
                    code: 125,
                    message: format!(
                        "cannot mount on {path}: /{sub} is not a directory in the image"
                    ),
                })
            }
            Err(e) => return Err(fail(format!("opening {path} in the image"))(e)),
        };
    }
    Ok(parent)
}

/// Creates `name`, which a lookup found missing, in `parent` (a directory inside the
/// container root) and opens it. A dangling symlink in its place (Debian's /etc/resolv.conf
/// -> ../run/...) is replaced: the change lands in the container's throwaway upper layer.
/// With `own`, only where `parent` is on one of those mounts (see [`ensure`]).
fn create_in(
    parent: &OwnedFd,
    name: &str,
    dir: bool,
    path: &str,
    own: Option<&Own>,
) -> Result<OwnedFd, Failure> {
    if let Some(own) = own {
        let mount = sys::mount_of(parent).map_err(fail(format!("looking up {path}")))?;
        if !own.mounts().contains(&mount) {
            return Err(Failure {
                code: 125,
                message: format!(
                    "cannot bind onto {path}: the image lacks it, and its place is in a host directory bound into the container, where berth makes nothing that would outlive it: make it there first, or bind elsewhere"
                ),
            });
        }
    }
    let mode = if dir { 0o755 } else { 0o644 };
    match sys::create_at(parent, name, dir, mode) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            sys::unlink_at(parent, name).and_then(|()| sys::create_at(parent, name, dir, mode))
        }
        created => created,
    }
    .map_err(fail(format!(
        "creating the mount point {path} in the image"
    )))
}

/// The mounts berth made for a container (its overlay, its /dev, its /tmp, a job's own /tmp
/// once bound there, an empty home), by their places in it: looked up only when a mount
/// point is missing (few starts have one), as they are then.
struct Own<'a> {
    root: &'a OwnedFd,
    places: Vec<&'a str>,
}

impl Own<'_> {
    /// Their mounts' ids (see [`sys::mount_of`]); a place missing is none.
    fn mounts(&self) -> Vec<u64> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let open = |place: &&str| sys::open_in_root(self.root, place, flags, 0).ok();
        let fds = self.places.iter().filter_map(open);
        fds.filter_map(|fd| sys::mount_of(&fd).ok()).collect()
    }
}

fn read_in_root(root: &OwnedFd, path: &str) -> String {
    // Non-blocking: an image's FIFO in its place must not hang the start.
    let Ok(fd) = sys::open_in_root(root, path, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return String::new();
    };
    let mut text = String::new();
    let _ = std::fs::File::from(fd)
        .take(1 << 20)
        .read_to_string(&mut text);
    text
}

/// How the user's entries join an image's user database file.
type Join = fn(&str, &Identity) -> String;

/// The user database's files in /etc, with their [`Join`].
const USER_DB: [(&str, Join); 2] = [("passwd", identity::passwd), ("group", identity::group)];

/// Writes the image's /etc/passwd and /etc/group with the user's entries straight into the
/// overlay's fresh `upper` layer, before the overlay is mounted (`lower`: the image's tree):
/// the files writing them through the overlay gives (the image's owners and modes, /etc's
/// too), without the overlay's copy-up of each (a lookup in both layers, a copy, the work
/// directory's rename); a file the image lacks is made (0644). `false`, nothing written,
/// where /etc is not a directory or either file not a regular one (a symlink, say): those
/// go through the overlay.
fn user_db_in_upper(lower: &OwnedFd, upper: &str, id: &Identity) -> Result<bool, Failure> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(etc) = sys::open_beneath(lower, "etc", libc::O_RDONLY | libc::O_DIRECTORY) else {
        return Ok(false);
    };
    let etc = std::fs::File::from(etc);
    let etc_meta = etc.metadata().map_err(fail("reading the image's /etc"))?;
    let etc = OwnedFd::from(etc);
    let mut files = Vec::new();
    for (name, add) in USER_DB {
        // Non-blocking: an image's FIFO in its place must not hang the start.
        let flags = libc::O_RDONLY | libc::O_NONBLOCK;
        // A symlink in its place is followed within the image's root; one that leads
        // nowhere is as no file (the one written replaces it in the upper layer).
        let opened = match sys::open_beneath(&etc, name, flags) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                sys::open_in_root(lower, &format!("/etc/{name}"), flags, 0)
            }
            opened => opened,
        };
        let (text, meta) = match opened {
            Ok(fd) => {
                let mut file = std::fs::File::from(fd);
                let meta = file
                    .metadata()
                    .map_err(fail(format!("reading /etc/{name}")))?;
                if !meta.is_file() {
                    return Ok(false);
                }
                let mut text = String::new();
                let _ = (&mut file).take(1 << 20).read_to_string(&mut text);
                (text, Some(meta))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => (String::new(), None),
            Err(_) => return Ok(false),
        };
        files.push((name, add(&text, id), meta));
    }
    // Owned and moded as in the image (a chown the user namespace cannot map stays the
    // creator's, as a copy-up's would).
    let like = |path: &str, meta: &std::fs::Metadata| -> Result<(), Failure> {
        let _ = std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(fail(format!("writing {path}")))
    };
    let upper_etc = format!("{upper}/etc");
    mkdir(&upper_etc)?;
    like(&upper_etc, &etc_meta)?;
    for (name, text, meta) in files {
        let path = format!("{upper_etc}/{name}");
        std::fs::write(&path, text).map_err(fail(format!("writing /etc/{name}")))?;
        match meta {
            Some(meta) => like(&path, &meta)?,
            // New, as the overlay's would be.
            None => std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(fail(format!("writing /etc/{name}")))?,
        }
    }
    Ok(true)
}

fn mkdir(path: &str) -> Result<(), Failure> {
    std::fs::create_dir(path).map_err(fail(format!("creating {path}")))
}

/// Builds the container's root filesystem and pivots into it; with `remap`, a remapped
/// root's (see `enter::new`).
pub(crate) fn build_root(
    spec: &ContainerSpec,
    image: &OwnedFd,
    remap: Option<std::os::fd::BorrowedFd>,
) -> Result<(), Failure> {
    if spec.net_namespace {
        sys::loopback_up().map_err(fail("bringing up the network namespace's loopback"))?;
    }
    if let Some(name) = &spec.hostname {
        sys::sethostname(name).map_err(fail(format!("setting the host name {name}")))?;
    }
    if spec.rootfs == Rootfs::Host {
        // The host's own filesystem: nothing to mount (the mount namespace stays a copy).
        return Ok(());
    }
    sys::mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(fail("making mounts private"))?;
    // Reopen host paths in this namespace before the stage covers /tmp (they may lie there).
    let reopen = |path: &std::path::Path, fd: &OwnedFd| {
        sys::reopen_same(path, fd).map_err(fail(format!("opening {}", path.display())))
    };
    let sources = spec
        .binds
        .iter()
        .map(|b| reopen(&b.source, &b.fd))
        .collect::<Result<Vec<_>, _>>()?;
    let image_dir = match &spec.rootfs {
        Rootfs::Directory(path) => Some(reopen(path, image)?),
        Rootfs::Squashfs(_) | Rootfs::Host => None,
    };
    // A kept layer, opened in this namespace (it may lie under /tmp, too).
    let layer = spec
        .layer
        .as_deref()
        .map(|path| {
            sys::open(path, libc::O_PATH | libc::O_DIRECTORY).map_err(fail(format!(
                "opening the container's layer {}",
                path.display()
            )))
        })
        .transpose()?;
    sys::mount(Some("berth"), STAGE, Some("tmpfs"), SAFE, Some("mode=0755"))
        .map_err(fail("mounting the staging tmpfs"))?;
    let root = format!("{STAGE}/root");
    mkdir(&root)?;
    let (upper, work) = match &layer {
        Some(dir) => (
            format!("{}/upper", fd_path(dir)),
            format!("{}/work", fd_path(dir)),
        ),
        None => {
            let (upper, work) = (format!("{STAGE}/upper"), format!("{STAGE}/work"));
            mkdir(&upper)?;
            mkdir(&work)?;
            (upper, work)
        }
    };
    // The image's tree: a directory is the overlay's lower layer as it is (by its descriptor:
    // overlayfs only reads it, and the overlay's own mount flags govern what is seen); a
    // squashfs file is mounted on the stage first.
    let lower = match (&spec.rootfs, &image_dir) {
        (Rootfs::Directory(_), Some(dir)) if remap.is_none() => fd_path(dir),
        _ => format!("{STAGE}/lower"),
    };
    if let Some(userns) = remap {
        // Root inside is the user outside: the image's tree idmapped on the stage through
        // the tasks' user namespace (root's files the user's), and the layer's root the
        // user's.
        let id = &spec.identity;
        let (Rootfs::Directory(_), Some(dir)) = (&spec.rootfs, &image_dir) else {
            return Err(fail("remapping root")(std::io::Error::other(
                "only an image's unpacked tree can be remapped",
            )));
        };
        mkdir(&lower)?;
        let at = sys::open(&lower, libc::O_PATH | libc::O_DIRECTORY).map_err(fail(&lower))?;
        sys::idmapped_tree(dir.as_fd(), at.as_fd(), userns).map_err(|e| {
            match e.raw_os_error() {
                // The file system cannot be mounted idmapped (squashfs before recent kernels).
                Some(libc::EINVAL) => Failure {
                    code: 125,
                    message: format!(
                        "a remapped root needs a kernel that can mount the image's file system (squashfs) idmapped; this one ({}) cannot",
                        sys::kernel_release()
                    ),
                },
                _ => fail("mounting the image idmapped for the remapped root")(e),
            }
        })?;
        std::os::unix::fs::chown(&upper, Some(id.uid), Some(id.gid))
            .map_err(fail("giving the remapped root its layer"))?;
    }
    match &spec.rootfs {
        Rootfs::Squashfs(path) => {
            mkdir(&lower)?;
            let (_loop_fd, device) = sys::attach_loop(image).map_err(fail(format!(
                "attaching {} to a loop device",
                path.display()
            )))?;
            sys::mount(
                Some(&device),
                &lower,
                Some("squashfs"),
                libc::MS_RDONLY | SAFE,
                None,
            )
            .map_err(fail(format!("mounting {}", path.display())))?;
        }
        Rootfs::Directory(_) => {}
        Rootfs::Host => unreachable!("returned above: a host job builds no root"),
    }
    // The user must exist in the image's user database for `id`, `whoami`, ssh-less MPI:
    // in a fresh upper layer, written there before the overlay is mounted.
    let id: &Identity = &spec.identity;
    let user_db_written = match (&layer, remap, &image_dir) {
        // An unpacked tree is the lower layer itself, open already.
        (None, None, Some(tree)) => user_db_in_upper(tree, &upper, id)?,
        (None, None, None) => {
            let tree = sys::open(&lower, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(fail("opening the image's tree"))?;
            user_db_in_upper(&tree, &upper, id)?
        }
        _ => false,
    };
    // Inside a user namespace overlayfs must keep its metadata in user.* xattrs (which tmpfs
    // supports since Linux 6.6); as root it uses trusted.*.
    let mut options = format!("lowerdir={lower},upperdir={upper},workdir={work}");
    if spec.rootless {
        options.push_str(",userxattr");
    }
    sys::mount(
        Some(&spec.rootfs.mount_source()),
        &root,
        Some("overlay"),
        SAFE,
        Some(&options),
    )
    .map_err(fail("mounting the writable overlay"))?;
    // Unbindable (only now: overlayfs refuses unbindable layers), so that a recursive bind
    // of a host directory above the stage (the current directory /tmp, say) does not copy
    // the stage, and the container inside it, into the container.
    sys::mount(None, STAGE, None, libc::MS_UNBINDABLE, None)
        .map_err(fail("making the stage unbindable"))?;
    let rootfd = sys::open(&root, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(fail("opening the container root"))?;

    // /proc: a fresh one shows only the container's processes, but needs a pid namespace the
    // mounter owns; without one, the host's is bound (as Charliecloud does).
    let proc_fd = ensure(&rootfd, "/proc", true, None)?;
    if spec.pid_namespace {
        sys::mount(
            Some("proc"),
            &fd_path(&proc_fd),
            Some("proc"),
            SAFE | libc::MS_NOEXEC,
            None,
        )
        .map_err(fail("mounting /proc"))?;
    } else {
        bind(&rootfd, "/proc", "/proc", true, Access::ReadWrite, "/proc")?;
    }
    bind(&rootfd, "/sys", "/sys", true, Access::ReadOnly, "/sys")?;

    // A minimal /dev: a tmpfs with the harmless device nodes bound from the host, the
    // host's pts (so the caller's terminal works) and shm (so MPI shared memory works).
    let dev = ensure(&rootfd, "/dev", true, None)?;
    sys::mount(
        Some("tmpfs"),
        &fd_path(&dev),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755,size=1m"),
    )
    .map_err(fail("mounting /dev"))?;
    let dev_dir = sys::open_in_root(&rootfd, "/dev", libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(fail("opening /dev"))?;
    // The host's devices (and below, its pts and shm) are bound onto entries made in the
    // fresh /dev directly, without a lookup through the image.
    let bind_dev = |name: &str, source: &OwnedFd, dir: bool, access: Access| {
        let what = format!("/dev/{name}");
        attach(
            source,
            &create_in(&dev_dir, name, dir, &what, None)?,
            access,
            &what,
        )
    };
    for node in ["null", "zero", "full", "random", "urandom", "tty", "ptmx"] {
        let host = format!("/dev/{node}");
        if spec.rootless {
            // No mknod in a user namespace: bind the host's node.
            if let Ok(source) = sys::open(&host, libc::O_PATH) {
                bind_dev(node, &source, false, Access::Device)?;
            }
            continue;
        }
        // Root makes the node: one inode instead of one more mount to set up and tear down.
        // SAFETY: stat fills a zeroed struct we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let c_host = sys::cstr(&host).map_err(fail(&host))?;
        // SAFETY: NUL-terminated path and a valid out-pointer.
        if unsafe { libc::stat(c_host.as_ptr(), &mut st) } != 0 {
            continue;
        }
        let name = sys::cstr(node).map_err(fail(node))?;
        // SAFETY: mknodat with a NUL-terminated name relative to a directory fd we own;
        // then the host's mode, which the umask may have narrowed.
        if unsafe {
            libc::mknodat(dev_dir.as_raw_fd(), name.as_ptr(), st.st_mode, st.st_rdev) != 0
                || libc::fchmodat(dev_dir.as_raw_fd(), name.as_ptr(), st.st_mode & 0o7777, 0) != 0
        } {
            return Err(fail(format!("creating /dev/{node}"))(
                io::Error::last_os_error(),
            ));
        }
    }
    for (dir, access) in [("pts", Access::Device), ("shm", Access::ReadWrite)] {
        if let Ok(source) = sys::open(format!("/dev/{dir}"), libc::O_PATH | libc::O_DIRECTORY) {
            bind_dev(dir, &source, true, access)?;
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let (n, t) = (
            CString::new(name).expect("static"),
            CString::new(target).expect("static"),
        );
        // SAFETY: symlinkat with NUL-terminated strings relative to a directory fd we own.
        unsafe { libc::symlinkat(t.as_ptr(), dev_dir.as_raw_fd(), n.as_ptr()) };
    }
    if let Some(gpu) = &spec.gpu {
        for device in &gpu.devices {
            let p = device.to_string_lossy();
            bind(&rootfd, &p, &p, false, Access::Device, &p)?;
        }
    }
    // A tmpfs /tmp, unless a directory is bound there (a job's own, a user's -B DIR:/tmp).
    let tmp_bound = spec
        .binds
        .iter()
        .any(|b| std::path::Path::new(&b.target) == std::path::Path::new("/tmp"));
    if !tmp_bound {
        let tmp = ensure(&rootfd, "/tmp", true, None)?;
        sys::mount(
            Some("tmpfs"),
            &fd_path(&tmp),
            Some("tmpfs"),
            SAFE,
            Some("mode=1777"),
        )
        .map_err(fail("mounting /tmp"))?;
    }
    if spec.empty_home {
        let (uid, gid) = match spec.remap_root {
            true => (0, 0),
            false => (id.uid, id.gid),
        };
        let home = ensure(&rootfd, &id.home, true, None)?;
        sys::mount(
            Some("tmpfs"),
            &fd_path(&home),
            Some("tmpfs"),
            SAFE,
            Some(&format!("mode=0700,uid={uid},gid={gid}")),
        )
        .map_err(fail(format!("mounting an empty home at {}", id.home)))?;
    }

    // Otherwise through the overlay (into its upper layer: private to this container, gone
    // at its end).
    if !user_db_written {
        ensure(&rootfd, "/etc", true, None)?;
        for (name, add) in USER_DB {
            let path = format!("/etc/{name}");
            let text = add(&read_in_root(&rootfd, &path), id);
            let fd = sys::open_in_root(
                &rootfd,
                &path,
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                0o644,
            )
            .map_err(fail(format!("writing {path}")))?;
            std::fs::File::from(fd)
                .write_all(text.as_bytes())
                .map_err(fail(format!("writing {path}")))?;
        }
    }
    // Host networking: the host's name resolution applies inside too.
    for file in ["/etc/hosts", "/etc/resolv.conf"] {
        if std::path::Path::new(file).is_file() {
            bind(&rootfd, file, file, false, Access::ReadOnly, file)?;
        }
    }
    // The mounts berth made: mount points of the binds are made on these alone (a
    // directory bound at /tmp is the container's /tmp: one of them too, once bound).
    let own = Own {
        root: &rootfd,
        places: ["/", "/dev", "/tmp"]
            .into_iter()
            .chain(spec.empty_home.then_some(id.home.as_str()))
            .collect(),
    };
    for (b, source) in spec.binds.iter().zip(&sources) {
        bind_fd(
            &rootfd,
            source,
            &b.target,
            b.is_dir,
            Access::from_read_only(b.read_only),
            &b.source.display().to_string(),
            Some(&own),
        )?;
    }
    for (path, dir) in &spec.masks {
        let hidden = format!("{path} (denied by the bind policy)");
        match dir {
            true => {
                let target = ensure(&rootfd, path, true, Some(&own))?;
                sys::mount(
                    Some("tmpfs"),
                    &fd_path(&target),
                    Some("tmpfs"),
                    SAFE | libc::MS_RDONLY,
                    Some("mode=0000,size=4k"),
                )
                .map_err(fail(format!("hiding {hidden}")))?;
            }
            false => bind(&rootfd, "/dev/null", path, false, Access::ReadOnly, &hidden)?,
        }
    }
    if let Some(gpu) = &spec.gpu {
        for (file, name) in &gpu.libraries {
            let p = file.to_string_lossy();
            bind(
                &rootfd,
                &p,
                &format!("{GPU_LIB_DIR}/{name}"),
                false,
                Access::ReadOnly,
                &p,
            )?;
        }
        for file in &gpu.binaries {
            let p = file.to_string_lossy();
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            bind(
                &rootfd,
                &p,
                &format!("{GPU_BIN_DIR}/{name}"),
                false,
                Access::ReadOnly,
                &p,
            )?;
        }
    }
    drop(rootfd);
    sys::pivot_into(&root).map_err(fail("pivot_root into the image"))
}

/// Finds the program like execvp(3), with the container's PATH, and execs it. Returns only
/// with the failure, mapped to 127 (not found) or 126 (found but not executable).
pub(crate) fn exec(argv: &[String], env: &[String]) -> Failure {
    let to_c = |s: &String| CString::new(s.as_bytes()).unwrap_or_default();
    let c_argv: Vec<CString> = argv.iter().map(to_c).collect();
    let c_env: Vec<CString> = env.iter().map(to_c).collect();
    let cmd = &argv[0];
    let candidates: Vec<String> = if cmd.contains('/') {
        vec![cmd.clone()]
    } else if cmd.is_empty() {
        // (Not the PATH's directories themselves, as a shell would not.)
        Vec::new()
    } else {
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(crate::plan::DEFAULT_PATH);
        path.split(':')
            .map(|d| format!("{}/{cmd}", if d.is_empty() { "." } else { d }))
            .collect()
    };
    let mut denied: Option<(String, io::Error)> = None;
    for candidate in &candidates {
        let err = sys::execve(&to_c(candidate), &c_argv, &c_env);
        match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR)
                if std::path::Path::new(candidate).symlink_metadata().is_ok() =>
            {
                return Failure {
                    code: 127,
                    message: format!("cannot execute {candidate}: {}", missing_loader(candidate)),
                };
            }
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => continue,
            Some(libc::EACCES) | Some(libc::EPERM) => {
                denied.get_or_insert((candidate.clone(), err));
            }
            _ => {
                return Failure {
                    code: 126,
                    message: format!("cannot execute {candidate}: {err}"),
                }
            }
        }
    }
    match denied {
        Some((path, e)) => Failure {
            code: 126,
            message: format!("cannot execute {path}: {e} (is it executable?)"),
        },
        None if cmd.contains('/') => Failure {
            code: 127,
            message: format!("{cmd}: no such file or directory in the image"),
        },
        None => Failure {
            code: 127,
            message: format!("{cmd}: command not found in the image"),
        },
    }
}

/// Why a program that exists cannot be executed for want of a file (ENOENT from execve):
/// its script's interpreter (`#!` line), named, or its ELF dynamic loader.
fn missing_loader(program: &str) -> String {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    match interpreter(&head[..n]) {
        Some(interp) => format!(
            "its interpreter {interp} is not in the image (its first line, #!{interp}, names it)"
        ),
        None => "its dynamic loader (or an interpreter) is not in the image: a program built for another system?".into(),
    }
}

/// The interpreter a `#!` line names, from a file's first bytes.
fn interpreter(head: &[u8]) -> Option<String> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let text = String::from_utf8_lossy(line);
    text.split_whitespace().next().map(str::to_string)
}

fn report(fd: &OwnedFd, failure: &Failure) {
    let mut msg = vec![failure.code as u8];
    msg.extend_from_slice(failure.message.as_bytes());
    // SAFETY: write(2) from a live buffer to a descriptor we own.
    unsafe { libc::write(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
}

/// Drops to the container user: supplementary groups, gid, uid, then no capabilities and no
/// way back (no_new_privs: set-uid binaries and file capabilities do nothing).
fn drop_privileges(spec: &ContainerSpec, die_with_parent: bool) -> Result<(), Failure> {
    become_user(&spec.identity, spec.rootless, die_with_parent)
}

/// [`become_user`], or with `remap`, root in that user namespace (`id` outside: a remapped
/// root, see `enter::new`), with no more privileges than `id` has.
pub(crate) fn become_task(
    id: &crate::Identity,
    rootless: bool,
    remap: Option<std::os::fd::BorrowedFd>,
    die_with_parent: bool,
) -> Result<(), Failure> {
    match remap {
        Some(userns) => {
            sys::setns(&userns, libc::CLONE_NEWUSER)
                .map_err(fail("entering the remapped root's user namespace"))?;
            become_user(&Identity::root(), false, die_with_parent)
        }
        None => become_user(id, rootless, die_with_parent),
    }
}

/// [`drop_privileges`] for a process that is not the container's first: a job step's task
/// (crate::enter). `rootless`: already the user in a user namespace, no identity to switch.
pub(crate) fn become_user(
    id: &crate::Identity,
    rootless: bool,
    die_with_parent: bool,
) -> Result<(), Failure> {
    sys::drop_bounding_capabilities().map_err(fail("dropping capabilities"))?;
    if !rootless {
        let groups = if id.groups.is_empty() {
            vec![id.gid]
        } else {
            id.groups.clone()
        };
        sys::set_identity(id.uid, id.gid, &groups)
            .map_err(fail(format!("switching to user {} ({})", id.user, id.uid)))?;
    }
    // Changing credentials cleared the parent-death signal (prctl(2)): set it again, so the
    // program dies with berth even when berth is SIGKILLed.
    if die_with_parent {
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
            .map_err(fail("setting the parent-death signal"))?;
    }
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(fail("setting no_new_privs"))?;
    sys::clear_capabilities().map_err(fail("dropping capabilities"))
}

fn enter_cwd(spec: &ContainerSpec) -> Result<(), Failure> {
    match sys::chdir(&spec.cwd) {
        Ok(()) => Ok(()),
        Err(e) if spec.cwd_required => Err(Failure {
            code: 125,
            message: format!(
                "cannot enter the working directory {} in the container: {e}",
                spec.cwd
            ),
        }),
        Err(e) => {
            berth_core::say!(
                "berth: warning: cannot enter the working directory {} in the container ({e}): the program starts in /",
                spec.cwd
            );
            sys::chdir("/").map_err(fail("entering /"))
        }
    }
}

/// Execs the container's program, under its file creation mask (set last: the container's
/// own files, mount points and all, are made under berth's).
fn run_program(spec: &ContainerSpec) -> Failure {
    // (Where berth itself becomes the container, its own dispositions are still in force.)
    crate::launch::default_dispositions();
    if let Some(mask) = spec.umask {
        // SAFETY: umask(2) cannot fail.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    exec(
        &argv(spec),
        &with_pid_variable(&spec.env, spec.pid_variable),
    )
}

/// `env`, with `name` (where there is one) set to the calling process's pid (Slurm's
/// SLURM_TASK_PID), whatever it held.
pub(crate) fn with_pid_variable<'a>(
    env: &'a [String],
    name: Option<&str>,
) -> std::borrow::Cow<'a, [String]> {
    let Some(name) = name else {
        return std::borrow::Cow::Borrowed(env);
    };
    let mut env = env.to_vec();
    env.retain(|kv| kv.split_once('=').is_none_or(|(k, _)| k != name));
    // SAFETY: getpid(2) cannot fail.
    env.push(format!("{name}={}", unsafe { libc::getpid() }));
    std::borrow::Cow::Owned(env)
}

fn argv(spec: &ContainerSpec) -> Vec<String> {
    match &spec.program {
        Program::Argv(a) => a.clone(),
        Program::Shell if std::path::Path::new("/bin/bash").exists() => vec!["/bin/bash".into()],
        Program::Shell => vec!["/bin/sh".into()],
    }
}

/// The clone(2) child: sets everything up and execs; never returns. With `go`, a copy of the
/// parent's memory: waits for the parent's go-ahead (user namespace maps written, cgroup
/// moved into). Without, a child in the parent's memory while the parent waits
/// (sys::clone_vfork), which needed nothing done first.
pub(crate) fn child(
    spec: &ContainerSpec,
    image: &OwnedFd,
    cgroup_tasks: &[std::fs::File],
    mask: &libc::sigset_t,
    go: Option<OwnedFd>,
    report_fd: &OwnedFd,
    remap: Option<std::os::fd::BorrowedFd>,
) -> ! {
    // The parent's forwarding handlers came along with the clone; here they would forward to
    // nobody and swallow the signal. Until exec, a signal does what it would do to the program:
    // the forwarded ones, blocked across the clone, are unblocked once that is so (one that
    // came meanwhile acts now).
    crate::launch::default_dispositions();
    // A child in the parent's memory leaves the parent's forwarding state alone: its
    // handlers are gone, and the parent still needs a signal that came before the clone.
    if go.is_some() {
        crate::launch::reset_forwarding();
    }
    crate::launch::set_mask(mask);
    if let Some(go) = go {
        let mut byte = [0u8];
        if std::fs::File::from(go).read(&mut byte).ok() != Some(1) {
            // The parent died or gave up before releasing us.
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(125) };
        }
    }
    let failure = (|| -> Result<Failure, Failure> {
        crate::cgroup::join_self(cgroup_tasks).map_err(fail("joining the cgroup"))?;
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
            .map_err(fail("setting the parent-death signal"))?;
        if spec.time_limit.is_some() {
            // A process group of its own, so that the time limit's signals reach everything
            // the program starts (see launch::on_alarm).
            // SAFETY: setpgid(0, 0) on ourselves.
            if unsafe { libc::setpgid(0, 0) } != 0 {
                return Err(fail("creating a process group")(io::Error::last_os_error()));
            }
        }
        build_root(spec, image, remap)?;
        if spec.pid_namespace {
            return Ok(init(spec, report_fd));
        }
        become_task(&spec.identity, spec.rootless, remap, true)?;
        enter_cwd(spec)?;
        Ok(run_program(spec))
    })()
    .unwrap_or_else(|f| f);
    report(report_fd, &failure);
    // SAFETY: _exit skips destructors and atexit handlers, as a failed child must.
    unsafe { libc::_exit(failure.code) }
}

/// The calling process becomes the container, as ch-run does: no second process, no
/// signal forwarding, the exit status is the program's own by construction. The caller has
/// already unshared the namespaces. Returns only the failure.
pub(crate) fn in_place(spec: &ContainerSpec, image: &OwnedFd) -> Failure {
    (|| -> Result<Failure, Failure> {
        build_root(spec, image, None)?;
        drop_privileges(spec, false)?;
        enter_cwd(spec)?;
        Ok(run_program(spec))
    })()
    .unwrap_or_else(|f| f)
}

/// PID 1 of the container's pid namespace: starts the program, forwards signals to it (the
/// kernel delivers to PID 1 only signals it has handlers for), reaps orphans, and exits with
/// the program's status, which takes the rest of the namespace down with it.
fn init(spec: &ContainerSpec, report_fd: &OwnedFd) -> Failure {
    // The same forwarding berth's parent process does (launch.rs), here to the program.
    crate::launch::install_forwarding();
    // SAFETY: this process is single-threaded.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return fail("forking the container's first process")(io::Error::last_os_error());
    }
    if pid == 0 {
        let failure = drop_privileges(spec, true)
            .and_then(|_| enter_cwd(spec))
            .map(|_| run_program(spec))
            .unwrap_or_else(|f| f);
        report(report_fd, &failure);
        // SAFETY: see above.
        unsafe { libc::_exit(failure.code) };
    }
    crate::launch::forward_to(pid);
    // Only the program's copy of the report pipe may stay open: its closing at exec is how
    // the parent learns the program started.
    // SAFETY: closing our own copy of a descriptor the child inherited.
    unsafe { libc::close(report_fd.as_raw_fd()) };
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child, writing into our integer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == pid {
            let _ = io::stderr().flush();
            // SAFETY: see above.
            unsafe { libc::_exit(sys::exit_code(status)) };
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            // SAFETY: see above.
            unsafe { libc::_exit(125) };
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_scripts_interpreter_is_the_first_word_of_its_first_line() {
        let of = |head: &[u8]| super::interpreter(head);
        assert_eq!(of(b"#!/bin/bash\necho hi\n"), Some("/bin/bash".into()));
        assert_eq!(
            of(b"#! /usr/bin/env python3 -u\n"),
            Some("/usr/bin/env".into())
        );
        assert_eq!(of(b"#!/bin/sh"), Some("/bin/sh".into()));
        assert_eq!(of(b"\x7fELF\x02\x01\x01"), None);
        assert_eq!(of(b"#!\n"), None);
        assert_eq!(of(b""), None);
    }
}
