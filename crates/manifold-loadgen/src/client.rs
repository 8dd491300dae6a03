//! One generated client in the media engine: its `Rtc`, its socket, the media it sends (a
//! publisher) or the statistics of what it receives (a subscriber).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use serde::Serialize;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::signal::Joined;
use crate::stamp::{Stamp, now_us};
use crate::synth;

/// How a publisher's media is shaped.
#[derive(Clone, Copy, Debug)]
pub struct MediaShape {
    /// Video bitrate.
    pub video_bitrate_bps: u32,
    /// Video frame rate.
    pub fps: u32,
    /// Periodic keyframes (on top of those requested by PLI/FIR).
    pub keyframe_interval: Option<Duration>,
    /// Opus packet size in bytes.
    pub audio_bytes: usize,
}

impl Default for MediaShape {
    fn default() -> Self {
        MediaShape {
            video_bitrate_bps: 1_500_000,
            fps: 30,
            keyframe_interval: None,
            audio_bytes: 80,
        }
    }
}

/// A video gap longer than this counts as a freeze.
pub const FREEZE_GAP: Duration = Duration::from_millis(500);

struct SendTrack {
    pt: Pt,
    ssrc: Ssrc,
    seq: u64,
    ts: u64,
    index: u32,
    sent: u64,
}

/// Receive statistics of one kind of media.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecvStats {
    /// Packets received (duplicates included).
    pub packets: u64,
    /// Distinct stamped packets received.
    pub unique: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// First stamp index seen.
    pub first_index: Option<u32>,
    /// Highest stamp index seen.
    pub max_index: Option<u32>,
    /// Freezes: gaps between video packets longer than [`FREEZE_GAP`].
    pub freezes: u64,
    /// Latency samples in microseconds (send stamp to receipt), capped in number.
    #[serde(skip)]
    pub latencies_us: Vec<u32>,
    #[serde(skip)]
    seen: Vec<u64>,
    #[serde(skip)]
    last_arrival: Option<Instant>,
}

/// Most latency samples kept per track.
const MAX_LATENCY_SAMPLES: usize = 200_000;

impl RecvStats {
    fn record(&mut self, stamp: Stamp, now: Instant, video: bool) {
        self.packets += 1;
        if video {
            if let Some(last) = self.last_arrival
                && now.saturating_duration_since(last) > FREEZE_GAP
            {
                self.freezes += 1;
            }
            self.last_arrival = Some(now);
        }
        let first = *self.first_index.get_or_insert(stamp.index);
        if stamp.index < first {
            // A reordered packet older than the first: count it, keep the bitmap simple.
            self.unique += 1;
            return;
        }
        let offset = (stamp.index - first) as usize;
        let (word, bit) = (offset / 64, offset % 64);
        // Bounded: a client runs for a bounded time at a bounded packet rate.
        if word >= self.seen.len() {
            if word > 1 << 20 {
                return;
            }
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.unique += 1;
        self.max_index = Some(self.max_index.map_or(stamp.index, |m| m.max(stamp.index)));
        if self.latencies_us.len() < MAX_LATENCY_SAMPLES {
            let lat = now_us().saturating_sub(stamp.sent_us);
            self.latencies_us.push(lat.min(u64::from(u32::MAX)) as u32);
        }
    }

    /// Packets expected between the first one received and `last_sent` (inclusive).
    pub fn expected(&self, last_sent: u32) -> u64 {
        match self.first_index {
            Some(f) if last_sent >= f => u64::from(last_sent - f) + 1,
            _ => 0,
        }
    }
}

/// A snapshot of one client.
#[derive(Clone, Debug, Serialize)]
pub struct ClientReport {
    /// Label given at creation.
    pub label: String,
    /// "publisher" or "subscriber".
    pub role: &'static str,
    /// ICE+DTLS came up.
    pub connected: bool,
    /// Time from offer to connected.
    pub connect_ms: Option<u64>,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Audio packets sent (publishers).
    pub audio_sent: u64,
    /// Video packets sent (publishers).
    pub video_sent: u64,
    /// Keyframe requests received (publishers).
    pub keyframe_requests: u64,
    /// Audio received (subscribers).
    pub audio: RecvStats,
    /// Video received (subscribers).
    pub video: RecvStats,
}

enum Role {
    Publisher {
        shape: MediaShape,
        audio: Option<SendTrack>,
        video: Option<SendTrack>,
        next_audio: Instant,
        next_video: Instant,
        want_keyframe: bool,
        last_keyframe: Option<Instant>,
        keyframe_requests: u64,
    },
    Subscriber {
        audio: RecvStats,
        video: RecvStats,
        kinds: Vec<(Ssrc, MediaKind)>,
    },
}

/// One client.
pub struct Client {
    label: String,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    role: Role,
    media: Vec<(Mid, MediaKind)>,
    started: Instant,
    connected_at: Option<Instant>,
    failure: Option<String>,
    timeout: Instant,
    buf: Vec<u8>,
}

impl Client {
    /// A publisher with `shape`.
    pub fn publisher(label: String, joined: Joined, shape: MediaShape) -> std::io::Result<Client> {
        let now = Instant::now();
        Client::new(
            label,
            joined,
            Role::Publisher {
                shape,
                audio: None,
                video: None,
                next_audio: now,
                next_video: now,
                want_keyframe: true,
                last_keyframe: None,
                keyframe_requests: 0,
            },
        )
    }

