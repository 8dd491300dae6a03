//! The physical floor of forwarding on this machine, measured beside the servers: a small
//! program doing only what any SFU must do per forwarded packet, with the same system calls
//! Manifold's I/O layer uses (quinn-udp: `recvmmsg` with GRO in, `sendmsg` out, with or
//! without GSO), and nothing else.
//!
//! A feeder thread sends RTP-sized datagrams in frame bursts to the floor's socket; the
//! floor thread receives them in batches and, for each packet and each of N subscribers,
//! copies it into that subscriber's buffer, rewrites the 12-byte RTP header (sequence
//! number, timestamp, SSRC) and seals the payload with AES-128-GCM under the subscriber's
//! own key (SRTP's AEAD transform: header as associated data, 16-byte tag), then sends:
//! one `sendmsg` per packet (`Send::PerPacket`), or one per subscriber per receive batch
//! with its packets as GSO segments (`Send::Gso`). Sink sockets on other threads drain.
//! The figure is the floor thread's own CPU time (`/proc/thread-self/schedstat`, in
//! nanoseconds) per forwarded packet: loopback delivery runs in the sender's context, so
//! it is in the figure as it is in a server's.
//!
//! Manifold's send layer has no `sendmmsg` (quinn-udp sends one `sendmsg` per transmit),
//! so neither has the floor: its per-packet figure is what batching by GSO starts from.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use serde::Serialize;

/// How the floor sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Send {
    /// One `sendmsg` per forwarded packet.
    PerPacket,
    /// One `sendmsg` per subscriber per receive batch, its packets as GSO segments.
    Gso,
}

impl Send {
    pub fn label(self) -> &'static str {
        match self {
            Send::PerPacket => "floor (sendmsg)",
            Send::Gso => "floor (GSO)",
        }
    }
}

/// One floor measurement.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Bytes of each datagram in (RTP header included); out is 16 more (the tag).
    pub packet_bytes: usize,
    /// Subscribers each packet goes to.
    pub fanout: usize,
    /// Packets per burst (a video frame; 1 for audio).
    pub burst: usize,
    /// Packets the feeder sends in all.
    pub packets: usize,
    pub send: Send,
}

/// What it measured.
#[derive(Clone, Debug, Serialize)]
pub struct FloorResult {
    pub send: Send,
    pub packet_bytes: usize,
    pub fanout: usize,
    pub received: u64,
    pub forwarded: u64,
    pub send_calls: u64,
    pub send_errors: u64,
    /// Segments one send could carry (1: the kernel offers no GSO here).
    pub gso_segments: usize,
    pub cpu_s: f64,
    pub wall_s: f64,
    pub cpu_us_per_packet: f64,
}

/// Sink sockets at most; subscriber `i` sends to sink `i % SINKS` (the kernel's work per
/// datagram does not depend on how many sockets receive them).
const SINKS: usize = 32;
/// Forwarded packets per second the feeder aims at: well below one core's floor, so the
/// floor thread never falls behind and the figure is cost, not queueing.
const TARGET_OUT_PPS: usize = 150_000;
const RTP_HEADER: usize = 12;
/// Bytes the AEAD tag adds to each forwarded packet.
pub const TAG: usize = 16;

/// This thread's CPU time so far, in seconds (Linux scheduler statistics, nanoseconds).
pub fn thread_cpu_s() -> io::Result<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable /proc/thread-self/schedstat"))?;
    Ok(ns as f64 / 1e9)
}

