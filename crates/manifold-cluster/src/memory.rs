//! The in-memory cluster: what a node alone uses (the default, no external service), and
//! what tests use to run several nodes in one process. Every node given the same
//! [`MemoryCluster`] sees the same registry, directory and bus; [`MemoryCluster::peer`] is
//! another process's view of it, owning registrations apart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use manifold_api::{ParticipantId, RoomName};
use tokio::sync::mpsc;

pub use crate::bus::MAX_SUBSCRIPTIONS;
use crate::bus::check_subject;
use crate::directory::sort_forgotten;
use crate::{
    BoxFuture, Bus, BusMessage, ClusterError, MAX_LISTED_ROOMS, MemberRecord, NodeId, NodeInfo,
    NodeRegistry, RoomDirectory, RoomSummary, Subscription, record_json, subject_matches,
};

/// The time a registry judges heartbeats by: the wall clock's monotonic `Instant`, or a
/// test's own.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Which process registered a node (see [`MemoryCluster::peer`]).
type Owner = u64;

static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct State {
    nodes: HashMap<NodeId, Registration>,
    /// Per room, its members in join order.
    rooms: HashMap<RoomName, Vec<MemberRecord>>,
    subscriptions: Vec<(String, mpsc::Sender<BusMessage>)>,
}

struct Registration {
    info: NodeInfo,
    at: Instant,
    owner: Owner,
}

/// One cluster's shared state, in this process.
#[derive(Clone)]
pub struct MemoryCluster {
    state: Arc<Mutex<State>>,
    ttl: Duration,
    clock: Clock,
    dropped: Arc<AtomicU64>,
    owner: Owner,
}

impl MemoryCluster {
    /// A cluster whose heartbeats last `ttl`, on the real clock.
    pub fn new(ttl: Duration) -> Self {
        Self::with_clock(ttl, Arc::new(Instant::now))
    }

    /// A cluster on a clock of the caller's (tests move time by hand).
    pub fn with_clock(ttl: Duration, clock: Clock) -> Self {
        MemoryCluster {
            state: Arc::new(Mutex::new(State::default())),
            ttl,
            clock,
            dropped: Arc::new(AtomicU64::new(0)),
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The same cluster as another process sees it: its registrations are its own, so it
    /// cannot refresh or remove this one's (as two processes on one Redis).
    pub fn peer(&self) -> Self {
        MemoryCluster {
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            ..self.clone()
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under every operation; a panic elsewhere while it was
        // held leaves nothing half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alive(&self, at: Instant) -> bool {
        (self.clock)().saturating_duration_since(at) < self.ttl
    }
}

impl NodeRegistry for MemoryCluster {
    fn heartbeat(&self, node: NodeInfo) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            node.check()?;
            let now = (self.clock)();
            let mut s = self.state();
            match s.nodes.get(&node.id) {
                Some(r) if self.alive(r.at) && r.owner == self.owner => {}
                _ => {
                    return Err(ClusterError::Conflict(format!(
                        "node {} is not registered by this process (its registration expired)",
                        node.id
                    )));
                }
            }
            let owner = self.owner;
            s.nodes.insert(
                node.id.clone(),
                Registration {
                    info: node,
                    at: now,
                    owner,
                },
            );
            Ok(())
        })
    }

    fn register(&self, node: NodeInfo) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            node.check()?;
            let now = (self.clock)();
            let mut s = self.state();
            if let Some(r) = s.nodes.get(&node.id)
                && self.alive(r.at)
            {
                return Err(ClusterError::Conflict(format!(
                    "another live node is registered as {}",
                    node.id
                )));
            }
            let owner = self.owner;
            s.nodes.insert(
                node.id.clone(),
                Registration {
                    info: node,
                    at: now,
                    owner,
                },
            );
            Ok(())
        })
    }

    fn deregister(&self, node: NodeId) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            let mut s = self.state();
            if s.nodes.get(&node).is_some_and(|r| r.owner == self.owner) {
                s.nodes.remove(&node);
            }
            Ok(())
        })
    }

    fn live(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, ClusterError>> {
        Box::pin(async move {
            let mut s = self.state();
            s.nodes.retain(|_, r| self.alive(r.at));
            let mut live: Vec<NodeInfo> = s.nodes.values().map(|r| r.info.clone()).collect();
            live.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(live)
        })
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl RoomDirectory for MemoryCluster {
    fn upsert(
        &self,
        room: RoomName,
        member: MemberRecord,
    ) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            record_json("member record", &member)?;
            let mut s = self.state();
            let members = s.rooms.entry(room).or_default();
            match members
                .iter_mut()
                .find(|m| m.participant == member.participant)
            {
                Some(m) => *m = member,
                None => members.push(member),
            }
            Ok(())
        })
    }

    fn remove(
        &self,
        room: RoomName,
        participant: ParticipantId,
    ) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            let mut s = self.state();
            if let Some(members) = s.rooms.get_mut(&room) {
                members.retain(|m| m.participant != participant);
                if members.is_empty() {
                    s.rooms.remove(&room);
                }
            }
            Ok(())
        })
    }

    fn members(&self, room: RoomName) -> BoxFuture<'_, Result<Vec<MemberRecord>, ClusterError>> {
        Box::pin(async move { Ok(self.state().rooms.get(&room).cloned().unwrap_or_default()) })
    }

    fn nodes_of(&self, room: RoomName) -> BoxFuture<'_, Result<Vec<NodeId>, ClusterError>> {
        Box::pin(async move {
            let s = self.state();
            let mut nodes: Vec<NodeId> = s
                .rooms
                .get(&room)
                .into_iter()
                .flatten()
                .map(|m| m.node.clone())
                .collect();
            nodes.sort();
            nodes.dedup();
            Ok(nodes)
        })
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<RoomSummary>, ClusterError>> {
        Box::pin(async move {
            let s = self.state();
            let mut rooms: Vec<RoomSummary> = s
                .rooms
                .iter()
                .map(|(room, members)| {
                    let mut nodes: Vec<NodeId> = members.iter().map(|m| m.node.clone()).collect();
                    nodes.sort();
                    nodes.dedup();
                    RoomSummary {
                        room: room.clone(),
                        nodes,
                        members: members.len(),
                    }
                })
                .collect();
            rooms.sort_by(|a, b| a.room.cmp(&b.room));
            rooms.truncate(MAX_LISTED_ROOMS);
            Ok(rooms)
        })
    }

    fn forget_node(
        &self,
        node: NodeId,
    ) -> BoxFuture<'_, Result<Vec<(RoomName, MemberRecord)>, ClusterError>> {
        Box::pin(async move {
            let mut s = self.state();
            let mut gone = Vec::new();
            for (room, members) in s.rooms.iter_mut() {
                let (lost, kept): (Vec<_>, Vec<_>) = std::mem::take(members)
                    .into_iter()
                    .partition(|m| m.node == node);
                *members = kept;
                gone.extend(lost.into_iter().map(|m| (room.clone(), m)));
            }
            s.rooms.retain(|_, members| !members.is_empty());
            sort_forgotten(&mut gone);
            Ok(gone)
        })
    }
}

