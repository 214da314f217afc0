//! Applying a verified payload to the store: statuses move messages along by wamid, inbound
//! messages open windows, and both are published on the event stream.
//!
//! Everything here is idempotent, so a payload applied twice (Meta's retries, or the inbox
//! replayed after a crash) changes nothing the second time: statuses only move a message forward,
//! and the window only moves to a later inbound time.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::app::App;
use crate::cloud::{CloudError, ErrorClass};
use crate::metrics::Metrics;
use crate::model::{format_time, now_ms, LastError, Message, State};
use crate::store::StoreError;

use super::payload::{Envelope, InboundMessage, MetaError, Status};
use super::pending::PendingStatus;

/// What one payload did.
#[derive(Debug, Default, Clone)]
pub struct ApplySummary {
    /// Statuses that moved a message.
    pub statuses_applied: usize,
    /// Duplicates, late arrivals (a `delivered` after `read`), and statuses that do not apply to
    /// the message's state.
    pub statuses_unchanged: usize,
    /// Statuses whose wamid is not recorded yet, or whose message is still being sent: the
    /// caller retries them (`serve` does, for 30 s).
    pub deferred: Vec<PendingStatus>,
    /// Inbound user messages from a phone number (recorded, whether or not they moved a window).
    pub inbound: usize,
    /// `system` messages (e.g. `user_changed_number`): published, no window opened.
    pub system: usize,
    /// Inbound messages without `from` (a user whose username hides their number): published
    /// with their user id, no window opened.
    pub without_number: usize,
    /// Value-level `errors[]` reported by Meta.
    pub value_errors: usize,
    /// For a phone number no sender is configured with: values with inbound messages (not
    /// applied), and statuses of wamids waq does not know (not waited for).
    pub unrouted: usize,
    /// Statuses or messages that could not be read (logged and skipped).
    pub malformed: usize,
    /// Changes of other fields than `messages` (only relayed).
    pub ignored_changes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the payload is not a JSON webhook envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies one verified payload (raw JSON bytes) to the store.
///
/// Statuses that cannot be applied yet are returned in `ApplySummary::deferred` for the caller to
/// retry with `apply_pending`; `serve` does that for 30 s before counting them unknown.
pub fn apply_payload(app: &App, raw: &[u8]) -> Result<ApplySummary, ApplyError> {
    apply_with(app, raw, None)
}

/// Retries one deferred status.
pub fn apply_pending(app: &App, p: &PendingStatus) -> Result<StatusOutcome, StoreError> {
    apply_status(app, &p.sender, &p.status)
}

/// The envelope of a payload the listener took as a JSON object. A key written twice (which
/// the listener lets through, as JSON parsers do) keeps its last value instead of failing the
/// typed read, so a payload Meta has its 200 for is not thrown away.
/// A leading UTF-8 byte order mark, which some tools write, is skipped, as the socket API does.
pub(super) fn parse_envelope(raw: &[u8]) -> Result<Envelope, serde_json::Error> {
    let raw = crate::api::skip_bom(raw);
    serde_json::from_slice(raw).or_else(|_| {
        let value: serde_json::Value = serde_json::from_slice(raw)?;
        serde_json::from_value(value)
    })
}

/// `apply_payload`, remembering recent inbound message ids in `recent` so a duplicate delivery
/// does not publish its event or count it twice.
pub(crate) fn apply_with(
    app: &App,
    raw: &[u8],
    recent: Option<&Mutex<RecentIds>>,
) -> Result<ApplySummary, ApplyError> {
    let envelope = parse_envelope(raw)?;
    let cfg = app.config();
    let now = now_ms();
    let mut sum = ApplySummary::default();

    if let Some(object) = envelope.object.as_deref() {
        if object != "whatsapp_business_account" {
            tracing::debug!(object, "webhook for another object type; only relayed");
        }
    }
    for entry in envelope.entry {
        for change in entry.changes {
            if change.field.as_deref().is_some_and(|f| f != "messages") {
                tracing::debug!(field = ?change.field, "webhook change of another field; only relayed");
                sum.ignored_changes += 1;
                continue;
            }
            let value = change.value;
            for e in &value.errors {
                tracing::warn!(
                    code = ?e.code,
                    description = %e.describe(),
                    waba = ?entry.id,
                    "Meta reported an error in a webhook"
                );
                Metrics::inc(&app.metrics.webhook_value_errors);
                sum.value_errors += 1;
            }
            if value.statuses.is_empty() && value.messages.is_empty() {
                continue;
            }
            let phone_number_id = value
                .metadata
                .as_ref()
                .and_then(|m| m.phone_number_id.clone())
                .unwrap_or_default();
            let sender = cfg
                .senders
                .iter()
                .find(|s| !phone_number_id.is_empty() && s.phone_number_id == phone_number_id);
            // A status names its message by wamid, so it is applied even when no sender has this
            // number any more (one removed or renumbered by a reload while its messages were on
            // their way): Meta does not send a payload again once it has had its 200.
            let status_sender = sender.map_or("", |s| s.name.as_str());
            if sender.is_none() && !value.statuses.is_empty() {
                tracing::info!(
                    phone_number_id,
                    statuses = value.statuses.len(),
                    "statuses for a phone number no sender is configured with; those of waq's \
                     messages are applied by wamid"
                );
            }

            for raw_status in value.statuses {
                let status = match Status::parse(&raw_status) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a malformed status in a webhook");
                        sum.malformed += 1;
                        continue;
                    }
                };
                if sender.is_none() && app.store.lookup_wamid(&status.id)?.is_none() {
                    // Not one of ours (another system's number on the same app): not waited
                    // for, as a status that beats its send's answer is. (A removed sender's
                    // request still on its way loses at most its `sent` status this way, which
                    // its answer records anyway.)
                    sum.unrouted += 1;
                    continue;
                }
                match apply_status(app, status_sender, &status)? {
                    StatusOutcome::Applied => sum.statuses_applied += 1,
                    StatusOutcome::Unchanged | StatusOutcome::Ignored => {
                        sum.statuses_unchanged += 1
                    }
                    StatusOutcome::Deferred => sum.deferred.push(PendingStatus {
                        sender: status_sender.to_string(),
                        phone_number_id: phone_number_id.clone(),
                        status,
                        raw: raw_status,
                        durable: None,
                    }),
                }
            }

            let Some(sender) = sender.filter(|_| !value.messages.is_empty()) else {
                if !value.messages.is_empty() {
                    // A window belongs to a sender, so an inbound message needs one.
                    tracing::warn!(
                        phone_number_id,
                        messages = value.messages.len(),
                        "inbound messages for a phone number no sender is configured with; not applied"
                    );
                    // No counter of its own yet: counted with the value-level errors.
                    Metrics::inc(&app.metrics.webhook_value_errors);
                    sum.unrouted += 1;
                }
                continue;
            };
            for raw_msg in &value.messages {
                let msg = match InboundMessage::parse(raw_msg) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a malformed inbound message in a webhook");
                        sum.malformed += 1;
                        continue;
                    }
                };
                // Meta's clock may run ahead of ours: never open a window "from the future".
                let at = msg
                    .timestamp
                    .map(|s| s.saturating_mul(1000))
                    .unwrap_or(now)
                    .min(now);
                let kind = msg.kind.as_deref().unwrap_or("unknown");
                // Meta writes digits; anything else is normalised as `POST /v1/inbound` does,
                // so the window, the event and the contact agree with a send to that number.
                let from = msg
                    .from
                    .as_deref()
                    .and_then(|f| crate::validate::recipient(f, "from").ok());
                let from_shown = from.as_deref().or(msg.from.as_deref());
                let seen_key = msg.id.as_ref().map(|id| format!("{}\0{id}", sender.name));
                let fresh = match (recent, &seen_key) {
                    (Some(r), Some(k)) => !r.lock().unwrap_or_else(|p| p.into_inner()).contains(k),
                    _ => true,
                };

