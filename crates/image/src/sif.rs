//! Apptainer's and Singularity's single-file images (SIF): a global header, an array of
//! descriptors, then the data objects they describe, one of which is the primary system
//! partition, a squashfs image of the root filesystem. Little-endian, packed, as the
//! format's reference implementation (github.com/apptainer/sif) lays it out:
//!
//! ```text
//! header (128 bytes): launch script [32], "SIF_MAGIC\0" [10], version [3], arch [3],
//!   uuid [16], ctime, mtime, descriptors free, descriptors total, descriptors offset,
//!   descriptors length, data offset, data length (i64 each)
//! descriptor (585 bytes): data type (i32), used (u8), id, group id, linked id (u32),
//!   offset, size, size with padding, ctime, mtime, uid, gid (i64), name [128],
//!   extra [384] (a partition's: fs type, partition type (i32), arch [3])
//! ```

use crate::ImageError;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const MAGIC: &[u8] = b"SIF_MAGIC\0";
const HEADER_LEN: usize = 128;
const DESCRIPTOR_LEN: usize = 585;
/// A file system data object.
const DATA_PARTITION: i32 = 0x4004;
const FS_SQUASHFS: i32 = 1;
const FS_EXT3: i32 = 2;
const FS_ENCRYPTED_SQUASHFS: i32 = 5;
const PART_SYSTEM: i32 = 1;
const PART_PRIMARY_SYSTEM: i32 = 2;
/// More descriptors than any SIF file has (their default is 48): a bound on what is read.
const MAX_DESCRIPTORS: i64 = 1 << 16;

/// Whether a file starting with `first` is a SIF file.
pub(crate) fn is_sif(first: &[u8]) -> bool {
    first.get(32..42) == Some(MAGIC)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"))
}

/// The byte range (offset, length) of the root filesystem's squashfs image in the SIF file
/// `file` (`path` for messages): its primary system partition, or its one system partition.
pub(crate) fn system_partition(
    file: &mut std::fs::File,
    path: &Path,
) -> Result<(u64, u64), ImageError> {
    let bad =
        |why: String| ImageError::archive(path, format!("not a SIF image berth can read: {why}"));
    let size = file
        .metadata()
        .map_err(ImageError::io("cannot read", path))?
        .len();
    let mut header = [0u8; HEADER_LEN];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(|_| bad("its header is cut short".into()))?;
    let (total, offset) = (i64_at(&header, 88), i64_at(&header, 96));
    let end = total
        .checked_mul(DESCRIPTOR_LEN as i64)
        .and_then(|len| len.checked_add(offset));
    if !(0..=MAX_DESCRIPTORS).contains(&total)
        || offset < HEADER_LEN as i64
        || end.is_none_or(|end| end as u64 > size)
    {
        return Err(bad(format!(
            "{total} descriptors at byte {offset} do not fit in its {size} bytes"
        )));
    }
    let mut descriptors = vec![0u8; total as usize * DESCRIPTOR_LEN];
    file.seek(SeekFrom::Start(offset as u64))
        .and_then(|_| file.read_exact(&mut descriptors))
        .map_err(ImageError::io("cannot read", path))?;
    choose(&descriptors, size).map_err(bad)
}

/// Of the descriptors `all`, the system partition's range: the primary one, else the only
/// system partition; refused if it is not a squashfs image within the file's `size`.
fn choose(all: &[u8], size: u64) -> Result<(u64, u64), String> {
    let partitions: Vec<&[u8]> = all
        .chunks_exact(DESCRIPTOR_LEN)
        .filter(|d| d[4] != 0 && i32_at(d, 0) == DATA_PARTITION)
        .collect();
    let system = |kind: i32| partitions.iter().filter(move |d| i32_at(d, 205) == kind);
    let chosen = match system(PART_PRIMARY_SYSTEM).next() {
        Some(primary) => primary,
        None => match system(PART_SYSTEM).collect::<Vec<_>>().as_slice() {
            [one] => *one,
            [] => return Err("it has no system partition (a root filesystem)".into()),
            _ => return Err("it has several system partitions and none is primary".into()),
        },
    };
    match i32_at(chosen, 201) {
        FS_SQUASHFS => {}
        FS_ENCRYPTED_SQUASHFS => {
            return Err("its root filesystem is encrypted: decrypt it with apptainer first".into())
        }
        FS_EXT3 => {
            return Err("its root filesystem is an ext3 image (a writable one): convert it to squashfs with apptainer build first".into())
        }
        other => return Err(format!("its root filesystem is of an unknown type ({other})")),
    }
    let (offset, len) = (i64_at(chosen, 17), i64_at(chosen, 25));
    let fits = offset >= 0 && len > 0 && offset.checked_add(len).is_some_and(|e| e as u64 <= size);
    if !fits {
        return Err(format!(
            "its root filesystem ({len} bytes at byte {offset}) lies outside its {size} bytes"
        ));
    }
    Ok((offset as u64, len as u64))
}

