//! What a subscriber sees of its video, read from the VP8 payloads it receives, with the
//! rules a decoder follows: frames decoded in sequence-number order, a wait for missing
//! ones, references through the temporal layers, and a keyframe request when stuck.
//!
//! - A frame is **complete** when every packet from its first (the payload descriptor's S
//!   bit on partition 0) to its last (the RTP marker) has arrived, retransmissions
//!   included. Frames are decoded in the order of their sequence numbers (the server's,
//!   continuous across layers). When the next frame is missing, the decoder waits up to
//!   [`MAX_WAIT`] for it while later frames are complete, then moves on (at once to a
//!   complete keyframe).
//! - A frame is **decodable** when it is a keyframe, or follows a decodable frame without a
//!   gap, or, after a gap, when its references survived it: a T0 frame whose TL0PICIDX is
//!   one past that of the last decoded T0, a T1 or T2 frame of the same TL0PICIDX as it.
//!   A frame that is not is dropped, and the decoder asks for a keyframe (PLI) at most
//!   every [`PLI_INTERVAL`] until it gets one, as a browser does.
//! - The **layer** is the frame size announced by the keyframe the decoded frames depend
//!   on; decoding a keyframe of another size is a **layer switch**.
//! - A **freeze**: no new decoded frame for more than [`FRAME_FREEZE`] while media still
//!   arrives. A gap ends with the next decoded frame; one still open when the last media
//!   packet arrived counts too (video paused while audio plays on).
//! - **Numbering breaks**: two frames adjacent in sequence numbers whose PictureIDs are not
//!   consecutive, or whose TL0PICIDX does not follow the temporal layer (a T0 frame one
//!   past the previous frame's, any other frame equal to it). A server that switches
//!   layers or drops temporal layers must leave none.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

/// No new decoded frame for longer than this is a freeze.
pub const FRAME_FREEZE: Duration = Duration::from_millis(500);

/// How long the decoder waits for a missing frame (its retransmission) while later ones
/// are complete.
pub const MAX_WAIT: Duration = Duration::from_millis(300);

/// Keyframe requests while the decoder cannot decode: at most one per this.
pub const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// Frames waiting at once, at most; past it the oldest is dropped.
const MAX_PENDING: usize = 64;

/// Most packets tracked per frame (a 1080p keyframe at a few Mbit/s fits).
const MAX_FRAME_PACKETS: usize = 512;

/// Layer changes logged per subscriber, at most (the count goes on).
const MAX_LOGGED_SWITCHES: usize = 32;

/// A stuck decoder asks for keyframes only while video packets keep coming this recently
/// (a paused subscription sends none, and nothing is gained by asking).
const ASK_WHILE_RECEIVING: Duration = Duration::from_secs(1);

/// What one VP8 RTP payload says about itself (RFC 7741).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Info {
    /// S bit: the first packet of a partition.
    pub start: bool,
    /// Partition index.
    pub partition: u8,
    /// PictureID (7 or 15 bits), if present.
    pub picture_id: Option<u16>,
    /// TL0PICIDX, if present.
    pub tl0: Option<u8>,
    /// Temporal layer, if present.
    pub tid: Option<u8>,
    /// On a keyframe's first packet: the frame size it announces.
    pub keyframe: Option<(u16, u16)>,
}

/// Parse the payload descriptor and, on a frame's first packet, the keyframe header.
/// `None` for a payload too short to hold what its descriptor announces.
pub fn parse_vp8(p: &[u8]) -> Option<Vp8Info> {
    let b0 = *p.first()?;
    let mut i = 1;
    let (mut picture_id, mut tl0, mut tid) = (None, None, None);
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            let m = *p.get(i)?;
            if m & 0x80 != 0 {
                picture_id = Some((u16::from(m & 0x7f) << 8) | u16::from(*p.get(i + 1)?));
                i += 2;
            } else {
                picture_id = Some(u16::from(m));
                i += 1;
            }
        }
        if x & 0x40 != 0 {
            tl0 = Some(*p.get(i)?);
            i += 1;
        }
        if x & 0x30 != 0 {
            let t = *p.get(i)?;
            if x & 0x20 != 0 {
                tid = Some(t >> 6);
            }
            i += 1;
        }
    }
    let start = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    let mut keyframe = None;
    if start && partition == 0 {
        let h = p.get(i..)?;
        if h.len() >= 10 && h[0] & 0x01 == 0 && h[3..6] == [0x9d, 0x01, 0x2a] {
            let w = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
            let ht = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
            keyframe = Some((w, ht));
        }
    }
    Some(Vp8Info {
        start,
        partition,
        picture_id,
        tl0,
        tid,
        keyframe,
    })
}

