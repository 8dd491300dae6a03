//! A subscriber's capped downlink: a token bucket with a bounded queue that drops at its
//! tail, between the client's socket and its `Rtc`. What arrives faster than the cap waits
//! in the queue (delay the server's bandwidth estimator can see), and what does not fit in
//! the queue is lost (loss it can see), as behind a slow access link.
//!
//! The bucket fills at the cap's rate and holds [`burst_bytes`] at most; a datagram leaves
//! the queue when the bucket holds its size. Every datagram counts (media, RTCP, STUN,
//! DTLS): a link does not know what it carries.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Queue length of a capped downlink unless told otherwise, as time at the cap's rate.
pub const DEFAULT_QUEUE: Duration = Duration::from_millis(200);

/// The smallest queue, bytes, whatever the rate: a few full-size datagrams, so a slow cap
/// still passes a keyframe's burst rather than losing all but its first packet.
const MIN_QUEUE_BYTES: usize = 4 * 1500;

/// Buffers kept for reuse (a queue of a few hundred datagrams at most).
const POOL: usize = 64;

/// One subscriber's link: its rate and how much it queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DownlinkCap {
    /// Bits per second.
    pub rate_bps: u64,
    /// Queue length as time at `rate_bps` (its size in bytes follows).
    #[serde(with = "millis")]
    pub queue: Duration,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

impl DownlinkCap {
    /// The queue's size in bytes.
    pub fn queue_bytes(&self) -> usize {
        let bytes = self.rate_bps as f64 / 8.0 * self.queue.as_secs_f64();
        (bytes as usize).max(MIN_QUEUE_BYTES)
    }
}

/// The class name of a subscriber behind a cap of `rate_bps` in reports: `300k`, `1m`,
/// `2.5m`; `uncapped` for none.
pub fn class_name(rate_bps: Option<u64>) -> String {
    match rate_bps {
        None => "uncapped".into(),
        Some(r) if r >= 1_000_000 && r % 100_000 == 0 => format!("{}m", r as f64 / 1e6),
        Some(r) if r % 1000 == 0 => format!("{}k", r / 1000),
        Some(r) => format!("{r}"),
    }
}

/// Most the bucket holds, bytes: two full-size datagrams or 10 ms at the rate, whichever
/// is more. Small, so that a burst leaves at the link's pace.
pub fn burst_bytes(rate_bps: u64) -> f64 {
    (rate_bps as f64 / 8.0 * 0.010).max(2.0 * 1500.0)
}

/// Parse `--downlink-caps`: comma-separated rates (`300k`, `1m`, `2.5M`, `800000`) or
/// `none` for an uncapped subscriber; the queue of every capped one is `queue`.
pub fn parse_caps(list: &str, queue: Duration) -> Result<Vec<Option<DownlinkCap>>, String> {
    list.split(',')
        .map(str::trim)
        .map(|item| {
            if item.eq_ignore_ascii_case("none") {
                return Ok(None);
            }
            let rate = crate::cli::parse_bitrate(item)?;
            Ok(Some(DownlinkCap {
                rate_bps: u64::from(rate),
                queue,
            }))
        })
        .collect()
}

/// What a capped downlink did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DownlinkReport {
    /// The cap.
    pub rate_bps: u64,
    /// Its queue, milliseconds at the rate.
    pub queue_ms: u64,
    /// Its queue, bytes.
    pub queue_bytes: usize,
    /// Datagrams that arrived at the link.
    pub offered_packets: u64,
    /// Their bytes.
    pub offered_bytes: u64,
    /// Datagrams that passed it.
    pub delivered_packets: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
    /// Datagrams dropped at the queue's tail.
    pub dropped_packets: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
    /// The fullest the queue was, bytes.
    pub peak_queue_bytes: usize,
}

/// A token bucket and its queue.
#[derive(Debug)]
pub struct Downlink {
    cap: DownlinkCap,
    limit: usize,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    queue: VecDeque<(Vec<u8>, SocketAddr)>,
    queued: usize,
    pool: Vec<Vec<u8>>,
    report: DownlinkReport,
}

impl Downlink {
    /// A link with a full bucket and an empty queue at `now`.
    pub fn new(cap: DownlinkCap, now: Instant) -> Downlink {
        let burst = burst_bytes(cap.rate_bps);
        let limit = cap.queue_bytes();
        Downlink {
            cap,
            limit,
            burst,
            tokens: burst,
            refilled: now,
            queue: VecDeque::new(),
            queued: 0,
            pool: Vec::new(),
            report: DownlinkReport {
                rate_bps: cap.rate_bps,
                queue_ms: cap.queue.as_millis() as u64,
                queue_bytes: limit,
                ..DownlinkReport::default()
            },
        }
    }

