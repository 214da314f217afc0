//! Meta's webhook envelope as serde types:
//! `{"object","entry":[{"id","changes":[{"field","value":{"metadata","contacts","messages","statuses","errors"}}]}]}`.
//!
//! Lenient on purpose, because Meta adds fields and types over time and one odd item must not
//! cost the rest of a batch: unknown fields are ignored, optional ones may be missing, numbers
//! and strings are accepted for one another, and a malformed list item is skipped (and logged)
//! rather than failing the payload.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
pub struct Envelope {
    #[serde(default, deserialize_with = "opt_string")]
    pub object: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub entry: Vec<Entry>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Entry {
    /// The WhatsApp Business Account id.
    #[serde(default, deserialize_with = "opt_string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub changes: Vec<Change>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Change {
    /// `messages` for everything waq applies; other fields (template and account updates) are
    /// only relayed.
    #[serde(default, deserialize_with = "opt_string")]
    pub field: Option<String>,
    #[serde(default)]
    pub value: ChangeValue,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChangeValue {
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Kept as JSON: they are published as they came.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub contacts: Vec<Value>,
    /// Kept as JSON (published verbatim); read through `InboundMessage::parse`.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub messages: Vec<Value>,
    /// Kept as JSON (a status waiting for its wamid may be written back to the inbox);
    /// read through `Status::parse`.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub statuses: Vec<Value>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub errors: Vec<MetaError>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct Metadata {
    #[serde(default, deserialize_with = "opt_string")]
    pub display_phone_number: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub phone_number_id: Option<String>,
}

/// One entry of `statuses[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// The wamid of the message it is about.
    #[serde(deserialize_with = "string")]
    pub id: String,
    /// `sent`, `delivered`, `read`, `played` or `failed` (others are ignored).
    #[serde(deserialize_with = "string")]
    pub status: String,
    /// Unix seconds (Meta sends a string).
    #[serde(default, deserialize_with = "opt_u64")]
    pub timestamp: Option<u64>,
    #[serde(default, deserialize_with = "opt_string")]
    pub recipient_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub errors: Vec<MetaError>,
}

impl Status {
    pub fn parse(raw: &Value) -> Result<Status, serde_json::Error> {
        Status::deserialize(raw)
    }
}

/// An error object, in `statuses[].errors[]` or `value.errors[]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetaError {
    #[serde(default, deserialize_with = "opt_i64")]
    pub code: Option<i64>,
    #[serde(default, deserialize_with = "opt_string")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub message: Option<String>,
    #[serde(default)]
    pub error_data: Option<ErrorData>,
    #[serde(default, deserialize_with = "opt_string")]
    pub href: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorData {
    #[serde(default, deserialize_with = "opt_string")]
    pub details: Option<String>,
}

impl MetaError {
    /// Title, message and details joined, each once (Meta often repeats the title as the message).
    pub fn describe(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        let details = self.error_data.as_ref().and_then(|d| d.details.as_deref());
        for p in [self.title.as_deref(), self.message.as_deref(), details]
            .into_iter()
            .flatten()
        {
            let p = p.trim();
            if !p.is_empty() && !parts.contains(&p) {
                parts.push(p);
            }
        }
        if parts.is_empty() {
            "no description given".to_string()
        } else {
            parts.join(": ")
        }
    }
}

/// The fields of an inbound `messages[]` entry that waq reads; the rest stays in the raw JSON.
///
/// None is required: Meta leaves `from` out for a user whose username hides their number, and
/// such a message must still be published.
#[derive(Debug, Clone, Deserialize)]
pub struct InboundMessage {
    /// The user's WhatsApp id (digits), when Meta shares their number.
    #[serde(default, deserialize_with = "opt_string")]
    pub from: Option<String>,
    /// The user's business-scoped user id (BSUID, e.g. `US.13491208655302741918`).
    #[serde(default, deserialize_with = "opt_string")]
    pub from_user_id: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub id: Option<String>,
    /// Unix seconds (Meta sends a string).
    #[serde(default, deserialize_with = "opt_u64")]
    pub timestamp: Option<u64>,
    #[serde(default, rename = "type", deserialize_with = "opt_string")]
    pub kind: Option<String>,
    #[serde(default)]
    pub system: Option<SystemInfo>,
}

impl InboundMessage {
    pub fn parse(raw: &Value) -> Result<InboundMessage, serde_json::Error> {
        InboundMessage::deserialize(raw)
    }
}

/// `messages[].system`, e.g. `{"body":"User A changed from 1 to 2","wa_id":"2","type":"user_changed_number"}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SystemInfo {
    #[serde(default, deserialize_with = "opt_string")]
    pub body: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "opt_string")]
    pub kind: Option<String>,
    /// The new number (current API).
    #[serde(default, deserialize_with = "opt_string")]
    pub wa_id: Option<String>,
    /// The new number (older API versions).
    #[serde(default, deserialize_with = "opt_string")]
    pub new_wa_id: Option<String>,
}

