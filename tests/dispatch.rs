//! The dispatcher against the Cloud API simulator, over real HTTP on loopback: the real `waq`
//! binary sends to an in-process `waq::sim`, and the simulator's stats say whether Meta's rules
//! were kept (MPS, pair rate, 24-hour window, order per recipient) and how errors were handled.
//!
//! The two throughput tests print the rate they measured; they run alone (see `exclusive`),
//! the others share the machine. The 1,000-per-second test checks the simulator's window
//! strictly only in an optimised build:
//! `cargo test --release --test dispatch -- --nocapture a_thousand`.

mod common;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{
    sender_toml, sim_config, template_request, text_request, two_numbers, wait_until, Daemon, Sim,
    PATIENCE, SECOND_NUMBER, SIM_NUMBER, TOKEN,
};
use waq::model::{format_time, now_ms, parse_time};
use waq::sim::{NumberStats, PairRateConfig, WindowAnswer};

/// Throughput tests take it exclusively; the others share it.
static MACHINE: RwLock<()> = RwLock::new(());

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

fn shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

/// A distinct recipient per `i`.
fn recipient(i: usize) -> String {
    format!("+1415{i:07}")
}

/// A template send whose status webhooks and the simulator's order check see `seq:<seq>`.
fn seq_template(to: &str, seq: u64) -> Value {
    let mut r = template_request(to);
    r["message"]["biz_opaque_callback_data"] = json!(format!("seq:{seq}"));
    r
}

