//! Synthetic but well-formed media: Opus packets of 20 ms and VP8 frames at a given bitrate
//! and frame rate, split into RTP payloads, each ending in a [`Stamp`]. Simulcast layers'
//! frames carry the full payload descriptor (15-bit PictureID, TL0PICIDX, temporal layer)
//! and announce their own frame size in keyframes.

use crate::stamp::{STAMP_LEN, Stamp};

/// Largest RTP payload generated, leaving room for headers, extensions and SRTP.
pub const MAX_PAYLOAD: usize = 1100;

/// Opus: 20 ms per packet at 48 kHz.
pub const OPUS_FRAME_TICKS: u32 = 960;

/// One Opus packet: a TOC byte (config 31 = CELT fullband 20 ms, one frame) and a body of
/// `size` bytes in all, stamped.
pub fn opus_packet(source: u32, index: u32, sent_us: u64, size: usize) -> Vec<u8> {
    let size = size.clamp(1 + STAMP_LEN, MAX_PAYLOAD);
    let mut p = vec![0u8; size];
    p[0] = 31 << 3;
    for (i, b) in p[1..size - STAMP_LEN].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(index as u8);
    }
    Stamp {
        source,
        index,
        sent_us,
    }
    .write(&mut p);
    p
}

/// The RTP payloads of one VP8 frame of `frame_bytes` bytes, with the RFC 7741 payload
/// descriptor (S bit on the first packet) and a VP8 frame header on the first packet
/// (a keyframe carries the start code and a 640x360 size). `first_index` stamps the first
/// packet; the rest follow.
pub fn vp8_frame(
    keyframe: bool,
    frame_bytes: usize,
    source: u32,
    first_index: u32,
    sent_us: u64,
) -> Vec<Vec<u8>> {
    let body = MAX_PAYLOAD - 1;
    let frame_bytes = frame_bytes.max(16);
    let count = frame_bytes.div_ceil(body).max(1);
    let per = frame_bytes.div_ceil(count);
    (0..count)
        .map(|i| {
            let len = 1 + per.max(STAMP_LEN + 10);
            let mut p = vec![0u8; len];
            // Payload descriptor: X=0, N=0, S=1 on the frame's first packet, PID=0.
            p[0] = if i == 0 { 0x10 } else { 0x00 };
            if i == 0 {
                // Frame tag: P bit (0 = key), version 0, show_frame, partition size.
                let size: u32 = 16;
                let tag = u32::from(!keyframe) | (1 << 4) | (size << 5);
                p[1] = tag as u8;
                p[2] = (tag >> 8) as u8;
                p[3] = (tag >> 16) as u8;
                if keyframe {
                    p[4..7].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                    p[7..9].copy_from_slice(&640u16.to_le_bytes());
                    p[9..11].copy_from_slice(&360u16.to_le_bytes());
                }
            }
            let index = first_index.wrapping_add(i as u32);
            Stamp {
                source,
                index,
                sent_us,
            }
            .write(&mut p);
            p
        })
        .collect()
}

/// The picture numbers of one VP8 frame, as its payload descriptor carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp8Numbers {
    /// 15-bit PictureID.
    pub picture_id: u16,
    /// TL0PICIDX: the running index of the temporal base layer's frames.
    pub tl0: u8,
    /// Temporal layer (0 to 2).
    pub tid: u8,
}

/// Length of the payload descriptor of [`vp8_layer_frame`]: X, then I, L and T, a 15-bit
/// PictureID, TL0PICIDX, TID/Y/KEYIDX.
pub const LAYER_DESCRIPTOR: usize = 6;

