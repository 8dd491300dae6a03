//! What the control plane asks of a media shard ([`Command`]), the negotiated session a join
//! hands over ([`NewSession`], [`NegotiatedSession`]) and the negotiator that makes one
//! ([`Negotiator`]). The WebRTC state inside a negotiated session is opaque here: the
//! negotiator that builds it and the shard that takes it share its type, and nothing in
//! between needs the WebRTC stack.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use crate::negotiation::{NegotiateError, SdpFragment};
use crate::protocol::{MidInfo, QualityRequest, TrackSource};
use crate::{
    Grants, Identity, LeaveReason, MediaKind, ParticipantId, RequestId, RoomName, SessionKind,
    Source, TrackId,
};

/// A track a room participant asked to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Publication {
    /// The client's name for it.
    pub cid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// Camera, microphone, screen...
    pub source: TrackSource,
    /// Label.
    pub name: String,
    /// Starts muted.
    pub muted: bool,
    /// Simulcast layers to receive it in (video; 1 = no simulcast).
    pub layers: u8,
}

/// A session negotiated off the media threads, ready for a shard: the SDP for the client and
/// the WebRTC state that goes with it (opaque outside the negotiator and the shard).
pub struct NegotiatedSession {
    /// The SDP for the client: the answer to its offer (WHIP, WHEP), or the server's first
    /// offer (room sessions).
    pub sdp: String,
    /// For a room session: what each m-line of that first offer is for.
    pub mids: Vec<MidInfo>,
    state: Box<dyn Any + Send>,
}

impl NegotiatedSession {
    /// Wrap the negotiator's own session state.
    pub fn new(sdp: String, mids: Vec<MidInfo>, state: impl Any + Send) -> Self {
        NegotiatedSession {
            sdp,
            mids,
            state: Box::new(state),
        }
    }

    /// The SDP, the m-lines and the negotiator's state back, if the state is of type `T`.
    pub fn into_parts<T: Any>(self) -> Result<(String, Vec<MidInfo>, T), Self> {
        match self.state.downcast::<T>() {
            Ok(t) => Ok((self.sdp, self.mids, *t)),
            Err(state) => Err(NegotiatedSession {
                sdp: self.sdp,
                mids: self.mids,
                state,
            }),
        }
    }
}

impl fmt::Debug for NegotiatedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NegotiatedSession")
            .field("sdp_bytes", &self.sdp.len())
            .field("mids", &self.mids)
            .finish_non_exhaustive()
    }
}

/// Turns offers into sessions a shard can take. Building one costs about a millisecond of
/// CPU: callers run it off the async threads.
pub trait Negotiator: Send + Sync {
    /// Answer a client's `offer` for a session of `kind`, announcing `candidates` (the
    /// owning shard's addresses) as host candidates.
    fn accept(
        &self,
        kind: SessionKind,
        offer: &str,
        candidates: &[SocketAddr],
        now: Instant,
    ) -> Result<NegotiatedSession, NegotiateError>;

    /// Start a room session: the server's first offer (a data channel only).
    fn offer(
        &self,
        candidates: &[SocketAddr],
        now: Instant,
    ) -> Result<NegotiatedSession, NegotiateError>;

    /// Panics caught while negotiating, since start.
    fn panics(&self) -> u64;
}

/// A negotiated session joining a room on this shard.
#[derive(Debug)]
pub struct NewSession {
    /// Its id.
    pub id: ParticipantId,
    /// Who it is.
    pub identity: Identity,
    /// The room.
    pub room: RoomName,
    /// WHIP or WHEP.
    pub kind: SessionKind,
    /// For receiving sessions: which publisher to follow.
    pub source: Option<Source>,
    /// For room sessions: subscribe to every track of the room (only with `grants`
    /// allowing it).
    pub auto_subscribe: bool,
    /// What its token allows, as the control plane verified it. The shard enforces it
    /// again on every path that gives or takes media.
    pub grants: Grants,
    /// What negotiating its offer (WHIP, WHEP) or the first offer (room) produced.
    pub negotiated: NegotiatedSession,
}

