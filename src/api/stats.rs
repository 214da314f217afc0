//! What operators look at: `GET /v1/stats` (JSON), `GET /v1/health`, `GET /metrics`
//! (Prometheus text format 0.0.4). None of them shows a token or any other secret.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::model::State as MsgState;

use super::extract::NoQuery;
use super::json;
use super::routes::Ctx;

pub async fn stats(State(ctx): State<Ctx>, _: NoQuery) -> Response {
    let app = &ctx.app;
    let counts = app.store.counts();
    let by_state: Map<String, Value> = counts
        .iter()
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect();
    let depth = queue_depth(&counts);
    let counters: Map<String, Value> = app
        .metrics
        .counters()
        .into_iter()
        .map(|(name, _, v)| {
            let short = name.trim_start_matches("waq_").trim_end_matches("_total");
            (short.to_string(), json!(v))
        })
        .collect();
    let snapshot = app.dispatcher.snapshot(&app.store);
    let commit = app.store.commit_stats();
    let disk_bytes = app.store.size_on_disk();
    json::ok(&json!({
        "version": env!("CARGO_PKG_VERSION"),
        // The counters start from 0 at each start; this says when that was.
        "started_at": crate::model::format_time(app.started_at_ms),
        "messages": by_state,
        "queue_depth": depth,
        "in_flight": snapshot.in_flight,
        // The cap across all senders, which holds them below their own `mps` when it binds.
        "global_mps": app.config().dispatch.global_mps,
        "senders": snapshot.senders,
        "counters": counters,
        "commit": {
            "commits": commit.commits.load(Relaxed),
            "waiters": commit.waiters.load(Relaxed),
        },
        "disk_bytes": disk_bytes,
        "shutting_down": app.is_shutting_down(),
    }))
}

pub async fn health(State(ctx): State<Ctx>, _: NoQuery) -> Result<Response, ApiError> {
    if ctx.app.is_shutting_down() {
        return Err(json::shutting_down());
    }
    let senders = ctx.app.dispatcher.snapshot(&ctx.app.store).senders;
    let paused: Vec<Value> = senders
        .iter()
        .filter(|s| s.paused)
        .map(|s| json!({ "name": s.name, "reason": s.pause_reason }))
        .collect();
    // Senders gone from the configuration whose messages wait for them to come back.
    let unconfigured: Vec<Value> = senders
        .iter()
        .filter(|s| !s.configured)
        .map(|s| json!({ "name": s.name, "queued": s.queued }))
        .collect();
    // Senders whose requests get no answer at all (a wrong base_url, a network in the way).
    let unreachable: Vec<Value> = senders
        .iter()
        .filter_map(|s| {
            let u = s.unreachable.as_ref()?;
            let mut v = json!(u);
            v["name"] = json!(s.name);
            Some(v)
        })
        .collect();
    // Senders whose portfolio has reached its messaging limit: working as configured (not
    // degraded), but new users wait.
    let at_messaging_limit: Vec<Value> = senders
        .iter()
        .filter_map(|s| {
            let l = s.messaging_limit.as_ref()?;
            l.full_until.as_ref()?;
            let mut v = json!(l);
            v["name"] = json!(s.name);
            Some(v)
        })
        .collect();
    // A consumer of relayed webhooks that fails for a while (the first retries take 15 s).
    let relay = ctx
        .app
        .relay_trouble
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .filter(|t| t.failures >= RELAY_FAILURES_DEGRADED);
    // A store refusing writes (disk full) is 503, so that checks on the status see it.
    if let Some(e) = ctx.app.store.refusing_writes() {
        let e = ApiError::from(e);
        return Ok(json::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "status": "degraded",
                "paused_senders": paused,
                "unconfigured_senders": unconfigured,
                "unreachable_senders": unreachable,
                "senders_at_messaging_limit": at_messaging_limit,
                "webhook_relay": relay,
                "store": {"code": e.code, "message": e.message},
            }),
        ));
    }
    let status = if paused.is_empty()
        && unconfigured.is_empty()
        && unreachable.is_empty()
        && relay.is_none()
    {
        "ok"
    } else {
        "degraded"
    };
    Ok(json::ok(&json!({
        "status": status,
        "paused_senders": paused,
        "unconfigured_senders": unconfigured,
        "unreachable_senders": unreachable,
        "senders_at_messaging_limit": at_messaging_limit,
        "webhook_relay": relay,
    })))
}

/// Failed relays in a row that make the daemon degraded: 1 + 2 + 4 + 8 s of retries.
const RELAY_FAILURES_DEGRADED: u64 = 5;

