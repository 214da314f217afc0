//! What the simulator saw: the counters kept per number and the `GET /sim/stats` document.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// `GET /sim/stats`: totals over all numbers, then each number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    pub uptime_ms: u64,
    /// Send requests to configured numbers.
    pub requests: u64,
    /// Send requests answered 200 with a wamid.
    pub accepted: u64,
    /// Requests to unknown numbers or malformed versions (not counted per number).
    pub unrouted: u64,
    /// Rule violations by Meta error code, over all numbers.
    pub violations: BTreeMap<i64, u64>,
    pub ordering_violations: u64,
    /// Injected faults by kind, over all numbers.
    pub errors_injected: BTreeMap<String, u64>,
    pub webhooks: WebhookStats,
    /// Status events scheduled or in flight, not yet delivered or given up.
    pub webhooks_pending: u64,
    pub numbers: BTreeMap<String, NumberStats>,
}

/// What one business number saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NumberStats {
    pub mps: u32,
    /// Every send request that reached this number (also those answered with an error).
    pub requests: u64,
    pub accepted: u64,
    /// Requests that arrived within the last second.
    pub requests_last_second: u64,
    /// The most requests that arrived within any 1-second window.
    pub max_in_window: u64,
    /// Errors the sender earned, by Meta code: 130429, 131056, 131047 (accepted, then failed),
    /// 132001, 132000, 131026, 190, 100, 131008, 131009, 132018.
    pub violations: BTreeMap<i64, u64>,
    /// Accepted messages whose `seq:<n>` was lower than one accepted before for the same recipient.
    pub ordering_violations: u64,
    /// Injected faults by kind: outage, timeout, http_5xx, code_1, code_2, code_131000,
    /// rate_limit, token_expired.
    pub errors_injected: BTreeMap<String, u64>,
    /// Simulated inbound messages.
    pub inbound: u64,
    /// Mark-as-read requests.
    pub marked_read: u64,
    pub webhooks: WebhookStats,
}

impl NumberStats {
    pub fn violation(&self, code: i64) -> u64 {
        self.violations.get(&code).copied().unwrap_or(0)
    }

    pub fn injected(&self, kind: &str) -> u64 {
        self.errors_injected.get(kind).copied().unwrap_or(0)
    }
}

impl SimStats {
    pub fn violation(&self, code: i64) -> u64 {
        self.violations.get(&code).copied().unwrap_or(0)
    }

    pub fn injected(&self, kind: &str) -> u64 {
        self.errors_injected.get(kind).copied().unwrap_or(0)
    }

    /// Adds a number's figures to the totals.
    pub(crate) fn add(&mut self, id: String, n: NumberStats) {
        self.requests += n.requests;
        self.accepted += n.accepted;
        self.ordering_violations += n.ordering_violations;
        for (code, count) in &n.violations {
            *self.violations.entry(*code).or_default() += count;
        }
        for (kind, count) in &n.errors_injected {
            *self.errors_injected.entry(kind.clone()).or_default() += count;
        }
        self.webhooks.sent += n.webhooks.sent;
        self.webhooks.failed += n.webhooks.failed;
        self.webhooks.retries += n.webhooks.retries;
        self.webhooks.statuses += n.webhooks.statuses;
        self.webhooks.messages += n.webhooks.messages;
        self.webhooks.dropped += n.webhooks.dropped;
        self.numbers.insert(id, n);
    }
}

/// Webhook deliveries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookStats {
    /// POSTs the receiver answered with 2xx.
    pub sent: u64,
    /// POSTs given up after the last retry.
    pub failed: u64,
    /// Re-sent POSTs.
    pub retries: u64,
    /// Status objects delivered.
    pub statuses: u64,
    /// Inbound message objects delivered.
    pub messages: u64,
    /// Status events dropped because too many were pending (receiver far behind).
    pub dropped: u64,
}

/// Request counters of one number; kept under the number's lock.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: u64,
    pub accepted: u64,
    pub violations: BTreeMap<i64, u64>,
    pub ordering_violations: u64,
    pub injected: BTreeMap<&'static str, u64>,
    pub inbound: u64,
    pub marked_read: u64,
}

impl Counters {
    pub fn violation(&mut self, code: i64) {
        *self.violations.entry(code).or_default() += 1;
    }

    pub fn injected(&mut self, kind: &'static str) {
        *self.injected.entry(kind).or_default() += 1;
    }
}

/// Webhook counters of one number; atomics because delivery tasks update them without the lock.
#[derive(Debug, Default)]
pub(crate) struct WebhookCounters {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub retries: AtomicU64,
    pub statuses: AtomicU64,
    pub messages: AtomicU64,
    pub dropped: AtomicU64,
}

impl WebhookCounters {
    pub fn snapshot(&self) -> WebhookStats {
        WebhookStats {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            statuses: self.statuses.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        for c in [
            &self.sent,
            &self.failed,
            &self.retries,
            &self.statuses,
            &self.messages,
            &self.dropped,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}
