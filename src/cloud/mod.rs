//! The Graph API client: builds the `/messages` request, sends it, and classifies the answer.
//!
//! Classification keys on Meta's `error.code`, never on the HTTP status (Meta answers its own
//! rate limit 130429 with a 400). Only answers without a Meta error object fall back to the
//! status: 5xx, 408 and 429 are transient (429 a throttle); 401/403 (a proxy refusing us),
//! 404/405 and redirects (a wrong `base_url` or `version`) pause the sender, since every
//! message of that sender would fail the same way; other 4xx are permanent. Timeouts and
//! connection errors are transient. A `Retry-After` on a 429 or 503 is kept with the error
//! ([`CloudError::retry_after`]).
//!
//! The access token is passed per call and never stored, logged or put in an error: the header
//! is marked sensitive, transport errors are stripped of their URL, and any echo of the token
//! in Meta's answer (Graph says `Malformed access token <token>`) is redacted.
//!
//! A timeout or a connection lost after the request was written may hide a send Meta accepted:
//! retrying it can deliver twice. Meta offers no idempotency key, so this is inherent.

mod route;
mod transport;
pub(crate) use transport::error_chain;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use http::header::HeaderValue;
use http::Uri;
use serde::Serialize;
use serde_json::Value;

use transport::{Transport, TransportError};

/// What to do about a failed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Back off and retry (rate limits, Meta hiccups, 5xx, timeouts, connection errors).
    Transient,
    /// Retry only after a long wait (hours): spam and marketing limits, paused templates.
    LongWait,
    /// This message will never succeed as is: fail it.
    Permanent,
    /// The sender's account or configuration is broken (bad token, missing permission, banned
    /// number): stop sending from this number until an operator fixes it.
    PauseSender,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::LongWait => "long_wait",
            ErrorClass::Permanent => "permanent",
            ErrorClass::PauseSender => "pause_sender",
        }
    }
}

/// The class of a Meta error code, from the "possible solution" column of Meta's error table.
///
/// Unknown codes are [`ErrorClass::Permanent`]: Meta introduces codes mostly for new reasons a
/// message is refused, retrying an unknown refusal spends attempts and throughput on something
/// that keeps failing, and pausing a whole sender for a code nobody has seen would stall every
/// other message. A permanent failure shows up at once with its `meta_code` in `last_error`,
/// and `POST /v1/messages/{id}/retry` brings the message back if the code turns out benign.
///
/// Code 1 (unknown Meta error) is transient; Meta advises retrying it only a few times, which
/// is the attempt limit's job. The throttles ([`is_throttle_code`]) are transient too.
pub fn classify(meta_code: i64) -> ErrorClass {
    use ErrorClass::*;
    match meta_code {
        c if is_throttle_code(c) => Transient,
        1 | 2 | 131000 | 131016 | 131056 | 133004 => Transient,
        131048 | 131049 | 132015 | 132069 => LongWait,
        100 | 130403 | 130472 | 131008 | 131009 | 131021 | 131026 | 131047 | 131050 | 131051
        | 131053 | 132000 | 132001 | 132005 | 132007 | 132012 | 132016 | 132018 | 135000 => {
            Permanent
        }
        0
        | 3
        | 10
        | 33
        | 190
        | 200..=299
        | 368
        | 131005
        | 131031
        | 131037
        | 131042
        | 131045
        | 133010
        // "Unknown path components": the request's URL is wrong (a base path Meta does not
        // know, an unknown api.version), so every send of the sender fails alike.
        | 2500 => PauseSender,
        _ => Permanent,
    }
}

/// Meta's codes for "slow down" that are not one recipient's (131056 is): the number's rate
/// (130429), its maintenance during the 1,000-MPS upgrade (131057, at most a minute), and the
/// Graph platform's limits on the app, user, page or business ([`is_app_wide_throttle_code`]).
pub fn is_throttle_code(code: i64) -> bool {
    matches!(code, 130429 | 131057) || is_app_wide_throttle_code(code)
}

/// Throttles Meta counts across the app or business, not per number: 4 (the app's calls), 17
/// (the user's), 32 (the page's), 613 (calls within an hour, or a custom limit), and the
/// business-use-case family 80000-80014 (80007: the WhatsApp Business account's).
pub fn is_app_wide_throttle_code(code: i64) -> bool {
    matches!(code, 4 | 17 | 32 | 613 | 80_000..=80_014)
}

/// The class of an answer that carries no Meta error object.
fn classify_status(status: u16) -> ErrorClass {
    match status {
        408 | 429 | 500..=599 => ErrorClass::Transient,
        300..=399 | 401 | 403 | 404 | 405 => ErrorClass::PauseSender,
        _ => ErrorClass::Permanent,
    }
}

/// How to reach the Graph API.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// e.g. `https://graph.facebook.com`, or the simulator's address.
    pub base_url: String,
    /// Graph API version, e.g. `v25.0`: configuration, since versions expire.
    pub version: String,
    /// Whole request, connecting to reading the answer.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per host.
    pub max_idle_per_host: usize,
    /// PEM certificates trusted besides the webpki roots (a test's own certificate
    /// authority); `None` in the daemon.
    pub extra_roots_pem: Option<String>,
    /// How connections to an `https://` endpoint go (an `http://` one is always direct).
    pub proxy: Proxy,
}

