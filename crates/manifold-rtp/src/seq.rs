//! RTP sequence number rewriting for one outgoing stream fed by a succession
//! of input sources.
//!
//! A subscriber must see one gap-free, increasing sequence even though the
//! packets behind it come from a publisher that reconnects, a player whose
//! source changes, or a layer filter that deliberately skips packets. This
//! module owns that mapping: the offset per source, and a bounded record of
//! the inputs that were dropped on purpose so later outputs close the gap
//! (the idea of mediasoup's `SeqManager`). Numbers are extended (`u64`); the
//! caller truncates to 16 bits on the wire.

/// How many of the most recent inputs are remembered. Packets older than this
/// relative to the newest input are refused: a receiver's jitter buffer has
/// long given up on them, and remembering more would cost memory for every
/// subscription.
const WINDOW: u64 = 4096;
const WINDOW_WORDS: usize = (WINDOW / 64) as usize;

/// A forward step larger than this is not reordering or loss but the sender
/// restarting its numbering. Half the 16-bit space: beyond it, a 16-bit
/// receiver could no longer tell forward from backward.
const MAX_FORWARD_JUMP: u64 = 1 << 15;

/// Rewrites extended RTP sequence numbers so an outgoing stream stays
/// continuous across source switches, restarts and deliberate drops.
#[derive(Clone, Debug)]
pub struct SeqRewriter {
    first_out: u64,
    last_out: Option<u64>,
    /// `None` until the first input after construction or a switch.
    source: Option<Source>,
}

impl SeqRewriter {
    /// A rewriter whose first output is `first_out`.
    pub fn new(first_out: u64) -> Self {
        Self {
            first_out,
            last_out: None,
            source: None,
        }
    }

    /// The next input comes from a new source, with its own numbering.
    ///
    /// The first input after this (mapped or dropped) starts the source: it
    /// is given the output after the highest one so far, and inputs older
    /// than it are refused.
    pub fn switch_source(&mut self) {
        self.source = None;
    }

    /// Map an input sequence number to its output sequence number.
    ///
    /// `None` means do not forward: the input is older than the current
    /// source's first input, or more than the remembered window behind the
    /// newest input, or was marked with [`SeqRewriter::drop_input`]. A
    /// reordered input still inside the window gets the output it would
    /// have had in order, and a duplicate gets the same output again.
    ///
    /// A step of more than 2^15 past the newest input, or two consecutive
    /// inputs more than the window behind it, is the sender restarting its
    /// numbering: it starts a new source, as if `switch_source` had been
    /// called, so the output continues at the highest output + 1.
    pub fn map(&mut self, input: u64) -> Option<u64> {
        let Some(source) = self.source.as_mut() else {
            let out = self.next_out()?;
            self.source = Some(Source::new(input, out));
            return self.record(out);
        };

        match source.place(input) {
            Place::Newest => {
                source.advance_to(input);
                source.probation = None;
            }
            Place::Restart => {
                let out = self.next_out()?;
                self.source = Some(Source::new(input, out));
                return self.record(out);
            }
            Place::InWindow => {
                source.probation = None;
                if input < source.start_in || source.is_dropped(input) {
                    return None;
                }
            }
            Place::TooOld => return None,
        }

        let out = source.output_for(input)?;
        self.record(out)
    }

    /// Record that `input` was deliberately not forwarded.
    ///
    /// When `input` is newer than every input seen, later outputs shift down
    /// by one so the subscriber sees no gap. When it is older (a reordered
    /// packet the caller chose to filter), its output slot was already
    /// reserved and later outputs were already given, so the gap stays;
    /// mapping that input afterwards is refused either way.
    pub fn drop_input(&mut self, input: u64) {
        let Some(source) = self.source.as_mut() else {
            // A drop can start a source too (say, while waiting for a
            // keyframe): the first forwarded packet then takes the output the
            // dropped one would have had.
            let Some(out) = self.next_out() else {
                return;
            };
            self.source = Some(Source::started_by_drop(input, out));
            return;
        };

        match source.place(input) {
            Place::Newest => {
                source.advance_to(input);
                source.probation = None;
                source.mark_dropped(input, Shift::Later);
            }
            Place::Restart => {
                if let Some(out) = self.next_out() {
                    self.source = Some(Source::started_by_drop(input, out));
                }
            }
            Place::InWindow => {
                if input >= source.start_in {
                    source.mark_dropped(input, Shift::None);
                }
            }
            Place::TooOld => {}
        }
    }

