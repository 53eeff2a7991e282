//! Slurm's commands about the cluster rather than jobs, in Slurm's own formats: sinfo (its
//! options and `-o` fields) and `scontrol show node|partition`, whose `Key=Value` lines site
//! scripts read (`scontrol show node $HOST | grep -o 'CPUTot=[0-9]*'`, `sinfo -h -o %c`).

use super::{flag, no_other_options, nodes_named, value};
use crate::batch::{parse_format, render, slurm_time};
use anyhow::{bail, Result};
use berth_api::{NodeInfo, PartitionInfo};
use std::io::Write;

const SINFO_USAGE: &str =
    "sinfo [-N] [-l] [-s] [-R] [-T] [-h] [-o FORMAT | -O NAME[:SIZE],...] [-p PARTITION,...] [-n NODES] [-t STATES,...] [--json]";

/// The fields `sinfo -o` knows.
const FIELDS: &str = "PRalLtTDNncCmeOGfEuHAFswdrhgzXYZ";

/// sinfo's `--Format` names, and the `-o` letter each stands for.
const FORMAT_NAMES: &[(&str, char)] = &[
    ("partition", 'P'),
    ("partitionname", 'R'),
    ("available", 'a'),
    ("time", 'l'),
    ("defaulttime", 'L'),
    ("statecompact", 't'),
    ("statelong", 'T'),
    ("nodes", 'D'),
    ("nodelist", 'N'),
    ("nodehost", 'n'),
    ("cpus", 'c'),
    ("cpusstate", 'C'),
    ("memory", 'm'),
    ("freemem", 'e'),
    ("cpusload", 'O'),
    ("gres", 'G'),
    ("features", 'f'),
    ("reason", 'E'),
    ("nodeaiot", 'F'),
    ("nodeai", 'A'),
    ("user", 'u'),
    ("timestamp", 'H'),
    ("size", 's'),
    ("weight", 'w'),
    ("disk", 'd'),
    ("root", 'r'),
    ("oversubscribe", 'h'),
    ("groups", 'g'),
    ("socketcorethread", 'z'),
    ("sockets", 'X'),
    ("cores", 'Y'),
    ("threads", 'Z'),
];

/// One line of sinfo: a partition and a set of its nodes (all of one state, or one node).
struct Row<'a> {
    partition: &'a PartitionInfo,
    nodes: Vec<&'a NodeInfo>,
}

/// `sinfo`: a line per partition and node state (or with -N, per node and partition), in
/// Slurm's default or long formats or the one `-o` gives.
pub fn sinfo(mut words: Vec<String>) -> Result<i32> {
    let node_lines = flag(&mut words, "-N") | flag(&mut words, "--Node");
    let long = flag(&mut words, "-l") | flag(&mut words, "--long");
    let summarize = flag(&mut words, "-s") | flag(&mut words, "--summarize");
    let no_header = flag(&mut words, "-h") | flag(&mut words, "--noheader");
    let json = flag(&mut words, "--json");
    let reasons = flag(&mut words, "-R") | flag(&mut words, "--list-reasons");
    let reservations = flag(&mut words, "-T") | flag(&mut words, "--reservation");
    // Ways to ask for what berth does anyway: every partition, each state apart.
    for same in ["-a", "--all", "-e", "--exact"] {
        flag(&mut words, same);
    }
    let format = match option(&mut words, "-O", "--Format")? {
        Some(named) => Some(
            crate::batch::named_as_format(&named, FORMAT_NAMES)?
                .trim_end()
                .to_string(),
        ),
        None => option(&mut words, "-o", "--format")?,
    };
    let partitions = option(&mut words, "-p", "--partition")?;
    let node_names = option(&mut words, "-n", "--nodes")?;
    let states = option(&mut words, "-t", "--states")?;
    no_other_options("sinfo", &words, SINFO_USAGE)?;
    if let Some(extra) = words.first() {
        bail!("sinfo takes no arguments ({extra}): name nodes with -n, partitions with -p\nusage: {SINFO_USAGE}");
    }

    let names = match &node_names {
        Some(list) => berth_core::job::expand_hostlist(list)
            .ok_or_else(|| anyhow::anyhow!("-n {list}: not a list of nodes (n1,n2 or n[1-2])"))?,
        None => Vec::new(),
    };
    let mut nodes = nodes_named(&names)?;
    let all: Vec<berth_api::Reservation> =
        crate::client::request("GET", "/v1/reservations", None::<&()>)?;
    mark_reserved(&mut nodes, &all, berth_controller::now());
    // (`drain` is either drained or draining, as sinfo's -t has it.)
    let wanted_states: Vec<String> = states
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| match s.to_ascii_lowercase().as_str() {
            "drain" => "drain".to_string(),
            s => long_state(s).to_string(),
        })
        .collect();
    if let Some(unknown) = wanted_states
        .iter()
        .find(|s| !LONG_STATES.contains(&s.as_str()) && *s != "drain")
    {
        bail!("-t {unknown}: berth's node states are idle, reserved, mixed, allocated, down, drained and draining (or idle, resv, mix, alloc, down, drain, drng)");
    }
    nodes.retain(|n| {
        let state = long_state_of(n).to_string();
        let drain = drained(n) && wanted_states.iter().any(|s| s == "drain");
        wanted_states.is_empty() || wanted_states.contains(&state) || drain
    });
    let mut parts: Vec<PartitionInfo> =
        crate::client::request("GET", "/v1/partitions", None::<&()>)?;
    if let Some(list) = &partitions {
        let wanted: Vec<&str> = list.split(',').collect();
        if let Some(unknown) = wanted.iter().find(|w| !parts.iter().any(|p| p.name == **w)) {
            bail!("-p {unknown}: no such partition");
        }
        parts.retain(|p| wanted.contains(&p.name.as_str()));
    }
    let mut out = std::io::stdout().lock();
    if reservations {
        return list_reservations(&mut out, no_header);
    }
    if reasons && !json {
        return list_reasons(&mut out, &nodes, no_header);
    }
    if json {
        return match node_lines {
            true => crate::batch::print_json(&mut out, &nodes),
            false => crate::batch::print_json(&mut out, &parts),
        };
    }

    let rows = rows(&parts, &nodes, node_lines, summarize);
    let format = match format {
        Some(f) => f,
        None => default_format(&rows, node_lines, long, summarize),
    };
    let columns = parse_format(&format, FIELDS)?;
    if !no_header {
        // (-l: the date first, as sinfo's long listing has it.)
        if long {
            writeln!(
                out,
                "{}",
                berth_agent::runner::ctime(berth_controller::now())
            )?;
        }
        writeln!(out, "{}", render(&columns, |c| header(c).to_string()))?;
    }
    for row in &rows {
        writeln!(out, "{}", render(&columns, |c| field(c, row)))?;
    }
    Ok(0)
}

/// sinfo -T: the reservations, in force or to come.
fn list_reservations(out: &mut impl Write, no_header: bool) -> Result<i32> {
    let all: Vec<berth_api::Reservation> =
        crate::client::request("GET", "/v1/reservations", None::<&()>)?;
    let now = berth_controller::now();
    if !no_header {
        writeln!(
            out,
            "{:<14} {:>8} {:>19} {:>19} {:>12}  NODELIST",
            "RESV_NAME", "STATE", "START_TIME", "END_TIME", "DURATION"
        )?;
    }
    for r in &all {
        writeln!(
            out,
            "{:<14} {:>8} {:>19} {:>19} {:>12}  {}",
            r.name,
            resv_state(r, now),
            super::slurm_timestamp(r.start_time),
            super::slurm_timestamp(r.end_time),
            berth_core::job::format_duration(r.end_time.saturating_sub(r.start_time)),
            berth_core::job::hostlist(&r.nodes)
        )?;
    }
    Ok(0)
}