/// Whether and through what proxy the client reaches an `https://` endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Proxy {
    /// `HTTPS_PROXY` (or `ALL_PROXY`) and `NO_PROXY`, as curl reads them: the daemon's way.
    #[default]
    FromEnvironment,
    /// Straight to the endpoint.
    Direct,
    /// Through this `http://[user:password@]host:port` proxy.
    Via(String),
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            base_url: "https://graph.facebook.com".to_string(),
            version: "v25.0".to_string(),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_idle_per_host: 32,
            extra_roots_pem: None,
            proxy: Proxy::FromEnvironment,
        }
    }
}

/// Why `api.base_url` or `api.version` cannot work: the key at fault, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointError {
    pub key: &'static str,
    pub message: String,
}

/// `api.base_url` as requests use it (no trailing slash; a host with non-ASCII letters in its
/// ASCII form) and `api.version` without slashes.
struct Endpoint {
    base: String,
    version: String,
}

/// Graph API versions are `v<major>.<minor>`, such as `v25.0` (or `v2.12` of old): a path
/// without the minor number, with leading zeros or with a third part is unknown to Meta
/// (2500, "Unknown path components"), so every send would fail.
pub fn is_graph_version(v: &str) -> bool {
    let Some((major, minor)) = v.strip_prefix('v').and_then(|rest| rest.split_once('.')) else {
        return false;
    };
    let number = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    };
    number(major) && major != "0" && number(minor)
}

