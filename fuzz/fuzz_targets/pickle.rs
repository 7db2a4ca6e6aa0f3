#![no_main]
//! See `glichen::fuzzing::pickle`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| glichen::fuzzing::pickle(data));
