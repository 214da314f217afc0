//! Meta's Graph API error answer:
//! `{"error":{"message":"(#CODE) ...","type":"OAuthException","code":CODE,
//! "error_data":{"messaging_product":"whatsapp","details":"..."},"fbtrace_id":"..."}}`,
//! and the `errors[]` object of a `failed` status webhook.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Meta's documentation page for error codes, linked from async errors.
const ERROR_CODES_HREF: &str =
    "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/";

/// A synchronous error the simulator answers with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetaError {
    pub status: StatusCode,
    pub code: i64,
    pub subcode: Option<i64>,
    /// The title, without the `(#code)` prefix.
    pub title: String,
    pub details: String,
}

impl MetaError {
    pub fn new(status: StatusCode, code: i64, title: &str, details: impl Into<String>) -> Self {
        MetaError {
            status,
            code,
            subcode: None,
            title: title.to_string(),
            details: details.into(),
        }
    }

    /// 100: a parameter of the wrong type, an unknown value of an enum, a malformed body.
    pub fn invalid_parameter(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 100, "Invalid parameter", details)
    }

    /// 100 for a key Meta does not know, in Meta's words: `Unexpected key "componets" on param
    /// "template".` `param` is the object the key is in, `None` for the request body itself.
    /// The details add the keys Meta knows there.
    pub fn unexpected_key(key: &str, param: Option<&str>, known: &[&str]) -> Self {
        // The key is echoed: a huge one must not bloat the answer.
        const MAX_KEY: usize = 64;
        let key = match key.char_indices().nth(MAX_KEY) {
            Some((cut, _)) => format!("{}…", &key[..cut]),
            None => key.to_string(),
        };
        let title = match param {
            Some(param) => format!("Unexpected key \"{key}\" on param \"{param}\"."),
            None => format!("Unexpected key \"{key}\" in the request body."),
        };
        let mut e = Self::invalid_parameter(format!("{title} Known keys: {}.", known.join(", ")));
        e.title = title;
        e
    }

    /// 131008: a required parameter is absent.
    pub fn missing(param: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            131008,
            "Required parameter is missing",
            format!("The parameter {param} is required."),
        )
    }

    /// 131009: a parameter is present but its value breaks a limit or a rule.
    pub fn bad_value(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            131009,
            "Parameter value is not valid",
            details,
        )
    }

    pub fn token_missing() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            190,
            "An active access token must be used",
            "Authorization header with a Bearer token is required.",
        )
    }

    pub fn token_invalid() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token",
            "The access token is not valid.",
        )
    }

    pub fn token_expired() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            190,
            "Error validating access token: Session has expired",
            "The access token has expired. Generate a new one.",
        );
        e.subcode = Some(463);
        e
    }

    pub fn unknown_number(id: &str) -> Self {
        let mut e = Self::invalid_parameter(format!(
            "Unsupported post request. Object with ID '{id}' does not exist, cannot be loaded due \
             to missing permissions, or does not support this operation."
        ));
        e.title = "Unsupported post request".into();
        e.subcode = Some(33);
        e
    }

    /// 100 (subcode 33), as Graph answers a method an endpoint does not take.
    pub fn unsupported_method(method: &str, path: &str) -> Self {
        let method = method.to_ascii_lowercase();
        let mut e = Self::invalid_parameter(format!(
            "Unsupported {method} request. {path} does not support this operation: send \
             messages with POST."
        ));
        e.title = format!("Unsupported {method} request");
        e.subcode = Some(33);
        e
    }

    pub fn unknown_path(path: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            2500,
            "Unknown path components",
            format!("Unknown path components: {path}"),
        )
    }

    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            130429,
            "Rate limit hit",
            "Cloud API message throughput has been reached.",
        )
    }

    pub fn pair_rate_limited() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            131056,
            "(Business Account, Consumer Account) pair rate limit hit",
            "Too many messages sent from the sender phone number to the same recipient phone \
             number in a short period of time.",
        )
    }

    /// 131047 in the answer, as Meta sometimes reports a closed window (see `WindowAnswer`).
    pub fn re_engagement() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            131047,
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer \
             last replied to this number.",
        )
    }

    pub fn not_on_whatsapp() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            131026,
            "Message undeliverable",
            "Unable to deliver message. The recipient phone number is not a WhatsApp phone number.",
        )
    }

    pub fn template_missing(name: &str, language: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            132001,
            "Template name does not exist in the translation",
            format!("template name ({name}) does not exist in {language}"),
        )
    }

    pub fn template_params(given: usize, expected: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            132000,
            "Number of parameters does not match the expected number of params",
            format!(
                "body: number of localizable_params ({given}) does not match the expected \
                 number of params ({expected})"
            ),
        )
    }

    /// 132018: a body or header parameter's text with a line break, a tab or more than 4
    /// spaces in a row (Meta's code since v23.0, and the simulator's on every version).
    pub fn template_param_layout() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            132018,
            "There was an issue with the parameters in your template.",
            "Param text cannot have new-line/tab characters or more than 4 consecutive spaces",
        )
    }

    pub fn unknown_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            1,
            "An unknown error has occurred.",
            "An unknown error has occurred. Retry later.",
        )
    }

    pub fn service_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            2,
            "Service temporarily unavailable",
            "The service is temporarily unavailable. Retry later.",
        )
    }

    pub fn something_went_wrong() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            131000,
            "Something went wrong",
            "Message failed to send due to an unknown error.",
        )
    }

    /// The JSON body Meta answers with.
    pub fn body(&self) -> Value {
        let mut error = json!({
            "message": format!("(#{}) {}", self.code, self.title),
            "type": "OAuthException",
            "code": self.code,
            "error_data": {"messaging_product": "whatsapp", "details": self.details},
            "fbtrace_id": fbtrace_id(),
        });
        if let (Some(sub), Some(obj)) = (self.subcode, error.as_object_mut()) {
            obj.insert("error_subcode".into(), json!(sub));
        }
        json!({ "error": error })
    }
}

impl IntoResponse for MetaError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // Graph answers 401s with this header too; some clients look for it.
            let value = format!(
                "OAuth \"Facebook Platform\" \"invalid_token\" \"{}\"",
                self.title.replace('"', "'")
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

/// The `errors[]` entry of a `failed` status webhook for an asynchronous error.
pub(crate) fn async_error(code: i64) -> Value {
    let (title, details) = match code {
        131047 => (
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer \
             last replied to this number.",
        ),
        _ => ("Something went wrong", "Message failed to send."),
    };
    json!({
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details},
        "href": ERROR_CODES_HREF,
    })
}

/// Graph's request trace id: 11 random letters and digits.
fn fbtrace_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..11)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_metas_shape() {
        let body = MetaError::token_expired().body();
        let e = &body["error"];
        assert_eq!(e["code"], 190);
        assert_eq!(e["error_subcode"], 463);
        assert_eq!(e["type"], "OAuthException");
        assert!(e["message"].as_str().unwrap().starts_with("(#190) "));
        assert_eq!(e["error_data"]["messaging_product"], "whatsapp");
        assert_eq!(e["fbtrace_id"].as_str().unwrap().len(), 11);
    }
}
