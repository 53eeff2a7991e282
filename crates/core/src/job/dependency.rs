//! Job dependencies: "start this job only after those".
//!
//! The three spellings map onto Slurm's model, which is the richest of the three:
//! Slurm `--dependency=afterok:42:43,afterany:44` and `singleton`; PBS
//! `-W depend=afterok:42:43` (the same words); LSF `-w "done(42) && ended(43)"`, where
//! `done` is afterok, `exit` afternotok, `ended` afterany and `started` after. All of the
//! terms must hold (Slurm's `,`, LSF's `&&`), or any one of them (Slurm's `?`, LSF's `||`);
//! LSF's expressions that are more than that (parentheses, a mix of `&&` and `||`, `!`) keep
//! their shape as a [`Condition`] over the terms.

use super::JobError;
pub use berth_sched::{CountOp, Counted, ExitTest};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DependencyKind {
    /// The job has started (LSF `started`).
    After,
    /// The job completed with exit code 0 (LSF `done`).
    AfterOk,
    /// The job failed: non-zero exit, killed, timed out (LSF `exit`).
    AfterNotOk,
    /// The job ended, however (LSF `ended`).
    AfterAny,
    /// Each task of this array waits for the task with its index in the other array to
    /// complete with exit code 0 (Slurm `aftercorr`).
    AfterCorr,
}

/// One job this job waits for, or one element of an array job (`42_7`, `42[7]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDependency {
    pub kind: DependencyKind,
    pub job: u64,
    pub array_index: Option<u32>,
    /// LSF's `42[*]` (`done(run[*])`) in an array job's condition: each of its elements
    /// waits for the element of array 42 with its own index (the arrays' indices must be
    /// the same); from a job that is not an array, the whole array.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub each: bool,
    /// LSF's `numdone(42, >= 5)`: a count of array 42's elements, compared, instead of
    /// each of them required (only ever in a [`Condition`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<ArrayCount>,
    /// LSF's `exit(42, > 1)`: the exit status the job must have failed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<ExitTest>,
    /// Slurm's `after:42+5`: minutes to wait once the job started (or was cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<u32>,
}

/// LSF's count of an array's elements in a state, compared: `numended(42, >= 5)` (the
/// scheduler's own terms, which it evaluates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayCount {
    pub of: Counted,
    pub op: CountOp,
    /// `None`: all of the array's elements (LSF's `*`).
    pub n: Option<u32>,
}

const COUNT_OPS: [(&str, CountOp); 6] = [
    (">=", CountOp::Ge),
    ("<=", CountOp::Le),
    ("==", CountOp::Eq),
    ("!=", CountOp::Ne),
    (">", CountOp::Gt),
    ("<", CountOp::Lt),
];

/// `exit(42, OP CODE)`'s `OP CODE` (`CODE` alone: `== CODE`), from the `term` it is part of.
fn exit_test(text: &str, term: &str) -> Result<ExitTest, JobError> {
    let text = text.trim();
    let (op, rest) = match COUNT_OPS.iter().find(|(w, _)| text.starts_with(w)) {
        Some((word, op)) => (*op, text[word.len()..].trim()),
        None => (CountOp::Eq, text),
    };
    match rest.parse::<i32>() {
        Ok(code) if (0..=255).contains(&code) && rest.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(ExitTest { op, code })
        }
        _ => Err(JobError::invalid(
            "dependency",
            term,
            "an exit status of 0 to 255, after a comparison (==, !=, <, <=, >, >=) or alone (==), as exit(42, > 1)",
        )),
    }
}

impl std::fmt::Display for ArrayCount {
    /// The comparison as LSF writes it: `>= 5`, `== *`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = word_of(&COUNT_OPS, self.op);
        match self.n {
            Some(n) => write!(f, "{op} {n}"),
            None => write!(f, "{op} *"),
        }
    }
}

impl ArrayCount {
    /// LSF's condition word for it.
    pub fn word(&self) -> &'static str {
        word_of(&COUNT_WORDS, self.of)
    }
}

/// LSF's conditions on a job, and what each asks of it.
const LSF_WORDS: [(&str, DependencyKind); 4] = [
    ("done", DependencyKind::AfterOk),
    ("exit", DependencyKind::AfterNotOk),
    ("ended", DependencyKind::AfterAny),
    ("started", DependencyKind::After),
];

/// LSF's counts of an array's elements, and what each counts.
const COUNT_WORDS: [(&str, Counted); 6] = [
    ("numdone", Counted::Done),
    ("numexit", Counted::Exit),
    ("numended", Counted::Ended),
    ("numstart", Counted::Started),
    ("numrun", Counted::Running),
    ("numpend", Counted::Pending),
];

