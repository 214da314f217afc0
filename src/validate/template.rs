//! Template objects: `message.template` and `fallback_template`.

use crate::borrowed_json::Json;

use super::json::{self, child, item, quote, Path};
use super::{code, keys, media};
use crate::error::ApiError;

pub const MAX_TEMPLATE_NAME: usize = 512;
/// A text parameter's limit in Meta's API reference.
pub const MAX_PARAMETER_TEXT: usize = 32_768;
/// The most spaces in a row Meta takes in the text of a body or header parameter.
pub const MAX_PARAMETER_SPACES: usize = 4;

/// What Meta refuses in the text of a body or header parameter, if `text` has it: "Param text
/// cannot have new-line/tab characters or more than 4 consecutive spaces" (132018 since v23.0,
/// 100 before). The template's own text may have line breaks; its parameters may not.
pub fn parameter_layout_problem(text: &str) -> Option<&'static str> {
    let mut spaces = 0;
    for c in text.chars() {
        match c {
            '\n' | '\r' => return Some("a line break"),
            '\t' => return Some("a tab"),
            ' ' => {
                spaces += 1;
                if spaces > MAX_PARAMETER_SPACES {
                    return Some("more than 4 spaces in a row");
                }
            }
            _ => spaces = 0,
        }
    }
    None
}

/// Checks a template object `{name, language: {code, policy?}, components?}`. `field` is its path
/// (`message.template` or `fallback_template`).
pub fn template_object(v: &Json, field: &str) -> Result<(), ApiError> {
    template(v, &Path::Root(field))
}

pub(super) fn template(v: &Json, field: &Path) -> Result<(), ApiError> {
    let obj = json::object(v, field)?;
    json::known_keys(obj, field, "a template object", keys::TEMPLATE)?;
    let name = json::req_text(
        obj,
        field,
        "name",
        1,
        MAX_TEMPLATE_NAME,
        "the name of an approved template, e.g. \"order_update\"",
    )?;
    // WhatsApp Manager only creates names of this shape, so anything else cannot exist.
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        let npath = child(field, "name");
        return Err(ApiError::invalid(
            code::INVALID_TEMPLATE_NAME,
            &npath,
            format!(
                "`{npath}` {} cannot be a template name: names use only lowercase letters, digits \
                 and underscores; copy it from WhatsApp Manager (e.g. \"order_update\").",
                quote(name)
            ),
        ));
    }

    let language = json::req_object(
        obj,
        field,
        "language",
        "the template language, e.g. {\"code\": \"en_US\"}",
    )?;
    let lpath = child(field, "language");
    json::known_keys(language, &lpath, "a template's language", keys::LANGUAGE)?;
    let lang = json::req_str(
        language,
        &lpath,
        "code",
        "the language code, e.g. \"en_US\"",
    )?;
    language_code(lang, &child(&lpath, "code"))?;
    if let Some(policy) = json::opt_str(language, &lpath, "policy")? {
        if policy != "deterministic" {
            let ppath = child(&lpath, "policy");
            return Err(ApiError::invalid(
                code::INVALID_VALUE,
                &ppath,
                format!(
                    "`{ppath}` is {}; the only policy is \"deterministic\" (or leave it out).",
                    quote(policy)
                ),
            ));
        }
    }

    if let Some(components) = json::opt_array(obj, field, "components")? {
        let cpath = child(field, "components");
        for (i, c) in components.iter().enumerate() {
            component(c, &item(&cpath, i))?;
        }
    }
    Ok(())
}

fn component(v: &Json, path: &Path) -> Result<(), ApiError> {
    let obj = json::object(v, path)?;
    json::known_keys(obj, path, "a template component", keys::COMPONENT)?;
    let ctype = json::req_text(
        obj,
        path,
        "type",
        1,
        usize::MAX,
        "the component type, e.g. \"body\"",
    )?;
    if !keys::COMPONENT_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(ctype))
    {
        return Err(json::not_one_of(
            &child(path, "type"),
            ctype,
            "a template component type",
            keys::COMPONENT_TYPES,
        ));
    }
    if ctype.eq_ignore_ascii_case("button") {
        json::req_text(
            obj,
            path,
            "sub_type",
            1,
            usize::MAX,
            "the button kind, e.g. \"quick_reply\" or \"url\"",
        )?;
        let ipath = child(path, "index");
        let index = json::required(obj, path, "index", "the button's position, \"0\" to \"9\"")?;
        let ok = match index {
            Json::String(s) => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
            Json::Number(n) => n.as_u64().is_some(),
            _ => return Err(json::invalid_type(&ipath, "a string like \"0\"", index)),
        };
        if !ok {
            return Err(ApiError::invalid(
                code::INVALID_VALUE,
                &ipath,
                format!("`{ipath}` must be the button's position as digits, e.g. \"0\"."),
            ));
        }
    }
    if let Some(params) = json::opt_array(obj, path, "parameters")? {
        let ppath = child(path, "parameters");
        for (i, p) in params.iter().enumerate() {
            let pp = item(&ppath, i);
            let param = json::object(p, &pp)?;
            let ptype = json::req_text(
                param,
                &pp,
                "type",
                1,
                usize::MAX,
                "the parameter type, e.g. \"text\"",
            )?;
            parameter(param, &pp, ptype)?;
            if ctype.eq_ignore_ascii_case("body") || ctype.eq_ignore_ascii_case("header") {
                text_layout(param, &pp)?;
            }
        }
    }
    Ok(())
}

