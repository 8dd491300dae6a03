//! Where a room-protocol client goes when its node cannot keep it: two real nodes on one
//! real Redis and NATS of the test's own. `joined` and `resumed` name the other node as an
//! alternative; once node A drains (SIGTERM), a `join` at A is answered with `redirect` to
//! node B, which takes it, and B no longer offers A. No timing assertions.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::time::{Duration, Instant};

use cluster::Cluster;
use common::room::RoomClient;
use common::{Server, rt, ws_url};
use serde_json::{Value, json};

const KEY: &str = "failover-test-key-failover-test-key!";
/// Generous: nothing here asserts how fast anything is.
const WAIT: Duration = Duration::from_secs(30);
const ROOM: &str = "standup";

fn join_token(who: &str) -> String {
    common::token(KEY, who, Some(ROOM), &["publish", "subscribe"])
}

/// `who` sends `join` to `server`; returns the client and its first answer (`joined`,
/// `redirect` or `error`).
async fn join(server_ws: &str, who: &str) -> (RoomClient, Value) {
    let c = RoomClient::join(server_ws, ROOM, who, json!({"token": join_token(who)})).await;
    let answer = |s: &common::room::State| {
        s.messages
            .iter()
            .find(|m| ["joined", "redirect", "error"].contains(&m["type"].as_str().unwrap_or("")))
            .cloned()
    };
    c.wait(&format!("an answer to {who}'s join"), WAIT, |s| {
        answer(s).is_some()
    })
    .await;
    let first = c.with(answer).expect("an answer");
    (c, first)
}

/// The `alternatives` of a `joined` or `resumed` (none when the field is left out).
fn alternatives(m: &Value) -> Vec<String> {
    m["alternatives"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect()
}

/// Join `server` as `who` until `joined` offers exactly `want` (a node learns the others
/// at its heartbeat); returns the client that did.
async fn join_offering(server: &Server, who: &str, want: &[&str]) -> RoomClient {
    let deadline = Instant::now() + WAIT;
    loop {
        let (c, first) = join(&ws_url(server), who).await;
        assert_eq!(first["type"], "joined", "{first}");
        let offered = alternatives(&first);
        if offered == want {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{} offers {offered:?}, not {want:?}",
            server.base
        );
        c.shutdown().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn joined_names_the_other_node_and_a_draining_node_redirects_joins() {
    let cluster = Cluster::start();
    let node = |id: &str| {
        let mut env = cluster.env(KEY, id);
        // Node A must stay up, draining, while its participant is there.
        env.push(("MANIFOLD_HTTP__DRAIN_TIMEOUT_SECS", "60"));
        Server::start(&[], &env)
    };
    let a = node("node-a");
    let b = node("node-b");
    rt().block_on(async {
        // Each node offers the other, by its advertise URL.
        let ann = join_offering(&a, "ann", &[b.base.as_str()]).await;
        let ben = join_offering(&b, "ben", &[a.base.as_str()]).await;
        ben.shutdown().await;

        // Node A drains; Ann's session keeps it up. Her resume still works there, and
        // `resumed` names node B.
        a.terminate();
        ann.drop_socket();
        ann.wait("ann resumed on the draining node", WAIT, |s| {
            s.messages.iter().any(|m| m["type"] == "resumed")
        })
        .await;
        let resumed = ann.with(|s| {
            s.messages
                .iter()
                .find(|m| m["type"] == "resumed")
                .cloned()
                .unwrap()
        });
        assert_eq!(alternatives(&resumed), [b.base.as_str()], "{resumed}");

        // A join at node A is sent to node B, with the join's id, and the socket closed.
        let deadline = Instant::now() + WAIT;
        let (cy, redirect) = loop {
            let (cy, first) = join(&ws_url(&a), "cy").await;
            if first["type"] == "redirect" {
                break (cy, first);
            }
            // Not draining yet (the signal is on its way).
            assert!(
                Instant::now() < deadline,
                "node A never redirected: {first}"
            );
            cy.shutdown().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            redirect,
            json!({"v": 1, "type": "redirect", "id": "join", "url": b.base}),
            "to node B"
        );
        cy.wait("node A closed the redirected socket", WAIT, |s| {
            s.closed.is_some()
        })
        .await;
        assert!(cy.with(|s| s.participant.is_none()), "cy did not join A");
        cy.shutdown().await;

        // Node B takes the join, and once it has heard that A drains, offers nothing.
        let url = redirect["url"].as_str().unwrap();
        let target = format!("{}/rtc", url.replacen("http", "ws", 1));
        let (cy, first) = join(&target, "cy").await;
        assert_eq!(first["type"], "joined", "{first}");
        cy.shutdown().await;
        join_offering(&b, "dee", &[]).await.shutdown().await;
        ann.shutdown().await;
    });
}
