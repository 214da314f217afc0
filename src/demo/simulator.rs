//! The demo's Cloud API: `waq sim` in-process, configured for the story (a number at the chosen
//! MPS, a few recipients not on WhatsApp, realistic latency and status timing, webhooks signed
//! for the daemon's listener), and its control endpoints (`/sim/inbound`, `/sim/faults`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::sim::{self, FaultConfig, NumberConfig, SimConfig, SimHandle, SimStats, StatusConfig};

use super::people::{NOT_ON_WHATSAPP, PHONE_NUMBER_ID};

/// Every answer from "Meta" takes 20–60 ms, so requests overlap as they do in production.
const LATENCY_MS: u64 = 20;
const LATENCY_JITTER_MS: u64 = 40;

pub struct DemoSim {
    handle: SimHandle,
    http: reqwest::Client,
}

/// The simulator's configuration for the demo.
pub fn config(mps: u32, token: &str, app_secret: &str, webhook: SocketAddr) -> SimConfig {
    let mut number = NumberConfig::new(PHONE_NUMBER_ID);
    number.mps = mps;
    SimConfig {
        token: token.to_string(),
        app_secret: app_secret.to_string(),
        numbers: vec![number],
        not_on_whatsapp: NOT_ON_WHATSAPP.iter().map(|n| n.to_string()).collect(),
        statuses: StatusConfig {
            sent_ms: 50,
            delivered_ms: 400,
            read_ms: 1_200,
            jitter_ms: 300,
            // Not everyone opens their messages.
            never_read_share: 0.15,
            ..StatusConfig::default()
        },
        faults: baseline_faults(),
        webhook: sim::WebhookConfig {
            url: Some(format!("http://{webhook}/webhook")),
            ..sim::WebhookConfig::default()
        },
        ..SimConfig::default()
    }
}

/// The faults in force outside the outage: latency only.
fn baseline_faults() -> FaultConfig {
    FaultConfig {
        latency_ms: LATENCY_MS,
        jitter_ms: LATENCY_JITTER_MS,
        ..FaultConfig::default()
    }
}

impl DemoSim {
    /// Serves on `listener`, bound by the caller before the daemon was configured with its
    /// address (so no other process can take the port in between).
    pub async fn start(
        config: SimConfig,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<DemoSim> {
        let handle = sim::start_with_listener(config, listener)
            .await
            .context("cannot start the Cloud API simulator")?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(DemoSim { handle, http })
    }

    pub fn base_url(&self) -> String {
        self.handle.base_url()
    }

    pub async fn stats(&self) -> SimStats {
        self.handle.stats().await
    }

    /// A customer writes to the business (`POST /sim/inbound`): Meta's `messages` webhook goes
    /// to the daemon, and the simulator opens its own side of the window.
    pub async fn inbound(&self, from: &str, name: &str, text: &str) -> anyhow::Result<()> {
        let body =
            json!({ "phone_number_id": PHONE_NUMBER_ID, "from": from, "name": name, "text": text });
        self.post("/sim/inbound", &body).await.map(|_| ())
    }

    /// Every request gets 503 (Meta error 2) for `span`; latency stays as it was.
    pub async fn outage(&self, span: Duration) -> anyhow::Result<()> {
        let faults = FaultConfig {
            outage_for_ms: span.as_millis() as u64,
            ..baseline_faults()
        };
        self.post("/sim/faults", &serde_json::to_value(faults)?)
            .await
            .map(|_| ())
    }

    /// Back to the baseline faults (latency only).
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.post("/sim/faults", &serde_json::to_value(baseline_faults())?)
            .await
            .map(|_| ())
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.handle.base_url());
        let res = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("the simulator did not answer POST {path}"))?;
        let status = res.status();
        let answer: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("the simulator refused POST {path} ({status}): {answer}");
        }
        Ok(answer)
    }

    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}
