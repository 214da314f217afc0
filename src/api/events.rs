//! `GET /v1/events`: the daemon's events (state changes, inbound messages) as NDJSON, one JSON
//! object per line, for as long as the client reads. The stream ends when the daemon stops
//! (`shutdown`) or no longer allows the peer (`closed`, with the refusal's code and message).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hyper::body::Frame;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::model::{format_time, now_ms};

use crate::error::ApiError;

use super::extract::{NoBody, Query};
use super::peer::{self, ConnectionPeer};
use super::routes::Ctx;
use super::server::stopped;

/// Lines buffered between the forwarding task and a slow client; past that, the broadcast
/// channel's own buffer absorbs the lag and reports it.
const BUFFERED_LINES: usize = 64;
/// The longest `heartbeat_s` taken (`waq events --heartbeat` checks against it too).
pub const MAX_HEARTBEAT_S: u64 = 3600;

/// `?heartbeat_s=N`: a `heartbeat` line after every N seconds without one, so that a reader can
/// tell a quiet stream from a daemon gone silent (and the daemon a reader gone away).
fn heartbeat(uri: &Uri) -> Result<Option<std::time::Duration>, ApiError> {
    let q = Query::parse(&Method::GET, uri, &["heartbeat_s"])?;
    q.get("heartbeat_s")
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| (1..=MAX_HEARTBEAT_S).contains(n))
                .map(std::time::Duration::from_secs)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_parameter",
                        "heartbeat_s",
                        format!("`heartbeat_s` is a whole number of seconds from 1 to {MAX_HEARTBEAT_S}"),
                    )
                })
        })
        .transpose()
}

pub async fn stream(
    State(ctx): State<Ctx>,
    _: NoBody,
    uri: Uri,
    peer: Option<Extension<ConnectionPeer>>,
) -> Response {
    let heartbeat = match heartbeat(&uri) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let peer = peer.and_then(|Extension(ConnectionPeer(p))| p);
    let app = ctx.app.clone();
    let mut events = ctx.app.events.subscribe();
    let mut stopping = ctx.stopping.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFERED_LINES);
    // A first line tells the client the subscription is live (events after it will arrive).
    let hello = line(&json!({ "event": "subscribed", "at": format_time(now_ms()) }));
    tokio::spawn(async move {
        if tx.send(hello).await.is_err() {
            return;
        }
        let refused = |app: &crate::app::App| {
            peer::check(&app.config().socket, peer).map(|refused| {
                line(&json!({
                    "event": "closed",
                    "code": refused.code,
                    "message": refused.message,
                }))
            })
        };
        loop {
            // Registered before the permission is checked, so that a reload from this moment
            // on wakes an idle stream to check it again.
            let reloaded = app.reloaded.notified();
            tokio::pin!(reloaded);
            reloaded.as_mut().enable();
            // A reload may have taken the peer's permission back since it subscribed: the last
            // line says so, as the refusal of a new request would.
            if let Some(closed) = refused(&app) {
                // Not waited for: a client that does not read gets no more of the daemon.
                let _ = tx.try_send(closed);
                return;
            }
            let next = tokio::select! {
                e = events.recv() => e,
                _ = stopped(&mut stopping) => {
                    let _ = tx.send(line(&json!({ "event": "shutdown" }))).await;
                    return;
                }
                // The client went away.
                _ = tx.closed() => return,
                _ = &mut reloaded => continue,
                _ = quiet(heartbeat) => {
                    let beat = line(&json!({ "event": "heartbeat", "at": format_time(now_ms()) }));
                    if tx.send(beat).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            // A reload that came with this event.
            if let Some(closed) = refused(&app) {
                // Not waited for: a client that does not read gets no more of the daemon.
                let _ = tx.try_send(closed);
                return;
            }
            let text = match next {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    line(&json!({ "event": "lagged", "missed": missed }))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(text).await.is_err() {
                return;
            }
        }
    });
    let mut res = (StatusCode::OK, Body::new(Lines { rx })).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    res
}

/// Resolves after `heartbeat` (never without one).
async fn quiet(heartbeat: Option<std::time::Duration>) {
    match heartbeat {
        Some(every) => tokio::time::sleep(every).await,
        None => std::future::pending().await,
    }
}

fn line(v: &serde_json::Value) -> Bytes {
    crate::app::event_line(v)
}

/// A response body fed line by line from a channel; ends when the sender is dropped.
struct Lines {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|l| l.map(|b| Ok(Frame::data(b))))
    }
}
