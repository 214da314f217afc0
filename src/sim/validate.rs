//! Meta's validation of a `POST /{version}/{phone_number_id}/messages` body, before any rule
//! that depends on state (rates, templates, windows) is looked at.
//!
//! Codes, as Meta uses them:
//! - 100 "Invalid parameter": not JSON, wrong JSON type, a value outside an enum
//!   (`messaging_product`, `type`, `recipient_type`, interactive or header type), a key Meta
//!   does not know ("Unexpected key");
//! - 131008 "Required parameter is missing";
//! - 131009 "Parameter value is not valid": a length or count limit, a bad link or phone number,
//!   duplicate button titles, a caption on audio or a sticker, coordinates out of range;
//! - 132018 "There was an issue with the parameters in your template": a body or header
//!   parameter's text with a line break, a tab or more than 4 spaces in a row.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::error::MetaError;
use crate::validate::keys::{self, MESSAGE_TYPES};
use crate::validate::parameter_layout_problem;

/// What a valid request asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    /// Send a message.
    Send(Outbound),
    /// Mark an inbound message read (optionally with a typing indicator): same endpoint,
    /// answered `{"success": true}`.
    MarkRead,
}

/// A message to send, with what the rules need to know about it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outbound {
    /// `to` as given, echoed as `contacts[].input`.
    pub to_input: String,
    /// `to` as digits. `send` replaces it with the user's configured wa_id (`wa_ids`), if any,
    /// before the stateful rules: then it is `contacts[].wa_id` and the recipient key of them all.
    pub wa_id: String,
    /// The message type (`text`, `template`, ...).
    pub kind: String,
    pub template: Option<TemplateRef>,
    pub biz_opaque: Option<String>,
}

/// The template a send names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TemplateRef {
    pub name: String,
    pub language: String,
    /// Parameters of the body component(s).
    pub body_params: usize,
}

const INTERACTIVE_TYPES: [&str; 14] = [
    "button",
    "list",
    "cta_url",
    "product",
    "product_list",
    "catalog_message",
    "flow",
    "location_request_message",
    "call_permission_request",
    "order_details",
    "order_status",
    "address_message",
    "voice_call",
    "carousel",
];

/// The keys Meta knows at the top of the body: the envelope, the mark-as-read keys and the
/// message objects.
const TOP_LEVEL_KEYS: [&str; 20] =
    keys::concat(keys::REQUEST, ["status", "message_id", "typing_indicator"]);

/// Meta's limit on the contacts of one message.
const MAX_CONTACTS: usize = 257;

/// Meta's limit on `biz_opaque_callback_data`.
const MAX_CALLBACK_DATA: usize = 512;

type Check<T> = Result<T, MetaError>;

/// Parses and validates a send body.
pub(crate) fn check(body: &[u8]) -> Check<Request> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        MetaError::invalid_parameter(format!("The request body is not valid JSON: {e}"))
    })?;
    let obj = value
        .as_object()
        .ok_or_else(|| MetaError::invalid_parameter("The request body must be a JSON object."))?;
    // Meta adds request keys over time: as waq does at enqueue, only a near miss of a known
    // one (a typo) is refused.
    if let Some(key) = obj
        .keys()
        .find(|k| !TOP_LEVEL_KEYS.contains(&k.as_str()) && is_near_miss(k, &TOP_LEVEL_KEYS))
    {
        return Err(MetaError::unexpected_key(key, None, &TOP_LEVEL_KEYS));
    }

    match obj.get("messaging_product") {
        Some(Value::String(s)) if s == "whatsapp" => {}
        None | Some(Value::Null) => {
            return Err(MetaError::invalid_parameter(
                "The parameter messaging_product is required.",
            ))
        }
        Some(other) => {
            return Err(MetaError::invalid_parameter(format!(
                "Param messaging_product must be one of {{WHATSAPP}} - got {other}."
            )))
        }
    }

    // Marking a message read shares the endpoint: {"status":"read","message_id":...}.
    if obj.contains_key("status") {
        let status = req_str(obj, "status", "status")?;
        if status != "read" {
            return Err(MetaError::invalid_parameter(format!(
                "Param status must be one of {{READ}} - got \"{status}\"."
            )));
        }
        req_str(obj, "message_id", "message_id")?;
        return Ok(Request::MarkRead);
    }

    let group = match opt_str(obj, "recipient_type", "recipient_type")? {
        None | Some("individual") => false,
        Some("group") => true,
        Some(other) => {
            return Err(MetaError::invalid_parameter(format!(
                "Param recipient_type must be one of {{INDIVIDUAL, GROUP}} - got \"{other}\"."
            )))
        }
    };

    let to = req_str(obj, "to", "to")?;
    let wa_id = if group {
        to.to_string()
    } else {
        normalize_phone(to).ok_or_else(|| {
            MetaError::bad_value(format!("Param to is not a valid phone number: \"{to}\"."))
        })?
    };

    let kind = match obj.get("type") {
        None | Some(Value::Null) => infer_type(obj),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(MetaError::invalid_parameter("Param type must be a string.")),
    };
    if !MESSAGE_TYPES.contains(&kind) {
        return Err(MetaError::invalid_parameter(format!(
            "Param type must be one of {{{}}} - got \"{kind}\".",
            MESSAGE_TYPES.join(", ").to_uppercase()
        )));
    }

    if obj.contains_key("context") {
        let ctx = req_obj(obj, "context", "context")?;
        known_keys(ctx, "context", keys::CONTEXT)?;
        req_str(ctx, "message_id", "context['message_id']")?;
    }

    let biz_opaque =
        opt_str(obj, "biz_opaque_callback_data", "biz_opaque_callback_data")?.map(str::to_string);
    if let Some(data) = &biz_opaque {
        max_len(data, MAX_CALLBACK_DATA, "biz_opaque_callback_data")?;
    }

    let mut template = None;
    match kind {
        "text" => check_text(req_obj(obj, "text", "text")?)?,
        "image" | "audio" | "video" | "document" | "sticker" => {
            check_media(req_obj(obj, kind, kind)?, kind, kind)?
        }
        "template" => template = Some(check_template(req_obj(obj, "template", "template")?)?),
        "interactive" => check_interactive(req_obj(obj, "interactive", "interactive")?)?,
        "location" => check_location(req_obj(obj, "location", "location")?)?,
        "contacts" => check_contacts(obj)?,
        "reaction" => check_reaction(req_obj(obj, "reaction", "reaction")?)?,
        _ => {}
    }

    Ok(Request::Send(Outbound {
        to_input: to.to_string(),
        wa_id,
        kind: kind.to_string(),
        template,
        biz_opaque,
    }))
}

