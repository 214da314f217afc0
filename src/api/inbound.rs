//! `POST /v1/inbound`: records that a customer wrote to a sender (opens the 24-hour window),
//! for setups whose webhooks are received elsewhere.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::{format_time, now_ms, parse_time};
use crate::{validate, window};

use super::extract::NoQuery;
use super::json::{self, read_body, Limit};
use super::recipients::resolve_sender;
use super::routes::Ctx;
use super::view;

/// An inbound time this far ahead of our clock is taken as clock skew; further is a mistake
/// that would hold a window open past its real end.
const MAX_FUTURE_MS: u64 = 5 * 60 * 1000;

/// The fields of an inbound record.
const FIELDS: [&str; 3] = ["sender", "from", "at"];

pub async fn record(
    State(ctx): State<Ctx>,
    _: NoQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let app = &ctx.app;
    let cfg = app.config();
    let bytes = read_body(&headers, body, Limit::request(&cfg, &app.bodies)).await?;
    let v = json::parse(&bytes)?;
    let obj = v.as_object().ok_or_else(|| {
        ApiError::bad_request("the body must be a JSON object: {\"sender\", \"from\", \"at\"}")
    })?;
    // A misspelt `at` would otherwise record the message as received now.
    if let Some(key) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(validate::unknown_field(key, "an inbound record", &FIELDS));
    }
    let sender = match obj.get("sender") {
        None | Some(Value::Null) => resolve_sender(&cfg, None, "sender")?,
        Some(Value::String(s)) => resolve_sender(&cfg, Some(s), "sender")?,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "sender",
                "`sender` must be a string",
            ))
        }
    };
    let from = match obj.get("from") {
        Some(Value::String(s)) => validate::recipient(s, "from")?,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "from",
                "`from` must be a phone number string",
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "missing_field",
                "from",
                "`from` is required: the phone number that wrote to the sender",
            ))
        }
    };
    let now = now_ms();
    let at = match obj.get("at") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => parse_time(s).map_err(|e| {
            ApiError::invalid("invalid_value", "at", e.message("at", &validate::quote(s)))
        })?,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "at",
                "`at` must be an RFC 3339 string",
            ))
        }
    };
    if at > now.saturating_add(MAX_FUTURE_MS) {
        return Err(ApiError::invalid(
            "invalid_value",
            "at",
            format!(
                "`at` ({}) is in the future; give the time the message was received",
                format_time(at)
            ),
        ));
    }

    // Within the skew allowance it is taken as now, as the webhook takes Meta's timestamps:
    // a window must not outlast the real one.
    let at = at.min(now);
    let generation = app.store.generation();
    app.store.record_inbound(&sender, &from, at)?;
    app.store.commit_since(generation).await?;
    app.window_opened(&sender, &from);
    Metrics::inc(&app.metrics.inbound_messages);
    app.publish(json!({
        "event": "inbound",
        "sender": sender,
        "from": from,
        "at": format_time(at),
        "source": "api",
    }));
    let w = window::lookup(&app.store, &sender, &from)?;
    let margin = cfg.dispatch.window_margin.as_millis() as u64;
    Ok(json::ok(&view::recipient(&sender, &from, &w, now, margin)))
}
