//! One layer of a published track: the simulcast encoding a RID (or, without simulcast, the
//! track's only SSRC) names. Each layer has its own SSRC, keyframe requests, recent packets,
//! measured bitrate and frame rate, and the frame size its VP8 keyframes announce; the track
//! orders its layers from lowest to highest quality ([`rank`]).
//!
//! Plain state, updated by the fan-out (`fanout.rs`) per packet and rolled over by the shard's
//! housekeeping; the allocator (`allocator.rs`) reads it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use str0m::media::Rid;
use str0m::rtp::Ssrc;

use crate::track::{Kept, KeyframeRequests};

/// How long a layer's measurement window is.
const METER_WINDOW: Duration = Duration::from_millis(1000);

/// A layer silent this long is not offered to subscribers (the publisher stopped it, or its
/// encoder dropped it for lack of uplink); one the server paused itself (dynacast) still is.
pub(crate) const LAYER_SILENCE: Duration = Duration::from_millis(1500);

/// Bitrate and frame rate of one layer over the last full window.
#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    frames: u32,
    last_ts: Option<u64>,
    /// Bits per second over the last full window.
    pub bps: u64,
    /// Frames per second over the last full window.
    pub fps: f32,
    /// The last non-zero `bps`: what the layer costs when it is resumed.
    pub last_active_bps: u64,
}

impl RateMeter {
    /// A packet of `bytes` payload with RTP timestamp `ts` (extended) arrived.
    pub fn packet(&mut self, now: Instant, bytes: usize, ts: u64) {
        self.roll(now);
        self.window_start.get_or_insert(now);
        self.bytes += bytes as u64;
        if self.last_ts != Some(ts) {
            self.last_ts = Some(ts);
            self.frames += 1;
        }
    }

    /// Close the window if it is over.
    pub fn roll(&mut self, now: Instant) {
        let Some(start) = self.window_start else {
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < METER_WINDOW {
            return;
        }
        let micros = elapsed.as_micros().max(1);
        self.bps = u64::try_from(u128::from(self.bytes) * 8 * 1_000_000 / micros).unwrap_or(0);
        self.fps = (f64::from(self.frames) * 1e6 / micros as f64) as f32;
        // A window that ends in a pause (dynacast, an encoder dropping the layer) shows a
        // fraction of the layer's rate: remembered as its cost, it would let a subscriber
        // climb to it with a budget that cannot carry it once it resumes. Falls that large
        // only wear the memory down slowly.
        if self.bps * 2 >= self.last_active_bps {
            self.last_active_bps = self.bps;
        } else if self.bps > 0 {
            self.last_active_bps = self.last_active_bps * 4 / 5;
        }
        self.bytes = 0;
        self.frames = 0;
        self.window_start = if elapsed >= 2 * METER_WINDOW {
            // A silence: the next packet opens a fresh window.
            self.bps = 0;
            self.fps = 0.0;
            None
        } else {
            Some(now)
        };
    }
}

/// One layer of a track.
#[derive(Debug)]
pub(crate) struct Layer {
    /// The RID of a simulcast layer; `None` for a track without simulcast.
    pub rid: Option<Rid>,
    /// The SSRC currently carrying it.
    pub ssrc: Option<Ssrc>,
    /// When its last packet arrived; `None` while it has never carried media.
    pub last_packet_at: Option<Instant>,
    pub keyframes: KeyframeRequests,
    /// The last packets of a video layer, in arrival order, so a subscriber that starts on
    /// a keyframe also gets the rest of it when that arrived first.
    pub history: VecDeque<Kept>,
    pub meter: RateMeter,
    /// Frame width and height from the layer's last VP8 keyframe.
    pub size: Option<(u16, u16)>,
    /// The publisher was told to pause it (dynacast); silence is expected.
    pub paused: bool,
}

impl Layer {
    pub fn new(rid: Option<Rid>) -> Self {
        Layer {
            rid,
            ssrc: None,
            last_packet_at: None,
            keyframes: KeyframeRequests::default(),
            history: VecDeque::new(),
            meter: RateMeter::default(),
            size: None,
            paused: false,
        }
    }

