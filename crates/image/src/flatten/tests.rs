//! Layer flattening, including hand-crafted malicious layers.

use super::*;
use std::collections::BTreeMap;

/// One tar entry for a hand-built layer. Names are written into the header raw, so tests can
/// build entries that the `tar` crate's safe API would refuse (`..`, absolute paths).
pub enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    CharDev(&'a str),
}

pub fn layer_bytes(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, kind, data, link): (&str, EntryType, &str, &str) = match *e {
            E::Dir(n) => (n, EntryType::Directory, "", ""),
            E::File(n, d) => (n, EntryType::Regular, d, ""),
            E::Symlink(n, t) => (n, EntryType::Symlink, "", t),
            E::Hardlink(n, t) => (n, EntryType::Link, "", t),
            E::CharDev(n) => (n, EntryType::Char, "", ""),
        };
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    Dir,
    File(String),
    Symlink(String),
    Hardlink(String),
    Fifo,
}

pub fn read_tar(bytes: &[u8]) -> BTreeMap<String, Out> {
    let mut map = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let link = || String::from_utf8(entry.link_name_bytes().unwrap().into_owned()).unwrap();
        let out = match entry.header().entry_type() {
            EntryType::Directory => Out::Dir,
            EntryType::Symlink => Out::Symlink(link()),
            EntryType::Link => Out::Hardlink(link()),
            EntryType::Fifo => Out::Fifo,
            _ => {
                let mut s = String::new();
                entry.read_to_string(&mut s).unwrap();
                Out::File(s)
            }
        };
        assert!(
            map.insert(path.clone(), out).is_none(),
            "{path} written twice"
        );
    }
    map
}

/// Each layer written as `layerN.tar` in `dir`.
fn write_layers(dir: &Path, layers: &[&[E]]) -> Vec<Layer> {
    layers
        .iter()
        .enumerate()
        .map(|(i, entries)| {
            let path = dir.join(format!("layer{i}.tar"));
            std::fs::write(&path, layer_bytes(entries)).unwrap();
            Layer::file(path)
        })
        .collect()
}

fn run(layers: &[&[E]]) -> Result<(BTreeMap<String, Out>, FlattenStats), ImageError> {
    let dir = tempfile::tempdir().unwrap();
    let files = write_layers(dir.path(), layers);
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    // Both algorithms must agree; the fast one may decline (and then the other must work).
    let mut slow = Vec::new();
    let slow_stats = flatten_two_pass(&files, &spool, &mut slow);
    let mut fast = Vec::new();
    match flatten(&files, &spool, &mut fast) {
        Err(ImageError::NeedsTwoPasses) => {}
        Ok(stats) => {
            let slow_stats = slow_stats
                .as_ref()
                .expect("the two-pass algorithm accepts what the fast one does");
            assert_eq!(
                read_tar(&fast),
                read_tar(&slow),
                "fast and two-pass flattening disagree"
            );
            assert_eq!(
                (stats.entries, stats.devices_dropped),
                (slow_stats.entries, slow_stats.devices_dropped)
            );
        }
        Err(e) => assert_eq!(e.to_string(), slow_stats.as_ref().unwrap_err().to_string()),
    }
    let stats = slow_stats?;
    Ok((read_tar(&slow), stats))
}

/// Whether the single-read fast path takes these layers.
fn fast_path_accepts(layers: &[&[E]]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let files = write_layers(dir.path(), layers);
    !matches!(
        flatten(&files, dir.path(), &mut Vec::new()),
        Err(ImageError::NeedsTwoPasses)
    )
}

