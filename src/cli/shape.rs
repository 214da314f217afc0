//! Whether an answer on the socket is a waq daemon's. Another program listening there (Docker's
//! Engine API, a proxy, some service's health endpoint) may well answer JSON, and a script must
//! never take its answer for a message queued or a refusal. So every answer is checked before
//! it is reported: a success must have the fields its command reads, any other status waq's
//! error envelope `{"error":{"code","message"}}`. Anything else is exit 3, as if no daemon were
//! there, since none is.

use std::path::Path;

use hyper::body::Bytes;
use serde_json::Value;

use super::client::{Reply, Unreachable};

/// The JSON type a field must have.
#[derive(Clone, Copy)]
pub enum Kind {
    Str,
    StrOrNull,
    Bool,
    Array,
    Object,
    Number,
}

impl Kind {
    fn fits(self, v: &Value) -> bool {
        match self {
            Kind::Str => v.is_string(),
            Kind::StrOrNull => v.is_string() || v.is_null(),
            Kind::Bool => v.is_boolean(),
            Kind::Array => v.is_array(),
            Kind::Object => v.is_object(),
            Kind::Number => v.is_u64(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::StrOrNull => "a string or null",
            Kind::Bool => "true or false",
            Kind::Array => "an array",
            Kind::Object => "an object",
            Kind::Number => "a count",
        }
    }
}

/// The fields a command reads from a successful answer. Only fields every daemon version this
/// client may meet sends: a newer client must still read an older daemon.
pub struct Shape {
    fields: &'static [(&'static str, Kind)],
    /// `GET /v1/health`: a 503 may carry the health report instead of an error.
    report_on_error: bool,
}

impl Shape {
    const fn of(fields: &'static [(&'static str, Kind)]) -> Shape {
        Shape {
            fields,
            report_on_error: false,
        }
    }

    /// The first field missing or of the wrong type, said for a person.
    fn misfit(&self, v: &Value) -> Option<String> {
        if !v.is_object() {
            return Some("is not a JSON object".into());
        }
        self.fields.iter().find_map(|(key, kind)| match v.get(key) {
            None => Some(format!("has no `{key}`")),
            Some(x) if !kind.fits(x) => Some(format!("has a `{key}` that is not {}", kind.name())),
            Some(_) => None,
        })
    }
}

/// `POST /v1/messages`, `POST /v1/messages/{id}/retry`.
pub const ACCEPTED: Shape = Shape::of(&[("id", Kind::Str), ("state", Kind::Str)]);
/// `GET /v1/messages/{id}`, `DELETE /v1/messages/{id}`.
pub const MESSAGE: Shape = Shape::of(&[
    ("id", Kind::Str),
    ("state", Kind::Str),
    ("history", Kind::Array),
]);
/// `DELETE /v1/messages?to=&sender=`.
pub const CANCELLED: Shape = Shape::of(&[("cancelled", Kind::Number), ("sending", Kind::Number)]);
/// `POST /v1/messages/retry?code=&to=&sender=`.
pub const RETRIED: Shape = Shape::of(&[("retried", Kind::Number)]);
/// `GET /v1/messages`.
pub const PAGE: Shape = Shape::of(&[("messages", Kind::Array), ("next_cursor", Kind::StrOrNull)]);
/// `GET /v1/stats`.
pub const STATS: Shape = Shape::of(&[("messages", Kind::Object), ("senders", Kind::Array)]);
/// `GET /v1/health`; `status` alone would fit many a service's health answer.
pub const HEALTH: Shape = Shape {
    fields: &[("status", Kind::Str), ("paused_senders", Kind::Array)],
    report_on_error: true,
};
/// `POST /v1/senders/{name}/resume`.
pub const RESUMED: Shape = Shape::of(&[("sender", Kind::Str), ("resumed", Kind::Bool)]);
/// `GET /v1/recipients/{number}`, `POST /v1/inbound`.
pub const RECIPIENT: Shape = Shape::of(&[
    ("sender", Kind::Str),
    ("recipient", Kind::Str),
    ("window_open", Kind::Bool),
]);
/// `GET /v1/events`, whose success is a stream checked line by line: only refusals come here.
pub const STREAM: Shape = Shape::of(&[]);

/// An answer checked to be a waq daemon's.
pub struct Answer {
    pub status: u16,
    /// As it came, for `--json`.
    pub body: Bytes,
    /// The parsed body.
    pub value: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The health report a 503 carries while the store refuses writes.
    pub fn is_report(&self) -> bool {
        !self.ok() && self.value.get("status").is_some()
    }
}

