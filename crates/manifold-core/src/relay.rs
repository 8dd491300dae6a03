//! Relay tracks between shards: a room may span the workers of a node. A track published on
//! shard A travels once per (track, shard) to every other shard holding members of its room
//! ([`Command::RoomShards`](manifold_api::command::Command::RoomShards) says which), where
//! it appears as a track of a remote publisher ([`Remote`]) and is forwarded to that
//! shard's subscribers like a local one. What the subscribers' side needs travels back:
//! keyframe requests, the layers it needs (dynacast) and requests for relayed packets that
//! were lost on the way.
//!
//! The messages are plain values ([`RelayMessage`]): a shard emits them as
//! [`Output::Relay`](crate::Output::Relay) and takes them as
//! [`Input::Relay`](crate::Input::Relay); the I/O layer carries them (an in-process queue
//! between workers). Payloads stay shared (`Arc`), so a relay copies no media.

use std::sync::Arc;
use std::time::Instant;

use manifold_api::{Identity, MediaKind, ParticipantId, RoomName, TrackId};
use manifold_rtp::DropReason;
use str0m::format::PayloadParams;
use str0m::media::{Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, Ssrc};

use crate::keys::{PKey, RKey, TKey};
use crate::outbox::Output;
use crate::shard::Shard;
use crate::track::{Track, TrackLabel};

/// The shard index that stands for the node's bridge to other nodes: a room's set of
/// shards includes it when other nodes hold members of the room, and what a shard relays
/// to it the I/O layer encodes (`relay_wire.rs`) and sends over the cluster's bus. Real
/// shards are numbered below it.
pub const BRIDGE: u16 = 63;

/// Most packets one relay loss request names: a longer hole is past saving (the
/// subscribers' keyframe requests recover it).
pub const MAX_RELAY_NACK: usize = 64;

/// Who publishes a track, as the shard holding it sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A participant of this shard.
    Local(PKey),
    /// A participant of another shard, through a relay.
    Relay(RKey),
}

impl Origin {
    /// The local participant, if it is one.
    pub fn local(self) -> Option<PKey> {
        match self {
            Origin::Local(k) => Some(k),
            Origin::Relay(_) => None,
        }
    }
}

/// A publisher on another shard whose tracks this shard receives through relays.
#[derive(Debug)]
pub(crate) struct Remote {
    pub id: ParticipantId,
    pub identity: Identity,
    pub room: RoomName,
    /// Its relayed tracks here, in the order they were opened.
    pub tracks: Vec<TKey>,
}

/// One shard a local track is relayed to, and the layers that shard needs (its dynacast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RelayTarget {
    pub shard: u16,
    pub needed: u8,
}

/// A relayed track's receiving side: where it comes from and what was seen of each layer,
/// to notice packets lost on the way.
#[derive(Debug)]
pub(crate) struct RelayIn {
    /// The origin shard.
    pub from: u16,
    /// Highest sequence number seen, per layer.
    pub highest: [Option<u64>; manifold_api::protocol::MAX_LAYERS as usize],
    /// The layers last reported as needed to the origin.
    pub reported_needed: Option<u8>,
}

/// A packet of a track as a shard took it in: from its publisher's `Rtc`, or relayed.
#[derive(Clone, Debug)]
pub struct RelayedPacket {
    /// The publisher's SSRC for the layer (a change means a new numbering space).
    pub ssrc: u32,
    /// Extended sequence number in that SSRC's space.
    pub seq: u64,
    /// The publisher's payload type.
    pub pt: u8,
    /// RTP timestamp (extended).
    pub ts: u64,
    /// Marker bit.
    pub marker: bool,
    /// When the origin shard received it.
    pub timestamp: Instant,
    /// Audio level, voice activity, video orientation.
    pub ext: ExtensionValues,
    /// The payload, shared.
    pub payload: Arc<[u8]>,
}

impl RelayedPacket {
    pub(crate) fn ssrc(&self) -> Ssrc {
        Ssrc::from(self.ssrc)
    }

    pub(crate) fn pt(&self) -> Pt {
        Pt::from(self.pt)
    }
}

/// What a relayed track is, for the shard that receives it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RelayOpen {
    pub(crate) room: RoomName,
    pub(crate) publisher: ParticipantId,
    pub(crate) identity: Identity,
    pub(crate) track: TrackId,
    pub(crate) mid: Mid,
    pub(crate) kind: MediaKind,
    pub(crate) label: TrackLabel,
    pub(crate) params: Vec<PayloadParams>,
    pub(crate) rids: Vec<Rid>,
}

