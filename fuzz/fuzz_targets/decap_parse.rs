//! libFuzzer target: `mirrorflow::fuzzing::decap_parse` must never panic on any input.
//! Run with `cargo +nightly fuzz run decap_parse` from the repository root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mirrorflow::fuzzing::decap_parse(data));
