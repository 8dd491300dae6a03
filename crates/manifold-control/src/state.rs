//! The control plane's shared state: which worker owns which room, which sessions exist,
//! and the replies the HTTP handlers are waiting for from the media workers.
//!
//! None of this is on the media path; a mutex per map is plenty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use manifold_api::command::{Command, Negotiator};
use manifold_api::protocol::{CloseReason, ParticipantInfo, ServerMessage, TrackInfo};
use manifold_api::{
    CommandError, CoreEvent, Identity, LeaveReason, ParticipantId, ReplyValue, RequestId, RoomName,
    SessionKind, ShardStats,
};
use manifold_io::{EventSink, Undelivered, WorkerHandle};
use tokio::sync::{mpsc, oneshot};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::federation::LocalChange;
use crate::listener::{ListenerCounters, ListenerLimits};
use crate::roster::{Member, Roster, TokenBucket};
use crate::webhooks::WebhookEvent;

/// Settings of the HTTP surface.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Largest request body accepted (SDP offers, PATCH fragments), in bytes.
    pub max_body_bytes: usize,
    /// Rooms the whole server may hold.
    pub max_rooms: usize,
    /// How long a handler waits for a media worker's reply.
    pub reply_timeout: Duration,
    /// Largest room-protocol WebSocket message, in bytes.
    pub max_ws_message_bytes: usize,
    /// How long a room participant whose socket dropped may take to resume.
    pub reconnect_grace: Duration,
    /// A room-protocol socket must have joined within this of opening.
    pub join_timeout: Duration,
    /// Room-protocol sockets open at once that have not joined yet.
    pub max_unjoined_sockets: usize,
    /// What one room-protocol socket's outgoing queue may hold.
    pub outbox: crate::outbox::OutboxLimits,
    /// Room-protocol messages a socket may send per second (every type), sustained.
    pub ws_message_rate: f64,
    /// ... and in a burst.
    pub ws_message_burst: f64,
    /// `update` messages (name, metadata: fanned out to the room) per second, sustained.
    pub update_rate: f64,
    /// ... and in a burst.
    pub update_burst: f64,
    /// Bounds on HTTP connections.
    pub listener: ListenerLimits,
    /// Sessions (WHIP, WHEP, room) the whole server may hold, joining or joined.
    pub max_sessions: usize,
    /// New sessions one client address may start per second, sustained...
    pub session_rate_per_ip: u32,
    /// ... and in a burst.
    pub session_burst_per_ip: u32,
    /// A room's sessions stay on its first worker until that worker holds this many of
    /// them; later ones go to the least loaded worker (tracks are relayed between the
    /// room's workers). 0 spreads every room from its first session.
    pub room_spread_after: usize,
    /// Sessions one room may hold, over all workers (each worker checks its own share too).
    pub max_participants_per_room: usize,
    /// Where to send webhooks (none by default).
    pub webhooks: crate::webhooks::WebhookConfig,
    /// TURN servers handed to room-protocol clients, with REST credentials; `None`: none.
    pub turn: Option<crate::turn::TurnConfig>,
    /// Rooms `/metrics` lists with per-room series (the largest); the rest are counted in
    /// `manifold_metrics_rooms_omitted`.
    pub metrics_max_rooms: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            max_body_bytes: 64 * 1024,
            max_rooms: 1000,
            reply_timeout: Duration::from_secs(5),
            max_ws_message_bytes: 64 * 1024,
            reconnect_grace: Duration::from_secs(10),
            join_timeout: Duration::from_secs(10),
            max_unjoined_sockets: 1024,
            outbox: crate::outbox::OutboxLimits::default(),
            ws_message_rate: 20.0,
            ws_message_burst: 50.0,
            update_rate: 2.0,
            update_burst: 5.0,
            listener: ListenerLimits::default(),
            max_sessions: 4096,
            session_rate_per_ip: 10,
            session_burst_per_ip: 40,
            room_spread_after: 32,
            max_participants_per_room: 100,
            webhooks: Default::default(),
            turn: None,
            metrics_max_rooms: crate::metrics::DEFAULT_MAX_ROOMS,
        }
    }
}

