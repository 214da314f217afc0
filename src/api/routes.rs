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

/// The paths of the table above, each `{…}` a segment of the caller's: what a 404 can point to.
pub const ROUTE_SHAPES: [&str; 12] = [
    "/v1/messages",
    "/v1/messages/batch",
    "/v1/messages/retry",
    "/v1/messages/{id}",
    "/v1/messages/{id}/retry",
    "/v1/inbound",
    "/v1/recipients/{number}",
    "/v1/senders/{name}/resume",
    "/v1/stats",
    "/v1/health",
    "/metrics",
    "/v1/events",
];

/// The route shape `path` (without a query) fits, if any.
fn shape_of(path: &str) -> Option<&'static str> {
    ROUTE_SHAPES.into_iter().find(|shape| {
        let (mut given, mut wanted) = (path.split('/'), shape.split('/'));
        loop {
            match (given.next(), wanted.next()) {
                (None, None) => return true,
                (Some(g), Some(w)) if g == w || (w.starts_with('{') && !g.is_empty()) => {}
                _ => return false,
            }
        }
    })
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path = uri.path();
    // A doubled or trailing slash is the usual slip of a path built by joining strings.
    let tidy = path
        .split('/')
        .filter(|part| !part.is_empty())
        .fold(String::new(), |acc, part| acc + "/" + part);
    // A collection without the item it needs (`/v1/recipients/`) is pointed to its shape.
    let needs_item = ROUTE_SHAPES.into_iter().find(|shape| {
        shape
            .strip_prefix(tidy.as_str())
            .is_some_and(|rest| rest.starts_with("/{") && !rest[1..].contains('/'))
    });
    let hint = if !tidy.is_empty() && tidy != path && shape_of(&tidy).is_some() {
        format!("; without the extra slashes it is {tidy}")
    } else if let Some(shape) = needs_item.filter(|_| !tidy.is_empty()) {
        format!("; the path goes on with the item: {shape}")
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
