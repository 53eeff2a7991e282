//! NVIDIA GPU discovery for `berth exec --gpus all|N`.
//!
//! Owns *discovery only*: which host device nodes, driver libraries and driver tools a container
//! needs so that CUDA and NVML work inside it, the way `nvidia-container-cli` (libnvidia-container)
//! selects them for its "utility" and "compute" capabilities. The runtime does the mounting. Every
//! function takes a `root` (normally `/`) so tests can run on a fake tree; every returned path is
//! `root` joined with a host path, so with `root = "/"` they are plain host paths.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

/// What `--gpus` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuRequest {
    /// Every NVIDIA GPU on the host.
    All,
    /// The first `n` GPUs, by device minor number.
    Count(u32),
    /// These GPUs, by device minor number (`/dev/nvidiaN`): a batch job's own, so that jobs
    /// sharing a node never share a GPU. `device=0,2` on the command line, as docker takes it.
    Devices(Vec<u32>),
}

impl FromStr for GpuRequest {
    type Err = GpuError;

    fn from_str(s: &str) -> Result<Self, GpuError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(GpuRequest::All);
        }
        if let Some(list) = s.strip_prefix("device=") {
            let minors: Option<Vec<u32>> = list.split(',').map(|m| m.trim().parse().ok()).collect();
            return match minors {
                Some(m) if !m.is_empty() => Ok(GpuRequest::Devices(m)),
                _ => Err(GpuError::InvalidRequest {
                    value: s.to_string(),
                }),
            };
        }
        match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(GpuRequest::Count(n)),
            _ => Err(GpuError::InvalidRequest {
                value: s.to_string(),
            }),
        }
    }
}

/// Everything the runtime must inject into a container for the requested GPUs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuInjection {
    /// Device nodes to bind at the same path in the container: the chosen `/dev/nvidiaN` (in
    /// minor order) followed by the control nodes that exist (`nvidiactl`, `nvidia-uvm`,
    /// `nvidia-uvm-tools`, `nvidia-modeset`, `nvidia-caps/*`).
    pub devices: Vec<PathBuf>,
    /// `(host file, file name in the container's library directory)`. The host file is the
    /// resolved real file; the same file appears once per name it must be visible under: its own
    /// versioned name, every soname the host's ld.so cache (or library directory) gives it, and
    /// `libcuda.so` for libcuda (what `nvidia-container-cli` creates after its ldconfig run).
    pub libraries: Vec<(PathBuf, String)>,
    /// Driver tools (`nvidia-smi`, ...), resolved real files, to bind into the container's `bin`.
    pub binaries: Vec<PathBuf>,
    /// Value for `CUDA_VISIBLE_DEVICES`: `0..n-1`, see [`discover`].
    pub visible_devices: String,
    /// Kernel driver version from `/proc/driver/nvidia/version`, e.g. `535.104.05`.
    pub driver_version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("invalid --gpus value {value:?}: expected \"all\", a positive number of GPUs, or device=N[,N...]")]
    InvalidRequest { value: String },
    #[error(
        "--gpus was given but no NVIDIA GPU device ({}) exists on this host; \
         run without --gpus or on a GPU node",
        path.display()
    )]
    NoGpu { path: PathBuf },
    #[error("--gpus {requested} requested but this host has {available} NVIDIA GPU(s)")]
    NotEnoughGpus { requested: u32, available: usize },
    #[error("NVIDIA driver libraries not found: {missing} (looked in {searched})")]
    LibrariesNotFound { missing: String, searched: String },
    #[error("invalid ld.so cache: {reason}")]
    LdCache { reason: String },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Library name prefixes of the "utility" and "compute" capabilities in libnvidia-container's
/// `nvc_info.c`. The first two are required: nvidia-smi needs NVML, and CUDA needs libcuda.
const LIBRARIES: &[&str] = &[
    "libnvidia-ml.so",
    "libcuda.so",
    "libnvidia-cfg.so",
    "libcudadebugger.so",
    "libnvidia-opencl.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-allocator.so",
    "libnvidia-nvvm.so",
    "libnvidia-gpucomp.so",
];
const REQUIRED_LIBRARIES: usize = 2;

