//! JSON in and out: the `ApiError` → response mapping, body limits, and parsing that names
//! where malformed JSON breaks.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use crate::error::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json(status, &self.body())
    }
}

/// A JSON answer with `status`.
pub fn json(status: StatusCode, value: &Value) -> Response {
    let mut res = (status, value.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

pub fn ok(value: &Value) -> Response {
    json(StatusCode::OK, value)
}

/// 413 naming the limit, so the client knows how far to shrink.
pub fn too_large(limit: usize, what: &str) -> ApiError {
    ApiError::new(
        413,
        "too_large",
        format!("the {what} is larger than {limit} bytes; send less (the limit is set by socket.max_request_bytes / socket.max_batch_bytes)"),
    )
}

pub fn shutting_down() -> ApiError {
    ApiError::new(
        503,
        "shutting_down",
        "the daemon is shutting down and accepts no new work; retry once it is back",
    )
}

/// Reads the whole body, refusing more than `limit` bytes (checked against Content-Length
/// first, so an oversized upload is refused before it is read).
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &str,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit, what));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit, what)),
        Err(e) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Parses a JSON body; malformed JSON is a 400 `malformed_json` saying where it breaks.
pub fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::new(
            400,
            "malformed_json",
            "the request body is empty; send a JSON document",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            400,
            "malformed_json",
            format!(
                "the request body is not valid JSON: {} at line {}, column {}",
                describe(&e),
                e.line(),
                e.column()
            ),
        )
    })
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
}
