//! A WHIP session negotiated with the core's `RtcFactory` connects over real UDP: STUN
//! binding requests are answered, DTLS completes, and a graceful shutdown reports the
//! participant's departure before it returns.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{CAP, join_whip, loopback, sink, wait_for};
use manifold_api::{CoreEvent, LeaveReason, ParticipantId, SessionKind};
use manifold_core::RtcFactory;
use manifold_core::str0m::change::SdpAnswer;
use manifold_core::str0m::media::{Direction, MediaKind};
use manifold_core::str0m::net::{Protocol, Receive};
use manifold_core::str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use manifold_io::MediaWorkers;

#[test]
fn a_whip_session_connects_over_udp() {
    let (sink, rx) = sink();
    let workers = MediaWorkers::start(loopback(1), sink).expect("workers start");
    let worker = &workers.handles()[0];

    // The client: a full-ICE str0m peer on its own socket, sending one audio track.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_addr = socket.local_addr().unwrap();
    let now = Instant::now();
    let mut client = Rtc::builder()
        .set_crypto_provider(Arc::new(manifold_core::str0m::crypto::from_feature_flags()))
        .build(now);
    client.add_local_candidate(Candidate::host(client_addr, "udp").unwrap());
    let mut change = client.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().expect("an offer");

    let factory = RtcFactory::new(64 * 1024, Instant::now());
    let negotiated = factory
        .accept(
            SessionKind::Whip,
            &offer.to_sdp_string(),
            worker.candidates(),
            now,
        )
        .expect("the offer is acceptable");
    let answer = SdpAnswer::from_sdp_string(&negotiated.sdp).unwrap();
    client.sdp_api().accept_answer(pending, answer).unwrap();

    let participant = ParticipantId(42);
    join_whip(worker, &rx, participant, "alice", negotiated);

    // Drive the client over the socket until ICE and DTLS are up on both ends.
    let mut ice_connected = false;
    let mut dtls_connected = false;
    let deadline = Instant::now() + CAP;
    let mut buf = vec![0u8; 2000];
    while !(ice_connected && dtls_connected) {
        assert!(
            Instant::now() < deadline,
            "client did not connect (ice {ice_connected}, dtls {dtls_connected})"
        );
        let wake_at = loop {
            match client.poll_output().unwrap() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    socket.send_to(&t.contents, t.destination).unwrap();
                }
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Connected | IceConnectionState::Completed,
                )) => ice_connected = true,
                Output::Event(Event::Connected) => dtls_connected = true,
                Output::Event(_) => {}
            }
        };
        let wait = wake_at
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        socket.set_read_timeout(Some(wait)).unwrap();
        let input_at;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, worker.local_addr(), "replies come from the worker");
                input_at = Instant::now();
                let receive = Receive::new(Protocol::Udp, from, client_addr, &buf[..n]).unwrap();
                client
                    .handle_input(Input::Receive(input_at, receive))
                    .unwrap();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                client.handle_input(Input::Timeout(Instant::now())).unwrap();
            }
            Err(e) => panic!("client recv: {e}"),
        }
    }

    // The server saw it too.
    let connected = wait_for(&rx, 0, |e| match e {
        CoreEvent::ParticipantConnected { participant, .. } => Some(*participant),
        _ => None,
    });
    assert_eq!(connected, participant);

    // A graceful shutdown removes the participant and reports it before returning.
    workers.shutdown();
    let left: Vec<LeaveReason> = rx
        .try_iter()
        .filter_map(|(_, e)| match e {
            CoreEvent::ParticipantLeft {
                participant: p,
                reason,
                ..
            } if p == participant => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(left, vec![LeaveReason::Shutdown]);
}
