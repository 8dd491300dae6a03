//! The load generator against the real server for a few seconds: two publishers and four
//! subscribers over WHIP/WHEP, every join succeeds and loss stays under 1%. No timing
//! assertions: a busy CI machine may be slow, not lossy.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::Server;
use manifold_loadgen::room::RoomTarget;
use manifold_loadgen::{Scenario, Target, WhipWhep, run};

/// One room, two publishers (audio + 500 kbps video), four subscribers, six seconds.
fn two_publishers_four_subscribers_scenario() -> Scenario {
    Scenario {
        rooms: 1,
        publishers: 2,
        subscribers: 4,
        video: true,
        video_bitrate_bps: 500_000,
        fps: 30,
        keyframe_interval_s: 0.0,
        audio_bytes: 80,
        duration: Duration::from_secs(6),
        ramp_per_s: 20.0,
        churn_per_s: 0.0,
        threads: 1,
        max_in_flight: 4,
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        progress: false,
        progress_json: None,
        ..Scenario::default()
    }
}

#[test]
fn two_publishers_four_subscribers() {
    let server = Server::start(&[], &[]);
    let target = Target::WhipWhep(WhipWhep::new(
        server.url("/whip/{room}?identity={publisher}"),
        server.url("/whep/{room}/{publisher}"),
        None,
        "lg-test-".into(),
    ));
    let report = run(two_publishers_four_subscribers_scenario(), target).expect("run");
    println!("{}", report.summary());
    let a = &report.aggregate;
    assert_eq!(a.attempts, 6, "{:#?}", a);
    assert_eq!(a.failed, 0, "failures: {:?}", a.failures);
    assert_eq!((a.publishers, a.subscribers), (2, 4));
    assert_eq!(a.streams, 8, "every subscriber got audio and video");
    assert!(a.expected > 0 && a.unique_received > 0, "{a:#?}");
    assert!(a.loss_pct < 1.0, "loss {}%", a.loss_pct);
    assert!(a.latency_ms.p50.is_some());
    // Every subscriber's join → first media, and a rate over them.
    assert_eq!(a.first_media_ms.count, 4, "{a:#?}");
    assert!(a.joins_per_s.is_some_and(|r| r > 0.0), "{a:#?}");
    assert!(report.steady.packets_received > 0, "{:?}", report.steady);
    // Each publisher is watched by two subscribers.
    for p in report.clients.iter().filter(|c| c.role == "publisher") {
        let watchers = report
            .clients
            .iter()
            .filter(|c| c.role == "subscriber" && c.audio.source == p.audio_source)
            .count();
        assert_eq!(watchers, 2, "{} has {watchers} subscribers", p.label);
    }
    // The JSON report carries the aggregate and every client.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["clients"].as_array().unwrap().len(), 6);
    assert_eq!(json["aggregate"]["failed"], 0);
}

#[test]
fn the_room_protocol_target() {
    let server = Server::start(&[], &[]);
    let target = Target::Room(RoomTarget::new(&server.base, None, "lg-room-".into()));
    let report = run(two_publishers_four_subscribers_scenario(), target).expect("run");
    println!("{}", report.summary());
    let a = &report.aggregate;
    assert_eq!(a.failed, 0, "failures: {:?}", a.failures);
    assert_eq!((a.publishers, a.subscribers), (2, 4));
    assert_eq!(a.streams, 8, "every subscriber got audio and video");
    assert!(a.loss_pct < 1.0, "loss {}%", a.loss_pct);
}

#[test]
fn refused_joins_are_counted_not_fatal() {
    // Nothing listens on this port: every join fails with an HTTP error, the run still
    // ends by itself and reports them by reason.
    let target = Target::WhipWhep(WhipWhep::new(
        "http://127.0.0.1:9/whip/{room}".into(),
        "http://127.0.0.1:9/whep/{room}".into(),
        None,
        "x".into(),
    ));
    let scenario = Scenario {
        rooms: 1,
        publishers: 1,
        subscribers: 2,
        video: false,
        video_bitrate_bps: 100_000,
        fps: 30,
        keyframe_interval_s: 0.0,
        audio_bytes: 80,
        duration: Duration::from_secs(2),
        ramp_per_s: 50.0,
        churn_per_s: 0.0,
        threads: 1,
        max_in_flight: 2,
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        progress: false,
        progress_json: None,
        ..Scenario::default()
    };
    let report = run(scenario, target).expect("run");
    let a = &report.aggregate;
    assert_eq!(a.failures.get("http"), Some(&1), "{:?}", a.failures);
    assert_eq!(a.failures.get("no_publisher"), Some(&2), "{:?}", a.failures);
    assert_eq!(a.connected, 0);
    assert!(report.failure_ratio() > 0.99);
}

#[test]
fn churning_subscribers_leave_and_rejoin() {
    let server = Server::start(&[], &[]);
    let target = Target::WhipWhep(WhipWhep::new(
        server.url("/whip/{room}?identity={publisher}"),
        server.url("/whep/{room}/{publisher}"),
        None,
        "lg-churn-".into(),
    ));
    let scenario = Scenario {
        rooms: 1,
        publishers: 1,
        subscribers: 3,
        video: true,
        video_bitrate_bps: 300_000,
        fps: 15,
        keyframe_interval_s: 0.0,
        audio_bytes: 80,
        duration: Duration::from_secs(7),
        ramp_per_s: 20.0,
        churn_per_s: 2.0,
        threads: 1,
        max_in_flight: 4,
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        progress: false,
        progress_json: None,
        ..Scenario::default()
    };
    let report = run(scenario, target).expect("run");
    println!("{}", report.summary());
    let cycles = report.scenario["churn_cycles"].as_u64().unwrap();
    assert!(cycles >= 1, "{}", report.scenario);
    let a = &report.aggregate;
    assert_eq!(a.failed, 0, "failures: {:?}", a.failures);
    // Every cycle is one more join (the last may still be in flight at the end).
    assert!(
        a.attempts + 1 >= 4 + cycles,
        "{} attempts, {cycles} cycles",
        a.attempts
    );
    assert!(
        report.clients.iter().any(|c| c.left_early),
        "churned clients keep their reports"
    );
    assert!(a.loss_pct < 1.0, "loss {}%", a.loss_pct);
}
