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
        if tag.is_empty()
            || tag.len() > 128
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(invalid(
                "a tag is 1 to 128 letters, digits, '_', '.' or '-'",
            ));
        }
        let components_ok = repository.split('/').enumerate().all(|(i, c)| {
            let host = i == 0
                && repository.contains('/')
                && (c.contains('.') || c.contains(':') || c == "localhost");
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b"._-".contains(&b)
                        || (host && (b == b':' || b.is_ascii_uppercase()))
                })
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        });
        if !components_ok {
            return Err(invalid("use lower-case letters, digits and '.', '_', '-' separated by '/', e.g. lab/openfoam:2.3.0"));
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
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
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
