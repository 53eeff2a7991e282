//! `berth run`, `berth exec`, `berth shell`.

use crate::settings::{is_root, Settings};
use anyhow::{Context, Result};
use berth_core::{number_ranges, parse_cpus, parse_size};
use berth_runtime::cgroup::{Limits, MIN_MEMORY};
use berth_runtime::gpu::GpuRequest;
use berth_runtime::{Action, ImageDefaults, Options, Rootfs};
use clap::builder::FalseyValueParser;
use clap::Args;

#[derive(Args, Debug)]
pub struct ContainerArgs {
    /// Bind a host path: SRC[:DST[:ro|rw]] (repeatable, or a comma-separated list); also
    /// those of $APPTAINER_BIND and $APPTAINER_BINDPATH
    #[arg(short = 'B', long = "bind", value_name = "SRC[:DST[:ro]]")]
    binds: Vec<String>,
    /// Set an environment variable (repeatable; A=1,B=2 sets both; NAME alone passes yours);
    /// also NAME for each $APPTAINERENV_NAME
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Set the variables of FILE's NAME=VALUE lines, as a shell would (quotes, $NAME and
    /// ${NAME:-word}; blank lines and # comments skipped); --env wins over them
    #[arg(long, value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Do not pass the caller's environment into the container
    #[arg(long, env = "APPTAINER_CLEANENV", value_parser = FalseyValueParser::new())]
    cleanenv: bool,
    /// Working directory in the container [default: the current directory]
    #[arg(long, visible_alias = "cwd", value_name = "DIR", env = "APPTAINER_PWD")]
    pwd: Option<String>,
    /// Do not bind the home directory
    #[arg(long, env = "APPTAINER_NO_HOME", value_parser = FalseyValueParser::new())]
    no_home: bool,
    /// Bind SRC as the home directory, at DST [default: SRC] (Apptainer's --home)
    #[arg(long = "home", value_name = "SRC[:DST]", conflicts_with = "no_home")]
    home: Option<String>,
    /// Share no directory of the host's: neither the home nor the current directory
    /// (Apptainer's --contain)
    #[arg(short = 'c', long, env = "APPTAINER_CONTAIN", value_parser = FalseyValueParser::new())]
    contain: bool,
    /// --contain, --cleanenv and --pid (Apptainer's --containall)
    #[arg(short = 'C', long, env = "APPTAINER_CONTAINALL", value_parser = FalseyValueParser::new())]
    containall: bool,
    /// What berth does anyway: the image is read-only under a writable tmpfs layer,
    /// discarded at exit (Apptainer's --writable-tmpfs)
    #[arg(long, env = "APPTAINER_WRITABLE_TMPFS", value_parser = FalseyValueParser::new())]
    writable_tmpfs: bool,
    /// (Apptainer's --writable: refused, berth's images are read-only files)
    #[arg(short = 'w', long, hide = true)]
    writable: bool,
    /// CPU limit, as a number of CPUs (CFS quota), e.g. 2 or 0.5
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// CPUs the container may run on, e.g. 0-3 or 0,2
    #[arg(long, value_name = "LIST")]
    cpuset_cpus: Option<String>,
    /// Memory limit, e.g. 512m or 4g (0: no limit, as docker's); exceeding it gets the
    /// container OOM-killed
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Maximum number of processes (-1: no limit, as docker's)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// Make NVIDIA GPUs available: all, or a count
    #[arg(long, value_name = "all|N")]
    gpus: Option<String>,
    /// All NVIDIA GPUs, as --gpus all (Apptainer's --nv)
    #[arg(long, conflicts_with = "gpus", env = "APPTAINER_NV", value_parser = FalseyValueParser::new())]
    nv: bool,
    /// Give the container its own PID namespace
    #[arg(short = 'p', long, env = "APPTAINER_PID", value_parser = FalseyValueParser::new())]
    pid: bool,
    /// The container's network: host (the host's, the default: MPI and the cluster's
    /// interconnect need it) or none (a network namespace of its own with loopback only)
    #[arg(long, value_name = "host|none")]
    network: Option<String>,
    /// A network namespace of its own: Apptainer's --net (with --network none), or Docker's
    /// --net=none|host
    #[arg(short = 'n', long, value_name = "none|host", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    net: Option<String>,
    /// Run as USER (a name or uid), in GROUP (a name or gid) if given, as Docker's -u: root
    /// may name anyone; a user, themselves or root (0: root inside a user namespace that is
    /// them outside, as --fakeroot)
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// The container's own host name (a UTS namespace of its own; Docker's and Apptainer's
    /// --hostname)
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Be root inside, yourself outside, without capabilities (Apptainer's --fakeroot): change
    /// the image's files in the container's layer, nothing you could not
    #[arg(short = 'f', long, conflicts_with = "user")]
    fakeroot: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    common: ContainerArgs,
    /// Run PROGRAM instead of the image's entry point, with the arguments after the image
    /// (the image's CMD is not used; "" runs the arguments alone), as Docker's --entrypoint
    #[arg(long, value_name = "PROGRAM")]
    entrypoint: Option<String>,
    /// The image, then the arguments for its entry point (or runscript): everything after
    /// the image is the program's, options too (`run app -e X=1 --help`), as Apptainer's
    /// and Docker's `run` take them
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [ARGS]"
    )]
    words: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    common: ContainerArgs,
    image: String,
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    common: ContainerArgs,
    /// The shell to run [default: /bin/bash if the image has one, else /bin/sh]
    #[arg(short = 's', long, value_name = "PATH", env = "APPTAINER_SHELL")]
    shell: Option<String>,
    image: String,
}

