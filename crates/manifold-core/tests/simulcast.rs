//! Simulcast on capped links, in virtual time: a room publisher sends three VP8 layers
//! (320x180, 640x360, 1280x720, with temporal layers); each subscriber's downlink is a
//! bottleneck of a given rate with a router's queue. The server's bandwidth estimate (TWCC)
//! and allocator choose each subscriber's layer; switches happen on keyframes with numbering
//! that never shows the decoder a gap.

mod common;

use std::time::Duration;

use common::{ClientSpec, Harness, Link, Received, check_stream, config};
use manifold_api::protocol::{Quality, QualityRequest, StreamState};
use manifold_api::{CoreEvent, ReplyValue, TrackId};
use manifold_core::str0m::media::MediaKind;

const HIGH: u16 = 2;
const LOW: u16 = 0;

/// A room with a three-layer publisher and one subscriber per downlink given.
fn room(seed: u64, downlinks: &[Link]) -> (Harness, usize, Vec<usize>, TrackId) {
    room_with(seed, downlinks, common::MediaConfig::default())
}

/// [`room`] with the publisher's media as given.
fn room_with(
    seed: u64,
    downlinks: &[Link],
    media: common::MediaConfig,
) -> (Harness, usize, Vec<usize>, TrackId) {
    let mut h = Harness::new(config(), seed);
    let publisher = h.add(ClientSpec::room("alice", "room").media(media));
    let subs: Vec<usize> = downlinks
        .iter()
        .enumerate()
        .map(|(i, link)| h.add(ClientSpec::room(&format!("viewer{i}"), "room").downlink(*link)))
        .collect();
    let all: Vec<usize> = std::iter::once(publisher)
        .chain(subs.iter().copied())
        .collect();
    h.connect(&all, Duration::from_secs(5));
    assert_eq!(
        h.publish(publisher, MediaKind::Audio, "mic"),
        Ok(ReplyValue::Done)
    );
    assert_eq!(
        h.publish_layers(publisher, MediaKind::Video, "cam", 3),
        Ok(ReplyValue::Done)
    );
    h.run_for(Duration::from_millis(200));
    let cam = h.track_of(publisher, "cam").expect("the camera track");
    assert_eq!(
        h.clients[publisher].publisher().layers.len(),
        3,
        "the publisher sends three layers"
    );
    (h, publisher, subs, cam)
}

/// The layers subscriber `idx` received video from between `from` and `to` (since the
/// harness epoch), and how many packets of each.
fn layers_between(h: &Harness, idx: usize, from: Duration, to: Duration) -> [usize; 3] {
    let mut n = [0; 3];
    for r in h.clients[idx].received_of(MediaKind::Video) {
        let at = r.at - h.epoch;
        if at >= from
            && at < to
            && let Some(l) = r.layer()
        {
            n[usize::from(l)] += 1;
        }
    }
    n
}

/// Where subscriber `idx`'s stream began carrying only layer `layer`: the first packet of the
/// last run of that layer in the stream's order (late retransmissions of packets from before
/// the switch do not count as a switch back): its sequence number and arrival time.
fn final_run(h: &Harness, idx: usize, layer: u16) -> Option<(u64, Duration)> {
    let mut video = h.clients[idx].received_of(MediaKind::Video);
    video.sort_by_key(|r| r.seq_no);
    let last_other = video.iter().rposition(|r| r.layer() != Some(layer));
    let first = match last_other {
        Some(i) => video.get(i + 1)?,
        None => video.first()?,
    };
    Some((first.seq_no, first.at - h.epoch))
}

/// When subscriber `idx` began receiving only layer `layer`, since the epoch.
fn switched_to(h: &Harness, idx: usize, layer: u16) -> Option<Duration> {
    final_run(h, idx, layer).map(|(_, at)| at)
}

