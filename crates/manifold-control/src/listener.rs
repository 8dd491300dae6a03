//! The HTTP listener: accepts TCP connections and serves the router on them within bounds a
//! client cannot move. It owns:
//!
//! - the connection caps, in total and per client address (an IPv6 client is its /64), so
//!   that idle sockets can never exhaust the process's file descriptors; at the total cap
//!   the oldest connection with no request in flight is evicted to make room, and when
//!   there is none the newcomer is refused with a 503;
//! - the header-read timeout (a client trickling its request a byte at a time is cut off),
//!   and the idle timeout (a keep-alive connection that carries no request is closed);
//! - how much one connection may make the server buffer (request head size);
//! - with TLS (`tls.rs` holds the certificate), the handshake, bounded by the header-read
//!   timeout and counted against the caps like any connection, and the plain-HTTP client
//!   who knocks on the TLS port: answered with a plain-text 400 saying so, then closed.
//!
//! WebSocket connections leave HTTP once upgraded and count against the caps until they
//! close; the room protocol bounds them further (`rtc.rs`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::tls::Tls;

/// Bounds on the HTTP listener, with the defaults documented in the README.
#[derive(Clone, Debug)]
pub struct ListenerLimits {
    /// Open connections (HTTP and WebSocket) in total.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// A request's head (request line and headers) must arrive within this.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    pub idle_timeout: Duration,
    /// Largest request head, in bytes (larger: 431).
    pub max_header_bytes: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 4096,
            max_connections_per_ip: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Connections admitted over the cap while the idle ones evicted for them are still
/// closing. The process's descriptor reserve must cover it.
pub const EVICTION_SLACK: usize = 16;

/// How many 5 ms waits a newcomer at the cap gets for evicted connections to close.
const EVICTION_WAIT_STEPS: usize = 40;

/// What the listener turned away or cut off, for `/stats`.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Connections served.
    pub accepted: AtomicU64,
    /// Refused: the total cap was reached and no connection could be evicted.
    pub refused_total: AtomicU64,
    /// Refused: the client's address had its share.
    pub refused_per_ip: AtomicU64,
    /// Idle connections closed to make room for a newcomer at the total cap.
    pub evicted: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_closed: AtomicU64,
    /// `accept` failures (for example: out of file descriptors).
    pub accept_errors: AtomicU64,
    /// TLS port: plain HTTP (or anything not a TLS handshake) answered with a 400.
    pub tls_plain_http: AtomicU64,
    /// TLS port: handshakes that failed (bad hello, no shared cipher, client refused us).
    pub tls_handshake_failed: AtomicU64,
    /// TLS port: handshakes not done within the header-read timeout.
    pub tls_handshake_timeout: AtomicU64,
}

impl ListenerCounters {
    /// A JSON snapshot.
    pub fn snapshot(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "accepted": get(&self.accepted),
            "refused_total": get(&self.refused_total),
            "refused_per_ip": get(&self.refused_per_ip),
            "evicted": get(&self.evicted),
            "idle_closed": get(&self.idle_closed),
            "accept_errors": get(&self.accept_errors),
            "tls_plain_http": get(&self.tls_plain_http),
            "tls_handshake_failed": get(&self.tls_handshake_failed),
            "tls_handshake_timeout": get(&self.tls_handshake_timeout),
        })
    }
}

