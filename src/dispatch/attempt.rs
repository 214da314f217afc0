//! One attempt at one message: the checks made just before the request (cancelled? expired?
//! window open?), the request itself, and the outcome written to the store.
//!
//! Invariant: the `sending` state is written before the request goes out, and every outcome is
//! written before the lane moves on.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::cloud::{CloudClient, CloudError, ErrorClass, SendOutcome};
use crate::config::{Config, DispatchConfig, RestartPolicy};
use crate::log_every::LogEvery;
use crate::metrics::Metrics;
use crate::model::{now_ms, LastError, Message, State};
use crate::window;

use super::backoff;
use super::messaging_limit::{Admission, MessagingLimits};
use super::queue::Outcome;

/// What the sender's schedule must do after an attempt, beyond the lane's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderEffect {
    None,
    /// Meta asked to slow the whole number down (130429, 131057, or a bare 429), or the whole
    /// app or business account (4, 17, 32, 613, 80000-80014: `app_wide`).
    Throttle {
        app_wide: bool,
    },
    /// An account or token error: stop this sender until resumed. `answered`: Meta (or
    /// something at `api.base_url`) answered, rather than the request failing before it left.
    Pause {
        reason: String,
        answered: bool,
    },
    /// No answer at all (connection refused or reset, timed out), or an outage answer (503,
    /// code 2, 131016, a gateway's 500/502/504, a 5xx with code 1 or 131000:
    /// `CloudError::is_outage_answer`): it may be out of reach or down. The error's message.
    Unreachable(String),
}

/// The message as it will be sent, decided under the record's lock.
enum Prepared {
    Send {
        body: String,
    },
    /// Ended without a request (expired, window closed, interrupted); already written.
    Finished(&'static str),
    /// Held by the messaging limit until `until_ms`, without a request (already written).
    Held {
        until_ms: u64,
    },
}

/// How the history entry of a send held by the messaging limit begins.
pub(crate) const HELD_PREFIX: &str = "held: ";

/// Codes after which Meta asks to wait long before trying again.
fn long_wait(code: Option<i64>) -> Duration {
    match code {
        Some(131049) => Duration::from_secs(24 * 3600),
        _ => Duration::from_secs(3600),
    }
}

/// A Meta code that says to slow down (`cloud::is_throttle_code`).
pub(crate) fn is_throttle(code: Option<i64>) -> bool {
    code.is_some_and(crate::cloud::is_throttle_code)
}

/// Throttles Meta counts across the app or the business account, not per number
/// (`cloud::is_app_wide_throttle_code`).
pub(crate) fn is_app_wide_throttle(code: Option<i64>) -> bool {
    code.is_some_and(crate::cloud::is_app_wide_throttle_code)
}

/// The code names (`meta_130429`, `http_429`, ...) of the failures that scheduled `m`'s
/// retries so far (its history's `<code>; retry in …` entries, after an answer or a `failed`
/// status).
fn retry_codes(m: &Message) -> impl Iterator<Item = &str> {
    m.history
        .iter()
        .filter(|h| h.state == State::Retrying)
        .filter_map(|h| {
            let detail = h
                .detail
                .strip_prefix(FAILED_STATUS_PREFIX)
                .unwrap_or(&h.detail);
            Some(detail.split_once(';')?.0)
        })
}

/// The retries of `m` so far that a Meta code matching `code` scheduled.
pub(crate) fn retries_after(m: &Message, code: impl Fn(i64) -> bool) -> u32 {
    retry_codes(m)
        .filter_map(|c| c.strip_prefix("meta_")?.parse().ok())
        .filter(|c| code(*c))
        .count() as u32
}

/// The retries of `m` so far that a throttle scheduled: Meta's codes, and bare 429s.
fn throttled_retries(m: &Message) -> u32 {
    retries_after(m, crate::cloud::is_throttle_code)
        + retry_codes(m).filter(|c| *c == "http_429").count() as u32
}

/// How the history entry of a change made by a `failed` status webhook begins.
pub(crate) const FAILED_STATUS_PREFIX: &str = "status webhook: failed: ";

pub struct AttemptInput<'a> {
    pub app: &'a Arc<App>,
    pub config: &'a Config,
    pub cloud: &'a CloudClient,
    pub sender: &'a str,
    pub phone_number_id: &'a str,
    pub token: &'a str,
    pub id: u64,
    pub to: &'a str,
    /// The sender's `messaging_limit` and portfolio, and the portfolios' counts.
    pub messaging_limit: Option<u32>,
    pub portfolio: &'a str,
    pub limits: &'a MessagingLimits,
    /// Consecutive 131056 answers in this lane before this attempt.
    pub pair_strikes: u32,
    /// Dropped when the request is handed to the HTTP client (or the attempt ends without one).
    pub on_wire: Option<super::sender::OnWire>,
    /// The sender's gate at the moment the request leaves: `None` takes a slot in the
    /// sender's window of departures, `Some(wait)` says how long until one is free.
    pub pace: &'a (dyn Fn() -> Option<Duration> + Send + Sync),
    /// Whether one more failure for want of the Graph API would make the sender's run of them
    /// an outage (`Reach::outage_with_one_more`): then an outage answer does not use up
    /// `max_attempts`.
    pub in_outage: &'a (dyn Fn() -> bool + Send + Sync),
}