/// A WHIP or WHEP session the control plane knows about.
#[derive(Clone, Debug)]
pub struct SessionEntry {
    /// Its room.
    pub room: RoomName,
    /// The worker that owns the session.
    pub worker: u16,
    /// WHIP or WHEP.
    pub kind: SessionKind,
    /// Current ETag (changes on ICE restart).
    pub etag: String,
    /// The client's current ICE ufrag, to tell trickle from restart.
    pub remote_ufrag: Option<String>,
    /// The identity whose token created it; only that identity (or an admin) may change or
    /// end it. `None` for a session created without a token (dev mode).
    pub owner: Option<Identity>,
    /// WHIP/WHEP: the secret last segment of its `Location`; empty for room sessions.
    pub resource: String,
}

struct RoomEntry {
    /// Its first worker: new sessions go there until it holds `room_spread_after` of them.
    worker: u16,
    /// Sessions in the room, counting ones still joining.
    sessions: usize,
    /// Of those, per worker (index = worker).
    per_worker: Vec<u32>,
    /// Other nodes hold members of it (`bridge.rs`).
    remote: bool,
}

impl RoomEntry {
    /// The workers holding its sessions, bit per worker, and the bridge's bit when other
    /// nodes hold it too.
    fn shards(&self) -> u64 {
        let local = self
            .per_worker
            .iter()
            .enumerate()
            .filter(|(i, n)| **n > 0 && *i < usize::from(manifold_io::BRIDGE))
            .fold(0, |m, (i, _)| m | 1u64 << i);
        if self.remote && local != 0 {
            local | 1u64 << manifold_io::BRIDGE
        } else {
            local
        }
    }
}

#[derive(Default)]
struct Directory {
    rooms: HashMap<RoomName, RoomEntry>,
    sessions: HashMap<ParticipantId, SessionEntry>,
    /// WHIP/WHEP resource secret → session.
    resources: HashMap<String, ParticipantId>,
}

type Pending = HashMap<RequestId, oneshot::Sender<Result<ReplyValue, CommandError>>>;

/// Everything the handlers share.
pub struct Inner {
    /// Settings.
    pub config: ControlConfig,
    /// The cluster this node is part of (alone, in memory, by default).
    pub cluster: crate::cluster::ClusterHandle,
    /// Media workers.
    pub workers: Vec<WorkerHandle>,
    /// Builds `Rtc`s for new sessions.
    pub factory: Arc<dyn Negotiator>,
    /// Token verification.
    pub auth: Auth,
    /// What the HTTP listener refused or closed.
    pub listener_counters: Arc<ListenerCounters>,
    /// Room-protocol sockets that have not joined yet.
    pub unjoined: Arc<crate::ws::Unjoined>,
    /// New sessions per client address.
    session_starts: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Sessions refused by that limit.
    pub session_starts_refused: AtomicU64,
    /// Which other nodes hold which rooms (`bridge.rs`).
    pub bridge: crate::bridge::BridgeState,
    /// The workers' load, read with every heartbeat (`placement.rs`).
    pub load: crate::placement::LoadMeter,
    /// Webhooks about this node's rooms (`webhooks.rs`); started by the binary.
    pub webhooks: crate::webhooks::Webhooks,
    /// Rooms an administrator created, with their options (`rooms.rs`).
    pub created_rooms: crate::rooms::CreatedRooms,
    /// Changes the process's log filter at run time (`PUT /admin/log-level`); unset where
    /// the process did not hand one over.
    pub log_filter: std::sync::OnceLock<Box<dyn LogFilter>>,
    /// The listener's certificate when it speaks HTTPS (`tls.rs`); set by the binary.
    pub tls: std::sync::OnceLock<crate::tls::Tls>,
    /// Join and room-protocol message latencies (`metrics.rs`).
    pub histograms: crate::metrics::ControlHistograms,
    directory: Mutex<Directory>,
    roster: Mutex<Roster>,
    pending: Mutex<Pending>,
    next_request: AtomicU64,
    draining: AtomicBool,
}

