//! Every endpoint × every kind of credential a hostile client can bring, against one real
//! server with a key: the answer must be the documented status and error code, row by row
//! (`docs/security.md` shows the same table). Successes are checked too, so the matrix
//! proves tokens are checked, not refused wholesale.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::{Server, rt, ws_url};
use futures_util::{SinkExt, StreamExt};
use manifold_loadgen::{MediaSpec, join};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "matrix-test-key-matrix-test-key-matrix!";
const ROOM: &str = "m";
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The credentials a request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cred {
    None,
    BadSignature,
    Expired,
    AlgNone,
    Malformed,
    WrongShape,
    WrongRoom,
    NoGrants,
    PublishOnly,
    SubscribeOnly,
    OtherIdentity,
    Admin,
}

const ALL: [Cred; 12] = [
    Cred::None,
    Cred::BadSignature,
    Cred::Expired,
    Cred::AlgNone,
    Cred::Malformed,
    Cred::WrongShape,
    Cred::WrongRoom,
    Cred::NoGrants,
    Cred::PublishOnly,
    Cred::SubscribeOnly,
    Cred::OtherIdentity,
    Cred::Admin,
];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: &Value, key: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: &str, room: Option<&str>, grants: Value) -> Value {
    let mut c = json!({"sub": sub, "grants": grants, "iat": now(), "exp": now() + 600});
    if let Some(r) = room {
        c["room"] = json!(r);
    }
    c
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// The token for `cred`; identities are `owner` except for `OtherIdentity` and `Admin`.
fn token(cred: Cred) -> Option<String> {
    let both = json!({"publish": true, "subscribe": true});
    Some(match cred {
        Cred::None => return None,
        Cred::BadSignature => sign(
            &claims("owner", Some(ROOM), both),
            "another-key-another-key-another-key!",
        ),
        Cred::Expired => {
            let mut c = claims("owner", Some(ROOM), both);
            c["iat"] = json!(1);
            c["exp"] = json!(2);
            sign(&c, KEY)
        }
        Cred::AlgNone => format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims("owner", None, json!({"admin": true})))
        ),
        Cred::Malformed => "garbage".into(),
        Cred::WrongShape => sign(&json!({"sub": 7, "exp": "soon"}), KEY),
        Cred::WrongRoom => sign(&claims("owner", Some("elsewhere"), both), KEY),
        Cred::NoGrants => sign(&claims("owner", Some(ROOM), json!({})), KEY),
        Cred::PublishOnly => sign(&claims("owner", Some(ROOM), json!({"publish": true})), KEY),
        Cred::SubscribeOnly => sign(
            &claims("owner", Some(ROOM), json!({"subscribe": true})),
            KEY,
        ),
        Cred::OtherIdentity => sign(&claims("intruder", Some(ROOM), both), KEY),
        Cred::Admin => sign(&claims("ops", None, json!({"admin": true})), KEY),
    })
}

fn owner_token() -> String {
    sign(
        &claims(
            "owner",
            Some(ROOM),
            json!({"publish": true, "subscribe": true}),
        ),
        KEY,
    )
}

/// What a row expects: a status with an error code, or success with this status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Ok(u16),
    Err(u16, &'static str),
}

const UNAUTH: Want = Want::Err(401, "unauthorized");
const FORBID: Want = Want::Err(403, "forbidden");

/// The answer every endpoint gives to the credentials that fail before any grant is
/// looked at.
fn common_refusal(cred: Cred) -> Option<Want> {
    match cred {
        Cred::None
        | Cred::BadSignature
        | Cred::Expired
        | Cred::AlgNone
        | Cred::Malformed
        | Cred::WrongShape => Some(UNAUTH),
        _ => None,
    }
}

fn offer(send: bool) -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let dir = if send {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, dir, None, None, None);
    change.apply().unwrap().0.to_sdp_string()
}

const FRAG: &str = "a=candidate:1 1 udp 2113937151 127.0.0.1 9 typ host\r\n";

struct Http {
    client: reqwest::Client,
    server: String,
}

impl Http {
    async fn send(
        &self,
        method: Method,
        url: &str,
        cred: Cred,
        body: Option<(&str, String)>,
    ) -> (u16, Value, bool) {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.server)
        };
        let mut req = self.client.request(method, url);
        if let Some(t) = token(cred) {
            req = req.bearer_auth(t);
        }
        if let Some((ctype, body)) = body {
            req = req
                .header("content-type", ctype)
                .header("if-match", "*")
                .body(body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let www = r.headers().get("www-authenticate").is_some();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body, www)
    }
}

