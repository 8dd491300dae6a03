//! Helpers shared by the real-socket tests: an event sink that records, and polling waits
//! with generous caps (no timing assertions).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use manifold_api::{CoreEvent, ReplyValue, RequestId, ShardStats};
use manifold_core::Command;
use manifold_io::{EventSink, MediaConfig, Undelivered, WorkerHandle};

/// Longest any wait in these tests lasts; only reached when something is broken.
pub const CAP: Duration = Duration::from_secs(10);

/// Records every event it is given; is full while `refuse` is set.
pub struct RecordingSink {
    tx: Sender<(u16, CoreEvent)>,
    pub refuse: AtomicBool,
}

impl EventSink for RecordingSink {
    fn deliver(&self, worker: u16, event: CoreEvent) -> Result<(), Undelivered> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(Undelivered::Full(event));
        }
        self.tx
            .send((worker, event))
            .map_err(|_| Undelivered::Closed)
    }
}

pub fn sink() -> (Arc<RecordingSink>, Receiver<(u16, CoreEvent)>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let sink = Arc::new(RecordingSink {
        tx,
        refuse: AtomicBool::new(false),
    });
    (sink, rx)
}

/// Two (or `workers`) workers on loopback, ephemeral ports.
pub fn loopback(workers: usize) -> MediaConfig {
    MediaConfig {
        workers,
        ..MediaConfig::default()
    }
}

/// Wait for the first event from `worker` matching `pick`, skipping others.
pub fn wait_for<T>(
    rx: &Receiver<(u16, CoreEvent)>,
    worker: u16,
    mut pick: impl FnMut(&CoreEvent) -> Option<T>,
) -> T {
    let deadline = Instant::now() + CAP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((w, event)) if w == worker => {
                if let Some(t) = pick(&event) {
                    return t;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("no matching event from worker {worker} within {CAP:?}: {e}"),
        }
    }
}

/// Ask a worker for its stats and wait for the answer.
pub fn stats(handle: &WorkerHandle, rx: &Receiver<(u16, CoreEvent)>, request: u64) -> ShardStats {
    handle
        .send(Command::Stats {
            request: RequestId(request),
        })
        .expect("the command queue has room");
    wait_for(rx, handle.index(), |e| match e {
        CoreEvent::Reply {
            request: r,
            result: Ok(ReplyValue::Stats(s)),
        } if *r == RequestId(request) => Some((**s).clone()),
        _ => None,
    })
}

/// Poll `cond` until it holds, panicking after [`CAP`].
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + CAP;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {CAP:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Join a WHIP session negotiated with `RtcFactory` to room "lobby" on `worker` as
/// participant `id` named `identity`, and wait for the worker's `Done`.
pub fn join_whip(
    worker: &WorkerHandle,
    rx: &Receiver<(u16, CoreEvent)>,
    id: manifold_api::ParticipantId,
    identity: &str,
    negotiated: manifold_core::Negotiated,
) {
    worker
        .send(Command::Join {
            request: RequestId(1),
            session: Box::new(manifold_core::NewSession {
                id,
                identity: manifold_api::Identity::parse(identity).unwrap(),
                room: manifold_api::RoomName::parse("lobby").unwrap(),
                kind: manifold_api::SessionKind::Whip,
                source: None,
                auto_subscribe: false,
                grants: manifold_api::Grants::ALL,
                negotiated: negotiated.into(),
            }),
        })
        .unwrap();
    let joined = wait_for(rx, worker.index(), |e| match e {
        CoreEvent::Reply {
            request: RequestId(1),
            result,
        } => Some(result.clone()),
        _ => None,
    });
    assert_eq!(joined, Ok(ReplyValue::Done));
}
