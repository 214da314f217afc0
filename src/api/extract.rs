//! Extractors whose rejections use the API's error shape instead of axum's plain text, and the
//! query string rules every endpoint shares.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, Method, Uri};

use crate::error::ApiError;
use crate::validate;

/// The single path parameter of a route (an id, a number, a sender name).
pub struct Param(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Param {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(p)) => Ok(Param(p)),
            // Not UTF-8 once percent-decoded (`/v1/messages/%ff`): decoded lossily, it is an
            // unknown id or an invalid number to the handler, which says so as for any other.
            Err(e) => lossy_param(parts).map(Param).ok_or_else(|| {
                ApiError::bad_request(format!("bad path parameter: {}", e.body_text()))
            }),
        }
    }
}

/// The route's path parameter as given in the URI, percent-decoded with invalid UTF-8 replaced.
/// Every route with one has it third: `/v1/{collection}/{param}[/action]`.
fn lossy_param(parts: &Parts) -> Option<String> {
    let raw = parts.uri.path().split('/').nth(3)?;
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                decoded.push(b);
                i += 3;
            }
            (b, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&decoded).into_owned())
}

/// The parameters of a query string. Each must be one the endpoint knows (an unknown one is
/// almost always a typo whose filter would silently not apply) and be given at most once
/// (which of two values counts would be a guess).
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Reads the query of `uri` for the endpoint `method` `uri.path()`, whose parameters are
    /// `known`.
    pub fn parse(method: &Method, uri: &Uri, known: &[&str]) -> Result<Query, ApiError> {
        let Some(raw) = uri.query() else {
            return Ok(Query { pairs: Vec::new() });
        };
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|e| {
                ApiError::new(
                    400,
                    "malformed_query",
                    format!("the query string {raw:?} cannot be read: {}", e.body_text()),
                )
            })?;
        let endpoint = || format!("{method} {}", uri.path());
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                let message = match known {
                    [] => format!(
                        "{} is not a parameter of {}, which takes none: remove it.",
                        validate::quote(name),
                        endpoint()
                    ),
                    _ => format!(
                        "{} is not a parameter of {}{}; its parameters are {}.",
                        validate::quote(name),
                        endpoint(),
                        validate::suggest(name, known),
                        known.join(", ")
                    ),
                };
                return Err(ApiError::invalid(
                    "unknown_parameter",
                    validate::key_path(name),
                    message,
                ));
            }
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                let hint = match name.as_str() {
                    "state" => " (several states go in one, comma-separated: state=failed,expired)",
                    _ => "",
                };
                return Err(ApiError::new(
                    400,
                    "malformed_query",
                    format!("`{name}` is given more than once; give it once{hint}."),
                )
                .with_field(name.as_str()));
            }
        }
        Ok(Query { pairs })
    }

    /// The value of parameter `name` as given, empty included.
    pub fn given(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses an empty value of any of `names` (`?to=` from an unset variable in a script),
    /// for the parameters where it would be taken as "no filter" and widen the request.
    pub fn refuse_empty(&self, names: &[&str]) -> Result<(), ApiError> {
        match names.iter().find(|name| self.given(name) == Some("")) {
            Some(name) => Err(ApiError::invalid(
                "invalid_parameter",
                *name,
                format!("`{name}` is empty: give the value to match, or leave it out"),
            )),
            None => Ok(()),
        }
    }

    /// The value of parameter `name`; an empty one (`?to=`) counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// For endpoints without query parameters: any parameter is refused (and, on a GET or a
/// DELETE, any body: see [`NoBody`]).
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if matches!(parts.method, Method::GET | Method::HEAD | Method::DELETE) {
            refuse_body(parts)?;
        }
        Query::parse(&parts.method, &parts.uri, &[]).map(|_| NoQuery)
    }
}

/// For GET and DELETE endpoints that read a query: a body is refused, since what it says
/// would otherwise be ignored.
pub struct NoBody;

impl<S: Send + Sync> FromRequestParts<S> for NoBody {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        refuse_body(parts).map(|()| NoBody)
    }
}

fn refuse_body(parts: &Parts) -> Result<(), ApiError> {
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    if length.is_some_and(|n| n > 0) || chunked {
        let advice = if parts.method == Method::DELETE {
            "send it without one"
        } else {
            "its parameters go in the query string"
        };
        return Err(ApiError::new(
            400,
            "unexpected_body",
            format!(
                "{} {} takes no body: {advice}.",
                parts.method,
                parts.uri.path()
            ),
        ));
    }
    Ok(())
}