/// `v` + digits + `.` + digits: the shape of a Graph API version in a path, known to Meta or
/// not (`is_graph_version` is the stricter check of `api.version`).
fn looks_like_a_version(step: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    step.strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

/// Whether requests to `base_url` would carry the senders' tokens in clear text beyond this
/// machine: `http://` to a host other than the loopback. Allowed (a simulator on another host
/// of a private network), but worth a warning.
pub fn cleartext_beyond_loopback(base_url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(base_url) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    url.scheme() == "http" && !loopback
}

/// The checks [`CloudClient::new`] makes of the endpoint; configuration runs them first, so a
/// daemon never starts with an endpoint it cannot send to.
pub fn check_endpoint(base_url: &str, version: &str) -> Result<(), EndpointError> {
    parse_endpoint(base_url, version).map(|_| ())
}

fn parse_endpoint(base_url: &str, version: &str) -> Result<Endpoint, EndpointError> {
    // A user name and password may be secrets: such a URL is never repeated.
    let shown = if base_url.contains('@') {
        "(not shown, as it has an @)".to_string()
    } else {
        format!("{base_url:?}")
    };
    let base_err = |why: &str| EndpointError {
        key: "api.base_url",
        message: format!("{shown} {why}"),
    };
    let url = reqwest::Url::parse(base_url.trim_end_matches('/'))
        .map_err(|e| base_err(&format!("is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(base_err(
            "must start with https:// (or http:// for a local simulator)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(base_err("must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(base_err("must not carry a user name or password"));
    }
    // The version is added after the base: `…/v21.0` would send every request to
    // `/v21.0/v25.0/…`, which Meta answers with 2500. Another base path (a proxy's prefix,
    // `/graph`) is the operator's business.
    let last = url
        .path_segments()
        .and_then(|mut steps| steps.rfind(|s| !s.is_empty()));
    if let Some(last) = last.filter(|s| looks_like_a_version(s)) {
        return Err(base_err(&format!(
            "ends in the Graph API version {last}, which belongs in api.version: requests would \
             go to /{last}/{version}/…; leave it out of the base URL (and set \
             api.version = \"{last}\" if that is the version meant)"
        )));
    }
    let trimmed = version.trim_matches('/');
    if trimmed.is_empty()
        || !trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.')
    {
        return Err(EndpointError {
            key: "api.version",
            message: format!("{version:?} is not a Graph API version; write it like \"v25.0\""),
        });
    }
    let base = url.as_str().trim_end_matches('/').to_string();
    if format!("{base}/{trimmed}/0/messages")
        .parse::<Uri>()
        .is_err()
    {
        return Err(base_err("cannot be used in a request URI"));
    }
    Ok(Endpoint {
        base,
        version: trimmed.to_string(),
    })
}

/// A Graph API client. Cheap to clone: clones share the connection pool.
#[derive(Debug, Clone)]
pub struct CloudClient {
    transport: Transport,
    /// `{base_url}/{version}/`, to which `{phone_number_id}/messages` is appended.
    prefix: Arc<str>,
    /// Parsed `/messages` URIs by phone number id: parsing the URI again for every send cost
    /// about as much as building the rest of the request.
    uris: Arc<RwLock<HashMap<String, Uri>>>,
}

/// The result of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Meta accepted the message (HTTP 200 with `messages[0].id`).
    Accepted {
        wamid: String,
        /// `contacts[0].wa_id`: the WhatsApp user id Meta resolved `to` to. It can differ
        /// from the dialled digits (Brazil's extra 9th digit, Mexico's `521`), and inbound
        /// messages and statuses then come from it.
        wa_id: Option<String>,
    },
    Failed(CloudError),
}

/// Why a send failed, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudError {
    pub class: ErrorClass,
    /// Meta's `error.code`, when the answer had one.
    pub meta_code: Option<i64>,
    /// The HTTP status, when an answer arrived.
    pub http_status: Option<u16>,
    /// A sentence for `last_error.message`: Meta's message (with its `fbtrace_id`, which Meta
    /// support asks for), or what went wrong on the way.
    pub message: String,
    /// Meta's `error.error_data.details`, or the start of an unexpected answer body.
    pub details: Option<String>,
    /// The answer's `Retry-After` (seconds, or a date made relative), on a 429 or 503 only:
    /// the least wait before this message's next attempt.
    pub retry_after: Option<Duration>,
}

// `code_name` tells these failures apart by the start of their message.
const TIMEOUT_PREFIX: &str = "timed out";
const CONNECTION_PREFIX: &str = "connection to the Graph API failed";
/// The stage of a connection failure before any byte of the request was written.
const WHILE_CONNECTING: &str = "while connecting";

impl CloudError {
    /// A stable short name for `last_error.code` and metrics: `meta_131026`, `http_503`,
    /// `timeout`, `connection`, `bad_answer` (2xx without a message id), `sender_config`
    /// (the sender's id or token cannot be sent), `invalid_message` (the stored message is not a
    /// JSON object).
    pub fn code_name(&self) -> String {
        if let Some(code) = self.meta_code {
            return format!("meta_{code}");
        }
        if let Some(status) = self.http_status {
            return if (200..300).contains(&status) {
                "bad_answer".to_string()
            } else {
                format!("http_{status}")
            };
        }
        let name = if self.message.starts_with(TIMEOUT_PREFIX) {
            "timeout"
        } else if self.message.starts_with(CONNECTION_PREFIX) {
            "connection"
        } else if self.class == ErrorClass::PauseSender {
            "sender_config"
        } else {
            "invalid_message"
        };
        name.to_string()
    }

    /// A failure to connect, as the client reports one (for tests elsewhere).
    #[cfg(test)]
    pub(crate) fn not_connected(cause: &str) -> CloudError {
        CloudError::new(
            ErrorClass::Transient,
            format!("{CONNECTION_PREFIX} {WHILE_CONNECTING}: {cause}"),
        )
    }

    /// The request never left: no connection could be made, so Meta cannot have seen it.
    pub fn never_sent(&self) -> bool {
        self.http_status.is_none()
            && self
                .message
                .strip_prefix(CONNECTION_PREFIX)
                .is_some_and(|rest| rest.trim_start().starts_with(WHILE_CONNECTING))
    }

    /// The Graph API is not serving: no answer at all, or an outage answer
    /// ([`CloudError::is_outage_answer`]). What every request gets while Meta is down or out of
    /// reach, whatever the message; a run of them makes an outage (`dispatch/reach.rs`).
    pub fn is_unavailable(&self) -> bool {
        self.is_unanswered() || self.is_outage_answer()
    }

    /// An answer that every request gets while Meta or the way to it is down: the service is
    /// unavailable ([`CloudError::says_unavailable`]); a gateway's 500, 502 or 504 without a
    /// Meta error object (an edge proxy's HTML page, or nothing); or a 5xx with Meta's code 1
    /// ("unknown error") or 131000 ("something went wrong"). The last kind can also be one
    /// message's own failure, which is why only a run of such answers counts as an outage:
    /// another message's success in between ends the run.
    pub fn is_outage_answer(&self) -> bool {
        let status = self.http_status.unwrap_or(0);
        self.says_unavailable()
            || match self.meta_code {
                None => matches!(status, 500 | 502 | 504),
                Some(1 | 131000) => (500..=599).contains(&status),
                Some(_) => false,
            }
    }

    /// An answer that the service is unavailable: HTTP 503, or Meta's code 2 ("Service
    /// temporarily unavailable") or 131016 ("Service unavailable"). Such a request was not
    /// taken, so sending it again sends no duplicate. Other 5xx (500 with 131000, a gateway's
    /// 502 or 504) may come of one message, or after Meta took it, as may a timeout.
    pub fn says_unavailable(&self) -> bool {
        self.http_status == Some(503) || matches!(self.meta_code, Some(2) | Some(131016))
    }

    /// The request got no answer at all: the connection failed or the wait timed out.
    pub fn is_unanswered(&self) -> bool {
        self.http_status.is_none()
            && self.meta_code.is_none()
            && (self.message.starts_with(TIMEOUT_PREFIX)
                || self.message.starts_with(CONNECTION_PREFIX))
    }

    /// The sentence for `last_error.message`: the message with Meta's `details` after it,
    /// which is often the part to act on ("body: number of localizable_params (0) does not
    /// match the expected number of params (1)").
    pub fn full_message(&self) -> String {
        match &self.details {
            Some(d) if !d.is_empty() && !self.message.contains(d.as_str()) => {
                format!("{}: {d}", self.message)
            }
            _ => self.message.clone(),
        }
    }

    /// Meta's pair rate limit (131056): only this recipient must wait; the sender may go on
    /// sending to others.
    pub fn recipient_only(&self) -> bool {
        self.meta_code == Some(131056)
    }

    /// Meta says the sender (number, app or account) is over a rate ([`is_throttle_code`]), or
    /// something on the way answered a bare 429: slow the sender down.
    pub fn throttled(&self) -> bool {
        match self.meta_code {
            Some(code) => is_throttle_code(code),
            None => self.http_status == Some(429),
        }
    }

    /// A throttle of the whole app or business account ([`is_app_wide_throttle_code`]).
    pub fn app_wide_throttle(&self) -> bool {
        self.meta_code.is_some_and(is_app_wide_throttle_code)
    }

    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        CloudError {
            class,
            meta_code: None,
            http_status: None,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// Replaces any occurrence of the token. A token too short to be a real one ("t", in a
    /// test setup) is left alone: replacing every such letter would garble the message, and
    /// with it the failure's classification, while hiding nothing worth hiding.
    fn redact(mut self, token: &str) -> Self {
        if token.len() >= MIN_REDACTED_TOKEN {
            if self.message.contains(token) {
                self.message = self.message.replace(token, "[redacted]");
            }
            if let Some(d) = &mut self.details {
                if d.contains(token) {
                    *d = d.replace(token, "[redacted]");
                }
            }
        }
        self
    }
}

impl std::fmt::Display for CloudError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code_name(),
            self.class.as_str(),
            self.message
        )?;
        if let Some(d) = &self.details {
            write!(f, " [{d}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for CloudError {}

/// Meta's access tokens run to hundreds of characters; a shorter "token" is not one.
const MIN_REDACTED_TOKEN: usize = 8;

/// How much of an unexpected answer body is kept in `details`.
const SNIPPET_CHARS: usize = 300;

impl CloudClient {
    /// Builds the client; fails when `base_url` or `version` cannot work.
    pub fn new(opts: ClientOptions) -> anyhow::Result<Self> {
        let Endpoint { base, version } = parse_endpoint(&opts.base_url, &opts.version)
            .map_err(|e| anyhow::anyhow!("{} {}", e.key, e.message))?;
        let transport = Transport::new(&opts).context("building the HTTP client")?;
        Ok(CloudClient {
            transport,
            prefix: format!("{base}/{version}/").into(),
            uris: Arc::default(),
        })
    }

    /// `{base_url}/{version}/{phone_number_id}/messages`.
    pub fn messages_url(&self, phone_number_id: &str) -> String {
        format!("{}{phone_number_id}/messages", self.prefix)
    }

    /// `messages_url` parsed, from the cache when it was parsed before.
    fn messages_uri(&self, phone_number_id: &str) -> Result<Uri, http::uri::InvalidUri> {
        let cached = self
            .uris
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(phone_number_id)
            .cloned();
        if let Some(uri) = cached {
            return Ok(uri);
        }
        let uri: Uri = self.messages_url(phone_number_id).parse()?;
        let mut uris = self.uris.write().unwrap_or_else(|p| p.into_inner());
        // A handful of senders: the map stays tiny.
        if uris.len() < 1024 {
            uris.insert(phone_number_id.to_string(), uri.clone());
        }
        Ok(uri)
    }

    /// POSTs `{"messaging_product":"whatsapp","recipient_type":"individual","to":to, ...message
    /// fields}` to `{base_url}/{version}/{phone_number_id}/messages`.
    ///
    /// `message_json` is the stored message object as compact JSON text (an object starting with
    /// '{'); the body is built by splicing strings, without parsing it again.
    pub async fn send(
        &self,
        phone_number_id: &str,
        token: &str,
        to: &str,
        message_json: &str,
    ) -> SendOutcome {
        // Tokens never contain whitespace; a trailing newline from a token file is common.
        let token = token.trim();
        let started = Instant::now();
        let outcome = match self
            .try_send(phone_number_id, token, to, message_json)
            .await
        {
            Ok(Accepted { wamid, wa_id }) => SendOutcome::Accepted { wamid, wa_id },
            Err(e) => SendOutcome::Failed(e.redact(token)),
        };
        match &outcome {
            SendOutcome::Accepted { .. } => tracing::debug!(
                phone_number_id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "graph api accepted a message"
            ),
            SendOutcome::Failed(e) => tracing::debug!(
                phone_number_id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                code = %e.code_name(),
                class = e.class.as_str(),
                "graph api send failed"
            ),
        }
        outcome
    }

    async fn try_send(
        &self,
        phone_number_id: &str,
        token: &str,
        to: &str,
        message_json: &str,
    ) -> Result<Accepted, CloudError> {
        // The id becomes part of the URL path, so only the characters of Meta's ids pass.
        if phone_number_id.is_empty()
            || !phone_number_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(CloudError::new(
                ErrorClass::PauseSender,
                "the sender's phone_number_id is empty or has characters other than digits; copy \
                 the id from WhatsApp Manager (API Setup)",
            ));
        }
        if token.is_empty() {
            return Err(CloudError::new(
                ErrorClass::PauseSender,
                "the sender has no access token; configure token_env or token_file",
            ));
        }
        let Some(body) = request_body(to, message_json) else {
            return Err(CloudError::new(
                ErrorClass::Permanent,
                "the stored message is not a JSON object, so it cannot be sent",
            ));
        };
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            CloudError::new(
                ErrorClass::PauseSender,
                "the access token has characters that cannot go in an HTTP header (a line break \
                 or a non-ASCII character?); check the token configuration",
            )
        })?;
        auth.set_sensitive(true);

        let uri = self.messages_uri(phone_number_id).map_err(|e| {
            CloudError::new(
                ErrorClass::PauseSender,
                format!(
                    "the request could not be built: the messages URL is not a valid URI ({e}); \
                     check api.base_url"
                ),
            )
        })?;
        let answer = self
            .transport
            .post_json(uri, auth, body)
            .await
            .map_err(|e| self.transport_error(e))?;
        interpret(answer.status, &answer.body).map_err(|mut e| {
            // The statuses whose Retry-After says when to come back (RFC 9110 names 503 and
            // 3xx; RFC 6585, 429); a redirect pauses the sender instead.
            if matches!(answer.status, 429 | 503) {
                e.retry_after = answer.retry_after;
            }
            e
        })
    }

    // Transport errors name no URL: it holds nothing secret, but errors are kept free of
    // request details anyway.
    fn transport_error(&self, e: TransportError) -> CloudError {
        let (stage, chain) = match e {
            TransportError::Timeout(after) => {
                return CloudError::new(
                    ErrorClass::Transient,
                    format!(
                        "{TIMEOUT_PREFIX} after {:?} waiting for the Graph API; Meta may or may \
                         not have accepted the message",
                        after
                    ),
                )
            }
            TransportError::Connect(chain) => (WHILE_CONNECTING, chain),
            TransportError::Request(chain) => (
                "during the request; Meta may or may not have accepted the message",
                chain,
            ),
        };
        CloudError::new(
            ErrorClass::Transient,
            format!("{CONNECTION_PREFIX} {stage}: {chain}"),
        )
    }
}