/// `reply` as an [`Answer`] if it is a waq daemon's for a command reading `shape`, else the
/// exit-3 failure saying what answered is not one.
pub fn check(reply: Reply, shape: &Shape, socket: &Path) -> Result<Answer, Unreachable> {
    let Reply { status, body } = reply;
    let ok = (200..300).contains(&status);
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return Err(not_waq(
            socket,
            &format!("it answered {status} with something that is not JSON"),
            &body,
        ));
    };
    let misfit = if ok || (shape.report_on_error && value.get("status").is_some()) {
        shape.misfit(&value)
    } else {
        envelope_misfit(&value)
    };
    match misfit {
        None => Ok(Answer {
            status,
            body,
            value,
        }),
        Some(why) => {
            let what = if ok { "answer" } else { "error answer" };
            Err(not_waq(
                socket,
                &format!("its {what} ({status}) {why}"),
                &body,
            ))
        }
    }
}

/// What keeps `v` from being waq's error envelope.
fn envelope_misfit(v: &Value) -> Option<String> {
    let Some(e) = v.get("error") else {
        return Some("has no `error` object".into());
    };
    if !e.is_object() {
        return Some("has an `error` that is not an object".into());
    }
    ["code", "message"].into_iter().find_map(|key| {
        (!e.get(key).is_some_and(Value::is_string))
            .then(|| format!("has an `error` without a string `{key}`"))
    })
}

/// The exit-3 failure for an answer that is not a waq daemon's: `why`, and the start of what
/// came, so that a person can tell what is listening.
pub fn not_waq(socket: &Path, why: &str, body: &[u8]) -> Unreachable {
    const SHOWN: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]);
    let text: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let more = if body.len() > SHOWN { "…" } else { "" };
    let came = if text.is_empty() {
        String::new()
    } else {
        format!(" (it sent: {text}{more})")
    };
    Unreachable(format!(
        "what answered on {} is not a waq daemon: {why}{came}; point --socket or $WAQ_SOCKET \
         at the daemon's socket (socket.path of its configuration)",
        socket.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: Bytes::from(body.to_string()),
        }
    }

    fn verdict(status: u16, body: &str, shape: &Shape) -> Result<u16, String> {
        check(reply(status, body), shape, Path::new("/s.sock"))
            .map(|a| a.status)
            .map_err(|e| e.0)
    }

    #[test]
    fn a_success_needs_the_fields_its_command_reads() {
        assert_eq!(
            verdict(
                202,
                r#"{"id":"0000000000000001","state":"queued"}"#,
                &ACCEPTED
            ),
            Ok(202)
        );
        let e = verdict(200, r#"{"foo":1}"#, &ACCEPTED).unwrap_err();
        assert!(
            e.contains("/s.sock is not a waq daemon") && e.contains("has no `id`"),
            "{e}"
        );
        assert!(e.contains(r#"(it sent: {"foo":1})"#), "{e}");
        let e = verdict(200, r#"{"status":"ok"}"#, &HEALTH).unwrap_err();
        assert!(e.contains("`paused_senders`"), "{e}");
        let e = verdict(200, r#"{"messages":[],"next_cursor":3}"#, &PAGE).unwrap_err();
        assert!(
            e.contains("a `next_cursor` that is not a string or null"),
            "{e}"
        );
        assert!(verdict(200, "[1]", &STREAM).is_err());
        assert!(verdict(200, "<html>", &STATS).is_err());
    }

    #[test]
    fn an_error_needs_waqs_envelope() {
        let refusal = r#"{"error":{"code":"not_found","message":"no message 0000000000000001"}}"#;
        assert_eq!(verdict(404, refusal, &MESSAGE), Ok(404));
        let e = verdict(404, r#"{"message":"page not found"}"#, &PAGE).unwrap_err();
        assert!(
            e.contains("its error answer (404) has no `error` object"),
            "{e}"
        );
        assert!(verdict(301, "", &PAGE).is_err());
        assert!(verdict(404, r#"{"error":"nope"}"#, &PAGE).is_err());
        assert!(verdict(500, r#"{"error":{"code":1,"message":"x"}}"#, &PAGE).is_err());
        assert!(verdict(400, "", &RECIPIENT).is_err());
    }

    #[test]
    fn a_503_health_report_is_checked_as_a_report() {
        let report = r#"{"status":"degraded","paused_senders":[],"store":{"code":"disk_full","message":"m"}}"#;
        assert_eq!(verdict(503, report, &HEALTH), Ok(503));
        assert!(verdict(503, r#"{"status":"down"}"#, &HEALTH).is_err());
        let stopping = r#"{"error":{"code":"shutting_down","message":"m"}}"#;
        assert_eq!(verdict(503, stopping, &HEALTH), Ok(503));
        // Only health answers with a report.
        assert!(verdict(503, report, &STATS).is_err());
    }
}