/// Where to look when the ld.so cache is missing, corrupt, or stale. 64-bit directories come
/// before `usr/lib`, which holds 32-bit libraries on RPM distributions.
const LIBRARY_DIRS: &[&str] = &[
    "usr/lib/x86_64-linux-gnu",
    "usr/lib64",
    "lib64",
    "usr/lib",
    "usr/local/nvidia/lib64",
];
const BINARIES: &[&str] = &[
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
];
/// `usr/local/nvidia` is where NVIDIA's own container images and some cloud machines keep the
/// driver outside the distribution's directories.
const BINARY_DIRS: &[&str] = &["usr/bin", "usr/local/bin", "bin", "usr/local/nvidia/bin"];
const CONTROL_DEVICES: &[&str] = &[
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// Finds what to inject for `request` on the host rooted at `root`.
///
/// `visible_devices` is `0,...,n-1`, not the host minors: only the chosen `/dev/nvidiaN` nodes are
/// bound, and CUDA enumerates just the GPUs whose nodes it can open, so inside the container they
/// are always devices `0..n`. Setting it explicitly overrides a host value (e.g. Slurm's `2,3`)
/// that would otherwise leak in through the environment and name devices that do not exist.
pub fn discover(root: &Path, request: &GpuRequest) -> Result<GpuInjection, GpuError> {
    let dev = root.join("dev");
    let mut gpus = gpu_minors(&dev)?;
    if gpus.is_empty() {
        return Err(GpuError::NoGpu {
            path: dev.join("nvidia0"),
        });
    }
    if let GpuRequest::Count(n) = *request {
        if n == 0 {
            return Err(GpuError::InvalidRequest {
                value: n.to_string(),
            });
        }
        if n as usize > gpus.len() {
            return Err(GpuError::NotEnoughGpus {
                requested: n,
                available: gpus.len(),
            });
        }
        gpus.truncate(n as usize);
    }
    if let GpuRequest::Devices(wanted) = request {
        if let Some(missing) = wanted.iter().find(|m| !gpus.contains(m)) {
            return Err(GpuError::NoGpu {
                path: dev.join(format!("nvidia{missing}")),
            });
        }
        let mut chosen = wanted.clone();
        chosen.sort_unstable();
        chosen.dedup();
        gpus = chosen;
    }
    let mut devices: Vec<PathBuf> = gpus
        .iter()
        .map(|m| dev.join(format!("nvidia{m}")))
        .collect();
    devices.extend(
        CONTROL_DEVICES
            .iter()
            .map(|d| dev.join(d))
            .filter(|p| exists(p)),
    );
    // nvidia-caps holds the MIG capability nodes; without them MIG instances are invisible.
    if let Ok(rd) = fs::read_dir(dev.join("nvidia-caps")) {
        let mut caps: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        caps.sort();
        devices.extend(caps);
    }

    let driver_version = fs::read_to_string(root.join("proc/driver/nvidia/version"))
        .ok()
        .and_then(|s| parse_driver_version(&s));
    let libraries = find_libraries(root, driver_version.as_deref())?;
    // Only the driver's own programs: a wrapper script of the same name (some machines put one
    // in usr/bin to run the real program from elsewhere) names host paths that the container
    // lacks.
    let binaries = BINARIES
        .iter()
        .filter_map(|b| {
            BINARY_DIRS.iter().find_map(|d| {
                resolve_in_root(root, &root.join(d).join(b)).filter(|p| elf_x86_64(p) == Some(true))
            })
        })
        .collect();
    let visible_devices = (0..gpus.len())
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    Ok(GpuInjection {
        devices,
        libraries,
        binaries,
        visible_devices,
        driver_version,
    })
}

/// Minor numbers of the `nvidiaN` nodes in `dev`, ascending (numerically: nvidia10 after nvidia9).
fn gpu_minors(dev: &Path) -> Result<Vec<u32>, GpuError> {
    let rd = match fs::read_dir(dev) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(GpuError::Io {
                path: dev.to_path_buf(),
                source,
            })
        }
    };
    let mut minors: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let digits = name.to_str()?.strip_prefix("nvidia")?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        })
        .collect();
    minors.sort_unstable();
    Ok(minors)
}

