//! Tells the service manager how the daemon is doing (READY / STOPPING / STATUS, and the
//! watchdog). All of it is a no-op outside systemd.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::model::{now_ms, State};
use crate::systemd;

/// How often `STATUS=` (queue depth) is refreshed under systemd.
const STATUS_EVERY: Duration = Duration::from_secs(5);

pub fn state(state: &str) {
    if let Err(e) = systemd::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// The one-line status `systemctl status waq` shows.
pub fn status_line(app: &App) -> String {
    let counts = app.store.counts();
    let count = |s: State| {
        counts
            .iter()
            .find(|(st, _)| *st == s)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    let snapshot = app.dispatcher.snapshot(&app.store);
    let paused: Vec<&str> = snapshot
        .senders
        .iter()
        .filter(|s| s.paused)
        .map(|s| s.name.as_str())
        .collect();
    let mut line = format!(
        "serving: {} queued, {} retrying, {} in flight",
        count(State::Queued),
        count(State::Retrying),
        snapshot.in_flight
    );
    if !paused.is_empty() {
        line.push_str(&format!("; paused: {}", paused.join(", ")));
    }
    let held: Vec<&str> = snapshot
        .senders
        .iter()
        .filter(|s| !s.configured)
        .map(|s| s.name.as_str())
        .collect();
    if !held.is_empty() {
        line.push_str(&format!(
            "; not configured, holding messages: {}",
            held.join(", ")
        ));
    }
    if let Some(e) = app.store.refusing_writes() {
        line.push_str(&format!("; store refuses writes: {e}"));
    }
    let refused = app.reload_refused.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(why) = refused.as_deref() {
        line.push_str(&format!("; {why}"));
    }
    line
}

/// Records how a reload ended (`Some(why)` refused) and shows it in `STATUS=` at once.
pub fn reload_outcome(app: &App, refused: Option<String>) {
    let refused = refused.map(|why| {
        format!(
            "reload refused at {}, running the earlier configuration: {why}",
            crate::model::format_time(now_ms())
        )
        // One line: a newline would end the `STATUS=` assignment.
        .replace('\n', " ")
    });
    *app.reload_refused.lock().unwrap_or_else(|p| p.into_inner()) = refused;
    state(&format!("STATUS={}", status_line(app)));
}

/// Refreshes `STATUS=` and pings the watchdog at half its interval while both a commit of the
/// store returns in time (done, or refused at once) and every sender loop has turned
/// recently: a daemon whose disk hangs, or whose dispatcher is stuck, stops pinging and is
/// restarted instead of answering nothing forever.
pub fn spawn_watchdog(app: Arc<App>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let interval = systemd::watchdog_interval();
    let every = interval
        .map(|i| i / 2)
        .unwrap_or(STATUS_EVERY)
        .min(STATUS_EVERY);
    tokio::spawn(async move {
        while !app.is_shutting_down() {
            state(&format!("STATUS={}", status_line(&app)));
            if let Some(interval) = interval {
                watchdog_turn(&app, interval / 2).await;
            }
            tokio::time::sleep(every).await;
        }
    });
}

async fn watchdog_turn(app: &App, budget: Duration) {
    let stale_ms = now_ms().saturating_sub(app.dispatcher.heartbeat_ms());
    if stale_ms > budget.as_millis() as u64 {
        tracing::error!(
            stale_ms,
            "watchdog: a dispatcher loop has not turned; not pinging"
        );
        return;
    }
    match tokio::time::timeout(budget, app.store.commit()).await {
        Ok(Ok(())) => state("WATCHDOG=1"),
        // A store that refuses at once (disk full, reopening after a write error) is handled
        // in the process: it reopens on its own, and health answers 503 meanwhile. A restart
        // would not help; on a full disk it could not even start.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "watchdog: the store refuses writes; still serving");
            state("WATCHDOG=1");
        }
        Err(_) => tracing::error!(
            waited_ms = budget.as_millis() as u64,
            "watchdog: a commit did not finish in time"
        ),
    }
}
