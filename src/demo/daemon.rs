//! The demo's daemon: the same binary started as `waq serve --config <dir>/config.toml`, in its
//! own process group (Ctrl-C at the terminal reaches the demo, which then stops the daemon in
//! order), with its output in `<dir>/daemon.log`, where the demo also reads the address of its
//! webhook listener (on a port the kernel picks). Dropping the guard stops it: SIGTERM, a short
//! wait, then SIGKILL. Should the demo itself be killed outright, the kernel sends the daemon
//! SIGTERM (`PR_SET_PDEATHSIG`), so nothing outlives it.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::Method;

use crate::cli::client::Client;

/// How long a stopping daemon gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Secrets reach the daemon the way the docs recommend: through `*_env` keys.
pub const TOKEN_ENV: &str = "WAQ_DEMO_ACCESS_TOKEN";
pub const APP_SECRET_ENV: &str = "WAQ_DEMO_APP_SECRET";

/// What the daemon's configuration file says.
pub struct DaemonSetup<'a> {
    pub dir: &'a Path,
    pub sim_url: String,
    pub phone_number_id: &'a str,
    pub mps: u32,
    /// `127.0.0.1:0` in the demo: the daemon binds a free port itself and logs which.
    pub webhook_listen: String,
    pub token: &'a str,
    pub app_secret: &'a str,
}

impl DaemonSetup<'_> {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("waq.sock")
    }

    /// A complete config: see `config.toml` for what each key does.
    fn config_toml(&self) -> String {
        let q = |p: &Path| toml_string(&p.display().to_string());
        format!(
            r#"# Written by `waq demo`; removed with its directory when the demo ends.
state_dir = {state}

[log]
# Warnings only, but for the webhook listener's start line, which says where it listens.
level = "warn,waq::webhook=info"

[socket]
path = {socket}
mode = "0600"

[api]
base_url = {base}
request_timeout_ms = 5000
connect_timeout_ms = 1000

[[senders]]
name = "main"
phone_number_id = {pnid}
token_env = "{TOKEN_ENV}"
mps = {mps}

[dispatch]
# Short backoffs so the demo's outage is retried within seconds (production: 1 s .. 5 min).
retry_min_ms = 200
retry_max_ms = 2000

[webhook]
listen = {listen}
path = "/webhook"
app_secret_env = "{APP_SECRET_ENV}"
"#,
            state = q(&self.dir.join("state")),
            socket = q(&self.socket()),
            base = toml_string(&self.sim_url),
            pnid = toml_string(self.phone_number_id),
            mps = self.mps,
            listen = toml_string(&self.webhook_listen),
        )
    }
}

/// A TOML basic string (paths may hold any character).
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running `waq serve`; stopped when dropped.
pub struct DaemonProcess {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    /// Where the webhook listener listens, as it logged once bound (known once started).
    webhook: Option<SocketAddr>,
}

impl DaemonProcess {
    /// Writes the config and starts the daemon; returns once its socket answers and its
    /// webhook listener has said where it listens.
    pub async fn start(setup: &DaemonSetup<'_>) -> anyhow::Result<DaemonProcess> {
        let config = setup.dir.join("config.toml");
        std::fs::write(&config, setup.config_toml())
            .with_context(|| format!("cannot write {}", config.display()))?;
        let log = setup.dir.join("daemon.log");
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let exe = std::env::current_exe().context("cannot find the waq binary to start")?;

        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env(TOKEN_ENV, setup.token)
            .env(APP_SECRET_ENV, setup.app_secret)
            // The demo's own environment must not reconfigure its daemon.
            .env_remove("WAQ__STATE_DIR")
            .env_remove("WAQ__SOCKET__PATH")
            // Nor hide or reformat the log line the demo reads the webhook address from.
            .env_remove("WAQ__LOG__LEVEL")
            .env_remove("WAQ__LOG__JSON")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        die_with_parent(&mut cmd);
        // Spawned from the thread that polls the demo (the main thread, via `block_on`), which
        // lives as long as the process: PR_SET_PDEATHSIG fires when the spawning thread ends.
        let child = cmd.spawn().context("cannot start `waq serve`")?;
        let mut daemon = DaemonProcess {
            child: Some(child),
            socket: setup.socket(),
            log,
            webhook: None,
        };
        daemon.wait_ready().await?;
        Ok(daemon)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The webhook listener's address (`start` returns only once it is known).
    pub fn webhook_addr(&self) -> anyhow::Result<SocketAddr> {
        self.webhook
            .context("the daemon's webhook listener address is not known")
    }

    /// Waits until `GET /v1/health` answers and the webhook listener's start line is in the
    /// log (the listener starts on its own task, so it may come after the health answer);
    /// fails with the daemon's log if it exited.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = Client::new(&self.socket);
        let mut healthy = false;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "`waq serve` exited at start ({status}):\n{}",
                        self.log_tail()
                    );
                }
            }
            if !healthy {
                if let Ok(reply) = client.call(Method::GET, "/v1/health", None).await {
                    healthy = reply.status == 200;
                }
            }
            if self.webhook.is_none() {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                self.webhook = webhook_addr_in(&text);
            }
            if healthy && self.webhook.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                if healthy {
                    bail!(
                        "`waq serve` did not log its webhook listener's address within 30 s:\n{}",
                        self.log_tail()
                    );
                }
                bail!(
                    "`waq serve` did not answer on {} within 30 s:\n{}",
                    self.socket.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines the daemon printed (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        if tail.is_empty() {
            "(the daemon printed nothing)".into()
        } else {
            tail
        }
    }

    /// Graceful stop (SIGTERM, as systemd does); killed if it takes longer than `STOP_GRACE`.
    /// Returns whether it stopped cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet (so the
            // pid cannot have been reused).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address in the webhook listener's start line (text format:
/// `... INFO webhook listener ready addr=127.0.0.1:PORT path=/webhook`).
fn webhook_addr_in(log: &str) -> Option<SocketAddr> {
    // Complete lines only: one being written could end in a truncated port.
    let complete = &log[..log.rfind('\n')?];
    let line = complete
        .lines()
        .rev()
        .find(|l| l.contains("webhook listener ready"))?;
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("addr="))?
        .parse()
        .ok()
}

/// Asks the kernel to send the daemon SIGTERM when the demo dies, however it dies.
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: prctl, getppid and kill are async-signal-safe, as code between fork and exec must be.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            // The demo may have died before prctl took effect. (SIGKILL: until exec, this child
            // still has the demo's SIGTERM handler.)
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_address_is_read_from_the_listeners_start_line() {
        let log = "2026-01-01T00:00:00.000000Z  WARN something else addr=10.0.0.1:1\n\
                   2026-01-01T00:00:00.000001Z  INFO webhook listener ready addr=127.0.0.1:41234 path=/webhook\n";
        assert_eq!(
            webhook_addr_in(log),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(webhook_addr_in("INFO waq is serving\n"), None);
        // A line still being written is not taken for an address.
        assert_eq!(
            webhook_addr_in("INFO webhook listener ready addr=127.0.0.1:4"),
            None
        );
    }
}
