//! Webhooks: owns what the control plane tells an operator's application about rooms,
//! participants and tracks on this node, as signed JSON messages POSTed to configured URLs.
//!
//! The events are raised where the control plane learns them (`state.rs`: the directory
//! for rooms, the roster for participants and tracks), on the node where they happen. Raising
//! one costs a small JSON serialisation and a channel send per URL; nothing waits, so
//! signaling and media never feel a slow or dead receiver.
//!
//! Delivery, per URL: messages go to one of `lanes` FIFO queues chosen by a hash of the room
//! name, and each lane has one sender task that delivers its queue in order, retrying a
//! message (connection errors, timeouts, 5xx, 429) with exponential backoff and jitter until
//! it is delivered or has had `max_attempts` tries. A retrying room therefore holds back only
//! the rooms that share its lane, never reorders its own events, and never touches another
//! URL. At most `queue` messages wait per URL (over all its lanes, not counting the one each
//! lane is sending); past it the newest message is dropped and counted, so that what a
//! receiver has seen of a room stays an unbroken prefix of its history up to the gap.
//!
//! Signatures follow Standard Webhooks: `webhook-id`, `webhook-timestamp` (unix seconds of
//! the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! keyed by the decoded `whsec_` secret.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use manifold_api::protocol::{ParticipantInfo, TrackInfo};
use manifold_api::{LeaveReason, RoomName, TrackId};
use serde::Serialize;
use tokio::sync::mpsc;

/// The most URLs `[webhooks] urls` may name.
pub const MAX_URLS: usize = 16;
/// The most lanes per URL.
pub const MAX_LANES: usize = 64;
/// Standard Webhooks' bounds on a secret's decoded length, in bytes.
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// Where and how to deliver webhooks.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Receivers; empty turns webhooks off.
    pub urls: Vec<reqwest::Url>,
    /// The decoded signing key ([`parse_secret`]).
    pub secret: Vec<u8>,
    /// Messages that may wait per URL.
    pub queue: usize,
    /// FIFO lanes (sender tasks) per URL; a room always uses the same one.
    pub lanes: usize,
    /// Tries per message, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one...
    pub backoff_base: Duration,
    /// ... up to this.
    pub backoff_max: Duration,
    /// One attempt's limit, connection included.
    pub request_timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            secret: Vec::new(),
            queue: 1024,
            lanes: 4,
            max_attempts: 8,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, nor credentials a URL may carry.
        let urls: Vec<String> = self.urls.iter().map(redact).collect();
        f.debug_struct("WebhookConfig")
            .field("urls", &urls)
            .field("secret", &"<redacted>")
            .field("queue", &self.queue)
            .field("lanes", &self.lanes)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Why a `[webhooks]` setting was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum WebhookConfigError {
    /// The secret lacks the `whsec_` prefix.
    #[error("webhooks.secret must start with whsec_ (Standard Webhooks form)")]
    SecretPrefix,
    /// What follows the prefix is not base64.
    #[error("webhooks.secret is not base64 after whsec_")]
    SecretEncoding,
    /// The decoded secret is too short or too long.
    #[error("webhooks.secret decodes to {0} bytes; it must be 24 to 64")]
    SecretLength(usize),
    /// URLs are configured without a secret.
    #[error("webhooks.secret is required when webhooks.urls is set")]
    SecretMissing,
    /// A URL does not parse or is not http(s).
    #[error("webhooks.urls: {0}")]
    Url(String),
    /// A numeric setting is out of range.
    #[error("webhooks.{0}")]
    Range(&'static str),
}

/// Decode a Standard Webhooks secret, `whsec_` then base64 of 24 to 64 bytes.
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, WebhookConfigError> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or(WebhookConfigError::SecretPrefix)?;
    // A bound before decoding: 64 bytes are 88 base64 characters.
    if b64.len() > 128 {
        return Err(WebhookConfigError::SecretLength(b64.len() * 3 / 4));
    }
    let key = BASE64
        .decode(b64)
        .map_err(|_| WebhookConfigError::SecretEncoding)?;
    if !SECRET_BYTES.contains(&key.len()) {
        return Err(WebhookConfigError::SecretLength(key.len()));
    }
    Ok(key)
}

