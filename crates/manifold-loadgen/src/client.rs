//! One generated client in the media engine: its `Rtc`, its socket, the media it sends (a
//! publisher: one VP8 stream, or three simulcast layers) or what it receives (a
//! subscriber: per-kind statistics, its video's frames and layers, through a capped
//! downlink if it was given one).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Ssrc;
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::downlink::{Downlink, DownlinkCap};
use crate::recv::RecvStats;
use crate::send::SendTrack;
use crate::signal::Joined;
use crate::simulcast::{self, SendLayer};
use crate::snapshot::ClientReport;
use crate::stamp::{Stamp, now_us};
use crate::synth;
use crate::video::VideoRecv;

/// How a publisher's media is shaped.
#[derive(Clone, Copy, Debug)]
pub struct MediaShape {
    /// Video bitrate (of the top layer, with simulcast).
    pub video_bitrate_bps: u32,
    /// Video frame rate (of every layer).
    pub fps: u32,
    /// Periodic keyframes (on top of those requested by PLI/FIR).
    pub keyframe_interval: Option<Duration>,
    /// Opus packet size in bytes.
    pub audio_bytes: usize,
    /// Send the simulcast layers of [`simulcast::PLAN`] (the offer must have had them).
    pub simulcast: bool,
}

impl Default for MediaShape {
    fn default() -> Self {
        MediaShape {
            video_bitrate_bps: 1_500_000,
            fps: 30,
            keyframe_interval: None,
            audio_bytes: 80,
            simulcast: false,
        }
    }
}

/// How a subscriber receives.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubscriberSetup {
    /// Its downlink's cap (`None`: as fast as loopback).
    pub downlink: Option<DownlinkCap>,
    /// Its publisher sends simulcast: video loss is counted on RTP sequence numbers (the
    /// server's, continuous across layers) instead of one stamp source.
    pub simulcast: bool,
}

