//! Test helpers shared by the integration tests: a `Daemon` guard that runs the real `waq`
//! binary on a temporary state directory and socket, a small HTTP/1.1 client over the
//! Unix socket, and a `Sim` guard that runs the Cloud API simulator in the test process for
//! a daemon to send to (`Daemon::builder().against(&sim)`).
//!
//! ```ignore
//! let d = Daemon::builder()
//!     .set("socket", "mode = \"0600\"")          // a key in a section ("" = top level)
//!     .toml("[webhook]\nlisten = \"127.0.0.1:0\"") // raw TOML appended at the end
//!     .env("WA_APP_SECRET", "s3cret")
//!     .start();
//! let r = d.post("/v1/messages", &json!({...}));
//! assert_eq!(r.status, 202);
//! ```
#![allow(dead_code)] // each test binary uses its own part of this

mod net;
#[allow(unused_imports)] // as above
pub use net::{logged_addr, HeldPort, SimChild};

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the daemon may take to start or stop before a test gives up (not a timing
/// assertion: only a bound on a hang).
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_waq")
}

/// A template message: needs no open window.
pub fn template_request(to: &str) -> Value {
    serde_json::json!({
        "to": to,
        "message": {"type": "template", "template": {"name": "hello_world", "language": {"code": "en_US"}}}
    })
}

/// `request` with a `send_at` far in the future: the dispatcher leaves it `queued`, so tests
/// that look at states see exactly what the API did.
pub fn parked(mut request: Value) -> Value {
    request["send_at"] = serde_json::json!(parked_until());
    request
}

pub fn parked_until() -> String {
    // Within the year ahead that `send_at` may be.
    waq::model::format_time(waq::model::now_ms() + 300 * 86_400_000)
}

/// A text message: needs an open window (or a fallback template).
pub fn text_request(to: &str, body: &str) -> Value {
    serde_json::json!({ "to": to, "message": {"type": "text", "text": {"body": body}} })
}

pub struct DaemonBuilder {
    /// Section name ("" = top level) → key → value line.
    sections: BTreeMap<String, BTreeMap<String, String>>,
    extra: Vec<String>,
    default_sender: bool,
    env: Vec<(String, String)>,
    wait: bool,
}

impl DaemonBuilder {
    /// Sets `line` (`key = value`) in `[section]` ("" for the top level), replacing that key.
    pub fn set(mut self, section: &str, line: &str) -> Self {
        let key = line.split('=').next().unwrap_or(line).trim().to_string();
        self.sections
            .entry(section.to_string())
            .or_default()
            .insert(key, line.to_string());
        self
    }

    /// Appends raw TOML after everything else (extra `[[senders]]`, `[webhook]`, ...).
    pub fn toml(mut self, text: &str) -> Self {
        self.extra.push(text.to_string());
        self
    }

    /// Leaves out the default `main` sender (add your own with `toml`).
    pub fn without_default_sender(mut self) -> Self {
        self.default_sender = false;
        self
    }

    /// An environment variable for the daemon process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Do not wait for the socket to answer (for daemons expected to fail at start).
    pub fn no_wait(mut self) -> Self {
        self.wait = false;
        self
    }

