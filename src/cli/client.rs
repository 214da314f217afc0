//! A minimal HTTP/1.1 client over the daemon's Unix socket (hyper's client connection on a
//! tokio `UnixStream`): one connection per command, which is all a command needs.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Long enough for a 10,000-item batch on a slow disk; a daemon that takes longer is stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The daemon could not be reached or broke off, or what answered is not one: exit code 3.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// One request; any HTTP status is a `Reply` (the caller decides what 4xx means).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, Unreachable> {
        let exchange = async {
            let res = self.send(method, path, body).await?;
            let status = res.status().as_u16();
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| self.broke_off(e))?
                .to_bytes();
            Ok(Reply { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                // Sent, so perhaps carried out later: a connection that waits for one of the
                // daemon's slots is served when one frees, even after its client left.
                Unreachable(format!(
                    "the daemon on {} did not answer within {} s (every connection slot busy, or \
                     the daemon stuck); the request was sent and may still be carried out: \
                     check before sending again, or send again with the same --key",
                    self.socket.display(),
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?
    }

    /// A streaming GET: `on_chunk` sees the body as it arrives, until the daemon ends it or
    /// `on_chunk` fails. An error status comes back whole as `Err(reply)` instead.
    pub async fn stream(
        &self,
        path: &str,
        mut on_chunk: impl FnMut(&[u8]) -> Result<(), Unreachable>,
    ) -> Result<Result<(), Reply>, Unreachable> {
        let res = self.send(Method::GET, path, None).await?;
        let status = res.status().as_u16();
        let mut body = res.into_body();
        if status >= 400 {
            let body = body
                .collect()
                .await
                .map_err(|e| self.broke_off(e))?
                .to_bytes();
            return Ok(Err(Reply { status, body }));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.broke_off(e))?;
            if let Some(data) = frame.data_ref() {
                on_chunk(data)?;
            }
        }
        Ok(Ok(()))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Unreachable> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_error(e))?;
        let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| self.broke_off(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "waq");
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Unreachable(format!("cannot build the request: {e}")))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| self.broke_off(e))
    }

    fn connect_error(&self, e: io::Error) -> Unreachable {
        let path = self.socket.display();
        Unreachable(match e.kind() {
            io::ErrorKind::NotFound => format!(
                "no daemon socket at {path}: is `waq serve` running? (choose the socket with --socket or $WAQ_SOCKET)"
            ),
            io::ErrorKind::ConnectionRefused => match std::fs::metadata(&self.socket) {
                Ok(meta) if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
                    format!(
                        "{path} is not a socket but a {}: point --socket or $WAQ_SOCKET at the \
                         daemon's socket (socket.path of its configuration)",
                        if meta.is_dir() { "directory" } else { "file" }
                    )
                }
                _ => format!("nothing is listening on {path}: the daemon is not running"),
            },
            io::ErrorKind::PermissionDenied => format!(
                "permission denied on {path}: run as a user the socket's mode allows (see socket.mode)"
            ),
            _ => format!("cannot connect to {path}: {e}"),
        })
    }

    fn broke_off(&self, e: impl std::fmt::Display) -> Unreachable {
        Unreachable(format!(
            "the connection to {} broke off: {e}",
            self.socket.display()
        ))
    }
}
