//! `waq send`: builds a `POST /v1/messages` body from flags. The daemon validates it; here we
//! only turn flags into JSON (bad JSON in a flag is a usage error, exit 2).

use clap::{ArgGroup, Args};
use serde_json::{json, Map, Value};

use super::ClientOpts;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("content").required(true).args(["text", "template", "message"])))]
pub struct SendArgs {
    /// The recipient's phone number, e.g. "+1 415 555 1234".
    #[arg(long, value_name = "NUMBER")]
    to: String,
    /// The sender (optional with a single sender).
    #[arg(long)]
    sender: Option<String>,
    /// Send a text message with this body.
    #[arg(long, value_name = "BODY")]
    text: Option<String>,
    /// Let WhatsApp show a preview of the first URL in the text.
    #[arg(long, requires = "text")]
    preview_url: bool,
    /// Send this template.
    #[arg(long, value_name = "NAME")]
    template: Option<String>,
    /// The template's language code.
    #[arg(long, value_name = "CODE", default_value = "en_US")]
    lang: String,
    /// A body parameter of the template (repeat in order).
    #[arg(long = "param", value_name = "TEXT", requires = "template")]
    params: Vec<String>,
    /// Send this Cloud API message object (JSON with a `type`), e.g. an image or interactive message.
    #[arg(long, value_name = "JSON")]
    message: Option<String>,
    /// Template to send instead when the 24-hour window is closed.
    #[arg(long, value_name = "NAME")]
    fallback_template: Option<String>,
    /// The fallback template's language code.
    #[arg(long, value_name = "CODE", default_value = "en_US")]
    fallback_lang: String,
    /// A body parameter of the fallback template (repeat in order).
    #[arg(
        long = "fallback-param",
        value_name = "TEXT",
        requires = "fallback_template"
    )]
    fallback_params: Vec<String>,
    /// Idempotency key: a second send with the same key creates nothing.
    #[arg(long = "key", value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Order among this recipient's waiting messages.
    #[arg(long, value_parser = ["high", "normal", "low"])]
    priority: Option<String>,
    /// Not before this time: RFC 3339 with its UTC offset, e.g. 2026-11-24T20:00:00Z.
    #[arg(long = "at", value_name = "TIME")]
    send_at: Option<String>,
    /// Give up if not sent within this many seconds.
    #[arg(long, value_name = "SECONDS")]
    ttl: Option<u64>,
    /// Opaque JSON echoed in status and events (at most 1 KiB).
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

impl SendArgs {
    /// The request body; `Err` is a usage error.
    pub fn request(&self) -> Result<Value, String> {
        let message = if let Some(body) = &self.text {
            json!({ "type": "text", "text": { "body": body, "preview_url": self.preview_url } })
        } else if let Some(name) = &self.template {
            json!({ "type": "template", "template": template(name, &self.lang, &self.params) })
        } else if let Some(raw) = &self.message {
            serde_json::from_str(raw).map_err(|e| format!("--message is not valid JSON: {e}"))?
        } else {
            return Err("give one of --text, --template or --message".into());
        };
        let mut body = Map::new();
        body.insert("to".into(), json!(self.to));
        body.insert("message".into(), message);
        let optional = [
            ("sender", self.sender.clone().map(Value::from)),
            (
                "fallback_template",
                self.fallback_template
                    .as_ref()
                    .map(|n| template(n, &self.fallback_lang, &self.fallback_params)),
            ),
            (
                "idempotency_key",
                self.idempotency_key.clone().map(Value::from),
            ),
            ("priority", self.priority.clone().map(Value::from)),
            ("send_at", self.send_at.clone().map(Value::from)),
            ("ttl_s", self.ttl.map(Value::from)),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                body.insert(key.into(), v);
            }
        }
        if let Some(raw) = &self.metadata {
            let m: Value = serde_json::from_str(raw)
                .map_err(|e| format!("--metadata is not valid JSON: {e}"))?;
            body.insert("metadata".into(), m);
        }
        Ok(Value::Object(body))
    }
}

/// A template object with its body parameters, as the Cloud API takes it.
fn template(name: &str, lang: &str, params: &[String]) -> Value {
    let mut t = json!({ "name": name, "language": { "code": lang } });
    if !params.is_empty() {
        let parameters: Vec<Value> = params
            .iter()
            .map(|p| json!({ "type": "text", "text": p }))
            .collect();
        t["components"] = json!([{ "type": "body", "parameters": parameters }]);
    }
    t
}
