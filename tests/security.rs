//! Secrets and trust: the access token never shows in the daemon's output (debug level too),
//! its error answers, `/v1/stats`, `/metrics` or `/v1/health` — also while Meta answers 190 and
//! when the configuration is invalid; peers outside `allowed_uids` / `allowed_gids` get 403;
//! the webhook refuses bodies that are not signed with the app secret.

mod common;
mod rel;

use common::{parked, template_request, Daemon};
use rel::{http_tcp, wait_until, Sim};
use serde_json::json;
use waq::sim::SimConfig;

/// Distinctive enough that any appearance is a leak.
const TOKEN: &str = "EAAG-leak-canary-7f3a9c1e5b2d";
const SECRET: &str = "app-secret-canary-91c4e0";

fn assert_no_token(what: &str, text: &str) {
    for secret in [TOKEN, SECRET] {
        assert!(
            !text.contains(secret),
            "{what} shows a secret:\n{}",
            text.lines()
                .filter(|l| l.contains(secret))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn the_token_never_leaks_even_when_meta_rejects_it() {
    // The simulator knows another token: every send is answered 190.
    let sim = Sim::start_direct(SimConfig {
        token: "the-right-token".into(),
        ..SimConfig::default()
    });
    let mut d = Daemon::builder()
        .without_default_sender()
        .set("log", "level = \"debug\"")
        .set("api", &format!("base_url = \"{}\"", sim.base_url()))
        .toml(&format!(
            "[[senders]]\nname = \"main\"\nphone_number_id = \"{}\"\ntoken_env = \"WA_ACCESS_TOKEN\"\nmps = 10\n",
            rel::PHONE_ID
        ))
        .toml(
            "[webhook]\nlisten = \"127.0.0.1:0\"\napp_secret_env = \"WA_APP_SECRET\"\nverify_token_env = \"WA_VERIFY_TOKEN\"",
        )
        .env("WA_ACCESS_TOKEN", TOKEN)
        .env("WA_APP_SECRET", SECRET)
        .env("WA_VERIFY_TOKEN", "verify")
        .start();

    let r = d.post("/v1/messages", &template_request("+14155550100"));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap_or_default().to_string();
    wait_until("the sender to pause on 190", || {
        d.get("/v1/health").json()["paused_senders"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });

    let mut seen = Vec::new();
    for path in [
        "/v1/health",
        "/v1/stats",
        "/metrics",
        &format!("/v1/messages/{id}"),
        "/v1/messages?limit=10",
        "/v1/messages/nonsense",
        "/v1/recipients/14155550100?sender=main",
    ] {
        let r = d.get(path);
        assert_no_token(path, &r.text());
        seen.push(format!("{path} {}", r.status));
    }
    let m = d.get(&format!("/v1/messages/{id}")).json();
    assert_eq!(m["last_error"]["meta_code"], 190, "{m}");
    for (path, body) in [
        (
            "/v1/messages",
            json!({"to": "x", "message": {"type": "text"}}),
        ),
        ("/v1/messages/batch", json!([{"to": "x"}])),
        ("/v1/senders/main/resume", json!({})),
        ("/v1/inbound", json!({"from": 5})),
    ] {
        let r = d.post(path, &body);
        assert_no_token(path, &r.text());
    }
    let cli = d.waq(&["stats", "--json"]);
    assert_no_token("waq stats", &String::from_utf8_lossy(&cli.stdout));

    // A reload with a broken file that holds the token inline: refused, and not echoed.
    let good = d.config_text();
    d.write_config(&format!(
        "{good}\n[[senders]]\nname = \"main\"\nphone_number_id = \"x\"\ntoken = \"{TOKEN}\"\nmps = \"fast\"\n"
    ));
    d.sighup();
    d.wait_for_log("reload failed");
    d.write_config(&good);

    // Resumed and failing again, so the 190 path is logged twice.
    d.post("/v1/senders/main/resume", &json!({}));
    wait_until("the sender to pause again", || {
        d.get("/v1/health").json()["paused_senders"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    d.sigterm();
    let log = d.log();
    assert!(log.contains("DEBUG"), "debug logging was not on");
    assert_no_token("the daemon's log (debug level)", &log);
}

#[test]
fn an_invalid_configuration_does_not_print_the_token() {
    for broken in [
        // The token inline and a wrong value next to it.
        format!("[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"{TOKEN}\"\nmps = -5\n"),
        // The token inline, the sender's key misspelt.
        format!("[[senders]]\nname = \"main\"\nphone_numbr_id = \"1\"\ntoken = \"{TOKEN}\"\n"),
        // A token file that does not exist, named after the token.
        format!("[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken_file = \"/nonexistent/{TOKEN}\"\n"),
        // Two ways to give the token at once.
        format!("[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"{TOKEN}\"\ntoken_env = \"WA_ACCESS_TOKEN\"\n"),
    ] {
        let mut d = Daemon::builder()
            .without_default_sender()
            .toml(&broken)
            .env("WA_ACCESS_TOKEN", TOKEN)
            .no_wait()
            .start();
        let status = d.wait_exit();
        assert!(!status.success(), "started with:\n{broken}");
        let log = d.log();
        assert!(!log.trim().is_empty(), "no error message for:\n{broken}");
        if broken.contains("token_file") {
            // The path is the operator's own text, and naming it is what helps; this case only
            // checks that the file's *content* is never read into a message.
            continue;
        }
        assert_no_token(&format!("the error for\n{broken}"), &log);
    }
}

#[test]
fn a_token_that_cannot_go_in_a_header_is_refused_at_start_and_on_reload() {
    let sender =
        "[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken_env = \"WA_ACCESS_TOKEN\"\n";
    let mut d = Daemon::builder()
        .without_default_sender()
        .toml(sender)
        .env("WA_ACCESS_TOKEN", &format!("{TOKEN}\nX-Injected: 1"))
        .no_wait()
        .start();
    assert_eq!(d.wait_exit().code(), Some(2), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("senders[0].token_env")
            && log.contains("WA_ACCESS_TOKEN has a line break")
            && log.contains("HTTP header"),
        "{log}"
    );
    assert_no_token("the error at start", &log);

    let d = Daemon::start();
    let good = d.config_text();
    d.write_config(&good.replace("token = \"test-token\"", &format!("token = \"{TOKEN} \"")));
    d.sighup();
    d.wait_for_log("reload failed, keeping the running configuration");
    let log = d.log();
    assert!(
        log.contains("senders[0].token") && log.contains("a space at character"),
        "{log}"
    );
    assert_no_token("the error on reload", &log);
    assert_eq!(d.get("/v1/health").status, 200);
}

#[test]
fn peers_outside_the_allowed_ids_get_403() {
    let me = unsafe { libc::geteuid() };
    let my_gid = unsafe { libc::getegid() };
    let other = me.wrapping_add(4242);
    for (key, value) in [
        ("allowed_uids", format!("[{other}]")),
        ("allowed_gids", format!("[{}]", my_gid.wrapping_add(4242))),
    ] {
        let d = Daemon::builder()
            .set("socket", &format!("{key} = {value}"))
            .start();
        let r = d.post("/v1/messages", &parked(template_request("+14155550100")));
        assert_eq!(r.status, 403, "{key} = {value}: {}", r.text());
        assert_eq!(r.code(), "peer_not_allowed");
        for path in ["/v1/health", "/v1/stats", "/metrics"] {
            assert_eq!(d.get(path).status, 403, "{path} with {key} = {value}");
        }
    }
    // The control: our own uid is let in.
    let d = Daemon::builder()
        .set("socket", &format!("allowed_uids = [{me}]"))
        .start();
    let r = d.post("/v1/messages", &parked(template_request("+14155550100")));
    assert_eq!(r.status, 202, "{}", r.text());
}

#[test]
fn the_webhook_refuses_unsigned_bodies() {
    let d = Daemon::builder()
        .toml(
            "[webhook]\nlisten = \"127.0.0.1:0\"\napp_secret_env = \"WA_APP_SECRET\"\nverify_token_env = \"WA_VERIFY_TOKEN\"",
        )
        .env("WA_APP_SECRET", SECRET)
        .env("WA_VERIFY_TOKEN", "verify")
        .start();
    let hook = d.webhook_addr();
    // Sent now: a window opened by an older message may already have closed.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000001", "phone_number_id": rel::PHONE_ID},
        "contacts": [{"profile": {"name": "Eve"}, "wa_id": "14155550177"}],
        "messages": [{"from": "14155550177", "id": "wamid.x", "timestamp": now_s.to_string(),
                      "type": "text", "text": {"body": "hi"}}]}}]}]})
    .to_string();
    let wrong = waq::webhook::signature::sign(b"not-the-secret", body.as_bytes());
    for headers in [
        vec![],
        vec![("X-Hub-Signature-256", "sha256=")],
        vec![("X-Hub-Signature-256", "sha1=abcdef")],
        vec![("X-Hub-Signature-256", wrong.as_str())],
    ] {
        let (status, text) = http_tcp(hook, "POST", "/webhook", &headers, &body);
        assert_eq!(status, 401, "{headers:?}: {text}");
        assert_no_token("a webhook refusal", &text);
    }
    // Nothing of the refused payloads was applied: the sender's window stays closed.
    let w = d.get("/v1/recipients/14155550177?sender=main").json();
    assert_eq!(w["window_open"], false, "{w}");
    // The control: signed with the secret, it is taken and applied.
    let good = waq::webhook::signature::sign(SECRET.as_bytes(), body.as_bytes());
    let (status, text) = http_tcp(
        hook,
        "POST",
        "/webhook",
        &[("X-Hub-Signature-256", good.as_str())],
        &body,
    );
    assert_eq!(status, 200, "{text}");
    wait_until("the signed payload to open the window", || {
        d.get("/v1/recipients/14155550177?sender=main").json()["window_open"] == true
    });
}

#[test]
fn plain_http_beyond_the_loopback_is_warned_of_at_start_and_on_reload() {
    const WARNING: &str = "api.base_url is plain http:// to another machine";
    // A name that never resolves: nothing is sent, as nothing is queued.
    let d = Daemon::builder()
        .set("api", "base_url = \"http://waq-sim.invalid:8090\"")
        .start();
    d.wait_for_log(WARNING);
    assert_eq!(d.get("/v1/health").status, 200);

    let d = Daemon::start();
    assert!(!d.log().contains(WARNING), "{}", d.log());
    let remote = d.config_text().replace(
        "base_url = \"http://127.0.0.1:9\"",
        "base_url = \"http://waq-sim.invalid:8090\"",
    );
    assert_ne!(remote, d.config_text());
    d.write_config(&remote);
    d.sighup();
    d.wait_for_log(WARNING);
}
