//! Interactive messages: reply buttons, lists, call-to-action URLs, flows, location requests,
//! product and catalog messages.

use crate::borrowed_json::Json;

use super::json::{self, child, item, not_allowed, quote, Obj, Path};
use super::{code, keys, link, media};
use crate::error::ApiError;

/// The values of `interactive.type` waq accepts.
pub const INTERACTIVE_TYPES: [&str; 9] = [
    "button",
    "list",
    "cta_url",
    "flow",
    "location_request_message",
    "product",
    "product_list",
    "catalog_message",
    "call_permission_request",
];

const HEADER_TYPES: [&str; 4] = ["text", "image", "video", "document"];

pub const MAX_BUTTONS: usize = 3;
pub const MAX_BUTTON_TITLE: usize = 20;
pub const MAX_BUTTON_ID: usize = 256;
pub const MAX_BODY: usize = 1024;
pub const MAX_LIST_BODY: usize = 4096;
pub const MAX_FOOTER: usize = 60;
pub const MAX_HEADER_TEXT: usize = 60;
pub const MAX_LIST_BUTTON: usize = 20;
pub const MAX_SECTIONS: usize = 10;
pub const MAX_ROWS: usize = 10;
pub const MAX_ROW_TITLE: usize = 24;
pub const MAX_ROW_ID: usize = 200;
pub const MAX_ROW_DESCRIPTION: usize = 72;
pub const MAX_SECTION_TITLE: usize = 24;
pub const MAX_CTA_DISPLAY_TEXT: usize = 20;
pub const MAX_FLOW_CTA: usize = 30;
pub const MAX_PRODUCTS: usize = 30;

pub(super) fn interactive(v: &Json, path: &Path) -> Result<(), ApiError> {
    let obj = json::object(v, path)?;
    json::known_keys(obj, path, "an interactive object", keys::INTERACTIVE)?;
    let kind = json::req_str(obj, path, "type", "the interactive type, e.g. \"button\"")?;
    if !INTERACTIVE_TYPES.contains(&kind) {
        return Err(json::not_one_of(
            &child(path, "type"),
            kind,
            "an interactive type",
            &INTERACTIVE_TYPES,
        ));
    }
    let action = json::req_object(
        obj,
        path,
        "action",
        "the action object of this interactive type",
    )?;
    let apath = child(path, "action");

    header(obj, path, kind)?;
    let body_max = if kind == "list" {
        MAX_LIST_BODY
    } else {
        MAX_BODY
    };
    match json::opt_object(obj, path, "body")? {
        Some(body) => {
            json::req_text(
                body,
                &child(path, "body"),
                "text",
                1,
                body_max,
                "the body text",
            )?;
        }
        // Only single-product messages may go without a body.
        None if kind != "product" => {
            return Err(json::missing(
                &child(path, "body"),
                "a body like {\"text\": \"...\"}, which this interactive type requires",
            ))
        }
        None => {}
    }
    if let Some(footer) = json::opt_object(obj, path, "footer")? {
        json::req_text(
            footer,
            &child(path, "footer"),
            "text",
            1,
            MAX_FOOTER,
            "the footer text",
        )?;
    }

    match kind {
        "button" => buttons(action, &apath),
        "list" => list(action, &apath),
        "cta_url" => cta_url(action, &apath),
        "flow" => flow(action, &apath),
        "location_request_message" => action_name(action, &apath, "send_location"),
        "catalog_message" => action_name(action, &apath, "catalog_message"),
        "call_permission_request" => action_name(action, &apath, "call_permission_request"),
        "product" => product(action, &apath),
        "product_list" => product_list(action, &apath),
        _ => Ok(()),
    }
}

fn header(obj: &Obj, path: &Path, kind: &str) -> Result<(), ApiError> {
    let hpath = child(path, "header");
    let Some(h) = json::opt_object(obj, path, "header")? else {
        if kind == "product_list" {
            return Err(json::missing(
                &hpath,
                "a text header like {\"type\": \"text\", \"text\": \"...\"}, which product lists require",
            ));
        }
        return Ok(());
    };
    if kind == "product" {
        return Err(not_allowed(
            &hpath,
            "single-product messages cannot have a header",
        ));
    }
    let htype = json::req_str(h, &hpath, "type", "the header type, e.g. \"text\"")?;
    let text_only = matches!(kind, "list" | "product_list");
    if !HEADER_TYPES.contains(&htype) || (text_only && htype != "text") {
        let tpath = child(&hpath, "type");
        let allowed = if text_only {
            "\"text\"".to_string()
        } else {
            HEADER_TYPES.join(", ")
        };
        return Err(ApiError::invalid(
            code::INVALID_VALUE,
            &tpath,
            format!(
                "`{tpath}` {} is not allowed for a {kind} message; use {allowed}.",
                quote(htype)
            ),
        ));
    }
    if htype == "text" {
        json::req_text(h, &hpath, "text", 1, MAX_HEADER_TEXT, "the header text")?;
        json::opt_text(h, &hpath, "sub_text", 0, MAX_HEADER_TEXT)?;
    } else {
        let mpath = child(&hpath, htype);
        let m = json::req_object(
            h,
            &hpath,
            htype,
            &format!("the {htype} object with `id` or `link`"),
        )?;
        media::source(m, &mpath)?;
    }
    Ok(())
}

