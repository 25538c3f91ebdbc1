//! The loopback admin endpoint: `/metrics` (and, with the supervisor, health and readiness).

pub mod metrics;
mod server;

pub use server::serve;
