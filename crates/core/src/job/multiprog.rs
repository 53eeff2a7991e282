//! srun's `--multi-prog` configuration: each task runs its own program (MPMD), a line per
//! set of ranks: `RANKS PROGRAM ARGS...`, RANKS a list of ranks and ranges (`0,2-3`) or `*`
//! for every rank no other line names; `%t` in the words is the task's rank, `%o` its offset
//! among the line's ranks; `#` starts a comment; words may be quoted with ' or ".

use super::JobError;

/// One line: its ranks (`None`: `*`) and its words.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    ranks: Option<Vec<(u32, u32)>>,
    words: Vec<String>,
}

/// A parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiProg {
    lines: Vec<Line>,
}

impl MultiProg {
    /// Parses the configuration's text; a bad line is refused with its number.
    pub fn parse(text: &str) -> Result<MultiProg, JobError> {
        let mut lines = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let bad = |why: &str| {
                JobError::invalid("--multi-prog line", &format!("{}: {raw}", n + 1), why)
            };
            let words = split(raw).map_err(&bad)?;
            let Some((ranks, words)) = words.split_first() else {
                continue;
            };
            if words.is_empty() {
                return Err(bad("RANKS PROGRAM [ARGS...]: the program is missing"));
            }
            let ranks = match ranks.as_str() {
                "*" => None,
                list => Some(
                    crate::quantity::number_ranges(list)
                        .ok_or_else(|| bad("ranks as 0, 1-3, 0,2-5 or *"))?,
                ),
            };
            lines.push(Line {
                ranks,
                words: words.to_vec(),
            });
        }
        if lines.is_empty() {
            return Err(JobError::invalid(
                "--multi-prog file",
                "(empty)",
                "a line per set of ranks: RANKS PROGRAM [ARGS...]",
            ));
        }
        Ok(MultiProg { lines })
    }

    /// The command of the task of `rank`, `%t` and `%o` replaced; `None` if no line has it.
    pub fn argv(&self, rank: u32) -> Option<Vec<String>> {
        let (line, offset) = match self.lines.iter().find(|l| named_rank(l, rank)) {
            Some(l) => (l, offset(l.ranks.as_ref().expect("named"), rank)?),
            // `*`: the ranks no line names, counted among themselves.
            None => {
                let line = self.lines.iter().find(|l| l.ranks.is_none())?;
                let before = (0..rank)
                    .filter(|r| !self.lines.iter().any(|l| named_rank(l, *r)))
                    .count();
                (line, before as u32)
            }
        };
        Some(
            line.words
                .iter()
                .map(|w| {
                    w.replace("%t", &rank.to_string())
                        .replace("%o", &offset.to_string())
                })
                .collect(),
        )
    }

    /// The first of `ntasks` ranks no line runs, if any.
    pub fn uncovered(&self, ntasks: u32) -> Option<u32> {
        (0..ntasks).find(|&r| self.argv(r).is_none())
    }
}

fn named_rank(l: &Line, rank: u32) -> bool {
    l.ranks.as_ref().is_some_and(|r| offset(r, rank).is_some())
}

/// `rank`'s position among `ranges`' ranks, if it is one of them.
fn offset(ranges: &[(u32, u32)], rank: u32) -> Option<u32> {
    let mut before = 0;
    for &(a, b) in ranges {
        if (a..=b).contains(&rank) {
            return Some(before + rank - a);
        }
        before += b - a + 1;
    }
    None
}

/// A line's words: blank-separated, quoted with ' or " (kept together, quotes removed),
/// up to a `#` outside quotes.
fn split(line: &str) -> Result<Vec<String>, &'static str> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#') => break,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed");
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_gets_its_lines_program_with_its_rank_and_offset() {
        let conf = "# MPMD: a master and workers\n0 ./master --id %t\n1-2,5 ./worker 'in %o.dat' \"x y\"\n* ./idle %t:%o # the rest\n";
        let m = MultiProg::parse(conf).unwrap();
        assert_eq!(m.argv(0).unwrap(), ["./master", "--id", "0"]);
        assert_eq!(m.argv(2).unwrap(), ["./worker", "in 1.dat", "x y"]);
        assert_eq!(m.argv(5).unwrap(), ["./worker", "in 2.dat", "x y"]);
        // 3 and 4 are the first two ranks no line names.
        assert_eq!(m.argv(3).unwrap(), ["./idle", "3:0"]);
        assert_eq!(m.argv(4).unwrap(), ["./idle", "4:1"]);
        assert_eq!(m.uncovered(8), None);
    }

    #[test]
    fn ranks_no_line_runs_and_bad_lines_are_found() {
        let m = MultiProg::parse("0-1 hostname\n").unwrap();
        assert_eq!(m.uncovered(2), None);
        assert_eq!(m.uncovered(3), Some(2));
        for bad in ["0\n", "x hostname\n", "3-1 a\n", "0 'a\n", "# only\n"] {
            assert!(MultiProg::parse(bad).is_err(), "{bad:?}");
        }
        let err = MultiProg::parse("0 a\nfoo bar\n").unwrap_err();
        assert!(err.to_string().contains("2: foo bar"), "{err}");
    }
}