/// sinfo -R: why nodes are out of service, who said so and when, the nodes of one reason
/// on one line (Slurm's `%20E %9u %19H %N`).
fn list_reasons(out: &mut impl Write, nodes: &[NodeInfo], no_header: bool) -> Result<i32> {
    let mut groups: Vec<(&str, &str, u64, Vec<String>)> = Vec::new();
    for n in nodes {
        let (Some(reason), user, time) = (&n.reason, &n.reason_user, n.reason_time) else {
            continue;
        };
        let (user, time) = (user.as_deref().unwrap_or("root"), time.unwrap_or(0));
        match groups
            .iter_mut()
            .find(|(r, u, t, _)| r == reason && *u == user && *t == time)
        {
            Some(g) => g.3.push(n.name.clone()),
            None => groups.push((reason, user, time, vec![n.name.clone()])),
        }
    }
    if !no_header {
        writeln!(
            out,
            "{:<20} {:<9} {:<19} NODELIST",
            "REASON", "USER", "TIMESTAMP"
        )?;
    }
    for (reason, user, time, names) in groups {
        writeln!(
            out,
            "{:<20} {:<9} {:<19} {}",
            crate::batch::truncate(reason, 20),
            crate::batch::truncate(user, 9),
            super::slurm_timestamp(time),
            berth_core::job::hostlist(&names)
        )?;
    }
    Ok(0)
}

/// `-o FORMAT`, `-oFORMAT`, `--format FORMAT` or `--format=FORMAT` taken out of `words`.
fn option(words: &mut Vec<String>, short: &str, long: &str) -> Result<Option<String>> {
    if let Some(v) = value(words, short)? {
        return Ok(Some(v));
    }
    if let Some(v) = value(words, long)? {
        return Ok(Some(v));
    }
    let eq = format!("{long}=");
    let at = words
        .iter()
        .position(|w| w.starts_with(&eq) || (w.starts_with(short) && w.len() > short.len()));
    Ok(at.map(|at| {
        let w = words.remove(at);
        w.strip_prefix(&eq).unwrap_or(&w[short.len()..]).to_string()
    }))
}

/// Each partition's nodes, grouped by state (or one row each with -N, or all of them with
/// -s), in the order the partitions and their nodes come.
fn rows<'a>(
    parts: &'a [PartitionInfo],
    nodes: &'a [NodeInfo],
    node_lines: bool,
    summarize: bool,
) -> Vec<Row<'a>> {
    let mut rows: Vec<Row> = Vec::new();
    for partition in parts {
        let members = nodes.iter().filter(|n| partition.nodes.contains(&n.name));
        if node_lines {
            rows.extend(members.map(|n| Row {
                partition,
                nodes: vec![n],
            }));
            continue;
        }
        let start = rows.len();
        for n in members {
            match rows[start..].iter_mut().find(|r| {
                let shown = |n| (long_state_of(n), silent_mark(n));
                summarize || shown(r.nodes[0]) == shown(n)
            }) {
                Some(row) => row.nodes.push(n),
                None => rows.push(Row {
                    partition,
                    nodes: vec![n],
                }),
            }
        }
        if rows.len() == start {
            // A partition without nodes still has its line, as in Slurm.
            rows.push(Row {
                partition,
                nodes: Vec::new(),
            });
        }
    }
    rows
}

/// Slurm's default formats, the partition and node names as wide as the widest (its `%#P`).
fn default_format(rows: &[Row], node_lines: bool, long: bool, summarize: bool) -> String {
    let widest = |value: &dyn Fn(&Row) -> String, min: usize| {
        rows.iter()
            .map(|r| value(r).len())
            .max()
            .unwrap_or(0)
            .max(min)
    };
    let p = widest(&|r| field('P', r), "PARTITION".len());
    let n = widest(&|r| field('N', r), "NODELIST".len());
    match (node_lines, long, summarize) {
        (true, false, _) => format!("%{n}N %.6D %{p}P %6t"),
        (true, true, _) => format!("%{n}N %.6D %{p}P %.11T %.4c %.6m %.8d %.6w %.8f %20E"),
        (false, _, true) => format!("%{p}P %.5a %.10l %.16F  %N"),
        (false, false, false) => format!("%{p}P %.5a %.10l %.6D %.6t %N"),
        (false, true, false) => format!("%{p}P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N"),
    }
}

fn header(letter: char) -> &'static str {
    match letter {
        'P' | 'R' => "PARTITION",
        'a' => "AVAIL",
        'l' => "TIMELIMIT",
        'L' => "DEFAULTTIME",
        't' | 'T' => "STATE",
        'D' => "NODES",
        'N' => "NODELIST",
        'n' => "HOSTNAMES",
        'c' => "CPUS",
        'C' => "CPUS(A/I/O/T)",
        'm' => "MEMORY",
        'e' => "FREE_MEM",
        'O' => "CPU_LOAD",
        'G' => "GRES",
        'f' => "AVAIL_FEATURES",
        'E' => "REASON",
        'F' => "NODES(A/I/O/T)",
        'A' => "NODES(A/I)",
        'u' => "USER",
        'H' => "TIMESTAMP",
        's' => "JOB_SIZE",
        'w' => "WEIGHT",
        'd' => "TMP_DISK",
        'r' => "ROOT",
        'h' => "OVERSUBS",
        'z' => "S:C:T",
        'X' => "SOCKETS",
        'Y' => "CORES",
        'Z' => "THREADS",
        _ => "GROUPS",
    }
}

