//! The media worker loop: one thread that owns one socket (and, with ICE-TCP, one TCP
//! listener and its connections) and one shard, and moves datagrams, commands, timeouts and
//! events between them without ever blocking on anything but its own poll.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backlog::Backlog;
use crossbeam_channel::{Receiver, Sender as ChannelSender, TryRecvError, TrySendError};
use manifold_api::CoreEvent;
use manifold_api::{RoomName, TrackId};
use manifold_core::{
    BRIDGE, Command, Input, Output, Protocol, RelayMessage, Shard, ShardConfig, Transmit,
};
use mio::{Events, Interest, Poll, Token};
use quinn_udp::RecvMeta;

use crate::handle::SharedCounters;
use crate::socket::{BATCH, MediaSocket, RECV_SLOT_BYTES};
use crate::tcp::IceTcp;
use crate::{BridgeSink, BridgeTo};
use crate::{EventSink, MAX_EVENT_BACKLOG, Undelivered};

/// The poll token of the socket.
pub(crate) const SOCKET: Token = Token(0);
/// The poll token of the waker that signals queued commands.
pub(crate) const WAKER: Token = Token(1);
// Tokens from 2 up are ICE-TCP's (`tcp.rs`).

/// Longest sleep, even when the shard has nothing scheduled: bounds how late a stop flag
/// or a missed wake-up is noticed.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How soon a worker holding back events offers them again.
const BACKLOG_RETRY: Duration = Duration::from_millis(2);
/// Receive system calls per turn at most, so that a flooded socket cannot starve timers
/// and commands (quinn's `WorkLimiter` idea, by count).
const MAX_RECV_BATCHES_PER_TURN: usize = 64;
/// Commands handled per turn at most, for the same reason.
const MAX_COMMANDS_PER_TURN: usize = 256;
/// Relay messages from other workers handled per turn at most (a turn's worth of relayed
/// media: several batches of packets, each one to many subscribers).
const MAX_RELAY_PER_TURN: usize = 1024;
/// Relay messages one worker's inbox holds. A full inbox drops what arrives, counted at the
/// sender (`relay_dropped`); the receiver notices the hole and asks for the packets again.
pub(crate) const RELAY_QUEUE: usize = 8192;
/// How long a worker keeps serving after `Command::Shutdown` while participants remain
/// (their goodbyes still need to be sent).
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);
/// A worker whose loop panics this many turns in a row gives up.
const MAX_CONSECUTIVE_PANICS: u32 = 16;
/// Largest GSO send: below the 64 KiB an IP packet can carry.
const MAX_GSO_BYTES: usize = 60_000;
/// Largest datagram coalesced into a GSO send. The kernel rejects GSO segments larger
/// than the device MTU allows, and quinn-udp then turns GSO off for good; media datagrams
/// are far smaller (str0m keeps them near 1150 bytes).
const MAX_GSO_SEGMENT: usize = 1400;
/// At most one log line per this interval for a recurring I/O error.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Everything a worker thread starts with.
pub(crate) struct WorkerSetup {
    pub index: u16,
    pub socket: MediaSocket,
    /// The ICE-TCP listener, registered with `poll` (none: ICE-TCP is off).
    pub tcp: Option<IceTcp>,
    pub poll: Poll,
    /// The first announced candidate: the local address the shard's sessions know.
    pub local: SocketAddr,
    pub commands: Receiver<Command>,
    /// Relay messages other workers send this one.
    pub relay_rx: Receiver<(u16, RelayMessage)>,
    /// Every worker's relay inbox, by index (this one's too).
    pub peers: Arc<[RelayPeer]>,
    /// Frames from other nodes (their origin node, the encoded message).
    pub bridge_rx: Receiver<(Arc<str>, Vec<u8>)>,
    /// Where frames for other nodes go (none: this node is alone).
    pub bridge: Option<Arc<dyn BridgeSink>>,
    pub counters: Arc<SharedCounters>,
    pub sink: Arc<dyn EventSink>,
    pub stop: Arc<AtomicBool>,
    pub shard: ShardConfig,
}