pub async fn run(mut input: AttemptInput<'_>) -> (Outcome, SenderEffect) {
    let app = input.app;
    let d = &input.config.dispatch;
    let now = now_ms();
    let policy = d.on_restart_sending;
    let max_age_ms = d.max_age.as_millis() as u64;
    // Read only for a free-form message: a template goes out whatever the window says.
    let mut window_error = None;
    let window_open = || match window::lookup(&app.store, input.sender, input.to) {
        Ok(w) => Some(w.is_open(now, d.window_margin.as_millis() as u64)),
        Err(e) => {
            window_error = Some(e);
            None
        }
    };
    // Whether the send reaches its user outside the window, when the sender counts them for
    // Meta's messaging limit (`known_outside` is `None` for a template: look it up).
    let mut reach_error = None;
    let mut newly_counted = false;
    let admit = |known_outside: Option<bool>| {
        let Some(limit) = input.messaging_limit else {
            return Some(Admission::NotCounted);
        };
        let outside = match known_outside {
            Some(outside) => outside,
            None => match window::lookup(&app.store, input.sender, input.to) {
                Ok(w) => !w.is_open(now, d.window_margin.as_millis() as u64),
                Err(e) => {
                    reach_error = Some(e);
                    return None;
                }
            },
        };
        if !outside {
            return Some(Admission::NotCounted);
        }
        match input
            .limits
            .admit(&app.store, input.portfolio, limit, input.to, now)
        {
            Ok(admission) => {
                newly_counted = admission == (Admission::Counted { newly: true });
                Some(admission)
            }
            Err(e) => {
                reach_error = Some(e);
                None
            }
        }
    };
    let prepared = app.store.update(input.id, |m| {
        prepare(m, now, window_open, admit, policy, max_age_ms)
    });
    // Taken back if no request reaches the user after all.
    let counted_at = newly_counted.then_some(now);
    let take_back = || {
        if let Some(at) = counted_at {
            input
                .limits
                .take_back(&app.store, input.portfolio, input.to, at);
        }
    };
    let store_error = match (window_error, reach_error) {
        (Some(e), _) => Some(("cannot read the recipient window", e)),
        (None, Some(e)) => Some(("cannot count the user for the messaging limit", e)),
        (None, None) => None,
    };
    if let Some((what, e)) = store_error {
        take_back();
        return retry_after_store_error(input, now, what, &e);
    }
    let body = match prepared {
        Ok(Some((Prepared::Send { body }, m))) => {
            if m.substituted_template.is_some() {
                Metrics::inc(&app.metrics.fallback_substituted);
            }
            // `sending` must be on disk before the request leaves: a crash after the request
            // then finds the message `sending` and `on_restart_sending` decides. Without this
            // commit a crash could take the unflushed `sending` with it and the message would
            // be sent again as if it had never been tried. Concurrent attempts share the fsync.
            if let Err(e) = app.store.commit_patient().await {
                undo_sending(app, input.id);
                take_back();
                let what = "cannot commit `sending` before the request";
                return retry_after_store_error(input, now, what, &e);
            }
            // The loop took this request's rate slot when it picked the message; the commit
            // above may have held it since, and requests held together must not leave
            // together: the mps counts when they reach Meta.
            while let Some(wait) = (input.pace)() {
                tokio::time::sleep(wait).await;
            }
            app.publish_state(&m, "sending");
            body
        }
        Ok(Some((Prepared::Finished(detail), m))) => {
            if m.last_error
                .as_ref()
                .is_some_and(|e| e.code == "window_closed")
            {
                Metrics::inc(&app.metrics.window_closed_failures);
            }
            app.publish_state(&m, detail);
            return (Outcome::DoneWithoutRequest, SenderEffect::None);
        }
        Ok(Some((Prepared::Held { until_ms }, m))) => {
            Metrics::inc(&app.metrics.messaging_limit_holds);
            app.publish_state(&m, "held by the messaging limit");
            return (Outcome::Held { at_ms: until_ms }, SenderEffect::None);
        }
        Ok(None) => return (Outcome::DoneWithoutRequest, SenderEffect::None),
        Err(e) => {
            take_back();
            let what = "cannot update the message before sending";
            return retry_after_store_error(input, now, what, &e);
        }
    };

    Metrics::inc(&app.metrics.sends_attempted);
    drop(input.on_wire.take());
    // Boxed: the request's future is most of an attempt's, and the task's future is moved
    // whole when it is spawned and when it finishes.
    let outcome = Box::pin(
        input
            .cloud
            .send(input.phone_number_id, input.token, input.to, &body),
    )
    .await;
    let now = now_ms();
    match outcome {
        SendOutcome::Accepted { wamid, wa_id } => {
            Metrics::inc(&app.metrics.sends_accepted);
            if let Err(e) = app.store.set_wamid(&wamid, input.id) {
                tracing::error!(id = input.id, "cannot record the wamid: {e}");
            }
            // Inbound messages will come from the wa_id, not from the number as dialled
            // (a no-op without a write when the two are the same, as they almost always are).
            if let Some(wa_id) = wa_id.as_deref() {
                match app.store.learn_wa_id(input.sender, input.to, wa_id) {
                    Ok(true) => tracing::info!(
                        sender = input.sender,
                        to = input.to,
                        wa_id,
                        "Meta knows this number under another wa_id; its inbound messages will open this number's window"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::error!(id = input.id, "cannot record the wa_id alias: {e}"),
                }
            }
            let written = app.store.update(input.id, |m| {
                m.wamid = Some(wamid.clone());
                m.last_error = None;
                if m.state == State::Sending {
                    m.transition(
                        State::Sent,
                        now,
                        format!("{}{wamid}", crate::model::ACCEPTED_AS),
                    );
                }
                Some(())
            });
            if let Ok(Some((_, m))) = written {
                app.publish_state(&m, "accepted by Meta");
            }
            (Outcome::Done, SenderEffect::None)
        }
        SendOutcome::Failed(err) => {
            // Meta refused it, or it never left: it reached nobody. (A timeout or a 5xx may
            // have been a send: it stays counted.)
            if err.never_sent() || err.http_status.is_some_and(|s| (400..500).contains(&s)) {
                take_back();
            }
            record_failure(input, err, now)
        }
    }
}

/// Decides, under the record's lock, what this attempt sends — or why it sends nothing.
/// `window_open` reads the recipient's window (`None`: it could not be read, and the record
/// is left as it was).
fn prepare(
    m: &mut Message,
    now: u64,
    window_open: impl FnOnce() -> Option<bool>,
    admit: impl FnOnce(Option<bool>) -> Option<Admission>,
    policy: RestartPolicy,
    max_age_ms: u64,
) -> Option<Prepared> {
    match m.state {
        State::Queued | State::Retrying => {}
        // Found `sending` at start: the daemon stopped mid-request.
        State::Sending if policy == RestartPolicy::Fail => {
            m.last_error = Some(LastError {
                code: "interrupted".into(),
                message: "the daemon stopped while this message was being sent; it may or may not have reached Meta (on_restart_sending = \"fail\")".into(),
                meta_code: None,
            });
            m.transition(State::Failed, now, "interrupted");
            return Some(Prepared::Finished("interrupted"));
        }
        State::Sending => {}
        // Cancelled, or no longer pending: nothing to do, nothing to write.
        _ => return None,
    }
    // A new attempt: an earlier one's wamid (kept in its history) no longer says what became
    // of the message, and its late statuses must not move it.
    m.wamid = None;
    if m.expires_at_ms.is_some_and(|e| e <= now) {
        m.expire(now);
        return Some(Prepared::Finished("expired"));
    }
    // A message with its own `ttl_s` lives by that alone.
    if m.expires_at_ms.is_none() && now.saturating_sub(m.age_base_ms()) > max_age_ms {
        m.last_error = Some(LastError {
            code: "max_age_exceeded".into(),
            message: "not sent within dispatch.max_age_s of falling due (its enqueue, or its send_at); give the message a ttl_s to set its own limit".into(),
            meta_code: None,
        });
        m.transition(
            State::Failed,
            now,
            "max_age_exceeded: not sent within dispatch.max_age_s of falling due",
        );
        return Some(Prepared::Finished("max_age_exceeded"));
    }
    let template = m.kind == "template";
    let window_closed = !template && !window_open()?;
    if window_closed && m.fallback_template.is_none() {
        m.last_error = Some(LastError {
            code: "window_closed".into(),
            message: "the recipient's 24-hour window is closed and the message has no fallback_template; no request was made".into(),
            meta_code: None,
        });
        m.transition(State::Failed, now, "window_closed");
        return Some(Prepared::Finished("window_closed"));
    }
    // A template's window is looked up only when the messaging limit needs it.
    let known_outside = (!template).then_some(window_closed);
    if let Admission::Held { until_ms } = admit(known_outside)? {
        m.next_attempt_at_ms = until_ms;
        let detail = format!(
            "{HELD_PREFIX}the portfolio has reached its messaging_limit of unique users outside a window in 24 h, next try at {}",
            crate::model::format_time(until_ms)
        );
        let held_before = m
            .history
            .last()
            .is_some_and(|h| h.detail.starts_with(HELD_PREFIX));
        // `retrying`: its lane waits until then, also after a restart. A message held again
        // keeps one entry for the whole wait.
        if m.state == State::Retrying && held_before {
            m.updated_at_ms = now;
        } else {
            m.transition(State::Retrying, now, detail);
        }
        return Some(Prepared::Held { until_ms });
    }
    let body = if window_closed {
        let fallback = m.fallback_template.as_deref().unwrap_or_default();
        let name = serde_json::from_str::<serde_json::Value>(fallback)
            .ok()
            .and_then(|v| v["name"].as_str().map(str::to_string))
            .unwrap_or_default();
        let body = fallback_body(&m.body, fallback);
        m.substituted_template = Some(name);
        body
    } else {
        m.substituted_template = None;
        m.body.clone()
    };
    m.attempts += 1;
    let detail = if m.substituted_template.is_some() {
        "sending fallback template (window closed)"
    } else {
        "sending"
    };
    m.transition(State::Sending, now, detail);
    Some(Prepared::Send { body })
}

/// Whether `m`, just refused as free-form, has a fallback template that a closed window sends.
pub(crate) fn fallback_would_go(m: &Message) -> bool {
    m.kind != "template" && m.substituted_template.is_none() && m.fallback_template.is_some()
}

/// `{"type":"template","template":<fallback>}`, keeping the original's `biz_opaque_callback_data`
/// (status webhooks echo it) and `context`.
fn fallback_body(original: &str, fallback: &str) -> String {
    let mut out = format!("{{\"type\":\"template\",\"template\":{fallback}");
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(original) {
        for key in ["biz_opaque_callback_data", "context"] {
            if let Some(x) = v.get(key) {
                out.push_str(&format!(",\"{key}\":{x}"));
            }
        }
    }
    out.push('}');
    out
}

/// Takes back a `sending` that could not be committed: no request was made, so the message
/// returns to the state it had (and a restart does not take it for an interrupted send).
fn undo_sending(app: &App, id: u64) {
    let undone = app.store.update(id, |m| {
        if m.state != State::Sending || m.history.len() < 2 {
            return None;
        }
        m.history.pop();
        m.state = m.history.last().map(|h| h.state)?;
        m.attempts = m.attempts.saturating_sub(1);
        Some(())
    });
    if let Err(e) = undone {
        tracing::error!(id, "cannot take back `sending`: {e}");
    }
}

/// The store refusing writes (a full disk) refuses every message alike: one line per period
/// says so, with how many attempts it stopped (`times`), rather than one per attempt.
static STORE_REFUSED: LogEvery = LogEvery::new(Duration::from_secs(10));

/// How long a message the store could not update waits before it is tried again: a store that
/// refuses writes reopens at most this often, so sooner would only be refused again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// The store failed the attempt before its request (`what`, then the error): logged as
/// `STORE_REFUSED` allows, and tried again once the store may take writes.
fn retry_after_store_error(
    input: AttemptInput<'_>,
    now: u64,
    what: &str,
    e: &dyn std::fmt::Display,
) -> (Outcome, SenderEffect) {
    if let Some(times) = STORE_REFUSED.due() {
        tracing::error!(id = input.id, times, "{what}: {e}");
    }
    let wait = input.config.dispatch.retry_min.max(STORE_RETRY);
    (
        Outcome::RetryUnsent {
            at_ms: now + wait.as_millis() as u64,
        },
        SenderEffect::None,
    )
}

fn record_failure(input: AttemptInput<'_>, err: CloudError, now: u64) -> (Outcome, SenderEffect) {
    let app = input.app;
    let d = &input.config.dispatch;
    let last_error = LastError {
        code: err.code_name(),
        message: err.full_message(),
        meta_code: err.meta_code,
    };
    if err.class == ErrorClass::PauseSender {
        let reason = format!("{}: {}", err.code_name(), err.full_message());
        let written = app.store.update(input.id, |m| {
            // Not the message's fault: give the attempt back and wait for the sender.
            m.attempts = m.attempts.saturating_sub(1);
            m.last_error = Some(last_error.clone());
            m.transition(
                State::Queued,
                now,
                format!("sender paused ({})", err.code_name()),
            );
            Some(())
        });
        if let Ok(Some((_, m))) = written {
            app.publish_state(&m, "sender paused");
        }
        let answered = err.http_status.is_some() || err.meta_code.is_some();
        return (Outcome::Requeue, SenderEffect::Pause { reason, answered });
    }

    let window_closed = err.meta_code == Some(131047);
    let pair_limited = err.meta_code == Some(131056);
    // Meta's 4^X s for the recipient, whatever becomes of this message.
    let pair_pause =
        pair_limited.then(|| now + backoff::pair_backoff(input.pair_strikes).as_millis() as u64);
    // The message has left the queue; Meta's pause stays with its recipient.
    let ended = || match pair_pause {
        Some(at_ms) => Outcome::PairLimitedEnded { at_ms },
        None => Outcome::Done,
    };
    // Only answers: a timeout may have been a send, and its retries stay bounded by
    // max_attempts.
    let outage = err.is_outage_answer() && (input.in_outage)();
    let written = app.store.update(input.id, |m| {
        Some(after_failure(m, &err, now, d, input.pair_strikes, outage))
    });
    if window_closed {
        if let Ok(Some((_, m))) = &written {
            window::forget_after_131047(&app.store, m, None);
        }
    }
    let effect = if err.throttled() {
        SenderEffect::Throttle {
            app_wide: err.app_wide_throttle(),
        }
    } else if err.is_unavailable() {
        SenderEffect::Unreachable(err.full_message())
    } else {
        SenderEffect::None
    };
    match written {
        Ok(Some((Some(at), m))) => {
            Metrics::inc(&app.metrics.sends_failed_transient);
            Metrics::inc(&app.metrics.retries_scheduled);
            app.publish_state(&m, "retrying");
            let outcome = if pair_limited {
                Outcome::PairLimited { at_ms: at }
            } else if err.never_sent() {
                Outcome::RetryUnsent { at_ms: at }
            } else {
                Outcome::Retry { at_ms: at }
            };
            (outcome, effect)
        }
        Ok(Some((None, m))) => {
            // The request's failure is counted by its class: a 5xx that used up the last
            // attempt is still a transient failure of Meta's, though it ends the message.
            match err.class {
                ErrorClass::Permanent => Metrics::inc(&app.metrics.sends_failed_permanent),
                _ => Metrics::inc(&app.metrics.sends_failed_transient),
            }
            app.publish_state(&m, &err.code_name());
            (ended(), effect)
        }
        Ok(None) => (ended(), effect),
        Err(e) => {
            tracing::error!(id = input.id, "cannot record the outcome of a send: {e}");
            let outcome = match pair_pause {
                // Not written, so tried again: after Meta's pause, not sooner.
                Some(at_ms) => Outcome::PairLimited { at_ms },
                None => Outcome::Retry {
                    at_ms: now + d.retry_min.as_millis() as u64,
                },
            };
            (outcome, effect)
        }
    }
}

/// What a failed send of `m` comes to, decided under its record's lock: `Some(at)` to try again
/// at `at` (`m` is then `retrying`), `None` when it ended (`failed` or `expired`). For an error
/// in Meta's answer and for a `failed` status webhook alike.
///
/// `outage`: this request got an outage answer (`CloudError::is_outage_answer`) that makes
/// the sender's run of failures for want of the Graph API 3 or more long (`reach`). Its
/// attempts still count (the backoff grows with them), but `max_attempts` does not end the
/// message while that lasts: an outage of Meta's would otherwise fail every message it
/// outlasts, though none was at fault. Only `ttl_s` and `dispatch.max_age_s` do.
///
/// A throttle (`CloudError::throttled`) and 131056 give their attempt back, so only `ttl_s` and
/// `dispatch.max_age_s` end their retries too. A `Retry-After` (429, 503) is the least wait,
/// up to `dispatch.retry_max_ms`.
pub(crate) fn after_failure(
    m: &mut Message,
    err: &CloudError,
    now: u64,
    d: &DispatchConfig,
    pair_strikes: u32,
    outage: bool,
) -> Option<u64> {
    let pair_limited = err.meta_code == Some(131056);
    let delay = match err.class {
        ErrorClass::Permanent => None,
        ErrorClass::LongWait => Some(long_wait(err.meta_code)),
        ErrorClass::Transient if pair_limited => Some(backoff::pair_backoff(pair_strikes)),
        _ => None,
    };
    let window_closed = err.meta_code == Some(131047);
    let rate_limited = pair_limited || err.throttled();
    // No connection could be made (Meta out of reach, a network down): the request never
    // left, so the attempt is given back and only time (ttl, max_age) ends the retries. Its
    // `sending` entry is taken back too, and a run of such retries is two history entries (its
    // first, and its latest with the count), or an outage would add two entries per retry for
    // as long as it lasts.
    let never_sent = err.never_sent();
    let mut unsent_in_a_row = 0;
    if never_sent {
        if m.history.last().is_some_and(|h| h.state == State::Sending) {
            m.history.pop();
        }
        let unsent = |h: Option<&crate::model::HistoryEntry>| {
            h.filter(|h| h.state == State::Retrying)
                .and_then(|h| unsent_retries(&h.detail))
        };
        if let Some(n) = unsent(m.history.last()) {
            unsent_in_a_row = n;
            // The run's first entry stays, with its time: `dispatch.max_age_s` counts from it
            // (`Message::age_base_ms`). Only the latest is replaced.
            if n > 1 {
                m.history.pop();
            }
        }
        unsent_in_a_row += 1;
    }
    m.last_error = Some(LastError {
        code: err.code_name(),
        message: err.full_message(),
        meta_code: err.meta_code,
    });
    if window_closed && m.attempts < d.max_attempts && fallback_would_go(m) {
        // Meta says the window is closed (the caller forgets it before the schedule hears
        // of this): the next attempt sends the fallback template.
        m.next_attempt_at_ms = now;
        m.transition(
            State::Retrying,
            now,
            format!(
                "{}; window closed: the next attempt sends the fallback template, unless the \
                 customer has written since",
                err.code_name()
            ),
        );
        return Some(now);
    }
    if err.class == ErrorClass::Permanent {
        m.transition(State::Failed, now, err.code_name());
        return None;
    }
    let backoff = delay.unwrap_or_else(|| {
        // A throttle gives its attempt back, so the attempts do not grow the delay: the
        // throttles this message met do, or throttled messages would all retry in lockstep
        // after `retry_min`.
        let tries = match (rate_limited, never_sent) {
            (true, _) => m.attempts + throttled_retries(m) + 1,
            // The unsent requests gave their attempts back: they count for the backoff.
            (false, true) => m.attempts + unsent_in_a_row,
            (false, false) => m.attempts,
        };
        backoff::delay(tries, d.retry_min, d.retry_max)
    });
    // The server's own word on when to come back, capped so that a proxy's "in a day" cannot
    // hold a message longer than any backoff of waq's would.
    let asked = err.retry_after.map(|r| r.min(d.retry_max));
    let wait = backoff.max(asked.unwrap_or_default());
    let retry_after_note = match asked {
        Some(a) if a >= backoff => " (Retry-After)",
        _ => "",
    };
    let at = now + wait.as_millis() as u64;
    if rate_limited || never_sent {
        // Meta's rate limits are the number's or the pair's, not this message's fault, and an
        // unsent request is no attempt at all: the attempt is given back, and only time (ttl,
        // max_age) ends the retries.
        m.attempts = m.attempts.saturating_sub(1);
    } else if m.attempts >= d.max_attempts && !outage {
        m.transition(
            State::Failed,
            now,
            format!("{} after {} attempts", err.code_name(), m.attempts),
        );
        return None;
    }
    if m.expires_at_ms.is_some_and(|e| e <= at) {
        m.transition(
            State::Expired,
            now,
            format!(
                "{}; the next attempt (in {} ms) would be past its ttl",
                err.code_name(),
                wait.as_millis()
            ),
        );
        return None;
    }
    if m.expires_at_ms.is_none()
        && at.saturating_sub(m.age_base_ms()) > d.max_age.as_millis() as u64
    {
        m.transition(
            State::Failed,
            now,
            format!(
                "{}; the next attempt (in {} ms) would be past dispatch.max_age_s",
                err.code_name(),
                wait.as_millis()
            ),
        );
        return None;
    }
    m.next_attempt_at_ms = at;
    let detail = match never_sent {
        true => format!(
            "{}; {UNSENT}{unsent_in_a_row} in a row), retry in {} ms",
            err.code_name(),
            wait.as_millis()
        ),
        false if outage && m.attempts >= d.max_attempts => format!(
            "{}; retry in {} ms{retry_after_note} (attempt {}; max_attempts, {}, waits while the \
             Graph API is unavailable: ttl_s or dispatch.max_age_s end the retries)",
            err.code_name(),
            wait.as_millis(),
            m.attempts,
            d.max_attempts
        ),
        false => format!(
            "{}; retry in {} ms{retry_after_note}",
            err.code_name(),
            wait.as_millis()
        ),
    };
    m.transition(State::Retrying, now, detail);
    Some(at)
}

/// How a retry entry of requests that never left says how many there were in a row.
const UNSENT: &str = "not sent (";

/// The count of unsent requests in a row that a retry entry records, if it is one.
fn unsent_retries(detail: &str) -> Option<u32> {
    let (_, rest) = detail.split_once(UNSENT)?;
    rest.split_once(' ')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HistoryEntry, Priority};

    /// The admission of a sender without a messaging limit.
    fn not_counted(_: Option<bool>) -> Option<Admission> {
        Some(Admission::NotCounted)
    }

    /// A free-form text sent once (as `wamid.OLD`), then failed by a status webhook.
    fn failed_after_a_send() -> Message {
        let entry = |at_ms, state, detail: &str| HistoryEntry {
            at_ms,
            state,
            detail: detail.into(),
        };
        Message {
            id: 1,
            sender: "main".into(),
            to: "14155551234".into(),
            kind: "text".into(),
            priority: Priority::Normal,
            state: State::Failed,
            body: r#"{"type":"text","text":{"body":"hi"}}"#.into(),
            fallback_template: None,
            idempotency_key: None,
            metadata: None,
            created_at_ms: 1_000,
            updated_at_ms: 3_000,
            next_attempt_at_ms: 1_000,
            expires_at_ms: None,
            attempts: 1,
            wamid: Some("wamid.OLD".into()),
            substituted_template: None,
            last_error: None,
            history: vec![
                entry(1_000, State::Queued, "queued"),
                entry(2_000, State::Sending, "sending"),
                entry(2_100, State::Sent, "accepted by Meta as wamid.OLD"),
                entry(3_000, State::Failed, "status webhook: failed: meta_131047"),
            ],
        }
    }

    #[test]
    fn retries_of_requests_that_never_left_keep_the_history_short() {
        let cfg = crate::config::Config::from_toml(
            "[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let d = &cfg.dispatch;
        let mut m = failed_after_a_send();
        m.attempts = 0;
        m.transition(State::Queued, 4_000, "retry requested");
        let refused = CloudError::not_connected("Connection refused");
        let mut now = 5_000;
        for n in 1..=5 {
            // As `prepare` does before each request.
            m.attempts += 1;
            m.transition(State::Sending, now, "sending");
            let at = after_failure(&mut m, &refused, now, d, 0, false).expect("retried");
            assert_eq!(m.state, State::Retrying);
            assert_eq!(m.attempts, 0, "no attempt used");
            let last = m.history.last().unwrap();
            assert!(
                last.detail
                    .starts_with(&format!("connection; not sent ({n} in a row), retry in")),
                "{}",
                last.detail
            );
            now = at;
        }
        // The retry requested, then two entries for the five, the first (whose time
        // max_age_s counts from) and the latest: no `sending` of a request that never left.
        let states: Vec<State> = m.history.iter().map(|h| h.state).collect();
        assert_eq!(
            &states[states.len() - 3..],
            &[State::Queued, State::Retrying, State::Retrying]
        );
        assert_eq!(m.history.len(), 7);
        assert!(
            m.history[5].detail.contains("(1 in a row)"),
            "{:?}",
            m.history
        );
        assert_eq!(m.age_base_ms(), m.history[5].at_ms);
        // A request that left and failed ends the run: its own entries are kept.
        m.attempts += 1;
        m.transition(State::Sending, now, "sending");
        let timeout = CloudError {
            message: "timed out after 10s".into(),
            ..CloudError::not_connected("x")
        };
        after_failure(&mut m, &timeout, now, d, 0, false).expect("retried");
        assert_eq!(m.attempts, 1);
        assert_eq!(m.history.len(), 9);
    }

    fn dispatch_config(extra: &str) -> DispatchConfig {
        crate::config::Config::from_toml(
            &format!(
                "[dispatch]\n{extra}\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\n"
            ),
            std::path::Path::new("."),
        )
        .unwrap()
        .dispatch
    }

    /// An answer with Meta's `code` (or none) and this HTTP status.
    fn answer(status: u16, code: Option<i64>) -> CloudError {
        CloudError {
            class: code.map_or(ErrorClass::Transient, crate::cloud::classify),
            meta_code: code,
            http_status: Some(status),
            message: "x".into(),
            details: None,
            retry_after: None,
        }
    }

    /// `m` retried after `err` at `now` as an attempt would: `sending`, then the failure.
    fn fail_once(
        m: &mut Message,
        err: &CloudError,
        now: u64,
        d: &DispatchConfig,
        outage: bool,
    ) -> Option<u64> {
        m.attempts += 1;
        m.transition(State::Sending, now, "sending");
        after_failure(m, err, now, d, 0, outage)
    }

    /// Meta's throttles (the Graph platform's 17, 32, 613 and 80000-80014, maintenance mode's
    /// 131057) and a bare 429 give their attempt back, however many come; only time ends them.
    #[test]
    fn throttles_give_their_attempt_back_until_the_ttl() {
        let d = dispatch_config("max_attempts = 1\nretry_min_ms = 1000\nretry_max_ms = 4000");
        for err in [
            answer(400, Some(4)),
            answer(400, Some(17)),
            answer(400, Some(32)),
            answer(400, Some(613)),
            answer(400, Some(80_000)),
            answer(400, Some(80_008)),
            answer(400, Some(80_014)),
            answer(400, Some(130429)),
            answer(400, Some(131057)),
            answer(429, None),
        ] {
            let mut m = failed_after_a_send();
            m.attempts = 0;
            m.transition(State::Queued, 4_000, "retry requested");
            m.expires_at_ms = Some(60_000);
            let mut now = 5_000;
            let mut retries = 0;
            while let Some(at) = fail_once(&mut m, &err, now, &d, false) {
                assert_eq!(m.attempts, 0, "{err}: the attempt was given back");
                assert!(at > now, "{err}");
                retries += 1;
                now = at;
                assert!(retries < 1_000, "{err}: no end");
            }
            assert_eq!(m.state, State::Expired, "{err}: {m:?}");
            // Waits of at most 4 s over the 55 s to the ttl.
            assert!(retries > 10, "{err}: {retries}");
        }
        // The same code is the message's own fault past 80014.
        assert_eq!(crate::cloud::classify(80_015), ErrorClass::Permanent);
    }

    /// Without a ttl_s, `dispatch.max_age_s` ends a throttle's retries.
    #[test]
    fn maintenance_mode_retries_end_at_max_age() {
        let d = dispatch_config("max_attempts = 1\nmax_age_s = 30\nretry_max_ms = 2000");
        let mut m = failed_after_a_send();
        m.attempts = 0;
        m.transition(State::Queued, 4_000, "retry requested");
        let mut now = 5_000;
        let err = answer(400, Some(131057));
        let mut retries = 0;
        while let Some(at) = fail_once(&mut m, &err, now, &d, false) {
            assert_eq!(m.attempts, 0);
            now = at;
            retries += 1;
            assert!(retries < 1_000, "no end");
        }
        assert_eq!(m.state, State::Failed);
        assert!(
            m.history.last().unwrap().detail.contains("max_age_s"),
            "{:?}",
            m.history
        );
    }

    /// A `Retry-After` is the least wait, up to `retry_max_ms`; a longer backoff stays.
    #[test]
    fn retry_after_is_the_least_wait_up_to_retry_max() {
        let d = dispatch_config("retry_min_ms = 100\nretry_max_ms = 60000");
        let with = |status, code, secs| CloudError {
            retry_after: Some(Duration::from_secs(secs)),
            ..answer(status, code)
        };
        for (err, least) in [
            (with(429, None, 7), 7_000),
            (with(503, Some(2), 3), 3_000),
            (with(503, None, 3_600), 60_000),
        ] {
            let mut m = failed_after_a_send();
            m.attempts = 0;
            m.transition(State::Queued, 4_000, "retry requested");
            let at = fail_once(&mut m, &err, 5_000, &d, false).expect("retried");
            assert_eq!(at - 5_000, least, "{err}");
            let detail = &m.history.last().unwrap().detail;
            assert!(detail.ends_with("ms (Retry-After)"), "{detail}");
        }
    }

    /// While the sender's requests meet an outage, its answers end no message by
    /// `max_attempts`; without one, the same answer does.
    #[test]
    fn outage_answers_wait_out_max_attempts_only_in_an_outage() {
        let d = dispatch_config("max_attempts = 2\nretry_min_ms = 10\nretry_max_ms = 20");
        for err in [
            answer(502, None),
            answer(504, None),
            answer(500, None),
            answer(503, None),
            answer(500, Some(131000)),
            answer(500, Some(1)),
        ] {
            assert!(err.is_outage_answer(), "{err}");
            let mut m = failed_after_a_send();
            m.attempts = 0;
            m.transition(State::Queued, 4_000, "retry requested");
            let mut now = 5_000;
            for _ in 0..5 {
                now = fail_once(&mut m, &err, now, &d, true).expect("waits");
            }
            assert_eq!((m.state, m.attempts), (State::Retrying, 5), "{err}");
            assert_eq!(fail_once(&mut m, &err, now, &d, false), None, "{err}");
            assert_eq!(m.state, State::Failed, "{err}");
        }
    }

    /// Requests that never left give their attempt back, and `dispatch.max_age_s` still ends
    /// their retries.
    #[test]
    fn unsent_retries_end_at_max_age() {
        let d = dispatch_config("max_age_s = 30\nretry_max_ms = 2000");
        let mut m = failed_after_a_send();
        m.attempts = 0;
        m.transition(State::Queued, 4_000, "retry requested");
        let refused = CloudError::not_connected("refused");
        let mut now = 5_000;
        for _ in 0..1_000 {
            let prepared = prepare(
                &mut m,
                now,
                || Some(true),
                not_counted,
                RestartPolicy::Resend,
                30_000,
            );
            if let Some(Prepared::Finished(why)) = prepared {
                assert_eq!(why, "max_age_exceeded");
                assert!(m.history.last().unwrap().detail.contains("max_age_s"));
                return;
            }
            match after_failure(&mut m, &refused, now, &d, 0, false) {
                Some(at) => now = at,
                None => {
                    assert_eq!(m.state, State::Failed);
                    assert!(m.history.last().unwrap().detail.contains("max_age_s"));
                    return;
                }
            }
            assert_eq!(m.attempts, 0);
        }
        panic!("no end: {:?}", m.history);
    }

    #[test]
    fn a_new_attempt_drops_the_earlier_attempts_wamid() {
        let max_age = 3_600_000;
        // Retried, and the window is still closed: it fails again without a request.
        let mut m = failed_after_a_send();
        m.transition(State::Queued, 4_000, "retry requested");
        let p = prepare(
            &mut m,
            5_000,
            || Some(false),
            not_counted,
            RestartPolicy::Resend,
            max_age,
        );
        assert!(matches!(p, Some(Prepared::Finished("window_closed"))));
        assert_eq!(m.wamid, None, "no request was made, so no wamid: {m:?}");
        assert!(m.history.iter().any(|h| h.detail.ends_with("wamid.OLD")));

        // Retried with the window open: it goes out, and the answer brings the new wamid.
        let mut m = failed_after_a_send();
        m.transition(State::Queued, 4_000, "retry requested");
        let p = prepare(
            &mut m,
            5_000,
            || Some(true),
            not_counted,
            RestartPolicy::Resend,
            max_age,
        );
        assert!(matches!(p, Some(Prepared::Send { .. })));
        assert_eq!((m.state, m.wamid.as_deref()), (State::Sending, None));

        // A message that is not pending keeps its wamid: nothing is attempted.
        let mut m = failed_after_a_send();
        assert!(prepare(
            &mut m,
            5_000,
            || Some(true),
            not_counted,
            RestartPolicy::Resend,
            max_age
        )
        .is_none());
        assert_eq!(m.wamid.as_deref(), Some("wamid.OLD"));
    }

    #[test]
    fn fallback_keeps_callback_data() {
        let b = fallback_body(
            r#"{"type":"text","text":{"body":"x"},"biz_opaque_callback_data":"seq:3"}"#,
            r#"{"name":"hello_world","language":{"code":"en_US"}}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["type"], "template");
        assert_eq!(v["template"]["name"], "hello_world");
        assert_eq!(v["biz_opaque_callback_data"], "seq:3");
    }
}
