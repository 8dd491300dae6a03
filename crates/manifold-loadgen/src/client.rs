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

use crate::hist::Histogram;
use crate::signal::Joined;
use crate::stamp::{Stamp, next_source, now_us};
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

/// A gap between packets of one track longer than this counts as a freeze.
pub const FREEZE_GAP: Duration = Duration::from_millis(500);

/// A client that has not connected (ICE + DTLS) this long after its offer has failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A connected client whose ICE stays disconnected this long has lost its connection.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct SendTrack {
    source: u32,
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
    /// The sending track (from the stamps), once something arrived.
    pub source: Option<u32>,
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
    /// Freezes: gaps between packets longer than [`FREEZE_GAP`].
    pub freezes: u64,
    /// Packets whose stamp index lay too far from the first one to track.
    pub out_of_range: u64,
    /// Latency (stamp's send time to receipt, microseconds) of every distinct packet.
    #[serde(skip)]
    pub latency: Histogram,
    #[serde(skip)]
    seen: Vec<u64>,
    #[serde(skip)]
    last_arrival: Option<Instant>,
}

/// Most distinct indices tracked per stream (64 Mi packets: days of video).
const MAX_TRACKED_WORDS: usize = 1 << 20;

impl RecvStats {
    /// Account for one received packet: `now` is its arrival, `now_us` the same instant as
    /// wall-clock microseconds (to compare with the stamp's send time).
    pub fn record(&mut self, stamp: Stamp, now: Instant, now_us: u64) {
        self.packets += 1;
        if let Some(last) = self.last_arrival
            && now.saturating_duration_since(last) > FREEZE_GAP
        {
            self.freezes += 1;
        }
        self.last_arrival = Some(now);
        self.source.get_or_insert(stamp.source);
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
            if word >= MAX_TRACKED_WORDS {
                self.out_of_range += 1;
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
        self.latency.record(now_us.saturating_sub(stamp.sent_us));
    }

    /// Packets missing between the first and the highest index received: loss so far,
    /// not counting what is still in flight.
    pub fn gaps(&self) -> u64 {
        match (self.first_index, self.max_index) {
            (Some(f), Some(m)) => (u64::from(m - f) + 1).saturating_sub(self.unique),
            _ => 0,
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
    /// It left before the end of the run (churn): what its publisher sent after that was
    /// never meant for it.
    pub left_early: bool,
    /// Audio packets sent (publishers).
    pub audio_sent: u64,
    /// Video packets sent (publishers).
    pub video_sent: u64,
    /// Keyframe requests received (publishers).
    pub keyframe_requests: u64,
    /// Source id stamped on the audio it sends (publishers).
    pub audio_source: Option<u32>,
    /// Source id stamped on the video it sends (publishers).
    pub video_source: Option<u32>,
    /// UDP payload bytes sent (media, RTCP, STUN, DTLS).
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
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
        paused: bool,
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
    disconnected_at: Option<Instant>,
    failure: Option<String>,
    stopped: bool,
    timeout: Instant,
    bytes_sent: u64,
    bytes_received: u64,
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
                paused: false,
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
            disconnected_at: None,
            failure: None,
            stopped: false,
            timeout: Instant::now(),
            bytes_sent: 0,
            bytes_received: 0,
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

    /// Is the client still running (not failed, not stopped)?
    pub fn is_alive(&self) -> bool {
        self.failure.is_none() && !self.stopped
    }

    /// Its label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Is it a publisher?
    pub fn is_publisher(&self) -> bool {
        matches!(self.role, Role::Publisher { .. })
    }

    /// Stop (true) or resume (false) generating media; a publisher only.
    pub fn set_paused(&mut self, pause: bool) {
        if let Role::Publisher {
            paused,
            next_audio,
            next_video,
            ..
        } = &mut self.role
        {
            *paused = pause;
            let now = Instant::now();
            *next_audio = now;
            *next_video = now;
        }
    }

    /// Read every datagram waiting on the socket.
    pub fn handle_readable(&mut self) {
        loop {
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, source)) => {
                    let now = Instant::now();
                    self.bytes_received += n as u64;
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
        if !self.is_alive() {
            return;
        }
        match (self.connected_at, self.disconnected_at) {
            (None, _) if now.saturating_duration_since(self.started) > CONNECT_TIMEOUT => {
                self.fail("connect_timeout".into());
                return;
            }
            (Some(_), Some(t)) if now.saturating_duration_since(t) > DISCONNECT_TIMEOUT => {
                self.fail("disconnected".into());
                return;
            }
            _ => {}
        }
        if !self.rtc.is_alive() {
            self.fail(if self.connected_at.is_some() {
                "disconnected".into()
            } else {
                "closed_before_connect".into()
            });
            return;
        }
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
        self.stopped = true;
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
            left_early: false,
            audio_sent: 0,
            video_sent: 0,
            keyframe_requests: 0,
            audio_source: None,
            video_source: None,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
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
                r.audio_source = audio.as_ref().map(|t| t.source);
                r.video_source = video.as_ref().map(|t| t.source);
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
                    if self.socket.send_to(&t.contents, t.destination).is_ok() {
                        self.bytes_sent += t.contents.len() as u64;
                    }
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
            // Answers to a server's offer (Janus subscribers) learn their m-lines here.
            Event::MediaAdded(m) if !self.media.iter().any(|(mid, _)| *mid == m.mid) => {
                self.media.push((m.mid, m.kind));
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::debug!(client = %self.label, "ICE disconnected");
                self.disconnected_at.get_or_insert(now);
            }
            Event::IceConnectionStateChange(_) => {
                self.disconnected_at = None;
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
                let wall = now_us();
                match kind {
                    MediaKind::Audio => audio.record(stamp, now, wall),
                    MediaKind::Video => video.record(stamp, now, wall),
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
            paused,
            ..
        } = &mut self.role
        else {
            return;
        };
        if *paused {
            return;
        }
        let mut wrote = false;
        if let Some(t) = audio {
            // Catch up at most a few packets after a stall rather than bursting forever.
            let mut n = 0;
            while *next_audio <= now && n < 5 {
                let payload = synth::opus_packet(t.source, t.index, now_us(), shape.audio_bytes);
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
            let packets = synth::vp8_frame(key, size, t.source, t.index, now_us());
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
        source: next_source(),
        pt,
        ssrc,
        seq: seed & 0x3fff,
        ts: (seed << 8) & 0x3fff_ffff,
        index: 0,
        sent: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(index: u32, sent_us: u64) -> Stamp {
        Stamp {
            source: 9,
            index,
            sent_us,
        }
    }

    #[test]
    fn loss_duplicates_and_latency_are_counted() {
        let t0 = Instant::now();
        let mut s = RecvStats::default();
        // Indices 100..=199 with every tenth one missing and 150 twice.
        for i in 100..200u32 {
            if i % 10 == 3 {
                continue;
            }
            let at = t0 + Duration::from_millis(u64::from(i - 100) * 20);
            s.record(stamp(i, 1_000_000), at, 1_000_000 + 2_000);
        }
        s.record(stamp(150, 1_000_000), t0, 1_000_000 + 2_000);
        assert_eq!(s.source, Some(9));
        assert_eq!(s.first_index, Some(100));
        assert_eq!(s.max_index, Some(199));
        assert_eq!(s.packets, 91);
        assert_eq!(s.unique, 90);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.gaps(), 10);
        // The sender sent up to 209: ten more in flight or lost at the tail.
        assert_eq!(s.expected(209), 110);
        assert_eq!(s.expected(50), 0, "a sender behind the first index");
        assert_eq!(s.latency.count(), 90, "duplicates are not sampled");
        let p50 = s.latency.quantile(0.5).unwrap();
        assert!((1_940..=2_000).contains(&p50), "{p50}");
        assert_eq!(s.freezes, 0);
    }

    #[test]
    fn gaps_longer_than_the_freeze_threshold_are_freezes() {
        let t0 = Instant::now();
        let mut s = RecvStats::default();
        let mut at = t0;
        for i in 0..10u32 {
            // One long stall after packet 4, one just under the threshold after 7.
            at += match i {
                5 => FREEZE_GAP + Duration::from_millis(1),
                8 => FREEZE_GAP,
                _ => Duration::from_millis(33),
            };
            s.record(stamp(i, 0), at, 0);
        }
        assert_eq!(s.freezes, 1);
        assert_eq!(s.gaps(), 0);
    }

    #[test]
    fn reordered_and_far_packets_do_not_break_accounting() {
        let t0 = Instant::now();
        let mut s = RecvStats::default();
        s.record(stamp(10, 0), t0, 0);
        s.record(stamp(12, 0), t0, 0);
        s.record(stamp(11, 0), t0, 0);
        s.record(stamp(5, 0), t0, 0); // older than the first: counted, not tracked
        s.record(stamp(u32::MAX, 0), t0, 0); // absurdly far: counted apart
        assert_eq!(s.unique, 4);
        assert_eq!(s.out_of_range, 1);
        assert_eq!(s.max_index, Some(12));
        assert_eq!(s.gaps(), 0);
    }
}
