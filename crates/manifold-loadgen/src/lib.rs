//! Manifold's load generator: many real WebRTC clients (str0m: ICE, DTLS, SRTP, RTCP) in one
//! process, publishing stamped synthetic media and measuring what they receive.
#![forbid(unsafe_code)]

pub mod client;
pub mod engine;
pub mod signal;
pub mod stamp;
pub mod synth;

pub use client::{Client, ClientReport, MediaShape, RecvStats};
pub use engine::Engine;
pub use signal::{Joined, MediaSpec, SignalError, join, leave};
