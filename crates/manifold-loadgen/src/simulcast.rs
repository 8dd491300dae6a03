//! A simulcast publisher's video: three RID layers, `q`, `h` and `f`, lowest first (the order
//! `a=simulcast:send q;h;f` offers them), each its own RTP stream with its own frame size,
//! bitrate, VP8 picture numbering and keyframes, in the temporal pattern browsers use
//! (T0 T2 T1 T2, restarting at each keyframe). A keyframe request names its layer's RID and
//! is answered on that layer only.

use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Rid};

use crate::send::SendTrack;
use crate::stamp::now_us;
use crate::synth::{self, Vp8Numbers};

/// One layer of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    /// Its RID.
    pub rid: &'static str,
    /// Frame size its keyframes announce.
    pub width: u16,
    /// Frame height.
    pub height: u16,
    /// Its bitrate as a share of the top layer's: numerator over [`SHARE_OF`].
    pub share: u32,
}

/// Denominator of [`LayerPlan::share`].
pub const SHARE_OF: u32 = 30;

/// The layers, lowest first: a tenth, a third and all of the top bitrate (150 kbit/s,
/// 500 kbit/s and 1.5 Mbit/s for the default 1.5 Mbit/s, what the SDK asks browsers for).
pub const PLAN: [LayerPlan; 3] = [
    LayerPlan {
        rid: "q",
        width: 320,
        height: 180,
        share: 3,
    },
    LayerPlan {
        rid: "h",
        width: 640,
        height: 360,
        share: 10,
    },
    LayerPlan {
        rid: "f",
        width: 1280,
        height: 720,
        share: 30,
    },
];

impl LayerPlan {
    /// Its bitrate when the top layer sends `top_bps`.
    pub fn bitrate(&self, top_bps: u32) -> u32 {
        (u64::from(top_bps) * u64::from(self.share) / u64::from(SHARE_OF)) as u32
    }

    /// Its frame size as reports name it (`320x180`).
    pub fn size_name(&self) -> String {
        crate::video::size_name((self.width, self.height))
    }
}

/// The RIDs the publisher offers, lowest first.
pub fn rids() -> impl Iterator<Item = &'static str> {
    PLAN.iter().map(|l| l.rid)
}

/// What one layer sent.
#[derive(Clone, Debug, Serialize)]
pub struct LayerSent {
    /// RID.
    pub rid: String,
    /// Frame size of its keyframes.
    pub size: String,
    /// Its bitrate, bits per second.
    pub bitrate_bps: u32,
    /// Source id of its stamps.
    pub source: u32,
    /// RTP packets written.
    pub packets: u64,
    /// Frames written.
    pub frames: u64,
    /// Keyframes written.
    pub keyframes: u64,
    /// Keyframe requests (PLI/FIR) that named this layer.
    pub keyframe_requests: u64,
}

/// The picture numbering and keyframe schedule of one layer, apart from any `Rtc`.
#[derive(Debug)]
pub(crate) struct Pictures {
    numbers: Vp8Numbers,
    frames: u64,
    /// Frames since the last keyframe: the position in the temporal pattern.
    pattern: u64,
    want_keyframe: bool,
    last_keyframe: Option<Instant>,
    keyframes: u64,
}

impl Pictures {
    /// Numbering from `picture_id` and `tl0`; the first frame is a keyframe.
    pub fn new(picture_id: u16, tl0: u8) -> Pictures {
        Pictures {
            numbers: Vp8Numbers {
                picture_id: picture_id & 0x7fff,
                tl0,
                tid: 0,
            },
            frames: 0,
            pattern: 0,
            want_keyframe: true,
            last_keyframe: None,
            keyframes: 0,
        }
    }

    /// The next frame is a keyframe.
    pub fn request_keyframe(&mut self) {
        self.want_keyframe = true;
    }

    /// The next frame at `now`: whether it is a keyframe (asked for, or `interval` passed
    /// since the last) and its numbers.
    pub fn next(&mut self, now: Instant, interval: Option<Duration>) -> (bool, Vp8Numbers) {
        let periodic = interval.is_some_and(|iv| {
            self.last_keyframe
                .is_none_or(|k| now.saturating_duration_since(k) >= iv)
        });
        let key = self.want_keyframe || periodic;
        if key {
            self.want_keyframe = false;
            self.last_keyframe = Some(now);
            self.keyframes += 1;
            self.pattern = 0;
        }
        let tid = [0, 2, 1, 2][(self.pattern % 4) as usize];
        if self.frames > 0 {
            self.numbers.picture_id = (self.numbers.picture_id + 1) & 0x7fff;
            if tid == 0 {
                self.numbers.tl0 = self.numbers.tl0.wrapping_add(1);
            }
        }
        self.numbers.tid = tid;
        self.frames += 1;
        self.pattern += 1;
        (key, self.numbers)
    }
}

