//! A directory on a tmpfs of its own, for small files made and removed at a high rate that
//! need not outlive the machine: a node's job files (see the agent's `NodeAgent::mount_jobs`).
//!
//! Owns: telling whether a directory is on a tmpfs or is the mount point of a named one,
//! whether this process shares the machine's first mount namespace, and mounting and
//! unmounting such a tmpfs. Does not own: deciding when (the agent does).

use crate::sys;
use std::io;
use std::path::Path;

/// Whether `dir` is on a tmpfs: a mount of its own, or one it lies under.
pub fn on_tmpfs(dir: &Path) -> bool {
    sys::fs_type(dir).is_ok_and(|t| t == libc::TMPFS_MAGIC)
}

/// Whether this process is in the machine's first mount namespace (PID 1's), where a mount
/// stays for every later process that makes no namespace of its own, and is seen by them.
/// Where PID 1's namespace cannot be read (a sandbox may deny it even to root): whether the
/// root mount's parent is mount 1, the boot's initial root file system, which a copy of the
/// namespace (`unshare -m`, a service's private namespace, a container) has a copy of, with
/// another id.
pub fn in_first_mount_namespace() -> bool {
    match (
        std::fs::read_link("/proc/self/ns/mnt"),
        std::fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(own), Ok(first)) => own == first,
        _ => std::fs::read_to_string("/proc/self/mountinfo")
            .is_ok_and(|text| root_on_first_mount(&text)),
    }
}

/// Whether the root mount (the last one on `/`) in mountinfo `text` has mount 1 as parent.
fn root_on_first_mount(text: &str) -> bool {
    text.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let parent = fields.nth(1)?;
        (fields.nth(2)? == "/").then_some(parent)
    }) == Some("1")
}

/// Mounts a tmpfs named `source` (as `mount` lists it) on `dir`: nosuid, nodev, mode 0755.
pub fn mount(dir: &Path, source: &str) -> io::Result<()> {
    sys::mount(
        Some(source),
        &dir.to_string_lossy(),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )
}

/// Whether `dir` (absolute, without symlinks) is the mount point of a tmpfs named `source`.
pub fn mounted_at(dir: &Path, source: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|text| text.lines().any(|line| names(line, dir, source)))
}

/// Whether a mountinfo line (`ID PARENT MAJ:MIN ROOT POINT OPTIONS... - TYPE SOURCE ...`) is
/// a tmpfs named `source` mounted on `dir`.
fn names(line: &str, dir: &Path, source: &str) -> bool {
    let Some((head, tail)) = line.split_once(" - ") else {
        return false;
    };
    let mut fs = tail.split(' ');
    head.split(' ')
        .nth(4)
        .is_some_and(|point| crate::cgroup::unescape(point) == dir)
        && fs.next() == Some("tmpfs")
        && fs.next() == Some(source)
}

/// Unmounts `dir`; a tmpfs still in use (a process has a file of it open) stays.
pub fn unmount(dir: &Path) -> io::Result<()> {
    sys::umount(dir)
}

#[cfg(test)]
mod tests {
    use super::{names, root_on_first_mount};
    use std::path::Path;

    #[test]
    fn the_first_namespace_has_its_root_on_mount_1() {
        let first = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n30 27 0:5 / /dev rw - devtmpfs dev rw\n";
        assert!(root_on_first_mount(first));
        // `unshare -m`: the same mounts, copied with new ids.
        let copy = "48 47 254:0 / / rw,relatime - ext4 /dev/vda rw\n49 48 0:5 / /dev rw - devtmpfs dev rw\n";
        assert!(!root_on_first_mount(copy));
        // Something mounted over / later: the top one counts.
        assert!(!root_on_first_mount(&format!(
            "{first}60 27 0:40 / / rw - tmpfs t rw\n"
        )));
        assert!(!root_on_first_mount(""));
    }

    #[test]
    fn a_mountinfo_line_names_the_tmpfs_by_its_point_and_source() {
        let line = "611 30 0:93 / /var/lib/my\\040state/jobs rw,nosuid,nodev,relatime shared:300 - tmpfs berth-jobs rw,mode=755";
        let dir = Path::new("/var/lib/my state/jobs");
        assert!(names(line, dir, "berth-jobs"));
        assert!(!names(line, dir, "other"));
        assert!(!names(line, Path::new("/var/lib/my state"), "berth-jobs"));
        let disk = "25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw";
        assert!(!names(disk, Path::new("/"), "/dev/vda"));
        assert!(!names("garbage", dir, "berth-jobs"));
    }
}
