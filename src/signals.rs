//! The signals that steer moninit, installed once at start-up.
//!
//! Streams are created before anything else happens and kept for the whole process: a
//! SIGTERM that arrives during boot or during a reload must still stop moninit in order, and
//! tokio does not keep a signal for a listener created after it arrived.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM, SIGINT and SIGHUP, listened to from the moment this is created.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers. Fails only if the runtime cannot register signal handlers.
    pub fn install() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn terminated(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    /// The next signal: `true` for SIGHUP (reload), `false` for SIGTERM/SIGINT (stop).
    pub async fn next_is_reload(&mut self) -> bool {
        tokio::select! {
            _ = self.term.recv() => false,
            _ = self.int.recv() => false,
            _ = self.hup.recv() => true,
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM (for commands that install nothing else).
pub async fn terminated() {
    match Signals::install() {
        Ok(mut s) => s.terminated().await,
        Err(_) => std::future::pending().await,
    }
}
