//! `POST /v1/senders/{name}/resume`: resumes a sender its circuit breaker paused.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use crate::error::ApiError;

use super::extract::{NoQuery, Param};
use super::json::{self, Limit};
use super::routes::Ctx;

pub async fn resume(
    State(ctx): State<Ctx>,
    Param(name): Param,
    _: NoQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cfg = ctx.app.config();
    json::no_body(
        &headers,
        body,
        Limit::request(&cfg, &ctx.app.bodies),
        "a resume request",
    )
    .await?;
    if cfg.sender(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no sender named `{name}` is configured; configured: {}",
            cfg.sender_names().join(", ")
        )));
    }
    ctx.app
        .dispatcher
        .resume_sender(&name)
        .map_err(|why| ApiError::conflict("cannot_resume", why))?;
    tracing::info!(sender = %name, "sender resumed by request");
    Ok(json::ok(&json!({ "sender": name, "resumed": true })))
}
