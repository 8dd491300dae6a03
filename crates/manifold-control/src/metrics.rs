//! `GET /metrics`: the server's counters in the Prometheus text exposition format 0.0.4.
//! Owns the snapshot a scrape takes (asked of each media worker as `/stats` does, so a
//! scrape never touches a media thread's data) and its encoding through the `prometheus`
//! crate's `TextEncoder` (the classic format `promtool check metrics` accepts; the
//! `prometheus-client` crate writes OpenMetrics only).
//!
//! Per-room series are bounded: at most `[metrics] max_rooms` rooms are listed (the largest
//! first); the others are counted in `manifold_metrics_rooms_omitted`.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use manifold_api::{SessionKind, ShardStats};
use manifold_io::OverloadCounters;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use crate::error::ApiError;
use crate::sessions::{SessionQuery, bearer};
use crate::state::AppState;

/// The `Content-Type` of the text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rooms listed with their own series by default; the rest are counted, not listed.
pub const DEFAULT_MAX_ROOMS: usize = 100;

/// Bounds of the control plane's latency histograms, seconds: 1 ms to 10 s.
const CONTROL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Latencies the control plane observes where they happen: a session's set-up (the
/// request that creates it until its answer is sent) and each room-protocol message's
/// handling. Label values come from fixed sets (session kinds, message types).
pub struct ControlHistograms {
    join: prometheus::HistogramVec,
    ws_message: prometheus::HistogramVec,
}

impl Default for ControlHistograms {
    fn default() -> Self {
        let vec = |name: &str, help: &str, label: &str| {
            prometheus::HistogramVec::new(
                prometheus::HistogramOpts::new(name, help).buckets(CONTROL_BUCKETS.to_vec()),
                &[label],
            )
            .expect("a valid histogram definition")
        };
        let h = ControlHistograms {
            join: vec(
                "manifold_join_seconds",
                "Session set-up on the control plane: WHIP/WHEP POST to its 201, a room `join` to its `joined` (successful ones).",
                "kind",
            ),
            ws_message: vec(
                "manifold_ws_message_seconds",
                "Room-protocol message handling, from parsed to handled, by message type.",
                "type",
            ),
        };
        // Every series from the start, at zero: a rate() over its first observation then
        // has a sample before it to compare with.
        for kind in [SessionKind::Whip, SessionKind::Whep, SessionKind::Room] {
            h.join.with_label_values(&[kind_label(kind)]);
        }
        for kind in manifold_api::protocol::ClientMessage::KINDS {
            h.ws_message.with_label_values(&[kind]);
        }
        h
    }
}

fn kind_label(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Whip => "whip",
        SessionKind::Whep => "whep",
        SessionKind::Room => "room",
    }
}

impl ControlHistograms {
    /// A session of `kind` was set up in `d`.
    pub fn joined(&self, kind: SessionKind, d: std::time::Duration) {
        self.join
            .with_label_values(&[kind_label(kind)])
            .observe(d.as_secs_f64());
    }

    /// A room-protocol message of type `kind` (`ClientMessage::kind`) took `d`.
    pub fn ws_message(&self, kind: &'static str, d: std::time::Duration) {
        self.ws_message
            .with_label_values(&[kind])
            .observe(d.as_secs_f64());
    }

    fn families(&self) -> Vec<MetricFamily> {
        use prometheus::core::Collector;
        let mut all = self.join.collect();
        all.extend(self.ws_message.collect());
        all
    }
}

/// One worker's share of a scrape.
#[derive(Clone, Debug, Default)]
pub struct WorkerSnapshot {
    /// The shard's counters.
    pub stats: ShardStats,
    /// The io thread's queue and socket counters.
    pub overload: OverloadCounters,
    /// Nanoseconds spent working since start.
    pub busy_ns: u64,
    /// Commands waiting in its queue.
    pub command_queue: u64,
    /// Receive batch → its sends done.
    pub batch_latency: manifold_api::HistogramSnapshot,
    /// Bytes per room on this worker.
    pub traffic: Vec<manifold_api::RoomTraffic>,
}

