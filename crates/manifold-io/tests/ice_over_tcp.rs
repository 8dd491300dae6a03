//! ICE over TCP (RFC 6544, RFC 4571 framing) against real sockets: a WHIP session whose
//! client has only a TCP candidate connects to a worker's passive TCP candidate, DTLS
//! completes over the framed stream, its audio reaches the shard, and the worker's ICE-TCP
//! counters show the traffic. A second test checks the listener's bounds from outside.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{CAP, eventually, join_whip, sink, stats, wait_for};
use manifold_api::{CoreEvent, ParticipantId, SessionKind};
use manifold_core::RtcFactory;
use manifold_core::str0m::change::SdpAnswer;
use manifold_core::str0m::media::{Direction, MediaKind, MediaTime};
use manifold_core::str0m::net::{Protocol, Receive, TcpType};
use manifold_core::str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use manifold_io::{MAX_FRAME_BYTES, MediaConfig, MediaWorkers};

fn ice_tcp_workers(workers: usize) -> MediaConfig {
    MediaConfig {
        workers,
        ice_tcp: true,
        ..MediaConfig::default()
    }
}

/// Reads RFC 4571 frames off the client's end of the connection.
struct FrameReader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next whole frame, or `None` when nothing arrived within `wait`.
    fn next(&mut self, wait: Duration) -> Option<Vec<u8>> {
        loop {
            if let Some((frame, used)) =
                manifold_rtp::framing::next_frame(&self.buf, MAX_FRAME_BYTES).expect("framing")
            {
                let frame = frame.to_vec();
                self.buf.drain(..used);
                return Some(frame);
            }
            self.stream.set_read_timeout(Some(wait)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the server closed the ICE-TCP connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("client read: {e}"),
            }
        }
    }
}

#[test]
fn a_whip_session_connects_and_publishes_over_ice_tcp() {
    let (sink, rx) = sink();
    let workers = MediaWorkers::start(ice_tcp_workers(1), sink).expect("workers start");
    let worker = &workers.handles()[0];
    assert!(worker.ice_tcp());
    assert!(
        worker
            .candidate_lines()
            .iter()
            .any(|l| l.contains(" tcp ") && l.ends_with("tcptype passive")),
        "{:?}",
        worker.candidate_lines()
    );

    // The client: a full-ICE str0m peer whose only candidate is its end of a TCP
    // connection to the worker (an active candidate, RFC 6544).
    let server: SocketAddr = worker.candidates()[0];
    let stream = TcpStream::connect(server).expect("the worker listens on TCP at its UDP port");
    stream.set_nodelay(true).unwrap();
    let client_addr = stream.local_addr().unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = FrameReader {
        stream,
        buf: Vec::new(),
    };
    let now = Instant::now();
    let mut client = Rtc::builder()
        .set_crypto_provider(Arc::new(manifold_core::str0m::crypto::from_feature_flags()))
        .build(now);
    let local = Candidate::builder()
        .tcp()
        .host(client_addr)
        .tcptype(TcpType::Active)
        .build()
        .unwrap();
    client.add_local_candidate(local);
    let mut change = client.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().expect("an offer");

    let factory = RtcFactory::new(64 * 1024, Instant::now()).with_ice_tcp(true);
    let negotiated = factory
        .accept(
            SessionKind::Whip,
            &offer.to_sdp_string(),
            worker.candidates(),
            now,
        )
        .expect("the offer is acceptable");
    let tcp_line = negotiated
        .sdp
        .lines()
        .find(|l| l.contains(" tcp ") && l.contains("tcptype passive"))
        .expect("the answer announces a passive TCP candidate");
    assert!(tcp_line.contains(&format!(" {} {} typ host", server.ip(), server.port())));
    let answer = SdpAnswer::from_sdp_string(&negotiated.sdp).unwrap();
    client.sdp_api().accept_answer(pending, answer).unwrap();

    let participant = ParticipantId(7);
    join_whip(worker, &rx, participant, "tcp-only", negotiated);

    // Drive the client over the connection until ICE and DTLS are up, then send audio
    // until the shard has counted some of it.
    let mut ice_connected = false;
    let mut dtls_connected = false;
    let mut server_connected = false;
    let mut sent_audio = 0u64;
    let deadline = Instant::now() + CAP;
    loop {
        assert!(
            Instant::now() < deadline,
            "client did not connect (ice {ice_connected}, dtls {dtls_connected}, audio {sent_audio})"
        );
        let wake_at = loop {
            match client.poll_output().unwrap() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    assert_eq!(t.proto, Protocol::Tcp, "the client has only TCP");
                    assert_eq!(t.destination, server);
                    let header = manifold_rtp::framing::header(&t.contents, MAX_FRAME_BYTES)
                        .expect("the client's datagrams fit a frame");
                    writer.write_all(&header).unwrap();
                    writer.write_all(&t.contents).unwrap();
                }
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Connected | IceConnectionState::Completed,
                )) => ice_connected = true,
                Output::Event(Event::Connected) => dtls_connected = true,
                Output::Event(_) => {}
            }
        };
        if dtls_connected && !server_connected {
            // The server's side finished its handshake before the client's did.
            let connected = wait_for(&rx, 0, |e| match e {
                CoreEvent::ParticipantConnected { participant, .. } => Some(*participant),
                _ => None,
            });
            assert_eq!(connected, participant);
            server_connected = true;
        }
        if dtls_connected {
            // One 20 ms packet per round, until the shard has counted some.
            if sent_audio % 10 == 9 && stats(worker, &rx, sent_audio).rtp_in > 0 {
                break;
            }
            let w = client.writer(mid).expect("the audio writer");
            let pt = w.payload_params().next().expect("a negotiated codec").pt();
            let at = MediaTime::from_millis(sent_audio * 20);
            w.write(pt, Instant::now(), at, vec![0xf8; 60]).unwrap();
            sent_audio += 1;
        }
        let wait = wake_at
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        match reader.next(wait) {
            Some(frame) => {
                let receive = Receive::new(Protocol::Tcp, server, client_addr, &frame).unwrap();
                client
                    .handle_input(Input::Receive(Instant::now(), receive))
                    .unwrap();
            }
            None => client.handle_input(Input::Timeout(Instant::now())).unwrap(),
        }
    }
    assert!(ice_connected);
    // The audio arrived as RTP over TCP (the client has no other path): the loop above
    // ended on the shard's count.
    assert!(sent_audio > 0);
    let counters = worker.ice_tcp_counters();
    assert_eq!((counters.open, counters.accepted), (1, 1), "{counters:?}");
    assert!(
        counters.frames_in > sent_audio && counters.frames_out > 2,
        "{counters:?}"
    );
    assert_eq!(
        counters.closed + counters.refused + counters.write_dropped,
        0
    );
    workers.shutdown();
}

