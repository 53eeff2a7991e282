//! The administrator's configuration file (`/etc/berth/berth.toml`), parsed and validated.
//!
//! ```toml
//! store = "/var/lib/berth"          # optional: where images live
//! [binds]
//! allow = ["$HOME", "/tmp", "$PWD", "/lustre/scratch"]   # bind sources must lie under one
//! deny  = ["/tmp/secrets"]                               # ... and under none of these
//! [registry]
//! ca_certs = ["/etc/pki/site-ca.pem"]   # extra CAs trusted for HTTPS registries
//! insecure = ["registry.local:5000"]    # registries that may be spoken to over plain HTTP
//! user_pulls = ["registry.local:5000/*"] # what users may have pulled into the cluster
//! user_imports = true                    # users may upload images (as users/NAME/...)
//! [etcd]                                # TLS to etcd, for `--store etcds://HOST:2379,...`
//! ca_certs = ["/etc/berth/etcd-ca.pem"] # CAs of etcd's certificates (etcdctl --cacert)
//! cert = "/etc/berth/etcd-client.pem"   # this controller's client certificate (--cert) ...
//! key = "/etc/berth/etcd-client.key"    # ... and its key (--key), for --client-cert-auth
//! [priority]                            # Slurm's multifactor priority (PriorityWeight*, ...)
//! weight_fairshare = 5000
//! decay_half_life = 604800              # seconds: past usage counts half after this long
//! [priority.shares]                     # users' shares (RawShares); every other user has 1
//! alice = 2
//! ```
//!
//! `$HOME` is the home directory of the user the container runs as and `$PWD` the directory
//! the command was started from; both are expanded when a bind is checked, not when the file
//! is read, because one config serves every user.

use serde::Deserialize;
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: [binds] {list} entry '{entry}' must be an absolute path, $HOME or $PWD (optionally followed by /more)")]
    BindEntry { list: &'static str, entry: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Image store location; the default depends on who runs berth.
    pub store: Option<PathBuf>,
    #[serde(default)]
    pub binds: BindPolicy,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub etcd: EtcdConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub priority: PriorityConfig,
    /// Partitions (queues) of the batch system; none: one default partition `normal`.
    #[serde(default, rename = "partition")]
    pub partitions: Vec<PartitionConfig>,
    /// `[licenses]`: the cluster's licenses (Slurm's Licenses=), `NAME = COUNT`; a job
    /// asking for some (`-L matlab:2`) starts only when that many are free.
    #[serde(default)]
    pub licenses: std::collections::BTreeMap<String, u32>,
}

/// `[batch]`: site-wide rules of the batch system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Jobs that name no image run on the host (as their user, with the same limits) instead
    /// of being refused.
    #[serde(default)]
    pub host_jobs: bool,
    /// Seconds without a heartbeat after which a remote node is down and its jobs end
    /// NODE_FAIL, or go back to the queue (see `requeue`); Slurm's SlurmdTimeout.
    #[serde(default = "default_node_timeout")]
    pub node_timeout: u64,
    /// Batch jobs whose node fails them go back to the queue unless submitted with
    /// --no-requeue (Slurm's JobRequeue=1, the default); `false`: only those submitted
    /// with --requeue. Allocations (salloc, interactive jobs) never do.
    #[serde(default = "yes")]
    pub requeue: bool,
    /// How many jobs may share each core at once (Slurm's OverSubscribe=FORCE:N, for every
    /// node): each core counts as this many CPUs, and a job is pinned to the cores under the
    /// CPUs it holds, distinct cores first. 1 (the default): every job has cores of its own.
    #[serde(default = "one")]
    pub oversubscribe: u32,
    /// The program jobs' mail goes through (Slurm's MailProg), run as the job's user with
    /// `-s SUBJECT ADDRESS...`; empty: no mail is sent.
    #[serde(default = "default_mail_program")]
    pub mail_program: String,
    /// Array indices must be below this (Slurm's MaxArraySize, and its default: 1001
    /// allows `0-1000`); a submission with a higher one is refused. (An array has at most
    /// a million tasks whatever it says.)
    #[serde(default = "default_max_array_size")]
    pub max_array_size: u32,
    /// The most unfinished jobs (pending, running, suspended; an array's tasks each) the
    /// controller holds (Slurm's MaxJobCount); a submission that would pass it is refused
    /// until some have ended. Unset: no limit.
    #[serde(default)]
    pub max_job_count: Option<u64>,
    /// The cluster's name (Slurm's ClusterName): jobs' SLURM_CLUSTER_NAME.
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// Seconds a job's processes have between the SIGTERM of its cancel or time limit and
    /// their SIGKILL (Slurm's KillWait, 30 by default); a cancelled step's too.
    #[serde(default = "default_kill_wait")]
    pub kill_wait: u64,
}

