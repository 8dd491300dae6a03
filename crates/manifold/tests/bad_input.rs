//! Bad input against the real server: every malformed or hostile request gets a clear JSON
//! error with the right status, and a live call in the same room never notices, not even a
//! barrage of garbage datagrams on its media port.

mod common;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::{Server, str0m_offer, wait_until};
use manifold_loadgen::{Client, Engine, MediaShape, MediaSpec, join};
use reqwest::blocking::Client as Http;
use str0m::media::{Direction, MediaKind};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An audio and a video m-line of `direction` from a str0m client configured by `f`.
fn offer(direction: Direction, f: impl FnOnce(str0m::RtcConfig) -> str0m::RtcConfig) -> String {
    str0m_offer(
        &[(MediaKind::Audio, direction), (MediaKind::Video, direction)],
        f,
    )
}

fn post(
    http: &Http,
    url: &str,
    ctype: &str,
    body: impl Into<reqwest::blocking::Body>,
) -> (u16, serde_json::Value) {
    let resp = http
        .post(url)
        .header("content-type", ctype)
        .body(body)
        .send()
        .expect("request");
    let status = resp.status().as_u16();
    let json = resp.json().unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn expect_error(got: (u16, serde_json::Value), status: u16, code: &str, needle: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"], code, "{}", got.1);
    let message = got.1["message"].as_str().unwrap_or("");
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "message {message:?} should mention {needle:?}"
    );
}

