//! Participants leaving: the events that say so, a shard that returns to empty, no timers
//! left behind, and the departed participants' datagrams treated as strays.

mod common;

use std::time::Duration;

use common::{ClientSpec, Harness, config};
use manifold_api::{CoreEvent, LeaveReason, Source};
use manifold_core::Command;

#[test]
fn leaving_empties_the_shard() {
    let cfg = config();
    let housekeeping = cfg.housekeeping_interval;
    let mut h = Harness::new(cfg, 21);
    let p = h.add(ClientSpec::publisher("pub", "room"));
    let s1 = h.add(ClientSpec::subscriber("s1", "room", Source::RoomCurrent));
    let s2 = h.add(ClientSpec::subscriber("s2", "room", Source::RoomCurrent));
    h.connect(&[p, s1, s2], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));
    let stats = h.stats();
    assert_eq!(
        (
            stats.rooms,
            stats.participants,
            stats.tracks,
            stats.subscriptions
        ),
        (1, 3, 2, 4)
    );

    // A player leaves: only it goes.
    let before = h.events.len();
    let left_at = h.now;
    h.leave(s1, LeaveReason::Requested);
    let new: Vec<_> = h.events[before..].iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(
        new,
        vec![CoreEvent::ParticipantLeft {
            room: "room".parse().unwrap(),
            participant: h.clients[s1].id,
            reason: LeaveReason::Requested,
        }]
    );
    let stats = h.stats();
    assert_eq!(
        (
            stats.rooms,
            stats.participants,
            stats.tracks,
            stats.subscriptions
        ),
        (1, 2, 2, 2)
    );
    h.run_for(Duration::from_millis(500));
    let closed = h.clients[s1]
        .closed_at
        .expect("the player is told (RTCP BYE, DTLS close_notify)");
    assert!(closed - left_at <= Duration::from_millis(20), "at once");

    // The publisher is kicked; the news is lost on the way, so it keeps sending. Its tracks
    // go with it.
    h.clients[p].downlink.loss = 1.0;
    let before = h.events.len();
    h.leave(p, LeaveReason::Kicked);
    let new: Vec<_> = h.events[before..].iter().map(|(_, e)| e.clone()).collect();
    let unpublished = new
        .iter()
        .filter(|e| matches!(e, CoreEvent::TrackUnpublished { participant, .. } if *participant == h.clients[p].id))
        .count();
    assert_eq!(unpublished, 2, "{new:?}");
    assert!(new.contains(&CoreEvent::ParticipantLeft {
        room: "room".parse().unwrap(),
        participant: h.clients[p].id,
        reason: LeaveReason::Kicked,
    }));
    assert!(
        !new.iter()
            .any(|e| matches!(e, CoreEvent::RoomClosed { .. }))
    );
    let stats = h.stats();
    assert_eq!(
        (
            stats.rooms,
            stats.participants,
            stats.tracks,
            stats.subscriptions
        ),
        (1, 1, 0, 0)
    );
    let rtp_in = stats.rtp_in;
    h.run_for(Duration::from_millis(500));

    // The last one closes the room.
    let before = h.events.len();
    h.leave(s2, LeaveReason::Requested);
    let new: Vec<_> = h.events[before..].iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(
        new,
        vec![
            CoreEvent::ParticipantLeft {
                room: "room".parse().unwrap(),
                participant: h.clients[s2].id,
                reason: LeaveReason::Requested,
            },
            CoreEvent::RoomClosed {
                room: "room".parse().unwrap()
            },
        ]
    );
    let stats = h.stats();
    assert_eq!(
        (
            stats.rooms,
            stats.participants,
            stats.tracks,
            stats.subscriptions
        ),
        (0, 0, 0, 0)
    );

    // The publisher does not know and keeps sending: media, RTCP, STUN consent checks.
    let strays = stats.drops_for("unknown_source");
    let out = stats.datagrams_out;
    let wakeups = h.shard_wakeups.len();
    h.run_for(Duration::from_secs(5));
    let stats = h.stats();
    assert!(
        stats.drops_for("unknown_source") > strays + 100,
        "the departed publisher's media is dropped as unknown_source: {stats:?}"
    );
    assert_eq!(stats.rtp_in, rtp_in, "nothing of theirs is processed");
    assert_eq!(stats.datagrams_out, out, "nothing is sent to them");

    // Only housekeeping wakes the empty shard.
    let woken: Vec<_> = h.shard_wakeups[wakeups..].to_vec();
    assert!(
        woken.len() as u128 <= 5_000 / housekeeping.as_millis() + 1,
        "{} wake-ups in 5 s",
        woken.len()
    );
    assert!(
        woken.windows(2).all(|w| w[1] - w[0] >= housekeeping),
        "no participant timer fires after everyone left"
    );
    assert!(h.clients[s2].closed_at.is_some());
    assert!(h.clients[p].closed_at.is_none());
}

