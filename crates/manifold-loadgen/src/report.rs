//! The run's report: every client's own report ([`ClientReport`]) plus an aggregate (join
//! times, packets, loss, latency, freezes, failures by reason) and, with downlink caps or
//! simulcast, a summary per downlink class, as JSON and as a short human summary.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::classes::ClassSummary;
use crate::hist::Histogram;
pub use crate::hist::Quantiles;
use crate::recv::RecvStats;
pub use crate::snapshot::ClientReport;

/// Counters over the steady part of the run (every join done, before the stop).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Steady {
    /// Start, milliseconds since the Unix epoch.
    pub from_unix_ms: u64,
    /// End, milliseconds since the Unix epoch.
    pub until_unix_ms: u64,
    /// Length in seconds.
    pub seconds: f64,
    /// Distinct stamped media packets subscribers received in the window: what the
    /// server forwarded and delivered.
    pub packets_received: u64,
    /// UDP bytes subscribers received in the window.
    pub bytes_received: u64,
    /// Media packets publishers sent in the window.
    pub packets_sent: u64,
    /// UDP bytes publishers sent in the window.
    pub bytes_sent: u64,
    /// RTP datagrams that reached subscribers' sockets in the window, before any downlink
    /// cap: what the server sent them, retransmissions and padding included.
    pub rtp_in: u64,
}

impl Steady {
    /// Packets received per second.
    pub fn packets_per_second(&self) -> f64 {
        rate(self.packets_received as f64, self.seconds)
    }

    /// Megabits per second received.
    pub fn mbps_received(&self) -> f64 {
        rate(self.bytes_received as f64 * 8.0 / 1e6, self.seconds)
    }
}

/// Totals of a set of client reports at one instant (for the steady window's ends and the
/// progress line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Distinct media packets subscribers received.
    pub packets_received: u64,
    /// UDP bytes subscribers received.
    pub bytes_received: u64,
    /// Media packets publishers sent.
    pub packets_sent: u64,
    /// UDP bytes publishers sent.
    pub bytes_sent: u64,
    /// Packets missing inside what subscribers received.
    pub gaps: u64,
    /// RTP datagrams that reached subscribers' sockets.
    pub rtp_in: u64,
}

impl Counters {
    /// Sum over `reports`.
    pub fn of<'a>(reports: impl IntoIterator<Item = &'a ClientReport>) -> Counters {
        let mut c = Counters::default();
        for r in reports {
            if r.role == "publisher" {
                c.packets_sent += r.audio_sent + r.video_sent;
                c.bytes_sent += r.bytes_sent;
            } else {
                c.packets_received += r.audio.unique + r.video.unique;
                c.bytes_received += r.bytes_received;
                c.gaps += r.audio.gaps() + r.video.gaps();
                c.rtp_in += r.rtp_in;
            }
        }
        c
    }

    /// `self - earlier`, never below zero (clients that left take their counts along).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            packets_received: self
                .packets_received
                .saturating_sub(earlier.packets_received),
            bytes_received: self.bytes_received.saturating_sub(earlier.bytes_received),
            packets_sent: self.packets_sent.saturating_sub(earlier.packets_sent),
            bytes_sent: self.bytes_sent.saturating_sub(earlier.bytes_sent),
            gaps: self.gaps.saturating_sub(earlier.gaps),
            rtp_in: self.rtp_in.saturating_sub(earlier.rtp_in),
        }
    }
}

