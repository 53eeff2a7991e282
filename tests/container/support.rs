//! The test fixture: a busybox image built from Debian's busybox-static plus a static probe,
//! a copy of the berth binary every user can run, and a way to run berth in each mode.

use std::io::Write;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const TEST_USER: &str = "berthtest";

/// Two tasks of a step as PMI-1 clients in sh, on the connection in PMI_FD: each puts a key,
/// meets the other at a barrier, says it is up (`up.RANK`), waits for `go`, then gets the
/// other's key, meets it again and finalizes, and says what it heard
/// (`rank R of N: from-OTHER, cmd=barrier_out, cmd=finalize_ack`).
#[allow(dead_code)]
pub const PMI_SHELL_CLIENT: &str = r#"fd=$PMI_FD
say() { eval "echo \"\$*\" >&$fd"; }
hear() { eval "read -r heard <&$fd"; }
say "cmd=init pmi_version=1 pmi_subversion=1"; hear
say "cmd=get_my_kvsname"; hear; kvs=${heard#*kvsname=}
say "cmd=put kvsname=$kvs key=r$PMI_RANK value=from-$PMI_RANK"; hear
say "cmd=barrier_in"; hear
touch "up.$PMI_RANK"
while [ ! -e go ]; do sleep 0.1; done
say "cmd=get kvsname=$kvs key=r$((1 - PMI_RANK))"; hear; got=${heard##*value=}
say "cmd=barrier_in"; hear; after=$heard
say "cmd=finalize"; hear
echo "rank $PMI_RANK of $PMI_SIZE: $got, $after, $heard"
"#;

/// Who runs the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// root, as itself (root's containers run from the image's unpacked copy, as a user's do).
    Root,
    /// root acting for the test user (`--user`), as the node agent will.
    RootAsUser,
    /// the test user itself: user namespace, unpacked image.
    Rootless,
}

pub const ALL_MODES: [Mode; 3] = [Mode::Root, Mode::RootAsUser, Mode::Rootless];

impl Mode {
    /// Who a container's process is in this mode.
    pub fn user(self) -> &'static str {
        match self {
            Mode::Root => "root",
            Mode::RootAsUser | Mode::Rootless => TEST_USER,
        }
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn from_output(o: Output) -> Out {
        Out {
            // As a shell reports it: a program killed by signal N exits 128 + N. (berth without
            // cgroup or pid namespace becomes the container, so it dies of that signal too.)
            code: o.status.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&o.status).unwrap_or(0)
            }),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }
}

pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub fn test_user() -> User {
    let field = |f: &str| {
        let out = Command::new("id")
            .arg(f)
            .arg(TEST_USER)
            .output()
            .expect("id runs");
        assert!(
            out.status.success(),
            "the test user {TEST_USER} is missing: run scripts/setup"
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    User {
        uid: field("-u"),
        gid: field("-g"),
        home: PathBuf::from(format!("/home/{TEST_USER}")),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub rootfs: PathBuf,
    pub user: User,
    pub config: Option<PathBuf>,
}

impl Drop for Fixture {
    /// Whatever is still mounted under the fixture's directory is detached before the
    /// directory goes (a node's image mounts, when a test killed its daemon on purpose: the
    /// next daemon would unmount them, and there is none), deepest first.
    fn drop(&mut self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&format!("{dir}/")))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m) {
                // SAFETY: umount2 with a NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Fixture {
    /// The fixture, or `None` (the test then skips) when not running as root.
    pub fn new() -> Option<Fixture> {
        if !is_root() {
            eprintln!("skipped: this test needs root (CI runs it as root)");
            return None;
        }
        let user = test_user();
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("berth");
        std::fs::copy(env!("CARGO_BIN_EXE_berth"), &bin).unwrap();

        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        // A user database of the image's own, which the user's entries join.
        std::fs::write(rootfs.join("etc/passwd"), "daemon:x:1:1::/:/bin/false\n").unwrap();
        std::fs::write(rootfs.join("etc/group"), "daemon:x:1:\n").unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("busybox-static is installed (scripts/setup)");
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout)
            .unwrap()
            .lines()
            .filter(|a| *a != "busybox")
        {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let probe = rootfs.join("bin/probe");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/container/probe.c");
        run(Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&probe)
            .arg(&source));
        // A set-uid-root copy: running it must not give root inside a container.
        let suid = rootfs.join("bin/suid-probe");
        std::fs::copy(&probe, &suid).unwrap();
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::write(
            rootfs.join("bin/notexec"),
            "#!/bin/sh\necho should not run\n",
        )
        .unwrap();
        std::fs::set_permissions(
            rootfs.join("bin/notexec"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();

        for (name, owner) in [
            ("store-root", None),
            ("store-user", Some(&user)),
            ("cwd-root", None),
            ("cwd-user", Some(&user)),
        ] {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            if let Some(u) = owner {
                chown(&d, Some(u.uid), Some(u.gid)).unwrap();
            }
        }
        Some(Fixture {
            dir,
            bin,
            rootfs,
            user,
            config: None,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The tree `tree` as a squashfs file, `name` in the fixture's directory (gensquashfs,
    /// owners kept), readable by all.
    pub fn squashfs_of(&self, tree: &Path, name: &str) -> PathBuf {
        let out = self.path(name);
        run(Command::new("gensquashfs")
            .arg("--pack-dir")
            .arg(tree)
            .arg(&out)
            .stdout(Stdio::null()));
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        out
    }

    /// A copy of the busybox root filesystem, `name` in the fixture's directory, to make
    /// another image of.
    pub fn copy_rootfs(&self, name: &str) -> PathBuf {
        let tree = self.path(name);
        run(Command::new("cp").arg("-a").arg(&self.rootfs).arg(&tree));
        tree
    }

    /// The tree `tree` as a tarball at `out` (a root filesystem tarball, as images come).
    #[allow(
        dead_code,
        reason = "the batch and cluster tests' (this file is theirs too)"
    )]
    pub fn tarball_of(&self, tree: &Path, out: &Path) {
        run(Command::new("tar")
            .arg("-C")
            .arg(tree)
            .arg("-cf")
            .arg(out)
            .arg("."));
    }

    /// The working directory commands of `mode` start in (owned by who runs them).
    pub fn cwd(&self, mode: Mode) -> PathBuf {
        self.path(if mode == Mode::Root {
            "cwd-root"
        } else {
            "cwd-user"
        })
    }

    fn store(&self, mode: Mode) -> PathBuf {
        self.path(if mode == Mode::Rootless {
            "store-user"
        } else {
            "store-root"
        })
    }

    /// A `berth` command running in `mode`.
    pub fn cmd(&self, mode: Mode, args: &[&str]) -> Command {
        let mut cmd = if mode == Mode::Rootless {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", self.user.uid))
                .arg(format!("--regid={}", self.user.gid))
                .arg("--init-groups")
                .arg("--");
            c.arg(&self.bin);
            c.env_clear()
                .env("HOME", &self.user.home)
                .env("USER", TEST_USER)
                .env("PATH", "/usr/bin:/bin");
            c
        } else {
            let mut c = Command::new(&self.bin);
            c.env_remove("BERTH_STORE").env_remove("BERTH_CONFIG");
            c
        };
        cmd.env("BERTH_STORE", self.store(mode))
            .current_dir(self.cwd(mode));
        if let Some(config) = &self.config {
            cmd.env("BERTH_CONFIG", config);
        }
        let container = matches!(args.first(), Some(&"exec" | &"run" | &"shell"));
        if mode == Mode::RootAsUser && container {
            cmd.arg(args[0])
                .arg("--user")
                .arg(TEST_USER)
                .args(&args[1..]);
        } else {
            cmd.args(args);
        }
        cmd
    }

    pub fn berth(&self, mode: Mode, args: &[&str]) -> Out {
        Out::from_output(self.cmd(mode, args).stdin(Stdio::null()).output().unwrap())
    }

    pub fn berth_stdin(&self, mode: Mode, args: &[&str], input: &str) -> Out {
        run_with_stdin(&mut self.cmd(mode, args), input)
    }

    /// Imports the busybox root filesystem as `busybox` into the store `mode` uses.
    pub fn import(&self, mode: Mode) {
        self.berth(
            mode,
            &[
                "image",
                "import",
                self.rootfs.to_str().unwrap(),
                "--name",
                "busybox",
            ],
        )
        .ok();
    }

    /// A directory everyone may read, holding `file` ("secret") that everyone may read, in a
    /// directory only root may enter: what no bind may give a user a way to.
    pub fn behind_a_locked_door(&self) -> PathBuf {
        let locked = self.path("locked");
        let inside = locked.join("open");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("file"), "secret\n").unwrap();
        for (path, mode) in [
            (&inside, 0o755),
            (&inside.join("file"), 0o644),
            (&locked, 0o700),
        ] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        inside
    }

    /// `sh -c SCRIPT` in the busybox image.
    pub fn sh(&self, mode: Mode, script: &str) -> Out {
        self.berth(mode, &["exec", "busybox", "sh", "-c", script])
    }

    pub fn write_config(&mut self, text: &str) {
        let path = self.path("berth.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        self.config = Some(path);
    }
}

/// Runs `cmd` with `input` on its stdin (then closed), capturing stdout and stderr.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Out {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Out::from_output(child.wait_with_output().unwrap())
}

/// Host mount lines mentioning `needle` (a container's mounts must never appear here).
pub fn host_mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Loop devices whose backing file lies under `dir`.
pub fn loop_devices_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) {
            if backing.trim().starts_with(dir.to_str().unwrap()) {
                found.push(format!(
                    "{}: {}",
                    entry.file_name().to_string_lossy(),
                    backing.trim()
                ));
            }
        }
    }
    found
}

