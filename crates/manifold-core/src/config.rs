//! Limits and timings of one shard.

use std::time::Duration;

use crate::overload::OverloadConfig;

/// Limits and timings of one shard. Defaults suit a public server; tests shorten them.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Participants one room may hold.
    pub max_participants_per_room: usize,
    /// Tracks one participant may publish.
    pub max_tracks_per_participant: usize,
    /// Shortest time between two keyframe requests to one source; requests in between are
    /// coalesced into the next one.
    pub keyframe_request_interval: Duration,
    /// A session whose ICE has not connected by then is removed.
    pub connect_timeout: Duration,
    /// A session whose ICE stays disconnected this long is removed.
    pub disconnect_grace: Duration,
    /// How often the shard checks timeouts and pending keyframe requests.
    pub housekeeping_interval: Duration,
    /// The top 16 bits of every track id this shard makes: random per node (the binary
    /// draws it), so that tracks of different nodes in one room have different ids.
    pub track_id_salt: u16,
    /// When the shard sheds media because its worker cannot keep up (`overload.rs`).
    pub overload: OverloadConfig,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            max_participants_per_room: 100,
            max_tracks_per_participant: 8,
            keyframe_request_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(30),
            disconnect_grace: Duration::from_secs(10),
            housekeeping_interval: Duration::from_millis(100),
            track_id_salt: 0,
            overload: OverloadConfig::default(),
        }
    }
}
