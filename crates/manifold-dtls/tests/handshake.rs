//! Handshakes through str0m's DTLS traits, in memory: OpenSSL against OpenSSL and against
//! dimpl (str0m's own stack), with ECDSA and RSA certificates, then application data both
//! ways, close_notify, and hostile input.

use std::time::{Duration, Instant};

mod certs;

use certs::certificate;
use str0m::crypto::dtls::{
    DtlsCert, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, SrtpProfile,
};

fn openssl() -> &'static dyn DtlsProvider {
    manifold_dtls::crypto_provider().dtls_provider
}

/// The provider whose sessions free OpenSSL after the handshake.
fn media_only() -> &'static dyn DtlsProvider {
    manifold_dtls::media_only_crypto_provider().dtls_provider
}

fn dimpl() -> &'static dyn DtlsProvider {
    str0m::crypto::from_feature_flags().dtls_provider
}

/// What one side saw.
#[derive(Default, Debug)]
struct Seen {
    peer_cert: Option<Vec<u8>>,
    connected: bool,
    keys: Option<(Vec<u8>, SrtpProfile)>,
    data: Vec<Vec<u8>>,
    close_notify: bool,
}

struct Side {
    dtls: Box<dyn DtlsInstance>,
    /// Datagrams drained but not yet delivered.
    pending: Vec<Vec<u8>>,
    seen: Seen,
    timeout: Instant,
    /// Datagrams of this side lost on the way once it is connected (its final flight).
    lose_when_connected: usize,
}

impl Side {
    fn new(provider: &dyn DtlsProvider, cert: &DtlsCert, active: bool, now: Instant) -> Side {
        let mut dtls = provider
            .new_dtls(cert, now, DtlsVersion::Dtls12, Some(1150))
            .expect("instance");
        dtls.set_active(active);
        dtls.handle_timeout(now).expect("start");
        Side {
            dtls,
            pending: Vec::new(),
            seen: Seen::default(),
            timeout: now,
            lose_when_connected: 0,
        }
    }

    /// Everything the side wants to send now; events are recorded.
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 20_000];
        let mut out = Vec::new();
        loop {
            match self.dtls.poll_output(&mut buf) {
                DtlsOutput::Packet(p) => out.push(p.to_vec()),
                DtlsOutput::PeerCert(c) => {
                    assert!(
                        !self.seen.connected,
                        "the certificate comes before Connected"
                    );
                    self.seen.peer_cert = Some(c.to_vec());
                }
                DtlsOutput::Connected => self.seen.connected = true,
                DtlsOutput::KeyingMaterial(k, p) => self.seen.keys = Some((k.to_vec(), p)),
                DtlsOutput::ApplicationData(d) => self.seen.data.push(d.to_vec()),
                DtlsOutput::CloseNotify => self.seen.close_notify = true,
                DtlsOutput::Timeout(t) => {
                    self.timeout = t;
                    return out;
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }
}

/// Exchange datagrams until both sides are quiet; `drop_first` datagrams from the client
/// are lost on the way (to exercise retransmission). Returns how many datagrams were sent
/// because a timer ran out.
fn run(client: &mut Side, server: &mut Side, mut drop_first: usize, deadline: Duration) -> usize {
    let start = Instant::now();
    let mut retransmitted = 0;
    loop {
        let mut c = std::mem::take(&mut client.pending);
        c.extend(client.drain());
        let mut s = std::mem::take(&mut server.pending);
        s.extend(server.drain());
        while server.seen.connected && server.lose_when_connected > 0 && !s.is_empty() {
            s.remove(0);
            server.lose_when_connected -= 1;
        }
        if c.is_empty() && s.is_empty() {
            if client.seen.connected && server.seen.connected {
                return retransmitted;
            }
            assert!(
                start.elapsed() < deadline,
                "no handshake within {deadline:?}"
            );
            // Nothing in flight: let the retransmission timers run (in real time, which
            // is what OpenSSL measures).
            std::thread::sleep(Duration::from_millis(20));
            let now = Instant::now();
            for side in [&mut *client, &mut *server] {
                if side.timeout <= now {
                    side.dtls.handle_timeout(now).expect("timeout handled");
                    let resent = side.drain();
                    retransmitted += resent.len();
                    side.pending.extend(resent);
                }
            }
            continue;
        }
        for p in c {
            if drop_first > 0 {
                drop_first -= 1;
                continue;
            }
            server
                .dtls
                .handle_packet(&p)
                .expect("server takes client datagram");
        }
        for p in s {
            client
                .dtls
                .handle_packet(&p)
                .expect("client takes server datagram");
        }
    }
}

fn handshake(
    client: (&dyn DtlsProvider, &DtlsCert),
    server: (&dyn DtlsProvider, &DtlsCert),
    drop_first: usize,
) -> (Side, Side, usize) {
    let now = Instant::now();
    let mut c = Side::new(client.0, client.1, true, now);
    let mut s = Side::new(server.0, server.1, false, now);
    let retransmitted = run(&mut c, &mut s, drop_first, Duration::from_secs(10));
    // Each saw the other's certificate and both derived the same SRTP keys.
    assert_eq!(c.seen.peer_cert.as_deref(), Some(&server.1.certificate[..]));
    assert_eq!(s.seen.peer_cert.as_deref(), Some(&client.1.certificate[..]));
    let (ck, cp) = c.seen.keys.clone().expect("client keys");
    let (sk, sp) = s.seen.keys.clone().expect("server keys");
    assert_eq!(ck, sk);
    assert_eq!(cp, sp);
    assert_eq!(ck.len(), cp.keying_material_len());
    (c, s, retransmitted)
}

fn exchange_data(c: &mut Side, s: &mut Side) {
    assert_eq!(c.dtls.send_application_data(b"ping").unwrap(), 4);
    assert_eq!(s.dtls.send_application_data(b"pong").unwrap(), 4);
    for p in c.drain() {
        s.dtls.handle_packet(&p).unwrap();
    }
    for p in s.drain() {
        c.dtls.handle_packet(&p).unwrap();
    }
    c.drain();
    s.drain();
    assert_eq!(s.seen.data, vec![b"ping".to_vec()]);
    assert_eq!(c.seen.data, vec![b"pong".to_vec()]);
}

#[test]
fn openssl_to_openssl_with_every_certificate_kind() {
    let kinds = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_RSA_SHA256,
    ];
    for client in kinds {
        for server in kinds {
            let (cc, sc) = (certificate(client), certificate(server));
            let (mut c, mut s, _) = handshake((openssl(), &cc), (openssl(), &sc), 0);
            assert!(c.dtls.protocol_version().is_some());
            exchange_data(&mut c, &mut s);
        }
    }
}

