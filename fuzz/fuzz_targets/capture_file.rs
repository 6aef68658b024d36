//! libFuzzer target: `mirrorflow::fuzzing::capture_file` must never panic on any input.
//! Run with `cargo +nightly fuzz run capture_file` from the repository root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mirrorflow::fuzzing::capture_file(data));
