//! Who the container runs as, looked up in the host's user database, and the /etc/passwd and
//! /etc/group lines that make `id` and `whoami` work inside the image.

use crate::RuntimeError;
use std::ffi::CStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (root acting for a user sets them; rootless keeps none).
    pub groups: Vec<u32>,
    pub user: String,
    pub group: String,
    pub home: String,
    /// Names of the supplementary groups, parallel to `groups`.
    pub group_names: Vec<String>,
}

fn group_name(gid: u32) -> String {
    let mut buf = vec![0u8; 16384];
    // SAFETY: an all-zero group struct is a valid out-parameter for getgrgid_r.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut out = std::ptr::null_mut();
    // SAFETY: getgrgid_r writes into buffers we own, sized as passed.
    let r =
        unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return gid.to_string();
    }
    // SAFETY: on success gr_name points into `buf`, NUL-terminated.
    unsafe { CStr::from_ptr(grp.gr_name) }
        .to_string_lossy()
        .into_owned()
}

impl Identity {
    /// Whether the group database has a group named `name`.
    pub fn group_exists(name: &str) -> bool {
        Identity::group(name).is_some() && name.parse::<u32>().is_err()
    }

    /// The gid and name of a group, by name or number (a number without an entry is that
    /// gid, named by it, as Docker takes `-u UID:GID`).
    pub fn group(group: &str) -> Option<(u32, String)> {
        if let Ok(gid) = group.parse::<u32>() {
            return Some((gid, group_name(gid)));
        }
        let cname = std::ffi::CString::new(group).ok()?;
        let mut buf = vec![0u8; 16384];
        // SAFETY: an all-zero group struct is a valid out-parameter for getgrnam_r.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut out = std::ptr::null_mut();
        // SAFETY: getgrnam_r reads a NUL-terminated name and writes into buffers we own,
        // sized as passed.
        let r = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        };
        (r == 0 && !out.is_null()).then(|| (grp.gr_gid, group.to_string()))
    }

    /// Root, as a process in a user namespace of its own is (a remapped root's task).
    pub fn root() -> Identity {
        Identity {
            uid: 0,
            gid: 0,
            groups: vec![0],
            user: "root".into(),
            group: "root".into(),
            home: "/root".into(),
            group_names: vec!["root".into()],
        }
    }

    /// Looks a user up by name or numeric uid. `with_groups` also fetches supplementary groups.
    pub fn lookup(user: &str, with_groups: bool) -> Result<Identity, RuntimeError> {
        let mut buf = vec![0u8; 16384];
        // SAFETY: an all-zero passwd struct is a valid out-parameter.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out = std::ptr::null_mut();
        let r = if let Ok(uid) = user.parse::<u32>() {
            // SAFETY: getpwuid_r writes into buffers we own, sized as passed.
            unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) }
        } else {
            let name =
                std::ffi::CString::new(user).map_err(|_| RuntimeError::UnknownUser(user.into()))?;
            // SAFETY: as above, with a NUL-terminated name.
            unsafe {
                libc::getpwnam_r(
                    name.as_ptr(),
                    &mut pw,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut out,
                )
            }
        };
        if r != 0 || out.is_null() {
            // A uid with no passwd entry still runs, like `docker run -u 1234`.
            let Ok(uid) = user.parse::<u32>() else {
                return Err(RuntimeError::UnknownUser(user.into()));
            };
            return Ok(Identity {
                uid,
                gid: uid,
                groups: Vec::new(),
                user: uid.to_string(),
                group: uid.to_string(),
                home: "/".into(),
                group_names: Vec::new(),
            });
        }
        // SAFETY: on success these fields point into `buf`, NUL-terminated.
        let (name, home) = unsafe {
            (
                CStr::from_ptr(pw.pw_name).to_owned(),
                CStr::from_ptr(pw.pw_dir).to_string_lossy().into_owned(),
            )
        };
        let mut groups = Vec::new();
        if with_groups {
            let mut n: libc::c_int = 64;
            loop {
                let mut list = vec![0 as libc::gid_t; n as usize];
                let before = n;
                // SAFETY: getgrouplist writes at most `n` gids and updates `n`.
                let r = unsafe {
                    libc::getgrouplist(name.as_ptr(), pw.pw_gid, list.as_mut_ptr(), &mut n)
                };
                if r >= 0 {
                    list.truncate(n as usize);
                    groups = list;
                    break;
                }
                if n <= before {
                    n = before * 2;
                }
            }
        }
        let group_names: Vec<String> = groups.iter().map(|g| group_name(*g)).collect();
        // The primary group is among the supplementary ones when they were asked for.
        let group = match groups.iter().position(|g| *g == pw.pw_gid) {
            Some(i) => group_names[i].clone(),
            None => group_name(pw.pw_gid),
        };
        Ok(Identity {
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            group_names,
            groups,
            user: name.to_string_lossy().into_owned(),
            group,
            home,
        })
    }

    /// The caller of this process: its real uid and gid.
    pub fn current() -> Result<Identity, RuntimeError> {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut id = Identity::lookup(&uid.to_string(), false)?;
        id.gid = gid;
        id.group = group_name(gid);
        Ok(id)
    }
}

