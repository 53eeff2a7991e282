//! Batch script directives (`#SBATCH`, `#BSUB`, `#PBS`, `#BERTH`) and `berth submit` flags,
//! read into one [`JobOptions`].
//!
//! Where directives are read, as sbatch, bsub and qsub read them: the shebang is skipped,
//! then every line of the leading comment block whose first column starts with a prefix
//! followed by a blank (or nothing) is a directive; the first line that is neither blank nor
//! a comment ends the block, and directives after it are not read (they are recorded as
//! ignored, so the caller can warn). A directive line is split as a shell splits words
//! (quotes, backslashes), holds any number of options, and ends at an unquoted `#` word,
//! which starts a comment. The families may be mixed; later options override earlier ones.
//!
//! Option syntax per family:
//! - `#SBATCH` and `#BERTH` (and `berth submit` flags): getopt_long, as sbatch parses:
//!   `--opt=value`, `--opt value`, `-n 4`, `-n4`, unique abbreviations of long names.
//!   sbatch's include those of enroot+pyxis (`--container-image`, ...) and of Shifter
//!   (`--image`, `--volume`, `--module`); `#BERTH` takes sbatch's plus `--bind` (`-B`).
//! - `#BSUB`: bsub's words (`-n`, `-cwd`, `-oo`), each value the next word.
//! - `#PBS`: qsub's getopt letters, `-l nodes=2:ppn=4` or `-lnodes=2:ppn=4`.
//!
//! The image may also come from `APPLICATION=IMAGE` (with or without `export`, quoted or
//! not) anywhere in the script outside comments, the convention of the thesis' middleware.

use super::*;
use crate::quantity::parse_size;

/// A directive family, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Slurm,
    Lsf,
    Pbs,
    Berth,
}

impl Family {
    const ALL: [Family; 4] = [Family::Slurm, Family::Lsf, Family::Pbs, Family::Berth];

    /// The command whose options the family's directives are: what its errors about a
    /// command line name.
    pub fn command(self) -> &'static str {
        match self {
            Family::Slurm => "sbatch",
            Family::Lsf => "bsub",
            Family::Pbs => "qsub",
            Family::Berth => "berth submit",
        }
    }

    pub fn prefix(self) -> &'static str {
        match self {
            Family::Slurm => "#SBATCH",
            Family::Lsf => "#BSUB",
            Family::Pbs => "#PBS",
            Family::Berth => "#BERTH",
        }
    }
}

/// What a script asked for, and in which families' words (in order of first use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedScript {
    pub options: JobOptions,
    pub families: Vec<Family>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    No,
    Required,
    /// Only attached (`--nice=5`), as getopt_long's optional arguments.
    Optional,
}

/// One option: its canonical name (the long name, or bsub's/qsub's word) and short letter.
struct Spec(&'static str, Option<char>, Arg);

use Arg::{No, Optional, Required};

const SLURM: &[Spec] = &[
    Spec("job-name", Some('J'), Required),
    Spec("ntasks", Some('n'), Required),
    Spec("ntasks-per-node", None, Required),
    Spec("cpus-per-task", Some('c'), Required),
    Spec("nodes", Some('N'), Required),
    Spec("mem", None, Required),
    Spec("mem-per-cpu", None, Required),
    Spec("mem-per-gpu", None, Required),
    Spec("time", Some('t'), Required),
    Spec("output", Some('o'), Required),
    Spec("error", Some('e'), Required),
    Spec("input", Some('i'), Required),
    Spec("open-mode", None, Required),
    Spec("partition", Some('p'), Required),
    Spec("array", Some('a'), Required),
    Spec("dependency", Some('d'), Required),
    Spec("hold", Some('H'), No),
    Spec("test-only", None, No),
    Spec("export", None, Required),
    Spec("export-file", None, Required),
    Spec("chdir", Some('D'), Required),
    Spec("workdir", None, Required),
    Spec("gpus", Some('G'), Required),
    Spec("gres", None, Required),
    Spec("gpus-per-node", None, Required),
    Spec("gpus-per-task", None, Required),
    Spec("tres-per-task", None, Required),
    Spec("nice", None, Optional),
    Spec("account", Some('A'), Required),
    Spec("exclusive", None, Optional),
    Spec("overcommit", Some('O'), No),
    Spec("mincpus", None, Required),
    Spec("ignore-pbs", None, No),
    Spec("uid", None, Required),
    Spec("requeue", None, No),
    Spec("no-requeue", None, No),
    Spec("mail-type", None, Required),
    Spec("mail-user", None, Required),
    Spec("comment", None, Required),
    Spec("qos", Some('q'), Required),
    Spec("signal", None, Required),
    Spec("begin", Some('b'), Required),
    Spec("deadline", None, Required),
    Spec("wait", Some('W'), No),
    Spec("constraint", Some('C'), Required),
    Spec("nodelist", Some('w'), Required),
    Spec("exclude", Some('x'), Required),
    // Accepted and ignored, with a warning: hints berth has no use for.
    Spec("hint", None, Required),
    Spec("distribution", Some('m'), Required),
    Spec("threads-per-core", None, Required),
    Spec("ntasks-per-core", None, Required),
    Spec("ntasks-per-socket", None, Required),
    Spec("cores-per-socket", None, Required),
    Spec("sockets-per-node", None, Required),
    Spec("extra-node-info", Some('B'), Required),
    Spec("mem-bind", None, Required),
    Spec("gpu-bind", None, Required),
    Spec("cpu-freq", None, Required),
    Spec("gpu-freq", None, Required),
    Spec("wckey", None, Required),
    Spec("profile", None, Required),
    Spec("acctg-freq", None, Required),
    Spec("switches", None, Required),
    Spec("get-user-env", None, Optional),
    Spec("propagate", None, Optional),
    Spec("time-min", None, Required),
    Spec("no-kill", Some('k'), Optional),
    Spec("spread-job", None, No),
    Spec("use-min-nodes", None, No),
    Spec("contiguous", None, No),
    Spec("oversubscribe", Some('s'), No),
    Spec("quiet", Some('Q'), No),
    Spec("kill-on-invalid-dep", None, Required),
    Spec("tmp", None, Required),
    Spec("clusters", Some('M'), Required),
    Spec("prefer", None, Required),
    Spec("reservation", None, Required),
    Spec("licenses", Some('L'), Required),
    Spec("gres-flags", None, Required),
    Spec("delay-boot", None, Required),
    Spec("network", None, Required),
    Spec("thread-spec", None, Required),
    Spec("core-spec", Some('S'), Required),
    Spec("power", None, Required),
    Spec("batch", None, Required),
    // Refused with the reason: berth cannot honour them.
    Spec("x11", None, Optional),
    Spec("cpus-per-gpu", None, Required),
    Spec("ntasks-per-gpu", None, Required),
    Spec("gpus-per-socket", None, Required),
    Spec("priority", None, Required),
    Spec("gid", None, Required),
    // enroot+pyxis's (a SPANK plugin's options of sbatch, srun and salloc): the job's image,
    // binds and working directory in it, as pyxis users write them.
    Spec("container-image", None, Required),
    Spec("container-mounts", None, Required),
    Spec("container-workdir", None, Required),
    Spec("container-mount-home", None, No),
    Spec("no-container-mount-home", None, No),
    Spec("container-env", None, Required),
    Spec("container-writable", None, No),
    Spec("container-readonly", None, No),
    Spec("container-name", None, Required),
    Spec("container-entrypoint", None, No),
    Spec("no-container-entrypoint", None, No),
    Spec("container-entrypoint-log", None, No),
    Spec("container-remap-root", None, No),
    Spec("no-container-remap-root", None, No),
    Spec("container-save", None, Required),
    // Shifter's (its SPANK plugin's options of sbatch, salloc and srun): the job's image and
    // volumes, and the site modules berth has none of.
    Spec("image", None, Required),
    Spec("volume", None, Required),
    Spec("module", None, Required),
];

const BERTH_ONLY: &[Spec] = &[Spec("bind", Some('B'), Required)];

const LSF: &[Spec] = &[
    Spec("J", None, Required),
    Spec("n", None, Required),
    Spec("R", None, Required),
    Spec("M", None, Required),
    Spec("W", None, Required),
    Spec("o", None, Required),
    Spec("oo", None, Required),
    Spec("e", None, Required),
    Spec("eo", None, Required),
    Spec("i", None, Required),
    Spec("q", None, Required),
    Spec("w", None, Required),
    Spec("H", None, No),
    Spec("cwd", None, Required),
    Spec("gpu", None, Required),
    Spec("P", None, Required),
    Spec("x", None, No),
    Spec("r", None, No),
    Spec("rn", None, No),
    Spec("u", None, Required),
    Spec("B", None, No),
    Spec("N", None, No),
    // bmod -wn: the job's dependency condition removed; -Wn: its run limit.
    Spec("wn", None, No),
    Spec("Wn", None, No),
    Spec("wa", None, Required),
    Spec("wt", None, Required),
    Spec("b", None, Required),
    Spec("K", None, No),
    Spec("m", None, Required),
    // Accepted and ignored, with a warning: what berth has no counterpart of.
    Spec("G", None, Required),
    Spec("app", None, Required),
    Spec("sla", None, Required),
    Spec("E", None, Required),
    Spec("Ep", None, Required),
    Spec("We", None, Required),
    Spec("Jd", None, Required),
    Spec("L", None, Required),
    Spec("alloc_flags", None, Required),
    Spec("C", None, Required),
    Spec("c", None, Required),
    Spec("S", None, Required),
    Spec("F", None, Required),
    Spec("sp", None, Required),
    Spec("outdir", None, Required),
    Spec("g", None, Required),
    Spec("a", None, Required),
    Spec("k", None, Required),
    Spec("Q", None, Required),
    Spec("s", None, Required),
    Spec("ti", None, No),
    Spec("hl", None, No),
    Spec("tty", None, No),
    // Summit's whole nodes, LSF's environment and advance reservations.
    Spec("nnodes", None, Required),
    Spec("env", None, Required),
    Spec("U", None, Required),
    // bsub's command line only (interactive jobs): refused in a script.
    Spec("I", None, No),
    Spec("Is", None, No),
    Spec("Ip", None, No),
];

const PBS: &[Spec] = &[
    Spec("N", Some('N'), Required),
    Spec("l", Some('l'), Required),
    Spec("o", Some('o'), Required),
    Spec("e", Some('e'), Required),
    Spec("j", Some('j'), Required),
    Spec("q", Some('q'), Required),
    Spec("J", Some('J'), Required),
    Spec("t", Some('t'), Required),
    Spec("W", Some('W'), Required),
    Spec("h", Some('h'), No),
    Spec("V", Some('V'), No),
    Spec("v", Some('v'), Required),
    Spec("d", Some('d'), Required),
    Spec("A", Some('A'), Required),
    Spec("r", Some('r'), Required),
    Spec("m", Some('m'), Required),
    Spec("M", Some('M'), Required),
    Spec("S", Some('S'), Required),
    Spec("a", Some('a'), Required),
    // PBS Pro's project (berth's account); accepted and ignored, with a warning: keeping
    // output on the node, priority, checkpoints.
    Spec("P", Some('P'), Required),
    Spec("k", Some('k'), Required),
    Spec("p", Some('p'), Required),
    Spec("c", Some('c'), Required),
    // qsub's command line only: refused in a script.
    Spec("I", Some('I'), No),
    Spec("X", Some('X'), No),
    Spec("F", Some('F'), Required),
    Spec("z", Some('z'), No),
];

/// Splits a directive's text into words as sh would: `'...'` literal, `"..."` with `\"`
/// and `\\` escapes, a backslash outside quotes escaping the next character. An unquoted
/// word starting with `#` begins a comment, as sbatch ends a directive there.
fn split_words(text: &str) -> Result<Vec<String>, JobError> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => return Ok(words),
            _ => {}
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                c if c.is_whitespace() => break,
                '\'' => loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(JobError::UnterminatedQuote),
                    }
                },
                '"' => loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                            word.extend(chars.next());
                        }
                        Some(c) => word.push(c),
                        None => return Err(JobError::UnterminatedQuote),
                    }
                },
                '\\' => word.extend(chars.next()),
                c => word.push(c),
            }
        }
        words.push(word);
    }
}

