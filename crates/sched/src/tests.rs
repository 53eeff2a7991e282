//! Whole-pass tests: fixtures in, plan out, as Nomad's scheduler tests drive its `Harness`.

use crate::mock::{cluster, job, node, partition, GIB};
use crate::model::{Allocation, ClusterView, DepKind, JobId, JobState, JobView};
use crate::plan::{NodeAlloc, Outcome, Plan};
use crate::priority::Config;
use crate::reason::Reason;
use crate::schedule;

const NOW: u64 = 1000;

/// No priority factors: pure FIFO, and one reservation (EASY) unless a test asks for more.
fn fifo() -> Config {
    Config {
        weight_age: 0,
        weight_job_size: 0,
        weight_partition: 0,
        weight_fairshare: 0,
        reservations: 1,
        ..Config::default()
    }
}

/// Licenses are the cluster's: a job starts only when as many as it asks for are free (the
/// running jobs' held), and one waiting for them holds back no other job.
#[test]
fn licenses_are_counted_across_the_cluster() {
    let mut c = cluster(vec![node("a", 8, GIB), node("b", 8, GIB)]);
    c.licenses = [("matlab".to_string(), 3), ("ansys".to_string(), 1)].into();
    let jobs = [
        job(1).running().license("matlab", 1),
        job(2).submit(10).license("matlab", 3),
        job(3).submit(20).license("matlab", 2),
        job(4).submit(30).license("matlab", 1),
        job(5).submit(40),
        job(6).submit(50).license("ansys", 1).license("matlab", 1),
        job(7).submit(60).license("flexlm", 1),
    ];
    let p = schedule(&c, &jobs, NOW, &fifo());
    assert_eq!(started(&p), [3, 5]);
    for id in [2, 4, 6, 7] {
        assert_eq!(reason(&p, id), Some(Reason::Licenses), "job {id}");
    }
}

/// A user who used more than their share of the cluster waits behind one who did not,
/// whichever submitted first (Slurm's fair share); with shares that match their usage,
/// first come is first served again.
#[test]
fn fair_share_puts_the_lighter_user_first() {
    let mut c = cluster(vec![node("a", 1, GIB)]);
    c.usage = [("heavy".to_string(), 9000), ("light".to_string(), 1000)].into();
    let cfg = Config {
        weight_fairshare: 1000,
        ..fifo()
    };
    let jobs = [
        job(1).user("heavy").submit(10),
        job(2).user("light").submit(20),
    ];
    let p = schedule(&c, &jobs, NOW, &cfg);
    assert_eq!(started(&p), [2]);
    let fairshare = |id| p.get(id).unwrap().priority.fairshare;
    // 2^(-0.9/0.5) and 2^(-0.1/0.5), weighted.
    assert!((fairshare(1) - 1000.0 * 2f64.powf(-1.8)).abs() < 1e-9);
    assert!((fairshare(2) - 1000.0 * 2f64.powf(-0.2)).abs() < 1e-9);
    c.shares = [("heavy".to_string(), 9)].into();
    assert_eq!(started(&schedule(&c, &jobs, NOW, &cfg)), [1]);
}

fn run(c: &ClusterView, jobs: &[JobView]) -> Plan {
    schedule(c, jobs, NOW, &fifo())
}

fn started(p: &Plan) -> Vec<JobId> {
    p.starts().map(|(id, _)| id).collect()
}

fn nodes_of(p: &Plan, id: JobId) -> Vec<String> {
    let s = p.get(id).and_then(|d| d.start()).expect("job started");
    s.nodes.iter().map(|a| a.node.clone()).collect()
}

/// A started job's (node, tasks, CPUs), in the order it got them.
fn layout_of(p: &Plan, id: JobId) -> Vec<(&str, u32, u32)> {
    let s = p.get(id).and_then(|d| d.start()).expect("job started");
    let nodes = s.nodes.iter();
    nodes.map(|a| (a.node.as_str(), a.tasks, a.cpus)).collect()
}

fn reason(p: &Plan, id: JobId) -> Option<Reason> {
    p.get(id).and_then(|d| d.reason())
}

fn expected(p: &Plan, id: JobId) -> Option<u64> {
    match p.get(id).map(|d| &d.outcome) {
        Some(Outcome::Wait { expected_start, .. }) => *expected_start,
        _ => None,
    }
}

// ---- order ----

#[test]
fn fifo_within_equal_priority_by_submit_then_id() {
    let c = cluster(vec![node("n1", 2, GIB)]);
    let jobs = [
        job(5).submit(10),
        job(3).submit(20),
        job(4).submit(10),
        job(1).submit(30),
    ];
    let p = run(&c, &jobs);
    let order: Vec<JobId> = p.decisions.iter().map(|d| d.job).collect();
    assert_eq!(order, [4, 5, 3, 1]);
    assert_eq!(started(&p), [4, 5]);
    assert_eq!(reason(&p, 3), Some(Reason::Resources));
    assert_eq!(reason(&p, 1), Some(Reason::Priority));
}

#[test]
fn older_jobs_go_first_by_age() {
    let c = cluster(vec![node("n1", 1, GIB)]);
    let cfg = Config {
        weight_age: 1000,
        ..fifo()
    };
    // Job 2 was submitted earlier, so it is older: it wins although its id is larger.
    let p = schedule(&c, &[job(1).submit(900), job(2).submit(100)], NOW, &cfg);
    assert_eq!(started(&p), [2]);
    let d = p.get(2).expect("decided");
    assert!(d.priority.age > p.get(1).expect("decided").priority.age);
}

#[test]
fn nice_lowers_priority() {
    let c = cluster(vec![node("n1", 1, GIB)]);
    let cfg = Config {
        weight_age: 1000,
        ..fifo()
    };
    // Same age; job 1 is nicer to others.
    let p = schedule(&c, &[job(1).nice(100), job(2)], NOW, &cfg);
    assert_eq!(started(&p), [2]);
    assert_eq!(p.get(1).expect("decided").priority.nice, 100);
}

