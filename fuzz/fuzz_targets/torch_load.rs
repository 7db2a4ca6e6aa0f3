#![no_main]
//! See `glichen::fuzzing::torch_load`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| glichen::fuzzing::torch_load(data));
