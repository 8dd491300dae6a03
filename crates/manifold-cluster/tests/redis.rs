//! The registry and directory in a real Redis (a `redis-server` of each test's own): the
//! conformance behaviours every implementation shares, then what only a server can do:
//! expire by itself, restart and lose everything, hold data that is not ours, be gone.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use manifold_api::RoomName;
use manifold_cluster::conformance::{self, member, node};
use manifold_cluster::redis::{DEFAULT_TIMEOUT, RedisCluster};
use manifold_cluster::{ClusterError, NodeId, NodeRegistry, RoomDirectory};

/// Long enough that a loaded machine keeps a heartbeat well inside it, short enough to wait.
const TTL: Duration = Duration::from_secs(2);

async fn cluster(server: &Server) -> RedisCluster {
    RedisCluster::connect(&server.url(), TTL, DEFAULT_TIMEOUT)
        .await
        .expect("connect to the test's redis-server")
}

#[tokio::test]
async fn a_silent_node_disappears_after_the_ttl() {
    let server = Server::redis();
    let c = cluster(&server).await;
    conformance::a_silent_node_disappears_after_the_ttl(&c, &*conformance::sleep()).await;
}

#[tokio::test]
async fn a_live_node_id_is_not_shared() {
    let server = Server::redis();
    let (a, b) = (cluster(&server).await, cluster(&server).await);
    conformance::a_live_node_id_is_not_shared(&a, &b, &*conformance::sleep()).await;
}

#[tokio::test]
async fn oversized_records_are_refused() {
    let server = Server::redis();
    let c = cluster(&server).await;
    conformance::oversized_records_are_refused(&c, &c).await;
}

#[tokio::test]
async fn the_directory_lists_a_room_across_nodes() {
    let server = Server::redis();
    let c = cluster(&server).await;
    conformance::the_directory_lists_a_room_across_nodes(&c).await;
}

#[tokio::test]
async fn forgetting_a_node_removes_its_members_everywhere() {
    let server = Server::redis();
    let c = cluster(&server).await;
    conformance::forgetting_a_node_removes_its_members_everywhere(&c).await;
}

#[tokio::test]
async fn the_directory_lists_its_rooms() {
    let server = Server::redis();
    let c = cluster(&server).await;
    conformance::the_directory_lists_its_rooms(&c).await;
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("room name")
}

/// The control plane's heartbeat loop in short: refresh, and register again when the
/// registration is gone; retried until it holds or `limit` passes.
async fn heartbeat_until_registered(c: &RedisCluster, id: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let result = match c.heartbeat(node(id)).await {
            Err(ClusterError::Conflict(_)) => c.register(node(id)).await,
            other => other,
        };
        match result {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "still not registered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_is_healed_by_the_next_heartbeat() {
    let mut server = Server::redis();
    let c = cluster(&server).await;
    c.register(node("a")).await.expect("register");
    c.upsert(room("r"), member(1, "a")).await.expect("upsert");

    server.kill();
    // Down: operations fail as unavailable, within the timeout, never hang.
    let started = Instant::now();
    let down = c.heartbeat(node("a")).await;
    assert!(
        matches!(down, Err(ClusterError::Unavailable(_))),
        "{down:?}"
    );
    assert!(
        started.elapsed() < DEFAULT_TIMEOUT * 3,
        "a dead Redis took {:?} to report",
        started.elapsed()
    );
    assert!(matches!(
        c.members(room("r")).await,
        Err(ClusterError::Unavailable(_))
    ));

    // Back, empty: the heartbeat finds no registration (a conflict), registers again.
    server.start_again();
    heartbeat_until_registered(&c, "a", Duration::from_secs(30)).await;
    assert_eq!(c.live().await.expect("live"), vec![node("a")]);
    assert!(c.members(room("r")).await.expect("members").is_empty());
    c.upsert(room("r"), member(2, "a"))
        .await
        .expect("upsert after the restart");
    assert_eq!(
        c.members(room("r")).await.expect("members"),
        vec![member(2, "a")]
    );
}

#[tokio::test]
async fn a_redis_that_is_not_there_is_unavailable_at_once() {
    let mut server = Server::redis();
    let url = server.url();
    server.kill();
    let started = Instant::now();
    let e = RedisCluster::connect(&url, TTL, Duration::from_millis(500))
        .await
        .err()
        .expect("no Redis to connect to");
    assert!(matches!(e, ClusterError::Unavailable(_)), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let e = RedisCluster::connect(
        "redis://:s3cret@127.0.0.1:1",
        TTL,
        Duration::from_millis(500),
    )
    .await
    .err()
    .expect("nothing on port 1");
    assert!(
        !e.to_string().contains("s3cret"),
        "the password in an error: {e}"
    );
    let e = RedisCluster::connect("redis://:s3cret@127.0.0.1:port", TTL, DEFAULT_TIMEOUT)
        .await
        .err()
        .expect("not a URL");
    assert!(matches!(e, ClusterError::Malformed(_)), "{e}");
    assert!(!e.to_string().contains("s3cret"), "{e}");
}

#[tokio::test]
async fn stored_data_that_is_not_ours_is_malformed_not_a_panic() {
    let server = Server::redis();
    let c = cluster(&server).await;
    let raw = redis::Client::open(server.url()).expect("client");
    let mut raw = raw
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let set = |args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd
    };
    // A registration that is not JSON, a member record of the wrong shape, a room's nodes
    // key of the wrong type.
    for args in [
        &["SET", "manifold:node:x", "not json"][..],
        &["SADD", "manifold:nodes", "x"],
        &[
            "HSET",
            "manifold:room:r:members",
            "p0000000000000001",
            "{\"participant\":1}",
        ],
        &["ZADD", "manifold:room:r:order", "1", "p0000000000000001"],
        &["SET", "manifold:room:r:nodes", "a string"],
    ] {
        let _: () = set(args).query_async(&mut raw).await.expect("raw write");
    }
    assert!(matches!(c.live().await, Err(ClusterError::Malformed(_))));
    assert!(matches!(
        c.members(room("r")).await,
        Err(ClusterError::Malformed(_))
    ));
    assert!(matches!(
        c.nodes_of(room("r")).await,
        Err(ClusterError::Malformed(_))
    ));
    // A heartbeat of ours does not take over a key we cannot read.
    assert!(matches!(
        c.heartbeat(node("x")).await,
        Err(ClusterError::Conflict(_))
    ));
    assert!(matches!(
        c.register(node("x")).await,
        Err(ClusterError::Conflict(_))
    ));
    c.deregister(NodeId::parse("x").expect("id"))
        .await
        .expect("deregister leaves what is not ours");
}