/// Device nodes are checked with `symlink_metadata` so that tests can use plain files.
fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 ..." (or "... Open
/// Kernel Module for x86_64  535.104.05 ..."): the first all-digits-and-dots token on that line.
fn parse_driver_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|t| t.contains('.') && t.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .map(str::to_string)
}

/// Whether `name` is `prefix` followed by `.version`, e.g. `libcuda.so.1` for `libcuda.so`.
fn matches_library(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

fn find_libraries(root: &Path, version: Option<&str>) -> Result<Vec<(PathBuf, String)>, GpuError> {
    let cache_path = root.join("etc/ld.so.cache");
    // A missing or corrupt cache is not fatal: ld.so itself then searches the default
    // directories, and so do we.
    let (cache, cache_note) = match fs::read(&cache_path).map(|b| parse_ld_cache(&b)) {
        Ok(Ok(entries)) => (entries, String::new()),
        Ok(Err(e)) => (Vec::new(), format!(" ({e})")),
        Err(e) => (Vec::new(), format!(" ({e})")),
    };
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (i, prefix) in LIBRARIES.iter().enumerate() {
        let from_cache: Vec<(String, PathBuf)> = cache
            .iter()
            .filter(|(name, _)| matches_library(name, prefix))
            .filter_map(|(name, path)| {
                Some((name.clone(), resolve_in_root(root, &in_root(root, path))?))
            })
            .collect();
        let found = if from_cache.is_empty() {
            scan_dirs(root, prefix)
        } else {
            from_cache
        };
        match pick_library(found, version) {
            Some((real, mut names)) => {
                if *prefix == "libcuda.so" {
                    names.insert("libcuda.so".to_string());
                }
                out.extend(names.into_iter().map(|n| (real.clone(), n)));
            }
            None if i < REQUIRED_LIBRARIES => missing.push(*prefix),
            None => {}
        }
    }
    if !missing.is_empty() {
        let dirs: Vec<String> = LIBRARY_DIRS
            .iter()
            .map(|d| root.join(d).display().to_string())
            .collect();
        return Err(GpuError::LibrariesNotFound {
            missing: missing.join(", "),
            searched: format!("{}{cache_note}, {}", cache_path.display(), dirs.join(", ")),
        });
    }
    Ok(out)
}

/// `(name, resolved file)` for every `prefix.version` entry of the first library directory that
/// has any, skipping ELF files that are not x86-64 (32-bit copies on multilib hosts).
fn scan_dirs(root: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    for dir in LIBRARY_DIRS {
        let Ok(rd) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        let found: Vec<(String, PathBuf)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if !matches_library(&name, prefix) {
                    return None;
                }
                let real = resolve_in_root(root, &e.path())?;
                is_x86_64_or_not_elf(&real).then_some((name, real))
            })
            .collect();
        if !found.is_empty() {
            let mut found = found;
            found.sort(); // read_dir order is arbitrary; keep the choice deterministic
            return found;
        }
    }
    Vec::new()
}

/// Groups names by the real file they resolve to and picks one file. Like nvidia-container-cli,
/// prefer the file whose name ends with the running kernel driver's version, so a leftover
/// library from an older driver is never injected; otherwise the file with the most names.
fn pick_library(
    found: Vec<(String, PathBuf)>,
    version: Option<&str>,
) -> Option<(PathBuf, BTreeSet<String>)> {
    let mut groups: Vec<(PathBuf, BTreeSet<String>)> = Vec::new();
    for (name, real) in found {
        match groups.iter_mut().find(|(r, _)| *r == real) {
            Some((_, names)) => {
                names.insert(name);
            }
            None => groups.push((real, BTreeSet::from([name]))),
        }
    }
    let suffix = version.map(|v| format!(".{v}"));
    let idx = suffix
        .and_then(|s| {
            groups
                .iter()
                .position(|(r, _)| r.to_string_lossy().ends_with(&s))
        })
        .or_else(|| {
            // The file most names point at is the one ldconfig linked the soname to.
            let most = groups.iter().map(|(_, n)| n.len()).max()?;
            groups.iter().position(|(_, n)| n.len() == most)
        })
        .unwrap_or(0);
    if idx >= groups.len() {
        return None;
    }
    let (real, mut names) = groups.swap_remove(idx);
    // nvidia-container-cli mounts the file under its own versioned name too.
    if let Some(own) = real.file_name().and_then(OsStr::to_str) {
        names.insert(own.to_string());
    }
    Some((real, names))
}

