//! The shard's counters. Plain integers bumped on the media path; a snapshot is taken only
//! when the control plane asks.

use manifold_api::{DropCount, ShardStats};
use manifold_rtp::DropReason;

/// Counters of one shard.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rtp_in: u64,
    pub rtp_out: u64,
    pub keyframe_requests: u64,
    pub panics: u64,
    /// Relayed packets taken from other shards / sent to them.
    pub relay_in: u64,
    pub relay_out: u64,
    /// Relayed packets found missing and asked for again, and packets sent again on request.
    pub relay_lost: u64,
    pub relay_resent: u64,
    /// Tracks opened on other shards.
    pub relays_opened: u64,
    drops: [u64; 16],
}

impl Counters {
    pub fn drop(&mut self, reason: DropReason) {
        if let Some(slot) = self.drops.get_mut(index_of(reason)) {
            *slot += 1;
        }
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(index_of(reason)).copied().unwrap_or(0)
    }

    pub fn snapshot(&self) -> ShardStats {
        ShardStats {
            datagrams_in: self.datagrams_in,
            datagrams_out: self.datagrams_out,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            rtp_in: self.rtp_in,
            rtp_out: self.rtp_out,
            keyframe_requests: self.keyframe_requests,
            panics: self.panics,
            relay_in: self.relay_in,
            relay_out: self.relay_out,
            relay_lost: self.relay_lost,
            relay_resent: self.relay_resent,
            drops: DropReason::ALL
                .iter()
                .filter(|r| self.drops(**r) > 0)
                .map(|r| DropCount {
                    reason: r.as_str().to_owned(),
                    count: self.drops(*r),
                })
                .collect(),
            ..Default::default()
        }
    }
}

fn index_of(reason: DropReason) -> usize {
    DropReason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(usize::MAX)
}