fn default_kill_wait() -> u64 {
    30
}

fn default_cluster_name() -> String {
    "berth".into()
}

fn default_max_array_size() -> u32 {
    1001
}

fn default_mail_program() -> String {
    "/usr/bin/mail".into()
}

/// `[priority]`: how pending jobs are ordered, after Slurm's `priority/multifactor`: each
/// factor is 0 to 1, times its weight; the nice value is subtracted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityConfig {
    /// PriorityWeightAge: time waiting, up to `max_age`.
    #[serde(default = "thousand")]
    pub weight_age: u32,
    /// PriorityWeightJobSize: the share of the cluster's CPUs the job asks for.
    #[serde(default = "thousand")]
    pub weight_job_size: u32,
    /// PriorityWeightPartition: the partition's `priority` against the largest.
    #[serde(default = "thousand")]
    pub weight_partition: u32,
    /// PriorityWeightFairshare: 2^-(the user's share of recent usage / their share of the
    /// cluster), 1 for a user who has used nothing.
    #[serde(default = "thousand")]
    pub weight_fairshare: u32,
    /// PriorityMaxAge, seconds: the age factor is 1 from this age on.
    #[serde(default = "week")]
    pub max_age: u64,
    /// PriorityFavorSmall: the size factor favours small jobs instead of large ones.
    #[serde(default)]
    pub favor_small: bool,
    /// PriorityDecayHalfLife, seconds: a job's usage (CPUs x run time) counts half as much
    /// this long after it ended.
    #[serde(default = "week")]
    pub decay_half_life: u64,
    /// Users' shares of the cluster (RawShares); a user not named has 1.
    #[serde(default)]
    pub shares: std::collections::BTreeMap<String, u32>,
}

impl Default for PriorityConfig {
    fn default() -> PriorityConfig {
        PriorityConfig {
            weight_age: thousand(),
            weight_job_size: thousand(),
            weight_partition: thousand(),
            weight_fairshare: thousand(),
            max_age: week(),
            favor_small: false,
            decay_half_life: week(),
            shares: Default::default(),
        }
    }
}

fn thousand() -> u32 {
    1000
}

fn week() -> u64 {
    7 * 24 * 3600
}

/// The most jobs `[batch] oversubscribe` lets share one core.
pub const MAX_OVERSUBSCRIBE: u32 = 1024;

impl Default for BatchConfig {
    fn default() -> BatchConfig {
        BatchConfig {
            host_jobs: false,
            node_timeout: default_node_timeout(),
            requeue: true,
            oversubscribe: 1,
            mail_program: default_mail_program(),
            max_array_size: default_max_array_size(),
            max_job_count: None,
            cluster_name: default_cluster_name(),
            kill_wait: default_kill_wait(),
        }
    }
}

fn default_node_timeout() -> u64 {
    30
}

/// `[[partition]]`: a partition (Slurm) or queue (LSF, PBS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    pub name: String,
    /// Jobs that name no partition go to the default one.
    #[serde(default)]
    pub default: bool,
    /// The longest time limit a job may ask for, seconds.
    pub max_time: Option<u64>,
    /// The time limit of jobs that ask for none, seconds.
    pub default_time: Option<u64>,
    /// Slurm's PriorityJobFactor: weight of this partition in job priorities.
    #[serde(default = "one")]
    pub priority: u32,
    /// Images jobs here may use, as patterns where `*` matches anything (`lab/*`,
    /// `registry.local:5000/*:2.*`); empty: any image in the store.
    #[serde(default)]
    pub images: Vec<String>,
    /// The most jobs (pending and running) one user may have here; more are refused at submit.
    pub max_jobs_per_user: Option<u32>,
    /// The most CPUs one user's running jobs may hold here; more wait (QOSMaxCpuPerUserLimit).
    pub max_cpus_per_user: Option<u32>,
}

