//! Offers the negotiation must refuse, with the error that says why, and offers it must
//! accept although they are unusual: an RTX SSRC named only in its FID group, every DTLS
//! role, certificates of other kinds.

#[path = "../../manifold-dtls/tests/certs/mod.rs"]
mod certs;
mod common;

use std::sync::Arc;
use std::time::Duration;

use certs::certificate;
use common::sdp_edit::{opus_on_video_pt, simulcast_naming_a_missing_rid};
use common::{ClientSpec, Harness, JoinError, Link, check_stream, config, sdp_value};
use manifold_api::Source;
use manifold_core::str0m::config::DtlsCert;
use manifold_core::str0m::media::MediaKind;
use manifold_core::{NegotiateError, RtcFactory};

fn negotiate_error(h: &mut Harness, spec: ClientSpec) -> NegotiateError {
    match h.join(spec) {
        Err(JoinError::Negotiate(e)) => e,
        Err(e) => panic!("expected a negotiation error, got {e:?}"),
        Ok(_) => panic!("expected a negotiation error, the offer was accepted"),
    }
}

#[test]
fn offer_with_only_unsupported_codecs() {
    let mut h = Harness::new(config(), 41);
    let mut spec =
        ClientSpec::publisher("p", "room").configure(|c| c.clear_codecs().enable_pcmu(true, false));
    spec.video = false;
    let e = negotiate_error(&mut h, spec);
    assert!(matches!(e, NegotiateError::NoUsableMedia(_)), "{e:?}");
    // The same holds for a player that can only receive PCMU.
    let mut spec = ClientSpec::subscriber("s", "room", Source::RoomCurrent)
        .configure(|c| c.clear_codecs().enable_pcmu(true, false));
    spec.video = false;
    let e = negotiate_error(&mut h, spec);
    assert!(matches!(e, NegotiateError::NoUsableMedia(_)), "{e:?}");
    assert_eq!(h.stats().participants, 0);
}

#[test]
fn garbage_sdp_is_malformed() {
    let mut h = Harness::new(config(), 42);
    for garbage in [
        String::new(),
        "hello".to_owned(),
        "v=0\r\nm=\r\n".to_owned(),
        "\u{0}\u{1}\u{2}\u{fffd}".repeat(100),
    ] {
        let spec = ClientSpec::publisher("p", "room").edit_offer(move |_| garbage);
        let e = negotiate_error(&mut h, spec);
        assert!(matches!(e, NegotiateError::Malformed(_)), "{e:?}");
    }
}

#[test]
fn offer_without_fingerprint_is_rejected() {
    let mut h = Harness::new(config(), 43);
    let spec = ClientSpec::publisher("p", "room").edit_offer(|o| {
        o.lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\r\n"))
            .collect()
    });
    let e = negotiate_error(&mut h, spec);
    assert!(matches!(e, NegotiateError::Rejected(_)), "{e:?}");
}

#[test]
fn megabyte_offer_is_too_large() {
    let mut h = Harness::new(config(), 44);
    let spec = ClientSpec::publisher("p", "room").edit_offer(|o| {
        let pad = format!("a=x-padding:{}\r\n", "x".repeat(1 << 20));
        o + &pad
    });
    let e = negotiate_error(&mut h, spec);
    assert!(
        matches!(e, NegotiateError::TooLarge { size, limit } if size > 1 << 20 && limit < size),
        "{e:?}"
    );
}

/// Remove the `a=ssrc:` lines of every RTX SSRC (the second of an `a=ssrc-group:FID`).
fn without_rtx_ssrc_lines(offer: String) -> String {
    let rtx: Vec<String> = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=ssrc-group:FID "))
        .filter_map(|g| g.split_whitespace().nth(1).map(|s| format!("a=ssrc:{s} ")))
        .collect();
    assert!(!rtx.is_empty(), "the offer has an FID group");
    offer
        .lines()
        .filter(|l| !rtx.iter().any(|r| l.starts_with(r.as_str())))
        .map(|l| format!("{l}\r\n"))
        .collect()
}

