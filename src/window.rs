//! The 24-hour customer-service window: free-form messages only while it is open.

use crate::model::{Message, State};
use crate::store::{Store, StoreError};

pub const WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// The window of `to` with `sender` as seen at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub last_inbound_ms: Option<u64>,
}

impl Window {
    pub fn open_until_ms(&self) -> Option<u64> {
        self.last_inbound_ms.map(|t| t + WINDOW_MS)
    }

    /// Open at `now_ms`, keeping `margin_ms` in hand before the end (a message sent in the last
    /// seconds could reach Meta after the window closed).
    pub fn is_open(&self, now_ms: u64, margin_ms: u64) -> bool {
        self.open_until_ms()
            .is_some_and(|until| now_ms.saturating_add(margin_ms) < until)
    }
}

pub fn lookup(store: &Store, sender: &str, to: &str) -> Result<Window, StoreError> {
    Ok(Window {
        last_inbound_ms: store.last_inbound(sender, to)?,
    })
}

/// Meta failed `m` with 131047 (in its answer or in a `failed` status): the window waq believed
/// open was closed. Forget it, so the next free-form message to this user goes out as its
/// fallback template (or is refused), unless the user wrote after `m` was sent. A status names
/// the user by wa_id (`recipient_id`); when that is not the number dialled, the wa_id's window
/// and those of the numbers aliased to it are the same user's: forgotten too.
pub fn forget_after_131047(store: &Store, m: &Message, recipient_id: Option<&str>) {
    let sent_at = m
        .history
        .iter()
        .rev()
        .find(|h| h.state == State::Sending)
        .map(|h| h.at_ms)
        .unwrap_or(m.created_at_ms);
    // Windows are kept under digits, as inbound messages open them.
    let wa_id = recipient_id.and_then(|r| crate::validate::recipient(r, "recipient_id").ok());
    let closed = store
        .close_window(&m.sender, &m.to, sent_at)
        .and_then(|dialled| match wa_id.filter(|r| *r != m.to) {
            Some(wa_id) => Ok(store.close_window(&m.sender, &wa_id, sent_at)? || dialled),
            None => Ok(dialled),
        });
    match closed {
        Ok(true) => tracing::warn!(
            sender = %m.sender,
            to = %m.to,
            "Meta reported the 24-hour window closed (131047); the window is forgotten"
        ),
        Ok(false) => {}
        Err(e) => tracing::error!("cannot record the closed window: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_only_within_24h_minus_margin() {
        let w = Window {
            last_inbound_ms: Some(1_000),
        };
        assert!(w.is_open(1_000, 0));
        assert!(w.is_open(1_000 + WINDOW_MS - 1, 0));
        assert!(!w.is_open(1_000 + WINDOW_MS, 0));
        assert!(!w.is_open(1_000 + WINDOW_MS - 60_000, 60_000));
        assert!(!Window {
            last_inbound_ms: None
        }
        .is_open(0, 0));
    }
}