impl RelayOpen {
    /// The track's id.
    pub fn track(&self) -> TrackId {
        self.track
    }

    /// The room it is published in.
    pub fn room(&self) -> &RoomName {
        &self.room
    }
}

/// A message between shards about a relayed track.
// `Media` is nearly every message and the largest: boxing it would allocate per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
// Between nodes, everything but media travels as this JSON (`relay_wire.rs`).
#[serde(tag = "t", rename_all = "snake_case")]
pub enum RelayMessage {
    /// Origin → receiver: a track of a room you hold members of.
    Open(Box<RelayOpen>),
    /// Origin → receiver: the track ended.
    Close {
        /// Which.
        track: TrackId,
    },
    /// Origin → receiver: muted or unmuted.
    Muted {
        /// Which.
        track: TrackId,
        /// Now muted.
        muted: bool,
    },
    /// Origin → receiver: one packet of layer `layer` (binary on the wire, `relay_wire.rs`).
    #[serde(skip)]
    Media {
        /// Which track.
        track: TrackId,
        /// Which layer (the origin's index).
        layer: u8,
        /// The packet.
        packet: RelayedPacket,
    },
    /// Receiver → origin: a subscriber needs a keyframe of `layer`.
    Keyframe {
        /// Which track.
        track: TrackId,
        /// Which layer.
        layer: u8,
    },
    /// Receiver → origin: the layers its subscribers need (bit per layer).
    Layers {
        /// Which track.
        track: TrackId,
        /// Bit per layer.
        needed: u8,
    },
    /// Receiver → origin: relayed packets that never arrived.
    Lost {
        /// Which track.
        track: TrackId,
        /// Which layer.
        layer: u8,
        /// Their sequence numbers.
        seqs: Vec<u64>,
    },
}

/// Shard `i`'s bit in a room's set of shards (none for an index past 63: such a shard
/// takes part in no relay).
pub(crate) fn bit(i: u16) -> u64 {
    1u64.checked_shl(u32::from(i)).unwrap_or(0)
}

impl Shard {
    /// A relay message from shard `from`.
    pub(crate) fn handle_relay(&mut self, now: Instant, from: u16, message: RelayMessage) {
        match message {
            RelayMessage::Open(open) => self.open_relay(now, from, *open),
            RelayMessage::Close { track } => {
                if let Some(tk) = self.relayed_from(from, track) {
                    self.close_relayed(now, tk);
                }
            }
            RelayMessage::Muted { track, muted } => {
                if let Some(tk) = self.relayed_from(from, track) {
                    self.apply_mute(now, tk, muted);
                }
            }
            RelayMessage::Media {
                track,
                layer,
                packet,
            } => {
                let Some(tk) = self.relayed_from(from, track) else {
                    self.out.counters.drop(DropReason::UnknownSsrc);
                    return;
                };
                if usize::from(layer) >= self.tracks[tk].layers.len() {
                    self.out.counters.drop(DropReason::UnknownSsrc);
                    return;
                }
                self.out.counters.relay_in += 1;
                self.check_relay_gap(tk, layer, packet.seq);
                self.forward_track(now, tk, layer, packet);
            }
            RelayMessage::Keyframe { track, layer } => {
                if let Some(tk) = self.relayed_to(from, track) {
                    self.request_keyframe(now, tk, layer);
                }
            }
            RelayMessage::Layers { track, needed } => {
                if let Some(tk) = self.relayed_to(from, track)
                    && let Some(t) = self.tracks[tk].relays.iter_mut().find(|r| r.shard == from)
                {
                    // Behind the bridge, several nodes report: what any needed stays needed.
                    t.needed = if from == BRIDGE {
                        t.needed | needed
                    } else {
                        needed
                    };
                }
            }
            RelayMessage::Lost { track, layer, seqs } => {
                if let Some(tk) = self.relayed_to(from, track) {
                    self.resend_relayed(from, tk, layer, &seqs);
                }
            }
        }
    }

    /// The relayed track `track` that shard `from` is the origin of.
    fn relayed_from(&self, from: u16, track: TrackId) -> Option<TKey> {
        let &tk = self.track_index.get(&track)?;
        let rin = self.tracks[tk].relay_in.as_ref()?;
        (rin.from == from).then_some(tk)
    }