/// Aggregate over every client of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Aggregate {
    /// Join attempts (churn rejoins included).
    pub attempts: u64,
    /// Attempts that ended in a connected client.
    pub connected: u64,
    /// Attempts that failed, for any reason.
    pub failed: u64,
    /// Failures by reason: signaling errors (`http`, `status_503`, `sdp`, `timeout`,
    /// `api_<code>`...), client errors (`connect_timeout`, `disconnected`...), and `no_media`
    /// for a connected subscriber that never received a packet.
    pub failures: BTreeMap<String, u64>,
    /// Publishers that connected.
    pub publishers: u64,
    /// Subscribers that connected.
    pub subscribers: u64,
    /// Offer to ICE+DTLS connected, milliseconds.
    pub join_ms: Quantiles,
    /// Offer to the first media packet received, milliseconds (subscribers): join → first
    /// media.
    pub first_media_ms: Quantiles,
    /// Subscriber joins completed per second: subscribers that received media, over the span
    /// from the first subscriber's offer to the last one's first media packet (`None` with
    /// fewer than two). With a ramp faster than the node can take, this is its ceiling.
    pub joins_per_s: Option<f64>,
    /// Media packets publishers sent.
    pub packets_sent: u64,
    /// Media packets subscribers received (duplicates included).
    pub packets_received: u64,
    /// Distinct packets subscribers received.
    pub unique_received: u64,
    /// Packets subscribers should have received: from the first packet each got of a
    /// stream to the last its publisher sent.
    pub expected: u64,
    /// `expected - unique_received`.
    pub lost: u64,
    /// `lost / expected`, percent.
    pub loss_pct: f64,
    /// Duplicates received.
    pub duplicates: u64,
    /// Send-to-receive latency, milliseconds.
    pub latency_ms: Quantiles,
    /// Gaps between packets longer than the freeze threshold.
    pub freezes: u64,
    /// Video freezes: no new complete frame for longer than the threshold.
    pub frame_freezes: u64,
    /// Layer switches subscribers saw (keyframes of another size).
    pub layer_switches: u64,
    /// VP8 numbering breaks between adjacent frames subscribers received.
    pub numbering_breaks: u64,
    /// Streams (subscriber × kind) that received something.
    pub streams: u64,
}

/// The final report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Target kind.
    pub target: String,
    /// The scenario as run.
    pub scenario: serde_json::Value,
    /// Start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Wall-clock length of the run, seconds.
    pub elapsed_s: f64,
    /// The steady window.
    pub steady: Steady,
    /// Aggregates.
    pub aggregate: Aggregate,
    /// Subscribers by downlink class (one class, `uncapped`, without caps).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassSummary>,
    /// Every client, churned ones included.
    pub clients: Vec<ClientReport>,
}