#[test]
fn partition_tier_beats_priority_and_factor_adds_to_it() {
    let c = cluster(vec![node("n1", 1, GIB)])
        .with(partition("urgent", &["n1"]).tier(1))
        .with(partition("high", &["n1"]).factor(10));
    let cfg = Config {
        weight_age: 1000,
        weight_partition: 1000,
        ..fifo()
    };
    // Job 1 is old and in a heavily weighted partition, but job 2's tier wins.
    let p = schedule(
        &c,
        &[
            job(1).partition("high").submit(0),
            job(2).partition("urgent").submit(NOW),
        ],
        NOW,
        &cfg,
    );
    assert_eq!(started(&p), [2]);
    // Within one tier, the partition factor counts.
    let p = schedule(
        &c,
        &[job(1).partition("batch"), job(2).partition("high")],
        NOW,
        &cfg,
    );
    assert_eq!(started(&p), [2]);
    assert_eq!(p.get(2).expect("decided").priority.partition, 1000.0);
}

#[test]
fn larger_jobs_first_by_default_smaller_when_favoured() {
    let c = cluster(vec![node("n1", 4, GIB)]);
    let jobs = [job(1).cpus(1), job(2).cpus(4)];
    let cfg = Config {
        weight_job_size: 1000,
        ..fifo()
    };
    assert_eq!(started(&schedule(&c, &jobs, NOW, &cfg)), [2]);
    let small = Config {
        favor_small: true,
        ..cfg
    };
    assert_eq!(started(&schedule(&c, &jobs, NOW, &small)), [1]);
}

// ---- resource matching ----

#[test]
fn best_fit_picks_the_fullest_node_that_fits_ties_by_name() {
    let c = cluster(vec![
        node("a", 8, 8 * GIB),
        node("b", 8, 8 * GIB).running(90, 6, 0, 5000),
        node("c", 8, 8 * GIB).running(91, 4, 0, 5000),
        node("d", 8, 8 * GIB).running(92, 6, 0, 5000),
    ]);
    let p = run(
        &c,
        &[
            job(1).cpus(2),
            job(2).cpus(2),
            job(3).cpus(3),
            job(4).cpus(2),
        ],
    );
    // b and d have 2 free: b first (name); then d; job 3 needs 3: c (4 free) over a (8).
    assert_eq!(nodes_of(&p, 1), ["b"]);
    assert_eq!(nodes_of(&p, 2), ["d"]);
    assert_eq!(nodes_of(&p, 3), ["c"]);
    // c has 1 left, too few: a.
    assert_eq!(nodes_of(&p, 4), ["a"]);
    // The input order of nodes and jobs does not matter.
    let mut shuffled = c.clone();
    shuffled.nodes.reverse();
    let q = run(
        &shuffled,
        &[
            job(4).cpus(2),
            job(3).cpus(3),
            job(2).cpus(2),
            job(1).cpus(2),
        ],
    );
    assert_eq!(p, q);
}

#[test]
fn memory_and_gpus_must_fit_too() {
    let c = cluster(vec![
        node("a", 8, 4 * GIB),
        node("b", 8, 64 * GIB),
        node("g", 8, 64 * GIB).gpus(4),
    ]);
    let p = run(
        &c,
        &[
            job(1).mem(32 * GIB),
            job(2).gpus(2),
            job(3).gpus(2),
            job(4).gpus(1),
        ],
    );
    assert_eq!(nodes_of(&p, 1), ["b"]);
    assert_eq!(nodes_of(&p, 2), ["g"]);
    assert_eq!(nodes_of(&p, 3), ["g"]);
    assert_eq!(reason(&p, 4), Some(Reason::Resources));
    let s = p.get(2).and_then(|d| d.start()).expect("started");
    assert_eq!(
        s.nodes,
        [NodeAlloc {
            node: "g".into(),
            cpus: 1,
            memory: 0,
            gpus: 2,
            tasks: 1
        }]
    );
}

#[test]
fn multi_node_jobs_spread_tasks_block_wise() {
    let c = cluster(vec![
        node("a", 4, GIB),
        node("b", 4, GIB),
        node("c", 4, GIB),
    ]);
    let p = run(
        &c,
        &[
            job(1).tasks(5).nodes(2).cpus(1),
            job(2).per_node(2).nodes(2),
        ],
    );
    assert_eq!(layout_of(&p, 1), [("a", 3, 3), ("b", 2, 2)]);
    // Job 2 needs 2 CPUs on 2 nodes: b has 2 left (best fit) and c 4; a has 1.
    assert_eq!(nodes_of(&p, 2), ["b", "c"]);
}

/// Tasks that do not divide evenly over a job's nodes need the most tasks' CPUs on some of
/// them only: `-N 2 -n 3` starts on a node with two CPUs free and one with one, the fuller
/// share on the node that has room for it, as Slurm places it.
#[test]
fn uneven_tasks_need_their_most_cpus_on_some_nodes_only() {
    let c = cluster(vec![
        node("a", 2, GIB).running(9, 1, 0, 5000),
        node("b", 2, GIB),
    ]);
    let p = run(&c, &[job(1).tasks(3).nodes(2)]);
    assert_eq!(layout_of(&p, 1), [("b", 2, 2), ("a", 1, 1)]);

    // With a say in its nodes too (the one it must have is the smaller), and exclusive
    // nodes of two sizes.
    let p = run(&c, &[job(1).tasks(3).nodes(2).nodelist(&["a"])]);
    assert_eq!(nodes_of(&p, 1), ["b", "a"]);
    let mixed = cluster(vec![node("a", 1, GIB), node("b", 2, GIB)]);
    let p = run(&mixed, &[job(1).tasks(3).nodes(2).exclusive()]);
    assert_eq!(nodes_of(&p, 1), ["b", "a"]);
    // Five tasks on three nodes: two nodes need two CPUs; one node has them.
    let c = cluster(vec![
        node("a", 2, GIB).running(9, 1, 0, 5000),
        node("b", 2, GIB).running(8, 1, 0, 5000),
        node("c", 2, GIB),
    ]);
    let p = run(&c, &[job(1).tasks(5).nodes(3)]);
    assert_eq!(reason(&p, 1), Some(Reason::Resources));
    // ... and its reservation is for when b's job ends (b and c for two tasks, a for one).
    assert_eq!(expected(&p, 1), Some(5000));
}

