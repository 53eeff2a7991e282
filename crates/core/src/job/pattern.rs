//! Output file name patterns (`--output=job-%j.out`) and the default names.
//!
//! The replacement symbols are sbatch's, plus LSF's `%I`:
//!
//! | symbol | value |
//! |---|---|
//! | `%j` | the job id (for an array's task, its own id) |
//! | `%J` | LSF's: the job id, for an array's element its array's (as `LSB_JOBID`) |
//! | `%A` | the array's master job id (the job id when the job is no array) |
//! | `%a`, `%I` | the array index (`0` when the job is no array, as LSF's `%I`) |
//! | `%x` | the job name |
//! | `%u` | the user name |
//! | `%N` | the first node's name |
//! | `%n`, `%t`, `%s` | a batch script's: `0`, `0`, `batch` (its step's node, task and step) |
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

/// sbatch's own default output file, for a job submitted through berth's `sbatch`.
pub fn slurm_default_output(is_array: bool) -> &'static str {
    if is_array {
        "slurm-%A_%a.out"
    } else {
        "slurm-%j.out"
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
    expand(pattern, false, |symbol, number| {
        // A batch script's own file: the batch step's one task on the first node, as
        // sbatch names them.
        job_symbol(ctx, symbol, number).or_else(|| match symbol {
            't' | 'n' => Some(number(0)),
            's' => Some("batch".into()),
            _ => None,
        })
    })
}

/// The value of a job's symbol, `None` for another.
fn job_symbol(
    ctx: &PatternContext,
    symbol: char,
    number: &dyn Fn(u64) -> String,
) -> Option<String> {
    Some(match symbol {
        'j' => number(ctx.job_id),
        // LSF's: an array's elements share their array's id.
        'J' => number(ctx.array_job_id.unwrap_or(ctx.job_id)),
        'A' => number(ctx.array_job_id.unwrap_or(ctx.job_id)),
        // Slurm's %a of a job in no array is its NO_VAL (slurm-42_4294967294.out); LSF's
        // %I is 0, as its LSB_JOBINDEX.
        'a' => number(ctx.array_index.map_or(u64::from(u32::MAX - 1), u64::from)),
        'I' => number(u64::from(ctx.array_index.unwrap_or(0))),
        'x' => ctx.job_name.to_string(),
        'u' => ctx.user.to_string(),
        'N' => ctx.first_node.to_string(),
        _ => return None,
    })
}

/// One task of a step, for the names of its own files (`srun -o out-%t`).
#[derive(Debug, Clone, Copy)]
pub struct TaskContext<'a> {
    pub job_id: u64,
    pub step_id: u32,
    /// Its rank in the step (`%t`).
    pub rank: u32,
    /// The place of its node among the step's (`%n`).
    pub node_index: u32,
    /// Its node's name (`%N`).
    pub node: &'a str,
}

/// The symbols of a step's task: srun's `%t` (rank), `%n` (node index), `%s` (step) and
/// `%N` (the task's node).
const TASK_SYMBOLS: [char; 4] = ['t', 'n', 's', 'N'];

/// Whether `pattern` names a file per task (or per node) of a step: it has a task's symbol.
pub fn is_per_task(pattern: &str) -> bool {
    let mut found = false;
    expand(pattern, false, |symbol, _| {
        found |= TASK_SYMBOLS.contains(&symbol);
        None
    });
    found
}

/// A step's file pattern with the job's symbols expanded and the tasks' kept, for
/// [`expand_task_pattern`] on each task's node: itself a pattern (a `%` of a value is
/// written `%%`). `ctx.job_id` 0 (a step outside a job, whose allocation has no id yet):
/// the job id's symbols are kept too.
pub fn expand_job_part(pattern: &str, ctx: &PatternContext) -> String {
    expand(pattern, true, |symbol, number| {
        let kept = TASK_SYMBOLS.contains(&symbol) || (ctx.job_id == 0 && is_id_symbol(symbol));
        match kept {
            true => None,
            false => job_symbol(ctx, symbol, number),
        }
    })
}

/// The symbols of a job's id: what a step outside a job leaves to the nodes.
fn is_id_symbol(symbol: char) -> bool {
    matches!(symbol, 'j' | 'J' | 'A' | 'a')
}

/// Whether `pattern` has a symbol of the job's id.
pub fn has_job_id(pattern: &str) -> bool {
    let mut found = false;
    expand(pattern, false, |symbol, _| {
        found |= is_id_symbol(symbol);
        None
    });
    found
}

