//! The JSON shapes the API answers with: a message's full view and a recipient's window.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::model::{format_id, format_time, LastError, Message};
use crate::window::Window;

/// `GET /v1/messages/{id}`: ids as 16 hex digits, times in RFC 3339, JSON parts as JSON.
///
/// A struct rather than a `Value`, so that `metadata` goes out as its stored text: a `Value`
/// would read its numbers as doubles. The fields are in alphabetical order, the order the
/// `Value` this once was (a sorted map) wrote them in.
#[derive(Debug, Serialize)]
pub struct MessageView<'a> {
    attempts: u32,
    created_at: String,
    expires_at: Option<String>,
    history: Vec<HistoryView<'a>>,
    id: String,
    idempotency_key: Option<&'a str>,
    last_error: Option<&'a LastError>,
    metadata: Option<std::borrow::Cow<'a, RawValue>>,
    next_attempt_at: Option<String>,
    priority: &'static str,
    sender: &'a str,
    state: &'static str,
    substituted_template: Option<&'a str>,
    to: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    updated_at: String,
    wamid: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct HistoryView<'a> {
    at: String,
    detail: &'a str,
    state: &'static str,
}

/// The view of `m`, borrowing from it.
pub fn message(m: &Message) -> MessageView<'_> {
    MessageView {
        attempts: m.attempts,
        created_at: format_time(m.created_at_ms),
        expires_at: m.expires_at_ms.map(format_time),
        history: m
            .history
            .iter()
            .map(|h| HistoryView {
                at: format_time(h.at_ms),
                detail: &h.detail,
                state: h.state.as_str(),
            })
            .collect(),
        id: format_id(m.id),
        idempotency_key: m.idempotency_key.as_deref(),
        last_error: m.last_error.as_ref(),
        metadata: m.metadata_json(),
        // Only meaningful while the dispatcher still owns the message.
        next_attempt_at: m
            .state
            .is_pending()
            .then(|| format_time(m.next_attempt_at_ms)),
        priority: m.priority.as_str(),
        sender: &m.sender,
        state: m.state.as_str(),
        substituted_template: m.substituted_template.as_deref(),
        to: &m.to,
        kind: &m.kind,
        updated_at: format_time(m.updated_at_ms),
        wamid: m.wamid.as_deref(),
    }
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

    /// A message with every field set; `metadata` as stored.
    fn full_message(metadata: Option<&str>) -> Message {
        Message {
            id: 0x2a,
            sender: "main".into(),
            to: "14155551234".into(),
            kind: "template".into(),
            priority: Priority::High,
            state: State::Retrying,
            body: "{}".into(),
            fallback_template: None,
            idempotency_key: Some("order-\"4521\"".into()),
            metadata: metadata.map(str::to_string),
            created_at_ms: 1_795_550_400_000,
            updated_at_ms: 1_795_550_401_000,
            next_attempt_at_ms: 1_795_550_402_000,
            expires_at_ms: Some(1_795_550_500_000),
            attempts: 2,
            wamid: Some("wamid.X".into()),
            substituted_template: Some("order_update".into()),
            last_error: Some(crate::model::LastError {
                code: "meta_131047".into(),
                message: "window closed".into(),
                meta_code: Some(131047),
            }),
            history: vec![
                HistoryEntry {
                    at_ms: 1_795_550_400_000,
                    state: State::Queued,
                    detail: "queued".into(),
                },
                HistoryEntry {
                    at_ms: 1_795_550_401_000,
                    state: State::Retrying,
                    detail: "retrying".into(),
                },
            ],
        }
    }

    /// The metadata's text in the serialised view.
    fn metadata_in(view: &str) -> String {
        #[derive(serde::Deserialize)]
        struct Part<'a> {
            #[serde(borrow)]
            metadata: Option<&'a serde_json::value::RawValue>,
        }
        let part: Part = serde_json::from_str(view).unwrap();
        part.metadata.map_or("null", |m| m.get()).to_string()
    }

    #[test]
    fn metadata_is_echoed_as_stored() {
        for stored in [
            r#"{"order":123456789012345678901234567890}"#,
            r#"{"price":1.10,"e":1E+2,"zero":-0,"small":2.50e-3,"big":1e308}"#,
            r#"{"z":1,"a":{"y":[1.0,{"x":"é\n"}],"b":null}}"#,
            r#"[18446744073709551616,-9223372036854775809]"#,
            r#""😀 /""#,
            "0.1",
        ] {
            let m = full_message(Some(stored));
            let view = serde_json::to_string(&message(&m)).unwrap();
            assert_eq!(metadata_in(&view), stored, "{view}");
            assert!(
                view.contains(&format!(r#","metadata":{stored},"next_attempt_at""#)),
                "{view}"
            );
        }
    }

    /// Records whose metadata is not JSON (none are written so) still answer, with `null`.
    #[test]
    fn metadata_that_is_not_json_is_null() {
        // Not JSON, or JSON that a strict reader refuses (a number beyond a double's range, a
        // lone surrogate).
        for stored in ["{", "", "{\"a\":1} x", "1e400", r#""\ud800""#] {
            let view = serde_json::to_string(&message(&full_message(Some(stored)))).unwrap();
            assert_eq!(metadata_in(&view), "null", "{view}");
            serde_json::from_str::<serde_json::Value>(&view).unwrap();
        }
    }

    /// A record in another form than enqueues write (whitespace, needless escapes) is echoed
    /// in that form: still one line, still its numbers' text.
    #[test]
    fn metadata_stored_in_another_form_is_echoed_compact() {
        let stored = "{ \"a\" :\n [1.10, \"\\u00e9\"] }";
        let view = serde_json::to_string(&message(&full_message(Some(stored)))).unwrap();
        assert_eq!(metadata_in(&view), r#"{"a":[1.10,"é"]}"#, "{view}");
        assert!(!view.contains('\n'));
    }

    /// The view's bytes are those of the `Value` it was once built as (keys in order).
    #[test]
    fn the_view_keeps_its_shape() {
        for metadata in [None, Some(r#"{"order":4521,"tags":["a","b"]}"#)] {
            for state in [State::Retrying, State::Sent] {
                let mut m = full_message(metadata);
                m.state = state;
                m.last_error = m.last_error.filter(|_| state == State::Retrying);
                let shape = json!({
                    "id": format_id(m.id),
                    "state": m.state.as_str(),
                    "sender": m.sender,
                    "to": m.to,
                    "type": m.kind,
                    "priority": m.priority.as_str(),
                    "attempts": m.attempts,
                    "created_at": format_time(m.created_at_ms),
                    "updated_at": format_time(m.updated_at_ms),
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
                    "metadata": m.metadata.as_deref().map(|t| serde_json::from_str::<Value>(t).unwrap()),
                });
                assert_eq!(
                    serde_json::to_string(&message(&m)).unwrap(),
                    shape.to_string()
                );
            }
        }
    }

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
