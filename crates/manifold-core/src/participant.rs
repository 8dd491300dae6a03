//! One participant on a shard: its `Rtc`, the tracks it publishes, the m-lines it receives
//! on (slots), and the rules for driving its `Rtc` safely.
//!
//! Every call into the `Rtc` goes through [`Participant::with_rtc`], which contains a panic
//! to this participant: the `Rtc` holds no locks, so a panicking one is simply discarded
//! and the shard goes on.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use manifold_api::protocol::{Quality, QualityRequest, StreamState};
use manifold_api::{
    Identity, LeaveReason, MediaKind, ParticipantId, RoomName, SessionKind, Source,
};
use slab::Slab;
use str0m::format::PayloadParams;
use str0m::media::{Direction, Mid, Pt};
use str0m::net::Protocol;
use str0m::rtp::Ssrc;
use str0m::{Output as RtcOutput, Rtc};

use crate::forwarder::Forwarder;
use crate::keys::{PKey, TKey};
use crate::negotiation::Negotiation;
use crate::outbox::Outbox;
use crate::track::Track;

/// Most SSRCs (main and repair) cached per publisher: a few m-lines, a few SSRCs each.
pub(crate) const MAX_SSRCS_PER_PUBLISHER: usize = 32;

/// Video packets each subscriber's stream keeps for answering NACKs, and for how long:
/// enough for a few round trips at the bitrates forwarded, and a bound on what a stall can
/// make one subscriber hold. str0m's default (2,000 packets over 3 s) lets the cache grow
/// with every backlog a stall leaves and never shrink: up to about 400 KB per stream.
pub(crate) const RTX_CACHE_PACKETS: usize = 256;
/// See [`RTX_CACHE_PACKETS`].
pub(crate) const RTX_CACHE_AGE: std::time::Duration = std::time::Duration::from_secs(1);
/// Queued resends are dropped when they would make up more than this share of a stream
/// (str0m's default): on a full link, resending everything lost only keeps it full.
pub(crate) const RTX_RATIO_CAP: f32 = 0.15;

/// Most remote addresses remembered per participant (ICE may probe from several).
pub(crate) const MAX_ADDRS: usize = 8;

/// Most outputs drained from an `Rtc` being closed.
const MAX_CLOSE_OUTPUTS: usize = 64;

/// Where an m-line a participant receives on stands in its negotiation (room sessions; a
/// WHEP player's slots are always `Live`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Agreed with the client; media may flow.
    Live,
    /// In the outstanding offer (a new m-line, or an idle one made sending again).
    Offered,
    /// To be made inactive; `in_flight` once that is in the outstanding offer.
    Closing { in_flight: bool },
    /// Inactive, free for the next track of its kind.
    Idle,
}

/// An m-line this participant receives media on, and the forwarder that keeps its
/// outgoing stream continuous across sources.
pub(crate) struct Slot {
    pub mid: Mid,
    pub kind: MediaKind,
    pub state: SlotState,
    /// For room sessions: the track this m-line is for (attached once `Live`).
    pub want: Option<TKey>,
    /// Our send SSRC on this m-line.
    pub tx_ssrc: Option<Ssrc>,
    /// The track feeding it, if any.
    pub source: Option<TKey>,
    /// Publisher PT → this subscriber's PT for the same codec, and whether the payload must
    /// be unwrapped on the way (RED to a subscriber that takes plain Opus only).
    pub pt_map: Vec<(Pt, Pt, bool)>,
    pub forwarder: Forwarder,
    /// Video: the most the subscriber asked for (`set_video_quality`).
    pub quality: QualityRequest,
    /// Video: the rendered size that goes with `QualityRequest::Auto`.
    pub render_size: Option<(u32, u32)>,
    /// Video: what the subscriber was last told it receives (`stream_state`).
    pub reported: Option<(StreamState, Option<Quality>)>,
    /// Video: since when not even its lowest layer fits the estimate.
    pub short_since: Option<Instant>,
    /// Video: the overloaded worker sheds this subscription's video (`overload.rs`).
    pub shed: bool,
    /// While none of the participant's m-lines carries video, the direction this one was
    /// negotiated with; the `Rtc` holds it as not sending meanwhile, so that str0m neither
    /// pads nor probes ([`quiet_direction`]).
    pub quiet: Option<Direction>,
}

impl Slot {
    /// Whether this video subscription keeps its video under the worker's overload now
    /// (`kept`), marking it; one that gets video back resumes on a keyframe with continuous
    /// numbering. Returns `kept`.
    pub fn keep_video(&mut self, kept: bool) -> bool {
        if kept && self.shed {
            self.forwarder.switch_source();
        }
        self.shed = !kept;
        kept
    }

