//! Hostile input during a live call: garbage of every shape from strangers and from the
//! participants' own addresses, STUN that names a real session without its password (from
//! strangers and from the participants' own addresses), RTP for SSRCs nobody owns, a 65 KB
//! datagram. Nothing panics, every drop is counted under its
//! reason, the call goes on at the same rate. And a participant whose `Rtc` panics is
//! removed alone.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{ClientSpec, Harness, config, stun_binding_request};
use manifold_api::{LeaveReason, Source};
use manifold_core::str0m::media::MediaKind;
use manifold_rtp::PacketClass;

fn random_addr(h: &mut Harness) -> SocketAddr {
    let ip = h.rng.next_u64() as u32 | 0x0100_0000;
    SocketAddr::from((ip.to_be_bytes(), 1 + h.rng.below(65_000) as u16))
}

fn received_between(h: &Harness, s: usize, from: Instant, to: Instant) -> usize {
    h.clients[s]
        .received
        .iter()
        .filter(|r| r.at >= from && r.at < to)
        .count()
}

#[test]
fn garbage_is_dropped_and_counted_and_the_call_goes_on() {
    let mut h = Harness::new(config(), 31);
    let p = h.add(ClientSpec::publisher("pub", "room"));
    let s1 = h.add(ClientSpec::subscriber("s1", "room", Source::RoomCurrent));
    let s2 = h.add(ClientSpec::subscriber("s2", "room", Source::RoomCurrent));
    h.connect(&[p, s1, s2], Duration::from_secs(2));
    h.run_for(Duration::from_secs(1));
    let t0 = h.now;
    h.run_for(Duration::from_secs(2));
    let t1 = h.now;
    let before = h.stats();

    let real: Vec<SocketAddr> = [p, s1, s2].iter().map(|&i| h.clients[i].addr).collect();
    let mut expect_malformed = 0u64;
    let mut expect_unknown_source = 0u64;
    let mut expect_rejected = 0u64;
    let mut expect_unknown_ssrc = 0u64;
    let mut sent = 0u64;
    for round in 0..200u64 {
        for i in 0..20u64 {
            let kind = (round * 20 + i) % 8;
            let (source, datagram) = match kind {
                // Random bytes, random size, from a stranger.
                0 | 1 => {
                    let len = h.rng.below(1500) as usize;
                    let d = h.rng.bytes(len);
                    (random_addr(&mut h), d)
                }
                // Random bytes from a participant's own address.
                2 => {
                    let len = h.rng.below(1500) as usize;
                    let d = h.rng.bytes(len);
                    let who = real[h.rng.below(3) as usize];
                    (who, d)
                }
                // STUN naming a real session (right ufrags) without its password, from a
                // stranger (the address must not be learned) or from the participant's own
                // address (where the Rtc itself would take it on trust).
                3 => {
                    let c = &h.clients[[p, s1, s2][h.rng.below(3) as usize]];
                    let username = format!("{}:{}", c.server_ufrag, c.client_ufrag);
                    let own = c.addr;
                    let mut tx = [0u8; 12];
                    h.rng.fill(&mut tx);
                    let mut mi = [0u8; 20];
                    h.rng.fill(&mut mi);
                    let d = stun_binding_request(&username, tx, mi);
                    let from = if round % 2 == 0 {
                        own
                    } else {
                        random_addr(&mut h)
                    };
                    (from, d)
                }
                // RTP for an SSRC nobody owns, from the publisher and from a player.
                4 | 5 => {
                    let len = 200 + h.rng.below(1000) as usize;
                    let mut d = h.rng.bytes(len);
                    d[0] = 0x80;
                    d[1] = 96;
                    let who = if kind == 4 { real[0] } else { real[1] };
                    (who, d)
                }
                // RTP-looking from a stranger.
                6 => {
                    let mut d = h.rng.bytes(200);
                    d[0] = 0x80;
                    d[1] = 111;
                    (random_addr(&mut h), d)
                }
                // A 65 KB datagram, RTP-looking, from the publisher's address or a stranger.
                _ => {
                    let mut d = h.rng.bytes(65_000);
                    d[0] = 0x80;
                    d[1] = 96;
                    let who = if round % 2 == 0 {
                        real[0]
                    } else {
                        random_addr(&mut h)
                    };
                    (who, d)
                }
            };
            let from_stranger = !real.contains(&source);
            let class = manifold_rtp::classify(&datagram);
            match (kind, class, from_stranger) {
                (_, PacketClass::Unknown, _) => expect_malformed += 1,
                (3, PacketClass::Stun, _) => expect_rejected += 1,
                (_, _, true) => expect_unknown_source += 1,
                (4 | 5, PacketClass::Rtp, false) => expect_unknown_ssrc += 1,
                _ => {}
            }
            h.inject(source, &datagram);
            sent += 1;
        }
        h.run_for(Duration::from_millis(10));
    }
    let t2 = h.now;
    h.run_for(Duration::from_secs(1));
    let after = h.stats();

    let delta = |reason: &str| after.drops_for(reason) - before.drops_for(reason);
    assert_eq!(after.panics, 0);
    assert_eq!(delta("unknown_source"), expect_unknown_source, "{after:?}");
    assert_eq!(delta("malformed"), expect_malformed, "{after:?}");
    assert_eq!(delta("rejected"), expect_rejected, "{after:?}");
    assert!(delta("unknown_ssrc") >= expect_unknown_ssrc, "{after:?}");
    let counted =
        delta("malformed") + delta("unknown_source") + delta("rejected") + delta("unknown_ssrc");
    assert!(
        counted * 100 >= sent * 90,
        "nearly every garbage datagram is counted somewhere: {counted} of {sent}"
    );
    assert!(
        after.datagrams_in - before.datagrams_in >= sent,
        "every datagram counted in"
    );

    // Nobody left, and media flows at the same rate as before the barrage.
    assert!(
        h.events_where(|e| matches!(e, manifold_api::CoreEvent::ParticipantLeft { .. }))
            .is_empty()
    );
    for &s in &[s1, s2] {
        let calm = received_between(&h, s, t0, t1);
        let storm = received_between(&h, s, t1, t2);
        assert!(
            storm * 100 >= calm * 97 && storm * 100 <= calm * 103,
            "player {s}: {calm} packets in 2 s before, {storm} during"
        );
        let video = h.clients[s].received_of(MediaKind::Video);
        assert!(video.last().unwrap().at > t2);
    }
}

