//! JSON in and out: the `ApiError` → response mapping, body limits, and parsing that names
//! where malformed JSON breaks.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use serde_json::Value;

use super::budget::{BodyBudget, Reserved};
use crate::borrowed_json::{self, Json, NotJson};
use crate::error::ApiError;
use crate::validate;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json(status, &self.body())
    }
}

/// A JSON answer with `status`: a `Value`, or a view that serialises as one.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    // Straight into a byte buffer: `Value`'s `Display` goes through a formatter adapter that
    // costs about twice as much for the same compact text.
    match serde_json::to_vec(value) {
        Ok(bytes) => text(status, bytes),
        // Only a map with keys that are not strings fails, and the answers have none.
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new(
                500,
                "internal",
                format!("the answer could not be written: {e}"),
            )
            .body()
            .to_string()
            .into_bytes(),
        ),
    }
}

/// An answer whose JSON text is already built.
pub fn text(status: StatusCode, json: Vec<u8>) -> Response {
    let mut res = Response::new(Body::from(json));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

pub fn ok<T: Serialize + ?Sized>(value: &T) -> Response {
    json(StatusCode::OK, value)
}

/// A body still arriving after this is abandoned: a stalled client must not hold one of the
/// `socket.max_connections` slots forever (the head has its own timeout in the server).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which body limit applies: its value and the configuration key that sets it, and the
/// budget the body is held under.
#[derive(Clone, Copy)]
pub struct Limit<'a> {
    pub bytes: usize,
    pub key: &'static str,
    budget: &'a Arc<BodyBudget>,
    /// The memory the body holds while handled, as a multiple of its size.
    factor: u64,
}

