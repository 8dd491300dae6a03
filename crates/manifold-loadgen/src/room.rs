//! Manifold's room protocol (`docs/protocol.md`) as a load target: a client joins over the
//! WebSocket at `/rtc`, publishes (publishers) or subscribes to one publisher's tracks
//! (subscribers), answers the server's offers until its media is negotiated, and then hands
//! its `Rtc` to the media engine like any other target's client.
//!
//! After the hand-off the socket stays open, pinged every 15 s, until the client leaves.
//! Offers that would arrive later (none do in these scenarios: subscribers pick their
//! tracks and publishers do not receive) are not answered.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use str0m::change::SdpOffer;
use str0m::media::{MediaKind, Mid};
use str0m::{Output, Rtc};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::signal::{Joined, MediaSpec, SignalError, host_candidates, new_rtc};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Keepalive interval (the server closes sockets silent for 60 s).
const PING_EVERY: Duration = Duration::from_secs(15);

/// The room protocol endpoint.
#[derive(Clone, Debug)]
pub struct RoomTarget {
    /// `ws://host:port/rtc`
    pub url: String,
    /// Access token, if the server wants one.
    pub token: Option<String>,
    /// Prefix of room names (`<prefix><index>`).
    pub room_prefix: String,
}

/// A joined room session: dropping the handle or calling [`RoomSession::leave`] ends it.
#[derive(Clone, Debug)]
pub struct RoomSession {
    leave: mpsc::UnboundedSender<()>,
}

impl RoomSession {
    /// Send `leave` and close the socket.
    pub fn leave(&self) {
        let _ = self.leave.send(());
    }
}

struct Conn {
    ws: Ws,
    rtc: Rtc,
    socket: std::net::UdpSocket,
    media: Vec<(Mid, MediaKind)>,
    last_offer: String,
    last_answer: String,
    started: Instant,
}

impl RoomTarget {
    /// `http(s)://host:port` (the server's base URL) → its `/rtc` endpoint.
    pub fn new(server: &str, token: Option<String>, room_prefix: String) -> Self {
        let base = server.trim_end_matches('/');
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}/rtc")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}/rtc")
        } else {
            format!("{base}/rtc")
        };
        RoomTarget {
            url: ws,
            token,
            room_prefix,
        }
    }

    /// Join as publisher `name` of room `room` and publish `spec`; returns the client, its
    /// session and the ids of its published tracks.
    pub async fn publish(
        &self,
        room: usize,
        name: &str,
        spec: MediaSpec,
        bind_ip: IpAddr,
    ) -> Result<(Joined, RoomSession, Vec<String>), SignalError> {
        let mut conn = self.connect(room, name, bind_ip).await?;
        let mut cids = Vec::new();
        if spec.audio {
            cids.push(("a", "audio", "microphone"));
        }
        if spec.video {
            cids.push(("v", "video", "camera"));
        }
        for (cid, kind, source) in &cids {
            conn.send(json!({"v": 1, "type": "publish", "id": cid, "cid": cid, "kind": kind, "source": source}))
                .await?;
        }
        let mut tracks = Vec::new();
        while tracks.len() < cids.len() {
            let msg = conn.next().await?;
            match msg["type"].as_str() {
                Some("offer") => conn.answer(&msg).await?,
                Some("published") => {
                    tracks.push(msg["track"].as_str().unwrap_or_default().to_owned())
                }
                _ => {}
            }
        }
        let (joined, session) = conn.hand_off(format!("{}{room}/{name}", self.room_prefix));
        Ok((joined, session, tracks))
    }

    /// Join as subscriber `name` of room `room` and receive `tracks`.
    pub async fn subscribe(
        &self,
        room: usize,
        name: &str,
        tracks: &[String],
        bind_ip: IpAddr,
    ) -> Result<(Joined, RoomSession), SignalError> {
        let mut conn = self.connect(room, name, bind_ip).await?;
        for t in tracks {
            conn.send(json!({"v": 1, "type": "subscribe", "id": t, "track": t}))
                .await?;
        }
        let mut mapped = 0;
        while mapped < tracks.len() {
            let msg = conn.next().await?;
            if msg["type"] == "offer" {
                conn.answer(&msg).await?;
                mapped = msg["mids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| {
                        m["track"]
                            .as_str()
                            .is_some_and(|t| tracks.iter().any(|x| x == t))
                    })
                    .count();
            }
        }
        let (joined, session) = conn.hand_off(format!("{}{room}/{name}", self.room_prefix));
        Ok((joined, session))
    }

    async fn connect(&self, room: usize, name: &str, bind_ip: IpAddr) -> Result<Conn, SignalError> {
        let started = Instant::now();
        let (ws, _) = tokio_tungstenite::connect_async(self.url.as_str())
            .await
            .map_err(|e| SignalError::Http(e.to_string()))?;
        let (rtc, socket) = new_rtc(bind_ip)?;
        let mut conn = Conn {
            ws,
            rtc,
            socket,
            media: Vec::new(),
            last_offer: String::new(),
            last_answer: String::new(),
            started,
        };
        let mut join = json!({
            "v": 1, "type": "join", "id": "join",
            "room": format!("{}{room}", self.room_prefix),
            "identity": name, "name": name, "auto_subscribe": false,
        });
        if let Some(t) = &self.token {
            join["token"] = json!(t);
        }
        conn.send(join).await?;
        // `joined`, then the first offer.
        loop {
            let msg = conn.next().await?;
            if msg["type"] == "offer" {
                conn.answer(&msg).await?;
                return Ok(conn);
            }
        }
    }
}

