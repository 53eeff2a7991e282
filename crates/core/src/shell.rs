//! Shell variable assignments as environment files write them: Apptainer's
//! `/.singularity.d/env/*.sh` (`export CUDA_VERSION="${CUDA_VERSION:-"11.8.0"}"`,
//! `export PATH="/opt/conda/bin:$PATH"`), enroot's and pam_env's `/etc/environment`, and
//! `--env-file`s. A shell would source them; berth evaluates what such files hold without
//! one: quoting (single, double, backslashes), `$NAME`, `${NAME}` and `${NAME:-word}`
//! (also `-`, `:+`, `+`), against the variables known so far. Command substitution and
//! arithmetic are not evaluated: such a line is refused, not half done.

use std::fmt;

/// PATH when an image sets none (docker's default), and what a file that extends PATH
/// extends then.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a line is not an assignment berth can evaluate.
#[derive(Debug, Clone, PartialEq)]
pub enum ShellError {
    /// `$(...)`, a backquote or `$((...))`: berth runs nothing to evaluate a value.
    Command,
    /// A quote or `${` that is not closed.
    Unclosed,
    /// A `${...}` form other than those above.
    Unsupported(String),
    /// A word after the assignments that is none (`A=1 cmd`: a command run with A set).
    Trailing(String),
}

impl fmt::Display for ShellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShellError::Command => {
                f.write_str("a command substitution, which berth does not run: set the value itself")
            }
            ShellError::Unclosed => f.write_str("a quote or ${ that is not closed"),
            ShellError::Unsupported(form) => write!(
                f,
                "${{{form}}}: berth knows $NAME, ${{NAME}}, ${{NAME:-word}}, ${{NAME-word}}, ${{NAME:+word}} and ${{NAME+word}}"
            ),
            ShellError::Trailing(word) => write!(
                f,
                "{word:?} after the assignments would be a command, which berth does not run (a value with blanks is quoted: A=\"x y\")"
            ),
        }
    }
}

