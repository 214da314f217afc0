//! The route table and the state every handler gets.

use std::sync::Arc;

use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;

use crate::app::App;
use crate::error::ApiError;

use super::{events, inbound, messages, recipients, senders, stats};

/// What handlers share: the app, and the server's stop signal (long streams end on it).
#[derive(Clone)]
pub struct Ctx {
    pub app: Arc<App>,
    pub stopping: watch::Receiver<bool>,
}

pub fn router(ctx: Ctx) -> Router {
    Router::new()
        // `POST /v1/messages` reaches `messages::enqueue` past this table too (`server.rs`); it
        // stays here so that the table is whole and other methods on the path get their 405.
        .route(
            "/v1/messages",
            post(messages::enqueue)
                .get(messages::list)
                .delete(messages::cancel_matching),
        )
        .route("/v1/messages/batch", post(messages::batch))
        .route("/v1/messages/retry", post(messages::retry_matching))
        .route(
            "/v1/messages/{id}",
            get(messages::get).delete(messages::cancel),
        )
        .route("/v1/messages/{id}/retry", post(messages::retry))
        .route("/v1/inbound", post(inbound::record))
        .route("/v1/recipients/{number}", get(recipients::get))
        .route("/v1/senders/{name}/resume", post(senders::resume))
        .route("/v1/stats", get(stats::stats))
        .route("/v1/health", get(stats::health))
        .route("/metrics", get(stats::metrics))
        .route("/v1/events", get(events::stream))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ctx)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path = uri.path();
    // A doubled or trailing slash is the usual slip of a path built by joining strings.
    let tidy = path
        .split('/')
        .filter(|part| !part.is_empty())
        .fold(String::new(), |acc, part| acc + "/" + part);
    let hint = if !tidy.is_empty() && tidy != path {
        format!("; without the extra slashes it is {tidy}")
    } else if !path.starts_with("/v1/") && path != "/metrics" {
        "; the API lives under /v1".to_string()
    } else {
        String::new()
    };
    ApiError::new(
        404,
        "unknown_route",
        format!("there is no {method} {path}{hint} (see the socket API reference)"),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        405,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
