//! VP8 payload descriptors through one subscription's PictureID/TL0PICIDX rewriter, as the
//! forwarder will drive it: packets forwarded, pictures dropped, sources switched, in any
//! order and on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifold_rtp::{Vp8Descriptor, Vp8Rewriter};

fuzz_target!(|data: &[u8]| {
    let mut r = Vp8Rewriter::new();
    let mut rest = data;
    // Each step: an operation byte, a length byte, that many payload bytes.
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        let Some(d) = Vp8Descriptor::parse(payload) else {
            continue;
        };
        assert!(d.len <= payload.len());
        match op % 3 {
            0 => r.drop_picture(&d),
            1 => r.switch_source(),
            _ => {
                let fields = r.rewrite(&d);
                let mut copy = payload.to_vec();
                d.write(&mut copy, fields);
                let e = Vp8Descriptor::parse(&copy).expect("a rewritten descriptor parses");
                assert_eq!(e.len, d.len, "rewriting changed the descriptor's length");
                assert_eq!(&copy[d.len..], &payload[d.len..], "rewriting touched the frame");
                let width = if d.long_picture_id { 0x7fff } else { 0x7f };
                assert_eq!(e.picture_id, fields.picture_id.map(|p| p & width));
                assert_eq!(e.tl0picidx, fields.tl0picidx);
            }
        }
    }
});
