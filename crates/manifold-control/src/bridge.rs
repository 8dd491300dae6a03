//! The media bridge between nodes: rooms whose members are on several nodes have their
//! tracks relayed over the cluster's bus, once per (track, node).
//!
//! The media workers do the relaying (`manifold_core`'s `relay.rs`: a room's set of shards
//! includes the bridge, [`manifold_core::BRIDGE`], when another node holds it) and encode
//! what crosses (`relay_wire.rs`); this module only moves frames between the workers and
//! the bus, and finds out which nodes hold which room:
//!
//! - `manifold.hello.{room}`: a node holding members of a room says so when it starts to
//!   and every heartbeat (payload: its id); a node that has not said so for three
//!   heartbeats is taken to have left the room.
//! - `manifold.relay.{room}.{node}`: what `node` relays of its tracks in the room (their
//!   description, packets, mute state, end). Every node holding the room subscribes.
//! - `manifold.relayfb.{node}`: feedback for `node`'s tracks (keyframe requests, layer
//!   needs, lost packets).
//!
//! `{room}` is the room name with `.` written `~` (a NATS subject's tokens cannot hold a
//! dot; room names cannot hold a `~`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manifold_api::RoomName;
use manifold_io::{BridgeSink, BridgeTo};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// Frames from the workers for the bus, queued at most; more are dropped (counted by the
/// workers as `relay_dropped`).
pub const MAX_BRIDGE_OUT: usize = 8192;
/// Frames from one room's subscription queued before the bus drops (and counts) them.
const ROOM_QUEUE: usize = 4096;

/// The workers' end: a bounded queue to [`run`].
pub struct BridgeOut(mpsc::Sender<(BridgeTo, Vec<u8>)>);

impl BridgeSink for BridgeOut {
    fn send(&self, to: BridgeTo, frame: Vec<u8>) -> bool {
        self.0.try_send((to, frame)).is_ok()
    }
}

/// The queue between the workers and the bridge task.
pub fn channel() -> (Arc<BridgeOut>, mpsc::Receiver<(BridgeTo, Vec<u8>)>) {
    let (tx, rx) = mpsc::channel(MAX_BRIDGE_OUT);
    (Arc::new(BridgeOut(tx)), rx)
}

/// One room as the bridge sees it.
#[derive(Default)]
struct RoomLink {
    /// Other nodes holding it, and when each last said so.
    nodes: HashMap<Arc<str>, Instant>,
    /// The subscription to the other nodes' relays of it.
    relay: Option<JoinHandle<()>>,
}

/// What the bridge knows, shared by its tasks and the control plane.
#[derive(Default)]
pub struct BridgeState {
    rooms: Mutex<HashMap<RoomName, RoomLink>>,
    /// Frames put on the bus, and those the bus refused (NATS unreachable and its buffer
    /// full, or a frame over its limit): what other nodes missed.
    frames_out: AtomicU64,
    frames_failed: AtomicU64,
    /// Frames from other nodes handed to workers, and those a full worker inbox refused.
    frames_in: AtomicU64,
    frames_refused: AtomicU64,
}

impl BridgeState {
    /// The counters, for `/stats`.
    pub fn stats(&self) -> serde_json::Value {
        let rooms = self.rooms();
        let remote = rooms.values().filter(|l| !l.nodes.is_empty()).count();
        serde_json::json!({
            "frames_out": self.frames_out.load(Ordering::Relaxed),
            "frames_failed": self.frames_failed.load(Ordering::Relaxed),
            "frames_in": self.frames_in.load(Ordering::Relaxed),
            "frames_refused": self.frames_refused.load(Ordering::Relaxed),
            "rooms_shared": remote,
        })
    }

    fn delivered(&self, queued: bool) {
        let c = if queued {
            &self.frames_in
        } else {
            &self.frames_refused
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomLink>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `room` as a subject token.
pub fn room_token(room: &RoomName) -> String {
    room.as_str().replace('.', "~")
}

fn room_of_token(token: &str) -> Option<RoomName> {
    RoomName::parse(&token.replace('~', ".")).ok()
}

/// This node now holds members of `room`: listen to the other nodes' relays of it, then
/// say so (in that order, so that nothing another node sends on hearing it is missed).
pub fn room_held(state: &AppState, room: &RoomName) {
    let state = state.clone();
    let room = room.clone();
    tokio::spawn(async move {
        let subject = format!("manifold.relay.{}.*", room_token(&room));
        let sub = match state.cluster.bus.subscribe(subject, ROOM_QUEUE).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%room, error = %e, "cannot listen to other nodes' relays");
                return;
            }
        };
        let me: Arc<str> = state.cluster.node.as_str().into();
        let task_state = state.clone();
        let task_room = room.clone();
        let task = tokio::spawn(async move {
            let mut sub = sub;
            while let Some(m) = sub.rx.recv().await {
                let Some(node) = m.subject.rsplit('.').next() else {
                    continue;
                };
                if *node == *me {
                    continue;
                }
                let node: Arc<str> = node.into();
                for w in task_state.room_workers(&task_room) {
                    if let Some(h) = task_state.workers.get(usize::from(w)) {
                        let queued = h.bridge_in(node.clone(), m.payload.clone());
                        task_state.bridge.delivered(queued);
                    }
                }
            }
        });
        if !state.holds_room(&room) {
            // Released while the subscription was being made: keep nothing of it.
            task.abort();
            return;
        }
        let old = state
            .bridge
            .rooms()
            .entry(room.clone())
            .or_default()
            .relay
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
        hello(&state, &room).await;
    });
}

/// This node holds nobody of `room` any more.
pub fn room_released(state: &AppState, room: &RoomName) {
    if let Some(link) = state.bridge.rooms().remove(room)
        && let Some(task) = link.relay
    {
        task.abort();
    }
}

