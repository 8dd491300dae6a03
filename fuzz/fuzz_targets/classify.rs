//! RFC 7983 first-byte classification of a media-port datagram, and the header fields the
//! shard reads before any lookup (the SSRC of RTP, at bytes 8..12).
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifold_rtp::{PacketClass, classify};

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        PacketClass::Rtp => {
            // The shard reads the SSRC of anything classified RTP.
            assert!(data.len() >= 12, "RTP shorter than its fixed header");
            assert_eq!(data[0] >> 6, 2, "RTP of another version");
            assert!(
                !(192..=223).contains(&data[1]),
                "an RTCP type classified RTP"
            );
        }
        PacketClass::Rtcp => {
            assert!(data.len() >= 8);
            assert!((192..=223).contains(&data[1]));
        }
        PacketClass::Stun => {
            assert!(data.len() >= 20);
            // Routing reads the ufrag of what is classified STUN.
            let _ = manifold_rtp::local_ufrag(data);
        }
        PacketClass::Dtls => assert!((20..=63).contains(&data[0])),
        PacketClass::Unknown => {}
    }
});
