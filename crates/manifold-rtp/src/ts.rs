//! RTP timestamp rewriting for one outgoing stream fed by a succession of
//! input sources.
//!
//! When a subscriber's source changes (a publisher reconnects, a player is
//! pointed at another track) the new source's timestamps bear no relation to
//! the old ones. This module owns the offset that makes the outgoing clock
//! continue: the new source's first timestamp lands a caller-chosen gap after
//! the last one sent, and everything after moves with it. Timestamps are
//! extended (`u64`) values in the codec clock rate; the caller truncates to
//! 32 bits on the wire.

/// Rewrites extended RTP timestamps so an outgoing stream stays continuous
/// across source switches.
#[derive(Clone, Debug)]
pub struct TsRewriter {
    first_out: u64,
    last_out: Option<u64>,
    /// `None` until the first input after construction or a switch.
    source: Option<Source>,
    /// Gap the next source starts after `last_out`, set by `switch_source`.
    pending_gap: u64,
}

#[derive(Clone, Copy, Debug)]
struct Source {
    /// The source's first input and the output it was given; every other
    /// input keeps its distance to this pair.
    start_in: u64,
    start_out: u64,
}

impl TsRewriter {
    /// A rewriter whose first output timestamp is `first_out`.
    pub fn new(first_out: u64) -> Self {
        Self {
            first_out,
            last_out: None,
            source: None,
            // Irrelevant until something has been output.
            pending_gap: 1,
        }
    }

    /// The next input comes from a new source, whose first timestamp should
    /// be output `gap_ticks` after the highest timestamp output so far.
    ///
    /// The caller derives the gap from wall-clock time elapsed since the last
    /// packet times the clock rate. It is clamped to at least 1 so two frames
    /// never share a timestamp across the switch. Calling this again before
    /// any input replaces the gap: the latest elapsed time is the true one.
    pub fn switch_source(&mut self, gap_ticks: u64) {
        self.source = None;
        self.pending_gap = gap_ticks.max(1);
    }

    /// Map an input timestamp to an output timestamp.
    ///
    /// The first input after [`TsRewriter::new`] or
    /// [`TsRewriter::switch_source`] fixes the offset. Later inputs, newer or
    /// older (reordered), keep their distance to it. `None` only when the
    /// result would fall outside `u64`, which happens for a reordered packet
    /// older than the source's start by more than the output has advanced.
    pub fn map(&mut self, input: u64) -> Option<u64> {
        let source = match self.source {
            Some(source) => source,
            None => {
                let start_out = match self.last_out {
                    Some(last) => last.checked_add(self.pending_gap)?,
                    None => self.first_out,
                };
                let source = Source {
                    start_in: input,
                    start_out,
                };
                self.source = Some(source);
                source
            }
        };

        let out = if input >= source.start_in {
            source.start_out.checked_add(input - source.start_in)?
        } else {
            source.start_out.checked_sub(source.start_in - input)?
        };
        self.last_out = Some(self.last_out.map_or(out, |last| last.max(out)));
        Some(out)
    }

