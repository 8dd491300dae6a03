//! The hot path: one packet from a publisher to every subscriber of its track. Each
//! subscription's forwarder decides (drop, or forward with these numbers); this file applies
//! the decision to the subscriber's `Rtc`. Also the keyframe requests that go back to the
//! publisher, coalesced per layer, server-side mute, and audio RED unwrapped for subscribers
//! that take plain Opus.

use std::sync::Arc;
use std::time::Instant;

use manifold_api::{CommandError, MediaKind, ReplyValue, TrackId};
use manifold_rtp::{DropReason, VideoCodec};
use slab::Slab;
use str0m::media::KeyframeRequestKind;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc};

use crate::forwarder::{Decision, PacketMeta};
use crate::keys::{PKey, TKey};
use crate::outbox::{Outbox, Output};
use crate::participant::{MAX_SSRCS_PER_PUBLISHER, Participant};
use crate::relay::{Origin, RelayMessage, RelayedPacket};
use crate::shard::Shard;
use crate::track::{
    HISTORY_PACKETS, Kept, PACKET_OVERHEAD, SSRC_TAKEOVER_SILENCE, Subscriber, Track,
};

impl Shard {
    /// The hot path: one packet from a publisher to every subscriber of its track.
    pub(crate) fn forward(&mut self, now: Instant, key: PKey, packet: RtpPacket) {
        self.out.counters.rtp_in += 1;
        let ssrc = packet.header.ssrc;
        let Some((tk, li)) = self.track_for(key, ssrc) else {
            self.out.counters.drop(DropReason::UnknownSsrc);
            return;
        };
        let ext = &packet.header.ext_vals;
        let packet = RelayedPacket {
            ssrc: *ssrc,
            seq: *packet.seq_no,
            pt: *packet.header.payload_type,
            ts: packet.time.numer(),
            marker: packet.header.marker,
            timestamp: packet.timestamp,
            ext: ExtensionValues {
                audio_level: ext.audio_level,
                voice_activity: ext.voice_activity,
                video_orientation: ext.video_orientation,
                ..Default::default()
            },
            payload: packet.payload,
        };
        self.forward_track(now, tk, li, packet);
    }

