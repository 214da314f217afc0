//! The parser: RFC 8259 JSON over bytes already checked to be UTF-8, accepting exactly what
//! serde_json accepts (the property tests in `tests.rs` hold the two side by side).
//!
//! It only says whether the text is JSON. Why it is not (the line, the column, the words) is
//! asked of serde_json, once, on the error path, so malformed requests get the same answer as
//! before.

use std::borrow::Cow;
use std::collections::HashSet;

use super::{Json, Number, Object};

/// Containers nested deeper than this are refused; serde_json's limit is the same.
pub const MAX_DEPTH: usize = 127;

/// The text is not JSON (or nests deeper than [`MAX_DEPTH`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

/// Objects with more members than this find duplicate keys through a hash set, not by
/// comparing each key with the ones before it.
const LINEAR_DEDUP_MAX: usize = 16;

/// Parses one JSON document (whitespace around it allowed, nothing else).
pub fn parse(bytes: &[u8]) -> Result<Json<'_>, NotJson> {
    let text = std::str::from_utf8(bytes).map_err(|_| NotJson)?;
    let mut parser = Parser {
        text,
        bytes,
        pos: 0,
        loose: 0,
    };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    match parser.pos == bytes.len() {
        true => Ok(value),
        false => Err(NotJson),
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Counts what makes text differ from its compact form (whitespace skipped, a repeated
    /// key merged): an object during which it did not move is its own compact text.
    loose: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        let before = self.pos;
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
        if self.pos != before {
            self.loose += 1;
        }
    }

    /// Consumes `byte` after optional whitespace.
    fn consume(&mut self, byte: u8) -> Result<(), NotJson> {
        self.skip_whitespace();
        match self.peek() == Some(byte) {
            true => {
                self.pos += 1;
                Ok(())
            }
            false => Err(NotJson),
        }
    }

    /// `depth` = containers open around this value.
    fn value(&mut self, depth: usize) -> Result<Json<'a>, NotJson> {
        self.skip_whitespace();
        match self.peek().ok_or(NotJson)? {
            b'{' => self.object(depth + 1).map(Json::Object),
            b'[' => self.array(depth + 1).map(Json::Array),
            b'"' => self.string().map(Json::String),
            b't' => self.literal("true", Json::Bool(true)),
            b'f' => self.literal("false", Json::Bool(false)),
            b'n' => self.literal("null", Json::Null),
            b'-' | b'0'..=b'9' => self.number().map(Json::Number),
            _ => Err(NotJson),
        }
    }

    fn literal(&mut self, word: &str, value: Json<'a>) -> Result<Json<'a>, NotJson> {
        match self.bytes[self.pos..].starts_with(word.as_bytes()) {
            true => {
                self.pos += word.len();
                Ok(value)
            }
            false => Err(NotJson),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Vec<Json<'a>>, NotJson> {
        if depth > MAX_DEPTH {
            return Err(NotJson);
        }
        self.pos += 1; // [
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(NotJson),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Object<'a>, NotJson> {
        if depth > MAX_DEPTH {
            return Err(NotJson);
        }
        let (start, loose) = (self.pos, self.loose);
        self.pos += 1; // {
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(self.finish_object(Vec::new(), start, loose));
        }
        // Room for the members of most objects in a send request from the start: growing
        // from nothing costs more than the allocation itself.
        let mut members: Vec<(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(4);
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(NotJson);
            }
            let key = self.string()?;
            self.consume(b':')?;
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(self.finish_object(members, start, loose));
                }
                _ => return Err(NotJson),
            }
        }
    }

    /// The object whose `{` was at `start`, ending before `self.pos`.
    fn finish_object(
        &mut self,
        members: Vec<(Cow<'a, str>, Json<'a>)>,
        start: usize,
        loose_before: usize,
    ) -> Object<'a> {
        let written = members.len();
        let members = last_of_each_key(members);
        if members.len() != written {
            self.loose += 1;
        }
        let compact = self.loose == loose_before;
        Object {
            members,
            compact_text: compact.then(|| &self.text[start..self.pos]),
        }
    }

    /// A string starting at its opening quote: a slice of the text unless it has escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, NotJson> {
        self.pos += 1; // "
        let start = self.pos;
        self.pos += plain_run(&self.bytes[self.pos..]);
        match self.peek().ok_or(NotJson)? {
            b'"' => {
                self.pos += 1;
                Ok(Cow::Borrowed(&self.text[start..self.pos - 1]))
            }
            b'\\' => self.escaped_string(start).map(Cow::Owned),
            _ => Err(NotJson),
        }
    }

    /// The rest of a string that has escapes, from `start` (its first character).
    fn escaped_string(&mut self, start: usize) -> Result<String, NotJson> {
        let mut out = String::from(&self.text[start..self.pos]);
        loop {
            let run = self.pos;
            self.pos += plain_run(&self.bytes[self.pos..]);
            out.push_str(&self.text[run..self.pos]);
            match self.peek().ok_or(NotJson)? {
                b'"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.pos += 1;
                    let escape = self.peek().ok_or(NotJson)?;
                    self.pos += 1;
                    out.push(match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(NotJson),
                    });
                }
                _ => return Err(NotJson),
            }
        }
    }

    /// The character of a `\uXXXX` escape (after the `u`), a surrogate pair taking two.
    fn unicode_escape(&mut self) -> Result<char, NotJson> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(NotJson);
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(NotJson);
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(NotJson),
            _ => first,
        };
        char::from_u32(code).ok_or(NotJson)
    }

    fn hex4(&mut self) -> Result<u32, NotJson> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(NotJson)?;
        let mut code = 0;
        for &d in digits {
            let nibble = (d as char).to_digit(16).ok_or(NotJson)?;
            code = code * 16 + nibble;
        }
        self.pos += 4;
        Ok(code)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, finite as an `f64`.
    fn number(&mut self) -> Result<Number<'a>, NotJson> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(NotJson),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.at_least_one_digit()?;
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.at_least_one_digit()?;
            integer = false;
        }
        let number = Number(&self.text[start..self.pos]);
        // Integers beyond 64 bits are read as floats, as serde_json does; it refuses those
        // past f64's range (rounded its way).
        let fits = integer && (number.as_u64().is_some() || number.as_i64().is_some());
        if !fits && number.as_f64().is_none() {
            return Err(NotJson);
        }
        Ok(number)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn at_least_one_digit(&mut self) -> Result<(), NotJson> {
        let before = self.pos;
        self.digits();
        match self.pos > before {
            true => Ok(()),
            false => Err(NotJson),
        }
    }
}

