//! `GET /v1/recipients/{number}?sender=`: the customer-service window of one recipient.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use crate::config::Config;
use crate::error::ApiError;
use crate::model::now_ms;
use crate::{validate, window};

use super::extract::{Param, Params};
use super::json;
use super::routes::Ctx;
use super::view;

#[derive(Deserialize)]
pub struct RecipientQuery {
    sender: Option<String>,
}

pub async fn get(
    State(ctx): State<Ctx>,
    Param(number): Param,
    Params(q): Params<RecipientQuery>,
) -> Result<Response, ApiError> {
    let cfg = ctx.app.config();
    let sender = resolve_sender(&cfg, q.sender.as_deref(), "sender")?;
    let to = validate::recipient(&number, "number")?;
    let w = window::lookup(&ctx.app.store, &sender, &to)?;
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
                "no sender named `{name}` is configured; configured: {}",
                cfg.sender_names().join(", ")
            ),
        )),
        None if cfg.senders.len() == 1 => Ok(cfg.senders[0].name.clone()),
        None => Err(ApiError::invalid(
            "missing_field",
            field,
            format!(
                "several senders are configured; name one of: {}",
                cfg.sender_names().join(", ")
            ),
        )),
    }
}
