//! A published track: which codecs its payload types mean, its layers (one, or a simulcast
//! encoding per RID, each with its own SSRC, keyframe requests and measurements: `layer.rs`),
//! who receives it, how loud it is (audio), and which layers the publisher was told to send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use manifold_api::protocol::TrackSource;
use manifold_api::{MediaKind, ParticipantId, TrackId};
use manifold_rtp::VideoCodec;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Mid, Pt, Rid};
use str0m::rtp::ExtensionValues;

use crate::forwarder::PacketMeta;
use crate::keys::PKey;
use crate::layer::{self, Layer};
use crate::relay::{Origin, RelayIn, RelayTarget};
use crate::speakers::LevelMeter;

/// Recent packets a video track keeps (payloads shared, not copied): enough for a keyframe
/// and what arrives while its first packet is retransmitted.
pub(crate) const HISTORY_PACKETS: usize = 128;

/// How long the SSRC of a layer without a RID must be silent before another SSRC on the same
/// m-line may take over (an encoder restart). Shorter than that, a second SSRC is a stray
/// and is dropped. (A simulcast layer's RID names it, so a new SSRC with the same RID takes
/// over at once.)
pub(crate) const SSRC_TAKEOVER_SILENCE: Duration = Duration::from_millis(1000);

/// Codec facts of one payload type, looked up per packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PtInfo {
    pub pt: Pt,
    pub clock_rate: u32,
    /// Set for video codecs whose keyframes we can recognise.
    pub video: Option<VideoCodec>,
    /// A RED (RFC 2198) payload type: the PT of the codec it carries.
    pub red_of: Option<Pt>,
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

/// Bytes a forwarded packet costs on the wire besides its payload (RTP header and
/// extensions, SRTP tag, UDP and IP), for layer bitrates.
pub(crate) const PACKET_OVERHEAD: usize = 60;

/// One packet of a track as every subscriber gets it: computed once, payload shared.
#[derive(Clone, Debug)]
pub(crate) struct Kept {
    pub meta: PacketMeta,
    /// str0m's view of a VP8 descriptor, to patch the rewritten numbers in on the way out.
    pub vp8: Option<str0m::rtp::Vp8Descriptor>,
    /// A RED packet's primary block, for subscribers that take the plain codec (`None`: not
    /// RED, or not decodable).
    pub red_primary: Option<Arc<[u8]>>,
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
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Which layers the publisher was last told to send (dynacast), and a pause in waiting.
#[derive(Debug, Default)]
pub(crate) struct Dynacast {
    /// Bit per layer index: told to send.
    pub active: u8,
    /// Since when fewer layers have been needed than are active.
    pub surplus_since: Option<Instant>,
}

pub(crate) struct Track {
    pub id: TrackId,
    /// Who publishes it: a participant here, or one on another shard (a relayed track).
    pub origin: Origin,
    /// The publisher's id, wherever it is.
    pub publisher_id: ParticipantId,
    pub mid: Mid,
    pub kind: MediaKind,
    pub label: TrackLabel,
    /// The publisher's negotiated payload parameters for this m-line.
    pub params: Vec<PayloadParams>,
    pub pts: Vec<PtInfo>,
    /// Its layers, in the order negotiated (RIDs) or just one; at most
    /// [`manifold_api::protocol::MAX_LAYERS`].
    pub layers: Vec<Layer>,
    /// Layer indices from lowest to highest quality ([`layer::rank`]).
    pub order: Vec<u8>,
    pub subscribers: Vec<Subscriber>,
    /// Audio: its level, for active-speaker detection.
    pub level: LevelMeter,
    pub dynacast: Dynacast,
    /// A local track: the other shards it is relayed to.
    pub relays: Vec<RelayTarget>,
    /// A relayed track: what was seen of it.
    pub relay_in: Option<RelayIn>,
}

impl Track {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: TrackId,
        origin: Origin,
        publisher_id: ParticipantId,
        mid: Mid,
        kind: MediaKind,
        label: TrackLabel,
        params: Vec<PayloadParams>,
        rids: &[Rid],
    ) -> Self {
        let pts = params
            .iter()
            .flat_map(|p| {
                let spec = p.spec();
                let plain = PtInfo {
                    pt: p.pt(),
                    clock_rate: spec.clock_rate.get(),
                    video: video_codec(spec.codec),
                    red_of: None,
                };
                let red = p.red().map(|pt| PtInfo {
                    pt,
                    red_of: Some(p.pt()),
                    ..plain
                });
                std::iter::once(plain).chain(red)
            })
            .collect();
        let max = usize::from(manifold_api::protocol::MAX_LAYERS);
        let layers: Vec<Layer> = if rids.is_empty() || kind == MediaKind::Audio {
            vec![Layer::new(None)]
        } else {
            rids.iter()
                .take(max)
                .map(|r| Layer::new(Some(*r)))
                .collect()
        };
        let mut order = Vec::new();
        layer::rank(&layers, &mut order);
        let all = (1u8 << layers.len()) - 1;
        Track {
            id,
            origin,
            publisher_id,
            mid,
            kind,
            label,
            params,
            pts,
            layers,
            order,
            subscribers: Vec::new(),
            level: LevelMeter::default(),
            dynacast: Dynacast {
                active: all,
                surplus_since: None,
            },
            relays: Vec::new(),
            relay_in: None,
        }
    }

    pub fn pt_info(&self, pt: Pt) -> Option<PtInfo> {
        self.pts.iter().find(|i| i.pt == pt).copied()
    }

    /// Has more than one layer.
    pub fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// The layer a packet with `rid` belongs to (`None`: the only layer of a track without
    /// simulcast, or the first).
    pub fn layer_of(&self, rid: Option<Rid>) -> Option<u8> {
        match rid {
            None => Some(0),
            Some(r) => self
                .layers
                .iter()
                .position(|l| l.rid == Some(r))
                .map(|i| i as u8),
        }
    }

    /// Where layer `layer` stands, lowest quality 0.
    pub fn rank_of(&self, layer: u8) -> Option<usize> {
        self.order.iter().position(|&l| l == layer)
    }

    /// Forget what was kept of every layer (a restart, an unmute).
    pub fn clear_history(&mut self) {
        for l in &mut self.layers {
            l.history.clear();
        }
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
