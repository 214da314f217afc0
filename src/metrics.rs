//! Process-wide counters, exposed by `GET /metrics` and `GET /v1/stats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub enqueued: AtomicU64,
    pub enqueue_rejected: AtomicU64,
    pub duplicates: AtomicU64,
    pub api_requests: AtomicU64,
    pub sends_attempted: AtomicU64,
    pub sends_accepted: AtomicU64,
    pub sends_failed_transient: AtomicU64,
    pub sends_failed_permanent: AtomicU64,
    pub retries_scheduled: AtomicU64,
    pub fallback_substituted: AtomicU64,
    pub window_closed_failures: AtomicU64,
    pub messaging_limit_holds: AtomicU64,
    pub webhooks_received: AtomicU64,
    pub webhooks_rejected: AtomicU64,
    pub statuses_applied: AtomicU64,
    pub statuses_unknown_wamid: AtomicU64,
    pub inbound_messages: AtomicU64,
    pub webhook_value_errors: AtomicU64,
    /// A gauge: failed deliveries in a row of the oldest payload waiting for `forward_url`
    /// (0 while the relay keeps up).
    pub webhook_relay_failures: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Name, help text and value of every counter, for the Prometheus exposition.
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Relaxed);
        vec![
            (
                "waq_enqueued_total",
                "Messages accepted for sending (202).",
                g(&self.enqueued),
            ),
            (
                "waq_enqueue_rejected_total",
                "Send requests refused with a 4xx/5xx (a batch refused as a whole counts each of its items).",
                g(&self.enqueue_rejected),
            ),
            (
                "waq_idempotent_duplicates_total",
                "Enqueues answered with an earlier message (same idempotency key).",
                g(&self.duplicates),
            ),
            (
                "waq_api_requests_total",
                "Requests served on the socket API.",
                g(&self.api_requests),
            ),
            (
                "waq_sends_attempted_total",
                "Requests made to the Cloud API (one whose account error pauses the sender counts here and in no failure counter: see waq_sender_paused).",
                g(&self.sends_attempted),
            ),
            (
                "waq_sends_accepted_total",
                "Requests the Cloud API accepted (wamid returned).",
                g(&self.sends_accepted),
            ),
            (
                "waq_sends_failed_transient_total",
                "Cloud API requests that failed with a transient error (by its class: counted here even when the attempts, ttl or max age then end the message).",
                g(&self.sends_failed_transient),
            ),
            (
                "waq_sends_failed_permanent_total",
                "Cloud API requests that failed with a permanent error.",
                g(&self.sends_failed_permanent),
            ),
            (
                "waq_retries_scheduled_total",
                "Retries scheduled after a failure.",
                g(&self.retries_scheduled),
            ),
            (
                "waq_fallback_substituted_total",
                "Free-form messages replaced by their fallback template (window closed).",
                g(&self.fallback_substituted),
            ),
            (
                "waq_window_closed_failures_total",
                "Messages failed with window_closed without an API call.",
                g(&self.window_closed_failures),
            ),
            (
                "waq_messaging_limit_holds_total",
                "Sends held, without an API call, because their portfolio had reached its messaging_limit of users outside a window in 24 h.",
                g(&self.messaging_limit_holds),
            ),
            (
                "waq_webhooks_received_total",
                "Verified webhook deliveries.",
                g(&self.webhooks_received),
            ),
            (
                "waq_webhooks_rejected_total",
                "Webhook deliveries answered 401 (signature), 400 (not a readable JSON object) or 413 (too large).",
                g(&self.webhooks_rejected),
            ),
            (
                "waq_statuses_applied_total",
                "Status updates applied to messages.",
                g(&self.statuses_applied),
            ),
            (
                "waq_statuses_unknown_wamid_total",
                "Status updates given up on: no message with their wamid after 30 s, or too many waiting at once.",
                g(&self.statuses_unknown_wamid),
            ),
            (
                "waq_inbound_messages_total",
                "Inbound user messages from a phone number, each once, whether or not they moved a window.",
                g(&self.inbound_messages),
            ),
            (
                "waq_webhook_value_errors_total",
                "Value-level errors reported by Meta in webhooks.",
                g(&self.webhook_value_errors),
            ),
        ]
    }
}