pub async fn metrics(State(ctx): State<Ctx>, _: NoQuery) -> Response {
    let app = &ctx.app;
    let mut out = String::with_capacity(4096);
    for (name, help, value) in app.metrics.counters() {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "waq_start_time_seconds",
        "gauge",
        "When the daemon started, in seconds since the Unix epoch: the counters count from then.",
    );
    let _ = writeln!(
        out,
        "waq_start_time_seconds {}",
        app.started_at_ms as f64 / 1000.0
    );
    let commit = app.store.commit_stats();
    family(
        &mut out,
        "waq_commits_total",
        "counter",
        "Group commits (one flush + fsync each).",
    );
    let _ = writeln!(out, "waq_commits_total {}", commit.commits.load(Relaxed));
    family(
        &mut out,
        "waq_commit_waiters_total",
        "counter",
        "Writes made durable by group commits.",
    );
    let _ = writeln!(
        out,
        "waq_commit_waiters_total {}",
        commit.waiters.load(Relaxed)
    );

    let counts = app.store.counts();
    family(
        &mut out,
        "waq_messages",
        "gauge",
        "Messages in the store, by state.",
    );
    for (state, n) in &counts {
        let _ = writeln!(out, "waq_messages{{state=\"{}\"}} {n}", state.as_str());
    }
    let depth = queue_depth(&counts);
    family(
        &mut out,
        "waq_queue_depth",
        "gauge",
        "Messages the dispatcher still owns (queued, retrying, sending).",
    );
    let _ = writeln!(out, "waq_queue_depth {depth}");
    family(
        &mut out,
        "waq_store_disk_bytes",
        "gauge",
        "Bytes the database occupies on disk.",
    );
    let _ = writeln!(out, "waq_store_disk_bytes {}", app.store.size_on_disk());

    family(
        &mut out,
        "waq_webhook_relay_failures",
        "gauge",
        "Failed deliveries in a row of the oldest payload waiting for webhook.forward_url (0 while the relay keeps up).",
    );
    let _ = writeln!(
        out,
        "waq_webhook_relay_failures {}",
        app.metrics.webhook_relay_failures.load(Relaxed)
    );

    let bodies = &app.bodies;
    for (name, help, value) in [
        (
            "waq_body_memory_bytes",
            "Request bodies held in memory under socket.max_body_memory_bytes now (bodies over 64 KiB; a batch counts four times its size).",
            bodies.held(),
        ),
        (
            "waq_body_memory_peak_bytes",
            "The most waq_body_memory_bytes has been since the start.",
            bodies.peak(),
        ),
        (
            "waq_body_memory_waiting",
            "Requests waiting for room under socket.max_body_memory_bytes before their body is read.",
            bodies.waiting(),
        ),
    ] {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }

    let snapshot = app.dispatcher.snapshot(&app.store);
    family(
        &mut out,
        "waq_in_flight",
        "gauge",
        "Requests to the Cloud API in flight.",
    );
    let _ = writeln!(out, "waq_in_flight {}", snapshot.in_flight);
    type Gauge = fn(&crate::dispatch::SenderSnapshot) -> f64;
    let per_sender: [(&str, &str, Gauge); 7] = [
        ("waq_sender_mps", "Configured messages per second.", |s| {
            f64::from(s.mps)
        }),
        (
            "waq_sender_effective_mps",
            "Rate in force now (lower after Meta asked to slow down).",
            |s| s.effective_mps,
        ),
        (
            "waq_sender_sent_last_second",
            "Requests started in the last second (right after a start, the previous run's last requests count too: Meta still does).",
            |s| f64::from(s.sent_last_second),
        ),
        (
            "waq_sender_in_flight",
            "Requests in flight for this sender.",
            |s| s.in_flight as f64,
        ),
        (
            "waq_sender_queued",
            "Messages waiting in this sender's scheduler.",
            |s| s.queued as f64,
        ),
        (
            "waq_sender_paused",
            "1 while the sender's circuit breaker holds it paused.",
            |s| if s.paused { 1.0 } else { 0.0 },
        ),
        (
            "waq_sender_configured",
            "0 for a sender no longer configured that holds messages, unsent.",
            |s| if s.configured { 1.0 } else { 0.0 },
        ),
    ];
    for (name, help, get) in per_sender {
        family(&mut out, name, "gauge", help);
        for s in &snapshot.senders {
            let _ = writeln!(out, "{name}{{sender=\"{}\"}} {}", label(&s.name), get(s));
        }
    }

    type LimitGauge = fn(&crate::dispatch::messaging_limit::MessagingLimitSnapshot) -> u64;
    let per_limited_sender: [(&str, &str, LimitGauge); 2] = [
        (
            "waq_sender_messaging_limit",
            "The sender's messaging_limit: unique users its portfolio may reach outside a window in 24 h.",
            |l| u64::from(l.limit),
        ),
        (
            "waq_sender_messaging_reached_24h",
            "Unique users the sender's portfolio reached outside a window in the last 24 h.",
            |l| l.reached_24h,
        ),
    ];
    for (name, help, get) in per_limited_sender {
        family(&mut out, name, "gauge", help);
        for s in &snapshot.senders {
            if let Some(l) = &s.messaging_limit {
                let _ = writeln!(out, "{name}{{sender=\"{}\"}} {}", label(&s.name), get(l));
            }
        }
    }

    let mut res = (StatusCode::OK, out).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// Messages the dispatcher still owns.
fn queue_depth(counts: &[(MsgState, u64)]) -> u64 {
    counts
        .iter()
        .filter(|(s, _)| s.is_pending())
        .map(|(_, n)| n)
        .sum()
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