/// Waits until the simulator has accepted `n` sends; answers the rate from the first accepted
/// send seen to the last (polling every 10 ms, so the first poll's count is left out).
fn accepted_rate(sim: &Sim, n: u64, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let accepted = sim.number().accepted;
        let now = Instant::now();
        if accepted > 0 && first.is_none() {
            first = Some((now, accepted));
        }
        if accepted >= n {
            let (t0, a0) = first.unwrap_or((now, accepted));
            let secs = now.duration_since(t0).as_secs_f64();
            return if secs > 0.0 {
                (n - a0) as f64 / secs
            } else {
                f64::INFINITY
            };
        }
        assert!(
            now < deadline,
            "the simulator accepted only {accepted} of {n} in {limit:?}: {:?}",
            sim.number()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What every test expects of the simulator's default number, whatever else it checks. (The
/// MPS, 130429, is checked by the throughput tests, which run alone: the others share the
/// machine, and arrival jitter between their requests is not theirs to control.)
fn assert_rules_kept(n: &NumberStats) {
    assert_eq!(
        n.violation(131047),
        0,
        "free-form sent to a closed window: {n:?}"
    );
    assert_eq!(
        n.ordering_violations, 0,
        "order per recipient broken: {n:?}"
    );
}

fn health(d: &Daemon) -> Value {
    d.get("/v1/health").json()
}

/// Waits until the daemon reports `main` paused; answers the reason.
fn wait_paused(d: &Daemon) -> String {
    wait_until(
        "sender main paused",
        PATIENCE,
        || {
            let h = health(d);
            h["paused_senders"][0]["reason"]
                .as_str()
                .map(str::to_string)
        },
        || health(d).to_string(),
    )
}

/// The time (Unix ms) of the first history entry in `state`.
fn first_at(m: &Value, state: &str) -> Option<u64> {
    m["history"]
        .as_array()?
        .iter()
        .find(|h| h["state"] == state)
        .and_then(|h| parse_time(h["at"].as_str()?).ok())
}

// ---------------------------------------------------------------------------------------------
// Throughput

/// The simulator's number and the daemon's only sender, `main`, both at 20 MPS.
fn one_sender_at_20_mps() -> (Sim, Daemon) {
    let mut cfg = sim_config();
    cfg.numbers[0].mps = 20;
    let sim = Sim::start(cfg);
    let d = Daemon::builder()
        .against(&sim)
        .without_default_sender()
        .toml(&sender_toml("main", SIM_NUMBER, TOKEN, 20))
        .start();
    (sim, d)
}

#[test]
fn twenty_per_second_is_never_exceeded() {
    let _machine = exclusive();
    let (sim, d) = one_sender_at_20_mps();

    let requests: Vec<Value> = (0..300).map(|i| template_request(&recipient(i))).collect();
    d.enqueue_batch(&requests);
    let rate = accepted_rate(&sim, 300, Duration::from_secs(120));
    d.wait_count("sent", 300, PATIENCE);

    let n = sim.number();
    println!(
        "mps 20: 300 sends at {rate:.1}/s on average; most in any 1-second window: {}; requests: {}",
        n.max_in_window, n.requests
    );
    // waq's departure gate holds every 1.008 s to 20 where requests leave; the simulator counts
    // where they arrive. Optimised (`cargo test --release --test dispatch`) the two agree and
    // the check is strict. Unoptimised, on a shared 2-core machine, a stall of the daemon or
    // of this process (which hosts the simulator) can bunch a few arrivals: a small slack is
    // allowed there and the figure printed.
    if cfg!(debug_assertions) {
        assert!(n.max_in_window <= 22, "{n:?}");
        if n.max_in_window > 20 {
            println!(
                "NOTE: unoptimised build: {} arrivals in one second ({} answered 130429)",
                n.max_in_window,
                n.violation(130429)
            );
        }
    } else {
        assert!(n.max_in_window <= 20, "{n:?}");
        assert_eq!(n.violation(130429), 0, "{n:?}");
    }
    assert_eq!(
        n.requests,
        300 + n.violation(130429),
        "one request per message, one more per 130429: {n:?}"
    );
    assert_rules_kept(&n);
    // ~19.8/s expected (the window is 1.008 s); loose, since the machine is shared.
    assert!(rate >= 15.0, "only {rate:.1}/s");
}

#[test]
fn a_thousand_per_second_with_100_ms_latency() {
    let _machine = exclusive();
    const RECIPIENTS: usize = 1_000;
    const EACH: u64 = 5;
    const TOTAL: u64 = RECIPIENTS as u64 * EACH;
    let mut cfg = sim_config();
    cfg.numbers[0].mps = 1_000;
    cfg.faults.latency_ms = 100;
    let sim = Sim::start(cfg);
    let d = Daemon::builder()
        .against(&sim)
        .without_default_sender()
        .toml(&sender_toml("main", SIM_NUMBER, TOKEN, 1_000))
        .start();

    // Interleaved: each recipient's messages are spread over the whole batch.
    let requests: Vec<Value> = (1..=EACH)
        .flat_map(|seq| (0..RECIPIENTS).map(move |r| seq_template(&recipient(r), seq)))
        .collect();
    d.enqueue_batch(&requests);
    let rate = accepted_rate(&sim, TOTAL, Duration::from_secs(120));
    d.wait_count("sent", TOTAL, PATIENCE);

    let n = sim.number();
    println!(
        "mps 1000, 100 ms latency: {TOTAL} sends at {rate:.0}/s sustained; most in any \
         1-second window: {}; requests: {}",
        n.max_in_window, n.requests
    );
    // One request per message, and one more for each the simulator refused for the rate.
    assert_eq!(n.accepted, TOTAL, "{n:?}");
    assert_eq!(n.requests, TOTAL + n.violation(130429), "{n:?}");
    assert_eq!(n.violation(131047), 0, "{n:?}");
    assert_eq!(n.ordering_violations, 0, "{n:?}");
    if cfg!(debug_assertions) {
        // Unoptimised, the daemon is CPU-bound near this rate on a small machine, and so is the
        // simulator in this process: requests then reach the simulator's clock 50-150 ms
        // apart from where they left, more than the window's 10 ms margin, and a few seconds
        // hold slightly more than 1,000 arrivals although no 1.008 s held more than 1,000
        // starts. Run optimised for the strict check (see the module comment).
        if n.max_in_window > 1_000 {
            println!(
                "NOTE: unoptimised build: {} arrivals in one second ({} answered 130429)",
                n.max_in_window,
                n.violation(130429)
            );
        }
    } else {
        assert!(n.max_in_window <= 1_000, "{n:?}");
        assert_eq!(n.violation(130429), 0, "{n:?}");
    }
    // The target is 950/s; the machine is shared, so only a loose bound is asserted and the
    // figure is printed.
    assert!(rate >= 300.0, "only {rate:.0}/s");
}

// ---------------------------------------------------------------------------------------------
// Pair limit and order per recipient

#[test]
fn pair_limit_and_order_per_recipient() {
    let _machine = shared();
    let mut cfg = sim_config();
    cfg.pair_rate = PairRateConfig {
        period_ms: 1_000,
        burst: 3,
    };
    let sim = Sim::start(cfg);
    let d = Daemon::builder()
        .against(&sim)
        .set("dispatch", "pair_burst = 3")
        .set("dispatch", "pair_interval_ms = 1000")
        .start();

    const RECIPIENTS: usize = 20;
    const EACH: u64 = 6;
    let requests: Vec<Value> = (1..=EACH)
        .flat_map(|seq| (0..RECIPIENTS).map(move |r| seq_template(&recipient(r), seq)))
        .collect();
    // Several batches, so that the dispatcher is busy while more arrive.
    for chunk in requests.chunks(25) {
        d.enqueue_batch(chunk);
    }
    let total = RECIPIENTS as u64 * EACH;
    d.wait_count("sent", total, PATIENCE);

    let n = sim.number();
    println!(
        "pair limit 3 per 1 s burst: {} requests for {total} messages, 131056: {}",
        n.requests,
        n.violation(131056)
    );
    assert_eq!(n.violation(131056), 0, "pair limit exceeded: {n:?}");
    assert_eq!(n.accepted, total);
    assert_rules_kept(&n);
}

#[test]
fn a_message_that_ends_on_a_131056_leaves_its_recipients_pause_to_the_next() {
    let _machine = shared();
    // The simulator lets one message a minute to a recipient through; waq's own budget (45
    // per 6 s) would let them all go.
    let mut cfg = sim_config();
    cfg.pair_rate = PairRateConfig {
        period_ms: 60_000,
        burst: 1,
    };
    let sim = Sim::start(cfg);
    let d = Daemon::builder().against(&sim).start();
    let to = recipient(7);
    let mut short_lived = seq_template(&to, 2);
    short_lived["ttl_s"] = json!(3);
    let ids = d.enqueue_batch(&[seq_template(&to, 1), short_lived, seq_template(&to, 3)]);

    // 1 is accepted; 2 draws a 131056, waits 1 s, draws another, and as the next pause (4 s)
    // would outlast its ttl, it expires. 3 must still wait those 4 s out.
    let expired = d.wait_message(&ids[1], Duration::from_secs(30), |m| {
        m["state"] == "expired"
    });
    let third = d.wait_message(&ids[2], Duration::from_secs(30), |m| {
        first_at(m, "sending").is_some()
    });
    let (ended, tried) = (
        first_at(&expired, "expired").unwrap(),
        first_at(&third, "sending").unwrap(),
    );
    assert!(
        tried >= ended + 3_500,
        "the next message went {} ms after the one that ended on 131056: {expired}\n{third}",
        tried.saturating_sub(ended)
    );
    assert_eq!(expired["last_error"]["meta_code"], 131056, "{expired}");
}

#[test]
fn a_pair_limit_storm_holds_back_only_its_recipient() {
    let _machine = shared();
    // The simulator's pair limit is far tighter than waq's (45 per 6 s): it answers 131056.
    let mut cfg = sim_config();
    cfg.pair_rate = PairRateConfig {
        period_ms: 1_500,
        burst: 2,
    };
    let sim = Sim::start(cfg);
    let d = Daemon::builder()
        .against(&sim)
        .set("dispatch", "max_attempts = 50")
        .start();

    let stormed = recipient(999);
    let storm: Vec<Value> = (1..=6).map(|seq| seq_template(&stormed, seq)).collect();
    let storm_ids = d.enqueue_batch(&storm);
    let others: Vec<Value> = (0..100).map(|i| seq_template(&recipient(i), 1)).collect();
    let other_ids = d.enqueue_batch(&others);

    let sent_states = ["sent", "delivered", "read"];
    let is_sent = |m: &Value| sent_states.iter().any(|s| m["state"] == *s);
    // Everyone else goes out while the stormed recipient's lane still waits: it cannot be done
    // before (6 - 2) × 1.5 s, the others need about 100 / 80 s.
    wait_until(
        "the other recipients' messages sent",
        PATIENCE,
        || {
            other_ids
                .iter()
                .all(|id| is_sent(&d.message(id)))
                .then_some(())
        },
        || d.get("/v1/stats").json()["messages"].to_string(),
    );
    let storm_now: Vec<Value> = storm_ids.iter().map(|id| d.message(id)).collect();
    let storm_done = storm_now.iter().filter(|m| is_sent(m)).count();
    assert!(
        storm_done < storm_ids.len(),
        "the stormed recipient finished before the others: {storm_now:?}"
    );

    let storm_sent: Vec<Value> = storm_ids
        .iter()
        .map(|id| d.wait_message(id, Duration::from_secs(90), is_sent))
        .collect();
    let n = sim.number();
    let attempts: Vec<u64> = storm_sent
        .iter()
        .map(|m| m["attempts"].as_u64().unwrap())
        .collect();
    println!(
        "131056 storm: {} answers 131056; the stormed recipient's attempts per message {attempts:?}; \
         {storm_done} of 6 sent when the other 100 were",
        n.violation(131056)
    );
    assert!(n.violation(131056) > 0, "no storm happened: {n:?}");
    // In order: the simulator saw increasing seq numbers, and the accepted times increase.
    let sent_at: Vec<u64> = storm_sent
        .iter()
        .map(|m| first_at(m, "sent").unwrap())
        .collect();
    assert!(
        sent_at.windows(2).all(|w| w[0] <= w[1]),
        "stormed messages sent out of order: {sent_at:?}"
    );
    assert_eq!(n.accepted, 106);
    assert_rules_kept(&n);
}

#[test]
fn order_per_recipient_survives_failures_and_timeouts() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    // A third of the requests fail: Meta errors, bare 5xx from a proxy, and requests held past
    // the client's timeout (the simulator accepts none of those, so nothing is sent twice).
    sim.faults(&json!({
        "code_131000_share": 0.15, "http_5xx_share": 0.1, "code_2_share": 0.05,
        "timeout_share": 0.05, "timeout_hold_ms": 2000
    }));
    let d = Daemon::builder()
        .against(&sim)
        .set("api", "request_timeout_ms = 300")
        .set("dispatch", "retry_min_ms = 20")
        .set("dispatch", "retry_max_ms = 200")
        .set("dispatch", "max_attempts = 40")
        .start();

    const RECIPIENTS: usize = 15;
    const EACH: u64 = 8;
    let requests: Vec<Value> = (1..=EACH)
        .flat_map(|seq| (0..RECIPIENTS).map(move |r| seq_template(&recipient(r), seq)))
        .collect();
    let ids = d.enqueue_batch(&requests);
    let total = ids.len() as u64;
    d.wait_count("sent", total, Duration::from_secs(90));

    let n = sim.number();
    println!(
        "under faults: {} requests for {total} messages, injected {:?}",
        n.requests, n.errors_injected
    );
    assert!(n.requests > total, "no faults fired: {n:?}");
    assert_eq!(n.accepted, total, "{n:?}");
    assert_eq!(d.count("failed"), 0);
    assert_rules_kept(&n);
    // Per recipient, the accepted times follow the enqueue order too.
    for r in 0..RECIPIENTS {
        let at: Vec<u64> = (0..EACH as usize)
            .map(|seq| first_at(&d.message(&ids[seq * RECIPIENTS + r]), "sent").unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "recipient {r}: {at:?}");
    }
}

#[test]
fn a_rate_limit_burst_slows_the_sender_down_then_it_recovers() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = Daemon::builder()
        .against(&sim)
        .set("dispatch", "retry_min_ms = 50")
        .set("dispatch", "retry_max_ms = 500")
        .set("dispatch", "max_attempts = 40")
        .start();
    // Meta answers 130429 to everything for a second.
    sim.faults(&json!({"rate_limit_for_ms": 1000}));
    let requests: Vec<Value> = (0..150).map(|i| template_request(&recipient(i))).collect();
    d.enqueue_batch(&requests);
    let throttled = wait_until(
        "the sender slowed down",
        PATIENCE,
        || {
            let s = d.get("/v1/stats").json();
            let effective = s["senders"][0]["effective_mps"].as_f64().unwrap();
            (effective < 80.0).then_some(effective)
        },
        || d.get("/v1/stats").json()["senders"].to_string(),
    );
    d.wait_count("sent", 150, PATIENCE);
    let n = sim.number();
    println!(
        "130429 for 1 s: rate went down to {throttled} MPS; {} requests for 150 messages",
        n.requests
    );
    assert!(n.injected("rate_limit") > 0, "{n:?}");
    assert_eq!(n.accepted, 150, "{n:?}");
    assert_eq!(d.count("failed"), 0);
    assert_rules_kept(&n);
}

