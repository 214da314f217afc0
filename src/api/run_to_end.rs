//! A request that has begun to change the store finishes, whatever its client does.
//!
//! hyper drops a request's future when its connection ends under it. A handler stopped
//! between its store write and its commit, its counts or its hand-over to the dispatcher
//! would leave a message stored but never sent (until a restart), or a batch that the next
//! start takes back although a retry was already told "duplicate". Dropped unfinished, the
//! future is spawned to finish on its own instead; only its answer, which nobody can read
//! any more, is lost.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct RunToEnd<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    /// `None` once finished.
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> RunToEnd<F>
where
    F::Output: Send + 'static,
{
    pub fn new(future: F) -> Self {
        RunToEnd {
            inner: Some(Box::pin(future)),
        }
    }
}

impl<F: Future + Send + 'static> Future for RunToEnd<F>
where
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Pending;
        };
        let out = inner.as_mut().poll(cx);
        if out.is_ready() {
            self.inner = None;
        }
        out
    }
}

impl<F: Future + Send + 'static> Drop for RunToEnd<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let (Some(inner), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn dropped_unfinished_it_still_runs_to_the_end() {
        let finished = Arc::new(AtomicBool::new(false));
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let flag = finished.clone();
        let mut request = RunToEnd::new(async move {
            let _ = wait.await;
            flag.store(true, Ordering::SeqCst);
        });
        // Polled once (as hyper does), then dropped (the client went away).
        assert!(Pin::new(&mut request)
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
            .is_pending());
        drop(request);
        go.send(()).unwrap();
        for _ in 0..100 {
            if finished.load(Ordering::SeqCst) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the dropped request did not finish");
    }

    #[tokio::test]
    async fn finished_it_answers_as_the_future_does() {
        assert_eq!(RunToEnd::new(async { 7 }).await, 7);
    }
}
