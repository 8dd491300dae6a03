//! Full queues and refusing sinks are counted, never waited on.

mod common;

use std::sync::atomic::Ordering;

use common::{eventually, loopback, sink, stats};
use manifold_api::{CoreEvent, RequestId};
use manifold_core::Command;
use manifold_io::{MediaConfig, MediaWorkers};

#[test]
fn every_refused_command_is_counted() {
    let (sink, rx) = sink();
    let config = MediaConfig {
        command_queue: 1,
        ..loopback(1)
    };
    let workers = MediaWorkers::start(config, sink).expect("workers start");
    let h = &workers.handles()[0];
    // Whether the worker keeps up is up to the scheduler; the books must balance either way.
    let mut refused = 0;
    for i in 0..1_000 {
        if let Err(e) = h.send(Command::Stats {
            request: RequestId(i),
        }) {
            assert_eq!(e.worker, 0);
            refused += 1;
        }
    }
    assert_eq!(workers.overload().commands_rejected, refused);
    assert_eq!(h.overload().commands_rejected, refused);
    // The worker is fine afterwards.
    common::eventually("the queue to empty", || {
        h.send(Command::Stats {
            request: RequestId(5_000),
        })
        .is_ok()
    });
    drop(rx);
    workers.shutdown();
}

#[test]
fn events_a_full_sink_cannot_take_are_delivered_later_in_order() {
    let (sink, rx) = sink();
    let workers = MediaWorkers::start(loopback(1), sink.clone()).expect("workers start");
    let h = &workers.handles()[0];
    stats(h, &rx, 1);
    sink.refuse.store(true, Ordering::Relaxed);
    for i in 0..300 {
        h.send(Command::Stats {
            request: RequestId(10 + i),
        })
        .unwrap();
    }
    eventually("300 events held back", || {
        workers.overload().events_deferred == 300 && workers.overload().events_backlog == 300
    });
    assert!(rx.try_recv().is_err(), "nothing got through a full sink");
    sink.refuse.store(false, Ordering::Relaxed);
    for i in 0..300 {
        let (_, event) = rx.recv_timeout(common::CAP).expect("a held-back event");
        match event {
            CoreEvent::Reply { request, .. } => assert_eq!(request, RequestId(10 + i)),
            other => panic!("unexpected {other:?}"),
        }
    }
    stats(h, &rx, 2_000);
    let o = workers.overload();
    assert_eq!((o.events_dropped, o.events_backlog), (0, 0), "{o:?}");
    workers.shutdown();
}

#[test]
fn dropping_the_workers_stops_them() {
    let (sink, rx) = sink();
    let workers = MediaWorkers::start(loopback(1), sink).expect("workers start");
    let h = workers.handles()[0].clone();
    stats(&h, &rx, 1);
    drop(workers);
    // The thread is gone and has dropped its receiver: commands are refused.
    assert!(
        h.send(Command::Stats {
            request: RequestId(2)
        })
        .is_err()
    );
}