fn merge(existing: &str, ours: &[String], clashes: impl Fn(&[&str]) -> bool) -> String {
    let mut out: String = existing
        .lines()
        .filter(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            fields.len() < 3 || !clashes(&fields)
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    for line in ours {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The image's /etc/passwd with the container user's line in place of any entry with the
/// same name or uid (as Apptainer does), and a root line if the image has none.
pub fn passwd(existing: &str, id: &Identity) -> String {
    let mut ours = Vec::new();
    let has_root = existing.lines().any(|l| l.split(':').nth(2) == Some("0"));
    if !has_root && id.uid != 0 {
        ours.push("root:x:0:0:root:/root:/bin/sh".to_string());
    }
    ours.push(format!(
        "{}:x:{}:{}:{}:{}:/bin/sh",
        id.user, id.uid, id.gid, id.user, id.home
    ));
    merge(existing, &ours, |f| {
        f[0] == id.user || f[2] == id.uid.to_string()
    })
}

/// The image's /etc/group with the user's primary and supplementary groups.
pub fn group(existing: &str, id: &Identity) -> String {
    let mut groups: Vec<(u32, &str)> = vec![(id.gid, &id.group)];
    for (g, n) in id.groups.iter().zip(&id.group_names) {
        if !groups.iter().any(|(x, _)| x == g) {
            groups.push((*g, n));
        }
    }
    let ours: Vec<String> = groups
        .iter()
        .map(|(g, n)| {
            if *g == id.gid {
                format!("{n}:x:{g}:")
            } else {
                format!("{n}:x:{g}:{}", id.user)
            }
        })
        .collect();
    merge(existing, &ours, |f| {
        groups
            .iter()
            .any(|(g, n)| f[0] == *n || f[2] == g.to_string())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A user with a primary and one supplementary group, for tests here and in `plan`.
    pub(crate) fn ann() -> Identity {
        Identity {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
            user: "ann".into(),
            group: "ann".into(),
            home: "/home/ann".into(),
            group_names: vec!["ann".into(), "sudo".into()],
        }
    }

    #[test]
    fn passwd_replaces_clashes_and_keeps_the_rest() {
        let image = "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000::/home/ubuntu:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\n";
        let out = passwd(image, &ann());
        assert!(out.contains("root:x:0:0:root:/root:/bin/bash\n"));
        assert!(out.contains("daemon:x:1:1"));
        assert!(!out.contains("ubuntu"), "uid 1000 now belongs to ann");
        assert!(out.ends_with("ann:x:1000:1000:ann:/home/ann:/bin/sh\n"));
        // No passwd in the image (busybox): a root line is added too.
        let out = passwd("", &ann());
        assert_eq!(
            out,
            "root:x:0:0:root:/root:/bin/sh\nann:x:1000:1000:ann:/home/ann:/bin/sh\n"
        );
    }

    #[test]
    fn group_lists_primary_and_supplementary() {
        let out = group("root:x:0:\nsudo:x:27:\nusers:x:100:\n", &ann());
        assert!(out.contains("root:x:0:\n") && out.contains("users:x:100:\n"));
        assert!(out.contains("ann:x:1000:\n"));
        assert!(out.contains("sudo:x:27:ann\n"));
        assert_eq!(out.matches("sudo").count(), 1);
    }

    #[test]
    fn lookup_root() {
        let root = Identity::lookup("root", true).unwrap();
        assert_eq!((root.uid, root.gid, root.user.as_str()), (0, 0, "root"));
        assert_eq!(Identity::lookup("0", false).unwrap().user, "root");
        assert!(Identity::lookup("no-such-user-berth", false).is_err());
        assert_eq!(Identity::lookup("4242424", false).unwrap().uid, 4242424);
    }
}