/// One room as this node holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// Sessions of every kind.
    pub participants: u64,
    /// Sessions that receive media (WHEP players and room participants).
    pub subscribers: u64,
    /// Tracks its members publish.
    pub published_tracks: u64,
    /// Bytes received from its sessions here (every worker holding some).
    pub bytes_in: u64,
    /// Bytes sent to them.
    pub bytes_out: u64,
}

/// Everything one scrape exports.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Per worker, in worker order.
    pub workers: Vec<WorkerSnapshot>,
    /// Per room (every room this node holds; [`encode`] lists the largest).
    pub rooms: BTreeMap<String, RoomSnapshot>,
    /// Sessions the control plane knows.
    pub sessions: u64,
    /// 1 while draining.
    pub draining: bool,
    /// Panics of the WebRTC stack during negotiation on the control plane.
    pub negotiation_panics: u64,
    /// Tokens refused, by reason.
    pub auth_failures: Vec<(&'static str, u64)>,
    /// HTTP listener and session-start counters, by name.
    pub http: Vec<(String, u64)>,
    /// Room-protocol sockets open that have not joined yet.
    pub unjoined_sockets: u64,
    /// Webhook deliveries over all URLs (zero when webhooks are off).
    pub webhooks: crate::webhooks::WebhookCountersSnapshot,
    /// The control plane's own histograms, as collected.
    pub control: Vec<MetricFamily>,
}

/// Take a snapshot of `state` (asks every worker for its stats).
pub async fn gather(state: &AppState) -> Result<Snapshot, ApiError> {
    let stats = state.worker_stats().await?;
    let traffic = state.worker_traffic().await?;
    let workers: Vec<WorkerSnapshot> = stats
        .into_iter()
        .zip(traffic)
        .zip(&state.workers)
        .map(|((stats, traffic), w)| WorkerSnapshot {
            stats,
            overload: w.overload(),
            busy_ns: w.busy_ns(),
            command_queue: w.command_queue_depth() as u64,
            batch_latency: w.batch_latency(),
            traffic,
        })
        .collect();
    let mut rooms: BTreeMap<String, RoomSnapshot> = BTreeMap::new();
    let sessions = state.sessions();
    {
        let roster = state.roster();
        for (id, s) in &sessions {
            let r = rooms.entry(s.room.to_string()).or_default();
            r.participants += 1;
            if s.kind != SessionKind::Whip {
                r.subscribers += 1;
            }
            if let Some(m) = roster.get(*id) {
                r.published_tracks += m.info.tracks.len() as u64;
            }
        }
    }
    // Traffic of rooms this node still holds sessions in (a room whose last session left
    // is gone from the series, as it is from the others).
    for w in &workers {
        for t in &w.traffic {
            if let Some(r) = rooms.get_mut(&t.room) {
                r.bytes_in += t.bytes_in;
                r.bytes_out += t.bytes_out;
            }
        }
    }
    let mut http = Vec::new();
    if let Some(obj) = state.listener_counters.snapshot().as_object() {
        for (k, v) in obj {
            http.push((k.clone(), v.as_u64().unwrap_or(0)));
        }
    }
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    http.push((
        "sessions_rate_limited".into(),
        state.session_starts_refused.load(relaxed),
    ));
    http.push((
        "unjoined_refused".into(),
        state.unjoined.refused.load(relaxed),
    ));
    Ok(Snapshot {
        workers,
        rooms,
        sessions: sessions.len() as u64,
        draining: state.is_draining(),
        negotiation_panics: state.factory.panics(),
        auth_failures: state.auth.failures(),
        http,
        unjoined_sockets: state.unjoined.open() as u64,
        webhooks: state.webhooks.snapshot().total,
        control: state.histograms.families(),
    })
}