/// `scheme://host:port` of `url`, for log lines: no path, no credentials.
pub fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "(api.base_url)".to_string(),
    }
}

/// The request body: waq's fields first, then the members of the stored message object.
/// `None` when `message_json` is not an object.
pub fn request_body(to: &str, message_json: &str) -> Option<String> {
    let rest = message_json.trim_start().strip_prefix('{')?;
    let to_json = serde_json::to_string(to).ok()?;
    const HEAD: &str = r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"#;
    let mut body = String::with_capacity(HEAD.len() + to_json.len() + 1 + rest.len());
    body.push_str(HEAD);
    body.push_str(&to_json);
    // `{}` has no members to follow, so no comma.
    if !rest.trim_start().starts_with('}') {
        body.push(',');
    }
    body.push_str(rest);
    Some(body)
}

/// The shape of Meta's usual success answer, read without building a JSON value: just enough
/// to take `messages[0].id` when there is no `error` member at all. Anything else goes the
/// general way below, which decides exactly as before.
#[derive(serde::Deserialize)]
struct UsualAnswer<'a> {
    #[serde(borrow)]
    messages: Vec<UsualMessage<'a>>,
    #[serde(default, borrow)]
    contacts: Vec<UsualContact<'a>>,
    #[serde(default)]
    error: Present,
}

