//! Who is in which room and who receives what: joining (with its checks and limits),
//! replacement of an older session of the same identity, leaving, tracks coming and going,
//! and pointing WHEP players' slots at the publisher they follow (`retarget`).

use std::time::Instant;

use manifold_api::{
    CommandError, CoreEvent, Identity, LeaveReason, MediaKind, RoomName, SessionKind, Source,
    TrackId,
};
use str0m::format::PayloadParams;
use str0m::media::{Mid, Rid, Rids};

use crate::keys::{PKey, TKey};
use crate::negotiate::Negotiated;
use crate::negotiation::Negotiation;
use crate::participant::{Participant, SlotState, new_slot, send_ssrc, splitmix64};
use crate::relay::{Origin, RelayMessage};
use crate::room::Room;
use crate::shard::Shard;
use crate::track::{Subscriber, Track, TrackLabel};
use manifold_api::command::NewSession;

impl Shard {
    pub(crate) fn join(&mut self, now: Instant, session: NewSession) -> Result<(), CommandError> {
        let NewSession {
            id,
            identity,
            room,
            kind,
            source,
            auto_subscribe,
            grants,
            negotiated,
        } = session;
        if self.by_id.contains_key(&id) {
            return Err(CommandError::Rejected(format!("{id} already joined")));
        }
        let Ok((sdp, mids, negotiated)) = negotiated.into_parts::<Negotiated>() else {
            return Err(CommandError::Rejected(
                "the session was not negotiated by this server's negotiator".into(),
            ));
        };
        let refused = match kind {
            SessionKind::Whip => !grants.may_publish(),
            SessionKind::Whep => !grants.may_subscribe(),
            SessionKind::Room => !grants.may_publish() && !grants.may_subscribe(),
        };
        if refused {
            return Err(CommandError::Forbidden(
                "the token does not allow this kind of session".into(),
            ));
        }
        // One identity, one session of each kind per room: the newer replaces the older.
        let replaced = self.rooms.get(&room).and_then(|r| {
            r.members().iter().copied().find(|&k| {
                let p = &self.participants[k];
                p.identity == identity && p.kind == kind && p.doomed.is_none()
            })
        });
        let members = self.rooms.get(&room).map_or(0, Room::len) - usize::from(replaced.is_some());
        if members >= self.config.max_participants_per_room {
            return Err(CommandError::LimitReached(format!(
                "room {room} has {members} participants, the limit is {}",
                self.config.max_participants_per_room
            )));
        }
        if kind == SessionKind::Whip
            && negotiated.media.len() > self.config.max_tracks_per_participant
        {
            return Err(CommandError::LimitReached(format!(
                "{} tracks offered, the limit is {}",
                negotiated.media.len(),
                self.config.max_tracks_per_participant
            )));
        }
        // The newer session is the same person: it takes the older one's place among the
        // room's publishers, and the room does not close in between, even if it was alone.
        let mut publisher_place = None;
        if let Some(old) = replaced {
            tracing::info!(participant = %self.participants[old].id, %identity, "replaced by a newer session");
            publisher_place = self.rooms.get(&room).and_then(|r| r.publisher_place(old));
            self.unlink(old, LeaveReason::Replaced);
        }

        let Negotiated {
            rtc,
            ufrag,
            media,
            pending,
            data_mid,
            ..
        } = negotiated;
        let neg = match kind {
            SessionKind::Room => Negotiation::started(pending, &sdp, mids, data_mid),
            _ => Negotiation::default(),
        };
        let key = self.participants.insert(Participant {
            id,
            identity: identity.clone(),
            room: room.clone(),
            kind,
            source,
            rtc,
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            tracks: Vec::new(),
            ssrc_tracks: Vec::new(),
            estimate: None,
            bwe_targets: (0, 0),
            loss_ceiling: Default::default(),
            sent_rate: 0,
            probe: Default::default(),
            bytes_in: 0,
            bytes_out: 0,
            tallies: Vec::new(),
            slots: Vec::new(),
            timer: None,
            connected: false,
            joined_at: now,
            ice_connected_at: None,
            disconnected_since: None,
            doomed: None,
            panic_next: false,
            remote_candidates: 0,
            auto_subscribe: auto_subscribe && grants.may_subscribe(),
            grants,
            neg,
        });
        self.by_id.insert(id, key);
        self.by_ufrag.insert(ufrag, key);
        self.rooms.entry(room.clone()).or_default().add_member(key);
        self.out.event(CoreEvent::ParticipantJoined {
            room: room.clone(),
            participant: id,
            identity,
            kind,
        });

        let mut new_tracks = Vec::new();
        match kind {
            SessionKind::Whip => {
                for m in &media {
                    let params = self.participants[key].params_of(m.mid);
                    let label = TrackLabel::offered(m.kind);
                    new_tracks.push(self.add_track(key, m.mid, m.kind, label, params));
                }
                if !new_tracks.is_empty()
                    && let Some(r) = self.rooms.get_mut(&room)
                {
                    r.add_publisher(Origin::Local(key), publisher_place);
                }
            }
            SessionKind::Whep => {
                let p = &mut self.participants[key];
                for (i, m) in media.iter().enumerate() {
                    let seed = splitmix64(id.0 ^ (i as u64).wrapping_mul(0x9e37_79b9));
                    let mut slot = new_slot(m.mid, m.kind, None, seed, SlotState::Live);
                    slot.tx_ssrc = send_ssrc(&mut p.rtc, m.mid, m.kind);
                    p.slots.push(slot);
                }
            }
            SessionKind::Room => {
                if auto_subscribe && grants.may_subscribe() {
                    let existing: Vec<TKey> = self
                        .rooms
                        .get(&room)
                        .into_iter()
                        .flat_map(Room::tracks)
                        .filter(|&tk| match self.tracks[tk].origin {
                            Origin::Local(publisher) => {
                                publisher != key
                                    && self
                                        .participants
                                        .get(publisher)
                                        .is_some_and(|q| q.doomed.is_none())
                            }
                            Origin::Relay(_) => true,
                        })
                        .collect();
                    let p = &mut self.participants[key];
                    for tk in existing {
                        p.neg.want(tk);
                    }
                }
            }
        }
        for tk in new_tracks {
            self.announce_track(tk);
        }
        let p = &mut self.participants[key];
        // Drain what accepting the offer queued and arm the first timeout.
        if p.with_rtc(key, &mut self.out, |_| ()).is_none() {
            self.out.reap = true;
        }
        self.retarget(now, &room);
        // A player the publisher it follows sends no video stays quiet.
        self.quiet_without_video(key);
        Ok(())
    }

