//! The per-subscription forwarding decision: given one packet of the track a subscriber's
//! m-line follows, drop it (with a reason) or forward it with rewritten sequence number,
//! timestamp and VP8 picture numbers, and whether it starts a new layer or source.
//!
//! This is where a layer switch happens. The forwarder holds the subscription's **target**
//! layer (what the allocator chose, `None` while video is paused) and its **current** layer
//! (what it forwards now). Packets of the current layer go out; a switch to the target
//! happens only on a keyframe of the target layer, and until then the current layer keeps
//! flowing, so a switch never leaves the decoder without a picture. Temporal layers above
//! `max_temporal` are dropped, and their gap is closed in the numbering.
//!
//! Decide, then apply: `Forwarder::decide` returns a plain value and touches no `Rtc`, so
//! every rule here is tested without sockets or sessions. The outgoing numbering is one
//! continuous stream per subscriber m-line, whatever happens to the sources behind it: a late
//! join, a layer switch, a publisher that reconnects, a player whose room changes publisher.

use std::time::Instant;

use manifold_api::MediaKind;
use manifold_rtp::{DropReason, SeqRewriter, TsRewriter, Vp8Descriptor, Vp8Fields, Vp8Rewriter};

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
    /// Which of the track's layers it belongs to (an index into the track's layers).
    pub layer: u8,
    /// Its VP8 payload descriptor, for VP8.
    pub vp8: Option<Vp8Descriptor>,
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
        /// This packet starts the output after a (re)start or a layer switch.
        switched: bool,
        /// VP8 PictureID and TL0PICIDX to write into the payload descriptor.
        vp8: Option<Vp8Fields>,
    },
}

/// Rewrites one source and layer after another into one continuous outgoing stream.
#[derive(Debug)]
pub struct Forwarder {
    kind: MediaKind,
    /// A source is attached.
    attached: bool,
    /// The layer forwarded now; `None` before the first packet of a (new) source or layer.
    current: Option<u8>,
    /// The layer wanted; `None`: video paused.
    target: Option<u8>,
    /// Highest VP8 temporal layer forwarded.
    max_temporal: u8,
    seq: SeqRewriter,
    ts: TsRewriter,
    vp8: Vp8Rewriter,
    last_forward: Option<(Instant, u32)>,
}

impl Forwarder {
    /// A forwarder whose first packet goes out with `first_seq` / `first_ts`. Pick both at
    /// random below 2^15 / 2^31 so a new stream never starts with a non-zero SRTP rollover
    /// counter. It targets layer 0 until told otherwise.
    pub fn new(kind: MediaKind, first_seq: u64, first_ts: u64) -> Self {
        Forwarder {
            kind,
            attached: false,
            current: None,
            target: Some(0),
            max_temporal: u8::MAX,
            seq: SeqRewriter::new(first_seq),
            ts: TsRewriter::new(first_ts),
            vp8: Vp8Rewriter::new(),
            last_forward: None,
        }
    }

    /// A new source is attached (or the old one restarted its numbering): the next packet
    /// forwarded continues the output where it stopped; video waits for a keyframe first.
    pub fn switch_source(&mut self) {
        self.attached = true;
        self.current = None;
    }

    /// The encoder of `layer` restarted (new SSRC, new numbering): if it is the one
    /// forwarded, start again on its next keyframe.
    pub fn restart_layer(&mut self, layer: u8) {
        if self.current == Some(layer) {
            self.current = None;
        }
    }

    /// The source went away; drop everything until another is attached.
    pub fn detach(&mut self) {
        self.attached = false;
        self.current = None;
    }

    /// Aim at `layer`, or pause video with `None` (at once: nothing more goes out). A switch
    /// to another layer happens at its next keyframe; until then the current layer keeps
    /// flowing, unless `drop_current` (the link is congested: sending more of the layer it
    /// cannot carry only delays the keyframe of the one it can).
    pub fn set_target(&mut self, layer: Option<u8>, drop_current: bool) {
        self.target = layer;
        if layer.is_none() || (drop_current && self.current != layer) {
            self.current = None;
        }
    }

    /// Forward VP8 temporal layers up to `tid` only.
    pub fn set_max_temporal(&mut self, tid: u8) {
        self.max_temporal = tid;
    }

    /// The layer wanted (`None`: paused).
    pub fn target(&self) -> Option<u8> {
        self.target
    }

