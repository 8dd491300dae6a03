//! Audio RED (RFC 2198): a publisher that sends Opus wrapped in RED reaches a subscriber that
//! negotiated RED as RED, and one that did not as plain Opus (the primary block), both with
//! continuous numbering.

mod common;

use std::time::Duration;

use common::{ClientSpec, Harness, MediaConfig, check_stream, config};
use manifold_api::Source;
use manifold_core::str0m::media::MediaKind;
use manifold_core::str0m::rtp::RedDecoder;

fn with_red(c: manifold_core::str0m::RtcConfig) -> manifold_core::str0m::RtcConfig {
    c.clear_codecs().enable_opus(true, true).enable_vp8(true)
}

#[test]
fn red_goes_to_those_who_take_it_and_plain_opus_to_the_others() {
    let mut h = Harness::new(config(), 121);
    let media = MediaConfig {
        red: true,
        video: false,
        ..Default::default()
    };
    let publisher = h.add(
        ClientSpec::publisher("radio", "room")
            .media(media)
            .configure(with_red),
    );
    let red_player =
        h.add(ClientSpec::subscriber("new", "room", Source::RoomCurrent).configure(with_red));
    let plain_player = h.add(ClientSpec::subscriber("old", "room", Source::RoomCurrent));
    h.connect(
        &[publisher, red_player, plain_player],
        Duration::from_secs(5),
    );
    h.run_for(Duration::from_secs(3));

    let sent = h.clients[publisher]
        .publisher()
        .sent_of(MediaKind::Audio)
        .count();
    assert!(sent > 100, "{sent} audio packets sent");
    // str0m keeps a codec's RED PT only when both sides negotiated it.
    let red_pt = |idx: usize| {
        let c = &h.clients[idx];
        let mid = c.mid_of(MediaKind::Audio).expect("an audio m-line");
        let remote = c.rtc.media(mid).expect("media").remote_pts().to_vec();
        c.rtc
            .codec_config()
            .params()
            .iter()
            .filter(|p| remote.contains(&p.pt()))
            .find_map(|p| p.red())
    };
    assert!(red_pt(publisher).is_some(), "the publisher negotiated RED");
    assert!(red_pt(plain_player).is_none(), "the plain player did not");

    let red_rx = h.clients[red_player].received_of(MediaKind::Audio);
    assert!(red_rx.len() * 10 >= sent * 9, "{} of {sent}", red_rx.len());
    let expected = red_pt(red_player).expect("RED negotiated with the RED player");
    for r in &red_rx {
        assert_eq!(r.pt, expected, "RED is forwarded as RED");
        let blocks = RedDecoder::decode(&r.payload).expect("a RED payload");
        let primary = blocks
            .iter()
            .find(|b| b.is_primary)
            .expect("a primary block");
        assert!(common::Record::parse(primary.payload).is_some());
    }

    let plain_rx = h.clients[plain_player].received_of(MediaKind::Audio);
    assert!(
        plain_rx.len() * 10 >= sent * 9,
        "{} of {sent}",
        plain_rx.len()
    );
    let mut counters: Vec<u64> = plain_rx
        .iter()
        .map(|r| {
            r.record()
                .expect("plain Opus: the record is right there")
                .counter
        })
        .collect();
    counters.dedup();
    assert!(
        counters.windows(2).all(|w| w[1] == w[0] + 1),
        "every packet once, in order"
    );
    for idx in [red_player, plain_player] {
        let check = check_stream(&h.clients[idx], MediaKind::Audio);
        assert_eq!(check.holes, 0);
        assert_eq!(check.ssrcs.len(), 1);
    }
}
