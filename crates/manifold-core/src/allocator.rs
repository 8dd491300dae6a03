//! Where a subscriber's layers are chosen: its downlink estimate is shared out among its
//! video subscriptions, most important first (screen shares, then active speakers, then the
//! rest), each up to the layer it asked for at most. Plain values in, plain values out: no
//! `Rtc`, no clock, tested on its own. `quality.rs` feeds it and applies the result to the
//! forwarders; `docs/quality.md` explains the policy.
//!
//! 1. Every subscription, in priority order, gets its lowest layer if it still fits; one
//!    that does not is paused (audio is never part of this: its share is reserved first).
//! 2. Then, in the same order, each climbs as far as the rest of the budget and its
//!    requested maximum allow.
//! 3. Climbing above the layer a subscription has now needs headroom (`UP_HEADROOM`): the
//!    estimate must cover the higher layer with room to spare; keeping the layer it has
//!    tolerates a budget a little short of it (`KEEP_SLACK`). So an estimate that hovers at
//!    one layer's rate does not flip the subscriber between two layers.

/// Most layers a subscription chooses among.
pub(crate) const MAX_CHOICES: usize = 3;

/// Extra share of a higher layer's rate the budget must hold before a subscription climbs to
/// it (or resumes from paused).
pub(crate) const UP_HEADROOM: f64 = 0.25;

/// Share of the rate of the layer a subscription has that the budget may fall short by
/// before it moves down: estimates wobble by that much, congestion moves them by more.
pub(crate) const KEEP_SLACK: f64 = 0.15;

/// How much a subscription matters when the budget is short; lower comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Priority {
    /// A screen share: text must stay readable.
    Screen,
    /// Someone who is speaking.
    Speaker,
    /// Everyone else.
    Other,
}

/// One video subscription as the allocator sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Want {
    pub priority: Priority,
    /// What each layer it may take costs, bits per second, lowest first: only layers the
    /// publisher sends (or can resume) and at most the one it asked for.
    pub costs: [u64; MAX_CHOICES],
    /// How many of `costs` there are; 0: nothing to choose (no layer known yet).
    pub choices: u8,
    /// The choice it has now (`None`: paused or not started).
    pub current: Option<u8>,
}

/// Share `budget` (bits per second; `None`: unlimited, no estimate) among `wants`: for
/// each, the index into its `costs` it gets, or `None` to pause it. `out` is cleared and
/// filled in the order of `wants`. `slack`: the share by which the budget may fall short of
/// a layer a subscription has before it moves down ([`KEEP_SLACK`], or 0 when loss shows
/// the link is full).
pub(crate) fn allocate(budget: Option<u64>, slack: f64, wants: &[Want], out: &mut Vec<Option<u8>>) {
    out.clear();
    let Some(budget) = budget else {
        out.extend(wants.iter().map(|w| w.choices.checked_sub(1)));
        return;
    };
    out.resize(wants.len(), None);
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| (wants[i].priority, i));
    let mut remaining = budget;

    // The lowest layer for everyone that fits, most important first.
    for &i in &order {
        let w = &wants[i];
        if w.choices == 0 {
            continue;
        }
        let need = price(w, 0, 0, slack);
        if need <= remaining {
            remaining = remaining.saturating_sub(w.costs[0]);
            out[i] = Some(0);
        }
    }
    // Then climb, most important first.
    for &i in &order {
        let w = &wants[i];
        let Some(mut at) = out[i] else {
            continue;
        };
        while usize::from(at) + 1 < usize::from(w.choices) {
            let next = at + 1;
            let step = w.costs[usize::from(next)].saturating_sub(w.costs[usize::from(at)]);
            let need = price(w, next, step, slack);
            if need > remaining {
                break;
            }
            remaining = remaining.saturating_sub(step);
            at = next;
        }
        out[i] = Some(at);
    }
}

