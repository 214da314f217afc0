//! The JSON shapes the API answers with: a message's full view and a recipient's window.

use serde_json::{json, Value};

use crate::model::{format_id, format_time, Message};
use crate::window::Window;

/// `GET /v1/messages/{id}`: ids as 16 hex digits, times in RFC 3339, JSON parts as JSON.
pub fn message(m: &Message) -> Value {
    json!({
        "id": format_id(m.id),
        "state": m.state.as_str(),
        "sender": m.sender,
        "to": m.to,
        "type": m.kind,
        "priority": m.priority.as_str(),
        "attempts": m.attempts,
        "created_at": format_time(m.created_at_ms),
        "updated_at": format_time(m.updated_at_ms),
        // Only meaningful while the dispatcher still owns the message.
        "next_attempt_at": m.state.is_pending().then(|| format_time(m.next_attempt_at_ms)),
        "expires_at": m.expires_at_ms.map(format_time),
        "idempotency_key": m.idempotency_key,
        "wamid": m.wamid,
        "substituted_template": m.substituted_template,
        "last_error": m.last_error.as_ref().map(|e| json!({
            "code": e.code,
            "message": e.message,
            "meta_code": e.meta_code,
        })),
        "history": m.history.iter().map(|h| json!({
            "at": format_time(h.at_ms),
            "state": h.state.as_str(),
            "detail": h.detail,
        })).collect::<Vec<_>>(),
        "metadata": m.metadata.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()),
    })
}

/// The short answer to an enqueue or retry: `{"id","state"}`.
pub fn accepted(m: &Message) -> Value {
    json!({ "id": format_id(m.id), "state": m.state.as_str() })
}

/// `accepted` as JSON text, written directly (the id is hex and the state a fixed word, so
/// nothing needs escaping): the same bytes as serialising `accepted(m)`.
pub fn accepted_text(m: &Message, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"id":""#);
    crate::model::write_id(out, m.id);
    out.extend_from_slice(br#"","state":""#);
    out.extend_from_slice(m.state.as_str().as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// `GET /v1/recipients/{number}` and `POST /v1/inbound`.
pub fn recipient(sender: &str, to: &str, w: &Window, now_ms: u64, margin_ms: u64) -> Value {
    json!({
        "sender": sender,
        "recipient": to,
        "last_inbound_at": w.last_inbound_ms.map(format_time),
        "window_open_until": w.open_until_ms().map(format_time),
        // The margin is waq's, taken off Meta's 24 hours: free-form messages are accepted at
        // enqueue, and sent, until then.
        "free_form_until": w.open_until_ms().map(|t| format_time(t.saturating_sub(margin_ms))),
        "window_open": w.is_open(now_ms, margin_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HistoryEntry, Priority, State};

    #[test]
    fn accepted_text_is_the_serialised_value() {
        let m = Message {
            id: 0x1f,
            sender: "main".into(),
            to: "14155551234".into(),
            kind: "text".into(),
            priority: Priority::Normal,
            state: State::Queued,
            body: "{}".into(),
            fallback_template: None,
            idempotency_key: None,
            metadata: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            next_attempt_at_ms: 1,
            expires_at_ms: None,
            attempts: 0,
            wamid: None,
            substituted_template: None,
            last_error: None,
            history: vec![HistoryEntry {
                at_ms: 1,
                state: State::Queued,
                detail: "queued".into(),
            }],
        };
        let mut out = Vec::new();
        accepted_text(&m, &mut out);
        assert_eq!(out, serde_json::to_vec(&accepted(&m)).unwrap());
    }
}
