//! Human output of the client commands (`--json` bypasses all of this).

use serde_json::value::RawValue;
use serde_json::Value;

use crate::model::State;

use super::text;

pub fn enqueued(v: &Value) {
    if v.get("duplicate").and_then(Value::as_bool) == Some(true) {
        // The id second, as in `queued ID`, so scripts can cut it out either way.
        outln!("duplicate {} ({})", text(v, "id"), text(v, "state"));
    } else {
        outln!("{} {}", text(v, "state"), text(v, "id"));
    }
}

/// `body`: the answer `v` was read from, for the metadata as the daemon wrote it.
pub fn message(v: &Value, body: &[u8]) {
    let rows = [
        ("id", text(v, "id").to_string()),
        ("state", text(v, "state").to_string()),
        ("sender", text(v, "sender").to_string()),
        ("to", text(v, "to").to_string()),
        ("type", text(v, "type").to_string()),
        ("priority", text(v, "priority").to_string()),
        (
            "attempts",
            v.get("attempts").map(|a| a.to_string()).unwrap_or_default(),
        ),
        ("created", text(v, "created_at").to_string()),
        ("updated", text(v, "updated_at").to_string()),
        ("next attempt", text(v, "next_attempt_at").to_string()),
        ("expires", text(v, "expires_at").to_string()),
        ("wamid", text(v, "wamid").to_string()),
        ("sent template", text(v, "substituted_template").to_string()),
        ("last error", last_error(v.get("last_error"))),
        ("metadata", metadata(body).unwrap_or("-").to_string()),
    ];
    for (k, val) in rows {
        outln!("{k:<13} {val}");
    }
    outln!("history:");
    for h in v
        .get("history")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // A detail that only repeats the state ("queued") says nothing more: left out.
        let (state, detail) = (text(h, "state"), text(h, "detail"));
        let detail = if detail == state { "" } else { detail };
        let line = format!("  {}  {:<9}  {}", text(h, "at"), state, detail);
        outln!("{}", line.trim_end());
    }
}

/// The answer's `metadata` as the daemon wrote it (read from `v`, its numbers would be
/// doubles); `None` when it is null or absent.
fn metadata(body: &[u8]) -> Option<&str> {
    #[derive(serde::Deserialize)]
    struct Part<'a> {
        #[serde(borrow)]
        metadata: Option<&'a RawValue>,
    }
    let part: Part = serde_json::from_slice(body).ok()?;
    part.metadata.map(RawValue::get)
}

fn last_error(e: Option<&Value>) -> String {
    match e.filter(|e| !e.is_null()) {
        None => "-".into(),
        Some(e) => {
            let mut s = format!("{}: {}", text(e, "code"), text(e, "message"));
            if let Some(code) = e.get("meta_code").and_then(Value::as_i64) {
                s.push_str(&format!(" (Meta error {code})"));
            }
            s
        }
    }
}

/// One page of `ls`; `header` on the first page only. `paging`: `--all` follows the cursor
/// itself, so the hint to do so is left out.
pub fn list(v: &Value, header: bool, paging: bool) {
    if header {
        // Wide enough for the longest state (`cancelled`) and type (`interactive`). The sender's
        // name, of any length, comes last so that it never pushes the columns after it.
        outln!(
            "{:<16}  {:<9}  {:<11}  {:<15}  {:>3}  {:<24}  SENDER",
            "ID",
            "STATE",
            "TYPE",
            "TO",
            "TRY",
            "UPDATED"
        );
    }
    for m in v
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        outln!(
            "{:<16}  {:<9}  {:<11}  {:<15}  {:>3}  {:<24}  {}",
            text(m, "id"),
            text(m, "state"),
            text(m, "type"),
            text(m, "to"),
            m.get("attempts").and_then(Value::as_u64).unwrap_or(0),
            text(m, "updated_at"),
            text(m, "sender"),
        );
    }
    let next = v.get("next_cursor").and_then(Value::as_str);
    let none = v
        .get("messages")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if header && none && next.is_none() {
        crate::stderr_line!("(no messages match)");
    }
    if let Some(next) = next.filter(|_| !paging) {
        crate::stderr_line!("(more: --cursor {next}, or --all)");
    }
}

