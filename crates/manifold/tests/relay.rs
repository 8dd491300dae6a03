//! A room spread over both media workers of the real server (`room_spread_after = 0`): the
//! publisher's worker relays its tracks to the other, whose WHEP players receive them as
//! they would from a local publisher. Every join succeeds, every player gets both kinds,
//! loss stays under 1 %, and the server's counters show the tracks crossing once per
//! (track, worker), never once per player. No timing assertions.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::Server;
use manifold_loadgen::{Scenario, Target, WhipWhep, run};

#[test]
fn a_room_spread_over_two_workers_plays_everywhere() {
    let server = Server::start(&[], &[("MANIFOLD_MEDIA__ROOM_SPREAD_AFTER", "0")]);
    let target = Target::WhipWhep(WhipWhep::new(
        server.url("/whip/{room}?identity={publisher}"),
        server.url("/whep/{room}/{publisher}"),
        None,
        "lg-relay-".into(),
    ));
    let scenario = Scenario {
        rooms: 1,
        publishers: 1,
        subscribers: 6,
        video: true,
        video_bitrate_bps: 500_000,
        fps: 30,
        keyframe_interval_s: 0.0,
        audio_bytes: 80,
        duration: Duration::from_secs(6),
        ramp_per_s: 20.0,
        threads: 1,
        max_in_flight: 4,
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..Scenario::default()
    };
    let report = run(scenario, target).expect("run");
    println!("{}", report.summary());
    let a = &report.aggregate;
    assert_eq!(a.failed, 0, "failures: {:?}", a.failures);
    assert_eq!((a.publishers, a.subscribers), (1, 6));
    assert_eq!(a.streams, 12, "every player got audio and video");
    assert!(a.loss_pct < 1.0, "loss {}%", a.loss_pct);

    let stats = server.stats(None);
    println!("{stats}");
    let n = |k: &str| {
        stats[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in {stats}"))
    };
    // Players joined both workers: half of what the publisher sent crossed to the other
    // one, once, whatever the number of players there.
    assert!(n("relay_in") > 0, "nothing was relayed: {stats}");
    assert_eq!(
        n("relay_in"),
        n("relay_out"),
        "nothing lost between workers"
    );
    assert!(
        n("relay_in") <= n("rtp_in") + n("relay_resent"),
        "one copy per packet: {stats}"
    );
    assert_eq!(stats["overload"]["relay_dropped"], 0);
    // Once everyone left, no worker keeps anything of the room.
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            let s = server.stats(None);
            s["rooms"] == 0 && s["relayed_tracks"] == 0
        }),
        "the room stays somewhere: {}",
        server.stats(None)
    );
}