/// A client that has not connected (ICE + DTLS) this long after its offer has failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A connected client whose ICE stays disconnected this long has lost its connection.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum Role {
    Publisher {
        shape: MediaShape,
        audio: Option<SendTrack>,
        video: Option<SendTrack>,
        layers: Vec<SendLayer>,
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
        frames: Box<VideoRecv>,
        by_seq: bool,
        kinds: Vec<(Ssrc, MediaKind)>,
        /// The SSRC its video arrives on, once it did.
        video_ssrc: Option<Ssrc>,
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
    rtp_in: u64,
    downlink: Option<Downlink>,
    /// RTP payload bytes of the media packets received (audio and video).
    media_bytes: u64,
    /// First and latest media packet: when, and `bytes_received` and `media_bytes` then.
    first_media: Option<(Instant, u64, u64)>,
    last_media: Option<(Instant, u64, u64)>,
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
                layers: Vec::new(),
                next_audio: now,
                next_video: now,
                want_keyframe: true,
                last_keyframe: None,
                keyframe_requests: 0,
                paused: false,
            },
            None,
        )
    }

    /// A subscriber on an uncapped link.
    pub fn subscriber(label: String, joined: Joined) -> std::io::Result<Client> {
        Client::subscriber_with(label, joined, SubscriberSetup::default())
    }

    /// A subscriber set up as `setup` says.
    pub fn subscriber_with(
        label: String,
        joined: Joined,
        setup: SubscriberSetup,
    ) -> std::io::Result<Client> {
        Client::new(
            label,
            joined,
            Role::Subscriber {
                audio: RecvStats::default(),
                video: RecvStats::default(),
                frames: Box::default(),
                by_seq: setup.simulcast,
                kinds: Vec::new(),
                video_ssrc: None,
            },
            setup.downlink.map(|cap| Downlink::new(cap, Instant::now())),
        )
    }

    fn new(
        label: String,
        joined: Joined,
        role: Role,
        downlink: Option<Downlink>,
    ) -> std::io::Result<Client> {
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
            rtp_in: 0,
            downlink,
            media_bytes: 0,
            first_media: None,
            last_media: None,
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
        if let Some(release) = self.downlink.as_ref().and_then(Downlink::next_release) {
            d = d.min(release);
        }
        if let Role::Publisher {
            audio,
            video,
            layers,
            next_audio,
            next_video,
            ..
        } = &self.role
            && self.connected_at.is_some()
        {
            if audio.is_some() {
                d = d.min(*next_audio);
            }
            if video.is_some() || !layers.is_empty() {
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

    /// Read every datagram waiting on the socket (into the downlink's queue, when capped).
    pub fn handle_readable(&mut self) {
        loop {
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, source)) => {
                    let data = &self.buf[..n];
                    if is_rtp(data) {
                        self.rtp_in += 1;
                    }
                    if let Some(link) = self.downlink.as_mut() {
                        link.offer(data, source);
                        continue;
                    }
                    let now = Instant::now();
                    self.bytes_received += n as u64;
                    feed(&mut self.rtc, &self.label, self.local, now, source, data);
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
        self.release(Instant::now());
    }

    /// Advance timers and generate due media.
    pub fn handle_time(&mut self, now: Instant) {
        if !self.is_alive() {
            return;
        }
        self.release(now);
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
            if self.decode_video(now) {
                self.drain(now);
            }
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
        let since_start = |t: Instant| t.saturating_duration_since(self.started).as_millis() as u64;
        let connect_ms = self.connected_at.map(since_start);
        let first_media_ms = self.first_media.map(|(t, _, _)| since_start(t));
        let started_unix_ms = crate::run::unix_ms().saturating_sub(since_start(Instant::now()));
        let (media_s, received_kbps, media_kbps) = match (self.first_media, self.last_media) {
            (Some((t0, b0, m0)), Some((t1, b1, m1))) if t1 > t0 => {
                let s = t1.saturating_duration_since(t0).as_secs_f64();
                let kbps = |bytes: u64| Some(bytes as f64 * 8.0 / 1000.0 / s);
                (s, kbps(b1 - b0), kbps(m1 - m0))
            }
            _ => (0.0, None, None),
        };
        let mut r = ClientReport::new(self.label.clone(), "subscriber");
        r.connected = self.connected_at.is_some();
        r.started_unix_ms = started_unix_ms;
        r.connect_ms = connect_ms;
        r.first_media_ms = first_media_ms;
        r.failure = self.failure.clone();
        r.bytes_sent = self.bytes_sent;
        r.bytes_received = self.bytes_received;
        r.rtp_in = self.rtp_in;
        r.downlink = self.downlink.as_ref().map(Downlink::report);
        r.media_s = media_s;
        r.received_kbps = received_kbps;
        r.media_kbps = media_kbps;
        match &self.role {
            Role::Publisher {
                audio,
                video,
                layers,
                keyframe_requests,
                ..
            } => {
                r.role = "publisher";
                r.audio_sent = audio.as_ref().map_or(0, |t| t.sent);
                r.video_sent = video.as_ref().map_or(0, |t| t.sent)
                    + layers.iter().map(SendLayer::sent).sum::<u64>();
                r.keyframe_requests = *keyframe_requests;
                r.audio_source = audio.as_ref().map(|t| t.source);
                r.video_source = video.as_ref().map(|t| t.source);
                r.layers = layers.iter().map(SendLayer::report).collect();
            }
            Role::Subscriber {
                audio,
                video,
                frames,
                ..
            } => {
                r.audio = audio.clone();
                r.video = video.clone();
                r.video_frames = frames.report(self.last_media.map(|(t, ..)| t));
                r.keyframe_requests = r.video_frames.keyframe_requests;
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

    /// A subscriber's decoder model moves on with time, and asks for a keyframe (PLI) when
    /// it is stuck; whether it asked (the `Rtc` then needs draining).
    fn decode_video(&mut self, now: Instant) -> bool {
        let Role::Subscriber {
            frames, video_ssrc, ..
        } = &mut self.role
        else {
            return false;
        };
        frames.handle_time(now);
        request_keyframe(&mut self.rtc, frames, *video_ssrc, now)
    }

    /// Hand the `Rtc` what the capped downlink lets through by `now`.
    fn release(&mut self, now: Instant) {
        while let Some((buf, source)) = self.downlink.as_mut().and_then(|l| l.pop(now)) {
            self.bytes_received += buf.len() as u64;
            feed(&mut self.rtc, &self.label, self.local, now, source, &buf);
            self.drain(now);
            if let Some(link) = self.downlink.as_mut() {
                link.recycle(buf);
            }
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
                    shape,
                    audio,
                    video,
                    layers,
                    next_audio,
                    next_video,
                    ..
                } = &mut self.role
                {
                    let (rtc, media) = (&mut self.rtc, &self.media);
                    *audio = SendTrack::open(rtc, media, MediaKind::Audio, Codec::Opus, None);
                    if shape.simulcast {
                        *layers = simulcast::open_layers(rtc, media, shape.video_bitrate_bps);
                    } else {
                        *video = SendTrack::open(rtc, media, MediaKind::Video, Codec::Vp8, None);
                    }
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
            Event::KeyframeRequest(req) => {
                if let Role::Publisher {
                    want_keyframe,
                    keyframe_requests,
                    layers,
                    ..
                } = &mut self.role
                {
                    *want_keyframe = true;
                    *keyframe_requests += 1;
                    for l in layers.iter_mut() {
                        l.handle_keyframe_request(req.rid);
                    }
                }
            }
            Event::RtpPacket(pkt) => {
                let ssrc = pkt.header.ssrc;
                let Role::Subscriber {
                    audio,
                    video,
                    frames,
                    by_seq,
                    kinds,
                    video_ssrc,
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
                self.media_bytes += pkt.payload.len() as u64;
                let mark = (now, self.bytes_received, self.media_bytes);
                self.first_media.get_or_insert(mark);
                self.last_media = Some(mark);
                let stamp = Stamp::read(&pkt.payload);
                let wall = now_us();
                match (kind, stamp) {
                    (MediaKind::Audio, Some(s)) => {
                        audio.record(s, now, wall);
                        frames.handle_time(now);
                    }
                    (MediaKind::Audio, None) => frames.handle_time(now),
                    (MediaKind::Video, _) => {
                        *video_ssrc = Some(ssrc);
                        let seq = *pkt.seq_no;
                        let h = &pkt.header;
                        frames.handle_packet(now, seq, h.timestamp, h.marker, &pkt.payload);
                        if *by_seq {
                            // Bounded runs never take a stream past 2^32 packets.
                            let sent = stamp.map(|s| s.sent_us);
                            video.record_index(seq as u32, sent, now, wall);
                        } else if let Some(s) = stamp {
                            video.record(s, now, wall);
                        }
                    }
                }
                // Inside the drain loop: the request goes out with what follows.
                request_keyframe(&mut self.rtc, frames, *video_ssrc, now);
            }
            _ => {}
        }
    }

    fn send_media(&mut self, now: Instant) {
        let Role::Publisher {
            shape,
            audio,
            video,
            layers,
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
                t.write(&mut self.rtc, now, payload, true, false);
                t.ts += u64::from(synth::OPUS_FRAME_TICKS);
                *next_audio += Duration::from_millis(20);
                n += 1;
                wrote = true;
            }
            if *next_audio <= now {
                *next_audio = now + Duration::from_millis(20);
            }
        }
        let interval = Duration::from_micros(1_000_000 / u64::from(shape.fps.max(1)));
        if !layers.is_empty() && *next_video <= now {
            for l in layers.iter_mut() {
                l.write_frame(&mut self.rtc, now, shape.fps, shape.keyframe_interval);
            }
            *next_video += interval;
            if *next_video <= now {
                *next_video = now + interval;
            }
            wrote = true;
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
                t.write(&mut self.rtc, now, p, i == last, true);
            }
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

/// Ask for a keyframe on `ssrc` when the decoder model wants one; whether it did.
fn request_keyframe(
    rtc: &mut Rtc,
    frames: &mut VideoRecv,
    ssrc: Option<Ssrc>,
    now: Instant,
) -> bool {
    let Some(ssrc) = ssrc else {
        return false;
    };
    if !frames.wants_keyframe(now) {
        return false;
    }
    match rtc.direct_api().stream_rx(&ssrc) {
        Some(rx) => {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            true
        }
        None => false,
    }
}

/// Hand one datagram to `rtc` (which the caller then drains).
fn feed(
    rtc: &mut Rtc,
    label: &str,
    local: SocketAddr,
    now: Instant,
    source: SocketAddr,
    data: &[u8],
) {
    let Ok(contents) = data.try_into() else {
        return;
    };
    let input = Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source,
            destination: local,
            contents,
        },
    );
    if let Err(e) = rtc.handle_input(input) {
        tracing::debug!(client = %label, error = %e, "input rejected");
    }
}

/// Is a datagram RTP (RFC 7983: first byte 128 to 191; RFC 5761: RTCP's packet types 192
/// to 223 in the second byte)?
fn is_rtp(d: &[u8]) -> bool {
    matches!(d, [128..=191, b1, ..] if !(192..=223).contains(b1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_is_told_from_rtcp_stun_and_dtls() {
        // RTP with marker and PT 96 / without marker PT 111; RTCP receiver report (201);
        // a STUN binding request; a DTLS handshake record.
        assert!(is_rtp(&[0x80, 0xe0, 0, 1]));
        assert!(is_rtp(&[0x90, 111, 0, 1]));
        assert!(!is_rtp(&[0x81, 201, 0, 7]));
        assert!(!is_rtp(&[0x00, 0x01, 0, 0]));
        assert!(!is_rtp(&[22, 0xfe, 0xfd]));
        assert!(!is_rtp(&[0x80]));
    }
}