#[test]
fn bad_requests_get_clear_errors_and_disturb_nothing() {
    let server = Server::start(&[], &[]);
    let http = Http::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ahttp = reqwest::Client::new();

    // A live call first.
    let engine = Engine::start(1).unwrap();
    let spec = MediaSpec {
        audio: true,
        video: true,
    };
    let publisher = rt
        .block_on(join(
            &ahttp,
            &server.url("/whip/live"),
            None,
            LOCAL,
            Some(spec),
        ))
        .unwrap();
    let media_port = publisher.server_candidates[0];
    engine.add(Client::publisher("pub".into(), publisher, MediaShape::default()).unwrap());
    let player = rt
        .block_on(join(&ahttp, &server.url("/whep/live"), None, LOCAL, None))
        .unwrap();
    engine.add(Client::subscriber("sub".into(), player).unwrap());
    assert!(wait_until(Duration::from_secs(15), || {
        engine.snapshot().iter().all(|c| c.connected)
    }));
    std::thread::sleep(Duration::from_secs(1));
    let before = engine.snapshot();

    let whip = server.url("/whip/live");
    let whep = server.url("/whep/live");
    expect_error(
        post(&http, &whip, "application/sdp", "garbage"),
        400,
        "bad_sdp",
        "malformed",
    );
    expect_error(
        post(&http, &whip, "application/sdp", vec![b'v'; 1 << 20]),
        413,
        "too_large",
        "limit",
    );
    let no_fingerprint: String = offer(Direction::SendOnly, |c| c)
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    expect_error(
        post(&http, &whip, "application/sdp", no_fingerprint),
        400,
        "bad_sdp",
        "fingerprint",
    );
    let pcmu_only = offer(Direction::SendOnly, |c| {
        c.clear_codecs().enable_pcmu(true, false)
    });
    expect_error(
        post(&http, &whip, "application/sdp", pcmu_only),
        400,
        "bad_sdp",
        "codec",
    );
    // A publisher's offer sent to the player endpoint has nothing a player can receive.
    let sendonly = offer(Direction::SendOnly, |c| c);
    expect_error(
        post(&http, &whep, "application/sdp", sendonly),
        400,
        "bad_sdp",
        "recvonly",
    );
    expect_error(
        post(&http, &whip, "text/plain", "v=0"),
        415,
        "unsupported_media_type",
        "application/sdp",
    );
    expect_error(
        post(
            &http,
            &server.url("/whip/bad%20room"),
            "application/sdp",
            "v=0",
        ),
        400,
        "bad_request",
        "room",
    );

    let resp = http
        .delete(server.url("/whip/live/p0000000000000001"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(
        resp.json::<serde_json::Value>().unwrap()["error"],
        "not_found"
    );
    let resp = http
        .delete(server.url("/whip/live/not-an-id"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = http
        .patch(server.url("/whep/live/p0000000000000001"))
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=end-of-candidates\r\n")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = http.get(server.url("/no/such/page")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    // Garbage on the media port: random datagrams of every size, STUN-shaped and
    // RTP-shaped junk among them, and one near the UDP maximum.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..3000 {
        let len = (next() % 1500) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match i % 4 {
            0 if len > 20 => d[0] = 0,    // STUN-looking
            1 if len > 12 => d[0] = 0x80, // RTP-looking
            _ => {}
        }
        let _ = stranger.send_to(&d, media_port);
    }
    let _ = stranger.send_to(&vec![0x80u8; 65_000], media_port);

    std::thread::sleep(Duration::from_secs(2));
    let after = engine.snapshot();
    let sub_before = before.iter().find(|c| c.role == "subscriber").unwrap();
    let sub_after = after.iter().find(|c| c.role == "subscriber").unwrap();
    let pub_after = after.iter().find(|c| c.role == "publisher").unwrap();
    let audio_new = sub_after.audio.unique - sub_before.audio.unique;
    let video_new = sub_after.video.unique - sub_before.video.unique;
    println!("during the barrage the player got {audio_new} audio and {video_new} video packets");
    assert!(
        audio_new > 50 && video_new > 200,
        "the call kept flowing: {sub_after:#?}"
    );
    let expected = sub_after.video.expected((pub_after.video_sent - 1) as u32);
    assert!(
        sub_after.video.unique as f64 >= 0.95 * expected as f64,
        "video loss stayed low: {} of {expected}",
        sub_after.video.unique
    );

    let stats = server.stats(None);
    println!("server stats after the barrage: {stats}");
    assert_eq!(stats["participants"], 2, "nobody was disturbed: {stats}");
    assert_eq!(stats["panics"], 0);
    let drops: u64 = stats["drops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| matches!(d["reason"].as_str(), Some("malformed" | "unknown_source")))
        .map(|d| d["count"].as_u64().unwrap())
        .sum();
    assert!(drops > 2000, "garbage is counted: {stats}");
    engine.stop();
}

#[test]
fn limits_answer_429_and_503() {
    let server = Server::start(
        &[],
        &[
            ("MANIFOLD_LIMITS__MAX_PARTICIPANTS_PER_ROOM", "1"),
            ("MANIFOLD_LIMITS__MAX_ROOMS", "1"),
        ],
    );
    let http = Http::new();
    let publish = offer(Direction::SendOnly, |c| c);
    let (status, _) = post(
        &http,
        &server.url("/whip/one"),
        "application/sdp",
        publish.clone(),
    );
    assert_eq!(status, 201);
    expect_error(
        post(
            &http,
            &server.url("/whep/one"),
            "application/sdp",
            offer(Direction::RecvOnly, |c| c),
        ),
        429,
        "limit_reached",
        "limit",
    );
    expect_error(
        post(&http, &server.url("/whip/two"), "application/sdp", publish),
        503,
        "unavailable",
        "rooms",
    );
}

#[test]
fn the_room_limit_counts_the_room_on_every_worker() {
    // Every session to the least loaded worker: the room spans both, and no worker alone
    // holds two of its sessions.
    let server = Server::start(
        &[],
        &[
            ("MANIFOLD_LIMITS__MAX_PARTICIPANTS_PER_ROOM", "2"),
            ("MANIFOLD_MEDIA__ROOM_SPREAD_AFTER", "0"),
        ],
    );
    let http = Http::new();
    let (status, _) = post(
        &http,
        &server.url("/whip/spread"),
        "application/sdp",
        offer(Direction::SendOnly, |c| c),
    );
    assert_eq!(status, 201);
    let (status, _) = post(
        &http,
        &server.url("/whep/spread"),
        "application/sdp",
        offer(Direction::RecvOnly, |c| c),
    );
    assert_eq!(status, 201);
    expect_error(
        post(
            &http,
            &server.url("/whep/spread"),
            "application/sdp",
            offer(Direction::RecvOnly, |c| c),
        ),
        429,
        "limit_reached",
        "limit",
    );
}

const KEY: &str = "test-key-test-key-test-key-test-key!";

fn mint(server_env: &[(&str, &str)], args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_manifold"))
        .arg("token")
        .args(args)
        .envs(server_env.iter().copied())
        .output()
        .expect("manifold token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn tokens_are_required_and_checked() {
    let env = [("MANIFOLD_AUTH__KEY", KEY)];
    let server = Server::start(&[], &env);
    let http = Http::new();
    let whip = server.url("/whip/secure");
    let send = |token: Option<&str>, url: &str, body: String| {
        let mut req = http
            .post(url)
            .header("content-type", "application/sdp")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().unwrap();
        (
            resp.status().as_u16(),
            resp.json::<serde_json::Value>().unwrap_or_default(),
        )
    };
    let publish = || offer(Direction::SendOnly, |c| c);

    expect_error(
        send(None, &whip, publish()),
        401,
        "unauthorized",
        "token is required",
    );
    expect_error(
        send(Some("not.a.jwt"), &whip, publish()),
        401,
        "unauthorized",
        "malformed",
    );

    let other_room = mint(
        &env,
        &["--room", "elsewhere", "--identity", "a", "--publish"],
    );
    expect_error(
        send(Some(&other_room), &whip, publish()),
        403,
        "forbidden",
        "room",
    );
    let viewer = mint(
        &env,
        &["--room", "secure", "--identity", "v", "--subscribe"],
    );
    expect_error(
        send(Some(&viewer), &whip, publish()),
        403,
        "forbidden",
        "publish",
    );

    let claims = serde_json::json!({
        "sub": "late", "room": "secure", "grants": {"publish": true}, "iat": 1, "exp": 2
    });
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
    )
    .unwrap();
    expect_error(
        send(Some(&expired), &whip, publish()),
        401,
        "unauthorized",
        "expired",
    );

    let publisher = mint(
        &env,
        &[
            "--room",
            "secure",
            "--identity",
            "p",
            "--publish",
            "--ttl",
            "10m",
        ],
    );
    let (status, _) = send(Some(&publisher), &whip, publish());
    assert_eq!(status, 201);

    let resp = http.get(server.url("/stats")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = http
        .get(server.url("/stats"))
        .bearer_auth(&publisher)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let admin = mint(&env, &["--identity", "ops", "--admin"]);
    let stats = server.stats(Some(&admin));
    assert_eq!(stats["participants"], 1, "{stats}");
    // Health probes stay open.
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}
