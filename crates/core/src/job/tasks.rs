//! How tasks are spread over nodes, and Slurm's compact way of writing counts per node.

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

/// `tasks` spread over `nodes` in blocks, as srun's default distribution does: each node
/// gets `tasks / nodes`, and the first `tasks % nodes` one more.
pub fn block_layout(tasks: u32, nodes: u32) -> Vec<u32> {
    let nodes = nodes.max(1);
    (0..nodes)
        .map(|i| tasks / nodes + u32::from(i < tasks % nodes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_node_in_slurms_compact_form() {
        assert_eq!(per_node([2, 2, 2, 1]), "2(x3),1");
        assert_eq!(per_node([4]), "4");
        assert_eq!(per_node([1, 2, 2]), "1,2(x2)");
        assert_eq!(per_node([]), "");
    }

    #[test]
    fn tasks_spread_in_blocks_the_first_nodes_one_more() {
        assert_eq!(block_layout(5, 2), [3, 2]);
        assert_eq!(block_layout(4, 2), [2, 2]);
        assert_eq!(block_layout(7, 3), [3, 2, 2]);
        assert_eq!(block_layout(2, 3), [1, 1, 0]);
    }
}
