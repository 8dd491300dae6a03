//! The vocabulary shared by Manifold's control plane and its media shards: ids, grants,
//! leave reasons, the events a shard reports upward and the statistics it keeps.
//!
//! Everything here is plain data (serde only), so both sides of a channel, and later the
//! cluster bus, can speak it without pulling in the media stack.
#![forbid(unsafe_code)]

pub mod command;
mod ids;
pub mod negotiation;
pub mod protocol;
mod stats;

pub use ids::{IdError, Identity, ParticipantId, RoomName, TrackId};
pub use stats::{
    CONNECT_BOUNDS_US, DropCount, Histogram, HistogramSnapshot, LATENCY_BOUNDS_US, RoomTraffic,
    ShardStats,
};

use serde::{Deserialize, Serialize};

/// What a participant may do, as carried by its access token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// May send media into the room.
    #[serde(default)]
    pub publish: bool,
    /// May receive media from the room.
    #[serde(default)]
    pub subscribe: bool,
    /// May use the admin and stats endpoints.
    #[serde(default)]
    pub admin: bool,
}

impl Grants {
    /// Every grant: what dev mode hands out when no key is configured.
    pub const ALL: Grants = Grants {
        publish: true,
        subscribe: true,
        admin: true,
    };

    /// May send media (the `publish` grant, or `admin`, which implies every grant).
    pub fn may_publish(&self) -> bool {
        self.publish || self.admin
    }

    /// May receive media (the `subscribe` grant, or `admin`).
    pub fn may_subscribe(&self) -> bool {
        self.subscribe || self.admin
    }
}

/// How a participant entered: the signaling surface decides what it publishes and what it
/// receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// A WHIP ingest: publishes, receives nothing.
    Whip,
    /// A WHEP player: receives, publishes nothing.
    Whep,
    /// A room-protocol participant: publishes and receives over one peer connection whose
    /// offers always come from the server.
    Room,
}

/// Which publisher a receiving participant follows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The room's current publisher: the earliest one still publishing. When it stops, the
    /// next one takes over.
    RoomCurrent,
    /// The publisher with this identity, including a later session of the same identity.
    Identity(Identity),
}

/// Media kind of a track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// Why a participant left its room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LeaveReason {
    /// The client ended its session (WHIP/WHEP DELETE).
    Requested,
    /// ICE never connected, or stayed disconnected past the grace period.
    Timeout,
    /// The peer closed DTLS.
    PeerClosed,
    /// A newer session of the same identity took its place.
    Replaced,
    /// An administrator removed it.
    Kicked,
    /// Its WebRTC state machine failed (a bug caught and contained).
    Failed,
    /// The server is shutting down.
    Shutdown,
    /// An administrator closed the room.
    RoomClosed,
}

impl LeaveReason {
    /// Stable snake_case name for logs, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Requested => "requested",
            LeaveReason::Timeout => "timeout",
            LeaveReason::PeerClosed => "peer_closed",
            LeaveReason::Replaced => "replaced",
            LeaveReason::Kicked => "kicked",
            LeaveReason::Failed => "failed",
            LeaveReason::Shutdown => "shutdown",
            LeaveReason::RoomClosed => "room_closed",
        }
    }
}