/// Parse a receiver's URL: absolute, `http` or `https`.
pub fn parse_url(url: &str) -> Result<reqwest::Url, WebhookConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        WebhookConfigError::Url(format!(
            "{}: {e}",
            manifold_cluster::redact_url(url.split('?').next().unwrap_or(""))
        ))
    })?;
    match parsed.scheme() {
        "http" => Ok(parsed),
        // reqwest is built without TLS here (its rustls features would bring a second
        // crypto stack); a plain-HTTP receiver behind a local TLS-terminating proxy works.
        "https" => Err(WebhookConfigError::Url(format!(
            "{}: https receivers are not supported yet; use http:// (e.g. through a local proxy)",
            redact(&parsed)
        ))),
        other => Err(WebhookConfigError::Url(format!(
            "{}: scheme {other} is not http",
            redact(&parsed)
        ))),
    }
}

impl WebhookConfig {
    /// Check the numeric settings and that a secret comes with URLs.
    pub fn validate(&self) -> Result<(), WebhookConfigError> {
        if self.urls.len() > MAX_URLS {
            return Err(WebhookConfigError::Url(format!(
                "{} URLs; at most {MAX_URLS}",
                self.urls.len()
            )));
        }
        if !self.urls.is_empty() && self.secret.is_empty() {
            return Err(WebhookConfigError::SecretMissing);
        }
        if self.queue == 0 || self.queue > 1 << 20 {
            return Err(WebhookConfigError::Range("queue must be 1 to 1048576"));
        }
        if self.lanes == 0 || self.lanes > MAX_LANES {
            return Err(WebhookConfigError::Range("lanes must be 1 to 64"));
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(WebhookConfigError::Range("max_attempts must be 1 to 100"));
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return Err(WebhookConfigError::Range(
                "backoff_base_ms must be at least 1 and backoff_max_ms at least backoff_base_ms",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(WebhookConfigError::Range(
                "request_timeout_ms must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `HMAC-SHA256("{id}.{timestamp}.{body}")` keyed by `key`, as a `webhook-signature` value.
pub fn sign(key: &hmac::Key, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", BASE64.encode(ctx.sign().as_ref()))
}

/// Something that happened in a room on this node.
#[derive(Clone, Copy, Debug)]
pub enum WebhookEvent<'a> {
    /// The room's first session on this node (publisher, player or room participant).
    RoomStarted,
    /// Its last session on this node ended.
    RoomFinished,
    /// A participant others see joined (room participant or WHIP publisher).
    ParticipantJoined(&'a ParticipantInfo),
    /// It left, for this reason.
    ParticipantLeft(&'a ParticipantInfo, LeaveReason),
    /// It published a track.
    TrackPublished(&'a ParticipantInfo, &'a TrackInfo),
    /// It stopped publishing one.
    TrackUnpublished(&'a ParticipantInfo, TrackId),
}

impl WebhookEvent<'_> {
    /// The message's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            WebhookEvent::RoomStarted => "room_started",
            WebhookEvent::RoomFinished => "room_finished",
            WebhookEvent::ParticipantJoined(_) => "participant_joined",
            WebhookEvent::ParticipantLeft(..) => "participant_left",
            WebhookEvent::TrackPublished(..) => "track_published",
            WebhookEvent::TrackUnpublished(..) => "track_unpublished",
        }
    }
}

/// The JSON body (see docs/webhooks.md).
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// RFC 3339, UTC, milliseconds.
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    room: &'a str,
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    participant: Option<Participant<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    track: Option<Track<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Participant<'a> {
    id: String,
    identity: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct Track<'a> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a manifold_api::MediaKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a manifold_api::protocol::TrackSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    muted: Option<bool>,
}

fn participant(p: &ParticipantInfo) -> Participant<'_> {
    Participant {
        id: p.id.to_string(),
        identity: p.identity.as_str(),
        name: &p.name,
    }
}

/// The body of `event` in `room` on `node`, at `now`.
fn body(room: &RoomName, node: &str, event: WebhookEvent<'_>, now: SystemTime) -> String {
    let (who, track, reason) = match event {
        WebhookEvent::RoomStarted | WebhookEvent::RoomFinished => (None, None, None),
        WebhookEvent::ParticipantJoined(p) => (Some(participant(p)), None, None),
        WebhookEvent::ParticipantLeft(p, why) => (Some(participant(p)), None, Some(why.as_str())),
        WebhookEvent::TrackPublished(p, t) => (
            Some(participant(p)),
            Some(Track {
                id: t.id.to_string(),
                kind: Some(&t.kind),
                source: Some(&t.source),
                name: Some(&t.name),
                muted: Some(t.muted),
            }),
            None,
        ),
        WebhookEvent::TrackUnpublished(p, id) => (
            Some(participant(p)),
            Some(Track {
                id: id.to_string(),
                kind: None,
                source: None,
                name: None,
                muted: None,
            }),
            None,
        ),
    };
    let body = Body {
        kind: event.kind(),
        timestamp: humantime::format_rfc3339_millis(now).to_string(),
        data: Data {
            room: room.as_str(),
            node,
            participant: who,
            track,
            reason,
        },
    };
    // Strings and numbers only: serialising cannot fail.
    serde_json::to_string(&body).expect("webhook body serialises")
}

/// One message, shared by every URL's queue.
#[derive(Debug)]
struct Message {
    /// `msg_` and 32 hex digits; the same for every attempt and URL.
    id: String,
    body: String,
}

/// What happened to one URL's messages (or all of them: [`Webhooks::snapshot`]).
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Accepted into a queue.
    pub queued: AtomicU64,
    /// Answered with a 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed and were tried again.
    pub retried: AtomicU64,
    /// Given up: `max_attempts` tries failed, or the receiver refused it (4xx but 429).
    pub failed: AtomicU64,
    /// Refused because the URL's queue was full.
    pub dropped: AtomicU64,
}

/// A copy of [`WebhookCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WebhookCountersSnapshot {
    pub queued: u64,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    pub dropped: u64,
    /// Messages waiting now.
    pub pending: u64,
}

impl WebhookCounters {
    /// Their values now (`pending` left at 0).
    pub fn snapshot(&self) -> WebhookCountersSnapshot {
        WebhookCountersSnapshot {
            queued: self.queued.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            pending: 0,
        }
    }
}

impl WebhookCountersSnapshot {
    fn add(&mut self, o: &WebhookCountersSnapshot) {
        self.queued += o.queued;
        self.delivered += o.delivered;
        self.retried += o.retried;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.pending += o.pending;
    }
}

/// One receiver.
struct Endpoint {
    url: reqwest::Url,
    /// Its URL for logs and stats: no credentials, no query.
    shown: String,
    counters: WebhookCounters,
    /// Messages waiting in its lanes.
    pending: AtomicUsize,
    lanes: Vec<mpsc::UnboundedSender<Arc<Message>>>,
}

struct Shared {
    config: WebhookConfig,
    key: hmac::Key,
    node: String,
    endpoints: Vec<Endpoint>,
    /// The lanes' receivers until [`Webhooks::start`] hands them to their tasks.
    receivers: Mutex<Vec<(usize, mpsc::UnboundedReceiver<Arc<Message>>)>>,
}

/// Raises webhooks; cheap to clone. Off (every call returns at once) without URLs.
#[derive(Clone, Default)]
pub struct Webhooks(Option<Arc<Shared>>);

impl Webhooks {
    /// Webhooks per `config` for node `node`; nothing is sent before [`Webhooks::start`].
    pub fn new(config: &WebhookConfig, node: &str) -> Webhooks {
        if config.urls.is_empty() {
            return Webhooks(None);
        }
        let mut receivers = Vec::new();
        let endpoints = config
            .urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let lanes = (0..config.lanes.max(1))
                    .map(|_| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        receivers.push((i, rx));
                        tx
                    })
                    .collect();
                Endpoint {
                    url: url.clone(),
                    shown: redact(url),
                    counters: WebhookCounters::default(),
                    pending: AtomicUsize::new(0),
                    lanes,
                }
            })
            .collect();
        Webhooks(Some(Arc::new(Shared {
            key: hmac::Key::new(hmac::HMAC_SHA256, &config.secret),
            config: config.clone(),
            node: node.to_owned(),
            endpoints,
            receivers: Mutex::new(receivers),
        })))
    }

    /// Start the sender tasks (one per lane per URL) on the current tokio runtime. Later
    /// calls start nothing.
    pub fn start(&self) -> Result<(), String> {
        let Some(shared) = &self.0 else {
            return Ok(());
        };
        let client = reqwest::Client::builder()
            .timeout(shared.config.request_timeout)
            .connect_timeout(shared.config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("manifold-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhooks: HTTP client: {e}"))?;
        let receivers = std::mem::take(&mut *shared.receivers.lock().unwrap_or_else(|p| {
            // A panic elsewhere while holding it left a plain Vec behind: still usable.
            p.into_inner()
        }));
        for (endpoint, rx) in receivers {
            tokio::spawn(run_lane(shared.clone(), client.clone(), endpoint, rx));
        }
        Ok(())
    }

    /// Whether any URL is configured.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Queue `event` of `room` for every URL. Never waits.
    pub fn emit(&self, room: &RoomName, event: WebhookEvent<'_>) {
        let Some(shared) = &self.0 else {
            return;
        };
        let message = Arc::new(Message {
            id: format!("msg_{:032x}", rand::random::<u128>()),
            body: body(room, &shared.node, event, SystemTime::now()),
        });
        let lane = lane_of(room, shared.config.lanes);
        for e in &shared.endpoints {
            let limit = shared.config.queue;
            if e.pending.fetch_add(1, Ordering::AcqRel) >= limit {
                e.pending.fetch_sub(1, Ordering::AcqRel);
                e.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %e.shown, kind = event.kind(), %room, "webhook queue full: message dropped");
                continue;
            }
            if e.lanes[lane].send(message.clone()).is_err() {
                // Its task is gone (the runtime is stopping).
                e.pending.fetch_sub(1, Ordering::AcqRel);
                e.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            e.counters.queued.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counters per URL and their total, for `/stats` and `/metrics`.
    pub fn snapshot(&self) -> WebhookSnapshot {
        let mut snap = WebhookSnapshot::default();
        if let Some(shared) = &self.0 {
            for e in &shared.endpoints {
                let mut c = e.counters.snapshot();
                c.pending = e.pending.load(Ordering::Relaxed) as u64;
                snap.total.add(&c);
                snap.urls.push(UrlCounters {
                    url: e.shown.clone(),
                    counters: c,
                });
            }
        }
        snap
    }
}

/// Counters of every URL.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WebhookSnapshot {
    /// Over all URLs.
    pub total: WebhookCountersSnapshot,
    /// Per URL, in configuration order.
    pub urls: Vec<UrlCounters>,
}

