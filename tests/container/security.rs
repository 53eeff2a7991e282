//! What a container must not be able to do.

use crate::support::*;
use std::os::unix::fs::{chown, MetadataExt};

#[test]
fn no_capabilities_and_no_new_privileges() {
    let Some(f) = Fixture::new() else { return };
    for mode in ALL_MODES {
        f.import(mode);
        let status = f.berth(mode, &["exec", "busybox", "cat", "/proc/self/status"]);
        let field = |name: &str| {
            status
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(field("NoNewPrivs:"), "1", "{mode:?}");
        for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(field(cap), "0000000000000000", "{mode:?} {cap}");
        }
    }
}

#[test]
fn setuid_root_binary_does_not_give_root() {
    let Some(f) = Fixture::new() else { return };
    for mode in [Mode::RootAsUser, Mode::Rootless] {
        f.import(mode);
        let out = f.berth(mode, &["exec", "busybox", "/bin/suid-probe", "ids"]);
        assert_eq!(
            out.ok().trim(),
            format!("uid={0} euid={0} gid={1} egid={1}", f.user.uid, f.user.gid),
            "{mode:?}"
        );
    }
    // It really is set-uid root in the image (as root acting for the user sees it).
    let ls = f.berth(
        Mode::RootAsUser,
        &["exec", "busybox", "stat", "-c", "%u %A", "/bin/suid-probe"],
    );
    assert_eq!(ls.ok().trim(), "0 -rwsr-xr-x");
}

#[test]
fn roots_unpacked_copy_keeps_owners_and_only_root_can_reach_it() {
    let Some(f) = Fixture::new() else { return };
    // An image with a directory of the test user's own.
    let tree = f.copy_rootfs("owned-tree");
    let data = tree.join("data");
    std::fs::create_dir(&data).unwrap();
    chown(&data, Some(f.user.uid), Some(f.user.gid)).unwrap();
    f.berth(
        Mode::Root,
        &["image", "import", tree.to_str().unwrap(), "--name", "owned"],
    )
    .ok();
    // Root's container runs from the image's unpacked copy, which keeps the image's owners:
    // the user may write in their directory, as in the image.
    let out = f.berth(
        Mode::RootAsUser,
        &[
            "exec",
            "owned",
            "sh",
            "-c",
            "stat -c %u /data && echo mine > /data/new && cat /data/new",
        ],
    );
    assert_eq!(out.ok(), format!("{}\nmine\n", f.user.uid));
    // On the host the copy is root's alone: its set-user-ID files cannot be reached.
    let copies = f.path("store-root").join("rootfs");
    let meta = std::fs::metadata(&copies).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o700));
    let copy = std::fs::read_dir(&copies)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("data").is_dir())
        .expect("an unpacked copy of the image");
    let suid = std::fs::metadata(copy.join("bin/suid-probe")).unwrap();
    assert_eq!((suid.uid(), suid.mode() & 0o7777), (0, 0o4755));
    let reach = std::process::Command::new("setpriv")
        .arg(format!("--reuid={}", f.user.uid))
        .arg(format!("--regid={}", f.user.gid))
        .args(["--init-groups", "--", "stat"])
        .arg(copy.join("bin/suid-probe"))
        .output()
        .unwrap();
    let reach = Out::from_output(reach);
    assert_ne!(reach.code, 0);
    assert!(
        reach.stderr.contains("Permission denied"),
        "{}",
        reach.stderr
    );
    // Nothing of the unpacking is left in staging.
    assert_eq!(
        std::fs::read_dir(f.path("store-root").join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn every_mount_is_nosuid_and_all_but_device_nodes_nodev() {
    let Some(f) = Fixture::new() else { return };
    let devices = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/ptmx",
        "/dev/pts",
    ];
    for mode in ALL_MODES {
        f.import(mode);
        let bind = format!("{}:/data", f.cwd(mode).display());
        let mountinfo = f.berth(
            mode,
            &[
                "exec",
                "--bind",
                &bind,
                "busybox",
                "cat",
                "/proc/self/mountinfo",
            ],
        );
        let mut checked = 0;
        for line in mountinfo.ok().lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (target, options) = (fields[4], fields[5]);
            // Submounts of the host's /sys and /proc keep their own flags under the read-only /sys.
            if target.starts_with("/sys/") || target.starts_with("/proc/") {
                continue;
            }
            assert!(
                options.split(',').any(|o| o == "nosuid"),
                "{mode:?}: {line}"
            );
            if !devices.contains(&target) {
                assert!(
                    options.split(',').any(|o| o == "nodev") || target == "/dev",
                    "{mode:?}: {line}"
                );
            }
            checked += 1;
        }
        assert!(checked >= 10, "{mode:?}: only {checked} mounts");
        assert!(mountinfo.stdout.contains(" /data "), "the bind is there");
    }
}

