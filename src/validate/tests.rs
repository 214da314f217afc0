//! One test per rule: the error code and the field path it names.

use serde_json::{json, Value};

use super::template::MAX_PARAMETER_TEXT;
use super::*;

/// `super::send_request` on the text of `v`, parsed as the enqueue path parses it.
fn send_request<S: AsRef<str>>(v: Value, senders: &[S]) -> Result<ValidSend, ApiError> {
    let text = serde_json::to_vec(&v).unwrap();
    super::send_request(crate::borrowed_json::parse(&text).unwrap(), senders)
}

fn message_object(v: &Value, field: &str) -> Result<String, ApiError> {
    let text = serde_json::to_vec(v).unwrap();
    super::message_object(&crate::borrowed_json::parse(&text).unwrap(), field)
}

fn template_object(v: &Value, field: &str) -> Result<(), ApiError> {
    let text = serde_json::to_vec(v).unwrap();
    super::template_object(&crate::borrowed_json::parse(&text).unwrap(), field)
}

/// Compact JSON text read back, to compare with what was sent.
fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn one_sender() -> Vec<String> {
    vec!["main".to_string()]
}

fn text_request() -> Value {
    json!({"to": "+1 415 555 1234", "message": {"type": "text", "text": {"body": "hi"}}})
}

/// `text_request()` with `key` set to `value`.
fn request_with(key: &str, value: Value) -> Value {
    let mut v = text_request();
    v[key] = value;
    v
}

#[track_caller]
fn assert_err(r: Result<impl std::fmt::Debug, ApiError>, code: &str, field: &str) -> ApiError {
    let err = r.expect_err("expected an error");
    assert_eq!(err.code, code, "{err}");
    assert_eq!(err.field.as_deref(), Some(field), "{err}");
    assert_eq!(err.status, 422, "{err}");
    assert!(err.message.ends_with('.'), "a sentence: {err}");
    err
}

#[track_caller]
fn request_err(v: Value, code: &str, field: &str) -> ApiError {
    assert_err(send_request(v, &one_sender()), code, field)
}

#[track_caller]
fn message_ok(m: Value) -> String {
    match message_object(&m, "message") {
        Ok(kind) => kind,
        Err(e) => panic!("{m} refused: {e}"),
    }
}

#[track_caller]
fn message_err(m: Value, code: &str, field: &str) -> ApiError {
    assert_err(message_object(&m, "message"), code, field)
}

// ---- the request as a whole -------------------------------------------------------------

