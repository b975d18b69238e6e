#![no_main]
//! cargo fuzz target: see `vmic_fuzz::signature`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::signature(data));
