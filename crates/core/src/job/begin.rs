//! When a job may start at the earliest (`sbatch --begin`, `bsub -b`, `qsub -a`), as typed,
//! and resolved to a point in time once the submission's time and time zone are known.
//!
//! A wall-clock time names the controller's local time (sbatch reads the submitter's; on a
//! cluster the two agree), at the UTC offset in force then: `08:00` after a daylight-saving
//! change is 08:00 of the new offset. The date parts not given take the next occurrence:
//! `16:00` is today if that is still ahead, else tomorrow; `12/24` this year or next.

use super::JobError;
use serde::{Deserialize, Serialize};

/// The formats `sbatch --begin` accepts, quoted in errors.
const SLURM_FORMATS: &str =
    "HH:MM[:SS][AM|PM], MMDD[YY][-HH:MM[:SS]], MM/DD[/YY][-HH:MM[:SS]], MM.DD[.YY][-HH:MM[:SS]], \
     YYYY-MM-DD[THH:MM[:SS]], now[+COUNT[seconds|minutes|hours|days|weeks]], midnight, noon, \
     fika, teatime, today or tomorrow";
/// The formats sacct's `--starttime` and `--endtime` accept, quoted in errors.
const REPORT_FORMATS: &str =
    "HH:MM[:SS][AM|PM], MMDD[YY][-HH:MM[:SS]], MM/DD[/YY][-HH:MM[:SS]], MM.DD[.YY][-HH:MM[:SS]], \
     YYYY-MM-DD[THH:MM[:SS]], now[{+|-}COUNT[seconds|minutes|hours|days|weeks]], midnight, \
     noon, fika, teatime or today";
const LSF_FORMATS: &str = "[[YEAR:][MONTH:]DAY:]HOUR:MINUTE";
const PBS_FORMATS: &str = "[[[[CC]YY]MM]DD]hhmm[.SS]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeginTime {
    /// `now+COUNT`: seconds after the submission.
    AfterSubmit(u64),
    /// `today` (0) or `tomorrow` (1): the start of that local day.
    Day(u32),
    /// A local wall-clock time; the date parts not given take its next occurrence.
    At {
        year: Option<i32>,
        month: Option<u32>,
        day: Option<u32>,
        hour: u32,
        minute: u32,
        second: u32,
    },
}

impl BeginTime {
    /// The Unix time this names, for a submission at `now` (Unix seconds) where local time
    /// is `utc_offset` seconds ahead of UTC, at every time.
    pub fn resolve(self, now: u64, utc_offset: i64) -> u64 {
        self.resolve_in(now, |_| utc_offset)
    }

    /// The Unix time this names, for a submission at `now`, in a time zone whose local time
    /// at Unix time `t` is `utc_offset(t)` seconds ahead of UTC (localtime(3)'s tm_gmtoff):
    /// a wall-clock time takes the offset in force at it, across a daylight-saving change
    /// too. A wall-clock time the change skips (02:30 when clocks go from 02:00 to 03:00)
    /// is taken at the offset before it, as mktime(3) does.
    pub fn resolve_in(self, now: u64, utc_offset: impl Fn(u64) -> i64) -> u64 {
        self.resolve_toward(now, utc_offset, false)
    }

    /// As [`BeginTime::resolve_in`], but the date parts not given take the latest
    /// occurrence at or before `now` (a report's window, as sacct's `--starttime` takes
    /// it): `08:00` is today once it has passed, else yesterday.
    pub fn resolve_past_in(self, now: u64, utc_offset: impl Fn(u64) -> i64) -> u64 {
        self.resolve_toward(now, utc_offset, true)
    }

