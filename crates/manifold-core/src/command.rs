//! What comes into a shard: [`Input`] (datagrams, timeouts, commands), and the
//! [`Command`]s the control plane sends with the [`NewSession`] a join carries. Plain values;
//! the shard decides what they do.

use std::net::SocketAddr;

use manifold_api::{
    Grants, Identity, LeaveReason, ParticipantId, RequestId, RoomName, SessionKind, Source, TrackId,
};

use crate::negotiate::{Negotiated, SdpFragment};
use crate::negotiation::Publication;

/// Input to [`Shard::handle_input`].
#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram arrived on the shard's socket.
    Datagram {
        /// The sender.
        source: SocketAddr,
        /// The local address it arrived at (as announced to clients).
        destination: SocketAddr,
        /// Its bytes.
        contents: &'a [u8],
    },
    /// The time passed the last [`Output::Timeout`].
    Timeout,
    /// The control plane wants something.
    Command(Command),
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
    /// The `Rtc` with the offer applied (WHIP, WHEP) or the first offer made (room).
    pub negotiated: Negotiated,
}

/// What the control plane can ask of a shard.
#[derive(Debug)]
#[non_exhaustive]
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
    /// A room participant's client reconnected: send the outstanding offer again.
    Resync {
        /// Who.
        participant: ParticipantId,
    },
    /// Remove everyone (server shutting down).
    Shutdown,
}
