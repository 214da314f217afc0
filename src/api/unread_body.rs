//! What a handler left of its request's body, read after the answer is made.
//!
//! A request refused on its head alone (an unknown route, a method not allowed, a query or
//! a body the endpoint does not take) is answered without its body being read. hyper then
//! closes the connection, and a client that writes its whole request before it reads (Python's
//! `http.client`, Node's `http` with a large body) meets a broken pipe instead of the JSON
//! error. So a body dropped unfinished is handed back, and read and dropped (bounded as for a
//! 413) before the answer goes out; the connection then stays open.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::Request;

use super::json;

/// Where a body dropped before its end is put.
#[derive(Default)]
pub struct Leftover(Arc<Mutex<Option<Incoming>>>);

impl Leftover {
    /// Wraps `req`'s body so that, dropped unfinished, it lands here.
    pub fn track(req: Request<Incoming>) -> (Request<Body>, Leftover) {
        let leftover = Leftover::default();
        let shared = leftover.0.clone();
        let req = req.map(|inner| {
            Body::new(HandedBack {
                inner: Some(inner),
                finished: false,
                leftover: shared,
            })
        });
        (req, leftover)
    }

    /// Reads and drops what the handler left unread, if anything.
    pub async fn discard(self, how: json::Unneeded) {
        let rest = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rest) = rest {
            how.discard(Body::new(rest)).await;
        }
    }
}

struct HandedBack {
    /// `None` only once dropped.
    inner: Option<Incoming>,
    finished: bool,
    leftover: Arc<Mutex<Option<Incoming>>>,
}

impl hyper::body::Body for HandedBack {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for HandedBack {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if !self.finished && !inner.is_end_stream() {
                *self.leftover.lock().unwrap_or_else(|p| p.into_inner()) = Some(inner);
            }
        }
    }
}
