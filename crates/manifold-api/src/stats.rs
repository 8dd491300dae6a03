//! Counters a shard keeps and reports: what it holds, what went through it and what it
//! dropped, by reason.

use serde::{Deserialize, Serialize};

/// Packets dropped for one reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DropCount {
    /// Stable snake_case reason name.
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// A snapshot of one shard (or, summed, of the whole server).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardStats {
    /// Rooms with at least one participant.
    pub rooms: u64,
    /// Participants.
    pub participants: u64,
    /// Published tracks.
    pub tracks: u64,
    /// Active forwarding subscriptions (a subscriber slot attached to a track).
    pub subscriptions: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets handed to subscribers (one per subscriber).
    pub rtp_out: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Participants removed because their WebRTC state machine panicked.
    pub panics: u64,
    /// Tracks received from other workers' publishers (relays), not counted in `tracks`.
    #[serde(default)]
    pub relayed_tracks: u64,
    /// Packets taken from other workers' relays.
    #[serde(default)]
    pub relay_in: u64,
    /// Packets relayed to other workers (one per packet and worker).
    #[serde(default)]
    pub relay_out: u64,
    /// Relayed packets that did not arrive (the relay queue was full) and were asked for
    /// again.
    #[serde(default)]
    pub relay_lost: u64,
    /// Relayed packets sent again on such a request.
    #[serde(default)]
    pub relay_resent: u64,
    /// Drops, by reason; reasons with a zero count are omitted.
    pub drops: Vec<DropCount>,
}

impl ShardStats {
    /// Add another snapshot into this one (for a server-wide total).
    pub fn merge(&mut self, other: &ShardStats) {
        self.rooms += other.rooms;
        self.participants += other.participants;
        self.tracks += other.tracks;
        self.subscriptions += other.subscriptions;
        self.datagrams_in += other.datagrams_in;
        self.datagrams_out += other.datagrams_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.rtp_in += other.rtp_in;
        self.rtp_out += other.rtp_out;
        self.keyframe_requests += other.keyframe_requests;
        self.panics += other.panics;
        self.relayed_tracks += other.relayed_tracks;
        self.relay_in += other.relay_in;
        self.relay_out += other.relay_out;
        self.relay_lost += other.relay_lost;
        self.relay_resent += other.relay_resent;
        for d in &other.drops {
            match self.drops.iter_mut().find(|x| x.reason == d.reason) {
                Some(x) => x.count += d.count,
                None => self.drops.push(d.clone()),
            }
        }
    }

    /// Drops counted for `reason` (0 when none).
    pub fn drops_for(&self, reason: &str) -> u64 {
        self.drops
            .iter()
            .find(|d| d.reason == reason)
            .map_or(0, |d| d.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_counters_and_drops() {
        let mut a = ShardStats {
            participants: 2,
            drops: vec![DropCount {
                reason: "malformed".into(),
                count: 3,
            }],
            ..Default::default()
        };
        let b = ShardStats {
            participants: 1,
            drops: vec![
                DropCount {
                    reason: "malformed".into(),
                    count: 1,
                },
                DropCount {
                    reason: "too_old".into(),
                    count: 5,
                },
            ],
            ..Default::default()
        };
        a.merge(&b);
        assert_eq!(a.participants, 3);
        assert_eq!(a.drops_for("malformed"), 4);
        assert_eq!(a.drops_for("too_old"), 5);
        assert_eq!(a.drops_for("nope"), 0);
    }
}
