//! The hostile-client matrix (issue "Hardening"): one real server with a key, every
//! endpoint against every kind of credential, each answered with the documented status and
//! error code (`{"error": code, "message": ...}`), or on the room protocol the documented
//! `error` code. Each request is well-formed apart from its credential (real SDP offers,
//! trickle fragments with the right content type, `If-Match: *`, sessions and participants
//! that exist), so a cell says what the credential alone earns. Every failure names its row
//! and case; the observed matrix is printed as Markdown (`--nocapture`) for docs/security.md.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Server, str0m_offer, wait_until};
use futures_util::{SinkExt, StreamExt};
use manifold_loadgen::{MediaSpec, join};
use reqwest::blocking::Client as Http;
use serde_json::{Value, json};
use str0m::media::{Direction, MediaKind};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "hostile-matrix-key-hostile-matrix-key!";
const OTHER_KEY: &str = "some-other-servers-key-some-other-key!";
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The room every row acts on.
const ROOM: &str = "matrix";
/// The room of the wrong-room tokens.
const ELSEWHERE: &str = "elsewhere";
/// The identity that created the WHIP and WHEP sessions the PATCH/DELETE rows aim at.
const OWNER: &str = "owner";
/// The identity of tokens that create sessions or join (never `OWNER`: a second session of
/// one identity and kind replaces the first).
const GUEST: &str = "guest";
const FRAG: &str = "application/trickle-ice-sdpfrag";
const WAIT: Duration = Duration::from_secs(5);

/// Expected cells. HTTP: the status, and for errors the JSON `error` code; room protocol:
/// `joined`/`ok`, or `error <code>`; `—` where the case does not apply (another identity's
/// session is a case only for session URLs; publish and subscribe need a token that joins).
const U: &str = "401 unauthorized";
const F: &str = "403 forbidden";
const WU: &str = "error unauthorized";
const WF: &str = "error forbidden";
const NA: &str = "—";

/// The credential cases, in column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cred {
    NoToken,
    BadSignature,
    Expired,
    AlgNone,
    Garbage,
    Dots,
    BadHeader,
    BadClaims,
    WrongRoom,
    PublishOnly,
    SubscribeOnly,
    AdminOnly,
    NoGrants,
    OtherIdentity,
    Admin,
}

const CREDS: [Cred; 15] = [
    Cred::NoToken,
    Cred::BadSignature,
    Cred::Expired,
    Cred::AlgNone,
    Cred::Garbage,
    Cred::Dots,
    Cred::BadHeader,
    Cred::BadClaims,
    Cred::WrongRoom,
    Cred::PublishOnly,
    Cred::SubscribeOnly,
    Cred::AdminOnly,
    Cred::NoGrants,
    Cred::OtherIdentity,
    Cred::Admin,
];

