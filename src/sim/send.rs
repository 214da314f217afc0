//! One `POST /{version}/{phone_number_id}/messages`, from arrival to answer.
//!
//! Everything that depends on state is decided at arrival, in one short critical section of
//! the number's lock, in this order (the first that applies answers):
//! outage → token → injected fault → MPS (130429) → validation (100/131008/131009) →
//! not on WhatsApp (131026) → template (132001/132000) → pair rate (131056) → accepted.
//! Then, without the lock, statuses are scheduled and the answer waits out the injected latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::config::WindowAnswer;
use super::error::MetaError;
use super::faults::{Injected, TokenCheck};
use super::state::{Number, NumberState, Sim};
use super::validate::{self, Outbound, Request};
use super::webhooks::{self, Accepted, StatusEvent};

/// How the request is answered.
enum Answer {
    Json(Value),
    Error(MetaError),
    /// A bare 5xx without a JSON body, as a proxy in front of Graph answers.
    Plain(StatusCode),
    /// No answer for this long (an injected timeout); then 504.
    Hold(Duration),
}

struct Decision {
    answer: Answer,
    latency: Duration,
    statuses: Vec<(Duration, StatusEvent)>,
}

pub(crate) async fn handle(
    sim: &Sim,
    version: &str,
    phone_number_id: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Response {
    if !crate::cloud::is_graph_version(version) {
        sim.unrouted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return MetaError::unknown_path(&format!("/{version}/{phone_number_id}/messages"))
            .into_response();
    }
    let Some(number) = sim.numbers.get(phone_number_id).cloned() else {
        sim.unrouted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Graph checks the token before it looks the object up.
        let token_ok = sim.global_token().matches(bearer);
        return match (bearer, token_ok) {
            (None, _) => MetaError::token_missing(),
            (Some(_), false) => MetaError::token_invalid(),
            (Some(_), true) => MetaError::unknown_number(phone_number_id),
        }
        .into_response();
    };

    // Parsing and validation need no state: done before taking the lock.
    let checked = validate::check(body);
    let decision = {
        let mut st = number.lock();
        decide(sim, &number, &mut st, bearer, checked, Instant::now())
    };
    sim.webhooks.schedule(&number, decision.statuses);

    match decision.answer {
        Answer::Hold(hold) => {
            if wait(sim, hold).await {
                StatusCode::GATEWAY_TIMEOUT.into_response()
            } else {
                MetaError::service_unavailable().into_response()
            }
        }
        answer => {
            if !wait(sim, decision.latency).await {
                return MetaError::service_unavailable().into_response();
            }
            match answer {
                Answer::Json(v) => (StatusCode::OK, Json(v)).into_response(),
                Answer::Error(e) => e.into_response(),
                Answer::Plain(status) => {
                    (status, status.canonical_reason().unwrap_or("Server Error")).into_response()
                }
                Answer::Hold(_) => StatusCode::GATEWAY_TIMEOUT.into_response(),
            }
        }
    }
}

/// Sleeps `d` unless the simulator stops first; false when it stopped.
async fn wait(sim: &Sim, d: Duration) -> bool {
    if d.is_zero() {
        return true;
    }
    let mut stop = sim.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

fn decide(
    sim: &Sim,
    number: &Arc<Number>,
    st: &mut NumberState,
    bearer: Option<&str>,
    checked: Result<Request, MetaError>,
    now: Instant,
) -> Decision {
    st.arrivals.arrive(now);
    st.counters.requests += 1;
    let latency = st.faults.latency();
    let reply = |answer| Decision {
        answer,
        latency,
        statuses: Vec::new(),
    };

    if let Some(fault) = st.faults.outage(now) {
        return reply(inject(st, fault));
    }
    match st.token.check(bearer, now) {
        TokenCheck::Valid => {}
        TokenCheck::Missing => return reply(violation(st, MetaError::token_missing())),
        TokenCheck::Wrong => return reply(violation(st, MetaError::token_invalid())),
        TokenCheck::Expired => return reply(inject(st, Injected::TokenExpired)),
    }
    let before = st.throughput.arrive(now);
    if let Some(fault) = st.faults.draw(now) {
        return reply(inject(st, fault));
    }
    if before >= number.mps as usize {
        return reply(violation(st, MetaError::rate_limited()));
    }
    let out = match checked {
        Err(e) => return reply(violation(st, e)),
        Ok(Request::MarkRead) => {
            st.counters.marked_read += 1;
            return reply(Answer::Json(json!({"success": true})));
        }
        Ok(Request::Send(out)) => out,
    };
    if sim.not_on_whatsapp.contains(&out.wa_id) {
        return reply(violation(st, MetaError::not_on_whatsapp()));
    }
    // From here on the user is known by wa_id, as Meta knows them; the answer shows it.
    let mut out = out;
    if let Some(wa_id) = sim.other_wa_id(&out.wa_id) {
        out.wa_id = wa_id.to_string();
    }
    let category = match &out.template {
        Some(t) => match sim.templates.check(t) {
            Ok(category) => Some(category),
            Err(e) => return reply(violation(st, e)),
        },
        None => None,
    };
    if !st.pairs.try_take(&out.wa_id, now) {
        return reply(violation(st, MetaError::pair_rate_limited()));
    }
    let outside_window = sim.cfg.window.enforce
        && out.template.is_none()
        && !sim.always_open.contains(&out.wa_id)
        && !st.windows.is_open(&out.wa_id, now);
    if outside_window && sim.cfg.window.answer == WindowAnswer::Error {
        return reply(violation(st, MetaError::re_engagement()));
    }
    accept(sim, st, out, category, latency, outside_window)
}

/// A 200: counts it, checks ordering and the window, plans its statuses.
fn accept(
    sim: &Sim,
    st: &mut NumberState,
    out: Outbound,
    category: Option<Arc<str>>,
    latency: Duration,
    outside_window: bool,
) -> Decision {
    st.counters.accepted += 1;
    if st.ordering.observe(&out.wa_id, out.biz_opaque.as_deref()) {
        st.counters.ordering_violations += 1;
    }
    // Meta (by default here) accepts a free-form message outside the window and fails it
    // afterwards.
    if outside_window {
        st.counters.violation(131047);
    }
    let wamid = sim.next_wamid();
    let mut message = json!({"id": wamid});
    if out.template.is_some() {
        message["message_status"] = json!("accepted");
    }
    let answer = Answer::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": out.to_input, "wa_id": out.wa_id}],
        "messages": [message],
    }));
    let statuses = if sim.webhooks.enabled() {
        webhooks::plan(
            &sim.cfg.statuses,
            Accepted {
                wamid: Arc::from(wamid),
                recipient: Arc::from(out.wa_id.as_str()),
                biz_opaque: out.biz_opaque.as_deref().map(Arc::from),
                template_category: category,
                is_reaction: out.kind == "reaction",
                fail_with: outside_window.then_some(131047),
            },
        )
    } else {
        Vec::new()
    };
    Decision {
        answer,
        latency,
        statuses,
    }
}

fn violation(st: &mut NumberState, e: MetaError) -> Answer {
    st.counters.violation(e.code);
    Answer::Error(e)
}

fn inject(st: &mut NumberState, fault: Injected) -> Answer {
    st.counters.injected(fault.kind());
    match fault {
        Injected::Outage => Answer::Error(MetaError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            2,
            "Service temporarily unavailable",
            "The service is temporarily unavailable (simulated outage).",
        )),
        Injected::Timeout(hold) => Answer::Hold(hold),
        Injected::Http5xx(status) => Answer::Plain(status),
        Injected::Code1 => Answer::Error(MetaError::unknown_error()),
        Injected::Code2 => Answer::Error(MetaError::service_unavailable()),
        Injected::Code131000 => Answer::Error(MetaError::something_went_wrong()),
        Injected::RateLimit => Answer::Error(MetaError::rate_limited()),
        Injected::TokenExpired => Answer::Error(MetaError::token_expired()),
    }
}
