//! Room-protocol members in the harness: joining with the server's first offer, answering
//! every offer the shard makes as a browser would, and the room commands (publish,
//! subscribe, unsubscribe, unpublish).

use manifold_api::protocol::{MidInfo, TrackSource};
use manifold_api::{
    CommandError, CoreEvent, Grants, Identity, ParticipantId, ReplyValue, RequestId, RoomName,
    SessionKind, TrackId,
};
use manifold_core::str0m::Input as RtcInput;
use manifold_core::str0m::change::SdpOffer;
use manifold_core::str0m::format::Codec;
use manifold_core::str0m::media::{MediaKind, Mid};
use manifold_core::{Command, NewSession, Publication};

use super::{
    Client, ConfigureRtc, Harness, JoinError, Link, MediaConfig, Publisher, out_stream, sdp_value,
    server_addr, simulcast,
};

impl Harness {
    /// A room member: the shard's first offer (a data channel only) is answered at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join_room(
        &mut self,
        identity: String,
        room: String,
        auto_subscribe: bool,
        grants: Grants,
        (uplink, downlink): (Link, Link),
        media: MediaConfig,
        configure: Option<ConfigureRtc>,
    ) -> Result<usize, JoinError> {
        let (n, addr, rtc) = self.new_client_rtc(configure);
        let negotiated = self
            .factory
            .offer(&[server_addr(self.target_shard)], self.now)
            .map_err(JoinError::Negotiate)?;
        let offer = negotiated.sdp.clone();
        let first_mids = negotiated.offer_mids();
        let server_ufrag = negotiated.ufrag.clone();
        let id = ParticipantId(0x1000 + n);
        self.join_shard(
            n,
            NewSession {
                id,
                identity: Identity::parse(&identity).expect("identity"),
                room: RoomName::parse(&room).expect("room"),
                kind: SessionKind::Room,
                source: None,
                auto_subscribe,
                grants,
                negotiated: negotiated.into(),
            },
        )?;
        let idx = self.clients.len();
        let kind = SessionKind::Room;
        let mut c = Client::new(identity, id, addr, kind, rtc, (uplink, downlink), self.now);
        c.shard = self.target_shard;
        c.server_ufrag = server_ufrag;
        c.room_media = Some(media);
        self.clients.push(c);
        self.by_addr.insert(addr, idx);
        self.answer_offer(idx, 1, &offer, &first_mids);
        Ok(idx)
    }

    /// Room member `idx` answers offer `offer_id` as a browser would, and starts sending on
    /// the m-lines the offer made for its publications.
    pub(super) fn answer_offer(&mut self, idx: usize, offer_id: u64, sdp: &str, mids: &[MidInfo]) {
        let now = self.now;
        let c = &mut self.clients[idx];
        let offer = SdpOffer::from_sdp_string(sdp).expect("the server's offer parses");
        let answer = c
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .expect("the client accepts the server's offer")
            .to_sdp_string();
        c.client_ufrag = sdp_value(&answer, "a=ice-ufrag:").unwrap_or_default();
        c.answer = answer.clone();
        for info in mids.iter().filter(|m| m.cid.is_some()) {
            let kind = match info.kind.as_str() {
                "audio" => MediaKind::Audio,
                "video" => MediaKind::Video,
                _ => continue,
            };
            let mid = Mid::from(info.mid.as_str());
            if !c.mids.iter().any(|(m, _)| *m == mid) {
                c.mids.push((mid, kind));
            }
        }
        if let Some(media) = c.room_media
            && !c.mids.is_empty()
        {
            if c.publisher.is_none() {
                let tag = self.publishers;
                self.publishers += 1;
                c.publisher = Some(Publisher {
                    tag,
                    config: media,
                    audio: None,
                    video: None,
                    next_audio: None,
                    next_video: None,
                    frame: 0,
                    keyframe_due: media.first_frame_keyframe,
                    last_keyframe: None,
                    sent: Vec::new(),
                    paused: false,
                    layers: Vec::new(),
                });
            }
            let connected = c.connected_at.is_some();
            let p = c.publisher.as_mut().expect("just made");
            if media.audio && p.audio.is_none() {
                p.audio = out_stream(&mut c.rtc, &c.mids, MediaKind::Audio, Codec::Opus);
                if connected && p.audio.is_some() {
                    p.next_audio = Some(now);
                }
            }
            if media.video && p.video.is_none() && p.layers.is_empty() {
                p.layers = simulcast::layers(&mut c.rtc, &c.mids, media.late_layers, media.h264);
                if p.layers.is_empty() {
                    p.video = out_stream(&mut c.rtc, &c.mids, MediaKind::Video, Codec::Vp8);
                }
                if connected && (p.video.is_some() || !p.layers.is_empty()) {
                    p.next_video = Some(now);
                    p.keyframe_due = true;
                }
            }
        }
        let participant = c.id;
        // As for an offerer: the ICE agent needs a time after the negotiation.
        if let Err(e) = c.rtc.handle_input(RtcInput::Timeout(now)) {
            c.error = Some(e.to_string());
        }
        self.drain_client(idx);
        let request = self.new_request();
        self.command(Command::Answer {
            request,
            participant,
            offer_id,
            sdp: answer,
        });
        match self.reply(request) {
            Some(Ok(_)) => {}
            other => panic!("the shard refused an answer to its own offer: {other:?}"),
        }
    }

    fn new_request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    /// Run a room command for member `idx` and return the shard's reply.
    pub fn room_command(
        &mut self,
        idx: usize,
        make: impl FnOnce(RequestId, ParticipantId) -> Command,
    ) -> Result<ReplyValue, CommandError> {
        let request = self.new_request();
        let participant = self.clients[idx].id;
        self.command(make(request, participant));
        self.reply(request).expect("a reply to a room command")
    }

    /// Room member `idx` publishes a track of `kind` under the client id `cid`.
    pub fn publish(
        &mut self,
        idx: usize,
        kind: MediaKind,
        cid: &str,
    ) -> Result<ReplyValue, CommandError> {
        self.publish_layers(idx, kind, cid, 1)
    }

    /// Room member `idx` publishes a track of `kind`, video in `layers` simulcast layers.
    pub fn publish_layers(
        &mut self,
        idx: usize,
        kind: MediaKind,
        cid: &str,
        layers: u8,
    ) -> Result<ReplyValue, CommandError> {
        let (kind, source) = match kind {
            MediaKind::Audio => (manifold_api::MediaKind::Audio, TrackSource::Microphone),
            MediaKind::Video => (manifold_api::MediaKind::Video, TrackSource::Camera),
        };
        let publication = Publication {
            cid: cid.into(),
            kind,
            source,
            name: cid.into(),
            muted: false,
            layers,
        };
        self.room_command(idx, |request, participant| Command::Publish {
            request,
            participant,
            publication,
        })
    }

    /// Subscriber `idx` wants at most `quality` of `track`.
    pub fn set_video_quality(
        &mut self,
        idx: usize,
        track: TrackId,
        quality: manifold_api::protocol::QualityRequest,
        size: Option<(u32, u32)>,
    ) -> Result<ReplyValue, CommandError> {
        self.room_command(idx, |request, participant| Command::SetVideoQuality {
            request,
            participant,
            track,
            quality,
            size,
        })
    }

    /// The id the shard gave the track member `idx` published as `cid`.
    pub fn track_of(&self, idx: usize, cid: &str) -> Option<TrackId> {
        let id = self.clients[idx].id;
        self.events.iter().rev().find_map(|(_, e)| match e {
            CoreEvent::TrackPublished {
                participant,
                track,
                cid: Some(c),
                ..
            } if *participant == id && c == cid => Some(*track),
            _ => None,
        })
    }

    pub fn subscribe(&mut self, idx: usize, track: TrackId) -> Result<ReplyValue, CommandError> {
        self.room_command(idx, |request, participant| Command::Subscribe {
            request,
            participant,
            track,
        })
    }

    pub fn unsubscribe(&mut self, idx: usize, track: TrackId) -> Result<ReplyValue, CommandError> {
        self.room_command(idx, |request, participant| Command::Unsubscribe {
            request,
            participant,
            track,
        })
    }

    pub fn unpublish(&mut self, idx: usize, track: TrackId) -> Result<ReplyValue, CommandError> {
        self.room_command(idx, |request, participant| Command::Unpublish {
            request,
            participant,
            track,
        })
    }
}