// ---------------------------------------------------------------------------------------------
// The 24-hour window

/// A free-form text to `to` with a template to send instead when the window is closed.
fn shipped_with_fallback(to: &str) -> Value {
    let mut r = text_request(to, "Your order shipped");
    r["fallback_template"] = json!({
        "name": "order_update", "language": {"code": "en_US"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "4521"}]}]
    });
    r
}

#[test]
fn window_rule_on_the_wire() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    // No margin, so that a window closing 4 s after enqueue is still open at enqueue.
    let d = Daemon::builder()
        .against(&sim)
        .set("dispatch", "window_margin_s = 0")
        .start();

    // Closed window with a fallback: the template goes out instead.
    let with_fallback = shipped_with_fallback("+14155550101");
    let id = d.enqueue(&with_fallback);
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "sent");
    assert_eq!(m["substituted_template"], "order_update", "{m}");
    assert_eq!(m["attempts"], 1, "{m}");

    // Closed window without one: refused at enqueue.
    let r = d.post("/v1/messages", &text_request("+14155550102", "hi"));
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.code(), "window_closed");

    // Open at enqueue (the user wrote 24 h minus 4 s ago), closed when due (in 6 s).
    let r = d.post(
        "/v1/inbound",
        &json!({"from": "+14155550103", "at": format_time(now_ms() - 24 * 3600 * 1000 + 4_000)}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["window_open"], true, "{}", r.text());
    let mut late = text_request("+14155550103", "hi");
    late["send_at"] = json!(format_time(now_ms() + 6_000));
    let id = d.enqueue(&late);
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "failed");
    assert_eq!(m["last_error"]["code"], "window_closed", "{m}");
    assert_eq!(m["last_error"]["meta_code"], Value::Null, "{m}");
    assert_eq!(m["attempts"], 0, "{m}");
    // A retry while the window is still closed would only fail again: refused, as at enqueue,
    // and the message is left as it was.
    let r = d.post(&format!("/v1/messages/{id}/retry"), &json!({}));
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.code(), "window_closed");
    assert!(r.text().contains("POST /v1/inbound"), "{}", r.text());
    let out = d.waq(&["retry", &id]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("`waq inbound --from NUMBER`"), "{said}");
    assert_eq!(d.message(&id)["state"], "failed");
    // The bulk form leaves it out too, and says so.
    let r = d.request("POST", "/v1/messages/retry?code=window_closed", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"retried": 0, "window_closed": 1}));
    let out = d.waq(&["retry", "--code", "window_closed"]);
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("queued 0 messages again; left out 1 free-form message"),
        "{said}"
    );
    assert_eq!(d.message(&id)["state"], "failed");
    // Once the user writes in (to Meta, and so to waq), it goes.
    sim.inbound("+14155550103");
    let r = d.post("/v1/inbound", &json!({"from": "+14155550103"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = d.post(&format!("/v1/messages/{id}/retry"), &json!({}));
    assert_eq!(r.status, 202, "{}", r.text());
    d.wait_message(&id, PATIENCE, |m| m["state"] == "sent");

    let counters = &d.get("/v1/stats").json()["counters"];
    assert_eq!(counters["fallback_substituted"], 1, "{counters}");
    assert_eq!(counters["window_closed_failures"], 1, "{counters}");
    let n = sim.number();
    assert_eq!(
        n.requests, 2,
        "only the fallback template and the retry in the open window reached the API: {n:?}"
    );
    assert_rules_kept(&n);
}

/// Meta sometimes refuses a free-form message outside the window in its answer (400, 131047)
/// rather than by a later `failed` status. waq then forgets the window it believed open: a
/// message with a fallback goes out again as its template, and the next free-form message to
/// that user is refused at enqueue.
#[test]
fn a_131047_in_the_answer_forgets_the_window() {
    let _machine = shared();
    let mut cfg = sim_config();
    cfg.window.answer = WindowAnswer::Error;
    let sim = Sim::start(cfg);
    let d = Daemon::builder().against(&sim).start();
    // waq hears of an inbound message that Meta never saw: the two disagree on the window.
    for from in ["+14155550111", "+14155550112"] {
        let r = d.post("/v1/inbound", &json!({ "from": from }));
        assert_eq!(r.json()["window_open"], true, "{}", r.text());
    }

    let with_fallback = shipped_with_fallback("+14155550111");
    let id = d.enqueue(&with_fallback);
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "sent");
    assert_eq!(m["substituted_template"], "order_update", "{m}");
    assert_eq!(m["attempts"], 2, "{m}");

    let id = d.enqueue(&text_request("+14155550112", "hi"));
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "failed");
    assert_eq!(m["last_error"]["meta_code"], 131047, "{m}");
    assert_eq!(m["attempts"], 1, "{m}");

    for number in ["14155550111", "14155550112"] {
        let w = d.get(&format!("/v1/recipients/{number}"));
        assert_eq!(w.json()["window_open"], false, "{}", w.text());
        let r = d.post(
            "/v1/messages",
            &text_request(&format!("+{number}"), "again"),
        );
        assert_eq!(r.status, 422, "{}", r.text());
        assert_eq!(r.code(), "window_closed");
    }
    let n = sim.number();
    assert_eq!(n.requests, 3, "two free-form sends and one fallback: {n:?}");
}

