//! Who the container runs as, looked up in the host's user database (or, for root's `-u`,
//! the image's first), and the /etc/passwd and /etc/group lines that make `id` and `whoami`
//! work inside the image.

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
            // A uid with no passwd entry still runs, like `docker run -u 1234` (but for -1,
            // which names no user: the kernel's "unchanged").
            let Some(uid) = user.parse::<u32>().ok().filter(|&u| u != u32::MAX) else {
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

    /// User `user` (a name or uid) as the user database of the image whose tree is `root`
    /// has it (its /etc/passwd and /etc/group, as Docker's `-u` looks users up); `None`
    /// where the image has no such user, or no database berth can read (a symlink there).
    pub fn in_image(root: &std::path::Path, user: &str) -> Option<Identity> {
        let (passwd, group) = image_db(root)?;
        from_db(&passwd, &group, user)
    }

    /// Group `group` (a name or gid) as the image whose tree is `root` has it: its gid and
    /// name.
    pub fn group_in_image(root: &std::path::Path, group: &str) -> Option<(u32, String)> {
        let (_, db) = image_db(root)?;
        group_in_db(&db, group).map(|(gid, name, _)| (gid, name.to_string()))
    }

    /// Whether this user may enter directory `dir`: search permission on it and on each
    /// directory above it, by its mode bits (root, acting for the user, is asked for them).
    pub fn may_enter(&self, dir: &std::path::Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.uid == 0
            || dir.ancestors().all(|d| {
                let Ok(m) = std::fs::metadata(d) else {
                    return false;
                };
                let bit = match (
                    m.uid() == self.uid,
                    m.gid() == self.gid || self.groups.contains(&m.gid()),
                ) {
                    (true, _) => 0o100,
                    (false, true) => 0o010,
                    (false, false) => 0o001,
                };
                m.mode() & bit != 0
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

/// The image's /etc/passwd and /etc/group (each empty where it has none), read beneath its
/// tree `root` without following a symlink.
fn image_db(root: &std::path::Path) -> Option<(String, String)> {
    use std::io::Read;
    let root: std::os::fd::OwnedFd = std::fs::File::open(root).ok()?.into();
    let etc = crate::sys::open_beneath(&root, "etc", libc::O_RDONLY | libc::O_DIRECTORY).ok()?;
    let read = |name: &str| -> Option<String> {
        // Non-blocking: a FIFO in its place must not hang the lookup.
        match crate::sys::open_beneath(&etc, name, libc::O_RDONLY | libc::O_NONBLOCK) {
            Ok(fd) => {
                let file = std::fs::File::from(fd);
                if !file.metadata().ok()?.is_file() {
                    return None;
                }
                let mut text = String::new();
                file.take(1 << 20).read_to_string(&mut text).ok()?;
                Some(text)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Some(String::new()),
            Err(_) => None,
        }
    };
    Some((read("passwd")?, read("group")?))
}

/// The entry of group `group` (a name or gid) in the group database `db`: its gid, name
/// and members.
fn group_in_db<'a>(db: &'a str, group: &str) -> Option<(u32, &'a str, &'a str)> {
    db.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let gid = f.get(2)?.parse().ok()?;
        (f[0] == group || group.parse() == Ok(gid))
            .then(|| (gid, f[0], f.get(3).copied().unwrap_or("")))
    })
}

/// User `user` (a name or uid) as the databases `passwd` and `group` have it: its primary
/// group, and the groups that list it as a member.
fn from_db(passwd: &str, group: &str, user: &str) -> Option<Identity> {
    let f: Vec<&str> = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let uid: u32 = f.get(2)?.parse().ok()?;
        (f.len() >= 6 && (f[0] == user || user.parse() == Ok(uid))).then_some(f)
    })?;
    let (uid, gid): (u32, u32) = (f[2].parse().ok()?, f[3].parse().ok()?);
    let primary =
        group_in_db(group, &gid.to_string()).map_or(gid.to_string(), |(_, n, _)| n.into());
    let mut groups = vec![(gid, primary.clone())];
    for l in group.lines() {
        let g: Vec<&str> = l.split(':').collect();
        let Some(id) = g.get(2).and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let member = g.get(3).is_some_and(|m| m.split(',').any(|m| m == f[0]));
        if member && !groups.iter().any(|(g, _)| *g == id) {
            groups.push((id, g[0].to_string()));
        }
    }
    Some(Identity {
        uid,
        gid,
        groups: groups.iter().map(|(g, _)| *g).collect(),
        group_names: groups.into_iter().map(|(_, n)| n).collect(),
        user: f[0].into(),
        group: primary,
        home: f[5].into(),
    })
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
/// same name or uid (as Apptainer does), and a root line if the image has none; as it is
/// where the image's own entry is the user's (the same name and uid: root's `-u` naming one
/// of the image's users).
pub fn passwd(existing: &str, id: &Identity) -> String {
    let own = existing.lines().any(|l| {
        let f: Vec<&str> = l.split(':').collect();
        f.len() >= 3 && f[0] == id.user && f[2] == id.uid.to_string()
    });
    if own {
        return merge(existing, &[], |_| false);
    }
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

/// The image's /etc/group with the user's primary and supplementary groups in place of
/// any entry with the same name or gid; an entry with both the same is kept, the user added
/// to its members where it is one of the supplementary groups.
pub fn group(existing: &str, id: &Identity) -> String {
    let mut groups: Vec<(u32, &str)> = vec![(id.gid, &id.group)];
    for (g, n) in id.groups.iter().zip(&id.group_names) {
        if !groups.iter().any(|(x, _)| x == g) {
            groups.push((*g, n));
        }
    }
    let mut out = String::new();
    let mut kept = Vec::new();
    for line in existing.lines() {
        let f: Vec<&str> = line.split(':').collect();
        let ours = (f.len() >= 3)
            .then(|| {
                groups
                    .iter()
                    .find(|(g, n)| f[0] == *n || f[2] == g.to_string())
            })
            .flatten();
        match ours {
            None => out.push_str(line),
            Some((g, n)) if f[0] == *n && f[2] == g.to_string() => {
                kept.push(*g);
                let members = f.get(3).copied().unwrap_or("");
                if *g == id.gid || members.split(',').any(|m| m == id.user) {
                    out.push_str(line);
                } else {
                    let sep = if members.is_empty() { "" } else { "," };
                    out.push_str(&format!("{}:{}:{g}:{members}{sep}{}", f[0], f[1], id.user));
                }
            }
            // Another's name or gid: replaced by ours.
            Some(_) => continue,
        }
        out.push('\n');
    }
    for (g, n) in groups.iter().filter(|(g, _)| !kept.contains(g)) {
        match *g == id.gid {
            true => out.push_str(&format!("{n}:x:{g}:\n")),
            false => out.push_str(&format!("{n}:x:{g}:{}\n", id.user)),
        }
    }
    out
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
    fn a_user_of_the_images_own_database_is_its_entry_and_its_groups() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:App:/home/app:/bin/bash\n";
        let group = "root:x:0:\napp:x:1234:\ndata:x:500:ann,app\nother:x:501:ann\n";
        let app = from_db(passwd, group, "app").unwrap();
        assert_eq!(
            (
                app.uid,
                app.gid,
                app.user.as_str(),
                app.group.as_str(),
                app.home.as_str()
            ),
            (1234, 1234, "app", "app", "/home/app")
        );
        assert_eq!(
            (app.groups, app.group_names),
            (vec![1234, 500], vec!["app".to_string(), "data".into()])
        );
        assert_eq!(from_db(passwd, group, "1234").unwrap().user, "app");
        assert_eq!(from_db(passwd, group, "ann"), None);
        assert_eq!(from_db(passwd, group, "99"), None);
        assert_eq!(group_in_db(group, "data"), Some((500, "data", "ann,app")));
        assert_eq!(group_in_db(group, "501").map(|g| g.1), Some("other"));
        // Its own entries stay as the image has them.
        let app = from_db(passwd, group, "app").unwrap();
        assert_eq!(self::passwd(passwd, &app), passwd);
        assert_eq!(self::group(group, &app), group);
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