/// Frames and bytes of one layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LayerFrames {
    /// Decoded frames of this layer.
    pub frames: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// A subscriber's video as seen so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VideoReport {
    /// Decoded frames.
    pub frames: u64,
    /// Of them, keyframes.
    pub keyframes: u64,
    /// Complete frames that came before the first keyframe (nothing to decode them with).
    pub frames_before_keyframe: u64,
    /// Complete frames dropped because a frame they depend on was lost.
    pub undecodable_frames: u64,
    /// Frames the decoder moved past with some of their packets missing.
    pub skipped_frames: u64,
    /// Packets that arrived after the decoder had moved past their frame.
    pub late_packets: u64,
    /// Keyframe requests (PLI) sent.
    pub keyframe_requests: u64,
    /// Freezes (see the module's definition).
    pub freezes: u64,
    /// Time frozen, milliseconds.
    pub frozen_ms: u64,
    /// The longest freeze, milliseconds.
    pub longest_freeze_ms: u64,
    /// Keyframes of another size than the one decoded before.
    pub layer_switches: u64,
    /// The layer shown last, `<width>x<height>`.
    pub layer: Option<String>,
    /// Decoded frames per layer, by `<width>x<height>`.
    pub layers: BTreeMap<String, LayerFrames>,
    /// When the decoded layer changed (the first keyframe included), the first
    /// [`MAX_LOGGED_SWITCHES`] times.
    pub layer_log: Vec<LayerChange>,
    /// Seq-adjacent frames whose PictureID or TL0PICIDX do not follow.
    pub numbering_breaks: u64,
}

impl VideoReport {
    /// The layer with the most decoded frames.
    pub fn mostly(&self) -> Option<&str> {
        self.layers
            .iter()
            .max_by_key(|(_, l)| l.frames)
            .map(|(k, _)| k.as_str())
    }
}

/// The decoded layer changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayerChange {
    /// Milliseconds since the stream's first video packet.
    pub at_ms: u64,
    /// The layer now, `<width>x<height>`.
    pub layer: String,
}

/// Name of a frame size in reports.
pub fn size_name((w, h): (u16, u16)) -> String {
    format!("{w}x{h}")
}

#[derive(Debug)]
struct Frame {
    ts: u32,
    arrived: Instant,
    /// Lowest sequence number seen of it.
    min_seq: u64,
    first: Option<u64>,
    last: Option<u64>,
    seqs: Vec<u64>,
    bytes: u64,
    /// The descriptor of its first packet.
    start: Option<Vp8Info>,
}

impl Frame {
    fn complete(&self) -> bool {
        match (self.first, self.last) {
            (Some(a), Some(b)) => b >= a && self.seqs.len() as u64 == b - a + 1,
            _ => false,
        }
    }

    fn is_key(&self) -> bool {
        self.start.is_some_and(|i| i.keyframe.is_some())
    }
}

#[derive(Clone, Copy, Debug)]
struct Decoded {
    picture_id: Option<u16>,
    tl0: Option<u8>,
}

/// The decoder model of one video stream.
#[derive(Debug, Default)]
pub struct VideoRecv {
    pending: Vec<Frame>,
    /// First sequence number of the frame to decode next (`None`: before the first
    /// keyframe).
    next_seq: Option<u64>,
    /// Since when the next frame is missing while a later one is complete.
    waiting_since: Option<Instant>,
    /// The decoder holds valid references.
    intact: bool,
    /// TL0PICIDX of the last decoded T0 frame.
    base: Option<u8>,
    /// The last frame taken from the buffer, decoded or not.
    prev: Option<Decoded>,
    layer: Option<(u16, u16)>,
    last_shown: Option<Instant>,
    /// Since when the decoder wants a keyframe.
    stuck_since: Option<Instant>,
    last_pli: Option<Instant>,
    first_packet: Option<Instant>,
    last_packet: Option<Instant>,
    report: VideoReport,
}

