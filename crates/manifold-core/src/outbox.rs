//! What goes out of a shard: the [`Output`]s the I/O layer drains (datagrams to send, events
//! for the control plane, the next timeout), and the [`Outbox`] every part of the shard that
//! drives an `Rtc` writes into, with the timer heap and the counters.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use manifold_api::{CommandError, CoreEvent, ReplyValue, RequestId};
use str0m::Event;

use crate::keys::PKey;
use crate::relay::RelayMessage;
use crate::stats::Counters;

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// What.
    pub contents: Vec<u8>,
    /// Over which transport: UDP, or as one frame on the ICE-TCP connection from
    /// `destination`.
    pub proto: str0m::net::Protocol,
}

/// Output of [`Shard::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit),
    /// Tell the control plane.
    Event(CoreEvent),
    /// Hand this to shard `to` of the node as [`Input::Relay`](crate::Input::Relay).
    Relay {
        /// The shard's index.
        to: u16,
        /// What.
        message: RelayMessage,
    },
    /// Nothing more now; call again with [`Input::Timeout`] at this time (or earlier input).
    Timeout(Instant),
}

/// Queues shared by everything that drives an `Rtc`: outputs for the I/O layer, `Rtc`
/// events still to be handled, the timer heap and the counters.
pub(crate) struct Outbox {
    pub outputs: VecDeque<Output>,
    pub events: VecDeque<(PKey, Event)>,
    pub timers: BinaryHeap<Reverse<(Instant, PKey)>>,
    pub counters: Counters,
    /// Some participant was doomed since the last reap.
    pub reap: bool,
}

impl Outbox {
    pub fn transmit(&mut self, t: str0m::net::Transmit) {
        let contents: Vec<u8> = t.contents.into();
        self.counters.datagrams_out += 1;
        self.counters.bytes_out += contents.len() as u64;
        self.outputs.push_back(Output::Transmit(Transmit {
            destination: t.destination,
            contents,
            proto: t.proto,
        }));
    }

    pub fn schedule(&mut self, at: Instant, key: PKey) {
        self.timers.push(Reverse((at, key)));
    }

    pub(crate) fn event(&mut self, e: CoreEvent) {
        self.outputs.push_back(Output::Event(e));
    }

    pub(crate) fn reply(&mut self, request: RequestId, result: Result<ReplyValue, CommandError>) {
        self.event(CoreEvent::Reply { request, result });
    }
}