/// The RTP payloads of one VP8 frame of a simulcast layer: `frame_bytes` bytes of frame
/// after the descriptor, split into packets of at most [`MAX_PAYLOAD`]; a keyframe's
/// first packet carries the start code and `size` (width, height). The Y bit is set on
/// frames that depend on the base layer only (T0 and T1 in the T0 T2 T1 T2 pattern).
pub fn vp8_layer_frame(
    keyframe: bool,
    frame_bytes: usize,
    size: (u16, u16),
    numbers: Vp8Numbers,
    source: u32,
    first_index: u32,
    sent_us: u64,
) -> Vec<Vec<u8>> {
    let body = MAX_PAYLOAD - LAYER_DESCRIPTOR;
    let frame_bytes = frame_bytes.max(16);
    let count = frame_bytes.div_ceil(body).max(1);
    let per = frame_bytes.div_ceil(count);
    let sync = if numbers.tid <= 1 { 0x20 } else { 0 };
    (0..count)
        .map(|i| {
            let len = LAYER_DESCRIPTOR + per.max(STAMP_LEN + 10);
            let mut p = vec![0u8; len];
            p[0] = if i == 0 { 0x90 } else { 0x80 };
            p[1] = 0xe0;
            p[2] = 0x80 | ((numbers.picture_id >> 8) & 0x7f) as u8;
            p[3] = numbers.picture_id as u8;
            p[4] = numbers.tl0;
            p[5] = (numbers.tid << 6) | sync;
            if i == 0 {
                let h = &mut p[LAYER_DESCRIPTOR..];
                // Frame tag: P bit (0 = key), version 0, show_frame, partition size.
                let tag = u32::from(!keyframe) | (1 << 4) | (16 << 5);
                h[..3].copy_from_slice(&tag.to_le_bytes()[..3]);
                if keyframe {
                    h[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                    h[6..8].copy_from_slice(&(size.0 & 0x3fff).to_le_bytes());
                    h[8..10].copy_from_slice(&(size.1 & 0x3fff).to_le_bytes());
                }
            }
            Stamp {
                source,
                index: first_index.wrapping_add(i as u32),
                sent_us,
            }
            .write(&mut p);
            p
        })
        .collect()
}

/// Bytes per video frame for `bitrate_bps` at `fps`.
pub fn frame_bytes(bitrate_bps: u32, fps: u32) -> usize {
    (bitrate_bps as usize / 8) / fps.max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_packets_are_stamped() {
        let p = opus_packet(3, 5, 99, 80);
        assert_eq!(p.len(), 80);
        assert_eq!(p[0], 0xf8);
        assert_eq!(
            Stamp::read(&p),
            Some(Stamp {
                source: 3,
                index: 5,
                sent_us: 99
            })
        );
    }

    #[test]
    fn vp8_frames_split_and_mark_keyframes() {
        let packets = vp8_frame(true, 5000, 1, 10, 7);
        assert!(packets.len() >= 5);
        assert_eq!(packets[0][0], 0x10, "S bit on the first packet");
        assert_eq!(packets[0][1] & 1, 0, "P bit clear: keyframe");
        assert_eq!(&packets[0][4..7], &[0x9d, 0x01, 0x2a]);
        assert!(packets[1..].iter().all(|p| p[0] == 0));
        for (i, p) in packets.iter().enumerate() {
            assert!(p.len() <= MAX_PAYLOAD);
            assert_eq!(Stamp::read(p).unwrap().index, 10 + i as u32);
        }
        let delta = vp8_frame(false, 500, 1, 0, 0);
        assert_eq!(delta.len(), 1);
        assert_eq!(delta[0][1] & 1, 1, "P bit set: delta frame");
    }

    #[test]
    fn layer_frames_carry_their_numbers_and_size() {
        let n = Vp8Numbers {
            picture_id: 0x4321,
            tl0: 9,
            tid: 0,
        };
        let key = vp8_layer_frame(true, 4000, (1280, 720), n, 5, 100, 7);
        assert_eq!(
            key.len(),
            4,
            "4000 bytes in packets of at most {MAX_PAYLOAD}"
        );
        for (i, p) in key.iter().enumerate() {
            assert!(p.len() <= MAX_PAYLOAD);
            assert_eq!(p[0], if i == 0 { 0x90 } else { 0x80 }, "S bit on the first");
            assert_eq!(&p[1..6], &[0xe0, 0xc3, 0x21, 9, 0x20]);
            assert_eq!(Stamp::read(p).unwrap().index, 100 + i as u32);
        }
        let h = &key[0][LAYER_DESCRIPTOR..];
        assert_eq!(h[0] & 1, 0, "keyframe");
        assert_eq!(&h[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([h[6], h[7]]), 1280);
        assert_eq!(u16::from_le_bytes([h[8], h[9]]), 720);
        let delta = vp8_layer_frame(false, 300, (320, 180), Vp8Numbers { tid: 2, ..n }, 5, 0, 0);
        assert_eq!(delta.len(), 1);
        assert_eq!(delta[0][LAYER_DESCRIPTOR] & 1, 1, "P bit set: delta frame");
        assert_eq!(delta[0][5], 0x80, "T2, no Y bit");
    }

    #[test]
    fn frame_size_follows_bitrate() {
        assert_eq!(frame_bytes(1_500_000, 30), 6250);
    }
}
