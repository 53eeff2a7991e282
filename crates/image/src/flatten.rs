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
//! entry below a symlink (planted earlier in the same or a lower layer) turns that symlink
//! into a directory, as overlayfs does, instead of following it. Device nodes are dropped:
//! every container mount is nodev, so they could only ever be a hazard.

use crate::compress::decompress;
use crate::digest::{Digest, HashingReader};
use crate::ImageError;
use std::collections::{BTreeMap, HashMap, HashSet};
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
    let mut prefix = path.to_vec();
    prefix.push(b'/');
    tree.range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect()
}

impl Model {
    fn implicit_dir(layer: u32) -> Node {
        Node {
            id: None,
            layer,
            kind: Kind::Dir,
        }
    }

    /// Makes every ancestor of `path` a directory: missing ones are implied, and a non-directory
    /// in the way (a file or a symlink) is replaced rather than followed.
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
                self.tree
                    .insert(ancestor.to_vec(), Model::implicit_dir(layer));
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
        match classify(layer, kind, &raw)? {
            Action::Skip => {}
            Action::Device => self.devices_dropped += 1,
            Action::Opaque(dir) => {
                let mut marker = dir.clone();
                marker.extend_from_slice(b"/x");
                self.ensure_ancestors(&marker, l);
                self.remove_lower(&dir, l, false);
            }
            Action::Whiteout(target) => self.remove_lower(&target, l, true),
            Action::Add(path) => {
                let node_kind = match kind {
                    EntryType::Directory => Kind::Dir,
                    EntryType::Link => {
                        let bad = |why| ImageError::BadLayer {
                            layer,
                            entry: display(&raw),
                            why,
                        };
                        let link = entry
                            .link_name_bytes()
                            .ok_or_else(|| bad("is a hardlink without a target"))?;
                        let target = normalize(&link)
                            .ok_or_else(|| bad("is a hardlink whose target contains '..'"))?;
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
                                kind: Kind::NonDir,
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
                        self.tree.remove(&key);
                    }
                }
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

/// Reads each layer (verifying its digests) and builds the model of the final tree.
fn build_model(layers: &[Layer]) -> Result<(Model, Vec<Digest>), ImageError> {
    let mut model = Model::default();
    let mut diff_ids = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let mut stored = HashingReader::new(layer.open()?);
        let diff_id = {
            let mut plain = HashingReader::new(
                decompress(&mut stored)
                    .map_err(ImageError::io("cannot read layer", &layer.path))?,
            );
            let mut archive = tar::Archive::new(&mut plain);
            let entries = archive
                .entries()
                .map_err(ImageError::io("cannot read layer", &layer.path))?;
            for (j, entry) in entries.enumerate() {
                let entry = entry.map_err(|e| {
                    ImageError::archive(
                        &layer.path,
                        format!("layer {i} is corrupt or truncated: {e}"),
                    )
                })?;
                model.apply(i, j as u32, &entry)?;
            }
            plain.finish().map_err(|e| {
                ImageError::archive(
                    &layer.path,
                    format!("layer {i} is corrupt or truncated: {e}"),
                )
            })?
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
        diff_ids.push(diff_id);
    }
    Ok((model, diff_ids))
}

/// Flattens `layers` (lowest first) into one tar stream written to `out`. `spool` is a private
/// directory for the rare hardlink whose original file a later layer replaced.
pub fn flatten(
    layers: &[Layer],
    spool: &Path,
    out: impl Write,
) -> Result<FlattenStats, ImageError> {
    let (model, diff_ids) = build_model(layers)?;
    let tree = &model.tree;

    // Hardlinks whose original file is no longer in the tree need its bytes: the first
    // surviving link is written as a regular file, the others link to that one.
    let current =
        |origin: &EntryId, path: &[u8]| tree.get(path).and_then(|n| n.id) == Some(*origin);
    let to_spool: HashSet<EntryId> = tree
        .values()
        .filter_map(|n| match &n.kind {
            Kind::Hardlink {
                origin,
                origin_path,
            } if !current(origin, origin_path) => Some(*origin),
            _ => None,
        })
        .collect();
    let mut representative: HashMap<EntryId, Vec<u8>> = HashMap::new();

    let mut builder = tar::Builder::new(out);
    let write_err = |e: io::Error| ImageError::Io {
        context: "cannot write the flattened image to",
        path: spool.into(),
        source: e,
    };
    let mut stats = FlattenStats {
        devices_dropped: model.devices_dropped,
        diff_ids,
        ..Default::default()
    };
    for (i, layer) in layers.iter().enumerate() {
        let l = i as u32;
        let read_err = || ImageError::io("cannot read layer", &layer.path);
        let reader = decompress(layer.open()?).map_err(read_err())?;
        let mut archive = tar::Archive::new(reader);
        for (j, entry) in archive.entries().map_err(read_err())?.enumerate() {
            let mut entry = entry.map_err(read_err())?;
            let id = (l, j as u32);
            let kind = entry.header().entry_type();
            if to_spool.contains(&id) {
                let mut file = File::create(spool.join(format!("{i}-{j}")))
                    .map_err(ImageError::io("cannot write", spool))?;
                io::copy(&mut entry, &mut file).map_err(read_err())?;
                continue;
            }
            let Action::Add(path) = classify(i, kind, &entry.path_bytes())? else {
                continue;
            };
            let Some(node) = tree.get(&path).filter(|n| n.id == Some(id)) else {
                continue;
            };
            let h = entry.header();
            let bad_header = |e: io::Error| {
                ImageError::archive(
                    &layer.path,
                    format!("layer {i}: bad header for '{}': {e}", display(&path)),
                )
            };
            let mut header = tar::Header::new_gnu();
            header.set_mode(h.mode().map_err(bad_header)? & 0o7777);
            header.set_uid(h.uid().map_err(bad_header)?);
            header.set_gid(h.gid().map_err(bad_header)?);
            header.set_mtime(h.mtime().map_err(bad_header)?);
            let name = Path::new(std::ffi::OsStr::from_bytes(&path));
            match (&node.kind, kind) {
                (
                    Kind::Hardlink {
                        origin,
                        origin_path,
                    },
                    _,
                ) => {
                    let target = if current(origin, origin_path) {
                        Some(origin_path.clone())
                    } else {
                        representative.get(origin).cloned()
                    };
                    if let Some(target) = target {
                        header.set_entry_type(EntryType::Link);
                        header.set_size(0);
                        builder
                            .append_link(&mut header, name, std::ffi::OsStr::from_bytes(&target))
                            .map_err(write_err)?;
                    } else {
                        let spooled = spool.join(format!("{}-{}", origin.0, origin.1));
                        let mut file = File::open(&spooled)
                            .map_err(ImageError::io("cannot read", &spooled))?;
                        let size = file
                            .metadata()
                            .map_err(ImageError::io("cannot read", &spooled))?
                            .len();
                        header.set_entry_type(EntryType::Regular);
                        header.set_size(size);
                        builder
                            .append_data(&mut header, name, &mut file)
                            .map_err(write_err)?;
                        representative.insert(*origin, path.clone());
                    }
                }
                (_, EntryType::Symlink) => {
                    let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                    header.set_entry_type(EntryType::Symlink);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, name, std::ffi::OsStr::from_bytes(&target))
                        .map_err(write_err)?;
                }
                (_, EntryType::Regular | EntryType::Continuous) => {
                    header.set_entry_type(EntryType::Regular);
                    header.set_size(entry.size());
                    builder
                        .append_data(&mut header, name, &mut entry)
                        .map_err(write_err)?;
                }
                (_, other) => {
                    header.set_entry_type(other);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, name, io::empty())
                        .map_err(write_err)?;
                }
            }
            stats.entries += 1;
        }
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(write_err)?;
    Ok(stats)
}

#[cfg(test)]
pub(crate) mod tests;
