//! Checks of send requests.
//!
//! Everything `POST /v1/messages` accepts is checked here before it is made durable, so a request
//! that breaks one of WhatsApp's known limits is refused at enqueue with the field named, instead
//! of failing at Meta minutes later. No I/O, no network.
//!
//! Every error is an [`ApiError`]: 400 `malformed_request` when the body is not a JSON object,
//! else 422 with a stable snake_case code from [`code`], the JSON path of the offending field
//! (e.g. `message.interactive.action.buttons[2].reply.title`) and a sentence saying what is wrong
//! and what to change. Checks stop at the first problem.
//!
//! `null` handling: waq's own optional fields (`sender`, `priority`, `metadata`, ...) treat `null`
//! as absent, so clients that serialise a missing value as `null` work. Inside `message` and
//! `fallback_template`, which are forwarded to Meta as given, `null` is a type error: Meta's
//! message schema has no nullable fields, so the producer is asked to leave the field out.
//!
//! Unknown members inside `message` are accepted (Meta adds features faster than waq releases);
//! unknown top-level fields are refused, because there they are almost always typos.

mod interactive;
mod json;
pub mod keys;
mod link;
mod media;
mod message;
mod template;

use crate::borrowed_json::Json;

use crate::error::ApiError;
use crate::model::{format_time, parse_time, Priority, ValidSend};
use json::{did_you_mean, invalid_type, type_name, Path};

pub use interactive::INTERACTIVE_TYPES;
pub(crate) use json::{key_path, quote};
pub use link::URL_SHORTENERS;
pub use message::{message_object, MESSAGE_TYPES};
pub(crate) use template::parameter_layout_problem;
pub use template::template_object;

/// The stable error codes of validation failures (the `code` of the error body).
pub mod code {
    /// 400: the body is not a JSON object.
    pub const MALFORMED_REQUEST: &str = "malformed_request";
    /// A top-level field waq does not know (usually a typo).
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    /// A required field is absent.
    pub const MISSING_FIELD: &str = "missing_field";
    /// A field has the wrong JSON type.
    pub const INVALID_TYPE: &str = "invalid_type";
    /// A field is not one of the values allowed there.
    pub const INVALID_VALUE: &str = "invalid_value";
    /// A field that must not be present in this place (e.g. `message.to`, a caption on audio).
    pub const FIELD_NOT_ALLOWED: &str = "field_not_allowed";
    /// Two fields that exclude each other are both present (media `id` and `link`).
    pub const CONFLICTING_FIELDS: &str = "conflicting_fields";
    /// A string that must not be empty is empty.
    pub const EMPTY_VALUE: &str = "empty_value";
    /// A string is over WhatsApp's character limit.
    pub const TOO_LONG: &str = "too_long";
    /// An array has fewer items than required.
    pub const TOO_FEW_ITEMS: &str = "too_few_items";
    /// An array has more items than allowed.
    pub const TOO_MANY_ITEMS: &str = "too_many_items";
    /// A value that must be unique among its siblings is repeated (button titles, row ids).
    pub const DUPLICATE_VALUE: &str = "duplicate_value";
    /// A number or time outside its allowed range (coordinates, `ttl_s`, `send_at`).
    pub const OUT_OF_RANGE: &str = "out_of_range";
    /// `to` is not a phone number in international format.
    pub const INVALID_RECIPIENT: &str = "invalid_recipient";
    /// `sender` is not a configured sender.
    pub const UNKNOWN_SENDER: &str = "unknown_sender";
    /// A URL that is not https, not parsable, or not public.
    pub const INVALID_LINK: &str = "invalid_link";
    /// A media link through a URL shortener, which WhatsApp refuses to fetch.
    pub const SHORTENED_LINK: &str = "shortened_link";
    /// A template name outside Meta's naming rules.
    pub const INVALID_TEMPLATE_NAME: &str = "invalid_template_name";
    /// A template language code not shaped like `en_US` or `de`.
    pub const INVALID_LANGUAGE_CODE: &str = "invalid_language_code";
    /// `send_at` is not an RFC 3339 time with an offset.
    pub const INVALID_TIME: &str = "invalid_time";
    /// `metadata` serialises to more than [`super::MAX_METADATA_BYTES`].
    pub const METADATA_TOO_LARGE: &str = "metadata_too_large";
}