impl Cred {
    fn label(self) -> &'static str {
        match self {
            Cred::NoToken => "no token",
            Cred::BadSignature => "bad signature",
            Cred::Expired => "expired",
            Cred::AlgNone => "`alg: none`",
            Cred::Garbage => "`garbage`",
            Cred::Dots => "`a.b.c`",
            Cred::BadHeader => "header of wrong shape",
            Cred::BadClaims => "claims of wrong shape",
            Cred::WrongRoom => "wrong room",
            Cred::PublishOnly => "publish only",
            Cred::SubscribeOnly => "subscribe only",
            Cred::AdminOnly => "admin only, room-scoped",
            Cred::NoGrants => "no grants",
            Cred::OtherIdentity => "another identity",
            Cred::Admin => "admin",
        }
    }

    /// The token of this case for a request by `identity` that needs `grant` ("publish" or
    /// "subscribe": only the another-identity case uses it). Broken tokens would carry
    /// every grant if they were valid, so each fails for its one defect.
    fn token(self, identity: &str, grant: &str) -> Option<String> {
        let all = ["publish", "subscribe", "admin"];
        let t = match self {
            Cred::NoToken => return None,
            Cred::BadSignature => sign(OTHER_KEY, &claims(identity, None, &all, 600)),
            Cred::Expired => sign(KEY, &claims(identity, None, &all, -3600)),
            Cred::AlgNone => format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims(identity, None, &all, 600))
            ),
            Cred::Garbage => "garbage".into(),
            Cred::Dots => "a.b.c".into(),
            // Correctly signed, so the shape is all that is wrong.
            Cred::BadHeader => {
                signed_raw(&json!(["HS256", "JWT"]), &claims(identity, None, &all, 600))
            }
            Cred::BadClaims => signed_raw(
                &json!({"alg": "HS256", "typ": "JWT"}),
                &json!({"sub": 5, "room": [ROOM], "grants": "all", "iat": now(), "exp": now() + 600}),
            ),
            Cred::WrongRoom => sign(KEY, &claims(identity, Some(ELSEWHERE), &all, 600)),
            Cred::PublishOnly => sign(KEY, &claims(identity, Some(ROOM), &["publish"], 600)),
            Cred::SubscribeOnly => sign(KEY, &claims(identity, Some(ROOM), &["subscribe"], 600)),
            Cred::AdminOnly => sign(KEY, &claims("ops", Some(ROOM), &["admin"], 600)),
            Cred::NoGrants => sign(KEY, &claims(identity, Some(ROOM), &[], 600)),
            Cred::OtherIdentity => sign(KEY, &claims("intruder", Some(ROOM), &[grant], 600)),
            Cred::Admin => sign(KEY, &claims("ops", None, &["admin"], 600)),
        };
        Some(t)
    }
}

/// The endpoints, in row order. Destructive ones come late so that what they end is
/// re-created fewer times; the room-protocol rows last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    WhipPost,
    WhepPost,
    WhepPostNamed,
    WhipPatch,
    WhipDelete,
    WhepPatch,
    WhepDelete,
    Stats,
    AdminRooms,
    AdminNodes,
    AdminKick,
    AdminCloseRoom,
    RtcJoin,
    RtcJoinAutoSubscribe,
    RtcPublish,
    RtcSubscribe,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::WhipPost => "`POST /whip/{room}`",
            Endpoint::WhepPost => "`POST /whep/{room}`",
            Endpoint::WhepPostNamed => "`POST /whep/{room}/{identity}`",
            Endpoint::WhipPatch => "`PATCH` WHIP Location",
            Endpoint::WhipDelete => "`DELETE` WHIP Location",
            Endpoint::WhepPatch => "`PATCH` WHEP Location",
            Endpoint::WhepDelete => "`DELETE` WHEP Location",
            Endpoint::Stats => "`GET /stats`",
            Endpoint::AdminRooms => "`GET /admin/rooms`",
            Endpoint::AdminNodes => "`GET /admin/nodes`",
            Endpoint::AdminKick => "`DELETE /admin/rooms/{room}/participants/{id}`",
            Endpoint::AdminCloseRoom => "`DELETE /admin/rooms/{room}`",
            Endpoint::RtcJoin => "`/rtc` `join`",
            Endpoint::RtcJoinAutoSubscribe => "`/rtc` `join`, `auto_subscribe: true`",
            Endpoint::RtcPublish => "`/rtc` `publish` after `join`",
            Endpoint::RtcSubscribe => "`/rtc` `subscribe` after `join` (`auto_subscribe: false`)",
        }
    }

    /// Session URLs act on `OWNER`'s sessions; everything else is done as `GUEST`.
    fn identity(self) -> &'static str {
        match self {
            Endpoint::WhipPatch
            | Endpoint::WhipDelete
            | Endpoint::WhepPatch
            | Endpoint::WhepDelete => OWNER,
            _ => GUEST,
        }
    }

    /// The grant the session behind a session URL needs.
    fn grant(self) -> &'static str {
        match self {
            Endpoint::WhipPatch | Endpoint::WhipDelete => "publish",
            _ => "subscribe",
        }
    }
}

