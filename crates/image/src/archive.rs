//! What `berth image import` accepts, and how each kind becomes a list of layers:
//! docker-archive (`docker save`), OCI image layout (a directory or a tar of one), a plain
//! root filesystem as a directory, or a plain root filesystem tarball (gzip, zstd or none).
//!
//! Archives are indexed, not extracted: an uncompressed tar's members are read in place
//! through their offsets, so importing a 200 MB `docker save` copies nothing to disk.

use crate::compress::decompress;
use crate::digest::Digest;
use crate::flatten::Layer;
use crate::ImageError;
use serde::Deserialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The largest JSON document (manifest, index, config) berth reads from an archive.
const MAX_JSON: u64 = 16 << 20;

/// What an import will read, decided by looking at the path.
#[derive(Debug)]
pub(crate) enum ImportSource {
    /// A plain root filesystem directory: tarred as it is.
    RootfsDir(PathBuf),
    /// A plain root filesystem tarball: one layer; with what it says of how it runs (a
    /// squashfs file or a SIF image, unpacked to a tarball).
    RootfsTar {
        tar: PathBuf,
        settings: RootfsSettings,
    },
    /// An image with a config and layers (docker-archive or OCI layout).
    Image(Box<PreparedImage>),
    /// Each image of a docker-archive holding several (`docker save a b`), as `docker load`
    /// loads them all.
    Images(Vec<PreparedImage>),
}

/// What a root filesystem says of how it runs, for its image config: its variables
/// (enroot's /etc/environment, Apptainer's /.singularity.d/env) and its entrypoint
/// (Apptainer's runscript, which `berth run` runs as `apptainer run` does).
#[derive(Debug, Default)]
pub(crate) struct RootfsSettings {
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
}

#[derive(Debug)]
pub struct PreparedImage {
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<Layer>,
    /// Names found in the archive (RepoTags, or OCI ref.name annotations).
    pub names: Vec<String>,
}

/// Either a directory or an uncompressed tar file, addressed by member name.
enum Members {
    Dir(PathBuf),
    Tar {
        file: PathBuf,
        members: HashMap<String, Member>,
    },
}

#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

