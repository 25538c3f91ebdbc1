#![no_main]
//! Coverage-guided fuzzing of `moninit::fuzzing::proxy_request` (see that module for the property).
libfuzzer_sys::fuzz_target!(|data: &[u8]| moninit::fuzzing::proxy_request(data));