#[test]
fn fid_group_naming_an_undeclared_rtx_ssrc_is_accepted() {
    let mut h = Harness::new(config(), 45);
    let p = h.add(ClientSpec::publisher("p", "room").edit_offer(without_rtx_ssrc_lines));
    let s = h.add(ClientSpec::subscriber("s", "room", Source::RoomCurrent));
    h.connect(&[p, s], Duration::from_secs(2));
    // Retransmissions on that RTX SSRC must be understood as the publisher's.
    h.clients[p].uplink = Link::lossy(0.05, Duration::from_millis(10), Duration::ZERO);
    h.run_for(Duration::from_secs(5));
    h.clients[p].uplink = Link::default();
    h.pause_media(p, true);
    h.run_for(Duration::from_secs(1));
    let stats = h.stats();
    assert_eq!(stats.drops_for("unknown_ssrc"), 0, "{stats:?}");
    let video = check_stream(&h.clients[s], MediaKind::Video);
    assert!(
        video.seqs.len() as u64 * 100 >= video.range * 99,
        "recovered through RTX: {} of {}",
        video.seqs.len(),
        video.range
    );
}

#[test]
fn every_dtls_role_connects() {
    for (offered, answered) in [
        ("actpass", "passive"),
        ("active", "passive"),
        ("passive", "active"),
    ] {
        let mut h = Harness::new(config(), 46);
        let setup = format!("a=setup:{offered}");
        let p = h.add(
            ClientSpec::publisher("p", "room")
                .edit_offer(move |o| o.replace("a=setup:actpass", &setup)),
        );
        assert_eq!(
            sdp_value(&h.clients[p].answer, "a=setup:").as_deref(),
            Some(answered),
            "offer {offered}"
        );
        let s = h.add(ClientSpec::subscriber("s", "room", Source::RoomCurrent));
        h.run_for(Duration::from_secs(3));
        assert!(
            h.clients[p].connected_at.is_some(),
            "offer {offered}: connects ({:?}, {:?})",
            h.clients[p].error,
            h.events
        );
        h.run_for(Duration::from_secs(1));
        assert!(
            !h.clients[s].received_of(MediaKind::Video).is_empty(),
            "offer {offered}: media flows"
        );
    }
}

#[test]
fn ecdsa_certificates_connect() {
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        let mut h = Harness::new(config(), 47);
        // The server presents one kind, the client the same kind.
        let crypto = Arc::new(manifold_core::str0m::crypto::from_feature_flags());
        h.factory = RtcFactory::with_certificate(
            crypto,
            certificate(alg),
            manifold_core::negotiate::DEFAULT_MAX_SDP_BYTES,
            h.now,
        )
        .expect("ECDSA certificates are usable");
        let cert = certificate(alg);
        let p = h.add(ClientSpec::publisher("p", "room").configure(move |c| c.set_dtls_cert(cert)));
        let s = h.add(ClientSpec::subscriber("s", "room", Source::RoomCurrent));
        h.connect(&[p, s], Duration::from_secs(3));
        h.run_for(Duration::from_secs(1));
        assert!(!h.clients[s].received_of(MediaKind::Video).is_empty());
    }
}

