//! Tells the service manager how the daemon is doing (READY / STOPPING / STATUS, and the
//! watchdog). All of it is a no-op outside systemd.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::systemd;

pub fn state(state: &str) {
    if let Err(e) = systemd::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Pings the watchdog at half its interval while the store still commits: a daemon whose disk
/// hangs stops pinging and is restarted, instead of answering nothing forever.
pub fn spawn_watchdog(app: Arc<App>) {
    let Some(interval) = systemd::watchdog_interval() else {
        return;
    };
    let every = interval / 2;
    tokio::spawn(async move {
        while !app.is_shutting_down() {
            match tokio::time::timeout(every, app.store.commit()).await {
                Ok(Ok(())) => state("WATCHDOG=1"),
                Ok(Err(e)) => tracing::error!(error = %e, "watchdog: the store cannot commit"),
                Err(_) => tracing::error!(
                    waited_ms = every.as_millis() as u64,
                    "watchdog: a commit did not finish in time"
                ),
            }
            tokio::time::sleep(every.min(Duration::from_secs(60))).await;
        }
    });
}
