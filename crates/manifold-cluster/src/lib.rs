//! How Manifold nodes cooperate: a registry of live nodes ([`NodeRegistry`]), a directory of
//! which node holds which room member ([`RoomDirectory`]) and a message bus between nodes
//! ([`Bus`]), as small traits. One node alone uses the in-memory implementations in
//! [`memory`] (the embedded default, no external service); Redis ([`redis::RedisCluster`]:
//! registry and directory) and NATS ([`nats::NatsBus`]: the bus) implement the same traits
//! for a cluster. `docs/cluster.md` holds the key and subject layout.
//!
//! The traits are asynchronous (the real ones talk to servers) and object-safe, so the
//! control plane holds `Arc<dyn ...>` and never knows which one it has. Nothing here is on
//! the media path.
#![forbid(unsafe_code)]

mod bus;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod directory;
pub mod memory;
pub mod nats;
mod node;
pub mod redis;

use std::future::Future;
use std::pin::Pin;

pub use bus::{
    Bus, BusMessage, MAX_SUBJECT_BYTES, MAX_SUBSCRIPTIONS, Subscription, subject_matches,
};
pub use directory::{MAX_LISTED_ROOMS, MemberRecord, RoomDirectory, RoomSummary};
pub use node::{NodeId, NodeInfo, NodeRegistry};

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Largest record a registry or directory stores, as JSON: a [`NodeInfo`] or a
/// [`MemberRecord`]. Larger ones are refused ([`ClusterError::Malformed`]), and so is stored
/// data larger than this.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// Why a cluster operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The backing service cannot be reached (or this node is not part of it yet).
    #[error("cluster service unavailable: {0}")]
    Unavailable(String),
    /// Another node claims what this one asked for (its `node_id`).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Input or stored data that cannot be used.
    #[error("malformed: {0}")]
    Malformed(String),
}

/// `record` as the JSON a registry or directory stores, refused when larger than
/// [`MAX_RECORD_BYTES`].
pub(crate) fn record_json<T: serde::Serialize>(
    what: &str,
    record: &T,
) -> Result<Vec<u8>, ClusterError> {
    let json =
        serde_json::to_vec(record).map_err(|e| ClusterError::Malformed(format!("{what}: {e}")))?;
    if json.len() > MAX_RECORD_BYTES {
        return Err(ClusterError::Malformed(format!(
            "{what} is {} bytes of JSON, over the {MAX_RECORD_BYTES} allowed",
            json.len()
        )));
    }
    Ok(json)
}

/// A service URL fit for logs and errors: any user name and password in it replaced by
/// `***` (`redis://:secret@host:6379` becomes `redis://***@host:6379`).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // The authority ends at the first `/`, `?` or `#`; userinfo is what precedes its last `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("nats://user:p@ss@nats.local:4222"),
            "nats://***@nats.local:4222"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("u:p@host:1"), "***@host:1");
        assert_eq!(
            redact_url("redis://host/db?x=a@b"),
            "redis://host/db?x=a@b",
            "an @ after the authority is not userinfo"
        );
    }
}