/// Serve `router` on `listener` (over TLS with `tls`) until `shutdown` completes, then let
/// the connections finish what they carry (idle ones close at once).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    counters: Arc<ListenerCounters>,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let table = Arc::new(Table::new(limits.clone(), counters.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut error_log = Instant::now() - Duration::from_secs(60);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if error_log.elapsed() >= Duration::from_secs(5) {
                        error_log = Instant::now();
                        tracing::warn!(error = %e, "accept failed");
                    }
                    // Out of descriptors (or a like condition): the connection waits in
                    // the backlog; trying again at once would only spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut admitted = table.admit(peer.ip());
        // Evicted connections are still closing: give them a moment rather than turn a
        // newcomer away while idle ones are on their way out.
        for _ in 0..EVICTION_WAIT_STEPS {
            if admitted.as_ref().err() != Some(&Refusal::Wait) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            admitted = table.admit(peer.ip());
        }
        let conn = match admitted {
            Ok(c) => c,
            Err(why) => {
                if why == Refusal::Wait {
                    counters.refused_total.fetch_add(1, Ordering::Relaxed);
                }
                refuse(stream, why);
                continue;
            }
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            peer,
            conn,
            router.clone(),
            limits.clone(),
            counters.clone(),
            tls.clone(),
            stop_rx.clone(),
        ));
    }
    let _ = stop_tx.send(true);
    // Give requests in flight a moment, as `axum::serve` does with graceful shutdown.
    let deadline = Instant::now() + Duration::from_secs(5);
    while table.http_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Why a connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// At the total cap with nothing idle to evict.
    Total,
    /// At the total cap, with evicted connections still closing.
    Wait,
    /// The client's address has its share.
    PerIp,
}

/// Answer a refused connection with a short 503 (best effort: it is not read from), then
/// close it.
fn refuse(stream: TcpStream, why: Refusal) {
    let body = match why {
        Refusal::Total | Refusal::Wait => {
            r#"{"error":"unavailable","message":"the server has too many open connections"}"#
        }
        Refusal::PerIp => {
            r#"{"error":"unavailable","message":"too many open connections from your address"}"#
        }
    };
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: ConnGuard,
    router: Router,
    limits: ListenerLimits,
    counters: Arc<ListenerCounters>,
    tls: Option<Tls>,
    stop: watch::Receiver<bool>,
) {
    let state = conn.state.clone();
    let Some(tls) = tls else {
        let io = Tracked {
            stream,
            conn,
            epoch: state.epoch,
        };
        serve_http(io, peer, state, router, limits, counters, stop).await;
        return;
    };
    // The handshake (and the wait for its first byte) gets the header-read timeout: a
    // client trickling its hello is cut off as one trickling its headers would be. Its
    // connection holds its place under the caps all along, and may be evicted meanwhile.
    let handshake = async {
        if !speaks_tls(&stream).await? {
            return Ok(None);
        }
        let io = Tracked {
            stream,
            conn,
            epoch: state.epoch,
        };
        tls.acceptor().accept(io).await.map(Some)
    };
    let accepted = tokio::select! {
        r = tokio::time::timeout(limits.header_read_timeout, handshake) => r,
        () = state.evict.notified() => return,
    };
    let io = match accepted {
        Ok(Ok(Some(io))) => io,
        Ok(Ok(None)) => {
            // `speaks_tls` answered it.
            counters.tls_plain_http.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Ok(Err(e)) => {
            counters
                .tls_handshake_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            counters
                .tls_handshake_timeout
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "tls handshake timed out");
            return;
        }
    };
    serve_http(io, peer, state, router, limits, counters, stop).await;
}

/// The record type every TLS connection opens with (a handshake record: ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain-HTTP client on the TLS port is told, before the connection closes.
const PLAIN_HTTP_ON_TLS_PORT: &str =
    "this port speaks HTTPS: use https:// (and wss:// for WebSockets)\n";