/// The process's log filter, as `tracing_subscriber`'s reload handle changes it.
pub trait LogFilter: Send + Sync {
    /// The filter now.
    fn current(&self) -> String;
    /// Replace it with `directives` (`EnvFilter` syntax); why not, if it cannot.
    fn set(&self, directives: &str) -> Result<(), String>;
}

/// Cheap-to-clone handle on the shared state.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Receives the workers' events; hand it to [`AppState::run_events`].
pub struct EventReceiver(mpsc::Receiver<(u16, CoreEvent)>);

/// An [`EventSink`] feeding a bounded tokio channel. When the channel is full the event is
/// handed back and the worker holds it for a later turn: the media thread never waits, and
/// no event is lost (a lost `ParticipantLeft` would leave the directory wrong for good).
pub struct ChannelSink(mpsc::Sender<(u16, CoreEvent)>);

impl EventSink for ChannelSink {
    fn deliver(&self, worker: u16, event: CoreEvent) -> Result<(), Undelivered> {
        self.0.try_send((worker, event)).map_err(|e| match e {
            mpsc::error::TrySendError::Full((_, event)) => Undelivered::Full(event),
            mpsc::error::TrySendError::Closed(_) => Undelivered::Closed,
        })
    }
}

/// A bounded channel from the workers to the control plane.
pub fn event_channel(capacity: usize) -> (Arc<ChannelSink>, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    (Arc::new(ChannelSink(tx)), EventReceiver(rx))
}

