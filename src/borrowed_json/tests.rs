//! The parser held side by side with serde_json: it must accept exactly the texts
//! `serde_json::from_slice::<Value>` accepts, and its compact text must read back (through
//! serde_json) as the same `Value` serde_json makes of the original.

use super::*;

use std::borrow::Cow;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const TEMPLATE_SEND: &str = r#"{"to":"+14150000007","message":{"type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}},"metadata":{"order":7},"send_at":"2026-11-26T10:00:00Z"}"#;

fn serde_parse(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(bytes).ok()
}

/// What serde_json makes of the compact text of `json`.
fn compact_as_value(json: &Json<'_>) -> Value {
    let compact = json.to_compact();
    serde_json::from_str::<Value>(&compact)
        .unwrap_or_else(|e| panic!("serde_json refuses the compact text {compact:?}: {e}"))
}

fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("bytes {bytes:?}"),
    }
}

/// The contract for one text: the parser accepts it exactly when serde_json does, and when
/// both do, serde_json reads the compact text back as the same value; the compact text is
/// also a fixed point (parsing it and writing it again gives it back).
fn agreement(bytes: &[u8]) -> Result<(), String> {
    let ours = parse(bytes);
    let theirs = serde_json::from_slice::<Value>(bytes);
    match (&ours, &theirs) {
        (Ok(json), Ok(value)) => {
            let compact = json.to_compact();
            let back = serde_json::from_str::<Value>(&compact).map_err(|e| {
                format!(
                    "{}: serde_json refuses the compact text {compact:?}: {e}",
                    show(bytes)
                )
            })?;
            if &back != value {
                return Err(format!(
                    "{}: compact text {compact:?} reads back as {back:?}, serde_json read {value:?}",
                    show(bytes)
                ));
            }
            let again = parse(compact.as_bytes())
                .map_err(|_| format!("{}: compact text {compact:?} refused", show(bytes)))?
                .to_compact();
            if again != compact {
                return Err(format!(
                    "{}: compact text {compact:?} is written again as {again:?}",
                    show(bytes)
                ));
            }
            Ok(())
        }
        (Err(_), Err(_)) => Ok(()),
        (Ok(json), Err(e)) => Err(format!(
            "{}: accepted as {json:?}, serde_json refuses it: {e}",
            show(bytes)
        )),
        (Err(_), Ok(value)) => Err(format!(
            "{}: refused, serde_json accepts it as {value:?}",
            show(bytes)
        )),
    }
}

fn assert_agreement(bytes: &[u8]) {
    if let Err(msg) = agreement(bytes) {
        panic!("{msg}");
    }
}

/// Every disagreement over a list of texts, so one failing test names all of them.
fn disagreements<'t>(texts: impl IntoIterator<Item = &'t [u8]>) -> Vec<String> {
    texts
        .into_iter()
        .filter_map(|t| agreement(t).err())
        .collect()
}

/// How a number's accessors differ from serde_json's for the same text (both accepting it).
fn number_accessor_differences(text: &str) -> Vec<String> {
    let (Ok(Json::Number(ours)), Some(Value::Number(theirs))) =
        (parse(text.as_bytes()), serde_parse(text.as_bytes()))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if ours.as_u64() != theirs.as_u64() {
        out.push(format!(
            "{text:?}: as_u64 {:?}, serde_json {:?}",
            ours.as_u64(),
            theirs.as_u64()
        ));
    }
    if ours.as_i64() != theirs.as_i64() {
        out.push(format!(
            "{text:?}: as_i64 {:?}, serde_json {:?}",
            ours.as_i64(),
            theirs.as_i64()
        ));
    }
    if ours.as_f64().map(f64::to_bits) != theirs.as_f64().map(f64::to_bits) {
        out.push(format!(
            "{text:?}: as_f64 {:?}, serde_json {:?}",
            ours.as_f64(),
            theirs.as_f64()
        ));
    }
    out
}

fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

