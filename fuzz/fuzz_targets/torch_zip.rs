#![no_main]
//! See `glichen::fuzzing::torch_zip`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| glichen::fuzzing::torch_zip(data));