#[test]
fn a_full_request_is_accepted_and_normalised() {
    let v = json!({
        "to": "+1 (415) 555-1234",
        "sender": "main",
        "message": {"type": "text", "text": {"body": "Your order shipped", "preview_url": false}},
        "fallback_template": {"name": "order_update", "language": {"code": "en_US"},
                              "components": [{"type": "body", "parameters": [{"type": "text", "text": "John"}]}]},
        "idempotency_key": "order-4521-shipped",
        "priority": "high",
        "send_at": "2026-11-24T20:00:00Z",
        "ttl_s": 600,
        "metadata": {"order": 4521}
    });
    let s = send_request(v.clone(), &one_sender()).unwrap();
    assert_eq!(s.to, "14155551234");
    assert_eq!(s.sender, "main");
    assert_eq!(s.kind, "text");
    assert_eq!(value(&s.message), v["message"]);
    assert_eq!(
        s.fallback_template.as_deref().map(value).as_ref(),
        Some(&v["fallback_template"])
    );
    assert_eq!(s.idempotency_key.as_deref(), Some("order-4521-shipped"));
    assert_eq!(s.priority, Priority::High);
    assert_eq!(s.send_at_ms, Some(1_795_550_400_000));
    assert_eq!(s.ttl_s, Some(600));
    assert_eq!(s.metadata.as_deref(), Some(r#"{"order":4521}"#));
    assert!(s.needs_window());
}

#[test]
fn a_minimal_request_gets_defaults() {
    let s = send_request(text_request(), &one_sender()).unwrap();
    assert_eq!(s.sender, "main");
    assert_eq!(s.priority, Priority::Normal);
    assert_eq!(
        (
            s.fallback_template,
            s.idempotency_key,
            s.send_at_ms,
            s.ttl_s,
            s.metadata
        ),
        (None, None, None, None, None)
    );
}

#[test]
fn null_means_absent_for_waq_fields() {
    let mut v = text_request();
    for key in [
        "sender",
        "fallback_template",
        "idempotency_key",
        "priority",
        "send_at",
        "ttl_s",
        "metadata",
    ] {
        v[key] = Value::Null;
    }
    let s = send_request(v, &one_sender()).unwrap();
    assert_eq!(s.priority, Priority::Normal);
    assert_eq!(s.metadata, None);
}

#[test]
fn body_must_be_an_object() {
    for v in [json!([]), json!("x"), json!(1), Value::Null, json!(true)] {
        let err = send_request(v, &one_sender()).unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (400, code::MALFORMED_REQUEST)
        );
        assert_eq!(err.field, None);
    }
}

#[test]
fn unknown_fields_are_named_with_a_suggestion() {
    let err = request_err(
        request_with("idempotancy_key", json!("k")),
        code::UNKNOWN_FIELD,
        "idempotancy_key",
    );
    assert!(
        err.message.contains("did you mean `idempotency_key`"),
        "{err}"
    );
    request_err(
        request_with("recipient", json!("x")),
        code::UNKNOWN_FIELD,
        "recipient",
    );
    // A long key is named whole in `field` and cut in the sentence.
    let long = "k".repeat(30_000);
    for (v, field) in [
        (request_with(&long, json!(1)), long.clone()),
        (
            json!({"to": "+1 415 555 1234", "message": {"type": "text", "text": {"body": "hi", long.as_str(): 1}}}),
            format!("message.text.{long}"),
        ),
    ] {
        let err = request_err(v, code::UNKNOWN_FIELD, &field);
        assert!(err.message.len() < 400, "{}", err.message.len());
        assert!(err.message.contains("kkkk\"…"), "{}", err.message);
    }
}

#[test]
fn an_unknown_field_is_refused_before_any_other_check() {
    // Named in key order, whatever comes before or after it, even when every other field is
    // wrong or missing too.
    let v = json!({"aaa": 1, "to": 5, "zzz": 2, "message": null});
    request_err(v, code::UNKNOWN_FIELD, "aaa");
    let v = json!({"to": 5, "zzz": 2, "message": null, "sender": "nobody"});
    request_err(v, code::UNKNOWN_FIELD, "zzz");
    let v = json!({"priority": "urgent", "z z": 1});
    request_err(v, code::UNKNOWN_FIELD, "[\"z z\"]");
    // Null members are absent, also those between others.
    let v = json!({"to": "+1 415 555 1234", "sender": null, "ttl_s": null,
        "message": {"type": "text", "text": {"body": "hi"}}});
    let s = send_request(v, &one_sender()).unwrap();
    assert_eq!((s.sender.as_str(), s.ttl_s), ("main", None));
}

#[test]
fn to_is_required_and_a_string() {
    let mut v = text_request();
    v.as_object_mut().unwrap().remove("to");
    request_err(v, code::MISSING_FIELD, "to");
    request_err(
        request_with("to", json!(14155551234u64)),
        code::INVALID_TYPE,
        "to",
    );
    request_err(request_with("to", Value::Null), code::MISSING_FIELD, "to");
}

#[test]
fn recipients_are_normalised_to_digits() {
    for (raw, want) in [
        ("+1 415 555 1234", "14155551234"),
        ("+1 (415) 555-1234", "14155551234"),
        ("1.415.555.1234", "14155551234"),
        ("+49\t30 1234567", "49301234567"),
        ("1234567", "1234567"),
        ("123456789012345", "123456789012345"),
        // The trunk prefix in parentheses is not dialled from abroad.
        ("+44 (0)20 7946 0958", "442079460958"),
        ("+49 (0) 30 1234567", "49301234567"),
        ("+44 (020) 7946 0958", "4402079460958"),
        // Only right after the country code: elsewhere it is a digit in parentheses.
        ("+1 415 (0)55 1234", "14150551234"),
    ] {
        assert_eq!(recipient(raw, "to").unwrap(), want, "{raw}");
    }
}

#[test]
fn bad_recipients_are_refused() {
    for raw in [
        "",
        "+",
        "123456",
        "1234567890123456",
        "+1 415 555 1234 ext 5",
        "1415555123a",
        "0415 555 1234",
        // A leading (0) is a national number's.
        "(0)20 7946 0958",
        "١٢٣٤٥٦٧٨",
    ] {
        assert_err(recipient(raw, "to"), code::INVALID_RECIPIENT, "to");
    }
    // The caller's field name is used, and the count reads as English.
    let err = assert_err(recipient("12", "from"), code::INVALID_RECIPIENT, "from");
    assert!(err.message.starts_with("`from` has 2 digits;"), "{err}");
    let err = assert_err(recipient("+7", "to"), code::INVALID_RECIPIENT, "to");
    assert!(err.message.starts_with("`to` has 1 digit;"), "{err}");
    // A national number lacks its country code; 00 is the dialling prefix for one.
    let err = assert_err(
        recipient("020 7946 0958", "to"),
        code::INVALID_RECIPIENT,
        "to",
    );
    assert!(err.message.contains("lacks its country code"), "{err}");
    let err = assert_err(
        recipient("0044 20 7946 0958", "to"),
        code::INVALID_RECIPIENT,
        "to",
    );
    assert!(
        err.message
            .contains("starts with 00, a dialling prefix: write + instead"),
        "{err}"
    );
    request_err(
        request_with("to", json!("12")),
        code::INVALID_RECIPIENT,
        "to",
    );
    // Huge inputs are refused without echoing them.
    let err = recipient(&"9".repeat(100_000), "to").unwrap_err();
    assert!(err.message.len() < 200);
}

#[test]
fn sender_rules() {
    let two = vec!["main".to_string(), "promo".to_string()];
    // Optional with exactly one sender.
    assert_eq!(
        send_request(text_request(), &one_sender()).unwrap().sender,
        "main"
    );
    // Required with several.
    assert_err(
        send_request(text_request(), &two),
        code::MISSING_FIELD,
        "sender",
    );
    let s = send_request(request_with("sender", json!("promo")), &two).unwrap();
    assert_eq!(s.sender, "promo");
    // Unknown names list the configured ones.
    let err = assert_err(
        send_request(request_with("sender", json!("mian")), &two),
        code::UNKNOWN_SENDER,
        "sender",
    );
    assert!(err.message.contains("main, promo"), "{err}");
    assert!(err.message.contains("did you mean `main`"), "{err}");
    assert_err(
        send_request(text_request(), &[] as &[String]),
        code::UNKNOWN_SENDER,
        "sender",
    );
    assert_err(
        send_request(request_with("sender", json!("main")), &[] as &[String]),
        code::UNKNOWN_SENDER,
        "sender",
    );
    request_err(
        request_with("sender", json!(1)),
        code::INVALID_TYPE,
        "sender",
    );
}

#[test]
fn message_is_required_and_an_object() {
    let mut v = text_request();
    v.as_object_mut().unwrap().remove("message");
    request_err(v, code::MISSING_FIELD, "message");
    request_err(
        request_with("message", json!("hi")),
        code::INVALID_TYPE,
        "message",
    );
}

#[test]
fn fallback_template_is_checked_with_its_own_paths() {
    let ok = request_with(
        "fallback_template",
        json!({"name": "hello_world", "language": {"code": "en_US"}}),
    );
    assert!(send_request(ok, &one_sender()).is_ok());
    request_err(
        request_with(
            "fallback_template",
            json!({"name": "Hello World", "language": {"code": "en_US"}}),
        ),
        code::INVALID_TEMPLATE_NAME,
        "fallback_template.name",
    );
    request_err(
        request_with(
            "fallback_template",
            json!({"name": "hello_world", "language": {}}),
        ),
        code::MISSING_FIELD,
        "fallback_template.language.code",
    );
    request_err(
        request_with("fallback_template", json!("hello_world")),
        code::INVALID_TYPE,
        "fallback_template",
    );
}

#[test]
fn idempotency_key_rules() {
    let err = request_err(
        request_with("idempotency_key", json!("")),
        code::EMPTY_VALUE,
        "idempotency_key",
    );
    assert!(err.message.contains("1 to 256 characters"), "{err}");
    let err = request_err(
        request_with("idempotency_key", json!("k".repeat(257))),
        code::TOO_LONG,
        "idempotency_key",
    );
    // The limit is waq's, not WhatsApp's: the message must not send the user to Meta.
    assert!(err.message.contains("waq's limit of 256"), "{err}");
    assert!(!err.message.contains("WhatsApp"), "{err}");
    request_err(
        request_with("idempotency_key", json!(42)),
        code::INVALID_TYPE,
        "idempotency_key",
    );
    let s = send_request(
        request_with("idempotency_key", json!("é".repeat(256))),
        &one_sender(),
    )
    .unwrap();
    assert_eq!(s.idempotency_key.map(|k| k.chars().count()), Some(256));
}

#[test]
fn priority_rules() {
    for (p, want) in [
        ("high", Priority::High),
        ("normal", Priority::Normal),
        ("low", Priority::Low),
    ] {
        assert_eq!(
            send_request(request_with("priority", json!(p)), &one_sender())
                .unwrap()
                .priority,
            want
        );
    }
    let err = request_err(
        request_with("priority", json!("HIGH")),
        code::INVALID_VALUE,
        "priority",
    );
    assert!(err.message.contains("did you mean `high`"), "{err}");
    request_err(
        request_with("priority", json!("urgent")),
        code::INVALID_VALUE,
        "priority",
    );
    request_err(
        request_with("priority", json!(1)),
        code::INVALID_TYPE,
        "priority",
    );
}

#[test]
fn send_at_rules() {
    let s = send_request(
        request_with("send_at", json!("2026-11-24T21:00:00+01:00")),
        &one_sender(),
    )
    .unwrap();
    assert_eq!(s.send_at_ms, Some(1_795_550_400_000));
    request_err(
        request_with("send_at", json!("tomorrow")),
        code::INVALID_TIME,
        "send_at",
    );
    request_err(
        request_with("send_at", json!("2026-13-24T20:00:00Z")),
        code::INVALID_TIME,
        "send_at",
    );
    request_err(
        request_with("send_at", json!(1_795_550_400)),
        code::INVALID_TYPE,
        "send_at",
    );
}

#[test]
fn send_at_needs_an_offset() {
    // Taken as UTC, a local time would go out at the wrong hour.
    for local in ["2099-01-01T00:00:00", "2099-01-01 00:00:00.5"] {
        let err = request_err(
            request_with("send_at", json!(local)),
            code::INVALID_TIME,
            "send_at",
        );
        assert!(err.message.contains("`send_at`"), "{err}");
        assert!(err.message.contains("offset such as `Z`"), "{err}");
        assert!(err.message.contains("`+02:00`"), "{err}");
    }
}

#[test]
fn send_at_takes_what_rfc_3339_allows() {
    let at = |t: &str| {
        send_request(request_with("send_at", json!(t)), &one_sender())
            .unwrap()
            .send_at_ms
    };
    let want = Some(1_795_550_400_000);
    assert_eq!(at("2026-11-24t20:00:00z"), want);
    assert_eq!(at("2026-11-24 20:00:00Z"), want);
    assert_eq!(at("2026-11-24T22:00:00+02:00"), want);
    // Unix time has no leap seconds: :60 is the second before.
    assert_eq!(at("2026-11-24T19:59:60Z"), Some(1_795_550_399_000));
}

#[test]
fn ttl_rules() {
    for (v, want) in [
        (json!(1), 1),
        (json!(2_592_000), 2_592_000),
        (json!(600.0), 600),
    ] {
        assert_eq!(
            send_request(request_with("ttl_s", v), &one_sender())
                .unwrap()
                .ttl_s,
            Some(want)
        );
    }
    for v in [
        json!(0),
        json!(2_592_001),
        json!(-5),
        json!(u64::MAX),
        json!(-1.0),
        json!(1e30),
    ] {
        request_err(request_with("ttl_s", v), code::OUT_OF_RANGE, "ttl_s");
    }
    for v in [json!(1.5), json!("600"), json!(true)] {
        request_err(request_with("ttl_s", v), code::INVALID_TYPE, "ttl_s");
    }
    let err = request_err(
        request_with("ttl_s", json!(1.5)),
        code::INVALID_TYPE,
        "ttl_s",
    );
    assert!(err.message.contains("but it is 1.5"), "{err}");
    let err = request_err(
        request_with("ttl_s", json!("600")),
        code::INVALID_TYPE,
        "ttl_s",
    );
    assert!(err.message.contains("but it is a string"), "{err}");
}

#[test]
fn send_at_must_come_before_the_ttl_ends() {
    let now = 1_795_550_400_000;
    let with = |send_at: u64, ttl_s: u64| {
        let mut v = request_with("send_at", json!(crate::model::format_time(send_at)));
        v["ttl_s"] = json!(ttl_s);
        send_request(v, &one_sender()).unwrap()
    };
    assert!(schedule(&with(now + 4_999, 5), now).is_ok());
    assert!(
        schedule(&with(now - 60_000, 5), now).is_ok(),
        "past: due now"
    );
    let err = assert_err(
        schedule(&with(now + 5_000, 5), now),
        code::OUT_OF_RANGE,
        "send_at",
    );
    assert!(err.message.contains("`ttl_s` 5"), "{err}");
    assert_err(
        schedule(&with(4_070_908_800_000, 5), now),
        code::OUT_OF_RANGE,
        "send_at",
    );
    let only_send_at = send_request(
        request_with("send_at", json!("2027-06-01T00:00:00Z")),
        &one_sender(),
    )
    .unwrap();
    assert!(schedule(&only_send_at, now).is_ok());
}

#[test]
fn send_at_is_at_most_a_year_ahead() {
    let now = 1_795_550_400_000;
    let at = |send_at: u64| {
        let v = request_with("send_at", json!(crate::model::format_time(send_at)));
        send_request(v, &one_sender()).unwrap()
    };
    let year_ms = MAX_SEND_AHEAD_S * 1000;
    assert_eq!(MAX_SEND_AHEAD_S, 365 * 86_400);
    assert!(schedule(&at(now + year_ms), now).is_ok());
    let err = assert_err(
        schedule(&at(now + year_ms + 1_000), now),
        code::OUT_OF_RANGE,
        "send_at",
    );
    assert!(err.message.contains("365 days ahead"), "{err}");
    let far = send_request(
        request_with("send_at", json!("9999-12-31T23:59:59Z")),
        &one_sender(),
    )
    .unwrap();
    assert_err(schedule(&far, now), code::OUT_OF_RANGE, "send_at");
    // A time long past is due now.
    let past = send_request(
        request_with("send_at", json!("1970-01-01T00:00:00Z")),
        &one_sender(),
    )
    .unwrap();
    assert!(schedule(&past, now).is_ok());
}

#[test]
fn a_batch_item_that_is_not_an_object_is_named() {
    let text = b"[1, 2, 3]";
    let Ok(crate::borrowed_json::Json::Array(items)) = crate::borrowed_json::parse(text) else {
        panic!("an array")
    };
    let item = items.into_iter().nth(2).unwrap();
    let err = batch_item(item, &one_sender(), 2).unwrap_err();
    assert_eq!(
        (err.status, err.code.as_str()),
        (400, code::MALFORMED_REQUEST)
    );
    assert!(err.message.contains("Item [2] of the batch"), "{err}");
    assert!(err.message.contains("but it is a number"), "{err}");
}

#[test]
fn metadata_rules() {
    for m in [
        json!(5),
        json!("x"),
        json!([1, 2]),
        json!({"a": {"b": [null]}}),
    ] {
        let s = send_request(request_with("metadata", m.clone()), &one_sender()).unwrap();
        assert_eq!(s.metadata.as_deref().map(value), Some(m));
    }
    // `{"k":"…"}` is 8 bytes around the string.
    let exactly = json!({"k": "x".repeat(MAX_METADATA_BYTES - 8)});
    assert_eq!(
        serde_json::to_vec(&exactly).unwrap().len(),
        MAX_METADATA_BYTES
    );
    assert!(send_request(request_with("metadata", exactly), &one_sender()).is_ok());
    let over = json!({"k": "x".repeat(MAX_METADATA_BYTES - 7)});
    request_err(
        request_with("metadata", over),
        code::METADATA_TOO_LARGE,
        "metadata",
    );
}

/// `metadata` as the request wrote it, made compact: numbers as their text, members in their
/// order, and strings with the escapes JSON needs, whichever the request used.
#[test]
fn metadata_is_stored_compact_as_written() {
    let compact =
        r#"{"z":123456789012345678901234567890,"a":[1.10,1E+2,-0,{"s":"é😀/\"\n\u0001"}]}"#;
    for metadata in [
        compact,
        r#"{ "z" : 123456789012345678901234567890 ,
             "a" : [ 1.10 , 1E+2 , -0 , { "s" : "\u00e9\ud83d\ude00\/\"\n\u0001" } ] }"#,
        r#"{"z":123456789012345678901234567890,"a":[1.10,1E+2,-0,{"s":"\u00e9\ud83d\ude00\/\"\n\u0001"}]}"#,
        r#"{"z":123456789012345678901234567890,"a":[1.10,1E+2,-0,{"s":"\u00E9\uD83D\uDE00/\u0022\u000A\u0001"}]}"#,
    ] {
        let text = format!(
            r#"{{"to":"+14155551234","message":{{"type":"text","text":{{"body":"hi"}}}},"metadata":{metadata}}}"#
        );
        let parsed = crate::borrowed_json::parse(text.as_bytes()).unwrap();
        let s = super::send_request(parsed, &one_sender()).unwrap();
        assert_eq!(s.metadata.as_deref(), Some(compact), "{metadata}");
    }
    // The limit is on what is stored: escapes that are not needed do not count.
    let escaped = format!(r#"{{"k":"{}"}}"#, r"\u00e9".repeat(200));
    assert!(escaped.len() > MAX_METADATA_BYTES);
    let text = format!(
        r#"{{"to":"+14155551234","message":{{"type":"text","text":{{"body":"hi"}}}},"metadata":{escaped}}}"#
    );
    let parsed = crate::borrowed_json::parse(text.as_bytes()).unwrap();
    let s = super::send_request(parsed, &one_sender()).unwrap();
    assert_eq!(
        s.metadata,
        Some(format!(r#"{{"k":"{}"}}"#, "é".repeat(200)))
    );
}

// ---- the message envelope ---------------------------------------------------------------

#[test]
fn fields_waq_adds_are_refused() {
    for key in ["messaging_product", "to", "recipient_type"] {
        let mut m = json!({"type": "text", "text": {"body": "hi"}});
        m[key] = json!("x");
        let err = message_err(m, code::FIELD_NOT_ALLOWED, &format!("message.{key}"));
        assert!(err.message.contains("waq adds"), "{err}");
    }
}

#[test]
fn message_type_rules() {
    // Meta reads a message without `type` as text.
    assert_eq!(message_ok(json!({"text": {"body": "hi"}})), "text");
    message_err(
        json!({"text": {"bdy": "hi"}}),
        code::UNKNOWN_FIELD,
        "message.text.bdy",
    );
    // Anything else needs its type said.
    message_err(
        json!({"template": {"name": "hello_world", "language": {"code": "en_US"}}}),
        code::MISSING_FIELD,
        "message.type",
    );
    message_err(json!({"type": 1}), code::INVALID_TYPE, "message.type");
    let err = message_err(
        json!({"type": "txt", "txt": {}}),
        code::INVALID_VALUE,
        "message.type",
    );
    assert!(err.message.contains("did you mean `text`"), "{err}");
    message_err(
        json!({"type": "order"}),
        code::INVALID_VALUE,
        "message.type",
    );
    message_err(json!({"type": "text"}), code::MISSING_FIELD, "message.text");
    message_err(
        json!({"type": "text", "text": {"body": "hi"}, "image": {"id": "1"}}),
        code::FIELD_NOT_ALLOWED,
        "message.image",
    );
    // Unknown members are passed through for Meta's newer features.
    assert_eq!(
        message_ok(json!({"type": "text", "text": {"body": "hi"}, "new_feature": 1})),
        "text"
    );
}

/// Meta refuses a key it does not know (error 100, "Unexpected key"), so a typo is refused at
/// enqueue, named, with the key meant: not sent and failed later, nor dropped.
#[test]
fn misspelt_keys_are_refused_with_the_key_meant() {
    let template = |t: Value| json!({"type": "template", "template": t});
    let lang = json!({"code": "en_US"});
    let body = |p: Value| json!([{"type": "body", "parameters": [p]}]);
    for (m, field, meant) in [
        (
            template(
                json!({"name": "x", "language": lang, "componets": body(json!({"type": "text", "text": "J"}))}),
            ),
            "message.template.componets",
            "components",
        ),
        (
            template(json!({"name": "x", "langauge": lang})),
            "message.template.langauge",
            "language",
        ),
        (
            template(json!({"name": "x", "language": {"code": "en", "polcy": "deterministic"}})),
            "message.template.language.polcy",
            "policy",
        ),
        (
            template(
                json!({"name": "x", "language": lang, "components": [{"type": "body", "paramters": []}]}),
            ),
            "message.template.components[0].paramters",
            "parameters",
        ),
        (
            template(
                json!({"name": "x", "language": lang, "components": body(json!({"type": "text", "text": "J", "parameter_nme": "n"}))}),
            ),
            "message.template.components[0].parameters[0].parameter_nme",
            "parameter_name",
        ),
        (
            json!({"type": "text", "text": {"body": "hi", "preview_ur1": true}}),
            "message.text.preview_ur1",
            "preview_url",
        ),
        (
            json!({"type": "image", "image": {"id": "1", "captoin": "c"}}),
            "message.image.captoin",
            "caption",
        ),
        (
            json!({"type": "text", "text": {"body": "hi"}, "biz_opaque_callbak_data": "x"}),
            "message.biz_opaque_callbak_data",
            "biz_opaque_callback_data",
        ),
        (
            json!({"type": "text", "text": {"body": "hi"}, "recipent_type": "individual"}),
            "message.recipent_type",
            "recipient_type",
        ),
        (
            template(
                json!({"name": "x", "language": lang, "components": [{"type": "header",
                "parameters": [{"type": "image", "image": {"link": "https://example.com/a.png", "lnk": "x"}}]}]}),
            ),
            "message.template.components[0].parameters[0].image.lnk",
            "link",
        ),
        (
            json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "b"},
                "header": {"type": "image", "image": {"id": "1", "captoin": "c"}},
                "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "A"}}]}}}),
            "message.interactive.header.image.captoin",
            "caption",
        ),
        (
            json!({"type": "text", "text": {"body": "hi"}, "context": {"mesage_id": "wamid.X"}}),
            "message.context.mesage_id",
            "message_id",
        ),
        (
            json!({"type": "location", "location": {"latitude": 1, "longitude": 2, "adress": "a"}}),
            "message.location.adress",
            "address",
        ),
        (
            json!({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "x", "emoij": "y"}}),
            "message.reaction.emoij",
            "emoji",
        ),
        (
            json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "b"}, "fotter": {"text": "f"},
                "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "A"}}]}}}),
            "message.interactive.fotter",
            "footer",
        ),
    ] {
        let err = message_err(m, code::UNKNOWN_FIELD, field);
        assert!(
            err.message.contains(&format!("did you mean `{meant}`")),
            "{err}"
        );
    }
    // The fallback template has the same shape and the same check.
    request_err(
        request_with(
            "fallback_template",
            json!({"name": "x", "language": {"code": "en"}, "componets": []}),
        ),
        code::UNKNOWN_FIELD,
        "fallback_template.componets",
    );
}

