//! berth as the commands LSF's and PBS's users type (bsub, bjobs, bkill, qsub, qstat, qdel,
//! ...), run through links named after them (`berth as --link`) by the test user, and as
//! job scripts call them inside a job.

use crate::cluster::Cluster;
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The cluster, with every command linked into a directory of the fixture.
fn cluster_with_links() -> Option<(Cluster, PathBuf)> {
    let c = Cluster::start()?;
    let links = c.f.path("links");
    std::fs::create_dir(&links).unwrap();
    let out = c.berth(Mode::Root, &["as", "--link", links.to_str().unwrap()]);
    let made = out.ok();
    for name in ["bsub", "bjobs", "qsub", "qstat", "pbsnodes", "sbatch"] {
        assert!(
            made.contains(&format!("{}/{name} -> ", links.display())),
            "{made}"
        );
    }
    // A directory that is not there: said, nothing made.
    let missing = c.f.path("no-such-dir");
    let refused = c.berth(Mode::Root, &["as", "--link", missing.to_str().unwrap()]);
    assert!(
        refused.code != 0 && refused.stderr.contains("name a directory that exists"),
        "{}",
        refused.stderr
    );
    // Linking again leaves the links as they are.
    assert_eq!(
        c.berth(Mode::Root, &["as", "--link", links.to_str().unwrap()])
            .ok(),
        ""
    );
    Some((c, links))
}

/// `name` (one of the links) run by the test user in its directory, with the busybox image
/// as the jobs' default ($BERTH_IMAGE).
fn command(c: &Cluster, links: &Path, name: &str, args: &[&str]) -> Command {
    let user = &c.f.user;
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .args(["--init-groups", "--"])
        .arg(links.join(name))
        .args(args)
        .env_clear()
        .env("HOME", &user.home)
        .env("USER", TEST_USER)
        .env("PATH", format!("{}:/usr/bin:/bin", links.display()))
        .env("BERTH_SOCKET", &c.socket)
        .env("BERTH_IMAGE", "busybox")
        .current_dir(c.f.cwd(Mode::Rootless));
    cmd
}

fn run(c: &Cluster, links: &Path, name: &str, args: &[&str]) -> Out {
    let mut cmd = command(c, links, name, args);
    Out::from_output(cmd.stdin(Stdio::null()).output().unwrap())
}

/// The job id in bsub's answer, `Job <42> is submitted to default queue <normal>.`.
pub(crate) fn bsub_id(out: &Out) -> u64 {
    out.ok()
        .strip_prefix("Job <")
        .and_then(|rest| rest.split_once('>'))
        .and_then(|(id, _)| id.parse().ok())
        .unwrap_or_else(|| panic!("not bsub's answer: {}", out.stdout))
}

