//! The whole loop over loopback HTTP: the daemon sends to the simulator, the simulator's signed
//! webhooks come back to the daemon's webhook listener (same app secret) and move messages to
//! `delivered` and `read`, and a simulated user's message opens the 24-hour window in waq.

mod common;

use serde_json::{json, Value};

use common::{
    sender_toml, sim_config, template_request, text_request, wait_until, Daemon, DaemonBuilder,
    HeldPort, Sim, PATIENCE, SIM_NUMBER, TOKEN,
};
use waq::sim::{SimConfig, StatusConfig};

/// The simulator, with webhooks to a daemon that listens for them, and that daemon.
fn start(statuses: StatusConfig) -> (Sim, Daemon) {
    start_with(statuses, |_| {})
}

/// Like `start`, with the simulator's configuration adjusted by `tweak`.
///
/// Each needs the other's address at start, and neither port may be picked here and bound
/// later (another test could take it meanwhile): the daemon starts first, its webhook on a
/// port the kernel picks, against the simulator's port held until the simulator serves on it.
fn start_with(statuses: StatusConfig, tweak: impl FnOnce(&mut SimConfig)) -> (Sim, Daemon) {
    start_daemon_with(statuses, tweak, Daemon::builder())
}

/// Like `start_with`, with the daemon built from `builder`.
fn start_daemon_with(
    statuses: StatusConfig,
    tweak: impl FnOnce(&mut SimConfig),
    builder: DaemonBuilder,
) -> (Sim, Daemon) {
    let mut cfg = sim_config();
    tweak(&mut cfg);
    let secret = cfg.app_secret.clone();
    let sim_port = HeldPort::new();
    let d = builder
        .set("api", &format!("base_url = \"http://{}\"", sim_port.addr()))
        .set("webhook", "listen = \"127.0.0.1:0\"")
        .set("webhook", "path = \"/webhook\"")
        .set("webhook", &format!("app_secret = {secret:?}"))
        .start();
    cfg.webhook.url = Some(format!("http://{}/webhook", d.webhook_addr()));
    cfg.webhook.retry_backoff_ms = 50;
    cfg.statuses = statuses;
    let sim = Sim::start_held(cfg, sim_port);
    (sim, d)
}

/// Waits until the simulator has delivered every webhook it scheduled.
fn wait_webhooks_drained(sim: &Sim) {
    wait_until(
        "the simulator's webhooks delivered",
        PATIENCE,
        || (sim.stats().webhooks_pending == 0).then_some(()),
        || format!("{:?}", sim.stats().webhooks),
    );
}

