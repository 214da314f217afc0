//! Checks of send requests.
//!
//! Placeholder with the essential checks only; the full rule set (message object limits,
//! template shape, media links, ...) replaces it behind the same signature.

use serde_json::Value;

use crate::error::ApiError;
use crate::model::{parse_time, Priority, ValidSend};

const MAX_TEXT_CHARS: usize = 4096;
const MAX_METADATA_BYTES: usize = 1024;

/// Checks every field of a `POST /v1/messages` body and normalises `to`.
pub fn send_request(v: &Value, senders: &[String]) -> Result<ValidSend, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;

    let to = match obj.get("to") {
        Some(Value::String(s)) => recipient(s, "to")?,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_recipient",
                "to",
                "`to` must be a string",
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "missing_field",
                "to",
                "`to` is required: the recipient's phone number",
            ))
        }
    };

    let sender = match obj.get("sender") {
        Some(Value::String(s)) if senders.iter().any(|n| n == s) => s.clone(),
        Some(Value::String(s)) => {
            return Err(ApiError::invalid(
                "unknown_sender",
                "sender",
                format!(
                    "no sender named `{s}` is configured; configured: {}",
                    senders.join(", ")
                ),
            ))
        }
        Some(Value::Null) | None if senders.len() == 1 => senders[0].clone(),
        Some(Value::Null) | None => {
            return Err(ApiError::invalid(
                "missing_field",
                "sender",
                format!(
                    "several senders are configured; name one of: {}",
                    senders.join(", ")
                ),
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "sender",
                "`sender` must be a string",
            ))
        }
    };

    let message = match obj.get("message") {
        Some(m @ Value::Object(_)) => m.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "message",
                "`message` must be an object",
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "missing_field",
                "message",
                "`message` is required",
            ))
        }
    };
    let kind = match message.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => {
            return Err(ApiError::invalid(
                "missing_field",
                "message.type",
                "`message.type` is required, e.g. \"text\" or \"template\"",
            ))
        }
    };
    if kind == "text" {
        match message.pointer("/text/body") {
            Some(Value::String(b)) if b.chars().count() <= MAX_TEXT_CHARS && !b.is_empty() => {}
            Some(Value::String(b)) if b.is_empty() => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    "message.text.body",
                    "the text body is empty",
                ))
            }
            Some(Value::String(_)) => {
                return Err(ApiError::invalid(
                    "too_long",
                    "message.text.body",
                    format!("a text body holds at most {MAX_TEXT_CHARS} characters"),
                ))
            }
            _ => {
                return Err(ApiError::invalid(
                    "missing_field",
                    "message.text.body",
                    "a text message needs `text.body`",
                ))
            }
        }
    }

    let fallback_template = match obj.get("fallback_template") {
        None | Some(Value::Null) => None,
        Some(t @ Value::Object(_)) => Some(t.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "fallback_template",
                "`fallback_template` must be a template object",
            ))
        }
    };

    let idempotency_key = match obj.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "idempotency_key",
                "`idempotency_key` must be a string of 1 to 256 bytes",
            ))
        }
    };

    let priority = match obj.get("priority") {
        None | Some(Value::Null) => Priority::Normal,
        Some(Value::String(p)) => Priority::parse(p).ok_or_else(|| {
            ApiError::invalid(
                "invalid_value",
                "priority",
                "`priority` is one of high, normal, low",
            )
        })?,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_value",
                "priority",
                "`priority` is one of high, normal, low",
            ))
        }
    };

    let send_at_ms = match obj.get("send_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_time(s).ok_or_else(|| {
            ApiError::invalid(
                "invalid_value",
                "send_at",
                "`send_at` must be an RFC 3339 time such as 2026-11-24T20:00:00Z",
            )
        })?),
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "send_at",
                "`send_at` must be an RFC 3339 string",
            ))
        }
    };

    let ttl_s = match obj.get("ttl_s") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n),
            _ => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    "ttl_s",
                    "`ttl_s` must be a positive integer",
                ))
            }
        },
    };

    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m) => {
            if m.to_string().len() > MAX_METADATA_BYTES {
                return Err(ApiError::invalid(
                    "too_large",
                    "metadata",
                    format!("`metadata` holds at most {MAX_METADATA_BYTES} bytes of JSON"),
                ));
            }
            Some(m.clone())
        }
    };

    Ok(ValidSend {
        to,
        sender,
        message,
        kind,
        fallback_template,
        idempotency_key,
        priority,
        send_at_ms,
        ttl_s,
        metadata,
    })
}

/// Normalises a phone number to digits only (E.164 without `+`): `+1 (415) 555-1234` →
/// `14155551234`. `field` names the field in errors.
pub fn recipient(raw: &str, field: &str) -> Result<String, ApiError> {
    let digits: String = raw
        .chars()
        .filter(|c| !matches!(c, '+' | '-' | '.' | '(' | ')') && !c.is_whitespace())
        .collect();
    if (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(ApiError::invalid(
            "invalid_recipient",
            field,
            format!("`{raw}` is not a phone number: give 7 to 15 digits in international form, e.g. +14155551234"),
        ))
    }
}