impl WorkerSetup {
    /// Register the socket with the poll. The waker is registered when it is created.
    pub fn register(&mut self) -> io::Result<()> {
        self.poll
            .registry()
            .register(self.socket.source(), SOCKET, Interest::READABLE)
    }

    /// The thread body: run until shut down or stopped.
    pub fn run(self) {
        let span = tracing::info_span!("media_worker", worker = self.index);
        let _entered = span.enter();
        let mut worker = Worker::new(self);
        tracing::info!(
            local_addr = %worker.io.socket.local_addr(),
            announced = %worker.core.local,
            "media worker started"
        );
        let mut panics = 0;
        loop {
            match catch_unwind(AssertUnwindSafe(|| worker.turn())) {
                Ok(Flow::Continue) => panics = 0,
                Ok(Flow::Exit) => break,
                Err(payload) => {
                    panics += 1;
                    tracing::error!(
                        panic = panic_message(&*payload),
                        consecutive = panics,
                        "media worker loop panicked"
                    );
                    if panics >= MAX_CONSECUTIVE_PANICS {
                        tracing::error!("media worker keeps panicking; stopping it");
                        break;
                    }
                    worker.recover();
                }
            }
        }
        tracing::info!("media worker stopped");
    }
}

enum Flow {
    Continue,
    Exit,
}

/// Another worker's relay inbox, and how to wake it.
pub(crate) struct RelayPeer {
    pub tx: ChannelSender<(u16, RelayMessage)>,
    pub waker: Arc<mio::Waker>,
}

struct Worker {
    poll: Poll,
    events: Events,
    commands: Receiver<Command>,
    relay_rx: Receiver<(u16, RelayMessage)>,
    bridge_rx: Receiver<(Arc<str>, Vec<u8>)>,
    stop: Arc<AtomicBool>,
    io: Io,
    core: Core,
    /// The socket may hold datagrams not read yet. Readiness is edge-triggered, so a turn
    /// that stops reading before `WouldBlock` must come back without waiting.
    readable: bool,
    /// The command queue may hold commands not handled yet.
    commands_pending: bool,
    /// The relay inbox may hold messages not handled yet.
    relay_pending: bool,
    /// Set by `Command::Shutdown`: exit once the shard is empty, or at this time.
    draining_until: Option<Instant>,
    /// How far behind the worker is, and how long it has waited for input: what the shard
    /// sheds by (`Input::Backlog`, `Input::Idle`; `backlog.rs`).
    behind: Backlog,
}

/// The socket side of a worker.
struct Io {
    socket: MediaSocket,
    tcp: Option<IceTcp>,
    recv_buf: Box<[u8]>,
    recv_meta: [RecvMeta; BATCH],
    recv_log: RateLimit,
    sender: Sender,
}

/// The shard side of a worker: the shard, what it wants sent and when it wants to be
/// called again.
struct Core {
    index: u16,
    shard: Shard,
    local: SocketAddr,
    transmits: Vec<Transmit>,
    deadline: Instant,
    sink: Arc<dyn EventSink>,
    counters: Arc<SharedCounters>,
    /// Events the sink could not take yet, oldest first; delivered before any newer one.
    backlog: VecDeque<CoreEvent>,
    /// Every worker's relay inbox, and which of them were sent something this turn (woken
    /// once per turn, not per message).
    peers: Arc<[RelayPeer]>,
    to_wake: u64,
    backlog_log: RateLimit,
    bridge: Option<Arc<dyn BridgeSink>>,
    /// Tracks that cross the bridge: for a local one its room (the subject its frames go
    /// to), for one from another node that node (where its feedback goes).
    routes: HashMap<TrackId, Route>,
    bridge_log: RateLimit,
}

/// Where frames about one track go.
enum Route {
    Origin(RoomName),
    From(Arc<str>, RoomName),
}

/// Batched sending, with a scratch buffer for GSO.
struct Sender {
    gso_buf: Vec<u8>,
    log: RateLimit,
}