impl<'a> Limit<'a> {
    /// Every request but the batch.
    pub fn request(cfg: &crate::config::Config, budget: &'a Arc<BodyBudget>) -> Limit<'a> {
        Limit {
            bytes: cfg.socket.max_request_bytes,
            key: "socket.max_request_bytes",
            budget,
            factor: 1,
        }
    }

    pub fn batch(cfg: &crate::config::Config, budget: &'a Arc<BodyBudget>) -> Limit<'a> {
        Limit {
            bytes: cfg.socket.max_batch_bytes,
            key: "socket.max_batch_bytes",
            budget,
            factor: super::budget::BATCH_FACTOR,
        }
    }

    /// 413 naming the limit, so the client knows how far to shrink.
    fn exceeded(self) -> ApiError {
        ApiError::new(
            413,
            "too_large",
            format!(
                "the request body is larger than {} bytes ({}): send less, or split a batch",
                self.bytes, self.key
            ),
        )
    }
}

pub fn shutting_down() -> ApiError {
    ApiError::new(
        503,
        "shutting_down",
        "the daemon is shutting down and accepts no new work; retry once it is back",
    )
}

/// A body declared over the limit is still read, and dropped, up to this size and for this
/// long: a client that writes its whole request before it reads the answer (Python's
/// `http.client`, for one) then gets the 413, not a broken pipe. Larger ones are refused
/// unread, the connection closed.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// A body read whole, with its room in the body budget, given back when it is dropped.
pub struct HeldBody {
    bytes: Bytes,
    reserved: Reserved,
}

impl HeldBody {
    /// The bytes, and the room to keep for as long as what is built from them lives.
    pub fn into_parts(self) -> (Bytes, Reserved) {
        (self.bytes, self.reserved)
    }
}

impl std::ops::Deref for HeldBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads the whole body, refusing more than the limit (checked against Content-Length
/// first, so an oversized upload is refused without being kept). A body that does not fit in
/// the body budget now waits for room before it is read.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: Limit<'_>,
) -> Result<HeldBody, ApiError> {
    let unneeded = Unneeded::of(headers);
    let declared = unneeded.declared_length;
    if declared.is_some_and(|n| n > limit.bytes as u64) {
        unneeded.discard(body).await;
        return Err(limit.exceeded());
    }
    let mut reserved = limit
        .budget
        .reserve(declared.unwrap_or(limit.bytes as u64), limit.factor)
        .await;
    let mut body = body;
    let gathered = tokio::time::timeout(
        BODY_TIMEOUT,
        gather(&mut body, limit.bytes, declared, &mut reserved),
    );
    match gathered.await {
        Ok(Ok(bytes)) => {
            reserved.fit(bytes.len());
            Ok(HeldBody {
                bytes: without_bom(bytes),
                reserved,
            })
        }
        Ok(Err(Gather::TooLarge)) => {
            // The rest of a chunked body found too large is still read and dropped before
            // the 413, as a declared one is.
            drop(reserved);
            unneeded.discard(body).await;
            Err(limit.exceeded())
        }
        Ok(Err(Gather::Broken(e))) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
        Err(_) => Err(ApiError::new(
            408,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s; send it at once",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// UTF-8's byte-order mark, which some clients put before a JSON text (Windows PowerShell 5
/// writes one).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `bytes` without one leading byte-order mark: RFC 8259 (section 8.1) lets a parser ignore
/// it, and it carries nothing in UTF-8, while it would otherwise be refused as malformed JSON
/// at line 1, column 1, which names no cause.
fn without_bom(bytes: Bytes) -> Bytes {
    let bom = bytes.len() - skip_bom(&bytes).len();
    bytes.slice(bom..)
}

/// `raw` past one leading byte-order mark, if it has one (see [`without_bom`]).
pub(crate) fn skip_bom(raw: &[u8]) -> &[u8] {
    raw.strip_prefix(BOM).unwrap_or(raw)
}

enum Gather {
    TooLarge,
    Broken(axum::Error),
}

/// Reads `body` to its end into one buffer, at most `most` bytes, counting them in the budget.
/// A body that comes in one frame (a small send, usually) is kept as it came, uncopied.
async fn gather(
    body: &mut Body,
    most: usize,
    declared: Option<u64>,
    reserved: &mut Reserved,
) -> Result<Bytes, Gather> {
    let mut first: Option<Bytes> = None;
    let mut more: Option<Vec<u8>> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame.map_err(Gather::Broken)?.into_data() else {
            continue;
        };
        len = len.saturating_add(chunk.len());
        if len > most {
            return Err(Gather::TooLarge);
        }
        reserved.count(chunk.len());
        match (&mut first, &mut more) {
            (_, Some(buf)) => buf.extend_from_slice(&chunk),
            (Some(one), None) => {
                // Sized by Content-Length, so that a large body is copied once, not on each
                // growth of the buffer.
                let size = declared.map_or(len, |n| n as usize).max(len);
                let mut buf = Vec::with_capacity(size);
                buf.extend_from_slice(one);
                buf.extend_from_slice(&chunk);
                first = None;
                more = Some(buf);
            }
            (None, None) => first = Some(chunk),
        }
    }
    Ok(match (first, more) {
        (_, Some(buf)) => Bytes::from(buf),
        (Some(one), None) => one,
        (None, None) => Bytes::new(),
    })
}

/// The body's length as its `Content-Length` declares it.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a body to its end, keeping nothing.
async fn drain<B: http_body_util::BodyExt + Unpin>(mut body: B) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// What a request's head says of reading its body when the answer does not need it.
#[derive(Clone, Copy)]
pub struct Unneeded {
    declared_length: Option<u64>,
    /// `Expect: 100-continue`: the client sends its body only when asked, and reading it
    /// would ask for all of it; left unread, it is not sent at all (hyper closes).
    awaits_continue: bool,
}

impl Unneeded {
    pub fn of(headers: &HeaderMap) -> Unneeded {
        Unneeded {
            declared_length: declared_length(headers),
            awaits_continue: headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")),
        }
    }

    /// Reads and drops the body within the bounds of a 413's (a body declared or found
    /// larger, or slower, is left: hyper then closes the connection).
    pub async fn discard(self, body: Body) {
        if self.awaits_continue || self.declared_length.is_some_and(|n| n > DRAIN_BYTES) {
            return;
        }
        let limited = Limited::new(body, DRAIN_BYTES as usize);
        let _ = tokio::time::timeout(DRAIN_TIME, drain(limited)).await;
    }
}

/// For requests that carry no data (`what`: "a retry request"): no body, or an empty JSON
/// object, which some clients always send. Anything else would be ignored, so it is refused.
pub async fn no_body(
    headers: &HeaderMap,
    body: Body,
    limit: Limit<'_>,
    what: &str,
) -> Result<(), ApiError> {
    let bytes = read_body(headers, body, limit).await?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(());
    }
    match parse(&bytes)? {
        Value::Object(o) => match o.keys().next() {
            None => Ok(()),
            Some(key) => Err(ApiError::invalid(
                "unknown_field",
                validate::key_path(key),
                format!(
                    "{} is not a field of {what}, which has none: send no body.",
                    validate::quote(key)
                ),
            )),
        },
        _ => Err(ApiError::bad_request(format!(
            "{what} has no body: send none (or {{}})."
        ))),
    }
}

/// Parses a JSON body; malformed JSON is a 400 `malformed_json` saying where it breaks.
pub fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    refuse_empty(bytes)?;
    serde_json::from_slice(bytes).map_err(|e| malformed(bytes, &e))
}

/// [`parse`] into JSON that borrows from `bytes`: the send requests' path.
pub fn parse_borrowed(bytes: &[u8]) -> Result<Json<'_>, ApiError> {
    refuse_empty(bytes)?;
    borrowed_json::parse(bytes).map_err(|NotJson| {
        // serde_json says where and why; the two parsers accept the same texts, but the
        // nesting limit is said here in case serde_json ever allows more.
        match serde_json::from_slice::<Value>(bytes) {
            Err(e) => malformed(bytes, &e),
            Ok(_) => ApiError::new(
                400,
                "malformed_json",
                format!(
                    "the request body nests arrays and objects more than {} deep",
                    borrowed_json::MAX_DEPTH
                ),
            ),
        }
    })
}

fn refuse_empty(bytes: &[u8]) -> Result<(), ApiError> {
    match bytes.iter().all(|b| b.is_ascii_whitespace()) {
        true => Err(ApiError::new(
            400,
            "malformed_json",
            "the request body is empty; send a JSON document",
        )),
        false => Ok(()),
    }
}

/// Where and why `bytes` is not JSON, naming the field it breaks in when there is one.
fn malformed(bytes: &[u8], e: &serde_json::Error) -> ApiError {
    let offset = offset_of(bytes, e.line(), e.column());
    let why = match std::str::from_utf8(bytes) {
        Err(bad) => format!(
            "the byte 0x{:02X} is not UTF-8 text (send JSON as UTF-8)",
            bytes[bad.valid_up_to()]
        ),
        Ok(_) if lone_surrogate_before(bytes, offset) => "a \\u escape from \\uD800 to \\uDFFF \
            is half of a surrogate pair and must come with its other half (such as \\uD83D\\uDE00); \
            alone it is not text"
            .to_string(),
        Ok(_) => describe(e),
    };
    let (line, column) = match std::str::from_utf8(bytes) {
        Err(bad) => line_and_column(bytes, bad.valid_up_to()),
        Ok(_) => (e.line(), e.column()),
    };
    let error = ApiError::new(
        400,
        "malformed_json",
        format!("the request body is not valid JSON: {why} at line {line}, column {column}"),
    );
    let at = match std::str::from_utf8(bytes) {
        Err(bad) => bad.valid_up_to(),
        // A body cut short is broken at its end, not in the field it stopped in.
        Ok(_) if e.is_eof() => return error,
        Ok(_) => offset,
    };
    match field_at(bytes, at) {
        Some(field) => error.with_field(field),
        None => error,
    }
}

/// The byte offset of serde_json's 1-based `line` and `column` (a column counts bytes).
fn offset_of(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start = match line {
        0 | 1 => 0,
        n => bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(n - 2)
            .map_or(bytes.len(), |(i, _)| i + 1),
    };
    (line_start + column.saturating_sub(1)).min(bytes.len())
}

fn line_and_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}

/// Whether the last `\uXXXX` escape at or before `offset` is a surrogate half.
fn lone_surrogate_before(bytes: &[u8], offset: usize) -> bool {
    let end = (offset + 1).min(bytes.len());
    let Some(at) = bytes[..end].windows(2).rposition(|w| w == b"\\u") else {
        return false;
    };
    bytes
        .get(at + 2..at + 6)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u16::from_str_radix(h, 16).ok())
        .is_some_and(|unit| (0xD800..=0xDFFF).contains(&unit))
}

