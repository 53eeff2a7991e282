//! Running programs: exit statuses, identity, files, environment, stdio, pid namespace,
//! signals, terminals.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

#[test]
fn exit_status_is_the_programs_own() {
    let Some(f) = Fixture::new() else { return };
    for mode in ALL_MODES {
        f.import(mode);
        assert_eq!(
            f.berth(mode, &["exec", "busybox", "true"]).code,
            0,
            "{mode:?}"
        );
        assert_eq!(f.sh(mode, "exit 42").code, 42, "{mode:?}");
        assert_eq!(f.sh(mode, "kill -TERM $$").code, 128 + 15, "{mode:?}");
        let out = f.berth(mode, &["exec", "busybox", "no-such-command"]);
        assert_eq!(out.code, 127, "{mode:?}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("no-such-command: command not found in the image"),
            "{}",
            out.stderr
        );
        let out = f.berth(mode, &["exec", "busybox", "/bin/notexec"]);
        assert_eq!(out.code, 126, "{mode:?}: {}", out.stderr);
        assert!(out.stderr.contains("/bin/notexec"), "{}", out.stderr);
        assert_eq!(
            f.berth(mode, &["exec", "busybox", "/no/such/path"]).code,
            127,
            "{mode:?}"
        );
        // An empty command is none (not the PATH's first directory, refused).
        assert_eq!(
            f.berth(mode, &["exec", "busybox", ""]).code,
            127,
            "{mode:?}"
        );
    }
}