impl AppState {
    /// Shared state over `workers`.
    pub fn new(
        config: ControlConfig,
        workers: Vec<WorkerHandle>,
        factory: Arc<dyn Negotiator>,
        auth: Auth,
        cluster: crate::cluster::ClusterHandle,
    ) -> Self {
        let quota = governor::Quota::per_second(
            std::num::NonZeroU32::new(config.session_rate_per_ip.max(1)).expect("at least 1"),
        )
        .allow_burst(
            std::num::NonZeroU32::new(config.session_burst_per_ip.max(1)).expect("at least 1"),
        );
        AppState(Arc::new(Inner {
            session_starts: governor::RateLimiter::keyed(quota),
            session_starts_refused: AtomicU64::new(0),
            listener_counters: Arc::default(),
            unjoined: crate::ws::Unjoined::new(config.max_unjoined_sockets),
            webhooks: crate::webhooks::Webhooks::new(&config.webhooks, cluster.node.as_str()),
            config,
            cluster,
            workers,
            factory,
            auth,
            bridge: Default::default(),
            load: Default::default(),
            created_rooms: Default::default(),
            log_filter: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
            histograms: Default::default(),
            directory: Mutex::new(Directory::default()),
            roster: Mutex::new(Roster::default()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            draining: AtomicBool::new(false),
        }))
    }

    /// Process worker events until every sender is gone: resolve replies, forget sessions
    /// that ended.
    pub async fn run_events(self, mut rx: EventReceiver) {
        while let Some((worker, event)) = rx.0.recv().await {
            match event {
                CoreEvent::Reply { request, result } => {
                    let waiter = lock(&self.pending).remove(&request);
                    if let Some(tx) = waiter {
                        let _ = tx.send(result);
                    }
                }
                CoreEvent::ParticipantLeft {
                    participant,
                    reason,
                    ..
                } => {
                    tracing::debug!(%participant, worker, reason = reason.as_str(), "session ended");
                    // Before `forget`, which may raise the room's `room_finished`.
                    self.webhook_left(participant, reason);
                    self.forget(participant);
                    self.member_left(participant, reason);
                }
                CoreEvent::ParticipantConnected { participant, .. } => {
                    tracing::debug!(%participant, worker, "session connected");
                }
                CoreEvent::ParticipantJoined {
                    room,
                    participant,
                    identity,
                    kind,
                } => self.member_joined(worker, room, participant, identity, kind),
                CoreEvent::TrackPublished {
                    room,
                    participant,
                    track,
                    kind,
                    source,
                    name,
                    muted,
                    cid,
                } => {
                    let info = TrackInfo {
                        id: track,
                        kind,
                        source,
                        name,
                        muted,
                    };
                    self.track_published(&room, participant, info, cid);
                }
                CoreEvent::TrackUnpublished {
                    room,
                    participant,
                    track,
                } => {
                    let mut roster = self.roster();
                    if let Some(m) = roster.get_mut(participant) {
                        let had = m.info.tracks.len();
                        m.info.tracks.retain(|t| t.id != track);
                        self.federate(&room, LocalChange::TrackUnpublished(&m.info, track));
                        if m.info.tracks.len() < had {
                            self.webhooks
                                .emit(&room, WebhookEvent::TrackUnpublished(&m.info, track));
                        }
                    }
                    roster.broadcast(
                        &room,
                        None,
                        &ServerMessage::TrackUnpublished { participant, track },
                    );
                }
                CoreEvent::Offer {
                    participant,
                    offer_id,
                    sdp,
                    mids,
                } => self.roster().send(
                    participant,
                    ServerMessage::Offer {
                        offer_id,
                        sdp,
                        mids,
                    },
                ),
                CoreEvent::StreamState {
                    participant,
                    track,
                    state,
                    quality,
                } => self.roster().send(
                    participant,
                    ServerMessage::StreamState {
                        track,
                        state,
                        quality,
                    },
                ),
                CoreEvent::Dynacast {
                    participant,
                    track,
                    active,
                } => self
                    .roster()
                    .send(participant, ServerMessage::Dynacast { track, active }),
                CoreEvent::SpeakersChanged { room, speakers }
                    if self.room_voice(&room).is_none_or(|w| w == worker) =>
                {
                    let mut roster = self.roster();
                    roster.set_speakers(&room, &speakers);
                    roster.broadcast(&room, None, &ServerMessage::SpeakersChanged { speakers });
                }
                _ => {}
            }
        }
    }

    /// Send `command` to `worker` and wait for its reply.
    pub async fn request(
        &self,
        worker: u16,
        command: impl FnOnce(RequestId) -> Command,
    ) -> Result<ReplyValue, ApiError> {
        self.request_raw(worker, command)
            .await?
            .map_err(ApiError::from)
    }

    /// Send `command` and wait for its reply, keeping the shard's refusal apart from
    /// transport failures (the room protocol names each refusal precisely).
    pub async fn request_raw(
        &self,
        worker: u16,
        command: impl FnOnce(RequestId) -> Command,
    ) -> Result<Result<ReplyValue, CommandError>, ApiError> {
        let id = RequestId(self.next_request.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let handle = self
            .workers
            .get(usize::from(worker))
            .ok_or_else(|| ApiError::Internal(format!("no worker {worker}")))?;
        if let Err(e) = handle.send(command(id)) {
            lock(&self.pending).remove(&id);
            return Err(ApiError::Unavailable(e.to_string()));
        }
        match tokio::time::timeout(self.config.reply_timeout, rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(ApiError::Unavailable("the media worker stopped".into())),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(ApiError::Unavailable(
                    "the media worker did not answer in time".into(),
                ))
            }
        }
    }

    /// The room roster.
    pub fn roster(&self) -> MutexGuard<'_, Roster> {
        lock(&self.roster)
    }

