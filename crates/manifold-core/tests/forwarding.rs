//! One publisher, three WHEP players following the room: every player receives one continuous
//! stream per kind, as the publisher sent it.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{ClientSpec, Harness, check_stream, config};
use manifold_api::{LeaveReason, ReplyValue, RequestId, Source};
use manifold_core::Command;
use manifold_core::str0m::media::MediaKind;

#[test]
fn one_publisher_three_subscribers() {
    let mut h = Harness::new(config(), 1);
    let publisher = h.add(ClientSpec::publisher("alice", "room"));
    let subs: Vec<usize> = (0..3)
        .map(|i| {
            h.add(ClientSpec::subscriber(
                &format!("viewer{i}"),
                "room",
                Source::RoomCurrent,
            ))
        })
        .collect();
    let all: Vec<usize> = std::iter::once(publisher)
        .chain(subs.iter().copied())
        .collect();
    h.connect(&all, Duration::from_secs(5));
    h.run_for(Duration::from_secs(10));

    let stats = h.stats();
    assert_eq!(stats.rooms, 1);
    assert_eq!(stats.participants, 4);
    assert_eq!(stats.tracks, 2);
    assert_eq!(stats.subscriptions, 6, "3 players x (audio + video)");
    assert!(stats.rtp_in > 0 && stats.rtp_out > 0, "{stats:?}");

    // The room's traffic is its members' datagrams: all of the shard's here (one room,
    // nobody left), less what failed the `Rtc`'s checks.
    h.command(Command::Traffic {
        request: RequestId(900),
    });
    let Some(Ok(ReplyValue::Traffic(rooms))) = h.reply(RequestId(900)) else {
        panic!("no traffic reply");
    };
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].room, "room");
    assert_eq!(rooms[0].bytes_out, stats.bytes_out, "{rooms:?} {stats:?}");
    assert!(
        rooms[0].bytes_in <= stats.bytes_in && rooms[0].bytes_in >= stats.bytes_in * 99 / 100,
        "{rooms:?} {stats:?}"
    );

    let p = h.clients[publisher].publisher();
    let sent_audio = p.sent_of(MediaKind::Audio).count();
    let sent_video = p.sent_of(MediaKind::Video).count();
    assert!(
        sent_audio >= 490 && sent_video >= 900,
        "{sent_audio} {sent_video}"
    );
    // Everything the publisher sent reached the shard, and went out once per subscriber
    // (minus what arrived before a subscriber was ready).
    assert!(stats.rtp_in >= (sent_audio + sent_video) as u64 * 99 / 100);
    assert!(stats.rtp_out >= stats.rtp_in * 3 * 9 / 10, "{stats:?}");

    for &s in &subs {
        let c = &h.clients[s];
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let rx = c.received_of(kind);
            assert!(!rx.is_empty(), "{} got no {kind:?}", c.identity);
            let check = check_stream(c, kind);
            assert_eq!(check.ssrcs.len(), 1, "{} {kind:?}: one SSRC", c.identity);
            assert_eq!(
                check.holes, 0,
                "{} {kind:?}: continuous sequence numbers on a lossless network",
                c.identity
            );
            assert_eq!(check.ts_backwards, 0, "{} {kind:?}", c.identity);
            assert_eq!(
                rx.len(),
                check.seqs.len(),
                "{} {kind:?}: no duplicates",
                c.identity
            );
        }

        // Video starts on a keyframe.
        let video = c.received_of(MediaKind::Video);
        assert!(
            video[0].is_keyframe_start(),
            "{}: first video packet starts a keyframe",
            c.identity
        );

        // Everything sent after the subscriber's first keyframe arrived, in order, with the
        // original spacing of sequence numbers and timestamps.
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let rx = c.received_of(kind);
            let first = rx[0].record().expect("a synthetic payload").counter;
            let expected: Vec<_> = p.sent_of(kind).filter(|s| s.counter >= first).collect();
            let got: HashMap<u64, (u64, u32)> = rx
                .iter()
                .map(|r| (r.record().unwrap().counter, (r.seq_no, r.ts)))
                .collect();
            let delivered = expected
                .iter()
                .filter(|s| got.contains_key(&s.counter))
                .count();
            // The last few may still be in flight when the run stops.
            assert!(
                delivered * 100 >= expected.len() * 95,
                "{} {kind:?}: {delivered} of {} delivered",
                c.identity,
                expected.len()
            );
            let base = got[&first];
            let sent_base = expected[0];
            for s in &expected {
                if let Some(&(seq, ts)) = got.get(&s.counter) {
                    assert_eq!(
                        seq - base.0,
                        s.seq_no - sent_base.seq_no,
                        "{} {kind:?}: sequence spacing kept",
                        c.identity
                    );
                    assert_eq!(
                        ts.wrapping_sub(base.1),
                        s.ts.wrapping_sub(sent_base.ts),
                        "{} {kind:?}: timestamp spacing kept",
                        c.identity
                    );
                }
            }
        }
    }
    assert_eq!(h.stats().panics, 0);
}