/// The line of `text` whose first word is `first`.
fn row<'a>(text: &'a str, first: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{text}"))
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn lsf_commands_as_lsf_users_type_them() {
    let Some((c, links)) = cluster_with_links() else {
        return;
    };
    // A command line it cannot take: its usage, and LSF's status for a failure (255).
    let bad = run(&c, &links, "bjobs", &["-Z"]);
    assert!(
        bad.code == 255 && bad.stderr.contains("\nusage: bjobs "),
        "{}: {}",
        bad.code,
        bad.stderr
    );
    // A command as the job (its output where -o says), named, waiting for a file.
    let out = run(
        &c,
        &links,
        "bsub",
        &[
            "-J",
            "holder",
            "-o",
            "holder.out",
            "echo up; while ! test -e go; do sleep 0.1; done",
        ],
    );
    assert!(
        out.stdout
            .ends_with("is submitted to default queue <normal>.\n"),
        "{}",
        out.stdout
    );
    let id = bsub_id(&out);
    // An input file that is not there: not submitted, as bsub says it.
    let missing = run(&c, &links, "bsub", &["-i", "no-such-input", "cat"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (
            255,
            "bsub: no-such-input: No such file or directory. Job not submitted.\n"
        )
    );
    let file = c.f.cwd(Mode::Rootless).join("holder.out");
    c.wait_for(id, &["RUNNING"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&file).is_ok_and(|o| o.contains("up")) {
        assert!(std::time::Instant::now() < deadline, "{}", c.show(id));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let cut = run(&c, &links, "bjobs", &[]);
    assert!(
        row(cut.ok(), &id.to_string()).contains(" *thtest RUN "),
        "{}",
        cut.stdout
    );
    let jobs = run(&c, &links, "bjobs", &["-w"]);
    assert!(
        jobs.ok().starts_with("JOBID   USER    STAT  QUEUE"),
        "{}",
        jobs.stdout
    );
    let line = row(&jobs.stdout, &id.to_string());
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &words[..4],
        [id.to_string().as_str(), TEST_USER, "RUN", "normal"],
        "{line}"
    );
    assert_eq!(words[4], host(), "FROM_HOST: {line}");
    assert_eq!(words[6], "holder", "{line}");
    // Stopped and resumed: USUSP in between.
    let stop = run(&c, &links, "bstop", &[&id.to_string()]);
    assert_eq!(stop.ok(), format!("Job <{id}> is being stopped\n"));
    c.wait_for(id, &["SUSPENDED"]);
    let format = run(
        &c,
        &links,
        "bjobs",
        &[
            "-noheader",
            "-o",
            "jobid stat job_name delimiter='|'",
            &id.to_string(),
        ],
    );
    assert_eq!(format.ok(), format!("{id}|USUSP|holder\n"));
    run(&c, &links, "bresume", &[&id.to_string()]).ok();
    c.wait_for(id, &["RUNNING"]);
    // Its output so far.
    let peek = run(&c, &links, "bpeek", &[&id.to_string()]);
    assert_eq!(peek.ok(), "<< output from stdout >>\nup\n");
    // By its name: the newest of the user's jobs so named.
    let by_name = run(&c, &links, "bpeek", &["-J", "holder"]);
    assert_eq!(by_name.ok(), "<< output from stdout >>\nup\n");

    // A script on standard input: its #BSUB lines are read, the command line wins.
    let script = "#!/bin/sh\n#BSUB -J fromstdin\n#BSUB -q nosuchqueue\necho \"in $LSB_JOBNAME on $LSB_SUB_HOST\"\nexit 3\n";
    let mut cmd = command(
        &c,
        &links,
        "bsub",
        &["-q", "normal", "-o", "stdin-%J.out", "-K"],
    );
    let waited = run_with_stdin(&mut cmd, script);
    assert_eq!(
        waited.code, 3,
        "bsub -K ends with the job's status: {}{}",
        waited.stdout, waited.stderr
    );
    assert!(
        waited.stdout.contains(
            "is submitted to queue <normal>.\n<<Waiting for dispatch ...>>\n<<Job is finished>>\n"
        ),
        "{}",
        waited.stdout
    );
    let stdin_id = bsub_id(&Out { code: 0, ..waited });
    // A job killed while pending: bsub -K ends 126, as LSF's (not the status of a job that
    // ran and failed).
    let mut waiting = command(&c, &links, "bsub", &["-K", "-H", "-J", "pended", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let queued = || run(&c, &links, "bjobs", &["-J", "pended", "-noheader"]).stdout;
    wait_until(30, || queued().contains("pended"), || "never queued".into());
    run(&c, &links, "bkill", &["-J", "pended"]).ok();
    assert_eq!(waiting.wait().unwrap().code(), Some(126));
    let text = std::fs::read_to_string(
        c.f.cwd(Mode::Rootless)
            .join(format!("stdin-{stdin_id}.out")),
    )
    .unwrap();
    let (output, report) = lsf_output(&text);
    assert_eq!(output, format!("in fromstdin on {}\n", host()));
    // LSF's job report after it, as LSF appends it: the job, how it ended, what it used.
    let subject = format!("Subject: Job {stdin_id}: <fromstdin> in cluster <");
    for said in [
        subject.as_str(),
        "\n\nExited with exit code ",
        "\n# LSBATCH: User input\n",
        "\n    CPU time :",
        "\nThe output (if any) is above this job summary.\n",
    ] {
        assert!(report.contains(said), "{said}: {report}");
    }
    // Finished jobs show with -a (EXIT: it failed), not without; short options together,
    // as getopt takes them.
    let all = run(&c, &links, "bjobs", &["-aw"]);
    assert!(
        row(all.ok(), &stdin_id.to_string()).contains(" EXIT "),
        "{}",
        all.stdout
    );
    assert!(!run(&c, &links, "bjobs", &[])
        .ok()
        .contains(&format!("\n{stdin_id} ")));

    // Named by the command line as typed (LSF's default), slashes and all.
    let named = bsub_id(&run(&c, &links, "bsub", &["-H", "-P", "lab", "echo a/b c"]));
    let name = run(
        &c,
        &links,
        "bjobs",
        &["-noheader", "-o", "job_name", &named.to_string()],
    );
    assert_eq!(name.ok(), "echo a/b c\n");
    let long = run(&c, &links, "bjobs", &["-l", &named.to_string()]);
    assert!(long.ok().contains("Project <lab>"), "{}", long.stdout);
    // -p: each pending job with why it waits, under it.
    let pending = run(&c, &links, "bjobs", &["-p", &named.to_string()]);
    let lines: Vec<&str> = pending.ok().lines().collect();
    assert!(
        lines.len() == 3
            && lines[1].starts_with(&format!("{named} "))
            && lines[2] == " The job was suspended by the user while pending;",
        "{}",
        pending.stdout
    );
    run(&c, &links, "bkill", &["-sKILL", &named.to_string()]).ok();
    c.wait_for(named, &["CANCELLED"]);
    // Why it ended, in LSF's words.
    let history = run(&c, &links, "bhist", &["-l", &named.to_string()]);
    assert!(
        history
            .ok()
            .contains("Completed <exit>; TERM_OWNER: job killed by owner;"),
        "{}",
        history.stdout
    );
    // Killed while held: no resume in between.
    assert!(!history.stdout.contains("Resumed"), "{}", history.stdout);

    // Killed by name (-J alone: every job of that name), then none left of it.
    let twins: Vec<u64> = (0..2)
        .map(|_| bsub_id(&run(&c, &links, "bsub", &["-H", "-J", "twin", "true"])))
        .collect();
    let killed = run(&c, &links, "bkill", &["-J", "twin"]);
    assert_eq!(killed.ok().lines().count(), 2, "{}", killed.stdout);
    for twin in twins {
        c.wait_for(twin, &["CANCELLED"]);
    }
    let none = run(&c, &links, "bkill", &["-J", "twin"]);
    assert_eq!(
        (none.code, none.stderr.as_str()),
        (255, "No unfinished job found\n")
    );
    // A running job killed: nothing of slurmstepd's in its output, as LSF's. (Each command
    // says "up" first; bkill comes once it has; the job, and its output file afterwards.)
    let killed_once_up = |file: &str, command: &str| {
        let running = bsub_id(&run(&c, &links, "bsub", &["-o", file, command]));
        let out = c.f.cwd(Mode::Rootless).join(file);
        wait_until(
            20,
            || std::fs::read_to_string(&out).is_ok_and(|o| o == "up\n"),
            || c.show(running).to_string(),
        );
        run(&c, &links, "bkill", &[&running.to_string()]).ok();
        c.wait_for(running, &["CANCELLED"]);
        (running, std::fs::read_to_string(&out).unwrap())
    };
    let (running, killed) = killed_once_up("killed.out", "echo up; sleep 60");
    let (output, report) = lsf_output(&killed);
    assert_eq!(output, "up\n");
    assert!(
        report.contains("\n\nTERM_OWNER: job killed by owner.\n"),
        "{report}"
    );
    // bkill's signals, as LSF sends them: SIGINT, then SIGTERM ten seconds later (then
    // SIGKILL), which a job's traps see one by one.
    let (_, trapped) = killed_once_up(
        "trapped.out",
        "trap 'echo INT' INT; trap 'echo TERM; exit 3' TERM; echo up; while :; do sleep 1; done",
    );
    assert_eq!(lsf_output(&trapped).0, "up\nINT\nTERM\n");

    // Each file its own mode: -oo overwrites the output, -e appends to the errors.
    for _ in 0..2 {
        let args = [
            "-K",
            "-oo",
            "o2.txt",
            "-e",
            "e2.txt",
            "echo out; echo err >&2",
        ];
        run(&c, &links, "bsub", &args).ok();
    }
    let read = |f: &str| std::fs::read_to_string(c.f.cwd(Mode::Rootless).join(f)).unwrap();
    let o2 = read("o2.txt");
    assert_eq!(
        (lsf_output(&o2).0, read("e2.txt").as_str()),
        ("out\n", "err\nerr\n")
    );

    // Arrays by -J NAME[INDEXES]: one row per task, NAME[INDEX].
    let array = bsub_id(&run(&c, &links, "bsub", &["-J", "arr[1-3]", "-H", "true"]));
    let rows = run(
        &c,
        &links,
        "bjobs",
        &["-noheader", "-o", "jobid stat job_name", &array.to_string()],
    );
    let waiting = run(&c, &links, "bpeek", &[&format!("{array}[1]")]);
    assert_eq!(
        (waiting.code, waiting.stderr.as_str()),
        (
            255,
            format!("Job <{array}[1]> : Not yet started.\n").as_str()
        )
    );
    assert_eq!(
        rows.ok(),
        format!("{array} PSUSP arr[1]\n{array} PSUSP arr[2]\n{array} PSUSP arr[3]\n")
    );
    let long = run(&c, &links, "bjobs", &["-l", &format!("{array}[2]")]);
    assert!(
        long.ok()
            .contains(&format!("Job <{array}[2]>, Job Name <arr[2]>, ")),
        "{}",
        long.stdout
    );
    // Changed while pending (each task), with bsub's options.
    let changed = run(
        &c,
        &links,
        "bmod",
        &["-W", "45", "-J", "renamed", &array.to_string()],
    );
    assert_eq!(
        changed.ok(),
        format!("Parameters of job <{array}> are being changed\n")
    );
    for task in array..array + 3 {
        let job = c.show(task);
        assert_eq!(
            (job["time_limit"].as_u64(), &job["name"]),
            (Some(2700), &"renamed".into())
        );
    }
    // A new dependency (bmod -w, LSF's condition), on the job killed above.
    let after = format!("ended({running})");
    let changed = run(&c, &links, "bmod", &["-w", &after, &array.to_string()]);
    assert_eq!(
        changed.ok(),
        format!("Parameters of job <{array}> are being changed\n")
    );
    assert_eq!(
        c.show(array)["dependency_condition"],
        after,
        "{}",
        c.show(array)
    );
    // Elements by a list of indices in one id, as LSF takes them.
    let listed = format!("{array}[1-2]");
    let two = run(
        &c,
        &links,
        "bjobs",
        &["-noheader", "-o", "job_name", &listed],
    );
    assert_eq!(two.ok(), "renamed[1]\nrenamed[2]\n");
    let bad = run(&c, &links, "bmod", &[&array.to_string(), "-W", "5"]);
    assert!(bad.stderr.contains("options come first"), "{}", bad.stderr);
    // An element is ID[INDEX] only, not the id of its own berth gives it (LSF has none).
    let own = run(&c, &links, "bkill", &[&(array + 1).to_string()]);
    assert_eq!(
        (own.code, own.stderr),
        (255, format!("Job <{}>: No matching job found\n", array + 1))
    );
    // Killed whole (the array's id), or one task.
    let kill = run(&c, &links, "bkill", &[&format!("{array}[2]")]);
    assert_eq!(kill.ok(), format!("Job <{array}[2]> is being terminated\n"));
    assert_eq!(c.wait_for(array + 1, &["CANCELLED"])["state"], "CANCELLED");
    // bmod -J "%N": the limit of its elements running at once, not its name.
    let limited = run(&c, &links, "bmod", &["-J", "%2", &array.to_string()]);
    assert_eq!(
        limited.ok(),
        format!("Parameters of job <{array}> are being changed\n")
    );
    // bjobs -A: the array's elements by state, the killed one among them.
    let summary = run(&c, &links, "bjobs", &["-A", "-w", &array.to_string()]);
    assert_eq!(
        summary.ok(),
        "JOBID   ARRAY_SPEC  OWNER   NJOBS PEND DONE  RUN EXIT SSUSP USUSP PSUSP\n".to_string()
            + &format!(
                "{array:<7} {:<11} {TEST_USER:<7} {:>5} {:>4} {:>4} {:>4} {:>4} {:>5} {:>5} {:>5}\n",
                "renamed[1-3]%2", 3, 0, 0, 0, 1, 0, 0, 2
            )
    );
    run(&c, &links, "bkill", &[&array.to_string()]).ok();
    for task in [array, array + 2] {
        c.wait_for(task, &["CANCELLED"]);
    }
    // An element that has ended, requeued by its index.
    let again = run(&c, &links, "brequeue", &[&format!("{array}[1]")]);
    assert_eq!(again.ok(), format!("Job <{array}[1]> is being requeued\n"));
    c.wait_for(array, &["PENDING"]);
    run(&c, &links, "bkill", &[&format!("{array}[1]")]).ok();
    c.wait_for(array, &["CANCELLED"]);
    let unknown = run(&c, &links, "bkill", &["999999"]);
    assert_eq!(unknown.code, 255);
    assert_eq!(unknown.stderr, "Job <999999>: No matching job found\n");
    let unknown = run(&c, &links, "bjobs", &["999999"]);
    assert_eq!(
        (unknown.code, unknown.stderr.as_str()),
        (255, "Job <999999> is not found\n")
    );

    // Queues and hosts, with the running job's slot.
    let queues = run(&c, &links, "bqueues", &[]);
    let line: Vec<&str> = row(queues.ok(), "normal").split_whitespace().collect();
    assert_eq!(
        (line[2], line[7], line[9]),
        ("Open:Active", "1", "1"),
        "{}",
        queues.stdout
    );
    let nosuch = run(&c, &links, "bqueues", &["nosuch"]);
    assert_eq!(
        (nosuch.code, nosuch.stdout.as_str(), nosuch.stderr.as_str()),
        (255, "", "nosuch: No such queue\n")
    );
    let node = c.show(id)["nodes"][0].as_str().unwrap().to_string();
    let hosts = run(&c, &links, "bhosts", &[]);
    let line: Vec<&str> = row(hosts.ok(), &node).split_whitespace().collect();
    assert_eq!(
        (line[1], line[4], line[5]),
        ("ok", "1", "1"),
        "{}",
        hosts.stdout
    );
    // LSF's columns: this machine's type and CPU model, 1.0 as its CPU factor.
    let lshosts = run(&c, &links, "lshosts", &[&node]);
    let header: Vec<&str> = lshosts
        .ok()
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "HOST_NAME",
            "type",
            "model",
            "cpuf",
            "ncpus",
            "maxmem",
            "maxswp",
            "server",
            "RESOURCES"
        ]
    );
    let line = row(&lshosts.stdout, &node);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (fields[1], fields[3], fields[7], fields[8]),
        ("X86_64", "1.0", "Yes", "()"),
        "{}",
        lshosts.stdout
    );
    let model = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let vendor = model
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| {
            l.trim_start_matches([' ', '\t', ':'])
                .split(['(', ' '])
                .next()
        })
        .unwrap()
        .to_string();
    assert!(fields[2].starts_with(&vendor), "{}", lshosts.stdout);

    // A dependency on a job's name (-w "done(holder)"): the user's jobs of that name; one
    // that none has is refused.
    let after = bsub_id(&run(&c, &links, "bsub", &["-w", "done(hold*)", "true"]));
    let none = run(&c, &links, "bsub", &["-w", "done(nosuch)", "true"]);
    assert!(
        none.code != 0 && none.stderr.contains("depends on jobs named nosuch"),
        "{}",
        none.stderr
    );
    // A script named as the command runs as it is; bsub says its #BSUB lines are not read.
    std::fs::write(c.f.cwd(Mode::Rootless).join("go"), "").unwrap();
    c.completed(id);
    let after = c.completed(after);
    assert!(
        after["start_time"].as_u64() >= c.show(id)["end_time"].as_u64(),
        "{after}"
    );
    let path = c.f.cwd(Mode::Rootless).join("named.sh");
    std::fs::write(&path, "#!/bin/sh\n#BSUB -J ignored\necho named\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let named = run(&c, &links, "bsub", &["-o", "named.out", "./named.sh"]);
    assert!(
        named.stderr.contains("its #BSUB lines are not read"),
        "{}",
        named.stderr
    );
    let job = c.completed(bsub_id(&named));
    // (Named by the command as typed, LSF's default.)
    assert_eq!(job["name"], "./named.sh");
    // The command's words are a line for the shell, as LSF runs them (and name the job).
    let piped = run(
        &c,
        &links,
        "bsub",
        &["-o", "piped.out", "echo a b | tr a-z A-Z"],
    );
    let job = c.completed(bsub_id(&piped));
    assert_eq!(job["name"], "echo a b | tr a-z A-Z");
    let escaped = run(
        &c,
        &links,
        "bsub",
        &["-o", "escaped.out", "echo", "x", "|", "tr", "x", "y"],
    );
    c.completed(bsub_id(&escaped));
    for (file, text) in [("piped.out", "A B"), ("escaped.out", "y")] {
        let out = std::fs::read_to_string(c.f.cwd(Mode::Rootless).join(file)).unwrap();
        assert!(out.contains(text), "{file}: {out}");
    }

    // Only on the hosts -m names (one of them); a host the cluster lacks never fits.
    let on = run(
        &c,
        &links,
        "bsub",
        &["-m", &format!("nosuch {node}"), "-o", "/dev/null", "true"],
    );
    assert_eq!(c.completed(bsub_id(&on))["nodes"][0], node.as_str());
    // A preferred host, and any other after it (one host here: the preference is the
    // scheduler's unit tests').
    let preferring = bsub_id(&run(
        &c,
        &links,
        "bsub",
        &["-m", &format!("{node}+2 others"), "-o", "/dev/null", "true"],
    ));
    assert_eq!(
        c.completed(preferring)["preferred_nodes"][0],
        format!("{node}+2")
    );
    let long = run(&c, &links, "bjobs", &["-l", &preferring.to_string()]);
    assert!(
        long.ok()
            .contains(&format!("Specified Hosts <{node}+2>, <others>;")),
        "{}",
        long.stdout
    );
    // Refusals in a queue's words, as LSF's users name them.
    let queue = run(&c, &links, "bsub", &["-q", "nosuch", "true"]);
    assert!(
        queue
            .stderr
            .contains("unknown queue 'nosuch': the queues are "),
        "{}",
        queue.stderr
    );
    let nowhere = run(&c, &links, "bsub", &["-m", "nosuch", "true"]);
    assert!(
        nowhere.code != 0 && nowhere.stderr.contains("nosuch"),
        "{}",
        nowhere.stderr
    );
    // An interactive job: the command's output on this terminal's streams; its words read
    // by the shell, as a batch job's.
    let interactive = run(
        &c,
        &links,
        "bsub",
        &["-I", "-n", "2", "echo \"slots $LSB_DJOB_NUMPROC\" | cat"],
    );
    assert_eq!(interactive.ok(), "slots 2\n");
    // LSF's words about it, on stderr.
    let said: Vec<&str> = interactive.stderr.lines().collect();
    assert_eq!(said.len(), 3, "{}", interactive.stderr);
    assert!(
        said[0].starts_with("Job <")
            && said[0].ends_with("> is submitted to default queue <normal>."),
        "{}",
        interactive.stderr
    );
    assert_eq!(
        said[1..],
        [
            "<<Waiting for dispatch ...>>",
            &format!("<<Starting on {node}>>")
        ],
        "{}",
        interactive.stderr
    );
    // Its command's status is bsub's, said by nothing else (LSF adds no line of its own).
    let failed = run(&c, &links, "bsub", &["-I", "exit 5"]);
    assert_eq!(failed.code, 5, "{}", failed.stderr);
    assert_eq!(failed.stderr.lines().count(), 3, "{}", failed.stderr);
    // bsub's own errors.
    let bad = run(&c, &links, "bsub", &["-frob", "true"]);
    assert!(
        bad.stderr.contains("unknown bsub option '-frob'"),
        "{}",
        bad.stderr
    );
    // A job ended at its run limit says so in LSF's words (not slurmstepd's).
    let cwd = c.f.cwd(Mode::Rootless);
    // (`bsub < script`: its #BSUB lines read.)
    let bsub_script = |text: &str| {
        let script = cwd.join("job.lsf");
        std::fs::write(&script, text).unwrap();
        let mut bsub = command(&c, &links, "bsub", &[]);
        let out = bsub.stdin(std::fs::File::open(&script).unwrap()).output();
        bsub_id(&Out::from_output(out.unwrap()))
    };
    let limited = bsub_script(
        "#!/bin/sh\n#BSUB -o limited.out\n#BERTH --time=0:02\necho started\nexec sleep 600\n",
    );
    assert_eq!(c.wait_for(limited, &["TIMEOUT"])["state"], "TIMEOUT");
    let limited = std::fs::read_to_string(cwd.join("limited.out")).unwrap();
    let (output, report) = lsf_output(&limited);
    assert_eq!(
        output,
        "started\nTERM_RUNLIMIT: job killed after reaching LSF run time limit.\n"
    );
    assert!(report.contains("\n\nTERM_RUNLIMIT: job killed after reaching LSF run time limit.\nExited with exit code "), "{report}");
    // Over its memory limit (bsub -M, in MB), the whole job ends, as LSF ends it (SIGINT
    // first), not only the process the kernel killed.
    let over = bsub_script(
        "#!/bin/sh\n#BSUB -M 32 -o memory.out\necho started\ndd if=/dev/zero of=/dev/null bs=64M count=1\nsleep 60\necho late\n",
    );
    let ended = c.wait_for(over, &["OUT_OF_MEMORY", "COMPLETED", "FAILED"]);
    let over = std::fs::read_to_string(cwd.join("memory.out")).unwrap();
    let (output, report) = lsf_output(&over);
    assert_eq!(ended["state"], "OUT_OF_MEMORY", "{ended}\n{over}");
    assert!(
        output.starts_with("started\n") && !output.contains("late"),
        "{over}"
    );
    assert!(
        report.contains("\n\nTERM_MEMLIMIT: job killed after reaching LSF memory usage limit.\nExited with exit code 130.\n"),
        "{report}"
    );
    // -cwd with LSF's patterns: each job's own directory, made at its start; -o DIR/: the
    // directory made too, the file named by the job.
    let dir = format!("{}/cw%J_%U", cwd.display());
    let placed = bsub_id(&run(
        &c,
        &links,
        "bsub",
        &["-cwd", &dir, "-o", "here.out", "pwd"],
    ));
    c.completed(placed);
    let made = cwd.join(format!("cw{placed}_{TEST_USER}"));
    let here = std::fs::read_to_string(made.join("here.out")).unwrap();
    assert_eq!(lsf_output(&here).0, format!("{}\n", made.display()));
    let into = bsub_id(&run(&c, &links, "bsub", &["-o", "newdir/", "echo x"]));
    c.completed(into);
    let file = cwd.join("newdir").join(format!("{into}.out"));
    assert_eq!(lsf_output(&std::fs::read_to_string(file).unwrap()).0, "x\n");
}

/// bhist (the seconds each job spent in LSF's states, its history) and bacct (finished
/// jobs' accounting, summed up).
/// bwait returns once LSF's condition holds, waited for on the controller: done, exit,
/// ended, started, of jobs, an array whole or one element; a condition that can never hold
/// ends with 1 and says so.
/// Slurm's commands by their names: sbatch writes Slurm's default output file
/// (slurm-JOBID.out, an array's task slurm-ARRAY_INDEX.out); squeue -l keeps its columns.
#[test]
fn slurm_commands_as_slurm_users_type_them() {
    let Some((c, links)) = cluster_with_links() else {
        return;
    };
    let cwd = c.f.cwd(Mode::Rootless);
    std::fs::write(cwd.join("s.sh"), "#!/bin/sh\necho from sbatch\n").unwrap();
    let id: u64 = run(&c, &links, "sbatch", &["--parsable", "s.sh"])
        .ok()
        .trim()
        .parse()
        .unwrap();
    c.completed(id);
    let out = std::fs::read_to_string(cwd.join(format!("slurm-{id}.out")));
    assert_eq!(out.unwrap(), "from sbatch\n");
    // An option it does not know, in getopt's words, as Slurm's commands say it: status 1.
    let bad = run(&c, &links, "squeue", &["--colour"]);
    assert_eq!(
        (bad.code, bad.stderr.as_str()),
        (
            1,
            "squeue: unrecognized option '--colour'\nTry \"squeue --help\" for more information\n"
        )
    );
    let bad = run(&c, &links, "sacct", &["-Z"]);
    assert!(
        bad.code == 1 && bad.stderr.starts_with("sacct: invalid option -- 'Z'\n"),
        "{}: {}",
        bad.code,
        bad.stderr
    );
    let array: u64 = run(&c, &links, "sbatch", &["--parsable", "--array=2", "s.sh"])
        .ok()
        .trim()
        .parse()
        .unwrap();
    c.completed(array);
    assert!(cwd.join(format!("slurm-{array}_2.out")).exists());
    // One that names its file keeps it.
    let named: u64 = run(
        &c,
        &links,
        "sbatch",
        &["--parsable", "-o", "mine.out", "s.sh"],
    )
    .ok()
    .trim()
    .parse()
    .unwrap();
    c.completed(named);
    assert!(cwd.join("mine.out").exists());
    let held: u64 = run(&c, &links, "sbatch", &["--parsable", "-H", "s.sh"])
        .ok()
        .trim()
        .parse()
        .unwrap();
    let long = run(&c, &links, "squeue", &["-l", "-j", &held.to_string()]);
    assert!(long.ok().contains(" STATE "), "{}", long.stdout);
    // scontrol show job without an id: every unfinished job; release takes a list.
    let all = run(&c, &links, "scontrol", &["show", "job"]);
    assert!(
        all.ok().contains(&format!("JobId={held} JobName=s.sh")),
        "{}",
        all.stdout
    );
    // -d: what a running job holds node by node, its cpuset's CPUs (as pbsnodes' slots).
    let script = "#!/bin/sh\n#BERTH --image busybox\ngrep Cpus_allowed_list /proc/self/status\necho started\nexec sleep 300\n";
    let pinned = c.submit(Mode::Rootless, "pinned.sh", script, &[]);
    c.wait_for_output(pinned, "started");
    let text = std::fs::read_to_string(cwd.join(format!("berth-{pinned}.out"))).unwrap();
    let cpus = text.split_whitespace().nth(1).unwrap();
    let node = c.show(pinned)["nodes"][0].as_str().unwrap().to_string();
    let detail = run(
        &c,
        &links,
        "scontrol",
        &["-d", "show", "job", &pinned.to_string()],
    );
    assert!(
        (detail.ok()).contains(&format!(
            "\n   JOB_GRES=(null)\n     Nodes={node} CPU_IDs={cpus} Mem="
        )),
        "{}",
        detail.stdout
    );
    let plain = run(
        &c,
        &links,
        "scontrol",
        &["show", "job", &pinned.to_string()],
    );
    assert!(!plain.ok().contains("CPU_IDs="), "{}", plain.stdout);
    let slots: Vec<String> = (cpus.split(','))
        .map(|range| format!("{range}/{pinned}.{}", host()))
        .collect();
    let pbs = run(&c, &links, "pbsnodes", &[&node]);
    assert!(
        pbs.ok()
            .contains(&format!("\n     jobs = {}\n", slots.join(", "))),
        "{}",
        pbs.stdout
    );
    // Its files, as squeue -O names them.
    let files = run(
        &c,
        &links,
        "squeue",
        &["-h", "-j", &pinned.to_string(), "-O", "STDOUT:200,STDIN:20"],
    );
    let stdout = cwd.join(format!("berth-{pinned}.out"));
    assert_eq!(
        files.ok().split_whitespace().collect::<Vec<_>>(),
        [stdout.to_str().unwrap(), "/dev/null"]
    );
    run(&c, &links, "scancel", &[&pinned.to_string()]).ok();
    // -o: a record a line (-d: a pending job holds nothing yet).
    let one = run(
        &c,
        &links,
        "scontrol",
        &["-o", "show", "job", &held.to_string(), "-d"],
    );
    let one = one.ok();
    assert!(
        one.lines().count() == 1 && one.contains(" JobState=PENDING "),
        "{one}"
    );
    let nodes = run(&c, &links, "scontrol", &["-o", "show", "node"]);
    assert!(
        nodes.ok().lines().count() == 1 && nodes.stdout.starts_with("NodeName="),
        "{}",
        nodes.stdout
    );
    let other: u64 = run(&c, &links, "sbatch", &["--parsable", "-H", "s.sh"])
        .ok()
        .trim()
        .parse()
        .unwrap();
    run(
        &c,
        &links,
        "scontrol",
        &["release", &format!("{held},{other}")],
    )
    .ok();
    c.completed(held);
    c.completed(other);
}

#[test]
fn bwait_returns_once_the_condition_holds() {
    let Some((c, links)) = cluster_with_links() else {
        return;
    };
    let bsub = |args: &[&str]| bsub_id(&run(&c, &links, "bsub", args));
    let bwait = |args: &[&str]| run(&c, &links, "bwait", args);
    let ok = bsub(&["-o", "/dev/null", "sleep", "1"]);
    let failed = bsub(&["-o", "/dev/null", "sleep 1; exit 3"]);
    // Element 1 exits 0, element 2 exits 1.
    let array = bsub(&[
        "-J",
        "pair[1-2]",
        "-o",
        "/dev/null",
        "exit $((LSB_JOBINDEX - 1))",
    ]);
    let held = bsub(&["-H", "-o", "/dev/null", "true"]);
    let all = format!("done({ok}) && exit({failed}) && ended({array}) && done({array}[1])");
    let out = bwait(&["-w", &all]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for id in [ok, failed, array, array + 1] {
        let state = c.show(id)["state"].as_str().unwrap().to_string();
        assert!(state != "PENDING" && state != "RUNNING", "{id}: {state}");
    }
    // Never: a job that exited is never done; an array one of whose elements failed.
    for never in [
        format!("done({failed})"),
        format!("done({array})"),
        format!("exit({ok})"),
    ] {
        let out = bwait(&["-w", &never]);
        assert_eq!(out.code, 1, "{never}: {}", out.stderr);
        assert!(
            out.stderr.contains("the wait condition is never satisfied"),
            "{never}: {}",
            out.stderr
        );
    }
    // started: as soon as it runs, long before its end.
    let long = bsub(&["-o", "/dev/null", "sleep", "300"]);
    let started = bwait(&["-w", &format!("started({long})")]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    assert_eq!(c.show(long)["state"], "RUNNING");
    // Any one of them (||): the one that holds is enough; none that can: never. Jobs by
    // name (the array's, both its elements ended).
    let or = bwait(&["-w", &format!("done({failed}) || done({ok})")]);
    assert_eq!(or.code, 0, "{}", or.stderr);
    let or = bwait(&["-w", &format!("done({failed}) || exit({ok})")]);
    assert_eq!(or.code, 1, "{}", or.stderr);
    assert!(or.stderr.contains("never satisfied"), "{}", or.stderr);
    let named = bwait(&["-w", "ended(pair)"]);
    assert_eq!(named.code, 0, "{}", named.stderr);
    let unnamed = bwait(&["-w", "ended(nosuchname)"]);
    assert!(
        unnamed
            .stderr
            .contains("no job of yours is named nosuchname"),
        "{}",
        unnamed.stderr
    );
    // A condition with parentheses, a mix of && and ||, and ! (which looks at the jobs as
    // they are: a job that exited is not done).
    for (condition, code) in [
        (
            format!("done({failed}) && done({ok}) || started({long})"),
            0,
        ),
        (
            format!("(done({failed}) || done({ok})) && !done({failed})"),
            0,
        ),
        (format!("!ended({ok}) || exit({ok}) && ended(pair)"), 1),
        // Counts of an array's elements (one done, one exited).
        (
            format!("numdone({array}, == 1) && numended({array}, == *)"),
            0,
        ),
        (format!("numexit({array}, >= 2)"), 1),
        (format!("numstart({array}, > 0) || done({ok})"), 0),
        // None runs or waits any more: numrun never reaches one; numpend is none for good.
        (format!("numrun({array}, >= 1)"), 1),
        (format!("numpend({array}, == 0)"), 0),
        // An element by name; ! of what waits holds at once.
        ("ended(pair[2]) && exit(pair[*])".to_string(), 1),
        ("done(pair[1]) && exit(pair[2])".to_string(), 0),
        (format!("!started({held})"), 0),
    ] {
        let out = bwait(&["-w", &condition]);
        assert_eq!(out.code, code, "{condition}: {}", out.stderr);
    }
    // What berth cannot wait for is refused with the reason.
    let numbered = bwait(&["-w", &format!("numhold({array}, >= 1)")]);
    assert!(
        numbered.stderr.contains("is not supported"),
        "{}",
        numbered.stderr
    );
    let missing = bwait(&["-w", "done(424242)"]);
    assert!(
        missing.stderr.contains("job <424242>"),
        "{}",
        missing.stderr
    );
    c.berth(Mode::Root, &["cancel", &long.to_string()]).ok();
}

/// An LSF job at its run limit (bsub -W) gets SIGUSR2 first, as LSF's, which a script
/// traps to save its state (it has ten minutes before it is killed).
#[test]
fn an_lsf_jobs_run_limit_sends_sigusr2() {
    let Some((c, links)) = cluster_with_links() else {
        return;
    };
    let line = "trap 'echo usr2; exit 3' USR2; trap 'echo term; exit 4' TERM; echo started; while true; do sleep 1; done";
    let id = bsub_id(&run(
        &c,
        &links,
        "bsub",
        &["-H", "-W", "10", "-o", "limited.out", line],
    ));
    // (A limit of seconds, for the test: bsub -W takes minutes.)
    c.berth(Mode::Rootless, &["update", &id.to_string(), "--time=0:02"])
        .ok();
    run(&c, &links, "bresume", &[&id.to_string()]).ok();
    let job = c.wait_for(id, &["TIMEOUT", "FAILED", "COMPLETED", "CANCELLED"]);
    assert_eq!(
        (&job["state"], &job["exit_code"]),
        (&"TIMEOUT".into(), &3.into()),
        "{job}"
    );
    let out = std::fs::read_to_string(c.f.cwd(Mode::Rootless).join("limited.out")).unwrap();
    // (Its whole process group has it: the shell's `sleep` too, as the shell says.)
    assert!(
        out.starts_with("started\n") && out.contains("usr2\n") && !out.contains("\nterm\n"),
        "{out}"
    );
}

#[test]
fn lsf_history_and_accounting() {
    let Some((c, links)) = cluster_with_links() else {
        return;
    };
    let pause = std::time::Duration::from_millis(1200);
    // Suspended (bstop) for more than a second of its run.
    let stopped = bsub_id(&run(&c, &links, "bsub", &["-o", "/dev/null", "sleep", "2"]));
    c.wait_for(stopped, &["RUNNING"]);
    run(&c, &links, "bstop", &[&stopped.to_string()]).ok();
    std::thread::sleep(pause);
    run(&c, &links, "bresume", &[&stopped.to_string()]).ok();
    // Held (PSUSP) for more than a second before it ran.
    let held = bsub_id(&run(&c, &links, "bsub", &["-H", "-o", "/dev/null", "true"]));
    std::thread::sleep(pause);
    c.berth(Mode::Rootless, &["release", &held.to_string()])
        .ok();
    let failed = bsub_id(&run(&c, &links, "bsub", &["-o", "/dev/null", "exit 3"]));
    for id in [stopped, held, failed] {
        c.wait_for(id, &["COMPLETED", "FAILED"]);
    }
    let bhist = run(&c, &links, "bhist", &["-a"]);
    let out = bhist.ok();
    assert!(out.starts_with("Summary of time in seconds spent in various states:\nJOBID   USER    JOB_NAME  PEND    PSUSP   RUN     USUSP   SSUSP   UNKWN   TOTAL\n"), "{out}");
    // (The last seven columns: a command's name has spaces.)
    let times = |id: u64| -> Vec<u64> {
        let words: Vec<&str> = row(out, &id.to_string()).split_whitespace().collect();
        words[words.len() - 7..]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect()
    };
    for id in [stopped, held, failed] {
        let t = times(id);
        assert_eq!(t[..6].iter().sum::<u64>(), t[6], "{out}");
    }
    assert!(times(stopped)[3] >= 1, "USUSP: {out}");
    assert!(times(held)[1] >= 1, "PSUSP: {out}");
    // Event by event: the suspension between the start and the end, the hold before the
    // start.
    let events = |id: u64| -> Vec<String> {
        let long = run(&c, &links, "bhist", &["-l", &id.to_string()]);
        assert!(
            long.ok()
                .contains("Summary of time in seconds spent in various states by"),
            "{}",
            long.stdout
        );
        // `Thu Dec  3 10:20:01 2026: WHAT`, each WHAT up to its first '<', ',' or '.'.
        long.stdout
            .lines()
            .filter(|l| l.get(24..26) == Some(": "))
            .map(|l| {
                l[26..]
                    .split(['<', ',', '.'])
                    .next()
                    .unwrap()
                    .trim()
                    .to_string()
            })
            .collect()
    };
    let (submitted, started) = (
        ["Submitted from host"],
        ["Dispatched 1 Task(s) on Host(s)", "Starting;"],
    );
    let (suspended, done) = (
        [
            "Suspended by the user or administrator;",
            "Resumed by the user or administrator;",
        ],
        ["Done successfully"],
    );
    assert_eq!(
        events(stopped),
        [&submitted[..], &started, &suspended, &done].concat()
    );
    assert_eq!(
        events(held),
        [&submitted[..], &suspended, &started, &done].concat()
    );
    // Requeued once it failed: both runs, the requeue between them.
    run(&c, &links, "brequeue", &[&failed.to_string()]).ok();
    wait_until(
        30,
        || c.show(failed)["restarts"] == 1 && c.show(failed)["state"] == "FAILED",
        || c.show(failed).to_string(),
    );
    let exited = ["Exited with exit code 3"];
    assert_eq!(
        events(failed),
        [
            &submitted[..],
            &started,
            &exited,
            &["Pending: Job has been requeued;"],
            &started,
            &exited
        ]
        .concat()
    );
    let missing = run(&c, &links, "bhist", &["99999"]);
    assert_eq!(missing.code, 255);
    assert!(missing.stderr.contains("Job <99999> is not found"));

    let bacct = run(&c, &links, "bacct", &[]);
    assert!(
        bacct
            .ok()
            .contains(&format!("submitted by users {TEST_USER}"))
            && bacct.stdout.contains("Total number of done jobs:       2")
            && bacct.stdout.contains("Total number of exited jobs:     1"),
        "{}",
        bacct.stdout
    );
    let exited = run(&c, &links, "bacct", &["-e", "-l"]);
    assert!(
        exited.ok().contains(&format!(
            "Job <{failed}>, User <{TEST_USER}>, Project <default>, Status <EXIT>"
        )) && exited.stdout.contains("Exited with exit code 3.")
            && !exited.stdout.contains(&format!("Job <{stopped}>")),
        "{}",
        exited.stdout
    );
    // Output LSF cannot write goes elsewhere (LSF mails it): its user's home, as bjobs says.
    let args = ["-o", "/nonexistent/x.out", "/bin/echo", "kept"];
    let lost = bsub_id(&run(&c, &links, "bsub", &args));
    c.completed(lost);
    let long = run(&c, &links, "bjobs", &["-l", &lost.to_string()]);
    let kept = c.f.user.home.join(format!("{lost}.out"));
    let why = format!(
        ": Completed <done>; output undelivered (cannot open /nonexistent/x.out as \
         {TEST_USER}: No such file or directory (os error 2)): kept in {}.\n",
        kept.display()
    );
    assert!(long.ok().contains(&why), "{}", long.stdout);
    let text = std::fs::read_to_string(&kept).unwrap();
    std::fs::remove_file(&kept).unwrap();
    assert!(text.contains("here instead\nkept\n"), "{text}");
}

/// A PBS script's `-v` directives are its environment whatever qsub's line says; PBS Pro's
/// OMP_NUM_THREADS from its chunk (ncpus over mpiprocs), unless the job exports its own.
#[test]
fn a_pbs_scripts_variables_and_omp_threads() {
    let Some((c, links)) = cluster_with_links() else {
        return;
    };
    let cwd = c.f.cwd(Mode::Rootless);
    let script = "#!/bin/sh\n#PBS -l select=1:ncpus=2\n#PBS -v FOO=bar\necho \"OMP=${OMP_NUM_THREADS-unset} FOO=${FOO-unset}\"\n";
    std::fs::write(cwd.join("omp.sh"), script).unwrap();
    let read = |args: &[&str], out: &str| {
        let id = run(
            &c,
            &links,
            "qsub",
            &[&["-j", "oe", "-o", out][..], args, &["omp.sh"]].concat(),
        );
        let id = id.ok().trim().to_string();
        c.completed(id.split('.').next().unwrap().parse().unwrap());
        (std::fs::read_to_string(cwd.join(out)).unwrap(), id)
    };
    assert_eq!(read(&[], "plain.out").0, "OMP=2 FOO=bar\n");
    assert_eq!(
        read(&["-v", "OMP_NUM_THREADS=4"], "own.out").0,
        "OMP=4 FOO=bar\n"
    );
    // -W umask=: the job's own umask, its output file's too, and among its attributes.
    let (masked, id) = read(&["-W", "umask=077"], "masked.out");
    assert_eq!(masked, "OMP=2 FOO=bar\n");
    let full = run(&c, &links, "qstat", &["-x", "-f", &id]);
    assert!(full.ok().contains("\n    umask = 77\n"), "{}", full.stdout);
    // More ranks than CPUs in a chunk: they share its CPU, each a slot in the node file.
    let (shared, _) = read(&["-l", "select=1:ncpus=1:mpiprocs=2"], "shared.out");
    assert_eq!(shared, "OMP=1 FOO=bar\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cwd.join("masked.out"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

/// pbsdsh in a PBS job: a program on each slot at once (PBS_VNODENUM its slot), once per
/// node (-u), on the first N slots (-c), on one slot or host (-n, -h: PBS_VNODENUM that
/// slot, the host's first), none reading
/// pbsdsh's input; Torque's variables in the script itself.
#[test]
fn pbsdsh_runs_a_program_on_the_jobs_slots() {
    let Some((c, links)) = cluster_with_links() else {
        return;
    };
    let cwd = c.f.cwd(Mode::Rootless);
    let script = "#!/bin/sh\n#PBS -l nodes=1:ppn=2\n#BERTH --image busybox\n\
        echo \"script $PBS_NODENUM $PBS_TASKNUM $PBS_VNODENUM\"\n\
        pbsdsh sh -c 'echo \"slot $PBS_VNODENUM $PBS_NODENUM\"' | sort\n\
        pbsdsh -u sh -c 'echo \"node $(hostname)\"'\n\
        pbsdsh -c 1 sh -c 'echo \"first $PBS_VNODENUM\"'\n\
        echo input | pbsdsh -c 1 sh -c 'echo \"read $(wc -c)\"'\n\
        pbsdsh -n 1 sh -c 'echo \"slot $PBS_VNODENUM on $(hostname)\"'\n\
        pbsdsh -h \"$(hostname)\" sh -c 'echo \"on the host $PBS_VNODENUM\"'\n\
        pbsdsh -c 3 true 2>&1; echo \"c=$?\"\n\
        pbsdsh -s true 2>/dev/null || echo refused\n\
        pbsdsh sh -c '[ $PBS_VNODENUM = 0 ] && exit 1; sleep 1; echo survived'; echo \"failed=$?\"\n";
    std::fs::write(cwd.join("dsh.sh"), script).unwrap();
    let id = run(&c, &links, "qsub", &["-j", "oe", "-o", "dsh.out", "dsh.sh"]);
    let id: u64 = id.ok().split('.').next().unwrap().parse().unwrap();
    let job = c.completed(id);
    let out = std::fs::read_to_string(cwd.join("dsh.out")).unwrap();
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    let host = host();
    let expected = format!(
        "script 0 1 0\nslot 0 0\nslot 1 0\nnode {host}\nfirst 0\nread 0\nslot 1 on {host}\non the host 0\n"
    );
    assert!(out.starts_with(&expected), "{out}");
    assert!(out.contains("pbsdsh -c 3: the job has 2 slots"), "{out}");
    // One task failing ends none of the others (pbsdsh waits for them all).
    assert!(
        out.contains("refused\nsurvived\n") && out.ends_with("failed=1\n"),
        "{out}"
    );
}

/// qsig's STOP and KILL, which no process can catch, reach the job's script itself (PBS
/// signals the job's session leader), not berth's runner, which passes the others on: the
/// script stops and goes on, and killed, the job ends with PBS's 256 + the signal.
#[test]
fn qsig_stop_and_kill_reach_the_jobs_script() {
    let Some((c, links)) = cluster_with_links() else {
        return;
    };
    std::fs::write(
        c.f.cwd(Mode::Rootless).join("sleeper.sh"),
        "#!/bin/sh\nsleep 300\n",
    )
    .unwrap();
    let id = run(&c, &links, "qsub", &["sleeper.sh"])
        .ok()
        .trim()
        .to_string();
    let number: u64 = id.split('.').next().unwrap().parse().unwrap();
    c.wait_for(number, &["RUNNING"]);
    // The job's runner (as it is recorded) and its child, the container's program.
    let recorded = c
        .state
        .join("jobs")
        .join(number.to_string())
        .join("runner.pid");
    let first_number = |text: String| text.split_whitespace().next()?.parse::<u32>().ok();
    let (mut runner, mut script) = (0, 0);
    wait_until(
        10,
        || {
            let read = std::fs::read_to_string(&recorded)
                .ok()
                .and_then(first_number);
            runner = read.unwrap_or(0);
            let children = format!("/proc/{runner}/task/{runner}/children");
            script = std::fs::read_to_string(children)
                .ok()
                .and_then(first_number)
                .unwrap_or(0);
            script != 0
        },
        || format!("no runner with a child: {}", c.show(number)),
    );
    let state = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(") ")
            .map_or(' ', |(_, rest)| rest.chars().next().unwrap())
    };
    for (signal, expected) in [("STOP", 'T'), ("CONT", 'S')] {
        run(&c, &links, "qsig", &["-s", signal, &id]).ok();
        wait_until(
            10,
            || state(script) == expected,
            || format!("{signal}: the script is {}", state(script)),
        );
        assert_ne!(state(runner), 'T', "{signal}: the runner was stopped");
    }
    run(&c, &links, "qsig", &["-s", "KILL", &id]).ok();
    let job = c.wait_for(number, &["COMPLETED", "FAILED", "CANCELLED"]);
    assert_eq!(job["signal"], 9, "{job}");
    let full = run(&c, &links, "qstat", &["-x", "-f", &id])
        .ok()
        .to_string();
    assert!(full.contains("Exit_status = 265\n"), "{full}");
}

#[test]
fn pbs_commands_as_pbs_users_type_them() {
    let Some((c, links)) = cluster_with_links() else {
        return;
    };
    let server = host();
    let cwd = c.f.cwd(Mode::Rootless);
    std::fs::write(
        cwd.join("pbs.sh"),
        "#!/bin/sh\n#PBS -N pbsjob\n#PBS -l nodes=1:ppn=1,walltime=00:10:00\necho \"$PBS_JOBNAME $1 $2 from $PBS_O_HOST\"\necho oops >&2\n",
    )
    .unwrap();
    // A command line it cannot take: its usage, and PBS's status for one (2).
    let bad = run(&c, &links, "qstat", &["--bogus"]);
    assert!(
        bad.code == 2 && bad.stderr.contains("\nusage: qstat "),
        "{}: {}",
        bad.code,
        bad.stderr
    );
    let bad = run(&c, &links, "qdel", &[]);
    assert!(
        bad.code == 2 && bad.stderr.contains("usage: qdel "),
        "{}: {}",
        bad.code,
        bad.stderr
    );
    let queue = run(&c, &links, "qsub", &["-q", "nosuch", "pbs.sh"]);
    assert!(
        queue.code != 0 && queue.stderr.starts_with("qsub: unknown queue 'nosuch'"),
        "{}",
        queue.stderr
    );
    // PBS Pro's -J is a range: one index is refused.
    let bad = run(&c, &links, "qsub", &["-J", "5", "pbs.sh"]);
    assert!(
        bad.code != 0 && bad.stderr.contains("-J") && bad.stderr.contains("X-Y[:STEP][%MAX]"),
        "{}: {}",
        bad.code,
        bad.stderr
    );
    // qsub prints ID.SERVER; a dependency takes that form back.
    let first = run(&c, &links, "qsub", &["-h", "-F", "one two", "pbs.sh"]);
    let first_id = first.ok().trim().to_string();
    assert!(first_id.ends_with(&format!(".{server}")), "{first_id}");
    let id: u64 = first_id.split('.').next().unwrap().parse().unwrap();
    let dep = run(
        &c,
        &links,
        "qsub",
        &[
            "-W",
            &format!("depend=afterok:{first_id}"),
            "-N",
            "after",
            "-j",
            "oe",
            "--",
            "/bin/sh",
            "-c",
            "echo after",
        ],
    );
    let dep_id = dep.ok().trim().to_string();
    let array = run(&c, &links, "qsub", &["-J", "1-2", "-h", "pbs.sh"]);
    let array_id = array.ok().trim().to_string();
    assert!(array_id.contains("[]."), "{array_id}");

    // Held (H) and waiting on it (H), in qstat's columns.
    let stat = run(&c, &links, "qstat", &[]);
    assert!(
        stat.ok()
            .starts_with("Job id            Name             User"),
        "{}",
        stat.stdout
    );
    let line: Vec<&str> = row(&stat.stdout, &first_id).split_whitespace().collect();
    assert_eq!(
        &line[1..],
        ["pbsjob", TEST_USER, "0", "H", "normal"],
        "{}",
        stat.stdout
    );
    assert!(
        row(&stat.stdout, &dep_id).contains(" H "),
        "{}",
        stat.stdout
    );
    // The held array is one line, as PBS lists it; -t: its subjobs too.
    let array_number = array_id.split('[').next().unwrap();
    assert!(
        row(&stat.stdout, &array_id).contains(" H "),
        "{}",
        stat.stdout
    );
    assert!(
        !stat.stdout.contains(&format!("{array_number}[2]")),
        "{}",
        stat.stdout
    );
    let subjobs = run(&c, &links, "qstat", &["-t"]);
    row(subjobs.ok(), &array_id);
    row(&subjobs.stdout, &format!("{array_number}[2].{server}"));
    // -s: each with the scheduler's comment under it; -B: the server's counts.
    let commented = run(&c, &links, "qstat", &["-s", &first_id]);
    assert!(
        commented.ok().ends_with("\n   Not Running: JobHeldUser\n"),
        "{}",
        commented.stdout
    );
    let server_line = run(&c, &links, "qstat", &["-B"]);
    let fields: Vec<&str> = server_line
        .ok()
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(fields.len(), 10, "{}", server_line.stdout);
    assert_eq!(
        (fields[2], fields[5], fields[9]),
        ("4", "4", "Active"),
        "{}",
        server_line.stdout
    );
    // -Bf: the server's attributes, as PBS lists them.
    let attributes = run(&c, &links, "qstat", &["-Bf"]);
    let text = attributes.ok();
    assert!(
        text.starts_with(&format!("Server: {server}\n    server_state = Active\n"))
            && text.contains("    total_jobs = 4\n")
            && text.contains(" Held:4 "),
        "{text}"
    );
    // Named, the same (its subjobs with -t); -J: arrays alone; -f: its array attributes.
    let named = run(&c, &links, "qstat", &[&array_id]);
    assert!(
        row(named.ok(), &array_id).contains(" H "),
        "{}",
        named.stdout
    );
    assert_eq!(named.stdout.lines().count(), 3, "{}", named.stdout);
    let named = run(&c, &links, "qstat", &["-t", &array_id]);
    row(named.ok(), &format!("{array_number}[1].{server}"));
    let arrays = run(&c, &links, "qstat", &["-J"]);
    row(arrays.ok(), &array_id);
    assert!(!arrays.stdout.contains(&first_id), "{}", arrays.stdout);
    let full = run(&c, &links, "qstat", &["-f", &array_id]);
    for attr in [
        "    array = True\n",
        "    array_state_count = Queued:2 Running:0 Exiting:0 Expired:0\n",
        "    array_indices_submitted = 1-2\n",
        "    array_indices_remaining = 1-2\n",
    ] {
        assert!(full.ok().contains(attr), "{attr}{}", full.stdout);
    }
    // PBS_O_WORKDIR is where it was submitted from, wherever -d has it run.
    let elsewhere = run(&c, &links, "qsub", &["-h", "-d", "/tmp", "pbs.sh"]);
    let elsewhere = elsewhere.ok().trim().to_string();
    let full = run(&c, &links, "qstat", &["-f", &elsewhere]);
    let submitted = format!("    PBS_O_WORKDIR = {}\n", cwd.display());
    assert!(full.ok().contains(&submitted), "{}", full.stdout);
    run(&c, &links, "qdel", &[&elsewhere]).ok();
    let subjob = run(&c, &links, "qstat", &["-f", &format!("{array_number}[2]")]);
    assert!(
        subjob
            .ok()
            .contains(&format!("    array_id = {array_id}\n    array_index = 2\n")),
        "{}",
        subjob.stdout
    );

    // Changed while held, with qsub's options (silent, as qalter is).
    let altered = run(
        &c,
        &links,
        "qalter",
        &["-l", "walltime=00:20:00", &first_id],
    );
    assert_eq!(altered.ok(), "");
    assert_eq!(c.show(id)["time_limit"], 1200);
    // Its chunks and its error file's directory too (PBS's name for it there).
    std::fs::create_dir_all(cwd.join("errs")).unwrap();
    std::os::unix::fs::chown(cwd.join("errs"), Some(c.f.user.uid), None).unwrap();
    let select = "select=1:ncpus=2:mpiprocs=2";
    let altered = run(
        &c,
        &links,
        "qalter",
        &["-l", select, "-e", "errs/", &first_id],
    );
    assert_eq!(altered.ok(), "");
    let shown = c.show(id);
    assert_eq!((&shown["ntasks"], &shown["cpus"]), (&2.into(), &2.into()));
    let full = run(&c, &links, "qstat", &["-f", &first_id]);
    let select_line = "    Resource_List.select = 1:ncpus=2:mpiprocs=2\n";
    assert!(full.ok().contains(select_line), "{}", full.stdout);
    // Released: it runs, then the job after it; its output and errors as PBS names them.
    run(&c, &links, "qrls", &[&first_id]).ok();
    c.completed(id);
    let dep_job = c.completed(dep_id.split('.').next().unwrap().parse().unwrap());
    assert_eq!(
        std::fs::read_to_string(cwd.join(format!("pbsjob.o{id}"))).unwrap(),
        format!("pbsjob one two from {server}\n")
    );
    assert_eq!(
        std::fs::read_to_string(cwd.join(format!("errs/pbsjob.e{id}"))).unwrap(),
        "oops\n"
    );
    let dep_number = dep_job["id"].as_u64().unwrap();
    assert_eq!(
        std::fs::read_to_string(cwd.join(format!("after.o{dep_number}"))).unwrap(),
        "after\n"
    );
    assert!(
        !cwd.join(format!("after.e{dep_number}")).exists(),
        "-j oe joins them"
    );

    // Finished: F with -x, and qstat -f's attributes.
    let finished = run(&c, &links, "qstat", &["-x"]);
    assert!(
        row(finished.ok(), &first_id).contains(" F normal"),
        "{}",
        finished.stdout
    );
    // Named without -x, a finished job is history, as PBS Pro says (status 35).
    let history = run(&c, &links, "qstat", &[&first_id]);
    assert_eq!(
        (history.code, history.stderr.trim()),
        (
            35,
            format!("qstat: {first_id} Job has finished, use -x or -H to obtain historical job information").as_str()
        )
    );
    // So do qdel and qsig of it.
    for (command, args) in [
        ("qdel", vec![]),
        ("qsig", vec!["-s", "USR1"]),
        ("qrerun", vec![]),
    ] {
        let over = run(&c, &links, command, &[&args[..], &[&first_id]].concat());
        assert_eq!(
            (over.code, over.stderr.trim()),
            (
                35,
                format!("{command}: Job has finished {first_id}").as_str()
            )
        );
    }
    let full = run(&c, &links, "qstat", &["-x", "-f", &first_id]);
    let full = full.ok();
    assert!(
        full.starts_with(&format!("Job Id: {first_id}\n    Job_Name = pbsjob\n")),
        "{full}"
    );
    for attr in [
        "    job_state = F\n",
        "    Exit_status = 0\n",
        "    Resource_List.walltime = 00:20:00\n",
        "    Resource_List.select = 1:ncpus=2:mpiprocs=2\n",
        "    Rerunable = True\n",
        &format!("    Job_Owner = {TEST_USER}@{server}\n"),
    ] {
        assert!(full.contains(attr), "{attr}{full}");
    }
    // As PSI/J asks PBS Pro: flags together, the attributes as JSON.
    let json = run(&c, &links, "qstat", &["-fx", "-F", "json", &first_id]);
    let json: serde_json::Value = serde_json::from_str(json.ok()).unwrap();
    let job = &json["Jobs"][&first_id];
    assert_eq!(
        (&job["job_state"], &job["Exit_status"]),
        (&serde_json::json!("F"), &serde_json::json!(0)),
        "{json}"
    );
    assert_eq!(job["Resource_List"]["walltime"], "00:20:00", "{json}");
    // The array's tasks, released and deleted as PBS names them.
    run(&c, &links, "qdel", &[&array_id]).ok();
    let first_task = array_number.parse::<u64>().unwrap();
    for task in [first_task, first_task + 1] {
        c.wait_for(task, &["CANCELLED"]);
    }
    // PBS Pro's array (-J), its script with no #! line (qsub runs it with /bin/sh): each
    // subjob's id and index as PBS Pro gives them.
    std::fs::write(
        cwd.join("pro.sh"),
        "#PBS -N pro\n#PBS -J 1-2\necho \"$PBS_JOBID $PBS_ARRAY_INDEX $PBS_ARRAY_ID $PBS_ENVIRONMENT\"\n",
    )
    .unwrap();
    let pro = run(&c, &links, "qsub", &["pro.sh"]);
    let pro_id = pro.ok().trim().to_string();
    let pro_number: u64 = pro_id.split('[').next().unwrap().parse().unwrap();
    for (n, task) in [pro_number, pro_number + 1].into_iter().enumerate() {
        c.completed(task);
        let index = n + 1;
        assert_eq!(
            std::fs::read_to_string(cwd.join(format!("pro.o{pro_number}.{index}"))).unwrap(),
            format!("{pro_number}[{index}].{server} {index} {pro_id} PBS_BATCH\n")
        );
    }
    // Finished: history (35) unless -x, which shows it F and its subjobs X.
    let over = run(&c, &links, "qstat", &[&pro_id]);
    assert_eq!(over.code, 35, "{}", over.stderr);
    let over = run(&c, &links, "qdel", &[&pro_id]);
    assert_eq!(
        (over.code, over.stderr.trim()),
        (35, format!("qdel: Job has finished {pro_id}").as_str())
    );
    let over = run(&c, &links, "qstat", &["-x", "-t", &pro_id]);
    assert!(row(over.ok(), &pro_id).contains(" F "), "{}", over.stdout);
    let second = format!("{pro_number}[2].{server}");
    assert!(
        row(&over.stdout, &second).contains(" X "),
        "{}",
        over.stdout
    );
    // One subjob ended, one running: begun (B), the ended one X without -x, as counted.
    let begun = run(
        &c,
        &links,
        "qsub",
        &[
            "-J",
            "1-2",
            "--",
            "/bin/sh",
            "-c",
            "[ $PBS_ARRAY_INDEX = 1 ] || sleep 300",
        ],
    );
    let begun_id = begun.ok().trim().to_string();
    let begun_number: u64 = begun_id.split('[').next().unwrap().parse().unwrap();
    c.completed(begun_number);
    c.wait_for(begun_number + 1, &["RUNNING"]);
    let stat = run(&c, &links, "qstat", &["-t", &begun_id]);
    assert!(row(stat.ok(), &begun_id).contains(" B "), "{}", stat.stdout);
    let first_sub = format!("{begun_number}[1].{server}");
    assert!(
        row(&stat.stdout, &first_sub).contains(" X "),
        "{}",
        stat.stdout
    );
    let full = run(&c, &links, "qstat", &["-f", &begun_id]);
    for attr in [
        "    job_state = B\n",
        "    array_state_count = Queued:0 Running:1 Exiting:0 Expired:1\n",
        "    array_indices_remaining = -\n",
    ] {
        assert!(full.ok().contains(attr), "{attr}{}", full.stdout);
    }
    // Its own line has no subjob's end: its exit status comes once all have ended (2: one
    // was deleted).
    assert!(!full.stdout.contains("Exit_status"), "{}", full.stdout);
    let alone = run(&c, &links, "qstat", &[&first_sub]);
    assert!(
        row(alone.ok(), &first_sub).contains(" X "),
        "{}",
        alone.stdout
    );
    run(&c, &links, "qdel", &[&begun_id]).ok();
    c.wait_for(begun_number + 1, &["CANCELLED"]);
    let over = run(&c, &links, "qstat", &["-xf", &begun_id]);
    assert!(
        over.ok().contains("    Exit_status = 2\n"),
        "{}",
        over.stdout
    );
    // Neither is an index the array lacks, nor a subjob's own id taken for an array's.
    for missing in [
        format!("{begun_number}[9]"),
        format!("{}[]", begun_number + 1),
    ] {
        let missing = run(&c, &links, "qstat", &["-x", &missing]);
        assert_eq!(missing.code, 153, "{}{}", missing.stdout, missing.stderr);
    }
    // -S: the script runs with that shell, whatever its #! says; ^array_index^ names each
    // subjob's file; -r n: not rerunable.
    std::fs::write(
        cwd.join("shell.sh"),
        "#!/bin/false\n#PBS -S /bin/sh -r n\n#PBS -J 1-2 -j oe -o out_^array_index^.log\necho \"ran $PBS_ARRAY_INDEX\"\n",
    )
    .unwrap();
    let shell = run(&c, &links, "qsub", &["shell.sh"]);
    let shell_number: u64 = shell.ok().split('[').next().unwrap().parse().unwrap();
    for index in 1..=2 {
        c.completed(shell_number + index - 1);
        let out = std::fs::read_to_string(cwd.join(format!("out_{index}.log"))).unwrap();
        assert_eq!(out, format!("ran {index}\n"));
    }
    let full = run(&c, &links, "qstat", &["-fx", &format!("{shell_number}[1]")]);
    assert!(
        full.ok().contains("    Rerunable = False\n"),
        "{}",
        full.stdout
    );
    // -o and -e naming directories: the files in them, as PBS names them; a walltime's
    // end said as PBS's MoM says it.
    std::fs::create_dir_all(cwd.join("logs")).unwrap();
    std::os::unix::fs::chown(cwd.join("logs"), Some(c.f.user.uid), None).unwrap();
    let into = run(
        &c,
        &links,
        "qsub",
        &[
            "-o",
            "logs",
            "-e",
            "logs",
            "-N",
            "dirout",
            "-l",
            "walltime=00:00:02",
            "--",
            "/bin/sh",
            "-c",
            "echo out; echo err >&2; sleep 60",
        ],
    );
    let into: u64 = into.ok().split('.').next().unwrap().parse().unwrap();
    c.wait_for(into, &["TIMEOUT"]);
    let file = |name: String| std::fs::read_to_string(cwd.join("logs").join(name)).unwrap();
    assert_eq!(file(format!("dirout.o{into}")), "out\n");
    let err = file(format!("dirout.e{into}"));
    // (The walltime said is past the limit.)
    let used = err
        .strip_prefix("err\n=>> PBS: job killed: walltime ")
        .and_then(|rest| rest.strip_suffix(" exceeded limit 2\n"));
    assert!(used.is_some_and(|u| u.parse::<u64>().unwrap() > 2), "{err}");
    // Its account, and how many times it ran, as qstat -f has them.
    let charged = run(&c, &links, "qsub", &["-A", "lab", "--", "/bin/true"]);
    let charged = charged.ok().trim().to_string();
    c.completed(charged.split('.').next().unwrap().parse().unwrap());
    let full = run(&c, &links, "qstat", &["-fx", &charged]);
    assert!(
        full.ok().contains("    Account_Name = lab\n")
            && full.stdout.contains("    run_count = 1\n"),
        "{}",
        full.stdout
    );
    // An executable job's program gets qdel's SIGTERM itself: its handler runs.
    let trap = "trap 'echo term; exit 0' TERM; echo ready; while :; do sleep 0.1; done";
    let args = ["-o", "trap.out", "-j", "oe", "--", "/bin/sh", "-c", trap];
    let trapped = run(&c, &links, "qsub", &args).ok().trim().to_string();
    let ready = || std::fs::read_to_string(cwd.join("trap.out")).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready().contains("ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "{trapped} never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    run(&c, &links, "qdel", &[&trapped]).ok();
    c.wait_for(
        trapped.split('.').next().unwrap().parse().unwrap(),
        &["CANCELLED"],
    );
    assert_eq!(ready(), "ready\nterm\n");
    // qhold's default hold is the owner's (-h u), whoever holds it; -h o is root's alone;
    // the two are given and lifted apart (-h uo: both).
    let later = run(&c, &links, "qsub", &["-a", "2359", "--", "/bin/true"]);
    let later = later.ok().trim().to_string();
    let hold_types = || {
        let full = run(&c, &links, "qstat", &["-f", &later]);
        let line = full.ok().lines().find(|l| l.contains(" Hold_Types = "));
        line.unwrap().split(" = ").nth(1).unwrap().to_string()
    };
    c.berth(Mode::Root, &["as", "qhold", &later]).ok();
    run(&c, &links, "qrls", &[&later]).ok();
    assert_eq!(hold_types(), "n");
    c.berth(Mode::Root, &["as", "qhold", "-h", "uo", &later])
        .ok();
    assert_eq!(hold_types(), "uo");
    // The owner lifts their own; root's stays, which they may not lift.
    run(&c, &links, "qrls", &[&later]).ok();
    assert_eq!(hold_types(), "o");
    let refused = run(&c, &links, "qrls", &[&later]);
    assert_eq!(
        (refused.code, refused.stderr.trim()),
        (159, format!("qrls: Unauthorized Request  {later}").as_str())
    );
    // Root lifts those it names: u by default, as PBS's qrls.
    c.berth(Mode::Root, &["as", "qhold", "-h", "u", &later])
        .ok();
    c.berth(Mode::Root, &["as", "qrls", &later]).ok();
    assert_eq!(hold_types(), "o");
    c.berth(Mode::Root, &["as", "qhold", "-h", "u", &later])
        .ok();
    c.berth(Mode::Root, &["as", "qrls", "-h", "ou", &later])
        .ok();
    assert_eq!(hold_types(), "n");
    run(&c, &links, "qdel", &["-W", "force", &later]).ok();
    let unknown = run(&c, &links, "qdel", &[&format!("999999.{server}")]);
    assert_eq!(unknown.code, 153, "{}", unknown.stderr);
    let unknown = run(&c, &links, "qstat", &["999999"]);
    assert_eq!(
        (unknown.code, unknown.stderr.trim()),
        (153, "qstat: Unknown Job Id 999999")
    );

    // Nodes and queues.
    let nodes = run(&c, &links, "pbsnodes", &["-a"]);
    let node = dep_job["nodes"][0].as_str().unwrap();
    assert!(
        nodes
            .ok()
            .starts_with(&format!("{node}\n     state = free\n     np = ")),
        "{}",
        nodes.stdout
    );
    let queues = run(&c, &links, "qstat", &["-Q"]);
    assert!(
        row(queues.ok(), "normal").contains(" yes yes "),
        "{}",
        queues.stdout
    );
    // An interactive job: a login shell on this terminal, in the image.
    let mut term = under_terminal(&command(&c, &links, "qsub", &["-I", "-l", "walltime=5:00"]));
    let out = run_with_stdin(
        &mut term,
        "test -t 0 && echo \"tty in $PBS_JOBNAME at $(pwd)\"; exit 4\n",
    );
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    // In its user's home, as PBS's jobs start.
    let home = c.f.user.home.display();
    assert!(
        out.stdout.contains(&format!("tty in sh at {home}")),
        "{}",
        out.stdout
    );
    // PBS's words about it (on the terminal, with what was typed).
    let server = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let said: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("qsub:"))
        .collect();
    assert!(
        said[0].starts_with("qsub: waiting for job ")
            && said[0].ends_with(&format!(".{} to start", server.trim()))
            && said[1].starts_with("qsub: job ")
            && said[1].ends_with(&format!(".{} ready", server.trim()))
            && said[2] == said[1].replace(" ready", " completed"),
        "{}",
        out.stdout
    );
    // Its output was the terminal's: no file of it is left anywhere.
    let id = said[1]
        .trim_start_matches("qsub: job ")
        .split('.')
        .next()
        .unwrap();
    for dir in [c.f.user.home.as_path(), cwd.as_path()] {
        for file in [format!("sh.o{id}"), format!("sh.e{id}")] {
            assert!(
                !dir.join(&file).exists(),
                "{file} left in {}",
                dir.display()
            );
        }
    }
    let server = host();
    // A job starts in its user's home, its submission directory PBS_O_WORKDIR; -j eo: both
    // streams into the error file; Torque's PBS_WALLTIME and PBS_SERVER.
    std::fs::write(
        cwd.join("where.sh"),
        "#!/bin/sh\n#PBS -N where -j eo -l walltime=00:05:00\necho \"W=$PBS_WALLTIME S=$PBS_SERVER\"\n[ \"$(pwd)\" = \"$(cd && pwd)\" ] && echo home\ncd \"$PBS_O_WORKDIR\" && [ -e where.sh ] && echo back\necho err >&2\n",
    )
    .unwrap();
    let job = run(&c, &links, "qsub", &["where.sh"]);
    let job: u64 = job.ok().split('.').next().unwrap().parse().unwrap();
    c.completed(job);
    assert_eq!(
        std::fs::read_to_string(cwd.join(format!("where.e{job}"))).unwrap(),
        format!("W=300 S={server}\nhome\nback\nerr\n")
    );
    assert!(!cwd.join(format!("where.o{job}")).exists());
    let full = run(&c, &links, "qstat", &["-fx", &job.to_string()]);
    assert!(
        full.ok().contains(&format!(
            "    Output_Path = {server}:{}/where.e{job}\n",
            cwd.display()
        )),
        "{}",
        full.stdout
    );
    // Options together as getopt takes them, subjobs in a range, Torque's -t; PBS's words
    // for what is refused.
    let three = run(&c, &links, "qsub", &["-h", "-J", "1-3", "pbs.sh"]);
    let three = three.ok().trim().to_string();
    let users = run(&c, &links, "qstat", &["-nu", TEST_USER]);
    assert!(row(users.ok(), &three).contains(" H "), "{}", users.stdout);
    let number = three.split('[').next().unwrap();
    let ranged = run(&c, &links, "qstat", &["-t", &format!("{number}[2-3]")]);
    assert_eq!(ranged.ok().lines().count(), 4, "{}", ranged.stdout);
    run(&c, &links, "qdel", &[&format!("{number}[1-2].{server}")]).ok();
    run(&c, &links, "qrls", &["-t", "3", &three]).ok();
    let first: u64 = number.parse().unwrap();
    c.wait_for(first, &["CANCELLED"]);
    c.wait_for(first + 1, &["CANCELLED"]);
    c.completed(first + 2);
    let one = run(&c, &links, "qsub", &["-h", "-J", "5-6", "pbs.sh"]);
    let one = one.ok().trim().to_string();
    assert!(one.ends_with(&format!("[].{server}")), "{one}");
    let operator = run(&c, &links, "qhold", &["-h", "o", &one]);
    assert_eq!(
        (operator.code, operator.stderr.trim()),
        (159, format!("qhold: Unauthorized Request  {one}").as_str())
    );
    let unknown = run(&c, &links, "qalter", &["-N", "x", "999999"]);
    assert_eq!(
        (unknown.code, unknown.stderr.trim()),
        (
            153,
            format!("qalter: Unknown Job Id 999999.{server}").as_str()
        )
    );
    run(&c, &links, "qalter", &["-h", "n", &one]).ok();
    let number: u64 = one.split('[').next().unwrap().parse().unwrap();
    c.completed(number);
    c.completed(number + 1);
    // A job whose output file cannot be opened runs all the same, its output kept in its
    // user's home under PBS's spool name, as its comment says.
    let lost = run(
        &c,
        &links,
        "qsub",
        &["-o", "/nonexistent/x.out", "--", "/bin/echo", "kept"],
    );
    let lost = lost.ok().trim().to_string();
    let number: u64 = lost.split('.').next().unwrap().parse().unwrap();
    c.completed(number);
    let full = run(&c, &links, "qstat", &["-fx", &lost]);
    let kept = c.f.user.home.join(format!("{number}.OU"));
    let comment = format!(
        "and finished; output undelivered (cannot open /nonexistent/x.out as {TEST_USER}: \
         No such file or directory (os error 2)): kept in {}\n",
        kept.display()
    );
    assert!(full.ok().contains(&comment), "{}", full.stdout);
    let text = std::fs::read_to_string(&kept).unwrap();
    std::fs::remove_file(&kept).unwrap();
    assert!(
        text.starts_with("berth: cannot open /nonexistent/x.out")
            && text.ends_with(": this job's output is here instead\nkept\n"),
        "{text}"
    );
    let slash = run(&c, &links, "qsub", &["-N", "a/b", "pbs.sh"]);
    assert!(slash.stderr.contains("without '/'"), "{}", slash.stderr);
    let queue = run(&c, &links, "qstat", &["-Q", "nosuch"]);
    assert_eq!(
        (queue.code, queue.stderr.trim()),
        (170, "qstat: Unknown queue nosuch")
    );
    let queue = run(&c, &links, "qstat", &["-Qf", "normal"]);
    assert!(
        queue
            .ok()
            .starts_with("Queue: normal\n    queue_type = Execution\n"),
        "{}",
        queue.stdout
    );
    // Offline and back (root's).
    let node = dep_job["nodes"][0].as_str().unwrap();
    c.berth(Mode::Root, &["as", "pbsnodes", "-o", node, "-N", "disk"])
        .ok();
    let offline = run(&c, &links, "pbsnodes", &["-l"]);
    assert!(
        offline.ok().starts_with(&format!("{node} ")),
        "{}",
        offline.stdout
    );
    assert!(
        offline.stdout.contains(" offline ") && offline.stdout.contains("disk"),
        "{}",
        offline.stdout
    );
    c.berth(Mode::Root, &["as", "pbsnodes", "-c", node]).ok();
    assert_eq!(run(&c, &links, "pbsnodes", &["-l"]).ok(), "");
    // Two scripts are one too many.
    let two = run(&c, &links, "qsub", &["pbs.sh", "pbs.sh"]);
    assert!(
        two.stderr.contains("qsub takes one script"),
        "{}",
        two.stderr
    );
}

/// LSF's and PBS's commands on the PATH of a job's container, with the submitting host.
#[test]
fn lsf_and_pbs_commands_work_inside_a_job() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"#!/bin/sh
#BSUB -J outer
#BERTH --image busybox
inner=$(bsub -J inner -o inner.out echo nested)
echo "$inner"
qstat -f $PBS_JOBID | grep -E 'Job_Name|job_state'
bjobs -noheader -o "job_name stat" $LSB_JOBID
echo "submitted from $SLURM_SUBMIT_HOST $PBS_O_HOST $LSB_SUB_HOST"
"#;
    let id = c.submit(Mode::Rootless, "outer.sh", body, &[]);
    let job = c.completed(id);
    let out =
        std::fs::read_to_string(c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out"))).unwrap();
    let node = job["nodes"][0].as_str().unwrap();
    let inner = id + 1;
    assert_eq!(
        out,
        format!(
            "Job <{inner}> is submitted to default queue <normal>.\n    Job_Name = outer\n    job_state = R\nouter RUN\nsubmitted from {h} {h} {h}\n",
            h = host()
        ),
        "on {node}"
    );
    c.completed(inner);
    let text = std::fs::read_to_string(c.f.cwd(Mode::Rootless).join("inner.out")).unwrap();
    let (output, report) = lsf_output(&text);
    assert_eq!(output, "nested\n");
    assert!(report.contains("\n\nSuccessfully completed.\n"), "{report}");
}

/// blaunch in an LSF job: a command on each of its slots, or on the hosts named (rsh's
/// form, -z), its status the worst task's; a host not the job's is refused.
#[test]
fn blaunch_starts_tasks_on_the_jobs_hosts() {
    let Some(c) = Cluster::start() else { return };
    let body = r#"#!/bin/sh
#BSUB -n 2
#BERTH --image busybox
h=${LSB_HOSTS%% *}
blaunch -n 'echo "slot $SLURM_PROCID"' | sort
blaunch $h 'echo "one on $(hostname)"'
blaunch -z "$h $h" echo two
blaunch -no-shell $h sh -c 'exit 3'
echo "status=$?"
blaunch -z nosuchhost echo x 2>&1 | head -1
"#;
    let id = c.submit(Mode::Rootless, "launch.sh", body, &[]);
    let job = c.completed(id);
    let node = job["nodes"][0].as_str().unwrap();
    let out = c.f.cwd(Mode::Rootless).join(format!("berth-{id}.out"));
    assert_eq!(
        std::fs::read_to_string(out).unwrap(),
        format!(
            "slot 0\nslot 1\none on {node}\ntwo\ntwo\nstatus=3\nblaunch: -z takes the hosts of the job to run on\n"
        )
    );
}

/// A bsub job's output file: its output, and the job report LSF appends to it.
fn lsf_output(text: &str) -> (&str, &str) {
    let report =
        "\n------------------------------------------------------------\nSender: LSF System";
    text.split_once(report)
        .unwrap_or_else(|| panic!("no LSF job report: {text}"))
}

/// An administrator drains a node as Slurm's take it (`scontrol update NodeName=... State=DRAIN
/// Reason=...`), sees why with `sinfo -R`, and the drain outlives a controller killed and
/// started again; State=RESUME ends it. Users may not, and what berth does not do is refused.
#[test]
fn a_drain_with_its_reason_outlives_the_controller() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let nodes: serde_json::Value =
        serde_json::from_str(c.berth(Mode::Root, &["nodes", "--json"]).ok()).unwrap();
    let node = nodes[0]["name"].as_str().unwrap().to_string();
    let scontrol = |c: &Cluster, mode, args: &[&str]| {
        let mut all = vec!["as", "scontrol", "update"];
        all.extend_from_slice(args);
        c.berth(mode, &all)
    };
    let name = format!("NodeName={node}");
    let refused = scontrol(&c, Mode::Rootless, &[&name, "State=DRAIN", "Reason=mine"]);
    assert!(
        refused.code != 0 && refused.stderr.contains("only root"),
        "{}",
        refused.stderr
    );
    for (args, why) in [
        (&["State=DRAIN"][..], "needs a Reason="),
        (&["State=DOWN"][..], "State=DRAIN lets them finish"),
        (&["State=FUTURE"][..], "berth takes DRAIN"),
    ] {
        let mut all = vec![name.as_str()];
        all.extend_from_slice(args);
        let out = scontrol(&c, Mode::Root, &all);
        assert!(
            out.code != 0 && out.stderr.contains(why),
            "{args:?}: {}",
            out.stderr
        );
    }
    // A node with a job on it drains (sinfo -t drain: draining or drained), then is drained.
    let sleeper = c.submit(
        Mode::Rootless,
        "busy.sh",
        "#!/bin/sh\n#BERTH --image busybox\nsleep 300\n",
        &[],
    );
    c.wait_for(sleeper, &["RUNNING"]);
    scontrol(&c, Mode::Root, &[&name, "State=DRAIN", "Reason=new disks"]).ok();
    let in_state = |c: &Cluster, state: &str| {
        let sinfo = ["as", "sinfo", "-N", "-h", "-t", state, "-o", "%T %N"];
        c.berth(Mode::Rootless, &sinfo).ok().trim().to_string()
    };
    assert_eq!(in_state(&c, "drain"), format!("draining {node}"));
    assert_eq!(in_state(&c, "drained"), "");
    c.berth(Mode::Rootless, &["cancel", &sleeper.to_string()])
        .ok();
    c.wait_for(sleeper, &["CANCELLED"]);
    wait_until(
        20,
        || in_state(&c, "DRAIN") == format!("drained {node}"),
        || format!("not drained: {}", in_state(&c, "drain")),
    );
    let reasons = |c: &Cluster| {
        c.berth(Mode::Rootless, &["as", "sinfo", "-R"])
            .ok()
            .to_string()
    };
    let before = reasons(&c);
    let lines: Vec<&str> = before.lines().collect();
    assert_eq!(
        lines[0],
        "REASON               USER      TIMESTAMP           NODELIST"
    );
    assert_eq!(lines.len(), 2, "{before}");
    assert!(
        lines[1].starts_with("new disks            root      "),
        "{before}"
    );
    assert!(lines[1].ends_with(&format!(" {node}")), "{before}");
    // The same from sinfo's own fields (-R is `%E %u %H %N`); %A counts no node in use.
    let stamp = &lines[1][31..50];
    let fields = ["as", "sinfo", "-h", "-o", "%E|%u|%H|%A|%N"];
    assert_eq!(
        c.berth(Mode::Rootless, &fields).ok(),
        format!("new disks|root|{stamp}|0/0|{node}\n")
    );
    // Killed and started again: still drained, for the same reason, by the same hand.
    c.kill();
    c.up();
    assert_eq!(reasons(&c), before);
    let state = |c: &Cluster| {
        let nodes: serde_json::Value =
            serde_json::from_str(c.berth(Mode::Root, &["nodes", "--json"]).ok()).unwrap();
        nodes[0]["state"].as_str().unwrap().to_string()
    };
    assert_eq!(state(&c), "drained");
    // A job that must have it waits, saying so, as Slurm's.
    let waits = c.submit(Mode::Rootless, "waits.sh", TRUE_JOB, &["-w", &node]);
    let said = format!("ReqNodeNotAvail, UnavailableNodes:{node}");
    wait_until(
        10,
        || c.show(waits)["reason"] == said.as_str(),
        || c.show(waits).to_string(),
    );
    scontrol(&c, Mode::Root, &[&name, "State=RESUME"]).ok();
    c.completed(waits);
    assert_eq!(reasons(&c).lines().count(), 1);
    assert_eq!(state(&c), "idle");
}

/// A job that ends at once.
const TRUE_JOB: &str = "#!/bin/sh\n#BERTH --image busybox\ntrue\n";

/// Reservations as Slurm's administrators make them (`scontrol create reservation`): a
/// maintenance window ahead lets only the jobs run that end before it, its own wait for it;
/// one in force keeps its nodes for its users' jobs; deleting it frees them.
#[test]
fn reservations_keep_their_nodes_for_their_jobs() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let scontrol = |mode, args: &[&str]| {
        let mut all = vec!["as", "scontrol"];
        all.extend_from_slice(args);
        c.berth(mode, &all)
    };
    let maint = [
        "create",
        "reservation",
        "ReservationName=maint",
        "StartTime=now+1hour",
        "Duration=60",
        "Nodes=ALL",
        "Users=root",
        "Flags=MAINT",
    ];
    let refused = scontrol(Mode::Rootless, &maint);
    assert!(
        refused.code != 0 && refused.stderr.contains("only root"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        scontrol(Mode::Root, &maint).ok(),
        "Reservation created: maint\n"
    );
    let shown = scontrol(Mode::Rootless, &["show", "reservation"]);
    let shown = shown.ok();
    assert!(
        shown.starts_with("ReservationName=maint StartTime="),
        "{shown}"
    );
    assert!(shown.contains(" Duration=01:00:00\n"), "{shown}");
    assert!(
        shown.contains(" Flags=MAINT\n") && shown.contains("Users=root "),
        "{shown}"
    );
    assert!(shown.contains(" State=INACTIVE "), "{shown}");
    let overlapping = scontrol(
        Mode::Root,
        &[
            "create",
            "res",
            "ReservationName=x",
            "StartTime=now+90minutes",
            "Duration=10",
            "Users=root",
        ],
    );
    assert!(
        overlapping
            .stderr
            .contains("share nodes with reservation maint"),
        "{}",
        overlapping.stderr
    );

    let short = c.submit(Mode::Rootless, "short.sh", TRUE_JOB, &["-t", "10"]);
    c.wait_for(short, &["COMPLETED"]);
    let long = c.submit(Mode::Rootless, "long.sh", TRUE_JOB, &["-t", "120"]);
    let mine = c.submit(
        Mode::Root,
        "mine.sh",
        TRUE_JOB,
        &["-t", "10", "--reservation=maint"],
    );
    let not_mine = c.try_submit(Mode::Rootless, "x.sh", TRUE_JOB, &["--reservation=maint"]);
    assert!(
        not_mine.stderr.contains("reservation maint is for root"),
        "{}",
        not_mine.stderr
    );
    // Waits until job `id` waits for one of `why` (a blocked job behind another blocked one
    // of higher priority waits for Priority rather than Resources).
    let reason = |id: u64, why: &[&str]| {
        for _ in 0..100 {
            let job = c.show(id);
            if why.iter().any(|w| job["reason"] == *w) {
                return job;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("job {id} is not waiting for {why:?}: {}", c.show(id));
    };
    // The long job would run into the window: it waits until the window ends.
    let job = reason(long, &["Resources"]);
    let end = c.show(long)["expected_start"].as_u64();
    assert!(end.is_some(), "{job}");
    reason(mine, &["Reservation"]);

    // Not over a running job that may still run at its start, unless told to.
    let sleeper = "#!/bin/sh\n#BERTH --image busybox\nexec sleep 600\n";
    let running = c.submit(Mode::Rootless, "sleeper.sh", sleeper, &["-t", "5"]);
    c.wait_for(running, &["RUNNING"]);
    let now = |name: &str, flags: &str| {
        let args = [
            "create",
            "res",
            name,
            "StartTime=now",
            "Duration=10",
            "Users=root",
            flags,
        ];
        scontrol(Mode::Root, &args)
    };
    let busy = now("ReservationName=busy", "Flags=MAINT");
    assert!(
        busy.code != 0
            && busy
                .stderr
                .contains(&format!("the nodes are busy: job {running} runs on "))
            && busy.stderr.contains("Flags=IGNORE_JOBS"),
        "{}",
        busy.stderr
    );
    assert_eq!(
        now("ReservationName=busy", "Flags=MAINT,IGNORE_JOBS").ok(),
        "Reservation created: busy\n"
    );
    scontrol(Mode::Root, &["delete", "reservation", "busy"]).ok();
    c.berth(Mode::Rootless, &["cancel", &running.to_string()])
        .ok();
    c.wait_for(running, &["CANCELLED"]);

    // In force now, for the test user: their job runs, root's other jobs wait.
    scontrol(
        Mode::Root,
        &[
            "create",
            "reservation",
            "ReservationName=course",
            "StartTime=now",
            "Duration=30",
            "Users=berthtest",
        ],
    )
    .ok();
    // Its idle node is reserved to sinfo.
    let states = c.berth(Mode::Rootless, &["as", "sinfo", "-h", "-o", "%t"]);
    assert_eq!(states.ok(), "resv\n");
    // The same by --Format's names.
    let named = ["as", "sinfo", "-h", "-O", "Partition:8|,StateCompact:.6"];
    assert_eq!(c.berth(Mode::Rootless, &named).ok(), "normal* |  resv\n");
    let theirs = c.submit(
        Mode::Rootless,
        "theirs.sh",
        TRUE_JOB,
        &["-t", "5", "--reservation=course"],
    );
    c.wait_for(theirs, &["COMPLETED"]);
    let other = c.submit(Mode::Root, "other.sh", TRUE_JOB, &["-t", "5"]);
    reason(other, &["Resources", "Priority"]);
    let listed = c.berth(Mode::Rootless, &["as", "sinfo", "-T", "-h"]);
    let names: Vec<&str> = listed
        .ok()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["course", "maint"], "{}", listed.stdout);
    scontrol(Mode::Root, &["delete", "ReservationName=course"]).ok();
    c.wait_for(other, &["COMPLETED"]);
    // The window deleted: its job has nowhere to go; the long one runs.
    scontrol(Mode::Root, &["delete", "reservation", "maint"]).ok();
    reason(mine, &["ReservationDeleted"]);
    c.wait_for(long, &["COMPLETED"]);
    assert_eq!(
        scontrol(Mode::Root, &["show", "res"]).ok(),
        "No reservations in the system\n"
    );
    // Unnamed: named after its first user; UNLIMITED: a year; an unknown user or an end
    // past any date: refused, saying which.
    let year = [
        "create",
        "res",
        "StartTime=now+1day",
        "Duration=UNLIMITED",
        &format!("Users={TEST_USER}"),
    ];
    assert_eq!(
        scontrol(Mode::Root, &year).ok(),
        format!("Reservation created: {TEST_USER}_1\n")
    );
    let shown = scontrol(Mode::Root, &["show", "res"]);
    assert!(
        shown.ok().contains(" Duration=365-00:00:00\n"),
        "{}",
        shown.stdout
    );
    for (users, duration, says) in [
        ("nosuch", "10", "Users=nosuch: no such user"),
        ("root", "99999999999", "after the year 3000"),
    ] {
        let users = format!("Users={users}");
        let duration = format!("Duration={duration}");
        let args = [
            "create",
            "res",
            "StartTime=now+100weeks",
            duration.as_str(),
            users.as_str(),
        ];
        let refused = scontrol(Mode::Root, &args);
        assert!(
            refused.code == 1 && refused.stderr.contains(says),
            "{}",
            refused.stderr
        );
    }
}
