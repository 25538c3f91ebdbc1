//! The embedded SigV4 signing reverse proxy, also runnable alone as `moninit proxy`.
//!
//! Prometheus' remote_write (and Grafana in proxy mode) talk to it on loopback; it signs for
//! one configured service, region and upstream, never for whatever a request names.
//!
//! - [`config`]: the `proxy:` section and the validated runtime [`Settings`];
//! - [`route`]: which requests may be signed at all (pure);
//! - [`sign`]: SigV4 signing and query canonicalisation (pure, time passed in);
//! - [`credentials`]: the credential chain, AssumeRole, cache and refresh;
//! - [`clock`]: this host's clock against AWS's, from the upstream's `Date`;
//! - [`forward`]: one request, end to end; [`server`]: the listener and draining.

pub(crate) mod admit;
pub mod body;
pub(crate) mod chunks;
pub mod clock;
mod config;
pub mod credentials;
pub mod forward;
pub mod route;
pub mod server;
pub mod sign;
pub mod standalone;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use config::{Config, Settings, Upstream};

use crate::admin::metrics;

/// A proxy ready to serve: bound, with its threads, clients and credentials set up.
pub struct Proxy {
    local_addr: std::net::SocketAddr,
    threads: server::Threads,
}

impl Proxy {
    /// Binds and prepares the proxy; fails fast on a taken port or missing credentials chain.
    pub async fn new(
        settings: Settings,
        allow_non_loopback: bool,
        metrics: metrics::Proxy,
    ) -> Result<Self, server::Error> {
        let listener = server::bind(settings.listen, allow_non_loopback).await?;
        let provider = credentials::provider(&settings.signer.region, &settings.assume)
            .await
            .map_err(|e| server::Error::Setup(e.to_string()))?;
        let connector = forward::connector(&settings)
            .map_err(|e| server::Error::Setup(format!("TLS setup: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| server::Error::Setup(e.to_string()))?;
        let state = forward::State {
            credentials: credentials::Cache::new(provider, metrics.clone()),
            body_permits: tokio::sync::Semaphore::new(settings.max_concurrent),
            send_permits: tokio::sync::Semaphore::new(settings.max_concurrent),
            skew_logged: std::sync::atomic::AtomicBool::new(false),
            settings,
            metrics,
        };
        let threads = server::Threads::new(listener, Arc::new(state), connector)?;
        Ok(Proxy {
            local_addr,
            threads,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Ok(self.local_addr)
    }

    /// Serves until `shutdown` is cancelled, then drains.
    pub async fn serve(self, shutdown: CancellationToken) {
        self.threads.serve(shutdown).await
    }
}
