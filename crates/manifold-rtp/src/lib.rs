//! Pure packet logic for the Manifold SFU: sequence-number and timestamp
//! rewriting, VP8 PictureID/TL0PICIDX rewriting, keyframe detection, first-byte
//! demultiplexing, ICE ufrag extraction from STUN, and the typed reasons a packet
//! is dropped.
//!
//! Nothing here does I/O or reads a clock, and nothing here panics on
//! network input: every parser takes arbitrary bytes and answers `None`,
//! `false` or `Unknown` for anything it cannot make sense of. That lets the
//! forwarding path call these functions on untrusted datagrams directly, and
//! lets the tests run millions of garbage inputs in a second.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod demux;
pub mod drop;
pub mod framing;
pub mod keyframe;
pub mod seq;
pub mod stun;
pub mod ts;
pub mod vp8;

pub use demux::{PacketClass, classify};
pub use drop::DropReason;
pub use keyframe::{VideoCodec, is_keyframe};
pub use seq::SeqRewriter;
pub use stun::local_ufrag;
pub use ts::TsRewriter;
pub use vp8::{Vp8Descriptor, Vp8Fields, Vp8Rewriter, keyframe_size};

/// A pseudo-random byte source for the property-style tests of every module.
///
/// Kept here rather than as a dev-dependency so the crate stays std-only, and
/// seeded so a failing input can be reproduced.
#[cfg(test)]
pub(crate) mod test_rng {
    pub(crate) struct XorShift(u64);

    impl XorShift {
        pub(crate) fn new(seed: u64) -> Self {
            // xorshift never leaves the all-zero state.
            Self(seed.max(1))
        }

        pub(crate) fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// A value in `0..bound`; `bound` must be non-zero.
        pub(crate) fn below(&mut self, bound: u64) -> u64 {
            self.next_u64() % bound
        }

        pub(crate) fn fill(&mut self, buf: &mut [u8]) {
            for chunk in buf.chunks_mut(8) {
                let bytes = self.next_u64().to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }

        /// `n` random inputs of random length in `0..max_len`, passed one by
        /// one to `f` through a reused buffer, which `f` may shape further.
        pub(crate) fn for_each_input(
            &mut self,
            n: usize,
            max_len: usize,
            mut f: impl FnMut(&mut [u8]),
        ) {
            let mut buf = vec![0u8; max_len];
            for _ in 0..n {
                let len = self.below(max_len as u64) as usize;
                self.fill(&mut buf[..len]);
                f(&mut buf[..len]);
            }
        }
    }
}
