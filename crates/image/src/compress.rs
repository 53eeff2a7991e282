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
}
