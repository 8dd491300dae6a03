//! Room-protocol sessions in virtual time: members join with the server's first offer,
//! publish and subscribe through server-made offers, and receive each other's media with
//! continuous numbering, on the same shard paths WHIP and WHEP use.

mod common;

use std::time::Duration;

use common::{ClientSpec, Harness, check_stream, config};
use manifold_api::{CommandError, CoreEvent, Grants, ReplyValue};
use manifold_core::str0m::media::MediaKind;

/// Two members connected; `a` publishes audio and video.
fn two_members(seed: u64, b_auto: bool) -> (Harness, usize, usize) {
    let mut h = Harness::new(config(), seed);
    let a = h.add(ClientSpec::room("alice", "room"));
    let b = h.add(ClientSpec::room("bob", "room").auto_subscribe(b_auto));
    h.connect(&[a, b], Duration::from_secs(3));
    assert_eq!(h.publish(a, MediaKind::Audio, "mic"), Ok(ReplyValue::Done));
    assert_eq!(h.publish(a, MediaKind::Video, "cam"), Ok(ReplyValue::Done));
    (h, a, b)
}

#[test]
fn a_member_receives_what_another_publishes() {
    let (mut h, a, b) = two_members(71, true);
    h.run_for(Duration::from_secs(3));
    assert!(h.track_of(a, "mic").is_some() && h.track_of(a, "cam").is_some());
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let got = check_stream(&h.clients[b], kind);
        assert!(got.seqs.len() > 20, "{kind:?}: {} packets", got.seqs.len());
        assert_eq!(got.holes, 0, "{kind:?} has holes");
        assert_eq!(got.ts_backwards, 0, "{kind:?} goes back in time");
        assert_eq!(got.ssrcs.len(), 1);
    }
    // The publisher receives nothing of its own.
    assert!(h.clients[a].received.is_empty());
    assert_eq!(h.stats().subscriptions, 2);
}

#[test]
fn explicit_subscription_starts_and_stops_one_track() {
    let (mut h, a, b) = two_members(72, false);
    h.run_for(Duration::from_secs(1));
    assert!(
        h.clients[b].received.is_empty(),
        "nothing without a subscription"
    );
    let cam = h.track_of(a, "cam").expect("the camera track");
    assert_eq!(h.subscribe(b, cam), Ok(ReplyValue::Done));
    h.run_for(Duration::from_secs(2));
    let video = h.clients[b].received_of(MediaKind::Video).len();
    assert!(video > 20, "{video} video packets after subscribing");
    assert!(h.clients[b].received_of(MediaKind::Audio).is_empty());
    assert_eq!(check_stream(&h.clients[b], MediaKind::Video).holes, 0);

    assert_eq!(h.unsubscribe(b, cam), Ok(ReplyValue::Done));
    h.run_for(Duration::from_millis(500));
    let settled = h.clients[b].received_of(MediaKind::Video).len();
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.clients[b].received_of(MediaKind::Video).len(), settled);
    assert_eq!(h.stats().subscriptions, 0);
    // Unsubscribing again: nothing to stop.
    assert!(matches!(
        h.unsubscribe(b, cam),
        Err(CommandError::NotFound(_))
    ));
}

#[test]
fn unpublishing_ends_the_track_for_its_receivers() {
    let (mut h, a, b) = two_members(73, true);
    h.run_for(Duration::from_secs(2));
    let cam = h.track_of(a, "cam").expect("the camera track");
    assert_eq!(h.unpublish(a, cam), Ok(ReplyValue::Done));
    assert!(
        !h.events_where(
            |e| matches!(e, CoreEvent::TrackUnpublished { track, .. } if *track == cam)
        )
        .is_empty()
    );
    h.run_for(Duration::from_millis(500));
    let video = h.clients[b].received_of(MediaKind::Video).len();
    let audio = h.clients[b].received_of(MediaKind::Audio).len();
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.clients[b].received_of(MediaKind::Video).len(), video);
    assert!(h.clients[b].received_of(MediaKind::Audio).len() > audio + 20);
    // Subscribing to a track that is gone.
    assert!(matches!(
        h.subscribe(b, cam),
        Err(CommandError::NotFound(_))
    ));
}

#[test]
fn a_member_without_the_subscribe_grant_gets_nothing() {
    let mut h = Harness::new(config(), 74);
    let a = h.add(ClientSpec::room("alice", "room"));
    let mut spec = ClientSpec::room("bob", "room");
    spec.grants = Grants {
        publish: true,
        ..Default::default()
    };
    let b = h.add(spec);
    h.connect(&[a, b], Duration::from_secs(3));
    assert_eq!(h.publish(a, MediaKind::Video, "cam"), Ok(ReplyValue::Done));
    h.run_for(Duration::from_secs(1));
    let cam = h.track_of(a, "cam").expect("the camera track");
    assert!(matches!(
        h.subscribe(b, cam),
        Err(CommandError::Forbidden(_))
    ));
    h.run_for(Duration::from_secs(1));
    assert!(h.clients[b].received.is_empty());
    assert_eq!(h.stats().subscriptions, 0);
}