/// The path (`message.text.body`, `[3].to`) of the value that byte `offset` of a JSON text
/// lies in, as far as the text before it says; `None` at the top level or inside a key.
fn field_at(bytes: &[u8], offset: usize) -> Option<String> {
    enum Frame {
        Object { key: Option<String>, in_value: bool },
        Array { index: usize },
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < offset.min(bytes.len()) {
        match bytes[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i >= offset {
                    break;
                }
                if let Some(Frame::Object {
                    key,
                    in_value: false,
                }) = stack.last_mut()
                {
                    let raw = &bytes[start..=i.min(bytes.len() - 1)];
                    *key = Some(
                        serde_json::from_slice::<String>(raw)
                            .unwrap_or_else(|_| String::from_utf8_lossy(&raw[1..]).into_owned()),
                    );
                }
            }
            b'{' => stack.push(Frame::Object {
                key: None,
                in_value: false,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { in_value, .. }) = stack.last_mut() {
                    *in_value = true;
                }
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { key, in_value }) => {
                    *key = None;
                    *in_value = false;
                }
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object {
                key: Some(key),
                in_value: true,
            } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object { .. } => break,
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    (!path.is_empty()).then_some(path)
}

/// serde_json's message without its own " at line L column C" suffix (we add ours).
fn describe(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_names_line_and_column() {
        let e = parse(b"{\n  \"to\": ,\n}").unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.code, "malformed_json");
        assert!(e.message.contains("line 2, column"), "{}", e.message);
        assert_eq!(parse(b"  ").unwrap_err().code, "malformed_json");
        assert!(parse(b"{\"a\":1}").is_ok());
    }

    /// A broken string names its field, and says why in terms a person can act on.
    #[test]
    fn malformed_text_names_the_field_and_the_cause() {
        let e =
            parse(br#"{"to": "1", "message": {"text": {"body": "hi \ud800 there"}}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("message.text.body"), "{e:?}");
        assert!(e.message.contains("surrogate pair"), "{}", e.message);
        let e = parse(b"{\"to\": \"1\",\n \"metadata\": {\"a\": \"\xFF\xFE\"}}").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("metadata.a"), "{e:?}");
        assert!(
            e.message.contains("0xFF is not UTF-8") && e.message.contains("line 2, column 21"),
            "{}",
            e.message
        );
        let e =
            parse(br#"[{"to": "1"}, {"to": "2", "message": {"text": {"body": 1,}}}]"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("[1].message.text"), "{e:?}");
        // Broken between fields, or in a key: no field to name.
        assert_eq!(parse(br#"{"to": "1",, "a": 2}"#).unwrap_err().field, None);
        assert_eq!(parse(br#"{"t\ud800o": "1"}"#).unwrap_err().field, None);
        // A pair is text.
        assert!(parse(br#"{"to": "\ud83d\ude00"}"#).is_ok());
    }

    #[test]
    fn one_leading_byte_order_mark_is_dropped() {
        let body = |b: &'static [u8]| without_bom(Bytes::from_static(b));
        assert_eq!(body(b"\xEF\xBB\xBF{}"), &b"{}"[..]);
        assert_eq!(body(b"{}"), &b"{}"[..]);
        // A second one is the text's, and malformed.
        assert_eq!(body(b"\xEF\xBB\xBF\xEF\xBB\xBF{}"), &b"\xEF\xBB\xBF{}"[..]);
    }

    #[test]
    fn the_borrowed_parse_gives_the_same_errors() {
        for text in [&b"{\n  \"to\": ,\n}"[..], b"  ", b"[1,]", b"\"\\ud800\""] {
            let e = parse_borrowed(text).unwrap_err();
            assert_eq!(e.message, parse(text).unwrap_err().message);
            assert_eq!((e.status, e.code.as_str()), (400, "malformed_json"));
        }
        assert!(parse_borrowed(b"{\"a\":1}").is_ok());
    }
}
