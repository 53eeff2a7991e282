//! Pieces of HTTP/1.1 that berth's own small clients share (the daemons' client, the etcd
//! store's), as pure functions over the bytes read.

/// The body of a chunked answer (`Transfer-Encoding: chunked`), from the bytes after its
/// head: `None` until its last (empty) chunk and the line that ends the answer have come,
/// or where the chunks are malformed.
pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        // A chunk's size, in hex, perhaps followed by extensions (`;name=value`).
        let line = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            // Trailers (perhaps none), then an empty line.
            return (data.starts_with(b"\r\n") || data.windows(4).any(|w| w == b"\r\n\r\n"))
                .then_some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined_and_an_unfinished_answer_is_none() {
        let whole = b"2\r\n{\"\r\na;x=y\r\na\":\"bcdef\"\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(dechunk(whole).as_deref(), Some(&b"{\"a\":\"bcdef\"}"[..]));
        assert_eq!(
            dechunk(b"1\r\nx\r\n0\r\nExpires: never\r\n\r\n").as_deref(),
            Some(&b"x"[..])
        );
        for cut in 0..whole.len() - 1 {
            assert_eq!(dechunk(&whole[..cut]), None, "{cut}");
        }
        assert_eq!(dechunk(b"zz\r\nx\r\n0\r\n\r\n"), None);
    }
}
