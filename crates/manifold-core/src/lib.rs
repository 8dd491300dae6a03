//! Manifold's sans-IO SFU core: rooms, participants (one str0m `Rtc` each), tracks,
//! subscriptions and the forwarding decision, driven by `Shard::handle_input(now, input)` and
//! drained with `Shard::poll_output()`.
//!
//! Nothing here opens a socket, spawns a task or reads the clock: time is an input, so a
//! minute of call can be simulated in milliseconds.
#![forbid(unsafe_code)]

mod config;
pub mod forwarder;
pub mod negotiate;
mod participant;
mod room;
mod shard;
mod stats;
mod track;

pub use config::ShardConfig;
pub use negotiate::{NegotiateError, Negotiated, RtcFactory, SdpFragment};
pub use room::Publication;
pub use shard::{Command, Input, MAX_TRICKLED_CANDIDATES, NewSession, Output, Shard, Transmit};

/// The WebRTC library the core is built on, re-exported so that callers building sessions
/// and tests use the very same version.
pub use str0m;
