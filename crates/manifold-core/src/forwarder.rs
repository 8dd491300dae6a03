//! The per-subscriber forwarding decision: given one packet of the source a subscriber's
//! m-line follows, drop it (with a reason) or forward it with rewritten sequence number and
//! timestamp.
//!
//! Decide, then apply: `Forwarder::decide` returns a plain value and touches no `Rtc`, so
//! every rule here is tested without sockets or sessions. The outgoing numbering is one
//! continuous stream per subscriber m-line, whatever happens to the sources behind it: a late
//! join, a publisher that reconnects, a player whose room changes publisher.

use std::time::Instant;

use manifold_api::MediaKind;
use manifold_rtp::{DropReason, SeqRewriter, TsRewriter};

/// What the shard knows about one incoming packet, computed once per packet (not per
/// subscriber).
#[derive(Clone, Copy, Debug)]
pub struct PacketMeta {
    /// Extended sequence number in the source's numbering.
    pub seq: u64,
    /// Extended RTP timestamp in the source's numbering.
    pub ts: u64,
    /// Clock rate of `ts`.
    pub clock_rate: u32,
    /// The packet starts (or is part of the start of) a keyframe.
    pub keyframe: bool,
}

/// The decision for one packet and one subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Do not send; count under this reason.
    Drop(DropReason),
    /// Send with these numbers.
    Forward {
        /// Outgoing extended sequence number.
        seq: u64,
        /// Outgoing RTP timestamp (low 32 bits of the extended value).
        ts: u32,
        /// This packet starts the output after a (re)start: the first of a new source.
        switched: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No source attached.
    Idle,
    /// A source is attached but video must start on a keyframe.
    WaitingForKeyframe,
    /// A source is attached; the next forwarded packet starts it.
    Starting,
    /// Forwarding.
    Forwarding,
}

/// Rewrites one source after another into one continuous outgoing stream.
#[derive(Debug)]
pub struct Forwarder {
    kind: MediaKind,
    state: State,
    seq: SeqRewriter,
    ts: TsRewriter,
    last_forward: Option<(Instant, u32)>,
}

impl Forwarder {
    /// A forwarder whose first packet goes out with `first_seq` / `first_ts`. Pick both at
    /// random below 2^15 / 2^31 so a new stream never starts with a non-zero SRTP rollover
    /// counter.
    pub fn new(kind: MediaKind, first_seq: u64, first_ts: u64) -> Self {
        Forwarder {
            kind,
            state: State::Idle,
            seq: SeqRewriter::new(first_seq),
            ts: TsRewriter::new(first_ts),
            last_forward: None,
        }
    }

    /// A new source is attached (or the old one restarted its numbering): the next packet
    /// forwarded continues the output where it stopped; video waits for a keyframe first.
    pub fn switch_source(&mut self) {
        self.state = match self.kind {
            MediaKind::Audio => State::Starting,
            MediaKind::Video => State::WaitingForKeyframe,
        };
    }

    /// The source went away; drop everything until another is attached.
    pub fn detach(&mut self) {
        self.state = State::Idle;
    }

    /// Decide what to do with `pkt`, which arrived at `now`.
    pub fn decide(&mut self, pkt: &PacketMeta, now: Instant) -> Decision {
        let switched = match self.state {
            State::Idle => return Decision::Drop(DropReason::NoSubscriber),
            State::WaitingForKeyframe if !pkt.keyframe => {
                return Decision::Drop(DropReason::WaitingForKeyframe);
            }
            State::WaitingForKeyframe | State::Starting => {
                self.seq.switch_source();
                self.ts.switch_source(self.gap_ticks(now, pkt.clock_rate));
                self.state = State::Forwarding;
                true
            }
            State::Forwarding => false,
        };
        let Some(seq) = self.seq.map(pkt.seq) else {
            return Decision::Drop(DropReason::TooOld);
        };
        let Some(ts) = self.ts.map(pkt.ts) else {
            return Decision::Drop(DropReason::TooOld);
        };
        self.last_forward = Some((now, pkt.clock_rate));
        Decision::Forward {
            seq,
            // RTP carries the low 32 bits; the receiver extends them again.
            ts: ts as u32,
            switched,
        }
    }

    /// `pkt` will not be forwarded although it could have been (the subscriber cannot take
    /// its codec): later packets close the gap it would leave in the outgoing numbering.
    pub fn skip(&mut self, pkt: &PacketMeta) {
        if self.state == State::Forwarding {
            self.seq.drop_input(pkt.seq);
        }
    }

    /// Is the forwarder waiting for a keyframe before it can forward video?
    pub fn wants_keyframe(&self) -> bool {
        self.state == State::WaitingForKeyframe
    }

    /// Is a source attached?
    pub fn is_attached(&self) -> bool {
        self.state != State::Idle
    }

