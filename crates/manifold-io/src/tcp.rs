//! ICE over TCP for one worker (RFC 6544, passive candidates only): the listener on the
//! worker's UDP port number, the connections it accepted, RFC 4571 framing in and out, and
//! the bounds that keep what a client can make the worker hold small.
//!
//! A connection is *identified* once the shard has sent something on it: the shard only
//! answers a STUN request that named one of its sessions and carried that session's
//! message integrity, so an identified connection belongs to a client that holds ICE
//! credentials. Until then every frame must be STUN, the peer's IP may hold only
//! [`MAX_UNIDENTIFIED_PER_IP`] such connections, and each has
//! [`UNIDENTIFIED_TIMEOUT`] to become identified.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use manifold_rtp::framing::{self, HEADER_BYTES};
use manifold_rtp::{PacketClass, classify};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use crate::IoError;
use crate::socket::canonical;

/// The poll token of the listener.
pub(crate) const LISTENER: Token = Token(2);
/// Connection `k` of the slab polls as `Token(FIRST_CONNECTION + k)`.
const FIRST_CONNECTION: usize = 3;

/// Largest datagram one frame may carry, each way: an Ethernet MTU's worth, which no
/// media, DTLS or STUN datagram of a WebRTC peer exceeds (they stay near 1200 bytes).
/// RFC 4571 allows 65535; a frame announcing more than this closes the connection.
pub const MAX_FRAME_BYTES: usize = 1500;
/// Each connection's read buffer: room for two whole frames, allocated once at accept.
pub const READ_BUFFER_BYTES: usize = 4096;
/// Bytes queued for writing on one connection at most; a frame that does not fit is
/// dropped and counted (`write_dropped`), as a full UDP send buffer would drop it.
pub const MAX_WRITE_QUEUE_BYTES: usize = 64 * 1024;
/// How long a connection may stay unidentified before it is closed.
pub const UNIDENTIFIED_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may go without a frame before it is closed. ICE consent checks
/// (RFC 7675) come every few seconds on a live connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Unidentified connections one IP address may hold at once.
pub const MAX_UNIDENTIFIED_PER_IP: usize = 8;
/// Listen backlog asked of the kernel.
const BACKLOG: i32 = 1024;
/// Connections accepted per turn at most, so that a connection flood cannot starve media.
const MAX_ACCEPTS_PER_TURN: usize = 64;
/// Reads per connection per turn at most (each up to [`READ_BUFFER_BYTES`]).
const MAX_READS_PER_TURN: usize = 16;
/// How often connections are checked for the timeouts.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// ICE-TCP counters of one worker (or, merged, of all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IceTcpCounters {
    /// Connections open now.
    pub open: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections closed at once on arrival: the worker held
    /// `tcp_max_connections` already, or the peer's IP held [`MAX_UNIDENTIFIED_PER_IP`]
    /// unidentified ones.
    pub refused: u64,
    /// Connections closed since start, for any reason (the next three included).
    pub closed: u64,
    /// Of `closed`: unidentified for [`UNIDENTIFIED_TIMEOUT`], or idle for
    /// [`IDLE_TIMEOUT`].
    pub timed_out: u64,
    /// Of `closed`: a frame that was empty or larger than [`MAX_FRAME_BYTES`], or a frame
    /// other than STUN on an unidentified connection.
    pub protocol_errors: u64,
    /// Of `closed`: the write queue never drained and the socket failed.
    pub write_errors: u64,
    /// Frames received and handed to the shard.
    pub frames_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Frames the shard sent that were dropped: no connection from that address (any
    /// more), or its write queue was full.
    pub write_dropped: u64,
}

impl IceTcpCounters {
    /// Add another set of counters into this one.
    pub fn merge(&mut self, other: &IceTcpCounters) {
        self.open += other.open;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.closed += other.closed;
        self.timed_out += other.timed_out;
        self.protocol_errors += other.protocol_errors;
        self.write_errors += other.write_errors;
        self.frames_in += other.frames_in;
        self.frames_out += other.frames_out;
        self.write_dropped += other.write_dropped;
    }
}

/// The counters as the control plane reads them: the worker counts in plain integers and
/// stores them here once per turn that changed them.
#[derive(Debug, Default)]
pub(crate) struct SharedTcpCounters {
    values: [AtomicU64; 10],
}