    fn resolve_toward(self, now: u64, utc_offset: impl Fn(u64) -> i64, past: bool) -> u64 {
        let offset_now = utc_offset(now);
        let Some(local) = self.local(now as i64 + offset_now, past) else {
            return match self {
                BeginTime::AfterSubmit(secs) => now.saturating_add(secs),
                _ => unreachable!("only a delay has no wall-clock time"),
            };
        };
        let at = |offset: i64| u64::try_from(local - offset).unwrap_or(0);
        let offset = utc_offset(at(offset_now));
        let t = at(offset);
        match utc_offset(t) {
            // The offset at the time found is the one it was found with.
            o if o == offset => t,
            // In the hour a change skips: neither offset holds; the one before it does.
            before => at(before),
        }
    }

    /// The local wall-clock time (seconds since the epoch of local days) this names, seen
    /// from the local time `local_now`, the date parts not given taken from its next
    /// occurrence (or, `past`, its latest); `None` for a delay after the submission.
    fn local(self, local_now: i64, past: bool) -> Option<i64> {
        let (today, _) = split_day(local_now);
        Some(match self {
            BeginTime::AfterSubmit(_) => return None,
            BeginTime::Day(after) => (today + i64::from(after)) * 86_400,
            BeginTime::At {
                year,
                month,
                day,
                hour,
                minute,
                second,
            } => {
                let (y0, m0, d0) = civil_from_days(today);
                let sod = i64::from(hour * 3600 + minute * 60 + second);
                let at = |y: i64, m: u32, d: u32| days_from_civil(y, m, d) * 86_400 + sod;
                // Whether `t` lies on the wrong side of now: one period more (or less) then.
                let wrong = |t: i64| if past { t > local_now } else { t < local_now };
                let step: i32 = if past { -1 } else { 1 };
                match (year, month, day) {
                    (Some(y), Some(m), Some(d)) => at(i64::from(y), m, d),
                    (None, Some(m), Some(d)) => {
                        let t = at(y0, m, d);
                        if wrong(t) {
                            at(y0 + i64::from(step), m, d)
                        } else {
                            t
                        }
                    }
                    (_, _, Some(d)) => {
                        let t = at(y0, m0, d);
                        if !wrong(t) {
                            return Some(t);
                        }
                        // The month before or after, across a year's end.
                        let months = y0 * 12 + i64::from(m0) - 1 + i64::from(step);
                        at(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, d)
                    }
                    _ => {
                        let t = at(y0, m0, d0);
                        if wrong(t) {
                            t + i64::from(step) * 86_400
                        } else {
                            t
                        }
                    }
                }
            }
        })
    }
}

fn split_day(t: i64) -> (i64, i64) {
    (t.div_euclid(86_400), t.rem_euclid(86_400))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm); a day
/// past its month's end rolls into the next month, as mktime(3) rolls it.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A two-digit year is this century's, as sbatch reads it.
fn year(s: &str) -> Option<i32> {
    let y: i32 = number(s)?;
    match s.len() {
        2 => Some(2000 + y),
        4 => Some(y),
        _ => None,
    }
}

fn date(month: u32, day: u32) -> Option<(u32, u32)> {
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some((month, day))
}

