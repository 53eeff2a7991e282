//! Flattening an image's layers into one tar stream, safely and without touching the disk.
//!
//! The layers are never extracted. A first pass reads every layer's headers and builds a model
//! of the final tree, applying each change the way overlayfs would (the OCI image spec's
//! "Applying Changesets"): later entries replace earlier ones, `.wh.NAME` removes NAME from
//! lower layers, `.wh..wh..opq` hides everything lower in its directory. A second pass reads
//! the layers again and writes out only the entries that survive, as one tar stream.
//!
//! Safety by construction: paths are normalised (leading `/` and `.` dropped, any `..`
//! refused), and a path is only ever a key in the model, never resolved on the host. An
//! entry below a symlink of the image (planted earlier in the same or a lower layer: `bin ->
//! usr/bin`, then `bin/hello`) lands where the symlink leads, as Docker and containerd apply
//! layers onto a directory, but resolved in the model as the container would resolve it,
//! inside the root (`..` at the root stays there, an absolute target starts from it): no
//! symlink can lead out. Device nodes are dropped: every container mount is nodev, so they
//! could only ever be a hazard.

use crate::compress::decompress;
use crate::digest::{Digest, HashingReader};
use crate::ImageError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tar::EntryType;

/// One layer: a byte range of a file (a whole blob file, or a member of an uncompressed tar
/// archive), with the digests it must match.
#[derive(Debug, Clone)]
pub struct Layer {
    pub path: PathBuf,
    pub offset: u64,
    pub len: Option<u64>,
    /// Digest of the stored (possibly compressed) bytes.
    pub digest: Option<Digest>,
    /// Digest of the uncompressed tar stream (the image config's `rootfs.diff_ids`).
    pub diff_id: Option<Digest>,
}

impl Layer {
    pub fn file(path: impl Into<PathBuf>) -> Layer {
        Layer {
            path: path.into(),
            offset: 0,
            len: None,
            digest: None,
            diff_id: None,
        }
    }

    fn open(&self) -> Result<Box<dyn Read>, ImageError> {
        let mut file =
            File::open(&self.path).map_err(ImageError::io("cannot open layer", &self.path))?;
        if self.offset > 0 {
            file.seek(SeekFrom::Start(self.offset))
                .map_err(ImageError::io("cannot read layer", &self.path))?;
        }
        Ok(match self.len {
            Some(len) => Box::new(file.take(len)),
            None => Box::new(file),
        })
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlattenStats {
    /// Entries written to the flattened stream.
    pub entries: u64,
    /// Device nodes left out.
    pub devices_dropped: u64,
    /// The uncompressed digest of each layer, as read.
    pub diff_ids: Vec<Digest>,
}

type EntryId = (u32, u32);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    NonDir,
    /// A symlink, with its target as written.
    Symlink(Vec<u8>),
    /// A hardlink to the file first written by entry `origin` at `origin_path`.
    Hardlink {
        origin: EntryId,
        origin_path: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
struct Node {
    /// The entry that produced this node; `None` for directories implied by their children.
    id: Option<EntryId>,
    layer: u32,
    kind: Kind,
}

/// The final tree, path -> node. Children of `a` are the keys starting with `a/`.
#[derive(Default)]
struct Model {
    tree: BTreeMap<Vec<u8>, Node>,
    devices_dropped: u64,
    /// A layer replaced or removed an entry it had itself written earlier (the same path
    /// twice, or a file where it had put a directory's children): legal in a tar, but the
    /// single-read fast path of [`flatten`] cannot take back what it already wrote.
    self_conflict: bool,
    /// Where entries below a symlink of the image land, by entry (the few whose path
    /// a symlink changed), for the passes that write them.
    resolved: HashMap<EntryId, Vec<u8>>,
}

/// What a tar entry means for the tree, decided the same way in both passes.
enum Action {
    Skip,
    Device,
    Opaque(Vec<u8>),
    Whiteout(Vec<u8>),
    Add(Vec<u8>),
}

fn normalize(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return None,
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Some(out)
}

fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn classify(layer: usize, kind: EntryType, raw: &[u8]) -> Result<Action, ImageError> {
    let bad = |why| ImageError::BadLayer {
        layer,
        entry: display(raw),
        why,
    };
    match kind {
        EntryType::XGlobalHeader
        | EntryType::XHeader
        | EntryType::GNULongName
        | EntryType::GNULongLink => return Ok(Action::Skip),
        EntryType::Char | EntryType::Block => return Ok(Action::Device),
        EntryType::GNUSparse => {
            return Err(bad("is a GNU sparse file, which berth does not support"))
        }
        EntryType::Regular
        | EntryType::Continuous
        | EntryType::Link
        | EntryType::Symlink
        | EntryType::Directory
        | EntryType::Fifo => {}
        _ => return Err(bad("has an unknown tar entry type")),
    }
    let path = normalize(raw)
        .ok_or_else(|| bad("contains '..', which could write outside the image root"))?;
    // What no Linux file system holds, nor a container could open.
    if path.split(|&b| b == b'/').any(|c| c.len() > 255) {
        return Err(bad("has a name longer than 255 bytes"));
    }
    if path.len() >= 4096 {
        return Err(bad("is a path longer than 4095 bytes"));
    }
    let (parent, base) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], &path[..]),
    };
    Ok(if base == b".wh..wh..opq" {
        Action::Opaque(parent.to_vec())
    } else if base.starts_with(b".wh..wh.") {
        // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not part of the image.
        Action::Skip
    } else if let Some(hidden) = base.strip_prefix(b".wh.") {
        let mut target = parent.to_vec();
        if !target.is_empty() {
            target.push(b'/');
        }
        target.extend_from_slice(hidden);
        Action::Whiteout(target)
    } else if path.is_empty() {
        // The root itself: its attributes come from the store's defaults.
        Action::Skip
    } else {
        Action::Add(path)
    })
}