impl SharedTcpCounters {
    fn publish(&self, c: &IceTcpCounters) {
        let values = [
            c.open,
            c.accepted,
            c.refused,
            c.closed,
            c.timed_out,
            c.protocol_errors,
            c.write_errors,
            c.frames_in,
            c.frames_out,
            c.write_dropped,
        ];
        for (slot, v) in self.values.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> IceTcpCounters {
        let [
            open,
            accepted,
            refused,
            closed,
            timed_out,
            protocol_errors,
            write_errors,
            frames_in,
            frames_out,
            write_dropped,
        ] = std::array::from_fn(|i| self.values[i].load(Ordering::Relaxed));
        IceTcpCounters {
            open,
            accepted,
            refused,
            closed,
            timed_out,
            protocol_errors,
            write_errors,
            frames_in,
            frames_out,
            write_dropped,
        }
    }
}

/// A bound, non-blocking TCP listener for one worker.
pub(crate) fn bind_listener(addr: SocketAddr) -> Result<TcpListener, IoError> {
    let fail = |source| IoError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // Serve IPv4 clients too on `[::]`, as the UDP socket does.
        if let Err(e) = socket.set_only_v6(false) {
            tracing::info!(%addr, error = %e, "TCP listener stays IPv6-only");
        }
    }
    // A restarted server rebinds while its previous connections are in TIME_WAIT.
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Why a connection is closed.
enum Close {
    /// The peer closed it, or it failed.
    Gone,
    /// It broke the framing or sent something other than STUN before it was identified.
    Protocol,
    /// A write failed.
    Write,
    /// A timeout passed.
    TimedOut,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    read_buf: Box<[u8]>,
    read_len: usize,
    write_buf: Vec<u8>,
    /// Unread data may be waiting (readiness is edge-triggered).
    readable: bool,
    /// Listed in `IceTcp::dirty`.
    dirty: bool,
    identified: bool,
    opened: Instant,
    last_frame: Instant,
}

/// One worker's ICE-TCP listener and connections.
pub(crate) struct IceTcp {
    listener: TcpListener,
    registry: Registry,
    max_connections: usize,
    conns: Slab<Conn>,
    /// Connections by their peer's address: where the shard's TCP transmits go.
    by_peer: HashMap<SocketAddr, usize>,
    /// Connections that may have data to read.
    ready: Vec<usize>,
    /// Connections with queued bytes to write.
    dirty: Vec<usize>,
    /// The listener may have connections waiting.
    listener_ready: bool,
    next_sweep: Instant,
    scratch: Vec<usize>,
    counters: IceTcpCounters,
    changed: bool,
    shared: std::sync::Arc<SharedTcpCounters>,
}

impl IceTcp {
    /// Take over `listener`, registering it (and later its connections) with `registry`.
    pub fn new(
        mut listener: TcpListener,
        registry: Registry,
        max_connections: usize,
        shared: std::sync::Arc<SharedTcpCounters>,
        now: Instant,
    ) -> io::Result<IceTcp> {
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(IceTcp {
            listener,
            registry,
            max_connections,
            conns: Slab::new(),
            by_peer: HashMap::new(),
            ready: Vec::new(),
            dirty: Vec::new(),
            // Connections may have arrived between bind and registration.
            listener_ready: true,
            next_sweep: now + SWEEP_INTERVAL,
            scratch: Vec::new(),
            counters: IceTcpCounters::default(),
            changed: false,
            shared,
        })
    }

    /// Whether `token` is this listener's or one of its connections'.
    pub fn owns(token: Token) -> bool {
        token.0 >= LISTENER.0
    }

    /// A readiness event for `token`.
    pub fn ready_event(&mut self, token: Token, readable: bool, writable: bool) {
        if token == LISTENER {
            self.listener_ready = true;
            return;
        }
        let key = token.0 - FIRST_CONNECTION;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if readable && !conn.readable {
            conn.readable = true;
            self.ready.push(key);
        }
        if writable && !conn.write_buf.is_empty() && !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Whether work is left that no readiness event will announce again.
    pub fn pending(&self) -> bool {
        self.listener_ready || !self.ready.is_empty()
    }

    /// Accept waiting connections, and hand every complete frame read from a ready
    /// connection to `deliver` (the peer's address, the datagram).
    pub fn receive(&mut self, now: Instant, mut deliver: impl FnMut(SocketAddr, &[u8])) {
        if self.listener_ready {
            self.accept(now);
        }
        let mut batch = std::mem::take(&mut self.ready);
        for key in batch.drain(..) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match read(conn, now, &mut self.counters, &mut deliver) {
                Ok(()) if conn.readable => self.ready.push(key),
                Ok(()) => {}
                Err(why) => self.close(key, why),
            }
            self.changed = true;
        }
        if self.ready.is_empty() {
            // Keep the allocation.
            self.ready = batch;
        }
    }

