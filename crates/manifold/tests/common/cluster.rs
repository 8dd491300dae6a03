//! Nodes of one cluster for tests: a real `redis-server` and `nats-server` of the test's own
//! (killed on drop), and what a `manifold serve` needs to join them. A test that wants it
//! declares `#[path = "common/cluster.rs"] mod cluster;` next to `mod common;`.
#![allow(dead_code)]

use crate::common::Server;

/// The cluster tests' server processes (`crates/manifold-cluster/tests/common`).
#[path = "../../../manifold-cluster/tests/common/mod.rs"]
mod services;

/// One Redis and one NATS, shared by the nodes a test starts.
pub struct Cluster {
    redis: services::Server,
    nats: services::Server,
    redis_url: String,
    nats_url: String,
}

impl Cluster {
    /// Start both servers.
    pub fn start() -> Cluster {
        let redis = services::Server::redis();
        let nats = services::Server::nats();
        let (redis_url, nats_url) = (redis.url(), nats.url());
        Cluster {
            redis,
            nats,
            redis_url,
            nats_url,
        }
    }

    /// The environment of node `id` of this cluster, with the token key `key` and a
    /// heartbeat a second (its registration lasts three).
    pub fn env<'a>(&'a self, key: &'a str, id: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("MANIFOLD_AUTH__KEY", key),
            ("MANIFOLD_CLUSTER__NODE_ID", id),
            ("MANIFOLD_CLUSTER__HEARTBEAT_SECS", "1"),
            ("MANIFOLD_CLUSTER__REDIS_URL", self.redis_url.as_str()),
            ("MANIFOLD_CLUSTER__NATS_URL", self.nats_url.as_str()),
        ]
    }

    /// Start node `id`.
    pub fn node(&self, key: &str, id: &str) -> Server {
        Server::start(&[], &self.env(key, id))
    }
}