/// Meta defaults a missing `type` to `text`; a body without `type` that carries one other
/// message object (as some of Meta's own examples do) is read as that type.
fn infer_type(obj: &Map<String, Value>) -> &'static str {
    if obj.contains_key("text") {
        return "text";
    }
    MESSAGE_TYPES
        .into_iter()
        .find(|t| obj.contains_key(*t))
        .unwrap_or("text")
}

/// A phone number as digits: `+`, spaces, dashes, dots and parentheses dropped; 7–15 digits
/// (E.164) remain, or it is not a phone number.
pub(crate) fn normalize_phone(input: &str) -> Option<String> {
    let mut digits = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '+' | ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    (7..=15).contains(&digits.len()).then_some(digits)
}

fn check_text(text: &Map<String, Value>) -> Check<()> {
    known_keys(text, "text", keys::TEXT)?;
    let body = req_str(text, "body", "text['body']")?;
    max_len(body, 4096, "text['body']")?;
    opt_bool(text, "preview_url", "text['preview_url']")?;
    Ok(())
}

/// A media object of type `kind` (at `path`): exactly one of `id` (uploaded media) or `link`
/// (an http(s) URL); a caption only where WhatsApp shows one.
fn check_media(media: &Map<String, Value>, path: &str, kind: &str) -> Check<()> {
    // Meta still adds keys here (`voice` on audio): as at enqueue, only a near miss is refused.
    if let Some(key) = media
        .keys()
        .find(|k| !keys::MEDIA.contains(&k.as_str()) && is_near_miss(k, keys::MEDIA))
    {
        return Err(MetaError::unexpected_key(key, Some(path), keys::MEDIA));
    }
    let id = opt_str(media, "id", &format!("{path}['id']"))?;
    let link = opt_str(media, "link", &format!("{path}['link']"))?;
    match (id, link) {
        (None, None) => {
            return Err(MetaError::missing(&format!(
                "{path}['id'] or {path}['link']"
            )))
        }
        (Some(_), Some(_)) => {
            return Err(MetaError::bad_value(format!(
                "Param {path} must contain either id or link, not both."
            )))
        }
        (Some(id), None) if id.trim().is_empty() => {
            return Err(MetaError::missing(&format!("{path}['id']")))
        }
        (None, Some(link)) if !is_http_url(link) => {
            return Err(MetaError::bad_value(format!(
                "Param {path}['link'] must be an http:// or https:// URL - got \"{link}\"."
            )))
        }
        _ => {}
    }
    if let Some(caption) = opt_str(media, "caption", &format!("{path}['caption']"))? {
        if !matches!(kind, "image" | "video" | "document") {
            return Err(MetaError::bad_value(format!(
                "Param {path}['caption'] is not allowed: only image, video and document messages \
                 have a caption."
            )));
        }
        max_len(caption, 1024, &format!("{path}['caption']"))?;
    }
    opt_str(media, "filename", &format!("{path}['filename']"))?;
    Ok(())
}

fn is_http_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        &s[7..]
    } else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty()
        && !s.chars().any(char::is_whitespace)
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
}

fn check_template(t: &Map<String, Value>) -> Check<TemplateRef> {
    known_keys(t, "template", keys::TEMPLATE)?;
    let name = req_str(t, "name", "template['name']")?;
    let language = req_obj(t, "language", "template['language']")?;
    known_keys(language, "template['language']", keys::LANGUAGE)?;
    let code = req_str(language, "code", "template['language']['code']")?;
    let mut body_params = 0;
    if let Some(components) = opt_array(t, "components", "template['components']")? {
        for (i, c) in components.iter().enumerate() {
            let path = format!("template['components'][{i}]");
            let c = c.as_object().ok_or_else(|| {
                MetaError::invalid_parameter(format!("Param {path} must be an object."))
            })?;
            known_keys(c, &path, keys::COMPONENT)?;
            let ctype = req_str(c, "type", &format!("{path}['type']"))?;
            if !keys::COMPONENT_TYPES
                .iter()
                .any(|t| t.eq_ignore_ascii_case(ctype))
            {
                return Err(MetaError::invalid_parameter(format!(
                    "Param {path}['type'] must be one of {{{}}} - got \"{ctype}\".",
                    keys::COMPONENT_TYPES.join(", ").to_uppercase()
                )));
            }
            if ctype.eq_ignore_ascii_case("button") {
                req_str(c, "sub_type", &format!("{path}['sub_type']"))?;
                check_button_index(c, &format!("{path}['index']"))?;
            }
            let params = opt_array(c, "parameters", &format!("{path}['parameters']"))?;
            let laid_out =
                ctype.eq_ignore_ascii_case("body") || ctype.eq_ignore_ascii_case("header");
            for (j, p) in params.into_iter().flatten().enumerate() {
                let ppath = format!("{path}['parameters'][{j}]");
                let p = as_obj(p, &ppath)?;
                check_template_param(p, &ppath)?;
                if laid_out {
                    check_param_layout(p)?;
                }
            }
            if ctype.eq_ignore_ascii_case("body") {
                body_params += params.map_or(0, Vec::len);
            }
        }
    }
    Ok(TemplateRef {
        name: name.to_string(),
        language: code.to_string(),
        body_params,
    })
}

