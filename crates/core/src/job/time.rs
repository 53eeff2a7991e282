//! Time limits (walltime) as the three batch systems spell them, parsed to seconds, and the
//! one display format berth prints (`D-HH:MM:SS`, as squeue does).
//!
//! berth keeps seconds; Slurm rounds a limit up to whole minutes, berth does not need to.
//! A zero limit is refused: sbatch reads `--time=0` (and `UNLIMITED`, `INFINITE`) as "no
//! limit", which berth spells by giving none (the partition's limits then apply); the
//! directive parser says so in its refusal.

use super::JobError;

/// The formats `sbatch --time` accepts, quoted in errors.
pub const SLURM_TIME_FORMATS: &str = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS";
const LSF_TIME_FORMATS: &str = "[HH:]MM, e.g. 90 or 1:30";
const PBS_TIME_FORMATS: &str = "SS, MM:SS, HH:MM:SS or DD:HH:MM:SS";

fn invalid(value: &str, expected: &str) -> JobError {
    JobError::invalid("time limit", value, expected)
}

/// Parses colon-separated unsigned fields; the first may be any size (sbatch takes
/// `--time=90` and `--time=120:00`), the others must be below `60`.
fn fields(text: &str, max_fields: usize) -> Option<Vec<u64>> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > max_fields {
        return None;
    }
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: u64 = p.parse().ok()?;
        if i > 0 && v >= 60 {
            return None;
        }
        out.push(v);
    }
    Some(out)
}

fn positive(secs: Option<u64>, value: &str, expected: &str) -> Result<u64, JobError> {
    match secs {
        Some(s) if s > 0 => Ok(s),
        _ => Err(invalid(value, expected)),
    }
}

/// Parses `sbatch --time`: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`.
pub fn parse_slurm_time(text: &str) -> Result<u64, JobError> {
    let t = text.trim();
    let secs = if let Some((days, rest)) = t.split_once('-') {
        // With a day count the fields are hours, minutes, seconds (as sbatch reads them).
        let d = fields(days, 1).and_then(|d| d.first().copied());
        let f = fields(rest, 3).filter(|f| f.first().is_some_and(|h| *h < 24));
        match (d, f) {
            (Some(d), Some(f)) => {
                let (h, m, s) = (f[0], f.get(1).copied().unwrap_or(0), f.get(2).copied());
                d.checked_mul(86_400)
                    .and_then(|d| d.checked_add(h * 3600 + m * 60 + s.unwrap_or(0)))
            }
            _ => None,
        }
    } else {
        match fields(t, 3).as_deref() {
            Some([m]) => m.checked_mul(60),
            Some([m, s]) => m.checked_mul(60).and_then(|m| m.checked_add(*s)),
            Some([h, m, s]) => h.checked_mul(3600).and_then(|h| h.checked_add(m * 60 + s)),
            _ => None,
        }
    };
    positive(secs, text, SLURM_TIME_FORMATS)
}

/// Parses `bsub -W [HH:]MM`: a bare number is minutes (`-W 90` is 1h30, as is `-W 1:30`).
/// The `/host_name` normalisation suffix LSF allows is refused: berth's nodes are not scaled.
pub fn parse_lsf_time(text: &str) -> Result<u64, JobError> {
    let secs = match fields(text.trim(), 2).as_deref() {
        Some([m]) => m.checked_mul(60),
        Some([h, m]) => h.checked_mul(3600).and_then(|h| h.checked_add(m * 60)),
        _ => None,
    };
    positive(secs, text, LSF_TIME_FORMATS)
}

/// Parses PBS `-l walltime=`: `[[[DD:]HH:]MM:]SS`, so a bare number is seconds, as qsub
/// reads it (Torque also takes the leading day field).
pub fn parse_pbs_time(text: &str) -> Result<u64, JobError> {
    let secs = fields(text.trim(), 4).and_then(|f| {
        let weights = [86_400u64, 3600, 60, 1];
        let mut total = 0u64;
        for (v, w) in f.iter().zip(&weights[4 - f.len()..]) {
            total = total.checked_add(v.checked_mul(*w)?)?;
        }
        Some(total)
    });
    // Only the leading field may exceed its unit, except that hours below a day field must
    // stay below 24.
    let secs = secs.filter(|_| {
        let f: Vec<&str> = text.trim().split(':').collect();
        f.len() < 4 || f[1].parse::<u64>().is_ok_and(|h| h < 24)
    });
    positive(secs, text, PBS_TIME_FORMATS)
}

/// Formats seconds the way squeue prints a time limit: `HH:MM:SS`, or `D-HH:MM:SS` from one
/// day on. `parse_slurm_time` reads the result back.
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_formats() {
        assert_eq!(parse_slurm_time("30"), Ok(1800));
        assert_eq!(parse_slurm_time("90"), Ok(5400));
        assert_eq!(parse_slurm_time("5:30"), Ok(330));
        assert_eq!(parse_slurm_time("120:00"), Ok(7200));
        assert_eq!(parse_slurm_time("01:02:03"), Ok(3723));
        assert_eq!(parse_slurm_time("48:00:00"), Ok(172_800));
        assert_eq!(parse_slurm_time("2-12"), Ok(2 * 86_400 + 12 * 3600));
        assert_eq!(parse_slurm_time("1-02:30"), Ok(86_400 + 9000));
        assert_eq!(parse_slurm_time("1-00:00:01"), Ok(86_401));
        for bad in [
            "",
            "abc",
            "1:2:3:4",
            "1:60",
            "1-24",
            "1-",
            "-5",
            "1:-2",
            "0",
            "00:00:00",
            "1.5",
            "1-2:3:4:5",
            " : ",
        ] {
            let err = parse_slurm_time(bad).unwrap_err().to_string();
            assert!(err.contains(SLURM_TIME_FORMATS), "{bad}: {err}");
        }
        assert_eq!(
            parse_slurm_time("abc").unwrap_err().to_string(),
            "invalid time limit 'abc': expected MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
        );
    }

    #[test]
    fn lsf_formats() {
        assert_eq!(parse_lsf_time("90"), Ok(5400));
        assert_eq!(parse_lsf_time("1:30"), Ok(5400));
        assert_eq!(parse_lsf_time("00:05"), Ok(300));
        assert!(parse_lsf_time("1:30:00").is_err());
        assert!(parse_lsf_time("1:30/hostA").is_err());
        assert!(parse_lsf_time("0").is_err());
    }

    #[test]
    fn pbs_formats() {
        assert_eq!(parse_pbs_time("3600"), Ok(3600));
        assert_eq!(parse_pbs_time("10:00"), Ok(600));
        assert_eq!(parse_pbs_time("01:00:00"), Ok(3600));
        assert_eq!(parse_pbs_time("100:00:00"), Ok(360_000));
        assert_eq!(parse_pbs_time("2:01:00:00"), Ok(2 * 86_400 + 3600));
        assert!(parse_pbs_time("2:24:00:00").is_err());
        assert!(parse_pbs_time("1:00:00:00:00").is_err());
        assert!(parse_pbs_time("1h").is_err());
    }

    #[test]
    fn format_round_trips() {
        assert_eq!(format_duration(300), "00:05:00");
        assert_eq!(format_duration(86_400 + 3723), "1-01:02:03");
        for secs in [1, 59, 3600, 86_399, 86_400, 1_000_000] {
            assert_eq!(parse_slurm_time(&format_duration(secs)), Ok(secs));
        }
    }
}
