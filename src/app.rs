//! What every part of the running daemon shares: configuration, store, dispatcher, counters,
//! and the event stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::store::Store;

/// A state change or an inbound message, as streamed by `GET /v1/events` (one JSON per line).
/// An event as its line of the stream (JSON and a line break): written once, shared by every
/// subscriber.
pub type Event = bytes::Bytes;

/// Events kept for subscribers that have not read them yet: more than a batch's 10,000
/// `queued`, so a reader that keeps up loses none to one batch.
pub const EVENTS_BUFFERED: usize = 16_384;

pub struct App {
    config: RwLock<Arc<Config>>,
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub metrics: Metrics,
    pub events: broadcast::Sender<Event>,
    shutting_down: AtomicBool,
    /// Woken at each reload, for what waits on the configuration (the webhook relay).
    pub reloaded: tokio::sync::Notify,
    /// When this process started serving: the counters count from then.
    pub started_at_ms: u64,
}

/// `event` as a line of the stream.
pub fn event_line(event: &serde_json::Value) -> Event {
    let mut text = event.to_string();
    text.push('\n');
    Event::from(text)
}

impl App {
    pub fn new(config: Config, store: Store, dispatcher: Dispatcher) -> Arc<App> {
        let (events, _) = broadcast::channel(EVENTS_BUFFERED);
        Arc::new(App {
            config: RwLock::new(Arc::new(config)),
            store,
            dispatcher,
            metrics: Metrics::default(),
            events,
            shutting_down: AtomicBool::new(false),
            reloaded: tokio::sync::Notify::new(),
            started_at_ms: crate::model::now_ms(),
        })
    }

    /// The current configuration (replaced as a whole on reload).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replace_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        self.reloaded.notify_waiters();
    }

    /// Publishes an event to `GET /v1/events` listeners (dropped when nobody listens).
    pub fn publish(&self, event: serde_json::Value) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event_line(&event));
        }
    }

    /// Publishes a message's state change: `{"event":"message","id","state","at","detail",...}`.
    pub fn publish_state(&self, m: &crate::model::Message, detail: &str) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let metadata = m
            .metadata
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
        // The history entry of the change, word for word (with the retry's reason, the wamid,
        // the attempts used up), where there is one.
        let detail = m
            .history
            .last()
            .filter(|h| h.state == m.state && h.at_ms == m.updated_at_ms)
            .map_or(detail, |h| h.detail.as_str());
        self.publish(serde_json::json!({
            "event": "message",
            "id": crate::model::format_id(m.id),
            "state": m.state.as_str(),
            "at": crate::model::format_time(m.updated_at_ms),
            "detail": detail,
            "sender": m.sender,
            "to": m.to,
            "wamid": m.wamid,
            "metadata": metadata,
        }));
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
