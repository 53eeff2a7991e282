//! From what the user typed and what the image says to a [`ContainerSpec`]: which program,
//! which environment, which binds (checked against the administrator's policy), which
//! directory, which identity. The rules follow Apptainer where HPC users expect them
//! (home and current directory bound, host environment passed) and docker where images
//! expect them (ENV, ENTRYPOINT, CMD, WORKDIR).

use crate::cgroup::Limits;
use crate::gpu::{self, GpuRequest};
use crate::spec::{Bind, ContainerSpec, Program, Rootfs};
use crate::{sys, Identity, RuntimeError};
use berth_core::BindPolicy;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use berth_core::shell::DEFAULT_PATH;
/// Where GPU driver libraries and tools appear in the container.
pub const GPU_LIB_DIR: &str = "/.berth/gpu/lib";
pub const GPU_BIN_DIR: &str = "/.berth/gpu/bin";

/// The parts of an image config that decide how a container starts.
#[derive(Debug, Clone, Default)]
pub struct ImageDefaults {
    pub name: String,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// ENTRYPOINT + (ARGS or CMD), like `apptainer run` / `docker run`.
    Run(Vec<String>),
    /// The given command, ignoring ENTRYPOINT, like `apptainer exec`.
    Exec(Vec<String>),
    Shell,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub binds: Vec<String>,
    pub env: Vec<String>,
    pub cleanenv: bool,
    pub pwd: Option<String>,
    pub no_home: bool,
    /// Do not bind the current directory either (Apptainer's --contain).
    pub no_cwd: bool,
    /// An empty home of its own (see [`ContainerSpec::empty_home`]).
    pub empty_home: bool,
    /// See [`ContainerSpec::umask`].
    pub umask: Option<u32>,
    /// The user's home inside, where it is not their home outside (the caller binds what
    /// goes there).
    pub home: Option<String>,
    pub limits: Limits,
    pub gpus: Option<GpuRequest>,
    pub pid_namespace: bool,
    /// See [`ContainerSpec::net_namespace`].
    pub net_namespace: bool,
    /// See [`ContainerSpec::hostname`].
    pub hostname: Option<String>,
    /// Run as this user, looked up by the caller (root only: how the node agent runs jobs).
    pub user: Option<Identity>,
    /// Binds berth itself makes (a job's script, say): SOURCE, TARGET, read-only. Not checked
    /// against the bind policy, so never fill this from user input.
    pub system_binds: Vec<(PathBuf, String, bool)>,
    /// Directories appended to the program's PATH (where berth puts its own tools: a job's
    /// container has `berth` in /.berth/bin).
    pub path_append: Vec<String>,
    pub time_limit: Option<crate::TimeLimit>,
    pub cgroup_name: Option<String>,
    /// Root inside, `user` outside (see [`ContainerSpec::remap_root`]).
    pub remap_root: bool,
    /// See [`ContainerSpec::layer`].
    pub layer: Option<PathBuf>,
    /// A host directory bound at /tmp (a batch job's own, on the node's disk, as Slurm's
    /// job_container/tmpfs makes it), instead of a tmpfs: what a job writes there is not
    /// held in its memory.
    pub tmp: Option<PathBuf>,
}

/// Directories never bound as the current directory: binding the host's over the image's
/// would replace the image's own system.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys",
    "/usr", "/var",
];

fn is_system_dir(path: &Path) -> bool {
    SYSTEM_DIRS
        .iter()
        .any(|d| path == Path::new(d) || (*d != "/" && *d != "/var" && path.starts_with(d)))
}

/// Parses `SRC[:DST[:ro|rw]]`.
pub fn parse_bind(spec: &str) -> Result<(PathBuf, String, bool), RuntimeError> {
    let bad = |why| RuntimeError::BindSyntax {
        spec: spec.to_string(),
        why,
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [src] => (*src, *src, false),
        [src, "ro"] => (*src, *src, true),
        [src, "rw"] => (*src, *src, false),
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        [_, _, _] => return Err(bad("the third field must be 'ro' or 'rw'")),
        _ => return Err(bad("expected SRC[:DST[:ro|rw]]")),
    };
    if src.is_empty() {
        return Err(bad("the source is empty"));
    }
    if !dst.starts_with('/') {
        return Err(bad("the destination must be an absolute path"));
    }
    if Path::new(dst).components().count() <= 1 {
        return Err(bad("cannot bind over the container's root directory"));
    }
    // "/x/.." would name the root (or another place than it says) once resolved.
    if Path::new(dst)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(bad("the destination must not contain '..'"));
    }
    Ok((PathBuf::from(src), dst.to_string(), ro))
}