/// A cluster whose nodes are of two sizes takes at submission a job whose fuller share
/// fits the larger ones alone.
#[test]
fn uneven_tasks_fit_nodes_of_two_sizes() {
    let c = cluster(vec![
        node("a", 1, GIB),
        node("b", 2, GIB),
        node("c", 1, GIB),
    ]);
    let ok = |j: JobView| crate::fits_ever(&c, &j.request);
    assert_eq!(ok(job(1).tasks(3).nodes(2)), Ok(()));
    assert_eq!(ok(job(1).tasks(5).nodes(3)), Err(Reason::BadConstraints));
    assert_eq!(ok(job(1).tasks(4).nodes(3)), Ok(()));
}

/// A partition's CPUs per user count what each job holds (whole nodes for an exclusive
/// one, one task's for an overcommitted one); a job past its user's holds nothing back
/// from the others' behind it.
#[test]
fn a_users_cpu_cap_holds_their_jobs_back_and_no_one_elses() {
    let mut c = cluster(vec![node("a", 12, GIB).running(9, 2, 0, 5000)]);
    c.partitions[0] = c.partitions[0].clone().max_cpus_per_user(4);
    let jobs = [
        job(9).user("u").running(),
        job(1).user("u").submit(10).exclusive(),
        job(2).user("v").submit(20).cpus(4),
        job(3).user("u").submit(30).cpus(2),
        job(4).user("u").submit(40),
        job(5).user("u").submit(50).tasks(8).overcommit(),
        job(6).user("w").submit(60).cpus(2),
    ];
    let p = run(&c, &jobs);
    assert_eq!(reason(&p, 1), Some(Reason::QOSMaxCpuPerUserLimit));
    // 2 held + 2 = 4: starts; then 4 + 1 > 4 (twice); the others' start beside them.
    assert_eq!(started(&p), [2, 3, 6]);
    assert_eq!(reason(&p, 4), Some(Reason::QOSMaxCpuPerUserLimit));
    assert_eq!(reason(&p, 5), Some(Reason::QOSMaxCpuPerUserLimit));
}

#[test]
fn node_ranges_take_as_many_nodes_as_are_free() {
    let c = cluster(vec![
        node("a", 2, GIB),
        node("b", 2, GIB),
        node("c", 2, GIB).running(9, 2, 0, 5000),
    ]);
    let p = run(&c, &[job(1).nodes_range(1, 3).cpus(2)]);
    assert_eq!(nodes_of(&p, 1), ["a", "b"]);
}

#[test]
fn an_overcommitted_job_holds_one_tasks_cpus_on_each_node() {
    let c = cluster(vec![node("a", 2, GIB), node("b", 2, GIB)]);
    // Eight tasks on two CPUs: refused as they are, started overcommitted (a CPU on each
    // of two nodes, four tasks each), beside a job that takes the other CPU of each.
    let p = run(
        &c,
        &[
            job(1).tasks(8).nodes_range(2, 2),
            job(2).tasks(8).nodes_range(2, 2).overcommit(),
            job(3).tasks(2).nodes_range(2, 2),
        ],
    );
    assert!(p.get(1).and_then(|d| d.start()).is_none());
    let s = p.get(2).and_then(|d| d.start()).expect("started");
    let held: Vec<(u32, u32)> = s.nodes.iter().map(|n| (n.cpus, n.tasks)).collect();
    assert_eq!(held, [(1, 4), (1, 4)]);
    assert_eq!(nodes_of(&p, 3), ["a", "b"]);
}

#[test]
fn a_job_that_could_no_longer_end_by_its_deadline_is_not_started() {
    let c = cluster(vec![node("a", 4, GIB)]);
    let p = run(
        &c,
        &[
            // Time to spare; just in time; a second too late; too late and held, or
            // waiting for its begin time (it could not end in time whatever it waits for).
            job(1).time(600).deadline(NOW + 3600),
            job(2).time(600).deadline(NOW + 600),
            job(3).time(600).deadline(NOW + 599),
            job(4).time(600).deadline(NOW + 10).held(),
        ],
    );
    assert_eq!(started(&p), [1, 2]);
    assert_eq!(reason(&p, 3), Some(Reason::DeadLine));
    assert_eq!(p.past_deadline().collect::<Vec<_>>(), [3, 4]);
}

#[test]
fn exclusive_jobs_take_whole_idle_nodes() {
    let c = cluster(vec![
        node("a", 8, 8 * GIB).running(9, 1, 0, 5000),
        node("b", 16, 16 * GIB).gpus(2),
        node("c", 8, 8 * GIB),
    ]);
    let p = run(
        &c,
        &[
            job(1).exclusive().cpus(2),
            job(2).cpus(1),
            job(3).exclusive(),
        ],
    );
    // Smallest idle node first: c, whole.
    let s = p.get(1).and_then(|d| d.start()).expect("started");
    assert_eq!(
        s.nodes,
        [NodeAlloc {
            node: "c".into(),
            cpus: 8,
            memory: 8 * GIB,
            gpus: 0,
            tasks: 1
        }]
    );
    // Job 2 shares a, the only node with a job already (best fit: 7 free < 16).
    assert_eq!(nodes_of(&p, 2), ["a"]);
    // Job 3 gets b: idle, although larger.
    assert_eq!(nodes_of(&p, 3), ["b"]);
    // Nothing may share an exclusive job's node: every node is now full or taken.
    let p = run(
        &c,
        &[job(1).exclusive(), job(2).exclusive(), job(3).exclusive()],
    );
    assert_eq!(started(&p), [1, 2]);
    assert_eq!(reason(&p, 3), Some(Reason::Resources));
}