impl ContainerArgs {
    /// The options, `-u`'s user looked up in the image whose tree is `image` first, where
    /// there is one.
    fn options(self, image: Option<&std::path::Path>, image_env: &[String]) -> Result<Options> {
        let pids = match self.pids_limit {
            Some(-1) | None => None,
            Some(n) => Some(u64::try_from(n).map_err(|_| {
                anyhow::anyhow!("--pids-limit {n}: give a number of processes, or -1 for no limit")
            })?),
        };
        let limits = Limits {
            cpus: self.cpus.as_deref().map(parse_cpus).transpose()?,
            cpuset: self.cpuset_cpus,
            memory: self
                .memory
                .as_deref()
                .filter(|&m| m != "0")
                .map(parse_size)
                .transpose()?,
            pids,
        };
        check_limits(&limits)?;
        if self.writable {
            anyhow::bail!("--writable: berth's images are read-only files; --writable-tmpfs gives the container a writable layer (what berth does anyway), discarded at its end");
        }
        if self.fakeroot && is_root() {
            anyhow::bail!("--fakeroot is for users: root is root in its containers already");
        }
        let (user, as_root) = match &self.user {
            Some(user) => run_as(user, image)?,
            None => (None, false),
        };
        if let Some(name) = &self.hostname {
            check_hostname(name)?;
        }
        let contain = self.contain || self.containall;
        // Apptainer's lists: -B a,b:/b, and its variables for the binds every run gets.
        let mut binds: Vec<String> = [
            "APPTAINER_BIND",
            "SINGULARITY_BIND",
            "APPTAINER_BINDPATH",
            "SINGULARITY_BINDPATH",
        ]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .chain(self.binds)
        .flat_map(|list| bind_list(&list))
        .collect();
        // APPTAINERENV_NAME=VALUE sets NAME inside, as Apptainer's does (--cleanenv too);
        // --env-file and --env win over it.
        let mut env: Vec<String> = std::env::vars()
            .filter_map(|(k, v)| Some(format!("{}={v}", prefixed_env(&k)?)))
            .collect();
        for file in &self.env_file {
            env.extend(env_file(file, image_env)?);
        }
        if let Some(home) = &self.home {
            let (src, dst) = home.split_once(':').unwrap_or((home, home));
            if !dst.starts_with('/') {
                anyhow::bail!("--home {home}: the home inside must be an absolute path");
            }
            binds.push(format!("{src}:{dst}"));
        }
        // NAME alone passes the caller's NAME, if set (docker's way).
        let from_caller = |e: String| match e.contains('=') {
            true => Some(e),
            false => std::env::var(&e).ok().map(|v| format!("{e}={v}")),
        };
        env.extend(
            self.env
                .iter()
                .flat_map(|e| env_list(e))
                .filter_map(from_caller),
        );
        // Apptainer's --nv asks for GPUs where there are some (a warning elsewhere); --gpus
        // insists, as docker's does.
        let gpus = match self.nv {
            true if !std::path::Path::new("/dev/nvidiactl").exists() => {
                berth_core::say!("berth: --nv: this machine has no NVIDIA GPU (no /dev/nvidiactl): running without one");
                None
            }
            true => Some("all"),
            false => self.gpus.as_deref(),
        };
        Ok(Options {
            binds,
            env,
            cleanenv: self.cleanenv || self.containall,
            pwd: self.pwd,
            no_home: self.no_home || self.home.is_some() || contain,
            no_cwd: contain,
            empty_home: contain,
            home: self
                .home
                .as_deref()
                .map(|h| h.split_once(':').map_or(h, |(_, dst)| dst).to_string()),
            limits,
            gpus: gpus.map(str::parse::<GpuRequest>).transpose()?,
            pid_namespace: self.pid || self.containall,
            net_namespace: own_network(self.net.as_deref(), self.network.as_deref())?,
            hostname: self.hostname,
            remap_root: self.fakeroot || as_root,
            user,
            ..Options::default()
        })
    }
}