// ---------------------------------------------------------------------------------------------
// Errors and retries

/// Nothing answers at `api.base_url`: after requests without an answer for a while the sender
/// shows as unreachable in `/v1/health`, `waq health` (exit 1) and the log, while its message
/// is retried without using up attempts; once a simulator answers there, the message goes and
/// health is `ok` again.
#[test]
fn a_graph_api_that_does_not_answer_shows_in_health_until_it_answers() {
    let _machine = shared();
    // Held until the simulator listens on it: refused till then, and nothing else can take it.
    let held = common::HeldPort::new();
    let port = held.port();
    let d = Daemon::builder()
        .without_default_sender()
        .set("api", &format!("base_url = \"http://127.0.0.1:{port}\""))
        .set("dispatch", "retry_min_ms = 50")
        .set("dispatch", "retry_max_ms = 200")
        .set("dispatch", "max_attempts = 100000")
        .toml(&sender_toml("main", SIM_NUMBER, TOKEN, 20))
        .start();
    let r = d.post("/v1/messages", &template_request("+14155550100"));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();

    let h = wait_until(
        "main unreachable in /v1/health",
        PATIENCE,
        || Some(health(&d)).filter(|h| h["status"] == "degraded"),
        || health(&d).to_string(),
    );
    let u = &h["unreachable_senders"][0];
    assert_eq!(u["name"], "main", "{h}");
    assert!(u["failures"].as_u64().unwrap() >= 3, "{h}");
    let last_error = u["last_error"].as_str().unwrap();
    assert!(last_error.contains("connecting"), "{h}");
    assert!(
        u["since"].as_str().is_some_and(|t| parse_time(t).is_ok()),
        "{h}"
    );
    let stats = d.get("/v1/stats").json();
    assert_eq!(
        stats["senders"][0]["unreachable"]["since"], u["since"],
        "{stats}"
    );
    // Requests that never left use up no attempt: an outage does not fail the message.
    let m = d.get(&format!("/v1/messages/{id}")).json();
    assert_eq!(m["attempts"], 0, "{m}");
    assert_eq!(m["last_error"]["code"], "connection", "{m}");
    let out = d.waq(&["health"]);
    assert_eq!(out.status.code(), Some(1), "degraded is exit 1");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("degraded: main cannot reach the Graph API since"),
        "{printed}"
    );
    d.wait_for_log(&format!(
        "the Graph API at http://127.0.0.1:{port} does not answer"
    ));

    // Something answers there at last, if only to refuse the token: not unreachable any more,
    // paused instead.
    let mut cfg = sim_config();
    cfg.token = "another-token".into();
    let sim = Sim::start_held(cfg, held);
    let reason = wait_paused(&d);
    assert!(reason.starts_with("meta_190"), "{reason}");
    assert_eq!(
        health(&d)["unreachable_senders"],
        json!([]),
        "{}",
        health(&d)
    );
    d.wait_for_log("the Graph API serves again");

    // The token fixed at Meta and the sender resumed: the message goes, health clears.
    sim.set_token(TOKEN);
    assert_eq!(d.waq(&["sender", "resume", "main"]).status.code(), Some(0));
    wait_until(
        "the message sent",
        PATIENCE,
        || {
            let m = d.get(&format!("/v1/messages/{id}")).json();
            (m["state"] != "queued" && m["state"] != "retrying" && m["state"] != "sending")
                .then_some(m)
        },
        || d.get(&format!("/v1/messages/{id}")).text(),
    );
    assert!(sim.number().accepted >= 1);
    assert_eq!(health(&d)["status"], "ok", "{}", health(&d));
    assert_eq!(d.waq(&["health"]).status.code(), Some(0));
}

/// Meta down for a while (503, code 2, to every request): the sender shows as unreachable, and
/// while it does, `max_attempts` fails no message (their attempts still count, for the
/// backoff); once Meta serves again, every message goes. Before, an outage of a few minutes
/// failed every message it outlasted by ten attempts.
#[test]
fn an_outage_of_metas_outlasting_max_attempts_fails_no_message() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = Daemon::builder()
        .against(&sim)
        .without_default_sender()
        // A retry every 2 s: 6 attempts before the sender counts as unreachable (3 failures in
        // a row over 10 s), 12 or more by the end of the outage.
        .set("dispatch", "retry_min_ms = 2000")
        .set("dispatch", "retry_max_ms = 2000")
        .set("dispatch", "max_attempts = 8")
        .toml(&sender_toml("main", SIM_NUMBER, TOKEN, 20))
        .start();
    sim.faults(&json!({"phone_number_id": SIM_NUMBER, "outage_for_ms": 24_000}));
    let requests: Vec<Value> = (0..3).map(|i| template_request(&recipient(i))).collect();
    let ids = d.enqueue_batch(&requests);
    let h = wait_until(
        "main unreachable in /v1/health",
        PATIENCE,
        || Some(health(&d)).filter(|h| h["status"] == "degraded"),
        || health(&d).to_string(),
    );
    assert!(
        h["unreachable_senders"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("navailable")),
        "{h}"
    );
    d.wait_count("sent", 3, PATIENCE);
    let attempts: Vec<u64> = ids
        .iter()
        .map(|id| {
            d.get(&format!("/v1/messages/{id}")).json()["attempts"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        attempts.iter().any(|a| *a > 8),
        "no message outlasted max_attempts, so this proves nothing: {attempts:?}"
    );
    wait_until(
        "health ok again",
        PATIENCE,
        || Some(health(&d)).filter(|h| h["status"] == "ok"),
        || health(&d).to_string(),
    );
}

/// A base path Meta does not know (a proxy's prefix, with no proxy in between): Meta answers
/// 2500 (unknown path) to every send. The sender pauses, naming the keys to check, and the
/// message waits unchanged. (A version at the end of the base URL is refused at start.)
#[test]
fn a_base_url_with_a_path_meta_does_not_know_pauses_the_sender() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = Daemon::builder()
        .without_default_sender()
        .set("api", &format!("base_url = \"{}/graph\"", sim.base_url()))
        .toml(&sender_toml("main", SIM_NUMBER, TOKEN, 20))
        .start();
    let r = d.post("/v1/messages", &template_request("+14155550101"));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let reason = wait_paused(&d);
    assert!(reason.starts_with("meta_2500"), "{reason}");
    assert!(reason.contains("check api.base_url"), "{reason}");
    let m = d.get(&format!("/v1/messages/{id}")).json();
    assert_eq!(m["state"], "queued", "{m}");
    assert_eq!(m["attempts"], 0, "{m}");
}