    /// Writes the configuration into a fresh temporary directory and starts the daemon.
    pub fn start(self) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        self.start_in(dir)
    }

    /// Like `start`, in a directory of the caller's (e.g. to share a state dir or socket).
    pub fn start_in(self, dir: tempfile::TempDir) -> Daemon {
        let root = dir.path().to_path_buf();
        let text = self.render(&root);
        let config_path = root.join("waq.toml");
        std::fs::write(&config_path, &text).unwrap();
        let socket = self.socket_path(&root);
        let mut d = Daemon {
            socket,
            state_dir: root.join("state"),
            config_path,
            log_path: root.join("daemon.log"),
            env: self.env,
            child: None,
            dir,
        };
        d.spawn();
        if self.wait {
            d.wait_ready();
        }
        d
    }

    fn socket_path(&self, root: &Path) -> PathBuf {
        self.sections
            .get("socket")
            .and_then(|s| s.get("path"))
            .and_then(|line| line.split('"').nth(1))
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("waq.sock"))
    }

    /// The configuration text for a daemon rooted at `root`.
    pub fn render(&self, root: &Path) -> String {
        let mut sections = self.sections.clone();
        let mut defaults = |section: &str, key: &str, line: String| {
            sections
                .entry(section.to_string())
                .or_default()
                .entry(key.to_string())
                .or_insert(line);
        };
        defaults(
            "",
            "state_dir",
            format!("state_dir = {:?}", root.join("state").display().to_string()),
        );
        defaults(
            "socket",
            "path",
            format!("path = {:?}", root.join("waq.sock").display().to_string()),
        );
        // Nothing listens there: the daemon never reaches Meta from a test.
        defaults(
            "api",
            "base_url",
            "base_url = \"http://127.0.0.1:9\"".into(),
        );
        defaults("log", "level", "level = \"info\"".into());

        let mut out = String::new();
        if let Some(top) = sections.remove("") {
            for line in top.values() {
                out.push_str(line);
                out.push('\n');
            }
        }
        for (name, lines) in &sections {
            out.push_str(&format!("\n[{name}]\n"));
            for line in lines.values() {
                out.push_str(line);
                out.push('\n');
            }
        }
        if self.default_sender {
            out.push_str(
                "\n[[senders]]\nname = \"main\"\nphone_number_id = \"120000000000001\"\ntoken = \"test-token\"\n",
            );
        }
        for extra in &self.extra {
            out.push('\n');
            out.push_str(extra);
            out.push('\n');
        }
        out
    }
}

/// A running `waq serve`, killed when dropped.
pub struct Daemon {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    /// The daemon's stdout and stderr, across restarts.
    pub log_path: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// This process's uid, and another that nothing here runs as (`socket.allowed_uids` tests).
pub fn own_and_other_uid() -> (u32, u32) {
    let own = unsafe { libc::getuid() };
    (own, own.wrapping_add(4242))
}

/// `allowed_uids = [A, B]` as the config file writes it.
fn allowed_uids_line(uids: &[u32]) -> String {
    let ids: Vec<String> = uids.iter().map(u32::to_string).collect();
    format!("allowed_uids = [{}]", ids.join(", "))
}

impl Daemon {
    /// The default daemon, its socket letting in only `uids` (`socket.allowed_uids`).
    pub fn allowing_uids(uids: &[u32]) -> Daemon {
        Daemon::builder()
            .set("socket", &allowed_uids_line(uids))
            .start()
    }

    /// Rewrites `allowed_uids` from `from` to `to` in the daemon's file and reloads it.
    pub fn reload_allowed_uids(&self, from: &[u32], to: &[u32]) {
        let text = self
            .config_text()
            .replace(&allowed_uids_line(from), &allowed_uids_line(to));
        assert_ne!(text, self.config_text());
        self.write_config(&text);
        self.sighup();
        self.wait_for_log("configuration reloaded");
    }