    /// The PT a publisher's packet of `pt` goes out with here, and whether its RED
    /// payload is unwrapped to the primary block.
    pub fn map_pt(&self, pt: Pt) -> Option<(Pt, bool)> {
        self.pt_map
            .iter()
            .find(|(i, _, _)| *i == pt)
            .map(|(_, o, unwrap)| (*o, *unwrap))
    }
}

pub(crate) struct Participant {
    pub id: ParticipantId,
    pub identity: Identity,
    pub room: RoomName,
    pub kind: SessionKind,
    /// Which publisher this participant's slots follow.
    pub source: Option<Source>,
    pub rtc: Rtc,
    /// Current local ICE ufrag (changes on ICE restart).
    pub ufrag: String,
    /// Remote addresses, with the transport they use, the demultiplexer routes to this
    /// participant.
    pub addrs: Vec<(Protocol, SocketAddr)>,
    /// Tracks this participant publishes.
    pub tracks: Vec<TKey>,
    /// SSRC → (track, layer) cache, filled on first packet of each SSRC.
    pub ssrc_tracks: Vec<(Ssrc, TKey, u8)>,
    pub slots: Vec<Slot>,
    /// The `Rtc` timeout currently scheduled in the shard's timer heap.
    pub timer: Option<Instant>,
    pub connected: bool,
    pub joined_at: Instant,
    /// When ICE first connected (the DTLS handshake starts then).
    pub ice_connected_at: Option<Instant>,
    pub disconnected_since: Option<Instant>,
    /// Set when the participant must be removed at the end of the current input.
    pub doomed: Option<LeaveReason>,
    /// Test hook: the next call into the `Rtc` panics (see `Shard::inject_rtc_panic`).
    pub panic_next: bool,
    /// Remote candidates trickled so far.
    pub remote_candidates: usize,
    /// Room sessions: subscribe to every track of the room.
    pub auto_subscribe: bool,
    /// What its token allows.
    pub grants: manifold_api::Grants,
    /// Room sessions: the server-driven offer/answer state.
    pub neg: Negotiation,
    /// The downlink estimate of its `Rtc`'s bandwidth estimator, bits per second.
    pub estimate: Option<u64>,
    /// The (minimum, desired) rates last given to its bandwidth estimator.
    pub bwe_targets: (u64, u64),
    /// What the loss its receiver reports allows (`quality::LossCeiling`).
    pub loss_ceiling: crate::quality::LossCeiling,
    /// What its allocation sends it now, bits per second.
    pub sent_rate: u64,
    /// When it pads towards a layer it is held below (`quality::ProbeWindow`).
    pub probe: crate::quality::ProbeWindow,
    /// Bytes of the datagrams its session accepted, and of those it sent.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The RTCP feedback counts its `Rtc` last reported, per stream.
    pub tallies: Vec<crate::stats::RtcpTally>,
}

