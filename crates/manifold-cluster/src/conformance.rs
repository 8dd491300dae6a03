//! What every implementation of the cluster traits does, written once: each function is one
//! behaviour, run as a test by the in-memory unit tests and by `tests/redis.rs` and
//! `tests/nats.rs` against real servers. A function panics, as a test does, when the
//! implementation under test misbehaves. Built for tests only (`cfg(test)` or the
//! `conformance` feature).
//!
//! Time is the caller's: `pass` lets a test clock run (a memory registry's, moved by hand)
//! or sleeps (a real server's). What a test waits for is polled in steps of the TTL up to a
//! generous bound, so no test asserts how fast a server is.

use std::future::Future;
use std::time::{Duration, Instant};

use manifold_api::protocol::{TrackInfo, TrackSource};
use manifold_api::{Identity, MediaKind, ParticipantId, RoomName, TrackId};

use crate::{
    BoxFuture, Bus, BusMessage, ClusterError, MAX_RECORD_BYTES, MemberRecord, NodeId, NodeInfo,
    NodeRegistry, RoomDirectory, Subscription,
};

/// Lets `Duration` of the test's time go by.
pub type Pass = dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync;

/// Longest a bus test waits for a message or a count, in real time.
pub const BUS_WAIT: Duration = Duration::from_secs(10);

/// Real time: `pass` sleeps.
pub fn sleep() -> Box<Pass> {
    Box::new(|d| Box::pin(tokio::time::sleep(d)))
}

/// A node called `id`.
pub fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: node_id(id),
        advertise_url: format!("http://{id}.example:8080"),
        participants: 0,
        load: 0.25,
        draining: false,
    }
}

/// A member of a room, `p` on `node`.
pub fn member(p: u64, node: &str) -> MemberRecord {
    MemberRecord {
        participant: ParticipantId(p),
        node: node_id(node),
        identity: Identity::parse(&format!("user{p}")).expect("a valid identity"),
        name: format!("User {p}"),
        metadata: serde_json::Value::Null,
        tracks: Vec::new(),
    }
}

fn node_id(id: &str) -> NodeId {
    NodeId::parse(id).expect("a valid node id")
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("a valid room name")
}

async fn live_ids(reg: &dyn NodeRegistry) -> Vec<String> {
    let live = reg.live().await.expect("live nodes");
    live.into_iter().map(|n| n.id.to_string()).collect()
}

async fn member_ids(dir: &dyn RoomDirectory, r: &str) -> Vec<u64> {
    let members = dir.members(room(r)).await.expect("members");
    members.into_iter().map(|m| m.participant.0).collect()
}

async fn nodes_of(dir: &dyn RoomDirectory, r: &str) -> Vec<String> {
    let nodes = dir.nodes_of(room(r)).await.expect("nodes of a room");
    nodes.into_iter().map(|n| n.to_string()).collect()
}

fn is_conflict<T>(r: &Result<T, ClusterError>) -> bool {
    matches!(r, Err(ClusterError::Conflict(_)))
}

fn is_malformed<T>(r: &Result<T, ClusterError>) -> bool {
    matches!(r, Err(ClusterError::Malformed(_)))
}

/// Let the test's time pass in steps of a twentieth of `ttl` until `done`, failing after
/// five TTLs.
async fn until<F, Fut>(pass: &Pass, ttl: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..100 {
        if done().await {
            return;
        }
        pass(ttl / 20).await;
    }
    panic!("waited five TTLs ({:?}) for {what}", ttl * 5);
}

/// Poll `done` in real time for up to [`BUS_WAIT`].
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + BUS_WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "waited {BUS_WAIT:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next message on `sub`, within [`BUS_WAIT`].
pub async fn recv(sub: &mut Subscription, what: &str) -> BusMessage {
    match tokio::time::timeout(BUS_WAIT, sub.rx.recv()).await {
        Ok(Some(m)) => m,
        Ok(None) => panic!("{what}: the subscription ended"),
        Err(_) => panic!("{what}: nothing within {BUS_WAIT:?}"),
    }
}

