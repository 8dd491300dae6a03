//! The harness's simulcast encoder: one VP8 layer stream per negotiated RID, each with its
//! own frame size (announced in its keyframes), bitrate, PictureID and TL0PICIDX numbering
//! and Chromium's temporal pattern (T0 T2 T1 T2), so the server's layer selection and
//! rewriting meet what browsers send. And what a subscriber can read back from a packet:
//! which layer it came from, its picture numbers.

use std::time::{Duration, Instant};

use manifold_core::str0m::Rtc;
use manifold_core::str0m::format::Codec;
use manifold_core::str0m::media::{MediaKind, Mid, Rids};
use manifold_core::str0m::rtp::RtpWrite;

use super::{OutStream, Received, Record, Sent};

/// Where the record sits in a payload with a full VP8 descriptor (after the descriptor, the
/// frame tag and a keyframe's start code and size).
pub(super) const SIM_RECORD_AT: usize = 20;
/// Descriptor length of the harness's simulcast packets.
const DESCRIPTOR: usize = 6;

/// One simulcast layer of a harness publisher.
pub struct SimLayer {
    pub rid: String,
    pub(super) stream: OutStream,
    pub packets_per_frame: usize,
    pub payload: usize,
    pub width: u16,
    pub height: u16,
    pid: u16,
    tl0: u8,
    frame: u64,
    pub keyframe_due: bool,
    last_keyframe: Option<Instant>,
    /// The encoder does not send this layer (stopped, or paused by dynacast).
    pub paused: bool,
    /// H.264 instead of VP8.
    h264: bool,
}

/// The shape of layer `i` (lowest first): frame size, packets per frame, payload bytes.
/// About 110 kbit/s, 460 kbit/s and 1.1 Mbit/s on the wire.
fn shape(i: usize) -> (u16, u16, usize, usize) {
    match i {
        0 => (320, 180, 1, 400),
        1 => (640, 360, 2, 900),
        _ => (1280, 720, 4, 1100),
    }
}

/// The layers of the video m-line among `mids`, if it was negotiated with simulcast.
/// With `late`, only the lowest layer starts: the others wait for `Harness::pause_layer`,
/// as a browser's upper layers wait for its uplink estimate. With `h264`, the layers are
/// H.264 (single NAL unit packets: IDR slices for keyframes) instead of VP8.
pub(super) fn layers(
    rtc: &mut Rtc,
    mids: &[(Mid, MediaKind)],
    late: bool,
    h264: bool,
) -> Vec<SimLayer> {
    let codec = if h264 { Codec::H264 } else { Codec::Vp8 };
    let Some(mid) = mids
        .iter()
        .find(|(_, k)| *k == MediaKind::Video)
        .map(|(m, _)| *m)
    else {
        return Vec::new();
    };
    let Some(media) = rtc.media(mid) else {
        return Vec::new();
    };
    let rids: Vec<_> = match media.rids_tx() {
        Rids::Specific(rids) => rids.clone(),
        _ => return Vec::new(),
    };
    let remote_pts = media.remote_pts().to_vec();
    let _ = media;
    let Some(pt) = rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && remote_pts.contains(&p.pt()))
        .map(|p| p.pt())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, rid) in rids.iter().enumerate() {
        let mut api = rtc.direct_api();
        let Some(ssrc) = api.stream_tx_by_mid(mid, Some(*rid)).map(|tx| tx.ssrc()) else {
            continue;
        };
        let (width, height, packets_per_frame, payload) = shape(i);
        out.push(SimLayer {
            rid: rid.to_string(),
            stream: OutStream {
                mid,
                ssrc,
                pt,
                red: None,
                last_payload: Vec::new(),
                seq: 1000 + 10_000 * i as u64,
                ts: 50_000 + 1_000_000 * i as u32,
                counter: 0,
            },
            packets_per_frame,
            payload,
            width,
            height,
            pid: 100 + 9000 * i as u16,
            tl0: 10 * i as u8,
            frame: 0,
            keyframe_due: true,
            last_keyframe: None,
            paused: late && i > 0,
            h264,
        });
    }
    out
}

