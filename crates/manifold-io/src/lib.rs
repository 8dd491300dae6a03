//! Manifold's media worker threads: the UDP sockets, batched receive and send, timers and
//! the loop that drives one sans-IO [`manifold_core::Shard`] per worker.
//!
//! Each worker is a plain OS thread (`manifold-media-<i>`) owning one non-blocking UDP
//! socket on its own port and one shard; with [`MediaConfig::ice_tcp`], also a TCP
//! listener on the same port number for ICE over TCP (RFC 6544). The control plane talks to a worker through a
//! [`WorkerHandle`]: commands go down a bounded channel (a full channel is an explicit,
//! counted [`Overloaded`], never a stall), events come up through an [`EventSink`] that
//! must not block either.
//!
//! ```no_run
//! use std::sync::Arc;
//! use manifold_io::{EventSink, MediaConfig, MediaWorkers, Undelivered};
//! use manifold_api::{CoreEvent, RequestId};
//! use manifold_core::Command;
//!
//! struct Log;
//! impl EventSink for Log {
//!     fn deliver(&self, worker: u16, event: CoreEvent) -> Result<(), Undelivered> {
//!         println!("worker {worker}: {event:?}");
//!         Ok(())
//!     }
//! }
//!
//! let workers = MediaWorkers::start(MediaConfig::default(), Arc::new(Log))?;
//! for h in workers.handles() {
//!     println!("worker {} listens on {} and announces {:?}", h.index(), h.local_addr(), h.candidates());
//!     h.send(Command::Stats { request: RequestId(1) })?;
//! }
//! workers.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// The crate needs one unsafe call, the `ioctl` that reads a datagram's receive timestamp
// (`socket.rs`, which quinn-udp does not hand over); quinn-udp, socket2 and mio hold the
// other syscalls. Each unsafe block carries a `// SAFETY:` comment.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod backlog;
mod config;
mod handle;
mod socket;
mod tcp;
mod worker;
mod workers;

pub use config::{DEFAULT_TCP_MAX_CONNECTIONS, MAX_TCP_CONNECTIONS, MAX_WORKERS, MediaConfig};
pub use handle::{OverloadCounters, Overloaded, WorkerHandle};
/// The shard index that stands for the node's bridge to other nodes (a room's set of
/// workers includes it when other nodes hold the room); every real worker is numbered below.
pub use manifold_core::BRIDGE;
pub use tcp::{
    IDLE_TIMEOUT, IceTcpCounters, MAX_FRAME_BYTES, MAX_UNIDENTIFIED_PER_IP, MAX_WRITE_QUEUE_BYTES,
    READ_BUFFER_BYTES, UNIDENTIFIED_TIMEOUT,
};
pub use workers::{MAX_BRIDGE_INBOX, MediaWorkers};

use std::net::SocketAddr;

/// Where workers deliver the events their shards report.
///
/// Called on the media thread for every event, so it must return quickly and never block:
/// a bounded `try_send` into a channel is the intended shape. Events are lossless: one the
/// sink cannot take now ([`Undelivered::Full`]) is handed back, and the worker keeps it,
/// in order with every later one, and offers it again on its next turns (within a bound,
/// [`MAX_EVENT_BACKLOG`], that a working control plane never comes near).
pub trait EventSink: Send + Sync + 'static {
    /// Hand over one event from `worker`.
    // The error hands the event itself back (no allocation on the overload path); it is as
    // large as the event, which is the point.
    #[allow(clippy::result_large_err)]
    fn deliver(&self, worker: u16, event: manifold_api::CoreEvent) -> Result<(), Undelivered>;
}

/// Where workers send what their shards relay to other nodes (tracks of rooms that other
/// nodes hold members of, and feedback to the nodes their relayed tracks come from),
/// encoded for the wire (`manifold_core::relay_wire`). The control plane puts it on the
/// cluster's bus. Called on the media thread: it must not block; `false` means the frame
/// was dropped (counted as `relay_dropped`).
pub trait BridgeSink: Send + Sync + 'static {
    /// Hand over one encoded frame for `to`.
    fn send(&self, to: BridgeTo, frame: Vec<u8>) -> bool;
}

/// Whom a bridge frame is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BridgeTo {
    /// Every other node holding members of the room (a track published here: its
    /// description, packets, mute state and end).
    Room(manifold_api::RoomName),
    /// The node a relayed track comes from (keyframe requests, layer needs, lost packets).
    Node(std::sync::Arc<str>),
}

/// Why an [`EventSink`] did not take an event.
#[derive(Debug)]
pub enum Undelivered {
    /// The receiver is full for now: here is the event back, offer it again later.
    Full(manifold_api::CoreEvent),
    /// The receiver is gone: nobody will ever take it (the worker counts it as dropped).
    Closed,
}

/// Most events a worker holds back for a full [`EventSink`]. A control plane that leaves
/// this many unread has stopped; beyond it events are dropped and counted
/// (`events_dropped`), rather than growing the worker's memory without end.
pub const MAX_EVENT_BACKLOG: usize = 1 << 16;

/// Why the media workers could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// A worker's UDP socket could not be created, configured or bound (for example: the
    /// port is in use, or the address is not local).
    #[error("cannot bind the media socket {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The [`MediaConfig`] is inconsistent.
    #[error("invalid media configuration: {0}")]
    Config(String),
    /// A worker thread, or its event loop, could not be created.
    #[error("cannot start a media worker: {0}")]
    Spawn(std::io::Error),
}