    /// Can a subscriber be moved to this layer? It is flowing, or only paused by us and so
    /// resumes on demand (even when it was paused before it could be measured: its cost is
    /// then assumed by rank).
    pub fn available(&self, now: Instant) -> bool {
        let flowing = self
            .last_packet_at
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_SILENCE);
        flowing || (self.paused && self.ever_flowed())
    }

    /// It has carried media at some point: a layer only paused by us can be resumed.
    pub fn ever_flowed(&self) -> bool {
        self.last_packet_at.is_some()
    }

    /// What forwarding it costs, bits per second: the measured rate, or the last one seen
    /// while it is paused or just started.
    pub fn cost(&self) -> u64 {
        self.meter.bps.max(self.meter.last_active_bps)
    }
}

/// The well-known names of simulcast layers, lowest first, for ordering layers before they
/// have been measured.
const RID_ORDERS: &[&[&str]] = &[
    &["q", "h", "f"],
    &["l", "m", "h"],
    &["low", "mid", "high"],
    &["0", "1", "2"],
];

/// A layer's place by its name alone: its index in the first well-known naming that has it.
fn name_rank(rid: &str) -> Option<usize> {
    RID_ORDERS
        .iter()
        .find_map(|order| order.iter().position(|r| *r == rid))
}

/// The order of `layers` from lowest to highest quality, as indices into `layers`: by frame
/// size when every layer has one, else by measured bitrate when every layer has one, else by
/// well-known RID names, else as offered.
pub(crate) fn rank(layers: &[Layer], out: &mut Vec<u8>) {
    out.clear();
    out.extend(0..layers.len() as u8);
    let all = |f: &dyn Fn(&Layer) -> bool| layers.iter().all(f);
    if all(&|l| l.size.is_some()) {
        out.sort_by_key(|&i| {
            let (w, h) = layers[usize::from(i)].size.unwrap_or_default();
            (u32::from(w) * u32::from(h), i)
        });
    } else if all(&|l| l.cost() > 0) {
        out.sort_by_key(|&i| (layers[usize::from(i)].cost(), i));
    } else if all(&|l| l.rid.as_deref().and_then(name_rank).is_some()) {
        out.sort_by_key(|&i| layers[usize::from(i)].rid.as_deref().and_then(name_rank));
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test's epoch
mod tests {
    use super::*;

    #[test]
    fn the_meter_measures_bitrate_and_frame_rate() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        // 30 frames of 2 packets of 500 bytes in one second: 240 kbit/s, 30 fps.
        for f in 0..30u64 {
            let at = t0 + Duration::from_millis(f * 1000 / 30);
            m.packet(at, 500, f * 3000);
            m.packet(at, 500, f * 3000);
        }
        m.roll(t0 + Duration::from_millis(1000));
        assert_eq!(m.bps, 240_000);
        assert!((m.fps - 30.0).abs() < 0.01, "{}", m.fps);
        // Silence: the rate falls to zero, and the last active rate is remembered.
        m.roll(t0 + Duration::from_millis(3500));
        assert_eq!(m.bps, 0);
        assert_eq!(m.last_active_bps, 240_000);
    }

    #[test]
    fn layers_are_ranked_by_size_then_rate_then_name() {
        let named = |rid: &str| Layer::new(Some(Rid::from(rid)));
        let mut layers = vec![named("f"), named("q"), named("h")];
        let mut order = Vec::new();
        rank(&layers, &mut order);
        assert_eq!(order, vec![1, 2, 0], "by name");
        layers[0].meter.last_active_bps = 100;
        layers[1].meter.last_active_bps = 900;
        layers[2].meter.last_active_bps = 500;
        rank(&layers, &mut order);
        assert_eq!(order, vec![0, 2, 1], "measured rates beat names");
        layers[0].size = Some((1280, 720));
        layers[1].size = Some((320, 180));
        layers[2].size = Some((640, 360));
        rank(&layers, &mut order);
        assert_eq!(order, vec![1, 2, 0], "frame sizes beat rates");
        let mut unknown = vec![named("x"), named("y")];
        rank(&unknown, &mut order);
        assert_eq!(order, vec![0, 1], "as offered");
        unknown[0].meter.bps = 5;
        rank(&unknown, &mut order);
        assert_eq!(order, vec![0, 1], "not every layer measured yet");
    }
}
