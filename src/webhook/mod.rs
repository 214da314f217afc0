//! The webhook listener: Meta's webhooks in (verified, made durable, answered at once), statuses
//! and windows applied, payloads relayed to a local consumer.
//!
//! A verified POST is pushed to the durable `webhook_inbox` log (and the `relay` log when
//! `forward_url` is set), committed, answered 200, and applied afterwards by one worker that
//! drains the inbox in order. Because the inbox is drained on start too, a crash between the 200
//! and the apply loses nothing; applying is idempotent, so replays are harmless.

mod apply;
mod inbox;
pub mod payload;
mod pending;
mod relay;
pub mod signature;
mod verify;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{watch, Notify};

use crate::app::App;
use crate::config::WebhookConfig;
use crate::log_every::LogEvery;
use crate::metrics::Metrics;

pub use apply::{apply_payload, apply_pending, ApplyError, ApplySummary, StatusOutcome};
pub use payload::Status;
pub use pending::PendingStatus;

/// The durable log of verified payloads not yet applied.
pub const INBOX_LOG: &str = "webhook_inbox";
/// The durable log of verified payloads not yet relayed to `forward_url`.
pub const RELAY_LOG: &str = "relay";
/// The durable log of statuses waiting for their wamid (one payload each).
pub const WAITING_LOG: &str = "webhook_waiting";

/// How often statuses waiting for their wamid are retried.
const PENDING_RETRY: Duration = Duration::from_secs(1);
/// How often the inbox is looked at without a wake-up (after a storage error, say).
const INBOX_RECHECK: Duration = Duration::from_secs(5);
/// A body still arriving after this is abandoned: a stalled client must not hold a connection
/// (and graceful shutdown) forever. Meta's 3 MB arrive in well under a second.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds nothing itself: serves `listener` (bound by the caller to `webhook.listen`, so tests can
/// use port 0 and read `local_addr`) until `shutdown` resolves. Also starts the relay worker and
/// the retry of early statuses, and first applies whatever a crash left in the inbox.
/// Returns after every worker has stopped.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let start_cfg = app
        .config()
        .webhook
        .clone()
        .context("the webhook listener needs a [webhook] section with `listen`")?;
    let shared = Arc::new(Shared {
        inbox: inbox::FramedLog::new(
            app.store
                .log(INBOX_LOG)
                .context("opening the webhook inbox")?,
        ),
        relay: inbox::FramedLog::new(app.store.log(RELAY_LOG).context("opening the relay log")?),
        waiting: app
            .store
            .log(WAITING_LOG)
            .context("opening the log of waiting statuses")?,
        app,
        start_cfg,
        apply_wake: Notify::new(),
        relay_wake: Arc::new(Notify::new()),
        pending: Mutex::new(pending::Pending::default()),
        recent: Mutex::new(apply::RecentIds::default()),
        refused_log: LogEvery::new(Duration::from_secs(10)),
        verify_log: LogEvery::new(Duration::from_secs(10)),
        instance: format!("{:016x}", fastrand::u64(..)),
    });
    let client = relay::client().context("building the relay's HTTP client")?;
    shared
        .requeue_waiting()
        .await
        .context("moving waiting statuses back to the webhook inbox")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let workers = [
        tokio::spawn(apply_loop(shared.clone(), stop_rx.clone())),
        tokio::spawn(pending_loop(shared.clone(), stop_rx.clone())),
        tokio::spawn(relay::run(
            shared.app.clone(),
            shared.instance.clone(),
            shared.relay.clone(),
            client,
            shared.relay_wake.clone(),
            stop_rx,
        )),
    ];

    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, path = %shared.start_cfg.path, "webhook listener ready");
    }
    let router = Router::new().fallback(handle).with_state(shared.clone());
    let served = serve_http(listener, router, shutdown).await;

    let _ = stop_tx.send(true);
    for w in workers {
        if let Err(e) = w.await {
            tracing::error!(error = %e, "a webhook worker ended abnormally");
        }
    }
    served.context("the webhook listener failed")
}

/// A request's head must arrive within this; it also closes keep-alive connections idle this
/// long. Without it, clients trickling a head byte by byte would hold connections for ever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the kernel's backlog. Meta opens a handful.
const MAX_CONNECTIONS: usize = 256;

