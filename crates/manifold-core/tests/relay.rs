//! A room spanning two shards, as two workers of one node: the publisher on shard 0, players
//! and room members on shard 1. Every track crosses once per (track, shard) through the
//! relay and is forwarded on shard 1 like a local one; keyframe requests, layer needs and
//! requests for relayed packets lost on the way travel back.

mod common;

use std::time::Duration;

use common::{ClientSpec, Harness, Link, check_stream, config};
use manifold_api::protocol::Quality;
use manifold_api::{CoreEvent, ReplyValue, Source};
use manifold_core::str0m::media::MediaKind;

const BOTH: u64 = 0b11;

/// A WHIP publisher on shard 0 and `n` WHEP players of the room on shard 1.
fn whip_to_other_shard(seed: u64, n: usize) -> (Harness, usize, Vec<usize>) {
    let mut h = Harness::with_shards(config(), seed, 2);
    h.span_room("room", BOTH);
    let publisher = h.add(ClientSpec::publisher("alice", "room"));
    h.on_shard(1);
    let players: Vec<usize> = (0..n)
        .map(|i| {
            h.add(ClientSpec::subscriber(
                &format!("viewer{i}"),
                "room",
                Source::RoomCurrent,
            ))
        })
        .collect();
    let all: Vec<usize> = std::iter::once(publisher)
        .chain(players.iter().copied())
        .collect();
    h.connect(&all, Duration::from_secs(5));
    (h, publisher, players)
}

#[test]
fn players_on_another_shard_receive_the_publisher_once_relayed() {
    let (mut h, publisher, players) = whip_to_other_shard(11, 3);
    h.run_for(Duration::from_secs(5));

    assert_eq!(h.shard_of(publisher), 0);
    let origin = h.shards[0].stats();
    let relayed = h.shards[1].stats();
    assert_eq!(origin.tracks, 2, "{origin:?}");
    assert_eq!(relayed.tracks, 0, "no track is published on shard 1");
    assert_eq!(relayed.relayed_tracks, 2, "audio and video arrive relayed");
    assert_eq!(relayed.subscriptions, 6, "3 players x 2 tracks");
    // One copy per packet crosses, whatever the number of players.
    assert_eq!(origin.relay_out, origin.rtp_in, "{origin:?}");
    assert_eq!(relayed.relay_in, origin.relay_out);
    assert!(
        relayed.rtp_out >= relayed.relay_in * 3 * 9 / 10,
        "{relayed:?}"
    );

    for &s in &players {
        let c = &h.clients[s];
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let check = check_stream(c, kind);
            assert!(!check.seqs.is_empty(), "{} got no {kind:?}", c.identity);
            assert_eq!(check.ssrcs.len(), 1);
            assert_eq!(check.holes, 0, "{} {kind:?}: continuous", c.identity);
            assert_eq!(check.ts_backwards, 0);
        }
        let video = c.received_of(MediaKind::Video);
        assert!(
            video[0].is_keyframe_start(),
            "{} starts on a keyframe",
            c.identity
        );
    }
}

#[test]
fn a_late_player_on_another_shard_gets_a_keyframe_from_the_origin() {
    let mut h = Harness::with_shards(config(), 12, 2);
    h.span_room("room", BOTH);
    let publisher = h.add(ClientSpec::publisher("alice", "room").keyframe_interval(None));
    h.connect(&[publisher], Duration::from_secs(2));
    h.run_for(Duration::from_secs(4));
    assert!(h.clients[publisher].keyframe_requests.is_empty());

    h.on_shard(1);
    let joined = h.now;
    let late = h.add(ClientSpec::subscriber("late", "room", Source::RoomCurrent));
    h.connect(&[late], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));

    let requests: Vec<_> = h.clients[publisher]
        .keyframe_requests
        .iter()
        .filter(|(at, _, _)| *at >= joined)
        .collect();
    assert_eq!(requests.len(), 1, "one request crossed back: {requests:?}");
    let video = h.clients[late].received_of(MediaKind::Video);
    assert!(!video.is_empty(), "the late player receives video");
    assert!(
        video[0].is_keyframe_start(),
        "and starts on the keyframe it asked for"
    );
    let first = video[0].at - h.clients[late].connected_at.unwrap();
    println!("late player on shard 1: first video {first:?} after connecting");
    assert!(first < Duration::from_secs(1), "{first:?}");
}