impl Participant {
    /// The quiet m-lines' negotiated directions, no longer recorded as quiet: to be set
    /// back (`set_local_direction`) in the `Rtc` before any SDP operation.
    pub fn take_quiet(&mut self) -> Vec<(Mid, Direction)> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.quiet.take().map(|d| (s.mid, d)))
            .collect()
    }

    /// Run `f` on the `Rtc`, then drain it to its next timeout, queueing transmits and
    /// events in `out`. A panic anywhere in there dooms this participant only.
    pub fn with_rtc<R>(
        &mut self,
        key: PKey,
        out: &mut Outbox,
        f: impl FnOnce(&mut Rtc) -> R,
    ) -> Option<R> {
        let mut sent = 0u64;
        let result = self.contained(out, |rtc, out| {
            let r = f(rtc);
            loop {
                match rtc.poll_output() {
                    Ok(RtcOutput::Timeout(t)) => break Ok((r, t)),
                    Ok(RtcOutput::Transmit(t)) => {
                        sent += t.contents.len() as u64;
                        out.transmit(t)
                    }
                    Ok(RtcOutput::Event(e)) => out.events.push_back((key, e)),
                    Err(e) => break Err(e),
                }
            }
        });
        self.bytes_out += sent;
        match result? {
            Ok((r, timeout)) => {
                if self.timer != Some(timeout) {
                    self.timer = Some(timeout);
                    out.schedule(timeout, key);
                }
                Some(r)
            }
            Err(e) => {
                if !self.connected && self.ice_connected_at.is_some() {
                    out.counters.dtls_failures += 1;
                }
                tracing::warn!(participant = %self.id, error = %e, "WebRTC session failed");
                self.doom(LeaveReason::Failed);
                None
            }
        }
    }

    /// Run `f`, a write of forwarded media, on the `Rtc` without draining it. Whatever str0m
    /// writes leaves through its pacer, which releases it on a timeout; so the `Rtc` is made
    /// due one at `now`, and the shard's next timeout pass (`Shard::handle_timeout`, run
    /// after every receive batch) drains it once for all that was written to it since. A
    /// drain here as well would walk the whole session and its timers twice per packet.
    /// A panic dooms this participant only, as in [`Self::with_rtc`].
    pub fn write_rtc<R>(
        &mut self,
        key: PKey,
        out: &mut Outbox,
        now: Instant,
        f: impl FnOnce(&mut Rtc) -> R,
    ) -> Option<R> {
        let r = self.contained(out, |rtc, _| f(rtc))?;
        if self.timer.is_none_or(|t| t > now) {
            self.timer = Some(now);
            out.schedule(now, key);
        }
        Some(r)
    }

    /// Run `f` on the `Rtc` unless the participant is doomed; a panic in it (or the test
    /// hook's) dooms this participant only, is counted, and gives `None`.
    fn contained<R>(
        &mut self,
        out: &mut Outbox,
        f: impl FnOnce(&mut Rtc, &mut Outbox) -> R,
    ) -> Option<R> {
        if self.doomed.is_some() {
            return None;
        }
        let rtc = &mut self.rtc;
        let injected = std::mem::take(&mut self.panic_next);
        let result = catch_unwind(AssertUnwindSafe(|| {
            if injected {
                panic!("injected panic (test hook)");
            }
            f(rtc, &mut *out)
        }));
        match result {
            Ok(r) => Some(r),
            Err(_) => {
                out.counters.panics += 1;
                tracing::error!(participant = %self.id, "WebRTC session panicked; removing it");
                self.doom(LeaveReason::Failed);
                None
            }
        }
    }

    /// End the session politely: RTCP BYE and a DTLS close_notify tell the client at once,
    /// rather than after its ICE consent checks time out. Whatever else the `Rtc` says is
    /// dropped: the participant is gone.
    pub fn close(&mut self, out: &mut Outbox) {
        let rtc = &mut self.rtc;
        let closed = catch_unwind(AssertUnwindSafe(|| {
            if rtc.close().is_err() {
                return;
            }
            // Closing queues a handful of datagrams; the bound only guards against a loop.
            for _ in 0..MAX_CLOSE_OUTPUTS {
                match rtc.poll_output() {
                    Ok(RtcOutput::Transmit(t)) => out.transmit(t),
                    Ok(RtcOutput::Event(_)) => {}
                    Ok(RtcOutput::Timeout(_)) | Err(_) => break,
                }
            }
        }));
        if closed.is_err() {
            out.counters.panics += 1;
            tracing::error!(participant = %self.id, "WebRTC session panicked while closing");
        }
        self.rtc.disconnect();
    }

    pub fn doom(&mut self, reason: LeaveReason) {
        if self.doomed.is_none() {
            self.doomed = Some(reason);
        }
    }

    /// Remember `addr` as one of ours; the oldest is forgotten past [`MAX_ADDRS`]. Returns
    /// the forgotten address, which the caller removes from its index.
    pub fn learn_addr(&mut self, addr: (Protocol, SocketAddr)) -> Option<(Protocol, SocketAddr)> {
        if self.addrs.contains(&addr) {
            return None;
        }
        let evicted = (self.addrs.len() == MAX_ADDRS).then(|| self.addrs.remove(0));
        self.addrs.push(addr);
        evicted
    }

    /// The negotiated payload parameters of `mid`, in this participant's PT numbering.
    pub fn params_of(&self, mid: Mid) -> Vec<PayloadParams> {
        let Some(media) = self.rtc.media(mid) else {
            return Vec::new();
        };
        self.rtc
            .codec_config()
            .params()
            .iter()
            .filter(|p| media.remote_pts().contains(&p.pt()))
            .copied()
            .collect()
    }

    /// Whether `ssrc` is one of the publisher's: the main or the repair (RTX) SSRC of one of its
    /// m-lines. Retransmissions arrive on the repair SSRC, which str0m does not look streams up
    /// by; one found here is remembered so the next is a cache hit.
    pub fn owns_ssrc(&mut self, tracks: &Slab<Track>, ssrc: Ssrc) -> bool {
        if self.ssrc_tracks.iter().any(|(s, _, _)| *s == ssrc) {
            return true;
        }
        let mut api = self.rtc.direct_api();
        if api.stream_rx(&ssrc).is_some() {
            return true;
        }
        for &tk in &self.tracks {
            let Some(track) = tracks.get(tk) else {
                continue;
            };
            for (li, layer) in track.layers.iter().enumerate() {
                let repair = api
                    .stream_rx_by_mid(track.mid, layer.rid)
                    .and_then(|rx| rx.rtx());
                if repair == Some(ssrc) {
                    if self.ssrc_tracks.len() < MAX_SSRCS_PER_PUBLISHER {
                        self.ssrc_tracks.push((ssrc, tk, li as u8));
                    }
                    return true;
                }
            }
        }
        false
    }
}