/// The value of `-o` field `letter` for `row`. A field of its nodes that differs between
/// them is shown as Slurm shows it, its least value with a `+`.
fn field(letter: char, row: &Row) -> String {
    let p = row.partition;
    let nodes = &row.nodes;
    let least = |value: &dyn Fn(&NodeInfo) -> u64| {
        let values: Vec<u64> = nodes.iter().map(|n| value(n)).collect();
        match (values.iter().min(), values.iter().max()) {
            (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
            (Some(lo), Some(_)) => format!("{lo}+"),
            _ => "0".into(),
        }
    };
    let count = |state: &str| {
        nodes
            .iter()
            .filter(|n| compact_state_of(n) == state)
            .count()
    };
    let listed = |value: &dyn Fn(&NodeInfo) -> String, none: &str| {
        let mut all: Vec<String> = nodes.iter().map(|n| value(n)).collect();
        all.dedup();
        match all.join(",") {
            s if s.is_empty() => none.to_string(),
            s => s,
        }
    };
    match letter {
        'P' if p.default => format!("{}*", p.name),
        'P' | 'R' => p.name.clone(),
        'a' => p.state.clone(),
        'l' => p.max_time.map_or("infinite".into(), slurm_time),
        'L' => p.default_time.map_or("n/a".into(), slurm_time),
        't' => nodes.first().map_or("n/a".into(), |n| {
            format!("{}{}", compact_state_of(n), silent_mark(n))
        }),
        'T' => nodes.first().map_or("n/a".into(), |n| {
            format!("{}{}", long_state_of(n), silent_mark(n))
        }),
        'D' => nodes.len().to_string(),
        'N' | 'n' => berth_core::job::hostlist(&nodes.iter().map(|n| &n.name).collect::<Vec<_>>()),
        'c' => least(&|n| u64::from(n.cpus)),
        'C' => {
            let alloc: u64 = nodes.iter().map(|n| u64::from(n.cpus_allocated)).sum();
            let total: u64 = nodes.iter().map(|n| u64::from(n.cpus)).sum();
            let other: u64 = nodes
                .iter()
                .filter(|n| n.state == "down" || drained(n))
                .map(|n| u64::from(n.cpus.saturating_sub(n.cpus_allocated)))
                .sum();
            let idle = total.saturating_sub(alloc + other);
            format!("{alloc}/{idle}/{other}/{total}")
        }
        'm' => least(&|n| n.memory >> 20),
        // What the nodes' agents last reported, as a range where they differ (sinfo's).
        'e' => span(nodes.iter().map(|n| free_mib(n)), 0),
        'O' => span(nodes.iter().map(|n| n.cpu_load()), 2),
        'G' => listed(
            &|n| match n.gpus {
                0 => String::new(),
                g => format!("gpu:{g}"),
            },
            "(null)",
        ),
        'f' => listed(&|n| n.features.join(","), "(null)"),
        'E' => listed(&|n| n.reason.clone().unwrap_or_default(), "none"),
        // Who gave the reason, and when (sinfo -R's columns).
        'u' => listed(&|n| n.reason_user.clone().unwrap_or_default(), "Unknown"),
        'H' => listed(
            &|n| {
                n.reason_time
                    .map(super::slurm_timestamp)
                    .unwrap_or_default()
            },
            "Unknown",
        ),
        'A' => format!(
            "{}/{}",
            count("alloc") + count("mix") + count("drng"),
            count("idle")
        ),
        'F' => format!(
            "{}/{}/{}/{}",
            count("alloc") + count("mix") + count("drng"),
            count("idle"),
            count("down") + count("drain"),
            nodes.len()
        ),
        's' => "1-infinite".into(),
        'w' => "1".into(),
        'd' => "0".into(),
        'r' => "no".into(),
        'h' => "NO".into(),
        'g' => "all".into(),
        // The nodes' layout: sockets, cores per socket, threads per core.
        'X' => least(&|n| u64::from(n.topology()[0])),
        'Y' => least(&|n| u64::from(n.topology()[1])),
        'Z' => least(&|n| u64::from(n.topology()[2])),
        'z' => ['X', 'Y', 'Z'].map(|l| field(l, row)).join(":"),
        _ => String::new(),
    }
}

/// Idle nodes in a reservation in force are `reserved` to sinfo (its `resv`), as Slurm's.
fn mark_reserved(nodes: &mut [NodeInfo], reservations: &[berth_api::Reservation], now: u64) {
    let in_force = reservations
        .iter()
        .filter(|r| r.start_time <= now && now < r.end_time);
    let reserved: Vec<&String> = in_force.flat_map(|r| &r.nodes).collect();
    for n in nodes.iter_mut().filter(|n| n.state == "idle") {
        if reserved.contains(&&n.name) {
            n.state = "reserved".into();
        }
    }
}

/// Whether a node is drained or draining (the API's `drained`, `draining`).
fn drained(n: &NodeInfo) -> bool {
    matches!(n.state.as_str(), "drain" | "drained" | "draining")
}

/// sinfo's `*` after the state of a node that does not answer (down since it stopped:
/// berth put it out of service as not responding).
fn silent_mark(n: &NodeInfo) -> &'static str {
    let silent = n.reason_user.as_deref() == Some("berth")
        && (n.reason.as_deref()).is_some_and(|r| r.starts_with(berth_api::NOT_RESPONDING));
    if silent {
        "*"
    } else {
        ""
    }
}

/// A node's state as sinfo's %T prints it (and -t takes it).
fn long_state_of(n: &NodeInfo) -> &'static str {
    match (n.state.as_str(), n.cpus_allocated) {
        ("idle", _) => "idle",
        ("reserved", _) => "reserved",
        ("mixed", _) => "mixed",
        ("allocated", _) => "allocated",
        (_, 0) if drained(n) => "drained",
        _ if drained(n) => "draining",
        _ => "down",
    }
}

/// The same, as %t prints it.
fn compact_state_of(n: &NodeInfo) -> &'static str {
    match long_state_of(n) {
        "mixed" => "mix",
        "allocated" => "alloc",
        "drained" => "drain",
        "draining" => "drng",
        "reserved" => "resv",
        other => other,
    }
}

const LONG_STATES: [&str; 7] = [
    "idle",
    "reserved",
    "mixed",
    "allocated",
    "down",
    "drained",
    "draining",
];

/// A state as -t takes it, in either form.
fn long_state(s: &str) -> &str {
    match s {
        "mix" => "mixed",
        "alloc" => "allocated",
        "drain" => "drained",
        "drng" => "draining",
        "resv" => "reserved",
        other => other,
    }
}

/// A time limit as scontrol prints one: `UNLIMITED`, `D-HH:MM:SS`, `HH:MM:SS`.
fn scontrol_time(secs: Option<u64>) -> String {
    match secs {
        None => "UNLIMITED".into(),
        Some(secs) if secs >= 86400 => slurm_time(secs),
        Some(secs) => format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        ),
    }
}

/// `scontrol show node[s] [NAME]` and `scontrol show partition[s] [NAME]`, in scontrol's
/// `Key=Value` form, a block each; the rest of scontrol that berth answers was translated
/// into berth's own commands before.
pub fn scontrol(mut words: Vec<String>) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    // (-o: a record a line; the translation made it --oneliner.)
    let oneliner = flag(&mut words, "--oneliner");
    let block = |text: String| match oneliner {
        true => crate::compat::one_line(&text),
        false => text,
    };
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["show", "node" | "nodes", names @ ..] => {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            for n in nodes_named(&names)? {
                writeln!(out, "{}", block(node_block(&n)))?;
            }
        }
        ["show", "partition" | "partitions", names @ ..] => {
            let parts: Vec<PartitionInfo> =
                crate::client::request("GET", "/v1/partitions", None::<&()>)?;
            let chosen = chosen(&parts, names, "partition", |p| &p.name)?;
            let nodes = nodes_named(&[])?;
            for p in chosen {
                writeln!(out, "{}", block(partition_block(p, &nodes)))?;
            }
        }
        ["show", "license" | "licenses" | "lic", names @ ..] => {
            let all: Vec<berth_api::LicenseInfo> =
                crate::client::request("GET", "/v1/licenses", None::<&()>)?;
            let chosen = chosen(&all, names, "license", |l| &l.name)?;
            if all.is_empty() {
                writeln!(out, "No licenses configured")?;
            }
            for l in chosen {
                let text = format!(
                    "LicenseName={}\n    Total={} Used={} Free={} Reserved=0 Remote=no\n",
                    l.name, l.total, l.used, l.free
                );
                writeln!(out, "{}", block(text))?;
            }
        }
        ["ping"] => {
            let all: Vec<berth_api::ControllerInfo> =
                match crate::client::request("GET", "/v1/controllers", None::<&()>) {
                    Err(e) if crate::client::is_unreachable(&e) => {
                        // None answers: each one the client would ask is down, as Slurm says.
                        for (i, host) in crate::client::controller_hosts().iter().enumerate() {
                            let role = if i == 0 { "primary" } else { "backup" };
                            writeln!(out, "Slurmctld({role}) at {host} is DOWN")?;
                        }
                        return Ok(1);
                    }
                    answer => answer?,
                };
            for c in &all {
                let role = if c.role == "leader" { "primary" } else { "backup" };
                let state = c.state.to_uppercase();
                writeln!(out, "Slurmctld({role}) at {} is {state}", c.host)?;
            }
        }
        ["update", settings @ ..] => update_nodes(settings)?,
        ["show", "step" | "steps", specs @ ..] => {
            let shown = steps_shown(specs)?;
            if shown.is_empty() {
                match specs.first() {
                    Some(spec) => bail!("scontrol: job step {spec} not found"),
                    None => writeln!(out, "No job steps in the system")?,
                }
            }
            for text in shown {
                writeln!(out, "{}", block(text))?;
            }
        }
        ["write", "batch_script", job, ..] if crate::batch::step_spec(job).is_some() => {
            bail!("scontrol write batch_script {job}: name the job (JOBID), not one of its steps")
        }
        ["write", "batch_script", job, file @ ..] => {
            // (An array's tasks have its one script.)
            let named = crate::batch::named_jobs(&[job.to_string()])?;
            let id = named.first().map_or(0, |j| j.id);
            let script = crate::client::text(&format!("/v1/jobs/{id}/script"))?;
            match file {
                ["-"] => out.write_all(script.as_bytes())?,
                [] | [_] => {
                    let file = file.first().map_or(format!("slurm-{job}.sh"), |f| f.to_string());
                    // Never over a file that is there (nothing of the user's lost).
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&file)
                        .map_err(|e| anyhow::anyhow!("scontrol: cannot write {file}: {e}: name another file, or - for standard output"))?;
                    f.write_all(script.as_bytes())?;
                    writeln!(out, "batch script for job {job} written to {file}")?;
                }
                _ => bail!("scontrol write batch_script JOBID [FILE|-]: one file at most"),
            }
        }
        ["create", "reservation" | "reservations" | "res", settings @ ..] => {
            let name = create_reservation(settings)?;
            writeln!(out, "Reservation created: {name}")?;
        }
        ["show", "config" | "conf" | "configuration"] => {
            let config: berth_api::ConfigInfo =
                crate::client::request("GET", "/v1/config", None::<&()>)?;
            write!(out, "{}", config_block(&config))?;
        }
        ["show", "reservation" | "reservations" | "res", names @ ..] => {
            let all: Vec<berth_api::Reservation> =
                crate::client::request("GET", "/v1/reservations", None::<&()>)?;
            let chosen = chosen(&all, names, "reservation", |r| &r.name)?;
            if all.is_empty() {
                writeln!(out, "No reservations in the system")?;
            }
            for r in chosen {
                writeln!(out, "{}", reservation_block(r))?;
            }
        }
        ["delete", what @ ..] => {
            let name = match what {
                ["reservation" | "res", name] => name.to_string(),
                [setting] => match setting.split_once('=') {
                    Some((k, v)) if k.eq_ignore_ascii_case("reservationname") => v.to_string(),
                    _ => bail!("scontrol delete: berth deletes reservations: ReservationName=NAME"),
                },
                _ => bail!("scontrol delete: berth deletes reservations: ReservationName=NAME"),
            };
            crate::client::request::<()>("DELETE", &format!("/v1/reservations/{name}"), None::<&()>)?;
        }
        _ => bail!(
            "scontrol {}: berth answers show job|step|node|partition|reservation|licenses|config|hostnames|hostlist, write batch_script, hold, release, requeue, suspend, resume, update, create/delete reservation and ping",
            words.join(" ")
        ),
    }
    Ok(0)
}