impl Worker {
    fn new(setup: WorkerSetup) -> Self {
        let now = Instant::now();
        let WorkerSetup {
            index,
            socket,
            tcp,
            poll,
            local,
            commands,
            relay_rx,
            peers,
            bridge_rx,
            bridge,
            counters,
            sink,
            stop,
            shard,
        } = setup;
        let mut core = Core {
            index,
            shard: Shard::new(shard, now, index),
            local,
            transmits: Vec::with_capacity(BATCH),
            deadline: now,
            sink,
            counters,
            backlog: VecDeque::new(),
            backlog_log: RateLimit::default(),
            peers,
            to_wake: 0,
            bridge,
            routes: HashMap::new(),
            bridge_log: RateLimit::default(),
        };
        core.drain();
        Worker {
            poll,
            events: Events::with_capacity(16),
            commands,
            relay_rx,
            bridge_rx,
            stop,
            io: Io {
                socket,
                tcp,
                recv_buf: vec![0; BATCH * RECV_SLOT_BYTES].into_boxed_slice(),
                recv_meta: [RecvMeta::default(); BATCH],
                recv_log: RateLimit::default(),
                sender: Sender {
                    gso_buf: Vec::with_capacity(MAX_GSO_BYTES),
                    log: RateLimit::default(),
                },
            },
            core,
            // Datagrams may have arrived between bind and registration.
            readable: true,
            commands_pending: true,
            relay_pending: true,
            draining_until: None,
            behind: Backlog::new(now),
        }
    }