/// One URL's counters.
#[derive(Clone, Debug, Serialize)]
pub struct UrlCounters {
    /// Without credentials or query.
    pub url: String,
    #[serde(flatten)]
    pub counters: WebhookCountersSnapshot,
}

/// The lane a room's messages take: FNV-1a of its name (stable, not secret: an attacker
/// choosing room names can only crowd its own lane).
fn lane_of(room: &RoomName, lanes: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_str().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % lanes.max(1) as u64) as usize
}

/// A URL for logs: no userinfo, no query or fragment.
fn redact(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    manifold_cluster::redact_url(shown.as_str())
}

/// One lane: deliver its messages in order, each to the end (delivered or given up).
async fn run_lane(
    shared: Arc<Shared>,
    client: reqwest::Client,
    endpoint: usize,
    mut rx: mpsc::UnboundedReceiver<Arc<Message>>,
) {
    let e = &shared.endpoints[endpoint];
    while let Some(message) = rx.recv().await {
        e.pending.fetch_sub(1, Ordering::AcqRel);
        deliver(&shared, &client, e, &message).await;
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Worth another try (connection error, timeout, 5xx, 429).
    Retry(String),
    /// The receiver refused it for good (another 4xx, or a redirect).
    Refused(u16),
}

async fn deliver(shared: &Shared, client: &reqwest::Client, e: &Endpoint, message: &Message) {
    let config = &shared.config;
    for attempt in 1..=config.max_attempts {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = sign(&shared.key, &message.id, timestamp, message.body.as_bytes());
        let sent = client
            .post(e.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone())
            .send()
            .await;
        let outcome = match sent {
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                Attempt::Retry(format!("status {}", r.status().as_u16()))
            }
            Ok(r) => Attempt::Refused(r.status().as_u16()),
            Err(err) if err.is_timeout() => Attempt::Retry("timed out".into()),
            Err(err) => Attempt::Retry(without_url(&err)),
        };
        match outcome {
            Attempt::Delivered => {
                e.counters.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Attempt::Refused(status) => {
                e.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %e.shown, id = %message.id, status, "webhook refused by its receiver: not retried");
                return;
            }
            Attempt::Retry(why) if attempt < config.max_attempts => {
                e.counters.retried.fetch_add(1, Ordering::Relaxed);
                let wait = backoff(config, attempt);
                tracing::debug!(url = %e.shown, id = %message.id, attempt, error = %why, ?wait, "webhook attempt failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Attempt::Retry(why) => {
                e.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %e.shown, id = %message.id, attempts = attempt, error = %why, "webhook given up");
            }
        }
    }
}

