//! libFuzzer target: `mirrorflow::fuzzing::http` must never panic on any input.
//! Run with `cargo +nightly fuzz run http` from the repository root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mirrorflow::fuzzing::http(data));