/// The case this crate exists for: a client with an RSA certificate (GStreamer's
/// webrtcbin, for one) handshaking with our server, and our ECDSA server with str0m's
/// own stack as the client (the loadgen, the tests' clients).
#[test]
fn openssl_server_takes_rsa_and_dimpl_clients() {
    let server = openssl()
        .generate_certificate()
        .expect("generated certificate");
    let rsa = certificate(&rcgen::PKCS_RSA_SHA256);
    let (mut c, mut s, _) = handshake((openssl(), &rsa), (openssl(), &server), 0);
    exchange_data(&mut c, &mut s);

    let ecdsa = dimpl().generate_certificate().unwrap();
    let (mut c, mut s, _) = handshake((dimpl(), &ecdsa), (openssl(), &server), 0);
    exchange_data(&mut c, &mut s);
}

#[test]
fn openssl_client_with_dimpl_server() {
    let server = dimpl().generate_certificate().unwrap();
    let client = openssl().generate_certificate().unwrap();
    let (mut c, mut s, _) = handshake((openssl(), &client), (dimpl(), &server), 0);
    exchange_data(&mut c, &mut s);
}

/// The client's first flight is lost: its retransmission timer resends it.
#[test]
fn lost_first_flight_is_retransmitted() {
    let cert = openssl().generate_certificate().unwrap();
    let rsa = certificate(&rcgen::PKCS_RSA_SHA256);
    let (c, _, retransmitted) = handshake((openssl(), &rsa), (openssl(), &cert), 1);
    assert!(c.seen.connected);
    assert!(retransmitted >= 1, "the hello was sent again on the timer");
}

#[test]
fn close_notify_reaches_the_peer() {
    let cert = openssl().generate_certificate().unwrap();
    let (mut c, mut s, _) = handshake((openssl(), &cert), (openssl(), &cert), 0);
    c.dtls.close().unwrap();
    assert!(c.dtls.is_closing());
    for p in c.drain() {
        s.dtls.handle_packet(&p).unwrap();
    }
    assert!(c.dtls.is_closed());
    s.drain();
    assert!(s.seen.close_notify);
    assert_eq!(c.dtls.send_application_data(b"late").unwrap(), 0);
}

/// Garbage, truncated records and oversized datagrams give errors or are dropped; none
/// panics, and a server that was sent an oversized datagram and a truncated record before
/// the real hello still completes the handshake.
#[test]
fn hostile_input_is_refused_without_panic() {
    let cert = openssl().generate_certificate().unwrap();
    let now = Instant::now();
    let mut s = Side::new(openssl(), &cert, false, now);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for len in [0usize, 1, 13, 14, 25, 100, 1200, 100_000] {
        let mut d = vec![0u8; len];
        for b in &mut d {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *b = rng as u8;
        }
        if let Some(first) = d.first_mut() {
            *first = 0x16; // looks like a handshake record
        }
        let _ = s.dtls.handle_packet(&d);
        s.drain();
    }

    let mut s = Side::new(openssl(), &cert, false, now);
    assert!(
        s.dtls.handle_packet(&vec![0x16; 100_000]).is_ok(),
        "dropped"
    );
    let _ = s.dtls.handle_packet(&[0x16, 0xfe, 0xfd, 0, 0]);
    let mut c = Side::new(dimpl(), &dimpl().generate_certificate().unwrap(), true, now);
    run(&mut c, &mut s, 0, Duration::from_secs(10));
    assert!(s.seen.connected);
}