fn clean(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

impl Members {
    fn index_tar(path: &Path) -> Result<Members, ImageError> {
        let file = File::open(path).map_err(ImageError::io("cannot open", path))?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut members = HashMap::new();
        let corrupt =
            |e: io::Error| ImageError::archive(path, format!("corrupt or truncated archive: {e}"));
        for entry in archive.entries_with_seek().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            let Some(name) = clean(&String::from_utf8_lossy(&entry.path_bytes())) else {
                continue;
            };
            let kind = entry.header().entry_type();
            let member = if kind.is_file() {
                Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                }
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default())
                    .into_owned();
                // Symlink targets are relative to the link's directory; hardlink targets to the root.
                let dir = if kind.is_symlink() {
                    name.rsplit_once('/').map_or("", |(d, _)| d)
                } else {
                    ""
                };
                Member::Link(if target.starts_with('/') {
                    target
                } else {
                    format!("{dir}/{target}")
                })
            } else {
                continue;
            };
            members.insert(name, member);
        }
        // The archive must be complete: a truncated `docker save` is caught here, not later.
        let len = std::fs::metadata(path)
            .map_err(ImageError::io("cannot read", path))?
            .len();
        if let Some(end) = members
            .values()
            .filter_map(|m| match m {
                Member::File { offset, size } => Some(offset + size),
                _ => None,
            })
            .max()
        {
            if end > len {
                return Err(ImageError::archive(path, "the archive is truncated"));
            }
        }
        Ok(Members::Tar {
            file: path.to_path_buf(),
            members,
        })
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Members::Dir(dir) => dir.join(name).is_file(),
            Members::Tar { members, .. } => members.contains_key(name),
        }
    }

    /// Whether it holds anything under directory `dir` (`blobs`, `etc`).
    fn has_under(&self, dir: &str) -> bool {
        match self {
            Members::Dir(root) => root.join(dir).is_dir(),
            Members::Tar { members, .. } => {
                let prefix = format!("{dir}/");
                members.keys().any(|name| name.starts_with(&prefix))
            }
        }
    }

    fn describe(&self) -> &Path {
        match self {
            Members::Dir(d) => d,
            Members::Tar { file, .. } => file,
        }
    }

    /// Locates a member as a byte range, following links inside the archive.
    fn locate(&self, name: &str) -> Result<Layer, ImageError> {
        let missing = || {
            ImageError::archive(
                self.describe(),
                format!("the archive lacks '{name}': it is incomplete or not an image archive"),
            )
        };
        let name = clean(name).ok_or_else(missing)?;
        match self {
            Members::Dir(dir) => {
                // Blob names come from JSON inside the layout: never let one leave the layout.
                let path = dir.join(&name);
                let real = path.canonicalize().map_err(|_| missing())?;
                let root = dir
                    .canonicalize()
                    .map_err(ImageError::io("cannot read", dir))?;
                if !real.starts_with(&root) || !real.is_file() {
                    return Err(missing());
                }
                Ok(Layer::file(real))
            }
            Members::Tar { file, members } => {
                let mut current = name.clone();
                for _ in 0..16 {
                    match members.get(&current) {
                        Some(Member::File { offset, size }) => {
                            return Ok(Layer {
                                offset: *offset,
                                len: Some(*size),
                                ..Layer::file(file)
                            })
                        }
                        Some(Member::Link(target)) => {
                            current = clean(target).ok_or_else(missing)?
                        }
                        None => return Err(missing()),
                    }
                }
                Err(missing())
            }
        }
    }

    fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<(T, Vec<u8>), ImageError> {
        let member = self.locate(name)?;
        let mut file =
            File::open(&member.path).map_err(ImageError::io("cannot open", &member.path))?;
        file.seek(SeekFrom::Start(member.offset))
            .map_err(ImageError::io("cannot read", &member.path))?;
        let mut bytes = Vec::new();
        file.take(member.len.unwrap_or(MAX_JSON).min(MAX_JSON))
            .read_to_end(&mut bytes)
            .map_err(ImageError::io("cannot read", &member.path))?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::archive(self.describe(), format!("invalid {name}: {e}")))?;
        Ok((value, bytes))
    }
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
    #[serde(default)]
    pub(crate) annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
pub(crate) struct Platform {
    pub(crate) architecture: String,
    pub(crate) os: String,
}

#[derive(Deserialize)]
pub(crate) struct OciIndex {
    pub(crate) manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
pub(crate) struct OciManifest {
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct RootfsOnly {
    rootfs: Rootfs,
}

#[derive(Deserialize)]
struct Rootfs {
    diff_ids: Vec<String>,
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// The architecture name OCI uses for this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The platform variant of an image index that this machine runs.
pub(crate) fn pick_platform(index: &OciIndex) -> Option<&Descriptor> {
    index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == host_arch())
    })
}

/// The uncompressed layer digests an image config lists.
pub(crate) fn diff_ids(config: &[u8]) -> Result<Vec<Digest>, String> {
    let config: RootfsOnly =
        serde_json::from_slice(config).map_err(|e| format!("invalid image config: {e}"))?;
    config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| e.to_string()))
        .collect()
}

fn read_config(
    members: &Members,
    name: &str,
    digest: &Digest,
) -> Result<(Vec<u8>, Vec<Digest>), ImageError> {
    let (_, bytes): (RootfsOnly, Vec<u8>) = members.read_json(name)?;
    digest.verify(&Digest::of(&bytes), format_args!("image config {name}"))?;
    let diff_ids = diff_ids(&bytes).map_err(|why| ImageError::archive(members.describe(), why))?;
    Ok((bytes, diff_ids))
}

