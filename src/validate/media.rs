//! Media objects: image, audio, video, document, sticker (and the media of interactive headers).

use crate::borrowed_json::Json;

use super::json::{self, child, not_allowed, Obj, Path};
use super::{code, keys, link};
use crate::error::ApiError;

pub const MAX_CAPTION: usize = 1024;

/// Checks the media object of a message of type `kind`.
pub(super) fn media(v: &Json, path: &Path, kind: &str) -> Result<(), ApiError> {
    let obj = json::object(v, path)?;
    // `caption` and `filename` where the kind has none are refused below, with the reason.
    source(obj, path)?;
    if matches!(kind, "image" | "video" | "document") {
        json::opt_text(obj, path, "caption", 0, MAX_CAPTION)?;
    } else if obj.contains_key("caption") {
        return Err(not_allowed(
            &child(path, "caption"),
            "WhatsApp shows captions only on images, videos and documents",
        ));
    }
    if kind == "document" {
        json::opt_text(obj, path, "filename", 1, usize::MAX)?;
    } else if obj.contains_key("filename") {
        return Err(not_allowed(
            &child(path, "filename"),
            "only documents have a file name",
        ));
    }
    Ok(())
}

/// Exactly one of `id` (an uploaded media id) or `link` (a public https URL), in a media
/// object of a message, an interactive header or a template parameter.
pub(super) fn source(obj: &Obj, path: &Path) -> Result<(), ApiError> {
    // Meta still adds keys here (`voice` for audio), so only a misspelt one is refused.
    json::no_misspelt_keys(obj, path, "a media object", keys::MEDIA)?;
    let id = json::opt_str(obj, path, "id")?;
    let link = json::opt_str(obj, path, "link")?;
    match (id, link) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            code::CONFLICTING_FIELDS,
            path,
            format!(
                "`{path}` has both `id` and `link`; WhatsApp takes exactly one: keep the uploaded \
                 media id or the https link, not both."
            ),
        )),
        (None, None) => Err(ApiError::invalid(
            code::MISSING_FIELD,
            path,
            format!(
                "`{path}` needs `id` (a media id from the upload endpoint) or `link` (a public \
                 https URL): add one."
            ),
        )),
        (Some(id), None) => {
            let field = child(path, "id");
            json::chars(id, &field, 1, usize::MAX)?;
            json::not_blank(id, &field, "a media id from the upload endpoint")
        }
        (None, Some(url)) => link::media_link(url, &child(path, "link")),
    }
}
