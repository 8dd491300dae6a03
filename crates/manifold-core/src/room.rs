//! A room on one shard: its members in join order, its publishers in the order they
//! started (the first is the room's current publisher, whom `Source::RoomCurrent` players
//! follow; publishers on other shards count too, through their relayed tracks), and the
//! index of the tracks published in it, so that joining and subscribing never scan the
//! shard; who in it speaks (`speakers.rs`); and which shards hold its members (`relay.rs`).

use manifold_api::{ParticipantId, TrackId};

use crate::keys::{PKey, TKey};
use crate::relay::Origin;
use crate::speakers::RoomSpeakers;

/// One room's membership and track index.
#[derive(Default)]
pub(crate) struct Room {
    members: Vec<PKey>,
    publishers: Vec<Origin>,
    /// Every live track published in the room, in the order published.
    tracks: Vec<(TrackId, TKey)>,
    /// Who speaks, as last reported.
    pub speakers: RoomSpeakers<ParticipantId>,
    /// The shards holding members of the room, as the control plane last said (bit per
    /// shard; 0: never said, the room is this shard's alone).
    pub shards: u64,
    /// Bytes (in, out) of the sessions that left the room while it lasted here.
    pub departed_bytes: (u64, u64),
}

impl Room {
    /// Everyone in the room, in join order.
    pub fn members(&self) -> &[PKey] {
        &self.members
    }

    /// Publishers, here or relayed, in the order they started.
    pub fn publishers(&self) -> &[Origin] {
        &self.publishers
    }

    /// No member is left here.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// A member arrives.
    pub fn add_member(&mut self, key: PKey) {
        if !self.members.contains(&key) {
            self.members.push(key);
        }
    }

    /// A member leaves (and stops publishing).
    pub fn remove_member(&mut self, key: PKey) {
        self.members.retain(|&k| k != key);
        self.publishers.retain(|&k| k != Origin::Local(key));
    }

    /// Where `key` stands among the publishers.
    pub fn publisher_place(&self, key: PKey) -> Option<usize> {
        self.publishers
            .iter()
            .position(|&k| k == Origin::Local(key))
    }

    /// `key` publishes, at `place` (a replaced session's) or last.
    pub fn add_publisher(&mut self, key: Origin, place: Option<usize>) {
        if self.publishers.contains(&key) {
            return;
        }
        match place {
            Some(i) if i <= self.publishers.len() => self.publishers.insert(i, key),
            _ => self.publishers.push(key),
        }
    }

    /// `key` publishes nothing any more.
    pub fn remove_publisher(&mut self, key: Origin) {
        self.publishers.retain(|&k| k != key);
    }

    /// A track is published in the room.
    pub fn add_track(&mut self, id: TrackId, tk: TKey) {
        self.tracks.push((id, tk));
    }

    /// A track ends.
    pub fn remove_track(&mut self, tk: TKey) {
        self.tracks.retain(|&(_, t)| t != tk);
    }

    /// The track `id`, if it is published in this room.
    pub fn track(&self, id: TrackId) -> Option<TKey> {
        self.tracks.iter().find(|(t, _)| *t == id).map(|&(_, k)| k)
    }

    /// Every track published in the room, in the order published.
    pub fn tracks(&self) -> impl Iterator<Item = TKey> + '_ {
        self.tracks.iter().map(|&(_, k)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_and_publishers_keep_their_order() {
        let mut r = Room::default();
        for k in [3, 1, 2] {
            r.add_member(k);
        }
        r.add_member(1);
        assert_eq!(r.members(), &[3, 1, 2]);
        let l = Origin::Local;
        r.add_publisher(l(1), None);
        r.add_publisher(l(2), None);
        r.add_publisher(l(3), Some(0));
        r.add_publisher(Origin::Relay(0), None);
        assert_eq!(r.publishers(), &[l(3), l(1), l(2), Origin::Relay(0)]);
        r.remove_member(3);
        assert_eq!(r.members(), &[1, 2]);
        assert_eq!(r.publishers(), &[l(1), l(2), Origin::Relay(0)]);
        assert_eq!(r.publisher_place(2), Some(1));
        r.remove_publisher(l(1));
        assert_eq!(r.publishers(), &[l(2), Origin::Relay(0)]);
        assert!(!r.is_empty());
    }

    #[test]
    fn the_track_index_finds_only_live_tracks() {
        let mut r = Room::default();
        r.add_track(TrackId(7), 0);
        r.add_track(TrackId(9), 4);
        assert_eq!(r.track(TrackId(9)), Some(4));
        assert_eq!(r.tracks().collect::<Vec<_>>(), vec![0, 4]);
        r.remove_track(0);
        assert_eq!(r.track(TrackId(7)), None);
        assert_eq!(r.tracks().collect::<Vec<_>>(), vec![4]);
    }
}
