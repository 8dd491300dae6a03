//! What a subscriber counts per kind of media from the stamps (or, for simulcast video,
//! the sequence numbers) of what it receives: packets, duplicates, loss, latency, and
//! gaps long enough to be freezes.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hist::Histogram;
use crate::stamp::Stamp;

/// A gap between packets of one track longer than this counts as a freeze.
pub const FREEZE_GAP: Duration = Duration::from_millis(500);

/// Receive statistics of one kind of media.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecvStats {
    /// The sending track (from the stamps), once something arrived.
    pub source: Option<u32>,
    /// Packets received (duplicates included).
    pub packets: u64,
    /// Distinct stamped packets received.
    pub unique: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// First stamp index seen.
    pub first_index: Option<u32>,
    /// Highest stamp index seen.
    pub max_index: Option<u32>,
    /// Freezes: gaps between packets longer than [`FREEZE_GAP`].
    pub freezes: u64,
    /// Packets whose stamp index lay too far from the first one to track.
    pub out_of_range: u64,
    /// Latency (stamp's send time to receipt, microseconds) of every distinct packet.
    #[serde(skip)]
    pub latency: Histogram,
    #[serde(skip)]
    seen: Vec<u64>,
    #[serde(skip)]
    last_arrival: Option<Instant>,
}

/// Most distinct indices tracked per stream (64 Mi packets: days of video).
const MAX_TRACKED_WORDS: usize = 1 << 20;

impl RecvStats {
    /// Account for one received packet: `now` is its arrival, `now_us` the same instant as
    /// wall-clock microseconds (to compare with the stamp's send time).
    pub fn record(&mut self, stamp: Stamp, now: Instant, now_us: u64) {
        self.source.get_or_insert(stamp.source);
        self.record_index(stamp.index, Some(stamp.sent_us), now, now_us);
    }

    /// Account for one received packet by an index of its own (a simulcast subscriber's
    /// RTP sequence number: its stamps come from one source per layer), sampling latency
    /// from `sent_us` when the packet had a stamp. The source stays unknown, so loss is
    /// what is missing between the first and the highest index.
    pub fn record_index(&mut self, index: u32, sent_us: Option<u64>, now: Instant, now_us: u64) {
        self.packets += 1;
        if let Some(last) = self.last_arrival
            && now.saturating_duration_since(last) > FREEZE_GAP
        {
            self.freezes += 1;
        }
        self.last_arrival = Some(now);
        let first = *self.first_index.get_or_insert(index);
        if index < first {
            // A reordered packet older than the first: count it, keep the bitmap simple.
            self.unique += 1;
            return;
        }
        let offset = (index - first) as usize;
        let (word, bit) = (offset / 64, offset % 64);
        // Bounded: a client runs for a bounded time at a bounded packet rate.
        if word >= self.seen.len() {
            if word >= MAX_TRACKED_WORDS {
                self.out_of_range += 1;
                return;
            }
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.unique += 1;
        self.max_index = Some(self.max_index.map_or(index, |m| m.max(index)));
        if let Some(sent) = sent_us {
            self.latency.record(now_us.saturating_sub(sent));
        }
    }

    /// Packets missing between the first and the highest index received: loss so far,
    /// not counting what is still in flight.
    pub fn gaps(&self) -> u64 {
        match (self.first_index, self.max_index) {
            (Some(f), Some(m)) => (u64::from(m - f) + 1).saturating_sub(self.unique),
            _ => 0,
        }
    }

    /// Packets expected between the first one received and `last_sent` (inclusive).
    pub fn expected(&self, last_sent: u32) -> u64 {
        match self.first_index {
            Some(f) if last_sent >= f => u64::from(last_sent - f) + 1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(index: u32, sent_us: u64) -> Stamp {
        Stamp {
            source: 9,
            index,
            sent_us,
        }
    }

    #[test]
    fn loss_duplicates_and_latency_are_counted() {
        let t0 = Instant::now();
        let mut s = RecvStats::default();
        // Indices 100..=199 with every tenth one missing and 150 twice.
        for i in 100..200u32 {
            if i % 10 == 3 {
                continue;
            }
            let at = t0 + Duration::from_millis(u64::from(i - 100) * 20);
            s.record(stamp(i, 1_000_000), at, 1_000_000 + 2_000);
        }
        s.record(stamp(150, 1_000_000), t0, 1_000_000 + 2_000);
        assert_eq!(s.source, Some(9));
        assert_eq!(s.first_index, Some(100));
        assert_eq!(s.max_index, Some(199));
        assert_eq!(s.packets, 91);
        assert_eq!(s.unique, 90);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.gaps(), 10);
        // The sender sent up to 209: ten more in flight or lost at the tail.
        assert_eq!(s.expected(209), 110);
        assert_eq!(s.expected(50), 0, "a sender behind the first index");
        assert_eq!(s.latency.count(), 90, "duplicates are not sampled");
        let p50 = s.latency.quantile(0.5).unwrap();
        assert!((1_940..=2_000).contains(&p50), "{p50}");
        assert_eq!(s.freezes, 0);
    }

    #[test]
    fn gaps_longer_than_the_freeze_threshold_are_freezes() {
        let t0 = Instant::now();
        let mut s = RecvStats::default();
        let mut at = t0;
        for i in 0..10u32 {
            // One long stall after packet 4, one just under the threshold after 7.
            at += match i {
                5 => FREEZE_GAP + Duration::from_millis(1),
                8 => FREEZE_GAP,
                _ => Duration::from_millis(33),
            };
            s.record(stamp(i, 0), at, 0);
        }
        assert_eq!(s.freezes, 1);
        assert_eq!(s.gaps(), 0);
    }

    #[test]
    fn reordered_and_far_packets_do_not_break_accounting() {
        let t0 = Instant::now();
        let mut s = RecvStats::default();
        s.record(stamp(10, 0), t0, 0);
        s.record(stamp(12, 0), t0, 0);
        s.record(stamp(11, 0), t0, 0);
        s.record(stamp(5, 0), t0, 0); // older than the first: counted, not tracked
        s.record(stamp(u32::MAX, 0), t0, 0); // absurdly far: counted apart
        assert_eq!(s.unique, 4);
        assert_eq!(s.out_of_range, 1);
        assert_eq!(s.max_index, Some(12));
        assert_eq!(s.gaps(), 0);
    }
}