#[test]
fn fast_path_declines_a_top_layer_that_rewrites_itself() {
    assert!(fast_path_accepts(&[
        &[E::File("a", "1")],
        &[E::File("a", "2"), E::Hardlink("b", "a")]
    ]));
    assert!(fast_path_accepts(&[
        &[E::Dir("d/"), E::File("d/x", "1")],
        &[E::File("d/y", "2"), E::Dir("d/")]
    ]));
    assert!(!fast_path_accepts(&[&[
        E::File("a", "1"),
        E::File("a", "2")
    ]]));
    assert!(!fast_path_accepts(&[&[
        E::Dir("d/"),
        E::File("d/x", "1"),
        E::File("d", "file now")
    ]]));
    assert!(!fast_path_accepts(&[&[
        E::File("a", "1"),
        E::File("a/b", "under a file")
    ]]));
    // And the two-pass result is what tar extraction would give: the later entry wins.
    let (tree, _) = run(&[&[E::File("a", "1"), E::File("a", "2")]]).unwrap();
    assert_eq!(tree.get("a"), Some(&file("2")));
}

#[test]
fn top_layer_hardlink_to_a_lower_file() {
    let (tree, _) = run(&[
        &[E::File("lib/real", "so")],
        &[
            E::Hardlink("lib/alias", "lib/real"),
            E::File("lib/other", "x"),
        ],
    ])
    .unwrap();
    assert_eq!(
        tree.get("lib/alias"),
        Some(&Out::Hardlink("lib/real".into()))
    );
    assert_eq!(tree.get("lib/real"), Some(&file("so")));
}

fn file(s: &str) -> Out {
    Out::File(s.to_string())
}

#[test]
fn later_layers_replace_and_whiteouts_remove() {
    let (tree, stats) = run(&[
        &[
            E::Dir("etc/"),
            E::File("etc/a", "1"),
            E::File("etc/b", "1"),
            E::Dir("var/"),
            E::File("var/log", "x"),
        ],
        &[
            E::File("etc/a", "2"),
            E::File("etc/.wh.b", ""),
            E::File(".wh.var", ""),
        ],
    ])
    .unwrap();
    assert_eq!(tree.get("etc/a"), Some(&file("2")));
    assert!(!tree.contains_key("etc/b"));
    assert!(!tree.contains_key("var") && !tree.contains_key("var/log"));
    assert!(!tree.keys().any(|k| k.contains(".wh.")));
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.diff_ids.len(), 2);
}

#[test]
fn the_mount_points_an_image_lacks_are_added_and_its_own_kept() {
    let (tree, _) = run(&[
        &[
            E::Dir("etc/"),
            E::File("etc/hosts", "mine"),
            E::File("dev", "not a dir"),
        ],
        &[E::Symlink("tmp", "var/tmp"), E::File(".wh.etc", "")],
        &[E::Symlink("etc", "usr/etc"), E::Dir(".berth/")],
    ])
    .unwrap();
    // The image's own stay as they are; nothing is made under what is not a directory.
    assert_eq!(tree.get("dev"), Some(&file("not a dir")));
    assert_eq!(tree.get("tmp"), Some(&Out::Symlink("var/tmp".into())));
    assert_eq!(tree.get("etc"), Some(&Out::Symlink("usr/etc".into())));
    assert!(!tree.keys().any(|k| k.starts_with("etc/")), "{tree:?}");
    // The rest are made.
    for dir in [
        "proc",
        "sys",
        ".berth/bin",
        ".berth/job",
        ".berth/lib/0",
        ".berth/gpu/lib",
    ] {
        assert_eq!(tree.get(dir), Some(&Out::Dir), "{dir}");
    }
    assert_eq!(tree.get(".berth/libexec/berth"), Some(&file("")));
}

#[test]
fn an_opaque_root_hides_every_lower_layer() {
    let (tree, _) = run(&[
        &[E::Dir("bin/"), E::File("bin/sh", "s"), E::File("top", "t")],
        &[E::File(".wh..wh..opq", ""), E::File("new", "n")],
    ])
    .unwrap();
    assert_eq!(tree.get("new"), Some(&file("n")));
    // (The mount points berth adds to every image are there again.)
    for hidden in ["bin", "bin/sh", "top"] {
        assert!(!tree.contains_key(hidden), "{hidden}");
    }
}

