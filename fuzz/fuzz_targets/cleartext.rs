//! libFuzzer target: `mirrorflow::fuzzing::cleartext` must never panic on any input.
//! Run with `cargo +nightly fuzz run cleartext` from the repository root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mirrorflow::fuzzing::cleartext(data));