/// `scontrol show config`: the settings berth has of Slurm's, by Slurm's names, as scontrol
/// lists them (`Name = value`, the names padded to 23), after its date line.
fn config_block(c: &berth_api::ConfigInfo) -> String {
    let secs = |s: u64| format!("{s} sec");
    let duration = |s: u64| berth_core::job::format_duration(s);
    let p = &c.priority;
    let licenses: Vec<String> = c.licenses.iter().map(|(n, k)| format!("{n}:{k}")).collect();
    let or_null = |v: Option<String>| v.unwrap_or_else(|| "(null)".into());
    let settings: Vec<(&str, String)> = vec![
        ("ClusterName", c.cluster_name.clone()),
        // A job whose dependency can never be met is cancelled, unless it asks to wait
        // (--kill-on-invalid-dep=no).
        ("DependencyParameters", "kill_invalid_depend".into()),
        ("JobRequeue", u8::from(c.requeue).to_string()),
        ("KillWait", secs(c.kill_wait)),
        (
            "Licenses",
            or_null((!licenses.is_empty()).then(|| licenses.join(","))),
        ),
        ("MailProg", or_null(c.mail_program.clone())),
        (
            "MaxArraySize",
            or_null(c.max_array_size.map(|m| m.to_string())),
        ),
        (
            "MaxJobCount",
            or_null(c.max_job_count.map(|m| m.to_string())),
        ),
        ("MinJobAge", secs(c.min_job_age)),
        ("PriorityDecayHalfLife", duration(p.decay_half_life)),
        (
            "PriorityFavorSmall",
            if p.favor_small { "Yes" } else { "No" }.into(),
        ),
        ("PriorityMaxAge", duration(p.max_age)),
        ("PriorityType", "priority/multifactor".into()),
        ("PriorityWeightAge", p.weight_age.to_string()),
        ("PriorityWeightFairShare", p.weight_fairshare.to_string()),
        ("PriorityWeightJobSize", p.weight_job_size.to_string()),
        ("PriorityWeightPartition", p.weight_partition.to_string()),
        (
            "SchedulerParameters",
            format!("bf_max_job_test={}", c.backfill_reservations),
        ),
        ("SchedulerType", "sched/backfill".into()),
        ("SelectType", "select/cons_tres".into()),
        ("SelectTypeParameters", "CR_CORE_MEMORY".into()),
        (
            "SLURM_VERSION",
            format!("{} (berth {})", crate::compat::SLURM_VERSION, c.version),
        ),
        ("SlurmdTimeout", secs(c.node_timeout)),
        ("StateSaveLocation", c.state_dir.clone()),
    ];
    let mut text = format!(
        "Configuration data as of {}\n",
        crate::compat::slurm_timestamp(berth_controller::now())
    );
    for (name, value) in settings {
        text += &format!("{name:<23} = {value}\n");
    }
    text
}

/// Of `all` (each named by `name`), those `names` names (all where it names none), in
/// order; a name none has is scontrol's "not found", for `what`.
fn chosen<'a, T>(
    all: &'a [T],
    names: &[&str],
    what: &str,
    name: impl Fn(&T) -> &String,
) -> Result<Vec<&'a T>> {
    if let Some(unknown) = names.iter().find(|n| !all.iter().any(|t| name(t) == **n)) {
        bail!("scontrol: {what} {unknown} not found");
    }
    Ok(all
        .iter()
        .filter(|t| names.is_empty() || names.contains(&name(t).as_str()))
        .collect())
}

/// `scontrol show step [JOB[.STEP]]`: the running steps of every running job, or of the job
/// named, or the one step named, each a block in scontrol's `Key=Value` form.
fn steps_shown(specs: &[&str]) -> Result<Vec<String>> {
    let (jobs, step) = match specs {
        [] => (crate::batch::active_jobs(None, false)?, None),
        [spec] => {
            let (job, step) = match crate::batch::step_spec(spec) {
                Some((job, step)) => (job, Some(step)),
                None => (*spec, None),
            };
            (crate::batch::named_jobs(&[job.to_string()])?, step)
        }
        _ => bail!("scontrol show step [JOBID[.STEPID]]: one at most"),
    };
    let mut shown = Vec::new();
    for j in &jobs {
        let steps = crate::batch::running_steps(j).into_iter();
        for s in steps.filter(|s| step.is_none_or(|n| n == s.id)) {
            shown.push(format!(
                "StepId={}.{} UserId={} StartTime={} TimeLimit={}\n   State={} Partition={} NodeList={}\n   Nodes={} CPUs={} Tasks={} Name={} Network=(null)\n   TRES=cpu={},node={}\n",
                crate::batch::job_id(j),
                s.id,
                j.uid,
                crate::compat::slurm_timestamp(s.start),
                scontrol_time(s.time_limit),
                s.state,
                j.partition,
                berth_core::job::hostlist(s.nodes),
                s.nodes.len(),
                s.cpus,
                s.tasks,
                s.name,
                s.cpus,
                s.nodes.len(),
            ));
        }
    }
    Ok(shown)
}