    /// One packet of layer `li` of track `tk`, from its publisher here or relayed from
    /// another shard: to every subscriber here, and to every other shard the track is
    /// relayed to.
    pub(crate) fn forward_track(&mut self, now: Instant, tk: TKey, li: u8, packet: RelayedPacket) {
        let ssrc = packet.ssrc();
        let Shard {
            tracks,
            participants,
            out,
            config,
            overload,
            ..
        } = self;
        let track = &mut tracks[tk];

        let layer = &mut track.layers[usize::from(li)];
        if layer.ssrc != Some(ssrc) {
            // Without a RID, a second SSRC takes over only after the first fell silent; a
            // RID names its layer, so its new SSRC (an encoder restart) takes over at once.
            let silent = layer
                .last_packet_at
                .is_none_or(|t| now.saturating_duration_since(t) >= SSRC_TAKEOVER_SILENCE);
            if layer.rid.is_none() && !silent {
                out.counters.drop(DropReason::UnknownSsrc);
                return;
            }
            if layer.ssrc.replace(ssrc).is_some() {
                // A new numbering space, and the packets kept from the old one are no use
                // to anyone.
                layer.history.clear();
                for s in &track.subscribers {
                    if let Some(p) = participants.get_mut(s.participant) {
                        p.slots[s.slot].forwarder.restart_layer(li);
                    }
                }
            }
        }
        track.layers[usize::from(li)].last_packet_at = Some(now);
        if track.label.muted {
            // Muted is muted on the server too: nothing of it reaches anyone.
            out.counters.drop(DropReason::Muted);
            return;
        }

        let pt = packet.pt();
        let Some(info) = track.pt_info(pt) else {
            out.counters.drop(DropReason::CodecMismatch);
            return;
        };
        let ts = packet.ts;
        let layer = &mut track.layers[usize::from(li)];
        layer
            .meter
            .packet(now, packet.payload.len() + PACKET_OVERHEAD, ts);
        let keyframe = info
            .video
            .is_some_and(|c| manifold_rtp::is_keyframe(c, &packet.payload));
        let vp8 = info.video == Some(VideoCodec::Vp8);
        if keyframe {
            out.counters.keyframes_in += 1;
            layer.keyframes.satisfied();
            if vp8 && let Some(size) = manifold_rtp::keyframe_size(&packet.payload) {
                layer.size = Some(size);
            }
        }
        if let Some(level) = packet.ext.audio_level {
            track.level.observe(level);
        }
        for r in &track.relays {
            out.counters.relay_out += 1;
            out.outputs.push_back(Output::Relay {
                to: r.shard,
                message: RelayMessage::Media {
                    track: track.id,
                    layer: li,
                    packet: packet.clone(),
                },
            });
        }
        if track.subscribers.is_empty() {
            out.counters.drop(DropReason::NoSubscriber);
        } else if track.kind == MediaKind::Audio && overload.sheds_all(MediaKind::Audio) {
            // Overloaded: this is the oldest input waiting, and it goes (`overload.rs`).
            out.counters
                .drop_n(DropReason::ShedAudio, track.subscribers.len() as u64);
            return;
        }
        let video = track.kind == MediaKind::Video;
        // Overloaded: the oldest this many of the track's subscriptions keep video.
        let video_kept = overload.video_kept(track.subscribers.len());
        let this = Kept {
            meta: PacketMeta {
                seq: packet.seq,
                ts,
                clock_rate: info.clock_rate,
                keyframe,
                layer: li,
                vp8: vp8
                    .then(|| manifold_rtp::Vp8Descriptor::parse(&packet.payload))
                    .flatten(),
            },
            vp8: vp8
                .then(|| str0m::rtp::Vp8Descriptor::parse(&packet.payload).ok())
                .flatten(),
            red_primary: info.red_of.and_then(|_| red_primary(&packet.payload)),
            pt,
            marker: packet.marker,
            timestamp: packet.timestamp,
            ext: packet.ext,
            payload: packet.payload,
        };
        let mut wants_keyframe = false;
        let history = &track.layers[usize::from(li)].history;
        for (i, s) in track.subscribers.iter().enumerate() {
            let Some(p) = participants.get_mut(s.participant) else {
                continue;
            };
            if !p.connected || p.doomed.is_some() {
                out.counters.drop(DropReason::SubscriberNotReady);
                continue;
            }
            if video && !p.slots[s.slot].keep_video(i < video_kept) {
                out.counters.drop(DropReason::ShedVideo);
                continue;
            }
            let switched = match forward_one(p, s, &this, video, now, out) {
                Ok(switched) => switched,
                Err(reason) => {
                    wants_keyframe |= reason == DropReason::WaitingForKeyframe;
                    continue;
                }
            };
            if switched && video {
                // This subscriber starts on this keyframe. Packets after it that arrived
                // before it (reordered, or it was itself a retransmission) were dropped while
                // it waited; without them the keyframe cannot be decoded.
                let mut later: Vec<&Kept> = history
                    .iter()
                    .filter(|k| k.meta.seq > this.meta.seq)
                    .collect();
                later.sort_by_key(|k| k.meta.seq);
                for k in later {
                    // Errors are counted inside; the rest of the replay goes on.
                    let _ = forward_one(p, s, k, video, now, out);
                }
            }
        }
        let layer = &mut track.layers[usize::from(li)];
        if video {
            if layer.history.len() == HISTORY_PACKETS {
                layer.history.pop_front();
            }
            layer.history.push_back(this);
        }
        if wants_keyframe && layer.keyframes.ask(now, config.keyframe_request_interval) {
            send_keyframe_request(track, li, participants, out);
        }
    }

