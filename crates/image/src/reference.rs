//! Image names as users type them: `busybox`, `lab/openfoam:2.3.0`,
//! `registry.local:5000/lab/openfoam:2.3.0`, `lab/app@sha256:...`. A name without a tag
//! means `:latest`; Docker Hub's are kept in Docker's familiar form (`docker.io/library/
//! busybox` is `busybox`, `docker.io/lab/app` is `lab/app`), as Docker shows them, so that
//! every spelling of one name is one name.

use crate::{Digest, ImageError};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Everything before the tag, registry host and port included.
    pub repository: String,
    pub tag: String,
    /// The manifest digest it was named by (`NAME@sha256:...`, the tag then left out, as
    /// Docker leaves it): the name stands for that image alone.
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ImageError> {
        let (text, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(Digest::parse(digest)?)),
            None => (text, None),
        };
        let invalid = |why| ImageError::InvalidName {
            name: text.to_string(),
            why,
        };
        // The tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let slash = text.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match text[slash..].rfind(':') {
            Some(i) => (&text[..slash + i], &text[slash + i + 1..]),
            None => (text, "latest"),
        };
        if repository.is_empty() {
            return Err(invalid("the name is empty"));
        }
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if tag.len() > 128
            || !tag.bytes().next().is_some_and(word)
            || !tag.bytes().all(|b| word(b) || b".-".contains(&b))
        {
            return Err(invalid(
                "a tag is 1 to 128 letters, digits, '_', '.' or '-', and starts with none of '.' and '-'",
            ));
        }
        if repository.len() > 255 {
            return Err(invalid("a name is at most 255 characters"));
        }
        // Docker's grammar: a registry host first where the name has one (`HOST[:PORT]/`),
        // then components of lower-case letters and digits, each part of one joined to the
        // next by '.', '_', '__' or dashes.
        let components_ok = repository.split('/').enumerate().all(|(i, c)| {
            let host = i == 0
                && repository.contains('/')
                && (c.contains('.') || c.contains(':') || c == "localhost");
            match host {
                true => is_host(c),
                false => is_component(c),
            }
        });
        if !components_ok {
            return Err(invalid("use lower-case letters and digits, joined by '.', '_', '__' or '-' and separated by '/' (after a registry HOST[:PORT]/), e.g. lab/openfoam:2.3.0"));
        }
        // Docker Hub's names in their familiar form.
        let hub = ["docker.io/", "index.docker.io/"]
            .iter()
            .find_map(|host| repository.strip_prefix(host))
            .unwrap_or(repository);
        let repository = match hub.strip_prefix("library/") {
            Some(official) if !official.contains('/') => official,
            _ => hub,
        };
        Ok(Reference {
            repository: repository.to_string(),
            tag: tag.to_string(),
            digest,
        })
    }

    /// What follows the repository: `:TAG`, or `@DIGEST` for a name by digest.
    pub fn suffix(&self) -> String {
        match &self.digest {
            Some(digest) => format!("@{digest}"),
            None => format!(":{}", self.tag),
        }
    }
}

/// A path component of Docker's grammar: lower-case letters and digits, runs of them joined
/// by one separator ('.', '_', '__' or any number of '-').
pub fn is_component(c: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    (bytes.split(alnum).filter(|s| !s.is_empty()))
        .all(|sep| matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&b| b == b'-'))
}

/// A registry host of Docker's grammar: dot-separated labels of letters, digits and inner
/// dashes, and a port of digits after a ':'.
fn is_host(c: &str) -> bool {
    let (host, port) = match c.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (c, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    host.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A path component made of `text` (a file's name, say): each run of characters no
/// component has, or of separators no component has together, becomes one '-'; empty where
/// `text` has no letter or digit.
pub fn component_of(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if !run.is_empty() && !out.is_empty() {
                let kept =
                    matches!(run.as_str(), "." | "_" | "__") || run.chars().all(|c| c == '-');
                out.push_str(if kept { &run } else { "-" });
            }
            run.clear();
            out.push(c);
        } else {
            run.push(c);
        }
    }
    out
}

impl Reference {
    /// `name` as the store names it (`busybox` is `busybox:latest`), or as it is where it
    /// is no valid name (an id, or a mistake the store will refuse): what two spellings of
    /// one image are compared by.
    pub fn full_name(name: &str) -> String {
        Reference::parse(name).map_or(name.to_string(), |r| r.to_string())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.repository, self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "busybox:latest");
        let r = Reference::parse("registry.local:5000/lab/openfoam:2.3.0").unwrap();
        assert_eq!(r.repository, "registry.local:5000/lab/openfoam");
        assert_eq!(r.tag, "2.3.0");
        assert_eq!(Reference::parse("localhost:5000/a").unwrap().tag, "latest");
        for bad in [
            "",
            ":tag",
            "Upper",
            "a//b",
            "a:",
            "a:b:c/",
            "-a",
            "a/.b",
            "a:ta g",
            "a@sha256:12",
            "docker.io/",
            // Docker's grammar refuses these too.
            "x:-tag",
            "x:.tag",
            "a___b:1",
            "a.-b:1",
            "ab-:1",
            "ab.:1",
            "a:b:c/x:1",
            "-host.io/x",
            "host.io:/x",
            "host-1.io:5000/A/b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        for good in ["a__b", "a--b_c.d", "x:_tag", "Host.IO:5000/a/b-c:V_1"] {
            assert!(Reference::parse(good).is_ok(), "{good}");
        }
        assert_eq!(component_of("My App..v2 (final)"), "my-app-v2-final");
        assert_eq!(component_of("a__b.c--d"), "a__b.c--d");
        assert_eq!(component_of("...x"), "x");
        assert!(is_component(&component_of("a._b")));
        // Docker Hub's spellings of one name are one.
        for hub in [
            "busybox",
            "library/busybox:latest",
            "docker.io/library/busybox",
            "index.docker.io/library/busybox:latest",
        ] {
            assert_eq!(Reference::parse(hub).unwrap().to_string(), "busybox:latest");
        }
        assert_eq!(
            Reference::parse("docker.io/lab/app:2").unwrap().to_string(),
            "lab/app:2"
        );
        assert_eq!(
            Reference::parse("quay.io/library/x").unwrap().to_string(),
            "quay.io/library/x:latest"
        );
        // By digest: the tag goes.
        let hex = "a".repeat(64);
        for name in ["lab/app", "lab/app:v2"] {
            let r = Reference::parse(&format!("{name}@sha256:{hex}")).unwrap();
            assert_eq!(r.to_string(), format!("lab/app@sha256:{hex}"));
        }
    }
}