/// The matrix: what each endpoint answers to each case (columns as in [`CREDS`]).
#[rustfmt::skip]
const MATRIX: [(Endpoint, [&str; 15]); 16] = [
    //                          none bad-sig expired none garbage a.b.c header claims room  pub    sub    adm-room nogr other  admin
    (Endpoint::WhipPost,        [U, U, U, U, U, U, U, U, F,  "201", F,     "201",  F,  NA, "201"]),
    (Endpoint::WhepPost,        [U, U, U, U, U, U, U, U, F,  F,     "201", "201",  F,  NA, "201"]),
    (Endpoint::WhepPostNamed,   [U, U, U, U, U, U, U, U, F,  F,     "201", "201",  F,  NA, "201"]),
    (Endpoint::WhipPatch,       [U, U, U, U, U, U, U, U, F,  "204", F,     "204",  F,  F,  "204"]),
    (Endpoint::WhipDelete,      [U, U, U, U, U, U, U, U, F,  "200", F,     "200",  F,  F,  "200"]),
    (Endpoint::WhepPatch,       [U, U, U, U, U, U, U, U, F,  F,     "204", "204",  F,  F,  "204"]),
    (Endpoint::WhepDelete,      [U, U, U, U, U, U, U, U, F,  F,     "200", "200",  F,  F,  "200"]),
    (Endpoint::Stats,           [U, U, U, U, U, U, U, U, F,  F,     F,     F,      F,  NA, "200"]),
    (Endpoint::AdminRooms,      [U, U, U, U, U, U, U, U, F,  F,     F,     F,      F,  NA, "200"]),
    (Endpoint::AdminNodes,      [U, U, U, U, U, U, U, U, F,  F,     F,     F,      F,  NA, "200"]),
    (Endpoint::AdminKick,       [U, U, U, U, U, U, U, U, F,  F,     F,     "200",  F,  NA, "200"]),
    (Endpoint::AdminCloseRoom,  [U, U, U, U, U, U, U, U, F,  F,     F,     "200",  F,  NA, "200"]),
    (Endpoint::RtcJoin,         [WU, WU, WU, WU, WU, WU, WU, WU, WF, "joined", "joined", "joined", WF, NA, "joined"]),
    (Endpoint::RtcJoinAutoSubscribe,
                                [WU, WU, WU, WU, WU, WU, WU, WU, WF, WF, "joined", "joined", WF, NA, "joined"]),
    (Endpoint::RtcPublish,      [NA, NA, NA, NA, NA, NA, NA, NA, NA, "ok", WF, "ok", NA, NA, "ok"]),
    (Endpoint::RtcSubscribe,    [NA, NA, NA, NA, NA, NA, NA, NA, NA, WF, "ok", "ok", NA, NA, "ok"]),
];

/// Words that mean a message quotes a parser or library instead of speaking to the client.
const INTERNALS: [&str; 10] = [
    "`",
    "jsonwebtoken",
    "serde",
    "Json",
    "Base64",
    "variant",
    "line ",
    "column",
    "ErrorKind",
    "invalid type",
];

