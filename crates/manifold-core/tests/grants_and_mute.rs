//! The shard enforces grants on its own (a session lacking a grant gets no media that way,
//! whatever the control plane does), and a muted track is not forwarded: receivers resume
//! after unmute with continuous numbering and on a keyframe.

mod common;

use std::time::Duration;

use common::{ClientSpec, Harness, JoinError, check_stream, config};
use manifold_api::{CommandError, CoreEvent, Grants, ReplyValue, RequestId, Source, TrackId};
use manifold_core::Command;
use manifold_core::str0m::media::MediaKind;

#[test]
fn sessions_need_the_grant_for_their_kind() {
    let mut h = Harness::new(config(), 61);
    let publish_only = Grants {
        publish: true,
        ..Default::default()
    };
    let subscribe_only = Grants {
        subscribe: true,
        ..Default::default()
    };
    let mut spec = ClientSpec::subscriber("viewer", "room", Source::RoomCurrent);
    spec.grants = publish_only;
    match h.join(spec) {
        Err(JoinError::Command(CommandError::Forbidden(_))) => {}
        other => panic!("a player without the subscribe grant: {other:?}"),
    }
    let mut spec = ClientSpec::publisher("pub", "room");
    spec.grants = subscribe_only;
    match h.join(spec) {
        Err(JoinError::Command(CommandError::Forbidden(_))) => {}
        other => panic!("a publisher without the publish grant: {other:?}"),
    }
    assert_eq!(h.stats().participants, 0);
    // Admin implies every grant.
    let mut spec = ClientSpec::subscriber("ops", "room", Source::RoomCurrent);
    spec.grants = Grants {
        admin: true,
        ..Default::default()
    };
    h.join(spec).expect("admin may play");
}

fn tracks_of(h: &Harness) -> Vec<(TrackId, manifold_api::MediaKind)> {
    h.events
        .iter()
        .filter_map(|(_, e)| match e {
            CoreEvent::TrackPublished { track, kind, .. } => Some((*track, *kind)),
            _ => None,
        })
        .collect()
}

fn set_muted(h: &mut Harness, publisher: usize, track: TrackId, muted: bool, n: u64) {
    let request = RequestId(900 + n);
    let participant = h.clients[publisher].id;
    h.command(Command::SetMuted {
        request,
        participant,
        track,
        muted,
    });
    assert_eq!(h.reply(request), Some(Ok(ReplyValue::Done)));
}

#[test]
fn a_muted_track_is_not_forwarded_and_resumes_continuously() {
    let mut h = Harness::new(config(), 62);
    let publisher = h.add(ClientSpec::publisher("alice", "room"));
    let viewer = h.add(ClientSpec::subscriber("bob", "room", Source::RoomCurrent));
    h.connect(&[publisher, viewer], Duration::from_secs(5));
    h.run_for(Duration::from_secs(3));
    let tracks = tracks_of(&h);
    assert_eq!(tracks.len(), 2);

    let before =
        [MediaKind::Audio, MediaKind::Video].map(|k| h.clients[viewer].received_of(k).len());
    assert!(before.iter().all(|&n| n > 50), "{before:?}");
    for (i, (track, _)) in tracks.iter().enumerate() {
        set_muted(&mut h, publisher, *track, true, i as u64);
    }
    // Packets in flight when the mute took effect may still arrive.
    h.run_for(Duration::from_millis(200));
    let muted_at =
        [MediaKind::Audio, MediaKind::Video].map(|k| h.clients[viewer].received_of(k).len());
    h.run_for(Duration::from_secs(3));
    let during =
        [MediaKind::Audio, MediaKind::Video].map(|k| h.clients[viewer].received_of(k).len());
    assert_eq!(during, muted_at, "nothing is forwarded while muted");
    let muted_drops = h
        .stats()
        .drops
        .iter()
        .find(|d| d.reason == "muted")
        .map_or(0, |d| d.count);
    assert!(
        muted_drops > 100,
        "muted packets are counted: {muted_drops}"
    );

    // Only the track's own publisher may mute or unmute it.
    let request = RequestId(990);
    let participant = h.clients[viewer].id;
    h.command(Command::SetMuted {
        request,
        participant,
        track: tracks[0].0,
        muted: false,
    });
    assert!(matches!(
        h.reply(request),
        Some(Err(CommandError::NotFound(_)))
    ));

    for (i, (track, _)) in tracks.iter().enumerate() {
        set_muted(&mut h, publisher, *track, false, 10 + i as u64);
    }
    h.run_for(Duration::from_secs(3));
    let c = &h.clients[viewer];
    for (k, n) in [MediaKind::Audio, MediaKind::Video].into_iter().zip(during) {
        let rx = c.received_of(k);
        assert!(rx.len() > n + 50, "{k:?} resumes after unmute");
        let check = check_stream(c, k);
        assert_eq!(check.holes, 0, "{k:?}: no gap across the mute");
        assert_eq!(check.ts_backwards, 0, "{k:?}");
        assert_eq!(check.ssrcs.len(), 1, "{k:?}");
    }
    // Video resumes on a keyframe.
    let video = c.received_of(MediaKind::Video);
    assert!(video[during[1]].is_keyframe_start());
}
