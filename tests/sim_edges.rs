//! `waq sim` as a process: answers to the wrong method, errors that name the key at fault, an
//! empty token refused at start, and a log without colour codes when stderr is a file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::SimChild;

const NUMBER: &str = "120000000000001";

/// One request (the connection closed after it); the status and the body as JSON.
fn request(sim: &SimChild, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", sim.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\
         Authorization: Bearer sim-token\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {body:?}"));
    (status, json)
}

#[test]
fn a_wrong_method_gets_metas_error_shape() {
    let sim = SimChild::start(&[]);
    let (status, v) = request(&sim, "GET", &format!("/v25.0/{NUMBER}/messages"), "");
    assert!((400..500).contains(&status), "{status} {v}");
    assert_eq!(v["error"]["code"], 100, "{v}");
    assert_eq!(v["error"]["error_subcode"], 33, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Unsupported get request")),
        "{v}"
    );
    assert!(v["error"]["type"].is_string(), "{v}");

    let (status, v) = request(&sim, "GET", "/sim/reset", "");
    assert_eq!(status, 405, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
}

#[test]
fn a_bad_fault_value_names_its_key() {
    let sim = SimChild::start(&[]);
    let (status, v) = request(&sim, "POST", "/sim/faults", r#"{"latency_ms": "x"}"#);
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("latency_ms"), "{message}");

    let (status, v) = request(
        &sim,
        "POST",
        "/sim/token",
        r#"{"token": "t", "expire_after_ms": -1}"#,
    );
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("expire_after_ms"), "{message}");

    // A key that is missing is named as before, not pinned on another key.
    let (status, v) = request(&sim, "POST", "/sim/token", r#"{"expire_after_ms": 5}"#);
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("missing field `token`"), "{message}");
    assert!(!message.contains("expire_after_ms"), "{message}");
}

/// The message of a `/sim/*` error: 400 with `{"error": {"message"}}`.
fn sim_error(answer: (u16, Value)) -> String {
    let (status, v) = answer;
    assert_eq!(status, 400, "{v}");
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {v}"))
        .to_string()
}

