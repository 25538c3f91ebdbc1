//! Integration tests: the moninit binary against real moto (S3, SSM), real promtool, and
//! the built-in templates against golden files. One test binary, so the AWS SDK is linked
//! once.

mod amp;
mod bad_input;
mod doctor;
mod fetch;
mod fuzz_corpus;
mod golden;
mod packaging;
mod programs;
mod prometheus_e2e;
mod proxy;
mod proxy_hardening;
mod run;
mod secrets;
mod sigv4_vectors;
mod supervision;
mod support;
mod watch;
