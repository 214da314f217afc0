//! The socket server: binds the Unix socket, accepts connections up to `socket.max_connections`,
//! checks each peer's credentials (refused peers: `refusal`), serves HTTP/1.1 (keep-alive, pipelining) with the router, and
//! on stop finishes in-flight requests before returning. When every slot is taken and another
//! peer connects, idle keep-alive connections are closed to make room.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tower::ServiceExt as _;

use crate::app::App;
use crate::config::SocketConfig;
use crate::error::ApiError;
use crate::http_head;
use crate::metrics::Metrics;

use super::json;
use super::messages;
use super::peer::{self, Peer};
use super::refusal::Refusals;
use super::routes::{router, Ctx};
use super::slot::{InRequest, Slot, Slots, Watched, SHED_AGAIN};
use super::unread_body::Leftover;

/// A request's head must arrive within this; it also closes keep-alive connections idle for
/// this long (hyper runs the same timer while waiting for the next request).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server asks of its connections. One channel for both, so a connection's task
/// polls one waiter on each wake-up, as it did for the stop alone.
#[derive(Clone, Copy, Default)]
struct ToConnections {
    /// Finish the request in progress, then close.
    stopping: bool,
    /// Bumped to ask the idle connections to close.
    shed: u64,
}

/// The bound socket. Removes its file when dropped, if the file is still the one it created.
pub struct Listener {
    inner: UnixListener,
    /// The file we created, identified by (device, inode), to be removed at the end.
    created: Option<(PathBuf, u64, u64)>,
}

impl Listener {
    pub fn local_path(&self) -> Option<&Path> {
        self.created.as_ref().map(|(p, _, _)| p.as_path())
    }

    /// The path a listener passed in by the service manager is bound to, if it has one.
    pub fn inherited_path(&self) -> Option<PathBuf> {
        if self.created.is_some() {
            return None;
        }
        let addr = self.inner.local_addr().ok()?;
        addr.as_pathname().map(Path::to_path_buf)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = &self.created {
            let ours =
                std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Binds `cfg.path` with `cfg.mode`, or adopts `inherited` (a listener passed in by the service
/// manager, e.g. systemd socket activation). A stale socket file is replaced; a live daemon on
/// the path is an error.
pub fn bind(
    cfg: &SocketConfig,
    inherited: Option<std::os::unix::net::UnixListener>,
) -> anyhow::Result<Listener> {
    if let Some(l) = inherited {
        l.set_nonblocking(true)
            .context("socket: cannot make the inherited listener non-blocking")?;
        return Ok(Listener {
            inner: UnixListener::from_std(l)
                .context("socket: cannot adopt the inherited listener")?,
            created: None,
        });
    }
    let path = &cfg.path;
    clear_stale(path)?;
    let dir = crate::config::socket_dir(path);
    // Directories waq makes for the socket: writable by its user alone (the umask can narrow
    // that further), or another user could replace the socket with a listener of its own.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .with_context(|| format!("socket.path: cannot create {}", dir.display()))?;
    // Bound inside a private (0700) directory, given its mode, then renamed into place: there is
    // no moment in which the socket is reachable with a wider mode than configured.
    // Short names: the staged path must fit a socket address's 107 bytes too (the
    // configuration's check makes sure it does).
    let staged = crate::config::staged_socket_path(path, std::process::id());
    let staging = staged
        .parent()
        .map_or_else(|| dir.clone(), Path::to_path_buf);
    let over = staged.as_os_str().len() as isize - crate::config::MAX_SOCKET_PATH as isize;
    if over > 0 {
        anyhow::bail!(
            "socket.path: {} is bound first as {} in a private directory beside it, {over} \
             bytes over the {} a Unix socket's address holds: shorten the path's directory",
            path.display(),
            staged.display(),
            crate::config::MAX_SOCKET_PATH
        );
    }
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::PermissionDenied => " as this user",
                _ => "",
            };
            anyhow::Error::new(e).context(format!(
                "socket.path: cannot create {}: cannot write in {}{hint}",
                path.display(),
                dir.display()
            ))
        })?;
    let bound = std::os::unix::net::UnixListener::bind(&staged)
        .with_context(|| format!("socket.path: cannot bind {}", path.display()));
    let placed = bound.and_then(|l| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(cfg.mode)).with_context(
            || {
                format!(
                    "socket.mode: cannot set {:o} on {}",
                    cfg.mode,
                    path.display()
                )
            },
        )?;
        std::fs::rename(&staged, path).with_context(|| {
            format!("socket.path: cannot move the socket to {}", path.display())
        })?;
        Ok(l)
    });
    let _ = std::fs::remove_dir_all(&staging);
    let std_listener = placed?;
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("socket.path: {} vanished after bind", path.display()))?;
    std_listener.set_nonblocking(true)?;
    Ok(Listener {
        inner: UnixListener::from_std(std_listener)?,
        created: Some((path.clone(), meta.dev(), meta.ino())),
    })
}