/// A task's file name from what [`expand_job_part`] left (the job id's symbols of a step
/// outside a job, which is no array, among them).
pub fn expand_task_pattern(pattern: &str, task: &TaskContext) -> String {
    expand(pattern, false, |symbol, number| {
        Some(match symbol {
            't' => number(u64::from(task.rank)),
            'n' => number(u64::from(task.node_index)),
            's' => number(u64::from(task.step_id)),
            'N' => task.node.to_string(),
            'j' | 'J' | 'A' => number(task.job_id),
            'a' => number(u64::from(u32::MAX - 1)),
            _ => return None,
        })
    })
}

/// Expands `pattern`: `value(symbol, number)` gives a symbol's value (`number` pads a
/// numeric one to the width written), `None` keeps the symbol as written. `as_pattern`:
/// the result is a pattern again (literal `%` written `%%`, kept symbols as they were).
fn expand(
    pattern: &str,
    as_pattern: bool,
    mut value: impl FnMut(char, &dyn Fn(u64) -> String) -> Option<String>,
) -> String {
    let percent = if as_pattern { "%%" } else { "%" };
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'%') {
            out.push_str(percent);
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
        let number = move |n: u64| format!("{n:0pad$}");
        match chars.next() {
            Some('%') if width.is_empty() => out.push_str(percent),
            Some(symbol) => match value(symbol, &number) {
                Some(v) if as_pattern => out.push_str(&v.replace('%', "%%")),
                Some(v) => out.push_str(&v),
                None => {
                    out.push('%');
                    out.push_str(&width);
                    out.push(symbol);
                }
            },
            None => {
                out.push('%');
                out.push_str(&width);
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
        assert_eq!(expand_pattern("job-%J.err", &c), "job-1200.err");
        assert_eq!(
            expand_pattern("%x_%A_%a.%u@%N", &c),
            "sim_1200_7.alice@node01"
        );
        assert_eq!(expand_pattern("lsf.%J.%I", &c), "lsf.1200.7");
        assert_eq!(expand_pattern("100%%", &c), "100%");
        assert_eq!(expand_pattern(r"lit\%j", &c), "lit%j");
        assert_eq!(expand_pattern("%3a-%8j", &c), "007-00001234");
        assert_eq!(expand_pattern("%n.%2t.%s", &c), "0.00.batch");
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
        // As Slurm: a job in no array has NO_VAL for %a; LSF's %I is 0.
        assert_eq!(expand_pattern("%A_%a", &single), "9_4294967294");
        assert_eq!(expand_pattern("%J_%I", &single), "9_0");
        assert_eq!(
            expand_pattern(&pbs_default_name("run%1", 'o', false), &single),
            "run%1.o9"
        );
        assert_eq!(
            expand_pattern(&pbs_default_name("run", 'e', true), &ctx()),
            "run.e1200.7"
        );
    }

    #[test]
    fn step_files_are_expanded_for_the_job_then_for_each_task() {
        assert!(is_per_task("out-%t.txt") && is_per_task("%3n-%s") && is_per_task("%N.log"));
        assert!(!is_per_task("out-%j-%x.txt") && !is_per_task("100%%t"));
        let job = PatternContext {
            job_name: "50%off",
            ..ctx()
        };
        let half = expand_job_part("%x-%j.%3t.%n.%s.%N.%%", &job);
        assert_eq!(half, "50%%off-1234.%3t.%n.%s.%N.%%");
        let task = TaskContext {
            job_id: 1234,
            step_id: 2,
            rank: 7,
            node_index: 1,
            node: "n3",
        };
        assert_eq!(
            expand_task_pattern(&half, &task),
            "50%off-1234.007.1.2.n3.%"
        );
        // The job's %N is the first node's, a task's its own.
        assert_eq!(expand_pattern("%N", &job), "node01");
        // Outside a job (no id yet), the nodes know the allocation's id.
        let outside = PatternContext { job_id: 0, ..job };
        assert!(has_job_id("out-%5j") && has_job_id("%A_%a") && !has_job_id("%x%%j"));
        let half = expand_job_part("%x-%5j-%A_%a.%t", &outside);
        assert_eq!(half, "50%%off-%5j-%A_%a.%t");
        assert_eq!(
            expand_task_pattern(&half, &TaskContext { job_id: 77, ..task }),
            "50%off-00077-77_4294967294.7"
        );
    }
}