fn subtree_keys(tree: &BTreeMap<Vec<u8>, Node>, path: &[u8]) -> Vec<Vec<u8>> {
    // (The root's subtree: every entry.)
    if path.is_empty() {
        return tree.keys().cloned().collect();
    }
    let mut prefix = path.to_vec();
    prefix.push(b'/');
    tree.range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect()
}

/// How many symlinks a path may pass through, as the kernel's limit (ELOOP beyond).
const MAX_SYMLINKS: usize = 40;

impl Model {
    /// `path` with every component but its last resolved through the model's symlinks, as
    /// the container would resolve it, inside the root: `..` at the root stays there, an
    /// absolute target starts from the root. `None` for a loop (or a chain too long).
    fn resolve_parent(&self, path: &[u8]) -> Option<Vec<u8>> {
        let Some(cut) = path.iter().rposition(|&b| b == b'/') else {
            return Some(path.to_vec());
        };
        // Most paths pass no symlink: nothing to rewrite.
        let through_symlink = path[..cut]
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .map(|(i, _)| i)
            .chain([cut])
            .any(|i| {
                matches!(
                    self.tree.get(&path[..i]),
                    Some(Node {
                        kind: Kind::Symlink(_),
                        ..
                    })
                )
            });
        if !through_symlink {
            return Some(path.to_vec());
        }
        let mut pending: Vec<Vec<u8>> = path[..cut]
            .split(|&b| b == b'/')
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            match component.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    done.pop();
                    continue;
                }
                _ => done.push(component),
            }
            let key = done.join(&b'/');
            if let Some(Node {
                kind: Kind::Symlink(target),
                ..
            }) = self.tree.get(&key)
            {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return None;
                }
                done.pop();
                if target.starts_with(b"/") {
                    done.clear();
                }
                pending.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
            }
        }
        done.push(path[cut + 1..].to_vec());
        Some(done.join(&b'/'))
    }

    fn implicit_dir(layer: u32) -> Node {
        Node {
            id: None,
            layer,
            kind: Kind::Dir,
        }
    }

    /// Records whether `old`, replaced or removed while applying layer `layer`, was an entry
    /// of that same layer (an implied directory does not count: nothing was written for it).
    fn note_replaced(&mut self, old: Option<&Node>, layer: u32) {
        if old.is_some_and(|n| n.layer == layer && n.id.is_some()) {
            self.self_conflict = true;
        }
    }

    /// Makes every ancestor of `path` (resolved: see [`Model::resolve_parent`]) a directory:
    /// missing ones are implied, and a file in the way is replaced.
    fn ensure_ancestors(&mut self, path: &[u8], layer: u32) {
        for (i, _) in path.iter().enumerate().filter(|(_, &b)| b == b'/') {
            let ancestor = &path[..i];
            if !matches!(
                self.tree.get(ancestor),
                Some(Node {
                    kind: Kind::Dir,
                    ..
                })
            ) {
                let old = self
                    .tree
                    .insert(ancestor.to_vec(), Model::implicit_dir(layer));
                self.note_replaced(old.as_ref(), layer);
            }
        }
    }

    /// Removes `path` and everything below it that came from a layer lower than `layer`.
    fn remove_lower(&mut self, path: &[u8], layer: u32, include_self: bool) {
        for key in subtree_keys(&self.tree, path) {
            if self.tree[&key].layer < layer {
                self.tree.remove(&key);
            }
        }
        if include_self && self.tree.get(path).is_some_and(|n| n.layer < layer) {
            self.tree.remove(path);
            if !subtree_keys(&self.tree, path).is_empty() {
                self.tree.insert(path.to_vec(), Model::implicit_dir(layer));
            }
        }
    }

    fn apply(
        &mut self,
        layer: usize,
        index: u32,
        entry: &tar::Entry<'_, impl Read>,
    ) -> Result<(), ImageError> {
        let raw = entry.path_bytes();
        let kind = entry.header().entry_type();
        let l = layer as u32;
        let bad = |why| ImageError::BadLayer {
            layer,
            entry: display(&raw),
            why,
        };

        let resolve = |model: &Model, path: &[u8]| {
            model
                .resolve_parent(path)
                .ok_or_else(|| bad("lies below a loop of symlinks"))
        };
        match classify(layer, kind, &raw)? {
            Action::Skip => {}
            Action::Device => self.devices_dropped += 1,
            Action::Opaque(dir) => {
                // (A name in the directory, resolved as one: the directory it is in.)
                let mut marker = dir.clone();
                if !marker.is_empty() {
                    marker.push(b'/');
                }
                marker.push(b'x');
                let marker = resolve(self, &marker)?;
                self.ensure_ancestors(&marker, l);
                let dir_len = marker.iter().rposition(|&b| b == b'/').unwrap_or(0);
                self.remove_lower(&marker[..dir_len], l, false);
            }
            Action::Whiteout(target) => {
                let target = resolve(self, &target)?;
                self.remove_lower(&target, l, true)
            }
            Action::Add(path) => {
                let resolved = resolve(self, &path)?;
                if resolved != path {
                    self.resolved.insert((l, index), resolved.clone());
                }
                let path = resolved;
                let node_kind = match kind {
                    EntryType::Directory => Kind::Dir,
                    EntryType::Symlink => {
                        Kind::Symlink(entry.link_name_bytes().unwrap_or_default().into_owned())
                    }
                    EntryType::Link => {
                        let link = entry
                            .link_name_bytes()
                            .ok_or_else(|| bad("is a hardlink without a target"))?;
                        let target = normalize(&link)
                            .ok_or_else(|| bad("is a hardlink whose target contains '..'"))?;
                        let target = resolve(self, &target)?;
                        match self.tree.get(&target) {
                            Some(Node {
                                kind:
                                    Kind::Hardlink {
                                        origin,
                                        origin_path,
                                    },
                                ..
                            }) => Kind::Hardlink {
                                origin: *origin,
                                origin_path: origin_path.clone(),
                            },
                            Some(Node {
                                kind: Kind::NonDir | Kind::Symlink(_),
                                id: Some(origin),
                                ..
                            }) => Kind::Hardlink {
                                origin: *origin,
                                origin_path: target,
                            },
                            Some(_) => return Err(bad("is a hardlink to a directory")),
                            None => return Err(bad("is a hardlink to a file that does not exist")),
                        }
                    }
                    _ => Kind::NonDir,
                };
                self.ensure_ancestors(&path, l);
                let replaces_dir = matches!(
                    self.tree.get(&path),
                    Some(Node {
                        kind: Kind::Dir,
                        ..
                    })
                );
                if replaces_dir && node_kind != Kind::Dir {
                    for key in subtree_keys(&self.tree, &path) {
                        let old = self.tree.remove(&key);
                        self.note_replaced(old.as_ref(), l);
                    }
                }
                let old = self.tree.get(&path).cloned();
                self.note_replaced(old.as_ref(), l);
                self.tree.insert(
                    path,
                    Node {
                        id: Some((l, index)),
                        layer: l,
                        kind: node_kind,
                    },
                );
            }
        }
        Ok(())
    }
}

