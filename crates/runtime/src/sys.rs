//! Thin wrappers over the system calls the runtime makes, each returning `io::Result`.
//!
//! libc rather than rustix here: the runtime needs raw clone(2) with namespace flags, the
//! loop-device ioctls, openat2(2) with RESOLVE_IN_ROOT, capset(2) and mounts onto
//! `/proc/self/fd` magic links, most of which rustix does not offer; one idiom for all of
//! them keeps this file easy to audit.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub fn cstr(path: impl AsRef<Path>) -> io::Result<CString> {
    CString::new(path.as_ref().as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The `/proc/self/fd/N` path naming an open descriptor: mount(2) follows it to the file.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The path the kernel has for the file an open descriptor refers to: absolute, every
/// symlink resolved, in one lookup (where realpath(3) reads every component as a link).
pub fn fd_target(fd: &impl AsRawFd) -> io::Result<PathBuf> {
    std::fs::read_link(fd_path(fd))
}

pub fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c = |s: Option<&str>| s.map(|s| CString::new(s).expect("mount arguments have no NUL"));
    let (source, target, fstype, data) = (
        c(source),
        c(Some(target)).expect("target given"),
        c(fstype),
        c(data),
    );
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is NUL-terminated and outlives the call, or null where allowed.
    check(unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    })
    .map(drop)
}

/// umount2(2) without flags: a file system still in use stays mounted (EBUSY).
pub fn umount(target: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::umount2(t.as_ptr(), 0) }).map(drop)
}

/// statfs(2)'s `f_type`: the magic number of the file system `path` is on.
pub fn fs_type(path: &Path) -> io::Result<libc::c_long> {
    let p = cstr(path)?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a NUL-terminated path and a buffer statfs(2) fills; read only on success.
    check(unsafe { libc::statfs(p.as_ptr(), buf.as_mut_ptr()) })?;
    // SAFETY: statfs(2) succeeded, so it filled the buffer.
    Ok(unsafe { buf.assume_init() }.f_type)
}

pub fn umount_detach(target: &str) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// pivot_root(".", ".") after chdir into the new root, then detach the old root stacked on
/// top of it: the way runc does it, without needing a directory for the old root.
pub fn pivot_into(new_root: &str) -> io::Result<()> {
    chdir(new_root)?;
    let dot = cstr(".")?;
    // SAFETY: raw syscall with two NUL-terminated paths.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(r as libc::c_int)?;
    umount_detach(".")?;
    chdir("/")
}

pub fn chdir(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::chdir(p.as_ptr()) }).map(drop)
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// openat2(2) with RESOLVE_IN_ROOT: `path` is resolved as if `root` were `/`, so symlinks and
/// `..` inside an image can never lead outside it.
pub fn open_in_root(
    root: &OwnedFd,
    path: &str,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    openat2(
        root.as_raw_fd(),
        path,
        flags,
        mode,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens `path` (absolute) as O_PATH, refusing symlinks anywhere in it, and checks that it
/// is the very file `expected` refers to. Descriptors opened before a mount namespace was
/// unshared still point into the old namespace, where mount(2) cannot take them as a bind
/// source; this reopens them in the new one without giving a symlink swap a window.
pub fn reopen_same(path: &Path, expected: &OwnedFd) -> io::Result<OwnedFd> {
    let fd = openat2(
        libc::AT_FDCWD,
        &path.to_string_lossy(),
        libc::O_PATH,
        0,
        RESOLVE_NO_SYMLINKS,
    )?;
    if file_id(&fd)? != file_id(expected)? {
        return Err(io::Error::other(
            "it was replaced while the container was starting",
        ));
    }
    Ok(fd)
}

fn openat2(
    dir: RawFd,
    path: &str,
    flags: libc::c_int,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve,
    };
    // SAFETY: `how` is a valid open_how of the size passed; the path is NUL-terminated.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Creates `name` in `dir`, a directory or an empty file of `mode`, and opens it: O_PATH for
/// a directory, write-only for a file (either serves as a mount target). Never follows a
/// symlink nor leaves `dir` (`..`); fails with EEXIST when `name` exists, as anything.
pub fn create_at(dir: &OwnedFd, name: &str, is_dir: bool, mode: u32) -> io::Result<OwnedFd> {
    let resolve = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH;
    if !is_dir {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        return openat2(dir.as_raw_fd(), name, flags, mode, resolve);
    }
    let n = cstr(name)?;
    // SAFETY: NUL-terminated name relative to a directory descriptor we own.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) })?;
    open_beneath(dir, name, libc::O_PATH | libc::O_DIRECTORY)
}

/// Opens `name` in `dir` with `flags`, following no symlink and never leaving `dir`.
pub fn open_beneath(dir: &OwnedFd, name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let resolve = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH;
    openat2(dir.as_raw_fd(), name, flags | libc::O_NOFOLLOW, 0, resolve)
}

/// unlinkat(2) of a file or symlink `name` in `dir`.
pub fn unlink_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: NUL-terminated name relative to a directory descriptor we own.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0) }).map(drop)
}