#[test]
fn dtls13_only_is_refused() {
    let cert = openssl().generate_certificate().unwrap();
    assert!(
        openssl()
            .new_dtls(&cert, Instant::now(), DtlsVersion::Dtls13, None)
            .is_err()
    );
}

fn released(side: &Side) -> bool {
    format!("{:?}", side.dtls).contains("released: true")
}

/// Handshake `client` with a media-only server, which frees OpenSSL once it is done.
fn media_only_handshake(client: (&dyn DtlsProvider, &DtlsCert)) -> (Side, Side) {
    let cert = openssl().generate_certificate().unwrap();
    let (c, s, _) = handshake(client, (media_only(), &cert), 0);
    assert!(released(&s), "the server freed OpenSSL");
    assert!(!released(&c), "the client's provider keeps it");
    (c, s)
}

/// Deliver what `from` sends now to `to`, and let `to` report what it makes of it.
fn deliver(from: &mut Side, to: &mut Side) {
    for p in from.drain() {
        to.dtls.handle_packet(&p).unwrap();
    }
    to.drain();
}

/// After the release the session still closes politely both ways: the server's
/// close_notify (made by OpenSSL before it was freed) reaches the client, and the client's
/// is authenticated with the key the server kept. With OpenSSL and with dimpl (str0m's own
/// stack, as the loadgen and the tests' clients use) as the client.
#[test]
fn a_released_session_closes_politely_both_ways() {
    let rsa = certificate(&rcgen::PKCS_RSA_SHA256);
    let ecdsa = dimpl().generate_certificate().unwrap();
    let clients: [(&dyn DtlsProvider, &DtlsCert); 2] = [(openssl(), &rsa), (dimpl(), &ecdsa)];
    for client in clients {
        let (mut c, mut s) = media_only_handshake(client);
        c.dtls.close().unwrap();
        deliver(&mut c, &mut s);
        assert!(
            s.seen.close_notify,
            "the client's close_notify is recognised"
        );

        let (mut c, mut s) = media_only_handshake(client);
        s.dtls.close().unwrap();
        assert!(s.dtls.is_closing());
        deliver(&mut s, &mut c);
        assert!(s.dtls.is_closed());
        assert!(
            c.seen.close_notify,
            "the server's close_notify reaches the client"
        );
        assert!(!s.seen.close_notify);
    }
}

/// An alert the kept key does not authenticate (forged, or a real one altered) is dropped:
/// only the peer can close the session.
#[test]
fn a_forged_alert_does_not_close_a_released_session() {
    let client = dimpl().generate_certificate().unwrap();
    let (mut c, mut s) = media_only_handshake((dimpl(), &client));
    c.dtls.close().unwrap();
    let real = c.drain();
    assert_eq!(real.len(), 1, "one close_notify datagram");
    let real = &real[0];
    assert_eq!(real[0], 21, "an alert record");

    // An alert of the right shape with a made-up body and tag.
    let mut forged = real[..13].to_vec();
    forged.extend((0..real.len() - 13).map(|i| i as u8));
    // The real one with one bit of its ciphertext, its tag or its header flipped.
    let mut altered = Vec::new();
    for i in [real.len() - 1, real.len() - 17, 10] {
        let mut d = real.clone();
        d[i] ^= 1;
        altered.push(d);
    }
    for d in std::iter::once(&forged).chain(&altered) {
        s.dtls.handle_packet(d).unwrap();
        s.drain();
        assert!(!s.seen.close_notify, "not authenticated: {d:?}");
    }
    s.dtls.handle_packet(real).unwrap();
    s.drain();
    assert!(s.seen.close_notify);
}

/// The server's final flight is lost: the client retransmits its own, and the server,
/// which freed OpenSSL as it sent that flight, answers with the flight again.
#[test]
fn a_lost_final_flight_is_sent_again_after_the_release() {
    let server_cert = openssl().generate_certificate().unwrap();
    let rsa = certificate(&rcgen::PKCS_RSA_SHA256);
    let ecdsa = dimpl().generate_certificate().unwrap();
    let clients: [(&dyn DtlsProvider, &DtlsCert); 2] = [(openssl(), &rsa), (dimpl(), &ecdsa)];
    for (provider, cert) in clients {
        let now = Instant::now();
        let mut c = Side::new(provider, cert, true, now);
        let mut s = Side::new(media_only(), &server_cert, false, now);
        s.lose_when_connected = 1;
        let retransmitted = run(&mut c, &mut s, 0, Duration::from_secs(10));
        assert_eq!(s.lose_when_connected, 0, "the final flight was lost once");
        assert!(retransmitted >= 1, "the client sent its flight again");
        assert!(c.seen.connected && released(&s));
        // And the session still closes.
        c.dtls.close().unwrap();
        deliver(&mut c, &mut s);
        assert!(s.seen.close_notify);
    }
}