    /// The track and layer a publisher's SSRC belongs to, learning the mapping on first
    /// sight.
    pub(crate) fn track_for(&mut self, key: PKey, ssrc: Ssrc) -> Option<(TKey, u8)> {
        let p = self.participants.get_mut(key)?;
        if let Some(&(_, tk, layer)) = p.ssrc_tracks.iter().find(|(s, _, _)| *s == ssrc) {
            return Some((tk, layer));
        }
        let (mid, rid) = {
            let mut api = p.rtc.direct_api();
            let rx = api.stream_rx(&ssrc)?;
            (rx.mid(), rx.rid())
        };
        let tk = p
            .tracks
            .iter()
            .copied()
            .find(|&tk| self.tracks[tk].mid == mid)?;
        let layer = self.tracks[tk].layer_of(rid)?;
        // Bounded: a publisher has few m-lines and few SSRCs per m-line.
        if p.ssrc_tracks.len() < MAX_SSRCS_PER_PUBLISHER {
            p.ssrc_tracks.push((ssrc, tk, layer));
        }
        Some((tk, layer))
    }

    /// Ask the publisher of `tk` for a keyframe of `layer`, coalesced per layer.
    pub(crate) fn request_keyframe(&mut self, now: Instant, tk: TKey, layer: u8) {
        let Some(track) = self.tracks.get_mut(tk) else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        let Some(l) = track.layers.get_mut(usize::from(layer)) else {
            return;
        };
        if l.keyframes.ask(now, self.config.keyframe_request_interval) {
            send_keyframe_request(track, layer, &mut self.participants, &mut self.out);
        }
    }

    /// Ask for a keyframe of every layer some subscriber of `tk` waits for.
    pub(crate) fn request_wanted_keyframes(&mut self, now: Instant, tk: TKey) {
        let Some(track) = self.tracks.get(tk) else {
            return;
        };
        let mut wanted = 0u8;
        for s in &track.subscribers {
            if let Some(p) = self.participants.get(s.participant)
                && p.connected
                && let Some(l) = p.slots[s.slot].forwarder.wants_keyframe()
            {
                wanted |= 1 << l;
            }
        }
        for l in 0..track.layers.len() as u8 {
            let pending = self.tracks[tk].layers[usize::from(l)].keyframes.pending;
            if wanted & (1 << l) != 0 || pending {
                self.request_keyframe(now, tk, l);
            }
        }
    }

    /// Mute or unmute one of `key`'s tracks ([`Command::SetMuted`]).
    pub(crate) fn set_muted(
        &mut self,
        now: Instant,
        key: PKey,
        track: TrackId,
        muted: bool,
    ) -> Result<ReplyValue, CommandError> {
        let tk = self.own_track(key, track)?;
        if self.tracks[tk].label.muted != muted {
            self.tell_relays(tk, |track| RelayMessage::Muted { track, muted });
        }
        self.apply_mute(now, tk, muted);
        Ok(ReplyValue::Done)
    }

    /// Track `tk` (local or relayed) is muted or unmuted.
    pub(crate) fn apply_mute(&mut self, now: Instant, tk: TKey, muted: bool) {
        let t = &mut self.tracks[tk];
        if std::mem::replace(&mut t.label.muted, muted) == muted || muted {
            return;
        }
        // Unmuted: what was kept from before the mute is stale, and every receiver resumes
        // as after a source switch, numbering continuous, video on the next keyframe.
        t.clear_history();
        for s in &t.subscribers {
            if let Some(p) = self.participants.get_mut(s.participant) {
                p.slots[s.slot].forwarder.switch_source();
            }
        }
        self.request_wanted_keyframes(now, tk);
    }
}

