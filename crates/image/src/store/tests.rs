//! The store end to end: real tar2sqfs and rdsquashfs, archives built by hand.

use super::*;
use crate::flatten::tests::{layer_bytes, E};

fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn config_for(layers: &[&[u8]], env: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": [env], "Cmd": ["/bin/sh"], "WorkingDir": "/work"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap()
}

/// A `docker save` archive of two layers, the second deleting a file of the first.
fn docker_archive(dir: &Path) -> (PathBuf, Digest) {
    let l1 = layer_bytes(&[
        E::Dir("etc/"),
        E::File("etc/motd", "hello"),
        E::File("etc/old", "x"),
    ]);
    let l2 = layer_bytes(&[E::File("etc/.wh.old", ""), E::File("etc/new", "new")]);
    let config = config_for(&[&l1, &l2], "A=1");
    let id = Digest::of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{}.json", id.hex()), "RepoTags": ["lab/app:1"], "Layers": ["l1/layer.tar", "l2/layer.tar"]
    }]))
    .unwrap();
    let config_name = format!("{}.json", id.hex());
    let archive = tar_of(&[
        ("manifest.json", &manifest),
        (&config_name, &config),
        ("l1/layer.tar", &l1),
        ("l2/layer.tar", &l2),
    ]);
    let path = dir.join("app.tar");
    std::fs::write(&path, archive).unwrap();
    (path, id)
}

/// An OCI image layout directory with one gzip layer.
fn oci_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let plain = layer_bytes(&[E::Dir("bin/"), E::File("bin/tool", "#!/bin/sh\n")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let config = config_for(&[&plain], "B=2");
    let put = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        d
    };
    let (layer_d, config_d) = (put(&gz), put(&config));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": gz.len()}]
    }))
    .unwrap();
    let manifest_d = put(&manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_d, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "tools:2"}
    }]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn staging_is_empty(store: &Store) -> bool {
    std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none()
}

/// A store is made on disk by the first write to it, not by a look into it that finds
/// nothing (a failed `berth exec` leaves no empty store behind).
#[test]
fn a_store_is_made_by_its_first_write() {
    let (dir, store) = store();
    assert!(store.resolve("lab/app:1").is_err());
    assert!(store.list().unwrap().is_empty());
    assert!(store.prune(|_| None).unwrap().is_empty());
    assert!(!store.root().exists());
    let (path, _) = docker_archive(dir.path());
    store.import(&path, &ImportOptions::default()).unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn docker_archive_imports_flattened_and_runs_from_a_directory() {
    let (dir, store) = store();
    let (path, id) = docker_archive(dir.path());
    let record = store.import(&path, &ImportOptions::default()).unwrap();
    assert_eq!(record.id, id);
    assert_eq!(record.names, vec!["lab/app:1"]);
    assert_eq!(record.layers, 2);
    assert_eq!(record.config.env, vec!["A=1"]);
    assert_eq!(record.config.working_dir.as_deref(), Some("/work"));
    assert!(store.squashfs(&record).is_file());
    assert!(staging_is_empty(&store));

    let rootfs = store.rootfs_dir(&record).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
        "hello"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/new")).unwrap(),
        "new"
    );
    assert!(!rootfs.join("etc/old").exists());

    // The squashfs file's digest, recorded at import; for an image recorded without one
    // (imported by an older berth), computed and recorded when first asked for.
    let file_digest = Digest::of(&std::fs::read(store.squashfs(&record)).unwrap());
    assert_eq!(record.squashfs_digest.as_ref(), Some(&file_digest));
    let meta = store.root().join("images").join(id.hex()).join("meta.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    doc.as_object_mut().unwrap().remove("squashfs_digest");
    std::fs::write(&meta, serde_json::to_vec(&doc).unwrap()).unwrap();
    let older = store.resolve("lab/app:1").unwrap();
    assert_eq!(older.squashfs_digest, None);
    assert_eq!(store.squashfs_digest(&older).unwrap(), file_digest);
    assert_eq!(
        store.resolve("lab/app:1").unwrap().squashfs_digest,
        Some(file_digest)
    );

    assert_eq!(store.resolve("lab/app:1").unwrap().id, id);
    assert_eq!(store.resolve(&id.hex()[..8]).unwrap().id, id);
    assert_eq!(store.resolve(id.as_str()).unwrap().id, id);
    // By the id's digits alone, read directly: not by a prefix or a name.
    assert_eq!(store.by_id(id.hex()).unwrap().names, vec!["lab/app:1"]);
    assert!(store.has(id.hex()));
    for not_an_id in [&id.hex()[..8], "lab/app:1", id.as_str()] {
        assert!(matches!(
            store.by_id(not_an_id),
            Err(ImageError::NotFound(_))
        ));
        assert!(!store.has(not_an_id));
    }
    assert!(matches!(
        store.resolve("lab/app:2"),
        Err(ImageError::NotFound(_))
    ));
    assert!(matches!(
        store.resolve("lab/app"),
        Err(ImageError::NotFound(_))
    ));
}

#[test]
fn oci_layout_directory_and_archive() {
    let (dir, store) = store();
    let layout = oci_layout(dir.path());
    let record = store.import(&layout, &ImportOptions::default()).unwrap();
    assert_eq!(record.names, vec!["tools:2"]);
    assert_eq!(record.config.env, vec!["B=2"]);
    let rootfs = store.rootfs_dir(&record).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("bin/tool")).unwrap(),
        "#!/bin/sh\n"
    );

    // The same layout as a tar archive, renamed on import: same image id.
    let tar_path = dir.path().join("layout.tar");
    let mut b = tar::Builder::new(File::create(&tar_path).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.into_inner().unwrap().flush().unwrap();
    let again = store
        .import(
            &tar_path,
            &ImportOptions {
                name: Some("copy".into()),
            },
        )
        .unwrap();
    assert_eq!(again.id, record.id);
    assert_eq!(again.names, vec!["copy:latest", "tools:2"]);
    assert_eq!(store.list().unwrap().len(), 1);
    // Without its oci-layout file, a layout still: its blobs say so.
    std::fs::remove_file(layout.join("oci-layout")).unwrap();
    let bare = store.import(&layout, &ImportOptions::default()).unwrap();
    assert_eq!(bare.id, record.id);
}

