//! Layer compression, detected from the first bytes rather than trusted from media types
//! (docker-archive layers carry no media type, and registries mislabel).

use std::io::{self, BufRead, BufReader, Read};

/// Wraps `reader` in the decompressor its magic bytes call for: gzip, zstd, or none.
pub fn decompress<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(reader))
    }
}

/// A compression berth leaves to the host's own tool, as Docker does for xz: whole image
/// files compressed with it (`rootfs.tar.xz`, `docker save | bzip2`), never a layer (OCI
/// defines gzip and zstd layers only). The tool's name and its Debian package, by the first
/// bytes of a file.
pub fn external_tool(head: &[u8]) -> Option<(&'static str, &'static str)> {
    const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
    let bzip2 = head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]);
    match (head.starts_with(XZ), bzip2) {
        (true, _) => Some(("xz", "xz-utils")),
        (_, true) => Some(("bzip2", "bzip2")),
        _ => None,
    }
}

/// The decompressed bytes of `file` (read from its current offset) through `tool -dc`: a
/// reader that fails, with what the tool said, where the tool does.
pub fn through_tool(file: std::fs::File, tool: &'static str) -> io::Result<Box<dyn Read>> {
    let mut child = std::process::Command::new(tool)
        .args(["-d", "-c"])
        .stdin(file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    Ok(Box::new(ToolOutput {
        child,
        stdout,
        tool,
    }))
}

struct ToolOutput {
    child: std::process::Child,
    stdout: std::process::ChildStdout,
    tool: &'static str,
}

impl Read for ToolOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        // The end of its output: it ended well, or the bytes so far were not all.
        let mut said = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut said)?;
        }
        let status = self.child.wait()?;
        // Its first line, less its name and the "(stdin)" it read.
        let line = said
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        let line = line
            .strip_prefix(&format!("{}: ", self.tool))
            .unwrap_or(line);
        let line = line
            .trim_start_matches("(stdin): ")
            .trim()
            .trim_end_matches(';');
        match (status.success(), line.is_empty()) {
            (true, _) => Ok(0),
            (false, true) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {status}", self.tool),
            )),
            (false, false) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {line}", self.tool),
            )),
        }
    }
}

impl Drop for ToolOutput {
    fn drop(&mut self) {
        // Not read to its end (a failure elsewhere): the tool goes too.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_and_plain() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello layer").unwrap();
        let gz = gz.finish().unwrap();
        let mut out = String::new();
        decompress(&gz[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello layer");
        out.clear();
        decompress(&b"plain"[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "plain");
    }

    #[test]
    fn zstd_frame() {
        // A zstd frame holding "abc" as one raw block (RFC 8878: magic, frame header with
        // single-segment flag and 1-byte content size, then a last raw block of 3 bytes).
        let frame = [
            0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x03, 0x19, 0x00, 0x00, b'a', b'b', b'c',
        ];
        let mut out = String::new();
        decompress(&frame[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "abc");
    }

    #[test]
    fn xz_and_bzip2_through_their_tools() {
        let dir = tempfile::tempdir().unwrap();
        for (tool, suffix) in [("xz", "xz"), ("bzip2", "bz2")] {
            let plain = dir.path().join(format!("data-{tool}"));
            std::fs::write(&plain, "hello archive\n".repeat(1000)).unwrap();
            let status = std::process::Command::new(tool)
                .arg(&plain)
                .status()
                .unwrap();
            assert!(status.success());
            let packed = dir.path().join(format!("data-{tool}.{suffix}"));
            let bytes = std::fs::read(&packed).unwrap();
            assert_eq!(external_tool(&bytes).unwrap().0, tool);
            let mut out = String::new();
            through_tool(std::fs::File::open(&packed).unwrap(), tool)
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, "hello archive\n".repeat(1000));
            // Cut short: the tool's complaint, not a short stream taken for the whole.
            std::fs::write(&packed, &bytes[..bytes.len() / 2]).unwrap();
            let mut reader = through_tool(std::fs::File::open(&packed).unwrap(), tool).unwrap();
            let e = reader.read_to_end(&mut Vec::new()).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{tool}: ")), "{e}");
        }
        assert_eq!(external_tool(b"BZh0"), None);
        assert_eq!(external_tool(b"plain"), None);
    }
}
