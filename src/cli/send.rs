//! `waq send`: builds a `POST /v1/messages` body from flags. The daemon validates it; here we
//! only turn flags into JSON. Bad JSON in a flag, and an option of another message kind than
//! the one chosen, are usage errors (exit 2).

use clap::{ArgGroup, Args};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::{ClientOpts, Explained};

// The options that need another (`--preview-url` needs `--text`, ...) are checked in
// `kind_mismatch`, not with clap's `requires`: clap waives a requirement that conflicts with a
// present argument, and the three kinds exclude each other. The fallback's options are checked
// there too, so that every such error reads the same.
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
    #[arg(long)]
    preview_url: bool,
    /// Send this template.
    #[arg(long, value_name = "NAME")]
    template: Option<String>,
    /// The template's language code [default: en_US].
    // No clap default, here and for --fallback-lang: it would hide whether the option was given.
    #[arg(long, value_name = "CODE")]
    lang: Option<String>,
    /// A body parameter of the template (repeat in order).
    #[arg(long = "param", value_name = "TEXT")]
    params: Vec<String>,
    /// Send this Cloud API message object (JSON with a `type`), e.g. an image or interactive message.
    #[arg(long, value_name = "JSON")]
    message: Option<String>,
    /// Template to send instead when the 24-hour window is closed.
    #[arg(long, value_name = "NAME")]
    fallback_template: Option<String>,
    /// The fallback template's language code [default: en_US].
    #[arg(long, value_name = "CODE")]
    fallback_lang: Option<String>,
    /// A body parameter of the fallback template (repeat in order).
    #[arg(long = "fallback-param", value_name = "TEXT")]
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
    // Taken as written, so that the daemon checks it as any producer's `ttl_s` (its error names
    // the range or the type); negative numbers are values here, not unknown options.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    ttl: Option<String>,
    /// Opaque JSON echoed in status and events (at most 1 KiB).
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

impl SendArgs {
    /// The request body's JSON text; `Err` is a usage error.
    pub fn request(&self) -> Result<String, String> {
        if let Some(mismatch) = self.kind_mismatch() {
            return Err(mismatch);
        }
        let message = if let Some(body) = &self.text {
            json!({ "type": "text", "text": { "body": body, "preview_url": self.preview_url } })
        } else if let Some(name) = &self.template {
            let lang = self.lang.as_deref().unwrap_or(DEFAULT_LANG);
            json!({ "type": "template", "template": template(name, lang, &self.params) })
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
                self.fallback_template.as_ref().map(|n| {
                    let lang = self.fallback_lang.as_deref().unwrap_or(DEFAULT_LANG);
                    template(n, lang, &self.fallback_params)
                }),
            ),
            (
                "idempotency_key",
                self.idempotency_key.clone().map(Value::from),
            ),
            ("priority", self.priority.clone().map(Value::from)),
            ("send_at", self.send_at.clone().map(Value::from)),
            ("ttl_s", self.ttl.as_deref().map(ttl_value)),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                body.insert(key.into(), v);
            }
        }
        let mut text = Value::Object(body).to_string();
        if let Some(raw) = &self.metadata {
            // Added as written: read into a `Value`, its numbers would become doubles, and the
            // daemon echoes metadata as it receives it.
            let m: &RawValue = serde_json::from_str(raw)
                .map_err(|e| format!("--metadata is not valid JSON: {e}"))?;
            // In place of the closing brace of an object that has members (`to`, `message`).
            text.pop();
            text.push_str(r#","metadata":"#);
            text.push_str(m.get());
            text.push('}');
        }
        Ok(text)
    }

    /// An option given without the one it belongs to (another message kind than the one
    /// chosen, or no fallback template), which would otherwise be dropped without a word: the
    /// usage error naming it and what it needs.
    fn kind_mismatch(&self) -> Option<String> {
        if self.preview_url && self.text.is_none() {
            return Some(
                "--preview-url needs --text: it asks for a link preview in a text message".into(),
            );
        }
        if self.template.is_none() {
            if self.lang.is_some() {
                return Some(
                    "--lang needs --template: it is the language of the template sent \
                     (the fallback template's is --fallback-lang)"
                        .into(),
                );
            }
            if !self.params.is_empty() {
                return Some(
                    "--param needs --template: it fills in the template sent \
                     (the fallback template's parameters are --fallback-param)"
                        .into(),
                );
            }
        }
        if self.fallback_template.is_none() {
            if self.fallback_lang.is_some() {
                return Some(
                    "--fallback-lang needs --fallback-template: it is the fallback template's \
                     language"
                        .into(),
                );
            }
            if !self.fallback_params.is_empty() {
                return Some(
                    "--fallback-param needs --fallback-template: it fills in the fallback template"
                        .into(),
                );
            }
        }
        None
    }
}

impl SendArgs {
    /// What a person needs beside the daemon's refusal `error`: the option behind its JSON
    /// field, and for a closed window the options that get the message out.
    pub(super) fn explain(&self, error: &Value) -> Explained {
        let option = error
            .get("field")
            .and_then(Value::as_str)
            .and_then(|f| self.option_for(f));
        let hint =
            (error.get("code").and_then(Value::as_str) == Some("window_closed")).then(|| {
                let sender = match &self.sender {
                    Some(s) => format!(" --sender {}", shell_word(s)),
                    None => String::new(),
                };
                format!(
                "add --fallback-template NAME to send that template while the window is closed, \
                 or record the customer's message with `waq inbound --from {}{sender}`",
                shell_word(&self.to)
            )
            });
        Explained { option, hint }
    }

    /// The option that set `field` (a JSON path of the request body, e.g. `send_at` or
    /// `message.template.language.code`).
    fn option_for(&self, field: &str) -> Option<&'static str> {
        let (head, rest) = field.split_at(field.find(['.', '[']).unwrap_or(field.len()));
        Some(match head {
            "to" => "--to",
            "sender" => "--sender",
            "idempotency_key" => "--key",
            "priority" => "--priority",
            "send_at" => "--at",
            "ttl_s" => "--ttl",
            "metadata" => "--metadata",
            "fallback_template" => template_option(
                rest,
                ["--fallback-template", "--fallback-lang", "--fallback-param"],
            ),
            "message" if self.message.is_some() => "--message",
            "message" if self.template.is_some() => template_option(
                rest.strip_prefix(".template").unwrap_or(""),
                ["--template", "--lang", "--param"],
            ),
            "message" if rest == ".text.preview_url" => "--preview-url",
            "message" => "--text",
            _ => return None,
        })
    }
}

/// The option behind a field of a template object; `rest` is the field's path after the
/// object's, `options` the template's name, language and parameter options.
fn template_option(rest: &str, [name, lang, param]: [&'static str; 3]) -> &'static str {
    if rest.starts_with(".language") {
        lang
    } else if rest.starts_with(".components") {
        param
    } else {
        name
    }
}

/// `s` as one shell word, for a command line a person can paste: quoted unless it is plain.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'_' | b'.'));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The language of a template when none is given.
const DEFAULT_LANG: &str = "en_US";

/// `--ttl` as JSON: a number when it reads as one (`1.5` too, which the daemon then refuses
/// as not whole), else the text, which the daemon refuses as the wrong type.
fn ttl_value(raw: &str) -> Value {
    if let Ok(n) = raw.parse::<i64>() {
        return Value::from(n);
    }
    raw.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or_else(|| Value::from(raw))
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