/// The image of a docker-archive `want` names (by one of its RepoTags), or its only one;
/// with `all`, each of several.
fn docker_archive(
    members: &Members,
    want: Option<&str>,
    all: bool,
) -> Result<ImportSource, ImageError> {
    let (entries, _): (Vec<DockerManifestEntry>, _) = members.read_json("manifest.json")?;
    let tags = |e: &DockerManifestEntry| e.repo_tags.clone().unwrap_or_default();
    let entry = match (entries.len(), want) {
        (0, _) => {
            return Err(ImageError::archive(
                members.describe(),
                "manifest.json lists no image",
            ))
        }
        (1, _) => &entries[0],
        (_, Some(w)) => entries
            .iter()
            .find(|e| tags(e).iter().any(|t| crate::Reference::full_name(t) == w))
            .ok_or_else(|| ImageError::NotInArchive {
                path: members.describe().to_path_buf(),
                wanted: w.to_string(),
                holds: entries.iter().flat_map(tags).collect(),
            })?,
        (_, None) if all => {
            let images = entries.iter().map(|e| docker_image(members, e));
            return Ok(ImportSource::Images(images.collect::<Result<_, _>>()?));
        }
        (n, None) => {
            return Err(ImageError::archive(
                members.describe(),
                format!(
                    "the archive holds {n} images ({}); choose one with --name, or import them all with berth image import",
                    entries.iter().flat_map(tags).collect::<Vec<_>>().join(", ")
                ),
            ))
        }
    };
    Ok(ImportSource::Image(Box::new(docker_image(members, entry)?)))
}

/// One image of a docker-archive, named by its RepoTags.
fn docker_image(
    members: &Members,
    entry: &DockerManifestEntry,
) -> Result<PreparedImage, ImageError> {
    // The config's file name is its digest (`<hex>.json` or `blobs/sha256/<hex>`).
    let hex = entry
        .config
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".json");
    let config_digest = Digest::parse(&format!("sha256:{hex}"))?;
    let (config, diff_ids) = read_config(members, &entry.config, &config_digest)?;
    if diff_ids.len() != entry.layers.len() {
        return Err(ImageError::archive(
            members.describe(),
            "manifest.json and the image config disagree on the number of layers",
        ));
    }
    let layers = entry
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(name, diff_id)| {
            let digest = name
                .strip_prefix("blobs/sha256/")
                .and_then(|h| Digest::parse(&format!("sha256:{h}")).ok());
            Ok(Layer {
                digest,
                diff_id: Some(diff_id),
                ..members.locate(name)?
            })
        })
        .collect::<Result<_, ImageError>>()?;
    Ok(PreparedImage {
        config,
        config_digest,
        layers,
        names: entry.repo_tags.clone().unwrap_or_default(),
    })
}

/// Whether a manifest's platform is this machine's (linux, its architecture).
fn is_host_platform(p: &Platform) -> bool {
    p.os == "linux" && p.architecture == host_arch()
}

