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
    /// Request bodies held in memory (`socket.max_body_memory_bytes`, read at start).
    pub bodies: Arc<crate::api::budget::BodyBudget>,
    /// Why the last reload was refused, until one succeeds: the service manager's status
    /// line shows it, as `systemctl reload` itself cannot.
    pub reload_refused: std::sync::Mutex<Option<String>>,
    /// The webhook relay's consumer failing, while it is (`None` once a delivery succeeds).
    pub relay_trouble: std::sync::Mutex<Option<RelayTrouble>>,
}

/// Failed deliveries in a row of the oldest payload waiting for `webhook.forward_url`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RelayTrouble {
    /// When the first failure in a row came (RFC 3339 in JSON).
    #[serde(rename = "since", serialize_with = "as_time")]
    pub since_ms: u64,
    pub failures: u64,
    pub last_problem: String,
    /// Stored chunks of up to 32 KiB: one per payload but for larger ones.
    pub backlog_chunks: usize,
}

fn as_time<S: serde::Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::model::format_time(*ms))
}

/// `event` as a line of the stream.
pub fn event_line(event: &serde_json::Value) -> Event {
    let mut text = event.to_string();
    text.push('\n');
    Event::from(text)
}

/// A message's state change, as streamed. A struct rather than a `Value`, so that `metadata`
/// goes out as stored (a `Value` would read its numbers as doubles). The fields are in
/// alphabetical order, the order the `Value` this once was (a sorted map) wrote them in.
#[derive(serde::Serialize)]
struct StateEvent<'a> {
    at: String,
    detail: &'a str,
    event: &'static str,
    id: String,
    metadata: Option<std::borrow::Cow<'a, serde_json::value::RawValue>>,
    sender: &'a str,
    state: &'static str,
    to: &'a str,
    wamid: Option<&'a str>,
}

/// The line of `m`'s change to its current state; `detail` unless its last history entry is
/// that change. `None` if it cannot be written, which does not happen (no map without string
/// keys in it).
fn state_event_line(m: &crate::model::Message, detail: &str) -> Option<Event> {
    // The history entry of the change, word for word (with the retry's reason, the wamid,
    // the attempts used up), where there is one.
    let detail = m
        .history
        .last()
        .filter(|h| h.state == m.state && h.at_ms == m.updated_at_ms)
        .map_or(detail, |h| h.detail.as_str());
    let event = StateEvent {
        at: crate::model::format_time(m.updated_at_ms),
        detail,
        event: "message",
        id: crate::model::format_id(m.id),
        metadata: m.metadata_json(),
        sender: &m.sender,
        state: m.state.as_str(),
        to: &m.to,
        wamid: m.wamid.as_deref(),
    };
    let mut line = serde_json::to_vec(&event).ok()?;
    line.push(b'\n');
    Some(Event::from(line))
}

impl App {
    pub fn new(config: Config, store: Store, dispatcher: Dispatcher) -> Arc<App> {
        let (events, _) = broadcast::channel(EVENTS_BUFFERED);
        let bodies = crate::api::budget::BodyBudget::new(config.socket.max_body_memory_bytes);
        Arc::new(App {
            config: RwLock::new(Arc::new(config)),
            store,
            dispatcher,
            metrics: Metrics::default(),
            events,
            shutting_down: AtomicBool::new(false),
            reloaded: tokio::sync::Notify::new(),
            started_at_ms: crate::model::now_ms(),
            bodies,
            reload_refused: std::sync::Mutex::new(None),
            relay_trouble: std::sync::Mutex::new(None),
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
        if let Some(line) = state_event_line(m, detail) {
            let _ = self.events.send(line);
        }
    }

    /// `from` wrote to `sender` (recorded in the store): a message to them held by the
    /// messaging limit no longer counts against it, so it may go now.
    pub fn window_opened(&self, sender: &str, from: &str) {
        let now = crate::model::now_ms();
        let margin_ms = self.config().dispatch.window_margin.as_millis() as u64;
        let numbers = match self.store.numbers_of(sender, from) {
            Ok(numbers) => numbers,
            Err(e) => {
                // The held message still goes at its time.
                tracing::warn!(
                    sender,
                    "cannot read the numbers of a user who wrote in: {e}"
                );
                return;
            }
        };
        for to in numbers {
            let open = crate::window::lookup(&self.store, sender, &to)
                .is_ok_and(|w| w.is_open(now, margin_ms));
            if open {
                self.dispatcher.release_hold(sender, &to);
            }
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{format_id, format_time, HistoryEntry, Message, Priority, State};

    fn sent(metadata: Option<&str>) -> Message {
        Message {
            id: 7,
            sender: "main".into(),
            to: "14155551234".into(),
            kind: "template".into(),
            priority: Priority::Normal,
            state: State::Sent,
            body: "{}".into(),
            fallback_template: None,
            idempotency_key: None,
            metadata: metadata.map(str::to_string),
            created_at_ms: 1_795_550_400_000,
            updated_at_ms: 1_795_550_401_000,
            next_attempt_at_ms: 1_795_550_400_000,
            expires_at_ms: None,
            attempts: 1,
            wamid: Some("wamid.X".into()),
            substituted_template: None,
            last_error: None,
            history: vec![HistoryEntry {
                at_ms: 1_795_550_401_000,
                state: State::Sent,
                detail: "accepted by Meta as wamid.X".into(),
            }],
        }
    }

    #[test]
    fn a_state_event_echoes_metadata_as_stored() {
        let stored = r#"{"order":123456789012345678901234567890,"price":1.10,"e":[1E+2,-0]}"#;
        let line = state_event_line(&sent(Some(stored)), "sent").unwrap();
        let text = std::str::from_utf8(&line).unwrap();
        assert!(
            text.ends_with(&format!(r#""metadata":{stored},"sender":"main","state":"sent","to":"14155551234","wamid":"wamid.X"}}{}"#, '\n')),
            "{text}"
        );
        let not_json = state_event_line(&sent(Some("{")), "sent").unwrap();
        assert!(std::str::from_utf8(&not_json)
            .unwrap()
            .contains(r#""metadata":null,"#));
    }

    /// The line's bytes are those of the `Value` it was once built as (keys in order).
    #[test]
    fn a_state_event_keeps_its_shape() {
        let cancelled = Message {
            state: State::Cancelled,
            wamid: None,
            ..sent(None)
        };
        // (message, detail given, detail shown): the history's entry of the change if it has
        // one, else the one given.
        for (m, given, shown) in [
            (
                sent(Some(r#"{"order":4521}"#)),
                "sent",
                "accepted by Meta as wamid.X",
            ),
            (sent(None), "sent", "accepted by Meta as wamid.X"),
            (cancelled, "cancelled by request", "cancelled by request"),
        ] {
            let shape = serde_json::json!({
                "event": "message",
                "id": format_id(m.id),
                "state": m.state.as_str(),
                "at": format_time(m.updated_at_ms),
                "detail": shown,
                "sender": m.sender,
                "to": m.to,
                "wamid": m.wamid,
                "metadata": m.metadata.as_deref().map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap()),
            });
            assert_eq!(state_event_line(&m, given), Some(event_line(&shape)));
        }
    }
}