/// The word `table` has for `value`.
fn word_of<T: PartialEq>(table: &[(&'static str, T)], value: T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("?", |(w, _)| w)
}

/// What `table` has for `word`.
fn by_word<T: Copy>(table: &[(&str, T)], word: &str) -> Option<T> {
    table.iter().find(|(w, _)| *w == word).map(|(_, v)| *v)
}

/// All of `jobs` must hold; `singleton`: no other job of this user with the same name may
/// be running (Slurm `--dependency=singleton`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependencies {
    pub jobs: Vec<JobDependency>,
    pub singleton: bool,
    /// LSF's conditions on job names (`done(prep)`, `ended(run*)`): the submitter's own jobs
    /// of that name (a trailing `*` matching any ending), each of which must satisfy it;
    /// the controller makes them `jobs` at submission.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named: Vec<(DependencyKind, String)>,
    /// Any one of the terms is enough, not all of them (Slurm's `?`, LSF's `||`): each job
    /// (a whole array, each of whose tasks must then hold) is one term.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any: bool,
    /// How the terms combine where it is more than all of them or any one (then `any` is
    /// false): LSF's expressions with parentheses, a mix of `&&` and `||`, or `!`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// An LSF dependency expression over a job's terms: `done(1) && (exit(2) || !started(3))`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// The term `jobs[N]`.
    Term(u32),
    /// The term `named[N]`, until the controller makes it the terms of the jobs of that
    /// name, all of which must hold ([`Condition::resolve_names`]).
    Name(u32),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    /// LSF's `!`: holds while the condition does not.
    Not(Box<Condition>),
}

impl Condition {
    /// Replaces each `Name(N)` with the terms `terms[N]` (the jobs of that name), all of
    /// them required.
    pub fn resolve_names(&mut self, terms: &[Vec<u32>]) {
        match self {
            Condition::Term(_) => {}
            Condition::Name(n) => {
                let mine = terms.get(*n as usize).map_or(&[][..], Vec::as_slice);
                *self = match mine {
                    [one] => Condition::Term(*one),
                    many => Condition::All(many.iter().map(|&t| Condition::Term(t)).collect()),
                };
            }
            Condition::All(cs) | Condition::Any(cs) => {
                cs.iter_mut().for_each(|c| c.resolve_names(terms));
            }
            Condition::Not(c) => c.resolve_names(terms),
        }
    }

    /// Writes the condition with `leaf` for each term (a `Term` or a `Name`), LSF's
    /// operators and the parentheses its shape needs.
    pub fn render(&self, leaf: &mut dyn FnMut(&Condition) -> String) -> String {
        let group = |c: &Condition, leaf: &mut dyn FnMut(&Condition) -> String| match c {
            Condition::All(_) | Condition::Any(_) => format!("({})", c.render(leaf)),
            _ => c.render(leaf),
        };
        match self {
            Condition::Term(_) | Condition::Name(_) => leaf(self),
            Condition::All(cs) | Condition::Any(cs) => {
                let op = match self {
                    Condition::All(_) => " && ",
                    _ => " || ",
                };
                let parts: Vec<String> = cs.iter().map(|c| group(c, leaf)).collect();
                parts.join(op)
            }
            Condition::Not(c) => format!("!{}", group(c, leaf)),
        }
    }
}

const SLURM_EXPECTED: &str =
    "TYPE:JOBID[:JOBID...] joined by ',' (all) or '?' (any), with TYPE after, afterok, afternotok, afterany or aftercorr, or singleton";
const LSF_EXPECTED: &str =
    "CONDITION(JOBID or NAME) joined by && (all) or || (any), grouped by ( ) and negated by !, with CONDITION done, exit, ended or started";

fn invalid(value: &str, expected: &str) -> JobError {
    JobError::invalid("dependency", value, expected)
}

impl DependencyKind {
    /// Slurm's word for it (`afterok`), as --dependency takes it and scontrol shows it.
    pub fn word(self) -> &'static str {
        match self {
            DependencyKind::After => "after",
            DependencyKind::AfterOk => "afterok",
            DependencyKind::AfterNotOk => "afternotok",
            DependencyKind::AfterAny => "afterany",
            DependencyKind::AfterCorr => "aftercorr",
        }
    }
}

fn kind_of(word: &str) -> Option<DependencyKind> {
    Some(match word {
        "after" => DependencyKind::After,
        "afterok" => DependencyKind::AfterOk,
        "afternotok" => DependencyKind::AfterNotOk,
        "afterany" => DependencyKind::AfterAny,
        "aftercorr" => DependencyKind::AfterCorr,
        _ => return None,
    })
}