    fn member_joined(
        &self,
        worker: u16,
        room: RoomName,
        participant: ParticipantId,
        identity: Identity,
        kind: SessionKind,
    ) {
        let mut roster = self.roster();
        let info = match kind {
            SessionKind::Room => {
                let Some(m) = roster.get_mut(participant) else {
                    return;
                };
                m.announced = true;
                m.info.clone()
            }
            // A WHIP publisher is a member others see, without a socket of its own.
            SessionKind::Whip => {
                let info = ParticipantInfo {
                    id: participant,
                    name: identity.as_str().to_owned(),
                    identity,
                    metadata: serde_json::Value::Null,
                    tracks: Vec::new(),
                };
                roster.insert(Member {
                    info: info.clone(),
                    room: room.clone(),
                    worker,
                    tx: None,
                    generation: 0,
                    resume_token: String::new(),
                    protocol: false,
                    chat: TokenBucket::new(0.0, 0.0, std::time::Instant::now()),
                    updates: TokenBucket::new(0.0, 0.0, std::time::Instant::now()),
                    publishing: Default::default(),
                    announced: true,
                    may_publish: true,
                    may_subscribe: false,
                });
                info
            }
            // Players are invisible to the room.
            _ => return,
        };
        self.federate(&room, LocalChange::Joined(&info));
        self.webhooks
            .emit(&room, WebhookEvent::ParticipantJoined(&info));
        roster.broadcast(
            &room,
            Some(participant),
            &ServerMessage::ParticipantJoined { participant: info },
        );
    }

    fn track_published(
        &self,
        room: &RoomName,
        participant: ParticipantId,
        info: TrackInfo,
        cid: Option<String>,
    ) {
        let mut roster = self.roster();
        let Some(m) = roster.get_mut(participant) else {
            return;
        };
        let request = cid.as_ref().and_then(|c| m.publishing.remove(c));
        m.info.tracks.push(info.clone());
        self.federate(room, LocalChange::TrackPublished(&m.info, &info));
        self.webhooks
            .emit(room, WebhookEvent::TrackPublished(&m.info, &info));
        if let (Some(cid), Some(id)) = (cid, request) {
            roster.send(
                participant,
                ServerMessage::Published {
                    id,
                    cid,
                    track: info.id,
                },
            );
        }
        roster.broadcast(
            room,
            Some(participant),
            &ServerMessage::TrackPublished {
                participant,
                track: info,
            },
        );
    }

    /// Raise `participant_left` for a member others saw.
    fn webhook_left(&self, participant: ParticipantId, reason: LeaveReason) {
        if !self.webhooks.enabled() {
            return;
        }
        let roster = self.roster();
        if let Some(m) = roster.get(participant).filter(|m| m.announced) {
            self.webhooks
                .emit(&m.room, WebhookEvent::ParticipantLeft(&m.info, reason));
        }
    }

    fn member_left(&self, participant: ParticipantId, reason: LeaveReason) {
        let mut roster = self.roster();
        let Some(m) = roster.remove(participant) else {
            return;
        };
        if let Some(tx) = &m.tx {
            let (why, text) = match reason {
                LeaveReason::Replaced => (
                    CloseReason::Replaced,
                    "a newer session of your identity joined",
                ),
                LeaveReason::Kicked => (CloseReason::Kicked, "removed by an administrator"),
                LeaveReason::RoomClosed => (CloseReason::RoomClosed, "the room was closed"),
                LeaveReason::Shutdown => (CloseReason::Draining, "the server is shutting down"),
                LeaveReason::Timeout => (CloseReason::Timeout, "the media connection timed out"),
                _ => (CloseReason::Left, "the session ended"),
            };
            tx.close(
                1000,
                &ServerMessage::Closing {
                    reason: why,
                    message: text.into(),
                },
            );
        }
        if m.announced {
            self.federate(&m.room, LocalChange::Left(participant, reason));
            roster.broadcast(
                &m.room,
                None,
                &ServerMessage::ParticipantLeft {
                    participant,
                    reason,
                },
            );
        }
    }

    /// Send a command that has no reply.
    pub fn tell(&self, worker: u16, command: Command) -> Result<(), ApiError> {
        let handle = self
            .workers
            .get(usize::from(worker))
            .ok_or_else(|| ApiError::Internal(format!("no worker {worker}")))?;
        handle
            .send(command)
            .map_err(|e| ApiError::Unavailable(e.to_string()))
    }