/// Upper bound of `metadata` as compact JSON.
pub const MAX_METADATA_BYTES: usize = 1024;
/// Upper bound of `idempotency_key`, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 256;
/// Upper bound of `ttl_s`: 30 days.
pub const MAX_TTL_S: u64 = 30 * 24 * 3600;
/// How far ahead `send_at` may be: 365 days. `dispatch.max_age_s` counts from the `send_at`,
/// so it sets no bound of its own here.
pub const MAX_SEND_AHEAD_S: u64 = 365 * 24 * 3600;
/// E.164 numbers have at most 15 digits; 7 is the shortest in use.
pub const RECIPIENT_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;

/// The top-level fields of a send request.
pub const SEND_FIELDS: [&str; 9] = [
    "to",
    "sender",
    "message",
    "fallback_template",
    "idempotency_key",
    "priority",
    "send_at",
    "ttl_s",
    "metadata",
];

/// Checks one send request body (already parsed as JSON); the JSON parts of the result are
/// their compact text. `senders` = configured sender names.
pub fn send_request<S: AsRef<str>>(v: Json<'_>, senders: &[S]) -> Result<ValidSend, ApiError> {
    let Json::Object(obj) = v else {
        return Err(ApiError::bad_request(format!(
            "The request body must be a JSON object like {{\"to\": \"+14155551234\", \"message\": {{...}}}}, \
             but it is {}.",
            type_name(&v)
        )));
    };
    // One pass sorts the members into their fields (moved, not copied) and stops at the first
    // unknown one. Absent and null mean the same for waq's own fields.
    let mut fields: [Option<Json>; SEND_FIELDS.len()] = Default::default();
    for (key, value) in obj {
        let key = key.as_ref();
        let Some(i) = SEND_FIELDS.iter().position(|f| *f == key) else {
            return Err(unknown_field(key, "a send request", &SEND_FIELDS));
        };
        fields[i] = Some(value).filter(|v| !v.is_null());
    }
    // In the order of SEND_FIELDS.
    let [to, sender, message, fallback_template, idempotency_key, priority, send_at, ttl_s, metadata] =
        fields;

    let to = match to {
        None => {
            return Err(json::missing(
                &Path::Root("to"),
                "the recipient's phone number, e.g. \"+1 415 555 1234\"",
            ))
        }
        Some(Json::String(s)) => recipient(&s, "to")?,
        Some(other) => return Err(invalid_type(&Path::Root("to"), "a string", &other)),
    };
    let sender = configured_sender(sender, senders)?;
    let message = message.ok_or_else(|| {
        json::missing(
            &Path::Root("message"),
            "the WhatsApp message object, e.g. {\"type\": \"text\", \"text\": {\"body\": \"Hi\"}}",
        )
    })?;
    let kind = message::message(&message, &Path::Root("message"))?;
    let fallback_template = match fallback_template {
        None => None,
        Some(t) => {
            template::template(&t, &Path::Root("fallback_template"))?;
            Some(t.to_compact())
        }
    };
    let idempotency_key = match idempotency_key {
        None => None,
        Some(Json::String(s)) => {
            check_idempotency_key(&s)?;
            Some(s.into_owned())
        }
        Some(other) => {
            return Err(invalid_type(
                &Path::Root("idempotency_key"),
                "a string",
                &other,
            ))
        }
    };
    let priority = match priority {
        None => Priority::default(),
        Some(Json::String(s)) => Priority::parse(&s).ok_or_else(|| {
            ApiError::invalid(
                code::INVALID_VALUE,
                "priority",
                format!(
                    "`priority` {} is not known{}; use \"high\", \"normal\" or \"low\".",
                    quote(&s),
                    did_you_mean(&s, &["high", "normal", "low"])
                ),
            )
        })?,
        Some(other) => return Err(invalid_type(&Path::Root("priority"), "a string", &other)),
    };
    let send_at_ms = match send_at {
        None => None,
        Some(Json::String(s)) => Some(parse_time(&s).map_err(|e| {
            ApiError::invalid(
                code::INVALID_TIME,
                "send_at",
                e.message("send_at", &quote(&s)),
            )
        })?),
        Some(other) => {
            return Err(invalid_type(
                &Path::Root("send_at"),
                "a string (RFC 3339 time)",
                &other,
            ))
        }
    };
    let ttl_s = ttl_s.as_ref().map(ttl).transpose()?;
    let metadata = match metadata {
        None => None,
        Some(m) => {
            // Echoed as stored, so stored as one text per value: an object copied whole would
            // keep escapes that the same object written with whitespace would not. Only text
            // with a backslash can hold such an escape.
            let mut text = m.to_compact();
            if text.contains('\\') {
                text = m.to_compact_reescaped();
            }
            let size = text.len();
            if size > MAX_METADATA_BYTES {
                return Err(ApiError::invalid(
                    code::METADATA_TOO_LARGE,
                    "metadata",
                    format!(
                        "`metadata` is {size} bytes as JSON, over the limit of {MAX_METADATA_BYTES}: \
                         keep only what you need to recognise the message (e.g. an order id)."
                    ),
                ));
            }
            Some(text)
        }
    };

    Ok(ValidSend {
        to,
        sender,
        message: message.to_compact(),
        kind,
        fallback_template,
        idempotency_key,
        priority,
        send_at_ms,
        ttl_s,
        metadata,
    })
}

