//! A shard whose worker cannot keep up sheds by the policy of `overload.rs`: a share of
//! video subscriptions first (the newest), all video as the backlog stays, then audio,
//! every forward not made counted and no padding in place of what is shed; when the backlog
//! is gone, audio comes back first, then video a step at a time, each subscription on a
//! keyframe with continuous numbering.

mod common;

use std::time::Duration;

use common::{ClientSpec, Harness, check_stream, config};
use manifold_api::Source;
use manifold_core::str0m::media::MediaKind;

fn counts(h: &Harness, viewer: usize) -> [usize; 2] {
    [MediaKind::Audio, MediaKind::Video].map(|k| h.clients[viewer].received_of(k).len())
}

fn dropped(h: &Harness, reason: &str) -> u64 {
    h.stats().drops_for(reason)
}

/// The worker reports `backlog` every 100 ms for `d`, as a busy worker would.
fn backlog_for(h: &mut Harness, backlog: Duration, d: Duration) {
    for _ in 0..d.as_millis() / 100 {
        h.backlog(backlog);
        h.run_for(Duration::from_millis(100));
    }
}

#[test]
fn overload_sheds_video_by_share_then_audio_and_video_resumes_on_keyframes() {
    let mut h = Harness::new(config(), 71);
    let publisher = h.add(ClientSpec::publisher("alice", "room"));
    let viewers: Vec<usize> = (0..3)
        .map(|i| {
            h.add(ClientSpec::subscriber(
                &format!("v{i}"),
                "room",
                Source::RoomCurrent,
            ))
        })
        .collect();
    let mut all = vec![publisher];
    all.extend(&viewers);
    h.connect(&all, Duration::from_secs(5));
    h.run_for(Duration::from_secs(3));
    let before: Vec<[usize; 2]> = viewers.iter().map(|&v| counts(&h, v)).collect();
    assert!(before.iter().flatten().all(|&n| n > 50), "{before:?}");

    // A backlog under the video threshold changes nothing.
    backlog_for(&mut h, Duration::from_millis(100), Duration::from_secs(1));
    assert_eq!(h.stats().shed_level, 0);
    let sent_before = h.stats().bytes_out;
    h.run_for(Duration::from_secs(2));
    let sending = h.stats().bytes_out - sent_before;

    // Past it: a share of video subscriptions goes, the newest first.
    h.backlog(Duration::from_millis(300));
    assert_eq!(h.stats().shed_level, 1);
    assert_eq!(h.stats().video_shed_pct, 30);
    // Packets already written to a subscriber's session may still arrive.
    h.run_for(Duration::from_millis(200));
    let cut: Vec<[usize; 2]> = viewers.iter().map(|&v| counts(&h, v)).collect();
    h.run_for(Duration::from_millis(700));
    let later: Vec<[usize; 2]> = viewers.iter().map(|&v| counts(&h, v)).collect();
    assert_eq!(
        later[2][1], cut[2][1],
        "the newest subscription loses video"
    );
    for i in 0..2 {
        assert!(later[i][1] > cut[i][1] + 10, "the oldest two keep video");
    }
    for i in 0..3 {
        assert!(later[i][0] > cut[i][0] + 20, "audio goes on for everyone");
    }
    assert!(dropped(&h, "shed_video") > 10);

    // The backlog stays: cut after cut, no video is left.
    backlog_for(&mut h, Duration::from_millis(300), Duration::from_secs(10));
    assert_eq!(h.stats().video_shed_pct, 100);
    let none = counts(&h, viewers[0]);
    let from = h.stats();
    backlog_for(&mut h, Duration::from_millis(300), Duration::from_secs(2));
    let to = h.stats();
    let shed_bytes = to.bytes_out - from.bytes_out;
    // Nor padding at str0m's floor: the sessions are held not sending while no video goes.
    let (datagrams, media) = (
        to.datagrams_out - from.datagrams_out,
        to.rtp_out - from.rtp_out,
    );
    assert!(
        datagrams < media + 60,
        "{datagrams} datagrams sent for {media} media packets while all video is shed"
    );
    let a = counts(&h, viewers[0]);
    assert_eq!(a[1], none[1], "no video at all");
    assert!(a[0] > none[0] + 50, "audio still goes");
    // Nothing takes video's place: no padding up to the rate video had.
    assert!(
        shed_bytes * 3 < sending,
        "sent while shedding {shed_bytes} bytes against {sending} before"
    );
    assert_eq!(dropped(&h, "shed_audio"), 0);

    // Worse: audio goes too.
    h.backlog(Duration::from_millis(700));
    assert_eq!(h.stats().shed_level, 2);
    h.run_for(Duration::from_millis(200));
    let worse = counts(&h, viewers[0]);
    h.run_for(Duration::from_millis(700));
    assert_eq!(
        counts(&h, viewers[0]),
        worse,
        "nothing while shedding everything"
    );
    assert!(dropped(&h, "shed_audio") > 10);

    // The backlog is gone: audio comes back after a hold, video a step per hold after it.
    backlog_for(&mut h, Duration::ZERO, Duration::from_millis(1100));
    assert_eq!(h.stats().shed_level, 1, "audio is back after the hold");
    let audio_back = counts(&h, viewers[0]);
    h.run_for(Duration::from_millis(500));
    assert!(
        counts(&h, viewers[0])[0] > audio_back[0] + 10,
        "audio flows again"
    );
    let resumed_at: Vec<usize> = viewers.iter().map(|&v| counts(&h, v)[1]).collect();
    let requests = h.stats().keyframe_requests;
    backlog_for(&mut h, Duration::ZERO, Duration::from_secs(12));
    assert_eq!(h.stats().shed_level, 0);
    assert_eq!(h.stats().video_shed_pct, 0);
    assert!(
        h.stats().keyframe_requests > requests,
        "video coming back asks the publisher for keyframes"
    );
    assert_eq!(h.stats().overload_episodes, 1);
    for (n, &viewer) in viewers.iter().enumerate() {
        let c = &h.clients[viewer];
        let video = c.received_of(MediaKind::Video);
        assert!(
            video.len() > resumed_at[n] + 50,
            "video resumes for every viewer"
        );
        assert!(
            video[resumed_at[n]].is_keyframe_start(),
            "video resumes on a keyframe"
        );
        let check = check_stream(c, MediaKind::Video);
        assert_eq!(
            check.holes, 0,
            "video numbering is continuous across the shedding"
        );
        assert_eq!(check.ts_backwards, 0);
        assert_eq!(check.ssrcs.len(), 1);
    }
}