#[test]
fn packets_lost_on_the_relay_are_sent_again() {
    let (mut h, _publisher, players) = whip_to_other_shard(13, 2);
    h.run_for(Duration::from_secs(1));
    // Every 20th relayed packet vanishes, as in an overflowing queue between workers.
    h.drop_relay_media(20);
    h.run_for(Duration::from_secs(6));
    h.drop_relay_media(0);
    h.run_for(Duration::from_secs(1));

    let relayed = h.shards[1].stats();
    let origin = h.shards[0].stats();
    assert!(h.relays.dropped > 40, "{:?}", h.relays);
    assert!(relayed.relay_lost > 0, "{relayed:?}");
    assert!(origin.relay_resent > 0, "{origin:?}");
    println!(
        "relay: {} media packets, {} dropped, {} reported lost, {} sent again",
        h.relays.media, h.relays.dropped, relayed.relay_lost, origin.relay_resent
    );
    for &s in &players {
        let c = &h.clients[s];
        // Video is repaired from the origin's history; audio is not (a late audio packet
        // is no use), so its holes are the drops themselves.
        let video = check_stream(c, MediaKind::Video);
        assert_eq!(video.holes, 0, "{}: no hole in video", c.identity);
        assert!(video.seqs.len() > 500, "{}", video.seqs.len());
    }
}

#[test]
fn room_members_on_two_shards_see_and_hear_each_other() {
    let mut h = Harness::with_shards(config(), 14, 2);
    h.span_room("room", BOTH);
    let alice = h.add(ClientSpec::room("alice", "room"));
    h.on_shard(1);
    let bob = h.add(ClientSpec::room("bob", "room"));
    h.connect(&[alice, bob], Duration::from_secs(5));
    for who in [alice, bob] {
        assert_eq!(
            h.publish(who, MediaKind::Audio, "mic"),
            Ok(ReplyValue::Done)
        );
        assert_eq!(
            h.publish(who, MediaKind::Video, "cam"),
            Ok(ReplyValue::Done)
        );
    }
    h.run_for(Duration::from_secs(4));
    for (who, other) in [(alice, "bob"), (bob, "alice")] {
        let c = &h.clients[who];
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let check = check_stream(c, kind);
            assert!(
                check.seqs.len() > 50,
                "{} receives {other}'s {kind:?}: {}",
                c.identity,
                check.seqs.len()
            );
            assert_eq!(check.holes, 0);
        }
    }
    // Each shard reports only its own publisher's tracks.
    let published: Vec<_> = h
        .events_where(|e| matches!(e, CoreEvent::TrackPublished { .. }))
        .into_iter()
        .collect();
    assert_eq!(published.len(), 4, "{published:?}");

    // Bob's camera ends: Alice's shard lets its relayed copy go.
    let cam = h.track_of(bob, "cam").expect("bob's camera");
    assert_eq!(h.unpublish(bob, cam), Ok(ReplyValue::Done));
    h.run_for(Duration::from_secs(1));
    assert_eq!(
        h.shards[0].stats().relayed_tracks,
        1,
        "bob's microphone only"
    );
}

#[test]
fn layer_choice_and_dynacast_work_across_the_relay() {
    let mut h = Harness::with_shards(config(), 15, 2);
    h.span_room("room", BOTH);
    let alice = h.add(ClientSpec::room("alice", "room"));
    h.on_shard(1);
    let fast = h.add(ClientSpec::room("fast", "room"));
    let slow = h.add(ClientSpec::room("slow", "room").downlink(Link::capped(300_000)));
    h.connect(&[alice, fast, slow], Duration::from_secs(5));
    assert_eq!(
        h.publish_layers(alice, MediaKind::Video, "cam", 3),
        Ok(ReplyValue::Done)
    );
    h.run_for(Duration::from_secs(14));

    // On shard 1 each subscriber gets its own layer of the one relayed copy.
    let state = |who: usize| {
        let id = h.clients[who].id;
        h.events_where(
            |e| matches!(e, CoreEvent::StreamState { participant, .. } if *participant == id),
        )
        .last()
        .and_then(|e| match e {
            CoreEvent::StreamState { quality, .. } => *quality,
            _ => None,
        })
    };
    assert_eq!(
        state(fast),
        Some(Quality::High),
        "the fast member is on the top layer"
    );
    assert_eq!(
        state(slow),
        Some(Quality::Low),
        "the slow one on the lowest"
    );
    // Nobody on shard 0 receives the camera, yet its top layer stays active: shard 1 needs
    // it, and said so.
    let paused: Vec<_> = h
        .events_where(|e| matches!(e, CoreEvent::Dynacast { .. }))
        .into_iter()
        .collect();
    assert!(
        paused.iter().all(|e| match e {
            CoreEvent::Dynacast { active, .. } => active.iter().any(|r| r == "f"),
            _ => true,
        }),
        "the full layer is never paused: {paused:?}"
    );
}