/// `scontrol update NodeName=NODES State=DRAIN Reason=WHY` (or State=RESUME, IDLE, UNDRAIN):
/// each node drained (its running jobs finish, no new ones start) or back in service.
fn update_nodes(settings: &[&str]) -> Result<()> {
    let (mut names, mut state, mut reason) = (None, None, None);
    for s in settings {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("scontrol update: {s}: expected KEY=VALUE"))?;
        match key.to_ascii_lowercase().as_str() {
            "nodename" => names = Some(value),
            "state" => state = Some(value.to_ascii_uppercase()),
            "reason" => reason = Some(value),
            _ => bail!("scontrol update: berth changes a node's State (with a Reason), not {key}"),
        }
    }
    let names = names.expect("the translation saw NodeName=");
    let nodes = berth_core::job::expand_hostlist(names).ok_or_else(|| {
        anyhow::anyhow!("NodeName={names}: not a list of nodes (n1,n2 or n[1-2])")
    })?;
    nodes_named(&nodes)?;
    use crate::batch::NodeCommand;
    match state.as_deref() {
        Some("DRAIN") => {
            let reason = reason.ok_or_else(|| {
                anyhow::anyhow!("scontrol update: State=DRAIN needs a Reason=, as Slurm's does")
            })?;
            for node in nodes {
                let reason = reason.to_string();
                crate::batch::node(NodeCommand::Drain { node, reason })?;
            }
        }
        Some("RESUME" | "IDLE" | "UNDRAIN") => {
            for node in nodes {
                crate::batch::node(NodeCommand::Resume { node })?;
            }
        }
        Some("DOWN") => bail!(
            "scontrol update: berth does not take nodes down by hand (that would end their jobs): State=DRAIN lets them finish"
        ),
        Some(other) => bail!("scontrol update: State={other}: berth takes DRAIN, RESUME, IDLE or UNDRAIN"),
        None => bail!("scontrol update NodeName={names}: give the new State= (DRAIN with a Reason=, or RESUME)"),
    }
    Ok(())
}

/// `scontrol create reservation ReservationName=N StartTime=T (EndTime=T | Duration=D)
/// (Nodes=LIST|ALL | PartitionName=P) Users=U,... [Flags=F,...]`: its name, once made.
fn create_reservation(settings: &[&str]) -> Result<String> {
    let now = berth_controller::now();
    let time = |v: &str| -> Result<u64> {
        Ok(berth_core::job::parse_slurm_begin(v)?.resolve_in(now, berth_controller::utc_offset))
    };
    let mut r = berth_api::Reservation {
        name: String::new(),
        start_time: now,
        end_time: 0,
        nodes: Vec::new(),
        users: Vec::new(),
        flags: Vec::new(),
    };
    let mut duration = None;
    for s in settings {
        let (key, value) = s.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("scontrol create reservation: {s}: expected KEY=VALUE")
        })?;
        let list = || value.split(',').map(str::to_string).collect::<Vec<_>>();
        match key.to_ascii_lowercase().as_str() {
            "reservationname" | "reservation" => r.name = value.to_string(),
            "starttime" => r.start_time = time(value)?,
            "endtime" => r.end_time = time(value)?,
            // (UNLIMITED: a year, as Slurm makes it.)
            "duration" if ["UNLIMITED", "INFINITE"].contains(&value.to_ascii_uppercase().as_str()) => {
                duration = Some(365 * 86_400)
            }
            "duration" => duration = Some(berth_core::job::parse_slurm_time(value)?),
            "nodes" if value.eq_ignore_ascii_case("all") => r.nodes.clear(),
            "nodes" => {
                r.nodes = berth_core::job::expand_hostlist(value).ok_or_else(|| {
                    anyhow::anyhow!("Nodes={value}: not a list of nodes (n1,n2 or n[1-2])")
                })?
            }
            "partitionname" | "partition" => {
                let parts: Vec<PartitionInfo> =
                    crate::client::request("GET", "/v1/partitions", None::<&()>)?;
                let part = parts
                    .into_iter()
                    .find(|p| p.name == value)
                    .ok_or_else(|| anyhow::anyhow!("PartitionName={value}: no such partition"))?;
                r.nodes = part.nodes;
            }
            "users" | "user" => r.users = list(),
            "flags" | "flag" => r.flags = list(),
            _ => bail!(
                "scontrol create reservation: berth takes ReservationName, StartTime, EndTime or Duration, Nodes (or PartitionName), Users and Flags, not {key}"
            ),
        }
    }
    // Unnamed: its first user's name and a number, as Slurm names it (`alice_1`).
    if r.name.is_empty() {
        let Some(user) = r.users.first() else {
            bail!("scontrol create reservation: name the users whose jobs may run in it (Users=)");
        };
        let all: Vec<berth_api::Reservation> =
            crate::client::request("GET", "/v1/reservations", None::<&()>)?;
        let taken = |name: &str| all.iter().any(|r| r.name == name);
        let n = (1..)
            .find(|n| !taken(&format!("{user}_{n}")))
            .expect("a free number");
        r.name = format!("{user}_{n}");
    }
    r.end_time = match (r.end_time, duration) {
        (0, Some(d)) => r.start_time.saturating_add(d),
        (0, None) => bail!("scontrol create reservation: give its EndTime= or Duration="),
        (end, _) => end,
    };
    crate::client::request::<()>("POST", "/v1/reservations", Some(&r))?;
    Ok(r.name)
}

/// A reservation's state at `now`, as Slurm words it.
fn resv_state(r: &berth_api::Reservation, now: u64) -> &'static str {
    match r.start_time <= now {
        true => "ACTIVE",
        false => "INACTIVE",
    }
}

/// A reservation as `scontrol show reservation` shows it.
fn reservation_block(r: &berth_api::Reservation) -> String {
    let now = berth_controller::now();
    let or_null = |v: String| {
        if v.is_empty() {
            "(null)".to_string()
        } else {
            v
        }
    };
    format!(
        "ReservationName={} StartTime={} EndTime={} Duration={}\n   Nodes={} NodeCnt={} Features=(null) PartitionName=(null) Flags={}\n   Users={} Groups=(null) Accounts=(null) Licenses=(null) State={} BurstBuffer=(null)\n",
        r.name,
        super::slurm_timestamp(r.start_time),
        super::slurm_timestamp(r.end_time),
        berth_core::job::format_duration(r.end_time.saturating_sub(r.start_time)),
        or_null(berth_core::job::hostlist(&r.nodes)),
        r.nodes.len(),
        or_null(r.flags.join(",")),
        r.users.join(","),
        resv_state(r, now),
    )
}

/// A node's available memory as its agent last reported it, in MiB (Slurm's FreeMem).
fn free_mib(n: &NodeInfo) -> Option<f64> {
    n.memory_available.map(|m| (m >> 20) as f64)
}

/// Known values as sinfo shows a measured field of several nodes: one, or `LOW-HIGH`, with
/// `decimals` digits; `N/A` if no node has one.
fn span(values: impl Iterator<Item = Option<f64>>, decimals: usize) -> String {
    let known: Vec<f64> = values.flatten().collect();
    let low = known.iter().copied().reduce(f64::min);
    let high = known.iter().copied().reduce(f64::max);
    match (low, high) {
        (Some(low), Some(high)) if format!("{low:.decimals$}") == format!("{high:.decimals$}") => {
            format!("{low:.decimals$}")
        }
        (Some(low), Some(high)) => format!("{low:.decimals$}-{high:.decimals$}"),
        _ => "N/A".into(),
    }
}

