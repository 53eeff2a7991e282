//! The content-addressed image store.
//!
//! ```text
//! <root>/images/<hex>/image.sqfs    the flattened image, one file (what nodes mount)
//! <root>/images/<hex>/config.json   the OCI image config, byte for byte (its sha256 is <hex>)
//! <root>/images/<hex>/meta.json     where it came from, when, how big
//! <root>/refs.json                  name:tag -> digest
//! <root>/rootfs/<hex>/              unpacked copy for unprivileged runs, made on first use
//! <root>/tmp/<pid>-<n>/             staging; invisible until renamed into place
//! <root>/lock                       flock serialising updates of refs.json
//! ```
//!
//! Crash safety comes from rename(2): an image is built completely in a staging directory and
//! appears in `images/` with one rename, so an interrupted import leaves only a staging
//! directory, which the next import removes once its process is gone. Two concurrent imports
//! of the same image both build; the first rename wins and the second discards its copy.

use crate::archive::{self, ImportSource};
use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::flatten::{self, Layer};
use crate::registry::{Client, PullReference, RegistryOptions};
use crate::{squash, ImageError, Reference};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The part of an OCI image config that running a container needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageConfig {
    #[serde(
        rename = "Env",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "Labels",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub labels: BTreeMap<String, String>,
}

fn null_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct FullConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    config: Option<ImageConfig>,
}

/// One image as `berth image ls` and `inspect` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    #[serde(default)]
    pub names: Vec<String>,
    pub source: String,
    /// Seconds since the epoch.
    pub imported: u64,
    /// Size of the squashfs file in bytes.
    pub size: u64,
    pub layers: usize,
    pub architecture: String,
    pub config: ImageConfig,
    /// Device nodes left out of the image (every container mount is nodev).
    #[serde(default)]
    pub devices_dropped: u64,
    /// The SHA-256 of the squashfs file, which nodes that fetch it check what they got
    /// against (computed at import; `None` for images imported before berth kept it).
    #[serde(default)]
    pub squashfs_digest: Option<Digest>,
}

impl ImageRecord {
    /// The image's architecture (OCI's name) where it is not this machine's: its programs
    /// run here only through an emulator.
    pub fn foreign_architecture(&self) -> Option<&str> {
        let arch = self.architecture.as_str();
        (!arch.is_empty() && arch != archive::host_arch()).then_some(arch)
    }
}

#[derive(Debug, Default, Clone)]
pub struct ImportOptions {
    /// Name to give the image, overriding any name in the archive.
    pub name: Option<String>,
}

pub struct Store {
    root: PathBuf,
}

/// An exclusive flock on the store's lock file, released on drop.
struct Lock(#[allow(dead_code, reason = "held for its flock, released on drop")] File);

impl Lock {
    fn take(path: &Path) -> Result<Lock, ImageError> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(ImageError::io("cannot open", path))?;
        // SAFETY: flock on a descriptor we own; the lock dies with the descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(ImageError::io("cannot lock", path)(
                io::Error::last_os_error(),
            ));
        }
        Ok(Lock(file))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes a tree even when the image made some of its directories read-only.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(path);
            fs::remove_dir_all(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn make_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

/// Writes `bytes` to `path` durably.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut f = File::create(path).map_err(ImageError::io("cannot write", path))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(ImageError::io("cannot write", path))
}

