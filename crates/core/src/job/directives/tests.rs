use super::*;

fn script(text: &str) -> JobOptions {
    match parse_script(text) {
        Ok(p) => p.options,
        Err(e) => panic!("{e}"),
    }
}

fn request(text: &str) -> JobRequest {
    match JobRequest::from_script(text, JobOptions::default(), "job.sh") {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn error(text: &str) -> String {
    match parse_script(text) {
        Ok(p) => panic!("parsed: {:?}", p.options),
        Err(e) => e.to_string(),
    }
}

/// The LSF script of the thesis, as its users submitted it.
const THESIS_LSF: &str = r#"#!/bin/bash
#BSUB -n 8
#BSUB -W 00:05
#BSUB -J name
#BSUB -o job-%J.out
#BSUB -e job-%J.err

export APPLICATION=openfoam:2.3.0
COMMAND="blockMesh && icoFoam"
JOBDIR=$HOME/cavity
"#;

#[test]
fn thesis_lsf_script() {
    let parsed = parse_script(THESIS_LSF).unwrap();
    assert_eq!(parsed.families, vec![Family::Lsf]);
    let r = JobRequest::from_options(parsed.options, "job.sh").unwrap();
    assert_eq!(r.name, "name");
    assert_eq!(r.ntasks, 8);
    assert_eq!(r.nodes, NodeRange { min: 1, max: 8 });
    assert_eq!(r.time_limit, Some(300));
    assert_eq!(r.output, "job-%J.out");
    assert_eq!(r.error.as_deref(), Some("job-%J.err"));
    assert_eq!(r.open_mode, OpenMode::Append);
    assert_eq!(
        r.image,
        Some(ImageRef {
            name: "openfoam:2.3.0".into(),
            origin: ImageOrigin::Application { line: 8 },
        })
    );
    assert!(r.ignored.is_empty());
}

#[test]
fn slurm_script() {
    let o = script(
        "#!/bin/bash\n\
         # a plain comment\n\
         #SBATCH -N 2 --ntasks-per-node=4   # two nodes\n\
         #SBATCH --cpus-per-task 2 -t 1-12:00\n\
         #SBATCH -psmall -J 'my job' --mem=4G\n\
         \n\
         #SBATCH --output=out-%j.txt --error err-%j.txt --input=/dev/null\n\
         #SBATCH --part=big --array=1-10%2 -d afterok:41 --hold --requeue\n\
         #SBATCH --export=ALL,OMP_NUM_THREADS=2 --chdir=/scratch/a --gres=gpu:a100:2\n\
         #SBATCH --nice --account=proj1 --exclusive --open-mode=append\n\
         srun ./app\n",
    );
    assert_eq!(o.nodes, Some(NodeRange { min: 2, max: 2 }));
    assert_eq!(o.ntasks_per_node, Some(4));
    assert_eq!(o.cpus_per_task, Some(2));
    assert_eq!(o.time_limit, Some(86_400 + 12 * 3600));
    assert_eq!(o.name.as_deref(), Some("my job"));
    assert_eq!(o.memory, Some(Memory::PerNode(4 << 30)));
    assert_eq!(o.output.as_deref(), Some("out-%j.txt"));
    assert_eq!(o.error.as_deref(), Some("err-%j.txt"));
    assert_eq!(o.input.as_deref(), Some("/dev/null"));
    // A later option overrides an earlier one, as in sbatch; --part abbreviates --partition.
    assert_eq!(o.partition.as_deref(), Some("big"));
    assert_eq!(
        o.array.as_ref().map(|a| a.to_string()).as_deref(),
        Some("1-10%2")
    );
    assert_eq!(o.dependencies.as_ref().map(|d| d.jobs[0].job), Some(41));
    assert_eq!(
        (o.hold, o.requeue, o.exclusive),
        (Some(true), Some(true), Some(true))
    );
    let export = o.export.clone().unwrap();
    assert!(export.all);
    assert_eq!(export.vars[0].value.as_deref(), Some("2"));
    assert_eq!(o.workdir.as_deref(), Some("/scratch/a"));
    assert_eq!(
        o.gpus,
        Some(GpuRequest {
            count: 2,
            scope: GpuScope::Node,
            model: Some("a100".into())
        })
    );
    assert_eq!(o.nice, Some(100));
    assert_eq!(o.account.as_deref(), Some("proj1"));
    assert_eq!(o.open_mode, Some(OpenMode::Append));

    let r = JobRequest::from_options(o, "job.sh").unwrap();
    assert_eq!((r.ntasks, r.total_cpus()), (8, 16));
}

#[test]
fn slurm_values() {
    let o = script("#SBATCH --mem 2048 --nodes=2-4 -n8 --gpus=v100:3\n");
    assert_eq!(o.memory, Some(Memory::PerNode(2048 << 20)));
    // --mem=0: all of each node's memory.
    for zero in ["0", "0G"] {
        let o = script(&format!("#SBATCH --mem={zero}\n"));
        assert_eq!(o.memory, Some(Memory::WholeNode));
    }
    assert_eq!(o.nodes, Some(NodeRange { min: 2, max: 4 }));
    assert_eq!(o.ntasks, Some(8));
    assert_eq!(
        o.gpus.as_ref().map(|g| (g.count, g.scope)),
        Some((3, GpuScope::Job))
    );
    let o = script("#SBATCH --mem-per-cpu=500K --export=NONE --gres=gpu --nice=-5\n");
    assert_eq!(o.memory, Some(Memory::PerCpu(500 << 10)));
    assert_eq!(o.export, Some(Export::none()));
    assert_eq!(o.gpus.as_ref().map(|g| g.count), Some(1));
    assert_eq!(o.nice, Some(-5));
    let o = script("#SBATCH --export=A,B=x\n");
    assert_eq!(o.export.map(|e| (e.all, e.vars.len())), Some((false, 2)));
    let o = script("#SBATCH --gpus-per-task=1 --workdir=/w --no-requeue\n");
    assert_eq!(o.gpus.map(|g| g.scope), Some(GpuScope::Task));
    assert_eq!(o.requeue, Some(false));
    // --tres-per-task: CPUs and GPUs per task, as --cpus-per-task and --gpus-per-task.
    let o = script("#SBATCH --tres-per-task=cpu:4,gres/gpu:a100:2\n");
    assert_eq!(o.cpus_per_task, Some(4));
    let g = o.gpus.unwrap();
    assert_eq!(
        (g.count, g.scope, g.model.as_deref()),
        (2, GpuScope::Task, Some("a100"))
    );
    let o = script("#SBATCH --tres-per-task=gres/gpu=1\n");
    assert_eq!(
        o.gpus.map(|g| (g.count, g.scope)),
        Some((1, GpuScope::Task))
    );
    let e = JobRequest::from_script(
        "#SBATCH --tres-per-task=license/x:1\n",
        Default::default(),
        "j",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cpu:N or gres/gpu[:MODEL]:N"), "{e}");
}

/// sbatch's "no limit" (`-t 0`, `UNLIMITED`, `INFINITE`) asks for none of the job's own and
/// not the partition's default either; a limit on the command line still overrides it, and
/// it overrides the script's.
#[test]
fn no_time_limit_is_asked_for_as_sbatch_spells_it() {
    for none in ["0", "UNLIMITED", "infinite"] {
        let r = request(&format!("#!/bin/sh\n#SBATCH -t {none}\n"));
        assert_eq!((r.time_limit, r.no_time_limit), (None, true), "{none}");
    }
    let plain = request("#!/bin/sh\n");
    assert_eq!((plain.time_limit, plain.no_time_limit), (None, false));
    let over = |script: &str, cli: &[&str]| {
        let cli: Vec<String> = cli.iter().map(|s| s.to_string()).collect();
        let r = JobRequest::from_script(script, parse_args(&cli).unwrap(), "job.sh").unwrap();
        (r.time_limit, r.no_time_limit)
    };
    assert_eq!(
        over("#!/bin/sh\n#SBATCH -t UNLIMITED\n", &["-t", "10"]),
        (Some(600), false)
    );
    assert_eq!(
        over("#!/bin/sh\n#SBATCH -t 10\n", &["-t", "0"]),
        (None, true)
    );
}

#[test]
fn errors_carry_line_and_directive() {
    assert_eq!(
        error("#!/bin/sh\n#SBATCH -n 4\n#SBATCH --time=abc\n"),
        "line 3: #SBATCH --time=abc: invalid time limit 'abc': expected MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
    );
    assert_eq!(
        error("#SBATCH -n 4 --bogus=1\n"),
        "line 1: #SBATCH --bogus=1: unknown #SBATCH option '--bogus'"
    );
    assert_eq!(
        error("#SBATCH -n\n"),
        "line 1: #SBATCH -n: option '-n' needs a value"
    );
    assert_eq!(
        error("#BSUB -J \"my job\n"),
        "line 1: #BSUB -J \"my job: unterminated quote"
    );
    assert_eq!(
        error("#PBS -l nodes=2:ppn=0\n"),
        "line 1: #PBS -l nodes=2:ppn=0: invalid ppn '0': expected a positive integer"
    );
    assert!(error("#SBATCH --hold=yes\n").contains("takes no value"));
    assert!(error("#SBATCH -n 0\n").contains("invalid task count '0'"));
    assert!(error("#SBATCH stray\n").contains("unexpected argument 'stray'"));
    assert!(error("#SBATCH --n=3\n").contains("unknown #SBATCH option")); // ambiguous
    assert!(error("#SBATCH --mem=-4G\n").contains("invalid memory size '-4G'"));
    assert!(error("#SBATCH --array=10-1\n").contains("ranges that go up"));
    assert!(error("#SBATCH --array=1-10:0\n").contains("step of at least 1"));
    assert!(error("#SBATCH -d afterok:1?afterok:2,afterok:3\n").contains("one separator"));
    assert!(error("#SBATCH -d afterok:abc\n").contains("invalid dependency 'afterok:abc'"));
    assert!(error("#SBATCH --gres=craynetwork:1\n").contains("not supported"));
    assert!(error("#SBATCH --bind=/a\n").contains("unknown #SBATCH option")); // #BERTH only
    assert!(error("#BSUB -R \"frob[x]\"\n").contains("not supported"));
    assert!(error("#BSUB -w \"post_done(1)\"\n").contains("not supported"));
    assert!(error("#PBS -l foo=1\n").contains("not supported"));
    assert!(error("#PBS -w /tmp\n").contains("unknown #PBS option '-w'"));
    assert!(error("#BERTH --bind=/a:b:ro\n").contains("invalid bind"));
}

#[test]
fn directives_stop_at_the_first_command() {
    let p = parse_script(
        "#!/bin/bash\n\
         #SBATCH -n 2\n\
         \n\
         module load foo\n\
         #SBATCH -n 64\n\
         #SBATCH --time=bad\n",
    )
    .unwrap();
    assert_eq!(p.options.ntasks, Some(2));
    assert_eq!(p.options.time_limit, None);
    let lines: Vec<Option<usize>> = p.options.ignored.iter().map(|i| i.line).collect();
    assert_eq!(lines, vec![Some(5), Some(6)]);
    assert!(p.options.ignored[0]
        .reason
        .contains("after the first command"));

    // Not directives: indented, other case, glued to a word.
    let o = script("  #SBATCH -n 3\n#sbatch -n 4\n#SBATCHX -n 5\n##SBATCH -n 6\n");
    assert_eq!(o.ntasks, None);
}

#[test]
fn cli_overrides_directives() {
    let cli = parse_args(&[
        "-n",
        "16",
        "--time=10",
        "--image",
        "alpine:3",
        "--bind=/data:/data:ro",
    ])
    .unwrap();
    assert_eq!(cli.image.as_ref().map(|i| i.origin), Some(ImageOrigin::Cli));
    let r = JobRequest::from_script(THESIS_LSF, cli, "job.sh").unwrap();
    assert_eq!(r.ntasks, 16);
    assert_eq!(r.time_limit, Some(600));
    assert_eq!(r.name, "name");
    assert_eq!(r.image.map(|i| i.name).as_deref(), Some("alpine:3"));
    assert_eq!(r.binds, vec!["/data:/data:ro"]);

    let err = parse_args(&["--time", "soon"]).unwrap_err().to_string();
    assert!(
        err.starts_with("--time soon: invalid time limit 'soon'"),
        "{err}"
    );
    assert!(parse_args(&["--nope"]).is_err());
    assert!(parse_args(&["job.sh"]).is_err());
}

#[test]
fn berth_directives_and_image_precedence() {
    let r = request(
        "#!/bin/sh\n\
         #BERTH --image=ubuntu:24.04 -B /lustre/scratch --bind /data:/in:ro\n\
         #BERTH -n 4 --mem-per-cpu=1G\n\
         export APPLICATION=openfoam:2.3.0\n",
    );
    assert_eq!(
        r.image,
        Some(ImageRef {
            name: "ubuntu:24.04".into(),
            origin: ImageOrigin::Directive { line: 2 }
        })
    );
    assert_eq!(r.binds, vec!["/lustre/scratch", "/data:/in:ro"]);
    assert_eq!(r.memory_on_node(4), Some(4 << 30));
}

#[test]
fn application_lines() {
    let image = |text: &str| script(text).image.map(|i| (i.name, i.origin));
    assert_eq!(
        image("#!/bin/sh\necho hi\nAPPLICATION=\"tf:2\"\n"),
        Some(("tf:2".into(), ImageOrigin::Application { line: 3 }))
    );
    assert_eq!(
        image("export APPLICATION='a:1' COMMAND=run\n").map(|i| i.0),
        Some("a:1".into())
    );
    // Comments, commands mentioning it and command-scoped assignments do not count.
    assert_eq!(image("# export APPLICATION=x:1\n"), None);
    assert_eq!(image("echo APPLICATION=x:1\n"), None);
    assert_eq!(image("APPLICATION=x:1 ./run\n"), None);
    // The same value twice is fine; two different images are not.
    assert!(image("APPLICATION=a:1\nAPPLICATION=a:1\n").is_some());
    assert!(error("APPLICATION=a:1\nexport APPLICATION=b:2\n")
        .starts_with("line 2: export APPLICATION=b:2: invalid job: APPLICATION was already set to 'a:1' on line 1"));
    assert!(error("APPLICATION=$IMG\n").contains("literal image name"));
    assert!(error("export APPLICATION=$(cat image.txt)\n").contains("literal image name"));
}

/// A count of no GPUs asks for none, as Slurm takes it (`--gres=gpu:0  # GPU count`).
#[test]
fn no_gpus_is_none() {
    for line in [
        "--gres=gpu:0",
        "--gpus=0",
        "--gpus-per-node=0",
        "--gpus-per-task=v100:0",
    ] {
        assert_eq!(script(&format!("#SBATCH {line}\n")).gpus, None, "{line}");
    }
    assert_eq!(script("#SBATCH --gpus=2 --gres=gpu:0\n").gpus, None);
}

/// LSF takes a value written straight after its option, as Sanger's scripts write them.
#[test]
fn lsf_values_attached_to_their_options() {
    let o = script("#BSUB -M1000\n#BSUB -W30\n#BSUB -n4 -Jfoo -R\"span[hosts=1]\"\n");
    assert_eq!(o.memory, Some(Memory::PerCpu(1000 << 20)));
    assert_eq!(o.time_limit, Some(30 * 60));
    assert_eq!((o.ntasks, o.name.as_deref()), (Some(4), Some("foo")));
    assert_eq!(o.nodes.map(|n| n.max), Some(1));
}

#[test]
fn lsf_options() {
    let o = script(
        "#BSUB -J \"sweep[1-100:2]%5\"\n\
         #BSUB -n 16 -R \"span[ptile=4] rusage[mem=4096]\" -M 8GB\n\
         #BSUB -q normal -P physics -oo out.%J.%I -eo err.%J.%I -i in.txt\n\
         #BSUB -w \"done(42) && ended(43)\" -H -x -r -cwd /scratch\n\
         #BSUB -gpu \"num=2:mode=exclusive_process:gmodel=TeslaV100\"\n\
         #BSUB -u me@example.org -B -N -R \"order[ut]\"\n",
    );
    assert_eq!(o.name.as_deref(), Some("sweep"));
    let a = o.array.clone().unwrap();
    assert_eq!((a.len(), a.step(), a.max_running), (50, 2, Some(5)));
    assert_eq!((o.ntasks, o.ntasks_per_node), (Some(16), Some(4)));
    // -M comes after rusage and wins; bare numbers are MB, units are accepted.
    assert_eq!(o.memory, Some(Memory::PerCpu(8 << 30)));
    assert_eq!(o.partition.as_deref(), Some("normal"));
    assert_eq!(o.account.as_deref(), Some("physics"));
    assert_eq!(o.open_mode, Some(OpenMode::Truncate));
    assert_eq!(o.error.as_deref(), Some("err.%J.%I"));
    assert_eq!(o.error_open_mode, Some(OpenMode::Truncate));
    // LSF's symbols are %J and %I alone: any other % is as written.
    let literal = script("#BSUB -o p_%J_%I_%j_%x.out -e 100%\n");
    assert_eq!(literal.output.as_deref(), Some("p_%J_%I_%%j_%%x.out"));
    assert_eq!(literal.error.as_deref(), Some("100%%"));
    // Each file its own: -oo overwrites the output, -e appends to the errors.
    let each = script("#BSUB -oo o -e e\n");
    assert_eq!(
        (each.open_mode, each.error_open_mode),
        (Some(OpenMode::Truncate), Some(OpenMode::Append))
    );
    assert_eq!(o.dependencies.as_ref().map(|d| d.jobs.len()), Some(2));
    assert_eq!(
        (o.hold, o.exclusive, o.requeue),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(o.workdir.as_deref(), Some("/scratch"));
    assert_eq!(
        o.gpus,
        Some(GpuRequest {
            count: 2,
            scope: GpuScope::Node,
            model: Some("TeslaV100".into())
        })
    );
    let ignored: Vec<&str> = o.ignored.iter().map(|i| i.option.as_str()).collect();
    assert_eq!(ignored, vec!["-R order[ut]"]);
    // -B and -N: mail when it begins and ends, to -u's address.
    let mail = o.mail.clone().unwrap();
    assert!(mail.begin && mail.end && !mail.fail, "{mail:?}");
    assert_eq!(
        o.mail_to.as_deref(),
        Some(&["me@example.org".to_string()][..])
    );
    let r = JobRequest::from_options(o, "j").unwrap();
    assert_eq!(r.nodes, NodeRange { min: 4, max: 4 });
    assert_eq!(r.output, "out.%J.%I");

    let o = script("#BSUB -n 4 -R \"span[hosts=1]\" -M 2048 -J \"[1-3]\"\n");
    assert_eq!(o.nodes, Some(NodeRange { min: 1, max: 1 }));
    assert_eq!(o.memory, Some(Memory::PerCpu(2048 << 20)));
    assert_eq!((o.name, o.array.map(|a| a.len())), (None, Some(3)));
    // A slot range gets its least; LSF's host selection, projects and profiles are ignored.
    let o = script(
        "#BSUB -n 2,4 -R \"select[mem>4000] same[type] rusage[mem=100:duration=10]\"\n\
         #BSUB -G lab -app big -sla gold -E /bin/true -Ep /bin/true -We 10 -Jd about -L /bin/sh\n\
         #BSUB -R \"type==any\"\n",
    );
    assert_eq!(o.ntasks, Some(2));
    assert_eq!(o.memory, Some(Memory::PerCpu(100 << 20)));
    assert_eq!(o.ignored.len(), 10, "{:?}", o.ignored);
    // -Jd: the job's description, kept as its comment.
    assert_eq!(o.comment.as_deref(), Some("about"));
    assert!(error("#BSUB -J \"a[1-3\"\n").contains("invalid job array"));
    // LSF's indices start at 1.
    assert!(error("#BSUB -J \"a[0-3]\"\n").contains("indices of 1 and more"));
    assert!(error("#BSUB -W 1:30:00\n").contains("[HH:]MM"));
}

#[test]
fn pbs_torque() {
    let p = parse_script(
        "#!/bin/bash\n\
         #PBS -N cavity\n\
         #PBS -l nodes=2:ppn=4,walltime=01:30:00\n\
         #PBS -l pmem=2gb,vmem=16gb\n\
         #PBS -j oe -o login1:/home/u/out.log -e ignored.err\n\
         #PBS -q batch -t 1-10%2 -W depend=afterok:42.server:43\n\
         #PBS -V -v DATA=/lustre,MODE -d /scratch -A proj -r n -h\n\
         #PBS -m abe -M u@example.org -S /bin/bash\n\
         cd $PBS_O_WORKDIR\n",
    )
    .unwrap();
    assert_eq!(p.families, vec![Family::Pbs]);
    let r = JobRequest::from_options(p.options, "job.sh").unwrap();
    assert_eq!(r.name, "cavity");
    assert_eq!(r.nodes, NodeRange { min: 2, max: 2 });
    assert_eq!(
        (r.ntasks, r.ntasks_per_node, r.cpus_per_task),
        (8, Some(4), 1)
    );
    assert_eq!(r.time_limit, Some(5400));
    assert_eq!(r.memory, Some(Memory::PerCpu(2 << 30)));
    assert_eq!(r.output, "/home/u/out.log");
    assert_eq!(r.error, None, "-j oe joins stderr into the output file");
    assert_eq!(r.partition.as_deref(), Some("batch"));
    assert_eq!(
        r.array.as_ref().map(|a| a.to_string()).as_deref(),
        Some("1-10%2")
    );
    assert_eq!(
        r.dependencies
            .jobs
            .iter()
            .map(|d| d.job)
            .collect::<Vec<_>>(),
        vec![42, 43]
    );
    assert!(r.export.all);
    assert_eq!(r.export.vars.len(), 2);
    assert_eq!(r.workdir.as_deref(), Some("/scratch"));
    assert_eq!(r.account.as_deref(), Some("proj"));
    assert_eq!((r.requeue, r.hold), (Some(false), true));
    let ignored: Vec<(Option<usize>, &str)> = r
        .ignored
        .iter()
        .map(|i| (i.line, i.option.as_str()))
        .collect();
    assert_eq!(ignored, vec![(Some(4), "-l vmem=16gb")]);
    assert_eq!(r.shell.as_deref(), Some("/bin/bash"));
    // -m abe: mail when it aborts, begins and ends, to -M's address.
    assert!(r.mail.begin && r.mail.end && r.mail.fail);
    assert_eq!(r.mail_to, ["u@example.org"]);
}

#[test]
fn pbs_pro() {
    let o = script(
        "#PBS -l select=2:ncpus=8:mpiprocs=4:mem=16gb:ngpus=1\n\
         #PBS -l place=scatter:excl -J 0-15:4 -lwalltime=3600\n",
    );
    assert_eq!(o.nodes, Some(NodeRange { min: 2, max: 2 }));
    assert_eq!(
        (o.ntasks, o.ntasks_per_node, o.cpus_per_task),
        (Some(8), Some(4), Some(2))
    );
    assert_eq!(o.memory, Some(Memory::PerNode(16 << 30)));
    assert_eq!(
        o.gpus.as_ref().map(|g| (g.count, g.scope)),
        Some((1, GpuScope::Node))
    );
    assert_eq!(o.exclusive, Some(true));
    assert_eq!(o.array.map(|a| a.indices()), Some(vec![0, 4, 8, 12]));
    assert_eq!(o.time_limit, Some(3600));

    let o = script("#PBS -l ncpus=12,mem=24gb,ngpus=2\n");
    assert_eq!((o.ntasks, o.cpus_per_task), (Some(1), Some(12)));
    assert_eq!(o.memory, Some(Memory::PerJob(24 << 30)));
    assert_eq!(o.gpus.map(|g| g.scope), Some(GpuScope::Job));
    assert_eq!(script("#PBS -l procs=6\n").ntasks, Some(6));
    // -v alone exports only what it names, as qsub.
    assert_eq!(script("#PBS -v A\n").export.map(|e| e.all), Some(false));

    // Ranks that cannot share a chunk's CPUs alike: one CPU each, the node all of them.
    let o = script("#PBS -l select=2:ncpus=3:mpiprocs=2\n");
    assert_eq!(
        (o.ntasks, o.ntasks_per_node, o.cpus_per_task, o.min_cpus),
        (Some(4), Some(2), Some(1), Some(3))
    );
    // More ranks than CPUs: they share the chunk's CPUs, overcommitted.
    let o = script("#PBS -l select=1:ncpus=2:mpiprocs=4\n");
    assert_eq!(
        (o.ntasks, o.cpus_per_task, o.min_cpus, o.overcommit),
        (Some(4), Some(1), Some(2), Some(true))
    );
    assert!(error("#PBS -l select=1:ncpus=2+1:ncpus=4\n").contains("not supported"));
    // -v's values may hold commas, quoted.
    let o = script("#PBS -v \"A=1,B='x,y',C=3\"\n");
    let vars: Vec<(String, Option<String>)> = (o.export.unwrap().vars.into_iter())
        .map(|v| (v.name, v.value))
        .collect();
    let var = |n: &str, v: &str| (n.to_string(), Some(v.to_string()));
    assert_eq!(vars, [var("A", "1"), var("B", "x,y"), var("C", "3")]);
    // -S's first shell; PBS Pro's ^array_index^ in output names.
    let o = script("#PBS -S /bin/csh@h1,/bin/sh@h2 -J 1-2 -o out_^array_index^.log\n");
    assert_eq!(o.shell.as_deref(), Some("/bin/csh"));
    assert_eq!(o.output.as_deref(), Some("out_%a.log"));
    assert!(error("#PBS -S bash\n").contains("an absolute path"));
    // place=pack: every chunk on one node, with what each chunk asked of its node.
    let packed = request("#PBS -l place=pack\n#PBS -l select=3:ncpus=2:mem=1gb:ngpus=1\n");
    assert_eq!(
        (packed.nodes, packed.ntasks, packed.ntasks_per_node),
        (NodeRange { min: 1, max: 1 }, 3, None)
    );
    assert_eq!(packed.memory, Some(Memory::PerNode(3 << 30)));
    assert_eq!(packed.gpus.map(|g| g.count), Some(3));
    assert!(error("#PBS -l place=frob\n").contains("place=pack, scatter"));
    // PBS Pro's default for select, place=free: several chunks on a node where they fit,
    // what a chunk asked of its node asked per CPU and per rank.
    let free = request("#PBS -l select=4:ncpus=2:mpiprocs=2:mem=2gb:ngpus=2\n");
    assert_eq!(
        (
            free.nodes,
            free.ntasks,
            free.ntasks_per_node,
            free.cpus_per_task
        ),
        (NodeRange { min: 1, max: 4 }, 8, None, 1)
    );
    assert_eq!(free.memory, Some(Memory::PerCpu(1 << 30)));
    assert_eq!(
        free.gpus.map(|g| (g.count, g.scope)),
        Some((1, GpuScope::Task))
    );
    // Scattered where asked, for Torque's nodes=, and where a chunk's CPUs do not divide
    // among its ranks: a node each.
    for scattered in [
        "#PBS -l select=4:ncpus=2:mpiprocs=2\n#PBS -l place=scatter\n",
        "#PBS -l nodes=4:ppn=2\n",
        "#PBS -l select=4:ncpus=3:mpiprocs=2\n",
    ] {
        let r = request(scattered);
        assert_eq!(
            (r.nodes, r.ntasks_per_node),
            (NodeRange { min: 4, max: 4 }, Some(2)),
            "{scattered}"
        );
    }
    assert!(error("#PBS -W frob=x\n").contains("depend="));
}

/// What sites' PBS scripts say (NCI Gadi, Torque node properties, PBS Pro's models and
/// ompthreads): taken where berth has its counterpart, warned of where it has none.
#[test]
fn pbs_as_sites_write_it() {
    let o = script(
        "#PBS -P n74 -q normal@gadi -l wd -l jobfs=1GB,storage=scratch/y57 -k oe -j eo\n\
         #PBS -W umask=022 -W group_list=grp -p 10\n\
         #PBS -l nodes=2:ppn=8:avx:gen2\n",
    );
    assert_eq!(o.account.as_deref(), Some("n74"));
    assert_eq!(o.partition.as_deref(), Some("normal"));
    assert_eq!(o.join, Some(Join::IntoError));
    assert_eq!(o.umask, Some(0o22));
    assert_eq!(o.nodes, Some(NodeRange { min: 2, max: 2 }));
    assert_eq!(
        o.constraint,
        Some(vec![vec!["avx".to_string(), "gen2".to_string()]])
    );
    let ignored: Vec<&str> = o.ignored.iter().map(|i| i.option.as_str()).collect();
    assert_eq!(
        ignored,
        [
            "-l jobfs=1GB",
            "-l storage=scratch/y57",
            "-k oe",
            "-W group_list=grp",
            "-p 10"
        ]
    );
    let o = script("#PBS -l nodes=node01:ppn=4\n");
    assert_eq!(o.nodelist, Some(vec!["node01".to_string()]));
    let o = script("#PBS -l select=1:ncpus=4:ompthreads=4:model=has\n");
    assert_eq!(o.constraint, Some(vec![vec!["has".to_string()]]));
    assert_eq!(o.omp_threads, Some(4));
    // PBS Pro's default: each rank's CPUs (ncpus / mpiprocs); -l ncpus=N is one chunk of N;
    // Torque's nodes= sets none. (A default: the job's exported OMP_NUM_THREADS wins.)
    let omp = |text: &str| script(text).omp_threads;
    assert_eq!(omp("#PBS -l select=2:ncpus=8:mpiprocs=2\n"), Some(4));
    assert_eq!(omp("#PBS -l ncpus=6\n"), Some(6));
    assert_eq!(omp("#PBS -l nodes=2:ppn=4\n"), None);
    assert_eq!(omp("#PBS -l select=1:ncpus=8:ompthreads=2\n"), Some(2));
}

/// What sites' LSF scripts say (Summit's -nnodes and -alloc_flags, limits, -env): taken
/// where berth has its counterpart, warned of where it has none.
#[test]
fn lsf_as_sites_write_it() {
    let o = script(
        "#BSUB -nnodes 27 -alloc_flags smt1 -C 0 -sp 12 -W 10/host\n\
         #BSUB -env \"all,X=1\" -U resv1\n",
    );
    assert_eq!(o.nodes, Some(NodeRange { min: 27, max: 27 }));
    assert_eq!(o.time_limit, Some(600));
    assert_eq!(o.reservation.as_deref(), Some("resv1"));
    let export = o.export.unwrap();
    assert!(export.all && export.vars[0].name == "X");
    let ignored: Vec<&str> = o.ignored.iter().map(|i| i.option.as_str()).collect();
    assert_eq!(ignored, ["-alloc_flags smt1", "-C 0", "-sp 12"]);
    let compound = script("#BSUB -n 4 -R \"1*{span[hosts=1]}\"\n");
    assert_eq!(compound.nodes, Some(NodeRange { min: 1, max: 1 }));
    let none = script("#BSUB -env none\n").export.unwrap();
    assert!(!none.all && none.vars.is_empty());
    // IBM's forms: a value with commas in quotes; all but ~NAME.
    let quoted = script("#BSUB -env \"TEST='A, B', Y=2\"\n").export.unwrap();
    assert_eq!(quoted.vars[0].value.as_deref(), Some("A, B"));
    assert_eq!(quoted.vars[1].value.as_deref(), Some("2"));
    let but = script("#BSUB -env \"all, ~A, ~B\"\n").export.unwrap();
    assert!(but.all && but.except == ["A", "B"]);
    let env = [("A".into(), "1".into()), ("C".into(), "3".into())];
    assert_eq!(
        but.select(&env, |_| false),
        [("C".to_string(), "3".to_string())]
    );
    assert!(parse_script("#!/bin/sh\n#BSUB -env \"~A\"\n").is_err());
}

#[test]
fn mixed_families() {
    let p = parse_script(
        "#!/bin/bash\n#BSUB -n 4\n#SBATCH --time=5\n#PBS -N mixed\n#BERTH --image=alpine\n",
    )
    .unwrap();
    assert_eq!(
        p.families,
        vec![Family::Lsf, Family::Slurm, Family::Pbs, Family::Berth]
    );
    let o = p.options;
    assert_eq!(
        (o.ntasks, o.time_limit, o.name.as_deref()),
        (Some(4), Some(300), Some("mixed"))
    );
}

#[test]
fn words_split_like_a_shell() {
    let w = |s: &str| split_words(s).unwrap();
    assert_eq!(
        w(r#" -J "a b" -o 'c d' e\ f"#),
        vec!["-J", "a b", "-o", "c d", "e f"]
    );
    assert_eq!(w(r#"-J "say \"hi\"" # note"#), vec!["-J", "say \"hi\""]);
    assert_eq!(w("-o out#1"), vec!["-o", "out#1"]);
    assert_eq!(split_words("'open"), Err(JobError::UnterminatedQuote));
}

#[test]
fn request_serialises_for_the_controller() {
    let r = request(THESIS_LSF);
    let json = serde_json::to_string(&r).unwrap();
    let back: JobRequest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert!(
        json.contains(r#""origin":{"from":"application","line":8}"#),
        "{json}"
    );
}

#[test]
fn warning_signals() {
    let warn = |text: &str| request(text).signal;
    let w = |signal, before, target| {
        Some(WarnSignal {
            signal,
            before,
            target,
        })
    };
    assert_eq!(warn("#SBATCH -t 10\n"), None);
    for (text, want) in [
        (
            "#SBATCH --signal=B:USR1@120\n",
            w(10, 120, SignalTarget::Batch),
        ),
        ("#SBATCH --signal=SIGUSR2\n", w(12, 60, SignalTarget::Steps)),
        ("#SBATCH --signal=R:10@0\n", w(10, 0, SignalTarget::Steps)),
        (
            "#SBATCH --signal RB:TERM@5\n",
            w(15, 5, SignalTarget::Batch),
        ),
        // bsub: the signal and the time in two options, the time in [HOURS:]MINUTES.
        (
            "#BSUB -wa 'USR1' -wt '1:30'\n",
            w(10, 5400, SignalTarget::Job),
        ),
    ] {
        assert_eq!(warn(text), want, "{text}");
    }
    // The command line's --signal replaces the script's whole.
    let cli = parse_args(&["--signal=B:USR2@7"]).unwrap();
    let r = JobRequest::from_script("#BSUB -wa USR1 -wt 5\n", cli, "j").unwrap();
    assert_eq!(r.signal, w(12, 7, SignalTarget::Batch));
    let e = parse_args(&["--signal=USR1@70000"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 65535 seconds"), "{e}");

    for bad in [
        "--signal=B:FOO",
        "--signal=X:USR1",
        "--signal=USR1@soon",
        "--signal=0",
        "--signal=:USR1",
    ] {
        let e = error(&format!("#SBATCH {bad}\n"));
        assert!(e.contains("[{R|B}:]SIGNAL[@SECONDS]"), "{bad}: {e}");
    }
    assert!(error("#BSUB -wa CHKPNT\n").contains("a signal, e.g. USR1"));
    let half = |text: &str| {
        JobRequest::from_script(text, JobOptions::default(), "j")
            .unwrap_err()
            .to_string()
    };
    assert!(half("#BSUB -wa USR1\n").contains("needs its time before the time limit"));
    assert!(half("#BSUB -wt 5\n").contains("needs the signal to send"));
}

#[test]
fn hints_berth_does_not_need_are_ignored_and_requirements_it_cannot_meet_refused() {
    let o = script(
        "#SBATCH --hint=nomultithread -m block:cyclic --threads-per-core=1 --wckey=x\n\
         #SBATCH --cpu-freq=high --profile=task --acctg-freq=30 --switches=1 --time-min=10\n\
         #SBATCH --get-user-env --propagate=STACK -k --spread-job --contiguous -s -Q\n\
         #SBATCH --kill-on-invalid-dep=yes --kill-on-invalid-dep=no --exclusive=user -B 2:8:1\n",
    );
    let ignored: Vec<&str> = o.ignored.iter().map(|i| i.option.as_str()).collect();
    assert_eq!(ignored.len(), 18, "{ignored:?}");
    // --exclusive=user: the nodes whole, which is more than it asks.
    assert_eq!(o.exclusive, Some(true));
    // bmod -wn: no dependency condition.
    let none = script("#BSUB -wn\n").dependencies.unwrap();
    assert!(none.is_empty());
    // bmod -Wn: no run limit.
    assert_eq!(
        script("#BSUB -Wn\n").time_limit,
        Some(crate::job::UNLIMITED_TIME)
    );
    // LSF's shared resources (rusage) are licenses too.
    let lsf = request("#BSUB -R \"rusage[mem=100:matlab=2]\"\n");
    assert_eq!(lsf.licenses, [("matlab".to_string(), 2)]);
    let lsf = request("#BSUB -R \"rusage[matlab=1:duration=10, ansys=1]\"\n");
    assert_eq!(
        lsf.licenses,
        [("matlab".to_string(), 1), ("ansys".to_string(), 1)]
    );
    assert!(error("#BSUB -R \"rusage[matlab=0]\"\n").contains("expected NAME[:COUNT]"));
    // Licenses: counted once a name.
    let licensed = request("#SBATCH -L matlab:2,ansys,matlab\n");
    assert_eq!(
        licensed.licenses,
        [("matlab".to_string(), 3), ("ansys".to_string(), 1)]
    );
    // (The last one: the job stays when its dependency can never be satisfied.)
    assert!(
        JobRequest::from_options(o.clone(), "j")
            .unwrap()
            .keep_invalid_dep
    );
    assert!(o.ignored[0].reason.contains("places the tasks itself"));
    for (directive, why) in [
        ("--constraint=[a|b]", "counts, brackets and parentheses"),
        ("-C a&&b", "invalid constraint"),
        ("--nodelist=n[1-2", "invalid node list"),
        ("-w ./hosts", "not a file"),
        ("-L matlab:0", "expected NAME[:COUNT]"),
        ("-L a|b", "any one of several licenses"),
        ("--licenses=,x", "expected NAME[:COUNT]"),
    ] {
        let e = error(&format!("#SBATCH {directive}\n"));
        assert!(
            e.contains(why) && e.starts_with("line 1:"),
            "{directive}: {e}"
        );
    }
}

#[test]
fn begin_times_in_each_family() {
    let begin = |text: &str| request(text).begin;
    assert_eq!(
        begin("#SBATCH --begin=now+1hour\n"),
        Some(BeginTime::AfterSubmit(3600))
    );
    assert_eq!(
        begin("#SBATCH -b 2027-03-01T08:05\n"),
        parse_slurm_begin("2027-03-01T08:05").ok()
    );
    assert_eq!(
        begin("#BSUB -b 5:2:9:00\n"),
        parse_lsf_begin("5:2:9:00").ok()
    );
    assert_eq!(
        begin("#PBS -a 01021630\n"),
        parse_pbs_begin("01021630").ok()
    );
    let e = error("#!/bin/sh\n#SBATCH --begin=soon\n");
    assert!(
        e.starts_with("line 2:") && e.contains("invalid begin time"),
        "{e}"
    );
}

#[test]
fn waiting_for_the_end() {
    assert!(!request("#SBATCH -n 1\n").wait);
    for text in [
        "#SBATCH --wait\n",
        "#SBATCH -W\n",
        "#BSUB -K\n",
        "#PBS -W block=true\n",
    ] {
        assert!(request(text).wait, "{text}");
    }
    assert!(!request("#PBS -W block=false\n").wait);
    assert!(error("#PBS -W stagein=x\n").contains("-W block=true|false"));
}

#[test]
fn constraints_and_node_lists() {
    let r = request("#SBATCH -C 'intel&ib|amd' -n 3 -w n[1-2] -x n9,login\n");
    assert_eq!(r.constraint, [vec!["intel", "ib"], vec!["amd"]]);
    assert_eq!(r.nodelist, ["n1", "n2"]);
    assert_eq!(r.exclude, ["n9", "login"]);
    // Slurm's older comma for "and".
    assert_eq!(
        request("#SBATCH --constraint=a,b\n").constraint,
        [vec!["a", "b"]]
    );
    let e = JobRequest::from_script("#SBATCH -w n[1-3]\n", JobOptions::default(), "j")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("3 nodes are named (--nodelist) but the job runs on at most 1"),
        "{e}"
    );
}

#[test]
fn sbatch_input_environment_variables() {
    let env = [
        ("SBATCH_PARTITION", "debug"),
        ("SBATCH_TIMELIMIT", "10"),
        ("SBATCH_ACCOUNT", "physics"),
        ("SBATCH_EXCLUSIVE", "user"),
        ("SBATCH_HINT", "nomultithread"),
        ("SBATCH_CLUSTERS", "elsewhere"),
        ("SBATCH_OUTPUT", "out-%j.log"),
        ("SBATCH_ERROR", "err-%j.log"),
        ("SBATCH_INPUT", "in.txt"),
        ("HOME", "/home/u"),
    ];
    let o = parse_env(&env).unwrap();
    assert_eq!(o.partition.as_deref(), Some("debug"));
    let files = (o.output.as_deref(), o.error.as_deref(), o.input.as_deref());
    assert_eq!(
        files,
        (Some("out-%j.log"), Some("err-%j.log"), Some("in.txt"))
    );
    assert_eq!(o.time_limit, Some(600));
    assert_eq!(o.account.as_deref(), Some("physics"));
    assert_eq!(o.exclusive, Some(true));
    assert_eq!(o.ignored.len(), 1);
    assert_eq!(o.ignored[0].option, "SBATCH_HINT=nomultithread");
    // The script's directives, then the environment, then the command line.
    let cli = JobOptions::merge(o, parse_args(&["-t", "5"]).unwrap());
    let r = JobRequest::from_script("#SBATCH -p batch -t 20 -J mine\n", cli, "j").unwrap();
    assert_eq!(
        (r.partition.as_deref(), r.time_limit),
        (Some("debug"), Some(300))
    );
    assert_eq!(r.name, "mine");
    let e = parse_env(&[("SBATCH_TIMELIMIT", "soon")])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("SBATCH_TIMELIMIT=soon: invalid time limit"),
        "{e}"
    );
}

#[test]
fn memory_options_are_mutually_exclusive_in_one_place() {
    let e = parse_args(&["--mem=1G", "--mem-per-cpu=100M"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--mem and --mem-per-cpu are mutually exclusive"),
        "{e}"
    );
    assert!(JobRequest::from_script(
        "#SBATCH --mem-per-gpu=1G --mem=2G\n",
        JobOptions::default(),
        "j"
    )
    .is_err());
    // The same one twice: the last; the command line's over the script's.
    let o = parse_args(&["--mem=1G", "--mem=2G"]).unwrap();
    assert_eq!(o.memory, Some(Memory::PerNode(2 << 30)));
    let cli = parse_args(&["--mem-per-cpu=100M"]).unwrap();
    let r = JobRequest::from_script("#SBATCH --mem=2G\n", cli, "j").unwrap();
    assert_eq!(r.memory, Some(Memory::PerCpu(100 << 20)));
}

#[test]
fn memory_per_gpu() {
    let r = request("#SBATCH --gpus-per-node=2 --mem-per-gpu=4G\n");
    assert_eq!(r.memory, Some(Memory::PerGpu(4 << 30)));
    assert_eq!(r.memory_on_node(1), Some(8 << 30));
    let e = JobRequest::from_script("#SBATCH --mem-per-gpu=4G\n", JobOptions::default(), "j")
        .unwrap_err()
        .to_string();
    assert!(e.contains("--mem-per-gpu needs GPUs"), "{e}");
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bsub_and_qsub_command_lines() {
    // bsub's options end at the command; its own flags stay its own.
    let line = words(&["-n", "4", "-Is", "-J", "x[1-3]", "ls", "-n", "1"]);
    let (options, end) = leading_options(Family::Lsf, &line).unwrap();
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    assert_eq!((names, end), (vec!["n", "Is", "J"], 5));
    assert_eq!(options[2].1, ["-J", "x[1-3]"]);
    // qsub: getopt letters, values attached or not, `--` before a command.
    let line = words(&["-lnodes=2:ppn=1", "-N", "a", "-I", "--", "sleep", "1"]);
    let (options, end) = leading_options(Family::Pbs, &line).unwrap();
    assert_eq!(options.len(), 3);
    assert_eq!(&line[end..], ["sleep", "1"]);
    let (options, end) = leading_options(Family::Pbs, &words(&["job.sh", "-N", "x"])).unwrap();
    assert_eq!((options.len(), end), (0, 0));
    // Unknown options and missing values name the command.
    let e = leading_options(Family::Lsf, &words(&["-frob", "x"])).unwrap_err();
    assert_eq!(e.to_string(), "-frob: unknown bsub option '-frob'");
    assert!(leading_options(Family::Pbs, &words(&["-N"])).is_err());

    let o = parse_args_as(
        Family::Lsf,
        &words(&["-n", "2", "-q", "short", "-m", "h[1-2] h5"]),
    )
    .unwrap();
    assert_eq!((o.ntasks, o.partition.as_deref()), (Some(2), Some("short")));
    assert_eq!(o.candidates, Some(words(&["h1", "h2", "h5"])));
    assert_eq!(o.preferred, Some(Vec::new()));
    // A directory (a trailing `/`): LSF's JOBID.out and JOBID.err there.
    let o = parse_args_as(Family::Lsf, &words(&["-o", "logs/", "-eo", "/tmp/e/"])).unwrap();
    assert_eq!(o.output.as_deref(), Some("logs/%J.out"));
    assert_eq!(o.error.as_deref(), Some("/tmp/e/%J.err"));
    let o = parse_args_as(Family::Lsf, &words(&["-m", "h1+2 h[2-3]+1 h4"])).unwrap();
    assert_eq!(o.candidates, Some(words(&["h1", "h2", "h3", "h4"])));
    let preferred = [("h1", 2), ("h2", 1), ("h3", 1)].map(|(h, n)| (h.to_string(), n));
    assert_eq!(o.preferred, Some(preferred.to_vec()));
    // `others`: any other host too, after those.
    let o = parse_args_as(Family::Lsf, &words(&["-m", "h1+1 others"])).unwrap();
    assert_eq!(o.candidates, Some(Vec::new()));
    assert_eq!(o.preferred, Some(vec![("h1".to_string(), 1)]));
    for bad in ["h1+x", "!h1", "~h1"] {
        assert!(
            parse_args_as(Family::Lsf, &words(&["-m", bad])).is_err(),
            "{bad}"
        );
    }
    let o = parse_args_as(
        Family::Pbs,
        &words(&["-l", "walltime=1:00", "-W", "depend=afterok:4.srv"]),
    )
    .unwrap();
    assert_eq!(o.time_limit, Some(60));
    assert_eq!(o.dependencies.unwrap().jobs[0].job, 4);
    // What only the command itself takes is refused in a script.
    let e = error("#!/bin/sh\n#BSUB -Is\ntrue\n");
    assert!(
        e.contains("option of the bsub or qsub command itself"),
        "{e}"
    );
    let e = error("#!/bin/sh\n#PBS -I\ntrue\n");
    assert!(
        e.contains("option of the bsub or qsub command itself"),
        "{e}"
    );
}

/// enroot+pyxis's options, as its users write them in #SBATCH lines and on srun's and
/// sbatch's command lines: the job's image, binds, working directory and variables.
#[test]
fn pyxis_options_say_what_berth_options_say() {
    let r = request(
        "#!/bin/bash\n\
         #SBATCH --container-image=nvcr.io#nvidia/pytorch:23.10-py3\n\
         #SBATCH --container-mounts=/data:/data:ro+rprivate,/scratch\n\
         #SBATCH --container-workdir=/workspace --no-container-mount-home\n\
         #SBATCH --container-env=PATH,HF_HOME --container-writable --no-container-entrypoint\n\
         #SBATCH --container-name=train --container-readonly\n",
    );
    assert_eq!(r.image.unwrap().name, "nvcr.io/nvidia/pytorch:23.10-py3");
    assert_eq!(r.binds, ["/data:/data:ro", "/scratch:/scratch:rw"]);
    assert_eq!(r.container_workdir.as_deref(), Some("/workspace"));
    assert!(r.no_home);
    assert_eq!(r.host_env, ["PATH", "HF_HOME"]);
    assert_eq!(
        r.container_name,
        Some(ContainerName {
            name: "train".into(),
            mode: NameMode::Auto
        })
    );
    let ignored: Vec<&str> = r.ignored.iter().map(|i| i.option.as_str()).collect();
    assert_eq!(ignored, ["--container-readonly"]);
    assert!(!r.container_entrypoint);
    assert!(request("#!/bin/sh\n#SBATCH --container-entrypoint\n").container_entrypoint);
    assert!(!r.container_remap_root);
    assert_eq!(r.container_save, None);
    assert_eq!(
        request("#!/bin/sh\n#SBATCH --container-save=saved.sqsh\n").container_save,
        Some("saved.sqsh".into())
    );
    assert!(request("#!/bin/sh\n#SBATCH --container-remap-root\n").container_remap_root);
    assert!(
        !request("#!/bin/sh\n#SBATCH --container-remap-root\n#SBATCH --no-container-remap-root\n")
            .container_remap_root
    );

    assert_eq!(
        pyxis_image("docker://ubuntu:22.04").unwrap(),
        "ubuntu:22.04"
    );
    assert_eq!(pyxis_image("busybox").unwrap(), "busybox");
    // enroot's squashfs files, as paths: the submitting command uploads them.
    for file in ["/images/app.sqsh", "./app.sqsh", "app.sqsh"] {
        assert_eq!(pyxis_image(file).unwrap(), file);
    }
    for (directive, why) in [
        (
            "--container-image=alice@nvcr.io#nvidia/x",
            "registry user ('alice@')",
        ),
        ("--container-mounts=/a:/b:noexec", "mount flag 'noexec'"),
        ("--container-mounts=data:/data", "absolute paths"),
        ("--container-workdir=work", "an absolute path in the image"),
        ("--container-env=A=1", "names of variables"),
        ("--container-save=out/", "not a directory's"),
        (
            "--container-name=train:exec",
            "a job's own container is new",
        ),
        ("--container-name=../x", "not starting with '.'"),
    ] {
        let e = error(&format!("#SBATCH {directive}\n"));
        assert!(
            e.contains(why) && e.starts_with("line 1:"),
            "{directive}: {e}"
        );
    }
}

/// Shifter's options, as its users write them in #SBATCH lines: the job's image (its types),
/// volumes, and the site modules berth has none of.
#[test]
fn shifter_options_say_what_berth_options_say() {
    let r = request(
        "#!/bin/bash\n\
         #SBATCH --image=docker:lab/app:2.1 --module=none\n\
         #SBATCH --volume=\"/scratch/me/in:/input:ro;/scratch/me/out:/output\"\n\
         #SBATCH --volume=/data:/data:rec --module=gpu\n",
    );
    assert_eq!(r.image.unwrap().name, "lab/app:2.1");
    assert_eq!(
        r.binds,
        [
            "/scratch/me/in:/input:ro",
            "/scratch/me/out:/output:rw",
            "/data:/data:rw"
        ]
    );
    let ignored: Vec<&str> = r.ignored.iter().map(|i| i.option.as_str()).collect();
    assert_eq!(ignored, ["--module=gpu"]);
    for (value, name) in [
        ("docker:ubuntu:22.04", "ubuntu:22.04"),
        ("ubuntu:22.04", "ubuntu:22.04"),
        ("busybox", "busybox"),
        ("id:0123abcd", "sha256:0123abcd"),
        ("id:sha256:0123abcd", "sha256:0123abcd"),
    ] {
        assert_eq!(shifter_image(value).unwrap(), name, "{value}");
    }
    // berth's own --image on the command line reads Shifter's types alike.
    let cli = parse_args(&["--image", "docker:busybox"]).unwrap();
    assert_eq!(cli.image.map(|i| i.name).as_deref(), Some("busybox"));
    for (directive, why) in [
        (
            "--image=local:/",
            "Shifter's local: images are a site's own trees",
        ),
        (
            "--image=custom:/x",
            "upload a tarball of one into the cluster's store",
        ),
        ("--image=docker:", "invalid image name"),
        ("--image=id:xyz", "the hexadecimal id of an image"),
        ("--volume=/a", "SRC:DST[:ro] with absolute paths"),
        ("--volume=in:/input", "SRC:DST[:ro] with absolute paths"),
        ("--volume=/a:/b:perNodeCache=size=10G", "per-node cache"),
        ("--volume=/a:/b:slave", "volume flag 'slave'"),
    ] {
        let e = error(&format!("#SBATCH {directive}\n"));
        assert!(
            e.contains(why) && e.starts_with("line 1:"),
            "{directive}: {e}"
        );
    }
}

/// pyxis's `--container-name=NAME[:FLAG]`: the flags it has, names that are safe file names.
#[test]
fn container_names_and_their_flags() {
    for (text, name, mode) in [
        ("train", "train", NameMode::Auto),
        ("train:", "train", NameMode::Auto),
        ("a.b_c-1:auto", "a.b_c-1", NameMode::Auto),
        ("x:create", "x", NameMode::Create),
        ("x:exec", "x", NameMode::Exec),
        ("x:no_exec", "x", NameMode::NoExec),
    ] {
        let parsed = ContainerName::parse(text).unwrap();
        assert_eq!((parsed.name.as_str(), parsed.mode), (name, mode), "{text}");
    }
    let long = "n".repeat(129);
    for bad in ["", ":exec", ".hidden", "-x", "a/b", "..", "a b", &long] {
        let e = ContainerName::parse(bad).unwrap_err().to_string();
        assert!(e.contains("letters, digits"), "{bad}: {e}");
    }
    let e = ContainerName::parse("x:start").unwrap_err().to_string();
    assert!(e.contains("auto, create, exec or no_exec"), "{e}");
}

#[test]
fn overcommit_mincpus_and_ignore_pbs() {
    let r = request("#SBATCH -n 6 -O\n");
    assert!(r.overcommit);
    assert_eq!((r.cpus_on_node(6), r.total_cpus()), (1, 1));
    let r = request("#SBATCH -n 2 --mincpus=4\n");
    assert_eq!(
        (r.cpus_on_node(1), r.cpus_on_node(2), r.total_cpus()),
        (4, 4, 4)
    );
    // A script for two batch systems: with --ignore-pbs (in it, or on the command line),
    // its #PBS and #BSUB lines are not read, not even a bad one.
    let both = "#!/bin/sh\n#PBS -N other\n#PBS -l bogus=1\n#BSUB -J third\n#SBATCH -J mine\n";
    assert!(parse_script(both).is_err());
    let r = request(&format!("{both}#SBATCH --ignore-pbs\n"));
    assert_eq!(r.name, "mine");
    let skipped: Vec<Option<usize>> = r.ignored.iter().map(|i| i.line).collect();
    assert_eq!(skipped, [Some(2), Some(3), Some(4)]);
    assert!(r.ignored[0].reason.contains("--ignore-pbs"));
    let cli = JobOptions {
        ignore_pbs: Some(true),
        ..JobOptions::default()
    };
    let r = JobRequest::from_script(both, cli, "job.sh").unwrap();
    assert_eq!(r.name, "mine");
}

#[test]
fn options_berth_has_no_use_for_are_ignored_and_those_it_cannot_honour_refused() {
    let o = script("#SBATCH --tmp=10G -M other --prefer=fast --ntasks-per-socket=2\n");
    let ignored: Vec<(&str, &str)> = o
        .ignored
        .iter()
        .map(|i| (i.option.as_str(), i.reason.as_str()))
        .collect();
    assert_eq!(ignored.len(), 4, "{ignored:?}");
    assert!(ignored[0].1.contains("scratch disk"), "{ignored:?}");
    assert!(ignored[1].1.contains("one cluster"), "{ignored:?}");
    assert!(ignored[2].1.contains("a preference"), "{ignored:?}");
    assert!(
        ignored[3].1.contains("places the tasks itself"),
        "{ignored:?}"
    );
    assert!(error("#SBATCH --tmp=lots\n").contains("invalid memory size"));
    // Those of GPU and power-managed sites' scripts.
    let o = script(
        "#SBATCH --gres-flags=enforce-binding --delay-boot=10 --network=sn_all\n\
         #SBATCH --thread-spec=1 -S 2 --power=level --batch=ib\n",
    );
    assert_eq!(o.ignored.len(), 7, "{:?}", o.ignored);
    assert!(
        o.ignored[0].reason.contains("with its cores"),
        "{:?}",
        o.ignored
    );
    for (directive, why) in [
        ("--x11", "no X11"),
        ("--cpus-per-gpu=8", "CPUs per task (-c)"),
        ("--ntasks-per-gpu=1", "CPUs per task (-c)"),
        ("--gpus-per-socket=1", "--gpus-per-node"),
        ("--priority=100", "--nice=N"),
    ] {
        let e = error(&format!("#SBATCH {directive}\n"));
        assert!(
            e.starts_with("line 1:") && e.contains(directive) && e.contains(why),
            "{directive}: {e}"
        );
    }
}