/// Keys Meta takes that a fixed list would refuse pass: newer media keys, named parameters,
/// parameter types waq does not check, and unrelated new request fields.
#[test]
fn keys_meta_adds_pass_through() {
    message_ok(json!({"type": "audio", "audio": {"id": "1", "voice": true}}));
    message_ok(json!({"type": "image", "image": {"id": "1", "new_option": "x"}}));
    message_ok(
        json!({"type": "template", "template": {"name": "x", "language": {"code": "en"},
        "components": [{"type": "body", "parameters": [
            {"type": "text", "parameter_name": "first_name", "text": "J"},
            {"type": "limited_time_offer", "limited_time_offer": {"expiration_time_ms": 1}}]}]}}),
    );
    message_ok(json!({"type": "text", "text": {"body": "hi"}, "new_feature": {"on": true}}));
    // A carousel template's cards.
    message_ok(
        json!({"type": "template", "template": {"name": "x", "language": {"code": "en"},
        "components": [{"type": "carousel", "cards": [{"card_index": 0, "components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"id": "1"}}]}]}]}]}}),
    );
}

#[test]
fn context_and_callback_data() {
    message_ok(
        json!({"type": "text", "text": {"body": "hi"}, "context": {"message_id": "wamid.X"},
                      "biz_opaque_callback_data": "x".repeat(512)}),
    );
    message_err(
        json!({"type": "text", "text": {"body": "hi"}, "context": {}}),
        code::MISSING_FIELD,
        "message.context.message_id",
    );
    message_err(
        json!({"type": "text", "text": {"body": "hi"}, "context": "wamid.X"}),
        code::INVALID_TYPE,
        "message.context",
    );
    message_err(
        json!({"type": "text", "text": {"body": "hi"}, "biz_opaque_callback_data": "x".repeat(513)}),
        code::TOO_LONG,
        "message.biz_opaque_callback_data",
    );
    message_err(
        json!({"type": "text", "text": {"body": "hi"}, "biz_opaque_callback_data": {}}),
        code::INVALID_TYPE,
        "message.biz_opaque_callback_data",
    );
}

// ---- simple types -----------------------------------------------------------------------

#[test]
fn text_rules() {
    message_ok(json!({"type": "text", "text": {"body": "😀".repeat(4096), "preview_url": true}}));
    message_err(
        json!({"type": "text", "text": {}}),
        code::MISSING_FIELD,
        "message.text.body",
    );
    message_err(
        json!({"type": "text", "text": {"body": ""}}),
        code::EMPTY_VALUE,
        "message.text.body",
    );
    // White space alone is no text to Meta (131008): refused at enqueue, not after it.
    for blank in ["   ", "\n\t ", "\u{3000}"] {
        let err = message_err(
            json!({"type": "text", "text": {"body": blank}}),
            code::EMPTY_VALUE,
            "message.text.body",
        );
        assert!(err.message.contains("white space"), "{err}");
    }
    message_ok(json!({"type": "text", "text": {"body": " ok "}}));
    // So is any other required text: a name, an id, a title.
    message_err(
        json!({"type": "template", "template": {"name": " ", "language": {"code": "en"}}}),
        code::EMPTY_VALUE,
        "message.template.name",
    );
    message_err(
        json!({"type": "reaction", "reaction": {"message_id": "\t", "emoji": ""}}),
        code::EMPTY_VALUE,
        "message.reaction.message_id",
    );
    let err = message_err(
        json!({"type": "text", "text": {"body": "a".repeat(4097)}}),
        code::TOO_LONG,
        "message.text.body",
    );
    assert!(
        err.message.contains("4097") && err.message.contains("4096"),
        "{err}"
    );
    message_err(
        json!({"type": "text", "text": {"body": "😀".repeat(4097)}}),
        code::TOO_LONG,
        "message.text.body",
    );
    let err = message_err(
        json!({"type": "text", "text": {"body": null}}),
        code::INVALID_TYPE,
        "message.text.body",
    );
    assert!(err.message.contains("leave the field out"), "{err}");
    message_err(
        json!({"type": "text", "text": {"body": "hi", "preview_url": "yes"}}),
        code::INVALID_TYPE,
        "message.text.preview_url",
    );
    message_err(
        json!({"type": "text", "text": "hi"}),
        code::INVALID_TYPE,
        "message.text",
    );
}

#[test]
fn location_rules() {
    message_ok(
        json!({"type": "location", "location": {"latitude": 37.48, "longitude": -122.14, "name": "HQ", "address": "1 Way"}}),
    );
    message_ok(json!({"type": "location", "location": {"latitude": "-90", "longitude": "180"}}));
    message_err(
        json!({"type": "location", "location": {"longitude": 1}}),
        code::MISSING_FIELD,
        "message.location.latitude",
    );
    message_err(
        json!({"type": "location", "location": {"latitude": 1}}),
        code::MISSING_FIELD,
        "message.location.longitude",
    );
    message_err(
        json!({"type": "location", "location": {"latitude": 90.5, "longitude": 0}}),
        code::OUT_OF_RANGE,
        "message.location.latitude",
    );
    message_err(
        json!({"type": "location", "location": {"latitude": 0, "longitude": -181}}),
        code::OUT_OF_RANGE,
        "message.location.longitude",
    );
    message_err(
        json!({"type": "location", "location": {"latitude": "NaN", "longitude": 0}}),
        code::OUT_OF_RANGE,
        "message.location.latitude",
    );
    message_err(
        json!({"type": "location", "location": {"latitude": "north", "longitude": 0}}),
        code::INVALID_TYPE,
        "message.location.latitude",
    );
    message_err(
        json!({"type": "location", "location": {"latitude": 0, "longitude": 0, "name": 5}}),
        code::INVALID_TYPE,
        "message.location.name",
    );
}

fn contact(i: usize) -> Value {
    json!({"name": {"formatted_name": format!("Person {i}"), "first_name": "Person"},
           "phones": [{"phone": "+1 650 555 1234", "type": "WORK"}]})
}

#[test]
fn contacts_rules() {
    message_ok(json!({"type": "contacts", "contacts": [contact(0)]}));
    let max: Vec<Value> = (0..257).map(contact).collect();
    message_ok(json!({"type": "contacts", "contacts": max}));
    let over: Vec<Value> = (0..258).map(contact).collect();
    message_err(
        json!({"type": "contacts", "contacts": over}),
        code::TOO_MANY_ITEMS,
        "message.contacts",
    );
    message_err(
        json!({"type": "contacts", "contacts": []}),
        code::TOO_FEW_ITEMS,
        "message.contacts",
    );
    message_err(
        json!({"type": "contacts", "contacts": {}}),
        code::INVALID_TYPE,
        "message.contacts",
    );
    message_err(
        json!({"type": "contacts", "contacts": [contact(0), {}]}),
        code::MISSING_FIELD,
        "message.contacts[1].name",
    );
    message_err(
        json!({"type": "contacts", "contacts": [{"name": {"first_name": "A"}}]}),
        code::MISSING_FIELD,
        "message.contacts[0].name.formatted_name",
    );
    message_err(
        json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "A"}}]}),
        code::MISSING_FIELD,
        "message.contacts[0].name.first_name",
    );
    message_err(
        json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "A", "last_name": "B"}, "phones": "x"}]}),
        code::INVALID_TYPE,
        "message.contacts[0].phones",
    );
}