/// Over `span`: packets of `kind` `viewer` received, and the datagrams and media packets
/// the server sent (both sessions'), for tests of what goes out besides the media.
fn sent_over(h: &mut Harness, viewer: usize, kind: MediaKind, span: Duration) -> (usize, u64, u64) {
    let from = h.stats();
    let received_from = h.clients[viewer].received_of(kind).len();
    h.run_for(span);
    let to = h.stats();
    let received = h.clients[viewer].received_of(kind).len() - received_from;
    (
        received,
        to.datagrams_out - from.datagrams_out,
        to.rtp_out - from.rtp_out,
    )
}

/// A player that offers no video is sent its audio and RTCP, and no padding: str0m pads
/// on video streams with RTX only, so an audio-only session has nothing to pad on.
#[test]
fn an_audio_only_player_gets_audio_and_no_padding() {
    let mut h = Harness::new(config(), 74);
    let publisher = h.add(ClientSpec::publisher("alice", "room"));
    let mut spec = ClientSpec::subscriber("bob", "room", Source::RoomCurrent);
    spec.video = false;
    let viewer = h.add(spec);
    h.connect(&[publisher, viewer], Duration::from_secs(5));
    h.run_for(Duration::from_secs(3));
    let (audio, datagrams, media) =
        sent_over(&mut h, viewer, MediaKind::Audio, Duration::from_secs(4));
    assert!(audio > 150, "audio flows: {audio} packets");
    // What goes out: the audio, and RTCP to both sessions (a few packets a second each).
    assert!(
        datagrams < media + 100,
        "{datagrams} datagrams sent for {media} media packets"
    );
}

/// A player that offered video, as browsers and the loadgen's listeners in bench scenario
/// (c) do, following a publisher that sends audio only: no padding on its idle video
/// m-line (str0m pads every session with a sending m-line to 50 kbit/s; this one is held
/// not sending, `participant::quiet_direction`). When the publisher leaves and one with
/// video arrives, the same m-line carries video again.
#[test]
fn a_player_whose_video_line_carries_nothing_gets_no_padding() {
    let mut h = Harness::new(config(), 75);
    let mut spec = ClientSpec::publisher("alice", "room");
    spec.video = false;
    let publisher = h.add(spec);
    let viewer = h.add(ClientSpec::subscriber("bob", "room", Source::RoomCurrent));
    h.connect(&[publisher, viewer], Duration::from_secs(5));
    h.run_for(Duration::from_secs(3));
    let (audio, datagrams, media) =
        sent_over(&mut h, viewer, MediaKind::Audio, Duration::from_secs(4));
    assert!(audio > 150, "audio flows: {audio} packets");
    assert!(
        datagrams < media + 100,
        "{datagrams} datagrams sent for {media} media packets"
    );

    // A publisher with video takes the room: the quiet m-line carries its video.
    h.leave(publisher, LeaveReason::Requested);
    h.stop(publisher);
    let second = h.add(ClientSpec::publisher("carol", "room"));
    h.connect(&[second], Duration::from_secs(5));
    h.run_for(Duration::from_secs(3));
    let video_from = h.clients[viewer].received_of(MediaKind::Video).len();
    h.run_for(Duration::from_secs(2));
    let video = h.clients[viewer].received_of(MediaKind::Video).len() - video_from;
    assert!(
        video > 100,
        "video flows on the m-line once quiet: {video} packets"
    );
}

