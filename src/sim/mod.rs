//! The Cloud API simulator (`waq sim`): a local stand-in for `graph.facebook.com` that keeps
//! Meta's rules, for tests, benchmarks, `waq demo` and sandbox use. See `docs/SIMULATOR.md`.
//!
//! Map: `server` (routes) → `send` (one send, in rule order) using `validate` (Meta's request
//! checks), `limits` (MPS window, pair-rate GCRA), `rules` (templates, 24-hour window,
//! ordering) and `faults` (injection, token expiry); `state` holds the numbers; `webhooks`
//! delivers signed statuses; `inbound` simulates users writing in; `stats` reports.

mod config;
mod error;
mod faults;
mod inbound;
mod limits;
mod rules;
mod send;
mod server;
mod state;
mod stats;
mod validate;
mod webhooks;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{
    FaultConfig, NumberConfig, PairRateConfig, SimConfig, StatusConfig, TemplateConfig,
    WebhookConfig, WindowAnswer, WindowConfig,
};
pub use stats::{NumberStats, SimStats, WebhookStats};

use state::Sim;

/// Why the simulator refuses a send body, as `(#code) title: details`; `None` when it passes.
/// These are the checks of `POST /{version}/{phone_number_id}/messages` that come before any
/// rule of state (templates, windows, rates), for tests that hold enqueue's checks to them.
pub fn refusal_of(body: &[u8]) -> Option<String> {
    validate::check(body)
        .err()
        .map(|e| format!("(#{}) {}: {}", e.code, e.title, e.details))
}

/// How long `shutdown` lets connections finish before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running simulator. Dropping it stops the simulator too; `shutdown` also waits for it.
pub struct SimHandle {
    addr: SocketAddr,
    sim: Arc<Sim>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: what a Graph client takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The same data as `GET /sim/stats`.
    pub async fn stats(&self) -> SimStats {
        self.sim.stats()
    }

    /// Stops serving (held requests end at once) and ends the webhook scheduler.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
        if let Some(scheduler) = self.scheduler.take() {
            let _ = scheduler.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts the simulator in-process on `listen` (port 0 picks a free port).
pub async fn start(config: SimConfig, listen: SocketAddr) -> anyhow::Result<SimHandle> {
    config.check().context("invalid simulator config")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the simulator to {listen}"))?;
    serve(config, listener).await
}

/// Starts the simulator in-process on a listener of the caller's (one a test held before it
/// could answer, so that no other process can have taken its port meanwhile).
pub async fn start_with_listener(
    config: SimConfig,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<SimHandle> {
    config.check().context("invalid simulator config")?;
    serve(config, listener).await
}

/// Serves a checked `config` on `listener`.
async fn serve(config: SimConfig, listener: tokio::net::TcpListener) -> anyhow::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let (webhooks, scheduler) = webhooks::spawn(&config, stopped.clone())?;
    let sim = Arc::new(Sim::new(config, webhooks, stopped.clone())?);
    let app = server::router(sim.clone());

    // Small answers on keep-alive connections must not wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let mut signal = stopped;
    let server = tokio::spawn(async move {
        let graceful = async move {
            let _ = signal.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await
        {
            tracing::error!(error = %e, "simulator server failed");
        }
    });
    Ok(SimHandle {
        addr,
        sim,
        stop,
        server: Some(server),
        scheduler,
    })
}

/// `waq sim`: serves `config` (see `load`) until SIGINT or SIGTERM.
pub async fn run(listen: SocketAddr, config: SimConfig) -> anyhow::Result<()> {
    let numbers: Vec<String> = config
        .numbers
        .iter()
        .map(|n| format!("{} ({} mps)", n.phone_number_id, n.mps))
        .collect();
    let webhook = config.webhook.target().unwrap_or("none").to_string();
    let handle = start(config, listen).await?;
    tracing::info!(
        url = %handle.base_url(),
        numbers = %numbers.join(", "),
        webhook = %webhook,
        "Cloud API simulator listening: POST {}/{{version}}/{{phone_number_id}}/messages, stats at {}/sim/stats",
        handle.base_url(),
        handle.base_url(),
    );
    let waited = wait_for_signal().await;
    tracing::info!("Cloud API simulator stopping");
    handle.shutdown().await;
    waited
}

/// Reads a simulator config file (TOML; `WAQ_SIM__...` environment variables override keys).
pub fn load_config(path: &Path) -> anyhow::Result<SimConfig> {
    config::load_config(path)
}

/// The configuration of `waq sim`: the file if there is one, else the defaults, with the
/// `WAQ_SIM__...` variables over either.
pub fn load(path: Option<&Path>) -> anyhow::Result<SimConfig> {
    config::load(path)
}

/// Blocks (off the async threads) until SIGINT or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let handle = signals.handle();
    let got = tokio::task::spawn_blocking(move || signals.forever().next()).await;
    handle.close();
    got.context("waiting for a signal")?;
    Ok(())
}
