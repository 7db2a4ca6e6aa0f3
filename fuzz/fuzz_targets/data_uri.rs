#![no_main]
//! See `glichen::fuzzing::data_uri`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| glichen::fuzzing::data_uri(data));