#[test]
fn same_identity_inside_as_outside() {
    let Some(f) = Fixture::new() else { return };
    let expected = format!(
        "uid={}({TEST_USER}) gid={}({TEST_USER})",
        f.user.uid, f.user.gid
    );
    for mode in [Mode::Rootless, Mode::RootAsUser] {
        f.import(mode);
        let id = f.berth(mode, &["exec", "busybox", "id"]);
        assert!(id.ok().starts_with(&expected), "{mode:?}: {}", id.stdout);
        assert_eq!(
            f.berth(mode, &["exec", "busybox", "whoami"]).ok().trim(),
            TEST_USER
        );
        let out = f.berth(mode, &["exec", "busybox", "/bin/probe", "ids"]);
        assert_eq!(
            out.ok().trim(),
            format!("uid={0} euid={0} gid={1} egid={1}", f.user.uid, f.user.gid)
        );
        // The image's entries stay, and /etc and its files keep the image's owner and mode.
        let db = "grep -c ^daemon: /etc/passwd /etc/group; stat -c '%a %u:%g' /bin /etc /etc/passwd /etc/group";
        let out = f.berth(mode, &["exec", "busybox", "sh", "-c", db]);
        let lines: Vec<&str> = out.ok().lines().collect();
        assert_eq!(lines[..2], ["/etc/passwd:1", "/etc/group:1"], "{mode:?}");
        let owner = lines[2].split(' ').nth(1).unwrap();
        assert_eq!(
            lines[3..],
            [
                format!("755 {owner}"),
                format!("644 {owner}"),
                format!("644 {owner}")
            ],
            "{mode:?}: {lines:?}"
        );
    }
    // An image whose /etc/passwd is a symlink (into the image): the user joins it all the same.
    let linked = f.path("linked");
    for sub in ["bin", "etc", "lib"] {
        std::fs::create_dir_all(linked.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", linked.join("bin/busybox")).unwrap();
    for applet in ["sh", "id", "head"] {
        std::os::unix::fs::symlink("busybox", linked.join("bin").join(applet)).unwrap();
    }
    std::fs::write(linked.join("lib/passwd"), "daemon:x:1:1::/:/bin/false\n").unwrap();
    std::os::unix::fs::symlink("../lib/passwd", linked.join("etc/passwd")).unwrap();
    for mode in [Mode::Rootless, Mode::RootAsUser] {
        let tree = linked.to_str().unwrap();
        f.berth(mode, &["image", "import", tree, "--name", "linked"])
            .ok();
        let out = f.berth(
            mode,
            &["exec", "linked", "sh", "-c", "id -un; head -1 /etc/passwd"],
        );
        assert_eq!(
            out.ok(),
            format!("{TEST_USER}\ndaemon:x:1:1::/:/bin/false\n"),
            "{mode:?}"
        );
    }
    f.import(Mode::Root);
    assert!(f
        .berth(Mode::Root, &["exec", "busybox", "id"])
        .ok()
        .starts_with("uid=0(root) gid=0(root)"));
    // Docker's -u USER[:GROUP]: root names anyone, a uid or gid without an entry too.
    let as_user = |mode, user: &str| f.berth(mode, &["exec", "-u", user, "busybox", "id"]);
    assert_eq!(
        as_user(Mode::Root, &format!("{TEST_USER}:0")).ok().trim(),
        format!("uid={}({TEST_USER}) gid=0(root) groups=0(root)", f.user.uid)
    );
    assert_eq!(
        as_user(Mode::Root, "4321:4322").ok().trim(),
        "uid=4321(4321) gid=4322(4322) groups=4322(4322)"
    );
    // -1 is no user (the kernel's "unchanged"): said before anything is set up.
    let minus_one = as_user(Mode::Root, "4294967295");
    assert!(
        minus_one.code == 125 && minus_one.stderr.contains("unknown user '4294967295'"),
        "{}",
        minus_one.stderr
    );
    // A user of the image's own database, by name or uid, as Docker looks them up: its
    // groups, its home, its entries kept as the image has them.
    let users = f.path("users");
    for sub in ["bin", "etc"] {
        std::fs::create_dir_all(users.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", users.join("bin/busybox")).unwrap();
    for applet in ["sh", "id", "cat"] {
        std::os::unix::fs::symlink("busybox", users.join("bin").join(applet)).unwrap();
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:4500:4500:The App:/home/app:/bin/sh\n";
    let group = "root:x:0:\napp:x:4500:\ndata:x:4501:other,app\nstaff:x:4502:other\n";
    std::fs::write(users.join("etc/passwd"), passwd).unwrap();
    std::fs::write(users.join("etc/group"), group).unwrap();
    let tree = users.to_str().unwrap();
    f.berth(Mode::Root, &["image", "import", tree, "--name", "users"])
        .ok();
    let show = "id; echo $HOME; cat /etc/passwd /etc/group";
    for (user, id) in [
        (
            "app",
            "uid=4500(app) gid=4500(app) groups=4500(app),4501(data)",
        ),
        (
            "4500",
            "uid=4500(app) gid=4500(app) groups=4500(app),4501(data)",
        ),
        (
            "app:staff",
            "uid=4500(app) gid=4502(staff) groups=4502(staff)",
        ),
    ] {
        let out = f.berth(Mode::Root, &["exec", "-u", user, "users", "sh", "-c", show]);
        assert_eq!(
            out.ok(),
            format!("{id}\n/home/app\n{passwd}{group}"),
            "-u {user}"
        );
    }
    // A user names themselves, or root: theirs, through a user namespace (--fakeroot's).
    let me = format!("{}:{}", f.user.uid, f.user.gid);
    assert!(as_user(Mode::Rootless, &me).ok().starts_with(&expected));
    assert!(as_user(Mode::Rootless, "0")
        .ok()
        .starts_with("uid=0(root) gid=0"));
    // No one else, and a user no one is.
    for user in ["0:1", &format!("{}", f.user.uid + 1), "nosuchuser"] {
        let out = f.berth(Mode::Rootless, &["exec", "--user", user, "busybox", "id"]);
        assert_eq!(out.code, 125, "{user}");
        let said = match user {
            "nosuchuser" => "nosuchuser",
            _ => "only root",
        };
        assert!(out.stderr.contains(said), "{user}: {}", out.stderr);
    }
    // Nor a user only the image knows: not them, whoever it is.
    f.berth(
        Mode::Rootless,
        &["image", "import", tree, "--name", "users"],
    )
    .ok();
    let out = f.berth(Mode::Rootless, &["exec", "-u", "app", "users", "id"]);
    assert!(
        out.code == 125
            && out
                .stderr
                .contains("only root may run a container as another user"),
        "{}",
        out.stderr
    );
}

/// An image whose /etc/passwd is a symlink that leads nowhere runs: the user's entry goes
/// into a file of the container's own in its place (Docker's runs too).
#[test]
fn an_image_with_a_dangling_passwd_link_runs() {
    let Some(f) = Fixture::new() else { return };
    let tree = f.path("dangling");
    for sub in ["bin", "etc"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    for applet in ["sh", "id"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    std::os::unix::fs::symlink("/nowhere/passwd", tree.join("etc/passwd")).unwrap();
    for mode in [Mode::Rootless, Mode::RootAsUser] {
        let tree = tree.to_str().unwrap();
        f.berth(mode, &["image", "import", tree, "--name", "dangling"])
            .ok();
        let id = f.berth(mode, &["exec", "dangling", "id", "-un"]);
        assert_eq!(id.ok(), format!("{TEST_USER}\n"), "{mode:?}");
    }
}

#[test]
fn home_and_current_directory_are_bound() {
    let Some(f) = Fixture::new() else { return };
    for mode in ALL_MODES {
        f.import(mode);
        let cwd = f.cwd(mode);
        std::fs::write(cwd.join("input.txt"), "data from the host\n").unwrap();
        assert_eq!(f.sh(mode, "pwd").ok().trim(), cwd.to_str().unwrap());
        assert_eq!(
            f.berth(mode, &["exec", "busybox", "cat", "input.txt"]).ok(),
            "data from the host\n"
        );
        f.sh(mode, "echo result > output.txt").ok();
        let meta = std::fs::metadata(cwd.join("output.txt")).unwrap();
        let owner = if mode == Mode::Root { 0 } else { f.user.uid };
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            owner,
            "{mode:?}: files written are the user's"
        );
    }
    let home = f.user.home.to_str().unwrap();
    let probe = f
        .sh(Mode::Rootless, &format!("test -d {home} && echo bound"))
        .ok()
        .trim()
        .to_string();
    assert_eq!(probe, "bound");
    let out = f.berth(
        Mode::Rootless,
        &[
            "exec",
            "--no-home",
            "busybox",
            "sh",
            "-c",
            &format!("test -d {home} || echo absent"),
        ],
    );
    assert_eq!(out.ok().trim(), "absent");
}

/// A bind of the user's over the working directory (or the home) decides what is there:
/// berth binds neither on top of it, which would make mount points in the user's directory
/// (or fail on a read-only one) and undo its `ro`.
#[test]
fn a_users_bind_over_the_working_directory_is_left_as_it_is() {
    let Some(f) = Fixture::new() else { return };
    for mode in ALL_MODES {
        f.import(mode);
        let cwd = f.cwd(mode);
        let parent = cwd.parent().unwrap().display().to_string();
        let over = cwd.join("over");
        std::fs::create_dir_all(&over).unwrap();
        for bind in [format!("over:{parent}"), format!("over:{parent}:ro")] {
            let out = f.berth(mode, &["exec", "-B", &bind, "busybox", "ls", "-A", &parent]);
            assert_eq!(out.ok(), "", "{mode:?} {bind}");
            let left: Vec<_> = std::fs::read_dir(&over).unwrap().collect();
            assert!(left.is_empty(), "{mode:?} {bind}: {left:?}");
        }
        // The working directory the bind has: started in, as read-only as bound.
        let bind = format!("{parent}:{parent}:ro");
        let out = f.berth(
            mode,
            &[
                "exec",
                "-B",
                &bind,
                "busybox",
                "sh",
                "-c",
                "pwd; touch x 2>/dev/null || echo ro",
            ],
        );
        assert_eq!(out.ok(), format!("{}\nro\n", cwd.display()), "{mode:?}");
    }
}

/// /tmp is a tmpfs of the container's own: empty even where the image's /tmp holds files,
/// everyone's (1777) whatever the image's mode, and gone with the container.
#[test]
fn tmp_is_empty_and_everyones() {
    let Some(f) = Fixture::new() else { return };
    let rootfs = f.copy_rootfs("rootfs-with-tmp");
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(rootfs.join("tmp/leftover"), "x").unwrap();
    let script =
        "stat -c %a /tmp; test -e /tmp/leftover && echo shown; echo z > /tmp/z && cat /tmp/z";
    for mode in ALL_MODES {
        f.import(mode);
        let rootfs = rootfs.to_str().unwrap();
        f.berth(mode, &["image", "import", rootfs, "--name", "withtmp"])
            .ok();
        for image in ["busybox", "withtmp"] {
            let out = f.berth(mode, &["exec", image, "sh", "-c", script]);
            assert_eq!(out.ok(), "1777\nz\n", "{mode:?} {image}");
            let gone = f.berth(
                mode,
                &["exec", image, "sh", "-c", "test -e /tmp/z || echo gone"],
            );
            assert_eq!(gone.ok(), "gone\n", "{mode:?} {image}");
        }
    }
}

#[test]
fn image_is_writable_and_changes_are_discarded() {
    let Some(f) = Fixture::new() else { return };
    for mode in ALL_MODES {
        f.import(mode);
        let out = f.sh(mode, "mkdir -p /scratch && echo x > /scratch/f && cat /scratch/f && echo y > /tmp/t && cat /tmp/t");
        // The root of the image belongs to root: only root (or the rootless user, who owns
        // the unpacked copy) may write there; everyone may write /tmp.
        if mode == Mode::RootAsUser {
            assert_ne!(out.code, 0);
            assert_eq!(f.sh(mode, "echo y > /tmp/t && cat /tmp/t").ok(), "y\n");
        } else {
            assert_eq!(out.ok(), "x\ny\n", "{mode:?}");
        }
        assert_eq!(
            f.sh(mode, "test -e /scratch/f || test -e /tmp/t || echo clean")
                .ok(),
            "clean\n",
            "{mode:?}"
        );
    }
}

#[test]
fn environment_comes_from_host_image_and_flags() {
    let Some(f) = Fixture::new() else { return };
    for mode in [Mode::Root, Mode::Rootless] {
        f.import(mode);
        let mut cmd = f.cmd(mode, &["exec", "--env", "SET_BY_FLAG=1", "busybox", "env"]);
        let out = cmd
            .env("FROM_HOST", "yes")
            .env("PATH", "/host/only/bin:/usr/bin:/bin")
            .output()
            .unwrap();
        let env = String::from_utf8(out.stdout).unwrap();
        assert!(env.contains("FROM_HOST=yes\n"), "{env}");
        assert!(env.contains("SET_BY_FLAG=1\n"), "{env}");
        assert!(
            !env.contains("/host/only/bin"),
            "host PATH must not leak in: {env}"
        );
        assert!(env.contains("BERTH_CONTAINER=busybox:latest\n"), "{env}");
        let mut cmd = f.cmd(mode, &["exec", "--cleanenv", "busybox", "env"]);
        let env = String::from_utf8(cmd.env("FROM_HOST", "yes").output().unwrap().stdout).unwrap();
        assert!(!env.contains("FROM_HOST"), "{env}");
        assert!(env.contains("HOME="), "{env}");
    }
}

#[test]
fn stdin_stdout_and_stderr_pass_through() {
    let Some(f) = Fixture::new() else { return };
    for mode in [Mode::Root, Mode::Rootless] {
        f.import(mode);
        let out = f.berth_stdin(
            mode,
            &["exec", "busybox", "sh", "-c", "cat; echo oops >&2"],
            "hello\nworld\n",
        );
        assert_eq!(out.ok(), "hello\nworld\n");
        assert_eq!(out.stderr, "oops\n");
    }
}

#[test]
fn own_pid_namespace_on_request() {
    let Some(f) = Fixture::new() else { return };
    for mode in ALL_MODES {
        f.import(mode);
        let pid: u32 = f.sh(mode, "echo $$").ok().trim().parse().unwrap();
        assert!(pid > 2, "{mode:?}: the host pid namespace by default");
        let out = f.berth(
            mode,
            &[
                "exec",
                "--pid",
                "busybox",
                "sh",
                "-c",
                "echo $$; ls /proc | grep -c '^[0-9]'",
            ],
        );
        let lines: Vec<&str> = out.ok().lines().collect();
        assert_eq!(lines[0], "2", "{mode:?}: berth's init is 1, the program 2");
        assert!(
            lines[1].parse::<u32>().unwrap() <= 4,
            "{mode:?}: only the container's processes: {}",
            lines[1]
        );
        assert_eq!(
            f.berth(mode, &["exec", "--pid", "busybox", "sh", "-c", "exit 9"])
                .code,
            9
        );
    }
}

#[test]
fn own_network_with_loopback_only_on_request() {
    let Some(f) = Fixture::new() else { return };
    // The interfaces of the network namespace the reader is in.
    let interfaces = |text: &str| -> Vec<String> {
        let mut names: Vec<String> = text
            .lines()
            .skip(2)
            .filter_map(|l| Some(l.split_once(':')?.0.trim().to_string()))
            .collect();
        names.sort();
        names
    };
    // Network namespaces told apart by identity (the host's interfaces may change meanwhile:
    // other tests make test hosts).
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host = host.to_str().unwrap();
    let list = "readlink /proc/self/ns/net; cat /proc/self/net/dev; ip link show lo";
    for mode in ALL_MODES {
        f.import(mode);
        // The host's network by default.
        let out = f.sh(mode, "readlink /proc/self/ns/net");
        assert_eq!(out.ok().trim(), host, "{mode:?}");
        // Docker's --network none, Apptainer's --net --network none, Docker's --net=none;
        // the last with a pid namespace (the container made by a clone, not in place).
        for flags in [
            &["--network", "none"][..],
            &["--net", "--network", "none"],
            &["--net=none", "--pid"],
        ] {
            let mut args = vec!["exec"];
            args.extend_from_slice(flags);
            args.extend(["busybox", "sh", "-c", list]);
            let out = f.berth(mode, &args);
            let text = out.ok();
            let (namespace, rest) = text.split_once('\n').unwrap();
            assert_ne!(namespace, host, "{mode:?} {flags:?}: {text}");
            assert_eq!(
                interfaces(rest.split("1: lo").next().unwrap()),
                ["lo"],
                "{mode:?} {flags:?}: {text}"
            );
            assert!(
                text.contains("<LOOPBACK,UP"),
                "{mode:?} {flags:?}: loopback is up: {text}"
            );
        }
        for (flags, said) in [
            (&["--net"][..], "add --network none"),
            (&["--network", "bridge"], "no virtual networks"),
            (&["--net=none", "--network", "host"], "disagree"),
        ] {
            let mut args = vec!["exec"];
            args.extend_from_slice(flags);
            args.extend(["busybox", "true"]);
            let out = f.berth(mode, &args);
            assert_eq!(out.code, 125, "{mode:?} {flags:?}");
            assert!(
                out.stderr.contains(said),
                "{mode:?} {flags:?}: {}",
                out.stderr
            );
        }
    }
}

#[test]
fn own_host_name_on_request() {
    let Some(f) = Fixture::new() else { return };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for mode in ALL_MODES {
        f.import(mode);
        assert_eq!(f.sh(mode, "hostname").ok(), host, "{mode:?}");
        for pid in [&[][..], &["--pid"]] {
            let mut args = vec!["exec", "--hostname", "node-7.lab"];
            args.extend_from_slice(pid);
            args.extend(["busybox", "hostname"]);
            assert_eq!(f.berth(mode, &args).ok(), "node-7.lab\n", "{mode:?}");
        }
        let out = f.berth(mode, &["exec", "--hostname", "a_b", "busybox", "true"]);
        assert!(
            out.code == 125 && out.stderr.contains("letters, digits and hyphens"),
            "{mode:?}: {}",
            out.stderr
        );
    }
    // The host's name is as it was.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host
    );
}

#[test]
fn run_uses_entrypoint_cmd_env_from_the_image() {
    let Some(f) = Fixture::new() else { return };
    let archive = docker_archive_of(
        &f,
        r#"{"Entrypoint":["/bin/echo","entry"],"Cmd":["default"],"Env":["FROM_IMAGE=1","PATH=/bin"]}"#,
    );
    for mode in [Mode::Root, Mode::Rootless] {
        f.berth(
            mode,
            &[
                "image",
                "import",
                archive.to_str().unwrap(),
                "--name",
                "app:1",
            ],
        )
        .ok();
        assert_eq!(f.berth(mode, &["run", "app:1"]).ok(), "entry default\n");
        assert_eq!(
            f.berth(mode, &["run", "app:1", "a", "-b"]).ok(),
            "entry a -b\n"
        );
        // Everything after the image is the program's, options berth has too.
        assert_eq!(
            f.berth(mode, &["run", "-e", "X=1", "app:1", "-e", "X=2", "--help"])
                .ok(),
            "entry -e X=2 --help\n"
        );
        // Docker's --entrypoint: the image's CMD goes with the entry point it replaces.
        assert_eq!(
            f.berth(mode, &["run", "--entrypoint", "/bin/echo", "app:1"])
                .ok(),
            "\n"
        );
        assert_eq!(
            f.berth(mode, &["run", "--entrypoint", "echo", "app:1", "x"])
                .ok(),
            "x\n"
        );
        assert_eq!(
            f.berth(mode, &["run", "--entrypoint", "", "app:1", "echo", "y"])
                .ok(),
            "y\n"
        );
        let out = f.berth(mode, &["run", "--entrypoint", "", "app:1"]);
        assert!(
            out.code == 125 && out.stderr.contains("no ENTRYPOINT or CMD"),
            "{}",
            out.stderr
        );
        let out = f.berth(mode, &["run", "--bogus", "app:1"]);
        assert!(
            out.code == 125 && out.stderr.contains("unknown option '--bogus'"),
            "{}",
            out.stderr
        );
        assert_eq!(
            f.berth(
                mode,
                &["exec", "app:1", "sh", "-c", "echo $FROM_IMAGE $PATH"]
            )
            .ok(),
            "1 /bin\n"
        );
        f.import(mode);
        let out = f.berth(mode, &["run", "busybox"]);
        assert_eq!(out.code, 125);
        assert!(
            out.stderr.contains("no ENTRYPOINT or CMD"),
            "{}",
            out.stderr
        );
    }
}

/// `berth exec [--pid] busybox WORDS...`'s arguments.
fn exec_busybox<'a>(pid_ns: bool, words: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["exec"];
    if pid_ns {
        args.push("--pid");
    }
    args.push("busybox");
    args.extend_from_slice(words);
    args
}

#[test]
fn signals_to_berth_reach_the_program() {
    let Some(f) = Fixture::new() else { return };
    for (mode, pid_ns) in [
        (Mode::Root, false),
        (Mode::Rootless, false),
        (Mode::RootAsUser, true),
        (Mode::Rootless, true),
    ] {
        f.import(mode);
        let args = exec_busybox(
            pid_ns,
            &[
                "sh",
                "-c",
                "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.05; done",
            ],
        );
        let mut child = f
            .cmd(mode, &args)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(
            lines.next().unwrap().unwrap(),
            "got TERM",
            "{mode:?} pid namespace {pid_ns}"
        );
        assert_eq!(
            child.wait().unwrap().code(),
            Some(7),
            "{mode:?} pid namespace {pid_ns}"
        );
    }
}

/// The program starts with SIGPIPE's default action (berth ignores it for itself): a writer
/// into a pipe whose reader has gone ends, as under any shell.
#[test]
fn the_program_starts_with_sigpipe_not_ignored() {
    let Some(f) = Fixture::new() else { return };
    for (mode, pid_ns) in [
        (Mode::Root, false),
        (Mode::Rootless, false),
        (Mode::Rootless, true),
    ] {
        f.import(mode);
        let script = "grep SigIgn /proc/self/status; yes | head -1";
        let out = f.berth(mode, &exec_busybox(pid_ns, &["sh", "-c", script]));
        let (ignored, rest) = out.ok().split_once('\n').unwrap();
        let mask = u64::from_str_radix(ignored.trim_start_matches("SigIgn:\t"), 16).unwrap();
        assert_eq!(
            (mask & 1 << (libc::SIGPIPE - 1), rest, out.stderr.as_str()),
            (0, "y\n", ""),
            "{mode:?} pid namespace {pid_ns}"
        );
    }
}

#[test]
fn terminal_is_usable_from_shell() {
    let Some(f) = Fixture::new() else { return };
    for mode in [Mode::Root, Mode::Rootless] {
        f.import(mode);
        let mut script = under_terminal(&f.cmd(mode, &["shell", "busybox"]));
        let out = run_with_stdin(&mut script, "test -t 0 && tty; exit 5\n");
        assert!(out.stdout.contains("/dev/pts/"), "{mode:?}: {}", out.stdout);
    }
}

#[test]
fn working_directory_on_request() {
    let Some(f) = Fixture::new() else { return };
    for mode in [Mode::Root, Mode::Rootless] {
        f.import(mode);
        assert_eq!(
            f.berth(mode, &["exec", "--pwd", "/bin", "busybox", "pwd"])
                .ok(),
            "/bin\n"
        );
        let out = f.berth(mode, &["exec", "--pwd", "/no/such/dir", "busybox", "pwd"]);
        assert_eq!(out.code, 125, "{mode:?}");
        assert!(
            out.stderr
                .contains("cannot enter the working directory /no/such/dir"),
            "{}",
            out.stderr
        );
    }
    // Started in a directory the user may not enter: the program starts in /, and says so.
    let locked = f.path("private");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut cmd = f.cmd(Mode::Rootless, &["exec", "busybox", "pwd"]);
    let out = Out::from_output(cmd.current_dir(&locked).output().unwrap());
    assert_eq!(out.ok(), "/\n");
    assert!(
        out.stderr.contains(&format!(
            "warning: cannot enter the working directory {} in the container",
            locked.display()
        )),
        "{}",
        out.stderr
    );
}

/// `--gpus` end to end on a machine made to look like an NVIDIA GPU node (the test machine,
/// see `on_a_stand_in_gpu_node`): the devices, libraries and tools reach the container as the
/// driver's would, for root, root acting for a user and the user alone; only the driver
/// itself is missing (real GPUs are checked where one is lent).
#[test]
fn gpus_reach_the_container_on_a_stand_in_gpu_node_in_a_vm() {
    if !on_a_stand_in_gpu_node(
        "exec::gpus_reach_the_container_on_a_stand_in_gpu_node_in_a_vm",
        1,
    ) {
        return;
    }
    let f = Fixture::new().expect("root in the test machine");
    let inside = r#"stat -c '%n %F %t:%T' /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm
        ls /.berth/gpu/lib
        cmp /.berth/gpu/lib/libcuda.so.1 /.berth/gpu/lib/libcuda.so && echo same library
        echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
        ls /.berth/gpu/bin"#;
    // The stand-in nvidia-smi is linked with libnvidia-ml.so.1, so it runs where glibc is.
    let glibc = f.path("glibc");
    glibc_rootfs(&glibc);
    for mode in ALL_MODES {
        f.import(mode);
        let glibc = glibc.to_str().unwrap();
        f.berth(mode, &["image", "import", glibc, "--name", "glibc"])
            .ok();
        let out = f.berth(mode, &["exec", "--gpus", "all", "glibc", "nvidia-smi"]);
        assert_eq!(
            out.ok(),
            "stand-in nvidia-smi: libnvidia-ml says 42, GPUs 0\n",
            "{mode:?}"
        );
        let out = f.berth(
            mode,
            &["exec", "--gpus", "all", "busybox", "sh", "-c", inside],
        );
        assert_eq!(
            out.ok(),
            "/dev/nvidia0 character special file c3:0\n\
             /dev/nvidiactl character special file c3:ff\n\
             /dev/nvidia-uvm character special file 1fe:0\n\
             libcuda.so\nlibcuda.so.1\nlibcuda.so.550.54.15\n\
             libnvidia-ml.so.1\nlibnvidia-ml.so.550.54.15\n\
             same library\n\
             LD_LIBRARY_PATH=/.berth/gpu/lib\n\
             nvidia-smi\n",
            "{mode:?}"
        );
        let out = f.berth(mode, &["exec", "--gpus", "2", "busybox", "true"]);
        assert_eq!(out.code, 125, "{mode:?}");
        assert!(
            out.stderr
                .contains("--gpus 2 requested but this host has 1 NVIDIA GPU"),
            "{mode:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn gpus_on_a_host_without_them_is_a_clear_error() {
    let Some(f) = Fixture::new() else { return };
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("skipped: this host has an NVIDIA GPU");
        return;
    }
    f.import(Mode::Root);
    let out = f.berth(Mode::Root, &["exec", "--gpus", "all", "busybox", "true"]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("no NVIDIA GPU"), "{}", out.stderr);
    // Apptainer's --nv asks for them where there are some: a warning (its test is with
    // Apptainer's other options).
    let out = f.berth(Mode::Root, &["exec", "--gpus", "zero", "busybox", "true"]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("--gpus"), "{}", out.stderr);
}

/// Apptainer's options for what berth does, as its users type them: --env-file, --home
/// SRC:DST, --contain (no host directory), --containall (and a clean environment and a pid
/// namespace of its own), --writable-tmpfs (berth's way anyway), --fakeroot.
#[test]
fn apptainers_options_do_what_apptainer_does() {
    let Some(f) = Fixture::new() else { return };
    let mode = Mode::Rootless;
    f.import(mode);
    let cwd = f.cwd(mode);
    std::fs::write(
        cwd.join("vars.env"),
        "# set by the file\nA=1\nexport B=\"two words\"\nC=$A-${FROM_HOST:-x}\nPATH=/custom:$PATH\n\nD=d E=$D-e\n",
    )
    .unwrap();
    let vars = f.berth(
        mode,
        &[
            "exec",
            "--env-file",
            "vars.env",
            "--env",
            "A=flag",
            "busybox",
            "sh",
            "-c",
            "echo $A, $B, $C, $PATH, $E",
        ],
    );
    // Evaluated as a shell sourcing it would in the container (Apptainer's way): its PATH
    // the image's, not the host's; --env wins afterwards.
    let path = berth_runtime::DEFAULT_PATH;
    assert_eq!(
        vars.ok(),
        format!("flag, two words, 1-x, /custom:{path}, d-e\n")
    );
    std::fs::write(cwd.join("bad.env"), "A=1\nnot a variable\n").unwrap();
    let bad = f.berth(mode, &["exec", "--env-file", "bad.env", "busybox", "true"]);
    assert!(
        bad.code == 125 && bad.stderr.contains("bad.env line 2: expected NAME=VALUE"),
        "{}",
        bad.stderr
    );
    std::fs::write(cwd.join("cmd.env"), "A=$(hostname)\n").unwrap();
    let bad = f.berth(mode, &["exec", "--env-file", "cmd.env", "busybox", "true"]);
    assert!(
        bad.code == 125
            && bad
                .stderr
                .contains("cmd.env line 1: a command substitution"),
        "{}",
        bad.stderr
    );

    std::fs::create_dir_all(cwd.join("alt")).unwrap();
    std::fs::write(cwd.join("alt/f"), "alt home\n").unwrap();
    let home = format!("{}:/home/me", cwd.join("alt").display());
    let out = f.berth(
        mode,
        &[
            "exec",
            "--home",
            &home,
            "busybox",
            "sh",
            "-c",
            "echo $HOME; cat ~/f; grep \"^$(id -un):\" /etc/passwd | cut -d: -f6",
        ],
    );
    assert_eq!(out.ok(), "/home/me\nalt home\n/home/me\n");

    // --contain: no host directory; an empty home of the user's own, gone at the end.
    let user_home = f.user.home.display().to_string();
    let check = format!(
        "pwd; ls -A {user_home}; echo x > ~/.contained && stat -c %U:%a ~; test -e {}/vars.env || echo no cwd",
        cwd.display()
    );
    let out = f.berth(mode, &["exec", "--contain", "busybox", "sh", "-c", &check]);
    assert_eq!(out.ok(), format!("/\n{}:700\nno cwd\n", mode.user()));
    assert!(!f.user.home.join(".contained").exists());

    // Apptainer's lists and variables: -B a,b; $APPTAINER_BIND; --env A=1,B=2 (a value
    // with commas that are not assignments stays whole); APPTAINERENV_NAME, also with
    // --cleanenv.
    for dir in ["la", "lb", "lc"] {
        std::fs::create_dir_all(cwd.join(dir)).unwrap();
        std::fs::write(cwd.join(dir).join("f"), dir).unwrap();
    }
    let mut lists = f.cmd(
        mode,
        &[
            "exec",
            "--cleanenv",
            "-B",
            "la:/mnt/a,lb:/mnt/b:ro",
            "--env",
            "A=1,B=2",
            "--env",
            "CUDA_VISIBLE_DEVICES=0,1",
            "--env",
            "FROM_CALLER",
            "busybox",
            "sh",
            "-c",
            "cat /mnt/a/f /mnt/b/f /mnt/c/f; echo; echo $A $B $CUDA_VISIBLE_DEVICES $FROM_PREFIX $FROM_CALLER; env | grep -c APPTAINERENV",
        ],
    );
    // (--env NAME alone: the caller's NAME, as docker's.)
    let out = lists
        .env("APPTAINER_BIND", "lc:/mnt/c")
        .env("APPTAINERENV_FROM_PREFIX", "prefixed")
        .env("FROM_CALLER", "passed")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "lalblc\n1 2 0,1 prefixed passed\n0\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An option berth does not know: 125, as docker's.
    let unknown = f.berth(mode, &["exec", "--no-such-option", "busybox", "true"]);
    assert_eq!(unknown.code, 125, "{}", unknown.stderr);
    // --nv where there is no GPU: a warning, and the program runs (Apptainer's way).
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        let nv = f.berth(mode, &["exec", "--nv", "busybox", "true"]);
        assert!(
            nv.code == 0 && nv.stderr.contains("--nv: this machine has no NVIDIA GPU"),
            "{}",
            nv.stderr
        );
    }
    let mut all = f.cmd(
        mode,
        &[
            "exec",
            "--containall",
            "busybox",
            "sh",
            "-c",
            "echo pid $$; echo host ${FROM_HOST:-unset}",
        ],
    );
    let out = all.env("FROM_HOST", "yes").output().unwrap();
    // (berth's init is 1, the program 2: a pid namespace of its own.)
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pid 2\nhost unset\n");
    f.berth(mode, &["exec", "--writable-tmpfs", "busybox", "true"])
        .ok();
    // Apptainer's short options (-p: --pid), --cwd, and its APPTAINER_OPTION variables;
    // --writable refused, saying what berth does instead.
    let mut short = f.cmd(
        mode,
        &[
            "exec",
            "-p",
            "--cwd",
            "/bin",
            "busybox",
            "sh",
            "-c",
            "echo $$ $PWD ${FROM_HOST:-unset}; cat /mnt/f",
        ],
    );
    let out = short
        .env("FROM_HOST", "yes")
        .env("APPTAINER_CLEANENV", "1")
        .env("APPTAINER_BINDPATH", "la:/mnt")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 /bin unset\nla");
    let writable = f.berth(mode, &["exec", "-w", "busybox", "true"]);
    assert!(
        writable.code == 125
            && writable
                .stderr
                .contains("--writable-tmpfs gives the container"),
        "{}",
        writable.stderr
    );

    // --fakeroot: root inside, the user outside (what it makes on the host is theirs); root
    // is told it needs none.
    let out = f.berth(
        mode,
        &[
            "exec",
            "--fakeroot",
            "busybox",
            "sh",
            "-c",
            "id -u; echo $HOME $USER $LOGNAME; echo made > made-as-root",
        ],
    );
    // (Root's variables too, as Docker's `-u 0` has them.)
    assert_eq!(out.ok(), "0\n/root root root\n");
    let made = std::fs::metadata(cwd.join("made-as-root")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), f.user.uid);
    f.import(Mode::Root);
    let root = f.berth(Mode::Root, &["exec", "--fakeroot", "busybox", "true"]);
    assert!(
        root.code == 125 && root.stderr.contains("--fakeroot is for users"),
        "{}",
        root.stderr
    );
}
