#![no_main]
//! Coverage-guided fuzzing of `moninit::fuzzing::inputs_layout` (see that module for the property).
libfuzzer_sys::fuzz_target!(|data: &[u8]| moninit::fuzzing::inputs_layout(data));
