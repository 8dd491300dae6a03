//! Quality on real links, applied: every housekeeping tick (and whenever a subscriber's
//! downlink estimate changes) each subscriber's video subscriptions get their layers from
//! the allocator (`allocator.rs`), their forwarders are pointed at them, the bandwidth
//! estimator is told what to probe for, subscribers hear what they now receive
//! (`stream_state`), publishers hear which layers anyone needs (dynacast), and rooms hear
//! who speaks (`speakers.rs`).
//!
//! The decisions are the allocator's and the forwarder's, both plain and unit-tested; this
//! file only gathers their inputs from the shard and applies their outputs.

use std::time::{Duration, Instant};

use manifold_api::protocol::TrackSource;
use manifold_api::protocol::{MAX_LAYERS, Quality, QualityRequest, Speaker, StreamState};
use manifold_api::{CommandError, CoreEvent, MediaKind, ReplyValue, SessionKind, TrackId};
use slab::Slab;
use str0m::bwe::Bitrate;

use crate::allocator::{self, MAX_CHOICES, Priority, Want};
use crate::keys::{PKey, TKey};
use crate::layer;
use crate::participant::{
    Participant, SlotState, forget_resends, quiet_direction, set_local_direction,
};
use crate::shard::Shard;
use crate::track::Track;

/// What a layer is assumed to cost before it has been measured, by rank (lowest first):
/// the rates the SDK asks browsers for.
const NOMINAL_COST: [u64; MAX_CHOICES] = [150_000, 500_000, 1_500_000];

/// Share of a subscriber's estimate kept for each audio track it receives.
const AUDIO_RESERVE: u64 = 48_000;

/// A layer nobody needs any more is paused at its publisher after this long (a layer that
/// becomes needed is resumed at once).
pub(crate) const DYNACAST_PAUSE_AFTER: Duration = Duration::from_secs(3);

/// A subscription whose lowest layer does not fit keeps it this long before its video is
/// paused: a new estimator starts low and a short dip is not worth a freeze.
pub(crate) const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// The rates the bandwidth estimator is told change by more than this share before it is
/// told again.
const BWE_RETARGET_SHARE: f64 = 0.2;
/// The desired rate given to the bandwidth estimator is a multiple of this.
const DESIRED_STEP: u64 = 250_000;

/// Loss above this share of a subscriber's video means its link is full.
const CONGESTED_LOSS: f32 = 0.1;
/// Loss below this share lets the ceiling rise again.
const CLEAR_LOSS: f32 = 0.02;
/// How much the ceiling rises per clean report.
const CEILING_GROWTH: f64 = 1.08;

/// A ceiling on a subscriber's budget from the loss its receiver reports: the delay-based
/// estimate stops falling once a router's queue is full (the delay stays high, constant),
/// and the loss-based estimate falls only gradually; when a tenth or more of what is sent is
/// lost, what got through is what the link carries. It lifts again, step by step, while
/// reports are clean, and is gone once it no longer limits anything.
#[derive(Debug, Default)]
pub(crate) struct LossCeiling {
    /// Bits per second, if set.
    pub bps: Option<u64>,
    /// Video the last report showed the link carries without loss: a floor under the
    /// estimate, which can stay low for a while after a congestion has passed.
    pub proven: u64,
    /// The most sent since the last report: what the next report's loss was measured on.
    peak_sent: u64,
}

impl LossCeiling {
    /// The allocation now sends `bps` of video.
    pub fn sending(&mut self, bps: u64) {
        self.peak_sent = self.peak_sent.max(bps);
    }

    /// A receiver report of `loss` (0 to 1) while `sent` bits per second of video are being
    /// sent. Returns whether the ceiling moved.
    pub fn report(&mut self, loss: f32, sent: u64) -> bool {
        let measured_on = std::mem::replace(&mut self.peak_sent, sent);
        if measured_on == 0 {
            // No video went out: nothing to learn from.
            return false;
        }
        self.proven = if loss < CLEAR_LOSS { measured_on } else { 0 };
        if loss >= CONGESTED_LOSS {
            let through = (measured_on as f64 * f64::from(1.0 - loss.min(1.0))) as u64;
            if self.bps.is_none_or(|c| through < c) {
                self.bps = Some(through);
                return true;
            }
            return false;
        }
        if loss < CLEAR_LOSS
            && let Some(c) = self.bps
        {
            let raised = (c as f64 * CEILING_GROWTH) as u64;
            // Lifted for good once it is well above what is sent.
            self.bps = (raised < sent.saturating_mul(4).max(1)).then_some(raised);
            return true;
        }
        false
    }
}

