#![no_main]
//! cargo fuzz target: see `vmic_fuzz::trusted_comment`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::trusted_comment(data));