impl PartitionConfig {
    /// The time limit here of a job that named none: the default, else the maximum; only
    /// the maximum for one that asked for no limit (`no_time_limit`, `-t UNLIMITED`).
    pub fn time_limit_for(&self, no_time_limit: bool) -> Option<u64> {
        self.default_time
            .filter(|_| !no_time_limit)
            .or(self.max_time)
    }

    /// Whether `image` (a full name such as `lab/app:1`) may run here; `Err` names the rule.
    pub fn allows_image(&self, image: &str) -> Result<(), String> {
        if self.images.is_empty() || self.images.iter().any(|p| glob(p, image)) {
            return Ok(());
        }
        Err(format!(
            "image '{image}' is not allowed in partition {}: the allowed images are {} ([[partition]] images in the configuration)",
            self.name,
            self.images.join(", ")
        ))
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

fn one() -> u32 {
    1
}

/// `[etcd]`: TLS to the etcd cluster that holds the controllers' state (`--store
/// etcds://...`): the CAs its certificates are checked against (besides the system's), and
/// the certificate and key this controller shows, where etcd asks for one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    #[serde(default)]
    pub ca_certs: Vec<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// How to reach image registries, and what users may bring into the cluster's store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// PEM files with extra CA certificates trusted for HTTPS registries.
    #[serde(default)]
    pub ca_certs: Vec<PathBuf>,
    /// Registries (`host:port`) that may be spoken to over plain HTTP.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Images users may have the controller pull into the cluster's store (`berth image
    /// pull --cluster`, shifterimg pull), as patterns where `*` matches anything; absent:
    /// any, empty: none (root may pull any).
    pub user_pulls: Option<Vec<String>>,
    /// Whether users may upload image files of their own into the cluster's store (`berth
    /// image import --cluster`), named under `users/THEIR-NAME/`.
    #[serde(default = "yes")]
    pub user_imports: bool,
}

fn yes() -> bool {
    true
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            ca_certs: Vec::new(),
            insecure: Vec::new(),
            user_pulls: None,
            user_imports: yes(),
        }
    }
}

impl RegistryConfig {
    /// Whether a user may have the controller pull `image` (its full name); `Err` names the
    /// rule.
    pub fn allows_user_pull(&self, image: &str) -> Result<(), String> {
        match &self.user_pulls {
            None => Ok(()),
            Some(patterns) if patterns.iter().any(|p| glob(p, image)) => Ok(()),
            Some(patterns) if patterns.is_empty() => Err(format!(
                "users may not have images pulled into the cluster ([registry] user_pulls = [] in the configuration): ask an administrator to pull {image}"
            )),
            Some(patterns) => Err(format!(
                "{image} is not among the images users may have pulled into the cluster: {} ([registry] user_pulls in the configuration)",
                patterns.join(", ")
            )),
        }
    }
}

