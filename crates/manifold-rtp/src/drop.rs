//! The closed set of reasons the SFU does not forward a packet.
//!
//! Every drop anywhere in the forwarding path is counted under exactly one of
//! these, so a metric or a debug dump can always say where packets went. The
//! string names are part of the metrics and JSON surface and must not change.

use core::fmt;

/// Why a packet was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// A datagram that is not STUN, DTLS, RTP or RTCP, or that fails parsing.
    Malformed,
    /// A datagram from an address or ufrag that no participant owns.
    UnknownSource,
    /// A participant's `Rtc` refused it (`accepts()` false or a
    /// `handle_input` error).
    Rejected,
    /// RTP for an SSRC that no track owns.
    UnknownSsrc,
    /// The subscriber waits for a keyframe before starting or switching.
    WaitingForKeyframe,
    /// Older than the current source's start point.
    TooOld,
    /// The subscriber did not negotiate the publisher's codec.
    CodecMismatch,
    /// Nothing to forward to. Not a loss: a track nobody watches.
    NoSubscriber,
    /// The subscriber's `Rtc` is not connected yet.
    SubscriberNotReady,
    /// The publisher muted the track: the server stops forwarding it. Not a loss.
    Muted,
    /// A simulcast layer or temporal layer this subscriber does not receive now. Not a loss.
    OtherLayer,
    /// The subscriber's link carries no video now; its video is paused. Not a loss.
    Paused,
    /// The worker is overloaded and sheds video first (`manifold-core`'s `overload.rs`):
    /// counted once per subscriber and packet not forwarded.
    ShedVideo,
    /// The worker is overloaded past shedding video and sheds audio too (counted the same
    /// way).
    ShedAudio,
}

impl DropReason {
    /// Every reason, in declaration order, so metrics can be registered
    /// (and reported as zero) before the first drop of a kind happens.
    pub const ALL: &'static [Self] = &[
        Self::Malformed,
        Self::UnknownSource,
        Self::Rejected,
        Self::UnknownSsrc,
        Self::WaitingForKeyframe,
        Self::TooOld,
        Self::CodecMismatch,
        Self::NoSubscriber,
        Self::SubscriberNotReady,
        Self::Muted,
        Self::OtherLayer,
        Self::Paused,
        Self::ShedVideo,
        Self::ShedAudio,
    ];

    /// Stable snake_case name for metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownSource => "unknown_source",
            Self::Rejected => "rejected",
            Self::UnknownSsrc => "unknown_ssrc",
            Self::WaitingForKeyframe => "waiting_for_keyframe",
            Self::TooOld => "too_old",
            Self::CodecMismatch => "codec_mismatch",
            Self::NoSubscriber => "no_subscriber",
            Self::SubscriberNotReady => "subscriber_not_ready",
            Self::Muted => "muted",
            Self::OtherLayer => "other_layer",
            Self::Paused => "paused",
            Self::ShedVideo => "shed_video",
            Self::ShedAudio => "shed_audio",
        }
    }

    /// Whether a drop of this kind means media a receiver wanted was lost.
    ///
    /// `NoSubscriber`, `Muted`, `OtherLayer` and `Paused` are the exceptions: nobody
    /// wanted the packet, so counting them would make an idle, muted or simulcast room
    /// look lossy.
    pub fn counts_as_loss(self) -> bool {
        !matches!(
            self,
            Self::NoSubscriber | Self::Muted | Self::OtherLayer | Self::Paused
        )
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn all_lists_every_reason_once() {
        // A new variant that is not added to ALL would be invisible in
        // metrics; this match fails to compile until it is handled here too.
        fn index(r: DropReason) -> usize {
            match r {
                DropReason::Malformed => 0,
                DropReason::UnknownSource => 1,
                DropReason::Rejected => 2,
                DropReason::UnknownSsrc => 3,
                DropReason::WaitingForKeyframe => 4,
                DropReason::TooOld => 5,
                DropReason::CodecMismatch => 6,
                DropReason::NoSubscriber => 7,
                DropReason::SubscriberNotReady => 8,
                DropReason::Muted => 9,
                DropReason::OtherLayer => 10,
                DropReason::Paused => 11,
                DropReason::ShedVideo => 12,
                DropReason::ShedAudio => 13,
            }
        }
        assert_eq!(DropReason::ALL.len(), 14);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(index(*r), i);
        }
    }

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for r in DropReason::ALL {
            let name = r.as_str();
            assert!(seen.insert(name), "duplicate name {name}");
            assert!(!name.is_empty());
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name} is not snake_case"
            );
            assert!(!name.starts_with('_') && !name.ends_with('_'));
            assert_eq!(r.to_string(), name);
        }
    }

    #[test]
    fn stable_names() {
        assert_eq!(DropReason::Malformed.as_str(), "malformed");
        assert_eq!(DropReason::UnknownSource.as_str(), "unknown_source");
        assert_eq!(DropReason::Rejected.as_str(), "rejected");
        assert_eq!(DropReason::UnknownSsrc.as_str(), "unknown_ssrc");
        assert_eq!(
            DropReason::WaitingForKeyframe.as_str(),
            "waiting_for_keyframe"
        );
        assert_eq!(DropReason::TooOld.as_str(), "too_old");
        assert_eq!(DropReason::CodecMismatch.as_str(), "codec_mismatch");
        assert_eq!(DropReason::NoSubscriber.as_str(), "no_subscriber");
        assert_eq!(
            DropReason::SubscriberNotReady.as_str(),
            "subscriber_not_ready"
        );
        assert_eq!(DropReason::Muted.as_str(), "muted");
        assert_eq!(DropReason::ShedVideo.as_str(), "shed_video");
        assert_eq!(DropReason::ShedAudio.as_str(), "shed_audio");
    }

    #[test]
    fn only_unwanted_packets_are_not_loss() {
        for r in DropReason::ALL {
            let unwanted = matches!(
                r,
                DropReason::NoSubscriber
                    | DropReason::Muted
                    | DropReason::OtherLayer
                    | DropReason::Paused
            );
            assert_eq!(r.counts_as_loss(), !unwanted);
        }
    }
}