    /// The layer forwarded now.
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// Decide what to do with `pkt`, which arrived at `now`.
    pub fn decide(&mut self, pkt: &PacketMeta, now: Instant) -> Decision {
        if !self.attached {
            return Decision::Drop(DropReason::NoSubscriber);
        }
        let Some(target) = self.target else {
            return Decision::Drop(DropReason::Paused);
        };
        let switched = if self.current == Some(pkt.layer) {
            if let Some(d) = &pkt.vp8
                && d.tid.is_some_and(|t| t > self.max_temporal)
            {
                // A picture of a temporal layer not forwarded: later ones close its gap.
                self.seq.drop_input(pkt.seq);
                self.vp8.drop_picture(d);
                return Decision::Drop(DropReason::OtherLayer);
            }
            false
        } else if pkt.layer == target {
            if self.kind == MediaKind::Video && !pkt.keyframe {
                return Decision::Drop(DropReason::WaitingForKeyframe);
            }
            self.current = Some(target);
            self.seq.switch_source();
            self.ts.switch_source(self.gap_ticks(now, pkt.clock_rate));
            self.vp8.switch_source();
            true
        } else {
            return Decision::Drop(DropReason::OtherLayer);
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
            vp8: pkt.vp8.as_ref().map(|d| self.vp8.rewrite(d)),
        }
    }

    /// `pkt` will not be forwarded although it could have been (the subscriber cannot take
    /// its codec): later packets close the gap it would leave in the outgoing numbering.
    pub fn skip(&mut self, pkt: &PacketMeta) {
        if self.current == Some(pkt.layer) {
            self.seq.drop_input(pkt.seq);
        }
    }

    /// The layer this forwarder waits for a keyframe of, if it does: a video source is
    /// attached and the target layer is not the one forwarded.
    pub fn wants_keyframe(&self) -> Option<u8> {
        match (self.kind, self.attached, self.target) {
            (MediaKind::Video, true, Some(t)) if self.current != Some(t) => Some(t),
            _ => None,
        }
    }

    /// Is a source attached?
    pub fn is_attached(&self) -> bool {
        self.attached
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
        layer_pkt(0, seq, ts, keyframe)
    }