#[test]
fn reaction_rules() {
    message_ok(json!({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}}));
    message_ok(json!({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": ""}}));
    message_err(
        json!({"type": "reaction", "reaction": {"emoji": "👍"}}),
        code::MISSING_FIELD,
        "message.reaction.message_id",
    );
    message_err(
        json!({"type": "reaction", "reaction": {"message_id": "wamid.X"}}),
        code::MISSING_FIELD,
        "message.reaction.emoji",
    );
    message_err(
        json!({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": 1}}),
        code::INVALID_TYPE,
        "message.reaction.emoji",
    );
}

// ---- media ------------------------------------------------------------------------------

#[test]
fn media_by_id_or_link() {
    for kind in ["image", "audio", "video", "document", "sticker"] {
        assert_eq!(
            message_ok(json!({"type": kind, kind: {"id": "1234"}})),
            kind
        );
        message_ok(json!({"type": kind, kind: {"link": "https://example.com/f"}}));
        message_err(
            json!({"type": kind, kind: {"id": "1", "link": "https://example.com/f"}}),
            code::CONFLICTING_FIELDS,
            &format!("message.{kind}"),
        );
        message_err(
            json!({"type": kind, kind: {}}),
            code::MISSING_FIELD,
            &format!("message.{kind}"),
        );
        message_err(
            json!({"type": kind, kind: {"id": ""}}),
            code::EMPTY_VALUE,
            &format!("message.{kind}.id"),
        );
        message_err(
            json!({"type": kind, kind: {"id": 1234}}),
            code::INVALID_TYPE,
            &format!("message.{kind}.id"),
        );
        message_err(
            json!({"type": kind, kind: {"link": "http://example.com/f"}}),
            code::INVALID_LINK,
            &format!("message.{kind}.link"),
        );
        message_err(
            json!({"type": kind, kind: {"link": "https://bit.ly/abc"}}),
            code::SHORTENED_LINK,
            &format!("message.{kind}.link"),
        );
    }
}

#[test]
fn captions_and_filenames() {
    for kind in ["image", "video", "document"] {
        message_ok(json!({"type": kind, kind: {"id": "1", "caption": "c".repeat(1024)}}));
        message_err(
            json!({"type": kind, kind: {"id": "1", "caption": "c".repeat(1025)}}),
            code::TOO_LONG,
            &format!("message.{kind}.caption"),
        );
    }
    for kind in ["audio", "sticker"] {
        message_err(
            json!({"type": kind, kind: {"id": "1", "caption": "c"}}),
            code::FIELD_NOT_ALLOWED,
            &format!("message.{kind}.caption"),
        );
    }
    message_ok(json!({"type": "document", "document": {"id": "1", "filename": "invoice.pdf"}}));
    message_err(
        json!({"type": "document", "document": {"id": "1", "filename": ""}}),
        code::EMPTY_VALUE,
        "message.document.filename",
    );
    for kind in ["image", "audio", "video", "sticker"] {
        message_err(
            json!({"type": kind, kind: {"id": "1", "filename": "f"}}),
            code::FIELD_NOT_ALLOWED,
            &format!("message.{kind}.filename"),
        );
    }
}

// ---- interactive ------------------------------------------------------------------------

fn reply(id: &str, title: &str) -> Value {
    json!({"type": "reply", "reply": {"id": id, "title": title}})
}

fn buttons(list: Vec<Value>) -> Value {
    json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "Pick one"}, "action": {"buttons": list}}})
}

