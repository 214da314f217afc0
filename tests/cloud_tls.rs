//! The Graph API client over TLS, as it talks to graph.facebook.com: a local HTTPS server with
//! a test certificate authority (tests/fixtures/tls) that offers HTTP/2 and HTTP/1.1 through
//! ALPN; the client speaks HTTP/1.1 (src/cloud/transport.rs says why), refuses a certificate
//! it does not trust, and gives up connecting after `connect_timeout`.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::sync::atomic::Ordering;

use http::Version;
use tls::*;
use tokio::net::TcpListener;
use waq::cloud::{ClientOptions, CloudClient, ErrorClass, Proxy, SendOutcome};

#[tokio::test]
async fn http1_is_used_even_when_the_server_offers_http2_and_connections_are_reused() {
    let (base, seen) = start_server().await;
    let c = client(&base, true);
    for _ in 0..3 {
        assert_eq!(c.send("123", TOKEN, TO, TEXT).await, accepted());
    }
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    for (version, path, authorization) in &requests {
        assert_eq!(*version, Version::HTTP_11);
        assert_eq!(path, "/v25.0/123/messages");
        assert_eq!(
            authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    // Keep-alive: one after another, the sends reuse the connection.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_sends_each_have_a_connection_of_their_own() {
    let (base, seen) = start_server().await;
    let c = client(&base, true);
    // All eight start connecting before any handshake can finish, and an HTTP/1.1 connection
    // carries one request at a time.
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.send("123", TOKEN, TO, TEXT).await })
        })
        .collect();
    for send in sends {
        assert_eq!(send.await.unwrap(), accepted());
    }
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 8);
    assert!(requests.iter().all(|(v, _, _)| *v == Version::HTTP_11));
    assert_eq!(seen.connections.load(Ordering::SeqCst), 8);
}

#[tokio::test]
async fn a_certificate_not_signed_by_a_trusted_authority_is_refused() {
    let (base, seen) = start_server().await;
    let outcome = client(&base, false).send("123", TOKEN, TO, TEXT).await;
    let SendOutcome::Failed(e) = outcome else {
        panic!("an untrusted certificate was accepted: {outcome:?}");
    };
    assert_eq!(e.class, ErrorClass::Transient);
    assert_eq!(e.code_name(), "connection");
    assert!(e.message.contains("certificate"), "{e}");
    assert!(!e.to_string().contains(TOKEN), "{e}");
    assert!(seen.requests.lock().unwrap().is_empty());
    assert_eq!(seen.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_server_that_never_completes_the_handshake_fails_as_a_connection_within_connect_timeout()
{
    // Accepts TCP connections and holds them without a word of TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            open.push(tcp);
        }
    });
    let outcome = client(&base, true).send("123", TOKEN, TO, TEXT).await;
    held.abort();
    let SendOutcome::Failed(e) = outcome else {
        panic!("a silent server accepted a send: {outcome:?}");
    };
    // The request timeout (10 s) would say `timeout`; connecting (500 ms) ran out first.
    assert_eq!(e.code_name(), "connection", "{e}");
    assert_eq!(e.class, ErrorClass::Transient);
    assert!(e.message.contains("while connecting"), "{e}");
}

#[tokio::test]
async fn an_https_endpoint_is_reached_through_the_proxy_by_a_connect_tunnel() {
    let (base, seen) = start_server().await;
    let (proxy, heads) = start_connect_proxy().await;
    let c = client_via(
        &base,
        true,
        Proxy::Via(format!("http://waq:s3cret@{proxy}")),
    );
    for _ in 0..2 {
        assert_eq!(c.send("123", TOKEN, TO, TEXT).await, accepted());
    }
    // TLS to the server went through the tunnel: the server saw both requests, on one
    // connection, and the proxy one CONNECT to the server, with the proxy's credentials.
    assert_eq!(seen.requests.lock().unwrap().len(), 2);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let server = base.trim_start_matches("https://");
    assert!(
        heads[0].starts_with(&format!("CONNECT {server} HTTP/1.1\r\n")),
        "{heads:?}"
    );
    let authorization = heads[0]
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("proxy-authorization")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    // "waq:s3cret" in base64.
    assert_eq!(authorization, "Basic d2FxOnMzY3JldA==", "{heads:?}");
}

