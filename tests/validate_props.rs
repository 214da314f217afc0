//! Property tests of request validation: no input panics, every refusal is a well-formed
//! API error, valid sends are accepted, and recipient normalisation is stable.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};
use waq::error::ApiError;
use waq::model::ValidSend;
use waq::validate::recipient;

fn senders() -> Vec<String> {
    vec!["main".to_string()]
}

/// The validators run on JSON text as the daemon parses it; these take a value and write it out.
fn send_request(v: Value, senders: &[String]) -> Result<ValidSend, ApiError> {
    let text = serde_json::to_vec(&v).expect("a value serialises");
    let json = waq::borrowed_json::parse(&text).expect("serde_json's text parses");
    waq::validate::send_request(json, senders)
}

fn message_object(v: &Value, field: &str) -> Result<String, ApiError> {
    let text = serde_json::to_vec(v).expect("a value serialises");
    let json = waq::borrowed_json::parse(&text).expect("serde_json's text parses");
    waq::validate::message_object(&json, field)
}

fn template_object(v: &Value, field: &str) -> Result<(), ApiError> {
    let text = serde_json::to_vec(v).expect("a value serialises");
    let json = waq::borrowed_json::parse(&text).expect("serde_json's text parses");
    waq::validate::template_object(&json, field)
}

/// Words that steer generated objects into the validator's deeper paths: its field names and
/// message types, and the keys inside message objects.
fn keywords() -> Vec<&'static str> {
    let inner: &[&str] = &[
        "type",
        "body",
        "id",
        "link",
        "caption",
        "filename",
        "latitude",
        "longitude",
        "name",
        "formatted_name",
        "first_name",
        "message_id",
        "emoji",
        "language",
        "code",
        "components",
        "parameters",
        "action",
        "buttons",
        "reply",
        "title",
        "sections",
        "rows",
        "button",
        "header",
        "footer",
        "list",
        "cta_url",
        "display_text",
        "url",
        "flow",
        "flow_id",
        "flow_cta",
        "flow_message_version",
        "context",
        "product",
        "product_list",
        "catalog_id",
        "product_items",
        "product_retailer_id",
        "sub_type",
        "index",
        "main",
        "high",
        "en_US",
        "https://example.com/a.jpg",
        "https://bit.ly/x",
        "+1 415 555 1234",
        "2026-11-24T20:00:00Z",
    ];
    waq::validate::SEND_FIELDS
        .iter()
        .chain(waq::validate::MESSAGE_TYPES.iter())
        .chain(inner)
        .copied()
        .collect()
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(keywords()).prop_map(str::to_string),
        1 => any::<String>(),
        1 => "[a-z_]{0,12}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        word().prop_map(Value::String),
        (0usize..5000).prop_map(|n| Value::String("x".repeat(n))),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every refusal is 400 or 422 with a snake_case code, a message, and a field when 422.
fn check_error(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!(e.status == 400 || e.status == 422, "status {}", e.status);
    prop_assert!(!e.message.is_empty());
    prop_assert!(!e.code.is_empty());
    prop_assert!(
        e.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "code {}",
        e.code
    );
    if e.status == 422 {
        prop_assert!(
            e.field.as_deref().is_some_and(|f| !f.is_empty()),
            "422 without a field: {e}"
        );
    }
    Ok(())
}

