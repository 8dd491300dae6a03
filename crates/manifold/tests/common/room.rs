//! A room-protocol client for tests: a str0m `Rtc` that answers the server's offers, sends
//! media on the m-lines it publishes on, and counts what arrives on the ones it receives,
//! all driven by one tokio task; plus the WebSocket. Tests drive it with [`RoomClient`]
//! methods and read its [`State`].
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What arrived on one received track.
#[derive(Clone, Debug, Default)]
pub struct Received {
    pub packets: u64,
    pub distinct: std::collections::BTreeSet<u32>,
    pub ssrcs: Vec<u32>,
    /// Outgoing (rewritten) sequence numbers in arrival order.
    pub seqs: Vec<u64>,
}

/// Everything a test may look at.
#[derive(Debug, Default)]
pub struct State {
    /// Every server message, in order.
    pub messages: Vec<Value>,
    pub participant: Option<String>,
    pub resume_token: Option<String>,
    /// Participant id → info JSON (from joined/participant_joined/updated).
    pub participants: HashMap<String, Value>,
    /// Track id → (publisher id, info JSON).
    pub tracks: HashMap<String, (String, Value)>,
    /// cid → track id (from `published`).
    pub published: HashMap<String, String>,
    /// Received media by track id.
    pub received: HashMap<String, Received>,
    /// Packets sent per cid.
    pub sent: HashMap<String, u64>,
    pub offers_answered: u64,
    pub connected: bool,
    pub closed: Option<Value>,
    pub errors: Vec<Value>,
    pub chats: Vec<Value>,
}

enum Cmd {
    Send(Value),
    Publish {
        cid: String,
        kind: &'static str,
        source: &'static str,
    },
    DropSocket,
    Shutdown,
}