    /// May a client at `from` start a session now? Its address has a token bucket
    /// (`session_rate_per_ip`, `session_burst_per_ip`); the buckets of addresses not seen
    /// for a while are forgotten by [`AppState::forget_idle_clients`].
    pub fn admit_session(&self, from: crate::listener::ClientAddr) -> Result<(), ApiError> {
        if self.session_starts.check_key(&from.key()).is_ok() {
            return Ok(());
        }
        self.session_starts_refused.fetch_add(1, Ordering::Relaxed);
        Err(ApiError::LimitReached(format!(
            "at most {} new sessions per second from one address; try again shortly",
            self.config.session_rate_per_ip
        )))
    }

    /// Drop the session-rate state of addresses whose buckets are full again, so it holds
    /// only addresses active within the last burst's worth of time.
    pub fn forget_idle_clients(&self) {
        self.session_starts.retain_recent();
        self.session_starts.shrink_to_fit();
    }

    /// Reserve a place for a new session in `room`: picks the room's worker (the least
    /// loaded one for a new room) and records the session, so events about it can never
    /// arrive before it is known.
    pub fn reserve(
        &self,
        id: ParticipantId,
        entry_for: impl FnOnce(u16) -> SessionEntry,
    ) -> Result<u16, ApiError> {
        if self.is_draining() {
            return Err(ApiError::Unavailable(
                "the server is draining and accepts no new sessions".into(),
            ));
        }
        let mut dir = lock(&self.directory);
        if dir.sessions.len() >= self.config.max_sessions {
            return Err(ApiError::Unavailable(format!(
                "the server holds {} sessions, its limit",
                self.config.max_sessions
            )));
        }
        let probe = entry_for(0);
        let workers = self.workers.len().max(1);
        let worker = match dir.rooms.get(&probe.room) {
            Some(r) => {
                // The same identity's older session of the same kind is replaced by the
                // newer one on its worker, which must therefore be the same.
                let older = probe.owner.as_ref().and_then(|owner| {
                    dir.sessions
                        .values()
                        .find(|s| {
                            s.room == probe.room
                                && s.kind == probe.kind
                                && s.owner.as_ref() == Some(owner)
                        })
                        .map(|s| s.worker)
                });
                let home = r
                    .per_worker
                    .get(usize::from(r.worker))
                    .copied()
                    .unwrap_or(0);
                let limit = self
                    .created_rooms
                    .get(&probe.room)
                    .and_then(|o| o.max_participants)
                    .map_or(self.config.max_participants_per_room, |m| {
                        (m as usize).min(self.config.max_participants_per_room)
                    });
                if older.is_none() && r.sessions >= limit {
                    return Err(ApiError::LimitReached(format!(
                        "room {} has {} participants, the limit is {limit}",
                        probe.room, r.sessions
                    )));
                }
                match older {
                    Some(w) => w,
                    None if (home as usize) < self.config.room_spread_after => r.worker,
                    None => least_loaded(&dir, workers),
                }
            }
            None => {
                if dir.rooms.len() >= self.config.max_rooms {
                    return Err(ApiError::Unavailable(format!(
                        "the server holds {} rooms, its limit",
                        self.config.max_rooms
                    )));
                }
                least_loaded(&dir, workers)
            }
        };
        let new_room = !dir.rooms.contains_key(&probe.room);
        let entry = dir.rooms.entry(probe.room.clone()).or_insert(RoomEntry {
            worker,
            sessions: 0,
            per_worker: vec![0; workers],
            remote: false,
        });
        let before = entry.shards();
        entry.sessions += 1;
        if let Some(n) = entry.per_worker.get_mut(usize::from(worker)) {
            *n += 1;
        }
        let after = entry.shards();
        if !probe.resource.is_empty() {
            dir.resources.insert(probe.resource.clone(), id);
        }
        let room = probe.room.clone();
        dir.sessions.insert(id, SessionEntry { worker, ..probe });
        if new_room {
            // Under the directory's lock, so that a room released and held again at once
            // raises `room_finished` and `room_started` in that order.
            self.webhooks.emit(&room, WebhookEvent::RoomStarted);
        }
        drop(dir);
        if new_room {
            crate::bridge::room_held(self, &room);
        }
        self.room_shards_changed(&room, before, after);
        Ok(worker)
    }

