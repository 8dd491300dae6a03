//! RFC 4571 framing of datagrams on a TCP stream (ICE-TCP, RFC 6544): each datagram is
//! preceded by its length as two big-endian bytes. This module owns reading frames out of
//! the bytes a connection has buffered and writing a frame's header, with a cap on the
//! size of a frame below RFC 4571's own 65535.

/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 2;

/// Why the bytes on a connection are not a stream of acceptable frames. Either ends the
/// connection: there is no resynchronising inside a TCP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A frame announced more bytes than the cap.
    TooLarge {
        /// The announced length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A frame of zero bytes: no datagram is empty.
    Empty,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes is larger than the {max} allowed")
            }
            FrameError::Empty => f.write_str("empty frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The first complete frame at the start of `buffered`: `Ok(Some((datagram, consumed)))`
/// where `consumed` counts the header too; `Ok(None)` when more bytes are needed. A frame
/// larger than `max` bytes (clamped to 65535) is an error as soon as its header is read,
/// before its body arrives.
pub fn next_frame(buffered: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(header) = buffered.get(..HEADER_BYTES) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
    let max = max.min(usize::from(u16::MAX));
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let end = HEADER_BYTES + len;
    Ok(buffered
        .get(HEADER_BYTES..end)
        .map(|datagram| (datagram, end)))
}

/// The header of a frame carrying `datagram`, or why it cannot be framed (empty, or
/// larger than `max`, clamped to 65535).
pub fn header(datagram: &[u8], max: usize) -> Result<[u8; HEADER_BYTES], FrameError> {
    let max = max.min(usize::from(u16::MAX));
    match datagram.len() {
        0 => Err(FrameError::Empty),
        len if len > max => Err(FrameError::TooLarge { len, max }),
        // Fits: `max` is at most u16::MAX.
        len => Ok((len as u16).to_be_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(datagrams: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in datagrams {
            out.extend_from_slice(&header(d, 1500).unwrap());
            out.extend_from_slice(d);
        }
        out
    }

    #[test]
    fn frames_come_out_as_they_went_in() {
        let stream = framed(&[b"one", b"second", &[7; 1500]]);
        let mut rest = &stream[..];
        let mut got = Vec::new();
        while let Some((d, used)) = next_frame(rest, 1500).unwrap() {
            got.push(d.to_vec());
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(
            got,
            vec![b"one".to_vec(), b"second".to_vec(), vec![7; 1500]]
        );
    }

    #[test]
    fn a_partial_frame_waits_for_more() {
        let stream = framed(&[b"hello"]);
        for cut in 0..stream.len() {
            assert_eq!(next_frame(&stream[..cut], 1500), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            next_frame(&stream, 1500),
            Ok(Some((&b"hello"[..], stream.len())))
        );
    }

    #[test]
    fn oversized_and_empty_frames_are_refused_from_the_header() {
        assert_eq!(
            next_frame(&[0x05, 0xdd], 1500),
            Err(FrameError::TooLarge {
                len: 1501,
                max: 1500
            })
        );
        assert_eq!(
            next_frame(&[0xff, 0xff], 1 << 20),
            Ok(None),
            "65535 is the most a frame can say, and a cap above it is clamped"
        );
        assert_eq!(next_frame(&[0, 0, 1, 2], 1500), Err(FrameError::Empty));
        assert_eq!(header(&[], 1500), Err(FrameError::Empty));
        assert_eq!(
            header(&[0; 1501], 1500),
            Err(FrameError::TooLarge {
                len: 1501,
                max: 1500
            })
        );
        assert_eq!(header(&[0; 300], 1500), Ok([0x01, 0x2c]));
    }

    #[test]
    fn garbage_never_panics_and_never_claims_more_than_it_has() {
        let mut rng = crate::test_rng::XorShift::new(4571);
        let mut caps = crate::test_rng::XorShift::new(6544);
        rng.for_each_input(20_000, 64, |bytes| {
            // Small caps and small lengths, so that complete frames occur too.
            let max = caps.below(80) as usize;
            if let Some(b) = bytes.first_mut() {
                *b = 0;
            }
            if let Ok(Some((d, used))) = next_frame(bytes, max) {
                assert!(used <= bytes.len() && d.len() + HEADER_BYTES == used);
                assert!(!d.is_empty() && d.len() <= max);
            }
        });
    }
}
