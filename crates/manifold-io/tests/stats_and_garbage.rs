//! Workers answer commands, survive a flood of garbage datagrams (counting it by drop
//! reason) and shut down.

mod common;

use std::net::UdpSocket;

use common::{loopback, sink, stats};
use manifold_io::MediaWorkers;

/// A seeded xorshift generator: the same garbage on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn workers_answer_survive_garbage_and_shut_down() {
    let (sink, rx) = sink();
    let workers = MediaWorkers::start(loopback(2), sink).expect("workers start");
    let handles = workers.handles();
    assert_eq!(handles.len(), 2);
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(usize::from(h.index()), i);
        assert!(h.local_addr().ip().is_loopback());
        assert_ne!(h.local_addr().port(), 0);
        assert_eq!(h.candidates(), &[h.local_addr()]);
    }
    assert_ne!(handles[0].local_addr(), handles[1].local_addr());

    let before: Vec<_> = handles.iter().map(|h| stats(h, &rx, 1)).collect();

    let blaster = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0u8; 2000];
    for i in 0..10_000 {
        let len = (rng.next() % 2000) as usize;
        for b in &mut buf[..len] {
            *b = rng.next() as u8;
        }
        let to = handles[i % 2].local_addr();
        // Loopback can refuse a burst (ENOBUFS); loss is part of the test anyway.
        let _ = blaster.send_to(&buf[..len], to);
    }

    for (h, before) in handles.iter().zip(&before) {
        let after = stats(h, &rx, 2);
        assert!(
            after.datagrams_in > before.datagrams_in,
            "worker {} received nothing: {after:?}",
            h.index()
        );
        assert!(after.bytes_in >= before.bytes_in);
        let dropped = after.drops_for("malformed") + after.drops_for("unknown_source");
        assert!(dropped > 0, "no garbage counted as dropped: {after:?}");
        assert_eq!(after.participants, 0);
        // Every receive batch was timed: at least one, and no more batches than datagrams.
        let batches = h.batch_latency();
        assert_eq!(batches.counts.len(), batches.bounds_us.len() + 1);
        assert!(
            batches.count() >= 1 && batches.count() <= after.datagrams_in,
            "{batches:?}"
        );
    }
    // Still alive after the flood.
    for h in handles {
        stats(h, &rx, 3);
    }
    assert_eq!(workers.overload().commands_rejected, 0);
    assert_eq!(workers.overload().events_dropped, 0);
    workers.shutdown();
}
