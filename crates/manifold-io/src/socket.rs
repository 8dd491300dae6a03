//! One worker's UDP socket: binding and buffer sizing, batched receive (recvmmsg, GRO) and
//! send (GSO), with address families normalised so the shard sees plain IPv4 peers.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use crate::IoError;

/// Socket buffer size asked of the kernel for both directions: a few hundred milliseconds
/// of a busy worker's traffic, so a scheduling hiccup does not turn into loss.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Size of one receive slot. A slot holds one datagram, or with GRO several coalesced
/// segments of one flow, which the kernel caps at 64 KiB.
pub(crate) const RECV_SLOT_BYTES: usize = 1 << 16;

/// Datagrams received (or sent) per system call at most.
pub(crate) const BATCH: usize = quinn_udp::BATCH_SIZE;

/// A worker's bound, non-blocking UDP socket.
pub(crate) struct MediaSocket {
    socket: mio::net::UdpSocket,
    state: UdpSocketState,
    local_addr: SocketAddr,
}

impl MediaSocket {
    /// Create, size and bind a socket on `addr`. Buffer sizes are best effort: when the
    /// kernel grants less (Linux caps them at `net.core.{r,w}mem_max`) it is logged.
    pub fn bind(addr: SocketAddr) -> Result<MediaSocket, IoError> {
        let fail = |source| IoError::Bind { addr, source };
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(fail)?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            // Serve IPv4 clients too on `[::]`; not every system allows it.
            if let Err(e) = socket.set_only_v6(false) {
                tracing::info!(%addr, error = %e, "socket stays IPv6-only");
            }
        }
        socket.bind(&addr.into()).map_err(fail)?;
        size_buffers(&socket);
        // Sets non-blocking mode, and enables GRO, packet info and no-fragmentation where
        // the platform has them.
        let state = UdpSocketState::new(UdpSockRef::from(&socket)).map_err(fail)?;
        let local_addr = socket
            .local_addr()
            .map_err(fail)?
            .as_socket()
            .ok_or_else(|| fail(io::Error::other("bound socket has no IP address")))?;
        // Ask once for a receive timestamp: the kernel stamps datagrams from then on (a
        // moment later), for `last_datagram_age`.
        let _ = last_receive_stamp(socket.as_raw_fd());
        let socket = mio::net::UdpSocket::from_std(socket.into());
        tracing::debug!(
            %local_addr,
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "media socket bound"
        );
        Ok(MediaSocket {
            socket,
            state,
            local_addr,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The socket, for registering with a `mio::Poll`.
    pub fn source(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.socket
    }

    /// Most datagrams one send may carry as GSO segments (1 without GSO). May drop to 1
    /// at run time when the network device turns out not to support it.
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Receive up to `bufs.len()` buffers in one system call. Each filled buffer may hold
    /// several datagrams of `meta.stride` bytes (GRO). `meta.addr` is normalised with
    /// [`canonical`].
    pub fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = self
            .state
            .recv(UdpSockRef::from(&self.socket), bufs, meta)?;
        for m in &mut meta[..n] {
            m.addr = canonical(m.addr);
        }
        Ok(n)
    }

    /// Send `contents` to `destination` in one system call; with `segment_size` as GSO
    /// segments of that size (the last one may be shorter). Errors are returned as they
    /// are, `WouldBlock` included.
    pub fn send(
        &self,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: self.reachable(destination),
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        self.state
            .try_send(UdpSockRef::from(&self.socket), &transmit)
    }

    /// How long the datagram the last receive returned last waited in the kernel: now
    /// minus its arrival time, which the kernel stamps on every datagram once a socket asked
    /// (`SIOCGSTAMPNS`; the first call turns the stamping on and finds none yet). quinn-udp
    /// hands over no receive timestamps, so this asks separately, one `ioctl`; the worker
    /// calls it only when it may be behind. `None` where the platform gives none.
    pub fn last_datagram_age(&self) -> Option<Duration> {
        let stamp = last_receive_stamp(self.socket.as_raw_fd())?;
        SystemTime::now().duration_since(stamp).ok()
    }

    /// An IPv6 socket reaches IPv4 peers through their v4-mapped address.
    fn reachable(&self, destination: SocketAddr) -> SocketAddr {
        match (self.local_addr, destination) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => destination,
        }
    }
}

/// A peer address as the shard should see it: an IPv4 client reaching a dual-stack socket
/// shows up as `::ffff:a.b.c.d`, but its ICE candidates name `a.b.c.d`.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => SocketAddr::new(v6.ip().to_canonical(), v6.port()),
        v4 => v4,
    }
}

fn size_buffers(socket: &Socket) {
    let recv = socket
        .set_recv_buffer_size(SOCKET_BUFFER_BYTES)
        .and_then(|()| socket.recv_buffer_size());
    let send = socket
        .set_send_buffer_size(SOCKET_BUFFER_BYTES)
        .and_then(|()| socket.send_buffer_size());
    for (which, granted, sysctl) in [
        ("receive", recv, "net.core.rmem_max"),
        ("send", send, "net.core.wmem_max"),
    ] {
        match granted {
            // Linux reports twice what it grants (it counts its own overhead).
            Ok(n) if n >= SOCKET_BUFFER_BYTES => {}
            Ok(n) => tracing::info!(
                asked = SOCKET_BUFFER_BYTES,
                granted = n,
                "UDP {which} buffer is smaller than asked; raise {sysctl} to avoid loss under load"
            ),
            Err(e) => tracing::info!(error = %e, "cannot size the UDP {which} buffer"),
        }
    }
}