#[derive(serde::Deserialize)]
struct UsualContact<'a> {
    #[serde(default, borrow)]
    wa_id: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct UsualMessage<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

/// Whether a member was there at all (whatever its value, `null` included).
#[derive(Default)]
struct Present(bool);

impl<'de> serde::Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Present(true))
    }
}

/// What a success answer tells: the message id and whom Meta resolved the recipient to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Accepted {
    wamid: String,
    wa_id: Option<String>,
}

/// Turns an answer into a wamid (and the recipient's wa_id, when given) or an error.
fn interpret(status: u16, body: &[u8]) -> Result<Accepted, CloudError> {
    if (200..300).contains(&status) {
        if let Ok(answer) = serde_json::from_slice::<UsualAnswer>(body) {
            if !answer.error.0 {
                if let Some(first) = answer.messages.first().filter(|m| !m.id.is_empty()) {
                    let wa_id = answer
                        .contacts
                        .first()
                        .and_then(|c| c.wa_id.as_deref())
                        .filter(|w| !w.is_empty())
                        .map(str::to_string);
                    return Ok(Accepted {
                        wamid: first.id.clone().into_owned(),
                        wa_id,
                    });
                }
            }
        }
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(mut e) = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(meta_error)
    {
        e.http_status = Some(status);
        return Err(e);
    }
    if (200..300).contains(&status) {
        let wamid = parsed
            .as_ref()
            .and_then(|v| v.pointer("/messages/0/id"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty());
        let wa_id = parsed
            .as_ref()
            .and_then(|v| v.pointer("/contacts/0/wa_id"))
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .map(str::to_string);
        return match wamid {
            Some(id) => Ok(Accepted {
                wamid: id.to_string(),
                wa_id,
            }),
            None => Err(CloudError {
                class: ErrorClass::Transient,
                meta_code: None,
                http_status: Some(status),
                message: format!(
                    "Meta answered HTTP {status} without a message id (messages[0].id), so it is \
                     unknown whether the message was accepted"
                ),
                details: snippet(body),
                retry_after: None,
            }),
        };
    }
    Err(CloudError {
        class: classify_status(status),
        meta_code: None,
        http_status: Some(status),
        message: format!(
            "the Graph API answered HTTP {status} without a Meta error object{}",
            match status {
                300..=399 | 404 | 405 => "; check api.base_url and api.version",
                401 | 403 => "; something between waq and Meta refused the request",
                _ => "",
            }
        ),
        details: snippet(body),
        retry_after: None,
    })
}

/// Meta's `{"message","type","code","error_data":{"details"},"fbtrace_id"}`; `None` without a
/// numeric code, since classification needs it.
fn meta_error(e: &Value) -> Option<CloudError> {
    let code = match e.get("code")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    let mut message = e
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map_or_else(|| format!("Meta error {code}"), str::to_string);
    if let Some(trace) = e.get("fbtrace_id").and_then(Value::as_str) {
        message.push_str(&format!(" (fbtrace_id {trace})"));
    }
    if code == 2500 {
        message.push_str(
            "; check api.base_url (the host alone, e.g. https://graph.facebook.com) and api.version",
        );
    }
    let details = e
        .pointer("/error_data/details")
        .and_then(Value::as_str)
        .map(str::to_string);
    // Meta's answer when the phone number id does not exist or the token cannot reach it:
    // code 100 (a bad parameter) with subcode 33. It fails every message of the sender alike,
    // so it is the sender's configuration, not this message, that is wrong.
    let number_unreachable = code == 100
        && match e.get("error_subcode") {
            Some(Value::Number(n)) => n.as_i64() == Some(33),
            Some(Value::String(s)) => s == "33",
            _ => false,
        };
    Some(CloudError {
        class: match number_unreachable {
            true => ErrorClass::PauseSender,
            false => classify(code),
        },
        meta_code: Some(code),
        http_status: None,
        message,
        details,
        retry_after: None,
    })
}

/// The start of an unexpected body, on one line, for `details`.
fn snippet(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(SNIPPET_CHARS)
        .collect();
    (!line.is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_is_flagged_only_beyond_the_loopback() {
        for remote in [
            "http://graph.example.com",
            "http://10.0.0.5:8090",
            "http://[2001:db8::1]",
        ] {
            assert!(cleartext_beyond_loopback(remote), "{remote}");
        }
        for fine in [
            "https://graph.facebook.com",
            "http://127.0.0.1:18090",
            "http://127.1.2.3",
            "http://localhost:8090",
            "http://[::1]:8090",
        ] {
            assert!(!cleartext_beyond_loopback(fine), "{fine}");
        }
    }

    #[test]
    fn graph_versions_are_major_dot_minor() {
        for ok in ["v25.0", "v23.0", "v9.10", "v2.12", "v1.0"] {
            assert!(is_graph_version(ok), "{ok}");
        }
        for bad in [
            "v25", "v25.", "v.0", "v25.00", "v025.0", "v0.0", "25.0", "V25.0", "v25.0.1", "vX.0",
            "v25.0/", "",
        ] {
            assert!(!is_graph_version(bad), "{bad}");
        }
    }

    #[test]
    fn classify_follows_the_table() {
        let table: [(ErrorClass, &[i64]); 4] = [
            (
                ErrorClass::Transient,
                &[
                    1, 2, 4, 17, 32, 613, 80_000, 80_007, 80_008, 80_014, 130429, 131000, 131016,
                    131056, 131057, 133004,
                ],
            ),
            (ErrorClass::LongWait, &[131048, 131049, 132015, 132069]),
            (
                ErrorClass::Permanent,
                &[
                    100, 130403, 130472, 131008, 131009, 131021, 131026, 131047, 131050, 131051,
                    131053, 132000, 132001, 132005, 132007, 132012, 132016, 132018, 135000,
                ],
            ),
            (
                ErrorClass::PauseSender,
                &[
                    0, 3, 10, 33, 190, 200, 201, 250, 299, 368, 2500, 131005, 131031, 131037,
                    131042, 131045, 133010,
                ],
            ),
        ];
        for (class, codes) in table {
            for code in codes {
                assert_eq!(classify(*code), class, "code {code}");
            }
        }
    }

    #[test]
    fn unknown_codes_are_permanent() {
        for code in [
            -1,
            5,
            199,
            300,
            79_999,
            80_015,
            131052,
            999_999,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(classify(code), ErrorClass::Permanent, "code {code}");
        }
    }

    /// Which answers slow the sender down, which slow the app down, and which are an outage's.
    #[test]
    fn throttles_and_outage_answers() {
        let meta = |status, code: i64| {
            interpret(
                status,
                format!(r#"{{"error":{{"code":{code},"message":"m"}}}}"#).as_bytes(),
            )
            .unwrap_err()
        };
        let bare = |status| interpret(status, b"<html>oops</html>").unwrap_err();
        for code in [4, 17, 32, 613, 80_000, 80_007, 80_008, 80_014] {
            let e = meta(400, code);
            assert!(e.throttled() && e.app_wide_throttle(), "{code}");
            assert_eq!(e.class, ErrorClass::Transient, "{code}");
        }
        for e in [meta(400, 130429), meta(400, 131057), bare(429)] {
            assert!(e.throttled() && !e.app_wide_throttle(), "{e}");
        }
        for e in [
            meta(400, 131056),
            meta(400, 131026),
            meta(429, 100),
            bare(500),
        ] {
            assert!(!e.throttled(), "{e}");
        }

        for e in [
            bare(500),
            bare(502),
            bare(503),
            bare(504),
            interpret(502, b"").unwrap_err(),
            meta(503, 100),
            meta(400, 2),
            meta(500, 2),
            meta(400, 131016),
            meta(500, 1),
            meta(500, 131000),
            meta(503, 131000),
        ] {
            assert!(e.is_outage_answer() && e.is_unavailable(), "{e}");
        }
        for e in [
            bare(501),
            bare(429),
            bare(400),
            meta(400, 1),
            meta(400, 131000),
            meta(500, 131026),
            meta(502, 100),
        ] {
            assert!(!e.is_outage_answer() && !e.is_unavailable(), "{e}");
        }
    }

    #[test]
    fn classes_serialise_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&ErrorClass::PauseSender).unwrap(),
            "\"pause_sender\""
        );
        assert_eq!(ErrorClass::LongWait.as_str(), "long_wait");
    }

    #[test]
    fn body_puts_waq_fields_first() {
        let body = request_body("15551234567", r#"{"type":"text","text":{"body":"hi"}}"#).unwrap();
        assert_eq!(
            body,
            r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"15551234567","type":"text","text":{"body":"hi"}}"#
        );
        assert_eq!(
            request_body("1", " { }").unwrap(),
            r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"1" }"#
        );
        serde_json::from_str::<Value>(&request_body("1", "{}").unwrap()).unwrap();
        assert_eq!(request_body("1", "[]"), None);
        assert_eq!(request_body("1", ""), None);
        // Escaped even though validated recipients are digits.
        assert!(request_body("1\"2", "{}")
            .unwrap()
            .contains(r#""to":"1\"2""#));
    }

    #[test]
    fn interpret_answers() {
        let ok = br#"{"messaging_product":"whatsapp","contacts":[{"input":"1","wa_id":"1"}],"messages":[{"id":"wamid.A"}]}"#;
        let accepted = |wamid: &str, wa_id: Option<&str>| {
            Ok(Accepted {
                wamid: wamid.to_string(),
                wa_id: wa_id.map(str::to_string),
            })
        };
        assert_eq!(interpret(200, ok), accepted("wamid.A", Some("1")));
        // The wa_id Meta resolved the dialled number to (Brazil's old 12-digit ids).
        let br = br#"{"contacts":[{"input":"+5511987654321","wa_id":"551187654321"}],"messages":[{"id":"wamid.B"}]}"#;
        assert_eq!(
            interpret(200, br),
            accepted("wamid.B", Some("551187654321"))
        );
        // No contacts, or an odd one, still gives the wamid.
        assert_eq!(
            interpret(200, br#"{"messages":[{"id":"wamid.C"}]}"#),
            accepted("wamid.C", None)
        );
        assert_eq!(
            interpret(
                200,
                br#"{"contacts":[{"wa_id":7}],"messages":[{"id":"wamid.D"}]}"#
            ),
            accepted("wamid.D", None)
        );

        let e = interpret(
            400,
            br#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429,"error_data":{"messaging_product":"whatsapp","details":"slow down"},"fbtrace_id":"Axyz"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!((e.meta_code, e.http_status), (Some(130429), Some(400)));
        assert_eq!(e.message, "(#130429) Rate limit hit (fbtrace_id Axyz)");
        assert_eq!(e.details.as_deref(), Some("slow down"));
        assert!(
            e.full_message().ends_with("(fbtrace_id Axyz): slow down"),
            "{}",
            e.full_message()
        );
        assert_eq!(e.code_name(), "meta_130429");
        assert!(e.throttled() && !e.recipient_only());

        // A phone number id Meta does not know (or the token cannot reach) is the sender's
        // configuration; any other code 100 is this message's.
        let e = interpret(
            400,
            br#"{"error":{"message":"Unsupported post request. Object with ID '1' does not exist","type":"GraphMethodException","code":100,"error_subcode":33}}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.class, e.code_name().as_str()),
            (ErrorClass::PauseSender, "meta_100")
        );
        let e = interpret(400, br#"{"error":{"code":100,"error_subcode":"33"}}"#).unwrap_err();
        assert_eq!(e.class, ErrorClass::PauseSender);
        let e = interpret(400, br#"{"error":{"code":100,"error_subcode":2494010}}"#).unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);

        // A Meta error inside a 200 still wins.
        let e = interpret(200, br#"{"error":{"code":131026}}"#).unwrap_err();
        assert_eq!(
            (e.class, e.message.as_str()),
            (ErrorClass::Permanent, "Meta error 131026")
        );

        let e = interpret(200, br#"{"messages":[]}"#).unwrap_err();
        assert_eq!(
            (e.class, e.code_name().as_str()),
            (ErrorClass::Transient, "bad_answer")
        );
        let e = interpret(200, br#"{"messages":[{"id":""}]}"#).unwrap_err();
        assert_eq!(e.code_name(), "bad_answer");

        let e = interpret(502, b"<html>\n <body>Bad   gateway</body></html>").unwrap_err();
        assert_eq!(
            (e.class, e.code_name().as_str()),
            (ErrorClass::Transient, "http_502")
        );
        assert_eq!(
            e.details.as_deref(),
            Some("<html> <body>Bad gateway</body></html>")
        );
        // An error without a numeric code cannot be classified by code.
        let e = interpret(503, br#"{"error":{"message":"x"}}"#).unwrap_err();
        assert_eq!((e.class, e.meta_code), (ErrorClass::Transient, None));
    }

    #[test]
    fn status_fallback_classes() {
        for (status, class) in [
            (500, ErrorClass::Transient),
            (503, ErrorClass::Transient),
            (429, ErrorClass::Transient),
            (408, ErrorClass::Transient),
            (401, ErrorClass::PauseSender),
            (403, ErrorClass::PauseSender),
            (404, ErrorClass::PauseSender),
            (301, ErrorClass::PauseSender),
            (400, ErrorClass::Permanent),
            (413, ErrorClass::Permanent),
        ] {
            let e = interpret(status, b"").unwrap_err();
            assert_eq!(e.class, class, "status {status}");
            assert_eq!(e.code_name(), format!("http_{status}"));
            assert_eq!(e.details, None);
        }
    }

    #[test]
    fn code_names_of_local_failures() {
        let timeout = CloudError::new(ErrorClass::Transient, format!("{TIMEOUT_PREFIX} after 1s"));
        assert_eq!(timeout.code_name(), "timeout");
        let conn = CloudError::new(ErrorClass::Transient, format!("{CONNECTION_PREFIX} x"));
        assert_eq!(conn.code_name(), "connection");
        // Only a failure to connect means the request never left.
        let unsent = CloudError::new(
            ErrorClass::Transient,
            format!("{CONNECTION_PREFIX} {WHILE_CONNECTING}: refused"),
        );
        assert!(unsent.never_sent() && unsent.is_unanswered());
        assert_eq!(unsent.code_name(), "connection");
        assert!(!conn.never_sent() && conn.is_unanswered());
        assert!(!timeout.never_sent() && timeout.is_unanswered());
        assert_eq!(
            CloudError::new(ErrorClass::PauseSender, "x").code_name(),
            "sender_config"
        );
        assert_eq!(
            CloudError::new(ErrorClass::Permanent, "x").code_name(),
            "invalid_message"
        );
    }

    #[test]
    fn redaction() {
        let e = CloudError {
            details: Some("tok EAAG-SECRET".into()),
            ..CloudError::new(
                ErrorClass::PauseSender,
                "Malformed access token EAAG-SECRET",
            )
        }
        .redact("EAAG-SECRET");
        assert_eq!(e.message, "Malformed access token [redacted]");
        assert_eq!(e.details.as_deref(), Some("tok [redacted]"));
        assert_eq!(
            CloudError::new(ErrorClass::Permanent, "x")
                .redact("")
                .message,
            "x"
        );
        // A one-letter "token" would garble the message, and with it the failure's code.
        let e = CloudError::new(
            ErrorClass::Transient,
            format!("{CONNECTION_PREFIX}: refused"),
        )
        .redact("t");
        assert_eq!(e.code_name(), "connection");
    }

    #[test]
    fn options_are_checked() {
        let with = |base: &str, version: &str| {
            CloudClient::new(ClientOptions {
                base_url: base.to_string(),
                version: version.to_string(),
                ..ClientOptions::default()
            })
        };
        let c = with("https://graph.facebook.com/", "v25.0").unwrap();
        assert_eq!(
            c.messages_url("123"),
            "https://graph.facebook.com/v25.0/123/messages"
        );
        // The host in its ASCII form, as it goes into the request.
        let c = with("https://bücher.example", "v25.0").unwrap();
        assert_eq!(
            c.messages_url("1"),
            "https://xn--bcher-kva.example/v25.0/1/messages"
        );
        let c = with("http://127.0.0.1:9000/graph", "/v23.0/").unwrap();
        assert_eq!(
            c.messages_url("1"),
            "http://127.0.0.1:9000/graph/v23.0/1/messages"
        );
        for (base, version) in [
            ("graph.facebook.com", "v25.0"),
            ("ftp://graph.facebook.com", "v25.0"),
            ("https://graph.facebook.com?x=1", "v25.0"),
            ("https://graph.facebook.com", ""),
            ("https://graph.facebook.com", "v25.0/x"),
            ("https://user:pw@graph.facebook.com", "v25.0"),
        ] {
            let err = with(base, version).unwrap_err().to_string();
            assert!(err.contains("api."), "{err}");
        }
    }
}