/// The token rotated at Meta, then in the configuration, reloaded while requests sent with the
/// old one are still out: their 190s, answered after the reload, do not pause the sender.
#[test]
fn answers_to_the_old_token_after_a_reload_do_not_pause_the_sender() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    sim.faults(&json!({"latency_ms": 1500}));
    let d = Daemon::builder()
        .without_default_sender()
        .against(&sim)
        .toml(&sender_toml("main", SIM_NUMBER, TOKEN, 20))
        .start();
    let ids: Vec<String> = (0..60)
        .map(|i| d.enqueue(&template_request(&recipient(8_000 + i))))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Meta takes the new token from now: what leaves with the old one meanwhile gets 190,
    // answered 1.5 s later, after the reload below.
    sim.set_token("rotated-token");
    std::thread::sleep(Duration::from_millis(300));
    d.write_config(&d.config_text().replace(TOKEN, "rotated-token"));
    d.sighup();
    d.wait_for_log("configuration reloaded");
    wait_until(
        "all sent",
        PATIENCE,
        || {
            ids.iter()
                .all(|id| d.get(&format!("/v1/messages/{id}")).json()["state"] == "sent")
                .then_some(())
        },
        || health(&d).to_string(),
    );
    assert_eq!(health(&d)["status"], "ok", "{}", health(&d));
    assert!(
        sim.number().violation(190) > 0,
        "requests with the old token were answered 190 (else this test proves nothing)"
    );
    assert!(!d.log().contains("sender paused"), "{}", d.log());
}

/// A daemon against `sim` that retries fast.
fn fast_retries(sim: &Sim) -> Daemon {
    Daemon::builder()
        .against(sim)
        .set("dispatch", "retry_min_ms = 50")
        .set("dispatch", "retry_max_ms = 200")
        .start()
}

/// `dispatch.max_age_s` counts from when a message falls due: a scheduled message gets its
/// retries after its `send_at`, and a message with its own `ttl_s` lives by that alone.
#[test]
fn max_age_counts_from_send_at_and_gives_way_to_ttl() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = Daemon::builder()
        .against(&sim)
        .set("dispatch", "retry_min_ms = 200")
        .set("dispatch", "retry_max_ms = 400")
        .set("dispatch", "max_age_s = 2")
        .set("dispatch", "max_attempts = 1000")
        .start();

    // Due in 3 s, past max_age_s from its enqueue; its first try fails and is retried.
    let mut scheduled = template_request("+14155550121");
    scheduled["send_at"] = json!(format_time(now_ms() + 3_000));
    let id = d.enqueue(&scheduled);
    sim.faults(&json!({"fail_next_requests": 1}));
    let m = d.wait_message(&id, PATIENCE, |m| {
        m["state"] == "sent" || m["state"] == "failed"
    });
    assert_eq!(m["state"], "sent", "{m}");
    assert_eq!(m["attempts"], 2, "{m}");

    // An outage longer than max_age_s, within the message's ttl_s: it is sent afterwards.
    sim.faults(&json!({"outage_for_ms": 3_500}));
    let mut with_ttl = template_request("+14155550122");
    with_ttl["ttl_s"] = json!(600);
    let with_ttl = d.enqueue(&with_ttl);
    // Without a ttl_s, the same outage ends in max_age_exceeded.
    let without = d.enqueue(&template_request("+14155550123"));
    let m = d.wait_message(&with_ttl, PATIENCE, |m| {
        m["state"] == "sent" || m["state"] == "failed"
    });
    assert_eq!(m["state"], "sent", "{m}");
    let m = d.wait_message(&without, PATIENCE, |m| m["state"] == "failed");
    let last = m["history"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["detail"].as_str().unwrap().contains("max_age_s"),
        "{m}"
    );
}

/// A throttle is the number's, not the message's: it does not use up `max_attempts`.
#[test]
fn a_throttle_does_not_use_up_the_attempts() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = Daemon::builder()
        .against(&sim)
        .set("dispatch", "retry_min_ms = 100")
        .set("dispatch", "retry_max_ms = 200")
        .set("dispatch", "max_attempts = 2")
        .start();
    sim.faults(&json!({"rate_limit_for_ms": 2_000}));
    let ids: Vec<String> = (0..5)
        .map(|i| d.enqueue(&template_request(&format!("+1415555013{i}"))))
        .collect();
    for id in &ids {
        let m = d.wait_message(id, PATIENCE, |m| {
            m["state"] == "sent" || m["state"] == "failed"
        });
        assert_eq!(m["state"], "sent", "{m}");
    }
    let n = sim.number();
    assert!(n.injected("rate_limit") > 0, "{n:?}");
}

#[test]
fn throttled_retries_back_off_further_each_time() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = Daemon::builder()
        .against(&sim)
        .set("dispatch", "retry_min_ms = 50")
        .set("dispatch", "retry_max_ms = 60000")
        .start();
    sim.faults(&json!({"rate_limit_for_ms": 3_000}));
    let id = d.enqueue(&template_request("+14155550140"));
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "sent");
    // "meta_130429; retry in N ms": growing bounds, so not every wait is the 50 ms floor.
    let waits: Vec<u64> = m["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["detail"].as_str()?.strip_prefix("meta_130429; retry in "))
        .filter_map(|rest| rest.strip_suffix(" ms")?.parse().ok())
        .collect();
    assert!(!waits.is_empty(), "{m}");
    assert!(waits.iter().any(|w| *w > 50), "{waits:?}");
    // Three seconds of throttling took a few growing waits, not one every 50 ms.
    assert!(waits.len() < 12, "{waits:?}");
}

