//! Overload: what a shard does when its worker cannot keep up. The I/O layer says, with
//! [`Input::Backlog`](crate::Input::Backlog), how long the input the worker is about to take
//! may have waited for it (its receive queue and relay inbox); [`Overload`] turns that into
//! what is shed, with hysteresis, and the fan-out (`fanout.rs`) applies it.
//!
//! The policy, in order:
//! 0. **A spike is not saturation.** The worker also says how long it has waited for input
//!    in all ([`Input::Idle`](crate::Input::Idle)), and from it [`Overload`] keeps its
//!    **load**, the share of wall time it is busy, averaged over seconds
//!    ([`LOAD_TIME_CONSTANT`]). A backlog that load would drain within [`DRAIN_WITHIN`]
//!    (a burst of keyframes or joins on a worker with headroom) starts no episode: the
//!    worker catches up by itself, and shedding would only trade frozen video and
//!    keyframe requests for it. The projection: what waits is about `backlog × load` of
//!    work, and the worker gains `1 − load` per second on it. Past
//!    [`OverloadConfig::shed_video_after`] twice over, or without a load measured yet, the
//!    backlog is shed by as below whatever the projection says.
//! 1. **Video first, a share at a time.** Past [`OverloadConfig::shed_video_after`] of
//!    backlog, the share of video subscriptions that still get video is cut by
//!    [`CUT`] (at once, then again every [`CUT_INTERVAL`] the backlog stays), and it grows
//!    back by [`RAISE`] per hold once the backlog is gone: additive increase,
//!    multiplicative decrease, so that a worker just past saturation sheds a little video
//!    and one far past sheds most. Per video track the newest subscriptions lose video
//!    first (they came when the worker was already full). A subscription loses whole
//!    frames, not scattered packets that would break its decoder: it gets nothing until
//!    its video comes back, then resumes on a keyframe with continuous numbering (as after
//!    an unmute) and the keyframe is asked for. Audio, RTCP, ICE and DTLS go on.
//! 2. **Then audio.** Past [`OverloadConfig::shed_audio_after`], all video and audio too.
//! 3. **Oldest first.** What is shed is what the worker takes next: the head of its queue,
//!    the packets that waited longest. The kernel, left alone, would drop the newest (a full
//!    socket buffer refuses what arrives) after the queue had grown to seconds of latency.
//!
//! Every forward not made is counted (`DropReason::ShedVideo`, `ShedAudio`, one per
//! subscriber and packet), and so is every episode ([`Overload::episodes`]). The share
//! grows back one step per [`OverloadConfig::hold`], and a worker that overloads again soon
//! after a step holds twice as long before the next, up to [`OverloadConfig::max_hold`], so
//! that the keyframes asked for on recovery do not make it flap. Decide, then apply:
//! [`Overload::observe`] is a plain state machine with time as an input, tested here
//! without a shard.

use std::time::{Duration, Instant};

use manifold_api::MediaKind;

/// The share of video subscriptions kept is multiplied by this at each cut.
pub const CUT: f64 = 0.7;
/// The backlog must stay this long past a cut before the next one: a cut takes time to
/// drain the queue it came too late for.
pub const CUT_INTERVAL: Duration = Duration::from_millis(1000);
/// The share grows back by this much per hold.
pub const RAISE: f64 = 0.1;
/// A share this small is none: the last few subscriptions are not worth the keyframes.
const NONE_BELOW: f64 = 0.05;
/// A backlog the worker's load drains within this long starts no episode. A cut costs
/// more: its share grows back one [`RAISE`] per hold, three seconds of frozen video for the
/// subscriptions cut (and a round of keyframes); waiting costs a latency that is below
/// twice the video threshold and falls. Longer waits were tried (2 s): the backlog then
/// reached twice the threshold more often, and was cut too late to spare audio.
pub const DRAIN_WITHIN: Duration = Duration::from_secs(1);
/// The load is averaged with this time constant: long enough that a spike of a few
/// hundred milliseconds moves it little, short enough to follow a room that grew.
pub const LOAD_TIME_CONSTANT: Duration = Duration::from_secs(5);
/// The load is sampled at most this often (idle time over this much wall time at least).
const LOAD_SAMPLE: Duration = Duration::from_millis(100);
/// Wall time measured before the load is trusted.
const LOAD_WARMUP: Duration = Duration::from_secs(1);

