//! How far behind a worker is: what it tells its shard as `Input::Backlog` (the longest any
//! input waiting for it may have waited) and `Input::Idle` (how long it has waited for input
//! in all), which `manifold-core`'s `overload.rs` sheds by.
//!
//! The backlog starts as a bound: the worker knows when its socket's receive queue and its
//! relay inbox were last seen empty, and whatever waits in them arrived since. A worker that
//! stays busy without the queue ever running dry reports that whole stretch, even when no
//! datagram waited that long. So once the bound passes [`MEASURE_AFTER`], the worker asks
//! the kernel how long the datagram it just read had waited (its receive timestamp, see
//! `MediaSocket::last_datagram_age`), and the bound is lowered by what it overstated. A
//! kernel that stamps nothing would make every age look fresh, so ages are trusted only
//! once one of at least [`STAMPS_PROVEN`] was seen.

use std::time::{Duration, Instant};

/// A bound under this is not worth an `ioctl`: the worker is not behind.
pub(crate) const MEASURE_AFTER: Duration = Duration::from_millis(50);
/// While behind, the wait is measured at most this often.
pub(crate) const MEASURE_EVERY: Duration = Duration::from_millis(10);
/// An age this long shows the kernel stamps datagrams (an unstamped one reads as fresh).
pub(crate) const STAMPS_PROVEN: Duration = Duration::from_millis(1);

/// One worker's view of its queues.
#[derive(Debug)]
pub(crate) struct Backlog {
    socket_empty_at: Instant,
    relay_empty_at: Instant,
    /// How much `now − socket_empty_at` overstates the socket's wait, from the last
    /// measurement since the queue was last empty.
    socket_excess: Duration,
    measured_at: Option<Instant>,
    stamps_work: bool,
    /// Time spent blocked in the poll since the worker started.
    idle: Duration,
}

impl Backlog {
    pub fn new(now: Instant) -> Self {
        Backlog {
            socket_empty_at: now,
            relay_empty_at: now,
            socket_excess: Duration::ZERO,
            measured_at: None,
            stamps_work: false,
            idle: Duration::ZERO,
        }
    }

    /// The socket's receive queue was empty at `at`.
    pub fn socket_empty(&mut self, at: Instant) {
        self.socket_empty_at = at;
        self.socket_excess = Duration::ZERO;
        self.measured_at = None;
    }

    /// The relay inbox was empty at `at`.
    pub fn relay_empty(&mut self, at: Instant) {
        self.relay_empty_at = at;
    }

    /// The worker waited for input from `from` to `to`.
    pub fn waited(&mut self, from: Instant, to: Instant) {
        self.idle += to.saturating_duration_since(from);
    }

    /// Time spent waiting for input in all (`Input::Idle`).
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Whether the wait of the datagram just read should be measured now.
    pub fn wants_measure(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.socket_empty_at) >= MEASURE_AFTER
            && self
                .measured_at
                .is_none_or(|t| now.saturating_duration_since(t) >= MEASURE_EVERY)
    }

    /// The datagram read at `now` had waited `age` in the kernel (`None`: not known).
    pub fn measured(&mut self, now: Instant, age: Option<Duration>) {
        self.measured_at = Some(now);
        let Some(age) = age else {
            return;
        };
        if age >= STAMPS_PROVEN {
            self.stamps_work = true;
        }
        if self.stamps_work {
            let bound = now.saturating_duration_since(self.socket_empty_at);
            self.socket_excess = bound.saturating_sub(age);
        }
    }

    /// The longest any input waiting for the worker may have waited at `now`.
    pub fn at(&self, now: Instant) -> Duration {
        let socket = now
            .saturating_duration_since(self.socket_empty_at)
            .saturating_sub(self.socket_excess);
        socket.max(now.saturating_duration_since(self.relay_empty_at))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test's epoch
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A worker busy for 400 ms without its socket queue running dry, its relay inbox
    /// empty now: the backlog and the time now.
    fn behind_400_ms() -> (Backlog, Instant) {
        let t0 = Instant::now();
        let mut b = Backlog::new(t0);
        let now = t0 + 400 * MS;
        b.relay_empty(now);
        (b, now)
    }

    #[test]
    fn the_bound_is_the_time_since_a_queue_was_last_empty() {
        let t0 = Instant::now();
        let mut b = Backlog::new(t0);
        assert_eq!(b.at(t0 + 30 * MS), 30 * MS);
        b.socket_empty(t0 + 20 * MS);
        assert_eq!(b.at(t0 + 30 * MS), 30 * MS, "the relay inbox, still");
        b.relay_empty(t0 + 25 * MS);
        assert_eq!(b.at(t0 + 30 * MS), 10 * MS);
        assert!(!b.wants_measure(t0 + 30 * MS), "not behind");
    }

    #[test]
    fn a_measured_wait_lowers_the_bound_until_the_queue_is_empty_again() {
        let (mut b, now) = behind_400_ms();
        assert!(b.wants_measure(now));
        // Busy for 400 ms without the queue running dry, but what it reads waited 30 ms.
        b.measured(now, Some(30 * MS));
        assert_eq!(b.at(now), 30 * MS);
        assert!(!b.wants_measure(now + 5 * MS), "not again so soon");
        b.relay_empty(now + 20 * MS);
        assert_eq!(
            b.at(now + 20 * MS),
            50 * MS,
            "grows from there until measured"
        );
        assert!(b.wants_measure(now + 20 * MS));
        b.measured(now + 20 * MS, Some(10 * MS));
        assert_eq!(b.at(now + 20 * MS), 10 * MS);
        b.socket_empty(now + 30 * MS);
        b.relay_empty(now + 40 * MS);
        assert_eq!(b.at(now + 40 * MS), 10 * MS);
    }

    #[test]
    fn ages_are_trusted_only_once_the_kernel_was_seen_stamping() {
        let (mut b, now) = behind_400_ms();
        // An unstamped datagram reads as just arrived: no proof yet, the bound stays.
        b.measured(now, Some(Duration::from_micros(4)));
        assert_eq!(b.at(now), 400 * MS);
        b.measured(now + 10 * MS, None);
        assert_eq!(b.at(now + 10 * MS), 410 * MS);
        b.measured(now + 20 * MS, Some(5 * MS));
        b.relay_empty(now + 20 * MS);
        assert_eq!(b.at(now + 20 * MS), 5 * MS);
        // From then on a fresh one is believed.
        b.measured(now + 30 * MS, Some(Duration::from_micros(4)));
        b.relay_empty(now + 30 * MS);
        assert!(b.at(now + 30 * MS) < MS);
    }

    #[test]
    fn idle_time_adds_up() {
        let t0 = Instant::now();
        let mut b = Backlog::new(t0);
        b.waited(t0, t0 + 3 * MS);
        b.waited(t0 + 10 * MS, t0 + 12 * MS);
        assert_eq!(b.idle(), 5 * MS);
    }
}