/// One option found among the words: its canonical name, value, and the words it took.
struct Found {
    name: &'static str,
    value: Option<String>,
    text: String,
}

/// Reads the option starting at `words[*i]`, advancing `*i` past it and its value.
/// On error, returns the words read so far with the reason.
fn next_option(
    family: Family,
    words: &[String],
    i: &mut usize,
) -> Result<Found, (String, JobError)> {
    let start = *i;
    let word = &words[*i];
    *i += 1;
    let fail = |text: &str, e| Err((text.to_string(), e));
    let unknown = || JobError::UnknownOption {
        family: family.prefix(),
        option: word
            .split_once('=')
            .map_or(word.as_str(), |(n, _)| n)
            .to_string(),
    };
    let specs: Vec<&Spec> = match family {
        Family::Slurm => SLURM.iter().collect(),
        // (berth's own letters over Slurm's: -B is a bind, as Apptainer's, not sbatch's
        // --extra-node-info.)
        Family::Berth => SLURM
            .iter()
            .filter(|s| s.1.is_none() || !BERTH_ONLY.iter().any(|b| b.1 == s.1))
            .chain(BERTH_ONLY)
            .collect(),
        Family::Lsf => LSF.iter().collect(),
        Family::Pbs => PBS.iter().collect(),
    };
    // (spec, value attached to the word)
    let (spec, attached): (&Spec, Option<String>) = if let Some(long) = word
        .strip_prefix("--")
        .filter(|_| matches!(family, Family::Slurm | Family::Berth))
    {
        let (name, value) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (long, None),
        };
        // getopt_long: an exact name, else a unique abbreviation.
        let exact = specs.iter().find(|s| s.0 == name);
        let mut prefixed = specs
            .iter()
            .filter(|s| !name.is_empty() && s.0.starts_with(name));
        match (exact, prefixed.next(), prefixed.next()) {
            (Some(s), _, _) | (None, Some(s), None) => (s, value),
            _ => return fail(word, unknown()),
        }
    } else if let Some(short) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
        if family == Family::Lsf {
            // An option by its whole name (`-Is`), else one taking a value with the value
            // written straight after it (`-M1000`, `-n4`, `-R"span[hosts=1]"`), as LSF takes
            // them: the longest name that fits.
            let attached = specs
                .iter()
                .filter(|s| s.2 == Required && short.len() > s.0.len() && short.starts_with(s.0))
                .max_by_key(|s| s.0.len());
            match (specs.iter().find(|s| s.0 == short), attached) {
                (Some(s), _) => (s, None),
                (None, Some(s)) => (s, Some(short[s.0.len()..].to_string())),
                (None, None) => return fail(word, unknown()),
            }
        } else {
            let mut cs = short.chars();
            let letter = cs.next();
            let rest = cs.as_str();
            match specs.iter().find(|s| s.1.is_some() && s.1 == letter) {
                Some(s) if s.2 == Required && !rest.is_empty() => (s, Some(rest.to_string())),
                Some(s) if rest.is_empty() => (s, None),
                _ => return fail(word, unknown()),
            }
        }
    } else {
        return fail(word, JobError::UnexpectedArgument(word.clone()));
    };
    let value = match (spec.2, attached) {
        (No, Some(_)) => return fail(word, JobError::UnexpectedValue(word.clone())),
        (Required, None) => match words.get(*i) {
            Some(v) => {
                *i += 1;
                Some(v.clone())
            }
            None => return fail(word, JobError::MissingValue(word.clone())),
        },
        (_, v) => v,
    };
    let text = words[start..*i]
        .iter()
        .map(|w| quote(w))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Found {
        name: spec.0,
        value,
        text,
    })
}

/// Quotes a value for display when it holds blanks, so errors show what was written.
fn quote(v: &str) -> String {
    if v.is_empty() || v.contains(char::is_whitespace) {
        format!("\"{v}\"")
    } else {
        v.to_string()
    }
}

/// Parses `berth submit` flags (the `#BERTH` options, i.e. sbatch's plus `--image` and
/// `--bind`) into options that [`JobOptions::merge`] lays over a script's directives.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<JobOptions, JobError> {
    parse_args_as(Family::Berth, args)
}

/// Parses a submit command's options in `family`'s words (bsub's, qsub's, or berth's and
/// sbatch's), as [`parse_args`] parses berth's.
pub fn parse_args_as<S: AsRef<str>>(family: Family, args: &[S]) -> Result<JobOptions, JobError> {
    let words: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let mut opts = JobOptions::default();
    let mut i = 0;
    while i < words.len() {
        let found = next_option(family, &words, &mut i)
            .map_err(|(arg, reason)| argument_error(family, arg, reason))?;
        apply(family, &mut opts, &found, None)
            .map_err(|reason| argument_error(family, found.text.clone(), reason))?;
    }
    Ok(opts)
}

fn argument_error(family: Family, arg: String, reason: JobError) -> JobError {
    let reason = match reason {
        JobError::UnknownOption { option, .. } => JobError::UnknownOption {
            family: family.command(),
            option,
        },
        other => other,
    };
    JobError::Argument {
        arg,
        reason: Box::new(reason),
    }
}

/// One option of a command line: its name (bsub's word, qsub's letter) and the words it
/// took.
pub type LeadingOption = (&'static str, Vec<String>);

/// The options at the start of a bsub or qsub command line, as that command reads them
/// before its command or script: each option's name (bsub's word, qsub's letter) with the
/// words it took, and the index of the first word after them (past a `--`, which qsub puts
/// before a command). Nothing is applied: the caller picks out what is its own (`-Is`, `-z`)
/// and sends the rest to the controller, which parses them with [`parse_args_as`].
pub fn leading_options(
    family: Family,
    words: &[String],
) -> Result<(Vec<LeadingOption>, usize), JobError> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() && words[i].starts_with('-') && words[i] != "-" {
        if words[i] == "--" {
            return Ok((found, i + 1));
        }
        let start = i;
        let option = next_option(family, words, &mut i)
            .map_err(|(arg, reason)| argument_error(family, arg, reason))?;
        found.push((option.name, words[start..i].to_vec()));
    }
    Ok((found, i))
}

/// sbatch's input environment variables berth reads, the option each stands for, and
/// whether it takes the variable's value (otherwise a flag, set by the variable being there).
const SBATCH_ENV: &[(&str, &str, bool)] = &[
    ("SBATCH_ACCOUNT", "account", true),
    ("SBATCH_ACCTG_FREQ", "acctg-freq", true),
    ("SBATCH_ARRAY_INX", "array", true),
    ("SBATCH_CONSTRAINT", "constraint", true),
    ("SBATCH_DISTRIBUTION", "distribution", true),
    ("SBATCH_ERROR", "error", true),
    ("SBATCH_EXCLUSIVE", "exclusive", false),
    ("SBATCH_EXPORT", "export", true),
    ("SBATCH_GET_USER_ENV", "get-user-env", false),
    ("SBATCH_GPU_BIND", "gpu-bind", true),
    ("SBATCH_GPU_FREQ", "gpu-freq", true),
    ("SBATCH_GPUS", "gpus", true),
    ("SBATCH_GPUS_PER_NODE", "gpus-per-node", true),
    ("SBATCH_GPUS_PER_TASK", "gpus-per-task", true),
    ("SBATCH_TRES_PER_TASK", "tres-per-task", true),
    ("SBATCH_GRES", "gres", true),
    ("SBATCH_HINT", "hint", true),
    ("SBATCH_INPUT", "input", true),
    ("SBATCH_JOB_NAME", "job-name", true),
    ("SBATCH_MEM_BIND", "mem-bind", true),
    ("SBATCH_MEM_PER_CPU", "mem-per-cpu", true),
    ("SBATCH_MEM_PER_GPU", "mem-per-gpu", true),
    ("SBATCH_MEM_PER_NODE", "mem", true),
    ("SBATCH_NO_KILL", "no-kill", false),
    ("SBATCH_NO_REQUEUE", "no-requeue", false),
    ("SBATCH_OPEN_MODE", "open-mode", true),
    ("SBATCH_OUTPUT", "output", true),
    ("SBATCH_OVERCOMMIT", "overcommit", false),
    ("SBATCH_PARTITION", "partition", true),
    ("SBATCH_PROFILE", "profile", true),
    ("SBATCH_QOS", "qos", true),
    ("SBATCH_REQUEUE", "requeue", false),
    ("SBATCH_RESERVATION", "reservation", true),
    ("SBATCH_SIGNAL", "signal", true),
    ("SBATCH_SPREAD_JOB", "spread-job", false),
    ("SBATCH_THREADS_PER_CORE", "threads-per-core", true),
    ("SBATCH_TIMELIMIT", "time", true),
    ("SBATCH_USE_MIN_NODES", "use-min-nodes", false),
    ("SBATCH_WAIT", "wait", false),
    ("SBATCH_WCKEY", "wckey", true),
];

