//! Signed webhook delivery: status updates (`sent`, `delivered`, `read`, `failed`) on a timer,
//! and simulated inbound messages at once, in Meta's envelope with
//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw body)>`.
//!
//! One scheduler task keeps due statuses in a heap and, at most every `batch_interval_ms`,
//! sends everything due in one POST per number (up to `batch_max` statuses each), as Meta
//! batches. POSTs run as tasks, at most `concurrency` at once, retried with doubling backoff.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::config::{SimConfig, StatusConfig, WebhookConfig};
use super::error::async_error;
use super::state::Number;
use crate::log_every::LogEvery;

/// Beyond this many undelivered events (a receiver far behind), new ones are dropped and
/// counted, so memory stays bounded.
const MAX_PENDING: u64 = 1_000_000;
/// Longest wait between retries of one POST.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One status update to deliver.
#[derive(Debug, Clone)]
pub(crate) struct StatusEvent {
    pub wamid: Arc<str>,
    pub recipient: Arc<str>,
    pub status: &'static str,
    pub biz_opaque: Option<Arc<str>>,
    /// For `failed`: the async error code.
    pub error: Option<i64>,
    /// Pricing shown on sent/delivered/read: category and whether it is billed.
    pub category: Arc<str>,
    pub billable: bool,
}

/// What an accepted message needs for its status plan.
pub(crate) struct Accepted {
    pub wamid: Arc<str>,
    pub recipient: Arc<str>,
    pub biz_opaque: Option<Arc<str>>,
    /// Template category, or `None` for a free-form (service) message.
    pub template_category: Option<Arc<str>>,
    /// Reactions only ever get `sent`.
    pub is_reaction: bool,
    /// Outside the window: one `failed` status with this code instead.
    pub fail_with: Option<i64>,
}

/// The statuses an accepted message will get, with their delays.
pub(crate) fn plan(cfg: &StatusConfig, msg: Accepted) -> Vec<(Duration, StatusEvent)> {
    let (category, billable) = match &msg.template_category {
        Some(c) => (c.clone(), true),
        None => (Arc::from("service"), false),
    };
    let event = |status: &'static str, error: Option<i64>| StatusEvent {
        wamid: msg.wamid.clone(),
        recipient: msg.recipient.clone(),
        status,
        biz_opaque: msg.biz_opaque.clone(),
        error,
        category: category.clone(),
        billable,
    };
    let at = |ms: u64| {
        let jitter = if cfg.jitter_ms > 0 {
            fastrand::u64(0..=cfg.jitter_ms)
        } else {
            0
        };
        Duration::from_millis(ms + jitter)
    };
    if let Some(code) = msg.fail_with {
        return vec![(at(cfg.sent_ms), event("failed", Some(code)))];
    }
    let mut out = vec![(at(cfg.sent_ms), event("sent", None))];
    if msg.is_reaction {
        return out;
    }
    let skip_delivered = fastrand::f64() < cfg.read_without_delivered_share;
    let never_read = !skip_delivered && fastrand::f64() < cfg.never_read_share;
    if !skip_delivered {
        out.push((at(cfg.delivered_ms), event("delivered", None)));
        if fastrand::f64() < cfg.duplicate_delivered_share {
            out.push((at(cfg.delivered_ms), event("delivered", None)));
        }
    }
    if !never_read {
        out.push((at(cfg.read_ms), event("read", None)));
    }
    out
}

enum Job {
    Statuses(Arc<Number>, Vec<(Instant, StatusEvent)>),
    /// A `value` body (inbound `contacts` + `messages`) to send at once.
    Messages(Arc<Number>, Map<String, Value>),
}

/// The handlers' side of webhook delivery.
pub(crate) struct Webhooks {
    tx: Option<mpsc::UnboundedSender<Job>>,
    pending: Arc<AtomicU64>,
}