#[test]
fn a_panicking_session_is_removed_alone() {
    let mut h = Harness::new(config(), 32);
    let p = h.add(ClientSpec::publisher("pub", "room"));
    let s1 = h.add(ClientSpec::subscriber("s1", "room", Source::RoomCurrent));
    let s2 = h.add(ClientSpec::subscriber("s2", "room", Source::RoomCurrent));
    h.connect(&[p, s1, s2], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));
    let t0 = h.now;

    assert!(h.shards[0].inject_rtc_panic(h.clients[s1].id));
    h.run_for(Duration::from_secs(2));
    let t1 = h.now;
    h.run_for(Duration::from_secs(2));

    assert_eq!(h.left_reason(s1), Some(LeaveReason::Failed));
    assert_eq!(h.left_reason(s2), None);
    assert_eq!(h.left_reason(p), None);
    let stats = h.stats();
    assert_eq!(stats.panics, 1);
    assert_eq!(stats.participants, 2);
    assert_eq!(stats.subscriptions, 2);
    // The failed one receives nothing more; the other one as much as ever.
    let s1_late = received_between(&h, s1, t0 + Duration::from_millis(100), h.now);
    assert_eq!(s1_late, 0);
    let before = received_between(&h, s2, t0 - Duration::from_secs(2), t0);
    let after = received_between(&h, s2, t1, h.now);
    assert!(
        after * 100 >= before * 97,
        "the other player goes on: {before} then {after}"
    );
}
