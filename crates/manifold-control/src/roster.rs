//! Who is in which room, as the room protocol presents it: names, metadata, tracks and mute
//! states, and the socket each member's messages go to. The media workers own the media;
//! this roster mirrors what they report and adds what only signaling knows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use manifold_api::protocol::{ParticipantInfo, ServerMessage, Speaker, TrackInfo};
use manifold_api::{ParticipantId, RoomName, TrackId};
use manifold_cluster::NodeId;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::outbox::{Key, Outbox, serialize};

/// A rate limiter: `rate` messages per second, bursts of `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            tokens: burst,
            last: now,
            rate,
            burst,
        }
    }

    /// Take one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One member of a room.
#[derive(Debug)]
pub struct Member {
    /// What others see.
    pub info: ParticipantInfo,
    /// The room.
    pub room: RoomName,
    /// The worker owning the room.
    pub worker: u16,
    /// Its socket's queue, while connected; `None` during the reconnection grace period.
    pub tx: Option<Arc<Outbox>>,
    /// Increments each time a socket attaches, so a stale socket's end is recognisable.
    pub generation: u64,
    /// Proves a `resume` comes from the same client.
    pub resume_token: String,
    /// Speaks the room protocol (WHIP publishers are members too, without a socket).
    pub protocol: bool,
    /// Chat rate limiter.
    pub chat: TokenBucket,
    /// `update` (name, metadata) rate limiter.
    pub updates: TokenBucket,
    /// Pending publications: cid → request id of the `publish`.
    pub publishing: HashMap<String, Option<manifold_api::protocol::MessageId>>,
    /// Has the shard confirmed the join (so others have been told)?
    pub announced: bool,
    /// May it publish (its token's grant)?
    pub may_publish: bool,
    /// May it receive media (its token's grant)?
    pub may_subscribe: bool,
}

/// A member of a room whose session is on another node: what the room sees of it, and where
/// it is. It has no socket here; `federation.rs` keeps these from the directory and the
/// room's events.
#[derive(Clone, Debug)]
pub struct RemoteMember {
    /// What others see (its metadata stays on its node: `null` here).
    pub info: ParticipantInfo,
    /// The node holding its session.
    pub node: NodeId,
}

/// All rooms' members.
#[derive(Debug, Default)]
pub struct Roster {
    members: HashMap<ParticipantId, Member>,
    rooms: HashMap<RoomName, Vec<ParticipantId>>,
    /// Per room this node holds, its members on other nodes, in the order they came.
    remote: HashMap<RoomName, Vec<RemoteMember>>,
    /// Each room's speakers as last reported (rooms where someone speaks only), for members
    /// that join or come back while they speak.
    speakers: HashMap<RoomName, Vec<Speaker>>,
}

impl Roster {
    /// Add a member.
    pub fn insert(&mut self, member: Member) {
        let id = member.info.id;
        self.rooms.entry(member.room.clone()).or_default().push(id);
        self.members.insert(id, member);
    }

    /// Remove a member.
    pub fn remove(&mut self, id: ParticipantId) -> Option<Member> {
        let m = self.members.remove(&id)?;
        if let Some(list) = self.rooms.get_mut(&m.room) {
            list.retain(|p| *p != id);
            if list.is_empty() {
                self.rooms.remove(&m.room);
                self.speakers.remove(&m.room);
            }
        }
        Some(m)
    }

    /// The room's speakers changed.
    pub fn set_speakers(&mut self, room: &RoomName, speakers: &[Speaker]) {
        if speakers.is_empty() || !self.rooms.contains_key(room) {
            self.speakers.remove(room);
        } else {
            self.speakers.insert(room.clone(), speakers.to_vec());
        }
    }

    /// Who speaks in the room now, if anyone.
    pub fn speakers(&self, room: &RoomName) -> Option<&[Speaker]> {
        self.speakers.get(room).map(Vec::as_slice)
    }