#[test]
fn a_job_with_all_of_a_nodes_memory_takes_a_node_whose_memory_is_free() {
    let c = cluster(vec![
        node("a", 8, 8 * GIB).running(9, 1, GIB, NOW + 5000),
        node("b", 8, 16 * GIB),
    ]);
    // --mem=0: not a, where a job holds some memory, but b, all of its memory; its CPUs
    // are still shared (a job without memory fits beside it, one with memory does not).
    let p = run(
        &c,
        &[
            job(1).whole_memory().cpus(2).time(100),
            job(2).cpus(1).time(100),
            job(3).cpus(1).mem(GIB).time(100),
        ],
    );
    let s = p.get(1).and_then(|d| d.start()).expect("started");
    assert_eq!(
        s.nodes,
        [NodeAlloc {
            node: "b".into(),
            cpus: 2,
            memory: 16 * GIB,
            gpus: 0,
            tasks: 1
        }]
    );
    assert!(started(&p).contains(&2), "{p:?}");
    assert_eq!(nodes_of(&p, 3), ["a"]);
    // With every node's memory partly taken it waits, planned for when a's job ends.
    let c = cluster(vec![
        node("a", 8, 8 * GIB).running(9, 1, GIB, NOW + 5000),
        node("b", 8, 16 * GIB).running(8, 1, GIB, NOW + 9000),
    ]);
    let p = run(&c, &[job(1).whole_memory().time(100)]);
    assert_eq!(reason(&p, 1), Some(Reason::Resources));
    assert_eq!(
        p.get(1).and_then(|d| d.expected_start(NOW)),
        Some(NOW + 5000)
    );
}

#[test]
fn down_drained_and_foreign_nodes_are_never_chosen() {
    let c = cluster(vec![
        node("a", 4, GIB).down(),
        node("b", 4, GIB).drain(),
        node("c", 4, GIB),
        node("d", 64, GIB),
    ]);
    let mut c = c;
    c.partitions[0].nodes = vec!["a".into(), "b".into(), "c".into()];
    let p = run(&c, &[job(1).cpus(4), job(2).cpus(1)]);
    assert_eq!(nodes_of(&p, 1), ["c"]);
    // a and b are out, d is in no partition of the job's: wait (c frees at some point).
    assert_eq!(reason(&p, 2), Some(Reason::Resources));
}

// ---- reasons ----

#[test]
fn every_pre_resource_reason() {
    let c = cluster(vec![node("a", 4, 8 * GIB), node("b", 4, 8 * GIB).down()])
        .with(partition("closed", &["a"]).down())
        .with(partition("short", &["a"]).max_time(60).max_nodes(1))
        .with(partition("gone", &["b"]))
        .finished(50, JobState::Failed);
    let jobs = [
        job(1).held(),
        JobView {
            begin: Some(NOW + 1),
            ..job(13)
        },
        JobView {
            begin: Some(NOW),
            ..job(14)
        },
        job(2).dep(DepKind::AfterOk, 99),
        job(3).dep(DepKind::AfterOk, 50),
        job(4).partition("closed"),
        job(5).partition("short").time(61),
        job(6).partition("short").nodes(2),
        job(7).nodes(3),
        job(8).cpus(5),
        job(9).partition("gone"),
        job(10).partition("nowhere"),
        job(11).array(30, 2, Some(1)),
        job(12).array(30, 1, Some(1)).running(),
        job(99),
    ];
    let p = run(&c, &jobs);
    let want = [
        (1, Reason::JobHeld),
        (13, Reason::BeginTime),
        (2, Reason::Dependency),
        (3, Reason::DependencyNeverSatisfied),
        (4, Reason::PartitionDown),
        (5, Reason::PartitionTimeLimit),
        (6, Reason::PartitionNodeLimit),
        (7, Reason::PartitionNodeLimit),
        (8, Reason::BadConstraints),
        (9, Reason::ReqNodeNotAvail),
        (10, Reason::BadConstraints),
        (11, Reason::JobArrayTaskLimit),
    ];
    for (id, r) in want {
        assert_eq!(reason(&p, id), Some(r), "job {id}");
        assert_eq!(r.to_string(), format!("{r:?}"));
    }
    // Job 14's begin time has come.
    assert_eq!(started(&p), [14, 99]);
    assert_eq!(p.never_satisfied().collect::<Vec<_>>(), [3]);
    // Running jobs get no decision.
    assert!(p.get(12).is_none());
}

/// `after:JOB+MINUTES`: a job waits until that long after the other job began (started,
/// or was cancelled before it did), and not while it is pending.
#[test]
fn a_delayed_after_waits_from_the_other_jobs_start() {
    let mut c = cluster(vec![node("a", 4, GIB)])
        .finished(50, JobState::Completed)
        .finished(51, JobState::Cancelled);
    c.since.insert(50, NOW - 300);
    c.since.insert(51, NOW - 30);
    let delayed = |id, on: JobId| {
        let mut j = job(id).dep(DepKind::After, on);
        j.dependencies[0].delay = 60;
        j
    };
    let p = run(&c, &[delayed(1, 50), delayed(2, 51), delayed(3, 4), job(4)]);
    // Job 50 began five minutes ago; 51 half a minute ago; 4 not at all (it starts in
    // this pass, but only now).
    assert_eq!(started(&p), [1, 4]);
    assert_eq!(reason(&p, 2), Some(Reason::Dependency));
    assert_eq!(reason(&p, 3), Some(Reason::Dependency));
    c.since.insert(51, NOW - 60);
    assert_eq!(started(&run(&c, &[delayed(2, 51)])), [2]);
}

#[test]
fn resources_for_the_first_blocked_job_priority_for_the_rest() {
    let c =
        cluster(vec![node("a", 4, GIB).running(9, 4, 0, 2000)]).with(partition("other", &["a"]));
    let p = run(
        &c,
        &[job(1).time(10), job(2).time(10), job(3).partition("other")],
    );
    assert_eq!(reason(&p, 1), Some(Reason::Resources));
    assert_eq!(expected(&p, 1), Some(2000));
    assert_eq!(reason(&p, 2), Some(Reason::Priority));
    // First blocked of its own partition.
    assert_eq!(reason(&p, 3), Some(Reason::Resources));
}

// ---- dependencies and arrays ----