    /// The default daemon: one sender `main` with `token = "test-token"`.
    pub fn start() -> Daemon {
        Daemon::builder().start()
    }

    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            sections: BTreeMap::new(),
            extra: Vec::new(),
            default_sender: true,
            env: Vec::new(),
            wait: true,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    /// Waits until the socket answers HTTP (any status: a peer-restricted daemon says 403).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("the daemon exited at start ({status}):\n{}", self.log());
            }
            if let Ok(mut c) = self.try_conn() {
                if c.send("GET", "/v1/health", None).is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again on the same state and config without waiting for its socket
    /// (to kill it during start-up). Kill the running one first.
    pub fn spawn_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    /// Like `wait_ready`, but says what went wrong instead of panicking: the exit status and
    /// the log when the daemon died at start.
    pub fn try_wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("the daemon exited at start ({status})"));
            }
            if let Ok(mut c) = self.try_conn() {
                if c.send("GET", "/v1/health", None).is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err("the daemon did not start in time".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still alive (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Waits for the process to exit (bounded by `PATIENCE`).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon not running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Stops the daemon if running (SIGTERM) and starts it again on the same state and config.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.sigterm();
            assert!(
                status.success(),
                "the daemon did not stop cleanly: {status}\n{}",
                self.log()
            );
        }
        self.spawn();
        self.wait_ready();
    }

    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Where the webhook listener listens: with `listen = "127.0.0.1:0"` the kernel picks the
    /// port (one picked by the test and then bound by the daemon could be taken meanwhile),
    /// and the daemon logs it (the last address logged).
    pub fn webhook_addr(&self) -> std::net::SocketAddr {
        self.wait_for_log("webhook listener ready");
        logged_addr(&self.log(), "webhook listener ready", "addr=")
            .unwrap_or_else(|| panic!("no webhook address in the log:\n{}", self.log()))
    }

    /// Polls the log until it contains `needle` (bounded by `PATIENCE`).
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap()
    }

    pub fn try_conn(&self) -> std::io::Result<Conn> {
        Conn::open(&self.socket)
    }

    /// A keep-alive connection to the socket.
    pub fn conn(&self) -> Conn {
        self.try_conn().unwrap()
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        self.conn().send(method, path, body).unwrap()
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    /// The value of an unlabelled counter or gauge of `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.get("/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, Some(body.to_string().as_bytes()))
    }

    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, None)
    }

    /// Runs a client command (`waq ARGS...`) against this daemon's socket.
    pub fn waq(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("WAQ_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `error.code` of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// `error.message` of an error answer.
    pub fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One HTTP/1.1 connection over the Unix socket: send requests one by one (keep-alive), or
/// write raw bytes and read responses (pipelining), or read a streamed body chunk by chunk.
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    pub fn open(path: &Path) -> std::io::Result<Conn> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(PATIENCE))?;
        Ok(Conn {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// How long reads wait (`PATIENCE` by default).
    pub fn set_read_timeout(&self, t: Duration) {
        self.writer.set_read_timeout(Some(t)).unwrap();
    }

    /// `POST path` with `body` as JSON, on this connection.
    pub fn post(&mut self, path: &str, body: &serde_json::Value) -> std::io::Result<Response> {
        self.send("POST", path, Some(body.to_string().as_bytes()))
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        self.write_request(method, path, body)?;
        self.read_response()
    }

    pub fn write_request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<()> {
        self.write_raw(&request_bytes(method, path, body))
    }

    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Reads one whole response (Content-Length or chunked body).
    pub fn read_response(&mut self) -> std::io::Result<Response> {
        let (status, headers) = self.read_head()?;
        let mut body = Vec::new();
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        if chunked {
            while let Some(chunk) = self.read_chunk()? {
                body.extend_from_slice(&chunk);
            }
        } else if let Some(len) = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
        {
            body.resize(len, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Reads a status line and headers (for a streamed response, then call `read_chunk`).
    pub fn read_head(&mut self) -> std::io::Result<(u16, Vec<(String, String)>)> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok((status, headers))
    }

    /// The next chunk of a chunked body; `None` at its end.
    pub fn read_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim(), 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data)?;
        data.truncate(size);
        Ok((size > 0).then_some(data))
    }
}

pub fn request_bytes(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let body = body.unwrap_or_default();
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: waq\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------------
// The Cloud API simulator and helpers for tests that let the daemon really send.

/// The simulator's default business number (the default sender `main` sends from it).
pub const SIM_NUMBER: &str = "120000000000001";
/// The default sender's token, which `sim_config()` makes the simulator accept.
pub const TOKEN: &str = "test-token";

/// The simulator's defaults, accepting the default sender's token.
pub fn sim_config() -> waq::sim::SimConfig {
    waq::sim::SimConfig {
        token: TOKEN.into(),
        ..waq::sim::SimConfig::default()
    }
}

/// A second business number of the simulator, for a second sender (each sender has its own).
pub const SECOND_NUMBER: &str = "120000000000002";

/// `sim_config()` with `SECOND_NUMBER` as well.
pub fn two_numbers() -> waq::sim::SimConfig {
    let mut config = sim_config();
    config
        .numbers
        .push(waq::sim::NumberConfig::new(SECOND_NUMBER));
    config
}

/// A `[[senders]]` block.
pub fn sender_toml(name: &str, phone_number_id: &str, token: &str, mps: u32) -> String {
    format!(
        "[[senders]]\nname = {name:?}\nphone_number_id = {phone_number_id:?}\ntoken = {token:?}\nmps = {mps}\n"
    )
}

/// Polls `probe` every 20 ms until it gives a value; panics after `limit` (a bound on a hang,
/// not a timing assertion), naming `what` and the last state `describe` gives.
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what} after {limit:?}: {}",
            describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Cloud API simulator (`waq::sim`) on 127.0.0.1, in a background runtime of its own, so
/// that synchronous tests can drive a daemon against it. Stopped when dropped.
pub struct Sim {
    rt: tokio::runtime::Runtime,
    handle: Option<waq::sim::SimHandle>,
    http: reqwest::Client,
    base: String,
}

impl Sim {
    /// The simulator on a free port of 127.0.0.1.
    pub fn start(config: waq::sim::SimConfig) -> Sim {
        Sim::start_in(|| waq::sim::start(config, std::net::SocketAddr::from(([127, 0, 0, 1], 0))))
    }

    /// The simulator on `port`, which refused connections until now: a daemon can be pointed
    /// at the simulator's address before it answers.
    pub fn start_held(config: waq::sim::SimConfig, port: HeldPort) -> Sim {
        Sim::start_in(|| async {
            let listener = tokio::net::TcpListener::from_std(port.listen())?;
            waq::sim::start_with_listener(config, listener).await
        })
    }

    fn start_in<F: std::future::Future<Output = anyhow::Result<waq::sim::SimHandle>>>(
        start: impl FnOnce() -> F,
    ) -> Sim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sim")
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.block_on(start()).unwrap();
        let base = handle.base_url();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Sim {
            rt,
            handle: Some(handle),
            http,
            base,
        }
    }

    /// `http://127.0.0.1:PORT`: the daemon's `api.base_url`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn stats(&self) -> waq::sim::SimStats {
        let handle = self.handle.as_ref().unwrap();
        self.rt.block_on(handle.stats())
    }

    /// What the default number saw.
    pub fn number(&self) -> waq::sim::NumberStats {
        self.stats().numbers[SIM_NUMBER].clone()
    }

    /// POSTs to one of the simulator's own endpoints (`/sim/faults`, `/sim/token`,
    /// `/sim/inbound`); panics unless it answers 200.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let r = self.http.post(&url).json(body).send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, 200, "{path}: {text}");
            serde_json::from_str(&text).unwrap()
        })
    }

    /// Replaces the faults of every number (`{}` clears them).
    pub fn faults(&self, faults: &Value) {
        self.post("/sim/faults", faults);
    }

    /// Makes every number accept `token` (and only it) from now on.
    pub fn set_token(&self, token: &str) {
        self.post("/sim/token", &serde_json::json!({ "token": token }));
    }

    /// A user writes to the default number: opens their window, sends the signed webhook.
    pub fn inbound(&self, from: &str) -> Value {
        self.post("/sim/inbound", &serde_json::json!({ "from": from }))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.rt.block_on(handle.shutdown());
        }
    }
}