/// How long one probe towards the next layer pads the link.
const PROBE_WINDOW: Duration = Duration::from_secs(3);
/// The wait after a probe that did not lead up, doubling up to [`PROBE_BACKOFF_MAX`].
const PROBE_BACKOFF: Duration = Duration::from_secs(5);
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// When a subscriber held below its next layer pads towards it. Padding lets the estimate
/// grow past what is sent, but on a link that cannot carry the next layer it only keeps the
/// queue full (delay for everything else on it): so it pads in windows, and waits longer
/// after each one that did not lead up.
#[derive(Debug)]
pub(crate) struct ProbeWindow {
    until: Option<Instant>,
    next: Option<Instant>,
    backoff: Duration,
    /// What was sent when the window opened: more since means it led up.
    sent_at_start: u64,
}

impl Default for ProbeWindow {
    fn default() -> Self {
        ProbeWindow {
            until: None,
            next: None,
            backoff: PROBE_BACKOFF,
            sent_at_start: 0,
        }
    }
}

impl ProbeWindow {
    /// Should the subscriber pad now, sending `sent` bits per second while held below its
    /// next layer?
    pub fn active(&mut self, now: Instant, sent: u64) -> bool {
        if let Some(until) = self.until {
            if now < until {
                return true;
            }
            // The window is over: back off unless it led somewhere.
            self.until = None;
            if sent > self.sent_at_start {
                self.backoff = PROBE_BACKOFF;
            } else {
                self.backoff = (self.backoff * 2).min(PROBE_BACKOFF_MAX);
            }
            self.next = Some(now + self.backoff);
            return false;
        }
        if self.next.is_some_and(|t| now < t) {
            return false;
        }
        self.until = Some(now + PROBE_WINDOW);
        self.sent_at_start = sent;
        true
    }
}

/// One video subscription being allocated.
struct Choice {
    slot: usize,
    tk: TKey,
    /// Layer indices the allocator's choices stand for, lowest first.
    layers: [u8; MAX_CHOICES],
    /// The track has layers to choose among; a track without simulcast is never paused.
    simulcast: bool,
}

