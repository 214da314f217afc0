//! Connections of peers that `socket.allowed_uids` / `allowed_gids` refuse. They are answered
//! `403` once and closed, outside the connection slots of `socket.max_connections`, so a
//! refused peer cannot crowd out the allowed ones by holding connections open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::log_every::LogEvery;

use super::peer::Peer;

/// Refused connections answered at once; past this, further ones are closed unanswered.
const MAX_ANSWERING: usize = 64;

/// A refused peer has this long to send its request head and read the 403.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

pub struct Refusals {
    answering: Arc<Semaphore>,
    log: LogEvery,
}

impl Default for Refusals {
    fn default() -> Refusals {
        Refusals {
            answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
            log: LogEvery::new(Duration::from_secs(10)),
        }
    }
}

impl Refusals {
    /// Answers the connection's first request with `refusal` and closes it.
    pub fn refuse(&self, stream: UnixStream, peer: Option<Peer>, refusal: ApiError) {
        if let Some(refused) = self.log.due() {
            tracing::warn!(
                uid = peer.map(|p| p.uid),
                gid = peer.map(|p| p.gid),
                pid = peer.and_then(|p| p.pid),
                connections_refused = refused,
                "refused a peer: {}",
                refusal.message
            );
        }
        let Ok(slot) = self.answering.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |_: Request<Incoming>| {
                let answer = refusal.clone().into_response();
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ANSWER_WITHIN)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(ANSWER_WITHIN, conn).await;
        });
    }
}
