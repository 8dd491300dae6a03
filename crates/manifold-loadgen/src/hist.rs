//! A small log-linear histogram of microsecond latencies: fixed size (so a client's stats
//! stay bounded however long it runs), mergeable (so a report can aggregate thousands of
//! clients), about 3% relative precision; and its quantiles in milliseconds for reports.

use serde::Serialize;

/// Sub-buckets per power of two: the relative error of a quantile is at most 1/SUB.
const SUB: usize = 32;
const SUB_BITS: u32 = 5;
/// Powers of two above the linear range; values past 2^(SUB_BITS + OCTAVES) µs (about
/// 9 hours) land in the last bucket.
const OCTAVES: usize = 30;
const BUCKETS: usize = SUB + OCTAVES * SUB;

/// Counts of latency samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    /// Count one sample.
    pub fn record(&mut self, value_us: u64) {
        self.counts[bucket(value_us)] += 1;
        self.total += 1;
        self.max = self.max.max(value_us);
    }

    /// Add every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Samples counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest sample.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below which a fraction `q` (0..=1) of the samples lie (the upper edge of
    /// the bucket holding that rank, never above the largest sample); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_edge(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS
    let octave = (msb - SUB_BITS) as usize;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let sub = ((v >> (msb - SUB_BITS)) as usize) & (SUB - 1);
    SUB + octave * SUB + sub
}

fn upper_edge(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let octave = (i - SUB) / SUB;
    let sub = ((i - SUB) % SUB) as u64;
    let shift = octave as u32;
    (((SUB as u64 + sub + 1) << shift) - 1).max(1)
}

/// Quantiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Quantiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Quantiles {
    /// From a histogram of microseconds.
    pub fn from_us(h: &Histogram) -> Quantiles {
        let ms = |q: f64| h.quantile(q).map(|v| round3(v as f64 / 1000.0));
        Quantiles {
            count: h.count(),
            p50: ms(0.5),
            p95: ms(0.95),
            p99: ms(0.99),
            max: (h.count() > 0).then(|| round3(h.max() as f64 / 1000.0)),
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_quantiles() {
        assert_eq!(Histogram::new().quantile(0.5), None);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 0..10 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), Some(4));
        assert_eq!(h.quantile(1.0), Some(9));
        assert_eq!(h.count(), 10);
    }

    #[test]
    fn quantiles_are_within_three_percent() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.95, 95_000.0), (0.99, 99_000.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!(
                (got - want).abs() / want < 0.035,
                "q{q}: got {got}, want {want}"
            );
        }
        assert_eq!(h.quantile(1.0), Some(100_000));
        assert_eq!(h.max(), 100_000);
    }

    #[test]
    fn buckets_are_monotonic_and_edges_cover_them() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(97) {
            let b = bucket(v);
            assert!(b >= last, "bucket of {v} went backwards");
            assert!(upper_edge(b) >= v, "edge of bucket {b} below {v}");
            last = b;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for _ in 0..90 {
            a.record(1_000);
        }
        for _ in 0..10 {
            b.record(50_000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        let p50 = a.quantile(0.5).unwrap();
        assert!((970..=1_031).contains(&p50), "{p50}");
        let p99 = a.quantile(0.99).unwrap();
        assert!((48_000..=50_000).contains(&p99), "{p99}");
        assert_eq!(a.max(), 50_000);
    }
}
