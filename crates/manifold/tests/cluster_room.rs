//! One room across two nodes (signaling and state; media between nodes is not relayed
//! here): two real nodes on one real Redis and NATS of the test's own. Room-protocol clients
//! on either node see each other join, publish, mute, unpublish, rename, chat and leave;
//! `/admin/rooms` on either node lists the room with both nodes; when a node is killed its
//! members leave the directory and the other node's clients are told they left. An
//! administrator on one node kicks and closes on the other.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::time::Duration;

use cluster::Cluster;
use common::room::{RoomClient, State};
use common::{Server, rt, ws_url};
use serde_json::{Value, json};

const KEY: &str = "cluster-test-key-cluster-test-key-!!";
/// Generous: no test here asserts how fast anything is.
const WAIT: Duration = Duration::from_secs(30);
/// A `.` in the name, NATS's token separator: room names are encoded in subjects.
const ROOM: &str = "team.x";

fn join_token(who: &str) -> String {
    common::token(KEY, who, Some(ROOM), &["publish", "subscribe"])
}

async fn join(server: &Server, who: &str) -> RoomClient {
    let c = RoomClient::join(
        &ws_url(server),
        ROOM,
        who,
        json!({"token": join_token(who)}),
    )
    .await;
    c.wait(&format!("{who} joined"), WAIT, |s| s.participant.is_some())
        .await;
    c
}

/// Ann on node `a`, then Ben on node `b`, once each sees the other: Ben finds Ann in
/// `joined` (or just after), Ann is told Ben joined.
async fn ann_and_ben(a: &Server, b: &Server) -> (RoomClient, RoomClient) {
    let ann = join(a, "ann").await;
    let ben = join(b, "ben").await;
    let (ann_id, ben_id) = (ann.id(), ben.id());
    ben.wait("ben sees ann on the other node", WAIT, sees(&ann_id))
        .await;
    ann.wait("ann sees ben on the other node", WAIT, sees(&ben_id))
        .await;
    (ann, ben)
}

fn sees(id: &str) -> impl Fn(&State) -> bool + '_ {
    move |s| s.participants.contains_key(id)
}

fn left<'a>(id: &'a str, reason: &'static str) -> impl Fn(&State) -> bool + 'a {
    move |s| {
        !s.participants.contains_key(id)
            && s.messages.iter().any(|m| {
                m["type"] == "participant_left" && m["participant"] == id && m["reason"] == reason
            })
    }
}