/// The options the submitter's environment gives, as sbatch reads its input environment
/// variables (`SBATCH_PARTITION`, `SBATCH_TIMELIMIT`, ...): they override the script's
/// directives, and the command line overrides them. Errors and warnings name the variable.
pub fn parse_env<K: AsRef<str>, V: AsRef<str>>(env: &[(K, V)]) -> Result<JobOptions, JobError> {
    let mut opts = JobOptions::default();
    for (var, option, takes_value) in SBATCH_ENV {
        let Some(value) = env
            .iter()
            .find(|(k, _)| k.as_ref() == *var)
            .map(|(_, v)| v.as_ref())
        else {
            continue;
        };
        let arg = match takes_value {
            true => format!("--{option}={value}"),
            false => format!("--{option}"),
        };
        let named = format!("{var}={value}");
        let mut one = parse_args(&[arg]).map_err(|e| match e {
            JobError::Argument { reason, .. } => JobError::Argument {
                arg: named.clone(),
                reason,
            },
            other => other,
        })?;
        one.ignored
            .iter_mut()
            .for_each(|i| i.option = named.clone());
        opts = JobOptions::merge(opts, one);
    }
    Ok(opts)
}

/// Whether the script's `#SBATCH` lines say `--ignore-pbs`: sbatch then reads none of its
/// `#PBS` and `#BSUB` lines (a script written for several batch systems).
fn ignores_other_directives(text: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(Family::Slurm.prefix())
            .and_then(|rest| split_words(rest).ok())
            .is_some_and(|words| words.iter().any(|w| w == "--ignore-pbs"))
    })
}

/// Reads a batch script's directives and `APPLICATION=` line.
pub fn parse_script(text: &str) -> Result<ParsedScript, JobError> {
    parse_script_with(text, false)
}

/// As [`parse_script`]; with `only_slurm` (sbatch `--ignore-pbs` on the command line, or in
/// the script's `#SBATCH` lines), without its `#PBS` and `#BSUB` lines.
pub fn parse_script_with(text: &str, only_slurm: bool) -> Result<ParsedScript, JobError> {
    let only_slurm = only_slurm || ignores_other_directives(text);
    let mut parsed = ParsedScript::default();
    let mut in_header = true;
    let mut application: Option<(String, usize)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if index == 0 && raw.starts_with("#!") {
            continue;
        }
        let trimmed = raw.trim_start();
        let directive = Family::ALL.into_iter().find_map(|f| {
            raw.strip_prefix(f.prefix())
                .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
                .map(|rest| (f, rest))
        });
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_header = false;
            if let Some(found) = application_line(trimmed, line)? {
                match &application {
                    Some((name, first)) if *name != found => {
                        return Err(JobError::Directive {
                            line,
                            directive: trimmed.to_string(),
                            reason: Box::new(JobError::Request(format!(
                                "APPLICATION was already set to '{name}' on line {first}; a job runs in one image"
                            ))),
                        });
                    }
                    Some(_) => {}
                    None => application = Some((found, line)),
                }
            }
            continue;
        }
        let Some((family, rest)) = directive else {
            continue;
        };
        if only_slurm && matches!(family, Family::Pbs | Family::Lsf) {
            parsed.options.ignored.push(IgnoredOption {
                line: Some(line),
                option: raw.trim().to_string(),
                reason: "--ignore-pbs: #PBS and #BSUB lines are not read".into(),
            });
            continue;
        }
        if !in_header {
            parsed.options.ignored.push(IgnoredOption {
                line: Some(line),
                option: raw.trim().to_string(),
                reason: "directive after the first command: sbatch, bsub and qsub stop reading directives there".into(),
            });
            continue;
        }
        if !parsed.families.contains(&family) {
            parsed.families.push(family);
        }
        let at_line = |text: String, reason| JobError::Directive {
            line,
            directive: format!("{} {text}", family.prefix()).trim_end().to_string(),
            reason: Box::new(reason),
        };
        let words = split_words(rest).map_err(|e| at_line(rest.trim().to_string(), e))?;
        let mut i = 0;
        while i < words.len() {
            let found = next_option(family, &words, &mut i).map_err(|(t, e)| at_line(t, e))?;
            apply(family, &mut parsed.options, &found, Some(line))
                .map_err(|e| at_line(found.text.clone(), e))?;
        }
    }
    if parsed.options.image.is_none() {
        parsed.options.image = application.map(|(name, line)| ImageRef {
            name,
            origin: ImageOrigin::Application { line },
        });
    }
    Ok(parsed)
}