    /// The local track `track` that this shard relays to `to`.
    fn relayed_to(&self, to: u16, track: TrackId) -> Option<TKey> {
        let &tk = self.track_index.get(&track)?;
        let t = &self.tracks[tk];
        (t.origin.local().is_some() && t.relays.iter().any(|r| r.shard == to)).then_some(tk)
    }

    /// The workers holding members of `room` changed ([`Command::RoomShards`]).
    pub(crate) fn room_shards(&mut self, now: Instant, room: RoomName, shards: u64) {
        if shards & bit(self.index) == 0 {
            // Nobody here any more: what was relayed for the room goes, and with it a room
            // that only held relayed tracks.
            let Some(r) = self.rooms.get_mut(&room) else {
                return;
            };
            r.shards = shards;
            self.close_room(now, &room);
            return;
        }
        let r = self.rooms.entry(room.clone()).or_default();
        r.shards = shards;
        if r.is_empty() && shards == bit(self.index) {
            // Only this shard is left in it, and nobody is here: nothing will come.
            self.close_room(now, &room);
            return;
        }
        let local: Vec<TKey> = r
            .tracks()
            .filter(|&tk| self.tracks[tk].origin.local().is_some())
            .collect();
        for tk in local {
            self.relay_track(tk, shards);
        }
    }

    /// Relay local track `tk` to every shard of `shards` but this one: open it where it is
    /// new, stop sending where a shard left.
    pub(crate) fn relay_track(&mut self, tk: TKey, shards: u64) {
        let index = self.index;
        let t = &mut self.tracks[tk];
        t.relays
            .retain(|r| r.shard != index && shards & bit(r.shard) != 0);
        let mut opened = Vec::new();
        for shard in 0..64u16 {
            if shard == index || shards & bit(shard) == 0 {
                continue;
            }
            if t.relays.iter().any(|r| r.shard == shard) {
                // Nodes come and go behind the bridge: a newcomer needs the track's
                // description, so every word about the room's shards sends it again (others
                // ignore an open they have).
                if shard == BRIDGE {
                    opened.push(shard);
                }
                continue;
            }
            // Until it says otherwise, the other shard needs every layer.
            t.relays.push(RelayTarget {
                shard,
                needed: (1u8 << t.layers.len()) - 1,
            });
            opened.push(shard);
        }
        if opened.is_empty() {
            return;
        }
        let Some(open) = self.relay_open(tk) else {
            return;
        };
        for shard in opened {
            self.out.outputs.push_back(Output::Relay {
                to: shard,
                message: RelayMessage::Open(Box::new(open.clone())),
            });
        }
        self.out.counters.relays_opened += 1;
    }

    /// What another shard needs to know of local track `tk`.
    fn relay_open(&self, tk: TKey) -> Option<RelayOpen> {
        let t = &self.tracks[tk];
        let p = self.participants.get(t.origin.local()?)?;
        Some(RelayOpen {
            room: p.room.clone(),
            publisher: p.id,
            identity: p.identity.clone(),
            track: t.id,
            mid: t.mid,
            kind: t.kind,
            label: t.label.clone(),
            params: t.params.clone(),
            rids: t.layers.iter().filter_map(|l| l.rid).collect(),
        })
    }

    /// Tell every shard `tk` is relayed to.
    pub(crate) fn tell_relays(&mut self, tk: TKey, message: impl Fn(TrackId) -> RelayMessage) {
        let t = &self.tracks[tk];
        for r in &t.relays {
            self.out.outputs.push_back(Output::Relay {
                to: r.shard,
                message: message(t.id),
            });
        }
    }

