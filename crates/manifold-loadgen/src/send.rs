//! A publisher's outgoing RTP streams: which payload type and SSRC each sends with, its
//! sequence numbers, timestamps and stamp indices, and writing one payload into its `Rtc`.

use std::time::Instant;

use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};

use crate::stamp::next_source;

/// One outgoing RTP stream.
#[derive(Debug)]
pub(crate) struct SendTrack {
    /// Source id of its stamps.
    pub source: u32,
    pub pt: Pt,
    pub ssrc: Ssrc,
    pub seq: u64,
    /// RTP timestamp, extended.
    pub ts: u64,
    /// Stamp index of the next packet.
    pub index: u32,
    /// Packets written.
    pub sent: u64,
}

impl SendTrack {
    /// The stream of `kind` among `media` (the simulcast layer `rid` of it, if given),
    /// sending `codec` with a payload type the server accepted.
    pub fn open(
        rtc: &mut Rtc,
        media: &[(Mid, MediaKind)],
        kind: MediaKind,
        codec: Codec,
        rid: Option<Rid>,
    ) -> Option<SendTrack> {
        let mid = media.iter().find(|(_, k)| *k == kind)?.0;
        let remote_pts = rtc.media(mid)?.remote_pts().to_vec();
        let pt = rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == codec && remote_pts.contains(&p.pt()))?
            .pt();
        let ssrc = rtc.direct_api().stream_tx_by_mid(mid, rid)?.ssrc();
        let seed = u64::from(*ssrc);
        Some(SendTrack {
            source: next_source(),
            pt,
            ssrc,
            seq: seed & 0x3fff,
            ts: (seed << 8) & 0x3fff_ffff,
            index: 0,
            sent: 0,
        })
    }

    /// Write one payload stamped with the next index, at the stream's current timestamp.
    /// Video is nackable (kept for retransmission), audio is not.
    pub fn write(
        &mut self,
        rtc: &mut Rtc,
        now: Instant,
        payload: Vec<u8>,
        marker: bool,
        video: bool,
    ) {
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_tx(&self.ssrc) else {
            return;
        };
        let seq: SeqNo = self.seq.into();
        stream.write_rtp(
            RtpWrite::new(self.pt, seq, self.ts as u32, now, payload)
                .marker(marker)
                .nackable(video),
        );
        self.seq += 1;
        self.sent += 1;
        self.index = self.index.wrapping_add(1);
    }
}