    /// Output time between the last packet of the previous source and the first of the new
    /// one: the wall-clock time that passed, so players keep their clocks in step.
    fn gap_ticks(&self, now: Instant, clock_rate: u32) -> u64 {
        let Some((at, _)) = self.last_forward else {
            return 1;
        };
        let elapsed = now.saturating_duration_since(at);
        let ticks = elapsed.as_micros() * u128::from(clock_rate) / 1_000_000;
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test's epoch
mod tests {
    use super::*;
    use std::time::Duration;

    fn pkt(seq: u64, ts: u64, keyframe: bool) -> PacketMeta {
        PacketMeta {
            seq,
            ts,
            clock_rate: 90_000,
            keyframe,
        }
    }

    fn fwd(d: Decision) -> (u64, u32) {
        match d {
            Decision::Forward { seq, ts, .. } => (seq, ts),
            Decision::Drop(r) => panic!("expected forward, got drop {r:?}"),
        }
    }

    #[test]
    fn idle_drops_everything() {
        let mut f = Forwarder::new(MediaKind::Audio, 100, 1000);
        let now = Instant::now();
        assert_eq!(
            f.decide(&pkt(1, 1, true), now),
            Decision::Drop(DropReason::NoSubscriber)
        );
    }

    #[test]
    fn video_waits_for_keyframe_then_forwards_continuously() {
        let mut f = Forwarder::new(MediaKind::Video, 100, 1000);
        let now = Instant::now();
        f.switch_source();
        assert!(f.wants_keyframe());
        assert_eq!(
            f.decide(&pkt(50, 9000, false), now),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(fwd(f.decide(&pkt(51, 12000, true), now)), (100, 1000));
        assert_eq!(fwd(f.decide(&pkt(52, 12000, false), now)), (101, 1000));
        assert_eq!(fwd(f.decide(&pkt(53, 15000, false), now)), (102, 4000));
    }

    #[test]
    fn audio_starts_immediately() {
        let mut f = Forwarder::new(MediaKind::Audio, 7, 0);
        f.switch_source();
        let now = Instant::now();
        let d = f.decide(
            &PacketMeta {
                seq: 1000,
                ts: 48_000,
                clock_rate: 48_000,
                keyframe: false,
            },
            now,
        );
        assert_eq!(
            d,
            Decision::Forward {
                seq: 7,
                ts: 0,
                switched: true
            }
        );
    }

    #[test]
    fn source_switch_keeps_output_continuous_and_time_proportional() {
        let mut f = Forwarder::new(MediaKind::Video, 10, 0);
        let t0 = Instant::now();
        f.switch_source();
        for i in 0..10u64 {
            fwd(f.decide(&pkt(500 + i, 3000 * i, i == 0), t0));
        }
        // Old source stops; a new one with unrelated numbering appears 2 s later.
        f.switch_source();
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            f.decide(&pkt(40_000, 7_777_777, false), t1),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        let (seq, ts) = fwd(f.decide(&pkt(40_001, 7_780_777, true), t1));
        assert_eq!(
            seq, 20,
            "sequence continues right after the last output (19)"
        );
        assert_eq!(
            u64::from(ts),
            27_000 + 180_000,
            "timestamp advances by the 2 s that passed"
        );
        // Late packets of the new source from before its start are dropped.
        assert_eq!(
            f.decide(&pkt(40_000, 7_777_777, false), t1),
            Decision::Drop(DropReason::TooOld)
        );
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        let mut f = Forwarder::new(MediaKind::Video, 0, 0);
        let now = Instant::now();
        // Before the start there is nothing to close.
        f.skip(&pkt(9, 0, false));
        f.switch_source();
        assert_eq!(fwd(f.decide(&pkt(10, 0, true), now)).0, 0);
        f.skip(&pkt(11, 0, false));
        f.skip(&pkt(12, 0, false));
        assert_eq!(fwd(f.decide(&pkt(13, 3000, false), now)).0, 1);
        // A skipped packet stays skipped if it shows up again.
        assert_eq!(
            f.decide(&pkt(11, 0, false), now),
            Decision::Drop(DropReason::TooOld)
        );
    }

    #[test]
    fn reordered_packets_keep_their_place() {
        let mut f = Forwarder::new(MediaKind::Audio, 0, 0);
        f.switch_source();
        let now = Instant::now();
        assert_eq!(fwd(f.decide(&pkt(10, 0, false), now)).0, 0);
        assert_eq!(fwd(f.decide(&pkt(12, 0, false), now)).0, 2);
        assert_eq!(fwd(f.decide(&pkt(11, 0, false), now)).0, 1);
        assert_eq!(fwd(f.decide(&pkt(13, 0, false), now)).0, 3);
    }
}
