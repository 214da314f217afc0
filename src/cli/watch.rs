//! `waq stats --watch`: `GET /v1/stats` every `--interval`, drawn as a live view on a terminal
//! (redrawn in place), as repeated blocks when stdout is not a terminal, or as one JSON line per
//! refresh with `--json`. Ctrl-C (or SIGTERM) ends it with exit code 0.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::Method;
use serde_json::Value;

use crate::model::State;

use super::client::{Client, Unreachable};
use super::shape;
use super::{text, ClientOpts, EXIT_OK};

/// Shortest refresh accepted: faster is load without information (rates are per second).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

const STOP_SIGNALS: [i32; 2] = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];

fn no_handler(e: std::io::Error) -> Unreachable {
    Unreachable(format!("cannot install a signal handler: {e}"))
}

/// A flag raised by Ctrl-C (SIGINT) or SIGTERM, for the commands that run until stopped:
/// stopping them is how they end, so it is a success (exit 0), not an interruption. A second
/// signal ends the process at once (exit 0), should the first find it blocked, say writing
/// to a reader that stalled.
fn stop_flag() -> Result<Arc<AtomicBool>, Unreachable> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in STOP_SIGNALS {
        // Checked before the flag is raised: only a signal after the first exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_OK, stop.clone())
            .map_err(no_handler)?;
        signal_hook::flag::register(sig, stop.clone()).map_err(no_handler)?;
    }
    Ok(stop)
}

/// Ends the process with exit code 0 at Ctrl-C or SIGTERM, from the signal handler itself,
/// whatever the command is doing (even blocked writing to a reader that stalled): for output
/// that is flushed as it goes, such as `waq events`.
pub fn exit_0_on_stop() -> Result<(), Unreachable> {
    let always = Arc::new(AtomicBool::new(true));
    for sig in STOP_SIGNALS {
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_OK, always.clone())
            .map_err(no_handler)?;
    }
    Ok(())
}

pub async fn watch(c: &ClientOpts, interval: Duration) -> Result<i32, Unreachable> {
    let stop = stop_flag()?;
    let live = !c.json && std::io::stdout().is_terminal();
    let client = Client::new(&c.socket);
    let mut previous: Option<Value> = None;
    let mut first = true;
    let mut drawn = false;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let frame = match client.call(Method::GET, "/v1/stats", None).await {
            Ok(reply) => match shape::check(reply, &shape::STATS, &c.socket) {
                Ok(answer) if answer.ok() => {
                    if c.json {
                        outln!("{}", String::from_utf8_lossy(&answer.body).trim_end());
                        None
                    } else {
                        let f = render(&answer.value, previous.as_ref(), interval);
                        previous = Some(answer.value);
                        Some(f)
                    }
                }
                // The daemon refuses (e.g. 403 for a peer outside allowed_uids), or what
                // answers is not waq (exit 3, at any refresh): say why, stop.
                checked => {
                    if live {
                        outln!();
                    }
                    return checked.map(|refusal| super::answer(c, &refusal, |_| {}));
                }
            },
            Err(e) if first => return Err(e),
            // stdout carries only the daemon's answers in `--json`, one per line.
            Err(e) if c.json => {
                crate::stderr_line!("waq: daemon unreachable: {e} (retrying)");
                None
            }
            Err(e) => Some(vec![format!("daemon unreachable: {e} (retrying)")]),
        };
        first = false;
        if let Some(lines) = frame {
            let now = humantime::format_rfc3339_seconds(SystemTime::now());
            if live {
                // Home, each line cleared to its end, then the rest of the screen: no flicker.
                let mut screen = String::from(if drawn { "\x1b[H" } else { "\x1b[H\x1b[2J" });
                drawn = true;
                let header = format!(
                    "waq stats · every {} · {now} · Ctrl-C to stop",
                    humantime::format_duration(interval)
                );
                for line in std::iter::once(header).chain([String::new()]).chain(lines) {
                    screen.push_str(&line);
                    screen.push_str("\x1b[K\n");
                }
                screen.push_str("\x1b[J");
                super::out::bytes(screen.as_bytes());
            } else {
                outln!("--- {now}");
                for line in lines {
                    outln!("{line}");
                }
                outln!();
            }
        }
        // Sleep in short steps so Ctrl-C is answered at once.
        while !stop.load(Ordering::Relaxed) && started.elapsed() < interval {
            let left = interval.saturating_sub(started.elapsed());
            tokio::time::sleep(left.min(Duration::from_millis(50))).await;
        }
    }
    if live {
        // The prompt goes below the last frame, not after the terminal's `^C`.
        outln!();
    }
    Ok(EXIT_OK)
}

