#![no_main]
//! cargo fuzz target: see `vmic_fuzz::catalog_toml`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::catalog_toml(data));
