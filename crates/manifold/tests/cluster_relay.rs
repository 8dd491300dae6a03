//! Two nodes on one real NATS: a WHIP publisher on node A, WHEP players on node B. Node B
//! says it holds the room, node A relays the publisher's tracks to it over the bus, once
//! per (track, node), and B's players receive them as from a local publisher; their
//! keyframe requests travel back; a NATS restart stops nothing within a node and the relay
//! comes back by itself. A draining node sends new sessions elsewhere. No timing assertions
//! (generous waits only).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::Server;
use manifold_loadgen::{Scenario, Target, WhipWhep, run};

/// The cluster tests' `nats-server` process.
#[path = "../../manifold-cluster/tests/common/mod.rs"]
mod services;

/// Node `id`'s environment: on the test's NATS (no Redis: each node keeps its own
/// registry), a heartbeat a second.
fn node_env<'a>(id: &'a str, nats_url: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("MANIFOLD_CLUSTER__NODE_ID", id),
        ("MANIFOLD_CLUSTER__HEARTBEAT_SECS", "1"),
        ("MANIFOLD_CLUSTER__NATS_URL", nats_url),
    ]
}

#[test]
fn a_whep_player_on_one_node_plays_a_publisher_on_another() {
    let nats = services::Server::nats();
    let nats_url = nats.url();
    let env = |id| node_env(id, &nats_url);
    let a = Server::start(&[], &env("node-a"));
    // Node B spreads the room over both its workers: the second one starts holding it after
    // the first took the tracks' descriptions, and must get them too.
    let b_env: Vec<(&str, &str)> = env("node-b")
        .into_iter()
        .chain([("MANIFOLD_MEDIA__ROOM_SPREAD_AFTER", "0")])
        .collect();
    let b = Server::start(&[], &b_env);
    let target = Target::WhipWhep(WhipWhep::new(
        a.url("/whip/{room}?identity={publisher}"),
        b.url("/whep/{room}/{publisher}"),
        None,
        "lg-cluster-".into(),
    ));
    let scenario = Scenario {
        rooms: 1,
        publishers: 1,
        subscribers: 4,
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
    assert_eq!((ag.publishers, ag.subscribers), (1, 4));
    assert_eq!(ag.streams, 8, "every player on node B got audio and video");

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
    let bridge = |s: &serde_json::Value, k: &str| s["cluster"]["bridge"][k].as_u64().unwrap_or(0);
    // Each frame once on the bus; B hands it to each of its workers holding the room.
    assert!(
        bridge(&sa, "frames_out") * 2 >= n(&sb, "relay_in") && bridge(&sa, "frames_out") > 0,
        "A put them on the bus once"
    );
    assert_eq!(bridge(&sa, "frames_failed"), 0);
    assert!(
        bridge(&sb, "frames_in") >= n(&sb, "relay_in"),
        "B took them off it"
    );
    assert_eq!(bridge(&sb, "frames_refused"), 0);
}

#[test]
fn a_draining_node_sends_new_sessions_to_another_node() {
    let redis = services::Server::redis();
    let nats = services::Server::nats();
    let (redis_url, nats_url) = (redis.url(), nats.url());
    let env = |id: &'static str| {
        [
            ("MANIFOLD_CLUSTER__NODE_ID", id),
            ("MANIFOLD_CLUSTER__HEARTBEAT_SECS", "1"),
            ("MANIFOLD_CLUSTER__REDIS_URL", redis_url.as_str()),
            ("MANIFOLD_CLUSTER__NATS_URL", nats_url.as_str()),
            ("MANIFOLD_HTTP__DRAIN_TIMEOUT_SECS", "20"),
        ]
    };
    let a = Server::start(&[], &env("node-a"));
    let b = Server::start(&[], &env("node-b"));
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let offer = || {
        common::str0m_offer(
            &[(
                str0m::media::MediaKind::Audio,
                str0m::media::Direction::SendOnly,
            )],
            |c| c,
        )
    };
    let post = |url: String| {
        http.post(url)
            .header("content-type", "application/sdp")
            .body(offer())
            .send()
            .unwrap()
    };
    // A session keeps node A draining (it waits for its sessions before it stops).
    assert_eq!(
        post(a.url("/whip/stays?identity=early")).status().as_u16(),
        201
    );
    // Both nodes know each other before A drains.
    assert!(common::wait_until(Duration::from_secs(10), || {
        let nodes: serde_json::Value = http
            .get(a.url("/admin/nodes"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        nodes["nodes"].as_array().is_some_and(|n| n.len() == 2)
    }));
    a.terminate();
    let mut redirected = None;
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            let r = post(a.url("/whip/later?identity=late"));
            if r.status().as_u16() == 307 {
                redirected = r
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .map(str::to_owned);
                true
            } else {
                false
            }
        }),
        "node A never redirected"
    );
    let location = redirected.expect("a Location");
    assert_eq!(
        location,
        b.url("/whip/later?identity=late"),
        "to node B, same path and query"
    );
    // The redirect is to a node that takes the session.
    assert_eq!(post(location).status().as_u16(), 201);
}

