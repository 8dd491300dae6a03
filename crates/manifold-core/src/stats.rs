//! The shard's counters. Plain integers bumped on the media path; a snapshot is taken only
//! when the control plane asks.

use manifold_api::{CONNECT_BOUNDS_US, DropCount, Histogram, LATENCY_BOUNDS_US, ShardStats};
use manifold_rtp::DropReason;

/// Counters of one shard.
#[derive(Debug)]
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
    /// RTCP feedback: received from subscribers (`_in`), sent to publishers (`_out`); added
    /// up from each session's `Rtc` statistics as they come (`RtcpTally`).
    pub nacks_in: u64,
    pub nacks_out: u64,
    pub plis_in: u64,
    pub plis_out: u64,
    pub firs_in: u64,
    pub firs_out: u64,
    /// Keyframes received from publishers.
    pub keyframes_in: u64,
    /// Sessions given up on before they connected: ICE never did, or DTLS after it.
    pub ice_failures: u64,
    pub dtls_failures: u64,
    /// Join → connected, and ICE connected → DTLS done, per session.
    pub connect_time: Histogram,
    pub dtls_handshake: Histogram,
    drops: [u64; 16],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            datagrams_in: 0,
            datagrams_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            rtp_in: 0,
            rtp_out: 0,
            keyframe_requests: 0,
            panics: 0,
            relay_in: 0,
            relay_out: 0,
            relay_lost: 0,
            relay_resent: 0,
            relays_opened: 0,
            nacks_in: 0,
            nacks_out: 0,
            plis_in: 0,
            plis_out: 0,
            firs_in: 0,
            firs_out: 0,
            keyframes_in: 0,
            ice_failures: 0,
            dtls_failures: 0,
            connect_time: Histogram::new(CONNECT_BOUNDS_US),
            dtls_handshake: Histogram::new(LATENCY_BOUNDS_US),
            drops: [0; 16],
        }
    }
}

/// The cumulative RTCP feedback counts one stream of a session's `Rtc` last reported, so
/// that each report adds only what is new to the shard's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RtcpTally {
    /// The stream: m-line, simulcast layer (if any), and whether it is one
    /// the session receives (ingress: feedback we send) or sends (egress: feedback we get).
    pub mid: str0m::media::Mid,
    pub rid: Option<str0m::media::Rid>,
    pub ingress: bool,
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
}

/// Most streams whose feedback counts one session remembers: a few m-lines with three
/// simulcast layers each, both ways. Streams past it are not counted.
pub(crate) const MAX_TALLIES: usize = 48;

impl Counters {
    /// Add what a stream's cumulative (nacks, plis, firs) report holds beyond the last one
    /// remembered in `tallies` (a stream whose counts went down started over).
    pub fn rtcp_feedback(
        &mut self,
        tallies: &mut Vec<RtcpTally>,
        stream: (str0m::media::Mid, Option<str0m::media::Rid>, bool),
        counts: (u64, u64, u64),
    ) {
        let (mid, rid, ingress) = stream;
        let (nacks, plis, firs) = counts;
        let at = tallies
            .iter()
            .position(|t| t.mid == mid && t.rid == rid && t.ingress == ingress);
        let at = match at {
            Some(i) => i,
            None if tallies.len() < MAX_TALLIES => {
                tallies.push(RtcpTally {
                    mid,
                    rid,
                    ingress,
                    nacks: 0,
                    plis: 0,
                    firs: 0,
                });
                tallies.len() - 1
            }
            None => return,
        };
        let last = &mut tallies[at];
        let delta = |now: u64, before: u64| if now >= before { now - before } else { now };
        let (dn, dp, df) = (
            delta(nacks, last.nacks),
            delta(plis, last.plis),
            delta(firs, last.firs),
        );
        (last.nacks, last.plis, last.firs) = (nacks, plis, firs);
        if ingress {
            self.nacks_out += dn;
            self.plis_out += dp;
            self.firs_out += df;
        } else {
            self.nacks_in += dn;
            self.plis_in += dp;
            self.firs_in += df;
        }
    }

    pub fn drop(&mut self, reason: DropReason) {
        self.drop_n(reason, 1);
    }

    /// `n` drops of one reason at once (one packet not sent to `n` subscribers).
    pub fn drop_n(&mut self, reason: DropReason, n: u64) {
        if let Some(slot) = self.drops.get_mut(index_of(reason)) {
            *slot += n;
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
            nacks_in: self.nacks_in,
            nacks_out: self.nacks_out,
            plis_in: self.plis_in,
            plis_out: self.plis_out,
            firs_in: self.firs_in,
            firs_out: self.firs_out,
            keyframes_in: self.keyframes_in,
            ice_failures: self.ice_failures,
            dtls_failures: self.dtls_failures,
            connect_time: self.connect_time.snapshot(),
            dtls_handshake: self.dtls_handshake.snapshot(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::Mid;

    #[test]
    fn feedback_adds_only_what_is_new_per_stream_and_direction() {
        let mut c = Counters::default();
        let mut tallies = Vec::new();
        let a = Mid::from("0");
        c.rtcp_feedback(&mut tallies, (a, None, false), (3, 1, 0));
        c.rtcp_feedback(&mut tallies, (a, None, false), (5, 1, 1));
        c.rtcp_feedback(&mut tallies, (a, None, true), (2, 4, 0));
        assert_eq!((c.nacks_in, c.plis_in, c.firs_in), (5, 1, 1));
        assert_eq!((c.nacks_out, c.plis_out, c.firs_out), (2, 4, 0));
        // A stream that started over counts from zero again.
        c.rtcp_feedback(&mut tallies, (a, None, false), (1, 0, 0));
        assert_eq!(c.nacks_in, 6);
        assert_eq!(tallies.len(), 2);
    }

    #[test]
    fn streams_past_the_bound_are_not_remembered() {
        let mut c = Counters::default();
        let mut tallies = Vec::new();
        for i in 0..MAX_TALLIES + 5 {
            let mid = Mid::from(i.to_string().as_str());
            c.rtcp_feedback(&mut tallies, (mid, None, true), (1, 0, 0));
        }
        assert_eq!(tallies.len(), MAX_TALLIES);
        assert_eq!(c.nacks_out, MAX_TALLIES as u64);
    }
}
