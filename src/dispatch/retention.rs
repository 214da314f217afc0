//! Deletes finished messages older than `dispatch.retention_s`, and forgets the windows of
//! recipients who last wrote longer ago than that (or 24 hours, if longer). Ids grow with time,
//! so a pass reads only the old end of the store; windows are keyed by recipient, so each pass
//! reads the next slice of them.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::model::now_ms;
use crate::store::{Store, StoreError, WindowsPruned};

const EVERY: Duration = Duration::from_secs(60);

/// Window entries one pass looks at: a few tens of milliseconds of one blocking thread, and a
/// tree of a million recipients read through in 20 passes.
const WINDOWS_PER_PASS: usize = 50_000;

/// A window lasts 24 hours: never forget one sooner, whatever the retention.
const WINDOW: Duration = Duration::from_secs(24 * 3600);

pub async fn run(app: Arc<App>) {
    let mut next = tokio::time::Instant::now() + EVERY;
    let mut windows_cursor: Option<Vec<u8>> = None;
    while !app.is_shutting_down() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if tokio::time::Instant::now() < next {
            continue;
        }
        next = tokio::time::Instant::now() + EVERY;
        let app2 = app.clone();
        let cursor = windows_cursor.take();
        let pass = tokio::task::spawn_blocking(move || {
            let messages = sweep(&app2);
            let retention = app2.config().dispatch.retention;
            let windows = sweep_windows(&app2.store, retention, now_ms(), cursor.as_deref());
            (messages, windows)
        })
        .await;
        let Ok((messages, windows)) = pass else {
            continue;
        };
        match messages {
            Ok(n) if n > 0 => tracing::info!(removed = n, "retention: deleted finished messages"),
            Ok(_) => {}
            Err(e) => tracing::warn!("retention pass failed: {e}"),
        }
        match windows {
            Ok(pruned) => {
                if pruned.removed > 0 {
                    let removed = pruned.removed;
                    tracing::info!(removed, "retention: forgot windows closed long ago");
                }
                windows_cursor = pruned.next;
            }
            Err(e) => tracing::warn!("retention pass over windows failed: {e}"),
        }
    }
}

/// One pass: removes finished messages created before the cutoff; stops at the first newer one.
pub fn sweep(app: &App) -> Result<u64, StoreError> {
    let cutoff = now_ms().saturating_sub(app.config().dispatch.retention.as_millis() as u64);
    let mut removed = 0;
    for m in app.store.scan(None) {
        let m = m?;
        if m.created_at_ms > cutoff {
            break;
        }
        // A retry between the scan's read and the removal makes the record pending again:
        // it is then kept.
        if !m.state.is_pending() && m.updated_at_ms <= cutoff && app.store.remove_unchanged(&m)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// One pass over the next slice of windows after `cursor`: forgets those whose recipient last
/// wrote longer ago than `retention` (24 hours at least) before `now_ms`.
pub fn sweep_windows(
    store: &Store,
    retention: Duration,
    now_ms: u64,
    cursor: Option<&[u8]>,
) -> Result<WindowsPruned, StoreError> {
    let keep = retention.max(WINDOW);
    let cutoff = now_ms.saturating_sub(keep.as_millis() as u64);
    store.prune_windows(cutoff, cursor, WINDOWS_PER_PASS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;

    const HOUR_MS: u64 = 3_600_000;

    fn store(dir: &std::path::Path) -> Store {
        let cfg = StoreConfig {
            cache_capacity_bytes: 8 * 1024 * 1024,
            flush_every_ms: Some(500),
        };
        Store::open(dir, &cfg).unwrap()
    }

    #[test]
    fn windows_are_kept_for_the_retention_and_never_less_than_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let now = 1_000 * HOUR_MS;
        for (to, hours_ago) in [("1", 2), ("2", 25), ("3", 100), ("4", 200)] {
            store
                .record_inbound("main", to, now - hours_ago * HOUR_MS)
                .unwrap();
        }
        // A retention shorter than the window: still every window of the last 24 hours.
        let one_second = Duration::from_secs(1);
        let pass = sweep_windows(&store, one_second, now, None).unwrap();
        assert_eq!(
            pass,
            WindowsPruned {
                removed: 3,
                next: None
            }
        );
        assert!(store.last_inbound("main", "1").unwrap().is_some());
        assert!(store.last_inbound("main", "2").unwrap().is_none());

        for (to, hours_ago) in [("2", 25), ("3", 100), ("4", 200)] {
            store
                .record_inbound("main", to, now - hours_ago * HOUR_MS)
                .unwrap();
        }
        let week = Duration::from_secs(7 * 24 * 3600);
        let pass = sweep_windows(&store, week, now, None).unwrap();
        assert_eq!(pass.removed, 1);
        assert!(store.last_inbound("main", "3").unwrap().is_some());
        assert!(store.last_inbound("main", "4").unwrap().is_none());
    }
}