/// unlinkat(2) of a directory `name` in `dir` (rmdir).
pub fn rmdir_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: NUL-terminated name relative to a directory descriptor we own.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
}

pub fn open(path: impl AsRef<Path>, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: NUL-terminated path; the result is checked before it is owned.
    let fd = check(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: a fresh descriptor returned by open(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) (Linux 5.12) on the mount `fd` names and every mount below it: unlike a
/// bind remount it reaches submounts, and it only adds flags, so the flags a user namespace
/// locks never need restating.
pub fn set_mount_attrs(fd: &impl AsRawFd, attrs: u64) -> io::Result<()> {
    mount_setattr(fd, libc::AT_RECURSIVE, attrs, None)
}

/// mount_setattr(2) on the mount `fd` names (`flags`: AT_RECURSIVE or none), adding `attrs`,
/// with a user namespace for MOUNT_ATTR_IDMAP.
fn mount_setattr(
    fd: &impl AsRawFd,
    flags: libc::c_int,
    attrs: u64,
    userns: Option<BorrowedFd>,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    let empty = c"";
    // SAFETY: a valid mount_attr of the size passed, an empty NUL-terminated path with AT_EMPTY_PATH.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(r as libc::c_int).map(drop)
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// Binds the file or directory `source` names (with every mount below it) onto the one
/// `target` refers to, with `attrs` added throughout (see [`set_mount_attrs`]): a copy of the
/// tree made detached (open_tree(2)), restricted before anything can see it, then attached
/// (move_mount(2)). Neither end is looked up by path again.
pub fn bind_tree(source: BorrowedFd, target: BorrowedFd, attrs: u64) -> io::Result<()> {
    attach_copy(source, target, |tree| set_mount_attrs(tree, attrs))
}

/// Binds the mount `source` names (not those below it) onto `target` idmapped through the
/// user namespace `userns`: its files' owners appear as that namespace maps them (with
/// [`user_namespace`]'s, root's files as the user's).
pub fn idmapped_tree(source: BorrowedFd, target: BorrowedFd, userns: BorrowedFd) -> io::Result<()> {
    attach_copy(source, target, |tree| {
        mount_setattr(tree, 0, MOUNT_ATTR_IDMAP, Some(userns))
    })
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// The running kernel's release (uname -r).
pub fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct it is given; its release is NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        match libc::uname(&mut u) {
            0 => CStr::from_ptr(u.release.as_ptr())
                .to_string_lossy()
                .into_owned(),
            _ => "unknown".into(),
        }
    }
}

/// A user namespace in which root is `uid` and `gid` (one id each), as a descriptor: a
/// child unshares it and waits while this process (root, single-threaded: it forks) writes
/// its maps, then ends.
pub fn user_namespace(uid: u32, gid: u32) -> io::Result<OwnedFd> {
    let (ready_read, ready_write) = pipe()?;
    let (done_read, done_write) = pipe()?;
    // SAFETY: the caller is single-threaded; the child makes only system calls, then _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: unshare, write, read and _exit on descriptors the child holds.
        unsafe {
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            libc::write(ready_write.as_raw_fd(), [u8::from(ok)].as_ptr().cast(), 1);
            libc::close(done_write.as_raw_fd());
            let mut byte = 0u8;
            libc::read(done_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0)
        }
    }
    check(pid)?;
    drop((ready_write, done_read));
    let made = (|| {
        let mut ok = [0u8];
        io::Read::read_exact(&mut std::fs::File::from(ready_read), &mut ok)?;
        if ok[0] != 1 {
            return Err(io::Error::other(
                "the child could not unshare a user namespace",
            ));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1\n"))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1\n"))?;
        open(format!("/proc/{pid}/ns/user"), libc::O_RDONLY)
    })();
    drop(done_write);
    let _ = wait(pid);
    made
}

