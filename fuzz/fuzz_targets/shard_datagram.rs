//! Arbitrary datagrams into a shard that holds one connected session (ICE, DTLS and SRTP
//! set up with a real str0m client in memory, virtual time): from the session's own
//! address they reach its `Rtc` (DTLS, SRTP/SRTCP, STUN integrity checks), from any other
//! address the shard's demultiplexer. Nothing may panic, not even contained in a session.
//! The session is WHIP without a data channel, so its DTLS has freed OpenSSL after the
//! handshake: DTLS-looking datagrams reach `manifold_dtls`'s released state (alerts
//! authenticated with the kept key, the final flight resent).
#![no_main]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use manifold_api::{Grants, Identity, ParticipantId, RequestId, RoomName, SessionKind};
use manifold_core::str0m::change::SdpAnswer;
use manifold_core::str0m::media::{Direction, MediaKind};
use manifold_core::str0m::net::{Protocol, Receive};
use manifold_core::str0m::{self, Candidate, Rtc};
use manifold_core::{Command, Input, NewSession, Output, RtcFactory, Shard, ShardConfig};

struct World {
    shard: Shard,
    client: Rtc,
    now: Instant,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        let client_addr: SocketAddr = "10.0.0.1:5000".parse().expect("an address");
        let server_addr: SocketAddr = "10.0.0.2:40000".parse().expect("an address");
        let factory = RtcFactory::new(64 * 1024, now);
        let mut shard = Shard::new(ShardConfig::default(), now, 0);
        let mut client = Rtc::builder().set_rtp_mode(true).build(now);
        client.add_local_candidate(Candidate::host(client_addr, "udp").expect("a candidate"));
        let mut change = client.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = change.apply().expect("an offer");
        let negotiated = factory
            .accept(
                SessionKind::Whip,
                &offer.to_sdp_string(),
                &[server_addr],
                now,
            )
            .expect("the server answers");
        let answer = SdpAnswer::from_sdp_string(&negotiated.sdp).expect("an answer");
        client
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the client takes the answer");
        shard.handle_input(
            now,
            Input::Command(Command::Join {
                request: RequestId(1),
                session: Box::new(NewSession {
                    id: ParticipantId(1),
                    identity: Identity::parse("fuzz").expect("an identity"),
                    room: RoomName::parse("fuzz").expect("a room"),
                    kind: SessionKind::Whip,
                    source: None,
                    auto_subscribe: false,
                    grants: Grants::ALL,
                    negotiated: negotiated.into(),
                }),
            }),
        );
        let mut w = World {
            shard,
            client,
            now,
            client_addr,
            server_addr,
        };
        let mut connected = false;
        for _ in 0..2000 {
            connected |= w.exchange();
            if connected && w.shard.stats().participants == 1 {
                break;
            }
            w.now += Duration::from_millis(5);
            let _ = w.client.handle_input(str0m::Input::Timeout(w.now));
            w.shard.handle_input(w.now, Input::Timeout);
        }
        assert!(connected, "the client connects to the shard");
        w
    }

    /// Move what each side sends to the other until both are quiet; whether the client
    /// is connected.
    fn exchange(&mut self) -> bool {
        let mut connected = false;
        for _ in 0..64 {
            let mut moved = false;
            while let Ok(out) = self.client.poll_output() {
                match out {
                    str0m::Output::Transmit(t) => {
                        moved = true;
                        self.shard.handle_input(
                            self.now,
                            Input::Datagram {
                                source: self.client_addr,
                                destination: self.server_addr,
                                contents: &t.contents,
                                proto: manifold_core::Protocol::Udp,
                            },
                        );
                    }
                    str0m::Output::Event(str0m::Event::Connected) => connected = true,
                    str0m::Output::Event(_) => {}
                    str0m::Output::Timeout(_) => break,
                }
            }
            self.drain_shard(true);
            if !moved {
                break;
            }
        }
        connected
    }

    /// Drain the shard's outputs, delivering its datagrams to the client if `deliver`.
    fn drain_shard(&mut self, deliver: bool) {
        loop {
            match self.shard.poll_output() {
                Output::Transmit(t) if deliver && t.destination == self.client_addr => {
                    if let Ok(r) = Receive::new(
                        Protocol::Udp,
                        self.server_addr,
                        self.client_addr,
                        &t.contents,
                    ) {
                        let _ = self.client.handle_input(str0m::Input::Receive(self.now, r));
                    }
                }
                Output::Transmit(_) | Output::Event(_) | Output::Relay { .. } => {}
                Output::Timeout(_) => return,
            }
        }
    }
}

fn world() -> &'static Mutex<World> {
    static W: std::sync::OnceLock<Mutex<World>> = std::sync::OnceLock::new();
    W.get_or_init(|| Mutex::new(World::new()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, datagram)) = data.split_first() else {
        return;
    };
    let mut w = world().lock().unwrap_or_else(|e| e.into_inner());
    let source = if how & 1 == 0 {
        w.client_addr
    } else {
        SocketAddr::from(([10, 0, 9, how], 6000))
    };
    let (now, destination) = (w.now, w.server_addr);
    w.shard.handle_input(
        now,
        Input::Datagram {
            source,
            destination,
            contents: datagram,
            proto: manifold_core::Protocol::Udp,
        },
    );
    w.drain_shard(false);
    if how & 0x80 != 0 {
        // Time passes; the client keeps its session alive (consent checks), so later
        // inputs still find it.
        w.now += Duration::from_millis(20);
        let now = w.now;
        let _ = w.client.handle_input(str0m::Input::Timeout(now));
        w.shard.handle_input(now, Input::Timeout);
        w.exchange();
    }
    assert_eq!(
        w.shard.stats().panics,
        0,
        "a session's Rtc panicked on this input"
    );
});