impl Shard {
    /// Choose the layer of each of `key`'s video subscriptions and point its forwarders at
    /// them; keyframes of newly targeted layers are asked for.
    pub(crate) fn allocate(&mut self, now: Instant, key: PKey) {
        self.quiet_without_video(key);
        let Some(p) = self.participants.get(key) else {
            return;
        };
        let speakers = self.rooms.get(&p.room).map(|r| &r.speakers);
        let mut wants = Vec::new();
        let mut choices = Vec::new();
        let mut audio = 0u64;
        for (i, slot) in p.slots.iter().enumerate() {
            let Some(tk) = slot.source else {
                continue;
            };
            let Some(track) = self.tracks.get(tk) else {
                continue;
            };
            if !slot.forwarder.is_attached() {
                continue;
            }
            if slot.kind == MediaKind::Audio {
                audio += 1;
                continue;
            }
            let mut layers = [0u8; MAX_CHOICES];
            let mut costs = [0u64; MAX_CHOICES];
            let mut n = 0;
            for (rank, &li) in track.order.iter().enumerate().take(MAX_CHOICES) {
                let l = &track.layers[usize::from(li)];
                if !l.available(now) {
                    continue;
                }
                layers[n] = li;
                costs[n] = match l.cost() {
                    0 => NOMINAL_COST[rank],
                    c => c,
                };
                n += 1;
            }
            let allowed = allowed_choices(slot.quality, slot.render_size, track, &layers[..n]);
            let held = slot.forwarder.target().or(slot.forwarder.current());
            let current = held.and_then(|l| layers[..n].iter().position(|&x| x == l));
            let priority = if track.label.source == TrackSource::Screen {
                Priority::Screen
            } else if speakers.is_some_and(|s| s.contains(track.publisher_id)) {
                Priority::Speaker
            } else {
                Priority::Other
            };
            wants.push(Want {
                priority,
                costs,
                choices: allowed as u8,
                current: current.map(|c| c as u8),
            });
            choices.push(Choice {
                slot: i,
                tk,
                layers,
                simulcast: track.is_simulcast(),
            });
        }
        if wants.is_empty() {
            return;
        }
        // The estimate for video (audio's share set aside), and never above what loss
        // allows. An estimate still low after a congestion has passed does not pause video
        // the link was just seen to carry cleanly: the lowest layers are kept within what
        // was proven (never more: that would hold a higher layer through a new congestion).
        let ceiling = &p.loss_ceiling;
        let lowest: u64 = wants
            .iter()
            .filter(|w| w.choices > 0)
            .map(|w| w.costs[0])
            .sum();
        let floor = ceiling.proven.min(lowest);
        let budget = p
            .estimate
            .map(|e| e.saturating_sub(audio * AUDIO_RESERVE).max(floor));
        let budget = match (budget, ceiling.bps) {
            (Some(b), Some(c)) => Some(b.min(c)),
            (b, c) => b.or(c),
        };
        let mut out = Vec::with_capacity(wants.len());
        let slack = if ceiling.bps.is_some() {
            0.0
        } else {
            allocator::KEEP_SLACK
        };
        allocator::allocate(budget, slack, &wants, &mut out);
        // Pausing needs the budget to stay short for a while; until then the lowest layer
        // stays. A paused subscription resumes only when the allocator finds room. A track
        // without simulcast has nothing to fall back to and is never paused: its picture
        // suffers with its subscriber's link, as without an allocator.
        let p = &mut self.participants[key];
        for ((w, c), choice) in wants.iter().zip(&choices).zip(out.iter_mut()) {
            let slot = &mut p.slots[c.slot];
            if choice.is_some() || w.choices == 0 {
                slot.short_since = None;
                continue;
            }
            let since = *slot.short_since.get_or_insert(now);
            let paused = slot.forwarder.target().is_none();
            if !c.simulcast || (!paused && now.saturating_duration_since(since) < PAUSE_AFTER) {
                *choice = Some(0);
            }
        }

        // What the estimator should find out. Desired: whether everything asked for would
        // fit (str0m probes for it when it rises). Minimum, in a probe window on a link that
        // shows no loss: what is sent plus the step to the next layer some subscription is
        // held below, sent as padding where media does not fill it: the estimator grows only
        // with what it sees delivered, so without it a subscriber held low stays low. Never
        // on a lossy link: padding into a full queue only fills it.
        //
        // What an overloaded worker sheds (`overload.rs`) is not sent, so it counts for
        // nothing here: no padding in its place (str0m pads up to the minimum, and padding
        // costs a subscriber what media would), no probing for it.
        let audio_sent = if self.overload.sheds_all(MediaKind::Audio) {
            0
        } else {
            audio * AUDIO_RESERVE
        };
        let mut used = audio_sent;
        let mut desired = used;
        let mut next_step = None::<u64>;
        let slots = &self.participants[key].slots;
        let mut shed_any = false;
        for ((w, c), ch) in wants.iter().zip(&out).zip(&choices) {
            shed_any |= slots[ch.slot].shed;
            if w.choices == 0 || slots[ch.slot].shed {
                continue;
            }
            desired += w.costs[usize::from(w.choices) - 1];
            let at = c.map_or(0, |c| w.costs[usize::from(c)]);
            used += at;
            let next = c.map_or(Some(0), |c| (c + 1 < w.choices).then_some(c + 1));
            if let Some(n) = next {
                let step = w.costs[usize::from(n)].saturating_sub(at);
                next_step = Some(next_step.map_or(step, |s: u64| s.min(step)));
            }
        }
        // Probe past what is asked for: the estimate must reach a layer, with its headroom,
        // before the layer can be given. Rounded up, so that measurement noise does not
        // move it (each rise would start another probe).
        let desired = (desired as f64 * (1.0 + allocator::UP_HEADROOM + 0.05)) as u64;
        let mut desired = desired.div_ceil(DESIRED_STEP) * DESIRED_STEP;
        let p = &mut self.participants[key];
        let clean = p.loss_ceiling.bps.is_none();
        let probing = clean && next_step.is_some() && p.probe.active(now, used);
        // Outside a probe, no minimum: str0m pads up to it whenever media sends less over
        // its window, and `used` (each layer's cost is the higher of its current and last
        // active rate, audio its reserve) sits above what is sent, so a subscriber given
        // everything it asked for got padding all the time. Scenario (b) showed it: 47 %
        // more RTP datagrams than media, for no layer to climb to.
        let pad = if probing { next_step.unwrap_or(0) } else { 0 };
        let mut minimum = if pad > 0 {
            (used + pad).min(desired)
        } else {
            0
        };
        if shed_any && used == audio_sent {
            // Only audio goes out, and audio's reserve is above what Opus sends: no minimum,
            // or the estimator pads the difference to every shed subscriber, and nothing to
            // probe for (probes are padding too).
            minimum = 0;
            desired = audio_sent;
        }

        let mut retargeted = Vec::new();
        let mut flush = Vec::new();
        let p = &mut self.participants[key];
        for ((c, choice), w) in choices.iter().zip(&out).zip(&wants) {
            if w.choices == 0 {
                // Nothing known of its layers yet: leave it where it is.
                continue;
            }
            let layer = choice.map(|i| c.layers[usize::from(i)]);
            let f = &mut p.slots[c.slot].forwarder;
            if f.target() != layer {
                // Held below what it asked for, and going down: the link is full.
                let down = match (choice, w.current) {
                    (Some(to), Some(from)) => *to < from,
                    _ => false,
                };
                let congested = down && choice.is_some_and(|to| to + 1 < w.choices);
                tracing::debug!(
                    participant = %p.id,
                    from = ?f.target(),
                    to = ?layer,
                    congested,
                    estimate = ?p.estimate,
                    ceiling = ?p.loss_ceiling.bps,
                    costs = ?&w.costs[..usize::from(w.choices)],
                    "layer target"
                );
                f.set_target(layer, congested);
                if congested && let Some(ssrc) = p.slots[c.slot].tx_ssrc {
                    flush.push(ssrc);
                }
                retargeted.push(c.tk);
            }
        }
        if !flush.is_empty()
            && p.with_rtc(key, &mut self.out, |rtc| {
                for ssrc in flush {
                    forget_resends(rtc, ssrc);
                }
            })
            .is_none()
        {
            self.out.reap = true;
            return;
        }
        let p = &mut self.participants[key];
        // Audio is reserved, not measured: the ceiling is about video.
        p.sent_rate = used.saturating_sub(audio_sent);
        p.loss_ceiling.sending(p.sent_rate);
        if p.estimate.is_some() && differs(p.bwe_targets, (minimum, desired)) {
            p.bwe_targets = (minimum, desired);
            let applied = p.with_rtc(key, &mut self.out, |rtc| {
                rtc.bwe()
                    .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
            });
            if applied.is_none() {
                self.out.reap = true;
            }
        }
        for tk in retargeted {
            self.request_wanted_keyframes(now, tk);
        }
    }

