#![no_main]
//! Coverage-guided fuzzing of `moninit::fuzzing::body_reader` (see that module for the property).
libfuzzer_sys::fuzz_target!(|data: &[u8]| moninit::fuzzing::body_reader(data));
