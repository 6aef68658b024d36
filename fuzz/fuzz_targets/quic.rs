//! libFuzzer target: `mirrorflow::fuzzing::quic` must never panic on any input.
//! Run with `cargo +nightly fuzz run quic` from the repository root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mirrorflow::fuzzing::quic(data));
