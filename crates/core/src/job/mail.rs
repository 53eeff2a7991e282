//! When a job's owner hears of it by mail: sbatch's `--mail-type`/`--mail-user`, bsub's
//! `-B`/`-N`/`-u`, qsub's `-m`/`-M`. The controller sends through the site's mail program
//! (Slurm's MailProg), as the job's user.

use serde::{Deserialize, Serialize};

use super::JobError;

/// The events a job's mail is sent at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailEvents {
    /// It started.
    #[serde(default)]
    pub begin: bool,
    /// It ended, however.
    #[serde(default)]
    pub end: bool,
    /// It ended other than COMPLETED.
    #[serde(default)]
    pub fail: bool,
    /// It went back to the queue.
    #[serde(default)]
    pub requeue: bool,
    /// Its dependency can never be satisfied (it is cancelled).
    #[serde(default)]
    pub invalid_depend: bool,
    /// Each task of an array on its own, instead of the array as a whole.
    #[serde(default)]
    pub array_tasks: bool,
    /// The shares of its time limit it is mailed at having run, in percent (50, 80, 90,
    /// 100: Slurm's TIME_LIMIT_50/_80/_90 and TIME_LIMIT).
    #[serde(default)]
    pub time_limit: Vec<u32>,
}

impl MailEvents {
    /// Whether any mail is to be sent.
    pub fn any(&self) -> bool {
        self.begin
            || self.end
            || self.fail
            || self.requeue
            || self.invalid_depend
            || !self.time_limit.is_empty()
    }

    /// Both sets' events.
    pub fn or(self, other: MailEvents) -> MailEvents {
        let mut time_limit = self.time_limit;
        time_limit.extend(other.time_limit);
        time_limit.sort_unstable();
        time_limit.dedup();
        MailEvents {
            time_limit,
            begin: self.begin || other.begin,
            end: self.end || other.end,
            fail: self.fail || other.fail,
            requeue: self.requeue || other.requeue,
            invalid_depend: self.invalid_depend || other.invalid_depend,
            array_tasks: self.array_tasks || other.array_tasks,
        }
    }

    /// sbatch's `--mail-type=TYPE,...`: NONE, BEGIN, END, FAIL, REQUEUE, ALL, INVALID_DEPEND,
    /// ARRAY_TASKS, TIME_LIMIT[_90|_80|_50]; STAGE_OUT is given back apart (berth has no
    /// burst buffers to stage out of).
    pub fn parse_slurm(v: &str) -> Result<(MailEvents, Vec<String>), JobError> {
        let mut events = MailEvents::default();
        let mut unsent = Vec::new();
        for t in v.split(',').map(str::trim) {
            match t.to_ascii_uppercase().as_str() {
                "NONE" => events = MailEvents::default(),
                "BEGIN" => events.begin = true,
                "END" => events.end = true,
                "FAIL" => events.fail = true,
                "REQUEUE" => events.requeue = true,
                "INVALID_DEPEND" => events.invalid_depend = true,
                "ARRAY_TASKS" => events.array_tasks = true,
                // Slurm's ALL: BEGIN, END, FAIL, INVALID_DEPEND, REQUEUE and STAGE_OUT
                // (berth has no burst buffers to stage out of).
                "ALL" => {
                    events = events.or(MailEvents {
                        begin: true,
                        end: true,
                        fail: true,
                        requeue: true,
                        invalid_depend: true,
                        ..MailEvents::default()
                    })
                }
                "TIME_LIMIT" => events = events.or(MailEvents::at_share(100)),
                "TIME_LIMIT_90" => events = events.or(MailEvents::at_share(90)),
                "TIME_LIMIT_80" => events = events.or(MailEvents::at_share(80)),
                "TIME_LIMIT_50" => events = events.or(MailEvents::at_share(50)),
                "STAGE_OUT" => unsent.push(t.to_string()),
                _ => {
                    return Err(JobError::invalid(
                        "mail type",
                        t,
                        "NONE, BEGIN, END, FAIL, REQUEUE, ALL, INVALID_DEPEND, ARRAY_TASKS or TIME_LIMIT[_90|_80|_50], comma-separated",
                    ))
                }
            }
        }
        Ok((events, unsent))
    }

    /// Mail at having run `percent` of the time limit.
    fn at_share(percent: u32) -> MailEvents {
        MailEvents {
            time_limit: vec![percent],
            ..MailEvents::default()
        }
    }

    /// qsub's `-m` letters: `a` (aborted: FAIL), `b` (BEGIN), `e` (END), `n` (none).
    pub fn parse_pbs(v: &str) -> Result<MailEvents, JobError> {
        let mut events = MailEvents::default();
        for c in v.chars() {
            match c {
                'a' => events.fail = true,
                'b' => events.begin = true,
                'e' => events.end = true,
                'n' => events = MailEvents::default(),
                _ => {
                    return Err(JobError::invalid(
                        "mail points",
                        v,
                        "letters among a (aborted), b (began), e (ended), or n (none)",
                    ))
                }
            }
        }
        Ok(events)
    }
}

/// Mail addresses, comma-separated (qsub `-M` takes a list; sbatch and bsub one): each a user
/// name or `user@host`, of the characters addresses are made of. They are handed to the mail
/// program as arguments, so none may start with `-`.
pub fn parse_addresses(v: &str) -> Result<Vec<String>, JobError> {
    let ok = |a: &str| {
        !a.is_empty()
            && !a.starts_with(['-', '@', '.'])
            && a.matches('@').count() <= 1
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._%+=-@".contains(c))
    };
    v.split(',')
        .map(str::trim)
        .map(|a| match ok(a) {
            true => Ok(a.to_string()),
            false => Err(JobError::invalid(
                "mail address",
                a,
                "user or user@host (letters, digits and . _ % + = -)",
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_types_are_slurms() {
        let (e, unsent) =
            MailEvents::parse_slurm("begin,END,time_limit_80,TIME_LIMIT,stage_out").unwrap();
        assert!(e.begin && e.end && !e.fail && e.any());
        assert_eq!(e.time_limit, [80, 100]);
        assert_eq!(unsent, ["stage_out"]);
        let (limits, _) = MailEvents::parse_slurm("TIME_LIMIT_50").unwrap();
        assert!(limits.any() && !limits.end);
        let (all, _) = MailEvents::parse_slurm("ALL,ARRAY_TASKS").unwrap();
        assert!(all.begin && all.end && all.fail && all.requeue && all.invalid_depend);
        assert!(all.array_tasks);
        let (none, _) = MailEvents::parse_slurm("END,NONE").unwrap();
        assert!(!none.any());
        let err = MailEvents::parse_slurm("END,SOMETIMES").unwrap_err();
        assert!(err.to_string().contains("SOMETIMES"), "{err}");
    }

    #[test]
    fn pbs_mail_points_are_letters() {
        let e = MailEvents::parse_pbs("abe").unwrap();
        assert!(e.begin && e.end && e.fail);
        assert!(!MailEvents::parse_pbs("n").unwrap().any());
        assert!(MailEvents::parse_pbs("x").is_err());
    }

    #[test]
    fn addresses_cannot_pass_for_options() {
        assert_eq!(
            parse_addresses("ann@lab.example.org, bo").unwrap(),
            ["ann@lab.example.org", "bo"]
        );
        for bad in ["-Ssendmail=/tmp/x", "ann bo", "a@b@c", "", "x;rm", "@host"] {
            assert!(parse_addresses(bad).is_err(), "{bad}");
        }
    }
}