/// Run one measurement (a few seconds at most).
pub fn measure(spec: Spec) -> io::Result<FloorResult> {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let floor = UdpSocket::bind(loopback)?;
    let state = UdpSocketState::new(UdpSockRef::from(&floor))?;
    let sock = socket2::SockRef::from(&floor);
    let _ = sock.set_recv_buffer_size(8 << 20);
    let _ = sock.set_send_buffer_size(8 << 20);
    // Non-blocking (quinn-udp's recvmmsg would otherwise wait for a whole batch), woken by
    // mio as the media workers are.
    floor.set_nonblocking(true)?;
    let floor_addr = floor.local_addr()?;

    let sinks: Vec<UdpSocket> = (0..spec.fanout.clamp(1, SINKS))
        .map(|_| {
            let s = UdpSocket::bind(loopback)?;
            let _ = socket2::SockRef::from(&s).set_recv_buffer_size(8 << 20);
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        })
        .collect::<io::Result<_>>()?;
    let sink_addrs: Vec<SocketAddr> = sinks
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<io::Result<_>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let drains: Vec<_> = sinks
        .into_iter()
        .map(|s| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while !stop.load(Ordering::Relaxed) {
                    let _ = s.recv(&mut buf);
                }
            })
        })
        .collect();

    // The feeder: bursts at a pace that keeps the output near TARGET_OUT_PPS.
    let feeder = {
        std::thread::spawn(move || -> io::Result<()> {
            let s = UdpSocket::bind(loopback)?;
            let mut packet = vec![0u8; spec.packet_bytes.max(RTP_HEADER + 1)];
            packet[0] = 0x80;
            packet[1] = 96;
            let bursts_per_s = (TARGET_OUT_PPS / (spec.fanout.max(1) * spec.burst.max(1))).max(1);
            let interval = Duration::from_secs(1) / bursts_per_s.min(2_000) as u32;
            let mut next = Instant::now();
            let mut seq: u16 = 0;
            let mut sent = 0;
            while sent < spec.packets {
                for _ in 0..spec.burst.max(1) {
                    packet[2..4].copy_from_slice(&seq.to_be_bytes());
                    seq = seq.wrapping_add(1);
                    s.send_to(&packet, floor_addr)?;
                    sent += 1;
                }
                next += interval;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(())
        })
    };

    let result = forward(floor, &state, &sink_addrs, spec);
    stop.store(true, Ordering::Relaxed);
    for d in drains {
        let _ = d.join();
    }
    feeder
        .join()
        .map_err(|_| io::Error::other("feeder panicked"))??;
    result
}

/// Per subscriber: its key, header state and pending output.
struct Subscriber {
    key: LessSafeKey,
    salt: [u8; 12],
    ssrc: u32,
    seq: u16,
    ts_offset: u32,
    dest: SocketAddr,
    out: Vec<u8>,
    segments: usize,
}

fn forward(
    floor: UdpSocket,
    state: &UdpSocketState,
    sinks: &[SocketAddr],
    spec: Spec,
) -> io::Result<FloorResult> {
    let out_bytes = spec.packet_bytes + TAG;
    let max_segments = match spec.send {
        Send::PerPacket => 1,
        Send::Gso => state.max_gso_segments().clamp(1, 64),
    };
    let mut subs: Vec<Subscriber> = (0..spec.fanout)
        .map(|i| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let unbound = UnboundKey::new(&AES_128_GCM, &key)
                .map_err(|_| io::Error::other("AES-128-GCM key"))?;
            Ok(Subscriber {
                key: LessSafeKey::new(unbound),
                salt: [i as u8; 12],
                ssrc: 0x1000_0000 + i as u32,
                seq: (i as u16).wrapping_mul(7),
                ts_offset: (i as u32).wrapping_mul(90_000),
                dest: sinks[i % sinks.len()],
                out: Vec::with_capacity(out_bytes * max_segments),
                segments: 0,
            })
        })
        .collect::<io::Result<_>>()?;

    let mut floor = mio::net::UdpSocket::from_std(floor);
    let mut poll = mio::Poll::new()?;
    poll.registry()
        .register(&mut floor, mio::Token(0), mio::Interest::READABLE)?;
    let mut events = mio::Events::with_capacity(4);
    let floor = &floor;
    let batch = quinn_udp::BATCH_SIZE;
    let mut storage = vec![vec![0u8; 1 << 16]; batch];
    let mut meta = vec![RecvMeta::default(); batch];
    let (mut received, mut forwarded, mut calls, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut started: Option<(Instant, f64)> = None;
    let mut idle_since = Instant::now();
    while (received as usize) < spec.packets {
        let n = {
            let mut bufs: Vec<IoSliceMut<'_>> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match state.recv(UdpSockRef::from(floor), &mut bufs, &mut meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The feeder is done and some datagrams were lost: stop after a while.
                    if idle_since.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                    poll.poll(&mut events, Some(Duration::from_millis(200)))?;
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        idle_since = Instant::now();
        if started.is_none() {
            started = Some((Instant::now(), thread_cpu_s()?));
        }
        for (buf, m) in storage.iter().zip(&meta).take(n) {
            let stride = m.stride.max(1);
            for packet in buf[..m.len].chunks(stride) {
                if packet.len() < RTP_HEADER {
                    continue;
                }
                received += 1;
                for s in subs.iter_mut() {
                    rewrite_and_seal(s, packet)?;
                    if s.segments == max_segments {
                        flush(state, floor, s, out_bytes, &mut calls, &mut errors);
                    }
                    forwarded += 1;
                }
            }
        }
        for s in subs.iter_mut() {
            flush(state, floor, s, out_bytes, &mut calls, &mut errors);
        }
    }
    let (t0, cpu0) = started.ok_or_else(|| io::Error::other("the floor received nothing"))?;
    let cpu_s = thread_cpu_s()? - cpu0;
    Ok(FloorResult {
        send: spec.send,
        packet_bytes: spec.packet_bytes,
        fanout: spec.fanout,
        received,
        forwarded,
        send_calls: calls,
        send_errors: errors,
        gso_segments: max_segments,
        cpu_s,
        wall_s: t0.elapsed().as_secs_f64(),
        cpu_us_per_packet: if forwarded > 0 {
            cpu_s * 1e6 / forwarded as f64
        } else {
            0.0
        },
    })
}

/// Append `packet`, with the subscriber's header and sealed payload, to its output.
fn rewrite_and_seal(s: &mut Subscriber, packet: &[u8]) -> io::Result<()> {
    let start = s.out.len();
    s.out.extend_from_slice(packet);
    let out = &mut s.out[start..];
    s.seq = s.seq.wrapping_add(1);
    out[2..4].copy_from_slice(&s.seq.to_be_bytes());
    let ts = u32::from_be_bytes([out[4], out[5], out[6], out[7]]).wrapping_add(s.ts_offset);
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&s.ssrc.to_be_bytes());
    // SRTP AEAD nonce: salt XOR (SSRC, ROC, SEQ).
    let mut iv = s.salt;
    for (b, x) in iv[2..6].iter_mut().zip(s.ssrc.to_be_bytes()) {
        *b ^= x;
    }
    for (b, x) in iv[10..12].iter_mut().zip(s.seq.to_be_bytes()) {
        *b ^= x;
    }
    let (header, payload) = out.split_at_mut(RTP_HEADER);
    let tag = s
        .key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(&header[..]),
            payload,
        )
        .map_err(|_| io::Error::other("seal"))?;
    s.out.extend_from_slice(tag.as_ref());
    s.segments += 1;
    Ok(())
}