    /// Queue `datagram` as one frame on the connection from `destination`.
    pub fn queue(&mut self, destination: SocketAddr, datagram: &[u8]) {
        self.changed = true;
        let Some((key, conn)) = self
            .by_peer
            .get(&destination)
            .and_then(|&k| Some((k, self.conns.get_mut(k)?)))
        else {
            self.counters.write_dropped += 1;
            return;
        };
        let Ok(header) = framing::header(datagram, MAX_FRAME_BYTES) else {
            self.counters.write_dropped += 1;
            return;
        };
        if conn.write_buf.len() + HEADER_BYTES + datagram.len() > MAX_WRITE_QUEUE_BYTES {
            self.counters.write_dropped += 1;
            return;
        }
        // The shard answers only a session's authenticated STUN: the peer is known.
        conn.identified = true;
        conn.write_buf.extend_from_slice(&header);
        conn.write_buf.extend_from_slice(datagram);
        self.counters.frames_out += 1;
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Write what is queued, as far as the sockets take it without blocking; the rest
    /// waits for a writable event.
    pub fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            if let Err(why) = write(conn) {
                self.close(key, why);
            }
        }
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Close connections past their timeouts (at most once per [`SWEEP_INTERVAL`]), and
    /// store the counters where the control plane reads them if they changed.
    pub fn housekeeping(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_INTERVAL;
            let mut expired = std::mem::take(&mut self.scratch);
            expired.extend(self.conns.iter().filter_map(|(k, c)| {
                let unidentified = !c.identified
                    && now.saturating_duration_since(c.opened) >= UNIDENTIFIED_TIMEOUT;
                let idle = now.saturating_duration_since(c.last_frame) >= IDLE_TIMEOUT;
                (unidentified || idle).then_some(k)
            }));
            for key in expired.drain(..) {
                self.close(key, Close::TimedOut);
            }
            self.scratch = expired;
            // Retry an accept that failed for want of file descriptors.
            self.listener_ready = true;
        }
        if std::mem::take(&mut self.changed) {
            self.counters.open = self.conns.len() as u64;
            self.shared.publish(&self.counters);
        }
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, typically: the sweep tries again.
                    tracing::debug!(error = %e, "ICE-TCP accept failed");
                    self.listener_ready = false;
                    return;
                }
            };
            self.changed = true;
            let peer = canonical(peer);
            let unidentified_here = self
                .conns
                .iter()
                .filter(|(_, c)| !c.identified && c.peer.ip() == peer.ip())
                .count();
            if self.conns.len() >= self.max_connections
                || unidentified_here >= MAX_UNIDENTIFIED_PER_IP
                || self.by_peer.contains_key(&peer)
            {
                self.counters.refused += 1;
                continue;
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let token = Token(FIRST_CONNECTION + key);
            if let Err(e) =
                self.registry
                    .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                tracing::debug!(error = %e, "cannot poll an ICE-TCP connection");
                self.counters.refused += 1;
                continue;
            }
            // Media is latency-bound: no Nagle delay on small frames.
            let _ = stream.set_nodelay(true);
            entry.insert(Conn {
                stream,
                peer,
                read_buf: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
                read_len: 0,
                write_buf: Vec::new(),
                readable: true,
                dirty: false,
                identified: false,
                opened: now,
                last_frame: now,
            });
            self.by_peer.insert(peer, key);
            self.ready.push(key);
            self.counters.accepted += 1;
        }
        // Work cap reached: `listener_ready` stays set.
    }

    fn close(&mut self, key: usize, why: Close) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        if self.by_peer.get(&conn.peer) == Some(&key) {
            self.by_peer.remove(&conn.peer);
        }
        let _ = self.registry.deregister(&mut conn.stream);
        self.changed = true;
        self.counters.closed += 1;
        match why {
            Close::Gone => {}
            Close::Protocol => self.counters.protocol_errors += 1,
            Close::Write => self.counters.write_errors += 1,
            Close::TimedOut => self.counters.timed_out += 1,
        }
        tracing::debug!(peer = %conn.peer, identified = conn.identified, "ICE-TCP connection closed");
    }
}

