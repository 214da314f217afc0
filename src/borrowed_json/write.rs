//! The compact text of a value: no whitespace between tokens, members in their order.

use std::borrow::Cow;
use std::fmt::Write;

use super::{Json, Object};

impl Json<'_> {
    /// Appends the compact JSON text of this value to `out`.
    pub fn write_compact(&self, out: &mut String) {
        write_value::<true>(self, out);
    }

    /// The compact text with every string escaped as serde_json writes it, whatever escapes
    /// the parsed text used (`\u00e9` becomes `é`): one text for one value. [`Self::to_compact`]
    /// copies an object already compact as it stands, escapes and all.
    pub fn to_compact_reescaped(&self) -> String {
        let mut out = String::new();
        write_value::<false>(self, &mut out);
        out
    }
}

/// `COPY_COMPACT`: an object that is its own compact text is copied as it stands.
fn write_value<const COPY_COMPACT: bool>(v: &Json<'_>, out: &mut String) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Number(n) => out.push_str(n.as_text()),
        Json::String(s) => write_string(s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value::<COPY_COMPACT>(item, out);
            }
            out.push(']');
        }
        Json::Object(o) => write_object::<COPY_COMPACT>(o, out),
    }
}

fn write_object<const COPY_COMPACT: bool>(o: &Object<'_>, out: &mut String) {
    if let Some(text) = o.compact_text.filter(|_| COPY_COMPACT) {
        out.push_str(text);
        return;
    }
    out.push('{');
    for (i, (key, value)) in o.members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(key, out);
        out.push(':');
        write_value::<COPY_COMPACT>(value, out);
    }
    out.push('}');
}

// The `Cow` itself is the point: borrowed means no escapes.
#[allow(clippy::ptr_arg)]
fn write_string(s: &Cow<'_, str>, out: &mut String) {
    out.push('"');
    match s {
        // A slice of the parsed text with no escapes in it: nothing in it needs one.
        Cow::Borrowed(plain) => out.push_str(plain),
        Cow::Owned(decoded) => escape_into(decoded, out),
    }
    out.push('"');
}

/// The escapes serde_json writes: the short ones, and `\u00XX` for other control characters.
fn escape_into(s: &str, out: &mut String) {
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let short = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        match short.is_empty() {
            true => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            false => out.push_str(short),
        }
        run = i + c.len_utf8();
    }
    out.push_str(&s[run..]);
}