    /// A member.
    pub fn get(&self, id: ParticipantId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// A member, mutably.
    pub fn get_mut(&mut self, id: ParticipantId) -> Option<&mut Member> {
        self.members.get_mut(&id)
    }

    /// The announced members of `room` other than `except`, as the protocol shows them:
    /// this node's, then those on other nodes.
    pub fn others(&self, room: &RoomName, except: ParticipantId) -> Vec<ParticipantInfo> {
        let remote = self.remote.get(room).into_iter().flatten();
        self.members_of(room)
            .filter(|m| m.info.id != except && m.announced)
            .map(|m| m.info.clone())
            .chain(remote.map(|r| r.info.clone()))
            .collect()
    }

    /// Add or replace `room`'s member on another node. `Some(true)` when it is new,
    /// `Some(false)` when it replaced the one known; `None` when refused: a local member has
    /// its id, or the room holds `max` remote members already.
    pub fn upsert_remote(
        &mut self,
        room: &RoomName,
        member: RemoteMember,
        max: usize,
    ) -> Option<bool> {
        if self.members.contains_key(&member.info.id) {
            return None;
        }
        let list = self.remote.entry(room.clone()).or_default();
        if let Some(known) = list.iter_mut().find(|r| r.info.id == member.info.id) {
            *known = member;
            return Some(false);
        }
        if list.len() >= max {
            return None;
        }
        list.push(member);
        Some(true)
    }

    /// `room`'s member `id` on another node left; what was known of it.
    pub fn remove_remote(&mut self, room: &RoomName, id: ParticipantId) -> Option<RemoteMember> {
        let list = self.remote.get_mut(room)?;
        let at = list.iter().position(|r| r.info.id == id)?;
        let gone = list.remove(at);
        if list.is_empty() {
            self.remote.remove(room);
        }
        Some(gone)
    }

    /// The ids of `room`'s members on other nodes.
    pub fn remote_ids(&self, room: &RoomName) -> Vec<ParticipantId> {
        let list = self.remote.get(room).into_iter().flatten();
        list.map(|r| r.info.id).collect()
    }

    /// `room`'s member `id` on another node, mutably.
    pub fn remote_mut(&mut self, room: &RoomName, id: ParticipantId) -> Option<&mut RemoteMember> {
        self.remote
            .get_mut(room)?
            .iter_mut()
            .find(|r| r.info.id == id)
    }

    /// The nodes holding the remote members this roster knows.
    pub fn remote_nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .remote
            .values()
            .flatten()
            .map(|r| r.node.clone())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Forget every remote member of `room` (this node holds it no more).
    pub fn clear_remote(&mut self, room: &RoomName) {
        self.remote.remove(room);
    }

    /// Forget the remote members whose node `gone` names; returns them, with their rooms.
    pub fn remove_remote_where(
        &mut self,
        mut gone: impl FnMut(&NodeId) -> bool,
    ) -> Vec<(RoomName, ParticipantId)> {
        let mut removed = Vec::new();
        for (room, list) in self.remote.iter_mut() {
            list.retain(|r| {
                let drop = gone(&r.node);
                if drop {
                    removed.push((room.clone(), r.info.id));
                }
                !drop
            });
        }
        self.remote.retain(|_, list| !list.is_empty());
        removed
    }

    /// Members of a room.
    pub fn members_of<'a>(&'a self, room: &RoomName) -> impl Iterator<Item = &'a Member> + 'a {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|id| self.members.get(id))
    }

    /// A protocol member of `room` with this identity.
    pub fn find_identity(
        &self,
        room: &RoomName,
        identity: &manifold_api::Identity,
    ) -> Option<ParticipantId> {
        self.members_of(room)
            .find(|m| m.protocol && &m.info.identity == identity)
            .map(|m| m.info.id)
    }

    /// Queue `msg` for every connected protocol member of `room` except `except`,
    /// serialized once. A member whose queue overflows is too slow to keep up and is
    /// disconnected; state messages coalesce in the queues (`outbox.rs`), so floods of
    /// updates do not overflow them.
    pub fn broadcast(
        &mut self,
        room: &RoomName,
        except: Option<ParticipantId>,
        msg: &ServerMessage,
    ) {
        let Some(ids) = self.rooms.get(room) else {
            return;
        };
        let key = Key::of(msg);
        let text = serialize(msg);
        for id in ids {
            if Some(*id) == except {
                continue;
            }
            if let Some(m) = self.members.get_mut(id) {
                send_to(m, key, text.clone());
            }
        }
    }

    /// Queue `msg` for one member.
    pub fn send(&mut self, id: ParticipantId, msg: ServerMessage) {
        if let Some(m) = self.members.get_mut(&id) {
            send_to(m, Key::of(&msg), serialize(&msg));
        }
    }

    /// The track `track` of member `owner`.
    pub fn track_mut(&mut self, owner: ParticipantId, track: TrackId) -> Option<&mut TrackInfo> {
        self.members
            .get_mut(&owner)?
            .info
            .tracks
            .iter_mut()
            .find(|t| t.id == track)
    }

    /// Who publishes `track`: a member of this node, or of another (whose tracks the relay
    /// brings here).
    pub fn owner_of(&self, room: &RoomName, track: TrackId) -> Option<ParticipantId> {
        let publishes = |info: &ParticipantInfo| info.tracks.iter().any(|t| t.id == track);
        self.members_of(room)
            .map(|m| &m.info)
            .chain(self.remote.get(room).into_iter().flatten().map(|r| &r.info))
            .find(|info| publishes(info))
            .map(|info| info.id)
    }

    /// Every connected member's socket, for shutdown.
    pub fn all_ids(&self) -> Vec<ParticipantId> {
        self.members.keys().copied().collect()
    }
}