/// Attaches a detached copy of the mount tree `source` names onto `target`, after
/// `restrict` has set its attributes (so nothing sees it without them).
fn attach_copy(
    source: BorrowedFd,
    target: BorrowedFd,
    restrict: impl FnOnce(&OwnedFd) -> io::Result<()>,
) -> io::Result<()> {
    let empty = c"";
    // SAFETY: open_tree on a descriptor with an empty NUL-terminated path and AT_EMPTY_PATH;
    // the result is a fresh descriptor we own.
    let tree = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            empty.as_ptr(),
            OPEN_TREE_CLONE
                | libc::O_CLOEXEC as libc::c_uint
                | libc::AT_EMPTY_PATH as libc::c_uint
                | libc::AT_RECURSIVE as libc::c_uint,
        ) as libc::c_int
    })?;
    // SAFETY: as above.
    let tree = unsafe { OwnedFd::from_raw_fd(tree) };
    restrict(&tree)?;
    // SAFETY: move_mount between two descriptors we hold, with empty NUL-terminated paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(r as libc::c_int).map(drop)
}

// Loop devices (linux/loop.h).
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `file` to a free loop device, read-only and with autoclear: the device detaches
/// itself when the last user (the mount) goes away, so a crash cannot leak it.
pub fn attach_loop(file: &OwnedFd) -> io::Result<(OwnedFd, String)> {
    let control = open("/dev/loop-control", libc::O_RDWR)?;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })?;
        let path = format!("/dev/loop{n}");
        let dev = open(&path, libc::O_RDONLY)?;
        // SAFETY: an all-zero loop_config is valid; we then set the fields we need.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = file.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_CONFIGURE reads a loop_config of exactly this layout.
        match check(unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        }) {
            Ok(_) => return Ok((dev, path)),
            // Another process took this device between GET_FREE and CONFIGURE: try the next.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::ResourceBusy,
        "no free loop device after 16 attempts",
    ))
}

/// Brings up the loopback interface of the calling process's network namespace (a new one
/// has it down): what `--network none` leaves a container.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) returns a new descriptor we own, or -1.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: the descriptor is new and ours.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid; its name is "lo", NUL-terminated.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo") {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        check(libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            &mut request,
        ))?;
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCSIFFLAGS,
            &request,
        ))?;
    }
    Ok(())
}

/// The device and inode of the file `fd` is open on (an `O_PATH` descriptor too).
pub fn file_id(fd: &impl AsRawFd) -> io::Result<(u64, u64)> {
    // SAFETY: fstat fills a zeroed stat we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and struct pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok((st.st_dev, st.st_ino))
}

/// Which mount the file `fd` is open on is on: its mount id (Linux 5.8 on), else its
/// file system's device (one per file system, not per mount: the best older kernels tell).
pub fn mount_of(fd: &impl AsRawFd) -> io::Result<u64> {
    // SAFETY: an all-zero statx is a valid out-parameter.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx(2) on the descriptor itself (an empty path), into the struct we own.
    check(unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    })?;
    Ok(match stx.stx_mask & libc::STATX_MNT_ID != 0 {
        true => stx.stx_mnt_id,
        false => libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
    })
}

/// Sets the host name of the calling process's UTS namespace.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: sethostname(2) reads `len` bytes of the name we own.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

pub fn write_file(path: &str, text: &str) -> io::Result<()> {
    std::fs::write(path, text)
}

pub fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl options used here take one integer argument.
    check(unsafe { libc::prctl(option, arg, 0, 0, 0) }).map(drop)
}