/// Serves `router` on `listener` (HTTP/1.1) until `shutdown` resolves, then lets every
/// connection finish the request it is on. Unlike `axum::serve`, heads have a timeout and
/// connections a cap.
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (closing_tx, closing) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut closing = closing.clone();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let refused = crate::http_head::too_large(&req).then(|| {
                        text(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "request headers too large",
                        )
                    });
                    let router = router.clone();
                    async move {
                        match refused {
                            Some(answer) => Ok(answer),
                            None => router.oneshot(req.map(Body::new)).await,
                        }
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "webhook connection ended with an error");
                    }
                }
                _ = until_true(&mut closing) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Resolves once `rx` is true (or its sender is gone); returns nothing, so no guard lives on.
async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

/// Whether the workers should stop (also when the sender is gone, to never spin).
fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

struct Shared {
    app: Arc<App>,
    /// The webhook configuration at start; the current one (after a reload) is preferred.
    start_cfg: WebhookConfig,
    inbox: inbox::FramedLog,
    relay: inbox::FramedLog,
    /// Statuses waiting for their wamid, kept until settled (see `pending`).
    waiting: crate::store::DurableLog,
    apply_wake: Notify,
    relay_wake: Arc<Notify>,
    pending: Mutex<pending::Pending>,
    recent: Mutex<apply::RecentIds>,
    /// Requests refused before their signature was checked, or for it: anyone who can reach the
    /// listener can make them, so their log lines are throttled.
    refused_log: LogEvery,
    /// Refused verifications (`GET` with a wrong token), apart: they say something else.
    verify_log: LogEvery,
    /// This start's id, sent with every relayed payload (`relay::RELAYED_BY`).
    instance: String,
}

impl Shared {
    /// The current webhook configuration, so a reload can rotate the secret or the token.
    fn cfg(&self) -> WebhookConfig {
        self.app
            .config()
            .webhook
            .clone()
            .unwrap_or_else(|| self.start_cfg.clone())
    }

    /// Applies the oldest payload in the inbox and removes it. `Ok(false)`: the inbox is empty.
    fn apply_next(&self) -> Result<bool, crate::store::StoreError> {
        let Some(item) = self.inbox.first()? else {
            return Ok(false);
        };
        match apply::apply_with(&self.app, &item.frame.body, Some(&self.recent)) {
            Ok(sum) => {
                tracing::debug!(
                    applied = sum.statuses_applied,
                    unchanged = sum.statuses_unchanged,
                    deferred = sum.deferred.len(),
                    inbound = sum.inbound,
                    system = sum.system,
                    without_number = sum.without_number,
                    unrouted = sum.unrouted,
                    "webhook payload applied"
                );
                if !sum.deferred.is_empty() {
                    let now = Instant::now();
                    let mut dropped = Vec::new();
                    // Written before the inbox entry goes: sled keeps writes in order, so after
                    // a crash either the entry or these are still there.
                    let mut deferred = sum.deferred;
                    for d in &mut deferred {
                        d.durable = Some(self.waiting.push(statuses_payload(&[&*d]).as_bytes())?);
                    }
                    let waiting = {
                        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                        for d in deferred {
                            dropped.extend(p.add(d, now));
                        }
                        p.len()
                    };
                    tracing::debug!(waiting, "statuses waiting for their wamid");
                    self.give_up(dropped, "too many statuses waiting for their wamid");
                }
            }
            // Handled like a payload applied: retrying cannot help, and the relay has its copy.
            Err(apply::ApplyError::Json(e)) => {
                tracing::error!(error = %e, "dropping an inbox entry that is not a webhook payload")
            }
            Err(apply::ApplyError::Store(e)) => return Err(e),
        }
        self.inbox.remove(&item)?;
        Ok(true)
    }