fn is_x86_64_or_not_elf(path: &Path) -> bool {
    elf_x86_64(path) != Some(false)
}

/// Whether the ELF file at `path` is for x86-64; `None` if it is no ELF file.
fn elf_x86_64(path: &Path) -> Option<bool> {
    let mut head = [0u8; 20];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .ok()?;
    // EI_CLASS 2 = ELFCLASS64, e_machine 62 = EM_X86_64.
    (head[..4] == *b"\x7fELF")
        .then(|| head[4] == 2 && u16::from_le_bytes([head[18], head[19]]) == 62)
}

/// `root` joined with the absolute host path `host`.
fn in_root(root: &Path, host: &Path) -> PathBuf {
    root.join(host.strip_prefix("/").unwrap_or(host))
}

/// Follows symlinks of the last component, interpreting absolute targets relative to `root`,
/// and returns the regular file it ends at, or `None` (dangling, a loop, not a file, or
/// escaping `root`).
fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let root = normalize(root);
    let mut p = normalize(path);
    for _ in 0..40 {
        if !p.starts_with(&root) {
            return None;
        }
        let meta = fs::symlink_metadata(&p).ok()?;
        if !meta.file_type().is_symlink() {
            return meta.is_file().then_some(p);
        }
        let target = fs::read_link(&p).ok()?;
        p = if target.is_absolute() {
            normalize(&in_root(&root, &target))
        } else {
            normalize(&p.parent()?.join(target))
        };
    }
    None
}

/// Lexically removes `.` and `..` so that the `starts_with(root)` check above is meaningful.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24;
const OLD_HEADER: usize = 16;
const OLD_ENTRY: usize = 12;
/// FLAG_ELF_LIBC6 in the type byte, FLAG_X8664_LIB64 in the architecture byte.
const FLAG_ELF_LIBC6: i32 = 0x0003;
const FLAG_X8664_LIB64: i32 = 0x0300;

