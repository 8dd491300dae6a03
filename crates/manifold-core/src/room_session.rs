//! Room sessions: one peer connection per participant whose offers always come from the
//! server. Publishing adds a receiving m-line, subscribing a sending one; idle m-lines are
//! reused; at most one offer is outstanding, and whatever comes up meanwhile waits for the
//! next. Because only the server offers, two offers can never cross.

use std::time::Instant;

use manifold_api::protocol::MidInfo;
use manifold_api::{CommandError, CoreEvent, MediaKind, ReplyValue, TrackId};
use str0m::Rtc;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Mid};

use crate::keys::{PKey, TKey};
use crate::relay::Origin;
use manifold_api::command::Publication;

use crate::negotiation::{Line, PendingOffer, PendingPublication, Role};
use crate::participant::{SlotState, new_slot, send_ssrc, set_local_direction, splitmix64};
use crate::shard::Shard;
use crate::track::TrackLabel;

/// What one offer changes, planned before the `Rtc` is touched.
struct Plan {
    inactive: Vec<Mid>,
    reactivate: Vec<(usize, TKey)>,
    /// New publications: their kind, a retired sending m-line of that kind to reuse, and
    /// their simulcast layers.
    publish: Vec<(MediaKind, Option<Mid>, u8)>,
    subscribe: Vec<(TKey, MediaKind, String, String)>,
    restart: bool,
}

fn str0m_kind(kind: MediaKind) -> str0m::media::MediaKind {
    match kind {
        MediaKind::Audio => str0m::media::MediaKind::Audio,
        MediaKind::Video => str0m::media::MediaKind::Video,
    }
}