    /// Take a participant and what it owns out of the shard and its room, and report it.
    /// Whether the room closes and whom its followers follow next is left to the caller, so
    /// a replacement can take the participant's place first. Returns the participant's room.
    pub(crate) fn unlink(&mut self, key: PKey, reason: LeaveReason) -> Option<RoomName> {
        if !self.participants.contains(key) {
            return None;
        }
        for i in 0..self.participants[key].slots.len() {
            self.detach(key, i);
        }
        for tk in self.participants[key].tracks.clone() {
            self.drop_track_now(tk);
        }
        let mut p = self.participants.remove(key);
        self.by_id.remove(&p.id);
        if self.by_ufrag.get(&p.ufrag) == Some(&key) {
            self.by_ufrag.remove(&p.ufrag);
        }
        for a in &p.addrs {
            if self.by_addr.get(a) == Some(&key) {
                self.by_addr.remove(a);
            }
        }
        if reason == LeaveReason::Failed {
            // Its Rtc is what failed: touch it no more.
            p.rtc.disconnect();
        } else {
            p.close(&mut self.out);
        }
        tracing::info!(participant = %p.id, room = %p.room, reason = reason.as_str(), "left");
        self.out.event(CoreEvent::ParticipantLeft {
            room: p.room.clone(),
            participant: p.id,
            reason,
        });
        if let Some(r) = self.rooms.get_mut(&p.room) {
            r.remove_member(key);
            r.departed_bytes.0 += p.bytes_in;
            r.departed_bytes.1 += p.bytes_out;
        }
        Some(p.room)
    }

    pub(crate) fn remove(&mut self, now: Instant, key: PKey, reason: LeaveReason) {
        let Some(room) = self.unlink(key, reason) else {
            return;
        };
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        if !r.is_empty() {
            self.retarget(now, &room);
            return;
        }
        // Its last member here left. A room spanning shards stays while the control plane
        // still counts this shard and another in (a member may be joining here): its
        // relayed tracks stay open; `RoomShards` without this shard closes them.
        let me = crate::relay::bit(self.index);
        let spans = r.shards & me != 0 && r.shards & !me != 0;
        self.out.event(CoreEvent::RoomClosed { room: room.clone() });
        if !spans {
            self.close_room(now, &room);
        }
    }

