//! `waq events`: follows `GET /v1/events`, printing whole lines as they arrive. A waq daemon's
//! stream starts with `{"event":"subscribed",…}` and, when the daemon stops, ends with
//! `{"event":"shutdown"}`: exit 0, as after Ctrl-C or SIGTERM. One the daemon no longer allows
//! (a reload that took this user out of `socket.allowed_uids`) ends with
//! `{"event":"closed","code","message"}`: exit 1, a refusal, with its message. A stream that
//! ends without either line was ended for a reason the daemon does not give: exit 3, the
//! daemon is lost to this command.
//!
//! With `--heartbeat N` the daemon sends a `heartbeat` line after N quiet seconds. It is not
//! printed (it is no event): it is the command's moment to look whether its reader is still
//! there, which otherwise only the next write would tell (`waq events | head -1` on a quiet
//! daemon would wait for the next event).

use std::borrow::Cow;
use std::path::Path;

use serde_json::Value;

use super::client::{Client, Unreachable};
use super::shape::{self, not_waq};
use super::{out, watch, ClientOpts, EXIT_OK, EXIT_REFUSED};

/// The most a first line may take before it is judged: waq's is under 100 bytes, so a stream
/// with no line end in that much is not waq's, and is not kept in memory.
const FIRST_LINE_MAX: usize = 64 * 1024;

pub async fn follow(c: &ClientOpts, heartbeat: Option<u32>) -> Result<i32, Unreachable> {
    watch::exit_0_on_stop()?;
    let path = match heartbeat {
        Some(n) => format!("/v1/events?heartbeat_s={n}"),
        None => "/v1/events".to_string(),
    };
    let mut lines = Lines {
        socket: &c.socket,
        partial: Vec::new(),
        subscribed: false,
        shutdown: false,
        closed: None,
    };
    let streamed = Client::new(&c.socket)
        .stream(&path, |chunk| lines.take(chunk))
        .await;
    match streamed {
        Ok(Ok(())) => lines.end(),
        Ok(Err(refusal)) => {
            let refusal = shape::check(refusal, &shape::STREAM, &c.socket)?;
            Ok(super::answer(c, &refusal, |_| {}))
        }
        // The daemon said it stops, or why it closed the stream: the connection closing under
        // the stream's end is part of that.
        Err(_) if lines.shutdown || lines.closed.is_some() => lines.end(),
        Err(e) => Err(e),
    }
}

/// The stream cut into lines, as far as it has come.
struct Lines<'a> {
    socket: &'a Path,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The first line was waq's `subscribed`.
    subscribed: bool,
    /// The daemon's last line, `shutdown`, came.
    shutdown: bool,
    /// The daemon's last line, `closed`, came: its message and code.
    closed: Option<(String, String)>,
}

impl Lines<'_> {
    /// Prints the whole lines `chunk` completes, once each is seen to fit a waq stream.
    fn take(&mut self, chunk: &[u8]) -> Result<(), Unreachable> {
        let Some(last) = chunk.iter().rposition(|&b| b == b'\n') else {
            self.partial.extend_from_slice(chunk);
            if !self.subscribed && self.partial.len() > FIRST_LINE_MAX {
                return Err(self.no_first_line(&self.partial));
            }
            return Ok(());
        };
        let (whole, rest) = chunk.split_at(last + 1);
        let complete: Cow<[u8]> = if self.partial.is_empty() {
            Cow::Borrowed(whole)
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(whole);
            Cow::Owned(joined)
        };
        let mut beats = false;
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            beats |= self.see(line)?;
        }
        if beats {
            let kept: Vec<u8> = complete
                .split_inclusive(|&b| b == b'\n')
                .filter(|l| !is_heartbeat(l))
                .flatten()
                .copied()
                .collect();
            if !kept.is_empty() {
                out::bytes(&kept);
            }
            out::exit_if_reader_gone();
        } else {
            out::bytes(&complete);
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Notes what `line` tells of the stream; true for a `heartbeat` line.
    fn see(&mut self, line: &[u8]) -> Result<bool, Unreachable> {
        if !self.subscribed {
            if event_of(line).as_deref() != Some("subscribed") {
                return Err(self.no_first_line(line));
            }
            self.subscribed = true;
        } else if is_heartbeat(line) {
            return Ok(true);
        } else if line.windows(SHUTDOWN.len()).any(|w| w == SHUTDOWN)
            && event_of(line).as_deref() == Some("shutdown")
        {
            self.shutdown = true;
        } else if line.windows(CLOSED.len()).any(|w| w == CLOSED) {
            if let Ok(v) = serde_json::from_slice::<Value>(line) {
                if v.get("event").and_then(Value::as_str) == Some("closed") {
                    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    self.closed = Some((text("message"), text("code")));
                }
            }
        }
        Ok(false)
    }

    /// The stream ended: exit 0 after the daemon's `shutdown` line, else exit 3.
    fn end(self) -> Result<i32, Unreachable> {
        if !self.subscribed {
            return Err(self.no_first_line(&self.partial));
        }
        // What came of a last line without its end is printed as it came.
        if !self.partial.is_empty() {
            out::bytes(&self.partial);
        }
        if self.shutdown {
            return Ok(EXIT_OK);
        }
        if let Some((message, code)) = &self.closed {
            eprintln!("waq: the daemon closed the event stream: {message} ({code})");
            return Ok(EXIT_REFUSED);
        }
        Err(Unreachable(format!(
            "the daemon on {} ended the event stream without saying why (no `shutdown` line, \
             so it is not stopping); a reload may have taken this user out of \
             socket.allowed_uids / allowed_gids: `waq health` shows whether it still lets \
             this user in",
            self.socket.display()
        )))
    }

    /// The failure for a stream whose first line (`came`) is not waq's.
    fn no_first_line(&self, came: &[u8]) -> Unreachable {
        not_waq(
            self.socket,
            "its event stream does not start with waq's `{\"event\":\"subscribed\"}` line",
            came,
        )
    }
}

/// How the `shutdown` and `closed` lines spell their event: lines without it are not parsed to
/// look.
const SHUTDOWN: &[u8] = b"\"shutdown\"";
const CLOSED: &[u8] = b"\"closed\"";
const HEARTBEAT: &[u8] = b"\"heartbeat\"";

/// Whether `line` (its line end or not) is the daemon's `heartbeat` line.
fn is_heartbeat(line: &[u8]) -> bool {
    line.windows(HEARTBEAT.len()).any(|w| w == HEARTBEAT)
        && event_of(line).as_deref() == Some("heartbeat")
}

/// The `event` of a JSON line.
fn event_of(line: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(line).ok()?;
    v.get("event")?.as_str().map(str::to_string)
}