impl VideoRecv {
    /// One RTP packet of the stream: extended sequence number, RTP timestamp, marker bit,
    /// payload. Duplicates are ignored.
    pub fn handle_packet(&mut self, now: Instant, seq: u64, ts: u32, marker: bool, payload: &[u8]) {
        let Some(info) = parse_vp8(payload) else {
            return;
        };
        self.first_packet.get_or_insert(now);
        self.last_packet = Some(now);
        if self.next_seq.is_some_and(|n| seq < n) {
            self.report.late_packets += 1;
            return;
        }
        let i = match self.pending.iter().position(|f| f.ts == ts) {
            Some(i) => i,
            None => {
                if self.pending.len() >= MAX_PENDING {
                    let oldest = (0..self.pending.len())
                        .min_by_key(|&i| self.pending[i].min_seq)
                        .expect("the buffer is full");
                    self.pending.swap_remove(oldest);
                    self.report.skipped_frames += 1;
                }
                self.pending.push(Frame {
                    ts,
                    arrived: now,
                    min_seq: seq,
                    first: None,
                    last: None,
                    seqs: Vec::new(),
                    bytes: 0,
                    start: None,
                });
                self.pending.len() - 1
            }
        };
        let f = &mut self.pending[i];
        if f.seqs.contains(&seq) || f.seqs.len() >= MAX_FRAME_PACKETS {
            return;
        }
        f.seqs.push(seq);
        f.min_seq = f.min_seq.min(seq);
        f.bytes += payload.len() as u64;
        if info.start && info.partition == 0 {
            f.first = Some(seq);
            f.start = Some(info);
        }
        if marker {
            f.last = Some(seq);
        }
        self.decode(now);
    }

    /// Time passes: decode what waited long enough. Packets call it too.
    pub fn handle_time(&mut self, now: Instant) {
        self.decode(now);
    }

    /// Should a keyframe be requested now? Counts the request when it says yes.
    pub fn wants_keyframe(&mut self, now: Instant) -> bool {
        let receiving = self
            .last_packet
            .is_some_and(|t| now.saturating_duration_since(t) <= ASK_WHILE_RECEIVING);
        if self.stuck_since.is_none()
            || !receiving
            || self
                .last_pli
                .is_some_and(|t| now.saturating_duration_since(t) < PLI_INTERVAL)
        {
            return false;
        }
        self.last_pli = Some(now);
        self.report.keyframe_requests += 1;
        true
    }

    /// The report so far; `last_media_at` is when the subscriber last received any media
    /// (a freeze still open then counts).
    pub fn report(&self, last_media_at: Option<Instant>) -> VideoReport {
        let mut r = self.report.clone();
        if let (Some(shown), Some(media)) = (self.last_shown, last_media_at) {
            let gap = media.saturating_duration_since(shown);
            if gap > FRAME_FREEZE {
                add_freeze(&mut r, gap);
            }
        }
        r
    }

    fn decode(&mut self, now: Instant) {
        loop {
            let Some(next) = self.next_seq else {
                // Before the first keyframe: start at the earliest complete one.
                let key = self.earliest(|f| f.complete() && f.is_key(), 0);
                match key {
                    Some(k) => {
                        let first = self.pending[k].first.expect("complete");
                        let before = self.drop_before(first);
                        self.report.frames_before_keyframe += before;
                        self.take(now, first, false);
                        continue;
                    }
                    None => {
                        let waited = self.pending.iter().any(|f| {
                            f.complete() && now.saturating_duration_since(f.arrived) >= MAX_WAIT
                        });
                        if waited {
                            self.stuck_since.get_or_insert(now);
                        }
                        return;
                    }
                }
            };
            if self
                .pending
                .iter()
                .any(|f| f.first == Some(next) && f.complete())
            {
                self.take(now, next, true);
                continue;
            }
            if let Some(k) = self.earliest(|f| f.complete() && f.is_key(), next) {
                let first = self.pending[k].first.expect("complete");
                self.report.skipped_frames += self.drop_before(first);
                self.take(now, first, false);
                continue;
            }
            let Some(g) = self.earliest(Frame::complete, next) else {
                self.waiting_since = None;
                return;
            };
            let since = *self.waiting_since.get_or_insert(now);
            if now.saturating_duration_since(since) < MAX_WAIT {
                return;
            }
            let first = self.pending[g].first.expect("complete");
            self.report.skipped_frames += self.drop_before(first);
            self.take(now, first, false);
        }
    }

