//! Backfill reservations: when a job cannot start now, find when it could, and hold those
//! resources for it so lower-priority jobs started meanwhile cannot push it back.
//!
//! Owns: the timeline sweep that finds a blocked job's expected start, and laying the
//! reservation ([`Slot`]s) on the nodes it will use. Like Slurm's backfill plugin, the
//! future is read from running jobs' expected ends (start + time limit); a lower-priority job
//! may then start now only if it ends before the reservation starts, or takes only what the
//! reservation leaves over ([`crate::state::NodeRt::allows`]). With one reservation this is
//! EASY backfill; `Config::reservations` keeps several (the first K blocked jobs), towards
//! Slurm's conservative backfill.
//!
//! The sweep, for a job of duration `d` needing `k` nodes of a partition: every up member's
//! free capacity starts at what is free now and grows at each release (running jobs' ends and
//! this pass's starts); a node "fits" at time `t` if what is free then, minus every
//! reservation overlapping `[t, t + d)`, covers the job, and every such reservation's slack
//! covers it too (so it keeps its own guarantee). Free capacity only grows between the times
//! a reservation starts overlapping the window, so the sweep needs to look only at event
//! times: releases, and the edges of other reservations' windows. The first time at least `k`
//! nodes fit is the expected start. Cost: O(E log E + M) for E events over M members, and it
//! runs only for the first K blocked jobs.

use crate::feasible::Shape;
use crate::model::Res;
use crate::state::{pick, Eligible, NodeRt, Slot, State};

/// Whether `node` could give `want` from `t` for `d` seconds, given `free` (its free capacity
/// at `t`) and the reservations already on it (but `member`'s, which the job runs in).
fn fits_at(
    node: &NodeRt<'_>,
    free: Res,
    want: &Res,
    (t, d): (u64, u64),
    member: Option<usize>,
) -> bool {
    let mut avail = free;
    for s in node
        .slots_against(member)
        .filter(|s| s.overlaps(t, t.saturating_add(d)))
    {
        if !s.slack.covers(want) || !avail.covers(&s.amount) {
            return false;
        }
        avail = avail.sub(&s.amount);
    }
    avail.covers(want)
}

