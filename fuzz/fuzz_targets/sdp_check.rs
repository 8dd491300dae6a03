//! The SDP pre-check run on every offer and every room client's answer before str0m sees
//! it (payload types: range, one codec per payload type across the session; simulcast: RIDs
//! and a=simulcast agree per m-line).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = manifold_core::negotiate::check_sdp(text);
    }
});
