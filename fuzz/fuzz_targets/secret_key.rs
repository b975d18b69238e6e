#![no_main]
//! cargo fuzz target: see `vmic_fuzz::secret_key`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmic_fuzz::secret_key(data));