    /// The pending frame starting at or after `from` that passes `pick`, lowest first.
    fn earliest(&self, pick: impl Fn(&Frame) -> bool, from: u64) -> Option<usize> {
        (0..self.pending.len())
            .filter(|&i| self.pending[i].first.is_some_and(|s| s >= from) && pick(&self.pending[i]))
            .min_by_key(|&i| self.pending[i].first)
    }

    /// Drop pending frames that start before `seq`; how many had any packet.
    fn drop_before(&mut self, seq: u64) -> u64 {
        let before = self.pending.len();
        self.pending.retain(|f| f.min_seq >= seq);
        (before - self.pending.len()) as u64
    }

    /// Take the complete frame starting at `first` out of the buffer and decode it, if it
    /// can be; `adjacent`: it follows the previous frame without a gap.
    fn take(&mut self, now: Instant, first: u64, adjacent: bool) {
        let i = self
            .pending
            .iter()
            .position(|f| f.first == Some(first))
            .expect("the caller found it");
        let f = self.pending.swap_remove(i);
        let info = f.start.expect("complete frames have their first packet");
        let last = f.last.expect("and their last");
        let r = &mut self.report;
        if adjacent
            && let Some(p) = self.prev
            && !numbering_follows(p, &info)
        {
            r.numbering_breaks += 1;
        }
        self.prev = Some(Decoded {
            picture_id: info.picture_id,
            tl0: info.tl0,
        });
        self.next_seq = Some(last + 1);
        self.waiting_since = None;
        let refs_survived = match (info.tid, info.tl0, self.base) {
            (Some(0), Some(t), Some(b)) => t == b.wrapping_add(1),
            (Some(_), Some(t), Some(b)) => t == b,
            _ => false,
        };
        let decodable = info.keyframe.is_some() || (self.intact && (adjacent || refs_survived));
        if !decodable {
            r.undecodable_frames += 1;
            self.intact = false;
            self.stuck_since.get_or_insert(now);
            return;
        }
        self.intact = true;
        self.stuck_since = None;
        if let Some(size) = info.keyframe {
            r.keyframes += 1;
            if self.layer != Some(size) {
                if self.layer.is_some() {
                    r.layer_switches += 1;
                }
                if r.layer_log.len() < MAX_LOGGED_SWITCHES {
                    let since = self.first_packet.unwrap_or(now);
                    r.layer_log.push(LayerChange {
                        at_ms: now.saturating_duration_since(since).as_millis() as u64,
                        layer: size_name(size),
                    });
                }
            }
            self.layer = Some(size);
            r.layer = Some(size_name(size));
        }
        if info.tid.is_none_or(|t| t == 0) {
            self.base = info.tl0;
        }
        let layer = self.layer.expect("a keyframe was decoded before");
        r.frames += 1;
        let l = r.layers.entry(size_name(layer)).or_default();
        l.frames += 1;
        l.bytes += f.bytes;
        if let Some(prev) = self.last_shown {
            let gap = now.saturating_duration_since(prev);
            if gap > FRAME_FREEZE {
                add_freeze(r, gap);
            }
        }
        self.last_shown = Some(now);
    }
}

fn add_freeze(r: &mut VideoReport, gap: Duration) {
    let ms = gap.as_millis() as u64;
    r.freezes += 1;
    r.frozen_ms += ms;
    r.longest_freeze_ms = r.longest_freeze_ms.max(ms);
}

