//! A connection's slot under `socket.max_connections`, and what decides that it may be closed
//! to make room for a peer that waits for one: no request in its handler, no event stream,
//! no bytes read or written since it was last asked, and its last request over for a second.
//! Event streams hold their slots for as long as they follow, so they may take all but one:
//! the last is kept for the requests that end (a health check, an enqueue).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};

/// While a connected peer waits for a slot, the connections are asked again this often: one
/// that was busy at the last ask may be idle now.
pub const SHED_AGAIN: Duration = Duration::from_millis(250);
/// Only a connection whose last request ended this long ago closes when asked: one that has
/// just connected, or just had its answer, is most likely about to send its next request.
const SHED_IDLE_AFTER: Duration = Duration::from_secs(1);

/// What the server's connections share: the slots a waiting peer still wants, and the event
/// streams' count against their bound.
pub struct Slots {
    /// Slots the waiting peer still wants: each closing connection takes one, so one ask
    /// closes one connection, not every idle one.
    wanted: AtomicUsize,
    streams: AtomicUsize,
    max_streams: usize,
}

impl Slots {
    pub fn new(max_connections: usize) -> Arc<Slots> {
        Arc::new(Slots {
            wanted: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            max_streams: max_streams(max_connections),
        })
    }

    /// A peer waits for a slot: the next connection that can make room does.
    pub fn want_one(&self) {
        self.wanted.store(1, Relaxed);
    }

    /// The waiting peer has its slot.
    pub fn want_none(&self) {
        self.wanted.store(0, Relaxed);
    }

    fn take_wanted(&self) -> bool {
        self.wanted
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// How many connections may follow event streams at once: all but one of the slots, so a
/// request that ends always gets a slot in turn (with a single slot, none: a follower would
/// keep every request out).
pub fn max_streams(max_connections: usize) -> usize {
    max_connections.saturating_sub(1)
}

/// What a connection holds while it is served: its slot, its "alive" mark (the stop waits for
/// every one), and what shedding needs to know of it.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _alive: mpsc::Sender<()>,
    /// Requests of this connection whose handler has not finished.
    busy: AtomicUsize,
    /// Set while the connection holds one of the event streams' places (from its request's
    /// start, for good once its stream began): its answer streams on after the handler
    /// returned, so it is never idle.
    streams: AtomicBool,
    /// Set by every read or write that moved bytes (a head arriving, an answer leaving),
    /// cleared by each ask.
    moved: AtomicBool,
    /// When it connected or its last request ended, in milliseconds since `epoch`.
    active_at_ms: AtomicU64,
    /// A second handle on the connection of an event stream, handed over when the stream's
    /// first bytes leave, to see its follower go (`follower_gone`).
    follower: Mutex<Option<OwnedFd>>,
    follower_handed: Notify,
    epoch: Instant,
    shared: Arc<Slots>,
}

impl Slot {
    pub fn new(
        permit: OwnedSemaphorePermit,
        alive: mpsc::Sender<()>,
        epoch: Instant,
        shared: Arc<Slots>,
    ) -> Slot {
        let slot = Slot {
            _permit: permit,
            _alive: alive,
            busy: AtomicUsize::new(0),
            streams: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            active_at_ms: AtomicU64::new(0),
            follower: Mutex::new(None),
            follower_handed: Notify::new(),
            epoch,
            shared,
        };
        slot.touch();
        slot
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.active_at_ms.store(now, Relaxed);
    }

    /// Takes one of the event streams' places for this connection, unless all are taken.
    pub fn take_stream_place(&self) -> bool {
        if self.streams.load(Relaxed) {
            return true;
        }
        let shared = &self.shared;
        let taken = shared
            .streams
            .fetch_update(Relaxed, Relaxed, |n| {
                (n < shared.max_streams).then_some(n + 1)
            })
            .is_ok();
        if taken {
            self.streams.store(true, Relaxed);
        }
        taken
    }

    /// Resolves when the peer of a connection that streams events has ended its side
    /// (closed, or `shutdown(SHUT_WR)`): it is taken as gone, and dropping its connection
    /// frees the slot at once rather than at the next event written. hyper does not read a
    /// connection while its answer streams, so the connection is watched through a handle of
    /// its own. Never resolves for a connection that does not stream.
    pub async fn follower_gone(&self) {
        let fd = loop {
            self.follower_handed.notified().await;
            let handed = self
                .follower
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(fd) = handed {
                break fd;
            }
        };
        let watch = match tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
        {
            Ok(w) => w,
            // Not watched: the stream ends at its next write instead.
            Err(_) => return std::future::pending().await,
        };
        loop {
            match watch.ready(Interest::READABLE).await {
                Ok(ready) if ready.is_read_closed() => return,
                // Bytes sent after the request: left for hyper, and the readiness cleared so
                // that only the next change wakes this.
                Ok(_) => {
                    let _ = watch.try_io(Interest::READABLE, || {
                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                    });
                }
                Err(_) => return,
            }
        }
    }

    pub fn max_streams(&self) -> usize {
        self.shared.max_streams
    }

    /// The request that took a place did not begin a stream.
    pub fn give_back_stream_place(&self) {
        if self.streams.swap(false, Relaxed) {
            self.shared.streams.fetch_sub(1, Relaxed);
        }
    }

    /// Asked to make room: whether this connection closes. It does when it has been idle (as
    /// above) and a wanted slot is still to be given.
    pub fn gives_way(&self) -> bool {
        let moved = self.moved.swap(false, Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        let idle = !moved
            && self.busy.load(Relaxed) == 0
            && !self.streams.load(Relaxed)
            && now.saturating_sub(self.active_at_ms.load(Relaxed))
                >= SHED_IDLE_AFTER.as_millis() as u64;
        idle && self.shared.take_wanted()
    }

    /// At the end of a request: whether its answer closes the connection, giving its slot to
    /// a peer that waits for one (so busy keep-alive connections take turns with waiting
    /// ones, rather than holding every slot for as long as they stay busy).
    pub fn yields_to_waiting_peer(&self) -> bool {
        self.shared.wanted.load(Relaxed) > 0
            && !self.streams.load(Relaxed)
            && self.shared.take_wanted()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.give_back_stream_place();
    }
}

/// A request of the connection in progress; counted in `Slot::busy` until dropped.
pub struct InRequest(Arc<Slot>);

impl InRequest {
    pub fn start(slot: &Arc<Slot>) -> Self {
        slot.busy.fetch_add(1, Relaxed);
        InRequest(slot.clone())
    }

    pub fn slot(&self) -> &Slot {
        &self.0
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Relaxed);
    }
}

/// The connection's stream, marking its slot each time bytes move.
pub struct Watched<S> {
    inner: S,
    slot: Arc<Slot>,
    /// Whether the slot got its handle on the connection (see `Slot::follower_gone`).
    handed_follower: bool,
}

impl<S: AsFd> Watched<S> {
    pub fn new(inner: S, slot: Arc<Slot>) -> Self {
        Watched {
            inner,
            slot,
            handed_follower: false,
        }
    }

    /// After bytes left: if they began an event stream, hands the slot its handle on the
    /// connection (once; streams are the only answers that need it).
    fn wrote(&mut self) {
        self.slot.moved.store(true, Relaxed);
        if self.handed_follower || !self.slot.streams.load(Relaxed) {
            return;
        }
        self.handed_follower = true;
        if let Ok(fd) = self.inner.as_fd().try_clone_to_owned() {
            *self.slot.follower.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd);
            self.slot.follower_handed.notify_one();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.slot.moved.store(true, Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + AsFd + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
