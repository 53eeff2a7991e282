//! `berth image`: import, list, inspect, remove; and the errors users see.

use crate::support::*;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};

#[test]
fn import_list_inspect_remove() {
    let Some(f) = Fixture::new() else { return };
    for mode in [Mode::Root, Mode::Rootless] {
        let rootfs = f.rootfs.to_str().unwrap();
        let out = f.berth(mode, &["image", "import", rootfs, "--name", "tools:1"]);
        assert!(
            out.ok().starts_with("Imported tools:1 (id "),
            "{}",
            out.stdout
        );
        let ls = f.berth(mode, &["image", "ls"]);
        assert!(
            ls.ok().lines().any(|l| l.starts_with("tools:1 ")),
            "{}",
            ls.stdout
        );
        let json: serde_json::Value =
            serde_json::from_str(f.berth(mode, &["image", "ls", "--json"]).ok()).unwrap();
        assert_eq!(json[0]["names"][0], "tools:1");
        let id = json[0]["id"].as_str().unwrap().to_string();
        let inspect: serde_json::Value = serde_json::from_str(
            f.berth(mode, &["image", "inspect", "tools:1", "--json"])
                .ok(),
        )
        .unwrap();
        assert_eq!(inspect["id"], id.as_str());
        assert!(inspect["oci_config"]["rootfs"]["diff_ids"].is_array());
        assert!(f
            .berth(mode, &["image", "inspect", &id[7..19]])
            .ok()
            .contains(&id));
        // A reader gone (`berth image ls --json | head`): quietly 0, as for the table.
        for args in [&["image", "ls", "--json"][..], &["image", "ls"]] {
            let mut fds = [0; 2];
            // SAFETY: a pipe of our own, its read end closed at once.
            let closed = unsafe {
                assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
                libc::close(fds[0]);
                std::os::fd::OwnedFd::from_raw_fd(fds[1])
            };
            let out = f
                .cmd(mode, args)
                .stdout(closed)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
                .wait_with_output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stderr.is_empty(),
                "{args:?}: {stderr}"
            );
        }
        // From a stream, as docker load takes one (`docker save x | berth image import -`).
        let tarball = f.path("rootfs.tar");
        if !tarball.exists() {
            let made = std::process::Command::new("tar")
                .arg("-C")
                .arg(&f.rootfs)
                .args(["-cf", tarball.to_str().unwrap(), "."])
                .status()
                .unwrap();
            assert!(made.success());
        }
        let piped = f
            .cmd(mode, &["image", "import", "-", "--name", "piped:1"])
            .stdin(std::fs::File::open(&tarball).unwrap())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&piped.stdout).starts_with("Imported piped:1 (id "),
            "{}",
            String::from_utf8_lossy(&piped.stderr)
        );
        let shown = f
            .berth(mode, &["image", "inspect", "piped:1"])
            .ok()
            .to_string();
        assert!(shown.contains("from standard input"), "{shown}");
        f.berth(mode, &["image", "rm", "piped:1"]).ok();
        // Nothing on it: said of standard input, not of berth's spooled copy.
        let empty = f.berth(mode, &["image", "import", "-", "--name", "empty:1"]);
        assert!(
            empty.code != 0
                && empty
                    .stderr
                    .starts_with("berth: standard input: not an image"),
            "{}",
            empty.stderr
        );
        // A second name for the same image: the import says that name.
        let out = f.berth(mode, &["image", "import", rootfs, "--name", "other"]);
        assert!(
            out.ok().starts_with("Imported other:latest (id "),
            "{}",
            out.stdout
        );
        // By its id, an image of several names goes only when forced (docker rmi's way).
        let refused = f.berth(mode, &["image", "rm", &id[7..19]]);
        assert!(
            refused.code == 125
                && refused
                    .stderr
                    .contains("has 2 names (other:latest, tools:1): remove them one by one"),
            "{}",
            refused.stderr
        );
        let rm = f.berth(mode, &["image", "rm", "other"]);
        assert_eq!(rm.ok(), "Untagged: other:latest\n");
        f.berth(mode, &["image", "import", rootfs, "--name", "other"])
            .ok();
        let rm = f.berth(mode, &["image", "rm", "--force", &id[7..19]]);
        assert_eq!(
            rm.ok(),
            format!("Untagged: other:latest\nUntagged: tools:1\nDeleted: {id}\n")
        );
        assert_eq!(f.berth(mode, &["image", "ls", "--json"]).ok().trim(), "[]");
    }
}

