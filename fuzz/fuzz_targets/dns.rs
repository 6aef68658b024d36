//! libFuzzer target: `mirrorflow::fuzzing::dns` must never panic on any input.
//! Run with `cargo +nightly fuzz run dns` from the repository root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mirrorflow::fuzzing::dns(data));
