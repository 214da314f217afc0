//! Messages: enqueue one, enqueue a batch, read one, list, cancel, retry.
//!
//! Every write answers only after `store.commit()` returned: a 2xx means it is on disk.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use crate::app::App;
use crate::borrowed_json::Json;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::{self, format_id, now_ms, HistoryEntry, Message, State as MsgState, ValidSend};
use crate::store::{Insert, StoreError};
use crate::{validate, window};

use super::extract::{NoBody, NoQuery, Param, Query};
use super::json::{self, read_body, Limit};
use super::recipients::resolve_sender;
use super::routes::Ctx;
use super::view;

/// The most items one batch may hold.
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// `GET /v1/messages`: default and largest page.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Records one list request may look at; a sparse filter then answers a short page with a
/// cursor instead of scanning the whole store in one request.
const SCAN_BUDGET: usize = 50_000;

/// A request ready to be written, or the replay of an earlier one.
enum Prepared {
    New(Box<Message>),
    /// A retained message holds the request's idempotency key, and the request failed a check
    /// that depends on the time or the window: it is answered as the duplicate it is.
    Replay {
        id: u64,
        state: MsgState,
    },
}

/// What writing one new message came to.
enum Outcome {
    Created(Box<Message>),
    /// An earlier message holds the idempotency key.
    Duplicate {
        id: u64,
        state: MsgState,
    },
}

// The hot handlers take the request whole: axum's `HeaderMap` extractor clones the headers.
pub async fn enqueue(State(ctx): State<Ctx>, request: Request) -> Result<Response, ApiError> {
    let app = &ctx.app;
    let (head, body) = request.into_parts();
    let result = enqueue_one(app, &head, body).await;
    if result.is_err() {
        Metrics::inc(&app.metrics.enqueue_rejected);
    }
    result
}

async fn enqueue_one(app: &Arc<App>, head: &Parts, body: Body) -> Result<Response, ApiError> {
    let refused = if app.is_shutting_down() {
        Some(json::shutting_down())
    } else {
        Query::parse(&head.method, &head.uri, &[]).err()
    };
    if let Some(e) = refused {
        // Read first, so that a client still writing the body reads the answer.
        json::Unneeded::of(&head.headers).discard(body).await;
        return Err(e);
    }
    let cfg = app.config();
    let bytes = read_body(&head.headers, body, Limit::request(&cfg, &app.bodies)).await?;
    let request = json::parse_borrowed(&bytes)?;
    let generation = app.store.generation();
    let outcome = match prepare(app, &cfg, request, None, now_ms())? {
        // No key, so no duplicate: written by the commit thread with the other enqueues of
        // its commit.
        Prepared::New(m) if m.idempotency_key.is_none() => {
            if let Err(e) = app.store.insert_new_durably(&m, generation).await {
                tracing::error!(error = %e, "commit failed; enqueue refused");
                return Err(e.into());
            }
            Outcome::Created(m)
        }
        prepared => {
            let outcome = insert(app, prepared)?;
            // Durable before the answer, duplicates included: the first copy's commit may
            // still be in progress when its replay arrives.
            commit_or_roll_back(app, generation, &[&outcome]).await?;
            outcome
        }
    };
    Ok(match outcome {
        Outcome::Created(m) => {
            hand_over(app, &m);
            let mut out = Vec::with_capacity(48);
            view::accepted_text(&m, &mut out);
            json::text(StatusCode::ACCEPTED, out)
        }
        Outcome::Duplicate { id, state } => {
            Metrics::inc(&app.metrics.duplicates);
            json::ok(&duplicate(id, state))
        }
    })
}

pub async fn batch(State(ctx): State<Ctx>, request: Request) -> Result<Response, ApiError> {
    // A batch refused as a whole refuses each of its send requests (one, if it was refused
    // before its items were read).
    let mut items = 1;
    let result = enqueue_batch(ctx.app.clone(), request, &mut items).await;
    if result.is_err() {
        Metrics::add(&ctx.app.metrics.enqueue_rejected, items as u64);
    }
    result
}