/// reqwest's error text without the URL it names (which may carry credentials).
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    if err.is_connect() {
        text = format!("connection failed ({text})");
    }
    text
}

/// The wait after failed attempt `attempt` (1-based): `base · 2^(attempt-1)`, at most
/// `max`, then a random point in its upper half so that retries of many lanes spread out.
fn backoff(config: &WebhookConfig, attempt: u32) -> Duration {
    let doubled = config
        .backoff_base
        .saturating_mul(1u32 << (attempt - 1).min(20));
    let wait = doubled.min(config.backoff_max);
    wait / 2 + wait.mul_f64(rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_example_signs_as_published() {
        // The Standard Webhooks specification's example (also in its reference
        // libraries' tests); checked independently with Python's hmac module.
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_refused_by_name() {
        assert_eq!(
            parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(WebhookConfigError::SecretPrefix)
        );
        assert_eq!(
            parse_secret("whsec_not*base64"),
            Err(WebhookConfigError::SecretEncoding)
        );
        assert_eq!(
            parse_secret("whsec_c2hvcnQ="),
            Err(WebhookConfigError::SecretLength(5))
        );
        let long = format!("whsec_{}", "A".repeat(4000));
        assert!(matches!(
            parse_secret(&long),
            Err(WebhookConfigError::SecretLength(_))
        ));
    }

    #[test]
    fn urls_must_be_http_and_never_print_credentials() {
        assert!(parse_url("http://127.0.0.1:9/hook").is_ok());
        assert!(matches!(
            parse_url("ftp://x/"),
            Err(WebhookConfigError::Url(_))
        ));
        assert!(parse_url("not a url").is_err());
        let config = WebhookConfig {
            urls: vec![parse_url("http://ops:hunter2@hooks.local/in?token=hunter3").unwrap()],
            secret: vec![7; 32],
            ..Default::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter"), "{printed}");
        assert!(!printed.contains("[7, 7"), "{printed}");
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let ok = WebhookConfig {
            urls: vec![parse_url("http://127.0.0.1:9/").unwrap()],
            secret: vec![1; 24],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        for bad in [
            WebhookConfig {
                secret: Vec::new(),
                ..ok.clone()
            },
            WebhookConfig {
                queue: 0,
                ..ok.clone()
            },
            WebhookConfig {
                lanes: 0,
                ..ok.clone()
            },
            WebhookConfig {
                max_attempts: 0,
                ..ok.clone()
            },
            WebhookConfig {
                backoff_max: Duration::from_millis(1),
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
        let config = WebhookConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..Default::default()
        };
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            let w = backoff(&config, attempt);
            let full = Duration::from_millis(full);
            assert!(w >= full / 2 && w <= full, "attempt {attempt}: {w:?}");
        }
    }

    #[test]
    fn a_room_keeps_its_lane() {
        let a = RoomName::parse("alpha").unwrap();
        assert_eq!(lane_of(&a, 4), lane_of(&a, 4));
        assert!(lane_of(&a, 4) < 4);
        let lanes: std::collections::HashSet<usize> = (0..64)
            .map(|i| lane_of(&RoomName::parse(&format!("room-{i}")).unwrap(), 4))
            .collect();
        assert_eq!(lanes.len(), 4, "rooms spread over every lane");
    }

    #[test]
    fn bodies_carry_type_room_participant_and_track() {
        let p = ParticipantInfo {
            id: manifold_api::ParticipantId(7),
            identity: manifold_api::Identity::parse("alice").unwrap(),
            name: "Alice".into(),
            metadata: serde_json::json!({"big": "not sent"}),
            tracks: Vec::new(),
        };
        let room = RoomName::parse("demo").unwrap();
        let b: serde_json::Value = serde_json::from_str(&body(
            &room,
            "local",
            WebhookEvent::ParticipantLeft(&p, LeaveReason::Kicked),
            SystemTime::UNIX_EPOCH,
        ))
        .unwrap();
        assert_eq!(b["type"], "participant_left");
        assert_eq!(b["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(b["data"]["room"], "demo");
        assert_eq!(b["data"]["participant"]["identity"], "alice");
        assert_eq!(b["data"]["reason"], "kicked");
        assert!(b["data"]["participant"].get("metadata").is_none());
        assert!(b["data"].get("track").is_none());
    }
}
