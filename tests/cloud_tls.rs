//! The Graph API client over TLS, as it talks to graph.facebook.com: a local HTTPS server with
//! a test certificate authority (tests/fixtures/tls) that offers HTTP/2 and HTTP/1.1 through
//! ALPN; the client speaks HTTP/1.1 (src/cloud/transport.rs says why), refuses a certificate
//! it does not trust, and gives up connecting after `connect_timeout`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use waq::cloud::{ClientOptions, CloudClient, ErrorClass, SendOutcome};

const CA: &str = include_str!("fixtures/tls/ca.pem");
const SERVER_CERT: &str = include_str!("fixtures/tls/server.pem");
const SERVER_KEY: &str = include_str!("fixtures/tls/server.key");

const TOKEN: &str = "EAAG-tls-test-token";
const TO: &str = "15551234567";
const TEXT: &str = r#"{"type":"text","text":{"body":"hello"}}"#;
const WAMID: &str = "wamid.TLS";

/// One request as the server saw it: HTTP version, path, authorization.
type SeenRequest = (Version, String, Option<String>);

/// What the server saw: each request, and how many TLS connections it accepted.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<SeenRequest>>>,
    connections: Arc<AtomicUsize>,
}

/// An HTTPS server on 127.0.0.1 that offers HTTP/2 and HTTP/1.1, as Meta does, and answers
/// every POST like Meta's success.
async fn start_server() -> (String, Seen) {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(SERVER_CERT.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let seen = Seen::default();
    let server_seen = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = server_seen.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                seen.connections.fetch_add(1, Ordering::SeqCst);
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let service = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let authorization = req
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        seen.requests.lock().unwrap().push((
                            req.version(),
                            req.uri().path().to_string(),
                            authorization,
                        ));
                        let body = format!(
                            r#"{{"messaging_product":"whatsapp","contacts":[{{"input":"{TO}","wa_id":"{TO}"}}],"messages":[{{"id":"{WAMID}"}}]}}"#
                        );
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    (base, seen)
}

fn client(base_url: &str, trust_test_ca: bool) -> CloudClient {
    CloudClient::new(ClientOptions {
        base_url: base_url.to_string(),
        version: "v25.0".to_string(),
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_millis(500),
        max_idle_per_host: 4,
        extra_roots_pem: trust_test_ca.then(|| CA.to_string()),
    })
    .unwrap()
}

fn accepted() -> SendOutcome {
    SendOutcome::Accepted {
        wamid: WAMID.to_string(),
        wa_id: Some(TO.to_string()),
    }
}

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