/// A wall-clock time, if every part given is in its range.
fn checked(
    year: Option<i32>,
    month: Option<u32>,
    day: Option<u32>,
    (hour, minute, second): (u32, u32, u32),
) -> Option<BeginTime> {
    let ok = month.is_none_or(|m| (1..=12).contains(&m))
        && day.is_none_or(|d| (1..=31).contains(&d))
        && hour < 24
        && minute < 60
        && second < 60;
    ok.then_some(BeginTime::At {
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

fn at(date: Option<(Option<i32>, u32, u32)>, (hour, minute, second): (u32, u32, u32)) -> BeginTime {
    BeginTime::At {
        year: date.and_then(|d| d.0),
        month: date.map(|d| d.1),
        day: date.map(|d| d.2),
        hour,
        minute,
        second,
    }
}

/// `HH:MM[:SS]` with an optional `AM`/`PM`.
fn clock(s: &str) -> Option<(u32, u32, u32)> {
    let lower = s.to_ascii_lowercase();
    let (s, half) = match (lower.strip_suffix("am"), lower.strip_suffix("pm")) {
        (Some(t), _) => (t.trim_end().to_string(), Some(0)),
        (_, Some(t)) => (t.trim_end().to_string(), Some(12)),
        _ => (lower, None),
    };
    let parts: Vec<&str> = s.split(':').collect();
    let (h, m, sec) = match parts[..] {
        [h, m] => (number(h)?, number(m)?, 0),
        [h, m, sec] => (number(h)?, number(m)?, number(sec)?),
        _ => return None,
    };
    let h = match half {
        None if h < 24 => h,
        Some(add) if (1..=12).contains(&h) => h % 12 + add,
        _ => return None,
    };
    (m < 60 && sec < 60).then_some((h, m, sec))
}

/// `MMDD[YY]`, `MM/DD[/YY]`, `MM.DD[.YY]`, `YYYY-MM-DD`.
fn calendar(s: &str) -> Option<(Option<i32>, u32, u32)> {
    let split = |sep: char| s.split(sep).collect::<Vec<_>>();
    let (dash, slash, dot) = (split('-'), split('/'), split('.'));
    let (y, m, d) = match (&dash[..], &slash[..], &dot[..]) {
        ([y, m, d], _, _) if y.len() == 4 => (Some(*y), *m, *d),
        (_, [m, d], _) | (_, _, [m, d]) => (None, *m, *d),
        (_, [m, d, y], _) | (_, _, [m, d, y]) => (Some(*y), *m, *d),
        _ if number::<u32>(s).is_some() && matches!(s.len(), 4 | 6) => {
            (s.get(4..).filter(|y| !y.is_empty()), &s[..2], &s[2..4])
        }
        _ => return None,
    };
    let (m, d) = date(number(m)?, number(d)?)?;
    let y = match y {
        Some(y) => Some(year(y)?),
        None => None,
    };
    Some((y, m, d))
}

/// `now[+COUNT[UNIT]]`, the unit a prefix of seconds, minutes, hours, days or weeks
/// (seconds when none is given).
fn relative(s: &str) -> Option<u64> {
    let rest = s.strip_prefix("now")?;
    if rest.is_empty() {
        return Some(0);
    }
    count_of_units(rest.strip_prefix('+')?)
}

/// `COUNT[UNIT]` (see [`unit_seconds`]) in seconds.
fn count_of_units(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let count: u64 = number(&text[..split])?;
    count.checked_mul(unit_seconds(&text[split..])?)
}

/// The seconds in a time unit as Slurm's relative times name it: none (seconds), or a
/// prefix of seconds, minutes, hours, days or weeks, also with a plural `s` (`min`, `mins`,
/// `h`, `days`).
pub fn unit_seconds(unit: &str) -> Option<u64> {
    let units = [
        ("seconds", 1),
        ("minutes", 60),
        ("hours", 3600),
        ("days", 86_400),
        ("weeks", 604_800),
    ];
    let singular = unit.strip_suffix('s').filter(|u| !u.is_empty());
    units
        .iter()
        .find(|(name, _)| {
            unit.is_empty()
                || name.starts_with(unit)
                || singular.is_some_and(|u| name.starts_with(u))
        })
        .map(|(_, seconds)| *seconds)
}

/// Parses `sbatch --begin`.
pub fn parse_slurm_begin(text: &str) -> Result<BeginTime, JobError> {
    parse_slurm_time_of_day("begin time", text, SLURM_FORMATS)
}

/// sbatch's `--deadline`, in `--begin`'s forms.
pub fn parse_slurm_deadline(text: &str) -> Result<BeginTime, JobError> {
    parse_slurm_time_of_day("deadline", text, SLURM_FORMATS)
}

/// A report's bound as sacct's `--starttime` and `--endtime` take it, in Unix seconds, at
/// `now` where local time at Unix time `t` is `utc_offset(t)` seconds ahead of UTC:
/// `--begin`'s forms, also `now-COUNT[UNIT]`, the date parts not given taken from the
/// latest occurrence (`08:00` is today once it has passed, else yesterday; `midnight`
/// is today's start).
pub fn slurm_report_time(
    text: &str,
    now: u64,
    utc_offset: impl Fn(u64) -> i64,
) -> Result<u64, JobError> {
    let lower = text.trim().to_ascii_lowercase();
    if let Some(ago) = lower.strip_prefix("now-") {
        let seconds =
            count_of_units(ago).ok_or_else(|| JobError::invalid("time", text, REPORT_FORMATS))?;
        return Ok(now.saturating_sub(seconds));
    }
    let time = parse_slurm_time_of_day("time", text, REPORT_FORMATS)?;
    Ok(time.resolve_past_in(now, utc_offset))
}

/// A point in time as sbatch's `--begin` and `--deadline` take it; `what` names it in
/// errors, with `formats`.
fn parse_slurm_time_of_day(
    what: &'static str,
    text: &str,
    formats: &'static str,
) -> Result<BeginTime, JobError> {
    let bad = || JobError::invalid(what, text, formats);
    let s = text.trim().to_ascii_lowercase();
    let named = match s.as_str() {
        "today" => Some(BeginTime::Day(0)),
        "tomorrow" => Some(BeginTime::Day(1)),
        "midnight" => Some(at(None, (0, 0, 0))),
        "noon" => Some(at(None, (12, 0, 0))),
        "fika" => Some(at(None, (15, 0, 0))),
        "teatime" => Some(at(None, (16, 0, 0))),
        _ => None,
    };
    if let Some(b) = named {
        return Ok(b);
    }
    if s.starts_with("now") {
        return relative(&s).map(BeginTime::AfterSubmit).ok_or_else(bad);
    }
    if let Some((d, t)) = s.split_once('t') {
        let date = calendar(d).filter(|d| d.0.is_some()).ok_or_else(bad)?;
        return Ok(at(Some(date), clock(t).ok_or_else(bad)?));
    }
    // A date with its time after a dash (`12/24/26-08:00`, `1224-08:00`).
    if let Some((d, t)) = s.rsplit_once('-').filter(|(_, t)| t.contains(':')) {
        let date = calendar(d).ok_or_else(bad)?;
        return Ok(at(Some(date), clock(t).ok_or_else(bad)?));
    }
    if s.contains(':') {
        return clock(&s).map(|c| at(None, c)).ok_or_else(bad);
    }
    calendar(&s).map(|d| at(Some(d), (0, 0, 0))).ok_or_else(bad)
}

/// Parses `bsub -b [[YEAR:][MONTH:]DAY:]HOUR:MINUTE`.
pub fn parse_lsf_begin(text: &str) -> Result<BeginTime, JobError> {
    let bad = || JobError::invalid("begin time", text, LSF_FORMATS);
    let parts: Vec<&str> = text.trim().split(':').collect();
    let n = parts.len();
    if !(2..=5).contains(&n) {
        return Err(bad());
    }
    let num = |k: usize| number::<u32>(parts[k]).ok_or_else(bad);
    let field = |k: Option<usize>| k.map(num).transpose();
    let year = match n {
        5 => Some(
            year(parts[0])
                .filter(|_| parts[0].len() == 4)
                .ok_or_else(bad)?,
        ),
        _ => None,
    };
    let (month, day) = (field(n.checked_sub(4))?, field(n.checked_sub(3))?);
    checked(year, month, day, (num(n - 2)?, num(n - 1)?, 0)).ok_or_else(bad)
}

/// Parses `qsub -a [[[[CC]YY]MM]DD]hhmm[.SS]`.
pub fn parse_pbs_begin(text: &str) -> Result<BeginTime, JobError> {
    let bad = || JobError::invalid("begin time", text, PBS_FORMATS);
    let t = text.trim();
    let (digits, second) = match t.split_once('.') {
        Some((d, s)) if s.len() == 2 => (d, number::<u32>(s).filter(|s| *s < 60).ok_or_else(bad)?),
        Some(_) => return Err(bad()),
        None => (t, 0),
    };
    if number::<u64>(digits).is_none() || !matches!(digits.len(), 4 | 6 | 8 | 10 | 12) {
        return Err(bad());
    }
    let two = |end: usize| -> u32 { digits[end - 2..end].parse().unwrap_or(99) };
    let n = digits.len();
    let year = match n {
        10 => Some(2000 + two(2) as i32),
        12 => Some(digits[..4].parse().map_err(|_| bad())?),
        _ => None,
    };
    let month = (n >= 8).then(|| two(n - 6));
    let day = (n >= 6).then(|| two(n - 4));
    checked(year, month, day, (two(n - 2), two(n), second)).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-03 10:30:00 UTC.
    const NOW: u64 = 1_796_293_800;

    fn utc(y: i64, m: u32, d: u32, h: u64, mi: u64, s: u64) -> u64 {
        days_from_civil(y, m, d) as u64 * 86_400 + h * 3600 + mi * 60 + s
    }

    fn slurm(s: &str) -> u64 {
        parse_slurm_begin(s).unwrap().resolve(NOW, 0)
    }

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(utc(2026, 12, 3, 10, 30, 0), NOW);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        for z in [-1, 0, 59, 365, 11_016, 20_790, 100_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn a_day_alone_rolls_over_a_years_end_both_ways() {
        // LSF's DAY:HOUR:MINUTE on 2026-12-03 and on 2027-01-02.
        let day = parse_lsf_begin("20:09:00").unwrap();
        assert_eq!(day.resolve(NOW, 0), utc(2026, 12, 20, 9, 0, 0));
        assert_eq!(day.resolve_past_in(NOW, |_| 0), utc(2026, 11, 20, 9, 0, 0));
        let day = parse_lsf_begin("01:09:00").unwrap();
        assert_eq!(day.resolve(NOW, 0), utc(2027, 1, 1, 9, 0, 0));
        let january = utc(2027, 1, 2, 0, 0, 0);
        let day = parse_lsf_begin("20:09:00").unwrap();
        assert_eq!(
            day.resolve_past_in(january, |_| 0),
            utc(2026, 12, 20, 9, 0, 0)
        );
    }

    #[test]
    fn report_times_take_the_latest_occurrence() {
        let report = |s: &str| slurm_report_time(s, NOW, |_| 0).unwrap();
        assert_eq!(report("now"), NOW);
        assert_eq!(report("now-90"), NOW - 90);
        assert_eq!(report("now-2hours"), NOW - 7200);
        assert_eq!(report("NOW-1week"), NOW - 604_800);
        assert_eq!(report("now+60"), NOW + 60);
        // A time of day: today once it has passed, else yesterday.
        assert_eq!(report("08:00"), utc(2026, 12, 3, 8, 0, 0));
        assert_eq!(report("10:30"), NOW);
        assert_eq!(report("4:00PM"), utc(2026, 12, 2, 16, 0, 0));
        assert_eq!(report("midnight"), utc(2026, 12, 3, 0, 0, 0));
        assert_eq!(report("today"), utc(2026, 12, 3, 0, 0, 0));
        assert_eq!(report("noon"), utc(2026, 12, 2, 12, 0, 0));
        // Dates: this year once passed, else last.
        assert_eq!(report("12/01"), utc(2026, 12, 1, 0, 0, 0));
        assert_eq!(report("1224"), utc(2025, 12, 24, 0, 0, 0));
        assert_eq!(report("12.24.26"), utc(2026, 12, 24, 0, 0, 0));
        assert_eq!(report("2026-11-30T23:59:59"), utc(2026, 11, 30, 23, 59, 59));
        // A date with its time after a dash (`date +%D-%R`).
        assert_eq!(report("12/01/26-05:50"), utc(2026, 12, 1, 5, 50, 0));
        assert_eq!(report("1201-05:50:30"), utc(2026, 12, 1, 5, 50, 30));
        assert_eq!(report("12.01.26-23:00"), utc(2026, 12, 1, 23, 0, 0));
        // In a zone ahead of UTC: 08:00 local is 07:00 UTC.
        assert_eq!(
            slurm_report_time("08:00", NOW, |_| 3600).unwrap(),
            utc(2026, 12, 3, 7, 0, 0)
        );
        for bad in ["soon", "now-", "now-3fortnights", "2026-13-01", "25:00"] {
            let e = slurm_report_time(bad, NOW, |_| 0).unwrap_err().to_string();
            assert!(e.contains("now[{+|-}COUNT"), "{bad}: {e}");
        }
    }

    #[test]
    fn slurm_forms() {
        assert_eq!(slurm("now"), NOW);
        assert_eq!(slurm("now+60"), NOW + 60);
        assert_eq!(slurm("now+1hour"), NOW + 3600);
        assert_eq!(slurm("now+2min"), NOW + 120);
        assert_eq!(slurm("NOW+1days"), NOW + 86_400);
        assert_eq!(slurm("now+1w"), NOW + 604_800);
        // A time of day: today while it is ahead, else tomorrow.
        assert_eq!(slurm("16:00"), utc(2026, 12, 3, 16, 0, 0));
        assert_eq!(slurm("4:00PM"), utc(2026, 12, 3, 16, 0, 0));
        assert_eq!(slurm("10:29:59"), utc(2026, 12, 4, 10, 29, 59));
        assert_eq!(slurm("12:15am"), utc(2026, 12, 4, 0, 15, 0));
        assert_eq!(slurm("noon"), utc(2026, 12, 3, 12, 0, 0));
        assert_eq!(slurm("midnight"), utc(2026, 12, 4, 0, 0, 0));
        assert_eq!(slurm("teatime"), utc(2026, 12, 3, 16, 0, 0));
        assert_eq!(slurm("today"), utc(2026, 12, 3, 0, 0, 0));
        assert_eq!(slurm("tomorrow"), utc(2026, 12, 4, 0, 0, 0));
        // Dates: this year while ahead, else next.
        assert_eq!(slurm("12/24"), utc(2026, 12, 24, 0, 0, 0));
        assert_eq!(slurm("1224"), utc(2026, 12, 24, 0, 0, 0));
        assert_eq!(slurm("01.15"), utc(2027, 1, 15, 0, 0, 0));
        assert_eq!(slurm("011527"), utc(2027, 1, 15, 0, 0, 0));
        assert_eq!(slurm("12/08/26-05:50"), utc(2026, 12, 8, 5, 50, 0));
        assert_eq!(slurm("1208-10:00"), utc(2026, 12, 8, 10, 0, 0));
        assert_eq!(slurm("1/15/28"), utc(2028, 1, 15, 0, 0, 0));
        assert_eq!(slurm("2027-03-01"), utc(2027, 3, 1, 0, 0, 0));
        assert_eq!(slurm("2027-03-01T08:05"), utc(2027, 3, 1, 8, 5, 0));
        assert_eq!(slurm("2027-03-01T08:05:09"), utc(2027, 3, 1, 8, 5, 9));
        // A date in the past is kept: the job may start at once.
        assert_eq!(slurm("2020-01-01"), utc(2020, 1, 1, 0, 0, 0));
        // Local time one hour ahead of UTC: 16:00 local is 15:00 UTC.
        let b = parse_slurm_begin("16:00").unwrap();
        assert_eq!(b.resolve(NOW, 3600), utc(2026, 12, 3, 15, 0, 0));
        // Across a daylight-saving change (Central Europe, 2027-03-28 01:00 UTC: local time
        // from UTC+1 to UTC+2), a wall-clock time takes the offset in force at it.
        let change = utc(2027, 3, 28, 1, 0, 0);
        let cet = |t: u64| if t < change { 3600 } else { 7200 };
        let at = |s: &str| parse_slurm_begin(s).unwrap().resolve_in(NOW, cet);
        assert_eq!(at("2027-03-29T08:00"), utc(2027, 3, 29, 6, 0, 0));
        assert_eq!(at("2027-03-27T08:00"), utc(2027, 3, 27, 7, 0, 0));
        // 02:30 that day does not exist: taken at the offset before (03:30 local after).
        assert_eq!(at("2027-03-28T02:30"), utc(2027, 3, 28, 1, 30, 0));
        // And back in the autumn (2027-10-31 01:00 UTC: UTC+2 to UTC+1).
        let back = utc(2027, 10, 31, 1, 0, 0);
        let summer = |t: u64| if t < back { 7200 } else { 3600 };
        let b = parse_slurm_begin("2027-11-02T08:00").unwrap();
        assert_eq!(
            b.resolve_in(utc(2027, 7, 1, 0, 0, 0), summer),
            utc(2027, 11, 2, 7, 0, 0)
        );
        assert_eq!(
            parse_slurm_begin("now+60").unwrap().resolve_in(NOW, cet),
            NOW + 60
        );
        for bad in [
            "",
            "soon",
            "now-5",
            "now+",
            "now+5fortnights",
            "25:00",
            "13:00pm",
            "10:60",
            "13/01",
            "12/32",
            "2027-13-01",
            "2027-01-01T25:00",
            "12345",
            "1224567",
        ] {
            let e = parse_slurm_begin(bad).unwrap_err().to_string();
            assert!(e.contains("invalid begin time"), "{bad}: {e}");
        }
    }

    #[test]
    fn units_of_relative_times() {
        for (unit, seconds) in [
            ("", 1),
            ("s", 1),
            ("secs", 1),
            ("m", 60),
            ("mins", 60),
            ("minutes", 60),
            ("h", 3600),
            ("hour", 3600),
            ("days", 86_400),
            ("w", 604_800),
        ] {
            assert_eq!(unit_seconds(unit), Some(seconds), "{unit:?}");
        }
        for bad in ["x", "fortnights", "sx", "S"] {
            assert_eq!(unit_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lsf_and_pbs_forms() {
        let lsf = |s: &str| parse_lsf_begin(s).unwrap().resolve(NOW, 0);
        assert_eq!(lsf("16:30"), utc(2026, 12, 3, 16, 30, 0));
        assert_eq!(lsf("9:00"), utc(2026, 12, 4, 9, 0, 0));
        assert_eq!(lsf("2:9:00"), utc(2027, 1, 2, 9, 0, 0));
        assert_eq!(lsf("5:2:9:00"), utc(2027, 5, 2, 9, 0, 0));
        assert_eq!(lsf("2028:5:2:9:00"), utc(2028, 5, 2, 9, 0, 0));
        for bad in ["9", "24:00", "32:9:00", "13:2:9:00", "28:5:2:9:00", "a:b"] {
            assert!(parse_lsf_begin(bad).is_err(), "{bad}");
        }
        let pbs = |s: &str| parse_pbs_begin(s).unwrap().resolve(NOW, 0);
        assert_eq!(pbs("1630"), utc(2026, 12, 3, 16, 30, 0));
        assert_eq!(pbs("0900.30"), utc(2026, 12, 4, 9, 0, 30));
        assert_eq!(pbs("241630"), utc(2026, 12, 24, 16, 30, 0));
        assert_eq!(pbs("01021630"), utc(2027, 1, 2, 16, 30, 0));
        assert_eq!(pbs("2801021630"), utc(2028, 1, 2, 16, 30, 0));
        assert_eq!(pbs("202801021630"), utc(2028, 1, 2, 16, 30, 0));
        for bad in ["163", "2460", "1630.5", "321630", "13021630", "abcd"] {
            assert!(parse_pbs_begin(bad).is_err(), "{bad}");
        }
    }
}