impl State<'_> {
    /// Reserves, for a job of partition `p` with this shape running `d` seconds, the earliest
    /// resources it can have; returns the reservation's start (the job's expected start) and
    /// its nodes, or `None` if no time was found (all members down, say).
    /// With `among`, only the nodes the job may have, and all those it must.
    pub fn reserve(
        &mut self,
        p: usize,
        shape: &Shape,
        d: u64,
        among: Option<&Eligible>,
    ) -> Option<(u64, Vec<usize>)> {
        let now = self.now;
        let k = usize::try_from(shape.k_min).unwrap_or(usize::MAX);
        let first = usize::try_from(shape.most_nodes).unwrap_or(usize::MAX);
        // Nodes for one task fewer than the most, where some of its nodes may have fewer.
        let lesser = shape.lesser();
        let members: Vec<usize> = self.parts[p]
            .members
            .iter()
            .copied()
            .filter(|&n| self.nodes[n].up && self.nodes[n].total.covers(&lesser.need))
            .filter(|&n| among.is_none_or(|a| a.ok[n]))
            .collect();
        if members.len() < k {
            return None;
        }
        // Members the job must have: it starts only when all of them fit.
        let required: Vec<bool> = members
            .iter()
            .map(|n| among.is_some_and(|a| a.required.contains(n)))
            .collect();
        let must = required.iter().filter(|&&r| r).count();
        if must < among.map_or(0, |a| a.required.len()) {
            return None;
        }
        // What each member gives for the most tasks (if it can), and for fewer.
        let want_most: Vec<Option<Res>> = members
            .iter()
            .map(|&n| shape.want(&self.nodes[n].total))
            .collect();
        let want: Vec<Res> = members
            .iter()
            .map(|&n| lesser.want(&self.nodes[n].total).unwrap_or(lesser.need))
            .collect();
        let mut free: Vec<Res> = members.iter().map(|&n| self.nodes[n].free).collect();

        // (time, member, released): a release grows free capacity; `None` only marks a time
        // where another reservation starts or stops overlapping the window.
        let mut events: Vec<(u64, usize, Option<Res>)> = Vec::new();
        for (m, &n) in members.iter().enumerate() {
            let node = &self.nodes[n];
            events.extend(node.releases.iter().map(|&(t, r)| (t, m, Some(r))));
            for s in &node.slots {
                let enters = s.start.saturating_sub(d).saturating_add(1);
                if enters > now {
                    events.push((enters, m, None));
                }
                if s.end > now {
                    events.push((s.end, m, None));
                }
            }
        }
        events.sort_unstable_by_key(|&(t, m, _)| (t, m));

        let member = among.and_then(|a| a.member);
        // Whether member m fits at t: for fewer tasks, and for the most.
        let fits = |m: usize, free: Res, t: u64| {
            let node = &self.nodes[members[m]];
            let most = want_most[m].is_some_and(|w| fits_at(node, free, &w, (t, d), member));
            (fits_at(node, free, &want[m], (t, d), member), most)
        };
        let (mut fit, mut fit_most): (Vec<bool>, Vec<bool>) =
            (0..members.len()).map(|m| fits(m, free[m], now)).unzip();
        let mut count = fit.iter().filter(|&&f| f).count();
        let mut count_most = fit_most.iter().filter(|&&f| f).count();
        let mut count_required = (0..members.len())
            .filter(|&m| fit[m] && required[m])
            .count();
        let enough = |count: usize, count_most: usize, count_required: usize| {
            count >= k && count_most >= first && count_required == must
        };
        let mut start = enough(count, count_most, count_required).then_some(now);
        let mut i = 0;
        while start.is_none() && i < events.len() {
            let t = events[i].0;
            while i < events.len() && events[i].0 == t {
                let (_, m, released) = events[i];
                if let Some(r) = released {
                    free[m] = free[m].add(&r);
                }
                let (f, most) = fits(m, free[m], t);
                if most != fit_most[m] {
                    fit_most[m] = most;
                    match most {
                        true => count_most += 1,
                        false => count_most -= 1,
                    }
                }
                if f != fit[m] {
                    fit[m] = f;
                    let r = usize::from(required[m]);
                    if f {
                        count += 1;
                        count_required += r;
                    } else {
                        count -= 1;
                        count_required -= r;
                    }
                }
                i += 1;
            }
            if enough(count, count_most, count_required) {
                start = Some(t);
            }
        }
        let start = start?;
        let end = start.saturating_add(d);

        // Best fit at the reservation's start, ties by name, as for a start now; the
        // required members first.
        let mut order: Vec<usize> = (0..members.len()).filter(|&m| fit[m]).collect();
        order.sort_by_key(|&m| (!required[m], free[m].cpus, members[m]));
        let fitting: Vec<(usize, bool)> = order.iter().map(|&m| (m, fit_most[m])).collect();
        let chosen = pick(&fitting, must, shape)?;
        let mut nodes = Vec::with_capacity(k);
        for (i, m) in chosen.into_iter().enumerate() {
            nodes.push(members[m]);
            let node = &mut self.nodes[members[m]];
            let amount = match (i < first, want_most[m]) {
                (true, Some(most)) => most,
                _ => want[m],
            };
            let mut overlapping = Res::default();
            for s in node.slots.iter_mut().filter(|s| s.overlaps(start, end)) {
                overlapping = overlapping.add(&s.amount);
                s.slack = s.slack.sub(&amount);
            }
            node.slots.push(Slot {
                start,
                end,
                amount,
                slack: free[m].sub(&overlapping).sub(&amount),
                owner: None,
            });
        }
        Some((start, nodes))
    }
}
