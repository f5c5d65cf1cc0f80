//! The framing every image file shares: the 16-byte header and the varint length prefix.

use std::path::Path;

use super::{FileKind, ImageError, FORMAT_VERSION, MAX_MESSAGE_LEN};

/// `CRLAB` padded with NULs to 8 bytes.
pub(crate) const MAGIC: [u8; 8] = *b"CRLAB\0\0\0";

/// Magic (8 bytes), format version (u32 LE), file kind (u32 LE).
pub(crate) const HEADER_LEN: usize = 16;

/// The longest varint a u64 length can take.
pub(crate) const MAX_PREFIX_LEN: usize = 10;

/// The header of a file of `kind` written by this crlab.
pub(crate) fn encode(kind: FileKind) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(kind as u32).to_le_bytes());
    header
}

/// Checks the header at the start of `head` (the first bytes of a file of `file_len` bytes).
///
/// A file shorter than a header is `BadMagic` when the bytes it has already disagree with the
/// magic, `Truncated` otherwise. Then the magic, the version and the kind are checked, in
/// this order.
pub(crate) fn check(
    path: &Path,
    head: &[u8],
    file_len: u64,
    kind: FileKind,
) -> Result<(), ImageError> {
    let magic_len = head.len().min(MAGIC.len());
    if head[..magic_len] != MAGIC[..magic_len] {
        return Err(ImageError::BadMagic {
            path: path.to_owned(),
            found: head[..magic_len].to_vec(),
        });
    }
    let Some(header) = head.first_chunk::<HEADER_LEN>() else {
        return Err(ImageError::Truncated {
            path: path.to_owned(),
            what: "header",
            needed: HEADER_LEN as u64,
            available: file_len,
        });
    };
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != FORMAT_VERSION {
        return Err(ImageError::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let found = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if found != kind as u32 {
        return Err(ImageError::WrongKind {
            path: path.to_owned(),
            expected: kind,
            found,
        });
    }
    Ok(())
}

/// Decodes the length prefix at the start of `bytes` (what follows the header, at least the
/// first [`MAX_PREFIX_LEN`] bytes of it when the file has them) and bounds it by
/// [`MAX_MESSAGE_LEN`]. Returns the message length and the prefix length.
pub(crate) fn decode_len(
    path: &Path,
    bytes: &[u8],
    file_len: u64,
) -> Result<(u64, usize), ImageError> {
    let window = &bytes[..bytes.len().min(MAX_PREFIX_LEN)];
    let prefix_len = match window.iter().position(|b| b & 0x80 == 0) {
        Some(last) => last + 1,
        None if window.len() < MAX_PREFIX_LEN => {
            return Err(ImageError::Truncated {
                path: path.to_owned(),
                what: "length prefix",
                needed: (HEADER_LEN + window.len() + 1) as u64,
                available: file_len,
            });
        }
        // Ten bytes that all continue: prost reports the invalid varint.
        None => MAX_PREFIX_LEN,
    };
    let len = prost::decode_length_delimiter(&window[..prefix_len]).map_err(|source| {
        ImageError::Decode {
            path: path.to_owned(),
            source,
        }
    })? as u64;
    if len > MAX_MESSAGE_LEN {
        return Err(ImageError::TooLarge {
            path: path.to_owned(),
            len,
            limit: MAX_MESSAGE_LEN,
        });
    }
    Ok((len, prefix_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("/d/pstree.img")
    }

    #[test]
    fn a_written_header_checks() {
        let header = encode(FileKind::PsTree);
        assert_eq!(&header[..8], b"CRLAB\0\0\0");
        assert_eq!(&header[8..12], &FORMAT_VERSION.to_le_bytes());
        assert_eq!(&header[12..], &[2, 0, 0, 0]);
        assert!(check(path(), &header, 16, FileKind::PsTree).is_ok());
        assert!(matches!(
            check(path(), &header, 16, FileKind::Mm),
            Err(ImageError::WrongKind {
                expected: FileKind::Mm,
                found: 2,
                ..
            })
        ));
    }

    #[test]
    fn short_headers_are_truncated_or_bad_magic() {
        let header = encode(FileKind::Task);
        for len in 0..HEADER_LEN {
            let err = check(path(), &header[..len], len as u64, FileKind::Task);
            assert!(
                matches!(err, Err(ImageError::Truncated { what: "header", .. })),
                "{len}: {err:?}"
            );
        }
        let err = check(path(), b"CRX", 3, FileKind::Task);
        assert!(matches!(err, Err(ImageError::BadMagic { .. })), "{err:?}");
    }

    #[test]
    fn length_prefixes_decode_and_are_bounded() {
        assert!(matches!(decode_len(path(), &[0], 17), Ok((0, 1))));
        assert!(matches!(
            decode_len(path(), &[0xac, 0x02, 9], 19),
            Ok((300, 2))
        ));
        // A non-canonical but valid encoding of 1.
        assert!(matches!(decode_len(path(), &[0x81, 0x00], 18), Ok((1, 2))));
        // 2^60.
        let mut huge = Vec::new();
        prost::encode_length_delimiter(1usize << 60, &mut huge).expect("vec grows");
        assert!(matches!(
            decode_len(path(), &huge, 100),
            Err(ImageError::TooLarge { len, .. }) if len == 1 << 60
        ));
        assert!(matches!(
            decode_len(path(), &[0x80, 0x80], 18),
            Err(ImageError::Truncated {
                what: "length prefix",
                needed: 19,
                ..
            })
        ));
        assert!(matches!(
            decode_len(path(), &[0xff; 12], 40),
            Err(ImageError::Decode { .. })
        ));
    }
}