/// Peers presenting RSA certificates (GStreamer's webrtcbin up to 1.22 makes only those)
/// publish and play: the server's DTLS runs on OpenSSL. The publisher here uses the same
/// provider, since str0m's own stack cannot load an RSA key; the subscriber uses str0m's
/// own stack with ECDSA, so one room mixes both.
#[test]
fn rsa_client_certificates_connect() {
    // The server as DTLS server (actpass, active offers) and as DTLS client (passive).
    for offered in ["actpass", "active", "passive"] {
        let mut h = Harness::new(config(), 48);
        let rsa = certificate(&rcgen::PKCS_RSA_SHA256);
        let setup = format!("a=setup:{offered}");
        let p = h.add(
            ClientSpec::publisher("p", "room")
                .configure(move |c| {
                    c.set_crypto_provider(Arc::new(manifold_dtls::crypto_provider()))
                        .set_dtls_cert(rsa)
                })
                .edit_offer(move |o| o.replace("a=setup:actpass", &setup)),
        );
        let s = h.add(ClientSpec::subscriber("s", "room", Source::RoomCurrent));
        h.connect(&[p, s], Duration::from_secs(3));
        h.run_for(Duration::from_secs(1));
        assert!(
            !h.clients[s].received_of(MediaKind::Video).is_empty(),
            "offer {offered}: video flows"
        );
        assert!(
            !h.clients[s].received_of(MediaKind::Audio).is_empty(),
            "offer {offered}: audio flows"
        );
    }
}

/// The server may present an RSA certificate too; a client whose stack verifies RSA
/// (OpenSSL here) connects to it.
#[test]
fn rsa_server_certificate_connects() {
    let mut h = Harness::new(config(), 49);
    let crypto = Arc::new(manifold_dtls::crypto_provider());
    h.factory = RtcFactory::with_certificate(
        crypto,
        certificate(&rcgen::PKCS_RSA_SHA256),
        manifold_core::negotiate::DEFAULT_MAX_SDP_BYTES,
        h.now,
    )
    .expect("OpenSSL uses RSA certificates");
    let openssl = || Arc::new(manifold_dtls::crypto_provider());
    let p = h.add(
        ClientSpec::publisher("p", "room").configure(move |c| c.set_crypto_provider(openssl())),
    );
    let s = h.add(
        ClientSpec::subscriber("s", "room", Source::RoomCurrent)
            .configure(move |c| c.set_crypto_provider(openssl())),
    );
    h.connect(&[p, s], Duration::from_secs(3));
    h.run_for(Duration::from_secs(1));
    assert!(!h.clients[s].received_of(MediaKind::Video).is_empty());
}

/// A certificate the DTLS stack cannot use is refused when the factory is made, not at
/// every session: an RSA key for str0m's own stack, a key that is not the certificate's
/// for OpenSSL.
#[test]
fn unusable_certificates_are_refused_at_start() {
    let dimpl = Arc::new(manifold_core::str0m::crypto::from_feature_flags());
    let max = manifold_core::negotiate::DEFAULT_MAX_SDP_BYTES;
    #[allow(clippy::disallowed_methods)] // an epoch
    let now = std::time::Instant::now();
    let rsa = certificate(&rcgen::PKCS_RSA_SHA256);
    assert!(RtcFactory::with_certificate(dimpl, rsa, max, now).is_err());

    let mut mismatched = certificate(&rcgen::PKCS_ECDSA_P256_SHA256);
    mismatched.private_key = certificate(&rcgen::PKCS_ECDSA_P256_SHA256).private_key;
    let openssl = Arc::new(manifold_dtls::crypto_provider());
    assert!(RtcFactory::with_certificate(openssl.clone(), mismatched, max, now).is_err());
    let garbage = DtlsCert {
        certificate: vec![0x30, 0x03, 1, 2, 3],
        private_key: vec![0; 10],
    };
    assert!(RtcFactory::with_certificate(openssl, garbage, max, now).is_err());
}

#[test]
fn one_payload_type_for_two_codecs_is_refused_before_str0m() {
    // Before the pre-check this offer reached a str0m assertion ("Pt locked multiple
    // times") and the request failed with a 500.
    let mut h = Harness::new(config(), 47);
    let spec =
        ClientSpec::subscriber("s", "room", Source::RoomCurrent).edit_offer(opus_on_video_pt);
    let e = negotiate_error(&mut h, spec);
    assert!(
        matches!(&e, NegotiateError::Rejected(m) if m.contains("mapped twice")),
        "{e:?}"
    );
    let spec = ClientSpec::publisher("p", "room").edit_offer(opus_on_video_pt);
    let e = negotiate_error(&mut h, spec);
    assert!(matches!(e, NegotiateError::Rejected(_)), "{e:?}");
    assert_eq!(h.stats().participants, 0);
}