/// What a decoder would complain about in subscriber `idx`'s video from sequence number
/// `from_seq` on: a change of layer that does not start with a keyframe, a sequence hole (a
/// packet lost for good), or a PictureID that does not follow on.
fn decoder_surprises(h: &Harness, idx: usize, from_seq: u64) -> Vec<String> {
    let mut video: Vec<&Received> = h.clients[idx]
        .received_of(MediaKind::Video)
        .into_iter()
        .filter(|r| r.seq_no >= from_seq)
        .collect();
    video.sort_by_key(|r| r.seq_no);
    video.dedup_by_key(|r| r.seq_no);
    let mut out = Vec::new();
    for w in video.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.seq_no != a.seq_no + 1 {
            out.push(format!("sequence hole {} -> {}", a.seq_no, b.seq_no));
        }
        if a.layer() != b.layer() && !b.is_keyframe_start() {
            out.push(format!(
                "layer {:?} -> {:?} at seq {} without a keyframe",
                a.layer(),
                b.layer(),
                b.seq_no
            ));
        }
        if let (Some((pa, _)), Some((pb, _))) = (a.vp8_numbers(), b.vp8_numbers())
            && pb != pa
            && pb != (pa + 1) & 0x7fff
        {
            out.push(format!("PictureID {pa} -> {pb} at seq {}", b.seq_no));
        }
    }
    out
}

fn stream_states(h: &Harness, idx: usize) -> Vec<(StreamState, Option<Quality>)> {
    let id = h.clients[idx].id;
    h.events_where(
        |e| matches!(e, CoreEvent::StreamState { participant, .. } if *participant == id),
    )
    .into_iter()
    .filter_map(|e| match e {
        CoreEvent::StreamState { state, quality, .. } => Some((*state, *quality)),
        _ => None,
    })
    .collect()
}

#[test]
fn subscribers_with_different_links_get_different_layers_of_one_publisher() {
    let (mut h, _, subs, _) = room(911, &[Link::capped(3_000_000), Link::capped(300_000)]);
    let (fast, slow) = (subs[0], subs[1]);
    h.run_for(Duration::from_secs(20));
    let end = h.elapsed();
    let window = (end - Duration::from_secs(5), end);
    let fast_layers = layers_between(&h, fast, window.0, window.1);
    let slow_layers = layers_between(&h, slow, window.0, window.1);
    assert!(
        fast_layers[usize::from(HIGH)] > 0 && fast_layers[0] + fast_layers[1] == 0,
        "3 Mbit/s: the high layer only, got {fast_layers:?}"
    );
    assert!(
        slow_layers[usize::from(LOW)] > 0 && slow_layers[1] + slow_layers[2] == 0,
        "300 kbit/s: the low layer only, got {slow_layers:?}"
    );
    for (idx, layer) in [(fast, HIGH), (slow, LOW)] {
        let (from, _) = final_run(&h, idx, layer).expect("a final layer");
        let surprises = decoder_surprises(&h, idx, from);
        assert!(surprises.is_empty(), "viewer {idx}: {surprises:?}");
        // Audio goes on for both.
        let audio = h.clients[idx]
            .received_of(MediaKind::Audio)
            .into_iter()
            .filter(|r| r.at - h.epoch >= window.0)
            .count();
        assert!(audio > 200, "viewer {idx}: {audio} audio packets in 5 s");
    }
    assert_eq!(
        stream_states(&h, fast).last(),
        Some(&(StreamState::Active, Some(Quality::High)))
    );
    assert_eq!(
        stream_states(&h, slow).last(),
        Some(&(StreamState::Active, Some(Quality::Low)))
    );
}