impl Bus for MemoryCluster {
    fn publish(
        &self,
        subject: String,
        payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            check_subject(&subject, false)?;
            let mut s = self.state();
            // A subscription whose receiver is gone is dropped here.
            s.subscriptions.retain(|(_, tx)| !tx.is_closed());
            for (pattern, tx) in &s.subscriptions {
                if !subject_matches(pattern, &subject) {
                    continue;
                }
                let message = BusMessage {
                    subject: subject.clone(),
                    payload: payload.clone(),
                };
                if tx.try_send(message).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    }

    fn subscribe(
        &self,
        pattern: String,
        capacity: usize,
    ) -> BoxFuture<'_, Result<Subscription, ClusterError>> {
        Box::pin(async move {
            check_subject(&pattern, true)?;
            let mut s = self.state();
            s.subscriptions.retain(|(_, tx)| !tx.is_closed());
            if s.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                return Err(ClusterError::Unavailable(format!(
                    "at most {MAX_SUBSCRIPTIONS} subscriptions"
                )));
            }
            let (tx, rx) = mpsc::channel(capacity.max(1));
            s.subscriptions.push((pattern, tx));
            Ok(Subscription { rx })
        })
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, Pass};

    /// A cluster on a clock that only the test moves, and what moves it.
    fn cluster(ttl: Duration) -> (MemoryCluster, Box<Pass>) {
        let t = Arc::new(Mutex::new(Instant::now()));
        let clock = t.clone();
        let c = MemoryCluster::with_clock(
            ttl,
            Arc::new(move || *clock.lock().unwrap_or_else(|e| e.into_inner())),
        );
        let pass: Box<Pass> = Box::new(move |d| {
            *t.lock().unwrap_or_else(|e| e.into_inner()) += d;
            Box::pin(async {})
        });
        (c, pass)
    }

    const TTL: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_silent_node_disappears_after_the_ttl() {
        let (c, pass) = cluster(TTL);
        conformance::a_silent_node_disappears_after_the_ttl(&c, &*pass).await;
    }

    #[tokio::test]
    async fn a_live_node_id_is_not_shared() {
        let (c, pass) = cluster(TTL);
        conformance::a_live_node_id_is_not_shared(&c, &c.peer(), &*pass).await;
    }

    #[tokio::test]
    async fn oversized_records_are_refused() {
        let (c, _) = cluster(TTL);
        conformance::oversized_records_are_refused(&c, &c).await;
    }

    #[tokio::test]
    async fn the_directory_lists_a_room_across_nodes() {
        let (c, _) = cluster(TTL);
        conformance::the_directory_lists_a_room_across_nodes(&c).await;
    }

    #[tokio::test]
    async fn forgetting_a_node_removes_its_members_everywhere() {
        let (c, _) = cluster(TTL);
        conformance::forgetting_a_node_removes_its_members_everywhere(&c).await;
    }

    #[tokio::test]
    async fn the_directory_lists_its_rooms() {
        let (c, _) = cluster(TTL);
        conformance::the_directory_lists_its_rooms(&c).await;
    }

    #[tokio::test]
    async fn the_bus_delivers_by_pattern() {
        let (c, _) = cluster(TTL);
        conformance::the_bus_delivers_by_pattern(&c, &c).await;
    }

    #[tokio::test]
    async fn the_bus_counts_what_a_slow_subscriber_loses() {
        let (c, _) = cluster(TTL);
        conformance::the_bus_counts_what_a_slow_subscriber_loses(&c, &c).await;
    }

    #[tokio::test]
    async fn bad_subjects_are_refused() {
        let (c, _) = cluster(TTL);
        conformance::bad_subjects_are_refused(&c).await;
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(NodeId::parse("node-1_a").is_ok());
        for bad in ["", "Node", "a.b", "a b", &"x".repeat(65)] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
