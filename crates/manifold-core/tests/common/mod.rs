//! Virtual-time test harness: one `Shard`, several str0m clients (WHIP publishers, WHEP
//! players and room-protocol members, RTP mode) and a seeded network between them with per-direction loss, delay and
//! jitter. Time is a value the harness owns: one `Instant::now()` is taken as the epoch and
//! then only ever advanced by durations, so a 10-second call runs in a fraction of a second.
//! Runs repeat: the network's choices are seeded and keyed to packet identity (see
//! `Harness::fate`), and str0m's own ids come from a seeded generator.
//!
//! Publishers generate synthetic media: Opus every 20 ms and VP8 at 30 fps, several packets
//! per frame, each payload carrying a small record (publisher tag, per-stream counter, frame
//! number) so receivers can tell which packet of which publisher they got.
//!
//! Room members (`ClientSpec::room`) join with the server's first offer and answer every
//! offer the shard makes as a browser would, at once; `Harness::publish`, `subscribe`,
//! `unsubscribe` and `unpublish` send the room commands.
#![allow(dead_code)]

pub mod capture;
mod room_session;
pub mod sdp_edit;
pub mod simulcast;

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use manifold_api::protocol::MidInfo;
use manifold_api::{
    CommandError, CoreEvent, Grants, Identity, LeaveReason, ParticipantId, ReplyValue, RequestId,
    RoomName, SessionKind, ShardStats, Source,
};
use manifold_core::negotiate::DEFAULT_MAX_SDP_BYTES;
use manifold_core::str0m::change::{SdpAnswer, SdpPendingOffer};
use manifold_core::str0m::format::Codec;
use manifold_core::str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use manifold_core::str0m::net::{Protocol, Receive};
use manifold_core::str0m::rtp::{
    ExtensionValues, RawPacket, RedEncoder, RedundantBlock, RtpWrite, Ssrc,
};
use manifold_core::str0m::{Candidate, Event, Input as RtcInput, Output as RtcOutput};
use manifold_core::str0m::{Rtc, RtcConfig};
use manifold_core::{
    BRIDGE, Command, Input, NegotiateError, NewSession, Output, RelayMessage, RtcFactory, Shard,
    ShardConfig, relay_wire,
};

/// Shard 0's announced address: its clients send to it, its transmits come from it. Shard
/// `i` of a harness with several is at port 5000 + `i` ([`server_addr`]).
pub const SERVER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    5000,
);

/// Shard `i`'s announced address.
pub fn server_addr(i: usize) -> SocketAddr {
    SocketAddr::new(SERVER.ip(), SERVER.port() + i as u16)
}

/// Marks the start of the record every synthetic payload carries at offset 2.
const MAGIC: u8 = 0xab;
/// Offset of the record in every payload (after the VP8 descriptor and frame tag bytes).
const RECORD_AT: usize = 2;
/// Video clock: 90 kHz at 30 fps.
const VIDEO_TICKS_PER_FRAME: u32 = 3000;
const FRAME_INTERVAL: Duration = Duration::from_nanos(33_333_333);
/// Opus: 20 ms at 48 kHz.
const AUDIO_TICKS_PER_PACKET: u32 = 960;
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

/// A small deterministic PRNG (xorshift64*), so every loss pattern can be replayed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let b = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }
}

/// A well-mixed hash of a few numbers (splitmix64 steps).
fn mix(parts: &[u64]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for &p in parts {
        h ^= p;
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
    }
    h
}

/// The SSRC and sequence number of a datagram that is RTP (RFC 7983 / RFC 5761 ranges).
fn rtp_identity(d: &[u8]) -> Option<(u32, u16)> {
    if d.len() < 12 || !(128..=191).contains(&d[0]) || (192..=223).contains(&d[1]) {
        return None;
    }
    Some((
        u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        u16::from_be_bytes([d[2], d[3]]),
    ))
}