/// The part of a parameter Meta checks by its `type`. Meta refuses a parameter whose text is
/// empty (131008), so every kind that carries text must have some.
fn parameter(param: &json::Obj, pp: &Path, ptype: &str) -> Result<(), ApiError> {
    // A parameter holds its value under the key its type names (`{"type": "text", "text": …}`),
    // and optionally its name in a template with named parameters. Types waq does not know
    // are left to Meta.
    if keys::PARAMETER_TYPES.contains(&ptype) {
        json::known_keys(
            param,
            pp,
            &format!("a {ptype} parameter"),
            &["type", "parameter_name", ptype],
        )?;
    }
    match ptype {
        // Meta fetches a header's media when it sends the message: the same rules as a
        // media message's, or the send fails at Meta instead of at enqueue.
        "image" | "video" | "document" => {
            let media = json::req_object(
                param,
                pp,
                ptype,
                &format!("the {ptype} object with `id` or `link`"),
            )?;
            media::source(media, &child(pp, ptype))?;
        }
        "text" => {
            let tpath = child(pp, "text");
            match param.get("text") {
                None => return Err(json::missing(&tpath, "the text to put in its place")),
                Some(Json::String(s)) => json::chars(s, &tpath, 1, MAX_PARAMETER_TEXT)?,
                // Meta's own examples send quick-reply texts as booleans: left to Meta.
                Some(_) => {}
            }
        }
        "payload" => {
            json::req_text(param, pp, "payload", 1, usize::MAX, "the button's payload")?;
        }
        "coupon_code" => {
            json::req_text(param, pp, "coupon_code", 1, usize::MAX, "the coupon code")?;
        }
        "currency" | "date_time" => {
            let obj = json::req_object(
                param,
                pp,
                ptype,
                &format!("the {ptype} object with `fallback_value`"),
            )?;
            json::req_text(
                obj,
                &child(pp, ptype),
                "fallback_value",
                1,
                usize::MAX,
                "the text shown in its place, e.g. \"$100.99\"",
            )?;
        }
        _ => {}
    }
    Ok(())
}

/// A body or header parameter's text as Meta takes it: no line break, no tab, at most
/// [`MAX_PARAMETER_SPACES`] spaces in a row (a button's text is a URL suffix or a payload, with
/// rules of its own, left to Meta).
fn text_layout(param: &json::Obj, pp: &Path) -> Result<(), ApiError> {
    let Some(Json::String(text)) = param.get("text") else {
        return Ok(());
    };
    let Some(problem) = parameter_layout_problem(text) else {
        return Ok(());
    };
    let tpath = child(pp, "text");
    Err(ApiError::invalid(
        code::INVALID_VALUE,
        &tpath,
        format!(
            "`{tpath}` has {problem}: Meta refuses a template parameter whose text has a line \
             break, a tab or more than {MAX_PARAMETER_SPACES} spaces in a row (error 132018). \
             Put line breaks in the approved template itself, or replace them with a space."
        ),
    ))
}

/// Meta's codes are a language (`de`, `fil`) optionally followed by `_` and a region (`en_US`).
fn language_code(code_str: &str, path: &Path) -> Result<(), ApiError> {
    if is_language_code(code_str) {
        return Ok(());
    }
    // Suggest the likely meant form of `en-us`, `EN_us` and the like.
    let mut parts = code_str.splitn(2, ['-', '_']);
    let lang = parts.next().unwrap_or_default().to_ascii_lowercase();
    let fixed = match parts.next() {
        Some(region) => format!("{lang}_{}", region.to_ascii_uppercase()),
        None => lang,
    };
    let hint = if is_language_code(&fixed) {
        format!(" (did you mean \"{fixed}\"?)")
    } else {
        String::new()
    };
    Err(ApiError::invalid(
        code::INVALID_LANGUAGE_CODE,
        path,
        format!(
            "`{path}` {} is not a WhatsApp language code{hint}; codes look like \"en_US\", \
             \"pt_BR\" or \"de\", exactly as the template's language in WhatsApp Manager.",
            quote(code_str)
        ),
    ))
}

fn is_language_code(s: &str) -> bool {
    let (lang, region) = match s.split_once('_') {
        Some((l, r)) => (l, Some(r)),
        None => (s, None),
    };
    let lang_ok = (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase());
    let region_ok = match region {
        None => true,
        Some(r) => {
            (r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
                || (r.len() == 3 && r.bytes().all(|b| b.is_ascii_digit()))
        }
    };
    lang_ok && region_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes() {
        for ok in ["en", "de", "fil", "en_US", "pt_BR", "zh_HK", "es_419"] {
            assert!(is_language_code(ok), "{ok}");
        }
        for bad in [
            "", "e", "english", "en-US", "en_us", "EN", "en_USA", "en_", "_US", "en_U1",
        ] {
            assert!(!is_language_code(bad), "{bad}");
        }
    }
}