#[test]
fn the_listener_closes_what_breaks_its_bounds() {
    let (sink, _rx) = sink();
    let config = MediaConfig {
        tcp_max_connections: 2,
        ..ice_tcp_workers(1)
    };
    let workers = MediaWorkers::start(config, sink).expect("workers start");
    let worker = &workers.handles()[0];
    let addr = worker.local_addr();
    let closed_by_server = |mut s: TcpStream| {
        s.set_read_timeout(Some(CAP)).unwrap();
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(0) | Err(_))
    };

    // A frame announcing more than a datagram may be.
    let mut big = TcpStream::connect(addr).unwrap();
    big.write_all(&u16::try_from(MAX_FRAME_BYTES + 1).unwrap().to_be_bytes())
        .unwrap();
    assert!(closed_by_server(big));
    // RTP before any STUN: nobody has identified this connection.
    let mut rtp = TcpStream::connect(addr).unwrap();
    let mut frame = vec![0, 40];
    frame.extend_from_slice(&[0x80; 40]);
    rtp.write_all(&frame).unwrap();
    assert!(closed_by_server(rtp));
    eventually("both protocol errors are counted", || {
        worker.ice_tcp_counters().protocol_errors == 2
    });

    // Past the connection cap a new connection is closed at once.
    let _a = TcpStream::connect(addr).unwrap();
    let _b = TcpStream::connect(addr).unwrap();
    eventually("two connections are open", || {
        worker.ice_tcp_counters().open == 2
    });
    let c = TcpStream::connect(addr).unwrap();
    assert!(closed_by_server(c));
    eventually("the refusal is counted", || {
        worker.ice_tcp_counters().refused == 1
    });
    assert_eq!(worker.ice_tcp_counters().open, 2);
    workers.shutdown();
}
