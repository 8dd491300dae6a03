//! The shard: every room, participant and track one media worker owns, as one sans-IO state
//! machine. `handle_input(now, input)` mutates it; `poll_output()` drains transmits and
//! events until it returns the next timeout. No sockets, no clock, no locks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use manifold_api::{
    CommandError, CoreEvent, LeaveReason, MediaKind, ParticipantId, ReplyValue, RequestId,
    RoomName, RoomTraffic, SessionKind, ShardStats, TrackId,
};
use manifold_rtp::{DropReason, PacketClass};
use slab::Slab;
use str0m::bwe::BweKind;
use str0m::net::{Protocol, Receive};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Event, IceConnectionState, IceCreds};

use crate::command::{Command, Input};
use crate::config::ShardConfig;
use crate::keys::{PKey, RKey, TKey};
use crate::negotiate::SdpFragment;
use crate::outbox::{Outbox, Output};
use crate::overload::Overload;
use crate::participant::Participant;
use crate::relay::Remote;
use crate::room::Room;
use crate::stats::Counters;
use crate::track::Track;

/// Most remote candidates one session may trickle over its life (PATCH, room-protocol
/// `candidate`): str0m keeps every one, and an ICE-lite server needs few.
pub const MAX_TRICKLED_CANDIDATES: usize = 64;

/// Most timeouts one subscriber's `Rtc` is given in one pass, one per packet its pacer
/// releases (a keyframe to a subscriber is a few dozen); the rest leave on the next pass.
const MAX_FOLLOW_UPS: usize = 64;

/// A timeout an `Rtc` asks for within this of the one it was just given is a pacer
/// follow-up (str0m asks for it one microsecond later) and is given at once.
const FOLLOW_UP: Duration = Duration::from_micros(5);

/// One worker's rooms, participants and tracks.
pub struct Shard {
    pub(crate) config: ShardConfig,
    /// This shard's index among the node's workers (relays name shards by it).
    pub(crate) index: u16,
    pub(crate) participants: Slab<Participant>,
    pub(crate) tracks: Slab<Track>,
    /// Every track here, local and relayed, by id.
    pub(crate) track_index: HashMap<TrackId, TKey>,
    /// Publishers on other shards whose tracks are relayed here.
    pub(crate) remotes: Slab<Remote>,
    pub(crate) remote_by_id: HashMap<ParticipantId, RKey>,
    pub(crate) rooms: HashMap<RoomName, Room>,
    pub(crate) by_id: HashMap<ParticipantId, PKey>,
    // Keys an attacker controls live in std's SipHash maps, which resist hash flooding.
    // A remote address is one per transport: a client's UDP port and its ICE-TCP
    // connection's port are different flows even when their numbers match.
    pub(crate) by_addr: HashMap<(Protocol, SocketAddr), PKey>,
    pub(crate) by_ufrag: HashMap<String, PKey>,
    pub(crate) out: Outbox,
    /// What the shard sheds because its worker cannot keep up.
    pub(crate) overload: Overload,
    pub(crate) next_housekeeping: Instant,
    pub(crate) next_track: u64,
    // Reused scratch space for timer processing.
    pub(crate) due: Vec<PKey>,
    // STUN message integrity, checked here for requests the `Rtc` would take on trust.
    pub(crate) stun_hmac: &'static dyn str0m::crypto::Sha1HmacProvider,
}

impl Shard {
    /// An empty shard starting at `now`. `shard_index` (below 64) keeps track ids unique
    /// across shards and names this shard in relays between them.
    pub fn new(config: ShardConfig, now: Instant, shard_index: u16) -> Self {
        let config_salt = config.track_id_salt;
        Shard {
            next_housekeeping: now + config.housekeeping_interval,
            overload: Overload::new(config.overload.clone()),
            config,
            index: shard_index,
            participants: Slab::new(),
            tracks: Slab::new(),
            track_index: HashMap::new(),
            remotes: Slab::new(),
            remote_by_id: HashMap::new(),
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
            next_track: u64::from(config_salt) << 48 | u64::from(shard_index) << 40,
            due: Vec::new(),
            stun_hmac: str0m::crypto::from_feature_flags().sha1_hmac_provider,
        }
    }

