//! Which running containers use an image: each container's root is an overlay whose source
//! names the image (`berth:PATH`, [`crate::Rootfs::mount_source`]), seen in the mountinfo of
//! its mount namespace by anyone who may read that of one of its processes.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Processes, one per mount namespace, whose namespace holds a container started from one
/// of `images` (files or directories; compared by device and inode, so any path to them
/// will do), in pid order. Namespaces whose processes this process may not read are not
/// seen: root sees every container, a user their own.
pub fn users_of(images: &[&Path]) -> Vec<u32> {
    let wanted: BTreeSet<(u64, u64)> = images
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let Ok(proc) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = proc
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut namespaces = BTreeSet::new();
    pids.into_iter()
        .filter(|pid| {
            let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
                return false;
            };
            if !namespaces.insert(ns) {
                return false;
            }
            fs::read_to_string(format!("/proc/{pid}/mountinfo")).is_ok_and(|text| {
                text.lines().filter_map(berth_source).any(|path| {
                    fs::metadata(path).is_ok_and(|m| wanted.contains(&(m.dev(), m.ino())))
                })
            })
        })
        .collect()
}

/// The image path of a mountinfo line whose mount source is `berth:PATH` (octal escapes of
/// space, tab, newline and backslash undone), if it is one.
fn berth_source(line: &str) -> Option<PathBuf> {
    // The fields after " - " are the filesystem type, the source and the super options.
    let (_, after) = line.split_once(" - ")?;
    let source = after.split(' ').nth(1)?;
    Some(crate::cgroup::unescape(source.strip_prefix("berth:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_berth_sources_in_mountinfo_lines() {
        let line = "512 498 0:61 / / rw,nosuid,nodev,relatime - overlay \
                    berth:/var/lib/my\\040store/rootfs/ab12 rw,lowerdir=/proc/self/fd/5";
        assert_eq!(
            berth_source(line),
            Some(PathBuf::from("/var/lib/my store/rootfs/ab12"))
        );
        let other = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(berth_source(other), None);
        // An optional field before the separator, and a source of "berth" alone (a host job).
        let host = "7 1 0:5 / /x rw shared:4 - overlay berth rw";
        assert_eq!(berth_source(host), None);
    }

    /// This very process's namespace holds no container, so nothing uses a fresh directory;
    /// a missing path is used by nothing either.
    #[test]
    fn nothing_uses_what_no_container_started_from() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(users_of(&[dir.path()]).is_empty());
        assert!(users_of(&[&dir.path().join("missing")]).is_empty());
    }
}