fn no_failure_files(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A failing case is printed; nothing is written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Unit tests: the template send body
// ---------------------------------------------------------------------------------------------

#[test]
fn template_send_parses_in_order_with_borrowed_strings() {
    let json = parse(TEMPLATE_SEND.as_bytes()).expect("the template send body is JSON");
    let top = json.as_object().expect("an object");
    assert_eq!(
        top.keys().collect::<Vec<_>>(),
        ["to", "message", "metadata", "send_at"]
    );
    assert_eq!(top.len(), 4);
    assert!(!top.is_empty());
    assert!(top.contains_key("send_at"));
    assert!(!top.contains_key("template"));

    assert!(matches!(
        top.get("to"),
        Some(Json::String(Cow::Borrowed("+14150000007")))
    ));
    assert!(matches!(
        top.get("send_at"),
        Some(Json::String(Cow::Borrowed("2026-11-26T10:00:00Z")))
    ));

    let message = top.get("message").and_then(Json::as_object).unwrap();
    assert_eq!(message.keys().collect::<Vec<_>>(), ["type", "template"]);
    assert!(matches!(
        message.get("type"),
        Some(Json::String(Cow::Borrowed("template")))
    ));
    let template = message.get("template").and_then(Json::as_object).unwrap();
    assert_eq!(template.keys().collect::<Vec<_>>(), ["name", "language"]);
    assert_eq!(
        template.get("name").and_then(Json::as_str),
        Some("hello_world")
    );
    assert!(matches!(
        template.get("name"),
        Some(Json::String(Cow::Borrowed(_)))
    ));
    let language = template.get("language").and_then(Json::as_object).unwrap();
    assert!(matches!(
        language.get("code"),
        Some(Json::String(Cow::Borrowed("en_US")))
    ));

    let metadata = top.get("metadata").and_then(Json::as_object).unwrap();
    match metadata.get("order") {
        Some(Json::Number(n)) => {
            assert_eq!(n.as_text(), "7");
            assert_eq!(n.as_u64(), Some(7));
            assert_eq!(n.as_i64(), Some(7));
            assert_eq!(n.as_f64(), Some(7.0));
        }
        other => panic!("metadata.order is {other:?}"),
    }

    // Every key is a slice of the body as well.
    fn all_borrowed(json: &Json<'_>) -> bool {
        match json {
            Json::String(s) => matches!(s, Cow::Borrowed(_)),
            Json::Array(items) => items.iter().all(all_borrowed),
            Json::Object(o) => o
                .clone()
                .into_iter()
                .all(|(k, v)| matches!(k, Cow::Borrowed(_)) && all_borrowed(&v)),
            _ => true,
        }
    }
    assert!(all_borrowed(&json));

    // The borrowed strings point into the body itself.
    let body = TEMPLATE_SEND.as_bytes().as_ptr_range();
    let to = top.get("to").and_then(Json::as_str).unwrap();
    assert!(body.contains(&to.as_ptr()));

    assert_eq!(json.to_compact(), TEMPLATE_SEND);
    let mut out = String::from("prefix:");
    json.write_compact(&mut out);
    assert_eq!(out, format!("prefix:{TEMPLATE_SEND}"));
    assert_eq!(
        compact_as_value(&json),
        serde_parse(TEMPLATE_SEND.as_bytes()).unwrap()
    );
}

#[test]
fn whitespace_variants_compact_to_the_same_text() {
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(TEMPLATE_SEND).unwrap())
            .unwrap();
    // The pretty form sorts keys (serde_json's Map), so compare with what serde_json writes
    // compactly for the same value.
    let sorted_compact =
        serde_json::to_string(&serde_json::from_str::<Value>(TEMPLATE_SEND).unwrap()).unwrap();
    assert_eq!(
        parse(pretty.as_bytes()).unwrap().to_compact(),
        sorted_compact
    );

    let spaced = r#"
        {
          "to" : "+14150000007" ,
          "message":{ "type" :"template",
            "template": {"name":"hello_world" , "language" : { "code" : "en_US" } } } ,
          "metadata":	{"order":	7}	,"send_at"  :"2026-11-26T10:00:00Z"
        }
    "#;
    let crlf = spaced.replace('\n', "\r\n");
    let tabs = TEMPLATE_SEND.replace(',', "\t,\n").replace("\":", "\" :\t");
    let around = format!(" \t\r\n{TEMPLATE_SEND}\n\r\t ");
    for text in [spaced, crlf.as_str(), tabs.as_str(), around.as_str()] {
        let json = parse(text.as_bytes()).unwrap_or_else(|_| panic!("refused {text:?}"));
        assert_eq!(json.to_compact(), TEMPLATE_SEND, "for {text:?}");
        assert_agreement(text.as_bytes());
    }

    for (text, compact) in [
        (" [ 1 , 2 , [ ] , { } , \"a b\" ] ", r#"[1,2,[],{},"a b"]"#),
        ("\n{\n}\n", "{}"),
        ("\t[\t]\t", "[]"),
        ("  true ", "true"),
        ("\r\nnull\r\n", "null"),
        (" -1.5e+3 ", "-1.5e+3"),
        (" \"x\" ", "\"x\""),
    ] {
        assert_eq!(
            parse(text.as_bytes()).unwrap().to_compact(),
            compact,
            "for {text:?}"
        );
        assert_agreement(text.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Unit tests: strings
// ---------------------------------------------------------------------------------------------

#[test]
fn escapes_decode_and_are_owned() {
    for (text, decoded) in [
        (r#""\"""#, "\""),
        (r#""\\""#, "\\"),
        (r#""\/""#, "/"),
        (r#""\b\f\n\r\t""#, "\u{8}\u{c}\n\r\t"),
        (r#""\u00e9""#, "é"),
        (r#""\u00E9""#, "é"),
        (r#""caf\u00e9!""#, "café!"),
        (r#""\ud83d\ude00""#, "😀"),
        (r#""\uD83D\uDE00""#, "😀"),
        (r#""a\ud83d\ude00b\n""#, "a😀b\n"),
        (r#""\u0000""#, "\0"),
        (r#""\u0001""#, "\u{1}"),
        (r#""\u001f""#, "\u{1f}"),
        (r#""\u007f""#, "\u{7f}"),
        (r#""\u2028""#, "\u{2028}"),
        (r#""\uffff""#, "\u{ffff}"),
        (r#""\udbff\udfff""#, "\u{10ffff}"),
        (r#""\u0041\u0042""#, "AB"),
        (r#""é\"é""#, "é\"é"),
    ] {
        let json = parse(text.as_bytes()).unwrap_or_else(|_| panic!("refused {text:?}"));
        match &json {
            Json::String(Cow::Owned(s)) => assert_eq!(s, decoded, "for {text:?}"),
            other => panic!("{text:?} parsed as {other:?}, not an owned string"),
        }
        assert_eq!(
            Value::String(decoded.to_owned()),
            serde_parse(text.as_bytes()).unwrap()
        );
        assert_agreement(text.as_bytes());
    }

    // Keys decode the same way.
    let json = parse(br#"{"k\u00e9y":1,"plain":2}"#).unwrap();
    let o = json.as_object().unwrap();
    assert_eq!(o.keys().collect::<Vec<_>>(), ["kéy", "plain"]);
    let members: Vec<_> = o.clone().into_iter().collect();
    assert!(matches!(members[0].0, Cow::Owned(_)));
    assert!(matches!(members[1].0, Cow::Borrowed("plain")));

    // Without escapes, any characters (DEL, non-ASCII) stay borrowed.
    for text in ["\"\"", "\"\u{7f}\"", "\"é😀\u{2028}\"", "\"a/b'c\""] {
        assert!(
            matches!(parse(text.as_bytes()), Ok(Json::String(Cow::Borrowed(_)))),
            "{text:?}"
        );
        assert_agreement(text.as_bytes());
    }
}

/// A character that ends a plain run (quote, backslash, control character) or does not (DEL,
/// space, non-ASCII), at every offset of a longer string, inside and outside an object.
#[test]
fn special_bytes_at_every_offset_agree_with_serde() {
    let specials: [&[u8]; 12] = [
        b"\"",
        b"\\",
        b"\x00",
        b"\x01",
        b"\x1f",
        b"\n",
        b"\x7f",
        b" ",
        b"\xc3\xa9",
        b"\\n",
        b"\\u00e9",
        b"\xff",
    ];
    for special in specials {
        for before in 0..20 {
            for after in [0, 1, 7, 8, 9, 17] {
                let mut inner = vec![b'a'; before];
                inner.extend_from_slice(special);
                inner.extend(std::iter::repeat_n(b'b', after));
                let string = [&b"\""[..], &inner, b"\""].concat();
                let object = [&b"{\""[..], &inner, b"\":\"", &inner, b"\"}"].concat();
                for text in [string, object] {
                    assert_agreement(&text);
                }
            }
        }
    }
    // Prefixed by non-ASCII characters, so the special byte falls at other word offsets.
    for prefix in 0..12 {
        for special in ["\u{1}", "\\\"", "\\u0041", "x"] {
            let text = format!(
                "[\"{}{special}{}\"]",
                "é".repeat(prefix),
                "😀".repeat(prefix)
            );
            assert_agreement(text.as_bytes());
        }
    }
}

#[test]
fn compact_reescapes_so_serde_reads_back_the_same_string() {
    for text in [
        r#""\u0001""#,
        r#""\u0000\u0001\u0002\u001e\u001f\u0020""#,
        r#""\b\f\n\r\t\"\\\/""#,
        r#""x\u007fy\u2028z\u2029""#,
        r#""\ud83d\ude00 and \u00e9""#,
        r#"{"\u0001key\n":"\u0002value\t","\"":"\\"}"#,
        r#"["\u000b","\u000B","\u001A"]"#,
    ] {
        let json = parse(text.as_bytes()).unwrap_or_else(|_| panic!("refused {text:?}"));
        let compact = json.to_compact();
        assert!(
            !compact.bytes().any(|b| b < 0x20),
            "raw control character in {compact:?}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&compact).unwrap(),
            serde_parse(text.as_bytes()).unwrap(),
            "for {text:?} -> {compact:?}"
        );
        assert_agreement(text.as_bytes());
    }

    // The control characters are written back the way serde_json writes them.
    assert_eq!(parse(br#""\u0001""#).unwrap().to_compact(), r#""\u0001""#);
    assert_eq!(parse(br#""\u001F""#).unwrap().to_compact(), r#""\u001f""#);
    assert_eq!(parse(br#""\/""#).unwrap().to_compact(), r#""/""#);
    assert_eq!(
        parse(br#""\b\f\n\r\t\"\\""#).unwrap().to_compact(),
        r#""\b\f\n\r\t\"\\""#
    );
    for c in (0u32..0x20).chain([0x22, 0x5c, 0x7f, 0xe9, 0x2028, 0x1f600]) {
        let s = char::from_u32(c).unwrap().to_string();
        let escaped = format!("\"\\u{c:04x}\"");
        let text = if c > 0xffff {
            serde_json::to_string(&s).unwrap()
        } else {
            escaped
        };
        let json = parse(text.as_bytes()).unwrap();
        assert_eq!(json.as_str(), Some(s.as_str()), "for {text:?}");
        assert_eq!(
            json.to_compact(),
            serde_json::to_string(&s).unwrap(),
            "for {text:?}"
        );
    }
}

/// `to_compact_reescaped` writes out even an object that is its own compact text, so that one
/// value has one text, whatever escapes and whitespace it came with.
#[test]
fn reescaped_compact_is_one_text_per_value() {
    let expected = r#"{"s":"é😀/\"\n\u0001","n":[1.10,{"t":"\u001f"}],"k":-0}"#;
    for text in [
        expected,
        r#"{"s":"\u00e9\ud83d\ude00\/\"\n\u0001","n":[1.10,{"t":"\u001F"}],"k":-0}"#,
        r#"{ "s" : "\u00E9\uD83D\uDE00/\u0022\u000a\u0001",
             "n" : [ 1.10 , { "t" : "\u001f" } ] , "k" : -0 }"#,
        r#"{"s":"é😀/\"\n\u0001","n":[1.10,{"t":"\u001f"}],"k":1,"k":-0}"#,
    ] {
        let json = parse(text.as_bytes()).unwrap_or_else(|_| panic!("refused {text:?}"));
        assert_eq!(json.to_compact_reescaped(), expected, "for {text:?}");
    }
    // `to_compact` copies such an object as it stands, escapes and all.
    let escaped = parse(br#"[{"s":"\u00e9"}]"#).unwrap();
    assert_eq!(escaped.to_compact(), r#"[{"s":"\u00e9"}]"#);
    assert_eq!(escaped.to_compact_reescaped(), r#"[{"s":"é"}]"#);
}

#[test]
fn lone_surrogates_agree_with_serde() {
    let texts: [&[u8]; 14] = [
        br#""\ud800""#,
        br#""\udc00""#,
        br#""\udfff""#,
        br#""\udbff""#,
        br#""\ud800x""#,
        br#""\ud800\u0041""#,
        br#""\ud800\ud800""#,
        br#""\udc00\ud800""#,
        br#""\ud800\n""#,
        br#""\ud800\""#,
        br#""\ud800\u""#,
        br#""\ud800\udc0""#,
        br#"{"\ud800":1}"#,
        br#"["\ude00\ud83d"]"#,
    ];
    for text in texts {
        let ours = parse(text).is_ok();
        let theirs = serde_parse(text).is_some();
        assert_eq!(
            ours,
            theirs,
            "{}: ours {ours}, serde_json {theirs}",
            show(text)
        );
    }
    // What serde_json does today (validating UTF-8): all of them refused.
    assert!(texts.iter().all(|t| parse(t).is_err()));
    assert!(
        disagreements(texts).is_empty(),
        "{:#?}",
        disagreements(texts)
    );
}

// ---------------------------------------------------------------------------------------------
// Unit tests: depth
// ---------------------------------------------------------------------------------------------

#[test]
fn depth_127_accepted_128_refused_like_serde() {
    assert_eq!(MAX_DEPTH, 127);
    for (open, inner, close) in [
        ("[", "", "]"),
        ("[", "1", "]"),
        ("{\"a\":", "null", "}"),
        ("{\"a\":", "{}", "}"),
        ("[{\"k\":", "[]", "}]"),
        ("[1,", "\"s\"", "]"),
    ] {
        // `inner` may itself be a container: count it.
        let extra = usize::from(inner.starts_with(['[', '{']));
        let per = open.matches(['[', '{']).count();
        let accepted = (MAX_DEPTH - extra) / per;
        let text = nested(open, inner, close, accepted);
        let depth = accepted * per + extra;
        assert!(
            parse(text.as_bytes()).is_ok(),
            "depth {depth} refused: {open}{inner}{close}"
        );
        assert!(
            serde_parse(text.as_bytes()).is_some(),
            "serde_json refuses depth {depth}"
        );
        assert_agreement(text.as_bytes());

        let deeper = format!("{open}{text}{close}");
        let depth = depth + per;
        assert!(depth > MAX_DEPTH);
        assert!(
            parse(deeper.as_bytes()).is_err(),
            "depth {depth} accepted: {open}{inner}{close}"
        );
        assert!(
            serde_parse(deeper.as_bytes()).is_none(),
            "serde_json accepts depth {depth}"
        );
    }

    // Exactly at the edge, arrays and objects.
    let at = nested("[", "", "]", 127);
    let over = nested("[", "", "]", 128);
    assert!(parse(at.as_bytes()).is_ok());
    assert!(serde_parse(at.as_bytes()).is_some());
    assert!(parse(over.as_bytes()).is_err());
    assert!(serde_parse(over.as_bytes()).is_none());
    let at = nested("{\"a\":", "1", "}", 127);
    let over = nested("{\"a\":", "1", "}", 128);
    assert!(parse(at.as_bytes()).is_ok());
    assert!(serde_parse(at.as_bytes()).is_some());
    assert!(parse(over.as_bytes()).is_err());
    assert!(serde_parse(over.as_bytes()).is_none());

    // The compact text of the deepest accepted value is itself accepted.
    let at = nested("[", "", "]", 127);
    assert_eq!(parse(at.as_bytes()).unwrap().to_compact(), at);

    // Depth is what is open at once, not how many containers there are.
    let wide = format!("[{}]", vec![nested("[", "", "]", 126); 50].join(","));
    assert!(parse(wide.as_bytes()).is_ok());
    assert_agreement(wide.as_bytes());
}

#[test]
fn very_deep_nesting_is_refused_without_overflowing_the_stack() {
    for open in ["[", "{\"a\":", "[{\"a\":"] {
        let text = open.repeat(100_000);
        assert!(parse(text.as_bytes()).is_err());
        assert!(serde_parse(text.as_bytes()).is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Unit tests: objects
// ---------------------------------------------------------------------------------------------

fn number_text_of(json: Option<&Json<'_>>) -> Option<String> {
    match json {
        Some(Json::Number(n)) => Some(n.as_text().to_owned()),
        _ => None,
    }
}

#[test]
fn duplicate_keys_keep_the_last_value_where_the_key_first_stood() {
    let text = br#"{"a":1,"b":2,"a":3}"#;
    let json = parse(text).unwrap();
    let o = json.as_object().unwrap();
    assert_eq!(o.len(), 2);
    assert_eq!(number_text_of(o.get("a")).as_deref(), Some("3"));
    assert_eq!(number_text_of(o.get("b")).as_deref(), Some("2"));
    assert_eq!(o.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(json.to_compact(), r#"{"a":3,"b":2}"#);
    assert_agreement(text);

    // Three times, and with different kinds of value.
    let text = br#"{"x":[1],"a":{"n":1},"x":null,"b":true,"x":"last"}"#;
    let json = parse(text).unwrap();
    assert_eq!(json.to_compact(), r#"{"x":"last","a":{"n":1},"b":true}"#);
    assert_agreement(text);

    // A key spelled with an escape is the same key.
    let text = br#"{"a":1,"\u0061":2,"\/":3,"/":4}"#;
    let json = parse(text).unwrap();
    let o = json.as_object().unwrap();
    assert_eq!(o.len(), 2);
    assert_eq!(number_text_of(o.get("a")).as_deref(), Some("2"));
    assert_eq!(number_text_of(o.get("/")).as_deref(), Some("4"));
    assert_agreement(text);

    // Duplicates inside nested objects are resolved in each object on its own.
    let text = br#"[{"a":1,"a":2},{"a":{"b":1,"b":2,"c":3,"b":4}}]"#;
    let json = parse(text).unwrap();
    assert_eq!(json.to_compact(), r#"[{"a":2},{"a":{"b":4,"c":3}}]"#);
    assert_agreement(text);

    // The empty key is a key like any other.
    let text = br#"{"":1,"":2}"#;
    assert_eq!(parse(text).unwrap().to_compact(), r#"{"":2}"#);
    assert_agreement(text);
}

#[test]
fn duplicate_key_in_an_object_of_more_than_16_members_keeps_the_last_value() {
    for members in [17usize, 18, 40, 200] {
        // Keys k0..k{members-1}; k3 comes again at the end and k0 in the middle.
        let mut parts: Vec<String> = (0..members).map(|i| format!("\"k{i}\":{i}")).collect();
        parts.insert(members / 2, "\"k0\":\"middle\"".to_owned());
        parts.push("\"k3\":\"end\"".to_owned());
        let text = format!("{{{}}}", parts.join(","));
        let json = parse(text.as_bytes()).unwrap();
        let o = json.as_object().unwrap();
        assert_eq!(o.len(), members, "{members} members");
        assert_eq!(o.get("k3").and_then(Json::as_str), Some("end"));
        assert_eq!(o.get("k0").and_then(Json::as_str), Some("middle"));
        let expected: Vec<String> = (0..members).map(|i| format!("k{i}")).collect();
        assert_eq!(o.keys().collect::<Vec<_>>(), expected);
        assert_agreement(text.as_bytes());
    }

    // Many members, no duplicate: all kept, in order.
    let text = format!(
        "{{{}}}",
        (0..100)
            .map(|i| format!("\"{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let json = parse(text.as_bytes()).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 100);
    assert_eq!(json.to_compact(), text);
    assert_agreement(text.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Unit tests: numbers
// ---------------------------------------------------------------------------------------------

fn number(text: &str) -> Number<'_> {
    match parse(text.as_bytes()) {
        Ok(Json::Number(n)) => n,
        other => panic!("{text:?} parsed as {other:?}"),
    }
}

#[test]
fn numbers_keep_their_text_and_read_like_serde() {
    for text in [
        "0",
        "-0",
        "1.5",
        "1e2",
        "1E+2",
        "-1e-2",
        "0.0",
        "-0.0",
        "0e0",
        "123456789",
        "-123456789",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "9223372036854775807",
        "9223372036854775808",
        "1e-400",
        "2.5E-3",
        "1.7976931348623157e308",
    ] {
        let n = number(text);
        assert_eq!(n.as_text(), text);
        assert_eq!(parse(text.as_bytes()).unwrap().to_compact(), text);
        assert!(
            serde_parse(text.as_bytes()).is_some(),
            "serde_json refuses {text:?}"
        );
        assert_agreement(text.as_bytes());
    }

    assert_eq!(number("0").as_u64(), Some(0));
    assert_eq!(number("0").as_i64(), Some(0));
    assert_eq!(number("1.5").as_f64(), Some(1.5));
    assert_eq!(number("1.5").as_u64(), None);
    assert_eq!(number("1e2").as_f64(), Some(100.0));
    assert_eq!(number("1e2").as_u64(), None);
    assert_eq!(number("1E+2").as_f64(), Some(100.0));
    assert_eq!(number("-1e-2").as_f64(), Some(-0.01));
    assert_eq!(number("-1e-2").as_i64(), None);
    assert_eq!(number("18446744073709551615").as_u64(), Some(u64::MAX));
    assert_eq!(number("18446744073709551615").as_i64(), None);
    assert_eq!(number("18446744073709551616").as_u64(), None);
    assert_eq!(number("18446744073709551616").as_i64(), None);
    assert_eq!(
        number("18446744073709551616").as_f64(),
        Some(18446744073709551616.0)
    );
    assert_eq!(number("-9223372036854775808").as_i64(), Some(i64::MIN));
    assert_eq!(number("-9223372036854775808").as_u64(), None);
    assert_eq!(number("-9223372036854775809").as_i64(), None);
    assert_eq!(number("9223372036854775807").as_i64(), Some(i64::MAX));
    assert_eq!(number("9223372036854775808").as_i64(), None);
    assert_eq!(number("9223372036854775808").as_u64(), Some(1 << 63));
    assert_eq!(
        number("-0").as_f64().map(f64::to_bits),
        Some((-0.0f64).to_bits())
    );
    assert_eq!(number("1e-400").as_f64(), Some(0.0));
}

/// Each accessor against `serde_json::Number`'s for the same text.
#[test]
fn number_accessors_agree_with_serde_on_examples() {
    let mut texts: Vec<String> = [
        "0",
        "-0",
        "-0.0",
        "-0e5",
        "1",
        "-1",
        "1.5",
        "1e2",
        "1E+2",
        "-1e-2",
        "1.0",
        "100",
        "18446744073709551615",
        "18446744073709551616",
        "-18446744073709551615",
        "-9223372036854775808",
        "-9223372036854775809",
        "9223372036854775807",
        "9223372036854775808",
        "0.1",
        "0.3",
        "3.14159",
        "2.5e-3",
        "6.02214076e23",
        "1e-400",
        // serde_json (built without its `float_roundtrip` feature) reads these as
        // significand * 10^exponent in f64 arithmetic, which can be an ulp off the correctly
        // rounded value: 5e24 reads as 4.999999999999999e24.
        "5e24",
        "-4.1218351540252523e-78",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.push(format!("1{}", "0".repeat(25)));
    let found: Vec<String> = texts
        .iter()
        .flat_map(|t| number_accessor_differences(t))
        .collect();
    assert!(
        found.is_empty(),
        "accessors differ from serde_json's:\n{}",
        found.join("\n")
    );
}

#[test]
fn out_of_range_numbers_are_refused_like_serde() {
    let big = format!("1{}", "0".repeat(399));
    let big_neg = format!("-{big}");
    let big_frac = format!("{big}.5");
    let tiny = format!("0.{}1", "0".repeat(399));
    let long_mantissa_huge_exp = format!("{}e400", "9".repeat(30));
    let huge_then_shrunk = format!("{big}e-399");
    for text in [
        "1e400",
        "-1e400",
        "1E309",
        "1e2147483647",
        "1e99999999999999999999",
    ] {
        assert!(parse(text.as_bytes()).is_err(), "{text:?} accepted");
        assert!(
            serde_parse(text.as_bytes()).is_none(),
            "serde_json accepts {text:?}"
        );
    }
    for text in [
        "1e400",
        "-1e400",
        big.as_str(),
        big_neg.as_str(),
        big_frac.as_str(),
        tiny.as_str(),
        long_mantissa_huge_exp.as_str(),
        huge_then_shrunk.as_str(),
        "0e400",
        "0e99999999999999999999",
        "-0.0e99999999999999999999",
        "1e-99999999999999999999",
        "1e-2147483648",
        "1e-400",
        "123e-330",
    ] {
        assert_agreement(text.as_bytes());
    }
    // The 400-digit integer: both refuse it (it is past f64's range).
    assert!(parse(big.as_bytes()).is_err());
    assert!(serde_parse(big.as_bytes()).is_none());
}

/// The largest finite `f64` is 1.7976931348623157e308; texts between it and the point where
/// correct rounding gives infinity (1.797693134862315807937...e308) are finite numbers when
/// rounded correctly. serde_json (without `float_roundtrip`) multiplies a rounded significand
/// by a rounded power of ten instead, so near this edge its verdict depends on how the digits
/// are split between significand and exponent: it refuses 1.7976931348623158e308 but accepts
/// 1.79769313486231590e308, which is larger.
#[test]
fn numbers_near_f64_max_are_accepted_like_serde() {
    let texts: Vec<String> = [
        "1.7976931348623157e308",
        "-1.7976931348623157e308",
        "1.7976931348623156e308",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        "1.797693134862315807e308",
        "1.797693134862315808e308",
        "1.79769313486231590e308",
        "1.79769313486231596e308",
        "-1.79769313486231584e308",
        "17976931348623157e292",
        "179769313486231570000e288",
        "0.17976931348623157e309",
        "1.7976931348623157E+308",
        "1e308",
        "9.99e307",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("{:e}", f64::MAX),
        serde_json::to_string(&f64::MAX).unwrap(),
        serde_json::to_string(&f64::MIN).unwrap(),
        format!("{:.0}", f64::MAX),
    ])
    .collect();
    let found = disagreements(texts.iter().map(|t| t.as_bytes()));
    assert!(
        found.is_empty(),
        "acceptance differs:\n{}",
        found.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Unit tests: texts that are not JSON, and edge texts that are
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_texts_are_refused_like_serde() {
    let texts: &[&[u8]] = &[
        b"",
        b"  ",
        b"\n\t\r ",
        b"{",
        b"}",
        b"[",
        b"]",
        b"[1,]",
        b"[,1]",
        b"[,]",
        b"{\"a\":1,}",
        b"{,}",
        b"{\"a\"}",
        b"{\"a\":}",
        b"01",
        b"-01",
        b"00",
        b"1.",
        b"1.e5",
        b".5",
        b"-",
        b"-.5",
        b"+1",
        b"1e",
        b"1e+",
        b"1E-",
        b"0x10",
        b"Infinity",
        b"-Infinity",
        b"NaN",
        b"tru",
        b"nul",
        b"fals",
        b"True",
        b"NULL",
        b"truex",
        b"nullnull",
        b"\"abc",
        b"\"",
        b"\"a\x01b\"",
        b"\"a\x00b\"",
        b"\"a\nb\"",
        b"\"a\tb\"",
        b"\"\\x\"",
        b"\"\\a\"",
        b"\"\\'\"",
        b"\"\\u12\"",
        b"\"\\u12g4\"",
        b"\"\\U0041\"",
        b"\"\\",
        b"'a'",
        b"{\"a\" 1}",
        b"{\"a\"::1}",
        b"{1:2}",
        b"{a:2}",
        b"{'a':2}",
        b"{\"a\":1 \"b\":2}",
        b"[1 2]",
        b"[1,,2]",
        b"1 2",
        b"{} {}",
        b"[]]",
        b"[}",
        b"{]",
        b"\"\xff\"",
        b"\xff",
        b"\"\xc3\"",
        b"\"\xed\xa0\x80\"", // a surrogate encoded as UTF-8
        b"\xef\xbb\xbf{}",   // a byte-order mark
        b"1\x00",
        b"\x00",
        b"[1]\x0b",
        b"\x0c[1]",
        b"\xc2\xa0[1]", // no-break space
        b"/*c*/1",
        b"1//c",
    ];
    for &text in texts {
        assert!(parse(text).is_err(), "{} accepted", show(text));
        assert!(
            serde_parse(text).is_none(),
            "serde_json accepts {}",
            show(text)
        );
    }
}

#[test]
fn edge_texts_are_accepted_like_serde() {
    let texts: &[&[u8]] = &[
        b"0",
        b"true",
        b"false",
        b"null",
        b"\"\"",
        b"[]",
        b"{}",
        b"[[]]",
        b"[{}]",
        b"{\"\":{}}",
        b"[null,true,false,0,\"\",[],{}]",
        b"\"\\u0000\"",
        b"\"\x7f\"",
        b"\"\xf4\x8f\xbf\xbf\"", // U+10FFFF
        b"\"\xe2\x80\xa8\"",     // U+2028
        b"-0.0e-0",
        b"0E0",
        b"0.000000000000000000000000000001",
        b"123456789012345678901234567890",
        b"-123456789012345678901234567890.123456789e-10",
        b"{\"a\":[1,{\"b\":null}],\"c\":\"d\"}",
    ];
    for &text in texts {
        assert!(parse(text).is_ok(), "{} refused", show(text));
        assert_agreement(text);
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Strings serde_json must escape, and characters around them.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[\\x00-\\x1f\"\\\\/a\\x7f\u{e9}\u{2028}\u{1F600} ]{0,10}",
        // Long runs with one character to escape somewhere, across 8-byte words.
        "[a-z\u{e9}\u{1F600}]{0,20}[\\x00-\\x1f\"\\\\][a-z\u{80}-\u{ff}]{0,20}",
        prop::collection::vec(any::<char>(), 0..10).prop_map(|cs| cs.into_iter().collect()),
        any::<String>(),
    ]
}

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(f64::EPSILON),
        Just(5e-324),
        Just(-0.0),
        (-1e6f64..1e6),
    ]
    .prop_filter("finite", |f| f.is_finite())
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        arb_f64().prop_map(Value::from),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop_oneof!["[a-c]{0,2}", tricky_string()], inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A JSON-ish text built from the grammar, with whitespace, duplicate keys, escapes (lone
/// surrogates among them) and numbers of every shape; sometimes not JSON at all.
fn arb_text() -> impl Strategy<Value = String> {
    let ws = "[ \t\r\n]{0,2}";
    let number = number_text();
    let escape = prop_oneof![
        Just("\\\"".to_owned()),
        Just("\\\\".to_owned()),
        Just("\\/".to_owned()),
        "\\\\[bfnrt]",
        "\\\\u[0-9a-fA-F]{4}",
        "\\\\u[dD][89abAB][0-9a-f]{2}\\\\u[dD][c-fC-F][0-9a-f]{2}",
        "\\\\u[dD][89a-fA-F][0-9a-f]{2}",
    ];
    let chars = prop_oneof![3 => "[a-z \u{e9}\u{1F600}]{1,3}", 1 => escape];
    let string =
        prop::collection::vec(chars, 0..4).prop_map(|parts| format!("\"{}\"", parts.concat()));
    let key = prop_oneof![3 => "\"[a-c]{0,1}\"", 1 => string.clone()];
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number,
        string,
    ];
    let text = leaf.prop_recursive(4, 40, 5, move |inner| {
        let item = (ws, inner.clone(), ws).prop_map(|(a, v, b)| format!("{a}{v}{b}"));
        let member = (ws, key.clone(), ws, ws, inner, ws)
            .prop_map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"));
        prop_oneof![
            prop::collection::vec(item, 0..5).prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec(member, 0..5)
                .prop_map(|members| format!("{{{}}}", members.join(","))),
        ]
    });
    (ws, text, ws).prop_map(|(a, t, b)| format!("{a}{t}{b}"))
}

/// Numeric texts: integers of 1-25 digits with an optional sign, decimals, exponents, and the
/// values at the edges of u64, i64 and f64.
fn number_text() -> impl Strategy<Value = String> {
    let sign = prop_oneof![Just(""), Just("-")];
    let general = (
        sign.clone(),
        prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,24}"],
        prop::option::of("\\.[0-9]{1,20}"),
        prop::option::of("[eE][+-]?[0-9]{1,3}"),
    )
        .prop_map(|(s, int, frac, exp)| {
            format!(
                "{s}{int}{}{}",
                frac.unwrap_or_default(),
                exp.unwrap_or_default()
            )
        });
    let integer = (sign.clone(), "[1-9][0-9]{0,24}").prop_map(|(s, d)| format!("{s}{d}"));
    let near_u64 = (0u128..4, any::<bool>()).prop_map(|(k, up)| {
        let base = u64::MAX as u128;
        (if up { base + k } else { base - k }).to_string()
    });
    let near_i64_min = (0u128..4, any::<bool>()).prop_map(|(k, up)| {
        let base = 1u128 << 63;
        format!("-{}", if up { base + k } else { base - k })
    });
    let near_f64_max = (
        sign,
        "[0-9]{0,6}",
        prop_oneof![Just("e308"), Just("e+308"), Just("E308")],
    )
        .prop_map(|(s, more, e)| format!("{s}1.797693134862315{more}{e}"));
    let float = arb_f64().prop_map(|f| serde_json::to_string(&f).unwrap());
    prop_oneof![
        4 => general,
        2 => integer,
        1 => near_u64,
        1 => near_i64_min,
        1 => near_f64_max,
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => float,
    ]
}

/// Bytes the mutations draw from: JSON's punctuation, escapes, digits, the letters of the
/// literals, whitespace.
const ALPHABET: &[u8] = b"{}[]\",:\\u0123456789abcdefeEtrnul.-+ \n\tD";

fn mutation_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        9 => prop::sample::select(ALPHABET),
        1 => any::<u8>(),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(Index, u8),
    Delete(Index),
    Replace(Index, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), mutation_byte()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), mutation_byte()).prop_map(|(i, b)| Edit::Replace(i, b)),
    ]
}

fn apply(text: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = text.to_vec();
    for e in edits {
        match *e {
            Edit::Insert(ref i, b) => {
                let at = i.index(out.len() + 1);
                out.insert(at, b);
            }
            Edit::Delete(ref i) if !out.is_empty() => {
                let at = i.index(out.len());
                out.remove(at);
            }
            Edit::Replace(ref i, b) if !out.is_empty() => {
                let at = i.index(out.len());
                out[at] = b;
            }
            _ => {}
        }
    }
    out
}

/// Valid JSON texts to mutate.
fn seed_text() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<Vec<u8>> = [
        TEMPLATE_SEND,
        r#"{"a":1,"b":2,"a":3}"#,
        r#""\ud83d\ude00\u00e9\n\"\\\/""#,
        r#"[0,-0,1.5,1e2,1E+2,-1e-2,18446744073709551615,-9223372036854775808]"#,
        r#"[true,false,null,{},[],""]"#,
        "1.7976931348623157e308",
        "123456789012345678901234567",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    prop_oneof![
        3 => arb_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => arb_value().prop_map(|v| serde_json::to_vec_pretty(&v).unwrap()),
        3 => arb_text().prop_map(String::into_bytes),
        2 => prop::sample::select(fixed),
    ]
}

/// A generated object tree alongside its text, to check member order and last-value-wins.
#[derive(Debug, Clone)]
enum Doc {
    Leaf(String),
    Array(Vec<Doc>),
    Object(Vec<(String, Doc)>),
}

impl Doc {
    fn text(&self) -> String {
        match self {
            Doc::Leaf(t) => t.clone(),
            Doc::Array(items) => {
                format!(
                    "[{}]",
                    items.iter().map(Doc::text).collect::<Vec<_>>().join(", ")
                )
            }
            Doc::Object(members) => format!(
                "{{ {} }}",
                members
                    .iter()
                    .map(|(k, v)| format!("\"{k}\" : {}", v.text()))
                    .collect::<Vec<_>>()
                    .join(" , ")
            ),
        }
    }

    /// Checks `json` has this shape: members in first-occurrence order, each with the value
    /// of its last occurrence.
    fn check(&self, json: &Json<'_>) -> Result<(), String> {
        match (self, json) {
            (Doc::Leaf(t), j) => match j.to_compact() == *t {
                true => Ok(()),
                false => Err(format!("leaf {t:?} became {j:?}")),
            },
            (Doc::Array(items), Json::Array(js)) if items.len() == js.len() => {
                items.iter().zip(js).try_for_each(|(d, j)| d.check(j))
            }
            (Doc::Object(members), Json::Object(o)) => {
                let mut order: Vec<&str> = Vec::new();
                for (k, _) in members {
                    if !order.contains(&k.as_str()) {
                        order.push(k);
                    }
                }
                let keys: Vec<&str> = o.keys().collect();
                if keys != order {
                    return Err(format!("keys {keys:?}, expected {order:?}"));
                }
                for key in order {
                    let last = &members.iter().rev().find(|(k, _)| k == key).unwrap().1;
                    last.check(o.get(key).unwrap())?;
                }
                Ok(())
            }
            (d, j) => Err(format!("{d:?} became {j:?}")),
        }
    }
}

fn arb_doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        "-?[1-9][0-9]{0,3}",
        "\"[a-z]{0,3}\"",
    ]
    .prop_map(Doc::Leaf);
    leaf.prop_recursive(3, 40, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::Array),
            // Few distinct keys, so duplicates are common; more than 16 members sometimes.
            prop::collection::vec(("[a-e]", inner.clone()), 0..8).prop_map(Doc::Object),
            prop::collection::vec(("[a-z]{1,2}", inner), 15..30).prop_map(Doc::Object),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(no_failure_files(400))]

    /// (a) What serde_json writes, compact or pretty, is accepted, and its compact text reads
    /// back (through serde_json) as serde_json's own reading of the text.
    #[test]
    fn serde_written_values_round_trip(value in arb_value()) {
        for text in [
            serde_json::to_string(&value).unwrap(),
            serde_json::to_string_pretty(&value).unwrap(),
        ] {
            let theirs = serde_json::from_str::<Value>(&text);
            let ours = parse(text.as_bytes());
            prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "text {:?}", text);
            if let (Ok(json), Ok(expected)) = (ours, theirs) {
                let compact = json.to_compact();
                let back = serde_json::from_str::<Value>(&compact);
                prop_assert!(back.is_ok(), "compact {:?} refused by serde_json", compact);
                prop_assert_eq!(back.unwrap(), expected, "text {:?}, compact {:?}", text, compact);
                // serde_json's compact writing of the same value is the same text (its map is
                // sorted, so members come in the same order).
                prop_assert_eq!(&compact, &serde_json::to_string(&value).unwrap());
                prop_assert_eq!(&json.to_compact_reescaped(), &compact);
            }
        }
    }

    /// Objects keep their members in first-occurrence order, each with its last value.
    #[test]
    fn member_order_and_last_value_wins(doc in arb_doc()) {
        let text = doc.text();
        let json = parse(text.as_bytes());
        prop_assert!(json.is_ok(), "refused {:?}", text);
        let json = json.unwrap();
        if let Err(msg) = doc.check(&json) {
            return Err(TestCaseError::fail(format!("{text:?}: {msg}")));
        }
        if let Err(msg) = agreement(text.as_bytes()) {
            return Err(TestCaseError::fail(msg));
        }
    }
}

proptest! {
    #![proptest_config(no_failure_files(4000))]

    /// (b) Valid texts with a few bytes inserted, deleted or replaced: accepted exactly when
    /// serde_json accepts them, and read the same when both do.
    #[test]
    fn mutated_texts_agree_with_serde(
        seed in seed_text(),
        edits in prop::collection::vec(edit(), 0..4),
    ) {
        let bytes = apply(&seed, &edits);
        if let Err(msg) = agreement(&bytes) {
            return Err(TestCaseError::fail(msg));
        }
    }

    /// (b) Short byte strings, arbitrary or drawn from JSON's alphabet.
    #[test]
    fn short_byte_strings_agree_with_serde(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..8),
            prop::collection::vec(mutation_byte(), 0..12),
        ],
    ) {
        if let Err(msg) = agreement(&bytes) {
            return Err(TestCaseError::fail(msg));
        }
    }

    /// (b) Grammar-built texts (whitespace, duplicate keys, escapes, lone surrogates, numbers).
    #[test]
    fn generated_texts_agree_with_serde(text in arb_text()) {
        if let Err(msg) = agreement(text.as_bytes()) {
            return Err(TestCaseError::fail(msg));
        }
    }
}

proptest! {
    #![proptest_config(no_failure_files(2000))]

    /// 3. A numeric text is accepted exactly when serde_json accepts it.
    #[test]
    fn number_acceptance_agrees_with_serde(text in number_text()) {
        if let Err(msg) = agreement(text.as_bytes()) {
            return Err(TestCaseError::fail(msg));
        }
    }

    /// 3. `as_u64` against `serde_json::Number::as_u64` (both accepting the text).
    #[test]
    fn number_as_u64_agrees_with_serde(text in number_text()) {
        if let (Ok(Json::Number(ours)), Some(Value::Number(theirs))) =
            (parse(text.as_bytes()), serde_parse(text.as_bytes()))
        {
            prop_assert_eq!(ours.as_u64(), theirs.as_u64(), "text {:?}", text);
        }
    }

    /// 3. `as_i64` against `serde_json::Number::as_i64` (both accepting the text).
    #[test]
    fn number_as_i64_agrees_with_serde(text in number_text()) {
        if let (Ok(Json::Number(ours)), Some(Value::Number(theirs))) =
            (parse(text.as_bytes()), serde_parse(text.as_bytes()))
        {
            prop_assert_eq!(ours.as_i64(), theirs.as_i64(), "text {:?}", text);
        }
    }

    /// 3. `as_f64` against `serde_json::Number::as_f64` (both accepting the text), bit for bit.
    #[test]
    fn number_as_f64_agrees_with_serde(text in number_text()) {
        if let (Ok(Json::Number(ours)), Some(Value::Number(theirs))) =
            (parse(text.as_bytes()), serde_parse(text.as_bytes()))
        {
            prop_assert_eq!(
                ours.as_f64().map(f64::to_bits),
                theirs.as_f64().map(f64::to_bits),
                "text {:?}: ours {:?}, serde_json {:?}",
                text,
                ours.as_f64(),
                theirs.as_f64()
            );
        }
    }
}

#[test]
fn a_repeated_key_is_written_once_even_in_compact_text() {
    // Compact text is copied out whole only when it needs no change: a merged key is one.
    for (text, compact) in [
        (r#"{"a":1,"b":2,"a":3}"#, r#"{"a":3,"b":2}"#),
        (r#"{"x":{"a":1,"a":2},"y":[]}"#, r#"{"x":{"a":2},"y":[]}"#),
        (r#"[{"k":true,"k":false}]"#, r#"[{"k":false}]"#),
    ] {
        let json = parse(text.as_bytes()).unwrap();
        assert_eq!(json.to_compact(), compact, "{text}");
    }
}
