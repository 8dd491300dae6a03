//! The `/metrics` scraper: a thread that GETs a Manifold server's Prometheus endpoint at a
//! fixed rate while a run loads it, and what it saw (scrapes, failures, body size, how
//! long each scrape took). Scenario `scrape` runs scenario (a)'s loads with and without it
//! to show that scraping never stalls a media worker: the loadgen's end-to-end latency and
//! the server's own forwarding-latency histogram (`manifold_worker_batch_latency_seconds`,
//! read from `/metrics` before and after the run) should not move.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::server::http_get;

/// The metric every scrape body must carry (the smoke checks it).
pub const PROBE_SERIES: &str = "manifold_worker_rtp_in_total";

/// The server's forwarding-latency histogram.
pub const BATCH_LATENCY: &str = "manifold_worker_batch_latency_seconds";

/// What a scraper saw over its run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScrapeStats {
    pub hz: f64,
    pub scrapes: u64,
    pub failures: u64,
    /// Bodies that lacked [`PROBE_SERIES`].
    pub incomplete: u64,
    pub body_kb_last: f64,
    pub duration_ms_p50: Option<f64>,
    pub duration_ms_p99: Option<f64>,
    pub duration_ms_max: Option<f64>,
}

/// A running scraper; [`Scraper::stop`] ends it and returns what it saw.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<ScrapeStats>,
}

impl Scraper {
    /// GET `http://{addr}/metrics` `hz` times a second until stopped.
    pub fn start(addr: String, hz: f64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let period = Duration::from_secs_f64(1.0 / hz.max(0.1));
        let handle = std::thread::spawn(move || {
            let mut stats = ScrapeStats {
                hz,
                ..ScrapeStats::default()
            };
            let mut durations = Vec::new();
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let began = Instant::now();
                match http_get(&addr, "/metrics") {
                    Some(body) => {
                        durations.push(began.elapsed().as_secs_f64() * 1e3);
                        stats.scrapes += 1;
                        stats.body_kb_last = round2(body.len() as f64 / 1024.0);
                        if !body.contains(PROBE_SERIES) {
                            stats.incomplete += 1;
                        }
                    }
                    None => stats.failures += 1,
                }
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    // Behind (a slow scrape): start again from now rather than bursting.
                    next = now;
                }
            }
            durations.sort_by(f64::total_cmp);
            stats.duration_ms_p50 = quantile(&durations, 0.50).map(round2);
            stats.duration_ms_p99 = quantile(&durations, 0.99).map(round2);
            stats.duration_ms_max = durations.last().copied().map(round2);
            stats
        });
        Self { stop, handle }
    }

    pub fn stop(self) -> ScrapeStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// A Prometheus histogram's cumulative buckets, summed over every label set but `le`:
/// `(upper bound, cumulative count)` in bound order, `+Inf` last.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

impl Buckets {
    /// The `{name}_bucket` lines of an exposition body.
    pub fn parse(body: &str, name: &str) -> Self {
        let prefix = format!("{name}_bucket{{");
        let mut out: Vec<(f64, f64)> = Vec::new();
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Some(le) = labels
                .split(',')
                .find_map(|l| l.strip_prefix("le=\""))
                .and_then(|v| v.strip_suffix('"'))
            else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse() {
                    Ok(b) => b,
                    Err(_) => continue,
                }
            };
            let Ok(count) = value.trim().parse::<f64>() else {
                continue;
            };
            match out.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, c)) => *c += count,
                None => out.push((bound, count)),
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self(out)
    }

    /// What was observed between `earlier` and `self` (same bounds).
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|&(b, c)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(eb, _)| *eb == b)
                        .map_or(0.0, |e| e.1);
                    (b, (c - before).max(0.0))
                })
                .collect(),
        )
    }

    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |b| b.1)
    }

    /// The `q` quantile the way Prometheus's `histogram_quantile` estimates it: linear
    /// within the bucket it falls in; the largest finite bound if it falls in `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, cum) in &self.0 {
            if cum >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = cum - lower.1;
                let frac = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * frac);
            }
            lower = (bound, cum);
        }
        None
    }
}