impl SystemInfo {
    pub fn new_number(&self) -> Option<&str> {
        self.wa_id.as_deref().or(self.new_wa_id.as_deref())
    }
}

fn lenient_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let items = match Value::deserialize(d)? {
        Value::Array(items) => items,
        Value::Null => return Ok(Vec::new()),
        other => {
            tracing::warn!(found = %kind(&other), "webhook payload: expected a list; ignored");
            return Ok(Vec::new());
        }
    };
    Ok(items
        .into_iter()
        .filter_map(|item| match T::deserialize(item) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "webhook payload: skipping a malformed item");
                None
            }
        })
        .collect())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn scalar_text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(scalar_text(Value::deserialize(d)?))
}

fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar_text(Value::deserialize(d)?).ok_or_else(|| serde::de::Error::custom("expected a string"))
}

fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_status_payload_with_extras_and_oddities() {
        let raw = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
            "messaging_product":"whatsapp",
            "metadata":{"display_phone_number":"15550783881","phone_number_id":106540352242922},
            "statuses":[
              {"id":"wamid.A","status":"failed","timestamp":"1750263773","recipient_id":"16505551234",
               "errors":[{"code":"131047","title":"Re-engagement message","message":"Re-engagement message",
                          "error_data":{"details":"More than 24 hours have passed."},"href":"https://x"}],
               "new_field":{"a":1}},
              {"status":"read"},
              {"id":"wamid.B","status":"read","timestamp":1750263774}
            ],
            "errors":"not a list"}}]}],"extra":true}"#;
        let env: Envelope = serde_json::from_str(raw).unwrap();
        let v = &env.entry[0].changes[0].value;
        assert_eq!(
            v.metadata.as_ref().unwrap().phone_number_id.as_deref(),
            Some("106540352242922")
        );
        assert!(v.errors.is_empty());
        let parsed: Vec<_> = v.statuses.iter().map(Status::parse).collect();
        let a = parsed[0].as_ref().unwrap();
        assert_eq!(a.timestamp, Some(1750263773));
        assert_eq!(a.errors[0].code, Some(131047));
        assert_eq!(
            a.errors[0].describe(),
            "Re-engagement message: More than 24 hours have passed."
        );
        assert!(parsed[1].is_err(), "a status without id is malformed");
        assert_eq!(parsed[2].as_ref().unwrap().timestamp, Some(1750263774));
    }

    #[test]
    fn parses_inbound_and_system_messages() {
        let m = serde_json::json!({"from":"16505551234","id":"wamid.X","timestamp":"1750263773",
            "type":"system","system":{"body":"User A changed from 16505551234 to 16505559999",
            "wa_id":"16505559999","type":"user_changed_number"}});
        let p = InboundMessage::parse(&m).unwrap();
        assert_eq!(p.kind.as_deref(), Some("system"));
        assert_eq!(p.system.unwrap().new_number(), Some("16505559999"));
        assert_eq!(p.from.as_deref(), Some("16505551234"));
        assert_eq!(p.from_user_id, None);
        // A user who hides their number: no `from`, the business-scoped user id instead.
        let p =
            InboundMessage::parse(&serde_json::json!({"from_user_id":"US.1349","id":"x"})).unwrap();
        assert_eq!((p.from, p.from_user_id.as_deref()), (None, Some("US.1349")));
        assert!(InboundMessage::parse(&serde_json::json!("not an object")).is_err());
    }
}