/// Whom `-u USER[:GROUP]` runs the container as: root runs it as anyone (a uid without an
/// entry in the user database too, as Docker's), looked up in the user database of the
/// image whose tree is `image` first, as Docker looks users up, then in the host's; a user,
/// as themselves (no identity to switch to), or as root inside a user namespace that is
/// them outside (true: --fakeroot's remapped root), as rootless Docker and Podman do.
fn run_as(
    value: &str,
    image: Option<&std::path::Path>,
) -> Result<(Option<berth_runtime::Identity>, bool)> {
    use berth_runtime::Identity;
    let (user, group) = match value.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (value, None),
    };
    if user.is_empty() || group == Some("") {
        anyhow::bail!("-u {value}: give USER or USER:GROUP, each a name or a number");
    }
    let only_root = || {
        let me = Identity::current()?;
        anyhow::bail!(
            "-u {value}: only root may run a container as another user or group; you may give yours ({}:{}) or 0 (root inside, you outside, as --fakeroot)",
            me.uid,
            me.gid
        )
    };
    // (A user only the image knows is not the caller, whoever it is.)
    let image_only =
        !is_root() && image.is_some_and(|root| Identity::in_image(root, user).is_some());
    let image = image.filter(|_| is_root());
    let mut id = match image.and_then(|root| Identity::in_image(root, user)) {
        Some(id) => id,
        None => match Identity::lookup(user, true) {
            Ok(id) => id,
            Err(_) if image_only => return only_root(),
            Err(e) => return Err(e.into()),
        },
    };
    if let Some(group) = group {
        let in_image = image.and_then(|root| Identity::group_in_image(root, group));
        let (gid, name) = in_image
            .or_else(|| Identity::group(group))
            .with_context(|| {
                format!("-u {value}: no group {group} in the image's or this host's group database")
            })?;
        id.gid = gid;
        id.group = name.clone();
        id.groups = vec![gid];
        id.group_names = vec![name];
    }
    if is_root() {
        return Ok((Some(id), false));
    }
    let me = Identity::current()?;
    let root = id.uid == 0 && group.is_none_or(|_| id.gid == 0);
    if id.uid == me.uid && id.gid == me.gid {
        Ok((None, false))
    } else if root {
        Ok((None, true))
    } else {
        only_root()
    }
}

