//! Talking to systemd through `NOTIFY_SOCKET` (READY, STOPPING, STATUS, WATCHDOG). Outside
//! systemd there is no socket and every call does nothing.

pub use sd_notify::NotifyState;

/// Sends `states`; a failure is only logged, since it must never stop moninit.
pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// systemd's one-line STATUS (`systemctl status moninit`).
pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}
