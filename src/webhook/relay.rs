//! The relay: every verified payload is POSTed, as received and with its original
//! `X-Hub-Signature-256`, to `webhook.forward_url`, because Meta allows one webhook URL per app
//! and the application that wants inbound messages gets them from waq.
//!
//! Payloads wait in the durable `relay` log and are delivered strictly in order: the head is
//! removed only after a 2xx, retried with exponential backoff forever, and survives restarts.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::app::App;

use super::inbox::{FramedLog, Stored};
use super::signature;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Look at the log now and then even without a wake-up.
const IDLE_RECHECK: Duration = Duration::from_secs(30);
/// One delivery, from connecting to the end of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The header that marks a relayed request with the relaying daemon's `instance` (a random id
/// per start), so that a listener knows its own relay coming back to it.
pub const RELAYED_BY: &str = "waq-relayed-by";

/// The HTTP client of the relay: bounded connect and total times so a hung consumer cannot stall
/// the queue for long, no redirects (a local consumer has no reason to send any).
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("waq/", env!("CARGO_PKG_VERSION"), " webhook-relay"))
        .build()?)
}

/// Delivers the relay log until `stop` turns true.
pub async fn run(
    app: Arc<App>,
    instance: String,
    log: FramedLog,
    client: reqwest::Client,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    let mut head: Option<Stored> = None;
    loop {
        if super::stopping(&stop) {
            return;
        }
        // Registered before the configuration is read below, so that a reload from this
        // moment on (it may set or fix `forward_url`) ends any wait of this turn.
        let reloaded = app.reloaded.notified();
        tokio::pin!(reloaded);
        reloaded.as_mut().enable();
        if head.is_none() {
            let l = log.clone();
            match tokio::task::spawn_blocking(move || l.first()).await {
                Ok(Ok(Some(item))) => head = Some(item),
                Ok(Ok(None)) => {
                    idle(reloaded.as_mut(), &wake, &mut stop, IDLE_RECHECK).await;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "webhook relay: cannot read the relay log");
                    idle(reloaded.as_mut(), &wake, &mut stop, BACKOFF_MAX).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "webhook relay: reading the relay log failed");
                    idle(reloaded.as_mut(), &wake, &mut stop, BACKOFF_MAX).await;
                    continue;
                }
            }
        }
        let Some(item) = head.as_ref() else { continue };

        let cfg = app.config();
        let Some((webhook, url)) = cfg
            .webhook
            .as_ref()
            .and_then(|w| w.forward_url.as_deref().map(|url| (w, url)))
        else {
            // Left over from when forwarding was configured: kept until it is again. Not a
            // failing consumer: nothing to alert on, and a fresh count when it comes back.
            failures = 0;
            app.metrics.webhook_relay_failures.store(0, Relaxed);
            *trouble(&app) = None;
            idle(reloaded.as_mut(), &wake, &mut stop, IDLE_RECHECK).await;
            continue;
        };
        // Payloads waq wrote itself carry no signature: sign them as Meta would.
        let sig = item.frame.signature.clone().unwrap_or_else(|| {
            signature::sign(webhook.app_secret.expose().as_bytes(), &item.frame.body)
        });
        let request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Hub-Signature-256", sig)
            .header(RELAYED_BY, instance.as_str())
            .body(item.frame.body.clone())
            .send();
        let outcome = tokio::select! {
            r = request => r,
            _ = stop.changed() => return,
        };
        let problem = match outcome {
            Ok(resp) if resp.status().is_success() => {
                let l = log.clone();
                let done = head.take();
                let removed = tokio::task::spawn_blocking(move || match done {
                    Some(d) => l.remove(&d),
                    None => Ok(()),
                })
                .await;
                // Not removed means sent again later: consumers already handle Meta's duplicates.
                match removed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "webhook relay: cannot remove a delivered payload")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "webhook relay: removing a delivered payload failed")
                    }
                }
                if failures > 0 {
                    let url = shown(url);
                    tracing::info!(url, failures, "webhook relay: consumer reachable again");
                }
                failures = 0;
                app.metrics.webhook_relay_failures.store(0, Relaxed);
                *trouble(&app) = None;
                backoff = BACKOFF_MIN;
                continue;
            }
            Ok(resp) => format!("answered {}", resp.status()),
            // First: a connect timeout is a timeout too, but the consumer was not reached.
            Err(e) if e.is_connect() => {
                format!(
                    "unreachable: {}",
                    crate::cloud::error_chain(&e.without_url())
                )
            }
            Err(e) if e.is_timeout() => {
                format!("did not answer within {} s", REQUEST_TIMEOUT.as_secs())
            }
            Err(e) => format!("failed: {}", crate::cloud::error_chain(&e.without_url())),
        };
        failures += 1;
        app.metrics.webhook_relay_failures.store(failures, Relaxed);
        let url = shown(url);
        // Stored chunks of up to 32 KiB: a payload takes one, or one per 32 KiB.
        let backlog_chunks = log.entries();
        tracing::warn!(
            url,
            failures,
            retry_in_s = backoff.as_secs(),
            backlog_chunks,
            "webhook relay: consumer {problem}"
        );
        {
            let mut t = trouble(&app);
            let since_ms = t.as_ref().map_or_else(crate::model::now_ms, |t| t.since_ms);
            *t = Some(crate::app::RelayTrouble {
                since_ms,
                failures,
                last_problem: problem,
                backlog_chunks,
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            // A reload may have fixed the URL: try it at once.
            _ = reloaded.as_mut() => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn trouble(app: &App) -> std::sync::MutexGuard<'_, Option<crate::app::RelayTrouble>> {
    app.relay_trouble.lock().unwrap_or_else(|p| p.into_inner())
}

/// `url` as the log may show it: a password in it (Basic auth for the consumer) is hidden.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "(an unparsable URL)".to_string(),
    }
}

/// Waits for new work, a reload (which may set or change `forward_url`), `stop`, or `limit`.
async fn idle(
    reloaded: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    wake: &Notify,
    stop: &mut watch::Receiver<bool>,
    limit: Duration,
) {
    tokio::select! {
        _ = wake.notified() => {}
        _ = reloaded => {}
        _ = stop.changed() => {}
        _ = tokio::time::sleep(limit) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn a_password_in_the_consumers_url_is_not_logged() {
        assert_eq!(
            shown("http://user:s3cret@127.0.0.1:9000/hook"),
            "http://user:***@127.0.0.1:9000/hook"
        );
        assert_eq!(
            shown("http://127.0.0.1:9000/hook"),
            "http://127.0.0.1:9000/hook"
        );
        assert!(!shown("http://user:s3cret@[::1").contains("s3cret"));
    }
}
