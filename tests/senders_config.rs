//! Senders coming and going with the configuration, against the Cloud API simulator: a sender
//! left out (by a reload or at a restart) sends nothing and holds its messages, visible and
//! cancellable, until a configuration names it again; two senders on one number are refused.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::{
    parked, sender_toml, template_request, two_numbers, wait_until, Daemon, Sim, PATIENCE,
    SECOND_NUMBER, SIM_NUMBER, TOKEN,
};
use waq::model::{format_time, now_ms};

/// `request` for the sender `second`.
fn for_second(mut request: Value) -> Value {
    request["sender"] = json!("second");
    request
}

/// The sender `name` in `/v1/stats`, or null.
fn sender_stats(d: &Daemon, name: &str) -> Value {
    let stats = d.get("/v1/stats").json();
    stats["senders"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Requests that reached the simulator's second number.
fn second_requests(sim: &Sim) -> u64 {
    sim.stats().numbers[SECOND_NUMBER].requests
}

/// What a sender that is not configured looks like from outside, holding `ids` (queued).
fn assert_held(d: &Daemon, ids: &[&str]) {
    let s = sender_stats(d, "second");
    assert_eq!(s["configured"], false, "{s}");
    assert_eq!(s["queued"], ids.len(), "{s}");
    assert_eq!(s["phone_number_id"], Value::Null, "{s}");
    let stats = d.get("/v1/stats").json();
    assert_eq!(
        stats["queue_depth"],
        ids.len(),
        "the counts add up: {stats}"
    );
    let metrics = d.get("/metrics").text();
    assert!(
        metrics.contains("waq_sender_configured{sender=\"second\"} 0"),
        "{metrics}"
    );
    let h = d.get("/v1/health").json();
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(
        h["unconfigured_senders"],
        json!([{"name": "second", "queued": ids.len()}]),
        "{h}"
    );
    let out = d.waq(&["health"]);
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("second not configured"), "{out}");

    // Its messages can be found by its name; new ones are refused; there is nothing to resume.
    let list = d.get("/v1/messages?sender=second");
    assert_eq!(list.status, 200, "{}", list.text());
    let listed: Vec<String> = list.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids);
    let refused = d.post(
        "/v1/messages",
        &for_second(template_request("+14155550299")),
    );
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "unknown_sender");
    let r = d.request("POST", "/v1/senders/second/resume", None);
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn a_sender_removed_by_a_reload_holds_its_messages_until_it_is_back() {
    let sim = Sim::start(two_numbers());
    let second = sender_toml("second", SECOND_NUMBER, TOKEN, 10);
    let d = Daemon::builder().against(&sim).toml(&second).start();
    let with_second = d.config_text();
    // Due in a moment: by then the sender is gone.
    let due = now_ms() + 1_500;
    let mut soon = for_second(template_request("+14155550201"));
    soon["send_at"] = json!(format_time(due));
    let soon = d.enqueue(&soon);
    let later = d.enqueue(&parked(for_second(template_request("+14155550202"))));
    let cancelled = d.enqueue(&parked(for_second(template_request("+14155550203"))));

    d.write_config(&with_second.replace(&second, ""));
    d.sighup();
    d.wait_for_log("configuration reloaded");
    assert_held(&d, &[&soon, &later, &cancelled]);
    let r = d.delete(&format!("/v1/messages/{cancelled}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sender_stats(&d, "second")["queued"], 2);

    // Past its send_at, the message is still queued, and nothing reached the number.
    std::thread::sleep(Duration::from_millis(due.saturating_sub(now_ms()) + 1_000));
    let m = d.message(&soon);
    assert_eq!(
        (&m["state"], &m["attempts"]),
        (&json!("queued"), &json!(0)),
        "{m}"
    );
    assert_eq!(second_requests(&sim), 0);

    d.write_config(&with_second);
    d.sighup();
    let m = d.wait_message(&soon, PATIENCE, |m| m["state"] == "sent");
    assert_eq!(m["attempts"], 1, "{m}");
    let s = sender_stats(&d, "second");
    assert_eq!(
        (&s["configured"], &s["queued"], &s["phone_number_id"]),
        (&json!(true), &json!(1), &json!(SECOND_NUMBER)),
        "{s}"
    );
    assert_eq!(d.get("/v1/health").json()["status"], "ok");
    assert_eq!(second_requests(&sim), 1);
}

#[test]
fn a_sender_left_out_at_a_restart_holds_its_messages_the_same_way() {
    let mut config = two_numbers();
    config.numbers[1].token = Some("second-token".into());
    let sim = Sim::start(config);
    let second = sender_toml("second", SECOND_NUMBER, TOKEN, 10);
    let mut d = Daemon::builder().against(&sim).toml(&second).start();
    let with_second = d.config_text();
    // The number refuses the sender's token: it pauses, and the message stays queued.
    let id = d.enqueue(&for_second(template_request("+14155550211")));
    wait_until(
        "sender second paused",
        PATIENCE,
        || (sender_stats(&d, "second")["paused"] == true).then_some(()),
        || sender_stats(&d, "second").to_string(),
    );
    d.wait_message(&id, PATIENCE, |m| m["state"] == "queued");

    d.write_config(&with_second.replace(&second, ""));
    d.restart();
    assert_held(&d, &[&id]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(second_requests(&sim), 1, "only the request that got 190");

    // Back with the right token, by a reload: sent.
    d.write_config(&with_second.replace(
        &format!("token = {TOKEN:?}\nmps = 10"),
        "token = \"second-token\"\nmps = 10",
    ));
    d.sighup();
    let m = d.wait_message(&id, PATIENCE, |m| m["state"] == "sent");
    assert_eq!(m["sender"], "second", "{m}");
    assert_eq!(d.get("/v1/health").json()["status"], "ok");
}

#[test]
fn a_second_sender_on_the_same_number_is_refused_at_start_and_on_reload() {
    let mut d = Daemon::start();
    let duplicate = format!(
        "{}\n{}",
        d.config_text(),
        sender_toml("second", SIM_NUMBER, TOKEN, 10)
    );
    d.write_config(&duplicate);
    d.sighup();
    d.wait_for_log("reload failed, keeping the running configuration");
    assert!(
        d.log().contains("senders[1].phone_number_id"),
        "{}",
        d.log()
    );
    let refused = d.post(
        "/v1/messages",
        &for_second(template_request("+14155550221")),
    );
    assert_eq!(refused.json()["error"]["code"], "unknown_sender");

    assert!(d.sigterm().success());
    d.spawn_again();
    assert_eq!(d.wait_exit().code(), Some(2), "{}", d.log());
    let log = d.log();
    let last = log.lines().last().unwrap_or("");
    assert!(last.contains("senders[1].phone_number_id"), "{log}");
}