/// A node as `scontrol show node` shows it (what berth knows of it).
fn node_block(n: &NodeInfo) -> String {
    let null = |v: String| {
        if v.is_empty() {
            "(null)".to_string()
        } else {
            v
        }
    };
    let features = null(n.features.join(","));
    let state = match (drained(n), n.cpus_allocated) {
        (true, 0) => "IDLE+DRAIN".to_string(),
        (true, a) if a < n.cpus => "MIXED+DRAIN".into(),
        (true, _) => "ALLOCATED+DRAIN".into(),
        (false, _) => n.state.to_ascii_uppercase(),
    };
    let load = span(std::iter::once(n.cpu_load()), 2);
    let free = span(std::iter::once(free_mib(n)), 0);
    let [sockets, cores, threads] = n.topology();
    let mut block = format!(
        "NodeName={} Arch={} CoresPerSocket={cores}\n   CPUAlloc={} CPUTot={} CPULoad={load}\n   AvailableFeatures={features}\n   ActiveFeatures={features}\n   Gres={}\n   NodeAddr={} NodeHostName={}\n   RealMemory={} AllocMem={} FreeMem={free} Sockets={sockets} Boards=1\n   State={state} ThreadsPerCore={threads}\n   Partitions={}\n",
        n.name,
        null(n.arch.clone()),
        n.cpus_allocated,
        n.cpus,
        null(if n.gpus > 0 { format!("gpu:{}", n.gpus) } else { String::new() }),
        n.name,
        n.name,
        n.memory >> 20,
        n.memory_allocated >> 20,
        null(n.partitions.join(",")),
    );
    // Who set it and when, as Slurm appends them (`Reason=maintenance [root@2026-...]`).
    if let Some(reason) = &n.reason {
        let by = match (&n.reason_user, n.reason_time) {
            (Some(user), Some(at)) => format!(" [{user}@{}]", super::slurm_timestamp(at)),
            _ => String::new(),
        };
        block.push_str(&format!("   Reason={reason}{by}\n"));
    }
    block
}

/// A partition as `scontrol show partition` shows it (what berth knows of it).
fn partition_block(p: &PartitionInfo, nodes: &[NodeInfo]) -> String {
    let cpus: u64 = nodes
        .iter()
        .filter(|n| p.nodes.contains(&n.name))
        .map(|n| u64::from(n.cpus))
        .sum();
    format!(
        "PartitionName={}\n   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL\n   Default={}\n   DefaultTime={} MaxNodes=UNLIMITED MaxTime={} MinNodes=0\n   Nodes={}\n   PriorityTier={}\n   State={} TotalCPUs={cpus} TotalNodes={}\n",
        p.name,
        if p.default { "YES" } else { "NO" },
        p.default_time
            .map_or("NONE".into(), |t| scontrol_time(Some(t))),
        scontrol_time(p.max_time),
        berth_core::job::hostlist(&p.nodes),
        p.priority,
        p.state.to_ascii_uppercase(),
        p.nodes.len(),
    )
}

/// `sprio`: pending jobs' priorities, factor by factor (weighted), in sprio's columns.
pub fn sprio(mut words: Vec<String>) -> Result<i32> {
    let no_header = flag(&mut words, "-h") | flag(&mut words, "--noheader");
    // -l: the user's name too, and the factors berth has none of (ASSOC, TRES).
    let long = flag(&mut words, "-l") | flag(&mut words, "--long");
    let weights = flag(&mut words, "-w") | flag(&mut words, "--weights");
    let jobs = option(&mut words, "-j", "--jobs")?;
    let users = option(&mut words, "-u", "--user")?;
    let partitions = option(&mut words, "-p", "--partition")?;
    no_other_options(
        "sprio",
        &words,
        "sprio [-h] [-l] [-w] [-j JOBS] [-u USERS] [-p PARTITIONS]",
    )?;
    let list = |v: &Option<String>| -> Vec<String> {
        v.iter()
            .flat_map(|v| v.split(','))
            .map(str::to_string)
            .collect()
    };
    let (jobs, users, partitions) = (list(&jobs), list(&users), list(&partitions));
    let mut out = std::io::stdout().lock();
    if !no_header {
        writeln!(
            out,
            "{}",
            sprio_line(
                "JOBID",
                "PARTITION",
                long.then_some(["USER", "ASSOC", "TRES"]),
                [
                    "PRIORITY",
                    "SITE",
                    "AGE",
                    "FAIRSHARE",
                    "JOBSIZE",
                    "PARTITION",
                    "QOS",
                    "NICE"
                ]
                .map(String::from)
            )
        )?;
    }
    // -w: the weights alone, in their columns (the site factor is 1; berth has no QOS).
    if weights {
        let config: berth_api::ConfigInfo =
            crate::client::request("GET", "/v1/config", None::<&()>)?;
        let p = &config.priority;
        let columns = [
            String::new(),
            "1".into(),
            p.weight_age.to_string(),
            p.weight_fairshare.to_string(),
            p.weight_job_size.to_string(),
            p.weight_partition.to_string(),
            "0".into(),
            String::new(),
        ];
        let user = long.then_some(["", "", ""]);
        writeln!(
            out,
            "{}",
            sprio_line("Weights", "", user, columns).trim_end()
        )?;
        return Ok(0);
    }
    let active = crate::batch::active_jobs(None, false)?;
    for j in active.iter().filter(|j| j.state == "PENDING") {
        let id = crate::batch::job_id(j);
        let chosen = (jobs.is_empty() || jobs.contains(&id) || jobs.contains(&j.id.to_string()))
            && (users.is_empty() || users.contains(&j.user))
            && (partitions.is_empty() || partitions.contains(&j.partition));
        let Some(f) = j.priority_factors.filter(|_| chosen) else {
            continue;
        };
        let n = |v: f64| format!("{:.0}", v);
        let columns = [
            n(j.priority.unwrap_or(0.0)),
            "0".into(),
            n(f.age),
            n(f.fairshare),
            n(f.job_size),
            n(f.partition),
            "0".into(),
            f.nice.to_string(),
        ];
        let long = long.then_some([j.user.as_str(), "0", ""]);
        writeln!(out, "{}", sprio_line(&id, &j.partition, long, columns))?;
    }
    Ok(0)
}

/// One line of sprio: the job id right-aligned in 15, the partition left in 9, the
/// numbers right in 10; -l's (`long`: the user, ASSOC and TRES): the user right in 8 after
/// the partition, ASSOC after AGE and TRES at the end, as sprio -l has them.
fn sprio_line(id: &str, partition: &str, long: Option<[&str; 3]>, numbers: [String; 8]) -> String {
    let mut numbers: Vec<String> = numbers.iter().map(|n| format!("{n:>10}")).collect();
    let Some([user, assoc, tres]) = long else {
        return format!("{id:>15} {partition:<9} {}", numbers.join(" "));
    };
    numbers.insert(3, format!("{assoc:>10}"));
    let user = crate::batch::truncate(user, 8);
    format!(
        "{id:>15} {partition:<9} {user:>8} {} {tres:>20}",
        numbers.join(" ")
    )
}

/// sshare's fields berth reports, and their default widths.
const SHARE_FIELDS: &[(&str, usize)] = &[
    ("User", 10),
    ("RawShares", 10),
    ("NormShares", 11),
    ("RawUsage", 11),
    ("EffectvUsage", 13),
    ("FairShare", 10),
];

/// `sshare`: each user's shares, usage and fair-share factor, in sshare's columns.
pub fn sshare(mut words: Vec<String>) -> Result<i32> {
    let no_header = flag(&mut words, "-n") | flag(&mut words, "--noheader");
    let parsable = flag(&mut words, "-P") | flag(&mut words, "--parsable2");
    let json = flag(&mut words, "--json");
    // Every user's lines are shown anyway.
    flag(&mut words, "-a");
    flag(&mut words, "--all");
    let users = option(&mut words, "-u", "--users")?;
    let fields = option(&mut words, "-o", "--format")?;
    no_other_options(
        "sshare",
        &words,
        "sshare [-a] [-n] [-P] [-u USERS] [-o FIELD,...] [--json]",
    )?;
    let users: Vec<&str> = users
        .as_deref()
        .map_or(Vec::new(), |u| u.split(',').collect());
    let mut shares: Vec<berth_api::ShareInfo> =
        crate::client::request("GET", "/v1/shares", None::<&()>)?;
    shares.retain(|s| users.is_empty() || users.contains(&s.user.as_str()));
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&shares)?)?;
        return Ok(0);
    }
    let fields: Vec<String> = fields
        .iter()
        .flat_map(|f| f.split(','))
        .map(String::from)
        .collect();
    let table = crate::batch::Table::new(
        &fields,
        "User,RawShares,NormShares,RawUsage,EffectvUsage,FairShare",
        SHARE_FIELDS,
        parsable,
    )?;
    if !no_header {
        writeln!(out, "{}", table.line(str::to_string))?;
        if let Some(dashes) = table.dashes() {
            writeln!(out, "{dashes}")?;
        }
    }
    for s in &shares {
        let line = table.line(|name| match name {
            "User" => s.user.clone(),
            "RawShares" => s.raw_shares.to_string(),
            "NormShares" => format!("{:.6}", s.norm_shares),
            "RawUsage" => s.raw_usage.to_string(),
            "EffectvUsage" => format!("{:.6}", s.effective_usage),
            _ => format!("{:.6}", s.fairshare),
        });
        writeln!(out, "{line}")?;
    }
    Ok(0)
}