fn buttons(action: &Obj, apath: &Path) -> Result<(), ApiError> {
    let list = json::req_array(action, apath, "buttons", "1 to 3 reply buttons")?;
    let bpath = child(apath, "buttons");
    json::count(list, &bpath, 1, MAX_BUTTONS, "buttons")?;
    let mut ids = Vec::new();
    let mut titles = Vec::new();
    for (i, b) in list.iter().enumerate() {
        let path = item(&bpath, i);
        let button = json::object(b, &path)?;
        let btype = json::req_str(button, &path, "type", "\"reply\"")?;
        if btype != "reply" {
            let tpath = child(&path, "type");
            return Err(ApiError::invalid(
                code::INVALID_VALUE,
                &tpath,
                format!(
                    "`{tpath}` is {}; reply buttons have type \"reply\".",
                    quote(btype)
                ),
            ));
        }
        let reply = json::req_object(button, &path, "reply", "{\"id\": ..., \"title\": ...}")?;
        let rpath = child(&path, "reply");
        let id = json::req_text(
            reply,
            &rpath,
            "id",
            1,
            MAX_BUTTON_ID,
            "the id your webhook gets back",
        )?;
        let id_path = child(&rpath, "id");
        if id.trim() != id {
            return Err(ApiError::invalid(
                code::INVALID_VALUE,
                &id_path,
                format!(
                    "`{id_path}` starts or ends with whitespace, which WhatsApp refuses: trim it."
                ),
            ));
        }
        json::unique(&mut ids, id, &id_path, "button id")?;
        let title = json::req_text(
            reply,
            &rpath,
            "title",
            1,
            MAX_BUTTON_TITLE,
            "the button label",
        )?;
        json::unique(&mut titles, title, &child(&rpath, "title"), "button title")?;
    }
    Ok(())
}

fn list(action: &Obj, apath: &Path) -> Result<(), ApiError> {
    json::req_text(
        action,
        apath,
        "button",
        1,
        MAX_LIST_BUTTON,
        "the label of the button that opens the list",
    )?;
    let sections = json::req_array(action, apath, "sections", "1 to 10 sections with rows")?;
    let spath = child(apath, "sections");
    json::count(sections, &spath, 1, MAX_SECTIONS, "sections")?;
    let mut ids = Vec::new();
    let mut total = 0;
    for (i, s) in sections.iter().enumerate() {
        let path = item(&spath, i);
        let section = json::object(s, &path)?;
        section_title(section, &path, sections.len())?;
        let rows = json::req_array(section, &path, "rows", "the rows of this section")?;
        let rows_path = child(&path, "rows");
        json::count(rows, &rows_path, 1, MAX_ROWS, "rows")?;
        total += rows.len();
        if total > MAX_ROWS {
            return Err(ApiError::invalid(
                code::TOO_MANY_ITEMS,
                &spath,
                format!(
                    "`{spath}` has more than {MAX_ROWS} rows in total; WhatsApp allows at most \
                     {MAX_ROWS} rows across all sections: remove some."
                ),
            ));
        }
        for (j, r) in rows.iter().enumerate() {
            let rpath = item(&rows_path, j);
            let row = json::object(r, &rpath)?;
            let id = json::req_text(
                row,
                &rpath,
                "id",
                1,
                MAX_ROW_ID,
                "the id your webhook gets back",
            )?;
            json::unique(&mut ids, id, &child(&rpath, "id"), "row id")?;
            json::req_text(row, &rpath, "title", 1, MAX_ROW_TITLE, "the row title")?;
            json::opt_text(row, &rpath, "description", 0, MAX_ROW_DESCRIPTION)?;
        }
    }
    Ok(())
}

/// Section titles are optional with one section and required with several.
fn section_title(section: &Obj, path: &Path, sections: usize) -> Result<(), ApiError> {
    if sections > 1 && !section.contains_key("title") {
        return Err(json::missing(
            &child(path, "title"),
            "a section title (WhatsApp requires one on every section when there are several)",
        ));
    }
    json::opt_text(section, path, "title", 1, MAX_SECTION_TITLE)?;
    Ok(())
}