                if kind == "system" {
                    // Not written by the user, so it opens no window. A changed number has not
                    // written to us from the new number either: no window is carried over.
                    let sys = msg.system.clone().unwrap_or_default();
                    tracing::info!(
                        sender = %sender.name,
                        from = ?msg.from,
                        user_id = ?msg.from_user_id,
                        system_type = ?sys.kind,
                        new_wa_id = ?sys.new_number(),
                        "system message from WhatsApp (no window opened)"
                    );
                    sum.system += 1;
                } else if let Some(from) = &from {
                    app.store.record_inbound(&sender.name, from, at)?;
                    // The payload is durable in the inbox: a crash applies it again.
                    app.window_opened(&sender.name, from);
                    sum.inbound += 1;
                    if fresh {
                        Metrics::inc(&app.metrics.inbound_messages);
                    }
                } else if let Some(raw_from) = &msg.from {
                    tracing::warn!(
                        sender = %sender.name,
                        from = %raw_from,
                        "inbound message whose `from` is not a phone number: no window opened"
                    );
                    sum.malformed += 1;
                } else {
                    // A window is kept per phone number (a send's `to`), and there is none.
                    tracing::debug!(
                        sender = %sender.name,
                        user_id = ?msg.from_user_id,
                        "inbound message without a phone number: published, no window opened"
                    );
                    sum.without_number += 1;
                }
                if fresh {
                    let contact = contact_of(&value.contacts, &msg, from.as_deref());
                    let user_id = msg.from_user_id.as_deref().or_else(|| {
                        contact
                            .and_then(|c| c.get("user_id"))
                            .and_then(Value::as_str)
                    });
                    let mut event = serde_json::Map::new();
                    event.insert("event".into(), json!("inbound"));
                    event.insert("sender".into(), json!(sender.name));
                    // Left out when Meta left it out, as in Meta's payload.
                    if let Some(from) = from_shown {
                        event.insert("from".into(), json!(from));
                    }
                    event.insert("user_id".into(), json!(user_id));
                    event.insert("at".into(), json!(format_time(at)));
                    event.insert("type".into(), json!(kind));
                    event.insert("message".into(), raw_msg.clone());
                    event.insert("contact".into(), contact.cloned().unwrap_or(Value::Null));
                    app.publish(Value::Object(event));
                    if let (Some(r), Some(k)) = (recent, seen_key) {
                        r.lock().unwrap_or_else(|p| p.into_inner()).insert(k);
                    }
                }
            }
        }
    }
    Ok(sum)
}