    /// Hold `key`'s session as not sending in its `Rtc` while none of its m-lines carries
    /// video (no source, or shed), and give it back its negotiated directions once one does:
    /// str0m pads any session with a sending m-line ([`quiet_direction`]).
    pub(crate) fn quiet_without_video(&mut self, key: PKey) {
        let Some(p) = self.participants.get_mut(key) else {
            return;
        };
        let quiet = !p.slots.iter().any(|s| {
            s.kind == MediaKind::Video
                && s.state == SlotState::Live
                && s.source.is_some()
                && !s.shed
        });
        let mut turns = Vec::new();
        for (i, s) in p.slots.iter().enumerate() {
            if s.state == SlotState::Live && quiet != s.quiet.is_some() {
                turns.push((i, s.mid, s.quiet));
            }
        }
        if turns.is_empty() {
            return;
        }
        let applied = p.with_rtc(key, &mut self.out, |rtc| {
            turns
                .iter()
                .map(|&(_, mid, quiet)| match quiet {
                    Some(negotiated) => {
                        set_local_direction(rtc, mid, negotiated);
                        None
                    }
                    None => {
                        let negotiated = rtc.media(mid).map(|m| m.direction())?;
                        set_local_direction(rtc, mid, quiet_direction(negotiated));
                        Some(negotiated)
                    }
                })
                .collect::<Vec<_>>()
        });
        let Some(applied) = applied else {
            self.out.reap = true;
            return;
        };
        for ((i, _, _), quiet) in turns.into_iter().zip(applied) {
            p.slots[i].quiet = quiet;
        }
    }