/// When a shard sheds, and for how long it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverloadConfig {
    /// Backlog at which video is shed (`None`: never).
    pub shed_video_after: Option<Duration>,
    /// Backlog at which audio is shed too (`None`: never).
    pub shed_audio_after: Option<Duration>,
    /// How long the backlog must stay gone before the share grows a step (or audio comes
    /// back).
    pub hold: Duration,
    /// Longest hold, for a worker that keeps overloading.
    pub max_hold: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            // Above a healthy worker's backlog: well under a millisecond at rest, but a
            // keyframe fanned out to 200 subscribers is some 160 ms of work on a small core,
            // and shedding must not answer a burst it would only replace by keyframe
            // requests. Far below the seconds a full socket buffer holds.
            shed_video_after: Some(Duration::from_millis(250)),
            shed_audio_after: Some(Duration::from_millis(600)),
            hold: Duration::from_secs(1),
            max_hold: Duration::from_secs(16),
        }
    }
}

/// What the shard sheds now, coarsely (for metrics and logs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shed {
    /// Nothing: the worker keeps up.
    #[default]
    Nothing,
    /// Some or all video.
    Video,
    /// All video, and audio.
    All,
}

impl Shed {
    /// The level as a number for metrics: 0 nothing, 1 video, 2 video and audio.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The shedding state machine of one shard.
#[derive(Debug)]
pub struct Overload {
    config: OverloadConfig,
    /// Share of each video track's subscriptions that get video, 0 to 1.
    share: f64,
    audio_shed: bool,
    /// When the backlog last called for shedding video / audio.
    video_high_at: Option<Instant>,
    audio_high_at: Option<Instant>,
    last_cut: Option<Instant>,
    last_raise: Option<Instant>,
    /// The hold now: the wait between raises.
    hold: Duration,
    /// When the last episode ended.
    calm_since: Option<Instant>,
    episodes: u64,
    load: Load,
    /// Backlogs waited out as spikes: times one past the video threshold started no
    /// episode because the load would drain it.
    spikes: u64,
    spike_high: bool,
}

/// The worker's load: the share of wall time it was busy, a moving average.
#[derive(Debug, Default)]
struct Load {
    /// The last sample: when, and the idle total then.
    last: Option<(Instant, Duration)>,
    /// Wall time sampled so far (up to the warm-up).
    measured: Duration,
    average: f64,
}

impl Load {
    fn note(&mut self, now: Instant, idle: Duration) {
        let Some((at, idle_then)) = self.last else {
            self.last = Some((now, idle));
            return;
        };
        let wall = now.saturating_duration_since(at);
        if wall < LOAD_SAMPLE {
            return;
        }
        let waited = idle.saturating_sub(idle_then).min(wall);
        let busy = 1.0 - waited.as_secs_f64() / wall.as_secs_f64();
        let alpha = if self.measured < LOAD_WARMUP {
            // Until the warm-up is over, the plain average of what was measured.
            wall.as_secs_f64() / (self.measured + wall).as_secs_f64()
        } else {
            1.0 - (-wall.as_secs_f64() / LOAD_TIME_CONSTANT.as_secs_f64()).exp()
        };
        self.average += alpha * (busy - self.average);
        self.measured = (self.measured + wall).min(LOAD_WARMUP);
        self.last = Some((now, idle));
    }

    /// The average, once enough was measured.
    fn get(&self) -> Option<f64> {
        (self.measured >= LOAD_WARMUP).then_some(self.average.clamp(0.0, 1.0))
    }
}

/// How long a worker at `load` takes to drain a backlog of `backlog`: the work waiting is
/// about `backlog × load`, and it gains `1 − load` per second on it. `None`: never.
pub fn drain_time(backlog: Duration, load: f64) -> Option<Duration> {
    let headroom = 1.0 - load;
    if headroom <= 0.0 {
        return None;
    }
    let s = backlog.as_secs_f64() * load / headroom;
    (s < 3600.0).then(|| Duration::from_secs_f64(s))
}

/// What changed in one observation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    /// The level before and after.
    pub from: Shed,
    pub to: Shed,
    /// The share of video subscriptions kept, after.
    pub share: f64,
}

impl Overload {
    /// A shard that keeps up.
    pub fn new(config: OverloadConfig) -> Self {
        Overload {
            hold: config.hold,
            config,
            share: 1.0,
            audio_shed: false,
            video_high_at: None,
            audio_high_at: None,
            last_cut: None,
            last_raise: None,
            calm_since: None,
            episodes: 0,
            load: Load::default(),
            spikes: 0,
            spike_high: false,
        }
    }

    /// The worker has waited `idle` in all for input by `now` (`Input::Idle`).
    pub fn note_idle(&mut self, now: Instant, idle: Duration) {
        self.load.note(now, idle);
    }

    /// The worker's load, 0 to 1, once measured for a second.
    pub fn load(&self) -> Option<f64> {
        self.load.get()
    }