    /// A subscriber.
    pub fn subscriber(label: String, joined: Joined) -> std::io::Result<Client> {
        Client::new(
            label,
            joined,
            Role::Subscriber {
                audio: RecvStats::default(),
                video: RecvStats::default(),
                kinds: Vec::new(),
            },
        )
    }

    fn new(label: String, joined: Joined, role: Role) -> std::io::Result<Client> {
        joined.socket.set_nonblocking(true)?;
        let local = joined.socket.local_addr()?;
        Ok(Client {
            label,
            rtc: joined.rtc,
            socket: UdpSocket::from_std(joined.socket),
            local,
            role,
            media: joined.media,
            started: joined.started,
            connected_at: None,
            failure: None,
            timeout: Instant::now(),
            buf: vec![0u8; 2048],
        })
    }

    /// The socket, for registration with a poller.
    pub fn socket_mut(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    /// When this client next needs attention.
    pub fn deadline(&self) -> Instant {
        let mut d = self.timeout;
        if let Role::Publisher {
            audio,
            video,
            next_audio,
            next_video,
            ..
        } = &self.role
            && self.connected_at.is_some()
        {
            if audio.is_some() {
                d = d.min(*next_audio);
            }
            if video.is_some() {
                d = d.min(*next_video);
            }
        }
        d
    }

    /// Is the client still running?
    pub fn is_alive(&self) -> bool {
        self.failure.is_none() && self.rtc.is_alive()
    }

    /// Read every datagram waiting on the socket.
    pub fn handle_readable(&mut self) {
        loop {
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, source)) => {
                    let now = Instant::now();
                    let Ok(contents) = self.buf[..n].try_into() else {
                        continue;
                    };
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local,
                            contents,
                        },
                    );
                    if let Err(e) = self.rtc.handle_input(input) {
                        tracing::debug!(client = %self.label, error = %e, "input rejected");
                    }
                    self.drain(now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP port unreachable and friends: the server went away.
                    tracing::debug!(client = %self.label, error = %e, "recv failed");
                    break;
                }
            }
        }
    }

    /// Advance timers and generate due media.
    pub fn handle_time(&mut self, now: Instant) {
        if now >= self.timeout {
            if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                self.fail(format!("rtc: {e}"));
                return;
            }
            self.drain(now);
        }
        if self.connected_at.is_some() {
            self.send_media(now);
        }
    }

    /// Apply a change to the `Rtc` (an ICE restart, say) and drain it, as str0m requires.
    pub fn with_rtc<R>(&mut self, f: impl FnOnce(&mut Rtc) -> R) -> R {
        let r = f(&mut self.rtc);
        self.drain(Instant::now());
        r
    }

    /// Drive this client from the calling thread for `duration` (tests that need to touch
    /// the `Rtc` between steps use this instead of an [`crate::Engine`]).
    pub fn run_for(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.handle_readable();
            self.handle_time(Instant::now());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stop: disconnect the `Rtc`.
    pub fn stop(&mut self) {
        self.rtc.disconnect();
    }

    /// A snapshot.
    pub fn report(&self) -> ClientReport {
        let connect_ms = self
            .connected_at
            .map(|t| t.saturating_duration_since(self.started).as_millis() as u64);
        let mut r = ClientReport {
            label: self.label.clone(),
            role: "subscriber",
            connected: self.connected_at.is_some(),
            connect_ms,
            failure: self.failure.clone(),
            audio_sent: 0,
            video_sent: 0,
            keyframe_requests: 0,
            audio: RecvStats::default(),
            video: RecvStats::default(),
        };
        match &self.role {
            Role::Publisher {
                audio,
                video,
                keyframe_requests,
                ..
            } => {
                r.role = "publisher";
                r.audio_sent = audio.as_ref().map_or(0, |t| t.sent);
                r.video_sent = video.as_ref().map_or(0, |t| t.sent);
                r.keyframe_requests = *keyframe_requests;
            }
            Role::Subscriber { audio, video, .. } => {
                r.audio = audio.clone();
                r.video = video.clone();
            }
        }
        r
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            tracing::debug!(client = %self.label, why, "client failed");
            self.failure = Some(why);
        }
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    // UDP loss is normal: a full socket buffer drops like the network would.
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.handle_event(now, e),
                Err(e) => {
                    self.fail(format!("rtc: {e}"));
                    self.timeout = now + Duration::from_secs(3600);
                    break;
                }
            }
        }
    }

    fn handle_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected => {
                self.connected_at.get_or_insert(now);
                if let Role::Publisher {
                    audio,
                    video,
                    next_audio,
                    next_video,
                    ..
                } = &mut self.role
                {
                    *audio = send_track(&mut self.rtc, &self.media, MediaKind::Audio, Codec::Opus);
                    *video = send_track(&mut self.rtc, &self.media, MediaKind::Video, Codec::Vp8);
                    *next_audio = now;
                    *next_video = now;
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::debug!(client = %self.label, "ICE disconnected");
            }
            Event::KeyframeRequest(_) => {
                if let Role::Publisher {
                    want_keyframe,
                    keyframe_requests,
                    ..
                } = &mut self.role
                {
                    *want_keyframe = true;
                    *keyframe_requests += 1;
                }
            }
            Event::RtpPacket(pkt) => {
                let ssrc = pkt.header.ssrc;
                let Role::Subscriber {
                    audio,
                    video,
                    kinds,
                } = &mut self.role
                else {
                    return;
                };
                let kind = match kinds.iter().find(|(s, _)| *s == ssrc) {
                    Some((_, k)) => *k,
                    None => {
                        let mid = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                        let Some(kind) = mid
                            .and_then(|m| self.media.iter().find(|(x, _)| *x == m))
                            .map(|(_, k)| *k)
                        else {
                            return;
                        };
                        if kinds.len() < 16 {
                            kinds.push((ssrc, kind));
                        }
                        kind
                    }
                };
                let Some(stamp) = Stamp::read(&pkt.payload) else {
                    return;
                };
                match kind {
                    MediaKind::Audio => audio.record(stamp, now, false),
                    MediaKind::Video => video.record(stamp, now, true),
                }
            }
            _ => {}
        }
    }

    fn send_media(&mut self, now: Instant) {
        let Role::Publisher {
            shape,
            audio,
            video,
            next_audio,
            next_video,
            want_keyframe,
            last_keyframe,
            ..
        } = &mut self.role
        else {
            return;
        };
        let mut wrote = false;
        if let Some(t) = audio {
            // Catch up at most a few packets after a stall rather than bursting forever.
            let mut n = 0;
            while *next_audio <= now && n < 5 {
                let payload = synth::opus_packet(t.index, now_us(), shape.audio_bytes);
                write(&mut self.rtc, t, now, payload, true, false);
                t.index = t.index.wrapping_add(1);
                t.ts += u64::from(synth::OPUS_FRAME_TICKS);
                *next_audio += Duration::from_millis(20);
                n += 1;
                wrote = true;
            }
            if *next_audio <= now {
                *next_audio = now + Duration::from_millis(20);
            }
        }
        if let Some(t) = video
            && *next_video <= now
        {
            let periodic = shape.keyframe_interval.is_some_and(|iv| {
                last_keyframe.is_none_or(|k| now.saturating_duration_since(k) >= iv)
            });
            let key = *want_keyframe || periodic;
            if key {
                *want_keyframe = false;
                *last_keyframe = Some(now);
            }
            let size =
                synth::frame_bytes(shape.video_bitrate_bps, shape.fps) * if key { 3 } else { 1 };
            let packets = synth::vp8_frame(key, size, t.index, now_us());
            let last = packets.len() - 1;
            for (i, p) in packets.into_iter().enumerate() {
                write(&mut self.rtc, t, now, p, i == last, true);
                t.index = t.index.wrapping_add(1);
            }
            let interval = Duration::from_micros(1_000_000 / u64::from(shape.fps.max(1)));
            t.ts += 90_000 / u64::from(shape.fps.max(1));
            *next_video += interval;
            if *next_video <= now {
                *next_video = now + interval;
            }
            wrote = true;
        }
        if wrote {
            self.drain(now);
        }
    }
}

