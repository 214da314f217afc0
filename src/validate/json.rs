//! Helpers to walk a JSON value while keeping the path of the current field, so every error
//! names exactly the field that is wrong and says what to do about it.

use crate::borrowed_json::{Json, Object};

use super::code;
use crate::error::ApiError;

pub(super) type Obj<'a> = Object<'a>;

/// The JSON path of the field being checked, e.g. `message.template.components[0]`: a chain
/// of borrowed parts on the stack, written out only when an error names the field. Valid
/// requests pass through dozens of fields, and formatting each path was a fifth of the cost of
/// checking them.
#[derive(Clone, Copy)]
pub(super) enum Path<'a> {
    Root(&'a str),
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Path::Root(s) => s.is_empty(),
            Path::Key(parent, key) => parent.is_empty() && key.is_empty(),
            Path::Index(..) => false,
        }
    }
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root(s) => f.write_str(s),
            // A key of the empty root path stands alone, not as `.key`.
            Path::Key(parent, key) if parent.is_empty() => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// The `field` of an error.
impl From<&Path<'_>> for String {
    fn from(path: &Path<'_>) -> String {
        path.to_string()
    }
}

/// `message` + `text` → `message.text`.
pub(super) fn child<'a>(path: &'a Path<'a>, key: &'a str) -> Path<'a> {
    Path::Key(path, key)
}

/// The path of an arbitrary key at the top level: as is when it is a plain name, else in
/// bracket notation (`["odd key"]`) so the path stays unambiguous and never empty.
pub(crate) fn key_path(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        key.to_string()
    } else {
        format!("[{}]", serde_json::Value::String(key.to_string()))
    }
}

/// `message.contacts` + 2 → `message.contacts[2]`.
pub(super) fn item<'a>(path: &'a Path<'a>, index: usize) -> Path<'a> {
    Path::Index(path, index)
}

/// The JSON type of `v` as a phrase for error messages.
pub(super) fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// User input echoed in a message, quoted and cut short so a huge value cannot bloat the answer.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

pub(super) fn invalid_type(path: &Path, expected: &str, got: &Json) -> ApiError {
    let advice = if got.is_null() {
        "; leave the field out instead of sending null"
    } else {
        ""
    };
    ApiError::invalid(
        code::INVALID_TYPE,
        path,
        format!(
            "`{path}` must be {expected}, but it is {}{advice}.",
            type_name(got)
        ),
    )
}

pub(super) fn missing(path: &Path, what: &str) -> ApiError {
    ApiError::invalid(
        code::MISSING_FIELD,
        path,
        format!("`{path}` is required: add {what}."),
    )
}

/// 422 `unknown_field` for the first member of `obj` (at `path`, `what` it is) not in `keys`:
/// Meta refuses a key it does not know ("Unexpected key", error 100), so a misspelt optional
/// key would otherwise fail at send time, or be dropped.
pub(super) fn known_keys(
    obj: &Obj,
    path: &Path,
    what: &str,
    keys: &[&str],
) -> Result<(), ApiError> {
    refuse_keys(obj, path, what, keys, |_| true)
}

/// As [`known_keys`], but for objects Meta still adds keys to (the message object, media): only
/// an unknown key that is probably a typo of one of `keys` is refused; others pass through.
pub(super) fn no_misspelt_keys(
    obj: &Obj,
    path: &Path,
    what: &str,
    keys: &[&str],
) -> Result<(), ApiError> {
    refuse_keys(obj, path, what, keys, |k| closest(k, keys).is_some())
}

/// The first key of `obj` not in `keys` that `refused` says no to, as `unknown_field`.
fn refuse_keys(
    obj: &Obj,
    path: &Path,
    what: &str,
    keys: &[&str],
    refused: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    match obj.keys().find(|k| !keys.contains(k) && refused(k)) {
        Some(key) => Err(unknown_key(path, key, what, keys)),
        None => Ok(()),
    }
}

fn unknown_key(path: &Path, key: &str, what: &str, keys: &[&str]) -> ApiError {
    let field = child(path, key);
    // `field` names the key whole; the sentence need not repeat a long one.
    let named = if key.chars().nth(MAX_KEY_SHOWN).is_some() {
        let place = if path.is_empty() {
            "at the top of the request".to_string()
        } else {
            format!("in `{path}`")
        };
        format!("The key {} {place}", quote(key))
    } else {
        format!("`{field}`")
    };
    ApiError::invalid(
        super::code::UNKNOWN_FIELD,
        &field,
        format!(
            "{named} is not a field of {what}{}; its fields are {}.",
            did_you_mean(key, keys),
            keys.join(", ")
        ),
    )
}

/// The longest unknown key an error message repeats whole.
const MAX_KEY_SHOWN: usize = 64;

pub(super) fn not_allowed(path: &Path, why: &str) -> ApiError {
    ApiError::invalid(
        code::FIELD_NOT_ALLOWED,
        path,
        format!("`{path}` is not allowed here: {why}; remove it."),
    )
}

/// Expects `v` to be an object.
pub(super) fn object<'a>(v: &'a Json<'a>, path: &Path) -> Result<&'a Obj<'a>, ApiError> {
    v.as_object()
        .ok_or_else(|| invalid_type(path, "an object", v))
}