    /// Feed one input. Afterwards drain [`Shard::poll_output`] until it returns a timeout.
    ///
    /// Never inlined (nor [`Shard::poll_output`]): they are the shard's whole cost, and
    /// `scripts/instructions.sh` counts instructions inside these two symbols.
    #[inline(never)]
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Datagram {
                source,
                destination,
                contents,
                proto,
            } => self.handle_datagram(now, source, destination, contents, proto),
            Input::Timeout => self.handle_timeout(now),
            Input::Backlog(backlog) => self.handle_backlog(now, backlog),
            Input::Idle(idle) => self.overload.note_idle(now, idle),
            Input::Command(c) => self.handle_command(now, c),
            Input::Relay { from, message } => self.handle_relay(now, from, message),
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
    #[inline(never)]
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
        s.shed_level = u64::from(self.overload.level().as_u8());
        s.overload_episodes = self.overload.episodes();
        s.overload_spikes = self.overload.spikes();
        s.video_shed_pct = ((1.0 - self.overload.video_share()) * 100.0).round() as u64;
        s.participants = self.participants.len() as u64;
        s.relayed_tracks = self
            .tracks
            .iter()
            .filter(|(_, t)| t.relay_in.is_some())
            .count() as u64;
        s.tracks = self.tracks.len() as u64 - s.relayed_tracks;
        s.subscriptions = self
            .tracks
            .iter()
            .map(|(_, t)| t.subscribers.len() as u64)
            .sum();
        s
    }

    /// Bytes through each room here: its members' sessions and those that left it.
    pub fn traffic(&self) -> Vec<RoomTraffic> {
        self.rooms
            .iter()
            .map(|(name, room)| {
                let (mut bytes_in, mut bytes_out) = room.departed_bytes;
                for &k in room.members() {
                    if let Some(p) = self.participants.get(k) {
                        bytes_in += p.bytes_in;
                        bytes_out += p.bytes_out;
                    }
                }
                RoomTraffic {
                    room: name.to_string(),
                    bytes_in,
                    bytes_out,
                }
            })
            .collect()
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
        proto: Protocol,
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
                .or_else(|| self.by_addr.get(&(proto, source))),
            _ => self.by_addr.get(&(proto, source)),
        };
        let Some(&key) = key else {
            counters.drop(DropReason::UnknownSource);
            return;
        };
        let Ok(receive) = Receive::new(proto, source, destination, contents) else {
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
        let known = self.by_addr.get(&(proto, source)) == Some(&key);
        if !accepted
            || (class == PacketClass::Stun && known && !stun_authentic(p, contents, self.stun_hmac))
        {
            counters.drop(DropReason::Rejected);
            return;
        }
        p.bytes_in += contents.len() as u64;
        if class == PacketClass::Stun {
            if let Some(evicted) = p.learn_addr((proto, source))
                && self.by_addr.get(&evicted) == Some(&key)
            {
                self.by_addr.remove(&evicted);
            }
            self.by_addr.insert((proto, source), key);
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
                    && !p.owns_ssrc(&self.tracks, ssrc)
                {
                    self.out.counters.drop(DropReason::UnknownSsrc);
                }
            }
        }
    }

    /// The worker's backlog: shed more, or less (`overload.rs`). The fan-out applies the
    /// share of video kept packet by packet; this applies it at once to every video
    /// subscription, asks for keyframes for those that get video back, and tells every
    /// bandwidth estimator what is sent now.
    fn handle_backlog(&mut self, now: Instant, backlog: std::time::Duration) {
        let spikes = self.overload.spikes();
        let change = self.overload.observe(now, backlog);
        if self.overload.spikes() > spikes {
            tracing::info!(
                backlog_ms = backlog.as_millis() as u64,
                load = self.overload.load(),
                "media worker behind, but its load drains it: nothing shed"
            );
        }
        let Some(change) = change else {
            return;
        };
        if change.from != change.to {
            tracing::warn!(
                from = ?change.from,
                to = ?change.to,
                video_share = change.share,
                backlog_ms = backlog.as_millis() as u64,
                "media worker overloaded: shedding level changed"
            );
        } else {
            tracing::debug!(
                video_share = change.share,
                backlog_ms = backlog.as_millis() as u64,
                "video share kept changed"
            );
        }
        let video: Vec<TKey> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.kind == MediaKind::Video && !t.subscribers.is_empty())
            .map(|(k, _)| k)
            .collect();
        for tk in video {
            let track = &self.tracks[tk];
            let kept = self.overload.video_kept(track.subscribers.len());
            for (i, s) in track.subscribers.iter().enumerate() {
                if let Some(p) = self.participants.get_mut(s.participant) {
                    p.slots[s.slot].keep_video(i < kept);
                }
            }
            self.request_wanted_keyframes(now, tk);
        }
        let keys: Vec<PKey> = self.participants.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.allocate(now, key);
            self.report_stream_states(key);
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
            // str0m's pacer releases one packet per timeout and asks for the next one a
            // microsecond later: that one is given at once, so all a subscriber was written
            // in this batch (a frame's packets) leaves with it, not one packet per pass.
            let mut at = now;
            for _ in 0..MAX_FOLLOW_UPS {
                let input = str0m::Input::Timeout(at);
                if p.with_rtc(key, &mut self.out, |rtc| rtc.handle_input(input))
                    .is_none()
                {
                    self.out.reap = true;
                    break;
                }
                match p.timer {
                    Some(t) if t <= at + FOLLOW_UP => at = t.max(at),
                    _ => break,
                }
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
                if !p.connected {
                    if p.ice_connected_at.is_some() {
                        self.out.counters.dtls_failures += 1;
                    } else {
                        self.out.counters.ice_failures += 1;
                    }
                }
                tracing::info!(participant = %p.id, connected = p.connected, "ICE timed out");
                p.doom(LeaveReason::Timeout);
                self.out.reap = true;
            }
        }
        // Keep asking while someone waits: a lost PLI must not freeze a subscriber. And send
        // what was coalesced: a request that came within the interval after the last one is
        // pending until the interval has passed, whether or not a forwarder waits.
        let video: Vec<TKey> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.kind == MediaKind::Video)
            .map(|(k, _)| k)
            .collect();
        for tk in video {
            self.request_wanted_keyframes(now, tk);
        }
        self.quality_tick(now);
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
                self.out
                    .reply(request, Ok(ReplyValue::Stats(Box::new(stats))));
            }
            Command::Traffic { request } => {
                let traffic = self.traffic();
                self.out.reply(request, Ok(ReplyValue::Traffic(traffic)));
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
            Command::SetVideoQuality {
                request,
                participant,
                track,
                quality,
                size,
            } => self.room_command(request, participant, |shard, key| {
                shard.set_video_quality(now, key, track, quality, size)
            }),
            Command::RoomShards { room, shards } => self.room_shards(now, room, shards),
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
                if !p.connected && p.disconnected_since.is_none() {
                    let counters = &mut self.out.counters;
                    counters
                        .connect_time
                        .observe(now.saturating_duration_since(p.joined_at));
                    if let Some(at) = p.ice_connected_at {
                        counters
                            .dtls_handshake
                            .observe(now.saturating_duration_since(at));
                    }
                }
                p.connected = true;
                p.disconnected_since = None;
                tracing::info!(participant = %p.id, room = %p.room, "connected");
                self.out.event(CoreEvent::ParticipantConnected {
                    room: p.room.clone(),
                    participant: p.id,
                });
                let sources: Vec<TKey> = p.slots.iter().filter_map(|s| s.source).collect();
                for tk in sources {
                    self.request_wanted_keyframes(now, tk);
                }
            }
            Event::IceConnectionStateChange(state) => match state {
                IceConnectionState::Disconnected => {
                    p.disconnected_since.get_or_insert(now);
                }
                IceConnectionState::Connected | IceConnectionState::Completed => {
                    p.disconnected_since = None;
                    p.ice_connected_at.get_or_insert(now);
                }
                _ => {}
            },
            Event::RtpPacket(packet) => self.forward(now, key, packet),
            Event::KeyframeRequest(req) => {
                // A subscriber's request goes to the layer it receives (or waits for).
                let source = p.slots.iter().find(|s| s.mid == req.mid).and_then(|s| {
                    let layer = s.forwarder.current().or(s.forwarder.target())?;
                    Some((s.source?, layer))
                });
                if let Some((tk, layer)) = source {
                    self.request_keyframe(now, tk, layer);
                }
            }
            Event::MediaIngressStats(stats) => {
                self.out.counters.rtcp_feedback(
                    &mut p.tallies,
                    (stats.mid, stats.rid, true),
                    (stats.nacks, stats.plis, stats.firs),
                );
            }
            Event::MediaEgressStats(stats) => {
                self.out.counters.rtcp_feedback(
                    &mut p.tallies,
                    (stats.mid, stats.rid, false),
                    (stats.nacks, stats.plis, stats.firs),
                );
                if let Some(loss) = stats.loss
                    && p.slots
                        .iter()
                        .any(|s| s.mid == stats.mid && s.kind == MediaKind::Video)
                    && p.loss_ceiling.report(loss, p.sent_rate)
                {
                    self.allocate(now, key);
                }
            }
            Event::EgressBitrateEstimate(kind) => {
                let estimate = match kind {
                    BweKind::Twcc { estimate, .. } => estimate,
                    BweKind::Remb { estimate, .. } => estimate,
                    _ => return,
                };
                p.estimate = Some(estimate.as_u64());
                self.allocate(now, key);
            }
            Event::Closed => {
                p.doom(LeaveReason::PeerClosed);
                self.out.reap = true;
            }
            _ => {}
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