async fn enqueue_batch(
    app: Arc<App>,
    request: Request,
    items: &mut usize,
) -> Result<Response, ApiError> {
    let (head, body) = request.into_parts();
    if app.is_shutting_down() {
        return Err(json::shutting_down());
    }
    Query::parse(&head.method, &head.uri, &[])?;
    let cfg = app.config();
    let body = read_body(&head.headers, body, Limit::batch(&cfg, &app.bodies)).await?;
    // The room stays taken until the answer is built: the parsed items and their messages
    // are what the batch's factor counts.
    let (bytes, _room) = body.into_parts();
    // Parsing and thousands of store writes: keep them off the async workers.
    let writer = app.clone();
    let generation = app.store.generation();
    let (results, mark) = tokio::task::spawn_blocking(move || {
        let items = match json::parse_borrowed(&bytes)? {
            Json::Array(items) => items,
            _ => {
                return Err(ApiError::bad_request(
                    "the batch body must be a JSON array of send requests",
                ))
            }
        };
        if items.len() > MAX_BATCH_ITEMS {
            return Err(ApiError::new(
                413,
                "too_large",
                format!(
                    "a batch holds at most {MAX_BATCH_ITEMS} requests, this one has {}; split it",
                    items.len()
                ),
            ));
        }
        let now = now_ms();
        let prepared: Vec<Result<Prepared, ApiError>> = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| prepare(&writer, &cfg, item, Some(i), now).map_err(|e| in_item(e, i)))
            .collect();
        // Recorded before the first message is written: a crash before the answer takes back
        // the whole batch, never part of it.
        let ids: Vec<u64> = prepared
            .iter()
            .filter_map(|p| match p {
                Ok(Prepared::New(m)) => Some(m.id),
                _ => None,
            })
            .collect();
        let mark = match ids.is_empty() {
            true => None,
            false => Some(writer.store.begin_batch(&ids)?),
        };
        // Items without an idempotency key cannot be duplicates: written together, several
        // to a leaf. The others claim their keys one by one.
        let keyless: Vec<&Message> = prepared
            .iter()
            .filter_map(|p| match p {
                Ok(Prepared::New(m)) if m.idempotency_key.is_none() => Some(&**m),
                _ => None,
            })
            .collect();
        let keyless_written = writer
            .store
            .insert_new_keyless(&keyless)
            .map_err(ApiError::from);
        let results: Vec<Result<Outcome, ApiError>> = prepared
            .into_iter()
            .enumerate()
            .map(|(i, p)| match p {
                Ok(Prepared::New(m)) if m.idempotency_key.is_none() => match &keyless_written {
                    Ok(()) => Ok(Outcome::Created(m)),
                    Err(e) => Err(in_item(e.clone(), i)),
                },
                p => p.and_then(|m| insert(&writer, m).map_err(|e| in_item(e, i))),
            })
            .collect();
        Ok::<_, ApiError>((results, mark))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            500,
            "internal",
            format!("the batch could not be processed: {e}"),
        )
    })??;

    *items = results.len();
    // One commit makes every valid item durable together; a second one, that the batch is
    // finished and must stay whole.
    let written: Vec<&Outcome> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    // A store that takes no writes fails the whole batch, as a failed commit does.
    if let Some(e) = store_refusal(&results) {
        roll_back(&app, generation, &written);
        return Err(e);
    }
    commit_or_roll_back(&app, generation, &written).await?;
    if let Some(mark) = mark {
        let ended = app.store.end_batch(mark).map_err(ApiError::from);
        match ended {
            Ok(()) => commit_or_roll_back(&app, generation, &written).await?,
            Err(e) => {
                roll_back(&app, generation, &written);
                return Err(e);
            }
        }
    }

    // The answer is written as text item by item: the same bytes as serialising
    // `{"results": [...]}` built from values, without a value per item.
    let mut out = Vec::with_capacity(16 + results.len() * 48);
    out.extend_from_slice(br#"{"results":["#);
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match r {
            Ok(Outcome::Created(m)) => view::accepted_text(m, &mut out),
            Ok(Outcome::Duplicate { id, state }) => {
                Metrics::inc(&app.metrics.duplicates);
                write_value(&mut out, &duplicate(*id, *state));
            }
            Err(e) => {
                Metrics::inc(&app.metrics.enqueue_rejected);
                write_value(&mut out, &e.body());
            }
        }
    }
    out.extend_from_slice(b"]}");
    hand_over_all(&app, created(&results));
    Ok(json::text(StatusCode::OK, out))
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(v.to_string().as_bytes());
    }
}

pub async fn get(
    State(ctx): State<Ctx>,
    Param(id): Param,
    _: NoQuery,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let m = ctx
        .app
        .store
        .get(id)
        .map_err(StoreError::into_read_error)?
        .ok_or_else(|| unknown(id))?;
    Ok(json::ok(&view::message(&m)))
}

/// The parameters of `GET /v1/messages`.
pub const LIST_PARAMS: [&str; 7] = [
    "state",
    "to",
    "sender",
    "wamid",
    "idempotency_key",
    "limit",
    "cursor",
];