/// `seff JOB`: how much of what a job had it used, CPU time and memory, as Slurm's seff
/// prints it (its lines are read by scripts: `CPU Efficiency: 62.50% of ...`).
pub fn seff(words: Vec<String>) -> Result<i32> {
    let [spec] = words.as_slice() else {
        bail!("usage: seff JOBID (one job: ID, or ID_INDEX for an array's task)");
    };
    let (id, index) = crate::batch::job_spec(spec)?;
    // An array job's id is its first task, as seff shows it.
    let jobs = crate::batch::named_jobs(std::slice::from_ref(spec))?;
    let j = jobs
        .iter()
        .find(|j| index.is_some() || j.id == id)
        .or(jobs.first())
        .ok_or_else(|| anyhow::anyhow!("{spec}: no such job"))?;
    let mut out = std::io::stdout().lock();
    let running = matches!(j.state.as_str(), "RUNNING" | "SUSPENDED");
    let usage = running.then(|| crate::batch::running_usage(j)).flatten();
    let nodes: Vec<NodeInfo> = crate::client::request("GET", "/v1/nodes", None::<&()>)?;
    write!(out, "{}", efficiency(j, usage.as_ref(), &nodes))?;
    Ok(0)
}

/// seff's report of job `j` (`usage`: a running job's so far), its memory against what it
/// was given on its nodes (theirs whole, without a limit).
fn efficiency(
    j: &berth_api::JobInfo,
    usage: Option<&berth_api::JobUsage>,
    nodes: &[NodeInfo],
) -> String {
    use std::fmt::Write;
    let mut text = format!("Job ID: {}\n", j.id);
    if let (Some(array), Some(task)) = (j.array_job_id, j.array_task_id) {
        let _ = writeln!(text, "Array Job ID: {array}_{task}");
    }
    let group = berth_runtime::Identity::lookup(&j.user, false)
        .map_or_else(|_| j.user.clone(), |i| i.group);
    let _ = writeln!(text, "User/Group: {}/{group}", j.user);
    // (The exit status, as sacct's ExitCode's first half: 0 for a job a signal ended.)
    let state = match (j.state.as_str(), j.exit_code.filter(|_| j.signal.is_none())) {
        ("PENDING" | "RUNNING" | "SUSPENDED", _) => j.state.clone(),
        (state, code) => format!("{state} (exit code {})", code.unwrap_or(0)),
    };
    let _ = writeln!(text, "State: {state}");
    let count = j.nodes.len().max(1) as u64;
    match j.cpus {
        1 => {
            let _ = writeln!(text, "Cores: 1");
        }
        cpus => {
            let _ = writeln!(text, "Nodes: {count}\nCores per node: {}", cpus / count);
        }
    }
    if j.state == "PENDING" {
        let _ = writeln!(
            text,
            "Efficiency not available for jobs in the PENDING state."
        );
        return text;
    }
    let wall = crate::batch::elapsed(j);
    let cpu_usec = match usage {
        Some(u) => (u.cpu_seconds() * 1e6) as u64,
        None => j.cpu_usec.unwrap_or(0),
    };
    let core_wall = wall * j.cpus;
    let percent = |part: f64, whole: f64| {
        if whole > 0.0 {
            part / whole * 100.0
        } else {
            0.0
        }
    };
    let _ = writeln!(
        text,
        "CPU Utilized: {}",
        crate::batch::duration(cpu_usec / 1_000_000)
    );
    let _ = writeln!(
        text,
        "CPU Efficiency: {:.2}% of {} core-walltime",
        percent(cpu_usec as f64 / 1e6, core_wall as f64),
        crate::batch::duration(core_wall)
    );
    let _ = writeln!(
        text,
        "Job Wall-clock time: {}",
        crate::batch::duration(wall)
    );
    let used = match usage {
        Some(u) => u.max_memory_bytes(),
        None => crate::batch::peak_memory(j).unwrap_or(0),
    };
    // What it was given: its limit on each node, or without one each node's memory.
    let given: u64 = match j.memory {
        Some(per_node) => per_node * count,
        None => nodes
            .iter()
            .filter(|n| j.nodes.contains(&n.name))
            .map(|n| n.memory)
            .sum(),
    };
    let _ = writeln!(text, "Memory Utilized: {}", kibibytes(used / 1024));
    let _ = writeln!(
        text,
        "Memory Efficiency: {:.2}% of {}",
        percent(used as f64, given as f64),
        kibibytes(given / 1024)
    );
    if matches!(j.state.as_str(), "RUNNING" | "SUSPENDED") {
        let _ = writeln!(
            text,
            "WARNING: Efficiency statistics may be misleading for RUNNING jobs."
        );
    }
    text
}

