//! The Graph API client against a local HTTP server playing Meta with canned answers.
//! The phone number id in the path picks the answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use waq::cloud::{ClientOptions, CloudClient, CloudError, ErrorClass, Proxy, SendOutcome};

#[path = "common/net.rs"]
mod net;

const TOKEN: &str = "EAAG-test-token-0123456789";
const TO: &str = "15551234567";
const TEXT: &str = r#"{"type":"text","text":{"body":"Your order shipped","preview_url":false},"biz_opaque_callback_data":"m-1"}"#;

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: String,
}

#[derive(Clone, Default)]
struct Meta {
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Meta {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn meta_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": format!("details of {code}")},
        "fbtrace_id": "AbCdEf"}});
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn messages(
    State(meta): State<Meta>,
    Path((version, phone)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    meta.seen.lock().unwrap().push(Seen {
        path: format!("/{version}/{phone}/messages"),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    match phone.as_str() {
        "ok" => {
            let answer = json!({"messaging_product": "whatsapp",
                "contacts": [{"input": TO, "wa_id": TO}],
                "messages": [{"id": "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI"}]});
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                answer.to_string(),
            )
                .into_response()
        }
        "ratelimit" => meta_error(StatusCode::BAD_REQUEST, 130429, "(#130429) Rate limit hit"),
        "pairrate" => meta_error(
            StatusCode::BAD_REQUEST,
            131056,
            "(#131056) Pair rate limit hit",
        ),
        "undeliverable" => meta_error(
            StatusCode::BAD_REQUEST,
            131026,
            "(#131026) Message Undeliverable.",
        ),
        "badtoken" => meta_error(
            StatusCode::UNAUTHORIZED,
            190,
            "Error validating access token: Session has expired",
        ),
        "echotoken" => {
            let token = header("authorization")
                .unwrap_or_default()
                .replace("Bearer ", "");
            meta_error(
                StatusCode::BAD_REQUEST,
                190,
                &format!("Malformed access token {token}"),
            )
        }
        "unknowncode" => meta_error(StatusCode::BAD_REQUEST, 987_654, "(#987654) Something new"),
        "html500" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/html")],
            "<html><body><h1>500 Internal Server Error</h1></body></html>",
        )
            .into_response(),
        "huge500" => (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(1 << 20)).into_response(),
        "html404" => (
            StatusCode::NOT_FOUND,
            [("content-type", "text/html")],
            "<h1>Not Found</h1>",
        )
            .into_response(),
        "plain429" => StatusCode::TOO_MANY_REQUESTS.into_response(),
        "retryafter429" => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "").into_response()
        }
        "retryafter503" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "Fri, 01 Jan 2100 00:00:00 GMT")],
            "",
        )
            .into_response(),
        // Retry-After means nothing on a 500.
        "retryafter500" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("retry-after", "7")],
            "",
        )
            .into_response(),
        "buc80008" => meta_error(
            StatusCode::BAD_REQUEST,
            80008,
            "(#80008) There have been too many calls to this WhatsApp Business account.",
        ),
        "gateway502" => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        "noid" => (
            StatusCode::OK,
            json!({"messaging_product": "whatsapp", "messages": []}).to_string(),
        )
            .into_response(),
        "notjson" => (StatusCode::OK, "OK").into_response(),
        "redirect" => (
            StatusCode::FOUND,
            [("location", "http://127.0.0.1:1/elsewhere")],
            "",
        )
            .into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (
                StatusCode::OK,
                json!({"messages": [{"id": "wamid.late"}]}).to_string(),
            )
                .into_response()
        }
        _ => meta_error(StatusCode::BAD_REQUEST, 100, "(#100) Invalid parameter"),
    }
}