fn check_send(r: &Result<ValidSend, ApiError>) -> Result<(), TestCaseError> {
    match r {
        Ok(s) => {
            prop_assert!(s.to.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!((7..=15).contains(&s.to.len()));
            prop_assert_eq!(s.sender.as_str(), "main");
            Ok(())
        }
        Err(e) => check_error(e),
    }
}

/// One valid request per message type, as seeds for mutation.
fn valid_requests() -> Vec<Value> {
    let messages = [
        json!({"type": "text", "text": {"body": "hi", "preview_url": false}, "context": {"message_id": "wamid.X"}}),
        json!({"type": "image", "image": {"link": "https://example.com/a.jpg", "caption": "c"}}),
        json!({"type": "document", "document": {"id": "123", "filename": "a.pdf"}}),
        json!({"type": "audio", "audio": {"id": "123"}}),
        json!({"type": "location", "location": {"latitude": 1.5, "longitude": "2.5", "name": "x"}}),
        json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "A B", "first_name": "A"}, "phones": [{"phone": "1"}]}]}),
        json!({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}}),
        json!({"type": "template", "template": {"name": "order_update", "language": {"code": "en_US"},
            "components": [{"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "x"}]}]}}),
        json!({"type": "interactive", "interactive": {"type": "button", "header": {"type": "text", "text": "H"},
            "body": {"text": "b"}, "footer": {"text": "f"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "A"}}, {"type": "reply", "reply": {"id": "b", "title": "B"}}]}}}),
        json!({"type": "interactive", "interactive": {"type": "list", "body": {"text": "b"},
            "action": {"button": "Open", "sections": [{"title": "S", "rows": [{"id": "1", "title": "R", "description": "d"}]},
                                                       {"title": "T", "rows": [{"id": "2", "title": "Q"}]}]}}}),
        json!({"type": "interactive", "interactive": {"type": "cta_url", "body": {"text": "b"},
            "action": {"name": "cta_url", "parameters": {"display_text": "Go", "url": "https://example.com"}}}}),
        json!({"type": "interactive", "interactive": {"type": "flow", "body": {"text": "b"},
            "action": {"name": "flow", "parameters": {"flow_message_version": "3", "flow_cta": "Go", "flow_id": "1"}}}}),
        json!({"type": "interactive", "interactive": {"type": "product_list", "header": {"type": "text", "text": "H"}, "body": {"text": "b"},
            "action": {"catalog_id": "1", "sections": [{"title": "S", "product_items": [{"product_retailer_id": "x"}]}]}}}),
    ];
    messages
        .into_iter()
        .map(|m| {
            json!({"to": "+49 30 1234567", "sender": "main", "message": m,
                   "fallback_template": {"name": "hello_world", "language": {"code": "en_US"}},
                   "idempotency_key": "k", "priority": "low", "send_at": "2026-11-24T20:00:00Z",
                   "ttl_s": 60, "metadata": {"a": 1}})
        })
        .collect()
}

/// A valid request with one member removed or replaced.
fn mutated(seed: Index, at: Index, replacement: Value, remove: bool) -> Value {
    let seeds = valid_requests();
    let mut v = seed.get(&seeds).clone();
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    let path = at.get(&all).clone();
    match (remove, path.split_last()) {
        (true, Some((Step::Key(k), parent))) => {
            if let Some(Value::Object(m)) = at_mut(&mut v, parent) {
                m.remove(k);
            }
        }
        _ => {
            if let Some(slot) = at_mut(&mut v, &path) {
                *slot = replacement;
            }
        }
    }
    v
}

/// A fallback template as the message object it is sent as.
fn as_template_message(template: String) -> String {
    format!(r#"{{"type":"template","template":{template}}}"#)
}

/// One step from a JSON value to a member.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    At(usize),
}