    /// Drop room `room` and what was relayed into it.
    pub(crate) fn close_room(&mut self, now: Instant, room: &RoomName) {
        let relayed: Vec<TKey> = self
            .rooms
            .get(room)
            .into_iter()
            .flat_map(Room::tracks)
            .filter(|&tk| self.tracks[tk].relay_in.is_some())
            .collect();
        for tk in relayed {
            self.close_relayed(now, tk);
        }
        if self.rooms.get(room).is_some_and(Room::is_empty) {
            self.rooms.remove(room);
        }
    }

    /// A publisher in a room, if it still publishes: its identity and tracks.
    pub(crate) fn publisher_view(&self, o: Origin) -> Option<(&Identity, &[TKey])> {
        match o {
            Origin::Local(k) => {
                let q = self.participants.get(k)?;
                q.doomed
                    .is_none()
                    .then_some((&q.identity, q.tracks.as_slice()))
            }
            Origin::Relay(rk) => {
                let r = self.remotes.get(rk)?;
                Some((&r.identity, r.tracks.as_slice()))
            }
        }
    }

    /// The room of track `tk` (local or relayed).
    pub(crate) fn room_of_track(&self, tk: TKey) -> Option<&RoomName> {
        match self.tracks.get(tk)?.origin {
            Origin::Local(k) => self.participants.get(k).map(|p| &p.room),
            Origin::Relay(rk) => self.remotes.get(rk).map(|r| &r.room),
        }
    }