/// Names as Docker writes them: Docker 25's `docker save` (an OCI layout whose index.json
/// has only the tag, and a manifest.json naming the image in full, `docker.io/...`),
/// containerd's annotation, and a layout listing one name per platform. Each is found by
/// the name users type.
#[test]
fn names_as_docker_and_containerd_write_them() {
    let (dir, store) = store();
    let layout = oci_layout(dir.path());
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifest = index["manifests"][0].clone();
    let manifest_blob = format!(
        "blobs/sha256/{}",
        &manifest["digest"].as_str().unwrap()[7..]
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join(&manifest_blob)).unwrap()).unwrap();
    let blob = |d: &serde_json::Value| format!("blobs/sha256/{}", &d.as_str().unwrap()[7..]);
    // containerd's full name wins over the bare tag.
    index["manifests"][0]["annotations"] = serde_json::json!({
        "io.containerd.image.name": "docker.io/library/tools:2",
        "org.opencontainers.image.ref.name": "2"
    });
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let record = store.import(&layout, &ImportOptions::default()).unwrap();
    assert_eq!(record.names, vec!["tools:2"]);
    assert_eq!(
        store.resolve("docker.io/library/tools:2").unwrap().id,
        record.id
    );
    // Docker 25: with a manifest.json of RepoTags (two tags of one image, one entry).
    let legacy = serde_json::json!([{
        "Config": blob(&m["config"]["digest"]),
        "RepoTags": ["docker.io/lab/app:1", "lab/app:latest"],
        "Layers": [blob(&m["layers"][0]["digest"])]
    }]);
    std::fs::write(layout.join("manifest.json"), legacy.to_string()).unwrap();
    let record = store
        .import_all(&layout, &ImportOptions::default())
        .unwrap();
    assert_eq!(record.len(), 1);
    assert!(record[0].names.contains(&"lab/app:1".to_string()));
    assert_eq!(store.resolve("lab/app").unwrap().id, record[0].id);
    let picked = ImportOptions {
        name: Some("lab/app:1".into()),
    };
    assert_eq!(store.import(&layout, &picked).unwrap().id, record[0].id);
    std::fs::remove_file(layout.join("manifest.json")).unwrap();
    // One name, one manifest per platform: this machine's.
    let mut other = manifest.clone();
    other["digest"] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    other["platform"] = serde_json::json!({"os": "linux", "architecture": "s390x"});
    let mut ours = manifest;
    ours["platform"] = serde_json::json!({"os": "linux", "architecture": crate::host_arch()});
    index["manifests"] = serde_json::json!([other, ours]);
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    for name in [None, Some("tools:2".to_string())] {
        let options = ImportOptions { name };
        assert_eq!(store.import(&layout, &options).unwrap().id, record[0].id);
    }
}