    /// One wake-up: wait for the socket, a command or the next deadline, then handle a
    /// bounded amount of each.
    fn turn(&mut self) -> Flow {
        let now = Instant::now();
        self.core.flush_backlog();
        let tcp_pending = self.io.tcp.as_ref().is_some_and(IceTcp::pending);
        let timeout = if self.readable || self.commands_pending || self.relay_pending || tcp_pending
        {
            Duration::ZERO
        } else if !self.core.backlog.is_empty() {
            // Events are waiting for room in the sink: come back soon to offer them again.
            BACKLOG_RETRY.min(self.core.deadline.saturating_duration_since(now))
        } else {
            let mut until = self.core.deadline;
            if let Some(drain) = self.draining_until {
                until = until.min(drain);
            }
            until.saturating_duration_since(now).min(MAX_WAIT)
        };
        let (socket_idle, relay_idle) = (!self.readable, !self.relay_pending);
        let waiting_from = Instant::now();
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            // Not expected to happen; do not spin on it.
            tracing::error!(error = %e, "poll failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let woke = Instant::now();
        self.behind.waited(waiting_from, woke);
        self.core.input(woke, Input::Idle(self.behind.idle()));
        // Empty before the poll: what arrived during it woke the poll at once.
        if socket_idle {
            self.behind.socket_empty(woke);
        }
        if relay_idle {
            self.behind.relay_empty(woke);
        }
        self.core.input(woke, Input::Backlog(self.behind.at(woke)));
        for event in self.events.iter() {
            match event.token() {
                SOCKET => self.readable = true,
                token if IceTcp::owns(token) => {
                    if let Some(tcp) = &mut self.io.tcp {
                        tcp.ready_event(
                            token,
                            event.is_readable() || event.is_read_closed(),
                            event.is_writable() || event.is_error(),
                        );
                    }
                }
                _ => {}
            }
        }
        // The waker needs no handling of its own: commands are checked on every turn.

        self.handle_commands();
        self.handle_relay();
        if self.readable {
            self.receive();
        }
        self.receive_tcp();
        self.core.release_due();
        self.io.sender.flush(
            &self.io.socket,
            self.io.tcp.as_mut(),
            &mut self.core.transmits,
            &self.core.counters,
        );
        if let Some(tcp) = &mut self.io.tcp {
            tcp.housekeeping(Instant::now());
        }
        self.core.wake_peers();
        // Time not spent waiting in poll: the worker's load (one atomic add per turn).
        self.core.counters.busy(woke.elapsed());

        if self.stop.load(Ordering::Relaxed) {
            return Flow::Exit;
        }
        if let Some(until) = self.draining_until
            && (Instant::now() >= until || self.core.shard.stats().participants == 0)
        {
            return Flow::Exit;
        }
        Flow::Continue
    }

    fn handle_commands(&mut self) {
        for _ in 0..MAX_COMMANDS_PER_TURN {
            match self.commands.try_recv() {
                Ok(command) => {
                    let now = Instant::now();
                    if matches!(command, Command::Shutdown) {
                        tracing::info!("shutting down");
                        self.draining_until.get_or_insert(now + SHUTDOWN_DRAIN);
                    }
                    self.core.input(now, Input::Command(command));
                }
                Err(TryRecvError::Empty) => {
                    self.commands_pending = false;
                    return;
                }
                Err(TryRecvError::Disconnected) => {
                    // Every handle is gone: nobody can command or stop this worker again.
                    self.commands_pending = false;
                    self.draining_until.get_or_insert_with(Instant::now);
                    return;
                }
            }
        }
        self.commands_pending = true;
    }

    fn handle_relay(&mut self) {
        let mut pending = false;
        for i in 0..MAX_RELAY_PER_TURN {
            let Ok((from, message)) = self.relay_rx.try_recv() else {
                self.behind.relay_empty(Instant::now());
                break;
            };
            let now = Instant::now();
            self.core.input(now, Input::Relay { from, message });
            pending = i + 1 == MAX_RELAY_PER_TURN;
        }
        for i in 0..MAX_RELAY_PER_TURN {
            let Ok((node, frame)) = self.bridge_rx.try_recv() else {
                break;
            };
            let now = Instant::now();
            if frame.first() == Some(&crate::handle::NODE_GONE) {
                self.core.node_gone(now, &node, &frame[1..]);
                pending |= i + 1 == MAX_RELAY_PER_TURN;
                continue;
            }
            match manifold_core::relay_wire::decode(&frame, now) {
                Ok(message) => {
                    match &message {
                        RelayMessage::Open(open) => {
                            let route = Route::From(node.clone(), open.room().clone());
                            self.core.routes.insert(open.track(), route);
                        }
                        RelayMessage::Close { track } => {
                            self.core.routes.remove(track);
                        }
                        _ => {}
                    }
                    self.core.input(
                        now,
                        Input::Relay {
                            from: BRIDGE,
                            message,
                        },
                    );
                }
                Err(e) => {
                    if self.core.bridge_log.allow() {
                        tracing::warn!(%node, error = %e, suppressed = self.core.bridge_log.take_suppressed(), "relay frame from another node refused");
                    }
                }
            }
            pending |= i + 1 == MAX_RELAY_PER_TURN;
        }
        self.relay_pending = pending;
    }

    fn receive(&mut self) {
        let behind = &mut self.behind;
        let Io {
            socket,
            tcp,
            recv_buf,
            recv_meta,
            recv_log,
            sender,
        } = &mut self.io;
        let core = &mut self.core;
        let mut slots = recv_buf.chunks_mut(RECV_SLOT_BYTES);
        let mut bufs: [IoSliceMut<'_>; BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));

        for _ in 0..MAX_RECV_BATCHES_PER_TURN {
            let n = match socket.recv(&mut bufs, recv_meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    behind.socket_empty(Instant::now());
                    self.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if recv_log.allow() {
                        tracing::warn!(error = %e, suppressed = recv_log.take_suppressed(), "receive failed");
                    }
                    // The next datagram to arrive raises a new readiness event.
                    self.readable = false;
                    return;
                }
            };
            // One clock read per batch: every datagram of a batch arrived together.
            let now = Instant::now();
            if behind.wants_measure(now) {
                behind.measured(now, socket.last_datagram_age());
            }
            core.input(now, Input::Backlog(behind.at(now)));
            if n < BATCH {
                // A short batch took everything there was.
                behind.socket_empty(now);
            }
            for (buf, meta) in bufs.iter().zip(recv_meta.iter()).take(n) {
                let data = &buf[..meta.len.min(buf.len())];
                if data.is_empty() {
                    // Garbage, but counted like any other datagram.
                    core.input(now, core.datagram(meta.addr, &[], Protocol::Udp));
                    continue;
                }
                // With GRO one buffer holds several datagrams of `stride` bytes each.
                let stride = match meta.stride {
                    0 => data.len(),
                    s => s,
                };
                for datagram in data.chunks(stride) {
                    core.input(now, core.datagram(meta.addr, datagram, Protocol::Udp));
                }
            }
            core.release_due();
            sender.flush(socket, tcp.as_mut(), &mut core.transmits, &core.counters);
            core.counters.batch_done(now.elapsed());
        }
        // Work cap reached with data possibly left: `readable` stays set, the next turn
        // comes back at once after timers and commands had their go.
    }

    /// Accept ICE-TCP connections and hand the frames read from them to the shard.
    fn receive_tcp(&mut self) {
        let Io {
            socket,
            tcp: Some(tcp),
            sender,
            ..
        } = &mut self.io
        else {
            return;
        };
        if !tcp.pending() {
            return;
        }
        let core = &mut self.core;
        // One clock read per turn, as per UDP batch.
        let now = Instant::now();
        tcp.receive(now, |source, frame| {
            let input = core.datagram(source, frame, Protocol::Tcp);
            core.input(now, input);
        });
        core.release_due();
        sender.flush(socket, Some(tcp), &mut core.transmits, &core.counters);
        core.counters.batch_done(now.elapsed());
    }

    /// Pick up after a panic in `turn`: whatever was half-sent is lost, and the shard is
    /// called again soon so that its queued outputs drain.
    fn recover(&mut self) {
        self.core.transmits.clear();
        self.core.deadline = Instant::now();
    }
}

impl Core {
    /// A datagram from `source` over `proto`. The ICE-TCP listener has the UDP socket's
    /// port, so both arrive at the one announced address the shard knows.
    fn datagram<'a>(&self, source: SocketAddr, contents: &'a [u8], proto: Protocol) -> Input<'a> {
        Input::Datagram {
            source,
            destination: self.local,
            contents,
            proto,
        }
    }

    /// Feed one input and drain what it produced.
    fn input(&mut self, now: Instant, input: Input<'_>) {
        self.shard.handle_input(now, input);
        self.drain();
    }

    /// The shard's timeout pass, if anything is due: once per turn, and after each receive
    /// batch before its sends are flushed. Forwarded media leaves on it (writing a packet
    /// makes its subscriber due at once), so media leaves with the batch that brought it,
    /// not after up to [`MAX_RECV_BATCHES_PER_TURN`] batches.
    fn release_due(&mut self) {
        let now = Instant::now();
        if now >= self.deadline {
            self.input(now, Input::Timeout);
        }
    }

    fn drain(&mut self) {
        loop {
            match self.shard.poll_output() {
                Output::Transmit(t) => self.transmits.push(t),
                Output::Event(event) => self.deliver(event),
                Output::Relay { to, message } => self.relay(to, message),
                Output::Timeout(at) => {
                    self.deadline = at;
                    return;
                }
            }
        }
    }
}