/// `GET /metrics`. Open in dev mode; otherwise it needs a token with the admin grant for
/// every room, as `/stats` does (a bearer header, or `?access_token=` for scrapers that
/// cannot set headers).
pub async fn handler(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = state
        .auth
        .verify(bearer(&headers).or(query.access_token.as_deref()))?;
    access.check_grant(|g| g.admin, "admin")?;
    access.check_every_room()?;
    let snapshot = gather(&state).await?;
    let body = encode(&snapshot, state.config.metrics_max_rooms)
        .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}

/// Encode `snapshot`, listing at most `max_rooms` rooms (most participants first).
pub fn encode(snapshot: &Snapshot, max_rooms: usize) -> Result<String, prometheus::Error> {
    let mut out = Exposition::default();
    out.write(snapshot, max_rooms);
    prometheus::TextEncoder::new().encode_to_string(&out.0)
}

type Labels = Vec<(&'static str, String)>;

/// The families of one scrape, in the order written.
#[derive(Default)]
struct Exposition(Vec<MetricFamily>);

impl Exposition {
    /// A counter family; `name` ends in `_total`.
    fn counter(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, f64)>) {
        debug_assert!(name.ends_with("_total"), "{name}");
        let metrics = rows
            .into_iter()
            .map(|(labels, v)| {
                let mut c = Counter::default();
                c.set_value(v);
                let mut m = metric(labels);
                m.set_counter(c);
                m
            })
            .collect();
        self.family(name, help, MetricType::COUNTER, metrics);
    }

    fn gauge(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, f64)>) {
        let metrics = rows
            .into_iter()
            .map(|(labels, v)| {
                let mut g = Gauge::default();
                g.set_value(v);
                let mut m = metric(labels);
                m.set_gauge(g);
                m
            })
            .collect();
        self.family(name, help, MetricType::GAUGE, metrics);
    }

    /// A histogram family of durations, from snapshots in microseconds.
    fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (Labels, &'a manifold_api::HistogramSnapshot)>,
    ) {
        let metrics = rows
            .into_iter()
            .map(|(labels, h)| {
                let mut cumulative = 0;
                let buckets = h
                    .bounds_us
                    .iter()
                    .zip(&h.counts)
                    .map(|(bound, count)| {
                        cumulative += count;
                        let mut b = Bucket::default();
                        b.set_upper_bound(*bound as f64 / 1e6);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect();
                let mut p = Histogram::default();
                p.set_bucket(buckets);
                p.set_sample_count(h.count());
                p.set_sample_sum(h.sum_us as f64 / 1e6);
                let mut m = metric(labels);
                m.set_histogram(p);
                m
            })
            .collect();
        self.family(name, help, MetricType::HISTOGRAM, metrics);
    }

    /// A family without samples is left out: the text encoder refuses one, and an empty
    /// family says nothing.
    fn family(&mut self, name: &str, help: &str, ty: MetricType, metrics: Vec<Metric>) {
        if metrics.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_owned());
        f.set_help(help.to_owned());
        f.set_field_type(ty);
        f.set_metric(metrics);
        self.0.push(f);
    }

    fn write(&mut self, s: &Snapshot, max_rooms: usize) {
        self.workers(s);
        self.node(s);
        self.webhooks(s);
        self.rooms(s, max_rooms);
        // A histogram vector none of whose labels was seen yet collects to an empty family,
        // which the encoder refuses.
        self.0.extend(
            s.control
                .iter()
                .filter(|f| !f.get_metric().is_empty())
                .cloned(),
        );
    }

    fn workers(&mut self, s: &Snapshot) {
        type Field = (&'static str, &'static str, fn(&WorkerSnapshot) -> u64);
        let gauges: [Field; 9] = [
            (
                "manifold_worker_command_queue",
                "Commands waiting in the worker's queue.",
                |w| w.command_queue,
            ),
            (
                "manifold_worker_rooms",
                "Rooms with a member on the worker.",
                |w| w.stats.rooms,
            ),
            (
                "manifold_worker_participants",
                "Participants on the worker.",
                |w| w.stats.participants,
            ),
            (
                "manifold_worker_tracks",
                "Tracks published on the worker.",
                |w| w.stats.tracks,
            ),
            (
                "manifold_worker_subscriptions",
                "Forwarding subscriptions on the worker.",
                |w| w.stats.subscriptions,
            ),
            (
                "manifold_worker_relayed_tracks",
                "Tracks relayed in from other workers.",
                |w| w.stats.relayed_tracks,
            ),
            (
                "manifold_worker_events_backlog",
                "Worker events held back right now.",
                |w| w.overload.events_backlog,
            ),
            (
                "manifold_worker_shed_level",
                "What the overloaded worker sheds now: 0 nothing, 1 video, 2 video and audio.",
                |w| w.stats.shed_level,
            ),
            (
                "manifold_worker_video_shed_percent",
                "Share of video subscriptions the overloaded worker sheds now, %.",
                |w| w.stats.video_shed_pct,
            ),
        ];
        for (name, help, f) in gauges {
            self.gauge(name, help, per_worker(s, f));
        }
        let counters: [Field; 16] = [
            (
                "manifold_worker_datagrams_in_total",
                "UDP datagrams received.",
                |w| w.stats.datagrams_in,
            ),
            (
                "manifold_worker_datagrams_out_total",
                "UDP datagrams sent.",
                |w| w.stats.datagrams_out,
            ),
            (
                "manifold_worker_bytes_in_total",
                "UDP bytes received.",
                |w| w.stats.bytes_in,
            ),
            ("manifold_worker_bytes_out_total", "UDP bytes sent.", |w| {
                w.stats.bytes_out
            }),
            (
                "manifold_worker_rtp_in_total",
                "RTP packets received from publishers.",
                |w| w.stats.rtp_in,
            ),
            (
                "manifold_worker_rtp_out_total",
                "RTP packets forwarded to subscribers.",
                |w| w.stats.rtp_out,
            ),
            (
                "manifold_worker_keyframe_requests_total",
                "Keyframe requests (PLI/FIR) sent to publishers.",
                |w| w.stats.keyframe_requests,
            ),
            (
                "manifold_worker_panics_total",
                "Participants removed after a WebRTC state machine panic.",
                |w| w.stats.panics,
            ),
            (
                "manifold_worker_relay_in_total",
                "Packets taken from other workers' relays.",
                |w| w.stats.relay_in,
            ),
            (
                "manifold_worker_relay_out_total",
                "Packets relayed to other workers.",
                |w| w.stats.relay_out,
            ),
            (
                "manifold_worker_relay_lost_total",
                "Relayed packets lost and asked for again.",
                |w| w.stats.relay_lost,
            ),
            (
                "manifold_worker_relay_resent_total",
                "Relayed packets sent again.",
                |w| w.stats.relay_resent,
            ),
            (
                "manifold_worker_commands_rejected_total",
                "Commands refused: the worker's command queue was full.",
                |w| w.overload.commands_rejected,
            ),
            (
                "manifold_worker_events_dropped_total",
                "Worker events lost (sink gone or backlog full).",
                |w| w.overload.events_dropped,
            ),
            (
                "manifold_worker_send_errors_total",
                "Datagrams the socket could not send.",
                |w| w.overload.send_errors,
            ),
            (
                "manifold_worker_relay_dropped_total",
                "Relay messages lost: another worker's relay inbox was full.",
                |w| w.overload.relay_dropped,
            ),
        ];
        for (name, help, f) in counters {
            self.counter(name, help, per_worker(s, f));
        }
        let media: [Field; 11] = [
            (
                "manifold_worker_nacks_received_total",
                "NACK messages received from subscribers.",
                |w| w.stats.nacks_in,
            ),
            (
                "manifold_worker_nacks_sent_total",
                "NACK messages sent to publishers.",
                |w| w.stats.nacks_out,
            ),
            (
                "manifold_worker_plis_received_total",
                "Picture loss indications received from subscribers.",
                |w| w.stats.plis_in,
            ),
            (
                "manifold_worker_plis_sent_total",
                "Picture loss indications sent to publishers.",
                |w| w.stats.plis_out,
            ),
            (
                "manifold_worker_firs_received_total",
                "Full intra requests received from subscribers.",
                |w| w.stats.firs_in,
            ),
            (
                "manifold_worker_firs_sent_total",
                "Full intra requests sent to publishers.",
                |w| w.stats.firs_out,
            ),
            (
                "manifold_worker_keyframes_received_total",
                "Keyframes received from publishers.",
                |w| w.stats.keyframes_in,
            ),
            (
                "manifold_worker_overload_episodes_total",
                "Times the worker started shedding media because it could not keep up.",
                |w| w.stats.overload_episodes,
            ),
            (
                "manifold_worker_overload_spikes_total",
                "Times the worker fell behind past the video threshold but shed nothing, as its load would drain the backlog within a second.",
                |w| w.stats.overload_spikes,
            ),
            (
                "manifold_worker_ice_failures_total",
                "Sessions whose ICE never connected within the connect timeout.",
                |w| w.stats.ice_failures,
            ),
            (
                "manifold_worker_dtls_failures_total",
                "Sessions whose ICE connected but whose DTLS handshake failed or timed out.",
                |w| w.stats.dtls_failures,
            ),
        ];
        for (name, help, f) in media {
            self.counter(name, help, per_worker(s, f));
        }
        let workers = || s.workers.iter().enumerate();
        self.histogram(
            "manifold_worker_connect_seconds",
            "Session join on the worker to connected (ICE and DTLS done).",
            workers().map(|(i, w)| (worker(i), &w.stats.connect_time)),
        );
        self.histogram(
            "manifold_worker_dtls_handshake_seconds",
            "ICE connected to DTLS handshake done.",
            workers().map(|(i, w)| (worker(i), &w.stats.dtls_handshake)),
        );
        self.histogram(
            "manifold_worker_batch_latency_seconds",
            "A receive batch from its arrival until what it produced (forwarded media, feedback) was handed to the socket: the forwarding latency through the worker, for media the pacer does not hold.",
            workers().map(|(i, w)| (worker(i), &w.batch_latency)),
        );
        self.counter(
            "manifold_worker_busy_seconds_total",
            "Seconds the worker spent working; its rate is the load (0 to 1).",
            s.workers
                .iter()
                .enumerate()
                .map(|(i, w)| (worker(i), w.busy_ns as f64 / 1e9)),
        );
        // Every reason, zero or not: a reason's series exists before its first drop, so
        // rate() over it is defined.
        let drops = s.workers.iter().enumerate().flat_map(|(i, w)| {
            manifold_rtp::DropReason::ALL.iter().map(move |r| {
                (
                    vec![("worker", i.to_string()), ("reason", r.as_str().to_owned())],
                    w.stats.drops_for(r.as_str()) as f64,
                )
            })
        });
        self.counter(
            "manifold_worker_drops_total",
            "Packets dropped, by reason.",
            drops,
        );
    }

    fn node(&mut self, s: &Snapshot) {
        let one = |v: u64| [(Vec::new(), v as f64)];
        self.gauge(
            "manifold_workers",
            "Media workers.",
            one(s.workers.len() as u64),
        );
        self.gauge(
            "manifold_sessions",
            "Sessions (WHIP, WHEP, room) the control plane knows.",
            one(s.sessions),
        );
        self.gauge(
            "manifold_draining",
            "1 while the node drains.",
            one(u64::from(s.draining)),
        );
        self.counter(
            "manifold_negotiation_panics_total",
            "WebRTC stack panics during negotiation.",
            one(s.negotiation_panics),
        );
        self.gauge(
            "manifold_unjoined_sockets",
            "Room-protocol sockets open that have not joined.",
            one(s.unjoined_sockets),
        );
        self.counter(
            "manifold_auth_failures_total",
            "Access tokens refused, by reason.",
            s.auth_failures
                .iter()
                .map(|(r, v)| (vec![("reason", (*r).to_owned())], *v as f64)),
        );
        self.counter(
            "manifold_http_events_total",
            "HTTP listener and session-start events (accepted, refused, rate limited...).",
            s.http
                .iter()
                .map(|(k, v)| (vec![("counter", k.clone())], *v as f64)),
        );
    }

    fn webhooks(&mut self, s: &Snapshot) {
        let w = &s.webhooks;
        let outcomes = [
            ("queued", w.queued),
            ("delivered", w.delivered),
            ("retried", w.retried),
            ("failed", w.failed),
            ("dropped", w.dropped),
        ];
        self.counter(
            "manifold_webhook_messages_total",
            "Webhook messages by outcome: queued, delivered (2xx), retried, failed (given up), dropped (queue full).",
            outcomes
                .iter()
                .map(|(k, v)| (vec![("outcome", (*k).to_owned())], *v as f64)),
        );
        self.gauge(
            "manifold_webhook_pending",
            "Webhook messages waiting to be delivered.",
            [(Vec::new(), w.pending as f64)],
        );
    }

    fn rooms(&mut self, s: &Snapshot, max_rooms: usize) {
        let mut rooms: Vec<(&String, &RoomSnapshot)> = s.rooms.iter().collect();
        rooms.sort_by(|a, b| b.1.participants.cmp(&a.1.participants).then(a.0.cmp(b.0)));
        let omitted = rooms.len().saturating_sub(max_rooms) as u64;
        rooms.truncate(max_rooms);
        let rows = |f: fn(&RoomSnapshot) -> u64| {
            rooms
                .iter()
                .map(move |(n, r)| (vec![("room", (*n).clone())], f(r) as f64))
                .collect::<Vec<_>>()
        };
        self.gauge(
            "manifold_room_participants",
            "Sessions in the room on this node.",
            rows(|r| r.participants),
        );
        self.gauge(
            "manifold_room_subscribers",
            "Sessions receiving media in the room on this node.",
            rows(|r| r.subscribers),
        );
        self.gauge(
            "manifold_room_published_tracks",
            "Tracks published in the room on this node.",
            rows(|r| r.published_tracks),
        );
        self.counter(
            "manifold_room_bytes_in_total",
            "Bytes received from the room's sessions on this node (since the room opened on each worker).",
            rows(|r| r.bytes_in),
        );
        self.counter(
            "manifold_room_bytes_out_total",
            "Bytes sent to the room's sessions on this node (since the room opened on each worker).",
            rows(|r| r.bytes_out),
        );
        self.gauge(
            "manifold_rooms",
            "Rooms this node holds sessions in.",
            [(Vec::new(), s.rooms.len() as f64)],
        );
        self.gauge(
            "manifold_metrics_rooms_omitted",
            "Rooms not listed in per-room series (over [metrics] max_rooms).",
            [(Vec::new(), omitted as f64)],
        );
    }
}

