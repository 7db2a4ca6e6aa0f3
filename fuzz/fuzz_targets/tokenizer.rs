#![no_main]
//! See `glichen::fuzzing::tokenizer`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| glichen::fuzzing::tokenizer(data));