/// Parses glibc's `/etc/ld.so.cache` and returns `(file name, full path)` for its x86-64 entries,
/// in cache order.
///
/// Accepts the new format at offset 0 (glibc >= 2.32 writes only that) and the old format with
/// the new one embedded after the old table. String offsets of the new format are relative to
/// the start of the new header (which is the start of the file in a new-format-only cache), as in
/// glibc's `dl-cache.c`. Every offset is bounds-checked; bad input is an error, never a panic.
pub fn parse_ld_cache(bytes: &[u8]) -> Result<Vec<(String, PathBuf)>, GpuError> {
    let err = |reason: String| GpuError::LdCache { reason };
    let size = bytes.len();
    let base = if bytes.starts_with(NEW_MAGIC) {
        0
    } else if bytes.starts_with(OLD_MAGIC) {
        let nlibs = read_u32(bytes, 12).ok_or_else(|| err("truncated old header".into()))?;
        let old_end = table_end(nlibs, OLD_HEADER, OLD_ENTRY, size).ok_or_else(|| {
            err(format!(
                "old table of {nlibs} entries exceeds file size {size}"
            ))
        })?;
        // ldconfig puts the new header at the next 8-byte boundary; search in case a writer
        // aligned differently.
        let aligned = old_end.next_multiple_of(8);
        if bytes
            .get(aligned..)
            .is_some_and(|b| b.starts_with(NEW_MAGIC))
        {
            aligned
        } else {
            let pos = bytes[old_end..]
                .windows(NEW_MAGIC.len())
                .position(|w| w == NEW_MAGIC);
            old_end + pos.ok_or_else(|| err("old format without an embedded new format".into()))?
        }
    } else {
        return Err(err(format!(
            "bad magic, expected {:?}",
            "glibc-ld.so.cache1.1"
        )));
    };
    let cache = &bytes[base..];
    if cache.len() < NEW_HEADER {
        return Err(err(format!(
            "truncated header at offset {base}, file size {size}"
        )));
    }
    // 0 = unset (older writers), 2 = little endian; 1 is invalid and 3 big endian.
    let endian = cache[28];
    if endian != 0 && endian != 2 {
        return Err(err(format!("unsupported endianness flag {endian}")));
    }
    let nlibs = read_u32(cache, 20).unwrap_or(0);
    let end = table_end(nlibs, NEW_HEADER, NEW_ENTRY, cache.len())
        .ok_or_else(|| err(format!("table of {nlibs} entries exceeds file size {size}")))?;
    let mut out = Vec::new();
    for off in (NEW_HEADER..end).step_by(NEW_ENTRY) {
        // In bounds: the whole table was checked against the length above.
        let field = |at: usize| read_u32(cache, off + at).unwrap_or(u32::MAX);
        let string = |at: usize| {
            c_string(cache, field(at) as usize).ok_or_else(|| {
                let o = field(at);
                err(format!(
                    "entry at offset {}: string offset {o} out of range",
                    base + off
                ))
            })
        };
        let (flags, key, value) = (field(0) as i32, string(4)?, string(8)?);
        if flags & 0xff == FLAG_ELF_LIBC6 && flags & 0xff00 == FLAG_X8664_LIB64 {
            let name = String::from_utf8_lossy(key).into_owned();
            out.push((name, PathBuf::from(OsStr::from_bytes(value))));
        }
    }
    Ok(out)
}