/// What the control plane can ask of a shard.
#[derive(Debug)]
pub enum Command {
    /// Add a session. Replies `Done`, or `LimitReached`.
    Join {
        /// Reply correlation.
        request: RequestId,
        /// The session.
        session: Box<NewSession>,
    },
    /// Remove a participant. No reply; a `ParticipantLeft` event follows.
    Leave {
        /// Who.
        participant: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// Trickled candidates, or an ICE restart when the fragment carries new credentials.
    /// Replies `Done` or `IceRestarted`.
    Trickle {
        /// Reply correlation.
        request: RequestId,
        /// Who.
        participant: ParticipantId,
        /// The parsed PATCH body.
        fragment: SdpFragment,
    },
    /// Replies `Stats`.
    Stats {
        /// Reply correlation.
        request: RequestId,
    },
    /// Replies `Traffic`: bytes in and out per room (a scrape's per-room series).
    Traffic {
        /// Reply correlation.
        request: RequestId,
    },
    /// A room participant's answer to offer `offer_id`. Replies `Done`, `NoOfferPending` or
    /// `BadSdp`.
    Answer {
        /// Reply correlation.
        request: RequestId,
        /// Who.
        participant: ParticipantId,
        /// The offer answered.
        offer_id: u64,
        /// The answer.
        sdp: String,
    },
    /// A room participant wants to publish; an offer with its m-line follows.
    Publish {
        /// Reply correlation.
        request: RequestId,
        /// Who.
        participant: ParticipantId,
        /// What.
        publication: Publication,
    },
    /// A room participant stops publishing a track.
    Unpublish {
        /// Reply correlation.
        request: RequestId,
        /// Who.
        participant: ParticipantId,
        /// Which.
        track: TrackId,
    },
    /// A room participant wants a track.
    Subscribe {
        /// Reply correlation.
        request: RequestId,
        /// Who.
        participant: ParticipantId,
        /// Which.
        track: TrackId,
    },
    /// A room participant no longer wants a track.
    Unsubscribe {
        /// Reply correlation.
        request: RequestId,
        /// Who.
        participant: ParticipantId,
        /// Which.
        track: TrackId,
    },
    /// A room participant's next offer carries new ICE credentials.
    RestartIce {
        /// Reply correlation.
        request: RequestId,
        /// Who.
        participant: ParticipantId,
    },
    /// A publisher's track is muted or unmuted: while muted, the shard forwards none of it
    /// (counted as `muted`); on unmute, receivers resume on the next keyframe with
    /// continuous numbering. Replies `Done` or `NotFound`.
    SetMuted {
        /// Reply correlation.
        request: RequestId,
        /// The publisher.
        participant: ParticipantId,
        /// Its track.
        track: TrackId,
        /// Muted or not.
        muted: bool,
    },
    /// The most a subscriber wants of one of its video subscriptions. Replies `Done` or
    /// `NotFound` (it does not receive that video track).
    SetVideoQuality {
        /// Reply correlation.
        request: RequestId,
        /// The subscriber.
        participant: ParticipantId,
        /// The track it receives.
        track: TrackId,
        /// At most this, or `Auto` with `size`.
        quality: QualityRequest,
        /// For `Auto`: the rendered width and height in device pixels.
        size: Option<(u32, u32)>,
    },
    /// A room participant's client reconnected: send the outstanding offer again.
    Resync {
        /// Who.
        participant: ParticipantId,
    },
    /// Which workers hold members of `room` now (bit `i`: worker `i`), sent to every worker
    /// when that set changes. A worker relays each track published in the room to every
    /// other worker in the set, once per (track, worker); one that is no longer in the set
    /// lets go of what it received for the room. No reply.
    RoomShards {
        /// The room.
        room: RoomName,
        /// Workers with members in it.
        shards: u64,
    },
    /// Remove everyone (server shutting down).
    Shutdown,
}