#[test]
fn shedding_can_be_turned_off() {
    let mut cfg = config();
    cfg.overload.shed_video_after = None;
    cfg.overload.shed_audio_after = None;
    let mut h = Harness::new(cfg, 72);
    let publisher = h.add(ClientSpec::publisher("alice", "room"));
    let viewer = h.add(ClientSpec::subscriber("bob", "room", Source::RoomCurrent));
    h.connect(&[publisher, viewer], Duration::from_secs(5));
    h.run_for(Duration::from_secs(2));
    let before = counts(&h, viewer);
    backlog_for(&mut h, Duration::from_secs(5), Duration::from_secs(1));
    let after = counts(&h, viewer);
    assert!(after[0] > before[0] + 20 && after[1] > before[1] + 20);
    assert_eq!(h.stats().shed_level, 0);
    assert_eq!(dropped(&h, "shed_video") + dropped(&h, "shed_audio"), 0);
}

#[test]
fn a_room_subscriber_hears_its_shed_video_is_paused_and_then_active_again() {
    use manifold_api::protocol::StreamState;
    use manifold_api::{CoreEvent, ReplyValue};

    let mut h = Harness::new(config(), 73);
    let alice = h.add(ClientSpec::room("alice", "room"));
    let bob = h.add(ClientSpec::room("bob", "room"));
    h.connect(&[alice, bob], Duration::from_secs(5));
    assert_eq!(
        h.publish_layers(alice, MediaKind::Video, "cam", 1),
        Ok(ReplyValue::Done)
    );
    h.run_for(Duration::from_secs(3));
    let id = h.clients[bob].id;
    let states = |h: &Harness| -> Vec<StreamState> {
        h.events_where(
            |e| matches!(e, CoreEvent::StreamState { participant, .. } if *participant == id),
        )
        .iter()
        .filter_map(|e| match e {
            CoreEvent::StreamState { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
    };
    assert_eq!(states(&h).last(), Some(&StreamState::Active));
    // One subscription: it goes once the share is below a half (the second cut).
    backlog_for(
        &mut h,
        Duration::from_millis(300),
        Duration::from_millis(1100),
    );
    assert_eq!(
        states(&h).last(),
        Some(&StreamState::Paused),
        "told it is paused"
    );
    let paused_at = counts(&h, bob)[1];
    h.run_for(Duration::from_secs(1));
    // A packet written before the cut may still arrive.
    assert!(counts(&h, bob)[1] <= paused_at + 1, "and nothing comes");
    backlog_for(&mut h, Duration::ZERO, Duration::from_secs(4));
    assert_eq!(
        states(&h).last(),
        Some(&StreamState::Active),
        "told it is back"
    );
    assert!(counts(&h, bob)[1] > paused_at + 20, "and video flows");
}

/// A worker with headroom that falls behind for a moment (a burst of keyframes or joins)
/// sheds nothing: its load, from the idle time the worker reports, drains the backlog within
/// a second. The same backlog on a saturated worker is shed.
#[test]
fn a_spike_on_a_worker_with_headroom_sheds_nothing() {
    let mut h = Harness::new(config(), 72);
    let publisher = h.add(ClientSpec::publisher("alice", "room"));
    let viewer = h.add(ClientSpec::subscriber("bob", "room", Source::RoomCurrent));
    h.connect(&[publisher, viewer], Duration::from_secs(5));
    // Busy half the time, for three seconds.
    let mut idle = Duration::ZERO;
    for _ in 0..30 {
        idle += Duration::from_millis(50);
        h.idle(idle);
        h.run_for(Duration::from_millis(100));
    }
    let received = counts(&h, viewer);
    h.backlog(Duration::from_millis(300));
    h.run_for(Duration::from_millis(100));
    h.backlog(Duration::ZERO);
    h.run_for(Duration::from_secs(1));
    let stats = h.stats();
    assert_eq!((stats.shed_level, stats.overload_episodes), (0, 0));
    assert_eq!(stats.overload_spikes, 1);
    assert_eq!(dropped(&h, "shed_video"), 0);
    assert!(counts(&h, viewer)[1] > received[1] + 20, "video goes on");

    // Saturated for long (no idle time at all), the same backlog is shed.
    for _ in 0..100 {
        h.idle(idle);
        h.run_for(Duration::from_millis(100));
    }
    h.backlog(Duration::from_millis(300));
    let stats = h.stats();
    assert_eq!((stats.shed_level, stats.overload_episodes), (1, 1));
}
