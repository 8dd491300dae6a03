//! A player joining a running publisher that sends no periodic keyframes: the shard asks the
//! publisher for one as soon as the player connects, the player starts on it, and requests
//! from several players are coalesced.

mod common;

use std::time::{Duration, Instant};

use common::{ClientSpec, Harness, Link, check_stream, config};
use manifold_api::Source;
use manifold_core::str0m::media::{KeyframeRequestKind, MediaKind};

const INTERVAL: Duration = Duration::from_millis(500);

/// A publisher that has been sending for 5 s, keyframe only at its start.
fn running_publisher() -> (Harness, usize) {
    let mut cfg = config();
    cfg.keyframe_request_interval = INTERVAL;
    let mut h = Harness::new(cfg, 3);
    let p = h.add(ClientSpec::publisher("alice", "room").keyframe_interval(None));
    h.connect(&[p], Duration::from_secs(2));
    h.run_for(Duration::from_secs(5));
    assert!(h.clients[p].keyframe_requests.is_empty());
    (h, p)
}

fn requests_since(h: &Harness, p: usize, t: Instant) -> Vec<Instant> {
    h.clients[p]
        .keyframe_requests
        .iter()
        .filter(|(at, _, _)| *at >= t)
        .map(|(at, _, _)| *at)
        .collect()
}

fn assert_starts_on_keyframe(h: &Harness, s: usize) {
    let c = &h.clients[s];
    let video = c.received_of(MediaKind::Video);
    assert!(!video.is_empty(), "{} received video", c.identity);
    assert!(
        video[0].is_keyframe_start(),
        "{}: the first video packet starts a keyframe",
        c.identity
    );
    let lowest = video.iter().min_by_key(|r| r.seq_no).unwrap();
    assert!(lowest.is_keyframe_start());
    assert!(!c.received_of(MediaKind::Audio).is_empty());
}

#[test]
fn late_joiner_gets_a_keyframe_at_once() {
    let (mut h, p) = running_publisher();
    let joined = h.now;
    let s = h.add(ClientSpec::subscriber("late", "room", Source::RoomCurrent));
    h.connect(&[s], Duration::from_secs(2));
    let connected = h.clients[s].connected_at.unwrap();
    h.run_for(Duration::from_secs(2));

    let requests = requests_since(&h, p, joined);
    assert_eq!(requests.len(), 1, "one keyframe request: {requests:?}");
    let delay = requests[0] - connected;
    assert!(
        delay <= Duration::from_millis(50),
        "the request reaches the publisher right after the player connects ({delay:?})"
    );
    assert_eq!(
        h.clients[p].keyframe_requests[0].2,
        KeyframeRequestKind::Pli
    );
    let stats = h.stats();
    assert_eq!(stats.keyframe_requests, 1);
    // The publisher's `Rtc` counted the PLI it sent, and the keyframe that answered it
    // came in (with the one at the start).
    assert_eq!(stats.plis_out, 1, "{stats:?}");
    assert_eq!(stats.keyframes_in, 2, "{stats:?}");
    assert_starts_on_keyframe(&h, s);
    // And it did not wait for a periodic one: video flows within a frame or two of the
    // request's round trip.
    let first_video = h.clients[s].received_of(MediaKind::Video)[0].at;
    assert!(first_video - connected <= Duration::from_millis(100));
}

#[test]
fn two_players_joining_together_cause_one_request() {
    let (mut h, p) = running_publisher();
    let joined = h.now;
    let a = h.add(ClientSpec::subscriber("a", "room", Source::RoomCurrent));
    h.run_for(Duration::from_millis(2));
    let b = h.add(ClientSpec::subscriber("b", "room", Source::RoomCurrent));
    h.connect(&[a, b], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));

    let requests = requests_since(&h, p, joined);
    assert_eq!(requests.len(), 1, "coalesced into one: {requests:?}");
    assert_eq!(h.stats().keyframe_requests, 1);
    assert_starts_on_keyframe(&h, a);
    assert_starts_on_keyframe(&h, b);
}