#[test]
fn binds_outside_the_allowed_paths_are_refused_and_say_why() {
    let Some(mut f) = Fixture::new() else { return };
    let denied = f.path("cwd-user/secret");
    std::fs::create_dir(&denied).unwrap();
    f.write_config(&format!(
        "[binds]\nallow = [\"$HOME\", \"$PWD\"]\ndeny = [\"{}\"]\n",
        denied.display()
    ));
    for mode in [Mode::Rootless, Mode::RootAsUser] {
        f.import(mode);
        let out = f.berth(
            mode,
            &["exec", "--bind", "/etc:/hostetc", "busybox", "true"],
        );
        assert_eq!(out.code, 125, "{mode:?}");
        assert!(
            out.stderr.contains("bind of /etc refused")
                && out.stderr.contains("[binds] allow: $HOME"),
            "{}",
            out.stderr
        );
        // A symlink inside an allowed directory is judged by where it leads.
        let link = f.cwd(mode).join("etc-link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let out = f.berth(mode, &["exec", "--bind", "etc-link:/x", "busybox", "true"]);
        assert_eq!(out.code, 125, "{mode:?}");
        assert!(
            out.stderr.contains("bind of /etc refused"),
            "{}",
            out.stderr
        );
    }
    let out = f.berth(
        Mode::Rootless,
        &[
            "exec",
            "--bind",
            &format!("{}:/s", denied.display()),
            "busybox",
            "true",
        ],
    );
    assert_eq!(out.code, 125);
    assert!(
        out.stderr
            .contains(&format!("denied path {}", denied.display())),
        "{}",
        out.stderr
    );
    // Below a directory the user may bind (a parent of it, the working directory bound by
    // default), the denied one is hidden: empty and closed to all.
    std::fs::write(denied.join("key"), "secret\n").unwrap();
    let parent = denied.parent().unwrap().display().to_string();
    let look = "ls /p/secret; cat /p/secret/key; ls -d /p/secret; cat ./secret/key; echo end";
    let out = f.berth(
        Mode::Rootless,
        &[
            "exec",
            "--bind",
            &format!("{parent}:/p"),
            "busybox",
            "sh",
            "-c",
            look,
        ],
    );
    assert_eq!(out.stdout, "/p/secret\nend\n", "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("Permission denied").count(),
        3,
        "{}",
        out.stderr
    );
    // A working directory the program must start in, which the policy keeps out (here
    // without $PWD): refused with the rule, not as a directory the container lacks.
    f.write_config("[binds]\nallow = [\"$HOME\"]\n");
    let cwd = f.cwd(Mode::Rootless);
    let out = f.berth(
        Mode::Rootless,
        &["exec", "--pwd", cwd.to_str().unwrap(), "busybox", "true"],
    );
    assert!(
        out.code == 125
            && out.stderr.contains(&format!(
                "bind of {} refused: it is the working directory",
                cwd.display()
            ))
            && out.stderr.contains("[binds] allow: $HOME"),
        "{}",
        out.stderr
    );
    // Root, the administrator, is not bound by the policy.
    f.import(Mode::Root);
    assert_eq!(
        f.berth(
            Mode::Root,
            &[
                "exec",
                "--bind",
                "/etc:/hostetc:ro",
                "busybox",
                "test",
                "-f",
                "/hostetc/hostname"
            ]
        )
        .code,
        0
    );
}

/// A bind never opens a way through a directory the user may not enter: a file readable to
/// all, in a directory only root may pass, stays out of reach, whether it is bound by name
/// or is the working directory a container (or a job) starts in.
#[test]
fn binds_never_open_a_way_through_a_directory_the_user_may_not_enter() {
    let Some(f) = Fixture::new() else { return };
    let inside = f.behind_a_locked_door();
    let bind = format!("{}:/x", inside.display());
    for mode in [Mode::Rootless, Mode::RootAsUser] {
        f.import(mode);
        let out = f.berth(
            mode,
            &["exec", "--bind", &bind, "busybox", "cat", "/x/file"],
        );
        assert_eq!(out.code, 125, "{mode:?}: {}", out.stdout);
        assert!(!out.stdout.contains("secret"));
        assert!(
            out.stderr.contains("Permission denied"),
            "{mode:?}: {}",
            out.stderr
        );
    }
    // Root starting a container as the user from that directory (a job's working
    // directory, named by the submitter) does not bind it.
    let mut cmd = f.cmd(Mode::RootAsUser, &["exec", "busybox", "cat", "file"]);
    let out = Out::from_output(
        cmd.current_dir(&inside)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 125, "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "bind of {} refused: {TEST_USER} cannot reach it",
            inside.display()
        )),
        "{}",
        out.stderr
    );
    // Root itself may.
    f.import(Mode::Root);
    let root = f.berth(
        Mode::Root,
        &["exec", "--bind", &bind, "busybox", "cat", "/x/file"],
    );
    assert_eq!(root.ok(), "secret\n");
}

