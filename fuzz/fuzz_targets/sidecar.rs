#![no_main]
//! cargo fuzz target: see `vmic_fuzz::sidecar`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::sidecar(data));
