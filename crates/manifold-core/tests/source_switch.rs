//! A player's source changes under it (the room's publisher leaves and another takes over,
//! or the publisher it follows reconnects): it keeps one SSRC per kind, its sequence numbers
//! continue without a jump, and its timestamps advance by the time that passed.

mod common;

use std::time::Duration;

use common::{ClientSpec, Harness, check_stream, config};
use manifold_api::{CoreEvent, Identity, LeaveReason, Source};
use manifold_core::str0m::media::MediaKind;

fn clock_rate(kind: MediaKind) -> f64 {
    match kind {
        MediaKind::Audio => 48_000.0,
        MediaKind::Video => 90_000.0,
    }
}

/// The stream of `kind` player `s` received switches once from publisher tag `old` to `new`
/// and is seamless across the switch.
fn assert_seamless(h: &Harness, s: usize, kind: MediaKind, old: u8, new: u8) {
    let c = &h.clients[s];
    let check = check_stream(c, kind);
    assert_eq!(check.ssrcs.len(), 1, "{kind:?}: one SSRC across the switch");
    assert_eq!(check.holes, 0, "{kind:?}: no gap on a lossless network");
    assert_eq!(check.ts_backwards, 0, "{kind:?}: time never goes back");

    let mut rx: Vec<_> = c.received_of(kind);
    rx.sort_by_key(|r| r.seq_no);
    let tags: Vec<u8> = rx.iter().map(|r| r.record().unwrap().tag).collect();
    let switch = tags
        .iter()
        .position(|t| *t == new)
        .unwrap_or_else(|| panic!("{kind:?}: nothing from the new source"));
    assert!(switch > 0, "{kind:?}: something from the old source first");
    assert!(
        tags[..switch].iter().all(|t| *t == old),
        "{kind:?}: {tags:?}"
    );
    assert!(
        tags[switch..].iter().all(|t| *t == new),
        "{kind:?}: nothing of the old source after the switch"
    );
    let (last, first) = (rx[switch - 1], rx[switch]);
    assert_eq!(
        first.seq_no,
        last.seq_no + 1,
        "{kind:?}: next seq = last + 1"
    );
    if kind == MediaKind::Video {
        assert!(first.is_keyframe_start(), "video switches on a keyframe");
    }
    let dts = first.ts.wrapping_sub(last.ts);
    assert!(dts > 0 && dts < 0x8000_0000, "{kind:?}: forward, not back");
    let elapsed = (first.at - last.at).as_secs_f64();
    let expected = elapsed * clock_rate(kind);
    let slack = 0.03 * clock_rate(kind);
    assert!(
        (f64::from(dts) - expected).abs() <= slack,
        "{kind:?}: timestamps jumped {dts} for {elapsed:.3} s (expected ~{expected:.0})"
    );
}

#[test]
fn room_current_publisher_leaves_and_next_takes_over() {
    let mut h = Harness::new(config(), 11);
    let a = h.add(ClientSpec::publisher("a", "room"));
    let b = h.add(ClientSpec::publisher("b", "room"));
    let s = h.add(ClientSpec::subscriber(
        "viewer",
        "room",
        Source::RoomCurrent,
    ));
    h.connect(&[a, b, s], Duration::from_secs(2));
    h.run_for(Duration::from_secs(3));
    let (tag_a, tag_b) = (h.clients[a].publisher().tag, h.clients[b].publisher().tag);
    assert!(
        h.clients[s]
            .received
            .iter()
            .all(|r| r.record().unwrap().tag == tag_a),
        "the room's first publisher is the current one"
    );

    h.leave(a, LeaveReason::Requested);
    h.stop(a);
    h.run_for(Duration::from_secs(3));

    assert_eq!(h.left_reason(a), Some(LeaveReason::Requested));
    assert_seamless(&h, s, MediaKind::Audio, tag_a, tag_b);
    assert_seamless(&h, s, MediaKind::Video, tag_a, tag_b);
    assert_eq!(h.stats().subscriptions, 2);
}

#[test]
fn room_current_next_publisher_joins_later() {
    let mut h = Harness::new(config(), 12);
    let a = h.add(ClientSpec::publisher("a", "room"));
    let s = h.add(ClientSpec::subscriber(
        "viewer",
        "room",
        Source::RoomCurrent,
    ));
    h.connect(&[a, s], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));
    h.leave(a, LeaveReason::Requested);
    h.stop(a);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.stats().subscriptions, 0, "nothing to follow");

    let b = h.add(ClientSpec::publisher("b", "room").keyframe_interval(None));
    h.connect(&[b], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));

    let (tag_a, tag_b) = (h.clients[a].publisher().tag, h.clients[b].publisher().tag);
    assert_seamless(&h, s, MediaKind::Audio, tag_a, tag_b);
    assert_seamless(&h, s, MediaKind::Video, tag_a, tag_b);
}

#[test]
fn followed_identity_reconnects() {
    let mut h = Harness::new(config(), 13);
    // Another publisher, the room's current one, that the player must not switch to.
    let other = h.add(ClientSpec::publisher("y", "room"));
    let x1 = h.add(ClientSpec::publisher("x", "room"));
    let s = h.add(ClientSpec::subscriber(
        "viewer",
        "room",
        Source::Identity(Identity::parse("x").unwrap()),
    ));
    h.connect(&[x1, other, s], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));

    // x reconnects: a new WHIP session from a new address; the old one is still sending
    // (it does not know yet) and must be cut off.
    let x2 = h.add(ClientSpec::publisher("x", "room"));
    let old_id = h.clients[x1].id;
    let replaced = h.events_where(|e| {
        matches!(e, CoreEvent::ParticipantLeft { participant, reason: LeaveReason::Replaced, .. }
            if *participant == old_id)
    });
    assert_eq!(replaced.len(), 1, "the old session is replaced at once");
    h.connect(&[x2], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));

    let (t1, t2) = (h.clients[x1].publisher().tag, h.clients[x2].publisher().tag);
    assert_seamless(&h, s, MediaKind::Audio, t1, t2);
    assert_seamless(&h, s, MediaKind::Video, t1, t2);
    let stats = h.stats();
    assert_eq!(stats.participants, 3);
    assert_eq!(stats.tracks, 4);
    assert_eq!(stats.subscriptions, 2);
    assert!(
        stats.drops_for("unknown_source") > 0,
        "the replaced session's datagrams are strays now"
    );
}

#[test]
fn room_current_publisher_reconnecting_keeps_its_place() {
    let mut h = Harness::new(config(), 14);
    let a1 = h.add(ClientSpec::publisher("a", "room"));
    let b = h.add(ClientSpec::publisher("b", "room"));
    let s = h.add(ClientSpec::subscriber(
        "viewer",
        "room",
        Source::RoomCurrent,
    ));
    h.connect(&[a1, b, s], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));

    // a is the room's current publisher; when it reconnects it is still a, the same person,
    // and keeps its place ahead of b.
    let a2 = h.add(ClientSpec::publisher("a", "room"));
    assert_eq!(h.left_reason(a1), Some(LeaveReason::Replaced));
    h.connect(&[a2], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));

    let (t1, t2) = (h.clients[a1].publisher().tag, h.clients[a2].publisher().tag);
    assert_seamless(&h, s, MediaKind::Audio, t1, t2);
    assert_seamless(&h, s, MediaKind::Video, t1, t2);
    assert!(
        h.clients[b].keyframe_requests.is_empty(),
        "b was never switched to, not even for a moment"
    );
}