/// The lines of one frame.
fn render(v: &Value, previous: Option<&Value>, interval: Duration) -> Vec<String> {
    let count = |s: State| v["messages"][s.as_str()].as_u64().unwrap_or(0);
    let row = |states: &[State]| -> String {
        states
            .iter()
            .map(|s| format!("{} {}", s.as_str(), group(count(*s))))
            .collect::<Vec<_>>()
            .join("   ")
    };
    let mut lines = vec![
        format!(
            "queue      {}   (depth {})",
            row(&[State::Queued, State::Retrying, State::Sending]),
            group(v["queue_depth"].as_u64().unwrap_or(0))
        ),
        format!(
            "finished   {}",
            row(&[State::Sent, State::Delivered, State::Read])
        ),
        format!(
            "           {}",
            row(&[State::Failed, State::Expired, State::Cancelled])
        ),
        format!(
            "in flight  {} to the Cloud API",
            group(v["in_flight"].as_u64().unwrap_or(0))
        ),
    ];
    if let Some(cap) = v["global_mps"].as_u64() {
        lines.push(format!(
            "all senders together capped at {cap}/s (dispatch.global_mps)"
        ));
    }
    let retries = v["counters"]["retries_scheduled"].as_u64().unwrap_or(0);
    // A count since the daemon started, not the messages waiting to retry (`retrying` above).
    let mut line = format!("retries    {} scheduled since start", group(retries));
    if let Some(p) = previous {
        let before = p["counters"]["retries_scheduled"].as_u64().unwrap_or(0);
        line.push_str(&format!(
            ", {} in the last {}",
            group(retries.saturating_sub(before)),
            humantime::format_duration(interval)
        ));
    }
    lines.push(line);
    lines.push(String::new());
    // As wide as the longest name, so that a long one does not push its row's columns.
    let senders = v["senders"].as_array();
    let width = name_width(senders.into_iter().flatten(), 12);
    lines.push(format!(
        "{:<width$} {:<22} {:>13}  {:>9}  {:>8}  STATE",
        "SENDER", "RATE", "SENDS/S", "IN FLIGHT", "QUEUED"
    ));
    let mut paused = Vec::new();
    for s in v["senders"].as_array().into_iter().flatten() {
        let mps = s["mps"].as_u64().unwrap_or(0);
        let effective = s["effective_mps"].as_f64().unwrap_or(mps as f64);
        let rate = s["sent_last_second"].as_u64().unwrap_or(0);
        let state = if s["configured"] == false {
            "NOT CONFIGURED (held)".to_string()
        } else if s["paused"] == true {
            paused.push(format!("{} ({})", text(s, "name"), text(s, "pause_reason")));
            "PAUSED".to_string()
        } else if s["unreachable"].is_object() {
            "UNREACHABLE (no answer from the Graph API)".to_string()
        } else if effective + 0.5 < mps as f64 {
            format!("slowed to {effective:.0}/s by Meta")
        } else if rate > 0 {
            "sending".to_string()
        } else {
            "idle".to_string()
        };
        lines.push(format!(
            "{:<width$} {} {:>13}  {:>9}  {:>8}  {state}",
            text(s, "name"),
            gauge(rate, mps, 20),
            format!("{rate}/{mps}"),
            s["in_flight"].as_u64().unwrap_or(0),
            group(s["queued"].as_u64().unwrap_or(0)),
        ));
    }
    if !paused.is_empty() {
        lines.push(String::new());
        lines.push(format!("paused: {}", paused.join("; ")));
        lines.push("resume with `waq sender resume NAME` once the cause is fixed".into());
    }
    lines
}