/// One direction of a client's network path.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Probability in `[0, 1]` that a datagram is lost.
    pub loss: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter)`; larger than the packet spacing, it reorders.
    pub jitter: Duration,
    /// A bottleneck of this many bits per second, with a queue that holds at most
    /// `queue` worth of datagrams (more are dropped at its tail), as a router's would.
    pub rate_bps: Option<u64>,
    pub queue: Duration,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            loss: 0.0,
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
            rate_bps: None,
            queue: Duration::from_millis(100),
        }
    }
}

impl Link {
    pub fn lossy(loss: f64, delay: Duration, jitter: Duration) -> Self {
        Link {
            loss,
            delay,
            jitter,
            ..Link::default()
        }
    }

    /// A link of `bps` bits per second (20 ms one-way, 100 ms of queue).
    pub fn capped(bps: u64) -> Self {
        Link {
            delay: Duration::from_millis(20),
            rate_bps: Some(bps),
            ..Link::default()
        }
    }
}

/// What a publisher sends.
#[derive(Clone, Copy, Debug)]
pub struct MediaConfig {
    pub audio: bool,
    pub video: bool,
    /// A keyframe at least this often; `None`: only the first frame and on request.
    pub keyframe_interval: Option<Duration>,
    /// The first frame after connecting is a keyframe (what real encoders do).
    pub first_frame_keyframe: bool,
    pub packets_per_frame: usize,
    pub packets_per_keyframe: usize,
    pub video_payload: usize,
    pub audio_payload: usize,
    /// The RFC 6464 audio level its audio packets carry (`-dBov`, 0 loudest), if any.
    pub audio_level: Option<i8>,
    /// Send audio as RED (RFC 2198, one redundant block) when RED was negotiated.
    pub red: bool,
    /// Simulcast layers in H.264 rather than VP8.
    pub h264: bool,
    /// Simulcast: only the lowest layer starts sending (`Harness::pause_layer` starts the
    /// others).
    pub late_layers: bool,
    /// WHIP publishers: offer video with this many simulcast layers (`q`, `h`, `f`; 0 or
    /// 1: none). Room members ask for layers when they publish (`publish_layers`).
    pub simulcast: u8,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            audio: true,
            video: true,
            keyframe_interval: None,
            first_frame_keyframe: true,
            packets_per_frame: 3,
            packets_per_keyframe: 6,
            video_payload: 1000,
            audio_payload: 80,
            audio_level: None,
            red: false,
            late_layers: false,
            h264: false,
            simulcast: 0,
        }
    }
}

type ConfigureRtc = Box<dyn FnOnce(RtcConfig) -> RtcConfig>;
type EditOffer = Box<dyn FnOnce(String) -> String>;

/// How to build and join one client.
pub struct ClientSpec {
    pub identity: String,
    pub room: String,
    pub kind: SessionKind,
    pub source: Option<Source>,
    /// Offer an audio m-line.
    pub audio: bool,
    /// Offer a video m-line.
    pub video: bool,
    /// Extra m-lines of each kind (for the track limit).
    pub extra_video_lines: usize,
    pub uplink: Link,
    pub downlink: Link,
    pub media: MediaConfig,
    pub configure: Option<ConfigureRtc>,
    pub edit_offer: Option<EditOffer>,
    /// What its token allows.
    pub grants: Grants,
    /// Room members: subscribe to every track of the room.
    pub auto_subscribe: bool,
}

impl ClientSpec {
    /// A WHIP publisher sending audio and video.
    pub fn publisher(identity: &str, room: &str) -> Self {
        ClientSpec {
            identity: identity.into(),
            room: room.into(),
            kind: SessionKind::Whip,
            source: None,
            audio: true,
            video: true,
            extra_video_lines: 0,
            uplink: Link::default(),
            downlink: Link::default(),
            media: MediaConfig::default(),
            configure: None,
            edit_offer: None,
            grants: Grants::ALL,
            auto_subscribe: false,
        }
    }

    /// A room-protocol member: no m-line until it publishes (`Harness::publish`, which sends
    /// what `media` says for the kind published), subscribed to every track of the room.
    pub fn room(identity: &str, room: &str) -> Self {
        ClientSpec {
            kind: SessionKind::Room,
            audio: false,
            video: false,
            auto_subscribe: true,
            ..Self::publisher(identity, room)
        }
    }

    /// Room members: whether to be subscribed to every track automatically.
    pub fn auto_subscribe(mut self, on: bool) -> Self {
        self.auto_subscribe = on;
        self
    }

    /// A WHEP player receiving audio and video from `source`.
    pub fn subscriber(identity: &str, room: &str, source: Source) -> Self {
        ClientSpec {
            kind: SessionKind::Whep,
            source: Some(source),
            ..Self::publisher(identity, room)
        }
    }

    pub fn uplink(mut self, link: Link) -> Self {
        self.uplink = link;
        self
    }

    pub fn downlink(mut self, link: Link) -> Self {
        self.downlink = link;
        self
    }

    pub fn keyframe_interval(mut self, every: Option<Duration>) -> Self {
        self.media.keyframe_interval = every;
        self
    }

    pub fn media(mut self, media: MediaConfig) -> Self {
        self.media = media;
        self
    }

    /// Adjust the client's `RtcConfig` (RTP mode is already set).
    pub fn configure(mut self, f: impl FnOnce(RtcConfig) -> RtcConfig + 'static) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// Rewrite the SDP offer before the server sees it.
    pub fn edit_offer(mut self, f: impl FnOnce(String) -> String + 'static) -> Self {
        self.edit_offer = Some(Box::new(f));
        self
    }
}

/// Why a join did not produce a connected-to-be client.
#[derive(Debug)]
pub enum JoinError {
    Negotiate(NegotiateError),
    Command(CommandError),
}

/// One RTP packet a client received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub kind: MediaKind,
    pub ssrc: Ssrc,
    /// RTP header sequence number.
    pub seq: u16,
    /// str0m's extended sequence number.
    pub seq_no: u64,
    /// RTP header timestamp.
    pub ts: u32,
    pub pt: Pt,
    pub marker: bool,
    pub payload: Arc<[u8]>,
}

impl Received {
    /// The synthetic record in the payload, if it has one.
    pub fn record(&self) -> Option<Record> {
        Record::parse(&self.payload)
    }

    /// The first packet of a VP8 keyframe.
    pub fn is_keyframe_start(&self) -> bool {
        if self.payload.first().is_some_and(|b| b & 0x80 != 0) {
            return self.kind == MediaKind::Video
                && simulcast::is_sim_keyframe_start(&self.payload);
        }
        self.kind == MediaKind::Video
            && self.payload.len() >= 2
            && self.payload[0] & 0x10 != 0
            && self.payload[1] & 0x01 == 0
    }
}

/// What each synthetic payload says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// The publisher's tag (its join order).
    pub tag: u8,
    /// Per publisher and stream: 0, 1, 2, ...
    pub counter: u64,
    /// Video frame number (audio: packet number).
    pub frame: u64,
    /// Index of the packet in its frame.
    pub index: u16,
}

impl Record {
    fn write(&self, out: &mut [u8]) {
        let at = simulcast::record_at(out);
        out[at] = MAGIC;
        out[at + 1] = self.tag;
        out[at + 2..at + 10].copy_from_slice(&self.counter.to_be_bytes());
        out[at + 10..at + 18].copy_from_slice(&self.frame.to_be_bytes());
        out[at + 18..at + 20].copy_from_slice(&self.index.to_be_bytes());
    }

    pub fn parse(p: &[u8]) -> Option<Record> {
        let at = simulcast::record_at(p);
        let r = p.get(at..at + 20)?;
        if r[0] != MAGIC {
            return None;
        }
        Some(Record {
            tag: r[1],
            counter: u64::from_be_bytes(r[2..10].try_into().ok()?),
            frame: u64::from_be_bytes(r[10..18].try_into().ok()?),
            index: u16::from_be_bytes(r[18..20].try_into().ok()?),
        })
    }
}

/// One RTP packet a publisher wrote.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: Instant,
    pub kind: MediaKind,
    pub seq_no: u64,
    pub ts: u32,
    pub counter: u64,
    pub keyframe_start: bool,
}

struct OutStream {
    mid: Mid,
    ssrc: Ssrc,
    pt: Pt,
    /// The RED payload type wrapping `pt`, if negotiated.
    red: Option<Pt>,
    /// The last payload sent (RED's redundant block).
    last_payload: Vec<u8>,
    seq: u64,
    ts: u32,
    counter: u64,
}

/// The synthetic encoder of a publisher.
pub struct Publisher {
    pub tag: u8,
    pub config: MediaConfig,
    audio: Option<OutStream>,
    video: Option<OutStream>,
    next_audio: Option<Instant>,
    next_video: Option<Instant>,
    frame: u64,
    keyframe_due: bool,
    last_keyframe: Option<Instant>,
    /// Everything written, in order.
    pub sent: Vec<Sent>,
    /// Media generation is paused (the encoder stopped).
    pub paused: bool,
    /// Simulcast: one stream per layer instead of `video`.
    pub layers: Vec<simulcast::SimLayer>,
}

impl Publisher {
    pub fn video_ssrc(&self) -> Option<Ssrc> {
        self.video.as_ref().map(|s| s.ssrc)
    }

    pub fn audio_pt(&self) -> Pt {
        self.audio.as_ref().map(|s| s.pt).unwrap_or(0.into())
    }

    pub fn audio_ssrc(&self) -> Option<Ssrc> {
        self.audio.as_ref().map(|s| s.ssrc)
    }

    pub fn sent_of(&self, kind: MediaKind) -> impl Iterator<Item = &Sent> {
        self.sent.iter().filter(move |s| s.kind == kind)
    }
}

/// One str0m client.
pub struct Client {
    pub identity: String,
    pub id: ParticipantId,
    pub addr: SocketAddr,
    pub kind: SessionKind,
    /// The shard its session is on.
    pub shard: usize,
    pub rtc: Rtc,
    pub uplink: Link,
    pub downlink: Link,
    /// The harness drives this client's `Rtc` and delivers its datagrams.
    pub running: bool,
    timeout: Instant,
    pub joined_at: Instant,
    pub connected_at: Option<Instant>,
    pub closed_at: Option<Instant>,
    pub error: Option<String>,
    pub received: Vec<Received>,
    /// Keyframe requests this client received (publishers).
    pub keyframe_requests: Vec<(Instant, Mid, KeyframeRequestKind)>,
    pub publisher: Option<Publisher>,
    /// Raw packet events, when the client's config enables them (debugging).
    pub raw: Vec<(Instant, Box<RawPacket>)>,
    /// The server's SDP answer.
    pub answer: String,
    /// The server's ICE ufrag for this session.
    pub server_ufrag: String,
    /// The client's own ICE ufrag.
    pub client_ufrag: String,
    /// The m-lines this client offered, in order.
    pub mids: Vec<(Mid, MediaKind)>,
    kinds: HashMap<Ssrc, MediaKind>,
    /// Room members: what they send once an m-line of that kind is theirs.
    room_media: Option<MediaConfig>,
}

impl Client {
    fn new(
        identity: String,
        id: ParticipantId,
        addr: SocketAddr,
        kind: SessionKind,
        rtc: Rtc,
        (uplink, downlink): (Link, Link),
        now: Instant,
    ) -> Self {
        Client {
            identity,
            id,
            addr,
            kind,
            shard: 0,
            rtc,
            uplink,
            downlink,
            running: true,
            timeout: now,
            joined_at: now,
            connected_at: None,
            closed_at: None,
            error: None,
            received: Vec::new(),
            keyframe_requests: Vec::new(),
            publisher: None,
            raw: Vec::new(),
            answer: String::new(),
            server_ufrag: String::new(),
            client_ufrag: String::new(),
            mids: Vec::new(),
            kinds: HashMap::new(),
            room_media: None,
        }
    }

    pub fn received_of(&self, kind: MediaKind) -> Vec<&Received> {
        self.received.iter().filter(|r| r.kind == kind).collect()
    }

    pub fn publisher(&self) -> &Publisher {
        self.publisher.as_ref().expect("a publisher")
    }

    pub fn publisher_mut(&mut self) -> &mut Publisher {
        self.publisher.as_mut().expect("a publisher")
    }

    /// The mid of this client's first m-line of `kind`.
    pub fn mid_of(&self, kind: MediaKind) -> Option<Mid> {
        self.mids.iter().find(|(_, k)| *k == kind).map(|(m, _)| *m)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Shard(usize),
    Client(usize),
}

struct Flight {
    due: Instant,
    order: u64,
    dest: Dest,
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

impl PartialEq for Flight {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Flight {}
impl PartialOrd for Flight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Flight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

/// Counters of the simulated network.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    pub sent: u64,
    pub lost: u64,
    pub delivered: u64,
    /// Shard transmits to an address no running client has.
    pub undeliverable: u64,
}

/// Relay messages between the harness's shards, and how they fare.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Media packets handed from one shard to another.
    pub media: u64,
    /// Media packets the harness dropped on purpose ([`Harness::drop_relay_media`]).
    pub dropped: u64,
    /// Other messages (open, close, keyframe and layer requests, loss reports).
    pub other: u64,
    /// Bytes that crossed between "nodes" ([`Harness::bridge`]).
    pub bridged_bytes: u64,
}

/// The harness.
pub struct Harness {
    pub epoch: Instant,
    pub now: Instant,
    /// The shards (one, unless made [`Harness::with_shards`]), as the workers of one node.
    pub shards: Vec<Shard>,
    shard_timeouts: Vec<Instant>,
    /// Where the next client joins.
    target_shard: usize,
    /// Relay messages waiting to be handed over: (from, to, message).
    relay_queue: VecDeque<(u16, u16, RelayMessage)>,
    /// Drop every n-th relayed media packet (0: none), as an overflowing queue would.
    drop_relay_every: u64,
    /// Pairs of shards standing for two nodes: what one relays to the bridge reaches the
    /// other, encoded and decoded as on the bus.
    bridged: Vec<(usize, usize)>,
    pub relays: RelayStats,
    pub factory: RtcFactory,
    pub clients: Vec<Client>,
    /// Every event the shard reported, with the time it was polled.
    pub events: Vec<(Instant, CoreEvent)>,
    /// Times the shard was woken by its own timeout.
    pub shard_wakeups: Vec<Instant>,
    pub net: NetStats,
    /// For tests' own random choices (garbage datagrams and the like).
    pub rng: Rng,
    seed: u64,
    lanes: HashMap<u64, Rng>,
    attempts: HashMap<(u64, u32, u16), u32>,
    /// Capped links: when each lane's bottleneck is free again.
    queues: HashMap<u64, Instant>,
    flights: BinaryHeap<Reverse<Flight>>,
    order: u64,
    by_addr: HashMap<SocketAddr, usize>,
    next_id: u64,
    publishers: u8,
    /// Offers the shard made to room members, answered once the shard is drained.
    offers: VecDeque<(ParticipantId, u64, String, Vec<MidInfo>)>,
    next_request: u64,
}

impl Harness {
    pub fn new(config: ShardConfig, seed: u64) -> Self {
        Self::with_shards(config, seed, 1)
    }

    /// A harness with `n` shards, as one node's workers, that relay to each other.
    pub fn with_shards(config: ShardConfig, seed: u64, n: usize) -> Self {
        // str0m draws SSRCs, ICE credentials and ids from fastrand's per-thread generator;
        // seeding it makes them, and so the network's per-packet fates, repeatable.
        fastrand::seed(seed);
        #[allow(clippy::disallowed_methods)] // the harness's epoch; virtual time from here
        let epoch = Instant::now();
        let mut shards = Vec::new();
        let mut shard_timeouts = Vec::new();
        for i in 0..n {
            let mut shard = Shard::new(config.clone(), epoch, i as u16);
            shard_timeouts.push(match shard.poll_output() {
                Output::Timeout(t) => t,
                other => panic!("a new shard has nothing to say, got {other:?}"),
            });
            shards.push(shard);
        }
        Harness {
            epoch,
            now: epoch,
            shards,
            shard_timeouts,
            target_shard: 0,
            relay_queue: VecDeque::new(),
            drop_relay_every: 0,
            bridged: Vec::new(),
            relays: RelayStats::default(),
            factory: RtcFactory::new(DEFAULT_MAX_SDP_BYTES, epoch),
            clients: Vec::new(),
            events: Vec::new(),
            shard_wakeups: Vec::new(),
            net: NetStats::default(),
            rng: Rng::new(seed),
            seed,
            lanes: HashMap::new(),
            attempts: HashMap::new(),
            queues: HashMap::new(),
            flights: BinaryHeap::new(),
            order: 0,
            by_addr: HashMap::new(),
            next_id: 1,
            publishers: 0,
            offers: VecDeque::new(),
            next_request: 1 << 32,
        }
    }

    /// Virtual time since the harness started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Negotiate a client, join it to the shard and apply the answer. Returns its index.
    pub fn join(&mut self, spec: ClientSpec) -> Result<usize, JoinError> {
        let ClientSpec {
            identity,
            room,
            kind,
            source,
            audio,
            video,
            extra_video_lines,
            uplink,
            downlink,
            media,
            configure,
            edit_offer,
            grants: spec_grants,
            auto_subscribe,
        } = spec;
        if kind == SessionKind::Room {
            return self.join_room(
                identity,
                room,
                auto_subscribe,
                spec_grants,
                (uplink, downlink),
                media,
                configure,
            );
        }
        let (n, addr, mut rtc) = self.new_client_rtc(configure);
        let dir = match kind {
            SessionKind::Whip => Direction::SendOnly,
            SessionKind::Whep => Direction::RecvOnly,
            other => panic!("the harness joins WHIP and WHEP sessions, not {other:?}"),
        };
        let mut api = rtc.sdp_api();
        let mut mids = Vec::new();
        if audio {
            let mid = api.add_media(
                MediaKind::Audio,
                dir,
                Some("s".into()),
                Some("a".into()),
                None,
            );
            mids.push((mid, MediaKind::Audio));
        }
        if video {
            let sim = (kind == SessionKind::Whip && media.simulcast > 1).then(|| {
                let mut s = manifold_core::str0m::media::Simulcast::new();
                for rid in ["q", "h", "f"].iter().take(usize::from(media.simulcast)) {
                    s.add_send_layer(manifold_core::str0m::media::SimulcastLayer::new(rid));
                }
                s
            });
            let mid = api.add_media(
                MediaKind::Video,
                dir,
                Some("s".into()),
                Some("v".into()),
                sim,
            );
            mids.push((mid, MediaKind::Video));
        }
        for i in 0..extra_video_lines {
            let mid = api.add_media(
                MediaKind::Video,
                dir,
                Some("s".into()),
                Some(format!("v{i}")),
                None,
            );
            mids.push((mid, MediaKind::Video));
        }
        let (offer, pending) = api.apply().expect("an offer with media");
        let mut offer = offer.to_sdp_string();
        if let Some(edit) = edit_offer {
            offer = edit(offer);
        }
        capture::capture("offer", offer.as_bytes());
        let negotiated = self
            .factory
            .accept(kind, &offer, &[server_addr(self.target_shard)], self.now)
            .map_err(JoinError::Negotiate)?;
        let answer = negotiated.sdp.clone();
        capture::capture("answer", answer.as_bytes());
        let server_ufrag = negotiated.ufrag.clone();
        let client_ufrag = sdp_value(&offer, "a=ice-ufrag:").unwrap_or_default();
        let id = ParticipantId(0x1000 + n);
        self.join_shard(
            n,
            NewSession {
                id,
                identity: Identity::parse(&identity).expect("identity"),
                room: RoomName::parse(&room).expect("room"),
                kind,
                source,
                auto_subscribe: false,
                grants: spec_grants,
                negotiated: negotiated.into(),
            },
        )?;
        self.finish_join(
            rtc, pending, &answer, identity, id, addr, kind, mids, uplink, downlink, media,
        );
        let c = self.clients.last_mut().expect("just pushed");
        c.answer = answer;
        c.server_ufrag = server_ufrag;
        c.client_ufrag = client_ufrag;
        Ok(self.clients.len() - 1)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_join(
        &mut self,
        mut rtc: Rtc,
        pending: SdpPendingOffer,
        answer: &str,
        identity: String,
        id: ParticipantId,
        addr: SocketAddr,
        kind: SessionKind,
        mids: Vec<(Mid, MediaKind)>,
        uplink: Link,
        downlink: Link,
        media: MediaConfig,
    ) {
        let answer = SdpAnswer::from_sdp_string(answer).expect("the server's answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("the client accepts the server's answer");
        // A client drives its own clock. str0m's ICE agent schedules its first check only
        // once it has been given a time after the answer: as a DTLS server (offer
        // `a=setup:passive`) nothing else would wake it and `poll_output` would report no
        // timeout at all.
        rtc.handle_input(RtcInput::Timeout(self.now))
            .expect("a first timeout is fine");
        let publisher = (kind == SessionKind::Whip).then(|| {
            let tag = self.publishers;
            self.publishers += 1;
            let audio = media
                .audio
                .then(|| out_stream(&mut rtc, &mids, MediaKind::Audio, Codec::Opus))
                .flatten();
            let layers = if media.video {
                simulcast::layers(&mut rtc, &mids, media.late_layers, media.h264)
            } else {
                Vec::new()
            };
            let video = (media.video && layers.is_empty())
                .then(|| out_stream(&mut rtc, &mids, MediaKind::Video, Codec::Vp8))
                .flatten();
            Publisher {
                tag,
                config: media,
                audio,
                video,
                next_audio: None,
                next_video: None,
                frame: 0,
                keyframe_due: media.first_frame_keyframe,
                last_keyframe: None,
                sent: Vec::new(),
                paused: false,
                layers,
            }
        });
        let idx = self.clients.len();
        let mut c = Client::new(identity, id, addr, kind, rtc, (uplink, downlink), self.now);
        c.shard = self.target_shard;
        c.publisher = publisher;
        c.mids = mids;
        self.clients.push(c);
        self.by_addr.insert(addr, idx);
        self.drain_client(idx);
    }

    /// A new client's number, address and `Rtc` (RTP mode, one host candidate).
    fn new_client_rtc(&mut self, configure: Option<ConfigureRtc>) -> (u64, SocketAddr, Rtc) {
        let n = self.next_id;
        self.next_id += 1;
        let addr = SocketAddr::from(([10, 1, (n >> 8) as u8, n as u8], 40_000 + n as u16));
        let mut config = Rtc::builder().set_rtp_mode(true);
        if let Some(f) = configure {
            config = f(config);
        }
        let mut rtc = config.build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
        (n, addr, rtc)
    }

    /// Hand client `n`'s session to the shard and take its reply.
    fn join_shard(&mut self, n: u64, session: NewSession) -> Result<(), JoinError> {
        let request = RequestId(n);
        self.command(Command::Join {
            request,
            session: Box::new(session),
        });
        match self.reply(request) {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(JoinError::Command(e)),
            None => panic!("no reply to join {request:?}"),
        }
    }

    /// The reply to `request`, if the shard sent one.
    pub fn reply(&self, request: RequestId) -> Option<Result<ReplyValue, CommandError>> {
        self.events.iter().rev().find_map(|(_, e)| match e {
            CoreEvent::Reply { request: r, result } if *r == request => Some(result.clone()),
            _ => None,
        })
    }

    /// Join and panic on failure.
    pub fn add(&mut self, spec: ClientSpec) -> usize {
        match self.join(spec) {
            Ok(i) => i,
            Err(e) => panic!("join failed: {e:?}"),
        }
    }

    /// Hand a command to the shard it concerns (the named participant's; for a join, the
    /// one [`Harness::on_shard`] chose) now, and drain it.
    pub fn command(&mut self, command: Command) {
        let i = self.shard_for(&command);
        self.command_to(i, command);
    }

    /// Hand a command to shard `i` now and drain it.
    pub fn command_to(&mut self, i: usize, command: Command) {
        self.shards[i].handle_input(self.now, Input::Command(command));
        self.drain_shard(i);
    }

    /// Tell every shard its worker's backlog now (`Input::Backlog`), and drain them.
    pub fn backlog(&mut self, backlog: Duration) {
        for i in 0..self.shards.len() {
            self.shards[i].handle_input(self.now, Input::Backlog(backlog));
            self.drain_shard(i);
        }
    }

    /// Tell every shard its worker has waited `idle` in all for input (`Input::Idle`).
    pub fn idle(&mut self, idle: Duration) {
        for i in 0..self.shards.len() {
            self.shards[i].handle_input(self.now, Input::Idle(idle));
            self.drain_shard(i);
        }
    }

    /// New clients join shard `i` from now on.
    pub fn on_shard(&mut self, i: usize) {
        assert!(i < self.shards.len(), "no shard {i}");
        self.target_shard = i;
    }

    /// The shard client `idx` is on.
    pub fn shard_of(&self, idx: usize) -> usize {
        self.clients[idx].shard
    }

    /// Tell every shard that `room` has members on the shards of `mask` (bit per shard), as
    /// the control plane does when a room's set of workers changes.
    pub fn span_room(&mut self, room: &str, mask: u64) {
        for i in 0..self.shards.len() {
            self.command_to(
                i,
                Command::RoomShards {
                    room: RoomName::parse(room).expect("room"),
                    shards: mask,
                },
            );
        }
    }

    /// Make shards `a` and `b` two nodes' only workers: their bridge reaches the other.
    /// (Tell each with [`Harness::span_room_on`] that its room includes the bridge.)
    pub fn bridge(&mut self, a: usize, b: usize) {
        self.bridged.push((a, b));
    }

    /// Tell shard `i` alone which shards hold `room` (bit per shard; bit 63: the bridge).
    pub fn span_room_on(&mut self, i: usize, room: &str, mask: u64) {
        self.command_to(
            i,
            Command::RoomShards {
                room: RoomName::parse(room).expect("room"),
                shards: mask,
            },
        );
    }

    /// Drop every `n`-th media packet relayed between shards (0: none).
    pub fn drop_relay_media(&mut self, n: u64) {
        self.drop_relay_every = n;
    }

    fn shard_for(&self, command: &Command) -> usize {
        let participant = match command {
            Command::Leave { participant, .. }
            | Command::Trickle { participant, .. }
            | Command::Answer { participant, .. }
            | Command::Publish { participant, .. }
            | Command::Unpublish { participant, .. }
            | Command::Subscribe { participant, .. }
            | Command::Unsubscribe { participant, .. }
            | Command::RestartIce { participant, .. }
            | Command::SetMuted { participant, .. }
            | Command::SetVideoQuality { participant, .. }
            | Command::Resync { participant } => Some(*participant),
            _ => None,
        };
        participant
            .and_then(|p| self.clients.iter().find(|c| c.id == p))
            .map_or(self.target_shard, |c| c.shard)
    }

    /// `Command::Leave` for client `idx`. The client keeps running (it does not know).
    pub fn leave(&mut self, idx: usize, reason: LeaveReason) {
        let participant = self.clients[idx].id;
        self.command(Command::Leave {
            participant,
            reason,
        });
    }

    /// Client `idx` ends its session politely (RTCP BYE, DTLS close_notify).
    pub fn close_client(&mut self, idx: usize) {
        self.clients[idx]
            .rtc
            .close()
            .expect("closing a live session");
        self.drain_client(idx);
    }

    /// Stop driving client `idx`: it sends and receives nothing more.
    pub fn stop(&mut self, idx: usize) {
        self.clients[idx].running = false;
    }

    /// Every shard's statistics, summed.
    pub fn stats(&self) -> ShardStats {
        let mut total = ShardStats::default();
        for s in &self.shards {
            total.merge(&s.stats());
        }
        total
    }

    /// Feed shard 0 one datagram from `source` right now.
    pub fn inject(&mut self, source: SocketAddr, contents: &[u8]) {
        self.shards[0].handle_input(
            self.now,
            Input::Datagram {
                source,
                destination: SERVER,
                contents,
                proto: manifold_core::Protocol::Udp,
            },
        );
        self.drain_shard(0);
    }

    /// Run until every listed client has connected, or panic after `limit`.
    pub fn connect(&mut self, idxs: &[usize], limit: Duration) {
        let ok = self.run_until(limit, |h| {
            idxs.iter().all(|&i| h.clients[i].connected_at.is_some())
        });
        assert!(
            ok,
            "clients {:?} did not connect within {limit:?}",
            idxs.iter()
                .filter(|&&i| self.clients[i].connected_at.is_none())
                .collect::<Vec<_>>()
        );
    }

    /// Advance virtual time by `d`, event by event.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_to(end, |_| false);
    }

    /// Advance until `done` holds (checked after every step) or `limit` passed. Returns
    /// whether `done` held.
    pub fn run_until(&mut self, limit: Duration, done: impl FnMut(&Harness) -> bool) -> bool {
        let end = self.now + limit;
        self.run_to(end, done)
    }

    fn run_to(&mut self, end: Instant, mut done: impl FnMut(&Harness) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            let next = self.next_event();
            if next > end {
                self.now = end;
                return done(self);
            }
            // Time only moves forward.
            self.now = self.now.max(next);
            self.step();
        }
    }

    fn next_event(&self) -> Instant {
        let mut next = self
            .shard_timeouts
            .iter()
            .copied()
            .min()
            .unwrap_or(self.now);
        if let Some(Reverse(f)) = self.flights.peek() {
            next = next.min(f.due);
        }
        for c in self.clients.iter().filter(|c| c.running) {
            next = next.min(c.timeout);
            if let Some(p) = &c.publisher
                && !p.paused
            {
                for t in [p.next_audio, p.next_video].into_iter().flatten() {
                    next = next.min(t);
                }
            }
        }
        next
    }

    /// Process everything due at `self.now`.
    fn step(&mut self) {
        let now = self.now;
        while self.flights.peek().is_some_and(|Reverse(f)| f.due <= now) {
            let Reverse(f) = self.flights.pop().expect("peeked");
            self.deliver(f);
        }
        for i in 0..self.clients.len() {
            if self.clients[i].running {
                self.media_tick(i);
            }
        }
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.running && c.timeout <= now {
                if let Err(e) = c.rtc.handle_input(RtcInput::Timeout(now)) {
                    c.error = Some(e.to_string());
                    c.running = false;
                    continue;
                }
                self.drain_client(i);
                // An Rtc that asks for the instant it was just given waits a millisecond.
                let c = &mut self.clients[i];
                if c.timeout <= now {
                    c.timeout = now + Duration::from_millis(1);
                }
            }
        }
        for i in 0..self.shards.len() {
            if self.shard_timeouts[i] <= now {
                self.shard_wakeups.push(now);
                self.shards[i].handle_input(now, Input::Timeout);
                self.drain_shard(i);
                if self.shard_timeouts[i] <= now {
                    self.shard_timeouts[i] = now + Duration::from_millis(1);
                }
            }
        }
    }

    fn deliver(&mut self, f: Flight) {
        self.net.delivered += 1;
        capture::capture("datagram", &f.contents);
        match f.dest {
            Dest::Shard(i) => {
                self.shards[i].handle_input(
                    self.now,
                    Input::Datagram {
                        source: f.source,
                        destination: f.destination,
                        contents: &f.contents,
                        proto: manifold_core::Protocol::Udp,
                    },
                );
                self.drain_shard(i);
            }
            Dest::Client(i) => {
                let c = &mut self.clients[i];
                if !c.running {
                    return;
                }
                let Ok(receive) = Receive::new(Protocol::Udp, f.source, f.destination, &f.contents)
                else {
                    return;
                };
                let input = RtcInput::Receive(self.now, receive);
                if !c.rtc.accepts(&input) {
                    return;
                }
                if let Err(e) = c.rtc.handle_input(input) {
                    c.error = Some(e.to_string());
                }
                self.drain_client(i);
            }
        }
    }

    fn send(
        &mut self,
        link: Link,
        dest: Dest,
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    ) {
        self.net.sent += 1;
        let up = matches!(dest, Dest::Shard(_));
        let lane = if up { source } else { destination };
        let (lost, jitter) = self.fate(link, lane, up, &contents);
        if lost {
            self.net.lost += 1;
            return;
        }
        let mut departs = self.now;
        if let Some(rate) = link.rate_bps.filter(|r| *r > 0) {
            let lane_key = mix(&[addr_key(lane), u64::from(up)]);
            let free = self.queues.entry(lane_key).or_insert(self.now);
            let start = (*free).max(self.now);
            if start.saturating_duration_since(self.now) > link.queue {
                // The bottleneck's queue is full: dropped at its tail.
                self.net.lost += 1;
                return;
            }
            let bits = (contents.len() as u64 + 28) * 8;
            *free = start + Duration::from_nanos(bits * 1_000_000_000 / rate);
            departs = *free;
        }
        self.order += 1;
        self.flights.push(Reverse(Flight {
            due: departs + link.delay + jitter,
            order: self.order,
            dest,
            source,
            destination,
            contents,
        }));
    }

    /// Whether a datagram on `lane` (a client address, one direction) is lost, and its
    /// extra delay. For RTP the fate is a function of the seed, the lane, the SSRC and
    /// sequence number and how often that packet was sent before, so it does not depend on
    /// the order in which the `Rtc`s happen to emit their datagrams (str0m iterates hash maps
    /// with random state). Everything else draws from one generator per lane.
    fn fate(
        &mut self,
        link: Link,
        lane: SocketAddr,
        up: bool,
        contents: &[u8],
    ) -> (bool, Duration) {
        let lane_key = mix(&[addr_key(lane), u64::from(up)]);
        let r = match rtp_identity(contents) {
            Some((ssrc, seq)) => {
                let attempt = self.attempts.entry((lane_key, ssrc, seq)).or_insert(0);
                *attempt += 1;
                let h = mix(&[
                    self.seed,
                    lane_key,
                    u64::from(ssrc),
                    u64::from(seq),
                    u64::from(*attempt),
                ]);
                (h, mix(&[h]))
            }
            None => {
                let seed = self.seed;
                let rng = self
                    .lanes
                    .entry(lane_key)
                    .or_insert_with(|| Rng::new(mix(&[seed, lane_key])));
                (rng.next_u64(), rng.next_u64())
            }
        };
        let unit = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
        let lost = link.loss > 0.0 && unit(r.0) < link.loss;
        let jitter = if link.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(r.1 % link.jitter.as_micros() as u64)
        };
        (lost, jitter)
    }

    fn drain_shard(&mut self, i: usize) {
        self.drain_one_shard(i);
        // Relay messages are handed over once the shard that sent them is drained, in the
        // order sent, as the workers' queues would.
        while let Some((from, to, message)) = self.relay_queue.pop_front() {
            let to = usize::from(to);
            if to >= self.shards.len() {
                continue;
            }
            self.shards[to].handle_input(self.now, Input::Relay { from, message });
            self.drain_one_shard(to);
        }
    }

    fn drain_one_shard(&mut self, i: usize) {
        let server = server_addr(i);
        loop {
            match self.shards[i].poll_output() {
                Output::Transmit(t) => {
                    let client = self
                        .by_addr
                        .get(&t.destination)
                        .copied()
                        .filter(|&i| self.clients[i].running);
                    match client {
                        Some(i) => {
                            let link = self.clients[i].downlink;
                            self.send(link, Dest::Client(i), server, t.destination, t.contents);
                        }
                        None => self.net.undeliverable += 1,
                    }
                }
                Output::Event(e) => {
                    if let CoreEvent::Dynacast {
                        participant,
                        active,
                        ..
                    } = &e
                    {
                        self.apply_dynacast(*participant, active);
                    }
                    if let CoreEvent::Offer {
                        participant,
                        offer_id,
                        sdp,
                        mids,
                    } = &e
                    {
                        self.offers
                            .push_back((*participant, *offer_id, sdp.clone(), mids.clone()));
                    }
                    self.events.push((self.now, e));
                }
                Output::Relay { to, message } => {
                    if let RelayMessage::Media { .. } = message {
                        self.relays.media += 1;
                        if self.drop_relay_every > 0
                            && self.relays.media.is_multiple_of(self.drop_relay_every)
                        {
                            self.relays.dropped += 1;
                            continue;
                        }
                    } else {
                        self.relays.other += 1;
                    }
                    if to == BRIDGE {
                        // Another node: the message crosses as bytes, as on the bus.
                        let Some(other) = self
                            .bridged
                            .iter()
                            .find_map(|&(a, b)| (a == i).then_some(b).or((b == i).then_some(a)))
                        else {
                            continue;
                        };
                        let mut frame = Vec::new();
                        relay_wire::encode(&message, &mut frame);
                        self.relays.bridged_bytes += frame.len() as u64;
                        let message =
                            relay_wire::decode(&frame, self.now).expect("what is encoded decodes");
                        self.relay_queue.push_back((BRIDGE, other as u16, message));
                        continue;
                    }
                    self.relay_queue.push_back((i as u16, to, message));
                }
                Output::Timeout(t) => {
                    self.shard_timeouts[i] = t;
                    break;
                }
            }
        }
        while let Some((participant, offer_id, sdp, mids)) = self.offers.pop_front() {
            if let Some(i) = self
                .clients
                .iter()
                .position(|c| c.id == participant && c.running)
            {
                self.answer_offer(i, offer_id, &sdp, &mids);
            }
        }
    }

    fn drain_client(&mut self, i: usize) {
        let now = self.now;
        loop {
            let c = &mut self.clients[i];
            let out = match c.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    c.error = Some(e.to_string());
                    c.running = false;
                    return;
                }
            };
            match out {
                RtcOutput::Timeout(t) => {
                    c.timeout = t;
                    return;
                }
                RtcOutput::Transmit(t) => {
                    let link = c.uplink;
                    if let Some(s) =
                        (0..self.shards.len()).find(|&s| server_addr(s) == t.destination)
                    {
                        self.send(
                            link,
                            Dest::Shard(s),
                            t.source,
                            t.destination,
                            t.contents.into(),
                        );
                    }
                }
                RtcOutput::Event(e) => match e {
                    Event::Connected => {
                        c.connected_at.get_or_insert(now);
                        if let Some(p) = &mut c.publisher {
                            if p.audio.is_some() {
                                p.next_audio = Some(now);
                            }
                            if p.video.is_some() || !p.layers.is_empty() {
                                p.next_video = Some(now);
                            }
                        }
                    }
                    Event::RtpPacket(pkt) => {
                        let ssrc = pkt.header.ssrc;
                        let kind = match c.kinds.get(&ssrc) {
                            Some(k) => *k,
                            None => {
                                let mid = c.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                                let kind = mid
                                    .and_then(|m| c.rtc.media(m))
                                    .map(|m| m.kind())
                                    .expect("a packet of a negotiated m-line");
                                c.kinds.insert(ssrc, kind);
                                kind
                            }
                        };
                        c.received.push(Received {
                            at: now,
                            kind,
                            ssrc,
                            seq: pkt.header.sequence_number,
                            seq_no: *pkt.seq_no,
                            ts: pkt.header.timestamp,
                            pt: pkt.header.payload_type,
                            marker: pkt.header.marker,
                            payload: pkt.payload,
                        });
                    }
                    Event::KeyframeRequest(req) => {
                        c.keyframe_requests.push((now, req.mid, req.kind));
                        if let Some(p) = &mut c.publisher {
                            p.keyframe_due = true;
                            for l in p.layers.iter_mut() {
                                if req.rid.is_none_or(|r| *r == *l.rid) {
                                    l.keyframe_due = true;
                                }
                            }
                        }
                    }
                    Event::Closed => {
                        c.closed_at.get_or_insert(now);
                    }
                    Event::RawPacket(raw) => c.raw.push((now, raw)),
                    _ => {}
                },
            }
        }
    }

    fn media_tick(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        let Some(p) = c.publisher.as_mut() else {
            return;
        };
        if p.paused {
            return;
        }
        let mut wrote = false;
        while let Some(at) = p.next_audio.filter(|t| *t <= now) {
            let s = p.audio.as_mut().expect("audio scheduled");
            let mut payload = vec![0u8; p.config.audio_payload.max(RECORD_AT + 20)];
            Record {
                tag: p.tag,
                counter: s.counter,
                frame: s.counter,
                index: 0,
            }
            .write(&mut payload);
            let level = p.config.audio_level;
            let (pt, payload) = match s.red.filter(|_| p.config.red) {
                Some(red) => {
                    // The previous packet rides along as the redundant block.
                    let previous = std::mem::replace(&mut s.last_payload, payload.clone());
                    let block = RedundantBlock {
                        pt: *s.pt,
                        timestamp_offset: AUDIO_TICKS_PER_PACKET,
                        payload: previous,
                    };
                    let blocks = if block.payload.is_empty() {
                        Vec::new()
                    } else {
                        vec![block]
                    };
                    (red, RedEncoder::encode(*s.pt, &payload, &blocks))
                }
                None => (s.pt, payload),
            };
            let write = RtpWrite::new(pt, s.seq.into(), s.ts, now, payload)
                .nackable(false)
                .ext_vals(ExtensionValues {
                    audio_level: level,
                    voice_activity: level.map(|l| l > -50),
                    ..Default::default()
                });
            c.rtc
                .direct_api()
                .stream_tx(&s.ssrc)
                .expect("the audio send stream")
                .write_rtp(write);
            p.sent.push(Sent {
                at: now,
                kind: MediaKind::Audio,
                seq_no: s.seq,
                ts: s.ts,
                counter: s.counter,
                keyframe_start: false,
            });
            s.seq += 1;
            s.counter += 1;
            s.ts = s.ts.wrapping_add(AUDIO_TICKS_PER_PACKET);
            p.next_audio = Some(at + AUDIO_INTERVAL);
            wrote = true;
        }
        while let Some(at) = p.next_video.filter(|t| *t <= now)
            && !p.layers.is_empty()
        {
            simulcast::write_frame(
                &mut c.rtc,
                &mut p.layers,
                p.tag,
                p.config.keyframe_interval,
                now,
                &mut p.sent,
            );
            p.next_video = Some(at + FRAME_INTERVAL);
            wrote = true;
        }
        while let Some(at) = p.next_video.filter(|t| *t <= now) {
            let periodic = p
                .config
                .keyframe_interval
                .is_some_and(|every| p.last_keyframe.is_none_or(|k| now - k >= every));
            let keyframe = p.keyframe_due || periodic;
            if keyframe {
                p.keyframe_due = false;
                p.last_keyframe = Some(now);
            }
            let packets = if keyframe {
                p.config.packets_per_keyframe
            } else {
                p.config.packets_per_frame
            };
            let s = p.video.as_mut().expect("video scheduled");
            for index in 0..packets {
                let mut payload = vec![0u8; p.config.video_payload.max(RECORD_AT + 20)];
                if index == 0 {
                    // VP8 payload descriptor: S=1, PID 0; then the frame tag whose P bit
                    // (inverse keyframe flag) is 0 for a keyframe.
                    payload[0] = 0x10;
                    payload[1] = if keyframe { 0x50 } else { 0x51 };
                }
                Record {
                    tag: p.tag,
                    counter: s.counter,
                    frame: p.frame,
                    index: index as u16,
                }
                .write(&mut payload);
                for (k, b) in payload[RECORD_AT + 20..].iter_mut().enumerate() {
                    *b = (k as u8).wrapping_add(s.counter as u8);
                }
                capture::capture("video-payload", &payload);
                let write = RtpWrite::new(s.pt, s.seq.into(), s.ts, now, payload)
                    .marker(index + 1 == packets)
                    .nackable(true);
                c.rtc
                    .direct_api()
                    .stream_tx(&s.ssrc)
                    .expect("the video send stream")
                    .write_rtp(write);
                p.sent.push(Sent {
                    at: now,
                    kind: MediaKind::Video,
                    seq_no: s.seq,
                    ts: s.ts,
                    counter: s.counter,
                    keyframe_start: keyframe && index == 0,
                });
                s.seq += 1;
                s.counter += 1;
            }
            s.ts = s.ts.wrapping_add(VIDEO_TICKS_PER_FRAME);
            p.frame += 1;
            p.next_video = Some(at + FRAME_INTERVAL);
            wrote = true;
        }
        if wrote {
            self.drain_client(i);
        }
    }

    /// Core events matching `f`.
    pub fn events_where(&self, f: impl Fn(&CoreEvent) -> bool) -> Vec<&CoreEvent> {
        self.events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| f(e))
            .collect()
    }

    /// Is this participant still on the shard (joined, not left)?
    pub fn left_reason(&self, idx: usize) -> Option<LeaveReason> {
        let id = self.clients[idx].id;
        self.events.iter().find_map(|(_, e)| match e {
            CoreEvent::ParticipantLeft {
                participant,
                reason,
                ..
            } if *participant == id => Some(*reason),
            _ => None,
        })
    }

    /// Client `idx` (a player) asks for a keyframe on the video it receives, as a decoder
    /// that lost its reference would.
    pub fn request_keyframe(&mut self, idx: usize, kind: KeyframeRequestKind) {
        let c = &mut self.clients[idx];
        let ssrc = c
            .received
            .iter()
            .rev()
            .find(|r| r.kind == MediaKind::Video)
            .map(|r| r.ssrc)
            .expect("video received before asking for a keyframe");
        c.rtc
            .direct_api()
            .stream_rx(&ssrc)
            .expect("the receive stream of received video")
            .request_keyframe(kind);
        self.drain_client(idx);
    }

    /// Publisher `idx` stops sending media (its encoder stops).
    /// A room publisher does what dynacast says, as the SDK does: layers not listed stop,
    /// listed ones (re)start with a keyframe.
    fn apply_dynacast(&mut self, participant: ParticipantId, active: &[String]) {
        let Some(c) = self.clients.iter_mut().find(|c| c.id == participant) else {
            return;
        };
        let Some(p) = c.publisher.as_mut() else {
            return;
        };
        for l in p.layers.iter_mut() {
            let on = active.contains(&l.rid);
            if on && l.paused {
                l.keyframe_due = true;
            }
            l.paused = !on;
        }
    }

    /// Stop (or restart) one simulcast layer of publisher `idx`, as an encoder does when its
    /// uplink cannot carry it.
    pub fn pause_layer(&mut self, idx: usize, rid: &str, paused: bool) {
        let p = self.clients[idx].publisher_mut();
        for l in p.layers.iter_mut().filter(|l| l.rid == rid) {
            if l.paused && !paused {
                l.keyframe_due = true;
            }
            l.paused = paused;
        }
    }

    /// Publisher `idx`'s simulcast encoder restarts under new SSRCs.
    pub fn restart_encoder(&mut self, idx: usize, seed: u32) {
        let c = &mut self.clients[idx];
        let p = c.publisher.as_mut().expect("a publisher");
        simulcast::restart(&mut c.rtc, &mut p.layers, seed);
    }

    pub fn pause_media(&mut self, idx: usize, paused: bool) {
        let now = self.now;
        let p = self.clients[idx].publisher_mut();
        p.paused = paused;
        if !paused {
            if p.next_audio.is_some() {
                p.next_audio = Some(now);
            }
            if p.next_video.is_some() {
                p.next_video = Some(now);
            }
        }
    }
}

/// The value of the first SDP line starting with `prefix`.
pub fn sdp_value(sdp: &str, prefix: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix))
        .map(str::to_owned)
}

/// A STUN Binding request as an ICE agent sends it (USERNAME, PRIORITY, ICE-CONTROLLING,
/// USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT), with a correct fingerprint but an
/// integrity value that is just `integrity`: without the password nobody can do better.
pub fn stun_binding_request(username: &str, transaction: [u8; 12], integrity: [u8; 20]) -> Vec<u8> {
    fn attr(out: &mut Vec<u8>, t: u16, v: &[u8]) {
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&transaction);
    attr(&mut m, 0x0006, username.as_bytes());
    attr(&mut m, 0x0024, &0x6e7f_1effu32.to_be_bytes());
    attr(&mut m, 0x802a, &[7; 8]);
    attr(&mut m, 0x0025, &[]);
    attr(&mut m, 0x0008, &integrity);
    // FINGERPRINT covers everything before it, with the length already counting it.
    let len = (m.len() - 20 + 8) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let fingerprint = crc32(&m) ^ 0x5354_554e;
    attr(&mut m, 0x8028, &fingerprint.to_be_bytes());
    m
}

/// CRC-32 (IEEE 802.3), as STUN's FINGERPRINT uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn addr_key(a: SocketAddr) -> u64 {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => u64::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => u128::from(v6) as u64,
    };
    (ip << 16) | u64::from(a.port())
}

/// The send stream, SSRC and negotiated payload type of the client's first m-line of `kind`.
fn out_stream(
    rtc: &mut Rtc,
    mids: &[(Mid, MediaKind)],
    kind: MediaKind,
    codec: Codec,
) -> Option<OutStream> {
    let mid = mids.iter().find(|(_, k)| *k == kind)?.0;
    let remote_pts = rtc.media(mid)?.remote_pts().to_vec();
    let params = *rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && remote_pts.contains(&p.pt()))?;
    let pt = params.pt();
    // str0m keeps a codec's RED PT only when both sides negotiated it.
    let red = params.red();
    let ssrc = rtc.direct_api().stream_tx_by_mid(mid, None)?.ssrc();
    Some(OutStream {
        mid,
        ssrc,
        pt,
        red,
        last_payload: Vec::new(),
        seq: 1000,
        ts: 50_000,
        counter: 0,
    })
}

/// Per-kind view of what a subscriber received, for continuity checks.
pub struct StreamCheck {
    pub ssrcs: Vec<Ssrc>,
    /// Distinct extended sequence numbers received, sorted.
    pub seqs: Vec<u64>,
    /// Highest minus lowest extended sequence number, plus one.
    pub range: u64,
    /// Missing numbers inside the range.
    pub holes: u64,
    /// Pairs of consecutive (by seq) packets whose timestamp went backwards.
    pub ts_backwards: usize,
}

/// Check the stream of `kind` a client received.
pub fn check_stream(c: &Client, kind: MediaKind) -> StreamCheck {
    let rx = c.received_of(kind);
    let mut ssrcs: Vec<Ssrc> = rx.iter().map(|r| r.ssrc).collect();
    ssrcs.sort_by_key(|s| **s);
    ssrcs.dedup();
    let mut by_seq: Vec<(u64, u32)> = rx.iter().map(|r| (r.seq_no, r.ts)).collect();
    by_seq.sort();
    by_seq.dedup_by_key(|(s, _)| *s);
    let seqs: Vec<u64> = by_seq.iter().map(|(s, _)| *s).collect();
    let range = match (seqs.first(), seqs.last()) {
        (Some(a), Some(b)) => b - a + 1,
        _ => 0,
    };
    let holes = range - seqs.len() as u64;
    let ts_backwards = by_seq
        .windows(2)
        .filter(|w| ts_before(w[1].1, w[0].1))
        .count();
    StreamCheck {
        ssrcs,
        seqs,
        range,
        holes,
        ts_backwards,
    }
}

/// `a` is strictly before `b` in RTP timestamp (mod 2^32) order.
pub fn ts_before(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// Install a tracing subscriber once (honours `RUST_LOG`), for debugging a test.
pub fn init_log() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// A shard config for tests: the defaults.
pub fn config() -> ShardConfig {
    ShardConfig::default()
}
