//! The daemon under test: the same binary started as `serve` on a configuration written into a
//! temporary directory, and what the kernel says about it (CPU time, resident memory, disk).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::client;

/// How long a start or stop may take before the run gives up (a bound on a hang).
const PATIENCE: Duration = Duration::from_secs(120);

/// Linux reports utime/stime in USER_HZ ticks, which the kernel ABI fixes at 100 per second.
const USER_HZ: f64 = 100.0;

pub struct Daemon {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Settings of one daemon under test.
pub struct Setup {
    pub sim_url: String,
    pub phone_number_id: String,
    pub token: String,
    pub mps: u32,
    /// `store.cache_capacity_mb`, when not the default.
    pub cache_mb: Option<u64>,
}

impl Daemon {
    /// Writes the configuration into `dir` (which must exist); does not start anything yet.
    pub fn new(dir: &Path, setup: &Setup) -> anyhow::Result<Daemon> {
        let socket = dir.join("waq.sock");
        let state_dir = dir.join("state");
        let config = dir.join("waq.toml");
        let text = format!(
            r#"state_dir = {state:?}

[log]
level = "warn"

[socket]
path = {socket:?}

[api]
base_url = {url:?}
version = "v23.0"

[[senders]]
name = "main"
phone_number_id = {pnid:?}
token = {token:?}
mps = {mps}

[dispatch]
max_in_flight = 512
{store}"#,
            state = state_dir.display().to_string(),
            socket = socket.display().to_string(),
            url = setup.sim_url,
            pnid = setup.phone_number_id,
            token = setup.token,
            mps = setup.mps,
            store = setup.cache_mb.map_or(String::new(), |m| format!(
                "\n[store]\ncache_capacity_mb = {m}\n"
            )),
        );
        std::fs::write(&config, text).context("writing the daemon's configuration")?;
        Ok(Daemon {
            socket,
            state_dir,
            config,
            log: dir.join("daemon.log"),
            child: None,
        })
    }

    /// Starts `serve` and waits until `GET /v1/health` answers 200; returns how long that took.
    pub async fn start(&mut self) -> anyhow::Result<Duration> {
        if self.child.is_some() {
            bail!("the daemon is already running");
        }
        let exe = std::env::current_exe().context("finding the waq binary")?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let started = Instant::now();
        let child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the daemon")?;
        self.child = Some(child);
        if !client::wait_healthy(&self.socket, PATIENCE).await {
            bail!(
                "the daemon did not become healthy within {PATIENCE:?}; see {}",
                self.log.display()
            );
        }
        Ok(started.elapsed())
    }

    /// SIGTERM, then waits for the process to exit; returns how long the stop took.
    pub async fn stop(&mut self) -> anyhow::Result<Duration> {
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let started = Instant::now();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        let deadline = started + PATIENCE;
        loop {
            if let Some(s) = child.try_wait()? {
                if !s.success() {
                    bail!("the daemon exited with {s}; see {}", self.log.display());
                }
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the daemon did not stop within {PATIENCE:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// CPU seconds (user + system) the daemon has used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let (user, system) = self.cpu_split()?;
        Ok(user + system)
    }

    /// User and system CPU seconds the daemon has used so far.
    pub fn cpu_split(&self) -> anyhow::Result<(f64, f64)> {
        let pid = self.pid().context("the daemon is not running")?;
        cpu_split(&format!("/proc/{pid}/stat"))
    }

    /// Resident memory of the daemon, in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("the daemon is not running")?;
        rss_bytes(&format!("/proc/{pid}/status"))
    }

    /// Bytes the state directory occupies on disk (allocated blocks, like `du`).
    pub fn disk_bytes(&self) -> anyhow::Result<u64> {
        du(&self.state_dir)
    }
}

/// utime + stime of `/proc/<pid>/stat`, in seconds.
pub fn cpu_seconds(stat_path: &str) -> anyhow::Result<f64> {
    let (user, system) = cpu_split(stat_path)?;
    Ok(user + system)
}

/// utime and stime of `/proc/<pid>/stat`, in seconds.
pub fn cpu_split(stat_path: &str) -> anyhow::Result<(f64, f64)> {
    let text =
        std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    // The command name (field 2) may hold spaces and parentheses: fields after the last ')'.
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime as f64 / USER_HZ, stime as f64 / USER_HZ))
}

/// CPU seconds this process (the generator and the in-process simulator) has used.
pub fn own_cpu_seconds() -> anyhow::Result<f64> {
    cpu_seconds("/proc/self/stat")
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
pub fn rss_bytes(status_path: &str) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(status_path).with_context(|| format!("reading {status_path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("no VmRSS value")?
        .parse()?;
    Ok(kib * 1024)
}

/// Allocated bytes of every file under `dir` (512-byte blocks, as `du` counts).
pub fn du(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}