/// A node that stops its heartbeat is gone once its TTL has passed and comes back only by
/// registering again; a heartbeat carries the node's news; leaving takes effect at once.
pub async fn a_silent_node_disappears_after_the_ttl(reg: &dyn NodeRegistry, pass: &Pass) {
    let ttl = reg.ttl();
    reg.register(node("a")).await.expect("register a");
    reg.register(node("b")).await.expect("register b");
    assert_eq!(live_ids(reg).await, ["a", "b"]);
    pass(ttl * 3 / 5).await;
    let mut a = node("a");
    a.participants = 7;
    a.draining = true;
    reg.heartbeat(a.clone()).await.expect("heartbeat a");
    until(pass, ttl, "b to expire", || async {
        live_ids(reg).await == ["a"]
    })
    .await;
    assert_eq!(
        reg.live().await.expect("live"),
        vec![a],
        "a as its heartbeat said"
    );
    assert!(
        is_conflict(&reg.heartbeat(node("b")).await),
        "an expired node cannot come back by heartbeat alone"
    );
    reg.register(node("b")).await.expect("b registers again");
    reg.deregister(node_id("a")).await.expect("deregister a");
    assert_eq!(live_ids(reg).await, ["b"]);
}

/// Two processes, `a` and `b`, on one registry: while `a` holds an id, `b` is refused it and
/// can neither refresh nor remove `a`'s registration; once it has expired, `b` may take it
/// and `a` has lost it.
pub async fn a_live_node_id_is_not_shared(a: &dyn NodeRegistry, b: &dyn NodeRegistry, pass: &Pass) {
    let ttl = a.ttl();
    a.register(node("x")).await.expect("a registers x");
    let refused = b.register(node("x")).await;
    match &refused {
        Err(e @ ClusterError::Conflict(_)) => assert!(e.to_string().contains('x'), "{e}"),
        other => panic!("a second live x must be a conflict, got {other:?}"),
    }
    assert!(
        is_conflict(&a.register(node("x")).await),
        "registering a live id again is refused, even by its holder"
    );
    assert!(
        is_conflict(&b.heartbeat(node("x")).await),
        "b refreshing a's x"
    );
    b.deregister(node_id("x"))
        .await
        .expect("deregistering another's id does nothing");
    assert_eq!(live_ids(a).await, ["x"], "b cannot remove a's registration");
    until(pass, ttl, "x to expire", || async {
        live_ids(a).await.is_empty()
    })
    .await;
    b.register(node("x")).await.expect("an expired id is free");
    assert!(is_conflict(&a.heartbeat(node("x")).await), "a lost x to b");
    b.heartbeat(node("x")).await.expect("b holds x");
    assert_eq!(live_ids(b).await, ["x"]);
}

/// Records over [`MAX_RECORD_BYTES`] of JSON, and a load that is not a number, are refused
/// as malformed and not stored.
pub async fn oversized_records_are_refused(reg: &dyn NodeRegistry, dir: &dyn RoomDirectory) {
    let mut big = node("big");
    big.advertise_url = "x".repeat(MAX_RECORD_BYTES);
    assert!(is_malformed(&reg.register(big.clone()).await));
    assert!(live_ids(reg).await.is_empty());
    reg.register(node("big")).await.expect("register");
    assert!(is_malformed(&reg.heartbeat(big).await));
    // One at the bound is fine, registry overheads (a process token) notwithstanding.
    let mut at_the_bound = node("big");
    let base = serde_json::to_vec(&at_the_bound).expect("json").len();
    at_the_bound.advertise_url += &"x".repeat(MAX_RECORD_BYTES - base);
    reg.heartbeat(at_the_bound.clone())
        .await
        .expect("a record at the bound");
    assert_eq!(reg.live().await.expect("live"), vec![at_the_bound]);
    reg.heartbeat(node("big")).await.expect("heartbeat");
    let mut not_a_number = node("big");
    not_a_number.load = f32::NAN;
    assert!(is_malformed(&reg.heartbeat(not_a_number).await));
    assert_eq!(
        reg.live().await.expect("live"),
        vec![node("big")],
        "the refused heartbeat changed nothing"
    );
    let mut m = member(1, "a");
    m.name = "y".repeat(MAX_RECORD_BYTES);
    assert!(is_malformed(&dir.upsert(room("r"), m).await));
    assert!(member_ids(dir, "r").await.is_empty());
    assert!(nodes_of(dir, "r").await.is_empty());
}

