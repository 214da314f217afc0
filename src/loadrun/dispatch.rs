//! Dispatch under load: messages enqueued with a common `send_at`, then the sender's rate as the
//! simulator sees it (arrivals in any sliding second, accepted per second) and the daemon's CPU
//! per message while it sends.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::model::{format_time, now_ms};
use crate::sim::{FaultConfig, NumberConfig, SimConfig, SimHandle};

use super::daemon::Daemon;
use super::load::fill;

/// The business number the daemon sends from and the simulator knows.
pub const PHONE_NUMBER_ID: &str = "120000000000001";
pub const TOKEN: &str = "sim-token";
/// Meta's answer time the simulator imitates.
pub const SIM_LATENCY_MS: u64 = 100;

/// The simulator on a runtime of its own (one worker thread), so that it timestamps arrivals
/// as they come rather than when the generator's runtime gets round to them.
pub struct Sim {
    handle: Option<SimHandle>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Sim {
    pub fn base_url(&self) -> String {
        self.handle
            .as_ref()
            .map(|h| h.base_url())
            .unwrap_or_default()
    }

    pub async fn stats(&self) -> anyhow::Result<crate::sim::SimStats> {
        match &self.handle {
            Some(h) => Ok(h.stats().await),
            None => anyhow::bail!("the simulator has stopped"),
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.handle.take();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A simulator with one number at `mps` answering after `SIM_LATENCY_MS`.
pub async fn start_sim(mps: u32) -> anyhow::Result<Sim> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let handle = runtime
        .spawn(sim_on_this_runtime(mps))
        .await
        .context("the simulator's start panicked")??;
    Ok(Sim {
        handle: Some(handle),
        runtime: Some(runtime),
    })
}

async fn sim_on_this_runtime(mps: u32) -> anyhow::Result<SimHandle> {
    let mut number = NumberConfig::new(PHONE_NUMBER_ID);
    number.mps = mps;
    number.faults = Some(FaultConfig {
        latency_ms: SIM_LATENCY_MS,
        ..FaultConfig::default()
    });
    let config = SimConfig {
        token: TOKEN.into(),
        numbers: vec![number],
        ..SimConfig::default()
    };
    crate::sim::start(config, "127.0.0.1:0".parse()?).await
}

#[derive(Debug, Clone, Copy)]
pub struct DispatchRun {
    /// Accepted by the simulator per second over the measured window.
    pub rate: f64,
    /// The most arrivals the simulator saw in any sliding second, over its whole life.
    pub max_in_window: u64,
    /// Requests the simulator refused for going over the number's MPS (130429).
    pub throttled: u64,
    /// Daemon CPU seconds per 1,000 messages sent in the measured window.
    pub cpu_per_1000: f64,
    /// The system (kernel) share of it.
    pub sys_share: f64,
    pub seconds: f64,
}

async fn accepted(sim: &Sim) -> anyhow::Result<(u64, u64, u64)> {
    let stats = sim.stats().await?;
    let n = stats
        .numbers
        .get(PHONE_NUMBER_ID)
        .context("the simulator lost its number")?;
    Ok((n.accepted, n.max_in_window, n.violation(130429)))
}

/// Enqueues enough messages for `warmup` + `measure` at `mps` (recipients from `first`), all due
/// at once a moment later; measures the window after `warmup`; waits until they are all sent.
pub async fn run(
    daemon: &Daemon,
    sim: &Sim,
    mps: u32,
    first: u64,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<DispatchRun> {
    let n = (mps as f64 * (warmup + measure + Duration::from_secs(1)).as_secs_f64()) as u64;
    let (start_count, _, _) = accepted(sim).await?;
    // Long enough for the enqueue to finish before the first is due.
    let lead = Duration::from_millis(1_500 + n / 20);
    let due_ms = now_ms() + lead.as_millis() as u64;
    let due = Instant::now() + lead;
    fill(&daemon.socket, first, n, 1_000, 2, &format_time(due_ms)).await?;
    if Instant::now() > due {
        bail!("enqueueing {n} messages took longer than {lead:?}");
    }
    tokio::time::sleep_until((due + warmup).into()).await;
    let (a0, cpu0, t0) = (accepted(sim).await?.0, daemon.cpu_split()?, Instant::now());
    tokio::time::sleep(measure).await;
    let (a1, cpu1, t1) = (accepted(sim).await?.0, daemon.cpu_split()?, Instant::now());
    // Let the rest go, so the next measurement starts from a quiet daemon.
    let deadline = Instant::now() + Duration::from_secs(30) + Duration::from_secs(n / mps as u64);
    let (last, max_in_window, throttled) = loop {
        let now = accepted(sim).await?;
        if now.0 >= start_count + n || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if last < start_count + n {
        bail!(
            "only {} of {n} messages were sent in time",
            last - start_count
        );
    }
    let secs = t1.duration_since(t0).as_secs_f64();
    let sent = (a1 - a0).max(1);
    Ok(DispatchRun {
        rate: (a1 - a0) as f64 / secs,
        max_in_window,
        throttled,
        cpu_per_1000: (cpu1.0 + cpu1.1 - cpu0.0 - cpu0.1) / sent as f64 * 1000.0,
        sys_share: (cpu1.1 - cpu0.1) / (cpu1.0 + cpu1.1 - cpu0.0 - cpu0.1).max(1e-9),
        seconds: secs,
    })
}