/// 422 `unknown_field` for member `key` of `what` (e.g. "a send request") whose fields are
/// `fields`, with the field probably meant.
pub fn unknown_field(key: &str, what: &str, fields: &[&str]) -> ApiError {
    ApiError::invalid(
        code::UNKNOWN_FIELD,
        json::key_path(key),
        format!(
            "{} is not a field of {what}{}; the fields are {}.",
            quote(key),
            did_you_mean(key, fields),
            fields.join(", ")
        ),
    )
}

/// `" (did you mean `x`?)"` when `input` is probably a typo of one of `candidates`, else "".
pub fn suggest(input: &str, candidates: &[&str]) -> String {
    did_you_mean(input, candidates)
}

/// Checks that a valid request's times fit together at `now` (Unix ms), the enqueue time
/// `ttl_s` counts from: a `send_at` at or after the end of the time to live would expire
/// before its first attempt, and one more than [`MAX_SEND_AHEAD_S`] ahead is a mistake (a
/// year typed wrong), not a plan.
pub fn schedule(v: &ValidSend, now: u64) -> Result<(), ApiError> {
    let Some(send_at) = v.send_at_ms else {
        return Ok(());
    };
    let latest = now.saturating_add(MAX_SEND_AHEAD_S.saturating_mul(1000));
    if send_at > latest {
        return Err(ApiError::invalid(
            code::OUT_OF_RANGE,
            "send_at",
            format!(
                "`send_at` ({}) is more than {} days ahead (after {}): schedule it at most that \
                 far ahead, and enqueue it later if it must wait longer.",
                format_time(send_at),
                MAX_SEND_AHEAD_S / 86_400,
                format_time(latest)
            ),
        ));
    }
    let Some(ttl_s) = v.ttl_s else {
        return Ok(());
    };
    let expires = now.saturating_add(ttl_s.saturating_mul(1000));
    if send_at < expires {
        return Ok(());
    }
    Err(ApiError::invalid(
        code::OUT_OF_RANGE,
        "send_at",
        format!(
            "`send_at` ({}) is not before the message's time to live ends ({}, `ttl_s` {ttl_s} \
             counted from now), so it would expire without being tried: send it sooner, raise \
             `ttl_s` (at most {MAX_TTL_S}), or leave `ttl_s` out.",
            format_time(send_at),
            format_time(expires)
        ),
    ))
}