/// A room's members across nodes, in the order they joined, one record each (the latest);
/// the nodes holding them, kept right as members come, move and go.
pub async fn the_directory_lists_a_room_across_nodes(dir: &dyn RoomDirectory) {
    let r = room("r");
    for (p, n) in [(1, "a"), (2, "b"), (3, "a")] {
        dir.upsert(r.clone(), member(p, n)).await.expect("upsert");
    }
    let mut renamed = member(2, "b");
    renamed.name = "Bee".into();
    renamed.metadata = serde_json::json!({"team": "blue"});
    renamed.tracks.push(TrackInfo {
        id: TrackId(0xbee),
        kind: MediaKind::Video,
        source: TrackSource::Camera,
        name: "cam".into(),
        muted: false,
    });
    dir.upsert(r.clone(), renamed.clone())
        .await
        .expect("upsert");
    let members = dir.members(r.clone()).await.expect("members");
    assert_eq!(
        members,
        vec![member(1, "a"), renamed, member(3, "a")],
        "join order, one record each, the latest"
    );
    assert_eq!(nodes_of(dir, "r").await, ["a", "b"]);

    // A member whose record names another node moves there.
    dir.upsert(room("s"), member(4, "c")).await.expect("upsert");
    dir.upsert(room("s"), member(4, "b")).await.expect("upsert");
    assert_eq!(nodes_of(dir, "s").await, ["b"]);
    assert!(member_ids(dir, "nowhere").await.is_empty());
    assert!(nodes_of(dir, "nowhere").await.is_empty());

    dir.remove(r.clone(), ParticipantId(2))
        .await
        .expect("remove");
    assert_eq!(member_ids(dir, "r").await, [1, 3]);
    assert_eq!(nodes_of(dir, "r").await, ["a"]);
    dir.remove(r.clone(), ParticipantId(99))
        .await
        .expect("removing a stranger does nothing");
    dir.remove(r.clone(), ParticipantId(1))
        .await
        .expect("remove");
    dir.remove(r.clone(), ParticipantId(3))
        .await
        .expect("remove");
    assert!(member_ids(dir, "r").await.is_empty());
    assert!(nodes_of(dir, "r").await.is_empty());
    // Joining again puts a member last.
    dir.upsert(room("s"), member(1, "a")).await.expect("upsert");
    dir.remove(room("s"), ParticipantId(4))
        .await
        .expect("remove");
    dir.upsert(room("s"), member(4, "b")).await.expect("upsert");
    assert_eq!(member_ids(dir, "s").await, [1, 4]);
}

/// A dead node's members leave every room they were in, and are returned (by room, then
/// participant); the others stay; forgetting twice forgets nothing more; the node may come
/// back.
pub async fn forgetting_a_node_removes_its_members_everywhere(dir: &dyn RoomDirectory) {
    for (r, p, n) in [("r", 1, "a"), ("r", 2, "b"), ("r", 3, "a"), ("s", 5, "c")] {
        dir.upsert(room(r), member(p, n)).await.expect("upsert");
    }
    dir.upsert(room("s"), member(4, "a")).await.expect("upsert");
    let gone = dir.forget_node(node_id("a")).await.expect("forget a");
    assert_eq!(
        gone,
        vec![
            (room("r"), member(1, "a")),
            (room("r"), member(3, "a")),
            (room("s"), member(4, "a")),
        ]
    );
    assert_eq!(member_ids(dir, "r").await, [2]);
    assert_eq!(member_ids(dir, "s").await, [5]);
    assert_eq!(nodes_of(dir, "r").await, ["b"]);
    assert_eq!(nodes_of(dir, "s").await, ["c"]);
    assert!(
        dir.forget_node(node_id("a"))
            .await
            .expect("forget")
            .is_empty()
    );
    dir.upsert(room("r"), member(6, "a"))
        .await
        .expect("a is back");
    assert_eq!(member_ids(dir, "r").await, [2, 6]);
    assert_eq!(nodes_of(dir, "r").await, ["a", "b"]);
    let gone = dir.forget_node(node_id("a")).await.expect("forget a");
    assert_eq!(gone, vec![(room("r"), member(6, "a"))]);
}

async fn room_list(dir: &dyn RoomDirectory) -> Vec<(String, Vec<String>, usize)> {
    let rooms = dir.rooms().await.expect("rooms");
    rooms
        .into_iter()
        .map(|r| {
            let nodes = r.nodes.into_iter().map(|n| n.to_string()).collect();
            (r.room.to_string(), nodes, r.members)
        })
        .collect()
}

/// Every room with members is listed, by name, with its nodes and member count, kept right
/// as members come, move and go and as a node is forgotten; a room nobody is in is not.
pub async fn the_directory_lists_its_rooms(dir: &dyn RoomDirectory) {
    assert!(room_list(dir).await.is_empty());
    for (r, p, n) in [("r", 1, "b"), ("r", 2, "a"), ("r", 3, "b"), ("q.1", 4, "c")] {
        dir.upsert(room(r), member(p, n)).await.expect("upsert");
    }
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        room_list(dir).await,
        vec![
            ("q.1".to_owned(), s(&["c"]), 1),
            ("r".to_owned(), s(&["a", "b"]), 3)
        ]
    );
    dir.upsert(room("r"), member(2, "b"))
        .await
        .expect("a moves to b");
    dir.remove(room("q.1"), ParticipantId(4))
        .await
        .expect("remove");
    assert_eq!(room_list(dir).await, vec![("r".to_owned(), s(&["b"]), 3)]);
    dir.upsert(room("t"), member(5, "a")).await.expect("upsert");
    dir.forget_node(node_id("b")).await.expect("forget b");
    assert_eq!(room_list(dir).await, vec![("t".to_owned(), s(&["a"]), 1)]);
    dir.forget_node(node_id("a")).await.expect("forget a");
    assert!(room_list(dir).await.is_empty());
}