/// One layer being sent.
#[derive(Debug)]
pub(crate) struct SendLayer {
    rid: Rid,
    plan: LayerPlan,
    bitrate_bps: u32,
    track: SendTrack,
    pictures: Pictures,
    keyframe_requests: u64,
}

/// The layers of the video m-line among `media`, once connected; empty when the answer did
/// not take simulcast (then nothing is sent on video).
pub(crate) fn open_layers(
    rtc: &mut Rtc,
    media: &[(Mid, MediaKind)],
    top_bps: u32,
) -> Vec<SendLayer> {
    let mut out = Vec::new();
    for (i, plan) in PLAN.iter().enumerate() {
        let rid = Rid::from(plan.rid);
        let Some(track) = SendTrack::open(rtc, media, MediaKind::Video, Codec::Vp8, Some(rid))
        else {
            continue;
        };
        out.push(SendLayer {
            rid,
            plan: *plan,
            bitrate_bps: plan.bitrate(top_bps),
            track,
            // Each layer numbers its pictures on its own, as an encoder per layer does.
            pictures: Pictures::new(1000 + 9000 * i as u16, 40 * i as u8),
            keyframe_requests: 0,
        });
    }
    out
}

impl SendLayer {
    /// A keyframe request for `rid` (`None`: the whole m-line, every layer).
    pub fn handle_keyframe_request(&mut self, rid: Option<Rid>) -> bool {
        if rid.is_some_and(|r| r != self.rid) {
            return false;
        }
        self.pictures.request_keyframe();
        self.keyframe_requests += 1;
        true
    }

    /// Write the next frame: a keyframe when one was asked for or `keyframe_interval` has
    /// passed since the last.
    pub fn write_frame(
        &mut self,
        rtc: &mut Rtc,
        now: Instant,
        fps: u32,
        keyframe_interval: Option<Duration>,
    ) {
        let (key, numbers) = self.pictures.next(now, keyframe_interval);
        let size = synth::frame_bytes(self.bitrate_bps, fps) * if key { 3 } else { 1 };
        let t = &mut self.track;
        let packets = synth::vp8_layer_frame(
            key,
            size,
            (self.plan.width, self.plan.height),
            numbers,
            t.source,
            t.index,
            now_us(),
        );
        let last = packets.len() - 1;
        for (i, p) in packets.into_iter().enumerate() {
            t.write(rtc, now, p, i == last, true);
        }
        t.ts += 90_000 / u64::from(fps.max(1));
    }

    /// Packets written.
    pub fn sent(&self) -> u64 {
        self.track.sent
    }

    /// What it sent so far.
    pub fn report(&self) -> LayerSent {
        LayerSent {
            rid: self.plan.rid.to_owned(),
            size: self.plan.size_name(),
            bitrate_bps: self.bitrate_bps,
            source: self.track.source,
            packets: self.track.sent,
            frames: self.pictures.frames,
            keyframes: self.pictures.keyframes,
            keyframe_requests: self.keyframe_requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_lowest_first_with_distinct_sizes_and_rates() {
        assert_eq!(rids().collect::<Vec<_>>(), ["q", "h", "f"]);
        let rates: Vec<u32> = PLAN.iter().map(|l| l.bitrate(1_500_000)).collect();
        assert_eq!(rates, [150_000, 500_000, 1_500_000]);
        let sizes: Vec<String> = PLAN.iter().map(LayerPlan::size_name).collect();
        assert_eq!(sizes, ["320x180", "640x360", "1280x720"]);
    }

    #[test]
    fn pictures_follow_the_temporal_pattern_and_restart_it_at_keyframes() {
        let t0 = Instant::now();
        let mut p = Pictures::new(0x7ffe, 255);
        let mut frames = Vec::new();
        for i in 0..7u64 {
            if i == 5 {
                p.request_keyframe();
            }
            let (key, n) = p.next(t0 + Duration::from_millis(33 * i), None);
            frames.push((key, n.tid, n.picture_id, n.tl0));
        }
        assert_eq!(
            frames,
            [
                (true, 0, 0x7ffe, 255),
                (false, 2, 0x7fff, 255),
                (false, 1, 0, 255),
                (false, 2, 1, 255),
                (false, 0, 2, 0),
                // Asked for mid-pattern: the keyframe is T0 and the pattern starts over.
                (true, 0, 3, 1),
                (false, 2, 4, 1),
            ]
        );
        assert_eq!(p.keyframes, 2);
    }

    #[test]
    fn periodic_keyframes_follow_the_interval() {
        let t0 = Instant::now();
        let mut p = Pictures::new(0, 0);
        let every = Some(Duration::from_secs(1));
        let keys: Vec<bool> = [0, 500, 999, 1000, 1500, 2000]
            .into_iter()
            .map(|ms| p.next(t0 + Duration::from_millis(ms), every).0)
            .collect();
        assert_eq!(keys, [true, false, false, true, false, true]);
    }
}