#[test]
fn read_only_binds_cannot_be_written() {
    let Some(f) = Fixture::new() else { return };
    for mode in [Mode::Rootless, Mode::RootAsUser] {
        f.import(mode);
        let bind = format!("{}:/data:ro", f.cwd(mode).display());
        let out = f.berth(
            mode,
            &["exec", "--bind", &bind, "busybox", "touch", "/data/new"],
        );
        assert_ne!(out.code, 0, "{mode:?}");
        assert!(
            out.stderr.contains("Read-only file system"),
            "{}",
            out.stderr
        );
        assert!(!f.cwd(mode).join("new").exists());
        // A file onto a directory of the image: refused, saying what to name instead.
        std::fs::write(f.cwd(mode).join("file"), "x").unwrap();
        let bind = format!("{}/file:/bin", f.cwd(mode).display());
        let out = f.berth(mode, &["exec", "--bind", &bind, "busybox", "true"]);
        assert!(
            out.code == 125
                && out
                    .stderr
                    .contains("cannot bind a file onto /bin: it is a directory in the image"),
            "{}",
            out.stderr
        );
    }
}

/// A bind inside another, whose mount point the host directory bound first lacks: refused,
/// leaving nothing in that directory (root acting for a user would have made it root's);
/// one it has, or one inside the image or berth's /tmp, is bound.
#[test]
fn nested_binds_make_nothing_in_the_host_directories_bound() {
    let Some(f) = Fixture::new() else { return };
    for mode in [Mode::Rootless, Mode::RootAsUser] {
        f.import(mode);
        let outer = f.cwd(mode).join("outer");
        let inner = f.cwd(mode).join("inner");
        for dir in [&outer, &inner] {
            std::fs::create_dir_all(dir).unwrap();
            std::os::unix::fs::chown(dir, Some(f.user.uid), Some(f.user.gid)).unwrap();
        }
        std::fs::write(inner.join("mark"), "inner\n").unwrap();
        let (outer, inner) = (outer.to_str().unwrap(), inner.to_str().unwrap());
        let nested = |place: &str| {
            let binds = [format!("{outer}:/data"), format!("{inner}:{place}")];
            let look = format!("cat {place}/mark");
            f.berth(
                mode,
                &[
                    "exec", "-B", &binds[0], "-B", &binds[1], "busybox", "sh", "-c", &look,
                ],
            )
        };
        let out = nested("/data/sub/inner");
        assert!(
            out.code == 125 && out.stderr.contains("cannot bind onto /data/sub/inner: the image lacks it, and its place is in a host directory bound into the container"),
            "{mode:?}: {}",
            out.stderr
        );
        assert_eq!(std::fs::read_dir(outer).unwrap().count(), 0, "{mode:?}");
        std::fs::create_dir(format!("{outer}/made")).unwrap();
        assert_eq!(nested("/data/made").ok(), "inner\n", "{mode:?}");
        assert_eq!(nested("/tmp/a/b").ok(), "inner\n", "{mode:?}");
        assert_eq!(nested("/opt/x/y").ok(), "inner\n", "{mode:?}");
        std::fs::remove_dir(format!("{outer}/made")).unwrap();
    }
}

#[test]
fn symlinks_in_the_image_cannot_redirect_mounts_to_the_host() {
    let Some(f) = Fixture::new() else { return };
    // An image whose /evil points at the host's /etc (as seen from outside the container).
    let rootfs = f.path("evil-rootfs");
    std::process::Command::new("cp")
        .arg("-a")
        .arg(&f.rootfs)
        .arg(&rootfs)
        .status()
        .unwrap();
    std::os::unix::fs::symlink("/etc", rootfs.join("evil")).unwrap();
    let marker = format!("berth-escape-test-{}", std::process::id());
    for mode in [Mode::Root, Mode::Rootless] {
        f.berth(
            mode,
            &[
                "image",
                "import",
                rootfs.to_str().unwrap(),
                "--name",
                "evil",
            ],
        )
        .ok();
        let bind = format!("{}:/evil/{marker}", f.cwd(mode).display());
        let out = f.berth(
            mode,
            &[
                "exec",
                "--bind",
                &bind,
                "evil",
                "sh",
                "-c",
                &format!("test -d /etc/{marker} && echo inside"),
            ],
        );
        assert_eq!(
            out.ok(),
            "inside\n",
            "{mode:?}: the symlink resolved inside the image"
        );
        assert!(
            !std::path::Path::new("/etc").join(&marker).exists(),
            "{mode:?}: berth created a directory in the host's /etc"
        );
    }
}
