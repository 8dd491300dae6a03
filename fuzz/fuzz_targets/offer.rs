//! A whole WHIP/WHEP offer through negotiation: our pre-checks, then str0m's SDP parser and
//! offer/answer. A panic inside str0m is caught by `accept` and comes back as `Panicked`:
//! for the fuzzer that is a finding all the same.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use manifold_api::SessionKind;
use manifold_core::{NegotiateError, RtcFactory};

fn factory() -> &'static RtcFactory {
    static F: OnceLock<RtcFactory> = OnceLock::new();
    F.get_or_init(|| RtcFactory::new(64 * 1024, std::time::Instant::now()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(offer) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = if which & 1 == 0 {
        SessionKind::Whip
    } else {
        SessionKind::Whep
    };
    let candidates = ["127.0.0.1:40000".parse().expect("an address")];
    let result = factory().accept(kind, offer, &candidates, Instant::now());
    assert!(
        !matches!(result, Err(NegotiateError::Panicked)),
        "str0m panicked on this offer"
    );
});
