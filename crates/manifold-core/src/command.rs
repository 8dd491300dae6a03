//! What comes into a shard: [`Input`] (datagrams, timeouts, and the control plane's
//! [`Command`]s, which `manifold-api` defines so that the control plane needs no WebRTC
//! stack to speak to shards).

use std::net::SocketAddr;
use std::time::Duration;

use str0m::net::Protocol;

pub use manifold_api::command::Command;

use crate::relay::RelayMessage;

/// Input to [`Shard::handle_input`].
#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram arrived on the shard's socket.
    Datagram {
        /// The sender.
        source: SocketAddr,
        /// The local address it arrived at (as announced to clients).
        destination: SocketAddr,
        /// Its bytes.
        contents: &'a [u8],
        /// The transport it came over: UDP, or one RFC 4571 frame of an ICE-TCP
        /// connection (the I/O layer removed the framing).
        proto: Protocol,
    },
    /// The time passed the last [`Output::Timeout`].
    Timeout,
    /// The input the worker takes next may have waited this long for it (its receive
    /// queue, its relay inbox): an upper bound the I/O layer gives before each receive
    /// batch and once per turn. Past the thresholds of `overload.rs` the shard sheds.
    Backlog(Duration),
    /// The worker has waited this long in all for input (blocked in its poll) since it
    /// started: the rest of the wall time it was busy. Given once per turn; `overload.rs`
    /// turns it into the worker's load.
    Idle(Duration),
    /// The control plane wants something.
    Command(Command),
    /// Another shard of the node says something about a relayed track (`relay.rs`).
    Relay {
        /// Its index.
        from: u16,
        /// What.
        message: RelayMessage,
    },
}
