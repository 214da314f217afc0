//! The load generator's clients over the daemon's Unix socket: hyper's HTTP/1.1 client for the
//! occasional control request (stats, health), and `RawConn` for the hot loops: requests
//! serialised once before the measurement, one write and one read per request, keep-alive.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// One keep-alive connection to the daemon.
pub struct Conn {
    tx: http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// An answer: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Conn {
    pub async fn open(socket: &Path) -> anyhow::Result<Conn> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the daemon")?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { tx, driver })
    }

    /// Sends one request and reads the whole answer.
    pub async fn call(&mut self, method: Method, path: &str, body: Bytes) -> anyhow::Result<Reply> {
        self.tx
            .ready()
            .await
            .context("the daemon closed the connection")?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "waq");
        if !body.is_empty() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body))?;
        let res = self
            .tx
            .send_request(req)
            .await
            .context("the daemon broke off the request")?;
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .context("reading the daemon's answer")?
            .to_bytes();
        Ok(Reply { status, body })
    }
}

/// One request on a fresh connection (for the occasional stats or health call).
pub async fn once(socket: &Path, method: Method, path: &str, body: Bytes) -> anyhow::Result<Reply> {
    let mut c = Conn::open(socket).await?;
    c.call(method, path, body).await
}

/// `GET /v1/stats` as JSON.
pub async fn stats(socket: &Path) -> anyhow::Result<serde_json::Value> {
    let r = once(socket, Method::GET, "/v1/stats", Bytes::new()).await?;
    if r.status != 200 {
        bail!("GET /v1/stats answered {}", r.status);
    }
    Ok(serde_json::from_slice(&r.body)?)
}

/// Waits until `GET /v1/health` answers 200; returns false after `patience`.
pub async fn wait_healthy(socket: &Path, patience: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = once(socket, Method::GET, "/v1/health", Bytes::new()).await {
            if r.status == 200 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// A complete HTTP/1.1 request (head and body), serialised once and sent many times.
pub fn raw_request(method: &str, path: &str, body: &[u8]) -> Bytes {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: waq\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// The generator's hot-loop connection: writes a pre-serialised request, reads the answer's
/// head and `content-length` body, nothing more. One write and usually one read per request,
/// so the generator spends a few microseconds where hyper's client (a connection task and a
/// channel per request) spends several times that.
pub struct RawConn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn open(socket: &Path) -> anyhow::Result<RawConn> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        Ok(RawConn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends `request` (from `raw_request`) and returns the status and the body of the answer.
    pub async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(u16, &[u8])> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(request).await?;
        self.buf.clear();
        let mut head_end = None;
        let mut need = usize::MAX;
        loop {
            if self.buf.len() >= need {
                break;
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                bail!("the daemon closed the connection mid-answer");
            }
            if head_end.is_none() {
                if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                    let end = i + 4;
                    head_end = Some(end);
                    need = end + content_length(&self.buf[..end])?;
                }
            }
        }
        let end = head_end.unwrap_or(0);
        let status = self
            .buf
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .context("the answer has no HTTP status line")?;
        Ok((status, &self.buf[end..need]))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> anyhow::Result<usize> {
    let text = std::str::from_utf8(head).context("the answer's head is not text")?;
    text.split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("the answer has no content-length")
}
