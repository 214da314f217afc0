//! The Cloud API simulator over real HTTP on loopback: each of Meta's rules it keeps, its
//! signed webhooks, fault injection and stats.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use waq::sim::{self, SimConfig, SimHandle, SimStats, TemplateConfig};

#[path = "common/net.rs"]
mod net;

const NUMBER: &str = "120000000000001";
const TOKEN: &str = "sim-token";
const SECRET: &str = "sim-app-secret";

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

async fn start(cfg: SimConfig) -> SimHandle {
    sim::start(cfg, local()).await.expect("simulator starts")
}

/// Posts a send with `token`; answers the status and JSON body.
async fn send_as(sim: &SimHandle, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}/v23.0/{NUMBER}/messages", sim.base_url()))
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn send(sim: &SimHandle, body: &Value) -> (u16, Value) {
    send_as(sim, Some(TOKEN), body).await
}

fn text_to(to: &str, body: &str) -> Value {
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
           "type": "text", "text": {"body": body}})
}

fn template_to(to: &str, name: &str, params: &[&str]) -> Value {
    let params: Vec<Value> = params
        .iter()
        .map(|p| json!({"type": "text", "text": p}))
        .collect();
    json!({"messaging_product": "whatsapp", "to": to, "type": "template",
           "template": {"name": name, "language": {"code": "en_US"},
                        "components": [{"type": "body", "parameters": params}]}})
}

fn code(body: &Value) -> i64 {
    body["error"]["code"].as_i64().unwrap_or(0)
}

fn wamid(body: &Value) -> String {
    body["messages"][0]["id"]
        .as_str()
        .expect("a wamid")
        .to_string()
}