/// A socket file nobody answers on is left over from a crash: remove it. Refuse to touch a
/// live daemon's socket or a file that is not a socket.
fn clear_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("socket.path: cannot inspect {}", path.display()))
        }
    };
    if !meta.file_type().is_socket() {
        anyhow::bail!(
            "socket.path: {} exists and is not a socket; remove it or choose another path",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => anyhow::bail!(
            "socket.path: another process (another waq daemon?) is already serving on {}; stop it first, or choose another path",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).with_context(|| {
                format!(
                    "socket.path: cannot remove the stale socket {}",
                    path.display()
                )
            })?;
            tracing::info!(path = %path.display(), "removed a stale socket file");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("socket.path: cannot check {}", path.display())),
    }
}

/// Serves until `stop` turns true, then stops accepting, lets every connection finish the
/// request it is on (at most `grace`), and returns.
pub async fn run(
    listener: Listener,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let ctx = Ctx {
        app: app.clone(),
        stopping: stop.clone(),
    };
    let router = router(ctx.clone());
    let max_connections = app.config().socket.max_connections;
    let limit = Arc::new(Semaphore::new(max_connections));
    let slots = Slots::new(max_connections);
    let refusals = Refusals::default();
    // Every connection task holds a clone; `recv` returns `None` once they all ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let (signal_tx, signal_rx) = watch::channel(ToConnections::default());
    let epoch = Instant::now();
    'accepting: loop {
        let stream = tokio::select! {
            r = listener.inner.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of file descriptors: give in-flight work a moment to release some.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let peer = stream.peer_cred().ok().map(|c| Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        });
        // Checked against the configuration in force when the peer connected.
        if let Some(refusal) = peer::check(&app.config().socket, peer) {
            refusals.refuse(stream, peer, refusal);
            continue;
        }
        // Past the cap, this peer waits for a slot (and later ones in the kernel's backlog),
        // while connections that only keep a slot for their next request make room: a pool of
        // idle keep-alive connections must not shut out a producer that has work.
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => loop {
                slots.want_one();
                signal_tx.send_modify(|s| s.shed = s.shed.wrapping_add(1));
                tokio::select! {
                    p = limit.clone().acquire_owned() => match p {
                        Ok(p) => {
                            slots.want_none();
                            break p;
                        }
                        Err(_) => break 'accepting,
                    },
                    _ = tokio::time::sleep(SHED_AGAIN) => {}
                    _ = stopped(&mut stop) => break 'accepting,
                }
            },
        };
        let (ctx, router, signal) = (ctx.clone(), router.clone(), signal_rx.clone());
        // The connection's slot and its "alive" mark last as long as the connection or a
        // request of it still running after it ended (`RunToEnd`), whichever is later: the
        // cap and the stop's wait count that work too.
        let slot = Arc::new(Slot::new(permit, alive_tx.clone(), epoch, slots.clone()));
        tokio::spawn(serve_connection(stream, ctx, router, signal, slot, peer));
    }
    // New connections are refused from here on.
    drop(listener);
    signal_tx.send_modify(|s| s.stopping = true);
    drop(alive_tx);
    if tokio::time::timeout(grace, alive_rx.recv()).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "connections still open after the grace period; closing them"
        );
    }
}