/// One tar entry as the flattener needs it, with its data still unread.
struct Item<'a> {
    id: EntryId,
    kind: EntryType,
    raw_path: Vec<u8>,
    meta: Meta,
    link: Option<Vec<u8>>,
    size: u64,
    data: &'a mut dyn Read,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

impl Meta {
    /// The attributes berth keeps from a header (layer `i`, entry `path`, for the error).
    fn of(h: &tar::Header, layer: &Layer, i: usize, path: &[u8]) -> Result<Meta, ImageError> {
        let bad = |e: io::Error| {
            ImageError::archive(
                &layer.path,
                format!("layer {i}: bad header for '{}': {e}", display(path)),
            )
        };
        Ok(Meta {
            mode: h.mode().map_err(bad)? & 0o7777,
            uid: h.uid().map_err(bad)?,
            gid: h.gid().map_err(bad)?,
            mtime: h.mtime().map_err(bad)?,
        })
    }
}

fn corrupt(layer: &Layer, i: usize) -> impl Fn(io::Error) -> ImageError + '_ {
    move |e| {
        ImageError::archive(
            &layer.path,
            format!("layer {i} is corrupt or truncated: {e}"),
        )
    }
}

/// Reads layer `i` once, through both its digests (verified at the end), applying every
/// entry to `model` and then handing it to `each`.
fn read_layer(
    model: &mut Model,
    i: usize,
    layer: &Layer,
    mut each: impl FnMut(&Model, Item<'_>) -> Result<(), ImageError>,
) -> Result<Digest, ImageError> {
    let mut stored = HashingReader::new(layer.open()?);
    let diff_id = {
        let mut plain = HashingReader::new(
            decompress(&mut stored).map_err(ImageError::io("cannot read layer", &layer.path))?,
        );
        let mut archive = tar::Archive::new(&mut plain);
        let entries = archive
            .entries()
            .map_err(ImageError::io("cannot read layer", &layer.path))?;
        for (j, entry) in entries.enumerate() {
            let mut entry = entry.map_err(corrupt(layer, i))?;
            // PAX's sparse files (GNU tar -S --format=pax): their data is a map the tar
            // reader does not undo, under a made-up name.
            let sparse = entry.pax_extensions().ok().flatten().is_some_and(|mut e| {
                e.any(|e| e.is_ok_and(|e| e.key_bytes().starts_with(b"GNU.sparse.")))
            });
            if sparse {
                return Err(ImageError::BadLayer {
                    layer: i,
                    entry: display(&entry.path_bytes()),
                    why: "is a sparse file (PAX), which berth does not support",
                });
            }
            let id = (i as u32, j as u32);
            model.apply(i, id.1, &entry)?;
            let h = entry.header();
            let raw_path = entry.path_bytes().into_owned();
            let meta = Meta::of(h, layer, i, &raw_path)?;
            let item = Item {
                id,
                kind: h.entry_type(),
                link: entry.link_name_bytes().map(|l| l.into_owned()),
                size: entry.size(),
                raw_path,
                meta,
                data: &mut entry,
            };
            each(model, item)?;
        }
        plain.finish().map_err(corrupt(layer, i))?
    };
    let digest = stored
        .finish()
        .map_err(ImageError::io("cannot read layer", &layer.path))?;
    if let Some(expected) = &layer.digest {
        expected.verify(
            &digest,
            format_args!("layer {i} ({})", layer.path.display()),
        )?;
    }
    if let Some(expected) = &layer.diff_id {
        expected.verify(
            &diff_id,
            format_args!("uncompressed layer {i} ({})", layer.path.display()),
        )?;
    }
    Ok(diff_id)
}

/// Writes surviving entries into the flattened stream.
struct Emitter<'a, W: Write> {
    builder: tar::Builder<W>,
    spool: &'a Path,
    /// For hardlinks whose original is gone: the path of the copy written in its place.
    representative: HashMap<EntryId, Vec<u8>>,
    entries: u64,
}