fn states(m: &Value) -> Vec<String> {
    m["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn status_webhooks_move_messages_to_delivered_and_read() {
    // Jitter larger than the gaps between statuses: they arrive out of order, some
    // `delivered` twice, some skipped (read at once), as Meta's do.
    let (sim, d) = start(StatusConfig {
        sent_ms: 20,
        delivered_ms: 60,
        read_ms: 120,
        jitter_ms: 100,
        read_without_delivered_share: 0.2,
        duplicate_delivered_share: 0.3,
        never_read_share: 0.0,
    });
    let requests: Vec<Value> = (0..30)
        .map(|i| template_request(&format!("+1415555{i:04}")))
        .collect();
    let ids = d.enqueue_batch(&requests);
    for id in &ids {
        d.wait_message(id, PATIENCE, |m| m["state"] == "read");
    }
    wait_webhooks_drained(&sim);

    // Every status is in; late `delivered`s and duplicates changed nothing back.
    for id in &ids {
        let m = d.message(id);
        assert_eq!(m["state"], "read", "{m}");
        assert!(m["wamid"].as_str().unwrap().starts_with("wamid."), "{m}");
        let h = states(&m);
        let read_at = h.iter().position(|s| s == "read").unwrap();
        assert!(
            h[read_at..].iter().all(|s| s == "read"),
            "state went back after read: {h:?}"
        );
        assert_eq!(h.iter().filter(|s| *s == "read").count(), 1, "{h:?}");
    }
    let stats = sim.stats();
    assert_eq!(stats.webhooks.failed, 0, "{:?}", stats.webhooks);
    assert!(
        stats.webhooks.statuses >= 30 * 3 - 30,
        "{:?}",
        stats.webhooks
    );
    let counters = &d.get("/v1/stats").json()["counters"];
    assert_eq!(counters["webhooks_rejected"], 0, "{counters}");
    // At least every `read` changed a message.
    assert!(
        counters["statuses_applied"].as_u64().unwrap() >= 30,
        "{counters}"
    );
    assert_eq!(stats.violation(131047), 0);
}

#[test]
fn a_user_message_opens_the_window_and_free_form_goes_out_as_text() {
    let (sim, d) = start(StatusConfig {
        sent_ms: 20,
        delivered_ms: 40,
        read_ms: 60,
        ..StatusConfig::default()
    });
    let fallback = json!({"name": "order_update", "language": {"code": "en_US"},
                          "components": [{"type": "body", "parameters": [{"type": "text", "text": "4521"}]}]});
    let recipient = |n: &str| {
        let r = d.get(&format!("/v1/recipients/{n}?sender=main"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };

    assert_eq!(recipient("14155550177")["window_open"], false);
    let answer = sim.inbound("+14155550177");
    assert_eq!(answer["webhook"], true, "{answer}");
    // The signed `messages` webhook reaches the daemon and opens the window there.
    let w = wait_until(
        "the window open in waq",
        PATIENCE,
        || Some(recipient("14155550177")).filter(|w| w["window_open"] == true),
        || recipient("14155550177").to_string(),
    );
    assert!(w["last_inbound_at"].is_string(), "{w}");

    // Open window: the text goes out as text, although it has a fallback.
    let mut open = text_request("+14155550177", "Your order shipped");
    open["fallback_template"] = fallback.clone();
    let open_id = d.enqueue(&open);
    // Closed window (nobody wrote): the fallback template goes out instead.
    let mut closed = text_request("+14155550178", "Your order shipped");
    closed["fallback_template"] = fallback;
    let closed_id = d.enqueue(&closed);
    // Open window and no fallback: accepted at enqueue.
    let plain_id = d.enqueue(&text_request("+14155550177", "Anything else?"));

    for id in [&open_id, &closed_id, &plain_id] {
        d.wait_message(id, PATIENCE, |m| m["state"] == "read");
    }
    assert_eq!(d.message(&open_id)["substituted_template"], Value::Null);
    assert_eq!(d.message(&open_id)["type"], "text");
    assert_eq!(d.message(&plain_id)["substituted_template"], Value::Null);
    assert_eq!(
        d.message(&closed_id)["substituted_template"],
        "order_update"
    );

    wait_webhooks_drained(&sim);
    let n = sim.number();
    // Had a text gone to a closed window, the simulator would have counted it and failed it.
    assert_eq!(n.violation(131047), 0, "{n:?}");
    assert_eq!((n.accepted, n.inbound), (3, 1), "{n:?}");
}

/// Brazil: dialled with the ninth digit, known to WhatsApp by the 12-digit wa_id.
const DIALLED: &str = "+5511987654321";
const WA_ID: &str = "551187654321";

fn fast_statuses() -> StatusConfig {
    StatusConfig {
        sent_ms: 20,
        delivered_ms: 40,
        read_ms: 60,
        ..StatusConfig::default()
    }
}

/// The simulator knows the dialled number under `WA_ID`, as Meta does for such users.
fn start_brazil() -> (Sim, Daemon) {
    start_with(fast_statuses(), |cfg| {
        cfg.wa_ids.insert(DIALLED.into(), WA_ID.into());
    })
}

fn text_with_fallback(to: &str) -> Value {
    let mut m = text_request(to, "Seu pedido foi enviado");
    m["fallback_template"] = json!({"name": "order_update", "language": {"code": "en_US"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "4521"}]}]});
    m
}

