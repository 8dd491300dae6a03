//! The stamp every generated packet carries in its last 20 bytes: a magic number, the
//! sending track's source id, the packet's index in that track, and the wall-clock time it
//! was sent. Receivers compute loss,
//! latency and freezes from stamps alone, without decoding anything.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes a stamp occupies at the end of a payload.
pub const STAMP_LEN: usize = 20;

const MAGIC: u32 = 0x4d46_4c44; // "MFLD"

/// What a stamp says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The sending track, unique within one loadgen process (see [`next_source`]).
    pub source: u32,
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
        tail[4..8].copy_from_slice(&self.source.to_be_bytes());
        tail[8..12].copy_from_slice(&self.index.to_be_bytes());
        tail[12..20].copy_from_slice(&self.sent_us.to_be_bytes());
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
            source: u32::from_be_bytes(tail[4..8].try_into().ok()?),
            index: u32::from_be_bytes(tail[8..12].try_into().ok()?),
            sent_us: u64::from_be_bytes(tail[12..20].try_into().ok()?),
        })
    }
}

/// A fresh source id for a sending track: unique within this process, so receivers can
/// match what they got to what its sender sent.
pub fn next_source() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
            source: 0xdead_beef,
            index: 123_456,
            sent_us: 1_700_000_000_000_000,
        };
        assert!(s.write(&mut p));
        assert_eq!(Stamp::read(&p), Some(s));
        assert_eq!(&p[..20], &[7u8; 20][..], "only the tail is written");
    }

    #[test]
    fn short_or_foreign_payloads_have_no_stamp() {
        assert_eq!(Stamp::read(&[]), None);
        assert_eq!(Stamp::read(&[0u8; 19]), None);
        assert_eq!(Stamp::read(&[0u8; 64]), None);
        let mut short = [0u8; 19];
        assert!(
            !Stamp {
                source: 1,
                index: 1,
                sent_us: 1
            }
            .write(&mut short)
        );
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn sources_are_distinct() {
        let a = next_source();
        let b = next_source();
        assert_ne!(a, b);
    }

    #[test]
    fn a_stamp_survives_any_payload_prefix() {
        for len in STAMP_LEN..STAMP_LEN + 64 {
            let mut p = vec![0xffu8; len];
            let s = Stamp {
                source: len as u32,
                index: u32::MAX - len as u32,
                sent_us: u64::MAX - 1,
            };
            assert!(s.write(&mut p));
            assert_eq!(Stamp::read(&p), Some(s), "length {len}");
        }
    }
}
