#![no_main]
//! See `glichen::fuzzing::latents`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| glichen::fuzzing::latents(data));
