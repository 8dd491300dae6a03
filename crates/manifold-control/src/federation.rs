//! One room across nodes (signaling and state, not media): this node's members of a room
//! are kept in the cluster's directory, their changes go out as the room's events on the
//! bus, and the members of other nodes appear in the roster's remote part, so the room
//! protocol shows them exactly as local ones. A node that leaves the registry's live set has
//! its members forgotten and announced as gone.
//!
//! Nothing here is awaited on the event loop: [`AppState::federate`] only queues (bounded;
//! full: dropped and counted), and one task ([`start`]) drains the queue in order, so a
//! member's record and events reach the directory and the bus in the order they happened.
//! While this node holds a room (has announced members in it) it follows the room's events:
//! a task per room reads the directory once, then applies the room's events as they come.
//! Failures of the directory or the bus are counted and logged at most once per 10 s.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use manifold_api::protocol::{ChatSender, ParticipantInfo, ServerMessage, TrackInfo};
use manifold_api::{Identity, LeaveReason, ParticipantId, RoomName, TrackId};
use manifold_cluster::{ClusterError, MAX_RECORD_BYTES, MemberRecord, NodeId, Subscription};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::roster::{RemoteMember, Roster};
use crate::state::AppState;

/// Updates waiting for the directory or the bus.
pub const UPDATE_QUEUE: usize = 4096;
/// A room's events waiting to be applied, per room followed.
pub const EVENT_QUEUE: usize = 256;
/// Members of other nodes one room may show here.
pub const MAX_REMOTE_MEMBERS: usize = 1000;
/// Tracks one member of another node may show here.
pub const MAX_REMOTE_TRACKS: usize = 64;
/// Largest room event read from the bus, as JSON.
pub const MAX_EVENT_BYTES: usize = MAX_RECORD_BYTES;
/// Rooms whose records are remembered for rewriting after a failed write.
pub const MAX_DIRTY_ROOMS: usize = 4096;
/// Every this many heartbeats (and at the first) the dead-node watch reads every room's
/// nodes, not only those of the rooms this node holds.
pub const ROOM_SCAN_EVERY: u64 = 30;
/// At most one warning per this, per kind of trouble.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What travels on `manifold.room.{room}.events`: one change of a room member, from the
/// node holding its session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomEventMessage {
    /// The node that sent it (a node ignores its own).
    pub origin: NodeId,
    /// What happened.
    pub event: RoomEvent,
}

/// A change of one member (`participant`) of a room, as another node needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomEvent {
    /// It joined (or is announced again), with what the room shows of it.
    ParticipantJoined {
        participant: ParticipantId,
        identity: Identity,
        name: String,
        #[serde(default)]
        metadata: serde_json::Value,
        tracks: Vec<TrackInfo>,
    },
    /// It changed its name or metadata.
    ParticipantUpdated {
        participant: ParticipantId,
        name: String,
        #[serde(default)]
        metadata: serde_json::Value,
    },
    /// It left, and why.
    ParticipantLeft {
        participant: ParticipantId,
        reason: LeaveReason,
    },
    /// It published `track`.
    TrackPublished {
        participant: ParticipantId,
        track: TrackInfo,
    },
    /// It stopped publishing `track`.
    TrackUnpublished {
        participant: ParticipantId,
        track: TrackId,
    },
    /// It muted or unmuted `track`.
    TrackMuted {
        participant: ParticipantId,
        track: TrackId,
        muted: bool,
    },
    /// It said something: to the room, or to one member (`to`, on the receiving node).
    Chat {
        from: ChatSender,
        text: String,
        to: Option<ParticipantId>,
        ts: u64,
    },
}

/// The subject of `room`'s events. A room name may hold `.`, NATS's token separator: it goes
/// in as the relay's subjects have it, `.` written `~` (which no room name holds), so it is
/// one token and no two rooms share a subject.
pub fn events_subject(room: &RoomName) -> String {
    format!("manifold.room.{}.events", crate::bridge::room_token(room))
}