#[test]
fn leave_of_an_unknown_participant_is_ignored() {
    let mut h = Harness::new(config(), 22);
    let s = h.add(ClientSpec::subscriber("s", "room", Source::RoomCurrent));
    h.connect(&[s], Duration::from_secs(2));
    h.leave(s, LeaveReason::Requested);
    let before = h.events.len();
    h.leave(s, LeaveReason::Requested);
    assert_eq!(h.events.len(), before, "a second leave says nothing");
    assert_eq!(h.stats().participants, 0);
}

#[test]
fn shutdown_removes_everyone() {
    let mut h = Harness::new(config(), 23);
    let p = h.add(ClientSpec::publisher("pub", "r1"));
    let s = h.add(ClientSpec::subscriber("s", "r1", Source::RoomCurrent));
    let q = h.add(ClientSpec::publisher("pub", "r2"));
    h.connect(&[p, s, q], Duration::from_secs(2));
    h.run_for(Duration::from_secs(1));
    h.command(Command::Shutdown);
    for i in [p, s, q] {
        assert_eq!(h.left_reason(i), Some(LeaveReason::Shutdown));
    }
    let closed = h.events_where(|e| matches!(e, CoreEvent::RoomClosed { .. }));
    assert_eq!(closed.len(), 2);
    let stats = h.stats();
    assert_eq!(
        (
            stats.rooms,
            stats.participants,
            stats.tracks,
            stats.subscriptions
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn a_client_closing_its_session_leaves() {
    let mut h = Harness::new(config(), 24);
    let p = h.add(ClientSpec::publisher("pub", "room"));
    let s = h.add(ClientSpec::subscriber("s", "room", Source::RoomCurrent));
    h.connect(&[p, s], Duration::from_secs(2));
    h.run_for(Duration::from_secs(1));
    h.close_client(s);
    h.run_for(Duration::from_millis(100));
    assert_eq!(h.left_reason(s), Some(LeaveReason::PeerClosed));
    h.close_client(p);
    h.run_for(Duration::from_millis(100));
    assert_eq!(h.left_reason(p), Some(LeaveReason::PeerClosed));
    assert_eq!(h.stats().participants, 0);
    assert_eq!(h.stats().rooms, 0);
}

#[test]
fn silent_clients_time_out() {
    let mut cfg = config();
    cfg.connect_timeout = Duration::from_secs(3);
    cfg.disconnect_grace = Duration::from_secs(2);
    let mut h = Harness::new(cfg, 25);
    // One never gets through at all.
    let never = h.add(ClientSpec::subscriber("never", "room", Source::RoomCurrent));
    h.stop(never);
    // One connects, then its network goes away.
    let gone = h.add(ClientSpec::subscriber("gone", "room", Source::RoomCurrent));
    let stays = h.add(ClientSpec::publisher("stays", "room"));
    h.connect(&[gone, stays], Duration::from_secs(2));
    let vanished = h.now;
    h.stop(gone);

    h.run_for(Duration::from_secs(4));
    assert_eq!(h.left_reason(never), Some(LeaveReason::Timeout));
    let left_at = |h: &Harness, i: usize| {
        let id = h.clients[i].id;
        h.events.iter().find_map(|(t, e)| match e {
            CoreEvent::ParticipantLeft { participant, .. } if *participant == id => Some(*t),
            _ => None,
        })
    };
    let t = left_at(&h, never).unwrap();
    assert!(t - h.epoch >= Duration::from_secs(3) && t - h.epoch <= Duration::from_millis(3200));

    h.run_for(Duration::from_secs(30));
    assert_eq!(h.left_reason(gone), Some(LeaveReason::Timeout));
    let t = left_at(&h, gone).unwrap();
    assert!(
        t - vanished <= Duration::from_secs(20),
        "ICE notices, then the grace period ends it ({:?})",
        t - vanished
    );
    assert_eq!(h.left_reason(stays), None, "the one still talking stays");
    let stats = h.stats();
    assert_eq!(stats.participants, 1);
    // The one that never connected failed ICE; the one that vanished had connected.
    assert_eq!((stats.ice_failures, stats.dtls_failures), (1, 0));
    assert_eq!(stats.connect_time.count(), 2, "{:?}", stats.connect_time);
    assert_eq!(stats.dtls_handshake.count(), 2);
}
