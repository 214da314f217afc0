//! The socket API, end to end: the real binary, a real store in a temporary directory.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;

use common::{parked, text_request, Daemon, Response};

/// A template send the dispatcher leaves alone (see `parked`).
fn template_request(to: &str) -> Value {
    parked(common::template_request(to))
}
use serde_json::{json, Value};

fn id_of(r: &Response) -> String {
    r.json()["id"].as_str().unwrap().to_string()
}

fn assert_error(r: &Response, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], code, "{}", r.text());
    assert!(!e["message"].as_str().unwrap_or_default().is_empty());
    assert_eq!(e["field"].as_str(), field, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[test]
fn enqueue_then_get_and_it_survives_a_restart() {
    let mut d = Daemon::start();
    let mut req = template_request("+1 (415) 555-1234");
    req["metadata"] = json!({"order": 4521});
    req["priority"] = json!("high");
    let r = d.post("/v1/messages", &req);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["state"], "queued");
    let id = id_of(&r);
    assert_eq!(id.len(), 16);

    let m = d.get(&format!("/v1/messages/{id}")).json();
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["state"], "queued");
    assert_eq!(m["to"], "14155551234");
    assert_eq!(m["sender"], "main");
    assert_eq!(m["type"], "template");
    assert_eq!(m["priority"], "high");
    assert_eq!(m["attempts"], 0);
    assert_eq!(m["metadata"], json!({"order": 4521}));
    assert_eq!(m["history"][0]["state"], "queued");
    assert!(m["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(m["last_error"].is_null());

    d.restart();
    let again = d.get(&format!("/v1/messages/{id}"));
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["state"], m["state"]);
    assert_eq!(again.json()["metadata"], m["metadata"]);
}

/// `metadata` written with whitespace and escapes: what every answer and event echoes, the
/// same JSON compact, with each number's text as sent (none of them a double's).
const METADATA_SENT: &str = r#"{ "order" : 123456789012345678901234567890,
    "price": 1.10, "rate": 2.50e-3, "hundred": 1E+2, "zero": -0,
    "huge": 1.7976931348623157e308, "negative": -18446744073709551617,
    "name": "Jos\u00e9 \ud83d\ude00 \/ \"q\" \u0001",
    "nested": {"list": [1.0, [0.10, {"deep": 10000000000000000000001}]], "null": null, "t": true} }"#;
const METADATA_ECHOED: &str = r#"{"order":123456789012345678901234567890,"price":1.10,"rate":2.50e-3,"hundred":1E+2,"zero":-0,"huge":1.7976931348623157e308,"negative":-18446744073709551617,"name":"José 😀 / \"q\" \u0001","nested":{"list":[1.0,[0.10,{"deep":10000000000000000000001}]],"null":null,"t":true}}"#;

/// The text of member `key` of the JSON object `text`, exactly as written there.
fn raw_member(text: &str, key: &str) -> String {
    let members: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    match members.get(key) {
        Some(m) => m.get().to_string(),
        None => panic!("no `{key}` in {text}"),
    }
}

/// A parked template send to `to` with `metadata` (JSON text) as it is written.
fn send_with_metadata(to: &str, metadata: &str) -> String {
    let mut text = template_request(to).to_string();
    text.pop();
    text.push_str(&format!(r#","metadata":{metadata}}}"#));
    text
}

#[test]
fn metadata_is_echoed_exactly_as_sent() {
    let mut d = Daemon::start();
    let mut events = subscribe(&d);
    // (what is sent, what comes back)
    let sends = [
        (METADATA_SENT.to_string(), METADATA_ECHOED),
        // The same without whitespace: escapes that are not needed are not kept either.
        (
            r#"{"order":123456789012345678901234567890,"price":1.10,"rate":2.50e-3,"hundred":1E+2,"zero":-0,"huge":1.7976931348623157e308,"negative":-18446744073709551617,"name":"Jos\u00e9 \ud83d\ude00 \/ \"q\" \u0001","nested":{"list":[1.0,[0.10,{"deep":10000000000000000000001}]],"null":null,"t":true}}"#
                .to_string(),
            METADATA_ECHOED,
        ),
        ("[ 0.10, 1e-7 ]".to_string(), "[0.10,1e-7]"),
    ];
    let mut expected = std::collections::BTreeMap::new();
    for (sent, echoed) in &sends {
        let body = send_with_metadata("+14155551234", sent);
        let r = d.request("POST", "/v1/messages", Some(body.as_bytes()));
        assert_eq!(r.status, 202, "{}", r.text());
        expected.insert(id_of(&r), *echoed);
    }
    // The batch's path.
    let batch = format!(
        "[{}, {}]",
        send_with_metadata("+14155551235", METADATA_SENT),
        send_with_metadata("+14155551236", "-12345678901234567890123.45e-2")
    );
    let r = d.request("POST", "/v1/messages/batch", Some(batch.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].clone();
    for (result, echoed) in results
        .as_array()
        .unwrap()
        .iter()
        .zip([METADATA_ECHOED, "-12345678901234567890123.45e-2"])
    {
        let id = result["id"].as_str().unwrap_or_else(|| panic!("{results}"));
        expected.insert(id.to_string(), echoed);
    }
    // A number past a double's range is not JSON waq (or most parsers) can read.
    let r = d.request(
        "POST",
        "/v1/messages",
        Some(send_with_metadata("+14155551234", r#"{"n":1e400}"#).as_bytes()),
    );
    assert_error(&r, 400, "malformed_json", Some("metadata.n"));

    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < expected.len() {
        let line = events.next_line();
        if raw_member(&line, "event") == r#""message""# {
            let id: String = serde_json::from_str(&raw_member(&line, "id")).unwrap();
            seen.insert(id, raw_member(&line, "metadata"));
        }
    }
    for (id, echoed) in &expected {
        assert_eq!(seen[id], *echoed, "the queued event of {id}");
    }
    let list = d.get("/v1/messages");
    assert_eq!(list.status, 200, "{}", list.text());
    let items: Vec<Box<serde_json::value::RawValue>> =
        serde_json::from_str(&raw_member(&list.text(), "messages")).unwrap();
    assert_eq!(items.len(), expected.len(), "{}", list.text());
    for item in items {
        let id: String = serde_json::from_str(&raw_member(item.get(), "id")).unwrap();
        assert_eq!(
            raw_member(item.get(), "metadata"),
            expected[&id],
            "listed {id}"
        );
    }
    d.restart();
    for (id, echoed) in &expected {
        let m = d.get(&format!("/v1/messages/{id}"));
        assert_eq!(m.status, 200, "{}", m.text());
        assert_eq!(raw_member(&m.text(), "metadata"), *echoed, "{}", m.text());
    }
    let cancelled = d.delete(&format!("/v1/messages/{}", expected.keys().next().unwrap()));
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(raw_member(&cancelled.text(), "metadata"), METADATA_ECHOED);
}

#[test]
fn concurrent_enqueues_survive_kill_9() {
    const TOTAL: usize = 1000;
    const CONNECTIONS: usize = 64;
    let mut d = Daemon::start();
    let ids: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|w| {
                let d = &d;
                s.spawn(move || {
                    let mut conn = d.conn();
                    let mut ids = Vec::new();
                    for i in (w..TOTAL).step_by(CONNECTIONS) {
                        let body = template_request(&format!("+1415555{i:04}")).to_string();
                        let r = conn
                            .send("POST", "/v1/messages", Some(body.as_bytes()))
                            .unwrap();
                        assert_eq!(r.status, 202, "{}", r.text());
                        ids.push(id_of(&r));
                    }
                    ids
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), TOTAL);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        TOTAL,
        "ids are unique"
    );

    // Right after the last 202: every one of them must be on disk.
    d.kill9();
    d.restart();
    for id in &ids {
        let r = d.get(&format!("/v1/messages/{id}"));
        assert_eq!(r.status, 200, "{id} lost after kill -9: {}", r.text());
    }
    let stats = d.get("/v1/stats").json();
    assert_eq!(stats["messages"]["queued"], TOTAL as u64);
}

#[test]
fn invalid_requests_get_4xx_with_code_and_field_and_the_daemon_keeps_serving() {
    let d = Daemon::start();
    let cases: Vec<(Value, &str, &str)> = vec![
        (template_request("12ab"), "invalid_recipient", "to"),
        (json!({"to": "+14155551234"}), "missing_field", "message"),
        (
            json!({"to": "+14155551234", "message": {}}),
            "missing_field",
            "message.type",
        ),
        (
            {
                let mut r = template_request("+14155551234");
                r["sender"] = json!("nobody");
                r
            },
            "unknown_sender",
            "sender",
        ),
        (
            text_request("+14155551234", &"x".repeat(4097)),
            "too_long",
            "message.text.body",
        ),
        (
            {
                let mut r = template_request("+14155551234");
                r["priority"] = json!("urgent");
                r
            },
            "invalid_value",
            "priority",
        ),
    ];
    for (body, code, field) in cases {
        let r = d.post("/v1/messages", &body);
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        assert_error(&r, 422, code, Some(field));
    }

    let r = d.request(
        "POST",
        "/v1/messages",
        Some(b"{\n  \"to\": \"+14155551234\",\n  \"message\": {\n}"),
    );
    assert_error(&r, 400, "malformed_json", None);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 4"),
        "{}",
        r.text()
    );
    let r = d.request("POST", "/v1/messages", Some(b"[1, 2]"));
    assert_error(&r, 400, "malformed_request", None);
    let r = d.request("POST", "/v1/messages", Some(b""));
    assert_error(&r, 400, "malformed_json", None);

    let big = text_request("+14155551234", &"y".repeat(40 * 1024)).to_string();
    let r = d.request("POST", "/v1/messages", Some(big.as_bytes()));
    assert_error(&r, 413, "too_large", None);
    let why = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        why.contains("32768") && why.contains("socket.max_request_bytes"),
        "{why}"
    );

    assert_error(&d.get("/v1/nothing"), 404, "unknown_route", None);
    assert_error(
        &d.request("PUT", "/v1/messages", None),
        405,
        "method_not_allowed",
        None,
    );
    assert_error(
        &d.get("/v1/messages/00000000000fffff"),
        404,
        "not_found",
        None,
    );
    let r = d.get("/v1/messages/not-an-id");
    assert_error(&r, 404, "not_found", None);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("16 hex digits"));
    // Percent-escapes that decode to no UTF-8 are an unknown id or an invalid number too.
    let r = d.get("/v1/messages/%ff");
    assert_error(&r, 404, "not_found", None);
    assert!(r.text().contains("16 hex digits"), "{}", r.text());
    let r = d.get("/v1/recipients/%ff%fe");
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.code(), "invalid_recipient");
    assert!(r.json()["error"]["field"].is_string(), "{}", r.text());
    assert_error(
        &d.request("POST", "/v1/senders/%ff/resume", None),
        404,
        "not_found",
        None,
    );

    assert_eq!(d.get("/v1/health").status, 200);
    assert_eq!(
        d.post("/v1/messages", &template_request("+14155551234"))
            .status,
        202
    );
}