    fn layer_pkt(layer: u8, seq: u64, ts: u64, keyframe: bool) -> PacketMeta {
        PacketMeta {
            seq,
            ts,
            clock_rate: 90_000,
            keyframe,
            layer,
            vp8: None,
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
        assert_eq!(f.wants_keyframe(), Some(0));
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
                layer: 0,
                vp8: None,
            },
            now,
        );
        assert_eq!(
            d,
            Decision::Forward {
                seq: 7,
                ts: 0,
                switched: true,
                vp8: None,
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

    /// A VP8 payload starting a frame with 15-bit PictureID `pid`, TL0PICIDX `tl0`, TID `tid`.
    fn vp8_payload(pid: u16, tl0: u8, tid: u8) -> Vec<u8> {
        vec![
            0x90,
            0xe0,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            tl0,
            (tid << 6) | 0x20,
            0x00,
            0x00,
        ]
    }

    fn vp8_pkt(
        layer: u8,
        seq: u64,
        ts: u64,
        keyframe: bool,
        pid: u16,
        tl0: u8,
        tid: u8,
    ) -> PacketMeta {
        PacketMeta {
            vp8: Vp8Descriptor::parse(&vp8_payload(pid, tl0, tid)),
            ..layer_pkt(layer, seq, ts, keyframe)
        }
    }

    fn out(d: Decision) -> (u64, Option<Vp8Fields>, bool) {
        match d {
            Decision::Forward {
                seq, vp8, switched, ..
            } => (seq, vp8, switched),
            Decision::Drop(r) => panic!("expected forward, got drop {r:?}"),
        }
    }

    #[test]
    fn a_layer_switch_waits_for_the_target_keyframe_and_keeps_the_current_layer_meanwhile() {
        let mut f = Forwarder::new(MediaKind::Video, 0, 0);
        let t = Instant::now();
        f.switch_source();
        f.set_target(Some(2), false);
        // Start on the high layer's keyframe; the other layers are not for us.
        assert_eq!(
            f.decide(&layer_pkt(0, 100, 0, true), t),
            Decision::Drop(DropReason::OtherLayer)
        );
        assert_eq!(out(f.decide(&layer_pkt(2, 900, 0, true), t)).0, 0);
        assert_eq!(out(f.decide(&layer_pkt(2, 901, 0, false), t)).0, 1);
        // The allocator moves it down: the high layer keeps flowing until the low layer's
        // keyframe, then only the low layer goes out, numbering continuous.
        f.set_target(Some(0), false);
        assert_eq!(f.wants_keyframe(), Some(0));
        assert_eq!(
            f.decide(&layer_pkt(0, 101, 3000, false), t),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(out(f.decide(&layer_pkt(2, 902, 3000, false), t)).0, 2);
        let (seq, _, switched) = out(f.decide(&layer_pkt(0, 102, 6000, true), t));
        assert_eq!((seq, switched), (3, true));
        assert_eq!(f.current(), Some(0));
        assert_eq!(f.wants_keyframe(), None);
        assert_eq!(
            f.decide(&layer_pkt(2, 903, 6000, false), t),
            Decision::Drop(DropReason::OtherLayer)
        );
        assert_eq!(out(f.decide(&layer_pkt(0, 103, 9000, false), t)).0, 4);
    }

    #[test]
    fn a_congested_down_switch_stops_the_current_layer_at_once() {
        let mut f = Forwarder::new(MediaKind::Video, 0, 0);
        let t = Instant::now();
        f.switch_source();
        f.set_target(Some(2), false);
        assert_eq!(out(f.decide(&layer_pkt(2, 900, 0, true), t)).0, 0);
        f.set_target(Some(0), true);
        assert_eq!(
            f.decide(&layer_pkt(2, 901, 3000, false), t),
            Decision::Drop(DropReason::OtherLayer),
            "the layer the link cannot carry stops"
        );
        let (seq, _, switched) = out(f.decide(&layer_pkt(0, 50, 3000, true), t));
        assert_eq!(
            (seq, switched),
            (1, true),
            "and the low layer continues the numbering"
        );
    }

    #[test]
    fn pausing_stops_at_once_and_resuming_waits_for_a_keyframe() {
        let mut f = Forwarder::new(MediaKind::Video, 50, 0);
        let t = Instant::now();
        f.switch_source();
        assert_eq!(out(f.decide(&pkt(10, 0, true), t)).0, 50);
        f.set_target(None, false);
        assert_eq!(f.wants_keyframe(), None, "a paused video wants nothing");
        assert_eq!(
            f.decide(&pkt(11, 0, false), t),
            Decision::Drop(DropReason::Paused)
        );
        f.set_target(Some(0), false);
        assert_eq!(
            f.decide(&pkt(12, 3000, false), t),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        let (seq, _, switched) = out(f.decide(&pkt(13, 6000, true), t));
        assert_eq!((seq, switched), (51, true), "no gap for the paused packets");
    }

    #[test]
    fn vp8_picture_numbers_stay_continuous_across_a_layer_switch() {
        let mut f = Forwarder::new(MediaKind::Video, 0, 0);
        let t = Instant::now();
        f.switch_source();
        f.set_target(Some(1), false);
        let (_, v, _) = out(f.decide(&vp8_pkt(1, 500, 0, true, 7000, 40, 0), t));
        assert_eq!(v.unwrap().picture_id, Some(7000));
        let (_, v, _) = out(f.decide(&vp8_pkt(1, 501, 3000, false, 7001, 40, 1), t));
        assert_eq!(v.unwrap().picture_id, Some(7001));
        // Down to layer 0, whose numbers are unrelated.
        f.set_target(Some(0), false);
        let (_, v, _) = out(f.decide(&vp8_pkt(0, 20, 6000, true, 123, 9, 0), t));
        let v = v.unwrap();
        assert_eq!(v.picture_id, Some(7002), "PictureID continues");
        assert_eq!(v.tl0picidx, Some(41), "TL0PICIDX continues");
        let (_, v, _) = out(f.decide(&vp8_pkt(0, 21, 9000, false, 124, 9, 1), t));
        assert_eq!(v.unwrap().picture_id, Some(7003));
    }

    #[test]
    fn dropped_temporal_layers_leave_no_gap() {
        let mut f = Forwarder::new(MediaKind::Video, 0, 0);
        let t = Instant::now();
        f.switch_source();
        f.set_max_temporal(0);
        // Pictures alternate TID 0 / TID 1, one packet each.
        let (seq, v, _) = out(f.decide(&vp8_pkt(0, 10, 0, true, 100, 5, 0), t));
        assert_eq!((seq, v.unwrap().picture_id), (0, Some(100)));
        assert_eq!(
            f.decide(&vp8_pkt(0, 11, 3000, false, 101, 5, 1), t),
            Decision::Drop(DropReason::OtherLayer)
        );
        let (seq, v, _) = out(f.decide(&vp8_pkt(0, 12, 6000, false, 102, 6, 0), t));
        assert_eq!(seq, 1, "the dropped packet's sequence number is reused");
        assert_eq!(
            v.unwrap().picture_id,
            Some(101),
            "the dropped picture's id too"
        );
        // All temporal layers again: nothing shifts back.
        f.set_max_temporal(u8::MAX);
        let (seq, v, _) = out(f.decide(&vp8_pkt(0, 13, 9000, false, 103, 6, 1), t));
        assert_eq!((seq, v.unwrap().picture_id), (2, Some(102)));
    }
}
