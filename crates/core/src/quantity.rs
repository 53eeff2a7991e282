//! Resource quantities as users type them on the command line.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("invalid size '{0}': expected a number with an optional unit (b, k, m, g, t), e.g. 512m or 4G")]
    Size(String),
    #[error("invalid CPU count '{0}': expected a positive number such as 2 or 0.5")]
    Cpus(String),
}

/// `bytes` for people: decimal units with one decimal, as `berth image ls` and `berth nodes`
/// show sizes (`8.0 MB`, `135.1 GB`; below 1000, `512 B`).
pub fn human_size(bytes: u64) -> String {
    scaled(bytes, 1000.0, ["B", "kB", "MB", "GB", "TB"])
}

/// A size in binary units, as docker's --memory counts them (`20.0 MiB`).
pub fn binary_size(bytes: u64) -> String {
    scaled(bytes, 1024.0, ["B", "KiB", "MiB", "GiB", "TiB"])
}

fn scaled(bytes: u64, base: f64, units: [&str; 5]) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= base && unit + 1 < units.len() {
        value /= base;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Parses a memory size the way docker's `--memory` does: a bare number is bytes, and the
/// suffixes b, k, m, g, t (optionally followed by `b` or `ib`) are powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError::Size(text.to_string());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(err()),
    };
    let value: f64 = num.parse().map_err(|_| err())?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Parses a CPU count (`--cpus 1.5`): a positive decimal number.
pub fn parse_cpus(text: &str) -> Result<f64, QuantityError> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(QuantityError::Cpus(text.to_string())),
    }
}

/// A list of numbers and ranges (`0,2-5`, as cpuset.cpus and srun's --multi-prog ranks
/// take them), as inclusive ranges; `None` if a part is neither, or runs backwards.
pub fn number_ranges(list: &str) -> Option<Vec<(u32, u32)>> {
    list.split(',')
        .map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b) = (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?);
            (a <= b).then_some((a, b))
        })
        .collect()
}

/// Numbers as a list of ranges, in order (`0,2-5`): what [`number_ranges`] reads.
pub fn number_list(numbers: &[u32]) -> String {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let first = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(match sorted[i] {
            last if last == first => first.to_string(),
            last => format!("{first}-{last}"),
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(12_300_000), "12.3 MB");
        assert_eq!(human_size(100 << 40), "110.0 TB");
        assert_eq!(human_size(u64::MAX), "18446744.1 TB");
        assert_eq!(binary_size(20 << 20), "20.0 MiB");
        assert_eq!(binary_size(1023), "1023 B");
    }

    #[test]
    fn ranges() {
        assert_eq!(number_ranges("0,2-5"), Some(vec![(0, 0), (2, 5)]));
        assert_eq!(number_ranges("7"), Some(vec![(7, 7)]));
        for bad in ["", "3-1", "x", "1,,2", "-1", "0-"] {
            assert_eq!(number_ranges(bad), None, "{bad}");
        }
        assert_eq!(number_list(&[7, 3, 4, 5, 5]), "3-5,7");
        assert_eq!(number_list(&[1]), "1");
        assert_eq!(number_list(&[0, 2, 4, 5]), "0,2,4-5");
        assert_eq!(number_list(&[]), "");
        assert_eq!(
            number_list(&[u32::MAX - 1, u32::MAX]),
            "4294967294-4294967295"
        );
        assert_eq!(
            number_ranges(&number_list(&[9, 1, 2, 3])),
            Some(vec![(1, 3), (9, 9)])
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert!(parse_size("").is_err());
        assert!(parse_size("g").is_err());
        assert!(parse_size("12q").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("-5m").is_err());
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("2"), Ok(2.0));
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("two").is_err());
        assert!(parse_cpus("inf").is_err());
    }
}