impl Core {
    /// Queue `message` for worker `to`; it is woken at the end of the turn.
    fn relay(&mut self, to: u16, message: RelayMessage) {
        if to == BRIDGE {
            self.bridge_out(message);
            return;
        }
        let Some(peer) = self.peers.get(usize::from(to)) else {
            self.counters.relay_dropped();
            return;
        };
        match peer.tx.try_send((self.index, message)) {
            Ok(()) => self.to_wake |= 1u64.checked_shl(u32::from(to)).unwrap_or(0),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.relay_dropped();
            }
        }
    }

    /// Node `node` left room `room` (its name's bytes): end what it relayed here for it.
    fn node_gone(&mut self, now: Instant, node: &str, room: &[u8]) {
        let gone: Vec<TrackId> = self
            .routes
            .iter()
            .filter(|(_, r)| {
                matches!(r, Route::From(n, rm) if &**n == node && rm.as_str().as_bytes() == room)
            })
            .map(|(t, _)| *t)
            .collect();
        for track in gone {
            self.routes.remove(&track);
            self.input(
                now,
                Input::Relay {
                    from: BRIDGE,
                    message: RelayMessage::Close { track },
                },
            );
        }
    }

    /// Encode `message` for another node and hand it to the bridge sink, addressed by the
    /// track's route.
    fn bridge_out(&mut self, message: RelayMessage) {
        let Some(bridge) = &self.bridge else {
            return;
        };
        let to = match &message {
            RelayMessage::Open(open) => {
                let room = open.room().clone();
                self.routes
                    .insert(open.track(), Route::Origin(room.clone()));
                Some(BridgeTo::Room(room))
            }
            RelayMessage::Media { track, .. }
            | RelayMessage::Muted { track, .. }
            | RelayMessage::Close { track }
            | RelayMessage::Keyframe { track, .. }
            | RelayMessage::Layers { track, .. }
            | RelayMessage::Lost { track, .. } => {
                let to = match self.routes.get(track) {
                    Some(Route::Origin(room)) => Some(BridgeTo::Room(room.clone())),
                    Some(Route::From(node, _)) => Some(BridgeTo::Node(node.clone())),
                    None => None,
                };
                if matches!(message, RelayMessage::Close { .. }) {
                    self.routes.remove(track);
                }
                to
            }
        };
        let Some(to) = to else {
            self.counters.relay_dropped();
            return;
        };
        let mut frame = Vec::new();
        manifold_core::relay_wire::encode(&message, &mut frame);
        if !bridge.send(to, frame) {
            self.counters.relay_dropped();
        }
    }

    /// Wake the workers sent relay messages this turn.
    fn wake_peers(&mut self) {
        let mut mask = std::mem::take(&mut self.to_wake);
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(peer) = self.peers.get(i)
                && let Err(e) = peer.waker.wake()
            {
                tracing::debug!(worker = i, error = %e, "cannot wake a relay peer");
            }
        }
    }

    /// Hand `event` to the sink, behind whatever it could not take yet.
    fn deliver(&mut self, event: CoreEvent) {
        if !self.backlog.is_empty() {
            self.hold(event);
            return;
        }
        match self.sink.deliver(self.index, event) {
            Ok(()) => {}
            Err(Undelivered::Full(event)) => self.hold(event),
            Err(Undelivered::Closed) => self.counters.event_dropped(),
        }
    }

    fn hold(&mut self, event: CoreEvent) {
        if self.backlog.len() >= MAX_EVENT_BACKLOG {
            self.counters.event_dropped();
            return;
        }
        if self.backlog.is_empty() && self.backlog_log.allow() {
            tracing::warn!(
                times = self.backlog_log.take_suppressed() + 1,
                "the control plane is not keeping up with events; holding them"
            );
        }
        self.counters.event_deferred();
        self.backlog.push_back(event);
    }

    /// Offer the held-back events again, in order, until the sink is full again.
    fn flush_backlog(&mut self) {
        while let Some(event) = self.backlog.pop_front() {
            match self.sink.deliver(self.index, event) {
                Ok(()) => {}
                Err(Undelivered::Full(event)) => {
                    self.backlog.push_front(event);
                    break;
                }
                Err(Undelivered::Closed) => self.counters.event_dropped(),
            }
        }
        self.counters.set_backlog(self.backlog.len());
    }
}