impl DaemonBuilder {
    /// Sends to `sim` instead of the default address where nothing listens.
    pub fn against(self, sim: &Sim) -> Self {
        self.set("api", &format!("base_url = {:?}", sim.base_url()))
    }
}

impl Daemon {
    /// `POST /v1/messages`; asserts 202 and answers the id.
    pub fn enqueue(&self, request: &Value) -> String {
        let r = self.post("/v1/messages", request);
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_string()
    }

    /// `POST /v1/messages/batch`; asserts every item was queued and answers the ids in order.
    pub fn enqueue_batch(&self, requests: &[Value]) -> Vec<String> {
        let r = self.post("/v1/messages/batch", &Value::Array(requests.to_vec()));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                assert_eq!(item["state"], "queued", "{item}");
                item["id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// `GET /v1/messages/{id}`.
    pub fn message(&self, id: &str) -> Value {
        let r = self.get(&format!("/v1/messages/{id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Polls a message until `done` holds (bounded by `limit`); answers it.
    pub fn wait_message(&self, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        wait_until(
            &format!("message {id}"),
            limit,
            || Some(self.message(id)).filter(|m| done(m)),
            || self.message(id).to_string(),
        )
    }

    /// Messages by state, from `GET /v1/stats`.
    pub fn count(&self, state: &str) -> u64 {
        self.get("/v1/stats").json()["messages"][state]
            .as_u64()
            .unwrap_or(0)
    }

    /// Polls until `n` messages are in `state` (bounded by `limit`).
    pub fn wait_count(&self, state: &str, n: u64, limit: Duration) {
        wait_until(
            &format!("{n} messages {state}"),
            limit,
            || (self.count(state) >= n).then_some(()),
            || self.get("/v1/stats").json()["messages"].to_string(),
        )
    }
}

/// Waits up to `limit` for `child` to exit (killing it and failing the test after that, saying
/// `what` did not stop); returns its status and stderr.
pub fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> (ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).unwrap();
    }
    (status, stderr)
}