#[test]
fn rootfs_directory_and_tarball() {
    let (dir, store) = store();
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/hello"), "hi").unwrap();
    std::os::unix::fs::symlink("hello", root.join("bin/hi")).unwrap();
    std::fs::hard_link(root.join("bin/hello"), root.join("bin/hello2")).unwrap();
    let a = store
        .import(
            &root,
            &ImportOptions {
                name: Some("mytools:1".into()),
            },
        )
        .unwrap();
    let b = store
        .import(
            &root,
            &ImportOptions {
                name: Some("mytools:1".into()),
            },
        )
        .unwrap();
    assert_eq!(
        a.id, b.id,
        "importing the same tree twice gives the same id"
    );
    let rootfs = store.rootfs_dir(&a).unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("bin/hi")).unwrap(),
        "hi"
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/hi")).unwrap(),
        Path::new("hello")
    );

    let tgz = dir.path().join("rootfs.tar.gz");
    let gz =
        flate2::write::GzEncoder::new(File::create(&tgz).unwrap(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    b.append_dir_all(".", &root).unwrap();
    b.into_inner().unwrap().finish().unwrap();
    let c = store
        .import(
            &tgz,
            &ImportOptions {
                name: Some("fromtar".into()),
            },
        )
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(store.rootfs_dir(&c).unwrap().join("bin/hello2")).unwrap(),
        "hi"
    );
}

#[test]
fn tampered_or_truncated_archives_leave_nothing_behind() {
    let (dir, store) = store();
    let (path, _) = docker_archive(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a byte inside the first layer's file data ("hello" -> "jello").
    let at = bytes.windows(5).position(|w| w == b"hello").unwrap();
    bytes[at] = b'j';
    let tampered = dir.path().join("tampered.tar");
    std::fs::write(&tampered, &bytes).unwrap();
    let err = store
        .import(&tampered, &ImportOptions::default())
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");

    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = store
        .import(&truncated, &ImportOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, b"this is not an archive").unwrap();
    let err = store
        .import(&garbage, &ImportOptions::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("not an image berth can import"),
        "{err}"
    );

    assert!(store.list().unwrap().is_empty());
    assert!(staging_is_empty(&store));
}

#[test]
fn leftovers_of_a_killed_import_are_invisible_and_cleaned() {
    let (dir, store) = store();
    // What a `kill -9` mid-import leaves: a staging directory of a dead process.
    let stale = store.root().join("tmp/4194303-1");
    std::fs::create_dir_all(stale.join("image")).unwrap();
    std::fs::write(stale.join("image/image.sqfs"), b"partial").unwrap();
    assert!(store.list().unwrap().is_empty());
    let (path, _) = docker_archive(dir.path());
    store.import(&path, &ImportOptions::default()).unwrap();
    assert!(!stale.exists());
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn concurrent_imports_of_one_image_make_one_good_copy() {
    let (dir, store) = store();
    let (path, id) = docker_archive(dir.path());
    let store = std::sync::Arc::new(store);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (store, path) = (store.clone(), path.clone());
            std::thread::spawn(move || store.import(&path, &ImportOptions::default()).unwrap().id)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), id);
    }
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(staging_is_empty(&store));
    let rootfs = store
        .rootfs_dir(&store.resolve("lab/app:1").unwrap())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
        "hello"
    );
}

