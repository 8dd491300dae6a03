//! Manifold's load generator: many real WebRTC clients (str0m: ICE, DTLS, SRTP, RTCP) in one
//! process, publishing stamped synthetic media (one VP8 stream, or three simulcast layers)
//! and measuring what they receive, through capped downlinks if asked, against Manifold or
//! any other server a [`target::Target`] speaks to.
#![forbid(unsafe_code)]

pub mod classes;
pub mod cli;
pub mod client;
pub mod downlink;
pub mod engine;
pub mod hist;
pub mod janus;
pub mod recv;
pub mod report;
pub mod room;
pub mod run;
mod send;
pub mod signal;
pub mod simulcast;
pub mod snapshot;
pub mod stamp;
pub mod synth;
pub mod target;
pub mod video;

pub use classes::ClassSummary;
pub use client::{Client, MediaShape, SubscriberSetup};
pub use downlink::DownlinkCap;
pub use engine::Engine;
pub use recv::RecvStats;
pub use report::Report;
pub use run::{Scenario, run};
pub use signal::{Joined, MediaSpec, SignalError, join, leave};
pub use snapshot::ClientReport;
pub use target::{Target, WhipWhep};
pub use video::VideoReport;