impl Store {
    /// Opens the store at `root`. Nothing is made on disk until something is written to it
    /// ([`Store::made`]): a command that only reads it (a `berth exec` of an image it does
    /// not have) leaves no empty store behind.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, ImageError> {
        Ok(Store { root: root.into() })
    }

    /// Makes the store's directories where they are missing, before anything is written.
    fn made(&self) -> Result<(), ImageError> {
        let root = &self.root;
        // A user's own store is theirs alone (as podman's): made so, where berth makes it.
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 && !root.exists() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(ImageError::io(
                    "cannot create the image store directory",
                    root,
                ))?;
        }
        for dir in ["images", "tmp", "rootfs"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(ImageError::io(
                "cannot create the image store directory",
                &path,
            ))?;
        }
        Ok(())
    }

    /// The store's lock, taken (the store made first).
    fn lock(&self) -> Result<Lock, ImageError> {
        self.made()?;
        Lock::take(&self.root.join("lock"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn image_dir(&self, id: &Digest) -> PathBuf {
        self.root.join("images").join(id.hex())
    }

    pub fn squashfs(&self, record: &ImageRecord) -> PathBuf {
        self.image_dir(&record.id).join("image.sqfs")
    }

    /// Where [`Store::rootfs_dir`] unpacks the image.
    fn unpacked(&self, id: &Digest) -> PathBuf {
        self.root.join("rootfs").join(id.hex())
    }

    /// What containers of the image start from: its squashfs file, and its unpacked copy.
    pub fn files(&self, record: &ImageRecord) -> [PathBuf; 2] {
        [self.squashfs(record), self.unpacked(&record.id)]
    }

    /// A fresh staging directory, after removing any left by processes that died.
    fn staging(&self) -> Result<PathBuf, ImageError> {
        self.made()?;
        let tmp = self.root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let pid = e
                    .file_name()
                    .to_string_lossy()
                    .split('-')
                    .next()
                    .and_then(|p| p.parse().ok());
                if pid.is_some_and(|p| !process_alive(p)) {
                    let _ = remove_tree(&e.path());
                }
            }
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for n in 0u32.. {
            let dir = tmp.join(format!("{}-{nanos}{n}", std::process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ImageError::io("cannot create", &dir)(e)),
            }
        }
        unreachable!("u32 range exhausted while creating a staging directory")
    }

    fn read_refs(&self) -> Result<BTreeMap<String, Digest>, ImageError> {
        let path = self.root.join("refs.json");
        match fs::read(&path) {
            // (Docker Hub's names kept before berth took them in their familiar form are
            // read in it.)
            Ok(bytes) => serde_json::from_slice::<BTreeMap<String, Digest>>(&bytes)
                .map(|refs| {
                    refs.into_iter()
                        .map(|(name, id)| (Reference::full_name(&name), id))
                        .collect()
                })
                .map_err(|e| {
                    ImageError::archive(
                        &path,
                        format!(
                            "the store's name table is corrupt ({e}); remove it and re-tag images"
                        ),
                    )
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(ImageError::io("cannot read", &path)(e)),
        }
    }

    /// Changes the name table under the store lock, replacing it atomically.
    fn update_refs<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Digest>) -> T,
    ) -> Result<T, ImageError> {
        let _lock = self.lock()?;
        let mut refs = self.read_refs()?;
        let out = change(&mut refs);
        let path = self.root.join("refs.json");
        let tmp = self.root.join(format!("refs.json.{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(&refs).expect("a map of strings serialises");
        write_file(&tmp, &bytes)?;
        fs::rename(&tmp, &path).map_err(ImageError::io("cannot replace", &path))?;
        Ok(out)
    }

    /// Imports an image file read from `input` (an upload: a docker-archive, OCI archive,
    /// root filesystem tarball, squashfs or SIF file, named `file` where it came from), as
    /// [`Store::import`] imports a file; `origin` is what `inspect` shows it came from. The
    /// file is kept in a staging directory while it is imported, and goes with it whatever
    /// happens; what is wrong with it is said of `file`.
    pub fn import_upload(
        &self,
        mut input: impl io::Read,
        file: &str,
        origin: &str,
        options: &ImportOptions,
    ) -> Result<ImageRecord, ImageError> {
        let name = options.name.as_deref().map(Reference::parse).transpose()?;
        self.with_staging(|staging| {
            let path = staging.join("uploaded");
            let mut out =
                fs::File::create(&path).map_err(ImageError::io("cannot create", &path))?;
            io::copy(&mut input, &mut out).map_err(ImageError::io("cannot write", &path))?;
            drop(out);
            let want = name.as_ref().map(|n| n.to_string());
            let source = archive::prepare(&path, want.as_deref(), false, staging)
                .map_err(|e| said_of(e, &path, file))?;
            self.build(source, name, origin, staging)
        })
    }

    /// Imports an archive, layout or root filesystem; see [`archive::prepare`] for the kinds.
    /// `-` is standard input (`docker save IMAGE | berth image import -`); it, and a pipe or
    /// another stream the path names, is spooled first (an archive is read out of order).
    pub fn import(&self, path: &Path, options: &ImportOptions) -> Result<ImageRecord, ImageError> {
        let mut records = self.import_each(path, options, false)?;
        Ok(records.remove(0))
    }

    /// [`Store::import`], where a docker-archive of several images without `--name` imports
    /// each of them, named by its RepoTags (as `docker load` loads them): one record each,
    /// in the archive's order. One that fails leaves those before it imported.
    pub fn import_all(
        &self,
        path: &Path,
        options: &ImportOptions,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        self.import_each(path, options, options.name.is_none())
    }

    fn import_each(
        &self,
        path: &Path,
        options: &ImportOptions,
        all: bool,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        use std::os::unix::fs::FileTypeExt;
        let name = options.name.as_deref().map(Reference::parse).transpose()?;
        let stdin = path == Path::new("-");
        let stream = stdin
            || fs::metadata(path).is_ok_and(|m| {
                let t = m.file_type();
                t.is_fifo() || t.is_char_device() || t.is_socket()
            });
        self.with_staging(|staging| {
            let want = name.as_ref().map(|n| n.to_string());
            let (path, origin) = match stream {
                false => (path.to_path_buf(), path.display().to_string()),
                true => {
                    let spooled = staging.join("stream");
                    let mut from: Box<dyn io::Read> = match stdin {
                        true => Box::new(io::stdin().lock()),
                        false => {
                            Box::new(File::open(path).map_err(ImageError::io("cannot read", path))?)
                        }
                    };
                    let mut to = File::create(&spooled)
                        .map_err(ImageError::io("cannot create", &spooled))?;
                    io::copy(&mut from, &mut to)
                        .map_err(ImageError::io("cannot spool the stream into", &spooled))?;
                    let origin = if stdin {
                        "standard input".into()
                    } else {
                        path.display().to_string()
                    };
                    (spooled, origin)
                }
            };
            let source = archive::prepare(&path, want.as_deref(), all, staging)
                .map_err(|e| said_of(e, &path, &origin))?;
            let ImportSource::Images(images) = source else {
                return Ok(vec![self.build(source, name, &origin, staging)?]);
            };
            // Each built in a staging directory of its own, beside the archive's copy.
            let mut records = Vec::with_capacity(images.len());
            for (n, image) in images.into_iter().enumerate() {
                let own = staging.join(format!("image-{n}"));
                fs::create_dir(&own).map_err(ImageError::io("cannot create", &own))?;
                let source = ImportSource::Image(Box::new(image));
                records.push(self.build(source, None, &origin, &own)?);
            }
            Ok(records)
        })
    }

    /// Pulls an image from a registry: manifest, config and layers into staging (each
    /// digest-checked), then the same flattening as an import.
    pub fn pull(
        &self,
        reference: &str,
        options: &RegistryOptions,
    ) -> Result<ImageRecord, ImageError> {
        self.pull_as(reference, None, options)
    }

    /// [`Store::pull`], naming the image `name` instead of as the reference names it.
    pub fn pull_as(
        &self,
        reference: &str,
        name: Option<&str>,
        options: &RegistryOptions,
    ) -> Result<ImageRecord, ImageError> {
        let target = PullReference::parse(reference)?;
        let name = Reference::parse(name.unwrap_or(&target.name()))?;
        let mut client = Client::connect(&target, options)?;
        let (manifest, config, config_digest) = client.manifest(&target)?;
        if self.image_dir(&config_digest).join("meta.json").exists() {
            self.update_refs(|refs| refs.insert(name.to_string(), config_digest.clone()))?;
            return self.record(&config_digest, &self.read_refs()?);
        }
        self.with_staging(|staging| {
            let registry_error = |message: String| ImageError::Registry {
                registry: target.registry.clone(),
                message,
            };
            let diff_ids = archive::diff_ids(&config).map_err(registry_error)?;
            if diff_ids.len() != manifest.layers.len() {
                return Err(registry_error(
                    "the manifest and the image config disagree on the number of layers".into(),
                ));
            }
            let blobs = staging.join("blobs");
            fs::create_dir(&blobs).map_err(ImageError::io("cannot create", &blobs))?;
            let mut layers = Vec::with_capacity(diff_ids.len());
            for (descriptor, diff_id) in manifest.layers.iter().zip(diff_ids) {
                let digest = Digest::parse(&descriptor.digest)?;
                let path = blobs.join(digest.hex());
                if !path.exists() {
                    client.download(&target.repository, &digest, &path)?;
                }
                layers.push(Layer {
                    digest: Some(digest),
                    diff_id: Some(diff_id),
                    ..Layer::file(path)
                });
            }
            let image = archive::PreparedImage {
                config,
                config_digest,
                layers,
                names: Vec::new(),
            };
            self.build(
                ImportSource::Image(Box::new(image)),
                Some(name),
                reference,
                staging,
            )
        })
    }

    /// Flattens `layers` into the squashfs file `sqfs`: the single-read fast path, or, for
    /// the rare top layer that rewrites its own entries, the two-pass algorithm.
    fn squash_layers(
        &self,
        layers: &[Layer],
        sqfs: &Path,
        spool: &Path,
    ) -> Result<flatten::FlattenStats, ImageError> {
        match squash::build(sqfs, &self.root, None, |w| {
            flatten::flatten(layers, spool, w)
        }) {
            Err(ImageError::NeedsTwoPasses) => squash::build(sqfs, &self.root, None, |w| {
                flatten::flatten_two_pass(layers, spool, w)
            }),
            other => other,
        }
    }

    /// Runs `f` with a fresh staging directory, removed afterwards whatever happens.
    fn with_staging<T>(
        &self,
        f: impl FnOnce(&Path) -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        let staging = self.staging()?;
        let result = f(&staging);
        let _ = remove_tree(&staging);
        result
    }

    /// Builds the squashfs for `source` in `staging` (unless the image is already stored),
    /// publishes it and names it. `origin` is what it came from, for `inspect`.
    fn build(
        &self,
        source: ImportSource,
        name: Option<Reference>,
        origin: &str,
        staging: &Path,
    ) -> Result<ImageRecord, ImageError> {
        let path = Path::new(origin);
        let sqfs = staging.join("image.sqfs");
        let spool = staging.join("spool");
        fs::create_dir(&spool).map_err(ImageError::io("cannot create", &spool))?;
        let (config, id, layers, devices_dropped, mut names) = match source {
            ImportSource::Image(image) => {
                let existing = self.image_dir(&image.config_digest).join("meta.json");
                let dropped = if existing.exists() {
                    0
                } else {
                    self.squash_layers(&image.layers, &sqfs, &spool)?
                        .devices_dropped
                };
                (
                    image.config,
                    image.config_digest,
                    image.layers.len(),
                    dropped,
                    image.names,
                )
            }
            ImportSource::RootfsTar { tar, settings } => {
                let stats = self.squash_layers(&[Layer::file(tar)], &sqfs, &spool)?;
                let config = rootfs_config(&stats.diff_ids, settings);
                (
                    config.clone(),
                    Digest::of(&config),
                    1,
                    stats.devices_dropped,
                    Vec::new(),
                )
            }
            ImportSource::Images(_) => unreachable!("import_each builds several one by one"),
            ImportSource::RootfsDir(dir) => {
                let (dropped, diff_id) = squash::build(&sqfs, &self.root, None, |w| {
                    // The tree's own stream is hashed (its id); the mount points it lacks
                    // are added after it.
                    let mut ended = squash::EndHeld::new(w);
                    let mut hashing = HashingWriter::new(&mut ended);
                    let dropped = archive::tar_directory(&dir, &mut hashing, None)?;
                    let digest = hashing.digest();
                    ended
                        .end(|path| {
                            std::fs::symlink_metadata(dir.join(path))
                                .ok()
                                .map(|m| m.is_dir())
                        })
                        .map_err(ImageError::io("cannot write the image from", &dir))?;
                    Ok((dropped, digest))
                })?;
                let config = rootfs_config(&[diff_id], Default::default());
                (config.clone(), Digest::of(&config), 1, dropped, Vec::new())
            }
        };
        if let Some(n) = &name {
            names = vec![n.to_string()];
        }
        let names: Vec<String> = names
            .iter()
            .map(|n| match Reference::parse(n) {
                Ok(r) => Ok(r.to_string()),
                // The archive's own name: say where it came from, and the way round it.
                Err(ImageError::InvalidName { why, .. }) if name.is_none() => {
                    Err(ImageError::archive(
                        path,
                        format!("the archive names the image {n}, which is no valid name ({why}): import it with --name NAME"),
                    ))
                }
                Err(e) => Err(e),
            })
            .collect::<Result<_, _>>()?;

        let target = self.image_dir(&id);
        if !target.join("meta.json").exists() {
            let full: FullConfig = serde_json::from_slice(&config)
                .map_err(|e| ImageError::archive(path, format!("invalid image config: {e}")))?;
            let size = fs::metadata(&sqfs)
                .map_err(ImageError::io("cannot read", &sqfs))?
                .len();
            // Read once more, from the page cache, for the digest nodes check it by.
            let squashfs_digest = File::open(&sqfs)
                .and_then(|f| HashingReader::new(f).finish())
                .map_err(ImageError::io("cannot read", &sqfs))?;
            let record = ImageRecord {
                id: id.clone(),
                names: Vec::new(),
                source: origin.to_string(),
                imported: now(),
                size,
                layers,
                architecture: full.architecture,
                config: full.config.unwrap_or_default(),
                devices_dropped,
                squashfs_digest: Some(squashfs_digest),
            };
            let built = staging.join("image");
            fs::create_dir(&built).map_err(ImageError::io("cannot create", &built))?;
            fs::rename(&sqfs, built.join("image.sqfs"))
                .map_err(ImageError::io("cannot move", &sqfs))?;
            File::open(built.join("image.sqfs"))
                .and_then(|f| f.sync_all())
                .map_err(ImageError::io("cannot sync", &built))?;
            self.publish(&built, &record, &config)?;
        }
        self.update_refs(|refs| {
            for n in &names {
                refs.insert(n.clone(), id.clone());
            }
        })?;
        // The names this import gave first (the image may have had others).
        let mut record = self.record(&id, &self.read_refs()?)?;
        record.names.sort_by_key(|n| !names.contains(n));
        Ok(record)
    }

    /// The SHA-256 of `record`'s squashfs file: as recorded at import, or (for an image
    /// imported before berth kept it) computed now and recorded.
    pub fn squashfs_digest(&self, record: &ImageRecord) -> Result<Digest, ImageError> {
        if let Some(d) = &record.squashfs_digest {
            return Ok(d.clone());
        }
        let sqfs = self.squashfs(record);
        let digest = File::open(&sqfs)
            .and_then(|f| HashingReader::new(f).finish())
            .map_err(ImageError::io("cannot read", &sqfs))?;
        let _lock = self.lock()?;
        let meta = self.image_dir(&record.id).join("meta.json");
        let tmp = meta.with_extension("json.tmp");
        let kept = ImageRecord {
            names: Vec::new(),
            squashfs_digest: Some(digest.clone()),
            ..record.clone()
        };
        write_file(
            &tmp,
            &serde_json::to_vec_pretty(&kept).expect("record serialises"),
        )?;
        fs::rename(&tmp, &meta).map_err(ImageError::io("cannot write", &meta))?;
        Ok(digest)
    }

    fn record(
        &self,
        id: &Digest,
        refs: &BTreeMap<String, Digest>,
    ) -> Result<ImageRecord, ImageError> {
        let path = self.image_dir(id).join("meta.json");
        let bytes = fs::read(&path).map_err(ImageError::io("cannot read", &path))?;
        let mut record: ImageRecord = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::archive(&path, format!("corrupt image record: {e}")))?;
        record.names = refs
            .iter()
            .filter(|(_, d)| *d == id)
            .map(|(n, _)| n.clone())
            .collect();
        Ok(record)
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let refs = self.read_refs()?;
        let dir = self.root.join("images");
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            // A store nothing was written to yet.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            entries => entries.map_err(ImageError::io("cannot read", &dir))?,
        };
        for e in entries {
            let e = e.map_err(ImageError::io("cannot read", &dir))?;
            let Ok(id) = Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy()))
            else {
                continue;
            };
            out.push(self.record(&id, &refs)?);
        }
        out.sort_by(|a, b| b.imported.cmp(&a.imported).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Finds an image by name (`busybox`, `lab/app:1`), full digest, or unique id prefix.
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord, ImageError> {
        let refs = self.read_refs()?;
        if let Ok(r) = Reference::parse(reference) {
            if let Some(id) = refs.get(&r.to_string()) {
                return self.record(id, &refs);
            }
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<ImageRecord> = self
                .list()?
                .into_iter()
                .filter(|r| r.id.hex().starts_with(hex))
                .collect();
            match matches.len() {
                0 => {}
                1 => return Ok(matches.into_iter().next().expect("one match")),
                n => return Err(ImageError::Ambiguous(reference.to_string(), n)),
            }
        }
        Err(ImageError::NotFound(reference.to_string()))
    }

    /// Gives the image that `image` (a name or id) names the name `name` too (as `docker
    /// tag`), which leaves whatever image had it before.
    pub fn tag(&self, image: &str, name: &str) -> Result<ImageRecord, ImageError> {
        let record = self.resolve(image)?;
        let name = Reference::parse(name)?;
        self.update_refs(|refs| refs.insert(name.to_string(), record.id.clone()))?;
        self.record(&record.id, &self.read_refs()?)
    }

    /// `rm NAME` removes the name, and the image once no name is left; `rm ID` removes the
    /// image and all its names. Returns the ids of images deleted. An image that `busy` says
    /// a running container uses (see [`Store::files`]) is neither deleted nor untagged.
    pub fn remove(
        &self,
        reference: &str,
        busy: impl Fn(&ImageRecord) -> Option<String>,
    ) -> Result<Vec<Digest>, ImageError> {
        let record = self.resolve(reference)?;
        let by_name = Reference::parse(reference)
            .ok()
            .map(|r| r.to_string())
            .filter(|n| record.names.contains(n));
        if by_name.is_none() || record.names.len() == 1 {
            if let Some(by) = busy(&record) {
                return Err(ImageError::InUse {
                    image: reference.to_string(),
                    by,
                });
            }
        }
        let left = self.update_refs(|refs| {
            match &by_name {
                Some(n) => {
                    refs.remove(n);
                }
                None => refs.retain(|_, d| *d != record.id),
            }
            refs.values().any(|d| *d == record.id)
        })?;
        if left {
            return Ok(Vec::new());
        }
        self.delete(&record.id)?;
        Ok(vec![record.id])
    }

    /// Takes the name `name` off its image whatever uses it: the image stays, nameless, and
    /// goes with a prune once nothing uses it (as `docker rmi -f NAME` leaves the image of a
    /// container).
    pub fn untag(&self, name: &str) -> Result<(), ImageError> {
        let name = Reference::parse(name)?.to_string();
        let found = self.update_refs(|refs| refs.remove(&name).is_some())?;
        match found {
            true => Ok(()),
            false => Err(ImageError::NotFound(name)),
        }
    }

    /// Deletes images without a name, but those that `busy` says a running container uses,
    /// and leftovers of interrupted imports.
    pub fn prune(
        &self,
        busy: impl Fn(&ImageRecord) -> Option<String>,
    ) -> Result<Vec<Digest>, ImageError> {
        // (Nothing to sweep in a store nothing was written to.)
        if self.root.exists() {
            let _ = self.staging().map(|d| remove_tree(&d));
        }
        let mut deleted = Vec::new();
        for record in self.list()? {
            if record.names.is_empty() && busy(&record).is_none() {
                self.delete(&record.id)?;
                deleted.push(record.id);
            }
        }
        Ok(deleted)
    }

    /// Makes the image disappear at once (one rename), then frees the space.
    fn delete(&self, id: &Digest) -> Result<(), ImageError> {
        self.with_staging(|staging| self.delete_in(id, staging))
    }

    fn delete_in(&self, id: &Digest, staging: &Path) -> Result<(), ImageError> {
        for (from, name) in [(self.image_dir(id), "image"), (self.unpacked(id), "rootfs")] {
            match fs::rename(&from, staging.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("cannot remove", &from)(e)),
            }
        }
        Ok(())
    }

    /// The image unpacked into a directory, which a container starts from without mounting
    /// anything of its own (a container of an unprivileged user cannot mount squashfs, and
    /// root's one-shot containers start faster from it): made on first use (rdsquashfs, from
    /// squashfs-tools-ng) and kept. Root's copy keeps the image's owners and extended
    /// attributes, so its set-user-ID files are root's on the host's disk: `rootfs/` is then
    /// made root's alone (0700), so that no one else can reach them. A user's own copy is
    /// all theirs.
    pub fn rootfs_dir(&self, record: &ImageRecord) -> Result<PathBuf, ImageError> {
        let parent = self.root.join("rootfs");
        let target = self.unpacked(&record.id);
        if target.exists() {
            return Ok(target);
        }
        self.made()?;
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            fs::set_permissions(&parent, fs::Permissions::from_mode(0o700))
                .map_err(ImageError::io("cannot restrict", &parent))?;
        }
        self.with_staging(|staging| {
            if root {
                // Unreachable while it is made, too.
                fs::set_permissions(staging, fs::Permissions::from_mode(0o700))
                    .map_err(ImageError::io("cannot restrict", staging))?;
            }
            let unpacked = staging.join("rootfs");
            fs::create_dir(&unpacked).map_err(ImageError::io("cannot create", &unpacked))?;
            let sqfs = self.squashfs(record);
            let out = std::process::Command::new("rdsquashfs")
                .args(["--quiet", "--no-dev", "--no-sock", "--chmod", "--set-times"])
                .args(if root {
                    &["--chown", "--set-xattr"][..]
                } else {
                    &[]
                })
                .args(["--unpack-path", "/", "--unpack-root"])
                .arg(&unpacked)
                .arg(&sqfs)
                .output()
                .map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => ImageError::ToolMissing {
                        tool: "rdsquashfs",
                        package: "squashfs-tools-ng",
                    },
                    _ => ImageError::ToolFailed {
                        tool: "rdsquashfs",
                        message: e.to_string(),
                    },
                })?;
            if !out.status.success() {
                let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
                return Err(if message.contains("No space left") {
                    ImageError::NoSpace(self.root.clone())
                } else {
                    ImageError::ToolFailed {
                        tool: "rdsquashfs",
                        message,
                    }
                });
            }
            link_again(&unpacked, &squash::hard_links(&sqfs)?)?;
            match fs::rename(&unpacked, &target) {
                Ok(()) => Ok(()),
                Err(_) if target.exists() => Ok(()),
                Err(e) => Err(ImageError::io(
                    "cannot move the unpacked image into",
                    &target,
                )(e)),
            }
        })?;
        Ok(target)
    }

    /// Adds an image another store holds (a standby controller mirroring the leader's):
    /// `record` as that store keeps it, `config` its OCI config, whose SHA-256 must be the
    /// image's id, and `fetch`, which writes the squashfs file at the path it is given and
    /// must check it against `record.squashfs_digest` (which it must have) as it does; `from`
    /// names the other store in errors. Built in staging and published with one rename, as
    /// an import is; its names are [`Store::mirror_names`]' to give.
    pub fn add_copy(
        &self,
        record: &ImageRecord,
        config: &[u8],
        from: &str,
        fetch: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<(), ImageError> {
        let refused = |message: String| ImageError::Copy {
            from: from.to_string(),
            message,
        };
        if self.has(record.id.hex()) {
            return Ok(());
        }
        let actual = Digest::of(config);
        if actual != record.id {
            return Err(ImageError::DigestMismatch {
                what: format!("the config of image {} from {from}", record.id),
                expected: record.id.to_string(),
                actual: actual.to_string(),
            });
        }
        if record.squashfs_digest.is_none() {
            return Err(refused(format!(
                "image {} comes without its file's digest, which a copy is checked against",
                record.id
            )));
        }
        self.with_staging(|staging| {
            let built = staging.join("image");
            fs::create_dir(&built).map_err(ImageError::io("cannot create", &built))?;
            fetch(&built.join("image.sqfs")).map_err(refused)?;
            self.publish(&built, record, config)
        })
    }

    /// Publishes the image built in the staging directory `built` (its squashfs file there,
    /// synced): writes its config and its record (names are the name table's), then renames
    /// it into `images/` whole. Another import of the same image that got there first wins:
    /// its copy is as good as this one.
    fn publish(&self, built: &Path, record: &ImageRecord, config: &[u8]) -> Result<(), ImageError> {
        write_file(&built.join("config.json"), config)?;
        let kept = ImageRecord {
            names: Vec::new(),
            ..record.clone()
        };
        write_file(
            &built.join("meta.json"),
            &serde_json::to_vec_pretty(&kept).expect("record serialises"),
        )?;
        let target = self.image_dir(&record.id);
        match fs::rename(built, &target) {
            Ok(()) => Ok(()),
            Err(_) if target.join("meta.json").exists() => Ok(()),
            Err(e) => Err(ImageError::io("cannot move the new image into", &target)(e)),
        }
    }

    /// Makes this store's names those of the store it mirrors: each of `names` points at its
    /// image where this store has that image (a name of this store's own too); a name taken
    /// from it before (kept in `<root>/mirrored.json`) that `names` no longer has is removed,
    /// and so is a name of this store's own that the mirrored store removed (`removed`: when,
    /// in seconds since the epoch) after this store took its image in; an image left without
    /// a name is deleted. Other names of this store's own are left alone. Returns the images
    /// deleted.
    pub fn mirror_names(
        &self,
        names: &BTreeMap<String, Digest>,
        removed: &BTreeMap<String, u64>,
    ) -> Result<Vec<Digest>, ImageError> {
        let path = self.root.join("mirrored.json");
        let before: Vec<String> = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ImageError::io("cannot read", &path)(e)),
        };
        let present = |id: &Digest| self.image_dir(id).join("meta.json").exists();
        // Names of this store's own removed there since (a controller that led, standing by
        // again after another removed them).
        let now = self.read_refs()?;
        let withdrawn: Vec<&String> = removed
            .iter()
            .filter(|(name, _)| !names.contains_key(*name))
            .filter(|(name, when)| {
                now.get(*name)
                    .and_then(|id| self.record(id, &BTreeMap::new()).ok())
                    .is_some_and(|r| r.imported < **when)
            })
            .map(|(name, _)| name)
            .collect();
        // The names as they are to be, and the images that lose their last one.
        let follow = |refs: &mut BTreeMap<String, Digest>| {
            let mut dropped = Vec::new();
            let gone = before.iter().filter(|n| !names.contains_key(*n));
            for name in gone.chain(withdrawn.iter().copied()) {
                dropped.extend(refs.remove(name));
            }
            for (name, id) in names.iter().filter(|(_, id)| present(id)) {
                dropped.extend(refs.insert(name.clone(), id.clone()));
            }
            dropped.retain(|id| !refs.values().any(|d| d == id));
            dropped.sort();
            dropped.dedup();
            let taken: Vec<String> = names
                .keys()
                .filter(|n| refs.contains_key(*n))
                .cloned()
                .collect();
            (dropped, taken)
        };
        // Nothing written where nothing changes (a standby looks every few seconds).
        let mut next = now.clone();
        if follow(&mut next).1 == before && next == now {
            return Ok(Vec::new());
        }
        let (orphans, taken) = self.update_refs(follow)?;
        let taken = serde_json::to_vec(&taken).expect("names serialise");
        let tmp = self
            .root
            .join(format!("mirrored.json.{}", std::process::id()));
        write_file(&tmp, &taken)?;
        fs::rename(&tmp, &path).map_err(ImageError::io("cannot replace", &path))?;
        for id in &orphans {
            self.delete(id)?;
        }
        Ok(orphans)
    }

    /// Whether the image whose id is `hex` (its 64 hex digits) is in the store.
    pub fn has(&self, hex: &str) -> bool {
        Digest::parse(&format!("sha256:{hex}"))
            .is_ok_and(|id| self.image_dir(&id).join("meta.json").exists())
    }

    /// The image whose id is `hex` (its 64 hex digits, no name, no prefix), read directly
    /// (where [`Store::resolve`] of an id looks through every image).
    pub fn by_id(&self, hex: &str) -> Result<ImageRecord, ImageError> {
        match Digest::parse(&format!("sha256:{hex}")) {
            Ok(id) if self.has(hex) => self.record(&id, &self.read_refs()?),
            _ => Err(ImageError::NotFound(hex.to_string())),
        }
    }

    /// The OCI config bytes of an image, as imported.
    pub fn config_json(&self, record: &ImageRecord) -> Result<Vec<u8>, ImageError> {
        let path = self.image_dir(&record.id).join("config.json");
        fs::read(&path).map_err(ImageError::io("cannot read", &path))
    }
}

