//! The message object: its envelope (`type`, `context`, `biz_opaque_callback_data`) and the
//! simple types (text, location, contacts, reaction). Media, interactive and template objects
//! have their own files.

use crate::borrowed_json::Json;

use super::json::{self, child, invalid_type, item, not_allowed, Obj, Path};
use super::{code, interactive, keys, media, template};
use crate::error::ApiError;

/// The message types waq accepts in `message.type`.
pub use super::keys::MESSAGE_TYPES;

/// Fields of the Cloud API request that waq sets itself.
const ADDED_BY_WAQ: [&str; 3] = ["messaging_product", "to", "recipient_type"];

pub const MAX_TEXT_BODY: usize = 4096;
pub const MAX_BIZ_OPAQUE_CALLBACK_DATA: usize = 512;
pub const MAX_CONTACTS: usize = 257;

/// Checks a Cloud API message object (without `messaging_product`, `to`, `recipient_type`) and
/// returns its `type`. `field` is the object's path, normally `message`.
pub fn message_object(v: &Json, field: &str) -> Result<String, ApiError> {
    message(v, &Path::Root(field))
}

pub(super) fn message(v: &Json, field: &Path) -> Result<String, ApiError> {
    let obj = json::object(v, field)?;
    if let Some(key) = ADDED_BY_WAQ.iter().find(|k| obj.contains_key(k)) {
        return Err(not_allowed(
            &child(field, key),
            "waq adds messaging_product, recipient_type and to itself (the recipient comes from \
             the request's top-level `to`)",
        ));
    }
    // As at Meta, a message without `type` is a text message; given a `text` object, it is
    // sent as it is. Without one, the type is asked for rather than guessed.
    let kind = match obj.get("type") {
        None if obj.contains_key("text") => "text",
        _ => json::req_str(obj, field, "type", "the message type, e.g. \"text\"")?,
    };
    if !MESSAGE_TYPES.contains(&kind) {
        return Err(json::not_one_of(
            &child(field, "type"),
            kind,
            "a message type",
            &MESSAGE_TYPES,
        ));
    }
    let path = child(field, kind);
    let content = obj.get(kind).ok_or_else(|| {
        json::missing(
            &path,
            &format!("the {kind} object, since `{field}.type` is \"{kind}\""),
        )
    })?;
    if let Some(other) = MESSAGE_TYPES
        .iter()
        .find(|t| **t != kind && obj.contains_key(t))
    {
        return Err(not_allowed(
            &child(field, other),
            &format!("`{field}.type` is \"{kind}\", so only `{field}.{kind}` is sent"),
        ));
    }
    // Meta adds request fields over time, so only a misspelt one is refused here (the ones waq
    // adds itself included: `recipent_type` is a typo, not a new field).
    json::no_misspelt_keys(obj, field, "the message object", &keys::REQUEST)?;
    if let Some(ctx) = json::opt_object(obj, field, "context")? {
        let ctx_path = child(field, "context");
        json::known_keys(ctx, &ctx_path, "a reply's context", keys::CONTEXT)?;
        json::req_text(
            ctx,
            &ctx_path,
            "message_id",
            1,
            usize::MAX,
            "the wamid of the message to reply to",
        )?;
    }
    json::opt_text(
        obj,
        field,
        "biz_opaque_callback_data",
        0,
        MAX_BIZ_OPAQUE_CALLBACK_DATA,
    )?;

    match kind {
        "text" => text(content, &path)?,
        "image" | "audio" | "video" | "document" | "sticker" => media::media(content, &path, kind)?,
        "location" => location(content, &path)?,
        "contacts" => contacts(content, &path)?,
        "interactive" => interactive::interactive(content, &path)?,
        "reaction" => reaction(content, &path)?,
        "template" => template::template(content, &path)?,
        _ => {}
    }
    Ok(kind.to_string())
}

fn text(v: &Json, path: &Path) -> Result<(), ApiError> {
    let obj = json::object(v, path)?;
    json::known_keys(obj, path, "a text", keys::TEXT)?;
    json::req_text(obj, path, "body", 1, MAX_TEXT_BODY, "the text to send")?;
    json::opt_bool(obj, path, "preview_url")?;
    Ok(())
}

fn location(v: &Json, path: &Path) -> Result<(), ApiError> {
    let obj = json::object(v, path)?;
    json::known_keys(obj, path, "a location", keys::LOCATION)?;
    coordinate(obj, path, "latitude", 90.0)?;
    coordinate(obj, path, "longitude", 180.0)?;
    json::opt_str(obj, path, "name")?;
    json::opt_str(obj, path, "address")?;
    Ok(())
}

/// A number, or a numeric string (Meta's own schema types coordinates as strings), within
/// ±`limit` degrees.
fn coordinate(obj: &Obj, path: &Path, key: &str, limit: f64) -> Result<(), ApiError> {
    let field = child(path, key);
    let v = json::required(obj, path, key, &format!("the {key} in degrees"))?;
    let degrees = match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid_type(&field, "a number of degrees", v))?;
    if !(-limit..=limit).contains(&degrees) {
        return Err(ApiError::invalid(
            code::OUT_OF_RANGE,
            &field,
            format!(
                "`{field}` must be between -{limit} and {limit} degrees: check the coordinates."
            ),
        ));
    }
    Ok(())
}

fn contacts(v: &Json, path: &Path) -> Result<(), ApiError> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid_type(path, "an array of contact objects", v))?;
    json::count(list, path, 1, MAX_CONTACTS, "contacts")?;
    for (i, c) in list.iter().enumerate() {
        let cpath = item(path, i);
        let contact = json::object(c, &cpath)?;
        let name = json::req_object(contact, &cpath, "name", "the contact's name object")?;
        let npath = child(&cpath, "name");
        json::req_text(
            name,
            &npath,
            "formatted_name",
            1,
            usize::MAX,
            "the contact's full name as it should appear",
        )?;
        // Meta requires at least one name part besides formatted_name.
        const PARTS: [&str; 5] = ["first_name", "last_name", "middle_name", "prefix", "suffix"];
        for part in PARTS {
            json::opt_str(name, &npath, part)?;
        }
        if !PARTS.iter().any(|p| name.contains_key(p)) {
            return Err(json::missing(
                &child(&npath, "first_name"),
                "first_name or last_name next to formatted_name (WhatsApp needs at least one name part)",
            ));
        }
        for list_key in ["phones", "emails", "urls", "addresses"] {
            if let Some(entries) = json::opt_array(contact, &cpath, list_key)? {
                let lpath = child(&cpath, list_key);
                for (j, e) in entries.iter().enumerate() {
                    json::object(e, &item(&lpath, j))?;
                }
            }
        }
    }
    Ok(())
}

fn reaction(v: &Json, path: &Path) -> Result<(), ApiError> {
    let obj = json::object(v, path)?;
    json::known_keys(obj, path, "a reaction", keys::REACTION)?;
    json::req_text(
        obj,
        path,
        "message_id",
        1,
        usize::MAX,
        "the wamid of the message to react to",
    )?;
    // An empty emoji removes an earlier reaction, so only the type is checked.
    json::req_str(
        obj,
        path,
        "emoji",
        "the emoji, or \"\" to remove a reaction",
    )?;
    Ok(())
}
