//! The embedded SigV4 signing proxy. Prometheus' remote_write (and optionally Grafana) talk
//! to it on loopback; it signs for service `aps` and forwards to the configured AMP endpoint.

mod config;

pub use config::Config;