    /// Retries waiting statuses; returns those still waiting.
    fn retry_pending(&self, due: Vec<pending::Waiting>) -> Vec<pending::Waiting> {
        let now = Instant::now();
        let mut keep = Vec::new();
        let mut expired = Vec::new();
        for w in due {
            match apply::apply_pending(&self.app, &w.status) {
                Ok(StatusOutcome::Deferred) if now >= w.give_up_at => expired.push(w.status),
                Ok(StatusOutcome::Deferred) => keep.push(w),
                Ok(_) => self.settled(&w.status),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot apply a waiting status yet");
                    keep.push(w);
                }
            }
        }
        self.give_up(expired, "no message with this wamid");
        keep
    }

    /// A waiting status was applied or given up: its durable copy goes.
    fn settled(&self, s: &PendingStatus) {
        if let Some(seq) = s.durable {
            if let Err(e) = self.waiting.remove(seq) {
                tracing::warn!(error = %e, "cannot remove a settled status from the waiting log");
            }
        }
    }

    fn give_up(&self, statuses: Vec<PendingStatus>, why: &str) {
        for s in statuses {
            self.settled(&s);
            Metrics::inc(&self.app.metrics.statuses_unknown_wamid);
            tracing::info!(wamid = %s.status.id, status = %s.status.status, sender = %s.sender, "status not applied: {why}");
        }
    }

    /// At start: statuses that were waiting when the daemon last stopped (or crashed) go back
    /// to the inbox, to be applied, or to wait again, like any payload.
    async fn requeue_waiting(&self) -> Result<(), crate::store::StoreError> {
        let generation = self.app.store.generation();
        let mut moved = 0;
        loop {
            let batch = self.waiting.read(None, 256)?;
            if batch.is_empty() {
                break;
            }
            for (seq, body) in batch {
                self.inbox.push(None, &body)?;
                self.waiting.remove(seq)?;
                moved += 1;
            }
        }
        if moved > 0 {
            self.app.store.commit_since(generation).await?;
            tracing::info!(
                statuses = moved,
                "statuses that were waiting for their wamid are retried"
            );
        }
        Ok(())
    }
}

/// A webhook payload holding `statuses`, in Meta's envelope, as the inbox stores payloads.
fn statuses_payload(statuses: &[&PendingStatus]) -> String {
    let changes: Vec<_> = statuses
        .iter()
        .map(|w| {
            serde_json::json!({
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"phone_number_id": w.phone_number_id},
                    "statuses": [w.raw],
                }
            })
        })
        .collect();
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "", "changes": changes}],
    })
    .to_string()
}

/// Drains the inbox whenever woken, one payload at a time so shutdown is noticed in between.
async fn apply_loop(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let mut wait = INBOX_RECHECK;
        while !stopping(&stop) {
            let s = sh.clone();
            match tokio::task::spawn_blocking(move || s.apply_next()).await {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => break,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot apply webhook payloads; will retry");
                    wait = Duration::from_secs(1);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "applying a webhook payload failed; will retry");
                    wait = Duration::from_secs(1);
                    break;
                }
            }
        }
        if stopping(&stop) {
            return;
        }
        tokio::select! {
            _ = sh.apply_wake.notified() => {}
            _ = stop.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Retries statuses whose wamid was not known yet, every second.
async fn pending_loop(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PENDING_RETRY) => {}
            _ = stop.changed() => {}
        }
        if stopping(&stop) {
            return;
        }
        let due = sh
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_all();
        if due.is_empty() {
            continue;
        }
        let s = sh.clone();
        let keep = match tokio::task::spawn_blocking(move || s.retry_pending(due)).await {
            Ok(keep) => keep,
            Err(e) => {
                tracing::error!(error = %e, "retrying waiting statuses failed");
                Vec::new()
            }
        };
        let dropped = sh
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put_back(keep);
        sh.give_up(dropped, "too many statuses waiting for their wamid");
    }
}

/// Every request: the configured path answers GET (verification) and POST (deliveries).
async fn handle(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cfg = sh.cfg();
    if uri.path() != cfg.path {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    match method {
        Method::GET => {
            let query = Query::<HashMap<String, String>>::try_from_uri(&uri)
                .map(|q| q.0)
                .unwrap_or_default();
            match verify::challenge(&query, cfg.verify_token.expose()) {
                Ok(challenge) => text(StatusCode::OK, challenge),
                Err(why) => {
                    if let Some(refused) = sh.verify_log.due() {
                        tracing::warn!(
                            refused_since_last_line = refused,
                            "webhook verification refused: {why}"
                        );
                    }
                    text(
                        StatusCode::FORBIDDEN,
                        format!("verification refused: {why}"),
                    )
                }
            }
        }
        Method::POST => receive(&sh, &cfg, &headers, body).await,
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, POST")],
            "use GET or POST",
        )
            .into_response(),
    }
}