fn current(tree: &BTreeMap<Vec<u8>, Node>, origin: &EntryId, path: &[u8]) -> bool {
    tree.get(path).and_then(|n| n.id) == Some(*origin)
}

impl<'a, W: Write> Emitter<'a, W> {
    fn new(out: W, spool: &'a Path) -> Self {
        Emitter {
            builder: tar::Builder::new(out),
            spool,
            representative: HashMap::new(),
            entries: 0,
        }
    }

    fn emit(
        &mut self,
        tree: &BTreeMap<Vec<u8>, Node>,
        path: &[u8],
        kind: &Kind,
        item: &mut Item<'_>,
    ) -> Result<(), ImageError> {
        let mut header = tar::Header::new_gnu();
        header.set_mode(item.meta.mode);
        header.set_uid(item.meta.uid);
        header.set_gid(item.meta.gid);
        header.set_mtime(item.meta.mtime);
        let name = Path::new(OsStr::from_bytes(path));
        let err = |e: io::Error| ImageError::Io {
            context: "cannot write the flattened image to",
            path: self.spool.into(),
            source: e,
        };
        match (kind, item.kind) {
            (
                Kind::Hardlink {
                    origin,
                    origin_path,
                },
                _,
            ) => {
                let target = if current(tree, origin, origin_path) {
                    Some(origin_path.clone())
                } else {
                    self.representative.get(origin).cloned()
                };
                if let Some(target) = target {
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    self.builder
                        .append_link(&mut header, name, OsStr::from_bytes(&target))
                        .map_err(err)?;
                } else {
                    // The original was replaced: this link becomes a copy of its old bytes.
                    let spooled = self.spool.join(format!("{}-{}", origin.0, origin.1));
                    let mut file =
                        File::open(&spooled).map_err(ImageError::io("cannot read", &spooled))?;
                    let size = file
                        .metadata()
                        .map_err(ImageError::io("cannot read", &spooled))?
                        .len();
                    header.set_entry_type(EntryType::Regular);
                    header.set_size(size);
                    self.builder
                        .append_data(&mut header, name, &mut file)
                        .map_err(err)?;
                    self.representative.insert(*origin, path.to_vec());
                }
            }
            (_, EntryType::Symlink) => {
                header.set_entry_type(EntryType::Symlink);
                header.set_size(0);
                let target = item.link.clone().unwrap_or_default();
                self.builder
                    .append_link(&mut header, name, OsStr::from_bytes(&target))
                    .map_err(err)?;
            }
            (_, EntryType::Regular | EntryType::Continuous) => {
                header.set_entry_type(EntryType::Regular);
                header.set_size(item.size);
                self.builder
                    .append_data(&mut header, name, &mut item.data)
                    .map_err(err)?;
            }
            (_, other) => {
                header.set_entry_type(other);
                header.set_size(0);
                self.builder
                    .append_data(&mut header, name, io::empty())
                    .map_err(err)?;
            }
        }
        self.entries += 1;
        Ok(())
    }

