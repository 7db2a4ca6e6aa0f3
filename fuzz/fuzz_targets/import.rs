#![no_main]
//! See `glichen::fuzzing::import`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| glichen::fuzzing::import(data));
