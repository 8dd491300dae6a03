//! The admin API's bodies: what each endpoint takes and what it answers, as serde types
//! that also describe themselves to the OpenAPI document (`openapi.rs`). The handlers in
//! `admin.rs` and `admin_room.rs` build these and nothing else, so the document cannot
//! drift from the answers.
//!
//! Request bodies refuse unknown fields (`additionalProperties: false` in the document).

use manifold_api::protocol::TrackInfo;
use manifold_api::{Identity, ParticipantId, RoomName, SessionKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::rooms::RoomOptions;

/// Body of `POST /admin/rooms`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// Room name.
    #[schema(value_type = RoomName)]
    pub name: String,
    /// Sessions it may hold (1 or more; at most the server's limit applies anyway).
    #[schema(minimum = 1)]
    pub max_participants: Option<u32>,
    /// Seconds it may stay empty before it is forgotten (0 to a day; default 300).
    #[schema(maximum = 86_400)]
    pub empty_timeout: Option<u64>,
    /// Application data (at most 4096 bytes serialized).
    #[serde(default)]
    pub metadata: Value,
}

/// Body of `PATCH /admin/rooms/{room}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoom {
    /// New metadata (at most 4096 bytes serialized).
    pub metadata: Value,
}

/// Body of `PATCH /admin/rooms/{room}/participants/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateParticipant {
    /// New display name (at most 128 characters).
    #[schema(max_length = 128)]
    pub name: Option<String>,
    /// New metadata (at most 4096 bytes serialized).
    pub metadata: Option<Value>,
}

/// Body of `PATCH /admin/rooms/{room}/participants/{id}/tracks/{track}`, and its answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteTrack {
    /// Muted (the shard forwards none of it) or not.
    pub muted: bool,
}

/// Body of `PUT /admin/log-level`, and the answer of both log-level calls.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLevel {
    /// An `EnvFilter` directive list, e.g. `info,manifold_core=debug` (at most 1024 bytes).
    #[schema(max_length = 1024)]
    pub filter: String,
}

/// One session of this node in a room: a room-protocol participant, a WHIP publisher or a
/// WHEP player.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Session {
    /// Its id.
    pub id: ParticipantId,
    /// How it entered.
    pub kind: SessionKind,
    /// The media worker that owns it.
    pub worker: u16,
    /// Who it is (`null` for a WHEP player, which is no member of the room).
    pub identity: Option<Identity>,
    /// Display name (`null` for a WHEP player).
    pub name: Option<String>,
    /// What it publishes.
    pub tracks: Vec<TrackInfo>,
}

/// One room of `GET /admin/rooms`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomEntry {
    /// Its name.
    pub room: RoomName,
    /// This node's sessions in it.
    pub participants: Vec<Session>,
    /// The nodes holding its members.
    pub nodes: Vec<String>,
    /// Its members on every node, as the directory counts them (WHEP players are none).
    pub members: usize,
}

/// Answer of `GET /admin/rooms`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomList {
    /// The cluster's rooms, by name.
    pub rooms: Vec<RoomEntry>,
    /// Set when the directory could not be read: `rooms` are this node's alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory_error: Option<String>,
}

/// A created room's options.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RoomOptionsBody {
    /// Sessions it may hold on this node (`null`: the server's limit).
    pub max_participants: Option<u32>,
    /// Seconds it may stay empty before it is forgotten.
    pub empty_timeout: u64,
    /// Application data.
    pub metadata: Value,
}

impl From<&RoomOptions> for RoomOptionsBody {
    fn from(o: &RoomOptions) -> Self {
        RoomOptionsBody {
            max_participants: o.max_participants,
            empty_timeout: o.empty_timeout.as_secs(),
            metadata: o.metadata.clone(),
        }
    }
}

/// Answer of `GET /admin/rooms/{room}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomDetail {
    /// Its name.
    pub room: RoomName,
    /// This node's sessions in it.
    pub participants: Vec<Session>,
    /// Its options, if it was created or given metadata here.
    pub options: Option<RoomOptionsBody>,
}

/// Answer of `POST /admin/rooms` and `PATCH /admin/rooms/{room}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomCreated {
    /// Its name.
    pub room: RoomName,
    /// Its options now.
    pub options: RoomOptionsBody,
}

/// Answer of `GET /admin/rooms/{room}/participants`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantList {
    /// This node's sessions of the room.
    pub participants: Vec<Session>,
}

/// Answer of `PATCH /admin/rooms/{room}/participants/{id}`: the participant as the room
/// now sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantUpdated {
    /// Its id.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// Application data.
    pub metadata: Value,
}

/// Answer of `DELETE /admin/rooms/{room}/participants/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Kicked {
    /// The node the kick was forwarded to (`null`: the participant was on this node).
    pub forwarded_to: Option<String>,
}

/// Answer of `DELETE /admin/rooms/{room}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Closed {
    /// Sessions of this node that were told to leave.
    pub closed: usize,
    /// Other nodes asked to close it too.
    pub forwarded_to: Vec<String>,
}

/// Answer of `POST /admin/drain`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Draining {
    /// Always `true`: the node takes no new session.
    pub draining: bool,
    /// Sessions it still holds.
    pub sessions: usize,
}

/// One node of `GET /admin/nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Node {
    /// Its id.
    pub id: String,
    /// Where clients reach it.
    pub advertise_url: String,
    /// Sessions it holds.
    pub participants: u32,
    /// Busiest media worker's load, 0 to 1.
    pub load: f32,
    /// It takes no new joins.
    pub draining: bool,
    /// It is the node that answered.
    #[serde(rename = "self")]
    pub this: bool,
}

/// Answer of `GET /admin/nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    /// The cluster's live nodes.
    pub nodes: Vec<Node>,
}