/// The sum of counter `name` over its series whose labels contain `label` (every series
/// when empty); `None` when the body has no such series.
pub fn counter_sum(body: &str, name: &str, label: &str) -> Option<u64> {
    let mut sum = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.rsplit_once("} ") {
                Some(lv) => lv,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if !labels.contains(label) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *sum.get_or_insert(0) += v as u64;
        }
    }
    sum
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_summed_over_matching_series() {
        let body = "# TYPE x_total counter\n\
            x_total{worker=\"0\",reason=\"a\"} 3\n\
            x_total{worker=\"1\",reason=\"a\"} 4\n\
            x_total{worker=\"1\",reason=\"b\"} 10\n\
            x_total_other{reason=\"a\"} 100\n\
            y_total 7\n";
        assert_eq!(super::counter_sum(body, "x_total", "reason=\"a\""), Some(7));
        assert_eq!(super::counter_sum(body, "x_total", ""), Some(17));
        assert_eq!(super::counter_sum(body, "y_total", ""), Some(7));
        assert_eq!(super::counter_sum(body, "z_total", ""), None);
    }

    use super::*;

    const BODY: &str = "\
# TYPE manifold_worker_batch_latency_seconds histogram
manifold_worker_batch_latency_seconds_bucket{worker=\"0\",le=\"0.001\"} 80
manifold_worker_batch_latency_seconds_bucket{worker=\"0\",le=\"0.002\"} 90
manifold_worker_batch_latency_seconds_bucket{worker=\"0\",le=\"+Inf\"} 100
manifold_worker_batch_latency_seconds_sum{worker=\"0\"} 0.1
manifold_worker_batch_latency_seconds_count{worker=\"0\"} 100
manifold_worker_batch_latency_seconds_bucket{worker=\"1\",le=\"0.001\"} 0
manifold_worker_batch_latency_seconds_bucket{worker=\"1\",le=\"0.002\"} 0
manifold_worker_batch_latency_seconds_bucket{worker=\"1\",le=\"+Inf\"} 0
manifold_worker_rtp_in_total{worker=\"0\"} 7
";

    #[test]
    fn buckets_sum_over_workers_and_estimate_quantiles() {
        let b = Buckets::parse(BODY, BATCH_LATENCY);
        assert_eq!(
            b.0,
            vec![(0.001, 80.0), (0.002, 90.0), (f64::INFINITY, 100.0)]
        );
        // Rank 50 of 80 in the first bucket: 50/80 of the way from 0 to 1 ms.
        assert!((b.quantile(0.5).unwrap() - 0.000625).abs() < 1e-12);
        // Rank 85: half-way through the second bucket.
        assert!((b.quantile(0.85).unwrap() - 0.0015).abs() < 1e-12);
        // Rank 99 is past the last finite bound.
        assert_eq!(b.quantile(0.99), Some(0.002));
        let earlier = Buckets(vec![(0.001, 40.0), (0.002, 45.0), (f64::INFINITY, 50.0)]);
        let d = b.since(&earlier);
        assert_eq!(d.count(), 50.0);
        assert_eq!(d.0[0], (0.001, 40.0));
        assert_eq!(Buckets::default().quantile(0.5), None);
        assert_eq!(
            Buckets::parse("garbage {le=\"x\"} y\n", BATCH_LATENCY).count(),
            0.0
        );
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.0));
        assert_eq!(quantile(&v, 0.99), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn a_scraper_counts_failures_against_nothing() {
        // Port 9 (discard) on loopback: nothing listens in a test sandbox; every GET fails
        // fast and is counted, none succeeds.
        let s = Scraper::start("127.0.0.1:9".into(), 50.0);
        std::thread::sleep(Duration::from_millis(100));
        let stats = s.stop();
        assert_eq!(stats.scrapes, 0);
        assert!(stats.failures >= 1, "{stats:?}");
        assert_eq!(stats.duration_ms_p50, None);
    }
}