/// [`send_request`] for item `index` of a batch: an item that is not an object is named as
/// that item, not as the request body.
pub fn batch_item<S: AsRef<str>>(
    v: Json<'_>,
    senders: &[S],
    index: usize,
) -> Result<ValidSend, ApiError> {
    if !matches!(v, Json::Object(_)) {
        return Err(ApiError::bad_request(format!(
            "Item [{index}] of the batch must be a send request, a JSON object like \
             {{\"to\": \"+14155551234\", \"message\": {{...}}}}, but it is {}.",
            type_name(&v)
        )));
    }
    send_request(v, senders)
}

/// Normalises a phone number to digits only (E.164 without `+`): strips `+`, whitespace, dashes,
/// dots and parentheses; the rest must be 7–15 digits and not start with 0 (a national number
/// without its country code, which WhatsApp would misroute). `field` names the field in errors.
///
/// A `(0)` right after the country code is the national trunk prefix written into an
/// international number ("+44 (0)20 7946 0958"): it is not dialled from abroad, so it is
/// dropped whole; kept as a digit it would make a valid-looking number of someone else.
pub fn recipient(raw: &str, field: &str) -> Result<String, ApiError> {
    let raw: std::borrow::Cow<str> = match trunk_prefix(raw) {
        Some(at) => format!("{}{}", &raw[..at], &raw[at + 3..]).into(),
        None => raw.into(),
    };
    let mut digits = String::with_capacity(raw.len().min(32));
    for c in raw.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '+' | '-' | '.' | '(' | ')' => {}
            c if c.is_whitespace() => {}
            _ => {
                return Err(ApiError::invalid(
                    code::INVALID_RECIPIENT,
                    field,
                    format!(
                        "`{field}` contains {c:?}, which has no place in a phone number; give the \
                         number in international format, e.g. \"+1 415 555 1234\"."
                    ),
                ))
            }
        }
        // Longer than any phone number: stop copying a possibly huge input.
        if digits.len() > *RECIPIENT_DIGITS.end() {
            break;
        }
    }
    if !RECIPIENT_DIGITS.contains(&digits.len()) {
        let n = match digits.len() {
            n if n > *RECIPIENT_DIGITS.end() => "more than 15 digits".to_string(),
            1 => "1 digit".to_string(),
            n => format!("{n} digits"),
        };
        return Err(ApiError::invalid(
            code::INVALID_RECIPIENT,
            field,
            format!(
                "`{field}` has {n}; a phone number in international format has 7 to 15 \
                 (country code first), e.g. \"+1 415 555 1234\"."
            ),
        ));
    }
    if digits.starts_with("00") {
        return Err(ApiError::invalid(
            code::INVALID_RECIPIENT,
            field,
            format!(
                "`{field}` starts with 00, a dialling prefix: write + instead, e.g. \
                 \"+44 20 7946 0958\" instead of \"0044 20 7946 0958\"."
            ),
        ));
    }
    if digits.starts_with('0') {
        return Err(ApiError::invalid(
            code::INVALID_RECIPIENT,
            field,
            format!(
                "`{field}` starts with 0, so it lacks its country code; give it in international \
                 format, e.g. \"+44 20 7946 0958\" instead of \"020 7946 0958\"."
            ),
        ));
    }
    Ok(digits)
}

/// Where a `(0)` follows the country code (1 to 3 digits, with any separators), if one does.
fn trunk_prefix(raw: &str) -> Option<usize> {
    // The byte test first: a substring search costs more, and most numbers have no `(`.
    let at = raw.as_bytes().iter().position(|b| *b == b'(')?;
    let country_digits = raw[..at].bytes().filter(u8::is_ascii_digit).count();
    (raw[at..].starts_with("(0)") && (1..=3).contains(&country_digits)).then_some(at)
}

