//! A shard whose worker cannot keep up sheds by the policy of `overload.rs`: video first,
//! then audio, every packet counted; when the backlog is gone and the hold has passed,
//! video resumes on a keyframe with continuous numbering, and audio never stopped until
//! the second level.

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

#[test]
fn overload_sheds_video_first_then_audio_and_video_resumes_on_a_keyframe() {
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
    let v = viewers[0];
    let before = counts(&h, v);
    assert!(before.iter().all(|&n| n > 50), "{before:?}");

    // A backlog under the video threshold changes nothing.
    h.backlog(Duration::from_millis(100));
    h.run_for(Duration::from_secs(1));
    let calm = counts(&h, v);
    assert!(calm[0] > before[0] + 20 && calm[1] > before[1] + 20);
    assert_eq!(h.stats().shed_level, 0);

    // Past it: video stops, audio goes on.
    let sent_before = h.stats().bytes_out;
    h.run_for(Duration::from_secs(2));
    let sending = h.stats().bytes_out - sent_before;
    h.backlog(Duration::from_millis(200));
    assert_eq!(h.stats().shed_level, 1);
    // Packets already written to the subscriber's session may still arrive.
    h.run_for(Duration::from_millis(200));
    let shedding = counts(&h, v);
    let shed_from = h.stats().bytes_out;
    h.run_for(Duration::from_secs(2));
    let shed_bytes = h.stats().bytes_out - shed_from;
    // Nothing takes video's place: no padding up to the rate video had.
    assert!(
        shed_bytes * 3 < sending,
        "sent while shedding {shed_bytes} bytes against {sending} before"
    );
    let later = counts(&h, v);
    assert_eq!(later[1], shedding[1], "no video while shedding video");
    assert!(
        later[0] > shedding[0] + 50,
        "audio goes on: {shedding:?} → {later:?}"
    );
    let shed_video = dropped(&h, "shed_video");
    assert!(shed_video > 20, "shed video is counted: {shed_video}");
    assert_eq!(dropped(&h, "shed_audio"), 0);

    // Worse: audio goes too.
    h.backlog(Duration::from_millis(500));
    assert_eq!(h.stats().shed_level, 2);
    h.run_for(Duration::from_millis(200));
    let worse = counts(&h, v);
    h.run_for(Duration::from_millis(700));
    assert_eq!(counts(&h, v), worse, "nothing while shedding everything");
    assert!(dropped(&h, "shed_audio") > 10);

    // The backlog is gone: one level comes back per hold (audio first), then video.
    h.backlog(Duration::ZERO);
    assert_eq!(h.stats().shed_level, 2, "held");
    h.run_for(Duration::from_millis(200));
    h.backlog(Duration::ZERO);
    assert_eq!(h.stats().shed_level, 1, "audio is back after the hold");
    let audio_back = counts(&h, v);
    h.run_for(Duration::from_millis(500));
    let a = counts(&h, v);
    assert!(a[0] > audio_back[0] + 10, "audio flows again");
    assert_eq!(a[1], audio_back[1], "video still shed");
    let requests = h.stats().keyframe_requests;
    h.run_for(Duration::from_millis(600));
    h.backlog(Duration::ZERO);
    assert_eq!(h.stats().shed_level, 0);
    assert!(
        h.stats().keyframe_requests > requests,
        "recovering asks the publisher for a keyframe"
    );
    let resumed_at = counts(&h, v);
    h.run_for(Duration::from_secs(3));
    assert_eq!(h.stats().overload_episodes, 1);
    for &viewer in &viewers {
        let c = &h.clients[viewer];
        let video = c.received_of(MediaKind::Video);
        assert!(
            video.len() > resumed_at[1] + 50,
            "video resumes for every viewer"
        );
        assert!(
            video[resumed_at[1]].is_keyframe_start(),
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
    h.backlog(Duration::from_secs(5));
    let before = counts(&h, viewer);
    h.run_for(Duration::from_secs(1));
    let after = counts(&h, viewer);
    assert!(after[0] > before[0] + 20 && after[1] > before[1] + 20);
    assert_eq!(h.stats().shed_level, 0);
    assert_eq!(dropped(&h, "shed_video") + dropped(&h, "shed_audio"), 0);
}
