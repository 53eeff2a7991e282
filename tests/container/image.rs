//! `berth image`: import, list, inspect, remove; and the errors users see.

use crate::support::*;
use std::path::PathBuf;

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
        let rm = f.berth(mode, &["image", "rm", "tools:1"]);
        assert_eq!(rm.ok(), format!("Deleted: {id}\n"));
        assert_eq!(f.berth(mode, &["image", "ls", "--json"]).ok().trim(), "[]");
    }
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_125() {
    let Some(f) = Fixture::new() else { return };
    let garbage = f.path("garbage.tar");
    std::fs::write(&garbage, "this is not an image").unwrap();
    let cases: [(&[&str], &str); 4] = [
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
            "not a tar archive",
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
        let out = f.berth(Mode::Root, args);
        assert_eq!(out.code, 125, "{args:?}");
        assert!(
            out.stderr.starts_with("berth: ") && out.stderr.contains(message),
            "{args:?}: {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

/// enroot's and pyxis's images: a squashfs file imports as a root filesystem, with the
/// variables enroot keeps in its /etc/environment; a damaged one is refused in one line and
/// leaves nothing.
#[test]
fn a_squashfs_file_imports_with_its_environment() {
    let Some(f) = Fixture::new() else { return };
    let tree = f.path("enroot-tree");
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&f.rootfs)
        .arg(&tree)
        .status()
        .unwrap()
        .success());
    std::fs::write(
        tree.join("etc/environment"),
        "PATH=/usr/local/bin:/usr/bin:/bin\nexport FOO=\"bar baz\"\n# a comment\n",
    )
    .unwrap();
    let sqsh = f.path("app.sqsh");
    let packed = std::process::Command::new("gensquashfs")
        .arg("--pack-dir")
        .arg(&tree)
        .arg(&sqsh)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(packed.success());
    std::fs::set_permissions(&sqsh, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
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
            format!(
                "bar baz|/usr/local/bin:/usr/bin:/bin\n{}\n",
                match mode {
                    Mode::Root => "root",
                    _ => TEST_USER,
                }
            )
        );
    }
    // Cut short: sqfs2tar's own reason, in one line.
    let bytes = std::fs::read(&sqsh).unwrap();
    let damaged = f.path("damaged.sqsh");
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    let out = f.berth(Mode::Root, &["image", "import", damaged.to_str().unwrap()]);
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.contains("not a squashfs file berth can read"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let ls = f.berth(Mode::Root, &["image", "ls"]);
    assert_eq!(ls.ok().lines().count(), 2, "only sq:1: {}", ls.stdout);
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

#[test]
fn out_of_disk_is_reported_and_leaves_nothing() {
    let Some(f) = Fixture::new() else { return };
    // A store on a 512 KiB tmpfs: the 1.4 MB busybox image cannot fit.
    let small = f.path("small-store");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "berth-test"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    let out = f
        .cmd(
            Mode::Root,
            &[
                "image",
                "import",
                f.rootfs.to_str().unwrap(),
                "--name",
                "big",
            ],
        )
        .env("BERTH_STORE", &small)
        .output()
        .unwrap();
    let out = Out::from_output(out);
    assert_eq!(out.code, 125);
    assert!(
        out.stderr
            .contains("no space left on the device holding the image store"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(small.join("images")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(small.join("tmp")).unwrap().count(), 0);
}
