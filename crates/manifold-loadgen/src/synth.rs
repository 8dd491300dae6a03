//! Synthetic but well-formed media: Opus packets of 20 ms and VP8 frames at a given bitrate
//! and frame rate, split into RTP payloads, each ending in a [`Stamp`].

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
    fn frame_size_follows_bitrate() {
        assert_eq!(frame_bytes(1_500_000, 30), 6250);
    }
}