    /// Point every following participant's slots at the tracks they should receive now.
    pub(crate) fn retarget(&mut self, now: Instant, room: &RoomName) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut changes: Vec<(PKey, usize, Option<TKey>)> = Vec::new();
        for &m in r.members() {
            let p = &self.participants[m];
            let Some(source) = &p.source else {
                continue;
            };
            let publisher = r.publishers().iter().find_map(|&o| {
                let (identity, tracks) = self.publisher_view(o)?;
                match source {
                    Source::RoomCurrent => Some(tracks),
                    Source::Identity(id) => (identity == id).then_some(tracks),
                }
            });
            for (i, slot) in p.slots.iter().enumerate() {
                // The n-th slot of a kind receives the publisher's n-th track of that kind.
                let nth = p.slots[..i].iter().filter(|s| s.kind == slot.kind).count();
                let wanted = publisher.and_then(|tracks| {
                    tracks
                        .iter()
                        .copied()
                        .filter(|&tk| self.tracks[tk].kind == slot.kind)
                        .nth(nth)
                });
                if wanted != slot.source {
                    changes.push((m, i, wanted));
                }
            }
        }
        for &(m, i, wanted) in &changes {
            self.detach(m, i);
            if let Some(tk) = wanted {
                self.attach(now, m, i, tk);
            }
        }
        for (m, _, _) in changes {
            self.quiet_without_video(m);
        }
    }

    pub(crate) fn attach(&mut self, now: Instant, key: PKey, slot_index: usize, tk: TKey) {
        let track = &mut self.tracks[tk];
        let p = &mut self.participants[key];
        let remote_pts: Vec<_> = p
            .rtc
            .media(p.slots[slot_index].mid)
            .map(|m| m.remote_pts().to_vec())
            .unwrap_or_default();
        let config = p.rtc.codec_config();
        let pt_map = track
            .params
            .iter()
            .filter_map(|theirs| {
                let ours = config.match_params(*theirs)?;
                remote_pts.contains(&ours.pt()).then_some((theirs, ours))
            })
            .flat_map(|(theirs, ours)| {
                // Audio RED (RFC 2198) as the publisher sends it: forwarded as RED where
                // this subscriber negotiated it, unwrapped to plain Opus where not.
                // (str0m keeps a codec's RED PT only when both sides negotiated it.)
                let red = theirs.red().map(|r| match ours.red() {
                    Some(o) => (r, o, false),
                    None => (r, ours.pt(), true),
                });
                std::iter::once((theirs.pt(), ours.pt(), false)).chain(red)
            })
            .collect();
        let slot = &mut p.slots[slot_index];
        slot.pt_map = pt_map;
        slot.source = Some(tk);
        slot.forwarder.switch_source();
        track.subscribers.push(Subscriber {
            participant: key,
            slot: slot_index,
        });
        tracing::debug!(participant = %p.id, track = %track.id, "attached");
        slot.reported = None;
        // Choose its layer now, and ask for that layer's keyframe.
        self.allocate(now, key);
        if self.participants[key].connected {
            self.request_wanted_keyframes(now, tk);
        }
    }

    pub(crate) fn detach(&mut self, key: PKey, slot_index: usize) {
        let slot = &mut self.participants[key].slots[slot_index];
        slot.forwarder.detach();
        if let Some(tk) = slot.source.take()
            && let Some(t) = self.tracks.get_mut(tk)
        {
            t.subscribers
                .retain(|s| !(s.participant == key && s.slot == slot_index));
        }
    }

    /// The track `track` that `key` publishes.
    pub(crate) fn own_track(&self, key: PKey, track: TrackId) -> Result<TKey, CommandError> {
        self.participants[key]
            .tracks
            .iter()
            .copied()
            .find(|&tk| self.tracks[tk].id == track)
            .ok_or_else(|| CommandError::NotFound(format!("you publish no track {track}")))
    }

    /// A track ends (unpublished): everyone receiving it lets it go; WHEP followers move on
    /// when the caller retargets the room.
    pub(crate) fn drop_track(&mut self, _now: Instant, tk: TKey) {
        self.drop_track_now(tk);
    }

    pub(crate) fn drop_track_now(&mut self, tk: TKey) {
        if !self.tracks.contains(tk) {
            return;
        }
        self.release_track_for_rooms(tk);
        if self.tracks[tk].origin.local().is_some() {
            self.tell_relays(tk, |track| RelayMessage::Close { track });
        }
        let track = self.tracks.remove(tk);
        self.track_index.remove(&track.id);
        for s in &track.subscribers {
            if let Some(q) = self.participants.get_mut(s.participant) {
                let slot = &mut q.slots[s.slot];
                slot.source = None;
                slot.forwarder.detach();
            }
        }
        for s in &track.subscribers {
            self.quiet_without_video(s.participant);
        }
        let key = match track.origin {
            Origin::Local(key) => key,
            Origin::Relay(rk) => {
                // The origin shard reported it; here it only leaves the room's index.
                if let Some(r) = self.rooms.get_mut(&self.remotes[rk].room) {
                    r.remove_track(tk);
                }
                return;
            }
        };
        if let Some(p) = self.participants.get_mut(key) {
            p.tracks.retain(|&t| t != tk);
            p.ssrc_tracks.retain(|&(_, t, _)| t != tk);
            if let Some(r) = self.rooms.get_mut(&p.room) {
                r.remove_track(tk);
            }
            self.out.event(CoreEvent::TrackUnpublished {
                room: p.room.clone(),
                participant: p.id,
                track: track.id,
            });
        }
    }

    /// A new track `key` publishes: into the shard's slab, the publisher's list and its
    /// room's index. The caller announces it.
    pub(crate) fn add_track(
        &mut self,
        key: PKey,
        mid: Mid,
        kind: MediaKind,
        label: TrackLabel,
        params: Vec<PayloadParams>,
    ) -> TKey {
        let id = TrackId(self.next_track);
        self.next_track += 1;
        // Simulcast: the RIDs negotiated for the m-line, in the order negotiated.
        let rids: Vec<Rid> = match self.participants[key].rtc.media(mid).map(|m| m.rids_rx()) {
            Some(Rids::Specific(rids)) => rids.clone(),
            _ => Vec::new(),
        };
        let publisher = self.participants[key].id;
        let tk = self.tracks.insert(Track::new(
            id,
            Origin::Local(key),
            publisher,
            mid,
            kind,
            label,
            params,
            &rids,
        ));
        self.track_index.insert(id, tk);
        let p = &mut self.participants[key];
        p.tracks.push(tk);
        let mut shards = 0;
        if let Some(r) = self.rooms.get_mut(&p.room) {
            r.add_track(id, tk);
            shards = r.shards;
        }
        if shards != 0 {
            self.relay_track(tk, shards);
        }
        tk
    }
}