fn oci_layout(members: &Members, want: Option<&str>) -> Result<PreparedImage, ImageError> {
    let (index, _): (OciIndex, _) = members.read_json("index.json")?;
    // containerd's (nerdctl's, Docker's) full name, or the OCI tag.
    let name_of = |d: &Descriptor| {
        [
            "io.containerd.image.name",
            "org.opencontainers.image.ref.name",
        ]
        .iter()
        .find_map(|key| d.annotations.get(*key).cloned())
    };
    // A name as written (`v1`, `lab/app:1`) or as berth completes it (`v1:latest`).
    let named = |n: &str, w: &str| {
        n == w
            || w.ends_with(&format!(":{n}"))
            || crate::Reference::parse(n).is_ok_and(|r| r.to_string() == w)
    };
    let by_name: Vec<&Descriptor> = match want {
        Some(w) => index
            .manifests
            .iter()
            .filter(|d| name_of(d).is_some_and(|n| named(&n, w)))
            .collect(),
        None => Vec::new(),
    };
    // Else (the name is the import's own), the only one; or, one manifest per platform, all
    // of one name (or none), this machine's.
    let candidates = match by_name.is_empty() {
        false => by_name,
        true => index.manifests.iter().collect(),
    };
    let ours: Vec<&Descriptor> = candidates
        .iter()
        .copied()
        .filter(|d| d.platform.as_ref().is_some_and(is_host_platform))
        .collect();
    let one_name = candidates
        .windows(2)
        .all(|w| name_of(w[0]) == name_of(w[1]));
    let candidates = match ours.len() == 1 && one_name {
        true => ours,
        false => candidates,
    };
    let chosen = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(ImageError::archive(
                members.describe(),
                "the layout's index.json lists no image",
            ))
        }
        many if many.iter().all(|d| name_of(d).is_none()) => {
            let platforms: Vec<String> = many
                .iter()
                .map(|d| {
                    d.platform.as_ref().map_or("no platform".into(), |p| {
                        format!("{}/{}", p.os, p.architecture)
                    })
                })
                .collect();
            return Err(ImageError::archive(
                members.describe(),
                format!(
                    "the layout holds {} unnamed images ({}), not one for linux/{}: import a layout of one image",
                    many.len(),
                    platforms.join(", "),
                    host_arch()
                ),
            ));
        }
        many => {
            let names: Vec<String> = many.iter().filter_map(|d| name_of(d)).collect();
            let why = match want {
                Some(w) => format!("none of its {} images is named {w}", many.len()),
                None => format!("the layout holds {} images", many.len()),
            };
            return Err(ImageError::archive(
                members.describe(),
                format!("{why} ({}); choose one with --name", names.join(", ")),
            ));
        }
    };
    let names = name_of(chosen)
        .filter(|n| n.contains(':') || n.contains('/'))
        .into_iter()
        .collect();
    let mut digest = Digest::parse(&chosen.digest)?;
    let mut media_type = chosen.media_type.clone();
    // A multi-platform image index: pick this machine's platform.
    for _ in 0..4 {
        if !media_type.contains("index") && !media_type.contains("manifest.list") {
            break;
        }
        let (nested, bytes): (OciIndex, _) = members.read_json(&blob_name(&digest))?;
        digest.verify(&Digest::of(&bytes), "image index")?;
        let d = nested
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(is_host_platform))
            .ok_or_else(|| {
                ImageError::archive(
                    members.describe(),
                    format!("the image has no variant for linux/{}", host_arch()),
                )
            })?;
        digest = Digest::parse(&d.digest)?;
        media_type = d.media_type.clone();
    }
    let (manifest, bytes): (OciManifest, _) = members.read_json(&blob_name(&digest))?;
    digest.verify(&Digest::of(&bytes), "image manifest")?;
    let config_digest = Digest::parse(&manifest.config.digest)?;
    let (config, diff_ids) = read_config(members, &blob_name(&config_digest), &config_digest)?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::archive(
            members.describe(),
            "the manifest and the image config disagree on the number of layers",
        ));
    }
    let layers = manifest
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(d, diff_id)| {
            let digest = Digest::parse(&d.digest)?;
            Ok(Layer {
                diff_id: Some(diff_id),
                ..Layer {
                    digest: Some(digest.clone()),
                    ..members.locate(&blob_name(&digest))?
                }
            })
        })
        .collect::<Result<_, ImageError>>()?;
    Ok(PreparedImage {
        config,
        config_digest,
        layers,
        names,
    })
}

/// The image (or images, with `all`) of an OCI layout or docker-archive; `None` for anything
/// else.
fn from_members(
    members: Members,
    want: Option<&str>,
    all: bool,
) -> Result<Option<ImportSource>, ImageError> {
    // A system's tree is a root filesystem, whatever files of those names it has too (a web
    // application's manifest.json, say): no image archive or layout has /etc or /usr.
    if ["etc", "usr", "bin"].iter().any(|d| members.has_under(d)) {
        return Ok(None);
    }
    // (Docker 25's `docker save` writes both: its manifest.json names the images in full,
    // where its index.json has only their tags.) A layout's oci-layout file is not
    // insisted on where its blobs are there.
    let layout = members.has("oci-layout") || members.has_under("blobs");
    if members.has("manifest.json") {
        docker_archive(&members, want, all).map(Some)
    } else if layout && members.has("index.json") {
        let image = oci_layout(&members, want)?;
        Ok(Some(ImportSource::Image(Box::new(image))))
    } else {
        Ok(None)
    }
}

