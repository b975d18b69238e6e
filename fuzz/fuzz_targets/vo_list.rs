#![no_main]
//! cargo fuzz target: see `vmic_fuzz::vo_list`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::vo_list(data));