/// Whether the client's first byte opens a TLS handshake. If it does not (a plain-HTTP
/// request, say), the client is answered with a plain-text 400 saying this port speaks
/// HTTPS, and `false` returned; the caller closes the connection.
async fn speaks_tls(stream: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        return Ok(true);
    }
    // Take what the client sent so far (bounded), so that closing with unread bytes does
    // not reset the connection before the client reads the answer.
    let mut sink = [0u8; 4096];
    let _ = stream.try_read(&mut sink);
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{PLAIN_HTTP_ON_TLS_PORT}",
        PLAIN_HTTP_ON_TLS_PORT.len()
    );
    let mut written = 0;
    while written < response.len() {
        stream.writable().await?;
        match stream.try_write(&response.as_bytes()[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Serve HTTP/1.1 (and upgrades) on `io` until the client, the idle timeout, an eviction
/// or the shutdown ends it.
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    state: Arc<ConnState>,
    router: Router,
    limits: ListenerLimits,
    counters: Arc<ListenerCounters>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let service = Service {
        router,
        conn: state.clone(),
        peer,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(100)
        .keep_alive(true);
    let served = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(served);
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "http connection ended");
                }
                break;
            }
            () = state.evict.notified() => {
                tracing::debug!("idle connection evicted to make room");
                break;
            }
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    served.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep(tick) => {
                if state.is_idle() && state.quiet_for() >= limits.idle_timeout {
                    counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    state.http_done.store(true, Ordering::Relaxed);
}

/// The router as a hyper service, keeping count of requests in flight on its connection
/// and noting when the connection leaves HTTP (a WebSocket upgrade).
#[derive(Clone)]
struct Service {
    router: Router,
    conn: Arc<ConnState>,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        use tower::Service as _;
        let busy = Busy::new(self.conn.clone());
        let mut router = self.router.clone();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ClientAddr(self.peer));
        Box::pin(async move {
            let response = router.call(req).await;
            if let Ok(r) = &response
                && r.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                busy.0.upgraded.store(true, Ordering::Relaxed);
            }
            drop(busy);
            response
        })
    }
}

/// A request in flight on a connection.
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(conn: Arc<ConnState>) -> Self {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        conn.touch();
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The address a request came from, as the listener accepted it (the router reads it from
/// the request's extensions; requests that did not come through the listener, in unit
/// tests, have none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl ClientAddr {
    /// The key per-address limits count by (IPv6: the /64).
    pub fn key(&self) -> IpAddr {
        ip_key(self.0.ip())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Infallible> {
        // Without the listener (tests calling the router directly), the unspecified
        // address: one shared bucket.
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(SocketAddr::from(([0, 0, 0, 0], 0)))))
    }
}

/// What the listener knows of one open connection.
struct ConnState {
    /// Requests in flight.
    busy: AtomicU32,
    /// Upgraded to a WebSocket: never idle by HTTP's measure.
    upgraded: AtomicBool,
    /// Its HTTP task has ended (the socket may live on as a WebSocket).
    http_done: AtomicBool,
    /// Milliseconds since `epoch` of the last byte read or written.
    last_activity: AtomicU64,
    epoch: Instant,
    opened: Instant,
    /// Told to close (evicted at the cap).
    evict: Notify,
}