fn metric(labels: Labels) -> Metric {
    let pairs = labels
        .into_iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name(k.to_owned());
            p.set_value(v);
            p
        })
        .collect();
    Metric::from_label(pairs)
}

fn worker(i: usize) -> Labels {
    vec![("worker", i.to_string())]
}

fn per_worker(s: &Snapshot, f: impl Fn(&WorkerSnapshot) -> u64) -> Vec<(Labels, f64)> {
    s.workers
        .iter()
        .enumerate()
        .map(|(i, w)| (worker(i), f(w) as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(rooms: usize) -> Snapshot {
        let mut s = Snapshot {
            workers: vec![WorkerSnapshot::default(); 2],
            ..Default::default()
        };
        s.workers[1].stats.rtp_in = 7;
        s.workers[1].stats.drops = vec![manifold_api::DropCount {
            reason: "malformed".into(),
            count: 3,
        }];
        s.auth_failures = vec![("expired", 2)];
        for i in 0..rooms {
            s.rooms.insert(
                format!("room-{i:03}"),
                RoomSnapshot {
                    participants: i as u64 + 1,
                    subscribers: 1,
                    published_tracks: 2,
                    bytes_in: 1000,
                    bytes_out: 3000,
                },
            );
        }
        s
    }

    #[test]
    fn an_idle_server_encodes() {
        let s = Snapshot {
            control: ControlHistograms::default().families(),
            ..Default::default()
        };
        let out = encode(&s, 10).unwrap();
        assert!(out.contains("manifold_sessions 0\n"), "{out}");
        // The control plane's series exist before their first observation.
        assert!(
            out.contains("manifold_join_seconds_count{kind=\"whep\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("manifold_ws_message_seconds_count{type=\"leave\"} 0\n"));
    }

    #[test]
    fn histograms_are_cumulative_in_seconds() {
        let mut s = snapshot(1);
        let mut h = manifold_api::Histogram::new(&[1_000, 10_000]);
        h.observe(std::time::Duration::from_micros(500));
        h.observe(std::time::Duration::from_micros(5_000));
        h.observe(std::time::Duration::from_secs(1));
        s.workers[0].batch_latency = h.snapshot();
        let control = ControlHistograms::default();
        control.joined(SessionKind::Whip, std::time::Duration::from_millis(30));
        control.ws_message("ping", std::time::Duration::from_micros(200));
        s.control = control.families();
        let out = encode(&s, 10).unwrap();
        let b = "manifold_worker_batch_latency_seconds";
        assert!(out.contains(&format!("# TYPE {b} histogram\n")), "{out}");
        assert!(
            out.contains(&format!("{b}_bucket{{worker=\"0\",le=\"0.001\"}} 1\n")),
            "{out}"
        );
        assert!(out.contains(&format!("{b}_bucket{{worker=\"0\",le=\"0.01\"}} 2\n")));
        assert!(out.contains(&format!("{b}_bucket{{worker=\"0\",le=\"+Inf\"}} 3\n")));
        assert!(out.contains(&format!("{b}_count{{worker=\"0\"}} 3\n")));
        assert!(out.contains(&format!("{b}_sum{{worker=\"0\"}} 1.0055\n")));
        assert!(
            out.contains("manifold_join_seconds_count{kind=\"whip\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("manifold_ws_message_seconds_count{type=\"ping\"} 1\n"));
        assert!(out.contains("manifold_room_bytes_out_total{room=\"room-000\"} 3000\n"));
    }

    #[test]
    fn series_names_and_labels() {
        let out = encode(&snapshot(1), 10).unwrap();
        assert!(
            out.contains("manifold_worker_rtp_in_total{worker=\"1\"} 7\n"),
            "{out}"
        );
        assert!(out.contains("manifold_worker_drops_total{worker=\"1\",reason=\"malformed\"} 3\n"));
        assert!(out.contains("manifold_auth_failures_total{reason=\"expired\"} 2\n"));
        assert!(out.contains("manifold_room_participants{room=\"room-000\"} 1\n"));
        assert!(out.contains("# TYPE manifold_worker_participants gauge\n"));
        // Classic text format: counters carry `_total` in HELP and TYPE too, no EOF.
        assert!(out.contains("# TYPE manifold_worker_rtp_in_total counter\n"));
        assert!(out.contains("# HELP manifold_worker_rtp_in_total "));
        assert!(out.contains("manifold_worker_drops_total{worker=\"0\",reason=\"malformed\"} 0\n"));
        assert!(!out.contains("# EOF"));
        assert!(out.contains("manifold_webhook_messages_total{outcome=\"delivered\"} 0\n"));
        assert!(out.contains("manifold_worker_command_queue{worker=\"1\"} 0\n"));
    }

    #[test]
    fn per_room_series_are_bounded() {
        let out = encode(&snapshot(50), 5).unwrap();
        let listed = out
            .lines()
            .filter(|l| l.starts_with("manifold_room_participants{"))
            .count();
        assert_eq!(listed, 5);
        // The largest rooms are the ones listed.
        assert!(out.contains("manifold_room_participants{room=\"room-049\"} 50\n"));
        assert!(!out.contains("room=\"room-000\""));
        assert!(out.contains("manifold_metrics_rooms_omitted 45\n"), "{out}");
        assert!(out.contains("manifold_rooms 50\n"));
    }
}
