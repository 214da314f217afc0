//! Deletes finished messages older than `dispatch.retention_s`. Ids grow with time, so a pass
//! reads only the old end of the store.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::model::now_ms;

const EVERY: Duration = Duration::from_secs(60);

pub async fn run(app: Arc<App>) {
    let mut next = tokio::time::Instant::now() + EVERY;
    while !app.is_shutting_down() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if tokio::time::Instant::now() < next {
            continue;
        }
        next = tokio::time::Instant::now() + EVERY;
        let app2 = app.clone();
        let removed = tokio::task::spawn_blocking(move || sweep(&app2)).await;
        match removed {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(removed = n, "retention: deleted finished messages")
            }
            Ok(Err(e)) => tracing::warn!("retention pass failed: {e}"),
            _ => {}
        }
    }
}

/// One pass: removes finished messages created before the cutoff; stops at the first newer one.
pub fn sweep(app: &App) -> Result<u64, crate::store::StoreError> {
    let cutoff = now_ms().saturating_sub(app.config().dispatch.retention.as_millis() as u64);
    let mut removed = 0;
    for m in app.store.scan(None) {
        let m = m?;
        if m.created_at_ms > cutoff {
            break;
        }
        if !m.state.is_pending() && m.updated_at_ms <= cutoff {
            app.store.remove(&m)?;
            removed += 1;
        }
    }
    Ok(removed)
}
