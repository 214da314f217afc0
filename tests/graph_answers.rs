//! The real daemon against a fake Graph API on loopback that answers what each test scripts:
//! the Graph platform's throttles (17, 32, 613, 80000-80014), maintenance mode (131057), a
//! bare 429 and `Retry-After`, outages answered by a gateway (500/502/504, HTML or nothing, or
//! Meta's code 1 / 131000 with a 5xx) or by short bursts of 503, and one message's own 500.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use common::{sender_toml, template_request, wait_until, Daemon, PATIENCE};

const NUMBER: &str = "120000000000001";
const TOKEN: &str = "test-token";

/// One answer of the fake Graph API.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn accepted(to: &str, n: usize) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: json!({"messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": format!("wamid.FAKE{n}")}]})
            .to_string(),
        }
    }

    /// Meta's error object with `code`, answered with `status`.
    fn meta(status: u16, code: i64) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: json!({"error": {"message": format!("(#{code}) scripted"),
                "type": "OAuthException", "code": code, "fbtrace_id": "Afake"}})
            .to_string(),
        }
    }

    /// What an edge proxy answers: an HTML page, or nothing, and no Meta error object.
    fn bare(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "text/html".into())],
            body: body.into(),
        }
    }

    fn retry_after(mut self, value: String) -> Reply {
        self.headers.push(("retry-after", value));
        self
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Arrival {
    at: Instant,
    to: String,
}

/// Decides the answer to a request: the arrival, and how many requests for the same
/// recipient came before it.
type Script = Box<dyn FnMut(&Arrival, usize) -> Reply + Send>;

struct Fake {
    script: Mutex<Script>,
    seen: Mutex<Vec<Arrival>>,
}

/// The fake Graph API on 127.0.0.1, in a runtime of its own; stopped when dropped.
struct FakeGraph {
    _rt: tokio::runtime::Runtime,
    base: String,
    fake: Arc<Fake>,
}

async fn messages(State(fake): State<Arc<Fake>>, body: Bytes) -> Response {
    let to = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["to"].as_str().map(str::to_string))
        .unwrap_or_default();
    let arrival = Arrival {
        at: Instant::now(),
        to,
    };
    let reply = {
        let mut seen = fake.seen.lock().unwrap();
        let before = seen.iter().filter(|a| a.to == arrival.to).count();
        seen.push(arrival.clone());
        (fake.script.lock().unwrap())(&arrival, before)
    };
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        reply.body.clone(),
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

impl FakeGraph {
    fn start(script: impl FnMut(&Arrival, usize) -> Reply + Send + 'static) -> FakeGraph {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-graph")
            .enable_all()
            .build()
            .unwrap();
        let fake = Arc::new(Fake {
            script: Mutex::new(Box::new(script)),
            seen: Mutex::default(),
        });
        let app = Router::new()
            .route("/{version}/{phone}/messages", post(messages))
            .with_state(fake.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(async move { axum::serve(listener, app).await });
        FakeGraph {
            _rt: rt,
            base,
            fake,
        }
    }

    /// Every request so far, in order of arrival.
    fn seen(&self) -> Vec<Arrival> {
        self.fake.seen.lock().unwrap().clone()
    }

    /// A daemon whose only sender, `main` at `mps`, sends here, with these `[dispatch]` lines.
    fn daemon(&self, mps: u32, dispatch: &[&str]) -> Daemon {
        let mut b = Daemon::builder()
            .without_default_sender()
            .set("api", &format!("base_url = {:?}", self.base))
            .toml(&sender_toml("main", NUMBER, TOKEN, mps));
        for line in dispatch {
            b = b.set("dispatch", line);
        }
        b.start()
    }
}

/// `+1415555xxxx` for `i`, and the digits the fake sees.
fn recipient(i: usize) -> (String, String) {
    let digits = format!("1415555{i:04}");
    (format!("+{digits}"), digits)
}

fn finished(m: &Value) -> bool {
    !matches!(m["state"].as_str(), Some("queued" | "retrying" | "sending"))
}

fn history_details(m: &Value) -> Vec<String> {
    m["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["detail"].as_str().map(str::to_string))
        .collect()
}

fn health(d: &Daemon) -> Value {
    d.get("/v1/health").json()
}

// ---------------------------------------------------------------------------------------------
// Throttles

/// The Graph platform's rate limits (17 user, 32 page, 613 calls per hour, 80008 of the
/// business-use-case family) and maintenance mode (131057) are throttles like 130429: the
/// message waits and goes, using up no attempt, though `max_attempts` is 1.
#[test]
fn graph_platform_throttles_and_maintenance_give_the_attempt_back() {
    let codes = [17, 32, 613, 80_008, 131_057];
    let code_of: HashMap<String, i64> = codes
        .iter()
        .enumerate()
        .map(|(i, code)| (recipient(i).1, *code))
        .collect();
    let graph = FakeGraph::start(move |a, before| match code_of.get(&a.to) {
        Some(code) if before < 2 => Reply::meta(400, *code),
        _ => Reply::accepted(&a.to, before),
    });
    let d = graph.daemon(
        20,
        &[
            "max_attempts = 1",
            "retry_min_ms = 50",
            "retry_max_ms = 200",
        ],
    );
    let ids: Vec<String> = (0..codes.len())
        .map(|i| d.enqueue(&template_request(&recipient(i).0)))
        .collect();
    for (id, code) in ids.iter().zip(codes) {
        let m = d.wait_message(id, PATIENCE, finished);
        assert_eq!(m["state"], "sent", "{code}: {m}");
        assert_eq!(m["attempts"], 1, "{code}: {m}");
        let throttled = history_details(&m)
            .iter()
            .filter(|h| h.starts_with(&format!("meta_{code}; retry in")))
            .count();
        assert_eq!(throttled, 2, "{code}: {m}");
    }
}

/// A 429 without a Meta error object (a proxy's) slows the sender down and gives the attempt
/// back, like Meta's own throttles.
#[test]
fn a_bare_429_slows_the_sender_and_gives_the_attempt_back() {
    let limiting = Arc::new(AtomicBool::new(true));
    let graph = FakeGraph::start({
        let limiting = limiting.clone();
        move |a, before| match limiting.load(Ordering::SeqCst) {
            true => Reply::bare(429, ""),
            false => Reply::accepted(&a.to, before),
        }
    });
    // Retries far enough apart that the slowed sender (down to 1 a second) has room for
    // every message's first request: the lowest id that is due goes first.
    let d = graph.daemon(
        20,
        &[
            "max_attempts = 1",
            "retry_min_ms = 3000",
            "retry_max_ms = 3000",
        ],
    );
    let ids: Vec<String> = (0..3)
        .map(|i| d.enqueue(&template_request(&recipient(i).0)))
        .collect();
    let met_429 = |id: &String| {
        history_details(&d.message(id))
            .iter()
            .any(|h| h.starts_with("http_429; retry in"))
    };
    wait_until(
        "the sender slowed down, and every message met a 429",
        PATIENCE,
        || {
            let mps = d.get("/v1/stats").json()["senders"][0]["effective_mps"].as_f64()?;
            (mps < 20.0 && ids.iter().all(met_429)).then_some(())
        },
        || d.get("/v1/stats").text(),
    );
    limiting.store(false, Ordering::SeqCst);
    for id in &ids {
        let m = d.wait_message(id, PATIENCE, finished);
        assert_eq!(m["state"], "sent", "{m}");
        assert_eq!(m["attempts"], 1, "{m}");
    }
}

/// `Retry-After` on a 429 (seconds) or a 503 (an HTTP-date) is the least wait before that
/// message's next attempt, however short `retry_min_ms` is.
#[test]
fn retry_after_is_the_least_wait_before_the_next_attempt() {
    let (seconds, seconds_digits) = recipient(0);
    let (date, date_digits) = recipient(1);
    let graph = FakeGraph::start({
        let seconds_digits = seconds_digits.clone();
        move |a, before| match before {
            0 if a.to == seconds_digits => Reply::bare(429, "").retry_after("2".into()),
            0 => Reply::meta(503, 2).retry_after(httpdate::fmt_http_date(
                SystemTime::now() + Duration::from_secs(4),
            )),
            _ => Reply::accepted(&a.to, before),
        }
    });
    let d = graph.daemon(
        20,
        &[
            "max_attempts = 5",
            "retry_min_ms = 50",
            "retry_max_ms = 10000",
        ],
    );
    let ids = [
        d.enqueue(&template_request(&seconds)),
        d.enqueue(&template_request(&date)),
    ];
    for (id, digits, least) in [
        // Less a little for the clocks' millisecond rounding.
        (&ids[0], &seconds_digits, Duration::from_millis(1_900)),
        // The date has whole seconds: 4 s ahead is at least 3 s.
        (&ids[1], &date_digits, Duration::from_millis(2_500)),
    ] {
        let m = d.wait_message(id, PATIENCE, finished);
        assert_eq!(m["state"], "sent", "{m}");
        assert!(
            history_details(&m)
                .iter()
                .any(|h| h.ends_with("ms (Retry-After)")),
            "{m}"
        );
        let arrivals: Vec<Instant> = graph
            .seen()
            .iter()
            .filter(|a| &a.to == digits)
            .map(|a| a.at)
            .collect();
        assert_eq!(arrivals.len(), 2, "{arrivals:?}");
        let gap = arrivals[1] - arrivals[0];
        assert!(
            gap >= least,
            "the retry came {gap:?} after, before {least:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Outages

/// Meta behind a failing gateway: every request gets a 502 or 504 page, a bare 500, or a 5xx
/// with Meta's code 1 or 131000, for longer than the backoff of `max_attempts`. No message
/// fails; the sender shows as unreachable once that has lasted 10 s, and everything goes
/// when the gateway serves again.
#[test]
fn an_outage_behind_a_gateway_fails_no_message() {
    let down = Arc::new(AtomicBool::new(true));
    let graph = FakeGraph::start({
        let down = down.clone();
        let mut n = 0;
        move |a, before| {
            n += 1;
            if !down.load(Ordering::SeqCst) {
                return Reply::accepted(&a.to, before);
            }
            match n % 5 {
                0 => Reply::bare(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
                1 => Reply::bare(504, ""),
                2 => Reply::bare(500, "<html>Internal Server Error</html>"),
                3 => Reply::meta(500, 131_000),
                _ => Reply::meta(500, 1),
            }
        }
    });
    let d = graph.daemon(
        20,
        &[
            "max_attempts = 3",
            "retry_min_ms = 200",
            "retry_max_ms = 400",
        ],
    );
    let ids: Vec<String> = (0..4)
        .map(|i| d.enqueue(&template_request(&recipient(i).0)))
        .collect();
    let h = wait_until(
        "main unreachable in /v1/health",
        PATIENCE,
        || Some(health(&d)).filter(|h| h["status"] == "degraded"),
        || health(&d).to_string(),
    );
    assert_eq!(h["unreachable_senders"][0]["name"], "main", "{h}");
    // By now (10 s of failures every 400 ms at most) each message has had more than
    // max_attempts attempts.
    for id in &ids {
        let m = d.message(id);
        assert!(!finished(&m), "{m}");
        assert!(m["attempts"].as_u64().unwrap() > 3, "{m}");
    }
    down.store(false, Ordering::SeqCst);
    for id in &ids {
        let m = d.wait_message(id, PATIENCE, finished);
        assert_eq!(m["state"], "sent", "{m}");
    }
    wait_until(
        "health ok again",
        PATIENCE,
        || Some(health(&d)).filter(|h| h["status"] == "ok"),
        || health(&d).to_string(),
    );
}

/// A burst of 503s shorter than the 10 s that health waits for, with retries so quick that
/// `max_attempts` is used up well within it: no message fails.
#[test]
fn a_short_burst_of_503s_fails_nothing_with_small_retry_settings() {
    let down = Arc::new(AtomicBool::new(true));
    let graph = FakeGraph::start({
        let down = down.clone();
        move |a, before| match down.load(Ordering::SeqCst) {
            true => Reply::bare(503, "Service Unavailable"),
            false => Reply::accepted(&a.to, before),
        }
    });
    let d = graph.daemon(
        20,
        &[
            "max_attempts = 3",
            "retry_min_ms = 50",
            "retry_max_ms = 100",
        ],
    );
    let ids: Vec<String> = (0..3)
        .map(|i| d.enqueue(&template_request(&recipient(i).0)))
        .collect();
    wait_until(
        "every message past max_attempts",
        PATIENCE,
        || {
            ids.iter()
                .all(|id| {
                    let m = d.message(id);
                    m["state"] == "failed" || m["attempts"].as_u64() > Some(4)
                })
                .then_some(())
        },
        || {
            format!(
                "{:?}",
                ids.iter().map(|id| d.message(id)).collect::<Vec<_>>()
            )
        },
    );
    down.store(false, Ordering::SeqCst);
    for id in &ids {
        let m = d.wait_message(id, PATIENCE, finished);
        assert_eq!(m["state"], "sent", "{m}");
    }
}

/// One message that Meta answers 500 with code 131000 each time, while the sender's other
/// messages are accepted: no outage, so it fails after `max_attempts` like any transient
/// error.
#[test]
fn one_messages_own_500_fails_it_while_others_are_sent() {
    let (poison, poison_digits) = recipient(9_999);
    let graph = FakeGraph::start(move |a, before| match a.to == poison_digits {
        true => Reply::meta(500, 131_000),
        false => Reply::accepted(&a.to, before),
    });
    let d = graph.daemon(
        20,
        &[
            "max_attempts = 3",
            "retry_min_ms = 300",
            "retry_max_ms = 300",
        ],
    );
    let id = d.enqueue(&template_request(&poison));
    // Others keep going out between its attempts (about six at 20 per second).
    let mut next = 0;
    let m = wait_until(
        "the message failed",
        PATIENCE,
        || {
            if d.count("queued") < 10 {
                let batch: Vec<Value> = (next..next + 10)
                    .map(|i| template_request(&recipient(i).0))
                    .collect();
                d.enqueue_batch(&batch);
                next += 10;
            }
            Some(d.message(&id)).filter(finished)
        },
        || d.message(&id).to_string(),
    );
    assert_eq!(m["state"], "failed", "{m}");
    assert_eq!(m["attempts"], 3, "{m}");
    assert_eq!(m["last_error"]["meta_code"], 131_000, "{m}");
    assert_eq!(health(&d)["status"], "ok", "{}", health(&d));
    assert_eq!(d.count("failed"), 1);
}