/// Does `next`, the frame right after `prev` in sequence numbers, continue its numbering?
fn numbering_follows(prev: Decoded, next: &Vp8Info) -> bool {
    let pid_ok = match (prev.picture_id, next.picture_id) {
        (Some(a), Some(b)) if a > 0x7f || b > 0x7f => b == (a + 1) & 0x7fff,
        (Some(a), Some(b)) => b == (a + 1) & 0x7f || b == (a + 1) & 0x7fff,
        _ => true,
    };
    let tl0_ok = match (prev.tl0, next.tl0, next.tid) {
        (Some(a), Some(b), Some(0)) => b == a.wrapping_add(1),
        (Some(a), Some(b), Some(_)) => b == a,
        _ => true,
    };
    pid_ok && tl0_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{self, Vp8Numbers};

    /// A stream of frames as a subscriber would receive them: one layer, continuous
    /// numbering, one packet per delta frame and three per keyframe.
    struct Stream {
        seq: u64,
        ts: u32,
        numbers: Vp8Numbers,
        frame: u64,
    }

    impl Stream {
        fn new() -> Stream {
            Stream {
                seq: 100,
                ts: 0,
                numbers: Vp8Numbers {
                    picture_id: 0x7ffe,
                    tl0: 255,
                    tid: 0,
                },
                frame: 0,
            }
        }

        /// The packets of the next frame: (seq, ts, marker, payload).
        fn frame(&mut self, key: Option<(u16, u16)>) -> Vec<(u64, u32, bool, Vec<u8>)> {
            let tid = if key.is_some() {
                0
            } else {
                [0, 2, 1, 2][(self.frame % 4) as usize]
            };
            if self.frame > 0 {
                self.numbers.picture_id = (self.numbers.picture_id + 1) & 0x7fff;
                if tid == 0 {
                    self.numbers.tl0 = self.numbers.tl0.wrapping_add(1);
                }
            }
            self.numbers.tid = tid;
            let bytes = if key.is_some() { 3000 } else { 800 };
            let size = key.unwrap_or((320, 180));
            let packets = synth::vp8_layer_frame(key.is_some(), bytes, size, self.numbers, 1, 0, 0);
            let n = packets.len();
            let out = packets
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    let seq = self.seq;
                    self.seq += 1;
                    (seq, self.ts, i + 1 == n, p)
                })
                .collect();
            self.ts = self.ts.wrapping_add(3000);
            self.frame += 1;
            out
        }
    }

    fn feed(v: &mut VideoRecv, at: Instant, packets: &[(u64, u32, bool, Vec<u8>)]) {
        for (seq, ts, marker, p) in packets {
            v.handle_packet(at, *seq, *ts, *marker, p);
        }
    }

    #[test]
    fn descriptors_and_keyframe_sizes_parse() {
        let n = Vp8Numbers {
            picture_id: 0x1234,
            tl0: 7,
            tid: 2,
        };
        let key = synth::vp8_layer_frame(true, 2500, (1280, 720), n, 1, 0, 0);
        let info = parse_vp8(&key[0]).unwrap();
        assert_eq!(info.picture_id, Some(0x1234));
        assert_eq!((info.tl0, info.tid), (Some(7), Some(2)));
        assert!(info.start);
        assert_eq!(info.keyframe, Some((1280, 720)));
        let rest = parse_vp8(&key[1]).unwrap();
        assert!(!rest.start);
        assert_eq!(rest.keyframe, None);
        // The one-layer frames: a one-byte descriptor, 640x360 keyframes.
        let plain = synth::vp8_frame(true, 3000, 1, 0, 0);
        let info = parse_vp8(&plain[0]).unwrap();
        assert_eq!((info.picture_id, info.keyframe), (None, Some((640, 360))));
        // A 7-bit PictureID; a descriptor cut short.
        assert_eq!(
            parse_vp8(&[0x90, 0x80, 0x05, 0, 0, 0]).unwrap().picture_id,
            Some(5)
        );
        assert_eq!(parse_vp8(&[0x90, 0xe0, 0x80]), None);
        assert_eq!(parse_vp8(&[]), None);
    }

    #[test]
    fn frames_layers_and_switches_are_counted() {
        let t0 = Instant::now();
        let mut s = Stream::new();
        let mut v = VideoRecv::default();
        // A delta frame before any keyframe, then 320x180 for ten frames, then 1280x720.
        let early = s.frame(None);
        feed(&mut v, t0, &early);
        let mut at = t0;
        for i in 0..20 {
            at += Duration::from_millis(33);
            let key = match i {
                0 => Some((320, 180)),
                8 => Some((1280, 720)),
                _ => None,
            };
            let f = s.frame(key);
            feed(&mut v, at, &f);
        }
        let r = v.report(Some(at));
        assert_eq!(r.frames_before_keyframe, 1);
        assert_eq!(r.frames, 20);
        assert_eq!(r.keyframes, 2);
        assert_eq!(r.layer_switches, 1);
        assert_eq!(r.layer.as_deref(), Some("1280x720"));
        let log: Vec<(u64, &str)> = r
            .layer_log
            .iter()
            .map(|c| (c.at_ms, c.layer.as_str()))
            .collect();
        assert_eq!(
            log,
            [(33, "320x180"), (297, "1280x720")],
            "since the first packet"
        );
        assert_eq!(r.layers["320x180"].frames, 8);
        assert_eq!(r.layers["1280x720"].frames, 12);
        assert_eq!(r.mostly(), Some("1280x720"));
        assert_eq!(
            r.numbering_breaks, 0,
            "the wrap of PictureID and TL0PICIDX is fine"
        );
        assert_eq!(
            (r.freezes, r.skipped_frames, r.undecodable_frames),
            (0, 0, 0)
        );
    }

    #[test]
    fn a_missing_frame_is_waited_for_and_decoded_in_order() {
        let t0 = Instant::now();
        let mut s = Stream::new();
        let mut v = VideoRecv::default();
        let key = s.frame(Some((320, 180)));
        assert_eq!(key.len(), 3);
        // The keyframe's middle packet comes last (a retransmission), twice.
        feed(&mut v, t0, &[key[0].clone(), key[2].clone()]);
        assert_eq!(v.report(None).frames, 0);
        feed(&mut v, t0, &key[1..2]);
        feed(&mut v, t0, &key[1..2]);
        assert_eq!(v.report(None).frames, 1, "once, duplicates ignored");
        // Frame 1 is late, frame 2 is complete before it: 2 waits, then both decode.
        let one = s.frame(None);
        let two = s.frame(None);
        feed(&mut v, t0 + Duration::from_millis(33), &two);
        assert_eq!(v.report(None).frames, 1, "waiting for frame 1");
        feed(&mut v, t0 + Duration::from_millis(100), &one);
        let r = v.report(None);
        assert_eq!(
            (r.frames, r.skipped_frames, r.undecodable_frames),
            (3, 0, 0)
        );
        assert!(!v.wants_keyframe(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn a_lost_t2_frame_is_skipped_without_a_keyframe() {
        let t0 = Instant::now();
        let mut s = Stream::new();
        let mut v = VideoRecv::default();
        feed(&mut v, t0, &s.frame(Some((320, 180))));
        let lost = s.frame(None);
        assert_eq!(s.numbers.tid, 2);
        feed(&mut v, t0 + Duration::from_millis(66), &s.frame(None));
        feed(&mut v, t0 + Duration::from_millis(99), &s.frame(None));
        v.handle_time(t0 + Duration::from_millis(200));
        assert_eq!(v.report(None).frames, 1, "still waiting");
        v.handle_time(t0 + Duration::from_millis(400));
        let r = v.report(None);
        // T1 and T2 of the same TL0PICIDX do not need the lost T2.
        assert_eq!((r.frames, r.undecodable_frames), (3, 0));
        assert!(!v.wants_keyframe(t0 + Duration::from_millis(400)));
        // Its packets arriving now are late.
        feed(&mut v, t0 + Duration::from_millis(500), &lost);
        assert_eq!(v.report(None).late_packets, 1);
    }

    #[test]
    fn a_lost_t0_frame_stops_decoding_until_a_keyframe() {
        let t0 = Instant::now();
        let ms = |m| t0 + Duration::from_millis(m);
        let mut s = Stream::new();
        let mut v = VideoRecv::default();
        feed(&mut v, t0, &s.frame(Some((320, 180))));
        for i in 1..4 {
            feed(&mut v, ms(33 * i), &s.frame(None));
        }
        // Frame 4 is T0 and never comes; 5, 6, 7 refer to it.
        let _lost = s.frame(None);
        assert_eq!(s.numbers.tid, 0);
        for i in 5..8 {
            feed(&mut v, ms(33 * i), &s.frame(None));
        }
        v.handle_time(ms(600));
        let r = v.report(None);
        assert_eq!((r.frames, r.undecodable_frames), (4, 3), "{r:?}");
        // Asked for a keyframe, at most every PLI_INTERVAL.
        assert!(v.wants_keyframe(ms(600)));
        assert!(!v.wants_keyframe(ms(700)));
        assert!(v.wants_keyframe(ms(600) + PLI_INTERVAL));
        // Frames keep coming, undecodable; then a keyframe of another layer.
        feed(&mut v, ms(800), &s.frame(None));
        feed(&mut v, ms(833), &s.frame(Some((1280, 720))));
        feed(&mut v, ms(866), &s.frame(None));
        let r = v.report(None);
        assert_eq!(
            (r.frames, r.undecodable_frames, r.keyframe_requests),
            (6, 4, 2)
        );
        assert_eq!(r.layer_switches, 1);
        assert_eq!(r.layer.as_deref(), Some("1280x720"));
        assert!(!v.wants_keyframe(ms(2000)), "decoding again");
        // Stuck again, then no more video (paused): no more requests.
        let _lost = s.frame(None);
        let _lost = s.frame(None);
        let _lost = s.frame(None);
        feed(&mut v, ms(2100), &s.frame(None));
        v.handle_time(ms(2400));
        assert!(v.wants_keyframe(ms(2400)));
        feed(&mut v, ms(2950), &s.frame(None));
        assert!(v.wants_keyframe(ms(2950)));
        assert!(!v.wants_keyframe(ms(2950) + ASK_WHILE_RECEIVING + PLI_INTERVAL));
        // 734 ms without a decoded frame (frame 3 at 99 ms, the keyframe at 833) was a freeze.
        assert_eq!(r.freezes, 1);
        assert_eq!(r.longest_freeze_ms, 734);
    }

    #[test]
    fn complete_frames_before_any_keyframe_ask_for_one() {
        let t0 = Instant::now();
        let mut s = Stream::new();
        let mut v = VideoRecv::default();
        // The keyframe is lost entirely; deltas arrive.
        let _key = s.frame(Some((640, 360)));
        feed(&mut v, t0, &s.frame(None));
        assert!(!v.wants_keyframe(t0), "a moment's patience");
        feed(&mut v, t0 + MAX_WAIT, &s.frame(None));
        assert!(v.wants_keyframe(t0 + MAX_WAIT));
        feed(&mut v, t0 + MAX_WAIT, &s.frame(Some((640, 360))));
        let r = v.report(None);
        assert_eq!((r.frames, r.frames_before_keyframe), (1, 2));
    }

    #[test]
    fn a_freeze_still_open_when_media_stops_counts() {
        let t0 = Instant::now();
        let mut s = Stream::new();
        let mut v = VideoRecv::default();
        feed(&mut v, t0, &s.frame(Some((640, 360))));
        feed(&mut v, t0 + Duration::from_millis(33), &s.frame(None));
        // Audio went on for two more seconds; video did not.
        let r = v.report(Some(t0 + Duration::from_secs(2)));
        assert_eq!(r.freezes, 1);
        assert_eq!(r.longest_freeze_ms, 1967);
        assert_eq!(v.report(Some(t0 + Duration::from_millis(400))).freezes, 0);
    }

    #[test]
    fn broken_numbering_is_counted() {
        let t0 = Instant::now();
        let mut s = Stream::new();
        let mut v = VideoRecv::default();
        feed(&mut v, t0, &s.frame(Some((320, 180))));
        feed(&mut v, t0, &s.frame(None));
        // A frame whose PictureID skips one while its sequence numbers follow.
        s.numbers.picture_id = (s.numbers.picture_id + 1) & 0x7fff;
        feed(&mut v, t0, &s.frame(None));
        assert_eq!(v.report(None).numbering_breaks, 1);
        // Frames not adjacent in sequence numbers (packets lost for good) are not judged.
        s.seq += 5;
        s.numbers.picture_id = (s.numbers.picture_id + 3) & 0x7fff;
        feed(&mut v, t0, &s.frame(None));
        v.handle_time(t0 + Duration::from_secs(1));
        assert_eq!(v.report(None).numbering_breaks, 1);
        assert_eq!(v.report(None).frames, 4, "decoded, skipping the gap");
        // A T0 frame whose TL0PICIDX does not move on.
        let mut f = s.frame(None);
        assert_eq!(s.numbers.tid, 0, "frame 4 of T0 T2 T1 T2 is T0");
        f[0].3[4] = f[0].3[4].wrapping_sub(1);
        feed(&mut v, t0, &f);
        assert_eq!(v.report(None).numbering_breaks, 2);
    }
}
