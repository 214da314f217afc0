//! JSON that borrows from the text it was parsed from: what the enqueue path validates and
//! stores.
//!
//! serde_json's `Value` copies every key and string into an allocation of its own and sorts
//! each object into a B-tree, and the stored record then needs the message written out again.
//! Here strings without escapes are slices of the request body, objects keep their members in
//! order (a duplicate key keeps its last value, as with `Value`), numbers keep their text, and
//! the compact form is the members written back as they came (or the object's own text, when
//! it has no whitespace to drop). Parsing a ~170-byte template
//! send this way costs a fraction of building a `Value` (docs/PERFORMANCE.md, change 21).

mod parse;
mod write;

use std::borrow::Cow;

pub use parse::{parse, NotJson, MAX_DEPTH};

/// A JSON value whose strings borrow from the parsed text where they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number<'a>),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

impl<'a> Json<'a> {
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<Json<'a>>> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The compact JSON text of this value (no whitespace between tokens).
    pub fn to_compact(&self) -> String {
        let mut out = String::new();
        self.write_compact(&mut out);
        out
    }
}

/// A number as written in the text: JSON's grammar, and in range as serde_json reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number<'a>(&'a str);

impl Number<'_> {
    /// The text of the number, as written.
    pub fn as_text(&self) -> &str {
        self.0
    }

    /// Written as an integer, which serde_json reads as one (it reads `-0` as a float).
    fn is_integer(&self) -> bool {
        self.0 != "-0" && !self.0.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
    }

    /// The value if it is an integer that fits (as `serde_json::Number::as_u64`).
    pub fn as_u64(&self) -> Option<u64> {
        self.is_integer().then(|| self.0.parse().ok()).flatten()
    }

    /// The value if it is an integer that fits (as `serde_json::Number::as_i64`).
    pub fn as_i64(&self) -> Option<i64> {
        self.is_integer().then(|| self.0.parse().ok()).flatten()
    }

    /// The value as serde_json reads it: its float parsing rounds a little differently from
    /// the standard library's, and waq's answers must not depend on which parser ran.
    pub fn as_f64(&self) -> Option<f64> {
        match (self.as_u64(), self.as_i64()) {
            (Some(u), _) => Some(u as f64),
            (None, Some(i)) => Some(i as f64),
            (None, None) => serde_json::from_str(self.0).ok(),
        }
    }
}

/// An object's members in the order they were written, keys unique.
#[derive(Debug, Clone, Default)]
pub struct Object<'a> {
    members: Vec<(Cow<'a, str>, Json<'a>)>,
    /// The object's text when it already is its compact form (no whitespace between tokens,
    /// no repeated key): then writing it out is one copy.
    compact_text: Option<&'a str>,
}

/// Equal members, however they were written.
impl PartialEq for Object<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.members == other.members
    }
}

impl<'a> Object<'a> {
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.members.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(k, _)| k.as_ref())
    }
}

impl<'a> IntoIterator for Object<'a> {
    type Item = (Cow<'a, str>, Json<'a>);
    type IntoIter = std::vec::IntoIter<(Cow<'a, str>, Json<'a>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.members.into_iter()
    }
}

#[cfg(test)]
mod tests;