/// Recognises `[export] APPLICATION=IMAGE [OTHER=...]`, a shell assignment, not a command
/// that merely mentions it (`echo APPLICATION=x`, `APPLICATION=x ./run`).
fn application_line(text: &str, line: usize) -> Result<Option<String>, JobError> {
    let Ok(words) = split_words(text) else {
        return Ok(None);
    };
    let assignments = match words.first().map(String::as_str) {
        Some("export") => &words[1..],
        _ => &words[..],
    };
    let is_assignment = |w: &String| {
        w.split_once('=').is_some_and(|(n, _)| {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let Some(value) = assignments
        .iter()
        .find_map(|w| w.strip_prefix("APPLICATION="))
    else {
        return Ok(None);
    };
    // `APPLICATION=$(...)` splits into several words; it is still an assignment, of a value
    // berth cannot know.
    let computed = assignments
        .first()
        .is_some_and(|w| w.starts_with("APPLICATION=") && w.contains(['$', '`']));
    if !computed && !assignments.iter().all(is_assignment) {
        return Ok(None);
    }
    if value.is_empty() || value.contains(['$', '`', '(', ' ']) {
        return Err(JobError::Directive {
            line,
            directive: text.to_string(),
            reason: Box::new(JobError::Invalid {
                what: "image name",
                value: value.to_string(),
                expected: "a literal image name such as openfoam:2.3.0 (berth reads APPLICATION without running the script)".into(),
            }),
        });
    }
    Ok(Some(value.to_string()))
}

/// A umask in octal (PBS's `-W umask=077`).
fn umask(value: &str) -> Result<u32, JobError> {
    match u32::from_str_radix(value.trim(), 8) {
        Ok(mask) if mask <= 0o777 => Ok(mask),
        _ => Err(JobError::invalid(
            "umask",
            value,
            "an octal mask such as 022 or 077",
        )),
    }
}

fn count(what: &'static str, value: &str) -> Result<u32, JobError> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(JobError::invalid(what, value, "a positive integer")),
    }
}

/// Parses a memory size whose bare numbers are `default_unit` (`"M"`: sbatch's `--mem`,
/// LSF with LSF_UNIT_FOR_LIMITS=MB; `""`: bytes, as PBS).
fn size(value: &str, default_unit: &str) -> Result<u64, JobError> {
    let v = value.trim();
    let text = if v.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{v}{default_unit}")
    } else {
        v.to_string()
    };
    let expected = if default_unit == "M" {
        "a positive size: megabytes, or a number with K, M, G or T (e.g. 4096 or 4G)"
    } else {
        "a positive size: bytes, or a number with kb, mb, gb or tb (e.g. 4gb)"
    };
    parse_size(&text).map_err(|_| JobError::invalid("memory size", value, expected))
}

/// A memory size as Slurm's commands take it (`srun --mem`): a bare number is megabytes;
/// 0 (with a unit or not) is 0.
pub fn parse_slurm_size(value: &str) -> Result<u64, JobError> {
    match value
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
    {
        "0" => Ok(0),
        _ => size(value, "M"),
    }
}

fn ignore(opts: &mut JobOptions, found: &Found, line: Option<usize>, reason: &str) {
    ignore_text(opts, found.text.clone(), line, reason);
}

fn ignore_text(opts: &mut JobOptions, option: String, line: Option<usize>, reason: &str) {
    opts.ignored.push(IgnoredOption {
        line,
        option,
        reason: reason.to_string(),
    });
}

/// An option of bsub's or qsub's command line met anywhere else (a directive, berth's API).
fn command_line_only(found: &Found) -> JobError {
    JobError::unsupported(
        &found.text,
        "it is an option of the bsub or qsub command itself (berth answers to those names), not of a script",
    )
}

/// Applies one option of `family` to `opts`.
fn apply(
    family: Family,
    opts: &mut JobOptions,
    found: &Found,
    line: Option<usize>,
) -> Result<(), JobError> {
    let v = found.value.as_deref().unwrap_or("");
    match family {
        Family::Slurm | Family::Berth => apply_slurm(opts, found, v, line),
        Family::Lsf => apply_lsf(opts, found, v, line),
        Family::Pbs => apply_pbs(opts, found, v, line),
    }
}

fn apply_slurm(
    opts: &mut JobOptions,
    found: &Found,
    v: &str,
    line: Option<usize>,
) -> Result<(), JobError> {
    match found.name {
        "job-name" => opts.name = Some(v.to_string()),
        "ntasks" => opts.ntasks = Some(count("task count", v)?),
        "ntasks-per-node" => opts.ntasks_per_node = Some(count("tasks per node", v)?),
        "cpus-per-task" => opts.cpus_per_task = Some(count("CPUs per task", v)?),
        "nodes" => {
            let (min, max) = match v.split_once('-') {
                Some((a, b)) => (count("node count", a)?, count("node count", b)?),
                None => {
                    let n = count("node count", v)?;
                    (n, n)
                }
            };
            if max < min {
                return Err(JobError::invalid(
                    "node count",
                    v,
                    "MIN-MAX with MIN <= MAX",
                ));
            }
            opts.nodes = Some(NodeRange { min, max });
        }
        "mem" | "mem-per-cpu" | "mem-per-gpu" => {
            // One of them, as sbatch takes them (from one place: the command line's may
            // replace the script's).
            let option = |m: &Memory| match m {
                Memory::PerCpu(_) => "mem-per-cpu",
                Memory::PerGpu(_) => "mem-per-gpu",
                _ => "mem",
            };
            if let Some(other) = opts.memory.as_ref().map(option).filter(|o| *o != found.name) {
                return Err(request_err(format!(
                    "--{other} and --{} are mutually exclusive: give one",
                    found.name
                )));
            }
            opts.memory = Some(match found.name {
                "mem-per-cpu" => Memory::PerCpu(size(v, "M")?),
                "mem-per-gpu" => Memory::PerGpu(size(v, "M")?),
                // sbatch reads --mem=0 as all of each node's memory.
                _ if v.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" => {
                    Memory::WholeNode
                }
                _ => Memory::PerNode(size(v, "M")?),
            });
        }
        "time" => opts.time_limit = Some(slurm_time_limit(v)?),
        "output" => opts.output = Some(path("output file", v)?),
        "error" => opts.error = Some(path("error file", v)?),
        "input" => opts.input = Some(path("input file", v)?),
        "open-mode" => {
            opts.open_mode = Some(match v {
                "append" => OpenMode::Append,
                "truncate" => OpenMode::Truncate,
                _ => return Err(JobError::invalid("open mode", v, "append or truncate")),
            })
        }
        "partition" => opts.partition = Some(word("partition", v)?),
        "array" => opts.array = Some(ArraySpec::parse(v)?),
        "dependency" => opts.dependencies = Some(Dependencies::parse_slurm(v)?),
        "hold" => opts.hold = Some(true),
        "test-only" => opts.test_only = Some(true),
        "export" => opts.export = Some(slurm_export(v)?),
        "export-file" => opts.export_file = Some(v.to_string()),
        "chdir" | "workdir" => opts.workdir = Some(path("working directory", v)?),
        "gpus" => opts.gpus = gpu_count(v, GpuScope::Job)?,
        "gpus-per-node" => opts.gpus = gpu_count(v, GpuScope::Node)?,
        "gpus-per-task" => opts.gpus = gpu_count(v, GpuScope::Task)?,
        "tres-per-task" => {
            for tres in v.split(',') {
                match tres_per_task(tres)? {
                    TresPerTask::Cpus(n) => opts.cpus_per_task = Some(n),
                    TresPerTask::Gpus(g) => opts.gpus = g,
                }
            }
        }
        "gres" => opts.gpus = gres(v)?,
        "nice" => {
            // sbatch: a bare --nice is 100.
            opts.nice = Some(match found.value.as_deref() {
                None => 100,
                Some(n) => n
                    .parse::<i32>()
                    .map_err(|_| JobError::invalid("nice value", n, "an integer such as 10"))?,
            });
        }
        "account" => opts.account = Some(word("account", v)?),
        "exclusive" => match found.value.as_deref() {
            None => opts.exclusive = Some(true),
            // Nodes shared only with the user's own jobs (or the MCS label's, the topology
            // block's): berth gives the job its nodes whole, which is all of those.
            Some("user" | "mcs" | "topo") => {
                opts.exclusive = Some(true);
                ignore(opts, found, line, "berth gives the job its nodes whole");
            }
            Some(x) => {
                return Err(JobError::unsupported(
                    x,
                    "--exclusive takes no value, or user, mcs or topo",
                ))
            }
        },
        "overcommit" => opts.overcommit = Some(true),
        "mincpus" => opts.min_cpus = Some(count("CPUs per node", v)?),
        // Acted on as the script is read (see `ignores_other_directives`).
        "ignore-pbs" => {}
        "uid" => opts.uid = Some(word("user", v)?),
        "requeue" => opts.requeue = Some(true),
        "no-requeue" => opts.requeue = Some(false),
        "mail-type" => {
            let (events, unsent) = MailEvents::parse_slurm(v)?;
            opts.mail = Some(events);
            for t in unsent {
                ignore_text(opts, format!("--mail-type={t}"), line, "berth has no burst buffers to stage out of");
            }
        }
        "mail-user" => opts.mail_to = Some(parse_addresses(v)?),
        "comment" => opts.comment = Some(v.to_string()),
        "qos" => ignore(
            opts,
            found,
            line,
            "berth has no QOS; partitions carry the limits",
        ),
        "image" => {
            opts.image = Some(ImageRef {
                name: shifter_image(v)?,
                origin: match line {
                    Some(line) => ImageOrigin::Directive { line },
                    None => ImageOrigin::Cli,
                },
            })
        }
        "bind" => opts.binds.push(bind(v)?),
        "volume" => opts.binds.extend(shifter_volumes(v)?),
        "module" if matches!(v, "none" | "") => {}
        "module" => ignore(
            opts,
            found,
            line,
            "Shifter's modules are a site's own additions to images, and berth has none: a job's GPUs bring their driver's libraries (--gpus), and MPI runs as the image has it",
        ),
        "signal" => slurm_signal(opts, v)?,
        "begin" => opts.begin = Some(parse_slurm_begin(v)?),
        "deadline" => opts.deadline = Some(parse_slurm_deadline(v)?),
        "wait" => opts.wait = Some(true),
        "hint" | "distribution" | "threads-per-core" | "ntasks-per-core" | "ntasks-per-socket"
        | "cores-per-socket" | "sockets-per-node" | "extra-node-info" | "mem-bind"
        | "gpu-bind" => ignore(
            opts,
            found,
            line,
            "berth places the tasks itself: in blocks over the nodes, the job pinned to cores of its own",
        ),
        "cpu-freq" | "gpu-freq" => ignore(opts, found, line, "berth sets no CPU or GPU frequencies"),
        "wckey" => ignore(opts, found, line, "berth keeps no workload keys"),
        "profile" | "acctg-freq" => ignore(
            opts,
            found,
            line,
            "berth accounts a job from its cgroup (CPU time, peak memory), not by sampling",
        ),
        "switches" | "spread-job" | "use-min-nodes" | "contiguous" | "batch" => {
            ignore(opts, found, line, "berth chooses the nodes itself")
        }
        "gres-flags" => ignore(
            opts,
            found,
            line,
            "berth gives a job's GPUs from the nodes it runs on, with its cores",
        ),
        "delay-boot" | "power" => ignore(opts, found, line, "berth boots no nodes for a job"),
        "network" => ignore(
            opts,
            found,
            line,
            "a job's containers use the host's network, as its interconnect needs",
        ),
        "thread-spec" | "core-spec" => ignore(
            opts,
            found,
            line,
            "berth sets no cores or threads aside for the system in a job",
        ),
        "get-user-env" => ignore(
            opts,
            found,
            line,
            "the job gets the environment of the submission (--export)",
        ),
        "propagate" => ignore(
            opts,
            found,
            line,
            "the job's limits are its allocation's (cgroup), not the submitter's ulimits",
        ),
        "time-min" => ignore(opts, found, line, "berth runs a job for its whole --time"),
        "no-kill" => ignore(
            opts,
            found,
            line,
            "a job that loses a node ends NODE_FAIL (or is requeued with --requeue)",
        ),
        "oversubscribe" => ignore(
            opts,
            found,
            line,
            "cores are shared only where the administrator set [batch] oversubscribe",
        ),
        "quiet" => ignore(opts, found, line, "berth submit prints what it always prints"),
        // (berth's default: yes.)
        "kill-on-invalid-dep" => {
            opts.kill_on_invalid_dep = Some(match v {
                "yes" => true,
                "no" => false,
                _ => return Err(JobError::invalid("kill-on-invalid-dep", v, "yes or no")),
            })
        }
        "constraint" => opts.constraint = Some(constraint(v)?),
        "nodelist" => opts.nodelist = Some(nodes(v)?),
        "exclude" => opts.exclude = Some(nodes(v)?),
        "reservation" => opts.reservation = Some(word("reservation", v)?),
        "tmp" => {
            size(v, "M")?;
            ignore(
                opts,
                found,
                line,
                "berth reserves no scratch disk on the nodes: a job's /tmp in its container is its own, in memory (counted in its --mem)",
            )
        }
        "clusters" => ignore(opts, found, line, "berth is one cluster: the job runs in this one"),
        "prefer" => {
            constraint(v)?;
            ignore(
                opts,
                found,
                line,
                "a preference: berth places a job by what --constraint requires",
            )
        }
        "licenses" => opts.licenses = Some(licenses(v)?),
        "x11" | "cpus-per-gpu" | "ntasks-per-gpu" | "gpus-per-socket" | "priority" | "gid" => {
            return Err(JobError::unsupported(
                &found.text,
                match found.name {
                    "x11" => "berth forwards no X11 display into jobs",
                    "cpus-per-gpu" | "ntasks-per-gpu" => "berth sizes a job by its tasks: ask for CPUs per task (-c) and GPUs per task or node (--gpus-per-task, --gpus-per-node)",
                    "gpus-per-socket" => "berth gives GPUs per job, node or task (--gpus, --gpus-per-node, --gpus-per-task)",
                    "priority" => "a job's priority comes from the site's priority factors; --nice=N lowers yours",
                    _ => "a job runs with its user's own groups (root names the user with --uid)",
                },
            ))
        }
        "container-image" => {
            opts.image = Some(ImageRef {
                name: pyxis_image(v)?,
                origin: match line {
                    Some(line) => ImageOrigin::Directive { line },
                    None => ImageOrigin::Cli,
                },
            })
        }
        "container-mounts" => opts.binds.extend(pyxis_mounts(v)?),
        "container-workdir" => {
            if !v.starts_with('/') {
                return Err(JobError::invalid(
                    "container working directory",
                    v,
                    "an absolute path in the image",
                ));
            }
            opts.container_workdir = Some(path("container working directory", v)?)
        }
        "container-mount-home" => opts.no_home = Some(false),
        "no-container-mount-home" => opts.no_home = Some(true),
        "container-env" => {
            for name in v.split(',') {
                match env_var(name, v)? {
                    EnvVar { name, value: None } => opts.host_env.push(name),
                    _ => {
                        return Err(JobError::invalid(
                            "container environment",
                            v,
                            "names of variables separated by ','",
                        ))
                    }
                }
            }
        }
        // What berth does: a job's root is writable (a layer of its own over the image).
        "container-writable" => {}
        "container-remap-root" => opts.container_remap_root = Some(true),
        "no-container-remap-root" => opts.container_remap_root = Some(false),
        "container-entrypoint" => opts.container_entrypoint = Some(true),
        "no-container-entrypoint" => opts.container_entrypoint = Some(false),
        "container-readonly" => ignore(
            opts,
            found,
            line,
            "the job writes to a layer of its own over the image, dropped at its end; the image never changes",
        ),
        "container-name" => {
            let named = ContainerName::parse(v)?;
            if named.mode == NameMode::Exec {
                return Err(JobError::unsupported(
                    v,
                    "'exec' joins a running container, and a job's own container is new: name it without a flag",
                ));
            }
            opts.container_name = Some(named)
        }
        "container-entrypoint-log" => ignore(opts, found, line, "berth runs no entrypoint"),
        "container-save" => {
            if v.ends_with('/') {
                return Err(JobError::invalid(
                    "--container-save",
                    v,
                    "the path of a file (a squashfs image to write), not a directory's",
                ));
            }
            opts.container_save = Some(v.to_string())
        }
        other => {
            return Err(JobError::unsupported(
                other,
                "berth has no handler for this option",
            ))
        }
    }
    Ok(())
}

/// sbatch `--constraint`: features joined by `&` (and) and `|` (or), `&` binding tighter,
/// as sets of which each node must have one whole.
fn constraint(v: &str) -> Result<Vec<Vec<String>>, JobError> {
    if v.contains(['[', ']', '(', ')', '*', '!']) {
        return Err(JobError::unsupported(
            v,
            "berth reads features joined by & (and) and | (or); counts, brackets and parentheses are not supported",
        ));
    }
    v.split('|')
        .map(|all| {
            all.split(['&', ','])
                .map(|f| {
                    let f = f.trim();
                    match f.is_empty() || f.contains(char::is_whitespace) {
                        true => Err(JobError::invalid(
                            "constraint",
                            v,
                            "FEATURE[&FEATURE...][|...]",
                        )),
                        false => Ok(f.to_string()),
                    }
                })
                .collect()
        })
        .collect()
}

