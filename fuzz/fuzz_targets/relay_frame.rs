//! Relay frames from other nodes (`manifold_core::relay_wire`): decoded with its limits,
//! encoded again without loss, and handed to a shard as the bridge would, in a sequence
//! (a frame may be several, each prefixed by a one-byte length class) so that an open
//! followed by media and feedback for it is reached.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use manifold_core::relay_wire::{MAX_WIRE_BYTES, decode, encode};
use manifold_core::{BRIDGE, Input, Output, Shard, ShardConfig};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut shard = Shard::new(ShardConfig::default(), now, 0);
    let mut rest = data;
    let mut t = now;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (frame, next) = tail.split_at(n);
        rest = next;
        let Ok(message) = decode(frame, t) else {
            continue;
        };
        let mut again = Vec::new();
        encode(&message, &mut again);
        assert!(again.len() <= MAX_WIRE_BYTES + 64);
        assert!(decode(&again, t).is_ok(), "what we encode we decode");
        shard.handle_input(
            t,
            Input::Relay {
                from: BRIDGE,
                message,
            },
        );
        t += Duration::from_millis(20);
        shard.handle_input(t, Input::Timeout);
        while !matches!(shard.poll_output(), Output::Timeout(_)) {}
    }
});