/// End offset of a table of `n` entries of `entry` bytes after a `header`, if it fits in `len`.
fn table_end(n: u32, header: usize, entry: usize, len: usize) -> Option<usize> {
    (n as usize)
        .checked_mul(entry)?
        .checked_add(header)
        .filter(|&e| e <= len)
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The NUL-terminated string at `at`, without the NUL; `None` if it runs past the end.
fn c_string(b: &[u8], at: usize) -> Option<&[u8]> {
    let rest = b.get(at..)?;
    rest.iter().position(|&c| c == 0).map(|n| &rest[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const X86_64: i32 = 0x0303;

    /// A new-format cache; offsets are relative to the start of the returned bytes.
    fn new_cache(entries: &[(&str, &str, i32)]) -> Vec<u8> {
        let strings_at = NEW_HEADER + entries.len() * NEW_ENTRY;
        let mut strings = Vec::new();
        let mut table = Vec::new();
        for (key, value, flags) in entries {
            let k = strings_at + strings.len();
            strings.extend_from_slice(key.as_bytes());
            strings.push(0);
            let v = strings_at + strings.len();
            strings.extend_from_slice(value.as_bytes());
            strings.push(0);
            table.extend_from_slice(&flags.to_le_bytes());
            table.extend_from_slice(&(k as u32).to_le_bytes());
            table.extend_from_slice(&(v as u32).to_le_bytes());
            table.extend_from_slice(&[0; 12]); // osversion, hwcap
        }
        let mut out = NEW_MAGIC.to_vec();
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&[2, 0, 0, 0]); // little endian, pad
        out.extend_from_slice(&[0; 16]); // extension_offset, unused[3]
        out.extend(table);
        out.extend(strings);
        out
    }

    /// Old format (compat) followed by the new format at the next 8-byte boundary, as ldconfig
    /// `-c compat` wrote it. Old string offsets are relative to the end of the old table.
    fn old_new_cache(entries: &[(&str, &str, i32)]) -> Vec<u8> {
        let new = new_cache(entries);
        let old_end = OLD_HEADER + entries.len() * OLD_ENTRY;
        let new_base = old_end.next_multiple_of(8);
        let mut out = OLD_MAGIC.to_vec();
        out.push(0);
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for i in 0..entries.len() {
            let e = NEW_HEADER + i * NEW_ENTRY;
            out.extend_from_slice(&new[e..e + 4]);
            for at in [e + 4, e + 8] {
                let o = read_u32(&new, at).expect("offset") as usize + new_base - old_end;
                out.extend_from_slice(&(o as u32).to_le_bytes());
            }
        }
        out.resize(new_base, 0);
        out.extend(new);
        out
    }

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, b"fake").expect("write");
    }

    /// The start of an ELF file: `class` 2 for 64-bit, `machine` 62 for x86-64 (3 for i386).
    fn elf(root: &Path, rel: &str, class: u8, machine: u16) {
        let mut head = b"\x7fELF".to_vec();
        head.push(class);
        head.resize(18, 1);
        head.extend(machine.to_le_bytes());
        touch(root, rel);
        fs::write(root.join(rel), head).expect("write");
    }

    const LIB: &str = "usr/lib/x86_64-linux-gnu";

    fn fake_host(with_cache: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        for d in [
            "dev/nvidia0",
            "dev/nvidia1",
            "dev/nvidiactl",
            "dev/nvidia-uvm",
        ] {
            touch(r, d);
        }
        elf(r, "usr/bin/nvidia-smi", 2, 62);
        for lib in ["libcuda.so", "libnvidia-ml.so"] {
            touch(r, &format!("{LIB}/{lib}.535.1"));
            symlink(format!("{lib}.535.1"), r.join(format!("{LIB}/{lib}.1"))).expect("symlink");
        }
        fs::create_dir_all(r.join("proc/driver/nvidia")).expect("mkdir");
        fs::write(
            r.join("proc/driver/nvidia/version"),
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.1  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc 12\n",
        )
        .expect("write");
        if with_cache {
            let cache = new_cache(&[
                ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", X86_64),
                (
                    "libcuda.so.1",
                    "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
                    X86_64,
                ),
                (
                    "libcuda.so.1",
                    "/usr/lib/i386-linux-gnu/libcuda.so.1",
                    FLAG_ELF_LIBC6,
                ),
                (
                    "libnvidia-ml.so.1",
                    "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
                    X86_64,
                ),
            ]);
            touch(r, "etc/ld.so.cache");
            fs::write(r.join("etc/ld.so.cache"), cache).expect("write");
        }
        t
    }

    fn expected_libs(r: &Path) -> Vec<(PathBuf, String)> {
        let cuda = r.join(LIB).join("libcuda.so.535.1");
        let ml = r.join(LIB).join("libnvidia-ml.so.535.1");
        vec![
            (ml.clone(), "libnvidia-ml.so.1".into()),
            (ml, "libnvidia-ml.so.535.1".into()),
            (cuda.clone(), "libcuda.so".into()),
            (cuda.clone(), "libcuda.so.1".into()),
            (cuda, "libcuda.so.535.1".into()),
        ]
    }

    #[test]
    fn gpu_request_parses() {
        assert_eq!("all".parse::<GpuRequest>().expect("all"), GpuRequest::All);
        assert_eq!("2".parse::<GpuRequest>().expect("2"), GpuRequest::Count(2));
        assert_eq!(
            "device=2,0".parse::<GpuRequest>().expect("device"),
            GpuRequest::Devices(vec![2, 0])
        );
        for bad in ["0", "-1", "two", "", "device=", "device=1,x"] {
            let e = bad.parse::<GpuRequest>().expect_err(bad).to_string();
            assert!(e.contains("expected \"all\", a positive number"), "{e}");
        }
    }

    #[test]
    fn discover_given_devices_binds_only_those() {
        let t = fake_host(true);
        let r = t.path();
        touch(r, "dev/nvidia10");
        let inj = discover(r, &GpuRequest::Devices(vec![10, 1])).expect("discover");
        let devs =
            ["nvidia1", "nvidia10", "nvidiactl", "nvidia-uvm"].map(|d| r.join("dev").join(d));
        assert_eq!(inj.devices, devs);
        // Inside, the two are devices 0 and 1: CUDA numbers what it can open.
        assert_eq!(inj.visible_devices, "0,1");
        let e = discover(r, &GpuRequest::Devices(vec![3])).expect_err("no nvidia3");
        assert!(e.to_string().contains("nvidia3"), "{e}");
    }

    #[test]
    fn discover_all() {
        let t = fake_host(true);
        let r = t.path();
        let inj = discover(r, &GpuRequest::All).expect("discover");
        let devs = ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"].map(|d| r.join("dev").join(d));
        assert_eq!(inj.devices, devs);
        assert_eq!(inj.libraries, expected_libs(r));
        assert_eq!(inj.binaries, vec![r.join("usr/bin/nvidia-smi")]);
        assert_eq!(inj.visible_devices, "0,1");
        assert_eq!(inj.driver_version.as_deref(), Some("535.1"));
    }

    /// A driver kept in /usr/local/nvidia (NVIDIA's container images and some cloud machines)
    /// with a wrapper script of the same name in usr/bin, and no ld.so cache: the real programs
    /// and libraries are found, never the script (its host paths are not in the container) nor a
    /// program for another architecture.
    #[test]
    fn discover_the_driver_in_usr_local_nvidia_past_wrapper_scripts() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        touch(r, "dev/nvidia0");
        let script = "#!/bin/sh\nexec /usr/local/nvidia/bin/nvidia-smi \"$@\"\n";
        touch(r, "usr/bin/nvidia-smi");
        fs::write(r.join("usr/bin/nvidia-smi"), script).expect("write");
        elf(r, "usr/local/nvidia/bin/nvidia-smi", 2, 62);
        elf(r, "usr/bin/nvidia-debugdump", 1, 3);
        for lib in ["libcuda.so", "libnvidia-ml.so"] {
            touch(r, &format!("usr/local/nvidia/lib64/{lib}.580.1"));
        }
        let inj = discover(r, &GpuRequest::All).expect("discover");
        assert_eq!(
            inj.binaries,
            vec![r.join("usr/local/nvidia/bin/nvidia-smi")]
        );
        let libs: Vec<&str> = inj.libraries.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            libs,
            ["libnvidia-ml.so.580.1", "libcuda.so", "libcuda.so.580.1"]
        );
        assert!(inj.libraries[0]
            .0
            .starts_with(r.join("usr/local/nvidia/lib64")));
    }

    #[test]
    fn discover_count_and_numeric_order() {
        let t = fake_host(true);
        let r = t.path();
        touch(r, "dev/nvidia10");
        touch(r, "dev/nvidia-caps/nvidia-cap1");
        let inj = discover(r, &GpuRequest::Count(1)).expect("discover");
        let devs = [
            "nvidia0",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-caps/nvidia-cap1",
        ]
        .map(|d| r.join("dev").join(d));
        assert_eq!(inj.devices, devs);
        assert_eq!(inj.visible_devices, "0");
        let all = discover(r, &GpuRequest::All).expect("discover");
        assert_eq!(all.devices[2], r.join("dev/nvidia10"));
        assert_eq!(all.visible_devices, "0,1,2");
    }

    #[test]
    fn too_many_and_no_gpus_fail() {
        let t = fake_host(true);
        let e = discover(t.path(), &GpuRequest::Count(3)).expect_err("3 of 2");
        assert_eq!(
            e.to_string(),
            "--gpus 3 requested but this host has 2 NVIDIA GPU(s)"
        );
        fs::remove_file(t.path().join("dev/nvidia0")).expect("rm");
        fs::remove_file(t.path().join("dev/nvidia1")).expect("rm");
        let e = discover(t.path(), &GpuRequest::All).expect_err("no gpu");
        assert!(matches!(e, GpuError::NoGpu { .. }), "{e}");
        assert!(e.to_string().contains("no NVIDIA GPU device"), "{e}");
    }

    #[test]
    fn falls_back_to_directories_without_or_with_corrupt_cache() {
        let t = fake_host(false);
        let r = t.path();
        assert_eq!(
            discover(r, &GpuRequest::All).expect("discover").libraries,
            expected_libs(r)
        );
        touch(r, "etc/ld.so.cache"); // garbage cache
        assert_eq!(
            discover(r, &GpuRequest::All).expect("discover").libraries,
            expected_libs(r)
        );
    }

    #[test]
    fn missing_driver_libraries_say_where() {
        let t = fake_host(false);
        fs::remove_dir_all(t.path().join("usr/lib")).expect("rm");
        let e = discover(t.path(), &GpuRequest::All)
            .expect_err("no libs")
            .to_string();
        assert!(e.contains("libnvidia-ml.so, libcuda.so"), "{e}");
        assert!(
            e.contains("etc/ld.so.cache") && e.contains("usr/lib64"),
            "{e}"
        );
    }

    #[test]
    fn parses_new_and_old_formats() {
        let entries = [
            ("libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1", X86_64),
            ("libz.so.1", "/lib/i386-linux-gnu/libz.so.1", FLAG_ELF_LIBC6),
            ("libz.so.1", "/lib/aarch64-linux-gnu/libz.so.1", 0x0a03),
            ("libm.so.6", "/lib/x86_64-linux-gnu/libm.so.6", X86_64),
        ];
        let want = vec![
            (
                "libz.so.1".to_string(),
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
            ),
            (
                "libm.so.6".to_string(),
                PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6"),
            ),
        ];
        assert_eq!(parse_ld_cache(&new_cache(&entries)).expect("new"), want);
        assert_eq!(
            parse_ld_cache(&old_new_cache(&entries)).expect("old+new"),
            want
        );
        assert_eq!(
            parse_ld_cache(&old_new_cache(&entries[..1]))
                .expect("old+new")
                .len(),
            1
        );
    }

    #[test]
    fn truncated_or_garbage_cache_is_an_error() {
        let entries = [(
            "libcuda.so.1",
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
            X86_64,
        )];
        for full in [new_cache(&entries), old_new_cache(&entries)] {
            for len in 0..full.len() {
                assert!(parse_ld_cache(&full[..len]).is_err(), "truncated to {len}");
            }
        }
        let mut huge = new_cache(&entries);
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_ld_cache(&huge).is_err());
        let mut bad_offset = new_cache(&entries);
        bad_offset[52..56].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = parse_ld_cache(&bad_offset).expect_err("offset").to_string();
        assert!(e.contains("out of range"), "{e}");
        assert!(parse_ld_cache(b"not a cache at all").is_err());
        assert!(parse_ld_cache(b"ld.so-1.7.0\0\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn parses_this_hosts_cache() {
        let Ok(bytes) = fs::read("/etc/ld.so.cache") else {
            return;
        };
        let entries = parse_ld_cache(&bytes).expect("parse /etc/ld.so.cache");
        assert!(
            entries
                .iter()
                .any(|(n, p)| n == "libc.so.6" && p.ends_with("libc.so.6")),
            "{entries:?}"
        );
    }

    #[test]
    fn driver_version_formats() {
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build  (dvs-builder@U16)";
        assert_eq!(parse_driver_version(open).as_deref(), Some("550.54.14"));
        assert_eq!(parse_driver_version("garbage"), None);
    }

    #[test]
    fn prefers_library_of_running_driver_and_stays_in_root() {
        let t = fake_host(false);
        let r = t.path();
        touch(r, &format!("{LIB}/libcuda.so.470.9")); // leftover from an older driver
        symlink(
            "/../../../../etc/passwd",
            r.join(format!("{LIB}/libnvidia-cfg.so.1")),
        )
        .expect("symlink");
        let libs = discover(r, &GpuRequest::All).expect("discover").libraries;
        assert!(
            libs.iter().all(|(f, _)| !f.ends_with("libcuda.so.470.9")),
            "{libs:?}"
        );
        assert!(libs.iter().all(|(f, _)| f.starts_with(r)), "{libs:?}");
        fs::remove_file(r.join("proc/driver/nvidia/version")).expect("rm");
        let libs = discover(r, &GpuRequest::All).expect("discover").libraries;
        assert!(
            libs.iter().all(|(f, _)| !f.ends_with("libcuda.so.470.9")),
            "{libs:?}"
        );
    }
}