/// A required member of any type.
pub(super) fn required<'a>(
    o: &'a Obj<'a>,
    path: &Path,
    key: &str,
    what: &str,
) -> Result<&'a Json<'a>, ApiError> {
    o.get(key).ok_or_else(|| missing(&child(path, key), what))
}

pub(super) fn req_str<'a>(
    o: &'a Obj<'a>,
    path: &Path,
    key: &str,
    what: &str,
) -> Result<&'a str, ApiError> {
    let v = required(o, path, key, what)?;
    v.as_str()
        .ok_or_else(|| invalid_type(&child(path, key), "a string", v))
}

pub(super) fn opt_str<'a>(
    o: &'a Obj<'a>,
    path: &Path,
    key: &str,
) -> Result<Option<&'a str>, ApiError> {
    match o.get(key) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(v) => Err(invalid_type(&child(path, key), "a string", v)),
    }
}

pub(super) fn req_object<'a>(
    o: &'a Obj<'a>,
    path: &Path,
    key: &str,
    what: &str,
) -> Result<&'a Obj<'a>, ApiError> {
    let v = required(o, path, key, what)?;
    object(v, &child(path, key))
}

pub(super) fn opt_object<'a>(
    o: &'a Obj<'a>,
    path: &Path,
    key: &str,
) -> Result<Option<&'a Obj<'a>>, ApiError> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => object(v, &child(path, key)).map(Some),
    }
}

pub(super) fn req_array<'a>(
    o: &'a Obj<'a>,
    path: &Path,
    key: &str,
    what: &str,
) -> Result<&'a [Json<'a>], ApiError> {
    let v = required(o, path, key, what)?;
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| invalid_type(&child(path, key), "an array", v))
}

pub(super) fn opt_array<'a>(
    o: &'a Obj<'a>,
    path: &Path,
    key: &str,
) -> Result<Option<&'a [Json<'a>]>, ApiError> {
    match o.get(key) {
        None => Ok(None),
        Some(Json::Array(a)) => Ok(Some(a)),
        Some(v) => Err(invalid_type(&child(path, key), "an array", v)),
    }
}

pub(super) fn opt_bool(o: &Obj, path: &Path, key: &str) -> Result<Option<bool>, ApiError> {
    match o.get(key) {
        None => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(invalid_type(
            &child(path, key),
            "a boolean (true or false)",
            v,
        )),
    }
}

/// Length of `s` in characters (Unicode scalar values), which is how WhatsApp counts its limits.
pub(super) fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Checks that `s` has between `min` and `max` characters.
pub(super) fn chars(s: &str, path: &Path, min: usize, max: usize) -> Result<(), ApiError> {
    if min > 0 && s.is_empty() {
        // usize::MAX stands for "no limit", which is no length to suggest.
        let message = if max == usize::MAX {
            format!("`{path}` must not be empty: give it a value.")
        } else {
            format!("`{path}` must not be empty: give it a value of 1 to {max} characters.")
        };
        return Err(ApiError::invalid(code::EMPTY_VALUE, path, message));
    }
    // A string has at most as many characters as bytes, so short strings skip the count.
    if s.len() <= max && min <= 1 {
        return Ok(());
    }
    let len = char_len(s);
    if len > max {
        return Err(ApiError::invalid(
            code::TOO_LONG,
            path,
            format!(
                "`{path}` is {len} characters long, over WhatsApp's limit of {max}: shorten it."
            ),
        ));
    }
    if len < min {
        return Err(ApiError::invalid(
            code::EMPTY_VALUE,
            path,
            format!("`{path}` has {len} characters; it needs at least {min}: lengthen it."),
        ));
    }
    Ok(())
}

/// A required string of `min..=max` characters.
pub(super) fn req_text<'a>(
    o: &'a Obj<'a>,
    path: &Path,
    key: &str,
    min: usize,
    max: usize,
    what: &str,
) -> Result<&'a str, ApiError> {
    let s = req_str(o, path, key, what)?;
    let field = child(path, key);
    chars(s, &field, min, max)?;
    if min > 0 {
        not_blank(s, &field, what)?;
    }
    Ok(s)
}

/// Meta takes a required text of white space alone for a missing one (131008).
pub(super) fn not_blank(s: &str, field: &Path, what: &str) -> Result<(), ApiError> {
    if is_blank(s) {
        return Err(ApiError::invalid(
            code::EMPTY_VALUE,
            field,
            format!(
                "`{field}` is only white space, which Meta refuses as no value: give it {what}."
            ),
        ));
    }
    Ok(())
}

/// Whether `s` is white space alone. Most texts start with a printable ASCII character, which
/// settles it without decoding (every request checks several).
fn is_blank(s: &str) -> bool {
    match s.as_bytes().first() {
        Some(&b) if b.is_ascii() && !matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ') => {
            false
        }
        _ => s.trim().is_empty(),
    }
}