/// Starts the fake Graph API; returns its base URL and what it records.
async fn start_meta() -> (String, Meta) {
    use axum::serve::ListenerExt;
    let meta = Meta::default();
    let app = Router::new()
        .route("/{version}/{phone}/messages", post(messages))
        .with_state(meta.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = meta.connections.clone();
    let listener = listener.tap_io(move |_| {
        connections.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), meta)
}

fn client(base_url: &str) -> CloudClient {
    CloudClient::new(ClientOptions {
        base_url: base_url.to_string(),
        version: "v25.0".to_string(),
        request_timeout: Duration::from_millis(700),
        connect_timeout: Duration::from_millis(500),
        max_idle_per_host: 4,
        extra_roots_pem: None,
        proxy: Proxy::Direct,
    })
    .unwrap()
}

async fn failure(base: &str, phone: &str) -> CloudError {
    match client(base).send(phone, TOKEN, TO, TEXT).await {
        SendOutcome::Failed(e) => {
            assert_token_absent(&e);
            e
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[track_caller]
fn assert_token_absent(e: &CloudError) {
    for text in [format!("{e:?}"), e.to_string()] {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
        assert!(!text.contains("test-token"), "token leaked: {text}");
    }
}

#[tokio::test]
async fn success_returns_the_wamid_and_sends_the_right_request() {
    let (base, meta) = start_meta().await;
    let outcome = client(&base).send("ok", TOKEN, TO, TEXT).await;
    assert_eq!(
        outcome,
        SendOutcome::Accepted {
            wamid: "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI".to_string(),
            wa_id: Some(TO.to_string()),
        }
    );

    let seen = meta.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.path, "/v25.0/ok/messages");
    assert_eq!(
        req.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(req.content_type.as_deref(), Some("application/json"));
    // waq's fields come first, then the message exactly as stored.
    assert!(
        req.body.starts_with(r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567","type":"text""#),
        "{}",
        req.body
    );
    let body: Value = serde_json::from_str(&req.body).unwrap();
    let mut want: Value = serde_json::from_str(TEXT).unwrap();
    want["messaging_product"] = json!("whatsapp");
    want["recipient_type"] = json!("individual");
    want["to"] = json!(TO);
    assert_eq!(body, want);
}

#[tokio::test]
async fn connections_are_kept_alive_and_reused() {
    let (base, meta) = start_meta().await;
    let c = client(&base);
    for _ in 0..5 {
        assert!(matches!(
            c.clone().send("ok", TOKEN, TO, TEXT).await,
            SendOutcome::Accepted { .. }
        ));
    }
    assert_eq!(meta.seen().len(), 5);
    assert_eq!(meta.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rate_limit_with_http_400_is_transient() {
    let (base, _) = start_meta().await;
    let e = failure(&base, "ratelimit").await;
    assert_eq!(e.class, ErrorClass::Transient);
    assert_eq!((e.meta_code, e.http_status), (Some(130429), Some(400)));
    assert_eq!(e.code_name(), "meta_130429");
    assert!(e.throttled());
    assert!(
        e.message.contains("Rate limit hit") && e.message.contains("AbCdEf"),
        "{e}"
    );
    assert_eq!(e.details.as_deref(), Some("details of 130429"));
}

#[tokio::test]
async fn pair_rate_limit_is_transient_for_the_recipient_only() {
    let (base, _) = start_meta().await;
    let e = failure(&base, "pairrate").await;
    assert_eq!(
        (e.class, e.meta_code),
        (ErrorClass::Transient, Some(131056))
    );
    assert!(e.recipient_only() && !e.throttled());
}

#[tokio::test]
async fn undeliverable_is_permanent() {
    let (base, _) = start_meta().await;
    let e = failure(&base, "undeliverable").await;
    assert_eq!(e.class, ErrorClass::Permanent);
    assert_eq!((e.meta_code, e.http_status), (Some(131026), Some(400)));
    assert_eq!(e.code_name(), "meta_131026");
    assert_eq!(e.details.as_deref(), Some("details of 131026"));
}

#[tokio::test]
async fn expired_token_pauses_the_sender() {
    let (base, _) = start_meta().await;
    let e = failure(&base, "badtoken").await;
    assert_eq!(e.class, ErrorClass::PauseSender);
    assert_eq!((e.meta_code, e.http_status), (Some(190), Some(401)));
}

#[tokio::test]
async fn a_token_echoed_by_meta_is_redacted() {
    let (base, _) = start_meta().await;
    let e = failure(&base, "echotoken").await;
    assert_eq!(e.class, ErrorClass::PauseSender);
    assert_eq!(
        e.message,
        "Malformed access token [redacted] (fbtrace_id AbCdEf)"
    );
}

#[tokio::test]
async fn unknown_meta_codes_are_permanent() {
    let (base, _) = start_meta().await;
    let e = failure(&base, "unknowncode").await;
    assert_eq!(
        (e.class, e.meta_code),
        (ErrorClass::Permanent, Some(987_654))
    );
}

#[tokio::test]
async fn server_error_without_meta_error_is_transient() {
    let (base, _) = start_meta().await;
    let e = failure(&base, "html500").await;
    assert_eq!(e.class, ErrorClass::Transient);
    assert_eq!((e.meta_code, e.http_status), (None, Some(500)));
    assert_eq!(e.code_name(), "http_500");
    assert!(
        e.details
            .as_deref()
            .is_some_and(|d| d.contains("500 Internal Server Error")),
        "{e}"
    );

    let e = failure(&base, "huge500").await;
    assert_eq!((e.class, e.http_status), (ErrorClass::Transient, Some(500)));
    assert!(e.details.as_deref().is_some_and(|d| d.len() <= 300));
}

#[tokio::test]
async fn plain_429_is_transient_and_404_pauses() {
    let (base, _) = start_meta().await;
    let e = failure(&base, "plain429").await;
    assert_eq!(
        (e.class, e.code_name().as_str()),
        (ErrorClass::Transient, "http_429")
    );
    assert!(e.throttled() && !e.app_wide_throttle(), "{e}");
    assert_eq!(e.retry_after, None);
    let e = failure(&base, "html404").await;
    assert_eq!(
        (e.class, e.code_name().as_str()),
        (ErrorClass::PauseSender, "http_404")
    );
    assert!(e.message.contains("api.base_url"), "{e}");
}

/// `Retry-After` on a 429 or a 503 comes with the error, in seconds or as a date; on other
/// statuses it is not read.
#[tokio::test]
async fn retry_after_is_kept_on_429_and_503() {
    let (base, _) = start_meta().await;
    let e = failure(&base, "retryafter429").await;
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)), "{e}");
    let e = failure(&base, "retryafter503").await;
    assert!(
        e.retry_after
            .is_some_and(|r| r > Duration::from_secs(365 * 24 * 3600)),
        "{e:?}"
    );
    assert!(e.is_outage_answer(), "{e}");
    let e = failure(&base, "retryafter500").await;
    assert_eq!(e.retry_after, None, "{e}");
}

/// The Graph platform's business-use-case limit is a throttle of the whole business, and a
/// gateway's 502 page an outage answer.
#[tokio::test]
async fn business_use_case_limits_throttle_and_gateway_pages_are_outages() {
    let (base, _) = start_meta().await;
    let e = failure(&base, "buc80008").await;
    assert_eq!((e.class, e.meta_code), (ErrorClass::Transient, Some(80008)));
    assert!(e.throttled() && e.app_wide_throttle(), "{e}");
    let e = failure(&base, "gateway502").await;
    assert_eq!(
        (e.class, e.code_name().as_str()),
        (ErrorClass::Transient, "http_502")
    );
    assert!(e.is_outage_answer() && !e.throttled(), "{e}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (base, meta) = start_meta().await;
    let e = failure(&base, "redirect").await;
    assert_eq!(
        (e.class, e.http_status),
        (ErrorClass::PauseSender, Some(302))
    );
    assert_eq!(meta.seen().len(), 1);
}

#[tokio::test]
async fn ok_without_a_message_id_is_transient() {
    let (base, _) = start_meta().await;
    for phone in ["noid", "notjson"] {
        let e = failure(&base, phone).await;
        assert_eq!(e.class, ErrorClass::Transient, "{phone}");
        assert_eq!(
            (e.http_status, e.code_name().as_str()),
            (Some(200), "bad_answer")
        );
        assert!(e.message.contains("messages[0].id"), "{e}");
    }
}

#[tokio::test]
async fn a_slow_server_times_out_as_transient() {
    let (base, _) = start_meta().await;
    let started = std::time::Instant::now();
    let e = failure(&base, "slow").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.class, ErrorClass::Transient);
    assert_eq!((e.meta_code, e.http_status), (None, None));
    assert_eq!(e.code_name(), "timeout");
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // Held, not listening: refused, and nothing else can start listening there meanwhile.
    let held = net::HeldPort::new();
    let base = format!("http://{}", held.addr());
    let e = failure(&base, "ok").await;
    assert_eq!(e.class, ErrorClass::Transient);
    assert_eq!((e.meta_code, e.http_status), (None, None));
    assert_eq!(e.code_name(), "connection");
    assert!(!e.message.contains(&base), "no URL in errors: {e}");
}

#[tokio::test]
async fn local_problems_fail_without_a_request() {
    let (base, meta) = start_meta().await;
    let c = client(&base);
    let cases = [
        ("ok", "", TEXT, ErrorClass::PauseSender, "sender_config"),
        (
            "ok",
            "tok\nen",
            TEXT,
            ErrorClass::PauseSender,
            "sender_config",
        ),
        (
            "../admin",
            TOKEN,
            TEXT,
            ErrorClass::PauseSender,
            "sender_config",
        ),
        ("", TOKEN, TEXT, ErrorClass::PauseSender, "sender_config"),
        ("ok", TOKEN, "[1]", ErrorClass::Permanent, "invalid_message"),
    ];
    for (phone, token, message, class, code) in cases {
        match c.send(phone, token, TO, message).await {
            SendOutcome::Failed(e) => {
                assert_eq!(
                    (e.class, e.code_name().as_str()),
                    (class, code),
                    "{phone:?} {token:?}"
                );
                assert!(!e.to_string().contains("tok\nen"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(meta.seen().is_empty());
}

#[tokio::test]
async fn surrounding_whitespace_of_the_token_is_ignored() {
    let (base, meta) = start_meta().await;
    let outcome = client(&base)
        .send("ok", &format!("{TOKEN}\n"), TO, TEXT)
        .await;
    assert!(
        matches!(outcome, SendOutcome::Accepted { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        meta.seen()[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

#[tokio::test]
async fn the_client_debug_output_has_no_token() {
    let (base, _) = start_meta().await;
    let c = client(&base);
    let outcome = c.send("ok", TOKEN, TO, TEXT).await;
    assert!(!format!("{c:?} {outcome:?}").contains(TOKEN));
}