/// Aggregate `clients` (final reports) and `join_failures` (reasons of joins that never
/// produced a client).
pub fn aggregate(clients: &[ClientReport], join_failures: &[String]) -> Aggregate {
    let mut a = Aggregate::default();
    for reason in join_failures {
        *a.failures.entry(reason.clone()).or_default() += 1;
    }
    // What each source (a publisher's track) sent, to count tail loss.
    let mut last_index: HashMap<u32, u64> = HashMap::new();
    for r in clients.iter().filter(|r| r.role == "publisher") {
        a.packets_sent += r.audio_sent + r.video_sent;
        for (source, sent) in [
            (r.audio_source, r.audio_sent),
            (r.video_source, r.video_sent),
        ] {
            if let Some(s) = source {
                *last_index.entry(s).or_default() += sent;
            }
        }
    }
    let mut joins = Histogram::new();
    let mut first_media = Histogram::new();
    // Subscribers' first offer and last first-media packet, Unix ms, and how many got media.
    let mut span: Option<(u64, u64)> = None;
    let mut with_media = 0u64;
    let mut latency = Histogram::new();
    for r in clients {
        match (&r.failure, r.connected) {
            (Some(f), _) => *a.failures.entry(f.clone()).or_default() += 1,
            (None, false) => *a.failures.entry("never_connected".into()).or_default() += 1,
            (None, true) => {}
        }
        if r.connected {
            a.connected += 1;
            if r.role == "publisher" {
                a.publishers += 1;
            } else {
                a.subscribers += 1;
            }
        }
        if let Some(ms) = r.connect_ms {
            joins.record(ms * 1000);
        }
        if r.role != "subscriber" {
            continue;
        }
        if let Some(ms) = r.first_media_ms {
            first_media.record(ms * 1000);
            with_media += 1;
            let (from, until) = (r.started_unix_ms, r.started_unix_ms + ms);
            span = Some(span.map_or((from, until), |(a, b)| (a.min(from), b.max(until))));
        }
        if r.connected && r.failure.is_none() && r.audio.packets + r.video.packets == 0 {
            *a.failures.entry("no_media".into()).or_default() += 1;
        }
        a.frame_freezes += r.video_frames.freezes;
        a.layer_switches += r.video_frames.layer_switches;
        a.numbering_breaks += r.video_frames.numbering_breaks;
        for s in [&r.audio, &r.video] {
            if s.packets == 0 {
                continue;
            }
            a.streams += 1;
            a.packets_received += s.packets;
            a.unique_received += s.unique;
            a.duplicates += s.duplicates;
            a.freezes += s.freezes;
            latency.merge(&s.latency);
            a.expected += if r.left_early {
                // It left while its publisher went on: count only the gaps in what it got.
                s.unique + s.gaps()
            } else {
                expected(s, &last_index)
            };
        }
    }
    a.attempts = clients.len() as u64 + join_failures.len() as u64;
    a.failed = a.failures.values().sum();
    a.lost = a.expected.saturating_sub(a.unique_received);
    a.loss_pct = if a.expected == 0 {
        0.0
    } else {
        round3(100.0 * a.lost as f64 / a.expected as f64)
    };
    a.join_ms = Quantiles::from_us(&joins);
    a.first_media_ms = Quantiles::from_us(&first_media);
    a.joins_per_s = match span {
        Some((from, until)) if with_media > 1 && until > from => {
            Some(round3(with_media as f64 * 1000.0 / (until - from) as f64))
        }
        _ => None,
    };
    a.latency_ms = Quantiles::from_us(&latency);
    a
}

/// Packets a stream should have received: from its first index to the last its source sent
/// (or, when the source is unknown, to the highest index it received).
fn expected(s: &RecvStats, sent_by_source: &HashMap<u32, u64>) -> u64 {
    let by_gaps = s.unique + s.gaps();
    match s.source.and_then(|src| sent_by_source.get(&src)) {
        Some(&sent) if sent > 0 => s.expected((sent - 1) as u32).max(by_gaps),
        _ => by_gaps,
    }
}

impl Report {
    /// A few lines for people.
    pub fn summary(&self) -> String {
        let a = &self.aggregate;
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        let mut out = format!(
            "target {}: {} joins, {} connected ({} publishers, {} subscribers), {} failed\n",
            self.target, a.attempts, a.connected, a.publishers, a.subscribers, a.failed
        );
        if !a.failures.is_empty() {
            let reasons: Vec<String> = a.failures.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out += &format!("  failures: {}\n", reasons.join(", "));
        }
        out += &format!(
            "  join p50 {} p99 {} | first media p50 {} p99 {} | {} joins/s | packets sent {} received {} (expected {}) | loss {:.3}%\n",
            ms(a.join_ms.p50),
            ms(a.join_ms.p99),
            ms(a.first_media_ms.p50),
            ms(a.first_media_ms.p99),
            a.joins_per_s.map_or("-".to_owned(), |r| format!("{r:.0}")),
            a.packets_sent,
            a.unique_received,
            a.expected,
            a.loss_pct
        );
        out += &format!(
            "  latency p50 {} p95 {} p99 {} | freezes {} | duplicates {}\n",
            ms(a.latency_ms.p50),
            ms(a.latency_ms.p95),
            ms(a.latency_ms.p99),
            a.freezes,
            a.duplicates
        );
        out += &format!(
            "  steady {:.1} s: {:.0} packets/s, {:.1} Mbps delivered to subscribers",
            self.steady.seconds,
            self.steady.packets_per_second(),
            self.steady.mbps_received()
        );
        for c in &self.classes {
            let ending: Vec<String> = c
                .ending_layers
                .iter()
                .map(|(layer, n)| format!("{n} on {layer}"))
                .collect();
            out += &format!(
                "\n  {} ×{}: {:.0} kbps, mostly {}, ending {} | video loss {:.2}% | {:.1} fps, freezes {:.2}/min, switches {:.2}/min",
                c.class,
                c.subscribers,
                c.received_kbps,
                c.layer_mostly.as_deref().unwrap_or("-"),
                ending.join(", "),
                c.video_loss_pct,
                c.fps,
                c.freezes_per_min,
                c.layer_switches_per_min,
            );
        }
        out
    }

