//! Manifold's sans-IO SFU core: rooms, participants (one str0m `Rtc` each), tracks,
//! subscriptions and the forwarding decision, driven by `Shard::handle_input(now, input)` and
//! drained with `Shard::poll_output()`.
//!
//! Nothing here opens a socket, spawns a task or reads the clock: time is an input, so a
//! minute of call can be simulated in milliseconds.
#![forbid(unsafe_code)]

mod allocator;
mod command;
mod config;
mod fanout;
pub mod forwarder;
mod keys;
mod layer;
mod membership;
pub mod negotiate;
mod negotiation;
mod outbox;
pub mod overload;
mod participant;
mod quality;
mod relay;
pub mod relay_wire;
mod room;
mod room_session;
mod sdp_check;
mod shard;
mod speakers;
mod stats;
mod track;

pub use command::{Command, Input};
pub use config::ShardConfig;
pub use manifold_api::command::Publication;
pub use manifold_api::command::{NegotiatedSession, Negotiator, NewSession};
pub use negotiate::{NegotiateError, Negotiated, RtcFactory, SdpFragment};
pub use outbox::{Output, Transmit};
pub use overload::OverloadConfig;
pub use relay::{BRIDGE, MAX_RELAY_NACK, RelayMessage, RelayOpen, RelayedPacket};
pub use shard::{MAX_TRICKLED_CANDIDATES, Shard};

/// The WebRTC library the core is built on, re-exported so that callers building sessions
/// and tests use the very same version.
pub use str0m;
/// The transport of a datagram in or out: UDP, or a frame of an ICE-TCP connection.
pub use str0m::net::Protocol;