/// Empties the bounding set (so no exec can ever regain a capability) and the ambient set.
/// Needs CAP_SETPCAP, so it runs before the switch to the user.
pub fn drop_bounding_capabilities() -> io::Result<()> {
    for cap in 0..=63 {
        // SAFETY: PR_CAPBSET_DROP with a capability number; EINVAL past the last one.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    // SAFETY: clears the ambient set; no pointers.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// Clears the effective, permitted and inheritable sets (what uid 0 would otherwise keep).
pub fn clear_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    }; // _LINUX_CAPABILITY_VERSION_3
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a version-3 header and the two data words that version expects.
    check(
        unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) }
            as libc::c_int,
    )
    .map(drop)
}

pub fn set_identity(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: setgroups reads `groups.len()` gids from a live slice.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
    // SAFETY: plain integer arguments.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: plain integer arguments.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map(drop)
}

/// execve(2); returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of NUL-terminated strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors into the array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// clone(2) without a new stack: fork semantics plus namespace flags. Returns 0 in the child.
///
/// # Safety
/// The calling process must be single-threaded (as `fork` requires for anything beyond
/// async-signal-safe calls in the child); berth's runtime entry points are.
pub unsafe fn clone(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: with a null stack the child runs on a copy-on-write copy of ours, as with fork.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid as libc::pid_t)
}

