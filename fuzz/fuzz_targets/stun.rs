//! The STUN USERNAME reader that routes a binding request from a new address to its
//! session, checked against str0m's own STUN parser on the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifold_core::str0m::ice::StunMessage;

fuzz_target!(|data: &[u8]| {
    let ours = manifold_rtp::stun::ufrag_pair(data);
    if let Some((local, remote)) = ours {
        assert!(!local.is_empty() && !remote.is_empty());
        assert_eq!(manifold_rtp::local_ufrag(data), Some(local));
        // Where str0m reads the same message as a binding request, it finds the same
        // USERNAME: the session we route to is the one str0m will authenticate against.
        if let Ok(msg) = StunMessage::parse(data)
            && msg.is_binding_request()
            && let Some((l, r)) = msg.split_username()
        {
            assert_eq!((l, r), (local, remote), "our USERNAME differs from str0m's");
        }
    }
});
