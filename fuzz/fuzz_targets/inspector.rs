//! libFuzzer target: `mirrorflow::fuzzing::inspector` must never panic on any input.
//! Run with `cargo +nightly fuzz run inspector` from the repository root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mirrorflow::fuzzing::inspector(data));
