//! How tasks are spread over nodes, and Slurm's compact ways of writing counts per node and
//! lists of nodes.

/// Slurm's compact form of a count per node, as in SLURM_TASKS_PER_NODE: `2(x3),1` for
/// 2, 2, 2, 1.
pub fn per_node(counts: impl IntoIterator<Item = u64>) -> String {
    let mut runs: Vec<(u64, usize)> = Vec::new();
    for c in counts {
        match runs.last_mut() {
            Some((last, n)) if *last == c => *n += 1,
            _ => runs.push((c, 1)),
        }
    }
    runs.iter()
        .map(|&(c, n)| {
            if n == 1 {
                c.to_string()
            } else {
                format!("{c}(x{n})")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Node names in Slurm's order: by the name before their number, then by the number
/// (`n2` before `n10`), as its node lists are sorted.
pub fn node_order(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |name: &str| {
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, number) = name.split_at(name.len() - digits);
        (prefix.to_string(), number.parse::<u64>().ok())
    };
    split(a).cmp(&split(b)).then_with(|| a.cmp(b))
}

/// A list of node names in Slurm's hostlist form, as SLURM_JOB_NODELIST has it and the
/// programs that read it (MPI launchers among them) expect: names that differ only in a
/// number at their end share brackets, consecutive numbers a range (`n[1-3,5]`, zero padding
/// kept: `n[01-03]`). The order is kept: adjacent names with the same prefix are grouped.
pub fn hostlist<S: AsRef<str>>(names: &[S]) -> String {
    // (prefix, width of zero-padded numbers (0: not padded), numbers) of each group; a name
    // without a number is a group of its own, without numbers.
    let mut groups: Vec<(&str, usize, Vec<u64>)> = Vec::new();
    for name in names {
        let name = name.as_ref();
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, number) = name.split_at(name.len() - digits);
        let width = if number.len() > 1 && number.starts_with('0') {
            digits
        } else {
            0
        };
        match (number.parse::<u64>(), groups.last_mut()) {
            (Ok(n), Some((p, w, ns))) if *p == prefix && *w == width && !ns.is_empty() => {
                ns.push(n)
            }
            (Ok(n), _) => groups.push((prefix, width, vec![n])),
            (Err(_), _) => groups.push((name, 0, Vec::new())),
        }
    }
    let mut out: Vec<String> = Vec::new();
    for (prefix, width, numbers) in groups {
        if numbers.is_empty() {
            out.push(prefix.to_string());
            continue;
        }
        let pad = |n: u64| format!("{n:0width$}");
        if numbers.len() == 1 {
            out.push(format!("{prefix}{}", pad(numbers[0])));
            continue;
        }
        let mut ranges: Vec<String> = Vec::new();
        let mut start = 0;
        for i in 1..=numbers.len() {
            if i == numbers.len() || numbers[i] != numbers[i - 1] + 1 {
                ranges.push(if i - 1 == start {
                    pad(numbers[start])
                } else {
                    format!("{}-{}", pad(numbers[start]), pad(numbers[i - 1]))
                });
                start = i;
            }
        }
        out.push(format!("{prefix}[{}]", ranges.join(",")));
    }
    out.join(",")
}

/// `tasks` spread over `nodes` in blocks, as srun's default distribution does: each node
/// gets `tasks / nodes`, and the first `tasks % nodes` one more.
pub fn block_layout(tasks: u32, nodes: u32) -> Vec<u32> {
    let nodes = nodes.max(1);
    (0..nodes)
        .map(|i| tasks / nodes + u32::from(i < tasks % nodes))
        .collect()
}

/// The names a hostlist stands for (`n[1-3,05],gpu1` -> n1 n2 n3 n05 gpu1), in its order:
/// [`hostlist`]'s form read back, with any number of bracket groups per name. `None` if it is
/// malformed (an unclosed bracket, a range going down, a blank) or stands for more than
/// 65,536 names.
pub fn expand_hostlist(list: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in list.char_indices().chain([(list.len(), ',')]) {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                expand_name(&list[start..i], &mut out)?;
                start = i + 1;
            }
            c if c.is_whitespace() => return None,
            _ => {}
        }
    }
    (depth == 0).then_some(out)
}

