//! Webhooks from the real binary to a real HTTP receiver (axum on 127.0.0.1:0): a room's
//! events arrive in order with signatures that verify; a receiver that is down, then back,
//! gets them re-sent; one answering 500 gets retries with backoff; a 10 s slow one makes the
//! queue bound hold and drops counted, while joining and media go on.
//!
//! Signatures are checked here from the Standard Webhooks definition (HMAC-SHA256 over
//! `id.timestamp.body`, keyed by the base64 after `whsec_`), computed with the test's own
//! calls into aws-lc-rs, not with the server's signing function.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::room::RoomClient;
use common::{Server, rt, ws_url};
use serde_json::{Value, json};

/// The Standard Webhooks specification's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(15);

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Hook {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    /// When it arrived (before the receiver answered).
    at: Instant,
}

impl Hook {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }
}

/// How the receiver answers.
#[derive(Clone)]
struct Behaviour {
    /// Answer 500 to this many requests first.
    fail_first: Arc<AtomicU32>,
    /// Hold this many requests first, each until the test adds a permit to `gate`.
    hold_first: Arc<AtomicU32>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Behaviour {
    /// Answer 204 at once.
    fn prompt() -> Behaviour {
        Behaviour {
            fail_first: Arc::new(AtomicU32::new(0)),
            hold_first: Arc::new(AtomicU32::new(0)),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }

    /// Answer 500 to the first `n` requests.
    fn failing(n: u32) -> Behaviour {
        let b = Behaviour::prompt();
        b.fail_first.store(n, Ordering::Release);
        b
    }

    /// Hang on the first request until [`Behaviour::release`].
    fn hanging() -> Behaviour {
        let b = Behaviour::prompt();
        b.hold_first.store(1, Ordering::Release);
        b
    }

    fn release(&self) {
        self.gate.add_permits(1);
    }
}

/// Take one from `n` if it is not 0.
fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    hooks: Arc<Mutex<Vec<Hook>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listen on `addr` (port 0: one the system picks).
    async fn start(addr: SocketAddr, behaviour: Behaviour) -> Receiver {
        let hooks: Arc<Mutex<Vec<Hook>>> = Arc::default();
        let recorded = hooks.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let recorded = recorded.clone();
                let behaviour = behaviour.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    recorded.lock().unwrap().push(Hook {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body: body.to_vec(),
                        at: Instant::now(),
                    });
                    if take(&behaviour.hold_first) {
                        let _ = behaviour.gate.acquire().await.map(|p| p.forget());
                    }
                    if take(&behaviour.fail_first) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("receiver binds");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("receiver serves");
        });
        Receiver {
            addr,
            hooks,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    /// Hooks answered 2xx: the last attempt of each id (the receiver fails first ones only).
    fn distinct(&self) -> Vec<Hook> {
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<Hook> = Vec::new();
        for h in self.hooks().into_iter().rev() {
            if seen.insert(h.id.clone()) {
                out.push(h);
            }
        }
        out.reverse();
        out
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// The server, sending webhooks to `url` with `settings` (`[webhooks]` keys and values).
fn server(url: &str, settings: &[(&str, &str)]) -> Server {
    let urls = format!("[\"{url}\"]");
    let mut env: Vec<(String, String)> = vec![
        ("MANIFOLD_WEBHOOKS__URLS".into(), urls),
        ("MANIFOLD_WEBHOOKS__SECRET".into(), SECRET.into()),
    ];
    for (k, v) in settings {
        env.push((
            format!("MANIFOLD_WEBHOOKS__{}", k.to_uppercase()),
            (*v).into(),
        ));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start(&[], &env)
}

/// This URL's counters in `/stats`.
async fn counters(server: &Server) -> Value {
    let stats: Value = reqwest::get(server.url("/stats"))
        .await
        .expect("GET /stats")
        .json()
        .await
        .expect("stats JSON");
    stats["webhooks"]["urls"][0].clone()
}

/// Wait until counter `name` satisfies `ok`; panic with the counters after `WAIT`.
async fn until_counter(server: &Server, name: &str, ok: impl Fn(u64) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = counters(server).await;
        if ok(c[name].as_u64().unwrap_or_default()) {
            return c;
        }
        assert!(Instant::now() < deadline, "waiting for {name}: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the receiver has had `n` requests.
async fn until_hooks(receiver: &Receiver, n: usize) -> Vec<Hook> {
    let deadline = Instant::now() + WAIT;
    loop {
        let hooks = receiver.hooks();
        if hooks.len() >= n {
            return hooks;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {n} hooks: {:?}",
            story(&hooks)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `hook` carries a valid Standard Webhooks signature by [`SECRET`], made within the
/// last five minutes.
fn verifies(hook: &Hook) -> bool {
    let key = BASE64
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let mut signed = format!("{}.{}.", hook.id, hook.timestamp).into_bytes();
    signed.extend_from_slice(&hook.body);
    let fresh = hook.timestamp.parse::<u64>().is_ok_and(|t| {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        t.abs_diff(now) < 300
    });
    let valid = hook.signature.split(' ').any(|s| {
        s.strip_prefix("v1,")
            .and_then(|b| BASE64.decode(b).ok())
            .is_some_and(|tag| aws_lc_rs::hmac::verify(&key, &signed, &tag).is_ok())
    });
    fresh && valid && hook.id.starts_with("msg_")
}

/// The events a room went through, as `type` or `type:identity`.
fn story(hooks: &[Hook]) -> Vec<String> {
    hooks
        .iter()
        .map(|h| {
            let b = h.json();
            match b["data"]["participant"]["identity"].as_str() {
                Some(who) => format!("{}:{who}", b["type"].as_str().unwrap_or_default()),
                None => b["type"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

#[test]
fn a_rooms_events_arrive_in_order_and_signed() {
    rt().block_on(async {
        let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), Behaviour::prompt()).await;
        let server = server(&receiver.url(), &[]);
        let url = ws_url(&server);
        let a = RoomClient::join(&url, "hooked", "alice", json!({})).await;
        a.wait("alice connects", WAIT, |s| s.connected).await;
        a.publish("mic", "audio", "microphone");
        a.wait("alice's track is published", WAIT, |s| {
            s.published.len() == 1
        })
        .await;
        let b = RoomClient::join(&url, "hooked", "bob", json!({})).await;
        b.wait("bob receives alice's audio", WAIT, |s| {
            s.received.values().any(|r| r.packets > 10)
        })
        .await;
        let mic = a.with(|s| s.published["mic"].clone());
        a.send(json!({"v": 1, "type": "unpublish", "id": "u", "track": mic}));
        b.wait("bob sees the unpublish", WAIT, |s| {
            s.messages.iter().any(|m| m["type"] == "track_unpublished")
        })
        .await;
        a.send(json!({"v": 1, "type": "leave"}));
        b.wait("bob sees alice leave", WAIT, |s| {
            s.messages.iter().any(|m| m["type"] == "participant_left")
        })
        .await;
        b.send(json!({"v": 1, "type": "leave"}));
        a.shutdown().await;
        b.shutdown().await;

        let want = [
            "room_started",
            "participant_joined:alice",
            "track_published:alice",
            "participant_joined:bob",
            "track_unpublished:alice",
            "participant_left:alice",
            "participant_left:bob",
            "room_finished",
        ];
        let c = until_counter(&server, "delivered", |n| n >= want.len() as u64).await;
        let hooks = receiver.hooks();
        assert_eq!(story(&hooks), want);
        for h in &hooks {
            assert!(verifies(h), "signature of {h:?}");
            let b = h.json();
            assert_eq!(b["data"]["room"], "hooked");
            assert_eq!(b["data"]["node"], "local");
        }
        let mut ids: Vec<&str> = hooks.iter().map(|h| h.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), hooks.len(), "one id per message");
        let published = hooks[2].json();
        assert_eq!(published["data"]["track"]["kind"], "audio");
        assert_eq!(published["data"]["track"]["source"], "microphone");
        assert_eq!(hooks[5].json()["data"]["reason"], "requested");

        // An altered body, or the signature of another message, does not verify.
        let mut altered = hooks[0].clone();
        altered.body = br#"{"type":"room_finished"}"#.to_vec();
        assert!(!verifies(&altered));
        let mut resigned = hooks[0].clone();
        resigned.signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into();
        assert!(!verifies(&resigned));

        assert_eq!(c["queued"], want.len(), "{c}");
        assert_eq!(
            (&c["retried"], &c["failed"], &c["dropped"]),
            (&json!(0), &json!(0), &json!(0)),
            "{c}"
        );
        receiver.stop().await;
    });
}

#[test]
fn events_raised_while_the_receiver_is_down_arrive_when_it_is_back() {
    // A port nobody listens on, until the receiver comes up on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = server(
        &format!("http://{addr}/hook"),
        &[
            ("max_attempts", "100"),
            ("backoff_base_ms", "50"),
            ("backoff_max_ms", "200"),
            ("request_timeout_ms", "2000"),
        ],
    );
    rt().block_on(async {
        let a = RoomClient::join(&ws_url(&server), "down", "alice", json!({})).await;
        a.wait("alice connects", WAIT, |s| s.connected).await;
        // room_started and participant_joined are raised, and refused at the door.
        let c = until_counter(&server, "retried", |n| n >= 2).await;
        assert_eq!(c["delivered"], 0, "{c}");
        assert_eq!(c["queued"], 2, "{c}");
        let receiver = Receiver::start(addr, Behaviour::prompt()).await;
        a.send(json!({"v": 1, "type": "leave"}));
        a.shutdown().await;
        let c = until_counter(&server, "delivered", |n| n == 4).await;
        let hooks = receiver.hooks();
        assert_eq!(
            story(&hooks),
            [
                "room_started",
                "participant_joined:alice",
                "participant_left:alice",
                "room_finished"
            ]
        );
        assert!(hooks.iter().all(verifies));
        assert_eq!(
            (&c["queued"], &c["failed"], &c["dropped"]),
            (&json!(4), &json!(0), &json!(0)),
            "{c}"
        );
        receiver.stop().await;
    });
}

#[test]
fn a_receiver_answering_500_gets_retries_with_backoff() {
    rt().block_on(async {
        let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), Behaviour::failing(3)).await;
        // One lane, so that the first message is the one that meets the three 500s.
        let server = server(
            &receiver.url(),
            &[
                ("lanes", "1"),
                ("max_attempts", "5"),
                ("backoff_base_ms", "100"),
                ("backoff_max_ms", "1000"),
            ],
        );
        let a = RoomClient::join(&ws_url(&server), "flaky", "alice", json!({})).await;
        a.wait("alice connects", WAIT, |s| s.connected).await;
        a.send(json!({"v": 1, "type": "leave"}));
        a.shutdown().await;
        let c = until_counter(&server, "delivered", |n| n == 4).await;
        let hooks = until_hooks(&receiver, 7).await;
        // Four tries of room_started (three 500s, then 204), then the others once each.
        assert_eq!(hooks.len(), 7, "{:?}", story(&hooks));
        assert!(
            hooks[..4]
                .iter()
                .all(|h| h.id == hooks[0].id && h.kind() == "room_started")
        );
        assert!(hooks.iter().all(verifies), "every attempt is signed");
        // Each retry waited at least the lower half of its backoff (100, 200, 400 ms): a
        // lower bound, which a slow machine can only exceed.
        for (i, half_ms) in [50, 100, 200].into_iter().enumerate() {
            let gap = hooks[i + 1].at - hooks[i].at;
            assert!(gap >= Duration::from_millis(half_ms), "retry {i}: {gap:?}");
        }
        assert_eq!(
            story(&receiver.distinct()),
            [
                "room_started",
                "participant_joined:alice",
                "participant_left:alice",
                "room_finished"
            ]
        );
        assert_eq!(
            (&c["retried"], &c["failed"], &c["dropped"]),
            (&json!(3), &json!(0), &json!(0)),
            "{c}"
        );
        receiver.stop().await;
    });
}

#[test]
fn a_slow_receiver_costs_dropped_webhooks_and_nothing_else() {
    const QUEUE: u64 = 2;
    /// How long the receiver sits on the first message, at least.
    const SLOW: Duration = Duration::from_secs(10);
    rt().block_on(async {
        let slow = Behaviour::hanging();
        let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), slow.clone()).await;
        let server = server(
            &receiver.url(),
            &[
                ("lanes", "1"),
                ("queue", &QUEUE.to_string()),
                ("request_timeout_ms", "60000"),
            ],
        );
        let url = ws_url(&server);
        // room_started goes out and hangs; what follows fills the queue, then is dropped.
        let a = RoomClient::join(&url, "slow", "alice", json!({})).await;
        a.wait("alice connects", WAIT, |s| s.connected).await;
        a.publish("cam", "video", "camera");
        a.publish("mic", "audio", "microphone");
        a.wait("alice's tracks are published", WAIT, |s| {
            s.published.len() == 2
        })
        .await;
        let b = RoomClient::join(&url, "slow", "bob", json!({})).await;
        b.wait(
            "bob joins and receives both tracks while the receiver hangs",
            WAIT,
            |s| s.received.len() == 2 && s.received.values().all(|r| r.packets > 10),
        )
        .await;
        b.publish("mic", "audio", "microphone");
        a.wait("alice receives bob's audio", WAIT, |s| {
            s.received.values().any(|r| r.packets > 10)
        })
        .await;
        // Raised so far: room_started, two joins, three publications.
        let c = until_counter(&server, "dropped", |_| true).await;
        let (queued, dropped) = (
            c["queued"].as_u64().unwrap(),
            c["dropped"].as_u64().unwrap(),
        );
        assert_eq!(queued + dropped, 6, "{c}");
        assert!(
            c["pending"].as_u64().unwrap() <= QUEUE,
            "the bound holds: {c}"
        );
        assert!(dropped >= 6 - 1 - QUEUE, "{c}");
        assert_eq!(c["delivered"], 0, "the receiver has not answered yet: {c}");
        assert_eq!(receiver.hooks().len(), 1, "one message in flight");

        // The receiver answers (no sooner than SLOW after the message came); what the queue
        // held follows in order: an unbroken prefix of the room's story, the rest dropped.
        let arrived = receiver.hooks()[0].at;
        tokio::time::sleep_until((arrived + SLOW).into()).await;
        slow.release();
        let c = until_counter(&server, "delivered", |n| n == queued).await;
        let want = [
            "room_started",
            "participant_joined:alice",
            "track_published:alice",
            "track_published:alice",
            "participant_joined:bob",
            "track_published:bob",
        ];
        assert_eq!(story(&receiver.hooks()), want[..queued as usize]);
        assert_eq!(
            (&c["retried"], &c["failed"], &c["dropped"]),
            (&json!(0), &json!(0), &json!(dropped)),
            "{c}"
        );
        a.shutdown().await;
        b.shutdown().await;
        receiver.stop().await;
    });
}
