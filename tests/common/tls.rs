//! Helpers for the TLS tests of the Graph API client (`tests/cloud_tls.rs`,
//! `tests/cloud_proxy_env.rs`): a local HTTPS server with the test certificate authority of
//! tests/fixtures/tls, offering HTTP/2 and HTTP/1.1 as Meta does, and an HTTP `CONNECT` proxy.
#![allow(dead_code)] // each test binary uses its own part of this

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
use waq::cloud::{ClientOptions, CloudClient, Proxy, SendOutcome};

pub const CA: &str = include_str!("../fixtures/tls/ca.pem");
pub const SERVER_CERT: &str = include_str!("../fixtures/tls/server.pem");
pub const SERVER_KEY: &str = include_str!("../fixtures/tls/server.key");

pub const TOKEN: &str = "EAAG-tls-test-token";
pub const TO: &str = "15551234567";
pub const TEXT: &str = r#"{"type":"text","text":{"body":"hello"}}"#;
pub const WAMID: &str = "wamid.TLS";

/// One request as the server saw it: HTTP version, path, authorization.
pub type SeenRequest = (Version, String, Option<String>);

/// What the server saw: each request, and how many TLS connections it accepted.
#[derive(Clone, Default)]
pub struct Seen {
    pub requests: Arc<Mutex<Vec<SeenRequest>>>,
    pub connections: Arc<AtomicUsize>,
}

/// An HTTPS server on 127.0.0.1 that offers HTTP/2 and HTTP/1.1, as Meta does, and answers
/// every POST like Meta's success.
pub async fn start_server() -> (String, Seen) {
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

pub fn client(base_url: &str, trust_test_ca: bool) -> CloudClient {
    client_via(base_url, trust_test_ca, Proxy::Direct)
}

pub fn client_via(base_url: &str, trust_test_ca: bool, proxy: Proxy) -> CloudClient {
    CloudClient::new(ClientOptions {
        base_url: base_url.to_string(),
        version: "v25.0".to_string(),
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_millis(500),
        max_idle_per_host: 4,
        extra_roots_pem: trust_test_ca.then(|| CA.to_string()),
        proxy,
    })
    .unwrap()
}

pub fn accepted() -> SendOutcome {
    SendOutcome::Accepted {
        wamid: WAMID.to_string(),
        wa_id: Some(TO.to_string()),
    }
}

/// What a proxy saw: the head of each `CONNECT` request.
pub type ConnectHeads = Arc<Mutex<Vec<String>>>;

/// An HTTP proxy on 127.0.0.1 that answers `CONNECT` by tunnelling to the named host and port,
/// and records each request's head.
pub async fn start_connect_proxy() -> (String, ConnectHeads) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("{}", listener.local_addr().unwrap());
    let heads = ConnectHeads::default();
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                seen.lock().unwrap().push(head.clone());
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (address, heads)
}
