//! Manifold's load generator: many real WebRTC clients (str0m: ICE, DTLS, SRTP, RTCP) in one
//! process, publishing stamped synthetic media and measuring what they receive, against
//! Manifold or any other server a [`target::Target`] speaks to.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod engine;
pub mod hist;
pub mod janus;
pub mod report;
pub mod room;
pub mod run;
pub mod signal;
pub mod stamp;
pub mod synth;
pub mod target;

pub use client::{Client, ClientReport, MediaShape, RecvStats};
pub use engine::Engine;
pub use report::Report;
pub use run::{Scenario, run};
pub use signal::{Joined, MediaSpec, SignalError, join, leave};
pub use target::{Target, WhipWhep};