/// Appends the names one item of a hostlist stands for.
fn expand_name(item: &str, out: &mut Vec<String>) -> Option<()> {
    let Some(open) = item.find('[') else {
        (!item.is_empty() && !item.contains(']')).then(|| out.push(item.to_string()))?;
        return Some(());
    };
    let close = open + item[open..].find(']')?;
    let (prefix, ranges, rest) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    for range in ranges.split(',') {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        let (lo, hi): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
        if hi < lo || hi - lo >= 65_536 {
            return None;
        }
        let width = if a.len() > 1 && a.starts_with('0') {
            a.len()
        } else {
            0
        };
        for n in lo..=hi {
            expand_name(&format!("{prefix}{n:0width$}{rest}"), out)?;
            if out.len() > 65_536 {
                return None;
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_sort_by_name_then_number() {
        let mut nodes = ["n10", "gpu1", "n2", "n02", "n1", "login"];
        nodes.sort_by(|a, b| node_order(a, b));
        assert_eq!(nodes, ["gpu1", "login", "n1", "n02", "n2", "n10"]);
    }

    #[test]
    fn counts_per_node_in_slurms_compact_form() {
        assert_eq!(per_node([2, 2, 2, 1]), "2(x3),1");
        assert_eq!(per_node([4]), "4");
        assert_eq!(per_node([1, 2, 2]), "1,2(x2)");
        assert_eq!(per_node([]), "");
    }

    #[test]
    fn node_lists_in_slurms_hostlist_form() {
        assert_eq!(hostlist(&["bt1-h1", "bt1-h2", "bt1-h3"]), "bt1-h[1-3]");
        assert_eq!(hostlist(&["n01", "n02", "n03", "n07"]), "n[01-03,07]");
        assert_eq!(hostlist(&["n2", "n1", "n3"]), "n[2,1,3]");
        assert_eq!(hostlist(&["vm"]), "vm");
        assert_eq!(hostlist(&["a1"]), "a1");
        assert_eq!(hostlist(&["a1", "b1", "b2", "login"]), "a1,b[1-2],login");
        assert_eq!(hostlist(&["n9", "n10"]), "n[9-10]");
        assert_eq!(hostlist(&["n09", "n10"]), "n09,n10");
        assert_eq!(hostlist::<&str>(&[]), "");
    }

    #[test]
    fn hostlists_expand_to_their_names() {
        let names = |l: &str| expand_hostlist(l).unwrap();
        assert_eq!(names("n[1-3,05],gpu1"), ["n1", "n2", "n3", "n05", "gpu1"]);
        assert_eq!(names("n[01-03,07]"), ["n01", "n02", "n03", "n07"]);
        assert_eq!(names("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(names("a-[9-10].x"), ["a-9.x", "a-10.x"]);
        assert_eq!(names("login"), ["login"]);
        // What hostlist writes, read back.
        let all = ["bt1-h1", "bt1-h2", "n09", "n10", "login"];
        assert_eq!(names(&hostlist(&all)), all);
        for bad in [
            "",
            "n[1-3",
            "n1-3]",
            "n[3-1]",
            "n[a-b]",
            "a,,b",
            "n[1 -2]",
            "n[1-99999]",
        ] {
            assert_eq!(expand_hostlist(bad), None, "{bad}");
        }
    }

    #[test]
    fn tasks_spread_in_blocks_the_first_nodes_one_more() {
        assert_eq!(block_layout(5, 2), [3, 2]);
        assert_eq!(block_layout(4, 2), [2, 2]);
        assert_eq!(block_layout(7, 3), [3, 2, 2]);
        assert_eq!(block_layout(2, 3), [1, 1, 0]);
    }
}
