//! Logs to stderr (journald picks them up), as text or one JSON object per line.
//! Secrets never reach the logs: `Config` prints tokens as `***`, and nothing logs them.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber. `json_override` (from `--log-json`) beats `log.format`.
pub fn init(cfg: &LogConfig, json_override: Option<bool>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cfg.level)
        .map_err(|e| anyhow::anyhow!("configuration: log.level: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = if json_override.unwrap_or(cfg.json) {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
    // Already installed (a second daemon in one process, as in tests): keep the first.
    let _ = installed;
    Ok(())
}