#[tokio::test]
async fn a_plain_http_endpoint_never_goes_through_the_proxy() {
    // A local simulator over http://: the proxy (which would refuse everything) is not asked.
    // Nothing answers there (a held port refuses, and nothing else can listen on it).
    let held = common::HeldPort::new();
    let base = format!("http://{}", held.addr());
    let (proxy, heads) = start_connect_proxy().await;
    let outcome = client_via(&base, false, Proxy::Via(format!("http://{proxy}")))
        .send("123", TOKEN, TO, TEXT)
        .await;
    assert!(matches!(outcome, SendOutcome::Failed(_)), "{outcome:?}");
    assert!(heads.lock().unwrap().is_empty());
}

#[test]
fn a_proxy_that_is_not_http_is_refused_with_a_clear_error() {
    let err = CloudClient::new(ClientOptions {
        proxy: Proxy::Via("socks5://127.0.0.1:1080".to_string()),
        ..ClientOptions::default()
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("http:// proxies only"),
        "{err:#}"
    );
}

#[test]
fn extra_roots_that_are_not_pem_are_refused_with_a_clear_error() {
    let err = CloudClient::new(ClientOptions {
        extra_roots_pem: Some(
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_string(),
        ),
        ..ClientOptions::default()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("root certificate"), "{err:#}");
}

/// `api.ca_file`: the daemon trusts an authority its built-in roots do not have (a proxy's
/// that inspects TLS), and without the key it refuses the same server.
#[test]
fn the_daemon_trusts_the_authority_in_api_ca_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (base, seen) = rt.block_on(start_server());
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
    let state_of = |d: &common::Daemon| {
        let r = d.post("/v1/messages", &common::template_request("+15551234567"));
        assert_eq!(r.status, 202, "{}", r.text());
        let id = r.json()["id"].as_str().unwrap().to_string();
        let deadline = std::time::Instant::now() + common::PATIENCE;
        loop {
            let m = d.get(&format!("/v1/messages/{id}")).json();
            // Sent, or its try has come back with an error.
            let tried = m["history"].as_array().is_some_and(|h| h.len() > 2);
            if m["state"] == "sent" || !m["last_error"].is_null() || tried {
                return m;
            }
            assert!(std::time::Instant::now() < deadline, "never tried: {m}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    let untrusting = common::Daemon::builder()
        .set("api", &format!("base_url = {base:?}"))
        .start();
    let m = state_of(&untrusting);
    assert_ne!(m["state"], "sent", "{m}");
    assert!(m.to_string().contains("certificate"), "{m}");
    assert!(seen.requests.lock().unwrap().is_empty());
    drop(untrusting);

    let trusting = common::Daemon::builder()
        .set("api", &format!("base_url = {base:?}"))
        .set("api", &format!("ca_file = {ca:?}"))
        .start();
    let m = state_of(&trusting);
    assert_eq!(m["state"], "sent", "{m}");
    assert_eq!(m["wamid"], WAMID);
    assert_eq!(seen.requests.lock().unwrap().len(), 1);
}

#[test]
fn an_api_ca_file_without_a_certificate_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let mut d = common::Daemon::builder()
        .set(
            "api",
            &format!("ca_file = {:?}", not_pem.display().to_string()),
        )
        .no_wait()
        .start();
    assert_eq!(d.wait_exit().code(), Some(2), "{}", d.log());
    assert!(d.log().contains("api.ca_file"), "{}", d.log());
    assert!(d.log().contains("holds no certificate"), "{}", d.log());
}