/// Correlates a command that expects an answer with the reply a shard sends up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Why a shard refused a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "error", content = "message")]
#[non_exhaustive]
pub enum CommandError {
    /// A configured limit (rooms, participants, tracks) is reached.
    LimitReached(String),
    /// The participant the command names is not on this shard.
    UnknownParticipant,
    /// The participant's WebRTC session rejected the change.
    Rejected(String),
    /// An answer came with no offer outstanding, or for an older offer.
    NoOfferPending(String),
    /// An SDP could not be used.
    BadSdp(String),
    /// A track or participant the command names does not exist here.
    NotFound(String),
    /// The participant's grants do not allow this.
    Forbidden(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::LimitReached(m) => write!(f, "limit reached: {m}"),
            CommandError::UnknownParticipant => f.write_str("unknown participant"),
            CommandError::Rejected(m) => write!(f, "rejected: {m}"),
            CommandError::NoOfferPending(m)
            | CommandError::BadSdp(m)
            | CommandError::NotFound(m)
            | CommandError::Forbidden(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CommandError {}

/// What a reply carries back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplyValue {
    /// The command took effect.
    Done,
    /// An ICE restart took effect; these are the new local ICE credentials.
    IceRestarted {
        /// New local ufrag.
        ufrag: String,
        /// New local password.
        pwd: String,
    },
    /// A statistics snapshot.
    Stats(Box<ShardStats>),
    /// Bytes per room on the shard.
    Traffic(Vec<RoomTraffic>),
}

/// Events a shard reports to the control plane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
#[non_exhaustive]
pub enum CoreEvent {
    /// The answer to a command that asked for one.
    Reply {
        /// The command's request id.
        request: RequestId,
        /// Its outcome.
        result: Result<ReplyValue, CommandError>,
    },
    /// A participant entered a room on this shard.
    ParticipantJoined {
        /// Room.
        room: RoomName,
        /// Participant.
        participant: ParticipantId,
        /// Identity.
        identity: Identity,
        /// How it entered.
        kind: SessionKind,
    },
    /// ICE and DTLS are up: media can flow.
    ParticipantConnected {
        /// Room.
        room: RoomName,
        /// Participant.
        participant: ParticipantId,
    },
    /// A participant left (for any reason).
    ParticipantLeft {
        /// Room.
        room: RoomName,
        /// Participant.
        participant: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// A track became available.
    TrackPublished {
        /// Room.
        room: RoomName,
        /// Publisher.
        participant: ParticipantId,
        /// Track.
        track: TrackId,
        /// Kind.
        kind: MediaKind,
        /// Where it comes from.
        source: protocol::TrackSource,
        /// The publisher's label.
        name: String,
        /// Muted from the start.
        muted: bool,
        /// The client's name for it (room protocol), answering its `publish`.
        cid: Option<String>,
    },
    /// A room participant must answer this offer.
    Offer {
        /// Who.
        participant: ParticipantId,
        /// Its id, to be echoed in the answer.
        offer_id: u64,
        /// SDP.
        sdp: String,
        /// What each m-line is for.
        mids: Vec<protocol::MidInfo>,
    },
    /// A track went away.
    TrackUnpublished {
        /// Room.
        room: RoomName,
        /// Publisher.
        participant: ParticipantId,
        /// Track.
        track: TrackId,
    },
    /// What a subscriber receives of one of its video subscriptions changed.
    StreamState {
        /// The subscriber.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
        /// Flowing or paused.
        state: protocol::StreamState,
        /// The layer now received, while active.
        quality: Option<protocol::Quality>,
    },
    /// The layers of a publisher's simulcast track that someone receives changed.
    Dynacast {
        /// The publisher.
        participant: ParticipantId,
        /// Its track.
        track: TrackId,
        /// The RIDs to keep sending.
        active: Vec<String>,
    },
    /// Who speaks in a room changed.
    SpeakersChanged {
        /// Room.
        room: RoomName,
        /// Loudest first, at most three.
        speakers: Vec<protocol::Speaker>,
    },
    /// The last participant left; the room is gone from this shard.
    RoomClosed {
        /// Room.
        room: RoomName,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_tag() {
        let ev = CoreEvent::ParticipantLeft {
            room: RoomName::parse("r1").unwrap(),
            participant: ParticipantId(7),
            reason: LeaveReason::Timeout,
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains("\"event\":\"participant_left\""), "{json}");
        assert!(json.contains("\"reason\":\"timeout\""), "{json}");
        let back: CoreEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn grants_default_to_nothing() {
        let g: Grants = serde_json::from_str("{}").unwrap();
        assert_eq!(g, Grants::default());
        assert!(!g.publish && !g.subscribe && !g.admin);
    }
}