/// How many bytes from the start of `bytes` need no attention inside a string: no quote, no
/// backslash, no control character. Eight bytes at a time: strings are most of a request.
fn plain_run(bytes: &[u8]) -> usize {
    let mut done = 0;
    loop {
        let rest = &bytes[done..];
        let word = match rest.first_chunk::<8>() {
            Some(eight) => *eight,
            None => {
                // Past the end reads as a quote, so the run stops there.
                let mut padded = [b'"'; 8];
                padded[..rest.len()].copy_from_slice(rest);
                padded
            }
        };
        let found = needs_attention(u64::from_le_bytes(word));
        if found != 0 {
            // The lowest flagged byte is the first one (a flag can spill only into the bytes
            // after a true one).
            return done + (found.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
}

/// The high bit of each byte of `x` that is a quote, a backslash or below 0x20 (and maybe of
/// bytes after such a byte).
fn needs_attention(x: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let quote = has_zero_byte(x ^ u64::from_ne_bytes([b'"'; 8]));
    let backslash = has_zero_byte(x ^ u64::from_ne_bytes([b'\\'; 8]));
    // Subtracting 0x20 borrows into the high bit of the bytes below 0x20 (those of 0x80 and
    // more are masked off by `!x`).
    let control = x.wrapping_sub(u64::from_ne_bytes([0x20; 8])) & !x & HIGHS;
    quote | backslash | control
}

/// Drops all but the last value of a repeated key, where that key first stood: what
/// `serde_json::Map` keeps (the order aside, which a `Map` sorts).
fn last_of_each_key<'a>(
    mut members: Vec<(Cow<'a, str>, Json<'a>)>,
) -> Vec<(Cow<'a, str>, Json<'a>)> {
    let has_duplicates = if members.len() <= LINEAR_DEDUP_MAX {
        members
            .iter()
            .enumerate()
            .any(|(i, (k, _))| members[..i].iter().any(|(earlier, _)| earlier == k))
    } else {
        let mut seen = HashSet::with_capacity(members.len());
        !members.iter().all(|(k, _)| seen.insert(k.as_ref()))
    };
    if !has_duplicates {
        return members;
    }
    let mut kept: Vec<(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(members.len());
    let mut slot_of: std::collections::HashMap<Cow<'a, str>, usize> =
        std::collections::HashMap::with_capacity(members.len());
    for (key, value) in members.drain(..) {
        match slot_of.get(&key) {
            Some(&slot) => kept[slot].1 = value,
            None => {
                slot_of.insert(key.clone(), kept.len());
                kept.push((key, value));
            }
        }
    }
    kept
}