#[test]
fn dependency_kinds_in_a_pass() {
    let c = cluster(vec![node("a", 64, GIB)])
        .finished(1, JobState::Completed)
        .finished(2, JobState::Failed)
        .finished(3, JobState::Cancelled);
    let jobs = [
        job(4).running(),
        job(5),
        job(10).dep(DepKind::After, 4),
        job(11).dep(DepKind::After, 5),
        job(12).dep(DepKind::AfterAny, 4),
        job(13).dep(DepKind::AfterAny, 2),
        job(14).dep(DepKind::AfterOk, 1),
        job(15).dep(DepKind::AfterOk, 2),
        job(16).dep(DepKind::AfterNotOk, 3),
        job(17).dep(DepKind::AfterNotOk, 1),
        job(18).dep(DepKind::AfterOk, 1).dep(DepKind::AfterAny, 4),
        // Any one of them (`?`): one that holds is enough; none that can, never.
        job(19)
            .dep(DepKind::AfterOk, 2)
            .dep(DepKind::AfterOk, 1)
            .any_dependency(),
        job(20)
            .dep(DepKind::AfterOk, 2)
            .dep(DepKind::AfterAny, 4)
            .any_dependency(),
        job(21)
            .dep(DepKind::AfterOk, 2)
            .dep(DepKind::AfterOk, 3)
            .any_dependency(),
    ];
    let p = run(&c, &jobs);
    assert_eq!(started(&p), [5, 10, 13, 14, 16, 19]);
    assert_eq!(reason(&p, 20), Some(Reason::Dependency));
    assert_eq!(reason(&p, 21), Some(Reason::DependencyNeverSatisfied));
    assert_eq!(
        reason(&p, 11),
        Some(Reason::Dependency),
        "after a pending job"
    );
    assert_eq!(
        reason(&p, 12),
        Some(Reason::Dependency),
        "afterany a running job"
    );
    assert_eq!(reason(&p, 15), Some(Reason::DependencyNeverSatisfied));
    assert_eq!(reason(&p, 17), Some(Reason::DependencyNeverSatisfied));
    assert_eq!(reason(&p, 18), Some(Reason::Dependency));
}

#[test]
fn singleton_waits_for_its_namesake() {
    let c = cluster(vec![node("a", 64, GIB)]);
    let jobs = [
        job(1).name("x").running(),
        job(2).name("x").singleton(),
        job(3).name("x").user("other").singleton(),
        job(4).name("y").singleton(),
        job(5).name("y").singleton(),
    ];
    let p = run(&c, &jobs);
    assert_eq!(reason(&p, 2), Some(Reason::Dependency));
    // Another user's job of the same name does not count; the first y starts, the second
    // then waits for it.
    assert_eq!(started(&p), [3, 4]);
    assert_eq!(reason(&p, 5), Some(Reason::Dependency));
}

#[test]
fn array_limit_counts_running_and_started_tasks() {
    let c = cluster(vec![node("a", 64, GIB)]);
    let mut jobs = vec![job(100).array(100, 0, Some(3)).running()];
    jobs.extend((1..=5).map(|i| job(100 + i).array(100, i as u32, Some(3))));
    jobs.push(job(200).array(200, 0, None));
    let p = run(&c, &jobs);
    assert_eq!(started(&p), [101, 102, 200]);
    for id in 103..=105 {
        assert_eq!(reason(&p, id), Some(Reason::JobArrayTaskLimit));
    }
}

// ---- backfill ----

/// a frees at 1100, b has 2 of 4 CPUs free until 1200, c has 2 free until 5000.
fn busy() -> ClusterView {
    cluster(vec![
        node("a", 4, GIB).running(90, 4, 0, 1100),
        node("b", 4, GIB).running(91, 2, 0, 1200),
        node("c", 4, GIB).running(92, 2, 0, 5000),
    ])
}

#[test]
fn top_job_gets_the_earliest_start_and_short_jobs_backfill() {
    // Job 1 needs two whole nodes: a at 1100, b at 1200 -> starts 1200 on a and b.
    let top = job(1).nodes(2).per_node(4).time(1000).submit(0);
    let short = job(2).cpus(2).time(200).submit(1); // ends 1200: does not delay job 1
    let long = job(3).cpus(2).time(201).submit(2); // ends 1201 on b: would delay job 1
    let p = run(&busy(), &[top.clone(), short.clone(), long.clone()]);
    assert_eq!(reason(&p, 1), Some(Reason::Resources));
    assert_eq!(expected(&p, 1), Some(1200));
    // Best fit puts job 2 on b (2 free, like c, but b sorts first): fine, it ends in time.
    assert_eq!(nodes_of(&p, 2), ["b"]);
    // Job 3 may not use b, but c is not in job 1's reservation: it runs there.
    assert_eq!(nodes_of(&p, 3), ["c"]);

    // Without c's spare CPUs, job 3 waits behind job 1.
    let mut full = busy();
    full.nodes[2].allocations[0].cpus = 4;
    let p = run(&full, &[top, short, long]);
    assert_eq!(started(&p), [2]);
    assert_eq!(reason(&p, 3), Some(Reason::Priority));
}

#[test]
fn jobs_may_use_what_the_reservation_leaves_over() {
    // Job 1 needs 3 CPUs on a at 1100 (a frees then); 1 of a's CPUs stays free for anyone.
    let c = cluster(vec![node("a", 4, GIB)
        .running(90, 2, 0, 1100)
        .running(91, 1, 0, 9000)]);
    let p = run(
        &c,
        &[
            job(1).cpus(3).time(100),
            job(2).cpus(1).time(50_000),
            job(3).cpus(1).time(50_000),
        ],
    );
    assert_eq!(expected(&p, 1), Some(1100));
    // At 1100 a has 3 free (job 91 holds 1): job 1's 3 leave 0. Nothing long fits.
    assert_eq!(reason(&p, 2), Some(Reason::Priority));

    let c = cluster(vec![node("a", 8, GIB).running(90, 6, 0, 1100)]);
    let p = run(
        &c,
        &[
            job(1).cpus(7).time(100),
            job(2).cpus(1).time(50_000),
            job(3).cpus(1).time(50_000),
        ],
    );
    // At 1100 a has 8 free, job 1 takes 7: one CPU is slack, job 2 takes it, job 3 may not.
    assert_eq!(expected(&p, 1), Some(1100));
    assert_eq!(started(&p), [2]);
    assert_eq!(reason(&p, 3), Some(Reason::Priority));
}

