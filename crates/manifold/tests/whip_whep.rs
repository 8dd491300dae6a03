//! The real server on 127.0.0.1: one str0m client publishes audio and video over WHIP, three
//! play it over WHEP, over real UDP with ICE, DTLS and SRTP. Every player must receive at
//! least 95% of what was sent while it was connected; DELETE tears everything down.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{Server, wait_until};
use manifold_loadgen::{Client, Engine, MediaShape, MediaSpec, join, leave};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn one_publisher_three_players() {
    let server = Server::start(&[], &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let engine = Engine::start(1).unwrap();

    let spec = MediaSpec {
        audio: true,
        video: true,
    };
    let publisher = rt
        .block_on(join(
            &http,
            &server.url("/whip/it-room"),
            None,
            LOCAL,
            Some(spec),
        ))
        .expect("WHIP publish");
    let pub_resource = publisher.resource.clone();
    engine.add(Client::publisher("pub".into(), publisher, MediaShape::default()).unwrap());

    let mut resources = vec![pub_resource];
    for i in 0..3 {
        let player = rt
            .block_on(join(&http, &server.url("/whep/it-room"), None, LOCAL, None))
            .expect("WHEP play");
        resources.push(player.resource.clone());
        engine.add(Client::subscriber(format!("sub{i}"), player).unwrap());
    }

    assert!(
        wait_until(Duration::from_secs(15), || {
            let r = engine.snapshot();
            r.len() == 4 && r.iter().all(|c| c.connected)
        }),
        "all four clients connect: {:#?}",
        engine.snapshot()
    );
    let start = engine.snapshot();
    std::thread::sleep(Duration::from_secs(5));
    let reports = engine.snapshot();

    let publisher = reports.iter().find(|r| r.role == "publisher").unwrap();
    assert!(
        publisher.audio_sent > 100 && publisher.video_sent > 100,
        "{publisher:#?}"
    );
    let last_audio = (publisher.audio_sent - 1) as u32;
    let last_video = (publisher.video_sent - 1) as u32;
    for sub in reports.iter().filter(|r| r.role == "subscriber") {
        let before = start.iter().find(|r| r.label == sub.label).unwrap();
        for (kind, got, last) in [
            ("audio", &sub.audio, last_audio),
            ("video", &sub.video, last_video),
        ] {
            let expected = got.expected(last);
            // Packets in flight at the snapshot are not lost: allow one frame's worth.
            let ratio = got.unique as f64 / expected.max(1) as f64;
            let prior = match kind {
                "audio" => &before.audio,
                _ => &before.video,
            };
            let rate = (got.unique - prior.unique) as f64 / 5.0;
            println!(
                "{} {kind}: received {} of {expected} ({:.2}%), {rate:.0} packets/s, {} duplicates, {} freezes",
                sub.label,
                got.unique,
                100.0 * ratio,
                got.duplicates,
                got.freezes
            );
            assert!(
                expected > 50,
                "{} {kind} got almost nothing: {got:#?}",
                sub.label
            );
            assert!(
                ratio >= 0.95,
                "{} {kind}: only {:.1}% of packets arrived",
                sub.label,
                100.0 * ratio
            );
        }
    }

    let stats = server.stats(None);
    assert_eq!(stats["participants"], 4, "{stats}");
    assert_eq!(stats["tracks"], 2, "{stats}");
    assert_eq!(stats["subscriptions"], 6, "{stats}");

    for r in &resources {
        rt.block_on(leave(&http, r, None)).expect("DELETE");
    }
    // A second DELETE of the same resource is a 404.
    assert!(rt.block_on(leave(&http, &resources[0], None)).is_err());
    assert!(
        wait_until(
            Duration::from_secs(10),
            || server.stats(None)["participants"] == 0
        ),
        "participants return to zero: {}",
        server.stats(None)
    );
    let stats = server.stats(None);
    assert_eq!(stats["rooms"], 0, "{stats}");
    assert_eq!(stats["tracks"], 0, "{stats}");
    engine.stop();
}
