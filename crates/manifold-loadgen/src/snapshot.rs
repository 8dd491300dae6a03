//! A snapshot of one client as reports carry it: its connection, what it sent (a
//! publisher) or received (a subscriber: per-kind statistics, its decoded video, its
//! capped downlink).

use serde::Serialize;

use crate::downlink::DownlinkReport;
use crate::recv::RecvStats;
use crate::simulcast::LayerSent;
use crate::video::VideoReport;

/// A snapshot of one client.
#[derive(Clone, Debug, Serialize)]
pub struct ClientReport {
    /// Label given at creation.
    pub label: String,
    /// "publisher" or "subscriber".
    pub role: &'static str,
    /// ICE+DTLS came up.
    pub connected: bool,
    /// When its offer was made, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Time from offer to connected.
    pub connect_ms: Option<u64>,
    /// Time from offer to the first media packet received (subscribers): join → first media.
    pub first_media_ms: Option<u64>,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// It left before the end of the run (churn): what its publisher sent after that was
    /// never meant for it.
    pub left_early: bool,
    /// Audio packets sent (publishers).
    pub audio_sent: u64,
    /// Video packets sent (publishers; every layer's).
    pub video_sent: u64,
    /// Keyframe requests received (publishers) or sent (subscribers: PLIs of its decoder
    /// model).
    pub keyframe_requests: u64,
    /// Source id stamped on the audio it sends (publishers).
    pub audio_source: Option<u32>,
    /// Source id stamped on the video it sends (publishers without simulcast).
    pub video_source: Option<u32>,
    /// What each simulcast layer sent (publishers with simulcast).
    pub layers: Vec<LayerSent>,
    /// UDP payload bytes sent (media, RTCP, STUN, DTLS).
    pub bytes_sent: u64,
    /// UDP payload bytes received (past the downlink's cap, if any).
    pub bytes_received: u64,
    /// RTP datagrams (media, retransmissions, padding) that reached the socket, before any
    /// downlink cap: what the server sent this subscriber.
    pub rtp_in: u64,
    /// The capped downlink, if it has one.
    pub downlink: Option<DownlinkReport>,
    /// From its first media packet to its last, seconds.
    pub media_s: f64,
    /// UDP bitrate received over that time, kbit/s.
    pub received_kbps: Option<f64>,
    /// Of it, the RTP payloads of media packets (audio and video, retransmitted ones once):
    /// the rest is headers, RTCP, padding and repeated retransmissions.
    pub media_kbps: Option<f64>,
    /// Audio received (subscribers).
    pub audio: RecvStats,
    /// Video received (subscribers).
    pub video: RecvStats,
    /// Its video's frames, layers and freezes (subscribers).
    pub video_frames: VideoReport,
}

impl ClientReport {
    /// A report of a client that did nothing yet.
    pub fn new(label: String, role: &'static str) -> ClientReport {
        ClientReport {
            label,
            role,
            connected: false,
            started_unix_ms: 0,
            connect_ms: None,
            first_media_ms: None,
            failure: None,
            left_early: false,
            audio_sent: 0,
            video_sent: 0,
            keyframe_requests: 0,
            audio_source: None,
            video_source: None,
            layers: Vec::new(),
            bytes_sent: 0,
            bytes_received: 0,
            rtp_in: 0,
            downlink: None,
            media_s: 0.0,
            received_kbps: None,
            media_kbps: None,
            audio: RecvStats::default(),
            video: RecvStats::default(),
            video_frames: VideoReport::default(),
        }
    }
}