#[test]
fn server_errors_are_retried_until_sent() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = fast_retries(&sim);
    sim.faults(&json!({"fail_next_requests": 2}));

    let id = d.enqueue(&template_request("+14155550111"));
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "sent");
    assert_eq!(m["attempts"], 3, "{m}");
    assert!(m["wamid"].is_string(), "{m}");
    assert_eq!(m["last_error"], Value::Null, "{m}");
    let retries = m["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "retrying")
        .count();
    assert_eq!(retries, 2, "{m}");

    let n = sim.number();
    assert_eq!(n.injected("http_5xx"), 2, "{n:?}");
    assert_eq!((n.requests, n.accepted), (3, 1), "{n:?}");
    assert_rules_kept(&n);
}

#[test]
fn server_errors_that_use_up_the_attempts_count_as_transient() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = Daemon::builder()
        .against(&sim)
        .set("dispatch", "retry_min_ms = 20")
        .set("dispatch", "retry_max_ms = 40")
        .set("dispatch", "max_attempts = 2")
        .start();
    sim.faults(&json!({"http_5xx_share": 1.0}));
    let id = d.enqueue(&template_request("+14155550112"));
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "failed");
    assert_eq!(m["attempts"], 2, "{m}");
    assert_eq!(d.metric("waq_sends_failed_transient_total"), 2);
    assert_eq!(d.metric("waq_sends_failed_permanent_total"), 0);
}

#[test]
fn not_on_whatsapp_fails_after_one_attempt() {
    let _machine = shared();
    let mut cfg = sim_config();
    cfg.not_on_whatsapp = vec!["14155550199".into()];
    let sim = Sim::start(cfg);
    let d = fast_retries(&sim);

    let id = d.enqueue(&template_request("+14155550199"));
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "failed");
    assert_eq!(m["attempts"], 1, "{m}");
    assert_eq!(m["last_error"]["meta_code"], 131026, "{m}");
    assert_eq!(m["last_error"]["code"], "meta_131026", "{m}");
    // Permanent: it stays failed, and nothing more is asked of the API.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.message(&id)["state"], "failed");
    let n = sim.number();
    assert_eq!(n.requests, 1, "{n:?}");
    assert_rules_kept(&n);
}

/// Sends `count` templates with the simulator refusing the daemon's token: the sender pauses,
/// the messages stay queued. Answers their ids.
fn pause_by_bad_token(sim: &Sim, d: &Daemon, count: usize) -> Vec<String> {
    sim.set_token("rotated-token");
    let requests: Vec<Value> = (0..count)
        .map(|i| template_request(&recipient(500 + i)))
        .collect();
    let ids = d.enqueue_batch(&requests);
    let reason = wait_paused(d);
    assert!(reason.contains("190"), "{reason}");
    for id in &ids {
        // Attempts that were in flight when the first 190 came back end the same way.
        let m = d.wait_message(id, PATIENCE, |m| m["state"] == "queued");
        assert_eq!(
            m["attempts"], 0,
            "a paused send gives its attempt back: {m}"
        );
    }
    ids
}

fn assert_paused_in_stats(d: &Daemon) {
    let stats = d.get("/v1/stats").json();
    let main = &stats["senders"][0];
    assert_eq!(main["name"], "main", "{stats}");
    assert_eq!(main["paused"], true, "{stats}");
    assert!(
        main["pause_reason"].as_str().unwrap_or("").contains("190"),
        "{stats}"
    );
    let h = health(d);
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["paused_senders"][0]["name"], "main", "{h}");
}

/// A paused sender asks nothing of the API.
fn assert_quiet_while_paused(sim: &Sim) {
    let before = sim.number().requests;
    std::thread::sleep(Duration::from_millis(500));
    let after = sim.number();
    assert_eq!(after.requests, before, "requests while paused: {after:?}");
    assert_eq!(
        after.violation(190),
        after.requests,
        "every request so far got 190: {after:?}"
    );
}

#[test]
fn a_bad_token_pauses_the_sender_and_a_reload_with_the_right_one_resumes_it() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = fast_retries(&sim);
    let ids = pause_by_bad_token(&sim, &d, 5);
    assert_paused_in_stats(&d);
    assert_quiet_while_paused(&sim);
    for id in &ids {
        assert_eq!(d.message(id)["state"], "queued");
    }
    // A pause fails nothing.
    assert_eq!(d.metric("waq_sends_failed_permanent_total"), 0);

    let fixed = d
        .config_text()
        .replace(&format!("token = {TOKEN:?}"), "token = \"rotated-token\"");
    assert!(fixed.contains("rotated-token"));
    d.write_config(&fixed);
    d.sighup();
    for id in &ids {
        let m = d.wait_message(id, PATIENCE, |m| m["state"] == "sent");
        assert_eq!(m["attempts"], 1, "{m}");
    }
    assert_eq!(health(&d)["status"], "ok");
    let n = sim.number();
    assert_eq!(n.accepted, 5, "{n:?}");
    assert_rules_kept(&n);
}

#[test]
fn a_batch_for_two_senders_is_sent_by_both() {
    let _machine = shared();
    let sim = Sim::start(two_numbers());
    let d = Daemon::builder()
        .against(&sim)
        .toml(&sender_toml("second", SECOND_NUMBER, TOKEN, 20))
        .start();
    // Runs of one sender and the other, so the batch is handed to the scheduler in several
    // groups: main, main, second, main, second, second, ...
    let senders = [
        "main", "main", "second", "main", "second", "second", "main", "second",
    ];
    let requests: Vec<Value> = senders
        .iter()
        .enumerate()
        .map(|(i, sender)| {
            let mut r = template_request(&recipient(i));
            r["sender"] = json!(sender);
            r
        })
        .collect();
    let ids = d.enqueue_batch(&requests);
    d.wait_count("sent", senders.len() as u64, PATIENCE);
    for (id, sender) in ids.iter().zip(senders) {
        let m = d.get(&format!("/v1/messages/{id}")).json();
        assert_eq!(
            (m["state"].as_str(), m["sender"].as_str()),
            (Some("sent"), Some(sender)),
            "{m}"
        );
    }
    let accepted = |number: &str| sim.stats().numbers[number].accepted;
    assert_eq!(accepted(SIM_NUMBER), 4);
    assert_eq!(accepted(SECOND_NUMBER), 4);
}

#[test]
fn a_sender_added_by_a_reload_starts_sending() {
    let _machine = shared();
    let sim = Sim::start(two_numbers());
    let d = fast_retries(&sim);
    let mut request = template_request("+14155550177");
    request["sender"] = json!("second");
    let body = request.to_string();
    let refused = d.request("POST", "/v1/messages", Some(body.as_bytes()));
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "unknown_sender");

    let added = format!(
        "{}\n{}",
        d.config_text(),
        sender_toml("second", SECOND_NUMBER, TOKEN, 10)
    );
    d.write_config(&added);
    d.sighup();
    d.wait_for_log("new sender configured and started");
    let id = d.enqueue(&request);
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "sent");
    assert_eq!(m["sender"], "second", "{m}");
    assert_eq!(sim.stats().numbers[SECOND_NUMBER].accepted, 1);
}