/// The smallest request cap still takes the longest text Meta allows, in 4-byte characters,
/// with a full kilobyte of metadata.
#[test]
fn the_smallest_request_cap_fits_a_full_text_body() {
    let d = Daemon::builder()
        .set("socket", "max_request_bytes = 24576")
        .set("socket", "max_batch_bytes = 24576")
        .start();
    let to = "+14155551299";
    assert_eq!(d.post("/v1/inbound", &json!({ "from": to })).status, 200);
    let mut r = text_request(to, &"😀".repeat(4096));
    r["metadata"] = json!({ "pad": "p".repeat(1000) });
    r["idempotency_key"] = json!("k".repeat(256));
    let answer = d.post("/v1/messages", &r);
    assert_eq!(answer.status, 202, "{}", answer.text());
}

/// Bodies over 64 KiB wait for room under `socket.max_body_memory_bytes` before they are read:
/// concurrent large batches are all answered, and the bodies held at once stay within the
/// budget. Each client sends all but the last byte of its batch, and only once every client
/// has either sent that much or is counted as waiting for room do they all finish: without the
/// budget, all the bodies would be held at once.
#[test]
fn concurrent_large_batches_are_held_within_the_body_budget() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    const BUDGET: u64 = 8 << 20;
    const CLIENTS: usize = 6;
    let d = Daemon::builder()
        .set("socket", "max_batch_bytes = 1048576")
        .set("socket", &format!("max_body_memory_bytes = {BUDGET}"))
        .start();
    // One item to store (parked), the rest refused each: a body of about 900 KB.
    let refused = json!({"to": "+1", "message": {"type": "template", "template":
        {"name": "hello_world", "language": {"code": "en_US"}}}, "metadata": "p".repeat(1000)});
    let mut items = vec![template_request("+14155551234")];
    items.extend(std::iter::repeat_n(refused, 799));
    let body = Arc::new(serde_json::to_vec(&items).unwrap());
    let counted = body.len() as u64 * 4;
    assert!(
        counted * 2 < BUDGET && counted * 3 > BUDGET,
        "two fit at once"
    );

    let (sent, go) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (socket, body, sent, go) =
                (d.socket.clone(), body.clone(), sent.clone(), go.clone());
            std::thread::spawn(move || {
                let mut conn = common::Conn::open(&socket).unwrap();
                let head = format!(
                    "POST /v1/messages/batch HTTP/1.1\r\nHost: waq\r\nContent-Type: \
                     application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                conn.write_raw(head.as_bytes()).unwrap();
                let (most, last) = body.split_at(body.len() - 1);
                // Returns once the daemon read most of it: it had room.
                conn.write_raw(most).unwrap();
                sent.fetch_add(1, SeqCst);
                while !go.load(SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                conn.write_raw(last).unwrap();
                conn.read_response().unwrap()
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while sent.load(SeqCst) + (d.metric("waq_body_memory_waiting") as usize) < CLIENTS {
        assert!(
            std::time::Instant::now() < deadline,
            "the clients never all arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(sent.load(SeqCst) < CLIENTS, "some wait for room");
    go.store(true, SeqCst);
    for client in clients {
        let answer = client.join().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
        let results = answer.json()["results"].clone();
        assert_eq!(results.as_array().map(Vec::len), Some(800));
        assert_eq!(results[0]["state"], "queued", "{}", results[0]);
        assert_eq!(results[799]["error"]["code"], "invalid_recipient");
        assert_eq!(results[799]["error"]["field"], "[799].to");
    }
    let peak = d.metric("waq_body_memory_peak_bytes");
    assert!(
        peak <= BUDGET,
        "{peak} bytes held at once, over the budget of {BUDGET}"
    );
    assert!(
        peak >= counted,
        "a batch counts four times its {} bytes: {peak}",
        body.len()
    );
    assert_eq!(d.metric("waq_body_memory_bytes"), 0);
    assert_eq!(d.metric("waq_body_memory_waiting"), 0);
    assert_eq!(
        d.get("/v1/stats").json()["messages"]["queued"],
        CLIENTS as u64
    );
}

/// A UTF-8 byte-order mark before the JSON (Windows PowerShell 5 writes one) is ignored, as
/// RFC 8259 allows: the send is taken as without it.
#[test]
fn a_body_that_starts_with_a_byte_order_mark_is_read() {
    let d = Daemon::start();
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(template_request("+14155551277").to_string().as_bytes());
    let r = d.request("POST", "/v1/messages", Some(&body));
    assert_eq!(r.status, 202, "{}", r.text());
    let m = d.get(&format!("/v1/messages/{}", id_of(&r))).json();
    assert_eq!(m["to"], "14155551277", "{m}");
    // The same for the other JSON bodies: a batch, and an inbound message.
    let mut batch = b"\xEF\xBB\xBF".to_vec();
    batch.extend_from_slice(
        json!([template_request("+14155551278")])
            .to_string()
            .as_bytes(),
    );
    let r = d.request("POST", "/v1/messages/batch", Some(&batch));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["state"], "queued", "{}", r.text());
    let r = d.request(
        "POST",
        "/v1/inbound",
        Some("\u{feff}{\"from\": \"+14155551279\"}".as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// As at Meta, a message without `type` is a text message: stored, shown and sent as one.
#[test]
fn a_message_without_type_is_sent_as_text() {
    let sim = common::Sim::start(common::sim_config());
    let d = Daemon::builder().against(&sim).start();
    let to = "+14155551288";
    assert_eq!(d.post("/v1/inbound", &json!({ "from": to })).status, 200);
    let answer = d.post(
        "/v1/messages",
        &json!({"to": to, "message": {"text": {"body": "no type given"}}}),
    );
    assert_eq!(answer.status, 202, "{}", answer.text());
    let id = id_of(&answer);
    let sent = wait_for_message(&d, &id, |m| m["state"] == "sent");
    assert_eq!(sent["type"], "text", "{sent}");
    assert!(sent["wamid"].is_string(), "{sent}");
}

/// A status consumer knows a wamid, a producer its key: each finds its message directly.
#[test]
fn messages_are_found_by_wamid_and_by_idempotency_key() {
    let sim = common::Sim::start(common::sim_config());
    let d = Daemon::builder().against(&sim).start();
    let mut keyed = common::template_request("+14155551277");
    keyed["idempotency_key"] = json!("order-77-shipped");
    let id = id_of(&d.post("/v1/messages", &keyed));
    let other = id_of(&d.post("/v1/messages", &common::template_request("+14155551276")));
    let sent = wait_for_message(&d, &id, |m| m["state"] == "sent");
    let wamid = sent["wamid"].as_str().unwrap().to_string();
    let ids = |query: &str| -> Vec<String> {
        let r = d.get(&format!("/v1/messages?{query}"));
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        let page = r.json();
        assert_eq!(page["next_cursor"], Value::Null, "{page}");
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&format!("wamid={wamid}")), vec![id.clone()]);
    assert_eq!(ids("idempotency_key=order-77-shipped"), vec![id.clone()]);
    assert_eq!(
        ids("idempotency_key=order-77-shipped&sender=main"),
        vec![id.clone()]
    );
    // The other filters still apply, and unknown ones find nothing.
    assert!(ids(&format!("wamid={wamid}&state=failed")).is_empty());
    assert!(ids(&format!("wamid={wamid}&idempotency_key=another")).is_empty());
    assert!(ids("wamid=wamid.HBgLMTQxNTU1NTEyMzQVAgARGBJBQkNERUY").is_empty());
    assert!(ids("idempotency_key=order-78-shipped").is_empty());
    assert!(!ids("").is_empty() && ids("").contains(&other));
    // An empty value is a mistake, not "everything".
    for lookup in ["wamid", "idempotency_key"] {
        let r = d.get(&format!("/v1/messages?{lookup}="));
        assert_error(&r, 422, "invalid_parameter", Some(lookup));
    }
}

#[test]
fn an_event_stream_asked_for_heartbeats_gets_them_while_nothing_happens() {
    let d = Daemon::start();
    let mut follower = d.conn();
    follower
        .write_request("GET", "/v1/events?heartbeat_s=1", None)
        .unwrap();
    assert_eq!(follower.read_head().unwrap().0, 200);
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let chunk = follower.read_chunk().unwrap().expect("the stream ended");
        for l in String::from_utf8_lossy(&chunk).lines() {
            lines.push(serde_json::from_str::<Value>(l).unwrap());
        }
    }
    assert_eq!(lines[0]["event"], "subscribed");
    for beat in &lines[1..] {
        assert_eq!(beat["event"], "heartbeat", "{beat}");
        assert!(beat["at"].is_string(), "{beat}");
    }
    for bad in ["0", "3601", "x"] {
        let r = d.get(&format!("/v1/events?heartbeat_s={bad}"));
        assert_error(&r, 422, "invalid_parameter", Some("heartbeat_s"));
    }
    assert_error(
        &d.get("/v1/events?heartbeat=1"),
        422,
        "unknown_parameter",
        Some("heartbeat"),
    );
}

#[test]
fn an_unknown_route_with_extra_slashes_names_the_route_meant() {
    let d = Daemon::start();
    for (path, meant) in [
        ("/v1/messages/", "/v1/messages"),
        ("/v1//health", "/v1/health"),
    ] {
        let r = d.get(path);
        assert_error(&r, 404, "unknown_route", None);
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(&format!("without the extra slashes it is {meant}")),
            "{message}"
        );
    }
    let r = d.get("/v2/health");
    assert!(r.text().contains("the API lives under /v1"), "{}", r.text());
    // Tidied, this is no route either: the path needs the recipient's number.
    let r = d.get("/v1/recipients/");
    assert_error(&r, 404, "unknown_route", None);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(!message.contains("extra slashes"), "{message}");
    assert!(
        message.contains("the path goes on with the item: /v1/recipients/{number}"),
        "{message}"
    );
}

#[test]
fn every_route_shape_a_404_points_to_is_served() {
    let d = Daemon::start();
    for shape in waq::api::ROUTE_SHAPES {
        let path = shape
            .replace("{id}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{number}", "14155551234")
            .replace("{name}", "main");
        // The method may be wrong for the route; a route that is not there is 404.
        let r = d.request("OPTIONS", &path, None);
        assert_eq!(r.status, 405, "{shape}: {}", r.text());
    }
}

#[test]
fn idempotent_replay_answers_the_first_message() {
    let mut d = Daemon::start();
    let mut req = template_request("+14155551234");
    req["idempotency_key"] = json!("order-4521-shipped");
    let first = d.post("/v1/messages", &req);
    assert_eq!(first.status, 202);
    assert!(first.json().get("duplicate").is_none());
    let second = d.post("/v1/messages", &req);
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["id"], first.json()["id"]);
    assert_eq!(second.json()["duplicate"], true);
    assert_eq!(second.json()["state"], "queued");

    d.restart();
    let third = d.post("/v1/messages", &req);
    assert_eq!(third.status, 200);
    assert_eq!(third.json()["id"], first.json()["id"]);
    assert_eq!(d.get("/v1/stats").json()["messages"]["queued"], 1);
}

#[test]
fn batch_keeps_order_and_stores_the_valid_items() {
    let d = Daemon::start();
    let mut keyed = template_request("+14155550001");
    keyed["idempotency_key"] = json!("k-1");
    let batch = json!([
        template_request("+14155550000"),
        template_request("not a number"),
        text_request("+14155550002", "window closed: refused"),
        keyed,
        keyed,
        {"to": "+14155550005"},
    ]);
    let r = d.post("/v1/messages/batch", &batch);
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0]["state"], "queued");
    assert_eq!(results[1]["error"]["field"], "[1].to");
    assert_eq!(results[1]["error"]["code"], "invalid_recipient");
    assert_eq!(results[2]["error"]["code"], "window_closed");
    assert_eq!(results[2]["error"]["field"], "[2].message.type");
    assert_eq!(results[3]["state"], "queued");
    assert_eq!(results[4]["duplicate"], true);
    assert_eq!(results[4]["id"], results[3]["id"]);
    assert_eq!(results[5]["error"]["field"], "[5].message");
    for i in [0, 3] {
        let id = results[i]["id"].as_str().unwrap();
        assert_eq!(d.get(&format!("/v1/messages/{id}")).status, 200);
    }

    assert_error(
        &d.post("/v1/messages/batch", &json!({"not": "an array"})),
        400,
        "malformed_request",
        None,
    );
    let too_many = Value::Array(vec![json!({}); 10_001]);
    assert_error(
        &d.post("/v1/messages/batch", &too_many),
        413,
        "too_large",
        None,
    );
    let empty = d.post("/v1/messages/batch", &json!([]));
    assert_eq!(empty.json(), json!({"results": []}));
}

#[test]
fn cancel_then_cancel_again_conflicts() {
    let d = Daemon::start();
    let id = id_of(&d.post("/v1/messages", &template_request("+14155551234")));
    let r = d.delete(&format!("/v1/messages/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "cancelled");
    assert_eq!(
        d.get(&format!("/v1/messages/{id}")).json()["state"],
        "cancelled"
    );

    let again = d.delete(&format!("/v1/messages/{id}"));
    assert_error(&again, 409, "not_cancellable", None);
    assert!(again.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cancelled"));
    assert_error(
        &d.request("POST", &format!("/v1/messages/{id}/retry"), None),
        409,
        "not_retryable",
        None,
    );
    assert_error(
        &d.delete("/v1/messages/00000000000fffff"),
        404,
        "not_found",
        None,
    );
}

#[test]
fn list_pages_cover_everything_exactly_once() {
    let d = Daemon::start();
    let mut all = Vec::new();
    for i in 0..23 {
        let to = if i % 3 == 0 {
            "+14155550003".to_string()
        } else {
            format!("+1415555{i:04}")
        };
        all.push(id_of(&d.post("/v1/messages", &template_request(&to))));
    }
    let first = all.remove(0);
    assert_eq!(d.delete(&format!("/v1/messages/{first}")).status, 200);
    all.insert(0, first.clone());

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/messages?limit=5&cursor={c}"),
            None => "/v1/messages?limit=5".to_string(),
        };
        let page = d.get(&path).json();
        let items = page["messages"].as_array().unwrap();
        assert!(items.len() <= 5);
        seen.extend(items.iter().map(|m| m["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, all, "every message once, in enqueue order");

    let to = d.get("/v1/messages?to=%2B1%20415%20555%200003").json();
    assert_eq!(to["messages"].as_array().unwrap().len(), 8);
    let cancelled = d.get("/v1/messages?state=cancelled").json();
    assert_eq!(cancelled["messages"].as_array().unwrap().len(), 1);
    assert_eq!(cancelled["messages"][0]["id"], first.as_str());
    let both = d
        .get("/v1/messages?state=queued,cancelled&limit=1000")
        .json();
    assert_eq!(both["messages"].as_array().unwrap().len(), 23);

    assert_error(
        &d.get("/v1/messages?limit=0"),
        422,
        "invalid_parameter",
        Some("limit"),
    );
    assert_error(
        &d.get("/v1/messages?limit=1001"),
        422,
        "invalid_parameter",
        Some("limit"),
    );
    assert_error(
        &d.get("/v1/messages?state=lost"),
        422,
        "invalid_parameter",
        Some("state"),
    );
    assert_error(
        &d.get("/v1/messages?cursor=zz"),
        422,
        "invalid_parameter",
        Some("cursor"),
    );
}

#[test]
fn socket_file_has_the_configured_mode() {
    let d = Daemon::builder().set("socket", "mode = \"0640\"").start();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn a_peer_outside_allowed_uids_gets_403_on_every_request() {
    let own = unsafe { libc::getuid() };
    let d = Daemon::builder()
        .set(
            "socket",
            &format!("allowed_uids = [{}]", own.wrapping_add(4242)),
        )
        .start();
    for path in ["/v1/health", "/v1/messages/0000000000000001"] {
        let mut conn = d.conn();
        let r = conn.send("GET", path, None).unwrap();
        assert_error(&r, 403, "peer_not_allowed", None);
        // Answered once, then closed: a refused peer holds no connection open.
        assert!(
            r.header("connection").is_some_and(|v| v == "close"),
            "{r:?}"
        );
        let after = conn.send("GET", path, None);
        assert!(after.is_err(), "{after:?}");
    }
    let r = d.post("/v1/messages", &template_request("+14155551234"));
    assert_error(&r, 403, "peer_not_allowed", None);
    d.wait_for_log("refused a peer");

    let allowed = Daemon::builder()
        .set("socket", &format!("allowed_uids = [{own}]"))
        .start();
    assert_eq!(allowed.get("/v1/health").status, 200);
}

#[test]
fn refused_peers_take_no_connection_slot() {
    let (own, other) = common::own_and_other_uid();
    let d = Daemon::builder()
        .set("socket", "max_connections = 2")
        .set("socket", &format!("allowed_uids = [{other}]"))
        .start();
    // Refused connections that send nothing and stay open, more of them than there are slots.
    let idle: Vec<_> = (0..6).map(|_| d.conn()).collect();
    // Let in by a reload: served at once, not after the idle ones time out.
    d.reload_allowed_uids(&[other], &[other, own]);
    for _ in 0..3 {
        let mut conn = d.conn();
        conn.set_read_timeout(std::time::Duration::from_secs(3));
        let r = conn.send("GET", "/v1/health", None).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    drop(idle);
}

#[test]
fn a_peer_taken_out_by_a_reload_is_refused_on_the_connection_it_has() {
    let (own, other) = common::own_and_other_uid();
    let d = Daemon::allowing_uids(&[own, other]);
    let mut conn = d.conn();
    assert_eq!(conn.send("GET", "/v1/health", None).unwrap().status, 200);
    // An event stream, and a message whose retries (nothing listens at the API) keep it busy.
    let mut events = d.conn();
    events.write_request("GET", "/v1/events", None).unwrap();
    assert_eq!(events.read_head().unwrap().0, 200);
    d.post("/v1/messages", &common::template_request("+14155551234"));
    d.reload_allowed_uids(&[own, other], &[other]);
    let r = conn
        .post("/v1/messages", &template_request("+14155551234"))
        .unwrap();
    assert_error(&r, 403, "peer_not_allowed", None);
    assert!(
        r.header("connection").is_some_and(|v| v == "close"),
        "{r:?}"
    );
    // The stream ends (before its next event) rather than running on, and its last line says
    // why.
    let mut last = Vec::new();
    while let Some(chunk) = events.read_chunk().unwrap() {
        assert!(!chunk.is_empty());
        last = chunk;
    }
    let text = String::from_utf8_lossy(&last);
    let closed: serde_json::Value = serde_json::from_str(text.trim_end().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(closed["event"], "closed", "{text}");
    assert_eq!(closed["code"], "peer_not_allowed", "{text}");
    assert!(conn.send("GET", "/v1/health", None).is_err());
}

/// An idle event stream (no event after the reload) is closed by the reload itself, with its
/// reason, rather than left open until some event comes.
#[test]
fn an_idle_event_stream_a_reload_no_longer_allows_is_closed_at_once() {
    let (own, other) = common::own_and_other_uid();
    let d = Daemon::allowing_uids(&[own, other]);
    let mut events = d.conn();
    events.write_request("GET", "/v1/events", None).unwrap();
    assert_eq!(events.read_head().unwrap().0, 200);
    let first = events.read_chunk().unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("subscribed"));
    d.reload_allowed_uids(&[own, other], &[other]);
    let closed = events.read_chunk().unwrap().expect("the closed line");
    let text = String::from_utf8_lossy(&closed);
    let closed: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(closed["event"], "closed", "{text}");
    assert_eq!(closed["code"], "peer_not_allowed", "{text}");
    assert!(events.read_chunk().unwrap().is_none());
}

#[test]
fn an_empty_list_of_allowed_ids_stops_start_up_instead_of_locking_every_peer_out() {
    for (builder, says) in [
        (
            Daemon::builder().set("socket", "allowed_uids = []"),
            "socket.allowed_uids",
        ),
        (
            Daemon::builder().env("WAQ__SOCKET__ALLOWED_GIDS", ""),
            "WAQ__SOCKET__ALLOWED_GIDS",
        ),
    ] {
        let mut d = builder.no_wait().start();
        assert_eq!(d.wait_exit().code(), Some(2), "{}", d.log());
        let log = d.log();
        assert!(log.contains(says) && log.contains("is empty"), "{log}");
    }
}

#[test]
fn a_replay_after_the_window_closed_is_the_duplicate_not_a_refusal() {
    let d = Daemon::start();
    let to = "+14155559878";
    // The window is open for about 4 s more beyond the 60 s margin.
    let at = waq::model::format_time(waq::model::now_ms() - 24 * 3600 * 1000 + 64_000);
    assert_eq!(
        d.post("/v1/inbound", &json!({"from": to, "at": at})).status,
        200
    );
    let mut send = text_request(to, "hello");
    send["send_at"] = json!(common::parked_until());
    send["idempotency_key"] = json!("lost-answer");
    let first = d.post("/v1/messages", &send);
    assert_eq!(first.status, 202, "{}", first.text());

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while d.get("/v1/recipients/14155559878?sender=main").json()["window_open"] != false {
        assert!(
            std::time::Instant::now() < deadline,
            "the window never closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let replay = d.post("/v1/messages", &send);
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.json()["id"], first.json()["id"]);
    assert_eq!(replay.json()["duplicate"], true);
    // In a batch too; a new key is refused by the window as before.
    let mut fresh = send.clone();
    fresh["idempotency_key"] = json!("new-key");
    let r = d.post("/v1/messages/batch", &json!([send, fresh]));
    let results = r.json()["results"].clone();
    assert_eq!(results[0]["duplicate"], true, "{results}");
    assert_eq!(results[1]["error"]["code"], "window_closed", "{results}");
}

#[test]
fn window_rule_at_enqueue() {
    let d = Daemon::start();
    let to = "+14155559876";
    let r = d.post("/v1/messages", &text_request(to, "hello"));
    assert_error(&r, 422, "window_closed", Some("message.type"));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("fallback_template"));

    // Open by the clock, closed by the margin (60 s by default): the refusal says so.
    let edge = "+14155559877";
    let at = waq::model::format_time(waq::model::now_ms() - 24 * 3600 * 1000 + 30_000);
    d.post("/v1/inbound", &json!({"from": edge, "at": at}));
    let r = d.post("/v1/messages", &text_request(edge, "hello"));
    assert_error(&r, 422, "window_closed", Some("message.type"));
    let why = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(why.contains("dispatch.window_margin_s (60 s)"), "{why}");

    let mut with_fallback = text_request(to, "hello");
    with_fallback["fallback_template"] =
        json!({"name": "hello_world", "language": {"code": "en_US"}});
    assert_eq!(d.post("/v1/messages", &with_fallback).status, 202);

    let closed = d.get("/v1/recipients/14155559876?sender=main").json();
    assert_eq!(closed["window_open"], false);
    assert!(closed["last_inbound_at"].is_null());

    let opened = d.post("/v1/inbound", &json!({"sender": "main", "from": to}));
    assert_eq!(opened.status, 200, "{}", opened.text());
    assert_eq!(opened.json()["window_open"], true);
    assert_eq!(
        d.post("/v1/messages", &text_request(to, "hello")).status,
        202
    );

    let open = d.get("/v1/recipients/%2B14155559876").json();
    assert_eq!(open["window_open"], true);
    assert_eq!(open["recipient"], "14155559876");
    assert_eq!(open["sender"], "main");
    // Meta's 24 hours, and the part of them free-form sends use: less the margin (60 s).
    let time = |field: &str| waq::model::parse_time(open[field].as_str().unwrap()).unwrap();
    let last = time("last_inbound_at");
    assert_eq!(time("window_open_until"), last + 24 * 3600 * 1000, "{open}");
    assert_eq!(
        time("free_form_until"),
        last + (24 * 3600 - 60) * 1000,
        "{open}"
    );

    // A time a little ahead of the clock is skew: recorded as now, so the window cannot
    // outlast the real one. Further ahead is refused.
    let before = waq::model::now_ms();
    let ahead = d.post(
        "/v1/inbound",
        &json!({"from": "+14155550102", "at": waq::model::format_time(before + 4 * 60_000)}),
    );
    assert_eq!(ahead.status, 200, "{}", ahead.text());
    let recorded = ahead.json()["last_inbound_at"]
        .as_str()
        .and_then(|t| waq::model::parse_time(t).ok())
        .unwrap();
    assert!(
        recorded <= waq::model::now_ms() && recorded >= before,
        "{}",
        ahead.text()
    );
    assert_error(
        &d.post(
            "/v1/inbound",
            &json!({"from": "+14155550102", "at": waq::model::format_time(before + 6 * 60_000)}),
        ),
        422,
        "invalid_value",
        Some("at"),
    );

    // An inbound message older than 24 hours opens nothing.
    let old = d.post(
        "/v1/inbound",
        &json!({"from": "+14155550101", "at": "2020-01-01T00:00:00Z"}),
    );
    assert_eq!(old.json()["window_open"], false);
    // A time without an offset is local, and its hour unknown: refused, not taken as UTC.
    let local = d.post(
        "/v1/inbound",
        &json!({"from": "+14155550102", "at": "2020-01-01T00:00:00"}),
    );
    assert_error(&local, 422, "invalid_value", Some("at"));
    assert!(
        local.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("offset such as `Z`")),
        "{}",
        local.text()
    );
    let lower = d.post(
        "/v1/inbound",
        &json!({"from": "+14155550102", "at": "2020-01-01t00:00:00z"}),
    );
    assert_eq!(lower.status, 200, "{}", lower.text());
    assert_error(
        &d.post("/v1/inbound", &json!({"from": "x"})),
        422,
        "invalid_recipient",
        Some("from"),
    );
    assert_error(
        &d.get("/v1/recipients/14155559876?sender=other"),
        422,
        "unknown_sender",
        Some("sender"),
    );
}

#[test]
fn sigterm_stops_cleanly_with_exit_code_0() {
    let mut d = Daemon::start();
    assert_eq!(
        d.post("/v1/messages", &template_request("+14155551234"))
            .status,
        202
    );
    let status = d.sigterm();
    assert_eq!(status.code(), Some(0), "{}", d.log());
    assert!(!d.socket.exists(), "the socket file is removed at exit");
    assert!(d.log().contains("stopped"));
    assert!(
        !d.log().contains("test-token"),
        "tokens never reach the log"
    );
}

/// A `POST /v1/messages` to `to` whose head and first bytes of body are sent: its request is in
/// progress until the rest (returned) is written.
fn start_upload(d: &Daemon, to: &str) -> (common::Conn, Vec<u8>) {
    let body = template_request(to).to_string();
    let mut conn = d.conn();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: waq\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.as_bytes().split_at(10);
    conn.write_raw(&[head.as_bytes(), first].concat()).unwrap();
    (conn, rest.to_vec())
}

#[test]
fn two_stop_signals_at_once_are_one_stop_that_waits_for_requests_in_progress() {
    let mut d = Daemon::start();
    // A request in progress, its body still arriving: the stop waits for it.
    let (mut uploading, rest) = start_upload(&d, "+14155551234");
    std::thread::sleep(std::time::Duration::from_millis(200));
    // As a supervisor that signals the process, then its group, does.
    d.signal(libc::SIGTERM);
    std::thread::sleep(std::time::Duration::from_millis(20));
    d.signal(libc::SIGTERM);
    d.wait_for_log("stopping");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        d.is_running(),
        "the second signal ended the stop: {}",
        d.log()
    );
    uploading.write_raw(&rest).unwrap();
    let r = uploading.read_response().unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log());
    assert!(!d.log().contains("second stop signal"), "{}", d.log());
}

#[test]
fn sighup_with_a_broken_config_keeps_serving_and_a_good_one_applies() {
    let d = Daemon::start();
    let good = d.config_text();
    d.write_config("this is = not [valid toml");
    d.sighup();
    d.wait_for_log("reload failed");
    assert_eq!(d.get("/v1/health").status, 200);
    assert_eq!(
        d.post("/v1/messages", &template_request("+14155551234"))
            .status,
        202
    );

    d.write_config(&format!(
        "{good}\n[[senders]]\nname = \"second\"\nphone_number_id = \"120000000000002\"\ntoken = \"test-token\"\n"
    ));
    d.sighup();
    d.wait_for_log("configuration reloaded");
    let mut req = template_request("+14155551234");
    req["sender"] = json!("second");
    assert_eq!(d.post("/v1/messages", &req).status, 202);

    // The log level follows the file too (the format needs a restart).
    let text = d
        .config_text()
        .replace("level = \"info\"", "level = \"debug\"");
    assert!(text.contains("level = \"debug\""));
    d.write_config(&text);
    d.sighup();
    d.wait_for_log("log level changed");
}

/// Waits until the log holds `needle` `n` times; the log's lines that name a key needing a
/// restart.
fn restart_warnings_after(d: &Daemon, needle: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while d.log().matches(needle).count() < n {
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    d.log()
        .lines()
        .filter(|l| l.contains("takes effect only at the next start"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_reload_names_the_keys_that_differ_from_what_runs_not_from_the_last_file() {
    let d = Daemon::start();
    let started = d.config_text();
    let moved = d.dir().join("elsewhere");
    let pending = format!(
        "{}\n",
        started
            .replace("[socket]\n", "[socket]\nmode = \"0600\"\n")
            .replace(
                &format!("state_dir = {:?}", d.state_dir.display().to_string()),
                &format!("state_dir = {:?}", moved.display().to_string()),
            )
    );
    assert!(pending.contains("0600") && pending.contains("elsewhere"));
    let reloaded = "configuration reloaded";
    let both = |lines: &[String]| {
        (
            lines.iter().filter(|l| l.contains("socket.mode")).count(),
            lines.iter().filter(|l| l.contains("state_dir")).count(),
        )
    };

    d.write_config(&pending);
    d.sighup();
    assert_eq!(both(&restart_warnings_after(&d, reloaded, 1)), (1, 1));
    // Still pending at the next reload: said again.
    d.sighup();
    assert_eq!(both(&restart_warnings_after(&d, reloaded, 2)), (2, 2));
    // Back to what runs: nothing to restart for.
    d.write_config(&started);
    d.sighup();
    assert_eq!(both(&restart_warnings_after(&d, reloaded, 3)), (2, 2));
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "the socket kept its mode");
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let d = Daemon::start();
    let mut second = Daemon::builder()
        .set(
            "socket",
            &format!("path = {:?}", d.socket.display().to_string()),
        )
        .no_wait()
        .start();
    let status = second.wait_exit();
    assert!(!status.success());
    assert!(second.log().contains("already serving"), "{}", second.log());
    assert_eq!(
        d.get("/v1/health").status,
        200,
        "the first one is untouched"
    );
}

#[test]
fn a_second_daemon_on_the_same_state_dir_says_another_one_holds_it() {
    // Copies of one configuration: the webhook port clashes too, but the lock is the cause.
    // (The first daemon's port is the kernel's pick, read back from its log.)
    let d = Daemon::builder()
        .set("webhook", "listen = \"127.0.0.1:0\"")
        .set("webhook", "app_secret = \"s\"")
        .start();
    let listen = format!("listen = \"{}\"", d.webhook_addr());
    let mut second = Daemon::builder()
        .set(
            "",
            &format!("state_dir = {:?}", d.state_dir.display().to_string()),
        )
        .set("webhook", &listen)
        .set("webhook", "app_secret = \"s\"")
        .no_wait()
        .start();
    assert_eq!(second.wait_exit().code(), Some(1), "{}", second.log());
    let log = second.log();
    assert!(
        log.contains("state_dir")
            && log.contains("another waq daemon (or another process) holds the lock"),
        "{log}"
    );
    assert!(!log.contains("Os {"), "a debug dump: {log}");
    assert_eq!(
        d.get("/v1/health").status,
        200,
        "the first one is untouched"
    );
}

#[test]
fn a_state_dir_that_is_a_file_is_refused_without_a_warning_about_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state");
    std::fs::write(&file, b"").unwrap();
    let mut d = Daemon::builder()
        .set("", &format!("state_dir = {:?}", file.display().to_string()))
        .no_wait()
        .start();
    assert_eq!(d.wait_exit().code(), Some(1), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("state_dir") && log.contains("not a directory"),
        "{log}"
    );
    assert!(!log.contains("chmod"), "{log}");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let mut d = Daemon::start();
    d.kill9();
    assert!(d.socket.exists(), "kill -9 leaves the socket file behind");
    d.restart();
    assert_eq!(d.get("/v1/health").status, 200);
}

#[test]
fn keep_alive_and_pipelining() {
    let d = Daemon::start();
    let mut conn = d.conn();
    let mut raw = common::request_bytes("GET", "/v1/health", None);
    raw.extend(common::request_bytes(
        "POST",
        "/v1/messages",
        Some(template_request("+14155551234").to_string().as_bytes()),
    ));
    raw.extend(common::request_bytes("GET", "/v1/nothing", None));
    conn.write_raw(&raw).unwrap();
    assert_eq!(conn.read_response().unwrap().status, 200);
    assert_eq!(conn.read_response().unwrap().status, 202);
    assert_eq!(conn.read_response().unwrap().status, 404);
    // And the connection is still good for more.
    assert_eq!(conn.send("GET", "/v1/stats", None).unwrap().status, 200);
}

#[test]
fn an_oversized_head_gets_431_json_and_the_connection_serves_on() {
    let d = Daemon::start();
    let mut conn = d.conn();
    // 100 KiB: past waq's 64 KiB head limit, inside hyper's read buffer, so the answer is
    // waq's own, whatever the timing of the reads.
    let big = "x".repeat(100 * 1024);
    let raw = format!("GET /v1/health HTTP/1.1\r\nHost: waq\r\nX-Big: {big}\r\n\r\n");
    conn.write_raw(raw.as_bytes()).unwrap();
    let r = conn.read_response().unwrap();
    assert_error(&r, 431, "headers_too_large", None);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("65536"));
    assert_eq!(conn.send("GET", "/v1/health", None).unwrap().status, 200);
    // A long but legal header passes.
    let fine = format!(
        "GET /v1/health HTTP/1.1\r\nHost: waq\r\nX-Fine: {}\r\n\r\n",
        "y".repeat(16 * 1024)
    );
    conn.write_raw(fine.as_bytes()).unwrap();
    assert_eq!(conn.read_response().unwrap().status, 200);
}

#[test]
fn a_head_hyper_cannot_parse_gets_a_status_before_the_close() {
    let d = Daemon::start();
    let target = format!("/v1/health?x={}", "a".repeat(66_000));
    for (raw, status) in [
        ("GARBAGE\r\n\r\n".to_string(), 400),
        (
            "POST /v1/messages HTTP/1.1\r\nHost: waq\r\nContent-Length: abc\r\n\r\n".into(),
            400,
        ),
        // Longer than any URI the server can hold.
        (format!("GET {target} HTTP/1.1\r\nHost: waq\r\n\r\n"), 414),
    ] {
        let mut conn = d.conn();
        conn.write_raw(raw.as_bytes()).unwrap();
        let r = conn
            .read_response()
            .unwrap_or_else(|e| panic!("no answer to {:.40?}: {e}", raw));
        assert_eq!(r.status, status, "{:.40?}", raw);
    }
    assert_eq!(d.get("/v1/health").status, 200);
}

#[test]
fn events_stream_state_changes_as_json_lines() {
    let d = Daemon::start();
    let mut events = d.conn();
    events.write_request("GET", "/v1/events", None).unwrap();
    let (status, headers) = events.read_head().unwrap();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/x-ndjson"));
    let mut lines = LineReader {
        conn: events,
        buf: String::new(),
    };
    assert_eq!(lines.next()["event"], "subscribed");

    let id = id_of(&d.post("/v1/messages", &template_request("+14155551234")));
    let e = lines.next();
    assert_eq!(e["event"], "message");
    assert_eq!(e["id"], id.as_str());
    assert_eq!(e["state"], "queued");
    d.delete(&format!("/v1/messages/{id}"));
    let e = lines.next();
    assert_eq!(e["state"], "cancelled");
    // The event's detail is its history entry's.
    let m = d.get(&format!("/v1/messages/{id}")).json();
    let last = m["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&e["detail"], &e["at"]),
        (&last["detail"], &last["at"]),
        "{m}"
    );
    d.post("/v1/inbound", &json!({"from": "+14155551234"}));
    let e = lines.next();
    assert_eq!(e["event"], "inbound");
    assert_eq!(e["from"], "14155551234");
}

#[test]
fn an_events_detail_is_its_history_entrys() {
    // Nothing listens at the API base URL: the attempt fails and the message waits to retry.
    let d = Daemon::start();
    let mut lines = subscribe(&d);
    let id = id_of(&d.post("/v1/messages", &common::template_request("+14155551234")));
    let retrying = loop {
        let e = lines.next();
        if e["id"] == id.as_str() && e["state"] == "retrying" {
            break e;
        }
    };
    let m = d.get(&format!("/v1/messages/{id}")).json();
    let entry = m["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["state"] == "retrying")
        .unwrap()
        .clone();
    assert_eq!(retrying["detail"], entry["detail"], "{m}");
    assert!(
        entry["detail"].as_str().unwrap().contains("retry in"),
        "{m}"
    );
}

/// A reader that keeps up misses no event of a batch: the daemon publishes a batch's `queued`
/// events at once, faster than any reader takes them, and keeps more than a full batch's.
#[test]
fn a_reader_that_keeps_up_gets_every_event_of_a_big_batch() {
    let d = Daemon::start();
    let mut events = subscribe(&d);
    let batch: Vec<Value> = (0..5_000)
        .map(|i| template_request(&format!("+1415{i:07}")))
        .collect();
    let r = d.post("/v1/messages/batch", &Value::Array(batch));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut queued = 0;
    while queued < 5_000 {
        let e = events.next();
        assert_ne!(e["event"], "lagged", "after {queued} events: {e}");
        if e["event"] == "message" && e["state"] == "queued" {
            queued += 1;
        }
    }
}

/// Follows `GET /v1/events` until its first line says the subscription is live.
fn subscribe(d: &Daemon) -> LineReader {
    let mut events = d.conn();
    events.write_request("GET", "/v1/events", None).unwrap();
    assert_eq!(events.read_head().unwrap().0, 200);
    let mut lines = LineReader {
        conn: events,
        buf: String::new(),
    };
    assert_eq!(lines.next()["event"], "subscribed");
    lines
}

struct LineReader {
    conn: common::Conn,
    buf: String,
}

impl LineReader {
    fn next(&mut self) -> Value {
        let line = self.next_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The next line as it came, without its line break.
    fn next_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.find('\n') {
                let mut line: String = self.buf.drain(..=i).collect();
                line.pop();
                return line;
            }
            let chunk = self.conn.read_chunk().unwrap().expect("stream ended");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[test]
fn stats_health_and_metrics() {
    let d = Daemon::start();
    d.post("/v1/messages", &template_request("+14155551234"));
    d.post("/v1/messages", &template_request("nope"));

    let health = d.get("/v1/health");
    assert_eq!(
        health.json(),
        json!({"status": "ok", "paused_senders": [], "unconfigured_senders": [],
               "unreachable_senders": [], "senders_at_messaging_limit": [],
               "webhook_relay": null})
    );

    let stats = d.get("/v1/stats");
    assert_eq!(stats.status, 200);
    let s = stats.json();
    assert_eq!(s["messages"]["queued"], 1);
    assert_eq!(s["queue_depth"], 1);
    assert_eq!(s["counters"]["enqueued"], 1);
    assert_eq!(s["counters"]["enqueue_rejected"], 1);
    assert!(s["commit"]["commits"].as_u64().unwrap() >= 1);
    let started = waq::model::parse_time(s["started_at"].as_str().unwrap()).unwrap();
    assert!(started <= waq::model::now_ms(), "{s}");
    let m = d.get("/metrics").text();
    let line = m
        .lines()
        .find(|l| l.starts_with("waq_start_time_seconds "))
        .unwrap_or_else(|| panic!("{m}"));
    let at: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        (at * 1000.0 - started as f64).abs() < 1.0,
        "{line} vs {started}"
    );
    assert!(!stats.text().contains("test-token"), "no token in stats");

    let m = d.get("/metrics");
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = m.text();
    assert!(text.contains("# TYPE waq_enqueued_total counter"));
    assert!(text.contains("waq_enqueued_total 1\n"));
    assert!(text.contains("waq_messages{state=\"queued\"} 1\n"));
    assert!(text.contains("waq_messages{state=\"failed\"} 0\n"));
    assert!(!text.contains("test-token"));
}

#[test]
fn retry_and_resume_answer_for_unknowns() {
    let d = Daemon::start();
    assert_error(
        &d.request("POST", "/v1/messages/00000000000fffff/retry", None),
        404,
        "not_found",
        None,
    );
    let queued = id_of(&d.post("/v1/messages", &template_request("+14155551234")));
    assert_error(
        &d.request("POST", &format!("/v1/messages/{queued}/retry"), None),
        409,
        "not_retryable",
        None,
    );
    assert_error(
        &d.request("POST", "/v1/senders/nobody/resume", None),
        404,
        "not_found",
        None,
    );
    // Not paused: nothing to resume, and the answer says so instead of "resumed".
    let r = d.request("POST", "/v1/senders/main/resume", None);
    assert_error(&r, 409, "cannot_resume", None);
    assert!(r.text().contains("not paused"), "{}", r.text());
    let cli = d.waq(&["sender", "resume", "main"]);
    assert_eq!(cli.status.code(), Some(1), "{cli:?}");
}

#[test]
fn tells_the_service_manager_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let mut d = Daemon::builder()
        .env("NOTIFY_SOCKET", notify_path.to_str().unwrap())
        .env("WATCHDOG_USEC", "2000000")
        .start();
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = notify.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert!(next().contains("READY=1"));
    // Then, while serving: the queue depth as STATUS= and watchdog pings.
    let (mut status, mut pinged) = (None, false);
    while status.is_none() || !pinged {
        let m = next();
        if let Some(s) = m.strip_prefix("STATUS=") {
            status = Some(s.to_string());
        }
        pinged |= m.contains("WATCHDOG=1");
    }
    assert!(status.unwrap().contains("queued"));
    // A reload refused shows in the status line at once, which `systemctl reload` cannot say,
    // until a reload succeeds.
    let good = d.config_text();
    let mut status_after_reload = |config: &str| {
        d.write_config(config);
        d.sighup();
        loop {
            let m = next();
            if let Some(s) = m.strip_prefix("STATUS=") {
                if s.contains("reload refused") == config.contains("mps = \"fast\"") {
                    break s.to_string();
                }
            }
        }
    };
    let refused = status_after_reload(&format!("{good}\n[dispatch]\nmps = \"fast\"\n"));
    assert!(refused.contains("dispatch.mps"), "{refused}");
    let again = status_after_reload(&good);
    assert!(again.contains("queued"), "{again}");
    assert_eq!(d.sigterm().code(), Some(0));
    let stopping = loop {
        let m = next();
        if m.contains("STOPPING=1") {
            break m;
        }
    };
    // With it, the time a stop may take: 10 s for the socket's requests, the request timeout
    // (15 s) + 5 s for the dispatcher's, 10 s for the flush.
    let extend = stopping
        .lines()
        .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .unwrap_or_else(|| panic!("no EXTEND_TIMEOUT_USEC in {stopping:?}"));
    assert_eq!(extend, "40000000", "{stopping:?}");
}

#[test]
fn log_lines_leave_the_time_to_journald_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let start = |journal: bool| {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("daemon.log");
        std::fs::write(&log, "").unwrap();
        let meta = std::fs::metadata(&log).unwrap();
        // systemd names the stream by device and inode; another stream's must not count.
        let ino = if journal { meta.ino() } else { meta.ino() + 1 };
        let mut d = Daemon::builder()
            .env("JOURNAL_STREAM", &format!("{}:{ino}", meta.dev()))
            .start_in(dir);
        assert_eq!(d.sigterm().code(), Some(0));
        d.log()
    };
    let stamped = |log: &str| {
        log.lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.starts_with("20") && l.contains('T'))
    };
    let journal = start(true);
    assert!(journal.contains("<6>INFO waq is serving"), "{journal}");
    // Each line starts with its level as a syslog priority, which journald keeps as the
    // entry's, and no time: journald adds it.
    let priorities = [
        "<3>ERROR ",
        "<4>WARN ",
        "<6>INFO ",
        "<7>DEBUG ",
        "<7>TRACE ",
    ];
    for line in journal.lines().filter(|l| !l.is_empty()) {
        assert!(
            priorities.iter().any(|p| line.starts_with(p)),
            "no priority prefix: {line}"
        );
    }
    let elsewhere = start(false);
    assert!(stamped(&elsewhere), "{elsewhere}");
}

#[test]
fn serves_on_a_socket_passed_by_the_service_manager() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    // The service manager's socket: bound and listening before the daemon starts.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let config = dir.path().join("waq.toml");
    let text = Daemon::builder()
        .set(
            "socket",
            &format!(
                "path = {:?}",
                dir.path().join("unused.sock").display().to_string()
            ),
        )
        .render(dir.path());
    std::fs::write(&config, text).unwrap();

    let fd = listener.as_raw_fd();
    let mut cmd = std::process::Command::new("sh");
    // `exec` keeps the shell's pid, so LISTEN_PID=$$ names the daemon.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --config \"$1\"")
        .arg(common::bin())
        .arg(&config)
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap());
    // SAFETY: dup2 and fcntl are async-signal-safe. They put the listener at descriptor 3
    // without CLOEXEC (dup2 onto itself would keep the flag, hence fcntl in that case).
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut conn = common::Conn::open(&socket).unwrap();
    let r = conn
        .post("/v1/messages", &template_request("+14155551234"))
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(
        !dir.path().join("unused.sock").exists(),
        "socket.path is not bound when a socket is passed"
    );
    drop(conn);

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // The start line names the socket served, and a warning that it is not `socket.path`.
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    let served = format!("socket={} (inherited)", socket.display());
    assert!(log.contains(&served), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("not socket.path")),
        "{log}"
    );
    assert!(
        socket.exists(),
        "the service manager's socket file is left to it"
    );
}

/// Reads on `conn` until the server closes it (EOF): false if an answer or a timeout comes first.
fn closed_by_the_server(conn: &mut common::Conn) -> bool {
    matches!(
        conn.read_head(),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof
    )
}

#[test]
fn idle_connections_make_room_for_a_peer_past_the_cap() {
    let d = Daemon::builder()
        .set("socket", "max_connections = 2")
        .start();
    // A pool's keep-alive connections: each served once, then idle, holding both slots.
    let mut a = d.conn();
    let mut b = d.conn();
    assert_eq!(a.send("GET", "/v1/health", None).unwrap().status, 200);
    assert_eq!(b.send("GET", "/v1/health", None).unwrap().status, 200);

    // A producer with work is served, not left waiting for the idle ones' 30 s timeout
    // (they close when idle for a second)...
    let mut c = d.conn();
    c.set_read_timeout(std::time::Duration::from_secs(15));
    let r = c
        .post("/v1/messages", &template_request("+14155551234"))
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    // ...because an idle one was closed to make room (the client reconnects when it needs one
    // again): one, as one slot was wanted.
    a.set_read_timeout(std::time::Duration::from_secs(2));
    b.set_read_timeout(std::time::Duration::from_secs(2));
    let closed =
        usize::from(closed_by_the_server(&mut a)) + usize::from(closed_by_the_server(&mut b));
    assert_eq!(closed, 1);
    drop((a, b));
    assert_eq!(
        d.conn().send("GET", "/v1/health", None).unwrap().status,
        200
    );
}

#[test]
fn busy_keep_alive_connections_take_turns_with_a_waiting_peer() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = Daemon::builder()
        .set("socket", "max_connections = 2")
        .start();
    // Two producers that never pause: each keeps its connection busy, and opens another when
    // the server closes it, as a pool does.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let closed_under_them = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let (socket, stop, closed) =
                (d.socket.clone(), stop.clone(), closed_under_them.clone());
            std::thread::spawn(move || {
                let mut conn = common::Conn::open(&socket).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let r = conn.send("GET", "/v1/health", None).unwrap();
                    assert_eq!(r.status, 200);
                    if r.header("connection").is_some_and(|v| v == "close") {
                        closed.fetch_add(1, Ordering::Relaxed);
                        conn = common::Conn::open(&socket).unwrap();
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A third is served while they go on, not after they stop.
    let mut c = d.conn();
    c.set_read_timeout(std::time::Duration::from_secs(20));
    let served = c.send("GET", "/v1/health", None);
    let still_busy = !busy.iter().any(|t| t.is_finished());
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        t.join().unwrap();
    }
    assert_eq!(served.unwrap().status, 200);
    assert!(still_busy);
    // One answer said `Connection: close` to make room (its producer reconnected).
    assert!(closed_under_them.load(Ordering::Relaxed) >= 1);
}

#[test]
fn a_connection_whose_next_request_is_arriving_is_not_closed_to_make_room() {
    let d = Daemon::builder()
        .set("socket", "max_connections = 1")
        .start();
    let mut a = d.conn();
    assert_eq!(a.send("GET", "/v1/health", None).unwrap().status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // Idle for over a second, then its next request starts to arrive as a peer comes.
    let request = common::request_bytes("GET", "/v1/health", None);
    let (first, rest) = request.split_at(20);
    a.write_raw(first).unwrap();
    let mut c = d.conn();
    c.write_request("GET", "/v1/health", None).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    a.write_raw(rest).unwrap();
    assert_eq!(a.read_response().unwrap().status, 200);
    // Then it is idle, and makes room.
    assert_eq!(c.read_response().unwrap().status, 200);
    assert!(closed_by_the_server(&mut a));
    // The one slot is kept for requests that end: no event stream takes it.
    drop(c);
    let r = d.get("/v1/events");
    assert_error(&r, 503, "too_many_event_streams", None);
    assert!(r.text().contains("raise it"), "{}", r.text());
    assert_eq!(d.get("/v1/health").status, 200);
}

#[test]
fn busy_connections_keep_their_slots_past_the_cap() {
    let d = Daemon::builder()
        .set("socket", "max_connections = 2")
        .start();
    // An event follower, whose answer streams on, and a request whose body is still arriving:
    // neither is idle.
    let mut follower = d.conn();
    follower.write_request("GET", "/v1/events", None).unwrap();
    assert_eq!(follower.read_head().unwrap().0, 200);
    let (mut uploading, rest) = start_upload(&d, "+14155551234");
    std::thread::sleep(std::time::Duration::from_millis(1200));

    let mut c = d.conn();
    c.write_request("GET", "/v1/health", None).unwrap();
    // Both slots are held by work: the third connection waits, unanswered.
    c.set_read_timeout(std::time::Duration::from_millis(1500));
    let waiting = c.read_response().unwrap_err();
    assert_eq!(waiting.kind(), std::io::ErrorKind::WouldBlock);

    // The upload ends: its answer closes its connection, making room.
    uploading.write_raw(&rest).unwrap();
    let r = uploading.read_response().unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    c.set_read_timeout(common::PATIENCE);
    assert_eq!(c.read_response().unwrap().status, 200);
    // The follower still has its stream: an event reaches it.
    d.post("/v1/messages", &template_request("+14155551235"));
    let mut seen = String::new();
    while !seen.contains(r#""event":"message""#) {
        let chunk = follower.read_chunk().unwrap().expect("the stream ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[test]
fn event_followers_leave_a_slot_for_other_requests() {
    let d = Daemon::builder()
        .set("socket", "max_connections = 3")
        .start();
    let mut followers: Vec<_> = (0..2)
        .map(|_| {
            let mut f = d.conn();
            f.write_request("GET", "/v1/events", None).unwrap();
            assert_eq!(f.read_head().unwrap().0, 200);
            f
        })
        .collect();
    // A third follower would take the last slot: refused, naming the key to raise.
    let mut third = d.conn();
    let r = third.send("GET", "/v1/events", None).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    let error = &r.json()["error"];
    assert_eq!(error["code"], "too_many_event_streams");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("socket.max_connections"));
    // Its connection serves other requests, and so does a newcomer's.
    assert_eq!(third.send("GET", "/v1/health", None).unwrap().status, 200);
    drop(third);
    assert_eq!(
        d.conn().send("GET", "/v1/health", None).unwrap().status,
        200
    );

    // A follower that leaves gives its place back.
    drop(followers.pop());
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let mut f = d.conn();
        f.write_request("GET", "/v1/events", None).unwrap();
        let (status, _) = f.read_head().unwrap();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            std::time::Instant::now() < deadline,
            "the place was not given back"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Polls a message until `done` says so (bounded by `PATIENCE`).
fn wait_for_message(d: &Daemon, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let m = d.get(&format!("/v1/messages/{id}")).json();
        if done(&m) {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "gave up waiting: {m}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn retry_puts_a_failed_message_back_in_the_queue() {
    // Meta answers every request with a 5xx: one transient failure uses up the one attempt.
    // (Where nothing listens, a request never leaves and uses up no attempt.)
    let sim = common::Sim::start(common::sim_config());
    sim.faults(&json!({"http_5xx_share": 1.0}));
    let d = Daemon::builder()
        .against(&sim)
        .set("dispatch", "max_attempts = 1")
        .start();
    let id = id_of(&d.post("/v1/messages", &common::template_request("+14155551234")));
    let failed = wait_for_message(&d, &id, |m| m["state"] == "failed");
    assert!(failed["last_error"]["code"].is_string(), "{failed}");
    assert_eq!(
        d.get("/v1/messages?state=failed").json()["messages"][0]["id"],
        id.as_str()
    );

    let r = d.request("POST", &format!("/v1/messages/{id}/retry"), None);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json(), json!({"id": id, "state": "queued"}));
    // Sent again (and, with nothing listening, failed again): a second failure in its history.
    let m = wait_for_message(&d, &id, |m| {
        let history = m["history"].as_array().unwrap();
        let retried = history
            .iter()
            .position(|h| h["detail"] == "retry requested");
        m["state"] == "failed"
            && retried.is_some_and(|i| history[i..].iter().any(|h| h["state"] == "failed"))
    });
    assert_eq!(m["attempts"], 1, "attempts start over: {m}");
}

#[test]
fn sigterm_under_load_keeps_every_accepted_message() {
    let mut d = Daemon::start();
    let accepted = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..16 {
            let (d, accepted) = (&d, &accepted);
            s.spawn(move || {
                let mut conn = d.conn();
                for i in 0.. {
                    let body = template_request(&format!("+1415{w:02}{i:05}")).to_string();
                    match conn.send("POST", "/v1/messages", Some(body.as_bytes())) {
                        Ok(r) if r.status == 202 => accepted.lock().unwrap().push(id_of(&r)),
                        Ok(r) => {
                            assert_error(&r, 503, "shutting_down", None);
                            return;
                        }
                        // The connection was closed by the stop: fine, nothing was promised.
                        Err(_) => return,
                    }
                }
            });
        }
        while accepted.lock().unwrap().len() < 200 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        d.signal(libc::SIGTERM);
    });
    assert_eq!(d.wait_exit().code(), Some(0), "{}", d.log());
    d.restart();
    let accepted = accepted.into_inner().unwrap();
    for id in &accepted {
        assert_eq!(
            d.get(&format!("/v1/messages/{id}")).status,
            200,
            "{id} was accepted, then lost"
        );
    }
}

#[test]
fn a_lagging_event_reader_is_told_how_much_it_missed() {
    let d = Daemon::start();
    let mut lines = subscribe(&d);

    // Far more events than the stream buffers, while this reader reads nothing.
    let batch = Value::Array(
        (0..10_000)
            .map(|i| template_request(&format!("+1415{i:07}")))
            .collect(),
    );
    // Kernel socket buffers differ between machines: post until far more than any buffer holds.
    for _ in 0..5 {
        let r = d.post("/v1/messages/batch", &batch);
        assert_eq!(r.status, 200);
    }
    let missed = loop {
        let e = lines.next();
        if e["event"] == "lagged" {
            break e["missed"].as_u64().unwrap();
        }
        assert_eq!(e["event"], "message");
    };
    assert!(missed > 0);
}

#[test]
fn enqueue_refuses_what_would_fail_later_and_names_the_field() {
    let d = Daemon::start();
    // A template header's media is fetched by Meta like a media message's.
    let mut r = template_request("+14155551234");
    r["message"]["template"]["components"] = json!([{"type": "header",
        "parameters": [{"type": "image", "image": {"link": "http://e.com/a.jpg"}}]}]);
    assert_error(
        &d.post("/v1/messages", &r),
        422,
        "invalid_link",
        Some("message.template.components[0].parameters[0].image.link"),
    );
    // Meta refuses a body parameter's text with a line break (132018): caught at enqueue.
    let mut r = template_request("+14155551234");
    r["message"]["template"]["components"] = json!([{"type": "body",
        "parameters": [{"type": "text", "text": "Dear John,\nyour order shipped"}]}]);
    let answer = d.post("/v1/messages", &r);
    assert_error(
        &answer,
        422,
        "invalid_value",
        Some("message.template.components[0].parameters[0].text"),
    );
    assert!(answer.text().contains("line break"), "{}", answer.text());
    // Due after its time to live ends: it could only expire untried.
    let mut r = template_request("+14155551234");
    r["ttl_s"] = json!(5);
    let answer = d.post("/v1/messages", &r);
    assert_error(&answer, 422, "out_of_range", Some("send_at"));
    assert!(answer.text().contains("ttl_s"), "{}", answer.text());
    // Due more than a year ahead: refused, in a batch too; a time long past is due now.
    let mut far = template_request("+14155551234");
    far["send_at"] = json!("9999-12-31T23:59:59Z");
    let answer = d.post("/v1/messages", &far);
    assert_error(&answer, 422, "out_of_range", Some("send_at"));
    assert!(
        answer.text().contains("365 days ahead"),
        "{}",
        answer.text()
    );
    let batch = d.post("/v1/messages/batch", &json!([far]));
    let results = batch.json()["results"].clone();
    assert_eq!(results[0]["error"]["code"], "out_of_range", "{results}");
    assert_eq!(results[0]["error"]["field"], "[0].send_at", "{results}");
    let batch = d.post("/v1/messages/batch", &json!([r, 7]));
    let results = batch.json()["results"].clone();
    assert_eq!(results[0]["error"]["field"], "[0].send_at", "{results}");
    assert_eq!(results[1]["error"]["field"], "[1]", "{results}");
    let why = results[1]["error"]["message"].as_str().unwrap();
    assert!(why.contains("Item [1] of the batch"), "{why}");
    assert_eq!(d.get("/v1/stats").json()["messages"]["queued"], 0);
}

#[test]
fn unknown_fields_and_query_parameters_are_refused_on_every_endpoint() {
    let d = Daemon::start();
    let id = id_of(&d.post("/v1/messages", &template_request("+14155551234")));

    let r = d.post("/v1/inbound", &json!({"from": "14155550669", "foo": 1}));
    assert_error(&r, 422, "unknown_field", Some("foo"));
    let r = d.post("/v1/inbound", &json!({"from": 14155550669u64}));
    assert_error(&r, 422, "invalid_type", Some("from"));
    let r = d.post("/v1/inbound", &json!({"fro": "14155550669"}));
    assert_error(&r, 422, "unknown_field", Some("fro"));
    assert!(r.text().contains("did you mean `from`"), "{}", r.text());

    let endpoints = [
        ("GET", "/v1/messages".to_string()),
        ("POST", "/v1/messages".to_string()),
        ("POST", "/v1/messages/batch".to_string()),
        ("GET", format!("/v1/messages/{id}")),
        ("DELETE", format!("/v1/messages/{id}")),
        ("POST", format!("/v1/messages/{id}/retry")),
        ("POST", "/v1/inbound".to_string()),
        ("GET", "/v1/recipients/14155550669".to_string()),
        ("POST", "/v1/senders/main/resume".to_string()),
        ("GET", "/v1/stats".to_string()),
        ("GET", "/v1/health".to_string()),
        ("GET", "/metrics".to_string()),
        ("GET", "/v1/events".to_string()),
    ];
    let enqueue = template_request("+14155551234").to_string();
    let batch = format!("[{enqueue}]");
    let inbound = json!({"from": "14155550669"}).to_string();
    for (method, path) in endpoints {
        let body = match path.as_str() {
            "/v1/messages" if method == "POST" => Some(enqueue.as_bytes()),
            "/v1/messages/batch" => Some(batch.as_bytes()),
            "/v1/inbound" => Some(inbound.as_bytes()),
            _ => None,
        };
        let r = d.request(method, &format!("{path}?foo=bar"), body);
        assert_error(&r, 422, "unknown_parameter", Some("foo"));
        assert!(r.text().contains(&path), "{method} {path}: {}", r.text());
    }
    // A body on a GET or a DELETE would be ignored: refused instead, and nothing happens.
    for (method, path) in [
        ("GET", "/v1/messages".to_string()),
        ("GET", format!("/v1/messages/{id}")),
        ("DELETE", format!("/v1/messages/{id}")),
        ("GET", "/v1/recipients/14155550669".to_string()),
        ("GET", "/v1/stats".to_string()),
    ] {
        let r = d.request(method, &path, Some(br#"{"state":"failed"}"#));
        assert_error(&r, 400, "unexpected_body", None);
        assert!(r.text().contains(&path), "{method} {path}: {}", r.text());
    }
    assert_eq!(
        d.get(&format!("/v1/messages/{id}")).json()["state"],
        "queued"
    );
    assert_eq!(d.get("/v1/stats").json()["messages"]["queued"], 1);

    let r = d.get("/v1/messages?sendr=main");
    assert_error(&r, 422, "unknown_parameter", Some("sendr"));
    assert!(r.text().contains("did you mean `sender`"), "{}", r.text());
    let r = d.get("/v1/recipients/14155550669?sender=main&senders=main");
    assert_error(&r, 422, "unknown_parameter", Some("senders"));
    let r = d.get("/v1/messages?sender=nope");
    assert_error(&r, 422, "unknown_sender", Some("sender"));
    assert!(r.text().contains("list its finished ones"), "{}", r.text());
    // A cancel or a retry does not touch finished messages: no advice on listing them.
    for r in [
        d.delete("/v1/messages?sender=nope"),
        d.post("/v1/messages/retry?sender=nope", &json!({})),
    ] {
        assert_error(&r, 422, "unknown_sender", Some("sender"));
        assert!(r.text().contains("not yet sent)."), "{}", r.text());
        assert!(!r.text().contains("list its finished"), "{}", r.text());
    }
    assert_eq!(
        d.get("/v1/messages?sender=main").json()["messages"][0]["id"],
        id
    );

    let r = d.get("/v1/messages?limit=1&limit=2");
    assert_error(&r, 400, "malformed_query", Some("limit"));
    let why = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(why.contains("`limit` is given more than once"), "{why}");
    assert!(!why.contains("deserialize"), "{why}");

    // Requests without data take no body, or an empty object.
    let r = d.request(
        "POST",
        &format!("/v1/messages/{id}/retry"),
        Some(b"{\"now\": true}"),
    );
    assert_error(&r, 422, "unknown_field", Some("now"));
    let r = d.request("POST", "/v1/senders/main/resume", Some(b"[1]"));
    assert_error(&r, 400, "malformed_request", None);
    let r = d.request("POST", &format!("/v1/messages/{id}/retry"), Some(b"{}"));
    assert_error(&r, 409, "not_retryable", None);
}

/// `DELETE /v1/messages?to=&sender=` cancels every pending message of a recipient, of a
/// sender, or of both, and nothing else; without either it refuses, naming `to`.
#[test]
fn cancel_by_recipient_or_by_sender() {
    let d = Daemon::builder()
        .toml("[[senders]]\nname = \"second\"\nphone_number_id = \"120000000000002\"\ntoken = \"test-token\"\n")
        .start();
    let enqueue = |to: &str, sender: &str| {
        let mut r = template_request(to);
        r["sender"] = json!(sender);
        id_of(&d.post("/v1/messages", &r))
    };
    let main_a = [
        enqueue("+14155550701", "main"),
        enqueue("+14155550701", "main"),
    ];
    let main_b = enqueue("+14155550702", "main");
    let second_a = enqueue("+14155550701", "second");
    let state = |id: &str| d.get(&format!("/v1/messages/{id}")).json()["state"].clone();

    assert_error(&d.delete("/v1/messages"), 422, "missing_field", Some("to"));
    for (path, field) in [
        ("/v1/messages?sender=nobody", "sender"),
        ("/v1/messages?to=12", "to"),
        // An unset variable must not widen the cancel to the whole sender.
        ("/v1/messages?to=&sender=main", "to"),
    ] {
        let r = d.delete(path);
        let named = r.json()["error"]["field"].clone();
        assert_eq!((r.status, named), (422, json!(field)), "{}", r.text());
    }
    assert_error(
        &d.delete("/v1/messages?to=14155550701&cursor=x"),
        422,
        "unknown_parameter",
        Some("cursor"),
    );
    for id in main_a.iter().chain([&main_b, &second_a]) {
        assert_eq!(
            state(id),
            "queued",
            "nothing was cancelled by a refused request"
        );
    }

    // Both filters: the recipient's messages of that sender only (`to` as written anywhere).
    let r = d.delete("/v1/messages?to=%2B1%20415%20555%200701&sender=main");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"cancelled": 2, "sending": 0}));
    for id in &main_a {
        let m = d.get(&format!("/v1/messages/{id}")).json();
        assert_eq!(m["state"], "cancelled", "{m}");
        assert_eq!(
            m["history"].as_array().unwrap().last().unwrap()["detail"],
            "cancelled by request"
        );
    }
    assert_eq!(
        (state(&main_b), state(&second_a)),
        (json!("queued"), json!("queued"))
    );

    // The recipient alone, then the sender alone.
    assert_eq!(
        d.delete("/v1/messages?to=14155550701").json()["cancelled"],
        1
    );
    assert_eq!(state(&second_a), "cancelled");
    assert_eq!(d.delete("/v1/messages?sender=main").json()["cancelled"], 1);
    assert_eq!(state(&main_b), "cancelled");
    assert_eq!(
        d.delete("/v1/messages?sender=main").json(),
        json!({"cancelled": 0, "sending": 0})
    );
    let stats = d.get("/v1/stats").json();
    assert_eq!(stats["messages"]["queued"], 0, "{stats}");
    assert_eq!(stats["messages"]["cancelled"], 4, "{stats}");
    for s in stats["senders"].as_array().unwrap() {
        assert_eq!(s["queued"], 0, "the scheduler let them go too: {s}");
    }

    // The command line: by recipient, and its usage rules.
    let kept = enqueue("+14155550703", "main");
    let gone = enqueue("+14155550704", "main");
    let out = d.waq(&["cancel", "--to", "+1 415 555 0704"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cancelled 1 message\n"
    );
    assert_eq!(
        (state(&kept), state(&gone)),
        (json!("queued"), json!("cancelled"))
    );
    for args in [&["cancel"][..], &["cancel", &kept, "--to", "14155550703"]] {
        let out = d.waq(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(state(&kept), "queued");
}

#[test]
fn a_cancelled_message_no_longer_counts_as_queued_for_its_sender() {
    let d = Daemon::start();
    let sender_queued = |d: &Daemon| {
        let stats = d.get("/v1/stats").json();
        let metric = d
            .get("/metrics")
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("waq_sender_queued{sender=\"main\"} "))
            .map(|n| n.parse::<u64>().unwrap());
        assert_eq!(stats["senders"][0]["name"], "main");
        let queued = stats["senders"][0]["queued"].as_u64();
        assert_eq!(queued, metric, "stats and metrics agree");
        (
            stats["messages"]["queued"].as_u64().unwrap(),
            queued.unwrap(),
        )
    };
    let parked = id_of(&d.post("/v1/messages", &template_request("+14155550555")));
    // Parked too, with a time to live that outlasts its send_at.
    let mut r = common::template_request("+14155550556");
    let in_an_hour = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    r["send_at"] = json!(humantime::format_rfc3339_seconds(in_an_hour).to_string());
    r["ttl_s"] = json!(7200);
    let expiring = id_of(&d.post("/v1/messages", &r));
    let kept = id_of(&d.post("/v1/messages", &template_request("+14155550557")));
    assert_eq!(sender_queued(&d), (3, 3));

    for id in [&parked, &expiring] {
        let r = d.delete(&format!("/v1/messages/{id}"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(sender_queued(&d), (1, 1));
    assert_eq!(
        d.get(&format!("/v1/messages/{kept}")).json()["state"],
        "queued"
    );
}

#[test]
fn a_client_that_writes_its_whole_oversized_body_first_still_reads_the_413() {
    use std::io::{Read, Write};
    let d = Daemon::start();
    // 4 MiB against the 32 KiB cap: far more than the socket's buffers hold, so without the
    // daemon reading on, this write would fail with a broken pipe before any answer is read.
    let body = vec![b' '; 4 * 1024 * 1024];
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: waq\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body)
        .expect("the daemon stopped reading the body");
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"too_large\""), "{answer}");
}

#[test]
fn a_request_refused_on_its_head_is_answered_after_its_body_and_the_connection_lives_on() {
    // As Python's http.client and Node's http send: the head, then the body in another write
    // (here a moment later, so the daemon has decided on the head alone before the body).
    let big_batch = json!([template_request("+14155551234")]).to_string() + &" ".repeat(400_000);
    let cases: [(&str, &str, String, u16, &str); 6] = [
        (
            "POST",
            "/v1/message",
            template_request("+14155551234").to_string(),
            404,
            "unknown_route",
        ),
        (
            "PUT",
            "/v1/messages",
            template_request("+14155551234").to_string(),
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/v1/messages",
            "{}".to_string(),
            400,
            "unexpected_body",
        ),
        (
            "POST",
            "/v1/messages?dry_run=1",
            template_request("+14155551234").to_string(),
            422,
            "unknown_parameter",
        ),
        (
            "POST",
            "/v1/messages/batch?dry_run=1",
            big_batch.clone(),
            422,
            "unknown_parameter",
        ),
        ("POST", "/v1/batch", big_batch, 404, "unknown_route"),
    ];
    let d = Daemon::start();
    for (method, path, body, status, code) in cases {
        let mut conn = d.conn();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: waq\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_raw(head.as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        conn.write_raw(body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: the body could not be written: {e}"));
        let r = conn.read_response().unwrap();
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_eq!(
            r.json()["error"]["code"],
            code,
            "{method} {path}: {}",
            r.text()
        );
        // Kept alive: the next request on the same connection is served.
        let next = conn
            .send("GET", "/v1/health", None)
            .unwrap_or_else(|e| panic!("{method} {path}: the connection was closed: {e}"));
        assert_eq!(next.status, 200, "{method} {path}");
    }
    // Nothing was stored by any of them.
    let listed = d.get("/v1/messages").json();
    assert_eq!(listed["messages"], json!([]), "{listed}");
}

#[test]
fn a_chunked_body_over_the_cap_is_read_to_its_end_and_answered_413() {
    let d = Daemon::start();
    let mut conn = d.conn();
    conn.write_raw(
        b"POST /v1/messages HTTP/1.1\r\nHost: waq\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..16 {
        conn.write_raw(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        conn.write_raw(&chunk)
            .expect("the daemon stopped reading the body");
        conn.write_raw(b"\r\n").unwrap();
    }
    conn.write_raw(b"0\r\n\r\n").unwrap();
    let r = conn.read_response().unwrap();
    assert_error(&r, 413, "too_large", None);
    assert_eq!(conn.send("GET", "/v1/health", None).unwrap().status, 200);
}

/// A client that waits for `100 Continue` before its body is answered without being asked for
/// a body the answer does not need.
#[test]
fn a_request_refused_on_its_head_does_not_ask_for_a_body_it_would_drop() {
    let d = Daemon::start();
    // An unknown route, an unknown parameter, a body over the cap.
    for path in ["/v1/message", "/v1/messages?dry_run=1", "/v1/messages"] {
        let mut conn = d.conn();
        conn.write_raw(
            format!(
                "POST {path} HTTP/1.1\r\nHost: waq\r\nContent-Type: application/json\r\n\
                 Expect: 100-continue\r\nContent-Length: 1000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let r = conn.read_response().unwrap();
        assert!([404, 422, 413].contains(&r.status), "{path}: {}", r.status);
    }
}

#[test]
fn a_client_that_ends_its_side_after_the_request_still_gets_the_answer() {
    use std::io::{Read, Write};
    let sim = common::Sim::start(common::sim_config());
    let d = Daemon::builder().against(&sim).start();
    // As `nc -N`, socat or a script calling shutdown(SHUT_WR) does: request, then end of
    // writing, then read the answer until the daemon closes.
    let send = |path: &str, body: &Value| {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(common::PATIENCE)).unwrap();
        let request = common::request_bytes("POST", path, Some(body.to_string().as_bytes()));
        s.write_all(&request).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let single = send("/v1/messages", &common::template_request("+14155550170"));
    assert!(single.starts_with("HTTP/1.1 202"), "{single}");
    assert!(single.contains(r#""state":"queued""#), "{single}");
    let batch: Vec<Value> = (1..4)
        .map(|i| common::template_request(&format!("+1415555017{i}")))
        .collect();
    let answer = send("/v1/messages/batch", &Value::Array(batch));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches(r#""state":"queued""#).count(), 3, "{answer}");
    d.wait_count("sent", 4, common::PATIENCE);
}

#[test]
fn a_request_whose_client_leaves_before_the_answer_is_still_carried_out_whole() {
    use std::io::Write;
    let sim = common::Sim::start(common::sim_config());
    let mut d = Daemon::builder().against(&sim).start();
    // The client writes its request and closes at once, reading nothing.
    let send_and_leave = |path: &str, body: &Value| {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        let request = common::request_bytes("POST", path, Some(body.to_string().as_bytes()));
        s.write_all(&request).unwrap();
    };
    let keyed = |to: &str, key: &str| {
        let mut r = common::template_request(to);
        r["idempotency_key"] = json!(key);
        r
    };
    let single = keyed("+14155550160", "left-0");
    let batch: Vec<Value> = (1..4)
        .map(|i| keyed(&format!("+1415555016{i}"), &format!("left-{i}")))
        .collect();
    send_and_leave("/v1/messages", &single);
    // A batch takes two commits, far longer than the server takes to see the end of the
    // connection: its future is dropped before its answer, and finishes detached.
    send_and_leave("/v1/messages/batch", &Value::Array(batch.clone()));
    // The requests ran to their end: stored, committed, handed to the dispatcher (sent), and
    // a retry with the same keys hears so.
    d.wait_count("sent", 4, common::PATIENCE);
    let r = d.post("/v1/messages", &single);
    assert_eq!(
        (r.status, &r.json()["duplicate"]),
        (200, &json!(true)),
        "{}",
        r.text()
    );
    let r = d.post("/v1/messages/batch", &Value::Array(batch));
    assert_eq!(r.status, 200, "{}", r.text());
    for item in r.json()["results"].as_array().unwrap() {
        assert_eq!(item["duplicate"], true, "{item}");
    }
    // The batch is whole and stays: the next start does not take it back.
    d.restart();
    assert_eq!(d.count("sent"), 4);
    assert_eq!(sim.number().accepted, 4);
}

#[test]
fn an_events_follower_that_goes_away_frees_its_connection_at_once() {
    use std::io::{Read, Write};
    let d = Daemon::builder()
        .set("socket", "max_connections = 4")
        .start();
    let follow = || {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(&common::request_bytes("GET", "/v1/events", None))
            .unwrap();
        s
    };
    // Three times as many followers as there are connections, each gone after its first
    // line, on a daemon with nothing to publish: each slot must come free without waiting
    // for an event whose write would fail.
    for i in 0..12 {
        let mut s = follow();
        // Everything the daemon has to say for now: the head and the `subscribed` line.
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("subscribed") {
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap_or_else(|e| {
                panic!("follower {i} got no answer (no free connection?): {e}")
            });
            assert!(n > 0, "follower {i}: closed early");
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(seen.starts_with(b"HTTP/1.1 200"), "follower {i}");
    }
    // Followers that end their side of the connection after asking are taken as gone too:
    // the daemon ends each stream (`read_to_end` returns) and its slot comes free.
    for i in 0..12 {
        let mut s = follow();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut seen = Vec::new();
        s.read_to_end(&mut seen)
            .unwrap_or_else(|e| panic!("half-closed follower {i} was not ended: {e}"));
    }
    assert_eq!(d.get("/v1/health").status, 200);
}