/// An optional string of `min..=max` characters.
pub(super) fn opt_text<'a>(
    o: &'a Obj<'a>,
    path: &Path,
    key: &str,
    min: usize,
    max: usize,
) -> Result<Option<&'a str>, ApiError> {
    let s = opt_str(o, path, key)?;
    if let Some(s) = s {
        chars(s, &child(path, key), min, max)?;
    }
    Ok(s)
}

/// Checks the number of items of an array.
pub(super) fn count(
    items: &[Json],
    path: &Path,
    min: usize,
    max: usize,
    what: &str,
) -> Result<(), ApiError> {
    let n = items.len();
    if n < min {
        return Err(ApiError::invalid(
            code::TOO_FEW_ITEMS,
            path,
            format!("`{path}` has {n} {what}; it needs at least {min}: add more."),
        ));
    }
    if n > max {
        return Err(ApiError::invalid(
            code::TOO_MANY_ITEMS,
            path,
            format!("`{path}` has {n} {what}; WhatsApp allows at most {max}: remove some."),
        ));
    }
    Ok(())
}

/// Refuses a value seen before among siblings (button titles, row ids).
pub(super) fn unique<'a>(
    seen: &mut Vec<&'a str>,
    value: &'a str,
    path: &Path,
    what: &str,
) -> Result<(), ApiError> {
    if seen.contains(&value) {
        return Err(ApiError::invalid(
            code::DUPLICATE_VALUE,
            path,
            format!(
                "`{path}` repeats the {what} {}; each {what} must be unique: change it.",
                quote(value)
            ),
        ));
    }
    seen.push(value);
    Ok(())
}

/// The candidate closest to `input` within a small edit distance, to suggest a fix for a typo.
pub(super) fn closest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // Long inputs are no typo of a short name; skipping them also bounds the work.
    if input.len() > 64 {
        return None;
    }
    let input = input.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&input, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// `field` holds `value`, which is none of `candidates` (`what`, e.g. "a message type").
pub(super) fn not_one_of(field: &Path, value: &str, what: &str, candidates: &[&str]) -> ApiError {
    ApiError::invalid(
        code::INVALID_VALUE,
        field,
        format!(
            "`{field}` {} is not {what}{}; use one of {}.",
            quote(value),
            did_you_mean(value, candidates),
            candidates.join(", ")
        ),
    )
}

/// " (did you mean `x`?)" or nothing.
pub(crate) fn did_you_mean(input: &str, candidates: &[&str]) -> String {
    closest(input, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_name_only_real_limits() {
        let path = Path::Root("message.context.message_id");
        let err = chars("", &path, 1, usize::MAX).unwrap_err();
        assert_eq!(
            err.message,
            "`message.context.message_id` must not be empty: give it a value."
        );
        let err = chars("", &path, 1, 20).unwrap_err();
        assert!(
            err.message.ends_with("a value of 1 to 20 characters."),
            "{err}"
        );
    }

    #[test]
    fn paths_compose() {
        let root = Path::Root("");
        assert_eq!(child(&root, "to").to_string(), "to");
        assert_eq!(child(&child(&root, ""), "to").to_string(), "to");
        let message = Path::Root("message");
        assert_eq!(child(&message, "text").to_string(), "message.text");
        let contacts = child(&message, "contacts");
        let second = item(&contacts, 2);
        assert_eq!(second.to_string(), "message.contacts[2]");
        assert_eq!(
            child(&second, "name").to_string(),
            "message.contacts[2].name"
        );
        assert_eq!(item(&root, 0).to_string(), "[0]");
        assert_eq!(child(&item(&root, 0), "to").to_string(), "[0].to");
        assert_eq!(String::from(&second), "message.contacts[2]");
        assert_eq!(key_path("recipient"), "recipient");
        assert_eq!(key_path(""), "[\"\"]");
        assert_eq!(key_path("a.b \""), "[\"a.b \\\"\"]");
    }

    #[test]
    fn closest_suggests_typos_only() {
        let names = ["idempotency_key", "priority", "to", "send_at"];
        assert_eq!(closest("idempotancy_key", &names), Some("idempotency_key"));
        assert_eq!(closest("Priority", &names), Some("priority"));
        assert_eq!(closest("sendat", &names), Some("send_at"));
        assert_eq!(closest("xyz", &names), None);
        assert_eq!(closest("t", &names), Some("to"));
        assert_eq!(closest("x", &names), None);
    }

    #[test]
    fn quote_cuts_long_values() {
        assert_eq!(quote("ab"), "\"ab\"");
        let long = "é".repeat(100);
        let q = quote(&long);
        assert!(q.ends_with('…'));
        assert_eq!(q.chars().filter(|c| *c == 'é').count(), 40);
    }

    #[test]
    fn chars_counts_characters_not_bytes() {
        let four_emoji = "😀😀😀😀";
        assert!(chars(four_emoji, &Path::Root("f"), 1, 4).is_ok());
        let err = chars(four_emoji, &Path::Root("f"), 1, 3).unwrap_err();
        assert_eq!(err.code, code::TOO_LONG);
        assert_eq!(
            chars("", &Path::Root("f"), 1, 3).unwrap_err().code,
            code::EMPTY_VALUE
        );
        assert!(chars("", &Path::Root("f"), 0, 3).is_ok());
    }
}