/// The 403 of a peer whose permission a reload took back, closing its connection.
fn closing(refusal: ApiError) -> axum::response::Response {
    let mut res = refusal.into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// The answer to one more event stream than the slots allow.
fn too_many_streams(max_streams: usize) -> ApiError {
    let message = match max_streams {
        0 => "`socket.max_connections` is 1, and its one slot is kept for requests that end: \
              raise it to follow `GET /v1/events`"
            .to_string(),
        n => format!(
            "{n} connections already follow `GET /v1/events`, all the slots of \
             `socket.max_connections` but the one kept for other requests: close a follower, \
             or raise `socket.max_connections`"
        ),
    };
    ApiError::new(503, "too_many_event_streams", message)
}

/// Resolves once a stop is asked for (or the server is gone). Returns nothing, so no watch
/// guard lives on across the caller's next await.
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn serve_connection(
    stream: UnixStream,
    ctx: Ctx,
    router: Router,
    mut signal: watch::Receiver<ToConnections>,
    slot: Arc<Slot>,
    peer: Option<Peer>,
) {
    let served = slot.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        // Allowed when it connected; a reload since may have taken that back.
        let revoked = peer::check(&ctx.app.config().socket, peer);
        let router = router.clone();
        let ctx = ctx.clone();
        let in_request = InRequest::start(&served);
        let mut req = req;
        // Only the event stream outlives a reload (and an extension costs allocations, which
        // the hot path does without).
        let events = req.uri().path() == "/v1/events";
        if events {
            req.extensions_mut().insert(peer::ConnectionPeer(peer));
        }
        super::run_to_end::RunToEnd::new(async move {
            let in_request = in_request;
            Metrics::inc(&ctx.app.metrics.api_requests);
            // Only copied when the request log is on.
            let logged = tracing::enabled!(tracing::Level::DEBUG)
                .then(|| (req.method().clone(), req.uri().path().to_string()));
            let no_stream_place = events && !in_request.slot().take_stream_place();
            let follows = events && req.method() == Method::GET;
            let mut res = if let Some(refusal) = revoked {
                closing(refusal)
            } else {
                match () {
                    _ if http_head::too_large(&req) => {
                        let unneeded = json::Unneeded::of(req.headers());
                        unneeded.discard(Body::new(req.into_body())).await;
                        ApiError::new(
                            431,
                            "headers_too_large",
                            format!(
                                "the request's target and headers exceed {} bytes",
                                http_head::MAX_HEAD_BYTES
                            ),
                        )
                        .into_response()
                    }
                    _ if no_stream_place => {
                        let unneeded = json::Unneeded::of(req.headers());
                        unneeded.discard(Body::new(req.into_body())).await;
                        too_many_streams(in_request.slot().max_streams()).into_response()
                    }
                    // The hottest route goes past the router's matching and boxed futures, to the
                    // handler the router would pick.
                    _ if req.method() == Method::POST && req.uri().path() == "/v1/messages" => {
                        messages::enqueue(State(ctx), req.map(Body::new))
                            .await
                            .into_response()
                    }
                    _ => {
                        let unneeded = json::Unneeded::of(req.headers());
                        let (req, leftover) = Leftover::track(req);
                        let res = router
                            .oneshot(req)
                            .await
                            .unwrap_or_else(|never| match never {});
                        leftover.discard(unneeded).await;
                        res
                    }
                }
            };
            // A stream that began streams on after its handler returned, keeping its place.
            let streams = follows && res.status() == hyper::StatusCode::OK;
            if events && !streams {
                in_request.slot().give_back_stream_place();
            }
            if !streams && in_request.slot().yields_to_waiting_peer() {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if let Some((method, path)) = logged {
                tracing::debug!(%method, %path, status = res.status().as_u16(), "request");
            }
            Ok::<_, Infallible>(res)
        })
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        // A client that shuts down its side after its request (`nc -N`, socat) still gets
        // its answer. hyper then no longer ends a connection whose answer streams
        // (`GET /v1/events`) when its client goes away: `follower_gone` below does.
        .half_close(true)
        // Aggregating the answers to pipelined requests would leave hyper's own answer to a
        // head it cannot parse (400, 414, 431) unflushed when it closes the connection.
        .pipeline_flush(false)
        // Head and body copied into one buffer and sent by one `send`: fewer instructions per
        // answer than a vectored write of the two (answers are small).
        .writev(false)
        .serve_connection(TokioIo::new(Watched::new(stream, slot.clone())), service);
    tokio::pin!(conn);
    let follower_gone = slot.follower_gone();
    tokio::pin!(follower_gone);
    loop {
        tokio::select! {
            // The connection first: bytes that arrived with the ask are read, and count.
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            // Dropping the connection ends its stream and frees its slot.
            () = &mut follower_gone => return,
            changed = signal.changed() => {
                // A server gone counts as a stop.
                let asked = changed.map(|()| *signal.borrow_and_update()).unwrap_or(ToConnections {
                    stopping: true,
                    shed: 0,
                });
                // Stopping: finish the request in progress, answer it, then close. Idle
                // between requests: hyper closes it at once (a client that keeps a pool opens
                // another when it needs one).
                if asked.stopping || slot.gives_way() {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                    return;
                }
            }
        }
    }
}