/// Decides what `path` is: the image `want` names in it, or its only one; with `all`, a
/// docker-archive's several images all. `staging` is a private directory where a
/// compressed image archive is decompressed (random access to its members needs an
/// uncompressed file), and a squashfs file unpacked.
pub fn prepare(
    path: &Path,
    want: Option<&str>,
    all: bool,
    staging: &Path,
) -> Result<ImportSource, ImageError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ImageError::archive(path, "no such file or directory"),
        _ => ImageError::Io {
            context: "cannot read",
            path: path.into(),
            source: e,
        },
    })?;
    if meta.is_dir() {
        return Ok(from_members(Members::Dir(path.to_path_buf()), want, all)?
            .unwrap_or_else(|| ImportSource::RootfsDir(path.to_path_buf())));
    }
    let mut file = File::open(path).map_err(ImageError::io("cannot open", path))?;
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(read) => n += read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io("cannot read", path)(e)),
        }
    }
    let magic = &head[..n];
    // A squashfs file (enroot's), or a SIF file's squashfs partition (Apptainer's): unpacked
    // to a tarball, with what it says of how it runs.
    let squashfs = match (magic.starts_with(b"hsqs"), crate::sif::is_sif(magic)) {
        (true, _) => Some(path.to_path_buf()),
        (_, true) => {
            let partition = staging.join("partition.sqfs");
            crate::sif::extract(path, &partition)?;
            Some(partition)
        }
        _ => None,
    };
    if let Some(image) = squashfs {
        let tar = staging.join("squashfs.tar");
        crate::squash::unpack(&image, &tar)?;
        let settings = crate::squash::settings(&image)?;
        return Ok(ImportSource::RootfsTar { tar, settings });
    }
    let tool = crate::compress::external_tool(magic);
    let compressed = tool.is_some()
        || magic.starts_with(&[0x1f, 0x8b])
        || magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let not_tar = |e: io::Error| {
        ImageError::archive(
            path,
            format!("not a tar archive, OCI layout or docker-archive ({e})"),
        )
    };
    if !compressed {
        if !tar_header(magic) {
            return Err(ImageError::archive(
                path,
                "not an image berth can import: expected a docker-archive or OCI archive, a root filesystem tarball (.tar, .tar.gz, .tar.zst, .tar.xz, .tar.bz2) or directory, a squashfs file or an Apptainer SIF image",
            ));
        }
        let members = Members::index_tar(path)?;
        return Ok(
            from_members(members, want, all)?.unwrap_or_else(|| ImportSource::RootfsTar {
                tar: path.to_path_buf(),
                settings: RootfsSettings::default(),
            }),
        );
    }
    // Compressed: an image archive needs its members addressable, so decompress it once into
    // staging; a rootfs tarball is read in place by the flattener, unless the host's xz or
    // bzip2 has to decompress it (the flattener's own decompression is gzip's and zstd's).
    file.seek(SeekFrom::Start(0))
        .map_err(ImageError::io("cannot read", path))?;
    let mut plain = match tool {
        Some((tool, package)) => {
            crate::compress::through_tool(file, tool).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ImageError::ToolMissing { tool, package },
                _ => ImageError::ToolFailed {
                    tool,
                    message: e.to_string(),
                },
            })?
        }
        None => decompress(file).map_err(not_tar)?,
    };
    let copy = staging.join("archive.tar");
    let mut out =
        io::BufWriter::new(File::create(&copy).map_err(ImageError::io("cannot write", &copy))?);
    // (A read's failure is the archive's; a write's, the store's disk.)
    let write_err = |e: io::Error| match e.raw_os_error() {
        Some(libc::ENOSPC) => ImageError::NoSpace(staging.to_path_buf()),
        _ => ImageError::io("cannot write", &copy)(e),
    };
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ImageError::archive(
                    path,
                    format!("corrupt or truncated archive: {e}"),
                ))
            }
        };
        out.write_all(&buf[..n]).map_err(write_err)?;
    }
    out.flush().map_err(write_err)?;
    drop(out);
    let members = Members::index_tar(&copy)?;
    Ok(match from_members(members, want, all)? {
        Some(source) => source,
        None if tool.is_some() => ImportSource::RootfsTar {
            tar: copy,
            settings: RootfsSettings::default(),
        },
        None => {
            std::fs::remove_file(&copy).map_err(ImageError::io("cannot remove", &copy))?;
            ImportSource::RootfsTar {
                tar: path.to_path_buf(),
                settings: RootfsSettings::default(),
            }
        }
    })
}