async fn http_stats(sim: &SimHandle) -> SimStats {
    client()
        .get(format!("{}/sim/stats", sim.base_url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON")
}

/// Polls the stats until `cond` holds (up to 10 s); answers the last read.
async fn stats_when(sim: &SimHandle, cond: impl Fn(&SimStats) -> bool) -> SimStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = http_stats(sim).await;
        if cond(&stats) || Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sim_post(sim: &SimHandle, path: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}{path}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls `cond` every 10 ms for up to 10 s.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

// ----- a webhook receiver that checks signatures on its own -----

#[derive(Clone, Default)]
struct Inbox {
    payloads: Arc<Mutex<Vec<Value>>>,
    bad_signatures: Arc<AtomicU64>,
    /// Answer 500 to this many POSTs first.
    fail_first: Arc<AtomicU64>,
}

impl Inbox {
    fn payloads(&self) -> Vec<Value> {
        self.payloads.lock().unwrap().clone()
    }

    /// Every status object received, in arrival order.
    fn statuses(&self) -> Vec<Value> {
        self.values()
            .iter()
            .flat_map(|v| v["statuses"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    fn statuses_of(&self, wamid: &str) -> Vec<Value> {
        self.statuses()
            .into_iter()
            .filter(|s| s["id"] == wamid)
            .collect()
    }

    fn has_status(&self, wamid: &str, status: &str) -> bool {
        self.statuses_of(wamid)
            .iter()
            .any(|s| s["status"] == status)
    }

    /// The first change `value` carrying inbound messages, waiting for it to arrive.
    async fn inbound_value(&self) -> Value {
        let find = || self.values().into_iter().find(|v| v["messages"].is_array());
        assert!(
            eventually(|| find().is_some()).await,
            "no inbound messages arrived"
        );
        find().unwrap()
    }

    /// Every change `value` received.
    fn values(&self) -> Vec<Value> {
        self.payloads()
            .iter()
            .flat_map(|p| p["entry"].as_array().cloned().unwrap_or_default())
            .flat_map(|e| e["changes"].as_array().cloned().unwrap_or_default())
            .map(|c| c["value"].clone())
            .collect()
    }
}

async fn webhook(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let given = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if given != expected {
        inbox.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if inbox
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    inbox
        .payloads
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    StatusCode::OK
}

async fn receiver() -> (Inbox, String) {
    let inbox = Inbox::default();
    let app = Router::new()
        .route("/webhook", post(webhook))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind(local()).await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (inbox, url)
}

/// A config whose webhooks go to `url` quickly.
fn with_webhook(url: &str) -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.webhook.url = Some(url.to_string());
    cfg.webhook.retry_backoff_ms = 20;
    cfg.webhook.batch_interval_ms = 5;
    cfg.statuses.sent_ms = 10;
    cfg.statuses.delivered_ms = 30;
    cfg.statuses.read_ms = 60;
    cfg
}

// ----- the tests -----

#[tokio::test]
async fn accepts_a_send_in_metas_answer_shape() {
    let sim = start(SimConfig::default()).await;
    let (status, body) = send(&sim, &text_to("+1 (415) 555-0101", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["contacts"][0]["input"], "+1 (415) 555-0101");
    assert_eq!(body["contacts"][0]["wa_id"], "14155550101");
    let first = wamid(&body);
    assert!(first.starts_with("wamid."));
    let (_, again) = send(&sim, &text_to("14155550101", "again")).await;
    assert_ne!(wamid(&again), first, "wamids are unique");
    // Any vNN.N version works; a malformed one is an unknown path.
    let resp = client()
        .post(format!("{}/v99.1/{NUMBER}/messages", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&text_to("14155550101", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = client()
        .post(format!("{}/latest/{NUMBER}/messages", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&text_to("14155550101", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_is_checked() {
    let sim = start(SimConfig::default()).await;
    let msg = text_to("14155550102", "hi");
    for token in [Some("wrong"), None] {
        let (status, body) = send_as(&sim, token, &msg).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(code(&body), 190);
        assert_eq!(body["error"]["type"], "OAuthException");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("(#190)"));
        assert_eq!(body["error"]["error_data"]["messaging_product"], "whatsapp");
        assert!(body["error"]["fbtrace_id"].is_string());
    }
    let (status, _) = send(&sim, &msg).await;
    assert_eq!(status, 200);
    // With a valid token, elsewhere: an unknown number is error 100, a version in the
    // client's base URL an unknown path (2500), both counted as unrouted.
    let post_to = |path: String| {
        client()
            .post(format!("{}{path}", sim.base_url()))
            .bearer_auth(TOKEN)
            .json(&msg)
            .send()
    };
    let resp = post_to("/v23.0/999/messages".into()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), 100);
    let resp = post_to(format!("/v25.0/v25.0/{NUMBER}/messages"))
        .await
        .unwrap();
    assert_eq!(code(&resp.json().await.unwrap()), 2500);
    let stats = http_stats(&sim).await;
    assert_eq!(stats.violation(190), 2);
    assert_eq!(stats.unrouted, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn validation_uses_metas_codes() {
    let sim = start(SimConfig::default()).await;
    let to = "14155550103";
    let buttons: Vec<Value> = (0..4)
        .map(|i| json!({"type": "reply", "reply": {"id": format!("b{i}"), "title": format!("Option {i}")}}))
        .collect();
    let cases = [
        (
            json!({"messaging_product": "sms", "to": to, "type": "text", "text": {"body": "x"}}),
            100,
        ),
        (
            json!({"to": to, "type": "text", "text": {"body": "x"}}),
            100,
        ),
        (
            json!({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}),
            131008,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "telegram"}),
            100,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "text"}),
            131008,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "text", "text": {}}),
            131008,
        ),
        (text_to(to, &"a".repeat(4097)), 131009),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "image", "image": {"caption": "no media"}}),
            131008,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "image", "image": {"id": ""}}),
            131008,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "image", "image": {"link": "not a url"}}),
            131009,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "template", "template": {"language": {"code": "en_US"}}}),
            131008,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "template", "template": {"name": "hello_world"}}),
            131008,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "template", "template": {
                "name": "hello_world", "language": {"code": "en_US"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "two\nlines"}]}]}}),
            132018,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "template", "template": {
                "name": "hello_world", "language": {"code": "en_US"},
                "components": [{"type": "header", "parameters": [{"type": "text", "text": "five     spaces"}]}]}}),
            132018,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "interactive",
                "interactive": {"type": "button", "body": {"text": "Pick"}, "action": {"buttons": buttons}}}),
            131009,
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "interactive",
                "interactive": {"type": "list", "body": {"text": "Pick"},
                                "action": {"button": "Menu", "sections": [{"rows": [{"id": "1", "title": "x".repeat(25)}]}]}}}),
            131009,
        ),
    ];
    for (body, expected) in &cases {
        let (status, answer) = send(&sim, body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(code(&answer), *expected, "{body} -> {answer}");
    }
    let raw = client()
        .post(format!("{}/v23.0/{NUMBER}/messages", sim.base_url()))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    assert_eq!(code(&raw.json().await.unwrap()), 100);
    let (status, _) = send(&sim, &text_to(to, &"a".repeat(4096))).await;
    assert_eq!(status, 200, "exactly 4096 characters is fine");
    sim.shutdown().await;
}

/// Meta's OpenAPI spec (facebook/openapi, MIT), kept in the repository's test fixtures;
/// `WAQ_META_OPENAPI` points at another copy (e.g. a newer version).
fn openapi_spec() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("WAQ_META_OPENAPI") {
        return p.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/meta-openapi/business-messaging-api_v23.0.yaml")
}