/// `ROOM` as `/admin/rooms` on `server` lists it: (its nodes, its member count).
async fn listed(server: &Server) -> Option<(Vec<String>, u64)> {
    let body: Value = reqwest::Client::new()
        .get(server.url("/admin/rooms"))
        .bearer_auth(common::token(KEY, "ops", None, &["admin"]))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let room = body["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["room"] == ROOM)?;
    let nodes = room["nodes"]
        .as_array()?
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    Some((nodes, room["members"].as_u64()?))
}

/// Wait until `/admin/rooms` on `server` lists `ROOM` on `nodes` with `members`.
async fn until_listed(server: &Server, nodes: &[&str], members: u64) {
    let want = Some((nodes.iter().map(|s| (*s).to_owned()).collect(), members));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = listed(server).await;
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} lists {ROOM} as {now:?}, not {want:?}",
            server.base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_room_across_two_nodes_is_one_room() {
    let cluster = Cluster::start();
    let (a, b) = (cluster.node(KEY, "node-a"), cluster.node(KEY, "node-b"));
    rt().block_on(async {
        let (ann, ben) = ann_and_ben(&a, &b).await;
        let ben_id = ben.id();
        let info = ann.with(|s| s.participants[&ben_id].clone());
        assert_eq!(info["identity"], "ben", "{info}");

        // A track published on B is announced on A, and so are its mute and its end.
        ben.publish("cam", "video", "camera");
        ben.wait("ben's camera is published", WAIT, |s| {
            s.published.contains_key("cam")
        })
        .await;
        let cam = ben.with(|s| s.published["cam"].clone());
        ann.wait("ann sees ben's track", WAIT, |s| {
            s.tracks
                .get(&cam)
                .is_some_and(|(owner, _)| *owner == ben_id)
        })
        .await;
        // Ann may subscribe to it as to a local track.
        ann.send(json!({"v": 1, "type": "unsubscribe", "id": "u1", "track": cam}));
        ann.send(json!({"v": 1, "type": "subscribe", "id": "s1", "track": cam}));
        ann.send(json!({"v": 1, "type": "ping", "id": "after", "ts": 1}));
        ann.wait("the subscription answered", WAIT, |s| {
            s.messages
                .iter()
                .any(|m| m["type"] == "pong" && m["id"] == "after")
        })
        .await;
        // (The control plane knows whose track it is; whether media flows is the relay's
        // business, not this test's.)
        let refused = ann.with(|s| {
            s.errors
                .iter()
                .any(|e| e["message"].as_str().is_some_and(|m| m.contains("in this room")))
        });
        assert!(!refused, "{:?}", ann.with(|s| s.errors.clone()));
        ben.send(json!({"v": 1, "type": "mute", "id": "m", "track": cam, "muted": true}));
        ann.wait("ann sees ben's camera muted", WAIT, |s| {
            s.tracks.get(&cam).is_some_and(|(_, t)| t["muted"] == true)
        })
        .await;
        ben.send(json!({"v": 1, "type": "unpublish", "id": "u", "track": cam}));
        ann.wait("ann sees ben's camera go", WAIT, |s| {
            !s.tracks.contains_key(&cam)
        })
        .await;
        // So is a change of name and metadata.
        ben.send(json!({"v": 1, "type": "update", "id": "n", "name": "Benjamin", "metadata": {"desk": 4}}));
        ann.wait("ann sees ben renamed", WAIT, |s| {
            s.participants
                .get(&ben_id)
                .is_some_and(|p| p["name"] == "Benjamin" && p["metadata"]["desk"] == 4)
        })
        .await;
        // Chat crosses: to the room, and to one member on the other node.
        ben.send(json!({"v": 1, "type": "chat", "id": "c1", "text": "hello all"}));
        ann.wait("ann hears ben", WAIT, |s| {
            s.chats
                .iter()
                .any(|c| c["text"] == "hello all" && c["from"]["id"] == ben_id.as_str())
        })
        .await;
        ann.send(json!({"v": 1, "type": "chat", "id": "c2", "text": "hi ben", "to": ben_id}));
        ben.wait("ben hears ann, to him", WAIT, |s| {
            s.chats
                .iter()
                .any(|c| c["text"] == "hi ben" && c["to"] == ben_id.as_str())
        })
        .await;
        // Someone joining A now finds Ben in `joined`, renamed, with no track.
        let dan = join(&a, "dan").await;
        let listed_ben = dan.with(|s| {
            s.messages
                .iter()
                .find(|m| m["type"] == "joined")
                .and_then(|m| m["participants"].as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .find(|p| p["id"] == ben_id.as_str())
        });
        let listed_ben = listed_ben.expect("ben is in dan's joined");
        assert_eq!(listed_ben["tracks"], json!([]), "{listed_ben}");
        assert_eq!(listed_ben["name"], "Benjamin", "{listed_ben}");
        let dan_id = dan.id();
        dan.send(json!({"v": 1, "type": "leave", "id": "bye"}));
        ben.wait("ben sees dan leave", WAIT, left(&dan_id, "requested"))
            .await;
        dan.shutdown().await;

        // Either node lists the room with both nodes and both members.
        for server in [&a, &b] {
            until_listed(server, &["node-a", "node-b"], 2).await;
        }

        // Ben leaves: Ann is told.
        ben.send(json!({"v": 1, "type": "leave", "id": "bye"}));
        ann.wait("ann sees ben leave", WAIT, left(&ben_id, "requested"))
            .await;
        ben.shutdown().await;
        until_listed(&a, &["node-a"], 1).await;

        // Cat on node B, which is then killed (SIGKILL: no goodbye): once its
        // registration has expired, Cat is gone from the directory and Ann is told.
        let cat = join(&b, "cat").await;
        let cat_id = cat.id();
        ann.wait("ann sees cat", WAIT, sees(&cat_id)).await;
        until_listed(&a, &["node-a", "node-b"], 2).await;
        drop(b);
        ann.wait("ann sees cat's node die", WAIT, left(&cat_id, "timeout"))
            .await;
        until_listed(&a, &["node-a"], 1).await;
        cat.shutdown().await;
        ann.shutdown().await;
    });
}

#[test]
fn an_administrator_on_one_node_kicks_and_closes_on_the_other() {
    let cluster = Cluster::start();
    let (a, b) = (cluster.node(KEY, "node-a"), cluster.node(KEY, "node-b"));
    rt().block_on(async {
        let (ann, ben) = ann_and_ben(&a, &b).await;
        let ben_id = ben.id();

        // Ben is on B: kicked through A.
        // (Retried: on a starved machine a late heartbeat can have B forgotten for a
        // moment, until it registers and writes its members again.)
        let kick = format!("/admin/rooms/{ROOM}/participants/{ben_id}");
        let deadline = std::time::Instant::now() + WAIT;
        let body = loop {
            let (status, body) = admin_delete(&a, &kick).await;
            if status == 200 {
                break body;
            }
            assert!(std::time::Instant::now() < deadline, "{status} {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(body["forwarded_to"], "node-b", "{body}");
        ben.wait("ben is told he was kicked", WAIT, |s| {
            s.closed.as_ref().is_some_and(|c| c["reason"] == "kicked")
        })
        .await;
        ann.wait("ann sees ben kicked", WAIT, left(&ben_id, "kicked"))
            .await;
        ben.shutdown().await;

        // Someone nobody knows is not found, on any node.
        let nobody = format!("/admin/rooms/{ROOM}/participants/p0000000000000001");
        assert_eq!(admin_delete(&a, &nobody).await.0, 404);

        // Closing the room on A closes it on B too.
        let cat = join(&b, "cat").await;
        ann.wait("ann sees cat", WAIT, sees(&cat.id())).await;
        let (status, body) = admin_delete(&a, &format!("/admin/rooms/{ROOM}")).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({"closed": 1, "forwarded_to": ["node-b"]}));
        for c in [&ann, &cat] {
            c.wait("the room closed", WAIT, |s| {
                s.closed
                    .as_ref()
                    .is_some_and(|c| c["reason"] == "room_closed")
            })
            .await;
        }
        until_listed_nowhere(&a).await;
        cat.shutdown().await;
        ann.shutdown().await;
    });
}

/// `DELETE path` on `server` as an administrator: the status, and the JSON body (`null`
/// without one).
async fn admin_delete(server: &Server, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .delete(server.url(path))
        .bearer_auth(common::token(KEY, "ops", None, &["admin"]))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Wait until `/admin/rooms` on `server` no longer lists `ROOM`.
async fn until_listed_nowhere(server: &Server) {
    let deadline = std::time::Instant::now() + WAIT;
    while listed(server).await.is_some() {
        assert!(std::time::Instant::now() < deadline, "{ROOM} still listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
