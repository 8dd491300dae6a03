//! The control plane's end of one worker: its addresses, its command channel and the
//! overload counters it shares with the worker thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Sender, TrySendError};
use manifold_core::Command;

use crate::tcp::{IceTcpCounters, SharedTcpCounters};

/// A command was refused because the worker's command queue is full (or the worker has
/// stopped). The command was not delivered; the caller decides whether to retry, answer
/// 503, or give up.
#[derive(Debug, thiserror::Error)]
#[error("media worker {worker} is overloaded: its command queue is full")]
pub struct Overloaded {
    /// The worker that refused.
    pub worker: u16,
}

/// Work the media workers refused or lost because something was full. Every count is an
/// explicit overload, never a stall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverloadCounters {
    /// Commands refused by [`WorkerHandle::send`] because a command queue was full.
    pub commands_rejected: u64,
    /// Events lost: the [`EventSink`](crate::EventSink) was gone, or a worker's backlog
    /// was at [`MAX_EVENT_BACKLOG`](crate::MAX_EVENT_BACKLOG).
    pub events_dropped: u64,
    /// Events the sink could not take at once, held back and delivered later in order.
    pub events_deferred: u64,
    /// Events held back right now.
    pub events_backlog: u64,
    /// Datagrams that could not be sent: the socket's send buffer was full, or the
    /// operating system reported an error. UDP loss is normal; media carries on.
    pub send_errors: u64,
    /// Relay messages (relayed media and its feedback) lost because another worker's relay
    /// inbox was full.
    pub relay_dropped: u64,
}

impl OverloadCounters {
    /// Add another set of counters into this one.
    pub fn merge(&mut self, other: &OverloadCounters) {
        self.commands_rejected += other.commands_rejected;
        self.events_dropped += other.events_dropped;
        self.events_deferred += other.events_deferred;
        self.events_backlog += other.events_backlog;
        self.send_errors += other.send_errors;
        self.relay_dropped += other.relay_dropped;
    }
}

/// The live counters of one worker, bumped by its thread (events, sends) and by whoever
/// holds a handle (commands).
#[derive(Debug, Default)]
pub(crate) struct SharedCounters {
    commands_rejected: AtomicU64,
    events_dropped: AtomicU64,
    events_deferred: AtomicU64,
    events_backlog: AtomicU64,
    send_errors: AtomicU64,
    relay_dropped: AtomicU64,
    busy_ns: AtomicU64,
    /// Receive batch → its sends done, bucketed over `LATENCY_BOUNDS_US` (one more bucket
    /// for longer), and the sum in microseconds. Written by the worker's thread only.
    batch_latency: [AtomicU64; BATCH_BUCKETS],
    batch_latency_sum_us: AtomicU64,
}

/// Buckets of the batch-latency histogram: one per bound and one over the last.
const BATCH_BUCKETS: usize = manifold_api::LATENCY_BOUNDS_US.len() + 1;