fn message(subject: &str, payload: u8) -> BusMessage {
    BusMessage {
        subject: subject.into(),
        payload: vec![payload],
    }
}

/// Messages reach the subscriptions whose pattern matches, in the order they were sent
/// (`*` one token, `>` one or more); a dropped subscription receives no more. `publisher`
/// and `subscriber` may be one bus or two nodes' on one server.
pub async fn the_bus_delivers_by_pattern(publisher: &dyn Bus, subscriber: &dyn Bus) {
    let before = subscriber.dropped();
    let mut events = subscriber
        .subscribe("room.*.events".into(), 8)
        .await
        .expect("subscribe");
    let mut all = subscriber
        .subscribe("room.>".into(), 8)
        .await
        .expect("subscribe");
    // What must not arrive is sent before what must, so its absence shows once the last is
    // in.
    for (subject, payload) in [
        ("room.r1.events", 0),
        ("room.r1.events", 1),
        ("room.r1.media", 9),
        ("room", 5),
        ("elsewhere.r1.events", 6),
        ("room.r2.events", 2),
    ] {
        publisher
            .publish(subject.into(), vec![payload])
            .await
            .expect("publish");
    }
    for want in [
        message("room.r1.events", 0),
        message("room.r1.events", 1),
        message("room.r2.events", 2),
    ] {
        assert_eq!(recv(&mut events, "room.*.events").await, want);
    }
    assert!(events.rx.try_recv().is_err(), "media or others as events");
    for want in [
        message("room.r1.events", 0),
        message("room.r1.events", 1),
        message("room.r1.media", 9),
        message("room.r2.events", 2),
    ] {
        assert_eq!(recv(&mut all, "room.>").await, want);
    }
    assert!(all.rx.try_recv().is_err(), "`room.>` matched `room`");
    drop(all);
    publisher
        .publish("room.r3.events".into(), vec![3])
        .await
        .expect("publish");
    assert_eq!(
        recv(&mut events, "after a drop").await,
        message("room.r3.events", 3)
    );
    assert_eq!(subscriber.dropped(), before, "nothing was lost");
}

/// A subscriber whose queue is full loses what does not fit, counted in `dropped()`; the
/// sender and the other subscribers do not notice.
pub async fn the_bus_counts_what_a_slow_subscriber_loses(
    publisher: &dyn Bus,
    subscriber: &dyn Bus,
) {
    let before = subscriber.dropped();
    let mut slow = subscriber
        .subscribe("slow.>".into(), 1)
        .await
        .expect("subscribe");
    let mut probe = subscriber
        .subscribe("slow.>".into(), 16)
        .await
        .expect("subscribe");
    for i in 0..4u8 {
        publisher
            .publish("slow.a".into(), vec![i])
            .await
            .expect("publish");
    }
    for i in 0..4u8 {
        assert_eq!(recv(&mut probe, "probe").await, message("slow.a", i));
    }
    eventually("three messages counted as dropped", || async {
        subscriber.dropped() - before == 3
    })
    .await;
    assert_eq!(recv(&mut slow, "slow").await, message("slow.a", 0));
    assert!(slow.rx.try_recv().is_err(), "the queue held one");
    drop(slow);
    publisher
        .publish("slow.a".into(), vec![9])
        .await
        .expect("publish");
    assert_eq!(recv(&mut probe, "probe").await, message("slow.a", 9));
    assert_eq!(
        subscriber.dropped() - before,
        3,
        "a dropped subscription loses nothing more"
    );
}

/// Subjects with wildcards, empty tokens or over [`crate::MAX_SUBJECT_BYTES`] are refused.
pub async fn bad_subjects_are_refused(bus: &dyn Bus) {
    for subject in ["room.*", "room.>", "", "a..b", "a b", &"x".repeat(300)] {
        assert!(
            is_malformed(&bus.publish(subject.into(), vec![]).await),
            "publish {subject:?}"
        );
    }
    for pattern in ["a.>.b", "a.b*", "", &"x".repeat(300)] {
        assert!(
            is_malformed(&bus.subscribe(pattern.into(), 1).await),
            "subscribe {pattern:?}"
        );
    }
}