#[test]
fn media_between_nodes_comes_back_by_itself_after_nats_restarts() {
    let mut nats = services::Server::nats();
    let nats_url = nats.url();
    let env = |id| node_env(id, &nats_url);
    let a = Server::start(&[], &env("node-a"));
    let b = Server::start(&[], &env("node-b"));
    let target = Target::WhipWhep(WhipWhep::new(
        a.url("/whip/{room}?identity={publisher}"),
        b.url("/whep/{room}/{publisher}"),
        None,
        "lg-restart-".into(),
    ));
    let scenario = Scenario {
        rooms: 1,
        publishers: 1,
        subscribers: 2,
        video: true,
        video_bitrate_bps: 300_000,
        fps: 30,
        keyframe_interval_s: 0.0,
        audio_bytes: 80,
        duration: Duration::from_secs(20),
        ramp_per_s: 20.0,
        threads: 1,
        max_in_flight: 4,
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..Scenario::default()
    };
    let load = std::thread::spawn(move || run(scenario, target).expect("run"));
    let relayed = |s: &Server| s.stats(None)["relay_in"].as_u64().unwrap_or(0);
    assert!(
        common::wait_until(Duration::from_secs(15), || relayed(&b) > 200),
        "media never crossed: {}",
        b.stats(None)
    );
    // Within node A, media does not depend on NATS: its own counters go on growing.
    nats.kill();
    let (a_before, b_before) = (a.stats(None)["rtp_in"].as_u64().unwrap_or(0), relayed(&b));
    std::thread::sleep(Duration::from_secs(2));
    assert!(a.stats(None)["rtp_in"].as_u64().unwrap_or(0) > a_before + 50);
    let b_during = relayed(&b);
    nats.start_again();
    // Back: the nodes hear each other again and the relay resumes, nobody told to.
    assert!(
        common::wait_until(Duration::from_secs(15), || relayed(&b) > b_during + 200),
        "the relay did not resume: {}",
        b.stats(None)
    );
    println!(
        "relayed to B: {b_before} before the restart, {b_during} while NATS was down, {} after",
        relayed(&b)
    );
    let report = load.join().expect("the load ran");
    println!("{}", report.summary());
    assert_eq!(
        report.aggregate.failed, 0,
        "{:?}",
        report.aggregate.failures
    );
    println!("node A: {}", a.stats(None)["cluster"]["bridge"]);
}

#[test]
fn what_a_killed_node_relayed_ends_on_the_others() {
    let nats = services::Server::nats();
    let nats_url = nats.url();
    let env = |id| node_env(id, &nats_url);
    let a = Server::start(&[], &env("node-a"));
    let b = Server::start(&[], &env("node-b"));
    let http = reqwest::blocking::Client::new();
    let post = |url: String, direction| {
        let lines = [
            (str0m::media::MediaKind::Audio, direction),
            (str0m::media::MediaKind::Video, direction),
        ];
        http.post(url)
            .header("content-type", "application/sdp")
            .body(common::str0m_offer(&lines, |c| c))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Sessions that never connect still hold their tracks until the connect timeout.
    let send = str0m::media::Direction::SendOnly;
    let recv = str0m::media::Direction::RecvOnly;
    assert_eq!(post(a.url("/whip/ghosts?identity=alice"), send), 201);
    assert_eq!(post(b.url("/whep/ghosts/alice"), recv), 201);
    let relayed = |s: &Server| s.stats(None)["relayed_tracks"].as_u64().unwrap_or(0);
    assert!(
        common::wait_until(Duration::from_secs(10), || relayed(&b) == 2),
        "A's tracks never reached B: {}",
        b.stats(None)
    );
    drop(a); // SIGKILL: no close, no goodbye.
    assert!(
        common::wait_until(Duration::from_secs(15), || relayed(&b) == 0),
        "B keeps the dead node's tracks: {}",
        b.stats(None)
    );
    assert_eq!(b.stats(None)["participants"], 1, "B's own player stays");
}