#[test]
fn jobs_without_a_time_limit_plan_with_the_partition_default() {
    let mut c = busy();
    c.partitions[0].default_time = Some(150);
    c.nodes[2].allocations[0].cpus = 4;
    let p = run(
        &c,
        &[job(1).nodes(2).per_node(4).time(1000), job(2).cpus(2)],
    );
    let s = p.get(2).and_then(|d| d.start()).expect("backfilled");
    assert_eq!(s.end, NOW + 150);
    // With a longer default it would delay job 1.
    c.partitions[0].default_time = Some(500);
    let p = run(
        &c,
        &[job(1).nodes(2).per_node(4).time(1000), job(2).cpus(2)],
    );
    assert_eq!(reason(&p, 2), Some(Reason::Priority));
    // One that asked for no limit (`-t UNLIMITED`) plans with the partition's maximum, not
    // its short default: it would delay job 1, so it waits.
    c.partitions[0].default_time = Some(150);
    c.partitions[0].max_time = Some(1500);
    let mut unlimited = job(2).cpus(2);
    unlimited.request.no_time_limit = true;
    let p = run(&c, &[job(1).nodes(2).per_node(4).time(1000), unlimited]);
    assert_eq!(reason(&p, 2), Some(Reason::Priority));
}

#[test]
fn easy_protects_one_job_more_reservations_protect_more() {
    // One node. Job 1 (4 CPUs) can start at 1100, job 2 (4 CPUs) after job 1, at 1600.
    let c = cluster(vec![node("a", 4, GIB).running(90, 2, 0, 1100)]);
    let jobs = [
        job(1).cpus(4).time(500).submit(0),
        job(2).cpus(4).time(500).submit(1),
        // Ends at 1101, still running when job 1 should start: waits.
        job(3).cpus(2).time(101).submit(2),
        // Ends 1050 < 1100: backfills.
        job(4).cpus(1).time(50).submit(3),
    ];
    let p = run(&c, &jobs);
    assert_eq!(expected(&p, 1), Some(1100));
    assert_eq!(
        expected(&p, 2),
        None,
        "EASY: only the first blocked job is planned"
    );
    assert_eq!(reason(&p, 3), Some(Reason::Priority));
    assert_eq!(started(&p), [4]);

    let cfg = Config {
        reservations: 2,
        ..fifo()
    };
    let p = schedule(&c, &jobs, NOW, &cfg);
    assert_eq!(expected(&p, 1), Some(1100));
    assert_eq!(expected(&p, 2), Some(1600));
    assert_eq!(reason(&p, 2), Some(Reason::Priority));
    assert_eq!(started(&p), [4]);
}

#[test]
fn second_reservation_protects_against_long_backfill() {
    // Two nodes. Job 1 needs a (frees 1100); job 2 needs b (frees 1300). With K=1 a job
    // that fits b's free CPUs now and runs long starts, delaying job 2; with K=2 it waits.
    let c = cluster(vec![
        node("a", 4, GIB).running(90, 4, 0, 1100),
        node("b", 4, GIB).running(91, 2, 0, 1300),
    ]);
    let jobs = [
        job(1).cpus(4).time(100_000).submit(0),
        job(2).cpus(4).time(100).submit(1),
        job(3).cpus(2).time(10_000).submit(2),
    ];
    let p = run(&c, &jobs);
    assert_eq!(expected(&p, 1), Some(1100));
    assert_eq!(started(&p), [3]);
    let cfg = Config {
        reservations: 2,
        ..fifo()
    };
    let p = schedule(&c, &jobs, NOW, &cfg);
    assert_eq!(expected(&p, 2), Some(1300));
    assert_eq!(started(&p), Vec::<JobId>::new());
    assert_eq!(reason(&p, 3), Some(Reason::Priority));
}

#[test]
fn reservation_waits_for_an_overlapping_reservation_to_end() {
    // Job 2 would fit on a at 1100 too, but only if job 1 (reserved first) were not there.
    let c = cluster(vec![node("a", 4, GIB).running(90, 4, 0, 1100)]);
    let cfg = Config {
        reservations: 3,
        ..fifo()
    };
    let jobs = [
        job(1).cpus(3).time(400),
        job(2).cpus(2).time(100),
        job(3).cpus(1).time(100),
    ];
    let p = schedule(&c, &jobs, NOW, &cfg);
    assert_eq!(expected(&p, 1), Some(1100));
    assert_eq!(expected(&p, 2), Some(1500));
    // Job 3 fits beside job 1 at 1100 (4 - 3 = 1 CPU).
    assert_eq!(expected(&p, 3), Some(1100));
}

#[test]
fn exclusive_reservation_waits_for_the_node_to_empty() {
    let c = cluster(vec![
        node("a", 4, GIB).running(90, 1, 0, 1500),
        node("b", 8, GIB).running(91, 1, 0, 1200),
    ]);
    let p = run(
        &c,
        &[
            job(1).exclusive().nodes(2).time(100),
            job(2).cpus(1).time(600),
        ],
    );
    assert_eq!(expected(&p, 1), Some(1500));
    // Job 2 would still run at 1500 and both nodes are reserved whole.
    assert_eq!(reason(&p, 2), Some(Reason::Priority));
}

#[test]
fn overrunning_jobs_are_planned_to_end_in_the_next_second() {
    let c = cluster(vec![node("a", 4, GIB).alloc(Allocation {
        job: 9,
        cpus: 4,
        memory: 0,
        gpus: 0,
        end: 10,
    })]);
    let p = run(&c, &[job(1).cpus(4).time(10)]);
    assert_eq!(expected(&p, 1), Some(NOW + 1));
}

#[test]
fn a_pass_is_deterministic() {
    let c = busy().with(partition("two", &["a", "b"]));
    let jobs: Vec<JobView> = (1..=40)
        .map(|i| {
            job(i)
                .cpus(1 + (i as u32 * 7) % 4)
                .time(50 + (i * 37) % 400)
                .submit(i % 5)
                .partition(if i % 3 == 0 { "two" } else { "batch" })
        })
        .collect();
    let cfg = Config {
        reservations: 4,
        ..Config::default()
    };
    let p = schedule(&c, &jobs, NOW, &cfg);
    let mut rev = jobs.clone();
    rev.reverse();
    assert_eq!(p, schedule(&c, &rev, NOW, &cfg));
    assert!(!started(&p).is_empty());
}

