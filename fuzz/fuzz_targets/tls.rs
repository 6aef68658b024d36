//! libFuzzer target: `mirrorflow::fuzzing::tls` must never panic on any input.
//! Run with `cargo +nightly fuzz run tls` from the repository root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mirrorflow::fuzzing::tls(data));
