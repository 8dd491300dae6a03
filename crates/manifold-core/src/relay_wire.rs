//! Relay messages on the wire between nodes: what a shard relays to the node bridge
//! ([`BRIDGE`](crate::relay::BRIDGE)) is encoded here to travel over the cluster's bus, and
//! what arrives from other nodes is decoded here, with size limits and typed errors (it
//! comes from outside this process).
//!
//! Media is binary, our own header in front of the RTP payload (network byte order):
//!
//! ```text
//! 0      'M' (0x4d)        1      version (1)
//! 2..10  track id          10     layer
//! 11..15 publisher's SSRC  15..23 extended sequence number
//! 23     payload type      24..32 extended RTP timestamp
//! 32     flags: 1 marker, 2 audio level, 4 voice activity, 8 video orientation
//! 33     audio level (-dBov)   34  video orientation
//! 35..   payload
//! ```
//!
//! Everything else (open, close, mute, and the feedback that goes back to the origin) is
//! rare and small: `'J'`, version, then JSON.

use std::sync::Arc;
use std::time::Instant;

use manifold_api::TrackId;
use str0m::format::PayloadParams;
use str0m::media::Rid;
use str0m::rtp::{ExtensionValues, VideoOrientation};

use crate::relay::{RelayMessage, RelayedPacket};
use crate::track::TrackLabel;

/// Largest encoded message accepted: a video packet with its header, or an open message.
pub const MAX_WIRE_BYTES: usize = 16 * 1024;
/// Most payload types an opened track may describe.
const MAX_PARAMS: usize = 16;
/// Longest track label name carried.
const MAX_NAME_BYTES: usize = 256;
const MEDIA: u8 = b'M';
const JSON: u8 = b'J';
const VERSION: u8 = 1;
const HEADER: usize = 35;

/// Why a message from another node cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Longer than [`MAX_WIRE_BYTES`].
    #[error("relay message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Shorter than its header, or not one of ours.
    #[error("not a relay message: {0}")]
    Malformed(String),
    /// A version this node does not speak.
    #[error("relay message version {0} is not supported")]
    Version(u8),
    /// It parses but describes something the shard must not take.
    #[error("relay message refused: {0}")]
    Invalid(String),
}

/// Encode `message` into `out` (cleared first).
pub fn encode(message: &RelayMessage, out: &mut Vec<u8>) {
    out.clear();
    if let RelayMessage::Media {
        track,
        layer,
        packet,
    } = message
    {
        out.reserve(HEADER + packet.payload.len());
        out.push(MEDIA);
        out.push(VERSION);
        out.extend_from_slice(&track.0.to_be_bytes());
        out.push(*layer);
        out.extend_from_slice(&packet.ssrc.to_be_bytes());
        out.extend_from_slice(&packet.seq.to_be_bytes());
        out.push(packet.pt);
        out.extend_from_slice(&packet.ts.to_be_bytes());
        let ext = &packet.ext;
        let mut flags = u8::from(packet.marker);
        flags |= if ext.audio_level.is_some() { 2 } else { 0 };
        flags |= match ext.voice_activity {
            Some(true) => 4,
            _ => 0,
        };
        flags |= if ext.video_orientation.is_some() {
            8
        } else {
            0
        };
        out.push(flags);
        out.push(ext.audio_level.unwrap_or(0) as u8);
        out.push(ext.video_orientation.map_or(0, |o| match o {
            VideoOrientation::Deg0 => 0,
            VideoOrientation::Deg90 => 1,
            VideoOrientation::Deg180 => 2,
            VideoOrientation::Deg270 => 3,
        }));
        out.extend_from_slice(&packet.payload);
        return;
    }
    out.push(JSON);
    out.push(VERSION);
    // Serializing plain data into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, message);
}

/// Decode a message from another node, received at `now`.
pub fn decode(bytes: &[u8], now: Instant) -> Result<RelayMessage, WireError> {
    if bytes.len() > MAX_WIRE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (&kind, rest) = bytes
        .split_first()
        .ok_or_else(|| WireError::Malformed("empty".into()))?;
    let (&version, body) = rest
        .split_first()
        .ok_or_else(|| WireError::Malformed("no version".into()))?;
    if kind != MEDIA && kind != JSON {
        return Err(WireError::Malformed(format!("kind byte {kind:#04x}")));
    }
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    if kind == MEDIA {
        return decode_media(bytes, now);
    }
    let message: RelayMessage =
        serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    match &message {
        RelayMessage::Open(open) => check_open(&open.label, &open.params, &open.rids)?,
        RelayMessage::Lost { seqs, .. } if seqs.len() > crate::relay::MAX_RELAY_NACK => {
            return Err(WireError::Invalid(format!(
                "{} lost packets named",
                seqs.len()
            )));
        }
        _ => {}
    }
    Ok(message)
}

