//! The HTTP surface: Graph's send endpoint and the simulator's own `/sim/*` endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::config::FaultConfig;
use super::error::MetaError;
use super::inbound::{self, InboundRequest};
use super::send;
use super::state::Sim;

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/{version}/{phone_number_id}/messages", post(messages))
        .route("/sim/stats", get(stats))
        .route("/sim/reset", post(reset))
        .route("/sim/faults", get(get_faults).post(set_faults))
        .route("/sim/token", post(set_token))
        .route("/sim/inbound", post(receive_inbound))
        .fallback(unknown_path)
        .method_not_allowed_fallback(unsupported_method)
        .with_state(sim)
}

async fn messages(
    State(sim): State<Arc<Sim>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = bearer(&headers).or_else(|| query_token(query.as_deref()));
    send::handle(&sim, &version, &phone_number_id, token.as_deref(), &body).await
}

/// `Authorization: Bearer <token>` (the scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Graph also takes the token as `?access_token=`.
fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Any other path (a version in the client's base URL, say, which waq refuses at start): counted, as requests to unknown
/// numbers are, so that `/sim/stats` shows them.
async fn unknown_path(State(sim): State<Arc<Sim>>, uri: Uri) -> Response {
    sim.unrouted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    MetaError::unknown_path(uri.path()).into_response()
}

/// A known path with the wrong method: Graph's error for it (a `/sim/*` endpoint answers its
/// own error shape), never a bare 405.
async fn unsupported_method(method: Method, uri: Uri) -> Response {
    if uri.path().starts_with("/sim/") {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(json!({"error": {"message": format!(
                "{} does not take {method}; see docs/SIMULATOR.md for its methods",
                uri.path()
            )}})),
        )
            .into_response();
    }
    MetaError::unsupported_method(method.as_str(), uri.path()).into_response()
}

/// The answer of a `/sim/*` endpoint: JSON, or 400 with `{"error":{"message"}}`.
fn sim_answer(result: Result<Value, String>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(message) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": message}})),
        )
            .into_response(),
    }
}

/// Parses a JSON object body of a `/sim/*` endpoint (an empty body is `{}`).
fn object_body(body: &Bytes) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not valid JSON: {e}")),
    }
}

/// `body` as a `T`, naming the key at fault: serde's message for a wrong type ("invalid type:
/// string \"x\", expected u64") does not say which key it was.
fn typed<T: serde::de::DeserializeOwned>(body: Map<String, Value>) -> Result<T, String> {
    let whole = match serde_json::from_value::<T>(Value::Object(body.clone())) {
        Ok(t) => return Ok(t),
        Err(e) => e.to_string(),
    };
    // A missing key is named already, and would fail every key tried alone.
    if whole.starts_with("missing field") {
        return Err(whole);
    }
    let culprit = body.into_iter().find(|(key, value)| {
        let alone = Map::from_iter([(key.clone(), value.clone())]);
        serde_json::from_value::<T>(Value::Object(alone)).is_err_and(|e| e.to_string() == whole)
    });
    Err(match culprit {
        Some((key, _)) => format!("{key}: {whole}"),
        None => whole,
    })
}

/// The query parameters of a `/sim/*` endpoint that takes `known` (often none): an unknown
/// one, or one given twice, is an error naming it, so a typo never silently does nothing.
fn query_params<'q>(
    query: Option<&'q str>,
    known: &[&str],
) -> Result<Vec<(&'q str, &'q str)>, String> {
    let mut params: Vec<(&str, &str)> = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&key) {
            return Err(match known {
                [] => format!("unknown query parameter {key:?}: this endpoint takes none"),
                _ => format!(
                    "unknown query parameter {key:?}: this endpoint takes only {}",
                    known.join(", ")
                ),
            });
        }
        if params.iter().any(|(k, _)| *k == key) {
            return Err(format!("query parameter {key:?} is given twice"));
        }
        params.push((key, value));
    }
    Ok(params)
}

/// Refuses every key of `body` not in `known`, naming it.
fn known_keys(body: &Map<String, Value>, known: &[&str]) -> Result<(), String> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) if known.is_empty() => Err(format!(
            "unknown key {key:?}; this endpoint takes no body keys (send no body, or {{}})"
        )),
        Some(key) => Err(format!(
            "unknown key {key:?}; the keys are {}",
            known.join(", ")
        )),
    }
}

/// A body's error after `take_number_id` took that key away: serde's list of the keys it
/// expected must still name it.
fn naming_number_id(error: String) -> String {
    error.replacen(
        "expected one of ",
        "expected `phone_number_id` or one of ",
        1,
    )
}

/// Takes `phone_number_id` out of a body: which number (all when absent).
fn take_number_id(body: &mut Map<String, Value>) -> Result<Option<String>, String> {
    match body.remove("phone_number_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err("phone_number_id must be a string".into()),
    }
}

async fn stats(State(sim): State<Arc<Sim>>, RawQuery(query): RawQuery) -> Response {
    if let Err(e) = query_params(query.as_deref(), &[]) {
        return sim_answer(Err(e));
    }
    Json(sim.stats()).into_response()
}