fn window_open(d: &Daemon, number: &str) -> bool {
    let r = d.get(&format!("/v1/recipients/{number}?sender=main"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["window_open"] == true
}

fn wait_window_open(d: &Daemon, number: &str) {
    wait_until(
        &format!("the window of {number} open in waq"),
        PATIENCE,
        || window_open(d, number).then_some(()),
        || {
            d.get(&format!("/v1/recipients/{number}?sender=main"))
                .text()
        },
    );
}

#[test]
fn an_inbound_from_the_wa_id_opens_the_window_of_the_number_dialled() {
    let (sim, d) = start_brazil();
    // A first contact is a template; Meta's answer tells waq the number's wa_id.
    let first = d.enqueue(&template_request(DIALLED));
    d.wait_message(&first, PATIENCE, |m| m["state"] == "read");

    // The user replies: Meta's webhook says `from` the wa_id, not the dialled number.
    let answer = sim.inbound(WA_ID);
    assert_eq!(answer["from"], WA_ID, "{answer}");
    wait_window_open(&d, "5511987654321");
    assert!(window_open(&d, WA_ID));

    // So the free-form text goes out as text, not as its fallback, and Meta delivers it.
    let id = d.enqueue(&text_with_fallback(DIALLED));
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "read");
    assert_eq!(m["type"], "text", "{m}");
    assert_eq!(m["substituted_template"], Value::Null, "{m}");
    // Nor is a text without a fallback refused at enqueue.
    let plain = d.enqueue(&text_request(DIALLED, "Mais alguma coisa?"));
    d.wait_message(&plain, PATIENCE, |m| m["state"] == "read");

    wait_webhooks_drained(&sim);
    let n = sim.number();
    assert_eq!(n.violation(131047), 0, "{n:?}");
    assert_eq!((n.accepted, n.inbound), (3, 1), "{n:?}");
}

#[test]
fn without_a_send_the_wa_id_opens_only_its_own_window_until_one_is_answered() {
    let (sim, d) = start_brazil();
    // Nothing was sent to the dialled number yet: waq cannot know the two are one user.
    sim.inbound(WA_ID);
    wait_window_open(&d, WA_ID);
    assert!(!window_open(&d, "5511987654321"));
    let refused = d.post("/v1/messages", &text_request(DIALLED, "Oi"));
    assert_eq!(
        (refused.status, refused.code()),
        (422, "window_closed".to_string())
    );

    // As before: the text goes out as its fallback template, and Meta has nothing to fail.
    let id = d.enqueue(&text_with_fallback(DIALLED));
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "read");
    assert_eq!(m["substituted_template"], "order_update", "{m}");

    // That send's answer named the wa_id: its open window now counts for the dialled number.
    assert!(window_open(&d, "5511987654321"));
    let id = d.enqueue(&text_with_fallback(DIALLED));
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "read");
    assert_eq!(m["substituted_template"], Value::Null, "{m}");

    wait_webhooks_drained(&sim);
    let n = sim.number();
    assert_eq!(n.violation(131047), 0, "{n:?}");
    assert_eq!((n.accepted, n.inbound), (2, 1), "{n:?}");
}

