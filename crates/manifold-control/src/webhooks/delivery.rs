//! Webhook delivery: owns the per-URL bounded queue (newest dropped and counted when
//! full), the FIFO lanes a room's messages take in order, the sender tasks with their
//! retries (exponential backoff with jitter), and the counters `/stats` shows.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::hmac;
use manifold_api::RoomName;
use serde::Serialize;
use tokio::sync::mpsc;

use super::event::{WebhookEvent, body};
use super::signing::sign;
use super::{WebhookConfig, redact};

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
                let dropped = e.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // At the 1st, 2nd, 4th, 8th... drop: a dead receiver under a flood of events
                // must not flood the log too (the counter has every one).
                if dropped.is_power_of_two() {
                    tracing::warn!(url = %e.shown, kind = event.kind(), %room, dropped, "webhook queue full: message dropped");
                }
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
}
