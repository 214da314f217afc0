//! Logs to stderr (journald picks them up), as text or one JSON object per line.
//! Secrets never reach the logs: `Config` prints tokens as `***`, and nothing logs them.
//! The level can change on reload (SIGHUP); the format is fixed at start.

use std::fmt;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogConfig;

static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. `json_override` (from `--log-json`) beats `log.format`.
pub fn init(cfg: &LogConfig, json_override: Option<bool>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cfg.level)
        .map_err(|e| anyhow::anyhow!("configuration: log.level: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = if json_override.unwrap_or(cfg.json) {
        registry.with(fmt.json().flatten_event(true)).try_init()
    } else if stderr_is_the_journal() {
        registry
            .with(fmt.with_ansi(false).event_format(JournalLine))
            .try_init()
    } else {
        registry.with(fmt.with_ansi(false)).try_init()
    };
    // Already installed (a second daemon in one process, as in tests): keep the first.
    if installed.is_ok() {
        let _ = LEVEL.set(handle);
    }
    Ok(())
}

/// A line for journald: the level as a syslog priority prefix (`<4>`), which journald takes
/// off and keeps as the entry's priority (so `journalctl -p warning` finds the warnings), and
/// no time, which journald stamps itself.
struct JournalLine;

impl<S, N> FormatEvent<S, N> for JournalLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        write!(writer, "<{}>{level} ", syslog_priority(level))?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// syslog's priorities: 3 err, 4 warning, 6 info, 7 debug.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether stderr is connected to journald: systemd then sets `JOURNAL_STREAM` to the
/// `device:inode` of that stream (a child with stderr redirected elsewhere inherits the
/// variable, hence the comparison).
fn stderr_is_the_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", stderr.dev(), stderr.ino()))
}

/// Applies a new `log.level` (already validated by the configuration).
pub fn set_level(level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)?;
    if let Some(handle) = LEVEL.get() {
        handle.reload(filter)?;
    }
    Ok(())
}