/// The `contacts[]` entry of a message's user: by wa_id when the message has `from`, else by
/// user id. A message that names its user neither way (Meta's example of a contact-request
/// reply has neither `from` nor `from_user_id`) takes the only entry, if there is just one.
fn contact_of<'a>(
    contacts: &'a [Value],
    msg: &InboundMessage,
    from: Option<&str>,
) -> Option<&'a Value> {
    let field = |c: &'a Value, key: &str| c.get(key).and_then(Value::as_str);
    if let Some(raw_from) = msg.from.as_deref() {
        let by_wa_id = contacts.iter().find(|c| {
            field(c, "wa_id").is_some_and(|wa_id| {
                wa_id == raw_from
                    || from.is_some_and(|from| {
                        crate::validate::recipient(wa_id, "wa_id").is_ok_and(|wa_id| wa_id == from)
                    })
            })
        });
        if by_wa_id.is_some() {
            return by_wa_id;
        }
    }
    if let Some(user_id) = msg.from_user_id.as_deref() {
        return contacts
            .iter()
            .find(|c| field(c, "user_id") == Some(user_id));
    }
    match contacts {
        [only] if msg.from.is_none() => Some(only),
        _ => None,
    }
}

/// What became of one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    Applied,
    /// Duplicate, late, or not applicable to the message's state.
    Unchanged,
    /// The wamid is not known yet, or the message is still with the dispatcher.
    Deferred,
    /// A status kind waq does not track (e.g. `deleted`).
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Sent,
    Delivered,
    /// `read`, or `played` for voice messages.
    Read {
        played: bool,
    },
    Failed,
}

impl Target {
    fn parse(s: &str) -> Option<Target> {
        match s {
            "sent" => Some(Target::Sent),
            "delivered" => Some(Target::Delivered),
            "read" => Some(Target::Read { played: false }),
            "played" => Some(Target::Read { played: true }),
            "failed" => Some(Target::Failed),
            _ => None,
        }
    }
}

/// Order of the accepted states; statuses only move up it.
fn rank(s: State) -> Option<u8> {
    match s {
        State::Sent => Some(1),
        State::Delivered => Some(2),
        State::Read => Some(3),
        _ => None,
    }
}

