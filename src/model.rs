//! The data waq keeps: messages, their states, and the validated form of a send request.
//! No I/O here.

use serde::{Deserialize, Serialize};

/// Where a message is in its life. Terminal states never change again except by an
/// explicit retry (`failed`, `expired`) or a later status webhook (`sent` → `delivered` → `read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Sending,
    Retrying,
    Sent,
    Delivered,
    Read,
    Failed,
    Expired,
    Cancelled,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Queued,
        State::Sending,
        State::Retrying,
        State::Sent,
        State::Delivered,
        State::Read,
        State::Failed,
        State::Expired,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Sending => "sending",
            State::Retrying => "retrying",
            State::Sent => "sent",
            State::Delivered => "delivered",
            State::Read => "read",
            State::Failed => "failed",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Still waiting to be handed to Meta (the dispatcher owns it).
    pub fn is_pending(self) -> bool {
        matches!(self, State::Queued | State::Retrying | State::Sending)
    }

    /// Meta accepted it; only status webhooks move it on.
    pub fn is_accepted(self) -> bool {
        matches!(self, State::Sent | State::Delivered | State::Read)
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }
}

/// A send request that passed validation: every field checked and normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSend {
    /// Recipient as digits only (E.164 without `+`).
    pub to: String,
    /// Name of a configured sender.
    pub sender: String,
    /// The Cloud API message object as the producer gave it (without
    /// `messaging_product`, `to`, `recipient_type`), as compact JSON text.
    pub message: String,
    /// `message.type`, e.g. `text` or `template`.
    pub kind: String,
    /// A template object (`{name, language:{code}, components?}`) to send instead when the window is closed.
    /// As compact JSON text.
    pub fallback_template: Option<String>,
    pub idempotency_key: Option<String>,
    pub priority: Priority,
    /// Unix milliseconds; not before then.
    pub send_at_ms: Option<u64>,
    pub ttl_s: Option<u64>,
    /// As compact JSON text.
    pub metadata: Option<String>,
}

impl ValidSend {
    /// Free-form messages need an open customer-service window; templates do not.
    pub fn needs_window(&self) -> bool {
        self.kind != "template"
    }
}

/// The last error a message met, as shown in `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub code: String,
    pub message: String,
    pub meta_code: Option<i64>,
}

/// One transition in a message's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at_ms: u64,
    pub state: State,
    pub detail: String,
}

/// The stored record of one message. Kept small: JSON parts are stored as compact text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: u64,
    pub sender: String,
    pub to: String,
    pub kind: String,
    pub priority: Priority,
    pub state: State,
    /// The message object as compact JSON text.
    pub body: String,
    pub fallback_template: Option<String>,
    pub idempotency_key: Option<String>,
    pub metadata: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Earliest time of the next attempt (send_at, or the end of a backoff).
    pub next_attempt_at_ms: u64,
    /// Give up (state `expired`) when not sent by then.
    pub expires_at_ms: Option<u64>,
    pub attempts: u32,
    pub wamid: Option<String>,
    /// Name of the fallback template when it was sent instead of `body`.
    pub substituted_template: Option<String>,
    pub last_error: Option<LastError>,
    pub history: Vec<HistoryEntry>,
}

impl Message {
    /// Where `dispatch.max_age_s` counts from: when the message last fell due. That is the
    /// last time it was (re)queued (enqueue, an explicit retry, a paused sender's requeue), or
    /// its `send_at` if later; once tried, the first attempt since stands for the `send_at`,
    /// whose own field a retry's backoff has overwritten.
    pub fn age_base_ms(&self) -> u64 {
        let last_queued = self.history.iter().rposition(|h| h.state == State::Queued);
        let queued = last_queued
            .map(|i| self.history[i].at_ms)
            .unwrap_or(self.created_at_ms);
        let due = if self.attempts == 0 {
            self.next_attempt_at_ms
        } else {
            self.history[last_queued.map_or(0, |i| i + 1)..]
                .iter()
                .find(|h| h.state == State::Sending)
                .map_or(0, |h| h.at_ms)
        };
        queued.max(due).max(self.created_at_ms)
    }

    /// Moves to `state`, stamping the time and appending to the history.
    pub fn transition(&mut self, state: State, now_ms: u64, detail: impl Into<String>) {
        self.state = state;
        self.updated_at_ms = now_ms;
        self.history.push(HistoryEntry {
            at_ms: now_ms,
            state,
            detail: detail.into(),
        });
    }
}

/// Message ids are u64 sequence numbers (monotonic across restarts); shown as 16 hex digits.
pub fn format_id(id: u64) -> String {
    let mut out = Vec::with_capacity(16);
    write_id(&mut out, id);
    out.into_iter().map(char::from).collect()
}

/// An id as 16 lowercase hex digits, appended to `out` without the formatting machinery
/// (every 202 writes one).
pub fn write_id(out: &mut Vec<u8>, id: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend(
        (0..16)
            .rev()
            .map(|nibble| HEX[((id >> (nibble * 4)) & 0xf) as usize]),
    );
}

pub fn parse_id(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds, UTC.
pub fn format_time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses RFC 3339 (with `Z` or an offset) to Unix milliseconds.
pub fn parse_time(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(s)
        .ok()
        .or_else(|| parse_rfc3339_offset(s))?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// humantime accepts only `Z`; accept `+hh:mm` / `-hh:mm` offsets too.
fn parse_rfc3339_offset(s: &str) -> Option<std::time::SystemTime> {
    if s.len() < 6 {
        return None;
    }
    let (head, off) = s.split_at(s.len() - 6);
    let sign = match off.as_bytes()[0] {
        b'+' => 1i64,
        b'-' => -1i64,
        _ => return None,
    };
    if off.as_bytes()[3] != b':' {
        return None;
    }
    let hours: i64 = off.get(1..3)?.parse().ok()?;
    let mins: i64 = off.get(4..6)?.parse().ok()?;
    let base = humantime::parse_rfc3339_weak(&format!("{head}Z")).ok()?;
    let shift = std::time::Duration::from_secs((hours * 3600 + mins * 60) as u64);
    if sign > 0 {
        base.checked_sub(shift)
    } else {
        base.checked_add(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_as_text() {
        assert_eq!(parse_id(&format_id(42)), Some(42));
        assert!(format_id(9) < format_id(10));
        assert_eq!(parse_id("xyz"), None);
    }

    #[test]
    fn ids_are_sixteen_lowercase_hex_digits() {
        let mut ids = vec![0, 1, 0x1f, 0xabc, u64::MAX, 1 << 63, 0x0123_4567_89ab_cdef];
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ids.push(x);
        }
        for id in ids {
            let mut out = b"prefix".to_vec();
            write_id(&mut out, id);
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(
                std::str::from_utf8(&out[6..]).unwrap(),
                format!("{id:016x}")
            );
            assert_eq!(format_id(id), format!("{id:016x}"));
        }
    }

    #[test]
    fn times_parse_with_offsets() {
        let z = parse_time("2026-11-24T20:00:00Z").unwrap();
        let off = parse_time("2026-11-24T21:00:00+01:00").unwrap();
        assert_eq!(z, off);
        assert_eq!(format_time(z), "2026-11-24T20:00:00.000Z");
        assert_eq!(parse_time("yesterday"), None);
    }
}