/// A change of a local member, as the control plane sees it happen.
pub(crate) enum LocalChange<'a> {
    /// It is announced to the room.
    Joined(&'a ParticipantInfo),
    /// Its name or metadata changed (its info says so already).
    Updated(&'a ParticipantInfo),
    /// It left.
    Left(ParticipantId, LeaveReason),
    /// It published this track (already in its info).
    TrackPublished(&'a ParticipantInfo, &'a TrackInfo),
    /// This track went (already gone from its info).
    TrackUnpublished(&'a ParticipantInfo, TrackId),
    /// This track was muted or unmuted (its info says so already).
    TrackMuted(&'a ParticipantInfo, TrackId, bool),
    /// A chat message from this node's member: to the room, or to one member on another
    /// node.
    Chat(&'a ChatSender, &'a str, Option<ParticipantId>, u64),
}

/// What the queue carries to the task talking to the directory and the bus.
enum Update {
    /// This node holds the room now: follow its events.
    Hold(RoomName),
    /// This node holds the room no more.
    Release(RoomName),
    /// Follow exactly the rooms held (a subscription that failed, a lost update): every
    /// heartbeat.
    Heal,
    Upsert(RoomName, MemberRecord),
    Remove(RoomName, ParticipantId),
    Publish(RoomName, RoomEvent),
}

/// A warning at most once per [`LOG_EVERY`].
#[derive(Default)]
pub(crate) struct Throttle(Mutex<Option<Instant>>);

impl Throttle {
    /// Whether to log now.
    pub(crate) fn ready(&self) -> bool {
        let mut last = lock(&self.0);
        let now = Instant::now();
        if last.is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// This node's side of its rooms across nodes: the queue, the rooms it holds, the counts.
pub struct Federation {
    tx: mpsc::Sender<Update>,
    rx: Mutex<Option<mpsc::Receiver<Update>>>,
    /// Per room held, its announced local members.
    held: Mutex<HashMap<RoomName, HashSet<ParticipantId>>>,
    /// Rooms where a write of this node's records failed: rewritten at the next heal.
    dirty: Mutex<HashSet<RoomName>>,
    /// Updates dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Directory or bus operations that failed.
    pub failed: AtomicU64,
    /// Room events read from the bus and not applied: malformed, over a bound, or not from
    /// the member's node.
    pub ignored: AtomicU64,
    dropped_log: Throttle,
    failed_log: Throttle,
}

impl Default for Federation {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
        Federation {
            tx,
            rx: Mutex::new(Some(rx)),
            held: Mutex::default(),
            dirty: Mutex::default(),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            dropped_log: Throttle::default(),
            failed_log: Throttle::default(),
        }
    }
}

impl Federation {
    /// The counters, for `/stats`.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "updates_dropped": self.dropped.load(Ordering::Relaxed),
            "updates_failed": self.failed.load(Ordering::Relaxed),
            "events_ignored": self.ignored.load(Ordering::Relaxed),
        })
    }

    fn push(&self, update: Update) {
        if self.tx.try_send(update).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if self.dropped_log.ready() {
                tracing::warn!(
                    dropped = n,
                    "cluster update queue full: room state not shared with other nodes"
                );
            }
        }
    }

    fn failed(&self, what: &str, error: &ClusterError) {
        let n = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        if self.failed_log.ready() {
            tracing::warn!(failed = n, %error, "cluster {what} failed");
        }
    }

    /// A write of `room`'s records failed with `error`; one that may succeed later (the
    /// directory was away, not a record it refuses) has the room remembered, at most
    /// [`MAX_DIRTY_ROOMS`].
    fn mark_dirty(&self, room: RoomName, error: &ClusterError) {
        if !matches!(error, ClusterError::Unavailable(_)) {
            return;
        }
        let mut dirty = lock(&self.dirty);
        if dirty.len() < MAX_DIRTY_ROOMS {
            dirty.insert(room);
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<RoomName, HashSet<ParticipantId>>> {
        lock(&self.held)
    }
}

/// Start the task draining the update queue, the one watching for dead nodes and the one
/// taking other nodes' admin requests. Once per process; a second call starts the queue's
/// task no more.
pub fn start(state: &AppState) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(rx) = lock(&state.cluster.federation.rx).take() {
        tasks.push(tokio::spawn(drain(state.clone(), rx)));
    }
    tasks.push(tokio::spawn(watch_nodes(state.clone())));
    tasks.push(tokio::spawn(crate::admin::serve_requests(state.clone())));
    tasks
}

impl AppState {
    /// Share a change of a local member with the cluster: its directory record, the room's
    /// event, and whether this node holds the room. Queues only; never waits.
    pub(crate) fn federate(&self, room: &RoomName, change: LocalChange<'_>) {
        let f = &self.cluster.federation;
        let record = |info: &ParticipantInfo| self.member_record(info);
        let publish = |event| f.push(Update::Publish(room.clone(), event));
        match change {
            LocalChange::Joined(info) => {
                let first = {
                    let mut held = f.held();
                    let members = held.entry(room.clone()).or_default();
                    let first = members.is_empty();
                    if !members.insert(info.id) {
                        return;
                    }
                    first
                };
                if first {
                    f.push(Update::Hold(room.clone()));
                }
                f.push(Update::Upsert(room.clone(), record(info)));
                publish(joined_event(info));
            }
            LocalChange::Left(participant, reason) => {
                let last = {
                    let mut held = f.held();
                    let Some(members) = held.get_mut(room) else {
                        return;
                    };
                    if !members.remove(&participant) {
                        return;
                    }
                    let last = members.is_empty();
                    if last {
                        held.remove(room);
                    }
                    last
                };
                f.push(Update::Remove(room.clone(), participant));
                publish(RoomEvent::ParticipantLeft {
                    participant,
                    reason,
                });
                if last {
                    f.push(Update::Release(room.clone()));
                }
            }
            LocalChange::Updated(info) if self.is_held(room, info.id) => {
                f.push(Update::Upsert(room.clone(), record(info)));
                publish(RoomEvent::ParticipantUpdated {
                    participant: info.id,
                    name: info.name.clone(),
                    metadata: info.metadata.clone(),
                });
            }
            LocalChange::TrackPublished(info, track) if self.is_held(room, info.id) => {
                f.push(Update::Upsert(room.clone(), record(info)));
                publish(RoomEvent::TrackPublished {
                    participant: info.id,
                    track: track.clone(),
                });
            }
            LocalChange::TrackUnpublished(info, track) if self.is_held(room, info.id) => {
                f.push(Update::Upsert(room.clone(), record(info)));
                publish(RoomEvent::TrackUnpublished {
                    participant: info.id,
                    track,
                });
            }
            LocalChange::TrackMuted(info, track, muted) if self.is_held(room, info.id) => {
                f.push(Update::Upsert(room.clone(), record(info)));
                publish(RoomEvent::TrackMuted {
                    participant: info.id,
                    track,
                    muted,
                });
            }
            LocalChange::Chat(from, text, to, ts) if self.is_held(room, from.id) => {
                publish(RoomEvent::Chat {
                    from: from.clone(),
                    text: text.to_owned(),
                    to,
                    ts,
                });
            }
            // Changes of a member not announced yet reach the cluster with its join.
            _ => {}
        }
    }

    /// Write every announced local member to the directory again and announce it to the
    /// room's other nodes: after this node's registration lapsed (other nodes forgot its
    /// members) or the directory lost its data.
    pub fn republish_members(&self) {
        let f = &self.cluster.federation;
        let rooms: Vec<RoomName> = f.held().keys().cloned().collect();
        for room in rooms {
            for info in self.local_members(&room) {
                f.push(Update::Upsert(room.clone(), self.member_record(&info)));
                f.push(Update::Publish(room.clone(), joined_event(&info)));
            }
        }
    }

    /// This node's announced members of `room`, as the room sees them.
    fn local_members(&self, room: &RoomName) -> Vec<ParticipantInfo> {
        // The held set is read first and let go: `federate` takes it under the roster lock.
        let ids: Vec<ParticipantId> = {
            let held = self.cluster.federation.held();
            held.get(room).into_iter().flatten().copied().collect()
        };
        let roster = self.roster();
        ids.iter()
            .filter_map(|id| roster.get(*id).map(|m| m.info.clone()))
            .collect()
    }

    /// The directory record of this node's member `info`.
    fn member_record(&self, info: &ParticipantInfo) -> MemberRecord {
        MemberRecord {
            participant: info.id,
            node: self.cluster.node.clone(),
            identity: info.identity.clone(),
            name: info.name.clone(),
            metadata: info.metadata.clone(),
            tracks: info.tracks.clone(),
        }
    }

    fn is_held(&self, room: &RoomName, id: ParticipantId) -> bool {
        let held = self.cluster.federation.held();
        held.get(room).is_some_and(|m| m.contains(&id))
    }

    /// Apply an event of `room` that node `origin` sent, telling the local members.
    fn apply_remote(&self, room: &RoomName, origin: &NodeId, event: RoomEvent) {
        let f = &self.cluster.federation;
        let mut roster = self.roster();
        // Only a member's own node speaks for it (a joined event names the node itself).
        let from_its_node = |roster: &mut Roster, id| {
            roster
                .remote_mut(room, id)
                .is_some_and(|r| &r.node == origin)
        };
        match event {
            RoomEvent::ParticipantJoined {
                participant,
                identity,
                name,
                metadata,
                tracks,
            } => {
                let member = RemoteMember {
                    info: shown(participant, identity, name, metadata, tracks),
                    node: origin.clone(),
                };
                if !show_remote(&mut roster, room, member) {
                    f.ignored.fetch_add(1, Ordering::Relaxed);
                }
            }
            RoomEvent::ParticipantUpdated {
                participant,
                name,
                metadata,
            } => {
                let updated = from_its_node(&mut roster, participant)
                    .then(|| roster.remote_mut(room, participant))
                    .flatten()
                    .map(|r| {
                        r.info.name = name;
                        r.info.metadata = metadata;
                        r.info.clone()
                    });
                if let Some(info) = updated {
                    roster.broadcast(
                        room,
                        None,
                        &ServerMessage::ParticipantUpdated { participant: info },
                    );
                }
            }
            RoomEvent::ParticipantLeft {
                participant,
                reason,
            } => {
                if from_its_node(&mut roster, participant) {
                    roster.remove_remote(room, participant);
                    announce_left(&mut roster, room, participant, reason);
                }
            }
            RoomEvent::TrackPublished { participant, track } => {
                let added = from_its_node(&mut roster, participant)
                    && roster.remote_mut(room, participant).is_some_and(|r| {
                        let tracks = &mut r.info.tracks;
                        let fits = tracks.len() < MAX_REMOTE_TRACKS
                            && tracks.iter().all(|t| t.id != track.id);
                        if fits {
                            tracks.push(track.clone());
                        }
                        fits
                    });
                if added {
                    roster.broadcast(
                        room,
                        None,
                        &ServerMessage::TrackPublished { participant, track },
                    );
                }
            }
            RoomEvent::TrackUnpublished { participant, track } => {
                let removed = from_its_node(&mut roster, participant)
                    && roster.remote_mut(room, participant).is_some_and(|r| {
                        let before = r.info.tracks.len();
                        r.info.tracks.retain(|t| t.id != track);
                        r.info.tracks.len() != before
                    });
                if removed {
                    roster.broadcast(
                        room,
                        None,
                        &ServerMessage::TrackUnpublished { participant, track },
                    );
                }
            }
            RoomEvent::Chat { from, text, to, ts } => {
                if !from_its_node(&mut roster, from.id) {
                    return;
                }
                let msg = ServerMessage::Chat { from, text, to, ts };
                match to {
                    None => roster.broadcast(room, None, &msg),
                    Some(target) => {
                        let here = roster
                            .get(target)
                            .is_some_and(|m| &m.room == room && m.protocol);
                        if here {
                            roster.send(target, msg);
                        }
                    }
                }
            }
            RoomEvent::TrackMuted {
                participant,
                track,
                muted,
            } => {
                let changed = from_its_node(&mut roster, participant)
                    && roster.remote_mut(room, participant).is_some_and(|r| {
                        r.info
                            .tracks
                            .iter_mut()
                            .find(|t| t.id == track)
                            .is_some_and(|t| {
                                let changed = t.muted != muted;
                                t.muted = muted;
                                changed
                            })
                    });
                if changed {
                    roster.broadcast(
                        room,
                        None,
                        &ServerMessage::TrackMuted {
                            participant,
                            track,
                            muted,
                        },
                    );
                }
            }
        }
    }
}

fn joined_event(info: &ParticipantInfo) -> RoomEvent {
    RoomEvent::ParticipantJoined {
        participant: info.id,
        identity: info.identity.clone(),
        name: info.name.clone(),
        metadata: info.metadata.clone(),
        tracks: info.tracks.clone(),
    }
}

/// A member of another node as the room shows it, with at most [`MAX_REMOTE_TRACKS`].
fn shown(
    id: ParticipantId,
    identity: Identity,
    name: String,
    metadata: serde_json::Value,
    mut tracks: Vec<TrackInfo>,
) -> ParticipantInfo {
    tracks.truncate(MAX_REMOTE_TRACKS);
    ParticipantInfo {
        id,
        identity,
        name,
        metadata,
        tracks,
    }
}

/// Tell `room`'s local members that `participant` (of another node) left.
fn announce_left(
    roster: &mut Roster,
    room: &RoomName,
    participant: ParticipantId,
    reason: LeaveReason,
) {
    let msg = ServerMessage::ParticipantLeft {
        participant,
        reason,
    };
    roster.broadcast(room, None, &msg);
}

/// Show `member` of another node in `room`, telling the local members when it is new;
/// `false` when refused (a local id, or the room's bound).
fn show_remote(roster: &mut Roster, room: &RoomName, member: RemoteMember) -> bool {
    let info = member.info.clone();
    match roster.upsert_remote(room, member, MAX_REMOTE_MEMBERS) {
        Some(true) => {
            roster.broadcast(
                room,
                None,
                &ServerMessage::ParticipantJoined { participant: info },
            );
            true
        }
        Some(false) => true,
        None => false,
    }
}

/// The one task that talks to the directory and the bus for [`AppState::federate`], in the
/// order of the queue; it also starts and stops following rooms.
async fn drain(state: AppState, mut rx: mpsc::Receiver<Update>) {
    let cluster = state.cluster.clone();
    let f = &cluster.federation;
    let mut followed: HashMap<RoomName, JoinHandle<()>> = HashMap::new();
    forget_predecessor(&state).await;
    while let Some(update) = rx.recv().await {
        match update {
            // What is held decides, not the update: a room held again before its release
            // was drained stays followed.
            Update::Hold(room) => {
                if f.held().contains_key(&room) {
                    start_following(&state, &mut followed, room).await;
                }
            }
            Update::Release(room) => {
                if !f.held().contains_key(&room) {
                    stop_following(&state, &mut followed, &room);
                }
            }
            Update::Heal => {
                let held: Vec<RoomName> = f.held().keys().cloned().collect();
                let stale: Vec<RoomName> = followed
                    .iter()
                    .filter(|(room, task)| task.is_finished() || !held.contains(room))
                    .map(|(room, _)| room.clone())
                    .collect();
                for room in stale {
                    stop_following(&state, &mut followed, &room);
                }
                let dirty: Vec<RoomName> = lock(&f.dirty).drain().collect();
                for (i, room) in dirty.iter().enumerate() {
                    match rewrite(&state, room).await {
                        Ok(()) => {}
                        // Redis is still away: these wait for the next heal.
                        Err(e @ ClusterError::Unavailable(_)) => {
                            f.failed("directory rewrite", &e);
                            dirty[i..].iter().for_each(|r| f.mark_dirty(r.clone(), &e));
                            break;
                        }
                        Err(e) => f.failed("directory rewrite", &e),
                    }
                }
                for room in held {
                    // One failure says the bus is away: the rest wait for the next heal,
                    // rather than holding up the queue a timeout per room.
                    if !start_following(&state, &mut followed, room).await {
                        break;
                    }
                }
            }
            Update::Upsert(room, record) => {
                if let Err(e) = cluster.directory.upsert(room.clone(), record).await {
                    f.failed("directory upsert", &e);
                    f.mark_dirty(room, &e);
                }
            }
            Update::Remove(room, participant) => {
                if let Err(e) = cluster.directory.remove(room.clone(), participant).await {
                    f.failed("directory remove", &e);
                    f.mark_dirty(room, &e);
                }
            }
            Update::Publish(room, event) => publish_event(&state, &room, event).await,
        }
    }
}

/// Send `event` of `room` from this node; a failure is counted.
async fn publish_event(state: &AppState, room: &RoomName, event: RoomEvent) {
    let cluster = &state.cluster;
    let message = RoomEventMessage {
        origin: cluster.node.clone(),
        event,
    };
    let published = match serde_json::to_vec(&message) {
        // Every node would ignore it.
        Ok(json) if json.len() > MAX_EVENT_BYTES => Err(ClusterError::Malformed(format!(
            "a room event of {} bytes",
            json.len()
        ))),
        Ok(json) => cluster.bus.publish(events_subject(room), json).await,
        Err(e) => Err(ClusterError::Malformed(e.to_string())),
    };
    if let Err(e) = published {
        cluster.federation.failed("room event", &e);
    }
}

/// Members the directory still lists on this node's id are an earlier process's (this one
/// holds the id now: it registered, so no other live process does), left by a crash: they
/// are forgotten, and the nodes that show them told they left. Before any write of this
/// process's.
async fn forget_predecessor(state: &AppState) {
    let cluster = &state.cluster;
    let f = &cluster.federation;
    match cluster.directory.forget_node(cluster.node.clone()).await {
        Ok(gone) => {
            if !gone.is_empty() {
                tracing::info!(
                    members = gone.len(),
                    "an earlier process's members forgotten"
                );
            }
            for (room, m) in gone {
                let event = RoomEvent::ParticipantLeft {
                    participant: m.participant,
                    reason: LeaveReason::Timeout,
                };
                publish_event(state, &room, event).await;
            }
        }
        Err(e) => f.failed("forgetting an earlier process's members", &e),
    }
}

/// Make the directory hold exactly this node's announced members of `room`, after a write
/// failed: records of members gone are removed, the others written again.
async fn rewrite(state: &AppState, room: &RoomName) -> Result<(), ClusterError> {
    let cluster = &state.cluster;
    let stored = cluster.directory.members(room.clone()).await?;
    let local = state.local_members(room);
    for m in stored.iter().filter(|m| m.node == cluster.node) {
        if !local.iter().any(|l| l.id == m.participant) {
            cluster
                .directory
                .remove(room.clone(), m.participant)
                .await?;
        }
    }
    for info in &local {
        let record = state.member_record(info);
        match cluster.directory.upsert(room.clone(), record).await {
            // A record the directory refuses is refused again: it is not retried.
            Ok(()) | Err(ClusterError::Malformed(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Subscribe to `room`'s events and follow them, unless followed already; `false` when the
/// bus refused.
async fn start_following(
    state: &AppState,
    followed: &mut HashMap<RoomName, JoinHandle<()>>,
    room: RoomName,
) -> bool {
    if followed.contains_key(&room) {
        return true;
    }
    let cluster = &state.cluster;
    match cluster
        .bus
        .subscribe(events_subject(&room), EVENT_QUEUE)
        .await
    {
        Ok(sub) => {
            let task = tokio::spawn(follow(state.clone(), room.clone(), sub));
            followed.insert(room, task);
            true
        }
        Err(e) => {
            cluster
                .federation
                .failed("subscription to a room's events", &e);
            false
        }
    }
}

/// Stop following `room`; its remote members go unless it is held again.
fn stop_following(
    state: &AppState,
    followed: &mut HashMap<RoomName, JoinHandle<()>>,
    room: &RoomName,
) {
    if let Some(task) = followed.remove(room) {
        task.abort();
    }
    if !state.cluster.federation.held().contains_key(room) {
        state.roster().clear_remote(room);
    }
}

/// Follow `room`'s events while this node holds it: first its members on other nodes as
/// the directory has them, then every event since the subscription (queued meanwhile), so
/// nothing that happened after the directory was read is missed; members shown before that
/// the directory no longer has leave (reason `timeout`). Ends when the directory cannot be
/// read.
async fn follow(state: AppState, room: RoomName, mut sub: Subscription) {
    let cluster = state.cluster.clone();
    let f = &cluster.federation;
    match cluster.directory.members(room.clone()).await {
        Ok(members) => {
            let mut roster = state.roster();
            // The read is the truth: a member shown from an earlier following of the room
            // (its departure missed while not subscribed) that the directory no longer
            // has leaves.
            let listed: HashSet<ParticipantId> = members.iter().map(|m| m.participant).collect();
            for participant in roster.remote_ids(&room) {
                if !listed.contains(&participant) {
                    roster.remove_remote(&room, participant);
                    announce_left(&mut roster, &room, participant, LeaveReason::Timeout);
                }
            }
            for m in members.into_iter().filter(|m| m.node != cluster.node) {
                let member = RemoteMember {
                    info: shown(m.participant, m.identity, m.name, m.metadata, m.tracks),
                    node: m.node,
                };
                if !show_remote(&mut roster, &room, member) {
                    f.ignored.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Err(e) => {
            // Ended (unsubscribing): the next heal follows the room again, reading afresh.
            f.failed("directory read of a room", &e);
            return;
        }
    }
    while let Some(message) = sub.rx.recv().await {
        let parsed = (message.payload.len() <= MAX_EVENT_BYTES)
            .then(|| serde_json::from_slice::<RoomEventMessage>(&message.payload).ok())
            .flatten();
        match parsed {
            Some(m) if m.origin == cluster.node => {}
            Some(m) => state.apply_remote(&room, &m.origin, m.event),
            None => {
                f.ignored.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Every heartbeat: nodes that left the registry's live set (since the last look, holding
/// members this node shows, or, every [`ROOM_SCAN_EVERY`] heartbeats, holding members of any
/// room) are forgotten in the directory, and their members shown here leave with
/// [`LeaveReason::Timeout`] (their connection to the cluster was lost). Whichever node
/// forgets a dead node first gets its members back; every node drops the ones it shows.
async fn watch_nodes(state: AppState) {
    let cluster = state.cluster.clone();
    let mut tick = tokio::time::interval(cluster.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: BTreeSet<NodeId> = BTreeSet::new();
    for beat in 0u64.. {
        tick.tick().await;
        cluster.federation.push(Update::Heal);
        // What names nodes is read before the live set: a node registers before it has
        // members, so one that is alive when these are read is in the live set read after.
        let mut named = state.roster().remote_nodes();
        // Now and then (and first) every room's nodes: a node that died before any live
        // one saw it (a whole cluster restarted on a Redis that kept its data) is found so.
        if beat % ROOM_SCAN_EVERY == 0 {
            match cluster.directory.rooms().await {
                Ok(rooms) => named.extend(rooms.into_iter().flat_map(|r| r.nodes)),
                Err(e) => tracing::debug!(error = %e, "rooms unknown; scanned later"),
            }
        }
        let live: BTreeSet<NodeId> = match cluster.registry.live().await {
            Ok(nodes) => nodes.into_iter().map(|n| n.id).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "live nodes unknown; dead nodes checked later");
                continue;
            }
        };
        // A node that does not see itself live is the one cut off: it judges no other.
        if !live.contains(&cluster.node) {
            continue;
        }
        let mut gone: BTreeSet<NodeId> = last.difference(&live).cloned().collect();
        gone.extend(named.into_iter().filter(|n| !live.contains(n)));
        let mut retry = BTreeSet::new();
        for node in gone {
            match cluster.directory.forget_node(node.clone()).await {
                Ok(forgotten) if !forgotten.is_empty() => {
                    tracing::info!(%node, members = forgotten.len(), "node gone: its members forgotten");
                }
                Ok(_) => {}
                Err(e) => {
                    cluster.federation.failed("forgetting a dead node", &e);
                    retry.insert(node);
                }
            }
        }
        let mut roster = state.roster();
        for (room, participant) in roster.remove_remote_where(|n| !live.contains(n)) {
            announce_left(&mut roster, &room, participant, LeaveReason::Timeout);
        }
        drop(roster);
        last = live;
        last.extend(retry);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is one insert or remove: a panic elsewhere leaves them
    // consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The federation a [`crate::cluster::ClusterHandle`] starts with.
pub(crate) fn new() -> Arc<Federation> {
    Arc::new(Federation::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    use manifold_api::command::{NegotiatedSession, Negotiator};
    use manifold_api::negotiation::NegotiateError;
    use manifold_api::protocol::TrackSource;
    use manifold_api::{MediaKind, SessionKind};
    use manifold_cluster::memory::MemoryCluster;
    use manifold_cluster::{BoxFuture, RoomDirectory, RoomSummary};
    use serde_json::Value;

    use crate::cluster::ClusterHandle;
    use crate::outbox::{Item, Outbox, OutboxLimits};
    use crate::roster::{Member, TokenBucket};
    use crate::{Auth, ControlConfig};

    /// Sessions never get as far as media here.
    struct NoMedia;

    impl Negotiator for NoMedia {
        fn accept(
            &self,
            _: SessionKind,
            _: &str,
            _: &[SocketAddr],
            _: Instant,
        ) -> Result<NegotiatedSession, NegotiateError> {
            Err(NegotiateError::Rejected("no media in this test".into()))
        }

        fn offer(&self, _: &[SocketAddr], _: Instant) -> Result<NegotiatedSession, NegotiateError> {
            Err(NegotiateError::Rejected("no media in this test".into()))
        }

        fn panics(&self) -> u64 {
            0
        }
    }

    const BEAT: Duration = Duration::from_millis(50);
    const WAIT: Duration = Duration::from_secs(10);

    /// Node `id` of the in-memory cluster `shared`, running: registered, heartbeat, tasks.
    async fn node(id: &str, shared: &MemoryCluster) -> (AppState, Vec<JoinHandle<()>>) {
        node_with(id, shared, Arc::new(shared.peer())).await
    }

    /// [`node`], with a directory of the test's.
    async fn node_with(
        id: &str,
        shared: &MemoryCluster,
        directory: Arc<dyn RoomDirectory>,
    ) -> (AppState, Vec<JoinHandle<()>>) {
        let memory = shared.peer();
        let mut cluster = ClusterHandle::alone(NodeId::parse(id).expect("node id"), None, BEAT);
        cluster.registry = Arc::new(memory.clone());
        cluster.directory = directory;
        cluster.bus = Arc::new(memory);
        let auth = Auth::new(None).expect("dev auth");
        let config = ControlConfig::default();
        let state = AppState::new(config, Vec::new(), Arc::new(NoMedia), auth, cluster);
        crate::cluster::register(&state).await.expect("register");
        let mut tasks = start(&state);
        tasks.push(tokio::spawn(crate::cluster::heartbeat(state.clone())));
        (state, tasks)
    }

    fn info(id: u64) -> ParticipantInfo {
        ParticipantInfo {
            id: ParticipantId(id),
            identity: Identity::parse(&format!("user{id}")).expect("identity"),
            name: format!("User {id}"),
            metadata: serde_json::Value::Null,
            tracks: Vec::new(),
        }
    }

    /// Member `id` of `room` joins on `state` (as `member_joined` announces one); its socket's
    /// queue.
    fn join(state: &AppState, room: &RoomName, id: u64) -> Arc<Outbox> {
        let tx = Arc::new(Outbox::new(OutboxLimits::default()));
        let now = Instant::now();
        let info = info(id);
        let mut roster = state.roster();
        roster.insert(Member {
            info: info.clone(),
            room: room.clone(),
            worker: 0,
            tx: Some(tx.clone()),
            generation: 1,
            resume_token: String::new(),
            protocol: true,
            chat: TokenBucket::new(1.0, 1.0, now),
            updates: TokenBucket::new(1.0, 1.0, now),
            publishing: Default::default(),
            announced: true,
            may_publish: true,
            may_subscribe: true,
        });
        state.federate(room, LocalChange::Joined(&info));
        tx
    }

    /// A directory record of member `id` on `node`.
    fn record(id: u64, node: &str) -> MemberRecord {
        let info = info(id);
        MemberRecord {
            participant: info.id,
            node: NodeId::parse(node).expect("node id"),
            identity: info.identity,
            name: info.name,
            metadata: info.metadata,
            tracks: info.tracks,
        }
    }

    /// Read `tx` until a message of `kind` about participant `id` arrives; what it says.
    async fn told(tx: &Outbox, kind: &str, id: u64) -> Value {
        let id = ParticipantId(id).to_string();
        let read = async {
            while let Some(Item::Text(t)) = tx.next().await {
                let m: Value = serde_json::from_str(t.as_str()).expect("json");
                let about = m["participant"]["id"]
                    .as_str()
                    .or(m["participant"].as_str());
                if m["type"] == kind && about == Some(id.as_str()) {
                    return m;
                }
            }
            panic!("the socket closed");
        };
        tokio::time::timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| panic!("no {kind} about {id} within {WAIT:?}"))
    }

    fn others(state: &AppState, room: &RoomName) -> Vec<u64> {
        let others = state.roster().others(room, ParticipantId(0));
        others.iter().map(|p| p.id.0).collect()
    }

    /// A directory that fails every call while `down`.
    struct Flaky {
        inner: MemoryCluster,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<(), ClusterError> {
            if self.down.load(Ordering::Relaxed) {
                Err(ClusterError::Unavailable("down for the test".into()))
            } else {
                Ok(())
            }
        }
    }

    /// Each method checks, then asks the memory directory.
    macro_rules! through {
        ($($name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {$(
            fn $name(&self, $($arg: $ty),*) -> BoxFuture<'_, Result<$out, ClusterError>> {
                Box::pin(async move {
                    self.check()?;
                    self.inner.$name($($arg),*).await
                })
            }
        )*};
    }

    impl RoomDirectory for Flaky {
        through! {
            upsert(room: RoomName, member: MemberRecord) -> ();
            remove(room: RoomName, participant: ParticipantId) -> ();
            members(room: RoomName) -> Vec<MemberRecord>;
            nodes_of(room: RoomName) -> Vec<NodeId>;
            rooms() -> Vec<RoomSummary>;
            forget_node(node: NodeId) -> Vec<(RoomName, MemberRecord)>;
        }
    }

    async fn member_ids(dir: &dyn RoomDirectory, room: &RoomName) -> Vec<u64> {
        let members = dir.members(room.clone()).await.unwrap_or_default();
        members.iter().map(|m| m.participant.0).collect()
    }

    /// Poll `done` for up to [`WAIT`].
    async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
        let deadline = Instant::now() + WAIT;
        while !done().await {
            assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
            tokio::time::sleep(BEAT / 5).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_of_a_node_dead_before_this_one_started_are_forgotten() {
        let shared = MemoryCluster::new(BEAT * 3);
        let room = RoomName::parse("r").expect("room");
        shared
            .upsert(room, record(9, "gone"))
            .await
            .expect("upsert");
        let s = RoomName::parse("s").expect("room");
        shared.upsert(s, record(8, "gone")).await.expect("upsert");
        let (_a, _tasks) = node("a", &shared).await;
        until("the dead node's members forgotten", || async {
            shared.rooms().await.is_ok_and(|r| r.is_empty())
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_earlier_process_members_are_forgotten_at_start() {
        let shared = MemoryCluster::new(BEAT * 3);
        let room = RoomName::parse("r").expect("room");
        shared
            .upsert(room.clone(), record(7, "a"))
            .await
            .expect("upsert");
        let (_a, _tasks) = node("a", &shared).await;
        until("the earlier process's member forgotten", || async {
            member_ids(&shared, &room).await.is_empty()
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_lost_while_the_directory_was_away_are_made_again() {
        let shared = MemoryCluster::new(BEAT * 3);
        let flaky = Arc::new(Flaky {
            inner: shared.peer(),
            down: false.into(),
        });
        let (a, _tasks) = node_with("a", &shared, flaky.clone()).await;
        let room = RoomName::parse("r").expect("room");
        let _ann = join(&a, &room, 1);
        until("ann in the directory", || async {
            member_ids(&shared, &room).await == [1]
        })
        .await;

        // While the directory is away, Ben joins and Ann leaves: both writes fail.
        flaky.down.store(true, Ordering::Relaxed);
        let _ben = join(&a, &room, 2);
        a.roster().remove(ParticipantId(1));
        a.federate(
            &room,
            LocalChange::Left(ParticipantId(1), LeaveReason::Requested),
        );
        until("two failed writes", || async {
            a.cluster.federation.failed.load(Ordering::Relaxed) >= 2
        })
        .await;
        assert_eq!(member_ids(&shared, &room).await, [1], "nothing written");

        // Back: a heartbeat later the directory holds exactly this node's members.
        flaky.down.store(false, Ordering::Relaxed);
        until("the directory rewritten", || async {
            member_ids(&shared, &room).await == [2]
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_followed_anew_drops_members_the_directory_no_longer_has() {
        let shared = MemoryCluster::new(BEAT * 3);
        let (a, _tasks) = node("a", &shared).await;
        let room = RoomName::parse("r").expect("room");
        // Left over from an earlier following of the room (its departure was missed).
        let ghost = RemoteMember {
            info: info(9),
            node: NodeId::parse("b").expect("node id"),
        };
        a.roster().upsert_remote(&room, ghost, MAX_REMOTE_MEMBERS);
        let ann = join(&a, &room, 1);
        let m = told(&ann, "participant_left", 9).await;
        assert_eq!(m["reason"], "timeout");
        assert_eq!(others(&a, &room), [1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_share_a_room_and_lose_a_dead_ones_members() {
        let shared = MemoryCluster::new(BEAT * 3);
        let (a, _a_tasks) = node("a", &shared).await;
        let (b, b_tasks) = node("b", &shared).await;
        let room = RoomName::parse("r.1").expect("room");

        let ann = join(&a, &room, 1);
        let ben = join(&b, &room, 2);
        told(&ann, "participant_joined", 2).await;
        told(&ben, "participant_joined", 1).await;
        assert_eq!(others(&a, &room), [1, 2]);
        assert_eq!(others(&b, &room), [2, 1]);

        // Ben publishes, mutes, unpublishes: Ann is told each.
        let track = TrackInfo {
            id: TrackId(7),
            kind: MediaKind::Audio,
            source: TrackSource::Microphone,
            name: String::new(),
            muted: false,
        };
        let mut with_track = info(2);
        with_track.tracks.push(track.clone());
        b.federate(&room, LocalChange::TrackPublished(&with_track, &track));
        let m = told(&ann, "track_published", 2).await;
        assert_eq!(m["track"]["id"], TrackId(7).to_string());
        with_track.tracks[0].muted = true;
        b.federate(
            &room,
            LocalChange::TrackMuted(&with_track, TrackId(7), true),
        );
        let m = told(&ann, "track_muted", 2).await;
        assert_eq!(m["muted"], true);
        b.federate(&room, LocalChange::TrackUnpublished(&info(2), TrackId(7)));
        told(&ann, "track_unpublished", 2).await;
        let mut renamed = info(2);
        renamed.name = "Benjamin".into();
        renamed.metadata = serde_json::json!({"desk": 4});
        b.federate(&room, LocalChange::Updated(&renamed));
        let m = told(&ann, "participant_updated", 2).await;
        assert_eq!(m["participant"]["name"], "Benjamin");
        assert_eq!(m["participant"]["metadata"]["desk"], 4);
        // A newcomer on a reads both from the directory.
        let records = a.cluster.directory.members(room.clone()).await;
        let ben = records
            .expect("members")
            .into_iter()
            .find(|m| m.participant == ParticipantId(2))
            .expect("ben's record");
        assert_eq!(ben.metadata, renamed.metadata);

        // Ben leaves; Cal joins on b, whose node then dies (its tasks stop, no goodbye).
        b.roster().remove(ParticipantId(2));
        b.federate(
            &room,
            LocalChange::Left(ParticipantId(2), LeaveReason::Requested),
        );
        let m = told(&ann, "participant_left", 2).await;
        assert_eq!(m["reason"], "requested");
        let _cal = join(&b, &room, 3);
        told(&ann, "participant_joined", 3).await;
        for task in &b_tasks {
            task.abort();
        }
        let m = told(&ann, "participant_left", 3).await;
        assert_eq!(m["reason"], "timeout");
        assert_eq!(others(&a, &room), [1]);
        assert_eq!(member_ids(&*a.cluster.directory, &room).await, [1]);
        assert_eq!(a.cluster.federation.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(a.cluster.federation.ignored.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn room_names_make_one_token_and_distinct_subjects() {
        let a = RoomName::parse("a.b").expect("room");
        let b = RoomName::parse("a-b").expect("room");
        assert_eq!(events_subject(&a), "manifold.room.a~b.events");
        assert_ne!(events_subject(&a), events_subject(&b));
        let longest = RoomName::parse(&"z".repeat(RoomName::MAX_LEN)).expect("room");
        assert!(events_subject(&longest).len() <= manifold_cluster::MAX_SUBJECT_BYTES);
    }

    #[test]
    fn room_events_are_tagged_json() {
        let m = RoomEventMessage {
            origin: NodeId::parse("node-a").expect("node"),
            event: RoomEvent::ParticipantLeft {
                participant: ParticipantId(1),
                reason: LeaveReason::Timeout,
            },
        };
        let json = serde_json::to_value(&m).expect("json");
        assert_eq!(json["origin"], "node-a");
        assert_eq!(json["event"]["type"], "participant_left");
        assert_eq!(json["event"]["reason"], "timeout");
        let back: RoomEventMessage = serde_json::from_value(json).expect("parse");
        assert_eq!(back, m);
    }
}