pub(crate) fn apply_status(
    app: &App,
    sender: &str,
    st: &Status,
) -> Result<StatusOutcome, StoreError> {
    let Some(target) = Target::parse(&st.status) else {
        tracing::debug!(status = %st.status, wamid = %st.id, "status kind not tracked");
        return Ok(StatusOutcome::Ignored);
    };
    let Some(id) = app.store.lookup_wamid(&st.id)? else {
        return Ok(StatusOutcome::Deferred);
    };
    let mut found = false;
    let mut pending = false;
    let dispatch = &app.config().dispatch;
    let changed = app.store.update(id, |m| {
        found = true;
        if m.state == State::Sending {
            // A request is on its way, and its answer (a new wamid, perhaps this one) is not
            // recorded yet: let the dispatcher record it, then apply.
            pending = true;
            return None;
        }
        if m.state.is_pending() || m.wamid.as_deref() != Some(st.id.as_str()) {
            // Waiting for its next attempt, or sent again since: a status of an earlier
            // attempt's wamid (late, or one of Meta's redeliveries) says nothing about it.
            tracing::debug!(wamid = %st.id, id, "status of an earlier attempt; ignored");
            return None;
        }
        if !sender.is_empty() && m.sender != sender {
            tracing::warn!(
                wamid = %st.id,
                message_sender = %m.sender,
                webhook_sender = %sender,
                "status arrived for another sender's phone number; applied by wamid"
            );
        }
        let now = now_ms();
        if target == Target::Failed && m.state == State::Sent {
            if let Some(retry_at) = retry_after_failed_status(m, st, now, dispatch) {
                let detail = m
                    .history
                    .last()
                    .map(|h| h.detail.clone())
                    .unwrap_or_default();
                return Some((detail, retry_at));
            }
        }
        advance(m, target, st, now).map(|detail| (detail, None))
    })?;
    Ok(match changed {
        Some(((detail, retry_at), m)) => {
            if let Some(implied) = implied_delivery(&m, target) {
                app.publish_state(&implied, "implied by a read status");
            }
            app.publish_state(&m, &detail);
            Metrics::inc(&app.metrics.statuses_applied);
            if target == Target::Failed
                && m.last_error.as_ref().and_then(|e| e.meta_code) == Some(131047)
            {
                crate::window::forget_after_131047(&app.store, &m, st.recipient_id.as_deref());
            }
            if retry_at.is_some() {
                let code = m.last_error.as_ref().and_then(|e| e.meta_code);
                if m.state == State::Queued {
                    // An account error: the sender pauses before the message is back with it.
                    // When the attempt started, as an answer's account error is judged (its
                    // answer, for a record without that entry).
                    let at = |state| m.history.iter().rev().find(|h| h.state == state);
                    let sent_at = at(State::Sending)
                        .or_else(|| at(State::Sent))
                        .map_or(now_ms(), |h| h.at_ms);
                    let reason = m.last_error.as_ref().map_or(String::new(), |e| {
                        format!("{} (in a failed status): {}", e.code, e.message)
                    });
                    app.dispatcher.account_failed(&m.sender, &reason, sent_at);
                } else {
                    Metrics::inc(&app.metrics.retries_scheduled);
                }
                if crate::dispatch::is_throttle(code) {
                    app.dispatcher.throttled(&m.sender);
                    if crate::dispatch::is_app_wide_throttle(code) {
                        app.dispatcher.throttle_others_of_app(&m.sender);
                    }
                }
                app.dispatcher.submit(&m);
            }
            StatusOutcome::Applied
        }
        None if !found || pending => StatusOutcome::Deferred,
        None => StatusOutcome::Unchanged,
    })
}