    /// The highest output produced so far.
    pub fn last_output(&self) -> Option<u64> {
        self.last_out
    }

    /// Where the next source starts: right after everything output so far.
    fn next_out(&self) -> Option<u64> {
        match self.last_out {
            Some(last) => last.checked_add(1),
            None => Some(self.first_out),
        }
    }

    fn record(&mut self, out: u64) -> Option<u64> {
        self.last_out = Some(self.last_out.map_or(out, |last| last.max(out)));
        Some(out)
    }
}

/// One input numbering space and how it maps onto the output.
///
/// For an input `x` of this source that was not dropped:
/// `out(x) = start_out + (x - start_in) - (shifting drops in [start_in, x))`.
/// Shifting drops are all newer than every earlier input, so they are
/// distinct values inside that range and the subtraction cannot underflow.
#[derive(Clone, Debug)]
struct Source {
    start_in: u64,
    start_out: u64,
    /// Newest input seen, mapped or dropped.
    highest_in: u64,
    /// Shifting drops since `start_in`, including those that have left the
    /// window; the window only needs to tell which are newer than a given
    /// in-window input.
    shifted_total: u64,
    /// Allocated on the first drop: most streams never drop anything.
    drops: Option<Box<DropWindow>>,
    /// RFC 3550 appendix A.1 style: after an input too far behind, the
    /// number that would confirm the sender restarted lower.
    probation: Option<u64>,
}

/// Where an input falls relative to the newest input of its source.
enum Place {
    /// Newer than anything seen, by a plausible step.
    Newest,
    /// The sender restarted its numbering: start a new source here.
    Restart,
    /// Within the window at or behind the newest input.
    InWindow,
    /// Behind the window, and not (yet) confirmed as a restart.
    TooOld,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shift {
    /// The drop closes its gap: later outputs move down by one.
    Later,
    /// The drop only refuses the input; outputs are unchanged.
    None,
}

impl Source {
    fn new(input: u64, out: u64) -> Self {
        Self {
            start_in: input,
            start_out: out,
            highest_in: input,
            shifted_total: 0,
            drops: None,
            probation: None,
        }
    }

    fn started_by_drop(input: u64, out: u64) -> Self {
        let mut source = Self::new(input, out);
        source.mark_dropped(input, Shift::Later);
        source
    }

    /// Classify `input` and, for a sender that restarted lower, keep the
    /// probation state. Only `Newest` and `Restart` let the newest input
    /// move, and only after the caller acts on them.
    fn place(&mut self, input: u64) -> Place {
        if input > self.highest_in {
            if input - self.highest_in > MAX_FORWARD_JUMP {
                Place::Restart
            } else {
                Place::Newest
            }
        } else if self.highest_in - input < WINDOW {
            Place::InWindow
        } else if self.probation == Some(input) {
            // Two consecutive numbers this far back: not a stray packet but a
            // sender that restarted lower. Without this the stream would be
            // refused until the new numbers caught up with the old ones.
            Place::Restart
        } else {
            self.probation = input.checked_add(1);
            Place::TooOld
        }
    }

    /// Make `input` (newer than `highest_in`) the newest input. Ring slots of
    /// inputs that fall out of the window are cleared for reuse.
    fn advance_to(&mut self, input: u64) {
        if let Some(drops) = self.drops.as_mut() {
            let first_new = self.highest_in + 1;
            let lo = first_new.max(input.saturating_sub(WINDOW - 1));
            drops.clear(lo, input);
        }
        self.highest_in = input;
    }

    /// Record a drop of `input`, which is in the window and not older than
    /// `start_in`. A `Shift::Later` drop must be the newest input.
    fn mark_dropped(&mut self, input: u64, shift: Shift) {
        let drops = self.drops.get_or_insert_with(Default::default);
        if drops.contains_dropped(input) {
            return;
        }
        drops.set(input, shift == Shift::Later);
        if shift == Shift::Later {
            self.shifted_total += 1;
        }
    }

