//! Active speakers: who in a room is speaking, from the audio level every microphone packet
//! carries (RFC 6464 header extension), with hysteresis so a cough does not make a speaker
//! and a breath does not end one, and with a bounded rate of `speakers_changed` events.
//!
//! [`LevelMeter`] lives on each audio track and takes one sample per packet (a float add);
//! the shard's housekeeping rolls the meters every tick and asks [`RoomSpeakers`] whether
//! the room's list changed. The allocator reads the list to put speakers' video first.

use std::time::{Duration, Instant};

/// Most speakers reported at once.
pub(crate) const MAX_SPEAKERS: usize = 3;
/// Shortest time between two `speakers_changed` events of one room (at most three a second).
pub(crate) const MIN_EVENT_INTERVAL: Duration = Duration::from_millis(334);
/// Smoothed level at which a participant starts to count as speaking...
const ENTER_LEVEL: f32 = 0.35;
/// ...for at least this long.
const ENTER_AFTER: Duration = Duration::from_millis(200);
/// Smoothed level under which a speaker starts to count as quiet...
const LEAVE_LEVEL: f32 = 0.2;
/// ...for at least this long before it stops being a speaker.
const LEAVE_AFTER: Duration = Duration::from_millis(1200);
/// dBov at and below which a packet counts as silence (level 0); 0 dBov is level 1.
const SILENCE_DBOV: f32 = 70.0;

/// One audio track's loudness: per-packet samples, rolled into a smoothed level.
#[derive(Debug, Default)]
pub(crate) struct LevelMeter {
    sum: f32,
    count: u32,
    /// Smoothed level, 0 (silence) to 1.
    pub level: f32,
    loud_for: Duration,
    quiet_for: Duration,
    /// Counts as speaking now.
    pub speaking: bool,
}

impl LevelMeter {
    /// One packet's audio level, in str0m's form: `-dBov`, 0 the loudest, -127 silence.
    pub fn observe(&mut self, audio_level: i8) {
        let dbov = f32::from(audio_level.unsigned_abs());
        self.sum += ((SILENCE_DBOV - dbov) / SILENCE_DBOV).clamp(0.0, 1.0);
        self.count += 1;
    }

    /// Close a window of `dt`: smooth the level and apply the hysteresis. Returns whether
    /// `speaking` changed.
    pub fn roll(&mut self, dt: Duration) -> bool {
        let avg = if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f32
        };
        self.sum = 0.0;
        self.count = 0;
        self.level = 0.6 * self.level + 0.4 * avg;
        let was = self.speaking;
        if self.speaking {
            if self.level < LEAVE_LEVEL {
                self.quiet_for += dt;
                if self.quiet_for >= LEAVE_AFTER {
                    self.speaking = false;
                    self.loud_for = Duration::ZERO;
                }
            } else {
                self.quiet_for = Duration::ZERO;
            }
        } else if self.level >= ENTER_LEVEL {
            self.loud_for += dt;
            if self.loud_for >= ENTER_AFTER {
                self.speaking = true;
                self.quiet_for = Duration::ZERO;
            }
        } else {
            self.loud_for = Duration::ZERO;
        }
        was != self.speaking
    }
}

/// A room's reported speaker list and the rate limit on changing it.
#[derive(Debug)]
pub(crate) struct RoomSpeakers<K> {
    /// Last reported, loudest first.
    pub reported: Vec<K>,
    last_event: Option<Instant>,
}

impl<K> Default for RoomSpeakers<K> {
    fn default() -> Self {
        RoomSpeakers {
            reported: Vec::new(),
            last_event: None,
        }
    }
}

impl<K: Copy + PartialEq> RoomSpeakers<K> {
    /// `speaking` (key, level) pairs in any order: the new list to report, if it differs
    /// from the last one and the rate limit allows an event now. A change held back by the
    /// rate limit is reported at a later call.
    pub fn update(&mut self, now: Instant, speaking: &mut Vec<(K, f32)>) -> Option<&[K]> {
        speaking.sort_by(|a, b| b.1.total_cmp(&a.1));
        speaking.truncate(MAX_SPEAKERS);
        let same = speaking.len() == self.reported.len()
            && speaking.iter().zip(&self.reported).all(|(a, b)| a.0 == *b);
        if same {
            return None;
        }
        if self
            .last_event
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_EVENT_INTERVAL)
        {
            return None;
        }
        self.last_event = Some(now);
        self.reported.clear();
        self.reported.extend(speaking.iter().map(|(k, _)| *k));
        Some(&self.reported)
    }

    /// Is `k` among the reported speakers?
    pub fn contains(&self, k: K) -> bool {
        self.reported.contains(&k)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test's epoch
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    fn tick(m: &mut LevelMeter, dbov: i8, packets: usize) -> bool {
        for _ in 0..packets {
            m.observe(dbov);
        }
        m.roll(TICK)
    }

    #[test]
    fn speaking_needs_a_sustained_level_and_ends_after_a_sustained_quiet() {
        let mut m = LevelMeter::default();
        // One loud packet in silence does not make a speaker.
        tick(&mut m, -10, 1);
        for _ in 0..5 {
            tick(&mut m, -127, 5);
        }
        assert!(!m.speaking);
        // Talking at -20 dBov for half a second does.
        let mut at = None;
        for i in 0..5 {
            if tick(&mut m, -20, 5) {
                at = Some(i);
            }
        }
        assert!(m.speaking, "level {}", m.level);
        assert!(at.is_some_and(|i| i >= 1), "not on the first tick: {at:?}");
        // A short pause between words keeps the speaker.
        for _ in 0..5 {
            tick(&mut m, -127, 5);
        }
        assert!(m.speaking, "a half-second pause is not the end");
        for _ in 0..15 {
            tick(&mut m, -127, 5);
        }
        assert!(!m.speaking, "a long silence is");
    }

    #[test]
    fn events_are_loudest_first_bounded_and_rate_limited() {
        let t0 = Instant::now();
        let mut r = RoomSpeakers::<u32>::default();
        let mut s = vec![(1, 0.4), (2, 0.9), (3, 0.5), (4, 0.6)];
        assert_eq!(r.update(t0, &mut s), Some(&[2, 4, 3][..]));
        let mut again = vec![(2, 0.8), (4, 0.7), (3, 0.6)];
        assert_eq!(r.update(t0, &mut again), None, "no change, no event");
        let mut changed = vec![(1, 0.9)];
        assert_eq!(
            r.update(t0 + Duration::from_millis(100), &mut changed),
            None,
            "too soon"
        );
        let mut changed = vec![(1, 0.9)];
        assert_eq!(
            r.update(t0 + MIN_EVENT_INTERVAL, &mut changed),
            Some(&[1][..])
        );
        assert!(r.contains(1) && !r.contains(2));
        let mut none = Vec::new();
        assert_eq!(
            r.update(t0 + 2 * MIN_EVENT_INTERVAL, &mut none),
            Some(&[][..])
        );
    }
}
