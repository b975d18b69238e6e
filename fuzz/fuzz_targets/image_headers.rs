#![no_main]
//! cargo fuzz target: see `vmic_fuzz::image_headers`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::image_headers(data));
