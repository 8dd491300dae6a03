//! The load generator's simulcast publisher and capped subscribers against the real server:
//! one WHIP publisher offering three RID layers, one WHEP subscriber behind a 300 kbit/s
//! downlink and one uncapped. From their own reports (the frame size of the VP8 keyframes
//! they decode), the capped one ends on the low layer and the uncapped one on the high
//! layer; nobody fails to join. No timing assertions: the run is long enough for the
//! server's estimate to settle on a slow machine.

mod common;

use std::time::Duration;

use common::Server;
use manifold_loadgen::downlink::DownlinkCap;
use manifold_loadgen::simulcast::PLAN;
use manifold_loadgen::{ClientReport, Scenario, Target, WhipWhep, run};

fn subscriber<'a>(clients: &'a [ClientReport], label: &str) -> &'a ClientReport {
    clients
        .iter()
        .find(|c| c.label == label)
        .unwrap_or_else(|| panic!("no client {label} in {clients:#?}"))
}

#[test]
fn a_capped_subscriber_gets_the_low_layer_and_an_uncapped_one_the_high() {
    let server = Server::start(&[], &[]);
    let target = Target::WhipWhep(WhipWhep::new(
        server.url("/whip/{room}?identity={publisher}"),
        server.url("/whep/{room}/{publisher}"),
        None,
        "lg-simulcast-".into(),
    ));
    let scenario = Scenario {
        subscribers: 2,
        simulcast: true,
        downlink_caps: vec![
            Some(DownlinkCap {
                rate_bps: 300_000,
                queue: Duration::from_millis(200),
            }),
            None,
        ],
        duration: Duration::from_secs(15),
        threads: 1,
        ..Scenario::default()
    };
    let report = run(scenario, target).expect("run");
    println!("{}", report.summary());
    let a = &report.aggregate;
    assert_eq!(a.failed, 0, "failures: {:?}", a.failures);
    assert_eq!((a.publishers, a.subscribers), (1, 2));

    // The publisher sent every layer.
    let publisher = report
        .clients
        .iter()
        .find(|c| c.role == "publisher")
        .expect("a publisher");
    let rids: Vec<&str> = publisher.layers.iter().map(|l| l.rid.as_str()).collect();
    assert_eq!(rids, ["q", "h", "f"], "{publisher:#?}");
    assert!(
        publisher
            .layers
            .iter()
            .all(|l| l.packets > 0 && l.keyframes > 0)
    );

    let (low, high) = (PLAN[0].size_name(), PLAN[2].size_name());
    // Subscriber 0 of the room is behind the 300 kbit/s cap, subscriber 1 is not.
    let capped = subscriber(&report.clients, "r0-s0");
    let open = subscriber(&report.clients, "r0-s1");
    let link = capped.downlink.as_ref().expect("the capped one has a link");
    assert_eq!(link.rate_bps, 300_000);
    assert!(open.downlink.is_none());
    for s in [capped, open] {
        assert!(
            s.video_frames.frames > 0,
            "{} saw no frame: {s:#?}",
            s.label
        );
    }
    assert_eq!(
        capped.video_frames.layer.as_deref(),
        Some(low.as_str()),
        "the capped subscriber: {:#?}",
        capped.video_frames
    );
    assert_eq!(
        open.video_frames.layer.as_deref(),
        Some(high.as_str()),
        "the uncapped subscriber: {:#?}",
        open.video_frames
    );
    // What the cap let through is what the capped subscriber received.
    assert_eq!(link.delivered_bytes, capped.bytes_received);

    // The report sums them up by class, lowest cap first.
    let classes: Vec<&str> = report.classes.iter().map(|c| c.class.as_str()).collect();
    assert_eq!(classes, ["300k", "uncapped"]);
}
