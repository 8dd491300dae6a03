//! Overload: what a shard does when its worker cannot keep up. The I/O layer says, with
//! [`Input::Backlog`](crate::Input::Backlog), how long the input the worker is about to take
//! may have waited for it (its receive queue and relay inbox); [`Overload`] turns that into a
//! shedding level with hysteresis, and the fan-out (`fanout.rs`) applies it.
//!
//! The policy, in order:
//! 1. **Video first.** Past [`OverloadConfig::shed_video_after`] of backlog, no video is
//!    fanned out to this shard's subscribers; audio, RTCP, ICE and DTLS go on. Video is
//!    shed by whole streams, not by scattered packets that would break every decoder:
//!    when shedding ends, every video subscriber resumes on the next keyframe with
//!    continuous numbering (as after an unmute) and keyframes are asked for.
//! 2. **Then audio.** Past [`OverloadConfig::shed_audio_after`], audio is shed too.
//! 3. **Oldest first.** What is shed is what the worker takes next: the head of its queue,
//!    the packets that waited longest. The kernel, left alone, would drop the newest (a full
//!    socket buffer refuses what arrives) after the queue had grown to seconds of latency.
//!
//! Every packet shed is counted (`DropReason::ShedVideo`, `ShedAudio`, once per packet not
//! fanned out), and so is every episode ([`Overload::episodes`]). A level is held for
//! [`OverloadConfig::hold`] after the backlog last called for it, and a worker that
//! overloads again soon after recovering holds twice as long, up to
//! [`OverloadConfig::max_hold`], so that the keyframes asked for on recovery do not
//! make it flap. Decide, then apply: [`Overload::observe`] is a plain state machine with
//! time as an input, tested here without a shard.

use std::time::{Duration, Instant};

use manifold_api::MediaKind;

/// When a shard sheds, and for how long it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverloadConfig {
    /// Backlog at which video is shed (`None`: never).
    pub shed_video_after: Option<Duration>,
    /// Backlog at which audio is shed too (`None`: never).
    pub shed_audio_after: Option<Duration>,
    /// How long a level is held after the backlog last called for it.
    pub hold: Duration,
    /// Longest hold, for a worker that keeps overloading.
    pub max_hold: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            // Far above a healthy worker's backlog (well under a millisecond at rest, a few
            // with a keyframe fanned out to a hundred), far below the seconds a full socket
            // buffer holds.
            shed_video_after: Some(Duration::from_millis(150)),
            shed_audio_after: Some(Duration::from_millis(400)),
            hold: Duration::from_secs(1),
            max_hold: Duration::from_secs(16),
        }
    }
}

/// What the shard sheds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shed {
    /// Nothing: the worker keeps up.
    #[default]
    Nothing,
    /// Video.
    Video,
    /// Video and audio.
    All,
}

impl Shed {
    /// Whether media of `kind` is shed at this level.
    pub fn sheds(self, kind: MediaKind) -> bool {
        match self {
            Shed::Nothing => false,
            Shed::Video => kind == MediaKind::Video,
            Shed::All => true,
        }
    }

    /// The level as a number for metrics: 0 nothing, 1 video, 2 video and audio.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The shedding state machine of one shard.
#[derive(Debug)]
pub struct Overload {
    config: OverloadConfig,
    level: Shed,
    /// The level is held at least until then.
    until: Option<Instant>,
    /// The hold of the current (or last) episode.
    hold: Duration,
    /// When the last episode ended.
    calm_since: Option<Instant>,
    episodes: u64,
}

impl Overload {
    /// A shard that keeps up.
    pub fn new(config: OverloadConfig) -> Self {
        Overload {
            hold: config.hold,
            config,
            level: Shed::Nothing,
            until: None,
            calm_since: None,
            episodes: 0,
        }
    }

    /// What is shed now.
    pub fn level(&self) -> Shed {
        self.level
    }

    /// Episodes so far: times shedding started from nothing.
    pub fn episodes(&self) -> u64 {
        self.episodes
    }

    /// The level `backlog` calls for, before hysteresis.
    fn called_for(&self, backlog: Duration) -> Shed {
        let past = |t: Option<Duration>| t.is_some_and(|t| backlog >= t);
        if past(self.config.shed_audio_after) {
            Shed::All
        } else if past(self.config.shed_video_after) {
            Shed::Video
        } else {
            Shed::Nothing
        }
    }