    /// The highest timestamp output so far.
    pub fn last_output(&self) -> Option<u64> {
        self.last_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::XorShift;

    /// 90 kHz video at 30 fps.
    const FRAME: u64 = 3000;

    #[test]
    fn first_input_maps_to_first_out() {
        let mut ts = TsRewriter::new(1_000);
        assert_eq!(ts.last_output(), None);
        assert_eq!(ts.map(987_654_321), Some(1_000));
        assert_eq!(ts.map(987_654_321 + FRAME), Some(1_000 + FRAME));
        assert_eq!(ts.last_output(), Some(1_000 + FRAME));
    }

    #[test]
    fn continuity_across_switch() {
        let mut ts = TsRewriter::new(0);
        for i in 0..10 {
            assert_eq!(ts.map(5_000 + i * FRAME), Some(i * FRAME));
        }
        let last = ts.last_output().unwrap();

        // 100 ms passed: 9000 ticks at 90 kHz.
        ts.switch_source(9_000);
        assert_eq!(ts.map(123), Some(last + 9_000));
        assert_eq!(ts.map(123 + FRAME), Some(last + 9_000 + FRAME));
    }

    #[test]
    fn zero_gap_is_clamped() {
        let mut ts = TsRewriter::new(0);
        ts.map(50);
        ts.switch_source(0);
        assert_eq!(ts.map(7), Some(1));
    }

    #[test]
    fn switch_before_any_output_starts_at_first_out() {
        let mut ts = TsRewriter::new(77);
        ts.switch_source(5_000);
        assert_eq!(ts.map(1_234), Some(77));
    }

    #[test]
    fn repeated_switch_uses_latest_gap() {
        let mut ts = TsRewriter::new(0);
        ts.map(0);
        ts.switch_source(10);
        ts.switch_source(20);
        assert_eq!(ts.map(999), Some(20));
    }

    #[test]
    fn reordered_packets_keep_their_distance() {
        let mut ts = TsRewriter::new(100_000);
        assert_eq!(ts.map(50_000), Some(100_000));
        assert_eq!(ts.map(50_000 + 2 * FRAME), Some(100_000 + 2 * FRAME));
        // Late, but still after the start.
        assert_eq!(ts.map(50_000 + FRAME), Some(100_000 + FRAME));
        // Late and older than the source's first input.
        assert_eq!(ts.map(50_000 - FRAME), Some(100_000 - FRAME));
        assert_eq!(ts.last_output(), Some(100_000 + 2 * FRAME));
    }

    #[test]
    fn late_packet_of_new_source_before_its_first() {
        let mut ts = TsRewriter::new(0);
        ts.map(10);
        ts.map(10 + FRAME);
        ts.switch_source(4_500);
        let start = FRAME + 4_500;
        assert_eq!(ts.map(700_000), Some(start));
        // The new source's previous frame arrives after its successor.
        assert_eq!(ts.map(700_000 - FRAME), Some(start - FRAME));
        // Highest output is unaffected by the late one.
        assert_eq!(ts.last_output(), Some(start));
    }

    #[test]
    fn underflow_is_none_not_panic() {
        let mut ts = TsRewriter::new(10);
        assert_eq!(ts.map(1_000), Some(10));
        assert_eq!(ts.map(991), Some(1));
        assert_eq!(ts.map(990), Some(0));
        assert_eq!(ts.map(989), None);
        assert_eq!(ts.map(0), None);
        // The rewriter still works afterwards.
        assert_eq!(ts.map(1_001), Some(11));
    }

    #[test]
    fn overflow_is_none_not_panic() {
        let mut ts = TsRewriter::new(u64::MAX - 10);
        assert_eq!(ts.map(0), Some(u64::MAX - 10));
        assert_eq!(ts.map(10), Some(u64::MAX));
        assert_eq!(ts.map(11), None);
        assert_eq!(ts.map(u64::MAX), None);

        // The next source cannot start past u64::MAX either.
        ts.switch_source(u64::MAX);
        assert_eq!(ts.map(5), None);
        assert_eq!(ts.last_output(), Some(u64::MAX));
    }

    #[test]
    fn wraparound_of_32_bit_timestamps() {
        // Extended timestamps crossing 2^32 are plain u64 arithmetic.
        let wrap = 1u64 << 32;
        let mut ts = TsRewriter::new(0);
        assert_eq!(ts.map(wrap - FRAME), Some(0));
        assert_eq!(ts.map(wrap), Some(FRAME));
        assert_eq!(ts.map(wrap + FRAME), Some(2 * FRAME));
    }

    #[test]
    fn random_operations_never_panic() {
        let mut rng = XorShift::new(0x7473);
        let mut ts = TsRewriter::new(rng.next_u64());
        let mut cursor = rng.next_u64();
        for _ in 0..100_000 {
            match rng.below(16) {
                0 => ts.switch_source(rng.next_u64() >> rng.below(64)),
                1 => cursor = rng.next_u64(),
                _ => {
                    cursor = cursor.wrapping_add(rng.below(6_000)).wrapping_sub(1_000);
                    let before = ts.last_output();
                    let out = ts.map(cursor);
                    // The highest output never decreases.
                    assert!(ts.last_output() >= before);
                    if let Some(out) = out {
                        assert!(ts.last_output() >= Some(out));
                    }
                }
            }
        }
    }
}