    /// A datagram from `source` arrives: queued, or dropped (false) when the queue is full.
    pub fn offer(&mut self, data: &[u8], source: SocketAddr) -> bool {
        self.report.offered_packets += 1;
        self.report.offered_bytes += data.len() as u64;
        if self.queued + data.len() > self.limit {
            self.report.dropped_packets += 1;
            self.report.dropped_bytes += data.len() as u64;
            return false;
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        self.queued += data.len();
        self.report.peak_queue_bytes = self.report.peak_queue_bytes.max(self.queued);
        self.queue.push_back((buf, source));
        true
    }

    /// The next datagram the link delivers by `now`, if the bucket holds its size. Give the
    /// buffer back with [`Downlink::recycle`].
    pub fn pop(&mut self, now: Instant) -> Option<(Vec<u8>, SocketAddr)> {
        self.refill(now);
        let len = self.queue.front()?.0.len() as f64;
        // A thousandth of a byte of slack: the refill's floating point must not hold back a
        // datagram woken exactly at its release time.
        if len > self.tokens + 1e-3 {
            return None;
        }
        self.tokens -= len;
        let (buf, source) = self.queue.pop_front().expect("front checked above");
        self.queued -= buf.len();
        self.report.delivered_packets += 1;
        self.report.delivered_bytes += buf.len() as u64;
        Some((buf, source))
    }

    /// Return a buffer [`Downlink::pop`] handed out.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < POOL {
            self.pool.push(buf);
        }
    }

    /// When the datagram at the head of the queue may leave (`None`: the queue is empty).
    pub fn next_release(&self) -> Option<Instant> {
        let len = self.queue.front()?.0.len() as f64;
        let missing = (len - self.tokens).max(0.0);
        let wait = missing * 8.0 / self.cap.rate_bps.max(1) as f64;
        // Rounded up to the microsecond, so that the bucket holds enough when woken.
        Some(self.refilled + Duration::from_micros((wait * 1e6).ceil() as u64))
    }

    /// What it did so far.
    pub fn report(&self) -> DownlinkReport {
        self.report.clone()
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        if dt > 0.0 {
            self.tokens = (self.tokens + dt * self.cap.rate_bps as f64 / 8.0).min(self.burst);
            self.refilled = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn cap(rate_bps: u64, queue_ms: u64) -> DownlinkCap {
        DownlinkCap {
            rate_bps,
            queue: Duration::from_millis(queue_ms),
        }
    }

    #[test]
    fn caps_parse_and_name_their_class() {
        let q = Duration::from_millis(150);
        let caps = parse_caps("300k, 1m,2.5M,none,800000", q).unwrap();
        assert_eq!(caps.len(), 5);
        assert_eq!(caps[0], Some(cap(300_000, 150)));
        assert_eq!(caps[1].unwrap().rate_bps, 1_000_000);
        assert_eq!(caps[2].unwrap().rate_bps, 2_500_000);
        assert_eq!(caps[3], None);
        let names: Vec<String> = caps
            .iter()
            .map(|c| class_name(c.map(|c| c.rate_bps)))
            .collect();
        assert_eq!(names, ["300k", "1m", "2.5m", "uncapped", "800k"]);
        assert!(parse_caps("300k,fast", q).is_err());
        assert!(parse_caps("", q).is_err());
    }

    #[test]
    fn the_queue_has_a_floor() {
        // 300 kbit/s for 200 ms is 7500 bytes; 100 kbit/s for 100 ms would be 1250.
        assert_eq!(cap(300_000, 200).queue_bytes(), 7500);
        assert_eq!(cap(100_000, 100).queue_bytes(), MIN_QUEUE_BYTES);
    }

    #[test]
    fn the_link_delivers_at_its_rate() {
        // 800 kbit/s = 100 000 bytes/s; 1000-byte datagrams leave every 10 ms once the
        // bucket's burst is spent.
        let t0 = Instant::now();
        let mut link = Downlink::new(cap(800_000, 1000), t0);
        for _ in 0..50 {
            assert!(link.offer(&[0u8; 1000], addr()));
        }
        let mut delivered = 0;
        let mut now = t0;
        // Half a second of link time, stepping 1 ms.
        for _ in 0..500 {
            while let Some((buf, _)) = link.pop(now) {
                delivered += 1;
                link.recycle(buf);
            }
            now += Duration::from_millis(1);
        }
        // 3000 bytes of burst (3 datagrams) plus 50 000 bytes in 0.5 s (50 datagrams) would
        // be more than was offered: everything is delivered, and no faster than the rate.
        assert_eq!(delivered, 50);
        let r = link.report();
        assert_eq!(
            (r.offered_packets, r.delivered_packets, r.dropped_packets),
            (50, 50, 0)
        );
        assert_eq!(r.delivered_bytes, 50_000);

        // Another 50 in 100 ms of link time: 3 from the refilled burst, 10 at the rate.
        for _ in 0..50 {
            link.offer(&[0u8; 1000], addr());
        }
        let mut n = 0;
        for _ in 0..=100 {
            while let Some((buf, _)) = link.pop(now) {
                n += 1;
                link.recycle(buf);
            }
            now += Duration::from_millis(1);
        }
        assert!((12..=14).contains(&n), "{n} delivered in 100 ms");
    }

    #[test]
    fn a_full_queue_drops_at_its_tail() {
        let t0 = Instant::now();
        // 6000-byte floor: six 1000-byte datagrams fit, the seventh does not.
        let mut link = Downlink::new(cap(100_000, 10), t0);
        let accepted = (0..10).filter(|_| link.offer(&[1u8; 1000], addr())).count();
        assert_eq!(accepted, 6);
        let r = link.report();
        assert_eq!((r.dropped_packets, r.dropped_bytes), (4, 4000));
        assert_eq!(r.peak_queue_bytes, 6000);
        // What was queued first leaves first.
        let (first, _) = link.pop(t0).unwrap();
        assert_eq!(first.len(), 1000);
    }

    #[test]
    fn the_head_of_the_queue_says_when_it_leaves() {
        let t0 = Instant::now();
        let mut link = Downlink::new(cap(80_000, 1000), t0);
        assert_eq!(link.next_release(), None);
        // Spend the 3000-byte burst, then a 1000-byte datagram needs 100 ms at 10 000 B/s.
        link.offer(&[0u8; 3000], addr());
        link.offer(&[0u8; 1000], addr());
        assert!(link.pop(t0).is_some());
        assert!(link.pop(t0).is_none());
        let at = link.next_release().unwrap();
        assert_eq!(at - t0, Duration::from_millis(100));
        assert!(link.pop(at - Duration::from_millis(1)).is_none());
        assert!(link.pop(at).is_some());
        assert_eq!(link.next_release(), None);
    }
}