#[test]
fn a_link_that_drops_to_300_kbits_moves_down_within_2_s_and_back_up_within_15_s() {
    let (mut h, _, subs, _) = room(921, &[Link::capped(3_000_000)]);
    let v = subs[0];
    let settled = h.run_until(Duration::from_secs(20), |h| {
        switched_to(h, v, HIGH).is_some_and(|t| h.elapsed() - t > Duration::from_secs(2))
    });
    assert!(
        settled,
        "reaches the high layer at 3 Mbit/s: {:?}",
        layers_between(&h, v, Duration::ZERO, h.elapsed())
    );

    // The cap falls.
    let dropped_at = h.elapsed();
    h.clients[v].downlink = Link::capped(300_000);
    let down = h.run_until(Duration::from_secs(10), |h| {
        switched_to(h, v, LOW).is_some_and(|t| t > dropped_at)
            && h.elapsed() - switched_to(h, v, LOW).unwrap_or_default() > Duration::from_secs(1)
    });
    let down_at = switched_to(&h, v, LOW).expect("moved to the low layer");
    assert!(down, "stays on the low layer");
    let adapt_down = down_at - dropped_at;
    eprintln!("adapted down in {adapt_down:?}");
    assert!(
        adapt_down <= Duration::from_secs(2),
        "took {adapt_down:?} to move down"
    );
    h.run_for(Duration::from_secs(3));
    let (from, _) = final_run(&h, v, LOW).expect("the low layer");
    let surprises = decoder_surprises(&h, v, from);
    assert!(surprises.is_empty(), "after moving down: {surprises:?}");

    // The cap is lifted.
    let lifted_at = h.elapsed();
    h.clients[v].downlink = Link::capped(3_000_000);
    let up = h.run_until(Duration::from_secs(20), |h| {
        switched_to(h, v, HIGH).is_some_and(|t| t > lifted_at)
    });
    assert!(
        up,
        "back to the high layer: {:?}",
        layers_between(&h, v, lifted_at, h.elapsed())
    );
    let adapt_up = switched_to(&h, v, HIGH).unwrap_or_default() - lifted_at;
    eprintln!("adapted up in {adapt_up:?}");
    assert!(
        adapt_up <= Duration::from_secs(15),
        "took {adapt_up:?} to move up"
    );
    h.run_for(Duration::from_secs(2));
    let (from, _) = final_run(&h, v, HIGH).expect("the high layer");
    let surprises = decoder_surprises(&h, v, from);
    assert!(surprises.is_empty(), "after moving up: {surprises:?}");
    let check = check_stream(&h.clients[v], MediaKind::Video);
    assert_eq!(
        check.ssrcs.len(),
        1,
        "one stream for the subscriber throughout"
    );
}

#[test]
fn a_link_that_fits_no_layer_keeps_audio_and_pauses_video() {
    // 80 kbit/s carries audio (about 56 kbit/s) but not the low layer (about 110).
    let (mut h, _, subs, _) = room(931, &[Link::capped(80_000)]);
    let v = subs[0];
    let paused = h.run_until(Duration::from_secs(20), |h| {
        stream_states(h, v).last() == Some(&(StreamState::Paused, None))
    });
    assert!(paused, "video paused: {:?}", stream_states(&h, v));
    let at = h.elapsed();
    h.run_for(Duration::from_secs(5));
    let video_after = layers_between(&h, v, at + Duration::from_secs(1), h.elapsed());
    assert_eq!(video_after, [0, 0, 0], "no video while paused");
    let audio = h.clients[v]
        .received_of(MediaKind::Audio)
        .into_iter()
        .filter(|r| r.at - h.epoch >= at + Duration::from_secs(1))
        .count();
    assert!(audio > 150, "audio goes on: {audio} packets in 4 s");
}