fn configured_sender<S: AsRef<str>>(v: Option<Json>, senders: &[S]) -> Result<String, ApiError> {
    let names = || {
        let names: Vec<&str> = senders.iter().map(S::as_ref).collect();
        names.join(", ")
    };
    match v {
        None => match senders {
            [only] => Ok(only.as_ref().to_string()),
            [] => Err(ApiError::invalid(
                code::UNKNOWN_SENDER,
                "sender",
                "No senders are configured: add a [[senders]] entry to the configuration and reload.",
            )),
            _ => Err(ApiError::invalid(
                code::MISSING_FIELD,
                "sender",
                format!(
                    "`sender` is required because several senders are configured: name one of {}.",
                    names()
                ),
            )),
        },
        Some(Json::String(s)) if senders.iter().any(|n| n.as_ref() == s) => Ok(s.into_owned()),
        Some(Json::String(s)) => {
            let candidates: Vec<&str> = senders.iter().map(S::as_ref).collect();
            Err(ApiError::invalid(
                code::UNKNOWN_SENDER,
                "sender",
                if senders.is_empty() {
                    format!(
                        "`sender` {} is not configured, and no senders are: add a [[senders]] \
                         entry to the configuration.",
                        quote(&s)
                    )
                } else {
                    format!(
                        "`sender` {} is not a configured sender{}; use one of {}.",
                        quote(&s),
                        did_you_mean(&s, &candidates),
                        names()
                    )
                },
            ))
        }
        Some(other) => Err(invalid_type(&Path::Root("sender"), "a string", &other)),
    }
}

/// A number's text as written, cut short so a huge one cannot bloat the answer.
fn cut(text: &str) -> String {
    const MAX: usize = 40;
    match text.get(..MAX) {
        Some(head) if text.len() > MAX => format!("{head}…"),
        _ => text.to_string(),
    }
}

/// The limit is waq's own (keys are stored with every message), not one of WhatsApp's.
fn check_idempotency_key(s: &str) -> Result<(), ApiError> {
    let path = Path::Root("idempotency_key");
    let len = json::char_len(s);
    if len == 0 {
        return json::chars(s, &path, 1, MAX_IDEMPOTENCY_KEY_CHARS);
    }
    if len > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(ApiError::invalid(
            code::TOO_LONG,
            &path,
            format!(
                "`idempotency_key` is {len} characters long, over waq's limit of \
                 {MAX_IDEMPOTENCY_KEY_CHARS}: use a shorter key (a hash of a long one works)."
            ),
        ));
    }
    Ok(())
}

fn ttl(v: &Json) -> Result<u64, ApiError> {
    let out_of_range = || {
        ApiError::invalid(
            code::OUT_OF_RANGE,
            "ttl_s",
            format!(
                "`ttl_s` must be between 1 and {MAX_TTL_S} seconds (30 days); leave it out to \
                 keep trying for dispatch.max_age_s (a day by default)."
            ),
        )
    };
    let Json::Number(n) = v else {
        return Err(invalid_type(
            &Path::Root("ttl_s"),
            "an integer number of seconds",
            v,
        ));
    };
    let secs = if let Some(u) = n.as_u64() {
        u
    } else if n.as_i64().is_some() {
        return Err(out_of_range());
    } else {
        // A float: accept whole numbers like 600.0, which some encoders write.
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f >= 0.0 && f <= MAX_TTL_S as f64 => f as u64,
            Some(f) if f.fract() == 0.0 => return Err(out_of_range()),
            _ => {
                return Err(ApiError::invalid(
                    code::INVALID_TYPE,
                    "ttl_s",
                    format!(
                        "`ttl_s` must be a whole number of seconds, but it is {}: give whole \
                         seconds, e.g. 600.",
                        cut(n.as_text())
                    ),
                ))
            }
        }
    };
    if !(1..=MAX_TTL_S).contains(&secs) {
        return Err(out_of_range());
    }
    Ok(secs)
}

#[cfg(test)]
mod tests;
