//! Resource limits, and that nothing (cgroups, mounts, loop devices) outlives a container.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn memory_overrun_is_oom_killed_and_reported() {
    let Some(f) = Fixture::new() else { return };
    f.import(Mode::RootAsUser);
    assert_oom_killed(&f.berth(Mode::RootAsUser, &MEMORY_HOG));
    // A hog the container's program outlives: said as a process's end, not the container's.
    let out = f.berth(
        Mode::RootAsUser,
        &[
            "exec",
            "--memory",
            "32m",
            "busybox",
            "sh",
            "-c",
            "/bin/probe hog 256; echo $?",
        ],
    );
    assert_eq!(out.ok(), "137\n");
    assert!(
        out.stderr
            .contains("a process in the container ran out of memory (limit 32.0 MiB)"),
        "{}",
        out.stderr
    );
    // Under the limit it runs.
    assert_eq!(
        f.berth(
            Mode::RootAsUser,
            &[
                "exec",
                "--memory",
                "64m",
                "busybox",
                "/bin/probe",
                "hog",
                "8"
            ]
        )
        .ok(),
        "survived\n"
    );
}

/// `exec` of a program that fills 256 MB under a limit of 32 MB.
const MEMORY_HOG: [&str; 7] = [
    "exec",
    "--memory",
    "32m",
    "busybox",
    "/bin/probe",
    "hog",
    "256",
];

/// That the memory hog was killed by the OOM killer, and berth said so.
fn assert_oom_killed(out: &Out) {
    assert_eq!(out.code, 128 + 9, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "the container ran out of memory (limit 32.0 MiB) and the kernel's OOM killer ended it"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("survived"));
}

#[test]
fn pids_limit_contains_a_fork_bomb() {
    let Some(f) = Fixture::new() else { return };
    f.import(Mode::RootAsUser);
    assert_contained(&f.berth(Mode::RootAsUser, &FORK_BOMB));
}

/// `exec` of a fork bomb (50 forks) under a limit of 10 processes.
const FORK_BOMB: [&str; 7] = [
    "exec",
    "--pids-limit",
    "10",
    "busybox",
    "/bin/probe",
    "forks",
    "50",
];

/// That at most 10 of the fork bomb's processes ran: at least 40 of its forks failed.
fn assert_contained(out: &Out) {
    let text = out.ok().trim().to_string();
    let failed: u32 = text.rsplit('=').next().unwrap().parse().unwrap();
    assert!(failed >= 40, "at most 10 processes: {text}");
}