    /// The input waiting for the worker may have waited `backlog`. Returns the change of
    /// level, `(from, to)`, if there is one.
    pub fn observe(&mut self, now: Instant, backlog: Duration) -> Option<(Shed, Shed)> {
        let called = self.called_for(backlog);
        let from = self.level;
        if called > from {
            if from == Shed::Nothing {
                self.episodes += 1;
                // Overloaded again within two holds of recovering: hold longer this time.
                let soon = self
                    .calm_since
                    .is_some_and(|t| now.saturating_duration_since(t) < self.hold * 2);
                self.hold = if soon {
                    (self.hold * 2).min(self.config.max_hold)
                } else {
                    self.config.hold
                };
            }
            self.level = called;
        }
        if called >= self.level && called != Shed::Nothing {
            self.until = Some(now + self.hold);
        } else if self.until.is_some_and(|t| now >= t) {
            // One step down per hold: from everything to video, then to nothing.
            self.level = match self.level {
                Shed::All => Shed::Video,
                _ => Shed::Nothing,
            };
            if self.level == Shed::Nothing {
                self.until = None;
                self.calm_since = Some(now);
            } else {
                self.until = Some(now + self.hold);
            }
        }
        (self.level != from).then_some((from, self.level))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test's epoch
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn overload() -> (Overload, Instant) {
        (Overload::new(OverloadConfig::default()), Instant::now())
    }

    #[test]
    fn a_worker_that_keeps_up_sheds_nothing() {
        let (mut o, t0) = overload();
        for i in 0..1000 {
            assert_eq!(o.observe(t0 + i * MS, (i % 100) * MS), None);
        }
        assert_eq!(o.level(), Shed::Nothing);
        assert_eq!(o.episodes(), 0);
    }

    #[test]
    fn video_goes_first_then_audio() {
        let (mut o, t0) = overload();
        assert_eq!(o.observe(t0, 150 * MS), Some((Shed::Nothing, Shed::Video)));
        assert!(o.level().sheds(MediaKind::Video));
        assert!(!o.level().sheds(MediaKind::Audio));
        assert_eq!(o.observe(t0 + MS, 399 * MS), None);
        assert_eq!(
            o.observe(t0 + 2 * MS, 400 * MS),
            Some((Shed::Video, Shed::All))
        );
        assert!(o.level().sheds(MediaKind::Audio));
        assert_eq!(o.episodes(), 1);
    }

    #[test]
    fn a_big_backlog_sheds_everything_at_once() {
        let (mut o, t0) = overload();
        assert_eq!(
            o.observe(t0, 2 * 1000 * MS),
            Some((Shed::Nothing, Shed::All))
        );
    }

    #[test]
    fn levels_are_held_then_step_down_one_at_a_time() {
        let (mut o, t0) = overload();
        o.observe(t0, 500 * MS);
        // The backlog is gone at once (shedding drains it), but the level holds.
        assert_eq!(o.observe(t0 + 999 * MS, Duration::ZERO), None);
        assert_eq!(
            o.observe(t0 + 1000 * MS, Duration::ZERO),
            Some((Shed::All, Shed::Video))
        );
        assert_eq!(o.observe(t0 + 1999 * MS, Duration::ZERO), None);
        assert_eq!(
            o.observe(t0 + 2000 * MS, Duration::ZERO),
            Some((Shed::Video, Shed::Nothing))
        );
        assert_eq!(o.observe(t0 + 3000 * MS, Duration::ZERO), None);
    }

    #[test]
    fn a_backlog_that_stays_keeps_the_level() {
        let (mut o, t0) = overload();
        o.observe(t0, 200 * MS);
        for s in 1..10 {
            assert_eq!(o.observe(t0 + s * 900 * MS, 160 * MS), None);
        }
        assert_eq!(o.level(), Shed::Video);
        // A backlog below video's threshold does not hold video's level.
        assert_eq!(o.observe(t0 + 8500 * MS, 100 * MS), None);
        assert_eq!(
            o.observe(t0 + 9100 * MS, 100 * MS),
            Some((Shed::Video, Shed::Nothing))
        );
    }

    #[test]
    fn overloading_again_soon_holds_longer_up_to_the_cap() {
        let (mut o, t0) = overload();
        let mut t = t0;
        let mut holds = Vec::new();
        for _ in 0..8 {
            o.observe(t, 200 * MS);
            let start = t;
            while o.level() != Shed::Nothing {
                t += 10 * MS;
                o.observe(t, Duration::ZERO);
            }
            holds.push((t - start).as_millis() / 100 * 100);
            // Overloaded again right after recovering.
            t += 10 * MS;
        }
        assert_eq!(holds, [1000, 2000, 4000, 8000, 16000, 16000, 16000, 16000]);
        assert_eq!(o.episodes(), 8);
        // After a long calm the hold is back to its start.
        t += 60 * 1000 * MS;
        o.observe(t, 200 * MS);
        let start = t;
        while o.level() != Shed::Nothing {
            t += 10 * MS;
            o.observe(t, Duration::ZERO);
        }
        assert_eq!((t - start).as_millis() / 100 * 100, 1000);
    }

    #[test]
    fn thresholds_can_be_turned_off() {
        let mut o = Overload::new(OverloadConfig {
            shed_video_after: None,
            shed_audio_after: None,
            ..Default::default()
        });
        assert_eq!(o.observe(Instant::now(), Duration::from_secs(60)), None);
        let mut o = Overload::new(OverloadConfig {
            shed_audio_after: None,
            ..Default::default()
        });
        o.observe(Instant::now(), Duration::from_secs(60));
        assert_eq!(o.level(), Shed::Video);
    }
}