/// Resolves a bind source (symlinks included) and opens it. With `policy` (a user's
/// container), refuses sources outside the allowed paths, and sources the user could not
/// reach itself: it is opened as the user, so that a bind never opens a way through a
/// directory the user may not pass (a file readable to all, in a directory only root may
/// enter). The check is made on the fully resolved path and then confirmed on the opened
/// descriptor, so a symlink swapped in between cannot redirect it.
fn open_bind(
    source: &Path,
    target: String,
    read_only: bool,
    policy: Option<(&BindPolicy, &Path, &Path, &Identity)>,
) -> Result<Bind, RuntimeError> {
    let err = |source_err| RuntimeError::BindSource {
        path: source.to_path_buf(),
        source: source_err,
    };
    // Resolved (symlinks included) before the check; without a policy, by the open.
    let canonical = match policy {
        Some(_) => std::fs::canonicalize(source).map_err(err)?,
        None => source.to_path_buf(),
    };
    let check = |path: &Path| -> Result<(), RuntimeError> {
        if let Some((policy, home, cwd, _)) = policy {
            policy
                .check(path, home, cwd)
                .map_err(|why| RuntimeError::BindRefused {
                    path: path.to_path_buf(),
                    why: why.to_string(),
                })?;
        }
        Ok(())
    };
    check(&canonical)?;
    let nofollow = if policy.is_some() {
        libc::O_NOFOLLOW
    } else {
        0
    };
    let open = || sys::open(&canonical, libc::O_PATH | nofollow);
    let fd = match policy {
        Some((.., user)) => crate::enter::as_user(user, open)?.map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => RuntimeError::BindRefused {
                path: source.to_path_buf(),
                why: format!("{} cannot reach it ({e})", user.user),
            },
            _ => err(e),
        })?,
        None => open().map_err(err)?,
    };
    let opened = sys::fd_target(&fd).map_err(err)?;
    if opened != canonical {
        check(&opened)?;
    }
    // SAFETY: fstat fills a zeroed stat we own, on a descriptor we own.
    let is_dir = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd.as_raw_fd(), &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR
    };
    Ok(Bind {
        source: opened,
        fd,
        target,
        read_only,
        is_dir,
    })
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key.to_string(), value)),
    }
}

fn split_env(kv: &str) -> Option<(&str, &str)> {
    kv.split_once('=').filter(|(k, _)| !k.is_empty())
}

/// The host's variables a container never gets from it: they name the host's files (its
/// PATH, and a login node's modules' libraries, which would load wherever their
/// directories are bound); the image's apply, or `--env`'s.
pub const NOT_FROM_HOST: [&str; 3] = ["PATH", "LD_LIBRARY_PATH", "LD_PRELOAD"];