/// The kernel's arrival time of the last datagram read from `fd` (Linux: `SIOCGSTAMPNS`,
/// `CLOCK_REALTIME`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn last_receive_stamp(fd: std::os::fd::RawFd) -> Option<SystemTime> {
    /// `SIOCGSTAMPNS_OLD` of `linux/sockios.h`: a `struct timespec` with the native
    /// `time_t`, 64 bits on the 64-bit targets this runs on.
    const SIOCGSTAMPNS: libc::c_ulong = 0x8907;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the ioctl writes one `timespec` to the pointer given, which points at `ts`,
    // alive and writable for the call; `fd` is a socket this process owns. Any failure
    // (no datagram stamped yet, not a socket) is a -1 return, with nothing written.
    let r = unsafe { libc::ioctl(fd, SIOCGSTAMPNS as _, &mut ts as *mut libc::timespec) };
    if r != 0 || ts.tv_sec <= 0 {
        return None;
    }
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(ts.tv_sec as u64, nanos))
}

#[cfg(not(target_os = "linux"))]
fn last_receive_stamp(_fd: std::os::fd::RawFd) -> Option<SystemTime> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    #[test]
    fn v4_mapped_peers_are_shown_as_ipv4() {
        let mapped = SocketAddr::V6(SocketAddrV6::new(
            Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped(),
            5000,
            0,
            0,
        ));
        assert_eq!(canonical(mapped), "192.0.2.7:5000".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        let v4: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert_eq!(canonical(v4), v4);
    }

    #[test]
    fn binds_an_ephemeral_port_and_round_trips_a_batch() {
        let mut socket = MediaSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let local = socket.local_addr();
        assert_ne!(local.port(), 0);
        assert!(socket.max_gso_segments() >= 1);
        let _ = socket.source();

        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        // One GSO send when the platform has it, else two plain ones.
        let payload = [7u8; 300];
        if socket.max_gso_segments() > 1 {
            socket
                .send(peer.local_addr().unwrap(), &payload, Some(200))
                .unwrap();
        } else {
            socket
                .send(peer.local_addr().unwrap(), &payload[..200], None)
                .unwrap();
            socket
                .send(peer.local_addr().unwrap(), &payload[200..], None)
                .unwrap();
        }
        let mut buf = [0u8; 2048];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((n, from), (200, local));
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(n, 100);

        peer.send_to(b"hello", local).unwrap();
        let (n, meta, first) = receive(&socket);
        assert_eq!(n, 1);
        assert_eq!(meta.addr, peer.local_addr().unwrap());
        assert_eq!(first, b"hello");
    }

    /// One receive call that returns something (waiting up to 10 s for it): how many
    /// buffers it filled, and the first one's meta and bytes.
    fn receive(socket: &MediaSocket) -> (usize, RecvMeta, Vec<u8>) {
        let mut storage = vec![0u8; BATCH * 2048];
        let mut chunks = storage.chunks_mut(2048);
        let mut bufs: [IoSliceMut<'_>; BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let mut meta = [RecvMeta::default(); BATCH];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let n = loop {
            match socket.recv(&mut bufs, &mut meta) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "nothing received");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("recv: {e}"),
            }
        };
        (n, meta[0], bufs[0][..meta[0].len].to_vec())
    }

    #[test]
    fn an_ipv6_socket_maps_ipv4_destinations() {
        let Ok(socket) = MediaSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0))
        else {
            return; // No IPv6 on this machine.
        };
        let v4: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        assert_eq!(
            socket.reachable(v4),
            SocketAddr::new(
                IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped()),
                5000
            )
        );
    }

    #[test]
    fn a_port_in_use_is_a_bind_error() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        match MediaSocket::bind(addr) {
            Err(IoError::Bind { addr: a, .. }) => assert_eq!(a, addr),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("bound a port in use"),
        }
    }

    /// The kernel stamps datagrams once asked, and the age of the last one read is how long
    /// it sat in the receive queue: here, a datagram left unread for 150 ms.
    #[test]
    fn the_age_of_the_last_datagram_read_is_how_long_it_waited() {
        let socket = MediaSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let local = socket.local_addr();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // The first ask turns stamping on (the kernel does so a moment later).
        let _ = socket.last_datagram_age();
        std::thread::sleep(Duration::from_millis(100));
        peer.send_to(b"early", local).unwrap();
        assert_eq!(receive(&socket).2, b"early");
        let fresh = socket.last_datagram_age().expect("a stamp");
        peer.send_to(b"late", local).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(receive(&socket).2, b"late");
        let waited = socket.last_datagram_age().expect("a stamp");
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited > fresh, "{fresh:?} then {waited:?}");
    }
}
