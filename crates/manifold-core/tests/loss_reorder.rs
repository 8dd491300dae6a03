//! 5% loss and reordering on the publisher's uplink and on every player's downlink: the
//! shard NACKs the publisher, answers the players' NACKs with RTX, and keeps one numbering
//! per player in which an original packet always has the same sequence number.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{ClientSpec, Harness, Link, check_stream, config};
use manifold_api::Source;
use manifold_core::str0m::media::MediaKind;
use manifold_core::str0m::rtp::RawPacket;
use manifold_core::str0m::rtp::rtcp::Rtcp;

fn lossy() -> Link {
    // 30 ms of jitter against packets sent in bursts (a frame) or every 20 ms: reordering.
    Link::lossy(0.05, Duration::from_millis(20), Duration::from_millis(30))
}

fn run(seed: u64) {
    let mut h = Harness::new(config(), seed);
    // Raw packet events show the feedback and the retransmissions themselves.
    let publisher =
        h.add(ClientSpec::publisher("alice", "room").configure(|c| c.enable_raw_packets(true)));
    let subs: Vec<usize> = (0..3)
        .map(|i| {
            h.add(
                ClientSpec::subscriber(&format!("viewer{i}"), "room", Source::RoomCurrent)
                    .configure(|c| c.enable_raw_packets(true)),
            )
        })
        .collect();
    let all: Vec<usize> = std::iter::once(publisher)
        .chain(subs.iter().copied())
        .collect();
    h.connect(&all, Duration::from_secs(5));

    h.clients[publisher].uplink = lossy();
    for &s in &subs {
        h.clients[s].downlink = lossy();
    }
    h.run_for(Duration::from_secs(10));
    let lost_on_links = h.net.lost;
    // Let retransmissions finish on a quiet network.
    h.clients[publisher].uplink = Link::default();
    for &s in &subs {
        h.clients[s].downlink = Link::default();
    }
    h.pause_media(publisher, true);
    h.run_for(Duration::from_secs(2));

    let stats = h.stats();
    assert!(
        lost_on_links > 100,
        "seed {seed}: the links really lost packets ({lost_on_links})"
    );
    assert_eq!(
        stats.drops_for("unknown_ssrc"),
        0,
        "seed {seed}: retransmissions on the publisher's RTX SSRC are not strays: {stats:?}"
    );
    assert_eq!(stats.panics, 0);

    // The shard asked the publisher for what it missed, and the publisher resent it.
    let vssrc = h.clients[publisher].publisher().video_ssrc().unwrap();
    let nacks_to_publisher = h.clients[publisher]
        .raw
        .iter()
        .filter(|(_, r)| matches!(&**r, RawPacket::RtcpRx(Rtcp::Nack(_))))
        .count();
    let resent_by_publisher = h.clients[publisher]
        .raw
        .iter()
        .filter(|(_, r)| {
            matches!(&**r, RawPacket::RtpTx(hdr, _) if hdr.ssrc != vssrc
            && Some(hdr.ssrc) != h.clients[publisher].publisher().audio_ssrc())
        })
        .count();
    assert!(
        nacks_to_publisher > 10 && resent_by_publisher > 10,
        "seed {seed}: {nacks_to_publisher} NACKs to the publisher, {resent_by_publisher} resent"
    );
    // The shard counted both ways: NACKs it sent publishers and those subscribers sent it.
    let stats = h.stats();
    assert!(
        stats.nacks_out > 0 && stats.nacks_in > 0,
        "seed {seed}: NACK counters {} out, {} in",
        stats.nacks_out,
        stats.nacks_in
    );
    for &s in &subs {
        let c = &h.clients[s];
        let nacks = c
            .raw
            .iter()
            .filter(|(_, r)| matches!(&**r, RawPacket::RtcpTx(Rtcp::Nack(_))))
            .count();
        let video_ssrc = c.received_of(MediaKind::Video)[0].ssrc;
        let audio_ssrc = c.received_of(MediaKind::Audio)[0].ssrc;
        let rtx = c
            .raw
            .iter()
            .filter(|(_, r)| {
                matches!(&**r, RawPacket::RtpRx(hdr, _)
                if hdr.ssrc != video_ssrc && hdr.ssrc != audio_ssrc)
            })
            .count();
        assert!(
            nacks > 10 && rtx > 10,
            "seed {seed} {}: {nacks} NACKs sent, {rtx} retransmissions from the shard",
            c.identity
        );
    }

    let sent_video = h.clients[publisher]
        .publisher()
        .sent_of(MediaKind::Video)
        .count() as u64;
    for &s in &subs {
        let c = &h.clients[s];
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let check = check_stream(c, kind);
            assert_eq!(check.ssrcs.len(), 1, "seed {seed} {} {kind:?}", c.identity);
            assert_eq!(
                check.ts_backwards, 0,
                "seed {seed} {} {kind:?}: timestamps follow sequence numbers",
                c.identity
            );

            // One original packet, one outgoing sequence number, and the other way round.
            let mut seq_of: HashMap<u64, u64> = HashMap::new();
            let mut counter_of: HashMap<u64, u64> = HashMap::new();
            for r in c.received_of(kind) {
                let counter = r.record().expect("a synthetic payload").counter;
                let seq = *seq_of.entry(counter).or_insert(r.seq_no);
                assert_eq!(
                    seq, r.seq_no,
                    "seed {seed} {} {kind:?}: packet {counter} under two sequence numbers",
                    c.identity
                );
                let owner = *counter_of.entry(r.seq_no).or_insert(counter);
                assert_eq!(
                    owner, counter,
                    "seed {seed} {} {kind:?}: sequence number {} reused",
                    c.identity, r.seq_no
                );
            }
            // Sequence order is send order.
            let mut pairs: Vec<(u64, u64)> = seq_of.into_iter().map(|(c, s)| (s, c)).collect();
            pairs.sort();
            assert!(
                pairs.windows(2).all(|w| w[0].1 < w[1].1),
                "seed {seed} {} {kind:?}: sequence order differs from send order",
                c.identity
            );

            let received = check.seqs.len() as u64;
            match kind {
                MediaKind::Video => {
                    // Recovered: two 5% legs would lose about 10% without NACK/RTX.
                    assert!(
                        received * 100 >= check.range * 99,
                        "seed {seed} {}: {received} of {} video packets",
                        c.identity,
                        check.range
                    );
                    // A player starts on a keyframe a frame or two into the call (its
                    // start waits for one; str0m paces the stream out).
                    assert!(
                        check.range + 20 >= sent_video,
                        "seed {seed} {}: the stream covers the call ({} of {sent_video})",
                        c.identity,
                        check.range
                    );
                }
                MediaKind::Audio => {
                    // Audio is not retransmitted; loss stays loss, nothing more.
                    assert!(
                        received * 100 >= check.range * 80,
                        "seed {seed} {}: {received} of {} audio packets",
                        c.identity,
                        check.range
                    );
                }
            }
        }
    }
}

#[test]
fn nack_and_rtx_recover_video_seed_1() {
    run(1);
}

#[test]
fn nack_and_rtx_recover_video_seed_2() {
    run(0x5eed);
}
