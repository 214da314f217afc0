//! `GET /v1/recipients/{number}?sender=`: the customer-service window of one recipient.

use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::Response;

use crate::config::Config;
use crate::error::ApiError;
use crate::model::now_ms;
use crate::store::StoreError;
use crate::{validate, window};

use super::extract::{NoBody, Param, Query};
use super::json;
use super::routes::Ctx;
use super::view;

pub async fn get(
    State(ctx): State<Ctx>,
    Param(number): Param,
    _: NoBody,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = Query::parse(&Method::GET, &uri, &["sender"])?;
    let cfg = ctx.app.config();
    let sender = resolve_sender(&cfg, q.get("sender"), "sender")?;
    let to = validate::recipient(&number, "number")?;
    let w = window::lookup(&ctx.app.store, &sender, &to).map_err(StoreError::into_read_error)?;
    let margin = cfg.dispatch.window_margin.as_millis() as u64;
    Ok(json::ok(&view::recipient(
        &sender,
        &to,
        &w,
        now_ms(),
        margin,
    )))
}

/// A configured sender's name; optional when exactly one sender is configured.
pub(super) fn resolve_sender(
    cfg: &Config,
    given: Option<&str>,
    field: &str,
) -> Result<String, ApiError> {
    match given.filter(|s| !s.is_empty()) {
        Some(name) if cfg.sender(name).is_some() => Ok(name.to_string()),
        Some(name) => Err(ApiError::invalid(
            "unknown_sender",
            field,
            format!(
                "`{field}` {name:?} is not a configured sender; use one of {}.",
                cfg.sender_names().join(", ")
            ),
        )),
        None if cfg.senders.len() == 1 => Ok(cfg.senders[0].name.clone()),
        None => Err(ApiError::invalid(
            "missing_field",
            field,
            format!(
                "`{field}` is required because several senders are configured: name one of {}.",
                cfg.sender_names().join(", ")
            ),
        )),
    }
}
