#![no_main]
//! cargo fuzz target: see `vmic_fuzz::part_resume`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::part_resume(data));