/// A player given everything it asked for (one video layer, and audio) is sent that media
/// and its RTCP, and no padding: with nothing to climb to, the estimator is given no minimum
/// to sustain. It used to be given the media's measured cost, which sits above what is sent,
/// and str0m padded up to it all the time (bench scenario (b): 47 % more RTP datagrams than
/// media).
#[test]
fn a_player_given_everything_it_asked_for_is_not_padded() {
    let mut h = Harness::new(config(), 78);
    let publisher = h.add(ClientSpec::publisher("alice", "room"));
    let viewer = h.add(ClientSpec::subscriber("bob", "room", Source::RoomCurrent));
    h.connect(&[publisher, viewer], Duration::from_secs(5));
    h.run_for(Duration::from_secs(5));
    let (video, datagrams, media) =
        sent_over(&mut h, viewer, MediaKind::Video, Duration::from_secs(10));
    assert!(video > 600, "video flows: {video} packets");
    // What goes out besides the media: RTCP to both sessions, transport-cc feedback to the
    // publisher included (about 23 datagrams a second in all).
    assert!(
        datagrams < media + 280,
        "{datagrams} datagrams sent for {media} media packets"
    );
}

/// A player that offers audio only gets no transport-cc (nothing is allocated to it, and
/// str0m would keep a send history of 1,000 records for it): its answer omits the
/// extension, and it receives the audio and nothing else. A player offering video gets it.
#[test]
fn an_audio_only_player_is_answered_without_transport_cc() {
    let mut h = Harness::new(config(), 77);
    let mut spec = ClientSpec::publisher("alice", "room");
    spec.video = false;
    let publisher = h.add(spec);
    let mut spec = ClientSpec::subscriber("bob", "room", Source::RoomCurrent);
    spec.video = false;
    let listener = h.add(spec);
    let viewer = h.add(ClientSpec::subscriber("carol", "room", Source::RoomCurrent));
    assert!(!h.clients[listener].answer.contains("transport-wide-cc"));
    assert!(h.clients[viewer].answer.contains("transport-wide-cc"));
    h.connect(&[publisher, listener, viewer], Duration::from_secs(5));
    h.run_for(Duration::from_secs(3));
    let audio_from = h.clients[listener].received_of(MediaKind::Audio).len();
    h.run_for(Duration::from_secs(4));
    let audio = h.clients[listener].received_of(MediaKind::Audio).len() - audio_from;
    assert!(audio > 150, "audio flows: {audio} packets");
}

/// str0m's pacer releases one packet per timeout and asks for the next a microsecond later.
/// The shard gives those follow-ups at once, so a frame's packets reach a subscriber
/// together, not one per timeout pass (each a receive batch apart in the worker).
#[test]
fn a_frame_leaves_for_each_subscriber_in_one_pass() {
    let mut h = Harness::new(config(), 76);
    let mut spec = ClientSpec::publisher("alice", "room");
    spec.media.packets_per_frame = 5;
    let publisher = h.add(spec);
    let viewers: Vec<usize> = (0..3)
        .map(|i| {
            h.add(ClientSpec::subscriber(
                &format!("viewer{i}"),
                "room",
                Source::RoomCurrent,
            ))
        })
        .collect();
    let mut all = vec![publisher];
    all.extend(&viewers);
    h.connect(&all, Duration::from_secs(5));
    h.run_for(Duration::from_secs(3));
    for &v in &viewers {
        let video = h.clients[v].received_of(MediaKind::Video);
        let mut frames: HashMap<u32, Vec<std::time::Instant>> = HashMap::new();
        for r in video.iter().rev().take(100) {
            frames.entry(r.ts).or_default().push(r.at);
        }
        let whole: Vec<&Vec<std::time::Instant>> =
            frames.values().filter(|at| at.len() == 5).collect();
        assert!(whole.len() > 10, "{} whole frames", whole.len());
        for at in whole {
            let first = *at.iter().min().expect("five");
            assert!(
                at.iter().all(|t| *t == first),
                "a frame's packets arrived at different times: {:?}",
                at.iter().map(|t| *t - first).collect::<Vec<_>>()
            );
        }
    }
}