#[test]
fn requested_quality_is_a_maximum_and_dynacast_pauses_unwanted_layers() {
    let (mut h, publisher, subs, cam) =
        room(941, &[Link::capped(5_000_000), Link::capped(5_000_000)]);
    for &s in &subs {
        assert_eq!(
            h.set_video_quality(s, cam, QualityRequest::Low, None),
            Ok(ReplyValue::Done)
        );
    }
    h.run_for(Duration::from_secs(8));
    let end = h.elapsed();
    for &s in &subs {
        let got = layers_between(&h, s, end - Duration::from_secs(3), end);
        assert!(got[0] > 0 && got[1] + got[2] == 0, "asked low, got {got:?}");
    }
    // Nobody takes the upper layers: the publisher is told to pause them.
    let alice = h.clients[publisher].id;
    let last_dynacast = |h: &Harness| {
        h.events_where(
            |e| matches!(e, CoreEvent::Dynacast { participant, .. } if *participant == alice),
        )
        .last()
        .and_then(|e| match e {
            CoreEvent::Dynacast { active, .. } => Some(active.clone()),
            _ => None,
        })
    };
    assert_eq!(last_dynacast(&h), Some(vec!["q".to_owned()]));
    let layers = &h.clients[publisher].publisher().layers;
    assert!(layers[1].paused && layers[2].paused && !layers[0].paused);

    // One asks for high again: resumed at once, and it climbs there.
    let asked = h.elapsed();
    assert_eq!(
        h.set_video_quality(subs[0], cam, QualityRequest::High, None),
        Ok(ReplyValue::Done)
    );
    // Its estimate grew only to what it received: it climbs a layer at a time, and each
    // layer it climbs to is resumed at once (within a housekeeping tick).
    h.run_for(Duration::from_millis(200));
    let resumed = last_dynacast(&h).unwrap_or_default();
    assert!(
        resumed.len() >= 2 && resumed[0] == "q",
        "a layer above q resumed at once: {resumed:?}"
    );
    let up = h.run_until(Duration::from_secs(10), |h| {
        switched_to(h, subs[0], HIGH).is_some_and(|t| t > asked)
    });
    assert!(up, "{:?}", layers_between(&h, subs[0], asked, h.elapsed()));
    eprintln!(
        "from low to high on request in {:?}",
        switched_to(&h, subs[0], HIGH).unwrap_or_default() - asked
    );
    let active = last_dynacast(&h).unwrap_or_default();
    assert!(active.contains(&"f".to_owned()), "f resumed: {active:?}");
    assert!(!h.clients[publisher].publisher().layers[2].paused);
    let other = layers_between(&h, subs[1], asked + Duration::from_secs(1), h.elapsed());
    assert!(
        other[1] + other[2] == 0,
        "the other still gets low only: {other:?}"
    );

    // `auto` with a small rendering picks the layer that covers it.
    assert_eq!(
        h.set_video_quality(subs[0], cam, QualityRequest::Auto, Some((600, 330))),
        Ok(ReplyValue::Done)
    );
    let t = h.elapsed();
    let mid = h.run_until(Duration::from_secs(5), |h| {
        switched_to(h, subs[0], 1).is_some_and(|at| at > t)
    });
    assert!(mid, "auto 600x330 picks 640x360");
}

#[test]
fn a_publisher_that_stops_a_layer_moves_its_receivers_to_one_that_exists() {
    let (mut h, publisher, subs, _) = room(951, &[Link::capped(5_000_000)]);
    let v = subs[0];
    assert!(h.run_until(Duration::from_secs(20), |h| {
        switched_to(h, v, HIGH).is_some()
    }));
    h.run_for(Duration::from_secs(1));
    let stopped = h.elapsed();
    h.pause_layer(publisher, "f", true);
    let moved = h.run_until(Duration::from_secs(5), |h| {
        switched_to(h, v, 1).is_some_and(|t| t > stopped)
    });
    assert!(moved, "{:?}", layers_between(&h, v, stopped, h.elapsed()));
    let at = switched_to(&h, v, 1).unwrap_or_default() - stopped;
    eprintln!("moved to the middle layer {at:?} after the top one stopped");
    h.run_for(Duration::from_secs(1));
    let (from, _) = final_run(&h, v, 1).expect("the middle layer");
    let surprises = decoder_surprises(&h, v, from);
    assert!(surprises.is_empty(), "{surprises:?}");
}