#[test]
fn remove_and_prune() {
    let (dir, store) = store();
    let (path, id) = docker_archive(dir.path());
    store.import(&path, &ImportOptions::default()).unwrap();
    store
        .import(
            &path,
            &ImportOptions {
                name: Some("other:tag".into()),
            },
        )
        .unwrap();
    store
        .rootfs_dir(&store.resolve("other:tag").unwrap())
        .unwrap();
    // Removing one of two names keeps the image.
    assert!(store.remove("other:tag", |_| None).unwrap().is_empty());
    assert_eq!(store.resolve(id.short()).unwrap().names, vec!["lab/app:1"]);
    // Not while a running container uses it (the caller says which): nothing changes.
    let busy = |r: &ImageRecord| Some(format!("process 42, from {}", r.id.short()));
    let e = store.remove("lab/app:1", busy).unwrap_err().to_string();
    assert!(
        e.contains("image 'lab/app:1' is in use by a running container (process 42, from "),
        "{e}"
    );
    assert_eq!(store.resolve(id.short()).unwrap().names, vec!["lab/app:1"]);
    // Untagged all the same (rm --force): the image stays, nameless, until pruned.
    store.tag("lab/app:1", "used:1").unwrap();
    store.untag("used:1").unwrap();
    assert!(store.untag("used:1").is_err());
    assert_eq!(store.resolve(id.short()).unwrap().names, vec!["lab/app:1"]);
    // Removing the last name deletes it, unpacked copy included.
    assert_eq!(
        store.remove("lab/app:1", |_| None).unwrap(),
        vec![id.clone()]
    );
    assert!(store.list().unwrap().is_empty());
    assert!(!store.root().join("rootfs").join(id.hex()).exists());

    // An image with no name is pruned.
    let root = dir.path().join("r");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("f"), "x").unwrap();
    let unnamed = store.import(&root, &ImportOptions::default()).unwrap();
    assert!(unnamed.names.is_empty());
    assert!(store
        .prune(|_| Some("process 42".into()))
        .unwrap()
        .is_empty());
    assert_eq!(store.prune(|_| None).unwrap(), vec![unnamed.id]);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_mirror_copies_images_checked_and_follows_their_names() {
    let (dir, leader) = store();
    let mirror = Store::open(dir.path().join("mirror")).unwrap();
    let (path, id) = docker_archive(dir.path());
    let record = leader.import(&path, &ImportOptions::default()).unwrap();
    let config = leader.config_json(&record).unwrap();
    let copy = |to: &Path| {
        std::fs::copy(leader.squashfs(&record), to)
            .map(drop)
            .map_err(|e| e.to_string())
    };

    // A config that is not the image's, or a fetch that fails, leaves nothing.
    let e = mirror.add_copy(&record, b"{}", "leader", copy).unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    let e = mirror
        .add_copy(&record, &config, "http://leader", |_| {
            Err("the transfer broke off".into())
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "http://leader: the transfer broke off");
    let unchecked = ImageRecord {
        squashfs_digest: None,
        ..record.clone()
    };
    assert!(mirror
        .add_copy(&unchecked, &config, "leader", copy)
        .is_err());
    assert!(mirror.list().unwrap().is_empty());
    assert!(staging_is_empty(&mirror));

    // A good copy: the same image, named as the leader names it, runnable.
    mirror.add_copy(&record, &config, "leader", copy).unwrap();
    assert!(staging_is_empty(&mirror));
    let names = |pairs: &[(&str, &Digest)]| -> BTreeMap<String, Digest> {
        pairs
            .iter()
            .map(|(n, d)| (n.to_string(), (*d).clone()))
            .collect()
    };
    // The mirror's own image and name, and a name the leader has for an image not copied yet.
    let own = dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::fs::write(own.join("f"), "x").unwrap();
    let own = mirror
        .import(
            &own,
            &ImportOptions {
                name: Some("mine:1".into()),
            },
        )
        .unwrap();
    let missing = Digest::of(b"not copied");
    let none = BTreeMap::new();
    assert!(mirror
        .mirror_names(&names(&[("lab/app:1", &id), ("later:1", &missing)]), &none)
        .unwrap()
        .is_empty());
    let copied = mirror.resolve("lab/app:1").unwrap();
    assert_eq!((&copied.id, &copied.config), (&id, &record.config));
    assert_eq!(copied.squashfs_digest, record.squashfs_digest);
    assert!(matches!(
        mirror.resolve("later:1"),
        Err(ImageError::NotFound(_))
    ));
    assert_eq!(
        std::fs::read_to_string(mirror.rootfs_dir(&copied).unwrap().join("etc/new")).unwrap(),
        "new"
    );
    // Copying it again changes nothing; nor does following the same names (not even the
    // files: a standby looks every few seconds).
    mirror
        .add_copy(&record, &config, "leader", |_| Err("not again".into()))
        .unwrap();
    let inode = |name: &str| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(mirror.root().join(name)).unwrap())
    };
    let files = (inode("refs.json"), inode("mirrored.json"));
    mirror
        .mirror_names(&names(&[("lab/app:1", &id), ("later:1", &missing)]), &none)
        .unwrap();
    assert_eq!((inode("refs.json"), inode("mirrored.json")), files);

    // Renamed on the leader: renamed here. Removed there: removed here, the image with it;
    // the mirror's own name stays.
    mirror
        .mirror_names(&names(&[("lab/app:2", &id)]), &none)
        .unwrap();
    assert_eq!(mirror.resolve(id.short()).unwrap().names, vec!["lab/app:2"]);
    assert_eq!(
        mirror.mirror_names(&names(&[]), &none).unwrap(),
        vec![id.clone()]
    );
    let left: Vec<Digest> = mirror.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec![own.id.clone()]);
    assert_eq!(mirror.resolve("mine:1").unwrap().id, own.id);
    // A name of its own the leader removed before this store took the image in stays (it
    // was taken again here since); one removed after goes, the image with it.
    let at = |when: u64| BTreeMap::from([("mine:1".to_string(), when)]);
    assert!(mirror
        .mirror_names(&names(&[]), &at(own.imported - 1))
        .unwrap()
        .is_empty());
    assert_eq!(mirror.resolve("mine:1").unwrap().id, own.id);
    assert_eq!(
        mirror
            .mirror_names(&names(&[]), &at(own.imported + 1))
            .unwrap(),
        vec![own.id.clone()]
    );
    assert!(mirror.list().unwrap().is_empty());
}