impl Config {
    /// Partitions that could not be told apart or could never run a job are refused, each
    /// mistake named.
    fn check_partitions(&self) -> Result<(), ConfigError> {
        let bad = |p: &PartitionConfig, why: String| {
            Err(ConfigError::Parse(format!(
                "[[partition]] {:?}: {why}",
                p.name
            )))
        };
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.partitions {
            if p.name.is_empty() || p.name.contains(|c: char| c.is_whitespace() || c == ',') {
                return bad(
                    p,
                    "a partition's name is a word (no blanks or commas), as jobs name it with -p"
                        .into(),
                );
            }
            if !seen.insert(&p.name) {
                return bad(
                    p,
                    "a second partition of that name: give each its own".into(),
                );
            }
            for (key, zero) in [
                ("max_time", p.max_time == Some(0)),
                ("max_jobs_per_user", p.max_jobs_per_user == Some(0)),
                ("max_cpus_per_user", p.max_cpus_per_user == Some(0)),
            ] {
                if zero {
                    return bad(p, format!("{key} = 0 would refuse every job: give the limit, or leave it out for none"));
                }
            }
            if let (Some(default), Some(max)) = (p.default_time, p.max_time) {
                if default > max {
                    return bad(p, format!("default_time = {default} is over max_time = {max}: a job that names no time would get more than any may ask"));
                }
            }
        }
        let defaults: Vec<&str> = self
            .partitions
            .iter()
            .filter(|p| p.default)
            .map(|p| p.name.as_str())
            .collect();
        if defaults.len() > 1 {
            return Err(ConfigError::Parse(format!(
                "[[partition]] default = true on {}: one partition is the default",
                defaults.join(" and ")
            )));
        }
        Ok(())
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.binds.validate()?;
        if !(1..=MAX_OVERSUBSCRIBE).contains(&config.batch.oversubscribe) {
            return Err(ConfigError::Parse(format!(
                "[batch] oversubscribe = {} is out of range: give how many jobs may share a core, 1 to {MAX_OVERSUBSCRIBE}",
                config.batch.oversubscribe
            )));
        }
        for (name, zero) in [
            ("max_array_size", config.batch.max_array_size == 0),
            ("max_job_count", config.batch.max_job_count == Some(0)),
        ] {
            if zero {
                return Err(ConfigError::Parse(format!(
                    "[batch] {name} = 0 would refuse every job: give the limit, or leave it out for none"
                )));
            }
        }
        if config.etcd.cert.is_some() != config.etcd.key.is_some() {
            return Err(ConfigError::Parse(
                "[etcd] cert and key go together: give both (the client certificate etcd checks, and its private key), or neither".into(),
            ));
        }
        config.check_partitions()?;
        for (name, count) in &config.licenses {
            if crate::job::licenses(name).ok().as_deref() != Some(&[(name.clone(), 1)][..]) {
                return Err(ConfigError::Parse(format!(
                    "[licenses] {name:?}: a license's name is a word of letters, digits and _-.@, as jobs name it with -L"
                )));
            }
            if *count == 0 {
                return Err(ConfigError::Parse(format!(
                    "[licenses] {name} = 0 would refuse every job that asks for it: give how many there are"
                )));
            }
        }
        if config.priority.decay_half_life == 0 {
            return Err(ConfigError::Parse(
                "[priority] decay_half_life = 0: give the seconds after which past usage counts half (Slurm's PriorityDecayHalfLife, 604800 for a week)".into(),
            ));
        }
        Ok(config)
    }
}

/// Which host paths may be bind-mounted into containers.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BindPolicy {
    #[serde(default = "BindPolicy::default_allow")]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

impl Default for BindPolicy {
    fn default() -> Self {
        BindPolicy {
            allow: Self::default_allow(),
            deny: Vec::new(),
        }
    }
}

/// Why a bind source was refused: names the rule, so the user (or admin) knows what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindRefusal {
    Denied { rule: String },
    NotAllowed { allowed: Vec<String> },
}

impl std::fmt::Display for BindRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindRefusal::Denied { rule } => {
                write!(f, "it lies under the denied path {rule} ([binds] deny)")
            }
            BindRefusal::NotAllowed { allowed } => {
                write!(
                    f,
                    "it lies under none of the allowed paths ([binds] allow: {})",
                    allowed.join(", ")
                )
            }
        }
    }
}