impl ConnState {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_activity.store(ms, Ordering::Relaxed);
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0 && !self.upgraded.load(Ordering::Relaxed)
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// A client address as the per-address cap counts it: IPv4 as is, IPv6 by its /64 (one
/// host usually holds a whole /64, and could otherwise take a new address per connection).
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Every open connection, by id, with counts per client address.
struct Table {
    limits: ListenerLimits,
    counters: Arc<ListenerCounters>,
    epoch: Instant,
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    next_id: u64,
    conns: HashMap<u64, Arc<ConnState>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// A connection's place in the table, released when its socket closes (it lives inside
/// the socket's I/O wrapper, so an upgraded WebSocket keeps it).
struct ConnGuard {
    table: Arc<Table>,
    id: u64,
    ip: IpAddr,
    state: Arc<ConnState>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        t.conns.remove(&self.id);
        if let Some(n) = t.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Table {
    fn new(limits: ListenerLimits, counters: Arc<ListenerCounters>) -> Self {
        Table {
            limits,
            counters,
            epoch: Instant::now(),
            inner: Mutex::new(TableInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        // Every update is a few map operations that cannot panic halfway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections still speaking HTTP (not upgraded, task not ended).
    fn http_connections(&self) -> usize {
        self.lock()
            .conns
            .values()
            .filter(|c| !c.http_done.load(Ordering::Relaxed) && !c.upgraded.load(Ordering::Relaxed))
            .count()
    }

    /// A place for a new connection from `ip`, or why there is none.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Refusal> {
        let key = ip_key(ip);
        let mut t = self.lock();
        if t.per_ip.get(&key).copied().unwrap_or(0) >= self.limits.max_connections_per_ip {
            self.counters.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerIp);
        }
        if t.conns.len() >= self.limits.max_connections {
            // Make room: the oldest connection carrying nothing goes. It closes on its own
            // task shortly; until then the count is over the cap by one per eviction in
            // flight, at most EVICTION_SLACK, which the descriptor reserve covers.
            let over = t.conns.len() - self.limits.max_connections;
            if over >= EVICTION_SLACK {
                return Err(Refusal::Wait);
            }
            let victim = t
                .conns
                .values()
                .filter(|c| c.is_idle() && !c.http_done.load(Ordering::Relaxed))
                .min_by_key(|c| c.opened)
                .cloned();
            match victim {
                Some(v) => {
                    // Not idle any more as far as the next eviction is concerned.
                    v.http_done.store(true, Ordering::Relaxed);
                    v.evict.notify_one();
                    self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.counters.refused_total.fetch_add(1, Ordering::Relaxed);
                    return Err(Refusal::Total);
                }
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let now = Instant::now();
        let state = Arc::new(ConnState {
            busy: AtomicU32::new(0),
            upgraded: AtomicBool::new(false),
            http_done: AtomicBool::new(false),
            last_activity: AtomicU64::new(now.duration_since(self.epoch).as_millis() as u64),
            epoch: self.epoch,
            opened: now,
            evict: Notify::new(),
        });
        t.conns.insert(id, state.clone());
        *t.per_ip.entry(key).or_insert(0) += 1;
        Ok(ConnGuard {
            table: self.clone(),
            id,
            ip: key,
            state,
        })
    }
}

/// The socket, noting when bytes move, and holding the connection's place in the table.
struct Tracked {
    stream: TcpStream,
    conn: ConnGuard,
    epoch: Instant,
}

impl Tracked {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.conn.state.last_activity.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(total: usize, per_ip: usize) -> Arc<Table> {
        Arc::new(Table::new(
            ListenerLimits {
                max_connections: total,
                max_connections_per_ip: per_ip,
                ..Default::default()
            },
            Arc::new(ListenerCounters::default()),
        ))
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ip_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn per_ip_cap_refuses_and_releases() {
        let t = table(100, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = t.admit(ip).unwrap();
        let _b = t.admit(ip).unwrap();
        assert_eq!(t.admit(ip).err(), Some(Refusal::PerIp));
        assert!(t.admit("10.0.0.2".parse().unwrap()).is_ok());
        drop(a);
        assert!(t.admit(ip).is_ok());
        assert_eq!(t.counters.refused_per_ip.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn at_the_total_cap_the_oldest_idle_connection_is_evicted() {
        let t = table(2, 10);
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let old = t.admit(ip(1)).unwrap();
        let busy = t.admit(ip(2)).unwrap();
        busy.state.busy.fetch_add(1, Ordering::Relaxed);
        // The idle one is asked to go, the newcomer admitted.
        let new = t.admit(ip(3)).unwrap();
        assert!(old.state.http_done.load(Ordering::Relaxed));
        assert_eq!(t.counters.evicted.load(Ordering::Relaxed), 1);
        // Nothing else idle (the evicted one is on its way out, the others busy or
        // upgraded): refused.
        new.state.upgraded.store(true, Ordering::Relaxed);
        assert_eq!(t.admit(ip(4)).err(), Some(Refusal::Total));
        assert_eq!(t.counters.refused_total.load(Ordering::Relaxed), 1);
        drop(old);
        drop(busy);
        assert!(t.admit(ip(4)).is_ok());
    }
}
