//! libFuzzer target: `mirrorflow::fuzzing::ssh` must never panic on any input.
//! Run with `cargo +nightly fuzz run ssh` from the repository root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mirrorflow::fuzzing::ssh(data));
