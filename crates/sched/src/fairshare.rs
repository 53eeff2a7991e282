//! Fair share, after Slurm's classic `priority/multifactor` for a flat set of users (one
//! account): a user's factor is `2^(-U/S)`, U their part of the cluster's recent usage and S
//! their part of its shares, so a user who used exactly their share gets 0.5, one who used
//! nothing 1, and one who used much more than their share close to 0.
//!
//! Owns: the normalisation of shares and usage and the factor. The usage itself (CPUs x run
//! time, decayed with a half-life) is the controller's: it knows when jobs ran.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One user's line of `sshare`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub user: String,
    /// Their shares as configured (Slurm's RawShares).
    pub raw_shares: u32,
    /// Their part of all users' shares (NormShares).
    pub norm_shares: f64,
    /// Their decayed usage, CPU-seconds (RawUsage).
    pub raw_usage: u64,
    /// Their part of all users' usage (EffectvUsage).
    pub effective_usage: f64,
    /// 2^(-effective usage / normalised shares) (FairShare): 1 for no usage.
    pub factor: f64,
}

/// Every user's share: those with usage or configured shares (a user not configured has
/// 1; a user with neither is not counted, and has the factor 1: nothing used). By name.
pub fn shares(usage: &BTreeMap<String, u64>, configured: &BTreeMap<String, u32>) -> Vec<Share> {
    let mut users: Vec<&String> = usage.keys().chain(configured.keys()).collect();
    users.sort();
    users.dedup();
    let raw = |u: &str| configured.get(u).copied().unwrap_or(1);
    let total_shares: u64 = users.iter().map(|u| u64::from(raw(u))).sum();
    let total_usage: u64 = usage.values().sum();
    users
        .into_iter()
        .map(|user| {
            let raw_shares = raw(user);
            let norm_shares = match total_shares {
                0 => 0.0,
                t => f64::from(raw_shares) / t as f64,
            };
            let raw_usage = usage.get(user).copied().unwrap_or(0);
            let effective_usage = match total_usage {
                0 => 0.0,
                t => raw_usage as f64 / t as f64,
            };
            Share {
                user: user.clone(),
                raw_shares,
                norm_shares,
                raw_usage,
                effective_usage,
                factor: factor(effective_usage, norm_shares),
            }
        })
        .collect()
}

/// `2^(-usage/shares)`; 0 for a user without shares who used something, 1 for no usage.
pub fn factor(effective_usage: f64, norm_shares: f64) -> f64 {
    if effective_usage <= 0.0 {
        1.0
    } else if norm_shares <= 0.0 {
        0.0
    } else {
        (-effective_usage / norm_shares).exp2()
    }
}

/// `value` decayed over `seconds` with this half-life.
pub fn decay(value: f64, seconds: u64, half_life: u64) -> f64 {
    if half_life == 0 {
        return value;
    }
    value * (-(seconds as f64) / half_life as f64).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(u, v)| (u.to_string(), *v)).collect()
    }

    #[test]
    fn a_user_who_used_their_share_gets_half_and_one_who_used_none_all() {
        let s = shares(&usage(&[("ann", 300), ("bo", 100)]), &BTreeMap::new());
        assert_eq!(s.len(), 2);
        let (ann, bo) = (&s[0], &s[1]);
        assert_eq!((ann.user.as_str(), ann.norm_shares), ("ann", 0.5));
        assert_eq!(ann.effective_usage, 0.75);
        // 2^(-0.75/0.5) and 2^(-0.25/0.5).
        assert!((ann.factor - 2f64.powf(-1.5)).abs() < 1e-12);
        assert!((bo.factor - 2f64.powf(-0.5)).abs() < 1e-12);
        assert!(bo.factor > ann.factor);
        // Alone, a user has all the shares and all the usage: one half.
        let alone = shares(&usage(&[("ann", 5)]), &BTreeMap::new());
        assert_eq!(alone[0].factor, 0.5);
        // No usage at all: everyone's factor is 1.
        let idle = shares(&usage(&[("ann", 0)]), &BTreeMap::new());
        assert_eq!(idle[0].factor, 1.0);
    }

    #[test]
    fn configured_shares_weigh_usage() {
        let configured: BTreeMap<String, u32> =
            [("ann".to_string(), 3), ("cy".to_string(), 0)].into();
        let s = shares(&usage(&[("ann", 300), ("bo", 100), ("cy", 1)]), &configured);
        let by = |u: &str| s.iter().find(|x| x.user == u).unwrap();
        // ann has 3 of 4 shares and used three quarters: her share exactly, like bo.
        assert_eq!(by("ann").norm_shares, 0.75);
        assert!((by("ann").effective_usage - 300.0 / 401.0).abs() < 1e-12);
        assert!(by("ann").factor > 0.49 && by("bo").factor > 0.49);
        // No shares, some usage: nothing.
        assert_eq!((by("cy").raw_shares, by("cy").factor), (0, 0.0));
    }

    #[test]
    fn usage_halves_each_half_life() {
        assert_eq!(decay(8.0, 0, 100), 8.0);
        assert_eq!(decay(8.0, 100, 100), 4.0);
        assert_eq!(decay(8.0, 300, 100), 1.0);
    }
}