/// Refuses a host name the kernel would refuse, or that is no hostname (RFC 1123: letters,
/// digits and hyphens in dot-separated labels), as Docker does.
fn check_hostname(name: &str) -> Result<()> {
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.len() > 64 || !name.split('.').all(label) {
        anyhow::bail!("--hostname {name:?}: give a host name of at most 64 characters, letters, digits and hyphens in labels separated by dots");
    }
    Ok(())
}

/// The binds of a --bind value: one, or Apptainer's comma-separated list of them.
fn bind_list(list: &str) -> Vec<String> {
    list.split(',')
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect()
}

/// The variables of an --env value: `NAME=VALUE`, or Apptainer's `A=1,B=2` where each
/// comma-separated piece is an assignment (`CUDA_VISIBLE_DEVICES=0,1` stays one).
fn env_list(value: &str) -> Vec<String> {
    let pieces: Vec<&str> = value.split(',').collect();
    let each_named = pieces.iter().all(|p| {
        p.split_once('=')
            .is_some_and(|(name, _)| berth_core::shell::is_name(name))
    });
    match each_named {
        true => pieces.into_iter().map(str::to_string).collect(),
        false => vec![value.to_string()],
    }
}

/// NAME of Apptainer's `APPTAINERENV_NAME` (or Singularity's `SINGULARITYENV_NAME`), which
/// sets NAME in the container.
fn prefixed_env(var: &str) -> Option<&str> {
    ["APPTAINERENV_", "SINGULARITYENV_"]
        .iter()
        .find_map(|prefix| var.strip_prefix(prefix))
        .filter(|name| berth_core::shell::is_name(name))
}

/// Whether the container gets a network of its own (loopback only), from Docker's
/// `--network`/`--net=` value or Apptainer's `--net` flag with `--network`. berth has no
/// virtual networks to offer: anything but the host's network or none is refused, saying so.
fn own_network(net: Option<&str>, network: Option<&str>) -> Result<bool> {
    let value = match (net, network) {
        (None, None) => "host",
        (Some(""), None) => anyhow::bail!(
            "--net: berth gives a container the host's network or one of its own with loopback only: add --network none"
        ),
        (Some(""), Some(v)) | (None, Some(v)) | (Some(v), None) => v,
        (Some(a), Some(b)) if a == b => a,
        (Some(a), Some(b)) => anyhow::bail!("--net={a} and --network {b} disagree: give one"),
    };
    match value {
        "host" => Ok(false),
        "none" => Ok(true),
        other => anyhow::bail!(
            "--network {other}: berth gives a container the host's network (host) or one of its own with loopback only (none), no virtual networks"
        ),
    }
}