impl Conn {
    async fn send(&mut self, v: Value) -> Result<(), SignalError> {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .map_err(|e| SignalError::Http(e.to_string()))
    }

    /// The next server message; `error` and `closing` end the join.
    async fn next(&mut self) -> Result<Value, SignalError> {
        loop {
            let frame = self
                .ws
                .next()
                .await
                .ok_or_else(|| SignalError::Protocol("the server closed the socket".into()))?
                .map_err(|e| SignalError::Http(e.to_string()))?;
            let Message::Text(text) = frame else {
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str())
                .map_err(|e| SignalError::Protocol(format!("server sent bad JSON: {e}")))?;
            match v["type"].as_str() {
                Some("error") => {
                    return Err(SignalError::Protocol(format!(
                        "{}: {}",
                        v["code"].as_str().unwrap_or("error"),
                        v["message"].as_str().unwrap_or("")
                    )));
                }
                Some("closing") => {
                    return Err(SignalError::Protocol(format!(
                        "closed: {}",
                        v["reason"].as_str().unwrap_or("?")
                    )));
                }
                _ => return Ok(v),
            }
        }
    }

    /// Apply an offer, send the answer, and note which m-lines carry media.
    async fn answer(&mut self, offer: &Value) -> Result<(), SignalError> {
        let sdp = offer["sdp"].as_str().unwrap_or_default().to_owned();
        let parsed =
            SdpOffer::from_sdp_string(&sdp).map_err(|e| SignalError::Sdp(e.to_string()))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| SignalError::Sdp(e.to_string()))?
            .to_sdp_string();
        self.drain();
        for m in offer["mids"].as_array().into_iter().flatten() {
            let kind = match m["kind"].as_str() {
                Some("audio") => MediaKind::Audio,
                Some("video") => MediaKind::Video,
                _ => continue,
            };
            if m["cid"].is_null() && m["track"].is_null() {
                continue;
            }
            let mid = Mid::from(m["mid"].as_str().unwrap_or_default());
            if !self.media.iter().any(|(x, _)| *x == mid) {
                self.media.push((mid, kind));
            }
        }
        self.last_offer = sdp;
        self.last_answer = answer.clone();
        let offer_id = offer["offer_id"].clone();
        self.send(json!({"v": 1, "type": "answer", "offer_id": offer_id, "sdp": answer}))
            .await
    }

    /// Drain the `Rtc` after a change, as str0m requires: early ICE checks go out, events
    /// are of no use yet.
    fn drain(&mut self) {
        while let Ok(out) = self.rtc.poll_output() {
            match out {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Give the `Rtc` to the engine and keep the socket alive in a task of its own.
    fn hand_off(self, resource: String) -> (Joined, RoomSession) {
        let Conn {
            mut ws,
            rtc,
            socket,
            media,
            last_offer,
            last_answer,
            started,
        } = self;
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        tokio::spawn(async move {
            let mut ping = tokio::time::interval(PING_EVERY);
            ping.tick().await;
            loop {
                tokio::select! {
                    _ = ping.tick() => {
                        let msg = json!({"v": 1, "type": "ping"}).to_string();
                        if ws.send(Message::Text(msg.into())).await.is_err() {
                            return;
                        }
                    }
                    frame = ws.next() => {
                        if !matches!(frame, Some(Ok(_))) {
                            return;
                        }
                    }
                    _ = rx.recv() => {
                        let leave = json!({"v": 1, "type": "leave"}).to_string();
                        let _ = ws.send(Message::Text(leave.into())).await;
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            }
        });
        let joined = Joined {
            rtc,
            socket,
            resource,
            media,
            started,
            server_candidates: host_candidates(&last_offer),
            answer: last_answer,
        };
        (joined, RoomSession { leave: tx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_url_follows_the_server_url() {
        let t = RoomTarget::new("http://127.0.0.1:8080/", None, "lg".into());
        assert_eq!(t.url, "ws://127.0.0.1:8080/rtc");
        let t = RoomTarget::new("https://127.0.0.1:8443", None, "lg".into());
        assert_eq!(t.url, "wss://127.0.0.1:8443/rtc");
    }
}
