//! The set of media workers: starting them (every socket bound before any thread runs) and
//! stopping them (graceful shutdown, then a forced stop, then join).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use manifold_core::Command;

use crate::config::MediaConfig;
use crate::handle::{OverloadCounters, SharedCounters, WorkerHandle};
use crate::socket::MediaSocket;
use crate::tcp::{IceTcp, SharedTcpCounters, bind_listener};
use crate::worker::{RELAY_QUEUE, RelayPeer, WAKER, WorkerSetup};
use crate::{BridgeSink, EventSink, IoError};

/// Frames from other nodes one worker's bridge inbox holds; more are dropped and counted
/// (`relay_dropped`).
pub const MAX_BRIDGE_INBOX: usize = 8192;

/// How long [`MediaWorkers::shutdown`] lets workers remove their participants and say
/// goodbye before stopping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long a stopped worker may take to notice (its longest poll is 100 ms).
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How long shutdown waits for room in a full command queue.
const SHUTDOWN_ENQUEUE: Duration = Duration::from_millis(50);
/// With ephemeral ports and ICE-TCP, how many UDP ports are tried before giving up on
/// finding one whose number is free for TCP too.
const EPHEMERAL_PAIR_TRIES: usize = 16;

/// The running media workers. Dropping this stops them abruptly (no goodbyes) and joins
/// them; call [`MediaWorkers::shutdown`] for a graceful end.
pub struct MediaWorkers {
    handles: Vec<WorkerHandle>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl MediaWorkers {
    /// Bind every worker's socket, then start one thread per worker. A socket that cannot
    /// be bound (port in use, address not local) fails the whole start with
    /// [`IoError::Bind`] before any thread runs.
    pub fn start(config: MediaConfig, sink: Arc<dyn EventSink>) -> Result<MediaWorkers, IoError> {
        Self::start_bridged(config, sink, None)
    }

    /// [`MediaWorkers::start`], with `bridge` taking what the workers relay to other nodes
    /// (without one, rooms are this node's alone).
    pub fn start_bridged(
        config: MediaConfig,
        sink: Arc<dyn EventSink>,
        bridge: Option<Arc<dyn BridgeSink>>,
    ) -> Result<MediaWorkers, IoError> {
        let plan = config.plan()?;
        let mut sockets = Vec::with_capacity(plan.binds.len());
        let mut listeners = Vec::with_capacity(plan.binds.len());
        for addr in &plan.binds {
            let (socket, listener) = bind_worker(*addr, config.ice_tcp)?;
            sockets.push(socket);
            listeners.push(listener);
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = MediaWorkers {
            handles: Vec::with_capacity(sockets.len()),
            threads: Vec::with_capacity(sockets.len()),
            stop: stop.clone(),
        };
        // Every worker's poll, waker and relay queue exist before any thread runs: each
        // worker can hand relayed tracks to every other from its first turn.
        let mut polls = Vec::with_capacity(sockets.len());
        let mut relay_rxs = Vec::with_capacity(sockets.len());
        let mut peers = Vec::with_capacity(sockets.len());
        for _ in &sockets {
            let poll = mio::Poll::new().map_err(IoError::Spawn)?;
            let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(IoError::Spawn)?);
            let (tx, rx) = crossbeam_channel::bounded(RELAY_QUEUE);
            polls.push((poll, waker.clone()));
            relay_rxs.push(rx);
            peers.push(RelayPeer { tx, waker });
        }
        let peers: Arc<[RelayPeer]> = peers.into();
        for (((i, socket), listener), ((poll, waker), relay_rx)) in sockets
            .into_iter()
            .enumerate()
            .zip(listeners)
            .zip(polls.into_iter().zip(relay_rxs))
        {
            // `plan` caps the count at MAX_WORKERS.
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            let port = socket.local_addr().port();
            let candidates: Arc<[SocketAddr]> = plan
                .announce_ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect();
            let (tx, rx) = crossbeam_channel::bounded(config.command_queue);
            let (bridge_tx, bridge_rx) = crossbeam_channel::bounded(MAX_BRIDGE_INBOX);
            let counters = Arc::new(SharedCounters::default());
            let local_addr = socket.local_addr();
            let tcp_counters = listener
                .is_some()
                .then(|| Arc::new(SharedTcpCounters::default()));
            let tcp = match (listener, &tcp_counters) {
                (Some(listener), Some(shared)) => {
                    let registry = poll.registry().try_clone().map_err(IoError::Spawn)?;
                    let max = config.tcp_max_connections;
                    let tcp = IceTcp::new(listener, registry, max, shared.clone(), Instant::now())
                        .map_err(IoError::Spawn)?;
                    Some(tcp)
                }
                _ => None,
            };
            let mut setup = WorkerSetup {
                index,
                socket,
                tcp,
                poll,
                // `plan` never leaves the announced IPs empty.
                local: candidates[0],
                commands: rx,
                relay_rx,
                peers: peers.clone(),
                bridge_rx,
                bridge: bridge.clone(),
                counters: counters.clone(),
                sink: sink.clone(),
                stop: stop.clone(),
                shard: config.shard.clone(),
            };
            setup.register().map_err(IoError::Spawn)?;
            let thread = std::thread::Builder::new()
                .name(format!("manifold-media-{index}"))
                .spawn(move || setup.run())
                .map_err(IoError::Spawn)?;
            // Any error above drops `workers`, which stops the threads already running.
            workers.threads.push(thread);
            workers.handles.push(WorkerHandle::new(
                index,
                local_addr,
                candidates,
                tx,
                waker,
                counters,
                bridge_tx,
                tcp_counters,
            ));
        }
        tracing::info!(workers = workers.handles.len(), "media workers started");
        Ok(workers)
    }

    /// Shut down gracefully: every worker gets `Command::Shutdown` (its participants leave
    /// with `LeaveReason::Shutdown`, their events are delivered and goodbyes sent), and has
    /// up to about a second to finish; then the rest are stopped and every thread joined.
    /// A worker that still does not stop (a bug) is logged and left detached rather than
    /// hanging the caller.
    pub fn shutdown(mut self) {
        self.stop_all(true);
    }

    /// One handle per worker, in index order.
    pub fn handles(&self) -> &[WorkerHandle] {
        &self.handles
    }

    /// Overload counters summed over every worker.
    pub fn overload(&self) -> OverloadCounters {
        let mut total = OverloadCounters::default();
        for h in &self.handles {
            total.merge(&h.overload());
        }
        total
    }

    fn stop_all(&mut self, graceful: bool) {
        let threads = std::mem::take(&mut self.threads);
        if threads.is_empty() {
            return;
        }
        if graceful {
            for h in &self.handles {
                if h.send_blocking(Command::Shutdown, SHUTDOWN_ENQUEUE)
                    .is_err()
                {
                    tracing::warn!(worker = h.index(), "cannot queue shutdown; stopping it");
                }
            }
            wait_for(&threads, SHUTDOWN_GRACE);
        }
        self.stop.store(true, Ordering::Relaxed);
        for h in &self.handles {
            h.wake();
        }
        wait_for(&threads, STOP_GRACE);
        for (i, thread) in threads.into_iter().enumerate() {
            if !thread.is_finished() {
                tracing::error!(worker = i, "media worker did not stop; leaving it detached");
                continue;
            }
            if thread.join().is_err() {
                tracing::error!(worker = i, "media worker thread panicked");
            }
        }
        tracing::info!("media workers stopped");
    }
}

impl Drop for MediaWorkers {
    fn drop(&mut self) {
        self.stop_all(false);
    }
}

impl std::fmt::Debug for MediaWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaWorkers")
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

/// Bind one worker's UDP socket at `addr` and, with `ice_tcp`, its TCP listener at the
/// same address and port number (its candidates share one address). With an ephemeral
/// `addr` the UDP port is picked again until its number is free for TCP too.
fn bind_worker(
    addr: SocketAddr,
    ice_tcp: bool,
) -> Result<(MediaSocket, Option<mio::net::TcpListener>), IoError> {
    let mut tries = 0;
    loop {
        let socket = MediaSocket::bind(addr)?;
        if !ice_tcp {
            return Ok((socket, None));
        }
        match bind_listener(socket.local_addr()) {
            Ok(listener) => return Ok((socket, Some(listener))),
            Err(IoError::Bind { source, .. })
                if addr.port() == 0
                    && source.kind() == std::io::ErrorKind::AddrInUse
                    && tries + 1 < EPHEMERAL_PAIR_TRIES =>
            {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Wait until every thread has finished or `limit` has passed.
fn wait_for(threads: &[JoinHandle<()>], limit: Duration) {
    let deadline = Instant::now() + limit;
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}