/// Read what `conn` has (within the per-turn cap) and deliver its complete frames.
fn read(
    conn: &mut Conn,
    now: Instant,
    counters: &mut IceTcpCounters,
    deliver: &mut impl FnMut(SocketAddr, &[u8]),
) -> Result<(), Close> {
    for _ in 0..MAX_READS_PER_TURN {
        let n = match conn.stream.read(&mut conn.read_buf[conn.read_len..]) {
            Ok(0) => return Err(Close::Gone),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.readable = false;
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Close::Gone),
        };
        conn.read_len += n;
        let mut start = 0;
        loop {
            match framing::next_frame(&conn.read_buf[start..conn.read_len], MAX_FRAME_BYTES) {
                Ok(Some((frame, used))) => {
                    if !conn.identified && classify(frame) != PacketClass::Stun {
                        return Err(Close::Protocol);
                    }
                    counters.frames_in += 1;
                    conn.last_frame = now;
                    deliver(conn.peer, frame);
                    start += used;
                }
                Ok(None) => break,
                Err(_) => return Err(Close::Protocol),
            }
        }
        // What is left is less than one frame, which fits the buffer
        // (READ_BUFFER_BYTES > HEADER_BYTES + MAX_FRAME_BYTES): there is room to read more.
        conn.read_buf.copy_within(start..conn.read_len, 0);
        conn.read_len -= start;
    }
    // Cap reached: `readable` stays set and the connection is read again next turn.
    Ok(())
}