/// A `failed` status is Meta's error for a send it had accepted, and its code says what to do
/// as it does in an answer: a transient or long-wait code is retried (a new send, so no
/// duplicate), and 131047 sends the message's fallback template. `Some(Some(at))` when the
/// message is to be sent again at `at`, `Some(None)` when it ended on the way (attempts,
/// `ttl_s`, `max_age_s`), `None` when the status simply fails it (permanent codes). An account
/// code puts the message back to `queued` (`Some(Some(now))`) for the caller to pause its
/// sender.
fn retry_after_failed_status(
    m: &mut Message,
    st: &Status,
    now: u64,
    dispatch: &crate::config::DispatchConfig,
) -> Option<Option<u64>> {
    let e = st.errors.first()?;
    let code = e.code?;
    let class = crate::cloud::classify(code);
    if class == ErrorClass::PauseSender {
        // Not the message's fault, as in an answer: it waits for its sender, which pauses
        // (the caller does that), with the attempt given back.
        m.attempts = m.attempts.saturating_sub(1);
        m.last_error = Some(failure(e));
        m.transition(
            State::Queued,
            now,
            format!(
                "{}sender paused (meta_{code}: {})",
                crate::dispatch::FAILED_STATUS_PREFIX,
                e.describe()
            ),
        );
        return Some(Some(now));
    }
    let fallback = code == 131047 && crate::dispatch::fallback_would_go(m);
    if class == ErrorClass::Permanent && !fallback {
        return None;
    }
    let err = CloudError {
        class,
        meta_code: Some(code),
        http_status: None,
        message: e.describe(),
        details: None,
        retry_after: None,
    };
    // Meta's advice for 131056 is 4^X s, X the strikes so far: here, this message's.
    let pair_strikes = crate::dispatch::retries_after(m, |c| c == 131056);
    // A status says nothing of whether the Graph API serves now.
    let at = crate::dispatch::after_failure(m, &err, now, dispatch, pair_strikes, false);
    if let Some(last) = m.history.last_mut() {
        last.detail = format!("{}{}", crate::dispatch::FAILED_STATUS_PREFIX, last.detail);
    }
    Some(at)
}

/// The `delivered` a `read` status implied on the way (history: `delivered` "implied by a read
/// status", then `read`), as its own event: a consumer following events sees every state.
fn implied_delivery(m: &Message, target: Target) -> Option<Message> {
    if !matches!(target, Target::Read { .. }) {
        return None;
    }
    let [.., delivered, _] = m.history.as_slice() else {
        return None;
    };
    if delivered.state != State::Delivered || delivered.detail != "implied by a read status" {
        return None;
    }
    let mut at_delivery = m.clone();
    at_delivery.state = State::Delivered;
    at_delivery.updated_at_ms = delivered.at_ms;
    Some(at_delivery)
}

/// Moves `m` as `st` says, if that is forward. Returns the history detail of the change.
fn advance(m: &mut Message, target: Target, st: &Status, now: u64) -> Option<String> {
    // The status's own time, but not ahead of ours (Meta's clock, or a bad timestamp, would
    // otherwise date the change in the future and keep the message from retention that
    // long), and history never runs backwards (Meta's timestamps are whole seconds; our
    // `sent` has milliseconds).
    let at = st
        .timestamp
        .map(|s| s.saturating_mul(1000))
        .unwrap_or(now)
        .min(now)
        .max(m.updated_at_ms);
    match target {
        Target::Failed => {
            // Delivered/read win over a late failure; a failure is recorded once.
            if m.state != State::Sent {
                return None;
            }
            let (last_error, detail) = match st.errors.first() {
                Some(e) => (
                    failure(e),
                    format!("status webhook: failed: {}", e.describe()),
                ),
                None => (
                    LastError {
                        code: "meta_failed".into(),
                        message: "Meta reported the message failed without giving a reason".into(),
                        meta_code: None,
                    },
                    "status webhook: failed".to_string(),
                ),
            };
            m.last_error = Some(last_error);
            m.transition(State::Failed, at, detail.clone());
            Some(detail)
        }
        _ => {
            let current = rank(m.state)?;
            let (state, new_rank, detail) = match target {
                Target::Sent => (State::Sent, 1, "status webhook: sent"),
                Target::Delivered => (State::Delivered, 2, "status webhook: delivered"),
                Target::Read { played: false } => (State::Read, 3, "status webhook: read"),
                Target::Read { played: true } => (State::Read, 3, "status webhook: played"),
                Target::Failed => return None,
            };
            if new_rank <= current {
                return None;
            }
            if state == State::Read && current < 2 {
                // Meta may skip `delivered` when the message is read at once.
                m.transition(State::Delivered, at, "implied by a read status");
            }
            m.transition(state, at, detail);
            Some(detail.to_string())
        }
    }
}

fn failure(e: &MetaError) -> LastError {
    LastError {
        code: match e.code {
            Some(c) => format!("meta_{c}"),
            None => "meta_failed".into(),
        },
        message: e.describe(),
        meta_code: e.code,
    }
}