/// An image is not removed from under a running container, whose files would vanish: `rm`,
/// by name or by id, leaves it and says which process uses it, the container goes on, and
/// once it has ended the image goes. (`prune` skips such an image too: the store's tests.)
/// An image's hard links stay links in the unpacked copy containers run from (as root and
/// as a user): one file on disk, not one per name.
#[test]
fn hard_links_stay_links_in_the_unpacked_copy() {
    let Some(f) = Fixture::new() else { return };
    let tree = f.copy_rootfs("linked-tree");
    std::fs::create_dir(tree.join("data")).unwrap();
    std::fs::write(tree.join("data/orig"), "shared\n").unwrap();
    std::fs::hard_link(tree.join("data/orig"), tree.join("data/hard")).unwrap();
    // One in a directory no one may write (as Fedora's /usr/lib): where a user's copy cannot
    // link it again, it stays a copy, and the image runs all the same.
    std::fs::create_dir(tree.join("ro")).unwrap();
    std::fs::write(tree.join("ro/a"), "ro\n").unwrap();
    std::fs::hard_link(tree.join("ro/a"), tree.join("ro/b")).unwrap();
    std::fs::set_permissions(
        tree.join("ro"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    for mode in [Mode::Root, Mode::Rootless] {
        let tree = tree.to_str().unwrap();
        f.berth(mode, &["image", "import", tree, "--name", "linked:1"])
            .ok();
        let out = f.berth(
            mode,
            &[
                "exec",
                "linked:1",
                "sh",
                "-c",
                "stat -c '%i %h' /data/orig /data/hard",
            ],
        );
        let lines: Vec<&str> = out.ok().lines().collect();
        assert!(
            lines.len() == 2 && lines[0] == lines[1] && lines[0].ends_with(" 2"),
            "{mode:?}: {lines:?}"
        );
        assert_eq!(
            f.berth(mode, &["exec", "linked:1", "cat", "/ro/b"]).ok(),
            "ro\n"
        );
    }
}

#[test]
fn an_image_in_use_is_not_removed() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let Some(f) = Fixture::new() else { return };
    for mode in [Mode::Root, Mode::Rootless] {
        f.import(mode);
        let script = "echo ready; read line; ls /bin/busybox";
        let mut child = f
            .cmd(mode, &["exec", "busybox", "sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        let inspect = f
            .berth(mode, &["image", "inspect", "busybox"])
            .ok()
            .to_string();
        let id = inspect.lines().next().unwrap().rsplit(':').next().unwrap();
        for args in [&["image", "rm", "busybox"][..], &["image", "rm", &id[..12]]] {
            let refused = f.berth(mode, args);
            let message = format!(
                "berth: image '{}' is in use by a running container (process {}): stop it, then remove the image\n",
                args[2],
                child.id()
            );
            assert_eq!((refused.code, refused.stderr), (125, message), "{mode:?}");
        }
        f.berth(mode, &["image", "inspect", "busybox"]).ok();
        drop(child.stdin.take());
        assert_eq!(lines.next().unwrap().unwrap(), "/bin/busybox", "{mode:?}");
        assert!(child.wait().unwrap().success());
        let removed = f.berth(mode, &["image", "rm", "busybox"]).ok().to_string();
        assert!(
            removed.starts_with("Untagged: busybox:latest\nDeleted: sha256:"),
            "{removed}"
        );
    }
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_125() {
    let Some(f) = Fixture::new() else { return };
    let garbage = f.path("garbage.tar");
    std::fs::write(&garbage, "this is not an image").unwrap();
    // A text file of some size: not mistaken for a damaged archive, nor quoted.
    let text = f.path("notes.txt");
    std::fs::write(&text, "root:x:0:0:root:/root:/bin/sh\n".repeat(100)).unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["exec", "nosuchimage", "true"],
            "image 'nosuchimage' not found in the store",
        ),
        (
            &["image", "import", "/no/such/file.tar"],
            "/no/such/file.tar: no such file or directory",
        ),
        (
            &["image", "import", garbage.to_str().unwrap()],
            "garbage.tar: not an image berth can import: expected a docker-archive or OCI archive",
        ),
        (
            &["image", "import", text.to_str().unwrap()],
            "notes.txt: not an image berth can import",
        ),
        (
            &[
                "image",
                "import",
                f.rootfs.to_str().unwrap(),
                "--name",
                "Bad Name",
            ],
            "invalid image name",
        ),
    ];
    for (args, message) in cases {
        refused_in_one_line(&f.berth(Mode::Root, args), message);
    }
}

/// A command that failed as docker's and podman's do (125), saying why in one line.
fn refused_in_one_line(out: &Out, message: &str) {
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("berth: ") && out.stderr.contains(message),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

/// enroot's and pyxis's images: a squashfs file imports as a root filesystem, with the
/// variables enroot keeps in its /etc/environment; a damaged one is refused in one line and
/// leaves nothing.
#[test]
fn a_squashfs_file_imports_with_its_environment() {
    let Some(f) = Fixture::new() else { return };
    let tree = f.copy_rootfs("enroot-tree");
    std::fs::write(
        tree.join("etc/environment"),
        "PATH=/usr/local/bin:/usr/bin:/bin\nexport FOO=\"bar baz\"\n# a comment\n",
    )
    .unwrap();
    let sqsh = f.squashfs_of(&tree, "app.sqsh");
    for mode in [Mode::Root, Mode::Rootless] {
        let out = f.berth(
            mode,
            &["image", "import", sqsh.to_str().unwrap(), "--name", "sq:1"],
        );
        assert!(out.ok().starts_with("Imported sq:1 (id "), "{}", out.stdout);
        let run = f.berth(
            mode,
            &["exec", "sq:1", "sh", "-c", "echo \"$FOO|$PATH\"; id -un"],
        );
        assert_eq!(
            run.ok(),
            format!("bar baz|/usr/local/bin:/usr/bin:/bin\n{}\n", mode.user())
        );
    }
    // Cut short: sqfs2tar's own reason, in one line.
    let bytes = std::fs::read(&sqsh).unwrap();
    let damaged = f.path("damaged.sqsh");
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    let out = f.berth(Mode::Root, &["image", "import", damaged.to_str().unwrap()]);
    refused_in_one_line(&out, "not a squashfs file berth can read");
    let ls = f.berth(Mode::Root, &["image", "ls"]);
    assert_eq!(ls.ok().lines().count(), 2, "only sq:1: {}", ls.stdout);
}

/// A SIF file as Apptainer writes one: its header, one descriptor (the primary system
/// partition, `squashfs`'s bytes) among 48, and the partition at byte 32768.
fn sif_of(squashfs: &[u8], fs_type: i32) -> Vec<u8> {
    let (descriptors, data) = (4096usize, 32768usize);
    let mut sif = vec![0u8; data];
    sif[..31].copy_from_slice(b"#!/usr/bin/env run-singularity\n");
    sif[32..42].copy_from_slice(b"SIF_MAGIC\0");
    sif[42..45].copy_from_slice(b"01\0");
    sif[45..48].copy_from_slice(b"02\0");
    for (at, value) in [
        (80, 47),
        (88, 48),
        (96, descriptors as i64),
        (104, 585),
        (112, data as i64),
        (120, squashfs.len() as i64),
    ] {
        sif[at..at + 8].copy_from_slice(&i64::to_le_bytes(value));
    }
    let d = &mut sif[descriptors..descriptors + 585];
    d[0..4].copy_from_slice(&0x4004i32.to_le_bytes());
    d[4] = 1;
    d[5..9].copy_from_slice(&1u32.to_le_bytes());
    d[17..25].copy_from_slice(&(data as i64).to_le_bytes());
    d[25..33].copy_from_slice(&(squashfs.len() as i64).to_le_bytes());
    d[33..41].copy_from_slice(&(squashfs.len() as i64).to_le_bytes());
    d[201..205].copy_from_slice(&fs_type.to_le_bytes());
    d[205..209].copy_from_slice(&2i32.to_le_bytes());
    d[209..212].copy_from_slice(b"02\0");
    sif.extend_from_slice(squashfs);
    sif
}

/// Apptainer's images: a SIF file imports as its root filesystem partition, with the
/// variables its /.singularity.d/env files set, and `berth run` runs its runscript with
/// the arguments, as `apptainer run` does; an encrypted one is refused in one line.
#[test]
fn an_apptainer_sif_image_imports_with_its_environment_and_runscript() {
    let Some(f) = Fixture::new() else { return };
    let tree = f.copy_rootfs("sif-tree");
    let env = tree.join(".singularity.d/env");
    std::fs::create_dir_all(&env).unwrap();
    std::fs::write(
        env.join("10-docker2singularity.sh"),
        "#!/bin/sh\nexport PATH=\"/usr/bin:/bin\"\nexport GREETING=\"${GREETING:-\"from docker\"}\"\n",
    )
    .unwrap();
    // As Apptainer writes them: a Docker image's variables, then the definition file's,
    // a shell evaluates in turn.
    std::fs::write(
        env.join("90-environment.sh"),
        "#!/bin/sh\n# Custom environment shell code should follow\nexport GREETING=\"hello sif, $GREETING\"\nexport PATH=\"/opt/app:$PATH\"\n",
    )
    .unwrap();
    let runscript = tree.join(".singularity.d/runscript");
    std::fs::write(&runscript, "#!/bin/sh\necho \"run $* as $(id -un)\"\n").unwrap();
    std::fs::set_permissions(
        &runscript,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let squashfs = std::fs::read(f.squashfs_of(&tree, "sif.sqsh")).unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let path = f.path(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        path.to_str().unwrap().to_string()
    };
    let sif = write("app.sif", sif_of(&squashfs, 1));
    for mode in [Mode::Root, Mode::Rootless] {
        let out = f.berth(mode, &["image", "import", &sif, "--name", "sif:1"]);
        assert!(
            out.ok().starts_with("Imported sif:1 (id "),
            "{}",
            out.stdout
        );
        let run = f.berth(mode, &["run", "sif:1", "a", "b"]);
        assert_eq!(run.ok(), format!("run a b as {}\n", mode.user()));
        let exec = f.berth(
            mode,
            &["exec", "sif:1", "sh", "-c", "echo \"$GREETING|$PATH\""],
        );
        assert_eq!(exec.ok(), "hello sif, from docker|/opt/app:/usr/bin:/bin\n");
    }
    let encrypted = write("secret.sif", sif_of(&squashfs, 5));
    let out = f.berth(Mode::Root, &["image", "import", &encrypted]);
    refused_in_one_line(&out, "its root filesystem is encrypted");
}

/// Apptainer's users run image files as they are: `apptainer exec app.sif CMD`, `singularity
/// run app.sif`, and a sandbox directory. berth imports a file into the store on its first
/// use, and again (in place of the first) once the file changes.
#[test]
fn image_files_and_directories_run_as_apptainer_runs_them() {
    let Some(f) = Fixture::new() else { return };
    let tree = f.path("sandbox");
    std::fs::create_dir(&tree).unwrap();
    for entry in std::fs::read_dir(&f.rootfs).unwrap().flatten() {
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(entry.path())
            .arg(&tree)
            .status()
            .unwrap();
        assert!(copied.success());
    }
    let runscript = tree.join(".singularity.d/runscript");
    std::fs::create_dir_all(runscript.parent().unwrap()).unwrap();
    std::fs::write(&runscript, "#!/bin/sh\necho \"run $*\"\n").unwrap();
    std::fs::set_permissions(
        &runscript,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // A sandbox of the user's own, as `apptainer build --sandbox` leaves one.
    let owned = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", f.user.uid, f.user.gid))
        .arg(&tree)
        .status()
        .unwrap();
    assert!(owned.success());
    let squashfs = std::fs::read(f.squashfs_of(&tree, "app.sqsh")).unwrap();
    let sif = f.path("app.sif");
    std::fs::write(&sif, sif_of(&squashfs, 1)).unwrap();
    std::fs::set_permissions(&sif, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let sif = sif.to_str().unwrap();
    let files = |mode: Mode| -> Vec<String> {
        let out = f.berth(mode, &["image", "ls"]);
        out.ok()
            .lines()
            .filter(|l| l.starts_with("file/app-"))
            .map(String::from)
            .collect()
    };
    for mode in [Mode::Root, Mode::Rootless] {
        let exec = f.berth(
            mode,
            &["as", "apptainer", "exec", sif, "cat", "/etc/hostname"],
        );
        assert!(exec.stderr.contains("importing"), "{}", exec.stderr);
        let run = f.berth(mode, &["as", "singularity", "run", sif, "a", "b"]);
        assert_eq!(run.ok(), "run a b\n", "{mode:?}");
        assert!(
            !run.stderr.contains("importing"),
            "imported once: {}",
            run.stderr
        );
        assert_eq!(files(mode).len(), 1, "{mode:?}");
        let dir = f.berth(
            mode,
            &[
                "exec",
                tree.to_str().unwrap(),
                "sh",
                "-c",
                "id -un; ls /.singularity.d",
            ],
        );
        assert_eq!(
            dir.ok(),
            format!("{}\nrunscript\n", mode.user()),
            "{mode:?}"
        );
    }
    // Named as Apptainer's users name one here: `sbx/`, or `sbx` where the store has none
    // of that name (one that has it runs its own, saying so).
    std::os::unix::fs::symlink(&tree, f.cwd(Mode::Rootless).join("sbx")).unwrap();
    for name in ["sbx/", "sbx"] {
        let dir = f.berth(Mode::Rootless, &["exec", name, "ls", "/.singularity.d"]);
        assert_eq!(dir.ok(), "runscript\n", "{name}");
    }
    f.import(Mode::Rootless);
    f.berth(Mode::Rootless, &["image", "tag", "busybox", "sbx"])
        .ok();
    let both = f.berth(Mode::Rootless, &["exec", "sbx", "ls", "/.singularity.d"]);
    assert!(
        both.code != 0
            && both
                .stderr
                .contains("running the store's (./sbx runs the file)"),
        "{}",
        both.stderr
    );
    // The file changes: imported again, in place of the first.
    std::fs::write(&runscript, "#!/bin/sh\necho changed\n").unwrap();
    let squashfs = std::fs::read(f.squashfs_of(&tree, "app2.sqsh")).unwrap();
    std::fs::write(sif, sif_of(&squashfs, 1)).unwrap();
    for mode in [Mode::Root, Mode::Rootless] {
        let run = f.berth(mode, &["run", sif]);
        assert_eq!(run.ok(), "changed\n", "{mode:?}");
        assert_eq!(files(mode).len(), 1, "{mode:?}: {:?}", files(mode));
    }
    let other = f.berth(Mode::Rootless, &["exec", "library://lab/app", "true"]);
    refused_in_one_line(&other, "library:// is not one of them");
    let missing = f.berth(Mode::Rootless, &["exec", "./missing.sif", "true"]);
    refused_in_one_line(&missing, "cannot find the image file ./missing.sif");
    let roots = f.berth(
        Mode::Rootless,
        &["exec", f.rootfs.to_str().unwrap(), "true"],
    );
    refused_in_one_line(
        &roots,
        "belongs to uid 0: a container of yours runs only a directory of your own",
    );
}

/// `image tag` names an image again; `image rm` of several goes on past one it cannot
/// remove, saying so, as docker rmi does; a name ending as a file's would is the store's
/// where no such file is; a tree with /etc is a root filesystem, whatever else it holds.
#[test]
fn tag_remove_several_and_names_like_files() {
    let Some(f) = Fixture::new() else { return };
    let mode = Mode::Rootless;
    f.import(mode);
    let out = f.berth(mode, &["image", "tag", "busybox", "lab/tools:v1.tar"]);
    assert!(
        out.ok().starts_with("Tagged lab/tools:v1.tar (id "),
        "{}",
        out.stdout
    );
    assert_eq!(
        f.berth(mode, &["exec", "lab/tools:v1.tar", "echo", "ok"])
            .ok(),
        "ok\n"
    );
    let out = f.berth(mode, &["image", "tag", "nosuch", "x:1"]);
    refused_in_one_line(&out, "image 'nosuch' not found");
    let out = f.berth(
        mode,
        &["image", "rm", "nosuch:1", "lab/tools:v1.tar", "nosuch:2"],
    );
    assert_eq!(out.code, 125);
    assert_eq!(out.stdout, "Untagged: lab/tools:v1.tar\n");
    assert_eq!(out.stderr.lines().count(), 2, "{}", out.stderr);
    assert!(out.stderr.contains("'nosuch:1'") && out.stderr.contains("'nosuch:2'"));
    // A store berth makes for a user is theirs alone, made by the first write into it (a
    // look into one not there makes nothing).
    let fresh = f.cwd(mode).join("new/store");
    let listed = f
        .cmd(mode, &["image", "ls"])
        .env("BERTH_STORE", &fresh)
        .status()
        .unwrap();
    assert!(listed.success() && !fresh.exists());
    let small = copy_of_rootfs(&f, "small");
    let imported = f
        .cmd(
            mode,
            &[
                "image",
                "import",
                small.to_str().unwrap(),
                "--name",
                "small",
            ],
        )
        .env("BERTH_STORE", &fresh)
        .status()
        .unwrap();
    assert!(imported.success());
    let made = std::fs::metadata(&fresh).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&made.permissions()) & 0o777,
        0o700
    );
    // A web application's tree, with a manifest.json of its own.
    let tree = copy_of_rootfs(&f, "webapp");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("manifest.json"), r#"{"name":"webapp"}"#).unwrap();
    let tree = tree.to_str().unwrap();
    f.berth(Mode::Root, &["image", "import", tree, "--name", "webapp"])
        .ok();
    assert_eq!(
        f.berth(Mode::Root, &["exec", "webapp", "cat", "/manifest.json"])
            .ok(),
        r#"{"name":"webapp"}"#
    );
}

/// A chroot turned into an image with its /proc and /sys still mounted (debootstrap leaves
/// them so): their mount points are imported, not the running system's files.
#[test]
fn a_tree_with_the_kernels_file_systems_mounted_imports_without_them() {
    let Some(f) = Fixture::new() else { return };
    let tree = copy_of_rootfs(&f, "chroot");
    // Mounted in the import's own mount namespace, made before it execs: nothing of it
    // reaches the host's.
    let mounts: Vec<(std::ffi::CString, std::ffi::CString)> = [("proc", "proc"), ("sysfs", "sys")]
        .iter()
        .map(|(kind, at)| {
            std::fs::create_dir_all(tree.join(at)).unwrap();
            let at = tree.join(at).into_os_string().into_encoded_bytes();
            (
                std::ffi::CString::new(*kind).unwrap(),
                std::ffi::CString::new(at).unwrap(),
            )
        })
        .collect();
    let mut import = f.cmd(
        Mode::Root,
        &[
            "image",
            "import",
            tree.to_str().unwrap(),
            "--name",
            "chroot",
        ],
    );
    // SAFETY: system calls on strings made before the fork, in the child before its exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut import, move || {
            let null = std::ptr::null();
            let private = (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong;
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(null, c"/".as_ptr(), null, private, null as *const _) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (kind, at) in &mounts {
                if libc::mount(
                    kind.as_ptr(),
                    at.as_ptr(),
                    kind.as_ptr(),
                    0,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    let imported = import.output().unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    // The container's own /proc and /sys over the image's mount points, left empty.
    let look = "cat /proc/self/comm; ls -d /sys/kernel";
    assert_eq!(
        f.berth(Mode::Root, &["exec", "chroot", "sh", "-c", look])
            .ok(),
        "cat\n/sys/kernel\n"
    );
    let inspect = f.berth(Mode::Root, &["image", "inspect", "chroot", "--json"]);
    let json: serde_json::Value = serde_json::from_str(inspect.ok()).unwrap();
    let id = json["id"].as_str().unwrap().trim_start_matches("sha256:");
    let unpacked = f.path("store-root").join("rootfs").join(id);
    for at in ["proc", "sys"] {
        let entries = std::fs::read_dir(unpacked.join(at)).unwrap().count();
        assert_eq!(entries, 0, "{at}");
    }
}

/// Whole image files compressed with xz or bzip2 (a root filesystem tarball, a `docker save`
/// piped through bzip2) import through the host's tools; a cut one is refused in one line
/// and leaves nothing.
#[test]
fn xz_and_bzip2_image_files_import() {
    let Some(f) = Fixture::new() else { return };
    let packed = |source: &Path, tool: &str, name: &str| -> String {
        let out = f.path(name);
        let data = std::process::Command::new(tool)
            .arg("-c")
            .stdin(std::fs::File::open(source).unwrap())
            .output()
            .unwrap();
        assert!(data.status.success());
        std::fs::write(&out, data.stdout).unwrap();
        std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        out.to_str().unwrap().to_string()
    };
    let tar = f.path("rootfs.tar");
    let made = std::process::Command::new("tar")
        .arg("-C")
        .arg(&f.rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(made.success());
    let xz = packed(&tar, "xz", "rootfs.tar.xz");
    let archive = packed(
        &docker_archive_of(&f, r#"{"Cmd":["echo","from","the","archive"]}"#),
        "bzip2",
        "app.tar.bz2",
    );
    let bytes = std::fs::read(&xz).unwrap();
    let cut = f.path("cut.tar.xz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::set_permissions(&cut, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for (mode, store) in [(Mode::Root, "store-root"), (Mode::Rootless, "store-user")] {
        f.berth(mode, &["image", "import", &xz, "--name", "xz:1"])
            .ok();
        assert_eq!(
            f.berth(mode, &["exec", "xz:1", "echo", "ok"]).ok(),
            "ok\n",
            "{mode:?}"
        );
        f.berth(mode, &["image", "import", &archive]).ok();
        // Run as a file, imported on first use.
        assert_eq!(
            f.berth(mode, &["run", &archive]).ok(),
            "from the archive\n",
            "{mode:?}"
        );
        let out = f.berth(mode, &["image", "import", cut.to_str().unwrap()]);
        refused_in_one_line(
            &out,
            "cut.tar.xz: corrupt or truncated archive: xz: Unexpected end of input",
        );
        let staging = std::fs::read_dir(f.path(store).join("tmp")).unwrap();
        assert_eq!(staging.count(), 0, "{mode:?}");
    }
}

/// A copy of the fixture's root filesystem, `name` in its directory (owners kept).
fn copy_of_rootfs(f: &Fixture, name: &str) -> PathBuf {
    let tree = f.path(name);
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&f.rootfs)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(copied.success());
    tree
}

/// The fixture's root filesystem as one layer.
fn rootfs_layer(f: &Fixture) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer.append_dir_all(".", &f.rootfs).unwrap();
    layer.into_inner().unwrap()
}

/// A layer of one file `path` holding `data`, mode `mode`.
fn layer_of(path: &str, data: &[u8], mode: u32) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, path, data).unwrap();
    b.into_inner().unwrap()
}

/// `docker save a b`: each image imports, named by its tags, as `docker load` loads them;
/// --name picks one, and a run of the file, which can run only one, says to.
#[test]
fn a_docker_save_of_several_images_imports_each() {
    let Some(f) = Fixture::new() else { return };
    let base = rootfs_layer(&f);
    let host = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let archive = docker_save(
        &f,
        "two.tar",
        &[
            Saved {
                tags: &["lab/a:1"],
                architecture: host,
                config: r#"{"Cmd":["echo","a"]}"#,
                layers: std::slice::from_ref(&base),
            },
            Saved {
                tags: &["lab/b:2", "lab/b:latest"],
                architecture: host,
                config: r#"{"Cmd":["cat","/etc/which"]}"#,
                layers: &[base.clone(), layer_of("etc/which", b"b\n", 0o644)],
            },
        ],
    );
    let archive = archive.to_str().unwrap();
    for mode in [Mode::Root, Mode::Rootless] {
        let out = f.berth(mode, &["image", "import", archive]);
        let lines: Vec<&str> = out.ok().lines().collect();
        assert_eq!(lines.len(), 2, "{mode:?}: {}", out.stdout);
        assert!(lines[0].starts_with("Imported lab/a:1 (id "), "{lines:?}");
        assert!(lines[1].starts_with("Imported lab/b:2 (id "), "{lines:?}");
        assert_eq!(f.berth(mode, &["run", "lab/a:1"]).ok(), "a\n", "{mode:?}");
        assert_eq!(f.berth(mode, &["run", "lab/b:latest"]).ok(), "b\n");
        let out = f.berth(mode, &["image", "import", archive, "--name", "lab/b:2"]);
        assert_eq!(out.ok().lines().count(), 1, "{}", out.stdout);
        let out = f.berth(mode, &["run", archive]);
        assert!(
            out.code == 125
                && out.stderr.contains(
                    "two.tar holds several images (lab/a:1, lab/b:2, lab/b:latest): import them (berth image import "
                ),
            "{}",
            out.stderr
        );
    }
}

/// An image for another architecture imports with a warning, and a program of it that the
/// kernel cannot run says why it most likely cannot.
#[test]
fn an_image_for_another_architecture_is_told() {
    let Some(f) = Fixture::new() else { return };
    let base = rootfs_layer(&f);
    let (host, other) = match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    };
    let archive = docker_save(
        &f,
        "arm.tar",
        &[Saved {
            tags: &["lab/other:1"],
            architecture: other,
            config: "{}",
            layers: &[
                base,
                layer_of("bin/tool", b"\x7fELF\x02\x01\x01garbage", 0o755),
            ],
        }],
    );
    for mode in [Mode::Root, Mode::Rootless] {
        let out = f.berth(mode, &["image", "import", archive.to_str().unwrap()]);
        out.ok();
        assert!(
            out.stderr.contains(&format!(
                "warning: lab/other:1 is an image for linux/{other}, and this machine is linux/{host}"
            )),
            "{mode:?}: {}",
            out.stderr
        );
        let out = f.berth(mode, &["exec", "lab/other:1", "/bin/tool"]);
        assert_eq!(out.code, 126, "{mode:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "(the image is for linux/{other}, this machine is linux/{host})"
            )),
            "{mode:?}: {}",
            out.stderr
        );
    }
}

/// A merged-/usr image (`bin -> usr/bin`) with a layer that adds `bin/hello` runs it, as
/// Docker's does; a symlink pointing at the host's /tmp leads into the image's own.
#[test]
fn layers_write_through_the_images_symlinks_and_stay_inside_it() {
    let Some(f) = Fixture::new() else { return };
    let escape = format!("berth-escape-{}", std::process::id());
    let mut base = tar::Builder::new(Vec::new());
    base.follow_symlinks(false);
    base.append_dir_all("usr", &f.rootfs).unwrap();
    for (name, target) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("esc", "/tmp")] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        base.append_link(&mut h, name, target).unwrap();
    }
    let base = base.into_inner().unwrap();
    let hello = layer_of("bin/hello", b"#!/bin/sh\necho hello from $0\n", 0o755);
    let planted = layer_of(&format!("esc/{escape}"), b"inside", 0o644);
    let archive = archive_with_layers(
        &f,
        "merged.tar",
        r#"{"Cmd":["/bin/hello"],"Env":["PATH=/bin"]}"#,
        &[base, hello, planted],
    );
    for mode in [Mode::Root, Mode::Rootless] {
        let archive = archive.to_str().unwrap();
        f.berth(mode, &["image", "import", archive, "--name", "merged"])
            .ok();
        assert_eq!(
            f.berth(mode, &["run", "merged"]).ok(),
            "hello from /bin/hello\n"
        );
        let look = format!("readlink /bin; ls /usr/bin/hello; ls /tmp/{escape} 2>&1 | head -1");
        let out = f.berth(mode, &["exec", "merged", "sh", "-c", &look]);
        // (The container's /tmp is a fresh tmpfs: the planted file is not there.)
        assert!(
            out.ok().starts_with("usr/bin\n/usr/bin/hello\n"),
            "{mode:?}: {}",
            out.stdout
        );
        assert!(!std::path::Path::new("/tmp").join(&escape).exists());
    }
}