pub struct RoomClient {
    pub state: Arc<Mutex<State>>,
    cmd: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl RoomClient {
    /// Connect to `ws_url` (ws://host/rtc) and send `join`.
    pub async fn join(ws_url: &str, room: &str, identity: &str, extra: Value) -> RoomClient {
        let state = Arc::new(Mutex::new(State::default()));
        let (cmd, rx) = mpsc::unbounded_channel();
        let mut join = json!({"v": 1, "type": "join", "id": "join", "room": room, "identity": identity, "name": identity});
        if let (Some(obj), Some(extra)) = (join.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        let task = tokio::spawn(run(ws_url.to_owned(), join, state.clone(), rx));
        RoomClient { state, cmd, task }
    }

    pub fn send(&self, msg: Value) {
        let _ = self.cmd.send(Cmd::Send(msg));
    }

    /// Ask to publish a synthetic track.
    pub fn publish(&self, cid: &str, kind: &'static str, source: &'static str) {
        let _ = self.cmd.send(Cmd::Publish {
            cid: cid.into(),
            kind,
            source,
        });
    }

    /// Close the WebSocket abruptly (no `leave`), then reconnect and `resume`.
    pub fn drop_socket(&self) {
        let _ = self.cmd.send(Cmd::DropSocket);
    }

    pub async fn shutdown(self) {
        let _ = self.cmd.send(Cmd::Shutdown);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    pub fn with<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.lock().unwrap())
    }

    pub fn id(&self) -> String {
        self.with(|s| s.participant.clone().unwrap_or_default())
    }

    /// Wait (polling) until `f` holds; panics with `what` after `limit`.
    pub async fn wait(&self, what: &str, limit: Duration, f: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if self.with(&f) {
                return;
            }
            if Instant::now() > deadline {
                let dump = self.with(|s| {
                    format!(
                        "participant {:?}\nlast messages: {:#?}\nreceived: {:?}\nerrors: {:?}",
                        s.participant,
                        s.messages.iter().rev().take(8).collect::<Vec<_>>(),
                        s.received
                            .iter()
                            .map(|(k, v)| (k.clone(), v.packets))
                            .collect::<Vec<_>>(),
                        s.errors
                    )
                });
                panic!("timed out waiting for {what}\n{dump}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Packets received so far on the track `track`.
    pub fn received(&self, track: &str) -> u64 {
        self.with(|s| s.received.get(track).map_or(0, |r| r.packets))
    }
}

struct Publishing {
    cid: String,
    kind: MediaKind,
    mid: Option<Mid>,
    counter: u32,
    seq: u64,
    ts: u64,
}

struct Inner {
    rtc: Rtc,
    socket: UdpSocket,
    /// A non-blocking clone for sending: a fresh tokio socket refuses `try_send_to` until
    /// the reactor has seen it writable.
    sender: std::net::UdpSocket,
    local: SocketAddr,
    mids: HashMap<Mid, Value>,
    ssrc_mid: HashMap<Ssrc, Mid>,
    publishing: Vec<Publishing>,
    state: Arc<Mutex<State>>,
    next_media: Instant,
    frame: u64,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    ws
}

async fn run(
    url: String,
    join: Value,
    state: Arc<Mutex<State>>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std_socket.set_nonblocking(true).unwrap();
    let sender = std_socket.try_clone().unwrap();
    let socket = UdpSocket::from_std(std_socket).unwrap();
    let local = socket.local_addr().unwrap();
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut inner = Inner {
        rtc,
        socket,
        sender,
        local,
        mids: HashMap::new(),
        ssrc_mid: HashMap::new(),
        publishing: Vec::new(),
        state: state.clone(),
        next_media: Instant::now(),
        frame: 0,
    };
    let mut ws = connect(&url).await;
    super::capture::capture("room-message", join.to_string().as_bytes());
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let mut timeout = inner.drain();
    loop {
        let wake = timeout.min(inner.next_media);
        tokio::select! {
            msg = ws.next() => {
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
                        for reply in inner.on_message(v) {
                            super::capture::capture("room-message", reply.to_string().as_bytes());
                            let _ = ws.send(Message::Text(reply.to_string().into())).await;
                        }
                        timeout = inner.drain();
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let mut s = state.lock().unwrap();
                        if s.closed.is_none() {
                            s.closed = Some(json!({"close": frame.map(|f| u16::from(f.code))}));
                        }
                        drop(s);
                        return;
                    }
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => return,
                }
            }
            r = inner.socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = r {
                    if let Ok(contents) = buf[..n].try_into() {
                        let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: inner.local, contents });
                        let _ = inner.rtc.handle_input(input);
                    }
                    timeout = inner.drain();
                }
            }
            cmd = rx.recv() => {
                match cmd {
                    Some(Cmd::Send(v)) => {
                        super::capture::capture("room-message", v.to_string().as_bytes());
                        let _ = ws.send(Message::Text(v.to_string().into())).await;
                    }
                    Some(Cmd::Publish { cid, kind, source }) => {
                        inner.publishing.push(Publishing {
                            cid: cid.clone(),
                            kind: if kind == "audio" { MediaKind::Audio } else { MediaKind::Video },
                            mid: None, counter: 0, seq: 1, ts: 1000,
                        });
                        let msg = json!({"v": 1, "type": "publish", "id": cid, "cid": cid, "kind": kind, "source": source});
                        super::capture::capture("room-message", msg.to_string().as_bytes());
                        let _ = ws.send(Message::Text(msg.to_string().into())).await;
                    }
                    Some(Cmd::DropSocket) => {
                        drop(ws);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        ws = connect(&url).await;
                        let (p, t) = {
                            let s = state.lock().unwrap();
                            (s.participant.clone().unwrap(), s.resume_token.clone().unwrap())
                        };
                        let resume = json!({"v": 1, "type": "resume", "id": "resume", "participant": p, "resume_token": t});
                        ws.send(Message::Text(resume.to_string().into())).await.unwrap();
                    }
                    Some(Cmd::Shutdown) | None => {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = Instant::now();
                // Every tick, not only at the Rtc's own deadline: after accepting an offer
                // str0m arms its first ICE check only once it is given a time.
                let _ = inner.rtc.handle_input(Input::Timeout(now));
                if now >= inner.next_media {
                    inner.send_media(now);
                }
                timeout = inner.drain();
            }
        }
    }
}

impl Inner {
    fn drain(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Transmit(t)) => {
                    let _ = self.sender.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(_) => return Instant::now() + Duration::from_secs(1),
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.state.lock().unwrap().connected = true,
            Event::RtpPacket(p) => {
                let ssrc = p.header.ssrc;
                let mid = match self.ssrc_mid.get(&ssrc) {
                    Some(m) => *m,
                    None => {
                        let Some(mid) = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid())
                        else {
                            return;
                        };
                        self.ssrc_mid.insert(ssrc, mid);
                        mid
                    }
                };
                let Some(track) = self.mids.get(&mid).and_then(|m| m["track"].as_str()) else {
                    return;
                };
                let counter = p
                    .payload
                    .get(4..8)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                let mut s = self.state.lock().unwrap();
                let r = s.received.entry(track.to_owned()).or_default();
                r.packets += 1;
                r.distinct.insert(counter);
                r.seqs.push(*p.seq_no);
                let ssrc: u32 = *ssrc;
                if !r.ssrcs.contains(&ssrc) {
                    r.ssrcs.push(ssrc);
                }
            }
            _ => {}
        }
    }

    fn on_message(&mut self, v: Value) -> Vec<Value> {
        let mut replies = Vec::new();
        let mut s = self.state.lock().unwrap();
        s.messages.push(v.clone());
        match v["type"].as_str().unwrap_or("") {
            "joined" | "resumed" => {
                s.participant = v["participant"]["id"].as_str().map(str::to_owned);
                s.resume_token = v["resume_token"].as_str().map(str::to_owned);
                for p in v["participants"].as_array().into_iter().flatten() {
                    let id = p["id"].as_str().unwrap().to_owned();
                    for t in p["tracks"].as_array().into_iter().flatten() {
                        s.tracks.insert(
                            t["id"].as_str().unwrap().to_owned(),
                            (id.clone(), t.clone()),
                        );
                    }
                    s.participants.insert(id, p.clone());
                }
            }
            "participant_joined" | "participant_updated" => {
                let p = v["participant"].clone();
                s.participants
                    .insert(p["id"].as_str().unwrap().to_owned(), p);
            }
            "participant_left" => {
                let id = v["participant"].as_str().unwrap().to_owned();
                s.participants.remove(&id);
                s.tracks.retain(|_, (owner, _)| *owner != id);
            }
            "track_published" => {
                let owner = v["participant"].as_str().unwrap().to_owned();
                let t = v["track"].clone();
                s.tracks
                    .insert(t["id"].as_str().unwrap().to_owned(), (owner, t));
            }
            "track_unpublished" => {
                s.tracks.remove(v["track"].as_str().unwrap());
            }
            "track_muted" => {
                if let Some((_, t)) = s.tracks.get_mut(v["track"].as_str().unwrap()) {
                    t["muted"] = v["muted"].clone();
                }
            }
            "published" => {
                s.published.insert(
                    v["cid"].as_str().unwrap().to_owned(),
                    v["track"].as_str().unwrap().to_owned(),
                );
            }
            "chat" => s.chats.push(v.clone()),
            "error" => s.errors.push(v.clone()),
            "closing" => s.closed = Some(v.clone()),
            "offer" => {
                let offer_id = v["offer_id"].as_u64().unwrap();
                let offer = SdpOffer::from_sdp_string(v["sdp"].as_str().unwrap())
                    .expect("server offer parses");
                drop(s);
                let answer = self
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .expect("client accepts the offer");
                let mut s = self.state.lock().unwrap();
                s.offers_answered += 1;
                for m in v["mids"].as_array().into_iter().flatten() {
                    let mid = Mid::from(m["mid"].as_str().unwrap());
                    self.mids.insert(mid, m.clone());
                    if let Some(cid) = m["cid"].as_str()
                        && let Some(p) = self.publishing.iter_mut().find(|p| p.cid == cid)
                    {
                        p.mid = Some(mid);
                    }
                }
                replies.push(json!({"v": 1, "type": "answer", "offer_id": offer_id, "sdp": answer.to_sdp_string()}));
            }
            _ => {}
        }
        replies
    }

    fn send_media(&mut self, now: Instant) {
        self.frame += 1;
        // 50 ticks a second: audio every tick, video every other (25 fps).
        self.next_media = now + Duration::from_millis(20);
        let mut sent = Vec::new();
        for p in &mut self.publishing {
            let Some(mid) = p.mid else { continue };
            if p.kind == MediaKind::Video && !self.frame.is_multiple_of(2) {
                continue;
            }
            let codec = if p.kind == MediaKind::Audio {
                Codec::Opus
            } else {
                Codec::Vp8
            };
            let Some(media) = self.rtc.media(mid) else {
                continue;
            };
            let remote: Vec<Pt> = media.remote_pts().to_vec();
            let Some(pt) = self
                .rtc
                .codec_config()
                .params()
                .iter()
                .find(|x| x.spec().codec == codec && remote.contains(&x.pt()))
                .map(|x| x.pt())
            else {
                continue;
            };
            let mut api = self.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                continue;
            };
            let packets = if p.kind == MediaKind::Audio { 1 } else { 2 };
            for i in 0..packets {
                let mut payload = vec![0u8; if p.kind == MediaKind::Audio { 60 } else { 800 }];
                if p.kind == MediaKind::Video {
                    // VP8 descriptor, S bit on the frame's first packet; every 25th frame a
                    // keyframe (P bit clear).
                    payload[0] = if i == 0 { 0x10 } else { 0 };
                    let key = self.frame.is_multiple_of(50) || p.counter < 2;
                    payload[1] = if key { 0x10 } else { 0x11 };
                } else {
                    payload[0] = 0xf8;
                }
                payload[4..8].copy_from_slice(&p.counter.to_be_bytes());
                p.counter += 1;
                tx.write_rtp(
                    RtpWrite::new(pt, p.seq.into(), p.ts as u32, now, payload)
                        .marker(i + 1 == packets)
                        .nackable(p.kind == MediaKind::Video),
                );
                p.seq += 1;
            }
            p.ts += if p.kind == MediaKind::Audio {
                960
            } else {
                3600
            };
            sent.push((p.cid.clone(), packets));
        }
        let mut s = self.state.lock().unwrap();
        for (cid, n) in sent {
            *s.sent.entry(cid).or_default() += n;
        }
    }
}