    /// Backlogs past the video threshold waited out as spikes.
    pub fn spikes(&self) -> u64 {
        self.spikes
    }

    /// Whether a backlog past the video threshold is a spike the worker drains by itself
    /// within [`DRAIN_WITHIN`], at its load; never past the threshold twice over.
    fn is_spike(&self, backlog: Duration) -> bool {
        let Some(threshold) = self.config.shed_video_after else {
            return false;
        };
        if backlog >= threshold * 2 {
            return false;
        }
        self.load
            .get()
            .and_then(|load| drain_time(backlog, load))
            .is_some_and(|d| d <= DRAIN_WITHIN)
    }

    /// What is shed now, coarsely.
    pub fn level(&self) -> Shed {
        if self.audio_shed {
            Shed::All
        } else if self.share < 1.0 {
            Shed::Video
        } else {
            Shed::Nothing
        }
    }

    /// Whether media of `kind` is shed whole: audio at the second level, video when no
    /// share of it is kept.
    pub fn sheds_all(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.audio_shed,
            MediaKind::Video => self.audio_shed || self.share <= 0.0,
        }
    }

    /// How many of a video track's `n` subscriptions (the oldest) get video now: the share
    /// of `n`, rounded.
    pub fn video_kept(&self, n: usize) -> usize {
        if self.sheds_all(MediaKind::Video) {
            0
        } else {
            ((n as f64 * self.share).round() as usize).min(n)
        }
    }

    /// The share of video subscriptions kept, 0 to 1.
    pub fn video_share(&self) -> f64 {
        if self.audio_shed { 0.0 } else { self.share }
    }

    /// Episodes so far: times shedding started from nothing.
    pub fn episodes(&self) -> u64 {
        self.episodes
    }

    /// The input waiting for the worker may have waited `backlog`. Returns what changed,
    /// if anything did.
    pub fn observe(&mut self, now: Instant, backlog: Duration) -> Option<Change> {
        let past = |t: Option<Duration>| t.is_some_and(|t| backlog >= t);
        let (from, share_before) = (self.level(), self.share);
        let video_high = past(self.config.shed_video_after);
        // Only an episode's start is judged so. Once the worker sheds, its load no longer
        // says what it would be without shedding, and the steps below apply.
        let spike = video_high && from == Shed::Nothing && self.is_spike(backlog);
        if spike && !self.spike_high {
            self.spikes += 1;
        }
        self.spike_high = spike;
        if video_high && !spike {
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
            } else if self
                .last_raise
                .is_some_and(|t| now.saturating_duration_since(t) < self.hold * 2)
            {
                // The last raise was one too many: wait longer before the next.
                self.hold = (self.hold * 2).min(self.config.max_hold);
                self.last_raise = None;
            }
            let due = self
                .last_cut
                .is_none_or(|t| now.saturating_duration_since(t) >= CUT_INTERVAL);
            if due {
                self.share *= CUT;
                if self.share < NONE_BELOW {
                    self.share = 0.0;
                }
                self.last_cut = Some(now);
            }
            self.video_high_at = Some(now);
        } else if self.share < 1.0 {
            let calm_for = |t: Option<Instant>| {
                t.is_none_or(|t| now.saturating_duration_since(t) >= self.hold)
            };
            if calm_for(self.video_high_at) && calm_for(self.last_raise) && !self.audio_shed {
                self.share = (self.share + RAISE).min(1.0);
                // Floating steps: close enough to whole is whole.
                if self.share > 1.0 - 1e-9 {
                    self.share = 1.0;
                }
                self.last_raise = Some(now);
                self.last_cut = None;
            }
        }
        if past(self.config.shed_audio_after) {
            self.audio_shed = true;
            self.audio_high_at = Some(now);
            self.share = 0.0;
        } else if self.audio_shed
            && self
                .audio_high_at
                .is_none_or(|t| now.saturating_duration_since(t) >= self.hold)
        {
            self.audio_shed = false;
            // Video starts again from nothing, a step per hold.
            self.last_raise = Some(now);
        }
        let to = self.level();
        if to == Shed::Nothing && from != Shed::Nothing {
            self.calm_since = Some(now);
            self.last_raise = None;
            self.last_cut = None;
        }
        (to != from || self.share != share_before).then_some(Change {
            from,
            to,
            share: self.video_share(),
        })
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

    /// Observe `backlog` every 10 ms from `*t` for `d`; the share at the end.
    fn run(o: &mut Overload, t: &mut Instant, d: Duration, backlog: Duration) -> f64 {
        let end = *t + d;
        while *t < end {
            *t += 10 * MS;
            o.observe(*t, backlog);
        }
        o.video_share()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn a_worker_that_keeps_up_sheds_nothing() {
        let (mut o, t0) = overload();
        for i in 0..1000 {
            assert_eq!(o.observe(t0 + i * MS, (i % 100) * MS), None);
        }
        assert_eq!(o.level(), Shed::Nothing);
        assert_eq!(o.video_kept(100), 100);
        assert_eq!(o.episodes(), 0);
    }

    #[test]
    fn video_is_cut_by_a_share_and_cut_again_while_the_backlog_stays() {
        let (mut o, t0) = overload();
        let c = o.observe(t0, 250 * MS).expect("a change");
        assert_eq!((c.from, c.to), (Shed::Nothing, Shed::Video));
        assert!(close(c.share, CUT));
        assert_eq!(o.video_kept(100), 70, "the oldest 70 of 100 keep video");
        assert!(!o.sheds_all(MediaKind::Audio));
        // Not again before the cut had time to drain the queue.
        assert_eq!(o.observe(t0 + 999 * MS, 300 * MS), None);
        assert!(o.observe(t0 + 1000 * MS, 300 * MS).is_some());
        assert!(close(o.video_share(), CUT * CUT));
        assert_eq!(o.video_kept(100), 49);
        // Kept up long enough, nothing is left.
        let mut t = t0 + 1000 * MS;
        run(&mut o, &mut t, Duration::from_secs(10), 300 * MS);
        assert_eq!(o.video_share(), 0.0);
        assert_eq!(o.video_kept(100), 0);
        assert!(o.sheds_all(MediaKind::Video));
        assert!(!o.sheds_all(MediaKind::Audio));
        assert_eq!(o.episodes(), 1);
    }

    #[test]
    fn the_share_grows_back_a_step_per_hold() {
        let (mut o, t0) = overload();
        o.observe(t0, 300 * MS);
        let mut t = t0;
        // Calm, but not for a hold yet.
        assert!(close(run(&mut o, &mut t, 990 * MS, Duration::ZERO), CUT));
        assert!(close(
            run(&mut o, &mut t, 20 * MS, Duration::ZERO),
            CUT + RAISE
        ));
        assert!(close(
            run(&mut o, &mut t, Duration::from_secs(1), Duration::ZERO),
            CUT + 2.0 * RAISE
        ));
        assert_eq!(
            run(&mut o, &mut t, Duration::from_secs(1), Duration::ZERO),
            1.0
        );
        assert_eq!(o.level(), Shed::Nothing);
        assert_eq!(o.observe(t + Duration::from_secs(60), Duration::ZERO), None);
    }

    #[test]
    fn audio_goes_after_all_video_and_comes_back_before_it() {
        let (mut o, t0) = overload();
        o.observe(t0, 300 * MS);
        let c = o.observe(t0 + MS, 600 * MS).expect("a change");
        assert_eq!((c.from, c.to, c.share), (Shed::Video, Shed::All, 0.0));
        assert!(o.sheds_all(MediaKind::Audio) && o.sheds_all(MediaKind::Video));
        let mut t = t0 + MS;
        run(&mut o, &mut t, 990 * MS, Duration::ZERO);
        assert_eq!(o.level(), Shed::All, "held");
        run(&mut o, &mut t, 20 * MS, Duration::ZERO);
        assert_eq!(o.level(), Shed::Video, "audio is back, video not yet");
        assert_eq!(o.video_kept(10), 0);
        run(&mut o, &mut t, Duration::from_secs(1), Duration::ZERO);
        assert!(
            close(o.video_share(), RAISE),
            "then video, a step at a time"
        );
    }

    #[test]
    fn a_big_backlog_sheds_everything_at_once() {
        let (mut o, t0) = overload();
        let c = o.observe(t0, 2000 * MS).expect("a change");
        assert_eq!((c.from, c.to), (Shed::Nothing, Shed::All));
    }

    #[test]
    fn overloading_again_soon_after_a_raise_holds_longer_up_to_the_cap() {
        let (mut o, t0) = overload();
        let mut t = t0;
        o.observe(t, 300 * MS);
        // Each raise brings the overload back at once: the waits between raises double.
        let mut waits = Vec::new();
        for _ in 0..7 {
            let before = t;
            let share = o.video_share();
            while o.video_share() <= share {
                t += 10 * MS;
                o.observe(t, Duration::ZERO);
            }
            waits.push((t - before).as_millis() / 100 * 100);
            t += 10 * MS;
            o.observe(t, 300 * MS);
        }
        assert_eq!(waits, [1000, 2000, 4000, 8000, 16000, 16000, 16000]);
        assert_eq!(o.episodes(), 1);
    }

    #[test]
    fn an_episode_after_a_long_calm_starts_from_the_short_hold() {
        let (mut o, t0) = overload();
        let mut t = t0;
        o.observe(t, 300 * MS);
        run(&mut o, &mut t, Duration::from_secs(10), Duration::ZERO);
        assert_eq!(o.level(), Shed::Nothing);
        t += Duration::from_secs(60);
        o.observe(t, 300 * MS);
        assert_eq!(o.episodes(), 2);
        let start = t;
        while o.level() != Shed::Nothing {
            t += 10 * MS;
            o.observe(t, Duration::ZERO);
        }
        // Three raises of a hold each, from 0.7.
        assert_eq!((t - start).as_millis() / 100 * 100, 3000);
    }

    /// Feed the load: busy `share` of every 10 ms from `*t` for `d`, the idle total in `idle`.
    fn busy(o: &mut Overload, t: &mut Instant, idle: &mut Duration, d: Duration, share: f64) {
        let end = *t + d;
        while *t < end {
            *t += 10 * MS;
            *idle += (10 * MS).mul_f64(1.0 - share);
            o.note_idle(*t, *idle);
        }
    }

    /// A shard whose worker has been busy `share` of the time for `d`: the overload, the
    /// time now and the idle total so far.
    fn at_load(share: f64, d: Duration) -> (Overload, Instant, Duration) {
        let (mut o, mut t) = overload();
        let mut idle = Duration::ZERO;
        o.note_idle(t, idle);
        busy(&mut o, &mut t, &mut idle, d, share);
        (o, t, idle)
    }

    #[test]
    fn the_load_is_the_busy_share_of_wall_time_averaged_over_seconds() {
        let (mut o, mut t, mut idle) = at_load(0.6, 500 * MS);
        assert_eq!(o.load(), None, "not measured long enough");
        busy(&mut o, &mut t, &mut idle, Duration::from_secs(2), 0.6);
        assert!((o.load().unwrap() - 0.6).abs() < 0.02, "{:?}", o.load());
        // Three hundred milliseconds without a rest move it little.
        busy(&mut o, &mut t, &mut idle, 300 * MS, 1.0);
        let after_spike = o.load().unwrap();
        assert!(after_spike > 0.6 && after_spike < 0.65, "{after_spike}");
        // Saturated for long, it follows.
        busy(&mut o, &mut t, &mut idle, Duration::from_secs(20), 1.0);
        assert!(o.load().unwrap() > 0.98, "{:?}", o.load());
    }

    #[test]
    fn the_drain_time_grows_with_the_load_and_is_never_at_saturation() {
        assert_eq!(drain_time(300 * MS, 0.5), Some(300 * MS));
        assert_eq!(drain_time(300 * MS, 0.75), Some(900 * MS));
        assert_eq!(drain_time(300 * MS, 1.0), None);
        assert!(drain_time(300 * MS, 0.99).unwrap() > Duration::from_secs(29));
    }

    #[test]
    fn a_spike_the_load_drains_is_waited_out() {
        let (mut o, mut t, _) = at_load(0.6, Duration::from_secs(3));
        // 300 ms behind at 60 %: drained in about 450 ms.
        for b in [250, 300, 350, 200, 50] {
            t += 10 * MS;
            assert_eq!(o.observe(t, b * MS), None, "backlog {b} ms");
        }
        assert_eq!(o.level(), Shed::Nothing);
        assert_eq!((o.episodes(), o.spikes()), (0, 1));
        // Past the threshold twice over, it is shed whatever the load says.
        let c = o.observe(t + MS, 500 * MS).expect("a change");
        assert_eq!((c.from, c.to), (Shed::Nothing, Shed::Video));
        assert_eq!(o.episodes(), 1);
    }

    #[test]
    fn a_saturated_worker_sheds_at_the_threshold() {
        // 90 % busy: 250 ms behind takes 2.25 s to drain.
        let (mut o, t, _) = at_load(0.9, Duration::from_secs(3));
        let c = o.observe(t, 250 * MS).expect("a change");
        assert_eq!((c.from, c.to), (Shed::Nothing, Shed::Video));
        assert_eq!(o.spikes(), 0);
    }

    #[test]
    fn without_a_load_the_backlog_alone_decides() {
        let (mut o, t) = overload();
        o.note_idle(t, Duration::ZERO);
        o.note_idle(t + 200 * MS, 150 * MS);
        assert_eq!(o.load(), None);
        assert!(o.observe(t + 210 * MS, 250 * MS).is_some());
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
        assert!(!o.sheds_all(MediaKind::Audio));
    }
}
