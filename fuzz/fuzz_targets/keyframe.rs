//! Keyframe detection from RTP payload descriptors, for every codec the forwarder knows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifold_rtp::{VideoCodec, is_keyframe};

fuzz_target!(|data: &[u8]| {
    for codec in [
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::H264,
        VideoCodec::H265,
        VideoCodec::Av1,
    ] {
        let k = is_keyframe(codec, data);
        // A packet with no payload is never a keyframe.
        assert!(
            !(k && data.is_empty()),
            "{codec:?}: empty payload taken for a keyframe"
        );
    }
});