/// A parameter's text, by its `type`: missing or empty is 131008, as Meta answers
/// "Parameter of type text is missing text value". Other types, and texts that are not strings
/// (Meta's own examples send booleans), pass.
fn check_template_param(p: &Map<String, Value>, path: &str) -> Check<()> {
    let text = |obj: &Map<String, Value>, key: &str, path: String| match obj.get(key) {
        None | Some(Value::Null) => Err(MetaError::missing(&path)),
        Some(Value::String(s)) if s.is_empty() => Err(MetaError::missing(&path)),
        Some(_) => Ok(()),
    };
    let ptype = req_str(p, "type", &format!("{path}['type']"))?;
    if keys::PARAMETER_TYPES.contains(&ptype) {
        known_keys(p, path, &["type", "parameter_name", ptype])?;
    }
    match ptype {
        key @ ("text" | "payload" | "coupon_code") => text(p, key, format!("{path}['{key}']")),
        key @ ("currency" | "date_time") => {
            let kpath = format!("{path}['{key}']");
            let obj = req_obj(p, key, &kpath)?;
            text(obj, "fallback_value", format!("{kpath}['fallback_value']"))
        }
        // A header's media, fetched by Meta as a media message's is.
        key @ ("image" | "video" | "document") => {
            let kpath = format!("{path}['{key}']");
            check_media(req_obj(p, key, &kpath)?, &kpath, key)
        }
        _ => Ok(()),
    }
}

/// A button component's position among the template's buttons: digits, as a string or a
/// number (Meta's examples use both).
fn check_button_index(c: &Map<String, Value>, path: &str) -> Check<()> {
    let ok = match c.get("index") {
        None | Some(Value::Null) => return Err(MetaError::missing(path)),
        Some(Value::String(s)) => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
        Some(Value::Number(n)) => n.as_u64().is_some(),
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(MetaError::invalid_parameter(format!(
            "Param {path} must be the button's position as digits."
        )))
    }
}

/// The text of a body or header parameter: no line break, no tab, at most 4 spaces in a row.
fn check_param_layout(p: &Map<String, Value>) -> Check<()> {
    match p.get("text").and_then(Value::as_str) {
        Some(text) if parameter_layout_problem(text).is_some() => {
            Err(MetaError::template_param_layout())
        }
        _ => Ok(()),
    }
}

fn check_interactive(i: &Map<String, Value>) -> Check<()> {
    // The insides of header and action vary by type and grow often: left lenient.
    known_keys(i, "interactive", keys::INTERACTIVE)?;
    let itype = req_str(i, "type", "interactive['type']")?;
    if !INTERACTIVE_TYPES.contains(&itype) {
        return Err(MetaError::invalid_parameter(format!(
            "Param interactive['type'] must be one of {{{}}} - got \"{itype}\".",
            INTERACTIVE_TYPES.join(", ")
        )));
    }
    if i.contains_key("header") {
        check_header(req_obj(i, "header", "interactive['header']")?)?;
    } else if itype == "product_list" {
        return Err(MetaError::missing("interactive['header']"));
    }
    // Every interactive type but a single product needs a body.
    if i.contains_key("body") || itype != "product" {
        let body = req_obj(i, "body", "interactive['body']")?;
        let text = req_str(body, "text", "interactive['body']['text']")?;
        let limit = if itype == "list" { 4096 } else { 1024 };
        max_len(text, limit, "interactive['body']['text']")?;
    }
    if i.contains_key("footer") {
        let footer = req_obj(i, "footer", "interactive['footer']")?;
        let text = req_str(footer, "text", "interactive['footer']['text']")?;
        max_len(text, 60, "interactive['footer']['text']")?;
    }
    let action = req_obj(i, "action", "interactive['action']")?;
    match itype {
        "button" => check_buttons(action),
        "list" => check_list(action),
        "cta_url" => check_cta_url(action),
        "product" => {
            req_str(action, "catalog_id", "interactive['action']['catalog_id']")?;
            req_str(
                action,
                "product_retailer_id",
                "interactive['action']['product_retailer_id']",
            )?;
            Ok(())
        }
        "product_list" => check_product_list(action),
        "flow" => check_flow(action),
        _ => Ok(()),
    }
}

fn check_header(h: &Map<String, Value>) -> Check<()> {
    let htype = req_str(h, "type", "interactive['header']['type']")?;
    match htype {
        "text" => {
            let text = req_str(h, "text", "interactive['header']['text']")?;
            max_len(text, 60, "interactive['header']['text']")
        }
        "image" | "video" | "document" => {
            let path = format!("interactive['header']['{htype}']");
            check_media(req_obj(h, htype, &path)?, &path, htype)
        }
        other => Err(MetaError::invalid_parameter(format!(
            "Param interactive['header']['type'] must be one of {{text, image, video, document}} \
             - got \"{other}\"."
        ))),
    }
}