#[test]
fn opaque_directory_hides_lower_content_only() {
    let (tree, _) = run(&[
        &[
            E::Dir("opt/"),
            E::File("opt/old", "o"),
            E::Dir("opt/sub/"),
            E::File("opt/sub/x", "x"),
        ],
        &[E::File("opt/new", "n"), E::File("opt/.wh..wh..opq", "")],
    ])
    .unwrap();
    assert_eq!(tree.get("opt/new"), Some(&file("n")));
    assert!(
        !tree.contains_key("opt/old")
            && !tree.contains_key("opt/sub/x")
            && !tree.contains_key("opt/sub")
    );
}

#[test]
fn whiteout_in_same_layer_does_not_hide_that_layers_file() {
    // OCI: whiteouts apply to lower layers only.
    let (tree, _) = run(&[
        &[E::File("a", "lower")],
        &[E::Dir("a/"), E::File("a/new", "n"), E::File(".wh.a", "")],
    ])
    .unwrap();
    assert_eq!(tree.get("a"), Some(&Out::Dir));
    assert_eq!(tree.get("a/new"), Some(&file("n")));
}

#[test]
fn dot_dot_is_refused() {
    let err = run(&[&[E::File("../../etc/evil", "pwned")]]).unwrap_err();
    assert!(
        matches!(err, ImageError::BadLayer { layer: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(".."), "{err}");
    let err = run(&[&[E::File("a", "1")], &[E::File("usr/../../x", "pwned")]]).unwrap_err();
    assert!(
        matches!(err, ImageError::BadLayer { layer: 1, .. }),
        "{err}"
    );
    let err = run(&[&[E::File("a", "1"), E::Hardlink("b", "../../etc/shadow")]]).unwrap_err();
    assert!(err.to_string().contains("hardlink"), "{err}");
}

#[test]
fn absolute_paths_stay_inside_the_root() {
    let (tree, _) =
        run(&[&[E::File("/etc/evil", "inside"), E::File("//./bin//sh", "sh")]]).unwrap();
    assert_eq!(tree.get("etc/evil"), Some(&file("inside")));
    assert_eq!(tree.get("bin/sh"), Some(&file("sh")));
}

#[test]
fn a_symlink_planted_in_a_lower_layer_leads_inside_the_root_only() {
    let (tree, _) = run(&[
        &[E::Symlink("evil", "/etc"), E::Symlink("up", "../../..")],
        &[
            E::File("evil/passwd", "root::0:0::/:/bin/sh"),
            E::File("up/tmp/x", "x"),
        ],
    ])
    .unwrap();
    // As the container resolves them: /etc and the root are the image's own.
    assert_eq!(tree.get("etc/passwd"), Some(&file("root::0:0::/:/bin/sh")));
    assert_eq!(tree.get("tmp/x"), Some(&file("x")));
    assert_eq!(tree.get("evil"), Some(&Out::Symlink("/etc".into())));
    assert!(!tree.contains_key("evil/passwd"));
}

#[test]
fn a_symlink_planted_earlier_in_the_same_layer_leads_inside_the_root_only() {
    let (tree, _) = run(&[&[
        E::Symlink("up", "../../.."),
        E::File("up/tmp/x", "x"),
        E::Symlink("ok", "usr/bin"),
    ]])
    .unwrap();
    assert_eq!(tree.get("tmp/x"), Some(&file("x")));
    assert_eq!(tree.get("up"), Some(&Out::Symlink("../../..".into())));
    // A symlink nobody writes through is kept verbatim: it is resolved inside the container.
    assert_eq!(tree.get("ok"), Some(&Out::Symlink("usr/bin".into())));
}

/// A merged-/usr image (`bin -> usr/bin`, `lib -> usr/lib`) and a layer that adds, removes
/// and links files by their /bin and /lib paths, without entries for those directories:
/// the changes land in /usr, and the symlinks stay, as Docker applies such a layer.
#[test]
fn layers_write_through_the_images_symlinked_directories() {
    let (tree, _) = run(&[
        &[
            E::Dir("usr"),
            E::Dir("usr/bin"),
            E::Dir("usr/lib"),
            E::File("usr/bin/sh", "sh"),
            E::File("usr/bin/old", "old"),
            E::File("usr/lib/libc.so", "libc"),
            E::Symlink("bin", "usr/bin"),
            E::Symlink("lib", "/usr/lib"),
            E::Dir("opt"),
            E::Symlink("opt/tools", "../usr/lib"),
        ],
        &[
            E::File("bin/hello", "hello"),
            E::File("bin/.wh.old", ""),
            E::Hardlink("lib/libc.so.6", "lib/libc.so"),
            E::File("opt/tools/sub/x", "x"),
        ],
    ])
    .unwrap();
    assert_eq!(tree.get("bin"), Some(&Out::Symlink("usr/bin".into())));
    assert_eq!(tree.get("lib"), Some(&Out::Symlink("/usr/lib".into())));
    assert_eq!(tree.get("usr/bin/hello"), Some(&file("hello")));
    assert_eq!(tree.get("usr/bin/sh"), Some(&file("sh")));
    assert!(!tree.contains_key("usr/bin/old"));
    assert_eq!(
        tree.get("usr/lib/libc.so.6"),
        Some(&Out::Hardlink("usr/lib/libc.so".into()))
    );
    assert_eq!(tree.get("usr/lib/sub/x"), Some(&file("x")));
    assert!(tree
        .keys()
        .all(|k| !k.starts_with("bin/") && !k.starts_with("lib/")));
    // An opaque directory marker through a symlink hides that directory's lower files.
    let (tree, _) = run(&[
        &[
            E::Dir("usr/bin"),
            E::File("usr/bin/sh", "sh"),
            E::Symlink("bin", "usr/bin"),
        ],
        &[E::File("bin/.wh..wh..opq", ""), E::File("bin/new", "n")],
    ])
    .unwrap();
    assert!(!tree.contains_key("usr/bin/sh"));
    assert_eq!(tree.get("usr/bin/new"), Some(&file("n")));
    // A directory entry in the upper layer replaces the symlink, as it says.
    let (tree, _) = run(&[
        &[E::Dir("usr/bin"), E::Symlink("bin", "usr/bin")],
        &[E::Dir("bin"), E::File("bin/own", "o")],
    ])
    .unwrap();
    assert_eq!(tree.get("bin"), Some(&Out::Dir));
    assert_eq!(tree.get("bin/own"), Some(&file("o")));
}

/// Names no file system holds, and PAX sparse files (whose data the tar reader would hand
/// over as a map under a made-up name), are refused, each naming the entry.
#[test]
fn long_names_and_pax_sparse_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layer = |path: &str| {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, &b"x"[..]).unwrap();
        let file = dir.path().join("layer.tar");
        std::fs::write(&file, b.into_inner().unwrap()).unwrap();
        Layer::file(file)
    };
    let spool = dir.path();
    for (path, why) in [
        ("x".repeat(256), "longer than 255 bytes"),
        (["d"; 2100].join("/"), "longer than 4095 bytes"),
    ] {
        let err = flatten_two_pass(&[layer(&path)], spool, Vec::new()).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    flatten_two_pass(&[layer(&"x".repeat(255))], spool, Vec::new()).unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let big = std::fs::File::create(tree.join("big.img")).unwrap();
    big.set_len(1 << 20).unwrap();
    let sparse = dir.path().join("sparse.tar");
    let status = std::process::Command::new("tar")
        .args(["-S", "--format=pax", "-C"])
        .arg(&tree)
        .arg("-cf")
        .arg(&sparse)
        .arg("big.img")
        .status()
        .unwrap();
    assert!(status.success());
    let err = flatten_two_pass(&[Layer::file(&sparse)], spool, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("is a sparse file (PAX)"), "{err}");
}

#[test]
fn a_symlink_loop_is_refused() {
    let err = run(&[&[
        E::Symlink("a", "b"),
        E::Symlink("b", "a"),
        E::File("a/x", "x"),
    ]])
    .unwrap_err();
    assert!(err.to_string().contains("loop of symlinks"), "{err}");
}

#[test]
fn device_nodes_are_dropped() {
    let (tree, stats) = run(&[&[
        E::Dir("dev/"),
        E::CharDev("dev/sda"),
        E::CharDev("../../dev/mem"),
    ]])
    .unwrap();
    assert!(!tree.contains_key("dev/sda"));
    assert_eq!(stats.devices_dropped, 2);
}

#[test]
fn file_replacing_a_directory_removes_its_children() {
    let (tree, _) = run(&[
        &[E::Dir("d/"), E::File("d/x", "x")],
        &[E::File("d", "now a file")],
    ])
    .unwrap();
    assert_eq!(tree.get("d"), Some(&file("now a file")));
    assert!(!tree.contains_key("d/x"));
}

#[test]
fn hardlinks() {
    let (tree, _) = run(&[&[
        E::File("a", "data"),
        E::Hardlink("b", "a"),
        E::Hardlink("c", "./b"),
    ]])
    .unwrap();
    assert_eq!(tree.get("b"), Some(&Out::Hardlink("a".into())));
    assert_eq!(tree.get("c"), Some(&Out::Hardlink("a".into())));
    let err = run(&[&[E::Hardlink("b", "missing")]]).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = run(&[&[E::Dir("d/"), E::Hardlink("b", "d")]]).unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");
}

#[test]
fn hardlink_keeps_original_content_when_a_later_layer_replaces_the_original() {
    let (tree, _) = run(&[
        &[
            E::File("bin/tool", "v1"),
            E::Hardlink("bin/alias", "bin/tool"),
            E::Hardlink("bin/alias2", "bin/tool"),
        ],
        &[E::File("bin/tool", "v2")],
    ])
    .unwrap();
    assert_eq!(tree.get("bin/tool"), Some(&file("v2")));
    assert_eq!(tree.get("bin/alias"), Some(&file("v1")));
    assert_eq!(
        tree.get("bin/alias2"),
        Some(&Out::Hardlink("bin/alias".into()))
    );
}

#[test]
fn compressed_layers_and_digests() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let plain = layer_bytes(&[E::File("hello", "world")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let path = dir.path().join("layer.tar.gz");
    std::fs::write(&path, &gz).unwrap();
    let layer = Layer {
        digest: Some(Digest::of(&gz)),
        diff_id: Some(Digest::of(&plain)),
        ..Layer::file(&path)
    };
    let mut out = Vec::new();
    let stats = flatten(std::slice::from_ref(&layer), dir.path(), &mut out).unwrap();
    let mut again = Vec::new();
    assert_eq!(
        flatten_two_pass(std::slice::from_ref(&layer), dir.path(), &mut again).unwrap(),
        stats
    );
    assert_eq!(
        again, out,
        "one layer: both algorithms write the same stream"
    );
    assert_eq!(read_tar(&out).get("hello"), Some(&file("world")));
    assert_eq!(stats.diff_ids, vec![Digest::of(&plain)]);

    let wrong = Layer {
        digest: Some(Digest::of(b"other")),
        ..layer.clone()
    };
    let err = flatten(&[wrong], dir.path(), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    let wrong = Layer {
        diff_id: Some(Digest::of(b"other")),
        ..layer
    };
    assert!(matches!(
        flatten(&[wrong], dir.path(), &mut Vec::new()),
        Err(ImageError::DigestMismatch { .. })
    ));
}

#[test]
fn truncated_layer_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = layer_bytes(&[E::File("big", &"x".repeat(4000))]);
    let path = dir.path().join("t.tar");
    std::fs::write(&path, &bytes[..1500]).unwrap();
    let err = flatten(&[Layer::file(&path)], dir.path(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("corrupt or truncated"), "{err}");
}
