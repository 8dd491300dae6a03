//! A published track: where its packets come from, which codecs its payload types mean,
//! who receives it, and when it last asked its publisher for a keyframe.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use manifold_api::protocol::TrackSource;
use manifold_api::{MediaKind, TrackId};
use manifold_rtp::VideoCodec;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Mid, Pt};
use str0m::rtp::{ExtensionValues, Ssrc};

use crate::forwarder::PacketMeta;
use crate::keys::PKey;

/// Recent packets a video track keeps (payloads shared, not copied): enough for a keyframe
/// and what arrives while its first packet is retransmitted.
pub(crate) const HISTORY_PACKETS: usize = 128;

/// How long a track's SSRC must be silent before another SSRC on the same m-line may take
/// over (an encoder restart). Shorter than that, a second SSRC is a stray (or simulcast,
/// which this track does not select among yet) and is dropped.
pub(crate) const SSRC_TAKEOVER_SILENCE: Duration = Duration::from_millis(1000);

/// Codec facts of one payload type, looked up per packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PtInfo {
    pub pt: Pt,
    pub clock_rate: u32,
    /// Set for video codecs whose keyframes we can recognise.
    pub video: Option<VideoCodec>,
}

/// Keyframe requests to one source, coalesced: at most one per interval, and one pending
/// request stands for every subscriber that asked meanwhile.
#[derive(Debug, Default)]
pub(crate) struct KeyframeRequests {
    pub last_sent: Option<Instant>,
    pub pending: bool,
}

impl KeyframeRequests {
    /// Someone needs a keyframe. Returns true when a request should be sent now; otherwise
    /// it is left pending, and the shard's housekeeping sends it once the interval passed.
    pub fn ask(&mut self, now: Instant, interval: Duration) -> bool {
        match self.last_sent {
            Some(at) if now.saturating_duration_since(at) < interval => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// A keyframe arrived; whatever was pending is satisfied.
    pub fn satisfied(&mut self) {
        self.pending = false;
    }
}

/// One packet of a track as every subscriber gets it: computed once, payload shared.
#[derive(Clone, Debug)]
pub(crate) struct Kept {
    pub meta: PacketMeta,
    pub pt: Pt,
    pub marker: bool,
    /// When it arrived.
    pub timestamp: Instant,
    pub ext: ExtensionValues,
    pub payload: Arc<[u8]>,
}

pub(crate) struct Subscriber {
    pub participant: PKey,
    pub slot: usize,
}

/// What the room is told about a track besides its media.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TrackLabel {
    pub source: TrackSource,
    pub name: String,
    pub muted: bool,
    /// The room-protocol client's name for it.
    pub cid: Option<String>,
}

impl TrackLabel {
    /// The label of a track that came in an SDP offer (WHIP).
    pub fn offered(kind: MediaKind) -> Self {
        TrackLabel {
            source: match kind {
                MediaKind::Audio => TrackSource::Microphone,
                MediaKind::Video => TrackSource::Camera,
            },
            name: String::new(),
            muted: false,
            cid: None,
        }
    }
}

pub(crate) struct Track {
    pub id: TrackId,
    pub publisher: PKey,
    pub mid: Mid,
    pub kind: MediaKind,
    pub label: TrackLabel,
    /// The publisher's negotiated payload parameters for this m-line.
    pub params: Vec<PayloadParams>,
    pub pts: Vec<PtInfo>,
    /// The SSRC currently carrying this track.
    pub ssrc: Option<Ssrc>,
    pub last_packet_at: Option<Instant>,
    pub subscribers: Vec<Subscriber>,
    pub keyframes: KeyframeRequests,
    /// The last [`HISTORY_PACKETS`] packets of a video track, in arrival order, so a
    /// subscriber that starts on a keyframe also gets the rest of it when that arrived first.
    pub history: VecDeque<Kept>,
}

impl Track {
    pub fn new(
        id: TrackId,
        publisher: PKey,
        mid: Mid,
        kind: MediaKind,
        label: TrackLabel,
        params: Vec<PayloadParams>,
    ) -> Self {
        let pts = params
            .iter()
            .map(|p| {
                let spec = p.spec();
                PtInfo {
                    pt: p.pt(),
                    clock_rate: spec.clock_rate.get(),
                    video: video_codec(spec.codec),
                }
            })
            .collect();
        Track {
            id,
            publisher,
            mid,
            kind,
            label,
            params,
            pts,
            ssrc: None,
            last_packet_at: None,
            subscribers: Vec::new(),
            keyframes: KeyframeRequests::default(),
            history: VecDeque::new(),
        }
    }

    pub fn pt_info(&self, pt: Pt) -> Option<PtInfo> {
        self.pts.iter().find(|i| i.pt == pt).copied()
    }
}

fn video_codec(codec: Codec) -> Option<VideoCodec> {
    match codec {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::Vp9 => Some(VideoCodec::Vp9),
        Codec::H264 => Some(VideoCodec::H264),
        Codec::H265 => Some(VideoCodec::H265),
        Codec::Av1 => Some(VideoCodec::Av1),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test's epoch
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_are_coalesced() {
        let t0 = Instant::now();
        let iv = Duration::from_millis(500);
        let mut k = KeyframeRequests::default();
        assert!(k.ask(t0, iv), "the first request goes out at once");
        assert!(!k.ask(t0 + Duration::from_millis(10), iv));
        assert!(!k.ask(t0 + Duration::from_millis(20), iv));
        assert!(k.pending, "the later ones wait");
        assert!(k.ask(t0 + Duration::from_millis(500), iv), "one for both");
        assert!(!k.pending);
    }

    #[test]
    fn a_keyframe_cancels_the_pending_request() {
        let t0 = Instant::now();
        let iv = Duration::from_millis(500);
        let mut k = KeyframeRequests::default();
        assert!(k.ask(t0, iv));
        assert!(!k.ask(t0 + Duration::from_millis(1), iv));
        k.satisfied();
        assert!(!k.pending);
    }
}
