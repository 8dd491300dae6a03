//! Sequences of operations on the sequence-number and timestamp rewriters, as the
//! forwarder drives them from what publishers send: in order, reordered, duplicated,
//! restarted, filtered, switched.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use manifold_rtp::{SeqRewriter, TsRewriter};

#[derive(Arbitrary, Debug)]
enum Op {
    /// Map an input this far from the last one (negative: reordered).
    Map(i32),
    /// Map the same input again.
    Repeat,
    /// Filter an input on purpose.
    Drop(i32),
    /// A new source; timestamps resume this many ticks later.
    Switch(u32),
}

#[derive(Arbitrary, Debug)]
struct Case {
    first_seq: u16,
    first_ts: u32,
    start: u32,
    ops: Vec<Op>,
}

fuzz_target!(|case: Case| {
    let mut seq = SeqRewriter::new(u64::from(case.first_seq));
    let mut ts = TsRewriter::new(u64::from(case.first_ts));
    let mut input = u64::from(case.start) + (1 << 40);
    let mut last: Option<(u64, Option<u64>)> = None;
    let mut switched_after: Option<Option<u64>> = None;
    for op in case.ops.iter().take(4096) {
        let before = seq.last_output();
        match *op {
            Op::Map(d) | Op::Drop(d) => {
                input = input.saturating_add_signed(i64::from(d)).max(1);
            }
            Op::Repeat => {}
            Op::Switch(gap) => {
                seq.switch_source();
                ts.switch_source(u64::from(gap));
                switched_after = Some(before);
                last = None;
                continue;
            }
        }
        if let Op::Drop(_) = op {
            seq.drop_input(input);
            last = None;
        } else {
            let out = seq.map(input);
            let _ = ts.map(input);
            if let Op::Repeat = op
                && let Some((prev_in, Some(prev_out))) = last
                && prev_in == input
            {
                // Documented: a duplicate gets the same output again.
                assert_eq!(out, Some(prev_out), "a duplicate got another number");
            }
            if let (Some(Some(highest)), Some(o)) = (switched_after, out) {
                // The first output of a new source follows everything output before.
                assert!(o > highest, "a new source went back: {o} <= {highest}");
            }
            if out.is_some() {
                switched_after = None;
            }
            last = Some((input, out));
        }
        // The highest output never goes back.
        if let (Some(b), Some(a)) = (before, seq.last_output()) {
            assert!(a >= b, "last output went back");
        }
        assert!(before.is_none() || seq.last_output().is_some());
    }
});