/// Whether `block` starts a tar archive: a header whose checksum holds (the sum of its bytes,
/// the checksum field counted as spaces; as unsigned bytes, or as signed ones, which some old
/// tars summed), or the zero block of an empty archive.
fn tar_header(block: &[u8]) -> bool {
    let Some(block) = block.get(..512) else {
        return false;
    };
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let field = &block[148..156];
    let digits = std::str::from_utf8(field)
        .ok()
        .map(|f| f.trim_matches(|c: char| c == '\0' || c == ' '));
    let Some(stored) = digits.and_then(|d| u32::from_str_radix(d, 8).ok()) else {
        return false;
    };
    let byte = |(i, &b): (usize, &u8)| if (148..156).contains(&i) { b' ' } else { b };
    let unsigned: i64 = block.iter().enumerate().map(|e| i64::from(byte(e))).sum();
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|e| i64::from(byte(e) as i8))
        .sum();
    [unsigned, signed].contains(&i64::from(stored))
}

/// Writes a directory tree as a tar stream: sorted, symlinks kept as symlinks, hardlinks as
/// hardlinks, device nodes and sockets left out. Returns how many device nodes were dropped.
/// With `unreadable`, a file or directory this process may not read is left out (a
/// directory's entry stays, empty) and recorded there, instead of failing the whole.
pub fn tar_directory(
    root: &Path,
    out: impl Write,
    mut unreadable: Option<&mut Vec<PathBuf>>,
) -> Result<u64, ImageError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut seen: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dropped = 0;
    let mut stack = vec![PathBuf::new()];
    let root_dev = std::fs::metadata(root)
        .map_err(ImageError::io("cannot read", root))?
        .dev();
    let write_err = |e: io::Error| ImageError::Io {
        context: "cannot write the image from",
        path: root.into(),
        source: e,
    };
    let mut denied = |e: &io::Error, rel: &Path| match (&mut unreadable, e.kind()) {
        (Some(list), io::ErrorKind::PermissionDenied) => {
            list.push(rel.to_path_buf());
            true
        }
        _ => false,
    };
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let listed = std::fs::read_dir(&dir).and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        });
        let mut names = match listed {
            Ok(names) => names,
            Err(e) if denied(&e, &rel) => continue,
            Err(e) => return Err(ImageError::io("cannot read directory", &dir)(e)),
        };
        names.sort();
        // Subdirectories are pushed in reverse so that they pop in sorted order.
        let mut subdirs = Vec::new();
        for name in names {
            let rel_path = rel.join(&name);
            let full = root.join(&rel_path);
            let meta =
                std::fs::symlink_metadata(&full).map_err(ImageError::io("cannot read", &full))?;
            let ft = meta.file_type();
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_mode(meta.mode() & 0o7777);
            if ft.is_dir() {
                header.set_size(0);
                builder
                    .append_data(&mut header, &rel_path, io::empty())
                    .map_err(write_err)?;
                // A kernel's file system mounted in the tree (a chroot's /proc, /sys,
                // /dev/pts): its mount point, not its contents, as a container gets its own.
                if meta.dev() == root_dev || !kernel_filesystem(&full) {
                    subdirs.push(rel_path);
                }
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&full)
                    .map_err(ImageError::io("cannot read symlink", &full))?;
                builder
                    .append_link(&mut header, &rel_path, &target)
                    .map_err(write_err)?;
            } else if ft.is_file() {
                if let Some(first) = seen.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, &rel_path, first)
                        .map_err(write_err)?;
                    continue;
                }
                let mut file = match File::open(&full) {
                    Ok(file) => file,
                    Err(e) if denied(&e, &rel_path) => continue,
                    Err(e) => return Err(ImageError::io("cannot read", &full)(e)),
                };
                // As long as it was when looked at: a file that changed meanwhile would
                // leave the stream's header and data at odds.
                let mut limited = (&mut file).take(meta.len());
                builder
                    .append_data(&mut header, &rel_path, &mut limited)
                    .map_err(write_err)?;
                let short = limited.limit() > 0;
                if short || file.read(&mut [0u8]).is_ok_and(|n| n > 0) {
                    return Err(ImageError::archive(
                        &full,
                        "changed while berth read it: import the tree again once nothing writes to it",
                    ));
                }
                if meta.nlink() > 1 {
                    seen.insert((meta.dev(), meta.ino()), rel_path);
                }
            } else if ft_is_fifo(&meta) {
                header.set_size(0);
                builder
                    .append_data(&mut header, &rel_path, io::empty())
                    .map_err(write_err)?;
            } else if !std::os::unix::fs::FileTypeExt::is_socket(&ft) {
                // (A socket is a running program's, not the image's: left out unsaid.)
                dropped += 1;
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(write_err)?;
    Ok(dropped)
}