#[test]
fn reply_buttons() {
    let ok = json!({"type": "interactive", "interactive": {
        "type": "button",
        "header": {"type": "text", "text": "h".repeat(60)},
        "body": {"text": "b".repeat(1024)},
        "footer": {"text": "f".repeat(60)},
        "action": {"buttons": [reply("a", &"t".repeat(20)), reply(&"i".repeat(256), "B"), reply("c", "C")]}}});
    assert_eq!(message_ok(ok), "interactive");
    let p = "message.interactive.action.buttons";
    message_err(buttons(vec![]), code::TOO_FEW_ITEMS, p);
    message_err(
        buttons(vec![
            reply("a", "A"),
            reply("b", "B"),
            reply("c", "C"),
            reply("d", "D"),
        ]),
        code::TOO_MANY_ITEMS,
        p,
    );
    message_err(
        buttons(vec![
            reply("a", "A"),
            reply("b", "B"),
            reply("c", &"t".repeat(21)),
        ]),
        code::TOO_LONG,
        &format!("{p}[2].reply.title"),
    );
    message_err(
        buttons(vec![reply("a", "")]),
        code::EMPTY_VALUE,
        &format!("{p}[0].reply.title"),
    );
    message_err(
        buttons(vec![reply("a", "Yes"), reply("b", "Yes")]),
        code::DUPLICATE_VALUE,
        &format!("{p}[1].reply.title"),
    );
    message_err(
        buttons(vec![reply("a", "Yes"), reply("a", "No")]),
        code::DUPLICATE_VALUE,
        &format!("{p}[1].reply.id"),
    );
    message_err(
        buttons(vec![reply(&"i".repeat(257), "A")]),
        code::TOO_LONG,
        &format!("{p}[0].reply.id"),
    );
    message_err(
        buttons(vec![reply(" a", "A")]),
        code::INVALID_VALUE,
        &format!("{p}[0].reply.id"),
    );
    message_err(
        buttons(vec![
            json!({"type": "url", "reply": {"id": "a", "title": "A"}}),
        ]),
        code::INVALID_VALUE,
        &format!("{p}[0].type"),
    );
    message_err(
        buttons(vec![json!({"type": "reply"})]),
        code::MISSING_FIELD,
        &format!("{p}[0].reply"),
    );
    message_err(
        buttons(vec![json!("a")]),
        code::INVALID_TYPE,
        &format!("{p}[0]"),
    );
    message_err(
        json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "b"}, "action": {}}}),
        code::MISSING_FIELD,
        p,
    );
}

