//! RFC 9725 §4.6 against the real binary: with `[turn]`, WHIP and WHEP `201 Created` answers
//! carry one `Link: <turn:...>; rel="ice-server"` per TURN URL with a coturn REST credential
//! (`expiry:identity`, base64 HMAC-SHA1 by the shared secret: checked here with the test's
//! own HMAC), and without `[turn]` they carry none.

mod common;

use base64::Engine;
use common::{Server, str0m_offer};
use str0m::media::{Direction, MediaKind};

const SECRET: &str = "turn-links-test-secret";
const URLS: [&str; 2] = [
    "turn:127.0.0.1:3478?transport=udp",
    "turns:turn.example.net:5349?transport=tcp",
];

/// POST `offer` to `path`; the status and the `Link` header values.
fn post(server: &Server, path: &str, offer: String) -> (u16, Vec<String>) {
    let res = reqwest::blocking::Client::new()
        .post(server.url(path))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .expect("POST");
    let links = res
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (res.status().as_u16(), links)
}

/// The value of parameter `name` (a quoted string without escapes) in `link`.
fn param<'a>(link: &'a str, name: &str) -> Option<&'a str> {
    link.split(';').find_map(|p| {
        p.trim()
            .strip_prefix(name)?
            .strip_prefix("=\"")?
            .strip_suffix('"')
    })
}

fn check(links: &[String], identity: &str) {
    assert_eq!(links.len(), URLS.len(), "{links:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        SECRET.as_bytes(),
    );
    for (link, url) in links.iter().zip(URLS) {
        assert!(link.starts_with(&format!("<{url}>;")), "{link}");
        assert_eq!(param(link, "rel"), Some("ice-server"), "{link}");
        assert_eq!(param(link, "credential-type"), Some("password"), "{link}");
        let username = param(link, "username").expect("username");
        let (expiry, who) = username.split_once(':').expect("expiry:identity");
        assert_eq!(who, identity);
        // ttl_secs = 600 from now, give or take the test's own duration.
        let expiry: u64 = expiry.parse().unwrap();
        assert!(
            expiry > now && expiry <= now + 600 + 60,
            "{expiry} vs {now}"
        );
        let tag = base64::engine::general_purpose::STANDARD
            .decode(param(link, "credential").expect("credential"))
            .unwrap();
        assert!(
            aws_lc_rs::hmac::verify(&key, username.as_bytes(), &tag).is_ok(),
            "the credential is HMAC-SHA1(secret, username): {link}"
        );
    }
}

#[test]
fn whip_and_whep_answers_carry_the_turn_servers() {
    let urls = format!("[\"{}\"]", URLS.join("\",\""));
    let server = Server::start(
        &[],
        &[
            ("MANIFOLD_TURN__URLS", &urls),
            ("MANIFOLD_TURN__STATIC_AUTH_SECRET", SECRET),
            ("MANIFOLD_TURN__TTL_SECS", "600"),
        ],
    );
    let send = str0m_offer(
        &[
            (MediaKind::Audio, Direction::SendOnly),
            (MediaKind::Video, Direction::SendOnly),
        ],
        |c| c,
    );
    let (status, links) = post(&server, "/whip/linked?identity=alice", send);
    assert_eq!(status, 201);
    check(&links, "alice");
    let recv = str0m_offer(
        &[
            (MediaKind::Audio, Direction::RecvOnly),
            (MediaKind::Video, Direction::RecvOnly),
        ],
        |c| c,
    );
    let (status, links) = post(&server, "/whep/linked?identity=bob", recv);
    assert_eq!(status, 201);
    check(&links, "bob");

    // Without [turn]: no Link.
    let plain = Server::start(&[], &[]);
    let send = str0m_offer(&[(MediaKind::Audio, Direction::SendOnly)], |c| c);
    let (status, links) = post(&plain, "/whip/plain", send);
    assert_eq!((status, links.len()), (201, 0), "{links:?}");
}