/// Whether `dir` is the root of one of the kernel's own file systems (proc, sysfs, devpts,
/// cgroup, debugfs and their kin), whose files describe the running system, not an image.
fn kernel_filesystem(dir: &Path) -> bool {
    const MAGICS: [i64; 16] = [
        0x9fa0,     // proc
        0x62656572, // sysfs
        0x1cd1,     // devpts
        0x27e0eb,   // cgroup
        0x63677270, // cgroup2
        0x73636673, // securityfs
        0x64626720, // debugfs
        0x74726163, // tracefs
        0xcafe4a11, // bpf
        0x6165676c, // pstore
        0x19800202, // mqueue
        0x42494e4d, // binfmt_misc
        0x62656570, // configfs
        0x65735543, // fusectl
        0xde5e81e4, // efivarfs
        0xf97cff8c, // selinuxfs
    ];
    let Ok(path) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))
    else {
        return false;
    };
    // SAFETY: an all-zero statfs is a valid out-parameter; the path is NUL-terminated.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs(2) writes into the struct we own.
    let r = unsafe { libc::statfs(path.as_ptr(), &mut fs) };
    r == 0 && MAGICS.contains(&(fs.f_type as i64))
}

fn ft_is_fifo(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    ft.is_fifo() && !ft.is_block_device() && !ft.is_char_device()
}

#[cfg(test)]
mod tests {
    use super::tar_header;

    #[test]
    fn a_tar_archive_is_told_by_its_first_headers_checksum() {
        let mut header = tar::Header::new_gnu();
        header.set_path("etc/hostname").unwrap();
        header.set_size(5);
        header.set_cksum();
        assert!(tar_header(header.as_bytes()));
        let mut old = tar::Header::new_old();
        old.set_path("bin/sh").unwrap();
        old.set_cksum();
        assert!(tar_header(old.as_bytes()));
        // An empty archive: zero blocks.
        assert!(tar_header(&[0; 1024]));
        // One byte changed, text, too short.
        let mut broken = *header.as_bytes();
        broken[0] ^= 1;
        assert!(!tar_header(&broken));
        assert!(!tar_header(
            "root:x:0:0:root:/root:/bin/sh\n".repeat(20).as_bytes()
        ));
        assert!(!tar_header(&header.as_bytes()[..100]));
    }
}