/// The variables an --env-file sets, as Apptainer's sourcing it in the container would: its
/// `NAME=VALUE` lines (`export ` before them allowed; blank lines and `#` comments skipped),
/// values quoted and with `$NAME`, `${NAME:-word}` expanded from the variables before and
/// the container's environment ([`berth_core::shell`]): the caller's, but the image's PATH,
/// LD_LIBRARY_PATH and LD_PRELOAD (`image_env`), which the host's do not reach.
fn env_file(path: &std::path::Path, image_env: &[String]) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--env-file {}: cannot read it", path.display()))?;
    let mut vars: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let known = |name: &str| {
            let set = vars.iter().rev().find(|(k, _)| k == name);
            let image = || {
                let prefix = format!("{name}=");
                let value = image_env.iter().find_map(|kv| kv.strip_prefix(&prefix));
                value
                    .map(str::to_string)
                    .or_else(|| (name == "PATH").then(|| berth_runtime::DEFAULT_PATH.to_string()))
            };
            set.map(|(_, v)| v.clone()).or_else(|| {
                match berth_runtime::NOT_FROM_HOST.contains(&name) {
                    true => image(),
                    false => std::env::var(name).ok(),
                }
            })
        };
        let what = match berth_core::shell::assignments(line, &known) {
            Some(Ok(set)) => {
                vars.extend(set);
                continue;
            }
            None if line.trim().is_empty() || line.trim_start().starts_with('#') => continue,
            None => format!("expected NAME=VALUE, found {:?}", line.trim()),
            Some(Err(e)) => e.to_string(),
        };
        anyhow::bail!("--env-file {} line {}: {what}", path.display(), n + 1);
    }
    Ok(vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Refuses limits no container could run under, or that ask for more CPUs than berth may
/// use here, as docker refuses them (the kernel would take some, and fail later or oddly).
fn check_limits(limits: &Limits) -> Result<()> {
    if let Some(m) = limits.memory.filter(|m| *m < MIN_MEMORY) {
        anyhow::bail!("--memory: {m} bytes is below 6 MiB, the least a container can start under");
    }
    if limits.pids == Some(0) {
        anyhow::bail!("--pids-limit 0: a container needs 1 process at least (leave the option out for no limit)");
    }
    if limits.cpus.is_none() && limits.cpuset.is_none() {
        return Ok(());
    }
    let usable = berth_agent::node::usable_cpus();
    if let Some(cpus) = limits.cpus.filter(|c| *c > usable.len() as f64) {
        anyhow::bail!("--cpus {cpus}: berth may use {} CPUs here", usable.len());
    }
    if let Some(list) = &limits.cpuset {
        let wanted = number_ranges(list).with_context(|| {
            format!("--cpuset-cpus {list}: expected CPU numbers and ranges, e.g. 0-3 or 0,2")
        })?;
        // The first CPU of the list berth may not use (past the last usable one, the rest of
        // a range is not looked at).
        let last = usable.last().copied().unwrap_or(0);
        let outside = wanted.iter().find_map(|&(a, b)| match a > last {
            true => Some(a),
            false => (a..=b.min(last + 1)).find(|c| !usable.contains(c)),
        });
        if let Some(cpu) = outside {
            anyhow::bail!(
                "--cpuset-cpus {list}: CPU {cpu} is not one berth may use here ({})",
                berth_core::number_list(&usable)
            );
        }
    }
    Ok(())
}

/// What IMAGE names, as Apptainer users name images too: a name or id in the store;
/// `docker://NAME`, the store's NAME, pulled first if the store lacks it; the path of an
/// image file (`app.sif`, `./app.sqsh`, `/data/app.tar`: imported into the store on first
/// use, and again once the file changes); or a directory (an unpacked root filesystem,
/// Apptainer's sandbox), run as it is.
enum Named {
    Stored(Box<berth_image::ImageRecord>),
    Directory(std::path::PathBuf),
}

fn named(settings: &Settings, store: &berth_image::Store, image: &str) -> Result<Named> {
    if let Some(name) = image.strip_prefix("docker://") {
        return match store.resolve(name) {
            Err(berth_image::ImageError::NotFound(_)) => {
                berth_core::say!("berth: {name} is not in the store: pulling it");
                let record = store.pull(name, &settings.registry(None))?;
                crate::image::warn_if_foreign(name, &record);
                Ok(Named::Stored(Box::new(record)))
            }
            found => Ok(Named::Stored(Box::new(found?))),
        };
    }
    if let Some((scheme, _)) = image.split_once("://") {
        anyhow::bail!("{image}: berth runs images from its store, image files and directories, and docker:// (OCI registries); {scheme}:// is not one of them");
    }
    if !berth_core::job::image_is_file(image) {
        // A name the store lacks that is a file or directory here (`sandbox`): that, as
        // Apptainer takes it; one that is both is the store's, said so.
        let here = std::path::Path::new(image).exists();
        return match store.resolve(image) {
            Err(_) if here => named(settings, store, &format!("./{image}")),
            found => {
                if here && found.is_ok() {
                    berth_core::say!("berth: {image} is an image in the store and a file here: running the store's (./{image} runs the file)");
                }
                Ok(Named::Stored(Box::new(found?)))
            }
        };
    }
    let path = match std::fs::canonicalize(image) {
        Ok(path) => path,
        // A name of the store's that ends as a file's would (`lab/app:v1.tar`).
        Err(_) if !image.starts_with(['/', '.']) && store.resolve(image).is_ok() => {
            return Ok(Named::Stored(Box::new(store.resolve(image)?)));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot find the image file {image}")),
    };
    let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {image}"))?;
    if meta.is_dir() {
        // berth writes the user's passwd and group entries into the container's layer over
        // the tree: without root, only over files of one's own.
        let uid = berth_runtime::Identity::current()?.uid;
        let owner = std::os::unix::fs::MetadataExt::uid(&meta);
        if uid != 0 && owner != uid {
            anyhow::bail!("{image} belongs to uid {owner}: a container of yours runs only a directory of your own; import it (berth image import {image} --name NAME) and run that");
        }
        return Ok(Named::Directory(path));
    }
    Ok(Named::Stored(Box::new(file_image(store, &path, &meta)?)))
}

/// The name of the image file at `path` as it is now, in a store: `file/STEM-PATHHASH:STATEHASH`,
/// one repository per file (returned too), the tag changing with the file.
pub fn file_image_name(path: &std::path::Path, meta: &std::fs::Metadata) -> (String, String) {
    use std::os::unix::fs::MetadataExt;
    let hash = |text: String| berth_image::Digest::of(text.as_bytes()).hex()[..16].to_string();
    let stem = (path.file_stem()).map_or(String::new(), |s| {
        berth_image::component_of(&s.to_string_lossy())
    });
    let repository = format!(
        "file/{}{}",
        if stem.is_empty() {
            String::new()
        } else {
            format!("{stem}-")
        },
        hash(path.display().to_string())
    );
    let state = format!(
        "{}:{}:{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let name = format!("{repository}:{}", hash(state));
    (repository, name)
}

/// The store's image of the file at `path` (imported now if the store has none of it as it
/// is), named by [`file_image_name`]; the file's earlier imports go.
fn file_image(
    store: &berth_image::Store,
    path: &std::path::Path,
    meta: &std::fs::Metadata,
) -> Result<berth_image::ImageRecord> {
    let (repository, name) = file_image_name(path, meta);
    match store.resolve(&name) {
        Err(berth_image::ImageError::NotFound(_)) => {}
        found => return Ok(found?),
    }
    let options = berth_image::ImportOptions {
        name: Some(name.clone()),
    };
    berth_core::say!(
        "berth: importing {} into the store (once, and again if it changes)",
        path.display()
    );
    let record = match store.import(path, &options) {
        Err(berth_image::ImageError::NotInArchive { holds, .. }) => anyhow::bail!(
            "{} holds several images ({}): import them (berth image import {0}) and run one by name",
            path.display(),
            holds.join(", ")
        ),
        imported => imported?,
    };
    crate::image::warn_if_foreign(&path.display().to_string(), &record);
    // The file's earlier imports, which it no longer is (left where a container runs one).
    for old in store.list()?.iter().flat_map(|r| r.names.clone()) {
        if old.starts_with(&format!("{repository}:")) && old != name {
            let _ = store.remove(&old, |r| crate::image::in_use(store, r));
        }
    }
    Ok(record)
}

fn start(
    settings: &Settings,
    image: &str,
    action: Action,
    args: ContainerArgs,
    entrypoint: Option<String>,
) -> Result<i32> {
    let store = settings.store()?;
    let mut foreign = None;
    let (rootfs, mut defaults) = match named(settings, &store, image)? {
        Named::Stored(record) => {
            // The image's unpacked copy (made once, on first use): an unprivileged user
            // cannot mount squashfs, and root's container starts faster from a directory
            // than through a loop device and a fresh squashfs mount, whose page cache is
            // cold at each start. Root mounts the squashfs file when there is no room for
            // the copy.
            foreign = record.foreign_architecture().map(str::to_string);
            let rootfs = match store.rootfs_dir(&record) {
                Ok(dir) => Rootfs::Directory(dir),
                Err(e @ berth_image::ImageError::NoSpace(_)) if is_root() => {
                    berth_core::say!(
                        "berth: warning: the image's unpacked copy cannot be made ({e}); mounting its squashfs file instead"
                    );
                    Rootfs::Squashfs(store.squashfs(&record))
                }
                Err(e) => return Err(e.into()),
            };
            // As the user named it: the name typed where it is one of the image's (an id,
            // or a file's path, is not a name a script could use again).
            let typed = berth_image::Reference::parse(image.trim_start_matches("docker://"))
                .map(|r| r.to_string())
                .ok()
                .filter(|n| record.names.contains(n));
            let defaults = ImageDefaults {
                name: typed
                    .or_else(|| record.names.first().cloned())
                    .unwrap_or_else(|| record.id.short().to_string()),
                env: record.config.env.clone(),
                entrypoint: record.config.entrypoint.clone(),
                cmd: record.config.cmd.clone(),
                working_dir: record.config.working_dir.clone(),
            };
            (rootfs, defaults)
        }
        Named::Directory(dir) => {
            let defaults = ImageDefaults {
                name: dir.display().to_string(),
                ..ImageDefaults::default()
            };
            (Rootfs::Directory(dir), defaults)
        }
    };
    let dir = match &rootfs {
        Rootfs::Directory(dir) => Some(dir.as_path()),
        _ => None,
    };
    let options = args.options(dir, &defaults.env)?;
    // Docker's --entrypoint replaces the image's, and its CMD goes with it.
    if let Some(program) = entrypoint {
        defaults.entrypoint = Some(Vec::from_iter((!program.is_empty()).then_some(program)));
        defaults.cmd = None;
    }
    // (APPTAINERENV_NAME is NAME inside, not itself.)
    let host_env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| prefixed_env(k).is_none())
        .collect();
    let cwd = std::env::current_dir().context("cannot determine the current directory")?;
    let spec = berth_runtime::plan(
        &defaults,
        rootfs,
        &action,
        &options,
        &settings.config.binds,
        &host_env,
        &cwd,
    )?;
    let outcome = berth_runtime::run(&spec).map_err(|e| match (e, &foreign) {
        // Most likely why: say it (the kernel's "Exec format error" does not).
        (berth_runtime::RuntimeError::Container { code: 126, message }, Some(arch)) => {
            berth_runtime::RuntimeError::Container {
                code: 126,
                message: format!(
                    "{message} (the image is for linux/{arch}, this machine is linux/{})",
                    berth_image::host_arch()
                ),
            }
        }
        (e, _) => e,
    })?;
    if outcome.oom_killed {
        // (In the units --memory takes: 20m is 20 MiB.)
        let limit = (options.limits.memory).map_or(String::new(), |m| {
            format!(" (limit {})", berth_core::quantity::binary_size(m))
        });
        match outcome.signal == Some(libc::SIGKILL) {
            true => berth_core::say!(
                "berth: the container ran out of memory{limit} and the kernel's OOM killer ended it"
            ),
            false => berth_core::say!(
                "berth: a process in the container ran out of memory{limit} and the kernel's OOM killer killed it"
            ),
        }
    }
    Ok(outcome.code)
}

pub fn run(settings: &Settings, mut a: RunArgs) -> Result<i32> {
    let image = a.words.remove(0);
    // (Taken as the image only because the image's arguments may be options.)
    if image.starts_with('-') {
        anyhow::bail!("berth run: unknown option '{image}': berth run's options come before the image (see berth run --help)");
    }
    start(
        settings,
        &image,
        Action::Run(a.words),
        a.common,
        a.entrypoint,
    )
}

pub fn exec(settings: &Settings, a: ExecArgs) -> Result<i32> {
    start(settings, &a.image, Action::Exec(a.command), a.common, None)
}

pub fn shell(settings: &Settings, mut a: ShellArgs) -> Result<i32> {
    // (Apptainer's --shell; SHELL says which, as a login would.)
    let action = match a.shell {
        Some(shell) => {
            a.common.env.push(format!("SHELL={shell}"));
            Action::Exec(vec![shell])
        }
        None => Action::Shell,
    };
    start(settings, &a.image, action, a.common, None)
}
