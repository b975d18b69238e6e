#![no_main]
//! cargo fuzz target: see `vmic_fuzz::site_toml`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::site_toml(data));
