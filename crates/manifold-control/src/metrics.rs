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
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::error::ApiError;
use crate::sessions::{SessionQuery, bearer};
use crate::state::AppState;

/// The `Content-Type` of the text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rooms listed with their own series by default; the rest are counted, not listed.
pub const DEFAULT_MAX_ROOMS: usize = 100;

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
}

/// Take a snapshot of `state` (asks every worker for its stats).
pub async fn gather(state: &AppState) -> Result<Snapshot, ApiError> {
    let stats = state.worker_stats().await?;
    let workers = stats
        .into_iter()
        .zip(&state.workers)
        .map(|(stats, w)| WorkerSnapshot {
            stats,
            overload: w.overload(),
            busy_ns: w.busy_ns(),
            command_queue: w.command_queue_depth() as u64,
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
    }

    fn workers(&mut self, s: &Snapshot) {
        type Field = (&'static str, &'static str, fn(&WorkerSnapshot) -> u64);
        let gauges: [Field; 7] = [
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
                },
            );
        }
        s
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