#[test]
fn a_global_cap_set_by_a_reload_holds_every_sliding_second() {
    let _machine = shared();
    let (sim, d) = one_sender_at_20_mps();
    // The sender alone would send these 12 within one second; the cap, set by a reload, spreads
    // them over three.
    d.write_config(&format!(
        "{}\n[dispatch]\nglobal_mps = 4\n",
        d.config_text()
    ));
    d.sighup();
    d.wait_for_log("configuration reloaded");
    // The stats say why the sender goes slower than its own mps.
    assert_eq!(d.get("/v1/stats").json()["global_mps"], 4);
    let requests: Vec<Value> = (0..12).map(|i| template_request(&recipient(i))).collect();
    d.enqueue_batch(&requests);
    d.wait_count("sent", 12, PATIENCE);
    let n = sim.number();
    assert!(n.max_in_window <= 4, "{n:?}");
    assert_eq!(n.requests, 12, "{n:?}");
}

#[test]
fn a_paused_sender_resumes_on_request() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = fast_retries(&sim);
    let ids = pause_by_bad_token(&sim, &d, 3);
    assert_quiet_while_paused(&sim);

    sim.set_token(TOKEN);
    let r = d.request("POST", "/v1/senders/main/resume", None);
    assert_eq!(r.status, 200, "{}", r.text());
    for id in &ids {
        d.wait_message(id, PATIENCE, |m| m["state"] == "sent");
    }
    assert_eq!(health(&d)["status"], "ok");
    assert_rules_kept(&sim.number());
}

#[test]
fn messages_queued_while_paused_survive_a_restart() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let mut d = fast_retries(&sim);
    let ids = pause_by_bad_token(&sim, &d, 10);

    let status = d.sigterm();
    assert!(status.success(), "{status}\n{}", d.log());
    let fixed = d
        .config_text()
        .replace(&format!("token = {TOKEN:?}"), "token = \"rotated-token\"");
    d.write_config(&fixed);
    d.restart();
    for id in &ids {
        let m = d.wait_message(id, PATIENCE, |m| m["state"] == "sent");
        assert_eq!(m["attempts"], 1, "{m}");
    }
    let n = sim.number();
    assert_eq!(n.accepted, 10, "{n:?}");
    assert_rules_kept(&n);
}

// ---------------------------------------------------------------------------------------------
// Scheduling, ttl, cancel

#[test]
fn send_at_is_not_sent_before_its_time() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = fast_retries(&sim);
    let send_at = now_ms() + 3_000;
    let mut r = template_request("+14155550121");
    r["send_at"] = json!(format_time(send_at));
    let id = d.enqueue(&r);
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "sent");
    let sending = first_at(&m, "sending").unwrap();
    assert!(
        sending >= send_at,
        "sent {} ms before send_at: {m}",
        send_at - sending
    );
    assert_rules_kept(&sim.number());
}

#[test]
fn ttl_and_cancel_while_the_sender_is_paused() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = fast_retries(&sim);
    let paused = pause_by_bad_token(&sim, &d, 1);

    let mut short = template_request("+14155550131");
    short["ttl_s"] = json!(1);
    let expiring = d.enqueue(&short);
    let cancelled = d.enqueue(&template_request("+14155550132"));
    let r = d.delete(&format!("/v1/messages/{cancelled}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "cancelled");
    let m = d.wait_message(&expiring, PATIENCE, |m| m["state"] != "queued");
    assert_eq!(m["state"], "expired", "{m}");
    // Never tried, so no error of Meta's says why it ended: its ttl does.
    assert_eq!(m["last_error"]["code"], "ttl_expired", "{m}");

    sim.set_token(TOKEN);
    let r = d.request("POST", "/v1/senders/main/resume", None);
    assert_eq!(r.status, 200, "{}", r.text());
    d.wait_message(&paused[0], PATIENCE, |m| m["state"] == "sent");
    // Enqueued after both: once it is sent, the loop has picked both (by id order) and
    // neither went out.
    let after = d.enqueue(&template_request("+14155550133"));
    d.wait_message(&after, PATIENCE, |m| m["state"] == "sent");
    for (id, state) in [(&expiring, "expired"), (&cancelled, "cancelled")] {
        let m = d.message(id);
        assert_eq!(m["state"], state, "{m}");
        assert_eq!(m["attempts"], 0, "{m}");
        assert_eq!(m["wamid"], Value::Null, "{m}");
    }
    let n = sim.number();
    assert_eq!(n.accepted, 2, "{n:?}");
    assert_rules_kept(&n);
}

#[test]
fn a_message_put_back_by_a_pause_still_expires() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    let d = fast_retries(&sim);
    sim.set_token("rotated-token");
    let mut r = template_request("+14155550141");
    r["ttl_s"] = json!(2);
    let id = d.enqueue(&r);
    wait_paused(&d);
    // Its one attempt got 190 and put it back in the queue of the paused sender.
    let m = d.wait_message(&id, PATIENCE, |m| {
        m["state"] != "queued" && m["state"] != "sending"
    });
    assert_eq!(m["state"], "expired", "{m}");
    assert_eq!(m["attempts"], 0, "{m}");
    let n = sim.number();
    assert_eq!((n.requests, n.violation(190)), (1, 1), "{n:?}");
}

// ---------------------------------------------------------------------------------------------
// Graceful stop

#[test]
fn sigterm_with_requests_in_flight_exits_0_and_loses_nothing() {
    let _machine = shared();
    let sim = Sim::start(sim_config());
    // Every answer takes a while, so the stop comes while requests are out.
    sim.faults(&json!({"latency_ms": 1500}));
    let mut d = fast_retries(&sim);
    let requests: Vec<Value> = (0..20)
        .map(|i| template_request(&recipient(500 + i)))
        .collect();
    let ids = d.enqueue_batch(&requests);
    wait_until(
        "requests in flight at the simulator",
        PATIENCE,
        || (sim.number().requests >= 5).then_some(()),
        || format!("{:?}", sim.number()),
    );

    let status = d.sigterm();
    assert!(status.success(), "{status}\n{}", d.log());
    // The stop waited for the requests it had started and recorded their outcomes.
    let in_flight_at_stop = sim.number().requests;
    sim.faults(&json!({"latency_ms": 0}));
    d.restart();
    for id in &ids {
        let m = d.wait_message(id, PATIENCE, |m| m["state"] == "sent");
        let history = m["history"].as_array().cloned().unwrap_or_default();
        let sending = history.iter().filter(|h| h["state"] == "sending").count();
        assert_eq!(sending, 1, "sent once, never re-sent after the stop: {m}");
    }
    let n = sim.number();
    assert_eq!(n.accepted, 20, "every message exactly once: {n:?}");
    println!(
        "graceful stop: {in_flight_at_stop} requests had reached the simulator by the stop; all 20 sent exactly once"
    );
}

// ---------------------------------------------------------------------------------------------
// Meta's messaging limit