fn decode_media(b: &[u8], now: Instant) -> Result<RelayMessage, WireError> {
    if b.len() < HEADER {
        return Err(WireError::Malformed(format!(
            "a media message of {} bytes is shorter than its header",
            b.len()
        )));
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_be_bytes(a)
    };
    let mut ssrc = [0u8; 4];
    ssrc.copy_from_slice(&b[11..15]);
    let layer = b[10];
    if layer >= manifold_api::protocol::MAX_LAYERS {
        return Err(WireError::Invalid(format!("layer {layer}")));
    }
    let flags = b[32];
    let orientation = match (flags & 8 != 0, b[34]) {
        (false, _) => None,
        (true, 0) => Some(VideoOrientation::Deg0),
        (true, 1) => Some(VideoOrientation::Deg90),
        (true, 2) => Some(VideoOrientation::Deg180),
        (true, 3) => Some(VideoOrientation::Deg270),
        (true, o) => return Err(WireError::Invalid(format!("video orientation {o}"))),
    };
    Ok(RelayMessage::Media {
        track: TrackId(u64_at(2)),
        layer,
        packet: RelayedPacket {
            ssrc: u32::from_be_bytes(ssrc),
            seq: u64_at(15),
            pt: b[23],
            ts: u64_at(24),
            marker: flags & 1 != 0,
            timestamp: now,
            ext: ExtensionValues {
                audio_level: (flags & 2 != 0).then_some(b[33] as i8),
                voice_activity: (flags & 2 != 0).then_some(flags & 4 != 0),
                video_orientation: orientation,
                ..Default::default()
            },
            payload: Arc::from(&b[HEADER..]),
        },
    })
}

/// What the shard relies on in an opened track: distinct payload types (str0m asserts on
/// two configurations of one), few of them, a bounded name, at most three RIDs.
fn check_open(label: &TrackLabel, params: &[PayloadParams], rids: &[Rid]) -> Result<(), WireError> {
    if params.len() > MAX_PARAMS {
        return Err(WireError::Invalid(format!(
            "{} payload types",
            params.len()
        )));
    }
    let mut pts: Vec<u8> = Vec::new();
    for p in params {
        for pt in std::iter::once(p.pt()).chain(p.resend()).chain(p.red()) {
            if pts.contains(&*pt) {
                return Err(WireError::Invalid(format!("payload type {} twice", *pt)));
            }
            pts.push(*pt);
        }
    }
    if rids.len() > usize::from(manifold_api::protocol::MAX_LAYERS) {
        return Err(WireError::Invalid(format!("{} layers", rids.len())));
    }
    if label.name.len() > MAX_NAME_BYTES
        || label.cid.as_ref().is_some_and(|c| c.len() > MAX_NAME_BYTES)
    {
        return Err(WireError::Invalid("a track name over 256 bytes".into()));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test's clock
mod tests {
    use super::*;

    fn media() -> RelayMessage {
        RelayMessage::Media {
            track: TrackId(0x0102_0304_0506_0708),
            layer: 2,
            packet: RelayedPacket {
                ssrc: 0xdead_beef,
                seq: 70_000,
                pt: 96,
                ts: 1 << 33,
                marker: true,
                timestamp: Instant::now(),
                ext: ExtensionValues {
                    audio_level: Some(-30),
                    voice_activity: Some(true),
                    video_orientation: Some(VideoOrientation::Deg90),
                    ..Default::default()
                },
                payload: Arc::from(&b"payload bytes"[..]),
            },
        }
    }

    #[test]
    fn media_survives_the_wire() {
        let mut out = Vec::new();
        encode(&media(), &mut out);
        assert_eq!(out.len(), HEADER + 13);
        let RelayMessage::Media {
            track,
            layer,
            packet,
        } = decode(&out, Instant::now()).unwrap()
        else {
            panic!("not media");
        };
        assert_eq!((track, layer), (TrackId(0x0102_0304_0506_0708), 2));
        assert_eq!(
            (packet.ssrc, packet.seq, packet.pt, packet.ts),
            (0xdead_beef, 70_000, 96, 1 << 33)
        );
        assert!(packet.marker);
        assert_eq!(packet.ext.audio_level, Some(-30));
        assert_eq!(packet.ext.voice_activity, Some(true));
        assert_eq!(packet.ext.video_orientation, Some(VideoOrientation::Deg90));
        assert_eq!(&packet.payload[..], b"payload bytes");
    }

    #[test]
    fn feedback_survives_the_wire() {
        let mut out = Vec::new();
        let lost = RelayMessage::Lost {
            track: TrackId(9),
            layer: 1,
            seqs: vec![4, 5, 6],
        };
        encode(&lost, &mut out);
        assert!(matches!(
            decode(&out, Instant::now()),
            Ok(RelayMessage::Lost { track: TrackId(9), layer: 1, ref seqs }) if seqs == &[4, 5, 6]
        ));
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let now = Instant::now();
        assert!(matches!(decode(&[], now), Err(WireError::Malformed(_))));
        assert!(matches!(
            decode(b"X\x01", now),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(decode(b"M\x02", now).unwrap_err(), WireError::Version(2));
        assert!(matches!(
            decode(b"M\x01short", now),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"J\x01{", now),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode(&vec![b'M'; MAX_WIRE_BYTES + 1], now),
            Err(WireError::TooLarge(_))
        ));
        let mut out = Vec::new();
        encode(&media(), &mut out);
        out[10] = 7;
        assert!(matches!(decode(&out, now), Err(WireError::Invalid(_))));
        encode(
            &RelayMessage::Lost {
                track: TrackId(1),
                layer: 0,
                seqs: (0..100).collect(),
            },
            &mut out,
        );
        assert!(matches!(decode(&out, now), Err(WireError::Invalid(_))));
    }
}