pub fn stats(v: &Value) {
    // In lifecycle order rather than the answer's alphabetical one.
    let counts: Vec<String> = State::ALL
        .iter()
        .filter_map(|s| {
            let n = v.get("messages")?.get(s.as_str())?;
            Some(format!("{} {n}", s.as_str()))
        })
        .collect();
    outln!("messages     {}", counts.join(", "));
    let mut depth = format!(
        "queue depth  {}   in flight {}",
        v.get("queue_depth").unwrap_or(&Value::Null),
        v.get("in_flight").unwrap_or(&Value::Null)
    );
    if let Some(cap) = v.get("global_mps").and_then(Value::as_u64) {
        depth.push_str(&format!(
            "   all senders capped at {cap}/s (dispatch.global_mps)"
        ));
    }
    outln!("{depth}");
    let senders = v.get("senders").and_then(Value::as_array);
    let width = super::watch::name_width(senders.into_iter().flatten(), 10);
    for s in senders.into_iter().flatten() {
        let mut line = format!(
            "sender {:<width$} mps {} (now {}), last second {}, in flight {}, queued {}",
            text(s, "name"),
            s.get("mps").unwrap_or(&Value::Null),
            // A rate climbing back after a throttle is fractional; one decimal is enough.
            s.get("effective_mps").and_then(Value::as_f64).map_or_else(
                || "?".to_string(),
                |r| format!("{}", (r * 10.0).round() / 10.0)
            ),
            s.get("sent_last_second").unwrap_or(&Value::Null),
            s.get("in_flight").unwrap_or(&Value::Null),
            s.get("queued").unwrap_or(&Value::Null),
        );
        if s.get("paused").and_then(Value::as_bool) == Some(true) {
            line.push_str(&format!(", PAUSED: {}", text(s, "pause_reason")));
        }
        if s.get("configured").and_then(Value::as_bool) == Some(false) {
            line.push_str(", NOT CONFIGURED: its messages are held until it is configured again");
        }
        if let Some(u) = s.get("unreachable").filter(|u| u.is_object()) {
            line.push_str(&format!(
                ", UNREACHABLE: no answer from the Graph API since {} ({})",
                text(u, "since"),
                text(u, "last_error")
            ));
        }
        if let Some(l) = s.get("messaging_limit").filter(|l| l.is_object()) {
            line.push_str(&format!(
                ", messaging limit {} of {} users in 24 h",
                l.get("reached_24h").unwrap_or(&Value::Null),
                l.get("limit").unwrap_or(&Value::Null),
            ));
            if l.get("full_until").is_some_and(Value::is_string) {
                line.push_str(&format!(
                    " (new users held until {})",
                    text(l, "full_until")
                ));
            }
        }
        outln!("{line}");
    }
    let counters: Vec<String> = v
        .get("counters")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if !counters.is_empty() {
        outln!("counters     {}", counters.join(", "));
    }
    if let Some(bytes) = v.get("disk_bytes").and_then(Value::as_u64) {
        outln!(
            "store        {:.1} MiB on disk",
            bytes as f64 / (1024.0 * 1024.0)
        );
    }
}

/// `waq cancel --to/--sender`.
pub fn cancelled(v: &Value) {
    let count = |key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
    let (cancelled, sending) = (count("cancelled"), count("sending"));
    let noun = if cancelled == 1 {
        "message"
    } else {
        "messages"
    };
    let mut line = format!("cancelled {cancelled} {noun}");
    if sending > 0 {
        line.push_str(&format!(
            "; {sending} already on {} way to Meta, left as {}",
            if sending == 1 { "its" } else { "their" },
            if sending == 1 { "it is" } else { "they are" }
        ));
    }
    outln!("{line}");
}

pub fn health(v: &Value) {
    let listed = |key: &str| v.get(key).and_then(Value::as_array).into_iter().flatten();
    let paused: Vec<String> = listed("paused_senders")
        .map(|p| format!("{} paused ({})", text(p, "name"), text(p, "reason")))
        .chain(listed("unconfigured_senders").map(|u| {
            let queued = u.get("queued").unwrap_or(&Value::Null);
            let noun = if queued.as_u64() == Some(1) {
                "message"
            } else {
                "messages"
            };
            format!(
                "{} not configured, holding {queued} queued {noun}",
                text(u, "name")
            )
        }))
        .chain(listed("unreachable_senders").map(|u| {
            format!(
                "{} cannot reach the Graph API since {} ({} requests in a row without an answer: {})",
                text(u, "name"),
                text(u, "since"),
                u.get("failures").unwrap_or(&Value::Null),
                text(u, "last_error")
            )
        }))
        .chain(v.get("webhook_relay").filter(|r| r.is_object()).map(|r| {
            format!(
                "webhook relay failing since {} ({} deliveries in a row: {}; {} chunks waiting)",
                text(r, "since"),
                r.get("failures").unwrap_or(&Value::Null),
                text(r, "last_problem"),
                r.get("backlog_chunks").unwrap_or(&Value::Null)
            )
        }))
        .chain(v.get("store").map(|e| {
            format!(
                "store refuses writes ({}): {}",
                text(e, "code"),
                text(e, "message")
            )
        }))
        .collect();
    if paused.is_empty() {
        outln!("{}", text(v, "status"));
    } else {
        outln!("{}: {}", text(v, "status"), paused.join("; "));
    }
    // Working as configured, so not part of the status: a line of its own each.
    for l in listed("senders_at_messaging_limit") {
        outln!(
            "{} is at its messaging limit ({} of {} users outside a window in 24 h); sends to new users are held until {}",
            text(l, "name"),
            l.get("reached_24h").unwrap_or(&Value::Null),
            l.get("limit").unwrap_or(&Value::Null),
            text(l, "full_until")
        );
    }
}

pub fn recipient(v: &Value) {
    let open = v.get("window_open").and_then(Value::as_bool) == Some(true);
    if open {
        outln!(
            "window of {} with {} open until {}; free-form messages are sent until {}",
            text(v, "recipient"),
            text(v, "sender"),
            text(v, "window_open_until"),
            text(v, "free_form_until")
        );
    } else if v.get("last_inbound_at").is_some_and(Value::is_string) {
        // Closed by time (or inside waq's margin before Meta's end): say since when.
        outln!(
            "window of {} with {} closed: free-form messages went out until {} (last inbound {}, Meta's window until {})",
            text(v, "recipient"),
            text(v, "sender"),
            text(v, "free_form_until"),
            text(v, "last_inbound_at"),
            text(v, "window_open_until")
        );
    } else {
        outln!(
            "window of {} with {} closed: they have not written",
            text(v, "recipient"),
            text(v, "sender")
        );
    }
}
