//! The whole sans-IO server fed arbitrary sequences of client and peer datagrams, bind
//! failures, closed connections and time steps, with its invariants checked after every step
//! and a full accounting at the end (see `turnd_fuzz::Driver`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<turnd_fuzz::Op>| {
    turnd_fuzz::run(&ops);
});
