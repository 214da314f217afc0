//! The HTTP side of a send: a keep-alive pool of HTTP/1.1 connections to the Graph API, rustls
//! with the webpki roots, one POST, and the answer read with a cap.
//!
//! HTTP/1.1 and not HTTP/2, though Meta speaks both. One HTTP/2 connection carries at most
//! the server's `SETTINGS_MAX_CONCURRENT_STREAMS` requests at once, and hyper's pool sends
//! every request to a host over one such connection: at 1,000 MPS with answers taking 250 ms,
//! 250 requests are on the way, and a cap below that would hold sends back unseen, bunching
//! their arrival at Meta (the departure gate, `dispatch/departures.rs`, counts one connection
//! per request on the way). HTTP/2 also cost more CPU per send, measured against the
//! simulator (docs/PERFORMANCE.md, change 24). Connections are opened once and kept (idle
//! ones for 90 s).
//!
//! This is hyper's pooled client used directly. reqwest, on the same pool underneath, added
//! about a fifth to the instructions of a dispatched message: it parses the URL of every request
//! twice more (in its redirect layer, which runs even with redirects off, and again for the
//! answer) and wraps each request in layers waq does not use (docs/PERFORMANCE.md, change 24).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;

use super::route::{BoxError, Route};
use super::ClientOptions;

/// Answers are small JSON objects; reading is capped so a broken proxy cannot flood memory.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

const WAQ_USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("waq/", env!("CARGO_PKG_VERSION")));
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A pooled HTTPS (or, for a local simulator, plain HTTP) client. Cheap to clone: clones share
/// the pool.
#[derive(Clone, Debug)]
pub(super) struct Transport {
    client: Client<TimedConnector, Full<Bytes>>,
    request_timeout: Duration,
}

/// What came back: the status, up to [`MAX_ANSWER_BYTES`] of the body, and the wait its
/// `Retry-After` asks for.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after: Option<Duration>,
}

/// Why no answer came back.
#[derive(Debug)]
pub(super) enum TransportError {
    /// The whole request (connecting included) took longer than `request_timeout`, given.
    Timeout(Duration),
    /// No connection could be made: the request was never written.
    Connect(String),
    /// The connection failed after the request may have been written.
    Request(String),
}

impl Transport {
    pub(super) fn new(opts: &ClientOptions) -> anyhow::Result<Transport> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));

        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(opts.extra_roots_pem.as_deref())?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(Route::new(&opts.base_url, &opts.proxy, http)?);
        let connector = TimedConnector {
            inner: https,
            timeout: opts.connect_timeout,
        };

        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(opts.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Transport {
            client,
            request_timeout: opts.request_timeout,
        })
    }

    /// POSTs a JSON `body` to `uri` and returns the answer. Redirects are answers like any
    /// other: a POST is never meant to be redirected, and a redirect must not carry the token on.
    pub(super) async fn post_json(
        &self,
        uri: Uri,
        authorization: HeaderValue,
        body: String,
    ) -> Result<Answer, TransportError> {
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, authorization);
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(USER_AGENT, WAQ_USER_AGENT);

        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    TransportError::Connect(error_chain(&e))
                } else {
                    TransportError::Request(error_chain(&e))
                }
            })?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| retry_after(v, SystemTime::now()));
            let body = read_capped(response.into_body())
                .await
                .map_err(|e| TransportError::Request(error_chain(&e)))?;
            Ok(Answer {
                status,
                body,
                retry_after,
            })
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .unwrap_or(Err(TransportError::Timeout(self.request_timeout)))
    }
}

/// The TLS connector with `connect_timeout` over all of connecting, TCP and the TLS handshake
/// both: a server that accepts and then stalls fails as a connection that was never made, and
/// soon, not as a request that timed out.
#[derive(Clone, Debug)]
struct TimedConnector {
    inner: HttpsConnector<Route>,
    timeout: Duration,
}

impl tower::Service<Uri> for TimedConnector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let connecting = self.inner.call(destination);
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, connecting)
                .await
                .unwrap_or_else(|_| Err(format!("no connection within {timeout:?}").into()))
        })
    }
}

/// rustls with the ring provider and the webpki roots (and any extra ones given). No ALPN:
/// the connector offers none for HTTP/1.1 only, and the server then speaks HTTP/1.1.
fn tls_config(extra_roots_pem: Option<&str>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.context("reading the extra root certificates (PEM)")?;
            roots
                .add(cert)
                .context("adding an extra root certificate")?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn read_capped(mut body: hyper::body::Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut answer = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame?.into_data() {
            let room = MAX_ANSWER_BYTES - answer.len();
            answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if answer.len() >= MAX_ANSWER_BYTES {
                break;
            }
        }
    }
    Ok(answer)
}

/// A `Retry-After` value as a wait from `now`: delta-seconds, or an HTTP-date (a date already
/// past is no wait). `None` when it is neither, as RFC 9110 says to ignore it then.
fn retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is a wait longer than any cap.
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An error and its sources on one line. hyper often repeats the inner message; each part is
/// kept once.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let wait = |v: &'static str| retry_after(&HeaderValue::from_static(v), now);
        assert_eq!(wait("120"), Some(Duration::from_secs(120)));
        assert_eq!(wait(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            wait("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        // 2015-10-21 07:28:00 UTC is `now`; two minutes later, in each of RFC 9110's forms.
        assert_eq!(
            wait("Wed, 21 Oct 2015 07:30:00 GMT"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            wait("Wednesday, 21-Oct-15 07:30:00 GMT"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            wait("Wed Oct 21 07:30:00 2015"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(wait("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        for junk in ["", "-5", "1.5", "soon", "120s"] {
            assert_eq!(wait(junk), None, "{junk:?}");
        }
    }
}