/// A new receiving slot for a room session.
pub(crate) fn new_slot(
    mid: Mid,
    kind: MediaKind,
    want: Option<TKey>,
    seed: u64,
    state: SlotState,
) -> Slot {
    Slot {
        mid,
        kind,
        state,
        want,
        tx_ssrc: None,
        source: None,
        pt_map: Vec::new(),
        quality: QualityRequest::High,
        render_size: None,
        reported: None,
        short_since: None,
        shed: false,
        quiet: None,
        // Start below 2^15 / 2^31: a fresh SRTP stream must not begin with a non-zero
        // rollover counter.
        forwarder: Forwarder::new(kind, seed & 0x7fff, (seed >> 16) & 0x7fff_ffff),
    }
}

/// A well-mixed 64-bit function of a seed: deterministic starting numbers per slot.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The SSRC we send on for m-line `mid`, with its resend cache bounded
/// ([`RTX_CACHE_PACKETS`]) for video.
pub(crate) fn send_ssrc(rtc: &mut Rtc, mid: Mid, kind: MediaKind) -> Option<Ssrc> {
    let mut api = rtc.direct_api();
    let tx = api.stream_tx_by_mid(mid, None)?;
    if kind == MediaKind::Video {
        tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, Some(RTX_RATIO_CAP));
        // Forwarded video goes out as it comes: the allocator keeps the rate within the
        // estimate, and a pacer queue in front of a full link would hold the keyframe of
        // the lower layer behind seconds of the higher one.
        tx.set_unpaced(true);
    }
    Some(tx.ssrc())
}

/// The direction a quiet m-line is held at: not sending, still receiving if it was.
///
/// str0m 0.25 pads every session that has a sending m-line with transport-cc feedback (audio
/// has it too) to at least 50 kbit/s, whatever its estimator's minimum, on any video stream
/// it can pad (one with RTX). A player that offered video and receives none gets about 80
/// padding packets a second, more sends than its audio, and so does a subscriber whose
/// video the overloaded worker sheds. In RTP mode str0m sends whatever is written on any
/// direction; the directions decide only whether it pads and probes. So while none of a
/// session's m-lines carries video, all of them are set not sending, in this `Rtc` only
/// ([`set_local_direction`]), until one carries video again.
pub(crate) fn quiet_direction(negotiated: Direction) -> Direction {
    if negotiated.is_receiving() {
        Direction::RecvOnly
    } else {
        Direction::Inactive
    }
}

/// Set `mid`'s direction in this `Rtc` without negotiating it: str0m applies a direction
/// at once and keeps the change for the next offer, which the `SdpApi` dropped here drops.
/// Every SDP operation on a room session first gives quiet m-lines their negotiated
/// direction back (`Participant::take_quiet`), so no offer or answer says what the client
/// was never told.
pub(crate) fn set_local_direction(rtc: &mut Rtc, mid: Mid, direction: Direction) {
    rtc.sdp_api().set_direction(mid, direction);
}

/// Forget what stream `ssrc` could resend: after a down-switch on a full link, resending
/// the packets of the layer it could not carry would keep it full. The resend share starts
/// afresh too: measured over the congested second before the switch, it would refuse to
/// resend a lost packet of the new layer's keyframe.
pub(crate) fn forget_resends(rtc: &mut Rtc, ssrc: Ssrc) {
    if let Some(tx) = rtc.direct_api().stream_tx(&ssrc) {
        // A new cache replaces the old one; without a cap, str0m drops the resend history
        // the cap is judged on, and the cap set again starts a new one.
        tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, None);
        tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, Some(RTX_RATIO_CAP));
    }
}