async fn receive(sh: &Shared, cfg: &WebhookConfig, headers: &HeaderMap, body: Body) -> Response {
    let metrics = &sh.app.metrics;
    // Taken, it would be relayed to itself again, forever. Refused, it stays at the head of
    // the relay log (which retries with backoff) until `forward_url` is fixed and reloaded.
    if headers
        .get(relay::RELAYED_BY)
        .is_some_and(|v| v.as_bytes() == sh.instance.as_bytes())
    {
        if let Some(refused) = sh.refused_log.due() {
            tracing::error!(
                refused_since_last_line = refused,
                "webhook.forward_url leads back to this daemon's own listener; point it at \
                 the application that wants the payloads"
            );
        }
        crate::api::Unneeded::of(headers).discard(body).await;
        return text(
            StatusCode::LOOP_DETECTED,
            "this payload was relayed by this waq to itself: webhook.forward_url leads back to \
             its own webhook listener; point it at the application that wants the payloads",
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A body too large is still read (and dropped) within the socket API's bounds before the
    // 413, so that a client that writes all of it before reading (Python's `http.client`)
    // gets the 413 instead of a broken pipe.
    let unneeded = crate::api::Unneeded::of(headers);
    if declared.is_some_and(|n| n > cfg.max_body_bytes as u64) {
        Metrics::inc(&metrics.webhooks_rejected);
        unneeded.discard(body).await;
        return too_large(sh, cfg);
    }
    let mut body = body;
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        read_within(&mut body, cfg.max_body_bytes, declared),
    );
    let raw = match read.await {
        Ok(Ok(Some(raw))) => raw,
        Ok(Ok(None)) => {
            Metrics::inc(&metrics.webhooks_rejected);
            unneeded.discard(body).await;
            return too_large(sh, cfg);
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "webhook body could not be read");
            return text(StatusCode::BAD_REQUEST, "could not read the body");
        }
        Err(_) => {
            if let Some(refused) = sh.refused_log.due() {
                tracing::warn!(
                    refused_since_last_line = refused,
                    "webhook body not received in time; dropped"
                );
            }
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the body took too long to arrive",
            );
        }
    };

    let sig = headers
        .get(signature::HEADER)
        .map(|v| v.to_str().unwrap_or(""));
    if let Err(e) = signature::verify(cfg.app_secret.expose().as_bytes(), &raw, sig) {
        Metrics::inc(&metrics.webhooks_rejected);
        if let Some(refused) = sh.refused_log.due() {
            tracing::warn!(
                reason = %e,
                bytes = raw.len(),
                refused_since_last_line = refused,
                "webhook rejected"
            );
        }
        return text(StatusCode::UNAUTHORIZED, e.to_string());
    }
    if let Err(why) = check_json_object(&raw) {
        Metrics::inc(&metrics.webhooks_rejected);
        tracing::warn!(bytes = raw.len(), "signed webhook body {why}; rejected");
        return text(StatusCode::BAD_REQUEST, format!("the body {why}"));
    }

    // Durable before the 200: Meta does not resend what it saw accepted.
    let relay = cfg.forward_url.is_some();
    let (inbox, relay_log) = (sh.inbox.clone(), sh.relay.clone());
    let sig = sig.map(str::to_string);
    let generation = sh.app.store.generation();
    let pushed = tokio::task::spawn_blocking(move || {
        inbox.push(sig.as_deref(), &raw)?;
        if relay {
            relay_log.push(sig.as_deref(), &raw)?;
        }
        Ok::<_, crate::store::StoreError>(())
    })
    .await
    .unwrap_or_else(|e| Err(crate::store::StoreError::Unavailable(e.to_string())));
    let durable = match pushed {
        Ok(()) => sh.app.store.commit_since(generation).await,
        Err(e) => Err(e),
    };
    if let Err(e) = durable {
        // Meta retries a non-200 for days; whatever was written is applied once anyway.
        tracing::error!(error = %e, "cannot store a webhook payload; asking Meta to retry");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage unavailable, retry later",
        );
    }
    Metrics::inc(&metrics.webhooks_received);
    sh.apply_wake.notify_one();
    if relay {
        sh.relay_wake.notify_one();
    }
    text(StatusCode::OK, "ok")
}