#[test]
fn every_endpoint_against_every_credential() {
    let started = Instant::now();
    let server = Server::start(
        &[],
        &[
            ("MANIFOLD_AUTH__KEY", KEY),
            // Sessions here never connect; they must outlive the test all the same.
            ("MANIFOLD_MEDIA__CONNECT_TIMEOUT_SECS", "300"),
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut fx = Fixtures::new(&server, &rt);
    let mut failures = Vec::new();
    let mut observed: Vec<(Endpoint, Vec<String>)> = Vec::new();
    for (endpoint, expected) in MATRIX {
        let mut cells = Vec::new();
        for (cred, want) in CREDS.into_iter().zip(expected) {
            let row = format!("{} × {}", endpoint.label(), cred.label());
            let got = if want == NA {
                NA.to_owned()
            } else {
                let got = fx.run(endpoint, cred);
                failures.extend(got.problems.iter().map(|p| format!("{row}: {p}")));
                if got.cell != want {
                    failures.push(format!(
                        "{row}: expected {want}, got {} ({})",
                        got.cell, got.message
                    ));
                }
                if let Some(problem) = fx.renew_after(endpoint, &got.cell) {
                    failures.push(format!("{row}: {problem}"));
                }
                got.cell
            };
            cells.push(got);
        }
        observed.push((endpoint, cells));
    }
    println!("{}", markdown(&observed));
    println!("matrix done in {:?}", started.elapsed());
    // The matrix proves something only if valid tokens get through: count the successes.
    let successes = observed
        .iter()
        .flat_map(|(_, cells)| cells)
        .filter(|c| c.starts_with('2') || *c == "joined" || *c == "ok")
        .count();
    assert!(successes >= 30, "only {successes} successful cells");
    assert!(
        failures.is_empty(),
        "{} cells answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What one row got: its cell, the error message if any, and anything else wrong with the
/// answer (a leaking message, a 401 without `WWW-Authenticate: Bearer`).
struct Got {
    cell: String,
    message: String,
    problems: Vec<String>,
}

/// A WHIP or WHEP session of `OWNER`: its URL and a trickle fragment that is valid for it.
struct Session {
    location: String,
    trickle: String,
}

/// What the rows act on, re-created when a row legitimately ends it.
struct Fixtures<'a> {
    server: &'a Server,
    rt: &'a tokio::runtime::Runtime,
    http: Http,
    whip: Session,
    whep: Session,
    /// A participant to kick (a WHIP publisher of its own identity).
    victim: String,
    victims: u32,
}

impl<'a> Fixtures<'a> {
    fn new(server: &'a Server, rt: &'a tokio::runtime::Runtime) -> Self {
        let http = Http::builder().timeout(WAIT * 2).build().unwrap();
        let whip = session(server, rt, "whip");
        let whep = session(server, rt, "whep");
        let mut fx = Fixtures {
            server,
            rt,
            http,
            whip,
            whep,
            victim: String::new(),
            victims: 0,
        };
        fx.new_victim();
        fx
    }

    /// After a row: if it ended something, check that it is gone and make it again.
    fn renew_after(&mut self, endpoint: Endpoint, cell: &str) -> Option<String> {
        if !cell.starts_with('2') {
            return None;
        }
        let mut problem = None;
        match endpoint {
            Endpoint::WhipDelete => {
                problem = self.still_there(&self.whip.location);
                self.whip = session(self.server, self.rt, "whip");
            }
            Endpoint::WhepDelete => {
                problem = self.still_there(&self.whep.location);
                self.whep = session(self.server, self.rt, "whep");
            }
            Endpoint::AdminKick => self.new_victim(),
            Endpoint::AdminCloseRoom => {
                self.whip = session(self.server, self.rt, "whip");
                self.whep = session(self.server, self.rt, "whep");
                self.new_victim();
            }
            _ => {}
        }
        problem
    }

    /// A problem if the session at `location` still answers its owner after a DELETE.
    fn still_there(&self, location: &str) -> Option<String> {
        let owner = token(OWNER, Some(ROOM), &["publish", "subscribe"]);
        let r = self
            .http
            .delete(location)
            .bearer_auth(&owner)
            .send()
            .unwrap();
        (r.status().as_u16() != 404).then(|| {
            format!(
                "the session is still there after the DELETE ({})",
                r.status()
            )
        })
    }

    fn new_victim(&mut self) {
        self.victims += 1;
        let identity = format!("victim{}", self.victims);
        let t = token(&identity, Some(ROOM), &["publish"]);
        let spec = MediaSpec {
            audio: true,
            video: false,
        };
        self.rt
            .block_on(join(
                &reqwest::Client::new(),
                &self.server.url(&format!("/whip/{ROOM}")),
                Some(&t),
                LOCAL,
                Some(spec),
            ))
            .expect("the victim publishes");
        let admin = token("ops", None, &["admin"]);
        let mut pid = None;
        wait_until(WAIT, || {
            let rooms: Value = self
                .http
                .get(self.server.url("/admin/rooms"))
                .bearer_auth(&admin)
                .send()
                .unwrap()
                .json()
                .unwrap();
            pid = rooms["rooms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["room"] == ROOM)
                .flat_map(|r| r["participants"].as_array().cloned().unwrap_or_default())
                .find(|p| p["identity"] == identity.as_str())
                .and_then(|p| p["id"].as_str().map(str::to_owned));
            pid.is_some()
        });
        self.victim = pid.expect("the victim is listed");
    }

    fn run(&mut self, endpoint: Endpoint, cred: Cred) -> Got {
        let token = cred.token(endpoint.identity(), endpoint.grant());
        let url = |path: &str| self.server.url(path);
        let sdp = |req: reqwest::blocking::RequestBuilder, direction| {
            req.header("content-type", "application/sdp")
                .body(offer(direction))
        };
        let trickle = |req: reqwest::blocking::RequestBuilder, s: &Session| {
            req.header("content-type", FRAG)
                .header("if-match", "*")
                .body(s.trickle.clone())
        };
        let h = &self.http;
        let req = match endpoint {
            Endpoint::WhipPost => sdp(h.post(url(&format!("/whip/{ROOM}"))), Direction::SendOnly),
            Endpoint::WhepPost => sdp(h.post(url(&format!("/whep/{ROOM}"))), Direction::RecvOnly),
            Endpoint::WhepPostNamed => sdp(
                h.post(url(&format!("/whep/{ROOM}/{OWNER}"))),
                Direction::RecvOnly,
            ),
            Endpoint::WhipPatch => trickle(h.patch(&self.whip.location), &self.whip),
            Endpoint::WhipDelete => h.delete(&self.whip.location),
            Endpoint::WhepPatch => trickle(h.patch(&self.whep.location), &self.whep),
            Endpoint::WhepDelete => h.delete(&self.whep.location),
            Endpoint::Stats => h.get(url("/stats")),
            Endpoint::AdminRooms => h.get(url("/admin/rooms")),
            Endpoint::AdminNodes => h.get(url("/admin/nodes")),
            Endpoint::AdminKick => h.delete(url(&format!(
                "/admin/rooms/{ROOM}/participants/{}",
                self.victim
            ))),
            Endpoint::AdminCloseRoom => h.delete(url(&format!("/admin/rooms/{ROOM}"))),
            Endpoint::RtcJoin => return self.rtc(token, None, None),
            Endpoint::RtcJoinAutoSubscribe => return self.rtc(token, Some(true), None),
            Endpoint::RtcPublish => {
                let publish = json!({"v": 1, "type": "publish", "id": "act", "cid": "cam",
                                     "kind": "video", "source": "camera"});
                return self.rtc(token, None, Some(Action::Send(publish)));
            }
            Endpoint::RtcSubscribe => {
                return self.rtc(token, Some(false), Some(Action::SubscribeToOwner));
            }
        };
        let req = match &token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        http_outcome(req.send().expect("the server answers"))
    }

    fn rtc(
        &self,
        token: Option<String>,
        auto_subscribe: Option<bool>,
        action: Option<Action>,
    ) -> Got {
        let url = format!("{}/rtc", self.server.base.replacen("http", "ws", 1));
        self.rt
            .block_on(rtc_row(&url, token, auto_subscribe, action))
    }
}

/// What a room-protocol row does once joined.
enum Action {
    Send(Value),
    /// `subscribe` to a track of `OWNER`'s WHIP session, found in `joined`.
    SubscribeToOwner,
}

/// Join over `/rtc`, then maybe act; the `join` (or the action) is answered by an `error`
/// with its id, or accepted: `joined`, or for an action a `pong` to the `ping` sent right
/// after it (the server handles one socket's messages in order, so an error for the action
/// would come first).
async fn rtc_row(
    url: &str,
    token: Option<String>,
    auto_subscribe: Option<bool>,
    action: Option<Action>,
) -> Got {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    let mut join = json!({"v": 1, "type": "join", "id": "join", "room": ROOM, "name": "row"});
    if let Some(t) = token {
        join["token"] = json!(t);
    }
    if let Some(a) = auto_subscribe {
        join["auto_subscribe"] = json!(a);
    }
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(join)).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let answer = next_answer(&mut ws, deadline, "join", "joined").await;
    let mut got = match answer {
        Ok(joined) => match action {
            None => ws_outcome("joined", None),
            Some(action) => {
                let msg = match action {
                    Action::Send(m) => m,
                    Action::SubscribeToOwner => {
                        let track = joined["participants"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|p| p["identity"] == OWNER)
                            .and_then(|p| p["tracks"][0]["id"].as_str())
                            .unwrap_or_else(|| panic!("no track of {OWNER} in {joined}"))
                            .to_owned();
                        json!({"v": 1, "type": "subscribe", "id": "act", "track": track})
                    }
                };
                ws.send(send(msg)).await.unwrap();
                ws.send(send(json!({"v": 1, "type": "ping", "ts": 7})))
                    .await
                    .unwrap();
                match next_answer(&mut ws, deadline, "act", "pong").await {
                    Ok(_) => ws_outcome("ok", None),
                    Err(e) => e,
                }
            }
        },
        Err(e) => e,
    };
    if got.cell == "joined" || got.cell == "ok" {
        let _ = ws.send(send(json!({"v": 1, "type": "leave"}))).await;
    } else {
        let _ = ws.close(None).await;
    }
    // Read to the end so the close handshake completes.
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    if end.is_err() {
        got.problems.push("the socket did not close".into());
    }
    got
}

/// The next message that answers the request `id`: `Ok` with a message of type `success`,
/// `Err` with the outcome of an `error` for it (or of a `closing`, or of silence).
async fn next_answer(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    deadline: Instant,
    id: &str,
    success: &str,
) -> Result<Value, Got> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            Ok(other) => return Err(ws_outcome("socket ended", Some(format!("{other:?}")))),
            Err(_) => return Err(ws_outcome("no answer", None)),
        };
        let v: Value = serde_json::from_str(frame.as_str()).unwrap();
        match v["type"].as_str() {
            Some(t) if t == success => return Ok(v),
            Some("error") if v["id"] == id => {
                let code = v["code"].as_str().unwrap_or("(no code)");
                let message = v["message"].as_str().map(str::to_owned);
                let mut got = ws_outcome(&format!("error {code}"), message.clone());
                got.problems.extend(message_problems(message.as_deref()));
                if message
                    .as_deref()
                    .is_some_and(|m| m.contains("Authorization"))
                {
                    got.problems.push(format!(
                        "{message:?} points at a header a browser's WebSocket cannot send"
                    ));
                }
                return Err(got);
            }
            Some("error") => {
                return Err(ws_outcome("error for another message", Some(v.to_string())));
            }
            Some("closing") => return Err(ws_outcome("closing", Some(v.to_string()))),
            _ => {}
        }
    }
}