/// A sender with `messaging_limit = 2` reaches two new users outside their windows, then holds
/// the third (no request, `retrying` with a `held:` entry, waiting for the oldest reach to
/// leave the 24 hours) while users already counted, and users whose window is open, still get
/// their messages. A user Meta refused (131026) was reached by nothing and frees its place.
/// The count is in the store: a restart keeps holding.
#[test]
fn the_messaging_limit_holds_new_users_past_it_across_a_restart() {
    let _machine = shared();
    let mut cfg = sim_config();
    cfg.not_on_whatsapp.push("+14155550320".into());
    let sim = Sim::start(cfg);
    let mut d = Daemon::builder()
        .against(&sim)
        .without_default_sender()
        .toml(&format!(
            "{}messaging_limit = 2\nportfolio = \"acme\"\n",
            sender_toml("main", SIM_NUMBER, TOKEN, 80)
        ))
        .start();
    let sent = |id: &str| d.wait_message(id, PATIENCE, |m| m["state"] == "sent");

    // Not on WhatsApp: Meta refuses it, so it takes no place.
    let refused = d.enqueue(&template_request("+14155550320"));
    let m = d.wait_message(&refused, PATIENCE, |m| m["state"] == "failed");
    assert_eq!(m["last_error"]["meta_code"], 131026, "{m}");

    let first = d.enqueue(&template_request("+14155550311"));
    sent(&first);
    let second = d.enqueue(&shipped_with_fallback("+14155550312"));
    let m = sent(&second);
    assert_eq!(m["substituted_template"], "order_update", "{m}");

    // An open window is not counted, for free-form and template alike.
    sim.inbound("14155550301");
    let r = d.post("/v1/inbound", &json!({"from": "+14155550301"}));
    assert_eq!(r.status, 200, "{}", r.text());
    sent(&d.enqueue(&text_request("+14155550301", "hi")));
    sent(&d.enqueue(&template_request("+14155550301")));

    let held = d.enqueue(&template_request("+14155550313"));
    let m = d.wait_message(&held, PATIENCE, |m| m["state"] == "retrying");
    let entry = m["history"].as_array().unwrap().last().unwrap().clone();
    let detail = entry["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("held: ") && detail.contains("messaging_limit"),
        "{m}"
    );
    assert_eq!(m["attempts"], 0, "{m}");
    let first_sent_at = first_at(&d.message(&first), "sending").unwrap();
    let next = parse_time(m["next_attempt_at"].as_str().unwrap()).unwrap();
    assert!(
        next.abs_diff(first_sent_at + 24 * 3600 * 1000) < 1_000,
        "it waits for the first reach to leave the 24 hours: {m}"
    );

    // A user already counted is reached again.
    sent(&d.enqueue(&template_request("+14155550311")));

    let limit = |d: &Daemon| d.get("/v1/stats").json()["senders"][0]["messaging_limit"].clone();
    let l = limit(&d);
    assert_eq!(
        (&l["portfolio"], &l["limit"], &l["reached_24h"]),
        (&json!("acme"), &json!(2), &json!(2)),
        "{l}"
    );
    assert!(l["full_until"].is_string(), "{l}");
    let h = health(&d);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["senders_at_messaging_limit"][0]["name"], "main", "{h}");
    assert!(d.metric("waq_messaging_limit_holds_total") >= 1);
    let metrics = d.get("/metrics").text();
    assert!(
        metrics.contains("waq_sender_messaging_reached_24h{sender=\"main\"} 2"),
        "{metrics}"
    );

    let out = d.waq(&["stats"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("messaging limit 2 of 2 users in 24 h (new users held until "),
        "{stdout}"
    );
    let out = d.waq(&["health"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("ok\nmain is at its messaging limit (2 of 2 users"),
        "{stdout}"
    );

    d.restart();
    assert_eq!(limit(&d)["reached_24h"], 2);
    let m = d.message(&held);
    assert_eq!(m["state"], "retrying", "{m}");
    // A new user after the restart is held too, and never reaches the API.
    let after = d.enqueue(&template_request("+14155550314"));
    d.wait_message(&after, PATIENCE, |m| m["state"] == "retrying");
    let n = sim.number();
    assert_eq!(
        n.requests, 6,
        "the refused one, 2 new users, 2 to an open window, 1 to a counted user: {n:?}"
    );

    // The held user writes in: with their window open the message no longer counts, and it
    // goes now rather than at its promised time. The other held user still waits.
    sim.inbound("14155550313");
    let r = d.post("/v1/inbound", &json!({"from": "+14155550313"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let m = d.wait_message(&held, PATIENCE, |m| m["state"] == "sent");
    assert_eq!(m["attempts"], 1, "{m}");
    assert_eq!(limit(&d)["reached_24h"], 2, "not counted");
    assert_eq!(d.message(&after)["state"], "retrying");
    assert_eq!(sim.number().requests, 7);
    assert_rules_kept(&sim.number());
}

/// `POST /v1/messages/retry?code=&to=&sender=` puts back every failed message with that
/// `last_error.code` (of the recipient, of the sender), and no other: they go to Meta again.
#[test]
fn failed_messages_are_put_back_by_their_error_code() {
    let _machine = shared();
    let mut cfg = sim_config();
    cfg.not_on_whatsapp = vec!["+14155550401".into(), "+14155550402".into()];
    let sim = Sim::start(cfg);
    let d = Daemon::builder().against(&sim).start();
    let failed = |id: &str, code: &str, tries: usize| {
        d.wait_message(id, PATIENCE, |m| {
            let retries = m["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| h["detail"] == "retry requested")
                .count();
            m["state"] == "failed" && retries == tries
        });
        assert_eq!(d.message(id)["last_error"]["code"], code);
    };
    let a = d.enqueue(&template_request("+14155550401"));
    let b = d.enqueue(&template_request("+14155550402"));
    let mut unknown = template_request("+14155550403");
    unknown["message"]["template"]["name"] = json!("no_such_template");
    let c = d.enqueue(&unknown);
    failed(&a, "meta_131026", 0);
    failed(&b, "meta_131026", 0);
    failed(&c, "meta_132001", 0);

    let r = d.request("POST", "/v1/messages/retry", None);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"]["field"], "code");
    let r = d.request("POST", "/v1/messages/retry?code=", None);
    assert_eq!((r.status, r.code()), (422, "invalid_parameter".into()));

    let r = d.request(
        "POST",
        "/v1/messages/retry?code=meta_131026&to=%2B1%20415%20555%200401",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"retried": 1, "window_closed": 0}));
    failed(&a, "meta_131026", 1);
    assert_eq!(d.message(&a)["attempts"], 1, "attempts start again");

    let out = d.waq(&["retry", "--code", "meta_131026"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "queued 2 messages again\n"
    );
    failed(&a, "meta_131026", 2);
    failed(&b, "meta_131026", 1);
    failed(&c, "meta_132001", 0);
    let n = sim.number();
    assert_eq!(n.requests, 6, "3 sends, then 1 and 2 again: {n:?}");
    assert_rules_kept(&n);
}