impl Webhooks {
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Undelivered events (scheduled or in flight).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Schedules status events `delay` from now.
    pub fn schedule(&self, number: &Arc<Number>, events: Vec<(Duration, StatusEvent)>) {
        let Some(tx) = &self.tx else { return };
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        if self.pending.load(Ordering::Relaxed) + n > MAX_PENDING {
            number.webhooks.dropped.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        let due = events.into_iter().map(|(d, e)| (now + d, e)).collect();
        self.pending.fetch_add(n, Ordering::Relaxed);
        if tx.send(Job::Statuses(number.clone(), due)).is_err() {
            // The scheduler has stopped (shutting down): nothing will deliver these.
            self.pending.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Sends an inbound-message webhook now.
    pub fn send_messages(&self, number: &Arc<Number>, value: Map<String, Value>) {
        let Some(tx) = &self.tx else { return };
        self.pending.fetch_add(1, Ordering::Relaxed);
        if tx.send(Job::Messages(number.clone(), value)).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Starts the scheduler when a webhook URL is configured.
pub(crate) fn spawn(
    cfg: &SimConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Webhooks, Option<JoinHandle<()>>)> {
    let pending = Arc::new(AtomicU64::new(0));
    let Some(url) = cfg.webhook.target() else {
        return Ok((Webhooks { tx: None, pending }, None));
    };
    // Webhook receivers are usually local; a proxy from the environment must not intercept them.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(cfg.webhook.timeout_ms))
        .pool_max_idle_per_host(cfg.webhook.concurrency)
        .build()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let delivery = Arc::new(Delivery {
        client,
        url: url.to_string(),
        secret: cfg.app_secret.as_bytes().to_vec(),
        cfg: cfg.webhook.clone(),
        permits: Semaphore::new(cfg.webhook.concurrency),
        pending: pending.clone(),
        shutdown: shutdown.clone(),
        gave_up: GiveUpLog::default(),
    });
    let scheduler = Scheduler {
        delivery,
        waba_id: cfg.waba_id.clone(),
        heap: BinaryHeap::new(),
        seq: 0,
        tasks: JoinSet::new(),
    };
    let task = tokio::spawn(scheduler.run(rx, shutdown));
    Ok((
        Webhooks {
            tx: Some(tx),
            pending,
        },
        Some(task),
    ))
}

/// A status in the heap, ordered by due time (earliest first), then by scheduling order.
struct Due {
    at: Instant,
    seq: u64,
    number: Arc<Number>,
    event: StatusEvent,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: BinaryHeap is a max-heap and the earliest must come out first.
        other
            .at
            .cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct Scheduler {
    delivery: Arc<Delivery>,
    waba_id: String,
    heap: BinaryHeap<Due>,
    seq: u64,
    /// The POSTs in flight; aborted at shutdown.
    tasks: JoinSet<()>,
}

impl Scheduler {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Job>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let interval = Duration::from_millis(self.delivery.cfg.batch_interval_ms);
        let mut last_flush = Instant::now();
        loop {
            let wake = self.heap.peek().map(|d| d.at.max(last_flush + interval));
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                job = rx.recv() => {
                    let Some(job) = job else { break };
                    self.accept(job);
                    // Take whatever else is queued in one go: fewer wake-ups under load.
                    for _ in 0..4096 {
                        match rx.try_recv() {
                            Ok(job) => self.accept(job),
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep_until_opt(wake) => {
                    self.flush();
                    last_flush = Instant::now();
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        self.tasks.shutdown().await;
    }

    fn accept(&mut self, job: Job) {
        match job {
            Job::Statuses(number, events) => {
                for (at, event) in events {
                    self.seq += 1;
                    self.heap.push(Due {
                        at,
                        seq: self.seq,
                        number: number.clone(),
                        event,
                    });
                }
            }
            Job::Messages(number, value) => {
                let body = envelope(&self.waba_id, &number, value);
                self.post(number, body, Kind::Messages(1));
            }
        }
    }

    /// Sends every due status: one POST per number and `batch_max` statuses.
    fn flush(&mut self) {
        let now = Instant::now();
        let timestamp = unix_seconds().to_string();
        let mut groups: HashMap<String, (Arc<Number>, Vec<Value>)> = HashMap::new();
        while self.heap.peek().is_some_and(|d| d.at <= now) {
            let Some(due) = self.heap.pop() else { break };
            groups
                .entry(due.number.id.clone())
                .or_insert_with(|| (due.number.clone(), Vec::new()))
                .1
                .push(status_json(&due.event, &timestamp));
        }
        let batch_max = self.delivery.cfg.batch_max.max(1);
        for (_, (number, mut statuses)) in groups {
            while !statuses.is_empty() {
                let take = statuses.len().min(batch_max);
                let batch: Vec<Value> = statuses.drain(..take).collect();
                let mut value = Map::new();
                value.insert("statuses".into(), Value::Array(batch));
                let body = envelope(&self.waba_id, &number, value);
                self.post(number.clone(), body, Kind::Statuses(take as u64));
            }
        }
    }

    fn post(&mut self, number: Arc<Number>, body: Value, kind: Kind) {
        let delivery = self.delivery.clone();
        self.tasks
            .spawn(async move { delivery.deliver(number, body, kind).await });
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What a POST carries, for the counters.
#[derive(Clone, Copy)]
enum Kind {
    Statuses(u64),
    Messages(u64),
}

impl Kind {
    fn events(self) -> u64 {
        match self {
            Kind::Statuses(n) | Kind::Messages(n) => n,
        }
    }
}

struct Delivery {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    cfg: WebhookConfig,
    permits: Semaphore,
    pending: Arc<AtomicU64>,
    shutdown: watch::Receiver<bool>,
    gave_up: GiveUpLog,
}

/// Payloads given up on are logged at most once per 5 s, with how many went since: a receiver
/// that is down would otherwise flood the log, and silence hides it.
struct GiveUpLog(LogEvery);

impl Default for GiveUpLog {
    fn default() -> GiveUpLog {
        GiveUpLog(LogEvery::new(Duration::from_secs(5)))
    }
}

impl GiveUpLog {
    fn record(&self, url: &str, attempts: u32, error: &str) {
        if let Some(payloads) = self.0.due() {
            tracing::warn!(
                url,
                attempts,
                payloads,
                "webhook payloads dropped after every retry failed; last error: {error}"
            );
        }
    }
}

impl Delivery {
    /// POSTs one signed payload, retrying with doubling backoff.
    async fn deliver(&self, number: Arc<Number>, body: Value, kind: Kind) {
        let raw = match serde_json::to_vec(&body) {
            Ok(raw) => Bytes::from(raw),
            Err(e) => {
                tracing::warn!(error = %e, "webhook body could not be serialized");
                return;
            }
        };
        let signature = sign(&self.secret, &raw);
        let mut delivered = false;
        let mut last_error = String::new();
        for attempt in 0..=self.cfg.max_retries {
            if attempt > 0 {
                number.webhooks.retries.fetch_add(1, Ordering::Relaxed);
                let backoff = Duration::from_millis(self.cfg.retry_backoff_ms)
                    .saturating_mul(1 << (attempt - 1).min(16))
                    .min(MAX_BACKOFF);
                let mut stop = self.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            match self.post_once(&raw, &signature).await {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let w = &number.webhooks;
        if delivered {
            w.sent.fetch_add(1, Ordering::Relaxed);
            match kind {
                Kind::Statuses(n) => w.statuses.fetch_add(n, Ordering::Relaxed),
                Kind::Messages(n) => w.messages.fetch_add(n, Ordering::Relaxed),
            };
        } else {
            w.failed.fetch_add(1, Ordering::Relaxed);
            self.gave_up
                .record(&self.url, self.cfg.max_retries + 1, &last_error);
        }
        self.pending.fetch_sub(kind.events(), Ordering::Relaxed);
    }

    async fn post_once(&self, raw: &Bytes, signature: &str) -> Result<(), String> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Err("the simulator is stopping".into());
        };
        let sent = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Hub-Signature-256", signature)
            .body(raw.clone())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status();
                // Reading the body lets the connection go back to the pool.
                let _ = resp.bytes().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the receiver answered {status}"))
                }
            }
            Err(e) => Err(crate::cloud::error_chain(&e)),
        }
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub(crate) fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty MAC would only make the
    // receiver reject the payload, which is visible in its logs.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => "sha256=".to_string(),
    }
}

/// Meta's envelope around one change `value` of a number.
fn envelope(waba_id: &str, number: &Number, mut value: Map<String, Value>) -> Value {
    value.insert("messaging_product".into(), json!("whatsapp"));
    value.insert(
        "metadata".into(),
        json!({"display_phone_number": number.display, "phone_number_id": number.id}),
    );
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": waba_id,
            "changes": [{"field": "messages", "value": value}],
        }],
    })
}

fn status_json(e: &StatusEvent, timestamp: &str) -> Value {
    let mut s = Map::new();
    s.insert("id".into(), json!(&*e.wamid));
    s.insert("status".into(), json!(e.status));
    s.insert("timestamp".into(), json!(timestamp));
    s.insert("recipient_id".into(), json!(&*e.recipient));
    if let Some(code) = e.error {
        s.insert("errors".into(), json!([async_error(code)]));
    } else {
        let kind = if e.billable {
            "regular"
        } else {
            "free_customer_service"
        };
        s.insert(
            "pricing".into(),
            json!({"billable": e.billable, "pricing_model": "PMP", "category": &*e.category, "type": kind}),
        );
    }
    if let Some(data) = &e.biz_opaque {
        s.insert("biz_opaque_callback_data".into(), json!(&**data));
    }
    Value::Object(s)
}

pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(fail_with: Option<i64>, is_reaction: bool) -> Accepted {
        Accepted {
            wamid: Arc::from("wamid.x"),
            recipient: Arc::from("14155551234"),
            biz_opaque: Some(Arc::from("seq:1")),
            template_category: None,
            is_reaction,
            fail_with,
        }
    }

    fn statuses(p: &[(Duration, StatusEvent)]) -> Vec<&'static str> {
        p.iter().map(|(_, e)| e.status).collect()
    }

    #[test]
    fn plans() {
        let cfg = StatusConfig::default();
        assert_eq!(
            statuses(&plan(&cfg, accepted(None, false))),
            ["sent", "delivered", "read"]
        );
        assert_eq!(statuses(&plan(&cfg, accepted(None, true))), ["sent"]);
        assert_eq!(
            statuses(&plan(&cfg, accepted(Some(131047), false))),
            ["failed"]
        );
        let odd = StatusConfig {
            read_without_delivered_share: 1.0,
            ..StatusConfig::default()
        };
        assert_eq!(
            statuses(&plan(&odd, accepted(None, false))),
            ["sent", "read"]
        );
        let dup = StatusConfig {
            duplicate_delivered_share: 1.0,
            never_read_share: 1.0,
            ..StatusConfig::default()
        };
        assert_eq!(
            statuses(&plan(&dup, accepted(None, false))),
            ["sent", "delivered", "delivered"]
        );
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