fn ws_outcome(cell: &str, message: Option<String>) -> Got {
    Got {
        cell: cell.to_owned(),
        message: message.unwrap_or_default(),
        problems: Vec::new(),
    }
}

/// The cell of an HTTP answer: the status, with the JSON `error` code of an error; an
/// error must be `{"error": code, "message": text}` in the client's words, and a 401 must
/// name the Bearer scheme.
fn http_outcome(r: reqwest::blocking::Response) -> Got {
    let status = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().unwrap_or_default();
    let mut problems = Vec::new();
    if status < 400 {
        return Got {
            cell: status.to_string(),
            message: String::new(),
            problems,
        };
    }
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let code = body["error"].as_str();
    let message = body["message"].as_str();
    if code.is_none() {
        problems.push(format!("the body is not a JSON error: {text:?}"));
    }
    problems.extend(message_problems(message));
    if status == 401 && !www.as_deref().is_some_and(|v| v.starts_with("Bearer")) {
        problems.push(format!("401 with WWW-Authenticate {www:?}, not Bearer"));
    }
    Got {
        cell: format!("{status} {}", code.unwrap_or("(no code)")),
        message: message.unwrap_or(&text).to_owned(),
        problems,
    }
}

fn message_problems(message: Option<&str>) -> Vec<String> {
    let Some(m) = message.filter(|m| !m.trim().is_empty()) else {
        return vec!["the error has no message".into()];
    };
    INTERNALS
        .iter()
        .filter(|w| m.contains(*w))
        .map(|w| format!("the message {m:?} leaks internals ({w:?})"))
        .collect()
}

