//! The RFC 4571 deframer of ICE-TCP connections: arbitrary bytes under an arbitrary cap
//! never panic, every frame read lies inside the input and under the cap, and reading a
//! stream frame by frame re-frames to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifold_rtp::framing::{HEADER_BYTES, header, next_frame};

fuzz_target!(|input: (u16, &[u8])| {
    let (max, data) = input;
    let max = usize::from(max);
    let mut rest = data;
    let mut reframed = Vec::new();
    while let Ok(Some((datagram, used))) = next_frame(rest, max) {
        assert_eq!(used, datagram.len() + HEADER_BYTES);
        assert!(!datagram.is_empty() && datagram.len() <= max && used <= rest.len());
        reframed.extend_from_slice(&header(datagram, max).expect("a frame read can be written"));
        reframed.extend_from_slice(datagram);
        rest = &rest[used..];
    }
    assert_eq!(&data[..data.len() - rest.len()], &reframed[..]);
});