#[test]
fn a_retried_message_drops_the_wamid_of_its_earlier_attempt() {
    let (sim, d) = start(fast_statuses());
    // waq is told the customer wrote (the simulator is not): the text goes out, Meta accepts it,
    // and then fails it by status webhook with 131047.
    let inbound = d.request(
        "POST",
        "/v1/inbound",
        Some(json!({"from": "+14155550188"}).to_string().as_bytes()),
    );
    assert_eq!(inbound.status, 200, "{}", inbound.text());
    let id = d.enqueue(&text_request("+14155550188", "Your order shipped"));
    let failed = d.wait_message(&id, PATIENCE, |m| m["state"] == "failed");
    let wamid = failed["wamid"]
        .as_str()
        .expect("the failed attempt's wamid")
        .to_string();
    assert_eq!(failed["last_error"]["meta_code"], 131047, "{failed}");

    // Retried while the window is closed (the 131047 closed it): refused, as it would only fail
    // again, and the message is left as it was.
    let r = d.request("POST", &format!("/v1/messages/{id}/retry"), None);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.code(), "window_closed");
    assert_eq!(d.message(&id)["wamid"], wamid.as_str());

    // waq is told again that the customer wrote: the retry is a new attempt, and the wamid of
    // the first one no longer stands for the message (its history keeps it).
    let inbound = d.request(
        "POST",
        "/v1/inbound",
        Some(json!({"from": "+14155550188"}).to_string().as_bytes()),
    );
    assert_eq!(inbound.status, 200, "{}", inbound.text());
    let r = d.request("POST", &format!("/v1/messages/{id}/retry"), None);
    assert_eq!(r.status, 202, "{}", r.text());
    let m = d.wait_message(&id, PATIENCE, |m| {
        m["state"] == "failed" && m["wamid"].is_string() && m["wamid"] != wamid.as_str()
    });
    assert_eq!(m["last_error"]["meta_code"], 131047, "{m}");
    let accepted = format!("accepted by Meta as {wamid}");
    assert!(
        m["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["state"] == "sent" && h["detail"] == accepted.as_str()),
        "{m}"
    );
    wait_webhooks_drained(&sim);
    assert_eq!(sim.number().accepted, 2);
}

/// A send held by the messaging limit goes as soon as its user's message arrives by webhook:
/// with the window open it no longer counts against the limit.
#[test]
fn a_user_message_lets_a_send_held_by_the_messaging_limit_go() {
    let limited = Daemon::builder().without_default_sender().toml(&format!(
        "{}messaging_limit = 1\n",
        sender_toml("main", SIM_NUMBER, TOKEN, 80)
    ));
    let (sim, d) = start_daemon_with(fast_statuses(), |_| {}, limited);
    let first = d.enqueue(&template_request("+14155550181"));
    d.wait_message(&first, PATIENCE, |m| m["state"] == "read");
    let held = d.enqueue(&template_request("+14155550182"));
    let m = d.wait_message(&held, PATIENCE, |m| m["state"] == "retrying");
    assert_eq!(m["attempts"], 0, "{m}");

    let answer = sim.inbound("+14155550182");
    assert_eq!(answer["webhook"], true, "{answer}");
    d.wait_message(&held, PATIENCE, |m| m["state"] == "read");
    let limit = &d.get("/v1/stats").json()["senders"][0]["messaging_limit"];
    assert_eq!(
        limit["reached_24h"], 1,
        "the user who wrote is not counted: {limit}"
    );
    wait_webhooks_drained(&sim);
    assert_eq!(sim.number().accepted, 2);
}

/// A consumer of relayed payloads that stays down: after five failed deliveries in a row
/// (about 15 s of retries), `waq health` says so and exits 1.
#[test]
fn a_relay_consumer_that_stays_down_makes_the_daemon_degraded() {
    let down = HeldPort::new();
    let builder = Daemon::builder().set(
        "webhook",
        &format!("forward_url = \"http://{}/hook\"", down.addr()),
    );
    let (sim, d) = start_daemon_with(StatusConfig::default(), |_| {}, builder);
    assert_eq!(sim.inbound("+14155550190")["webhook"], true);
    let degraded = wait_until(
        "health degraded by the relay",
        std::time::Duration::from_secs(60),
        || Some(d.get("/v1/health").json()).filter(|h| h["status"] == "degraded"),
        || d.get("/v1/health").text(),
    );
    assert!(
        degraded["webhook_relay"]["failures"].as_u64().unwrap() >= 5,
        "{degraded}"
    );
    let out = d.waq(&["health"]);
    assert_eq!(out.status.code(), Some(1));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("degraded: webhook relay failing since "),
        "{printed}"
    );
    assert!(printed.contains("unreachable"), "{printed}");
    drop(down);
}