impl Sender {
    /// Send everything queued, coalescing runs of UDP datagrams to one destination into
    /// GSO sends where the platform allows, and framing ICE-TCP ones onto their
    /// connections. Never blocks: a full socket buffer or write queue drops the datagram
    /// (and counts it), as a congested link would.
    fn flush(
        &mut self,
        socket: &MediaSocket,
        mut tcp: Option<&mut IceTcp>,
        transmits: &mut Vec<Transmit>,
        counters: &SharedCounters,
    ) {
        let mut rest = &transmits[..];
        while let Some(first) = rest.first() {
            if first.proto != Protocol::Udp {
                match tcp.as_deref_mut() {
                    Some(tcp) if first.proto == Protocol::Tcp => {
                        tcp.queue(first.destination, &first.contents);
                    }
                    // The shard only answers on the transports it was reached by.
                    _ => counters.send_errors(1),
                }
                rest = &rest[1..];
                continue;
            }
            let run = gso_run(rest, socket.max_gso_segments());
            let (batch, tail) = rest.split_at(run);
            rest = tail;
            if let [single] = batch {
                self.send(
                    socket,
                    single.destination,
                    &single.contents,
                    None,
                    1,
                    counters,
                );
                continue;
            }
            self.gso_buf.clear();
            for t in batch {
                self.gso_buf.extend_from_slice(&t.contents);
            }
            let segment = batch[0].contents.len();
            let buf = std::mem::take(&mut self.gso_buf);
            let sent = self.send(
                socket,
                batch[0].destination,
                &buf,
                Some(segment),
                batch.len() as u64,
                counters,
            );
            self.gso_buf = buf;
            if !sent && socket.max_gso_segments() == 1 {
                // The device refused segmentation offload (quinn-udp has now turned it
                // off for good): this batch goes out one datagram at a time.
                for t in batch {
                    self.send(socket, t.destination, &t.contents, None, 1, counters);
                }
            }
        }
        transmits.clear();
        if let Some(tcp) = tcp {
            tcp.flush();
        }
    }

