//! How Manifold nodes cooperate: a registry of live nodes ([`NodeRegistry`]), a directory of
//! which node holds which room member ([`RoomDirectory`]) and a message bus between nodes
//! ([`Bus`]), as small traits. One node alone uses the in-memory implementations in
//! [`memory`] (the embedded default, no external service); Redis (state) and NATS
//! (messages) implement the same traits for a cluster.
//!
//! The traits are asynchronous (the real ones talk to servers) and object-safe, so the
//! control plane holds `Arc<dyn ...>` and never knows which one it has. Nothing here is on
//! the media path.
#![forbid(unsafe_code)]

mod bus;
mod directory;
pub mod memory;
mod node;

use std::future::Future;
use std::pin::Pin;

pub use bus::{Bus, BusMessage, MAX_SUBJECT_BYTES, Subscription, subject_matches};
pub use directory::{MemberRecord, RoomDirectory};
pub use node::{NodeId, NodeInfo, NodeRegistry};

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
