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
    pub fn needs_window(&self) -> bool {
        needs_window(&self.kind)
    }
}

/// Free-form messages need an open customer-service window; templates do not.
pub fn needs_window(kind: &str) -> bool {
    kind != "template"
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
    /// `metadata` as the JSON to echo: its stored text, exactly, as enqueues store it (compact,
    /// escaped as JSON requires and no more; a `Value` would read its numbers as doubles).
    /// Text in any other form (none is written so, but a record outlives the code that wrote
    /// it) is written again in that form, and text that is not JSON shows `null`, so that an
    /// answer or an event line is valid JSON whatever the record holds.
    pub fn metadata_json(&self) -> Option<std::borrow::Cow<'_, serde_json::value::RawValue>> {
        use serde_json::value::RawValue;
        use std::borrow::Cow;
        let text = self.metadata.as_deref()?;
        let compact = crate::borrowed_json::parse(text.as_bytes())
            .ok()?
            .to_compact_reescaped();
        if compact == text {
            serde_json::from_str::<&RawValue>(text)
                .ok()
                .map(Cow::Borrowed)
        } else {
            RawValue::from_string(compact).ok().map(Cow::Owned)
        }
    }

    /// Where `dispatch.max_age_s` counts from: when the message last fell due. That is the
    /// last time it was (re)queued (enqueue, an explicit retry, a paused sender's requeue), or
    /// its `send_at` if later; once tried, the first attempt since stands for the `send_at`,
    /// whose own field a retry's backoff has overwritten. That holds when every attempt was
    /// given back (throttles, requests that never left), or each retry would move the base on
    /// and never reach the age.
    pub fn age_base_ms(&self) -> u64 {
        let last_queued = self.history.iter().rposition(|h| h.state == State::Queued);
        let queued = last_queued
            .map(|i| self.history[i].at_ms)
            .unwrap_or(self.created_at_ms);
        // A request that never left keeps no `sending`; its retry entry marks the try.
        let first_try = self.history[last_queued.map_or(0, |i| i + 1)..]
            .iter()
            .find(|h| matches!(h.state, State::Sending | State::Retrying))
            .map(|h| h.at_ms);
        let due = match (first_try, self.attempts) {
            (Some(at), _) => at,
            (None, 0) => self.next_attempt_at_ms,
            (None, _) => 0,
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

    /// Ends the message `expired`: its ttl passed before it could be sent. The error of an
    /// earlier attempt, if any, stays as `last_error` (it says why the message was not sent in
    /// time); without one, `ttl_expired` says why it ended.
    pub fn expire(&mut self, now_ms: u64) {
        if self.last_error.is_none() {
            self.last_error = Some(LastError {
                code: "ttl_expired".into(),
                message: "its ttl_s passed before it could be sent".into(),
                meta_code: None,
            });
        }
        self.transition(State::Expired, now_ms, "ttl passed before it could be sent");
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

/// How the history entry of an accepted attempt begins; the wamid follows. Each attempt's wamid
/// stays there after the message's own `wamid` moves on (retention removes them from the index).
pub const ACCEPTED_AS: &str = "accepted by Meta as ";

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

/// Why a text is not a time [`parse_time`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// Not shaped like an RFC 3339 date-time, or a field out of range (month 13, 25:00).
    Malformed,
    /// A date and time without `Z` or `±hh:mm`: a local time, whose hour is unknown.
    NoOffset,
    /// Before 1970-01-01T00:00:00Z.
    BeforeEpoch,
}

impl TimeError {
    /// The error message for field `field` holding `value` (quoted by the caller).
    pub fn message(self, field: &str, value: &str) -> String {
        match self {
            TimeError::Malformed => format!(
                "`{field}` {value} is not an RFC 3339 time; write it like \"2026-11-24T20:00:00Z\" \
                 or \"2026-11-24T21:00:00+01:00\"."
            ),
            TimeError::NoOffset => format!(
                "`{field}` {value} has no UTC offset, so its hour is unknown; an offset such as `Z` \
                 (UTC) or `+02:00` is required, e.g. \"2026-11-24T20:00:00Z\"."
            ),
            TimeError::BeforeEpoch => {
                format!("`{field}` {value} is before 1970; give a time from 1970 on.")
            }
        }
    }
}

/// Parses an RFC 3339 date-time to Unix milliseconds: `2026-11-24T20:00:00Z`,
/// `2026-11-24t21:00:00.5+01:00`. The offset is required (a time without one is local, and
/// the hour it means unknown). `T` and `Z` may be lower case, and a space may separate date
/// and time (RFC 3339 §5.6 allows both). Digits past milliseconds are dropped; a leap second
/// (`:60`) counts as `:59`, as Unix time has none.
pub fn parse_time(s: &str) -> Result<u64, TimeError> {
    use TimeError::Malformed;
    let b = s.as_bytes();
    // Fixed positions: YYYY-MM-DDTHH:MM:SS
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(Malformed);
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(Malformed);
    }
    let mut rest = &b[19..];
    let mut millis = 0u64;
    if let Some((b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(Malformed);
        }
        for i in 0..3 {
            millis = millis * 10
                + frac
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |c| u64::from(c - b'0'));
        }
        rest = &frac[n..];
    }
    // Offset east of UTC, in minutes.
    let offset: i64 = match rest {
        [] => return Err(TimeError::NoOffset),
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return Err(Malformed);
            }
            let off = i64::from(hours * 60 + minutes);
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return Err(Malformed),
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second.min(59))
            - offset * 60;
    let secs = u64::try_from(secs).map_err(|_| TimeError::BeforeEpoch)?;
    Ok(secs * 1000 + millis)
}

