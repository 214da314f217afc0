//! Helpers of the reliability suites (`crash`, `faults`, `bad_input`, `security`, `disk_full`):
//! the Cloud API simulator in-process behind a recording proxy, a raw HTTP client for TCP
//! listeners, paging through every stored message, and process measurements.
#![allow(dead_code)] // each suite uses its own part of this

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use waq::sim::{self, SimConfig, SimHandle, SimStats};

use crate::common::{Daemon, PATIENCE};

/// The phone number id of the simulator's default number and of the suites' sender.
pub const PHONE_ID: &str = "120000000000001";

/// What the recording proxy saw: per `biz_opaque_callback_data`, how many requests carrying it
/// the simulator answered 200 (accepted).
#[derive(Default)]
pub struct Recorded {
    pub accepted: HashMap<String, u32>,
    /// Requests forwarded, whatever the answer.
    pub requests: u64,
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    recorded: Arc<Mutex<Recorded>>,
}

/// The simulator on its own tokio runtime, with a proxy in front of it that records every
/// accepted send by its `biz_opaque_callback_data`. waq talks to the proxy (`base_url`).
pub struct Sim {
    rt: tokio::runtime::Runtime,
    handle: Option<SimHandle>,
    /// The recording proxy, or the simulator itself for `start_direct`.
    proxy_addr: SocketAddr,
    pub recorded: Arc<Mutex<Recorded>>,
}

impl Sim {
    /// The simulator behind the recording proxy.
    pub fn start(cfg: SimConfig) -> Sim {
        Sim::start_with(cfg, true)
    }

    /// The simulator alone: waq talks to it directly (nothing recorded per message), so its
    /// rate measurements see waq's timing with no proxy in between.
    pub fn start_direct(cfg: SimConfig) -> Sim {
        Sim::start_with(cfg, false)
    }

    fn start_with(cfg: SimConfig, with_proxy: bool) -> Sim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the simulator");
        let local: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let handle = rt
            .block_on(sim::start(cfg, local))
            .expect("the simulator starts");
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        if !with_proxy {
            let proxy_addr = handle.addr();
            return Sim {
                rt,
                handle: Some(handle),
                proxy_addr,
                recorded,
            };
        }
        let state = Arc::new(ProxyState {
            upstream: handle.base_url(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("a reqwest client"),
            recorded: recorded.clone(),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(local))
            .expect("the proxy binds");
        let proxy_addr = listener.local_addr().expect("the proxy's address");
        let app = axum::Router::new().fallback(proxy).with_state(state);
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Sim {
            rt,
            handle: Some(handle),
            proxy_addr,
            recorded,
        }
    }

    /// What waq's `api.base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    /// The simulator itself (its `/sim/*` control endpoints).
    pub fn addr(&self) -> SocketAddr {
        self.handle.as_ref().expect("the simulator runs").addr()
    }

    pub fn stats(&self) -> SimStats {
        let h = self.handle.as_ref().expect("the simulator runs");
        self.rt.block_on(h.stats())
    }

    /// `POST /sim/faults` with `body`; panics unless the simulator took it.
    pub fn faults(&self, body: &Value) {
        let (status, text) = http_tcp(self.addr(), "POST", "/sim/faults", &[], body.to_string());
        assert_eq!(status, 200, "POST /sim/faults {body}: {text}");
    }

    /// `POST /sim/token` with `body`.
    pub fn token(&self, body: &Value) {
        let (status, text) = http_tcp(self.addr(), "POST", "/sim/token", &[], body.to_string());
        assert_eq!(status, 200, "POST /sim/token {body}: {text}");
    }

    /// Copies of what the proxy recorded.
    pub fn accepted_by_tag(&self) -> HashMap<String, u32> {
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .accepted
            .clone()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), h.shutdown()).await
            });
        }
    }
}

async fn proxy(State(p): State<Arc<ProxyState>>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let tag = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["biz_opaque_callback_data"].as_str().map(str::to_string));
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut out = p
        .client
        .request(parts.method, format!("{}{}", p.upstream, path))
        .body(bytes.to_vec());
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v.clone());
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body = answer.bytes().await.unwrap_or_default();
    {
        let mut r = p.recorded.lock().unwrap_or_else(|e| e.into_inner());
        r.requests += 1;
        if status == StatusCode::OK {
            if let Some(tag) = tag {
                *r.accepted.entry(tag).or_default() += 1;
            }
        }
    }
    let mut res = (status, body).into_response();
    if let Some(ct) = content_type {
        res.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    res
}

/// One HTTP/1.1 request over TCP with `Connection: close`; (status, body). Status 0 when no
/// answer could be read.
pub fn http_tcp(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl AsRef<[u8]>,
) -> (u16, String) {
    let body = body.as_ref();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let raw = raw_exchange(addr, &bytes, false, Duration::from_secs(30));
    parse_response(&raw)
}

/// Writes `bytes` on a fresh TCP connection (then half-closes it if `half_close`), and reads
/// until the peer closes (or `timeout`).
pub fn raw_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    half_close: bool,
    timeout: Duration,
) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// (status, body) of the first response in `raw`; status 0 when there is none.
pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Every stored message, following `next_cursor` to the end.
pub fn all_messages(d: &Daemon) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut conn = d.conn();
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/messages?limit=1000&cursor={c}"),
            None => "/v1/messages?limit=1000".to_string(),
        };
        let r = conn.send("GET", &path, None).expect("listing messages");
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        let page = r.json();
        out.extend(page["messages"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// Counts by state from `/v1/stats`.
pub fn counts(d: &Daemon) -> HashMap<String, u64> {
    let r = d.get("/v1/stats");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["messages"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// States a message never leaves by itself (webhook-driven `delivered`/`read` aside).
pub const TERMINAL: [&str; 6] = [
    "sent",
    "delivered",
    "read",
    "failed",
    "expired",
    "cancelled",
];

/// Messages not yet in a terminal state.
pub fn unfinished(d: &Daemon) -> u64 {
    counts(d)
        .iter()
        .filter(|(state, _)| !TERMINAL.contains(&state.as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// Waits until every stored message is terminal (bounded by `limit`, not a speed assertion:
/// only a bound on a hang). Returns false on timeout.
pub fn wait_drained(d: &Daemon, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if unfinished(d) == 0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The resident set size of `pid` in KiB (Linux `/proc`).
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Polls `f` until it holds (bounded by `PATIENCE`).
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sender section for a daemon that talks to `sim` with `token`, at `mps`.
pub fn sender_toml(token: &str, mps: u32) -> String {
    format!(
        "[[senders]]\nname = \"main\"\nphone_number_id = \"{PHONE_ID}\"\ntoken = \"{token}\"\nmps = {mps}\n"
    )
}

/// A template send to `to` tagged with `tag` (echoed as `biz_opaque_callback_data`).
pub fn tagged(to: &str, tag: &str) -> Value {
    serde_json::json!({
        "to": to,
        "message": {"type": "template",
                    "template": {"name": "hello_world", "language": {"code": "en_US"}},
                    "biz_opaque_callback_data": tag}
    })
}

/// A recipient number from an index (distinct for distinct `i` below 10^7).
pub fn recipient(i: usize) -> String {
    format!("+1415{:07}", i % 10_000_000)
}

/// Reads an environment variable as a number, with a default.
pub fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