#[test]
fn a_whip_publisher_s_simulcast_reaches_whep_players_at_their_own_layer() {
    use manifold_api::Source;
    let mut h = Harness::new(config(), 96);
    let media = common::MediaConfig {
        simulcast: 3,
        keyframe_interval: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let publisher = h.add(ClientSpec::publisher("obs", "show").media(media));
    let fast = h.add(
        ClientSpec::subscriber("tv", "show", Source::RoomCurrent).downlink(Link::capped(4_000_000)),
    );
    let slow = h.add(
        ClientSpec::subscriber("phone", "show", Source::RoomCurrent)
            .downlink(Link::capped(300_000)),
    );
    h.connect(&[publisher, fast, slow], Duration::from_secs(5));
    assert_eq!(h.clients[publisher].publisher().layers.len(), 3);
    h.run_for(Duration::from_secs(20));
    let end = h.elapsed();
    let from = end - Duration::from_secs(4);
    let fast_layers = layers_between(&h, fast, from, end);
    let slow_layers = layers_between(&h, slow, from, end);
    assert!(
        fast_layers[2] > 0 && fast_layers[0] + fast_layers[1] == 0,
        "4 Mbit/s: {fast_layers:?}"
    );
    assert!(
        slow_layers[0] > 0 && slow_layers[1] + slow_layers[2] == 0,
        "300 kbit/s: {slow_layers:?}"
    );
    // A WHIP client cannot be told to pause layers: it is never asked to.
    assert!(
        h.events_where(|e| matches!(e, CoreEvent::Dynacast { .. }))
            .is_empty()
    );
}

#[test]
fn the_loudest_microphones_are_the_room_s_speakers() {
    let mut h = Harness::new(config(), 97);
    let loud = common::MediaConfig {
        audio_level: Some(-20),
        video: false,
        ..Default::default()
    };
    let quiet = common::MediaConfig {
        audio_level: Some(-127),
        video: false,
        ..Default::default()
    };
    let ada = h.add(ClientSpec::room("ada", "room").media(loud));
    let bob = h.add(ClientSpec::room("bob", "room").media(quiet));
    h.connect(&[ada, bob], Duration::from_secs(5));
    for i in [ada, bob] {
        assert_eq!(h.publish(i, MediaKind::Audio, "mic"), Ok(ReplyValue::Done));
    }
    let speakers = |h: &Harness| -> Vec<Vec<manifold_api::ParticipantId>> {
        h.events_where(|e| matches!(e, CoreEvent::SpeakersChanged { .. }))
            .into_iter()
            .filter_map(|e| match e {
                CoreEvent::SpeakersChanged { speakers, .. } => {
                    Some(speakers.iter().map(|s| s.participant).collect())
                }
                _ => None,
            })
            .collect()
    };
    h.run_for(Duration::from_secs(3));
    let ada_id = h.clients[ada].id;
    let bob_id = h.clients[bob].id;
    assert_eq!(
        speakers(&h).last(),
        Some(&vec![ada_id]),
        "ada speaks, bob does not"
    );
    // Bob starts talking louder; Ada falls silent: the list follows, with hysteresis.
    h.clients[bob].publisher_mut().config.audio_level = Some(-10);
    h.clients[ada].publisher_mut().config.audio_level = Some(-127);
    h.run_for(Duration::from_millis(300));
    assert_eq!(
        speakers(&h).last(),
        Some(&vec![bob_id, ada_id]),
        "ada still counts for a while"
    );
    h.run_for(Duration::from_secs(3));
    assert_eq!(speakers(&h).last(), Some(&vec![bob_id]));
    // Every change is one event, and they come at most three a second.
    let events: Vec<_> = h
        .events
        .iter()
        .filter(|(_, e)| matches!(e, CoreEvent::SpeakersChanged { .. }))
        .map(|(at, _)| *at)
        .collect();
    assert!(
        events
            .windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_millis(330))
    );
    assert!(events.len() <= 4, "{} events", events.len());
}

#[test]
fn an_encoder_restart_under_new_ssrcs_keeps_the_subscriber_on_its_layer() {
    let (mut h, publisher, subs, _) = room(98, &[Link::capped(5_000_000)]);
    let v = subs[0];
    assert!(h.run_until(Duration::from_secs(20), |h| {
        switched_to(h, v, HIGH).is_some_and(|t| h.elapsed() - t > Duration::from_secs(1))
    }));
    let before = h.clients[v].received_of(MediaKind::Video).len();
    let restarted = h.elapsed();
    h.restart_encoder(publisher, 1);
    h.run_for(Duration::from_secs(3));
    let after = layers_between(&h, v, restarted + Duration::from_secs(1), h.elapsed());
    assert!(
        after[2] > 0 && after[0] + after[1] == 0,
        "still the high layer: {after:?}"
    );
    assert!(h.clients[v].received_of(MediaKind::Video).len() > before + 100);
    // The new SSRCs took over (no stray drops), and the subscriber saw one stream.
    assert_eq!(h.stats().drops_for("unknown_ssrc"), 0, "{:?}", h.stats());
    let check = check_stream(&h.clients[v], MediaKind::Video);
    assert_eq!(check.ssrcs.len(), 1);
    let (from, _) = final_run(&h, v, HIGH).expect("the high layer");
    let surprises = decoder_surprises(&h, v, from);
    assert!(surprises.is_empty(), "{surprises:?}");
}

