//! The in-memory cluster: what a node alone uses (the default, no external service), and
//! what tests use to run several nodes in one process. Every node given the same
//! [`MemoryCluster`] sees the same registry, directory and bus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use manifold_api::{ParticipantId, RoomName};
use tokio::sync::mpsc;

use crate::bus::check_subject;
use crate::{
    BoxFuture, Bus, BusMessage, ClusterError, MemberRecord, NodeId, NodeInfo, NodeRegistry,
    RoomDirectory, Subscription, subject_matches,
};

/// The time a registry judges heartbeats by: the wall clock's monotonic `Instant`, or a
/// test's own.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Most subscriptions one in-memory bus holds (each is a bounded queue).
pub const MAX_SUBSCRIPTIONS: usize = 4096;

#[derive(Default)]
struct State {
    nodes: HashMap<NodeId, (NodeInfo, Instant)>,
    /// Per room, its members in join order.
    rooms: HashMap<RoomName, Vec<MemberRecord>>,
    subscriptions: Vec<(String, mpsc::Sender<BusMessage>)>,
}

/// One cluster's shared state, in this process.
#[derive(Clone)]
pub struct MemoryCluster {
    state: Arc<Mutex<State>>,
    ttl: Duration,
    clock: Clock,
    dropped: Arc<AtomicU64>,
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
            let now = (self.clock)();
            let mut s = self.state();
            match s.nodes.get(&node.id) {
                Some((_, at)) if self.alive(*at) => {}
                _ => {
                    return Err(ClusterError::Conflict(format!(
                        "node {} is not registered (its registration expired)",
                        node.id
                    )));
                }
            }
            s.nodes.insert(node.id.clone(), (node, now));
            Ok(())
        })
    }

    fn register(&self, node: NodeInfo) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            let now = (self.clock)();
            let mut s = self.state();
            if let Some((_, at)) = s.nodes.get(&node.id)
                && self.alive(*at)
            {
                return Err(ClusterError::Conflict(format!(
                    "another live node is registered as {}",
                    node.id
                )));
            }
            s.nodes.insert(node.id.clone(), (node, now));
            Ok(())
        })
    }

    fn deregister(&self, node: NodeId) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            self.state().nodes.remove(&node);
            Ok(())
        })
    }

    fn live(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, ClusterError>> {
        Box::pin(async move {
            let mut s = self.state();
            s.nodes.retain(|_, (_, at)| self.alive(*at));
            let mut live: Vec<NodeInfo> = s.nodes.values().map(|(n, _)| n.clone()).collect();
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
    use manifold_api::Identity;

    fn node(id: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId::parse(id).unwrap(),
            advertise_url: format!("http://{id}.example:8080"),
            participants: 0,
            load: 0.0,
            draining: false,
        }
    }

    fn member(p: u64, node: &str) -> MemberRecord {
        MemberRecord {
            participant: ParticipantId(p),
            node: NodeId::parse(node).unwrap(),
            identity: Identity::parse(&format!("user{p}")).unwrap(),
            name: format!("User {p}"),
            tracks: Vec::new(),
        }
    }

    /// A cluster on a clock the test moves.
    fn cluster(ttl: Duration) -> (MemoryCluster, Arc<Mutex<Instant>>) {
        let t = Arc::new(Mutex::new(Instant::now()));
        let clock = t.clone();
        let c = MemoryCluster::with_clock(ttl, Arc::new(move || *clock.lock().unwrap()));
        (c, t)
    }

    #[tokio::test]
    async fn a_node_that_stops_its_heartbeat_disappears_after_the_ttl() {
        let (c, t) = cluster(Duration::from_secs(10));
        c.register(node("a")).await.unwrap();
        c.register(node("b")).await.unwrap();
        assert_eq!(c.live().await.unwrap().len(), 2);
        *t.lock().unwrap() += Duration::from_secs(6);
        c.heartbeat(node("a")).await.unwrap();
        *t.lock().unwrap() += Duration::from_secs(6);
        let live = c.live().await.unwrap();
        assert_eq!(live, vec![node("a")], "b missed its heartbeats");
        // b cannot come back by heartbeat alone: it must register again.
        assert!(matches!(
            c.heartbeat(node("b")).await,
            Err(ClusterError::Conflict(_))
        ));
        c.register(node("b")).await.unwrap();
        c.deregister(NodeId::parse("a").unwrap()).await.unwrap();
        assert_eq!(c.live().await.unwrap(), vec![node("b")]);
    }

    #[tokio::test]
    async fn two_live_nodes_cannot_share_an_id() {
        let (c, t) = cluster(Duration::from_secs(10));
        c.register(node("a")).await.unwrap();
        let e = c.register(node("a")).await.unwrap_err();
        assert!(e.to_string().contains("a"), "{e}");
        // Once the first is gone, the id is free.
        *t.lock().unwrap() += Duration::from_secs(11);
        c.register(node("a")).await.unwrap();
    }

    #[tokio::test]
    async fn the_directory_lists_a_room_across_nodes_and_forgets_a_dead_node() {
        let (c, _) = cluster(Duration::from_secs(10));
        let room = RoomName::parse("r").unwrap();
        c.upsert(room.clone(), member(1, "a")).await.unwrap();
        c.upsert(room.clone(), member(2, "b")).await.unwrap();
        c.upsert(room.clone(), member(3, "a")).await.unwrap();
        let mut renamed = member(2, "b");
        renamed.name = "Bee".into();
        c.upsert(room.clone(), renamed).await.unwrap();
        let members = c.members(room.clone()).await.unwrap();
        let ids: Vec<u64> = members.iter().map(|m| m.participant.0).collect();
        assert_eq!(ids, vec![1, 2, 3], "join order, one record each");
        assert_eq!(members[1].name, "Bee");
        let nodes = c.nodes_of(room.clone()).await.unwrap();
        assert_eq!(nodes.len(), 2);
        let gone = c.forget_node(NodeId::parse("a").unwrap()).await.unwrap();
        assert_eq!(gone.len(), 2);
        assert_eq!(c.members(room.clone()).await.unwrap().len(), 1);
        c.remove(room.clone(), ParticipantId(2)).await.unwrap();
        assert!(c.members(room.clone()).await.unwrap().is_empty());
        assert!(c.nodes_of(room).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_bus_delivers_by_pattern_and_counts_what_a_slow_subscriber_loses() {
        let (c, _) = cluster(Duration::from_secs(10));
        let mut events = c.subscribe("room.*.events".into(), 8).await.unwrap();
        let mut slow = c.subscribe("room.>".into(), 1).await.unwrap();
        for i in 0..3u8 {
            c.publish("room.r1.events".into(), vec![i]).await.unwrap();
        }
        c.publish("room.r1.media".into(), vec![9]).await.unwrap();
        for i in 0..3u8 {
            let m = events.rx.try_recv().unwrap();
            assert_eq!((m.subject.as_str(), m.payload), ("room.r1.events", vec![i]));
        }
        assert!(events.rx.try_recv().is_err(), "media is not an event");
        assert_eq!(slow.rx.try_recv().unwrap().payload, vec![0]);
        assert_eq!(c.dropped(), 3, "the slow subscriber's queue held one");
        // Bad subjects are refused; a dropped subscription stops receiving.
        assert!(c.publish("room.*".into(), vec![]).await.is_err());
        assert!(c.subscribe("a.>.b".into(), 1).await.is_err());
        drop(slow);
        c.publish("room.r1.events".into(), vec![7]).await.unwrap();
        assert_eq!(c.dropped(), 3);
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(NodeId::parse("node-1_a").is_ok());
        for bad in ["", "Node", "a.b", "a b", &"x".repeat(65)] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