/// Inbound message ids seen lately, bounded (oldest forgotten first).
#[derive(Debug, Default)]
pub(crate) struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    const CAPACITY: usize = 8192;

    fn contains(&self, k: &str) -> bool {
        self.set.contains(k)
    }

    fn insert(&mut self, k: String) {
        if self.set.insert(k.clone()) {
            self.order.push_back(k);
            while self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Priority;

    fn msg(state: State) -> Message {
        Message {
            id: 1,
            sender: "main".into(),
            to: "16505551234".into(),
            kind: "text".into(),
            priority: Priority::Normal,
            state,
            body: "{}".into(),
            fallback_template: None,
            idempotency_key: None,
            metadata: None,
            created_at_ms: 1_000,
            updated_at_ms: 2_000,
            next_attempt_at_ms: 0,
            expires_at_ms: None,
            attempts: 1,
            wamid: Some("wamid.A".into()),
            substituted_template: None,
            last_error: None,
            history: vec![],
        }
    }

    fn status(kind: &str, ts: u64) -> Status {
        Status::parse(&json!({"id":"wamid.A","status":kind,"timestamp":ts.to_string()})).unwrap()
    }

    fn go(m: &mut Message, kind: &str, ts: u64) -> Option<String> {
        advance(
            m,
            Target::parse(kind).unwrap(),
            &status(kind, ts),
            99_000_000,
        )
    }

    #[test]
    fn monotonic_and_read_implies_delivered() {
        let mut m = msg(State::Sent);
        assert!(go(&mut m, "sent", 10).is_none());
        assert!(go(&mut m, "read", 20).is_some());
        assert_eq!(m.state, State::Read);
        let states: Vec<_> = m.history.iter().map(|h| h.state).collect();
        assert_eq!(states, vec![State::Delivered, State::Read]);
        assert_eq!(m.updated_at_ms, 20_000);
        assert!(go(&mut m, "delivered", 15).is_none());
        assert!(go(&mut m, "read", 20).is_none());
        assert!(go(&mut m, "played", 21).is_none());
        assert!(go(&mut m, "failed", 22).is_none());
        assert_eq!(m.state, State::Read);
        assert_eq!(m.history.len(), 2);
    }

    #[test]
    fn a_status_from_the_future_is_dated_now() {
        let mut m = msg(State::Sent);
        // `go` applies at 99,000 s; the status claims 10^7 s.
        assert!(go(&mut m, "delivered", 10_000_000).is_some());
        assert_eq!(m.updated_at_ms, 99_000_000);
        assert_eq!(m.history.last().map(|h| h.at_ms), Some(99_000_000));
    }

    #[test]
    fn failed_only_from_sent_and_times_never_go_back() {
        let mut m = msg(State::Sent);
        let st = Status::parse(&json!({"id":"wamid.A","status":"failed","timestamp":"1",
            "errors":[{"code":131047,"title":"Re-engagement message",
            "error_data":{"details":"More than 24 hours have passed"}}]}))
        .unwrap();
        assert!(advance(&mut m, Target::Failed, &st, 5_000).is_some());
        assert_eq!(m.state, State::Failed);
        // The status said 1 s, but the message was last updated at 2 s.
        assert_eq!(m.updated_at_ms, 2_000);
        let e = m.last_error.clone().unwrap();
        assert_eq!(e.code, "meta_131047");
        assert_eq!(e.meta_code, Some(131047));
        assert_eq!(
            e.message,
            "Re-engagement message: More than 24 hours have passed"
        );
        assert!(advance(&mut m, Target::Failed, &st, 5_000).is_none());
        assert!(go(&mut m, "delivered", 3).is_none());
        assert_eq!(m.history.len(), 1);

        let mut d = msg(State::Delivered);
        assert!(advance(&mut d, Target::Failed, &st, 5_000).is_none());
        assert_eq!(d.state, State::Delivered);
    }

    #[test]
    fn recent_ids_are_bounded() {
        let mut r = RecentIds::default();
        for i in 0..(RecentIds::CAPACITY + 10) {
            r.insert(i.to_string());
        }
        assert!(!r.contains("0"));
        assert!(r.contains(&(RecentIds::CAPACITY + 9).to_string()));
        assert_eq!(r.set.len(), RecentIds::CAPACITY);
    }
}
