//! The 24-hour customer-service window: free-form messages only while it is open.

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