pub async fn list(State(ctx): State<Ctx>, _: NoBody, uri: Uri) -> Result<Response, ApiError> {
    let q = Query::parse(&Method::GET, &uri, &LIST_PARAMS)?;
    let states = match q.get("state") {
        None => None,
        Some(s) => Some(
            s.split(',')
                .map(|one| {
                    MsgState::parse(one.trim()).ok_or_else(|| {
                        let all: Vec<&str> = MsgState::ALL.iter().map(|s| s.as_str()).collect();
                        ApiError::invalid(
                            "invalid_parameter",
                            "state",
                            format!(
                                "{} is not a state; use one or more (comma-separated) of {}",
                                match one.trim().is_empty() {
                                    true => "an empty item".to_string(),
                                    false => format!("`{one}`"),
                                },
                                all.join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let to = match q.get("to") {
        None => None,
        Some(n) => Some(validate::recipient(n, "to")?),
    };
    let limit = match q.get("limit") {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "invalid_parameter",
                    "limit",
                    format!("`limit` is a number from 1 to {MAX_PAGE}"),
                )
            })?,
    };
    let after = match q.get("cursor") {
        None => None,
        Some(c) => Some(model::parse_id(c).ok_or_else(|| {
            ApiError::invalid(
                "invalid_parameter",
                "cursor",
                "`cursor` is the `next_cursor` of the previous page",
            )
        })?),
    };
    let sender = sender_filter(&ctx.app, &q, Listing::Yes)?;
    // A lookup by an empty value is a mistake (an unset variable in a script), not a request
    // for everything, which an absent one is.
    q.refuse_empty(&["wamid", "idempotency_key"])?;
    let wamid = q.get("wamid").map(str::to_string);
    let key = q.get("idempotency_key").map(str::to_string);
    // Keys are per sender: without `sender`, each configured one is asked.
    let key_senders = match &sender {
        Some(s) => vec![s.clone()],
        None => ctx.app.config().sender_names(),
    };
    let store = ctx.app.store.clone();
    let page = tokio::task::spawn_blocking(move || {
        let keep = |m: &Message| {
            states.as_ref().is_none_or(|s| s.contains(&m.state))
                && to.as_ref().is_none_or(|t| *t == m.to)
                && sender.as_ref().is_none_or(|s| *s == m.sender)
                && after.is_none_or(|a| m.id > a)
        };
        // By wamid or by key, the indexes find the message (at most one per sender): no scan.
        if wamid.is_some() || key.is_some() {
            let mut found = Vec::new();
            if let Some(w) = &wamid {
                let id = store.lookup_wamid(w).map_err(StoreError::into_read_error)?;
                if let Some(m) = id
                    .map(|id| store.get(id))
                    .transpose()
                    .map_err(StoreError::into_read_error)?
                    .flatten()
                {
                    found.push(m);
                }
            } else if let Some(k) = &key {
                for s in &key_senders {
                    if let Some(m) = store
                        .holder_of_key(s, k)
                        .map_err(StoreError::into_read_error)?
                    {
                        found.push(m);
                    }
                }
            }
            found.retain(|m| {
                keep(m)
                    && key
                        .as_ref()
                        .is_none_or(|k| m.idempotency_key.as_ref() == Some(k))
            });
            // At most one a sender: all of them, whatever `limit` says, since there is no
            // next page to follow.
            found.sort_by_key(|m| m.id);
            let views: Vec<_> = found.iter().map(view::message).collect();
            let mut out = br#"{"messages":"#.to_vec();
            serde_json::to_writer(&mut out, &views).map_err(unwritable)?;
            out.extend_from_slice(br#","next_cursor":null}"#);
            return Ok(out);
        }
        // Written as it is found: each message's view serialised straight into the answer,
        // so that its metadata goes out as stored (`view::message`).
        let mut out = br#"{"messages":["#.to_vec();
        let mut listed = 0;
        let mut last_seen = None;
        let mut more = false;
        for (scanned, item) in store.scan(after).enumerate() {
            let m = item.map_err(StoreError::into_read_error)?;
            if scanned >= SCAN_BUDGET {
                // Out of budget: the cursor resumes right after the last record looked at.
                more = true;
                break;
            }
            if keep(&m) {
                if listed == limit {
                    more = true;
                    break;
                }
                if listed > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, &view::message(&m)).map_err(unwritable)?;
                listed += 1;
            }
            last_seen = Some(m.id);
        }
        let next_cursor = if more { last_seen.map(format_id) } else { None };
        out.extend_from_slice(br#"],"next_cursor":"#);
        serde_json::to_writer(&mut out, &next_cursor).map_err(unwritable)?;
        out.push(b'}');
        Ok::<_, ApiError>(out)
    })
    .await
    .map_err(|e| ApiError::new(500, "internal", format!("the listing failed: {e}")))??;
    Ok(json::text(StatusCode::OK, page))
}

/// Whether a sender filter lists messages (finished ones too) or changes unsent ones.
#[derive(PartialEq)]
enum Listing {
    Yes,
    No,
}

/// The `sender` of a query that filters by it. A sender that does not exist is a mistake, not
/// an empty answer (as everywhere a sender is named).
fn sender_filter(app: &App, q: &Query, listing: Listing) -> Result<Option<String>, ApiError> {
    Ok(match q.get("sender") {
        None => None,
        // Its messages wait for it: they must be found to be cancelled.
        Some(name) if app.dispatcher.holds(name) => Some(name.to_string()),
        Some(name) => Some(resolve_sender(&app.config(), Some(name), "sender").map_err(
            |mut e| {
                let sentence = e.message.trim_end_matches('.').len();
                e.message.truncate(sentence);
                e.message.push_str(
                    " (a sender no longer configured can be named only while it holds messages \
                     not yet sent",
                );
                if listing == Listing::Yes {
                    e.message
                        .push_str("; list its finished ones without `sender` and pick them out");
                }
                e.message.push_str(").");
                e
            },
        )?),
    })
}

/// Messages a bulk change writes, commits and hands on at a time.
const BULK_SLICE: usize = 4096;

/// What a bulk change did: the messages it changed, and those that matched but were already
/// `sending` (on their way to Meta).
struct BulkOutcome {
    changed: usize,
    sending: u64,
}

/// Finds the messages `matches` picks by a scan of the store, then changes those in one of the
/// states `from` with `change` in slices of [`BULK_SLICE`]: each slice is committed before
/// `after` hands its messages on (to the schedule, to the event stream), so that a million
/// holds a slice of records in memory at a time, not all of them.
async fn change_matching(
    app: &Arc<App>,
    matches: impl Fn(&Message) -> bool + Send + 'static,
    from: &'static [MsgState],
    change: fn(&mut Message, u64),
    after: impl Fn(&App, &Message),
) -> Result<BulkOutcome, ApiError> {
    let failed = |e: tokio::task::JoinError| {
        ApiError::new(500, "internal", format!("the change failed: {e}"))
    };
    let now = now_ms();
    let generation = app.store.generation();
    // The ids first: the scan holds the store open, and each change takes its record's lock.
    let scan_app = app.clone();
    let (pending, mut sending) = tokio::task::spawn_blocking(move || {
        let mut pending = Vec::new();
        let mut sending = 0u64;
        for item in scan_app.store.scan(None) {
            let m = item.map_err(|e| e.into_api_error("nothing was changed"))?;
            if matches(&m) {
                if from.contains(&m.state) {
                    pending.push(m.id);
                } else if m.state == MsgState::Sending {
                    sending += 1;
                }
            }
        }
        Ok::<_, ApiError>((pending, sending))
    })
    .await
    .map_err(failed)??;
    let mut changed = 0usize;
    for slice in pending.chunks(BULK_SLICE) {
        let slice = slice.to_vec();
        let slice_app = app.clone();
        let (done, went) = tokio::task::spawn_blocking(move || {
            let mut done = Vec::with_capacity(slice.len());
            let mut went = 0u64;
            for id in slice {
                let mut found = None;
                let updated = slice_app.store.update(id, |m| {
                    found = Some(m.state);
                    from.contains(&m.state).then(|| change(m, now))
                })?;
                match (updated, found) {
                    (Some(((), m)), _) => done.push(m),
                    // Went on its way meanwhile.
                    (None, Some(MsgState::Sending)) => went += 1,
                    _ => {}
                }
            }
            Ok::<_, StoreError>((done, went))
        })
        .await
        .map_err(failed)?
        .map_err(|e| e.into_api_error(&partly_changed(changed)))?;
        app.store
            .commit_since(generation)
            .await
            .map_err(|e| e.into_api_error(&partly_changed(changed)))?;
        for m in &done {
            after(app, m);
        }
        changed += done.len();
        sending += went;
    }
    Ok(BulkOutcome { changed, sending })
}

/// What came of a bulk change the store stopped after `changed` messages.
fn partly_changed(changed: usize) -> String {
    match changed {
        0 => "nothing was changed".to_string(),
        n => format!("{n} messages were changed before it, the rest were not: send the request again for them"),
    }
}

/// `to` and `sender` of a bulk change's query (`to` validated as a send's).
fn bulk_filters(app: &App, q: &Query) -> Result<(Option<String>, Option<String>), ApiError> {
    // An empty one (an unset variable in a script) would widen the change to everyone's.
    q.refuse_empty(&["to", "sender"])?;
    let to = match q.get("to") {
        None => None,
        Some(n) => Some(validate::recipient(n, "to")?),
    };
    Ok((to, sender_filter(app, q, Listing::No)?))
}

/// `DELETE /v1/messages?to=&sender=`: cancels every message of the recipient, of the sender,
/// or of both, that is not yet handed to Meta (`queued` or `retrying`), as `DELETE
/// /v1/messages/{id}` cancels one: a recipient who opted out, a campaign stopped. The answer
/// counts them, and the matching messages already `sending`, left alone.
pub async fn cancel_matching(
    State(ctx): State<Ctx>,
    _: NoBody,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = Query::parse(&Method::DELETE, &uri, &["to", "sender"])?;
    let (to, sender) = bulk_filters(&ctx.app, &q)?;
    if to.is_none() && sender.is_none() {
        return Err(ApiError::invalid(
            "missing_field",
            "to",
            "give `to` (cancel one recipient's pending messages), `sender` (cancel every pending message of that sender), or both",
        ));
    }
    let outcome = change_matching(
        &ctx.app,
        move |m| {
            to.as_ref().is_none_or(|t| *t == m.to) && sender.as_ref().is_none_or(|s| *s == m.sender)
        },
        &[MsgState::Queued, MsgState::Retrying],
        cancel_now,
        |app, m| {
            app.dispatcher.withdraw(m);
            app.publish_state(m, "cancelled by request");
        },
    )
    .await?;
    Ok(json::ok(&serde_json::json!({
        "cancelled": outcome.changed,
        "sending": outcome.sending,
    })))
}

/// `POST /v1/messages/retry?code=&to=&sender=`: puts back every `failed` or `expired` message
/// with that `last_error.code`, of the recipient, of the sender, or any mix of them, as `POST
/// /v1/messages/{id}/retry` puts back one: a template fixed after its 132001s, say.
pub async fn retry_matching(
    State(ctx): State<Ctx>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let app = &ctx.app;
    let q = Query::parse(&Method::POST, &uri, &["code", "to", "sender"])?;
    retry_allowed(app, &headers, body).await?;
    let (to, sender) = bulk_filters(app, &q)?;
    // An empty one is a mistake (an unset variable in a script), not "any code".
    if q.given("code") == Some("") {
        return Err(ApiError::invalid(
            "invalid_parameter",
            "code",
            "`code` is empty: give a `last_error.code` such as meta_132001, or leave it out",
        ));
    }
    let code = q.get("code").map(str::to_string);
    if to.is_none() && sender.is_none() && code.is_none() {
        return Err(ApiError::invalid(
            "missing_field",
            "code",
            "give `code` (a `last_error.code`, e.g. meta_132001), `to`, `sender`, or several of them",
        ));
    }
    // As one retry is refused, a free-form message whose window is still closed is left out
    // (it would only fail again), and counted apart.
    let (window_app, cfg, now) = (app.clone(), app.config(), now_ms());
    let window_closed_count = Arc::new(AtomicU64::new(0));
    let left_out = window_closed_count.clone();
    let outcome = change_matching(
        app,
        move |m| {
            let chosen = to.as_ref().is_none_or(|t| *t == m.to)
                && sender.as_ref().is_none_or(|s| *s == m.sender)
                && code
                    .as_ref()
                    .is_none_or(|c| m.last_error.as_ref().is_some_and(|e| e.code == *c));
            let retryable = matches!(m.state, MsgState::Failed | MsgState::Expired);
            // A store error here lets it through: the dispatcher checks the window again.
            if chosen
                && retryable
                && matches!(retry_window_closed(&window_app, &cfg, m, now), Ok(Some(_)))
            {
                left_out.fetch_add(1, Relaxed);
                return false;
            }
            chosen
        },
        &[MsgState::Failed, MsgState::Expired],
        requeue_now,
        |app, m| {
            app.publish_state(m, "retry requested");
            app.dispatcher.submit(m);
        },
    )
    .await?;
    Ok(json::ok(&serde_json::json!({
        "retried": outcome.changed,
        "window_closed": window_closed_count.load(Relaxed),
    })))
}

/// A retry, of one message or many, is refused while stopping, and has no body.
async fn retry_allowed(app: &App, headers: &HeaderMap, body: Body) -> Result<(), ApiError> {
    if app.is_shutting_down() {
        return Err(json::shutting_down());
    }
    let cfg = app.config();
    json::no_body(headers, body, Limit::request(&cfg, &app.bodies), "a retry").await
}

fn cancel_now(m: &mut Message, now: u64) {
    m.transition(MsgState::Cancelled, now, "cancelled by request");
}

/// A `failed` or `expired` message back in line, as new.
fn requeue_now(m: &mut Message, now: u64) {
    // The same time to live as the first time, counted from now, or it would expire at once.
    // It was counted from the last time the message was queued (its enqueue, or the retry
    // before this one), not from its creation, or each retry would lengthen it.
    let queued_at = m
        .history
        .iter()
        .rev()
        .find(|h| h.state == MsgState::Queued)
        .map_or(m.created_at_ms, |h| h.at_ms);
    m.expires_at_ms = m
        .expires_at_ms
        .map(|at| now.saturating_add(at.saturating_sub(queued_at)));
    m.attempts = 0;
    m.next_attempt_at_ms = now;
    // The last attempt's wamid stays in its history entry, not on a message back in line.
    m.wamid = None;
    m.transition(MsgState::Queued, now, "retry requested");
}

/// Serialising a view fails only for a map with keys that are not strings, which none has.
fn unwritable(e: serde_json::Error) -> ApiError {
    ApiError::new(
        500,
        "internal",
        format!("the listing could not be written: {e}"),
    )
}

pub async fn cancel(
    State(ctx): State<Ctx>,
    Param(id): Param,
    _: NoQuery,
) -> Result<Response, ApiError> {
    let app = &ctx.app;
    let id = parse_id(&id)?;
    let now = now_ms();
    // `sending` is already on its way to Meta: too late to take back.
    let rule = Rule {
        from: &[MsgState::Queued, MsgState::Retrying],
        code: "not_cancellable",
        only: "only queued or retrying messages can be cancelled",
    };
    let generation = app.store.generation();
    let m = change_state(app, id, rule, |m| cancel_now(m, now))?;
    app.store.commit_since(generation).await?;
    app.dispatcher.withdraw(&m);
    app.publish_state(&m, "cancelled by request");
    Ok(json::ok(&view::message(&m)))
}

pub async fn retry(
    State(ctx): State<Ctx>,
    Param(id): Param,
    _: NoQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let app = &ctx.app;
    let id = parse_id(&id)?;
    retry_allowed(app, &headers, body).await?;
    let now = now_ms();
    let rule = Rule {
        from: &[MsgState::Failed, MsgState::Expired],
        code: "not_retryable",
        only: "only failed or expired messages can be retried",
    };
    // A free-form message without a fallback whose window is still closed would only fail
    // again at once: refused here, as at enqueue.
    if let Some(m) = app.store.get(id)?.filter(|m| rule.from.contains(&m.state)) {
        if let Some(why) = retry_window_closed(app, &app.config(), &m, now)? {
            return Err(ApiError::invalid(
                "window_closed",
                "message.type",
                format!(
                    "{why}record the customer's inbound message (POST /v1/inbound) and retry, \
                     or enqueue it again as a template or with a fallback_template"
                ),
            ));
        }
    }
    let generation = app.store.generation();
    let m = change_state(app, id, rule, |m| requeue_now(m, now))?;
    app.store.commit_since(generation).await?;
    // Published before the dispatcher sees it, whose events (a `failed` with no request, say)
    // would otherwise come first.
    app.publish_state(&m, "retry requested");
    app.dispatcher.submit(&m);
    Ok(json::json(StatusCode::ACCEPTED, &view::accepted(&m)))
}

/// Which states a requested change applies to, and the 409 for the others.
struct Rule {
    from: &'static [MsgState],
    code: &'static str,
    only: &'static str,
}

/// Applies `change` to message `id` (under its record lock) if its state is allowed by `rule`;
/// else 404 for an unknown id, 409 naming the state it is in.
fn change_state(
    app: &App,
    id: u64,
    rule: Rule,
    change: impl FnOnce(&mut Message),
) -> Result<Message, ApiError> {
    let mut found = None;
    let updated = app.store.update(id, |m| {
        found = Some(m.state);
        rule.from.contains(&m.state).then(|| change(m))
    })?;
    match (updated, found) {
        (Some(((), m)), _) => Ok(m),
        (None, None) => Err(unknown(id)),
        (None, Some(state)) => Err(ApiError::conflict(
            rule.code,
            format!(
                "message {} is {}: {}",
                format_id(id),
                state.as_str(),
                rule.only
            ),
        )),
    }
}

/// Validates one request (`item` of a batch, if it is one), applies the window rule and
/// builds its record (not yet stored).
fn prepare(
    app: &App,
    cfg: &Config,
    request: Json<'_>,
    item: Option<usize>,
    now: u64,
) -> Result<Prepared, ApiError> {
    let valid = match item {
        Some(i) => validate::batch_item(request, &cfg.senders, i)?,
        None => validate::send_request(request, &cfg.senders)?,
    };
    let timely = validate::schedule(&valid, now).and_then(|()| window_rule(app, cfg, &valid, now));
    if let Err(refused) = timely {
        // A producer retrying a send whose answer it lost must hear that the send was taken,
        // not that the window has closed since.
        if let Some(key) = &valid.idempotency_key {
            if let Some(first) = app.store.holder_of_key(&valid.sender, key)? {
                return Ok(Prepared::Replay {
                    id: first.id,
                    state: first.state,
                });
            }
        }
        return Err(refused);
    }
    let id = app.store.next_id()?;
    Ok(Prepared::New(Box::new(build(id, valid, now))))
}

/// Free-form messages only inside the recipient's 24-hour window (less the margin), unless a
/// fallback template can stand in.
fn window_rule(app: &App, cfg: &Config, valid: &ValidSend, now: u64) -> Result<(), ApiError> {
    if !valid.needs_window() || valid.fallback_template.is_some() {
        return Ok(());
    }
    match window_closed(app, cfg, &valid.sender, &valid.to, &valid.kind, now)? {
        None => Ok(()),
        Some(why) => Err(ApiError::invalid(
            "window_closed",
            "message.type",
            format!(
                "{why}send a template, add a fallback_template, or record the customer's \
                 inbound message (POST /v1/inbound)"
            ),
        )),
    }
}

/// For a retry of `m`: why it would only fail again (a free-form message without a fallback
/// whose window is still closed), or `None`.
fn retry_window_closed(
    app: &App,
    cfg: &Config,
    m: &Message,
    now: u64,
) -> Result<Option<String>, ApiError> {
    if !crate::model::needs_window(&m.kind) || m.fallback_template.is_some() {
        return Ok(None);
    }
    window_closed(app, cfg, &m.sender, &m.to, &m.kind, now)
}

/// Why the free-form `kind` message cannot go (ending "…cannot be delivered: ") when the
/// window of `to` with `sender` is closed by the daemon's clock, margin included; `None` open.
fn window_closed(
    app: &App,
    cfg: &Config,
    sender: &str,
    to: &str,
    kind: &str,
    now: u64,
) -> Result<Option<String>, ApiError> {
    let w = window::lookup(&app.store, sender, to)?;
    let margin = cfg.dispatch.window_margin.as_millis() as u64;
    if w.is_open(now, margin) {
        return Ok(None);
    }
    // A window still open by Meta's clock but inside the margin is closed here too; the
    // message says so rather than deny the customer wrote.
    let why = match w.open_until_ms() {
        Some(until) if until > now => format!(
            "the 24-hour window of {to} with sender `{sender}` ends at {}, within \
             dispatch.window_margin_s ({} s) of now",
            crate::model::format_time(until),
            margin / 1000
        ),
        _ => format!("{to} has not written to sender `{sender}` in the last 24 hours"),
    };
    Ok(Some(format!(
        "{why}, so a free-form `{kind}` message cannot be delivered: "
    )))
}

fn build(id: u64, v: ValidSend, now: u64) -> Message {
    Message {
        id,
        sender: v.sender,
        to: v.to,
        kind: v.kind,
        priority: v.priority,
        state: MsgState::Queued,
        body: v.message,
        fallback_template: v.fallback_template,
        idempotency_key: v.idempotency_key,
        metadata: v.metadata,
        created_at_ms: now,
        updated_at_ms: now,
        next_attempt_at_ms: v.send_at_ms.unwrap_or(now),
        expires_at_ms: v.ttl_s.map(|t| now.saturating_add(t.saturating_mul(1000))),
        attempts: 0,
        wamid: None,
        substituted_template: None,
        last_error: None,
        history: vec![HistoryEntry {
            at_ms: now,
            state: MsgState::Queued,
            detail: "queued".into(),
        }],
    }
}

fn insert(app: &App, prepared: Prepared) -> Result<Outcome, ApiError> {
    let m = match prepared {
        Prepared::New(m) => m,
        Prepared::Replay { id, state } => return Ok(Outcome::Duplicate { id, state }),
    };
    // Twice at most: a duplicate whose message retention just removed frees its key.
    for _ in 0..2 {
        match app.store.insert_new(&m)? {
            Insert::Created => return Ok(Outcome::Created(m)),
            Insert::Duplicate(id) => {
                if let Some(first) = app.store.get(id)? {
                    return Ok(Outcome::Duplicate {
                        id,
                        state: first.state,
                    });
                }
            }
        }
    }
    Err(ApiError::new(
        503,
        "storage_unavailable",
        "the idempotency key is being released by retention; retry",
    ))
}

/// One commit for everything written; if it fails, the new records are taken back (best
/// effort) so a client retrying after the error does not meet a phantom duplicate.
async fn commit_or_roll_back(
    app: &App,
    generation: u64,
    outcomes: &[&Outcome],
) -> Result<(), ApiError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    if let Err(e) = app.store.commit_since(generation).await {
        roll_back(app, generation, outcomes);
        tracing::error!(error = %e, "commit failed; enqueue refused");
        return Err(e.into());
    }
    Ok(())
}

/// Takes back (best effort) the messages of a request that is refused after they were written
/// (`generation`: the store's before they were).
fn roll_back(app: &App, generation: u64, outcomes: &[&Outcome]) {
    for o in outcomes {
        if let Outcome::Created(m) = o {
            app.store.take_back(m, generation);
        }
    }
}

/// A durable new message goes to the event stream, then to the dispatcher (whose events for
/// it must come after its `queued`).
fn hand_over(app: &App, m: &Message) {
    Metrics::inc(&app.metrics.enqueued);
    app.publish_state(m, "queued");
    app.dispatcher.submit(m);
}

/// [`hand_over`] for the new messages of a batch, scheduled together.
fn hand_over_all<'m>(app: &App, messages: impl Iterator<Item = &'m Message> + Clone) {
    for m in messages.clone() {
        Metrics::inc(&app.metrics.enqueued);
        app.publish_state(m, "queued");
    }
    app.dispatcher.submit_all(messages);
}

/// The messages a batch created.
fn created(results: &[Result<Outcome, ApiError>]) -> impl Iterator<Item = &Message> + Clone {
    results.iter().filter_map(|r| match r {
        Ok(Outcome::Created(m)) => Some(&**m),
        _ => None,
    })
}

fn duplicate(id: u64, state: MsgState) -> Value {
    json!({ "id": format_id(id), "state": state.as_str(), "duplicate": true })
}

/// The first item refused because the store takes no writes (disk full, reopening), as the
/// answer to the whole batch.
fn store_refusal(results: &[Result<Outcome, ApiError>]) -> Option<ApiError> {
    results.iter().find_map(|r| match r {
        Err(e) if matches!(e.code.as_str(), "disk_full" | "storage_unavailable") => {
            Some(ApiError {
                field: None,
                ..e.clone()
            })
        }
        _ => None,
    })
}

/// Prefixes the field of a batch item's error with its index: `[3].to`.
fn in_item(mut e: ApiError, i: usize) -> ApiError {
    e.field = Some(match e.field.take() {
        Some(f) if f.starts_with('[') => format!("[{i}]{f}"),
        Some(f) => format!("[{i}].{f}"),
        None => format!("[{i}]"),
    });
    e
}

pub(super) fn parse_id(s: &str) -> Result<u64, ApiError> {
    model::parse_id(s).ok_or_else(|| {
        ApiError::not_found(format!(
            "`{s}` is not a message id: ids are 16 hex digits, as returned by POST /v1/messages"
        ))
    })
}

fn unknown(id: u64) -> ApiError {
    ApiError::not_found(format!(
        "no message {} (never enqueued, or removed after the retention period)",
        format_id(id)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retried message gets its ttl again from now, however often it is retried.
    #[test]
    fn each_retry_gives_the_same_ttl() {
        let send = ValidSend {
            to: "14155550100".into(),
            sender: "main".into(),
            message: r#"{"type":"template"}"#.into(),
            kind: "template".into(),
            fallback_template: None,
            idempotency_key: None,
            priority: crate::model::Priority::Normal,
            send_at_ms: None,
            ttl_s: Some(3),
            metadata: None,
        };
        let mut m = build(1, send, 1_000);
        assert_eq!(m.expires_at_ms, Some(4_000));
        for now in [10_000, 50_000, 90_000] {
            m.transition(MsgState::Expired, now - 1, "ttl passed");
            requeue_now(&mut m, now);
            assert_eq!(m.expires_at_ms, Some(now + 3_000));
        }
    }

    #[test]
    fn batch_fields_name_the_item() {
        let e = in_item(ApiError::invalid("x", "to", "m"), 3);
        assert_eq!(e.field.as_deref(), Some("[3].to"));
        let e = in_item(ApiError::bad_request("m"), 0);
        assert_eq!(e.field.as_deref(), Some("[0]"));
    }
}