/// Paths of every value inside `v`, `v` itself included.
fn paths(v: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(Step::Key(k.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(Step::At(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::At(i) => v.get_mut(*i),
    })
}

/// A phone number as people write it, and its digits: `+`, spaces, dashes, dots, parentheses.
fn phone() -> impl Strategy<Value = (String, String)> {
    (
        "[1-9][0-9]{6,14}",
        prop::collection::vec(
            prop::sample::select(&["", " ", "-", ".", "(", ")", " - "][..]),
            15,
        ),
        any::<bool>(),
    )
        .prop_map(|(digits, seps, plus)| {
            let mut written = String::from(if plus { "+" } else { "" });
            for (c, sep) in digits.chars().zip(seps) {
                // A `(0)` is the trunk prefix, dropped whole (a unit test has it): not here.
                let sep = if c == '0' && sep == ")" && written.ends_with('(') {
                    ""
                } else {
                    sep
                };
                written.push(c);
                written.push_str(sep);
            }
            (written, digits)
        })
}

proptest! {
    #[test]
    fn arbitrary_json_bodies_never_panic(v in arb_json()) {
        check_send(&send_request(v, &senders()))?;
    }

    #[test]
    fn arbitrary_objects_with_request_keys_never_panic(
        fields in prop::collection::vec((prop::sample::select(&waq::validate::SEND_FIELDS[..]), arb_json()), 0..9)
    ) {
        let v = Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        check_send(&send_request(v, &senders()))?;
    }

    #[test]
    fn arbitrary_message_and_template_objects_never_panic(v in arb_json()) {
        if let Err(e) = message_object(&v, "message") {
            check_error(&e)?;
        }
        if let Err(e) = template_object(&v, "fallback_template") {
            check_error(&e)?;
        }
    }

    #[test]
    fn mutated_valid_requests_never_panic(
        seed in any::<Index>(), at in any::<Index>(), replacement in arb_json(), remove in any::<bool>()
    ) {
        let v = mutated(seed, at, replacement, remove);
        check_send(&send_request(v, &senders()))?;
    }

    #[test]
    fn what_enqueue_accepts_the_simulator_accepts(
        seed in any::<Index>(), at in any::<Index>(), replacement in arb_json(), remove in any::<bool>()
    ) {
        let v = mutated(seed, at, replacement, remove);
        if let Some(refusal) = simulator_refusal(v) {
            return Err(TestCaseError::fail(refusal));
        }
    }

    #[test]
    fn valid_text_sends_are_accepted_and_normalised(
        (written, digits) in phone(),
        body in "\\PC{1,300}",
        priority in prop::sample::select(&["high", "normal", "low"][..]),
    ) {
        prop_assume!(!body.trim().is_empty());
        let v = json!({"to": written, "message": {"type": "text", "text": {"body": body}}, "priority": priority});
        let s = send_request(v.clone(), &senders()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(s.to, digits);
        prop_assert_eq!(s.kind, "text");
        let message: Value = serde_json::from_str(&s.message).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&message, &v["message"]);
        prop_assert_eq!(s.priority.as_str(), priority);
    }

    #[test]
    fn text_bodies_are_limited_by_characters(c in any::<char>(), n in 0usize..4200) {
        let m = json!({"type": "text", "text": {"body": c.to_string().repeat(n)}});
        let r = message_object(&m, "message");
        // White space alone is no text to Meta, whatever its length.
        let ok = (1..=4096).contains(&n) && !c.is_whitespace();
        prop_assert_eq!(r.is_ok(), ok, "{} chars of {:?}: {:?}", n, c, r);
    }

    #[test]
    fn recipient_normalisation_is_idempotent(raw in prop_oneof![any::<String>(), "[+0-9 ().-]{0,24}"]) {
        match recipient(&raw, "to") {
            Ok(digits) => {
                prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()));
                prop_assert!((7..=15).contains(&digits.len()));
                prop_assert_eq!(recipient(&digits, "to"), Ok(digits.clone()));
            }
            Err(e) => {
                check_error(&e)?;
                prop_assert_eq!(e.code.as_str(), "invalid_recipient");
                prop_assert_eq!(e.field.as_deref(), Some("to"));
            }
        }
    }

    #[test]
    fn written_phone_numbers_normalise_to_their_digits((written, digits) in phone()) {
        prop_assert_eq!(recipient(&written, "to"), Ok(digits));
    }
}

/// Why the simulator refuses what enqueue accepted, if it does.
fn simulator_refusal(v: Value) -> Option<String> {
    let send = send_request(v, &senders()).ok()?;
    let messages = [
        Some(send.message),
        send.fallback_template.map(as_template_message),
    ];
    messages.into_iter().flatten().find_map(|message| {
        let body = waq::cloud::request_body(&send.to, &message)?;
        waq::sim::refusal_of(body.as_bytes()).map(|refusal| format!("{body}: {refusal}"))
    })
}

#[test]
fn tricky_strings_enqueue_accepts_the_simulator_accepts_too() {
    // Values at the edges of the checks, put in place of every string of every seed.
    let tricky = [
        "",
        " ",
        "  \t ",
        "\u{200b}",
        "x",
        "bdy",
        "BODY",
        "0",
        "-1",
        "1.5",
        "+1 415 555 0120",
        "https://example.com/a.jpg",
        "https://u:p@example.com/a.jpg",
        "https://example.com@evil.com/a.jpg",
        "https://bücher.de/a.jpg",
        "https://ex%61mple.com/a.jpg",
        "https://example.com\\a.jpg",
        "https://example.com:8443/a b",
        "http://example.com/a.jpg",
        "wamid.X",
    ];
    let mut refused = Vec::new();
    for seed in valid_requests() {
        let mut all = Vec::new();
        paths(&seed, &mut Vec::new(), &mut all);
        for path in all {
            if !matches!(at_mut(&mut seed.clone(), &path), Some(Value::String(_))) {
                continue;
            }
            for value in tricky {
                let mut v = seed.clone();
                if let Some(slot) = at_mut(&mut v, &path) {
                    *slot = Value::String(value.to_string());
                }
                if let Some(refusal) = simulator_refusal(v) {
                    refused.push(format!("{path:?} = {value:?}: {refusal}"));
                }
            }
        }
    }
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

#[test]
fn the_mutation_seeds_are_valid() {
    for v in valid_requests() {
        if let Err(e) = send_request(v.clone(), &senders()) {
            panic!("{v} refused: {e}");
        }
    }
}