/// sbatch `--nodelist`/`--exclude`: a hostlist (`n[1-3],gpu1`).
/// `-L/--licenses`: `NAME[:COUNT]` joined by commas (`matlab:2,ansys`), a name given
/// twice counted once with both counts; Slurm's `|` (any one of several) is refused.
pub fn licenses(v: &str) -> Result<Vec<(String, u32)>, JobError> {
    const EXPECTED: &str = "NAME[:COUNT] joined by commas, as matlab:2,ansys";
    if v.contains('|') {
        return Err(JobError::unsupported(
            v,
            "any one of several licenses (|): name the licenses the job needs, joined by ','",
        ));
    }
    let mut out: Vec<(String, u32)> = Vec::new();
    // (None: scontrol update's `Licenses=` takes them away.)
    for item in v.split(',').filter(|_| !v.is_empty()) {
        let (name, count) = match item.split_once(':') {
            Some((name, count)) => match count.parse::<u32>() {
                Ok(n @ 1..) => (name, n),
                _ => return Err(JobError::invalid("licenses", v, EXPECTED)),
            },
            None => (item, 1),
        };
        let named = |c: char| c.is_ascii_alphanumeric() || "_-.@".contains(c);
        if name.is_empty() || !name.chars().all(named) {
            return Err(JobError::invalid("licenses", v, EXPECTED));
        }
        add_license(&mut out, name, count);
    }
    Ok(out)
}

/// `count` more of license `name` in `asked`, which names each once.
fn add_license(asked: &mut Vec<(String, u32)>, name: &str, count: u32) {
    match asked.iter_mut().find(|(n, _)| n == name) {
        Some((_, have)) => *have = have.saturating_add(count),
        None => asked.push((name.to_string(), count)),
    }
}

fn nodes(v: &str) -> Result<Vec<String>, JobError> {
    if v.contains('/') {
        return Err(JobError::unsupported(
            v,
            "name the nodes, not a file of them",
        ));
    }
    crate::job::expand_hostlist(v)
        .ok_or_else(|| JobError::invalid("node list", v, "NAME[,NAME...], e.g. n[1-3],gpu1"))
}

/// sbatch `--signal=[{R|B}:]SIGNAL[@SECONDS]`: SECONDS (0-65535, 60 when not given) before
/// the time limit; `B:` signals the batch shell alone, otherwise the job's steps get it;
/// `R:` (allowing a reservation to overlap) means nothing to berth.
fn slurm_signal(opts: &mut JobOptions, v: &str) -> Result<(), JobError> {
    let bad = || JobError::invalid("signal", v, "[{R|B}:]SIGNAL[@SECONDS], e.g. B:USR1@120");
    let (flags, rest) = match v.split_once(':') {
        Some((f, rest)) if !f.is_empty() && f.chars().all(|c| matches!(c, 'R' | 'B')) => (f, rest),
        Some(_) => return Err(bad()),
        None => ("", v),
    };
    let (name, seconds) = match rest.split_once('@') {
        Some((name, seconds)) => (name, Some(seconds)),
        None => (rest, None),
    };
    opts.signal = Some(crate::signal::number(name).ok_or_else(bad)?);
    opts.signal_before = Some(match seconds {
        None => 60,
        Some(s) => u64::from(s.parse::<u16>().map_err(|_| match s.parse::<u64>() {
            Ok(_) => JobError::invalid(
                "signal",
                v,
                "a time before the limit of at most 65535 seconds, as sbatch's",
            ),
            Err(_) => bad(),
        })?),
    });
    opts.signal_target = Some(if flags.contains('B') {
        SignalTarget::Batch
    } else {
        SignalTarget::Steps
    });
    Ok(())
}

/// Values that must be one non-empty word (partition, account, image).
fn word(what: &'static str, v: &str) -> Result<String, JobError> {
    if v.is_empty() || v.contains(char::is_whitespace) {
        return Err(JobError::invalid(what, v, "a name without blanks"));
    }
    Ok(v.to_string())
}

/// sbatch's `--time`, where `0`, `UNLIMITED` and `INFINITE` ask for no limit
/// ([`super::UNLIMITED_TIME`]).
fn slurm_time_limit(v: &str) -> Result<u64, JobError> {
    let t = v.trim();
    if t == "0" || t.eq_ignore_ascii_case("UNLIMITED") || t.eq_ignore_ascii_case("INFINITE") {
        return Ok(super::UNLIMITED_TIME);
    }
    parse_slurm_time(v)
}

fn path(what: &'static str, v: &str) -> Result<String, JobError> {
    if v.is_empty() || v.contains('\0') {
        return Err(JobError::invalid(what, v, "a path"));
    }
    Ok(v.to_string())
}

/// pyxis's `--container-image` (enroot's image URI, `[docker://][USER@][REGISTRY#]IMAGE[:TAG]`,
/// or an image file) as berth names the image: `REGISTRY/IMAGE[:TAG]`, or the file's path.
pub fn pyxis_image(v: &str) -> Result<String, JobError> {
    // enroot's squashfs file (or another image file): the submitting command uploads it.
    if super::image_is_file(v) {
        return path("image file", v);
    }
    let uri = v.strip_prefix("docker://").unwrap_or(v);
    if let Some((user, _)) = uri
        .split_once('@')
        .filter(|(u, _)| !u.contains(['/', '#', ':']))
    {
        return Err(JobError::unsupported(
            v,
            &format!("a registry user ('{user}@'): the node's berth logs in to registries itself; name the image without it"),
        ));
    }
    let name = match uri.split_once('#') {
        Some((registry, image)) => format!("{registry}/{image}"),
        None => uri.to_string(),
    };
    word("image name", &name)
}

/// Shifter's `--image=[TYPE:]SPEC` as berth names the image: `docker:REPO[:TAG]` (and a
/// value with no type Shifter knows, `ubuntu:22.04`) is that image, `id:HEX` the image of
/// that id. Shifter's `local:` and `custom:` are a site's own trees, which berth runs only
/// once imported.
pub fn shifter_image(v: &str) -> Result<String, JobError> {
    let name = match v.split_once(':') {
        Some(("docker", rest)) => rest.to_string(),
        Some(("id", hex)) => {
            let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
            if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(JobError::invalid(
                    "image id",
                    v,
                    "id: and the hexadecimal id of an image (berth image ls shows them)",
                ));
            }
            format!("sha256:{hex}")
        }
        Some((kind @ ("local" | "custom"), _)) => {
            return Err(JobError::unsupported(
                v,
                &format!("Shifter's {kind}: images are a site's own trees: upload a tarball of one into the cluster's store (berth image import --cluster TARBALL --name NAME) and name what it says"),
            ))
        }
        _ => v.to_string(),
    };
    word("image name", &name)
}

/// Shifter's `--volume`: `SRC:DST[:FLAG]...` binds separated by `;`, as berth's binds; the
/// flags `ro` and `rec` (berth's binds are recursive) are taken, Shifter's per-node caches
/// are not.
pub fn shifter_volumes(v: &str) -> Result<Vec<String>, JobError> {
    let mut binds = Vec::new();
    for volume in v.split(';').map(str::trim).filter(|m| !m.is_empty()) {
        let mut parts = volume.split(':');
        let (src, dst) = (parts.next().unwrap_or_default(), parts.next());
        let Some(dst) = dst.filter(|d| d.starts_with('/') && src.starts_with('/')) else {
            return Err(JobError::invalid(
                "volume",
                volume,
                "SRC:DST[:ro] with absolute paths, e.g. /scratch/me/data:/data:ro",
            ));
        };
        let mut mode = "rw";
        for flag in parts {
            match flag {
                "ro" => mode = "ro",
                "rec" | "" => {}
                f if f.starts_with("perNodeCache") => {
                    return Err(JobError::unsupported(
                        volume,
                        "Shifter's per-node cache volumes: berth binds host paths only; a job's /tmp is its own already",
                    ))
                }
                other => {
                    return Err(JobError::unsupported(
                        volume,
                        &format!("volume flag '{other}': berth takes ro (and rec, which its binds are)"),
                    ))
                }
            }
        }
        binds.push(bind(&format!("{src}:{dst}:{mode}"))?);
    }
    Ok(binds)
}

/// A named container (pyxis's `--container-name=NAME[:FLAG]`): on each node of a job, a
/// container whose files (its writable layer over its image) stay from one step to the next
/// until the job ends, and which later steps join while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerName {
    pub name: String,
    pub mode: NameMode,
}

/// What a step does with its named container (pyxis's flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameMode {
    /// Join it while it runs; else start it again over its files; create it if it does
    /// not exist yet.
    #[default]
    Auto,
    /// Create it: it must not exist yet.
    Create,
    /// Join it: it must be running.
    Exec,
    /// Never join it: start it again over its files (or create it).
    NoExec,
}