/// Cgroup directories that container runs of berth process `pid` left behind.
pub fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let prefix = format!("{pid}-");
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup/cpuset",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/freezer",
    ] {
        if let Ok(entries) = std::fs::read_dir(Path::new(root).join("berth")) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

/// `cmd` run under script(1), which gives it a pseudo-terminal as an interactive login would:
/// the same program, arguments, environment and directory.
pub fn under_terminal(cmd: &Command) -> Command {
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    with_env_and_dir_of(&mut script, cmd);
    script
}

/// Gives `wrapper` (which runs `cmd`'s program) `cmd`'s directory and environment changes.
pub fn with_env_and_dir_of(wrapper: &mut Command, cmd: &Command) {
    if let Some(dir) = cmd.get_current_dir() {
        wrapper.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapper.env(k, v),
            None => wrapper.env_remove(k),
        };
    }
}

/// Set in the machine tests/vm/run.sh boots, where tests run again on pure cgroup v2.
const IN_VM: &str = "BERTH_TEST_IN_VM";

/// How long to wait for what takes `secs` on this machine: four times as long in the test
/// VM, whose CPUs are emulated (TCG) and shared by its two test threads.
pub fn patience(secs: u64) -> std::time::Duration {
    let factor = match std::env::var_os(IN_VM) {
        Some(_) => 4,
        None => 1,
    };
    std::time::Duration::from_secs(secs * factor)
}

/// Runs this test binary's `tests` (full names, this one among them) again in a machine
/// whose cgroup hierarchy is pure v2, as current distributions have it (this one's is v1):
/// tests/vm/run.sh boots Debian's kernel under qemu with this machine's files as its own.
/// Each must pass there, none filtered out or missing. Inside that machine, the calling test
/// checks that the hierarchy is indeed cgroup2 alone, and this returns `true`: the calling
/// test may go on there (as root, in a machine thrown away after it).
pub fn again_on_cgroup_v2(tests: &[&str]) -> bool {
    if std::env::var_os(IN_VM).is_some() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let fstypes: Vec<(&str, &str)> = mountinfo
            .lines()
            .filter_map(|l| {
                let mut fields = l.split(' ');
                let point = fields.nth(4)?;
                let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
                Some((point, fstype))
            })
            .filter(|(_, fstype)| fstype.starts_with("cgroup"))
            .collect();
        assert_eq!(fstypes, [("/sys/fs/cgroup", "cgroup2")], "{mountinfo}");
        return true;
    }
    if !is_root() {
        eprintln!("skipped: this test needs root (CI runs it as root)");
        return false;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/run.sh");
    let out = Command::new(script)
        .args(["--timeout", "1200", "--", "env", &format!("{IN_VM}=1")])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "--test-threads", "2"])
        .args(tests)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = Out::from_output(out);
    let summary = format!(
        "test result: ok. {} passed; 0 failed; 0 ignored",
        tests.len()
    );
    assert!(
        out.code == 0 && out.stdout.contains(&summary),
        "on cgroup v2 (exit {}):\n{}\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
    false
}