/// The image config of a plain root filesystem: one layer, no settings but what it says
/// of itself (`settings`).
fn rootfs_config(diff_ids: &[Digest], settings: archive::RootfsSettings) -> Vec<u8> {
    #[derive(Serialize)]
    struct Config<'a> {
        architecture: &'a str,
        os: &'a str,
        config: ImageConfig,
        rootfs: Rootfs<'a>,
    }
    #[derive(Serialize)]
    struct Rootfs<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        diff_ids: &'a [Digest],
    }
    let config = Config {
        architecture: archive::host_arch(),
        os: "linux",
        config: ImageConfig {
            env: settings.env,
            entrypoint: settings.entrypoint,
            ..ImageConfig::default()
        },
        rootfs: Rootfs {
            kind: "layers",
            diff_ids,
        },
    };
    serde_json::to_vec(&config).expect("config serialises")
}

/// Links again, in `tree` (an image's unpacked copy, as its squashfs file had them), the hard
/// links `links` (`(path, target)`, relative): each path, unpacked as a copy of its own, is
/// replaced by a link to its target where it can be. Both must be regular files inside the
/// tree.
fn link_again(tree: &Path, links: &[(String, String)]) -> Result<(), ImageError> {
    if links.is_empty() {
        return Ok(());
    }
    let root = fs::canonicalize(tree).map_err(ImageError::io("cannot read", tree))?;
    // Reached through no symbolic link out of the tree (the import refused such paths;
    // checked again, as root follows what it is given).
    let inside = |path: &Path| {
        let file = path
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_file());
        file && path
            .parent()
            .and_then(|p| fs::canonicalize(p).ok())
            .is_some_and(|p| p.starts_with(&root))
    };
    for (path, target) in links {
        let (path, target) = (tree.join(path), tree.join(target));
        if !inside(&path) || !inside(&target) {
            continue;
        }
        // A link beside it, renamed over it: where that cannot be (a directory the user may
        // not write, as a rootless copy's 0555 ones), the copy stays, as good but for its
        // disk space.
        let Some(name) = path.file_name() else {
            continue;
        };
        let beside = path.with_file_name(format!(".berth-link.{}", name.to_string_lossy()));
        let linked = fs::hard_link(&target, &beside).and_then(|()| fs::rename(&beside, &path));
        if linked.is_err() {
            let _ = fs::remove_file(&beside);
        }
    }
    Ok(())
}

/// `e`, where it is what is wrong with `copy` (a file spooled or uploaded into staging),
/// said of `origin`: where the file came from, as its user named it.
fn said_of(e: ImageError, copy: &Path, origin: &str) -> ImageError {
    match e {
        ImageError::BadArchive { path, why } if path == copy => ImageError::BadArchive {
            path: origin.into(),
            why,
        },
        ImageError::NotInArchive {
            path,
            wanted,
            holds,
        } if path == copy => ImageError::NotInArchive {
            path: origin.into(),
            wanted,
            holds,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests;
