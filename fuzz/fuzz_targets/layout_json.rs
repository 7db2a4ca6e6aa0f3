#![no_main]
//! See `glichen::fuzzing::layout_json`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| glichen::fuzzing::layout_json(data));