impl BindPolicy {
    fn default_allow() -> Vec<String> {
        vec!["$HOME".into(), "/tmp".into(), "$PWD".into()]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (list, entries) in [("allow", &self.allow), ("deny", &self.deny)] {
            for entry in entries {
                let ok = entry.starts_with('/')
                    || ["$HOME", "$PWD"].iter().any(|v| {
                        entry
                            .strip_prefix(v)
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                    });
                if !ok {
                    return Err(ConfigError::BindEntry {
                        list,
                        entry: entry.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks a bind source, already resolved to a canonical absolute path without symlinks,
    /// against the policy. `home` and `cwd` expand `$HOME` and `$PWD`.
    pub fn check(&self, source: &Path, home: &Path, cwd: &Path) -> Result<(), BindRefusal> {
        let expand = |rule: &str| expand_rule(rule, home, cwd);
        // A `$VAR` rule that expands to `/` (for example `$PWD` when started from `/`) would
        // allow everything, so it matches nothing: an administrator who means that writes "/".
        let under = |rule: &str| {
            let base = expand(rule);
            (!rule.starts_with('$') || base.components().count() > 1)
                && lexically_under(source, &base)
        };
        if let Some(rule) = self.deny.iter().find(|r| under(r)) {
            return Err(BindRefusal::Denied {
                rule: describe(rule, &expand(rule)),
            });
        }
        if self.allow.iter().any(|r| under(r)) {
            return Ok(());
        }
        Err(BindRefusal::NotAllowed {
            allowed: self.allow.iter().map(|r| describe(r, &expand(r))).collect(),
        })
    }
}

impl BindPolicy {
    /// The denied paths that lie strictly below `source` (a canonical bind source the
    /// policy allowed: a home, a working directory, a parent of a denied path), each as it
    /// lies below it: what a container binding it must hide.
    pub fn denied_below(&self, source: &Path, home: &Path, cwd: &Path) -> Vec<PathBuf> {
        (self.deny.iter())
            .map(|rule| expand_rule(rule, home, cwd))
            .filter(|denied| denied != source && lexically_under(denied, source))
            .filter_map(|denied| Some(denied.strip_prefix(source).ok()?.to_path_buf()))
            .collect()
    }
}

/// A rule's path: `$HOME` and `$PWD` expanded to `home` and `cwd`.
fn expand_rule(rule: &str, home: &Path, cwd: &Path) -> PathBuf {
    let (base, rest) = if let Some(rest) = rule.strip_prefix("$HOME") {
        (home, rest)
    } else if let Some(rest) = rule.strip_prefix("$PWD") {
        (cwd, rest)
    } else {
        return PathBuf::from(rule);
    };
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rest)
    }
}

fn describe(rule: &str, expanded: &Path) -> String {
    if rule.starts_with('$') {
        format!("{rule} ({})", expanded.display())
    } else {
        rule.to_string()
    }
}

/// True when `path` is `base` or lies below it, comparing whole components.
fn lexically_under(path: &Path, base: &Path) -> bool {
    let normal = |p: &Path| -> Vec<String> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    };
    let (p, b) = (normal(path), normal(base));
    p.len() >= b.len() && p[..b.len()] == b[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> BindPolicy {
        BindPolicy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn default_policy_allows_home_tmp_and_cwd() {
        let p = BindPolicy::default();
        let (home, cwd) = (Path::new("/home/ann"), Path::new("/scratch/run1"));
        assert!(p.check(Path::new("/home/ann/data"), home, cwd).is_ok());
        assert!(p.check(Path::new("/home/ann"), home, cwd).is_ok());
        assert!(p.check(Path::new("/tmp/x"), home, cwd).is_ok());
        assert!(p.check(Path::new("/scratch/run1/in"), home, cwd).is_ok());
        // Component-wise: /home/annex is not under /home/ann.
        let refused = p.check(Path::new("/home/annex"), home, cwd).unwrap_err();
        assert!(
            refused.to_string().contains("$HOME (/home/ann)"),
            "{refused}"
        );
        assert!(p.check(Path::new("/etc"), home, cwd).is_err());
    }

    #[test]
    fn partitions_that_cannot_be_told_apart_or_run_nothing_are_refused() {
        let part = |extra: &str| format!("[[partition]]\nname = \"a\"\n{extra}");
        for (text, why) in [
            (
                format!(
                    "{}{}",
                    part("default = true\n"),
                    "[[partition]]\nname = \"b\"\ndefault = true\n"
                ),
                "default = true on a and b",
            ),
            (
                format!("{}{}", part(""), part("")),
                "a second partition of that name",
            ),
            (
                "[[partition]]\nname = \"my part\"\n".to_string(),
                "no blanks or commas",
            ),
            (
                part("max_time = 0\n"),
                "max_time = 0 would refuse every job",
            ),
            (part("max_jobs_per_user = 0\n"), "max_jobs_per_user = 0"),
            ("[licenses]\nmatlab = 0\n".into(), "[licenses] matlab = 0"),
            (
                "[licenses]\n\"a:b\" = 2\n".into(),
                "a license's name is a word",
            ),
            (
                part("max_time = 60\ndefault_time = 3600\n"),
                "default_time = 3600 is over max_time = 60",
            ),
        ] {
            let e = Config::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
        Config::from_toml(&part("default = true\nmax_time = 60\ndefault_time = 60\n")).unwrap();
        let licensed = Config::from_toml("[licenses]\nmatlab = 2\n").unwrap();
        assert_eq!(licensed.licenses.get("matlab"), Some(&2));
    }

    #[test]
    fn etcd_tls_settings_and_a_cert_without_its_key() {
        let c = Config::from_toml(
            "[etcd]\nca_certs = [\"/etc/berth/ca.pem\"]\ncert = \"/etc/berth/c.pem\"\nkey = \"/etc/berth/c.key\"\n",
        )
        .unwrap()
        .etcd;
        assert_eq!(c.ca_certs, [PathBuf::from("/etc/berth/ca.pem")]);
        assert_eq!(c.cert.as_deref(), Some(Path::new("/etc/berth/c.pem")));
        assert_eq!(c.key.as_deref(), Some(Path::new("/etc/berth/c.key")));
        let e = Config::from_toml("[etcd]\ncert = \"/etc/berth/c.pem\"\n").unwrap_err();
        assert!(e.to_string().contains("cert and key go together"), "{e}");
        assert!(Config::from_toml("[etcd]\ncacert = \"x\"\n").is_err());
    }

    #[test]
    fn priority_weights_and_shares_have_slurms_meaning_and_defaults() {
        let default = Config::from_toml("").unwrap().priority;
        assert_eq!(
            (
                default.weight_age,
                default.weight_fairshare,
                default.decay_half_life
            ),
            (1000, 1000, 7 * 24 * 3600)
        );
        let c = Config::from_toml(
            "[priority]\nweight_fairshare = 5000\nfavor_small = true\n[priority.shares]\nalice = 2\n",
        )
        .unwrap()
        .priority;
        assert_eq!(
            (c.weight_fairshare, c.weight_age, c.favor_small),
            (5000, 1000, true)
        );
        assert_eq!(c.shares.get("alice"), Some(&2));
        let err = Config::from_toml("[priority]\ndecay_half_life = 0\n").unwrap_err();
        assert!(err.to_string().contains("PriorityDecayHalfLife"), "{err}");
        assert!(Config::from_toml("[priority]\nweight_fun = 1\n").is_err());
    }

    #[test]
    fn site_limits_on_arrays_are_slurms_and_on_jobs_off_unless_given() {
        let none = Config::from_toml("").unwrap().batch;
        assert_eq!((none.max_array_size, none.max_job_count), (1001, None));
        let set = Config::from_toml("[batch]\nmax_array_size = 20001\nmax_job_count = 10000\n")
            .unwrap()
            .batch;
        assert_eq!(
            (set.max_array_size, set.max_job_count),
            (20001, Some(10000))
        );
        for name in ["max_array_size", "max_job_count"] {
            let err = Config::from_toml(&format!("[batch]\n{name} = 0\n")).unwrap_err();
            assert!(
                err.to_string().contains(&format!("[batch] {name} = 0")),
                "{err}"
            );
        }
    }

    #[test]
    fn oversubscription_is_one_job_per_core_unless_given_in_range() {
        assert_eq!(Config::from_toml("").unwrap().batch.oversubscribe, 1);
        let shared = Config::from_toml("[batch]\noversubscribe = 4\n").unwrap();
        assert_eq!(shared.batch.oversubscribe, 4);
        for bad in ["0", "1025"] {
            let err = Config::from_toml(&format!("[batch]\noversubscribe = {bad}\n")).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("[batch] oversubscribe = {bad} is out of range")),
                "{err}"
            );
        }
    }

    #[test]
    fn cwd_at_root_does_not_allow_everything() {
        let p = BindPolicy::default();
        assert!(p
            .check(Path::new("/etc"), Path::new("/home/ann"), Path::new("/"))
            .is_err());
        assert!(policy(&["/"], &[])
            .check(Path::new("/etc"), Path::new("/h"), Path::new("/"))
            .is_ok());
    }

    #[test]
    fn deny_wins_and_is_named() {
        let p = policy(&["/tmp", "$HOME/projects"], &["/tmp/secrets"]);
        let (home, cwd) = (Path::new("/home/ann"), Path::new("/"));
        assert!(p
            .check(Path::new("/home/ann/projects/a"), home, cwd)
            .is_ok());
        assert!(p.check(Path::new("/home/ann/mail"), home, cwd).is_err());
        let refused = p
            .check(Path::new("/tmp/secrets/key"), home, cwd)
            .unwrap_err();
        assert_eq!(
            refused,
            BindRefusal::Denied {
                rule: "/tmp/secrets".into()
            }
        );
    }

    #[test]
    fn user_pulls_are_any_none_or_the_patterns() {
        let config = |text: &str| Config::from_toml(text).unwrap().registry;
        assert!(config("").allows_user_pull("r:5000/x:1").is_ok());
        let none = config("[registry]\nuser_pulls = []\n").allows_user_pull("r:5000/x:1");
        assert!(none.unwrap_err().contains("user_pulls = []"));
        let some = config("[registry]\nuser_pulls = [\"r:5000/lab/*\"]\n");
        assert!(some.allows_user_pull("r:5000/lab/app:2").is_ok());
        let refused = some.allows_user_pull("r:5000/other:1").unwrap_err();
        assert!(refused.contains("r:5000/lab/*"), "{refused}");
        assert!(config("").user_imports && config("[registry]\n").user_imports);
        assert!(!config("[registry]\nuser_imports = false\n").user_imports);
    }

    #[test]
    fn globs() {
        assert!(glob("busybox*", "busybox:latest"));
        assert!(glob("lab/*:2.*", "lab/openfoam:2.3.0"));
        assert!(!glob("lab/*:2.*", "lab/openfoam:3.0"));
        assert!(glob("*", "anything"));
        assert!(glob("exact:1", "exact:1") && !glob("exact:1", "exact:10"));
        assert!(!glob("a*a", "a"));
        let p = PartitionConfig {
            name: "gpu".into(),
            default: false,
            max_time: None,
            default_time: None,
            priority: 1,
            images: vec!["cuda/*".into()],
            max_jobs_per_user: None,
            max_cpus_per_user: None,
        };
        assert!(p.allows_image("cuda/base:12").is_ok());
        let refused = p.allows_image("busybox:latest").unwrap_err();
        assert!(
            refused.contains("partition gpu") && refused.contains("cuda/*"),
            "{refused}"
        );
    }

    #[test]
    fn config_file() {
        let c = Config::from_toml(
            "store = \"/srv/berth\"\n[binds]\nallow = [\"/lustre/scratch\", \"$HOME\"]\n",
        )
        .unwrap();
        assert_eq!(c.store.as_deref(), Some(Path::new("/srv/berth")));
        assert_eq!(c.binds.allow, vec!["/lustre/scratch", "$HOME"]);
        assert!(Config::from_toml("")
            .unwrap()
            .binds
            .allow
            .contains(&"$PWD".to_string()));
        let err = Config::from_toml("[binds]\nallow = [\"relative/path\"]\n").unwrap_err();
        assert!(err.to_string().contains("relative/path"), "{err}");
        assert!(Config::from_toml("[binds]\nallow = [\"$HOMEX\"]\n").is_err());
        assert!(Config::from_toml("bogus = 1\n").is_err());
    }
}