/// Runs `test` (its full name: the calling test) in the test machine (see
/// [`again_on_cgroup_v2`]), and there returns `true` once that machine looks like a node with
/// `gpus` NVIDIA GPUs, as far as berth can tell without the driver: their device nodes (made with
/// mknod), stand-in driver libraries (libnvidia-ml, libcuda) registered with ldconfig, and a
/// stand-in nvidia-smi linked with libnvidia-ml.so.1, as the real one is, which prints what
/// a call into that library returns and the GPUs it is shown. Never changes this machine.
pub fn on_a_stand_in_gpu_node(test: &str, gpus: u32) -> bool {
    if !again_on_cgroup_v2(&[test]) {
        return false;
    }
    let devices: String = (0..gpus)
        .map(|n| format!("mknod -m 666 /dev/nvidia{n} c 195 {n}\n"))
        .collect();
    let script = "set -e\n".to_string()
        + &devices
        + r#"
        mknod -m 666 /dev/nvidiactl c 195 255
        mknod -m 666 /dev/nvidia-uvm c 510 0
        cd "$(mktemp -d)"
        echo 'int stand_in(void) { return 42; }' > lib.c
        for lib in libnvidia-ml libcuda; do
          gcc -shared -fPIC -Wl,-soname,$lib.so.1 -o /usr/lib/x86_64-linux-gnu/$lib.so.550.54.15 lib.c
        done
        ldconfig
        cat > smi.c <<'SMI'
        #include <stdio.h>
        #include <stdlib.h>
        int stand_in(void);
        int main(void) {
            const char *gpus = getenv("CUDA_VISIBLE_DEVICES");
            printf("stand-in nvidia-smi: libnvidia-ml says %d, GPUs %s\n", stand_in(), gpus ? gpus : "none");
            return 0;
        }
SMI
        gcc -o /usr/bin/nvidia-smi smi.c /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15"#;
    let made = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(made.status.success(), "{made:?}");
    true
}

/// A root filesystem at `dir` with glibc's loader and libc (this machine's) and busybox, for
/// programs linked dynamically, as most images' are.
pub fn glibc_rootfs(dir: &Path) {
    for sub in ["bin", "lib/x86_64-linux-gnu", "lib64", "etc", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for lib in [
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib64/ld-linux-x86-64.so.2",
    ] {
        std::fs::copy(Path::new("/").join(lib), dir.join(lib)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `docker save`-style archive of the fixture's root filesystem as one layer, with the
/// given image config `config` section (JSON).
pub fn docker_archive_of(f: &Fixture, config_section: &str) -> PathBuf {
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer.append_dir_all(".", &f.rootfs).unwrap();
    let layer = layer.into_inner().unwrap();
    archive_with_layers(f, "app.tar", config_section, &[layer])
}

/// A `docker save`-style archive `name` of `layers` (tar streams), with the image config
/// `config` section (JSON).
pub fn archive_with_layers(
    f: &Fixture,
    name: &str,
    config_section: &str,
    layers: &[Vec<u8>],
) -> PathBuf {
    let host = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    docker_save(
        f,
        name,
        &[Saved {
            tags: &[],
            architecture: host,
            config: config_section,
            layers,
        }],
    )
}

/// One image of a [`docker_save`] archive.
pub struct Saved<'a> {
    /// Its RepoTags (none: `null`, as an image saved by id).
    pub tags: &'a [&'a str],
    pub architecture: &'a str,
    /// The image config's `config` section (JSON).
    pub config: &'a str,
    /// Its layers' tar streams.
    pub layers: &'a [Vec<u8>],
}

/// A `docker save`-style archive `name` of `images` (`docker save a b`), readable by all.
pub fn docker_save(f: &Fixture, name: &str, images: &[Saved]) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut entries = Vec::new();
    let mut added = std::collections::HashSet::new();
    for image in images {
        let hexes: Vec<String> = image.layers.iter().map(|l| sha256_hex(l)).collect();
        let diff_ids: Vec<String> = hexes.iter().map(|h| format!("\"sha256:{h}\"")).collect();
        let config = format!(
            r#"{{"architecture":"{}","os":"linux","config":{},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            image.architecture,
            image.config,
            diff_ids.join(",")
        );
        let config_name = format!("{}.json", sha256_hex(config.as_bytes()));
        add(&config_name, config.as_bytes());
        for (hex, layer) in hexes.iter().zip(image.layers) {
            if added.insert(hex.clone()) {
                add(&format!("{hex}/layer.tar"), layer);
            }
        }
        let layer_names: Vec<String> = hexes.iter().map(|h| format!("\"{h}/layer.tar\"")).collect();
        let tags = match image.tags {
            [] => "null".to_string(),
            tags => format!("[\"{}\"]", tags.join("\",\"")),
        };
        entries.push(format!(
            r#"{{"Config":"{config_name}","RepoTags":{tags},"Layers":[{}]}}"#,
            layer_names.join(",")
        ));
    }
    add(
        "manifest.json",
        format!("[{}]", entries.join(",")).as_bytes(),
    );
    let path = f.path(name);
    std::fs::write(&path, b.into_inner().unwrap()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    path
}

/// Waits up to `secs` seconds until `done`, looking every 50 ms; fails with `why` if that
/// never comes.
pub fn wait_until(secs: u64, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{}", why());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