impl ContainerName {
    /// Reads `NAME[:auto|create|exec|no_exec]`. A name is a file name on each node: up to
    /// 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'.
    pub fn parse(v: &str) -> Result<ContainerName, JobError> {
        let (name, flag) = v.split_once(':').unwrap_or((v, "auto"));
        let fine = (1..=128).contains(&name.len())
            && !name.starts_with(['.', '-'])
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !fine {
            return Err(JobError::invalid(
                "container name",
                v,
                "NAME[:FLAG], the name up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            ));
        }
        let mode = match flag {
            "auto" | "" => NameMode::Auto,
            "create" => NameMode::Create,
            "exec" => NameMode::Exec,
            "no_exec" => NameMode::NoExec,
            _ => {
                return Err(JobError::invalid(
                    "container name flag",
                    v,
                    "auto, create, exec or no_exec after the name (NAME:FLAG)",
                ))
            }
        };
        Ok(ContainerName {
            name: name.to_string(),
            mode,
        })
    }
}

/// pyxis's `--container-mounts`: `SRC[:DST[:FLAGS]]` binds separated by commas, the flags
/// by `+` (`ro`, `rw`, and the propagation and recursion flags berth's binds already have),
/// as berth's binds (`SRC[:DST[:ro|rw]]`).
pub fn pyxis_mounts(v: &str) -> Result<Vec<String>, JobError> {
    let mut binds = Vec::new();
    for mount in v.split(',') {
        let mut parts = mount.splitn(3, ':');
        let src = parts.next().unwrap_or_default();
        let dst = parts.next().unwrap_or(src);
        let mut mode = "rw";
        for flag in parts
            .next()
            .unwrap_or_default()
            .split('+')
            .filter(|f| !f.is_empty())
        {
            match flag {
                "ro" | "rw" => mode = flag,
                "bind" | "rbind" | "private" | "rprivate" | "slave" | "rslave" | "nosuid"
                | "nodev" => {}
                other => {
                    return Err(JobError::unsupported(
                        mount,
                        &format!("mount flag '{other}': berth binds take ro or rw (private, recursive, nosuid, nodev)"),
                    ))
                }
            }
        }
        if !src.starts_with('/') || !dst.starts_with('/') {
            return Err(JobError::invalid(
                "container mount",
                mount,
                "SRC[:DST[:FLAGS]] with absolute paths, e.g. /data:/data:ro",
            ));
        }
        binds.push(bind(&format!("{src}:{dst}:{mode}"))?);
    }
    Ok(binds)
}

/// Checks `SRC[:DST[:ro|rw]]` as the runtime's bind parser will read it.
fn bind(v: &str) -> Result<String, JobError> {
    let parts: Vec<&str> = v.split(':').collect();
    let ok = !parts[0].is_empty()
        && match parts.as_slice() {
            [_] | [_, _] => true,
            [_, dst, mode] => dst.starts_with('/') && matches!(*mode, "ro" | "rw"),
            _ => false,
        }
        && (parts.len() != 2 || parts[1].starts_with('/') || matches!(parts[1], "ro" | "rw"));
    if !ok {
        return Err(JobError::invalid(
            "bind",
            v,
            "SRC[:DST[:ro|rw]] with an absolute DST",
        ));
    }
    Ok(v.to_string())
}

/// sbatch `--export`: ALL, NONE (or NIL), or `[ALL,]VAR[=value],...`.
fn slurm_export(v: &str) -> Result<Export, JobError> {
    let mut export = Export::none();
    for item in v.split(',') {
        match item {
            "ALL" => export.all = true,
            "NONE" | "NIL" => {}
            _ => export.vars.push(env_var(item, v)?),
        }
    }
    Ok(export)
}

fn env_var(item: &str, whole: &str) -> Result<EnvVar, JobError> {
    let (name, value) = match item.split_once('=') {
        Some((n, val)) => (n, Some(val.to_string())),
        None => (item, None),
    };
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(JobError::invalid(
            "variable list",
            whole,
            "ALL, NONE or NAME[=VALUE] items separated by ','",
        ));
    }
    Ok(EnvVar {
        name: name.to_string(),
        value,
    })
}

/// `N` or `MODEL:N` (sbatch `--gpus`, `--gpus-per-node`, `--gpus-per-task`); a count of 0
/// asks for none, as Slurm takes it.
fn gpu_count(v: &str, scope: GpuScope) -> Result<Option<GpuRequest>, JobError> {
    let (model, n) = match v.rsplit_once(':') {
        Some((m, n)) if !m.is_empty() && !m.contains(':') => (Some(m.to_string()), n),
        Some(_) => return Err(JobError::invalid("GPU count", v, "N or MODEL:N")),
        None => (None, v),
    };
    gpus(n, scope, model)
}

/// `n` GPUs (none for 0) in `scope`, of `model` if named.
fn gpus(n: &str, scope: GpuScope, model: Option<String>) -> Result<Option<GpuRequest>, JobError> {
    if n.parse::<u32>() == Ok(0) {
        return Ok(None);
    }
    Ok(Some(GpuRequest {
        count: count("GPU count", n)?,
        scope,
        model,
    }))
}

/// One of `--tres-per-task`'s resources.
enum TresPerTask {
    Cpus(u32),
    Gpus(Option<GpuRequest>),
}

/// One of sbatch `--tres-per-task`'s resources, `cpu:N` (as --cpus-per-task) or
/// `gres/gpu[:MODEL]:N` (as --gpus-per-task); `=` for the last `:` too.
fn tres_per_task(v: &str) -> Result<TresPerTask, JobError> {
    let (name, n) = match v.rsplit_once([':', '=']) {
        Some((name, n)) if n.starts_with(|c: char| c.is_ascii_digit()) => (name, n),
        _ => (v, "1"),
    };
    match name {
        "cpu" => Ok(TresPerTask::Cpus(count("CPUs per task", n)?)),
        "gres/gpu" | "gpu" => Ok(TresPerTask::Gpus(gpus(n, GpuScope::Task, None)?)),
        model if model.starts_with("gres/gpu:") => {
            let model = model["gres/gpu:".len()..].to_string();
            Ok(TresPerTask::Gpus(gpus(n, GpuScope::Task, Some(model))?))
        }
        _ => Err(JobError::invalid(
            "trackable resource per task",
            v,
            "cpu:N or gres/gpu[:MODEL]:N (berth tracks CPUs and GPUs)",
        )),
    }
}

/// sbatch `--gres=gpu[:MODEL][:N]`, per node (`gpu:0`: none); other generic resources are
/// refused.
fn gres(v: &str) -> Result<Option<GpuRequest>, JobError> {
    if v.contains(',') {
        return Err(JobError::unsupported(
            v,
            "several generic resources; berth knows gpu only",
        ));
    }
    let parts: Vec<&str> = v.split(':').collect();
    let (model, n) = match parts.as_slice() {
        ["gpu"] => (None, "1"),
        ["gpu", n] if n.starts_with(|c: char| c.is_ascii_digit()) => (None, *n),
        ["gpu", m] => (Some(m.to_string()), "1"),
        ["gpu", m, n] => (Some(m.to_string()), *n),
        [other, ..] if *other != "gpu" => {
            return Err(JobError::unsupported(v, "generic resources other than gpu"))
        }
        _ => {
            return Err(JobError::invalid(
                "generic resource",
                v,
                "gpu, gpu:N or gpu:MODEL:N",
            ))
        }
    };
    gpus(n, GpuScope::Node, model)
}

fn apply_lsf(
    opts: &mut JobOptions,
    found: &Found,
    v: &str,
    line: Option<usize>,
) -> Result<(), JobError> {
    match found.name {
        "J" => {
            let (name, array) = lsf_job_name(v)?;
            opts.name = name.or(opts.name.take());
            if array.is_some() {
                opts.array = array;
            }
        }
        // MIN,MAX: the least is what it gets (berth starts a job with a fixed count).
        "n" => {
            let min = v.split_once(',').map_or(v, |(min, _)| min);
            opts.ntasks = Some(count("slot count", min)?);
        }
        "G" => ignore(
            opts,
            found,
            line,
            "berth keeps no user groups for fair share",
        ),
        "app" => ignore(opts, found, line, "berth has no application profiles"),
        "sla" => ignore(opts, found, line, "berth has no service classes"),
        "E" | "Ep" => ignore(
            opts,
            found,
            line,
            "berth runs no pre- or post-execution commands: put them in the script",
        ),
        "We" => ignore(opts, found, line, "berth backfills on the run limit (-W)"),
        "alloc_flags" => ignore(opts, found, line, "berth has no node allocation flags"),
        "C" | "c" | "S" | "F" => ignore(
            opts,
            found,
            line,
            "berth sets no core file, CPU time, stack or file size limits of its own",
        ),
        "sp" => ignore(
            opts,
            found,
            line,
            "berth orders a user's jobs by their priority factors (bsub has no nice: use sbatch's --nice)",
        ),
        "outdir" => ignore(opts, found, line, "name the output files' directory in -o and -e"),
        "g" => ignore(opts, found, line, "berth has no job groups"),
        "a" => ignore(opts, found, line, "berth runs no esub programs"),
        "k" => ignore(opts, found, line, "berth does not checkpoint jobs"),
        "Q" => ignore(
            opts,
            found,
            line,
            "berth requeues on node failure (-r) and by hand (brequeue), not by exit value",
        ),
        "s" => ignore(
            opts,
            found,
            line,
            "a job killed gets SIGTERM, then SIGKILL: trap SIGTERM",
        ),
        "ti" | "hl" | "tty" => ignore(opts, found, line, "berth has no counterpart of it"),
        "nnodes" => {
            let n = count("node count", v)?;
            opts.nodes = Some(NodeRange { min: n, max: n });
        }
        "env" => opts.export = Some(lsf_env(v)?),
        "U" => opts.reservation = Some(word("reservation", v)?),
        "Jd" => opts.comment = Some(v.to_string()),
        "L" => ignore(
            opts,
            found,
            line,
            "the script runs with the shell of its #! line, in the job's environment",
        ),
        "R" => lsf_resources(opts, v, found, line)?,
        // bsub -M: LSF_UNIT_FOR_LIMITS=MB (what most sites set) makes bare numbers MB.
        // The limit applies per process, i.e. per slot of one CPU.
        "M" => opts.memory = Some(Memory::PerCpu(size(v, "M")?)),
        // (`-W 10/host`: a normalised time, which berth's hosts all share.)
        "W" => opts.time_limit = Some(parse_lsf_time(v.split('/').next().unwrap_or(v))?),
        // bsub -o/-e append to an existing file; -oo/-eo overwrite it; each its own.
        "o" | "oo" | "e" | "eo" => {
            let mode = match found.name.len() {
                2 => OpenMode::Truncate,
                _ => OpenMode::Append,
            };
            match found.name.starts_with('o') {
                true => {
                    opts.output = Some(path("output file", &lsf_file(v, "out"))?);
                    opts.open_mode = Some(mode);
                }
                false => {
                    opts.error = Some(path("error file", &lsf_file(v, "err"))?);
                    opts.error_open_mode = Some(mode);
                }
            }
        }
        "i" => opts.input = Some(path("input file", v)?),
        "q" => opts.partition = Some(word("queue", v)?),
        "w" => {
            opts.dependencies = Some(Dependencies::parse_lsf(v)?);
            // LSF's job whose condition can never be met stays pending, saying so, for
            // bmod -w or bkill (Slurm's is cancelled unless it asks to stay).
            opts.kill_on_invalid_dep.get_or_insert(false);
        }
        "H" => opts.hold = Some(true),
        "cwd" => {
            let (dir, pattern) = lsf_dir(v);
            opts.workdir = Some(path("working directory", &dir)?);
            opts.workdir_pattern = Some(pattern);
        }
        "gpu" => opts.gpus = Some(lsf_gpu(v)?),
        "P" => opts.account = Some(word("project", v)?),
        "x" => opts.exclusive = Some(true),
        "r" => opts.requeue = Some(true),
        "rn" => opts.requeue = Some(false),
        "u" => opts.mail_to = Some(parse_addresses(v)?),
        "B" | "N" => {
            let event = MailEvents {
                begin: found.name == "B",
                end: found.name == "N",
                ..MailEvents::default()
            };
            opts.mail = Some(opts.mail.take().unwrap_or_default().or(event));
        }
        // bsub -wa SIGNAL -wt [HOUR:]MINUTE: the signal goes to every process of the job.
        "wa" => {
            let signal = crate::signal::number(v)
                .ok_or_else(|| JobError::invalid("warning action", v, "a signal, e.g. USR1"))?;
            opts.signal = Some(signal);
            opts.signal_target = Some(SignalTarget::Job);
        }
        "wt" => opts.signal_before = Some(parse_lsf_time(v)?),
        "wn" => opts.dependencies = Some(Dependencies::default()),
        "Wn" => opts.time_limit = Some(super::UNLIMITED_TIME),
        "b" => opts.begin = Some(parse_lsf_begin(v)?),
        "K" => opts.wait = Some(true),
        // bsub -m "host1+2 host2 others": the job runs on some of those hosts (each may be
        // a host list), and no others but with `others`; `+N` prefers a host (the higher N,
        // the more).
        "m" => {
            let (mut candidates, mut preferred, mut others) = (Vec::new(), Vec::new(), false);
            for word in v.split_whitespace() {
                if word == "others" {
                    others = true;
                    continue;
                }
                if word.contains(['!', '~']) {
                    return Err(JobError::unsupported(
                        word,
                        "host exclusions in -m; name the hosts the job may use",
                    ));
                }
                let (hosts, level) = match word.rsplit_once('+') {
                    Some((hosts, level)) => (
                        hosts,
                        level.parse::<u32>().map_err(|_| {
                            JobError::invalid("host preference", word, "HOST+N, N a whole number")
                        })?,
                    ),
                    None => (word, 0),
                };
                for host in nodes(hosts)? {
                    if level > 0 {
                        preferred.push((host.clone(), level));
                    }
                    candidates.push(host);
                }
            }
            opts.candidates = Some(if others { Vec::new() } else { candidates });
            opts.preferred = Some(preferred);
        }
        "I" | "Is" | "Ip" => return Err(command_line_only(found)),
        other => {
            return Err(JobError::unsupported(
                other,
                "berth has no handler for this option",
            ))
        }
    }
    Ok(())
}

/// bsub's `-o`/`-e` file: a path ending in `/` names a directory, where the file is
/// `JOBID.out` (`.err`), as LSF names it.
fn lsf_file(v: &str, extension: &str) -> String {
    // As a pattern of berth's: LSF's %J and %I kept, any other % as written (Slurm's %j,
    // %x, ... are no symbols of LSF's).
    let mut pattern = String::with_capacity(v.len() + 8);
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        pattern.push(c);
        if c == '%' && !matches!(chars.peek(), Some('J' | 'I')) {
            pattern.push('%');
        }
    }
    match v.ends_with('/') {
        true => format!("{pattern}%J.{extension}"),
        false => pattern,
    }
}