/// clone(2) with CLONE_VM | CLONE_VFORK, as posix_spawn(3) does: the child runs `child` on a
/// stack of its own but in this process's memory, while this thread waits; this returns the
/// child's pid once it has exec'd or exited. A panic in `child` ends the child with 125.
///
/// # Safety
/// The calling process must be single-threaded, and `child` must end in exec or `_exit`
/// (it does not return but through the 125 of a panic): everything it writes to memory
/// other than its stack, this process finds so, and it must not call what acts on "this
/// thread" by the thread's id in libc's bookkeeping (raise(3), abort(3), pthread_kill(3)):
/// that id is this process's.
pub unsafe fn clone_vfork(
    flags: libc::c_int,
    child: &mut dyn FnMut() -> libc::c_int,
) -> io::Result<libc::pid_t> {
    extern "C" fn start(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&mut &mut dyn FnMut` below, alive while the parent waits.
        let child = unsafe { &mut *arg.cast::<&mut dyn FnMut() -> libc::c_int>() };
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(125);
        // SAFETY: ends the child without running this process's exit handlers.
        unsafe { libc::_exit(code) }
    }
    // Touched only as deep as the container's setup goes; the lowest page is a guard.
    const STACK: usize = 1 << 20;
    // SAFETY: a fresh private anonymous mapping, unmapped below once the child is done with it.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut child = child;
    // SAFETY: the guard page lies in the mapping just made; clone(3) runs `start` on the top
    // of that stack (it grows down) and, with CLONE_VFORK, returns only when the child no
    // longer uses it.
    let pid = unsafe {
        libc::mprotect(stack, page_size(), libc::PROT_NONE);
        libc::clone(
            start,
            stack.cast::<u8>().add(STACK).cast(),
            flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut child as *mut &mut dyn FnMut() -> libc::c_int).cast(),
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: the mapping made above; the child has exec'd or exited, or never was.
    unsafe { libc::munmap(stack, STACK) };
    if pid < 0 {
        return Err(err);
    }
    Ok(pid)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// clone3(2)'s arguments (linux/sched.h), up to `cgroup` (Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Puts the child in the cgroup whose directory is `clone_args.cgroup` (v2 only).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`clone`] with the child born in the cgroup v2 directory `cgroup` (CLONE_INTO_CGROUP):
/// no process is moved, so the kernel takes no lock for writing (moving one through
/// cgroup.procs waits for an RCU grace period, 5-15 ms on an idle machine). `Ok(None)`: the
/// kernel cannot (before 5.7, or a cgroup it refuses), and nothing was cloned.
///
/// # Safety
/// As [`clone`].
pub unsafe fn clone_into(
    flags: libc::c_int,
    cgroup: BorrowedFd,
) -> io::Result<Option<libc::pid_t>> {
    let args = CloneArgs {
        flags: flags as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: a null stack gives fork semantics, as in `clone`; the kernel reads `args`, of
    // the size passed.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid >= 0 {
        return Ok(Some(pid as libc::pid_t));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EOPNOTSUPP) => Ok(None),
        _ => Err(e),
    }
}

/// Waits for `pid`, retrying on EINTR; returns the raw wait status.
pub fn wait(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into our integer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits for `pid` once: `None` when a signal handler interrupted the wait.
pub fn wait_once(pid: libc::pid_t) -> io::Result<Option<libc::c_int>> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into our integer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } >= 0 {
        return Ok(Some(status));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// A wait status as a shell reports it: the exit code, or 128 + the signal number.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        125
    }
}

/// pidfd_open(2) (Linux 5.3): a descriptor that names the process `pid` and no later
/// process that reuses its number.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked before it is owned.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// setns(2) into the namespaces `flags` names of the process behind `pidfd` (Linux 5.8), all
/// at once.
pub fn setns(fd: &impl AsRawFd, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: setns on a descriptor we hold; the caller is single-threaded.
    check(unsafe { libc::setns(fd.as_raw_fd(), flags) }).map(drop)
}

/// Makes the directory `dir` this process's root and working directory, as nsenter(1)
/// does with --root after entering a mount namespace.
pub fn chroot_to(dir: &OwnedFd) -> io::Result<()> {
    // SAFETY: fchdir to a directory descriptor we own, then chroot(".") and chdir("/") with
    // static NUL-terminated strings.
    unsafe {
        check(libc::fchdir(dir.as_raw_fd()))?;
        check(libc::chroot(c".".as_ptr()))?;
        check(libc::chdir(c"/".as_ptr())).map(drop)
    }
}

/// Pins the calling process to `cpus` (sched_setaffinity(2)).
pub fn set_affinity(cpus: &[u32]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus
        .iter()
        .filter(|&&c| (c as usize) < libc::CPU_SETSIZE as usize)
    {
        // SAFETY: CPU_SET writes one bit, below CPU_SETSIZE, into the set we own.
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    }
    // SAFETY: the set outlives the call and its size is passed.
    check(unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) }).map(drop)
}

/// Moves `fd` onto descriptor `target` (dup2(2)), keeping it open across exec.
pub fn dup_onto(fd: RawFd, target: RawFd) -> io::Result<()> {
    if fd == target {
        // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
        // SAFETY: fcntl on a descriptor the caller owns.
        return check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop);
    }
    // SAFETY: dup2 between descriptors the caller owns.
    check(unsafe { libc::dup2(fd, target) }).map(drop)
}

/// Whether the process behind `pidfd` is still alive (pidfd_send_signal(2) with signal 0):
/// then everything read through its pid since the pidfd was opened was about this process.
pub fn pidfd_alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: signal 0 only checks; no siginfo, no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_child_is_born_in_a_v2_cgroup() {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return berth_core::say!("note: not root, skipping the CLONE_INTO_CGROUP test");
        }
        // The v2 hierarchy: /sys/fs/cgroup itself, or a hybrid layout's unified mount.
        let Some(root) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.controllers").exists())
        else {
            return berth_core::say!(
                "note: no cgroup v2 hierarchy, skipping the CLONE_INTO_CGROUP test"
            );
        };
        let name = format!("berth-clone-test-{}", std::process::id());
        let dir = root.join(&name);
        if let Err(e) = std::fs::create_dir(&dir) {
            return berth_core::say!(
                "note: {}: {e}, skipping the CLONE_INTO_CGROUP test",
                dir.display()
            );
        }
        let cgroup = std::fs::File::open(&dir).unwrap();
        // SAFETY: the child only calls pause(2) until it is killed (async-signal-safe).
        let born = unsafe { clone_into(0, cgroup.as_fd()) }.unwrap();
        let pid = match born {
            Some(0) => loop {
                // SAFETY: pause(2) has no preconditions.
                unsafe { libc::pause() };
            },
            Some(pid) => pid,
            None => {
                std::fs::remove_dir(&dir).unwrap();
                return berth_core::say!("note: the kernel has no CLONE_INTO_CGROUP, skipping");
            }
        };
        let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        // SAFETY: kill(2) on the child this test just cloned.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait(pid).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        assert!(
            membership.lines().any(|l| l == format!("0::/{name}")),
            "{membership}"
        );
    }
}