async fn hello(state: &AppState, room: &RoomName) {
    say_hello(state, room, false).await;
}

/// Say this node holds `room`; with `describe`, ask the other nodes to send their tracks'
/// descriptions again (a worker of this node has just started holding the room, and frames
/// from the bus reach every worker holding it: the new one needs the opens it missed).
async fn say_hello(state: &AppState, room: &RoomName, describe: bool) {
    let subject = format!("manifold.hello.{}", room_token(room));
    let mut payload = state.cluster.node.as_str().as_bytes().to_vec();
    if describe {
        payload.push(DESCRIBE);
    }
    if let Err(e) = state.cluster.bus.publish(subject, payload).await {
        tracing::debug!(%room, error = %e, "hello not sent");
    }
}

/// Marks a hello that asks for every track's description again (no node id holds it).
const DESCRIBE: u8 = b'!';

/// A worker of this node started holding `room`, which other nodes hold too: they send
/// their tracks' descriptions again, so it receives them as the others did.
pub fn worker_joined_shared_room(state: &AppState, room: &RoomName) {
    let state = state.clone();
    let room = room.clone();
    tokio::spawn(async move { say_hello(&state, &room, true).await });
}

/// Move the workers' frames to the bus, hear which nodes hold which rooms, and say which
/// rooms this node holds, until the process ends.
pub async fn run(state: AppState, mut out: mpsc::Receiver<(BridgeTo, Vec<u8>)>) {
    let me = state.cluster.node.as_str().to_owned();
    let publisher = {
        let state = state.clone();
        let me = me.clone();
        tokio::spawn(async move {
            while let Some((to, frame)) = out.recv().await {
                let subject = match to {
                    BridgeTo::Room(room) => format!("manifold.relay.{}.{me}", room_token(&room)),
                    BridgeTo::Node(node) => format!("manifold.relayfb.{node}"),
                };
                match state.cluster.bus.publish(subject, frame).await {
                    Ok(()) => state.bridge.frames_out.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::debug!(error = %e, "relay frame not published");
                        state.bridge.frames_failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    let feedback = {
        let state = state.clone();
        let subject = format!("manifold.relayfb.{me}");
        match state.cluster.bus.subscribe(subject, ROOM_QUEUE).await {
            Ok(mut sub) => Some(tokio::spawn(async move {
                let from: Arc<str> = "".into();
                while let Some(m) = sub.rx.recv().await {
                    for h in &state.workers {
                        let queued = h.bridge_in(from.clone(), m.payload.clone());
                        state.bridge.delivered(queued);
                    }
                }
            })),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen to relay feedback");
                None
            }
        }
    };
    let hellos = match state
        .cluster
        .bus
        .subscribe("manifold.hello.*".into(), ROOM_QUEUE)
        .await
    {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen to other nodes' rooms");
            None
        }
    };
    let interval = state.cluster.heartbeat;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hellos = hellos;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for room in state.held_rooms() {
                    hello(&state, &room).await;
                }
                expire(&state, interval * 3);
            }
            m = async {
                match hellos.as_mut() {
                    Some(s) => s.rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(m) = m else { break };
                let Some(room) = m.subject.rsplit('.').next().and_then(room_of_token) else {
                    continue;
                };
                let (payload, describe) = match m.payload.split_last() {
                    Some((&DESCRIBE, rest)) => (rest, true),
                    _ => (&m.payload[..], false),
                };
                let Ok(node) = std::str::from_utf8(payload) else {
                    continue;
                };
                if node == me || manifold_cluster::NodeId::parse(node).is_err() {
                    continue;
                }
                heard(&state, &room, node.into(), describe).await;
            }
        }
    }
    publisher.abort();
    if let Some(f) = feedback {
        f.abort();
    }
}

/// `node` holds `room`. If this node holds it too and `node` is new to it, the room's
/// workers relay to the bridge (again: the newcomer needs every track's description) and
/// this node says at once that it holds the room.
async fn heard(state: &AppState, room: &RoomName, node: Arc<str>, describe: bool) {
    let new = {
        let mut rooms = state.bridge.rooms();
        let Some(link) = rooms.get_mut(room) else {
            // Not held here: nothing to relay either way.
            return;
        };
        link.nodes.insert(node.clone(), Instant::now()).is_none()
    };
    if new {
        tracing::info!(%room, %node, "another node holds the room: relaying to it");
        state.set_room_remote(room, true);
        hello(state, room).await;
    } else if describe {
        // Saying yes again sends every local track's description to the bridge again.
        state.set_room_remote(room, true);
    }
}

/// Forget nodes that stopped saying they hold a room.
fn expire(state: &AppState, ttl: Duration) {
    let now = Instant::now();
    let mut gone = Vec::new();
    let mut left = Vec::new();
    for (room, link) in state.bridge.rooms().iter_mut() {
        let before = link.nodes.len();
        link.nodes.retain(|node, seen| {
            let live = now.saturating_duration_since(*seen) < ttl;
            if !live {
                left.push((room.clone(), node.clone()));
            }
            live
        });
        if before > 0 && link.nodes.is_empty() {
            gone.push(room.clone());
        }
    }
    // What a node that left relayed here ends with it (it cannot say so if it died).
    for (room, node) in left {
        tracing::info!(%room, %node, "a node left the room: its relayed tracks end here");
        for w in state.room_workers(&room) {
            if let Some(h) = state.workers.get(usize::from(w)) {
                h.bridge_node_gone(node.clone(), &room);
            }
        }
    }
    for room in gone {
        tracing::info!(%room, "no other node holds the room any more");
        state.set_room_remote(&room, false);
    }
}
