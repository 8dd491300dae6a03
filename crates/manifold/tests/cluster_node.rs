//! This node in the cluster registry: `/admin/nodes` lists it under its configured id and
//! address, only to a server-wide admin; a node id that cannot be used stops the server at
//! start with the setting's name. With `cluster.redis_url` and `cluster.nats_url` (real
//! servers of the test's own) nodes list each other, a second live node of one id is
//! refused, a killed node leaves the list by itself, and an unreachable Redis stops the
//! server without its password in any output.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::process::Command;
use std::time::Duration;

use cluster::Cluster;
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

fn node_ids(server: &Server) -> Vec<(String, bool)> {
    let r = reqwest::blocking::Client::new()
        .get(server.url("/admin/nodes"))
        .bearer_auth(token(None, &["admin"]))
        .send()
        .unwrap();
    let body: Value = r.json().unwrap();
    let nodes = body["nodes"].as_array().expect("a list of nodes");
    nodes
        .iter()
        .map(|n| {
            let id = n["id"].as_str().unwrap_or_default().to_owned();
            (id, n["self"] == true)
        })
        .collect()
}

#[test]
fn nodes_on_one_redis_list_each_other_refuse_a_duplicate_id_and_lose_a_killed_node() {
    let cluster = Cluster::start();
    let a = cluster.node(KEY, "node-a");
    let b = cluster.node(KEY, "node-b");
    let both = vec![("node-a".to_owned(), true), ("node-b".to_owned(), false)];
    // A node prints its address just before it registers.
    assert!(
        common::wait_until(Duration::from_secs(10), || node_ids(&a) == both),
        "{:?}",
        node_ids(&a)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["serve", "--listen", "127.0.0.1:0", "--port-base", "0"])
        .envs(cluster.env(KEY, "node-a"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second node-a started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node-a") && err.contains("conflict"), "{err}");

    // Killed (no deregistration): gone once its registration expires, three heartbeats.
    drop(b);
    assert!(
        common::wait_until(Duration::from_secs(15), || node_ids(&a).len() == 1),
        "{:?}",
        node_ids(&a)
    );
    assert_eq!(node_ids(&a), vec![("node-a".to_owned(), true)]);
}

#[test]
fn an_unreachable_redis_stops_the_server_without_printing_its_password() {
    let serve = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_manifold"))
            .arg("serve")
            .args(args)
            .env(
                "MANIFOLD_CLUSTER__REDIS_URL",
                "redis://:hunter2@127.0.0.1:1",
            )
            .output()
            .unwrap()
    };
    let out = serve(&["--listen", "127.0.0.1:0", "--port-base", "0"]);
    assert!(!out.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("cluster"), "{printed}");
    assert!(printed.contains("redis://***@127.0.0.1:1"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");

    let out = serve(&["--check"]);
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("redis://***@127.0.0.1:1"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
}