fn check_buttons(action: &Map<String, Value>) -> Check<()> {
    let buttons = req_array(action, "buttons", "interactive['action']['buttons']")?;
    if !(1..=3).contains(&buttons.len()) {
        return Err(MetaError::bad_value(format!(
            "Param interactive['action']['buttons'] must have between 1 and 3 buttons - got {}.",
            buttons.len()
        )));
    }
    let mut titles = HashSet::new();
    let mut ids = HashSet::new();
    for (i, b) in buttons.iter().enumerate() {
        let path = format!("interactive['action']['buttons'][{i}]");
        let b = as_obj(b, &path)?;
        let btype = req_str(b, "type", &format!("{path}['type']"))?;
        if btype != "reply" {
            return Err(MetaError::invalid_parameter(format!(
                "Param {path}['type'] must be one of {{reply}} - got \"{btype}\"."
            )));
        }
        let reply = req_obj(b, "reply", &format!("{path}['reply']"))?;
        let id = req_str(reply, "id", &format!("{path}['reply']['id']"))?;
        max_len(id, 256, &format!("{path}['reply']['id']"))?;
        let title = req_str(reply, "title", &format!("{path}['reply']['title']"))?;
        max_len(title, 20, &format!("{path}['reply']['title']"))?;
        if !titles.insert(title) {
            return Err(MetaError::bad_value(format!(
                "Button titles must be unique - \"{title}\" appears twice."
            )));
        }
        if !ids.insert(id) {
            return Err(MetaError::bad_value(format!(
                "Button ids must be unique - \"{id}\" appears twice."
            )));
        }
    }
    Ok(())
}

fn check_list(action: &Map<String, Value>) -> Check<()> {
    let button = req_str(action, "button", "interactive['action']['button']")?;
    max_len(button, 20, "interactive['action']['button']")?;
    let sections = req_array(action, "sections", "interactive['action']['sections']")?;
    if !(1..=10).contains(&sections.len()) {
        return Err(MetaError::bad_value(format!(
            "Param interactive['action']['sections'] must have between 1 and 10 sections - got {}.",
            sections.len()
        )));
    }
    let mut rows_total = 0;
    let mut row_ids = HashSet::new();
    for (s, section) in sections.iter().enumerate() {
        let path = format!("interactive['action']['sections'][{s}]");
        let section = as_obj(section, &path)?;
        match opt_str(section, "title", &format!("{path}['title']"))? {
            Some(title) => max_len(title, 24, &format!("{path}['title']"))?,
            None if sections.len() > 1 => {
                return Err(MetaError::missing(&format!("{path}['title']")))
            }
            None => {}
        }
        let rows = req_array(section, "rows", &format!("{path}['rows']"))?;
        for (r, row) in rows.iter().enumerate() {
            let rpath = format!("{path}['rows'][{r}]");
            let row = as_obj(row, &rpath)?;
            let id = req_str(row, "id", &format!("{rpath}['id']"))?;
            max_len(id, 200, &format!("{rpath}['id']"))?;
            let title = req_str(row, "title", &format!("{rpath}['title']"))?;
            max_len(title, 24, &format!("{rpath}['title']"))?;
            if let Some(d) = opt_str(row, "description", &format!("{rpath}['description']"))? {
                max_len(d, 72, &format!("{rpath}['description']"))?;
            }
            if !row_ids.insert(id) {
                return Err(MetaError::bad_value(format!(
                    "Row ids must be unique - \"{id}\" appears twice."
                )));
            }
        }
        rows_total += rows.len();
    }
    if !(1..=10).contains(&rows_total) {
        return Err(MetaError::bad_value(format!(
            "A list message must have between 1 and 10 rows in total - got {rows_total}."
        )));
    }
    Ok(())
}

fn check_cta_url(action: &Map<String, Value>) -> Check<()> {
    let params = req_obj(action, "parameters", "interactive['action']['parameters']")?;
    let text = req_str(
        params,
        "display_text",
        "interactive['action']['parameters']['display_text']",
    )?;
    max_len(
        text,
        20,
        "interactive['action']['parameters']['display_text']",
    )?;
    let url = req_str(params, "url", "interactive['action']['parameters']['url']")?;
    if !is_http_url(url) {
        return Err(MetaError::bad_value(format!(
            "Param interactive['action']['parameters']['url'] must be an http:// or https:// URL \
             - got \"{url}\"."
        )));
    }
    Ok(())
}

fn check_product_list(action: &Map<String, Value>) -> Check<()> {
    req_str(action, "catalog_id", "interactive['action']['catalog_id']")?;
    let sections = req_array(action, "sections", "interactive['action']['sections']")?;
    if !(1..=10).contains(&sections.len()) {
        return Err(MetaError::bad_value(format!(
            "Param interactive['action']['sections'] must have between 1 and 10 sections - got {}.",
            sections.len()
        )));
    }
    for (s, section) in sections.iter().enumerate() {
        let path = format!("interactive['action']['sections'][{s}]");
        let section = as_obj(section, &path)?;
        if let Some(title) = opt_str(section, "title", &format!("{path}['title']"))? {
            max_len(title, 24, &format!("{path}['title']"))?;
        }
        let items = req_array(
            section,
            "product_items",
            &format!("{path}['product_items']"),
        )?;
        if !(1..=30).contains(&items.len()) {
            return Err(MetaError::bad_value(format!(
                "Param {path}['product_items'] must have between 1 and 30 items - got {}.",
                items.len()
            )));
        }
    }
    Ok(())
}

fn check_flow(action: &Map<String, Value>) -> Check<()> {
    let p = req_obj(action, "parameters", "interactive['action']['parameters']")?;
    let base = "interactive['action']['parameters']";
    req_str(
        p,
        "flow_message_version",
        &format!("{base}['flow_message_version']"),
    )?;
    let cta = req_str(p, "flow_cta", &format!("{base}['flow_cta']"))?;
    max_len(cta, 30, &format!("{base}['flow_cta']"))?;
    let id = opt_str(p, "flow_id", &format!("{base}['flow_id']"))?;
    let name = opt_str(p, "flow_name", &format!("{base}['flow_name']"))?;
    match (id, name) {
        (None, None) => Err(MetaError::missing(&format!(
            "{base}['flow_id'] or {base}['flow_name']"
        ))),
        (Some(_), Some(_)) => Err(MetaError::bad_value(
            "Param flow_id cannot be used together with flow_name.",
        )),
        _ => Ok(()),
    }
}