/// Zeroes the stats; `?all=true` also forgets rate state and open windows.
async fn reset(State(sim): State<Arc<Sim>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    sim_answer(apply_reset(&sim, query.as_deref(), &body))
}

fn apply_reset(sim: &Sim, query: Option<&str>, body: &Bytes) -> Result<Value, String> {
    let mut all = false;
    for (_, value) in query_params(query, &["all"])? {
        all = match value {
            "true" => true,
            "false" | "" => false,
            other => return Err(format!("all: {other:?} is neither true nor false")),
        };
    }
    // No body, or `{}`: the endpoint has no body fields.
    known_keys(&object_body(body)?, &[])?;
    sim.reset(all);
    Ok(json!({"reset": true, "all": all}))
}

async fn get_faults(State(sim): State<Arc<Sim>>, RawQuery(query): RawQuery) -> Response {
    if let Err(e) = query_params(query.as_deref(), &[]) {
        return sim_answer(Err(e));
    }
    let faults: BTreeMap<String, FaultConfig> = sim
        .numbers
        .iter()
        .map(|(id, n)| (id.clone(), n.lock().faults.config().clone()))
        .collect();
    Json(json!({ "faults": faults })).into_response()
}

async fn set_faults(
    State(sim): State<Arc<Sim>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    sim_answer(query_params(query.as_deref(), &[]).and_then(|_| apply_faults(&sim, &body)))
}

/// Replaces the faults of one number (`phone_number_id`) or of all: keys as in `[faults]`,
/// absent keys are off. Spans (`*_for_ms`, token expiry) start now.
fn apply_faults(sim: &Sim, body: &Bytes) -> Result<Value, String> {
    let mut body = object_body(body)?;
    let id = take_number_id(&mut body)?;
    let faults: FaultConfig =
        typed(body).map_err(|e| format!("invalid faults: {}", naming_number_id(e)))?;
    faults.validate().map_err(|e| e.to_string())?;
    let mut ids = Vec::new();
    for n in sim.select(id.as_deref())? {
        n.apply_faults(faults.clone());
        ids.push(n.id.clone());
    }
    ids.sort();
    Ok(json!({"applied_to": ids, "faults": faults}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    token: String,
    #[serde(default)]
    expire_after_requests: Option<u64>,
    #[serde(default)]
    expire_after_ms: Option<u64>,
}

async fn set_token(
    State(sim): State<Arc<Sim>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    sim_answer(query_params(query.as_deref(), &[]).and_then(|_| apply_token(&sim, &body)))
}

/// Sets the accepted token of one number (`phone_number_id`) or of all; the new token does
/// not expire unless `expire_after_requests` / `expire_after_ms` say so.
fn apply_token(sim: &Sim, body: &Bytes) -> Result<Value, String> {
    let mut body = object_body(body)?;
    let id = take_number_id(&mut body)?;
    let req: TokenRequest =
        typed(body).map_err(|e| format!("invalid token request: {}", naming_number_id(e)))?;
    if req.token.trim().is_empty() {
        return Err("token must not be empty".into());
    }
    let numbers = sim.select(id.as_deref())?;
    let now = Instant::now();
    if id.is_none() {
        sim.global_token().replace(req.token.clone(), now);
    }
    let mut ids = Vec::new();
    for n in numbers {
        let mut st = n.lock();
        st.token.replace(req.token.clone(), now);
        st.token
            .set_expiry(req.expire_after_requests, req.expire_after_ms, now);
        ids.push(n.id.clone());
    }
    ids.sort();
    Ok(json!({ "applied_to": ids }))
}

async fn receive_inbound(
    State(sim): State<Arc<Sim>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    sim_answer(query_params(query.as_deref(), &[]).and_then(|_| apply_inbound(&sim, &body)))
}

fn apply_inbound(sim: &Sim, body: &Bytes) -> Result<Value, String> {
    let body = object_body(body)?;
    inbound::check_keys(&body).map_err(|e| format!("invalid inbound message: {e}"))?;
    let req: InboundRequest = typed(body).map_err(|e| format!("invalid inbound message: {e}"))?;
    inbound::receive(sim, req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_header_or_query() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        assert_eq!(
            query_token(Some("a=1&access_token=xyz")).as_deref(),
            Some("xyz")
        );
        assert_eq!(query_token(None), None);
    }

    #[test]
    fn query_parameters_are_known_or_refused() {
        assert_eq!(query_params(None, &[]), Ok(vec![]));
        assert_eq!(query_params(Some(""), &["all"]), Ok(vec![]));
        assert_eq!(
            query_params(Some("all=true"), &["all"]),
            Ok(vec![("all", "true")])
        );
        let err = query_params(Some("bogus=1"), &["all"]).unwrap_err();
        assert!(err.contains("\"bogus\"") && err.contains("all"), "{err}");
        let err = query_params(Some("x"), &[]).unwrap_err();
        assert!(err.contains("\"x\"") && err.contains("takes none"), "{err}");
        let err = query_params(Some("all=true&all=false"), &["all"]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }
}
