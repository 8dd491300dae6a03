//! The shard: every room, participant and track one media worker owns, as one sans-IO state
//! machine. `handle_input(now, input)` mutates it; `poll_output()` drains transmits and
//! events until it returns the next timeout. No sockets, no clock, no locks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use manifold_api::{
    CommandError, CoreEvent, Grants, Identity, LeaveReason, MediaKind, ParticipantId, ReplyValue,
    RequestId, RoomName, SessionKind, ShardStats, Source, TrackId,
};
use manifold_rtp::{DropReason, PacketClass};
use slab::Slab;
use str0m::media::KeyframeRequestKind;
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, IceCreds};

use crate::config::ShardConfig;
use crate::forwarder::{Decision, PacketMeta};
use crate::negotiate::{Negotiated, SdpFragment};
use crate::participant::{PKey, Participant, SlotState, TKey};
use crate::room::{Negotiation, Publication, new_slot};
use crate::stats::Counters;
use crate::track::{HISTORY_PACKETS, Kept, SSRC_TAKEOVER_SILENCE, Subscriber, Track, TrackLabel};

/// Most SSRCs (main and repair) cached per publisher: a few m-lines, a few SSRCs each.
const MAX_SSRCS_PER_PUBLISHER: usize = 32;

/// Most remote candidates one session may trickle over its life (PATCH, room-protocol
/// `candidate`): str0m keeps every one, and an ICE-lite server needs few.
pub const MAX_TRICKLED_CANDIDATES: usize = 64;

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// What.
    pub contents: Vec<u8>,
}

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

/// Output of [`Shard::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit),
    /// Tell the control plane.
    Event(CoreEvent),
    /// Nothing more now; call again with [`Input::Timeout`] at this time (or earlier input).
    Timeout(Instant),
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

/// Queues shared by everything that drives an `Rtc`: outputs for the I/O layer, `Rtc`
/// events still to be handled, the timer heap and the counters.
pub(crate) struct Outbox {
    pub outputs: VecDeque<Output>,
    pub events: VecDeque<(PKey, Event)>,
    timers: BinaryHeap<Reverse<(Instant, PKey)>>,
    pub counters: Counters,
    /// Some participant was doomed since the last reap.
    pub reap: bool,
}

impl Outbox {
    pub fn transmit(&mut self, t: str0m::net::Transmit) {
        let contents: Vec<u8> = t.contents.into();
        self.counters.datagrams_out += 1;
        self.counters.bytes_out += contents.len() as u64;
        self.outputs.push_back(Output::Transmit(Transmit {
            destination: t.destination,
            contents,
        }));
    }

    pub fn schedule(&mut self, at: Instant, key: PKey) {
        self.timers.push(Reverse((at, key)));
    }

    pub(crate) fn event(&mut self, e: CoreEvent) {
        self.outputs.push_back(Output::Event(e));
    }

    fn reply(&mut self, request: RequestId, result: Result<ReplyValue, CommandError>) {
        self.event(CoreEvent::Reply { request, result });
    }
}

pub(crate) struct Room {
    /// Everyone in the room, in join order.
    pub members: Vec<PKey>,
    /// Members that publish, in the order they started: the first is the room's current
    /// publisher.
    pub publishers: Vec<PKey>,
}

/// One worker's rooms, participants and tracks.
pub struct Shard {
    pub(crate) config: ShardConfig,
    pub(crate) participants: Slab<Participant>,
    pub(crate) tracks: Slab<Track>,
    pub(crate) rooms: HashMap<RoomName, Room>,
    pub(crate) by_id: HashMap<ParticipantId, PKey>,
    // Keys an attacker controls live in std's SipHash maps, which resist hash flooding.
    pub(crate) by_addr: HashMap<SocketAddr, PKey>,
    pub(crate) by_ufrag: HashMap<String, PKey>,
    pub(crate) out: Outbox,
    pub(crate) next_housekeeping: Instant,
    pub(crate) next_track: u64,
    // Reused scratch space for timer processing.
    pub(crate) due: Vec<PKey>,
    // STUN message integrity, checked here for requests the `Rtc` would take on trust.
    pub(crate) stun_hmac: &'static dyn str0m::crypto::Sha1HmacProvider,
}