/// bsub -cwd's directory as a pattern of berth's (LSF's %J and %I kept, %U its user, %%
/// for any other %), and whether it has any of those symbols (LSF then makes the directory).
fn lsf_dir(v: &str) -> (String, bool) {
    let mut pattern = String::with_capacity(v.len() + 8);
    let mut symbols = false;
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        pattern.push(c);
        if c != '%' {
            continue;
        }
        match chars.peek() {
            Some('J' | 'I') => symbols = true,
            Some('U') => {
                chars.next();
                pattern.push('u');
                symbols = true;
            }
            _ => pattern.push('%'),
        }
    }
    (pattern, symbols)
}

/// The path of qsub's `[HOST:]PATH` (the host the file goes to: here, where the job's
/// submission directory is).
fn pbs_path(v: &str) -> String {
    let path = match v.split_once(':') {
        Some((host, path)) if !host.is_empty() && !host.contains('/') && !path.is_empty() => path,
        _ => v,
    };
    // As a pattern of berth's: a '%' as written (PBS has no patterns), PBS Pro's
    // ^array_index^ berth's %a.
    path.replace('%', "%%").replace("^array_index^", "%a")
}

/// bsub `-J`: `NAME`, or `NAME[INDEXES]%MAX`, which makes the job an array (NAME may be
/// empty).
fn lsf_job_name(v: &str) -> Result<(Option<String>, Option<ArraySpec>), JobError> {
    let Some((name, rest)) = v.split_once('[') else {
        return Ok((Some(v.to_string()).filter(|n| !n.is_empty()), None));
    };
    let Some((indexes, after)) = rest.rsplit_once(']') else {
        return Err(JobError::invalid(
            "job array",
            v,
            "NAME[INDEXES] or NAME[INDEXES]%MAX",
        ));
    };
    let spec = match after {
        "" => indexes.to_string(),
        max if max.starts_with('%') => format!("{indexes}{max}"),
        _ => {
            return Err(JobError::invalid(
                "job array",
                v,
                "NAME[INDEXES] or NAME[INDEXES]%MAX",
            ))
        }
    };
    let name = Some(name.to_string()).filter(|n| !n.is_empty());
    let spec = ArraySpec::parse(&spec)?;
    // LSF's indices start at 1 (LSB_JOBINDEX 0 is a job that is no array's).
    if spec.ranges.iter().any(|r| r.start == 0) {
        return Err(JobError::invalid(
            "job array",
            v,
            "indices of 1 and more (LSF's: index 0 is no element's)",
        ));
    }
    Ok((name, Some(spec)))
}

/// qsub -v's list: items joined by commas, but those inside quotes (`B='x,y'`), which
/// keep them and lose the quotes, as PBS Pro's qsub reads them.
fn split_unquoted(v: &str) -> Vec<String> {
    let (mut items, mut item, mut quote) = (Vec::new(), String::new(), None);
    for c in v.chars() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            (',', None) => items.push(std::mem::take(&mut item)),
            (c, _) => item.push(c),
        }
    }
    items.push(item);
    items
}

/// bsub -env: `all`, `none`, or the variables (`X=1`, `Y`, a value with commas quoted:
/// `X='a, b'`) after either or alone (then only those, as `none,...`); after `all`, `~NAME`
/// leaves NAME out.
fn lsf_env(v: &str) -> Result<Export, JobError> {
    let mut export = Export::none();
    for item in split_unquoted(v) {
        let item = item.trim();
        match item.to_ascii_lowercase().as_str() {
            "" => {}
            "all" => export.all = true,
            "none" => export.all = false,
            _ => match item.strip_prefix('~') {
                Some(name) if export.all => export.except.push(env_var(name, v)?.name),
                Some(_) => {
                    return Err(JobError::invalid(
                        "variable list",
                        v,
                        "~NAME after all (all the variables but NAME)",
                    ))
                }
                None => export.vars.push(env_var(item, v)?),
            },
        }
    }
    Ok(export)
}

/// bsub `-R`: the `span[]` and `rusage[]` sections (`mem=`, and a site's shared resources
/// as licenses, `rusage[matlab=1]`); `order[]` and host selection (`select[]`, a bare
/// expression) are ignored (berth chooses and orders hosts itself); the rest is refused
/// rather than silently dropped.
fn lsf_resources(
    opts: &mut JobOptions,
    v: &str,
    found: &Found,
    line: Option<usize>,
) -> Result<(), JobError> {
    // A compound requirement of one part (`1*{span[hosts=1]}`): that part.
    let v = v
        .trim()
        .split_once("*{")
        .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
        .and_then(|(_, inner)| inner.strip_suffix('}'))
        .filter(|inner| !inner.contains('{'))
        .unwrap_or(v);
    let mut rest = v.trim();
    while !rest.is_empty() {
        // A bare string is a selection (select[] without its name).
        let Some((section, tail)) = rest.split_once('[') else {
            ignore(opts, found, line, "berth chooses and orders hosts itself");
            break;
        };
        let Some((body, after)) = tail.split_once(']') else {
            return Err(JobError::invalid(
                "resource requirement",
                v,
                "SECTION[...] such as span[ptile=4]",
            ));
        };
        rest = after.trim_start();
        // (rusage's resources are joined by ':' or ',', each with its own duration.)
        let separators: &[char] = match section.trim() {
            "rusage" => &[':', ','],
            _ => &[':'],
        };
        for item in body.split(separators).map(str::trim) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            match (section.trim(), key.trim()) {
                ("span", "ptile") => opts.ntasks_per_node = Some(count("ptile", value)?),
                ("span", "hosts") if value == "1" => {
                    opts.nodes = Some(NodeRange { min: 1, max: 1 })
                }
                ("rusage", "mem") => opts.memory = Some(Memory::PerCpu(size(value, "M")?)),
                // How long the reservation holds: for the whole job here.
                ("rusage", "duration" | "decay") => {}
                // A site's shared resource, counted across the cluster: a license.
                ("rusage", name)
                    if !["swp", "swap", "tmp", "ut", "slots"].contains(&name)
                        && value.parse::<u32>().is_ok() =>
                {
                    let mut asked = opts.licenses.take().unwrap_or_default();
                    for (name, n) in licenses(&format!("{name}:{value}"))? {
                        add_license(&mut asked, &name, n);
                    }
                    opts.licenses = Some(asked);
                }
                ("order" | "select" | "same" | "affinity", _) => {
                    ignore(opts, found, line, "berth chooses and orders hosts itself");
                    break;
                }
                (s, _) => {
                    return Err(JobError::unsupported(
                        &format!("{s}[{body}]"),
                        "berth reads span[ptile=N], span[hosts=1], rusage[mem=N] and licenses as rusage[NAME=N]",
                    ))
                }
            }
        }
    }
    Ok(())
}

/// bsub `-gpu "num=2:gmodel=..."`; `-` is the default (one GPU per host). GPU modes
/// (`mode`, `mps`, `j_exclusive`) are accepted: berth gives containers whole devices.
fn lsf_gpu(v: &str) -> Result<GpuRequest, JobError> {
    let mut gpu = GpuRequest {
        count: 1,
        scope: GpuScope::Node,
        model: None,
    };
    if v.trim() == "-" {
        return Ok(gpu);
    }
    for item in v.split(':') {
        match item.split_once('=') {
            Some(("num", n)) => gpu.count = count("GPU count", n)?,
            Some(("gmodel", m)) => gpu.model = Some(m.to_string()),
            Some(("mode" | "mps" | "j_exclusive", _)) => {}
            _ => {
                return Err(JobError::unsupported(
                    item,
                    "berth reads num=, gmodel=, mode=, mps= and j_exclusive=",
                ))
            }
        }
    }
    Ok(gpu)
}