fn check_location(l: &Map<String, Value>) -> Check<()> {
    known_keys(l, "location", keys::LOCATION)?;
    for (key, limit) in [("latitude", 90.0), ("longitude", 180.0)] {
        let path = format!("location['{key}']");
        // A number, or a numeric string (Meta's own schema types coordinates as strings).
        let degrees = match l.get(key) {
            None | Some(Value::Null) => return Err(MetaError::missing(&path)),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        }
        .ok_or_else(|| MetaError::invalid_parameter(format!("Param {path} must be a number.")))?;
        // NaN fails the range too.
        if !(-limit..=limit).contains(&degrees) {
            return Err(MetaError::bad_value(format!(
                "Param {path} must be between -{limit} and {limit} - got {degrees}."
            )));
        }
    }
    opt_str(l, "name", "location['name']")?;
    opt_str(l, "address", "location['address']")?;
    Ok(())
}

fn check_contacts(obj: &Map<String, Value>) -> Check<()> {
    let contacts = req_array(obj, "contacts", "contacts")?;
    if contacts.is_empty() {
        return Err(MetaError::missing("contacts[0]"));
    }
    if contacts.len() > MAX_CONTACTS {
        return Err(MetaError::bad_value(format!(
            "Param contacts must have at most {MAX_CONTACTS} contacts - got {}.",
            contacts.len()
        )));
    }
    for (i, c) in contacts.iter().enumerate() {
        let path = format!("contacts[{i}]");
        let c = as_obj(c, &path)?;
        let name = req_obj(c, "name", &format!("{path}['name']"))?;
        req_str(
            name,
            "formatted_name",
            &format!("{path}['name']['formatted_name']"),
        )?;
    }
    Ok(())
}

fn check_reaction(r: &Map<String, Value>) -> Check<()> {
    known_keys(r, "reaction", keys::REACTION)?;
    req_str(r, "message_id", "reaction['message_id']")?;
    // An empty emoji removes a reaction, so it may be empty but must be a string.
    if let Some(v) = r.get("emoji") {
        if !v.is_string() {
            return Err(MetaError::invalid_parameter(
                "Param reaction['emoji'] must be a string.",
            ));
        }
    }
    Ok(())
}

// ----- small typed accessors; `path` names the parameter as Meta's messages do -----

/// Whether `key` is probably a typo of one of `known`.
fn is_near_miss(key: &str, known: &[&str]) -> bool {
    !crate::validate::suggest(key, known).is_empty()
}

/// Meta refuses a key it does not know in the object at `path` (100, "Unexpected key").
fn known_keys(obj: &Map<String, Value>, path: &str, keys: &[&str]) -> Check<()> {
    match obj.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(key) => Err(MetaError::unexpected_key(key, Some(path), keys)),
        None => Ok(()),
    }
}

fn as_obj<'a>(v: &'a Value, path: &str) -> Check<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| MetaError::invalid_parameter(format!("Param {path} must be an object.")))
}

fn req_obj<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Check<&'a Map<String, Value>> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(MetaError::missing(path)),
        Some(v) => as_obj(v, path),
    }
}

fn req_array<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Check<&'a Vec<Value>> {
    opt_array(obj, key, path)?.ok_or_else(|| MetaError::missing(path))
}

fn opt_array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Check<Option<&'a Vec<Value>>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(MetaError::invalid_parameter(format!(
            "Param {path} must be an array."
        ))),
    }
}

/// A required string; an empty (or blank) one counts as missing.
fn req_str<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Check<&'a str> {
    match opt_str(obj, key, path)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(MetaError::missing(path)),
    }
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Check<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(MetaError::invalid_parameter(format!(
            "Param {path} must be a string."
        ))),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str, path: &str) -> Check<()> {
    match obj.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(MetaError::invalid_parameter(format!(
            "Param {path} must be a boolean."
        ))),
    }
}

