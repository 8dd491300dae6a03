//! This node in the cluster registry: `/admin/nodes` lists it under its configured id and
//! address, only to a server-wide admin; a node id that cannot be used stops the server at
//! start with the setting's name.

mod common;

use std::process::Command;

use common::Server;
use serde_json::Value;

const KEY: &str = "cluster-test-key-cluster-test-key-!!";

fn token(room: Option<&str>, grants: &[&str]) -> String {
    common::token(KEY, "ops", room, grants)
}

#[test]
fn admin_nodes_lists_this_node_to_a_server_wide_admin_only() {
    let server = Server::start(
        &[],
        &[
            ("MANIFOLD_AUTH__KEY", KEY),
            ("MANIFOLD_CLUSTER__NODE_ID", "node-a"),
        ],
    );
    let http = reqwest::blocking::Client::new();
    let get = |t: Option<String>| {
        let mut r = http.get(server.url("/admin/nodes"));
        if let Some(t) = t {
            r = r.bearer_auth(t);
        }
        r.send().unwrap()
    };
    let r = get(Some(token(None, &["admin"])));
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().unwrap();
    let nodes = body["nodes"].as_array().expect("a list of nodes");
    assert_eq!(nodes.len(), 1, "{body}");
    assert_eq!(nodes[0]["id"], "node-a");
    assert_eq!(nodes[0]["self"], true);
    assert_eq!(nodes[0]["advertise_url"], server.base.as_str());
    assert_eq!(nodes[0]["draining"], false);

    assert_eq!(get(None).status().as_u16(), 401);
    for t in [
        token(None, &["publish", "subscribe"]),
        token(Some("r1"), &["admin"]),
    ] {
        let r = get(Some(t));
        assert_eq!(r.status().as_u16(), 403);
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"], "forbidden", "{body}");
    }
}

#[test]
fn an_unusable_node_id_stops_the_server_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["serve", "--listen", "127.0.0.1:0", "--port-base", "0"])
        .env("MANIFOLD_CLUSTER__NODE_ID", "Node A")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster.node_id"), "{err}");
}
