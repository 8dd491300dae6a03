//! The admin API against the real binary: created rooms and their participant limit, room
//! and participant metadata told to the room, server-side mute, drain, the log level, and
//! the errors (wrong grant 403, unknown room/participant/track 404, malformed body 400,
//! room-scoped tokens).

mod common;

use std::time::Duration;

use common::room::RoomClient;
use common::{Server, rt, token, ws_url};
use serde_json::{Value, json};

const KEY: &str = "admin-api-test-key-0123456789abcdef";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: &str, path: &str, tok: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(tok);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[test]
fn admin_api() {
    let server = Server::start(&[], &[("MANIFOLD_AUTH__KEY", KEY)]);
    let admin = token(KEY, "ops", None, &["admin"]);
    let scoped = token(KEY, "ops-a", Some("a"), &["admin"]);
    let user = token(KEY, "u", None, &["publish", "subscribe"]);
    let api = Api {
        base: server.base.clone(),
        http: reqwest::Client::new(),
    };
    rt().block_on(async {
        // The document, public.
        let (s, doc) = api.call("GET", "/openapi.json", "", None).await;
        assert_eq!((s, doc["openapi"].as_str()), (200, Some("3.1.0")));
        assert!(doc["paths"]["/admin/rooms"]["post"].is_object(), "{doc}");

        // Grants.
        let (s, b) = api.call("GET", "/admin/rooms/a", &user, None).await;
        assert_eq!((s, b["error"].as_str()), (403, Some("forbidden")));
        let (s, _) = api.call("POST", "/admin/drain", &scoped, None).await;
        assert_eq!(s, 403, "a room-scoped token cannot drain the node");
        let (s, _) = api
            .call("POST", "/admin/rooms", &scoped, Some(json!({"name": "b"})))
            .await;
        assert_eq!(s, 403, "a room-scoped token creates in its room only");

        // Malformed bodies and unknown things.
        let (s, b) = api
            .call("POST", "/admin/rooms", &admin, Some(json!({"nom": 1})))
            .await;
        assert_eq!((s, b["error"].as_str()), (400, Some("bad_request")), "{b}");
        let (s, _) = api
            .call("POST", "/admin/rooms", &admin, Some(json!({"name": "a", "max_participants": 0})))
            .await;
        assert_eq!(s, 400);
        let (s, b) = api.call("GET", "/admin/rooms/nobody-here", &admin, None).await;
        assert_eq!((s, b["error"].as_str()), (404, Some("not_found")));

        // A created room with one place.
        let (s, b) = api
            .call(
                "POST",
                "/admin/rooms",
                &scoped,
                Some(json!({"name": "a", "max_participants": 1, "empty_timeout": 60, "metadata": {"topic": "x"}})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let (s, _) = api
            .call("POST", "/admin/rooms", &admin, Some(json!({"name": "a"})))
            .await;
        assert_eq!(s, 409);
        let tok_a = token(KEY, "alice", Some("a"), &["publish", "subscribe"]);
        let tok_b = token(KEY, "bob", Some("a"), &["publish", "subscribe"]);
        let alice = RoomClient::join(&ws_url(&server), "a", "alice", json!({"token": tok_a})).await;
        alice.wait("alice joined", Duration::from_secs(10), |s| s.participant.is_some()).await;
        let bob = RoomClient::join(&ws_url(&server), "a", "bob", json!({"token": tok_b})).await;
        bob.wait("bob refused", Duration::from_secs(10), |s| {
            s.errors.iter().any(|e| e["code"] == "limit_reached")
        })
        .await;

        // Listing.
        let (s, b) = api.call("GET", "/admin/rooms/a/participants", &scoped, None).await;
        assert_eq!(s, 200);
        let list = b["participants"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{b}");
        assert_eq!(list[0]["identity"], "alice");
        let (s, b) = api.call("GET", "/admin/rooms/a", &admin, None).await;
        assert_eq!((s, &b["options"]["max_participants"]), (200, &json!(1)), "{b}");

        // Metadata, told to the room.
        let (s, _) = api
            .call("PATCH", "/admin/rooms/a", &admin, Some(json!({"metadata": {"topic": "y"}})))
            .await;
        assert_eq!(s, 200);
        alice
            .wait("room_updated", Duration::from_secs(10), |s| {
                s.messages.iter().any(|m| m["type"] == "room_updated" && m["metadata"]["topic"] == "y")
            })
            .await;
        let me = alice.id();
        let (s, _) = api
            .call("PATCH", &format!("/admin/rooms/a/participants/{me}"), &admin, Some(json!({"metadata": {"role": "host"}})))
            .await;
        assert_eq!(s, 200);
        alice
            .wait("participant_updated", Duration::from_secs(10), |s| {
                s.messages.iter().any(|m| m["type"] == "participant_updated" && m["participant"]["metadata"]["role"] == "host")
            })
            .await;
        let big = json!({"metadata": "x".repeat(5000)});
        let (s, _) = api.call("PATCH", "/admin/rooms/a", &admin, Some(big)).await;
        assert_eq!(s, 400);

        // Mute: unknown participant and track.
        let (s, _) = api
            .call("PATCH", "/admin/rooms/a/participants/123/tracks/1", &admin, Some(json!({"muted": true})))
            .await;
        assert_eq!(s, 404);
        let (s, _) = api
            .call("PATCH", &format!("/admin/rooms/a/participants/{me}/tracks/TR_nope"), &admin, Some(json!({"muted": true})))
            .await;
        assert_eq!(s, 404);

        // Log level.
        let (s, b) = api
            .call("PUT", "/admin/log-level", &admin, Some(json!({"filter": "info,manifold_core=debug"})))
            .await;
        assert_eq!(s, 200, "{b}");
        assert!(b["filter"].as_str().unwrap().contains("manifold_core=debug"), "{b}");
        let (s, _) = api
            .call("PUT", "/admin/log-level", &admin, Some(json!({"filter": "=[=="})))
            .await;
        assert_eq!(s, 400);

        // Close removes the created room; drain makes the node unready.
        let (s, _) = api.call("DELETE", "/admin/rooms/a", &scoped, None).await;
        assert_eq!(s, 200);
        alice.wait("closed", Duration::from_secs(10), |s| s.closed.is_some()).await;
        let (s, _) = api.call("POST", "/admin/drain", &admin, None).await;
        assert_eq!(s, 200);
        let (s, _) = api.call("GET", "/readyz", &admin, None).await;
        assert_eq!(s, 503);
        alice.shutdown().await;
        bob.shutdown().await;
    });
}