#[test]
fn cpu_quota_and_cpuset_are_applied() {
    let Some(f) = Fixture::new() else { return };
    f.import(Mode::RootAsUser);
    // cgroup v1 (cpu controller) or v2 (unified): print the quota and the allowed CPUs.
    let script = r#"
        p=$(grep -E '(^|:)cpu(,[a-z]+)*:|^0::' /proc/self/cgroup | head -1 | cut -d: -f3)
        if [ -f /sys/fs/cgroup/cpu$p/cpu.cfs_quota_us ]; then cat /sys/fs/cgroup/cpu$p/cpu.cfs_quota_us
        else cut -d' ' -f1 /sys/fs/cgroup$p/cpu.max; fi
        grep Cpus_allowed_list /proc/self/status | cut -f2"#;
    let out = f.berth(
        Mode::RootAsUser,
        &[
            "exec",
            "--cpus",
            "0.5",
            "--cpuset-cpus",
            "0",
            "busybox",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(out.ok(), "50000\n0\n");
}

/// The tests above, and a job's time limit and accounting, on a kernel whose cgroup hierarchy is
/// pure v2 (this machine's is v1 with an empty v2 mount beside it).
#[test]
fn limits_hold_on_pure_cgroup_v2() {
    again_on_cgroup_v2(&[
        "cgroups::limits_hold_on_pure_cgroup_v2",
        "cgroups::memory_overrun_is_oom_killed_and_reported",
        "cgroups::pids_limit_contains_a_fork_bomb",
        "cgroups::cpu_quota_and_cpuset_are_applied",
        "cgroups::limits_need_root_and_say_so",
        "cgroups::nothing_is_left_behind_after_exit_failure_or_kill",
        "jobs::job_runs_as_its_user_with_its_files_and_environment",
        "jobs::time_limit_stops_the_job",
    ]);
}

/// A user's own limits, without root, in a cgroup v2 delegated to them, as `systemd-run --user
/// --scope -p Delegate=yes berth ...` starts berth (a scope of its own per command, the
/// directory and its cgroup.procs, cgroup.subtree_control and cgroup.threads the user's):
/// OOM and fork bomb contained, the container's cgroup in the scope, and the scope as it was
/// after each run (no cgroup left in it, no controller left enabled), so runs can follow one
/// another in it. A scope holding another process of the user's is refused with the reason,
/// and left as it was.
#[test]
fn a_users_limits_in_a_cgroup_delegated_to_them_on_pure_cgroup_v2() {
    if !again_on_cgroup_v2(&[
        "cgroups::a_users_limits_in_a_cgroup_delegated_to_them_on_pure_cgroup_v2",
    ]) {
        return;
    }
    let f = Fixture::new().expect("root in the test machine");
    f.import(Mode::Rootless);
    let root = std::path::Path::new("/sys/fs/cgroup");
    std::fs::write(root.join("cgroup.subtree_control"), "+cpu +memory +pids").unwrap();
    let mut scopes = 0;
    let mut scope = || {
        scopes += 1;
        let scope = root.join(format!("berthtest-{scopes}.scope"));
        std::fs::create_dir(&scope).unwrap();
        for file in [
            "",
            "cgroup.procs",
            "cgroup.subtree_control",
            "cgroup.threads",
        ] {
            std::os::unix::fs::chown(scope.join(file), Some(f.user.uid), Some(f.user.gid)).unwrap();
        }
        scope
    };
    // berth started in `scope` as the scope's one process.
    let in_scope = |scope: &std::path::Path, args: &[&str]| {
        let cmd = f.cmd(Mode::Rootless, args);
        let mut sh = Command::new("sh");
        sh.args(["-c", r#"echo $$ > "$0/cgroup.procs" && exec "$@""#])
            .arg(scope)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        with_env_and_dir_of(&mut sh, &cmd);
        Out::from_output(sh.stdin(Stdio::null()).output().unwrap())
    };
    let left = |scope: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(scope)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };

    let s = scope();
    let as_it_was = |s: &std::path::Path| {
        assert_eq!(left(s), Vec::<String>::new(), "no cgroup left in the scope");
        let controls = std::fs::read_to_string(s.join("cgroup.subtree_control")).unwrap();
        assert_eq!(controls.trim(), "", "no controller left enabled");
    };
    assert_oom_killed(&in_scope(&s, &MEMORY_HOG));
    as_it_was(&s);
    assert_contained(&in_scope(&s, &FORK_BOMB));
    as_it_was(&s);
    let out = in_scope(
        &s,
        &[
            "exec",
            "--memory",
            "64m",
            "busybox",
            "cat",
            "/proc/self/cgroup",
        ],
    );
    assert!(
        out.ok().starts_with(&format!(
            "0::/{}/",
            s.file_name().unwrap().to_string_lossy()
        )),
        "the container's cgroup is in the scope: {}",
        out.stdout
    );
    as_it_was(&s);

    // Another process of the user's in the scope: controllers cannot be handed down.
    let s = scope();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(s.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    let out = in_scope(&s, &["exec", "--memory", "64m", "busybox", "true"]);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(out.code, 125, "{}", out.stderr);
    assert!(
        out.stderr.contains("holds other processes"),
        "{}",
        out.stderr
    );
    as_it_was(&s);
}

#[test]
fn limits_need_root_and_say_so() {
    let Some(f) = Fixture::new() else { return };
    f.import(Mode::Rootless);
    let out = f.berth(
        Mode::Rootless,
        &["exec", "--memory", "32m", "busybox", "true"],
    );
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("need root"), "{}", out.stderr);
}

#[test]
fn limits_no_container_could_run_under_are_refused_and_say_why() {
    let Some(f) = Fixture::new() else { return };
    f.import(Mode::Root);
    // Beyond every CPU this machine has (the tests run on a few).
    let cpus = "4096";
    for (args, message) in [
        (["--memory", "1k"], "--memory: 1024 bytes is below 6 MiB"),
        (
            ["--pids-limit", "0"],
            "--pids-limit 0: a container needs 1 process at least",
        ),
        (
            ["--pids-limit", "-2"],
            "--pids-limit -2: give a number of processes, or -1 for no limit",
        ),
        (["--cpus", cpus], "--cpus 4096: berth may use "),
        (
            ["--cpuset-cpus", cpus],
            "--cpuset-cpus 4096: CPU 4096 is not one berth may use here (0",
        ),
        (
            ["--cpuset-cpus", "3-1"],
            "--cpuset-cpus 3-1: expected CPU numbers and ranges",
        ),
    ] {
        let mut all = vec!["exec"];
        all.extend_from_slice(&args);
        all.extend_from_slice(&["busybox", "true"]);
        let out = f.berth(Mode::Root, &all);
        assert_eq!(out.code, 125, "{args:?}");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
    // docker's words for no limit.
    let unlimited = f.berth(
        Mode::Root,
        &[
            "exec",
            "--memory",
            "0",
            "--pids-limit",
            "-1",
            "busybox",
            "sh",
            "-c",
            "grep -c berth /proc/self/cgroup || true",
        ],
    );
    assert_eq!(unlimited.ok(), "0\n", "no cgroup of its own without limits");
    // At the edge: 6 MiB, CPU 0.
    f.berth(
        Mode::Root,
        &[
            "exec",
            "--memory",
            "6m",
            "--cpuset-cpus",
            "0",
            "busybox",
            "true",
        ],
    )
    .ok();
}

#[test]
fn nothing_is_left_behind_after_exit_failure_or_kill() {
    let Some(f) = Fixture::new() else { return };
    f.import(Mode::RootAsUser);
    let store = f.path("store-root");
    let mut pids = Vec::new();
    for script in ["true", "exit 3", "kill -KILL $$"] {
        let child = f
            .cmd(
                Mode::RootAsUser,
                &[
                    "exec",
                    "--memory",
                    "64m",
                    "--pids-limit",
                    "50",
                    "busybox",
                    "sh",
                    "-c",
                    script,
                ],
            )
            .spawn()
            .unwrap();
        pids.push(child.id());
        let _ = child.wait_with_output();
    }
    let failed = f.berth(
        Mode::RootAsUser,
        &["exec", "--memory", "64m", "busybox", "no-such-command"],
    );
    assert_eq!(failed.code, 127);

    // berth itself killed with SIGKILL: the container goes with it (parent-death signal).
    let mut child = f
        .cmd(
            Mode::RootAsUser,
            &[
                "exec",
                "--memory",
                "64m",
                "busybox",
                "sh",
                "-c",
                "echo $$; exec sleep 1000",
            ],
        )
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let container_pid: i32 = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    let berth_pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until(
        10,
        || !std::path::Path::new(&format!("/proc/{container_pid}")).exists(),
        || "the container outlived berth".into(),
    );
    // Its cgroup is swept by the next container started with limits.
    f.berth(
        Mode::RootAsUser,
        &["exec", "--memory", "64m", "busybox", "true"],
    )
    .ok();
    pids.push(berth_pid);

    for pid in pids {
        assert!(
            cgroups_of(pid).is_empty(),
            "cgroups left by berth {pid}: {:?}",
            cgroups_of(pid)
        );
    }
    assert!(
        host_mounts_with(store.to_str().unwrap()).is_empty(),
        "{:?}",
        host_mounts_with(store.to_str().unwrap())
    );
    // Loop devices detach themselves (autoclear) once the last mount is gone; give the
    // kernel a moment to finish tearing the killed container's namespace down.
    wait_until(
        10,
        || loop_devices_under(&store).is_empty(),
        || format!("loop devices left: {:?}", loop_devices_under(&store)),
    );
}