    fn is_dropped(&self, input: u64) -> bool {
        self.drops
            .as_ref()
            .is_some_and(|drops| drops.contains_dropped(input))
    }

    /// The output of an in-window, not-dropped input no older than
    /// `start_in`. `None` only on arithmetic overflow at the top of `u64`.
    fn output_for(&self, input: u64) -> Option<u64> {
        let shifted_at_or_after = match &self.drops {
            Some(drops) => drops.count_shifted(input, self.highest_in),
            None => 0,
        };
        let shifted_before = self.shifted_total.checked_sub(shifted_at_or_after)?;
        let steps = (input - self.start_in).checked_sub(shifted_before)?;
        self.start_out.checked_add(steps)
    }
}

/// Bitmaps over the last `WINDOW` inputs, indexed by `input % WINDOW`.
///
/// Fixed size whatever is dropped, so a filter that discards every other
/// packet costs 1 KiB per subscription rather than a growing set.
#[derive(Clone, Debug)]
struct DropWindow {
    /// Inputs that must not be forwarded.
    dropped: [u64; WINDOW_WORDS],
    /// The subset of `dropped` that shifted later outputs.
    shifted: [u64; WINDOW_WORDS],
}

impl Default for DropWindow {
    fn default() -> Self {
        Self {
            dropped: [0; WINDOW_WORDS],
            shifted: [0; WINDOW_WORDS],
        }
    }
}

impl DropWindow {
    fn set(&mut self, input: u64, shifted: bool) {
        let (word, bit) = slot(input);
        self.dropped[word] |= bit;
        if shifted {
            self.shifted[word] |= bit;
        }
    }

    /// Clear the slots of `lo..=hi`, a range no longer than `WINDOW`.
    fn clear(&mut self, lo: u64, hi: u64) {
        for_each_span(lo, hi, |word, mask| {
            self.dropped[word] &= !mask;
            self.shifted[word] &= !mask;
        });
    }

    fn contains_dropped(&self, input: u64) -> bool {
        let (word, bit) = slot(input);
        self.dropped[word] & bit != 0
    }