fn kind_str(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

impl Shard {
    fn room_participant(&mut self, key: PKey) -> Result<(), CommandError> {
        match self.participants.get(key) {
            Some(p) if p.kind == manifold_api::SessionKind::Room && p.doomed.is_none() => Ok(()),
            Some(_) => Err(CommandError::Rejected(
                "only room-protocol sessions renegotiate".into(),
            )),
            None => Err(CommandError::UnknownParticipant),
        }
    }

    /// `publish`: queue the publication; the next offer carries its m-line.
    pub(crate) fn room_publish(
        &mut self,
        key: PKey,
        publication: Publication,
    ) -> Result<ReplyValue, CommandError> {
        self.room_participant(key)?;
        if !self.participants[key].grants.may_publish() {
            return Err(CommandError::Forbidden(
                "the token lacks the publish grant".into(),
            ));
        }
        let limit = self.config.max_tracks_per_participant;
        let p = &mut self.participants[key];
        if p.tracks.len() + p.neg.pending_publications() >= limit {
            return Err(CommandError::LimitReached(format!(
                "a participant may publish {limit} tracks"
            )));
        }
        if p.neg
            .publications
            .iter()
            .any(|x| x.publication.cid == publication.cid)
        {
            return Err(CommandError::Rejected(format!(
                "cid {:?} is already being published",
                publication.cid
            )));
        }
        p.neg.publications.push(PendingPublication {
            publication,
            mid: None,
        });
        p.neg.touch();
        self.maybe_offer(key);
        Ok(ReplyValue::Done)
    }

    /// `unpublish`.
    pub(crate) fn room_unpublish(
        &mut self,
        now: Instant,
        key: PKey,
        track: TrackId,
    ) -> Result<ReplyValue, CommandError> {
        self.room_participant(key)?;
        let tk = self.own_track(key, track)?;
        let mid = self.tracks[tk].mid;
        self.drop_track(now, tk);
        let p = &mut self.participants[key];
        p.neg.retire(mid);
        let room = p.room.clone();
        if p.tracks.is_empty()
            && let Some(r) = self.rooms.get_mut(&room)
        {
            r.remove_publisher(Origin::Local(key));
        }
        self.maybe_offer(key);
        self.retarget(now, &room);
        Ok(ReplyValue::Done)
    }

    /// `subscribe`.
    pub(crate) fn room_subscribe(
        &mut self,
        key: PKey,
        track: TrackId,
    ) -> Result<ReplyValue, CommandError> {
        self.room_participant(key)?;
        if !self.participants[key].grants.may_subscribe() {
            return Err(CommandError::Forbidden(
                "the token lacks the subscribe grant".into(),
            ));
        }
        let tk = self.track_in_room(key, track)?;
        if self.tracks[tk].origin == Origin::Local(key) {
            return Err(CommandError::Rejected(
                "you cannot subscribe to your own track".into(),
            ));
        }
        let p = &mut self.participants[key];
        let has_line = p
            .slots
            .iter()
            .any(|s| s.want == Some(tk) && !matches!(s.state, SlotState::Closing { .. }));
        if !has_line {
            p.neg.want(tk);
            self.maybe_offer(key);
        }
        Ok(ReplyValue::Done)
    }

    /// `unsubscribe`.
    pub(crate) fn room_unsubscribe(
        &mut self,
        key: PKey,
        track: TrackId,
    ) -> Result<ReplyValue, CommandError> {
        self.room_participant(key)?;
        let tk = self.track_in_room(key, track)?;
        if self.participants[key].neg.unwant(tk) {
            return Ok(ReplyValue::Done);
        }
        let slot = self.participants[key]
            .slots
            .iter()
            .position(|s| s.want == Some(tk) && !matches!(s.state, SlotState::Closing { .. }))
            .ok_or_else(|| CommandError::NotFound(format!("you do not receive {track}")))?;
        self.close_slot(key, slot);
        self.maybe_offer(key);
        Ok(ReplyValue::Done)
    }

    /// `ice_restart`: the next offer carries new ICE credentials.
    pub(crate) fn room_restart_ice(&mut self, key: PKey) -> Result<ReplyValue, CommandError> {
        self.room_participant(key)?;
        let p = &mut self.participants[key];
        p.neg.ice_restart = true;
        p.neg.touch();
        self.maybe_offer(key);
        Ok(ReplyValue::Done)
    }

    /// A client resumed: send the outstanding offer again, if there is one.
    pub(crate) fn room_resync(&mut self, key: PKey) {
        let Some(p) = self.participants.get(key) else {
            return;
        };
        if p.neg.pending.is_none() {
            return;
        }
        if let Some((offer_id, sdp, mids)) = p.neg.last_offer.clone() {
            let participant = p.id;
            self.out.event(CoreEvent::Offer {
                participant,
                offer_id,
                sdp,
                mids,
            });
        }
    }

    /// The answer to offer `offer_id`.
    pub(crate) fn room_answer(
        &mut self,
        now: Instant,
        key: PKey,
        offer_id: u64,
        sdp: &str,
    ) -> Result<ReplyValue, CommandError> {
        self.room_participant(key)?;
        let p = &mut self.participants[key];
        match &p.neg.pending {
            Some(pending) if pending.id == offer_id => {}
            Some(pending) => {
                return Err(CommandError::NoOfferPending(format!(
                    "offer {offer_id} is not the outstanding one ({})",
                    pending.id
                )));
            }
            None => {
                return Err(CommandError::NoOfferPending(
                    "no offer is outstanding".into(),
                ));
            }
        }
        // Check and parse before consuming the pending offer: a garbled answer changes
        // nothing.
        crate::negotiate::check_sdp(sdp)
            .map_err(|e| CommandError::BadSdp(format!("the answer is not usable: {e}")))?;
        let answer = SdpAnswer::from_sdp_string(sdp)
            .map_err(|e| CommandError::BadSdp(format!("the answer is not valid SDP: {e}")))?;
        let pending = p.neg.pending.take().expect("checked above");
        let woken = p.take_quiet();
        let applied = p.with_rtc(key, &mut self.out, |rtc| {
            wake(rtc, &woken);
            rtc.sdp_api().accept_answer(pending.offer, answer)
        });
        match applied {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                // The answer does not fit the offer: this session's state can no longer be
                // trusted, and it alone ends.
                tracing::warn!(participant = %p.id, error = %e, "answer does not match the offer");
                p.doom(manifold_api::LeaveReason::Failed);
                self.out.reap = true;
                return Err(CommandError::BadSdp(format!(
                    "the answer does not match the offer: {e}"
                )));
            }
            None => {
                self.out.reap = true;
                return Err(CommandError::UnknownParticipant);
            }
        }
        p.neg.last_offer = None;
        if let Some(old) = pending.old_ufrag
            && self.by_ufrag.get(&old) == Some(&key)
        {
            self.by_ufrag.remove(&old);
        }
        self.commit_answer(now, key);
        self.maybe_offer(key);
        Ok(ReplyValue::Done)
    }

    /// Everything the answered offer carried takes effect.
    fn commit_answer(&mut self, now: Instant, key: PKey) {
        // Publications become tracks.
        let published: Vec<PendingPublication> = {
            let neg = &mut self.participants[key].neg;
            let (done, waiting) = std::mem::take(&mut neg.publications)
                .into_iter()
                .partition(|x| x.mid.is_some());
            neg.publications = waiting;
            done
        };
        let mut new_tracks = Vec::new();
        for pp in published {
            let mid = pp.mid.expect("partitioned on mid");
            let params = self.participants[key].params_of(mid);
            if params.is_empty() {
                tracing::info!(participant = %self.participants[key].id, cid = %pp.publication.cid, "publication refused by the client");
                continue;
            }
            let Publication {
                cid,
                kind,
                source,
                name,
                muted,
                layers: _,
            } = pp.publication;
            let label = TrackLabel {
                source,
                name,
                muted,
                cid: Some(cid),
            };
            new_tracks.push(self.add_track(key, mid, kind, label, params));
        }

        // Receiving m-lines go live and attach to their tracks; closed ones become idle.
        let mut attach = Vec::new();
        let p = &mut self.participants[key];
        for (i, slot) in p.slots.iter_mut().enumerate() {
            match slot.state {
                SlotState::Offered => {
                    slot.state = SlotState::Live;
                    if slot.tx_ssrc.is_none() {
                        slot.tx_ssrc = send_ssrc(&mut p.rtc, slot.mid, slot.kind);
                    }
                    if let Some(tk) = slot.want {
                        attach.push((i, tk));
                    }
                }
                SlotState::Closing { in_flight: true } => slot.state = SlotState::Idle,
                _ => {}
            }
        }
        for (i, tk) in attach {
            if self.tracks.contains(tk) {
                self.attach(now, key, i, tk);
            } else {
                self.close_slot(key, i);
            }
        }

        if !new_tracks.is_empty() {
            let room = self.participants[key].room.clone();
            if let Some(r) = self.rooms.get_mut(&room) {
                r.add_publisher(Origin::Local(key), None);
            }
            for tk in new_tracks {
                self.announce_track(tk);
            }
            self.retarget(now, &room);
        }
    }

    /// Tell the room about a new local track and queue it for every auto-subscribing member.
    pub(crate) fn announce_track(&mut self, tk: TKey) {
        let track = &self.tracks[tk];
        let Some(publisher) = track.origin.local().and_then(|k| self.participants.get(k)) else {
            return;
        };
        self.out.event(CoreEvent::TrackPublished {
            room: publisher.room.clone(),
            participant: publisher.id,
            track: track.id,
            kind: track.kind,
            source: track.label.source,
            name: track.label.name.clone(),
            muted: track.label.muted,
            cid: track.label.cid.clone(),
        });
        self.offer_to_room(tk);
    }

    /// Queue track `tk` (local or relayed) for every auto-subscribing member of its room here.
    pub(crate) fn offer_to_room(&mut self, tk: TKey) {
        let Some(room) = self.room_of_track(tk).and_then(|r| self.rooms.get(r)) else {
            return;
        };
        let origin = self.tracks[tk].origin;
        let members: Vec<PKey> = room
            .members()
            .iter()
            .copied()
            .filter(|&m| origin != Origin::Local(m))
            .collect();
        for m in members {
            let p = &mut self.participants[m];
            if p.kind == manifold_api::SessionKind::Room && p.auto_subscribe && p.doomed.is_none() {
                p.neg.want(tk);
                self.maybe_offer(m);
            }
        }
    }

    /// A track is going away: every room member receiving it (or waiting to) lets it go,
    /// and their m-lines close in the next offer.
    pub(crate) fn release_track_for_rooms(&mut self, tk: TKey) {
        let Some(room) = self.room_of_track(tk).cloned() else {
            return;
        };
        let members: Vec<PKey> = self
            .rooms
            .get(&room)
            .map(|r| r.members().to_vec())
            .unwrap_or_default();
        for m in members {
            let Some(p) = self.participants.get_mut(m) else {
                continue;
            };
            if p.kind != manifold_api::SessionKind::Room || p.neg.unwant(tk) {
                continue;
            }
            if let Some(i) = p.slots.iter().position(|s| s.want == Some(tk)) {
                self.close_slot(m, i);
                self.maybe_offer(m);
            }
        }
    }

    fn close_slot(&mut self, key: PKey, slot: usize) {
        self.detach(key, slot);
        let p = &mut self.participants[key];
        let s = &mut p.slots[slot];
        s.want = None;
        if s.state != SlotState::Idle {
            s.state = SlotState::Closing { in_flight: false };
            p.neg.touch();
        }
    }

    fn track_in_room(&self, key: PKey, track: TrackId) -> Result<TKey, CommandError> {
        self.rooms
            .get(&self.participants[key].room)
            .and_then(|r| r.track(track))
            .ok_or_else(|| CommandError::NotFound(format!("no track {track} in this room")))
    }

    /// Send an offer if something changed and none is outstanding.
    pub(crate) fn maybe_offer(&mut self, key: PKey) {
        let Some(p) = self.participants.get_mut(key) else {
            return;
        };
        if p.kind != manifold_api::SessionKind::Room
            || p.doomed.is_some()
            || p.neg.pending.is_some()
            || !p.neg.dirty
        {
            return;
        }
        p.neg.dirty = false;

        // Plan.
        let mut plan = Plan {
            inactive: std::mem::take(&mut p.neg.retiring),
            reactivate: Vec::new(),
            publish: Vec::new(),
            subscribe: Vec::new(),
            restart: std::mem::take(&mut p.neg.ice_restart),
        };
        for s in p.slots.iter_mut() {
            if let SlotState::Closing { in_flight } = &mut s.state {
                *in_flight = true;
                plan.inactive.push(s.mid);
            }
        }
        for pp in &p.neg.publications {
            if pp.mid.is_some() {
                continue;
            }
            let kind = kind_str(pp.publication.kind);
            let reuse = p
                .neg
                .lines
                .iter()
                .find(|l| {
                    l.role == Role::Dead
                        && l.kind == kind
                        && !plan.inactive.contains(&l.mid)
                        && !plan.publish.iter().any(|(_, m, _)| *m == Some(l.mid))
                })
                .map(|l| l.mid);
            // A simulcast publication needs an m-line of its own: an old one cannot take RIDs.
            let reuse = reuse.filter(|_| pp.publication.layers <= 1);
            plan.publish
                .push((pp.publication.kind, reuse, pp.publication.layers));
        }
        let wanted = std::mem::take(&mut p.neg.wanted);
        let wanted: Vec<(TKey, MediaKind, String, String)> = wanted
            .into_iter()
            .filter_map(|tk| {
                let track = self.tracks.get(tk)?;
                let stream = track.publisher_id.to_string();
                Some((tk, track.kind, stream, track.id.to_string()))
            })
            .collect();
        let p = &mut self.participants[key];
        for (tk, kind, stream, track) in wanted {
            let idle = p
                .slots
                .iter()
                .enumerate()
                .find(|(i, s)| {
                    s.kind == kind
                        && s.state == SlotState::Idle
                        && !plan.reactivate.iter().any(|(j, _)| j == i)
                })
                .map(|(i, _)| i);
            match idle {
                Some(i) => plan.reactivate.push((i, tk)),
                None => plan.subscribe.push((tk, kind, stream, track)),
            }
        }
        let p = &mut self.participants[key];
        let reactivate_mids: Vec<Mid> = plan
            .reactivate
            .iter()
            .map(|(i, _)| p.slots[*i].mid)
            .collect();

        // Apply to the Rtc.
        let woken = p.take_quiet();
        let applied = p.with_rtc(key, &mut self.out, |rtc| {
            wake(rtc, &woken);
            let mut change = rtc.sdp_api();
            for mid in &plan.inactive {
                change.set_direction(*mid, Direction::Inactive);
            }
            for mid in &reactivate_mids {
                change.set_direction(*mid, Direction::SendOnly);
            }
            let publish: Vec<Mid> = plan
                .publish
                .iter()
                .map(|(k, reuse, layers)| match reuse {
                    Some(mid) => {
                        change.set_direction(*mid, Direction::RecvOnly);
                        *mid
                    }
                    None => change.add_media(
                        str0m_kind(*k),
                        Direction::RecvOnly,
                        None,
                        None,
                        simulcast_recv(*layers),
                    ),
                })
                .collect();
            let subscribe: Vec<Mid> = plan
                .subscribe
                .iter()
                .map(|(_, k, stream, track)| {
                    change.add_media(
                        str0m_kind(*k),
                        Direction::SendOnly,
                        Some(stream.clone()),
                        Some(track.clone()),
                        None,
                    )
                })
                .collect();
            let creds = plan.restart.then(|| change.ice_restart(true));
            let offer = change
                .apply()
                .map(|(o, pending)| (o.to_sdp_string(), pending));
            (offer, publish, subscribe, creds)
        });
        let Some((offer, publish, subscribe, creds)) = applied else {
            self.out.reap = true;
            return;
        };
        let p = &mut self.participants[key];
        let Some((sdp, pending)) = offer else {
            // Nothing needed negotiating after all (an m-line already inactive, say).
            for s in p.slots.iter_mut() {
                if s.state == (SlotState::Closing { in_flight: true }) {
                    s.state = SlotState::Idle;
                }
            }
            return;
        };

        // Record what the offer carries.
        let mut mids = publish.into_iter();
        for pp in p.neg.publications.iter_mut().filter(|x| x.mid.is_none()) {
            let Some(mid) = mids.next() else { break };
            pp.mid = Some(mid);
            match p.neg.lines.iter_mut().find(|l| l.mid == mid) {
                Some(reused) => reused.role = Role::Send,
                None => p.neg.lines.push(Line {
                    mid,
                    kind: kind_str(pp.publication.kind),
                    role: Role::Send,
                }),
            }
        }
        for (i, tk) in &plan.reactivate {
            let slot = &mut p.slots[*i];
            slot.want = Some(*tk);
            slot.state = SlotState::Offered;
        }
        for ((tk, kind, _, _), mid) in plan.subscribe.iter().zip(subscribe) {
            let index = p.slots.len();
            let seed = splitmix64(p.id.0 ^ (index as u64).wrapping_mul(0x9e37_79b9));
            p.slots
                .push(new_slot(mid, *kind, Some(*tk), seed, SlotState::Offered));
            p.neg.lines.push(Line {
                mid,
                kind: kind_str(*kind),
                role: Role::Receive(index),
            });
        }
        for line in p.neg.lines.iter_mut() {
            if line.role == Role::Send && plan.inactive.contains(&line.mid) {
                line.role = Role::Dead;
            }
        }
        let old_ufrag = creds.map(|c| {
            self.by_ufrag.insert(c.ufrag.clone(), key);
            std::mem::replace(&mut p.ufrag, c.ufrag)
        });
        let offer_id = p.neg.next_offer_id;
        p.neg.next_offer_id += 1;
        p.neg.pending = Some(PendingOffer {
            id: offer_id,
            offer: pending,
            old_ufrag,
        });
        let participant = p.id;
        let mids = self.mid_infos(key);
        self.participants[key].neg.last_offer = Some((offer_id, sdp.clone(), mids.clone()));
        tracing::debug!(%participant, offer_id, publish = plan.publish.len(), subscribe = plan.subscribe.len(), reactivate = plan.reactivate.len(), inactive = plan.inactive.len(), "offer");
        self.out.event(CoreEvent::Offer {
            participant,
            offer_id,
            sdp,
            mids,
        });
    }

    /// What every m-line of `key`'s session is for, as the offer's `mids` list says.
    fn mid_infos(&self, key: PKey) -> Vec<MidInfo> {
        let p = &self.participants[key];
        p.neg
            .lines
            .iter()
            .map(|line| {
                let mut info = MidInfo {
                    mid: line.mid.to_string(),
                    kind: line.kind.into(),
                    cid: None,
                    track: None,
                    participant: None,
                };
                match line.role {
                    Role::Send => {
                        info.cid = p
                            .tracks
                            .iter()
                            .map(|&tk| &self.tracks[tk])
                            .find(|t| t.mid == line.mid)
                            .and_then(|t| t.label.cid.clone())
                            .or_else(|| {
                                p.neg
                                    .publications
                                    .iter()
                                    .find(|x| x.mid == Some(line.mid))
                                    .map(|x| x.publication.cid.clone())
                            });
                    }
                    Role::Receive(i) => {
                        if let Some(tk) = p.slots.get(i).and_then(|s| s.want)
                            && let Some(t) = self.tracks.get(tk)
                        {
                            info.track = Some(t.id);
                            info.participant = Some(t.publisher_id);
                        }
                    }
                    Role::Data | Role::Dead => {}
                }
                info
            })
            .collect()
    }
}

/// The RIDs a room publication of `layers` simulcast layers is received in, lowest first:
/// `q`, `h`, `f` (quarter, half, full resolution); two layers are `q` and `f`.
pub(crate) fn simulcast_rids(layers: u8) -> &'static [&'static str] {
    match layers {
        0 | 1 => &[],
        2 => &["q", "f"],
        _ => &["q", "h", "f"],
    }
}

/// The receive side of a simulcast m-line for `layers` layers (`None` for one).
fn simulcast_recv(layers: u8) -> Option<str0m::media::Simulcast> {
    let rids = simulcast_rids(layers);
    if rids.is_empty() {
        return None;
    }
    let mut s = str0m::media::Simulcast::new();
    for r in rids {
        s.add_recv_layer(str0m::media::SimulcastLayer::new(r));
    }
    Some(s)
}

/// Give quiet m-lines (`participant::quiet_direction`) their negotiated direction back
/// before an SDP operation, which reads and changes directions.
fn wake(rtc: &mut Rtc, woken: &[(Mid, Direction)]) {
    for &(mid, direction) in woken {
        set_local_direction(rtc, mid, direction);
    }
}
