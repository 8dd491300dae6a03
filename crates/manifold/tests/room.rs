//! The room protocol (`docs/protocol.md`) against the real server, with str0m clients:
//! join/leave, publish/unpublish, concurrent changes, selective subscription, reconnection
//! inside the grace period, identity replacement, and bad input.

mod common;

use std::time::Duration;

use common::room::RoomClient;
use common::{Server, rt, ws_url};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);

fn track_of(c: &RoomClient, publisher: &str, source: &str) -> Option<String> {
    c.with(|s| {
        s.tracks
            .iter()
            .find(|(_, (owner, t))| owner == publisher && t["source"] == source)
            .map(|(id, _)| id.clone())
    })
}

#[test]
fn publish_subscribe_unpublish_leave() {
    let server = Server::start(&[], &[]);
    rt().block_on(async {
        let url = ws_url(&server);
        let a = RoomClient::join(&url, "r1", "alice", json!({})).await;
        let b = RoomClient::join(&url, "r1", "bob", json!({})).await;
        a.wait("alice connects", WAIT, |s| s.connected).await;
        b.wait("bob connects", WAIT, |s| s.connected).await;
        let alice = a.id();
        b.wait("bob sees alice", WAIT, |s| {
            s.participants.contains_key(&alice)
        })
        .await;

        a.publish("mic", "audio", "microphone");
        a.publish("cam", "video", "camera");
        a.wait("alice's tracks are published", WAIT, |s| {
            s.published.len() == 2
        })
        .await;
        b.wait("bob learns of both tracks", WAIT, |s| s.tracks.len() == 2)
            .await;
        let mic = track_of(&b, &alice, "microphone").unwrap();
        let cam = track_of(&b, &alice, "camera").unwrap();
        b.wait("bob receives alice's audio and video", WAIT, |s| {
            s.received.get(&mic).is_some_and(|r| r.packets > 50)
                && s.received.get(&cam).is_some_and(|r| r.packets > 50)
        })
        .await;
        let one_ssrc = b.with(|s| s.received[&cam].ssrcs.len() == 1);
        assert!(one_ssrc, "one SSRC per received track");

        // Bob publishes back.
        b.publish("cam", "video", "camera");
        let bob = b.id();
        a.wait("alice receives bob's video", WAIT, |s| {
            s.tracks
                .iter()
                .any(|(id, (o, _))| o == &bob && s.received.get(id).is_some_and(|r| r.packets > 20))
        })
        .await;

        // Mute is signalled to everyone.
        a.send(json!({"v": 1, "type": "mute", "id": "m", "track": mic, "muted": true}));
        b.wait("bob sees the mute", WAIT, |s| {
            s.tracks.get(&mic).is_some_and(|(_, t)| t["muted"] == true)
        })
        .await;

        // Unpublishing the camera: bob is told, and its m-line stops.
        a.send(json!({"v": 1, "type": "unpublish", "id": "u", "track": cam}));
        b.wait("bob is told the camera is gone", WAIT, |s| {
            !s.tracks.contains_key(&cam)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = b.received(&cam);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            b.received(&cam),
            before,
            "nothing arrives for an unpublished track"
        );
        assert!(b.received(&mic) > 0);

        // Publishing again reuses the retired m-line: the SDP does not grow.
        a.publish("cam2", "video", "camera");
        a.wait("the new camera is published", WAIT, |s| {
            s.published.contains_key("cam2")
        })
        .await;
        let video_lines = a.with(|s| {
            let last = s
                .messages
                .iter()
                .rev()
                .find(|m| m["type"] == "offer")
                .unwrap();
            let mids = last["mids"].as_array().unwrap();
            mids.iter()
                .filter(|m| m["kind"] == "video" && m.get("track").is_none())
                .count()
        });
        assert_eq!(video_lines, 1, "one sending video m-line, reused");
        let cam2 = a.with(|s| s.published["cam2"].clone());
        b.wait("bob receives the new camera", WAIT, |s| {
            s.received.get(&cam2).is_some_and(|r| r.packets > 20)
        })
        .await;

        // Alice leaves.
        a.send(json!({"v": 1, "type": "leave"}));
        a.wait("alice is told goodbye", WAIT, |s| s.closed.is_some())
            .await;
        b.wait("bob sees alice leave", WAIT, |s| {
            s.messages.iter().any(|m| {
                m["type"] == "participant_left"
                    && m["participant"] == alice.as_str()
                    && m["reason"] == "requested"
            })
        })
        .await;
        assert!(
            a.with(|s| s.errors.is_empty()),
            "{:?}",
            a.with(|s| s.errors.clone())
        );
        assert!(
            b.with(|s| s.errors.is_empty()),
            "{:?}",
            b.with(|s| s.errors.clone())
        );
        b.shutdown().await;
        a.shutdown().await;
    });
    assert!(common::wait_until(
        WAIT,
        || server.stats(None)["participants"] == 0
    ));
}

#[test]
fn concurrent_publishers_and_selective_subscription() {
    let server = Server::start(&[], &[]);
    rt().block_on(async {
        let url = ws_url(&server);
        let mut clients = Vec::new();
        for name in ["c1", "c2", "c3"] {
            clients.push(RoomClient::join(&url, "busy", name, json!({})).await);
        }
        // Everyone publishes at once, while the others' offers are in flight.
        for c in &clients {
            c.publish("mic", "audio", "microphone");
            c.publish("cam", "video", "camera");
        }
        for c in &clients {
            c.wait("four remote tracks, all receiving", WAIT, |s| {
                s.tracks.len() == 4
                    && s.tracks
                        .keys()
                        .all(|t| s.received.get(t).is_some_and(|r| r.packets > 10))
            })
            .await;
        }
        // A watcher that subscribes selectively.
        let w = RoomClient::join(&url, "busy", "watcher", json!({"auto_subscribe": false})).await;
        w.wait("watcher sees six tracks", WAIT, |s| s.tracks.len() == 6)
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            w.with(|s| s.received.is_empty()),
            "nothing without subscribing"
        );
        let c1 = clients[0].id();
        let cam = track_of(&w, &c1, "camera").unwrap();
        w.send(json!({"v": 1, "type": "subscribe", "id": "s", "track": cam}));
        w.wait("watcher receives c1's camera", WAIT, |s| {
            s.received.get(&cam).is_some_and(|r| r.packets > 20)
        })
        .await;
        assert_eq!(w.with(|s| s.received.len()), 1, "only the subscribed track");
        w.send(json!({"v": 1, "type": "unsubscribe", "id": "x", "track": cam}));
        tokio::time::sleep(Duration::from_millis(800)).await;
        let n = w.received(&cam);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(w.received(&cam), n, "unsubscribed: nothing more arrives");
        // Subscribing again reuses the idle m-line.
        w.send(json!({"v": 1, "type": "subscribe", "id": "s2", "track": cam}));
        w.wait("watcher receives c1's camera again", WAIT, |s| {
            s.received.get(&cam).is_some_and(|r| r.packets > n + 20)
        })
        .await;

        // Everyone unpublishes the camera at once.
        for c in &clients {
            let me = c.id();
            let cam = c.with(|s| s.published["cam"].clone());
            c.send(json!({"v": 1, "type": "unpublish", "id": "u", "track": cam}));
            let _ = me;
        }
        for c in &clients {
            c.wait("only microphones remain", WAIT, |s| s.tracks.len() == 2)
                .await;
            assert!(
                c.with(|s| s.errors.is_empty()),
                "{:?}",
                c.with(|s| s.errors.clone())
            );
        }
        w.shutdown().await;
        for c in clients {
            c.shutdown().await;
        }
    });
}

