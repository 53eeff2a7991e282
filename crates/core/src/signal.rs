//! Signals by name or number, as `scancel --signal`, `sbatch --signal` and `bsub -wa` take
//! them: `USR1`, `SIGUSR1`, `usr1` or `10`.

/// Linux's signal numbers (the generic table of x86 and Arm, where berth runs).
const TABLE: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// The highest signal number (SIGRTMAX).
pub const MAX: i32 = 64;

/// The signal `s` names (any case, with or without `SIG`), or its number (1-64).
pub fn number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=MAX).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    TABLE.iter().find(|(n, _)| *n == name).map(|(_, sig)| *sig)
}

/// `SIGUSR1` for 10; the number itself for one without a name here (a real-time signal).
pub fn name(sig: i32) -> String {
    match TABLE.iter().find(|(_, n)| *n == sig) {
        Some((name, _)) => format!("SIG{name}"),
        None => sig.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        for s in ["USR1", "SIGUSR1", "usr1", "SigUsr1", "10"] {
            assert_eq!(number(s), Some(10), "{s}");
        }
        assert_eq!(number("64"), Some(64));
        for bad in ["", "0", "65", "-1", "FOO", "SIG", "USR1@5"] {
            assert_eq!(number(bad), None, "{bad}");
        }
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(40), "40");
    }

    #[test]
    fn the_table_is_this_platforms() {
        let libc = [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGILL,
            libc::SIGTRAP,
            libc::SIGABRT,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGKILL,
            libc::SIGUSR1,
            libc::SIGSEGV,
            libc::SIGUSR2,
            libc::SIGPIPE,
            libc::SIGALRM,
            libc::SIGTERM,
            libc::SIGSTKFLT,
            libc::SIGCHLD,
            libc::SIGCONT,
            libc::SIGSTOP,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGURG,
            libc::SIGXCPU,
            libc::SIGXFSZ,
            libc::SIGVTALRM,
            libc::SIGPROF,
            libc::SIGWINCH,
            libc::SIGIO,
            libc::SIGPWR,
            libc::SIGSYS,
        ];
        let ours: Vec<i32> = TABLE.iter().map(|(_, n)| *n).collect();
        assert_eq!(ours, libc);
        assert_eq!(MAX, libc::SIGRTMAX());
    }
}