#[test]
fn sim_endpoints_refuse_unknown_query_parameters_and_keys() {
    let sim = SimChild::start(&[]);
    let message = sim_error(request(&sim, "POST", "/sim/reset?all=maybe", ""));
    assert!(
        message.contains("all") && message.contains("maybe"),
        "{message}"
    );
    // An endpoint without body keys says so, rather than list none.
    let message = sim_error(request(&sim, "POST", "/sim/reset", r#"{"a": 1}"#));
    assert!(message.contains("takes no body keys"), "{message}");
    for (method, path, body) in [
        ("POST", "/sim/reset?bogus=1", ""),
        ("GET", "/sim/stats?bogus=1", ""),
        ("GET", "/sim/faults?bogus=1", ""),
        ("POST", "/sim/faults?bogus=1", "{}"),
        ("POST", "/sim/token?bogus=1", r#"{"token": "sim-token"}"#),
        (
            "POST",
            "/sim/inbound?bogus=1",
            r#"{"from": "+14155550100"}"#,
        ),
        ("POST", "/sim/reset", r#"{"bogus": 1}"#),
        (
            "POST",
            "/sim/inbound",
            r#"{"from": "+14155550100", "bogus": 1}"#,
        ),
        (
            "POST",
            "/sim/inbound",
            r#"{"from": "+14155550100", "type": "button", "button": {"text": "Yes"}, "image": {}}"#,
        ),
        ("POST", "/sim/faults", r#"{"bogus": 1}"#),
        (
            "POST",
            "/sim/token",
            r#"{"token": "sim-token", "bogus": 1}"#,
        ),
    ] {
        let message = sim_error(request(&sim, method, path, body));
        let key = if body.contains("\"image\"") {
            "image"
        } else {
            "bogus"
        };
        assert!(message.contains(key), "{method} {path} {body}: {message}");
        // The keys it lists include the one taken apart before the rest is read.
        if path == "/sim/token" || path == "/sim/faults" {
            assert!(message.contains("phone_number_id"), "{path}: {message}");
        }
    }
    // What the endpoints do take still works.
    for (method, path, body) in [
        ("POST", "/sim/reset?all=true", ""),
        ("POST", "/sim/reset?all=false", "{}"),
        ("GET", "/sim/stats", ""),
        ("GET", "/sim/faults", ""),
        (
            "POST",
            "/sim/inbound",
            r#"{"from": "+14155550100", "text": "Hi", "name": "Ann", "context": {"id": "wamid.x"}}"#,
        ),
        (
            "POST",
            "/sim/inbound",
            r#"{"from": "+14155550100", "type": "button", "button": {"text": "Yes", "payload": "yes"}}"#,
        ),
    ] {
        let (status, v) = request(&sim, method, path, body);
        assert_eq!(status, 200, "{method} {path} {body}: {v}");
    }
}

#[test]
fn a_recipient_list_or_category_that_is_wrong_is_refused_at_start() {
    for (toml, key) in [
        ("not_on_whatsapp = [\"abc\"]\n", "not_on_whatsapp[0]"),
        ("bogus = 1\n", "bogus"),
        (
            "[[numbers]]\nphone_number_id = \"120000000000001\"\nmps = 0\n",
            "numbers[0].mps",
        ),
        (
            "[[templates]]\nname = \"x\"\nlanguage = \"en_US\"\ncategory = \"xyz\"\n",
            "templates[0].category",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.toml");
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_waq"))
            .args(["sim", "--listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // A configuration error is a usage error, as for `waq serve`.
        assert_eq!(out.status.code(), Some(2), "{toml:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{toml:?}: {err}");
    }
}

#[test]
fn an_empty_token_is_refused_at_start_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_waq"))
        .args(["sim", "--listen", "127.0.0.1:0"])
        .env("WAQ_SIM__TOKEN", "")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an empty token was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token must not be empty"), "{err}");
}

#[test]
fn the_log_has_no_colour_codes_in_a_file() {
    let sim = SimChild::start(&[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = sim.log_text();
        if !log.is_empty() {
            break log;
        }
        assert!(Instant::now() < deadline, "the simulator logged nothing");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!log.contains('\x1b'), "colour codes in a file: {log:?}");
}

#[test]
fn webhooks_given_up_on_are_logged_once_not_per_payload() {
    // A port nobody listens on: every POST of the status webhooks fails at once. Held for the
    // whole test, so that nothing else can start listening there.
    let held = common::HeldPort::new();
    let closed = held.port();
    let sim = SimChild::start(&[
        (
            "WAQ_SIM__WEBHOOK__URL",
            &format!("http://127.0.0.1:{closed}/webhook"),
        ),
        ("WAQ_SIM__WEBHOOK__MAX_RETRIES", "0"),
        ("WAQ_SIM__STATUSES__SENT_MS", "1"),
    ]);
    let send = r#"{"messaging_product":"whatsapp","to":"14155550100","type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}}"#;
    for _ in 0..3 {
        let (status, v) = request(&sim, "POST", &format!("/v25.0/{NUMBER}/messages"), send);
        assert_eq!(status, 200, "{v}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = sim.log_text();
        let (_, stats) = request(&sim, "GET", "/sim/stats", "");
        let failed = stats["numbers"][NUMBER]["webhooks"]["failed"]
            .as_u64()
            .unwrap_or(0);
        if log.contains("webhook payloads dropped") && failed >= 3 {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "no warning for {failed} dropped payloads: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(log.contains(&format!("127.0.0.1:{closed}")), "{log}");
    assert_eq!(
        log.matches("webhook payloads dropped").count(),
        1,
        "one line for a burst: {log}"
    );
}