/// The observed matrix as a Markdown table: a row per endpoint, a column per case.
fn markdown(rows: &[(Endpoint, Vec<String>)]) -> String {
    let mut out = String::from("| endpoint |");
    for c in CREDS {
        out.push_str(&format!(" {} |", c.label()));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(CREDS.len()));
    out.push('\n');
    for (endpoint, cells) in rows {
        out.push_str(&format!("| {} |", endpoint.label()));
        for c in cells {
            out.push_str(&format!(" {c} |"));
        }
        out.push('\n');
    }
    out
}

/// A session of `OWNER` (WHIP publishing audio and video, or WHEP playing), and a trickle
/// fragment carrying its own ICE credentials and a candidate.
fn session(server: &Server, rt: &tokio::runtime::Runtime, kind: &str) -> Session {
    let t = token(OWNER, Some(ROOM), &["publish", "subscribe"]);
    let spec = (kind == "whip").then_some(MediaSpec {
        audio: true,
        video: true,
    });
    let mut joined = rt
        .block_on(join(
            &reqwest::Client::new(),
            &server.url(&format!("/{kind}/{ROOM}")),
            Some(&t),
            LOCAL,
            spec,
        ))
        .unwrap_or_else(|e| panic!("{OWNER} creates a {kind} session: {e:?}"));
    let creds = joined.rtc.direct_api().local_ice_credentials();
    let local = joined.socket.local_addr().unwrap();
    let trickle = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=candidate:1 1 udp 2130706431 {} {} typ host\r\na=end-of-candidates\r\n",
        creds.ufrag,
        creds.pass,
        local.ip(),
        local.port()
    );
    Session {
        location: joined.resource.clone(),
        trickle,
    }
}

/// An audio and a video m-line of `direction` from a str0m client.
fn offer(direction: Direction) -> String {
    str0m_offer(
        &[(MediaKind::Audio, direction), (MediaKind::Video, direction)],
        |c| c,
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for `sub` in `room` (every room with `None`) with `grants`, expiring `ttl`
/// seconds from now (negative: in the past).
fn claims(sub: &str, room: Option<&str>, grants: &[&str], ttl: i64) -> Value {
    let now = now();
    let exp = now.saturating_add_signed(ttl);
    let mut g = serde_json::Map::new();
    for name in grants {
        g.insert((*name).into(), Value::Bool(true));
    }
    let mut c = json!({"sub": sub, "grants": g, "iat": exp.min(now), "exp": exp});
    if let Some(r) = room {
        c["room"] = json!(r);
    }
    c
}

/// A valid token of the server's key.
fn token(sub: &str, room: Option<&str>, grants: &[&str]) -> String {
    sign(KEY, &claims(sub, room, grants, 600))
}

fn sign(key: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

/// A token of any header and claims, with a correct HS256 signature of the server's key.
fn signed_raw(header: &Value, claims: &Value) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}