    /// One system call. Returns whether it was sent; failures are counted and logged
    /// (rate-limited), never fatal.
    fn send(
        &mut self,
        socket: &MediaSocket,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
        datagrams: u64,
        counters: &SharedCounters,
    ) -> bool {
        match socket.send(destination, contents, segment_size) {
            Ok(()) => true,
            Err(e) => {
                counters.send_errors(datagrams);
                // A full send buffer is congestion, not a fault: counted only.
                if e.kind() != io::ErrorKind::WouldBlock && self.log.allow() {
                    tracing::debug!(
                        %destination,
                        bytes = contents.len(),
                        ?segment_size,
                        error = %e,
                        suppressed = self.log.take_suppressed(),
                        "send failed"
                    );
                }
                false
            }
        }
    }
}

/// How many transmits from the front of `queue` can go out as one GSO send: a run of UDP
/// datagrams to one destination, all of the first one's size except possibly a shorter
/// last one (GSO's own rule), within the segment and byte limits.
fn gso_run(queue: &[Transmit], max_segments: usize) -> usize {
    let Some(first) = queue.first() else {
        return 0;
    };
    let segment = first.contents.len();
    if max_segments <= 1 || segment == 0 || segment > MAX_GSO_SEGMENT {
        return 1;
    }
    let mut total = segment;
    let mut n = 1;
    for t in &queue[1..] {
        let len = t.contents.len();
        if n == max_segments
            || t.proto != first.proto
            || t.destination != first.destination
            || len == 0
            || len > segment
            || total + len > MAX_GSO_BYTES
        {
            break;
        }
        total += len;
        n += 1;
        if len < segment {
            break;
        }
    }
    n
}

