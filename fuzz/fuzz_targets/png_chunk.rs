#![no_main]
//! See `glichen::fuzzing::png_chunk`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| glichen::fuzzing::png_chunk(data));
