#![no_main]
//! Coverage-guided fuzzing of `moninit::fuzzing::agent_config` (see that module for the property).
libfuzzer_sys::fuzz_target!(|data: &[u8]| moninit::fuzzing::agent_config(data));