/// Lets a recurring log line through at most once per [`ERROR_LOG_INTERVAL`], counting
/// what it held back.
#[derive(Default)]
struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < ERROR_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return false;
        }
        self.last = Some(now);
        true
    }

    fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(not a string)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_api::CoreEvent;

    struct NoSink;

    impl EventSink for NoSink {
        fn deliver(&self, _: u16, _: CoreEvent) -> Result<(), Undelivered> {
            Ok(())
        }
    }

    /// A worker on loopback, driven turn by turn from the test thread.
    fn worker() -> (
        Worker,
        Arc<SharedCounters>,
        crossbeam_channel::Sender<Command>,
    ) {
        let socket = MediaSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let local = socket.local_addr();
        let (tx, rx) = crossbeam_channel::bounded(4);
        let counters = Arc::new(SharedCounters::default());
        let poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
        let (relay_tx, relay_rx) = crossbeam_channel::bounded(4);
        let mut setup = WorkerSetup {
            index: 0,
            socket,
            tcp: None,
            poll,
            local,
            commands: rx,
            relay_rx,
            peers: vec![RelayPeer {
                tx: relay_tx,
                waker,
            }]
            .into(),
            bridge_rx: crossbeam_channel::bounded(1).1,
            bridge: None,
            counters: counters.clone(),
            sink: Arc::new(NoSink),
            stop: Arc::default(),
            shard: ShardConfig::default(),
        };
        setup.register().unwrap();
        (Worker::new(setup), counters, tx)
    }

    #[test]
    fn coalesced_sends_arrive_as_separate_datagrams() {
        let (mut w, counters, _commands) = worker();
        let sender = MediaSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = w.io.socket.local_addr();
        // Equal sizes to one destination: one GSO send where the platform has it (and one
        // GRO-coalesced buffer at the receiver), else one send each.
        let mut queue: Vec<Transmit> = (0..10u8)
            .map(|i| Transmit {
                destination: to,
                contents: vec![0xff, i, 0, 0, 0, 0, 0, 0, 0, 0],
                proto: Protocol::Udp,
            })
            .collect();
        queue.push(Transmit {
            destination: to,
            contents: vec![0xff; 4],
            proto: Protocol::Udp,
        });
        let mut out = Sender {
            gso_buf: Vec::new(),
            log: RateLimit::default(),
        };
        out.flush(&sender, None, &mut queue, &counters);
        assert!(queue.is_empty());
        assert_eq!(counters.snapshot().send_errors, 0);

        let deadline = Instant::now() + Duration::from_secs(10);
        while w.core.shard.stats().datagrams_in < 11 {
            assert!(Instant::now() < deadline, "{:?}", w.core.shard.stats());
            assert!(matches!(w.turn(), Flow::Continue));
        }
        let stats = w.core.shard.stats();
        assert_eq!(stats.datagrams_in, 11);
        assert_eq!(stats.bytes_in, 104);
        assert_eq!(stats.drops_for("malformed"), 11);
    }

    #[test]
    fn a_shutdown_command_ends_an_empty_worker() {
        let (mut w, _, tx) = worker();
        tx.send(Command::Shutdown).unwrap();
        assert!(matches!(w.turn(), Flow::Exit));
    }

    #[test]
    fn a_worker_nobody_can_command_ends() {
        let (mut w, _, tx) = worker();
        drop(tx);
        assert!(matches!(w.turn(), Flow::Exit));
    }

    #[test]
    fn the_stop_flag_ends_a_worker() {
        let (mut w, _, _commands) = worker();
        assert!(matches!(w.turn(), Flow::Continue));
        w.stop.store(true, Ordering::Relaxed);
        assert!(matches!(w.turn(), Flow::Exit));
    }

    fn t(dest: &str, len: usize) -> Transmit {
        Transmit {
            destination: dest.parse().unwrap(),
            contents: vec![0; len],
            proto: Protocol::Udp,
        }
    }

    const A: &str = "192.0.2.1:5000";
    const B: &str = "192.0.2.2:5000";

    #[test]
    fn runs_of_equal_sizes_to_one_destination_coalesce() {
        let q = [t(A, 100), t(A, 100), t(A, 100), t(B, 100)];
        assert_eq!(gso_run(&q, 64), 3);
        assert_eq!(gso_run(&q[3..], 64), 1);
        assert_eq!(gso_run(&[], 64), 0);
    }

    #[test]
    fn without_gso_every_datagram_goes_alone() {
        let q = [t(A, 100), t(A, 100)];
        assert_eq!(gso_run(&q, 1), 1);
    }

    #[test]
    fn a_shorter_datagram_ends_a_run_and_a_longer_one_breaks_it() {
        let q = [t(A, 100), t(A, 100), t(A, 60), t(A, 100)];
        assert_eq!(gso_run(&q, 64), 3);
        let q = [t(A, 100), t(A, 120)];
        assert_eq!(gso_run(&q, 64), 1);
        let q = [t(A, 100), t(A, 0)];
        assert_eq!(gso_run(&q, 64), 1);
    }

    #[test]
    fn runs_respect_segment_and_byte_limits() {
        let q: Vec<Transmit> = (0..100).map(|_| t(A, 1000)).collect();
        assert_eq!(gso_run(&q, 64), MAX_GSO_BYTES / 1000);
        assert_eq!(gso_run(&q, 8), 8);
        let big = [t(A, 1500), t(A, 1500)];
        assert_eq!(gso_run(&big, 64), 1);
        let empty = [t(A, 0), t(A, 0)];
        assert_eq!(gso_run(&empty, 64), 1);
    }

    #[test]
    fn rate_limit_counts_what_it_holds_back() {
        let mut r = RateLimit::default();
        assert!(r.allow());
        assert!(!r.allow());
        assert!(!r.allow());
        assert_eq!(r.take_suppressed(), 2);
        assert_eq!(r.take_suppressed(), 0);
    }

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let a = catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*a), "static");
        let n = 7;
        let b = catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(&*b), "formatted 7");
    }
}