fn send_to(m: &mut Member, key: Option<Key>, text: Utf8Bytes) {
    if !m.protocol {
        return;
    }
    let Some(tx) = &m.tx else {
        return;
    };
    if tx.push_text(key, text).is_err() {
        tracing::warn!(participant = %m.info.id, "signaling queue full; disconnecting the slow client");
        // The overflowed queue closes its socket, which starts the grace period.
        m.tx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn remote(id: u64, node: &str) -> RemoteMember {
        RemoteMember {
            info: ParticipantInfo {
                id: ParticipantId(id),
                identity: manifold_api::Identity::parse(&format!("u{id}")).expect("identity"),
                name: format!("U{id}"),
                metadata: serde_json::Value::Null,
                tracks: Vec::new(),
            },
            node: NodeId::parse(node).expect("node id"),
        }
    }

    #[test]
    fn remote_members_are_bounded_and_leave_with_their_node() {
        let mut roster = Roster::default();
        let (r, s) = (
            RoomName::parse("r").expect("room"),
            RoomName::parse("s").expect("room"),
        );
        assert_eq!(roster.upsert_remote(&r, remote(1, "b"), 2), Some(true));
        assert_eq!(roster.upsert_remote(&r, remote(1, "b"), 2), Some(false));
        assert_eq!(roster.upsert_remote(&r, remote(2, "c"), 2), Some(true));
        assert_eq!(
            roster.upsert_remote(&r, remote(3, "c"), 2),
            None,
            "over the bound"
        );
        assert_eq!(roster.upsert_remote(&s, remote(4, "c"), 2), Some(true));
        let ids: Vec<u64> = roster
            .others(&r, ParticipantId(0))
            .iter()
            .map(|p| p.id.0)
            .collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(roster.remote_nodes().len(), 2);
        let mut gone = roster.remove_remote_where(|n| n.as_str() == "c");
        gone.sort();
        assert_eq!(
            gone,
            vec![(r.clone(), ParticipantId(2)), (s.clone(), ParticipantId(4))]
        );
        assert!(roster.remove_remote(&r, ParticipantId(1)).is_some());
        assert!(roster.others(&r, ParticipantId(0)).is_empty());
        assert!(roster.remote_nodes().is_empty());
    }

    #[test]
    fn token_bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 10.0, t0);
        assert!((0..10).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(200)));
        assert!(!b.take(t0 + Duration::from_millis(210)));
    }
}