/// The property backfill exists for: jobs started now never delay a reservation. Random
/// small clusters and queues; after a pass, every node's plan (running jobs, jobs started
/// now, reservations on their planned nodes) must never ask more of it than it has, at any
/// instant; and planned again with the starts running, the first reserved job (the one EASY
/// protects) must not start later than promised. (Later reservations may move in a new pass:
/// best fit at their start time can choose other nodes once more jobs run, as in Slurm.)
#[test]
fn backfill_never_delays_a_reservation() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    let mut checked = 0;
    for _ in 0..500 {
        let mut nodes = Vec::new();
        for i in 0..2 + rand(5) {
            let cpus = 4 + 4 * rand(3) as u32;
            let mut v = node(&format!("n{i}"), cpus, 16 * GIB).gpus(rand(3) as u32);
            let mut left = cpus;
            while left > 0 && rand(3) > 0 {
                let c = 1 + rand(u64::from(left)) as u32;
                left -= c;
                v = v.running(900 + i, c, rand(4) * GIB, NOW + 1 + rand(3000));
            }
            nodes.push(v);
        }
        let c = cluster(nodes);
        let jobs: Vec<JobView> = (1..=12 + rand(10))
            .map(|id| {
                let mut j = job(id)
                    .cpus(1 + rand(8) as u32)
                    .mem(rand(8) * GIB)
                    .time(10 + rand(3000))
                    .submit(rand(50));
                match rand(10) {
                    0 => j = j.exclusive(),
                    1 => j = j.nodes(2),
                    2 => j = j.gpus(1),
                    3 => j = j.tasks(3).nodes(2),
                    _ => {}
                }
                j
            })
            .collect();
        let cfg = Config {
            reservations: 1 + rand(4) as usize,
            ..fifo()
        };
        let p = schedule(&c, &jobs, NOW, &cfg);

        // Every node's plan as (from, to, cpus, mem, gpus) uses.
        let mut after = c.clone();
        for (id, s) in p.starts() {
            for a in &s.nodes {
                let n = after
                    .nodes
                    .iter_mut()
                    .find(|n| n.name == a.node)
                    .expect("allocated node exists");
                n.allocations.push(Allocation {
                    job: id,
                    cpus: a.cpus,
                    memory: a.memory,
                    gpus: a.gpus,
                    end: s.end,
                });
            }
        }
        for n in &after.nodes {
            let mut uses: Vec<(u64, u64, u64, u64, u64)> = n
                .allocations
                .iter()
                .map(|a| {
                    (
                        NOW,
                        a.end.max(NOW + 1),
                        u64::from(a.cpus),
                        a.memory,
                        u64::from(a.gpus),
                    )
                })
                .collect();
            for j in &jobs {
                let Some(Outcome::Wait {
                    expected_start: Some(t),
                    planned_nodes,
                    ..
                }) = p.get(j.id).map(|d| &d.outcome)
                else {
                    continue;
                };
                // The first planned nodes hold the most tasks' CPUs, the others fewer.
                let Some(i) = planned_nodes.iter().position(|p| *p == n.name) else {
                    continue;
                };
                let r = &j.request;
                let end = t + r.time_limit.expect("test jobs have limits");
                uses.push(if r.exclusive {
                    (*t, end, u64::from(n.cpus), n.memory, u64::from(n.gpus))
                } else {
                    let cpus = r.cpus_for(r.tasks_on(r.nodes_min, i as u32));
                    (*t, end, cpus, r.memory_per_node, u64::from(r.gpus_per_node))
                });
            }
            for &(t, ..) in &uses {
                let at: Vec<_> = uses.iter().filter(|u| u.0 <= t && t < u.1).collect();
                let sum =
                    |f: fn(&(u64, u64, u64, u64, u64)) -> u64| at.iter().map(|u| f(u)).sum::<u64>();
                assert!(
                    sum(|u| u.2) <= u64::from(n.cpus)
                        && sum(|u| u.3) <= n.memory
                        && sum(|u| u.4) <= u64::from(n.gpus),
                    "node {} over-committed at {t}: {at:?}\n{p:#?}",
                    n.name
                );
                checked += 1;
            }
        }

        let first = p.decisions.iter().find(|d| expected(&p, d.job).is_some());
        if let Some(first) = first {
            let j = jobs.iter().find(|j| j.id == first.job).expect("job");
            let again = schedule(&after, std::slice::from_ref(j), NOW, &cfg);
            let promised = expected(&p, j.id).expect("reserved");
            let now = again
                .get(j.id)
                .and_then(|d| d.expected_start(NOW))
                .expect("still reserved");
            assert!(now <= promised, "job {} delayed: {promised} -> {now}", j.id);
        }
    }
    assert!(checked > 1000, "only {checked} instants checked");
}