#[test]
fn a_layer_that_starts_late_is_not_paused_before_it_could_be_used() {
    let mut h = Harness::new(config(), 99);
    // As a browser whose own uplink estimate is still low: only the lowest layer at first.
    let late = common::MediaConfig {
        late_layers: true,
        ..Default::default()
    };
    let publisher = h.add(ClientSpec::room("alice", "room").media(late));
    let viewer = h.add(ClientSpec::room("bob", "room").downlink(Link::capped(5_000_000)));
    h.connect(&[publisher, viewer], Duration::from_secs(5));
    assert_eq!(
        h.publish_layers(publisher, MediaKind::Video, "cam", 3),
        Ok(ReplyValue::Done)
    );
    h.run_for(Duration::from_secs(6));
    let alice = h.clients[publisher].id;
    let paused_by_dynacast = h
        .events_where(|e| matches!(e, CoreEvent::Dynacast { participant, .. } if *participant == alice))
        .into_iter()
        .any(|e| matches!(e, CoreEvent::Dynacast { active, .. } if !active.contains(&"f".to_owned())));
    // The viewer was on the only layer there was; the silent ones were left alone.
    assert!(!paused_by_dynacast, "a layer that never sent was paused");
    // The upper layers start: the viewer climbs to the top.
    let started = h.elapsed();
    h.pause_layer(publisher, "h", false);
    h.pause_layer(publisher, "f", false);
    let up = h.run_until(Duration::from_secs(15), |h| {
        switched_to(h, viewer, HIGH).is_some_and(|t| t > started)
    });
    assert!(up, "{:?}", layers_between(&h, viewer, started, h.elapsed()));
}

#[test]
fn one_subscriber_s_dreadful_feedback_changes_nobody_else_s_layer() {
    // Bob's link loses half of everything: his receiver reports and transport feedback say
    // so (a forged or absurd report looks the same to the server). Only Bob's allocation
    // follows it.
    let (mut h, publisher, subs, _) = room(
        100,
        &[
            Link::capped(5_000_000),
            Link::lossy(0.5, Duration::from_millis(20), Duration::ZERO),
        ],
    );
    let (ada, bob) = (subs[0], subs[1]);
    assert!(h.run_until(Duration::from_secs(20), |h| {
        switched_to(h, ada, HIGH).is_some_and(|t| h.elapsed() - t > Duration::from_secs(2))
    }));
    let settled = h.elapsed();
    h.run_for(Duration::from_secs(10));
    let ada_layers = layers_between(&h, ada, settled, h.elapsed());
    assert!(
        ada_layers[2] > 0 && ada_layers[0] + ada_layers[1] == 0,
        "Ada stays on the high layer: {ada_layers:?}"
    );
    let (from, _) = final_run(&h, ada, HIGH).expect("the high layer");
    assert!(decoder_surprises(&h, ada, from).is_empty());
    let bob_layers = layers_between(&h, bob, settled, h.elapsed());
    assert!(
        bob_layers[2] == 0,
        "Bob's own allocation came down: {bob_layers:?}"
    );
    // The publisher keeps sending the layer Ada takes.
    assert!(!h.clients[publisher].publisher().layers[2].paused);
}

#[test]
fn h264_simulcast_is_selected_per_subscriber_too() {
    let h264 = common::MediaConfig {
        h264: true,
        ..Default::default()
    };
    let (mut h, _, subs, _) =
        room_with(101, &[Link::capped(3_000_000), Link::capped(300_000)], h264);
    h.run_for(Duration::from_secs(20));
    let end = h.elapsed();
    let from = end - Duration::from_secs(4);
    let fast = layers_between(&h, subs[0], from, end);
    let slow = layers_between(&h, subs[1], from, end);
    assert!(fast[2] > 0 && fast[0] + fast[1] == 0, "3 Mbit/s: {fast:?}");
    assert!(
        slow[0] > 0 && slow[1] + slow[2] == 0,
        "300 kbit/s: {slow:?}"
    );
    for (idx, layer) in [(subs[0], HIGH), (subs[1], LOW)] {
        let (from, _) = final_run(&h, idx, layer).expect("a final layer");
        let mut video: Vec<_> = h.clients[idx]
            .received_of(MediaKind::Video)
            .into_iter()
            .filter(|r| r.seq_no >= from)
            .map(|r| r.seq_no)
            .collect();
        video.sort();
        video.dedup();
        assert!(
            video.windows(2).all(|w| w[1] == w[0] + 1),
            "viewer {idx}: no holes after the switch"
        );
    }
}