/// Write `conn`'s queue until it is empty or the socket would block.
fn write(conn: &mut Conn) -> Result<(), Close> {
    while !conn.write_buf.is_empty() {
        match conn.stream.write(&conn.write_buf) {
            Ok(0) => return Err(Close::Write),
            Ok(n) => {
                conn.write_buf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Close::Write),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A STUN binding request header with no attributes: classified as STUN.
    fn stun() -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[7; 12]);
        m
    }

    fn framed(datagram: &[u8]) -> Vec<u8> {
        let mut out = framing::header(datagram, MAX_FRAME_BYTES).unwrap().to_vec();
        out.extend_from_slice(datagram);
        out
    }

    struct Rig {
        poll: mio::Poll,
        events: mio::Events,
        tcp: IceTcp,
        addr: SocketAddr,
        got: Vec<(SocketAddr, Vec<u8>)>,
    }

    impl Rig {
        fn new(max_connections: usize) -> Rig {
            let poll = mio::Poll::new().unwrap();
            let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let registry = poll.registry().try_clone().unwrap();
            let tcp = IceTcp::new(
                listener,
                registry,
                max_connections,
                Arc::default(),
                Instant::now(),
            )
            .unwrap();
            Rig {
                poll,
                events: mio::Events::with_capacity(64),
                tcp,
                addr,
                got: Vec::new(),
            }
        }

        /// One worker turn's worth of ICE-TCP work.
        fn turn(&mut self, now: Instant) {
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(20)))
                .unwrap();
            for e in self.events.iter() {
                self.tcp
                    .ready_event(e.token(), e.is_readable(), e.is_writable());
            }
            let got = &mut self.got;
            self.tcp
                .receive(now, |from, frame| got.push((from, frame.to_vec())));
            self.tcp.flush();
            self.tcp.housekeeping(now);
        }

        /// Turn until `done` holds (at most 10 s: only reached when something is broken).
        fn until(&mut self, mut done: impl FnMut(&Rig) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done(self) {
                assert!(Instant::now() < deadline, "{:?}", self.tcp.counters);
                self.turn(Instant::now());
            }
        }
    }

    fn client(addr: SocketAddr) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    #[test]
    fn frames_split_anywhere_arrive_whole_and_replies_are_framed() {
        let mut rig = Rig::new(4);
        let mut c = client(rig.addr);
        let me = c.local_addr().unwrap();
        let mut stream = framed(&stun());
        stream.extend(framed(&stun()));
        // One byte at a time: the reader reassembles frames across reads.
        for b in &stream {
            c.write_all(&[*b]).unwrap();
        }
        rig.until(|r| r.got.len() == 2);
        assert!(rig.got.iter().all(|(from, d)| *from == me && *d == stun()));

        rig.tcp.queue(me, b"hello");
        rig.tcp.queue("127.0.0.1:9".parse().unwrap(), b"nobody");
        rig.turn(Instant::now());
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"\x00\x05hello");
        let n = rig.tcp.counters;
        assert_eq!((n.frames_in, n.frames_out, n.write_dropped), (2, 1, 1));
        // Identified by the reply, the connection may now carry more than STUN.
        c.write_all(&framed(&[0x80; 40])).unwrap();
        rig.until(|r| r.got.len() == 3);
        assert_eq!(rig.tcp.counters.closed, 0);
        assert_eq!(rig.tcp.shared.snapshot().open, 1);
    }

    #[test]
    fn bad_frames_close_the_connection() {
        let mut rig = Rig::new(8);
        // Larger than the cap, announced in the header.
        let mut big = client(rig.addr);
        big.write_all(&[0x05, 0xdd]).unwrap();
        // Empty.
        let mut empty = client(rig.addr);
        empty.write_all(&[0, 0]).unwrap();
        // Not STUN before the connection is identified.
        let mut rtp = client(rig.addr);
        rtp.write_all(&framed(&[0x80; 40])).unwrap();
        rig.until(|r| r.tcp.counters.protocol_errors == 3);
        for mut c in [big, empty, rtp] {
            let mut buf = [0u8; 1];
            // Closed by the server: end of stream (or a reset).
            assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
        }
        assert!(rig.got.is_empty());
        assert_eq!(rig.tcp.conns.len(), 0);
    }

    #[test]
    fn connections_past_the_caps_are_refused() {
        let mut rig = Rig::new(2);
        let _a = client(rig.addr);
        let _b = client(rig.addr);
        let _c = client(rig.addr);
        rig.until(|r| r.tcp.counters.accepted + r.tcp.counters.refused == 3);
        assert_eq!(rig.tcp.counters.refused, 1);
        assert_eq!(rig.tcp.conns.len(), 2);

        let mut rig = Rig::new(64);
        let clients: Vec<_> = (0..MAX_UNIDENTIFIED_PER_IP + 2)
            .map(|_| client(rig.addr))
            .collect();
        rig.until(|r| r.tcp.counters.accepted + r.tcp.counters.refused == clients.len() as u64);
        assert_eq!(
            rig.tcp.counters.refused, 2,
            "per-IP cap on unidentified connections"
        );
    }

    #[test]
    fn unidentified_and_idle_connections_time_out() {
        let mut rig = Rig::new(4);
        let mut quiet = client(rig.addr);
        let mut talker = client(rig.addr);
        let talker_addr = talker.local_addr().unwrap();
        talker.write_all(&framed(&stun())).unwrap();
        rig.until(|r| r.got.len() == 1);
        rig.tcp.queue(talker_addr, b"ok");
        let start = Instant::now();
        rig.turn(start);
        // Virtual time past the unidentified timeout: only the quiet one goes.
        rig.turn(start + UNIDENTIFIED_TIMEOUT + SWEEP_INTERVAL);
        assert_eq!(rig.tcp.counters.timed_out, 1);
        let mut buf = [0u8; 8];
        assert!(matches!(quiet.read(&mut buf), Ok(0) | Err(_)));
        // Past the idle timeout the identified one goes too.
        rig.turn(start + IDLE_TIMEOUT + SWEEP_INTERVAL * 2);
        assert_eq!(rig.tcp.counters.timed_out, 2);
        assert_eq!(rig.tcp.conns.len(), 0);
    }

    #[test]
    fn a_full_write_queue_drops_frames() {
        let mut rig = Rig::new(4);
        let mut c = client(rig.addr);
        let me = c.local_addr().unwrap();
        c.write_all(&framed(&stun())).unwrap();
        rig.until(|r| r.got.len() == 1);
        // The client reads nothing: the kernel buffers fill, then the queue, then drops.
        let frame = [0u8; MAX_FRAME_BYTES];
        for _ in 0..10_000 {
            rig.tcp.queue(me, &frame);
            rig.tcp.flush();
            if rig.tcp.counters.write_dropped > 0 {
                break;
            }
        }
        assert!(rig.tcp.counters.write_dropped > 0);
        let conn = &rig.tcp.conns[rig.tcp.by_peer[&me]];
        assert!(conn.write_buf.len() <= MAX_WRITE_QUEUE_BYTES);
        // A frame too large to frame is dropped as well.
        let before = rig.tcp.counters.write_dropped;
        rig.tcp.queue(me, &[0; MAX_FRAME_BYTES + 1]);
        assert_eq!(rig.tcp.counters.write_dropped, before + 1);
        assert_eq!(rig.tcp.counters.closed, 0);
    }
}