/// A size in KiB as seff prints it: two decimals in the largest unit it reaches (`36.47
/// MB`), `0.00 MB` for none.
fn kibibytes(kib: u64) -> String {
    if kib == 0 {
        return "0.00 MB".into();
    }
    let mut value = kib as f64;
    let mut units = ["KB", "MB", "GB", "TB", "PB", "EB"].into_iter().peekable();
    let mut unit = units.next().expect("KB");
    while value >= 1024.0 && units.peek().is_some() {
        value /= 1024.0;
        unit = units.next().expect("peeked");
    }
    format!("{value:.2} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: &str, cpus: u32, allocated: u32) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            state: state.into(),
            partitions: vec!["batch".into()],
            cpus,
            cpus_allocated: allocated,
            memory: 4 << 30,
            memory_allocated: 1 << 30,
            gpus: 0,
            features: Vec::new(),
            reason: None,
            reason_user: None,
            reason_time: None,
            arch: "x86_64".into(),
            cpu_model: String::new(),
            swap: 0,
            sockets: 0,
            cores_per_socket: 0,
            threads_per_core: 0,
            load: Some(vec![0.5, 0.25, 0.125]),
            memory_available: Some(3 << 30),
            heard: Some(2),
            images: Vec::new(),
        }
    }

    #[test]
    fn seff_reports_a_jobs_use_of_what_it_had() {
        let job = |extra: serde_json::Value| {
            let mut j = serde_json::json!({
                "id": 7, "name": "sim", "user": "root", "partition": "batch",
                "state": "COMPLETED", "submit_time": 100, "start_time": 100,
                "end_time": 400, "nodes": ["n1", "n2"], "cpus": 4, "exit_code": 0,
                "cpu_usec": 600_000_000u64, "max_rss_bytes": 37_340u64 << 10,
                "memory": 1u64 << 30, "workdir": "/w", "stdout": "/w/o", "held": false,
            });
            j.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value::<berth_api::JobInfo>(j).unwrap()
        };
        let nodes = [node("n1", "idle", 2, 0), node("n2", "idle", 2, 0)];
        assert_eq!(
            efficiency(&job(serde_json::json!({})), None, &nodes),
            "Job ID: 7\nUser/Group: root/root\nState: COMPLETED (exit code 0)\nNodes: 2\n\
             Cores per node: 2\nCPU Utilized: 00:10:00\nCPU Efficiency: 50.00% of 00:20:00 \
             core-walltime\nJob Wall-clock time: 00:05:00\nMemory Utilized: 36.46 MB\n\
             Memory Efficiency: 1.78% of 2.00 GB\n"
        );
        // Without a limit, its nodes' memory; a pending job has no figures yet.
        let unlimited = job(serde_json::json!({"memory": null, "state": "FAILED", "exit_code": 3}));
        let text = efficiency(&unlimited, None, &nodes);
        assert!(text.contains("State: FAILED (exit code 3)\n"), "{text}");
        assert!(
            text.ends_with("Memory Efficiency: 0.45% of 8.00 GB\n"),
            "{text}"
        );
        // A step's tasks that held more than the job's cgroup tells (pages they share): theirs.
        let step = serde_json::json!({
            "id": 0, "ntasks": 1, "command": "sim", "start_time": 100, "node": "n1",
            "usage": {"user_usec": 1, "system_usec": 1, "max_rss_bytes": 50u64 << 20},
        });
        let stepped = job(serde_json::json!({"steps": [step]}));
        let text = efficiency(&stepped, None, &nodes);
        assert!(text.contains("Memory Utilized: 50.00 MB\n"), "{text}");
        // One a signal ended: exit code 0, as sacct's 0:9.
        let killed = job(serde_json::json!({"state": "FAILED", "exit_code": 137, "signal": 9}));
        let text = efficiency(&killed, None, &nodes);
        assert!(text.contains("State: FAILED (exit code 0)\n"), "{text}");
        let pending = job(serde_json::json!({"state": "PENDING", "nodes": [], "cpus": 1}));
        assert!(efficiency(&pending, None, &nodes).ends_with(
            "State: PENDING\nCores: 1\nEfficiency not available for jobs in the PENDING state.\n"
        ));
        assert_eq!(kibibytes(0), "0.00 MB");
        assert_eq!(kibibytes(512), "512.00 KB");
    }

    fn partition(name: &str, nodes: &[&str]) -> PartitionInfo {
        PartitionInfo {
            name: name.into(),
            default: name == "batch",
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            max_time: Some(3600),
            default_time: (name == "batch").then_some(600),
            state: "up".into(),
            priority: 1,
            max_jobs_per_user: None,
            max_cpus_per_user: None,
        }
    }

    fn lines(
        parts: &[PartitionInfo],
        nodes: &[NodeInfo],
        node_lines: bool,
        format: &str,
    ) -> Vec<String> {
        let rows = rows(parts, nodes, node_lines, false);
        let columns = parse_format(format, FIELDS).unwrap();
        rows.iter()
            .map(|r| render(&columns, |c| field(c, r)))
            .collect()
    }

    #[test]
    fn a_partitions_nodes_are_grouped_by_state_and_listed_as_a_hostlist() {
        let nodes = [
            node("n1", "idle", 4, 0),
            node("n2", "allocated", 4, 4),
            node("n3", "idle", 4, 0),
            node("n4", "draining", 4, 2),
        ];
        let parts = [
            partition("batch", &["n1", "n2", "n3", "n4"]),
            partition("empty", &[]),
        ];
        assert_eq!(
            lines(&parts, &nodes, false, "%P %a %l %L %D %t %N"),
            [
                "batch* up 1:00:00 10:00 2 idle n[1,3]",
                "batch* up 1:00:00 10:00 1 alloc n2",
                "batch* up 1:00:00 10:00 1 drng n4",
                "empty up 1:00:00 n/a 0 n/a ",
            ]
        );
        assert_eq!(
            lines(&parts[..1], &nodes, true, "%N %c %C %m %e %T"),
            [
                "n1 4 0/4/0/4 4096 3072 idle",
                "n2 4 4/0/0/4 4096 3072 allocated",
                "n3 4 0/4/0/4 4096 3072 idle",
                "n4 4 2/0/2/4 4096 3072 draining",
            ]
        );
        let all = rows(&parts[..1], &nodes, false, true);
        assert_eq!(field('F', &all[0]), "2/2/0/4");
        // An idle node in a reservation in force is resv; one to come leaves it idle.
        let reservation = |name: &str, start: u64, nodes: &[&str]| berth_api::Reservation {
            name: name.into(),
            start_time: start,
            end_time: 200,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            users: vec!["root".into()],
            flags: Vec::new(),
        };
        let mut marked = nodes.clone();
        let resvs = [
            reservation("now", 50, &["n1", "n2"]),
            reservation("later", 150, &["n3"]),
        ];
        mark_reserved(&mut marked, &resvs, 100);
        assert_eq!(
            lines(&parts[..1], &marked, false, "%t %N"),
            ["resv n1", "alloc n2", "idle n3", "drng n4"]
        );
        // What the agents report: one value, a range where nodes differ, N/A where none has.
        assert_eq!(field('O', &all[0]), "0.50");
        assert_eq!(field('e', &all[0]), "3072");
        let loads = [Some(1.5), None, Some(0.25)].into_iter();
        assert_eq!(span(loads, 2), "0.25-1.50");
        assert_eq!(span([None, None].into_iter(), 0), "N/A");
        // The nodes' layout (S:C:T): where an agent did not say, each CPU a core; the
        // least where they differ.
        assert_eq!(field('z', &all[0]), "1:4:1");
        let mut laid_out = nodes.clone();
        (
            laid_out[0].sockets,
            laid_out[0].cores_per_socket,
            laid_out[0].threads_per_core,
        ) = (2, 1, 2);
        let all = rows(&parts[..1], &laid_out, false, true);
        assert_eq!(field('z', &all[0]), "1+:1+:1+");
        assert_eq!(
            lines(&parts[..1], &laid_out, true, "%N %z %X %Y %Z")[0],
            "n1 2:1:2 2 1 2"
        );
    }

    #[test]
    fn time_limits_read_as_slurm_prints_them() {
        assert_eq!(slurm_time(90), "1:30");
        assert_eq!(slurm_time(3600), "1:00:00");
        assert_eq!(slurm_time(86400 + 61), "1-00:01:01");
        assert_eq!(scontrol_time(Some(1800)), "00:30:00");
        assert_eq!(scontrol_time(Some(2 * 86400)), "2-00:00:00");
        assert_eq!(scontrol_time(None), "UNLIMITED");
    }

    #[test]
    fn scontrol_shows_a_node_and_a_partition_as_key_value_blocks() {
        let n = NodeInfo {
            reason: Some("maintenance".into()),
            reason_user: Some("root".into()),
            reason_time: Some(3 * 86400),
            gpus: 2,
            sockets: 2,
            cores_per_socket: 1,
            threads_per_core: 2,
            ..node("n4", "drain", 4, 0)
        };
        let block = node_block(&n);
        for part in [
            "NodeName=n4 Arch=x86_64 CoresPerSocket=1",
            "Sockets=2 Boards=1",
            "ThreadsPerCore=2",
            "CPUAlloc=0 CPUTot=4 CPULoad=0.50",
            "FreeMem=3072",
            "Gres=gpu:2",
            "RealMemory=4096 AllocMem=1024",
            "State=IDLE+DRAIN",
            "Partitions=batch",
            "Reason=maintenance [root@1970-01-0",
        ] {
            assert!(block.contains(part), "{part}: {block}");
        }
        let p = partition_block(
            &partition("batch", &["n1", "n2"]),
            &[node("n1", "idle", 4, 0), node("n2", "idle", 8, 0)],
        );
        for part in [
            "PartitionName=batch",
            "Default=YES",
            "DefaultTime=00:10:00 MaxNodes=UNLIMITED MaxTime=01:00:00",
            "Nodes=n[1-2]",
            "State=UP TotalCPUs=12 TotalNodes=2",
        ] {
            assert!(p.contains(part), "{part}: {p}");
        }
    }
}