#[test]
fn features_nodelists_and_exclusions_choose_among_the_partitions_nodes() {
    let c = cluster(vec![
        node("a", 4, 8 * GIB).features(&["intel"]),
        node("b", 4, 8 * GIB).features(&["amd"]),
        node("c", 8, 8 * GIB).features(&["intel", "ib"]),
        node("d", 4, 8 * GIB)
            .features(&["intel"])
            .running(50, 4, 0, NOW + 100),
    ])
    .with(partition("batch", &["a", "b", "c", "d"]));
    let jobs = [
        job(1).constraint(&[&["intel", "ib"]]),
        job(2).constraint(&[&["amd"], &["gpu"]]),
        job(3).constraint(&[&["gpu"]]),
        job(4).nodelist(&["a"]),
        job(5).tasks(2).nodes_range(1, 2).nodelist(&["a", "c"]),
        job(6).nodelist(&["zz"]),
        job(7).nodelist(&["a", "b"]),
        job(8).nodelist(&["b"]).exclude(&["b"]),
        job(9).constraint(&[&["intel"]]).exclude(&["a", "c"]),
    ];
    let p = run(&c, &jobs);
    assert_eq!(nodes_of(&p, 1), ["c"]);
    assert_eq!(nodes_of(&p, 2), ["b"]);
    assert_eq!(nodes_of(&p, 4), ["a"]);
    // Both named nodes, though one would have done (one task each).
    assert_eq!(nodes_of(&p, 5), ["a", "c"]);
    for id in [3, 6, 7, 8] {
        assert_eq!(reason(&p, id), Some(Reason::BadConstraints), "job {id}");
    }
    // Only d is left to it, busy until NOW + 100: it waits there for resources.
    assert_eq!(reason(&p, 9), Some(Reason::Resources));
    assert_eq!(expected(&p, 9), Some(NOW + 100));
    match &p.get(9).unwrap().outcome {
        Outcome::Wait { planned_nodes, .. } => assert_eq!(planned_nodes, &["d"]),
        other => panic!("{other:?}"),
    }

    // Candidates (bsub -m): one of them, no other; a job none of its candidates can ever
    // hold (8 CPUs: only c has them) never fits.
    let p = run(
        &c,
        &[
            job(10).candidates(&["b", "c"]),
            job(11).cpus(8).candidates(&["a", "b"]),
        ],
    );
    assert!(matches!(nodes_of(&p, 10).as_slice(), [n] if n == "b" || n == "c"));
    assert_eq!(reason(&p, 11), Some(Reason::BadConstraints));

    // Preferences (bsub -m "c+2 b+1 others"): the most preferred node that fits, before
    // the best fit (a, by name among the fullest); a preferred node that cannot take the
    // job (d, busy) gives way to the next.
    for (preferred, on) in [
        (&[("c", 2), ("b", 1)][..], "c"),
        (&[("b", 1)], "b"),
        (&[("d", 3), ("c", 1)], "c"),
        (&[], "a"),
    ] {
        let p = run(&c, &[job(12).preferred(preferred)]);
        assert_eq!(nodes_of(&p, 12), [on], "{preferred:?}");
    }
    // Two nodes: the preferred one and the best fit of the others.
    let p = run(
        &c,
        &[job(13).tasks(2).nodes_range(2, 2).preferred(&[("c", 1)])],
    );
    assert_eq!(nodes_of(&p, 13), ["c", "a"]);

    // The same checks at submission.
    let ever = |j: JobView| crate::fits_ever(&c, &j.request);
    assert_eq!(
        ever(job(1).constraint(&[&["gpu"]])),
        Err(Reason::BadConstraints)
    );
    assert_eq!(ever(job(1).nodelist(&["zz"])), Err(Reason::BadConstraints));
    assert_eq!(
        ever(job(1).nodelist(&["a", "b"])),
        Err(Reason::BadConstraints)
    );
    assert_eq!(ever(job(1).cpus(8).constraint(&[&["intel"]])), Ok(()));
    assert_eq!(
        ever(job(1).cpus(8).constraint(&[&["amd"]])),
        Err(Reason::BadConstraints)
    );
    assert_eq!(
        ever(job(1).tasks(2).nodes_range(1, 2).nodelist(&["a", "b"])),
        Ok(())
    );
}

#[test]
fn a_job_waits_for_the_node_it_must_have_and_others_backfill_around_it() {
    let c = cluster(vec![
        node("a", 4, 8 * GIB).running(50, 4, 0, NOW + 100),
        node("b", 4, 8 * GIB),
    ])
    .with(partition("batch", &["a", "b"]));
    // Job 1 must have all of a (busy until NOW + 100) and of b: it reserves both from then;
    // job 2, ending after that, may not take b now; job 3, ending before, may.
    let jobs = [
        job(1)
            .tasks(2)
            .cpus(4)
            .nodes_range(1, 2)
            .nodelist(&["a", "b"])
            .time(60),
        job(2).time(200),
        job(3).time(50),
    ];
    let p = run(&c, &jobs);
    assert_eq!(reason(&p, 1), Some(Reason::Resources));
    assert_eq!(expected(&p, 1), Some(NOW + 100));
    assert_eq!(reason(&p, 2), Some(Reason::Priority));
    assert_eq!(nodes_of(&p, 3), ["b"]);
}

/// An administrator's reservation of a node from NOW+100 to NOW+200: a job that ends before
/// it starts runs there; one that would not waits until it ends; its own jobs run there only
/// while it lasts, and only if they end by its end.
#[test]
fn reservations_keep_their_nodes_for_their_jobs() {
    let c = cluster(vec![node("a", 4, GIB)]).reserved("maint", &["a"], NOW + 100, NOW + 200);
    let p = run(&c, &[job(1).cpus(4).time(50), job(2).cpus(4).time(150)]);
    assert_eq!(started(&p), [1]);
    assert_eq!(reason(&p, 2), Some(Reason::Resources));
    assert_eq!(expected(&p, 2), Some(NOW + 200));
    // Its own job waits for its start; a name no reservation has is said so.
    let p = run(
        &c,
        &[
            job(3).reservation("maint").time(10),
            job(4).reservation("gone"),
        ],
    );
    assert_eq!(reason(&p, 3), Some(Reason::Reservation));
    assert_eq!(reason(&p, 4), Some(Reason::ReservationDeleted));

    // While it lasts: its jobs run on its node, the others do not.
    let c = cluster(vec![node("a", 4, GIB), node("b", 4, GIB)]).reserved(
        "course",
        &["a"],
        NOW - 10,
        NOW + 1000,
    );
    let jobs = [
        job(5).cpus(4).time(10),
        job(6).cpus(4).time(10),
        job(7).cpus(4).time(100).reservation("course"),
        job(8).cpus(4).time(2000).reservation("course"),
    ];
    let p = run(&c, &jobs);
    assert_eq!(started(&p), [5, 7]);
    assert_eq!(nodes_of(&p, 5), ["b"]);
    assert_eq!(nodes_of(&p, 7), ["a"]);
    assert_eq!(reason(&p, 6), Some(Reason::Resources));
    // Past its end: never in it.
    assert_eq!(reason(&p, 8), Some(Reason::Reservation));
}