    /// A track of a publisher on shard `from` arrives: it joins the room here as that
    /// publisher's, for local members to subscribe to (auto-subscribers get it at once).
    fn open_relay(&mut self, now: Instant, from: u16, open: RelayOpen) {
        if let Some(&tk) = self.track_index.get(&open.track) {
            // Opened again (the room's shards changed back and forth): keep it.
            if self.relayed_from(from, open.track) == Some(tk) {
                return;
            }
            self.out.counters.drop(DropReason::Rejected);
            return;
        }
        let RelayOpen {
            room,
            publisher,
            identity,
            track,
            mid,
            kind,
            label,
            params,
            rids,
        } = open;
        let rk = match self.remote_by_id.get(&publisher) {
            Some(&rk) => rk,
            None => {
                let rk = self.remotes.insert(Remote {
                    id: publisher,
                    identity,
                    room: room.clone(),
                    tracks: Vec::new(),
                });
                self.remote_by_id.insert(publisher, rk);
                rk
            }
        };
        let tk = self.tracks.insert(Track::new(
            track,
            Origin::Relay(rk),
            publisher,
            mid,
            kind,
            label,
            params,
            &rids,
        ));
        self.tracks[tk].relay_in = Some(RelayIn {
            from,
            highest: Default::default(),
            reported_needed: None,
        });
        self.track_index.insert(track, tk);
        self.remotes[rk].tracks.push(tk);
        let r = self.rooms.entry(room.clone()).or_default();
        r.add_track(track, tk);
        r.add_publisher(Origin::Relay(rk), None);
        tracing::debug!(%track, %publisher, from, "relayed track opened");
        self.offer_to_room(tk);
        self.retarget(now, &room);
    }

    /// A relayed track ends here.
    pub(crate) fn close_relayed(&mut self, now: Instant, tk: TKey) {
        let Origin::Relay(rk) = self.tracks[tk].origin else {
            return;
        };
        self.drop_track_now(tk);
        let remote = &mut self.remotes[rk];
        remote.tracks.retain(|&t| t != tk);
        let room = remote.room.clone();
        if remote.tracks.is_empty() {
            let remote = self.remotes.remove(rk);
            self.remote_by_id.remove(&remote.id);
            if let Some(r) = self.rooms.get_mut(&room) {
                r.remove_publisher(Origin::Relay(rk));
            }
        }
        self.retarget(now, &room);
    }

    /// Note relayed packet `seq` of `layer` and ask the origin for what is missing before
    /// it (the in-process queue loses packets only when it overflows).
    fn check_relay_gap(&mut self, tk: TKey, layer: u8, seq: u64) {
        let t = &mut self.tracks[tk];
        let Some(rin) = t.relay_in.as_mut() else {
            return;
        };
        let Some(slot) = rin.highest.get_mut(usize::from(layer)) else {
            return;
        };
        let missing = match *slot {
            Some(h) if seq > h + 1 => (h + 1..seq).take(MAX_RELAY_NACK).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        if slot.is_none_or(|h| seq > h) {
            *slot = Some(seq);
        }
        if missing.is_empty() || t.kind != MediaKind::Video {
            return;
        }
        let to = rin.from;
        self.out.counters.relay_lost += missing.len() as u64;
        self.out.outputs.push_back(Output::Relay {
            to,
            message: RelayMessage::Lost {
                track: t.id,
                layer,
                seqs: missing,
            },
        });
    }

    /// Send shard `to` again what it lost of `tk`'s `layer`, from the layer's history.
    fn resend_relayed(&mut self, to: u16, tk: TKey, layer: u8, seqs: &[u64]) {
        let t = &self.tracks[tk];
        let Some(l) = t.layers.get(usize::from(layer)) else {
            return;
        };
        let Some(ssrc) = l.ssrc else {
            return;
        };
        for k in l.history.iter().filter(|k| seqs.contains(&k.meta.seq)) {
            self.out.counters.relay_resent += 1;
            self.out.outputs.push_back(Output::Relay {
                to,
                message: RelayMessage::Media {
                    track: t.id,
                    layer,
                    packet: RelayedPacket {
                        ssrc: *ssrc,
                        seq: k.meta.seq,
                        pt: *k.pt,
                        ts: k.meta.ts,
                        marker: k.marker,
                        timestamp: k.timestamp,
                        ext: k.ext.clone(),
                        payload: k.payload.clone(),
                    },
                },
            });
        }
    }

    /// Tell the origins of relayed simulcast tracks which layers this shard's subscribers
    /// need, when that changed (part of dynacast).
    pub(crate) fn report_relay_needs(&mut self) {
        let mut reports = Vec::new();
        for (_, t) in self.tracks.iter_mut() {
            if !t.is_simulcast() {
                continue;
            }
            let needed = crate::quality::needed_layers(t, &self.participants);
            let Some(rin) = t.relay_in.as_mut() else {
                continue;
            };
            if rin.reported_needed == Some(needed) {
                continue;
            }
            rin.reported_needed = Some(needed);
            reports.push((rin.from, t.id, needed));
        }
        for (to, track, needed) in reports {
            self.out.outputs.push_back(Output::Relay {
                to,
                message: RelayMessage::Layers { track, needed },
            });
        }
    }
}