    /// Failed joins as a fraction of attempts.
    pub fn failure_ratio(&self) -> f64 {
        let a = &self.aggregate;
        if a.attempts == 0 {
            return 1.0;
        }
        a.failed as f64 / a.attempts as f64
    }
}

fn rate(v: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { v / seconds } else { 0.0 }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::stamp::Stamp;

    fn publisher(label: &str, audio: (u32, u64), video: (u32, u64)) -> ClientReport {
        let mut r = ClientReport::new(label.into(), "publisher");
        r.connected = true;
        r.connect_ms = Some(40);
        r.audio_sent = audio.1;
        r.video_sent = video.1;
        r.audio_source = Some(audio.0);
        r.video_source = Some(video.0);
        r.bytes_sent = 1000;
        r.bytes_received = 10;
        r
    }

    fn stream(source: u32, indices: impl Iterator<Item = u32>, latency_us: u64) -> RecvStats {
        let mut s = RecvStats::default();
        let t0 = Instant::now();
        for (n, i) in indices.enumerate() {
            s.record(
                Stamp {
                    source,
                    index: i,
                    sent_us: 1_000,
                },
                t0 + Duration::from_millis(n as u64 * 20),
                1_000 + latency_us,
            );
        }
        s
    }

    fn subscriber(label: &str, audio: RecvStats, video: RecvStats) -> ClientReport {
        let mut r = ClientReport::new(label.into(), "subscriber");
        r.connected = true;
        r.connect_ms = Some(60);
        r.bytes_sent = 10;
        r.bytes_received = 500;
        r.rtp_in = 7;
        r.audio = audio;
        r.video = video;
        r
    }

    #[test]
    fn loss_counts_gaps_and_the_tail() {
        // Publisher 1 sent audio 0..100 and video 0..300.
        let p = publisher("p", (1, 100), (2, 300));
        // Subscriber a: all audio, video 10..300 without 20 packets in the middle.
        let a = subscriber(
            "a",
            stream(1, 0..100, 2_000),
            stream(2, (10..300).filter(|i| !(100..120).contains(i)), 4_000),
        );
        // Subscriber b: audio 0..90 (the last ten never came), no video.
        let b = subscriber("b", stream(1, 0..90, 2_000), RecvStats::default());
        let agg = aggregate(&[p, a, b], &[]);
        assert_eq!(agg.attempts, 3);
        assert_eq!(agg.failed, 0);
        assert_eq!(agg.connected, 3);
        assert_eq!((agg.publishers, agg.subscribers), (1, 2));
        assert_eq!(agg.packets_sent, 400);
        assert_eq!(agg.streams, 3);
        assert_eq!(agg.unique_received, 100 + 270 + 90);
        // a audio 100, a video 290 (from its first index 10), b audio 100.
        assert_eq!(agg.expected, 100 + 290 + 100);
        assert_eq!(agg.lost, 20 + 10);
        assert!((agg.loss_pct - 100.0 * 30.0 / 490.0).abs() < 0.001);
        assert_eq!(agg.latency_ms.count, 460);
        // 190 audio samples at 2 ms, 270 video samples at 4 ms.
        let p50 = agg.latency_ms.p50.unwrap();
        assert!((3.8..=4.0).contains(&p50), "{p50}");
        assert_eq!(agg.latency_ms.max, Some(4.0));
        assert_eq!(agg.join_ms.count, 3);
    }

    #[test]
    fn joins_per_second_span_the_first_offer_to_the_last_first_media() {
        let p = publisher("p", (1, 100), (2, 0));
        let mut subs = Vec::new();
        // Offers at 0, 100, 200 and 300 ms; first media 50 ms after each, and one never.
        for i in 0..5u64 {
            let mut s = subscriber(
                &format!("s{i}"),
                stream(1, 0..10, 1_000),
                RecvStats::default(),
            );
            s.started_unix_ms = 10_000 + i * 100;
            s.first_media_ms = (i < 4).then_some(50);
            subs.push(s);
        }
        let mut all = vec![p];
        all.extend(subs);
        let agg = aggregate(&all, &[]);
        assert_eq!(agg.first_media_ms.count, 4);
        // 4 joins with media between 10,000 and 10,350 ms.
        let rate = agg.joins_per_s.unwrap();
        assert!((rate - 4.0 / 0.35).abs() < 0.01, "{rate}");
        // One subscriber is not a rate.
        let one = aggregate(&all[..2], &[]);
        assert_eq!(one.joins_per_s, None);
    }

    #[test]
    fn subscribers_that_left_early_have_no_tail_loss() {
        let p = publisher("p", (1, 100), (2, 300));
        let mut gone = subscriber("g", stream(1, 0..40, 1_000), RecvStats::default());
        gone.left_early = true;
        let agg = aggregate(&[p, gone], &[]);
        assert_eq!(agg.expected, 40);
        assert_eq!(agg.lost, 0);
    }

    #[test]
    fn failures_are_counted_by_reason() {
        let p = publisher("p", (1, 10), (2, 10));
        let mut failed = subscriber("f", RecvStats::default(), RecvStats::default());
        failed.connected = false;
        failed.connect_ms = None;
        failed.failure = Some("connect_timeout".into());
        let silent = subscriber("s", RecvStats::default(), RecvStats::default());
        let joins = vec![
            "status_503".to_owned(),
            "status_503".into(),
            "timeout".into(),
        ];
        let agg = aggregate(&[p, failed, silent], &joins);
        assert_eq!(agg.attempts, 6);
        assert_eq!(agg.failed, 5);
        assert_eq!(agg.failures["status_503"], 2);
        assert_eq!(agg.failures["timeout"], 1);
        assert_eq!(agg.failures["connect_timeout"], 1);
        assert_eq!(agg.failures["no_media"], 1);
        assert_eq!(agg.connected, 2);
        let report = Report {
            target: "whip-whep".into(),
            scenario: serde_json::Value::Null,
            started_unix_ms: 0,
            elapsed_s: 1.0,
            steady: Steady::default(),
            aggregate: agg,
            classes: vec![],
            clients: vec![],
        };
        assert!((report.failure_ratio() - 5.0 / 6.0).abs() < 1e-9);
        let summary = report.summary();
        assert!(summary.contains("status_503=2"), "{summary}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["aggregate"]["failures"]["no_media"], 1);
    }

    #[test]
    fn counters_sum_and_subtract() {
        let p = publisher("p", (1, 100), (2, 300));
        let a = subscriber(
            "a",
            stream(1, (0..50).filter(|i| i % 10 != 0), 1),
            RecvStats::default(),
        );
        let c = Counters::of([&p, &a]);
        assert_eq!(c.packets_sent, 400);
        assert_eq!(c.bytes_sent, 1000);
        assert_eq!(c.packets_received, 45);
        assert_eq!(c.bytes_received, 500);
        assert_eq!(c.gaps, 4, "10, 20, 30, 40 (0 was never seen)");
        assert_eq!(c.rtp_in, 7, "subscribers' only");
        let later = Counters {
            packets_received: 100,
            ..c
        };
        assert_eq!(later.since(&c).packets_received, 55);
        assert_eq!(c.since(&later).packets_received, 0);
    }
}