/// `[███████░░░░░░░░░░░░░]`: `value` of `max` in `width` cells.
fn gauge(value: u64, max: u64, width: usize) -> String {
    let filled = if max == 0 {
        0
    } else {
        ((value.min(max) as f64 / max as f64) * width as f64).round() as usize
    };
    format!("[{}{}]", "█".repeat(filled), "░".repeat(width - filled))
}

/// The width of a column of the senders' names: the longest (in characters), at least `min`.
pub(super) fn name_width<'a>(senders: impl Iterator<Item = &'a Value>, min: usize) -> usize {
    senders
        .map(|s| s["name"].as_str().map_or(0, |n| n.chars().count()))
        .fold(min, usize::max)
}

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_rates_and_paused_senders() {
        let v = json!({
            "messages": {"queued": 1200, "sent": 3, "failed": 1},
            "queue_depth": 1200, "in_flight": 7,
            "senders": [
                {"name": "main", "mps": 80, "effective_mps": 80.0, "sent_last_second": 80, "in_flight": 7, "queued": 1200, "paused": false},
                {"name": "promo", "mps": 20, "effective_mps": 20.0, "sent_last_second": 0, "in_flight": 0, "queued": 5, "paused": true, "pause_reason": "meta_190: token expired"}
            ],
            "counters": {"retries_scheduled": 12}
        });
        let before = json!({"counters": {"retries_scheduled": 10}});
        let text = render(&v, Some(&before), Duration::from_secs(1)).join("\n");
        assert!(text.contains("queued 1,200"), "{text}");
        assert!(text.contains("80/80"), "{text}");
        assert!(text.contains("[████████████████████]"), "{text}");
        assert!(text.contains("2 in the last 1s"), "{text}");
        assert!(text.contains("PAUSED"), "{text}");
        assert!(text.contains("promo (meta_190: token expired)"), "{text}");
    }

    #[test]
    fn renders_an_unreachable_sender_and_the_global_cap() {
        let v = json!({
            "messages": {"queued": 1}, "queue_depth": 1, "in_flight": 1, "global_mps": 3,
            "senders": [
                {"name": "main", "mps": 80, "effective_mps": 80.0, "sent_last_second": 0, "in_flight": 1, "queued": 1, "paused": false,
                 "unreachable": {"since": "2026-11-28T06:00:00.000Z", "failures": 5, "last_error": "connection refused"}}
            ],
            "counters": {}
        });
        let text = render(&v, None, Duration::from_secs(1)).join("\n");
        assert!(text.contains("UNREACHABLE"), "{text}");
        assert!(!text.contains("idle"), "{text}");
        assert!(
            text.contains("capped at 3/s (dispatch.global_mps)"),
            "{text}"
        );
        let v = json!({"senders": [{"name": "main", "mps": 80, "unreachable": null}]});
        let text = render(&v, None, Duration::from_secs(1)).join("\n");
        assert!(text.contains("idle") && !text.contains("capped"), "{text}");
    }

    #[test]
    fn a_long_sender_name_widens_the_column_for_every_row() {
        let long = "marketing-campaigns-europe-west";
        let v = json!({"senders": [{"name": "main", "mps": 80}, {"name": long, "mps": 20}]});
        let text = render(&v, None, Duration::from_secs(1)).join("\n");
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("SENDER"))
            .collect();
        let rate = rows[0].find("RATE").unwrap();
        assert_eq!(rows.len(), 3, "{text}");
        for row in &rows[1..] {
            assert_eq!(row.find('['), Some(rate), "{text}");
        }
        assert!(rate > long.len(), "{text}");
    }

    #[test]
    fn gauge_bounds() {
        assert_eq!(gauge(0, 0, 4), "[░░░░]");
        assert_eq!(gauge(500, 80, 4), "[████]");
        assert_eq!(gauge(40, 80, 4), "[██░░]");
    }
}