#[test]
fn malicious_layer_is_refused_end_to_end() {
    let Some(f) = Fixture::new() else { return };
    let escape = format!("berth-escape-{}", std::process::id());
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let name = format!("../../../../tmp/{escape}");
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(5);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    layer.append(&h, &b"pwned"[..]).unwrap();
    let archive = archive_with_layers(&f, "evil.tar", "{}", &[layer.into_inner().unwrap()]);
    for mode in [Mode::Root, Mode::Rootless] {
        let out = f.berth(
            mode,
            &[
                "image",
                "import",
                archive.to_str().unwrap(),
                "--name",
                "evil",
            ],
        );
        assert_eq!(out.code, 125, "{mode:?}");
        assert!(
            out.stderr.contains("malicious or corrupt layer 0") && out.stderr.contains("refusing"),
            "{}",
            out.stderr
        );
        assert!(!std::path::Path::new("/tmp").join(&escape).exists());
        assert_eq!(f.berth(mode, &["image", "ls", "--json"]).ok().trim(), "[]");
    }
}

/// A tmpfs of `bytes` at `name` in the fixture's directory (the fixture unmounts it).
fn tmpfs(f: &Fixture, name: &str, bytes: u64) -> PathBuf {
    let dir = f.path(name);
    std::fs::create_dir(&dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "berth-test"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(mounted.success());
    dir
}

/// berth run by root with the image store `store`.
fn root_in(f: &Fixture, store: &Path, args: &[&str]) -> Out {
    Out::from_output(
        f.cmd(Mode::Root, args)
            .env("BERTH_STORE", store)
            .output()
            .unwrap(),
    )
}

/// The size of the busybox image's file in root's store.
fn image_size(f: &Fixture) -> u64 {
    f.import(Mode::Root);
    let image = std::fs::read_dir(f.path("store-root/images"))
        .unwrap()
        .map(|e| e.unwrap().path().join("image.sqfs"))
        .next()
        .unwrap();
    std::fs::metadata(image).unwrap().len()
}

#[test]
fn out_of_disk_is_reported_and_leaves_nothing() {
    let Some(f) = Fixture::new() else { return };
    // Stores on tmpfs too small for the image: almost nothing free, and three quarters of
    // what it needs (tar2sqfs then says only "I/O error", and removes what it wrote).
    let size = image_size(&f);
    assert!(
        size * 3 / 4 > 9 << 17,
        "the image is big enough to tell: {size}"
    );
    for (n, bytes) in [512 << 10, size * 3 / 4].into_iter().enumerate() {
        let small = tmpfs(&f, &format!("small-store-{n}"), bytes);
        let out = root_in(
            &f,
            &small,
            &[
                "image",
                "import",
                f.rootfs.to_str().unwrap(),
                "--name",
                "big",
            ],
        );
        assert_eq!(out.code, 125, "{bytes}");
        assert!(
            out.stderr
                .contains("no space left on the device holding the image store"),
            "{bytes}: {}",
            out.stderr
        );
        assert_eq!(std::fs::read_dir(small.join("images")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(small.join("tmp")).unwrap().count(), 0);
    }
}

#[test]
fn root_mounts_the_squashfs_file_when_there_is_no_room_to_unpack_it() {
    let Some(f) = Fixture::new() else { return };
    // A store with room for the image's file, not for its unpacked copy too (about 1.5 times
    // its size).
    let store = tmpfs(&f, "tight-store", image_size(&f) + (256 << 10));
    // The image imported elsewhere (importing needs room to spare), its files copied.
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(f.path("store-root/images"))
        .arg(f.path("store-root/refs.json"))
        .arg(&store)
        .status()
        .unwrap();
    assert!(copied.success());
    let out = root_in(&f, &store, &["exec", "busybox", "echo", "ran"]);
    assert_eq!(out.ok(), "ran\n");
    assert!(
        out.stderr.contains("no space left") && out.stderr.contains("unpacked copy cannot be made"),
        "{}",
        out.stderr
    );
    // No half-made copy, nothing in staging, no mount left.
    for dir in ["rootfs", "tmp"] {
        assert_eq!(
            std::fs::read_dir(store.join(dir)).unwrap().count(),
            0,
            "{dir}"
        );
    }
    assert!(host_mounts_with(store.join("images").to_str().unwrap()).is_empty());
}