    /// Shifting drops in `lo..=hi`, a range no longer than `WINDOW`.
    fn count_shifted(&self, lo: u64, hi: u64) -> u64 {
        let mut count = 0;
        for_each_span(lo, hi, |word, mask| {
            count += u64::from((self.shifted[word] & mask).count_ones());
        });
        count
    }
}

fn slot(input: u64) -> (usize, u64) {
    let index = (input % WINDOW) as usize;
    (index / 64, 1 << (index % 64))
}

/// Call `f(word, mask)` for the ring bits of `lo..=hi` (at most `WINDOW`
/// values), a word at a time: at most `WINDOW / 64 + 1` calls.
fn for_each_span(lo: u64, hi: u64, mut f: impl FnMut(usize, u64)) {
    if lo > hi {
        return;
    }
    let mut at = lo;
    loop {
        let index = (at % WINDOW) as usize;
        let word = index / 64;
        let bit = (index % 64) as u64;
        let remaining = hi - at + 1;
        let n = remaining.min(64 - bit);
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << bit
        };
        f(word, mask);
        if n == remaining {
            return;
        }
        at += n;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::test_rng::XorShift;

    fn map_all(seq: &mut SeqRewriter, inputs: impl IntoIterator<Item = u64>) -> Vec<Option<u64>> {
        inputs.into_iter().map(|i| seq.map(i)).collect()
    }

    #[test]
    fn first_input_maps_to_first_out() {
        let mut seq = SeqRewriter::new(500);
        assert_eq!(seq.last_output(), None);
        assert_eq!(seq.map(40_000), Some(500));
        assert_eq!(seq.map(40_001), Some(501));
        assert_eq!(seq.last_output(), Some(501));
    }

    #[test]
    fn in_order_is_strictly_increasing_and_gap_free() {
        let mut seq = SeqRewriter::new(0);
        let out = map_all(&mut seq, 1_000..11_000);
        let expected: Vec<_> = (0..10_000).map(Some).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn loss_is_preserved_as_a_gap() {
        // Packets lost upstream must stay lost downstream so the subscriber
        // NACKs them; only deliberate drops close gaps.
        let mut seq = SeqRewriter::new(0);
        assert_eq!(
            map_all(&mut seq, [10, 11, 14, 15]),
            [Some(0), Some(1), Some(4), Some(5)]
        );
    }

    #[test]
    fn continuity_across_switch_source() {
        let mut seq = SeqRewriter::new(100);
        assert_eq!(
            map_all(&mut seq, [7, 8, 9]),
            [Some(100), Some(101), Some(102)]
        );

        seq.switch_source();
        // A new source numbering far below and far above the old one.
        assert_eq!(map_all(&mut seq, [3, 4]), [Some(103), Some(104)]);
        seq.switch_source();
        assert_eq!(map_all(&mut seq, [60_000, 60_001]), [Some(105), Some(106)]);
        assert_eq!(seq.last_output(), Some(106));
    }

    #[test]
    fn switch_continues_after_highest_not_latest_output() {
        let mut seq = SeqRewriter::new(0);
        assert_eq!(map_all(&mut seq, [10, 12, 11]), [Some(0), Some(2), Some(1)]);
        seq.switch_source();
        assert_eq!(seq.map(900), Some(3));
    }

    #[test]
    fn switch_before_any_output() {
        let mut seq = SeqRewriter::new(42);
        seq.switch_source();
        seq.switch_source();
        assert_eq!(seq.map(9), Some(42));
    }

    #[test]
    fn reordering_within_a_source() {
        let mut seq = SeqRewriter::new(0);
        assert_eq!(
            map_all(&mut seq, [100, 103, 101, 104, 102, 100]),
            [Some(0), Some(3), Some(1), Some(4), Some(2), Some(0)]
        );
        assert_eq!(seq.last_output(), Some(4));
    }

    #[test]
    fn packets_older_than_source_start_are_refused() {
        let mut seq = SeqRewriter::new(0);
        assert_eq!(seq.map(100), Some(0));
        assert_eq!(seq.map(99), None);
        assert_eq!(seq.map(50), None);
        assert_eq!(seq.map(101), Some(1));
    }

    #[test]
    fn late_packets_around_a_switch() {
        let mut seq = SeqRewriter::new(0);
        assert_eq!(map_all(&mut seq, [1_000, 1_002]), [Some(0), Some(2)]);
        // Late packet of the old source, before the switch: fills its gap.
        assert_eq!(seq.map(1_001), Some(1));

        seq.switch_source();
        assert_eq!(seq.map(7_000), Some(3));
        assert_eq!(seq.map(7_002), Some(5));
        // Late packet of the new source, after its start: fills its gap.
        assert_eq!(seq.map(7_001), Some(4));
        // Late packet of the new source from before its first packet: it
        // would need an output the old source already used.
        assert_eq!(seq.map(6_999), None);
    }

    #[test]
    fn duplicates_get_the_same_output_inside_the_window() {
        let mut seq = SeqRewriter::new(0);
        for i in 0..100 {
            assert_eq!(seq.map(5_000 + i), Some(i));
        }
        assert_eq!(seq.map(5_050), Some(50));
        assert_eq!(seq.map(5_000), Some(0));
        assert_eq!(seq.last_output(), Some(99));
    }

    #[test]
    fn packets_behind_the_window_are_refused() {
        let mut seq = SeqRewriter::new(0);
        seq.map(0);
        seq.map(WINDOW + 10);
        assert_eq!(seq.map(11), Some(11));
        assert_eq!(seq.map(10), None);
        assert_eq!(seq.map(0), None);
    }

    #[test]
    fn drops_leave_no_gap() {
        let mut seq = SeqRewriter::new(0);
        assert_eq!(seq.map(10), Some(0));
        seq.drop_input(11);
        seq.drop_input(12);
        assert_eq!(seq.map(13), Some(1));
        seq.drop_input(14);
        assert_eq!(seq.map(15), Some(2));
        assert_eq!(seq.map(16), Some(3));
        // Dropped inputs stay dropped, even as retransmissions.
        assert_eq!(seq.map(11), None);
        assert_eq!(seq.map(14), None);
    }

    #[test]
    fn drops_followed_by_reordered_older_packets() {
        let mut seq = SeqRewriter::new(0);
        assert_eq!(seq.map(10), Some(0));
        // 11 and 12 are late; 13 is dropped, 14 forwarded.
        seq.drop_input(13);
        assert_eq!(seq.map(14), Some(3));
        // 11 and 12 arrive: they keep the outputs they would have had.
        assert_eq!(seq.map(12), Some(2));
        assert_eq!(seq.map(11), Some(1));
        assert_eq!(seq.map(15), Some(4));
        assert_eq!(seq.map(13), None);
    }

    #[test]
    fn dropping_an_old_packet_keeps_later_outputs() {
        let mut seq = SeqRewriter::new(0);
        assert_eq!(map_all(&mut seq, [10, 12]), [Some(0), Some(2)]);
        // 11 arrives late and the caller filters it: output 1 stays a gap,
        // because 12 already went out as 2.
        seq.drop_input(11);
        assert_eq!(seq.map(11), None);
        assert_eq!(seq.map(13), Some(3));
        // Dropping something already forwarded changes nothing downstream.
        seq.drop_input(13);
        assert_eq!(seq.map(14), Some(4));
        assert_eq!(seq.map(13), None);
    }

    #[test]
    fn drop_twice_counts_once() {
        let mut seq = SeqRewriter::new(0);
        seq.map(0);
        seq.drop_input(1);
        seq.drop_input(1);
        assert_eq!(seq.map(2), Some(1));
    }

    #[test]
    fn drop_starts_a_source() {
        // Waiting for a keyframe: the first packets of the source are
        // dropped, the keyframe takes the first output.
        let mut seq = SeqRewriter::new(7);
        seq.drop_input(300);
        seq.drop_input(301);
        assert_eq!(seq.last_output(), None);
        assert_eq!(seq.map(302), Some(7));
        assert_eq!(seq.map(299), None);

        seq.switch_source();
        seq.drop_input(50);
        assert_eq!(seq.map(51), Some(8));
    }

    #[test]
    fn drops_before_the_source_start_are_ignored() {
        let mut seq = SeqRewriter::new(0);
        seq.map(100);
        seq.drop_input(99);
        assert_eq!(seq.map(101), Some(1));
    }

    #[test]
    fn half_the_packets_dropped_for_a_long_time() {
        // A temporal layer filter: every odd input dropped, for far longer
        // than the window, with occasional retransmissions.
        let mut seq = SeqRewriter::new(0);
        let mut expected = 0;
        let mut input = 0u64;
        while input < 20 * WINDOW {
            assert_eq!(seq.map(input), Some(expected), "input {input}");
            seq.drop_input(input + 1);
            if input.is_multiple_of(100) {
                // A retransmission of a forwarded packet ten outputs back
                // gets its original output, not one shifted by later drops.
                assert_eq!(
                    seq.map(input.saturating_sub(20)),
                    Some(expected.saturating_sub(10))
                );
                // And one of a dropped packet stays dropped.
                if input > 0 {
                    assert_eq!(seq.map(input - 1), None);
                }
            }
            expected += 1;
            input += 2;
        }
    }

    #[test]
    fn reordering_across_dropped_packets_after_window_wraps() {
        let mut seq = SeqRewriter::new(0);
        let base = 3 * WINDOW + 17;
        assert_eq!(seq.map(base), Some(0));
        for i in 1..=WINDOW {
            if i.is_multiple_of(3) {
                seq.drop_input(base + i);
            }
        }
        // Two thirds of 1..=WINDOW were never seen and are "lost" or late.
        let out_of = |i: u64| i - i / 3;
        assert_eq!(seq.map(base + WINDOW + 1), Some(out_of(WINDOW + 1)));
        for i in (2..=WINDOW).rev() {
            let got = seq.map(base + i);
            if i.is_multiple_of(3) {
                assert_eq!(got, None, "dropped {i}");
            } else {
                assert_eq!(got, Some(out_of(i)), "late {i}");
            }
        }
        // Input base + 1 is now exactly WINDOW behind the newest: refused.
        assert_eq!(seq.map(base + 1), None);
    }

    #[test]
    fn u16_wraparound_of_extended_numbers() {
        let mut seq = SeqRewriter::new(65_530);
        let inputs = [65_533u64, 65_534, 65_535, 65_536, 65_537];
        assert_eq!(
            map_all(&mut seq, inputs),
            (65_530..65_535).map(Some).collect::<Vec<_>>()
        );
        // Reordered across the wrap point.
        assert_eq!(
            map_all(&mut seq, [65_540, 65_539, 65_538]),
            [Some(65_537), Some(65_536), Some(65_535)]
        );
        // Drops across the wrap point.
        let mut seq = SeqRewriter::new(0);
        seq.map(65_534);
        seq.drop_input(65_535);
        seq.drop_input(65_536);
        assert_eq!(seq.map(65_537), Some(1));
        assert_eq!(seq.map(65_536), None);
        // Output crossing 65535 is plain u64 too.
        let mut seq = SeqRewriter::new(65_535);
        assert_eq!(map_all(&mut seq, [3, 4]), [Some(65_535), Some(65_536)]);
    }

    #[test]
    fn huge_forward_jump_is_a_restart() {
        let mut seq = SeqRewriter::new(0);
        assert_eq!(map_all(&mut seq, [10, 11]), [Some(0), Some(1)]);
        // Within half the 16-bit space: loss, keep the gap.
        assert_eq!(seq.map(11 + MAX_FORWARD_JUMP), Some(1 + MAX_FORWARD_JUMP));

        let mut seq = SeqRewriter::new(0);
        assert_eq!(map_all(&mut seq, [10, 11]), [Some(0), Some(1)]);
        // Beyond: the sender restarted; output continues at last + 1.
        assert_eq!(seq.map(12 + MAX_FORWARD_JUMP), Some(2));
        assert_eq!(seq.map(13 + MAX_FORWARD_JUMP), Some(3));
        // The old numbering is now before the source start.
        assert_eq!(seq.map(12), None);

        // Huge jumps in extended numbers, up to the top of u64.
        assert_eq!(seq.map(u64::MAX - 1), Some(4));
        assert_eq!(seq.map(u64::MAX), Some(5));
    }

    #[test]
    fn huge_forward_jump_by_a_drop_is_a_restart() {
        let mut seq = SeqRewriter::new(0);
        seq.map(10);
        seq.drop_input(1_000_000);
        assert_eq!(seq.map(1_000_001), Some(1));
        assert_eq!(seq.map(11), None);
    }

    #[test]
    fn backward_restart_needs_two_consecutive_packets() {
        let mut seq = SeqRewriter::new(0);
        for i in 0..10 {
            seq.map(20_000 + i);
        }
        // A single stray old packet is refused.
        assert_eq!(seq.map(100), None);
        assert_eq!(seq.map(20_010), Some(10));
        // Not consecutive: a normal packet in between resets probation.
        assert_eq!(seq.map(101), None);
        assert_eq!(seq.map(20_011), Some(11));
        assert_eq!(seq.map(102), None);
        // The sender really restarted lower: the second consecutive number
        // starts a new source right after the last output.
        assert_eq!(seq.map(200), None);
        assert_eq!(seq.map(201), Some(12));
        assert_eq!(seq.map(202), Some(13));
        assert_eq!(seq.map(200), None);
    }

    #[test]
    fn never_underflows_or_overflows() {
        let mut seq = SeqRewriter::new(0);
        assert_eq!(seq.map(0), Some(0));
        assert_eq!(seq.map(u64::MAX), Some(1));
        seq.drop_input(0);
        seq.drop_input(u64::MAX);

        let mut seq = SeqRewriter::new(u64::MAX - 1);
        assert_eq!(seq.map(5), Some(u64::MAX - 1));
        assert_eq!(seq.map(6), Some(u64::MAX));
        assert_eq!(seq.map(7), None);
        seq.switch_source();
        assert_eq!(seq.map(1), None);
        seq.drop_input(2);
        assert_eq!(seq.last_output(), Some(u64::MAX));
    }

    #[test]
    fn span_iteration_covers_exactly_the_range() {
        for (lo, hi) in [
            (0, 0),
            (0, 63),
            (0, 64),
            (63, 64),
            (5, 4_100),
            (4_090, 4_100),
            (10, 10 + WINDOW - 1),
        ] {
            let mut covered = [0u64; WINDOW_WORDS];
            let mut calls = 0;
            for_each_span(lo, hi, |word, mask| {
                assert_eq!(covered[word] & mask, 0, "overlap");
                covered[word] |= mask;
                calls += 1;
            });
            let bits: u64 = covered.iter().map(|w| u64::from(w.count_ones())).sum();
            assert_eq!(bits, hi - lo + 1, "{lo}..={hi}");
            for v in lo..=hi {
                let (word, bit) = slot(v);
                assert_ne!(covered[word] & bit, 0);
            }
            assert!(calls <= WINDOW_WORDS + 1);
        }
        for_each_span(5, 4, |_, _| panic!("empty range"));
        // The top of u64 does not overflow.
        let mut calls = 0;
        for_each_span(u64::MAX - 100, u64::MAX, |_, _| calls += 1);
        assert!(calls > 0);
    }

    /// Random interleavings of map, drop and switch, against the
    /// invariants the subscriber relies on: one output never stands for two
    /// different packets, and the highest output never decreases.
    #[test]
    fn random_operations_keep_outputs_unique() {
        let mut rng = XorShift::new(0x5345_5121);
        for round in 0..20 {
            let mut seq = SeqRewriter::new(rng.next_u64() >> 20);
            let mut owner: HashMap<u64, (u32, u64)> = HashMap::new();
            let mut epoch = 0u32;
            let mut cursor = rng.next_u64() >> rng.below(64);
            for _ in 0..5_000 {
                let input = match rng.below(10) {
                    0 => cursor.wrapping_sub(rng.below(2 * WINDOW)),
                    1 if rng.below(20) == 0 => rng.next_u64(),
                    _ => {
                        cursor = cursor.wrapping_add(rng.below(4));
                        cursor
                    }
                };
                let before = seq.last_output();
                match rng.below(10) {
                    0 if rng.below(10) == 0 => {
                        seq.switch_source();
                        epoch += 1;
                    }
                    0..=2 => seq.drop_input(input),
                    _ => {
                        if let Some(out) = seq.map(input) {
                            let previous = owner.insert(out, (epoch, input));
                            if let Some(previous) = previous {
                                assert_eq!(
                                    previous.1, input,
                                    "round {round}: output {out} reused for another input"
                                );
                            }
                        }
                    }
                }
                assert!(seq.last_output() >= before);
            }
        }
    }

    /// The same rules as `SeqRewriter`, written the obvious way with
    /// unbounded sets, to check the ring bitmaps and the running count.
    struct Reference {
        first_out: u64,
        last_out: Option<u64>,
        source: Option<RefSource>,
    }

    struct RefSource {
        start_in: u64,
        start_out: u64,
        highest_in: u64,
        dropped: std::collections::BTreeSet<u64>,
        shifted: std::collections::BTreeSet<u64>,
        probation: Option<u64>,
    }

    enum RefPlace {
        Newest,
        Restart,
        InWindow,
        TooOld,
    }

    impl Reference {
        fn next_out(&self) -> Option<u64> {
            self.last_out
                .map_or(Some(self.first_out), |l| l.checked_add(1))
        }

        fn start(&mut self, input: u64, dropped: bool) -> Option<u64> {
            let out = self.next_out()?;
            let mut source = RefSource {
                start_in: input,
                start_out: out,
                highest_in: input,
                dropped: Default::default(),
                shifted: Default::default(),
                probation: None,
            };
            if dropped {
                source.dropped.insert(input);
                source.shifted.insert(input);
            } else {
                self.last_out = Some(self.last_out.map_or(out, |l| l.max(out)));
            }
            self.source = Some(source);
            Some(out)
        }

        fn place(source: &mut RefSource, input: u64) -> RefPlace {
            if input > source.highest_in {
                if input - source.highest_in > MAX_FORWARD_JUMP {
                    RefPlace::Restart
                } else {
                    RefPlace::Newest
                }
            } else if source.highest_in - input < WINDOW {
                RefPlace::InWindow
            } else if source.probation == Some(input) {
                RefPlace::Restart
            } else {
                source.probation = input.checked_add(1);
                RefPlace::TooOld
            }
        }

        fn map(&mut self, input: u64) -> Option<u64> {
            let Some(source) = self.source.as_mut() else {
                return self.start(input, false);
            };
            match Self::place(source, input) {
                RefPlace::Restart => return self.start(input, false),
                RefPlace::TooOld => return None,
                RefPlace::Newest => {
                    source.highest_in = input;
                    source.probation = None;
                }
                RefPlace::InWindow => {
                    source.probation = None;
                    if input < source.start_in || source.dropped.contains(&input) {
                        return None;
                    }
                }
            }
            let before = source.shifted.range(source.start_in..input).count() as u64;
            let out = source
                .start_out
                .checked_add(input - source.start_in - before)?;
            self.last_out = Some(self.last_out.map_or(out, |l| l.max(out)));
            Some(out)
        }

        fn drop_input(&mut self, input: u64) {
            let Some(source) = self.source.as_mut() else {
                self.start(input, true);
                return;
            };
            match Self::place(source, input) {
                RefPlace::Restart => {
                    self.start(input, true);
                }
                RefPlace::TooOld => {}
                RefPlace::Newest => {
                    source.highest_in = input;
                    source.probation = None;
                    source.dropped.insert(input);
                    source.shifted.insert(input);
                }
                RefPlace::InWindow => {
                    if input >= source.start_in {
                        source.dropped.insert(input);
                    }
                }
            }
        }
    }

    #[test]
    fn matches_unbounded_reference() {
        let mut rng = XorShift::new(0x0bad_5eed);
        for round in 0..50 {
            let first_out = rng.next_u64() >> 8;
            let mut seq = SeqRewriter::new(first_out);
            let mut reference = Reference {
                first_out,
                last_out: None,
                source: None,
            };
            let mut cursor = rng.next_u64() >> 4;
            // Some rounds drop most packets, some almost none.
            let drop_per_16 = rng.below(16);
            for step in 0..20_000 {
                let input = match rng.below(32) {
                    // Late by up to twice the window.
                    0..=3 => cursor.saturating_sub(rng.below(2 * WINDOW)),
                    // Just behind: the common reordering.
                    4..=7 => cursor.saturating_sub(rng.below(8)),
                    // A huge jump, either way.
                    8 if rng.below(50) == 0 => {
                        cursor = rng.next_u64() >> 4;
                        cursor
                    }
                    // A consecutive pair far back: a restart lower.
                    9 if rng.below(50) == 0 => {
                        let back = cursor.saturating_sub(WINDOW + rng.below(1_000));
                        seq.map(back);
                        reference.map(back);
                        back + 1
                    }
                    _ => {
                        cursor += rng.below(5);
                        cursor
                    }
                };
                if rng.below(500) == 0 {
                    seq.switch_source();
                    reference.source = None;
                } else if rng.below(16) < drop_per_16 {
                    seq.drop_input(input);
                    reference.drop_input(input);
                } else {
                    assert_eq!(
                        seq.map(input),
                        reference.map(input),
                        "round {round} step {step} input {input}"
                    );
                }
                assert_eq!(seq.last_output(), reference.last_out);
            }
        }
    }

    /// In-order input with random drops and random loss: outputs are
    /// exactly consecutive except where packets were lost.
    #[test]
    fn random_drops_in_order_are_gap_free() {
        let mut rng = XorShift::new(0xd209);
        let mut seq = SeqRewriter::new(1_000);
        let mut expected = 1_000;
        let mut input = 65_000u64;
        for _ in 0..200_000 {
            input += 1;
            match rng.below(8) {
                0..=2 => seq.drop_input(input),
                3 => expected += 1, // lost upstream: the gap is kept
                _ => {
                    assert_eq!(seq.map(input), Some(expected), "input {input}");
                    expected += 1;
                }
            }
        }
    }
}
