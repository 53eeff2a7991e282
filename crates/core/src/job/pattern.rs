//! Output file name patterns (`--output=job-%j.out`) and the default names.
//!
//! The replacement symbols are sbatch's, plus LSF's `%I`:
//!
//! | symbol | value |
//! |---|---|
//! | `%j`, `%J` | the job id (LSF's `%J`; for an array element, the element's own id) |
//! | `%A` | the array's master job id (the job id when the job is no array) |
//! | `%a`, `%I` | the array index (`0` when the job is no array, as LSF's `%I`) |
//! | `%x` | the job name |
//! | `%u` | the user name |
//! | `%N` | the first node's name |
//! | `%%` | a literal `%` |
//!
//! A number between `%` and the symbol zero-pads numeric values to that width (`%3a` gives
//! `007`), as sbatch does. An unknown symbol is kept as written; `\%` is a literal `%`.
//! PBS has no patterns; its default names (`NAME.oJOBID`) are given by [`pbs_default_name`].

/// Everything a pattern can refer to, known once the job is placed.
#[derive(Debug, Clone, Default)]
pub struct PatternContext<'a> {
    pub job_id: u64,
    /// The master job id of the array this job is an element of.
    pub array_job_id: Option<u64>,
    pub array_index: Option<u32>,
    pub job_name: &'a str,
    pub user: &'a str,
    pub first_node: &'a str,
}

/// berth's default output file, sbatch's `slurm-%j.out` renamed: one file for stdout and
/// stderr. An array element gets `berth-%A_%a.out`, as sbatch's `slurm-%A_%a.out`.
pub fn default_output(is_array: bool) -> &'static str {
    if is_array {
        "berth-%A_%a.out"
    } else {
        "berth-%j.out"
    }
}

/// The name PBS gives a job's output (`stream` 'o') or error ('e') file, `NAME.oJOBID`, as a
/// pattern (`NAME.o%j`); an array's task's is `NAME.oARRAYID.INDEX`, as PBS Pro names it.
pub fn pbs_default_name(job_name: &str, stream: char, is_array: bool) -> String {
    let name = job_name.replace('%', "%%");
    match is_array {
        true => format!("{name}.{stream}%A.%a"),
        false => format!("{name}.{stream}%j"),
    }
}

/// Expands `pattern` for one job (see the module doc for the symbols).
pub fn expand_pattern(pattern: &str, ctx: &PatternContext) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'%') {
            out.push('%');
            chars.next();
            continue;
        }
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut width = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(*d);
            chars.next();
        }
        // sbatch caps the width at 9 digits; so does berth, so `%99999j` cannot blow up.
        let pad = width.parse::<usize>().unwrap_or(0).min(9);
        let number = |n: u64| format!("{n:0pad$}");
        match chars.next() {
            Some('%') if width.is_empty() => out.push('%'),
            Some('j' | 'J') => out.push_str(&number(ctx.job_id)),
            Some('A') => out.push_str(&number(ctx.array_job_id.unwrap_or(ctx.job_id))),
            Some('a' | 'I') => out.push_str(&number(u64::from(ctx.array_index.unwrap_or(0)))),
            Some('x') => out.push_str(ctx.job_name),
            Some('u') => out.push_str(ctx.user),
            Some('N') => out.push_str(ctx.first_node),
            other => {
                out.push('%');
                out.push_str(&width);
                out.extend(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PatternContext<'static> {
        PatternContext {
            job_id: 1234,
            array_job_id: Some(1200),
            array_index: Some(7),
            job_name: "sim",
            user: "alice",
            first_node: "node01",
        }
    }

    #[test]
    fn symbols() {
        let c = ctx();
        assert_eq!(expand_pattern("slurm-%j.out", &c), "slurm-1234.out");
        assert_eq!(expand_pattern("job-%J.err", &c), "job-1234.err");
        assert_eq!(
            expand_pattern("%x_%A_%a.%u@%N", &c),
            "sim_1200_7.alice@node01"
        );
        assert_eq!(expand_pattern("lsf.%J.%I", &c), "lsf.1234.7");
        assert_eq!(expand_pattern("100%%", &c), "100%");
        assert_eq!(expand_pattern(r"lit\%j", &c), "lit%j");
        assert_eq!(expand_pattern("%3a-%8j", &c), "007-00001234");
        assert_eq!(expand_pattern("%q%5q%", &c), "%q%5q%");
        assert_eq!(expand_pattern("%99a", &c), "000000007");
    }

    #[test]
    fn defaults() {
        let single = PatternContext { job_id: 9, ..ctx() };
        let single = PatternContext {
            array_job_id: None,
            array_index: None,
            ..single
        };
        assert_eq!(
            expand_pattern(default_output(false), &single),
            "berth-9.out"
        );
        assert_eq!(
            expand_pattern(default_output(true), &ctx()),
            "berth-1200_7.out"
        );
        assert_eq!(expand_pattern("%A_%a", &single), "9_0");
        assert_eq!(
            expand_pattern(&pbs_default_name("run%1", 'o', false), &single),
            "run%1.o9"
        );
        assert_eq!(
            expand_pattern(&pbs_default_name("run", 'e', true), &ctx()),
            "run.e1200.7"
        );
    }
}