/// Parses a job id with an optional array element: `42`, `42_7` (Slurm), `42[7]` (LSF,
/// PBS Pro; `42[]` is the whole array), and `42.server` (PBS ids carry the server name,
/// which berth drops).
fn job_ref(text: &str, whole: &str, expected: &str) -> Result<(u64, Option<u32>), JobError> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let t = text.split_once('.').map_or(text, |(id, _)| id);
    let (id, index) = if let Some((id, idx)) = t.split_once('_') {
        (id, Some(idx))
    } else if let Some((id, rest)) = t.split_once('[') {
        // `42[]`: the whole array, as PBS Pro names it.
        (
            id,
            Some(rest.strip_suffix(']').unwrap_or("x")).filter(|i| !i.is_empty()),
        )
    } else {
        (t, None)
    };
    if !digits(id) {
        return Err(invalid(whole, expected));
    }
    let job = match id.parse::<u64>() {
        Ok(0) | Err(_) => return Err(invalid(whole, "job ids from 1 to 18446744073709551615")),
        Ok(j) => j,
    };
    let array_index = match index {
        // `42[*]`, `42_*`: the whole array, as LSF writes it.
        None | Some("*") => None,
        Some(i) if digits(i) => Some(
            i.parse::<u32>()
                .map_err(|_| invalid(whole, "array indices below 4294967296"))?,
        ),
        Some(_) => {
            return Err(invalid(
                whole,
                "an array element as JOBID_INDEX or JOBID[INDEX]",
            ))
        }
    };
    Ok((job, array_index))
}

/// A job named as any batch system writes it (`42`, `42_7`, `42[7]`, `42[]`, `42.server`):
/// its id and array index.
pub fn parse_job_id(text: &str) -> Option<(u64, Option<u32>)> {
    job_ref(text, text, "").ok()
}

/// A parser of LSF's dependency expressions ([`Dependencies::parse_lsf`]): each term it
/// meets goes to `deps`, in order, and the expression's leaves name them.
struct Lsf<'a> {
    whole: &'a str,
    rest: &'a str,
    deps: Dependencies,
    /// Whether a term counts an array's elements (which only a condition evaluates).
    counts: bool,
}

/// `parts` joined by `&&` (`all`) or `||`, a nested group of the same operator merged in.
fn joined(parts: Vec<Condition>, all: bool) -> Condition {
    let mut out = Vec::new();
    for part in parts {
        match part {
            Condition::All(cs) if all => out.extend(cs),
            Condition::Any(cs) if !all => out.extend(cs),
            part => out.push(part),
        }
    }
    match (out.len(), all) {
        (1, _) => out.pop().expect("one part"),
        (_, true) => Condition::All(out),
        (_, false) => Condition::Any(out),
    }
}

