//! The guest channel's framing: length-prefixed messages over a byte stream
//! (QEMU's virtio-serial port in the guest, its UNIX socket on the host).
//!
//! A frame is a little-endian u32 length followed by that many bytes. The
//! length is bounded before anything is allocated; what a frame holds is
//! [`crate::messages`]' business.

use std::io::{self, Read, Write};

/// No frame may be larger (payload files travel in chunks below this).
pub const MAX_FRAME: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the peer announced a frame of {len} bytes, more than the limit of {MAX_FRAME}")]
    TooLarge { len: u32 },
    #[error("the channel closed in the middle of a frame")]
    Truncated,
    #[error("the channel closed")]
    Closed,
    #[error("channel i/o")]
    Io(#[source] io::Error),
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or(FrameError::TooLarge {
            len: payload.len().min(u32::MAX as usize) as u32,
        })?;
    w.write_all(&len.to_le_bytes()).map_err(FrameError::Io)?;
    w.write_all(payload).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

/// Reads one frame.
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn round_trips_frames_back_to_back() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut r = Cursor::new(buf);
        assert_eq!(read_frame(&mut r).unwrap(), b"hello");
        assert_eq!(read_frame(&mut r).unwrap(), b"");
        assert!(matches!(read_frame(&mut r), Err(FrameError::Closed)));
    }

    #[test]
    fn rejects_oversized_and_truncated_frames_without_allocating() {
        let mut r = Cursor::new(u32::MAX.to_le_bytes().to_vec());
        assert!(matches!(
            read_frame(&mut r),
            Err(FrameError::TooLarge { len: u32::MAX })
        ));
        let mut r = Cursor::new(vec![10, 0, 0, 0, 1, 2]);
        assert!(matches!(read_frame(&mut r), Err(FrameError::Truncated)));
        let mut r = Cursor::new(vec![10, 0]);
        assert!(matches!(read_frame(&mut r), Err(FrameError::Truncated)));
    }

    #[test]
    fn refuses_to_write_an_oversized_frame() {
        let big = vec![0u8; MAX_FRAME as usize + 1];
        assert!(matches!(
            write_frame(&mut Vec::new(), &big),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
