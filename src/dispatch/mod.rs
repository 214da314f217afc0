//! The dispatcher: per sender, picks the next due message whose recipient lane is free, within
//! the sender's MPS and the pair limit, applies the window rule, sends it through the cloud client
//! and records the outcome.
//!
//! (Interface first; the scheduler lands behind it.)

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::app::App;
use crate::config::Config;
use crate::model::Message;

/// What `/v1/stats` and `/v1/health` show of the dispatcher.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DispatchSnapshot {
    pub in_flight: usize,
    pub senders: Vec<SenderSnapshot>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SenderSnapshot {
    pub name: String,
    pub phone_number_id: String,
    /// Configured messages per second.
    pub mps: u32,
    /// The rate in force now (lower than `mps` after Meta asked to slow down).
    pub effective_mps: f64,
    /// Requests started in the last second.
    pub sent_last_second: u32,
    pub in_flight: usize,
    /// Messages waiting in this sender's scheduler.
    pub queued: usize,
    pub paused: bool,
    pub pause_reason: Option<String>,
}

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Mutex<Vec<u64>>>,
}

impl Dispatcher {
    pub fn new(_config: &Config) -> Dispatcher {
        Dispatcher {
            inner: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Schedules a message that is durable in the store (new, recovered or retried). Cheap.
    pub fn submit(&self, m: &Message) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(m.id);
    }

    /// Resumes a sender paused by its circuit breaker. `Err` names the problem (unknown sender).
    pub fn resume_sender(&self, name: &str) -> Result<(), String> {
        Err(format!("no sender named `{name}`"))
    }

    /// Applies a reloaded configuration (rates, tokens); resumes senders paused for token errors.
    pub fn reload(&self, _config: &Config) {}

    pub fn snapshot(&self) -> DispatchSnapshot {
        DispatchSnapshot::default()
    }

    /// The scheduling loop; returns when `app` is shutting down and in-flight sends are done.
    pub async fn run(self, _app: Arc<App>) {}
}