/// Decide for one kept packet and one subscriber, and write it to the subscriber's `Rtc` if
/// it goes. `Ok(switched)` when it went (`switched`: it started a new source), otherwise the
/// reason it did not, already counted.
fn forward_one(
    p: &mut Participant,
    s: &Subscriber,
    k: &Kept,
    video: bool,
    now: Instant,
    out: &mut Outbox,
) -> Result<bool, DropReason> {
    let slot = &mut p.slots[s.slot];
    let payload = match slot.map_pt(k.pt) {
        Some((pt, false)) => Some((pt, k.payload.clone())),
        Some((pt, true)) => k.red_primary.clone().map(|p| (pt, p)),
        None => None,
    };
    let (Some((out_pt, payload)), Some(tx)) = (payload, slot.tx_ssrc) else {
        // It cannot go out, so it must not take a sequence number either: the subscriber
        // would wait for it, NACK it and never get it.
        slot.forwarder.skip(&k.meta);
        out.counters.drop(DropReason::CodecMismatch);
        return Err(DropReason::CodecMismatch);
    };
    let (seq, ts, switched, vp8) = match slot.forwarder.decide(&k.meta, now) {
        Decision::Drop(reason) => {
            out.counters.drop(reason);
            return Err(reason);
        }
        Decision::Forward {
            seq,
            ts,
            switched,
            vp8,
        } => (seq, ts, switched, vp8),
    };
    let mut write = RtpWrite::new(out_pt, seq.into(), ts, k.timestamp, payload)
        .marker(k.marker)
        .nackable(video)
        .ext_vals(k.ext.clone());
    if let (Some(fields), Some(d)) = (vp8, &k.vp8) {
        // The payload stays shared: str0m patches the descriptor while it copies it out.
        let long = k.meta.vp8.is_some_and(|m| m.long_picture_id);
        let mut patch = d.patch();
        if let Some(pid) = fields.picture_id {
            // A 7-bit field keeps a 7-bit value, whatever the previous source used.
            patch = patch.picture_id(if long { pid } else { pid & 0x7f });
        }
        if let Some(tl0) = fields.tl0picidx {
            patch = patch.tl0_pic_idx(tl0);
        }
        match patch.build() {
            Ok(p) => write = write.vp8_patch(p),
            Err(e) => tracing::trace!(error = %e, "VP8 descriptor left as is"),
        }
    }
    let sent = p.write_rtc(s.participant, out, now, |rtc| {
        let mut api = rtc.direct_api();
        let stream = api.stream_tx(&tx)?;
        stream.write_rtp(write);
        Some(())
    });
    match sent {
        Some(Some(())) => out.counters.rtp_out += 1,
        Some(None) => out.counters.drop(DropReason::SubscriberNotReady),
        None => out.reap = true,
    }
    Ok(switched)
}

/// The primary block of a RED payload, copied once per packet for every subscriber that
/// takes the plain codec; `None` when the payload is not valid RED.
fn red_primary(payload: &[u8]) -> Option<Arc<[u8]>> {
    let blocks = str0m::rtp::RedDecoder::decode(payload).ok()?;
    let primary = blocks.iter().find(|b| b.is_primary)?;
    Some(Arc::from(primary.payload))
}

fn send_keyframe_request(
    track: &mut Track,
    layer: u8,
    participants: &mut Slab<Participant>,
    out: &mut Outbox,
) {
    let Some(l) = track.layers.get_mut(usize::from(layer)) else {
        return;
    };
    let Some(ssrc) = l.ssrc else {
        // Nothing received yet: the first packets of a new publisher start with a keyframe
        // anyway; ask again at the next interval.
        l.keyframes.pending = true;
        return;
    };
    let key = match (track.origin, &track.relay_in) {
        (Origin::Local(key), _) => key,
        (Origin::Relay(_), Some(rin)) => {
            // The publisher is on another shard: the request travels back on the relay.
            out.outputs.push_back(Output::Relay {
                to: rin.from,
                message: RelayMessage::Keyframe {
                    track: track.id,
                    layer,
                },
            });
            return;
        }
        (Origin::Relay(_), None) => return,
    };
    let Some(p) = participants.get_mut(key) else {
        return;
    };
    let sent = p.with_rtc(key, out, |rtc| {
        let mut api = rtc.direct_api();
        let rx = api.stream_rx(&ssrc)?;
        rx.request_keyframe(KeyframeRequestKind::Pli);
        Some(())
    });
    match sent {
        Some(Some(())) => out.counters.keyframe_requests += 1,
        Some(None) => {}
        None => out.reap = true,
    }
}
