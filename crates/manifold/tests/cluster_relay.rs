//! Two nodes on one real NATS: a WHIP publisher on node A, WHEP players on node B. Node B
//! says it holds the room, node A relays the publisher's tracks to it over the bus, once
//! per (track, node), and B's players receive them as from a local publisher; their
//! keyframe requests travel back. No timing assertions (generous waits only).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::Server;
use manifold_loadgen::{Scenario, Target, WhipWhep, run};

/// The cluster tests' `nats-server` process.
#[path = "../../manifold-cluster/tests/common/mod.rs"]
mod services;

#[test]
fn a_whep_player_on_one_node_plays_a_publisher_on_another() {
    let nats = services::Server::nats();
    let nats_url = nats.url();
    let env = |id: &'static str| {
        [
            ("MANIFOLD_CLUSTER__NODE_ID", id),
            ("MANIFOLD_CLUSTER__HEARTBEAT_SECS", "1"),
            ("MANIFOLD_CLUSTER__NATS_URL", nats_url.as_str()),
        ]
    };
    let a = Server::start(&[], &env("node-a"));
    let b = Server::start(&[], &env("node-b"));
    let target = Target::WhipWhep(WhipWhep::new(
        a.url("/whip/{room}?identity={publisher}"),
        b.url("/whep/{room}/{publisher}"),
        None,
        "lg-cluster-".into(),
    ));
    let scenario = Scenario {
        rooms: 1,
        publishers: 1,
        subscribers: 3,
        video: true,
        video_bitrate_bps: 500_000,
        fps: 30,
        keyframe_interval_s: 0.0,
        audio_bytes: 80,
        duration: Duration::from_secs(8),
        ramp_per_s: 20.0,
        threads: 1,
        max_in_flight: 4,
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..Scenario::default()
    };
    let report = run(scenario, target).expect("run");
    println!("{}", report.summary());
    let ag = &report.aggregate;
    assert_eq!(ag.failed, 0, "failures: {:?}", ag.failures);
    assert_eq!((ag.publishers, ag.subscribers), (1, 3));
    assert_eq!(ag.streams, 6, "every player on node B got audio and video");

    let (sa, sb) = (a.stats(None), b.stats(None));
    println!("node A: {sa}\nnode B: {sb}");
    let n = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap_or(0);
    assert!(n(&sa, "rtp_in") > 0, "A took the publisher's media");
    assert!(n(&sb, "relay_in") > 0, "B took it from the bus");
    assert!(
        n(&sb, "rtp_out") >= n(&sb, "relay_in"),
        "B forwarded it to its players"
    );
    assert_eq!(n(&sb, "rtp_in"), 0, "nobody publishes on B");
}