/// Copies the SIF file's system partition out as a squashfs file of its own, `out`.
pub(crate) fn extract(path: &Path, out: &Path) -> Result<(), ImageError> {
    let mut file = std::fs::File::open(path).map_err(ImageError::io("cannot open", path))?;
    let (offset, len) = system_partition(&mut file, path)?;
    file.seek(SeekFrom::Start(offset))
        .map_err(ImageError::io("cannot read", path))?;
    let mut to = std::fs::File::create(out).map_err(ImageError::io("cannot write", out))?;
    let copied = std::io::copy(&mut file.take(len), &mut to)
        .map_err(ImageError::io("cannot copy the root filesystem of", path))?;
    if copied != len {
        return Err(ImageError::archive(path, "the file is cut short"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor: used or not, of `kind` at `offset` (`len` bytes), a partition of
    /// `fs` and `part` types.
    fn descriptor(used: bool, kind: i32, fs: i32, part: i32, offset: i64, len: i64) -> Vec<u8> {
        let mut d = vec![0u8; DESCRIPTOR_LEN];
        d[0..4].copy_from_slice(&kind.to_le_bytes());
        d[4] = used.into();
        d[17..25].copy_from_slice(&offset.to_le_bytes());
        d[25..33].copy_from_slice(&len.to_le_bytes());
        d[201..205].copy_from_slice(&fs.to_le_bytes());
        d[205..209].copy_from_slice(&part.to_le_bytes());
        d
    }

    #[test]
    fn the_primary_system_partition_is_the_root_filesystem() {
        let deffile = descriptor(true, 0x4001, 0, 0, 4096, 10);
        let data = descriptor(true, DATA_PARTITION, FS_SQUASHFS, 3, 5000, 10);
        let primary = descriptor(
            true,
            DATA_PARTITION,
            FS_SQUASHFS,
            PART_PRIMARY_SYSTEM,
            6000,
            100,
        );
        let unused = descriptor(
            false,
            DATA_PARTITION,
            FS_SQUASHFS,
            PART_PRIMARY_SYSTEM,
            1,
            1,
        );
        let all = [unused.clone(), deffile, data, primary.clone()].concat();
        assert_eq!(choose(&all, 10_000), Ok((6000, 100)));
        // A system partition alone serves too; two, neither primary, do not.
        let system = descriptor(true, DATA_PARTITION, FS_SQUASHFS, PART_SYSTEM, 7000, 50);
        assert_eq!(choose(&system, 10_000), Ok((7000, 50)));
        let two = [system.clone(), system].concat();
        assert!(choose(&two, 10_000)
            .unwrap_err()
            .contains("none is primary"));
        for (bad, why) in [
            (unused, "no system partition"),
            (primary.clone(), "outside its"),
            (
                descriptor(
                    true,
                    DATA_PARTITION,
                    FS_ENCRYPTED_SQUASHFS,
                    PART_PRIMARY_SYSTEM,
                    1,
                    1,
                ),
                "encrypted",
            ),
            (
                descriptor(true, DATA_PARTITION, FS_EXT3, PART_PRIMARY_SYSTEM, 1, 1),
                "ext3",
            ),
        ] {
            let e = choose(&bad, 6050).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let mut header = vec![0u8; HEADER_LEN];
        header[32..42].copy_from_slice(MAGIC);
        assert!(is_sif(&header));
        assert!(!is_sif(b"hsqs"));
    }
}