    /// Whether other nodes hold members of `room` (`bridge.rs`). Saying yes again makes the
    /// room's workers send their tracks' descriptions to the bridge again, for a newcomer.
    pub fn set_room_remote(&self, room: &RoomName, remote: bool) {
        let mut dir = lock(&self.directory);
        let Some(r) = dir.rooms.get_mut(room) else {
            return;
        };
        let before = r.shards();
        r.remote = remote;
        let after = r.shards();
        drop(dir);
        if remote && before == after {
            self.tell_room_shards(room, before, after);
        } else {
            self.room_shards_changed(room, before, after);
        }
    }

    /// The workers holding sessions of `room`.
    pub fn room_workers(&self, room: &RoomName) -> Vec<u16> {
        let dir = lock(&self.directory);
        dir.rooms.get(room).map_or_else(Vec::new, |r| {
            r.per_worker
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, _)| i as u16)
                .collect()
        })
    }

    /// Whether this node holds sessions of `room`.
    pub fn holds_room(&self, room: &RoomName) -> bool {
        lock(&self.directory).rooms.contains_key(room)
    }

    /// Every room this node holds sessions of.
    pub fn held_rooms(&self) -> Vec<RoomName> {
        lock(&self.directory).rooms.keys().cloned().collect()
    }

    /// Tell the workers concerned that the set of workers holding `room` went from
    /// `before` to `after`: each relays the room's tracks to the others. A room on one
    /// worker needs no word (it relays nothing), until it spans two.
    fn room_shards_changed(&self, room: &RoomName, before: u64, after: u64) {
        if before == after || (before.count_ones() < 2 && after.count_ones() < 2) {
            return;
        }
        self.tell_room_shards(room, before, after);
        let bridge = 1u64 << manifold_io::BRIDGE;
        if after & bridge != 0 && after & !before & !bridge != 0 {
            // A worker joined a room other nodes relay to: it needs their tracks' opens.
            crate::bridge::worker_joined_shared_room(self, room);
        }
    }

    fn tell_room_shards(&self, room: &RoomName, before: u64, after: u64) {
        let mut told = (before | after) & !(1u64 << manifold_io::BRIDGE);
        while told != 0 {
            let w = told.trailing_zeros() as u16;
            told &= told - 1;
            let command = Command::RoomShards {
                room: room.clone(),
                shards: after,
            };
            if let Err(e) = self.tell(w, command) {
                // A full command queue: the worker is overloaded already, and keeps what it
                // had (relaying to a worker that no longer needs it, or not yet to a new
                // one, whose members then miss the room's tracks).
                tracing::warn!(worker = w, %room, error = %e, "room's workers not updated");
            }
        }
    }

    /// Forget a session (it ended, or never started).
    pub fn forget(&self, id: ParticipantId) {
        let mut dir = lock(&self.directory);
        let Some(s) = dir.sessions.remove(&id) else {
            return;
        };
        if dir.resources.get(&s.resource) == Some(&id) {
            dir.resources.remove(&s.resource);
        }
        let mut change = None;
        let mut released = false;
        if let Some(r) = dir.rooms.get_mut(&s.room) {
            let before = r.shards();
            r.sessions = r.sessions.saturating_sub(1);
            if let Some(n) = r.per_worker.get_mut(usize::from(s.worker)) {
                *n = n.saturating_sub(1);
            }
            change = Some((before, r.shards()));
            if r.sessions == 0 {
                dir.rooms.remove(&s.room);
                released = true;
                self.webhooks.emit(&s.room, WebhookEvent::RoomFinished);
            }
        }
        drop(dir);
        if released {
            crate::bridge::room_released(self, &s.room);
        }
        if let Some((before, after)) = change {
            self.room_shards_changed(&s.room, before, after);
        }
    }

    /// The worker whose view of `room` speaks for the room where every worker holding it
    /// sees the same (who speaks): its first worker while that holds sessions of it, else
    /// the lowest that does.
    pub fn room_voice(&self, room: &RoomName) -> Option<u16> {
        let dir = lock(&self.directory);
        let r = dir.rooms.get(room)?;
        if r.per_worker
            .get(usize::from(r.worker))
            .is_some_and(|n| *n > 0)
        {
            return Some(r.worker);
        }
        r.per_worker.iter().position(|n| *n > 0).map(|i| i as u16)
    }

    /// A session, if it exists.
    pub fn session(&self, id: ParticipantId) -> Option<SessionEntry> {
        lock(&self.directory).sessions.get(&id).cloned()
    }

    /// The WHIP/WHEP session whose `Location` ends in `resource`.
    pub fn session_by_resource(&self, resource: &str) -> Option<(ParticipantId, SessionEntry)> {
        let dir = lock(&self.directory);
        let id = *dir.resources.get(resource)?;
        dir.sessions.get(&id).map(|s| (id, s.clone()))
    }

    /// Update a session in place.
    pub fn update_session(&self, id: ParticipantId, f: impl FnOnce(&mut SessionEntry)) {
        if let Some(s) = lock(&self.directory).sessions.get_mut(&id) {
            f(s);
        }
    }

    /// Every session, with its id.
    pub fn sessions(&self) -> Vec<(ParticipantId, SessionEntry)> {
        lock(&self.directory)
            .sessions
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect()
    }

    /// Sessions known to the control plane.
    pub fn session_count(&self) -> usize {
        lock(&self.directory).sessions.len()
    }

    /// Stop accepting new sessions.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Is the server draining?
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Statistics of every worker, summed.
    pub async fn stats(&self) -> Result<ShardStats, ApiError> {
        let mut total = ShardStats::default();
        for s in self.worker_stats().await? {
            total.merge(&s);
        }
        Ok(total)
    }

    /// Each worker's bytes per room, in worker order.
    pub async fn worker_traffic(&self) -> Result<Vec<Vec<manifold_api::RoomTraffic>>, ApiError> {
        let mut all = Vec::with_capacity(self.workers.len());
        for w in 0..self.workers.len() {
            match self
                .request(w as u16, |request| Command::Traffic { request })
                .await?
            {
                ReplyValue::Traffic(t) => all.push(t),
                other => {
                    return Err(ApiError::Internal(format!(
                        "unexpected reply to traffic: {other:?}"
                    )));
                }
            }
        }
        Ok(all)
    }

    /// Each worker's counters, in worker order.
    pub async fn worker_stats(&self) -> Result<Vec<ShardStats>, ApiError> {
        let mut all = Vec::with_capacity(self.workers.len());
        for w in 0..self.workers.len() {
            match self
                .request(w as u16, |request| Command::Stats { request })
                .await?
            {
                ReplyValue::Stats(s) => all.push(*s),
                other => {
                    return Err(ApiError::Internal(format!(
                        "unexpected reply to stats: {other:?}"
                    )));
                }
            }
        }
        Ok(all)
    }
}

fn least_loaded(dir: &Directory, workers: usize) -> u16 {
    let mut load = vec![0usize; workers.max(1)];
    for r in dir.rooms.values() {
        for (l, n) in load.iter_mut().zip(&r.per_worker) {
            *l += *n as usize;
        }
    }
    load.iter()
        .enumerate()
        .min_by_key(|(_, l)| **l)
        .map_or(0, |(i, _)| i as u16)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked while holding the lock left the map consistent (every
    // update is a single insert or remove), so poisoning carries no information here.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
