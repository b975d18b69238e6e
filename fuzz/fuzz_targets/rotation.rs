#![no_main]
//! cargo fuzz target: see `vmic_fuzz::rotation`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::rotation(data));