/// ASCII digits as a number; `bytes` is at most 4 long.
fn digits(bytes: &[u8]) -> Result<u32, TimeError> {
    bytes.iter().try_fold(0u32, |n, c| {
        if c.is_ascii_digit() {
            Ok(n * 10 + u32::from(c - b'0'))
        } else {
            Err(TimeError::Malformed)
        }
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
        assert_eq!(parse_time("2026-11-24T18:30:00-01:30"), Ok(z));
        assert_eq!(parse_time("2026-11-24T20:00:00-00:00"), Ok(z));
        assert_eq!(format_time(z), "2026-11-24T20:00:00.000Z");
        assert_eq!(parse_time("yesterday"), Err(TimeError::Malformed));
    }

    #[test]
    fn times_need_an_offset() {
        for local in [
            "2099-01-01T00:00:00",
            "2099-01-01T00:00:00.250",
            "2099-01-01 00:00:00",
        ] {
            assert_eq!(parse_time(local), Err(TimeError::NoOffset), "{local}");
        }
        let msg = TimeError::NoOffset.message("send_at", "\"2099-01-01T00:00:00\"");
        assert!(msg.contains("`send_at`") && msg.contains("`Z`") && msg.contains("`+02:00`"));
    }

    #[test]
    fn times_take_what_rfc_3339_allows() {
        let z = parse_time("2099-01-01T00:00:00Z").unwrap();
        assert_eq!(parse_time("2099-01-01t00:00:00z"), Ok(z));
        assert_eq!(parse_time("2099-01-01 00:00:00Z"), Ok(z));
        assert_eq!(parse_time("2099-01-01T00:00:00.123456Z"), Ok(z + 123));
        assert_eq!(parse_time("2099-01-01T00:00:00.5Z"), Ok(z + 500));
        // A leap second counts as the second before it.
        assert_eq!(
            parse_time("2016-12-31T23:59:60Z"),
            parse_time("2016-12-31T23:59:59Z")
        );
        assert_eq!(
            parse_time("2024-02-29T00:00:00Z").map(format_time),
            Ok("2024-02-29T00:00:00.000Z".into())
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_time("1970-01-01T00:30:00+01:00"),
            Err(TimeError::BeforeEpoch)
        );
        for bad in [
            "",
            "2099-01-01",
            "2099-01-01T00:00Z",
            "2099-1-01T00:00:00Z",
            "2099-01-01X00:00:00Z",
            "2099-13-01T00:00:00Z",
            "2099-00-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2099-04-31T00:00:00Z",
            "2099-01-01T24:00:00Z",
            "2099-01-01T00:60:00Z",
            "2099-01-01T00:00:61Z",
            "2099-01-01T00:00:00.Z",
            "2099-01-01T00:00:00+0100",
            "2099-01-01T00:00:00+24:00",
            "2099-01-01T00:00:00+01:60",
            "2099-01-01T00:00:00ZZ",
            "2099-01-01T00:00:00 Z",
            "+099-01-01T00:00:00Z",
            "2099-01-01T00:00:00UTC",
        ] {
            assert_eq!(parse_time(bad), Err(TimeError::Malformed), "{bad}");
        }
    }

    #[test]
    fn times_agree_with_format_time() {
        // Every day of a few years, at an odd time, round-trips through format_time.
        let mut ms = parse_time("1999-12-30T13:14:15.678Z").unwrap();
        for _ in 0..3000 {
            assert_eq!(parse_time(&format_time(ms)), Ok(ms));
            ms += 86_400_000 + 1001;
        }
    }
}
