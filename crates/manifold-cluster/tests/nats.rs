//! The bus over a real NATS (a `nats-server` of each test's own), between two nodes'
//! connections: the conformance behaviours every bus shares, then a server restart and a
//! server that is gone.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use manifold_cluster::conformance::{self, recv};
use manifold_cluster::nats::{NatsBus, NatsOptions};
use manifold_cluster::{Bus, ClusterError};

async fn bus(server: &Server) -> NatsBus {
    NatsBus::connect(&server.url(), NatsOptions::default())
        .await
        .expect("connect to the test's nats-server")
}

#[tokio::test]
async fn the_bus_delivers_by_pattern() {
    let server = Server::nats();
    let (a, b) = (bus(&server).await, bus(&server).await);
    conformance::the_bus_delivers_by_pattern(&a, &b).await;
    // And within one node.
    conformance::the_bus_delivers_by_pattern(&a, &a).await;
}

#[tokio::test]
async fn the_bus_counts_what_a_slow_subscriber_loses() {
    let server = Server::nats();
    let (a, b) = (bus(&server).await, bus(&server).await);
    conformance::the_bus_counts_what_a_slow_subscriber_loses(&a, &b).await;
}

#[tokio::test]
async fn bad_subjects_are_refused() {
    let server = Server::nats();
    conformance::bad_subjects_are_refused(&bus(&server).await).await;
}

#[tokio::test]
async fn a_payload_over_the_servers_limit_is_malformed() {
    let server = Server::nats();
    let a = bus(&server).await;
    // nats-server's default max_payload is 1 MiB.
    let e = a.publish("room.r.events".into(), vec![0; 2 << 20]).await;
    assert!(matches!(e, Err(ClusterError::Malformed(_))), "{e:?}");
    a.publish("room.r.events".into(), vec![0; 1000])
        .await
        .expect("a small one goes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_receives_again_after_the_server_restarts() {
    let mut server = Server::nats();
    let (a, b) = (bus(&server).await, bus(&server).await);
    let mut sub = b
        .subscribe("room.*.events".into(), 64)
        .await
        .expect("subscribe");
    a.publish("room.r.events".into(), b"before".to_vec())
        .await
        .expect("publish");
    assert_eq!(
        recv(&mut sub, "before the restart").await.payload,
        b"before"
    );

    server.kill();
    // Down: a publish is buffered or refused, within the timeout; never hangs.
    let started = Instant::now();
    let _ = a.publish("room.r.events".into(), b"down".to_vec()).await;
    assert!(started.elapsed() < Duration::from_secs(5));

    server.start_again();
    // Both clients reconnect by themselves and the subscription is made again; until then
    // what is published is lost, so keep publishing until one arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = a.publish("room.r.events".into(), b"after".to_vec()).await;
        match tokio::time::timeout(Duration::from_millis(200), sub.rx.recv()).await {
            Ok(Some(m)) if m.payload == b"after" => break,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the subscription ended"),
            Err(_) => assert!(
                Instant::now() < deadline,
                "nothing received within 30 s of the restart"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_while_the_server_is_gone_is_bounded() {
    let mut server = Server::nats();
    let options = NatsOptions {
        timeout: Duration::from_millis(300),
        publish_buffer: 4,
        ..NatsOptions::default()
    };
    let a = NatsBus::connect(&server.url(), options)
        .await
        .expect("connect");
    server.kill();
    // The client holds a few messages; past them a publish fails as unavailable after the
    // timeout, and every one returns.
    let started = Instant::now();
    let mut refused = 0;
    for _ in 0..64 {
        match a.publish("room.r.events".into(), vec![0; 64]).await {
            Ok(()) => {}
            Err(ClusterError::Unavailable(_)) => {
                refused += 1;
                if refused == 2 {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 2, "64 publishes to a dead server all buffered");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let e = a.subscribe("x".into(), 1).await.expect_err("no server");
    assert!(matches!(e, ClusterError::Unavailable(_)), "{e}");
}

#[tokio::test]
async fn a_server_that_is_not_there_is_unavailable_at_once() {
    let mut server = Server::nats();
    let url = server.url();
    server.kill();
    let options = NatsOptions {
        timeout: Duration::from_millis(500),
        ..NatsOptions::default()
    };
    let started = Instant::now();
    let e = NatsBus::connect(&url, options.clone())
        .await
        .err()
        .expect("no NATS to connect to");
    assert!(matches!(e, ClusterError::Unavailable(_)), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let secret = url.replace("nats://", "nats://ops:s3cret@");
    let e = NatsBus::connect(&secret, options)
        .await
        .err()
        .expect("no NATS to connect to");
    assert!(
        !e.to_string().contains("s3cret"),
        "the password in an error: {e}"
    );
    let e = NatsBus::connect("nats://ops:s3cret@127.0.0.1:port", NatsOptions::default())
        .await
        .err()
        .expect("not a URL");
    assert!(matches!(e, ClusterError::Malformed(_)), "{e}");
    assert!(!e.to_string().contains("s3cret"), "{e}");
}
