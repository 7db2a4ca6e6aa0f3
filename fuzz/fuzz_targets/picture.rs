#![no_main]
//! See `glichen::fuzzing::picture`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| glichen::fuzzing::picture(data));