/// Replaces the examples' placeholders the way a user fills them in: recipients, media links,
/// a header type.
fn fill_placeholders(v: &mut Value, key: Option<&str>, recipient: &str) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                fill_placeholders(child, Some(k), recipient);
            }
        }
        Value::Array(items) => {
            for child in items {
                fill_placeholders(child, key, recipient);
            }
        }
        Value::String(s) => {
            let placeholder = s.contains("{{") || s.contains('<') || s.contains("http(s)");
            match key {
                Some("to") if placeholder => *s = recipient.to_string(),
                Some("link") | Some("url") if placeholder => {
                    *s = "https://example.com/media/file".to_string()
                }
                Some("type") if s == "<HEADER_TYPE>" => *s = "text".to_string(),
                _ => {}
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn accepts_every_request_example_of_metas_openapi_spec() {
    let text = std::fs::read_to_string(openapi_spec()).expect("read the spec");
    let spec: serde_norway::Value = serde_norway::from_str(&text).expect("parse the spec");
    let examples = &spec["paths"]["/{Version}/{Phone-Number-ID}/messages"]["post"]["requestBody"]
        ["content"]["application/json"]["examples"];
    let examples = examples.as_mapping().expect("the examples of sendMessage");
    assert!(
        examples.len() >= 40,
        "only {} examples found",
        examples.len()
    );

    let mut cfg = SimConfig::default();
    cfg.numbers[0].mps = 10_000;
    // The templates the examples name, with their body parameter counts.
    cfg.templates.extend([
        TemplateConfig::new("intro_catalog_offer", "en_US", 3),
        TemplateConfig::new("<TEMPLATE_NAME>", "en_US", 0),
        TemplateConfig::new("template-name", "language-and-locale-code", 3),
        TemplateConfig::new("sample_issue_resolution", "en_US", 1),
    ]);
    let sim = start(cfg).await;

    let mut failures = Vec::new();
    for (i, (name, example)) in examples.iter().enumerate() {
        let name = name.as_str().unwrap_or("?").to_string();
        let mut body: Value = serde_json::to_value(&example["value"]).expect("JSON");
        fill_placeholders(&mut body, None, &format!("1650555{i:04}"));
        let (status, answer) = send(&sim, &body).await;
        let ok = status == 200
            && (answer["messages"][0]["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("wamid."))
                || answer["success"] == true);
        if !ok {
            failures.push(format!("{name}: {status} {answer}"));
        }
    }
    assert!(
        failures.is_empty(),
        "rejected examples:\n{}",
        failures.join("\n")
    );
    eprintln!("{} request examples accepted", examples.len());
    let stats = http_stats(&sim).await;
    assert_eq!(stats.requests, examples.len() as u64);
    sim.shutdown().await;
}

#[tokio::test]
async fn over_the_numbers_mps_is_130429() {
    let mut cfg = SimConfig::default();
    cfg.numbers[0].mps = 10;
    let sim = Arc::new(start(cfg).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let sim = sim.clone();
        tasks.spawn(async move { send(&sim, &text_to(&format!("1415555{i:04}"), "burst")).await });
    }
    let (mut ok, mut limited) = (0, 0);
    while let Some(res) = tasks.join_next().await {
        let (status, body) = res.unwrap();
        match (status, code(&body)) {
            (200, _) => ok += 1,
            (400, 130429) => limited += 1,
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    assert_eq!((ok, limited), (10, 10));
    let stats = http_stats(&sim).await;
    let n = &stats.numbers[NUMBER];
    assert_eq!(n.requests, 20);
    assert_eq!(
        n.max_in_window, 20,
        "every arrival counts, also the rejected"
    );
    assert_eq!(n.violation(130429), 10);
    Arc::into_inner(sim).unwrap().shutdown().await;
}

#[tokio::test]
async fn requests_with_a_bad_token_do_not_use_up_the_mps() {
    let mut cfg = SimConfig::default();
    cfg.numbers[0].mps = 5;
    let sim = start(cfg).await;
    for i in 0..10 {
        let (status, body) = send_as(
            &sim,
            Some("stale-token"),
            &text_to(&format!("1415555{i:04}"), "x"),
        )
        .await;
        assert_eq!((status, code(&body)), (401, 190), "{body}");
    }
    // However quickly they follow, the 10 that Graph refused left the number's 5 a second.
    for i in 0..5 {
        let (status, body) = send(&sim, &text_to(&format!("1415556{i:04}"), "x")).await;
        assert_eq!(status, 200, "send {i}: {body}");
    }
    let stats = http_stats(&sim).await;
    assert_eq!(stats.numbers[NUMBER].violation(130429), 0);
    assert_eq!(
        stats.numbers[NUMBER].requests, 15,
        "every arrival is recorded"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn pair_rate_is_per_recipient() {
    let mut cfg = SimConfig::default();
    cfg.pair_rate.burst = 3;
    cfg.pair_rate.period_ms = 60_000;
    let sim = start(cfg).await;
    for _ in 0..3 {
        assert_eq!(send(&sim, &text_to("14155550104", "x")).await.0, 200);
    }
    let (status, body) = send(&sim, &text_to("14155550104", "x")).await;
    assert_eq!((status, code(&body)), (400, 131056), "{body}");
    assert_eq!(
        send(&sim, &text_to("14155550105", "x")).await.0,
        200,
        "others are unaffected"
    );
    assert_eq!(http_stats(&sim).await.violation(131056), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn templates_must_be_approved_with_the_right_parameters() {
    let sim = start(SimConfig::default()).await;
    let to = "14155550106";
    let (status, body) = send(
        &sim,
        &json!({"messaging_product": "whatsapp", "to": to, "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["message_status"], "accepted");

    let (status, body) = send(&sim, &template_to(to, "no_such_template", &[])).await;
    assert_eq!((status, code(&body)), (404, 132001), "{body}");
    let mut german = template_to(to, "order_update", &["4521"]);
    german["template"]["language"]["code"] = json!("de");
    let (status, body) = send(&sim, &german).await;
    assert_eq!((status, code(&body)), (404, 132001), "{body}");
    let (status, body) = send(&sim, &template_to(to, "order_update", &[])).await;
    assert_eq!((status, code(&body)), (400, 132000), "{body}");
    let (status, body) = send(&sim, &template_to(to, "order_update", &["a", "b"])).await;
    assert_eq!((status, code(&body)), (400, 132000), "{body}");
    let (status, _) = send(&sim, &template_to(to, "order_update", &["4521"])).await;
    assert_eq!(status, 200);
    let stats = http_stats(&sim).await;
    assert_eq!((stats.violation(132001), stats.violation(132000)), (2, 2));
    sim.shutdown().await;

    let cfg = SimConfig {
        accept_any_template: true,
        ..SimConfig::default()
    };
    let sim = start(cfg).await;
    let (status, _) = send(&sim, &template_to(to, "anything", &["x", "y"])).await;
    assert_eq!(status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn recipients_not_on_whatsapp_get_131026() {
    let cfg = SimConfig {
        not_on_whatsapp: vec!["+1 415 555 0199".into()],
        ..SimConfig::default()
    };
    let sim = start(cfg).await;
    let (status, body) = send(&sim, &text_to("14155550199", "x")).await;
    assert_eq!((status, code(&body)), (400, 131026), "{body}");
    assert_eq!(send(&sim, &text_to("14155550198", "x")).await.0, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn free_form_outside_the_window_is_accepted_then_fails_with_131047() {
    let (inbox, url) = receiver().await;
    let sim = start(with_webhook(&url)).await;
    let (status, body) = send(&sim, &text_to("14155550107", "are you there?")).await;
    assert_eq!(status, 200, "accepted first, as Meta does: {body}");
    let id = wamid(&body);
    assert!(
        eventually(|| inbox.has_status(&id, "failed")).await,
        "no failed status"
    );
    let failed = inbox.statuses_of(&id);
    assert_eq!(failed.len(), 1, "only the failure: {failed:?}");
    assert_eq!(failed[0]["errors"][0]["code"], 131047);
    assert!(failed[0]["errors"][0]["title"].is_string());
    assert_eq!(inbox.bad_signatures.load(Ordering::SeqCst), 0);
    // A template needs no window.
    let (_, body) = send(&sim, &template_to("14155550107", "welcome", &["Ann"])).await;
    let tid = wamid(&body);
    assert!(eventually(|| inbox.has_status(&tid, "read")).await);
    assert!(!inbox.has_status(&tid, "failed"));
    let stats = http_stats(&sim).await;
    assert_eq!(stats.numbers[NUMBER].violation(131047), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn status_webhooks_are_signed_in_metas_envelope() {
    let (inbox, url) = receiver().await;
    let mut cfg = with_webhook(&url);
    cfg.window.open = vec!["14155550108".into()];
    // Both `delivered` of a message fall due together: they must share one POST.
    cfg.statuses.duplicate_delivered_share = 1.0;
    let sim = start(cfg).await;
    let mut msg = text_to("14155550108", "hello");
    msg["biz_opaque_callback_data"] = json!("seq:1");
    let (status, body) = send(&sim, &msg).await;
    assert_eq!(status, 200);
    let id = wamid(&body);
    assert!(
        eventually(|| inbox.has_status(&id, "read")).await,
        "no read status"
    );
    assert!(eventually(|| inbox.statuses_of(&id).len() == 4).await);

    let statuses = inbox.statuses_of(&id);
    let kinds: Vec<&str> = statuses
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    for kind in ["sent", "delivered", "read"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    for s in &statuses {
        assert_eq!(s["recipient_id"], "14155550108");
        assert_eq!(s["biz_opaque_callback_data"], "seq:1");
        let ts = s["timestamp"].as_str().expect("timestamp is a string");
        assert!(ts.parse::<u64>().unwrap() > 1_600_000_000);
    }
    let payload = &inbox.payloads()[0];
    assert_eq!(payload["object"], "whatsapp_business_account");
    assert_eq!(payload["entry"][0]["id"], SimConfig::default().waba_id);
    let change = &payload["entry"][0]["changes"][0];
    assert_eq!(change["field"], "messages");
    assert_eq!(change["value"]["messaging_product"], "whatsapp");
    assert_eq!(change["value"]["metadata"]["phone_number_id"], NUMBER);
    assert!(change["value"]["metadata"]["display_phone_number"].is_string());
    let batched = inbox
        .values()
        .iter()
        .any(|v| v["statuses"].as_array().is_some_and(|s| s.len() >= 2));
    assert!(batched, "statuses due together were not batched");
    assert_eq!(inbox.bad_signatures.load(Ordering::SeqCst), 0);

    let stats = stats_when(&sim, |s| s.webhooks.statuses == 4).await;
    assert_eq!(stats.webhooks.statuses, 4);
    assert_eq!(stats.webhooks.failed, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn failed_webhook_deliveries_are_retried() {
    let (inbox, url) = receiver().await;
    inbox.fail_first.store(2, Ordering::SeqCst);
    let mut cfg = with_webhook(&url);
    cfg.window.enforce = false;
    let sim = start(cfg).await;
    let (_, body) = send(&sim, &text_to("14155550109", "x")).await;
    let id = wamid(&body);
    // The first two POSTs failed; retries bring every status through (in any order).
    let all = || {
        ["sent", "delivered", "read"]
            .iter()
            .all(|s| inbox.has_status(&id, s))
    };
    assert!(eventually(all).await, "{:?}", inbox.statuses_of(&id));
    let stats = stats_when(&sim, |s| s.webhooks.retries >= 2).await;
    assert!(stats.webhooks.retries >= 2, "{:?}", stats.webhooks);
    sim.shutdown().await;

    // A receiver that never answers 2xx: bounded retries, then counted as failed.
    let (inbox, url) = receiver().await;
    inbox.fail_first.store(u64::MAX, Ordering::SeqCst);
    let mut cfg = with_webhook(&url);
    cfg.webhook.max_retries = 2;
    cfg.webhook.retry_backoff_ms = 1;
    let sim = start(cfg).await;
    send(&sim, &text_to("14155550110", "x")).await;
    let stats = stats_when(&sim, |s| s.webhooks.failed > 0).await;
    assert_eq!(stats.webhooks.failed, 1);
    assert_eq!(stats.webhooks.retries, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn inbound_opens_the_window_and_is_signed() {
    let (inbox, url) = receiver().await;
    let sim = start(with_webhook(&url)).await;
    let (status, answer) = sim_post(
        &sim,
        "/sim/inbound",
        json!({"from": "+1 415 555 0111", "text": "I need help", "name": "Ann"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let value = inbox.inbound_value().await;
    assert_eq!(value["metadata"]["phone_number_id"], NUMBER);
    assert_eq!(value["contacts"][0]["profile"]["name"], "Ann");
    assert_eq!(value["contacts"][0]["wa_id"], "14155550111");
    let m = &value["messages"][0];
    assert_eq!(m["from"], "14155550111");
    assert_eq!(m["type"], "text");
    assert_eq!(m["text"]["body"], "I need help");
    assert_eq!(m["id"], answer["id"]);
    assert!(m["timestamp"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(inbox.bad_signatures.load(Ordering::SeqCst), 0);

    // The window is open now: a free-form reply is delivered, not failed.
    let (status, body) = send(&sim, &text_to("14155550111", "How can we help?")).await;
    assert_eq!(status, 200);
    let id = wamid(&body);
    assert!(eventually(|| inbox.has_status(&id, "read")).await);
    assert!(!inbox.has_status(&id, "failed"));
    let stats = http_stats(&sim).await;
    assert_eq!(stats.violation(131047), 0);
    assert_eq!(stats.numbers[NUMBER].inbound, 1);
    sim.shutdown().await;
}

/// A misspelt key is named as such, with the key meant, before the key it stands for is found
/// missing (SIMULATOR.md: unknown keys are named).
#[tokio::test]
async fn inbound_names_an_unknown_key_before_a_missing_one() {
    let sim = start(SimConfig::default()).await;
    for (body, unknown, meant) in [
        (
            json!({"form": "+1 415 555 0100"}),
            "\"form\"",
            Some("`from`"),
        ),
        (
            json!({"from": "+1 415 555 0100", "txet": "Hi"}),
            "\"txet\"",
            Some("`text`"),
        ),
        (
            json!({"from": "+1 415 555 0100", "type": "button", "buton": {"text": "Yes"}}),
            "\"buton\"",
            Some("`button`"),
        ),
        (json!({"bogus": 1}), "\"bogus\"", None),
    ] {
        let (status, answer) = sim_post(&sim, "/sim/inbound", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("unknown key {unknown}")),
            "{body}: {message}"
        );
        assert!(!message.contains("missing field"), "{body}: {message}");
        match meant {
            Some(meant) => assert!(
                message.contains(&format!("did you mean {meant}?")),
                "{body}: {message}"
            ),
            None => assert!(!message.contains("did you mean"), "{body}: {message}"),
        }
    }
    // Without a typo, a missing `from` is still said to be missing.
    let (status, answer) = sim_post(&sim, "/sim/inbound", json!({"text": "Hi"})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing field `from`")),
        "{answer}"
    );
    sim.shutdown().await;
}

/// Brazil: dialled with the ninth digit, known to WhatsApp by the 12-digit id it registered with.
const DIALLED_BR: &str = "5511987654321";
const WA_ID_BR: &str = "551187654321";

#[tokio::test]
async fn a_number_known_under_another_wa_id_has_its_window_by_wa_id() {
    let (inbox, url) = receiver().await;
    let mut cfg = with_webhook(&url);
    cfg.wa_ids.insert(format!("+{DIALLED_BR}"), WA_ID_BR.into());
    let sim = start(cfg).await;

    // The answer names the wa_id; the statuses carry it as recipient_id.
    let (status, body) = send(&sim, &template_to("+55 11 98765-4321", "welcome", &["Ana"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["contacts"][0]["input"], "+55 11 98765-4321");
    assert_eq!(body["contacts"][0]["wa_id"], WA_ID_BR);
    let tid = wamid(&body);
    assert!(eventually(|| inbox.has_status(&tid, "read")).await);
    assert!(inbox
        .statuses_of(&tid)
        .iter()
        .all(|s| s["recipient_id"] == WA_ID_BR));

    // No inbound yet: a free-form send to the dialled number is outside the window.
    let (_, body) = send(&sim, &text_to(DIALLED_BR, "still there?")).await;
    let outside = wamid(&body);
    assert!(eventually(|| inbox.has_status(&outside, "failed")).await);
    assert_eq!(inbox.statuses_of(&outside)[0]["errors"][0]["code"], 131047);

    // The user writes (named by the dialled number here): the webhook's `from` is the wa_id,
    // and the window it opens is the one a send to the dialled number needs.
    let (status, answer) = sim_post(
        &sim,
        "/sim/inbound",
        json!({"from": DIALLED_BR, "text": "Oi"}),
    )
    .await;
    assert_eq!(
        (status, &answer["from"]),
        (200, &json!(WA_ID_BR)),
        "{answer}"
    );
    let value = inbox.inbound_value().await;
    assert_eq!(value["messages"][0]["from"], WA_ID_BR);
    assert_eq!(value["contacts"][0]["wa_id"], WA_ID_BR);
    let (_, body) = send(&sim, &text_to(DIALLED_BR, "Olá!")).await;
    let inside = wamid(&body);
    assert!(eventually(|| inbox.has_status(&inside, "read")).await);
    assert!(!inbox.has_status(&inside, "failed"));

    // Unlisted numbers are their own wa_id, as before.
    let (_, body) = send(&sim, &template_to("14155550113", "welcome", &["Ann"])).await;
    assert_eq!(body["contacts"][0]["wa_id"], "14155550113");
    assert_eq!(http_stats(&sim).await.violation(131047), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_errors_by_kind() {
    let sim = start(SimConfig::default()).await;
    let msg = text_to("14155550112", "x");
    let (status, _) = sim_post(&sim, "/sim/faults", json!({"http_5xx_share": 1.0})).await;
    assert_eq!(status, 200);
    for _ in 0..5 {
        let (status, _) = send(&sim, &msg).await;
        assert!((500..=504).contains(&status), "{status}");
    }
    for (fault, status, meta_code) in [
        ("code_1_share", 500, 1),
        ("code_2_share", 503, 2),
        ("code_131000_share", 500, 131000),
        ("rate_limit_share", 400, 130429),
    ] {
        sim_post(&sim, "/sim/faults", json!({ fault: 1.0 })).await;
        let (got, body) = send(&sim, &msg).await;
        assert_eq!((got, code(&body)), (status, meta_code), "{fault}: {body}");
    }
    sim_post(&sim, "/sim/faults", json!({})).await;
    assert_eq!(send(&sim, &msg).await.0, 200, "faults cleared");

    // A bad share is refused.
    let (status, _) = sim_post(&sim, "/sim/faults", json!({"code_1_share": 2.0})).await;
    assert_eq!(status, 400);

    let stats = http_stats(&sim).await;
    let n = &stats.numbers[NUMBER];
    assert_eq!(n.injected("http_5xx"), 5);
    assert_eq!(n.injected("code_1"), 1);
    assert_eq!(n.injected("code_2"), 1);
    assert_eq!(n.injected("code_131000"), 1);
    assert_eq!(n.injected("rate_limit"), 1);
    assert_eq!(
        n.violation(130429),
        0,
        "an injected 130429 is not the sender's fault"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn outage_ends_by_itself() {
    let sim = start(SimConfig::default()).await;
    let msg = text_to("14155550113", "x");
    sim_post(&sim, "/sim/faults", json!({"outage_for_ms": 300})).await;
    let (status, _) = send(&sim, &msg).await;
    assert_eq!(status, 503);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = status;
    while last != 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = send(&sim, &msg).await.0;
    }
    assert_eq!(last, 200);
    assert!(http_stats(&sim).await.injected("outage") >= 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn expiring_token_then_a_new_one() {
    let sim = start(SimConfig::default()).await;
    let msg = text_to("14155550114", "x");
    sim_post(
        &sim,
        "/sim/faults",
        json!({"token_expire_after_requests": 2}),
    )
    .await;
    assert_eq!(send(&sim, &msg).await.0, 200);
    assert_eq!(send(&sim, &msg).await.0, 200);
    let (status, body) = send(&sim, &msg).await;
    assert_eq!((status, code(&body)), (401, 190), "{body}");
    assert_eq!(body["error"]["error_subcode"], 463);

    let (status, _) = sim_post(&sim, "/sim/token", json!({"token": "fresh-token"})).await;
    assert_eq!(status, 200);
    assert_eq!(send_as(&sim, Some(TOKEN), &msg).await.0, 401);
    for _ in 0..3 {
        assert_eq!(send_as(&sim, Some("fresh-token"), &msg).await.0, 200);
    }
    let stats = http_stats(&sim).await;
    assert_eq!(stats.injected("token_expired"), 1);
    assert_eq!(stats.violation(190), 1, "the old token after the change");
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_and_timeouts() {
    let mut cfg = SimConfig::default();
    cfg.faults.latency_ms = 100;
    let sim = start(cfg).await;
    let msg = text_to("14155550115", "x");
    let t0 = Instant::now();
    assert_eq!(send(&sim, &msg).await.0, 200);
    assert!(t0.elapsed() >= Duration::from_millis(100));

    sim_post(
        &sim,
        "/sim/faults",
        json!({"timeout_share": 1.0, "timeout_hold_ms": 60_000}),
    )
    .await;
    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = quick
        .post(format!("{}/v23.0/{NUMBER}/messages", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&msg)
        .send()
        .await
        .expect_err("held without an answer");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(http_stats(&sim).await.injected("timeout"), 1);
    // A held request does not keep the simulator from stopping.
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_can_target_one_number() {
    let mut cfg = SimConfig::default();
    cfg.numbers.push(sim::NumberConfig::new("120000000000002"));
    let sim = start(cfg).await;
    let (status, answer) = sim_post(
        &sim,
        "/sim/faults",
        json!({"phone_number_id": "120000000000002", "code_2_share": 1.0}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied_to"], json!(["120000000000002"]));
    let msg = text_to("14155550116", "x");
    assert_eq!(send(&sim, &msg).await.0, 200);
    let other = client()
        .post(format!("{}/v23.0/120000000000002/messages", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 503);
    let (status, _) = sim_post(&sim, "/sim/faults", json!({"phone_number_id": "nope"})).await;
    assert_eq!(status, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn ordering_violations_are_counted_per_recipient() {
    let mut cfg = SimConfig::default();
    cfg.window.enforce = false;
    let sim = start(cfg).await;
    for (to, seq) in [
        ("14155550117", 2),
        ("14155550117", 3),
        ("14155550118", 1),
        ("14155550117", 1),
    ] {
        let mut msg = text_to(to, "x");
        msg["biz_opaque_callback_data"] = json!(format!("seq:{seq}"));
        assert_eq!(send(&sim, &msg).await.0, 200);
    }
    let stats = http_stats(&sim).await;
    assert_eq!(stats.numbers[NUMBER].ordering_violations, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn stats_reset() {
    let sim = start(SimConfig::default()).await;
    send(&sim, &text_to("14155550119", "x")).await;
    send_as(&sim, Some("wrong"), &text_to("14155550119", "x")).await;
    let before = http_stats(&sim).await;
    assert_eq!(before.requests, 2);
    let direct = sim.stats().await;
    assert_eq!(
        (direct.requests, direct.accepted, &direct.violations),
        (before.requests, before.accepted, &before.violations),
        "SimHandle::stats and GET /sim/stats agree"
    );
    let (status, _) = sim_post(&sim, "/sim/reset", json!({})).await;
    assert_eq!(status, 200);
    let after = http_stats(&sim).await;
    assert_eq!(after.requests, 0);
    assert!(after.violations.is_empty());
    assert_eq!(after.numbers[NUMBER].max_in_window, 0);
    assert_eq!(after.numbers[NUMBER].accepted, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn example_config_documents_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sim.example.toml");
    let cfg = sim::load_config(&path).expect("sim.example.toml loads");
    assert_eq!(cfg, SimConfig::default());
}

#[tokio::test]
async fn config_files_load_and_typos_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.toml");
    std::fs::write(
        &path,
        r#"
token = "t1"
not_on_whatsapp = ["+49 170 0000000"]

[[numbers]]
phone_number_id = "111"
mps = 5
[numbers.faults]
latency_ms = 7

[[numbers]]
phone_number_id = "222"
token = "t2"

[[templates]]
name = "promo"
language = "de"
body_params = 2
category = "marketing"

[statuses]
never_read_share = 0.5

[wa_ids]
"5511987654321" = "551187654321"
"+52 1 55 1234 5678" = "525512345678"
"#,
    )
    .unwrap();
    let cfg = sim::load_config(&path).expect("loads");
    assert_eq!(cfg.token, "t1");
    assert_eq!(cfg.numbers.len(), 2);
    assert_eq!(cfg.numbers[0].mps, 5);
    assert_eq!(cfg.numbers[0].faults.as_ref().unwrap().latency_ms, 7);
    assert_eq!(cfg.numbers[1].mps, 80, "default per number");
    assert_eq!(cfg.numbers[1].token.as_deref(), Some("t2"));
    assert_eq!(cfg.templates.len(), 1);
    assert_eq!(cfg.templates[0].category, "marketing");
    assert_eq!(cfg.statuses.never_read_share, 0.5);
    assert_eq!(
        cfg.statuses.sent_ms, 100,
        "untouched keys keep their defaults"
    );
    assert_eq!(cfg.app_secret, "sim-app-secret");
    assert_eq!(cfg.wa_ids.len(), 2, "{:?}", cfg.wa_ids);
    assert_eq!(cfg.wa_ids["5511987654321"], "551187654321");
    assert_eq!(cfg.wa_ids["+52 1 55 1234 5678"], "525512345678");

    // Keys are named as written, and a wrong choice is told the right ones.
    std::fs::write(
        &path,
        "[[numbers]]\nphone_number_id = \"1\"\nmps = \"fast\"\n",
    )
    .unwrap();
    let err = format!("{:#}", sim::load_config(&path).unwrap_err());
    assert!(err.contains("numbers[0].mps"), "{err}");
    std::fs::write(&path, "[window]\nanswer = \"sometimes\"\n").unwrap();
    let err = format!("{:#}", sim::load_config(&path).unwrap_err());
    assert!(
        err.contains("window.answer") && err.contains("\"webhook\"") && err.contains("\"error\""),
        "{err}"
    );
    assert!(!err.contains("WindowAnswer"), "{err}");
    std::fs::write(
        &path,
        "[[numbers]]\nphone_number_id = \"1\"\ndisplay_phone_number = \"+1 555 000 0004\"\n",
    )
    .unwrap();
    let cfg = sim::load_config(&path).expect("loads");
    assert_eq!(
        cfg.numbers[0].display(),
        "15550000004",
        "digits, as Meta writes it"
    );
    std::fs::write(
        &path,
        "[[numbers]]\nphone_number_id = \"1\"\ndisplay_phone_number = \"main line\"\n",
    )
    .unwrap();
    let err = format!("{:#}", sim::load_config(&path).unwrap_err());
    assert!(err.contains("numbers[0].display_phone_number"), "{err}");

    std::fs::write(&path, "[faults]\nlatency = 5\n").unwrap();
    let err = format!("{:#}", sim::load_config(&path).unwrap_err());
    assert!(err.contains("latency"), "{err}");
    std::fs::write(&path, "[faults]\ncode_1_share = 1.5\n").unwrap();
    let err = format!("{:#}", sim::load_config(&path).unwrap_err());
    assert!(err.contains("code_1_share"), "{err}");
    std::fs::write(&path, "[wa_ids]\n\"5511987654321\" = \"not a number\"\n").unwrap();
    let err = format!("{:#}", sim::load_config(&path).unwrap_err());
    assert!(err.contains("wa_ids"), "{err}");
}

/// `waq sim` without `--config` still takes `WAQ_SIM__...` overrides over its defaults.
#[tokio::test]
async fn the_sim_binary_takes_environment_overrides_without_a_config_file() {
    // Serving once it has logged its port: no need to retry the first request.
    let sim = net::SimChild::start(&[("WAQ_SIM__TOKEN", "token-from-env")]);
    let port = sim.port;
    let url = format!("http://127.0.0.1:{port}/v23.0/{NUMBER}/messages");
    let body = json!({"messaging_product": "whatsapp", "to": "14155550100", "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}}});
    let send = |token: &'static str| client().post(&url).bearer_auth(token).json(&body).send();
    let accepted = send("token-from-env").await.unwrap().status().as_u16();
    assert_eq!(accepted, 200, "the token from WAQ_SIM__TOKEN is accepted");
    let default = send(TOKEN).await.unwrap();
    assert_eq!(
        default.status().as_u16(),
        401,
        "the default token is replaced"
    );
}