/// `action.name` must be `name`.
fn action_name(action: &Obj, apath: &Path, name: &str) -> Result<(), ApiError> {
    let got = json::req_str(action, apath, "name", &format!("\"{name}\""))?;
    if got != name {
        let npath = child(apath, "name");
        return Err(ApiError::invalid(
            code::INVALID_VALUE,
            &npath,
            format!(
                "`{npath}` is {}; for this interactive type it must be \"{name}\".",
                quote(got)
            ),
        ));
    }
    Ok(())
}

fn cta_url(action: &Obj, apath: &Path) -> Result<(), ApiError> {
    action_name(action, apath, "cta_url")?;
    let params = json::req_object(
        action,
        apath,
        "parameters",
        "{\"display_text\": ..., \"url\": ...}",
    )?;
    let ppath = child(apath, "parameters");
    json::req_text(
        params,
        &ppath,
        "display_text",
        1,
        MAX_CTA_DISPLAY_TEXT,
        "the button label",
    )?;
    let url = json::req_str(params, &ppath, "url", "the https URL the button opens")?;
    link::https_url(
        url,
        &child(&ppath, "url"),
        "the button must open an https page",
    )?;
    Ok(())
}

fn flow(action: &Obj, apath: &Path) -> Result<(), ApiError> {
    action_name(action, apath, "flow")?;
    let params = json::req_object(action, apath, "parameters", "the flow parameters")?;
    let ppath = child(apath, "parameters");
    json::req_text(
        params,
        &ppath,
        "flow_message_version",
        1,
        usize::MAX,
        "\"3\"",
    )?;
    json::req_text(
        params,
        &ppath,
        "flow_cta",
        1,
        MAX_FLOW_CTA,
        "the button label",
    )?;
    let id = json::opt_text(params, &ppath, "flow_id", 1, usize::MAX)?;
    let name = json::opt_text(params, &ppath, "flow_name", 1, usize::MAX)?;
    match (id, name) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                code::CONFLICTING_FIELDS,
                &ppath,
                format!("`{ppath}` has both `flow_id` and `flow_name`: keep one."),
            ))
        }
        (None, None) => {
            return Err(json::missing(
                &child(&ppath, "flow_id"),
                "`flow_id` or `flow_name` to say which flow to open",
            ))
        }
        _ => {}
    }
    json::opt_str(params, &ppath, "flow_token")?;
    one_of(params, &ppath, "mode", &["draft", "published"])?;
    one_of(
        params,
        &ppath,
        "flow_action",
        &["navigate", "data_exchange"],
    )?;
    json::opt_object(params, &ppath, "flow_action_payload")?;
    Ok(())
}

/// An optional string among `allowed`.
fn one_of(obj: &Obj, path: &Path, key: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if let Some(v) = json::opt_str(obj, path, key)? {
        if !allowed.contains(&v) {
            let fpath = child(path, key);
            return Err(ApiError::invalid(
                code::INVALID_VALUE,
                &fpath,
                format!(
                    "`{fpath}` is {}; use one of {}.",
                    quote(v),
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn product(action: &Obj, apath: &Path) -> Result<(), ApiError> {
    json::req_text(action, apath, "catalog_id", 1, usize::MAX, "the catalog id")?;
    json::req_text(
        action,
        apath,
        "product_retailer_id",
        1,
        usize::MAX,
        "the product's retailer id",
    )?;
    Ok(())
}

fn product_list(action: &Obj, apath: &Path) -> Result<(), ApiError> {
    json::req_text(action, apath, "catalog_id", 1, usize::MAX, "the catalog id")?;
    let sections = json::req_array(action, apath, "sections", "1 to 10 sections of products")?;
    let spath = child(apath, "sections");
    json::count(sections, &spath, 1, MAX_SECTIONS, "sections")?;
    let mut total = 0;
    for (i, s) in sections.iter().enumerate() {
        let path = item(&spath, i);
        let section = json::object(s, &path)?;
        section_title(section, &path, sections.len())?;
        let items = json::req_array(
            section,
            &path,
            "product_items",
            "the products of this section",
        )?;
        let ipath = child(&path, "product_items");
        json::count(items, &ipath, 1, MAX_PRODUCTS, "products")?;
        total += items.len();
        if total > MAX_PRODUCTS {
            return Err(ApiError::invalid(
                code::TOO_MANY_ITEMS,
                &spath,
                format!(
                    "`{spath}` has more than {MAX_PRODUCTS} products in total; WhatsApp allows at \
                     most {MAX_PRODUCTS} across all sections: remove some."
                ),
            ));
        }
        for (j, p) in items.iter().enumerate() {
            let ppath = item(&ipath, j);
            let product = json::object(p, &ppath)?;
            json::req_text(
                product,
                &ppath,
                "product_retailer_id",
                1,
                usize::MAX,
                "the product's retailer id",
            )?;
        }
    }
    Ok(())
}