impl Shard {
    /// An empty shard starting at `now`. `shard_index` keeps track ids unique across
    /// shards.
    pub fn new(config: ShardConfig, now: Instant, shard_index: u16) -> Self {
        Shard {
            next_housekeeping: now + config.housekeeping_interval,
            config,
            participants: Slab::new(),
            tracks: Slab::new(),
            rooms: HashMap::new(),
            by_id: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            out: Outbox {
                outputs: VecDeque::new(),
                events: VecDeque::new(),
                timers: BinaryHeap::new(),
                counters: Counters::default(),
                reap: false,
            },
            next_track: u64::from(shard_index) << 48,
            due: Vec::new(),
            stun_hmac: str0m::crypto::from_feature_flags().sha1_hmac_provider,
        }
    }

    /// Feed one input. Afterwards drain [`Shard::poll_output`] until it returns a timeout.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Datagram {
                source,
                destination,
                contents,
            } => self.handle_datagram(now, source, destination, contents),
            Input::Timeout => self.handle_timeout(now),
            Input::Command(c) => self.handle_command(now, c),
        }
        loop {
            while let Some((key, event)) = self.out.events.pop_front() {
                self.handle_rtc_event(now, key, event);
            }
            if !self.reap(now) {
                break;
            }
        }
    }

    /// The next output: transmits and events first, then the time of the next timeout.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.outputs.pop_front() {
            return o;
        }
        // Stale timer entries (the participant rescheduled or left) are dropped here so
        // the worker does not wake up for them.
        while let Some(Reverse((at, key))) = self.out.timers.peek() {
            let live = self
                .participants
                .get(*key)
                .is_some_and(|p| p.timer == Some(*at));
            if live {
                break;
            }
            self.out.timers.pop();
        }
        let next_rtc = self.out.timers.peek().map(|Reverse((at, _))| *at);
        let next = match next_rtc {
            Some(at) => at.min(self.next_housekeeping),
            None => self.next_housekeeping,
        };
        Output::Timeout(next)
    }

    /// Make the next call into this participant's `Rtc` panic, as a bug in the WebRTC stack
    /// would. Returns whether the participant is here. Exists to test the panic containment
    /// from outside the crate: no input makes str0m panic on purpose.
    #[doc(hidden)]
    pub fn inject_rtc_panic(&mut self, participant: ParticipantId) -> bool {
        let Some(&key) = self.by_id.get(&participant) else {
            return false;
        };
        self.participants[key].panic_next = true;
        true
    }

    /// A snapshot of the counters and of what the shard holds.
    pub fn stats(&self) -> ShardStats {
        let mut s = self.out.counters.snapshot();
        s.rooms = self.rooms.len() as u64;
        s.participants = self.participants.len() as u64;
        s.tracks = self.tracks.len() as u64;
        s.subscriptions = self
            .tracks
            .iter()
            .map(|(_, t)| t.subscribers.len() as u64)
            .sum();
        s
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        let counters = &mut self.out.counters;
        counters.datagrams_in += 1;
        counters.bytes_in += contents.len() as u64;

        let class = manifold_rtp::classify(contents);
        let key = match class {
            PacketClass::Unknown => {
                counters.drop(DropReason::Malformed);
                return;
            }
            // A STUN request names its session by ufrag, whatever address it comes from.
            PacketClass::Stun => manifold_rtp::local_ufrag(contents)
                .and_then(|u| self.by_ufrag.get(u))
                .or_else(|| self.by_addr.get(&source)),
            _ => self.by_addr.get(&source),
        };
        let Some(&key) = key else {
            counters.drop(DropReason::UnknownSource);
            return;
        };
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, contents) else {
            counters.drop(DropReason::Malformed);
            return;
        };
        let input = str0m::Input::Receive(now, receive);
        let Some(p) = self.participants.get_mut(key) else {
            counters.drop(DropReason::UnknownSource);
            return;
        };
        // The index found one candidate; the Rtc confirms it (for STUN: the message
        // integrity under its ICE password).
        let accepted =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.rtc.accepts(&input)))
                .unwrap_or(false);
        // From an address it does not know yet, `accepts()` has checked a STUN request's
        // integrity already; from a known one it may not have.
        let known = self.by_addr.get(&source) == Some(&key);
        if !accepted
            || (class == PacketClass::Stun && known && !stun_authentic(p, contents, self.stun_hmac))
        {
            counters.drop(DropReason::Rejected);
            return;
        }
        if class == PacketClass::Stun {
            if let Some(evicted) = p.learn_addr(source)
                && self.by_addr.get(&evicted) == Some(&key)
            {
                self.by_addr.remove(&evicted);
            }
            self.by_addr.insert(source, key);
        }
        let rtp_ssrc = (class == PacketClass::Rtp && contents.len() >= 12).then(|| {
            Ssrc::from(u32::from_be_bytes([
                contents[8],
                contents[9],
                contents[10],
                contents[11],
            ]))
        });
        if rtp_ssrc.is_some() && p.kind == SessionKind::Whep {
            // Players send no media; RTP from one is for an SSRC nobody owns.
            self.out.counters.drop(DropReason::UnknownSsrc);
            return;
        }
        let result = p.with_rtc(key, &mut self.out, |rtc| rtc.handle_input(input));
        match result {
            Some(Err(e)) => {
                tracing::debug!(participant = %p.id, error = %e, "input rejected");
                self.out.counters.drop(DropReason::Rejected);
            }
            None => self.out.reap = true,
            Some(Ok(())) => {
                if let Some(ssrc) = rtp_ssrc
                    && !publisher_owns(p, &self.tracks, ssrc)
                {
                    self.out.counters.drop(DropReason::UnknownSsrc);
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        // Collect first: an Rtc may return a timeout that is already due, and it must wait
        // for the next call rather than spin here.
        let mut due = std::mem::take(&mut self.due);
        while let Some(Reverse((at, key))) = self.out.timers.peek().copied() {
            if at > now {
                break;
            }
            self.out.timers.pop();
            if let Some(p) = self.participants.get_mut(key)
                && p.timer == Some(at)
            {
                p.timer = None;
                due.push(key);
            }
        }
        for key in due.drain(..) {
            let Some(p) = self.participants.get_mut(key) else {
                continue;
            };
            let input = str0m::Input::Timeout(now);
            if p.with_rtc(key, &mut self.out, |rtc| rtc.handle_input(input))
                .is_none()
            {
                self.out.reap = true;
            }
        }
        self.due = due;

        if now >= self.next_housekeeping {
            self.housekeeping(now);
            self.next_housekeeping = now + self.config.housekeeping_interval;
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        for (_, p) in self.participants.iter_mut() {
            let expired = if p.connected {
                p.disconnected_since.is_some_and(|t| {
                    now.saturating_duration_since(t) >= self.config.disconnect_grace
                })
            } else {
                now.saturating_duration_since(p.joined_at) >= self.config.connect_timeout
            };
            if expired {
                tracing::info!(participant = %p.id, connected = p.connected, "ICE timed out");
                p.doom(LeaveReason::Timeout);
                self.out.reap = true;
            }
        }
        // Keep asking while someone waits: a lost PLI must not freeze a subscriber. And send
        // what was coalesced: a request that came within the interval after the last one is
        // pending until the interval has passed, whether or not a forwarder waits.
        let waiting: Vec<TKey> = self
            .tracks
            .iter()
            .filter(|(_, t)| {
                t.kind == MediaKind::Video
                    && (t.keyframes.pending
                        || t.subscribers.iter().any(|s| {
                            self.participants.get(s.participant).is_some_and(|p| {
                                p.connected && p.slots[s.slot].forwarder.wants_keyframe()
                            })
                        }))
            })
            .map(|(k, _)| k)
            .collect();
        for tk in waiting {
            self.request_keyframe(now, tk);
        }
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Join { request, session } => {
                let result = self.join(now, *session);
                self.out.reply(request, result.map(|()| ReplyValue::Done));
            }
            Command::Leave {
                participant,
                reason,
            } => {
                if let Some(&key) = self.by_id.get(&participant) {
                    self.participants[key].doom(reason);
                    self.out.reap = true;
                }
            }
            Command::Trickle {
                request,
                participant,
                fragment,
            } => {
                let result = self.trickle(participant, fragment);
                self.out.reply(request, result);
            }
            Command::Stats { request } => {
                let stats = self.stats();
                self.out.reply(request, Ok(ReplyValue::Stats(stats)));
            }
            Command::Shutdown => {
                for (_, p) in self.participants.iter_mut() {
                    p.doom(LeaveReason::Shutdown);
                }
                self.out.reap = true;
            }
            Command::Answer {
                request,
                participant,
                offer_id,
                sdp,
            } => self.room_command(request, participant, |shard, key| {
                shard.room_answer(now, key, offer_id, &sdp)
            }),
            Command::Publish {
                request,
                participant,
                publication,
            } => self.room_command(request, participant, |shard, key| {
                shard.room_publish(key, publication)
            }),
            Command::Unpublish {
                request,
                participant,
                track,
            } => self.room_command(request, participant, |shard, key| {
                shard.room_unpublish(now, key, track)
            }),
            Command::Subscribe {
                request,
                participant,
                track,
            } => self.room_command(request, participant, |shard, key| {
                shard.room_subscribe(key, track)
            }),
            Command::Unsubscribe {
                request,
                participant,
                track,
            } => self.room_command(request, participant, |shard, key| {
                shard.room_unsubscribe(key, track)
            }),
            Command::RestartIce {
                request,
                participant,
            } => self.room_command(request, participant, |shard, key| {
                shard.room_restart_ice(key)
            }),
            Command::SetMuted {
                request,
                participant,
                track,
                muted,
            } => self.room_command(request, participant, |shard, key| {
                shard.set_muted(now, key, track, muted)
            }),
            Command::Resync { participant } => {
                if let Ok(key) = self.key_of(participant) {
                    self.room_resync(key);
                }
            }
        }
    }

    /// Run a room-session command for `participant` and reply with its outcome.
    fn room_command(
        &mut self,
        request: RequestId,
        participant: ParticipantId,
        f: impl FnOnce(&mut Self, PKey) -> Result<ReplyValue, CommandError>,
    ) {
        let result = self.key_of(participant).and_then(|key| f(self, key));
        self.out.reply(request, result);
    }

    fn key_of(&self, participant: ParticipantId) -> Result<PKey, CommandError> {
        self.by_id
            .get(&participant)
            .copied()
            .ok_or(CommandError::UnknownParticipant)
    }

    fn join(&mut self, now: Instant, session: NewSession) -> Result<(), CommandError> {
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
            r.members.iter().copied().find(|&k| {
                let p = &self.participants[k];
                p.identity == identity && p.kind == kind && p.doomed.is_none()
            })
        });
        let members =
            self.rooms.get(&room).map_or(0, |r| r.members.len()) - usize::from(replaced.is_some());
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
            publisher_place = self
                .rooms
                .get(&room)
                .and_then(|r| r.publishers.iter().position(|&k| k == old));
            self.unlink(old, LeaveReason::Replaced);
        }

        let mids = negotiated.offer_mids();
        let Negotiated {
            rtc,
            ufrag,
            media,
            sdp,
            pending,
            data_mid,
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
            slots: Vec::new(),
            timer: None,
            connected: false,
            joined_at: now,
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
        self.rooms
            .entry(room.clone())
            .or_insert_with(|| Room {
                members: Vec::new(),
                publishers: Vec::new(),
            })
            .members
            .push(key);
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
                    let track_id = self.new_track_id();
                    let label = TrackLabel::offered(m.kind);
                    let tk = self
                        .tracks
                        .insert(Track::new(track_id, key, m.mid, m.kind, label, params));
                    self.participants[key].tracks.push(tk);
                    new_tracks.push(tk);
                }
                if !new_tracks.is_empty()
                    && let Some(r) = self.rooms.get_mut(&room)
                {
                    match publisher_place {
                        Some(i) if i <= r.publishers.len() => r.publishers.insert(i, key),
                        _ => r.publishers.push(key),
                    }
                }
            }
            SessionKind::Whep => {
                let p = &mut self.participants[key];
                for (i, m) in media.iter().enumerate() {
                    let seed = splitmix64(id.0 ^ (i as u64).wrapping_mul(0x9e37_79b9));
                    let mut slot = new_slot(m.mid, m.kind, None, seed, SlotState::Live);
                    slot.tx_ssrc = p
                        .rtc
                        .direct_api()
                        .stream_tx_by_mid(m.mid, None)
                        .map(|s| s.ssrc());
                    p.slots.push(slot);
                }
            }
            SessionKind::Room => {
                if auto_subscribe && grants.may_subscribe() {
                    let existing: Vec<TKey> = self
                        .tracks
                        .iter()
                        .filter(|(_, t)| {
                            t.publisher != key
                                && self
                                    .participants
                                    .get(t.publisher)
                                    .is_some_and(|q| q.room == room && q.doomed.is_none())
                        })
                        .map(|(k, _)| k)
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
        Ok(())
    }

    fn trickle(
        &mut self,
        participant: ParticipantId,
        fragment: SdpFragment,
    ) -> Result<ReplyValue, CommandError> {
        let key = *self
            .by_id
            .get(&participant)
            .ok_or(CommandError::UnknownParticipant)?;
        let trickled = self.participants[key].remote_candidates;
        if trickled + fragment.candidates.len() > MAX_TRICKLED_CANDIDATES {
            return Err(CommandError::LimitReached(format!(
                "a session may trickle at most {MAX_TRICKLED_CANDIDATES} candidates"
            )));
        }
        let mut candidates = Vec::with_capacity(fragment.candidates.len());
        for line in &fragment.candidates {
            let c = Candidate::from_sdp_string(line)
                .map_err(|e| CommandError::Rejected(format!("bad candidate: {e}")))?;
            candidates.push(c);
        }
        let p = &mut self.participants[key];
        p.remote_candidates += candidates.len();
        let restart = match (&fragment.ufrag, &fragment.pwd) {
            (Some(ufrag), Some(pwd)) => Some(IceCreds {
                ufrag: ufrag.clone(),
                pass: pwd.clone(),
            }),
            _ => None,
        };
        let local = restart.as_ref().map(|_| IceCreds::new());
        let applied = p.with_rtc(key, &mut self.out, |rtc| {
            let mut api = rtc.direct_api();
            if let (Some(remote), Some(local)) = (&restart, &local) {
                api.set_local_ice_credentials(local.clone());
                api.set_remote_ice_credentials(remote.clone());
            }
            for c in candidates {
                rtc.add_remote_candidate(c);
            }
        });
        if applied.is_none() {
            self.out.reap = true;
            return Err(CommandError::UnknownParticipant);
        }
        match local {
            Some(local) => {
                let old = std::mem::replace(&mut p.ufrag, local.ufrag.clone());
                if self.by_ufrag.get(&old) == Some(&key) {
                    self.by_ufrag.remove(&old);
                }
                self.by_ufrag.insert(local.ufrag.clone(), key);
                Ok(ReplyValue::IceRestarted {
                    ufrag: local.ufrag,
                    pwd: local.pass,
                })
            }
            None => Ok(ReplyValue::Done),
        }
    }

    fn handle_rtc_event(&mut self, now: Instant, key: PKey, event: Event) {
        let Some(p) = self.participants.get_mut(key) else {
            return;
        };
        if p.doomed.is_some() {
            return;
        }
        match event {
            Event::Connected => {
                p.connected = true;
                p.disconnected_since = None;
                tracing::info!(participant = %p.id, room = %p.room, "connected");
                self.out.event(CoreEvent::ParticipantConnected {
                    room: p.room.clone(),
                    participant: p.id,
                });
                let sources: Vec<TKey> = p.slots.iter().filter_map(|s| s.source).collect();
                for tk in sources {
                    self.request_keyframe(now, tk);
                }
            }
            Event::IceConnectionStateChange(state) => match state {
                IceConnectionState::Disconnected => {
                    p.disconnected_since.get_or_insert(now);
                }
                IceConnectionState::Connected | IceConnectionState::Completed => {
                    p.disconnected_since = None;
                }
                _ => {}
            },
            Event::RtpPacket(packet) => self.forward(now, key, packet),
            Event::KeyframeRequest(req) => {
                let source = p
                    .slots
                    .iter()
                    .find(|s| s.mid == req.mid)
                    .and_then(|s| s.source);
                if let Some(tk) = source {
                    self.request_keyframe(now, tk);
                }
            }
            Event::Closed => {
                p.doom(LeaveReason::PeerClosed);
                self.out.reap = true;
            }
            _ => {}
        }
    }

    /// The hot path: one packet from a publisher to every subscriber of its track.
    fn forward(&mut self, now: Instant, key: PKey, packet: RtpPacket) {
        self.out.counters.rtp_in += 1;
        let ssrc = packet.header.ssrc;
        let Some(tk) = self.track_for(key, ssrc) else {
            self.out.counters.drop(DropReason::UnknownSsrc);
            return;
        };
        let Shard {
            tracks,
            participants,
            out,
            config,
            ..
        } = self;
        let track = &mut tracks[tk];

        if track.ssrc != Some(ssrc) {
            let silent = track
                .last_packet_at
                .is_none_or(|t| now.saturating_duration_since(t) >= SSRC_TAKEOVER_SILENCE);
            if !silent {
                out.counters.drop(DropReason::UnknownSsrc);
                return;
            }
            if track.ssrc.replace(ssrc).is_some() {
                // The encoder restarted under a new SSRC: a new numbering space, and the
                // packets kept from the old one are no use to anyone.
                track.history.clear();
                for s in &track.subscribers {
                    if let Some(p) = participants.get_mut(s.participant) {
                        p.slots[s.slot].forwarder.switch_source();
                    }
                }
            }
        }
        track.last_packet_at = Some(now);
        if track.label.muted {
            // Muted is muted on the server too: nothing of it reaches anyone.
            out.counters.drop(DropReason::Muted);
            return;
        }

        let pt = packet.header.payload_type;
        let Some(info) = track.pt_info(pt) else {
            out.counters.drop(DropReason::CodecMismatch);
            return;
        };
        let keyframe = info
            .video
            .is_some_and(|c| manifold_rtp::is_keyframe(c, &packet.payload));
        if keyframe {
            track.keyframes.satisfied();
        }
        let video = track.kind == MediaKind::Video;
        let this = Kept {
            meta: PacketMeta {
                seq: *packet.seq_no,
                ts: packet.time.numer(),
                clock_rate: info.clock_rate,
                keyframe,
            },
            pt,
            marker: packet.header.marker,
            timestamp: packet.timestamp,
            ext: ExtensionValues {
                audio_level: packet.header.ext_vals.audio_level,
                voice_activity: packet.header.ext_vals.voice_activity,
                video_orientation: packet.header.ext_vals.video_orientation,
                ..Default::default()
            },
            payload: packet.payload,
        };
        let mut wants_keyframe = false;

        if track.subscribers.is_empty() {
            out.counters.drop(DropReason::NoSubscriber);
        }
        for s in &track.subscribers {
            let Some(p) = participants.get_mut(s.participant) else {
                continue;
            };
            if !p.connected || p.doomed.is_some() {
                out.counters.drop(DropReason::SubscriberNotReady);
                continue;
            }
            let switched = match forward_one(p, s, &this, video, now, out) {
                Ok(switched) => switched,
                Err(reason) => {
                    wants_keyframe |= reason == DropReason::WaitingForKeyframe;
                    continue;
                }
            };
            if switched && video {
                // This subscriber starts on this keyframe. Packets after it that arrived
                // before it (reordered, or it was itself a retransmission) were dropped while
                // it waited; without them the keyframe cannot be decoded.
                let mut later: Vec<&Kept> = track
                    .history
                    .iter()
                    .filter(|k| k.meta.seq > this.meta.seq)
                    .collect();
                later.sort_by_key(|k| k.meta.seq);
                for k in later {
                    // Errors are counted inside; the rest of the replay goes on.
                    let _ = forward_one(p, s, k, video, now, out);
                }
            }
        }
        if video {
            if track.history.len() == HISTORY_PACKETS {
                track.history.pop_front();
            }
            track.history.push_back(this);
        }
        if wants_keyframe && track.keyframes.ask(now, config.keyframe_request_interval) {
            send_keyframe_request(track, participants, out);
        }
    }

    /// The track a publisher's SSRC belongs to, learning the mapping on first sight.
    fn track_for(&mut self, key: PKey, ssrc: Ssrc) -> Option<TKey> {
        let p = self.participants.get_mut(key)?;
        if let Some((_, tk)) = p.ssrc_tracks.iter().find(|(s, _)| *s == ssrc) {
            return Some(*tk);
        }
        let mid = p.rtc.direct_api().stream_rx(&ssrc)?.mid();
        let tk = p
            .tracks
            .iter()
            .copied()
            .find(|&tk| self.tracks[tk].mid == mid)?;
        // Bounded: a publisher has few m-lines and few SSRCs per m-line.
        if p.ssrc_tracks.len() < MAX_SSRCS_PER_PUBLISHER {
            p.ssrc_tracks.push((ssrc, tk));
        }
        Some(tk)
    }

    fn request_keyframe(&mut self, now: Instant, tk: TKey) {
        let Some(track) = self.tracks.get_mut(tk) else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        if track
            .keyframes
            .ask(now, self.config.keyframe_request_interval)
        {
            send_keyframe_request(track, &mut self.participants, &mut self.out);
        }
    }

    /// Point every following participant's slots at the tracks they should receive now.
    pub(crate) fn retarget(&mut self, now: Instant, room: &RoomName) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut changes: Vec<(PKey, usize, Option<TKey>)> = Vec::new();
        for &m in &r.members {
            let p = &self.participants[m];
            let Some(source) = &p.source else {
                continue;
            };
            let publisher = r.publishers.iter().copied().find(|&k| {
                let q = &self.participants[k];
                q.doomed.is_none()
                    && match source {
                        Source::RoomCurrent => true,
                        Source::Identity(id) => q.identity == *id,
                    }
            });
            for (i, slot) in p.slots.iter().enumerate() {
                // The n-th slot of a kind receives the publisher's n-th track of that kind.
                let nth = p.slots[..i].iter().filter(|s| s.kind == slot.kind).count();
                let wanted = publisher.and_then(|k| {
                    self.participants[k]
                        .tracks
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
        for (m, i, wanted) in changes {
            self.detach(m, i);
            if let Some(tk) = wanted {
                self.attach(now, m, i, tk);
            }
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
                remote_pts
                    .contains(&ours.pt())
                    .then(|| (theirs.pt(), ours.pt()))
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
        if p.connected {
            self.request_keyframe(now, tk);
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

    /// Mute or unmute one of `key`'s tracks ([`Command::SetMuted`]).
    fn set_muted(
        &mut self,
        now: Instant,
        key: PKey,
        track: TrackId,
        muted: bool,
    ) -> Result<ReplyValue, CommandError> {
        let tk = self.own_track(key, track)?;
        let t = &mut self.tracks[tk];
        if std::mem::replace(&mut t.label.muted, muted) == muted || muted {
            return Ok(ReplyValue::Done);
        }
        // Unmuted: what was kept from before the mute is stale, and every receiver resumes
        // as after a source switch, numbering continuous, video on the next keyframe.
        t.history.clear();
        for s in &t.subscribers {
            if let Some(p) = self.participants.get_mut(s.participant) {
                p.slots[s.slot].forwarder.switch_source();
            }
        }
        self.request_keyframe(now, tk);
        Ok(ReplyValue::Done)
    }

    /// A track ends (unpublished): everyone receiving it lets it go; WHEP followers move on
    /// when the caller retargets the room.
    pub(crate) fn drop_track(&mut self, _now: Instant, tk: TKey) {
        self.drop_track_now(tk);
    }

    fn drop_track_now(&mut self, tk: TKey) {
        if !self.tracks.contains(tk) {
            return;
        }
        self.release_track_for_rooms(tk);
        let track = self.tracks.remove(tk);
        for s in &track.subscribers {
            if let Some(q) = self.participants.get_mut(s.participant) {
                let slot = &mut q.slots[s.slot];
                slot.source = None;
                slot.forwarder.detach();
            }
        }
        if let Some(p) = self.participants.get_mut(track.publisher) {
            p.tracks.retain(|&t| t != tk);
            p.ssrc_tracks.retain(|&(_, t)| t != tk);
            self.out.event(CoreEvent::TrackUnpublished {
                room: p.room.clone(),
                participant: p.id,
                track: track.id,
            });
        }
    }

    /// Remove every doomed participant. Returns whether anything was removed.
    fn reap(&mut self, now: Instant) -> bool {
        if !std::mem::take(&mut self.out.reap) {
            return false;
        }
        let doomed: Vec<(PKey, LeaveReason)> = self
            .participants
            .iter()
            .filter_map(|(k, p)| p.doomed.map(|r| (k, r)))
            .collect();
        for (key, reason) in &doomed {
            self.remove(now, *key, *reason);
        }
        !doomed.is_empty()
    }

    fn remove(&mut self, now: Instant, key: PKey, reason: LeaveReason) {
        let Some(room) = self.unlink(key, reason) else {
            return;
        };
        if self.rooms.get(&room).is_some_and(|r| r.members.is_empty()) {
            self.rooms.remove(&room);
            self.out.event(CoreEvent::RoomClosed { room });
        } else {
            self.retarget(now, &room);
        }
    }

    /// Take a participant and what it owns out of the shard and its room, and report it.
    /// Whether the room closes and whom its followers follow next is left to the caller, so
    /// a replacement can take the participant's place first. Returns the participant's room.
    fn unlink(&mut self, key: PKey, reason: LeaveReason) -> Option<RoomName> {
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
            r.members.retain(|&k| k != key);
            r.publishers.retain(|&k| k != key);
        }
        Some(p.room)
    }
}

/// Whether a STUN datagram `accepts()` let through may reach the participant's `Rtc`: a
/// binding request must carry the integrity of the session's current ICE password.
/// `accepts()` skips that check for datagrams from the nominated address, and the `Rtc` then
/// drops a forged request without a trace; checking here (for addresses the shard already
/// knows) counts it as `rejected`. Other
/// STUN (indications, which carry no integrity) is left to the `Rtc`.
fn stun_authentic(
    p: &mut Participant,
    contents: &[u8],
    hmac: &'static dyn str0m::crypto::Sha1HmacProvider,
) -> bool {
    let Ok(message) = str0m::ice::StunMessage::parse(contents) else {
        return false;
    };
    if !message.is_binding_request() {
        return true;
    }
    // A clone of two short strings, once per request (consent checks come every few
    // seconds): STUN is not the media path.
    let local = p.rtc.direct_api().local_ice_credentials();
    message.verify(local.pass.as_bytes(), |key, parts| {
        hmac.sha1_hmac(key, parts)
    })
}

/// Decide for one kept packet and one subscriber, and write it to the subscriber's `Rtc` if
/// it goes. `Ok(switched)` when it went (`switched`: it started a new source), otherwise the
/// reason it did not, already counted.
fn forward_one(
    p: &mut Participant,
    s: &Subscriber,
    k: &Kept,
    video: bool,
    now: Instant,
    out: &mut Outbox,
) -> Result<bool, DropReason> {
    let slot = &mut p.slots[s.slot];
    let (Some(out_pt), Some(tx)) = (slot.map_pt(k.pt), slot.tx_ssrc) else {
        // It cannot go out, so it must not take a sequence number either: the subscriber
        // would wait for it, NACK it and never get it.
        slot.forwarder.skip(&k.meta);
        out.counters.drop(DropReason::CodecMismatch);
        return Err(DropReason::CodecMismatch);
    };
    let (seq, ts, switched) = match slot.forwarder.decide(&k.meta, now) {
        Decision::Drop(reason) => {
            out.counters.drop(reason);
            return Err(reason);
        }
        Decision::Forward { seq, ts, switched } => (seq, ts, switched),
    };
    let write = RtpWrite::new(out_pt, seq.into(), ts, k.timestamp, k.payload.clone())
        .marker(k.marker)
        .nackable(video)
        .ext_vals(k.ext.clone());
    let sent = p.with_rtc(s.participant, out, |rtc| {
        let mut api = rtc.direct_api();
        let stream = api.stream_tx(&tx)?;
        stream.write_rtp(write);
        Some(())
    });
    match sent {
        Some(Some(())) => out.counters.rtp_out += 1,
        Some(None) => out.counters.drop(DropReason::SubscriberNotReady),
        None => out.reap = true,
    }
    Ok(switched)
}

/// Whether `ssrc` is one of the publisher's: the main or the repair (RTX) SSRC of one of its
/// m-lines. Retransmissions arrive on the repair SSRC, which str0m does not look streams up
/// by; one found here is remembered so the next is a cache hit.
fn publisher_owns(p: &mut Participant, tracks: &Slab<Track>, ssrc: Ssrc) -> bool {
    if p.ssrc_tracks.iter().any(|(s, _)| *s == ssrc) {
        return true;
    }
    let mut api = p.rtc.direct_api();
    if api.stream_rx(&ssrc).is_some() {
        return true;
    }
    for &tk in &p.tracks {
        let Some(track) = tracks.get(tk) else {
            continue;
        };
        let repair = api
            .stream_rx_by_mid(track.mid, None)
            .and_then(|rx| rx.rtx());
        if repair == Some(ssrc) {
            if p.ssrc_tracks.len() < MAX_SSRCS_PER_PUBLISHER {
                p.ssrc_tracks.push((ssrc, tk));
            }
            return true;
        }
    }
    false
}

fn send_keyframe_request(
    track: &mut Track,
    participants: &mut Slab<Participant>,
    out: &mut Outbox,
) {
    let Some(ssrc) = track.ssrc else {
        // Nothing received yet: the first packets of a new publisher start with a keyframe
        // anyway; ask again at the next interval.
        track.keyframes.pending = true;
        return;
    };
    let Some(p) = participants.get_mut(track.publisher) else {
        return;
    };
    let sent = p.with_rtc(track.publisher, out, |rtc| {
        let mut api = rtc.direct_api();
        let rx = api.stream_rx(&ssrc)?;
        rx.request_keyframe(KeyframeRequestKind::Pli);
        Some(())
    });
    match sent {
        Some(Some(())) => out.counters.keyframe_requests += 1,
        Some(None) => {}
        None => out.reap = true,
    }
}

/// A well-mixed 64-bit function of a seed: deterministic starting numbers per slot.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