/// A simulcast description that does not agree with itself is a clear refusal before
/// str0m sees it, for publishers and players alike.
#[test]
fn inconsistent_simulcast_is_refused() {
    let mut h = Harness::new(config(), 48);
    for spec in [
        ClientSpec::publisher("p", "room"),
        ClientSpec::subscriber("s", "room", Source::RoomCurrent),
    ] {
        let e = negotiate_error(&mut h, spec.edit_offer(simulcast_naming_a_missing_rid));
        assert!(
            matches!(&e, NegotiateError::Rejected(m) if m.contains("rid \"h\"")),
            "{e:?}"
        );
    }
    assert_eq!(h.stats().participants, 0);
}

#[test]
fn payload_type_checks() {
    use manifold_core::negotiate::check_sdp;
    let ok = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
              a=fmtp:111 minptime=10\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
              a=rtpmap:111 OPUS/48000/2\r\na=fmtp:111 minptime=10\r\n";
    check_sdp(ok).unwrap();
    let twice = ok.replacen("a=rtpmap:111 OPUS/48000/2", "a=rtpmap:111 H264/90000", 1);
    assert!(matches!(
        check_sdp(&twice),
        Err(NegotiateError::Rejected(_))
    ));
    let fmtp = ok.replacen("a=fmtp:111 minptime=10\r\nm=", "a=fmtp:111 x=1\r\nm=", 1);
    assert!(matches!(check_sdp(&fmtp), Err(NegotiateError::Rejected(_))));
    for bad in [
        "a=rtpmap:128 x/1",
        "a=rtpmap:-1 x/1",
        "a=fmtp:abc x",
        "a=rtpmap:",
    ] {
        assert!(
            matches!(check_sdp(bad), Err(NegotiateError::Malformed(_))),
            "{bad}"
        );
    }
    let many: String = (0..100)
        .map(|pt| format!("a=rtpmap:{pt} x/{pt}\r\n"))
        .collect();
    assert!(matches!(check_sdp(&many), Err(NegotiateError::Rejected(_))));
}

#[test]
fn a_panic_while_negotiating_is_contained_and_counted() {
    use manifold_core::str0m::Rtc;
    use manifold_core::str0m::media::Direction;
    #[allow(clippy::disallowed_methods)] // an epoch
    let now = std::time::Instant::now();
    let factory = RtcFactory::new(64 * 1024, now);
    assert_eq!(factory.panics(), 0);
    let mut client = Rtc::builder().build(now);
    let c =
        manifold_core::str0m::Candidate::host("127.0.0.1:9999".parse().unwrap(), "udp").unwrap();
    client.add_local_candidate(c);
    let mut change = client.sdp_api();
    change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let offer = opus_on_video_pt(change.apply().unwrap().0.to_sdp_string());
    let candidates = ["127.0.0.1:5000".parse().unwrap()];
    // Past the pre-check, this offer makes str0m panic; the panic stays in the request.
    let e = factory
        .accept_without_checks(manifold_api::SessionKind::Whep, &offer, &candidates, now)
        .unwrap_err();
    assert_eq!(e, NegotiateError::Panicked);
    assert_eq!(factory.panics(), 1);
    // With the pre-check, the same offer is a clear refusal and counts nothing.
    let e = factory
        .accept(manifold_api::SessionKind::Whep, &offer, &candidates, now)
        .unwrap_err();
    assert!(matches!(e, NegotiateError::Rejected(_)), "{e:?}");
    assert_eq!(factory.panics(), 1);
}
