//! The stage: a temporary directory, the simulator and a daemon wired to each other, and
//! their orderly teardown. Fields drop in declaration order, so however the demo ends the
//! daemon stops first, then the simulator, and the directory goes last.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::daemon::{DaemonProcess, DaemonSetup};
use super::people::PHONE_NUMBER_ID;
use super::simulator::{self, DemoSim};
use super::ui::Ui;
use super::waq::{Stats, Waq};
use super::DemoArgs;

/// The token the simulated number accepts and the daemon's sender uses.
const TOKEN: &str = "demo-access-token";
/// The app secret that signs the simulator's webhooks and that the daemon checks.
const APP_SECRET: &str = "demo-app-secret";

pub struct Stage {
    pub daemon: DaemonProcess,
    pub sim: DemoSim,
    pub waq: Waq,
    pub mps: u32,
    dir: super::workdir::WorkDir,
}

impl Stage {
    pub async fn open(args: &DemoArgs, ui: &Ui) -> anyhow::Result<Stage> {
        let dir = super::workdir::WorkDir::create()?;
        // Each side needs the other's address, and no port is picked and freed for someone to
        // take meanwhile: the simulator's listener is bound (and held) first, the daemon binds
        // a free port of its own and logs it, and only then, with the daemon's webhook URL in
        // its config, does the simulator serve. The daemon calls it only once messages are
        // enqueued, after this; an earlier connection would wait in the listen backlog.
        let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind a loopback port for the Cloud API simulator")?;
        let sim_addr = sim_listener.local_addr()?;
        let setup = DaemonSetup {
            dir: dir.path(),
            sim_url: format!("http://{sim_addr}"),
            phone_number_id: PHONE_NUMBER_ID,
            mps: args.mps,
            webhook_listen: "127.0.0.1:0".into(),
            token: TOKEN,
            app_secret: APP_SECRET,
        };
        let daemon = DaemonProcess::start(&setup).await?;
        let webhook = daemon.webhook_addr()?;
        let config = simulator::config(args.mps, TOKEN, APP_SECRET, webhook);
        let sim = DemoSim::start(config, sim_listener).await?;
        ui.say(&format!(
            "Simulator  {}: number {PHONE_NUMBER_ID} at {} messages/s",
            sim.base_url(),
            args.mps
        ));
        ui.say(&format!(
            "Daemon     waq serve --config {}",
            dir.path().join("config.toml").display()
        ));
        ui.say(&format!(
            "Webhooks   simulator → http://{webhook}/webhook (waq's listener)"
        ));
        // The binary as it was started here (`target/release/waq` after `cargo run`): `waq`
        // may not be on the PATH yet.
        let waq_bin = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "waq".into());
        ui.say(&format!(
            "Watch it from another terminal: {waq_bin} stats --watch --socket {}",
            daemon.socket().display()
        ));
        let waq = Waq::new(daemon.socket());
        Ok(Stage {
            daemon,
            sim,
            waq,
            mps: args.mps,
            dir,
        })
    }

    /// Waits until nothing is moving: the queue is empty, every status webhook the simulator
    /// scheduled has been delivered, and the daemon's counts hold still.
    pub async fn settle(&self, patience: Duration) -> anyhow::Result<Stats> {
        let deadline = Instant::now() + patience;
        let mut previous: Option<Stats> = None;
        loop {
            let stats = self.waq.stats().await?;
            let pending = self.sim.stats().await.webhooks_pending;
            let quiet = stats.queue_depth == 0 && stats.state("sent") == 0 && pending == 0;
            if quiet {
                if let Some(p) = &previous {
                    if p.states == stats.states {
                        return Ok(stats);
                    }
                }
                previous = Some(stats);
            } else {
                previous = None;
                if Instant::now() > deadline {
                    bail!(
                        "messages were still moving after {} s (queue depth {}, {} waiting for a receipt, {} webhooks pending at the simulator)",
                        patience.as_secs(),
                        stats.queue_depth,
                        stats.state("sent"),
                        pending
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the daemon (SIGTERM, as systemd would) and the simulator, removes the directory.
    pub async fn close(mut self, ui: &Ui) -> anyhow::Result<()> {
        let clean = self.daemon.stop();
        let log = self.daemon.log_tail();
        self.sim.shutdown().await;
        let dir = self.dir.path().display().to_string();
        drop(self.dir);
        if !clean {
            bail!("the daemon did not stop cleanly:\n{log}");
        }
        ui.ok(&format!(
            "cleaned up: daemon stopped (SIGTERM, exit 0), simulator stopped, {dir} removed"
        ));
        Ok(())
    }
}