/// Write one frame of every layer that is not paused.
pub(super) fn write_frame(
    rtc: &mut Rtc,
    layers: &mut [SimLayer],
    tag: u8,
    keyframe_interval: Option<Duration>,
    now: Instant,
    sent: &mut Vec<Sent>,
) {
    for (li, l) in layers.iter_mut().enumerate() {
        if l.paused {
            continue;
        }
        let periodic =
            keyframe_interval.is_some_and(|every| l.last_keyframe.is_none_or(|k| now - k >= every));
        let keyframe = l.keyframe_due || periodic;
        if keyframe {
            l.keyframe_due = false;
            l.last_keyframe = Some(now);
        }
        let tid: u8 = if keyframe {
            0
        } else {
            [0, 2, 1, 2][(l.frame % 4) as usize]
        };
        if tid == 0 && l.frame > 0 {
            l.tl0 = l.tl0.wrapping_add(1);
        }
        let packets = if keyframe {
            3 * l.packets_per_frame
        } else {
            l.packets_per_frame
        };
        for index in 0..packets {
            let mut payload = vec![0u8; l.payload.max(SIM_RECORD_AT + 20)];
            if l.h264 {
                // One NAL unit per packet: IDR slices make a keyframe, others are P slices.
                payload[0] = if keyframe { 0x65 } else { 0x41 };
                payload[1] = 0x88;
            } else {
                payload[0] = if index == 0 { 0x90 } else { 0x80 };
                payload[1] = 0xe0;
                payload[2] = 0x80 | (l.pid >> 8) as u8;
                payload[3] = l.pid as u8;
                payload[4] = l.tl0;
                payload[5] = (tid << 6) | if tid == 0 { 0x20 } else { 0 };
                if index == 0 {
                    let tag_byte = if keyframe { 0x50 } else { 0x51 };
                    payload[DESCRIPTOR..DESCRIPTOR + 3].copy_from_slice(&[tag_byte, 0x02, 0x00]);
                    if keyframe {
                        payload[DESCRIPTOR + 3..DESCRIPTOR + 6]
                            .copy_from_slice(&[0x9d, 0x01, 0x2a]);
                        payload[DESCRIPTOR + 6..DESCRIPTOR + 8]
                            .copy_from_slice(&l.width.to_le_bytes());
                        payload[DESCRIPTOR + 8..DESCRIPTOR + 10]
                            .copy_from_slice(&l.height.to_le_bytes());
                    }
                }
            }
            let s = &mut l.stream;
            Record {
                tag,
                counter: s.counter,
                frame: l.frame,
                index: ((li as u16) << 8) | index as u16,
            }
            .write(&mut payload);
            let write = RtpWrite::new(s.pt, s.seq.into(), s.ts, now, payload)
                .marker(index + 1 == packets)
                .nackable(true);
            // By mid and RID: after `reset_stream_tx` str0m still files the stream under
            // its first SSRC.
            let rid = l.rid.as_str().into();
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(s.mid, Some(rid)) {
                tx.write_rtp(write);
            }
            sent.push(Sent {
                at: now,
                kind: MediaKind::Video,
                seq_no: s.seq,
                ts: s.ts,
                counter: s.counter,
                keyframe_start: keyframe && index == 0,
            });
            s.seq += 1;
            s.counter += 1;
        }
        l.stream.ts = l.stream.ts.wrapping_add(super::VIDEO_TICKS_PER_FRAME);
        l.pid = (l.pid + 1) & 0x7fff;
        l.frame += 1;
    }
}

/// The encoder restarts: every layer continues under a new SSRC with new sequence numbers
/// and timestamps, starting with a keyframe, as a browser does after `replaceTrack` or a
/// crash of its encoder.
pub(super) fn restart(rtc: &mut Rtc, layers: &mut [SimLayer], seed: u32) {
    for (i, l) in layers.iter_mut().enumerate() {
        let ssrc = (0x5000_0000 + seed * 16 + i as u32).into();
        let rtx = (0x6000_0000 + seed * 16 + i as u32).into();
        let rid = l.rid.as_str().into();
        rtc.direct_api()
            .reset_stream_tx(l.stream.mid, Some(rid), ssrc, Some(rtx))
            .expect("the layer's send stream");
        l.stream.ssrc = ssrc;
        l.stream.seq = 40_000 + 1000 * i as u64;
        l.stream.ts = 7_000_000 + 100_000 * i as u32;
        l.pid = 20_000 + 10 * i as u16;
        l.keyframe_due = true;
    }
}

/// Where the record of payload `p` is.
pub(super) fn record_at(p: &[u8]) -> usize {
    if p.first().is_some_and(|b| b & 0x80 != 0) {
        SIM_RECORD_AT
    } else {
        super::RECORD_AT
    }
}

impl Received {
    /// The simulcast layer (0 lowest) a harness packet came from.
    pub fn layer(&self) -> Option<u16> {
        self.record().map(|r| r.index >> 8)
    }

    /// The VP8 PictureID and TL0PICIDX as received (after the server's rewriting).
    pub fn vp8_numbers(&self) -> Option<(u16, u8)> {
        let p = &self.payload;
        if p.len() < DESCRIPTOR || p[0] & 0x80 == 0 {
            return None;
        }
        Some(((u16::from(p[2] & 0x7f) << 8) | u16::from(p[3]), p[4]))
    }
}

/// A simulcast video keyframe's first packet: descriptor S bit, partition 0, frame tag P
/// bit clear.
pub(super) fn is_sim_keyframe_start(p: &[u8]) -> bool {
    p.len() > DESCRIPTOR && p[0] & 0x17 == 0x10 && p[DESCRIPTOR] & 0x01 == 0
}