#[test]
fn interactive_envelope() {
    let with = |k: &str, v: Value| {
        let mut m = buttons(vec![reply("a", "A")]);
        m["interactive"][k] = v;
        m
    };
    message_err(
        with("type", json!("buttons")),
        code::INVALID_VALUE,
        "message.interactive.type",
    );
    message_err(
        with("type", Value::Null),
        code::INVALID_TYPE,
        "message.interactive.type",
    );
    message_err(
        with("action", json!([])),
        code::INVALID_TYPE,
        "message.interactive.action",
    );
    message_err(
        with("body", json!({"text": "b".repeat(1025)})),
        code::TOO_LONG,
        "message.interactive.body.text",
    );
    message_err(
        with("body", json!({})),
        code::MISSING_FIELD,
        "message.interactive.body.text",
    );
    message_err(
        with("footer", json!({"text": "f".repeat(61)})),
        code::TOO_LONG,
        "message.interactive.footer.text",
    );
    message_err(
        with("header", json!({"type": "text", "text": "h".repeat(61)})),
        code::TOO_LONG,
        "message.interactive.header.text",
    );
    message_err(
        with("header", json!({"type": "sticker"})),
        code::INVALID_VALUE,
        "message.interactive.header.type",
    );
    message_err(
        with("header", json!({"type": "image"})),
        code::MISSING_FIELD,
        "message.interactive.header.image",
    );
    message_err(
        with("header", json!({"type": "image", "image": {}})),
        code::MISSING_FIELD,
        "message.interactive.header.image",
    );
    message_err(
        with(
            "header",
            json!({"type": "video", "video": {"link": "https://tinyurl.com/x"}}),
        ),
        code::SHORTENED_LINK,
        "message.interactive.header.video.link",
    );
    message_ok(with(
        "header",
        json!({"type": "document", "document": {"id": "1"}}),
    ));
    let mut no_body = buttons(vec![reply("a", "A")]);
    no_body["interactive"]
        .as_object_mut()
        .unwrap()
        .remove("body");
    message_err(no_body, code::MISSING_FIELD, "message.interactive.body");
    let mut no_action = buttons(vec![]);
    no_action["interactive"]
        .as_object_mut()
        .unwrap()
        .remove("action");
    message_err(no_action, code::MISSING_FIELD, "message.interactive.action");
}

fn row(id: &str) -> Value {
    json!({"id": id, "title": "Row", "description": "d"})
}

fn list_message(action: Value) -> Value {
    json!({"type": "interactive", "interactive": {"type": "list", "body": {"text": "Choose"}, "action": action}})
}

#[test]
fn lists() {
    let rows: Vec<Value> = (0..10).map(|i| row(&format!("r{i}"))).collect();
    message_ok(list_message(
        json!({"button": "b".repeat(20), "sections": [{"rows": rows}]}),
    ));
    message_ok(
        json!({"type": "interactive", "interactive": {"type": "list",
        "header": {"type": "text", "text": "H"}, "body": {"text": "b".repeat(4096)},
        "action": {"button": "Open", "sections": [{"title": "A", "rows": [row("1")]}, {"title": "s".repeat(24), "rows": [row("2")]}]}}}),
    );
    let p = "message.interactive.action";
    message_err(
        list_message(json!({"sections": [{"rows": [row("1")]}]})),
        code::MISSING_FIELD,
        &format!("{p}.button"),
    );
    message_err(
        list_message(json!({"button": "b".repeat(21), "sections": [{"rows": [row("1")]}]})),
        code::TOO_LONG,
        &format!("{p}.button"),
    );
    message_err(
        list_message(json!({"button": "Open", "sections": []})),
        code::TOO_FEW_ITEMS,
        &format!("{p}.sections"),
    );
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"title": format!("S{i}"), "rows": [row(&i.to_string())]}))
        .collect();
    message_err(
        list_message(json!({"button": "Open", "sections": eleven})),
        code::TOO_MANY_ITEMS,
        &format!("{p}.sections"),
    );
    let six: Vec<Value> = (0..6).map(|i| row(&format!("a{i}"))).collect();
    let five: Vec<Value> = (0..5).map(|i| row(&format!("b{i}"))).collect();
    message_err(
        list_message(
            json!({"button": "Open", "sections": [{"title": "A", "rows": six}, {"title": "B", "rows": five}]}),
        ),
        code::TOO_MANY_ITEMS,
        &format!("{p}.sections"),
    );
    message_err(
        list_message(json!({"button": "Open", "sections": [{"rows": []}]})),
        code::TOO_FEW_ITEMS,
        &format!("{p}.sections[0].rows"),
    );
    message_err(
        list_message(
            json!({"button": "Open", "sections": [{"rows": [{"id": "1", "title": "t".repeat(25)}]}]}),
        ),
        code::TOO_LONG,
        &format!("{p}.sections[0].rows[0].title"),
    );
    message_err(
        list_message(
            json!({"button": "Open", "sections": [{"rows": [{"id": "i".repeat(201), "title": "t"}]}]}),
        ),
        code::TOO_LONG,
        &format!("{p}.sections[0].rows[0].id"),
    );
    message_err(
        list_message(
            json!({"button": "Open", "sections": [{"rows": [{"id": "1", "title": "t", "description": "d".repeat(73)}]}]}),
        ),
        code::TOO_LONG,
        &format!("{p}.sections[0].rows[0].description"),
    );
    message_err(
        list_message(
            json!({"button": "Open", "sections": [{"title": "A", "rows": [row("1")]}, {"title": "B", "rows": [row("1")]}]}),
        ),
        code::DUPLICATE_VALUE,
        &format!("{p}.sections[1].rows[0].id"),
    );
    message_err(
        list_message(
            json!({"button": "Open", "sections": [{"title": "A", "rows": [row("1")]}, {"rows": [row("2")]}]}),
        ),
        code::MISSING_FIELD,
        &format!("{p}.sections[1].title"),
    );
    message_err(
        list_message(
            json!({"button": "Open", "sections": [{"title": "s".repeat(25), "rows": [row("1")]}]}),
        ),
        code::TOO_LONG,
        &format!("{p}.sections[0].title"),
    );
    let mut long_body = list_message(json!({"button": "Open", "sections": [{"rows": [row("1")]}]}));
    long_body["interactive"]["body"]["text"] = json!("b".repeat(4097));
    message_err(long_body, code::TOO_LONG, "message.interactive.body.text");
    let mut image_header =
        list_message(json!({"button": "Open", "sections": [{"rows": [row("1")]}]}));
    image_header["interactive"]["header"] = json!({"type": "image", "image": {"id": "1"}});
    message_err(
        image_header,
        code::INVALID_VALUE,
        "message.interactive.header.type",
    );
}

fn cta(params: Value) -> Value {
    json!({"type": "interactive", "interactive": {"type": "cta_url", "body": {"text": "See"},
           "action": {"name": "cta_url", "parameters": params}}})
}

#[test]
fn cta_urls() {
    message_ok(cta(
        json!({"display_text": "d".repeat(20), "url": "https://example.com/track?id=1"}),
    ));
    let p = "message.interactive.action.parameters";
    message_err(
        cta(json!({"display_text": "d".repeat(21), "url": "https://example.com"})),
        code::TOO_LONG,
        &format!("{p}.display_text"),
    );
    message_err(
        cta(json!({"display_text": "Go", "url": "http://example.com"})),
        code::INVALID_LINK,
        &format!("{p}.url"),
    );
    message_err(
        cta(json!({"display_text": "Go"})),
        code::MISSING_FIELD,
        &format!("{p}.url"),
    );
    let mut wrong_name = cta(json!({"display_text": "Go", "url": "https://example.com"}));
    wrong_name["interactive"]["action"]["name"] = json!("url");
    message_err(
        wrong_name,
        code::INVALID_VALUE,
        "message.interactive.action.name",
    );
}

fn flow(params: Value) -> Value {
    json!({"type": "interactive", "interactive": {"type": "flow", "body": {"text": "Sign up"},
           "action": {"name": "flow", "parameters": params}}})
}

#[test]
fn flows() {
    message_ok(flow(
        json!({"flow_message_version": "3", "flow_cta": "Sign up", "flow_id": "123", "mode": "draft",
                           "flow_action": "navigate", "flow_action_payload": {"screen": "A"}}),
    ));
    message_ok(flow(
        json!({"flow_message_version": "3", "flow_cta": "Sign up", "flow_name": "signup"}),
    ));
    let p = "message.interactive.action.parameters";
    message_err(
        flow(
            json!({"flow_message_version": "3", "flow_cta": "Go", "flow_id": "1", "flow_name": "x"}),
        ),
        code::CONFLICTING_FIELDS,
        p,
    );
    message_err(
        flow(json!({"flow_message_version": "3", "flow_cta": "Go"})),
        code::MISSING_FIELD,
        &format!("{p}.flow_id"),
    );
    message_err(
        flow(json!({"flow_message_version": "3", "flow_id": "1"})),
        code::MISSING_FIELD,
        &format!("{p}.flow_cta"),
    );
    message_err(
        flow(json!({"flow_message_version": "3", "flow_cta": "c".repeat(31), "flow_id": "1"})),
        code::TOO_LONG,
        &format!("{p}.flow_cta"),
    );
    message_err(
        flow(
            json!({"flow_message_version": "3", "flow_cta": "Go", "flow_id": "1", "mode": "live"}),
        ),
        code::INVALID_VALUE,
        &format!("{p}.mode"),
    );
}

