//! Shared fixtures of the benches: a realistic ~250-byte template send.

use waq::model::{HistoryEntry, Message, Priority, State};

#[allow(dead_code)]
pub fn template_message(id: u64, to: &str) -> Message {
    Message {
        id,
        sender: "main".into(),
        to: to.into(),
        kind: "template".into(),
        priority: Priority::Normal,
        state: State::Queued,
        body: r##"{"type":"template","template":{"name":"order_update","language":{"code":"en_US"},"components":[{"type":"body","parameters":[{"type":"text","text":"John"},{"type":"text","text":"#4521"}]}]}}"##.into(),
        fallback_template: None,
        idempotency_key: Some(format!("order-{id}-shipped")),
        metadata: Some(r#"{"order":4521}"#.into()),
        created_at_ms: 1_764_000_000_000,
        updated_at_ms: 1_764_000_000_000,
        next_attempt_at_ms: 1_764_000_000_000,
        expires_at_ms: None,
        attempts: 0,
        wamid: None,
        substituted_template: None,
        last_error: None,
        history: vec![HistoryEntry {
            at_ms: 1_764_000_000_000,
            state: State::Queued,
            detail: "queued".into(),
        }],
    }
}
