//! The stamp every generated packet carries in its last 16 bytes: a magic number, the
//! packet's index in its track, and the wall-clock time it was sent. Receivers compute loss,
//! latency and freezes from stamps alone, without decoding anything.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes a stamp occupies at the end of a payload.
pub const STAMP_LEN: usize = 16;

const MAGIC: u32 = 0x4d46_4c44; // "MFLD"

/// What a stamp says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the packet in its track, from 0.
    pub index: u32,
    /// Send time, microseconds since the Unix epoch.
    pub sent_us: u64,
}

impl Stamp {
    /// Write the stamp into the last [`STAMP_LEN`] bytes of `payload`. Returns false (and
    /// writes nothing) when the payload is too short.
    pub fn write(&self, payload: &mut [u8]) -> bool {
        let Some(start) = payload.len().checked_sub(STAMP_LEN) else {
            return false;
        };
        let tail = &mut payload[start..];
        tail[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        tail[4..8].copy_from_slice(&self.index.to_be_bytes());
        tail[8..16].copy_from_slice(&self.sent_us.to_be_bytes());
        true
    }

    /// Read a stamp from the end of `payload`, if one is there.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let start = payload.len().checked_sub(STAMP_LEN)?;
        let tail = &payload[start..];
        let magic = u32::from_be_bytes(tail[0..4].try_into().ok()?);
        if magic != MAGIC {
            return None;
        }
        Some(Stamp {
            index: u32::from_be_bytes(tail[4..8].try_into().ok()?),
            sent_us: u64::from_be_bytes(tail[8..16].try_into().ok()?),
        })
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut p = vec![7u8; 40];
        let s = Stamp {
            index: 123_456,
            sent_us: 1_700_000_000_000_000,
        };
        assert!(s.write(&mut p));
        assert_eq!(Stamp::read(&p), Some(s));
        assert_eq!(&p[..24], &[7u8; 24][..], "only the tail is written");
    }

    #[test]
    fn short_or_foreign_payloads_have_no_stamp() {
        assert_eq!(Stamp::read(&[]), None);
        assert_eq!(Stamp::read(&[0u8; 15]), None);
        assert_eq!(Stamp::read(&[0u8; 64]), None);
        let mut short = [0u8; 8];
        assert!(
            !Stamp {
                index: 1,
                sent_us: 1
            }
            .write(&mut short)
        );
    }
}