impl Lsf<'_> {
    fn bad(&self) -> JobError {
        invalid(self.whole, LSF_EXPECTED)
    }

    /// Takes `token` where the rest starts with it (after blanks).
    fn eat(&mut self, token: &str) -> bool {
        self.rest = self.rest.trim_start();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// ALL [`||` ALL]...
    fn any(&mut self) -> Result<Condition, JobError> {
        let mut parts = vec![self.all()?];
        while self.eat("||") {
            parts.push(self.all()?);
        }
        Ok(joined(parts, false))
    }

    /// ONE [`&&` ONE]...
    fn all(&mut self) -> Result<Condition, JobError> {
        let mut parts = vec![self.one()?];
        while self.eat("&&") {
            parts.push(self.one()?);
        }
        Ok(joined(parts, true))
    }

    /// `!` ONE, `(` ANY `)`, or a term.
    fn one(&mut self) -> Result<Condition, JobError> {
        if self.eat("!") {
            return Ok(Condition::Not(Box::new(self.one()?)));
        }
        if self.eat("(") {
            let inner = self.any()?;
            return match self.eat(")") {
                true => Ok(inner),
                false => Err(self.bad()),
            };
        }
        self.term()
    }

    /// `CONDITION(JOBID or NAME)`, or a bare job id or name (`done`).
    fn term(&mut self) -> Result<Condition, JobError> {
        self.rest = self.rest.trim_start();
        let end = self
            .rest
            .find(|c: char| c.is_whitespace() || "()&|!".contains(c))
            .unwrap_or(self.rest.len());
        let (word, after) = self.rest.split_at(end);
        if word.is_empty() {
            return Err(self.bad());
        }
        self.rest = after;
        let (word, arg) = match self.eat("(") {
            true => {
                let close = self.rest.find(')').ok_or_else(|| self.bad())?;
                let arg = self.rest[..close].trim();
                self.rest = &self.rest[close + 1..];
                (word, arg)
            }
            false => ("done", word),
        };
        let term = || format!("{word}({arg})");
        if let Some(of) = by_word(&COUNT_WORDS, word) {
            return self.count(of, arg, &term());
        }
        let kind = match by_word(&LSF_WORDS, word) {
            Some(kind) => kind,
            None if ["post_done", "post_err", "numhold", "external"].contains(&word) => {
                return Err(JobError::unsupported(
                    &term(),
                    "berth knows done, exit, ended and started, and numdone, numexit, numended, numstart, numrun and numpend for arrays (it runs no post-execution, and its scheduler does not count held elements apart)",
                ))
            }
            _ => return Err(self.bad()),
        };
        // exit(42, [OP] CODE): a failure with that exit status (`==` without an operator).
        let (arg, exit_code) = match arg.split_once(',') {
            Some((job, test)) if kind == DependencyKind::AfterNotOk => {
                (job.trim(), Some(exit_test(test, &term())?))
            }
            Some(_) => return Err(self.bad()),
            None => (arg, None),
        };
        if exit_code.is_some() && !arg.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(JobError::unsupported(
                &term(),
                "an exit status asked of jobs by name: name the job by its id, exit(42, > 1)",
            ));
        }
        // A name (quoted where it starts with a digit, as LSF has it): the user's jobs
        // of that name.
        let quoted = arg.strip_prefix('"').and_then(|a| a.strip_suffix('"'));
        if let Some(name) =
            quoted.or(Some(arg).filter(|a| a.starts_with(|c: char| !c.is_ascii_digit())))
        {
            let (bare, _) = Dependencies::name_and_index(name);
            if bare.is_empty() || bare.starts_with('[') || name.contains(char::is_whitespace) {
                return Err(self.bad());
            }
            self.deps.named.push((kind, name.to_string()));
            return Ok(Condition::Name(self.deps.named.len() as u32 - 1));
        }
        // A job id, with an element at most (LSF's ids have no `.server`, and a name that
        // starts with a digit is quoted).
        let id = arg.split('[').next().unwrap_or(arg);
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(JobError::invalid(
                "dependency",
                &term(),
                "a job id (42, 42[3], 42[*]), or a name, quoted where it starts with a digit (\"1st\")",
            ));
        }
        let (job, array_index) = job_ref(arg, self.whole, LSF_EXPECTED)?;
        self.deps.jobs.push(JobDependency {
            delay: None,
            kind,
            job,
            array_index,
            each: arg.ends_with("[*]"),
            count: None,
            exit_code,
        });
        Ok(Condition::Term(self.deps.jobs.len() as u32 - 1))
    }

    /// `numdone(ARRAY, OP N)`'s `ARRAY, OP N` (`N`: a number, or `*` for all elements; `*`
    /// alone, as LSF writes it too, is `== *`).
    fn count(&mut self, of: Counted, arg: &str, term: &str) -> Result<Condition, JobError> {
        const EXPECTED: &str =
            "an array job's id, a comparison (==, !=, <, <=, >, >=) and a number or *, as numdone(42, >= 5)";
        let bad = || JobError::invalid("dependency", term, EXPECTED);
        let (id, test) = arg.split_once(',').ok_or_else(bad)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let job = match id.trim().parse::<u64>() {
            Ok(job) if job > 0 && digits(id.trim()) => job,
            _ => return Err(bad()),
        };
        let test = match test.trim() {
            "*" => "== *",
            test => test,
        };
        let (word, op) = COUNT_OPS
            .iter()
            .find(|(w, _)| test.starts_with(w))
            .ok_or_else(bad)?;
        let n = match test[word.len()..].trim() {
            "*" => None,
            n if digits(n) => Some(n.parse::<u32>().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        self.deps.jobs.push(JobDependency {
            delay: None,
            kind: DependencyKind::AfterAny,
            job,
            array_index: None,
            each: false,
            count: Some(ArrayCount { of, op: *op, n }),
            exit_code: None,
        });
        self.counts = true;
        Ok(Condition::Term(self.deps.jobs.len() as u32 - 1))
    }
}

impl Dependencies {
    /// Parses `sbatch --dependency`. Also the list after PBS's `depend=`, which uses the
    /// same words.
    pub fn parse_slurm(text: &str) -> Result<Dependencies, JobError> {
        // None (`scontrol update JobId=42 Dependency=` clears them).
        if text.trim().is_empty() {
            return Ok(Dependencies::default());
        }
        let any = text.contains('?');
        if any && text.contains(',') {
            return Err(invalid(
                text,
                "one separator: ',' (all must hold) or '?' (any one), as Slurm takes them",
            ));
        }
        let mut deps = Dependencies {
            any,
            ..Default::default()
        };
        for item in text.trim().split([',', '?']) {
            if item == "singleton" && any {
                return Err(JobError::unsupported(
                    text,
                    "singleton as one of several alternatives ('?'): join it with ','",
                ));
            }
            if item == "singleton" {
                deps.singleton = true;
                continue;
            }
            let mut parts = item.split(':');
            let word = parts.next().unwrap_or("");
            let Some(kind) = kind_of(word) else {
                if ["afterburstbuffer", "expand"].contains(&word)
                    || word.starts_with("before")
                    || word == "on"
                {
                    return Err(JobError::unsupported(
                        item,
                        "berth knows after, afterok, afternotok, afterany, aftercorr and singleton",
                    ));
                }
                return Err(invalid(text, SLURM_EXPECTED));
            };
            let mut any = false;
            for id in parts {
                // `after:42+5`: five minutes after job 42 started (or was cancelled).
                let (id, delay) = match id.split_once('+') {
                    Some(_) if kind != DependencyKind::After => {
                        return Err(invalid(
                            item,
                            "a delay (+MINUTES) only after `after:`, as after:42+5",
                        ))
                    }
                    Some((id, minutes)) => match minutes.parse::<u32>() {
                        Ok(m) => (id, Some(m).filter(|&m| m > 0)),
                        Err(_) => return Err(invalid(item, "after:JOB+MINUTES, as after:42+5")),
                    },
                    None => (id, None),
                };
                let (job, array_index) = job_ref(id, text, SLURM_EXPECTED)?;
                deps.jobs.push(JobDependency {
                    delay,
                    kind,
                    job,
                    array_index,
                    each: false,
                    count: None,
                    exit_code: None,
                });
                any = true;
            }
            if !any {
                return Err(invalid(text, SLURM_EXPECTED));
            }
        }
        Ok(deps)
    }

    /// Parses `bsub -w`: LSF's dependency expression, conditions (`done(42)`, `ended(prep)`;
    /// a bare job id or name means `done`, as in LSF) joined by `&&` and `||` (`&&` binding
    /// tighter), grouped by parentheses, negated by `!`.
    pub fn parse_lsf(text: &str) -> Result<Dependencies, JobError> {
        let mut lsf = Lsf {
            whole: text,
            rest: text,
            deps: Dependencies::default(),
            counts: false,
        };
        let condition = lsf.any()?;
        if !lsf.rest.trim().is_empty() {
            return Err(lsf.bad());
        }
        let mut deps = lsf.deps;
        // A list of terms all required, or any one enough, needs no condition.
        let leaf = |c: &Condition| matches!(c, Condition::Term(_) | Condition::Name(_));
        match condition {
            c if lsf.counts => deps.condition = Some(c),
            c if leaf(&c) => {}
            Condition::All(cs) if cs.iter().all(leaf) => {}
            Condition::Any(cs) if cs.iter().all(leaf) => deps.any = true,
            c => deps.condition = Some(c),
        }
        Ok(deps)
    }

    /// Parses PBS's `-W depend=LIST`, given LIST.
    /// PBS's `-W depend=` list: Slurm's words, which PBS Pro and Torque share, and Torque's
    /// `afterokarray`-style words for whole arrays (an array's id stands for all its tasks
    /// anyway).
    pub fn parse_pbs(text: &str) -> Result<Dependencies, JobError> {
        let slurm: Vec<String> = text
            .split(',')
            .map(|item| match item.split_once(':') {
                Some((word, ids)) => {
                    format!("{}:{ids}", word.strip_suffix("array").unwrap_or(word))
                }
                None => item.to_string(),
            })
            .collect();
        let deps = Dependencies::parse_slurm(&slurm.join(","))?;
        if deps.singleton || deps.any {
            return Err(invalid(
                text,
                "afterok, afternotok, afterany or after lists",
            ));
        }
        Ok(deps)
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && !self.singleton && self.named.is_empty()
    }

    /// Makes the names' terms part of the dependencies once their jobs are known:
    /// `terms[N]` numbers the terms that `named[N]` stands for (the jobs of that name, all
    /// of which must hold), after the `first` terms of `jobs`. Among alternatives (`||`) a
    /// name that stands for several jobs becomes one alternative of its own.
    pub fn settle_names(&mut self, first: u32, terms: &[Vec<u32>]) {
        if self.any && terms.iter().any(|t| t.len() > 1) {
            let ids = (0..first).map(Condition::Term);
            let names = (0..terms.len() as u32).map(Condition::Name);
            self.condition = Some(Condition::Any(ids.chain(names).collect()));
            self.any = false;
        }
        if let Some(c) = &mut self.condition {
            c.resolve_names(terms);
        }
        self.named.clear();
    }

    /// The jobs it depends on in LSF's words, as bjobs shows them: `done(42) && (exit(43)
    /// || numdone(44, >= 2))`; Slurm's `aftercorr:42` is `done(42[*])`. None without any.
    pub fn lsf_text(&self) -> Option<String> {
        if self.jobs.is_empty() {
            return None;
        }
        let term = |d: &JobDependency| {
            let id = match (d.array_index, d.each || d.kind == DependencyKind::AfterCorr) {
                (Some(i), _) => format!("{}[{i}]", d.job),
                (None, true) => format!("{}[*]", d.job),
                (None, false) => d.job.to_string(),
            };
            let word = match d.kind {
                DependencyKind::AfterCorr => "done",
                kind => word_of(&LSF_WORDS, kind),
            };
            match (d.count, d.exit_code) {
                (Some(c), _) => format!("{}({}, {c})", c.word(), d.job),
                (None, Some(test)) => {
                    format!(
                        "{word}({id}, {} {})",
                        word_of(&COUNT_OPS, test.op),
                        test.code
                    )
                }
                (None, None) => format!("{word}({id})"),
            }
        };
        let condition = self.combined(self.jobs.len() as u32);
        Some(condition.render(&mut |leaf| match leaf {
            Condition::Term(t) => self.jobs.get(*t as usize).map_or(String::new(), term),
            _ => String::new(),
        }))
    }

    /// How `count` terms combine, as a condition whatever the spelling: the condition, or
    /// all of them, or any one.
    pub fn combined(&self, count: u32) -> Condition {
        let terms = || (0..count).map(Condition::Term).collect();
        match (&self.condition, self.any) {
            (Some(c), _) => c.clone(),
            (None, true) => Condition::Any(terms()),
            (None, false) => Condition::All(terms()),
        }
    }

    /// LSF's dependency name with its array element, if it names one: `run[3]` is element 3
    /// of the array named `run`; `run[*]` and `run` the whole array (`run[*]` each element's
    /// own from an array: [`JobDependency::each`]).
    pub fn name_and_index(pattern: &str) -> (&str, Option<u32>) {
        match pattern.strip_suffix(']').and_then(|p| p.rsplit_once('[')) {
            Some((name, "*")) => (name, None),
            Some((name, index)) => match index.parse() {
                Ok(i) => (name, Some(i)),
                Err(_) => (pattern, None),
            },
            None => (pattern, None),
        }
    }

    /// Whether a job named `job_name` is one that LSF's dependency name `pattern` means:
    /// the same name, or, for `PREFIX*`, any name that starts so.
    pub fn name_matches(pattern: &str, job_name: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => job_name.starts_with(prefix),
            None => job_name == pattern,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DependencyKind::*;

    fn dep(kind: DependencyKind, job: u64) -> JobDependency {
        JobDependency {
            delay: None,
            kind,
            job,
            array_index: None,
            each: false,
            count: None,
            exit_code: None,
        }
    }

    #[test]
    fn slurm() {
        let d = Dependencies::parse_slurm("afterok:42:43,afterany:44").unwrap();
        assert_eq!(
            d.jobs,
            vec![dep(AfterOk, 42), dep(AfterOk, 43), dep(AfterAny, 44)]
        );
        assert!(!d.singleton);
        let d = Dependencies::parse_slurm("after:7,afternotok:8_3,singleton").unwrap();
        assert_eq!(d.jobs[0], dep(After, 7));
        assert_eq!(d.jobs[1].array_index, Some(3));
        assert!(d.singleton);
        assert!(Dependencies::parse_slurm("singleton")
            .unwrap()
            .jobs
            .is_empty());
        // `after` with a delay in minutes, each job its own; +0 is none.
        let d = Dependencies::parse_slurm("after:7+5:8:9+0").unwrap();
        let delays: Vec<_> = d.jobs.iter().map(|j| (j.job, j.delay)).collect();
        assert_eq!(delays, [(7, Some(5)), (8, None), (9, None)]);
    }

    #[test]
    fn slurm_errors() {
        let e = |s| Dependencies::parse_slurm(s).unwrap_err().to_string();
        // Any one of them ('?'): each job a term; not with ',', nor singleton among them.
        let d = Dependencies::parse_slurm("afterok:1:2?afternotok:3").unwrap();
        assert!(d.any);
        assert_eq!(
            d.jobs,
            vec![dep(AfterOk, 1), dep(AfterOk, 2), dep(AfterNotOk, 3)]
        );
        assert!(e("afterok:1?afterok:2,afterany:3").contains("one separator"));
        assert!(e("afterok:1?singleton").contains("is not supported"));
        assert!(
            !Dependencies::parse_slurm("afterok:1,afterok:2")
                .unwrap()
                .any
        );
        assert!(e("afterok:0").contains("job ids from 1"));
        assert!(e("afterok:x").contains("expected TYPE:JOBID"));
        assert!(e("afterok").contains("expected TYPE:JOBID"));
        assert!(e("afterok:").contains("expected TYPE:JOBID"));
        assert!(e("beforeok:3").contains("is not supported"));
        assert!(e("afterok:3+5").contains("only after `after:`"));
        assert!(e("after:3+soon").contains("after:JOB+MINUTES"));
        assert!(e("afterburstbuffer:3").contains("is not supported"));
        assert_eq!(
            Dependencies::parse_slurm("aftercorr:3").unwrap().jobs[0].kind,
            DependencyKind::AfterCorr
        );
        assert!(e("whenever:3").contains("expected TYPE:JOBID"));
    }

    #[test]
    fn lsf() {
        let d = Dependencies::parse_lsf("done(42) && ended(43)").unwrap();
        assert_eq!(d.jobs, vec![dep(AfterOk, 42), dep(AfterAny, 43)]);
        let d = Dependencies::parse_lsf("exit(5)&&started( 6 )&&7&&done(8[2])").unwrap();
        assert_eq!(d.jobs[0], dep(AfterNotOk, 5));
        assert_eq!(d.jobs[1], dep(After, 6));
        assert_eq!(d.jobs[2], dep(AfterOk, 7));
        assert_eq!(d.jobs[3].array_index, Some(2));
        // An array as LSF writes it (`58[*]`: each element's own from an array, else the
        // whole), by id or by name; one element by name.
        let d = Dependencies::parse_lsf("ended(58[*]) && ended(la[*]) && done(la[3])").unwrap();
        let each = JobDependency {
            delay: None,
            each: true,
            ..dep(AfterAny, 58)
        };
        assert_eq!(d.jobs, vec![each]);
        let names: Vec<_> = d
            .named
            .iter()
            .map(|(_, n)| Dependencies::name_and_index(n))
            .collect();
        assert_eq!(names, [("la", None), ("la", Some(3))]);
        assert_eq!(Dependencies::name_and_index("run*"), ("run*", None));
        assert_eq!(Dependencies::name_and_index("x[y]"), ("x[y]", None));
        // None: cleared (scontrol update Dependency=).
        assert_eq!(
            Dependencies::parse_slurm("").unwrap(),
            Dependencies::default()
        );

        let e = |s| Dependencies::parse_lsf(s).unwrap_err().to_string();
        // Any one of them (||).
        let d = Dependencies::parse_lsf("done(1) || exit(prep)").unwrap();
        assert!(d.any && d.condition.is_none());
        assert_eq!(d.jobs, vec![dep(AfterOk, 1)]);
        assert_eq!(d.named, vec![(AfterNotOk, "prep".to_string())]);
        // More than that: a condition over the terms, && binding tighter than ||, groups
        // of one operator merged.
        use Condition::{All, Any, Name, Not, Term};
        let shape = |s| {
            let d = Dependencies::parse_lsf(s).unwrap();
            assert!(!d.any, "{s}");
            d.condition
        };
        assert_eq!(
            shape("done(1) || done(2) && done(3)"),
            Some(Any(vec![Term(0), All(vec![Term(1), Term(2)])]))
        );
        assert_eq!(
            shape("(done(1)||done(2))&&done(3)"),
            Some(All(vec![Any(vec![Term(0), Term(1)]), Term(2)]))
        );
        assert_eq!(
            shape("done(1) && !(ended(prep) || 2)"),
            Some(All(vec![
                Term(0),
                Not(Box::new(Any(vec![Name(0), Term(1)])))
            ]))
        );
        assert_eq!(shape("((done(1)) && (done(2) && 3))"), None);
        assert_eq!(shape("!!4"), Some(Not(Box::new(Not(Box::new(Term(0)))))));
        // Written back with the parentheses the shape needs.
        let d = Dependencies::parse_lsf("!(1 || 2) && (3 || !4) && prep").unwrap();
        let text = d.condition.unwrap().render(&mut |leaf| match leaf {
            Term(t) => format!("t{t}"),
            _ => "name".into(),
        });
        assert_eq!(text, "!(t0 || t1) && (t2 || !t3) && name");
        // A name's jobs, all of them required.
        let mut c = Any(vec![Name(0), Not(Box::new(Name(1))), Term(0)]);
        c.resolve_names(&[vec![1, 2], vec![3]]);
        assert_eq!(
            c,
            Any(vec![
                All(vec![Term(1), Term(2)]),
                Not(Box::new(Term(3))),
                Term(0)
            ])
        );
        // Names settled: among alternatives, a name of several jobs is an alternative of
        // its own; of one job, a term as any other.
        let mut d = Dependencies::parse_lsf("done(1) || done(prep) || exit(x)").unwrap();
        d.settle_names(1, &[vec![1, 2], vec![3]]);
        let one = Any(vec![Term(0), All(vec![Term(1), Term(2)]), Term(3)]);
        assert_eq!(d.condition.as_ref(), Some(&one));
        assert!(!d.any && d.named.is_empty());
        assert_eq!(d.combined(4), one);
        let mut d = Dependencies::parse_lsf("done(1) || done(prep)").unwrap();
        d.settle_names(1, &[vec![1]]);
        assert!(d.any && d.condition.is_none());
        assert_eq!(d.combined(2), Any(vec![Term(0), Term(1)]));
        let d = Dependencies::parse_lsf("1 && prep").unwrap();
        assert_eq!(d.combined(3), All(vec![Term(0), Term(1), Term(2)]));
        // Written back in LSF's words (names resolved to ids), as bjobs shows them.
        let mut d =
            Dependencies::parse_lsf("(done(4[2]) || !exit(prep)) && numexit(5, > 1)").unwrap();
        d.jobs.push(JobDependency {
            delay: None,
            each: true,
            ..dep(AfterAny, 9)
        });
        d.settle_names(2, &[vec![2]]);
        assert_eq!(
            d.lsf_text().unwrap(),
            "(done(4[2]) || !ended(9[*])) && numexit(5, > 1)"
        );
        let slurm = Dependencies::parse_slurm("afterok:1?aftercorr:2").unwrap();
        assert_eq!(slurm.lsf_text().unwrap(), "done(1) || done(2[*])");
        assert_eq!(Dependencies::default().lsf_text(), None);
        // Counts of an array's elements: a condition even alone.
        let d = Dependencies::parse_lsf("numdone(42, >= 5) && numended(43,==*)").unwrap();
        assert_eq!(
            Dependencies::parse_lsf("numended(43, *)").unwrap().jobs[0].count,
            d.jobs[1].count
        );
        assert_eq!(d.condition, Some(All(vec![Term(0), Term(1)])));
        let counts: Vec<_> = d.jobs.iter().map(|j| (j.job, j.count.unwrap())).collect();
        let count = |of, op, n| ArrayCount { of, op, n };
        assert_eq!(
            counts,
            [
                (42, count(Counted::Done, CountOp::Ge, Some(5))),
                (43, count(Counted::Ended, CountOp::Eq, None))
            ]
        );
        assert_eq!(
            format!("{} {}", counts[0].1.word(), counts[0].1),
            "numdone >= 5"
        );
        let d = Dependencies::parse_lsf("numstart(7, != 0)").unwrap();
        assert_eq!(d.condition, Some(Term(0)));
        for bad in [
            "numdone(42)",
            "numdone(x, > 1)",
            "numdone(42, =~ 1)",
            "numexit(4, < y)",
        ] {
            assert!(e(bad).contains("as numdone(42, >= 5)"), "{bad}: {}", e(bad));
        }
        assert!(e("numhold(4, > 1)").contains("is not supported"));
        // numrun and numpend: running and pending elements, written back as they were.
        for text in ["numrun(4, > 1)", "numpend(4, == 0)"] {
            let d = Dependencies::parse_lsf(text).unwrap();
            assert_eq!(d.lsf_text().as_deref(), Some(text));
        }
        for bad in [
            "done(1) & done(2)",
            "done(1) || (done(2)",
            "done(1))",
            "()",
            "!",
            "done(1) &&",
            "",
        ] {
            assert!(
                e(bad).contains("expected CONDITION(JOBID or NAME)"),
                "{bad}"
            );
        }
        // Names: the user's jobs of that name (a trailing * any ending), quoted where they
        // start with a digit.
        let d = Dependencies::parse_lsf("done(prep) && ended(\"2nd\") && run*").unwrap();
        let named = [(AfterOk, "prep"), (AfterAny, "2nd"), (AfterOk, "run*")];
        assert_eq!(d.named, named.map(|(k, n)| (k, n.to_string())));
        assert!(d.jobs.is_empty() && !d.is_empty());
        assert!(
            Dependencies::name_matches("run*", "run-7")
                && !Dependencies::name_matches("run", "run-7")
        );
        assert!(e("done(\"\")").contains("expected CONDITION(JOBID or NAME)"));
        for digit in ["done(1job)", "ended(12.3)"] {
            assert!(
                e(digit).contains("quoted where it starts with a digit"),
                "{digit}"
            );
        }
        for empty in ["done([*])", "ended([2])", "[3]"] {
            assert!(
                e(empty).contains("expected CONDITION(JOBID or NAME)"),
                "{empty}"
            );
        }
        // exit(ID, [OP] CODE): a failure with that exit status (== without an operator),
        // written back as LSF writes it.
        for (text, op, code, back) in [
            ("exit(4, ==1)", CountOp::Eq, 1, "exit(4, == 1)"),
            ("exit(4,3)", CountOp::Eq, 3, "exit(4, == 3)"),
            ("exit( 4 , > 127 )", CountOp::Gt, 127, "exit(4, > 127)"),
        ] {
            let d = Dependencies::parse_lsf(text).unwrap();
            assert_eq!(d.jobs[0].exit_code, Some(ExitTest { op, code }), "{text}");
            assert_eq!(d.lsf_text().as_deref(), Some(back), "{text}");
        }
        for bad in ["exit(4, 256)", "exit(4, > x)", "exit(4, -1)"] {
            assert!(
                e(bad).contains("an exit status of 0 to 255"),
                "{bad}: {}",
                e(bad)
            );
        }
        assert!(e("exit(prep, 1)").contains("name the job by its id"));
        assert!(e("done(4, 1)").contains("expected CONDITION(JOBID or NAME)"));
        assert!(e("post_done(4)").contains("is not supported"));
        assert!(e("finished(4)").contains("expected CONDITION(JOBID or NAME)"));
        assert!(e("done(4").contains("expected CONDITION(JOBID or NAME)"));
    }

    #[test]
    fn pbs() {
        let d = Dependencies::parse_pbs("afterok:42.pbsserver:43").unwrap();
        assert_eq!(d.jobs, vec![dep(AfterOk, 42), dep(AfterOk, 43)]);
        for (text, id) in [
            ("42", (42, None)),
            ("42_7", (42, Some(7))),
            ("42[3].server", (42, Some(3))),
            ("42[]", (42, None)),
            ("42.server.example", (42, None)),
        ] {
            assert_eq!(parse_job_id(text), Some(id), "{text}");
        }
        for bad in ["x", "42[x]", "42[3", "", ".server", "0"] {
            assert_eq!(parse_job_id(bad), None, "{bad}");
        }
        let d = Dependencies::parse_pbs("afterokarray:7[].server,afterany:8[2]").unwrap();
        assert_eq!(d.jobs[0], dep(AfterOk, 7));
        assert_eq!((d.jobs[1].job, d.jobs[1].array_index), (8, Some(2)));
        assert!(Dependencies::parse_pbs("singleton").is_err());
        assert!(Dependencies::parse_pbs("afterok:7[x]").is_err());
        assert!(Dependencies::parse_pbs("beforeok:4").is_err());
    }
}
