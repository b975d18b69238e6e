#![no_main]
//! cargo fuzz target: see `vmic_fuzz::chunk_index`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::chunk_index(data));