    /// Pass two over `layers` (numbered from `first`): writes each entry that is still in
    /// the final tree, and spools the originals that replaced-away hardlinks need.
    fn replay(
        &mut self,
        model: &Model,
        layers: &[Layer],
        to_spool: &HashSet<EntryId>,
    ) -> Result<(), ImageError> {
        let tree = &model.tree;
        for (i, layer) in layers.iter().enumerate() {
            let read_err = || ImageError::io("cannot read layer", &layer.path);
            let mut archive = tar::Archive::new(decompress(layer.open()?).map_err(read_err())?);
            for (j, entry) in archive.entries().map_err(read_err())?.enumerate() {
                let mut entry = entry.map_err(corrupt(layer, i))?;
                let id = (i as u32, j as u32);
                if to_spool.contains(&id) {
                    let path = self.spool.join(format!("{i}-{j}"));
                    let mut file =
                        File::create(&path).map_err(ImageError::io("cannot write", &path))?;
                    io::copy(&mut entry, &mut file).map_err(read_err())?;
                    continue;
                }
                let kind = entry.header().entry_type();
                let Action::Add(path) = classify(i, kind, &entry.path_bytes())? else {
                    continue;
                };
                let path = model.resolved.get(&id).cloned().unwrap_or(path);
                let Some(node) = tree.get(&path).filter(|n| n.id == Some(id)) else {
                    continue;
                };
                let meta = Meta::of(entry.header(), layer, i, &path)?;
                let link = entry.link_name_bytes().map(|l| l.into_owned());
                let size = entry.size();
                let mut item = Item {
                    id,
                    kind,
                    raw_path: Vec::new(),
                    meta,
                    link,
                    size,
                    data: &mut entry,
                };
                self.emit(tree, &path, &node.kind.clone(), &mut item)?;
            }
        }
        Ok(())
    }

    /// Ends the stream, with the mount points berth's containers use that `tree` lacks
    /// ([`crate::squash::MOUNT_POINTS`]).
    fn finish(mut self, tree: &BTreeMap<Vec<u8>, Node>) -> Result<u64, ImageError> {
        let entries = self.entries;
        let spool = self.spool;
        crate::squash::append_mount_points(&mut self.builder, |path| {
            tree.get(path.as_bytes())
                .map(|node| matches!(node.kind, Kind::Dir))
        })
        .and_then(|()| self.builder.into_inner())
        .and_then(|mut w| w.flush())
        .map_err(|e| ImageError::Io {
            context: "cannot write the flattened image to",
            path: spool.into(),
            source: e,
        })?;
        Ok(entries)
    }
}

