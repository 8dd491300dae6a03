//! PATCH on a session resource (RFC 9725 §4.3): trickled candidates, ETag preconditions and
//! an ICE restart after which media flows again.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::Server;
use manifold_loadgen::{Client, MediaShape, MediaSpec, join};
use reqwest::blocking::Client as Http;
use str0m::change::SdpAnswer;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const FRAG: &str = "application/trickle-ice-sdpfrag";

fn attr<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {sdp}"))
}

fn rtp_in(server: &Server) -> u64 {
    server.stats(None)["rtp_in"].as_u64().unwrap()
}

#[test]
fn trickle_preconditions_and_ice_restart() {
    let server = Server::start(&[], &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spec = MediaSpec {
        audio: true,
        video: true,
    };
    let joined = rt
        .block_on(join(
            &reqwest::Client::new(),
            &server.url("/whip/patch"),
            None,
            LOCAL,
            Some(spec),
        ))
        .unwrap();
    let resource = joined.resource.clone();
    let answer = joined.answer.clone();
    let local = joined.socket.local_addr().unwrap();
    let mut client = Client::publisher("pub".into(), joined, MediaShape::default()).unwrap();
    client.run_for(Duration::from_secs(2));
    assert!(client.report().connected, "publisher connects");
    let http = Http::new();

    // Trickle: the current credentials plus a candidate → 204.
    let offer_ufrag = client.with_rtc(|rtc| rtc.direct_api().local_ice_credentials());
    let trickle = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=candidate:1 1 udp 2130706431 {} {} typ host\r\na=end-of-candidates\r\n",
        offer_ufrag.ufrag,
        offer_ufrag.pass,
        local.ip(),
        local.port()
    );
    let resp = http
        .patch(&resource)
        .header("content-type", FRAG)
        .body(trickle.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);

    // Wrong content type → 415; stale ETag → 412; garbage candidate → 400.
    let resp = http
        .patch(&resource)
        .header("content-type", "application/sdp")
        .body(trickle.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let resp = http
        .patch(&resource)
        .header("content-type", FRAG)
        .header("if-match", "\"not-the-etag\"")
        .body(trickle.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 412);
    assert_eq!(
        resp.json::<serde_json::Value>().unwrap()["error"],
        "precondition_failed"
    );
    let resp = http
        .patch(&resource)
        .header("content-type", FRAG)
        .body("a=candidate:garbage\r\n")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // ICE restart: the client makes new credentials and PATCHes them; the server answers
    // with its own new credentials and a new ETag.
    let (offer, pending) = client.with_rtc(|rtc| {
        let mut change = rtc.sdp_api();
        change.ice_restart(true);
        change.apply().expect("restart offer")
    });
    let offer = offer.to_sdp_string();
    let frag = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=candidate:1 1 udp 2130706431 {} {} typ host\r\n",
        attr(&offer, "a=ice-ufrag:"),
        attr(&offer, "a=ice-pwd:"),
        local.ip(),
        local.port()
    );
    let resp = http
        .patch(&resource)
        .header("content-type", FRAG)
        .header("if-match", "*")
        .body(frag)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("etag").is_some());
    let body = resp.text().unwrap();
    let server_ufrag = attr(&body, "a=ice-ufrag:").to_owned();
    let server_pwd = attr(&body, "a=ice-pwd:").to_owned();
    assert_ne!(
        server_ufrag,
        attr(&answer, "a=ice-ufrag:"),
        "new server credentials"
    );
    assert!(body.contains("a=candidate:"), "{body}");

    let restarted: String = answer
        .lines()
        .map(|l| {
            if l.starts_with("a=ice-ufrag:") {
                format!("a=ice-ufrag:{server_ufrag}\r\n")
            } else if l.starts_with("a=ice-pwd:") {
                format!("a=ice-pwd:{server_pwd}\r\n")
            } else {
                format!("{l}\r\n")
            }
        })
        .collect();
    client
        .with_rtc(|rtc| {
            rtc.sdp_api()
                .accept_answer(pending, SdpAnswer::from_sdp_string(&restarted).unwrap())
        })
        .expect("client accepts the restarted answer");

    let before = rtp_in(&server);
    client.run_for(Duration::from_secs(3));
    let after = rtp_in(&server);
    println!("rtp_in {before} -> {after} after the ICE restart");
    assert!(after > before + 100, "media flows after the ICE restart");
    assert!(client.is_alive());
}