    /// `set_video_quality`: the most `key` wants of `track`.
    pub(crate) fn set_video_quality(
        &mut self,
        now: Instant,
        key: PKey,
        track: TrackId,
        quality: QualityRequest,
        size: Option<(u32, u32)>,
    ) -> Result<ReplyValue, CommandError> {
        let tracks = &self.tracks;
        let p = &mut self.participants[key];
        let slot = p
            .slots
            .iter_mut()
            .find(|s| {
                s.kind == MediaKind::Video
                    && s.source
                        .and_then(|tk| tracks.get(tk))
                        .is_some_and(|t| t.id == track)
            })
            .ok_or_else(|| CommandError::NotFound(format!("you receive no video track {track}")))?;
        slot.quality = quality;
        slot.render_size = if quality == QualityRequest::Auto {
            size
        } else {
            None
        };
        self.allocate(now, key);
        Ok(ReplyValue::Done)
    }

    /// Every housekeeping tick: measurements roll over, every subscriber is allocated again,
    /// and subscribers, publishers and rooms are told what changed.
    pub(crate) fn quality_tick(&mut self, now: Instant) {
        for (_, t) in self.tracks.iter_mut() {
            for l in &mut t.layers {
                l.meter.roll(now);
            }
            if t.is_simulcast() {
                layer::rank(&t.layers, &mut t.order);
            }
        }
        let keys: Vec<PKey> = self
            .participants
            .iter()
            .filter(|(_, p)| p.connected && p.slots.iter().any(|s| s.source.is_some()))
            .map(|(k, _)| k)
            .collect();
        for &key in &keys {
            self.allocate(now, key);
            self.report_stream_states(key);
        }
        self.dynacast(now);
        self.report_relay_needs();
        self.detect_speakers(now);
    }

    /// Tell a room subscriber what it now receives of each video subscription, once the
    /// switch happened.
    pub(crate) fn report_stream_states(&mut self, key: PKey) {
        let p = &mut self.participants[key];
        if p.kind != SessionKind::Room {
            return;
        }
        for slot in p.slots.iter_mut().filter(|s| s.kind == MediaKind::Video) {
            let Some(track) = slot.source.and_then(|tk| self.tracks.get(tk)) else {
                continue;
            };
            let now_state = match (slot.forwarder.target(), slot.forwarder.current()) {
                // Shed by an overloaded worker (`overload.rs`): nothing flows either.
                _ if slot.shed => (StreamState::Paused, None),
                (None, _) => (StreamState::Paused, None),
                (Some(_), Some(c)) => (StreamState::Active, Some(quality_of(track, c))),
                (Some(_), None) => continue,
            };
            if slot.reported != Some(now_state) {
                slot.reported = Some(now_state);
                self.out.event(CoreEvent::StreamState {
                    participant: p.id,
                    track: track.id,
                    state: now_state.0,
                    quality: now_state.1,
                });
            }
        }
    }

    /// Pause the layers of room publishers' simulcast tracks that nobody receives, after a
    /// while; resume the ones that are needed again at once. The lowest layer always stays.
    fn dynacast(&mut self, now: Instant) {
        for (_, t) in self.tracks.iter_mut() {
            if !t.is_simulcast() {
                continue;
            }
            let Some(publisher) = t.origin.local().and_then(|k| self.participants.get(k)) else {
                continue;
            };
            if publisher.kind != SessionKind::Room {
                // A WHIP client cannot be told: it sends every layer.
                continue;
            }
            // What the other shards it is relayed to need counts as much as the subscribers
            // here.
            let mut needed = needed_layers(t, &self.participants);
            for r in &t.relays {
                needed |= r.needed;
            }
            let d = &mut t.dynacast;
            let before = d.active;
            if needed & !d.active != 0 {
                d.active |= needed;
            }
            if d.active & !needed != 0 {
                let since = *d.surplus_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= DYNACAST_PAUSE_AFTER {
                    d.active = needed;
                    d.surplus_since = None;
                }
            } else {
                d.surplus_since = None;
            }
            if d.active == before {
                continue;
            }
            let active = d.active;
            let mut rids = Vec::new();
            for (i, l) in t.layers.iter_mut().enumerate() {
                l.paused = active & (1 << i) == 0;
                if !l.paused
                    && let Some(r) = l.rid
                {
                    rids.push(r.to_string());
                }
            }
            self.out.event(CoreEvent::Dynacast {
                participant: publisher.id,
                track: t.id,
                active: rids,
            });
        }
    }