/// Reads `layers` (numbered from 0) into a model, verifying their digests.
fn build_model(layers: &[Layer]) -> Result<(Model, Vec<Digest>), ImageError> {
    let mut model = Model::default();
    let diff_ids = layers
        .iter()
        .enumerate()
        .map(|(i, l)| read_layer(&mut model, i, l, |_, _| Ok(())))
        .collect::<Result<_, _>>()?;
    Ok((model, diff_ids))
}

/// The originals that hardlinks need after a later layer replaced them.
fn originals_to_spool(tree: &BTreeMap<Vec<u8>, Node>) -> HashSet<EntryId> {
    tree.values()
        .filter_map(|n| match &n.kind {
            Kind::Hardlink {
                origin,
                origin_path,
            } if !current(tree, origin, origin_path) => Some(*origin),
            _ => None,
        })
        .collect()
}

/// Flattens `layers` (lowest first) into one tar stream written to `out`. `spool` is a private
/// directory for the rare hardlink whose original file a later layer replaced.
///
/// The top layer is read only once: its entries can be written as they stream by, because
/// nothing above can hide them. The lower layers are read twice (model, then replay), after
/// the top layer, since its whiteouts decide which of their entries survive. When the top
/// layer contradicts itself (the same path twice, or a path it wrote later replaced), this
/// returns [`ImageError::NeedsTwoPasses`] having written a partial stream: call
/// [`flatten_two_pass`] with a fresh output.
pub fn flatten(
    layers: &[Layer],
    spool: &Path,
    out: impl Write,
) -> Result<FlattenStats, ImageError> {
    let Some((top, lower)) = layers.split_last() else {
        return flatten_two_pass(layers, spool, out);
    };
    let top_index = lower.len();
    let (mut model, mut diff_ids) = build_model(lower)?;
    let mut emitter = Emitter::new(out, spool);
    let mut written: Vec<(Vec<u8>, EntryId)> = Vec::new();
    // Hardlinks to lower-layer files wait until those files are written.
    let mut deferred: Vec<(Vec<u8>, Kind, Meta, EntryId)> = Vec::new();
    diff_ids.push(read_layer(
        &mut model,
        top_index,
        top,
        |model, mut item| {
            if model.self_conflict {
                return Err(ImageError::NeedsTwoPasses);
            }
            let Action::Add(path) = classify(top_index, item.kind, &item.raw_path)? else {
                return Ok(());
            };
            let path = model.resolved.get(&item.id).cloned().unwrap_or(path);
            let Some(node) = model.tree.get(&path).filter(|n| n.id == Some(item.id)) else {
                return Ok(());
            };
            match &node.kind {
                Kind::Hardlink { origin, .. } if (origin.0 as usize) < top_index => {
                    deferred.push((path.clone(), node.kind.clone(), item.meta, item.id))
                }
                kind => emitter.emit(&model.tree, &path, &kind.clone(), &mut item)?,
            }
            written.push((path, item.id));
            Ok(())
        },
    )?);
    // Belt and braces: everything written is still what the final tree holds.
    if model.self_conflict
        || written
            .iter()
            .any(|(path, id)| !current(&model.tree, id, path))
    {
        return Err(ImageError::NeedsTwoPasses);
    }
    let tree = &model.tree;
    emitter.replay(&model, lower, &originals_to_spool(tree))?;
    for (path, kind, meta, id) in deferred {
        let mut empty = io::empty();
        let mut item = Item {
            id,
            kind: EntryType::Link,
            raw_path: Vec::new(),
            meta,
            link: None,
            size: 0,
            data: &mut empty,
        };
        emitter.emit(tree, &path, &kind, &mut item)?;
    }
    Ok(FlattenStats {
        entries: emitter.finish(tree)?,
        devices_dropped: model.devices_dropped,
        diff_ids,
    })
}

/// The general algorithm: every layer read twice, first into the model, then replayed.
pub fn flatten_two_pass(
    layers: &[Layer],
    spool: &Path,
    out: impl Write,
) -> Result<FlattenStats, ImageError> {
    let (model, diff_ids) = build_model(layers)?;
    let mut emitter = Emitter::new(out, spool);
    emitter.replay(&model, layers, &originals_to_spool(&model.tree))?;
    Ok(FlattenStats {
        entries: emitter.finish(&model.tree)?,
        devices_dropped: model.devices_dropped,
        diff_ids,
    })
}

#[cfg(test)]
pub(crate) mod tests;