fn check(row: &str, cred: Cred, want: Want, got: (u16, Value, bool), table: &mut Vec<String>) {
    let (status, body, www) = got;
    let cell = match want {
        Want::Ok(s) => {
            assert_eq!(status, s, "{row} × {cred:?}: {body}");
            format!("{status}")
        }
        Want::Err(s, code) => {
            assert_eq!(status, s, "{row} × {cred:?}: {body}");
            assert_eq!(body["error"], code, "{row} × {cred:?}: {body}");
            let message = body["message"].as_str().unwrap_or("");
            for internal in ["variant", "`", "line ", "column", "Base64", "Json"] {
                assert!(
                    !message.contains(internal),
                    "{row} × {cred:?} leaks: {message}"
                );
            }
            if s == 401 {
                assert!(www, "{row} × {cred:?}: 401 without WWW-Authenticate");
            }
            format!("{status} {code}")
        }
    };
    table.push(format!("{row}|{cred:?}|{cell}"));
}

#[test]
fn every_endpoint_against_every_credential() {
    let server = Server::start(
        &[],
        &[
            ("MANIFOLD_AUTH__KEY", KEY),
            ("MANIFOLD_LIMITS__SESSION_BURST_PER_IP", "100000"),
            ("MANIFOLD_LIMITS__SESSION_RATE_PER_IP", "100000"),
        ],
    );
    let mut table = Vec::new();
    rt().block_on(async {
        let http = Http {
            client: reqwest::Client::new(),
            server: server.base.clone(),
        };
        // Creating sessions.
        for (row, url, send, grant) in [
            (
                "POST /whip/{room}",
                format!("/whip/{ROOM}"),
                true,
                Cred::PublishOnly,
            ),
            (
                "POST /whep/{room}",
                format!("/whep/{ROOM}"),
                false,
                Cred::SubscribeOnly,
            ),
            (
                "POST /whep/{room}/{identity}",
                format!("/whep/{ROOM}/owner"),
                false,
                Cred::SubscribeOnly,
            ),
        ] {
            for cred in ALL {
                let want = common_refusal(cred).unwrap_or(match cred {
                    Cred::WrongRoom | Cred::NoGrants => FORBID,
                    Cred::OtherIdentity | Cred::Admin => Want::Ok(201),
                    c if c == grant => Want::Ok(201),
                    _ => FORBID,
                });
                let got = http
                    .send(
                        Method::POST,
                        &url,
                        cred,
                        Some(("application/sdp", offer(send))),
                    )
                    .await;
                check(row, cred, want, got, &mut table);
            }
        }

        // Changing and ending sessions: each row gets a fresh session of `owner`.
        let owner = owner_token();
        for (kind, grant) in [("whip", Cred::PublishOnly), ("whep", Cred::SubscribeOnly)] {
            let make = || async {
                let spec = (kind == "whip").then_some(MediaSpec {
                    audio: true,
                    video: false,
                });
                join(
                    &http.client,
                    &format!("{}/{kind}/{ROOM}", http.server),
                    Some(&owner),
                    LOCAL,
                    spec,
                )
                .await
                .expect("owner's session")
                .resource
            };
            let mut location = make().await;
            for (method, row, ok) in [
                (Method::PATCH, format!("PATCH {kind} Location"), 204),
                (Method::DELETE, format!("DELETE {kind} Location"), 200),
            ] {
                for cred in ALL {
                    let want = common_refusal(cred).unwrap_or(match cred {
                        Cred::Admin => Want::Ok(ok),
                        c if c == grant => Want::Ok(ok),
                        _ => FORBID,
                    });
                    let body = (method == Method::PATCH)
                        .then(|| ("application/trickle-ice-sdpfrag", FRAG.to_owned()));
                    let got = http.send(method.clone(), &location, cred, body).await;
                    let ended = method == Method::DELETE && got.0 == 200;
                    check(&row, cred, want, got, &mut table);
                    if ended {
                        location = make().await;
                    }
                }
            }
            // An unknown resource is a 404 for a token that may act.
            let unknown = format!("/{kind}/{ROOM}/{}", "0".repeat(32));
            let got = http.send(Method::DELETE, &unknown, Cred::Admin, None).await;
            check(
                &format!("DELETE {kind} unknown"),
                Cred::Admin,
                Want::Err(404, "not_found"),
                got,
                &mut table,
            );
        }

        // Operator endpoints.
        for (method, row) in [
            (Method::GET, "GET /stats"),
            (Method::GET, "GET /admin/rooms"),
        ] {
            let path = row.split(' ').nth(1).unwrap();
            for cred in ALL {
                let want = common_refusal(cred).unwrap_or(match cred {
                    Cred::Admin => Want::Ok(200),
                    _ => FORBID,
                });
                let got = http.send(method.clone(), path, cred, None).await;
                check(row, cred, want, got, &mut table);
            }
        }
        for cred in ALL {
            // A room with one session to close or kick, made anew for the admin row.
            let room = "closeme";
            let mut victim = None;
            if cred == Cred::Admin {
                let t = sign(&claims("v", Some(room), json!({"subscribe": true})), KEY);
                let j = join(
                    &http.client,
                    &format!("{}/whep/{room}", http.server),
                    Some(&t),
                    LOCAL,
                    None,
                )
                .await
                .unwrap();
                victim = Some(j.resource);
            }
            let want = common_refusal(cred).unwrap_or(match cred {
                Cred::Admin => Want::Ok(200),
                _ => FORBID,
            });
            let got = http
                .send(Method::DELETE, &format!("/admin/rooms/{room}"), cred, None)
                .await;
            check("DELETE /admin/rooms/{room}", cred, want, got, &mut table);
            let got = http
                .send(
                    Method::DELETE,
                    &format!("/admin/rooms/{room}/participants/p0000000000000001"),
                    cred,
                    None,
                )
                .await;
            let want = match want {
                // The room was closed by then; the participant is unknown.
                Want::Ok(_) => Want::Err(404, "not_found"),
                w => w,
            };
            check(
                "DELETE /admin/rooms/{room}/participants/{id}",
                cred,
                want,
                got,
                &mut table,
            );
            drop(victim);
        }

        // The room protocol.
        let url = ws_url(&server);
        for cred in ALL {
            for auto in [None, Some(true)] {
                let row = match auto {
                    None => "/rtc join",
                    Some(_) => "/rtc join auto_subscribe",
                };
                let want = common_refusal(cred).unwrap_or(match (cred, auto) {
                    (Cred::WrongRoom | Cred::NoGrants, _) => FORBID,
                    (Cred::PublishOnly, Some(true)) => FORBID,
                    _ => Want::Ok(200),
                });
                let (got, ws) = rtc_join(&url, cred, auto).await;
                check(row, cred, want, got, &mut table);
                if let Some(mut ws) = ws {
                    // With the session joined, the message needing the other grant.
                    let probe = match cred {
                        Cred::PublishOnly => Some(json!({"v": 1, "type": "subscribe", "id": "x",
                                                          "track": "t0000000000000001"})),
                        Cred::SubscribeOnly => Some(json!({"v": 1, "type": "publish", "id": "x",
                                                            "cid": "c", "kind": "audio",
                                                            "source": "microphone"})),
                        _ => None,
                    };
                    if let Some(p) = probe {
                        ws.send(Message::Text(p.to_string().into())).await.unwrap();
                        let reply = next_reply(&mut ws, "x").await;
                        let row = format!("/rtc {} without the grant", p["type"].as_str().unwrap());
                        let got = (
                            403 * u16::from(reply["code"] == "forbidden"),
                            json!({"error": reply["code"]}),
                            false,
                        );
                        check(&row, cred, Want::Err(403, "forbidden"), got, &mut table);
                    }
                    let _ = ws.close(None).await;
                }
            }
        }
    });
    // The matrix as docs/security.md shows it.
    eprintln!("{}", table.join("\n"));
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Join over `/rtc` with `cred`; `(status, body)` in HTTP terms: 200 for `joined`, 401/403
/// with the `error` message's code otherwise.
async fn rtc_join(url: &str, cred: Cred, auto: Option<bool>) -> ((u16, Value, bool), Option<Ws>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut join = json!({"v": 1, "type": "join", "id": "j", "room": ROOM});
    if let Some(t) = token(cred) {
        join["token"] = json!(t);
    }
    if let Some(a) = auto {
        join["auto_subscribe"] = json!(a);
    }
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    let reply = next_reply(&mut ws, "j").await;
    if reply["type"] == "joined" {
        return ((200, reply, false), Some(ws));
    }
    let status = match reply["code"].as_str() {
        Some("unauthorized") => 401,
        Some("forbidden") => 403,
        _ => 500,
    };
    let body = json!({"error": reply["code"], "message": reply["message"]});
    // The room protocol has no WWW-Authenticate; the code is what counts.
    ((status, body, true), None)
}

/// The server's answer to request `id`: `joined` or an `error` for it.
async fn next_reply(ws: &mut Ws, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == id && (v["type"] == "joined" || v["type"] == "error") {
                    return v;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("socket ended waiting for the reply to {id}: {other:?}"),
        }
    }
    panic!("no reply to {id}");
}
