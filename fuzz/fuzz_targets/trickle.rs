//! WHIP/WHEP PATCH bodies (`application/trickle-ice-sdpfrag`, RFC 8840).
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifold_core::SdpFragment;
use manifold_core::negotiate::MAX_FRAGMENT_CANDIDATES;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = SdpFragment::parse(text, 64 * 1024) {
        assert!(f.candidates.len() <= MAX_FRAGMENT_CANDIDATES);
        assert_eq!(f.ufrag.is_some(), f.pwd.is_some());
        for c in &f.candidates {
            // Each goes to str0m's candidate parser next, as the shard does.
            assert!(c.starts_with("candidate:"));
            let _ = manifold_core::str0m::Candidate::from_sdp_string(c);
        }
    }
});