#[test]
fn reconnection_within_grace_and_identity_replacement() {
    let server = Server::start(&[], &[]);
    rt().block_on(async {
        let url = ws_url(&server);
        let a = RoomClient::join(&url, "r2", "alice", json!({})).await;
        let b = RoomClient::join(&url, "r2", "bob", json!({})).await;
        a.publish("cam", "video", "camera");
        let alice = {
            a.wait("alice published", WAIT, |s| s.published.len() == 1)
                .await;
            a.id()
        };
        let cam = a.with(|s| s.published["cam"].clone());
        b.wait("bob receives", WAIT, |s| {
            s.received.get(&cam).is_some_and(|r| r.packets > 20)
        })
        .await;

        // Bob's socket drops; he resumes inside the grace period.
        let bob = b.id();
        b.drop_socket();
        b.wait("bob resumed", WAIT, |s| {
            s.messages.iter().any(|m| m["type"] == "resumed")
        })
        .await;
        let n = b.received(&cam);
        b.wait("media keeps flowing", WAIT, |s| {
            s.received.get(&cam).is_some_and(|r| r.packets > n + 20)
        })
        .await;
        assert_eq!(b.id(), bob, "same participant after resume");

        // An ICE restart on request: a new offer with new credentials; media goes on.
        let answered = b.with(|s| s.offers_answered);
        let ufrag = |s: &common::room::State| {
            s.messages
                .iter()
                .rev()
                .find(|m| m["type"] == "offer")
                .and_then(|m| m["sdp"].as_str())
                .and_then(|sdp| sdp.lines().find(|l| l.starts_with("a=ice-ufrag:")))
                .map(str::to_owned)
        };
        let before = b.with(ufrag);
        b.send(json!({"v": 1, "type": "ice_restart", "id": "r"}));
        b.wait("the restart offer is answered", WAIT, |s| {
            s.offers_answered > answered
        })
        .await;
        assert_ne!(
            b.with(ufrag),
            before,
            "the restart offer carries new ICE credentials"
        );
        let n = b.received(&cam);
        b.wait("media flows after the ICE restart", WAIT, |s| {
            s.received.get(&cam).is_some_and(|r| r.packets > n + 20)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !a.with(|s| s.messages.iter().any(|m| m["type"] == "participant_left")),
            "alice never saw bob leave"
        );

        // A second alice replaces the first.
        let a2 = RoomClient::join(&url, "r2", "alice", json!({})).await;
        a.wait("the first alice is told she was replaced", WAIT, |s| {
            s.closed.as_ref().is_some_and(|c| c["reason"] == "replaced")
        })
        .await;
        a2.wait("the second alice joined", WAIT, |s| s.participant.is_some())
            .await;
        let alice2 = a2.id();
        b.wait("bob sees the swap", WAIT, |s| {
            s.participants.contains_key(&alice2) && !s.participants.contains_key(&alice)
        })
        .await;
        let alices = b.with(|s| {
            s.participants
                .values()
                .filter(|p| p["identity"] == "alice")
                .count()
        });
        assert_eq!(alices, 1, "never two of one person");
        a2.shutdown().await;
        b.shutdown().await;
        a.shutdown().await;
    });
}

/// A raw socket for bad-input tests.
async fn raw(
    server: &Server,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(ws_url(server))
        .await
        .unwrap()
        .0
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Close(f))) => {
                return json!({"type": "close", "code": f.map(|f| u16::from(f.code))});
            }
            Some(Ok(_)) => continue,
            other => return json!({"type": "gone", "detail": format!("{other:?}")}),
        }
    }
}

