//! Access tokens, verified as every endpoint verifies them. Nothing the fuzzer makes up is
//! signed with the key, so every input must be refused, with a message in our own words.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use manifold_control::{ApiError, Auth};

fn auth() -> &'static Auth {
    static A: OnceLock<Auth> = OnceLock::new();
    A.get_or_init(|| Auth::new(Some("fuzz-key-fuzz-key-fuzz-key-fuzz-key!")).expect("a key"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    match auth().verify(Some(token)) {
        Err(ApiError::Unauthorized(m)) => {
            assert!(m.starts_with("the access token"), "{m}");
        }
        other => panic!("an unsigned token was not refused: {other:?}"),
    }
});
