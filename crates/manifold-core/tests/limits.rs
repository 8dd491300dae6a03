//! Configured limits refuse a join with `LimitReached`, and one identity holds one session
//! of each kind per room: a second one replaces the first.

mod common;

use std::time::Duration;

use common::{ClientSpec, Harness, JoinError, config};
use manifold_api::{CommandError, CoreEvent, LeaveReason, Source};

fn limit_reached(r: Result<usize, JoinError>) -> String {
    match r {
        Err(JoinError::Command(CommandError::LimitReached(m))) => m,
        Err(e) => panic!("expected LimitReached, got {e:?}"),
        Ok(_) => panic!("expected LimitReached, the join succeeded"),
    }
}

#[test]
fn room_participant_limit() {
    let mut cfg = config();
    cfg.max_participants_per_room = 3;
    let mut h = Harness::new(cfg, 51);
    let p = h.add(ClientSpec::publisher("p", "room"));
    let a = h.add(ClientSpec::subscriber("a", "room", Source::RoomCurrent));
    let b = h.add(ClientSpec::subscriber("b", "room", Source::RoomCurrent));
    h.connect(&[p, a, b], Duration::from_secs(2));

    let joined = h
        .events_where(|e| matches!(e, CoreEvent::ParticipantJoined { .. }))
        .len();
    let m = limit_reached(h.join(ClientSpec::subscriber("c", "room", Source::RoomCurrent)));
    assert!(m.contains('3'), "the message names the limit: {m}");
    assert_eq!(
        h.events_where(|e| matches!(e, CoreEvent::ParticipantJoined { .. }))
            .len(),
        joined,
        "a refused join leaves no trace"
    );
    assert_eq!(h.stats().participants, 3);
    // Publishers count too.
    limit_reached(h.join(ClientSpec::publisher("q", "room")));

    // Other rooms are not affected.
    h.add(ClientSpec::subscriber("c", "other", Source::RoomCurrent));

    // A replacement is not an extra participant, even in a full room.
    let a2 = h.add(ClientSpec::subscriber("a", "room", Source::RoomCurrent));
    assert_eq!(h.left_reason(a), Some(LeaveReason::Replaced));
    // And a place freed is a place to take.
    h.leave(b, LeaveReason::Requested);
    let c = h.add(ClientSpec::subscriber("c", "room", Source::RoomCurrent));
    h.connect(&[a2, c], Duration::from_secs(2));
    h.run_for(Duration::from_secs(1));
    assert!(!h.clients[c].received.is_empty());
    assert_eq!(h.stats().participants, 4);
}

#[test]
fn tracks_per_participant_limit() {
    let mut cfg = config();
    cfg.max_tracks_per_participant = 2;
    let mut h = Harness::new(cfg, 52);
    let mut spec = ClientSpec::publisher("p", "room");
    spec.extra_video_lines = 1;
    let m = limit_reached(h.join(spec));
    assert!(m.contains('3') && m.contains('2'), "{m}");
    let stats = h.stats();
    assert_eq!((stats.participants, stats.tracks), (0, 0));
    assert!(
        h.events_where(|e| matches!(e, CoreEvent::TrackPublished { .. }))
            .is_empty()
    );

    // Two are fine.
    let p = h.add(ClientSpec::publisher("p", "room"));
    h.connect(&[p], Duration::from_secs(2));
    assert_eq!(h.stats().tracks, 2);
}

#[test]
fn same_identity_twice_replaces_the_older_session() {
    let mut h = Harness::new(config(), 53);
    let p1 = h.add(ClientSpec::publisher("alice", "room"));
    let w1 = h.add(ClientSpec::subscriber("alice", "room", Source::RoomCurrent));
    let bob = h.add(ClientSpec::subscriber("bob", "room", Source::RoomCurrent));
    h.connect(&[p1, w1, bob], Duration::from_secs(2));
    h.run_for(Duration::from_secs(1));
    // One identity may publish and play at once: different kinds do not replace each other.
    assert_eq!(h.left_reason(p1), None);
    assert_eq!(h.stats().participants, 3);

    let p2 = h.add(ClientSpec::publisher("alice", "room"));
    assert_eq!(h.left_reason(p1), Some(LeaveReason::Replaced));
    assert_eq!(h.left_reason(w1), None, "the player of that identity stays");
    let old = h.clients[p1].id;
    let unpublished = h.events_where(
        |e| matches!(e, CoreEvent::TrackUnpublished { participant, .. } if *participant == old),
    );
    assert_eq!(unpublished.len(), 2);

    let w2 = h.add(ClientSpec::subscriber("alice", "room", Source::RoomCurrent));
    assert_eq!(h.left_reason(w1), Some(LeaveReason::Replaced));
    h.connect(&[p2, w2], Duration::from_secs(2));
    h.run_for(Duration::from_secs(1));
    let stats = h.stats();
    assert_eq!(
        (stats.participants, stats.tracks, stats.subscriptions),
        (3, 2, 4)
    );
    assert!(!h.clients[w2].received.is_empty());
    assert!(
        h.clients[w1].closed_at.is_some(),
        "the replaced player is told"
    );
    // The same identity in another room is someone else's business.
    let elsewhere = h.add(ClientSpec::publisher("alice", "other"));
    assert_eq!(h.left_reason(p2), None);
    assert_eq!(h.left_reason(elsewhere), None);
}

#[test]
fn replacing_the_only_participant_keeps_the_room() {
    let mut h = Harness::new(config(), 54);
    let p1 = h.add(ClientSpec::publisher("alice", "room"));
    h.connect(&[p1], Duration::from_secs(2));
    let p2 = h.add(ClientSpec::publisher("alice", "room"));
    assert_eq!(h.left_reason(p1), Some(LeaveReason::Replaced));
    assert!(
        h.events_where(|e| matches!(e, CoreEvent::RoomClosed { .. }))
            .is_empty(),
        "the room never closed: its person is still in it"
    );
    h.connect(&[p2], Duration::from_secs(2));
    let stats = h.stats();
    assert_eq!((stats.rooms, stats.participants, stats.tracks), (1, 1, 2));
}

#[test]
fn trickled_candidates_are_bounded_per_session() {
    use manifold_api::RequestId;
    use manifold_core::{Command, MAX_TRICKLED_CANDIDATES, SdpFragment};
    let mut h = Harness::new(config(), 77);
    let p = h.add(ClientSpec::publisher("p", "room"));
    let participant = h.clients[p].id;
    let candidate = |i: usize| {
        format!(
            "candidate:{i} 1 udp 2113937151 10.9.{}.{} {} typ host",
            i / 200,
            i % 200 + 1,
            10_000 + i
        )
    };
    let trickle = |h: &mut Harness, request: u64, from: usize, n: usize| {
        let fragment = SdpFragment {
            candidates: (from..from + n).map(candidate).collect(),
            ..Default::default()
        };
        h.command(Command::Trickle {
            request: RequestId(request),
            participant,
            fragment,
        });
        h.reply(RequestId(request))
    };
    for batch in 0..MAX_TRICKLED_CANDIDATES / 16 {
        let r = trickle(&mut h, 500 + batch as u64, batch * 16, 16);
        assert!(matches!(r, Some(Ok(_))), "{r:?}");
    }
    let r = trickle(&mut h, 600, MAX_TRICKLED_CANDIDATES, 1);
    assert!(
        matches!(r, Some(Err(CommandError::LimitReached(_)))),
        "{r:?}"
    );
}