/// What the budget must hold for `w` to take choice `to`, whose extra cost is `step` (for
/// the first choice: its whole cost): above where it is now, with headroom.
fn price(w: &Want, to: u8, step: u64, slack: f64) -> u64 {
    let step = if to == 0 { w.costs[0] } else { step };
    let cost = w.costs[usize::from(to)] as f64;
    match w.current {
        Some(c) if to > c => step + (cost * UP_HEADROOM) as u64,
        None => step + (cost * UP_HEADROOM) as u64,
        // The layer it has: it keeps it while the budget is short by the slack at most.
        Some(c) if to == c => step.saturating_sub((cost * slack) as u64),
        Some(_) => step,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYERS: [u64; 3] = [150_000, 500_000, 1_500_000];

    fn want(priority: Priority, choices: u8, current: Option<u8>) -> Want {
        Want {
            priority,
            costs: LAYERS,
            choices,
            current,
        }
    }

    fn run(budget: Option<u64>, wants: &[Want]) -> Vec<Option<u8>> {
        let mut out = Vec::new();
        allocate(budget, KEEP_SLACK, wants, &mut out);
        out
    }

    #[test]
    fn without_an_estimate_everyone_gets_what_it_asked_for() {
        let w = [
            want(Priority::Other, 3, None),
            want(Priority::Other, 1, None),
            want(Priority::Other, 0, None),
        ];
        assert_eq!(run(None, &w), vec![Some(2), Some(0), None]);
    }

    #[test]
    fn the_budget_picks_the_highest_layer_that_fits_with_headroom() {
        let w = [want(Priority::Other, 3, None)];
        assert_eq!(run(Some(3_000_000), &w), vec![Some(2)]);
        // 1.5 Mbit/s plus a quarter does not fit in 1.8: medium.
        assert_eq!(run(Some(1_800_000), &w), vec![Some(1)]);
        assert_eq!(run(Some(300_000), &w), vec![Some(0)]);
        assert_eq!(
            run(Some(100_000), &w),
            vec![None],
            "paused: not even low fits"
        );
    }

    #[test]
    fn staying_needs_no_headroom_climbing_does() {
        // A little short of the high layer it has: it keeps it.
        assert_eq!(
            run(Some(1_400_000), &[want(Priority::Other, 3, Some(2))]),
            vec![Some(2)]
        );
        assert_eq!(
            run(Some(1_100_000), &[want(Priority::Other, 3, Some(2))]),
            vec![Some(1)],
            "far short: down"
        );
        // 1.6 Mbit/s holds the high layer it has, but would not let it climb there.
        assert_eq!(
            run(Some(1_600_000), &[want(Priority::Other, 3, Some(2))]),
            vec![Some(2)]
        );
        assert_eq!(
            run(Some(1_600_000), &[want(Priority::Other, 3, Some(1))]),
            vec![Some(1)]
        );
        // A paused subscription resumes only with headroom over the low layer.
        assert_eq!(
            run(Some(160_000), &[want(Priority::Other, 3, None)]),
            vec![None]
        );
        assert_eq!(
            run(Some(160_000), &[want(Priority::Other, 3, Some(0))]),
            vec![Some(0)]
        );
    }

    #[test]
    fn requested_maxima_are_honoured() {
        let w = [
            want(Priority::Other, 1, None),
            want(Priority::Other, 2, None),
        ];
        assert_eq!(run(Some(10_000_000), &w), vec![Some(0), Some(1)]);
    }

    #[test]
    fn screen_shares_then_speakers_come_first() {
        let w = [
            want(Priority::Other, 3, None),
            want(Priority::Speaker, 3, None),
            want(Priority::Screen, 3, None),
        ];
        // Room for everyone's low layer and one high layer: the screen share climbs
        // first and takes it, the speaker gets what is left.
        let out = run(Some(2_500_000), &w);
        assert_eq!(out[2], Some(2), "screen share high: {out:?}");
        assert_eq!(out[1], Some(1), "speaker medium: {out:?}");
        assert_eq!(out[0], Some(0), "the rest low: {out:?}");
        // Short of everyone's low layer: the least important is paused.
        let out = run(Some(400_000), &w);
        assert_eq!(out, vec![None, Some(0), Some(0)]);
    }
}
