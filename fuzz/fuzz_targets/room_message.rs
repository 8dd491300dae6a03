//! Room-protocol messages from clients (`/rtc`, JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifold_api::protocol::ClientMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientMessage::parse(text, 64 * 1024) {
        Ok(msg) => {
            let _ = msg.id();
        }
        Err((_, e)) => {
            // Every refusal has a code and a message for the client.
            assert!(!e.code().is_empty());
            let _ = e.to_string();
        }
    }
});
