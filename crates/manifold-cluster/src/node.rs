//! Nodes: their ids, what each announces about itself, and the registry in which a node
//! that stops sending heartbeats disappears by itself after its time to live.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{BoxFuture, ClusterError};

/// A node's name in the cluster (`cluster.node_id`): 1 to 64 characters from
/// `a-z 0-9 - _`, so it can appear in Redis keys and NATS subjects as is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Longest accepted id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Check and wrap `s`.
    pub fn parse(s: &str) -> Result<Self, ClusterError> {
        let ok = (1..=Self::MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(NodeId(s.to_owned()))
        } else {
            Err(ClusterError::Malformed(format!(
                "node id {:?} is not 1 to {} characters from a-z 0-9 - _",
                s.chars().take(80).collect::<String>(),
                Self::MAX_LEN
            )))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = ClusterError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::parse(&s)
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> String {
        n.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a node announces with every heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id.
    pub id: NodeId,
    /// Where clients reach it (`cluster.advertise_url`).
    pub advertise_url: String,
    /// Sessions it holds.
    pub participants: u32,
    /// Busiest media worker's load, 0 to 1.
    pub load: f32,
    /// It takes no new joins (SIGTERM).
    pub draining: bool,
}

impl NodeInfo {
    /// Refuse an announcement no registry stores: over [`crate::MAX_RECORD_BYTES`] as JSON,
    /// or a load that is not a number (JSON has no NaN: every reader would fail on it).
    pub(crate) fn check(&self) -> Result<(), ClusterError> {
        if !self.load.is_finite() {
            return Err(ClusterError::Malformed(format!(
                "node {}: load {} is not a number",
                self.id, self.load
            )));
        }
        crate::record_json("node info", self).map(drop)
    }
}

/// The cluster's live nodes. A node calls [`NodeRegistry::heartbeat`] more often than the
/// registry's time to live; one that stops is gone from [`NodeRegistry::live`] once its TTL
/// has passed.
pub trait NodeRegistry: Send + Sync {
    /// Announce (or refresh) `node`. [`ClusterError::Conflict`] when another live process
    /// registered the same id ([`NodeRegistry::register`] settles who owns an id).
    fn heartbeat(&self, node: NodeInfo) -> BoxFuture<'_, Result<(), ClusterError>>;

    /// Claim `node`'s id for this process, refusing when a live node holds it already
    /// (two nodes with one `node_id`).
    fn register(&self, node: NodeInfo) -> BoxFuture<'_, Result<(), ClusterError>>;

    /// Leave at once (graceful shutdown), without waiting for the TTL.
    fn deregister(&self, node: NodeId) -> BoxFuture<'_, Result<(), ClusterError>>;

    /// Every node whose last heartbeat is younger than the TTL, by id.
    fn live(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, ClusterError>>;

    /// How long a heartbeat keeps a node alive.
    fn ttl(&self) -> Duration;
}