/// The assignments on `line` (`NAME=value`, several apart as a shell has them: `A=1 B=$A`;
/// `export ` before them allowed), each value evaluated with `lookup` and the assignments
/// before it for the variables it names. `None` for a line that assigns nothing: blank, a
/// comment, or another command (`unset X`, `if ...`), which files sourced by a shell may
/// hold and which berth leaves out.
pub fn assignments(
    line: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<Result<Vec<(String, String)>, ShellError>> {
    let line = line.trim();
    let line = line.strip_prefix("export").map_or(line, |rest| {
        if rest.starts_with([' ', '\t']) {
            rest.trim_start()
        } else {
            line
        }
    });
    let (name, mut rest) = line.split_once('=')?;
    if !is_name(name) {
        return None;
    }
    let mut set: Vec<(String, String)> = Vec::new();
    let mut name = name.to_string();
    loop {
        let known = |n: &str| {
            (set.iter().rev().find(|(k, _)| k == n))
                .map(|(_, v)| v.clone())
                .or_else(|| lookup(n))
        };
        let mut parser = Parser {
            rest,
            lookup: &known,
        };
        let value = match parser.word(None) {
            Ok(value) => value,
            Err(e) => return Some(Err(e)),
        };
        let after = parser.rest.trim_start();
        set.push((name, value));
        if after.is_empty() || after.starts_with('#') {
            return Some(Ok(set));
        }
        match after.split_once('=').filter(|(n, _)| is_name(n)) {
            Some((next, value)) => (name, rest) = (next.to_string(), value),
            None => {
                let word = after.split_whitespace().next().unwrap_or(after);
                return Some(Err(ShellError::Trailing(word.to_string())));
            }
        }
    }
}

/// Whether `name` is a shell variable's name.
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Parser<'a, 'l> {
    rest: &'a str,
    lookup: &'l dyn Fn(&str) -> Option<String>,
}

impl Parser<'_, '_> {
    fn next(&mut self) -> Option<char> {
        let c = self.rest.chars().next()?;
        self.rest = &self.rest[c.len_utf8()..];
        Some(c)
    }

    /// A word, up to unquoted blank (or a `#` after one: a comment), or up to `end` (the `}`
    /// of a `${NAME:-word}`, where blanks are the word's).
    fn word(&mut self, end: Option<char>) -> Result<String, ShellError> {
        let mut out = String::new();
        loop {
            let Some(c) = self.rest.chars().next() else {
                return match end {
                    Some(_) => Err(ShellError::Unclosed),
                    None => Ok(out),
                };
            };
            if Some(c) == end {
                self.next();
                return Ok(out);
            }
            if end.is_none() && c.is_whitespace() {
                return Ok(out);
            }
            self.next();
            match c {
                '\'' => {
                    let (quoted, after) = self.rest.split_once('\'').ok_or(ShellError::Unclosed)?;
                    out.push_str(quoted);
                    self.rest = after;
                }
                '"' => out.push_str(&self.double_quoted()?),
                '\\' => out.extend(self.next()),
                '$' => out.push_str(&self.expansion()?),
                '`' => return Err(ShellError::Command),
                c => out.push(c),
            }
        }
    }

    /// The rest of a double-quoted string (its opening quote read).
    fn double_quoted(&mut self) -> Result<String, ShellError> {
        let mut out = String::new();
        loop {
            match self.next().ok_or(ShellError::Unclosed)? {
                '"' => return Ok(out),
                // Within double quotes a backslash quotes only these.
                '\\' => match self.next().ok_or(ShellError::Unclosed)? {
                    c @ ('$' | '`' | '"' | '\\') => out.push(c),
                    '\n' => {}
                    c => {
                        out.push('\\');
                        out.push(c);
                    }
                },
                '$' => out.push_str(&self.expansion()?),
                '`' => return Err(ShellError::Command),
                c => out.push(c),
            }
        }
    }

    /// What follows a `$`.
    fn expansion(&mut self) -> Result<String, ShellError> {
        let name_len = |s: &str| {
            s.char_indices()
                .find(|&(i, c)| {
                    !(c.is_ascii_alphanumeric() || c == '_') || (i == 0 && c.is_ascii_digit())
                })
                .map_or(s.len(), |(i, _)| i)
        };
        match self.rest.chars().next() {
            Some('(') => Err(ShellError::Command),
            Some('{') => {
                self.next();
                let n = name_len(self.rest);
                let name = &self.rest[..n];
                self.rest = &self.rest[n..];
                let value = (self.lookup)(name);
                if name.is_empty() {
                    let form: String = self.rest.chars().take_while(|&c| c != '}').collect();
                    return Err(ShellError::Unsupported(form));
                }
                let op: String = match self.rest.chars().next() {
                    Some('}') => {
                        self.next();
                        return Ok(value.unwrap_or_default());
                    }
                    Some(':') => self.rest.chars().take(2).collect(),
                    Some(c) => c.to_string(),
                    None => return Err(ShellError::Unclosed),
                };
                let set = value.is_some();
                let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
                let use_word = match op.as_str() {
                    ":-" => !non_empty,
                    "-" => !set,
                    ":+" => non_empty,
                    "+" => set,
                    _ => {
                        let form: String = self.rest.chars().take_while(|&c| c != '}').collect();
                        return Err(ShellError::Unsupported(format!("{name}{form}")));
                    }
                };
                self.rest = &self.rest[op.len()..];
                let word = self.word(Some('}'))?;
                Ok(match (use_word, op.ends_with('+')) {
                    (true, _) => word,
                    (false, true) => String::new(),
                    (false, false) => value.unwrap_or_default(),
                })
            }
            _ => {
                let n = name_len(self.rest);
                if n == 0 {
                    // A lone `$` is itself.
                    return Ok("$".into());
                }
                let name = &self.rest[..n];
                self.rest = &self.rest[n..];
                Ok((self.lookup)(name).unwrap_or_default())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(line: &str) -> Option<Result<(String, String), ShellError>> {
        let one = |set: Vec<(String, String)>| set.into_iter().next().unwrap();
        assignments_of(line).map(|r| r.map(one))
    }

    fn assignments_of(line: &str) -> Option<Result<Vec<(String, String)>, ShellError>> {
        let known = |name: &str| match name {
            "PATH" => Some("/usr/bin:/bin".to_string()),
            "EMPTY" => Some(String::new()),
            "HOME" => Some("/home/ann".to_string()),
            _ => None,
        };
        assignments(line, &known)
    }

    fn value(line: &str) -> String {
        eval(line).unwrap().unwrap().1
    }

    #[test]
    fn apptainers_environment_files_evaluate_as_a_shell_would() {
        // Apptainer's 10-docker2singularity.sh, as it writes each variable of a Docker image.
        assert_eq!(
            eval(r#"export CUDA_VERSION="${CUDA_VERSION:-"11.8.0"}""#),
            Some(Ok(("CUDA_VERSION".into(), "11.8.0".into())))
        );
        assert_eq!(value(r#"export LANG="${LANG:-"C.UTF-8"}""#), "C.UTF-8");
        // A definition file's %environment.
        assert_eq!(
            value(r#"export PATH="/opt/conda/bin:$PATH""#),
            "/opt/conda/bin:/usr/bin:/bin"
        );
        assert_eq!(
            value("export PATH=/opt/bin:${PATH}"),
            "/opt/bin:/usr/bin:/bin"
        );
        assert_eq!(value(r#"X="${HOME:-/root}/data""#), "/home/ann/data");
        // Go's %q escapes, inside double quotes.
        assert_eq!(value(r#"Q="${Q:-"a \"b\" \\c"}""#), r#"a "b" \c"#);
    }

    #[test]
    fn quoting_and_the_expansion_forms() {
        assert_eq!(value("A='single $PATH quoted'"), "single $PATH quoted");
        assert_eq!(value(r#"A="two words""#), "two words");
        assert_eq!(value(r"A=back\ slash"), "back slash");
        assert_eq!(value(r#"A="it\'s \x""#), r"it\'s \x");
        assert_eq!(value("A=x # a comment"), "x");
        assert_eq!(value("A=a'b'\"c\"$HOME"), "abc/home/ann");
        assert_eq!(value("A=$UNSET"), "");
        assert_eq!(value("A=${EMPTY:-word}"), "word");
        assert_eq!(value("A=${EMPTY-word}"), "");
        assert_eq!(value("A=${UNSET-word}"), "word");
        assert_eq!(value("A=${HOME:+set}"), "set");
        assert_eq!(value("A=${EMPTY:+set}"), "");
        assert_eq!(value("A=${EMPTY+set}"), "set");
        assert_eq!(value("A=${UNSET:-two words}"), "two words");
        assert_eq!(value("A=${UNSET:-${HOME}/x}"), "/home/ann/x");
        assert_eq!(value("A=cost$"), "cost$");
        assert_eq!(value("A=$1x"), "$1x");
        assert_eq!(value("A="), "");
        assert_eq!(value("export\tA=1"), "1");
        // Several on a line, each seeing those before it.
        let pairs = |p: &[(&str, &str)]| {
            Some(Ok(p
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()))
        };
        assert_eq!(
            assignments_of("export A=1 B=\"$A 2\"\tC=$HOME # x"),
            pairs(&[("A", "1"), ("B", "1 2"), ("C", "/home/ann")])
        );
        assert_eq!(
            assignments_of("A=1 B=2 cmd arg"),
            Some(Err(ShellError::Trailing("cmd".into())))
        );
    }

    #[test]
    fn what_is_not_an_assignment_or_cannot_be_evaluated() {
        for line in [
            "",
            "# comment",
            "unset X",
            "exportA",
            "if [ -n \"$X\" ]; then",
            "1A=2",
            "A B=1",
        ] {
            assert_eq!(eval(line), None, "{line}");
        }
        assert_eq!(eval("A=$(hostname)"), Some(Err(ShellError::Command)));
        assert_eq!(eval("A=`hostname`"), Some(Err(ShellError::Command)));
        assert_eq!(eval("A=\"$(( 1 + 2 ))\""), Some(Err(ShellError::Command)));
        assert_eq!(eval("A=\"open"), Some(Err(ShellError::Unclosed)));
        assert_eq!(eval("A=${B:-x"), Some(Err(ShellError::Unclosed)));
        assert!(matches!(
            eval("A=${#B}"),
            Some(Err(ShellError::Unsupported(_)))
        ));
        assert!(matches!(
            eval("A=${B%x}"),
            Some(Err(ShellError::Unsupported(_)))
        ));
    }
}
