#![no_main]
//! cargo fuzz target: see `vmic_fuzz::public_key`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::public_key(data));