fn write(
    rtc: &mut Rtc,
    t: &mut SendTrack,
    now: Instant,
    payload: Vec<u8>,
    marker: bool,
    video: bool,
) {
    let mut api = rtc.direct_api();
    let Some(stream) = api.stream_tx(&t.ssrc) else {
        return;
    };
    let seq: SeqNo = t.seq.into();
    stream.write_rtp(
        RtpWrite::new(t.pt, seq, t.ts as u32, now, payload)
            .marker(marker)
            .nackable(video),
    );
    t.seq += 1;
    t.sent += 1;
}

fn send_track(
    rtc: &mut Rtc,
    media: &[(Mid, MediaKind)],
    kind: MediaKind,
    codec: Codec,
) -> Option<SendTrack> {
    let mid = media.iter().find(|(_, k)| *k == kind)?.0;
    let remote_pts = rtc.media(mid)?.remote_pts().to_vec();
    let pt = rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && remote_pts.contains(&p.pt()))?
        .pt();
    let ssrc = rtc.direct_api().stream_tx_by_mid(mid, None)?.ssrc();
    let seed = u64::from(*ssrc);
    Some(SendTrack {
        pt,
        ssrc,
        seq: seed & 0x3fff,
        ts: (seed << 8) & 0x3fff_ffff,
        index: 0,
        sent: 0,
    })
}