/// Limits count characters (Unicode scalar values), not bytes.
fn max_len(s: &str, max: usize, path: &str) -> Check<()> {
    let n = s.chars().count();
    if n > max {
        return Err(MetaError::bad_value(format!(
            "Param {path} must be at most {max} characters long - got {n}."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(v: Value) -> i64 {
        match check(v.to_string().as_bytes()) {
            Ok(_) => 0,
            Err(e) => e.code,
        }
    }

    fn text(body: &str) -> Value {
        json!({"messaging_product":"whatsapp","to":"+1 415 555 1234","type":"text","text":{"body":body}})
    }

    #[test]
    fn text_rules() {
        assert_eq!(code(text("hi")), 0);
        assert_eq!(code(text(&"x".repeat(4096))), 0);
        assert_eq!(code(text(&"é".repeat(4097))), 131009);
        assert_eq!(code(text("")), 131008);
        assert_eq!(
            code(json!({"messaging_product":"whatsapp","to":"14155551234","type":"text"})),
            131008
        );
        assert_eq!(
            code(json!({"messaging_product":"sms","to":"14155551234","text":{"body":"x"}})),
            100
        );
        assert_eq!(code(json!({"to":"14155551234","text":{"body":"x"}})), 100);
        assert_eq!(
            code(json!({"messaging_product":"whatsapp","type":"text","text":{"body":"x"}})),
            131008
        );
        assert_eq!(
            code(json!({"messaging_product":"whatsapp","to":"14155551234","type":"fax"})),
            100
        );
        assert_eq!(
            code(json!({"messaging_product":"whatsapp","to":"12ab","text":{"body":"x"}})),
            131009
        );
    }

    #[test]
    fn wa_id_is_digits() {
        let Request::Send(out) = check(text("hi").to_string().as_bytes()).unwrap() else {
            panic!("not a send");
        };
        assert_eq!(out.wa_id, "14155551234");
        assert_eq!(out.to_input, "+1 415 555 1234");
    }

    #[test]
    fn media_needs_id_or_link() {
        let m = |img: Value| json!({"messaging_product":"whatsapp","to":"14155551234","type":"image","image":img});
        assert_eq!(code(m(json!({"id":"1"}))), 0);
        assert_eq!(code(m(json!({"link":"https://example.com/a.png"}))), 0);
        assert_eq!(code(m(json!({"caption":"x"}))), 131008);
        assert_eq!(
            code(m(json!({"id":"1","link":"https://example.com/a.png"}))),
            131009
        );
        assert_eq!(code(m(json!({"link":"ftp://example.com/a.png"}))), 131009);
    }

    #[test]
    fn interactive_limits() {
        let buttons = |n: usize, title: &str| {
            let b: Vec<Value> = (0..n)
                .map(|i| json!({"type":"reply","reply":{"id":format!("b{i}"),"title":format!("{title}{i}")}}))
                .collect();
            json!({"messaging_product":"whatsapp","to":"14155551234","type":"interactive",
                   "interactive":{"type":"button","body":{"text":"pick"},"action":{"buttons":b}}})
        };
        assert_eq!(code(buttons(3, "ok")), 0);
        assert_eq!(code(buttons(4, "ok")), 131009);
        assert_eq!(code(buttons(0, "ok")), 131009);
        assert_eq!(code(buttons(1, &"t".repeat(20))), 131009);
        let rows: Vec<Value> = (0..11)
            .map(|i| json!({"id":format!("r{i}"),"title":"t"}))
            .collect();
        let list = json!({"messaging_product":"whatsapp","to":"14155551234","type":"interactive",
            "interactive":{"type":"list","body":{"text":"b"},"action":{"button":"go","sections":[{"title":"s","rows":rows}]}}});
        assert_eq!(code(list), 131009);
    }

    #[test]
    fn template_counts_body_params() {
        let t = json!({"messaging_product":"whatsapp","to":"14155551234","type":"template",
            "template":{"name":"x","language":{"code":"en_US"},"components":[
                {"type":"header","parameters":[{"type":"text","text":"h"}]},
                {"type":"body","parameters":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}});
        let Request::Send(out) = check(t.to_string().as_bytes()).unwrap() else {
            panic!("not a send");
        };
        assert_eq!(out.template.unwrap().body_params, 2);
        let no_lang = json!({"messaging_product":"whatsapp","to":"14155551234","type":"template","template":{"name":"x"}});
        assert_eq!(code(no_lang), 131008);
    }

    #[test]
    fn template_component_types_are_meta_s() {
        let with_type = |t: &str| {
            code(
                json!({"messaging_product":"whatsapp","to":"14155551234","type":"template",
                "template":{"name":"x","language":{"code":"en_US"},"components":[{"type":t}]}}),
            )
        };
        for ok in ["body", "HEADER", "carousel", "limited_time_offer"] {
            assert_eq!(with_type(ok), 0, "{ok}");
        }
        assert_eq!(with_type("bdy"), 100);
    }

    #[test]
    fn template_parameters_need_their_text() {
        let with = |component: Value| {
            json!({"messaging_product":"whatsapp","to":"14155551234","type":"template",
                "template":{"name":"x","language":{"code":"en_US"},"components":[component]}})
        };
        let body = |param: Value| with(json!({"type":"body","parameters":[param]}));
        let button = |param: Value| {
            with(json!({"type":"button","sub_type":"quick_reply","index":"0","parameters":[param]}))
        };
        assert_eq!(code(body(json!({"type":"text","text":"John"}))), 0);
        assert_eq!(code(body(json!({"type":"text","text":""}))), 131008);
        assert_eq!(code(body(json!({"type":"text"}))), 131008);
        assert_eq!(code(button(json!({"type":"text","text":true}))), 0);
        assert_eq!(code(button(json!({"type":"payload","payload":"P"}))), 0);
        assert_eq!(code(button(json!({"type":"payload","payload":""}))), 131008);
        assert_eq!(
            code(button(json!({"type":"coupon_code","coupon_code":""}))),
            131008
        );
        for kind in ["currency", "date_time"] {
            assert_eq!(
                code(body(
                    json!({"type":kind, kind:{"fallback_value":"$1","code":"USD","amount_1000":1000}})
                )),
                0
            );
            assert_eq!(
                code(body(json!({"type":kind, kind:{"fallback_value":""}}))),
                131008
            );
            assert_eq!(code(body(json!({"type":kind}))), 131008);
        }
        assert_eq!(code(body(json!("John"))), 100);
        // A parameter must say what it is, and a button which one it fills.
        assert_eq!(code(body(json!({"text":"John"}))), 131008);
        assert_eq!(code(with(json!({"type":"button","index":"0"}))), 131008);
        assert_eq!(
            code(with(json!({"type":"button","sub_type":"url"}))),
            131008
        );
        assert_eq!(
            code(with(
                json!({"type":"button","sub_type":"url","index":"first"})
            )),
            100
        );
        assert_eq!(
            code(with(json!({"type":"button","sub_type":"url","index":1}))),
            0
        );
        let header = |param: Value| with(json!({"type":"header","parameters":[param]}));
        assert_eq!(
            code(header(
                json!({"type":"image","image":{"link":"https://example.com/a.png"}})
            )),
            0
        );
        assert_eq!(code(header(json!({"type":"image","image":{}}))), 131008);
        assert_eq!(code(header(json!({"type":"video"}))), 131008);
        let err = check(
            body(json!({"type":"text","text":""}))
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        assert!(
            err.details
                .contains("template['components'][0]['parameters'][0]['text']"),
            "{}",
            err.details
        );
    }

    fn err(v: Value) -> MetaError {
        match check(v.to_string().as_bytes()) {
            Ok(r) => panic!("accepted {v}: {r:?}"),
            Err(e) => e,
        }
    }

    fn send(kind: &str, object: Value) -> Value {
        json!({"messaging_product":"whatsapp","to":"14155551234","type":kind, kind: object})
    }

    fn template(t: Value) -> Value {
        send("template", t)
    }

    /// A template with one component holding one parameter.
    fn with_param(component: &str, param: Value) -> Value {
        let c = match component {
            "button" => json!({"type":"button","sub_type":"url","index":"0","parameters":[param]}),
            _ => json!({"type":component,"parameters":[param]}),
        };
        template(json!({"name":"x","language":{"code":"en_US"},"components":[c]}))
    }

    /// Refused as Meta does: 100, `(#100) Unexpected key "key" on param "param".`
    #[track_caller]
    fn assert_unexpected(v: Value, key: &str, param: &str) {
        let e = err(v);
        assert_eq!(e.code, 100, "{e:?}");
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body()["error"]["message"],
            format!("(#100) Unexpected key \"{key}\" on param \"{param}\".")
        );
        assert_eq!(e.body()["error"]["type"], "OAuthException");
    }

    #[test]
    fn unknown_keys_of_simple_objects_are_refused() {
        assert_eq!(
            code(send("text", json!({"body":"hi","preview_url":true}))),
            0
        );
        assert_unexpected(
            send("text", json!({"body":"hi","previewurl":true})),
            "previewurl",
            "text",
        );
        let place = json!({"latitude":1,"longitude":2,"name":"HQ","address":"1 Way"});
        assert_eq!(code(send("location", place)), 0);
        assert_unexpected(
            send("location", json!({"latitude":1,"longitude":2,"lat":1})),
            "lat",
            "location",
        );
        let reaction = json!({"message_id":"wamid.x","emoji":"👍"});
        assert_eq!(code(send("reaction", reaction)), 0);
        assert_unexpected(
            send(
                "reaction",
                json!({"message_id":"wamid.x","emoji":"👍","emojii":"x"}),
            ),
            "emojii",
            "reaction",
        );
        let mut reply = send("text", json!({"body":"hi"}));
        reply["context"] = json!({"message_id":"wamid.x"});
        assert_eq!(code(reply.clone()), 0);
        reply["context"]["from"] = json!("14155551234");
        assert_unexpected(reply, "from", "context");
    }

    #[test]
    fn misspelt_keys_of_media_are_refused() {
        let audio = json!({"id":"1","voice":true});
        assert_eq!(code(send("audio", audio)), 0);
        let doc = json!({"link":"https://example.com/a.pdf","caption":"c","filename":"a.pdf"});
        assert_eq!(code(send("document", doc)), 0);
        assert_unexpected(
            send(
                "image",
                json!({"link":"https://example.com/a.png","lnk":"x"}),
            ),
            "lnk",
            "image",
        );
        // Meta still adds keys to media objects: one that is no typo passes, as at enqueue.
        let newer = json!({"link":"https://example.com/a.png","new_option":"x"});
        assert_eq!(code(send("image", newer)), 0);
        let header = |media: Value| {
            send(
                "interactive",
                json!({"type":"button","header":{"type":"image","image":media},
                "body":{"text":"pick"},
                "action":{"buttons":[{"type":"reply","reply":{"id":"a","title":"A"}}]}}),
            )
        };
        assert_eq!(code(header(json!({"id":"1"}))), 0);
        assert_unexpected(
            header(json!({"id":"1","iid":"x"})),
            "iid",
            "interactive['header']['image']",
        );
    }

    #[test]
    fn unknown_keys_of_templates_are_refused() {
        let full = json!({"name":"x","language":{"code":"en_US","policy":"deterministic"},
            "components":[{"type":"body","parameters":[]}]});
        assert_eq!(code(template(full)), 0);
        assert_unexpected(
            template(json!({"name":"x","language":{"code":"en_US"},"componets":[]})),
            "componets",
            "template",
        );
        assert_unexpected(
            template(
                json!({"name":"x","language":{"code":"en_US","policystring":"deterministic"}}),
            ),
            "policystring",
            "template['language']",
        );
        assert_unexpected(
            template(json!({"name":"x","language":{"code":"en_US"},
                "components":[{"type":"body","parameter":[]}]})),
            "parameter",
            "template['components'][0]",
        );
        let ppath = "template['components'][0]['parameters'][0]";
        let media = json!({"link":"https://example.com/a"});
        let params = [
            ("body", json!({"type":"text","text":"a"})),
            (
                "body",
                json!({"type":"currency","currency":{"fallback_value":"$1","code":"USD","amount_1000":1000}}),
            ),
            (
                "body",
                json!({"type":"date_time","date_time":{"fallback_value":"May 1"}}),
            ),
            ("header", json!({"type":"image","image":media})),
            ("header", json!({"type":"video","video":media})),
            ("header", json!({"type":"document","document":media})),
            (
                "header",
                json!({"type":"location","location":{"latitude":"1","longitude":"2"}}),
            ),
            ("button", json!({"type":"payload","payload":"P"})),
            ("button", json!({"type":"coupon_code","coupon_code":"C"})),
        ];
        for (component, param) in params {
            assert_eq!(code(with_param(component, param.clone())), 0, "{param}");
            let mut named = param.clone();
            named["parameter_name"] = json!("customer");
            assert_eq!(code(with_param(component, named)), 0, "{param}");
            let mut extra = param.clone();
            extra["value"] = json!("x");
            assert_unexpected(with_param(component, extra), "value", ppath);
        }
        // A text parameter may not carry another type's value.
        assert_unexpected(
            with_param("body", json!({"type":"text","text":"a","payload":"P"})),
            "payload",
            ppath,
        );
        // Newer parameter types are left lenient.
        let offer = json!({"type":"limited_time_offer",
            "limited_time_offer":{"expiration_time_ms":1_700_000_000_000_u64},"extra":1});
        assert_eq!(code(with_param("header", offer)), 0);
        let action = json!({"type":"action","action":{"flow_token":"t","flow_action_data":{}}});
        assert_eq!(code(with_param("button", action)), 0);
        // A carousel's cards, each with its own components.
        let carousel = json!({"type":"carousel","cards":[{"card_index":0,"components":[
            {"type":"header","parameters":[{"type":"image","image":{"id":"1"}}]}]}]});
        let t = json!({"name":"x","language":{"code":"en_US"},"components":[carousel]});
        assert_eq!(code(template(t)), 0);
    }

    #[test]
    fn unknown_keys_of_interactive_are_refused_at_its_top_only() {
        let buttons = |extra: Option<(&str, Value)>| {
            let mut i = json!({"type":"button","body":{"text":"pick"},"footer":{"text":"f"},
                "action":{"buttons":[{"type":"reply","reply":{"id":"a","title":"A"},"new":1}],
                          "new":1}});
            if let Some((k, v)) = extra {
                i[k] = v;
            }
            send("interactive", i)
        };
        assert_eq!(code(buttons(None)), 0);
        assert_unexpected(
            buttons(Some(("buttons", json!([])))),
            "buttons",
            "interactive",
        );
        // Contacts stay lenient inside.
        let contact = json!([{"name":{"formatted_name":"Ann","first_name":"Ann"},"birthday":"2000-01-01","new":1}]);
        assert_eq!(code(send("contacts", contact)), 0);
    }

    #[test]
    fn misspelt_top_level_keys_are_refused() {
        assert!(MESSAGE_TYPES.iter().all(|t| TOP_LEVEL_KEYS.contains(t)));
        let mut v = send("text", json!({"body":"hi"}));
        v["recipient_type"] = json!("individual");
        v["biz_opaque_callback_data"] = json!("seq:1");
        assert_eq!(code(v.clone()), 0);
        v["reciepient_type"] = json!("individual");
        let e = err(v);
        assert_eq!(e.code, 100);
        assert_eq!(
            e.body()["error"]["message"],
            "(#100) Unexpected key \"reciepient_type\" in the request body."
        );
        assert!(e.details.contains("recipient_type"), "{}", e.details);
        let read = json!({"messaging_product":"whatsapp","status":"read","message_id":"wamid.x",
            "typing_indicator":{"type":"text"}});
        assert_eq!(
            check(read.to_string().as_bytes()).unwrap(),
            Request::MarkRead
        );
        let read = json!({"messaging_product":"whatsapp","status":"read","message_id":"wamid.x",
            "typing_indicater":{"type":"text"}});
        assert_eq!(code(read), 100);
        // Meta adds request keys over time: one that is no typo passes, as at enqueue.
        let mut v = send("text", json!({"body":"hi"}));
        v["new_option"] = json!(1);
        assert_eq!(code(v), 0);
        // An echoed key is cut short.
        let long = "k".repeat(10_000);
        let mut text = json!({"body":"hi"});
        text[long.as_str()] = json!(1);
        assert!(err(send("text", text)).title.len() < 200);
    }

    #[test]
    fn at_most_257_contacts() {
        let contacts = |n: usize| {
            let c: Vec<Value> = (0..n)
                .map(|i| json!({"name":{"formatted_name":format!("C {i}"),"first_name":"C"}}))
                .collect();
            send("contacts", Value::Array(c))
        };
        assert_eq!(code(contacts(257)), 0);
        let e = err(contacts(258));
        assert_eq!(e.code, 131009);
        assert!(
            e.details.contains("contacts") && e.details.contains("258"),
            "{}",
            e.details
        );
    }

    #[test]
    fn captions_only_on_image_video_document() {
        let media = json!({"id":"1","caption":"look"});
        for kind in ["image", "video", "document"] {
            assert_eq!(code(send(kind, media.clone())), 0, "{kind}");
        }
        for kind in ["audio", "sticker"] {
            let e = err(send(kind, media.clone()));
            assert_eq!(e.code, 131009, "{kind}");
            assert!(
                e.details.contains(&format!("{kind}['caption']")),
                "{}",
                e.details
            );
        }
    }

    #[test]
    fn coordinates_stay_in_range() {
        let at = |lat: Value, lon: Value| send("location", json!({"latitude":lat,"longitude":lon}));
        assert_eq!(code(at(json!(90), json!(-180))), 0);
        assert_eq!(code(at(json!("-90.0"), json!(" 180 "))), 0);
        assert_eq!(code(at(json!(37.758056), json!("-122.425332"))), 0);
        for (lat, lon, param) in [
            (json!(90.0001), json!(0), "location['latitude']"),
            (json!("-91"), json!(0), "location['latitude']"),
            (json!(0), json!(180.5), "location['longitude']"),
            (json!(0), json!("-181"), "location['longitude']"),
            (json!("NaN"), json!(0), "location['latitude']"),
            (json!(0), json!("inf"), "location['longitude']"),
        ] {
            let e = err(at(lat, lon));
            assert_eq!(e.code, 131009, "{e:?}");
            assert!(e.details.contains(param), "{}", e.details);
        }
        assert_eq!(code(at(json!("north"), json!(0))), 100);
    }

    #[test]
    fn mark_read_is_recognised() {
        let v = json!({"messaging_product":"whatsapp","status":"read","message_id":"wamid.x"});
        assert_eq!(check(v.to_string().as_bytes()).unwrap(), Request::MarkRead);
    }
}