#[test]
fn player_keyframe_requests_reach_the_publisher_coalesced() {
    let (mut h, p) = running_publisher();
    let a = h.add(ClientSpec::subscriber("a", "room", Source::RoomCurrent));
    let b = h.add(ClientSpec::subscriber("b", "room", Source::RoomCurrent));
    h.connect(&[a, b], Duration::from_secs(2));
    h.run_for(Duration::from_secs(2));
    assert_eq!(h.clients[p].keyframe_requests.len(), 1, "the join request");

    // Both players lose their decoder state at once, long after the join: one request.
    let t = h.now;
    h.request_keyframe(a, KeyframeRequestKind::Pli);
    h.run_for(Duration::from_millis(3));
    h.request_keyframe(b, KeyframeRequestKind::Pli);
    h.run_for(Duration::from_secs(2));
    let requests = requests_since(&h, p, t);
    assert_eq!(
        requests.len(),
        1,
        "two players' PLIs, one request: {requests:?}"
    );
    assert!(requests[0] - t <= Duration::from_millis(50));

    // A player asking again soon after the last request is not forgotten: its request
    // goes out once the interval has passed.
    let t = h.now;
    h.request_keyframe(a, KeyframeRequestKind::Pli);
    h.run_for(Duration::from_millis(100));
    h.request_keyframe(b, KeyframeRequestKind::Pli);
    h.run_for(Duration::from_millis(100));
    h.request_keyframe(a, KeyframeRequestKind::Pli);
    h.run_for(Duration::from_secs(2));
    let requests = requests_since(&h, p, t);
    assert_eq!(
        requests.len(),
        2,
        "one at once, one for the later ones after the interval: {:?}",
        requests.iter().map(|r| *r - t).collect::<Vec<_>>()
    );
    let gap = requests[1] - requests[0];
    assert!(
        gap >= INTERVAL && gap <= INTERVAL + Duration::from_millis(150),
        "the coalesced request waits for the interval, no longer ({gap:?})"
    );
    assert_eq!(h.stats().keyframe_requests, 4);
}

#[test]
fn late_joiner_behind_a_reordering_uplink_gets_the_whole_keyframe() {
    for seed in [4, 5, 6, 7] {
        let mut cfg = config();
        cfg.keyframe_request_interval = INTERVAL;
        let mut h = Harness::new(cfg, seed);
        let p = h.add(ClientSpec::publisher("alice", "room").keyframe_interval(None));
        h.connect(&[p], Duration::from_secs(2));
        // The packets of a frame leave together and arrive in any order.
        h.clients[p].uplink =
            Link::lossy(0.0, Duration::from_millis(10), Duration::from_millis(15));
        h.run_for(Duration::from_secs(2));
        let s = h.add(ClientSpec::subscriber("late", "room", Source::RoomCurrent));
        h.connect(&[s], Duration::from_secs(2));
        h.run_for(Duration::from_secs(2));

        let c = &h.clients[s];
        let check = check_stream(c, MediaKind::Video);
        assert_eq!(
            check.holes, 0,
            "seed {seed}: nothing missing, nothing lost on the way"
        );
        let mut video = c.received_of(MediaKind::Video);
        video.sort_by_key(|r| r.seq_no);
        assert!(video[0].is_keyframe_start(), "seed {seed}");
        let first_frame = video[0].record().unwrap().frame;
        let whole = video
            .iter()
            .filter(|r| r.record().unwrap().frame == first_frame)
            .count();
        let per_keyframe = h.clients[p].publisher().config.packets_per_keyframe;
        assert_eq!(
            whole, per_keyframe,
            "seed {seed}: the first keyframe is complete"
        );
        assert_eq!(
            h.clients[p].keyframe_requests.len(),
            1,
            "seed {seed}: no second request for a broken keyframe"
        );
    }
}