#[test]
fn location_requests_catalogs_and_call_permissions() {
    for (kind, name) in [
        ("location_request_message", "send_location"),
        ("catalog_message", "catalog_message"),
        ("call_permission_request", "call_permission_request"),
    ] {
        message_ok(
            json!({"type": "interactive", "interactive": {"type": kind, "body": {"text": "b"}, "action": {"name": name}}}),
        );
        message_err(
            json!({"type": "interactive", "interactive": {"type": kind, "body": {"text": "b"}, "action": {"name": "x"}}}),
            code::INVALID_VALUE,
            "message.interactive.action.name",
        );
        message_err(
            json!({"type": "interactive", "interactive": {"type": kind, "body": {"text": "b"}, "action": {}}}),
            code::MISSING_FIELD,
            "message.interactive.action.name",
        );
    }
}

#[test]
fn products() {
    let product = json!({"type": "interactive", "interactive": {"type": "product",
        "action": {"catalog_id": "1", "product_retailer_id": "sku-1"}}});
    message_ok(product.clone());
    let mut with_header = product.clone();
    with_header["interactive"]["header"] = json!({"type": "text", "text": "H"});
    message_err(
        with_header,
        code::FIELD_NOT_ALLOWED,
        "message.interactive.header",
    );
    let mut no_sku = product;
    no_sku["interactive"]["action"] = json!({"catalog_id": "1"});
    message_err(
        no_sku,
        code::MISSING_FIELD,
        "message.interactive.action.product_retailer_id",
    );

    let items = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"product_retailer_id": format!("sku-{i}")}))
            .collect()
    };
    let plist = |header: Option<Value>, sections: Value| {
        let mut m = json!({"type": "interactive", "interactive": {"type": "product_list", "body": {"text": "b"},
            "action": {"catalog_id": "1", "sections": sections}}});
        if let Some(h) = header {
            m["interactive"]["header"] = h;
        }
        m
    };
    let header = || Some(json!({"type": "text", "text": "Our picks"}));
    message_ok(plist(
        header(),
        json!([{"title": "A", "product_items": items(30)}]),
    ));
    message_err(
        plist(None, json!([{"title": "A", "product_items": items(1)}])),
        code::MISSING_FIELD,
        "message.interactive.header",
    );
    message_err(
        plist(
            header(),
            json!([{"title": "A", "product_items": items(20)}, {"title": "B", "product_items": items(11)}]),
        ),
        code::TOO_MANY_ITEMS,
        "message.interactive.action.sections",
    );
    message_err(
        plist(header(), json!([{"title": "A", "product_items": [{}]}])),
        code::MISSING_FIELD,
        "message.interactive.action.sections[0].product_items[0].product_retailer_id",
    );
}

// ---- templates --------------------------------------------------------------------------

fn template(t: Value) -> Value {
    json!({"type": "template", "template": t})
}

#[test]
fn template_rules() {
    let full = template(
        json!({"name": "order_update", "language": {"code": "en_US", "policy": "deterministic"},
        "components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/a.jpg"}}]},
            {"type": "body", "parameters": [{"type": "text", "text": "John"}]},
            {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "P"}]},
            {"type": "button", "sub_type": "url", "index": 1, "parameters": [{"type": "text", "text": "x"}]}
        ]}),
    );
    assert_eq!(message_ok(full), "template");
    message_ok(template(
        json!({"name": "hello_world", "language": {"code": "de"}}),
    ));
    let p = "message.template";
    message_err(
        template(json!({"language": {"code": "en"}})),
        code::MISSING_FIELD,
        &format!("{p}.name"),
    );
    message_err(
        template(json!({"name": "", "language": {"code": "en"}})),
        code::EMPTY_VALUE,
        &format!("{p}.name"),
    );
    message_err(
        template(json!({"name": "a".repeat(513), "language": {"code": "en"}})),
        code::TOO_LONG,
        &format!("{p}.name"),
    );
    message_ok(template(
        json!({"name": "a".repeat(512), "language": {"code": "en"}}),
    ));
    for bad in ["Order_Update", "order-update", "order update", "ordér"] {
        message_err(
            template(json!({"name": bad, "language": {"code": "en"}})),
            code::INVALID_TEMPLATE_NAME,
            &format!("{p}.name"),
        );
    }
    message_err(
        template(json!({"name": "x"})),
        code::MISSING_FIELD,
        &format!("{p}.language"),
    );
    message_err(
        template(json!({"name": "x", "language": "en"})),
        code::INVALID_TYPE,
        &format!("{p}.language"),
    );
    message_err(
        template(json!({"name": "x", "language": {}})),
        code::MISSING_FIELD,
        &format!("{p}.language.code"),
    );
    let err = message_err(
        template(json!({"name": "x", "language": {"code": "en-us"}})),
        code::INVALID_LANGUAGE_CODE,
        &format!("{p}.language.code"),
    );
    assert!(err.message.contains("did you mean \"en_US\""), "{err}");
    message_err(
        template(json!({"name": "x", "language": {"code": "english"}})),
        code::INVALID_LANGUAGE_CODE,
        &format!("{p}.language.code"),
    );
    message_err(
        template(json!({"name": "x", "language": {"code": "en", "policy": "fallback"}})),
        code::INVALID_VALUE,
        &format!("{p}.language.policy"),
    );
    message_err(
        template(json!({"name": "x", "language": {"code": "en"}, "components": {}})),
        code::INVALID_TYPE,
        &format!("{p}.components"),
    );
    message_err(
        template(json!({"name": "x", "language": {"code": "en"}, "components": ["body"]})),
        code::INVALID_TYPE,
        &format!("{p}.components[0]"),
    );
    message_err(
        template(json!({"name": "x", "language": {"code": "en"}, "components": [{}]})),
        code::MISSING_FIELD,
        &format!("{p}.components[0].type"),
    );
    message_err(
        template(
            json!({"name": "x", "language": {"code": "en"}, "components": [{"type": "button", "index": "0"}]}),
        ),
        code::MISSING_FIELD,
        &format!("{p}.components[0].sub_type"),
    );
    message_err(
        template(
            json!({"name": "x", "language": {"code": "en"}, "components": [{"type": "button", "sub_type": "url"}]}),
        ),
        code::MISSING_FIELD,
        &format!("{p}.components[0].index"),
    );
    message_err(
        template(
            json!({"name": "x", "language": {"code": "en"}, "components": [{"type": "button", "sub_type": "url", "index": "first"}]}),
        ),
        code::INVALID_VALUE,
        &format!("{p}.components[0].index"),
    );
    message_err(
        template(
            json!({"name": "x", "language": {"code": "en"}, "components": [{"type": "body", "parameters": [{"text": "x"}]}]}),
        ),
        code::MISSING_FIELD,
        &format!("{p}.components[0].parameters[0].type"),
    );
    message_err(
        template(
            json!({"name": "x", "language": {"code": "en"}, "components": [{"type": "body", "parameters": {}}]}),
        ),
        code::INVALID_TYPE,
        &format!("{p}.components[0].parameters"),
    );
}

#[test]
fn template_media_parameters_follow_the_media_rules() {
    let with_header = |param: Value| {
        template(json!({"name": "x", "language": {"code": "en"},
            "components": [{"type": "header", "parameters": [param]}]}))
    };
    let p = "message.template.components[0].parameters[0]";
    for (kind, media) in [
        ("image", json!({"link": "https://example.com/a.jpg"})),
        ("video", json!({"id": "1234"})),
        (
            "document",
            json!({"link": "https://example.com/a.pdf", "filename": "a.pdf"}),
        ),
    ] {
        message_ok(with_header(json!({"type": kind, kind: media})));
    }
    message_err(
        with_header(json!({"type": "image", "image": {"link": "http://e.com/a.jpg"}})),
        code::INVALID_LINK,
        &format!("{p}.image.link"),
    );
    message_err(
        with_header(json!({"type": "video", "video": {"link": "https://bit.ly/abc"}})),
        code::SHORTENED_LINK,
        &format!("{p}.video.link"),
    );
    message_err(
        with_header(
            json!({"type": "document", "document": {"id": "1", "link": "https://e.com/a.pdf"}}),
        ),
        code::CONFLICTING_FIELDS,
        &format!("{p}.document"),
    );
    message_err(
        with_header(json!({"type": "image", "image": {}})),
        code::MISSING_FIELD,
        &format!("{p}.image"),
    );
    message_err(
        with_header(json!({"type": "image"})),
        code::MISSING_FIELD,
        &format!("{p}.image"),
    );
    message_err(
        with_header(json!({"type": "image", "image": "https://e.com/a.jpg"})),
        code::INVALID_TYPE,
        &format!("{p}.image"),
    );
    // The fallback template is checked the same way, under its own path.
    let mut v = template_request_with_fallback();
    v["fallback_template"]["components"] = json!([{"type": "header",
        "parameters": [{"type": "image", "image": {"link": "http://e.com/a.jpg"}}]}]);
    request_err(
        v,
        code::INVALID_LINK,
        "fallback_template.components[0].parameters[0].image.link",
    );
}

