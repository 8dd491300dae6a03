//! The Janus VideoRoom plugin over the Janus HTTP API, as a loadgen target.
//!
//! One Janus session carries every client's plugin handle; one long-poll loop reads the
//! session's events (which also keeps it alive) and hands each to the request that waits
//! for it, matched by transaction. Publishers `joinandconfigure` with their offer and get
//! the answer as an event; subscribers `join` with the publisher's feed, get Janus's offer
//! as an event, and `start` with their answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::signal::{self, Joined, MediaSpec, Offering, SignalError};

/// Longest a long poll is left open (Janus answers after 30 s without events).
const LONG_POLL: Duration = Duration::from_secs(40);

/// A short request's timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// A Janus server's VideoRoom.
pub struct Janus {
    base: String,
    bitrate: u64,
    http: reqwest::Client,
    session: Mutex<Option<u64>>,
    control_handle: Mutex<Option<u64>>,
    room_base: u64,
    rooms: Mutex<Vec<u64>>,
    waiters: Waiters,
    next_tx: AtomicU64,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Janus {
    /// A target at `base` (e.g. `http://127.0.0.1:8088/janus`) whose rooms cap publishers at
    /// `bitrate` bits per second (REMB).
    pub fn new(base: String, bitrate: u64) -> Janus {
        Janus {
            base: base.trim_end_matches('/').to_owned(),
            bitrate,
            http: reqwest::Client::new(),
            session: Mutex::new(None),
            control_handle: Mutex::new(None),
            // Room ids of this run: random, so runs against one server do not collide.
            room_base: 1_000_000 + u64::from(rand::random::<u32>() % 1_000_000) * 1_000,
            rooms: Mutex::new(Vec::new()),
            waiters: Arc::new(Mutex::new(HashMap::new())),
            next_tx: AtomicU64::new(1),
            poller: Mutex::new(None),
        }
    }

    /// Create the session, start its event loop, and create `rooms` rooms.
    pub async fn prepare(&self, rooms: usize, publishers: usize) -> Result<(), SignalError> {
        let created = self.post(&self.base, json!({"janus": "create"})).await?;
        let session = data_id(&created)?;
        *self.session.lock().expect("not poisoned") = Some(session);
        let poller = tokio::spawn(poll_events(
            self.http.clone(),
            format!("{}/{session}", self.base),
            self.waiters.clone(),
        ));
        *self.poller.lock().expect("not poisoned") = Some(poller);

        let handle = self.attach().await?;
        *self.control_handle.lock().expect("not poisoned") = Some(handle);
        for r in 0..rooms {
            let room = self.room_id(r);
            let body = json!({
                "request": "create",
                "room": room,
                "description": format!("loadgen {r}"),
                "publishers": publishers.max(1),
                "bitrate": self.bitrate,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "fir_freq": 0,
            });
            let resp = self
                .post(
                    &self.handle_url(handle)?,
                    json!({"janus": "message", "body": body}),
                )
                .await?;
            plugin_error(&resp)?;
            self.rooms.lock().expect("not poisoned").push(room);
        }
        Ok(())
    }

    /// Publish into room `room`: returns the client, its handle and its feed id.
    pub async fn publish(
        &self,
        room: usize,
        name: &str,
        spec: MediaSpec,
        bind_ip: IpAddr,
    ) -> Result<(Joined, u64, u64), SignalError> {
        let offering = Offering::new(bind_ip, crate::signal::Offer::Send(spec))?;
        let handle = self.attach().await?;
        let body = json!({
            "request": "joinandconfigure",
            "room": self.room_id(room),
            "ptype": "publisher",
            "display": name,
            "audio": spec.audio,
            "video": spec.video,
        });
        let jsep = json!({"type": "offer", "sdp": offering.offer});
        let event = self.message_event(handle, body, Some(jsep)).await?;
        let feed = event
            .pointer("/plugindata/data/id")
            .and_then(Value::as_u64)
            .ok_or_else(|| SignalError::Protocol(format!("joined without an id: {event}")))?;
        let answer = jsep_sdp(&event, "answer")?;
        tracing::trace!(%name, offer = %offering.offer, %answer, "janus publisher negotiated");
        self.trickle_done(handle).await;
        let joined = offering.accept(&answer, handle.to_string())?;
        Ok((joined, handle, feed))
    }

    /// Subscribe to `feed` in room `room`: returns the client and its handle.
    pub async fn subscribe(
        &self,
        room: usize,
        feed: u64,
        bind_ip: IpAddr,
    ) -> Result<(Joined, u64), SignalError> {
        let started = Instant::now();
        let handle = self.attach().await?;
        let body = json!({
            "request": "join",
            "room": self.room_id(room),
            "ptype": "subscriber",
            "streams": [{"feed": feed}],
        });
        let event = self.message_event(handle, body, None).await?;
        let offer = jsep_sdp(&event, "offer")?;
        let (joined, answer) = signal::answer_offer(bind_ip, &offer, started, handle.to_string())?;
        tracing::trace!(feed, %offer, %answer, "janus subscriber negotiated");
        let jsep = json!({"type": "answer", "sdp": answer});
        self.message_event(handle, json!({"request": "start"}), Some(jsep))
            .await?;
        self.trickle_done(handle).await;
        Ok((joined, handle))
    }

    /// End a client's handle (and with it its PeerConnection).
    pub async fn detach(&self, handle: u64) -> Result<(), SignalError> {
        let resp = self
            .post(&self.handle_url(handle)?, json!({"janus": "detach"}))
            .await?;
        janus_error(&resp)
    }

    /// Destroy the rooms and the session, stop the event loop.
    pub async fn finish(&self) {
        let control = *self.control_handle.lock().expect("not poisoned");
        let rooms = std::mem::take(&mut *self.rooms.lock().expect("not poisoned"));
        if let Some(handle) = control
            && let Ok(url) = self.handle_url(handle)
        {
            for room in rooms {
                let body = json!({"request": "destroy", "room": room});
                let _ = self
                    .post(&url, json!({"janus": "message", "body": body}))
                    .await;
            }
        }
        let session = self.session.lock().expect("not poisoned").take();
        if let Some(session) = session {
            let url = format!("{}/{session}", self.base);
            let _ = self.post(&url, json!({"janus": "destroy"})).await;
        }
        if let Some(p) = self.poller.lock().expect("not poisoned").take() {
            p.abort();
        }
    }

    fn room_id(&self, room: usize) -> u64 {
        self.room_base + room as u64
    }

    fn session_url(&self) -> Result<String, SignalError> {
        let session = self
            .session
            .lock()
            .expect("not poisoned")
            .ok_or_else(|| SignalError::Protocol("no Janus session".into()))?;
        Ok(format!("{}/{session}", self.base))
    }

    fn handle_url(&self, handle: u64) -> Result<String, SignalError> {
        Ok(format!("{}/{handle}", self.session_url()?))
    }

    async fn attach(&self) -> Result<u64, SignalError> {
        let resp = self
            .post(
                &self.session_url()?,
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
            )
            .await?;
        data_id(&resp)
    }

    /// Send an asynchronous plugin message and wait for the event that answers it.
    async fn message_event(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, SignalError> {
        let tx = self.transaction();
        let (send, recv) = oneshot::channel();
        self.waiters
            .lock()
            .expect("not poisoned")
            .insert(tx.clone(), send);
        let mut msg = json!({"janus": "message", "transaction": tx, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let result = async {
            let resp = self.post_raw(&self.handle_url(handle)?, msg).await?;
            janus_error(&resp)?;
            let event = recv
                .await
                .map_err(|_| SignalError::Protocol("event loop ended".into()))?;
            plugin_error(&event)?;
            Ok(event)
        }
        .await;
        self.waiters.lock().expect("not poisoned").remove(&tx);
        result
    }

    async fn trickle_done(&self, handle: u64) {
        if let Ok(url) = self.handle_url(handle) {
            let _ = self
                .post(
                    &url,
                    json!({"janus": "trickle", "candidate": {"completed": true}}),
                )
                .await;
        }
    }

    fn transaction(&self) -> String {
        format!("lg{}", self.next_tx.fetch_add(1, Ordering::Relaxed))
    }

    /// POST with a fresh transaction; Janus errors become [`SignalError::Api`].
    async fn post(&self, url: &str, mut msg: Value) -> Result<Value, SignalError> {
        msg["transaction"] = Value::String(self.transaction());
        let v = self.post_raw(url, msg).await?;
        janus_error(&v)?;
        Ok(v)
    }

    async fn post_raw(&self, url: &str, msg: Value) -> Result<Value, SignalError> {
        let resp = self
            .http
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .json(&msg)
            .send()
            .await
            .map_err(|e| SignalError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(SignalError::Status {
                status,
                body: resp.text().await.unwrap_or_default(),
            });
        }
        resp.json()
            .await
            .map_err(|e| SignalError::Protocol(format!("not JSON: {e}")))
    }
}

/// Read the session's events until the session goes away, handing each to its waiter.
async fn poll_events(http: reqwest::Client, url: String, waiters: Waiters) {
    let mut failures = 0u32;
    loop {
        let got = async {
            http.get(format!("{url}?maxev=50"))
                .timeout(LONG_POLL)
                .send()
                .await?
                .error_for_status()?
                .json::<Value>()
                .await
        }
        .await;
        match got {
            Ok(v) => {
                failures = 0;
                let events = match v {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                for e in events {
                    let Some(tx) = e.get("transaction").and_then(Value::as_str) else {
                        continue;
                    };
                    // Acks and keepalives answer requests synchronously; events carry
                    // the plugin's answer.
                    if e.get("janus").and_then(Value::as_str) != Some("event") {
                        continue;
                    }
                    if let Some(w) = waiters.lock().expect("not poisoned").remove(tx) {
                        let _ = w.send(e);
                    }
                }
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, "janus long poll failed");
                if failures > 5 {
                    tracing::warn!("janus event loop gives up after repeated failures");
                    waiters.lock().expect("not poisoned").clear();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn data_id(v: &Value) -> Result<u64, SignalError> {
    v.pointer("/data/id")
        .and_then(Value::as_u64)
        .ok_or_else(|| SignalError::Protocol(format!("no id in {v}")))
}

fn janus_error(v: &Value) -> Result<(), SignalError> {
    if v.get("janus").and_then(Value::as_str) == Some("error") {
        return Err(SignalError::Api {
            code: v
                .pointer("/error/code")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            reason: v
                .pointer("/error/reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        });
    }
    Ok(())
}

fn plugin_error(v: &Value) -> Result<(), SignalError> {
    janus_error(v)?;
    if let Some(code) = v
        .pointer("/plugindata/data/error_code")
        .and_then(Value::as_i64)
    {
        return Err(SignalError::Api {
            code,
            reason: v
                .pointer("/plugindata/data/error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        });
    }
    Ok(())
}

fn jsep_sdp(event: &Value, kind: &str) -> Result<String, SignalError> {
    let jsep = event
        .get("jsep")
        .ok_or_else(|| SignalError::Protocol(format!("no jsep {kind} in {event}")))?;
    if jsep.get("type").and_then(Value::as_str) != Some(kind) {
        return Err(SignalError::Protocol(format!("expected a jsep {kind}")));
    }
    jsep.get("sdp")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| SignalError::Protocol("jsep without sdp".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn janus_and_plugin_errors_are_api_errors() {
        let e = json!({"janus": "error", "error": {"code": 458, "reason": "No such session"}});
        assert_eq!(janus_error(&e).unwrap_err().reason(), "api_458");
        let p = json!({"janus": "event", "plugindata": {"data": {"videoroom": "event",
            "error_code": 426, "error": "No such room"}}});
        assert_eq!(plugin_error(&p).unwrap_err().reason(), "api_426");
        assert!(plugin_error(&json!({"janus": "success"})).is_ok());
    }

    #[test]
    fn jsep_is_read_by_type() {
        let e = json!({"jsep": {"type": "offer", "sdp": "v=0"}});
        assert_eq!(jsep_sdp(&e, "offer").unwrap(), "v=0");
        assert!(jsep_sdp(&e, "answer").is_err());
        assert!(jsep_sdp(&json!({}), "offer").is_err());
    }
}