fn flush(
    state: &UdpSocketState,
    socket: &mio::net::UdpSocket,
    s: &mut Subscriber,
    segment: usize,
    calls: &mut u64,
    errors: &mut u64,
) {
    if s.segments == 0 {
        return;
    }
    let transmit = Transmit {
        destination: s.dest,
        ecn: None,
        contents: &s.out,
        segment_size: (s.segments > 1).then_some(segment),
        src_ip: None,
    };
    *calls += 1;
    if state.send(UdpSockRef::from(socket), &transmit).is_err() {
        *errors += 1;
    }
    s.out.clear();
    s.segments = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_forwards_every_packet_to_every_subscriber() {
        for send in [Send::PerPacket, Send::Gso] {
            let r = measure(Spec {
                packet_bytes: 200,
                fanout: 3,
                burst: 4,
                packets: 400,
                send,
            })
            .unwrap();
            assert_eq!(r.received, 400, "{r:?}");
            assert_eq!(r.forwarded, 1200, "{r:?}");
            assert_eq!(r.send_errors, 0, "{r:?}");
            assert!(r.cpu_s > 0.0, "{r:?}");
            if send == Send::PerPacket {
                assert_eq!(r.send_calls, 1200, "{r:?}");
            } else if r.gso_segments > 1 {
                assert!(r.send_calls < 1200, "GSO batches: {r:?}");
            } else {
                eprintln!("no GSO on this kernel: the GSO floor sends one packet per call");
                assert_eq!(r.send_calls, 1200, "{r:?}");
            }
        }
    }

    #[test]
    fn a_sealed_packet_opens_with_the_subscribers_key() {
        let key = [1u8; 16];
        let mk = || LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).unwrap());
        let mut s = Subscriber {
            key: mk(),
            salt: [0; 12],
            ssrc: 0xabcd,
            seq: 9,
            ts_offset: 10,
            dest: SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
            out: Vec::new(),
            segments: 0,
        };
        let mut packet = vec![0x80, 96, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0];
        packet.extend_from_slice(b"payload");
        rewrite_and_seal(&mut s, &packet).unwrap();
        assert_eq!(s.out.len(), packet.len() + TAG);
        assert_eq!(&s.out[2..4], &10u16.to_be_bytes());
        assert_eq!(&s.out[4..8], &15u32.to_be_bytes());
        assert_eq!(&s.out[8..12], &0xabcdu32.to_be_bytes());
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&0xabcdu32.to_be_bytes());
        iv[10..12].copy_from_slice(&10u16.to_be_bytes());
        let (header, sealed) = s.out.split_at_mut(RTP_HEADER);
        let opened = mk()
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(&header[..]),
                sealed,
            )
            .unwrap();
        assert_eq!(opened, b"payload");
    }
}