    /// Roll every audio track's level meter and tell rooms whose speakers changed.
    fn detect_speakers(&mut self, now: Instant) {
        let dt = self.config.housekeeping_interval;
        let mut speaking = Vec::new();
        for (name, room) in self.rooms.iter_mut() {
            speaking.clear();
            for tk in room.tracks() {
                let Some(t) = self.tracks.get_mut(tk) else {
                    continue;
                };
                if t.kind != MediaKind::Audio || t.label.source == TrackSource::ScreenAudio {
                    continue;
                }
                t.level.roll(dt);
                if t.level.speaking && !t.label.muted {
                    match speaking.iter_mut().find(|(k, _)| *k == t.publisher_id) {
                        Some((_, level)) => *level = t.level.level.max(*level),
                        None => speaking.push((t.publisher_id, t.level.level)),
                    }
                }
            }
            let levels = speaking.clone();
            if let Some(keys) = room.speakers.update(now, &mut speaking) {
                let speakers = keys
                    .iter()
                    .map(|k| {
                        let level = levels.iter().find(|(x, _)| x == k).map_or(0.0, |l| l.1);
                        Speaker {
                            participant: *k,
                            level: (level * 100.0).round() / 100.0,
                        }
                    })
                    .collect();
                self.out.event(CoreEvent::SpeakersChanged {
                    room: name.clone(),
                    speakers,
                });
            }
        }
    }
}

/// The layers of simulcast track `t` that must keep coming, bit per layer: what its
/// subscribers here receive or wait for, the lowest layer always, and every layer that has
/// not sent anything yet (a browser starts its upper layers as its own uplink estimate
/// grows: pausing one saves nothing, and it could never show that it is there).
pub(crate) fn needed_layers(t: &Track, participants: &Slab<Participant>) -> u8 {
    let mut needed = 1u8 << t.order[0];
    for (i, l) in t.layers.iter().enumerate() {
        if !l.ever_flowed() {
            needed |= 1 << i;
        }
    }
    for s in &t.subscribers {
        let Some(p) = participants.get(s.participant) else {
            continue;
        };
        let f = &p.slots[s.slot].forwarder;
        for l in [f.target(), f.current()].into_iter().flatten() {
            needed |= 1 << l;
        }
    }
    needed
}

/// How many of a subscription's `available` layers (lowest first) its request allows.
fn allowed_choices(
    quality: QualityRequest,
    size: Option<(u32, u32)>,
    track: &Track,
    available: &[u8],
) -> usize {
    let n = available.len();
    if n == 0 {
        return 0;
    }
    let by_rank = |q: Quality| match q {
        Quality::Low => 1,
        Quality::Medium => 2.min(n),
        Quality::High => n,
    };
    match (quality, size) {
        (QualityRequest::Low, _) => by_rank(Quality::Low),
        (QualityRequest::Medium, _) => by_rank(Quality::Medium),
        (QualityRequest::High, _) | (QualityRequest::Auto, None) => n,
        (QualityRequest::Auto, Some((w, h))) => {
            // The smallest layer that covers the rendered area (three quarters of it is
            // close enough: aspect ratios differ). Without known sizes, assume each layer
            // halves the one above it.
            let want = u64::from(w) * u64::from(h) * 3 / 4;
            let top = track.layers[usize::from(available[n - 1])].size;
            for (i, &li) in available.iter().enumerate() {
                let area = match (track.layers[usize::from(li)].size, top) {
                    (Some((lw, lh)), _) => u64::from(lw) * u64::from(lh),
                    (None, Some((tw, th))) => {
                        let halvings = 2 * (n - 1 - i) as u32;
                        (u64::from(tw) * u64::from(th)) >> halvings
                    }
                    (None, None) => return n,
                };
                if area >= want {
                    return i + 1;
                }
            }
            n
        }
    }
}

/// The quality name of layer `layer` of `track`, by its rank among all the track's layers.
fn quality_of(track: &Track, layer: u8) -> Quality {
    let n = track.layers.len().min(usize::from(MAX_LAYERS));
    match (track.rank_of(layer), n) {
        (_, 1) | (None, _) => Quality::High,
        (Some(0), _) => Quality::Low,
        (Some(r), _) if r + 1 >= n => Quality::High,
        _ => Quality::Medium,
    }
}

/// Whether estimator targets moved enough to be given again.
fn differs(old: (u64, u64), new: (u64, u64)) -> bool {
    let far = |a: u64, b: u64| (a as f64 - b as f64).abs() > BWE_RETARGET_SHARE * (b.max(1) as f64);
    far(old.0, new.0) || far(old.1, new.1)
}