/// The body, or `None` as soon as it proves longer than `limit` (the rest is left in `body`).
async fn read_within(
    body: &mut Body,
    limit: usize,
    declared: Option<u64>,
) -> Result<Option<Bytes>, axum::Error> {
    let mut raw = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(limit));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if raw.len() + data.len() > limit {
            return Ok(None);
        }
        raw.extend_from_slice(&data);
    }
    Ok(Some(Bytes::from(raw)))
}

/// The deepest nesting of arrays and objects serde_json reads (its recursion limit is 128).
const MAX_NESTING: usize = 127;

/// A JSON object the apply worker can read. `IgnoredAny` skips values without serde_json's
/// recursion limit, which the worker's reading of messages and statuses then hits: a deeper
/// body would be answered 200 and dropped, so it is refused here instead.
fn check_json_object(raw: &[u8]) -> Result<(), String> {
    let json = crate::api::skip_bom(raw);
    let object = json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if object && !nesting_within(json, MAX_NESTING) {
        return Err(format!(
            "nests arrays and objects more than {MAX_NESTING} deep (Meta's payloads nest a few)"
        ));
    }
    if !object {
        return Err("is not a JSON object".into());
    }
    // The apply worker's own reading, for its syntax: `IgnoredAny` lets invalid UTF-8 and lone
    // surrogate escapes through, which the worker then cannot read (answered 200 and dropped).
    // An object of unexpected shape is still taken, as before: it is relayed all the same.
    // (It skips the byte-order mark itself, as the worker will.)
    match apply::parse_envelope(raw) {
        Err(e) if e.classify() != serde_json::error::Category::Data => {
            Err(format!("is not a JSON object ({e})"))
        }
        _ => Ok(()),
    }
}

/// Whether arrays and objects nest at most `max` deep (brackets inside strings do not count).
fn nesting_within(raw: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in raw {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

fn too_large(sh: &Shared, cfg: &WebhookConfig) -> Response {
    if let Some(refused) = sh.refused_log.due() {
        tracing::warn!(
            limit = cfg.max_body_bytes,
            refused_since_last_line = refused,
            "webhook body too large; rejected"
        );
    }
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the body exceeds webhook.max_body_bytes ({} bytes)",
            cfg.max_body_bytes
        ),
    )
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!(
            r#"{{"a":"[{{\"]","b":{}0{}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    }

    #[test]
    fn the_nesting_accepted_is_the_nesting_serde_json_reads() {
        for depth in [2, MAX_NESTING, MAX_NESTING + 1, 5_000] {
            let body = nested(depth);
            let readable = serde_json::from_str::<serde_json::Value>(&body).is_ok();
            let checked = check_json_object(body.as_bytes());
            assert_eq!(checked.is_ok(), readable, "depth {depth}");
            assert_eq!(readable, depth <= MAX_NESTING, "depth {depth}");
            if let Err(why) = checked {
                assert!(
                    why.starts_with("nests arrays and objects more than"),
                    "{why}"
                );
            }
        }
        for not_object in ["[1]", "{\"a\":", "\"text\"", ""] {
            let why = check_json_object(not_object.as_bytes()).unwrap_err();
            assert!(
                why.starts_with("is not a JSON object"),
                "{not_object}: {why}"
            );
        }
    }

    #[test]
    fn a_body_the_worker_cannot_read_is_refused_before_its_200() {
        let text = |body: &str| {
            format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messages":[{{"from":"16505551234","type":"text","text":{{"body":"{body}"}}}}]}}}}]}}]}}"#
            )
        };
        let mut invalid_utf8 = text("hi ").into_bytes();
        let at = invalid_utf8.len() - 10;
        invalid_utf8.insert(at, 0xff);
        let lone_surrogate = text("\\ud800");
        for body in [invalid_utf8, lone_surrogate.into_bytes()] {
            let why = check_json_object(&body).unwrap_err();
            assert!(why.starts_with("is not a JSON object ("), "{why}");
        }
        // Readable text of an unexpected shape is taken (and relayed), as it always was.
        assert!(check_json_object(text("hi").as_bytes()).is_ok());
        // One byte-order mark is skipped, as the apply worker skips it; a second is not JSON.
        assert!(check_json_object(b"\xEF\xBB\xBF{}").is_ok());
        assert!(check_json_object(b"\xEF\xBB\xBF\xEF\xBB\xBF{}").is_err());
        assert!(check_json_object(br#"{"entry":{"not":"a list"},"object":5}"#).is_ok());
    }
}
