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
    /// NACK requests received from subscribers (RTCP generic NACK messages).
    #[serde(default)]
    pub nacks_in: u64,
    /// NACK requests sent to publishers.
    #[serde(default)]
    pub nacks_out: u64,
    /// Picture loss indications received from subscribers.
    #[serde(default)]
    pub plis_in: u64,
    /// Picture loss indications sent to publishers.
    #[serde(default)]
    pub plis_out: u64,
    /// Full intra requests received from subscribers.
    #[serde(default)]
    pub firs_in: u64,
    /// Full intra requests sent to publishers.
    #[serde(default)]
    pub firs_out: u64,
    /// Keyframes received from publishers (counted at their first packet).
    #[serde(default)]
    pub keyframes_in: u64,
    /// Sessions that never completed ICE within the connect timeout.
    #[serde(default)]
    pub ice_failures: u64,
    /// Sessions whose ICE connected but whose DTLS handshake failed or never completed.
    #[serde(default)]
    pub dtls_failures: u64,
    /// Join (the shard took the session) to connected (ICE and DTLS done), per session.
    #[serde(default)]
    pub connect_time: HistogramSnapshot,
    /// ICE connected to DTLS handshake done, per session.
    #[serde(default)]
    pub dtls_handshake: HistogramSnapshot,
    /// What the worker sheds because it cannot keep up: 0 nothing, 1 video, 2 video and
    /// audio (the highest of any worker, in a sum of snapshots).
    #[serde(default)]
    pub shed_level: u64,
    /// Overload episodes: times a worker started shedding.
    #[serde(default)]
    pub overload_episodes: u64,
    /// Backlogs past the video threshold that started no episode: the worker's load would
    /// drain them within a second (`overload.rs`).
    #[serde(default)]
    pub overload_spikes: u64,
    /// Share of video subscriptions the overloaded worker sheds now, % (the highest of any
    /// worker, in a sum of snapshots).
    #[serde(default)]
    pub video_shed_pct: u64,
}

/// A histogram of durations: how many observations fell at or under each bound, bucket by
/// bucket (not cumulative), and over the last bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets, microseconds, ascending.
    pub bounds_us: Vec<u64>,
    /// Observations per bucket: `counts[i]` are those in `(bounds_us[i-1], bounds_us[i]]`;
    /// one more entry than `bounds_us` counts those over the last bound.
    pub counts: Vec<u64>,
    /// Sum of all observations, microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Add `other` (same bounds) into this one; an empty side takes the other's bounds.
    /// Histograms of different bounds are not mixed: `other` is ignored.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.bounds_us.is_empty() && self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        if self.bounds_us != other.bounds_us || self.counts.len() != other.counts.len() {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }
}

/// A fixed-bucket histogram of durations, for counting off the packet path (per session,
/// per batch): observing never allocates.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds_us: &'static [u64],
    counts: Vec<u64>,
    sum_us: u64,
}

impl Histogram {
    /// An empty histogram over `bounds_us` (ascending upper bounds, microseconds).
    pub fn new(bounds_us: &'static [u64]) -> Self {
        Histogram {
            bounds_us,
            counts: vec![0; bounds_us.len() + 1],
            sum_us: 0,
        }
    }

    /// Count one observation.
    pub fn observe(&mut self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = self.bounds_us.partition_point(|&b| b < us);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// What it holds now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds_us: self.bounds_us.to_vec(),
            counts: self.counts.clone(),
            sum_us: self.sum_us,
        }
    }
}

/// Bounds for session set-up times (join to connected), microseconds: 5 ms to 30 s.
pub const CONNECT_BOUNDS_US: &[u64] = &[
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000,
];

/// Bounds for short latencies (a DTLS handshake on a fast path, a batch through a
/// worker), microseconds: 10 µs to 5 s.
pub const LATENCY_BOUNDS_US: &[u64] = &[
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000, 5_000_000,
];

/// Bytes through one room on one shard: its participants here now and those who left
/// while the room lasted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomTraffic {
    /// The room.
    pub room: String,
    /// Bytes received from its participants (every datagram their sessions accepted).
    pub bytes_in: u64,
    /// Bytes sent to them.
    pub bytes_out: u64,
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
        self.nacks_in += other.nacks_in;
        self.nacks_out += other.nacks_out;
        self.plis_in += other.plis_in;
        self.plis_out += other.plis_out;
        self.firs_in += other.firs_in;
        self.firs_out += other.firs_out;
        self.keyframes_in += other.keyframes_in;
        self.ice_failures += other.ice_failures;
        self.dtls_failures += other.dtls_failures;
        self.connect_time.merge(&other.connect_time);
        self.dtls_handshake.merge(&other.dtls_handshake);
        self.shed_level = self.shed_level.max(other.shed_level);
        self.overload_episodes += other.overload_episodes;
        self.overload_spikes += other.overload_spikes;
        self.video_shed_pct = self.video_shed_pct.max(other.video_shed_pct);
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

    #[test]
    fn histograms_bucket_at_their_bounds_and_merge() {
        use std::time::Duration;
        const B: &[u64] = &[10, 100];
        let mut h = Histogram::new(B);
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(11));
        h.observe(Duration::from_micros(5_000));
        let s = h.snapshot();
        assert_eq!(s.counts, vec![1, 1, 1]);
        assert_eq!(s.sum_us, 5_021);
        assert_eq!(s.count(), 3);

        let mut total = HistogramSnapshot::default();
        total.merge(&s);
        total.merge(&s);
        assert_eq!(total.counts, vec![2, 2, 2]);
        assert_eq!(total.sum_us, 10_042);
        // Other bounds are not mixed in.
        total.merge(&Histogram::new(&[1]).snapshot());
        assert_eq!(total.count(), 6);
    }
}