#[test]
fn a_shard_leaving_the_room_lets_go_of_its_relayed_tracks() {
    let (mut h, _publisher, players) = whip_to_other_shard(16, 1);
    h.run_for(Duration::from_secs(2));
    assert_eq!(h.shards[1].stats().relayed_tracks, 2);
    h.leave(players[0], manifold_api::LeaveReason::Requested);
    h.run_for(Duration::from_millis(100));
    // The control plane's word that shard 1 holds nobody of the room any more.
    h.span_room("room", 0b01);
    h.run_for(Duration::from_secs(1));
    let relayed = h.shards[1].stats();
    assert_eq!(relayed.relayed_tracks, 0, "{relayed:?}");
    assert_eq!(relayed.rooms, 0);
    let origin = h.shards[0].stats();
    let before = origin.relay_out;
    h.run_for(Duration::from_secs(1));
    assert_eq!(
        h.shards[0].stats().relay_out,
        before,
        "nothing is relayed to it any more"
    );
}

/// Shards 0 and 1 as the only workers of two nodes: each one's room includes itself and the
/// bridge, and what crosses is encoded and decoded as on the bus.
fn two_nodes(seed: u64) -> Harness {
    let mut h = Harness::with_shards(config(), seed, 2);
    h.bridge(0, 1);
    let bridge = 1u64 << manifold_core::BRIDGE;
    h.span_room_on(0, "room", 0b01 | bridge);
    h.span_room_on(1, "room", 0b10 | bridge);
    h
}

#[test]
fn players_on_another_node_receive_the_publisher_through_the_bridge() {
    let mut h = two_nodes(17);
    let publisher = h.add(ClientSpec::publisher("alice", "room"));
    h.on_shard(1);
    let players: Vec<usize> = (0..2)
        .map(|i| {
            h.add(ClientSpec::subscriber(
                &format!("viewer{i}"),
                "room",
                Source::Identity(manifold_api::Identity::parse("alice").unwrap()),
            ))
        })
        .collect();
    let all: Vec<usize> = std::iter::once(publisher)
        .chain(players.iter().copied())
        .collect();
    h.connect(&all, Duration::from_secs(5));
    h.run_for(Duration::from_secs(1));
    // Every 20th packet is lost on the way between the nodes.
    h.drop_relay_media(20);
    h.run_for(Duration::from_secs(5));
    h.drop_relay_media(0);
    h.run_for(Duration::from_secs(1));

    let origin = h.shards[0].stats();
    let far = h.shards[1].stats();
    assert_eq!(far.relayed_tracks, 2, "{far:?}");
    assert!(
        far.relay_lost > 0 && origin.relay_resent > 0,
        "{far:?} {origin:?}"
    );
    println!(
        "bridge: {} media packets, {} dropped, {} bytes crossed",
        h.relays.media, h.relays.dropped, h.relays.bridged_bytes
    );
    for &s in &players {
        let c = &h.clients[s];
        let video = check_stream(c, MediaKind::Video);
        assert!(
            video.seqs.len() > 400,
            "{}: {}",
            c.identity,
            video.seqs.len()
        );
        assert_eq!(video.holes, 0, "{}: repaired across the bridge", c.identity);
        assert!(!c.received_of(MediaKind::Audio).is_empty());
        assert!(c.received_of(MediaKind::Video)[0].is_keyframe_start());
    }
}