fn apply_pbs(
    opts: &mut JobOptions,
    found: &Found,
    v: &str,
    line: Option<usize>,
) -> Result<(), JobError> {
    match found.name {
        // (PBS names the output files after it: no directories in it.)
        "N" if v.contains('/') || v.contains(char::is_whitespace) => {
            return Err(JobError::invalid(
                "-N",
                v,
                "a job name without '/' or white space (PBS names its output files after it)",
            ))
        }
        "N" => opts.name = Some(v.to_string()),
        "l" => {
            for item in v.split(',') {
                pbs_resource(opts, item, line)?;
            }
        }
        "o" => opts.output = Some(path("output file", &pbs_path(v))?),
        "e" => opts.error = Some(path("error file", &pbs_path(v))?),
        "j" => {
            opts.join =
                Some(match v {
                    "oe" => Join::IntoOutput,
                    "eo" => Join::IntoError,
                    "n" => Join::Apart,
                    _ => return Err(JobError::invalid(
                        "join",
                        v,
                        "oe (stderr into the output file), eo (stdout into the error file) or n",
                    )),
                })
        }
        // QUEUE@SERVER: the queue (berth is the one server); @SERVER alone, the default.
        "q" => match v.split_once('@').map_or(v, |(queue, _)| queue) {
            "" => {}
            queue => opts.partition = Some(word("queue", queue)?),
        },
        "P" => opts.account = Some(word("project", v)?),
        "k" => ignore(
            opts,
            found,
            line,
            "berth writes output straight into its files",
        ),
        "p" => ignore(
            opts,
            found,
            line,
            "berth orders jobs by their priority factors (use sbatch's --nice)",
        ),
        "c" => ignore(opts, found, line, "berth does not checkpoint jobs"),
        // PBS Pro -J and Torque -t both take berth's (and Slurm's) array syntax; PBS Pro's
        // is a range (X-Y[:Z][%N]), one index no array.
        "J" if !v.contains('-') => {
            return Err(JobError::Invalid {
                what: "array range",
                value: v.into(),
                expected: "X-Y[:STEP][%MAX], as PBS Pro's -J (Torque's -t takes lists)".into(),
            })
        }
        "J" | "t" => opts.array = Some(ArraySpec::parse(v)?),
        "W" => match v.split_once('=') {
            Some(("depend", list)) => opts.dependencies = Some(Dependencies::parse_pbs(list)?),
            Some(("block", "true")) => opts.wait = Some(true),
            Some(("block", "false")) => opts.wait = Some(false),
            Some(("umask", mask)) => opts.umask = Some(umask(mask)?),
            Some((
                "group_list" | "x" | "sandbox" | "run_count" | "release_nodes_on_stageout",
                _,
            )) => ignore(opts, found, line, "berth has no counterpart of it"),
            _ => {
                return Err(JobError::unsupported(
                    v,
                    "berth reads -W depend=... and -W block=true|false only",
                ))
            }
        },
        "h" => opts.hold = Some(true),
        "V" => opts.export.get_or_insert_with(Export::default).all = true,
        "v" => {
            let vars = split_unquoted(v)
                .iter()
                .map(|item| env_var(item, v))
                .collect::<Result<Vec<_>, _>>()?;
            opts.export
                .get_or_insert_with(Export::none)
                .vars
                .extend(vars);
        }
        "d" => opts.workdir = Some(path("working directory", v)?),
        "A" => opts.account = Some(word("account", v)?),
        "r" => {
            opts.requeue = Some(match v {
                "y" => true,
                "n" => false,
                _ => return Err(JobError::invalid("rerunnable flag", v, "y or n")),
            })
        }
        "a" => opts.begin = Some(parse_pbs_begin(v)?),
        "m" => opts.mail = Some(MailEvents::parse_pbs(v)?),
        "M" => opts.mail_to = Some(parse_addresses(v)?),
        "I" | "X" | "F" | "z" => return Err(command_line_only(found)),
        // `-S /bin/bash`, or a list of PATH@HOST (the first is taken: every node runs the
        // same image).
        "S" => {
            let shell = v.split(',').next().unwrap_or(v);
            let shell = shell.split('@').next().unwrap_or(shell).trim();
            if !shell.starts_with('/') {
                return Err(JobError::invalid(
                    "shell",
                    v,
                    "an absolute path, as /bin/bash",
                ));
            }
            opts.shell = Some(shell.to_string());
        }
        other => {
            return Err(JobError::unsupported(
                other,
                "berth has no handler for this option",
            ))
        }
    }
    Ok(())
}

/// One `-l` resource. Torque `nodes=N:ppn=P[:gpus=G]` and PBS Pro
/// `select=N:ncpus=C[:mpiprocs=P][:mem=M][:ngpus=G]` both become N nodes; a select chunk is
/// taken as one node (as with `place=scatter`; `place=pack` puts them all on one, see
/// `JobRequest::from_options`), mpiprocs as its tasks and ncpus/mpiprocs as CPUs per task. `vmem`/`pvmem` are ignored: cgroups limit resident memory, not
/// address space, so mapping them onto `mem` would kill jobs that map large files.
fn pbs_resource(opts: &mut JobOptions, item: &str, line: Option<usize>) -> Result<(), JobError> {
    // NCI's: start in the submission directory (not the user's home).
    if item == "wd" {
        opts.start_in_submit_dir = Some(true);
        return Ok(());
    }
    let Some((key, value)) = item.split_once('=') else {
        return Err(JobError::invalid(
            "resource",
            item,
            "NAME=VALUE such as walltime=01:00:00",
        ));
    };
    match key {
        "walltime" => opts.time_limit = Some(parse_pbs_time(value)?),
        "mem" => opts.memory = Some(Memory::PerJob(size(value, "")?)),
        "pmem" => opts.memory = Some(Memory::PerCpu(size(value, "")?)),
        "vmem" | "pvmem" => ignore_text(
            opts,
            format!("-l {item}"),
            line,
            "virtual memory is not limited, only resident memory",
        ),
        "ncpus" => {
            // A one-node shared-memory job: one task with N CPUs (PBS Pro: select=1:ncpus=N,
            // and so OMP_NUM_THREADS=N, below).
            let n = count("ncpus", value)?;
            opts.cpus_per_task = Some(n);
            opts.ntasks = Some(1);
            opts.nodes = Some(NodeRange { min: 1, max: 1 });
            opts.omp_threads = Some(n);
        }
        "procs" => opts.ntasks = Some(count("procs", value)?),
        "ngpus" => {
            opts.gpus = Some(GpuRequest {
                count: count("GPU count", value)?,
                scope: GpuScope::Job,
                model: None,
            })
        }
        "nodes" | "select" => pbs_chunks(opts, key, value)?,
        "feature" => opts.constraint = Some(vec![vec![word("feature", value)?]]),
        "host" => opts.nodelist = Some(vec![word("host", value)?]),
        "jobfs" | "storage" | "software" | "cput" | "pcput" | "file" | "naccesspolicy" | "qos"
        | "gres" | "epilogue" | "prologue" | "nice" | "other" => ignore_text(
            opts,
            format!("-l {item}"),
            line,
            "berth does not enforce or provide it",
        ),
        "place" => {
            for p in value.split(':') {
                match p {
                    "excl" | "exclhost" => opts.exclusive = Some(true),
                    "pack" => opts.place = Some(Place::Pack),
                    "scatter" | "vscatter" => opts.place = Some(Place::Scatter),
                    "free" => opts.place = Some(Place::Free),
                    "shared" => {}
                    _ => return Err(JobError::invalid("place", item, "place=pack, scatter, vscatter or free, optionally :excl, :exclhost or :shared")),
                }
            }
        }
        _ => {
            return Err(JobError::unsupported(
                item,
                "berth reads nodes, select, ncpus, procs, mem, pmem, vmem, pvmem, walltime, ngpus and place",
            ))
        }
    }
    Ok(())
}

fn pbs_chunks(opts: &mut JobOptions, key: &str, value: &str) -> Result<(), JobError> {
    let item = format!("{key}={value}");
    if value.contains('+') {
        return Err(JobError::unsupported(
            &item,
            "chunks of different shapes (+); ask for one shape",
        ));
    }
    let mut parts = value.split(':').peekable();
    let mut features = Vec::new();
    let chunks = match parts.peek() {
        Some(first) if !first.contains('=') => {
            let first = parts.next().unwrap_or_default();
            match first.starts_with(|c: char| c.is_ascii_digit()) {
                true => count("node count", first)?,
                // Torque's `nodes=HOST:ppn=N`: that host.
                false => {
                    opts.nodelist = Some(vec![word("host", first)?]);
                    1
                }
            }
        }
        _ => 1,
    };
    let (mut per_chunk_cpus, mut mpiprocs, mut ompthreads) = (None, None, None);
    for part in parts {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match (key, k) {
            ("nodes", "ppn") => mpiprocs = Some(count("ppn", v)?),
            ("nodes" | "select", "gpus" | "ngpus") => {
                opts.gpus = Some(GpuRequest {
                    count: count("GPU count", v)?,
                    scope: GpuScope::Node,
                    model: None,
                })
            }
            ("select", "ncpus") => per_chunk_cpus = Some(count("ncpus", v)?),
            ("select", "mpiprocs") => mpiprocs = Some(count("mpiprocs", v)?),
            ("select", "mem") => opts.memory = Some(Memory::PerNode(size(v, "")?)),
            // PBS Pro sets OMP_NUM_THREADS to it (below); CPUs come from ncpus.
            ("select", "ompthreads") => ompthreads = Some(count("ompthreads", v)?),
            ("select", "host") => opts.nodelist = Some(vec![word("host", v)?]),
            // A node property (Torque's `nodes=2:ppn=8:gen2`, PBS Pro's `model=has`): a
            // feature the nodes must have, as --constraint's.
            ("nodes", property) if v.is_empty() => features.push(word("node property", property)?),
            ("select", "model") => features.push(word("model", v)?),
            _ => {
                return Err(JobError::unsupported(
                    part,
                    "node properties and other chunk resources",
                ))
            }
        }
    }
    // Torque: ppn processes of one CPU each. PBS Pro: mpiprocs ranks (default 1) sharing
    // ncpus CPUs (default 1): each rank as many whole CPUs as it can have alike, the
    // chunk's node all of them (`select=1:ncpus=6:mpiprocs=4`: four ranks of one CPU, six
    // CPUs, as --mincpus); more ranks than CPUs share them (overcommitted, as -O).
    let tasks = mpiprocs.unwrap_or(1);
    let cpus = per_chunk_cpus.unwrap_or(tasks);
    if cpus % tasks != 0 {
        opts.min_cpus = Some(cpus);
    }
    if cpus < tasks {
        opts.overcommit = Some(true);
    }
    if !features.is_empty() {
        opts.constraint = Some(vec![features]);
    }
    opts.nodes = Some(NodeRange {
        min: chunks,
        max: chunks,
    });
    opts.chunks = Some(true);
    // Torque's nodes are hosts of their own.
    if key == "nodes" {
        opts.place.get_or_insert(Place::Scatter);
    }
    opts.ntasks_per_node = Some(tasks);
    opts.ntasks = Some(chunks.saturating_mul(tasks));
    opts.cpus_per_task = Some((cpus / tasks).max(1));
    // PBS Pro's OMP_NUM_THREADS: ompthreads, by default each rank's CPUs (Torque's nodes=
    // sets none).
    if key == "select" {
        opts.omp_threads = Some(ompthreads.unwrap_or((cpus / tasks).max(1)));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