/// Builds the environment: host (unless `cleanenv`), then the image's ENV, then berth's
/// own variables, then `--env`. PATH comes from the image, never from the host: host PATH
/// entries mean nothing inside the image; nor do the host's LD_LIBRARY_PATH and LD_PRELOAD
/// (a login node's modules), which would load host libraries wherever their directories
/// are bound (as Apptainer, which leaves them out too; `--env` sets them).
pub fn environment(
    host: &[(String, String)],
    image: &ImageDefaults,
    options: &Options,
    id: &Identity,
) -> Result<Vec<String>, RuntimeError> {
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in host {
        let keep = if options.cleanenv {
            matches!(k.as_str(), "TERM" | "LANG")
        } else {
            !NOT_FROM_HOST.contains(&k.as_str())
        };
        if keep {
            set(&mut env, k, v.clone());
        }
    }
    set(&mut env, "PATH", DEFAULT_PATH.to_string());
    for kv in &image.env {
        if let Some((k, v)) = split_env(kv) {
            set(&mut env, k, v.to_string());
        }
    }
    set(&mut env, "HOME", id.home.clone());
    set(&mut env, "USER", id.user.clone());
    set(&mut env, "LOGNAME", id.user.clone());
    set(&mut env, "BERTH_CONTAINER", image.name.clone());
    // What scripts look for to know they run in a container (Apptainer's and Singularity's:
    // the image, and its last part).
    let last = image.name.rsplit('/').next().unwrap_or(&image.name);
    for tool in ["APPTAINER", "SINGULARITY"] {
        set(&mut env, &format!("{tool}_CONTAINER"), image.name.clone());
        set(&mut env, &format!("{tool}_NAME"), last.to_string());
    }
    for kv in &options.env {
        let (k, v) = split_env(kv).ok_or_else(|| RuntimeError::EnvSyntax(kv.clone()))?;
        // Apptainer's: PREPEND_PATH and APPEND_PATH add to the image's PATH.
        let path = env.iter_mut().find(|(k, _)| k == "PATH").map(|(_, p)| p);
        match (k, path) {
            ("PREPEND_PATH", Some(path)) => *path = format!("{v}:{path}"),
            ("APPEND_PATH", Some(path)) => *path = format!("{path}:{v}"),
            _ => set(&mut env, k, v.to_string()),
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Appends `dir` to the list in variable `key` (unless it is there already); `false` if
/// there is no such variable.
fn append_path(env: &mut [String], key: &str, dir: &str) -> bool {
    let prefix = format!("{key}=");
    match env.iter_mut().find(|kv| kv.starts_with(&prefix)) {
        Some(kv) if kv[prefix.len()..].split(':').any(|d| d == dir) => true,
        Some(kv) if kv.len() > prefix.len() => {
            kv.push(':');
            kv.push_str(dir);
            true
        }
        Some(kv) => {
            kv.push_str(dir);
            true
        }
        None => false,
    }
}

pub fn program(image: &ImageDefaults, action: &Action) -> Result<Program, RuntimeError> {
    match action {
        Action::Shell => Ok(Program::Shell),
        Action::Exec(args) => Ok(Program::Argv(args.clone())),
        Action::Run(args) => {
            let mut argv = image.entrypoint.clone().unwrap_or_default();
            if args.is_empty() {
                argv.extend(image.cmd.clone().unwrap_or_default());
            } else {
                argv.extend(args.iter().cloned());
            }
            if argv.is_empty() {
                return Err(RuntimeError::NothingToRun);
            }
            Ok(Program::Argv(argv))
        }
    }
}

/// The whole resolution. `host_env` and `cwd` are the caller's.
pub fn plan(
    image: &ImageDefaults,
    rootfs: Rootfs,
    action: &Action,
    options: &Options,
    policy: &BindPolicy,
    host_env: &[(String, String)],
    cwd: &Path,
) -> Result<ContainerSpec, RuntimeError> {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let identity = match (&options.user, root) {
        (Some(user), true) => user.clone(),
        (Some(_), false) => {
            return Err(RuntimeError::NotPermitted(
                "only root may run a container as another user (--user)".into(),
            ))
        }
        (None, _) => Identity::current()?,
    };
    let rootless = !root;
    // A user's is their own user namespace mapping root to them; root's, a job's (through
    // an idmapped image tree), has no pid namespace of its own.
    if options.remap_root && (rootfs == Rootfs::Host || (!rootless && options.pid_namespace)) {
        return Err(RuntimeError::NotPermitted(
            "a remapped root is for a container of an image, without a pid namespace of its own when root makes it".into(),
        ));
    }
    if let Rootfs::Squashfs(_) = rootfs {
        if rootless {
            return Err(RuntimeError::NotPermitted(
                "mounting a squashfs image needs root".into(),
            ));
        }
    }
    // The policy binds a user; root running as itself is the administrator.
    let enforce = identity.uid != 0;
    let home = PathBuf::from(&identity.home);
    let policy_args = enforce.then_some((policy, home.as_path(), cwd, &identity));

    let host = rootfs == Rootfs::Host;
    if host && !options.binds.is_empty() {
        return Err(RuntimeError::BindSyntax {
            spec: options.binds.join(" "),
            why: "binds need an image: a job without one already sees the host's files",
        });
    }
    let mut binds: Vec<Bind> = Vec::new();
    // The user's binds decide what is at and below their targets: the home and the working
    // directory are not bound there too (which would make mount points in the user's
    // directory, or fail on a read-only one, and undo its `ro`).
    let user_binds =
        (options.binds.iter().map(|spec| parse_bind(spec))).collect::<Result<Vec<_>, _>>()?;
    let user_bound = |path: &Path| (user_binds.iter()).any(|(_, dst, _)| path.starts_with(dst));
    let home_bound = !host
        && !options.no_home
        && !user_bound(&home)
        && home.is_dir()
        && !is_system_dir(&home)
        && policy.check(&home, &home, cwd).is_ok();
    if home_bound {
        binds.push(open_bind(&home, identity.home.clone(), false, policy_args)?);
    }
    let cwd_covered = home_bound && cwd.starts_with(&home);
    let cwd_bound = !host
        && !options.no_cwd
        && !user_bound(cwd)
        && !is_system_dir(cwd)
        && (cwd_covered || (!enforce || policy.check(cwd, &home, cwd).is_ok()));
    // The working directory a program must start in (a batch job's, --pwd's) that the policy
    // keeps out of the container: said with its rule, rather than as a directory the
    // container lacks once it runs.
    let required = options.pwd.as_deref().map(Path::new) == Some(cwd);
    let required_refused = required && !cwd_bound && !host && !options.no_cwd;
    if required_refused && !user_bound(cwd) && !is_system_dir(cwd) {
        if let Err(why) = policy.check(cwd, &home, cwd) {
            return Err(RuntimeError::BindRefused {
                path: cwd.to_path_buf(),
                why: format!("it is the working directory, and {why}"),
            });
        }
    }
    if cwd_bound && !cwd_covered {
        if let Some(target) = cwd.to_str() {
            binds.push(open_bind(cwd, target.to_string(), false, policy_args)?);
        }
    }
    for (src, dst, ro) in &user_binds {
        binds.push(open_bind(&cwd.join(src), dst.clone(), *ro, policy_args)?);
    }
    // What the policy denies below a directory it lets the user bind (a parent of a denied
    // one, the home, the working directory) is hidden in the container.
    let masks: Vec<(String, bool)> = match enforce {
        true => (binds.iter())
            .flat_map(|b| {
                (policy.denied_below(&b.source, &home, cwd).into_iter())
                    .filter_map(|below| {
                        let dir = std::fs::symlink_metadata(b.source.join(&below))
                            .ok()?
                            .is_dir();
                        let target = Path::new(&b.target).join(below);
                        Some((target.to_str()?.to_string(), dir))
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        false => Vec::new(),
    };
    for (source, target, ro) in options.system_binds.iter().filter(|_| !host) {
        binds.push(open_bind(source, target.clone(), *ro, None)?);
    }
    if let Some(tmp) = options.tmp.as_ref().filter(|_| !host) {
        binds.push(open_bind(tmp, "/tmp".into(), false, None)?);
    }
    // Parents before children, so that a bind inside another bind's target lands on top.
    binds.sort_by_key(|b| Path::new(&b.target).components().count());
    // A home of its own inside (Apptainer's --home SRC:DST): HOME and the user's entry say it.
    let identity = match &options.home {
        Some(home) => Identity {
            home: home.clone(),
            ..identity
        },
        None => identity,
    };

    // Root inside (--fakeroot, a user's `-u 0`) is root to the programs too, as Docker's
    // `-u 0` and Apptainer's --fakeroot have it: HOME, USER and LOGNAME are root's.
    let as_seen = match options.remap_root {
        true => Identity {
            user: "root".into(),
            home: "/root".into(),
            ..identity.clone()
        },
        false => identity.clone(),
    };
    let mut env = environment(host_env, image, options, &as_seen)?;
    let gpu = match &options.gpus {
        Some(request) => {
            let injection = gpu::discover(Path::new("/"), request)?;
            for (k, v) in [
                ("CUDA_VISIBLE_DEVICES", &injection.visible_devices),
                ("NVIDIA_VISIBLE_DEVICES", &injection.visible_devices),
            ] {
                env.retain(|kv| !kv.starts_with(&format!("{k}=")));
                env.push(format!("{k}={v}"));
            }
            if !append_path(&mut env, "LD_LIBRARY_PATH", GPU_LIB_DIR) {
                env.push(format!("LD_LIBRARY_PATH={GPU_LIB_DIR}"));
            }
            append_path(&mut env, "PATH", GPU_BIN_DIR);
            Some(injection)
        }
        None => None,
    };
    for dir in &options.path_append {
        append_path(&mut env, "PATH", dir);
    }

    // (Under a user's bind the working directory is there if the bind has it.)
    let cwd_seen = cwd_bound || (!host && user_bound(cwd));
    let (cwd_in, cwd_required) = match (&options.pwd, cwd_seen, &image.working_dir) {
        (Some(p), _, _) => (p.clone(), true),
        (None, true, _) => (cwd.to_string_lossy().into_owned(), false),
        (None, false, Some(w)) if !w.is_empty() => (w.clone(), false),
        _ => ("/".to_string(), false),
    };
    Ok(ContainerSpec {
        rootfs,
        program: program(image, action)?,
        env,
        cwd: cwd_in,
        cwd_required,
        binds,
        masks,
        identity,
        rootless,
        pid_namespace: options.pid_namespace,
        net_namespace: options.net_namespace,
        hostname: options.hostname.clone(),
        limits: (options.limits != Limits::default()).then(|| options.limits.clone()),
        gpu,
        time_limit: options.time_limit,
        cgroup_name: options.cgroup_name.clone(),
        remap_root: options.remap_root,
        layer: options.layer.clone(),
        empty_home: options.empty_home && !host && !home_bound && options.home.is_none(),
        umask: options.umask,
        pid_variable: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::identity::tests::ann;

    #[test]
    fn bind_syntax() {
        assert_eq!(
            parse_bind("/data").unwrap(),
            ("/data".into(), "/data".into(), false)
        );
        assert_eq!(
            parse_bind("/data:ro").unwrap(),
            ("/data".into(), "/data".into(), true)
        );
        assert_eq!(
            parse_bind("/a:/b").unwrap(),
            ("/a".into(), "/b".into(), false)
        );
        assert_eq!(
            parse_bind("/a:/b:ro").unwrap(),
            ("/a".into(), "/b".into(), true)
        );
        assert_eq!(
            parse_bind("rel:/b:rw").unwrap(),
            ("rel".into(), "/b".into(), false)
        );
        assert!(parse_bind("/a:b").is_err());
        assert!(parse_bind("/a:/").is_err());
        assert!(parse_bind("/a:/x/..").is_err());
        assert!(parse_bind("/a:/x/../y").is_err());
        assert!(parse_bind("/a:/b:rx").is_err());
        assert!(parse_bind(":/b").is_err());
        assert!(parse_bind("/a:/b:ro:x").is_err());
    }

    #[test]
    fn environment_layers() {
        let host = vec![
            ("PATH".into(), "/home/ann/.cargo/bin".into()),
            ("FOO".into(), "host".into()),
            ("TERM".into(), "xterm".into()),
            ("LD_LIBRARY_PATH".into(), "/apps/gcc/lib".into()),
            ("LD_PRELOAD".into(), "/apps/x.so".into()),
        ];
        let image = ImageDefaults {
            name: "img".into(),
            env: vec![
                "PATH=/opt/bin:/bin".into(),
                "FOO=image".into(),
                "BAR=1".into(),
            ],
            ..Default::default()
        };
        let options = Options {
            env: vec!["BAR=2".into(), "EMPTY=".into()],
            ..Default::default()
        };
        let env = environment(&host, &image, &options, &ann()).unwrap();
        assert!(env.contains(&"PATH=/opt/bin:/bin".to_string()));
        // Apptainer's PREPEND_PATH and APPEND_PATH add to the image's PATH.
        let around = Options {
            env: vec!["PREPEND_PATH=/pre".into(), "APPEND_PATH=/post".into()],
            ..Default::default()
        };
        let path = environment(&host, &image, &around, &ann()).unwrap();
        assert!(
            path.contains(&"PATH=/pre:/opt/bin:/bin:/post".to_string()),
            "{path:?}"
        );
        assert!(!path.iter().any(|kv| kv.contains("_PATH=")), "{path:?}");
        assert!(env.contains(&"FOO=image".to_string()));
        assert!(env.contains(&"BAR=2".to_string()));
        assert!(env.contains(&"EMPTY=".to_string()));
        assert!(env.contains(&"HOME=/home/ann".to_string()));
        assert!(env.contains(&"BERTH_CONTAINER=img".to_string()));
        assert!(env.contains(&"APPTAINER_CONTAINER=img".to_string()));
        assert!(env.contains(&"SINGULARITY_NAME=img".to_string()));
        assert!(env.contains(&"TERM=xterm".to_string()));
        assert!(!env.iter().any(|kv| kv.starts_with("LD_")), "{env:?}");

        let clean = Options {
            cleanenv: true,
            ..Default::default()
        };
        let env = environment(&host, &ImageDefaults::default(), &clean, &ann()).unwrap();
        assert!(!env.iter().any(|kv| kv.starts_with("FOO=")));
        assert!(env.contains(&"TERM=xterm".to_string()));
        assert!(env.contains(&format!("PATH={DEFAULT_PATH}")));

        let bad = Options {
            env: vec!["NOVALUE".into()],
            ..Default::default()
        };
        assert!(matches!(
            environment(&host, &image, &bad, &ann()),
            Err(RuntimeError::EnvSyntax(_))
        ));
    }

    #[test]
    fn paths_are_appended_once() {
        let mut env = vec!["PATH=/bin".to_string(), "EMPTY=".to_string()];
        assert!(append_path(&mut env, "PATH", "/.berth/bin"));
        assert!(append_path(&mut env, "PATH", "/.berth/bin"));
        assert!(append_path(&mut env, "EMPTY", "/x"));
        assert!(!append_path(&mut env, "MISSING", "/x"));
        assert_eq!(env, ["PATH=/bin:/.berth/bin", "EMPTY=/x"]);
    }

    #[test]
    fn programs() {
        let image = ImageDefaults {
            entrypoint: Some(vec!["/init".into()]),
            cmd: Some(vec!["serve".into()]),
            ..Default::default()
        };
        assert_eq!(
            program(&image, &Action::Run(vec![])).unwrap(),
            Program::Argv(vec!["/init".into(), "serve".into()])
        );
        assert_eq!(
            program(&image, &Action::Run(vec!["x".into()])).unwrap(),
            Program::Argv(vec!["/init".into(), "x".into()])
        );
        assert_eq!(
            program(&image, &Action::Exec(vec!["ls".into()])).unwrap(),
            Program::Argv(vec!["ls".into()])
        );
        assert!(matches!(
            program(&ImageDefaults::default(), &Action::Run(vec![])),
            Err(RuntimeError::NothingToRun)
        ));
    }

    #[test]
    fn system_dirs_are_not_bound_as_cwd() {
        assert!(is_system_dir(Path::new("/")));
        assert!(is_system_dir(Path::new("/usr/local/src")));
        assert!(is_system_dir(Path::new("/var")));
        assert!(!is_system_dir(Path::new("/var/tmp/run")));
        assert!(!is_system_dir(Path::new("/scratch/ann")));
    }

    #[test]
    fn refused_bind_names_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let policy = BindPolicy {
            allow: vec!["$HOME".into()],
            deny: vec![],
        };
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        // Whoever runs the test: the opening as the user changes nothing then.
        let me = Identity::current().unwrap();
        let err = open_bind(
            Path::new("/etc"),
            "/etc2".into(),
            false,
            Some((&policy, &home, Path::new("/"), &me)),
        )
        .unwrap_err();
        assert!(err.to_string().contains("$HOME"), "{err}");
        // A symlink inside an allowed directory pointing outside it is judged by its target.
        std::os::unix::fs::symlink("/etc", home.join("sneaky")).unwrap();
        let err = open_bind(
            &home.join("sneaky"),
            "/x".into(),
            false,
            Some((&policy, &home, Path::new("/"), &me)),
        )
        .unwrap_err();
        assert!(
            matches!(err, RuntimeError::BindRefused { ref path, .. } if path == Path::new("/etc")),
            "{err}"
        );
        let ok = open_bind(
            &home,
            "/h".into(),
            true,
            Some((&policy, &home, Path::new("/"), &me)),
        )
        .unwrap();
        assert!(ok.is_dir && ok.read_only);
    }
}