async fn send(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    text: &str,
) {
    ws.send(Message::Text(text.to_owned().into()))
        .await
        .unwrap();
}

#[test]
fn bad_input_is_named_and_abuse_is_closed() {
    let server = Server::start(&[], &[]);
    rt().block_on(async {
        let url = ws_url(&server);
        let bystander = RoomClient::join(&url, "bad", "calm", json!({})).await;
        bystander
            .wait("bystander connects", WAIT, |s| s.connected)
            .await;

        let mut ws = raw(&server).await;
        send(&mut ws, "{not json").await;
        let e = next_json(&mut ws).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("bad_message")),
            "{e}"
        );
        send(&mut ws, r#"{"v":1,"type":"teleport","id":5}"#).await;
        let e = next_json(&mut ws).await;
        assert_eq!(e["code"], "bad_message");
        assert_eq!(e["id"], 5);
        assert!(e["message"].as_str().unwrap().contains("teleport"), "{e}");
        send(&mut ws, r#"{"v":9,"type":"ping"}"#).await;
        assert_eq!(next_json(&mut ws).await["code"], "unsupported_version");
        send(
            &mut ws,
            r#"{"v":1,"type":"publish","cid":"x","kind":"video","source":"camera"}"#,
        )
        .await;
        assert_eq!(next_json(&mut ws).await["code"], "not_joined");
        let big = format!(r#"{{"v":1,"type":"ping","ts":"{}"}}"#, "x".repeat(60_000));
        send(&mut ws, &big).await;
        assert_eq!(
            next_json(&mut ws).await["type"],
            "pong",
            "under the 64 KiB limit is fine"
        );

        send(
            &mut ws,
            r#"{"v":1,"type":"join","room":"bad","identity":"mallory"}"#,
        )
        .await;
        let joined = next_json(&mut ws).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        let offer = next_json(&mut ws).await;
        assert_eq!(offer["type"], "offer");
        send(
            &mut ws,
            r#"{"v":1,"type":"answer","offer_id":99,"sdp":"v=0"}"#,
        )
        .await;
        assert_eq!(next_json(&mut ws).await["code"], "no_offer_pending");
        send(
            &mut ws,
            r#"{"v":1,"type":"answer","offer_id":1,"sdp":"garbage"}"#,
        )
        .await;
        assert_eq!(next_json(&mut ws).await["code"], "bad_sdp");
        send(&mut ws, r#"{"v":1,"type":"join","room":"bad"}"#).await;
        assert_eq!(next_json(&mut ws).await["code"], "already_joined");
        send(
            &mut ws,
            r#"{"v":1,"type":"subscribe","track":"t00000000000000ff"}"#,
        )
        .await;
        assert_eq!(next_json(&mut ws).await["code"], "not_found");
        let long = format!(r#"{{"v":1,"type":"chat","text":"{}"}}"#, "y".repeat(2001));
        send(&mut ws, &long).await;
        assert_eq!(next_json(&mut ws).await["code"], "too_large");
        let mut limited = false;
        for _ in 0..15 {
            send(&mut ws, r#"{"v":1,"type":"chat","text":"spam"}"#).await;
        }
        for _ in 0..30 {
            let m = next_json(&mut ws).await;
            if m["code"] == "rate_limited" {
                limited = true;
                break;
            }
        }
        assert!(limited, "chat beyond the rate is refused");

        // Over the 64 KiB limit: refused by name.
        let huge = format!(
            r#"{{"v":1,"type":"ping","id":"huge","ts":"{}"}}"#,
            "z".repeat(70_000)
        );
        send(&mut ws, &huge).await;
        let mut e = next_json(&mut ws).await;
        while e["code"] == "rate_limited" {
            e = next_json(&mut ws).await;
        }
        assert_eq!(e["code"], "too_large", "{e}");
        assert!(e["message"].as_str().unwrap().contains("65536"), "{e}");

        // Persistent abuse: the socket is closed with 1008.
        let mut abuser = raw(&server).await;
        let mut closed = None;
        for _ in 0..40 {
            if abuser.send(Message::Text("garbage".into())).await.is_err() {
                break;
            }
        }
        for _ in 0..60 {
            let m = next_json(&mut abuser).await;
            if m["type"] == "close" || m["type"] == "gone" {
                closed = Some(m);
                break;
            }
            if m["type"] == "closing" {
                assert_eq!(m["reason"], "policy");
            }
        }
        let closed = closed.expect("the abuser is disconnected");
        assert_eq!(closed["code"], 1008, "{closed}");

        // The bystander noticed nothing but mallory coming and going.
        assert!(bystander.with(|s| s.errors.is_empty() && s.closed.is_none()));
        bystander.shutdown().await;
    });
}

#[test]
fn server_closes_sessions_with_a_reason() {
    let server = Server::start(&[], &[]);
    let base = server.base.clone();
    rt().block_on(async {
        let url = ws_url(&server);
        let http = reqwest::Client::new();
        let a = RoomClient::join(&url, "adm", "ann", json!({})).await;
        let b = RoomClient::join(&url, "adm", "ben", json!({})).await;
        a.wait("ann connects", WAIT, |s| s.connected).await;
        b.wait("ben connects", WAIT, |s| s.connected).await;
        let ben = b.id();

        let list: Value = http
            .get(format!("{base}/admin/rooms"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let room = list["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["room"] == "adm")
            .unwrap()
            .clone();
        assert_eq!(room["participants"].as_array().unwrap().len(), 2, "{list}");

        let kicked = http
            .delete(format!("{base}/admin/rooms/adm/participants/{ben}"))
            .send()
            .await
            .unwrap();
        assert_eq!(kicked.status().as_u16(), 200);
        b.wait("ben is told he was kicked", WAIT, |s| {
            s.closed.as_ref().is_some_and(|c| c["reason"] == "kicked")
        })
        .await;
        a.wait("ann sees ben kicked", WAIT, |s| {
            s.messages
                .iter()
                .any(|m| m["type"] == "participant_left" && m["reason"] == "kicked")
        })
        .await;
        let missing = http
            .delete(format!("{base}/admin/rooms/adm/participants/{ben}"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status().as_u16(), 404);

        let closed = http
            .delete(format!("{base}/admin/rooms/adm"))
            .send()
            .await
            .unwrap();
        assert_eq!(closed.status().as_u16(), 200);
        a.wait("ann is told the room closed", WAIT, |s| {
            s.closed
                .as_ref()
                .is_some_and(|c| c["reason"] == "room_closed")
        })
        .await;
        a.shutdown().await;
        b.shutdown().await;
    });
}