impl SharedCounters {
    pub fn command_rejected(&self) {
        self.commands_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn event_dropped(&self) {
        self.events_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn event_deferred(&self) {
        self.events_deferred.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_backlog(&self, events: usize) {
        self.events_backlog.store(events as u64, Ordering::Relaxed);
    }

    pub fn send_errors(&self, datagrams: u64) {
        self.send_errors.fetch_add(datagrams, Ordering::Relaxed);
    }

    pub fn busy(&self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// A receive batch took `d` from its arrival until what it produced was sent.
    pub fn batch_done(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = manifold_api::LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        if let Some(c) = self.batch_latency.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.batch_latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn batch_latency(&self) -> manifold_api::HistogramSnapshot {
        manifold_api::HistogramSnapshot {
            bounds_us: manifold_api::LATENCY_BOUNDS_US.to_vec(),
            counts: self
                .batch_latency
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.batch_latency_sum_us.load(Ordering::Relaxed),
        }
    }

    pub fn relay_dropped(&self) {
        self.relay_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> OverloadCounters {
        OverloadCounters {
            commands_rejected: self.commands_rejected.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            events_deferred: self.events_deferred.load(Ordering::Relaxed),
            events_backlog: self.events_backlog.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            relay_dropped: self.relay_dropped.load(Ordering::Relaxed),
        }
    }
}

/// First byte of a bridge-inbox entry that is not a frame from the bus but the word that a
/// node left a room (the room name follows).
pub(crate) const NODE_GONE: u8 = 0;

/// The control plane's handle to one media worker. Cheap to clone; every clone talks to
/// the same worker.
#[derive(Clone)]
pub struct WorkerHandle {
    index: u16,
    local_addr: SocketAddr,
    candidates: Arc<[SocketAddr]>,
    /// `candidates` as SDP candidate values, made once.
    candidate_lines: Arc<[String]>,
    commands: Sender<Command>,
    waker: Arc<mio::Waker>,
    counters: Arc<SharedCounters>,
    bridge: Sender<(Arc<str>, Vec<u8>)>,
    /// ICE-TCP's counters (none: ICE-TCP is off).
    tcp: Option<Arc<SharedTcpCounters>>,
}

impl WorkerHandle {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: u16,
        local_addr: SocketAddr,
        candidates: Arc<[SocketAddr]>,
        commands: Sender<Command>,
        waker: Arc<mio::Waker>,
        counters: Arc<SharedCounters>,
        bridge: Sender<(Arc<str>, Vec<u8>)>,
        tcp: Option<Arc<SharedTcpCounters>>,
    ) -> Self {
        let lines = manifold_core::negotiate::host_candidate_lines(&candidates, tcp.is_some());
        WorkerHandle {
            index,
            local_addr,
            candidate_lines: lines.into(),
            candidates,
            commands,
            waker,
            counters,
            bridge,
            tcp,
        }
    }

    /// Hand the worker a relay frame from node `node` (encoded by
    /// `manifold_core::relay_wire`; the worker decodes and checks it). Never blocks: a full
    /// inbox drops it, counted in [`OverloadCounters::relay_dropped`]; returns whether it
    /// was queued.
    pub fn bridge_in(&self, node: Arc<str>, frame: Vec<u8>) -> bool {
        if frame.first() == Some(&NODE_GONE) {
            // That byte starts no relay frame: it is ours alone.
            return false;
        }
        self.bridge_send(node, frame)
    }

    /// Node `node` no longer holds `room` (it stopped saying so, or died): the worker ends
    /// every track it relayed here for the room, as if it had closed them.
    pub fn bridge_node_gone(&self, node: Arc<str>, room: &manifold_api::RoomName) -> bool {
        let mut frame = vec![NODE_GONE];
        frame.extend_from_slice(room.as_str().as_bytes());
        self.bridge_send(node, frame)
    }

    fn bridge_send(&self, node: Arc<str>, frame: Vec<u8>) -> bool {
        match self.bridge.try_send((node, frame)) {
            Ok(()) => {
                let _ = self.waker.wake();
                true
            }
            Err(_) => {
                self.counters.relay_dropped();
                false
            }
        }
    }

    /// Queue a command for the worker and wake it. Never blocks: when the queue is full the
    /// command is dropped, the refusal counted in [`OverloadCounters::commands_rejected`]
    /// and `Err(Overloaded)` returned. A worker that has stopped refuses the same way.
    ///
    /// `Command::Shutdown` sent here ends the worker once its participants are gone, as
    /// [`MediaWorkers::shutdown`](crate::MediaWorkers::shutdown) does for all of them.
    pub fn send(&self, command: Command) -> Result<(), Overloaded> {
        match self.commands.try_send(command) {
            Ok(()) => {
                if let Err(e) = self.waker.wake() {
                    // The command is queued; the worker still finds it within its longest
                    // poll timeout.
                    tracing::warn!(worker = self.index, error = %e, "cannot wake media worker");
                }
                Ok(())
            }
            Err(e) => {
                self.counters.command_rejected();
                if matches!(e, TrySendError::Disconnected(_)) {
                    tracing::debug!(worker = self.index, "command for a stopped media worker");
                }
                Err(Overloaded { worker: self.index })
            }
        }
    }

    /// Nanoseconds the worker has spent working (not waiting for input) since it started:
    /// its load is the growth of this over a wall-clock interval.
    pub fn busy_ns(&self) -> u64 {
        self.counters.busy_ns.load(Ordering::Relaxed)
    }

    /// How long receive batches took from their arrival until the datagrams they produced
    /// (forwarded media, feedback) were handed to the socket: the forwarding latency
    /// through the worker, for media the pacer does not hold back.
    pub fn batch_latency(&self) -> manifold_api::HistogramSnapshot {
        self.counters.batch_latency()
    }

    /// Commands queued for the worker and not yet taken (the command-queue depth).
    pub fn command_queue_depth(&self) -> usize {
        self.commands.len()
    }

    /// The worker's index, `0..workers`.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The address the worker's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The addresses clients are told to send to: each announced IP with this worker's
    /// port. The first one is the address the worker's shard knows itself by.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// The same as SDP `a=candidate` values (without `a=`), for fragments the control plane
    /// writes itself; with ICE-TCP, the passive TCP candidates at the same addresses too.
    pub fn candidate_lines(&self) -> &[String] {
        &self.candidate_lines
    }

    /// This worker's overload counters.
    pub fn overload(&self) -> OverloadCounters {
        self.counters.snapshot()
    }

    /// Whether this worker accepts ICE over TCP (on TCP at its UDP port's number).
    pub fn ice_tcp(&self) -> bool {
        self.tcp.is_some()
    }

    /// This worker's ICE-TCP counters (all zero when ICE-TCP is off); updated by the
    /// worker once per turn in which they changed.
    pub fn ice_tcp_counters(&self) -> IceTcpCounters {
        self.tcp.as_ref().map(|t| t.snapshot()).unwrap_or_default()
    }

    /// Queue a command even when the queue is full, waiting up to `timeout` for room:
    /// shutdown must reach the worker, and is not on any media path.
    pub(crate) fn send_blocking(
        &self,
        command: Command,
        timeout: std::time::Duration,
    ) -> Result<(), Overloaded> {
        let sent = self.commands.send_timeout(command, timeout).is_ok();
        // Wake even on failure: the worker then sees the stop flag.
        let _ = self.waker.wake();
        if sent {
            Ok(())
        } else {
            Err(Overloaded { worker: self.index })
        }
    }

    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("index", &self.index)
            .field("local_addr", &self.local_addr)
            .field("candidates", &self.candidates)
            .field("queued", &self.commands.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_api::RequestId;

    fn handle(
        capacity: usize,
    ) -> (
        WorkerHandle,
        crossbeam_channel::Receiver<Command>,
        mio::Poll,
    ) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(1)).unwrap());
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let (bridge, _bridge_rx) = crossbeam_channel::bounded(1);
        let h = WorkerHandle::new(
            3,
            addr,
            Arc::from(vec![addr]),
            tx,
            waker,
            Arc::default(),
            bridge,
            None,
        );
        (h, rx, poll)
    }

    fn stats(n: u64) -> Command {
        Command::Stats {
            request: RequestId(n),
        }
    }

    #[test]
    fn a_full_queue_is_refused_and_counted() {
        let (h, rx, _poll) = handle(1);
        h.send(stats(1)).unwrap();
        let err = h.send(stats(2)).unwrap_err();
        assert_eq!(err.worker, 3);
        assert_eq!(
            err.to_string(),
            "media worker 3 is overloaded: its command queue is full"
        );
        assert!(h.clone().send(stats(3)).is_err());
        assert_eq!(h.overload().commands_rejected, 2);
        assert_eq!(rx.len(), 1);
        // Room again once the worker took the first command.
        assert!(matches!(
            rx.try_recv(),
            Ok(Command::Stats {
                request: RequestId(1)
            })
        ));
        h.send(stats(4)).unwrap();
        assert_eq!(h.overload().commands_rejected, 2);
    }

    #[test]
    fn a_stopped_worker_refuses_commands() {
        let (h, rx, _poll) = handle(4);
        drop(rx);
        assert!(h.send(stats(1)).is_err());
        assert_eq!(h.overload().commands_rejected, 1);
    }

    #[test]
    fn send_wakes_the_worker() {
        let (h, _rx, mut poll) = handle(4);
        h.send(stats(1)).unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(10)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == mio::Token(1)));
    }

    #[test]
    fn counters_merge() {
        let mut a = OverloadCounters {
            commands_rejected: 1,
            events_dropped: 2,
            events_deferred: 5,
            events_backlog: 7,
            send_errors: 3,
            relay_dropped: 4,
        };
        a.merge(&a.clone());
        assert_eq!(
            a,
            OverloadCounters {
                commands_rejected: 2,
                events_dropped: 4,
                events_deferred: 10,
                events_backlog: 14,
                send_errors: 6,
                relay_dropped: 8,
            }
        );
    }
}
