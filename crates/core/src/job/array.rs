//! Job arrays: the index list and the limit on elements running at once.
//!
//! One syntax serves all families, because they agree: `1-100`, `1-100%10`, `1,3,5-7`,
//! `0-15:4` (Slurm `--array`, PBS Pro `-J`, Torque `-t`, and the bracket in LSF's
//! `-J "name[1-100:2]%5"`). Overlapping ranges are allowed and count once, as sbatch's
//! bitmap does.

use super::JobError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest array berth accepts (Slurm's MaxArraySize is far lower by default; LSF's
/// MAX_JOB_ARRAY_SIZE tops out at 2147483646). Beyond this a job array is a mistake.
pub const MAX_ARRAY_LEN: u64 = 1_000_000;

const EXPECTED: &str =
    "INDEX, START-END or START-END:STEP, comma-separated, optionally followed by %MAX_RUNNING, e.g. 1-100%10 or 1,3,5-7";

/// See [`ArraySpec::shape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub count: usize,
    pub min: Option<u32>,
    pub max: Option<u32>,
    /// `None`: the indices are not evenly spaced.
    pub step: Option<u32>,
}

/// `start..=end` in steps of `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayRange {
    pub start: u32,
    pub end: u32,
    pub step: u32,
}

impl ArrayRange {
    /// Number of indices in the range.
    pub fn len(&self) -> u64 {
        if self.step == 0 || self.end < self.start {
            return 0;
        }
        u64::from((self.end - self.start) / self.step) + 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArraySpec {
    pub ranges: Vec<ArrayRange>,
    /// `%N`: at most N elements run at the same time.
    pub max_running: Option<u32>,
}

fn invalid(value: &str, expected: &str) -> JobError {
    JobError::invalid("array", value, expected)
}

impl ArraySpec {
    /// Parses `LIST[%MAX]`.
    pub fn parse(text: &str) -> Result<ArraySpec, JobError> {
        let (list, max) = match text.trim().split_once('%') {
            Some((list, max)) => (list, Some(max)),
            None => (text.trim(), None),
        };
        let max_running = match max {
            None => None,
            Some(m) => match m.parse::<u32>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(invalid(text, "a positive number after %")),
            },
        };
        let num = |s: &str| -> Result<u32, JobError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(text, EXPECTED));
            }
            s.parse()
                .map_err(|_| invalid(text, "indices below 4294967296"))
        };
        let mut ranges = Vec::new();
        for item in list.split(',') {
            let (span, step) = match item.split_once(':') {
                Some((span, step)) => (span, Some(num(step)?)),
                None => (item, None),
            };
            let (start, end) = match span.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if step.is_none() => {
                    let i = num(span)?;
                    (i, i)
                }
                None => return Err(invalid(text, "a step only after a range, as in 0-15:4")),
            };
            ranges.push(ArrayRange {
                start,
                end,
                step: step.unwrap_or(1),
            });
        }
        let spec = ArraySpec {
            ranges,
            max_running,
        };
        spec.validate().map_err(|why| invalid(text, why))?;
        Ok(spec)
    }

    /// Checks what `parse` checks, for specs built in code or deserialised.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.ranges.is_empty() {
            return Err("at least one index");
        }
        if self.ranges.iter().any(|r| r.step == 0) {
            return Err("a step of at least 1");
        }
        if self.ranges.iter().any(|r| r.end < r.start) {
            return Err("ranges that go up (START-END with START <= END)");
        }
        if self.ranges.iter().map(ArrayRange::len).sum::<u64>() > MAX_ARRAY_LEN {
            return Err("at most 1000000 elements");
        }
        if self.max_running == Some(0) {
            return Err("a positive number after %");
        }
        Ok(())
    }

    /// The indices, ascending, each once.
    pub fn indices(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .ranges
            .iter()
            .filter(|r| r.step > 0)
            .flat_map(|r| (r.start..=r.end).step_by(r.step as usize))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Where `index` comes among the indices (its task's id is the array's plus this), if
    /// it is one.
    pub fn position(&self, index: u32) -> Option<usize> {
        match self.ranges.as_slice() {
            [one] if one.step > 0 => (one.start..=one.end)
                .contains(&index)
                .then(|| index - one.start)
                .filter(|offset| offset % one.step == 0)
                .map(|offset| (offset / one.step) as usize),
            _ => self.indices().binary_search(&index).ok(),
        }
    }

    /// Number of distinct elements.
    pub fn len(&self) -> usize {
        match self.ranges.as_slice() {
            [one] => one.len() as usize,
            _ => self.indices().len(),
        }
    }

    /// How many indices, the least and greatest, and the step between consecutive ones
    /// where it is the same throughout (what SLURM_ARRAY_TASK_COUNT, _MIN, _MAX and _STEP
    /// say). Without listing them where there is one range: each task's start asks.
    pub fn shape(&self) -> Shape {
        if let [one] = self.ranges.as_slice() {
            let count = one.len();
            if count > 0 {
                let max = one.start + (count as u32 - 1) * one.step;
                let step = if count > 1 { one.step } else { 1 };
                return Shape {
                    count: count as usize,
                    min: Some(one.start),
                    max: Some(max),
                    step: Some(step),
                };
            }
        }
        let indices = self.indices();
        let steps: Vec<u32> = indices.windows(2).map(|w| w[1] - w[0]).collect();
        Shape {
            count: indices.len(),
            min: indices.first().copied(),
            max: indices.last().copied(),
            step: match steps.first() {
                None => Some(1),
                Some(&step) if steps.iter().all(|&s| s == step) => Some(step),
                Some(_) => None,
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.iter().all(ArrayRange::is_empty)
    }

    /// The step LSF reports in `LSB_JOBINDEX_STEP`: the step of a single range, else 1.
    pub fn step(&self) -> u32 {
        match self.ranges.as_slice() {
            [one] => one.step,
            _ => 1,
        }
    }
}

/// Prints the spec back in the syntax it was parsed from (`1-9:2,12%3`).
impl fmt::Display for ArraySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match (r.start == r.end, r.step) {
                (true, _) => write!(f, "{}", r.start)?,
                (false, 1) => write!(f, "{}-{}", r.start, r.end)?,
                (false, s) => write!(f, "{}-{}:{s}", r.start, r.end)?,
            }
        }
        if let Some(m) = self.max_running {
            write!(f, "%{m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arrays_shape_is_that_of_its_indices() {
        for (spec, count, min, max, step) in [
            ("1-100000", 100000, 1, 100000, Some(1)),
            ("0-15:4", 4, 0, 12, Some(4)),
            ("7", 1, 7, 7, Some(1)),
            ("1-9:2%3", 5, 1, 9, Some(2)),
            ("1,3,5-7", 5, 1, 7, None),
            ("1-10:3,4,7", 4, 1, 10, Some(3)),
            ("5,1-3", 4, 1, 5, None),
        ] {
            let a = ArraySpec::parse(spec).unwrap();
            let shape = a.shape();
            assert_eq!(
                (shape.count, shape.min, shape.max, shape.step),
                (count, Some(min), Some(max), step),
                "{spec}"
            );
            assert_eq!(a.len(), a.indices().len(), "{spec}");
            // Each index's position is its task's place among the array's ids.
            for (n, index) in a.indices().into_iter().enumerate().take(100) {
                assert_eq!(a.position(index), Some(n), "{spec}: {index}");
            }
            assert_eq!(a.position(max + 1), None, "{spec}");
        }
        assert_eq!(ArraySpec::parse("0-15:4").unwrap().position(5), None);
        assert_eq!(ArraySpec::parse("3-9").unwrap().position(2), None);
        assert_eq!(ArraySpec::parse("1,3,5-7").unwrap().position(4), None);
    }

    #[test]
    fn specs() {
        let a = ArraySpec::parse("1-100%10").unwrap();
        assert_eq!(a.len(), 100);
        assert_eq!(a.max_running, Some(10));
        assert_eq!(a.to_string(), "1-100%10");

        let a = ArraySpec::parse("1,3,5-7").unwrap();
        assert_eq!(a.indices(), vec![1, 3, 5, 6, 7]);
        assert_eq!(a.step(), 1);

        let a = ArraySpec::parse("0-15:4").unwrap();
        assert_eq!(a.indices(), vec![0, 4, 8, 12]);
        assert_eq!(a.step(), 4);
        assert_eq!(a.to_string(), "0-15:4");

        // Overlaps count once, as in sbatch's bitmap.
        assert_eq!(ArraySpec::parse("1-5,3-7").unwrap().len(), 7);
        assert_eq!(ArraySpec::parse("0-999999").unwrap().len(), 1_000_000);
    }

    #[test]
    fn bad_specs() {
        for (bad, why) in [
            ("", "expected INDEX"),
            ("10-1", "ranges that go up"),
            ("1-10:0", "step of at least 1"),
            ("0-1000000", "at most 1000000"),
            ("1-10%0", "positive number after %"),
            ("1-10%x", "positive number after %"),
            ("a-b", "expected INDEX"),
            ("1-", "expected INDEX"),
            ("5:2", "a step only after a range"),
            ("-3", "expected INDEX"),
            ("1,,2", "expected INDEX"),
            ("99999999999", "indices below"),
        ] {
            let err = ArraySpec::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid array '{bad}'")), "{err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
