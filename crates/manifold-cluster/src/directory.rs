//! Which node holds which member of a room, and what a newcomer on any node needs to see the
//! whole room: the members and their tracks.

use manifold_api::protocol::TrackInfo;
use manifold_api::{Identity, ParticipantId, RoomName};
use serde::{Deserialize, Serialize};

use crate::node::NodeId;
use crate::{BoxFuture, ClusterError};

/// One member of a room, as every node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Its id (unique in the cluster: ids carry their node's prefix).
    pub participant: ParticipantId,
    /// The node its session is on.
    pub node: NodeId,
    /// Who it is.
    pub identity: Identity,
    /// Display name.
    pub name: String,
    /// Application data (the room protocol's `metadata`; `null` when there is none).
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// What it publishes.
    pub tracks: Vec<TrackInfo>,
}

/// A room as the whole cluster sees it: which nodes hold its members, and how many.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// Its name.
    pub room: RoomName,
    /// The nodes holding members of it, by id.
    pub nodes: Vec<NodeId>,
    /// Its members on every node.
    pub members: usize,
}

/// Most rooms [`RoomDirectory::rooms`] lists (the first ones by name).
pub const MAX_LISTED_ROOMS: usize = 10_000;

/// Rooms across nodes. A record larger than [`crate::MAX_RECORD_BYTES`] as JSON is refused.
pub trait RoomDirectory: Send + Sync {
    /// `member` is in `room` (or changed: name, tracks). The record replaces an older one of
    /// the same participant.
    fn upsert(
        &self,
        room: RoomName,
        member: MemberRecord,
    ) -> BoxFuture<'_, Result<(), ClusterError>>;

    /// `participant` left `room`.
    fn remove(
        &self,
        room: RoomName,
        participant: ParticipantId,
    ) -> BoxFuture<'_, Result<(), ClusterError>>;

    /// Everyone in `room`, on every node, in the order they joined.
    fn members(&self, room: RoomName) -> BoxFuture<'_, Result<Vec<MemberRecord>, ClusterError>>;

    /// The nodes holding members of `room`.
    fn nodes_of(&self, room: RoomName) -> BoxFuture<'_, Result<Vec<NodeId>, ClusterError>>;

    /// Every room with members on some node, by name (at most [`MAX_LISTED_ROOMS`]).
    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, ClusterError>>;

    /// A node is gone: forget every member it held, in every room. Returns what was
    /// forgotten (by room, then participant id), so the others can be told they left.
    fn forget_node(
        &self,
        node: NodeId,
    ) -> BoxFuture<'_, Result<Vec<(RoomName, MemberRecord)>, ClusterError>>;
}

/// What [`RoomDirectory::forget_node`] returns, in its order: by room, then participant.
pub(crate) fn sort_forgotten(gone: &mut [(RoomName, MemberRecord)]) {
    gone.sort_by(|a, b| (&a.0, a.1.participant).cmp(&(&b.0, b.1.participant)));
}
