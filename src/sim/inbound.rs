//! `POST /sim/inbound`: a user writes to a business number. Opens (or resets) that user's
//! customer-service window and sends the signed `messages` webhook Meta would send. The user
//! is known by wa_id: a dialled number listed in `wa_ids` writes as its wa_id.
//!
//! Body: `{"phone_number_id"?, "from", "text"?, "type"?, "name"?, "context"?, "<type>"?: {...}}`.
//! `type` defaults to `text` (body `text`, default "Hello"); for another type the object under
//! that key is passed through, e.g. `{"type":"button","button":{"text":"Yes","payload":"yes"}}`.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::state::Sim;
use super::validate::normalize_phone;
use super::webhooks::unix_seconds;

#[derive(Debug, Deserialize)]
pub(crate) struct InboundRequest {
    pub phone_number_id: Option<String>,
    pub from: String,
    pub text: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The user's profile name.
    pub name: Option<String>,
    /// The message object of a non-text type, and `context`.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The keys of a request, besides the object of a non-text `type`.
const KEYS: [&str; 6] = ["phone_number_id", "from", "type", "text", "name", "context"];

/// Refuses a key that is none of [`KEYS`] nor the object of a non-text `type`: a typo that
/// would otherwise do nothing. Checked on the body before it is read as an [`InboundRequest`],
/// so that a misspelt `from` is named as the typo it is rather than reported as `from` missing.
pub(crate) fn check_keys(body: &Map<String, Value>) -> Result<(), String> {
    let kind = match body.get("type") {
        None => "text",
        Some(Value::String(kind)) => kind.as_str(),
        // Reading the request names a `type` that is not a string.
        Some(_) => return Ok(()),
    };
    let mut known = KEYS.to_vec();
    if kind != "text" {
        known.push(kind);
    }
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(format!(
            "unknown key {key:?}{}; the keys are phone_number_id, from, type, text, name, context \
             and, for a type other than text, the object named by type",
            crate::validate::suggest(key, &known)
        )),
    }
}

/// Records the inbound message (its keys checked by [`check_keys`]); answers with its id and
/// when the window closes.
pub(crate) fn receive(sim: &Sim, req: InboundRequest) -> Result<Value, String> {
    let kind = req.kind.as_deref().unwrap_or("text");
    let number = match &req.phone_number_id {
        Some(id) => sim
            .numbers
            .get(id)
            .cloned()
            .ok_or_else(|| format!("unknown phone_number_id {id:?}"))?,
        None => sim.default_number.clone(),
    };
    let from = normalize_phone(&req.from)
        .ok_or_else(|| format!("from: {:?} is not a phone number (7-15 digits)", req.from))?;
    // Meta's `from` is the user's wa_id, also when the request names the number as dialled.
    let from = sim.other_wa_id(&from).map(str::to_string).unwrap_or(from);

    let mut message = Map::new();
    let wamid = sim.next_wamid();
    message.insert("from".into(), json!(from));
    message.insert("id".into(), json!(wamid));
    message.insert("timestamp".into(), json!(unix_seconds().to_string()));
    message.insert("type".into(), json!(kind));
    if kind == "text" {
        let body = req.text.as_deref().unwrap_or("Hello");
        message.insert("text".into(), json!({ "body": body }));
    } else {
        let content = req
            .rest
            .get(kind)
            .filter(|v| v.is_object())
            .ok_or_else(|| format!("type {kind:?} needs a {kind:?} object"))?;
        message.insert(kind.to_string(), content.clone());
    }
    if let Some(context) = req.rest.get("context") {
        message.insert("context".into(), context.clone());
    }

    let duration = Duration::from_secs(sim.cfg.window.duration_s);
    let now = Instant::now();
    {
        let mut st = number.lock();
        st.windows.open(&from, now + duration, now);
        st.counters.inbound += 1;
    }

    let name = req.name.as_deref().unwrap_or("Sim User");
    let mut value = Map::new();
    value.insert(
        "contacts".into(),
        json!([{"profile": {"name": name}, "wa_id": from}]),
    );
    value.insert("messages".into(), json!([Value::Object(message)]));
    sim.webhooks.send_messages(&number, value);

    Ok(json!({
        "id": wamid,
        "phone_number_id": number.id,
        "from": from,
        "window_open_until": unix_seconds() + sim.cfg.window.duration_s,
        "webhook": sim.webhooks.enabled(),
    }))
}