#[test]
fn template_parameters_need_their_text() {
    let with = |component: Value| {
        template(json!({"name": "x", "language": {"code": "en"}, "components": [component]}))
    };
    let body = |param: Value| with(json!({"type": "body", "parameters": [param]}));
    let p = "message.template.components[0].parameters[0]";
    message_ok(body(json!({"type": "text", "text": "John"})));
    message_ok(body(
        json!({"type": "text", "parameter_name": "first_name", "text": "John"}),
    ));
    let err = message_err(
        body(json!({"type": "text", "text": ""})),
        code::EMPTY_VALUE,
        &format!("{p}.text"),
    );
    assert!(
        err.message
            .ends_with("give it a value of 1 to 32768 characters."),
        "{err}"
    );
    message_err(
        body(json!({"type": "text"})),
        code::MISSING_FIELD,
        &format!("{p}.text"),
    );
    message_ok(body(
        json!({"type": "text", "text": "x".repeat(MAX_PARAMETER_TEXT)}),
    ));
    message_err(
        body(json!({"type": "text", "text": "x".repeat(MAX_PARAMETER_TEXT + 1)})),
        code::TOO_LONG,
        &format!("{p}.text"),
    );
    // Meta's reference sends quick-reply texts as booleans; waq leaves those to Meta.
    message_ok(with(
        json!({"type": "button", "sub_type": "quick_reply", "index": 0, "parameters": [{"type": "text", "text": true}]}),
    ));

    for (kind, value) in [
        (
            "currency",
            json!({"fallback_value": "$100.99", "code": "USD", "amount_1000": 100990}),
        ),
        ("date_time", json!({"fallback_value": "February 25, 1977"})),
    ] {
        message_ok(body(json!({"type": kind, kind: value})));
        let mut empty = value.clone();
        empty["fallback_value"] = json!("");
        message_err(
            body(json!({"type": kind, kind: empty})),
            code::EMPTY_VALUE,
            &format!("{p}.{kind}.fallback_value"),
        );
        message_err(
            body(json!({"type": kind, kind: {}})),
            code::MISSING_FIELD,
            &format!("{p}.{kind}.fallback_value"),
        );
        message_err(
            body(json!({"type": kind})),
            code::MISSING_FIELD,
            &format!("{p}.{kind}"),
        );
    }

    let button = |param: Value| {
        with(
            json!({"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [param]}),
        )
    };
    message_ok(button(json!({"type": "payload", "payload": "P"})));
    message_err(
        button(json!({"type": "payload", "payload": ""})),
        code::EMPTY_VALUE,
        &format!("{p}.payload"),
    );
    message_err(
        button(json!({"type": "payload"})),
        code::MISSING_FIELD,
        &format!("{p}.payload"),
    );
    message_ok(button(
        json!({"type": "coupon_code", "coupon_code": "25OFF"}),
    ));
    message_err(
        button(json!({"type": "coupon_code", "coupon_code": ""})),
        code::EMPTY_VALUE,
        &format!("{p}.coupon_code"),
    );
    message_err(
        with(
            json!({"type": "button", "sub_type": "url", "index": "1", "parameters": [{"type": "text", "text": ""}]}),
        ),
        code::EMPTY_VALUE,
        &format!("{p}.text"),
    );

    // In the fallback template too, under its own path.
    let mut v = template_request_with_fallback();
    v["fallback_template"]["components"] =
        json!([{"type": "body", "parameters": [{"type": "text", "text": ""}]}]);
    request_err(
        v,
        code::EMPTY_VALUE,
        "fallback_template.components[0].parameters[0].text",
    );
}

#[test]
fn body_and_header_parameters_have_no_line_breaks_tabs_or_runs_of_spaces() {
    let with = |ctype: &str, text: &str| {
        template(json!({"name": "x", "language": {"code": "en"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "ok"}]},
                           {"type": ctype, "parameters": [{"type": "text", "text": text}]}]}))
    };
    let field = "message.template.components[1].parameters[0].text";
    for ctype in ["body", "header", "BODY"] {
        message_ok(with(ctype, "Order 4521 ships today"));
        message_ok(with(ctype, "four    spaces"));
        message_ok(with(ctype, "emoji 🚚 and ünïcode"));
        for (text, problem) in [
            ("line\nbreak", "a line break"),
            ("carriage\rreturn", "a line break"),
            ("ends with a line break\n", "a line break"),
            ("tab\there", "a tab"),
            ("five     spaces", "more than 4 spaces in a row"),
            ("      ", "more than 4 spaces in a row"),
        ] {
            let err = message_err(with(ctype, text), code::INVALID_VALUE, field);
            assert!(err.message.contains(&format!("has {problem}:")), "{err}");
            assert!(err.message.contains("132018"), "{err}");
        }
    }
    // A button's text parameter is a URL suffix, with rules of its own: left to Meta.
    message_ok(with_button_text("a\tb"));

    // The fallback template is checked the same way, under its own path.
    let mut v = template_request_with_fallback();
    v["fallback_template"]["components"] =
        json!([{"type": "body", "parameters": [{"type": "text", "text": "two\nlines"}]}]);
    request_err(
        v,
        code::INVALID_VALUE,
        "fallback_template.components[0].parameters[0].text",
    );
}

fn with_button_text(text: &str) -> Value {
    template(
        json!({"name": "x", "language": {"code": "en"}, "components": [
        {"type": "button", "sub_type": "url", "index": "0",
         "parameters": [{"type": "text", "text": text}]}]}),
    )
}

fn template_request_with_fallback() -> Value {
    request_with(
        "fallback_template",
        json!({"name": "order_update", "language": {"code": "en_US"}}),
    )
}

#[test]
fn template_object_uses_the_given_path() {
    assert_err(
        template_object(
            &json!({"name": "x", "language": {"code": "EN"}}),
            "fallback_template",
        ),
        code::INVALID_LANGUAGE_CODE,
        "fallback_template.language.code",
    );
    assert!(template_object(
        &json!({"name": "x", "language": {"code": "pt_BR"}}),
        "fallback_template"
    )
    .is_ok());
}

#[test]
fn templates_do_not_need_the_window() {
    let v = request_with(
        "message",
        template(json!({"name": "hello_world", "language": {"code": "en_US"}})),
    );
    let s = send_request(v, &one_sender()).unwrap();
    assert_eq!(s.kind, "template");
    assert!(!s.needs_window());
}

#[test]
fn every_validation_code_is_in_the_socket_api_reference() {
    let reference = include_str!("../../docs/socket-api.md");
    let source = include_str!("mod.rs");
    let codes: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split_once(": &str = \"").map(|(_, v)| v))
        .filter_map(|v| v.strip_suffix("\";"))
        .collect();
    assert!(codes.len() >= 20, "{codes:?}");
    for c in codes {
        assert!(
            reference.contains(&format!("| `{c}`")) || reference.contains(&format!(", `{c}`")),
            "docs/socket-api.md does not list the code `{c}` in its table"
        );
    }
}

#[test]
fn template_component_types_are_meta_s() {
    let with_type = |t: &str| {
        template_object(
            &json!({"name": "x", "language": {"code": "en"}, "components": [{"type": t, "parameters": []}]}),
            "message.template",
        )
    };
    for ok in ["header", "body", "BODY", "carousel", "limited_time_offer"] {
        assert!(with_type(ok).is_ok(), "{ok}");
    }
    for bad in ["bdy", "footer", "buttons"] {
        assert_err(
            with_type(bad),
            code::INVALID_VALUE,
            "message.template.components[0].type",
        );
    }
    let e = with_type("bdy").unwrap_err();
    assert!(
        e.message.contains("(did you mean `body`?)"),
        "{}",
        e.message
    );
}
